//! IKE benchmark: IKE SAs (each with its first CHILD SA) established per
//! second by a responder, for our `UdpDriver` + `IkeManager` and for
//! strongSwan's charon 5.9.8 (kernel-libipsec) in the same run, under the
//! same initiator load.
//!
//! The load is our own initiator (`IkeManager` behind a `UdpDriver`): one
//! connection per initiator address (192.0.2.10 and up, then 198.51.100.10
//! and up, because our responder matches a new IKE_SA_INIT to a connection
//! by addresses), PSK,
//! aes256gcm16-prfsha256-x25519, ESP aes256gcm16, UDP encapsulation forced
//! (as strongSwan's `encap = yes`), no DPD, no rekeying, at most
//! `CONCURRENCY` exchanges in flight. A round times the first IKE_SA_INIT
//! to the last connection with both its IKE SA up and its CHILD SA
//! installed, then deletes every IKE SA (not timed) so the next round
//! starts from an empty responder. The CPU time of the responder's process
//! (all threads, from /proc schedstat) over the timed part is recorded
//! too: it says how much work a responder spends per SA whether or not
//! the initiator, which does as much cryptography per SA, was the
//! bottleneck; the initiator's own CPU share is printed per round.
//!
//! Three network namespaces: the initiator, our responder (203.0.113.1)
//! and charon (203.0.113.2), the initiator joined to each by a veth pair
//! (169.254.1.0/30, 169.254.2.0/30).
//! Each role is its own process: this binary re-executes itself under
//! `ip netns exec` as `respond` and as `initiate` (one process per round).
//! Rounds alternate between the two responders (and which goes first), the
//! median is kept. Needs root. Prints a table and writes
//! `target/bench/ike.json`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use gateway_ike::driver::{Command as DriverCommand, UdpDriver};
use gateway_ike::{Action, ConnectionConfig, EspCipher, IkeCipher, Psk};
use serde::Serialize;
use tokio::sync::mpsc;

/// Connections (IKE SAs) per round, one initiator address each.
const CONNECTIONS: usize = 480;
/// Exchanges in flight at once.
const CONCURRENCY: usize = 32;
/// Timed rounds per responder (after one untimed warm-up each).
const ROUNDS: usize = 11;
/// Bound on establishing one round.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on deleting one round's IKE SAs.
const DELETE_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on anything the orchestrator waits for from a child process.
const CHILD_TIMEOUT: Duration = Duration::from_secs(90);

const OURS_ADDR: &str = "203.0.113.1";
const CHARON_ADDR: &str = "203.0.113.2";
/// Not a secret: both sides of a benchmark.
const PSK: &str = "ike-bench-pre-shared-key-0123456789";
const IKE_PROPOSAL: &str = "aes256gcm16-prfsha256-x25519";
const ESP_PROPOSAL: &str = "aes256gcm16";

#[derive(Serialize)]
struct Row {
    name: String,
    connections: usize,
    concurrency: usize,
    rounds: usize,
    /// Median over the rounds.
    sas_per_second: f64,
    /// Median responder CPU time (user + system, all threads) per SA.
    responder_cpu_ms_per_sa: f64,
    ratio_to_charon: f64,
}

#[derive(Serialize)]
struct Report {
    results: Vec<Row>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("respond") => respond(),
        Some("initiate") => initiate(args.get(2).expect("target address")),
        _ => orchestrate(),
    }
}

/// Initiator addresses per /24 (hosts .10 to .249).
const PER_NET: usize = 240;

/// The n-th initiator address: 192.0.2.10 to .249, then 198.51.100.10 to .249.
fn initiator_addr(i: usize) -> IpAddr {
    let (net, host) = (i / PER_NET, i % PER_NET);
    let host = u8::try_from(10 + host).expect("host below 250");
    match net {
        0 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, host)),
        1 => IpAddr::V4(Ipv4Addr::new(198, 51, 100, host)),
        _ => panic!("at most {} connections", 2 * PER_NET),
    }
}

