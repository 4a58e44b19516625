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

use labkit::{charon, veth, Ns};

use crate::util::{output, sh, step, workspace_root};

/// Namespace names are prefixed so the lab never touches anything else.
const PREFIX: &str = "s2slab-";
const TOKEN: &str = "lab-0000-0000-token";
const PRIVATE_NETWORK: &str = "11111111-2222-4333-8444-555555555555";
const IPAM_V4: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const IPAM_V6: &str = "aaaaaaaa-0000-4000-8000-000000000002";
const CUSTOMER_ASN: &str = "65010";

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

/// Runs s2sctl against the lab gateway's API; returns the parsed JSON.
fn s2sctl(args: &[&str]) -> anyhow::Result<Value> {
    let bin = workspace_root().join("target/release/s2sctl");
    let out = output(
        GW.cmd(&bin.display().to_string())
            .args(["--token", TOKEN, "-o", "json"])
            .args(args),
    )?;
    serde_json::from_str(&out)
        .with_context(|| format!("s2sctl {}: not JSON: {out}", args.join(" ")))
}

fn s2sctl_text(args: &[&str]) -> anyhow::Result<String> {
    let bin = workspace_root().join("target/release/s2sctl");
    output(
        GW.cmd(&bin.display().to_string())
            .args(["--token", TOKEN])
            .args(args),
    )
}

fn field<'a>(v: &'a Value, key: &str) -> anyhow::Result<&'a str> {
    v[key]
        .as_str()
        .ok_or_else(|| anyhow!("API response without {key}: {v}"))
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
    // `--wait`: s2sctl polls until the agent has made it active.
    let vgw = s2sctl(&[
        "--wait",
        "--wait-timeout",
        "30",
        "vpn-gateway",
        "create",
        "--name",
        "lab-vgw",
        "--gateway-type",
        "VGW-S",
        "--private-network-id",
        PRIVATE_NETWORK,
        "--ipam-ipv4-id",
        IPAM_V4,
        "--ipam-ipv6-id",
        IPAM_V6,
    ])?;
    let vgw_id = field(&vgw, "id")?.to_owned();
    if vgw["status"] != "active" {
        bail!("s2sctl --wait returned VPN gateway {vgw_id} not active: {vgw}");
    }
    println!("lab: VPN gateway {vgw_id} active");
    let cgw = s2sctl(&[
        "customer-gateway",
        "create",
        "--name",
        "lab-cgw",
        "--asn",
        CUSTOMER_ASN,
        "--ipv4",
        "192.0.2.2",
        "--ipv6",
        "2001:db8::2",
    ])?;
    let cgw_id = field(&cgw, "id")?.to_owned();
    let rp4 = s2sctl(&[
        "routing-policy",
        "create",
        "--name",
        "lab-v4",
        "--in",
        "203.0.113.0/24",
        "--out",
        "198.51.100.0/24",
    ])?;
    let rp6 = s2sctl(&[
        "routing-policy",
        "create",
        "--name",
        "lab-v6",
        "--ipv6",
        "--in",
        "2001:db8:200::/48",
        "--out",
        "2001:db8:100::/48",
    ])?;
    let conn = s2sctl(&[
        "connection",
        "create",
        "--name",
        "lab",
        "--vpn-gateway-id",
        &vgw_id,
        "--customer-gateway-id",
        &cgw_id,
        "--initiation-policy",
        "vpn_gateway",
        "--ike",
        "aes256gcm-sha256-curve25519",
        "--esp",
        "aes256gcm",
        "--routing-policy-v4",
        field(&rp4, "id")?,
        "--routing-policy-v6",
        field(&rp6, "id")?,
    ])?;
    // CreateConnectionResponse wraps the connection.
    let conn_id = field(&conn["connection"], "id")?.to_owned();
    s2sctl(&["connection", "enable-route-propagation", &conn_id])?;
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
        let conf = s2sctl_text(&["connection", "device-config", &conn_id, "--vendor", "bird"])?;
        fs::write(dir.join("bird.conf"), conf)?;
        start_bird(lab)?;
    } else {
        let conf = s2sctl_text(&["connection", "device-config", &conn_id, "--vendor", "frr"])?;
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
            let c = s2sctl(&["connection", "get", &conn_id])?;
            let line = format!(
                "status={} tunnel_ipv4={} tunnel_ipv6={} bgp_ipv4={} bgp_ipv6={}",
                c["status"].as_str().unwrap_or("?"),
                c["tunnel_status_ipv4"].as_str().unwrap_or("-"),
                c["tunnel_status_ipv6"].as_str().unwrap_or("-"),
                c["bgp_status_ipv4"].as_str().unwrap_or("?"),
                c["bgp_status_ipv6"].as_str().unwrap_or("?"),
            );
            if line != last {
                println!("  [{:>5.1}s] {line}", started.elapsed().as_secs_f64());
                last = line;
            }
            Ok((c["status"] == "active").then_some(()))
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
        let rp6_id = field(&rp6, "id")?.to_owned();
        run_scenarios(lab, stop, &conn_id, &rp6_id, current)?;
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

/// What one DF ping of a size got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// The echo reply came back.
    Answered,
    /// An ICMP fragmentation needed / packet too big arrived (with its
    /// MTU), or the host already knew the path MTU from one.
    TooBig(u32),
    /// Neither: the black hole this sweep is for.
    Lost,
}

/// A DF ping of `size` bytes; a probe without an answer is repeated up to
/// twice: the reply may itself have met a smaller MTU on the way back (the
/// customer side's, strongSwan's TUN is 1400) and the remote host learns it
/// from that router's ICMP error, as path MTU discovery does.
fn probe(target: &str, v6: bool, size: usize) -> anyhow::Result<Probe> {
    // Forget what earlier probes taught the host: each size on its own.
    VPC.exec(&[
        "ip",
        if v6 { "-6" } else { "-4" },
        "route",
        "flush",
        "cache",
    ])?;
    for _ in 0..3 {
        let p = probe_once(target, v6, size)?;
        if p != Probe::Lost {
            return Ok(p);
        }
    }
    Ok(Probe::Lost)
}

