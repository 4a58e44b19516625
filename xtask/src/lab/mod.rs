//! `cargo xtask lab`: the two-site lab of docs/ARCHITECTURE.md §5 in network
//! namespaces (`vpc` — `gw` — `cgw` — `remote`), documentation addresses
//! only. Our daemon runs in `gw` with its embedded store; everything is
//! created through the API (s2sctl); the customer side (strongSwan with
//! kernel-libipsec, and BIRD or FRR) runs our generated device configs as
//! they are; then the lab waits for the connection to be `active`, prints a
//! status table, pings, sweeps DF pings of 1200..1500 bytes (each answered
//! or answered with the ICMP too-big error, none silently lost) and runs
//! iperf3 both ways between `vpc` and `remote` in both families (gw stays on
//! the kernel's default sysctls), and stays up until Ctrl-C (or exits with
//! `--once`). Everything
//! is removed on exit, also on failure.
//!
//! `--scenarios` (BIRD peer) then runs the end-to-end scenarios, each
//! bounded in time: fast-path counters in `/metrics`, route propagation
//! off/on, IPv6 routing policy detached/re-attached, PSK renewal, customer
//! gateway restarted (clean, then crashed), one tunnel's peer address cut
//! (failover to the other tunnel, and back) and our daemon restarted from
//! its store.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use gateway_api::client::{Client, ClientError};
use gateway_api::model::{
    BgpSessionStatus, CipherRequest, Connection, ConnectionStatus, TunnelStatus, VpnGatewayStatus,
};
use gateway_api::ops::{
    BgpConfigRequest, CreateConnectionRequest, CreateCustomerGatewayRequest,
    CreateRoutingPolicyRequest, CreateVpnGatewayRequest, IpamPair, RenewPskRequest,
    RoutingPolicyOneOf, UpdateConnectionRequest,
};
use labkit::{charon, veth, Ns};

use crate::util::{sh, step, workspace_root};

mod api;
mod observe;
mod probes;
mod restart;
mod scenarios;
use api::*;
use observe::*;
use probes::*;
use restart::*;
use scenarios::run_scenarios;

/// Namespace names are prefixed so the lab never touches anything else.
const PREFIX: &str = "s2slab-";
const TOKEN: &str = "lab-0000-0000-token";
const PRIVATE_NETWORK: &str = "11111111-2222-4333-8444-555555555555";
const IPAM_V4: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const IPAM_V6: &str = "aaaaaaaa-0000-4000-8000-000000000002";
const CUSTOMER_ASN: i64 = 65010;

const VPC: Ns = Ns::new(PREFIX, "vpc");
const GW: Ns = Ns::new(PREFIX, "gw");
const CGW: Ns = Ns::new(PREFIX, "cgw");
const REMOTE: Ns = Ns::new(PREFIX, "remote");

/// Everything the lab started; dropping it stops the daemons and removes
/// the namespaces, also on error or panic.
struct Lab {
    dir: PathBuf,
    daemons: Vec<(&'static str, Child)>,
    logs: Vec<(&'static str, PathBuf)>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (name, child) in self.daemons.iter_mut().rev() {
            // SIGTERM first: the gateway stops as for a restart (its TUNs
            // and XDP links stay); the namespaces and the lab's bpffs,
            // removed next, take them.
            labkit::terminate(child, &format!("lab: {name}"), Duration::from_secs(5));
        }
        teardown();
    }
}

fn teardown() {
    labkit::teardown(PREFIX);
    if lab_bpffs_mounted() {
        let _ = Command::new("umount").arg(LAB_BPFFS).status();
    }
    let _ = fs::remove_dir(LAB_BPFFS);
}

/// The bpffs of config/lab-gw.toml's `bpf_pin_dir`, in the host's mount
/// namespace so that the daemon's pins outlive it as on a real host.
const LAB_BPFFS: &str = "/run/s2s-lab/bpf";

fn mount_lab_bpffs() -> anyhow::Result<()> {
    fs::create_dir_all(LAB_BPFFS)?;
    if !lab_bpffs_mounted() {
        sh(Command::new("mount").args(["-t", "bpf", "bpf", LAB_BPFFS]))?;
    }
    Ok(())
}

fn lab_bpffs_mounted() -> bool {
    Command::new("mountpoint")
        .args(["-q", LAB_BPFFS])
        .status()
        .is_ok_and(|s| s.success())
}

