//! BGP full-table benchmark: a peer sends 1,000,000 generated IPv4 prefixes
//! (private 10.0.0.0/8 space, /24 to /28; NLRI only, no packet is ever sent
//! to them) over one session; we measure the time until the receiver's
//! Loc-RIB holds them all and the receiver's peak memory, for our speaker
//! and for BIRD 2 receiving the same byte stream in the same run; for our
//! speaker also the time until the XDP IPv4 route table holds them all
//! (each Loc-RIB install goes to a map-writer thread, as the agent's data
//! plane would; kernel routes are not part of it).
//!
//! Needs root (network namespaces). The orchestrator re-executes this binary
//! inside the namespaces (`receive` and `send` roles) so each side is its own
//! process and the memory figure is the receiver's alone. The two receivers
//! run one after the other on the same veth pair. Writes
//! `target/bench/bgp.json`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use gateway_bgp::attribute::{AfiSafi, AsPath, Origin, PathAttribute};
use gateway_bgp::driver::{self, BgpEvent};
use gateway_bgp::message::{frame_len, Codec, Message, Open, Update};
use gateway_bgp::{RouteChange, RoutingPolicy, SessionConfig, SessionPolicy};
use ipnet::Ipv4Net;
use serde::Serialize;

const PREFIXES: usize = 1_000_000;
const RX_ADDR: &str = "169.254.1.1";
const TX_ADDR: &str = "169.254.1.2";
const RX_ASN: u32 = 12876;
const TX_ASN: u32 = 65001;
/// Bound on one receiver's run.
const TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Serialize)]
struct Row {
    receiver: String,
    prefixes: usize,
    time_to_loc_rib_s: f64,
    /// Until the XDP LPM map holds every prefix (ours only).
    time_to_lpm_map_s: Option<f64>,
    prefixes_per_s: f64,
    peak_rss_mib: f64,
    /// Peak RSS growth over the idle, established receiver, per prefix.
    bytes_per_prefix: f64,
}

#[derive(Serialize)]
struct Report {
    results: Vec<Row>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("receive") => receive(),
        Some("send") => send(),
        _ => orchestrate(),
    }
}

/// `VmHWM` and `VmRSS` of a process, in KiB.
fn mem_kib(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// 1,000,000 distinct prefixes: all /24, /25, /26, /27 of 10.0.0.0/8, then /28s.
fn prefixes() -> Vec<Ipv4Net> {
    let mut out = Vec::with_capacity(PREFIXES);
    'outer: for len in 24u8..=28 {
        let count = 1u32 << (len - 8);
        for i in 0..count {
            if out.len() == PREFIXES {
                break 'outer;
            }
            let addr = Ipv4Addr::from((10u32 << 24) | (i << (32 - len)));
            out.push(Ipv4Net::new(addr, len).expect("valid length"));
        }
    }
    assert_eq!(out.len(), PREFIXES);
    out
}

/// The UPDATE stream: ~800 prefixes per message, AS paths varied.
fn updates() -> Vec<u8> {
    let all = prefixes();
    let mut stream = Vec::new();
    for (i, chunk) in all.chunks(800).enumerate() {
        let msg = Message::Update(Update {
            path_attributes: vec![
                PathAttribute::Origin(Origin::Igp),
                PathAttribute::AsPath(AsPath::sequence(vec![TX_ASN, 64512 + (i % 1000) as u32])),
                PathAttribute::NextHop(TX_ADDR.parse().expect("address")),
            ],
            nlri: chunk.to_vec(),
            ..Update::default()
        });
        let bytes = msg.encode(Codec::default());
        assert!(bytes.len() <= 4096);
        stream.extend_from_slice(&bytes);
    }
    stream
}

