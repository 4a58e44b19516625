//! Path attributes of UPDATE messages (RFC 4271 §4.3/§5, RFC 1997, RFC 4760,
//! RFC 6793) and the NLRI prefix encoding.
//!
//! This module owns the wire format of one attribute and the RFC 7606
//! classification of its errors (treat-as-withdraw, attribute-discard or
//! session reset). It does not know about sessions or policy: what to do with
//! a decoded attribute is the session's and the RIB's business.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::reader::Reader;

/// Attribute flag bits (RFC 4271 §4.3).
pub const FLAG_OPTIONAL: u8 = 0x80;
pub const FLAG_TRANSITIVE: u8 = 0x40;
pub const FLAG_PARTIAL: u8 = 0x20;
pub const FLAG_EXTENDED_LENGTH: u8 = 0x10;

pub const ORIGIN: u8 = 1;
pub const AS_PATH: u8 = 2;
pub const NEXT_HOP: u8 = 3;
pub const MULTI_EXIT_DISC: u8 = 4;
pub const LOCAL_PREF: u8 = 5;
pub const ATOMIC_AGGREGATE: u8 = 6;
pub const AGGREGATOR: u8 = 7;
pub const COMMUNITIES: u8 = 8;
pub const MP_REACH_NLRI: u8 = 14;
pub const MP_UNREACH_NLRI: u8 = 15;
pub const AS4_PATH: u8 = 17;
pub const AS4_AGGREGATOR: u8 = 18;

/// RFC 6793 §9: the 2-octet stand-in for a 4-octet ASN.
pub const AS_TRANS: u16 = 23456;

pub const AFI_IPV4: u16 = 1;
pub const AFI_IPV6: u16 = 2;
pub const SAFI_UNICAST: u8 = 1;

/// The address families this speaker carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AfiSafi {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl AfiSafi {
    pub fn from_codes(afi: u16, safi: u8) -> Option<Self> {
        match (afi, safi) {
            (AFI_IPV4, SAFI_UNICAST) => Some(Self::Ipv4Unicast),
            (AFI_IPV6, SAFI_UNICAST) => Some(Self::Ipv6Unicast),
            _ => None,
        }
    }
    pub fn afi(self) -> u16 {
        match self {
            Self::Ipv4Unicast => AFI_IPV4,
            Self::Ipv6Unicast => AFI_IPV6,
        }
    }
    pub fn safi(self) -> u8 {
        SAFI_UNICAST
    }
    pub fn of_prefix(prefix: &IpNet) -> Self {
        match prefix {
            IpNet::V4(_) => Self::Ipv4Unicast,
            IpNet::V6(_) => Self::Ipv6Unicast,
        }
    }
    pub fn of_addr(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::Ipv4Unicast,
            IpAddr::V6(_) => Self::Ipv6Unicast,
        }
    }
}

/// ORIGIN values; the derived order is the preference order of RFC 4271 §9.1.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentType {
    AsSet = 1,
    AsSequence = 2,
    AsConfedSequence = 3,
    AsConfedSet = 4,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsSegment {
    pub kind: SegmentType,
    pub asns: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    pub fn sequence(asns: Vec<u32>) -> Self {
        if asns.is_empty() {
            return Self::default();
        }
        Self {
            segments: vec![AsSegment {
                kind: SegmentType::AsSequence,
                asns,
            }],
        }
    }

    /// Path length for best-path selection (RFC 4271 §9.1.2.2 a): an AS_SET
    /// counts as one, confederation segments do not count.
    pub fn length(&self) -> u32 {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentType::AsSequence => u32::try_from(s.asns.len()).unwrap_or(u32::MAX),
                SegmentType::AsSet => 1,
                SegmentType::AsConfedSequence | SegmentType::AsConfedSet => 0,
            })
            .fold(0u32, u32::saturating_add)
    }

    pub fn contains(&self, asn: u32) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }

    /// The neighbouring AS: the first ASN of a leading AS_SEQUENCE.
    pub fn first_asn(&self) -> Option<u32> {
        let first = self.segments.first()?;
        match first.kind {
            SegmentType::AsSequence => first.asns.first().copied(),
            _ => None,
        }
    }
}

/// A community (RFC 1997) as its 32-bit value: high 16 bits ASN, low 16 bits value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Community(pub u32);

impl Community {
    pub const fn new(asn: u16, value: u16) -> Self {
        Self(((asn as u32) << 16) | value as u32)
    }
}