/// One side of a benchmark connection: the suite, forced encapsulation,
/// no DPD and no rekeying.
fn config(name: String, local: IpAddr, remote: IpAddr, initiate: bool) -> ConnectionConfig {
    let mut c = ConnectionConfig::new(name, local, remote, Psk::new(PSK.as_bytes().to_vec()));
    c.ike_ciphers = vec![
        IkeCipher::from_api("aes256gcm", Some("sha256"), Some("curve25519")).expect("IKE suite"),
    ];
    c.esp_ciphers = vec![EspCipher::from_api("aes256gcm", None, None).expect("ESP suite")];
    c.initiate = initiate;
    // charon with kernel-libipsec only does UDP-encapsulated ESP.
    c.force_encap = true;
    c.dpd_interval = None;
    c.child_rekey_time = None;
    c.ike_rekey_time = None;
    c.child_lifetime = None;
    c
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("stdout");
    out.flush().expect("stdout");
}

/// Role `respond`: our responder on OURS_ADDR with one connection per
/// initiator address; prints READY, then runs until stdin closes.
fn respond() {
    let local: IpAddr = OURS_ADDR.parse().expect("address");
    runtime().block_on(async move {
        let driver = UdpDriver::bind(&[local], 500, 4500)
            .await
            .expect("bind 500/4500");
        // Capacity 1: once the last send returns, the driver has taken all
        // but at most one command.
        let (cmd_tx, cmd_rx) = mpsc::channel(1);
        let (ev_tx, mut ev_rx) = mpsc::channel(1024);
        let (eof_tx, mut eof_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            let _ = eof_tx.send(());
        });
        let control = async move {
            for i in 0..CONNECTIONS {
                let c = config(format!("r{i}"), local, initiator_addr(i), false);
                cmd_tx
                    .send(DriverCommand::AddConnection(Box::new(c)))
                    .await
                    .expect("driver");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            say("READY");
            // Events (installs, logs) are what the agent would consume;
            // here they are dropped.
            loop {
                tokio::select! {
                    _ = &mut eof_rx => break,
                    ev = ev_rx.recv() => if ev.is_none() { break },
                }
            }
            drop(cmd_tx);
        };
        tokio::join!(driver.run(cmd_rx, ev_tx), control);
    });
}

/// Role `initiate`: one round against `target`. Prints START, then
/// `DONE <seconds> <established> <failed> <own CPU seconds>`, then
/// `CLEAN <deleted>`.
fn initiate(target: &str) {
    let target: IpAddr = target.parse().expect("target address");
    let addrs: Vec<IpAddr> = (0..CONNECTIONS).map(initiator_addr).collect();
    runtime().block_on(async move {
        let driver = UdpDriver::bind(&addrs, 500, 4500)
            .await
            .expect("bind 500/4500 on the initiator addresses");
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (ev_tx, ev_rx) = mpsc::channel(1024);
        let control = async move {
            load(&cmd_tx, ev_rx, target).await;
            drop(cmd_tx);
        };
        tokio::join!(driver.run(cmd_rx, ev_tx), control);
    });
}

#[derive(Clone, Copy, Default)]
struct ConnState {
    ike_up: bool,
    child: bool,
    done: bool,
    failed: bool,
}

fn conn_index(name: &str) -> Option<usize> {
    name.strip_prefix('c')?
        .parse()
        .ok()
        .filter(|i| *i < CONNECTIONS)
}

