//! Privileged: a TUN device in a namespace, configured through our netlink,
//! proven by a round trip: a kernel UDP socket sends to the address behind the
//! TUN, a userspace responder reads the IP packet from the TUN, turns it around
//! and writes it back, and the socket receives the echo. IPv4 with a blocking
//! thread, IPv6 with tokio's `AsyncTun`.

mod common;

#[global_allocator]
static ALLOC: common::alloc_count::Counting = common::alloc_count::Counting;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::NetNs;
use gateway_netio::netlink::{Address, Netlink};
use gateway_netio::tun::{AsyncTun, Tun};

/// Swap source/destination addresses and ports of a UDP packet in place.
/// Checksums (IPv4 header and UDP) stay valid: the one's-complement sum does
/// not depend on the order of the swapped fields.
fn turn_around_udp(pkt: &mut [u8]) -> bool {
    let (addr_at, addr_len, l4) = match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= 28 && pkt[9] == 17 => (12, 4, usize::from(pkt[0] & 0xf) * 4),
        Some(6) if pkt.len() >= 48 && pkt[6] == 17 => (8, 16, 40),
        _ => return false,
    };
    if pkt.len() < l4 + 8 {
        return false;
    }
    let (a, b) = pkt[addr_at..addr_at + 2 * addr_len].split_at_mut(addr_len);
    a.swap_with_slice(b);
    let (sp, dp) = pkt[l4..l4 + 4].split_at_mut(2);
    sp.swap_with_slice(dp);
    true
}

fn echo_roundtrip(local: &str, remote: &str, payload: &[u8]) -> Vec<u8> {
    let sock = UdpSocket::bind(local).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    sock.connect(remote).unwrap();
    sock.send(payload).unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = sock.recv_from(&mut buf).expect("echo through the TUN");
    assert_eq!(from, remote.parse::<SocketAddr>().unwrap());
    buf[..n].to_vec()
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn udp_echo_through_tun_with_userspace_responder() {
    let ns = NetNs::new("tun");
    let ns_path = format!("/run/netns/{}", ns.name);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    // Blocking responder thread, bounded at 20 s whatever happens.
    let responder = std::thread::spawn(move || {
        common::enter(&ns_path);
        let tun = Tun::create("s2stun0", true).unwrap();
        assert_eq!(tun.name(), "s2stun0");
        let mut nl = Netlink::open().unwrap();
        let v4 = Address {
            ifindex: 0,
            addr: "169.254.10.0".parse().unwrap(),
            prefix_len: 31,
        };
        let v6 = Address {
            ifindex: 0,
            addr: "fd00::2".parse().unwrap(),
            prefix_len: 127,
        };
        let idx = tun.configure(&mut nl, 1400, &[v4, v6]).unwrap();
        let link = nl.link_by_index(idx).unwrap();
        assert!(link.up);
        assert_eq!(link.mtu, 1400);
        assert_eq!(link.mac, None, "a TUN device has no link-layer address");
        let q2 = tun.open_queue().unwrap();
        assert_eq!(q2.name(), "s2stun0");
        drop(q2);
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 2048];
        let mut echoed = 0u32;
        let end = Instant::now() + Duration::from_secs(20);
        while done_rx.try_recv().is_err() && Instant::now() < end {
            if !tun.wait_readable(100).unwrap() {
                continue;
            }
            loop {
                match tun.read(&mut buf) {
                    Ok(n) => {
                        // Other packets (IPv6 router solicitations...) are ignored.
                        if turn_around_udp(&mut buf[..n]) {
                            assert_eq!(tun.write(&buf[..n]).unwrap(), n);
                            echoed += 1;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("tun read: {e}"),
                }
            }
        }
        (tun, echoed)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("tun ready");
    let got = ns.run(|| {
        (0..3u8)
            .map(|i| echo_roundtrip("169.254.10.0:0", "169.254.10.1:7007", &[i; 100]))
            .collect::<Vec<_>>()
    });
    done_tx.send(()).unwrap();
    let (tun, echoed) = responder.join().unwrap();
    assert_eq!(got, (0..3u8).map(|i| vec![i; 100]).collect::<Vec<_>>());
    assert_eq!(echoed, 3);

    // The same device from tokio, IPv6.
    let got6 = ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let tun = AsyncTun::new(tun).unwrap();
            let client =
                std::thread::spawn(|| echo_roundtrip("[fd00::2]:0", "[fd00::3]:7007", b"hello v6"));
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let mut buf = [0u8; 2048];
            while !client.is_finished() && tokio::time::Instant::now() < deadline {
                if let Ok(r) =
                    tokio::time::timeout(Duration::from_millis(100), tun.read(&mut buf)).await
                {
                    let n = r.unwrap();
                    if turn_around_udp(&mut buf[..n]) {
                        assert_eq!(tun.write(&buf[..n]).await.unwrap(), n);
                    }
                }
            }
            client.join().unwrap()
        })
    });
    assert_eq!(got6, b"hello v6");
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn a_persistent_tun_keeps_its_routes_until_it_is_released() {
    let ns = NetNs::new("tunp");
    let ns_path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        common::enter(&ns_path);
        let mut nl = Netlink::open().unwrap();
        let tun = Tun::create("s2spersist0", false).unwrap();
        tun.set_persist(true).unwrap();
        let addr = Address {
            ifindex: 0,
            addr: "169.254.20.0".parse().unwrap(),
            prefix_len: 31,
        };
        let idx = tun.configure(&mut nl, 1400, &[addr]).unwrap();
        let mut route = gateway_netio::netlink::Route::new("192.0.2.0".parse().unwrap(), 24);
        route.oif = Some(idx);
        nl.replace_route(&route).unwrap();
        let ours = |nl: &mut Netlink| {
            nl.list_routes(false, 254, gateway_netio::netlink::RTPROT_GATEWAY)
                .unwrap()
                .into_iter()
                .filter(|r| r.oif == Some(idx))
                .count()
        };
        assert_eq!(ours(&mut nl), 1);
        // Closed: the interface and the route stay (a restart).
        drop(tun);
        assert_eq!(nl.link_by_name("s2spersist0").unwrap().index, idx);
        assert_eq!(ours(&mut nl), 1, "the route outlives the descriptor");
        assert!(nl
            .list_links()
            .unwrap()
            .iter()
            .any(|l| l.name == "s2spersist0"));
        // Opened again: the same interface, route included.
        let again = Tun::create("s2spersist0", false).unwrap();
        assert_eq!(nl.link_by_name("s2spersist0").unwrap().index, idx);
        assert_eq!(ours(&mut nl), 1);
        // Released: closing deletes the interface and its routes.
        again.set_persist(false).unwrap();
        drop(again);
        assert!(nl.link_by_name("s2spersist0").is_err());
        assert_eq!(ours(&mut nl), 0);
    })
    .join()
    .expect("persistent TUN checks");
}
