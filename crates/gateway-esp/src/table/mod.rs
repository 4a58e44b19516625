//! The SA table every data-plane worker shares, and the narrow
//! [`DataPlane`] trait through which IKE, BGP and the agent program the data
//! plane (with [`FakeDataPlane`], an in-memory recorder for their tests).
//!
//! Reads are lock-free: the inbound (by SPI) and outbound (by tunnel id)
//! maps sit behind `ArcSwap` and writers publish a modified copy (writes are
//! rare: SA install, rekey, delete). Outbound sequence numbers are atomics in
//! the SA; the replay window takes a short per-SA spin lock to mark (see
//! [`crate::replay`]).
//! Per-tunnel counters are relaxed atomics shared by all workers of a
//! tunnel; the table does not own routes (they live in the XDP route tables).
//! When a NAT'd peer's mapping changes (RFC 3948, RFC 7296 §2.23), the
//! UDP destination port of an installed outbound SA moves in place (an
//! atomic in its entry), so its keys and sequence numbers carry on.
//!
//! Per tunnel the table also keeps the [`SourceFilter`] (the inner sources
//! its connection may send; checked after every decapsulation) and tells a
//! [`LimitListener`] once per outbound SA when a volume lifetime's soft or
//! hard limit is passed, so the control plane can rekey in time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::cache::Cache;
use arc_swap::{ArcSwap, ArcSwapOption};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::packet::{parse_outer, IPV4_HEADER_LEN, IPV6_HEADER_LEN};
use crate::sa::{
    Decapsulated, Encapsulated, InboundSa, Lifetime, OutboundSa, OuterHeader, SaError,
};
use crate::selector::{IpPrefix, SourceFilter, TrafficSelectors};
use crate::suite::{SaCipher, Suite, SuiteError};
use crate::{DecapError, EncapError};

/// Identifier of a tunnel (one per connection and outer family).
pub type TunnelId = u32;

/// Key material of one SA direction, as IKEv2 derived it (RFC 7296 §2.17):
/// the encryption KEYMAT (key || salt for AEADs) and the integrity KEYMAT
/// (AES-CBC only). Zeroized on drop, never printed.
#[derive(Clone)]
pub struct SaKeys {
    suite: Suite,
    encr: Zeroizing<Vec<u8>>,
    integ: Zeroizing<Vec<u8>>,
}

impl SaKeys {
    /// Checks the lengths against the suite and takes a copy of the keys.
    pub fn new(suite: Suite, encr: &[u8], integ: &[u8]) -> Result<Self, SuiteError> {
        if encr.len() != suite.encr_keymat_len() {
            return Err(SuiteError::KeyLength {
                what: "encryption",
                got: encr.len(),
                expected: suite.encr_keymat_len(),
            });
        }
        if integ.len() != suite.integ_keymat_len() {
            return Err(SuiteError::KeyLength {
                what: "integrity",
                got: integ.len(),
                expected: suite.integ_keymat_len(),
            });
        }
        Ok(Self {
            suite,
            encr: Zeroizing::new(encr.to_vec()),
            integ: Zeroizing::new(integ.to_vec()),
        })
    }

    /// The suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Encryption KEYMAT (key || salt).
    pub fn encr(&self) -> &[u8] {
        &self.encr
    }

    /// Integrity KEYMAT (empty for AEADs).
    pub fn integ(&self) -> &[u8] {
        &self.integ
    }

    /// Keys the cipher.
    pub fn cipher(&self) -> Result<SaCipher, SuiteError> {
        SaCipher::new(self.suite, &self.encr, &self.integ)
    }
}

impl std::fmt::Debug for SaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaKeys")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl PartialEq for SaKeys {
    fn eq(&self, other: &Self) -> bool {
        self.suite == other.suite
            && bool::from(self.encr.as_slice().ct_eq(other.encr.as_slice()))
            && bool::from(self.integ.as_slice().ct_eq(other.integ.as_slice()))
    }
}

impl Eq for SaKeys {}

/// Everything needed to install an inbound SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundSaConfig {
    /// Tunnel the SA belongs to.
    pub tunnel: TunnelId,
    /// Our SPI.
    pub spi: u32,
    /// Keys for the peer-to-us direction.
    pub keys: SaKeys,
    /// Extended sequence numbers negotiated.
    pub esn: bool,
    /// Replay window in packets (multiple of 64, 64..=4096).
    pub replay_window: u32,
    /// Allowed inner addresses.
    pub selectors: TrafficSelectors,
}

