//! Harnesses for tests and fuzzing (feature `testing`); nothing here is
//! used by the gateway itself.
//!
//! [`PipelineHarness`] drives a worker [`Pipeline`] (the per-frame logic of
//! the AF_XDP workers) with two tunnels whose SAs it installed itself, so
//! it also plays both customer gateways: it holds their side of every SA
//! (the peers' outbound SAs are our inbound ones, same SPI and keys, and
//! the other way round). That lets a script get past the parsers and the
//! AEAD: besides raw frames, it can ask for a frame that the peer sealed
//! around script-chosen inner bytes, so that what happens after
//! decryption (selectors, the tunnel's source filter, LAN lookup, TTL,
//! the slow-path hand-off, and whatever the workers do with inner packets
//! later) is explored too. Every outcome is checked against invariants
//! that panic when broken; see [`PipelineHarness::run`].
//!
//! # Script format
//!
//! A sequence of records, each `ctl` (one byte), an optional tamper
//! position (one byte, when `ctl` has [`TAMPER`]), a big-endian `u16`
//! length and that many bytes of body (cut short by the end of the input):
//!
//! * `ctl & 3` is the kind: [`WAN_RAW`] (the body is an Ethernet frame
//!   received on WAN), [`LAN_RAW`] (an Ethernet frame received on LAN),
//!   [`WAN_SEALED`] (the body is an inner IP packet: the peer encrypts it
//!   and the frame arrives on WAN) or [`SLOW_SEALED`] (the same packet,
//!   ESP only, enters the way the slow path takes it from the IKE socket:
//!   [`SaTable::decap_esp`]).
//! * `(ctl >> 2) & 3` picks the tunnel ([`BY_ROUTE`], [`TUNNEL_A`],
//!   [`TUNNEL_B`], [`UNKNOWN`]): for LAN frames the metadata's tunnel id
//!   ([`BY_ROUTE`]: the harness's route table on the destination, as the
//!   XDP program would), for sealed ones the peer that seals (an
//!   [`UNKNOWN`] peer uses an SPI we never installed; [`BY_ROUTE`] means
//!   tunnel A).
//! * [`BAD_META`]: the metadata is foreign or for the other direction.
//! * [`ALT`]: raw frames start at offset 0 of the chunk (no headroom);
//!   sealed frames carry an 802.1Q tag.
//! * [`TAMPER`]: the sealed ESP packet has one bit flipped at the tamper
//!   position (modulo its length).
//! * [`REPLAY`]: the previous sealed frame is received again first.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use gateway_common::{Direction, XdpMeta, SA_INDEX_NONE, XDP_META_MAGIC};
use gateway_esp::table::{InboundSaConfig, OutboundSaConfig, SaKeys, SaTable, TunnelId};
use gateway_esp::{
    Encryption, Integrity, IpPrefix, Lifetime, OuterHeader, SourceFilter, Suite, TrafficSelectors,
    UdpEncap, MAX_HEADROOM, MAX_TAILROOM,
};
use gateway_netio::netlink::NextHop;

use crate::dataplane::slowpath::SlowPathError;
use crate::dataplane::worker::{Pipeline, Resolver, SlowSink, Verdict, WorkerDrop};

/// Kind: an Ethernet frame received on WAN.
pub const WAN_RAW: u8 = 0;
/// Kind: an Ethernet frame received on LAN.
pub const LAN_RAW: u8 = 1;
/// Kind: an inner packet the peer seals; the frame arrives on WAN.
pub const WAN_SEALED: u8 = 2;
/// Kind: an inner packet the peer seals; its ESP enters the slow path.
pub const SLOW_SEALED: u8 = 3;
/// Tunnel: the route table (LAN), tunnel A (sealed).
pub const BY_ROUTE: u8 = 0 << 2;
/// Tunnel A: IPv4 outer, UDP-encapsulated, AES-128-GCM.
pub const TUNNEL_A: u8 = 1 << 2;
/// Tunnel B: IPv6 outer, plain ESP, AES-256-CBC + HMAC-SHA-256, ESN.
pub const TUNNEL_B: u8 = 2 << 2;
/// A tunnel (or peer SPI) the gateway does not know.
pub const UNKNOWN: u8 = 3 << 2;
/// Foreign or wrong-direction XDP metadata.
pub const BAD_META: u8 = 1 << 4;
/// No headroom (raw), an 802.1Q tag (sealed).
pub const ALT: u8 = 1 << 5;
/// Flip one bit of the sealed ESP packet.
pub const TAMPER: u8 = 1 << 6;
/// Receive the previous sealed frame again first.
pub const REPLAY: u8 = 1 << 7;

