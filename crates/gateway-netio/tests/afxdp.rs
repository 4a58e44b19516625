//! Privileged: AF_XDP sockets on veth inside namespaces, fed by a minimal XDP
//! program written as raw BPF instructions (it prepends 8 bytes with
//! `bpf_xdp_adjust_head`, writes a marker there, as the gateway's programs
//! carry their steering metadata, and redirects every packet to the XSKMAP
//! entry of its rx queue).
//!
//! * `echo`: UDP datagrams from the peer namespace are received on the socket,
//!   turned around in place and transmitted back on the same socket; the peer's
//!   kernel UDP socket receives every echo.
//! * `forward_shared_umem`: packets received on one interface are transmitted,
//!   without a copy, on a socket of another interface that shares the UMEM.

mod common;

#[global_allocator]
static ALLOC: common::alloc_count::Counting = common::alloc_count::Counting;

use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{mac_of, NetNs};
use gateway_esp::checksum::{self, add};
use gateway_netio::afxdp::{
    xskmap, Batch, BindMode, BusyPoll, Umem, UmemConfig, XskConfig, XskSocket, XDP_PACKET_HEADROOM,
};

// ---------- a tiny BPF loader (test only) ----------

fn sys_bpf(cmd: i64, attr: &mut [u8; 128]) -> std::io::Result<i32> {
    // SAFETY: `attr` is a 128-byte zero-padded bpf_attr; the pointers it holds
    // (instructions, license, log buffer) are alive for the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(i32::try_from(rc).unwrap())
    }
}

