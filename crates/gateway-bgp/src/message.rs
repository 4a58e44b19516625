//! BGP messages (RFC 4271 §4): header framing, OPEN with capabilities
//! (RFC 5492: multiprotocol RFC 4760, route refresh RFC 2918, 4-octet ASN
//! RFC 6793), UPDATE, NOTIFICATION, KEEPALIVE and ROUTE-REFRESH.
//!
//! Decoding treats the input as hostile: every read is checked, a message
//! is never longer than 4096 bytes, and every error maps onto the
//! NOTIFICATION RFC 4271 §6 requires ([`MessageError::notification`]).
//! Attribute errors that RFC 7606 downgrades to treat-as-withdraw do not fail
//! the decode: they are reported in [`Update::treat_as_withdraw`].

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};

use crate::attribute::{
    self, decode_attribute, decode_prefixes, encode_prefix, AfiSafi, AttributeError, ErrorAction,
    PathAttribute, FLAG_EXTENDED_LENGTH,
};
use crate::reader::Reader;

pub const HEADER_LEN: usize = 19;
/// RFC 4271 §4.1 (no RFC 8654 extended messages: we never offer them).
pub const MAX_MESSAGE_LEN: usize = 4096;
pub const BGP_VERSION: u8 = 4;

pub const TYPE_OPEN: u8 = 1;
pub const TYPE_UPDATE: u8 = 2;
pub const TYPE_NOTIFICATION: u8 = 3;
pub const TYPE_KEEPALIVE: u8 = 4;
pub const TYPE_ROUTE_REFRESH: u8 = 5;

/// NOTIFICATION error codes (RFC 4271 §4.5).
pub mod code {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const OPEN_MESSAGE: u8 = 2;
    pub const UPDATE_MESSAGE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
}

/// Cease subcodes (RFC 4486).
pub mod cease {
    pub const MAX_PREFIXES: u8 = 1;
    pub const ADMIN_SHUTDOWN: u8 = 2;
    pub const PEER_DECONFIGURED: u8 = 3;
    pub const ADMIN_RESET: u8 = 4;
    pub const CONNECTION_REJECTED: u8 = 5;
    pub const OTHER_CONFIG_CHANGE: u8 = 6;
    pub const CONNECTION_COLLISION: u8 = 7;
    pub const OUT_OF_RESOURCES: u8 = 8;
}

/// OPEN Message Error subcodes (RFC 4271 §6.2).
pub mod open_error {
    pub const UNSUPPORTED_VERSION: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
}

pub const CAP_MULTIPROTOCOL: u8 = 1;
pub const CAP_ROUTE_REFRESH: u8 = 2;
pub const CAP_FOUR_OCTET_AS: u8 = 65;
pub const CAP_GRACEFUL_RESTART: u8 = 64;
const OPT_PARAM_CAPABILITIES: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// RFC 4760 §8; codes kept raw so an unknown family can be reported.
    MultiProtocol {
        afi: u16,
        safi: u8,
    },
    RouteRefresh,
    FourOctetAs(u32),
    /// RFC 4724 §3: Restart State (R) bit, Restart Time in seconds (12
    /// bits), and per family whether its forwarding state was preserved.
    GracefulRestart(GracefulRestart),
    Other {
        code: u8,
        value: Vec<u8>,
    },
}

/// The Graceful Restart capability's value (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// Restart State: the speaker has restarted (its peer should not wait
    /// for its End-of-RIB before sending its own routes).
    pub restarting: bool,
    /// How long the peer keeps our routes after the session is lost, in
    /// seconds (at most 4095).
    pub restart_time: u16,
    /// (AFI, SAFI, forwarding state preserved) per family.
    pub families: Vec<(u16, u8, bool)>,
}

impl GracefulRestart {
    const RESTART_STATE: u16 = 0x8000;
    const FORWARDING: u8 = 0x80;