async fn load(
    cmd: &mpsc::Sender<DriverCommand>,
    mut events: mpsc::Receiver<Action>,
    target: IpAddr,
) {
    let launch = |i: usize| {
        DriverCommand::AddConnection(Box::new(config(
            format!("c{i}"),
            initiator_addr(i),
            target,
            true,
        )))
    };
    let mut state = [ConnState::default(); CONNECTIONS];
    // Each finished connection launches the next, so CONCURRENCY stay in flight.
    let (mut next, mut established, mut failed) = (0, 0, 0);
    say("START");
    let cpu0 = cpu_ns("self");
    let t0 = Instant::now();
    let deadline = tokio::time::Instant::from_std(t0 + ROUND_TIMEOUT);
    while next < CONNECTIONS.min(CONCURRENCY) {
        cmd.send(launch(next)).await.expect("driver");
        next += 1;
    }
    while established + failed < CONNECTIONS {
        let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.recv()).await else {
            eprintln!("ike bench: round timed out with {established} established, {failed} failed");
            break;
        };
        let (i, down) = match &ev {
            Action::IkeSaUp { conn, .. } => (conn_index(conn), false),
            Action::InstallChildSa(c) => (conn_index(&c.conn), false),
            Action::IkeSaDown { conn, reason, .. }
            | Action::IkeSaFailed {
                conn,
                reason,
                initiator: true,
                ..
            } => {
                eprintln!("ike bench: {conn} down before established: {reason:?}");
                (conn_index(conn), true)
            }
            _ => (None, false),
        };
        let Some(i) = i else { continue };
        let s = &mut state[i];
        if s.done || s.failed {
            continue;
        }
        match ev {
            Action::IkeSaUp { .. } => s.ike_up = true,
            Action::InstallChildSa(_) => s.child = true,
            _ => {}
        }
        if down {
            s.failed = true;
            failed += 1;
        } else if s.ike_up && s.child {
            s.done = true;
            established += 1;
        } else {
            continue;
        }
        if next < CONNECTIONS {
            cmd.send(launch(next)).await.expect("driver");
            next += 1;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_ns("self").saturating_sub(cpu0) as f64 / 1e9;
    say(&format!("DONE {secs} {established} {failed} {cpu}"));

    // Not timed: delete every IKE SA so the responder starts empty.
    for (i, s) in state.iter().enumerate() {
        if s.done {
            cmd.send(DriverCommand::DeleteIkeSa(format!("c{i}")))
                .await
                .expect("driver");
        }
    }
    let deadline = tokio::time::Instant::now() + DELETE_TIMEOUT;
    let mut deleted = 0;
    while deleted < established {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Action::IkeSaDown { .. })) => deleted += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    for i in 0..next {
        cmd.send(DriverCommand::RemoveConnection(format!("c{i}")))
            .await
            .expect("driver");
    }
    say(&format!("CLEAN {deleted}"));
}

