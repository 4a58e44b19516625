//! ESP interop with strongSwan 5.9.8 (kernel-libipsec, UDP-encapsulated
//! ESP): two charons in namespaces A (initiator) and B bring up a CHILD SA
//! with AES-GCM-256 or AES-256-CBC + HMAC-SHA-256-128, over an IPv4 or IPv6
//! outer network; keys and SPIs come from charon's level-4 log and
//! `swanctl --list-sas`. Checks that (1) we decapsulate the ESP
//! packets charon A sends (captured with dumpcap on B's link) to the ICMP
//! echo requests that were pinged, and (2) charon B accepts ICMP echo
//! requests that we encapsulate with the same SA and inject into A's link
//! (its CHILD SA inbound packet counter rises by exactly our valid
//! packets; a tampered one is not counted). Needs root; run by
//! `cargo xtask test`.

use labkit::charon::dumped_key;
use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway_esp::{
    InboundSa, OutboundSa, OuterHeader, SaCipher, Suite, TrafficSelectors, UdpEncap, MAX_HEADROOM,
    MAX_TAILROOM,
};

/// Stops dumpcap with SIGTERM so that it writes out what it buffered (a
/// SIGKILL can lose the last packets), then waits for it.
fn stop_capture(mut c: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

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

struct Peer {
    ns: String,
    dir: tempfile::TempDir,
    charon: Option<Child>,
}

/// Namespaces, daemons and temp dirs; torn down on drop, even on panic.
struct Lab {
    a: Peer,
    b: Peer,
    capture: Option<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in [&mut self.capture, &mut self.a.charon, &mut self.b.charon] {
            if let Some(mut c) = c.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for ns in [&self.a.ns, &self.b.ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

const A_INNER: &str = "198.51.100.1";
const B_INNER: &str = "203.0.113.1";

impl Peer {
    fn path(&self, f: &str) -> String {
        self.dir.path().join(f).display().to_string()
    }

    fn start(&mut self, conn: &str) {
        let d = self.dir.path().display().to_string();
        fs::create_dir_all(self.path("run")).unwrap();
        fs::write(
            self.path("strongswan.conf"),
            format!(
                r#"charon {{
  load_modular = no
  load = random nonce openssl pem pkcs1 x509 revocation constraints pubkey curve25519 aes sha1 sha2 hmac gcm kdf kernel-libipsec kernel-netlink socket-default vici updown
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
      append = no
      flush_line = yes
    }}
  }}
}}
"#
            ),
        )
        .unwrap();
        fs::write(self.path("swanctl.conf"), conn).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "sh",
                "-c",
                &format!("mount --bind {d}/run /run && exec env STRONGSWAN_CONF={d}/strongswan.conf /usr/lib/ipsec/charon"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.charon = Some(child);
        let sock = self.dir.path().join("charon.vici");
        let t = Instant::now();
        while !sock.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "charon in {} did not start",
                self.ns
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.swanctl(&["--load-all", "--file", &self.path("swanctl.conf")]);
    }

    fn swanctl(&self, args: &[&str]) -> String {
        let vici = format!("unix://{}", self.path("charon.vici"));
        let mut full = vec!["ip", "netns", "exec", &self.ns, "swanctl"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--uri", &vici]);
        run(&full)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path("charon.log")).unwrap_or_default()
    }
}

fn conn(local: &str, remote: &str, local_ts: &str, remote_ts: &str, esp: &str) -> String {
    format!(
        r#"connections {{
  t {{
    version = 2
    local_addrs = {local}
    remote_addrs = {remote}
    proposals = aes256gcm16-prfsha256-x25519
    encap = yes
    local {{
      auth = psk
      id = {local}
    }}
    remote {{
      auth = psk
      id = {remote}
    }}
    children {{
      net {{
        local_ts = {local_ts}/32
        remote_ts = {remote_ts}/32
        esp_proposals = {esp}
        start_action = none
      }}
    }}
  }}
}}
secrets {{
  ike-t {{
    id-a = {local}
    id-b = {remote}
    secret = "s2s-esp-interop-test-psk"
  }}
}}
"#
    )
}

/// `(in SPI, in packets)` of the CHILD SA from `swanctl --list-sas`.
fn child_in(list: &str) -> Option<(u32, u64)> {
    let l = list.lines().find(|l| l.trim_start().starts_with("in "))?;
    let mut it = l.split_whitespace();
    it.next();
    let spi = u32::from_str_radix(it.next()?.trim_end_matches(','), 16).ok()?;
    let toks: Vec<&str> = l.split_whitespace().collect();
    let p = toks.iter().position(|t| t.starts_with("packets"))?;
    Some((spi, toks[p - 1].parse().ok()?))
}