    fn encode(&self, out: &mut Vec<u8>) {
        let flags = if self.restarting {
            Self::RESTART_STATE
        } else {
            0
        };
        out.extend_from_slice(&(flags | (self.restart_time & 0x0fff)).to_be_bytes());
        for (afi, safi, forwarding) in &self.families {
            out.extend_from_slice(&afi.to_be_bytes());
            out.push(*safi);
            out.push(if *forwarding { Self::FORWARDING } else { 0 });
        }
    }

    /// `None` unless 2 + 4n bytes.
    fn decode(v: &[u8]) -> Option<Self> {
        if v.len() < 2 || (v.len() - 2) % 4 != 0 {
            return None;
        }
        let head = u16::from_be_bytes([v[0], v[1]]);
        Some(Self {
            restarting: head & Self::RESTART_STATE != 0,
            restart_time: head & 0x0fff,
            families: v[2..]
                .chunks_exact(4)
                .map(|c| {
                    (
                        u16::from_be_bytes([c[0], c[1]]),
                        c[2],
                        c[3] & Self::FORWARDING != 0,
                    )
                })
                .collect(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The 2-octet "My Autonomous System" field (AS_TRANS for a 4-octet ASN).
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_identifier: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// Builds our OPEN: `asn` goes in the 4-octet capability and, when it
    /// does not fit, AS_TRANS in the 2-octet field.
    pub fn new(asn: u32, hold_time: u16, bgp_identifier: Ipv4Addr, families: &[AfiSafi]) -> Self {
        let mut capabilities: Vec<Capability> = families
            .iter()
            .map(|f| Capability::MultiProtocol {
                afi: f.afi(),
                safi: f.safi(),
            })
            .collect();
        capabilities.push(Capability::RouteRefresh);
        capabilities.push(Capability::FourOctetAs(asn));
        Self {
            my_as: u16::try_from(asn).unwrap_or(attribute::AS_TRANS),
            hold_time,
            bgp_identifier,
            capabilities,
        }
    }

    /// The speaker's ASN: the 4-octet capability when present (RFC 6793 §4.1).
    pub fn asn(&self) -> u32 {
        self.four_octet_as().unwrap_or(u32::from(self.my_as))
    }

    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(a) => Some(*a),
            _ => None,
        })
    }

    pub fn route_refresh(&self) -> bool {
        self.capabilities.contains(&Capability::RouteRefresh)
    }

    /// The Graceful Restart capability, if announced.
    pub fn graceful_restart(&self) -> Option<&GracefulRestart> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(g) => Some(g),
            _ => None,
        })
    }

    /// Families announced with the multiprotocol capability; a speaker that
    /// sends none implicitly carries IPv4 unicast only (RFC 4760 §8).
    pub fn families(&self) -> Vec<AfiSafi> {
        let mut mp = false;
        let mut out = Vec::new();
        for c in &self.capabilities {
            if let Capability::MultiProtocol { afi, safi } = c {
                mp = true;
                if let Some(f) = AfiSafi::from_codes(*afi, *safi) {
                    if !out.contains(&f) {
                        out.push(f);
                    }
                }
            }
        }
        if !mp {
            out.push(AfiSafi::Ipv4Unicast);
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    pub withdrawn_routes: Vec<Ipv4Net>,
    pub path_attributes: Vec<PathAttribute>,
    pub nlri: Vec<Ipv4Net>,
    /// Set on decode when RFC 7606 requires treat-as-withdraw: every route
    /// this UPDATE announces must be handled as withdrawn.
    pub treat_as_withdraw: Option<AttributeError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8) -> Self {
        Self {
            code,
            subcode,
            data: Vec::new(),
        }
    }
    pub fn with_data(code: u8, subcode: u8, data: Vec<u8>) -> Self {
        Self {
            code,
            subcode,
            data,
        }
    }
}