/// Tunnel ids of the harness.
pub const ID_A: TunnelId = 1;
pub const ID_B: TunnelId = 2;
/// The id an [`UNKNOWN`] LAN frame names: no SA.
pub const ID_UNKNOWN: TunnelId = 9;

/// Inbound SPIs (our side; the peers' outbound).
pub const SPI_IN_A: u32 = 0xa000_0001;
pub const SPI_IN_B: u32 = 0xb000_0002;
/// An SPI the gateway never installed (the [`UNKNOWN`] peer seals with it).
pub const SPI_UNKNOWN: u32 = 0x0bad_0003;
/// Outbound SPIs (our side; the peers' inbound).
pub const SPI_OUT_A: u32 = 0xa000_1001;
pub const SPI_OUT_B: u32 = 0xb000_1002;

/// Our WAN addresses and the peers'.
pub const WAN_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const PEER_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const WAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const PEER_B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// What tunnel A's peer may send from (its selectors are wider: the
/// filter is what refuses the rest).
pub const FILTER_A: [&str; 2] = ["198.51.100.0/25", "2001:db8:a::/56"];
/// Tunnel A's inbound traffic selectors (remote side).
pub const SELECTORS_A: [&str; 2] = ["198.51.100.0/24", "2001:db8:a::/48"];
/// What tunnel B's peer may send from (selectors: any).
pub const FILTER_B: [&str; 2] = ["203.0.113.0/26", "2001:db8:b::/48"];

/// Prefixes on the LAN: destinations the resolver places on the LAN
/// interface.
pub const LAN_PREFIXES: [&str; 2] = ["203.0.113.128/25", "fd00:1::/64"];
/// A LAN destination whose neighbour is not resolved yet.
pub const LAN_UNRESOLVED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 200);
/// A destination that resolves to another interface (the gateway itself).
pub const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);

const LAN_IF: u32 = 2;
const WAN_IF: u32 = 3;
const LAN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x1a, 0x01];
const WAN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x3a, 0x01];
/// An AF_XDP chunk (the UMEM frame size) and where a received frame
/// starts in it (`XDP_PACKET_HEADROOM` plus the UMEM headroom).
const CHUNK: usize = 4096;
const START: usize = 256 + 128;
use gateway_common::eth::ETH_HLEN;

fn prefixes(list: &[&str]) -> Vec<IpPrefix> {
    list.iter()
        .map(|p| p.parse().expect("harness prefixes are valid"))
        .collect()
}

fn in_any(list: &[&str], a: IpAddr) -> bool {
    prefixes(list).iter().any(|p| p.contains(a))
}

/// The neighbour table: LAN prefixes on LAN, the peers on WAN.
struct FixedRoutes;

impl Resolver for FixedRoutes {
    fn next_hop(&self, dst: IpAddr) -> Option<NextHop> {
        let (ifindex, dst_mac) = if dst == IpAddr::V4(LAN_UNRESOLVED) {
            return None;
        } else if dst == IpAddr::V4(ELSEWHERE) {
            (1, [0x02, 0, 0, 0, 0, 0x99])
        } else if dst == IpAddr::V4(PEER_A) || dst == IpAddr::V6(PEER_B) {
            (WAN_IF, WAN_MAC)
        } else if in_any(&LAN_PREFIXES, dst) {
            (LAN_IF, LAN_MAC)
        } else {
            return None;
        };
        Some(NextHop {
            ifindex,
            src_mac: [0x02, 0, 0, 0, 0, 0x01],
            dst_mac,
        })
    }
}