/// Everything needed to install an outbound SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundSaConfig {
    /// Tunnel the SA belongs to.
    pub tunnel: TunnelId,
    /// The peer's SPI.
    pub spi: u32,
    /// Keys for the us-to-peer direction.
    pub keys: SaKeys,
    /// Extended sequence numbers negotiated.
    pub esn: bool,
    /// Outer header template (addresses, UDP encapsulation, TTL).
    pub outer: OuterHeader,
    /// Volume lifetimes (soft: a rekey is requested; hard: the SA stops).
    pub lifetime: Lifetime,
}

mod counters;
mod fake;
use counters::Slot;
pub use counters::{TunnelCounters, TunnelCountersSnapshot, COUNTER_SLOTS};
pub use fake::{DataPlaneCall, FakeDataPlane};

/// What the table keeps per tunnel across its SAs: counters (rekeys keep
/// totals) and the source filter (`None`: every source the SA's selectors
/// allow).
#[derive(Debug, Default)]
struct TunnelShared {
    counters: TunnelCounters,
    sources: ArcSwapOption<SourceFilter>,
}

/// A volume lifetime limit passed by an outbound SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitEvent {
    /// Tunnel of the SA.
    pub tunnel: TunnelId,
    /// SPI of the outbound SA.
    pub spi: u32,
    /// `false`: the soft limit (rekey now); `true`: the hard limit (the SA
    /// no longer sends).
    pub hard: bool,
}

/// Called (from a worker, on the packet path) the first time an outbound SA
/// passes its soft and its hard limit: it must not block.
pub type LimitListener = dyn Fn(LimitEvent) + Send + Sync;

