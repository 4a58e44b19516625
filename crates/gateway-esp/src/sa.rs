//! One ESP SA per direction in tunnel mode (RFC 4303): the outbound SA
//! allocates sequence numbers and encapsulates, the inbound SA checks the
//! replay window, verifies, decrypts and validates. Both work in place in a
//! caller-provided buffer and never allocate per packet.
//!
//! Concurrency: an `OutboundSa` is shared by all workers; its sequence
//! number is an `AtomicU64` taken with `fetch_add` (no lock). An
//! `InboundSa`'s replay window is checked lock-free before decryption and
//! marked under a short per-SA spin lock after it (a few bit operations), never
//! held during the crypto, so workers decrypting one SA contend only briefly.

use std::net::IpAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::packet::{
    self, check_inner, write_ipv4, write_ipv6, InnerFamily, UdpEncap, IPPROTO_ESP, IPPROTO_UDP,
    IPV4_HEADER_LEN, IPV6_HEADER_LEN, NEXT_HEADER_IPV4, NEXT_HEADER_IPV6, NEXT_HEADER_NONE,
    UDP_HEADER_LEN,
};
use crate::replay::{BadWindowSize, ReplayWindow};
use crate::selector::TrafficSelectors;
use crate::suite::{SaCipher, Suite, ESP_HEADER_LEN, MAX_ICV_LEN, MAX_IV_LEN};
use crate::{DecapError, EncapError};

/// Headroom before the inner packet that is enough for any SA: outer IPv6,
/// UDP, ESP header and the largest IV.
pub const MAX_HEADROOM: usize = IPV6_HEADER_LEN + UDP_HEADER_LEN + ESP_HEADER_LEN + MAX_IV_LEN;
/// Tailroom after the inner packet that is enough for any SA: largest
/// padding (15), pad length, next header and the largest ICV.
pub const MAX_TAILROOM: usize = 15 + 2 + MAX_ICV_LEN;

/// Highest sequence number a 32-bit SA sends.
pub const SEQ_MAX_32: u64 = u32::MAX as u64;
/// Highest sequence number an ESN SA sends. Kept 2^32 below 2^64 so that
/// workers racing past the limit can never wrap the counter before it is
/// clamped back (each failed attempt adds one).
pub const SEQ_MAX_ESN: u64 = u64::MAX - (1 << 32);

/// Volume lifetimes of an outbound SA (RFC 4301 §4.4.2.1): past a soft
/// limit the SA asks to be rekeyed (once, through the table's listener),
/// past a hard limit it refuses to encapsulate. `None` leaves a limit to
/// the sequence space (7/8 of it for the soft packet limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Lifetime {
    /// Packets after which a rekey is requested.
    pub soft_packets: Option<u64>,
    /// Packets after which the SA stops sending.
    pub hard_packets: Option<u64>,
    /// Inner bytes after which a rekey is requested.
    pub soft_bytes: Option<u64>,
    /// Inner bytes after which the SA stops sending.
    pub hard_bytes: Option<u64>,
}

impl Lifetime {
    /// No volume limit beyond the sequence space.
    pub const NONE: Lifetime = Lifetime {
        soft_packets: None,
        hard_packets: None,
        soft_bytes: None,
        hard_bytes: None,
    };

    /// Only a soft packet limit.
    pub fn soft_packets(n: u64) -> Self {
        Self {
            soft_packets: Some(n),
            ..Self::NONE
        }
    }
}

/// Outer header template of an outbound SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OuterHeader {
    /// Our public address (outer source).
    pub src: IpAddr,
    /// The peer's public address (outer destination).
    pub dst: IpAddr,
    /// UDP encapsulation (RFC 3948), `None` for plain ESP.
    pub udp: Option<UdpEncap>,
    /// TTL / hop limit of the outer header.
    pub ttl: u8,
}

impl OuterHeader {
    /// Length of the outer IP (+UDP) headers.
    pub fn len(&self) -> usize {
        let ip = if self.dst.is_ipv4() {
            IPV4_HEADER_LEN
        } else {
            IPV6_HEADER_LEN
        };
        ip + if self.udp.is_some() {
            UDP_HEADER_LEN
        } else {
            0
        }
    }

