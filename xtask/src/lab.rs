//! `cargo xtask lab`: the two-site lab of docs/ARCHITECTURE.md §5 in network
//! namespaces (`vpc` — `gw` — `cgw` — `remote`), documentation addresses
//! only. Our daemon runs in `gw` with its embedded store; everything is
//! created through the API (s2sctl); the customer side (strongSwan with
//! kernel-libipsec, and BIRD or FRR) runs our generated device configs as
//! they are; then the lab waits for the connection to be `active`, prints a
//! status table, pings and runs iperf3 between `vpc` and `remote` in both
//! families, and stays up until Ctrl-C (or exits with `--once`). Everything
//! is removed on exit, also on failure.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use crate::util::{output, sh, step, workspace_root};

/// Namespace names are prefixed so the lab never touches anything else.
const PREFIX: &str = "s2slab-";
const TOKEN: &str = "lab-0000-token";
const PRIVATE_NETWORK: &str = "11111111-2222-4333-8444-555555555555";
const IPAM_V4: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const IPAM_V6: &str = "aaaaaaaa-0000-4000-8000-000000000002";
const CUSTOMER_ASN: &str = "65010";

#[derive(Clone, Copy)]
struct Ns(&'static str);

impl Ns {
    fn name(self) -> String {
        format!("{PREFIX}{}", self.0)
    }
    fn cmd(self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name(), program]);
        c
    }
    fn exec(self, args: &[&str]) -> anyhow::Result<()> {
        let (program, rest) = args.split_first().context("empty command")?;
        sh(self.cmd(program).args(rest))
    }
    fn out(self, args: &[&str]) -> anyhow::Result<String> {
        let (program, rest) = args.split_first().context("empty command")?;
        output(self.cmd(program).args(rest))
    }
}

const VPC: Ns = Ns("vpc");
const GW: Ns = Ns("gw");
const CGW: Ns = Ns("cgw");
const REMOTE: Ns = Ns("remote");

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
            // SIGTERM first so the gateway detaches XDP and removes its TUNs.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !matches!(child.try_wait(), Ok(Some(_))) {
                eprintln!("lab: {name} did not stop on SIGTERM; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        teardown();
    }
}

