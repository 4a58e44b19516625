//! The AF_XDP workers of the fast path: one thread per receive queue, with
//! a WAN and a LAN socket over one shared UMEM, so a frame received on one
//! interface is rewritten in place and transmitted on the other without a
//! copy. Per batch:
//!
//! * **WAN rx → LAN tx**: the XDP metadata says the frame is inbound ESP of
//!   a known SA; [`SaTable::decap`] (lookup by SPI, replay, ICV) leaves the
//!   inner packet in place; the inner TTL is decremented (we route) and an
//!   Ethernet header toward the inner destination is written in front of
//!   it, from the kernel's neighbour table through [`NeighbourCache`].
//! * **LAN rx → WAN tx**: the metadata carries the tunnel id;
//!   [`SaTable::encap`] with the tunnel's outbound SA builds outer IP + UDP +
//!   ESP in the frame's headroom and the ICV in its tailroom; an Ethernet
//!   header toward the peer's next hop goes in front.
//!
//! Both directions clamp the MSS of TCP SYNs to the tunnel's inner MTU
//! (outbound before encryption, inbound after decryption). A decrypted
//! packet larger than the LAN's MTU is answered, if it has DF (or is IPv6),
//! with an ICMP too-big error that goes back through the same tunnel,
//! encrypted, through the slow path's raw socket (rare, and rate-limited
//! per source); without DF it goes to the TUN, where the kernel fragments
//! it on its way to the LAN.
//!
//! Frames the worker cannot send itself take the slow path: a decrypted
//! packet whose next hop is unresolved, not on the LAN interface, or the
//! gateway itself (BGP to our interconnection address), or whose TTL
//! expires, is written to the tunnel's TUN for the kernel; an encrypted
//! packet whose next hop toward the peer is unresolved goes out through the
//! slow path's raw socket. Both are copies plus a syscall, only for those
//! frames.
//!
//! The per-frame logic is [`Pipeline`], generic over the neighbour lookup and
//! the slow path so that it runs (and is proven allocation-free) without
//! sockets. Nothing allocates per packet: batches and the UMEM are sized up
//! front, lookups go through `arc-swap` snapshots.
//!
//! # Checksums in the lab
//!
//! A packet a local stack sends over veth reaches XDP with only the
//! pseudo-header sum in its UDP/TCP checksum (`CHECKSUM_PARTIAL`: the
//! sender expects offload). Forwarded as is, the far host drops it. Before
//! encapsulating, the worker recognises that state (the field equals the
//! folded pseudo-header sum and the packet does not verify) and completes
//! the checksum; a real NIC never delivers such packets, so on real
//! hardware this is one pseudo-header sum per packet.
//!
//! # One XSKMAP slot per socket
//!
//! `wan_ingress` redirects to `XSKS[rx_queue_index]` and `lan_ingress` to
//! `XSKS[XSKS_LAN_BASE + rx_queue_index]`: an AF_XDP socket only accepts
//! frames from the (device, queue) it is bound to, so queue N of each
//! interface has a slot of its own in the one map, and each socket is
//! registered through its [`XskSlot`].
//!
//! # Files
//!
//! `decap.rs` is the WAN → decap → LAN path, `encap.rs` the LAN → encap →
//! WAN path, `headers.rs` the header helpers they share; `thread.rs` holds
//! the sockets, the thread and its loop, apart from the packet logic.

use crate::capture::Capture;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gateway_common::{Direction, XdpMeta, XDP_META_MAGIC};
use gateway_esp::table::{SaTable, TunnelId};
use gateway_esp::{MAX_HEADROOM, MAX_TAILROOM};
use gateway_netio::afxdp::{Batch, Umem, UmemConfig, XskConfig, XskError, XskSocket};
use gateway_netio::netlink::{NeighbourCache, Netlink, NetlinkError, NextHop};

