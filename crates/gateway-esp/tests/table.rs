//! The shared SA table: install, lookup, make-before-break rekey step by
//! step, removal guards, counters, concurrent workers; and the
//! `FakeDataPlane` other crates test against.

mod common;

use std::sync::Arc;

use common::*;
use gateway_esp::table::{
    DataPlane, DataPlaneCall, DataPlaneError, FakeDataPlane, InboundSaConfig, OutboundSaConfig,
    SaKeys, SaTable, TunnelCountersSnapshot,
};
use gateway_esp::{DecapError, EncapError, IpPrefix, Suite, TrafficSelectors, DEFAULT_WINDOW};

const TUNNEL: u32 = 7;

fn cfgs(suite: Suite, spi: u32, seed: u8) -> (InboundSaConfig, OutboundSaConfig) {
    let (e, a) = keys(suite, seed);
    let keys = SaKeys::new(suite, &e, &a).unwrap();
    (
        InboundSaConfig {
            tunnel: TUNNEL,
            spi,
            keys: keys.clone(),
            esn: true,
            replay_window: DEFAULT_WINDOW,
            selectors: TrafficSelectors::any(),
        },
        OutboundSaConfig {
            tunnel: TUNNEL,
            spi,
            keys,
            esn: true,
            outer: outer(false, true),
            lifetime: gateway_esp::Lifetime::NONE,
        },
    )
}

/// Two gateways in one process: `a` sends to `b`. Each outbound SA in `a`
/// has its twin inbound SA in `b` (same SPI and keys).
fn send(a: &SaTable, b: &SaTable, v6: bool) -> Result<u32, String> {
    let pkt = inner(v6, 120);
    let (mut buf, range) = framed(&pkt);
    let e = a
        .encap(TUNNEL, &mut buf, range)
        .map_err(|e| e.to_string())?;
    let r = b.decap(&mut buf, e.packet).map_err(|e| e.to_string())?;
    assert_eq!(&buf[r.decap.inner.clone()], &pkt[..]);
    assert_eq!(r.tunnel, TUNNEL);
    Ok(r.spi)
}

#[test]
fn install_encap_decap_and_counters() {
    let suite = Suite::from_api_names("aes256gcm", None).unwrap();
    let (a, b) = (SaTable::new(), SaTable::new());
    let (inb, out) = cfgs(suite, 0x1000, 1);
    let (mut buf, range) = framed(&inner(false, 100));
    assert_eq!(
        a.encap(TUNNEL, &mut buf, range),
        Err(EncapError::NoSa { tunnel: TUNNEL })
    );
    assert_eq!(a.install_outbound(&out).unwrap(), None);
    b.install_inbound(&inb).unwrap();
    assert!(matches!(
        b.install_inbound(&inb),
        Err(DataPlaneError::SpiInUse { spi: 0x1000 })
    ));
    for _ in 0..5 {
        assert_eq!(send(&a, &b, false), Ok(0x1000));
        assert_eq!(send(&a, &b, true), Ok(0x1000));
    }
    let tx = a.counters(TUNNEL).unwrap();
    assert_eq!((tx.tx_packets, tx.tx_bytes, tx.tx_errors), (10, 1200, 0));
    let rx = b.counters(TUNNEL).unwrap();
    assert_eq!((rx.rx_packets, rx.rx_bytes, rx.rx_drops), (10, 1200, 0));
    assert_eq!(b.inbound(0x1000).unwrap().sa.right_edge(), 10);
    let mut edges = Vec::new();
    b.for_each_right_edge(|spi, edge| edges.push((spi, edge)));
    assert_eq!(edges, vec![(0x1000, 10)]);
    // Unknown SPI.
    let (mut buf, range) = framed(&inner(false, 100));
    let e = a.encap(TUNNEL, &mut buf, range).unwrap();
    b.remove_inbound(0x1000).unwrap();
    assert_eq!(
        b.decap(&mut buf, e.packet),
        Err(DecapError::UnknownSpi { spi: 0x1000 })
    );
    assert!(matches!(
        b.remove_inbound(0x1000),
        Err(DataPlaneError::UnknownSpi { .. })
    ));
}