fn build_topology() -> anyhow::Result<()> {
    for ns in [VPC, GW, CGW, REMOTE] {
        ns.create()?;
    }
    veth(VPC, "eth0", GW, "lan0")?;
    // What lan_ingress sends back (ICMP too-big; a redirect to lan0, the
    // daemon's choice on veth) reaches a veth peer only when that end runs
    // NAPI (GRO on, or an XDP program): without it veth drops XDP frames
    // for its peer. A veth artefact: a real NIC transmits them like any
    // frame. The gateway's own namespace is left as it is.
    VPC.exec(&["ethtool", "-K", "eth0", "gro", "on"])?;
    veth(GW, "wan0", CGW, "wan0")?;
    veth(CGW, "lan0", REMOTE, "eth0")?;
    let addrs: &[(Ns, &str, &str)] = &[
        (VPC, "eth0", "198.51.100.10/24"),
        (VPC, "eth0", "2001:db8:100::10/64"),
        (GW, "lan0", "198.51.100.1/24"),
        (GW, "lan0", "2001:db8:100::1/64"),
        (GW, "wan0", "192.0.2.1/24"),
        (GW, "wan0", "2001:db8::1/64"),
        (CGW, "wan0", "192.0.2.2/24"),
        (CGW, "wan0", "2001:db8::2/64"),
        (CGW, "lan0", "203.0.113.1/24"),
        (CGW, "lan0", "2001:db8:200::1/64"),
        (REMOTE, "eth0", "203.0.113.10/24"),
        (REMOTE, "eth0", "2001:db8:200::10/64"),
    ];
    for (ns, dev, addr) in addrs {
        // `nodad` is IPv6-only (`ip` warns on an IPv4 address).
        let mut cmd = vec!["ip", "addr", "add", addr, "dev", dev];
        if addr.contains(':') {
            cmd.push("nodad");
        }
        ns.exec(&cmd)?;
    }
    for (ns, dev) in [
        (VPC, "eth0"),
        (GW, "lan0"),
        (GW, "wan0"),
        (CGW, "wan0"),
        (CGW, "lan0"),
        (REMOTE, "eth0"),
    ] {
        ns.exec(&["ip", "link", "set", dev, "up"])?;
    }
    // Hosts route via their gateway; the gateways learn the other site only
    // over BGP through the tunnel: no static route between the sites.
    VPC.exec(&["ip", "route", "add", "default", "via", "198.51.100.1"])?;
    VPC.exec(&[
        "ip",
        "-6",
        "route",
        "add",
        "default",
        "via",
        "2001:db8:100::1",
    ])?;
    REMOTE.exec(&["ip", "route", "add", "default", "via", "203.0.113.1"])?;
    REMOTE.exec(&[
        "ip",
        "-6",
        "route",
        "add",
        "default",
        "via",
        "2001:db8:200::1",
    ])?;
    // Only the customer's router forwards by the kernel's global switch;
    // our gateway runs on the distribution's defaults and sets what it
    // needs on its own interfaces (logged in gw's log).
    CGW.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    CGW.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
    Ok(())
}