use super::mtu::{build_too_big, source_key, too_big, IcmpLimiter, TunnelParams};
use super::police::Way;
use super::slowpath::{SlowPathError, SlowPathHandle};
use super::xdp::{XdpDataplane, XdpError};
use gateway_esp::checksum::{add, fold};

use gateway_common::eth::{ETH_HLEN, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6};
const META_LEN: usize = std::mem::size_of::<XdpMeta>();
/// Consecutive empty rounds (each a check of both RX rings, well under a
/// microsecond) before the worker sleeps in poll(2).
const SPIN_ROUNDS: u32 = 64;

/// Next hop lookup for the workers (the kernel's neighbour table through
/// [`NeighbourCache`] in production, a fixed table in tests).
pub trait Resolver {
    /// Where to send a packet for `dst`, if known. Never blocks.
    fn next_hop(&self, dst: IpAddr) -> Option<NextHop>;
}

impl Resolver for NeighbourCache {
    fn next_hop(&self, dst: IpAddr) -> Option<NextHop> {
        self.lookup(dst)
    }
}

/// A [`Resolver`] that answers `None` for the gateway's own addresses
/// (e.g. the BGP interconnection addresses on the TUNs) without asking the
/// inner resolver. Why: the kernel routes a local address through `lo`,
/// whose neighbour never resolves, and a [`NeighbourCache`] would keep such
/// a destination pending and re-resolve every wanted destination every
/// 50 ms forever. The set is replaced wholesale by the agent (rare);
/// lookups are lock-free and allocation-free. Clones share the set (one per
/// worker).
#[derive(Clone)]
pub struct SkipLocal<R> {
    inner: R,
    local: Arc<arc_swap::ArcSwap<Vec<IpAddr>>>,
}

impl<R> SkipLocal<R> {
    /// Wraps `inner`; the returned handle replaces the local set.
    pub fn new(inner: R) -> (Self, LocalAddrs) {
        let local = Arc::new(arc_swap::ArcSwap::from_pointee(Vec::new()));
        (
            Self {
                inner,
                local: Arc::clone(&local),
            },
            LocalAddrs(local),
        )
    }
}

/// The writer side of [`SkipLocal`].
#[derive(Clone)]
pub struct LocalAddrs(Arc<arc_swap::ArcSwap<Vec<IpAddr>>>);

impl LocalAddrs {
    /// Replaces the set of local addresses.
    pub fn set(&self, addrs: Vec<IpAddr>) {
        self.0.store(Arc::new(addrs));
    }
}

impl<R: Resolver> Resolver for SkipLocal<R> {
    fn next_hop(&self, dst: IpAddr) -> Option<NextHop> {
        // A handful of addresses: a linear scan beats hashing.
        if self.local.load().contains(&dst) {
            return None;
        }
        self.inner.next_hop(dst)
    }
}

/// Where the workers hand packets they do not send themselves.
pub trait SlowSink {
    /// An inner packet for the tunnel's TUN.
    fn deliver_inner(&self, tunnel: TunnelId, packet: &[u8]) -> Result<(), SlowPathError>;
    /// A complete outer packet for the kernel to route.
    fn send_outer(&self, packet: &[u8]) -> Result<(), SlowPathError>;
}

impl SlowSink for SlowPathHandle {
    fn deliver_inner(&self, tunnel: TunnelId, packet: &[u8]) -> Result<(), SlowPathError> {
        SlowPathHandle::deliver_inner(self, tunnel, packet)
    }
    fn send_outer(&self, packet: &[u8]) -> Result<(), SlowPathError> {
        SlowPathHandle::send_outer(self, packet)
    }
}

