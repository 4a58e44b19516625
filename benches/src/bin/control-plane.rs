//! `cargo xtask bench control-plane`: what the control plane costs as
//! connections accumulate on one host, as a new user meets it: one VPN
//! gateway, customer-initiated connections with BGP configured and no peers,
//! created one by one through the API.
//!
//! ```text
//! s2scp-gw: wan0 192.0.2.1/24 2001:db8::1/64 ──veth── s2scp-peer: wan0
//!           lan0 198.51.100.1/24               ──veth── s2scp-peer: lan0
//! ```
//! Each connection has its own customer gateway (2001:db8:c::N, so any
//! count has unique addresses inside the documentation prefix) and an IPv4
//! BGP session over its tunnel. After every `--step` creates the bench
//! records the step's create latency (p50, p99, as the API client sees it),
//! the daemon's CPU time so far and its RSS; once all exist it waits for
//! the daemon to settle and measures its idle CPU over `--idle` seconds,
//! then the time to list every connection 100 per page and to fetch one
//! filtered page (median of 5). Writes `target/bench/control-plane.json`;
//! `--label` names the run (e.g. the commit) and `--gateway` runs another
//! `s2s-gateway` binary, so that two builds can be compared in one session.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use benches::quantile_ms;
use labkit::gateway::{Api, Daemon};
use labkit::Ns;
use serde_json::{json, Value};

const PREFIX: &str = "s2scp-";
const GW: Ns = Ns::new(PREFIX, "gw");
const PEER: Ns = Ns::new(PREFIX, "peer");
const TOKEN: &str = "control-plane-bench-token";
const PRIVATE_NETWORK: &str = "11111111-2222-4333-8444-555555555555";
const IPAM_V4: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const IPAM_V6: &str = "aaaaaaaa-0000-4000-8000-000000000002";
/// Page size of the listing (the SDK's `list_all` default is 100 too).
const PAGE: usize = 100;
/// How long the daemon is left alone before its idle CPU is measured: two
/// of its periodic passes, so that the creates' work is over.
const SETTLE: Duration = Duration::from_secs(12);

struct Args {
    connections: usize,
    /// Customer gateways played by `s2s-loadgen` for the bring-up run (the
    /// first `peers` connections), 0 for none.
    peers: usize,
    step: usize,
    idle: Duration,
    gateway: PathBuf,
    label: String,
}

fn usage() -> &'static str {
    "usage: control-plane [--connections N] [--peers N] [--step N] [--idle SECONDS] [--gateway PATH] [--label TEXT]"
}

fn parse_args() -> anyhow::Result<Args> {
    let me = std::env::current_exe()?;
    let mut a = Args {
        connections: 1000,
        peers: 100,
        step: 100,
        idle: Duration::from_secs(20),
        gateway: me.with_file_name("s2s-gateway"),
        label: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || {
            it.next()
                .ok_or_else(|| anyhow!("{k} needs a value; {}", usage()))
        };
        match k.as_str() {
            "--connections" => a.connections = v()?.parse().context("--connections")?,
            "--peers" => a.peers = v()?.parse().context("--peers")?,
            "--step" => a.step = v()?.parse().context("--step")?,
            "--idle" => a.idle = Duration::from_secs(v()?.parse().context("--idle")?),
            "--gateway" => a.gateway = PathBuf::from(v()?),
            "--label" => a.label = v()?,
            _ => bail!("unknown argument {k:?}; {}", usage()),
        }
    }
    if a.connections == 0 || a.step == 0 {
        bail!("--connections and --step must be at least 1");
    }
    if a.peers > a.connections {
        bail!(
            "--peers ({}) cannot exceed --connections ({})",
            a.peers,
            a.connections
        );
    }
    if !a.gateway.exists() {
        bail!(
            "{} not found: build it first (cargo xtask bench control-plane does)",
            a.gateway.display()
        );
    }
    Ok(a)
}

