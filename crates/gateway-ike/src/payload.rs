//! IKEv2 payloads (RFC 7296 §3.2-§3.16, RFC 7383 §2.5): typed values and
//! their wire encoding. Decoding treats every byte as hostile: lengths are
//! checked before any slice, allocation is bounded by the input length, and
//! an unknown payload with the critical bit set is reported so the caller
//! can answer UNSUPPORTED_CRITICAL_PAYLOAD. Encryption of the SK payload
//! lives in `message`, not here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

/// Payload type numbers (RFC 7296 §3.2, RFC 7383).
pub mod ptype {
    pub const NONE: u8 = 0;
    pub const SA: u8 = 33;
    pub const KE: u8 = 34;
    pub const IDI: u8 = 35;
    pub const IDR: u8 = 36;
    pub const CERT: u8 = 37;
    pub const CERTREQ: u8 = 38;
    pub const AUTH: u8 = 39;
    pub const NONCE: u8 = 40;
    pub const NOTIFY: u8 = 41;
    pub const DELETE: u8 = 42;
    pub const VENDOR_ID: u8 = 43;
    pub const TSI: u8 = 44;
    pub const TSR: u8 = 45;
    pub const SK: u8 = 46;
    pub const CP: u8 = 47;
    pub const EAP: u8 = 48;
    pub const SKF: u8 = 53;
}

/// Notify message types used here (RFC 7296 §3.10.1, RFC 7383).
pub mod notify {
    pub const UNSUPPORTED_CRITICAL_PAYLOAD: u16 = 1;
    pub const INVALID_IKE_SPI: u16 = 4;
    pub const INVALID_MAJOR_VERSION: u16 = 5;
    pub const INVALID_SYNTAX: u16 = 7;
    pub const INVALID_MESSAGE_ID: u16 = 9;
    pub const INVALID_SPI: u16 = 11;
    pub const NO_PROPOSAL_CHOSEN: u16 = 14;
    pub const INVALID_KE_PAYLOAD: u16 = 17;
    pub const AUTHENTICATION_FAILED: u16 = 24;
    pub const SINGLE_PAIR_REQUIRED: u16 = 34;
    pub const NO_ADDITIONAL_SAS: u16 = 35;
    pub const TS_UNACCEPTABLE: u16 = 38;
    pub const TEMPORARY_FAILURE: u16 = 43;
    pub const CHILD_SA_NOT_FOUND: u16 = 44;
    pub const INITIAL_CONTACT: u16 = 16384;
    pub const NAT_DETECTION_SOURCE_IP: u16 = 16388;
    pub const NAT_DETECTION_DESTINATION_IP: u16 = 16389;
    pub const COOKIE: u16 = 16390;
    pub const USE_TRANSPORT_MODE: u16 = 16391;
    pub const REKEY_SA: u16 = 16393;
    pub const ESP_TFC_PADDING_NOT_SUPPORTED: u16 = 16394;
    pub const NON_FIRST_FRAGMENTS_ALSO: u16 = 16395;
    pub const IKEV2_FRAGMENTATION_SUPPORTED: u16 = 16430;
    /// Types below this value are errors (RFC 7296 §3.10.1).
    pub const ERROR_MAX: u16 = 16383;
}

/// Protocol IDs of proposals, notifies and deletes.
pub mod proto {
    pub const IKE: u8 = 1;
    pub const AH: u8 = 2;
    pub const ESP: u8 = 3;
}