/// Why the data plane refused a change.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// Keys or suite refused.
    #[error(transparent)]
    Suite(#[from] SuiteError),
    /// SA parameters refused.
    #[error(transparent)]
    Sa(#[from] SaError),
    /// An inbound SA with this SPI is installed already.
    #[error("inbound SPI {spi:#010x} already installed")]
    SpiInUse {
        /// SPI.
        spi: u32,
    },
    /// No inbound SA with this SPI.
    #[error("no inbound SA with SPI {spi:#010x}")]
    UnknownSpi {
        /// SPI.
        spi: u32,
    },
    /// The tunnel's outbound SA is not the one named.
    #[error("tunnel {tunnel} has no outbound SA with SPI {spi:#010x}")]
    NoOutboundSa {
        /// Tunnel.
        tunnel: TunnelId,
        /// SPI.
        spi: u32,
    },
    /// The outbound SA sends plain ESP: it has no UDP port to change.
    #[error("outbound SA {spi:#010x} of tunnel {tunnel} is not UDP-encapsulated")]
    NotUdpEncapsulated {
        /// Tunnel.
        tunnel: TunnelId,
        /// SPI.
        spi: u32,
    },
    /// UDP port 0 cannot be a destination.
    #[error("invalid UDP destination port {port}")]
    InvalidUdpPort {
        /// Port.
        port: u16,
    },
    /// The implementation behind the trait failed (map update, netlink...).
    #[error("data plane backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The narrow interface through which the control plane programs the data
/// plane. Make-before-break rekey is three calls: install the new inbound
/// SA, install the new outbound SA for the tunnel (which switches to it and
/// returns the previous SPI), then after a grace period remove the old
/// inbound SA.
pub trait DataPlane: Send + Sync {
    /// Installs an inbound SA; its SPI must not be in use.
    fn install_inbound_sa(&self, sa: InboundSaConfig) -> Result<(), DataPlaneError>;
    /// Installs the outbound SA of a tunnel, replacing (switching from) the
    /// current one; returns the SPI of the replaced SA.
    fn install_outbound_sa(&self, sa: OutboundSaConfig) -> Result<Option<u32>, DataPlaneError>;
    /// Removes an inbound SA.
    fn remove_inbound_sa(&self, spi: u32) -> Result<(), DataPlaneError>;
    /// Removes a tunnel's outbound SA if it is still the one with `spi`.
    fn remove_outbound_sa(&self, tunnel: TunnelId, spi: u32) -> Result<(), DataPlaneError>;
    /// The peer's NAT mapping changed (IKE's `PeerEndpointChanged`): the
    /// tunnel's outbound SA `spi`, if it is still the installed one, now
    /// UDP-encapsulates to destination port `port`, keeping its keys and
    /// sequence numbers.
    fn set_outbound_udp_dst_port(
        &self,
        tunnel: TunnelId,
        spi: u32,
        port: u16,
    ) -> Result<(), DataPlaneError>;
    /// Routes a prefix into a tunnel.
    fn install_route(&self, prefix: IpPrefix, tunnel: TunnelId) -> Result<(), DataPlaneError>;
    /// Withdraws a prefix from a tunnel.
    fn withdraw_route(&self, prefix: IpPrefix, tunnel: TunnelId) -> Result<(), DataPlaneError>;
    /// Counters of a tunnel, `None` if the tunnel never had an SA.
    fn tunnel_counters(&self, tunnel: TunnelId) -> Option<TunnelCountersSnapshot>;
}

/// Hasher for SPIs and tunnel ids: one multiply. SPIs are chosen by us
/// (inbound) or keyed per tunnel (outbound), so no flooding concern.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (u64::from(n) ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// An installed inbound SA with its tunnel.
#[derive(Debug)]
pub struct InboundEntry {
    /// Tunnel the SA belongs to.
    pub tunnel: TunnelId,
    /// The SA (shared with the entry that replaces this one when the
    /// tunnel's source filter changes, so the replay window is one).
    pub sa: Arc<InboundSa>,
    shared: Arc<TunnelShared>,
    /// The tunnel's source filter when this entry was published: read
    /// without an atomic per packet; a change publishes new entries.
    sources: Option<Arc<SourceFilter>>,
}

/// An installed outbound SA with its tunnel.
#[derive(Debug)]
pub struct OutboundEntry {
    /// Tunnel the SA belongs to.
    pub tunnel: TunnelId,
    /// The SA. Its outer header template is the one installed; the UDP
    /// destination port in use is [`OutboundEntry::outer`]'s.
    pub sa: OutboundSa,
    shared: Arc<TunnelShared>,
    /// Where soft/hard limit events go, and whether each was reported.
    listener: Arc<ListenerSlot>,
    soft_reported: std::sync::atomic::AtomicBool,
    hard_reported: std::sync::atomic::AtomicBool,
    /// UDP destination port in use (0: plain ESP). Starts as the template's
    /// and moves when a NAT'd peer's mapping changes; an atomic rather than
    /// a new entry because a new `OutboundSa` would need the old one's
    /// sequence counter handed over, which cannot be done without a race
    /// against workers still holding the old map (a reused sequence number
    /// is a reused AEAD nonce).
    udp_dst_port: AtomicU32,
}

/// The table's current [`LimitListener`], shared with its outbound entries.
#[derive(Default)]
struct ListenerSlot(ArcSwapOption<Box<LimitListener>>);

impl std::fmt::Debug for ListenerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ListenerSlot")
    }
}

impl OutboundEntry {
    /// Reports a passed limit once (a relaxed load on later packets).
    #[cold]
    fn report_limit(&self, hard: bool) {
        let flag = if hard {
            &self.hard_reported
        } else {
            &self.soft_reported
        };
        if flag.load(Ordering::Relaxed) || flag.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(l) = self.listener.0.load().as_ref() {
            l(LimitEvent {
                tunnel: self.tunnel,
                spi: self.sa.spi(),
                hard,
            });
        }
    }

    /// The UDP destination port packets are encapsulated to now, `None`
    /// for plain ESP (for senders that add the outer headers themselves,
    /// e.g. the slow path's UDP socket after `encap_esp`).
    pub fn udp_dst_port(&self) -> Option<u16> {
        self.sa.outer().udp?;
        u16::try_from(self.udp_dst_port.load(Ordering::Relaxed)).ok()
    }

    /// The outer header template with the UDP destination port in use.
    pub fn outer(&self) -> OuterHeader {
        let mut o = *self.sa.outer();
        if let (Some(u), Some(port)) = (o.udp.as_mut(), self.udp_dst_port()) {
            u.dst_port = port;
        }
        o
    }