/// What the pipeline handed to the slow path while processing one frame.
#[derive(Default)]
struct Handed {
    inner: Vec<(TunnelId, Vec<u8>)>,
    outer: Vec<Vec<u8>>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Handed>>);

impl Recorder {
    fn take(&self) -> Handed {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl SlowSink for Recorder {
    fn deliver_inner(&self, tunnel: TunnelId, packet: &[u8]) -> Result<(), SlowPathError> {
        let mut h = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        h.inner.push((tunnel, packet.to_vec()));
        Ok(())
    }
    fn send_outer(&self, packet: &[u8]) -> Result<(), SlowPathError> {
        let mut h = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        h.outer.push(packet.to_vec());
        Ok(())
    }
}

/// What a script reached (the seed corpus test checks that each seed
/// reaches what it is for).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reached {
    /// Decrypted packets sent to the LAN by the worker.
    pub to_lan: u64,
    /// Encrypted frames sent to WAN by the worker.
    pub to_wan: u64,
    /// Decrypted packets handed to a TUN.
    pub to_tun: u64,
    /// Encrypted packets handed to the raw socket.
    pub to_raw: u64,
    /// Packets the slow path's entry decrypted.
    pub slow_decap: u64,
    /// Decrypted packets refused for their inner source (SA selectors or
    /// the tunnel's filter).
    pub source_refused: u64,
    /// Frames the worker dropped, by [`WorkerDrop`].
    pub drops: [u64; WorkerDrop::ALL.len()],
    /// Sealed records the peer could not seal (inner not IP, too long).
    pub unsealable: u64,
}

impl Reached {
    /// Drops for one reason.
    pub fn dropped(&self, reason: WorkerDrop) -> u64 {
        self.drops[reason as usize]
    }
}

/// A worker pipeline with two tunnels and the peers' side of their SAs.
pub struct PipelineHarness {
    pipeline: Pipeline<FixedRoutes, Recorder>,
    table: Arc<SaTable>,
    /// Both customer gateways: tunnel A and B as we number them, plus
    /// [`ID_UNKNOWN`] sealing with [`SPI_UNKNOWN`].
    peers: SaTable,
    handed: Recorder,
    filter_a: SourceFilter,
    filter_b: SourceFilter,
    chunk: Vec<u8>,
    scratch: Vec<u8>,
    last_sealed: Option<Vec<u8>>,
    reached: Reached,
}

impl Default for PipelineHarness {
    fn default() -> Self {
        Self::new()
    }
}

fn suite_a() -> Suite {
    Suite::new(Encryption::Aes128Gcm, None).expect("AEAD suite")
}

fn suite_b() -> Suite {
    Suite::new(Encryption::Aes256, Some(Integrity::Sha256)).expect("CBC + HMAC suite")
}

/// Fixed key material of one direction of a tunnel.
fn keys(suite: Suite, seed: u8) -> SaKeys {
    let encr: Vec<u8> = (0..suite.encr_keymat_len())
        .map(|i| seed.wrapping_add(i as u8))
        .collect();
    let integ: Vec<u8> = (0..suite.integ_keymat_len())
        .map(|i| seed ^ i as u8)
        .collect();
    SaKeys::new(suite, &encr, &integ).expect("key lengths match the suite")
}

struct Side {
    tunnel: TunnelId,
    spi: u32,
    keys: SaKeys,
    esn: bool,
    selectors: TrafficSelectors,
    outer: OuterHeader,
}

fn install(table: &SaTable, inbound: &Side, outbound: &Side) {
    table
        .install_inbound(&InboundSaConfig {
            tunnel: inbound.tunnel,
            spi: inbound.spi,
            keys: inbound.keys.clone(),
            esn: inbound.esn,
            replay_window: 64,
            selectors: inbound.selectors.clone(),
        })
        .expect("harness inbound SA");
    table
        .install_outbound(&OutboundSaConfig {
            tunnel: outbound.tunnel,
            spi: outbound.spi,
            keys: outbound.keys.clone(),
            esn: outbound.esn,
            outer: outbound.outer,
            lifetime: Lifetime::NONE,
        })
        .expect("harness outbound SA");
}

fn outer(src: IpAddr, dst: IpAddr, udp: bool) -> OuterHeader {
    OuterHeader {
        src,
        dst,
        udp: udp.then(UdpEncap::default),
        ttl: 64,
    }
}

impl PipelineHarness {
    /// Tunnels A and B up, with their source filters and the peers' SAs.
    pub fn new() -> Self {
        let (a, b) = (suite_a(), suite_b());
        let any = TrafficSelectors::any();
        let sel_a = TrafficSelectors {
            local: any.local.clone(),
            remote: prefixes(&SELECTORS_A),
        };
        let table = Arc::new(SaTable::new());
        let peers = SaTable::new();
        let v4 = |x: Ipv4Addr| IpAddr::V4(x);
        let v6 = |x: Ipv6Addr| IpAddr::V6(x);
        // Tunnel A, as we see it and as its peer does.
        let a_in = |tunnel, outer_hdr| Side {
            tunnel,
            spi: SPI_IN_A,
            keys: keys(a, 0x11),
            esn: false,
            selectors: sel_a.clone(),
            outer: outer_hdr,
        };
        let a_out = |tunnel, outer_hdr| Side {
            tunnel,
            spi: SPI_OUT_A,
            keys: keys(a, 0x22),
            esn: false,
            selectors: any.clone(),
            outer: outer_hdr,
        };
        install(
            &table,
            &a_in(ID_A, outer(v4(PEER_A), v4(WAN_V4), true)),
            &a_out(ID_A, outer(v4(WAN_V4), v4(PEER_A), true)),
        );
        install(
            &peers,
            &a_out(ID_A, outer(v4(WAN_V4), v4(PEER_A), true)),
            &a_in(ID_A, outer(v4(PEER_A), v4(WAN_V4), true)),
        );
        let b_in = |tunnel, outer_hdr| Side {
            tunnel,
            spi: SPI_IN_B,
            keys: keys(b, 0x33),
            esn: true,
            selectors: any.clone(),
            outer: outer_hdr,
        };
        let b_out = |tunnel, outer_hdr| Side {
            tunnel,
            spi: SPI_OUT_B,
            keys: keys(b, 0x44),
            esn: true,
            selectors: any.clone(),
            outer: outer_hdr,
        };
        install(
            &table,
            &b_in(ID_B, outer(v6(PEER_B), v6(WAN_V6), false)),
            &b_out(ID_B, outer(v6(WAN_V6), v6(PEER_B), false)),
        );
        install(
            &peers,
            &b_out(ID_B, outer(v6(WAN_V6), v6(PEER_B), false)),
            &b_in(ID_B, outer(v6(PEER_B), v6(WAN_V6), false)),
        );
        // A peer whose SA we never installed.
        peers
            .install_outbound(&OutboundSaConfig {
                tunnel: ID_UNKNOWN,
                spi: SPI_UNKNOWN,
                keys: keys(a, 0x55),
                esn: false,
                outer: outer(v4(PEER_A), v4(WAN_V4), true),
                lifetime: Lifetime::NONE,
            })
            .expect("harness unknown SA");
        let filter_a = SourceFilter::new(&prefixes(&FILTER_A));
        let filter_b = SourceFilter::new(&prefixes(&FILTER_B));
        table.set_source_filter(ID_A, Some(filter_a.clone()));
        table.set_source_filter(ID_B, Some(filter_b.clone()));
        let handed = Recorder::default();
        let pipeline = Pipeline::new(
            Arc::clone(&table),
            FixedRoutes,
            handed.clone(),
            LAN_IF,
            WAN_IF,
        );
        Self {
            pipeline,
            table,
            peers,
            handed,
            filter_a,
            filter_b,
            chunk: vec![0; CHUNK],
            scratch: vec![0; MAX_HEADROOM + 4 + CHUNK + MAX_TAILROOM],
            last_sealed: None,
            reached: Reached::default(),
        }
    }