impl Lab {
    fn spawn(&mut self, name: &'static str, ns: Ns, script: &str) -> anyhow::Result<()> {
        let log = self.dir.join(format!("{name}.log"));
        // Append: a daemon the scenarios restart keeps one log.
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name(), "sh", "-c", script])
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.daemons.push((name, child));
        if !self.logs.iter().any(|(n, _)| *n == name) {
            self.logs.push((name, log));
        }
        Ok(())
    }

    /// Stops one daemon the lab started (`signal`, then SIGKILL after 10 s)
    /// and forgets it, so that it can be started again.
    fn stop_daemon(&mut self, name: &str, signal: &str) -> anyhow::Result<()> {
        let i = self
            .daemons
            .iter()
            .position(|(n, _)| *n == name)
            .with_context(|| format!("{name} is not running"))?;
        let (_, mut child) = self.daemons.remove(i);
        // `ip netns exec sh -c 'exec daemon'`: the pid is the daemon's.
        let _ = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("lab: {name} did not stop on {signal}; killing it");
        let _ = child.kill();
        let _ = child.wait();
        Ok(())
    }

    /// Fails if a daemon the lab started has exited.
    fn check_daemons(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.daemons {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{name} exited ({status})");
            }
        }
        Ok(())
    }

    fn print_logs(&self) {
        for (name, path) in &self.logs {
            let text = fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            eprintln!("\n--- last lines of {name} ({}) ---", path.display());
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

/// Polls `f` every 500 ms until it returns `Some`, up to `limit`; also
/// stops on Ctrl-C or when a daemon died.
fn wait_for<T>(
    lab: &mut Lab,
    stop: &AtomicBool,
    what: &str,
    limit: Duration,
    f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let interval = Duration::from_millis(500);
    labkit::wait_for(stop, what, limit, interval, || lab.check_daemons(), f)
}

/// Extra charon settings: as our device config advises, a dead tunnel is
/// given up within ~8 s of DPD, so that the other tunnel takes over inside
/// the BGP hold time.
const CHARON_SETTINGS: &str = "  retransmit_timeout = 1
  retransmit_base = 1.5
  retransmit_tries = 3
";

/// What the lab does once the tunnel is up and routes are exchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Traffic checks, the scenarios if asked, then stay up until
    /// Ctrl-C unless `once`.
    Lab { scenarios: bool, once: bool },
    /// `cargo xtask bench restart`: restart our daemon `runs` times per
    /// case and write `target/bench/restart.json`.
    BenchRestart { runs: u32 },
}

pub fn run(once: bool, peer: &str, scenarios: bool) -> anyhow::Result<()> {
    session(peer, Then::Lab { scenarios, once })
}

pub fn session(peer: &str, then: Then) -> anyhow::Result<()> {
    let scenarios = matches!(
        then,
        Then::Lab {
            scenarios: true,
            ..
        }
    );
    if peer != "bird" && peer != "frr" {
        bail!("--peer must be bird or frr, not {peer:?}");
    }
    if scenarios && peer != "bird" {
        bail!("--scenarios checks the customer side through BIRD: use --peer bird");
    }
    if !crate::util::is_root() {
        bail!("the lab needs root (network namespaces, XDP)");
    }
    crate::setup::run()?;
    // Release, as operators run it: the lab's iperf3 numbers are the
    // product's, not a debug build's (whose worker is several times slower
    // per packet and was what capped TCP toward the customer).
    crate::util::build(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("installing the Ctrl-C handler")?;
    }
    let dir = workspace_root().join("target/lab");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    teardown();
    mount_lab_bpffs()?;
    let mut lab = Lab {
        dir,
        daemons: Vec::new(),
        logs: Vec::new(),
    };
    let mut current = "start";
    let result = steps(&mut lab, &stop, then, peer, &mut current);
    if let Err(e) = &result {
        eprintln!("\nlab: step '{current}' failed: {e:#}");
        lab.print_logs();
    }
    drop(lab);
    println!("lab: removed");
    result
}

fn steps(
    lab: &mut Lab,
    stop: &AtomicBool,
    then: Then,
    peer: &str,
    current: &mut &'static str,
) -> anyhow::Result<()> {
    *current = "topology";
    step("lab: topology vpc — gw — cgw — remote");
    build_topology()?;
    GW.exec(&["ping", "-c", "1", "-W", "2", "192.0.2.2"])?;
    GW.exec(&["ping", "-6", "-c", "1", "-W", "2", "2001:db8::2"])?;

    *current = "gateway daemon";
    step("lab: s2s-gateway in gw (config/lab-gw.toml)");
    start_gateway(lab, stop, BUILT_GATEWAY)?;

    *current = "API: resources";
    step("lab: VPN gateway, customer gateway, routing policies, connection (API)");
    let vgw = api(|c| {
        c.create_vpn_gateway(&CreateVpnGatewayRequest {
            name: Some("lab-vgw".into()),
            gateway_type: Some("VGW-M".into()),
            private_network_id: Some(PRIVATE_NETWORK.into()),
            public_config: Some(IpamPair {
                ipam_ipv4_id: Some(IPAM_V4.into()),
                ipam_ipv6_id: Some(IPAM_V6.into()),
            }),
            ..Default::default()
        })
    })?;
    let vgw_id = vgw.id.clone();
    // The agent makes it active once it has set the gateway up.
    wait_for(
        lab,
        stop,
        "the VPN gateway to be active",
        Duration::from_secs(30),
        || {
            let id = vgw_id.clone();
            let g = api(move |c| c.vpn_gateway(&id))?;
            Ok((g.status == VpnGatewayStatus::Active).then_some(()))
        },
    )?;
    println!("lab: VPN gateway {vgw_id} active");
    let cgw = api(|c| {
        c.create_customer_gateway(&CreateCustomerGatewayRequest {
            name: Some("lab-cgw".into()),
            asn: Some(CUSTOMER_ASN),
            ipv4_public: Some("192.0.2.2".into()),
            ipv6_public: Some("2001:db8::2".into()),
            ..Default::default()
        })
    })?;
    let policy = |name: &str, v6: bool, filter_in: &str, filter_out: &str| {
        let req = CreateRoutingPolicyRequest {
            name: Some(name.into()),
            is_ipv6: Some(v6),
            prefix_filter_in: Some(vec![filter_in.into()]),
            prefix_filter_out: Some(vec![filter_out.into()]),
            ..Default::default()
        };
        api(move |c| c.create_routing_policy(&req))
    };
    let rp4 = policy("lab-v4", false, "203.0.113.0/24", "198.51.100.0/24")?;
    let rp6 = policy("lab-v6", true, "2001:db8:200::/48", "2001:db8:100::/48")?;
    let req = CreateConnectionRequest {
        name: Some("lab".into()),
        vpn_gateway_id: Some(vgw_id.clone()),
        customer_gateway_id: Some(cgw.id.clone()),
        initiation_policy: Some("vpn_gateway".into()),
        ikev2_ciphers: Some(vec![cipher("aes256gcm-sha256-curve25519")?]),
        esp_ciphers: Some(vec![cipher("aes256gcm")?]),
        bgp_config_ipv4: Some(BgpConfigRequest {
            routing_policy_id: Some(rp4.id.clone()),
            ..Default::default()
        }),
        bgp_config_ipv6: Some(BgpConfigRequest {
            routing_policy_id: Some(rp6.id.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let conn_id = api(move |c| c.create_connection(&req))?.connection.id;
    {
        let id = conn_id.clone();
        api(move |c| c.set_route_propagation(&id, true))?;
    }
    println!("lab: connection {conn_id} created, route propagation enabled");

    *current = "customer side";
    step(&format!(
        "lab: customer gateway: strongSwan + {peer} from our device configs"
    ));
    let dir = lab.dir.clone();
    let d = dir.display().to_string();
    fs::write(
        dir.join("strongswan.conf"),
        charon::strongswan_conf(&dir, CHARON_SETTINGS),
    )?;
    write_swanctl(&dir, &conn_id)?;
    start_charon(lab, stop)?;
    interco_on_ipsec0(lab, stop, &conn_id)?;
    if peer == "bird" {
        let conf = device_config(&conn_id, "bird")?;
        fs::write(dir.join("bird.conf"), conf)?;
        start_bird(lab)?;
    } else {
        let conf = device_config(&conn_id, "frr")?;
        fs::write(dir.join("frr.conf"), conf)?;
        fs::create_dir_all(dir.join("frr"))?;
        sh(Command::new("chown").args(["-R", "frr:frr", &format!("{d}/frr")]))?;
        lab.spawn(
            "zebra",
            CGW,
            &format!("exec /usr/lib/frr/zebra -f /dev/null -i {d}/frr/zebra.pid -z {d}/frr/zserv.api --vty_socket {d}/frr -P 0"),
        )?;
        lab.spawn(
            "bgpd",
            CGW,
            &format!("sleep 1; exec /usr/lib/frr/bgpd -f {d}/frr.conf -i {d}/frr/bgpd.pid -z {d}/frr/zserv.api --vty_socket {d}/frr -P 0"),
        )?;
    }

    *current = "connection active";
    step("lab: waiting for the connection to be active");
    let mut last = String::new();
    let started = Instant::now();
    wait_for(
        lab,
        stop,
        "the connection to be active",
        Duration::from_secs(120),
        || {
            let c = connection(&conn_id)?;
            let line = status_line(&c);
            if line != last {
                println!("  [{:>5.1}s] {line}", started.elapsed().as_secs_f64());
                last = line;
            }
            Ok((c.status == ConnectionStatus::Active).then_some(()))
        },
    )?;

    *current = "routes";
    step("lab: routes");
    wait_for(
        lab,
        stop,
        "the remote prefixes in gw's kernel table",
        Duration::from_secs(30),
        || {
            let v4 = GW.out(&["ip", "route", "show", "203.0.113.0/24"])?;
            let v6 = GW.out(&["ip", "-6", "route", "show", "2001:db8:200::/48"])?;
            Ok((!v4.trim().is_empty() && !v6.trim().is_empty()).then_some(()))
        },
    )?;
    status_table(&conn_id, peer, &lab.dir)?;
    if let Then::BenchRestart { runs } = then {
        *current = "bench restart";
        return bench_restarts(lab, stop, &conn_id, runs);
    }

    *current = "traffic";
    step("lab: ping vpc → remote (IPv4, IPv6)");
    for target in REMOTE_HOSTS {
        let family = if target.contains(':') { "-6" } else { "-4" };
        let out = VPC.out(&["ping", family, "-c", "3", "-i", "0.2", "-W", "2", target])?;
        // One line: "3 packets transmitted, 3 received, 0% packet loss" and the rtt.
        let summary = out
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or("no summary");
        let rtt = out
            .lines()
            .find_map(|l| l.split_once(" = ").map(|(_, v)| v.to_owned()))
            .map(|v| format!(", rtt min/avg/max/mdev {v}"))
            .unwrap_or_default();
        println!("  ping vpc → {target}: {summary}{rtt}");
    }
    df_ping_sweep()?;
    step("lab: iperf3 vpc ↔ remote (IPv4, IPv6, both ways), 3 s each");
    lab.spawn("iperf3-server", REMOTE, "exec iperf3 -s")?;
    std::thread::sleep(Duration::from_millis(500));
    for target in ["203.0.113.10", "2001:db8:200::10"] {
        for (dir, reverse) in [("vpc → remote", false), ("remote → vpc", true)] {
            let (mbps, retr) = labkit::iperf3(VPC, target, reverse)?;
            println!("  {target} {dir}: {mbps:.0} Mbit/s, {retr} retransmits");
            if mbps <= 0.0 {
                bail!("TCP {dir} to {target} carried nothing");
            }
        }
    }
    status_table(&conn_id, peer, &lab.dir)?;
    if let Then::Lab {
        scenarios: true, ..
    } = then
    {
        run_scenarios(lab, stop, &conn_id, &rp6.id, current)?;
    }
    println!("\nlab: every step passed");
    if matches!(then, Then::Lab { once: true, .. }) {
        return Ok(());
    }
    *current = "interactive";
    println!(
        "lab: up. Try: ip netns exec {} ping 203.0.113.10   (Ctrl-C removes the lab)",
        VPC.name()
    );
    std::io::stdout().flush()?;
    while !stop.load(Ordering::Relaxed) {
        lab.check_daemons()?;
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

fn status_table(conn_id: &str, peer: &str, dir: &Path) -> anyhow::Result<()> {
    let c = serde_json::to_value(connection(conn_id)?)?;
    println!("\n  connection {conn_id}");
    for key in [
        "status",
        "tunnel_status",
        "tunnel_status_ipv4",
        "tunnel_status_ipv6",
        "bgp_status_ipv4",
        "bgp_status_ipv6",
        "route_propagation_enabled",
    ] {
        // Words, not JSON: up, not "up"; a family without a tunnel: -.
        let word = match &c[key] {
            Value::String(s) => s.clone(),
            Value::Null => "-".to_owned(),
            other => other.to_string(),
        };
        println!("    {key:<28} {word}");
    }
    println!("  gw routes (ours, proto 196):");
    for fam in ["-4", "-6"] {
        let r = GW.out(&["ip", fam, "route", "show", "proto", "196"])?;
        for l in r.lines() {
            println!("    {l}");
        }
    }
    if peer == "bird" {
        let d = dir.display().to_string();
        if let Ok(r) = CGW.out(&["birdc", "-s", &format!("{d}/bird.ctl"), "show", "route"]) {
            println!("  cgw BIRD routes:");
            for l in r.lines().skip(1) {
                println!("    {l}");
            }
        }
        // The BGP state, last error and any start delay BIRD is waiting out.
        for l in bird_bgp_detail(dir) {
            println!("  cgw BIRD {l}");
        }
    }
    if let Ok(stats) = GW.out(&["ip", "-s", "link", "show", "dev", "wan0"]) {
        println!("  gw wan0 counters:");
        for l in stats.lines().skip(2) {
            println!("    {l}");
        }
    }
    Ok(())
}

/// The daemon the lab runs: the release build.
const BUILT_GATEWAY: &str = "target/release/s2s-gateway";
/// The daemon the Debian package installs.
const INSTALLED_GATEWAY: &str = "/usr/bin/s2s-gateway";

/// Starts our daemon `bin` in gw (its state stays in `gateway.state_dir`
/// across restarts) and waits for its API.
fn start_gateway(lab: &mut Lab, stop: &AtomicBool, bin: &str) -> anyhow::Result<()> {
    let script = format!(
        "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; \
         exec env RUST_LOG=info {bin} run --config config/lab-gw.toml"
    );
    lab.spawn("s2s-gateway", GW, &script)?;
    wait_for(lab, stop, "the API", Duration::from_secs(30), || {
        Ok(api(|c| c.gateway_types()).ok().map(|_| ()))
    })
}

/// Writes the connection's strongSwan device config as it is.
fn write_swanctl(dir: &Path, conn_id: &str) -> anyhow::Result<String> {
    let swanctl = device_config(conn_id, "strongswan")?;
    fs::write(dir.join("swanctl.conf"), &swanctl)?;
    Ok(swanctl)
}

fn load_swanctl(dir: &Path) -> anyhow::Result<()> {
    // swanctl's output lists every credential directory it did not find:
    // keep the summary only.
    let out = charon::load(CGW, dir)?;
    for l in out.lines().filter(|l| l.contains("loaded")) {
        println!("  swanctl: {l}");
    }
    Ok(())
}

/// Starts charon (kernel-libipsec) in cgw and loads swanctl.conf.
fn start_charon(lab: &mut Lab, stop: &AtomicBool) -> anyhow::Result<()> {
    let dir = lab.dir.clone();
    fs::create_dir_all(dir.join("run"))?;
    // A restarted charon must not find its predecessor's socket or pid.
    let _ = fs::remove_file(dir.join("charon.vici"));
    let _ = fs::remove_file(dir.join("run/charon.pid"));
    lab.spawn("charon", CGW, &charon::command(&dir))?;
    wait_for(
        lab,
        stop,
        "charon's vici socket",
        Duration::from_secs(15),
        || Ok(dir.join("charon.vici").exists().then_some(())),
    )?;
    load_swanctl(&dir)
}

/// The device config asks for the interconnection addresses on the tunnel
/// interface (kernel-libipsec's ipsec0, created by charon).
fn interco_on_ipsec0(lab: &mut Lab, stop: &AtomicBool, conn_id: &str) -> anyhow::Result<()> {
    wait_for(lab, stop, "ipsec0 in cgw", Duration::from_secs(15), || {
        Ok(CGW.out(&["ip", "link", "show", "ipsec0"]).ok().map(|_| ()))
    })?;
    let conn = connection(conn_id)?;
    for session in [&conn.bgp_session_ipv4, &conn.bgp_session_ipv6] {
        if let Some(peer_ip) = session.as_ref().map(|s| s.peer_private_ip.as_str()) {
            let mut cmd = vec!["ip", "addr", "add", peer_ip, "dev", "ipsec0"];
            if peer_ip.contains(':') {
                cmd.push("nodad");
            }
            CGW.exec(&cmd)?;
        }
    }
    CGW.exec(&["ip", "link", "set", "ipsec0", "up"])
}

/// Stops charon and BIRD in cgw with `signal`, then starts them again with
/// the same configs and the interconnection addresses back on ipsec0.
fn restart_customer(
    lab: &mut Lab,
    stop: &AtomicBool,
    conn_id: &str,
    signal: &str,
) -> anyhow::Result<()> {
    lab.stop_daemon("bird", signal)?;
    lab.stop_daemon("charon", signal)?;
    start_charon(lab, stop)?;
    interco_on_ipsec0(lab, stop, conn_id)?;
    start_bird(lab)
}

fn start_bird(lab: &mut Lab) -> anyhow::Result<()> {
    let d = lab.dir.display().to_string();
    let _ = fs::remove_file(lab.dir.join("bird.ctl"));
    lab.spawn(
        "bird",
        CGW,
        &format!("exec bird -f -c {d}/bird.conf -s {d}/bird.ctl -P {d}/bird.pid"),
    )
}

/// The hosts of the remote site, one per family.
const REMOTE_HOSTS: [&str; 2] = ["203.0.113.10", "2001:db8:200::10"];

/// The remote prefix the BGP session of a family (`v4`, `v6`) learns.
fn route_of(family: &str) -> &'static str {
    if family == "v6" {
        "2001:db8:200::/48"
    } else {
        "203.0.113.0/24"
    }
}

/// The TUN interface our kernel route to `prefix` goes through in gw.
fn route_dev(prefix: &str) -> anyhow::Result<String> {
    let fam = if prefix.contains(':') { "-6" } else { "-4" };
    let r = GW.out(&["ip", fam, "route", "show", prefix, "proto", "196"])?;
    Ok(r.split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .unwrap_or("")
        .to_owned())
}

/// Scenario 6 while the `cut` family's peer address is gone: that tunnel
/// goes down (DPD), its family's routes and BGP peer route move to the
/// `other` tunnel, and vpc reaches remote in both families again, steadily.
fn failover_while_cut(
    lab: &mut Lab,
    stop: &AtomicBool,
    conn_id: &str,
    cut: Instant,
    cut_family: &str,
    other: &str,
) -> anyhow::Result<()> {
    // `v4` / `v6`: the tunnel of that outer family.
    let tunnel = |c: &Connection, family: &str| match family {
        "v4" => c.tunnel_status_ipv4,
        _ => c.tunnel_status_ipv6,
    };
    wait_connection(
        lab,
        stop,
        conn_id,
        &format!("our side to notice the {cut_family} tunnel is gone (DPD)"),
        Duration::from_secs(40),
        |c| {
            tunnel(c, cut_family) == Some(TunnelStatus::Down)
                && tunnel(c, other) == Some(TunnelStatus::Up)
        },
    )?;
    println!("  {cut_family} tunnel down after {:.1?}", cut.elapsed());
    let prefix = route_of(cut_family);
    let dev = route_dev(prefix)?;
    if !dev.ends_with(other) {
        bail!("{prefix} still goes through {dev:?}, not the {other} tunnel's TUN");
    }
    println!("  {prefix} now goes through {dev} (the {other} tunnel)");
    let m = metrics()?;
    let failover = format!(
        "s2s_bgp_session_failover{{session=\"{conn_id}/{cut_family}\",via=\"{conn_id}/{other}\"}} 1"
    );
    if !m.contains(&failover) {
        bail!("/metrics does not show the failover ({failover})");
    }
    println!("  /metrics: {failover}");
    // Traffic in both families: 5 consecutive rounds of pings answered.
    let mut streak = 0;
    wait_for(
        lab,
        stop,
        "vpc → remote answered in both families 5 times in a row",
        Duration::from_secs(30),
        || {
            let ok = REMOTE_HOSTS.iter().all(|t| ping_once(t));
            streak = if ok { streak + 1 } else { 0 };
            Ok((streak >= 5).then_some(()))
        },
    )?;
    println!(
        "  traffic continues in both families ({:.1?} after the cut)",
        cut.elapsed()
    );
    let c = connection(conn_id)?;
    if c.bgp_status_ipv4 != BgpSessionStatus::Up || c.bgp_status_ipv6 != BgpSessionStatus::Up {
        bail!(
            "BGP sessions not both up while failed over: {}",
            status_line(&c)
        );
    }
    let counters = tunnel_counters(conn_id)?;
    println!("  per-tunnel ESP packets (in, out): {counters:?}");
    Ok(())
}

/// One ping from `vpc`, one second to answer.
fn ping_once(target: &str) -> bool {
    let mut c = VPC.cmd("ping");
    if target.contains(':') {
        c.arg("-6");
    }
    c.args(["-c", "1", "-W", "1", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits until vpc reaches remote in both families.
fn wait_pings(lab: &mut Lab, stop: &AtomicBool, limit: Duration) -> anyhow::Result<()> {
    for target in REMOTE_HOSTS {
        wait_for(lab, stop, &format!("ping vpc → {target}"), limit, || {
            Ok(ping_once(target).then_some(()))
        })?;
        println!("  ping vpc → {target}: ok");
    }
    Ok(())
}

/// Polls the connection until `done` holds, printing each status change.
fn wait_connection(
    lab: &mut Lab,
    stop: &AtomicBool,
    conn_id: &str,
    what: &str,
    limit: Duration,
    done: impl Fn(&Connection) -> bool,
) -> anyhow::Result<Connection> {
    let mut last = String::new();
    let started = Instant::now();
    wait_for(lab, stop, what, limit, || {
        let c = connection(conn_id)?;
        let line = status_line(&c);
        if line != last {
            println!("  [{:>5.1}s] {line}", started.elapsed().as_secs_f64());
            last = line;
        }
        Ok(done(&c).then_some(c))
    })
}

/// Waits until the connection is fully up again, our routes are back in
/// gw's kernel table and vpc reaches remote in both families.
fn recovered(
    lab: &mut Lab,
    stop: &AtomicBool,
    conn_id: &str,
    what: &str,
    limit: Duration,
    ping_limit: Duration,
) -> anyhow::Result<()> {
    wait_connection(lab, stop, conn_id, what, limit, all_up)?;
    wait_gw_routes(lab, stop, Duration::from_secs(20))?;
    wait_pings(lab, stop, ping_limit)
}

/// Waits until the gateway's log shows two IKE SAs (both tunnels)
/// established after `before` of them.
fn wait_new_ike_sas(
    lab: &mut Lab,
    stop: &AtomicBool,
    gw_log: &Path,
    before: usize,
    what: &str,
    limit: Duration,
) -> anyhow::Result<()> {
    wait_for(lab, stop, what, limit, || {
        Ok((count_in_log(gw_log, "IKE SA established") >= before + 2).then_some(()))
    })
}

fn all_up(c: &Connection) -> bool {
    c.status == ConnectionStatus::Active
        && c.tunnel_status_ipv4 == Some(TunnelStatus::Up)
        && c.tunnel_status_ipv6 == Some(TunnelStatus::Up)
        && c.bgp_status_ipv4 == BgpSessionStatus::Up
        && c.bgp_status_ipv6 == BgpSessionStatus::Up
}

/// Our routes (proto 196) in gw's kernel table, both families.
fn gw_routes() -> anyhow::Result<String> {
    Ok(format!(
        "{}{}",
        GW.out(&["ip", "-4", "route", "show", "proto", "196"])?,
        GW.out(&["ip", "-6", "route", "show", "proto", "196"])?
    ))
}

fn wait_gw_routes(lab: &mut Lab, stop: &AtomicBool, limit: Duration) -> anyhow::Result<()> {
    wait_for(
        lab,
        stop,
        "203.0.113.0/24 and 2001:db8:200::/48 in gw's kernel table",
        limit,
        || {
            let r = gw_routes()?;
            Ok((r.contains("203.0.113.0/24") && r.contains("2001:db8:200::/48")).then_some(()))
        },
    )?;
    println!("  gw kernel routes (proto 196): 203.0.113.0/24, 2001:db8:200::/48");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str, line: &str) -> (String, String) {
        (name.to_owned(), line.to_owned())
    }

    #[test]
    fn bird_since_times_may_differ_by_rounding_only() {
        let before = [s("s2s_v4", "BGP --- up 02:32:27.384 Established")];
        let rounded = [s("s2s_v4", "BGP --- up 02:32:27.383 Established")];
        let flapped = [s("s2s_v4", "BGP --- up 02:32:35.120 Established")];
        let down = [s("s2s_v4", "BGP --- start 02:32:27.384 Active")];
        assert!(same_sessions(&before, &rounded));
        assert!(!same_sessions(&before, &flapped));
        assert!(!same_sessions(&before, &down));
        assert!(!same_sessions(&before, &[]));
        assert_eq!(clock_ms("01:02:03.4"), Some(3_723_400));
        assert_eq!(clock_ms("01:02:03"), Some(3_723_000));
        assert_eq!(clock_ms("2026-12-06"), None);
    }

    #[test]
    fn the_longest_gap_counts_unanswered_pings_in_a_row() {
        assert_eq!(longest_gap(&[1, 2, 3, 4], 4), 0);
        // 3..=7 unanswered.
        assert_eq!(longest_gap(&[1, 2, 8, 9, 10], 10), 5);
        // At the start, at the end, and nothing answered at all.
        assert_eq!(longest_gap(&[4, 5], 5), 3);
        assert_eq!(longest_gap(&[1, 2], 6), 4);
        assert_eq!(longest_gap(&[], 6), 6);
        // Duplicates and out-of-order replies change nothing.
        assert_eq!(longest_gap(&[5, 1, 1, 2, 6], 6), 2);
    }
}