fn probe_once(target: &str, v6: bool, size: usize) -> anyhow::Result<Probe> {
    let payload = (size - if v6 { 48 } else { 28 }).to_string();
    let fam = if v6 { "-6" } else { "-4" };
    let out = VPC
        .cmd("ping")
        .args([
            fam, "-M", "do", "-c", "1", "-W", "2", "-s", &payload, target,
        ])
        .output()?;
    if out.status.success() {
        return Ok(Probe::Answered);
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // "Frag needed and DF set (mtu = 1438)", "Packet too big: mtu=1418",
    // "local error: message too long, mtu=1438".
    let mtu = text
        .split("mtu")
        .nth(1)
        .map(|r| r.trim_start_matches([' ', '=']))
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse().ok());
    Ok(mtu.map_or(Probe::Lost, Probe::TooBig))
}

/// DF pings from vpc to remote of every size from 1200 to 1500 bytes (IP
/// packet, step 10), both families: each must be answered or answered with
/// the ICMP error carrying the MTU; none may be silently lost. Prints one
/// summary line per family.
fn df_ping_sweep() -> anyhow::Result<()> {
    step("lab: DF ping sweep vpc → remote, 1200..1500 bytes (IPv4, IPv6)");
    let mut lost_total = Vec::new();
    for (target, v6) in [("203.0.113.10", false), ("2001:db8:200::10", true)] {
        let mut answered = (0, usize::MAX, 0usize);
        let mut too_big: Vec<(usize, u32)> = Vec::new();
        let mut lost = Vec::new();
        for size in (1200..=1500).step_by(10) {
            match probe(target, v6, size)? {
                Probe::Answered => {
                    answered.0 += 1;
                    answered.1 = answered.1.min(size);
                    answered.2 = answered.2.max(size);
                }
                Probe::TooBig(m) => too_big.push((size, m)),
                Probe::Lost => lost.push(size),
            }
        }
        let mut mtus: Vec<u32> = too_big.iter().map(|(_, m)| *m).collect();
        mtus.sort_unstable();
        mtus.dedup();
        println!(
            "  {target}: {} answered ({}..={} bytes), {} answered with too-big (mtu {:?}), {} silently lost {:?}",
            answered.0,
            if answered.0 > 0 { answered.1 } else { 0 },
            answered.2,
            too_big.len(),
            mtus,
            lost.len(),
            lost
        );
        // A size that got an error must be above the MTU it names, and an
        // answered size must not be.
        for (size, m) in &too_big {
            if *size <= *m as usize {
                bail!("{target}: {size} bytes got too-big with mtu {m}");
            }
        }
        lost_total.extend(lost.iter().map(|s| format!("{target}/{s}")));
    }
    if !lost_total.is_empty() {
        bail!("DF pings silently lost: {}", lost_total.join(", "));
    }
    Ok(())
}

fn status_table(conn_id: &str, peer: &str, dir: &Path) -> anyhow::Result<()> {
    let c = s2sctl(&["connection", "get", conn_id])?;
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
        Ok(s2sctl(&["gateway-type", "list"]).ok().map(|_| ()))
    })
}