#[test]
fn make_before_break_rekey_step_by_step() {
    let suite = Suite::from_api_names("aes128", Some("sha256")).unwrap();
    let (a, b) = (SaTable::new(), SaTable::new());
    let (old_in, old_out) = cfgs(suite, 0x1111, 1);
    let (new_in, new_out) = cfgs(suite, 0x2222, 2);
    a.install_outbound(&old_out).unwrap();
    b.install_inbound(&old_in).unwrap();
    assert_eq!(send(&a, &b, false), Ok(0x1111));
    // Packets sealed with the old SA but still in flight.
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let (mut buf, range) = framed(&inner(false, 100));
            let e = a.encap(TUNNEL, &mut buf, range).unwrap();
            (buf, e.packet)
        })
        .collect();
    // Step 1: the receiver installs the new inbound SA; old traffic flows.
    b.install_inbound(&new_in).unwrap();
    assert_eq!(send(&a, &b, false), Ok(0x1111));
    // Step 2: the sender switches its outbound SA; new traffic uses it.
    assert_eq!(a.install_outbound(&new_out).unwrap(), Some(0x1111));
    assert_eq!(send(&a, &b, true), Ok(0x2222));
    // In-flight packets of the old SA are still accepted during the grace.
    for (mut buf, range) in in_flight.clone() {
        assert_eq!(b.decap(&mut buf, range).unwrap().spi, 0x1111);
    }
    // A late delete of the old outbound SA does not remove its successor.
    assert!(matches!(
        a.remove_outbound(TUNNEL, 0x1111),
        Err(DataPlaneError::NoOutboundSa { .. })
    ));
    assert_eq!(send(&a, &b, false), Ok(0x2222));
    // Step 3: after the grace the old inbound SA goes.
    b.remove_inbound(0x1111).unwrap();
    let (mut buf, range) = in_flight[0].clone();
    assert_eq!(
        b.decap(&mut buf, range),
        Err(DecapError::UnknownSpi { spi: 0x1111 })
    );
    assert_eq!(send(&a, &b, false), Ok(0x2222));
    // Counters survive the rekey (per tunnel, not per SA).
    assert_eq!(a.counters(TUNNEL).unwrap().tx_packets, 8);
    assert_eq!(b.counters(TUNNEL).unwrap().rx_packets, 8);
    a.remove_outbound(TUNNEL, 0x2222).unwrap();
    let (mut buf, range) = framed(&inner(false, 100));
    assert_eq!(
        a.encap(TUNNEL, &mut buf, range),
        Err(EncapError::NoSa { tunnel: TUNNEL })
    );
}