/// Why a worker dropped a frame. Stable names for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum WorkerDrop {
    /// No (or foreign) XDP metadata in front of the frame.
    BadMetadata = 0,
    /// Not an IPv4/IPv6 Ethernet frame, or truncated.
    NotIp = 1,
    /// Decapsulation refused (the reason is counted per tunnel in the table).
    Decap = 2,
    /// Encapsulation refused (no SA, exhausted, no room...).
    Encap = 3,
    /// The inner packet's TTL would expire on an outbound frame.
    TtlExpired = 4,
    /// The slow path refused the packet.
    SlowPath = 5,
    /// The transmit batch was full.
    TxFull = 6,
    /// The encapsulated frame exceeds the WAN MTU (the inner MTU toward the
    /// tunnel must leave room for the ESP overhead; no PMTU signalling yet).
    TooBig = 7,
    /// A decrypted packet larger than the LAN's MTU that got no ICMP error
    /// (source past its rate limit, not unicast, an ICMP error itself, no
    /// LAN address of its family, or the error could not be sent).
    TooBigNoReply = 8,
    /// Past its VPN gateway's bandwidth (the gateway type's), either way.
    Bandwidth = 9,
}

impl WorkerDrop {
    /// Every reason, in order.
    pub const ALL: [WorkerDrop; 10] = [
        WorkerDrop::BadMetadata,
        WorkerDrop::NotIp,
        WorkerDrop::Decap,
        WorkerDrop::Encap,
        WorkerDrop::TtlExpired,
        WorkerDrop::SlowPath,
        WorkerDrop::TxFull,
        WorkerDrop::TooBig,
        WorkerDrop::TooBigNoReply,
        WorkerDrop::Bandwidth,
    ];

    /// Metrics label.
    pub const fn name(self) -> &'static str {
        match self {
            WorkerDrop::BadMetadata => "bad_metadata",
            WorkerDrop::NotIp => "not_ip",
            WorkerDrop::Decap => "decap",
            WorkerDrop::Encap => "encap",
            WorkerDrop::TtlExpired => "ttl_expired",
            WorkerDrop::SlowPath => "slow_path",
            WorkerDrop::TxFull => "tx_full",
            WorkerDrop::TooBig => "too_big",
            WorkerDrop::TooBigNoReply => "too_big_no_reply",
            WorkerDrop::Bandwidth => "bandwidth",
        }
    }
}

/// Counters of one worker (relaxed atomics; the worker is the only writer).
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Frames received on WAN.
    pub wan_rx: AtomicU64,
    /// Frames received on LAN.
    pub lan_rx: AtomicU64,
    /// Decrypted frames sent on LAN.
    pub lan_tx: AtomicU64,
    /// Encrypted frames sent on WAN.
    pub wan_tx: AtomicU64,
    /// Decrypted packets handed to a TUN.
    pub to_tun: AtomicU64,
    /// Encrypted packets handed to the raw socket.
    pub to_raw: AtomicU64,
    /// Inner packets whose partial checksum was completed.
    pub checksums_completed: AtomicU64,
    /// ICMP too-big errors sent back through a tunnel (decrypted packets
    /// larger than the LAN's MTU).
    pub icmp_too_big: AtomicU64,
    /// Kernel counters of the sockets (`XDP_STATISTICS`, WAN + LAN),
    /// copied by the worker when idle and every 1024 rounds: frames the
    /// kernel dropped because the RX ring was full or the fill ring empty.
    pub xsk_rx_dropped: AtomicU64,
    /// See [`Self::xsk_rx_dropped`]: RX ring full events.
    pub xsk_rx_ring_full: AtomicU64,
    /// See [`Self::xsk_rx_dropped`]: fill ring empty events.
    pub xsk_fill_ring_empty: AtomicU64,
    drops: [AtomicU64; WorkerDrop::ALL.len()],
}