fn icmp_echo(src: &str, dst: &str, id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; 20 + 8 + 32];
    let len = p.len() as u16;
    p[0] = 0x45;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p[8] = 64;
    p[9] = 1;
    p[12..16].copy_from_slice(&src.parse::<std::net::Ipv4Addr>().unwrap().octets());
    p[16..20].copy_from_slice(&dst.parse::<std::net::Ipv4Addr>().unwrap().octets());
    let c = gateway_esp::checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20] = 8;
    p[24..26].copy_from_slice(&id.to_be_bytes());
    p[26..28].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let c = gateway_esp::checksum::checksum(&p[20..]);
    p[22..24].copy_from_slice(&c.to_be_bytes());
    p
}

/// Packets of a classic pcap file (Ethernet link type), Ethernet stripped.
fn pcap_ip_packets(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let incl = u32::from_le_bytes(data[off + 8..off + 12].try_into().unwrap()) as usize;
        let frame = &data[off + 16..(off + 16 + incl).min(data.len())];
        if frame.len() > 14 && (frame[12..14] == [0x08, 0x00] || frame[12..14] == [0x86, 0xdd]) {
            out.push(frame[14..].to_vec());
        }
        off += 16 + incl;
    }
    out
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn strongswan_aes256gcm_and_aes256_sha256_ipv4_and_ipv6_outer() {
    for (tag, v6, cbc) in [
        ("g4", false, false),
        ("g6", true, false),
        ("c4", false, true),
        ("c6", true, true),
    ] {
        scenario(tag, v6, cbc);
    }
}

