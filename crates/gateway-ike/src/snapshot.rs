//! What of an IKE SA survives the process (a restart, an upgrade, a
//! crash): an established IKE SA and its active CHILD SAs as plain data,
//! so that a restarted daemon resumes them without a new handshake and the
//! customer notices nothing.
//!
//! The manager reports a new snapshot of an IKE SA whenever what a resume
//! depends on changes ([`Action::SaState`](crate::Action::SaState): the
//! message IDs, the endpoint, the CHILD SAs), and `None` once the SA is
//! gone; the owner persists them (sealed: they hold every key) and hands
//! them back to [`IkeManager::restore`](crate::IkeManager::restore) on
//! start. Algorithms are stored as their IANA transform IDs, times as
//! durations relative to when the snapshot was taken.
//!
//! Two counters are not the IKE core's and are filled in by the owner from
//! its data plane: the outbound sequence numbers already reserved
//! ([`ChildSaSnapshot::seq_out`], never reused: see the owner's rule) and
//! the inbound replay window's right edge.
//!
//! A snapshot is decoded from a file: [`IkeSaSnapshot::check`] and
//! `restore` treat every field as untrusted (unknown algorithms, key
//! lengths that do not match them, reserved SPIs are refused, never
//! panicked on).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::action::EspKeys;
use crate::config::{EspChosen, IkeCipher};
use crate::crypto::{DhGroup, Encr, IkeKeys, Integ, Prf, Secret};
use crate::payload::TrafficSelector;
use serde::{Deserialize, Serialize};

/// Format version of [`IkeSaSnapshot`]; a snapshot of another version is
/// not resumed.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Why a snapshot cannot be resumed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("snapshot version {0}, this build reads {SNAPSHOT_VERSION}")]
    Version(u32),
    #[error("no connection {0:?} is configured")]
    UnknownConnection(String),
    #[error("the connection's addresses changed since the snapshot")]
    AddressesChanged,
    #[error("an IKE SA with SPI {0:016x} exists already")]
    Exists(u64),
    #[error("invalid snapshot: {0}")]
    Invalid(&'static str),
    #[error("inbound SPI {0:08x} is in use")]
    SpiInUse(u32),
}

/// A secret as lowercase hex in the file (sealed as a whole by the owner).
mod hex_secret {
    use serde::{Deserialize, Deserializer, Serializer};
    use zeroize::Zeroizing;

    pub fn serialize<S: Serializer>(v: &Zeroizing<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = Zeroizing::new(String::with_capacity(v.len() * 2));
        for b in v.iter() {
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 15)]));
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<Vec<u8>>, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        if text.len() % 2 != 0 || text.len() > 2 * 1024 {
            return Err(serde::de::Error::custom("bad key length"));
        }
        let mut out = Zeroizing::new(Vec::with_capacity(text.len() / 2));
        for pair in text.as_bytes().chunks(2) {
            match (digit(pair[0]), digit(pair[1])) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => return Err(serde::de::Error::custom("not hex")),
            }
        }
        Ok(out)
    }
}

/// The seven IKE SA keys.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IkeKeysSnapshot {
    #[serde(with = "hex_secret")]
    pub sk_d: Secret,
    #[serde(with = "hex_secret")]
    pub sk_ai: Secret,
    #[serde(with = "hex_secret")]
    pub sk_ar: Secret,
    #[serde(with = "hex_secret")]
    pub sk_ei: Secret,
    #[serde(with = "hex_secret")]
    pub sk_er: Secret,
    #[serde(with = "hex_secret")]
    pub sk_pi: Secret,
    #[serde(with = "hex_secret")]
    pub sk_pr: Secret,
}

/// One direction of a CHILD SA's keys.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EspKeysSnapshot {
    #[serde(with = "hex_secret")]
    pub encryption_key: Secret,
    #[serde(with = "hex_secret")]
    pub integrity_key: Secret,
}

/// A traffic selector (RFC 7296 §3.13.1).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct TsSnapshot {
    pub ip_protocol: u8,
    pub start_port: u16,
    pub end_port: u16,
    pub start_addr: IpAddr,
    pub end_addr: IpAddr,
}