/// Upper bound on payloads per message, proposals per SA, transforms per
/// proposal and selectors per TS payload: far above anything legitimate,
/// low enough that a hostile message cannot make us build huge vectors of
/// tiny items.
pub const MAX_ITEMS: usize = 64;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("bad length {len} in {what}")]
    BadLength { what: &'static str, len: usize },
    #[error("unsupported critical payload type {0}")]
    UnsupportedCritical(u8),
    #[error("too many items in {0}")]
    TooMany(&'static str),
    #[error("invalid value {value} in {what}")]
    Invalid { what: &'static str, value: u32 },
}

/// A bounds-checked reader over hostile bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                what,
                need: n,
                have: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.bytes(1, what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Transform types (RFC 7296 §3.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransformType {
    Encr,
    Prf,
    Integ,
    Dh,
    Esn,
    Other(u8),
}

impl TransformType {
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Encr,
            2 => Self::Prf,
            3 => Self::Integ,
            4 => Self::Dh,
            5 => Self::Esn,
            o => Self::Other(o),
        }
    }
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Encr => 1,
            Self::Prf => 2,
            Self::Integ => 3,
            Self::Dh => 4,
            Self::Esn => 5,
            Self::Other(o) => o,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    pub ttype: TransformType,
    pub id: u16,
    /// Key Length attribute (type 14) in bits, for variable-key ciphers.
    pub key_length: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub number: u8,
    pub protocol: u8,
    pub spi: Vec<u8>,
    pub transforms: Vec<Transform>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KePayload {
    pub group: u16,
    pub data: Vec<u8>,
}

/// Identification types (RFC 7296 §3.5).
pub mod idtype {
    pub const IPV4_ADDR: u8 = 1;
    pub const FQDN: u8 = 2;
    pub const RFC822_ADDR: u8 = 3;
    pub const IPV6_ADDR: u8 = 5;
    pub const KEY_ID: u8 = 11;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdPayload {
    pub id_type: u8,
    pub data: Vec<u8>,
}

impl IdPayload {
    /// The payload body after the generic header ("RestOfInitIDPayload"
    /// of §2.15), which the AUTH computation MACs.
    pub fn body(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + self.data.len());
        v.extend_from_slice(&[self.id_type, 0, 0, 0]);
        v.extend_from_slice(&self.data);
        v
    }
}

/// Authentication methods (RFC 7296 §3.8).
pub const AUTH_SHARED_KEY_MIC: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPayload {
    pub method: u8,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyPayload {
    pub protocol: u8,
    pub spi: Vec<u8>,
    pub ntype: u16,
    pub data: Vec<u8>,
}

impl NotifyPayload {
    pub fn new(ntype: u16, data: Vec<u8>) -> Self {
        Self {
            protocol: 0,
            spi: Vec::new(),
            ntype,
            data,
        }
    }
    pub fn is_error(&self) -> bool {
        self.ntype <= notify::ERROR_MAX
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletePayload {
    pub protocol: u8,
    pub spi_size: u8,
    pub spis: Vec<Vec<u8>>,
}

/// A traffic selector (RFC 7296 §3.13.1); only address ranges are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    pub ip_protocol: u8,
    pub start_port: u16,
    pub end_port: u16,
    pub start_addr: IpAddr,
    pub end_addr: IpAddr,
}

pub const TS_IPV4_ADDR_RANGE: u8 = 7;
pub const TS_IPV6_ADDR_RANGE: u8 = 8;

impl TrafficSelector {
    /// 0.0.0.0/0, all protocols and ports.
    pub fn any_v4() -> Self {
        Self {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            end_addr: IpAddr::V4(Ipv4Addr::BROADCAST),
        }
    }
    /// ::/0, all protocols and ports.
    pub fn any_v6() -> Self {
        Self {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start_addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            end_addr: IpAddr::V6(Ipv6Addr::from(u128::MAX)),
        }
    }
    fn addr_key(a: IpAddr) -> u128 {
        match a {
            IpAddr::V4(v) => u128::from(u32::from(v)),
            IpAddr::V6(v) => u128::from(v),
        }
    }
    fn same_family(a: IpAddr, b: IpAddr) -> bool {
        a.is_ipv4() == b.is_ipv4()
    }
    /// The intersection of two selectors, used by the responder to narrow
    /// (RFC 7296 §2.9); `None` when they do not overlap.
    pub fn intersect(&self, other: &Self) -> Option<Self> {
        if !Self::same_family(self.start_addr, other.start_addr) {
            return None;
        }
        let proto = match (self.ip_protocol, other.ip_protocol) {
            (0, p) | (p, 0) => p,
            (a, b) if a == b => a,
            _ => return None,
        };
        let sp = self.start_port.max(other.start_port);
        let ep = self.end_port.min(other.end_port);
        if sp > ep {
            return None;
        }
        let (sa, ea) = (
            Self::addr_key(self.start_addr),
            Self::addr_key(self.end_addr),
        );
        let (sb, eb) = (
            Self::addr_key(other.start_addr),
            Self::addr_key(other.end_addr),
        );
        let s = sa.max(sb);
        let e = ea.min(eb);
        if s > e {
            return None;
        }
        let pick = |k: u128| -> IpAddr {
            if self.start_addr.is_ipv4() {
                // Both keys came from IPv4 addresses, so they fit in u32.
                IpAddr::V4(Ipv4Addr::from(u32::try_from(k).unwrap_or(u32::MAX)))
            } else {
                IpAddr::V6(Ipv6Addr::from(k))
            }
        };
        Some(Self {
            ip_protocol: proto,
            start_port: sp,
            end_port: ep,
            start_addr: pick(s),
            end_addr: pick(e),
        })
    }
    /// Whether `self` lies entirely inside `outer`.
    pub fn is_subset_of(&self, outer: &Self) -> bool {
        self.intersect(outer).as_ref() == Some(self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Sa(Vec<Proposal>),
    Ke(KePayload),
    IdI(IdPayload),
    IdR(IdPayload),
    Auth(AuthPayload),
    Nonce(Vec<u8>),
    Notify(NotifyPayload),
    Delete(DeletePayload),
    VendorId(Vec<u8>),
    TsI(Vec<TrafficSelector>),
    TsR(Vec<TrafficSelector>),
    /// Encrypted and Authenticated payload: `first` is the type of the
    /// first inner payload, `data` is IV | ciphertext | ICV.
    Sk {
        first: u8,
        data: Vec<u8>,
    },
    /// Encrypted fragment (RFC 7383 §2.5).
    Skf {
        first: u8,
        number: u16,
        total: u16,
        data: Vec<u8>,
    },
    /// A known-but-unhandled or unknown non-critical payload, kept opaque.
    Other {
        ptype: u8,
        data: Vec<u8>,
    },
}

impl Payload {
    pub fn ptype(&self) -> u8 {
        match self {
            Self::Sa(_) => ptype::SA,
            Self::Ke(_) => ptype::KE,
            Self::IdI(_) => ptype::IDI,
            Self::IdR(_) => ptype::IDR,
            Self::Auth(_) => ptype::AUTH,
            Self::Nonce(_) => ptype::NONCE,
            Self::Notify(_) => ptype::NOTIFY,
            Self::Delete(_) => ptype::DELETE,
            Self::VendorId(_) => ptype::VENDOR_ID,
            Self::TsI(_) => ptype::TSI,
            Self::TsR(_) => ptype::TSR,
            Self::Sk { .. } => ptype::SK,
            Self::Skf { .. } => ptype::SKF,
            Self::Other { ptype, .. } => *ptype,
        }
    }

    /// The body (after the 4-byte generic header).
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Self::Sa(props) => encode_sa(props, out),
            Self::Ke(ke) => {
                out.extend_from_slice(&ke.group.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&ke.data);
            }
            Self::IdI(id) | Self::IdR(id) => out.extend_from_slice(&id.body()),
            Self::Auth(a) => {
                out.extend_from_slice(&[a.method, 0, 0, 0]);
                out.extend_from_slice(&a.data);
            }
            Self::Nonce(n) | Self::VendorId(n) => out.extend_from_slice(n),
            Self::Notify(n) => {
                out.push(n.protocol);
                out.push(len_u8(n.spi.len()));
                out.extend_from_slice(&n.ntype.to_be_bytes());
                out.extend_from_slice(&n.spi);
                out.extend_from_slice(&n.data);
            }
            Self::Delete(d) => {
                out.push(d.protocol);
                out.push(d.spi_size);
                out.extend_from_slice(&len_u16(d.spis.len()).to_be_bytes());
                for s in &d.spis {
                    out.extend_from_slice(s);
                }
            }
            Self::TsI(ts) | Self::TsR(ts) => {
                out.push(len_u8(ts.len()));
                out.extend_from_slice(&[0, 0, 0]);
                for t in ts {
                    let v4 = t.start_addr.is_ipv4();
                    out.push(if v4 {
                        TS_IPV4_ADDR_RANGE
                    } else {
                        TS_IPV6_ADDR_RANGE
                    });
                    out.push(t.ip_protocol);
                    out.extend_from_slice(&(if v4 { 16u16 } else { 40u16 }).to_be_bytes());
                    out.extend_from_slice(&t.start_port.to_be_bytes());
                    out.extend_from_slice(&t.end_port.to_be_bytes());
                    for a in [t.start_addr, t.end_addr] {
                        match a {
                            IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
                            IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
                        }
                    }
                }
            }
            Self::Sk { data, .. } => out.extend_from_slice(data),
            Self::Skf {
                number,
                total,
                data,
                ..
            } => {
                out.extend_from_slice(&number.to_be_bytes());
                out.extend_from_slice(&total.to_be_bytes());
                out.extend_from_slice(data);
            }
            Self::Other { data, .. } => out.extend_from_slice(data),
        }
    }
}

fn len_u8(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}
fn len_u16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn encode_sa(props: &[Proposal], out: &mut Vec<u8>) {
    for (pi, p) in props.iter().enumerate() {
        let start = out.len();
        out.push(if pi + 1 == props.len() { 0 } else { 2 });
        out.push(0);
        out.extend_from_slice(&[0, 0]); // proposal length, patched below
        out.push(p.number);
        out.push(p.protocol);
        out.push(len_u8(p.spi.len()));
        out.push(len_u8(p.transforms.len()));
        out.extend_from_slice(&p.spi);
        for (ti, t) in p.transforms.iter().enumerate() {
            out.push(if ti + 1 == p.transforms.len() { 0 } else { 3 });
            out.push(0);
            let tlen: u16 = if t.key_length.is_some() { 12 } else { 8 };
            out.extend_from_slice(&tlen.to_be_bytes());
            out.push(t.ttype.to_u8());
            out.push(0);
            out.extend_from_slice(&t.id.to_be_bytes());
            if let Some(kl) = t.key_length {
                // Key Length is a TV attribute: AF bit set, type 14.
                out.extend_from_slice(&(0x8000u16 | 14).to_be_bytes());
                out.extend_from_slice(&kl.to_be_bytes());
            }
        }
        let plen = len_u16(out.len() - start).to_be_bytes();
        out[start + 2] = plen[0];
        out[start + 3] = plen[1];
    }
}

fn decode_sa(body: &[u8]) -> Result<Vec<Proposal>, DecodeError> {
    let mut r = Reader::new(body);
    let mut props = Vec::new();
    loop {
        if props.len() >= MAX_ITEMS {
            return Err(DecodeError::TooMany("SA proposals"));
        }
        let last = r.u8("proposal header")?;
        let _reserved = r.u8("proposal header")?;
        let plen = usize::from(r.u16("proposal header")?);
        if plen < 8 {
            return Err(DecodeError::BadLength {
                what: "proposal",
                len: plen,
            });
        }
        let mut pr = Reader::new(r.bytes(plen - 4, "proposal")?);
        let number = pr.u8("proposal")?;
        let protocol = pr.u8("proposal")?;
        let spi_size = usize::from(pr.u8("proposal")?);
        let ntrans = usize::from(pr.u8("proposal")?);
        let spi = pr.bytes(spi_size, "proposal SPI")?.to_vec();
        if ntrans > MAX_ITEMS {
            return Err(DecodeError::TooMany("transforms"));
        }
        let mut transforms = Vec::with_capacity(ntrans);
        for _ in 0..ntrans {
            let _last = pr.u8("transform")?;
            let _res = pr.u8("transform")?;
            let tlen = usize::from(pr.u16("transform")?);
            if tlen < 8 {
                return Err(DecodeError::BadLength {
                    what: "transform",
                    len: tlen,
                });
            }
            let mut tr = Reader::new(pr.bytes(tlen - 4, "transform")?);
            let ttype = TransformType::from_u8(tr.u8("transform")?);
            let _res = tr.u8("transform")?;
            let id = tr.u16("transform")?;
            let mut key_length = None;
            while tr.remaining() > 0 {
                let at = tr.u16("attribute")?;
                if at & 0x8000 != 0 {
                    let v = tr.u16("attribute")?;
                    if at & 0x7fff == 14 {
                        key_length = Some(v);
                    }
                } else {
                    let alen = usize::from(tr.u16("attribute")?);
                    tr.bytes(alen, "attribute")?;
                }
            }
            transforms.push(Transform {
                ttype,
                id,
                key_length,
            });
        }
        props.push(Proposal {
            number,
            protocol,
            spi,
            transforms,
        });
        match last {
            0 => break,
            2 => continue,
            v => {
                return Err(DecodeError::Invalid {
                    what: "proposal last/more",
                    value: u32::from(v),
                })
            }
        }
    }
    Ok(props)
}

fn decode_ts(body: &[u8]) -> Result<Vec<TrafficSelector>, DecodeError> {
    let mut r = Reader::new(body);
    let n = usize::from(r.u8("TS header")?);
    r.bytes(3, "TS header")?;
    if n > MAX_ITEMS {
        return Err(DecodeError::TooMany("traffic selectors"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = r.u8("TS")?;
        let ip_protocol = r.u8("TS")?;
        let len = usize::from(r.u16("TS")?);
        let expect = match t {
            TS_IPV4_ADDR_RANGE => 16,
            TS_IPV6_ADDR_RANGE => 40,
            other => {
                return Err(DecodeError::Invalid {
                    what: "TS type",
                    value: u32::from(other),
                })
            }
        };
        if len != expect {
            return Err(DecodeError::BadLength { what: "TS", len });
        }
        let start_port = r.u16("TS")?;
        let end_port = r.u16("TS")?;
        let (start_addr, end_addr) = if t == TS_IPV4_ADDR_RANGE {
            let a = r.bytes(4, "TS")?;
            let b = r.bytes(4, "TS")?;
            (
                IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
            )
        } else {
            let mut a = [0u8; 16];
            let mut b = [0u8; 16];
            a.copy_from_slice(r.bytes(16, "TS")?);
            b.copy_from_slice(r.bytes(16, "TS")?);
            (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)))
        };
        out.push(TrafficSelector {
            ip_protocol,
            start_port,
            end_port,
            start_addr,
            end_addr,
        });
    }
    Ok(out)
}

/// Decodes one payload body of type `t`.
pub fn decode_body(t: u8, critical: bool, body: &[u8]) -> Result<Payload, DecodeError> {
    let mut r = Reader::new(body);
    Ok(match t {
        ptype::SA => Payload::Sa(decode_sa(body)?),
        ptype::KE => {
            let group = r.u16("KE")?;
            r.bytes(2, "KE")?;
            Payload::Ke(KePayload {
                group,
                data: r.rest().to_vec(),
            })
        }
        ptype::IDI | ptype::IDR => {
            let id_type = r.u8("ID")?;
            r.bytes(3, "ID")?;
            let id = IdPayload {
                id_type,
                data: r.rest().to_vec(),
            };
            if t == ptype::IDI {
                Payload::IdI(id)
            } else {
                Payload::IdR(id)
            }
        }
        ptype::AUTH => {
            let method = r.u8("AUTH")?;
            r.bytes(3, "AUTH")?;
            Payload::Auth(AuthPayload {
                method,
                data: r.rest().to_vec(),
            })
        }
        ptype::NONCE => Payload::Nonce(body.to_vec()),
        ptype::NOTIFY => {
            let protocol = r.u8("Notify")?;
            let spi_size = usize::from(r.u8("Notify")?);
            let ntype = r.u16("Notify")?;
            let spi = r.bytes(spi_size, "Notify SPI")?.to_vec();
            Payload::Notify(NotifyPayload {
                protocol,
                spi,
                ntype,
                data: r.rest().to_vec(),
            })
        }
        ptype::DELETE => {
            let protocol = r.u8("Delete")?;
            let spi_size = r.u8("Delete")?;
            let n = usize::from(r.u16("Delete")?);
            let sz = usize::from(spi_size);
            // Bound the vector by what the body can actually hold.
            if n.saturating_mul(sz) != r.remaining() || (sz == 0 && n != 0) {
                return Err(DecodeError::BadLength {
                    what: "Delete",
                    len: body.len(),
                });
            }
            let mut spis = Vec::with_capacity(n);
            for _ in 0..n {
                spis.push(r.bytes(sz, "Delete SPI")?.to_vec());
            }
            Payload::Delete(DeletePayload {
                protocol,
                spi_size,
                spis,
            })
        }
        ptype::VENDOR_ID => Payload::VendorId(body.to_vec()),
        ptype::TSI => Payload::TsI(decode_ts(body)?),
        ptype::TSR => Payload::TsR(decode_ts(body)?),
        ptype::SKF => {
            let number = r.u16("SKF")?;
            let total = r.u16("SKF")?;
            if number == 0 || total == 0 || number > total {
                return Err(DecodeError::Invalid {
                    what: "SKF fragment number",
                    value: u32::from(number),
                });
            }
            Payload::Skf {
                first: 0,
                number,
                total,
                data: r.rest().to_vec(),
            }
        }
        ptype::CERT | ptype::CERTREQ | ptype::CP | ptype::EAP => Payload::Other {
            ptype: t,
            data: body.to_vec(),
        },
        other => {
            if critical {
                return Err(DecodeError::UnsupportedCritical(other));
            }
            Payload::Other {
                ptype: other,
                data: body.to_vec(),
            }
        }
    })
}

/// Decodes a payload chain starting with type `first`. The SK/SKF payload
/// must be the last one (§3.14), so when it is met the rest of the buffer
/// is its body and the chain ends.
pub fn decode_chain(first: u8, buf: &[u8]) -> Result<Vec<Payload>, DecodeError> {
    let mut r = Reader::new(buf);
    let mut next = first;
    let mut out = Vec::new();
    while next != ptype::NONE {
        if out.len() >= MAX_ITEMS {
            return Err(DecodeError::TooMany("payloads"));
        }
        let this = next;
        next = r.u8("payload header")?;
        let flags = r.u8("payload header")?;
        let len = usize::from(r.u16("payload header")?);
        if len < 4 {
            return Err(DecodeError::BadLength {
                what: "payload",
                len,
            });
        }
        let body = r.bytes(len - 4, "payload body")?;
        let critical = flags & 0x80 != 0;
        if this == ptype::SK {
            // SK must be the last payload and run to the end (§3.14).
            if r.remaining() != 0 {
                return Err(DecodeError::BadLength {
                    what: "SK payload",
                    len,
                });
            }
            out.push(Payload::Sk {
                first: next,
                data: body.to_vec(),
            });
            return Ok(out);
        }
        let mut p = decode_body(this, critical, body)?;
        if let Payload::Skf { first, .. } = &mut p {
            if r.remaining() != 0 {
                return Err(DecodeError::BadLength {
                    what: "SKF payload",
                    len,
                });
            }
            *first = next;
            out.push(p);
            return Ok(out);
        }
        out.push(p);
    }
    Ok(out)
}

/// Encodes a payload chain; returns the type of the first payload.
pub fn encode_chain(payloads: &[Payload], out: &mut Vec<u8>) -> u8 {
    for (i, p) in payloads.iter().enumerate() {
        let next = match p {
            // SK/SKF carry the first inner payload type in "next payload".
            Payload::Sk { first, .. } | Payload::Skf { first, .. } => *first,
            _ => payloads.get(i + 1).map_or(ptype::NONE, Payload::ptype),
        };
        let start = out.len();
        out.extend_from_slice(&[next, 0, 0, 0]);
        p.encode_body(out);
        let len = len_u16(out.len() - start).to_be_bytes();
        out[start + 2] = len[0];
        out[start + 3] = len[1];
    }
    payloads.first().map_or(ptype::NONE, Payload::ptype)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(ps: Vec<Payload>) {
        let mut buf = Vec::new();
        let first = encode_chain(&ps, &mut buf);
        assert_eq!(decode_chain(first, &buf).unwrap(), ps);
    }

    #[test]
    fn roundtrip_all_payloads() {
        roundtrip(vec![
            Payload::Sa(vec![
                Proposal {
                    number: 1,
                    protocol: proto::IKE,
                    spi: vec![],
                    transforms: vec![
                        Transform {
                            ttype: TransformType::Encr,
                            id: 20,
                            key_length: Some(256),
                        },
                        Transform {
                            ttype: TransformType::Prf,
                            id: 6,
                            key_length: None,
                        },
                        Transform {
                            ttype: TransformType::Dh,
                            id: 20,
                            key_length: None,
                        },
                    ],
                },
                Proposal {
                    number: 2,
                    protocol: proto::ESP,
                    spi: vec![1, 2, 3, 4],
                    transforms: vec![Transform {
                        ttype: TransformType::Esn,
                        id: 0,
                        key_length: None,
                    }],
                },
            ]),
            Payload::Ke(KePayload {
                group: 31,
                data: vec![9; 32],
            }),
            Payload::Nonce(vec![7; 32]),
            Payload::IdI(IdPayload {
                id_type: idtype::IPV4_ADDR,
                data: vec![192, 0, 2, 1],
            }),
            Payload::IdR(IdPayload {
                id_type: idtype::FQDN,
                data: b"vpn.example".to_vec(),
            }),
            Payload::Auth(AuthPayload {
                method: AUTH_SHARED_KEY_MIC,
                data: vec![1; 48],
            }),
            Payload::Notify(NotifyPayload {
                protocol: proto::ESP,
                spi: vec![0, 0, 0, 1],
                ntype: notify::REKEY_SA,
                data: vec![],
            }),
            Payload::Delete(DeletePayload {
                protocol: proto::ESP,
                spi_size: 4,
                spis: vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]],
            }),
            Payload::VendorId(b"gateway".to_vec()),
            Payload::TsI(vec![TrafficSelector::any_v4(), TrafficSelector::any_v6()]),
            Payload::TsR(vec![TrafficSelector::any_v6()]),
            Payload::Sk {
                first: ptype::IDI,
                data: vec![0; 40],
            },
        ]);
    }

    #[test]
    fn golden_ke_payload() {
        // Generic header (next=0, len=12) | group 31 | reserved | data
        let mut buf = Vec::new();
        encode_chain(
            &[Payload::Ke(KePayload {
                group: 31,
                data: vec![0xaa; 4],
            })],
            &mut buf,
        );
        assert_eq!(buf, [0, 0, 0, 12, 0, 31, 0, 0, 0xaa, 0xaa, 0xaa, 0xaa]);
    }

    #[test]
    fn unknown_critical_payload_is_reported() {
        // Type 200, critical, empty body.
        let buf = [0u8, 0x80, 0, 4];
        assert_eq!(
            decode_chain(200, &buf),
            Err(DecodeError::UnsupportedCritical(200))
        );
        let buf = [0u8, 0x00, 0, 4];
        assert!(matches!(
            decode_chain(200, &buf).unwrap()[0],
            Payload::Other { ptype: 200, .. }
        ));
    }

    #[test]
    fn ts_intersection_narrows() {
        let narrow = TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start_addr: "203.0.113.0".parse().unwrap(),
            end_addr: "203.0.113.255".parse().unwrap(),
        };
        assert_eq!(TrafficSelector::any_v4().intersect(&narrow), Some(narrow));
        assert!(narrow.is_subset_of(&TrafficSelector::any_v4()));
        assert_eq!(TrafficSelector::any_v6().intersect(&narrow), None);
    }
}