impl Notification {
    /// The error code and subcode in words (RFC 4271 §4.5 and §6, RFC 4486
    /// for Cease).
    pub fn describe(&self) -> &'static str {
        match (self.code, self.subcode) {
            (code::MESSAGE_HEADER, _) => "message header error",
            (code::OPEN_MESSAGE, open_error::UNSUPPORTED_VERSION) => {
                "OPEN error: unsupported version number"
            }
            (code::OPEN_MESSAGE, open_error::BAD_PEER_AS) => "OPEN error: bad peer AS",
            (code::OPEN_MESSAGE, open_error::BAD_BGP_IDENTIFIER) => {
                "OPEN error: bad BGP identifier"
            }
            (code::OPEN_MESSAGE, _) => "OPEN message error",
            (code::UPDATE_MESSAGE, _) => "UPDATE message error",
            (code::HOLD_TIMER_EXPIRED, _) => "hold timer expired",
            (code::FSM, _) => "finite state machine error",
            (code::CEASE, cease::MAX_PREFIXES) => "Cease: maximum number of prefixes reached",
            (code::CEASE, cease::ADMIN_SHUTDOWN) => "Cease: administrative shutdown",
            (code::CEASE, cease::PEER_DECONFIGURED) => "Cease: peer de-configured",
            (code::CEASE, cease::ADMIN_RESET) => "Cease: administrative reset",
            (code::CEASE, cease::CONNECTION_REJECTED) => "Cease: connection rejected",
            (code::CEASE, cease::OTHER_CONFIG_CHANGE) => "Cease: other configuration change",
            (code::CEASE, cease::CONNECTION_COLLISION) => "Cease: connection collision resolution",
            (code::CEASE, cease::OUT_OF_RESOURCES) => "Cease: out of resources",
            (code::CEASE, _) => "Cease",
            _ => "unknown error code",
        }
    }
}

impl std::fmt::Display for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NOTIFICATION {}/{}", self.code, self.subcode)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi: u16,
    pub safi: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

/// A message that cannot be used, with the NOTIFICATION it calls for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("connection not synchronized (bad marker)")]
    ConnectionNotSynchronized,
    #[error("bad message length {0}")]
    BadMessageLength(u16),
    #[error("bad message type {0}")]
    BadMessageType(u8),
    #[error("unsupported BGP version {0}")]
    UnsupportedVersion(u8),
    #[error("unsupported optional parameter {0}")]
    UnsupportedOptionalParameter(u8),
    #[error("malformed OPEN")]
    MalformedOpen,
    #[error("malformed attribute list")]
    MalformedAttributeList,
    #[error("invalid network field")]
    InvalidNetworkField,
    #[error("path attribute error: {error}")]
    Attribute {
        #[source]
        error: AttributeError,
        /// The erroneous attribute (type, length, value), the NOTIFICATION's data.
        data: Vec<u8>,
    },
    #[error("malformed NOTIFICATION")]
    MalformedNotification,
}

impl MessageError {
    /// The NOTIFICATION RFC 4271 §6 requires, or `None` when none may be
    /// sent (a malformed NOTIFICATION is never answered with another).
    pub fn notification(&self) -> Option<Notification> {
        use code::*;
        Some(match self {
            Self::ConnectionNotSynchronized => Notification::new(MESSAGE_HEADER, 1),
            Self::BadMessageLength(len) => {
                Notification::with_data(MESSAGE_HEADER, 2, len.to_be_bytes().to_vec())
            }
            Self::BadMessageType(t) => Notification::with_data(MESSAGE_HEADER, 3, vec![*t]),
            Self::UnsupportedVersion(_) => Notification::with_data(
                OPEN_MESSAGE,
                open_error::UNSUPPORTED_VERSION,
                u16::from(BGP_VERSION).to_be_bytes().to_vec(),
            ),
            Self::UnsupportedOptionalParameter(_) => {
                Notification::new(OPEN_MESSAGE, open_error::UNSUPPORTED_OPTIONAL_PARAMETER)
            }
            Self::MalformedOpen => Notification::new(OPEN_MESSAGE, 0),
            Self::MalformedAttributeList => Notification::new(UPDATE_MESSAGE, 1),
            Self::InvalidNetworkField => Notification::new(UPDATE_MESSAGE, 10),
            Self::Attribute { error, data } => {
                Notification::with_data(UPDATE_MESSAGE, error.subcode(), data.clone())
            }
            Self::MalformedNotification => return None,
        })
    }
}