#[test]
fn concurrent_workers_share_sequence_numbers_and_window() {
    let suite = Suite::from_api_names("aes256gcm", None).unwrap();
    let (a, b) = (Arc::new(SaTable::new()), Arc::new(SaTable::new()));
    let (mut inb, out) = cfgs(suite, 0x3333, 3);
    // All packets of the test fit in the window, so the outcome does not
    // depend on scheduling: each packet is accepted exactly once.
    inb.replay_window = 4096;
    a.install_outbound(&out).unwrap();
    b.install_inbound(&inb).unwrap();
    let per = 500;
    // Phase 1: four workers encapsulate concurrently.
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let a = a.clone();
            std::thread::spawn(move || {
                (0..per)
                    .map(|_| {
                        let (mut buf, range) = framed(&inner(t % 2 == 1, 90));
                        let e = a.encap(TUNNEL, &mut buf, range).unwrap();
                        (e.seq, buf[e.packet].to_vec())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let packets: Vec<(u64, Vec<u8>)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let mut seqs: Vec<u64> = packets.iter().map(|p| p.0).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=4 * per as u64).collect::<Vec<_>>(),
        "every sequence number used exactly once"
    );
    // Phase 2: four workers decapsulate, every packet delivered twice (by
    // two different workers): exactly one copy may pass.
    let packets = Arc::new(packets);
    let handles: Vec<_> = (0..4usize)
        .map(|t| {
            let (b, packets) = (b.clone(), packets.clone());
            std::thread::spawn(move || {
                // Each worker has its own reader (and counter slot).
                let mut reader = b.reader();
                let (mut ok, mut replayed) = (0u64, 0u64);
                for (i, (_, p)) in packets.iter().enumerate() {
                    if i % 4 != t && (i + 1) % 4 != t {
                        continue;
                    }
                    let mut buf = p.clone();
                    let n = buf.len();
                    match reader.decap(&mut buf, 0..n) {
                        Ok(_) => ok += 1,
                        Err(DecapError::Replay(gateway_esp::ReplayError::Replayed { .. })) => {
                            replayed += 1
                        }
                        Err(e) => panic!("unexpected drop {e}"),
                    }
                }
                (ok, replayed)
            })
        })
        .collect();
    let (ok, replayed) = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    assert_eq!((ok, replayed), (4 * per as u64, 4 * per as u64));
    let c = b.counters(TUNNEL).unwrap();
    assert_eq!((c.rx_packets, c.rx_drops), (4 * per as u64, 4 * per as u64));
}

#[test]
fn worker_reader_follows_installs_switches_and_removals() {
    let suite = Suite::from_api_names("aes256gcm", None).unwrap();
    let (a, b) = (SaTable::new(), SaTable::new());
    let (mut ra, mut rb) = (a.reader(), b.reader());
    let (old_in, old_out) = cfgs(suite, 0x8888, 8);
    let (new_in, new_out) = cfgs(suite, 0x9999, 9);
    let send_r = |ra: &mut gateway_esp::table::SaTableReader,
                  rb: &mut gateway_esp::table::SaTableReader| {
        let pkt = inner(false, 100);
        let (mut buf, range) = framed(&pkt);
        let e = ra
            .encap(TUNNEL, &mut buf, range)
            .map_err(|e| e.to_string())?;
        let r = rb.decap(&mut buf, e.packet).map_err(|e| e.to_string())?;
        assert_eq!(&buf[r.decap.inner], &pkt[..]);
        Ok::<u32, String>(r.spi)
    };
    assert!(send_r(&mut ra, &mut rb).is_err());
    a.install_outbound(&old_out).unwrap();
    b.install_inbound(&old_in).unwrap();
    assert_eq!(send_r(&mut ra, &mut rb), Ok(0x8888));
    b.install_inbound(&new_in).unwrap();
    a.install_outbound(&new_out).unwrap();
    assert_eq!(send_r(&mut ra, &mut rb), Ok(0x9999));
    assert_eq!(rb.inbound(0x9999).unwrap().sa.right_edge(), 1);
    assert_eq!(ra.outbound(TUNNEL).unwrap().sa.spi(), 0x9999);
    b.remove_inbound(0x9999).unwrap();
    assert!(send_r(&mut ra, &mut rb)
        .unwrap_err()
        .contains("unknown SPI"));
    assert!(rb.inbound(0x9999).is_none());
}

#[test]
fn table_refuses_bad_configs() {
    let suite = Suite::from_api_names("aes256gcm", None).unwrap();
    let t = SaTable::new();
    let (mut inb, mut out) = cfgs(suite, 0x4444, 4);
    inb.replay_window = 100;
    assert!(matches!(
        t.install_inbound(&inb),
        Err(DataPlaneError::Sa(_))
    ));
    out.outer.dst = "2001:db8::1".parse().unwrap();
    assert!(matches!(
        t.install_outbound(&out),
        Err(DataPlaneError::Sa(_))
    ));
    assert!(SaKeys::new(suite, &[0; 32], &[]).is_err());
    let dbg = format!("{:?}", SaKeys::new(suite, &[0x42; 36], &[]).unwrap());
    assert!(!dbg.contains("42"), "keys never printed: {dbg}");
}

#[test]
fn fake_data_plane_records_and_enforces() {
    let fake = FakeDataPlane::new();
    let dp: &dyn DataPlane = &fake;
    let suite = Suite::from_api_names("aes256gcm", None).unwrap();
    let (inb, out) = cfgs(suite, 0x5555, 5);
    dp.install_inbound_sa(inb.clone()).unwrap();
    assert!(matches!(
        dp.install_inbound_sa(inb.clone()),
        Err(DataPlaneError::SpiInUse { .. })
    ));
    assert_eq!(dp.install_outbound_sa(out.clone()).unwrap(), None);
    let (_, out2) = cfgs(suite, 0x6666, 6);
    assert_eq!(dp.install_outbound_sa(out2.clone()).unwrap(), Some(0x5555));
    assert!(dp.remove_outbound_sa(TUNNEL, 0x5555).is_err());
    let p: IpPrefix = "198.51.100.0/24".parse().unwrap();
    dp.install_route(p, TUNNEL).unwrap();
    assert_eq!(fake.routes(), vec![(p, TUNNEL)]);
    dp.withdraw_route(p, TUNNEL).unwrap();
    assert!(fake.routes().is_empty());
    dp.remove_inbound_sa(0x5555).unwrap();
    assert!(fake.inbound_spis().is_empty());
    assert_eq!(fake.outbound(TUNNEL).unwrap().spi, 0x6666);
    assert_eq!(
        dp.tunnel_counters(TUNNEL),
        Some(TunnelCountersSnapshot::default())
    );
    fake.set_counters(
        TUNNEL,
        TunnelCountersSnapshot {
            rx_packets: 3,
            ..Default::default()
        },
    );
    assert_eq!(dp.tunnel_counters(TUNNEL).unwrap().rx_packets, 3);
    assert_eq!(dp.tunnel_counters(99), None);
    let calls = fake.take_calls();
    assert_eq!(calls.len(), 8);
    assert_eq!(calls[0], DataPlaneCall::InstallInbound(inb));
    assert_eq!(calls[3], DataPlaneCall::InstallOutbound(out2));
    assert_eq!(
        calls[5],
        DataPlaneCall::InstallRoute {
            prefix: p,
            tunnel: TUNNEL
        }
    );
    assert!(fake.calls().is_empty());
}

#[test]
fn sa_table_is_a_data_plane() {
    let t: Arc<dyn DataPlane> = Arc::new(SaTable::new());
    let suite = Suite::from_api_names("chacha20poly1305", None).unwrap();
    let (inb, out) = cfgs(suite, 0x7777, 7);
    t.install_inbound_sa(inb).unwrap();
    t.install_outbound_sa(out).unwrap();
    assert_eq!(
        t.tunnel_counters(TUNNEL),
        Some(TunnelCountersSnapshot::default())
    );
    t.remove_outbound_sa(TUNNEL, 0x7777).unwrap();
    t.remove_inbound_sa(0x7777).unwrap();
}

/// Checks an outer packet produced with UDP encapsulation and returns
/// (UDP source port, UDP destination port, ESP sequence number): IP and
/// UDP lengths, IPv4 header checksum, UDP checksum (zero over IPv4,
/// RFC 3948 §2.1; valid over IPv6).
fn check_udp_packet(p: &[u8], v6: bool) -> (u16, u16, u32) {
    let l4 = if v6 { 40 } else { 20 };
    if v6 {
        assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), p.len() - 40);
        assert_eq!(p[6], 17);
    } else {
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
        assert_eq!(p[9], 17);
        assert!(csum_ok(&p[..20], &[]), "IPv4 header checksum");
    }
    let u = &p[l4..];
    assert_eq!(usize::from(u16::from_be_bytes([u[4], u[5]])), u.len());
    let ck = u16::from_be_bytes([u[6], u[7]]);
    if v6 {
        let mut pseudo = p[8..40].to_vec();
        pseudo.extend_from_slice(&(u.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 17]);
        assert_ne!(ck, 0, "IPv6 UDP checksum is mandatory");
        assert!(csum_ok(u, &pseudo), "UDP/IPv6 checksum");
    } else {
        assert_eq!(ck, 0, "zero UDP checksum over IPv4");
    }
    (
        u16::from_be_bytes([u[0], u[1]]),
        u16::from_be_bytes([u[2], u[3]]),
        u32::from_be_bytes([u[12], u[13], u[14], u[15]]),
    )
}