fn put32(a: &mut [u8; 128], at: usize, v: u32) {
    a[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put64(a: &mut [u8; 128], at: usize, v: u64) {
    a[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` was just returned by bpf(2) and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn create_xskmap(entries: u32) -> OwnedFd {
    let mut a = [0u8; 128];
    put32(&mut a, 0, 17); // BPF_MAP_TYPE_XSKMAP
    put32(&mut a, 4, 4);
    put32(&mut a, 8, 4);
    put32(&mut a, 12, entries);
    owned(sys_bpf(0, &mut a).expect("BPF_MAP_CREATE xskmap"))
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = dst | (src << 4);
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    b
}

pub const META: [u8; 8] = [0x0d, 0xf0, 0xed, 0xfe, 0x04, 0x03, 0x02, 0x01];

/// Takes the program's 8-byte marker off the front of `f`: true if it was
/// there.
fn take_marker(umem: &Umem, f: &mut gateway_netio::afxdp::Frame) -> bool {
    if umem.data(f).get(..8) != Some(&META[..]) {
        return false;
    }
    let (start, end) = (f.start(), f.start() + f.len());
    umem.set_packet(f, start + 8..end).is_ok()
}

fn load_redirect_prog(map: &OwnedFd) -> OwnedFd {
    let prog = [
        insn(0xbf, 6, 1, 0, 0),                      // r6 = ctx
        insn(0xb7, 2, 0, 0, -8),                     // r2 = -8
        insn(0x85, 0, 0, 0, 44),                     // call bpf_xdp_adjust_head
        insn(0x55, 0, 0, 7, 0),                      // if r0 != 0 goto redirect
        insn(0x61, 2, 6, 0, 0),                      // r2 = ctx->data
        insn(0x61, 3, 6, 4, 0),                      // r3 = ctx->data_end
        insn(0xbf, 4, 2, 0, 0),                      // r4 = r2
        insn(0x07, 4, 0, 0, 8),                      // r4 += 8
        insn(0x2d, 4, 3, 2, 0),                      // if r4 > r3 goto redirect
        insn(0x62, 2, 0, 0, 0xfeed_f00d_u32 as i32), // *(u32 *)(data + 0) = 0xfeedf00d
        insn(0x62, 2, 0, 4, 0x0102_0304),            // *(u32 *)(data + 4) = 0x01020304
        insn(0x61, 2, 6, 16, 0),                     // redirect: r2 = ctx->rx_queue_index
        insn(0x18, 1, 1, 0, map.as_raw_fd()),        // r1 = map (ld_imm64, BPF_PSEUDO_MAP_FD)
        insn(0, 0, 0, 0, 0),
        insn(0xb7, 3, 0, 0, 2),  // r3 = XDP_PASS (action on a missing entry)
        insn(0x85, 0, 0, 0, 51), // call bpf_redirect_map
        insn(0x95, 0, 0, 0, 0),  // exit
    ];
    let code: Vec<u8> = prog.concat();
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut a = [0u8; 128];
    put32(&mut a, 0, 6); // BPF_PROG_TYPE_XDP
    put32(&mut a, 4, u32::try_from(prog.len()).unwrap());
    put64(&mut a, 8, code.as_ptr() as u64);
    put64(&mut a, 16, license.as_ptr() as u64);
    put32(&mut a, 24, 1); // log_level
    put32(&mut a, 28, u32::try_from(log.len()).unwrap());
    put64(&mut a, 32, log.as_mut_ptr() as u64);
    // expected_attach_type = BPF_XDP, as libbpf and aya load XDP programs.
    put32(&mut a, 68, 37);
    match sys_bpf(5, &mut a) {
        Ok(fd) => owned(fd),
        Err(e) => panic!("BPF_PROG_LOAD: {e}\n{}", String::from_utf8_lossy(&log)),
    }
}

/// Attach with a BPF link: detached automatically when the fd closes.
fn attach_xdp(prog: &OwnedFd, ifindex: u32) -> OwnedFd {
    let mut a = [0u8; 128];
    put32(&mut a, 0, u32::try_from(prog.as_raw_fd()).unwrap());
    put32(&mut a, 4, ifindex);
    put32(&mut a, 8, 37); // BPF_XDP
    owned(sys_bpf(28, &mut a).expect("BPF_LINK_CREATE xdp"))
}

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name}");
    i
}

// ---------- packet helpers ----------

/// Offsets of an Ethernet/IPv4/UDP packet: (ip header start, udp header start).
fn udp4(pkt: &[u8]) -> Option<(usize, usize)> {
    if pkt.len() < 42 || pkt[12..14] != [0x08, 0x00] || pkt[14] >> 4 != 4 || pkt[23] != 17 {
        return None;
    }
    let l4 = 14 + usize::from(pkt[14] & 0xf) * 4;
    (pkt.len() >= l4 + 8).then_some((14, l4))
}

/// Recompute the UDP checksum. Needed because a packet sent by the peer's
/// kernel over veth is CHECKSUM_PARTIAL (tx offload: the field holds only the
/// pseudo-header sum) and XDP sees it before anyone completed it; a real NIC
/// delivers complete checksums. (`ethtool -K <peer> tx off` would also do.)
fn fix_udp4_checksum(pkt: &mut [u8]) {
    let Some((ip, l4)) = udp4(pkt) else { return };
    let udp_len = usize::from(u16::from_be_bytes([pkt[l4 + 4], pkt[l4 + 5]]));
    let Some(end) = l4
        .checked_add(udp_len)
        .filter(|&e| e <= pkt.len() && udp_len >= 8)
    else {
        return;
    };
    pkt[l4 + 6..l4 + 8].fill(0);
    let pseudo = add(17 + udp_len as u64, &pkt[ip + 12..ip + 20]);
    let c = match checksum::finish(add(pseudo, &pkt[l4..end])) {
        0 => 0xffff,
        c => c,
    };
    pkt[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
}

/// Swap MACs, IPv4 addresses and UDP ports and complete the UDP checksum.
fn turn_around(pkt: &mut [u8]) -> bool {
    let Some((ip, l4)) = udp4(pkt) else {
        return false;
    };
    let (d, s) = pkt[..12].split_at_mut(6);
    d.swap_with_slice(s);
    let (s, d) = pkt[ip + 12..ip + 20].split_at_mut(4);
    s.swap_with_slice(d);
    let (s, d) = pkt[l4..l4 + 4].split_at_mut(2);
    s.swap_with_slice(d);
    fix_udp4_checksum(pkt);
    true
}

struct WorkerReport {
    packets: u64,
    meta_ok: u64,
    bad_start: u64,
    frames: u64,
    hot_allocs: u64,
    stats: gateway_netio::afxdp::XskStats,
}

fn umem_cfg() -> UmemConfig {
    UmemConfig {
        frame_count: 4096,
        frame_size: 4096,
        headroom: 128,
        fill_size: 1024,
        comp_size: 1024,
    }
}

fn xsk_cfg() -> XskConfig {
    XskConfig {
        rx_size: 1024,
        tx_size: 1024,
        mode: BindMode::Copy,
        ..XskConfig::default()
    }
}

/// Windowed request/response over two kernel sockets: send `window`
/// datagrams, then read the same number back; repeat to `total`. Returns
/// the number received (the caller asserts it equals `total`) and the elapsed time.
fn windowed(tx: &UdpSocket, rx: &UdpSocket, total: u32, window: u32) -> (u32, Duration) {
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let start = Instant::now();
    let mut got = 0;
    let mut buf = [0u8; 2048];
    let mut seq = 0u32;
    while seq < total {
        let n = window.min(total - seq);
        let mut expected: Vec<u32> = (seq..seq + n).collect();
        for s in seq..seq + n {
            let mut payload = [0u8; 64];
            payload[..4].copy_from_slice(&s.to_be_bytes());
            tx.send(&payload).unwrap();
        }
        for _ in 0..n {
            let Ok(len) = rx.recv(&mut buf) else {
                return (got, start.elapsed());
            };
            assert_eq!(len, 64);
            let s = u32::from_be_bytes(buf[..4].try_into().unwrap());
            let pos = expected
                .iter()
                .position(|&e| e == s)
                .expect("unexpected or duplicated sequence");
            expected.swap_remove(pos);
            got += 1;
        }
        seq += n;
    }
    (got, start.elapsed())
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn echo() {
    echo_with(None);
}

/// The same echo with preferred busy polling: the kernel holds the
/// settings, and the loop that kicks NAPI with `busy_poll_rx` when its ring
/// is empty still sees every datagram.
#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn echo_with_busy_polling() {
    echo_with(Some(BusyPoll {
        usecs: 50,
        budget: 16,
    }));
}

fn echo_with(busy_poll: Option<BusyPoll>) {
    let a = NetNs::new("xa");
    let b = NetNs::new("xb");
    a.ip(&[
        "link",
        "add",
        "va",
        "numtxqueues",
        "1",
        "numrxqueues",
        "1",
        "type",
        "veth",
        "peer",
        "name",
        "vb",
        "numtxqueues",
        "1",
        "numrxqueues",
        "1",
        "netns",
        &b.name,
    ]);
    a.ip(&["addr", "add", "192.0.2.1/24", "dev", "va"]);
    b.ip(&["addr", "add", "192.0.2.2/24", "dev", "vb"]);
    a.ip(&["link", "set", "va", "up"]);
    b.ip(&["link", "set", "vb", "up"]);
    // XDP takes every frame, ARP included: give the peer a static entry.
    let mac_a = mac_of(&a, "va");
    let mac_s = mac_a
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    b.ip(&[
        "neigh",
        "replace",
        "192.0.2.1",
        "lladdr",
        &mac_s,
        "dev",
        "vb",
        "nud",
        "permanent",
    ]);

    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let a_path = format!("/run/netns/{}", a.name);
    let stop2 = Arc::clone(&stop);
    let worker = std::thread::spawn(move || {
        common::enter(&a_path);
        let map = create_xskmap(4);
        let prog = load_redirect_prog(&map);
        let mut umem = Umem::new(umem_cfg()).unwrap();
        let total_frames = umem.free_frames();
        let cfg = XskConfig {
            busy_poll,
            ..xsk_cfg()
        };
        let mut sock = XskSocket::bind(&mut umem, "va", 0, &cfg).unwrap();
        assert_eq!(sock.queue(), 0);
        assert_eq!(sock.busy_poll_usecs().unwrap(), busy_poll.map(|b| b.usecs));
        xskmap::update(map.as_fd(), 0, sock.fd()).unwrap();
        let _link = attach_xdp(&prog, ifindex("va"));
        ready_tx.send(()).unwrap();
        let mut rx = Batch::with_capacity(64);
        let mut tx = Batch::with_capacity(64);
        let mut rep = WorkerReport {
            packets: 0,
            meta_ok: 0,
            bad_start: 0,
            frames: 0,
            hot_allocs: 0,
            stats: Default::default(),
        };
        let expected_start = (umem.config().headroom + XDP_PACKET_HEADROOM) as usize;
        let end = Instant::now() + Duration::from_secs(60);
        // After a warm-up, every iteration of the hot loop must allocate nothing.
        let mut warmed = false;
        while !stop2.load(Ordering::Relaxed) && Instant::now() < end {
            let ((), allocs) = common::alloc_count::count(|| {
                if sock.recv(&mut umem, &mut rx) == 0 {
                    sock.busy_poll_rx();
                    sock.flush(&mut umem);
                    let _ = sock.wait_readable(Duration::from_millis(10));
                    return;
                }
                for mut f in rx.drain() {
                    rep.frames += 1;
                    if f.start() != expected_start {
                        rep.bad_start += 1;
                    }
                    if take_marker(&umem, &mut f) {
                        rep.meta_ok += 1;
                    }
                    if turn_around(umem.data_mut(&f)) {
                        rep.packets += 1;
                        tx.push(f).unwrap();
                    } else {
                        umem.release(f);
                    }
                }
                while !tx.is_empty() {
                    if sock.send(&mut umem, &mut tx) == 0 {
                        sock.flush(&mut umem);
                    }
                }
            });
            if warmed {
                rep.hot_allocs += allocs;
            }
            warmed = rep.packets >= 1000;
        }
        rep.stats = sock.stats().unwrap();
        // Every frame comes back: free + fill ring (= fill_size) + in flight.
        let flush_end = Instant::now() + Duration::from_secs(2);
        while sock.tx_in_flight() > 0 && Instant::now() < flush_end {
            sock.flush(&mut umem);
        }
        assert_eq!(sock.tx_in_flight(), 0, "TX completions outstanding");
        assert_eq!(
            umem.free_frames() + umem_cfg().fill_size as usize,
            total_frames,
            "frames leaked"
        );
        let stats = sock.stats().unwrap();
        assert_eq!(
            stats.rx_invalid_descs + stats.tx_invalid_descs,
            0,
            "{stats:?}"
        );
        rep
    });
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("worker ready");
    let client = b.run(|| {
        let s = UdpSocket::bind("192.0.2.2:0").unwrap();
        s.connect("192.0.2.1:7").unwrap();
        s
    });
    const TOTAL: u32 = 20_000;
    let (got, took) = windowed(&client, &client, TOTAL, 32);
    stop.store(true, Ordering::Relaxed);
    let rep = worker.join().unwrap();
    eprintln!(
        "worker: packets {} meta_ok {} bad_start {} stats {:?}",
        rep.packets, rep.meta_ok, rep.bad_start, rep.stats
    );
    eprintln!(
        "afxdp echo: {got} round trips in {took:?} ({:.0} pkt/s each way, window 32, copy mode)",
        f64::from(got) / took.as_secs_f64()
    );
    assert_eq!(got, TOTAL, "every datagram echoed");
    assert_eq!(rep.packets, u64::from(TOTAL));
    // The program redirects every frame, so a stray one (IPv6 neighbour
    // discovery, MLD) may arrive besides the echoed datagrams: every frame
    // must carry the metadata, not just the counted ones.
    assert_eq!(
        rep.meta_ok, rep.frames,
        "the XDP program's marker in front of every frame"
    );
    assert_eq!(
        rep.bad_start, 0,
        "packets start at headroom + XDP_PACKET_HEADROOM"
    );
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn forward_shared_umem() {
    // b (192.0.2.2) --vb/va-- a --vc/vd-- c (198.51.100.2); a forwards with AF_XDP only.
    let a = NetNs::new("fa");
    let b = NetNs::new("fb");
    let c = NetNs::new("fc");
    let one = ["numtxqueues", "1", "numrxqueues", "1"];
    let mut args = vec!["link", "add", "va"];
    args.extend(one);
    args.extend(["type", "veth", "peer", "name", "vb"]);
    args.extend(one);
    args.extend(["netns", &b.name]);
    a.ip(&args);
    let mut args = vec!["link", "add", "vc"];
    args.extend(one);
    args.extend(["type", "veth", "peer", "name", "vd"]);
    args.extend(one);
    args.extend(["netns", &c.name]);
    a.ip(&args);
    a.ip(&["addr", "add", "192.0.2.1/24", "dev", "va"]);
    a.ip(&["addr", "add", "198.51.100.1/24", "dev", "vc"]);
    b.ip(&["addr", "add", "192.0.2.2/24", "dev", "vb"]);
    c.ip(&["addr", "add", "198.51.100.2/24", "dev", "vd"]);
    for (ns, dev) in [(&a, "va"), (&a, "vc"), (&b, "vb"), (&c, "vd")] {
        ns.ip(&["link", "set", dev, "up"]);
    }
    b.ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.1"]);
    c.ip(&["route", "add", "192.0.2.0/24", "via", "198.51.100.1"]);
    let hex = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    b.ip(&[
        "neigh",
        "replace",
        "192.0.2.1",
        "lladdr",
        &hex(mac_of(&a, "va")),
        "dev",
        "vb",
        "nud",
        "permanent",
    ]);
    let (mac_vc, mac_vd) = (mac_of(&a, "vc"), mac_of(&c, "vd"));

    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let a_path = format!("/run/netns/{}", a.name);
    let stop2 = Arc::clone(&stop);
    let worker = std::thread::spawn(move || {
        common::enter(&a_path);
        let map = create_xskmap(4);
        let prog = load_redirect_prog(&map);
        let mut umem = Umem::new(umem_cfg()).unwrap();
        let mut lan = XskSocket::bind(&mut umem, "va", 0, &xsk_cfg()).unwrap();
        let mut wan = XskSocket::bind(&mut umem, "vc", 0, &xsk_cfg()).unwrap();
        assert_ne!(lan.fd().as_raw_fd(), wan.fd().as_raw_fd());
        xskmap::update(map.as_fd(), 0, lan.fd()).unwrap();
        let _link = attach_xdp(&prog, ifindex("va"));
        ready_tx.send(()).unwrap();
        let mut rx = Batch::with_capacity(64);
        let mut tx = Batch::with_capacity(64);
        let mut forwarded = 0u64;
        let end = Instant::now() + Duration::from_secs(60);
        while !stop2.load(Ordering::Relaxed) && Instant::now() < end {
            if lan.recv(&mut umem, &mut rx) == 0 {
                wan.flush(&mut umem);
                let _ = lan.wait_readable(Duration::from_millis(10));
                continue;
            }
            for mut f in rx.drain() {
                assert!(take_marker(&umem, &mut f), "the program's marker");
                let pkt = umem.data_mut(&f);
                if udp4(pkt).is_some() {
                    pkt[..6].copy_from_slice(&mac_vd);
                    pkt[6..12].copy_from_slice(&mac_vc);
                    fix_udp4_checksum(pkt);
                    tx.push(f).unwrap();
                    forwarded += 1;
                } else {
                    umem.release(f);
                }
            }
            while !tx.is_empty() {
                if wan.send(&mut umem, &mut tx) == 0 {
                    wan.flush(&mut umem);
                }
            }
        }
        forwarded
    });
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("worker ready");
    let sender = b.run(|| {
        let s = UdpSocket::bind("192.0.2.2:0").unwrap();
        s.connect("198.51.100.2:9000").unwrap();
        s
    });
    let receiver = c.run(|| UdpSocket::bind("198.51.100.2:9000").unwrap());
    const TOTAL: u32 = 10_000;
    let (got, took) = windowed(&sender, &receiver, TOTAL, 32);
    stop.store(true, Ordering::Relaxed);
    let forwarded = worker.join().unwrap();
    eprintln!(
        "afxdp forward (shared UMEM, two interfaces): {got} packets in {took:?} ({:.0} pkt/s, window 32, copy mode)",
        f64::from(got) / took.as_secs_f64()
    );
    assert_eq!(got, TOTAL, "every datagram forwarded");
    assert_eq!(forwarded, u64::from(TOTAL));
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn frame_accessors_are_bounded() {
    let cfg = UmemConfig {
        frame_count: 8,
        frame_size: 2048,
        headroom: 64,
        fill_size: 8,
        comp_size: 8,
    };
    let mut umem = Umem::new(cfg).unwrap();
    assert_eq!(umem.free_frames(), 8);
    let mut f = umem.alloc().unwrap();
    assert_eq!(f.start(), 64 + 256);
    assert_eq!(f.len(), 0);
    assert_eq!(umem.headroom(&f), 320);
    assert_eq!(umem.tailroom(&f), 2048 - 320);
    // Build a packet: 100 bytes, then prepend 40 bytes of "outer header".
    umem.set_packet(&mut f, 320..420).unwrap();
    umem.data_mut(&f).fill(0xab);
    let (chunk, range) = umem.chunk_mut(&f);
    assert_eq!(chunk.len(), 2048);
    chunk[range.start - 40..range.start].fill(0xcd);
    umem.set_packet(&mut f, 280..420).unwrap();
    assert_eq!(&umem.data(&f)[..40], &[0xcd; 40][..]);
    assert_eq!(&umem.data(&f)[40..], &[0xab; 100][..]);
    assert_eq!(umem.metadata(&f, 8).unwrap().len(), 8);
    assert!(
        umem.metadata(&f, 281).is_none(),
        "metadata longer than the headroom"
    );
    assert!(umem.set_packet(&mut f, 2000..2049).is_err());
    #[expect(clippy::reversed_empty_ranges, reason = "testing the rejection")]
    let bad = 10..5;
    assert!(umem.set_packet(&mut f, bad).is_err());
    let mut taken = vec![f];
    while let Some(g) = umem.alloc() {
        taken.push(g);
    }
    assert_eq!(taken.len(), 8);
    assert_eq!(umem.free_frames(), 0);
    for g in taken {
        umem.release(g);
    }
    assert_eq!(umem.free_frames(), 8);
    let mut b = Batch::with_capacity(2);
    for _ in 0..2 {
        b.push(umem.alloc().unwrap()).unwrap();
    }
    let extra = umem.alloc().unwrap();
    let back = b.push(extra).unwrap_err();
    umem.release(back);
    assert_eq!(b.capacity(), 2);
    for g in b.drain() {
        umem.release(g);
    }
    assert_eq!(umem.free_frames(), 8);
}

fn bind_errno(r: Result<XskSocket, gateway_netio::afxdp::XskError>) -> Option<i32> {
    match r {
        Err(gateway_netio::afxdp::XskError::Bind { source, .. }) => source.raw_os_error(),
        Err(e) => panic!("unexpected error kind: {e:?}"),
        Ok(_) => None,
    }
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn bind_errors_and_rebind() {
    let a = NetNs::new("ra");
    let b = NetNs::new("rb");
    a.ip(&[
        "link",
        "add",
        "va",
        "numtxqueues",
        "1",
        "numrxqueues",
        "1",
        "type",
        "veth",
        "peer",
        "name",
        "vb",
        "numtxqueues",
        "1",
        "numrxqueues",
        "1",
        "netns",
        &b.name,
    ]);
    a.ip(&["link", "set", "va", "up"]);
    b.ip(&["link", "set", "vb", "up"]);
    a.run(|| {
        let small = || UmemConfig {
            frame_count: 64,
            frame_size: 2048,
            headroom: 0,
            fill_size: 32,
            comp_size: 32,
        };
        let cfg = XskConfig {
            rx_size: 32,
            tx_size: 32,
            busy_retry: Duration::from_millis(300),
            ..xsk_cfg()
        };
        // veth has no zero-copy support.
        let mut u0 = Umem::new(small()).unwrap();
        let zc = XskConfig {
            mode: BindMode::ZeroCopy,
            ..cfg.clone()
        };
        assert_eq!(
            bind_errno(XskSocket::bind(&mut u0, "va", 0, &zc)),
            Some(libc::EOPNOTSUPP)
        );
        // No such queue / interface.
        let mut u1 = Umem::new(small()).unwrap();
        assert!(bind_errno(XskSocket::bind(&mut u1, "va", 5, &cfg)).is_some());
        let mut u2 = Umem::new(small()).unwrap();
        assert_eq!(
            bind_errno(XskSocket::bind(&mut u2, "nosuch0", 0, &cfg)),
            Some(libc::ENODEV)
        );
        // A live socket holds the queue: a second UMEM gets EBUSY after the retries.
        let mut u3 = Umem::new(small()).unwrap();
        let first = XskSocket::bind(&mut u3, "va", 0, &cfg).unwrap();
        let mut u4 = Umem::new(small()).unwrap();
        assert_eq!(
            bind_errno(XskSocket::bind(&mut u4, "va", 0, &cfg)),
            Some(libc::EBUSY)
        );
        // Closing it frees the queue again (the retry loop absorbs the kernel's
        // asynchronous release).
        drop(first);
        drop(u3);
        let mut u5 = Umem::new(small()).unwrap();
        let cfg_patient = XskConfig {
            busy_retry: Duration::from_secs(5),
            ..cfg
        };
        let again = XskSocket::bind(&mut u5, "va", 0, &cfg_patient).unwrap();
        assert_eq!(again.queue(), 0);
    });
}