/// Writes the connection's strongSwan device config as it is.
fn write_swanctl(dir: &Path, conn_id: &str) -> anyhow::Result<String> {
    let swanctl = s2sctl_text(&[
        "connection",
        "device-config",
        conn_id,
        "--vendor",
        "strongswan",
    ])?;
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
    let conn = s2sctl(&["connection", "get", conn_id])?;
    for key in ["bgp_session_ipv4", "bgp_session_ipv6"] {
        if let Some(peer_ip) = conn[key]["peer_private_ip"].as_str() {
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
    let (down_key, up_key) = (
        format!("tunnel_status_ip{cut_family}"),
        format!("tunnel_status_ip{other}"),
    );
    wait_connection(
        lab,
        stop,
        conn_id,
        &format!("our side to notice the {cut_family} tunnel is gone (DPD)"),
        Duration::from_secs(40),
        |c| c[&down_key] == "down" && c[&up_key] == "up",
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
    let c = s2sctl(&["connection", "get", conn_id])?;
    if c["bgp_status_ipv4"] != "up" || c["bgp_status_ipv6"] != "up" {
        bail!("BGP sessions not both up while failed over: {c}");
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
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let mut last = String::new();
    let started = Instant::now();
    wait_for(lab, stop, what, limit, || {
        let c = s2sctl(&["connection", "get", conn_id])?;
        let line = format!(
            "status={} tunnel_ipv4={} tunnel_ipv6={} bgp_ipv4={} bgp_ipv6={}",
            c["status"].as_str().unwrap_or("?"),
            c["tunnel_status_ipv4"].as_str().unwrap_or("-"),
            c["tunnel_status_ipv6"].as_str().unwrap_or("-"),
            c["bgp_status_ipv4"].as_str().unwrap_or("?"),
            c["bgp_status_ipv6"].as_str().unwrap_or("?"),
        );
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

fn all_up(c: &Value) -> bool {
    c["status"] == "active"
        && c["tunnel_status_ipv4"] == "up"
        && c["tunnel_status_ipv6"] == "up"
        && c["bgp_status_ipv4"] == "up"
        && c["bgp_status_ipv6"] == "up"
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

fn birdc(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let ctl = format!("{}/bird.ctl", dir.display());
    let mut all = vec!["birdc", "-s", &ctl];
    all.extend_from_slice(args);
    CGW.out(&all)
}

/// For each of BIRD's two BGP sessions: its BGP state, last error and
/// the start delay it is waiting out after errors, if any (`show
/// protocols all`, one line each). Empty where birdc does not answer.
fn bird_bgp_detail(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for proto in ["s2s_v4", "s2s_v6"] {
        let Ok(r) = birdc(dir, &["show", "protocols", "all", proto]) else {
            continue;
        };
        let keep: Vec<&str> = r
            .lines()
            .map(str::trim)
            .filter(|l| {
                ["BGP state:", "Last error:", "Start delay:", "Error wait:"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .collect();
        out.push(format!("{proto}: {}", keep.join("; ")));
    }
    out
}

/// BIRD's BGP sessions: name → (state, since, info).
fn bird_sessions(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let out = birdc(dir, &["show", "protocols"])?;
    Ok(out
        .lines()
        .filter(|l| l.starts_with("s2s_"))
        .map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            (t[0].to_owned(), t[1..].join(" "))
        })
        .collect())
}

/// Whether two `show protocols` readings show the same sessions: same
/// names and columns, and since-times within a second of each other. BIRD
/// keeps the since-time on its monotonic clock and converts it to wall
/// time when it prints, so one unchanged session may read `…27.384` then
/// `…27.383`; a session that went down and up again during a step that
/// lasts several seconds moves by more than that.
fn same_sessions(a: &[(String, String)], b: &[(String, String)]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((na, la), (nb, lb))| {
            let (ta, tb): (Vec<&str>, Vec<&str>) = (
                la.split_whitespace().collect(),
                lb.split_whitespace().collect(),
            );
            na == nb
                && ta.len() == tb.len()
                && ta
                    .iter()
                    .zip(&tb)
                    .all(|(x, y)| match (clock_ms(x), clock_ms(y)) {
                        (Some(x), Some(y)) => x.abs_diff(y) <= 1000,
                        _ => x == y,
                    })
        })
}

/// `HH:MM:SS` or `HH:MM:SS.mmm` as milliseconds since midnight.
fn clock_ms(t: &str) -> Option<u64> {
    let (hms, frac) = t.split_once('.').unwrap_or((t, "0"));
    let mut parts = hms.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || frac.len() > 3 {
        return None;
    }
    let n = |x: &str| x.parse::<u64>().ok();
    let ms = n(frac)? * 10u64.pow(3 - frac.len() as u32);
    Some(((n(h)? * 60 + n(m)?) * 60 + n(s)?) * 1000 + ms)
}

/// What BIRD learned from us (the VPC prefixes), both sessions.
fn bird_learned(dir: &Path) -> anyhow::Result<String> {
    Ok(format!(
        "{}{}",
        birdc(dir, &["show", "route", "protocol", "s2s_v4"])?,
        birdc(dir, &["show", "route", "protocol", "s2s_v6"])?
    ))
}

/// GET /metrics from inside gw, with bash's /dev/tcp (no HTTP client
/// needed in the namespace).
fn metrics() -> anyhow::Result<String> {
    GW.out(&[
        "bash",
        "-c",
        "exec 3<>/dev/tcp/127.0.0.1/9108 && \
         printf 'GET /metrics HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n' >&3 && cat <&3",
    ])
}

/// Sum of a counter's samples for one tunnel (both directions).
fn metric_sum(text: &str, name: &str, tunnel: &str) -> anyhow::Result<u64> {
    let label = format!("tunnel=\"{tunnel}\"");
    let mut sum = 0u64;
    let mut seen = false;
    for l in text.lines() {
        if l.starts_with(&format!("{name}{{")) && l.contains(&label) {
            let v = l
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .with_context(|| format!("bad sample: {l}"))?;
            sum += v;
            seen = true;
        }
    }
    if !seen {
        bail!("/metrics has no {name} for tunnel {tunnel}");
    }
    Ok(sum)
}

/// (XDP packets, ESP packets) per tunnel.
fn tunnel_counters(conn_id: &str) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let text = metrics()?;
    ["v4", "v6"]
        .iter()
        .map(|f| {
            let t = format!("{conn_id}/{f}");
            Ok((
                t.clone(),
                metric_sum(&text, "s2s_xdp_packets_total", &t)?,
                metric_sum(&text, "s2s_esp_packets_total", &t)?,
            ))
        })
        .collect()
}

/// The customer's CHILD SAs and the packets each has sent.
fn cgw_child_out_packets(dir: &Path) -> anyhow::Result<Vec<(String, u64)>> {
    let uri = charon::vici_uri(dir);
    let out = CGW.out(&["swanctl", "--list-sas", "--uri", &uri])?;
    let mut v = Vec::new();
    let mut child = None;
    for l in out.lines() {
        let t = l.trim_start();
        if let Some((name, _)) = t.split_once(": #") {
            if name.ends_with("-net") {
                child = Some(name.to_owned());
            }
        } else if let (Some(name), Some(rest)) = (&child, t.strip_prefix("out ")) {
            // "out c0ffee00,    840 bytes,    10 packets, ..."
            let packets = rest
                .split(',')
                .find(|f| f.trim_end().ends_with("packets"))
                .and_then(|f| f.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            v.push((name.clone(), packets));
        }
    }
    Ok(v)
}

fn count_in_log(path: &Path, needle: &str) -> usize {
    fs::read_to_string(path)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// The lab's scenarios, in order, each bounded in time.
fn run_scenarios(
    lab: &mut Lab,
    stop: &AtomicBool,
    conn_id: &str,
    rp6_id: &str,
    current: &mut &'static str,
) -> anyhow::Result<()> {
    let dir = lab.dir.clone();

    *current = "scenario 1: fast path";
    step("scenario 1: traffic goes through the fast path (XDP and ESP counters in /metrics move)");
    let before = tunnel_counters(conn_id)?;
    for target in REMOTE_HOSTS {
        let mut c = VPC.cmd("ping");
        if target.contains(':') {
            c.arg("-6");
        }
        sh(c.args(["-q", "-c", "5", "-i", "0.2", "-W", "2", target]))?;
    }
    let after = tunnel_counters(conn_id)?;
    for ((t, x0, e0), (_, x1, e1)) in before.iter().zip(&after) {
        println!("  {t}: s2s_xdp_packets_total {x0} → {x1}, s2s_esp_packets_total {e0} → {e1}");
        if x1 <= x0 || e1 <= e0 {
            bail!("tunnel {t}: the fast-path counters did not move with the pings");
        }
    }

    // SA census and per-session prefix counts (refreshed on the agent's
    // 5 s pass): both tunnels' SAs established, and each session's
    // customer prefix received and accepted.
    wait_for(
        lab,
        stop,
        "/metrics to count the SAs and the accepted prefixes",
        Duration::from_secs(15),
        || {
            let text = metrics()?;
            let sample = |line: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(line))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let ike = sample("s2s_ike_sas{state=\"established\"}");
            let child = sample("s2s_child_sas{state=\"installed\"}");
            let accepted: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.starts_with("s2s_bgp_prefixes{")
                        && l.contains("state=\"accepted\"")
                        && !l.ends_with(" 0")
                })
                .collect();
            Ok((ike >= 2 && child >= 2 && accepted.len() >= 2).then(|| {
                println!(
                    "  /metrics: {ike} IKE SAs established, {child} CHILD SAs installed; {}",
                    accepted.join(", ")
                );
            }))
        },
    )?;

    *current = "scenario 2: route propagation";
    step("scenario 2: route propagation disabled → routes withdrawn, traffic stops; enabled → back (BGP stays up)");
    let sessions = bird_sessions(&dir)?;
    println!("  BIRD sessions: {sessions:?}");
    s2sctl(&["connection", "disable-route-propagation", conn_id])?;
    wait_for(
        lab,
        stop,
        "gw's kernel routes (proto 196) to be withdrawn",
        Duration::from_secs(20),
        || Ok(gw_routes()?.trim().is_empty().then_some(())),
    )?;
    println!("  gw kernel routes (proto 196): none");
    wait_for(
        lab,
        stop,
        "BIRD to lose the VPC prefixes",
        Duration::from_secs(20),
        || {
            let r = bird_learned(&dir)?;
            Ok((!r.contains("198.51.100.0/24") && !r.contains("2001:db8:100::/64")).then_some(()))
        },
    )?;
    println!("  BIRD: no route learned from us");
    for target in REMOTE_HOSTS {
        if ping_once(target) {
            bail!("ping vpc → {target} still works with route propagation disabled");
        }
        println!("  ping vpc → {target}: fails, as it must");
    }
    s2sctl(&["connection", "enable-route-propagation", conn_id])?;
    wait_gw_routes(lab, stop, Duration::from_secs(20))?;
    wait_for(
        lab,
        stop,
        "BIRD to learn the VPC prefixes again",
        Duration::from_secs(20),
        || {
            let r = bird_learned(&dir)?;
            Ok((r.contains("198.51.100.0/24") && r.contains("2001:db8:100::/64")).then_some(()))
        },
    )?;
    wait_pings(lab, stop, Duration::from_secs(15))?;
    let now = bird_sessions(&dir)?;
    if !same_sessions(&sessions, &now) || !now.iter().all(|(_, s)| s.contains("Established")) {
        bail!("BGP sessions changed while toggling route propagation: {sessions:?} → {now:?}");
    }
    println!("  BIRD sessions unchanged (still Established, same since-time)");

    *current = "scenario 3: routing policy detached";
    step("scenario 3: IPv6 routing policy detached → bgp_status_ipv6 disabled, still active; re-attached → up");
    s2sctl(&[
        "connection",
        "detach-routing-policy",
        conn_id,
        "--v6",
        rp6_id,
    ])?;
    wait_connection(
        lab,
        stop,
        conn_id,
        "bgp_status_ipv6 disabled with the connection active (IPv4 session up)",
        Duration::from_secs(20),
        |c| {
            c["bgp_status_ipv6"] == "disabled"
                && c["bgp_status_ipv4"] == "up"
                && c["status"] == "active"
        },
    )?;
    wait_for(
        lab,
        stop,
        "the IPv6 routes to be withdrawn from gw's kernel table",
        Duration::from_secs(20),
        || Ok((!gw_routes()?.contains("2001:db8:200::/48")).then_some(())),
    )?;
    println!("  gw: 2001:db8:200::/48 withdrawn");
    s2sctl(&["connection", "set-routing-policy", conn_id, "--v6", rp6_id])?;
    recovered(
        lab,
        stop,
        conn_id,
        "bgp_status_ipv6 up again",
        Duration::from_secs(120),
        Duration::from_secs(15),
    )?;

    *current = "scenario 4: PSK renewed";
    step("scenario 4: PSK renewed → customer side reloads its new device config → tunnels back with the new key");
    let gw_log = dir.join("s2s-gateway.log");
    let established = count_in_log(&gw_log, "IKE SA established");
    let old = fs::read_to_string(dir.join("swanctl.conf"))?;
    s2sctl(&["connection", "renew-psk", conn_id])?;
    let new = write_swanctl(&dir, conn_id)?;
    if new == old {
        bail!("the strongSwan device config did not change with the new PSK");
    }
    load_swanctl(&dir)?;
    println!("  cgw: new swanctl.conf loaded (swanctl --load-all)");
    wait_new_ike_sas(
        lab,
        stop,
        &gw_log,
        established,
        "both tunnels to re-establish their IKE SAs",
        Duration::from_secs(90),
    )?;
    recovered(
        lab,
        stop,
        conn_id,
        "the connection to be active with the new PSK",
        Duration::from_secs(120),
        Duration::from_secs(15),
    )?;

    *current = "scenario 5: customer gateway restarted";
    step("scenario 5: customer gateway restarted (charon and BIRD stopped and started again) → recovered");
    restart_customer(lab, stop, conn_id, "-TERM")?;
    println!("  cgw: charon and BIRD stopped (SIGTERM: charon deletes its SAs) and started again with the same configs");
    recovered(
        lab,
        stop,
        conn_id,
        "the connection to recover",
        Duration::from_secs(150),
        Duration::from_secs(15),
    )?;

    *current = "scenario 5b: customer gateway crashed";
    step("scenario 5b: customer gateway crashed (SIGKILL) and restarted; it initiates (INITIAL_CONTACT replaces our stale SAs) → recovered");
    restart_customer(lab, stop, conn_id, "-KILL")?;
    println!("  cgw: charon and BIRD killed (no DELETE sent: our IKE SAs stay) and started again");
    let uri = charon::vici_uri(&dir);
    for child in ["s2s-v4-net", "s2s-v6-net"] {
        CGW.out(&[
            "swanctl",
            "--initiate",
            "--child",
            child,
            "--timeout",
            "15",
            "--uri",
            &uri,
        ])
        .with_context(|| format!("cgw: swanctl --initiate --child {child}"))?;
        println!("  cgw: {child} initiated by the customer gateway");
    }
    recovered(
        lab,
        stop,
        conn_id,
        "the connection to recover",
        Duration::from_secs(60),
        Duration::from_secs(15),
    )?;

    *current = "scenario 6: tunnel failover";
    step("scenario 6: the peer address of the tunnel cgw sends through is cut → routes and that family's BGP session move to the other tunnel on both sides, traffic continues in both families; the address back → back");
    // Which of the customer's CHILD SAs carries the replies of each family:
    // both children of our device config have the same traffic selectors.
    // The cut hits the one it uses, so that both sides must switch.
    let mut customer_uses = Vec::new();
    for target in REMOTE_HOSTS {
        let before = cgw_child_out_packets(&dir)?;
        let mut c = VPC.cmd("ping");
        if target.contains(':') {
            c.arg("-6");
        }
        sh(c.args(["-q", "-c", "5", "-i", "0.2", "-W", "2", target]))?;
        let after = cgw_child_out_packets(&dir)?;
        let used: Vec<String> = after
            .iter()
            .filter(|(name, n)| {
                before
                    .iter()
                    .find(|(b, _)| b == name)
                    .is_none_or(|(_, b)| n > b)
            })
            .map(|(name, _)| name.clone())
            .collect();
        println!("  before the cut, cgw sends the replies to vpc → {target} through {used:?}");
        customer_uses.extend(used);
    }
    let cut_v6 = customer_uses.iter().any(|u| u == "s2s-v6-net");
    let (address, cut_family, other) = if cut_v6 {
        ("2001:db8::2/64", "v6", "v4")
    } else {
        ("192.0.2.2/24", "v4", "v6")
    };
    println!("  cutting {address} in cgw (the {cut_family} tunnel's peer address)");
    let bgp_downs_before = count_in_log(&gw_log, "up=false");
    CGW.exec(&["ip", "addr", "del", address, "dev", "wan0"])?;
    let cut = Instant::now();
    let result = failover_while_cut(lab, stop, conn_id, cut, cut_family, other);
    // The address comes back whatever happened, so that the next scenarios
    // (and a failure's diagnosis) see a whole lab.
    let mut restore = vec!["ip", "addr", "add", address, "dev", "wan0"];
    if cut_v6 {
        restore.push("nodad");
    }
    CGW.exec(&restore)?;
    result?;
    let bgp_downs = count_in_log(&gw_log, "up=false") - bgp_downs_before;
    if bgp_downs > 0 {
        bail!("{bgp_downs} BGP session(s) went down during the failover (see gw.log)");
    }
    println!("  no BGP session went down during the cut");
    println!("  cgw: {address} restored after {:.0?}", cut.elapsed());
    recovered(
        lab,
        stop,
        conn_id,
        "both tunnels up again after the address came back",
        Duration::from_secs(90),
        Duration::from_secs(15),
    )?;
    let prefix = route_of(cut_family);
    wait_for(
        lab,
        stop,
        &format!("{prefix} back on the {cut_family} tunnel's TUN"),
        Duration::from_secs(20),
        || Ok(route_dev(prefix)?.ends_with(cut_family).then_some(())),
    )?;
    println!("  {prefix} is back on {}", route_dev(prefix)?);

    *current = "scenario 7: daemon restarted";
    step("scenario 7: s2s-gateway restarted (SIGTERM, kill -9, kill -9 with the SA state file removed; same state dir), with initiation policy vpn_gateway then customer_gateway → everything back from the store, no API write, pings lost counted");
    // The pings lost are measured and printed (`bench restart` reports
    // them against the goals), not held to a number here: no timing
    // thresholds in tests.
    for policy in ["vpn_gateway", "customer_gateway"] {
        if policy != "vpn_gateway" {
            switch_policy(lab, stop, conn_id, policy)?;
        }
        for how in StopKind::ALL {
            // BIRD waits out its error delay before every new session, a
            // clean one too: what it carries from the steps before shows
            // why a session takes long to come back.
            for l in bird_bgp_detail(&dir) {
                println!("  cgw BIRD before the restart: {l}");
            }
            let costs = restart_once(lab, stop, conn_id, how, 300, BUILT_GATEWAY)?;
            for c in &costs {
                println!(
                    "  ping vpc → {} across a restart ({}, {policy}): {}",
                    c.target,
                    how.name(),
                    c.describe()
                );
            }
        }
    }
    switch_policy(lab, stop, conn_id, "vpn_gateway")?;

    *current = "scenario 8: every proposal";
    step("scenario 8: each IKE/ESP proposal the API offers → tunnels re-established with it, traffic through our ESP");
    for (ike, esp, strongswan) in SUITES {
        let established = count_in_log(&gw_log, "IKE SA established");
        s2sctl(&["connection", "update", conn_id, "--ike", ike, "--esp", esp])?;
        let conf = write_swanctl(&dir, conn_id)?;
        if !conf.contains(strongswan) {
            bail!("the device config does not propose {strongswan}:\n{conf}");
        }
        load_swanctl(&dir)?;
        wait_new_ike_sas(
            lab,
            stop,
            &gw_log,
            established,
            &format!("both tunnels re-established with {strongswan}"),
            Duration::from_secs(90),
        )?;
        wait_connection(
            lab,
            stop,
            conn_id,
            &format!("the connection to be active with {strongswan}"),
            Duration::from_secs(120),
            all_up,
        )?;
        // New proposals make new tunnels, whose counters start at zero.
        let before = esp_packets(conn_id)?;
        wait_pings(lab, stop, Duration::from_secs(30))?;
        let after = esp_packets(conn_id)?;
        if after <= before {
            bail!("{strongswan}: our ESP counters did not move ({before} → {after})");
        }
        println!("  {strongswan}: active, pings both ways, our ESP packets {before} → {after}");
    }

    *current = "scenario 9: rekeys during traffic";
    step("scenario 9: CHILD SA and IKE SA rekeys (started by the customer) during traffic → pings keep flowing");
    let installs = count_in_log(&gw_log, "CHILD SA installed");
    let pingers = start_pingers(100)?;
    std::thread::sleep(Duration::from_secs(2));
    let uri = charon::vici_uri(&dir);
    for (what, name) in [
        ("--child", "s2s-v4-net"),
        ("--child", "s2s-v6-net"),
        ("--ike", "s2s-v4"),
        ("--ike", "s2s-v6"),
    ] {
        CGW.out(&["swanctl", "--rekey", what, name, "--uri", &uri])?;
        println!("  cgw: swanctl --rekey {what} {name}");
        std::thread::sleep(Duration::from_secs(1));
    }
    for (target, p) in REMOTE_HOSTS.iter().zip(pingers) {
        let (summary, received) = ping_summary(p)?;
        println!("  ping vpc → {target} during the rekeys: {summary}");
        // Make-before-break on our side; strongSwan's libipsec may drop the
        // few packets in flight when it switches: allow 5 of 100.
        if received < 95 {
            bail!("ping vpc → {target} lost more than 5 of 100 packets during the rekeys");
        }
    }
    let rekeyed = count_in_log(&gw_log, "CHILD SA installed") - installs;
    if rekeyed < 2 {
        bail!("expected new CHILD SAs on both tunnels after the rekeys, saw {rekeyed}");
    }
    println!("  gw: {rekeyed} CHILD SAs installed during the rekeys");
    wait_connection(
        lab,
        stop,
        conn_id,
        "the connection to stay active after the rekeys",
        Duration::from_secs(60),
        all_up,
    )?;

    *current = "scenario 10: package upgrade";
    step("scenario 10: the Debian package installed, then upgraded, with tunnels up → the daemon restarted from the installed files each time (as the package's postinst does under systemd), SAs resumed, pings lost counted");
    package_upgrade(lab, stop, conn_id)?;

    println!();
    println!("lab: scenarios: all 11 passed");
    Ok(())
}

/// How the lab stops our daemon before starting it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopKind {
    /// SIGTERM: what `systemctl restart` and upgrades do.
    Term,
    /// SIGKILL: a crash.
    Kill,
    /// SIGKILL and the SA state file removed before the start.
    KillStateLost,
}

impl StopKind {
    const ALL: [StopKind; 3] = [StopKind::Term, StopKind::Kill, StopKind::KillStateLost];

    fn signal(self) -> &'static str {
        match self {
            StopKind::Term => "-TERM",
            StopKind::Kill | StopKind::KillStateLost => "-KILL",
        }
    }

    fn name(self) -> &'static str {
        match self {
            StopKind::Term => "SIGTERM",
            StopKind::Kill => "kill -9",
            StopKind::KillStateLost => "kill -9, state file removed",
        }
    }
}

/// IKE SAs the gateway's log reports up so far: negotiated or resumed.
fn ike_sas_up(gw_log: &Path) -> usize {
    count_in_log(gw_log, "IKE SA established") + count_in_log(gw_log, "IKE SA resumed")
}

/// What one restart of our daemon cost one pinger (10 pings a second).
#[derive(Debug, Clone)]
struct RestartCost {
    pub target: &'static str,
    pub sent: u32,
    pub lost: u32,
    /// The longest run of unanswered pings, in seconds: from the stop to
    /// the first answered ping after it.
    pub outage_s: f64,
}

impl RestartCost {
    fn describe(&self) -> String {
        format!(
            "{} of {} lost, longest gap {:.1} s",
            self.lost, self.sent, self.outage_s
        )
    }
}

/// Stops our daemon (`how`) while the VPC pings the remote site (`count`
/// pings per family, 10 a second), starts it again with the same state
/// directory, waits until the connection is fully back, and returns what
/// each pinger lost.
fn restart_once(
    lab: &mut Lab,
    stop: &AtomicBool,
    conn_id: &str,
    how: StopKind,
    count: u32,
    bin: &str,
) -> anyhow::Result<Vec<RestartCost>> {
    let gw_log = lab.dir.join("s2s-gateway.log");
    let pingers = start_pingers(count)?;
    std::thread::sleep(Duration::from_secs(2));
    lab.stop_daemon("s2s-gateway", how.signal())?;
    if how == StopKind::KillStateLost {
        let file = workspace_root().join("target/lab/gw-state/sa-state.sealed");
        fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
    }
    // Stopped for a restart, it left its XDP programs attached (pinned
    // links) for the next start to replace in place; killed, it could not.
    if how == StopKind::Term {
        for dev in ["wan0", "lan0"] {
            let link = GW.out(&["ip", "-d", "link", "show", dev])?;
            if !link.contains("prog/xdp") {
                bail!("SIGTERM: no XDP program on gw's {dev} while the daemon is down:\n{link}");
            }
        }
    }
    let replaced = count_in_log(&gw_log, "XDP program replaced in place");
    // However it stopped, its TUNs and their routes stay: while it is
    // down the VPC's packets to the customer are dropped into them, never
    // sent elsewhere in clear.
    for target in REMOTE_HOSTS {
        let via = GW.out(&["ip", "route", "get", target])?;
        if !via.contains(" dev s2s") {
            bail!("{how:?}: while the daemon is down, gw routes {target} elsewhere than its TUN: {via}");
        }
    }
    // The store keeps the last statuses written: only IKE SAs up again
    // (resumed from the state file, or negotiated) prove the restarted
    // daemon has the tunnels back.
    let before = ike_sas_up(&gw_log);
    let kernel_stale = count_in_log(&gw_log, "routes found on the kept TUN kept (stale)");
    start_gateway(lab, stop, bin)?;
    if how == StopKind::Term {
        let now = count_in_log(&gw_log, "XDP program replaced in place");
        if now < replaced + 2 {
            bail!("SIGTERM: the restarted daemon did not replace both XDP programs in place ({} of 2)", now - replaced);
        }
    }
    wait_for(
        lab,
        stop,
        "the restarted daemon to have both IKE SAs up",
        Duration::from_secs(60),
        || Ok((ike_sas_up(&gw_log) >= before + 2).then_some(())),
    )?;
    // Without the state file, the routes the kept TUNs still have are
    // what keeps the VPC's traffic on the tunnels until BGP is back.
    if how == StopKind::KillStateLost
        && count_in_log(&gw_log, "routes found on the kept TUN kept (stale)") <= kernel_stale
    {
        bail!("state file removed: the restarted daemon did not keep the kept TUNs' routes as stale routes");
    }
    recovered(
        lab,
        stop,
        conn_id,
        "the connection to be active again from the store",
        Duration::from_secs(150),
        Duration::from_secs(15),
    )?;
    let mut costs = Vec::new();
    for (target, p) in REMOTE_HOSTS.iter().zip(pingers) {
        let replies = ping_replies(p)?;
        costs.push(RestartCost {
            target,
            sent: count,
            lost: count.saturating_sub(replies.len() as u32),
            outage_s: f64::from(longest_gap(&replies, count)) / 10.0,
        });
    }
    Ok(costs)
}

/// Scenario 10: moves the lab's daemon onto the Debian package that
/// `cargo xtask package` built (installed with apt-get), then upgrades the
/// package in place (`apt-get install --reinstall`) and restarts the
/// daemon from the installed files the way the package's postinst does
/// (`systemctl try-restart`: SIGTERM, then start; this machine's PID 1 is
/// not systemd, so the lab does both steps). Both moves must resume the
/// SAs. The package is purged at the end, and the lab's daemon is the
/// release build again.
fn package_upgrade(lab: &mut Lab, stop: &AtomicBool, conn_id: &str) -> anyhow::Result<()> {
    let Some(deb) = crate::package::built() else {
        println!("  skipped: no package built for this version (cargo xtask package builds it; cargo xtask test does before the lab)");
        return Ok(());
    };
    if crate::package::installed() {
        println!("  skipped: s2s-gateway is installed on this machine already (not replacing it)");
        return Ok(());
    }
    let gw_log = lab.dir.join("s2s-gateway.log");
    let installed = crate::package::Installed::install(&deb)?;
    println!("  apt-get install {}: done", deb.display());
    for (what, upgrade) in [
        ("onto the installed package", false),
        ("across a package upgrade", true),
    ] {
        if upgrade {
            installed.reinstall()?;
            println!("  apt-get install --reinstall: done (the running daemon's files replaced)");
        }
        let resumed = count_in_log(&gw_log, "resumed from the SA state");
        let costs = restart_once(lab, stop, conn_id, StopKind::Term, 300, INSTALLED_GATEWAY)?;
        for c in &costs {
            println!("  ping vpc → {} {what}: {}", c.target, c.describe());
        }
        let now = count_in_log(&gw_log, "resumed from the SA state");
        if now < resumed + 2 {
            bail!(
                "{what}: the daemon from the package did not resume both tunnels' SAs ({} of 2)",
                now - resumed
            );
        }
        println!("  {what}: both tunnels resumed from the SA state (no handshake)");
    }
    // Back to the release build before the package goes.
    let costs = restart_once(lab, stop, conn_id, StopKind::Term, 100, BUILT_GATEWAY)?;
    for c in &costs {
        println!(
            "  ping vpc → {} back onto the release build: {}",
            c.target,
            c.describe()
        );
    }
    drop(installed);
    println!("  package purged");
    Ok(())
}

/// Pings per family in one restart measurement: 10 a second for 40 s.
const BENCH_RESTART_PINGS: u32 = 400;

/// `cargo xtask bench restart`: each case (initiation policy × how the
/// daemon stops) `runs` times, the median and range of pings lost and of
/// the longest gap per family, in `target/bench/restart.json`.
fn bench_restarts(
    lab: &mut Lab,
    stop: &AtomicBool,
    conn_id: &str,
    runs: u32,
) -> anyhow::Result<()> {
    step(&format!(
        "bench restart: {runs} runs per case, {BENCH_RESTART_PINGS} pings per family each (10/s)"
    ));
    let mut results = Vec::new();
    for policy in ["vpn_gateway", "customer_gateway"] {
        // The lab's connection starts with policy vpn_gateway.
        if policy != "vpn_gateway" {
            switch_policy(lab, stop, conn_id, policy)?;
        }
        for how in StopKind::ALL {
            let mut per_family: Vec<(&'static str, Vec<u32>, Vec<f64>)> = REMOTE_HOSTS
                .iter()
                .map(|t| (*t, Vec::new(), Vec::new()))
                .collect();
            for run in 1..=runs {
                let costs =
                    restart_once(lab, stop, conn_id, how, BENCH_RESTART_PINGS, BUILT_GATEWAY)?;
                for c in costs {
                    println!(
                        "  {policy}, {}, run {run}/{runs}, {}: {}",
                        how.name(),
                        c.target,
                        c.describe()
                    );
                    if let Some(f) = per_family.iter_mut().find(|f| f.0 == c.target) {
                        f.1.push(c.lost);
                        f.2.push(c.outage_s);
                    }
                }
            }
            for (target, lost, gaps) in per_family {
                let lost_f: Vec<f64> = lost.iter().map(|&l| f64::from(l)).collect();
                let (lost_med, lost_min, lost_max) = median_range(&lost_f);
                let (gap_med, gap_min, gap_max) = median_range(&gaps);
                results.push(serde_json::json!({
                    "initiation_policy": policy,
                    "stop": how.name(),
                    "family": if target.contains(':') { "IPv6" } else { "IPv4" },
                    "runs": runs,
                    "pings_per_run": BENCH_RESTART_PINGS,
                    "lost_median": lost_med,
                    "lost_min": lost_min,
                    "lost_max": lost_max,
                    "gap_s_median": gap_med,
                    "gap_s_min": gap_min,
                    "gap_s_max": gap_max,
                    "lost_per_run": lost,
                }));
            }
        }
    }
    let out = workspace_root().join("target/bench/restart.json");
    fs::create_dir_all(out.parent().context("bench dir")?)?;
    fs::write(
        &out,
        serde_json::to_string_pretty(&serde_json::json!({
            "what": "pings lost by the VPC host (10/s per family) while our daemon is stopped and started again with the same state directory, tunnels to a strongSwan customer with our generated device configs and BIRD",
            "goals": {"SIGTERM": "at most 3 lost", "kill -9": "at most 10 lost", "kill -9, state file removed": "at most 20 lost"},
            "results": results,
        }))?,
    )?;
    println!("bench restart: wrote {}", out.display());
    Ok(())
}

/// Median, minimum and maximum of a non-empty sample.
fn median_range(xs: &[f64]) -> (f64, f64, f64) {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    (median, v[0], v[v.len() - 1])
}

/// Changes the connection's initiation policy and gives the customer
/// gateway the device config that goes with it (charon and BIRD stopped,
/// the new swanctl.conf written, both started again), then waits until
/// the connection is back.
fn switch_policy(
    lab: &mut Lab,
    stop: &AtomicBool,
    conn_id: &str,
    policy: &str,
) -> anyhow::Result<()> {
    lab.stop_daemon("bird", "-TERM")?;
    lab.stop_daemon("charon", "-TERM")?;
    s2sctl(&[
        "connection",
        "update",
        conn_id,
        "--initiation-policy",
        policy,
    ])?;
    // charon starts with nothing to initiate: a connection it starts at
    // once (start_action = start) would find ipsec0 without the
    // interconnection addresses and fail to install its CHILD SA's route.
    let dir = lab.dir.clone();
    fs::write(dir.join("swanctl.conf"), "connections {\n}\nsecrets {\n}\n")?;
    start_charon(lab, stop)?;
    interco_on_ipsec0(lab, stop, conn_id)?;
    write_swanctl(&dir, conn_id)?;
    load_swanctl(&dir)?;
    start_bird(lab)?;
    recovered(
        lab,
        stop,
        conn_id,
        &format!("the connection to be active with initiation policy {policy}"),
        Duration::from_secs(120),
        Duration::from_secs(15),
    )?;
    println!("  connection: initiation policy {policy}, device config reloaded, active");
    Ok(())
}

/// The longest run of unanswered sequence numbers among `1..=count`,
/// given the answered ones.
fn longest_gap(answered: &[u32], count: u32) -> u32 {
    let mut seqs: Vec<u32> = answered.iter().copied().filter(|&s| s <= count).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let mut longest = 0;
    let mut prev = 0;
    for s in seqs.into_iter().chain(std::iter::once(count + 1)) {
        longest = longest.max(s.saturating_sub(prev + 1));
        prev = s;
    }
    longest
}

/// One `ping` per remote host from the VPC host, 10 a second, `count`
/// each, running in the background.
fn start_pingers(count: u32) -> anyhow::Result<Vec<std::process::Child>> {
    let count = count.to_string();
    let pingers = REMOTE_HOSTS
        .iter()
        .map(|target| {
            let mut c = VPC.cmd("ping");
            if target.contains(':') {
                c.arg("-6");
            }
            c.args(["-c", &count, "-i", "0.1", "-W", "1", target])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    Ok(pingers)
}

/// Waits for a pinger of `start_pingers`: its summary line and how many
/// replies it received.
fn ping_summary(p: std::process::Child) -> anyhow::Result<(String, u32)> {
    let out = p.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or("no summary")
        .to_owned();
    let received: u32 = summary
        .split(", ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Ok((summary, received))
}

/// Waits for a pinger of `start_pingers`: the sequence numbers answered.
fn ping_replies(p: std::process::Child) -> anyhow::Result<Vec<u32>> {
    let out = p.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter(|l| l.contains(" bytes from "))
        .filter_map(|l| {
            let rest = l.split_once("icmp_seq=")?.1;
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect())
}

/// The API's cipher suites: its proposal (s2sctl syntax) and the strongSwan
/// keyword the device config must carry for it.
const SUITES: [(&str, &str, &str); 5] = [
    (
        "aes256gcm-sha384-ecp384",
        "aes256gcm",
        "aes256gcm16-prfsha384-ecp384",
    ),
    (
        "aes128gcm-sha256-modp2048",
        "aes128gcm",
        "aes128gcm16-prfsha256-modp2048",
    ),
    (
        "aes256gcm-sha256-curve25519",
        "aes256gcm",
        "aes256gcm16-prfsha256-curve25519",
    ),
    (
        "aes256-sha256-ecp256",
        "aes256-sha256",
        "aes256-sha256-ecp256",
    ),
    (
        "chacha20poly1305-sha256-curve25519",
        "chacha20poly1305",
        "chacha20poly1305-prfsha256-curve25519",
    ),
];

/// ESP packets our engine processed on the connection's tunnels, both
/// directions (`s2s_esp_packets_total` in /metrics).
fn esp_packets(conn_id: &str) -> anyhow::Result<u64> {
    let text = metrics()?;
    let prefix = format!("s2s_esp_packets_total{{tunnel=\"{conn_id}/");
    Ok(text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
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