/// What the receiver knows that changes the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    /// Both sides announced the 4-octet ASN capability.
    pub four_octet_as: bool,
}

impl Default for Codec {
    fn default() -> Self {
        Self {
            four_octet_as: true,
        }
    }
}

/// Looks at the start of a byte stream: `Ok(Some(len))` when a whole message
/// of `len` bytes is there, `Ok(None)` when more bytes are needed.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, MessageError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[..16].iter().any(|b| *b != 0xff) {
        return Err(MessageError::ConnectionNotSynchronized);
    }
    let len = u16::from_be_bytes([buf[16], buf[17]]);
    if usize::from(len) < HEADER_LEN || usize::from(len) > MAX_MESSAGE_LEN {
        return Err(MessageError::BadMessageLength(len));
    }
    if buf.len() < usize::from(len) {
        return Ok(None);
    }
    Ok(Some(usize::from(len)))
}

impl Message {
    /// Decodes one whole message (header included).
    pub fn decode(frame: &[u8], codec: Codec) -> Result<Self, MessageError> {
        let Some(len) = frame_len(frame)? else {
            return Err(MessageError::BadMessageLength(
                u16::try_from(frame.len()).unwrap_or(u16::MAX),
            ));
        };
        if len != frame.len() {
            return Err(MessageError::BadMessageLength(len as u16));
        }
        let kind = frame[18];
        let body = &frame[HEADER_LEN..];
        let bad_len = MessageError::BadMessageLength(len as u16);
        match kind {
            TYPE_OPEN => {
                if len < 29 {
                    return Err(bad_len);
                }
                decode_open(body).map(Message::Open)
            }
            TYPE_UPDATE => {
                if len < 23 {
                    return Err(bad_len);
                }
                decode_update(body, codec).map(Message::Update)
            }
            TYPE_NOTIFICATION => {
                if len < 21 {
                    return Err(MessageError::MalformedNotification);
                }
                Ok(Message::Notification(Notification {
                    code: body[0],
                    subcode: body[1],
                    data: body[2..].to_vec(),
                }))
            }
            TYPE_KEEPALIVE => {
                if len != HEADER_LEN {
                    return Err(bad_len);
                }
                Ok(Message::Keepalive)
            }
            TYPE_ROUTE_REFRESH => {
                if len != 23 {
                    return Err(bad_len);
                }
                Ok(Message::RouteRefresh(RouteRefresh {
                    afi: u16::from_be_bytes([body[0], body[1]]),
                    safi: body[3],
                }))
            }
            t => Err(MessageError::BadMessageType(t)),
        }
    }

