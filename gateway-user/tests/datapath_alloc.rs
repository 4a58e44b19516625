//! The worker's per-frame logic allocates nothing in steady state: a
//! counting global allocator watches `Pipeline::outbound` (LAN frame →
//! encap → Ethernet toward the peer) and `Pipeline::inbound` (WAN frame →
//! decap → Ethernet toward the host) on one UMEM-sized chunk, plus the
//! slow-path branches (next hop unresolved), over 10,000 rounds each.
//! Runs without privileges: the sockets are not involved, only the code
//! that runs between receive and transmit. One test in this binary so no
//! other test thread allocates meanwhile; only the test thread's
//! allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use gateway_common::{Direction, XdpMeta, SA_INDEX_NONE, XDP_META_MAGIC};
use gateway_esp::table::{InboundSaConfig, OutboundSaConfig, SaKeys, SaTable, TunnelId};
use gateway_esp::{Encryption, OuterHeader, Suite, TrafficSelectors, UdpEncap};
use gateway_netio::netlink::NextHop;
use gateway_user::dataplane::slowpath::SlowPathError;
use gateway_user::dataplane::worker::{Pipeline, Resolver, SlowSink, Verdict, WorkerDrop};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Only the test's own thread counts: the harness's threads may allocate
    // concurrently. Const-initialised, so reading it never allocates.
    static COUNTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn count() {
    if COUNTED.with(std::cell::Cell::get) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const TUNNEL: TunnelId = 1;
const SPI: u32 = 0x7700_0001;
const LAN_IF: u32 = 2;
const WAN_IF: u32 = 3;
const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const START: usize = 384;

struct Fixed {
    resolved: AtomicBool,
}

impl Resolver for Fixed {
    fn next_hop(&self, dst: IpAddr) -> Option<NextHop> {
        if !self.resolved.load(Ordering::Relaxed) {
            return None;
        }
        let ifindex = if dst == IpAddr::V4(PEER) {
            WAN_IF
        } else {
            LAN_IF
        };
        Some(NextHop {
            ifindex,
            src_mac: [2, 0, 0, 0, 0, ifindex as u8],
            dst_mac: [2, 0, 0, 0, 1, ifindex as u8],
        })
    }
}

#[derive(Default)]
struct Sink {
    inner: AtomicU64,
    outer: AtomicU64,
}

/// The test keeps a second handle to read the counts.
struct SinkRef(Arc<Sink>);

impl SlowSink for SinkRef {
    fn deliver_inner(&self, _t: TunnelId, p: &[u8]) -> Result<(), SlowPathError> {
        assert!(!p.is_empty());
        self.0.inner.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn send_outer(&self, p: &[u8]) -> Result<(), SlowPathError> {
        assert_eq!(p[0] >> 4, 4);
        self.0.outer.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Ethernet + IPv4 + UDP with a 64-byte payload, from a LAN host to a
/// remote host, complete checksums.
fn frame() -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + 64];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&92u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[198, 51, 100, 10]);
    ip[16..20].copy_from_slice(&[203, 0, 113, 10]);
    let mut s: u32 = ip[..20]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    ip[10..12].copy_from_slice(&(!(s as u16)).to_be_bytes());
    ip[20..22].copy_from_slice(&40000u16.to_be_bytes());
    ip[22..24].copy_from_slice(&9000u16.to_be_bytes());
    ip[24..26].copy_from_slice(&72u16.to_be_bytes());
    for (i, b) in ip[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

fn meta(direction: Direction) -> Option<XdpMeta> {
    Some(XdpMeta {
        magic: XDP_META_MAGIC,
        tunnel_id: TUNNEL,
        sa_index: if direction == Direction::Inbound {
            0
        } else {
            SA_INDEX_NONE
        },
        direction: direction as u32,
    })
}

#[test]
fn worker_pipeline_allocates_nothing_per_packet() {
    let suite = Suite::new(Encryption::Aes256Gcm, None).unwrap();
    let keys = SaKeys::new(suite, &[0x5a; 36], &[]).unwrap();
    let table = Arc::new(SaTable::new());
    // The same SA both ways: what we encapsulate we can decapsulate.
    table
        .install_inbound(&InboundSaConfig {
            tunnel: TUNNEL,
            spi: SPI,
            keys: keys.clone(),
            esn: true,
            replay_window: 1024,
            selectors: TrafficSelectors::any(),
        })
        .unwrap();
    table
        .install_outbound(&OutboundSaConfig {
            tunnel: TUNNEL,
            spi: SPI,
            keys,
            esn: true,
            outer: OuterHeader {
                src: Ipv4Addr::new(192, 0, 2, 1).into(),
                dst: PEER.into(),
                udp: Some(UdpEncap::default()),
                ttl: 64,
            },
            lifetime: gateway_esp::Lifetime::NONE,
        })
        .unwrap();
    let resolver = Fixed {
        resolved: AtomicBool::new(true),
    };
    let sink = Arc::new(Sink::default());
    let p = Pipeline::new(
        table.clone(),
        resolver,
        SinkRef(sink.clone()),
        LAN_IF,
        WAN_IF,
    );
    let template = frame();
    let mut chunk = vec![0u8; 4096];
    let inner_len = template.len() - 14;

    let mut round = |resolved: bool| {
        chunk[START..START + template.len()].copy_from_slice(&template);
        let out = p.outbound(
            &mut chunk,
            START..START + template.len(),
            meta(Direction::Outbound),
        );
        let Verdict::Forward(r) = out else {
            assert!(!resolved, "outbound not forwarded");
            return;
        };
        assert_eq!(&chunk[r.start..r.start + 6], &[2, 0, 0, 0, 1, WAN_IF as u8]);
        let back = p.inbound(&mut chunk, r, meta(Direction::Inbound));
        let Verdict::Forward(r) = back else {
            panic!("inbound not forwarded");
        };
        assert_eq!(r.len(), 14 + inner_len);
        assert_eq!(&chunk[r.start..r.start + 6], &[2, 0, 0, 0, 1, LAN_IF as u8]);
        // Routed twice: TTL 64 → 62, payload intact.
        assert_eq!(chunk[r.start + 14 + 8], 62);
        assert_eq!(&chunk[r.end - 64..r.end], &template[template.len() - 64..]);
    };

    for _ in 0..100 {
        round(true);
    }
    COUNTED.with(|c| c.set(true));
    // The counter sees allocations at all (else the test proves nothing).
    let probe = ALLOCS.load(Ordering::Relaxed);
    drop(std::hint::black_box(vec![0u8; 16]));
    assert_eq!(ALLOCS.load(Ordering::Relaxed), probe + 1);
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..10_000 {
        round(true);
    }
    let fast = ALLOCS.load(Ordering::Relaxed) - before;

    // Next hops unknown: outer packets go to the raw-socket sink.
    p_set_resolved(&p, false);
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..10_000 {
        round(false);
    }
    let slow = ALLOCS.load(Ordering::Relaxed) - before;
    COUNTED.with(|c| c.set(false));

    assert_eq!(fast, 0, "allocations in 10,000 fast-path rounds");
    assert_eq!(slow, 0, "allocations in 10,000 slow-path rounds");
    assert_eq!(sink.outer.load(Ordering::Relaxed), 10_000);
    let c = p.counters().snapshot();
    assert_eq!(c.wan_tx, 10_100);
    assert_eq!(c.lan_tx, 10_100);
    assert_eq!(c.to_raw, 10_000);
    assert!(WorkerDrop::ALL.iter().all(|d| c.dropped(*d) == 0), "{c:?}");
    let t = table.counters(TUNNEL).unwrap();
    assert_eq!(
        (t.tx_packets, t.rx_packets, t.rx_drops),
        (20_100, 10_100, 0)
    );
}

fn p_set_resolved(p: &Pipeline<Fixed, SinkRef>, v: bool) {
    p.resolver().resolved.store(v, Ordering::Relaxed);
}