/// A copy of [`WorkerCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerCountersSnapshot {
    /// See [`WorkerCounters::wan_rx`].
    pub wan_rx: u64,
    /// See [`WorkerCounters::lan_rx`].
    pub lan_rx: u64,
    /// See [`WorkerCounters::lan_tx`].
    pub lan_tx: u64,
    /// See [`WorkerCounters::wan_tx`].
    pub wan_tx: u64,
    /// See [`WorkerCounters::to_tun`].
    pub to_tun: u64,
    /// See [`WorkerCounters::to_raw`].
    pub to_raw: u64,
    /// See [`WorkerCounters::checksums_completed`].
    pub checksums_completed: u64,
    /// See [`WorkerCounters::icmp_too_big`].
    pub icmp_too_big: u64,
    /// See [`WorkerCounters::xsk_rx_dropped`].
    pub xsk_rx_dropped: u64,
    /// See [`WorkerCounters::xsk_rx_ring_full`].
    pub xsk_rx_ring_full: u64,
    /// See [`WorkerCounters::xsk_fill_ring_empty`].
    pub xsk_fill_ring_empty: u64,
    /// Drops, indexed by [`WorkerDrop`].
    pub drops: [u64; WorkerDrop::ALL.len()],
}

impl WorkerCountersSnapshot {
    /// Drops for one reason.
    pub fn dropped(&self, reason: WorkerDrop) -> u64 {
        self.drops[reason as usize]
    }
}

impl WorkerCounters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn drop_frame(&self, reason: WorkerDrop) {
        Self::add(&self.drops[reason as usize], 1);
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> WorkerCountersSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut drops = [0; WorkerDrop::ALL.len()];
        for (d, a) in drops.iter_mut().zip(&self.drops) {
            *d = l(a);
        }
        WorkerCountersSnapshot {
            wan_rx: l(&self.wan_rx),
            lan_rx: l(&self.lan_rx),
            lan_tx: l(&self.lan_tx),
            wan_tx: l(&self.wan_tx),
            to_tun: l(&self.to_tun),
            to_raw: l(&self.to_raw),
            checksums_completed: l(&self.checksums_completed),
            icmp_too_big: l(&self.icmp_too_big),
            xsk_rx_dropped: l(&self.xsk_rx_dropped),
            xsk_rx_ring_full: l(&self.xsk_rx_ring_full),
            xsk_fill_ring_empty: l(&self.xsk_fill_ring_empty),
            drops,
        }
    }
}

/// What to do with a frame after [`Pipeline`] processed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit `range` of the chunk on the other interface.
    Forward(Range<usize>),
    /// The packet was handed to the slow path or dropped (counted): recycle
    /// the frame.
    Consumed,
}

/// The per-frame logic of a worker.
pub struct Pipeline<R, S> {
    table: Arc<SaTable>,
    resolver: R,
    slow: S,
    lan_ifindex: u32,
    wan_ifindex: u32,
    /// Largest outer IP packet WAN carries.
    wan_mtu: usize,
    /// Largest IP packet LAN carries.
    lan_mtu: usize,
    /// Our LAN addresses: the sources of ICMP errors.
    lan_v4: Option<Ipv4Addr>,
    lan_v6: Option<Ipv6Addr>,
    params: Arc<TunnelParams>,
    /// ICMP errors are rare: the limiter and the buffer in which an error
    /// is built and encrypted sit behind uncontended locks.
    limiter: Mutex<IcmpLimiter>,
    scratch: Mutex<Vec<u8>>,
    counters: Arc<WorkerCounters>,
    /// Copies packets for `s2s-gateway capture` while one runs.
    capture: Option<Arc<Capture>>,
}

/// Default ICMP rate limit per source (errors per second, burst).
pub const DEFAULT_ICMP_RATE: (u32, u32) = (100, 20);