    /// Encapsulates with the SA, then points the UDP header at the port in
    /// use if it moved since install (one relaxed load otherwise).
    fn encap(&self, buf: &mut [u8], inner: Range<usize>) -> Result<Encapsulated, EncapError> {
        let e = self.sa.encap(buf, inner)?;
        let Some(udp) = self.sa.outer().udp else {
            return Ok(e);
        };
        let Some(port) = self.udp_dst_port() else {
            return Ok(e);
        };
        if port != udp.dst_port {
            let ip_len = if self.sa.outer().dst.is_ipv4() {
                IPV4_HEADER_LEN
            } else {
                IPV6_HEADER_LEN
            };
            // `encap` wrote the UDP header there; checked anyway.
            let at = e.packet.start + ip_len;
            if let Some(h) = buf.get_mut(at..at + 8) {
                rewrite_udp_dst_port(h, udp.dst_port, port);
            }
        }
        Ok(e)
    }
}

/// Replaces the destination port of a UDP header and updates its checksum
/// incrementally (RFC 1624 eqn. 3). A zero checksum (UDP over IPv4, RFC
/// 3948 §2.1) stays zero: it means "none".
fn rewrite_udp_dst_port(h: &mut [u8], old: u16, new: u16) {
    let Some(port) = h.get_mut(2..4) else { return };
    port.copy_from_slice(&new.to_be_bytes());
    let Some(ck) = h.get_mut(6..8) else { return };
    let check = u16::from_be_bytes([ck[0], ck[1]]);
    if check == 0 {
        return;
    }
    let mut sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    // `sum` fits in 16 bits after two folds.
    let mut c = !(sum as u16);
    if c == 0 {
        // RFC 768: a computed zero is sent as all ones.
        c = 0xffff;
    }
    ck.copy_from_slice(&c.to_be_bytes());
}

/// A decapsulated packet and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Tunnel of the inbound SA.
    pub tunnel: TunnelId,
    /// SPI of the inbound SA.
    pub spi: u32,
    /// Inner packet.
    pub decap: Decapsulated,
}

type InboundMap = IdMap<Arc<InboundEntry>>;
type OutboundMap = IdMap<Arc<OutboundEntry>>;

/// The SA table shared by all workers (wrap it in an `Arc`). Workers on the
/// hot path should each take a [`SaTableReader`].
#[derive(Default)]
pub struct SaTable {
    inbound: Arc<ArcSwap<InboundMap>>,
    outbound: Arc<ArcSwap<OutboundMap>>,
    /// Control path only: per-tunnel state outlives SAs so rekeys keep
    /// totals and filters.
    tunnels: Mutex<IdMap<Arc<TunnelShared>>>,
    listener: Arc<ListenerSlot>,
    /// Serializes writers (read-copy-update).
    writer: Mutex<()>,
    /// Next exclusive counter slot to hand to a reader.
    next_slot: std::sync::atomic::AtomicUsize,
    /// Sequence numbers a new outbound SA may send before its owner
    /// reserves more (0: no limit; see `set_seq_reservation`).
    seq_block: AtomicU64,
    /// Where SAs about to be installed continue (`expect_resume`), by SPI:
    /// (outbound: last sequence number used, inbound: right edge).
    resume_out: Mutex<IdMap<u64>>,
    resume_in: Mutex<IdMap<u64>>,
}

