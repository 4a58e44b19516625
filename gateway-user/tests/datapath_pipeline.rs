//! The worker's per-frame decisions as a table: each row is a frame (built
//! in one place below), the direction it arrived from, and the verdict and
//! counter it must produce. No sockets, no privileges.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gateway_common::{Direction, XdpMeta, SA_INDEX_NONE, XDP_META_MAGIC};
use gateway_esp::table::{InboundSaConfig, OutboundSaConfig, SaKeys, SaTable, TunnelId};
use gateway_esp::{Encryption, OuterHeader, Suite, TrafficSelectors, UdpEncap};
use gateway_netio::netlink::NextHop;
use gateway_user::dataplane::slowpath::SlowPathError;
use gateway_user::dataplane::worker::{
    Pipeline, Resolver, SlowSink, Verdict, WorkerCountersSnapshot, WorkerDrop,
};

const TUNNEL: TunnelId = 4;
const SPI: u32 = 0x4400_0004;
const LAN_IF: u32 = 2;
const WAN_IF: u32 = 3;
const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// Resolves nothing for this inner destination (not yet in the cache).
const UNRESOLVED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 99);
/// Resolves to an interface that is not LAN (e.g. the gateway itself).
const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 0);
const START: usize = 384;

struct Fixed;

impl Resolver for Fixed {
    fn next_hop(&self, dst: IpAddr) -> Option<NextHop> {
        let ifindex = match dst {
            d if d == IpAddr::V4(UNRESOLVED) => return None,
            d if d == IpAddr::V4(ELSEWHERE) => 1,
            d if d == IpAddr::V4(PEER) => WAN_IF,
            _ => LAN_IF,
        };
        Some(NextHop {
            ifindex,
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
        })
    }
}

#[derive(Default)]
struct Sink {
    inner: AtomicU64,
    outer: AtomicU64,
}

struct SinkRef(Arc<Sink>);

impl SlowSink for SinkRef {
    fn deliver_inner(&self, _t: TunnelId, _p: &[u8]) -> Result<(), SlowPathError> {
        self.0.inner.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn send_outer(&self, _p: &[u8]) -> Result<(), SlowPathError> {
        self.0.outer.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Ethernet + IPv4 + UDP (32-byte payload).
fn frame(dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + 32];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&60u16.to_be_bytes());
    ip[8] = ttl;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[198, 51, 100, 10]);
    ip[16..20].copy_from_slice(&dst.octets());
    ip[24..26].copy_from_slice(&40u16.to_be_bytes());
    f
}

fn meta(direction: Direction, tunnel: TunnelId) -> Option<XdpMeta> {
    Some(XdpMeta {
        magic: XDP_META_MAGIC,
        tunnel_id: tunnel,
        sa_index: SA_INDEX_NONE,
        direction: direction as u32,
    })
}

fn pipeline() -> (Pipeline<Fixed, SinkRef>, Arc<Sink>) {
    let suite = Suite::new(Encryption::ChaCha20Poly1305, None).unwrap();
    let keys = SaKeys::new(suite, &[0x33; 36], &[]).unwrap();
    let table = Arc::new(SaTable::new());
    table
        .install_inbound(&InboundSaConfig {
            tunnel: TUNNEL,
            spi: SPI,
            keys: keys.clone(),
            esn: false,
            replay_window: 64,
            selectors: TrafficSelectors::any(),
        })
        .unwrap();
    table
        .install_outbound(&OutboundSaConfig {
            tunnel: TUNNEL,
            spi: SPI,
            keys,
            esn: false,
            outer: OuterHeader {
                src: Ipv4Addr::new(192, 0, 2, 1).into(),
                dst: PEER.into(),
                udp: Some(UdpEncap::default()),
                ttl: 64,
            },
            lifetime: gateway_esp::Lifetime::NONE,
        })
        .unwrap();
    let sink = Arc::new(Sink::default());
    (
        Pipeline::new(table, Fixed, SinkRef(sink.clone()), LAN_IF, WAN_IF),
        sink,
    )
}

/// Encapsulates `inner` with the pipeline (as the peer would) and returns
/// the WAN frame ready for `inbound`.
fn esp_frame(
    p: &Pipeline<Fixed, SinkRef>,
    inner: &[u8],
    chunk: &mut [u8],
) -> std::ops::Range<usize> {
    chunk[START..START + inner.len()].copy_from_slice(inner);
    match p.outbound(
        chunk,
        START..START + inner.len(),
        meta(Direction::Outbound, TUNNEL),
    ) {
        Verdict::Forward(r) => r,
        Verdict::Consumed => panic!("could not build the ESP frame"),
    }
}