    pub fn encode(&self, codec: Codec) -> Vec<u8> {
        let mut out = vec![0xff; 16];
        out.extend_from_slice(&[0, 0, 0]);
        match self {
            Message::Open(o) => {
                out[18] = TYPE_OPEN;
                out.push(BGP_VERSION);
                out.extend_from_slice(&o.my_as.to_be_bytes());
                out.extend_from_slice(&o.hold_time.to_be_bytes());
                out.extend_from_slice(&o.bgp_identifier.octets());
                let mut caps = Vec::new();
                for c in &o.capabilities {
                    match c {
                        Capability::MultiProtocol { afi, safi } => {
                            caps.extend_from_slice(&[CAP_MULTIPROTOCOL, 4]);
                            caps.extend_from_slice(&afi.to_be_bytes());
                            caps.extend_from_slice(&[0, *safi]);
                        }
                        Capability::RouteRefresh => caps.extend_from_slice(&[CAP_ROUTE_REFRESH, 0]),
                        Capability::FourOctetAs(a) => {
                            caps.extend_from_slice(&[CAP_FOUR_OCTET_AS, 4]);
                            caps.extend_from_slice(&a.to_be_bytes());
                        }
                        Capability::GracefulRestart(g) => {
                            let mut v = Vec::new();
                            g.encode(&mut v);
                            caps.push(CAP_GRACEFUL_RESTART);
                            caps.push(v.len() as u8);
                            caps.extend_from_slice(&v);
                        }
                        Capability::Other { code, value } => {
                            caps.push(*code);
                            caps.push(value.len() as u8);
                            caps.extend_from_slice(value);
                        }
                    }
                }
                if caps.is_empty() {
                    out.push(0);
                } else {
                    out.push(caps.len() as u8 + 2);
                    out.push(OPT_PARAM_CAPABILITIES);
                    out.push(caps.len() as u8);
                    out.extend_from_slice(&caps);
                }
            }
            Message::Update(u) => {
                out[18] = TYPE_UPDATE;
                let mut w = Vec::new();
                for p in &u.withdrawn_routes {
                    encode_prefix(&IpNet::V4(*p), &mut w);
                }
                out.extend_from_slice(&(w.len() as u16).to_be_bytes());
                out.extend_from_slice(&w);
                let mut a = Vec::new();
                for attr in &u.path_attributes {
                    attr.encode(codec.four_octet_as, &mut a);
                }
                out.extend_from_slice(&(a.len() as u16).to_be_bytes());
                out.extend_from_slice(&a);
                for p in &u.nlri {
                    encode_prefix(&IpNet::V4(*p), &mut out);
                }
            }
            Message::Notification(n) => {
                out[18] = TYPE_NOTIFICATION;
                out.push(n.code);
                out.push(n.subcode);
                out.extend_from_slice(&n.data);
            }
            Message::Keepalive => out[18] = TYPE_KEEPALIVE,
            Message::RouteRefresh(r) => {
                out[18] = TYPE_ROUTE_REFRESH;
                out.extend_from_slice(&r.afi.to_be_bytes());
                out.push(0);
                out.push(r.safi);
            }
        }
        let len = out.len() as u16;
        out[16..18].copy_from_slice(&len.to_be_bytes());
        out
    }
}

fn decode_open(body: &[u8]) -> Result<Open, MessageError> {
    let mut r = Reader::new(body);
    let version = r.u8().ok_or(MessageError::MalformedOpen)?;
    if version != BGP_VERSION {
        return Err(MessageError::UnsupportedVersion(version));
    }
    let my_as = r.u16().ok_or(MessageError::MalformedOpen)?;
    let hold_time = r.u16().ok_or(MessageError::MalformedOpen)?;
    let bgp_identifier = Ipv4Addr::from(r.u32().ok_or(MessageError::MalformedOpen)?);
    let opt_len = r.u8().ok_or(MessageError::MalformedOpen)?;
    if usize::from(opt_len) != r.len() {
        return Err(MessageError::MalformedOpen);
    }
    let mut capabilities = Vec::new();
    while !r.is_empty() {
        let param_type = r.u8().ok_or(MessageError::MalformedOpen)?;
        let param_len = r.u8().ok_or(MessageError::MalformedOpen)?;
        let param = r
            .take(usize::from(param_len))
            .ok_or(MessageError::MalformedOpen)?;
        if param_type != OPT_PARAM_CAPABILITIES {
            return Err(MessageError::UnsupportedOptionalParameter(param_type));
        }
        let mut c = Reader::new(param);
        while !c.is_empty() {
            let code = c.u8().ok_or(MessageError::MalformedOpen)?;
            let len = c.u8().ok_or(MessageError::MalformedOpen)?;
            let value = c
                .take(usize::from(len))
                .ok_or(MessageError::MalformedOpen)?;
            capabilities.push(match (code, value.len()) {
                (CAP_MULTIPROTOCOL, 4) => Capability::MultiProtocol {
                    afi: u16::from_be_bytes([value[0], value[1]]),
                    safi: value[3],
                },
                (CAP_ROUTE_REFRESH, 0) => Capability::RouteRefresh,
                (CAP_FOUR_OCTET_AS, 4) => Capability::FourOctetAs(u32::from_be_bytes([
                    value[0], value[1], value[2], value[3],
                ])),
                (CAP_GRACEFUL_RESTART, _) => match GracefulRestart::decode(value) {
                    Some(g) => Capability::GracefulRestart(g),
                    None => Capability::Other {
                        code,
                        value: value.to_vec(),
                    },
                },
                _ => Capability::Other {
                    code,
                    value: value.to_vec(),
                },
            });
        }
    }
    Ok(Open {
        my_as,
        hold_time,
        bgp_identifier,
        capabilities,
    })
}