/// Namespaces, daemons and the scratch directory; torn down on drop, even
/// on panic.
struct Lab {
    dir: PathBuf,
    ns_init: String,
    ns_ours: String,
    ns_charon: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    fn new() -> Self {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("s2s-ikeb-{pid}"));
        std::fs::create_dir_all(dir.join("run")).expect("scratch dir");
        let mut lab = Self {
            dir,
            ns_init: format!("s2s-ikeb-{pid}-i"),
            ns_ours: format!("s2s-ikeb-{pid}-a"),
            ns_charon: format!("s2s-ikeb-{pid}-b"),
            namespaces: Vec::new(),
            children: Vec::new(),
        };
        for ns in [
            lab.ns_init.clone(),
            lab.ns_ours.clone(),
            lab.ns_charon.clone(),
        ] {
            ip(&["netns", "add", &ns]);
            lab.namespaces.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        let (ni, na, nb) = (&lab.ns_init, &lab.ns_ours, &lab.ns_charon);
        for (peer, dev_i, dev_p, link_i, link_p, responder) in [
            (na, "i-a", "a-i", "169.254.1.2", "169.254.1.1", OURS_ADDR),
            (nb, "i-b", "b-i", "169.254.2.2", "169.254.2.1", CHARON_ADDR),
        ] {
            ip(&[
                "link", "add", dev_i, "netns", ni, "type", "veth", "peer", "name", dev_p, "netns",
                peer,
            ]);
            ip(&[
                "-n",
                ni,
                "addr",
                "add",
                &format!("{link_i}/30"),
                "dev",
                dev_i,
            ]);
            ip(&[
                "-n",
                peer,
                "addr",
                "add",
                &format!("{link_p}/30"),
                "dev",
                dev_p,
            ]);
            ip(&[
                "-n",
                peer,
                "addr",
                "add",
                &format!("{responder}/32"),
                "dev",
                dev_p,
            ]);
            ip(&["-n", ni, "link", "set", dev_i, "up"]);
            ip(&["-n", peer, "link", "set", dev_p, "up"]);
            ip(&[
                "-n",
                ni,
                "route",
                "add",
                &format!("{responder}/32"),
                "via",
                link_p,
            ]);
            for net in ["192.0.2.0/24", "198.51.100.0/24"] {
                ip(&["-n", peer, "route", "add", net, "via", link_i]);
            }
        }
        // The initiator addresses, one per connection, in one `ip -batch`.
        let batch: String = (0..CONNECTIONS)
            .map(|i| format!("addr add {}/32 dev lo\n", initiator_addr(i)))
            .collect();
        let mut child = Command::new("ip")
            .args(["-n", ni, "-batch", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("ip -batch");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(batch.as_bytes())
            .expect("ip -batch input");
        assert!(child.wait().expect("ip -batch").success(), "ip -batch");
        lab
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }

    fn exec_in(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        c
    }

    /// Starts our responder; returns its pid once it printed READY. Its
    /// stdin stays open (held in `children`) and closing it stops it.
    fn start_ours(&mut self, exe: &str) -> u32 {
        let mut child = self
            .exec_in(&self.ns_ours, &[exe, "respond"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn our responder");
        let lines = line_reader(child.stdout.take().expect("stdout"));
        let pid = child.id();
        self.children.push(child);
        let deadline = Instant::now() + CHILD_TIMEOUT;
        expect_line(&lines, "READY", deadline).expect("our responder did not start");
        pid
    }

    /// Starts charon with the connection for every initiator address
    /// loaded; returns its pid.
    fn start_charon(&mut self) -> u32 {
        let d = self.dir.display().to_string();
        std::fs::write(self.path("strongswan.conf"), strongswan_conf(&d)).expect("write conf");
        std::fs::write(self.path("swanctl.conf"), swanctl_conf()).expect("write conf");
        let child = self
            .exec_in(
                &self.ns_charon,
                &[
                    "sh",
                    "-c",
                    // exec all the way down: the pid we hold is charon's.
                    &format!(
                        "mount --bind {d}/run /run && exec env STRONGSWAN_CONF={d}/strongswan.conf /usr/lib/ipsec/charon"
                    ),
                ],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn charon");
        let pid = child.id();
        self.children.push(child);
        let sock = self.path("charon.vici");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "charon did not create its vici socket"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // kernel-libipsec installs a route for every CHILD SA's remote
        // traffic selector (0.0.0.0/0 here) into ipsec0 in table 220, with
        // an exclude route only for the first peer: IKE replies to every
        // other initiator address would vanish into the first tunnel.
        // Dropping the policy-routing rule keeps that work (routes are
        // still installed) without the hijack; no ESP is sent here anyway.
        let rules = self.ip_in_charon(&["rule", "show"]);
        for l in rules.lines().filter(|l| l.contains("lookup 220")) {
            let prio = l.split(':').next().unwrap_or("").trim();
            self.ip_in_charon(&["rule", "del", "priority", prio]);
        }
        let conf = self.path("swanctl.conf").display().to_string();
        self.swanctl(&["--load-all", "--file", &conf]);
        pid
    }

    fn ip_in_charon(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.ns_charon.as_str()];
        full.extend_from_slice(args);
        let out = Command::new("ip").args(&full).output().expect("ip");
        assert!(out.status.success(), "ip {full:?} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// swanctl wants the command first, then its options.
    fn swanctl(&self, args: &[&str]) -> String {
        let uri = format!("unix://{}", self.path("charon.vici").display());
        let out = self
            .exec_in(&self.ns_charon, &["swanctl"])
            .args(args)
            .args(["--uri", &uri])
            .output()
            .expect("swanctl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "swanctl {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// One round of the initiator against `target`, sampling the
    /// responder's CPU time around the timed part.
    fn round(&mut self, exe: &str, target: &str, responder_pid: u32) -> Option<RoundResult> {
        let mut child = self
            .exec_in(&self.ns_init, &[exe, "initiate", target])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn initiator");
        let lines = line_reader(child.stdout.take().expect("stdout"));
        let deadline = Instant::now() + CHILD_TIMEOUT;
        let result = (|| {
            expect_line(&lines, "START", deadline)?;
            let cpu0 = cpu_ns(&responder_pid.to_string());
            let done = expect_line(&lines, "DONE", deadline)?;
            let cpu1 = cpu_ns(&responder_pid.to_string());
            let clean = expect_line(&lines, "CLEAN", deadline)?;
            let f: Vec<f64> = done
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            let [secs, established, failed, initiator_cpu_s] = f[..] else {
                return None;
            };
            Some(RoundResult {
                secs,
                established: established as usize,
                failed: failed as usize,
                initiator_cpu_s,
                responder_cpu_s: cpu1.saturating_sub(cpu0) as f64 / 1e9,
                deleted: clean.trim().parse().unwrap_or(0),
            })
        })();
        if result.is_none() {
            let _ = child.kill();
        }
        let _ = child.wait();
        result
    }
}

struct RoundResult {
    secs: f64,
    established: usize,
    failed: usize,
    initiator_cpu_s: f64,
    responder_cpu_s: f64,
    deleted: usize,
}

/// Lines of a child's stdout, read on a thread so waits can be bounded.
fn line_reader(out: impl Read + Send + 'static) -> std_mpsc::Receiver<String> {
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The rest of the next line starting with `word`, unless the child stops
/// or `deadline` passes first.
fn expect_line(
    lines: &std_mpsc::Receiver<String>,
    word: &str,
    deadline: Instant,
) -> Option<String> {
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let line = lines.recv_timeout(left).ok()?;
        if let Some(rest) = line.trim().strip_prefix(word) {
            return Some(rest.trim().to_owned());
        }
    }
}

/// CPU time of a process, summed over its live threads, in nanoseconds
/// (the first field of each thread's schedstat: finer than the 10 ms
/// ticks of /proc/PID/stat, which would be too coarse for a round).
fn cpu_ns(pid: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// charon as a production responder would run it on this host: the
/// plugins it needs, kernel-libipsec for the CHILD SAs, logging at level 0
/// to a file. `cookie_threshold` is set to our `IkeManager`'s (64) so
/// neither side answers with COOKIEs at this concurrency, and the IKE SA
/// table is sized for hundreds of SAs (the default is one bucket).
fn strongswan_conf(d: &str) -> String {
    format!(
        r#"charon {{
  load_modular = no
  load = random nonce openssl pem pkcs1 x509 revocation constraints pubkey curve25519 aes sha1 sha2 hmac gcm chapoly kdf kernel-libipsec kernel-netlink socket-default vici
  install_routes = no
  cookie_threshold = 64
  ikesa_table_size = 256
  ikesa_table_segments = 4
  plugins {{
    vici {{
      socket = unix://{d}/charon.vici
    }}
  }}
  filelog {{
    charon {{
      path = {d}/charon.log
      default = 0
      append = no
    }}
  }}
}}
"#
    )
}

/// One connection for the whole initiator range, any initiator identity,
/// the PSK for every identity, no uniqueness policy, no DPD, no rekeying.
fn swanctl_conf() -> String {
    format!(
        r#"connections {{
  bench {{
    version = 2
    local_addrs = {CHARON_ADDR}
    remote_addrs = 192.0.2.0/24, 198.51.100.0/24
    proposals = {IKE_PROPOSAL}
    encap = yes
    unique = never
    rekey_time = 0
    local {{
      auth = psk
      id = {CHARON_ADDR}
    }}
    remote {{
      auth = psk
      id = %any
    }}
    children {{
      net {{
        local_ts = 0.0.0.0/0,::/0
        remote_ts = 0.0.0.0/0,::/0
        esp_proposals = {ESP_PROPOSAL}
        start_action = none
        rekey_time = 0
      }}
    }}
  }}
}}
secrets {{
  ike-bench {{
    secret = "{PSK}"
  }}
}}
"#
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[derive(Default)]
struct Series {
    rate: Vec<f64>,
    cpu_ms_per_sa: Vec<f64>,
}

fn orchestrate() {
    let exe = std::env::current_exe().expect("own path");
    let exe = exe.to_str().expect("utf-8 path").to_owned();
    let mut lab = Lab::new();
    let ours_pid = lab.start_ours(&exe);
    let charon_pid = lab.start_charon();
    // CPU time is read by pid: it must be the daemons', not a wrapper's.
    assert_eq!(process_name(ours_pid), "ike", "our responder's pid");
    assert_eq!(process_name(charon_pid), "charon", "charon's pid");
    let names = ["ours", "charon"];
    let targets = [OURS_ADDR, CHARON_ADDR];
    let pids = [ours_pid, charon_pid];
    let mut series = [Series::default(), Series::default()];
    println!(
        "ike: {CONNECTIONS} connections per round, {CONCURRENCY} in flight, \
         {IKE_PROPOSAL} / ESP {ESP_PROPOSAL}, {ROUNDS} rounds + 1 warm-up each"
    );
    for round in 0..=ROUNDS {
        // Alternate which responder goes first.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let r = lab
                .round(&exe, targets[k], pids[k])
                .unwrap_or_else(|| panic!("{} round {round}: initiator stopped", names[k]));
            let rate = r.established as f64 / r.secs;
            let cpu_ms = r.responder_cpu_s * 1000.0 / r.established.max(1) as f64;
            println!(
                "  {:<6} round {round}{}: {:>4} up, {} failed in {:.3} s = {:>7.1} SAs/s; \
                 responder CPU {:.3} ms/SA ({:.0}% of wall), initiator CPU {:.0}% of wall; \
                 {} deleted",
                names[k],
                if round == 0 { " (warm-up)" } else { "" },
                r.established,
                r.failed,
                r.secs,
                rate,
                cpu_ms,
                100.0 * r.responder_cpu_s / r.secs,
                100.0 * r.initiator_cpu_s / r.secs,
                r.deleted,
            );
            if k == 1 {
                let stats = lab.swanctl(&["--stats"]);
                if let Some(l) = stats.lines().find(|l| l.contains("IKE_SAs:")) {
                    println!("         charon after delete: {}", l.trim());
                }
            }
            if round > 0 {
                series[k].rate.push(rate);
                series[k].cpu_ms_per_sa.push(cpu_ms);
            }
        }
    }
    let [ours, charon] = series.map(|s| (median(s.rate), median(s.cpu_ms_per_sa)));
    let rows: Vec<Row> = [("ours", ours), ("charon", charon)]
        .into_iter()
        .map(|(name, (rate, cpu))| Row {
            name: name.into(),
            connections: CONNECTIONS,
            concurrency: CONCURRENCY,
            rounds: ROUNDS,
            sas_per_second: rate,
            responder_cpu_ms_per_sa: cpu,
            ratio_to_charon: rate / charon.0,
        })
        .collect();
    println!();
    println!(
        "{:<8} {:>12} {:>18} {:>16}",
        "responder", "SAs/s", "CPU ms/SA (resp.)", "ratio to charon"
    );
    for r in &rows {
        println!(
            "{:<8} {:>12.1} {:>18.3} {:>16.3}",
            r.name, r.sas_per_second, r.responder_cpu_ms_per_sa, r.ratio_to_charon
        );
    }
    drop(lab);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).expect("create target/bench");
    let path = dir.join("ike.json");
    let json = serde_json::to_string_pretty(&Report { results: rows }).expect("json");
    std::fs::write(&path, json).expect("write ike.json");
    println!("wrote {}", path.display());
}
