//! `cargo xtask bench tunnel`: tunnel throughput side by side with
//! the peers users compare us with, on one veth topology built here:
//!
//! ```text
//! src ──src0/alan0── A ──awan0/bwan0── B ──blan0/dst0── dst
//! 198.51.100.10   .1 | 192.0.2.1  192.0.2.2 | 203.0.113.1   203.0.113.10
//! ```
//! Namespaces `s2sbench-{src,a,b,dst}`; the topology is rebuilt identically
//! for each case (so no XDP program, TUN or SA of one case survives into the
//! next) with the same NAPI settings, and removed on exit, error or Ctrl-C.
//!
//! Cases: our gateway on both sides (fast path, then `--no-xdp`), ours
//! against strongSwan kernel-libipsec (from our device configs, with BIRD),
//! a strongSwan pair, a boringtun pair, and `xdpfwd` (the same AF_XDP path
//! without crypto: the ceiling). For each, `trafficgen send` in src offers
//! UDP at its maximum rate for a bounded time at 64-byte and 1400-byte
//! frames and `trafficgen sink` in dst counts and sequence-checks what
//! arrives. A point is valid only if the tunnel's own counters moved by at
//! least what the sink received (ESP packets for ours, CHILD SA packets for
//! strongSwan, WireGuard transfer bytes, frames forwarded by xdpfwd).
//! Writes `target/bench/tunnel.json`, `target/bench/tunnel.svg` and, for
//! the fast path at 64 bytes, `target/bench/tunnel-profile.txt` (perf).
//!
//! The binaries (s2s-gateway, s2sctl, trafficgen, xdpfwd) are expected next
//! to this one (xtask builds them); boringtun-cli in `target/tools/bin`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use labkit::{charon, output, veth, Ns};
use serde_json::{json, Value};

mod bandwidth;
mod cases;
mod gateway;
mod measure;
mod report;
mod strongswan;
use cases::*;
use gateway::*;
use measure::*;
use report::*;
use strongswan::*;

const PREFIX: &str = "s2sbench-";
/// The gateway type of the throughput cases: no bandwidth enforced.
const UNLIMITED_TYPE: &str = "VGW-BENCH";
const TOKEN: &str = "bench-0000-token";
const PRIVATE_NETWORK: &str = "11111111-2222-4333-8444-555555555555";
const IPAM_V4: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const ASN_A: u32 = 64601;
const ASN_B: u32 = 64602;
/// Seconds of traffic per point.
const DURATION: f64 = 5.0;
/// Paced trials of the loss-bounded rate search, each this long.
const SEARCH_STEPS: usize = 5;
const SEARCH_DURATION: f64 = 3.0;
/// Loss (%) a paced trial may have and still pass.
const LOSS_TARGET: f64 = 1.0;
/// Frame sizes: 64 bytes and the issue's 1400 bytes (a 1386-byte inner IP
/// packet, within our tunnel's inner MTU, gateway_common::TUNNEL_INNER_MTU).
const SIZES: [usize; 2] = [64, LARGE];
const LARGE: usize = 1400;
const _: () = assert!(LARGE - 14 <= gateway_common::TUNNEL_INNER_MTU);
const FLOWS: u32 = 4;
/// Default CPU pinning (see [`pin_cpu`]).
const DEFAULT_PIN: &str = "sender=0,sink=1,a=1,b=1,dst=1";
const SINK: &str = "203.0.113.10:9000";

const SRC: Ns = Ns::new(PREFIX, "src");
const A: Ns = Ns::new(PREFIX, "a");
const B: Ns = Ns::new(PREFIX, "b");
const DST: Ns = Ns::new(PREFIX, "dst");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A sibling binary of this one (same target dir and profile).
fn bin(name: &str) -> anyhow::Result<String> {
    let me = std::env::current_exe()?;
    let p = me.parent().context("no exe dir")?.join(name);
    if !p.exists() {
        bail!(
            "{} not found: build it first (cargo xtask bench tunnel does)",
            p.display()
        );
    }
    Ok(p.display().to_string())
}

