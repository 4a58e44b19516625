//! ESP engine of the gateway, sans-I/O: RFC 4303 tunnel mode (inner IPv4/IPv6
//! over outer IPv4/IPv6, optionally in UDP per RFC 3948), every encryption of
//! the API, 32-bit and extended sequence numbers, the anti-replay window,
//! traffic-selector checks, and the SA table the data-plane workers share.
//!
//! It owns no sockets, threads or clocks: the AF_XDP workers and the TUN slow
//! path hand it buffers with headroom and tailroom and get ranges back. IKE
//! installs SAs through the [`table::DataPlane`] trait.

pub mod checksum;
pub mod packet;
pub mod replay;
pub mod sa;
pub mod selector;
pub mod suite;
pub mod table;

use std::net::IpAddr;

pub use packet::{parse_outer, InnerFamily, OuterEsp, UdpEncap, NAT_T_PORT};
pub use replay::{ReplayError, ReplayWindow, DEFAULT_WINDOW, MAX_WINDOW};
pub use sa::{
    Decapsulated, Encapsulated, InboundSa, Lifetime, OutboundSa, OuterHeader, SaError,
    MAX_HEADROOM, MAX_TAILROOM,
};
pub use selector::{IpPrefix, SourceFilter, TrafficSelectors};
pub use suite::{Encryption, Integrity, SaCipher, Suite, SuiteError};

/// Why a packet could not be encapsulated.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum EncapError {
    /// The inner range lies outside the buffer.
    #[error("inner range {start}..{end} outside a buffer of {len} bytes")]
    RangeOutOfBounds {
        /// Range start.
        start: usize,
        /// Range end.
        end: usize,
        /// Buffer length.
        len: usize,
    },
    /// The inner packet is neither IPv4 nor IPv6, or shorter than its
    /// header, or its header's lengths contradict it.
    #[error("inner packet is not IPv4 or IPv6")]
    InnerNotIp,
    /// Not enough room before the inner packet.
    #[error("need {needed} bytes of headroom, have {available}")]
    NoHeadroom {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// Not enough room after the inner packet.
    #[error("need {needed} bytes of tailroom, have {available}")]
    NoTailroom {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The outer packet would exceed the IP length field.
    #[error("outer packet of {len} bytes is too long")]
    TooLong {
        /// Length it would have.
        len: usize,
    },
    /// Every sequence number is used: the SA must be rekeyed (RFC 4303
    /// §3.3.3 forbids cycling).
    #[error("sequence numbers of SA {spi:#010x} exhausted; rekey required")]
    SequenceExhausted {
        /// SPI of the exhausted SA.
        spi: u32,
    },
    /// The sequence number is above what the SA's owner has persisted as
    /// used (see `OutboundSa::reserve_through`): not sent, so that a
    /// resumed SA can never send it again.
    #[error("sequence number of SA {spi:#010x} not reserved yet")]
    SequenceNotReserved {
        /// SPI of the SA.
        spi: u32,
    },
    /// The SA's hard byte lifetime is used up: the SA must be rekeyed.
    #[error("byte lifetime of SA {spi:#010x} expired; rekey required")]
    LifetimeExpired {
        /// SPI of the expired SA.
        spi: u32,
    },
    /// No outbound SA is installed for the tunnel.
    #[error("no outbound SA for tunnel {tunnel}")]
    NoSa {
        /// Tunnel id.
        tunnel: u32,
    },
    /// The cipher refused to seal (cannot happen with IP-sized packets).
    #[error("cipher refused to seal")]
    Crypto,
}

/// Why a received packet was dropped. Every drop has one.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum DecapError {
    /// The given range lies outside the buffer.
    #[error("packet range outside the buffer")]
    RangeOutOfBounds,
    /// Outer IP or UDP header truncated or with inconsistent lengths.
    #[error("outer header truncated")]
    OuterTruncated,
    /// Outer header is not IPv4 or IPv6.
    #[error("outer IP version {version}")]
    OuterNotIp {
        /// Version nibble seen.
        version: u8,
    },
    /// Outer packet is a fragment (reassembly is the kernel's job).
    #[error("outer packet is a fragment")]
    OuterFragment,
    /// Outer protocol is neither ESP nor UDP.
    #[error("outer protocol {protocol} is not ESP")]
    NotEsp {
        /// IP protocol number.
        protocol: u8,
    },
    /// UDP to a port other than 4500.
    #[error("UDP to port {port}, not ESP-in-UDP")]
    NotEspPort {
        /// Destination port.
        port: u16,
    },
    /// UDP-4500 with a non-ESP marker: an IKE message for the IKE daemon.
    #[error("IKE message (non-ESP marker)")]
    IkeMessage,
    /// NAT-keepalive (RFC 3948 §2.3): drop silently.
    #[error("NAT keepalive")]
    NatKeepalive,
    /// ESP packet shorter than header + IV + minimal payload + ICV.
    #[error("ESP packet of {len} bytes is truncated")]
    EspTruncated {
        /// ESP length.
        len: usize,
    },
    /// Ciphertext length not a multiple of the cipher's alignment.
    #[error("ciphertext length {len} misaligned")]
    BadCiphertextLength {
        /// Ciphertext length.
        len: usize,
    },
    /// No inbound SA with this SPI.
    #[error("unknown SPI {spi:#010x}")]
    UnknownSpi {
        /// SPI.
        spi: u32,
    },
    /// Packet handed to an SA of another SPI.
    #[error("SPI {got:#010x} given to SA {expected:#010x}")]
    SpiMismatch {
        /// SPI of the SA.
        expected: u32,
        /// SPI in the packet.
        got: u32,
    },
    /// Refused by the anti-replay window.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// ICV did not verify.
    #[error("ICV mismatch on SA {spi:#010x} seq {seq}")]
    IcvMismatch {
        /// SPI.
        spi: u32,
        /// Full sequence number as inferred.
        seq: u64,
    },
    /// Pad length larger than the payload.
    #[error("pad length {pad_len} larger than the payload")]
    BadPadLength {
        /// Pad length field.
        pad_len: u8,
    },
    /// Padding bytes not 1, 2, 3, ... (RFC 4303 §2.4).
    #[error("padding bytes are not 1, 2, 3, ...")]
    BadPadding,
    /// Dummy packet (next header 59, RFC 4303 §2.6): drop silently.
    #[error("dummy packet")]
    DummyPacket,
    /// Next header other than IPv4 (4), IPv6 (41) or none (59).
    #[error("unsupported next header {next_header}")]
    UnsupportedNextHeader {
        /// Next header field.
        next_header: u8,
    },
    /// Inner packet shorter than its IP header.
    #[error("inner packet of {len} bytes truncated")]
    InnerTruncated {
        /// Inner length.
        len: usize,
    },
    /// Inner IP version does not match the next header.
    #[error("next header {next_header} but inner IP version {version}")]
    InnerVersionMismatch {
        /// Next header field.
        next_header: u8,
        /// Inner version nibble.
        version: u8,
    },
    /// Inner IP length field inconsistent with the decrypted payload.
    #[error("inner length {claimed} but {available} bytes decrypted")]
    InnerLengthMismatch {
        /// Length claimed by the inner header.
        claimed: usize,
        /// Bytes available.
        available: usize,
    },
    /// Inner source outside what the tunnel's connection may send (its
    /// routing policy's `prefix_filter_in` and interconnection subnets).
    #[error("inner source {src} not allowed for this connection")]
    SourceRefused {
        /// Inner source.
        src: IpAddr,
    },
    /// Inner source/destination not allowed by the SA's traffic selectors.
    #[error("inner {src} -> {dst} not allowed by the SA's traffic selectors")]
    SelectorRefused {
        /// Inner source.
        src: IpAddr,
        /// Inner destination.
        dst: IpAddr,
    },
}