fn delta(
    a: &WorkerCountersSnapshot,
    b: &WorkerCountersSnapshot,
) -> (u64, u64, u64, u64, Vec<(WorkerDrop, u64)>) {
    let drops = WorkerDrop::ALL
        .iter()
        .map(|d| (*d, b.dropped(*d) - a.dropped(*d)))
        .filter(|(_, n)| *n > 0)
        .collect();
    (
        b.lan_tx - a.lan_tx,
        b.wan_tx - a.wan_tx,
        b.to_tun - a.to_tun,
        b.to_raw - a.to_raw,
        drops,
    )
}

/// (description, frame, metadata, forwarded?, expected drop).
type Row = (
    &'static str,
    Vec<u8>,
    Option<XdpMeta>,
    bool,
    Option<WorkerDrop>,
);

#[test]
fn outbound_decisions() {
    let (p, sink) = pipeline();
    let good = frame(Ipv4Addr::new(203, 0, 113, 10), 64);
    let mut short = good.clone();
    short.truncate(20);
    let mut arp = good.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let rows: Vec<Row> = vec![
        (
            "routed into an up tunnel",
            good.clone(),
            meta(Direction::Outbound, TUNNEL),
            true,
            None,
        ),
        (
            "no metadata",
            good.clone(),
            None,
            false,
            Some(WorkerDrop::BadMetadata),
        ),
        (
            "inbound metadata on LAN",
            good.clone(),
            meta(Direction::Inbound, TUNNEL),
            false,
            Some(WorkerDrop::BadMetadata),
        ),
        (
            "foreign magic",
            good.clone(),
            meta(Direction::Outbound, TUNNEL).map(|m| XdpMeta { magic: 0, ..m }),
            false,
            Some(WorkerDrop::BadMetadata),
        ),
        (
            "truncated IPv4",
            short,
            meta(Direction::Outbound, TUNNEL),
            false,
            Some(WorkerDrop::NotIp),
        ),
        (
            "not IP",
            arp,
            meta(Direction::Outbound, TUNNEL),
            false,
            Some(WorkerDrop::NotIp),
        ),
        (
            "TTL 1",
            frame(Ipv4Addr::new(203, 0, 113, 10), 1),
            meta(Direction::Outbound, TUNNEL),
            false,
            Some(WorkerDrop::TtlExpired),
        ),
        (
            "tunnel without SA",
            good.clone(),
            meta(Direction::Outbound, TUNNEL + 1),
            false,
            Some(WorkerDrop::Encap),
        ),
    ];
    for (what, f, m, forwarded, drop) in rows {
        let mut chunk = vec![0u8; 4096];
        chunk[START..START + f.len()].copy_from_slice(&f);
        let before = p.counters().snapshot();
        let v = p.outbound(&mut chunk, START..START + f.len(), m);
        let (_, wan_tx, _, _, drops) = delta(&before, &p.counters().snapshot());
        assert_eq!(matches!(v, Verdict::Forward(_)), forwarded, "{what}");
        assert_eq!(wan_tx, u64::from(forwarded), "{what}");
        assert_eq!(
            drops,
            drop.map(|d| vec![(d, 1)]).unwrap_or_default(),
            "{what}"
        );
        if let Verdict::Forward(r) = v {
            // Ethernet toward the peer, then outer IPv4 + UDP 4500.
            assert_eq!(&chunk[r.start..r.start + 6], &[2, 0, 0, 0, 0, 2], "{what}");
            assert_eq!(&chunk[r.start + 14 + 16..r.start + 14 + 20], &PEER.octets());
            assert_eq!(
                &chunk[r.start + 14 + 22..r.start + 14 + 24],
                &4500u16.to_be_bytes()
            );
        }
    }
    assert_eq!(sink.outer.load(Ordering::Relaxed), 0);

    // An outer packet larger than the WAN MTU is a typed drop.
    let (small, _) = pipeline();
    let small = small.with_wan_mtu(100);
    let mut chunk = vec![0u8; 4096];
    chunk[START..START + good.len()].copy_from_slice(&good);
    let v = small.outbound(
        &mut chunk,
        START..START + good.len(),
        meta(Direction::Outbound, TUNNEL),
    );
    assert_eq!(v, Verdict::Consumed);
    assert_eq!(small.counters().snapshot().dropped(WorkerDrop::TooBig), 1);
}

