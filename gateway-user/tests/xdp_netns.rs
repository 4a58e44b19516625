//! Both XDP programs attached natively to veth interfaces in namespaces this
//! test creates (and removes, even on panic): frames are sent through the
//! links from a peer namespace with an AF_PACKET socket and the programs'
//! counters are read back. Also checks the loader's attach modes, pinning
//! and clean detach.

use std::{
    ffi::CString,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use gateway_common::{
    map_names, program_names, Direction, DropReason, SaInValue, TunnelValue, FAMILY_V4, TUNNEL_UP,
};
use gateway_config::{Config, XdpMode};
use gateway_user::dataplane::{
    mtu::{lan_config, LanReply},
    packet::*,
    xdp::{self, XdpDataplane, XdpError},
};

const WAN_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x01, 0x01];
const WANP_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x01, 0x02];
const LAN_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x02, 0x01];
const LANP_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x02, 0x02];
const GW_WAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const PEER_WAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const GW_WAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const VPC_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const SPI: u32 = 0x0c0f_fee0;

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn output(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces, `gw` and `peer`, joined by two single-queue veth pairs:
/// gw:wan0 <-> peer:wanp and gw:lan0 <-> peer:lanp. Deleted on drop.
struct Lab {
    gw: String,
    peer: String,
}

impl Lab {
    /// `tag` keeps the names of tests running in parallel apart.
    fn new(tag: &str) -> Self {
        let pid = std::process::id();
        let lab = Lab {
            gw: format!("s2s-xdp-{pid}-{tag}-gw"),
            peer: format!("s2s-xdp-{pid}-{tag}-peer"),
        };
        let (gw, peer) = (lab.gw.as_str(), lab.peer.as_str());
        run(&["ip", "netns", "add", gw]);
        run(&["ip", "netns", "add", peer]);
        for (name, mac, pname, pmac) in [
            ("wan0", WAN_MAC, "wanp", WANP_MAC),
            ("lan0", LAN_MAC, "lanp", LANP_MAC),
        ] {
            let (mac, pmac) = (fmt_mac(mac), fmt_mac(pmac));
            run(&[
                "ip",
                "-n",
                gw,
                "link",
                "add",
                name,
                "address",
                &mac,
                "numtxqueues",
                "1",
                "numrxqueues",
                "1",
                "type",
                "veth",
                "peer",
                "name",
                pname,
                "address",
                &pmac,
                "netns",
                peer,
                "numtxqueues",
                "1",
                "numrxqueues",
                "1",
            ]);
            run(&["ip", "-n", gw, "link", "set", name, "up"]);
            run(&["ip", "-n", peer, "link", "set", pname, "up"]);
        }
        run(&["ip", "-n", gw, "link", "set", "lo", "up"]);
        run(&["ip", "-n", gw, "addr", "add", "192.0.2.1/24", "dev", "wan0"]);
        run(&[
            "ip",
            "-n",
            gw,
            "addr",
            "add",
            "198.51.100.1/24",
            "dev",
            "lan0",
        ]);
        run(&[
            "ip",
            "-n",
            peer,
            "addr",
            "add",
            "192.0.2.2/24",
            "dev",
            "wanp",
        ]);
        run(&[
            "ip",
            "-n",
            peer,
            "addr",
            "add",
            "198.51.100.10/24",
            "dev",
            "lanp",
        ]);
        lab
    }

    /// Moves the calling thread into namespace `ns` (for good: call it on
    /// a dedicated thread).
    fn enter(ns: &str) {
        let path = format!("/run/netns/{ns}");
        let c = CString::new(path.clone()).expect("no NUL");
        // SAFETY: plain syscalls on a path we own; the fd is closed below.
        unsafe {
            let fd = libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            assert!(fd >= 0, "open {path}: {}", std::io::Error::last_os_error());
            let rc = libc::setns(fd, libc::CLONE_NEWNET);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            assert_eq!(rc, 0, "setns {path}: {err}");
        }
    }

    /// Runs `f` on a thread that has entered namespace `ns`.
    fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = ns.to_owned();
        thread::spawn(move || {
            Lab::enter(&ns);
            f()
        })
        .join()
        .expect("namespace thread panicked")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.gw, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A private bpffs mounted on a temporary directory, unmounted on drop.
struct Bpffs(PathBuf);

impl Bpffs {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("s2s-xdp-{}-{tag}-bpffs", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir bpffs mount point");
        run(&["mount", "-t", "bpf", "bpf", dir.to_str().expect("utf-8")]);
        Bpffs(dir)
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn config(pin_dir: &Path, mode: &str) -> Config {
    let text = format!(
        "[gateway]\nbpf_pin_dir = {:?}\n[interfaces]\nwan = \"wan0\"\nlan = \"lan0\"\nxdp_mode = \"{mode}\"\n",
        pin_dir.to_str().expect("utf-8")
    );
    Config::parse(&text).expect("test config")
}

/// Sends raw frames out of `ifname` in namespace `ns`.
fn send(ns: &str, ifname: &'static str, frames: Vec<Vec<u8>>) {
    Lab::in_ns(ns, move || {
        let idx = gateway_user::dataplane::xdp::ifindex(ifname).expect("interface");
        // SAFETY: an AF_PACKET socket used for sendto only, closed below.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            for f in &frames {
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = u16::from_be_bytes([f[12], f[13]]).to_be();
                sll.sll_ifindex = idx as i32;
                sll.sll_halen = 6;
                sll.sll_addr[..6].copy_from_slice(&f[..6]);
                let n = libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(
                    n,
                    f.len() as isize,
                    "sendto: {}",
                    std::io::Error::last_os_error()
                );
            }
            libc::close(fd);
        }
    });
}

/// Polls `read` until it returns `want` (bounded: 3 s), then returns the
/// last value for the caller's assertion.
fn wait_for<T: PartialEq + Copy>(want: T, mut read: impl FnMut() -> T) -> T {
    let start = Instant::now();
    loop {
        let v = read();
        if v == want || start.elapsed() > Duration::from_secs(3) {
            return v;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn both_programs_native_on_veth_count_traffic() {
    let lab = Lab::new("cnt");
    let bpffs = Bpffs::new("cnt");
    let pin_dir = bpffs.0.join("s2s-gateway");
    let cfg = config(&pin_dir, "native");
    let mut dp = Lab::in_ns(&lab.gw, move || XdpDataplane::load(&cfg))
        .unwrap_or_else(|e| panic!("load + attach: {e}"));

    // Attached natively, and the kernel agrees.
    let described = dp.describe();
    assert!(
        described.contains("wan_ingress attached to wan0")
            && described.contains("lan_ingress attached to lan0"),
        "{described}"
    );
    assert!(
        dp.attachments().iter().all(|a| a.mode == "native"),
        "{described}"
    );
    for ifname in ["wan0", "lan0"] {
        let link = output(&["ip", "-n", &lab.gw, "-d", "link", "show", ifname]);
        assert!(link.contains("prog/xdp"), "{ifname}: {link}");
        assert!(
            !link.contains("xdpgeneric"),
            "{ifname} in generic mode: {link}"
        );
    }
    for name in map_names::ALL {
        assert!(pin_dir.join(name).exists(), "{name} not pinned");
    }

    // The agent's view: one tunnel with one inbound SA and one route.
    dp.set_local_addrs(&[IpAddr::V4(GW_WAN), IpAddr::V6(GW_WAN6)])
        .expect("LOCAL_ADDRS");
    dp.install_sa_in(
        SPI,
        SaInValue {
            tunnel_id: 1,
            sa_index: 4,
            replay_right_edge: 0,
            replay_window: 64,
            flags: 0,
        },
    )
    .expect("SA_IN");
    let mut local = [0; 16];
    local[..4].copy_from_slice(&GW_WAN.octets());
    let mut remote = [0; 16];
    remote[..4].copy_from_slice(&PEER_WAN.octets());
    dp.set_tunnel(
        1,
        TunnelValue {
            state: TUNNEL_UP,
            family: FAMILY_V4,
            local,
            remote,
            ..TunnelValue::default()
        },
    )
    .expect("TUNNELS");
    dp.add_route_v4(Ipv4Addr::new(203, 0, 113, 0), 24, 1)
        .expect("ROUTES_V4");

    // WAN: 10 ESP of the SA, 3 of an unknown SPI, 2 IKE, 1 ARP.
    let wan = |payload: Vec<u8>| ethernet_to(WAN_MAC, WANP_MAC, ETH_P_IP, None, &payload);
    let mut frames = Vec::new();
    let mut esp_bytes = 0u64;
    for seq in 1..=10 {
        let f = wan(Ipv4::new(PEER_WAN, GW_WAN, IPPROTO_ESP).build(&esp(SPI, seq, &esp_body(100))));
        esp_bytes += f.len() as u64;
        frames.push(f);
    }
    for seq in 1..=3 {
        frames.push(wan(Ipv4::new(PEER_WAN, GW_WAN, IPPROTO_ESP).build(&esp(
            0xbad,
            seq,
            &esp_body(100),
        ))));
    }
    for _ in 0..2 {
        frames.push(wan(Ipv4::new(PEER_WAN, GW_WAN, IPPROTO_UDP).build(&udp(
            500,
            500,
            &[0x11; 28],
        ))));
    }
    frames.push(ethernet_to(
        WAN_MAC,
        WANP_MAC,
        ETH_P_ARP,
        None,
        &arp_request(PEER_WAN, GW_WAN),
    ));
    send(&lab.peer, "wanp", frames);

    // LAN: 5 to a routed prefix, 2 to an unrouted one.
    let lan = |dst: Ipv4Addr| {
        ethernet_to(
            LAN_MAC,
            LANP_MAC,
            ETH_P_IP,
            None,
            &Ipv4::new(VPC_HOST, dst, IPPROTO_UDP).build(&udp(1000, 2000, &[0; 64])),
        )
    };
    let mut frames: Vec<Vec<u8>> = (0..5)
        .map(|_| lan(Ipv4Addr::new(203, 0, 113, 10)))
        .collect();
    let lan_bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    frames.extend((0..2).map(|_| lan(Ipv4Addr::new(198, 51, 100, 99))));
    send(&lab.peer, "lanp", frames);

    let inbound = wait_for(10, || {
        dp.tunnel_stats(1, Direction::Inbound)
            .expect("STATS")
            .packets
    });
    assert_eq!(inbound, 10, "ESP frames steered on wan0");
    let s = dp.tunnel_stats(1, Direction::Inbound).expect("STATS");
    assert_eq!(
        (s.bytes, s.no_socket),
        (esp_bytes, 10),
        "no AF_XDP socket: passed"
    );
    let unknown = wait_for(3, || dp.drop_count(DropReason::UnknownSpi).expect("DROPS"));
    assert_eq!(unknown, 3, "unknown SPI drops");
    let outbound = wait_for(5, || {
        dp.tunnel_stats(1, Direction::Outbound)
            .expect("STATS")
            .packets
    });
    assert_eq!(outbound, 5, "LAN frames steered on lan0");
    assert_eq!(
        dp.tunnel_stats(1, Direction::Outbound)
            .expect("STATS")
            .bytes,
        lan_bytes
    );
    let total_drops: u64 = dp.drops().expect("DROPS").iter().map(|(_, n)| n).sum();
    assert_eq!(total_drops, 3, "only the unknown SPIs are dropped");

    // Detach on drop: programs gone from the links, pins removed.
    drop(dp);
    for ifname in ["wan0", "lan0"] {
        let link = output(&["ip", "-n", &lab.gw, "-d", "link", "show", ifname]);
        assert!(!link.contains("prog/xdp"), "{ifname} still has XDP: {link}");
    }
    for name in map_names::ALL {
        assert!(!pin_dir.join(name).exists(), "{name} still pinned");
    }
    drop(bpffs);
    drop(lab);
    let left = output(&["ip", "netns", "list"]);
    assert!(
        !left.contains(&format!("s2s-xdp-{}-cnt", std::process::id())),
        "namespaces left behind: {left}"
    );
}

/// A DF ping too big for its tunnel, sent by the LAN host's own stack over
/// veth, is answered by `lan_ingress` with the ICMP error and the host's
/// stack takes it: ping prints the error, then knows the path MTU. The
/// reply leaves the way the daemon picks for a veth LAN (a redirect): with
/// `XDP_TX` veth leaves the frame in the host end's ring and the host never
/// sees it. Both families.
#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn too_big_error_reaches_the_lan_host_over_veth() {
    const MTU: u32 = 1400;
    let lab = Lab::new("pmtu");
    let bpffs = Bpffs::new("pmtu");
    let (gw, peer) = (lab.gw.clone(), lab.peer.clone());
    for (ns, dev, addr) in [
        (&gw, "lan0", "2001:db8:100::1/64"),
        (&peer, "lanp", "2001:db8:100::10/64"),
    ] {
        run(&["ip", "-n", ns, "addr", "add", addr, "dev", dev, "nodad"]);
    }
    run(&[
        "ip",
        "-n",
        &peer,
        "route",
        "add",
        "203.0.113.0/24",
        "via",
        "198.51.100.1",
    ]);
    run(&[
        "ip",
        "-n",
        &peer,
        "-6",
        "route",
        "add",
        "2001:db8:200::/48",
        "via",
        "2001:db8:100::1",
    ]);
    // The host end runs NAPI, as veth needs to take XDP frames at all (the
    // lab does the same); the gateway's namespace is left as it is.
    run(&[
        "ip", "netns", "exec", &peer, "ethtool", "-K", "lanp", "gro", "on",
    ]);

    let cfg = config(&bpffs.0.join("s2s-gateway"), "native");
    let (dp, driver) = Lab::in_ns(&gw, move || {
        (
            XdpDataplane::load(&cfg),
            xdp::driver_name("lan0").expect("ethtool driver info"),
        )
    });
    let mut dp = dp.unwrap_or_else(|e| panic!("load + attach: {e}"));
    assert_eq!(driver, "veth");
    let reply = LanReply::for_driver(&driver);
    assert_eq!(reply, LanReply::Redirect);
    dp.set_tunnel(
        1,
        TunnelValue {
            state: TUNNEL_UP,
            family: FAMILY_V4,
            inner_mtu: MTU,
            ..TunnelValue::default()
        },
    )
    .expect("TUNNELS");
    dp.add_route_v4(Ipv4Addr::new(203, 0, 113, 0), 24, 1)
        .expect("ROUTES_V4");
    dp.add_route_v6("2001:db8:200::".parse().expect("v6"), 48, 1)
        .expect("ROUTES_V6");
    dp.set_lan_config(lan_config(
        Some(Ipv4Addr::new(198, 51, 100, 1)),
        Some("2001:db8:100::1".parse().expect("v6")),
        100,
        20,
        reply,
    ))
    .expect("LAN_CONFIG");

    // 1500-byte IP packets with DF: (family, ICMP payload, target).
    for (fam, payload, target) in [
        ("-4", "1472", "203.0.113.10"),
        ("-6", "1452", "2001:db8:200::10"),
    ] {
        let ping = || {
            let out = Command::new("ip")
                .args(["netns", "exec", &peer, "ping", fam, "-M", "do", "-c", "1"])
                .args(["-W", "2", "-s", payload, target])
                .output()
                .expect("ping");
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        // "Frag needed and DF set (mtu = 1400)", "Packet too big: mtu=1400".
        let first = ping();
        let mtu = |t: &str| {
            t.split("mtu")
                .nth(1)
                .map(|r| r.trim_start_matches([' ', '=', ':']))
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|d| d.parse::<u32>().ok())
        };
        assert!(
            first.contains("From") && mtu(&first) == Some(MTU),
            "{target}: no ICMP error from the gateway with mtu {MTU}: {first}"
        );
        // The host's stack took it: it knows the path MTU now.
        let second = ping();
        assert!(
            second.contains("message too long") && mtu(&second) == Some(MTU),
            "{target}: the host did not learn the path MTU: {second}"
        );
    }
    assert_eq!(
        dp.drop_count(DropReason::PacketTooBig).expect("DROPS"),
        2,
        "one error per family"
    );
    drop(dp);
    drop(bpffs);
    drop(lab);
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn native_unsupported_is_one_clear_error_and_fallback_warns() {
    let lab = Lab::new("mode");
    let res = Lab::in_ns(&lab.gw, || {
        let mut dp = XdpDataplane::load_unattached().expect("load");
        // Loopback has no native XDP support.
        let native = dp.attach(program_names::XDP_PASS, "lo", XdpMode::Native);
        let fallback = dp.attach(program_names::XDP_PASS, "lo", XdpMode::NativeOrGeneric);
        let missing = dp.attach(program_names::XDP_PASS, "nope0", XdpMode::Native);
        (
            native.map_err(|e| {
                (
                    matches!(e, XdpError::NativeUnsupported { .. }),
                    e.to_string(),
                )
            }),
            fallback.map(|()| dp.describe()).map_err(|e| e.to_string()),
            missing.map_err(|e| e.to_string()),
        )
    });
    let (native, fallback, missing) = res;
    let (is_native_err, msg) = native.expect_err("native XDP on lo must fail");
    assert!(is_native_err, "wrong error: {msg}");
    assert!(!msg.contains('\n') && msg.contains("\"lo\""), "{msg}");
    let described = fallback.expect("generic fallback");
    assert!(
        described.contains("xdp_pass attached to lo") && described.contains("generic mode"),
        "{described}"
    );
    let missing = missing.expect_err("missing interface");
    assert_eq!(missing, "interface \"nope0\" does not exist");
}

/// An anonymous page-aligned mapping for a UMEM, unmapped on drop.
struct UmemArea {
    ptr: *mut u8,
    len: usize,
}

impl UmemArea {
    fn new(len: usize) -> Self {
        // SAFETY: anonymous private mapping, checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(
            ptr,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        UmemArea {
            ptr: ptr.cast(),
            len,
        }
    }

    /// Bytes `[off, off + len)` of the area, if inside it.
    fn bytes(&self, off: u64, len: usize) -> Option<Vec<u8>> {
        let off = usize::try_from(off).ok()?;
        if off.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: in bounds (checked); the kernel has handed this chunk to
        // us through the RX ring, so it is not written concurrently.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.add(off), len) }.to_vec())
    }
}

impl Drop for UmemArea {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(), unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The real fast path: an AF_XDP socket (copy mode, veth has no zero-copy)
/// bound to wan0's only queue, registered in XSKS by this process, receives
/// the ESP frames `wan_ingress` redirects, with our metadata in front.
#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn af_xdp_socket_receives_steered_esp_with_metadata() {
    use std::num::NonZeroU32;
    use xdpilone::{IfInfo, Socket, SocketConfig, Umem, UmemConfig};

    const FRAMES: u32 = 64;
    const FRAME_SIZE: u32 = 4096;
    const XDP_COPY: u16 = 1 << 1;

    let lab = Lab::new("xsk");
    let bpffs = Bpffs::new("xsk");
    let cfg = config(&bpffs.0.join("s2s-gateway"), "native");
    let mut dp = Lab::in_ns(&lab.gw, move || XdpDataplane::load(&cfg))
        .unwrap_or_else(|e| panic!("load + attach: {e}"));
    dp.set_local_addrs(&[IpAddr::V4(GW_WAN)])
        .expect("LOCAL_ADDRS");
    dp.install_sa_in(
        SPI,
        SaInValue {
            tunnel_id: 2,
            sa_index: 7,
            replay_right_edge: 0,
            replay_window: 64,
            flags: 0,
        },
    )
    .expect("SA_IN");
    let sent: Vec<Vec<u8>> = (1..=5)
        .map(|seq| {
            ethernet_to(
                WAN_MAC,
                WANP_MAC,
                ETH_P_IP,
                None,
                &Ipv4::new(PEER_WAN, GW_WAN, IPPROTO_ESP).build(&esp(SPI, seq, &esp_body(80))),
            )
        })
        .collect();

    let peer = lab.peer.clone();
    let gw = lab.gw.clone();
    let to_send = sent.clone();
    let received: Vec<(Vec<u8>, Vec<u8>)> = thread::scope(|s| {
        s.spawn(|| {
            Lab::enter(&gw);
            let area = UmemArea::new((FRAMES * FRAME_SIZE) as usize);
            let mem = std::ptr::NonNull::slice_from_raw_parts(
                std::ptr::NonNull::new(area.ptr).expect("mmap is non-null"),
                area.len,
            );
            let umem_cfg = UmemConfig {
                fill_size: FRAMES,
                complete_size: FRAMES,
                frame_size: FRAME_SIZE,
                headroom: 0,
                flags: 0,
            };
            // SAFETY: `area` is page-aligned, FRAMES * FRAME_SIZE long and
            // outlives the UMEM (dropped after it, at the end of the scope).
            let umem = unsafe { Umem::new(umem_cfg, mem) }.expect("UMEM");
            let mut info = IfInfo::invalid();
            info.from_name(c"wan0").expect("wan0");
            info.set_queue(0);
            let sock = Socket::with_shared(&info, &umem).expect("XDP socket");
            let mut device = umem.fq_cq(&sock).expect("fill/completion rings");
            let user = umem
                .rx_tx(
                    &sock,
                    &SocketConfig {
                        rx_size: NonZeroU32::new(FRAMES),
                        tx_size: None,
                        bind_flags: XDP_COPY,
                    },
                )
                .expect("RX ring");
            let mut rx = user.map_rx().expect("map RX ring");
            umem.bind(&user).expect("bind wan0 queue 0 (copy mode)");
            {
                let mut fill = device.fill(FRAMES);
                let n = fill.insert((0..FRAMES).map(|i| u64::from(i * FRAME_SIZE)));
                assert_eq!(n, FRAMES, "fill ring takes every frame");
                fill.commit();
            }
            dp.set_xsk(0, sock.as_raw_fd()).expect("XSKS");

            let frames = to_send.clone();
            let peer = peer.clone();
            thread::spawn(move || send(&peer, "wanp", frames))
                .join()
                .expect("sender");

            let mut got = Vec::new();
            let start = Instant::now();
            while got.len() < to_send.len() && start.elapsed() < Duration::from_secs(3) {
                let mut batch = rx.receive(FRAMES);
                while let Some(desc) = batch.read() {
                    // The metadata, then the frame as it was sent.
                    let meta_len = size_of::<gateway_common::XdpMeta>();
                    let all = area
                        .bytes(desc.addr, desc.len as usize)
                        .expect("frame in UMEM");
                    assert!(all.len() >= meta_len, "{} bytes", all.len());
                    let (meta, frame) = all.split_at(meta_len);
                    got.push((meta.to_vec(), frame.to_vec()));
                }
                batch.release();
                drop(batch);
                thread::sleep(Duration::from_millis(10));
            }
            dp.unset_xsk(0).expect("XSKS unset");
            drop(rx);
            drop(user);
            drop(device);
            drop(sock);
            drop(umem);
            drop(area);
            got
        })
        .join()
        .expect("AF_XDP thread panicked")
    });

    assert_eq!(
        received.len(),
        sent.len(),
        "frames delivered to the AF_XDP socket"
    );
    for ((meta, frame), want) in received.iter().zip(&sent) {
        assert_eq!(frame, want, "frame bytes through AF_XDP");
        let meta = gateway_common::XdpMeta::from_bytes(meta).expect("16 bytes");
        assert_eq!(
            meta,
            gateway_common::XdpMeta {
                magic: gateway_common::XDP_META_MAGIC,
                tunnel_id: 2,
                sa_index: 7,
                direction: Direction::Inbound as u32,
            },
            "metadata in front of the frame"
        );
    }
    let s = dp.tunnel_stats(2, Direction::Inbound).expect("STATS");
    assert_eq!((s.packets, s.no_socket), (5, 0), "redirected, not passed");
    drop(dp);
    drop(bpffs);
    drop(lab);
}

/// The id of the XDP program attached to `ifname` in `ns`, if any.
fn xdp_prog_id(ns: &str, ifname: &str) -> Option<u32> {
    let link = output(&["ip", "-n", ns, "-d", "link", "show", ifname]);
    let (_, rest) = link.split_once("prog/xdp")?;
    let rest = rest.trim_start_matches("generic");
    rest.split_whitespace()
        .skip_while(|w| *w != "id")
        .nth(1)?
        .parse()
        .ok()
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn a_restart_keeps_the_programs_attached_and_the_next_load_replaces_them() {
    let lab = Lab::new("keep");
    let bpffs = Bpffs::new("keep");
    let pin_dir = bpffs.0.join("s2s-gateway");
    let ids = |lab: &Lab| [xdp_prog_id(&lab.gw, "wan0"), xdp_prog_id(&lab.gw, "lan0")];
    // An interface that the next config no longer names.
    run(&[
        "ip", "-n", &lab.gw, "link", "add", "old0", "type", "veth", "peer", "name", "old1",
    ]);
    run(&["ip", "-n", &lab.gw, "link", "set", "old0", "up"]);
    run(&["ip", "-n", &lab.gw, "link", "set", "old1", "up"]);
    let dir = pin_dir.clone();
    let kept = Lab::in_ns(&lab.gw, move || {
        let mut dp = XdpDataplane::load_unattached().expect("load");
        dp.pin_maps(&dir).expect("pin");
        dp.attach(program_names::XDP_PASS, "old0", XdpMode::Native)
            .expect("attach old0");
        dp.keep_attached()
    });
    assert_eq!(kept, 1);
    assert!(xdp_prog_id(&lab.gw, "old0").is_some(), "old0 detached");

    let cfg = config(&pin_dir, "native");
    let mut dp = Lab::in_ns(&lab.gw, move || XdpDataplane::load(&cfg))
        .unwrap_or_else(|e| panic!("load + attach: {e}"));
    assert_eq!(
        xdp_prog_id(&lab.gw, "old0"),
        None,
        "a kept link of an interface no longer configured stays attached"
    );
    let first = ids(&lab);
    assert!(first.iter().all(Option::is_some), "{first:?}");
    assert!(!dp.describe().contains("replaced in place"));
    // A restart: the links are pinned, the value (and its maps) dropped.
    assert_eq!(dp.keep_attached(), 2);
    drop(dp);
    assert_eq!(ids(&lab), first, "the programs did not outlive the process");
    for name in map_names::ALL {
        assert!(!pin_dir.join(name).exists(), "{name} still pinned");
    }

    // The next start replaces them in place: new programs, never detached.
    let cfg = config(&pin_dir, "native");
    let dp = Lab::in_ns(&lab.gw, move || XdpDataplane::load(&cfg))
        .unwrap_or_else(|e| panic!("load + take over: {e}"));
    let described = dp.describe();
    assert!(
        described.contains("wan_ingress attached to wan0 (ifindex")
            && described.matches("replaced in place").count() == 2,
        "{described}"
    );
    let second = ids(&lab);
    assert!(second.iter().all(Option::is_some), "{second:?}");
    assert!(
        second.iter().zip(&first).all(|(a, b)| a != b),
        "the old programs are still attached: {first:?} → {second:?}"
    );
    let pins = std::fs::read_dir(pin_dir.join("links")).map_or(0, |d| d.count());
    assert_eq!(pins, 0, "the kept links' pins were not consumed");

    // Without keep_attached (a drain, a test), dropping detaches.
    drop(dp);
    assert_eq!(ids(&lab), [None, None]);
}