/// Removes every `s2sbench-` namespace (killing what runs in it), our
/// boringtun sockets and pinned maps.
fn teardown() {
    labkit::teardown(PREFIX);
    for s in ["wga", "wgb"] {
        let _ = fs::remove_file(format!("/run/wireguard/s2sb{s}.sock"));
    }
    if let Ok(d) = fs::read_dir("/sys/fs/bpf") {
        for e in d.flatten() {
            if e.file_name().to_string_lossy().starts_with(PREFIX) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// One case's topology and daemons; dropping it stops the daemons
/// (SIGTERM, then SIGKILL) and removes the namespaces.
struct Env {
    dir: PathBuf,
    daemons: Vec<(String, Child)>,
    /// Namespace of each daemon (same order), for CPU pinning.
    daemon_ns: Vec<Ns>,
    napi: Vec<String>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for (name, child) in self.daemons.iter_mut().rev() {
            labkit::terminate(child, &format!("tunnel: {name}"), Duration::from_secs(5));
        }
        teardown();
    }
}

/// Every veth end, and the NAPI settings applied to each, in every case.
const DEVICES: [(Ns, &str); 6] = [
    (SRC, "src0"),
    (A, "alan0"),
    (A, "awan0"),
    (B, "bwan0"),
    (B, "blan0"),
    (DST, "dst0"),
];

impl Env {
    /// The chain for `case`; `forwarding`: the namespaces whose gateway is
    /// not ours (strongSwan, boringtun, xdpfwd's kernel side), which forward
    /// by the kernel's global switch. Ours run on the kernel's defaults and
    /// set what they need on their own interfaces.
    fn new(case: &str, forwarding: &[Ns]) -> anyhow::Result<Self> {
        teardown();
        let dir = root().join("target/bench/tunnel").join(case);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let mut env = Self {
            dir,
            daemons: Vec::new(),
            daemon_ns: Vec::new(),
            napi: Vec::new(),
        };
        for ns in [SRC, A, B, DST] {
            ns.create()?;
        }
        veth(SRC, "src0", A, "alan0")?;
        veth(A, "awan0", B, "bwan0")?;
        veth(B, "blan0", DST, "dst0")?;
        for (ns, dev, addr) in [
            (SRC, "src0", "198.51.100.10/24"),
            (A, "alan0", "198.51.100.1/24"),
            (A, "awan0", "192.0.2.1/24"),
            (B, "bwan0", "192.0.2.2/24"),
            (B, "blan0", "203.0.113.1/24"),
            (DST, "dst0", "203.0.113.10/24"),
        ] {
            ns.exec(&["ip", "addr", "add", addr, "dev", dev])?;
        }
        // The same NAPI setup for every case: GRO on (so veth receives
        // through NAPI even without XDP) and NAPI threaded, so the receive
        // work of each hop is a schedulable kthread, not softirq time
        // charged to whoever sent.
        for (ns, dev) in DEVICES {
            ns.exec(&["ip", "link", "set", dev, "up"])?;
            let gro = ns.exec(&["ethtool", "-K", dev, "gro", "on"]).is_ok();
            let threaded = ns
                .exec(&[
                    "sh",
                    "-c",
                    &format!("echo 1 > /sys/class/net/{dev}/threaded"),
                ])
                .is_ok();
            env.napi.push(format!(
                "{}:{dev} gro={} threaded={}",
                ns.short(),
                if gro { "on" } else { "FAILED" },
                if threaded { "1" } else { "FAILED" }
            ));
        }
        SRC.exec(&["ip", "route", "add", "default", "via", "198.51.100.1"])?;
        DST.exec(&["ip", "route", "add", "default", "via", "203.0.113.1"])?;
        for ns in forwarding {
            ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        }
        A.exec(&["ping", "-c", "1", "-W", "2", "192.0.2.2"])?;
        Ok(env)
    }

    fn spawn(&mut self, name: &str, ns: Ns, script: &str) -> anyhow::Result<u32> {
        let log = self.dir.join(format!("{name}.log"));
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name(), "sh", "-c", script])
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        // Own process group: Ctrl-C reaches us, and we stop them in order.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child.id();
        self.daemons.push((name.to_owned(), child));
        self.daemon_ns.push(ns);
        Ok(pid)
    }

    /// Pins every thread of every daemon and every NAPI kthread of our
    /// devices to its role's CPU (see [`pin_cpu`]); done right before each
    /// point so threads started late are covered.
    fn pin_all(&self) {
        for ((_, child), ns) in self.daemons.iter().zip(&self.daemon_ns) {
            if let Some(cpu) = pin_cpu(ns.short()) {
                // `ip netns exec` and `sh -c 'exec ...'` both exec: the pid
                // is the daemon's; -a covers all its threads.
                let _ = Command::new("taskset")
                    .args(["-a", "-p", "-c", &cpu.to_string(), &child.id().to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let Ok(procs) = fs::read_dir("/proc") else {
            return;
        };
        for p in procs.flatten() {
            let comm = fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            let Some(dev) = comm.trim().strip_prefix("napi/") else {
                continue;
            };
            let Some((ns, _)) = DEVICES.iter().find(|(_, d)| {
                dev.strip_prefix(d)
                    .is_some_and(|rest| rest.starts_with('-'))
            }) else {
                continue;
            };
            // src's device carries nothing back: its NAPI goes with the sender.
            let role = if *ns == SRC { "sender" } else { ns.short() };
            if let Some(cpu) = pin_cpu(role) {
                let _ = Command::new("taskset")
                    .args(["-p", "-c", &cpu.to_string()])
                    .arg(p.file_name())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }

    fn check_daemons(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.daemons {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "{name} exited ({status}); see {}",
                    self.dir.join(format!("{name}.log")).display()
                );
            }
        }
        Ok(())
    }

    fn wait_for<T>(
        &mut self,
        stop: &AtomicBool,
        what: &str,
        limit: Duration,
        f: impl FnMut() -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let interval = Duration::from_millis(300);
        labkit::wait_for(stop, what, limit, interval, || self.check_daemons(), f)
    }

    fn ping_through(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        self.wait_for(
            stop,
            "ping src → dst through the tunnel",
            Duration::from_secs(30),
            || {
                Ok(SRC
                    .cmd("ping")
                    .args(["-c", "1", "-W", "1", "203.0.113.10"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
                    .then_some(()))
            },
        )
    }
}

/// CPU pinning per role, from `S2S_BENCH_PIN` (`none`, or e.g.
/// `sender=0,sink=1,a=1,b=1,dst=1`); roles: `sender` (trafficgen send and
/// src's NAPI), `sink` (trafficgen sink), `a` and `b` (every daemon of the
/// namespace, xdpfwd, and the NAPI threads of its devices), `dst` (dst's
/// NAPI).
fn pin_cpu(role: &str) -> Option<u32> {
    let spec = pinning();
    spec.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == role).then(|| v.trim().parse().ok()).flatten()
    })
}

fn pinning() -> String {
    std::env::var("S2S_BENCH_PIN").unwrap_or_else(|_| DEFAULT_PIN.into())
}

/// Wraps `program` in `taskset -c CPU` when `role` is pinned.
fn pinned(ns: Ns, role: &str, program: &str) -> Command {
    match pin_cpu(role) {
        Some(cpu) => {
            let mut c = ns.cmd("taskset");
            c.args(["-c", &cpu.to_string(), program]);
            c
        }
        None => ns.cmd(program),
    }
}

fn mac(ns: Ns, dev: &str) -> anyhow::Result<String> {
    Ok(ns
        .out(&["cat", &format!("/sys/class/net/{dev}/address")])?
        .trim()
        .to_owned())
}

struct CaseDef {
    name: &'static str,
    what: &'static str,
}

const CASES: [CaseDef; 7] = [
    CaseDef {
        name: "ours-fastpath",
        what: "s2s-gateway on A and B, XDP + AF_XDP workers, AES-256-GCM, UDP-encap ESP",
    },
    CaseDef {
        name: "ours-slowpath",
        what: "s2s-gateway on A and B with --no-xdp (TUN slow path only), AES-256-GCM",
    },
    CaseDef {
        name: "ours-vs-strongswan",
        what: "s2s-gateway (fast path) on A, strongSwan kernel-libipsec + BIRD on B from our device configs, AES-256-GCM",
    },
    CaseDef {
        name: "strongswan-pair",
        what: "strongSwan kernel-libipsec on A and B, aes256gcm16, UDP encap (encap = yes)",
    },
    CaseDef {
        name: "boringtun-pair",
        what: "boringtun-cli (userspace WireGuard, ChaCha20-Poly1305) on A and B, default threads",
    },
    CaseDef {
        name: "wireguard-go-pair",
        what: "wireguard-go (Go's userspace WireGuard, ChaCha20-Poly1305) on A and B, defaults (GOMAXPROCS = all CPUs)",
    },
    CaseDef {
        name: "xdpfwd-nocrypto",
        what: "xdpfwd on A (alan0 → awan0) and on B (bwan0 → blan0): XDP redirect to AF_XDP, MAC rewrite, AF_XDP TX, no crypto",
    },
];

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--bandwidth") {
        return match bandwidth::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                teardown();
                eprintln!("bandwidth: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run() {
        Ok(all_ok) => {
            if all_ok {
                ExitCode::SUCCESS
            } else {
                eprintln!("tunnel: some cases failed (see target/bench/tunnel.json)");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            teardown();
            eprintln!("tunnel: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Value {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => json!((a / b * 100.0).round() / 100.0),
        _ => Value::Null,
    }
}

/// Checks for root and installs the Ctrl-C handler: the flag it sets.
fn start() -> anyhow::Result<Arc<AtomicBool>> {
    if output(Command::new("id").arg("-u"))?.trim() != "0" {
        bail!("needs root (network namespaces, XDP, AF_XDP)");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    Ok(stop)
}

fn run() -> anyhow::Result<bool> {
    let stop = start()?;
    let only: Vec<String> = std::env::var("S2S_BENCH_CASES")
        .map(|s| s.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let out_dir = root().join("target/bench");
    fs::create_dir_all(&out_dir)?;
    let mut results = Vec::new();
    let mut cases_json = Vec::new();
    let mut tcp_json: Vec<Value> = Vec::new();
    let mut napi = Vec::new();
    // (case, [pps 64 B, Gbit/s large] at saturation, [same] at ≤ 1 % loss)
    let mut best: Vec<(String, [f64; 2], [f64; 2])> = Vec::new();
    let mut all_ok = true;
    let mut profiled = false;
    let mut profile_shares: Vec<Value> = Vec::new();
    let mut worker_ns_per_packet = Value::Null;
    for def in &CASES {
        if !only.is_empty() && !only.iter().any(|o| o == def.name) {
            continue;
        }
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        println!("\n==> tunnel: {} ({})", def.name, def.what);
        let started = Instant::now();
        let r = match def.name {
            "ours-fastpath" => case_ours_pair(&stop, def.name, false),
            "ours-slowpath" => case_ours_pair(&stop, def.name, true),
            "ours-vs-strongswan" => case_ours_vs_strongswan(&stop, def.name),
            "strongswan-pair" => case_strongswan_pair(&stop, def.name),
            "boringtun-pair" => case_wireguard(&stop, def.name, Wg::Boringtun),
            "wireguard-go-pair" => case_wireguard(&stop, def.name, Wg::Go),
            _ => case_xdpfwd(&stop, def.name),
        };
        // The Env of the case is dropped inside; make sure nothing is left.
        teardown();
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        match r {
            Ok(out) => {
                let (mut sat, mut bounded) = ([0.0; 2], [0.0; 2]);
                let mut case_ok = true;
                for p in out.points {
                    case_ok &= p.ok;
                    if p.ok {
                        if p.json["frame_bytes"] == 64 {
                            sat[0] = p.rx_pps;
                            bounded[0] = p.json["pps_at_le_1pct_loss"].as_f64().unwrap_or(0.0);
                        } else {
                            sat[1] = p.json["gbit_s"].as_f64().unwrap_or(0.0);
                            bounded[1] = p.json["gbit_s_at_le_1pct_loss"].as_f64().unwrap_or(0.0);
                        }
                    }
                    results.push(p.json);
                }
                all_ok &= case_ok;
                if napi.is_empty() {
                    napi = out.napi;
                }
                best.push((def.name.to_owned(), sat, bounded));
                if let Some(t) = out.tcp {
                    tcp_json.push(json!({"case": def.name, "tcp": t}));
                }
                cases_json.push(json!({"case": def.name, "what": def.what, "ok": case_ok,
                    "setup_and_run_s": started.elapsed().as_secs()}));
                if def.name == "ours-fastpath" {
                    let dir = out_dir.join("tunnel").join(def.name);
                    match profile_summary(&dir, &out_dir.join("tunnel-profile.txt")) {
                        Ok(profile) => {
                            print!("{}", profile.summary);
                            profiled = true;
                            profile_shares = profile
                                .shares
                                .iter()
                                .map(|(key, pct)| json!({"category": key, "pct": pct}))
                                .collect();
                            // The recording spans DURATION - 1 s of the
                            // 64-byte point at saturation (`measure`).
                            let packets = sat[0] * (DURATION - 1.0);
                            if let Some(ns) = profile.worker_cpu_ns.filter(|_| packets > 0.0) {
                                worker_ns_per_packet = json!(ns / packets);
                            }
                        }
                        Err(e) => eprintln!("tunnel: no profile: {e:#}"),
                    }
                }
            }
            Err(e) => {
                all_ok = false;
                eprintln!("  {} FAILED: {e:#}", def.name);
                results.push(json!({"case": def.name, "tunnel_check": "FAILED",
                    "notes": format!("{e:#}")}));
                cases_json.push(json!({"case": def.name, "what": def.what, "ok": false,
                    "error": format!("{e:#}")}));
                best.push((def.name.to_owned(), [0.0; 2], [0.0; 2]));
            }
        }
    }
    let get = |name: &str, i: usize, bounded: bool| {
        best.iter()
            .find(|b| b.0 == name)
            .map(|b| if bounded { b.2[i] } else { b.1[i] })
            .filter(|v| *v > 0.0)
    };
    let mut ratios = Vec::new();
    for (bounded, how) in [
        (false, "received at saturation"),
        (true, "highest rate with ≤ 1 % loss"),
    ] {
        for (num, den, i, goal, what) in [
            (
                "ours-fastpath",
                "strongswan-pair",
                1,
                5.0,
                "Gbit/s at 1400 B",
            ),
            (
                "ours-fastpath",
                "boringtun-pair",
                1,
                1.5,
                "Gbit/s at 1400 B",
            ),
            ("ours-fastpath", "boringtun-pair", 0, 1.5, "pps at 64 B"),
            (
                "ours-fastpath",
                "wireguard-go-pair",
                1,
                2.0,
                "Gbit/s at 1400 B",
            ),
            ("ours-fastpath", "wireguard-go-pair", 0, 1.5, "pps at 64 B"),
            ("ours-fastpath", "xdpfwd-nocrypto", 0, 0.85, "pps at 64 B"),
        ] {
            ratios.push(json!({
                "ratio": format!("{num} / {den}, {what}, {how}"),
                "goal": goal,
                "value": ratio(get(num, i, bounded), get(den, i, bounded)),
            }));
        }
    }
    let ratios: Vec<Value> = ratios
        .into_iter()
        .map(|mut r| {
            let met = match (r["value"].as_f64(), r["goal"].as_f64()) {
                (Some(v), Some(g)) => json!(v >= g),
                _ => Value::Null,
            };
            r["met"] = met;
            r
        })
        .collect();
    for r in &ratios {
        println!(
            "  ratio {}: {} (goal ≥ {}, met: {})",
            r["ratio"].as_str().unwrap_or(""),
            r["value"],
            r["goal"],
            r["met"]
        );
    }
    let doc = json!({
        "benchmark": "tunnel",
        "topology": "src —veth— A —veth— B —veth— dst, namespaces s2sbench-*, rebuilt identically per case",
        "cpu": cpu_model(),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "duration_s_per_point": DURATION,
        "flows": FLOWS,
        "offered_load": "trafficgen send --rate 0 (its maximum, AF_XDP copy-mode TX from src)",
        "gbit_s": "received inner Ethernet frames × frame_bytes × 8 per second",
        "napi": napi,
        "pinning": pinning(),
        "cases": cases_json,
        "results": results,
        "ratios": ratios,
        "tcp": tcp_json,
        "tcp_method": "iperf3 -t 3 from src to dst and with -R, 3 runs each way; median, min, max of received Mbit/s and sender retransmits",
        "profile": if profiled { json!("target/bench/tunnel-profile.txt") } else { Value::Null },
        "profile_shares": profile_shares,
        "worker_cpu_ns_per_packet_64b": worker_ns_per_packet,
    });
    fs::write(
        out_dir.join("tunnel.json"),
        serde_json::to_string_pretty(&doc)? + "\n",
    )?;
    fs::write(out_dir.join("tunnel.svg"), svg(&best))?;
    println!(
        "tunnel: wrote {} and {}",
        out_dir.join("tunnel.json").display(),
        out_dir.join("tunnel.svg").display()
    );
    Ok(all_ok)
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}