/// Nanoseconds on a monotonic clock (for the ICMP rate limiter).
fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl<R: Resolver, S: SlowSink> Pipeline<R, S> {
    /// A pipeline forwarding decrypted packets out of `lan_ifindex` and
    /// encrypted ones out of `wan_ifindex`.
    pub fn new(
        table: Arc<SaTable>,
        resolver: R,
        slow: S,
        lan_ifindex: u32,
        wan_ifindex: u32,
    ) -> Self {
        Self {
            table,
            resolver,
            slow,
            lan_ifindex,
            wan_ifindex,
            wan_mtu: usize::MAX,
            lan_mtu: usize::MAX,
            lan_v4: None,
            lan_v6: None,
            params: Arc::new(TunnelParams::default()),
            limiter: Mutex::new(IcmpLimiter::new(DEFAULT_ICMP_RATE.0, DEFAULT_ICMP_RATE.1)),
            scratch: Mutex::new(vec![0; MAX_HEADROOM + 1280 + MAX_TAILROOM]),
            counters: Arc::new(WorkerCounters::default()),
            capture: None,
        }
    }

    /// Copies the packets of a running capture into `capture`: the ESP
    /// received and sent, the inner packets decrypted and encrypted.
    pub fn with_capture(mut self, capture: Arc<Capture>) -> Self {
        self.capture = Some(capture);
        self
    }

    /// Copies `packet` of `tunnel` if a capture wants it (off: one load).
    #[inline]
    fn capture(&self, tunnel: TunnelId, packet: &[u8]) {
        if let Some(c) = self.capture.as_deref() {
            if c.wants(tunnel) {
                c.record(packet);
            }
        }
    }

    /// Answers decrypted packets larger than `mtu` with ICMP errors from
    /// `v4` / `v6` (back through their tunnel), at most `rate` per second
    /// and source with bursts of `burst`; without DF, hands them to the
    /// TUN for the kernel to fragment.
    pub fn with_lan(
        mut self,
        mtu: u32,
        v4: Option<Ipv4Addr>,
        v6: Option<Ipv6Addr>,
        (rate, burst): (u32, u32),
    ) -> Self {
        self.lan_mtu = mtu as usize;
        self.lan_v4 = v4;
        self.lan_v6 = v6;
        self.limiter = Mutex::new(IcmpLimiter::new(rate, burst));
        self
    }

    /// Per-tunnel inner MTU and MSS clamping (shared with the backend,
    /// which writes it); without, every tunnel clamps to the default MTU.
    pub fn with_tunnel_params(mut self, params: Arc<TunnelParams>) -> Self {
        self.params = params;
        self
    }

    /// Builds the ICMP error about `orig` and sends it, encrypted, into
    /// `tunnel`. Returns whether it went.
    fn send_too_big(&self, tunnel: TunnelId, orig: &[u8]) -> bool {
        let Some(src) = source_key(orig) else {
            return false;
        };
        if !self
            .limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .allow(src, now_ns())
        {
            return false;
        }
        let mut buf = self
            .scratch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let head = MAX_HEADROOM;
        let Some(n) = build_too_big(
            orig,
            self.lan_mtu,
            self.lan_v4,
            self.lan_v6,
            &mut buf[head..head + 1280],
        ) else {
            return false;
        };
        let Ok(enc) = self.table.encap(tunnel, &mut buf, head..head + n) else {
            return false;
        };
        self.slow.send_outer(&buf[enc.packet]).is_ok()
    }

    /// Drops (counted as [`WorkerDrop::TooBig`]) encapsulated packets larger
    /// than `mtu` instead of handing them to an interface that would drop
    /// them silently.
    pub fn with_wan_mtu(mut self, mtu: u32) -> Self {
        self.wan_mtu = mtu as usize;
        self
    }

    /// The counters this pipeline updates.
    pub fn counters(&self) -> &Arc<WorkerCounters> {
        &self.counters
    }

    /// The next hop lookup in use.
    pub fn resolver(&self) -> &R {
        &self.resolver
    }
}