#[test]
fn udp_dst_port_moves_in_place_and_sequence_numbers_continue() {
    const NEW: u16 = 45123;
    for suite in [
        Suite::from_api_names("aes256gcm", None).unwrap(),
        Suite::from_api_names("aes128", Some("sha256")).unwrap(),
    ] {
        for v6 in [false, true] {
            let (a, b) = (SaTable::new(), SaTable::new());
            let mut ra = a.reader();
            let (mut inb, mut out) = cfgs(suite, 0x4444, 4);
            // 32-bit sequence numbers: the header carries all of it.
            out.esn = false;
            inb.esn = false;
            out.outer = outer(v6, true);
            a.install_outbound(&out).unwrap();
            b.install_inbound(&inb).unwrap();
            // Exercises both the table's and a worker reader's encap, and
            // lengths that give many different checksums.
            let mut send = |n: usize| {
                let pkt = inner(n % 2 == 0, 60 + n * 7);
                let (mut buf, range) = framed(&pkt);
                let e = if n % 3 == 0 {
                    ra.encap(TUNNEL, &mut buf, range).unwrap()
                } else {
                    a.encap(TUNNEL, &mut buf, range).unwrap()
                };
                let (sport, dport, seq) = check_udp_packet(&buf[e.packet.clone()], v6);
                assert_eq!(u64::from(seq), e.seq);
                // The peer's NAT maps the new port back to its 4500:
                // decapsulate from the ESP header on.
                let esp = e.packet.start + if v6 { 48 } else { 28 }..e.packet.end;
                let r = b.decap_esp(&mut buf, esp).unwrap();
                assert_eq!(&buf[r.decap.inner], &pkt[..]);
                (sport, dport, seq)
            };
            for n in 1..=3 {
                assert_eq!(send(n), (4500, 4500, n as u32));
            }
            let entry = a.outbound(TUNNEL).unwrap();
            assert_eq!(entry.udp_dst_port(), Some(4500));
            a.set_outbound_udp_dst_port(TUNNEL, 0x4444, NEW).unwrap();
            // Same entry (same SA object), new port visible to readers.
            assert!(Arc::ptr_eq(&entry, &a.outbound(TUNNEL).unwrap()));
            assert_eq!(entry.udp_dst_port(), Some(NEW));
            assert_eq!(entry.outer().udp.map(|u| u.dst_port), Some(NEW));
            assert_eq!(entry.sa.outer().udp.map(|u| u.dst_port), Some(4500));
            for n in 4..=60 {
                assert_eq!(send(n), (4500, NEW, n as u32), "{suite:?} v6 {v6}");
            }
            // Idempotent; the ESP-only path is untouched (its socket asks
            // `udp_dst_port`), and keeps the sequence.
            a.set_outbound_udp_dst_port(TUNNEL, 0x4444, NEW).unwrap();
            let (mut buf, range) = framed(&inner(false, 80));
            assert_eq!(a.encap_esp(TUNNEL, &mut buf, range).unwrap().seq, 61);
            assert_eq!(send(62), (4500, NEW, 62));
            // And back (a second remap), still the same sequence.
            a.set_outbound_udp_dst_port(TUNNEL, 0x4444, 4500).unwrap();
            assert_eq!(send(63), (4500, 4500, 63));
            let c = a.counters(TUNNEL).unwrap();
            assert_eq!((c.tx_packets, c.tx_errors), (63, 0));
        }
    }
}