/// Next hop of MP_REACH_NLRI (RFC 4760 §3; RFC 2545 §3 for IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MpNextHop {
    Ipv4(Ipv4Addr),
    Ipv6 {
        global: Ipv6Addr,
        link_local: Option<Ipv6Addr>,
    },
}

impl MpNextHop {
    pub fn addr(&self) -> IpAddr {
        match self {
            Self::Ipv4(a) => IpAddr::V4(*a),
            Self::Ipv6 { global, .. } => IpAddr::V6(*global),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReachNlri {
    pub afi_safi: AfiSafi,
    pub next_hop: MpNextHop,
    pub nlri: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreachNlri {
    pub afi_safi: AfiSafi,
    pub withdrawn: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathAttribute {
    Origin(Origin),
    AsPath(AsPath),
    NextHop(Ipv4Addr),
    MultiExitDisc(u32),
    LocalPref(u32),
    AtomicAggregate,
    Aggregator {
        asn: u32,
        address: Ipv4Addr,
    },
    Communities(Vec<Community>),
    MpReachNlri(MpReachNlri),
    MpUnreachNlri(MpUnreachNlri),
    /// Anything else, kept raw (AS4_PATH, unknown optional attributes).
    Other {
        flags: u8,
        type_code: u8,
        value: Vec<u8>,
    },
}

/// How RFC 7606 says an attribute error must be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// The UPDATE's routes are withdrawn, the session stays up (RFC 7606 §2).
    TreatAsWithdraw,
    /// The attribute is dropped, the rest of the UPDATE is used.
    AttributeDiscard,
    /// NOTIFICATION and session reset.
    SessionReset,
}

/// An error in one path attribute, with the UPDATE Message Error subcode
/// RFC 4271 §6.3 assigns to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    #[error("attribute {type_code}: flags {flags:#04x} are wrong")]
    Flags { type_code: u8, flags: u8 },
    #[error("attribute {type_code}: length {length} is wrong")]
    Length { type_code: u8, length: usize },
    #[error("invalid ORIGIN {0}")]
    InvalidOrigin(u8),
    #[error("malformed AS_PATH")]
    MalformedAsPath,
    #[error("invalid NEXT_HOP {0}")]
    InvalidNextHop(Ipv4Addr),
    #[error("malformed optional attribute {type_code}")]
    Optional { type_code: u8 },
    #[error("unrecognized well-known attribute {type_code}")]
    UnrecognizedWellKnown { type_code: u8 },
    #[error("missing well-known attribute {type_code}")]
    MissingWellKnown { type_code: u8 },
    #[error("attribute length runs past the attribute section")]
    Overrun,
}

impl AttributeError {
    /// UPDATE Message Error subcode (RFC 4271 §6.3).
    pub fn subcode(&self) -> u8 {
        match self {
            Self::Flags { .. } => 4,
            Self::Length { .. } | Self::Overrun => 5,
            Self::InvalidOrigin(_) => 6,
            Self::InvalidNextHop(_) => 8,
            Self::Optional { .. } => 9,
            Self::MalformedAsPath => 11,
            Self::UnrecognizedWellKnown { .. } => 2,
            Self::MissingWellKnown { .. } => 3,
        }
    }
}

/// Maximum prefix length of a family, in bits.
fn max_len(afi: AfiSafi) -> u8 {
    match afi {
        AfiSafi::Ipv4Unicast => 32,
        AfiSafi::Ipv6Unicast => 128,
    }
}

/// NLRI error: a prefix that is too long or runs past its field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed NLRI")]
pub struct NlriError;

/// Decodes a sequence of `<length, prefix>` (RFC 4271 §4.3). Host bits past
/// the length are ignored, as the RFC says they are irrelevant.
pub fn decode_prefixes(buf: &[u8], afi: AfiSafi) -> Result<Vec<IpNet>, NlriError> {
    let mut r = Reader::new(buf);
    // Each prefix takes at least one byte, so the vector is bounded by the input.
    let mut out = Vec::new();
    while !r.is_empty() {
        let len = r.u8().ok_or(NlriError)?;
        if len > max_len(afi) {
            return Err(NlriError);
        }
        let bytes = r.take(usize::from(len).div_ceil(8)).ok_or(NlriError)?;
        let net = match afi {
            AfiSafi::Ipv4Unicast => {
                let mut a = [0u8; 4];
                a[..bytes.len()].copy_from_slice(bytes);
                IpNet::V4(
                    Ipv4Net::new(Ipv4Addr::from(a), len)
                        .map_err(|_| NlriError)?
                        .trunc(),
                )
            }
            AfiSafi::Ipv6Unicast => {
                let mut a = [0u8; 16];
                a[..bytes.len()].copy_from_slice(bytes);
                IpNet::V6(
                    Ipv6Net::new(Ipv6Addr::from(a), len)
                        .map_err(|_| NlriError)?
                        .trunc(),
                )
            }
        };
        out.push(net);
    }
    Ok(out)
}

/// Encoded size of one prefix.
pub fn prefix_wire_len(p: &IpNet) -> usize {
    1 + usize::from(p.prefix_len()).div_ceil(8)
}

pub fn encode_prefix(p: &IpNet, out: &mut Vec<u8>) {
    let len = p.prefix_len();
    out.push(len);
    let n = usize::from(len).div_ceil(8);
    match p.trunc() {
        IpNet::V4(v) => out.extend_from_slice(&v.addr().octets()[..n]),
        IpNet::V6(v) => out.extend_from_slice(&v.addr().octets()[..n]),
    }
}

/// Flags a well-behaved speaker uses for each attribute we know.
fn expected_flags(type_code: u8) -> Option<u8> {
    match type_code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => Some(FLAG_TRANSITIVE),
        MULTI_EXIT_DISC | MP_REACH_NLRI | MP_UNREACH_NLRI => Some(FLAG_OPTIONAL),
        AGGREGATOR | COMMUNITIES | AS4_PATH | AS4_AGGREGATOR => {
            Some(FLAG_OPTIONAL | FLAG_TRANSITIVE)
        }
        _ => None,
    }
}

/// RFC 7606 §7: how an error in this attribute is handled.
pub fn error_action(type_code: u8) -> ErrorAction {
    match type_code {
        ORIGIN | AS_PATH | NEXT_HOP | MULTI_EXIT_DISC | COMMUNITIES => ErrorAction::TreatAsWithdraw,
        // LOCAL_PREF from an eBGP peer is discarded anyway (RFC 7606 §7.5);
        // the aggregation attributes do not change forwarding (§7.6-7.8).
        LOCAL_PREF | ATOMIC_AGGREGATE | AGGREGATOR | AS4_PATH | AS4_AGGREGATOR => {
            ErrorAction::AttributeDiscard
        }
        // Without a parsable MP attribute the NLRI cannot be located (§7.11).
        MP_REACH_NLRI | MP_UNREACH_NLRI => ErrorAction::SessionReset,
        _ => ErrorAction::AttributeDiscard,
    }
}

/// Decodes the value of one attribute. `four_octet_as` says whether AS_PATH
/// and AGGREGATOR carry 4-octet ASNs (RFC 6793 capability negotiated).
pub fn decode_attribute(
    flags: u8,
    type_code: u8,
    value: &[u8],
    four_octet_as: bool,
) -> Result<PathAttribute, AttributeError> {
    if let Some(expected) = expected_flags(type_code) {
        if flags & (FLAG_OPTIONAL | FLAG_TRANSITIVE) != expected {
            return Err(AttributeError::Flags { type_code, flags });
        }
    } else if flags & FLAG_OPTIONAL == 0 {
        return Err(AttributeError::UnrecognizedWellKnown { type_code });
    }
    let length_err = AttributeError::Length {
        type_code,
        length: value.len(),
    };
    let u32_value = |v: &[u8]| -> Result<u32, AttributeError> {
        let a: [u8; 4] = v.try_into().map_err(|_| length_err.clone())?;
        Ok(u32::from_be_bytes(a))
    };
    Ok(match type_code {
        ORIGIN => match value {
            [0] => PathAttribute::Origin(Origin::Igp),
            [1] => PathAttribute::Origin(Origin::Egp),
            [2] => PathAttribute::Origin(Origin::Incomplete),
            [v] => return Err(AttributeError::InvalidOrigin(*v)),
            _ => return Err(length_err),
        },
        AS_PATH => PathAttribute::AsPath(decode_as_path(value, four_octet_as)?),
        NEXT_HOP => {
            let a = Ipv4Addr::from(u32_value(value)?);
            // RFC 4271 §6.3: a next hop that cannot be a host is invalid.
            // (Loopback is tolerated: the route goes to the session's
            // tunnel whatever the next hop, and tests run over lo.)
            if a.is_unspecified() || a.is_broadcast() || a.is_multicast() {
                return Err(AttributeError::InvalidNextHop(a));
            }
            PathAttribute::NextHop(a)
        }
        MULTI_EXIT_DISC => PathAttribute::MultiExitDisc(u32_value(value)?),
        LOCAL_PREF => PathAttribute::LocalPref(u32_value(value)?),
        ATOMIC_AGGREGATE => {
            if !value.is_empty() {
                return Err(length_err);
            }
            PathAttribute::AtomicAggregate
        }
        AGGREGATOR => {
            let asn_len = if four_octet_as { 4 } else { 2 };
            if value.len() != asn_len + 4 {
                return Err(length_err);
            }
            let mut r = Reader::new(value);
            let asn = if four_octet_as {
                r.u32()
            } else {
                r.u16().map(u32::from)
            }
            .ok_or(length_err.clone())?;
            let address = Ipv4Addr::from(r.u32().ok_or(length_err)?);
            PathAttribute::Aggregator { asn, address }
        }
        COMMUNITIES => {
            if value.is_empty() || value.len() & 3 != 0 {
                return Err(length_err);
            }
            PathAttribute::Communities(
                value
                    .chunks_exact(4)
                    .map(|c| Community(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                    .collect(),
            )
        }
        MP_REACH_NLRI => decode_mp_reach(value)?,
        MP_UNREACH_NLRI => decode_mp_unreach(value)?,
        _ => PathAttribute::Other {
            // Extended length is framing, chosen again on encode.
            flags: flags & !FLAG_EXTENDED_LENGTH,
            type_code,
            value: value.to_vec(),
        },
    })
}

fn decode_as_path(value: &[u8], four_octet_as: bool) -> Result<AsPath, AttributeError> {
    let width = if four_octet_as { 4 } else { 2 };
    let mut r = Reader::new(value);
    let mut segments = Vec::new();
    while !r.is_empty() {
        let kind = match r.u8().ok_or(AttributeError::MalformedAsPath)? {
            1 => SegmentType::AsSet,
            2 => SegmentType::AsSequence,
            3 => SegmentType::AsConfedSequence,
            4 => SegmentType::AsConfedSet,
            _ => return Err(AttributeError::MalformedAsPath),
        };
        let count = r.u8().ok_or(AttributeError::MalformedAsPath)?;
        // RFC 7606 §7.2: a zero-length segment is malformed.
        if count == 0 {
            return Err(AttributeError::MalformedAsPath);
        }
        let raw = r
            .take(usize::from(count) * width)
            .ok_or(AttributeError::MalformedAsPath)?;
        let asns = raw
            .chunks_exact(width)
            .map(|c| {
                if four_octet_as {
                    u32::from_be_bytes([c[0], c[1], c[2], c[3]])
                } else {
                    u32::from(u16::from_be_bytes([c[0], c[1]]))
                }
            })
            .collect();
        segments.push(AsSegment { kind, asns });
    }
    Ok(AsPath { segments })
}

fn decode_mp_reach(value: &[u8]) -> Result<PathAttribute, AttributeError> {
    let err = AttributeError::Optional {
        type_code: MP_REACH_NLRI,
    };
    let mut r = Reader::new(value);
    let afi = r.u16().ok_or(err.clone())?;
    let safi = r.u8().ok_or(err.clone())?;
    let afi_safi = AfiSafi::from_codes(afi, safi).ok_or(err.clone())?;
    let nh_len = r.u8().ok_or(err.clone())?;
    let nh = r.take(usize::from(nh_len)).ok_or(err.clone())?;
    let next_hop = match (afi_safi, nh.len()) {
        (AfiSafi::Ipv4Unicast, 4) => MpNextHop::Ipv4(Ipv4Addr::new(nh[0], nh[1], nh[2], nh[3])),
        (AfiSafi::Ipv6Unicast, 16) => MpNextHop::Ipv6 {
            global: ipv6_at(nh, 0),
            link_local: None,
        },
        (AfiSafi::Ipv6Unicast, 32) => MpNextHop::Ipv6 {
            global: ipv6_at(nh, 0),
            link_local: Some(ipv6_at(nh, 16)),
        },
        _ => return Err(err),
    };
    let _reserved = r.u8().ok_or(err.clone())?;
    let nlri = decode_prefixes(r.rest(), afi_safi).map_err(|_| err)?;
    Ok(PathAttribute::MpReachNlri(MpReachNlri {
        afi_safi,
        next_hop,
        nlri,
    }))
}

fn ipv6_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

fn decode_mp_unreach(value: &[u8]) -> Result<PathAttribute, AttributeError> {
    let err = AttributeError::Optional {
        type_code: MP_UNREACH_NLRI,
    };
    let mut r = Reader::new(value);
    let afi = r.u16().ok_or(err.clone())?;
    let safi = r.u8().ok_or(err.clone())?;
    let afi_safi = AfiSafi::from_codes(afi, safi).ok_or(err.clone())?;
    let withdrawn = decode_prefixes(r.rest(), afi_safi).map_err(|_| err)?;
    Ok(PathAttribute::MpUnreachNlri(MpUnreachNlri {
        afi_safi,
        withdrawn,
    }))
}

impl PathAttribute {
    pub fn type_code(&self) -> u8 {
        match self {
            Self::Origin(_) => ORIGIN,
            Self::AsPath(_) => AS_PATH,
            Self::NextHop(_) => NEXT_HOP,
            Self::MultiExitDisc(_) => MULTI_EXIT_DISC,
            Self::LocalPref(_) => LOCAL_PREF,
            Self::AtomicAggregate => ATOMIC_AGGREGATE,
            Self::Aggregator { .. } => AGGREGATOR,
            Self::Communities(_) => COMMUNITIES,
            Self::MpReachNlri(_) => MP_REACH_NLRI,
            Self::MpUnreachNlri(_) => MP_UNREACH_NLRI,
            Self::Other { type_code, .. } => *type_code,
        }
    }

    /// Appends the attribute (flags, type, length, value). The extended-length
    /// flag is set only when the value needs it.
    pub fn encode(&self, four_octet_as: bool, out: &mut Vec<u8>) {
        let mut value = Vec::new();
        let flags = match self {
            Self::Other {
                flags, value: v, ..
            } => {
                value.extend_from_slice(v);
                *flags & !FLAG_EXTENDED_LENGTH
            }
            _ => expected_flags(self.type_code()).unwrap_or(FLAG_OPTIONAL),
        };
        match self {
            Self::Origin(o) => value.push(*o as u8),
            Self::AsPath(p) => {
                for s in &p.segments {
                    // A segment holds at most 255 ASNs: longer ones are split.
                    for chunk in s.asns.chunks(255) {
                        value.push(s.kind as u8);
                        value.push(chunk.len() as u8);
                        for asn in chunk {
                            if four_octet_as {
                                value.extend_from_slice(&asn.to_be_bytes());
                            } else {
                                let two = u16::try_from(*asn).unwrap_or(AS_TRANS);
                                value.extend_from_slice(&two.to_be_bytes());
                            }
                        }
                    }
                }
            }
            Self::NextHop(a) => value.extend_from_slice(&a.octets()),
            Self::MultiExitDisc(v) | Self::LocalPref(v) => {
                value.extend_from_slice(&v.to_be_bytes())
            }
            Self::AtomicAggregate => {}
            Self::Aggregator { asn, address } => {
                if four_octet_as {
                    value.extend_from_slice(&asn.to_be_bytes());
                } else {
                    let two = u16::try_from(*asn).unwrap_or(AS_TRANS);
                    value.extend_from_slice(&two.to_be_bytes());
                }
                value.extend_from_slice(&address.octets());
            }
            Self::Communities(cs) => {
                for c in cs {
                    value.extend_from_slice(&c.0.to_be_bytes());
                }
            }
            Self::MpReachNlri(m) => {
                value.extend_from_slice(&m.afi_safi.afi().to_be_bytes());
                value.push(m.afi_safi.safi());
                match m.next_hop {
                    MpNextHop::Ipv4(a) => {
                        value.push(4);
                        value.extend_from_slice(&a.octets());
                    }
                    MpNextHop::Ipv6 { global, link_local } => {
                        value.push(if link_local.is_some() { 32 } else { 16 });
                        value.extend_from_slice(&global.octets());
                        if let Some(ll) = link_local {
                            value.extend_from_slice(&ll.octets());
                        }
                    }
                }
                value.push(0);
                for p in &m.nlri {
                    encode_prefix(p, &mut value);
                }
            }
            Self::MpUnreachNlri(m) => {
                value.extend_from_slice(&m.afi_safi.afi().to_be_bytes());
                value.push(m.afi_safi.safi());
                for p in &m.withdrawn {
                    encode_prefix(p, &mut value);
                }
            }
            Self::Other { .. } => {}
        }
        if value.len() > 255 {
            out.push(flags | FLAG_EXTENDED_LENGTH);
            out.push(self.type_code());
            out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        } else {
            out.push(flags);
            out.push(self.type_code());
            out.push(value.len() as u8);
        }
        out.extend_from_slice(&value);
    }
}