mod decap;
mod encap;
mod headers;
mod thread;
pub use headers::complete_partial_checksum;
use headers::*;
pub use thread::{lan_addresses, Worker, WorkerConfig, WorkerError, XskSlot};

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_udp(payload: &[u8]) -> Vec<u8> {
        let total = 28 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[198, 51, 100, 10]);
        p[16..20].copy_from_slice(&[203, 0, 113, 10]);
        let c = !fold(add(0, &p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20..22].copy_from_slice(&1234u16.to_be_bytes());
        p[22..24].copy_from_slice(&5678u16.to_be_bytes());
        p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p[28..].copy_from_slice(payload);
        p
    }

    fn udp_ok(p: &[u8]) -> bool {
        let l4 = &p[20..];
        let pseudo = add(0, &p[12..20]) + 17 + l4.len() as u64;
        fold(add(pseudo, l4)) == 0xffff
    }

    #[test]
    fn partial_udp_checksum_is_completed_once() {
        let mut p = ipv4_udp(b"hello, odd length");
        let pseudo = fold(add(0, &p[12..20]) + 17 + (p.len() - 20) as u64);
        p[26..28].copy_from_slice(&pseudo.to_be_bytes());
        assert!(!udp_ok(&p));
        assert!(complete_partial_checksum(&mut p));
        assert!(udp_ok(&p));
        // Complete now: left alone.
        assert!(!complete_partial_checksum(&mut p));
        // Every length, full-size ones too, with bytes that carry.
        for len in (0..40).chain([1371, 1372, 1373, 1472]) {
            let payload: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(37) | 0xc0)
                .collect();
            let mut p = ipv4_udp(&payload);
            let pseudo = fold(add(0, &p[12..20]) + 17 + (p.len() - 20) as u64);
            p[26..28].copy_from_slice(&pseudo.to_be_bytes());
            assert!(complete_partial_checksum(&mut p), "len {len}");
            assert!(udp_ok(&p), "len {len}");
        }
        // A zero (absent) UDP checksum is left alone.
        let mut q = ipv4_udp(b"x");
        assert!(!complete_partial_checksum(&mut q));
        assert_eq!(&q[26..28], &[0, 0]);
    }

    #[test]
    fn ttl_decrement_keeps_the_header_checksum_valid() {
        for ttl in [2u8, 64, 255] {
            let mut p = ipv4_udp(b"abc");
            p[8] = ttl;
            p[10] = 0;
            p[11] = 0;
            let c = !fold(add(0, &p[..20]));
            p[10..12].copy_from_slice(&c.to_be_bytes());
            decrement_ttl(&mut p);
            assert_eq!(p[8], ttl - 1);
            assert_eq!(fold(add(0, &p[..20])), 0xffff, "ttl {ttl}");
        }
    }

    #[test]
    fn skip_local_hides_local_addresses_from_the_inner_resolver() {
        struct Count(std::sync::atomic::AtomicU32);
        impl Resolver for Count {
            fn next_hop(&self, _dst: IpAddr) -> Option<NextHop> {
                self.0.fetch_add(1, Ordering::Relaxed);
                Some(NextHop {
                    ifindex: 1,
                    src_mac: [0; 6],
                    dst_mac: [0; 6],
                })
            }
        }
        let (r, local) = SkipLocal::new(Count(Default::default()));
        let bgp: IpAddr = Ipv4Addr::new(169, 254, 0, 0).into();
        assert!(r.next_hop(bgp).is_some());
        local.set(vec![bgp]);
        assert!(r.next_hop(bgp).is_none());
        assert!(r.next_hop(Ipv4Addr::new(198, 51, 100, 10).into()).is_some());
        assert_eq!(r.inner.0.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn header_parsers_refuse_hostile_input() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = (rng % 80) as usize;
            let mut b: Vec<u8> = (0..len).map(|i| (rng >> (i % 56)) as u8).collect();
            if len > 0 && rng & 1 == 0 {
                b[0] = if rng & 2 == 0 { 0x45 } else { 0x60 };
            }
            let _ = l3_start(&b, &(0..len));
            let _ = ip_len(&b);
            let _ = ip_dst(&b);
            let _ = ttl(&b);
            let _ = complete_partial_checksum(&mut b);
            if ip_len(&b).is_some() && ttl(&b).is_some_and(|t| t > 1) {
                decrement_ttl(&mut b);
            }
        }
    }
}