#[test]
fn udp_dst_port_change_is_refused_for_the_wrong_sa() {
    let suite = Suite::from_api_names("aes256gcm", None).unwrap();
    let t = SaTable::new();
    assert!(matches!(
        t.set_outbound_udp_dst_port(TUNNEL, 0x5555, 4501),
        Err(DataPlaneError::NoOutboundSa { .. })
    ));
    let (_, mut out) = cfgs(suite, 0x5555, 5);
    out.outer = outer(false, false);
    t.install_outbound(&out).unwrap();
    // Plain ESP: no port to move.
    assert!(matches!(
        t.set_outbound_udp_dst_port(TUNNEL, 0x5555, 4501),
        Err(DataPlaneError::NotUdpEncapsulated { spi: 0x5555, .. })
    ));
    let (_, mut udp) = cfgs(suite, 0x6666, 6);
    udp.outer = outer(false, true);
    t.install_outbound(&udp).unwrap();
    // A late change for the rekeyed-away SA does not touch its successor.
    assert!(matches!(
        t.set_outbound_udp_dst_port(TUNNEL, 0x5555, 4501),
        Err(DataPlaneError::NoOutboundSa { spi: 0x5555, .. })
    ));
    assert!(matches!(
        t.set_outbound_udp_dst_port(TUNNEL, 0x6666, 0),
        Err(DataPlaneError::InvalidUdpPort { port: 0 })
    ));
    assert_eq!(t.outbound(TUNNEL).unwrap().udp_dst_port(), Some(4500));
    // Through the trait, as the agent calls it.
    let dp: &dyn DataPlane = &t;
    dp.set_outbound_udp_dst_port(TUNNEL, 0x6666, 4501).unwrap();
    assert_eq!(t.outbound(TUNNEL).unwrap().udp_dst_port(), Some(4501));
    // A rekey installs the next SA with the port IKE gives it.
    let (_, mut next) = cfgs(suite, 0x7777, 7);
    next.outer = outer(false, true);
    next.outer.udp.as_mut().unwrap().dst_port = 4501;
    assert_eq!(t.install_outbound(&next).unwrap(), Some(0x6666));
    assert_eq!(t.outbound(TUNNEL).unwrap().udp_dst_port(), Some(4501));
}