    /// What the records run so far reached.
    pub fn reached(&self) -> Reached {
        let mut r = self.reached;
        let c = self.pipeline.counters().snapshot();
        for d in WorkerDrop::ALL {
            r.drops[d as usize] = c.dropped(d);
        }
        r.source_refused = [ID_A, ID_B]
            .iter()
            .filter_map(|t| self.table.counters(*t))
            .map(|c| c.rx_source_refused)
            .sum();
        r
    }

    /// Runs every record of `script` (see the module doc), checking the
    /// invariants after each frame; panics when one breaks.
    pub fn run(&mut self, script: &[u8]) {
        let mut rest = script;
        while let Some((&ctl, tail)) = rest.split_first() {
            rest = tail;
            let tamper = if ctl & TAMPER != 0 {
                let Some((&pos, tail)) = rest.split_first() else {
                    return;
                };
                rest = tail;
                Some(pos)
            } else {
                None
            };
            let Some((len, tail)) = rest.split_first_chunk::<2>() else {
                return;
            };
            let n = usize::from(u16::from_be_bytes(*len)).min(tail.len());
            let (body, tail) = tail.split_at(n);
            rest = tail;
            self.record(ctl, tamper, body);
        }
    }

    fn record(&mut self, ctl: u8, tamper: Option<u8>, body: &[u8]) {
        let tunnel_sel = ctl & UNKNOWN;
        let bad_meta = ctl & BAD_META != 0;
        let alt = ctl & ALT != 0;
        match ctl & 3 {
            WAN_RAW => {
                let start = if alt { 0 } else { START };
                self.wan_frame(body, start, bad_meta);
            }
            LAN_RAW => {
                let start = if alt { 0 } else { START };
                let tunnel = match tunnel_sel {
                    BY_ROUTE => route(body).unwrap_or(ID_UNKNOWN),
                    TUNNEL_A => ID_A,
                    TUNNEL_B => ID_B,
                    _ => ID_UNKNOWN,
                };
                self.lan_frame(body, start, tunnel, bad_meta);
            }
            kind => {
                if ctl & REPLAY != 0 {
                    if let Some(f) = self.last_sealed.take() {
                        self.wan_frame(&f, START, bad_meta);
                        self.last_sealed = Some(f);
                    }
                }
                let peer = match tunnel_sel {
                    BY_ROUTE | TUNNEL_A => ID_A,
                    TUNNEL_B => ID_B,
                    _ => ID_UNKNOWN,
                };
                if kind == WAN_SEALED {
                    let Some(frame) = self.seal_frame(peer, body, alt, tamper) else {
                        self.reached.unsealable += 1;
                        return;
                    };
                    self.wan_frame(&frame, START, bad_meta);
                    self.last_sealed = Some(frame);
                } else {
                    self.slow_sealed(peer, body, tamper);
                }
            }
        }
    }

