//! Interop with BIRD 2 and FRR over a plain veth pair between two network
//! namespaces (privileged: run by `cargo xtask test`, or as root with
//! `cargo test -p gateway-bgp --test interop -- --ignored`).
//!
//! Our speaker runs on a thread that entered the "us" namespace; the peer
//! daemon runs in the "peer" namespace. Addresses are 169.254.0.0/16 and
//! fd00::/127 only. Namespaces and daemons are removed by a Drop guard, also
//! on panic. Every wait is bounded.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway_bgp::driver::{self, BgpHandle};
use gateway_bgp::message::Notification;
use gateway_bgp::{Route, RoutingPolicy, SessionConfig, SessionPolicy, State};
use ipnet::IpNet;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn run(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Output of a command, success or not (daemon queries while they start).
fn query(cmd: &[&str]) -> String {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        })
        .unwrap_or_default()
}

/// Two namespaces joined by a veth pair, our side and the peer's, plus the
/// peer daemon; all removed on drop.
struct Lab {
    us: String,
    peer: String,
    daemon: Option<Child>,
    pid_file: Option<PathBuf>,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(tag: &str) -> Self {
        let pid = std::process::id();
        let us = format!("s2s-bgp-{pid}-{tag}-us");
        let peer = format!("s2s-bgp-{pid}-{tag}-pe");
        let dir = tempfile::tempdir().unwrap();
        let lab = Self {
            us,
            peer,
            daemon: None,
            pid_file: None,
            dir,
        };
        run(&["ip", "netns", "add", &lab.us]);
        run(&["ip", "netns", "add", &lab.peer]);
        run(&[
            "ip", "link", "add", "veth-us", "netns", &lab.us, "type", "veth", "peer", "name",
            "veth-pe", "netns", &lab.peer,
        ]);
        for (ns, dev, v4, v6) in [
            (
                &lab.us,
                "veth-us",
                ["169.254.0.1/30", "169.254.0.5/30", "169.254.0.9/30"],
                "fd00::a/127",
            ),
            (
                &lab.peer,
                "veth-pe",
                ["169.254.0.2/30", "169.254.0.6/30", "169.254.0.10/30"],
                "fd00::b/127",
            ),
        ] {
            for a in v4 {
                run(&["ip", "-n", ns, "addr", "add", a, "dev", dev]);
            }
            run(&["ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn_in_peer(&mut self, args: &[&str]) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.peer]).args(args);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        self.daemon = Some(cmd.spawn().unwrap());
    }

    /// The daemon's pid, from its pid file (bgpd forks away from `ip netns exec`).
    fn daemon_pid(&self) -> Option<i32> {
        let p = self.pid_file.as_ref()?;
        fs::read_to_string(p).ok()?.trim().parse().ok()
    }

    /// Runs `body` on a thread inside our namespace, with a tokio runtime.
    fn run_in_us<F, Fut>(&self, body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let path = format!("/run/netns/{}", self.us);
        let result = std::thread::spawn(move || {
            let ns = fs::File::open(&path).unwrap();
            // SAFETY: setns(2) with a valid namespace fd; it only affects this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns into {path}");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(body());
        })
        .join();
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon_pid() {
            // SAFETY: signals to the daemon we started.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(pid, libc::SIGKILL);
            }
        }
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.us, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

macro_rules! wait_for {
    ($what:expr, $secs:expr, $cond:expr) => {{
        let deadline = Instant::now() + Duration::from_secs($secs);
        loop {
            if $cond {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "timed out ({} s) waiting for {}",
                $secs,
                $what
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }};
}

fn session(local: &str, peer: &str, peer_asn: u32) -> SessionConfig {
    let mut c = SessionConfig::new(local.parse().unwrap(), peer.parse().unwrap(), peer_asn);
    c.hold_time = 3;
    c.connect_retry = Duration::from_secs(1);
    c
}

fn policy(filter_in: &[&str], filter_out: &[&str], exported: &[&str]) -> SessionPolicy {
    SessionPolicy {
        routing_policy: Some(RoutingPolicy {
            prefix_filter_in: filter_in.iter().map(|s| net(s)).collect(),
            prefix_filter_out: filter_out.iter().map(|s| net(s)).collect(),
        }),
        route_propagation: true,
        exported: exported.iter().map(|s| net(s)).collect(),
    }
}

async fn state(h: &BgpHandle, id: u64) -> Option<State> {
    h.session_status(id).await.unwrap().map(|s| s.state)
}

async fn best(h: &BgpHandle, prefix: &str) -> Option<Route> {
    let p = net(prefix);
    h.loc_rib()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.prefix == p)
}

// ---------------------------------------------------------------- BIRD ----

fn bird_conf(log: &Path, first_high: bool, with_128: bool) -> String {
    let (c1, c2) = if first_high {
        (42200, 42050)
    } else {
        (42050, 42200)
    };
    let r128 = if with_128 {
        "route 203.0.113.128/25 blackhole;"
    } else {
        ""
    };
    format!(
        r#"
router id 10.255.0.2;
log "{log}" all;
protocol device {{ }}
protocol static st4 {{
  ipv4;
  route 203.0.113.0/24 blackhole;
  {r128}
  route 192.0.2.0/24 blackhole;
}}
protocol static st6 {{
  ipv6;
  route 2001:db8:200::/48 blackhole;
  route 2001:db8:999::/48 blackhole;
}}
template bgp peer {{
  hold time 3;
  keepalive time 1;
  connect retry time 1;
  connect delay time 1;
  error wait time 1, 2;
}}
protocol bgp us1 from peer {{
  local 169.254.0.2 as 65001;
  neighbor 169.254.0.1 as 12876;
  ipv4 {{ import all; export filter {{ bgp_community.add((12876,{c1})); accept; }}; }};
}}
protocol bgp us2 from peer {{
  local 169.254.0.6 as 65001;
  neighbor 169.254.0.5 as 12876;
  ipv4 {{ import all; export filter {{ bgp_community.add((12876,{c2})); accept; }}; }};
}}
protocol bgp us3 from peer {{
  local fd00::b as 4200000001;
  neighbor fd00::a as 12876;
  ipv6 {{ import all; export all; }};
}}
protocol bgp us4 from peer {{
  local 169.254.0.10 as 65001;
  neighbor 169.254.0.9 as 12876;
  ipv4 {{ import all; export all; }};
}}
"#,
        log = log.display()
    )
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn bird_interop() {
    let mut lab = Lab::new("bird");
    let conf = lab.path("bird.conf");
    let ctl = lab.path("bird.ctl");
    let log = lab.path("bird.log");
    let pid = lab.path("bird.pid");
    fs::write(&conf, bird_conf(&log, true, true)).unwrap();
    lab.pid_file = Some(pid.clone());
    lab.spawn_in_peer(&[
        "bird",
        "-f",
        "-c",
        conf.to_str().unwrap(),
        "-s",
        ctl.to_str().unwrap(),
        "-P",
        pid.to_str().unwrap(),
    ]);
    let ctl_s = ctl.to_str().unwrap().to_owned();
    let conf_s = conf.to_str().unwrap().to_owned();
    let birdc = {
        let peer = lab.peer.clone();
        let ctl = ctl_s.clone();
        move |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &peer, "birdc", "-s", &ctl];
            v.extend_from_slice(args);
            query(&v)
        }
    };
    let lab_ref = &lab;

    // The body needs the lab for signals; share what it needs by value.
    let peer_pid_file = pid.clone();
    let log_for_panic = log.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lab_ref.run_in_us(move || async move {
            let (h, _events) = driver::spawn();
            let in_filter = ["203.0.113.0/24", "2001:db8:200::/48"];
            let out_filter = ["198.51.100.0/24", "2001:db8:100::/48"];
            let exported = [
                "198.51.100.0/24",
                "192.0.2.128/25",
                "2001:db8:100::/64",
                "2001:db8:999:1::/64",
            ];
            h.add_session(
                1,
                session("169.254.0.1", "169.254.0.2", 65001),
                policy(&in_filter, &out_filter, &exported),
            )
            .await
            .unwrap();
            h.add_session(
                2,
                session("169.254.0.5", "169.254.0.6", 65001),
                policy(&in_filter, &out_filter, &exported),
            )
            .await
            .unwrap();
            h.add_session(
                3,
                session("fd00::a", "fd00::b", 4_200_000_001),
                policy(&in_filter, &out_filter, &exported),
            )
            .await
            .unwrap();
            let mut limited = session("169.254.0.9", "169.254.0.10", 65001);
            limited.max_prefixes = Some(1);
            h.add_session(4, limited, policy(&["0.0.0.0/0"], &[], &[]))
                .await
                .unwrap();

            // IPv4 and IPv6 (4-octet peer ASN) sessions come up.
            for id in [1, 2, 3] {
                wait_for!(
                    format!("session {id} Established"),
                    20,
                    state(&h, id).await == Some(State::Established)
                );
            }

            // Only prefixes within prefix_filter_in reach the Loc-RIB; the
            // high community makes session 1 the best for 203.0.113.0/24.
            wait_for!("routes from BIRD", 10, {
                let b = best(&h, "203.0.113.0/24").await;
                b.is_some_and(|r| r.session == 1)
                    && best(&h, "203.0.113.128/25").await.is_some()
                    && best(&h, "2001:db8:200::/48").await.is_some()
            });
            let rib = h.loc_rib().await.unwrap();
            assert!(
                rib.iter()
                    .all(|r| in_filter.iter().any(|f| net(f).contains(&r.prefix))),
                "{rib:?}"
            );
            assert_eq!(rib.len(), 3, "{rib:?}");
            let v6 = best(&h, "2001:db8:200::/48").await.unwrap();
            assert_eq!((v6.session, v6.next_hop), (3, "fd00::b".parse().unwrap()));
            let v4 = best(&h, "203.0.113.0/24").await.unwrap();
            assert_eq!(
                v4.next_hop,
                "169.254.0.2".parse::<std::net::IpAddr>().unwrap()
            );

            // BIRD got only what prefix_filter_out allows.
            wait_for!("our routes in BIRD", 10, {
                let r1 = birdc(&["show", "route", "protocol", "us1"]);
                let r3 = birdc(&["show", "route", "protocol", "us3"]);
                r1.contains("198.51.100.0/24") && r3.contains("2001:db8:100::/64")
            });
            let all = birdc(&["show", "route", "all"]);
            eprintln!("BIRD routes:\n{all}\nour rib: {rib:?}");
            assert!(!all.contains("192.0.2.128/25"), "{all}");
            assert!(!all.contains("2001:db8:999:1::/64"), "{all}");
            assert!(all.contains("12876"), "AS path with our ASN: {all}");

            // Communities swapped and 203.0.113.128/25 withdrawn by BIRD.
            fs::write(&conf_s, bird_conf(&log_for_panic, false, false)).unwrap();
            let out = birdc(&["configure"]);
            assert!(out.contains("Reconfigur"), "{out}");
            wait_for!("path via session 2 after the community change", 15, {
                best(&h, "203.0.113.0/24")
                    .await
                    .is_some_and(|r| r.session == 2)
                    && best(&h, "203.0.113.128/25").await.is_none()
            });

            // Propagation off on session 2: its routes leave the Loc-RIB,
            // session 1 takes over, BIRD loses our announcement, no reset.
            h.set_route_propagation(2, false).await.unwrap();
            wait_for!("propagation off", 10, {
                best(&h, "203.0.113.0/24")
                    .await
                    .is_some_and(|r| r.session == 1)
                    && !birdc(&["show", "route", "protocol", "us2"]).contains("198.51.100.0/24")
            });
            assert_eq!(state(&h, 2).await, Some(State::Established));
            h.set_route_propagation(2, true).await.unwrap();
            wait_for!("propagation back on", 10, {
                best(&h, "203.0.113.0/24")
                    .await
                    .is_some_and(|r| r.session == 2)
                    && birdc(&["show", "route", "protocol", "us2"]).contains("198.51.100.0/24")
            });
            assert_eq!(state(&h, 2).await, Some(State::Established));
            let protos = birdc(&["show", "protocols"]);
            assert!(
                protos
                    .lines()
                    .filter(|l| l.starts_with("us2"))
                    .all(|l| l.contains("Established")),
                "{protos}"
            );

            // Maximum prefix: BIRD sends more than the 1 prefix session 4 allows.
            wait_for!("maximum-prefix Cease seen by BIRD", 15, {
                birdc(&["show", "protocols", "all", "us4"]).contains("Maximum number of prefixes")
            });
            eprintln!("{}", birdc(&["show", "protocols", "all", "us4"]));
            assert_ne!(state(&h, 4).await, Some(State::Established));
            assert!(h.loc_rib().await.unwrap().iter().all(|r| r.session != 4));

            // A frozen peer is detected by hold-timer expiry (hold time 3 s).
            let pid: i32 = fs::read_to_string(&peer_pid_file)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            // SAFETY: SIGSTOP to the BIRD we started.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
            wait_for!("hold timer expiry", 10, {
                let s = h.session_status(1).await.unwrap().unwrap();
                s.state != State::Established && s.last_error == Some(Notification::new(4, 0))
            });
            wait_for!(
                "routes withdrawn after the peer died",
                10,
                h.loc_rib().await.unwrap().is_empty()
            );
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        })
    }));
    if let Err(p) = result {
        eprintln!(
            "bird log:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::panic::resume_unwind(p);
    }
}

/// Graceful Restart (RFC 4724) with BIRD's default (`graceful restart
/// aware`, what our generated BIRD config leaves on): our speaker goes
/// away without a NOTIFICATION, as the daemon does when it restarts, and
/// BIRD keeps our route while we are away; the restarted speaker (Restart
/// State set) re-establishes, and the route is still there after our
/// End-of-RIB. Without Graceful Restart BIRD drops the route as soon as
/// the TCP connection closes (checked: this test then fails).
#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn bird_keeps_our_routes_across_our_graceful_restart() {
    let mut lab = Lab::new("birdgr");
    let conf = lab.path("bird.conf");
    let ctl = lab.path("bird.ctl");
    let log = lab.path("bird.log");
    let pid = lab.path("bird.pid");
    fs::write(
        &conf,
        format!(
            r#"
router id 10.255.0.2;
log "{}" all;
protocol device {{ }}
protocol static st4 {{
  ipv4;
  route 203.0.113.0/24 blackhole;
}}
protocol bgp us1 {{
  local 169.254.0.2 as 65001;
  neighbor 169.254.0.1 as 12876;
  hold time 30;
  connect retry time 1;
  connect delay time 1;
  error wait time 1, 2;
  ipv4 {{ import all; export all; }};
}}
"#,
            log.display()
        ),
    )
    .unwrap();
    lab.pid_file = Some(pid.clone());
    lab.spawn_in_peer(&[
        "bird",
        "-f",
        "-c",
        conf.to_str().unwrap(),
        "-s",
        ctl.to_str().unwrap(),
        "-P",
        pid.to_str().unwrap(),
    ]);
    let birdc = {
        let peer = lab.peer.clone();
        let ctl = ctl.to_str().unwrap().to_owned();
        move |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &peer, "birdc", "-s", &ctl];
            v.extend_from_slice(args);
            query(&v)
        }
    };
    let ours = |birdc: &dyn Fn(&[&str]) -> String| {
        birdc(&["show", "route", "protocol", "us1"]).contains("198.51.100.0/24")
    };
    let mut config = session("169.254.0.1", "169.254.0.2", 65001);
    config.hold_time = 30;
    config.graceful_restart = Some(120);
    let pol = policy(
        &["203.0.113.0/24"],
        &["198.51.100.0/24"],
        &["198.51.100.0/24"],
    );
    let lab_ref = &lab;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lab_ref.run_in_us(move || async move {
            // The first daemon: its own runtime on its own thread (in our
            // namespace, inherited), dropped as a process exits: the
            // sockets close, no NOTIFICATION is sent.
            let (first_config, first_policy, first_birdc) =
                (config.clone(), pol.clone(), birdc.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let (h, _events) = driver::spawn();
                    h.add_session(1, first_config, first_policy).await.unwrap();
                    wait_for!(
                        "the first session Established",
                        20,
                        state(&h, 1).await == Some(State::Established)
                    );
                    wait_for!("our route in BIRD", 10, ours(&first_birdc));
                    let st = h.session_status(1).await.unwrap().unwrap();
                    assert!(st.graceful_restart, "Graceful Restart not negotiated");
                });
                drop(rt);
            })
            .join()
            .unwrap();
            // BIRD noticed (the connection closed) and keeps our route.
            wait_for!("BIRD to notice the session is gone", 10, {
                !birdc(&["show", "protocols", "us1"]).contains("Established")
            });
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert!(
                ours(&birdc),
                "BIRD dropped our route while we restarted:\n{}",
                birdc(&["show", "protocols", "all", "us1"])
            );
            // The restarted daemon.
            let mut again = config;
            again.restarting = true;
            let (h, _events) = driver::spawn();
            h.add_session(1, again, pol).await.unwrap();
            wait_for!(
                "the session Established again",
                20,
                state(&h, 1).await == Some(State::Established)
            );
            wait_for!(
                "BIRD's route again",
                10,
                best(&h, "203.0.113.0/24").await.is_some()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(ours(&birdc), "{}", birdc(&["show", "route", "all"]));
        })
    }));
    if let Err(p) = result {
        eprintln!(
            "bird log:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::panic::resume_unwind(p);
    }
}