#[test]
fn udp_dst_port_change_under_concurrent_workers() {
    let suite = Suite::from_api_names("aes256gcm", None).unwrap();
    let a = Arc::new(SaTable::new());
    let (_, mut out) = cfgs(suite, 0x7171, 7);
    out.outer = outer(true, true);
    a.install_outbound(&out).unwrap();
    let per = 300;
    let barrier = Arc::new(std::sync::Barrier::new(3));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (a, barrier) = (a.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut r = a.reader();
                barrier.wait();
                (0..per)
                    .map(|i| {
                        let (mut buf, range) = framed(&inner(false, 40 + i % 50));
                        let e = r.encap(TUNNEL, &mut buf, range).unwrap();
                        check_udp_packet(&buf[e.packet], true)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    barrier.wait();
    a.set_outbound_udp_dst_port(TUNNEL, 0x7171, 45000).unwrap();
    let mut all: Vec<(u16, u16, u32)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    // After the workers finished, the port is the new one for everybody.
    let (mut buf, range) = framed(&inner(false, 40));
    let e = a.encap(TUNNEL, &mut buf, range).unwrap();
    all.push(check_udp_packet(&buf[e.packet], true));
    assert_eq!(all.last().map(|p| p.1), Some(45000));
    // Every packet has a valid header with one of the two ports, and the
    // sequence numbers are each used once, without a gap.
    assert!(all
        .iter()
        .all(|p| p.0 == 4500 && (p.1 == 4500 || p.1 == 45000)));
    let mut seqs: Vec<u32> = all.iter().map(|p| p.2).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=2 * per as u32 + 1).collect::<Vec<_>>());
}

#[test]
fn fake_data_plane_moves_the_udp_port() {
    let suite = Suite::from_api_names("aes256gcm", None).unwrap();
    let dp = FakeDataPlane::new();
    let (_, mut out) = cfgs(suite, 0x8181, 8);
    out.outer = outer(false, true);
    assert!(matches!(
        dp.set_outbound_udp_dst_port(TUNNEL, 0x8181, 4501),
        Err(DataPlaneError::NoOutboundSa { .. })
    ));
    dp.install_outbound_sa(out.clone()).unwrap();
    dp.set_outbound_udp_dst_port(TUNNEL, 0x8181, 4501).unwrap();
    assert_eq!(
        dp.outbound(TUNNEL).unwrap().outer.udp.map(|u| u.dst_port),
        Some(4501)
    );
    assert!(dp.calls().contains(&DataPlaneCall::SetOutboundUdpDstPort {
        tunnel: TUNNEL,
        spi: 0x8181,
        port: 4501
    }));
    let (_, mut plain) = cfgs(suite, 0x8282, 8);
    plain.outer = outer(false, false);
    dp.install_outbound_sa(plain).unwrap();
    assert!(matches!(
        dp.set_outbound_udp_dst_port(TUNNEL, 0x8282, 4501),
        Err(DataPlaneError::NotUdpEncapsulated { .. })
    ));
}

/// A sender `a` and a receiver `b` with one aes256gcm SA `spi` between
/// them (keys from `seed`).
fn installed_pair(spi: u32, seed: u8) -> (SaTable, SaTable) {
    let suite = Suite::from_api_names("aes256gcm", None).unwrap();
    let (a, b) = (SaTable::new(), SaTable::new());
    let (inb, out) = cfgs(suite, spi, seed);
    a.install_outbound(&out).unwrap();
    b.install_inbound(&inb).unwrap();
    (a, b)
}

/// A source filter that admits one prefix.
fn only_from(prefix: &str) -> Option<gateway_esp::SourceFilter> {
    Some(gateway_esp::SourceFilter::new(&[prefix.parse().unwrap()]))
}

/// Seals `pkt` with `a`'s outbound SA and opens it with `b`.
fn send_packet(a: &SaTable, b: &SaTable, pkt: &[u8]) -> Result<u32, DecapError> {
    let (mut buf, range) = framed(pkt);
    let e = a.encap(TUNNEL, &mut buf, range).unwrap();
    b.decap(&mut buf, e.packet).map(|r| r.spi)
}

#[test]
fn source_filter_refuses_spoofed_inner_sources_and_counts_them() {
    let suite = Suite::from_api_names("aes256gcm", None).unwrap();
    let (a, b) = (SaTable::new(), SaTable::new());
    let (inb, out) = cfgs(suite, 0x3000, 3);
    a.install_outbound(&out).unwrap();
    b.install_inbound(&inb).unwrap();
    let allowed = inner_v4(100, "198.51.100.10", "192.0.2.20");
    let spoofed = inner_v4(100, "10.1.2.3", "192.0.2.20");
    let spoofed6 = inner_v6(100, "2001:db8:100::99", "2001:db8:1::10");
    // No filter: the SA's selectors (any) decide.
    assert_eq!(send_packet(&a, &b, &spoofed), Ok(0x3000));
    b.set_source_filter(TUNNEL, only_from("198.51.100.0/24"));
    assert_eq!(send_packet(&a, &b, &allowed), Ok(0x3000));
    assert!(matches!(
        send_packet(&a, &b, &spoofed),
        Err(DecapError::SourceRefused { .. })
    ));
    assert!(matches!(
        send_packet(&a, &b, &spoofed6),
        Err(DecapError::SourceRefused { .. })
    ));
    // The filter is the tunnel's: an SA installed later (a rekey) has it too.
    let (inb2, out2) = cfgs(suite, 0x3001, 4);
    b.install_inbound(&inb2).unwrap();
    a.install_outbound(&out2).unwrap();
    assert!(matches!(
        send_packet(&a, &b, &spoofed),
        Err(DecapError::SourceRefused { .. })
    ));
    assert_eq!(send_packet(&a, &b, &allowed), Ok(0x3001));
    let c = b.counters(TUNNEL).unwrap();
    assert_eq!((c.rx_packets, c.rx_drops, c.rx_source_refused), (3, 3, 3));
    // Negotiated selectors refusing count as the same reason.
    let (mut inb3, out3) = cfgs(suite, 0x3002, 5);
    inb3.selectors = TrafficSelectors {
        local: vec![IpPrefix::ANY_V4],
        remote: vec!["203.0.113.0/24".parse().unwrap()],
    };
    b.set_source_filter(TUNNEL, None);
    b.install_inbound(&inb3).unwrap();
    a.install_outbound(&out3).unwrap();
    assert!(matches!(
        send_packet(&a, &b, &allowed),
        Err(DecapError::SelectorRefused { .. })
    ));
    assert_eq!(b.counters(TUNNEL).unwrap().rx_source_refused, 4);
}

/// A filter change republishes the tunnel's inbound entries: a worker's
/// reader (which caches the map) sees it at its next packet, and the new
/// entry keeps the SA's replay window (a packet accepted before the change
/// is a replay after it, not a new packet).
#[test]
fn a_filter_change_reaches_cached_readers_and_keeps_the_replay_window() {
    let (a, b) = installed_pair(0x3050, 7);
    let mut reader = b.reader();
    let spoofed = inner_v4(100, "10.1.2.3", "192.0.2.20");
    let allowed = inner_v4(100, "198.51.100.10", "192.0.2.20");
    let seal = |pkt: &[u8]| {
        let (mut buf, range) = framed(pkt);
        let e = a.encap(TUNNEL, &mut buf, range).unwrap();
        (buf, e.packet)
    };
    let (first, first_range) = seal(&allowed);
    let mut copy = first.clone();
    assert_eq!(
        reader.decap(&mut copy, first_range.clone()).map(|r| r.spi),
        Ok(0x3050)
    );
    let (mut buf, range) = seal(&spoofed);
    let mut early = buf.clone();
    assert!(reader.decap(&mut early, range.clone()).is_ok());
    b.set_source_filter(TUNNEL, only_from("198.51.100.0/24"));
    let (mut buf2, range2) = seal(&spoofed);
    assert!(matches!(
        reader.decap(&mut buf2, range2),
        Err(DecapError::SourceRefused { .. })
    ));
    // The same SA object: its window remembers what it accepted.
    let mut again = first.clone();
    assert!(matches!(
        reader.decap(&mut again, first_range),
        Err(DecapError::Replay(_))
    ));
    assert!(matches!(
        reader.decap(&mut buf, range),
        Err(DecapError::Replay(_))
    ));
    // Lifting the filter reaches the reader too.
    b.set_source_filter(TUNNEL, None);
    let (mut buf3, range3) = seal(&spoofed);
    assert_eq!(reader.decap(&mut buf3, range3).map(|r| r.spi), Ok(0x3050));
}

#[test]
fn decap_drops_are_counted_by_reason() {
    let (a, b) = installed_pair(0x3100, 6);
    let pkt = inner_v4(100, "198.51.100.10", "192.0.2.20");
    let (mut buf, range) = framed(&pkt);
    let e = a.encap(TUNNEL, &mut buf, range).unwrap();
    let mut again = buf.clone();
    b.decap(&mut buf, e.packet.clone()).unwrap();
    // The same packet again: a replay.
    assert!(matches!(
        b.decap(&mut again, e.packet.clone()),
        Err(DecapError::Replay(_))
    ));
    // A flipped ICV bit: the integrity check fails.
    let (mut buf, range) = framed(&pkt);
    let e = a.encap(TUNNEL, &mut buf, range).unwrap();
    buf[e.packet.end - 1] ^= 1;
    assert!(matches!(
        b.decap(&mut buf, e.packet),
        Err(DecapError::IcvMismatch { .. })
    ));
    let c = b.counters(TUNNEL).unwrap();
    assert_eq!(
        (
            c.rx_packets,
            c.rx_drops,
            c.rx_replay,
            c.rx_auth_failed,
            c.rx_source_refused
        ),
        (1, 2, 1, 1, 0)
    );
}

#[test]
fn limit_listener_hears_soft_then_hard_once_per_sa() {
    use gateway_esp::table::LimitEvent;
    use gateway_esp::Lifetime;
    let suite = Suite::from_api_names("aes128gcm", None).unwrap();
    let (a, b) = (SaTable::new(), SaTable::new());
    let events = Arc::new(std::sync::Mutex::new(Vec::<LimitEvent>::new()));
    let sink = Arc::clone(&events);
    a.set_limit_listener(Box::new(move |e| sink.lock().unwrap().push(e)));
    let (inb, mut out) = cfgs(suite, 0x4000, 6);
    out.lifetime = Lifetime {
        soft_packets: Some(5),
        hard_packets: Some(8),
        ..Lifetime::NONE
    };
    a.install_outbound(&out).unwrap();
    b.install_inbound(&inb).unwrap();
    let pkt = inner(false, 100);
    let mut sent = 0;
    for _ in 0..12 {
        let (mut buf, range) = framed(&pkt);
        match a.encap(TUNNEL, &mut buf, range) {
            Ok(e) => {
                sent += 1;
                assert_eq!(e.soft_limit_reached, e.seq >= 5);
                b.decap(&mut buf, e.packet).unwrap();
            }
            Err(e) => assert_eq!(e, EncapError::SequenceExhausted { spi: 0x4000 }),
        }
    }
    assert_eq!(sent, 8, "the hard packet limit stops the SA");
    let ev = events.lock().unwrap().clone();
    assert_eq!(
        ev,
        vec![
            LimitEvent {
                tunnel: TUNNEL,
                spi: 0x4000,
                hard: false
            },
            LimitEvent {
                tunnel: TUNNEL,
                spi: 0x4000,
                hard: true
            }
        ]
    );
    // The next SA of the tunnel (the rekey) starts afresh and reports again.
    let (_, mut out2) = cfgs(suite, 0x4001, 7);
    out2.lifetime = Lifetime {
        soft_bytes: Some(250),
        hard_bytes: Some(400),
        ..Lifetime::NONE
    };
    a.install_outbound(&out2).unwrap();
    let mut ok = 0;
    for _ in 0..6 {
        let (mut buf, range) = framed(&pkt);
        match a.encap(TUNNEL, &mut buf, range) {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e, EncapError::LifetimeExpired { spi: 0x4001 }),
        }
    }
    // 100-byte packets: the fourth would pass 400 bytes.
    assert_eq!(ok, 4);
    let ev = events.lock().unwrap().clone();
    assert_eq!(ev.len(), 4);
    assert_eq!(
        ev[2..],
        [
            LimitEvent {
                tunnel: TUNNEL,
                spi: 0x4001,
                hard: false
            },
            LimitEvent {
                tunnel: TUNNEL,
                spi: 0x4001,
                hard: true
            }
        ]
    );
}

