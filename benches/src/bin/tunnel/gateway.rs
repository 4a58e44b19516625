//! Our gateway in a namespace: its config, start, provisioning through
//! s2sctl, waits and metrics.

use crate::*;

pub(crate) fn gateway_config(
    ns: Ns,
    asn: u32,
    wan_ip: &str,
    lan_subnet: &str,
    state: &Path,
) -> String {
    format!(
        r#"[gateway]
asn = {asn}
region = "fr-par"
state_dir = "{state}"
bpf_pin_dir = "/sys/fs/bpf/{PREFIX}{name}"

[interfaces]
wan = "{name}wan0"
lan = "{name}lan0"
xdp_mode = "native"

[api]
listen = "127.0.0.1:8080"
tokens = ["{TOKEN}"]
metrics_listen = "127.0.0.1:9108"

[[gateway_types]]
name = "VGW-S"
bandwidth = 100000000
allowed_connections = 5

[[gateway_types]]
name = "VGW-M"
bandwidth = 1000000000
allowed_connections = 5

# No bandwidth enforced: what the tunnel cases measure is the engine.
[[gateway_types]]
name = "{UNLIMITED_TYPE}"
bandwidth = 0
allowed_connections = 5

[[private_networks]]
id = "{PRIVATE_NETWORK}"
interface = "{name}lan0"
ipv4_subnet = "{lan_subnet}"

[[public_ips]]
id = "{IPAM_V4}"
address = "{wan_ip}"
"#,
        state = state.display(),
        name = ns.short(),
    )
}

pub(crate) fn s2sctl_text(ns: Ns, args: &[&str]) -> anyhow::Result<String> {
    output(ns.cmd(&bin("s2sctl")?).args(["--token", TOKEN]).args(args))
}

pub(crate) fn s2sctl(ns: Ns, args: &[&str]) -> anyhow::Result<Value> {
    let out = output(
        ns.cmd(&bin("s2sctl")?)
            .args(["--token", TOKEN, "-o", "json"])
            .args(args),
    )?;
    serde_json::from_str(&out)
        .with_context(|| format!("s2sctl {}: not JSON: {out}", args.join(" ")))
}

pub(crate) fn field(v: &Value, key: &str) -> anyhow::Result<String> {
    v[key]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("API response without {key}: {v}"))
}

/// Starts our daemon in `ns` and waits for its API; returns its pid.
pub(crate) fn start_gateway(
    env: &mut Env,
    stop: &AtomicBool,
    ns: Ns,
    asn: u32,
    wan_ip: &str,
    lan_subnet: &str,
    no_xdp: bool,
) -> anyhow::Result<u32> {
    let state = env.dir.join(format!("{}-state", ns.short()));
    let cfg = env.dir.join(format!("{}.toml", ns.short()));
    fs::write(&cfg, gateway_config(ns, asn, wan_ip, lan_subnet, &state))?;
    let script = format!(
        "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; \
         exec env RUST_LOG=info {} run --config {}{}",
        bin("s2s-gateway")?,
        cfg.display(),
        if no_xdp { " --no-xdp" } else { "" }
    );
    let pid = env.spawn(&format!("gateway-{}", ns.short()), ns, &script)?;
    env.wait_for(stop, "the API", Duration::from_secs(30), || {
        Ok(s2sctl(ns, &["gateway-type", "list"]).ok().map(|_| ()))
    })?;
    Ok(pid)
}