    /// Always false: an outer header has at least an IP header.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Why an SA could not be built.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SaError {
    /// Outer source and destination of different families.
    #[error("outer addresses {src} and {dst} are of different families")]
    MixedFamilies {
        /// Outer source.
        src: IpAddr,
        /// Outer destination.
        dst: IpAddr,
    },
    /// Replay window size refused.
    #[error(transparent)]
    Window(#[from] BadWindowSize),
    /// Suite or key material refused.
    #[error(transparent)]
    Suite(#[from] crate::suite::SuiteError),
}

/// Result of a successful encapsulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encapsulated {
    /// Range of the produced packet in the buffer (outer IP header, or the
    /// ESP header for [`OutboundSa::encap_esp`], through the ICV).
    pub packet: Range<usize>,
    /// Sequence number used.
    pub seq: u64,
    /// The soft limit is reached: the SA should be rekeyed soon.
    pub soft_limit_reached: bool,
}

/// Result of a successful decapsulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decapsulated {
    /// Range of the inner IP packet in the buffer.
    pub inner: Range<usize>,
    /// Inner family.
    pub family: InnerFamily,
    /// Full (64-bit) sequence number of the packet.
    pub seq: u64,
    /// Inner source address (already checked against the SA's selectors).
    pub src: IpAddr,
}

/// The sending half of a CHILD SA.
pub struct OutboundSa {
    spi: u32,
    cipher: SaCipher,
    esn: bool,
    outer: OuterHeader,
    /// Last sequence number handed out (0: none yet).
    seq: AtomicU64,
    /// Highest sequence number that may be sent: what the owner has
    /// persisted as used (`reserve_through`); `u64::MAX` when the owner
    /// persists nothing. Numbers drawn above it are burnt, never sent.
    reserved: AtomicU64,
    soft_limit: u64,
    hard_limit: u64,
    /// Inner bytes sent, counted only when a byte limit is set (one more
    /// atomic per packet is not paid otherwise).
    bytes: AtomicU64,
    count_bytes: bool,
    soft_bytes: u64,
    hard_bytes: u64,
}