impl std::fmt::Debug for SaTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaTable")
            .field("inbound", &self.inbound.load().len())
            .field("outbound", &self.outbound.load().len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Writers leave the maps consistent at every step (they publish whole
    // copies), so a poisoned lock is safe to reuse.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SaTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn shared_for(&self, tunnel: TunnelId) -> Arc<TunnelShared> {
        lock(&self.tunnels).entry(tunnel).or_default().clone()
    }

    /// With `Some(block)`, every outbound SA installed from now on sends
    /// at most `block` sequence numbers before its owner has persisted more
    /// as used (`OutboundSa::reserve_through`): what lets a restarted owner
    /// resume SAs without ever sending a number twice.
    pub fn set_seq_reservation(&self, block: Option<u64>) {
        self.seq_block.store(block.unwrap_or(0), Ordering::Relaxed);
    }

    /// The next install of inbound SPI `spi_in` continues a persisted SA
    /// (nothing at or below `right_edge` accepted), and the next install of
    /// outbound SPI `spi_out` sends from `seq_out + 1`, once reserved.
    pub fn expect_resume(&self, spi_in: u32, right_edge: u64, spi_out: u32, seq_out: u64) {
        lock(&self.resume_in).insert(spi_in, right_edge);
        lock(&self.resume_out).insert(spi_out, seq_out);
    }

    /// Sets what is told when an outbound SA passes a volume limit
    /// (replaces the previous listener).
    pub fn set_limit_listener(&self, listener: Box<LimitListener>) {
        self.listener.0.store(Some(Arc::new(listener)));
    }

    /// Sets the inner sources a tunnel accepts from now on, for every SA of
    /// the tunnel, installed or to come (`None`: whatever the SAs'
    /// selectors allow).
    pub fn set_source_filter(&self, tunnel: TunnelId, filter: Option<SourceFilter>) {
        let filter = filter.map(Arc::new);
        // Under the writer lock: an install reads the filter under it too,
        // so it either sees this one or is republished below.
        let _w = lock(&self.writer);
        self.shared_for(tunnel).sources.store(filter.clone());
        let cur = self.inbound.load();
        if !cur.values().any(|e| e.tunnel == tunnel) {
            return;
        }
        // The entries of the tunnel are replaced by ones that carry the new
        // filter and the same SAs: the workers see it at their next packet
        // and the hot path reads no shared atomic for it.
        let mut next = IdMap::clone(&cur);
        for e in next.values_mut().filter(|e| e.tunnel == tunnel) {
            *e = Arc::new(InboundEntry {
                tunnel,
                sa: Arc::clone(&e.sa),
                shared: Arc::clone(&e.shared),
                sources: filter.clone(),
            });
        }
        self.inbound.store(Arc::new(next));
    }

    /// Forgets a tunnel's counters and source filter, so that its id can be
    /// reused by another tunnel from zero. Its SAs must be gone: entries
    /// still installed keep the old state until they are removed.
    pub fn forget_tunnel(&self, tunnel: TunnelId) {
        lock(&self.tunnels).remove(&tunnel);
    }

    /// Installs an inbound SA (see [`DataPlane::install_inbound_sa`]).
    pub fn install_inbound(&self, cfg: &InboundSaConfig) -> Result<(), DataPlaneError> {
        let sa = InboundSa::new(
            cfg.spi,
            cfg.keys.cipher()?,
            cfg.esn,
            cfg.replay_window,
            cfg.selectors.clone(),
        )?;
        if let Some(edge) = lock(&self.resume_in).remove(&cfg.spi) {
            sa.resume_at(edge);
        }
        let shared = self.shared_for(cfg.tunnel);
        let _w = lock(&self.writer);
        let cur = self.inbound.load();
        if cur.contains_key(&cfg.spi) {
            return Err(DataPlaneError::SpiInUse { spi: cfg.spi });
        }
        let entry = Arc::new(InboundEntry {
            tunnel: cfg.tunnel,
            sa: Arc::new(sa),
            sources: shared.sources.load_full(),
            shared,
        });
        let mut next = IdMap::clone(&cur);
        next.insert(cfg.spi, entry);
        self.inbound.store(Arc::new(next));
        Ok(())
    }

    /// Installs or switches a tunnel's outbound SA; returns the previous SPI.
    pub fn install_outbound(&self, cfg: &OutboundSaConfig) -> Result<Option<u32>, DataPlaneError> {
        let sa = OutboundSa::new(cfg.spi, cfg.keys.cipher()?, cfg.esn, cfg.outer)?
            .with_lifetime(cfg.lifetime);
        if let Some(last) = lock(&self.resume_out).remove(&cfg.spi) {
            sa.resume_after(last);
        } else {
            let block = self.seq_block.load(Ordering::Relaxed);
            if block > 0 {
                sa.limit_to_first(block);
            }
        }
        let entry = Arc::new(OutboundEntry {
            tunnel: cfg.tunnel,
            sa,
            shared: self.shared_for(cfg.tunnel),
            listener: Arc::clone(&self.listener),
            soft_reported: std::sync::atomic::AtomicBool::new(false),
            hard_reported: std::sync::atomic::AtomicBool::new(false),
            udp_dst_port: AtomicU32::new(cfg.outer.udp.map_or(0, |u| u32::from(u.dst_port))),
        });
        let _w = lock(&self.writer);
        let mut next = IdMap::clone(&self.outbound.load());
        let prev = next.insert(cfg.tunnel, entry).map(|e| e.sa.spi());
        self.outbound.store(Arc::new(next));
        Ok(prev)
    }

    /// Removes an inbound SA.
    pub fn remove_inbound(&self, spi: u32) -> Result<(), DataPlaneError> {
        let _w = lock(&self.writer);
        let mut next = IdMap::clone(&self.inbound.load());
        if next.remove(&spi).is_none() {
            return Err(DataPlaneError::UnknownSpi { spi });
        }
        self.inbound.store(Arc::new(next));
        Ok(())
    }

    /// Removes a tunnel's outbound SA if it is still the one with `spi`
    /// (a late delete of a rekeyed SA must not remove its successor).
    pub fn remove_outbound(&self, tunnel: TunnelId, spi: u32) -> Result<(), DataPlaneError> {
        let _w = lock(&self.writer);
        let cur = self.outbound.load();
        match cur.get(&tunnel) {
            Some(e) if e.sa.spi() == spi => {}
            _ => return Err(DataPlaneError::NoOutboundSa { tunnel, spi }),
        }
        let mut next = IdMap::clone(&cur);
        next.remove(&tunnel);
        self.outbound.store(Arc::new(next));
        Ok(())
    }

    /// Moves a tunnel's outbound SA `spi` to UDP destination port `port`
    /// (see [`DataPlane::set_outbound_udp_dst_port`]). The SA itself stays
    /// (same keys, same sequence counter, same entry): packets encapsulated
    /// after this returns carry the new port and the next sequence numbers;
    /// a worker in the middle of a packet sends that one with either port.
    /// Setting the port it has already is a no-op.
    pub fn set_outbound_udp_dst_port(
        &self,
        tunnel: TunnelId,
        spi: u32,
        port: u16,
    ) -> Result<(), DataPlaneError> {
        if port == 0 {
            return Err(DataPlaneError::InvalidUdpPort { port });
        }
        // Under the writer lock so a concurrent rekey cannot slip in
        // between the check and the store (it would then keep its own port,
        // from IKE, which is the new one anyway).
        let _w = lock(&self.writer);
        let cur = self.outbound.load();
        let e = match cur.get(&tunnel) {
            Some(e) if e.sa.spi() == spi => e,
            _ => return Err(DataPlaneError::NoOutboundSa { tunnel, spi }),
        };
        if e.sa.outer().udp.is_none() {
            return Err(DataPlaneError::NotUdpEncapsulated { tunnel, spi });
        }
        e.udp_dst_port.store(u32::from(port), Ordering::Relaxed);
        Ok(())
    }

    /// The inbound SA with this SPI.
    pub fn inbound(&self, spi: u32) -> Option<Arc<InboundEntry>> {
        self.inbound.load().get(&spi).cloned()
    }

    /// The outbound SA of a tunnel.
    pub fn outbound(&self, tunnel: TunnelId) -> Option<Arc<OutboundEntry>> {
        self.outbound.load().get(&tunnel).cloned()
    }

    /// Whether `f` holds for the SPI of some inbound SA.
    pub fn any_inbound(&self, mut f: impl FnMut(u32) -> bool) -> bool {
        self.inbound.load().keys().any(|&spi| f(spi))
    }

    /// Calls `f(spi, right_edge)` for every inbound SA, for the worker that
    /// writes the replay window's right edge back to the XDP `SA_IN` map.
    pub fn for_each_right_edge(&self, mut f: impl FnMut(u32, u64)) {
        for (spi, e) in self.inbound.load().iter() {
            f(*spi, e.sa.right_edge());
        }
    }

    /// Counters of a tunnel.
    pub fn counters(&self, tunnel: TunnelId) -> Option<TunnelCountersSnapshot> {
        lock(&self.tunnels)
            .get(&tunnel)
            .map(|t| t.counters.snapshot())
    }

    /// Encapsulates `buf[inner]` with the tunnel's outbound SA (see
    /// [`OutboundSa::encap`]). Lock-free.
    pub fn encap(
        &self,
        tunnel: TunnelId,
        buf: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Encapsulated, EncapError> {
        encap_in(&self.outbound.load(), Slot(None), tunnel, buf, inner, false)
    }

    /// Like [`encap`](Self::encap) but produces only the ESP packet.
    pub fn encap_esp(
        &self,
        tunnel: TunnelId,
        buf: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Encapsulated, EncapError> {
        encap_in(&self.outbound.load(), Slot(None), tunnel, buf, inner, true)
    }

    /// Decapsulates a received outer packet (from its IP header): finds the
    /// inbound SA by SPI and runs [`InboundSa::decap_esp`]. Lock-free lookup.
    pub fn decap(&self, buf: &mut [u8], packet: Range<usize>) -> Result<Received, DecapError> {
        let outer = parse_outer(buf, packet)?;
        decap_in(&self.inbound.load(), Slot(None), buf, outer.esp)
    }

    /// Decapsulates an ESP packet (SPI through ICV), e.g. read from a UDP
    /// socket on port 4500 by the slow path.
    pub fn decap_esp(&self, buf: &mut [u8], esp: Range<usize>) -> Result<Received, DecapError> {
        decap_in(&self.inbound.load(), Slot(None), buf, esp)
    }

    /// A per-worker reader: the same operations, with the maps cached so a
    /// lookup costs one relaxed pointer comparison instead of an `ArcSwap`
    /// load. Changes are seen at the next call.
    pub fn reader(&self) -> SaTableReader {
        let n = self.next_slot.fetch_add(1, Ordering::Relaxed);
        SaTableReader {
            inbound: Cache::new(self.inbound.clone()),
            outbound: Cache::new(self.outbound.clone()),
            slot: Slot((n < COUNTER_SLOTS).then_some(n)),
        }
    }
}

fn encap_in(
    map: &OutboundMap,
    slot: Slot,
    tunnel: TunnelId,
    buf: &mut [u8],
    inner: Range<usize>,
    esp_only: bool,
) -> Result<Encapsulated, EncapError> {
    let e = map.get(&tunnel).ok_or(EncapError::NoSa { tunnel })?;
    let len = inner.len() as u64;
    let r = if esp_only {
        e.sa.encap_esp(buf, inner)
    } else {
        e.encap(buf, inner)
    };
    let c = &e.shared.counters.slots[slot.index()];
    match &r {
        Ok(enc) => {
            slot.add(&c.tx_packets, 1);
            slot.add(&c.tx_bytes, len);
            if enc.soft_limit_reached {
                e.report_limit(false);
            }
        }
        Err(err) => {
            slot.add(&c.tx_errors, 1);
            if matches!(
                err,
                EncapError::SequenceExhausted { .. } | EncapError::LifetimeExpired { .. }
            ) {
                e.report_limit(true);
            }
        }
    }
    r
}

fn decap_in(
    map: &InboundMap,
    slot: Slot,
    buf: &mut [u8],
    esp: Range<usize>,
) -> Result<Received, DecapError> {
    let spi_bytes = buf
        .get(esp.start..esp.start.saturating_add(4))
        .ok_or(DecapError::RangeOutOfBounds)?;
    let spi = u32::from_be_bytes([spi_bytes[0], spi_bytes[1], spi_bytes[2], spi_bytes[3]]);
    let e = map.get(&spi).ok_or(DecapError::UnknownSpi { spi })?;
    let c = &e.shared.counters.slots[slot.index()];
    let r = e.sa.decap_esp(buf, esp).and_then(|d| {
        // The packet is authentic; whether its connection may send from
        // this source is the tunnel's filter's call.
        match e.sources.as_deref() {
            Some(f) if !f.allows(d.src) => Err(DecapError::SourceRefused { src: d.src }),
            _ => Ok(d),
        }
    });
    match r {
        Ok(d) => {
            slot.add(&c.rx_packets, 1);
            slot.add(&c.rx_bytes, d.inner.len() as u64);
            Ok(Received {
                tunnel: e.tunnel,
                spi,
                decap: d,
            })
        }
        Err(err) => {
            slot.add(&c.rx_drops, 1);
            match err {
                DecapError::SourceRefused { .. } | DecapError::SelectorRefused { .. } => {
                    slot.add(&c.rx_source_refused, 1)
                }
                DecapError::Replay(_) => slot.add(&c.rx_replay, 1),
                DecapError::IcvMismatch { .. } => slot.add(&c.rx_auth_failed, 1),
                _ => {}
            }
            Err(err)
        }
    }
}

/// One worker's handle on the [`SaTable`] (see [`SaTable::reader`]). It
/// holds the maps it last saw, so a removed SA's memory is released once
/// every reader has made another call. The first [`COUNTER_SLOTS`] readers
/// of a table count into a slot of their own (no locked instruction);
/// not `Clone`, so a slot never has two writers.
pub struct SaTableReader {
    inbound: Cache<Arc<ArcSwap<InboundMap>>, Arc<InboundMap>>,
    outbound: Cache<Arc<ArcSwap<OutboundMap>>, Arc<OutboundMap>>,
    slot: Slot,
}

impl std::fmt::Debug for SaTableReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaTableReader").finish_non_exhaustive()
    }
}