/// Role `send`: connect to the receiver, exchange OPEN/KEEPALIVE (hold time
/// 0: no keepalives needed), print START, send the table, then idle until killed.
fn send() {
    let stream_bytes = updates();
    let target = SocketAddr::new(RX_ADDR.parse().expect("address"), 179);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sock = loop {
        match TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot connect to {target}: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    sock.set_nodelay(true).expect("nodelay");
    let open = Open::new(
        TX_ASN,
        0,
        Ipv4Addr::new(10, 255, 0, 2),
        &[AfiSafi::Ipv4Unicast],
    );
    sock.write_all(&Message::Open(open).encode(Codec::default()))
        .expect("send OPEN");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut got_open = false;
    'handshake: loop {
        let n = sock.read(&mut chunk).expect("read from receiver");
        assert!(n > 0, "receiver closed the connection during the handshake");
        buf.extend_from_slice(&chunk[..n]);
        while let Ok(Some(len)) = frame_len(&buf) {
            let msg = Message::decode(&buf[..len], Codec::default()).expect("valid message");
            buf.drain(..len);
            match msg {
                Message::Open(_) => {
                    got_open = true;
                    sock.write_all(&Message::Keepalive.encode(Codec::default()))
                        .expect("send KEEPALIVE");
                }
                Message::Keepalive if got_open => break 'handshake,
                Message::Notification(n) => panic!("receiver refused the session: {n}"),
                _ => {}
            }
        }
    }
    // Drain whatever the receiver sends from now on.
    let mut reader = sock.try_clone().expect("clone socket");
    reader.set_read_timeout(None).expect("timeout");
    std::thread::spawn(move || {
        let mut b = [0u8; 4096];
        while matches!(reader.read(&mut b), Ok(n) if n > 0) {}
    });
    println!("START");
    std::io::stdout().flush().expect("flush");
    sock.write_all(&stream_bytes).expect("send the table");
    println!("SENT");
    std::io::stdout().flush().expect("flush");
    std::thread::sleep(TIMEOUT);
}

/// Role `receive`: our speaker, passive; prints READY with its idle RSS,
/// then DONE with its peak RSS once the Loc-RIB holds every prefix.
fn receive() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (handle, mut events) = driver::spawn();
        let mut config = SessionConfig::new(
            RX_ADDR.parse().expect("address"),
            TX_ADDR.parse().expect("address"),
            TX_ASN,
        );
        config.passive = true;
        config.hold_time = 0;
        config.local_asn = RX_ASN;
        let policy = SessionPolicy {
            routing_policy: Some(RoutingPolicy {
                prefix_filter_in: vec!["10.0.0.0/8".parse().expect("prefix")],
                prefix_filter_out: vec![],
            }),
            route_propagation: true,
            exported: vec![],
        };
        handle
            .add_session(1, config, policy)
            .await
            .expect("add session");
        // The map writer: a thread owning an unattached copy of the XDP
        // object, fed by the Loc-RIB changes.
        let (map_tx, map_rx) = std::sync::mpsc::channel::<(Ipv4Addr, u8)>();
        let writer = std::thread::spawn(move || {
            let mut xdp = gateway_user::dataplane::xdp::XdpDataplane::load_unattached()
                .expect("load the XDP object (root, BPF)");
            let mut n = 0usize;
            while n < PREFIXES {
                let Ok((addr, len)) = map_rx.recv() else {
                    panic!("map writer stopped after {n} routes");
                };
                xdp.add_route_v4(addr, len, 1).expect("route table insert");
                n += 1;
            }
            println!("LPM");
            std::io::stdout().flush().expect("flush");
        });
        let mut installed = 0usize;
        let mut up = false;
        while installed < PREFIXES {
            match tokio::time::timeout(TIMEOUT, events.recv()).await {
                Ok(Some(BgpEvent::SessionUp(_))) if !up => {
                    up = true;
                    let (_, rss) = mem_kib("self");
                    println!("READY {rss}");
                }
                Ok(Some(BgpEvent::Route(RouteChange::Install(r)))) => {
                    installed += 1;
                    if let ipnet::IpNet::V4(n) = r.prefix {
                        map_tx
                            .send((n.network(), n.prefix_len()))
                            .expect("map writer");
                    }
                }
                Ok(Some(BgpEvent::Route(RouteChange::Withdraw { .. }))) => installed -= 1,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => panic!("receiver stopped after {installed} routes"),
            }
        }
        let rib = handle.loc_rib().await.expect("loc rib").len();
        assert_eq!(rib, PREFIXES);
        let (hwm, _) = mem_kib("self");
        println!("DONE {hwm}");
        std::io::stdout().flush().expect("flush");
        writer.join().expect("map writer");
    });
}