/// An established IKE SA.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IkeSaSnapshot {
    pub version: u32,
    /// The connection's name.
    pub conn: String,
    pub initiator: bool,
    pub spi_i: u64,
    pub spi_r: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub encap: bool,
    pub nat_local: bool,
    pub nat_remote: bool,
    pub peer_frag: bool,
    /// Transform IDs of the IKE SA's suite.
    pub encr: u16,
    pub encr_key_bits: Option<u16>,
    pub prf: u16,
    pub integ: Option<u16>,
    pub dh: u16,
    pub keys: IkeKeysSnapshot,
    /// The message ID of our next request, and the one we expect of the
    /// peer's next request.
    pub my_msg_id: u32,
    pub peer_msg_id: u32,
    pub age_ms: u64,
    /// When the IKE SA is to be rekeyed, from the snapshot.
    pub rekey_in_ms: Option<u64>,
    pub children: Vec<ChildSaSnapshot>,
}

/// An installed CHILD SA.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChildSaSnapshot {
    pub spi_in: u32,
    pub spi_out: u32,
    pub encr: u16,
    pub encr_key_bits: Option<u16>,
    pub integ: Option<u16>,
    pub dh: Option<u16>,
    pub esn: bool,
    pub encap: bool,
    pub local_ts: Vec<TsSnapshot>,
    pub remote_ts: Vec<TsSnapshot>,
    pub age_ms: u64,
    pub rekey_in_ms: Option<u64>,
    pub expire_in_ms: Option<u64>,
    pub keys_in: EspKeysSnapshot,
    pub keys_out: EspKeysSnapshot,
    /// Outbound: the sequence numbers up to this one may have been used
    /// (the owner's reservation); the resumed SA continues above it.
    pub seq_out: u64,
    /// Inbound: the replay window's right edge; the resumed SA accepts
    /// nothing at or below it.
    pub replay_right_edge: u64,
}