    /// The peer's ESP (with outer headers unless `esp_only`) around
    /// `inner`, in `self.scratch`, with one bit flipped if asked.
    fn seal(
        &mut self,
        peer: TunnelId,
        inner: &[u8],
        esp_only: bool,
        tamper: Option<u8>,
    ) -> Option<Range<usize>> {
        let at = MAX_HEADROOM + 4;
        let room = self.scratch.len() - at - MAX_TAILROOM;
        if inner.len() > room {
            return None;
        }
        self.scratch[at..at + inner.len()].copy_from_slice(inner);
        let r = at..at + inner.len();
        let enc = if esp_only {
            self.peers.encap_esp(peer, &mut self.scratch, r)
        } else {
            self.peers.encap(peer, &mut self.scratch, r)
        }
        .ok()?;
        let p = enc.packet;
        if let Some(pos) = tamper {
            let i = p.start + usize::from(pos) % p.len();
            self.scratch[i] ^= 1 << (pos % 8);
        }
        Some(p)
    }

    /// Ethernet (optionally 802.1Q) + the peer's outer packet.
    fn seal_frame(
        &mut self,
        peer: TunnelId,
        inner: &[u8],
        vlan: bool,
        tamper: Option<u8>,
    ) -> Option<Vec<u8>> {
        let p = self.seal(peer, inner, false, tamper)?;
        let pkt = &self.scratch[p];
        let et: u16 = if pkt.first().is_some_and(|b| b >> 4 == 6) {
            0x86dd
        } else {
            0x0800
        };
        let mut f = Vec::with_capacity(18 + pkt.len());
        f.extend_from_slice(&[0x02, 0, 0, 0, 0x3a, 0x00]);
        f.extend_from_slice(&WAN_MAC);
        if vlan {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        }
        f.extend_from_slice(&et.to_be_bytes());
        f.extend_from_slice(pkt);
        Some(f)
    }

