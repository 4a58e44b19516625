//! Our gateway in a namespace: its config, start, provisioning through
//! the typed API client, waits and metrics.

use crate::*;
use gateway_api::client::{Client, ClientError};
use gateway_api::model::{CipherRequest, Connection, ConnectionStatus, VpnGatewayStatus};
use gateway_api::ops::{
    BgpConfigRequest, CreateConnectionRequest, CreateCustomerGatewayRequest,
    CreateRoutingPolicyRequest, CreateVpnGatewayRequest, IpamPair, UpdateConnectionRequest,
};

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

/// Runs `f` with the typed API client of our gateway in `ns`.
pub(crate) fn api<T: Send + 'static>(
    ns: Ns,
    f: impl FnOnce(&Client) -> Result<T, ClientError> + Send + 'static,
) -> anyhow::Result<T> {
    labkit::gateway::with_api(&ns.name(), "http://127.0.0.1:8080", TOKEN, f)
}

/// The connection `id` of our gateway in `ns`.
pub(crate) fn connection(ns: Ns, id: &str) -> anyhow::Result<Connection> {
    let id = id.to_owned();
    api(ns, move |c| c.connection(&id))
}

/// The device config of connection `id` for `vendor`.
pub(crate) fn device_config(ns: Ns, id: &str, vendor: &'static str) -> anyhow::Result<String> {
    let id = id.to_owned();
    api(ns, move |c| c.device_config(&id, vendor))
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
        Ok(api(ns, |c| c.gateway_types()).ok().map(|_| ()))
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
    let req = CreateVpnGatewayRequest {
        name: Some("bench".into()),
        gateway_type: Some(gateway_type.into()),
        private_network_id: Some(PRIVATE_NETWORK.into()),
        public_config: Some(IpamPair {
            ipam_ipv4_id: Some(IPAM_V4.into()),
            ipam_ipv6_id: None,
        }),
        ..Default::default()
    };
    let vgw_id = api(ns, move |c| c.create_vpn_gateway(&req))?.id;
    env.wait_for(
        stop,
        "the VPN gateway to be active",
        Duration::from_secs(30),
        || {
            let id = vgw_id.clone();
            let g = api(ns, move |c| c.vpn_gateway(&id))?;
            Ok((g.status == VpnGatewayStatus::Active).then_some(()))
        },
    )?;
    let req = CreateCustomerGatewayRequest {
        name: Some("peer".into()),
        asn: Some(peer_asn.into()),
        ipv4_public: Some(peer_ip.into()),
        ..Default::default()
    };
    let cgw_id = api(ns, move |c| c.create_customer_gateway(&req))?.id;
    let req = CreateRoutingPolicyRequest {
        name: Some("bench".into()),
        prefix_filter_in: Some(vec![prefix_in.into()]),
        prefix_filter_out: Some(vec![prefix_out.into()]),
        ..Default::default()
    };
    let rp_id = api(ns, move |c| c.create_routing_policy(&req))?.id;
    // `bgp`: "OURS,PEER" interconnection addresses, else the pool's.
    let (ours, peer) = match bgp.map(|b| b.split_once(',')) {
        None => (None, None),
        Some(Some((a, b))) => (Some(a.to_owned()), Some(b.to_owned())),
        Some(None) => bail!("bgp addresses are OURS,PEER: {bgp:?}"),
    };
    let cipher = |s: &str| CipherRequest::parse_compact(s).map_err(|e| anyhow!(e));
    let req = CreateConnectionRequest {
        name: Some("bench".into()),
        vpn_gateway_id: Some(vgw_id),
        customer_gateway_id: Some(cgw_id),
        initiation_policy: Some("customer_gateway".into()),
        ikev2_ciphers: Some(vec![cipher("aes256gcm-sha256-curve25519")?]),
        esp_ciphers: Some(vec![cipher("aes256gcm")?]),
        enable_route_propagation: Some(true),
        bgp_config_ipv4: Some(BgpConfigRequest {
            routing_policy_id: Some(rp_id),
            private_ip: ours,
            peer_private_ip: peer,
        }),
        ..Default::default()
    };
    Ok(api(ns, move |c| c.create_connection(&req))?.connection.id)
}

pub(crate) fn initiate(ns: Ns, conn: &str) -> anyhow::Result<()> {
    let (id, req) = (
        conn.to_owned(),
        UpdateConnectionRequest {
            initiation_policy: Some("vpn_gateway".into()),
            ..Default::default()
        },
    );
    api(ns, move |c| c.update_connection(&id, &req)).map(drop)
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
            let c = connection(ns, conn)?;
            let line = format!(
                "status={} tunnel={} bgp_ipv4={}",
                c.status,
                c.tunnel_status_ipv4.map_or("-", |t| t.as_str()),
                c.bgp_status_ipv4,
            );
            if line != last {
                println!(
                    "  [{:>5.1}s] {}: {line}",
                    started.elapsed().as_secs_f64(),
                    ns.short()
                );
                last = line;
            }
            Ok((c.status == ConnectionStatus::Active).then_some(()))
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