impl std::fmt::Debug for IkeSaSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IkeSaSnapshot")
            .field("conn", &self.conn)
            .field("spi_i", &format_args!("{:016x}", self.spi_i))
            .field("spi_r", &format_args!("{:016x}", self.spi_r))
            .field("remote", &self.remote)
            .field("my_msg_id", &self.my_msg_id)
            .field("peer_msg_id", &self.peer_msg_id)
            .field(
                "children",
                &self
                    .children
                    .iter()
                    .map(|c| format!("{:08x}_i/{:08x}_o", c.spi_in, c.spi_out))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A bound on what a hostile file can make us allocate per IKE SA.
const MAX_CHILDREN: usize = 16;
const MAX_SELECTORS: usize = 64;

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<&TrafficSelector> for TsSnapshot {
    fn from(t: &TrafficSelector) -> Self {
        TsSnapshot {
            ip_protocol: t.ip_protocol,
            start_port: t.start_port,
            end_port: t.end_port,
            start_addr: t.start_addr,
            end_addr: t.end_addr,
        }
    }
}

impl From<&TsSnapshot> for TrafficSelector {
    fn from(t: &TsSnapshot) -> Self {
        TrafficSelector {
            ip_protocol: t.ip_protocol,
            start_port: t.start_port,
            end_port: t.end_port,
            start_addr: t.start_addr,
            end_addr: t.end_addr,
        }
    }
}

impl From<&IkeKeys> for IkeKeysSnapshot {
    fn from(k: &IkeKeys) -> Self {
        IkeKeysSnapshot {
            sk_d: k.sk_d.clone(),
            sk_ai: k.sk_ai.clone(),
            sk_ar: k.sk_ar.clone(),
            sk_ei: k.sk_ei.clone(),
            sk_er: k.sk_er.clone(),
            sk_pi: k.sk_pi.clone(),
            sk_pr: k.sk_pr.clone(),
        }
    }
}

impl From<&EspKeys> for EspKeysSnapshot {
    fn from(k: &EspKeys) -> Self {
        EspKeysSnapshot {
            encryption_key: k.encryption_key.clone(),
            integrity_key: k.integrity_key.clone(),
        }
    }
}

impl EspKeysSnapshot {
    pub(crate) fn to_keys(&self) -> EspKeys {
        EspKeys {
            encryption_key: self.encryption_key.clone(),
            integrity_key: self.integrity_key.clone(),
        }
    }
}

/// The integrity algorithm that goes with `encr`: none for AEAD, one we
/// implement otherwise.
fn integ_for(encr: Encr, id: Option<u16>) -> Result<Option<Integ>, RestoreError> {
    let integ = match id {
        Some(i) => Some(Integ::from_id(i).ok_or(RestoreError::Invalid("unknown integrity"))?),
        None => None,
    };
    if encr.is_aead() != integ.is_none() {
        return Err(RestoreError::Invalid("integrity does not match encryption"));
    }
    Ok(integ)
}

/// The IKE SA's suite, if every transform ID is one we implement.
pub(crate) fn ike_cipher(s: &IkeSaSnapshot) -> Result<IkeCipher, RestoreError> {
    let encr = Encr::from_transform(s.encr, s.encr_key_bits)
        .ok_or(RestoreError::Invalid("unknown IKE encryption"))?;
    let prf = Prf::from_id(s.prf).ok_or(RestoreError::Invalid("unknown PRF"))?;
    let integ = integ_for(encr, s.integ)?;
    let dh = DhGroup::from_id(s.dh).ok_or(RestoreError::Invalid("unknown DH group"))?;
    Ok(IkeCipher {
        encr,
        prf,
        integ,
        dh,
    })
}

/// The IKE keys, if their lengths are those of the suite (§2.14).
pub(crate) fn ike_keys(s: &IkeSaSnapshot, c: &IkeCipher) -> Result<IkeKeys, RestoreError> {
    let k = &s.keys;
    let integ_len = c.integ.map_or(0, Integ::key_len);
    let enc_len = c.encr.keymat_len();
    let prf_len = c.prf.out_len();
    let ok = k.sk_d.len() == prf_len
        && k.sk_pi.len() == prf_len
        && k.sk_pr.len() == prf_len
        && k.sk_ai.len() == integ_len
        && k.sk_ar.len() == integ_len
        && k.sk_ei.len() == enc_len
        && k.sk_er.len() == enc_len;
    if !ok {
        return Err(RestoreError::Invalid(
            "IKE key lengths do not match the suite",
        ));
    }
    Ok(IkeKeys {
        sk_d: k.sk_d.clone(),
        sk_ai: k.sk_ai.clone(),
        sk_ar: k.sk_ar.clone(),
        sk_ei: k.sk_ei.clone(),
        sk_er: k.sk_er.clone(),
        sk_pi: k.sk_pi.clone(),
        sk_pr: k.sk_pr.clone(),
    })
}

/// A CHILD SA's suite and selectors, if valid.
pub(crate) fn child_parts(
    c: &ChildSaSnapshot,
) -> Result<(EspChosen, Vec<TrafficSelector>, Vec<TrafficSelector>), RestoreError> {
    let encr = Encr::from_transform(c.encr, c.encr_key_bits)
        .ok_or(RestoreError::Invalid("unknown ESP encryption"))?;
    let integ = integ_for(encr, c.integ)?;
    let dh = match c.dh {
        Some(d) => Some(DhGroup::from_id(d).ok_or(RestoreError::Invalid("unknown PFS group"))?),
        None => None,
    };
    let chosen = EspChosen {
        encr,
        integ,
        dh,
        esn: c.esn,
    };
    let il = integ.map_or(0, Integ::key_len);
    for k in [&c.keys_in, &c.keys_out] {
        if k.encryption_key.len() != encr.keymat_len() || k.integrity_key.len() != il {
            return Err(RestoreError::Invalid(
                "ESP key lengths do not match the suite",
            ));
        }
    }
    if c.spi_in <= 255 || c.spi_out <= 255 {
        return Err(RestoreError::Invalid("reserved ESP SPI"));
    }
    if c.local_ts.is_empty()
        || c.remote_ts.is_empty()
        || c.local_ts.len() > MAX_SELECTORS
        || c.remote_ts.len() > MAX_SELECTORS
    {
        return Err(RestoreError::Invalid("traffic selectors"));
    }
    Ok((
        chosen,
        c.local_ts.iter().map(TrafficSelector::from).collect(),
        c.remote_ts.iter().map(TrafficSelector::from).collect(),
    ))
}

impl IkeSaSnapshot {
    /// Checks what does not need the manager: version, SPIs, sizes.
    pub fn check(&self) -> Result<(), RestoreError> {
        if self.version != SNAPSHOT_VERSION {
            return Err(RestoreError::Version(self.version));
        }
        if self.spi_i == 0 || self.spi_r == 0 {
            return Err(RestoreError::Invalid("zero IKE SPI"));
        }
        if self.children.len() > MAX_CHILDREN {
            return Err(RestoreError::Invalid("too many CHILD SAs"));
        }
        if self.local.is_ipv4() != self.remote.is_ipv4() {
            return Err(RestoreError::Invalid("mixed address families"));
        }
        Ok(())
    }

    /// Our SPI of the IKE SA, which names it in events.
    pub fn my_spi(&self) -> u64 {
        if self.initiator {
            self.spi_i
        } else {
            self.spi_r
        }
    }
}