#[test]
fn forgotten_tunnel_ids_start_from_zero() {
    let suite = Suite::from_api_names("aes256gcm", None).unwrap();
    let (a, b) = (SaTable::new(), SaTable::new());
    let (inb, out) = cfgs(suite, 0x5000, 8);
    a.install_outbound(&out).unwrap();
    b.install_inbound(&inb).unwrap();
    b.set_source_filter(TUNNEL, only_from("203.0.113.0/24"));
    assert!(send(&a, &b, false).is_err());
    a.remove_outbound(TUNNEL, 0x5000).unwrap();
    b.remove_inbound(0x5000).unwrap();
    a.forget_tunnel(TUNNEL);
    b.forget_tunnel(TUNNEL);
    assert_eq!(a.counters(TUNNEL), None);
    assert_eq!(b.counters(TUNNEL), None);
    // A new tunnel on the same id: fresh counters, no inherited filter.
    let (inb, out) = cfgs(suite, 0x5001, 9);
    a.install_outbound(&out).unwrap();
    b.install_inbound(&inb).unwrap();
    assert_eq!(send(&a, &b, false), Ok(0x5001));
    assert_eq!(
        b.counters(TUNNEL).unwrap(),
        TunnelCountersSnapshot {
            rx_packets: 1,
            rx_bytes: 120,
            ..Default::default()
        }
    );
}