impl std::fmt::Debug for OutboundSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundSa")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("suite", &self.cipher.suite())
            .field("esn", &self.esn)
            .field("outer", &self.outer)
            .field("seq", &self.seq.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl OutboundSa {
    /// Builds an outbound SA. The soft limit defaults to 7/8 of the sequence
    /// space (32-bit) so IKE has time to rekey before exhaustion.
    pub fn new(spi: u32, cipher: SaCipher, esn: bool, outer: OuterHeader) -> Result<Self, SaError> {
        if outer.src.is_ipv4() != outer.dst.is_ipv4() {
            return Err(SaError::MixedFamilies {
                src: outer.src,
                dst: outer.dst,
            });
        }
        let hard_limit = if esn { SEQ_MAX_ESN } else { SEQ_MAX_32 };
        Ok(Self {
            spi,
            cipher,
            esn,
            outer,
            seq: AtomicU64::new(0),
            reserved: AtomicU64::new(u64::MAX),
            soft_limit: hard_limit - hard_limit / 8,
            hard_limit,
            bytes: AtomicU64::new(0),
            count_bytes: false,
            soft_bytes: u64::MAX,
            hard_bytes: u64::MAX,
        })
    }

    /// Sets the sequence number from which `soft_limit_reached` is reported.
    pub fn with_soft_limit(mut self, soft_limit: u64) -> Self {
        self.soft_limit = soft_limit.min(self.hard_limit);
        self
    }

    /// Applies volume lifetimes: packet limits lower the sequence limits
    /// (never above what the sequence space allows), byte limits turn on
    /// byte counting.
    pub fn with_lifetime(mut self, l: Lifetime) -> Self {
        if let Some(h) = l.hard_packets {
            self.hard_limit = h.clamp(1, self.hard_limit);
            self.soft_limit = self.soft_limit.min(self.hard_limit);
        }
        if let Some(s) = l.soft_packets {
            self.soft_limit = s.min(self.hard_limit);
        }
        if l.soft_bytes.is_some() || l.hard_bytes.is_some() {
            self.count_bytes = true;
            self.hard_bytes = l.hard_bytes.unwrap_or(u64::MAX);
            self.soft_bytes = l.soft_bytes.unwrap_or(u64::MAX).min(self.hard_bytes);
        }
        self
    }

    /// Inner bytes sent so far (0 unless a byte limit is set).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// SPI (chosen by the peer).
    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// Suite.
    pub fn suite(&self) -> Suite {
        self.cipher.suite()
    }

    /// Whether extended sequence numbers are in use.
    pub fn esn(&self) -> bool {
        self.esn
    }

    /// Outer header template.
    pub fn outer(&self) -> &OuterHeader {
        &self.outer
    }

    /// Headroom [`encap`](Self::encap) needs before the inner packet.
    pub fn headroom(&self) -> usize {
        self.outer.len() + self.esp_headroom()
    }

    /// Headroom [`encap_esp`](Self::encap_esp) needs before the inner packet.
    pub fn esp_headroom(&self) -> usize {
        ESP_HEADER_LEN + self.cipher.suite().iv_len()
    }

    /// Tailroom needed after the inner packet (worst-case padding).
    pub fn tailroom(&self) -> usize {
        let s = self.cipher.suite();
        s.pad_align() - 1 + 2 + s.icv_len()
    }

    /// Last sequence number used (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed).min(self.hard_limit)
    }

    /// Highest sequence number this SA will send.
    pub fn hard_limit(&self) -> u64 {
        self.hard_limit
    }

    /// True once a soft limit (packets or bytes) is passed.
    pub fn soft_limit_reached(&self) -> bool {
        self.seq.load(Ordering::Relaxed) >= self.soft_limit || self.bytes() >= self.soft_bytes
    }

    /// True once every sequence number (or the byte budget) is used: rekey now.
    pub fn exhausted(&self) -> bool {
        self.seq.load(Ordering::Relaxed) >= self.hard_limit || self.bytes() >= self.hard_bytes
    }

    /// Sets the last used sequence number. For tests and benchmarks that
    /// need to start near a limit; never lower it on a live SA.
    #[doc(hidden)]
    pub fn set_last_seq(&self, last: u64) {
        self.seq.store(last.min(self.hard_limit), Ordering::Relaxed);
    }

    fn next_seq(&self) -> Result<u64, EncapError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        if seq > self.hard_limit || seq == 0 {
            // Clamp so the counter can never wrap around to reuse numbers.
            self.seq.store(self.hard_limit, Ordering::Relaxed);
            return Err(EncapError::SequenceExhausted { spi: self.spi });
        }
        if seq > self.reserved.load(Ordering::Relaxed) {
            // Not persisted as used yet: after a crash a resumed SA could
            // send it again. Burnt (the counter stays ahead), not sent.
            return Err(EncapError::SequenceNotReserved { spi: self.spi });
        }
        Ok(seq)
    }

    /// Sequence numbers up to `last` may be sent: the owner has persisted
    /// `last` as the SA's high-water mark (never lowered).
    pub fn reserve_through(&self, last: u64) {
        self.reserved.fetch_max(last, Ordering::Relaxed);
    }

    /// Highest sequence number that may be sent (`u64::MAX`: no limit).
    pub fn reserved(&self) -> u64 {
        self.reserved.load(Ordering::Relaxed)
    }

    /// Makes a new SA continue a persisted one: it sends from `last + 1`,
    /// and nothing until the owner reserves more (`reserve_through`). Call
    /// before the SA is visible to the workers.
    pub fn resume_after(&self, last: u64) {
        self.seq.store(last.min(self.hard_limit), Ordering::Relaxed);
        self.reserved.store(last, Ordering::Relaxed);
    }

    /// Limits a new SA to its first `block` sequence numbers until the
    /// owner reserves more (an SA never persisted cannot be resumed, so
    /// these need no record). Call before the SA is visible.
    pub fn limit_to_first(&self, block: u64) {
        self.reserved.store(block, Ordering::Relaxed);
    }

    /// Encapsulates the inner IP packet at `buf[inner]` in tunnel mode:
    /// writes outer IP (+ UDP) header, ESP header and IV into the headroom
    /// before it, encrypts it in place and appends padding, trailer and ICV
    /// in the tailroom after it. Returns the outer packet's range.
    #[inline]
    pub fn encap(&self, buf: &mut [u8], inner: Range<usize>) -> Result<Encapsulated, EncapError> {
        let outer_len = self.outer.len();
        let (esp, seq, tos, df, soft) = self.seal(buf, inner, outer_len)?;
        let start = esp.start - outer_len;
        let total = esp.end - start;
        let ip_len = if self.outer.dst.is_ipv4() {
            IPV4_HEADER_LEN
        } else {
            IPV6_HEADER_LEN
        };
        let proto = if self.outer.udp.is_some() {
            IPPROTO_UDP
        } else {
            IPPROTO_ESP
        };
        if let Some(udp) = self.outer.udp {
            let u = start + ip_len;
            let ulen = (esp.end - u) as u16;
            let h = &mut buf[u..u + UDP_HEADER_LEN];
            h[0..2].copy_from_slice(&udp.src_port.to_be_bytes());
            h[2..4].copy_from_slice(&udp.dst_port.to_be_bytes());
            h[4..6].copy_from_slice(&ulen.to_be_bytes());
            h[6..8].copy_from_slice(&[0, 0]);
            // RFC 3948 §2.1: zero checksum over IPv4. IPv6 requires one.
            if let (IpAddr::V6(s), IpAddr::V6(d)) = (self.outer.src, self.outer.dst) {
                let c = packet::udp6_checksum(&s, &d, &buf[u..esp.end]);
                buf[u + 6..u + 8].copy_from_slice(&c.to_be_bytes());
            }
        }
        match (self.outer.src, self.outer.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let h = &mut buf[start..start + IPV4_HEADER_LEN];
                write_ipv4(
                    h,
                    tos,
                    total as u16,
                    seq as u16,
                    df,
                    self.outer.ttl,
                    proto,
                    s,
                    d,
                );
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let h = &mut buf[start..start + IPV6_HEADER_LEN];
                write_ipv6(
                    h,
                    tos,
                    (total - IPV6_HEADER_LEN) as u16,
                    proto,
                    self.outer.ttl,
                    s,
                    d,
                );
            }
            // Refused in `new`.
            _ => return Err(EncapError::Crypto),
        }
        Ok(Encapsulated {
            packet: start..esp.end,
            seq,
            soft_limit_reached: soft,
        })
    }

    /// Like [`encap`](Self::encap) but produces only the ESP packet (SPI
    /// through ICV), for a sender whose socket adds the outer headers (the
    /// TUN slow path over a UDP socket on port 4500).
    pub fn encap_esp(
        &self,
        buf: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Encapsulated, EncapError> {
        let (esp, seq, _, _, soft) = self.seal(buf, inner, 0)?;
        Ok(Encapsulated {
            packet: esp,
            seq,
            soft_limit_reached: soft,
        })
    }

    /// Counts `len` inner bytes when byte limits are set; returns whether
    /// the soft byte limit is passed, or the hard limit's error.
    fn take_bytes(&self, len: usize) -> Result<bool, EncapError> {
        if !self.count_bytes {
            return Ok(false);
        }
        let len = len as u64;
        let total = self
            .bytes
            .fetch_add(len, Ordering::Relaxed)
            .saturating_add(len);
        if total > self.hard_bytes {
            return Err(EncapError::LifetimeExpired { spi: self.spi });
        }
        Ok(total >= self.soft_bytes)
    }

    /// Lays out and seals the ESP packet; returns its range, the sequence
    /// number, the inner TOS/traffic class and DF to copy outward, and
    /// whether a soft limit is passed.
    #[inline]
    fn seal(
        &self,
        buf: &mut [u8],
        inner: Range<usize>,
        outer_len: usize,
    ) -> Result<(Range<usize>, u64, u8, bool, bool), EncapError> {
        let suite = self.cipher.suite();
        if inner.start > inner.end || inner.end > buf.len() {
            return Err(EncapError::RangeOutOfBounds {
                start: inner.start,
                end: inner.end,
                len: buf.len(),
            });
        }
        let p = &buf[inner.clone()];
        let (next_header, family, tos, df) = match p.first().map(|b| b >> 4) {
            Some(4) if p.len() >= IPV4_HEADER_LEN => {
                (NEXT_HEADER_IPV4, InnerFamily::Ipv4, p[1], p[6] & 0x40 != 0)
            }
            Some(6) if p.len() >= IPV6_HEADER_LEN => (
                NEXT_HEADER_IPV6,
                InnerFamily::Ipv6,
                (p[0] << 4) | (p[1] >> 4),
                false,
            ),
            _ => return Err(EncapError::InnerNotIp),
        };
        // A header whose lengths the packet contradicts (IHL under 5, a
        // length beyond the packet) is refused by the peer's decap: it is
        // not worth a sequence number and the bandwidth.
        check_inner(p, family).map_err(|_| EncapError::InnerNotIp)?;
        let head = outer_len + ESP_HEADER_LEN + suite.iv_len();
        if inner.start < head {
            return Err(EncapError::NoHeadroom {
                needed: head,
                available: inner.start,
            });
        }
        let align = suite.pad_align();
        let unpadded = inner.len() + 2;
        // `align` is a power of two (4 or 16): mask, not divide.
        let pad_len = unpadded.wrapping_neg() & (align - 1);
        let tail = pad_len + 2 + suite.icv_len();
        if buf.len() - inner.end < tail {
            return Err(EncapError::NoTailroom {
                needed: tail,
                available: buf.len() - inner.end,
            });
        }
        let total = head + inner.len() + tail;
        // IPv4 total length and IPv6 payload length are 16-bit fields.
        let limit = usize::from(u16::MAX)
            + if outer_len > 0 && self.outer.dst.is_ipv6() {
                IPV6_HEADER_LEN
            } else {
                0
            };
        if total > limit {
            return Err(EncapError::TooLong { len: total });
        }
        let seq = self.next_seq()?;
        let soft = self.take_bytes(inner.len())? || seq >= self.soft_limit;
        let esp_start = inner.start - ESP_HEADER_LEN - suite.iv_len();
        let esp_end = inner.end + tail;
        // Padding bytes 1, 2, 3, ... (RFC 4303 §2.4), then pad length and
        // next header.
        for (i, b) in buf[inner.end..inner.end + pad_len].iter_mut().enumerate() {
            *b = (i + 1) as u8;
        }
        buf[inner.end + pad_len] = pad_len as u8;
        buf[inner.end + pad_len + 1] = next_header;
        let esp = &mut buf[esp_start..esp_end];
        esp[0..4].copy_from_slice(&self.spi.to_be_bytes());
        esp[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        self.cipher
            .seal(seq, self.esn, esp)
            .map_err(|_| EncapError::Crypto)?;
        Ok((esp_start..esp_end, seq, tos, df, soft))
    }
}

/// The receiving half of a CHILD SA.
pub struct InboundSa {
    spi: u32,
    cipher: SaCipher,
    esn: bool,
    selectors: TrafficSelectors,
    window: ReplayWindow,
}

impl std::fmt::Debug for InboundSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundSa")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("suite", &self.cipher.suite())
            .field("esn", &self.esn)
            .field("selectors", &self.selectors)
            .field("right_edge", &self.right_edge())
            .finish_non_exhaustive()
    }
}