    /// The slow path's entry for ESP from the IKE socket: decapsulate with
    /// the shared table; what it would write to a TUN must pass the
    /// tunnel's source filter.
    fn slow_sealed(&mut self, peer: TunnelId, inner: &[u8], tamper: Option<u8>) {
        let Some(esp) = self.seal(peer, inner, true, tamper) else {
            self.reached.unsealable += 1;
            return;
        };
        let end = esp.end;
        if let Ok(rx) = self.table.decap_esp(&mut self.scratch, esp) {
            self.reached.slow_decap += 1;
            let r = rx.decap.inner;
            assert!(
                r.start <= r.end && r.end <= end,
                "inner {r:?} outside the ESP packet"
            );
            let pkt = &self.scratch[r];
            assert_eq!(
                ip_src(pkt),
                Some(rx.decap.src),
                "reported source is the packet's"
            );
            self.assert_source_allowed(rx.tunnel, pkt);
        }
    }

    fn meta(direction: Direction, tunnel: TunnelId, bad: bool) -> Option<XdpMeta> {
        let (magic, direction) = if bad {
            // Foreign magic for one direction, the other direction's
            // metadata for the other: both must be refused.
            match direction {
                Direction::Inbound => (0, direction as u32),
                Direction::Outbound => (XDP_META_MAGIC, Direction::Inbound as u32),
            }
        } else {
            (XDP_META_MAGIC, direction as u32)
        };
        Some(XdpMeta {
            magic,
            tunnel_id: tunnel,
            sa_index: SA_INDEX_NONE,
            direction,
        })
    }

    /// Puts `frame` in a fresh chunk at `start`; `None` if it does not fit.
    fn load(&mut self, frame: &[u8], start: usize) -> Option<Range<usize>> {
        let end = start.checked_add(frame.len()).filter(|e| *e <= CHUNK)?;
        // A pattern rather than zeros: bytes the pipeline leaks from
        // outside the frame are then not silently plausible.
        self.chunk.fill(0xa5);
        self.chunk[start..end].copy_from_slice(frame);
        Some(start..end)
    }

    fn rx_packets(&self) -> [u64; 2] {
        [ID_A, ID_B].map(|t| self.table.counters(t).map_or(0, |c| c.rx_packets))
    }