#[test]
fn inbound_decisions() {
    let (p, sink) = pipeline();
    let mut chunk = vec![0u8; 4096];

    // Forwarded to the LAN host, TTL decremented.
    let r = esp_frame(&p, &frame(Ipv4Addr::new(198, 51, 100, 10), 64), &mut chunk);
    let before = p.counters().snapshot();
    let v = p.inbound(&mut chunk, r, meta(Direction::Inbound, TUNNEL));
    let Verdict::Forward(out) = v else {
        panic!("not forwarded")
    };
    assert_eq!(chunk[out.start + 14 + 8], 62, "routed by both sides");
    assert_eq!(
        delta(&before, &p.counters().snapshot()),
        (1, 0, 0, 0, vec![])
    );

    // Slow-path cases: (description, inner destination, TTL).
    for (what, dst, ttl) in [
        ("next hop not resolved", UNRESOLVED, 64),
        ("destination not on LAN (the gateway itself)", ELSEWHERE, 64),
        ("TTL expires here", Ipv4Addr::new(198, 51, 100, 10), 2),
    ] {
        let r = esp_frame(&p, &frame(dst, ttl), &mut chunk);
        let before = p.counters().snapshot();
        let v = p.inbound(&mut chunk, r, meta(Direction::Inbound, TUNNEL));
        assert_eq!(v, Verdict::Consumed, "{what}");
        assert_eq!(
            delta(&before, &p.counters().snapshot()),
            (0, 0, 1, 0, vec![]),
            "{what}"
        );
    }
    assert_eq!(sink.inner.load(Ordering::Relaxed), 3);

    // Drops: tampered ciphertext, replayed packet, missing metadata.
    let r = esp_frame(&p, &frame(Ipv4Addr::new(198, 51, 100, 10), 64), &mut chunk);
    let saved = chunk.clone();
    chunk[r.end - 1] ^= 1;
    let before = p.counters().snapshot();
    assert_eq!(
        p.inbound(&mut chunk, r.clone(), meta(Direction::Inbound, TUNNEL)),
        Verdict::Consumed
    );
    assert_eq!(
        delta(&before, &p.counters().snapshot()).4,
        vec![(WorkerDrop::Decap, 1)]
    );
    let mut again = saved.clone();
    assert!(matches!(
        p.inbound(&mut again, r.clone(), meta(Direction::Inbound, TUNNEL)),
        Verdict::Forward(_)
    ));
    let mut replay = saved.clone();
    let before = p.counters().snapshot();
    assert_eq!(
        p.inbound(&mut replay, r.clone(), meta(Direction::Inbound, TUNNEL)),
        Verdict::Consumed
    );
    assert_eq!(
        delta(&before, &p.counters().snapshot()).4,
        vec![(WorkerDrop::Decap, 1)]
    );
    let mut no_meta = saved;
    let before = p.counters().snapshot();
    assert_eq!(p.inbound(&mut no_meta, r, None), Verdict::Consumed);
    assert_eq!(
        delta(&before, &p.counters().snapshot()).4,
        vec![(WorkerDrop::BadMetadata, 1)]
    );
    assert_eq!(sink.outer.load(Ordering::Relaxed), 0);
}

#[test]
fn hostile_frames_never_panic() {
    let (p, _sink) = pipeline();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut chunk = vec![0u8; 4096];
    for i in 0..20_000u32 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let len = (rng % 200) as usize;
        for (j, b) in chunk[START..START + len].iter_mut().enumerate() {
            *b = (rng >> (j % 57)) as u8;
        }
        // Make many of them look like IPv4/IPv6 over Ethernet.
        if len > 15 && i % 2 == 0 {
            chunk[START + 12] = if i % 4 == 0 { 0x08 } else { 0x86 };
            chunk[START + 13] = if i % 4 == 0 { 0x00 } else { 0xdd };
            chunk[START + 14] = if i % 4 == 0 { 0x45 } else { 0x60 };
        }
        let dir = if i % 3 == 0 {
            Direction::Inbound
        } else {
            Direction::Outbound
        };
        let m = meta(dir, TUNNEL);
        let _ = if dir == Direction::Inbound {
            p.inbound(&mut chunk, START..START + len, m)
        } else {
            p.outbound(&mut chunk, START..START + len, m)
        };
    }
}