fn teardown() {
    let list = output(Command::new("ip").args(["netns", "list"])).unwrap_or_default();
    for line in list.lines() {
        if let Some(name) = line.split_whitespace().next() {
            if name.starts_with(PREFIX) {
                // Processes left in the namespace would keep it alive.
                if let Ok(pids) = output(Command::new("ip").args(["netns", "pids", name])) {
                    for pid in pids.split_whitespace() {
                        let _ = Command::new("kill").args(["-KILL", pid]).status();
                    }
                }
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }
}

fn link(a: Ns, a_if: &str, b: Ns, b_if: &str) -> anyhow::Result<()> {
    sh(Command::new("ip").args([
        "link",
        "add",
        a_if,
        "netns",
        &a.name(),
        "numtxqueues",
        "1",
        "numrxqueues",
        "1",
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        &b.name(),
        "numtxqueues",
        "1",
        "numrxqueues",
        "1",
    ]))
}

fn build_topology() -> anyhow::Result<()> {
    for ns in [VPC, GW, CGW, REMOTE] {
        sh(Command::new("ip").args(["netns", "add", &ns.name()]))?;
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
    }
    link(VPC, "eth0", GW, "lan0")?;
    link(GW, "wan0", CGW, "wan0")?;
    link(CGW, "lan0", REMOTE, "eth0")?;
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
        ns.exec(&["ip", "addr", "add", addr, "dev", dev, "nodad"])?;
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
    for ns in [GW, CGW] {
        ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
    }
    Ok(())
}

impl Lab {
    fn spawn(&mut self, name: &'static str, ns: Ns, script: &str) -> anyhow::Result<()> {
        let log = self.dir.join(format!("{name}.log"));
        let file = fs::File::create(&log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name(), "sh", "-c", script])
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.daemons.push((name, child));
        self.logs.push((name, log));
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
    let bin = workspace_root().join("target/debug/s2sctl");
    let out = output(
        GW.cmd(&bin.display().to_string())
            .args(["--token", TOKEN, "-o", "json"])
            .args(args),
    )?;
    serde_json::from_str(&out)
        .with_context(|| format!("s2sctl {}: not JSON: {out}", args.join(" ")))
}

fn s2sctl_text(args: &[&str]) -> anyhow::Result<String> {
    let bin = workspace_root().join("target/debug/s2sctl");
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
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    let mut last_err = None;
    while Instant::now() < deadline {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        lab.check_daemons()?;
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    match last_err {
        Some(e) => Err(e.context(format!("timed out waiting for {what}"))),
        None => bail!("timed out after {limit:?} waiting for {what}"),
    }
}

const STRONGSWAN_CONF: &str = r#"charon {
  load_modular = no
  load = random nonce openssl pem pkcs1 x509 revocation constraints pubkey curve25519 aes sha1 sha2 hmac gcm chapoly ccm kdf kernel-libipsec kernel-netlink socket-default vici updown
  plugins {
    vici {
      socket = unix://DIR/charon.vici
    }
  }
  filelog {
    charon {
      path = DIR/charon-detail.log
      default = 1
      ike = 2
      append = no
      flush_line = yes
    }
  }
}
"#;

pub fn run(once: bool, peer: &str) -> anyhow::Result<()> {
    if peer != "bird" && peer != "frr" {
        bail!("--peer must be bird or frr, not {peer:?}");
    }
    if !crate::util::is_root() {
        bail!("the lab needs root (network namespaces, XDP)");
    }
    crate::setup::run()?;
    crate::util::build(false)?;
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
    let mut lab = Lab {
        dir,
        daemons: Vec::new(),
        logs: Vec::new(),
    };
    let mut current = "start";
    let result = steps(&mut lab, &stop, once, peer, &mut current);
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
    once: bool,
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
    lab.spawn(
        "s2s-gateway",
        GW,
        "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; \
         exec env RUST_LOG=info target/debug/s2s-gateway run --config config/lab-gw.toml",
    )?;
    wait_for(lab, stop, "the API", Duration::from_secs(30), || {
        Ok(s2sctl(&["gateway-type", "list"]).ok())
    })?;

    *current = "API: resources";
    step("lab: VPN gateway, customer gateway, routing policies, connection (API)");
    let vgw = s2sctl(&[
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
    wait_for(
        lab,
        stop,
        "the VPN gateway to be active",
        Duration::from_secs(30),
        || {
            let g = s2sctl(&["vpn-gateway", "get", &vgw_id])?;
            Ok((g["status"] == "active").then_some(()))
        },
    )?;
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
    let swanctl = s2sctl_text(&[
        "connection",
        "device-config",
        &conn_id,
        "--vendor",
        "strongswan",
    ])?;
    fs::write(dir.join("swanctl.conf"), &swanctl)?;
    let d = dir.display().to_string();
    fs::create_dir_all(dir.join("run"))?;
    fs::write(
        dir.join("strongswan.conf"),
        STRONGSWAN_CONF.replace("DIR", &d),
    )?;
    lab.spawn(
        "charon",
        CGW,
        &format!("mount --bind {d}/run /run && exec env STRONGSWAN_CONF={d}/strongswan.conf /usr/lib/ipsec/charon"),
    )?;
    let vici = format!("unix://{d}/charon.vici");
    wait_for(
        lab,
        stop,
        "charon's vici socket",
        Duration::from_secs(15),
        || Ok(dir.join("charon.vici").exists().then_some(())),
    )?;
    // swanctl wants its command first, then the options.
    CGW.exec(&[
        "swanctl",
        "--load-all",
        "--file",
        &format!("{d}/swanctl.conf"),
        "--uri",
        &vici,
    ])?;
    // The device config asks for the interconnection addresses on the
    // tunnel interface (kernel-libipsec's ipsec0).
    wait_for(lab, stop, "ipsec0 in cgw", Duration::from_secs(15), || {
        Ok(CGW.out(&["ip", "link", "show", "ipsec0"]).ok().map(|_| ()))
    })?;
    let conn = s2sctl(&["connection", "get", &conn_id])?;
    for key in ["bgp_session_ipv4", "bgp_session_ipv6"] {
        if let Some(peer_ip) = conn[key]["peer_private_ip"].as_str() {
            CGW.exec(&["ip", "addr", "add", peer_ip, "dev", "ipsec0", "nodad"])?;
        }
    }
    CGW.exec(&["ip", "link", "set", "ipsec0", "up"])?;
    if peer == "bird" {
        let conf = s2sctl_text(&["connection", "device-config", &conn_id, "--vendor", "bird"])?;
        fs::write(dir.join("bird.conf"), conf)?;
        lab.spawn(
            "bird",
            CGW,
            &format!("exec bird -f -c {d}/bird.conf -s {d}/bird.ctl -P {d}/bird.pid"),
        )?;
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

    *current = "traffic";
    step("lab: ping vpc → remote (IPv4, IPv6)");
    VPC.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "203.0.113.10"])?;
    VPC.exec(&[
        "ping",
        "-6",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        "2001:db8:200::10",
    ])?;
    step("lab: iperf3 vpc → remote (IPv4, IPv6), 3 s each");
    lab.spawn("iperf3-server", REMOTE, "exec iperf3 -s")?;
    std::thread::sleep(Duration::from_millis(500));
    for target in ["203.0.113.10", "2001:db8:200::10"] {
        let out = VPC.out(&["iperf3", "-c", target, "-t", "3", "-f", "m"])?;
        for l in out
            .lines()
            .filter(|l| l.contains("sender") || l.contains("receiver"))
        {
            println!("  {target}: {}", l.trim());
        }
    }
    status_table(&conn_id, peer, &lab.dir)?;
    println!("\nlab: every step passed");
    if once {
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
        println!("    {key:<28} {}", c[key]);
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
    }
    if let Ok(stats) = GW.out(&["ip", "-s", "link", "show", "dev", "wan0"]) {
        println!("  gw wan0 counters:");
        for l in stats.lines().skip(2) {
            println!("    {l}");
        }
    }
    Ok(())
}