    fn wan_frame(&mut self, frame: &[u8], start: usize, bad_meta: bool) {
        let Some(range) = self.load(frame, start) else {
            return;
        };
        let before = self.pipeline.counters().snapshot();
        let rx_before = self.rx_packets();
        let v = self.pipeline.inbound(
            &mut self.chunk,
            range.clone(),
            Self::meta(Direction::Inbound, 0, bad_meta),
        );
        let after = self.pipeline.counters().snapshot();
        let rx_after = self.rx_packets();
        let handed = self.handed.take();
        // None today; an ICMP error back through the tunnel would be one,
        // and must then be ESP that a peer decrypts.
        for pkt in &handed.outer {
            self.assert_peer_decrypts(pkt, None);
        }
        // Which tunnel decrypted it (at most one).
        let decrypted: Vec<TunnelId> = [ID_A, ID_B]
            .into_iter()
            .zip(rx_before.iter().zip(&rx_after))
            .filter(|(_, (b, a))| a > b)
            .map(|(t, _)| t)
            .collect();
        assert!(decrypted.len() <= 1, "one frame decrypted by {decrypted:?}");
        assert_eq!(after.wan_rx - before.wan_rx, 1);
        assert_one_outcome(&before, &after);
        for (tunnel, pkt) in &handed.inner {
            assert_eq!(
                decrypted,
                [*tunnel],
                "TUN hand-off for a tunnel that did not decrypt"
            );
            assert!(pkt.len() <= usize::from(u16::MAX) + 40);
            self.assert_source_allowed(*tunnel, pkt);
        }
        assert_eq!(
            handed.inner.len() as u64,
            after.to_tun - before.to_tun,
            "TUN hand-offs counted"
        );
        if let Verdict::Forward(r) = v {
            self.reached.to_lan += 1;
            // Decryption only shrinks the frame.
            assert!(
                range.start <= r.start && r.start <= r.end && r.end <= range.end,
                "forwarded {r:?} outside the received frame {range:?}"
            );
            assert!(
                r.len() >= ETH_HLEN + 20,
                "forwarded frame of {} bytes",
                r.len()
            );
            let f = &self.chunk[r];
            assert_eq!(
                f[..6],
                LAN_MAC,
                "decrypted frame not addressed to a LAN neighbour"
            );
            let ip = &f[ETH_HLEN..];
            let et = u16::from_be_bytes([f[12], f[13]]);
            match ip[0] >> 4 {
                4 => assert_eq!(et, 0x0800),
                6 => assert_eq!(et, 0x86dd),
                v => panic!("forwarded IP version {v}"),
            }
            let [t] = decrypted[..] else {
                panic!("forwarded to the LAN without a decryption");
            };
            let dst = ip_dst(ip).expect("forwarded packet has a destination");
            assert!(
                in_any(&LAN_PREFIXES, dst),
                "forwarded to {dst}, not on the LAN"
            );
            self.assert_source_allowed(t, ip);
        }
        self.reached.to_tun += after.to_tun - before.to_tun;
    }

    fn lan_frame(&mut self, frame: &[u8], start: usize, tunnel: TunnelId, bad_meta: bool) {
        let Some(range) = self.load(frame, start) else {
            return;
        };
        let before = self.pipeline.counters().snapshot();
        let v = self.pipeline.outbound(
            &mut self.chunk,
            range.clone(),
            Self::meta(Direction::Outbound, tunnel, bad_meta),
        );
        let after = self.pipeline.counters().snapshot();
        let handed = self.handed.take();
        assert_eq!(after.lan_rx - before.lan_rx, 1);
        assert_one_outcome(&before, &after);
        assert!(handed.inner.is_empty(), "a LAN frame reached a TUN");
        assert_eq!(handed.outer.len() as u64, after.to_raw - before.to_raw);
        for pkt in &handed.outer {
            self.assert_peer_decrypts(pkt, Some(tunnel));
        }
        if let Verdict::Forward(r) = v {
            self.reached.to_wan += 1;
            assert!(
                r.start <= r.end && r.end <= CHUNK,
                "forwarded {r:?} outside the chunk"
            );
            assert!(
                r.len() >= ETH_HLEN + 20,
                "forwarded frame of {} bytes",
                r.len()
            );
            assert_eq!(self.chunk[r.start..r.start + 6], WAN_MAC);
            self.assert_peer_decrypts(&self.chunk[r.start + ETH_HLEN..r.end], Some(tunnel));
        }
        self.reached.to_raw += after.to_raw - before.to_raw;
    }