/// VPN gateway, customer gateway, routing policy and connection on one of
/// our gateways; the connection starts as responder (`customer_gateway`
/// initiates) so nothing is sent before both sides share the PSK.
#[expect(
    clippy::too_many_arguments,
    reason = "one call per side, each argument differs between A and B"
)]
pub(crate) fn provision(
    env: &mut Env,
    stop: &AtomicBool,
    ns: Ns,
    gateway_type: &str,
    peer_ip: &str,
    peer_asn: u32,
    prefix_in: &str,
    prefix_out: &str,
    bgp: Option<&str>,
) -> anyhow::Result<String> {
    let vgw = s2sctl(
        ns,
        &[
            "vpn-gateway",
            "create",
            "--name",
            "bench",
            "--gateway-type",
            gateway_type,
            "--private-network-id",
            PRIVATE_NETWORK,
            "--ipam-ipv4-id",
            IPAM_V4,
        ],
    )?;
    let vgw_id = field(&vgw, "id")?;
    env.wait_for(
        stop,
        "the VPN gateway to be active",
        Duration::from_secs(30),
        || Ok((s2sctl(ns, &["vpn-gateway", "get", &vgw_id])?["status"] == "active").then_some(())),
    )?;
    let cgw = s2sctl(
        ns,
        &[
            "customer-gateway",
            "create",
            "--name",
            "peer",
            "--asn",
            &peer_asn.to_string(),
            "--ipv4",
            peer_ip,
        ],
    )?;
    let rp = s2sctl(
        ns,
        &[
            "routing-policy",
            "create",
            "--name",
            "bench",
            "--in",
            prefix_in,
            "--out",
            prefix_out,
        ],
    )?;
    let (cgw_id, rp_id) = (field(&cgw, "id")?, field(&rp, "id")?);
    let mut args = vec![
        "connection",
        "create",
        "--name",
        "bench",
        "--vpn-gateway-id",
        &vgw_id,
        "--customer-gateway-id",
        &cgw_id,
        "--initiation-policy",
        "customer_gateway",
        "--ike",
        "aes256gcm-sha256-curve25519",
        "--esp",
        "aes256gcm",
        "--routing-policy-v4",
        &rp_id,
        "--route-propagation",
    ];
    if let Some(b) = bgp {
        args.extend(["--bgp-v4", b]);
    }
    let conn = s2sctl(ns, &args)?;
    field(&conn["connection"], "id")
}

pub(crate) fn initiate(ns: Ns, conn: &str) -> anyhow::Result<()> {
    s2sctl(
        ns,
        &[
            "connection",
            "update",
            conn,
            "--initiation-policy",
            "vpn_gateway",
        ],
    )
    .map(drop)
}

pub(crate) fn wait_active(
    env: &mut Env,
    stop: &AtomicBool,
    ns: Ns,
    conn: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    env.wait_for(
        stop,
        "the connection to be active",
        Duration::from_secs(90),
        || {
            let c = s2sctl(ns, &["connection", "get", conn])?;
            let line = format!(
                "status={} tunnel={} bgp_ipv4={}",
                c["status"].as_str().unwrap_or("?"),
                c["tunnel_status_ipv4"].as_str().unwrap_or("-"),
                c["bgp_status_ipv4"].as_str().unwrap_or("?"),
            );
            if line != last {
                println!(
                    "  [{:>5.1}s] {}: {line}",
                    started.elapsed().as_secs_f64(),
                    ns.short()
                );
                last = line;
            }
            Ok((c["status"] == "active").then_some(()))
        },
    )
}

pub(crate) fn wait_route(
    env: &mut Env,
    stop: &AtomicBool,
    ns: Ns,
    prefix: &str,
) -> anyhow::Result<()> {
    env.wait_for(
        stop,
        &format!("{prefix} in {}'s kernel table", ns.name()),
        Duration::from_secs(30),
        || Ok((!ns.out(&["ip", "route", "show", prefix])?.trim().is_empty()).then_some(())),
    )
}

pub(crate) fn metrics_text(ns: Ns) -> anyhow::Result<String> {
    ns.out(&[
        "bash",
        "-c",
        "exec 3<>/dev/tcp/127.0.0.1/9108 && \
         printf 'GET /metrics HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n' >&3 && cat <&3",
    ])
}

/// Sum over every tunnel of a /metrics counter.
pub(crate) fn metric_total(ns: Ns, name: &str) -> anyhow::Result<u64> {
    let text = metrics_text(ns)?;
    let mut sum = 0u64;
    for l in text.lines() {
        if l.starts_with(&format!("{name}{{")) {
            sum += l
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .with_context(|| format!("bad sample: {l}"))? as u64;
        }
    }
    Ok(sum)
}