impl InboundSa {
    /// Builds an inbound SA with a replay window of `window` packets
    /// (multiple of 64, 64..=4096; [`crate::replay::DEFAULT_WINDOW`] is 1024).
    pub fn new(
        spi: u32,
        cipher: SaCipher,
        esn: bool,
        window: u32,
        selectors: TrafficSelectors,
    ) -> Result<Self, SaError> {
        Ok(Self {
            spi,
            cipher,
            esn,
            selectors,
            window: ReplayWindow::new(window, esn)?,
        })
    }

    /// SPI (chosen by us).
    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// Suite.
    pub fn suite(&self) -> Suite {
        self.cipher.suite()
    }

    /// Whether extended sequence numbers are in use.
    pub fn esn(&self) -> bool {
        self.esn
    }

    /// Traffic selectors.
    pub fn selectors(&self) -> &TrafficSelectors {
        &self.selectors
    }

    /// Highest authenticated sequence number (replay window right edge);
    /// the data plane copies it into the XDP `SA_IN` map.
    pub fn right_edge(&self) -> u64 {
        self.window.right_edge()
    }

    /// Makes a new SA continue a persisted one: nothing at or below
    /// `right_edge` is accepted. Call before the SA is visible.
    pub fn resume_at(&self, right_edge: u64) {
        self.window.resume_at(right_edge);
    }