impl DecapError {
    /// Short stable name for counters and metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            DecapError::RangeOutOfBounds => "range_out_of_bounds",
            DecapError::OuterTruncated => "outer_truncated",
            DecapError::OuterNotIp { .. } => "outer_not_ip",
            DecapError::OuterFragment => "outer_fragment",
            DecapError::NotEsp { .. } => "not_esp",
            DecapError::NotEspPort { .. } => "not_esp_port",
            DecapError::IkeMessage => "ike_message",
            DecapError::NatKeepalive => "nat_keepalive",
            DecapError::EspTruncated { .. } => "esp_truncated",
            DecapError::BadCiphertextLength { .. } => "bad_ciphertext_length",
            DecapError::UnknownSpi { .. } => "unknown_spi",
            DecapError::SpiMismatch { .. } => "spi_mismatch",
            DecapError::Replay(ReplayError::Replayed { .. }) => "replayed",
            DecapError::Replay(ReplayError::TooOld { .. }) => "replay_too_old",
            DecapError::Replay(ReplayError::Zero) => "sequence_zero",
            DecapError::IcvMismatch { .. } => "icv_mismatch",
            DecapError::BadPadLength { .. } => "bad_pad_length",
            DecapError::BadPadding => "bad_padding",
            DecapError::DummyPacket => "dummy_packet",
            DecapError::UnsupportedNextHeader { .. } => "unsupported_next_header",
            DecapError::InnerTruncated { .. } => "inner_truncated",
            DecapError::InnerVersionMismatch { .. } => "inner_version_mismatch",
            DecapError::InnerLengthMismatch { .. } => "inner_length_mismatch",
            DecapError::SelectorRefused { .. } => "selector_refused",
            DecapError::SourceRefused { .. } => "source_refused",
        }
    }

    /// True for packets dropped by design rather than as errors (dummy
    /// packets, NAT keepalives): count them, do not log them.
    pub fn is_silent(&self) -> bool {
        matches!(self, DecapError::DummyPacket | DecapError::NatKeepalive)
    }
}

/// The RustCrypto crates behind the suites ring lacks, re-exported so the
/// benchmark can time the bare primitive against our encap/decap with the
/// exact same versions. Not part of the supported API.
#[doc(hidden)]
pub mod raw_crypto {
    pub use {aes, aes_gcm, cbc, ccm, hmac, sha2};
}