fn scenario(tag: &str, v6: bool, cbc: bool) {
    let pid = std::process::id();
    let (a_outer, b_outer, plen) = if v6 {
        ("2001:db8::1", "2001:db8::2", 64)
    } else {
        ("192.0.2.1", "192.0.2.2", 24)
    };
    let (esp, suite) = if cbc {
        (
            "aes256-sha256",
            Suite::from_api_names("aes256", Some("sha256")).unwrap(),
        )
    } else {
        (
            "aes256gcm16",
            Suite::from_api_names("aes256gcm", None).unwrap(),
        )
    };
    let mut lab = Lab {
        a: Peer {
            ns: format!("s2s-esp-{pid}-{tag}a"),
            dir: tempfile::tempdir().unwrap(),
            charon: None,
        },
        b: Peer {
            ns: format!("s2s-esp-{pid}-{tag}b"),
            dir: tempfile::tempdir().unwrap(),
            charon: None,
        },
        capture: None,
    };
    run(&["ip", "netns", "add", &lab.a.ns]);
    run(&["ip", "netns", "add", &lab.b.ns]);
    run(&[
        "ip", "link", "add", "veth-a", "netns", &lab.a.ns, "type", "veth", "peer", "name",
        "veth-b", "netns", &lab.b.ns,
    ]);
    for (ns, dev, outer, inner) in [
        (&lab.a.ns, "veth-a", a_outer, A_INNER),
        (&lab.b.ns, "veth-b", b_outer, B_INNER),
    ] {
        let a = format!("{outer}/{plen}");
        let mut cmd = vec!["ip", "-n", ns, "addr", "add", &a, "dev", dev];
        if v6 {
            cmd.push("nodad");
        }
        run(&cmd);
        run(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{inner}/32"),
            "dev",
            "lo",
        ]);
        run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
    lab.a.start(&conn(a_outer, b_outer, A_INNER, B_INNER, esp));
    lab.b.start(&conn(b_outer, a_outer, B_INNER, A_INNER, esp));
    lab.a
        .swanctl(&["--initiate", "--child", "net", "--timeout", "20"]);
    let t = Instant::now();
    let (spi, _) = loop {
        if let Some(x) = child_in(&lab.b.swanctl(&["--list-sas"])) {
            break x;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "CHILD SA not up on B"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // A initiated the CHILD SA: its "initiator" keys protect A -> B, the
    // direction of B's inbound SA.
    let key = dumped_key(&lab.a.log(), "encryption initiator key").expect("key in A's log");
    assert_eq!(
        key,
        dumped_key(&lab.b.log(), "encryption initiator key").unwrap(),
        "both sides derived the same key"
    );
    assert_eq!(key.len(), suite.encr_keymat_len());
    let integ = if cbc {
        dumped_key(&lab.a.log(), "integrity initiator key").expect("integrity key")
    } else {
        Vec::new()
    };
    assert_eq!(integ.len(), suite.integ_keymat_len());

    // (1) Their encap, our decap.
    let pcap = lab.b.path("esp.pcap");
    lab.capture = Some(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.b.ns,
                "dumpcap",
                "-q",
                "-P",
                "-i",
                "veth-b",
                "-f",
                "udp port 4500",
                "-w",
                &pcap,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // dumpcap writes the pcap header once the capture is open; the echo
    // requests go out only after that.
    let t = Instant::now();
    while fs::metadata(&pcap).map_or(0, |m| m.len()) < 24 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "dumpcap did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    run(&[
        "ip", "netns", "exec", &lab.a.ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", A_INNER,
        B_INNER,
    ]);
    std::thread::sleep(Duration::from_millis(500));
    if let Some(c) = lab.capture.take() {
        stop_capture(c);
    }
    let packets = pcap_ip_packets(&fs::read(&pcap).expect("capture file"));
    let ours = InboundSa::new(
        spi,
        SaCipher::new(suite, &key, &integ).unwrap(),
        false,
        1024,
        TrafficSelectors::any(),
    )
    .unwrap();
    let mut echoes = 0;
    for p in packets {
        let mut buf = p.clone();
        let n = buf.len();
        match ours.decap(&mut buf, 0..n) {
            Ok(d) => {
                let inner = &buf[d.inner];
                assert_eq!(
                    &inner[12..16],
                    &A_INNER.parse::<std::net::Ipv4Addr>().unwrap().octets()
                );
                assert_eq!(
                    &inner[16..20],
                    &B_INNER.parse::<std::net::Ipv4Addr>().unwrap().octets()
                );
                if inner[9] == 1 && inner[20] == 8 {
                    echoes += 1;
                }
            }
            // B's replies (other SPI) and IKE are expected in the capture.
            Err(e) => assert!(
                matches!(
                    e,
                    gateway_esp::DecapError::SpiMismatch { .. }
                        | gateway_esp::DecapError::IkeMessage
                        | gateway_esp::DecapError::NatKeepalive
                ),
                "unexpected drop of a captured packet: {e}"
            ),
        }
    }
    assert_eq!(
        echoes, 3,
        "{tag}: decapsulated charon's three echo requests"
    );

    // (2) Our encap, their decap: sequence numbers well past charon A's.
    let (_, before) = child_in(&lab.b.swanctl(&["--list-sas"])).unwrap();
    let out = OutboundSa::new(
        spi,
        SaCipher::new(suite, &key, &integ).unwrap(),
        false,
        OuterHeader {
            src: a_outer.parse().unwrap(),
            dst: b_outer.parse().unwrap(),
            udp: Some(UdpEncap::default()),
            ttl: 64,
        },
    )
    .unwrap();
    out.set_last_seq(10_000);
    let mut blob = Vec::new();
    for i in 0..4u16 {
        let pkt = icmp_echo(A_INNER, B_INNER, 0x5353, i);
        let mut buf = vec![0u8; MAX_HEADROOM + pkt.len() + MAX_TAILROOM];
        buf[MAX_HEADROOM..MAX_HEADROOM + pkt.len()].copy_from_slice(&pkt);
        let e = out
            .encap(&mut buf, MAX_HEADROOM..MAX_HEADROOM + pkt.len())
            .unwrap();
        let p = &mut buf[e.packet];
        if i == 3 {
            // Negative control: a flipped ciphertext bit must be refused.
            let l = p.len();
            p[l - 20] ^= 0x01;
        }
        blob.extend_from_slice(&(p.len() as u32).to_be_bytes());
        blob.extend_from_slice(p);
    }
    let f = lab.a.path("ours.bin");
    fs::write(&f, &blob).unwrap();
    // A raw socket with IPPROTO_RAW (header included) in A sends our
    // complete outer packets.
    let family = if v6 { "AF_INET6" } else { "AF_INET" };
    let script = format!(
        "import socket,struct\nd=open('{f}','rb').read()\ns=socket.socket(socket.{family},socket.SOCK_RAW,socket.IPPROTO_RAW)\ni=0\nwhile i<len(d):\n n=struct.unpack('>I',d[i:i+4])[0]\n s.sendto(d[i+4:i+4+n],('{b_outer}',0))\n i+=4+n\n"
    );
    run(&[
        "ip",
        "netns",
        "exec",
        &lab.a.ns,
        "/usr/bin/python3",
        "-c",
        &script,
    ]);
    let t = Instant::now();
    let after = loop {
        let (_, now) = child_in(&lab.b.swanctl(&["--list-sas"])).unwrap();
        if now >= before + 3 || t.elapsed() > Duration::from_secs(5) {
            break now;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Give a wrongly counted tampered packet time to show up.
    std::thread::sleep(Duration::from_millis(300));
    let (_, settled) = child_in(&lab.b.swanctl(&["--list-sas"])).unwrap();
    assert_eq!(
        (after, settled),
        (before + 3, before + 3),
        "{tag}: charon B accepted our three valid ESP packets and not the tampered one"
    );
}