    /// What we send toward a peer must be ESP of the tunnel (`Some`) or of
    /// any tunnel (`None`), which that peer decrypts.
    fn assert_peer_decrypts(&self, packet: &[u8], tunnel: Option<TunnelId>) {
        let mut copy = packet.to_vec();
        let n = copy.len();
        match self.peers.decap(&mut copy, 0..n) {
            Ok(rx) => assert!(
                tunnel.is_none_or(|t| t == rx.tunnel),
                "sent into tunnel {} instead of {tunnel:?}",
                rx.tunnel
            ),
            Err(e) => panic!("the peer of {tunnel:?} cannot decrypt what we sent: {e}"),
        }
    }

    /// The invariant of the inner-source enforcement: nothing decrypted
    /// leaves the data path with a source outside its tunnel's filter.
    fn assert_source_allowed(&self, tunnel: TunnelId, pkt: &[u8]) {
        let src = ip_src(pkt).expect("a decrypted packet has a source");
        let filter = match tunnel {
            ID_A => &self.filter_a,
            ID_B => &self.filter_b,
            t => panic!("decrypted for tunnel {t}, which has no SA"),
        };
        assert!(
            filter.allows(src),
            "tunnel {tunnel} let inner source {src} through"
        );
    }
}

/// Every frame ends exactly one way: forwarded, handed to the slow path,
/// or dropped for one reason.
fn assert_one_outcome(
    b: &crate::dataplane::worker::WorkerCountersSnapshot,
    a: &crate::dataplane::worker::WorkerCountersSnapshot,
) {
    let drops: u64 = WorkerDrop::ALL
        .iter()
        .map(|d| a.dropped(*d) - b.dropped(*d))
        .sum();
    let n = (a.lan_tx - b.lan_tx)
        + (a.wan_tx - b.wan_tx)
        + (a.to_tun - b.to_tun)
        + (a.to_raw - b.to_raw)
        + drops;
    assert_eq!(n, 1, "a frame ended {n} ways: {b:?} -> {a:?}");
}

/// The tunnel a LAN frame's destination is routed into (what the XDP
/// program's route map says), by longest prefix.
fn route(frame: &[u8]) -> Option<TunnelId> {
    let et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let l3 = if et == 0x8100 { 18 } else { ETH_HLEN };
    let dst = ip_dst(frame.get(l3..)?)?;
    let routes = [(&SELECTORS_A[..], ID_A), (&FILTER_B[..], ID_B)];
    routes
        .iter()
        .flat_map(|(list, t)| prefixes(list).into_iter().map(move |p| (p, *t)))
        .filter(|(p, _)| p.contains(dst))
        .max_by_key(|(p, _)| p.len())
        .map(|(_, t)| t)
}

fn ip_src(p: &[u8]) -> Option<IpAddr> {
    match p.first()? >> 4 {
        4 => Some(IpAddr::V4(<[u8; 4]>::try_from(p.get(12..16)?).ok()?.into())),
        6 => Some(IpAddr::V6(<[u8; 16]>::try_from(p.get(8..24)?).ok()?.into())),
        _ => None,
    }
}

fn ip_dst(p: &[u8]) -> Option<IpAddr> {
    match p.first()? >> 4 {
        4 => Some(IpAddr::V4(<[u8; 4]>::try_from(p.get(16..20)?).ok()?.into())),
        6 => Some(IpAddr::V6(
            <[u8; 16]>::try_from(p.get(24..40)?).ok()?.into(),
        )),
        _ => None,
    }
}

/// One record of a script (see the module doc).
pub fn record(ctl: u8, tamper: Option<u8>, body: &[u8]) -> Vec<u8> {
    let mut v = vec![ctl | if tamper.is_some() { TAMPER } else { 0 }];
    v.extend(tamper);
    let n = u16::try_from(body.len()).expect("a record body fits in 64 KiB");
    v.extend_from_slice(&n.to_be_bytes());
    v.extend_from_slice(body);
    v
}