fn decode_update(body: &[u8], codec: Codec) -> Result<Update, MessageError> {
    let mut r = Reader::new(body);
    let withdrawn_len = r.u16().ok_or(MessageError::MalformedAttributeList)?;
    let withdrawn = r
        .take(usize::from(withdrawn_len))
        .ok_or(MessageError::MalformedAttributeList)?;
    let attr_len = r.u16().ok_or(MessageError::MalformedAttributeList)?;
    let attrs = r
        .take(usize::from(attr_len))
        .ok_or(MessageError::MalformedAttributeList)?;
    let nlri = r.rest();

    let v4 = |b: &[u8]| -> Result<Vec<Ipv4Net>, MessageError> {
        Ok(decode_prefixes(b, AfiSafi::Ipv4Unicast)
            .map_err(|_| MessageError::InvalidNetworkField)?
            .into_iter()
            .filter_map(|p| match p {
                IpNet::V4(v) => Some(v),
                IpNet::V6(_) => None,
            })
            .collect())
    };
    let withdrawn_routes = v4(withdrawn)?;
    let nlri = v4(nlri)?;

    let mut update = Update {
        withdrawn_routes,
        path_attributes: Vec::new(),
        nlri,
        treat_as_withdraw: None,
    };
    let mut seen = [false; 256];
    let mut a = Reader::new(attrs);
    while !a.is_empty() {
        let start = attrs.len() - a.len();
        let header = (|| {
            let flags = a.u8()?;
            let type_code = a.u8()?;
            let len = if flags & FLAG_EXTENDED_LENGTH != 0 {
                a.u16()?
            } else {
                u16::from(a.u8()?)
            };
            let value = a.take(usize::from(len))?;
            Some((flags, type_code, value))
        })();
        let Some((flags, type_code, value)) = header else {
            // RFC 7606 §4: the attribute section cannot be walked any further.
            update.treat_as_withdraw = Some(AttributeError::Overrun);
            break;
        };
        let raw = &attrs[start..attrs.len() - a.len()];
        if std::mem::replace(&mut seen[usize::from(type_code)], true) {
            // RFC 7606 §3 g: repeated MP attributes reset, others are dropped.
            if type_code == attribute::MP_REACH_NLRI || type_code == attribute::MP_UNREACH_NLRI {
                return Err(MessageError::MalformedAttributeList);
            }
            continue;
        }
        match decode_attribute(flags, type_code, value, codec.four_octet_as) {
            Ok(attr) => update.path_attributes.push(attr),
            Err(error @ AttributeError::UnrecognizedWellKnown { .. }) => {
                return Err(MessageError::Attribute {
                    error,
                    data: raw.to_vec(),
                })
            }
            Err(error) => match attribute::error_action(type_code) {
                ErrorAction::SessionReset => {
                    return Err(MessageError::Attribute {
                        error,
                        data: raw.to_vec(),
                    })
                }
                ErrorAction::TreatAsWithdraw => {
                    update.treat_as_withdraw.get_or_insert(error);
                }
                ErrorAction::AttributeDiscard => {}
            },
        }
    }

    // RFC 7606 §3 d: a missing well-known mandatory attribute withdraws.
    let has_mp_reach = seen[usize::from(attribute::MP_REACH_NLRI)];
    if update.treat_as_withdraw.is_none() && (!update.nlri.is_empty() || has_mp_reach) {
        let mut required = vec![attribute::ORIGIN, attribute::AS_PATH];
        if !update.nlri.is_empty() {
            required.push(attribute::NEXT_HOP);
        }
        if let Some(type_code) = required.into_iter().find(|t| !seen[usize::from(*t)]) {
            update.treat_as_withdraw = Some(AttributeError::MissingWellKnown { type_code });
        }
    }
    Ok(update)
}