/// Sends one packet from `a` to `b`; the sequence number, or why not.
fn send_seq(a: &SaTable, b: &SaTable) -> Result<u64, String> {
    let (mut buf, range) = framed(&inner(false, 100));
    let e = a
        .encap(TUNNEL, &mut buf, range)
        .map_err(|e| e.to_string())?;
    b.decap(&mut buf, e.packet).map_err(|e| e.to_string())?;
    Ok(e.seq)
}

#[test]
fn reserved_sequence_numbers_bound_what_is_sent() {
    let suite = Suite::from_api_names("aes256gcm", None).unwrap();
    let (a, b) = (SaTable::new(), SaTable::new());
    a.set_seq_reservation(Some(3));
    let (inb, out) = cfgs(suite, 0x5000, 3);
    a.install_outbound(&out).unwrap();
    b.install_inbound(&inb).unwrap();
    // A new SA sends its first block unreserved (it was never persisted).
    for want in 1..=3 {
        assert_eq!(send_seq(&a, &b), Ok(want));
    }
    assert!(send_seq(&a, &b).unwrap_err().contains("not reserved"));
    // The owner persisted up to 10: numbers flow again, the burnt 4 skipped.
    a.outbound(TUNNEL).unwrap().sa.reserve_through(10);
    assert_eq!(send_seq(&a, &b), Ok(5));
    assert_eq!(a.counters(TUNNEL).unwrap().tx_errors, 1);
}

#[test]
fn a_resumed_pair_continues_above_the_persisted_numbers() {
    let suite = Suite::from_api_names("aes256gcm", None).unwrap();
    let (a, b) = (SaTable::new(), SaTable::new());
    let (inb, out) = cfgs(suite, 0x6000, 4);
    a.install_outbound(&out).unwrap();
    b.install_inbound(&inb).unwrap();
    for want in 1..=20 {
        assert_eq!(send_seq(&a, &b), Ok(want));
    }
    // Both ends restart and resume from what they persisted: the sender
    // reserved up to 50, the receiver last wrote its edge at 15.
    let (a2, b2) = (SaTable::new(), SaTable::new());
    a2.expect_resume(0x1, 0, 0x6000, 50);
    b2.expect_resume(0x6000, 15, 0x2, 0);
    a2.install_outbound(&out).unwrap();
    b2.install_inbound(&inb).unwrap();
    // Nothing goes until more is reserved: 50 may have been used.
    assert!(send_seq(&a2, &b2).unwrap_err().contains("not reserved"));
    a2.outbound(TUNNEL).unwrap().sa.reserve_through(1000);
    assert_eq!(send_seq(&a2, &b2), Ok(52));
    // A replay of what the old receiver saw (at or below its edge) is refused.
    let (mut buf, range) = framed(&inner(false, 100));
    let old = a.encap(TUNNEL, &mut buf, range).unwrap();
    assert_eq!(old.seq, 21);
    assert!(b2.decap(&mut buf, old.packet).is_ok(), "above the edge");
    let again = SaTable::new();
    again.expect_resume(0x6000, 21, 0x3, 0);
    again.install_inbound(&inb).unwrap();
    let (mut buf, range) = framed(&inner(false, 100));
    let a3 = SaTable::new();
    a3.expect_resume(0x4, 0, 0x6000, 20);
    a3.install_outbound(&out).unwrap();
    a3.outbound(TUNNEL).unwrap().sa.reserve_through(21);
    let replay = a3.encap(TUNNEL, &mut buf, range).unwrap();
    assert_eq!(replay.seq, 21);
    assert!(matches!(
        again.decap(&mut buf, replay.packet),
        Err(DecapError::Replay(_))
    ));
    // A resume point is used once: the next install starts fresh.
    b2.remove_inbound(0x6000).unwrap();
    b2.install_inbound(&inb).unwrap();
    assert_eq!(b2.inbound(0x6000).unwrap().sa.right_edge(), 0);
}