    /// Decapsulates a received outer packet (from its IP header) in place
    /// and returns the inner packet's range.
    pub fn decap(&self, buf: &mut [u8], packet: Range<usize>) -> Result<Decapsulated, DecapError> {
        let outer = packet::parse_outer(buf, packet)?;
        self.decap_esp(buf, outer.esp)
    }

    /// Decapsulates an ESP packet (SPI through ICV) in place: replay check,
    /// ICV, decryption, replay mark, trailer, inner packet and selectors.
    #[inline(always)]
    pub fn decap_esp(&self, buf: &mut [u8], esp: Range<usize>) -> Result<Decapsulated, DecapError> {
        let suite = self.cipher.suite();
        if esp.start > esp.end || esp.end > buf.len() {
            return Err(DecapError::RangeOutOfBounds);
        }
        let body = ESP_HEADER_LEN + suite.iv_len();
        let icv = suite.icv_len();
        let align = suite.pad_align();
        let len = esp.len();
        if len < body + icv + align {
            return Err(DecapError::EspTruncated { len });
        }
        let ct_len = len - body - icv;
        if ct_len & (align - 1) != 0 {
            return Err(DecapError::BadCiphertextLength { len: ct_len });
        }
        let p = &buf[esp.clone()];
        let spi = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
        if spi != self.spi {
            return Err(DecapError::SpiMismatch {
                expected: self.spi,
                got: spi,
            });
        }
        let seq_lo = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
        let seq = self.window.check(seq_lo)?;
        self.cipher
            .open(seq, self.esn, &mut buf[esp.clone()])
            .map_err(|_| DecapError::IcvMismatch { spi, seq })?;
        self.window.mark(seq)?;
        let pt = esp.start + body..esp.end - icv;
        let pad_len = usize::from(buf[pt.end - 2]);
        let next_header = buf[pt.end - 1];
        if pad_len + 2 > pt.len() {
            return Err(DecapError::BadPadLength {
                pad_len: pad_len as u8,
            });
        }
        let pad_start = pt.end - 2 - pad_len;
        let monotonic = buf[pad_start..pt.end - 2]
            .iter()
            .enumerate()
            .all(|(i, &b)| usize::from(b) == i + 1);
        if !monotonic {
            return Err(DecapError::BadPadding);
        }
        let family = match next_header {
            NEXT_HEADER_IPV4 => InnerFamily::Ipv4,
            NEXT_HEADER_IPV6 => InnerFamily::Ipv6,
            NEXT_HEADER_NONE => return Err(DecapError::DummyPacket),
            other => return Err(DecapError::UnsupportedNextHeader { next_header: other }),
        };
        let (inner_len, src, dst) = check_inner(&buf[pt.start..pad_start], family)?;
        if !self.selectors.allows_inbound(src, dst) {
            return Err(DecapError::SelectorRefused { src, dst });
        }
        Ok(Decapsulated {
            inner: pt.start..pt.start + inner_len,
            family,
            seq,
            src,
        })
    }
}
