//! Interop with strongSwan 5.9.8 (charon + kernel-libipsec) in network
//! namespaces: our `UdpDriver` runs in one namespace, charon in another,
//! for every suite, both roles, IPv4 and IPv6. Checks that both sides see
//! the IKE SA and CHILD SA up and that the CHILD SA keys we derived equal
//! the ones charon logs at level 4. Needs root; run by `cargo xtask test`.
//! ESP traffic is not exercised here (the ESP engine is another crate).
//! One lab puts charon behind an nftables masquerade router whose mapping
//! changes mid-way (RFC 7296 §2.23: we must follow the NAT'd peer).
//! One negotiates extended sequence numbers (RFC 4303) or not, both ways,
//! and decrypts charon's ESP with `gateway_esp` and the keys we derived
//! (without ESN: kernel-libipsec cannot install ESN SAs).

use labkit::charon::dumped_key;
use std::fs;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway_ike::driver::{Command as DriverCommand, EspDatagram, UdpDriver};
use gateway_ike::{
    Action, ChildSaInstall, ConnectionConfig, DownReason, EspCipher, IkeCipher, Psk,
};
use tokio::sync::mpsc;

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Namespaces, charon and the temp dir; torn down on drop, even on panic.
struct Lab {
    dir: tempfile::TempDir,
    gw: String,
    cgw: String,
    /// The NAT router between the two, in `new_behind_nat` labs.
    router: Option<String>,
    charon: Option<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.charon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [Some(&self.gw), Some(&self.cgw), self.router.as_ref()]
            .into_iter()
            .flatten()
        {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Lab {
    fn new(tag: &str) -> Self {
        let pid = std::process::id();
        let lab = Self {
            dir: tempfile::tempdir().unwrap(),
            gw: format!("s2s-ike-{pid}-{tag}g"),
            cgw: format!("s2s-ike-{pid}-{tag}c"),
            router: None,
            charon: None,
        };
        run(&["ip", "netns", "add", &lab.gw]);
        run(&["ip", "netns", "add", &lab.cgw]);
        run(&[
            "ip", "link", "add", "veth-g", "netns", &lab.gw, "type", "veth", "peer", "name",
            "veth-c", "netns", &lab.cgw,
        ]);
        for (ns, dev, v4, v6) in [
            (&lab.gw, "veth-g", "192.0.2.1/24", "2001:db8::1/64"),
            (&lab.cgw, "veth-c", "192.0.2.2/24", "2001:db8::2/64"),
        ] {
            run(&["ip", "-n", ns, "addr", "add", v4, "dev", dev]);
            run(&["ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    /// gw (192.0.2.1) — router (192.0.2.254 | 198.51.100.254) — cgw
    /// (198.51.100.2): charon sits behind an nftables masquerade, so we
    /// see it as 192.0.2.254 with a source port from the NAT's range.
    fn new_behind_nat(tag: &str) -> Self {
        let pid = std::process::id();
        let router = format!("s2s-ike-{pid}-{tag}r");
        let lab = Self {
            dir: tempfile::tempdir().unwrap(),
            gw: format!("s2s-ike-{pid}-{tag}g"),
            cgw: format!("s2s-ike-{pid}-{tag}c"),
            router: Some(router.clone()),
            charon: None,
        };
        for ns in [&lab.gw, &lab.cgw, &router] {
            run(&["ip", "netns", "add", ns]);
        }
        for (ns, dev, peer) in [
            (&lab.gw, "veth-g", "veth-rg"),
            (&lab.cgw, "veth-c", "veth-rc"),
        ] {
            run(&[
                "ip", "link", "add", dev, "netns", ns, "type", "veth", "peer", "name", peer,
                "netns", &router,
            ]);
        }
        for (ns, dev, v4) in [
            (&lab.gw, "veth-g", "192.0.2.1/24"),
            (&router, "veth-rg", "192.0.2.254/24"),
            (&router, "veth-rc", "198.51.100.254/24"),
            (&lab.cgw, "veth-c", "198.51.100.2/24"),
        ] {
            run(&["ip", "-n", ns, "addr", "add", v4, "dev", dev]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // `Ours` binds both families.
        run(&[
            "ip",
            "-n",
            &lab.gw,
            "addr",
            "add",
            "2001:db8::1/64",
            "dev",
            "veth-g",
            "nodad",
        ]);
        run(&[
            "ip",
            "-n",
            &lab.cgw,
            "route",
            "add",
            "default",
            "via",
            "198.51.100.254",
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &router,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        lab.set_nat_ports("40000-40099");
        lab
    }

    /// (Re)places the router's masquerade rule, with source ports from
    /// `ports` ("lo-hi"); existing mappings live on in conntrack.
    fn set_nat_ports(&self, ports: &str) {
        let router = self.router.as_ref().expect("a NAT lab");
        let f = self.path("nat.nft");
        fs::write(
            &f,
            format!(
                "table ip s2snat {{}}\ndelete table ip s2snat\ntable ip s2snat {{\n  chain post {{\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"veth-rg\" meta l4proto udp masquerade to :{ports}\n  }}\n}}\n"
            ),
        )
        .unwrap();
        run(&[
            "ip",
            "netns",
            "exec",
            router,
            "nft",
            "-f",
            &f.display().to_string(),
        ]);
    }

    /// The NAT forgets its mappings, as after a reboot: flushes the
    /// router's conntrack table over ctnetlink (what `conntrack -F` does;
    /// the tool is not installed).
    fn flush_conntrack(&self) {
        let router = self.router.as_ref().expect("a NAT lab");
        let nsfile = fs::File::open(format!("/var/run/netns/{router}")).unwrap();
        let r = std::thread::spawn(move || -> Result<(), String> {
            // SAFETY: setns on this thread only, with a valid namespace fd.
            if unsafe { libc::setns(nsfile.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err("setns".into());
            }
            // SAFETY: plain socket call; the fd is closed below.
            let fd = unsafe {
                libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::NETLINK_NETFILTER,
                )
            };
            if fd < 0 {
                return Err("netlink socket".into());
            }
            let tv = libc::timeval {
                tv_sec: 2,
                tv_usec: 0,
            };
            // nlmsghdr + nfgenmsg: IPCTNL_MSG_CT_DELETE (2) of
            // NFNL_SUBSYS_CTNETLINK (1) without attributes flushes.
            let mut msg = [0u8; 20];
            msg[0..4].copy_from_slice(&20u32.to_ne_bytes());
            msg[4..6].copy_from_slice(&((1u16 << 8) | 2).to_ne_bytes());
            let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
            msg[6..8].copy_from_slice(&flags.to_ne_bytes());
            msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
            msg[16] = libc::AF_INET as u8;
            let mut ack = [0u8; 256];
            // SAFETY: valid fd, buffers and lengths; sockaddr_nl zeroed
            // then filled (pid 0: the kernel).
            let (sent, got) = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    std::ptr::from_ref(&tv).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                );
                let mut sa: libc::sockaddr_nl = std::mem::zeroed();
                sa.nl_family = libc::AF_NETLINK as u16;
                let sent = libc::sendto(
                    fd,
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    std::ptr::from_ref(&sa).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as u32,
                );
                let got = libc::recv(fd, ack.as_mut_ptr().cast(), ack.len(), 0);
                libc::close(fd);
                (sent, got)
            };
            if sent != 20 || got < 20 {
                return Err(format!("ctnetlink: sent {sent}, ack {got}"));
            }
            // NLMSG_ERROR (2) with error 0 is the ACK.
            let ty = u16::from_ne_bytes([ack[4], ack[5]]);
            let err = i32::from_ne_bytes([ack[16], ack[17], ack[18], ack[19]]);
            if ty != 2 || err != 0 {
                return Err(format!("ctnetlink: type {ty}, error {err}"));
            }
            Ok(())
        })
        .join()
        .expect("flush thread");
        r.expect("conntrack flush");
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    fn vici(&self) -> String {
        format!("unix://{}", self.path("charon.vici").display())
    }

    fn start_charon(&mut self) {
        self.start_charon_with("");
    }

    /// Starts charon; `extra` goes verbatim into the `charon` section.
    fn start_charon_with(&mut self, extra: &str) {
        let d = self.dir.path().display().to_string();
        fs::create_dir_all(self.path("run")).unwrap();
        fs::write(
            self.path("strongswan.conf"),
            format!(
                r#"charon {{
  load_modular = no
  load = random nonce openssl pem pkcs1 x509 revocation constraints pubkey curve25519 aes sha1 sha2 hmac gcm chapoly ccm kdf kernel-libipsec kernel-netlink socket-default vici updown
  install_routes = no
  retransmit_tries = 2
  retransmit_timeout = 1.0
  {extra}
  plugins {{
    vici {{
      socket = unix://{d}/charon.vici
    }}
  }}
  filelog {{
    charon {{
      path = {d}/charon.log
      default = 1
      ike = 4
      chd = 4
      cfg = 2
      append = no
      flush_line = yes
    }}
  }}
}}
"#
            ),
        )
        .unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.cgw,
                "sh",
                "-c",
                &format!("mount --bind {d}/run /run && exec env STRONGSWAN_CONF={d}/strongswan.conf /usr/lib/ipsec/charon"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.charon = Some(child);
        let sock = self.path("charon.vici");
        for _ in 0..100 {
            if sock.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("charon did not create its vici socket");
    }

    fn swanctl(&self, args: &[&str]) -> String {
        let vici = self.vici();
        let mut full = vec!["ip", "netns", "exec", &self.cgw, "swanctl"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--uri", &vici]);
        run(&full)
    }

    fn swanctl_status(&self, args: &[&str]) -> (bool, String) {
        let vici = self.vici();
        let out = Command::new("ip")
            .args(["netns", "exec", &self.cgw, "swanctl"])
            .args(args)
            .args(["--uri", &vici])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path("charon.log")).unwrap_or_default()
    }
}

/// Our side: the driver on a thread that entered the gateway namespace.
struct Ours {
    cmd: mpsc::Sender<DriverCommand>,
    events: std::sync::mpsc::Receiver<Action>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ours {
    fn start(ns: &str) -> Self {
        Self::start_with_esp(ns, None)
    }

    /// As `start`, and hands the ESP our NAT-T sockets receive to `esp`.
    fn start_with_esp(ns: &str, esp: Option<std::sync::mpsc::Sender<EspDatagram>>) -> Self {
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let (ev_tx, mut ev_rx) = mpsc::channel(1024);
        let (sync_tx, sync_rx) = std::sync::mpsc::channel();
        let nsfile = fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a valid namespace fd.
            let r = unsafe { libc::setns(nsfile.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let addrs: Vec<IpAddr> =
                    vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
                let sink = esp.map(|out| {
                    let (tx, mut rx) = mpsc::channel::<EspDatagram>(256);
                    tokio::spawn(async move {
                        while let Some(d) = rx.recv().await {
                            if out.send(d).is_err() {
                                return;
                            }
                        }
                    });
                    tx
                });
                let d = UdpDriver::bind_with_esp_sink(&addrs, 500, 4500, sink)
                    .await
                    .expect("bind");
                let fwd = tokio::spawn(async move {
                    while let Some(a) = ev_rx.recv().await {
                        if sync_tx.send(a).is_err() {
                            return;
                        }
                    }
                });
                d.run(cmd_rx, ev_tx).await;
                fwd.abort();
            });
        });
        Self {
            cmd: cmd_tx,
            events: sync_rx,
            thread: Some(thread),
        }
    }

    fn send(&self, c: DriverCommand) {
        self.cmd.blocking_send(c).unwrap();
    }

    /// Collects events until `done` says so, or the deadline.
    fn wait_for(&self, secs: u64, mut done: impl FnMut(&[Action]) -> bool) -> Vec<Action> {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut got = Vec::new();
        while Instant::now() < end {
            if let Ok(a) = self.events.recv_timeout(Duration::from_millis(100)) {
                got.push(a);
                if done(&got) {
                    break;
                }
            }
        }
        got
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        let (tx, _) = mpsc::channel(1);
        self.cmd = tx;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Suite {
    ike: &'static str,
    esp: &'static str,
    encr: &'static str,
    integ: &'static str,
    dh: &'static str,
}

const SUITES: &[Suite] = &[
    Suite {
        ike: "aes256gcm16-prfsha384-ecp384",
        esp: "aes256gcm16",
        encr: "aes256gcm",
        integ: "sha384",
        dh: "ecp384",
    },
    Suite {
        ike: "aes128gcm16-prfsha256-modp2048",
        esp: "aes128gcm16",
        encr: "aes128gcm",
        integ: "sha256",
        dh: "modp2048",
    },
    Suite {
        ike: "aes256gcm16-prfsha256-x25519",
        esp: "aes256gcm16",
        encr: "aes256gcm",
        integ: "sha256",
        dh: "curve25519",
    },
    Suite {
        ike: "aes256-sha256-ecp256",
        esp: "aes256-sha256",
        encr: "aes256",
        integ: "sha256",
        dh: "ecp256",
    },
    Suite {
        ike: "chacha20poly1305-prfsha256-x25519",
        esp: "chacha20poly1305",
        encr: "chacha20poly1305",
        integ: "sha256",
        dh: "curve25519",
    },
];

fn swanctl_conf(name: &str, s: &Suite, ours: &str, theirs: &str, psk: &str) -> String {
    format!(
        r#"connections {{
  {name} {{
    version = 2
    local_addrs = {theirs}
    remote_addrs = {ours}
    proposals = {ike}
    encap = yes
    dpd_delay = 1s
    local {{
      auth = psk
      id = {theirs}
    }}
    remote {{
      auth = psk
      id = {ours}
    }}
    children {{
      net {{
        local_ts = 0.0.0.0/0,::/0
        remote_ts = 0.0.0.0/0,::/0
        esp_proposals = {esp}
        start_action = none
      }}
    }}
  }}
}}
secrets {{
  ike-{name} {{
    id-a = {ours}
    id-b = {theirs}
    secret = "{psk}"
  }}
}}
"#,
        ike = s.ike,
        esp = s.esp,
    )
}

fn our_conf(
    name: &str,
    s: &Suite,
    ours: &str,
    theirs: &str,
    psk: &str,
    initiate: bool,
) -> ConnectionConfig {
    let mut c = ConnectionConfig::new(
        name,
        ours.parse().unwrap(),
        theirs.parse().unwrap(),
        Psk::new(psk.as_bytes().to_vec()),
    );
    c.ike_ciphers = vec![IkeCipher::from_api(s.encr, Some(s.integ), Some(s.dh)).unwrap()];
    let esp_integ = (!s.esp.contains("gcm") && !s.esp.contains("chacha")).then_some(s.integ);
    c.esp_ciphers = vec![EspCipher::from_api(s.encr, esp_integ, None).unwrap()];
    c.initiate = initiate;
    // kernel-libipsec only does UDP-encapsulated ESP.
    c.force_encap = true;
    c.retransmit_timeout = Duration::from_secs(1);
    c.retransmit_tries = 2;
    c
}

fn check_keys(lab: &Lab, inst: &ChildSaInstall, we_initiated: bool, ctx: &str) {
    let log = lab.log();
    let ei = dumped_key(&log, "encryption initiator key")
        .unwrap_or_else(|| panic!("{ctx}: no key in charon log"));
    let er = dumped_key(&log, "encryption responder key").unwrap();
    // Initiator-to-responder keys protect what the initiator sends.
    let (our_out, our_in) = if we_initiated { (&ei, &er) } else { (&er, &ei) };
    assert_eq!(
        &*inst.keys_out.encryption_key, our_out,
        "{ctx}: outbound encryption key"
    );
    assert_eq!(
        &*inst.keys_in.encryption_key, our_in,
        "{ctx}: inbound encryption key"
    );
    if inst.integrity.is_some() {
        let ii = dumped_key(&log, "integrity initiator key").unwrap();
        let ir = dumped_key(&log, "integrity responder key").unwrap();
        let (o, i) = if we_initiated { (&ii, &ir) } else { (&ir, &ii) };
        assert_eq!(
            &*inst.keys_out.integrity_key, o,
            "{ctx}: outbound integrity key"
        );
        assert_eq!(
            &*inst.keys_in.integrity_key, i,
            "{ctx}: inbound integrity key"
        );
    }
}

fn is_install(a: &Action) -> bool {
    matches!(a, Action::InstallChildSa(_))
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn strongswan_all_suites_both_roles_ipv4_ipv6() {
    let mut lab = Lab::new("s");
    lab.start_charon();
    let ours = Ours::start(&lab.gw);
    let psk = "interop-test-psk-0123456789";
    let mut case = 0;
    for s in SUITES {
        for (our_ip, their_ip) in [("192.0.2.1", "192.0.2.2"), ("2001:db8::1", "2001:db8::2")] {
            for we_initiate in [true, false] {
                case += 1;
                let name = format!("c{case}");
                let ctx = format!("{} {our_ip} we_initiate={we_initiate}", s.ike);
                fs::write(
                    lab.path("swanctl.conf"),
                    swanctl_conf(&name, s, our_ip, their_ip, psk),
                )
                .unwrap();
                let conf = lab.path("swanctl.conf").display().to_string();
                lab.swanctl(&["--load-all", "--file", &conf]);
                ours.send(DriverCommand::AddConnection(Box::new(our_conf(
                    &name,
                    s,
                    our_ip,
                    their_ip,
                    psk,
                    we_initiate,
                ))));
                if !we_initiate {
                    lab.swanctl(&[
                        "--initiate",
                        "--child",
                        "net",
                        "--ike",
                        &name,
                        "--timeout",
                        "10",
                    ]);
                }
                let evs = ours.wait_for(10, |e| e.iter().any(is_install));
                let inst = evs
                    .iter()
                    .find_map(|a| match a {
                        Action::InstallChildSa(i) => Some(i),
                        _ => None,
                    })
                    .unwrap_or_else(|| {
                        panic!("{ctx}: no CHILD SA on our side: {evs:?}\n{}", lab.log())
                    });
                assert!(
                    evs.iter().any(|a| matches!(a, Action::IkeSaUp { .. })),
                    "{ctx}"
                );
                assert_eq!(inst.encryption, s.encr, "{ctx}");
                let enc = inst.udp_encap.expect("UDP encapsulation");
                assert_eq!((enc.local_port, enc.remote_port), (4500, 4500), "{ctx}");
                // charon may log the SA a moment after answering.
                let mut listed = String::new();
                for _ in 0..30 {
                    listed = lab.swanctl(&["--list-sas"]);
                    if listed.contains("ESTABLISHED") && listed.contains("INSTALLED") {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                assert!(listed.contains("ESTABLISHED"), "{ctx}: {listed}");
                assert!(listed.contains("INSTALLED"), "{ctx}: {listed}");
                assert!(listed.contains("TUNNEL-in-UDP"), "{ctx}: {listed}");
                check_keys(&lab, inst, we_initiate, &ctx);
                // Tear down through our DELETE; charon must drop the SA.
                ours.send(DriverCommand::RemoveConnection(name.clone()));
                let mut gone = false;
                for _ in 0..50 {
                    if !lab.swanctl(&["--list-sas"]).contains("ESTABLISHED") {
                        gone = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                assert!(gone, "{ctx}: charon kept the IKE SA after our DELETE");
            }
        }
    }
    drop(ours);
    drop(lab);
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn strongswan_wrong_psk_fails_cleanly_both_roles() {
    let mut lab = Lab::new("w");
    lab.start_charon();
    let ours = Ours::start(&lab.gw);
    let s = &SUITES[2];
    for (i, we_initiate) in [true, false].into_iter().enumerate() {
        let name = format!("w{i}");
        fs::write(
            lab.path("swanctl.conf"),
            swanctl_conf(&name, s, "192.0.2.1", "192.0.2.2", "their-secret-psk"),
        )
        .unwrap();
        let conf = lab.path("swanctl.conf").display().to_string();
        lab.swanctl(&["--load-all", "--file", &conf]);
        ours.send(DriverCommand::AddConnection(Box::new(our_conf(
            &name,
            s,
            "192.0.2.1",
            "192.0.2.2",
            "our-secret-psk",
            we_initiate,
        ))));
        if !we_initiate {
            let (ok, _) = lab.swanctl_status(&[
                "--initiate",
                "--child",
                "net",
                "--ike",
                &name,
                "--timeout",
                "10",
            ]);
            assert!(!ok, "charon must fail to initiate with a wrong PSK");
        }
        // Never established: a failure, not an IKE SA going down.
        let evs = ours.wait_for(10, |e| {
            e.iter().any(|a| matches!(a, Action::IkeSaFailed { .. }))
        });
        assert!(!evs.iter().any(|a| matches!(a, Action::IkeSaDown { .. })));
        let down = evs.iter().find_map(|a| match a {
            Action::IkeSaFailed {
                reason, initiator, ..
            } if *initiator == we_initiate => Some(reason.clone()),
            _ => None,
        });
        let expect = if we_initiate {
            DownReason::PeerAuthenticationFailed
        } else {
            DownReason::AuthenticationFailed
        };
        assert_eq!(down, Some(expect), "{evs:?}");
        assert!(!evs.iter().any(is_install));
        for a in &evs {
            if let Action::Log { message, .. } = a {
                assert!(!message.contains("secret-psk"), "PSK in our log: {message}");
            }
        }
        let listed = lab.swanctl(&["--list-sas"]);
        assert!(!listed.contains("ESTABLISHED"), "{listed}");
        let log = lab.log();
        assert!(
            log.contains("N(AUTH_FAILED)"),
            "charon did not log an authentication failure: {}",
            log.lines()
                .filter(|l| l.contains("auth") || l.contains("AUTH"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        ours.send(DriverCommand::RemoveConnection(name));
    }
    drop(ours);
    drop(lab);
}

fn installs(evs: &[Action]) -> Vec<&ChildSaInstall> {
    evs.iter()
        .filter_map(|a| match a {
            Action::InstallChildSa(i) => Some(i),
            _ => None,
        })
        .collect()
}

/// Polls `swanctl --list-sas` until `pred` holds (bounded).
fn wait_listed(lab: &Lab, pred: impl Fn(&str) -> bool) -> String {
    let mut listed = String::new();
    for _ in 0..50 {
        listed = lab.swanctl(&["--list-sas"]);
        if pred(&listed) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    listed
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn strongswan_rekeys_both_directions_dpd_and_dead_peer() {
    let mut lab = Lab::new("r");
    lab.start_charon();
    let ours = Ours::start(&lab.gw);
    let psk = "rekey-test-psk-abcdef";
    // PFS on CHILD rekeys: ESP with a DH group on both sides.
    let s = Suite {
        ike: "aes256gcm16-prfsha384-ecp384",
        esp: "aes256gcm16-ecp256",
        encr: "aes256gcm",
        integ: "sha384",
        dh: "ecp384",
    };
    let name = "rk";
    fs::write(
        lab.path("swanctl.conf"),
        swanctl_conf(name, &s, "192.0.2.1", "192.0.2.2", psk),
    )
    .unwrap();
    let conf = lab.path("swanctl.conf").display().to_string();
    lab.swanctl(&["--load-all", "--file", &conf]);
    let mut cfg = our_conf(name, &s, "192.0.2.1", "192.0.2.2", psk, true);
    cfg.esp_ciphers = vec![EspCipher::from_api("aes256gcm", None, Some("ecp256")).unwrap()];
    cfg.dpd_interval = Some(Duration::from_secs(2));
    ours.send(DriverCommand::AddConnection(Box::new(cfg)));
    let evs = ours.wait_for(10, |e| e.iter().any(is_install));
    let first = installs(&evs)[0].spi_in;
    let listed = wait_listed(&lab, |l| l.contains("INSTALLED"));
    assert!(listed.contains("ESTABLISHED"), "{listed}");

    // 1. charon rekeys the CHILD SA (with PFS): we install the new pair
    // first, then charon deletes the old one.
    lab.swanctl(&["--rekey", "--child", "net"]);
    let evs = ours.wait_for(10, |e| {
        e.iter().any(|a| matches!(a, Action::RemoveChildSa { .. }))
    });
    let new = installs(&evs);
    assert_eq!(new.len(), 1, "{evs:?}\n{}", lab.log());
    assert_eq!(new[0].replaces_spi_in, Some(first));
    check_keys(&lab, new[0], false, "charon CHILD rekey");
    assert!(evs
        .iter()
        .any(|a| matches!(a, Action::RemoveChildSa { spi_in, .. } if *spi_in == first)));
    let second = new[0].spi_in;
    let listed = wait_listed(&lab, |l| {
        l.contains(&format!("{:08x}", second)) && l.matches("INSTALLED").count() == 1
    });
    assert!(listed.contains(&format!("out {:08x}", second)), "{listed}");

    // 2. We rekey the CHILD SA.
    ours.send(DriverCommand::RekeyChildSa {
        conn: name.into(),
        spi_in: second,
    });
    let evs = ours.wait_for(10, |e| {
        e.iter().any(|a| matches!(a, Action::RemoveChildSa { .. }))
    });
    let new = installs(&evs);
    assert_eq!(new.len(), 1, "{evs:?}");
    assert_eq!(new[0].replaces_spi_in, Some(second));
    check_keys(&lab, new[0], true, "our CHILD rekey");
    let third = new[0].spi_in;
    let listed = wait_listed(&lab, |l| {
        l.contains(&format!("out {:08x}", third)) && l.matches("INSTALLED").count() == 1
    });
    assert!(listed.contains(&format!("out {:08x}", third)), "{listed}");

    // 3. charon rekeys the IKE SA, then a CHILD rekey runs on the new one.
    let spis_before = wait_listed(&lab, |_| true);
    lab.swanctl(&["--rekey", "--ike", name]);
    std::thread::sleep(Duration::from_millis(500));
    lab.swanctl(&["--rekey", "--child", "net"]);
    let evs = ours.wait_for(10, |e| {
        e.iter().any(|a| matches!(a, Action::RemoveChildSa { .. }))
    });
    assert!(
        !evs.iter().any(|a| matches!(a, Action::IkeSaDown { .. })),
        "{evs:?}"
    );
    let new = installs(&evs);
    assert_eq!(new.len(), 1, "{evs:?}\n{}", lab.log());
    check_keys(&lab, new[0], false, "CHILD rekey after charon's IKE rekey");
    let listed = wait_listed(&lab, |l| l.matches("ESTABLISHED").count() == 1);
    assert_ne!(
        listed.lines().next(),
        spis_before.lines().next(),
        "IKE SPIs unchanged"
    );

    // 4. We rekey the IKE SA, then rekey the CHILD SA on the new one.
    ours.send(DriverCommand::RekeyIkeSa(name.into()));
    std::thread::sleep(Duration::from_millis(500));
    let fourth = new[0].spi_in;
    ours.send(DriverCommand::RekeyChildSa {
        conn: name.into(),
        spi_in: fourth,
    });
    let evs = ours.wait_for(10, |e| {
        e.iter().any(|a| matches!(a, Action::RemoveChildSa { .. }))
    });
    assert!(
        !evs.iter().any(|a| matches!(a, Action::IkeSaDown { .. })),
        "{evs:?}"
    );
    let new = installs(&evs);
    assert_eq!(new.len(), 1, "{evs:?}\n{}", lab.log());
    check_keys(&lab, new[0], true, "our CHILD rekey after our IKE rekey");
    let listed = wait_listed(&lab, |l| {
        l.matches("ESTABLISHED").count() == 1 && l.matches("INSTALLED").count() == 1
    });
    assert_eq!(listed.matches("ESTABLISHED").count(), 1, "{listed}");

    // 5. charon's DPD (dpd_delay 1s) gets answered; nothing goes down.
    std::thread::sleep(Duration::from_secs(3));
    let log = lab.log();
    assert!(
        log.contains("parsed INFORMATIONAL response"),
        "no DPD answered"
    );
    let listed = lab.swanctl(&["--list-sas"]);
    assert!(
        listed.contains("ESTABLISHED") && listed.contains("INSTALLED"),
        "{listed}"
    );

    // 6. Kill charon: our DPD (2s) and retransmissions declare it dead.
    if let Some(mut c) = lab.charon.take() {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let evs = ours.wait_for(20, |e| {
        e.iter().any(|a| matches!(a, Action::IkeSaDown { .. }))
    });
    let down = evs.iter().find_map(|a| match a {
        Action::IkeSaDown { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(down, Some(DownReason::PeerUnreachable), "{evs:?}");
    assert!(evs
        .iter()
        .any(|a| matches!(a, Action::RemoveChildSa { .. })));
    drop(ours);
    drop(lab);
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn strongswan_ike_fragmentation_both_ways() {
    let mut lab = Lab::new("f");
    // charon fragments what it sends too, so both reassemblies are tested.
    lab.start_charon_with("fragment_size = 400");
    let ours = Ours::start(&lab.gw);
    let psk = "fragmentation-psk";
    let s = Suite {
        ike: "aes256gcm16-prfsha256-modp2048",
        esp: "aes256gcm16-modp2048",
        encr: "aes256gcm",
        integ: "sha256",
        dh: "modp2048",
    };
    for (i, we_initiate) in [true, false].into_iter().enumerate() {
        let name = format!("f{i}");
        fs::write(
            lab.path("swanctl.conf"),
            swanctl_conf(&name, &s, "2001:db8::1", "2001:db8::2", psk),
        )
        .unwrap();
        let conf = lab.path("swanctl.conf").display().to_string();
        lab.swanctl(&["--load-all", "--file", &conf]);
        let mut cfg = our_conf(&name, &s, "2001:db8::1", "2001:db8::2", psk, we_initiate);
        cfg.esp_ciphers = vec![EspCipher::from_api("aes256gcm", None, Some("modp2048")).unwrap()];
        cfg.fragment_size = 400;
        ours.send(DriverCommand::AddConnection(Box::new(cfg)));
        if !we_initiate {
            lab.swanctl(&[
                "--initiate",
                "--child",
                "net",
                "--ike",
                &name,
                "--timeout",
                "10",
            ]);
        }
        let evs = ours.wait_for(10, |e| e.iter().any(is_install));
        let inst = installs(&evs);
        assert_eq!(inst.len(), 1, "{evs:?}\n{}", lab.log());
        check_keys(&lab, inst[0], we_initiate, "fragmented IKE_AUTH");
        // CREATE_CHILD_SA with a 256-byte KE, fragmented both ways.
        let spi = inst[0].spi_in;
        if we_initiate {
            ours.send(DriverCommand::RekeyChildSa {
                conn: name.clone(),
                spi_in: spi,
            });
        } else {
            lab.swanctl(&["--rekey", "--child", "net"]);
        }
        let evs = ours.wait_for(10, |e| {
            e.iter().any(|a| matches!(a, Action::RemoveChildSa { .. }))
        });
        let inst = installs(&evs);
        assert_eq!(inst.len(), 1, "{evs:?}\n{}", lab.log());
        check_keys(&lab, inst[0], we_initiate, "fragmented CREATE_CHILD_SA");
        let listed = wait_listed(&lab, |l| l.contains("INSTALLED"));
        assert!(listed.contains("ESTABLISHED"), "{listed}");
        ours.send(DriverCommand::RemoveConnection(name));
        wait_listed(&lab, |l| !l.contains("ESTABLISHED"));
    }
    let log = lab.log();
    assert!(
        log.contains("received fragment"),
        "charon never received our fragments"
    );
    assert!(
        log.contains("splitting IKE message"),
        "charon never fragmented"
    );
    drop(ours);
    drop(lab);
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn strongswan_invalid_ke_and_no_proposal_chosen_both_ways() {
    let mut lab = Lab::new("k");
    lab.start_charon();
    let ours = Ours::start(&lab.gw);
    let psk = "negotiation-psk";
    let x25519 = IkeCipher::from_api("aes256gcm", Some("sha256"), Some("curve25519")).unwrap();
    let ecp384 = IkeCipher::from_api("aes256gcm", Some("sha384"), Some("ecp384")).unwrap();
    let both = "aes256gcm16-prfsha256-x25519,aes256gcm16-prfsha384-ecp384";
    let only384 = "aes256gcm16-prfsha384-ecp384";
    // (charon's proposals, ours, we initiate, expect up)
    let cases: [(&'static str, Vec<IkeCipher>, bool, bool); 4] = [
        // charon guesses x25519, we only take ecp384: we send INVALID_KE_PAYLOAD.
        (both, vec![ecp384], false, true),
        // we guess x25519, charon only takes ecp384: it sends INVALID_KE_PAYLOAD.
        (only384, vec![x25519, ecp384], true, true),
        // Disjoint: NO_PROPOSAL_CHOSEN from us, then from charon.
        (only384, vec![x25519], false, false),
        (only384, vec![x25519], true, false),
    ];
    for (i, (theirs, mine, we_initiate, up)) in cases.into_iter().enumerate() {
        let name = format!("k{i}");
        let s = Suite {
            ike: theirs,
            esp: "aes256gcm16",
            encr: "aes256gcm",
            integ: "sha256",
            dh: "curve25519",
        };
        fs::write(
            lab.path("swanctl.conf"),
            swanctl_conf(&name, &s, "192.0.2.1", "192.0.2.2", psk),
        )
        .unwrap();
        let conf = lab.path("swanctl.conf").display().to_string();
        lab.swanctl(&["--load-all", "--file", &conf]);
        let mut cfg = our_conf(&name, &s, "192.0.2.1", "192.0.2.2", psk, we_initiate);
        cfg.ike_ciphers = mine;
        ours.send(DriverCommand::AddConnection(Box::new(cfg)));
        if !we_initiate {
            let (ok, _) = lab.swanctl_status(&[
                "--initiate",
                "--child",
                "net",
                "--ike",
                &name,
                "--timeout",
                "10",
            ]);
            assert_eq!(ok, up, "case {i}: charon initiate");
        }
        let mine = |a: &Action| match a {
            Action::InstallChildSa(c) => c.conn == name,
            Action::IkeSaFailed { conn, .. } => *conn == name,
            _ => false,
        };
        let evs = ours.wait_for(10, |e| e.iter().any(mine));
        let evs: Vec<Action> = evs
            .into_iter()
            .filter(|a| !matches!(a, Action::IkeSaFailed { conn, .. } if *conn != name))
            .collect();
        let log = lab.log();
        if up {
            assert_eq!(installs(&evs).len(), 1, "case {i}: {evs:?}");
            assert!(
                log.contains("INVALID_KE_PAYLOAD") || log.contains("N(INVAL_KE)"),
                "case {i}"
            );
            let listed = wait_listed(&lab, |l| l.contains("INSTALLED"));
            assert!(listed.contains("ECP_384"), "case {i}: {listed}");
        } else {
            let down = evs.iter().find_map(|a| match a {
                Action::IkeSaFailed { reason, .. } => Some(reason.clone()),
                _ => None,
            });
            assert_eq!(
                down,
                Some(DownReason::NoProposalChosen),
                "case {i}: {evs:?}"
            );
            assert!(
                log.contains("N(NO_PROP)"),
                "case {i}: charon did not see NO_PROPOSAL_CHOSEN"
            );
        }
        ours.send(DriverCommand::RemoveConnection(name));
        wait_listed(&lab, |l| !l.contains("ESTABLISHED"));
    }
    drop(ours);
    drop(lab);
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn strongswan_behind_a_nat_whose_mapping_changes() {
    let mut lab = Lab::new_behind_nat("n");
    lab.start_charon();
    let ours = Ours::start(&lab.gw);
    let psk = "nat-mapping-test-psk-0123";
    let s = &SUITES[0];
    let name = "nat";
    let nat_ip = "192.0.2.254";
    // charon is at 198.51.100.2; we know (and identify) it by the NAT's
    // address, as the API's customer gateway IP. Real NAT detection: no
    // forced encapsulation on either side.
    let conf = swanctl_conf(name, s, "192.0.2.1", nat_ip, psk)
        .replace(
            &format!("local_addrs = {nat_ip}"),
            "local_addrs = 198.51.100.2",
        )
        .replace("encap = yes", "encap = no");
    fs::write(lab.path("swanctl.conf"), conf).unwrap();
    let conf = lab.path("swanctl.conf").display().to_string();
    lab.swanctl(&["--load-all", "--file", &conf]);
    let mut cfg = our_conf(name, s, "192.0.2.1", nat_ip, psk, false);
    cfg.force_encap = false;
    cfg.dpd_interval = Some(Duration::from_secs(2));
    ours.send(DriverCommand::AddConnection(Box::new(cfg)));
    lab.swanctl(&[
        "--initiate",
        "--child",
        "net",
        "--ike",
        name,
        "--timeout",
        "10",
    ]);
    let evs = ours.wait_for(10, |e| e.iter().any(is_install));
    let first = installs(&evs)
        .first()
        .map(|i| (i.spi_in, i.spi_out, i.udp_encap))
        .unwrap_or_else(|| panic!("no CHILD SA: {evs:?}\n{}", lab.log()));
    let remote = evs
        .iter()
        .find_map(|a| match a {
            Action::IkeSaUp { remote, .. } => Some(*remote),
            _ => None,
        })
        .expect("IKE SA up");
    let in_range = |p: u16, lo: u16| (lo..lo + 100).contains(&p);
    assert_eq!(remote.ip().to_string(), nat_ip);
    assert!(in_range(remote.port(), 40000), "{remote}");
    let enc = first.2.expect("UDP encapsulation through the NAT");
    assert_eq!((enc.local_port, enc.remote_port), (4500, remote.port()));
    let listed = wait_listed(&lab, |l| l.contains("INSTALLED"));
    let ike_line = listed
        .lines()
        .find(|l| l.starts_with(&format!("{name}: #")))
        .unwrap_or_else(|| panic!("{listed}"))
        .to_string();

    // The NAT reboots: another port range, and its mappings are gone.
    lab.set_nat_ports("41000-41099");
    lab.flush_conntrack();
    // charon's next DPD (every second) arrives from the new port.
    let evs = ours.wait_for(15, |e| {
        e.iter()
            .any(|a| matches!(a, Action::PeerEndpointChanged { .. }))
    });
    let (old, new, spis) = evs
        .iter()
        .find_map(|a| match a {
            Action::PeerEndpointChanged {
                old, new, spis_out, ..
            } => Some((*old, *new, spis_out.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no endpoint change: {evs:?}\n{}", lab.log()));
    assert_eq!(old, remote);
    assert_eq!(new.ip(), remote.ip());
    assert!(in_range(new.port(), 41000), "{new}");
    assert_eq!(spis, vec![first.1]);
    assert!(!evs.iter().any(|a| matches!(a, Action::IkeSaDown { .. })));

    // Our own request goes to the new port and is answered: a CHILD
    // rekey, whose new SA is encapsulated to the new port.
    ours.send(DriverCommand::RekeyChildSa {
        conn: name.into(),
        spi_in: first.0,
    });
    let evs = ours.wait_for(10, |e| {
        e.iter().any(|a| matches!(a, Action::RemoveChildSa { .. }))
    });
    let new_child = installs(&evs);
    assert_eq!(new_child.len(), 1, "{evs:?}\n{}", lab.log());
    assert_eq!(new_child[0].replaces_spi_in, Some(first.0));
    assert_eq!(
        new_child[0].udp_encap.map(|e| e.remote_port),
        Some(new.port())
    );

    // DPD both ways for a few seconds more: the same IKE SA stays up on
    // both sides, nothing moves again.
    let evs = ours.wait_for(5, |_| false);
    assert!(
        !evs.iter().any(|a| matches!(
            a,
            Action::IkeSaDown { .. } | Action::PeerEndpointChanged { .. }
        )),
        "{evs:?}"
    );
    let listed = wait_listed(&lab, |l| l.contains("INSTALLED"));
    assert!(listed.contains(&ike_line), "{ike_line}\n{listed}");
    assert!(listed.contains("ESTABLISHED"), "{listed}");
    drop(ours);
    drop(lab);
}

/// charon's side of the ESN lab: a CHILD SA between 203.0.113.1 (on
/// cgw's loopback) and 198.51.100.10 (ours), with `esp` proposals.
fn esn_swanctl_conf(name: &str, esp: &str, psk: &str) -> String {
    format!(
        r#"connections {{
  {name} {{
    version = 2
    local_addrs = 192.0.2.2
    remote_addrs = 192.0.2.1
    proposals = aes256gcm16-prfsha256-x25519
    encap = yes
    local {{
      auth = psk
      id = 192.0.2.2
    }}
    remote {{
      auth = psk
      id = 192.0.2.1
    }}
    children {{
      net {{
        local_ts = 203.0.113.1/32
        remote_ts = 198.51.100.10/32
        esp_proposals = {esp}
        start_action = none
      }}
    }}
  }}
}}
secrets {{
  ike-{name} {{
    id-a = 192.0.2.1
    id-b = 192.0.2.2
    secret = "{psk}"
  }}
}}
"#
    )
}

/// We propose ESN and no-ESN (ESN first) and accept either. charon here
/// runs kernel-libipsec, whose SAs cannot do ESN ("IPsec SA: ESN not
/// supported"): it negotiates ESN but cannot install it. So, per role:
/// * charon initiates wanting ESN only: we accept ESN, and the keys we
///   derive are the ones charon logs (before its install fails);
/// * we initiate to a charon wanting ESN only: charon parses our offer of
///   both and selects ESN (its log says so); its install then fails and it
///   answers NO_PROPOSAL_CHOSEN, and we install nothing;
/// * charon without ESN (its default), both roles: we accept 32-bit
///   sequence numbers, and charon's ESP through the CHILD SA decrypts
///   with `gateway_esp` and the keys we derived.
#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn strongswan_negotiates_esn_or_not() {
    let mut lab = Lab::new("e");
    run(&[
        "ip",
        "-n",
        &lab.cgw,
        "addr",
        "add",
        "203.0.113.1/32",
        "dev",
        "lo",
    ]);
    lab.start_charon();
    let (esp_tx, esp_rx) = std::sync::mpsc::channel();
    let ours = Ours::start_with_esp(&lab.gw, Some(esp_tx));
    let psk = "interop-test-esn-psk-0123456789";
    let s = &SUITES[2];
    let cases = [
        ("aes256gcm16-esn", false),
        ("aes256gcm16-esn", true),
        ("aes256gcm16-noesn", true),
        ("aes256gcm16-noesn", false),
    ];
    for (i, (esp, we_initiate)) in cases.into_iter().enumerate() {
        let name = format!("e{i}");
        let esn = esp.ends_with("-esn");
        let ctx = format!("{esp} we_initiate={we_initiate}");
        fs::write(lab.path("swanctl.conf"), esn_swanctl_conf(&name, esp, psk)).unwrap();
        let conf = lab.path("swanctl.conf").display().to_string();
        lab.swanctl(&["--load-all", "--file", &conf]);
        ours.send(DriverCommand::AddConnection(Box::new(our_conf(
            &name,
            s,
            "192.0.2.1",
            "192.0.2.2",
            psk,
            we_initiate,
        ))));
        if !we_initiate {
            // Fails on charon's side when it wants ESN (see above).
            let _ = lab.swanctl_status(&[
                "--initiate",
                "--child",
                "net",
                "--ike",
                &name,
                "--timeout",
                "10",
            ]);
        }
        let evs = ours.wait_for(10, |e| {
            e.iter().any(|a| {
                is_install(a)
                    || matches!(a, Action::Log { message, .. } if message.contains("CHILD SA not created"))
            })
        });
        let log = lab.log();
        if esn && we_initiate {
            assert!(
                log.contains("received proposals: ESP:AES_GCM_16_256/EXT_SEQ/NO_EXT_SEQ"),
                "{ctx}: our offer as charon parsed it"
            );
            assert!(
                log.contains("selected proposal: ESP:AES_GCM_16_256/EXT_SEQ"),
                "{ctx}: charon selects ESN"
            );
            assert!(
                log.contains("ESN not supported"),
                "{ctx}: libipsec refused it"
            );
            assert!(installs(&evs).is_empty(), "{ctx}: {evs:?}");
        } else {
            let inst = installs(&evs)
                .into_iter()
                .next()
                .unwrap_or_else(|| panic!("{ctx}: no CHILD SA: {evs:?}\n{log}"));
            assert_eq!(inst.esn, esn, "{ctx}");
            check_keys(&lab, inst, we_initiate, &ctx);
            if !esn {
                let listed = wait_listed(&lab, |l| l.contains("INSTALLED"));
                assert!(listed.contains("INSTALLED"), "{ctx}: {listed}");
                check_esp_decrypts(&lab, inst, &esp_rx, &ctx);
            }
        }
        ours.send(DriverCommand::RemoveConnection(name.clone()));
        wait_listed(&lab, |l| !l.contains("ESTABLISHED"));
    }
    drop(ours);
    drop(lab);
}

/// Pings through charon's CHILD SA and decrypts the ESP it sends us with
/// `gateway_esp` and the keys of `inst`.
fn check_esp_decrypts(
    lab: &Lab,
    inst: &ChildSaInstall,
    esp_rx: &std::sync::mpsc::Receiver<EspDatagram>,
    ctx: &str,
) {
    // The charon here does not install routes: into its TUN by hand.
    run(&[
        "ip",
        "-n",
        &lab.cgw,
        "route",
        "replace",
        "198.51.100.10/32",
        "dev",
        "ipsec0",
        "src",
        "203.0.113.1",
    ]);
    while esp_rx.try_recv().is_ok() {}
    let _ = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.cgw,
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "-I",
            "203.0.113.1",
            "198.51.100.10",
        ])
        .output();
    let suite = gateway_esp::Suite::from_api_names(inst.encryption, inst.integrity).unwrap();
    let sa = gateway_esp::InboundSa::new(
        inst.spi_in,
        gateway_esp::SaCipher::new(
            suite,
            &inst.keys_in.encryption_key,
            &inst.keys_in.integrity_key,
        )
        .unwrap(),
        inst.esn,
        1024,
        gateway_esp::TrafficSelectors::any(),
    )
    .unwrap();
    let mut echoes = 0;
    let end = Instant::now() + Duration::from_secs(5);
    while echoes < 3 && Instant::now() < end {
        let Ok(d) = esp_rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let mut buf = d.esp.clone();
        let n = buf.len();
        let got = sa
            .decap_esp(&mut buf, 0..n)
            .unwrap_or_else(|e| panic!("{ctx}: charon's ESP: {e}"));
        let inner = &buf[got.inner];
        assert_eq!(&inner[12..16], &[203, 0, 113, 1], "{ctx}");
        assert_eq!(&inner[16..20], &[198, 51, 100, 10], "{ctx}");
        if inner[9] == 1 && inner[20] == 8 {
            echoes += 1;
        }
    }
    assert_eq!(
        echoes, 3,
        "{ctx}: charon's echo requests through our CHILD SA"
    );
}