// ----------------------------------------------------------------- FRR ----

fn frr_conf(dir: &Path) -> String {
    format!(
        r#"frr defaults traditional
hostname peer
log file {dir}/bgpd.log
!
route-map HIGH permit 10
 set community 12876:42200
exit
route-map LOW permit 10
 set community 12876:42050
exit
!
router bgp 4200000002
 bgp router-id 10.255.0.3
 no bgp ebgp-requires-policy
 no bgp network import-check
 no bgp default ipv4-unicast
 timers bgp 1 3
 neighbor 169.254.0.1 remote-as 12876
 neighbor 169.254.0.1 timers connect 1
 neighbor 169.254.0.5 remote-as 12876
 neighbor 169.254.0.5 timers connect 1
 neighbor fd00::a remote-as 12876
 neighbor fd00::a timers connect 1
 !
 address-family ipv4 unicast
  network 203.0.113.0/24
  network 203.0.113.128/25
  network 192.0.2.0/24
  neighbor 169.254.0.1 activate
  neighbor 169.254.0.1 route-map HIGH out
  neighbor 169.254.0.5 activate
  neighbor 169.254.0.5 route-map LOW out
 exit-address-family
 !
 address-family ipv6 unicast
  network 2001:db8:200::/48
  network 2001:db8:999::/48
  neighbor fd00::a activate
 exit-address-family
exit
"#,
        dir = dir.display()
    )
}