fn config_text(dir: &Path, connections: usize) -> String {
    format!(
        r#"[gateway]
asn = 12876
region = "fr-par"
state_dir = {state:?}
bpf_pin_dir = "/sys/fs/bpf/{pin}"

[interfaces]
wan = "wan0"
lan = "lan0"
xdp_mode = "native"

[api]
listen = "127.0.0.1:8080"
tokens = ["{TOKEN}"]
metrics_listen = "127.0.0.1:9108"

[[gateway_types]]
name = "VGW-BENCH"
bandwidth = 1000000000
allowed_connections = {connections}

[[private_networks]]
id = "{PRIVATE_NETWORK}"
interface = "lan0"
ipv4_subnet = "198.51.100.0/24"
ipv6_subnet = "2001:db8:100::/64"

[[public_ips]]
id = "{IPAM_V4}"
address = "192.0.2.1"

[[public_ips]]
id = "{IPAM_V6}"
address = "2001:db8::1"
"#,
        state = dir.join("state"),
        pin = PREFIX.trim_end_matches('-'),
    )
}

/// Namespaces, pinned maps and the work directory, removed when dropped.
struct Cleanup {
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        labkit::teardown(PREFIX);
        let _ = fs::remove_dir_all(format!("/sys/fs/bpf/{}", PREFIX.trim_end_matches('-')));
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The daemon's CPU time so far (user + system, all threads) and its RSS.
fn usage_of(pid: u32) -> anyhow::Result<(Duration, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Ok((Duration::from_millis(ticks * 1000 / hz.max(1)), rss_kib))
}

fn id(v: &Value) -> anyhow::Result<String> {
    v["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("response without id: {v}"))
}

fn run(args: &Args) -> anyhow::Result<Value> {
    labkit::teardown(PREFIX);
    let dir = std::env::temp_dir().join("s2s-bench-control-plane");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let _cleanup = Cleanup { dir: dir.clone() };
    GW.create()?;
    PEER.create()?;
    labkit::veth(GW, "wan0", PEER, "wan0")?;
    labkit::veth(GW, "lan0", PEER, "lan0")?;
    for (ns, dev, addr) in [
        (GW, "wan0", "192.0.2.1/24"),
        (PEER, "wan0", "192.0.2.2/24"),
        (GW, "lan0", "198.51.100.1/24"),
        (PEER, "lan0", "198.51.100.10/24"),
    ] {
        ns.exec(&["ip", "addr", "add", addr, "dev", dev])?;
    }
    GW.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8::1/64",
        "dev",
        "wan0",
        "nodad",
    ])?;
    PEER.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8::2/64",
        "dev",
        "wan0",
        "nodad",
    ])?;
    for ns in [GW, PEER] {
        for dev in ["wan0", "lan0"] {
            ns.exec(&["ip", "link", "set", dev, "up"])?;
        }
    }
    let config = dir.join("gateway.toml");
    fs::write(&config, config_text(&dir, args.connections))?;
    let mut daemon = Daemon::start(&args.gateway, &GW.name(), &config, &dir.join("gateway.log"))?;
    let api = Api::new(&GW.name(), "http://127.0.0.1:8080", TOKEN)?;
    daemon.wait_ready(&api, Duration::from_secs(30))?;
    let pid = daemon
        .pid()
        .ok_or_else(|| anyhow!("the daemon has no pid"))?;
    // `ip netns exec` execs the daemon in place: the pid must be its.
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    if exe != fs::canonicalize(&args.gateway)? {
        bail!("pid {pid} runs {}, not the daemon", exe.display());
    }

    let vgw = api.ok(
        "POST",
        "vpn-gateways",
        Some(json!({
            "name": "bench",
            "gateway_type": "VGW-BENCH",
            "private_network_id": PRIVATE_NETWORK,
            "public_config": {"ipam_ipv4_id": IPAM_V4, "ipam_ipv6_id": IPAM_V6},
        })),
    )?;
    let vgw_id = id(&vgw)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.ok("GET", &format!("vpn-gateways/{vgw_id}"), None)?["status"] != "active" {
        daemon.check()?;
        if Instant::now() > deadline {
            bail!("the VPN gateway did not become active");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let rp = api.ok(
        "POST",
        "routing-policies",
        Some(json!({
            "name": "bench",
            "is_ipv6": false,
            "prefix_filter_in": ["203.0.113.0/24"],
            "prefix_filter_out": ["198.51.100.0/24"],
        })),
    )?;
    let rp_id = id(&rp)?;
    let (_, rss_base) = usage_of(pid)?;

    let mut steps = Vec::new();
    let mut latencies = Vec::with_capacity(args.step);
    let mut cgw_ids = Vec::with_capacity(args.connections);
    let mut connections = Vec::with_capacity(args.peers);
    let started = Instant::now();
    for i in 0..args.connections {
        let cgw = api.ok(
            "POST",
            "customer-gateways",
            Some(json!({
                "name": format!("cgw-{i}"),
                "asn": 65000 + (i % 500),
                "ipv6_public": format!("2001:db8:c::{:x}", i + 1),
            })),
        )?;
        let cgw_id = id(&cgw)?;
        let t = Instant::now();
        let created = api.ok(
            "POST",
            "connections",
            Some(json!({
                "name": format!("conn-{i}"),
                "vpn_gateway_id": vgw_id,
                "customer_gateway_id": cgw_id,
                "is_ipv6": true,
                "initiation_policy": "customer_gateway",
                "ikev2_ciphers": [{"encryption": "aes256gcm", "integrity": "sha256", "dh_group": "curve25519"}],
                "esp_ciphers": [{"encryption": "aes256gcm"}],
                "bgp_config_ipv4": {"routing_policy_id": rp_id},
            })),
        )?;
        latencies.push(t.elapsed());
        cgw_ids.push(cgw_id);
        if connections.len() < args.peers {
            connections.push(created["connection"].clone());
        }
        if latencies.len() == args.step || i + 1 == args.connections {
            daemon.check()?;
            let (cpu, rss) = usage_of(pid)?;
            let row = json!({
                "connections": i + 1,
                "create_p50_ms": quantile_ms(&mut latencies, 0.5),
                "create_p99_ms": quantile_ms(&mut latencies, 0.99),
                "daemon_cpu_s": cpu.as_secs_f64(),
                "rss_mib": rss as f64 / 1024.0,
            });
            eprintln!(
                "control-plane: {:>6} connections  create p50 {:>6.1} ms  p99 {:>6.1} ms  daemon CPU {:>6.1} s  RSS {:>5.0} MiB  ({:.0} s)",
                i + 1,
                row["create_p50_ms"].as_f64().unwrap_or(0.0),
                row["create_p99_ms"].as_f64().unwrap_or(0.0),
                cpu.as_secs_f64(),
                rss as f64 / 1024.0,
                started.elapsed().as_secs_f64(),
            );
            steps.push(row);
            latencies.clear();
        }
    }

    eprintln!(
        "control-plane: settling {} s, then idle for {} s",
        SETTLE.as_secs(),
        args.idle.as_secs()
    );
    std::thread::sleep(SETTLE);
    daemon.check()?;
    let (cpu0, _) = usage_of(pid)?;
    let t0 = Instant::now();
    std::thread::sleep(args.idle);
    let (cpu1, rss_idle) = usage_of(pid)?;
    let idle_pct = (cpu1 - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0;

    let t = Instant::now();
    let mut listed = 0usize;
    for page in 1.. {
        let v = api.ok(
            "GET",
            &format!("connections?page={page}&page_size={PAGE}"),
            None,
        )?;
        let n = v["connections"].as_array().map_or(0, Vec::len);
        listed += n;
        if n < PAGE {
            break;
        }
    }
    let list_all_s = t.elapsed().as_secs_f64();
    if listed != args.connections {
        bail!("listed {listed} connections, created {}", args.connections);
    }
    let mut filtered = Vec::new();
    for k in 0..5 {
        let cgw = &cgw_ids[(k * 7919) % cgw_ids.len()];
        let t = Instant::now();
        let v = api.ok(
            "GET",
            &format!("connections?customer_gateway_ids={cgw}&page_size={PAGE}"),
            None,
        )?;
        filtered.push(t.elapsed());
        let n = v["connections"].as_array().map_or(0, Vec::len);
        if n != 1 {
            bail!("the page filtered on customer gateway {cgw} holds {n} connections, not 1");
        }
    }
    let bring_up = if connections.is_empty() {
        Value::Null
    } else {
        bring_up(&api, &mut daemon, pid, &connections, args.idle)?
    };
    let result = json!({
        "bring_up": bring_up,
        "label": args.label,
        "gateway": args.gateway.display().to_string(),
        "connections": args.connections,
        "step": args.step,
        "steps": steps,
        "rss_base_mib": rss_base as f64 / 1024.0,
        "rss_per_connection_kib": rss_idle.saturating_sub(rss_base) as f64 / args.connections as f64,
        "idle_seconds": args.idle.as_secs_f64(),
        "idle_cpu_percent_of_a_core": idle_pct,
        "list_all_s": list_all_s,
        "filtered_page_ms": quantile_ms(&mut filtered, 0.5),
    });
    eprintln!(
        "control-plane: idle {idle_pct:.2} % of a core, RSS {:.0} MiB ({:.1} KiB per connection), list all {list_all_s:.2} s, one filtered page {:.1} ms",
        rss_idle as f64 / 1024.0,
        result["rss_per_connection_kib"].as_f64().unwrap_or(0.0),
        result["filtered_page_ms"].as_f64().unwrap_or(0.0),
    );
    daemon.stop();
    Ok(result)
}

/// Tunnels reported up by the API, counted over every page.
fn tunnels_up(api: &Api) -> anyhow::Result<usize> {
    let mut up = 0;
    for page in 1.. {
        let v = api.ok(
            "GET",
            &format!("connections?page={page}&page_size={PAGE}"),
            None,
        )?;
        let list = v["connections"].as_array().cloned().unwrap_or_default();
        up += list
            .iter()
            .filter(|c| c["tunnel_status_ipv6"] == "up")
            .count();
        if list.len() < PAGE {
            break;
        }
    }
    Ok(up)
}

/// `connections.len()` customer gateways played by `s2s-loadgen` in the
/// peer namespace start at once, each from its own address (2001:db8:c::N,
/// routed to the gateway through the peer's link address as behind an
/// upstream router), initiating IKEv2 with its connection's PSK. Measures
/// how long until every CHILD SA is up on both sides (the loadgen's and
/// the API's statuses), then the daemon's idle CPU with those tunnels up
/// (DPD and rekey timers running; the load generator speaks no BGP, so
/// the sessions stay down).
fn bring_up(
    api: &Api,
    daemon: &mut Daemon,
    pid: u32,
    connections: &[Value],
    idle: Duration,
) -> anyhow::Result<Value> {
    use s2s_loadgen::{Customer, PeerSpec};
    let n = connections.len();
    GW.exec(&[
        "ip",
        "-6",
        "route",
        "add",
        "2001:db8:c::/64",
        "via",
        "2001:db8::2",
        "dev",
        "wan0",
    ])?;
    let mut batch = String::new();
    for i in 0..n {
        batch.push_str(&format!(
            "addr add 2001:db8:c::{:x}/128 dev wan0 nodad\n",
            i + 1
        ));
    }
    let mut ip = PEER.cmd("ip");
    ip.args(["-batch", "-"]).stdin(std::process::Stdio::piped());
    let mut child = ip.spawn().context("ip -batch")?;
    std::io::Write::write_all(
        child.stdin.as_mut().context("ip -batch stdin")?,
        batch.as_bytes(),
    )?;
    drop(child.stdin.take());
    if !child.wait()?.success() {
        bail!("adding the peers' addresses failed");
    }
    let mut peers = Vec::with_capacity(n);
    for (i, conn) in connections.iter().enumerate() {
        peers.push(PeerSpec {
            name: format!("peer-{i}"),
            local: format!("2001:db8:c::{:x}", i + 1).parse()?,
            remote: "2001:db8::1".parse()?,
            psk: api.psk(conn)?,
            ike: (
                "aes256gcm".into(),
                Some("sha256".into()),
                "curve25519".into(),
            ),
            esp: ("aes256gcm".into(), None),
            initiate: true,
        });
    }
    let names: Vec<String> = peers.iter().map(|p| p.name.clone()).collect();
    eprintln!("control-plane: bring-up of {n} tunnels from s2s-loadgen");
    let t0 = Instant::now();
    let customer = Customer::start(Some(&PEER.name()), peers)?;
    let deadline = t0 + Duration::from_secs(120);
    let mut peers_up_s = None;
    let gateway_up_s = loop {
        daemon.check()?;
        if peers_up_s.is_none()
            && names
                .iter()
                .all(|p| customer.state(p).is_some_and(|s| s.child.is_some()))
        {
            peers_up_s = Some(t0.elapsed().as_secs_f64());
        }
        let up = tunnels_up(api)?;
        if up >= n {
            break t0.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            bail!("{up} of {n} tunnels up after 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The loadgen's side may finish after the API reports.
    while peers_up_s.is_none() && Instant::now() < deadline {
        if names
            .iter()
            .all(|p| customer.state(p).is_some_and(|s| s.child.is_some()))
        {
            peers_up_s = Some(t0.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(SETTLE);
    let (cpu0, _) = usage_of(pid)?;
    let t = Instant::now();
    std::thread::sleep(idle);
    let (cpu1, rss) = usage_of(pid)?;
    let idle_pct = (cpu1 - cpu0).as_secs_f64() / t.elapsed().as_secs_f64() * 100.0;
    let still_up = tunnels_up(api)?;
    customer.stop()?;
    eprintln!(
        "control-plane: {n} tunnels up in {gateway_up_s:.2} s ({:.0} per second), idle with them up {idle_pct:.2} % of a core, {still_up} still up after {} s",
        n as f64 / gateway_up_s,
        idle.as_secs()
    );
    Ok(json!({
        "peers": n,
        "all_up_api_s": gateway_up_s,
        "all_up_peers_s": peers_up_s,
        "tunnels_per_second": n as f64 / gateway_up_s,
        "idle_cpu_percent_established": idle_pct,
        "rss_mib_established": rss as f64 / 1024.0,
        "still_up_after_idle": still_up,
    }))
}

/// A run in one row: the first and the last step's create latencies, then
/// the idle, memory and list figures.
fn summary(run: &Value) -> Value {
    let steps = run["steps"].as_array().cloned().unwrap_or_default();
    let first = steps.first().cloned().unwrap_or(Value::Null);
    let last = steps.last().cloned().unwrap_or(Value::Null);
    json!({
        "label": run["label"],
        "connections": run["connections"],
        "first_step_p50_ms": first["create_p50_ms"],
        "first_step_p99_ms": first["create_p99_ms"],
        "last_step_p50_ms": last["create_p50_ms"],
        "last_step_p99_ms": last["create_p99_ms"],
        "daemon_cpu_creating_s": last["daemon_cpu_s"],
        "idle_cpu_percent": run["idle_cpu_percent_of_a_core"],
        "rss_per_connection_kib": run["rss_per_connection_kib"],
        "list_all_s": run["list_all_s"],
        "filtered_page_ms": run["filtered_page_ms"],
        "bring_up_peers": run["bring_up"]["peers"],
        "bring_up_s": run["bring_up"]["all_up_api_s"],
        "idle_cpu_percent_established": run["bring_up"]["idle_cpu_percent_established"],
    })
}

fn main() -> ExitCode {
    // Ctrl-C: the namespaces go, and with them the daemon.
    let _ = ctrlc::set_handler(|| {
        labkit::teardown(PREFIX);
        let _ = fs::remove_dir_all(format!("/sys/fs/bpf/{}", PREFIX.trim_end_matches('-')));
        std::process::exit(130);
    });
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("control-plane: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = run(&args).and_then(|r| {
        let out = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(|p| p.join("target/bench"))
            .unwrap_or_default();
        fs::create_dir_all(&out)?;
        let path = out.join("control-plane.json");
        // Runs accumulate: one file holds every run of the session, so that
        // two builds run alternately can be compared.
        let mut runs: Vec<Value> = fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["runs"].as_array().cloned())
            .unwrap_or_default();
        runs.push(r);
        // One summary row per run for the report's table.
        let results: Vec<Value> = runs.iter().map(summary).collect();
        let doc = json!({ "results": results, "runs": runs });
        fs::write(&path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("control-plane: wrote {}", path.display());
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("control-plane: {e:#}");
            ExitCode::FAILURE
        }
    }
}