struct Guard {
    namespaces: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let ok = Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip {args:?} failed");
}

fn spawn_in(ns: &str, args: &[&str], guard: &mut Guard) -> BufReader<ChildStdout> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    guard.children.push(child);
    out
}

/// Next line starting with `word`, with the rest of the line.
fn expect_line(out: &mut BufReader<ChildStdout>, word: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).expect("read child output");
        assert!(n > 0, "child exited before printing {word}");
        if let Some(rest) = line.trim().strip_prefix(word) {
            return rest.trim().to_owned();
        }
    }
}

fn orchestrate() {
    let exe = std::env::current_exe().expect("own path");
    let exe = exe.to_str().expect("utf-8 path");
    let pid = std::process::id();
    let rx = format!("s2s-bgpb-{pid}-rx");
    let tx = format!("s2s-bgpb-{pid}-tx");
    let mut guard = Guard {
        namespaces: vec![],
        children: vec![],
    };
    for ns in [&rx, &tx] {
        ip(&["netns", "add", ns]);
        guard.namespaces.push(ns.clone());
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    ip(&[
        "link", "add", "bgpb-rx", "netns", &rx, "type", "veth", "peer", "name", "bgpb-tx", "netns",
        &tx,
    ]);
    ip(&["-n", &rx, "addr", "add", "169.254.1.1/30", "dev", "bgpb-rx"]);
    ip(&["-n", &tx, "addr", "add", "169.254.1.2/30", "dev", "bgpb-tx"]);
    ip(&["-n", &rx, "link", "set", "bgpb-rx", "up"]);
    ip(&["-n", &tx, "link", "set", "bgpb-tx", "up"]);

    let mut rows = Vec::new();

    // Our speaker.
    {
        let mut recv = spawn_in(&rx, &[exe, "receive"], &mut guard);
        let mut sender = spawn_in(&tx, &[exe, "send"], &mut guard);
        let idle_kib: u64 = expect_line(&mut recv, "READY").parse().expect("rss");
        expect_line(&mut sender, "START");
        let t0 = Instant::now();
        // DONE (Loc-RIB complete) and LPM (map complete) in either order.
        let (mut peak_kib, mut secs, mut lpm_secs) = (None, 0.0, None);
        while peak_kib.is_none() || lpm_secs.is_none() {
            let mut line = String::new();
            let n = recv.read_line(&mut line).expect("read receiver output");
            assert!(n > 0, "receiver exited before DONE and LPM");
            if let Some(rest) = line.trim().strip_prefix("DONE") {
                secs = t0.elapsed().as_secs_f64();
                peak_kib = Some(rest.trim().parse::<u64>().expect("hwm"));
            } else if line.trim() == "LPM" {
                lpm_secs = Some(t0.elapsed().as_secs_f64());
            }
        }
        let peak_kib = peak_kib.unwrap_or_default();
        let lpm_secs = lpm_secs.unwrap_or_default();
        let mut r = row("gateway-bgp", secs, idle_kib, peak_kib);
        r.time_to_lpm_map_s = Some(lpm_secs);
        rows.push(r);
        for mut c in guard.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    // BIRD on the same link, same stream.
    {
        let dir = tempfile_dir(pid);
        let conf = dir.join("bird.conf");
        let ctl = dir.join("bird.ctl");
        let pidf = dir.join("bird.pid");
        std::fs::write(
            &conf,
            format!(
                "router id 10.255.0.1;\nprotocol device {{ }}\n\
                 protocol bgp peer {{\n  local {RX_ADDR} as {RX_ASN};\n  neighbor {TX_ADDR} as {TX_ASN};\n  passive on;\n  \
                 ipv4 {{ import all; export none; }};\n}}\n"
            ),
        )
        .expect("write bird.conf");
        let (conf_s, ctl_s, pid_s) = (
            conf.to_str().expect("path"),
            ctl.to_str().expect("path"),
            pidf.to_str().expect("path"),
        );
        let _bird = spawn_in(
            &rx,
            &["bird", "-f", "-c", conf_s, "-s", ctl_s, "-P", pid_s],
            &mut guard,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let bird_pid = loop {
            if let Ok(p) = std::fs::read_to_string(&pidf) {
                if !p.trim().is_empty() {
                    break p.trim().to_owned();
                }
            }
            assert!(Instant::now() < deadline, "BIRD did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut sender = spawn_in(&tx, &[exe, "send"], &mut guard);
        expect_line(&mut sender, "START");
        let t0 = Instant::now();
        let (_, idle_kib) = mem_kib(&bird_pid);
        let count = || -> usize {
            let out = Command::new("birdc")
                .args(["-s", ctl_s, "show", "route", "count"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            // "1000000 of 1000000 routes for 1000000 networks in table master4"
            out.lines()
                .find_map(|l| l.split_whitespace().next().and_then(|w| w.parse().ok()))
                .unwrap_or(0)
        };
        loop {
            if count() >= PREFIXES {
                break;
            }
            assert!(t0.elapsed() < TIMEOUT, "BIRD did not get the table in time");
            std::thread::sleep(Duration::from_millis(50));
        }
        let secs = t0.elapsed().as_secs_f64();
        let (peak_kib, _) = mem_kib(&bird_pid);
        rows.push(row("bird 2.0.12", secs, idle_kib, peak_kib));
        let _ = std::fs::remove_dir_all(&dir);
    }

    for r in &rows {
        println!(
            "{:<12} {:>9} prefixes  Loc-RIB {:>7.2} s  LPM map {:>9}  {:>10.0} prefixes/s  peak {:>7.1} MiB  {:>6.1} B/prefix",
            r.receiver,
            r.prefixes,
            r.time_to_loc_rib_s,
            r.time_to_lpm_map_s.map_or("-".to_owned(), |t| format!("{t:.2} s")),
            r.prefixes_per_s,
            r.peak_rss_mib,
            r.bytes_per_prefix
        );
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).expect("create target/bench");
    let json = serde_json::to_string_pretty(&Report { results: rows }).expect("serialize");
    std::fs::write(dir.join("bgp.json"), json).expect("write bgp.json");
    println!("wrote {}", dir.join("bgp.json").display());
}

fn row(receiver: &str, secs: f64, idle_kib: u64, peak_kib: u64) -> Row {
    Row {
        receiver: receiver.to_owned(),
        prefixes: PREFIXES,
        time_to_loc_rib_s: secs,
        time_to_lpm_map_s: None,
        prefixes_per_s: PREFIXES as f64 / secs,
        peak_rss_mib: peak_kib as f64 / 1024.0,
        bytes_per_prefix: (peak_kib.saturating_sub(idle_kib) * 1024) as f64 / PREFIXES as f64,
    }
}

fn tempfile_dir(pid: u32) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("s2s-bgpb-{pid}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_table_is_distinct_and_private() {
        let p = prefixes();
        let set: std::collections::HashSet<_> = p.iter().collect();
        assert_eq!(set.len(), PREFIXES);
        let ten: Ipv4Net = "10.0.0.0/8".parse().unwrap();
        assert!(p.iter().all(|n| ten.contains(n)));
    }
}