/// `"state":"..."` of a peer in `show bgp summary json` (whitespace removed).
fn frr_peer_state(summary: &str, peer: &str) -> Option<String> {
    let s: String = summary.chars().filter(|c| !c.is_whitespace()).collect();
    let at = s.find(&format!("\"{peer}\":{{"))?;
    let rest = &s[at..];
    let st = rest.find("\"state\":\"")? + 9;
    let end = rest[st..].find('"')?;
    Some(rest[st..st + end].to_owned())
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn frr_interop() {
    let mut lab = Lab::new("frr");
    let dir = lab.path("frr");
    fs::create_dir(&dir).unwrap();
    let conf = dir.join("bgpd.conf");
    fs::write(&conf, frr_conf(&dir)).unwrap();
    // bgpd drops to user frr: it must reach and write its directory.
    run(&["chmod", "755", lab.dir.path().to_str().unwrap()]);
    run(&["chown", "-R", "frr:frr", dir.to_str().unwrap()]);
    let pid = dir.join("bgpd.pid");
    lab.pid_file = Some(pid.clone());
    let dir_s = dir.to_str().unwrap().to_owned();
    lab.spawn_in_peer(&[
        "/usr/lib/frr/bgpd",
        "-Z",
        "-f",
        conf.to_str().unwrap(),
        "-i",
        pid.to_str().unwrap(),
        "--vty_socket",
        &dir_s,
        "-P",
        "0",
    ]);
    let vtysh = {
        let dir = dir_s.clone();
        move |cmds: &[&str]| {
            let mut v = vec!["vtysh", "--vty_socket", &dir];
            for c in cmds {
                v.push("-c");
                v.push(c);
            }
            query(&v)
        }
    };
    let log = dir.join("bgpd.log");
    let lab_ref = &lab;
    let pid_file = pid.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lab_ref.run_in_us(move || async move {
            let (h, _events) = driver::spawn();
            let in_filter = ["203.0.113.0/24", "2001:db8:200::/48"];
            let out_filter = ["198.51.100.0/24", "2001:db8:100::/48"];
            let exported = [
                "198.51.100.0/24",
                "192.0.2.128/25",
                "2001:db8:100::/64",
                "2001:db8:999:1::/64",
            ];
            let asn = 4_200_000_002;
            for (id, local, peer) in [
                (1, "169.254.0.1", "169.254.0.2"),
                (2, "169.254.0.5", "169.254.0.6"),
                (3, "fd00::a", "fd00::b"),
            ] {
                h.add_session(
                    id,
                    session(local, peer, asn),
                    policy(&in_filter, &out_filter, &exported),
                )
                .await
                .unwrap();
            }
            for id in [1, 2, 3] {
                wait_for!(
                    format!("session {id} Established"),
                    20,
                    state(&h, id).await == Some(State::Established)
                );
            }
            wait_for!("FRR sees the sessions Established", 10, {
                let s = vtysh(&["show bgp summary json"]);
                ["169.254.0.1", "169.254.0.5", "fd00::a"]
                    .iter()
                    .all(|p| frr_peer_state(&s, p).as_deref() == Some("Established"))
            });

            // Filter in, and the high community on session 1 wins.
            wait_for!("routes from FRR", 10, {
                best(&h, "203.0.113.0/24")
                    .await
                    .is_some_and(|r| r.session == 1)
                    && best(&h, "203.0.113.128/25").await.is_some()
                    && best(&h, "2001:db8:200::/48").await.is_some()
            });
            let rib = h.loc_rib().await.unwrap();
            assert_eq!(rib.len(), 3, "{rib:?}");
            let v6 = best(&h, "2001:db8:200::/48").await.unwrap();
            assert_eq!((v6.session, v6.next_hop), (3, "fd00::b".parse().unwrap()));

            // FRR got only what prefix_filter_out allows.
            wait_for!("our routes in FRR", 10, {
                vtysh(&["show bgp ipv4 unicast json"]).contains("198.51.100.0/24")
                    && vtysh(&["show bgp ipv6 unicast json"]).contains("2001:db8:100::/64")
            });
            let all = vtysh(&["show bgp ipv4 unicast json", "show bgp ipv6 unicast json"]);
            assert!(!all.contains("192.0.2.128/25"), "{all}");
            assert!(!all.contains("2001:db8:999:1::/64"), "{all}");

            // Swap the communities and withdraw 203.0.113.128/25.
            vtysh(&[
                "configure terminal",
                "router bgp 4200000002",
                "address-family ipv4 unicast",
                "no network 203.0.113.128/25",
                "neighbor 169.254.0.1 route-map LOW out",
                "neighbor 169.254.0.5 route-map HIGH out",
            ]);
            vtysh(&["clear bgp ipv4 unicast * soft out"]);
            wait_for!("path via session 2 after the community change", 15, {
                best(&h, "203.0.113.0/24")
                    .await
                    .is_some_and(|r| r.session == 2)
                    && best(&h, "203.0.113.128/25").await.is_none()
            });

            // Propagation off on both IPv4 sessions: nothing installed,
            // nothing announced, sessions stay up on both sides.
            h.set_route_propagation(1, false).await.unwrap();
            h.set_route_propagation(2, false).await.unwrap();
            wait_for!("propagation off", 10, {
                best(&h, "203.0.113.0/24").await.is_none()
                    && !vtysh(&["show bgp ipv4 unicast json"]).contains("198.51.100.0/24")
            });
            let s = vtysh(&["show bgp summary json"]);
            assert_eq!(
                frr_peer_state(&s, "169.254.0.1").as_deref(),
                Some("Established"),
                "{s}"
            );
            assert_eq!(state(&h, 1).await, Some(State::Established));
            h.set_route_propagation(1, true).await.unwrap();
            h.set_route_propagation(2, true).await.unwrap();
            wait_for!("propagation back on", 10, {
                best(&h, "203.0.113.0/24")
                    .await
                    .is_some_and(|r| r.session == 2)
                    && vtysh(&["show bgp ipv4 unicast json"]).contains("198.51.100.0/24")
            });
            assert_eq!(state(&h, 1).await, Some(State::Established));

            // Frozen bgpd: hold-timer expiry on every session.
            let pid: i32 = fs::read_to_string(&pid_file)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            // SAFETY: SIGSTOP to the bgpd we started.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
            wait_for!("hold timer expiry", 10, {
                let mut all_down = true;
                for id in [1, 2, 3] {
                    let s = h.session_status(id).await.unwrap().unwrap();
                    all_down &= s.state != State::Established
                        && s.last_error == Some(Notification::new(4, 0));
                }
                all_down
            });
            assert!(h.loc_rib().await.unwrap().is_empty());
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        })
    }));
    if let Err(p) = result {
        eprintln!(
            "bgpd log:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::panic::resume_unwind(p);
    }
}