impl SaTableReader {
    /// See [`SaTable::encap`].
    pub fn encap(
        &mut self,
        tunnel: TunnelId,
        buf: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Encapsulated, EncapError> {
        encap_in(self.outbound.load(), self.slot, tunnel, buf, inner, false)
    }

    /// See [`SaTable::encap_esp`].
    pub fn encap_esp(
        &mut self,
        tunnel: TunnelId,
        buf: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Encapsulated, EncapError> {
        encap_in(self.outbound.load(), self.slot, tunnel, buf, inner, true)
    }

    /// See [`SaTable::decap`].
    pub fn decap(&mut self, buf: &mut [u8], packet: Range<usize>) -> Result<Received, DecapError> {
        let outer = parse_outer(buf, packet)?;
        decap_in(self.inbound.load(), self.slot, buf, outer.esp)
    }

    /// See [`SaTable::decap_esp`].
    pub fn decap_esp(&mut self, buf: &mut [u8], esp: Range<usize>) -> Result<Received, DecapError> {
        decap_in(self.inbound.load(), self.slot, buf, esp)
    }

    /// The inbound SA with this SPI (e.g. to read its right edge).
    pub fn inbound(&mut self, spi: u32) -> Option<&Arc<InboundEntry>> {
        self.inbound.load().get(&spi)
    }

    /// The outbound SA of a tunnel.
    pub fn outbound(&mut self, tunnel: TunnelId) -> Option<&Arc<OutboundEntry>> {
        self.outbound.load().get(&tunnel)
    }
}

impl DataPlane for SaTable {
    fn install_inbound_sa(&self, sa: InboundSaConfig) -> Result<(), DataPlaneError> {
        self.install_inbound(&sa)
    }
    fn install_outbound_sa(&self, sa: OutboundSaConfig) -> Result<Option<u32>, DataPlaneError> {
        self.install_outbound(&sa)
    }
    fn remove_inbound_sa(&self, spi: u32) -> Result<(), DataPlaneError> {
        self.remove_inbound(spi)
    }
    fn remove_outbound_sa(&self, tunnel: TunnelId, spi: u32) -> Result<(), DataPlaneError> {
        self.remove_outbound(tunnel, spi)
    }
    fn set_outbound_udp_dst_port(
        &self,
        tunnel: TunnelId,
        spi: u32,
        port: u16,
    ) -> Result<(), DataPlaneError> {
        SaTable::set_outbound_udp_dst_port(self, tunnel, spi, port)
    }
    /// Routes live in the XDP route tables and the kernel table, not here: the
    /// real data plane composes an `SaTable` with those. Standalone, the
    /// table accepts and ignores route calls.
    fn install_route(&self, _prefix: IpPrefix, _tunnel: TunnelId) -> Result<(), DataPlaneError> {
        Ok(())
    }
    fn withdraw_route(&self, _prefix: IpPrefix, _tunnel: TunnelId) -> Result<(), DataPlaneError> {
        Ok(())
    }
    fn tunnel_counters(&self, tunnel: TunnelId) -> Option<TunnelCountersSnapshot> {
        self.counters(tunnel)
    }
}

// The trait must stay usable as `Arc<dyn DataPlane>` from other crates.
const _: fn() = || {
    fn assert_object_safe(_: &dyn DataPlane) {}
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SaTable>();
    assert_send_sync::<FakeDataPlane>();
    assert_send_sync::<SaTableReader>();
    assert_send_sync::<std::sync::Arc<dyn DataPlane>>();
    let _ = assert_object_safe;
};
