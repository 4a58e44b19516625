//! Connection configuration as the IKE core sees it (what the agent
//! derives from an API connection), the pre-shared key as a secret, and
//! proposal construction/selection from the API's cipher lists
//! (`ikev2_ciphers`, `esp_ciphers`). No I/O, no logging of the PSK.

use std::net::IpAddr;
use std::time::Duration;

use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::crypto::{DhGroup, Encr, Integ, Prf};
use crate::payload::{
    idtype, proto, IdPayload, Proposal, TrafficSelector, Transform, TransformType,
};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unknown encryption {0:?}")]
    UnknownEncryption(String),
    #[error("unknown integrity {0:?}")]
    UnknownIntegrity(String),
    #[error("unknown DH group {0:?}")]
    UnknownDhGroup(String),
    #[error("{0} requires an integrity algorithm")]
    IntegrityRequired(&'static str),
}

/// A pre-shared key: zeroized on drop, never printed, compared in constant time.
#[derive(Clone)]
pub struct Psk(Zeroizing<Vec<u8>>);

impl Psk {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(Zeroizing::new(bytes.into()))
    }
    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Psk(<redacted>)")
    }
}

impl PartialEq for Psk {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// An IKE identity (§3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Addr(IpAddr),
    Fqdn(String),
}

impl Identity {
    pub fn to_payload(&self) -> IdPayload {
        match self {
            Self::Addr(IpAddr::V4(a)) => IdPayload {
                id_type: idtype::IPV4_ADDR,
                data: a.octets().to_vec(),
            },
            Self::Addr(IpAddr::V6(a)) => IdPayload {
                id_type: idtype::IPV6_ADDR,
                data: a.octets().to_vec(),
            },
            Self::Fqdn(s) => IdPayload {
                id_type: idtype::FQDN,
                data: s.as_bytes().to_vec(),
            },
        }
    }
    pub fn matches(&self, p: &IdPayload) -> bool {
        self.to_payload() == *p
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Addr(a) => write!(f, "{a}"),
            Self::Fqdn(s) => f.write_str(s),
        }
    }
}

/// One entry of `ikev2_ciphers`: the PRF is HMAC with the integrity hash
/// (strongSwan's `aes256gcm16-prfsha384-ecp384` is encryption aes256gcm,
/// integrity sha384, dh_group ecp384).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IkeCipher {
    pub encr: Encr,
    pub prf: Prf,
    /// Only for non-AEAD encryption.
    pub integ: Option<Integ>,
    pub dh: DhGroup,
}

fn parse_integ(s: &str) -> Result<Integ, ConfigError> {
    match s {
        "sha256" => Ok(Integ::HmacSha256_128),
        "sha384" => Ok(Integ::HmacSha384_192),
        "sha512" => Ok(Integ::HmacSha512_256),
        o => Err(ConfigError::UnknownIntegrity(o.to_string())),
    }
}

fn prf_for(i: Integ) -> Prf {
    match i {
        Integ::HmacSha256_128 => Prf::HmacSha256,
        Integ::HmacSha384_192 => Prf::HmacSha384,
        Integ::HmacSha512_256 => Prf::HmacSha512,
    }
}

impl IkeCipher {
    /// From the API's names; `integrity` defaults to sha256 and
    /// `dh_group` to curve25519 when absent.
    pub fn from_api(
        encryption: &str,
        integrity: Option<&str>,
        dh_group: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let encr = Encr::from_api_name(encryption)
            .ok_or_else(|| ConfigError::UnknownEncryption(encryption.into()))?;
        let hash = parse_integ(integrity.unwrap_or("sha256"))?;
        let dh_name = dh_group.unwrap_or("curve25519");
        let dh = DhGroup::from_api_name(dh_name)
            .ok_or_else(|| ConfigError::UnknownDhGroup(dh_name.into()))?;
        Ok(Self {
            encr,
            prf: prf_for(hash),
            integ: (!encr.is_aead()).then_some(hash),
            dh,
        })
    }

    fn transforms(&self) -> Vec<Transform> {
        let mut t = vec![
            Transform {
                ttype: TransformType::Encr,
                id: self.encr.id(),
                key_length: self.encr.key_length_attr(),
            },
            Transform {
                ttype: TransformType::Prf,
                id: self.prf.id(),
                key_length: None,
            },
        ];
        if let Some(i) = self.integ {
            t.push(Transform {
                ttype: TransformType::Integ,
                id: i.id(),
                key_length: None,
            });
        }
        t.push(Transform {
            ttype: TransformType::Dh,
            id: self.dh.id(),
            key_length: None,
        });
        t
    }
}

/// One entry of `esp_ciphers`; `dh` set means PFS on CREATE_CHILD_SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EspCipher {
    pub encr: Encr,
    pub integ: Option<Integ>,
    pub dh: Option<DhGroup>,
}

impl EspCipher {
    pub fn from_api(
        encryption: &str,
        integrity: Option<&str>,
        dh_group: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let encr = Encr::from_api_name(encryption)
            .ok_or_else(|| ConfigError::UnknownEncryption(encryption.into()))?;
        let integ = if encr.is_aead() {
            None
        } else {
            Some(parse_integ(
                integrity.ok_or(ConfigError::IntegrityRequired("CBC encryption"))?,
            )?)
        };
        let dh = dh_group
            .map(|d| DhGroup::from_api_name(d).ok_or_else(|| ConfigError::UnknownDhGroup(d.into())))
            .transpose()?;
        Ok(Self { encr, integ, dh })
    }
}

/// What to do when DPD finds the peer dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpdAction {
    /// Re-initiate the IKE SA (the connection is wanted up).
    Restart,
    /// Remove the SAs and wait for the peer.
    Clear,
}

/// Everything the IKE core needs for one connection (one tunnel).
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// The agent's identifier for the connection/tunnel, echoed in actions.
    pub name: String,
    pub local_addr: IpAddr,
    pub remote_addr: IpAddr,
    pub local_id: Identity,
    pub remote_id: Identity,
    pub psk: Psk,
    /// `initiation_policy == vpn_gateway`: we start the IKE SA.
    pub initiate: bool,
    pub ike_ciphers: Vec<IkeCipher>,
    pub esp_ciphers: Vec<EspCipher>,
    /// Prefer extended sequence numbers (RFC 4303 §2.2.1): our proposals
    /// carry both ESN transforms, the preferred one first, and as
    /// responder we pick the preferred one when the peer offers it.
    pub esn: bool,
    /// Use UDP-encapsulated ESP even without NAT (pretends to be behind a
    /// NAT, like strongSwan's `encap = yes`).
    pub force_encap: bool,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    pub dpd_interval: Option<Duration>,
    pub dpd_action: DpdAction,
    /// First retransmission timeout; later ones grow by `retransmit_base`.
    pub retransmit_timeout: Duration,
    pub retransmit_base: f64,
    pub retransmit_tries: u32,
    /// How long a responder keeps a half-open IKE SA.
    pub half_open_timeout: Duration,
    pub ike_port: u16,
    pub natt_port: u16,
    /// The peer's IKE port (500 unless the peer is reached through a NAT).
    pub remote_port: u16,
    /// Fragment IKE messages larger than this (RFC 7383) when the peer
    /// supports it.
    pub fragment_size: usize,
    /// Offer and accept IKE fragmentation (RFC 7383).
    pub fragmentation: bool,
    /// NAT keepalive interval when we are (or pretend to be) behind a NAT.
    pub keepalive_interval: Duration,
    /// Soft lifetime of CHILD SAs: rekey after this (minus up to 10%
    /// jitter); `None` disables rekeying by us.
    pub child_rekey_time: Option<Duration>,
    /// Soft lifetime of the IKE SA, as above.
    pub ike_rekey_time: Option<Duration>,
    /// Hard lifetime of CHILD SAs: one that was not rekeyed by then is
    /// deleted (strongSwan's default is 110% of the rekey time).
    pub child_lifetime: Option<Duration>,
    /// Packet and byte lifetimes of CHILD SAs, handed to the data plane
    /// with every install (it counts; at the soft limit the agent asks
    /// for a rekey). None by default.
    pub child_volume: crate::action::VolumeLifetimes,
    /// Make-before-break (like strongSwan's `delete_rekeyed_delay`): how
    /// long the inbound SA of a rekeyed CHILD SA keeps decrypting after
    /// the DELETE exchange, and how long, as the responder of a rekey, we
    /// wait for the peer's DELETE before sending on the new SA anyway.
    /// Zero removes at once. 5 s by default.
    pub rekey_grace: Duration,
}

impl ConnectionConfig {
    /// Defaults: identities are the public addresses, route-based traffic
    /// selectors (0.0.0.0/0 and ::/0), aes256gcm/sha384/ecp384 and
    /// aes256gcm/curve25519 IKE proposals, aes256gcm ESP, DPD off.
    pub fn new(name: impl Into<String>, local_addr: IpAddr, remote_addr: IpAddr, psk: Psk) -> Self {
        let all = vec![TrafficSelector::any_v4(), TrafficSelector::any_v6()];
        Self {
            name: name.into(),
            local_addr,
            remote_addr,
            local_id: Identity::Addr(local_addr),
            remote_id: Identity::Addr(remote_addr),
            psk,
            initiate: true,
            ike_ciphers: vec![
                IkeCipher {
                    encr: Encr::AesGcm16(256),
                    prf: Prf::HmacSha256,
                    integ: None,
                    dh: DhGroup::Curve25519,
                },
                IkeCipher {
                    encr: Encr::AesGcm16(256),
                    prf: Prf::HmacSha384,
                    integ: None,
                    dh: DhGroup::Ecp384,
                },
            ],
            esp_ciphers: vec![EspCipher {
                encr: Encr::AesGcm16(256),
                integ: None,
                dh: None,
            }],
            esn: true,
            force_encap: false,
            local_ts: all.clone(),
            remote_ts: all,
            dpd_interval: None,
            dpd_action: DpdAction::Restart,
            retransmit_timeout: Duration::from_secs(2),
            retransmit_base: 1.8,
            retransmit_tries: 5,
            half_open_timeout: Duration::from_secs(30),
            ike_port: 500,
            natt_port: 4500,
            remote_port: 500,
            fragment_size: 1280,
            fragmentation: true,
            keepalive_interval: Duration::from_secs(20),
            child_rekey_time: Some(Duration::from_secs(3600)),
            ike_rekey_time: Some(Duration::from_secs(4 * 3600)),
            child_lifetime: Some(Duration::from_secs(3960)),
            child_volume: crate::action::VolumeLifetimes::default(),
            rekey_grace: Duration::from_secs(5),
        }
    }
}

pub(crate) fn ike_proposals(ciphers: &[IkeCipher], spi: &[u8]) -> Vec<Proposal> {
    ciphers
        .iter()
        .enumerate()
        .map(|(i, c)| Proposal {
            number: u8::try_from(i + 1).unwrap_or(u8::MAX),
            protocol: proto::IKE,
            spi: spi.to_vec(),
            transforms: c.transforms(),
        })
        .collect()
}

fn has(p: &Proposal, t: TransformType, id: u16, kl: Option<u16>) -> bool {
    p.transforms
        .iter()
        .any(|x| x.ttype == t && x.id == id && x.key_length == kl)
}

fn none_or_absent(p: &Proposal, t: TransformType) -> bool {
    p.transforms.iter().all(|x| x.ttype != t || x.id == 0)
}

fn ike_matches(c: &IkeCipher, p: &Proposal) -> bool {
    p.protocol == proto::IKE
        && has(
            p,
            TransformType::Encr,
            c.encr.id(),
            c.encr.key_length_attr(),
        )
        && has(p, TransformType::Prf, c.prf.id(), None)
        && match c.integ {
            Some(i) => has(p, TransformType::Integ, i.id(), None),
            None => none_or_absent(p, TransformType::Integ),
        }
        && has(p, TransformType::Dh, c.dh.id(), None)
}

/// Responder: our preference order wins (like strongSwan's
/// prefer_configured_proposals); returns the peer's proposal number.
pub(crate) fn select_ike(ours: &[IkeCipher], theirs: &[Proposal]) -> Option<(u8, IkeCipher)> {
    ours.iter().find_map(|c| {
        theirs
            .iter()
            .find(|p| ike_matches(c, p))
            .map(|p| (p.number, *c))
    })
}

/// Initiator: the responder must have chosen exactly one of ours.
pub(crate) fn ike_chosen(ours: &[IkeCipher], theirs: &[Proposal]) -> Option<IkeCipher> {
    let [p] = theirs else { return None };
    let c = ours.iter().find(|c| ike_matches(c, p))?;
    // Exactly one transform of each type.
    (p.transforms.len() == c.transforms().len()).then_some(*c)
}

pub(crate) fn chosen_proposal(
    number: u8,
    protocol: u8,
    spi: Vec<u8>,
    transforms: Vec<Transform>,
) -> Vec<Proposal> {
    vec![Proposal {
        number,
        protocol,
        spi,
        transforms,
    }]
}

pub(crate) fn ike_cipher_transforms(c: &IkeCipher) -> Vec<Transform> {
    c.transforms()
}

/// A negotiated ESP transform set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspChosen {
    pub encr: Encr,
    pub integ: Option<Integ>,
    pub dh: Option<DhGroup>,
    pub esn: bool,
}

impl EspChosen {
    pub(crate) fn transforms(&self) -> Vec<Transform> {
        let mut t = vec![Transform {
            ttype: TransformType::Encr,
            id: self.encr.id(),
            key_length: self.encr.key_length_attr(),
        }];
        if let Some(i) = self.integ {
            t.push(Transform {
                ttype: TransformType::Integ,
                id: i.id(),
                key_length: None,
            });
        }
        if let Some(d) = self.dh {
            t.push(Transform {
                ttype: TransformType::Dh,
                id: d.id(),
                key_length: None,
            });
        }
        t.push(Transform {
            ttype: TransformType::Esn,
            id: u16::from(self.esn),
            key_length: None,
        });
        t
    }
}

/// Our ESP proposals; `pfs` includes the DH transforms (CREATE_CHILD_SA).
/// Each offers both ESN transforms (RFC 7296 §3.3.2: alternatives of one
/// type, in our order of preference), so a peer without ESN support can
/// still pick 32-bit sequence numbers.
pub(crate) fn esp_proposals(
    ciphers: &[EspCipher],
    spi: u32,
    esn_pref: bool,
    pfs: bool,
) -> Vec<Proposal> {
    ciphers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut transforms = EspChosen {
                encr: c.encr,
                integ: c.integ,
                dh: if pfs { c.dh } else { None },
                esn: esn_pref,
            }
            .transforms();
            transforms.push(Transform {
                ttype: TransformType::Esn,
                id: u16::from(!esn_pref),
                key_length: None,
            });
            Proposal {
                number: u8::try_from(i + 1).unwrap_or(u8::MAX),
                protocol: proto::ESP,
                spi: spi.to_be_bytes().to_vec(),
                transforms,
            }
        })
        .collect()
}

fn esp_matches(c: &EspCipher, p: &Proposal, pfs: bool, esn_pref: bool) -> Option<EspChosen> {
    if p.protocol != proto::ESP || p.spi.len() != 4 {
        return None;
    }
    if !has(
        p,
        TransformType::Encr,
        c.encr.id(),
        c.encr.key_length_attr(),
    ) {
        return None;
    }
    let integ_ok = match c.integ {
        Some(i) => has(p, TransformType::Integ, i.id(), None),
        None => none_or_absent(p, TransformType::Integ),
    };
    if !integ_ok {
        return None;
    }
    let dh = if pfs {
        match c.dh {
            Some(d) if has(p, TransformType::Dh, d.id(), None) => Some(d),
            None if none_or_absent(p, TransformType::Dh) => None,
            _ => return None,
        }
    } else {
        None
    };
    let esn = if has(p, TransformType::Esn, u16::from(esn_pref), None) {
        esn_pref
    } else if has(p, TransformType::Esn, u16::from(!esn_pref), None) {
        !esn_pref
    } else {
        return None;
    };
    Some(EspChosen {
        encr: c.encr,
        integ: c.integ,
        dh,
        esn,
    })
}

/// Responder: returns the peer's proposal (number, SPI) and our choice.
pub(crate) fn select_esp(
    ours: &[EspCipher],
    theirs: &[Proposal],
    pfs: bool,
    esn_pref: bool,
) -> Option<(u8, u32, EspChosen)> {
    ours.iter().find_map(|c| {
        theirs.iter().find_map(|p| {
            let chosen = esp_matches(c, p, pfs, esn_pref)?;
            let spi = u32::from_be_bytes(p.spi.as_slice().try_into().ok()?);
            Some((p.number, spi, chosen))
        })
    })
}

/// Initiator: checks the single returned proposal against ours.
pub(crate) fn esp_chosen(
    ours: &[EspCipher],
    theirs: &[Proposal],
    pfs: bool,
    esn_pref: bool,
) -> Option<(u32, EspChosen)> {
    let [p] = theirs else { return None };
    let spi = u32::from_be_bytes(p.spi.as_slice().try_into().ok()?);
    ours.iter().find_map(|c| {
        let ch = esp_matches(c, p, pfs, esn_pref)?;
        (p.transforms.len() == ch.transforms().len()).then_some((spi, ch))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_names_map_to_strongswan_suites() {
        let c = IkeCipher::from_api("aes256gcm", Some("sha384"), Some("ecp384")).unwrap();
        assert_eq!(
            (c.encr, c.prf, c.integ, c.dh),
            (Encr::AesGcm16(256), Prf::HmacSha384, None, DhGroup::Ecp384)
        );
        let c = IkeCipher::from_api("aes256", Some("sha256"), Some("ecp256")).unwrap();
        assert_eq!(c.integ, Some(Integ::HmacSha256_128));
        assert!(IkeCipher::from_api("des", None, None).is_err());
        assert!(EspCipher::from_api("aes128", None, None).is_err());
    }

    #[test]
    fn selection_prefers_our_order_and_rejects_mismatch() {
        let a = IkeCipher::from_api("aes128gcm", Some("sha256"), Some("modp2048")).unwrap();
        let b =
            IkeCipher::from_api("chacha20poly1305", Some("sha256"), Some("curve25519")).unwrap();
        let theirs = ike_proposals(&[a, b], &[]);
        assert_eq!(select_ike(&[b, a], &theirs), Some((2, b)));
        let c = IkeCipher::from_api("aes256", Some("sha512"), Some("ecp521")).unwrap();
        assert_eq!(select_ike(&[c], &theirs), None);
        let e = EspCipher::from_api("aes256gcm", None, None).unwrap();
        let props = esp_proposals(&[e], 0x1234_5678, false, false);
        let (n, spi, ch) = select_esp(&[e], &props, false, true).unwrap();
        assert_eq!((n, spi, ch.esn), (1, 0x1234_5678, true));
    }

    #[test]
    fn esn_is_offered_both_ways_and_preferred() {
        let e = EspCipher::from_api("aes256gcm", None, None).unwrap();
        let esn = |p: &Proposal| -> Vec<u16> {
            p.transforms
                .iter()
                .filter(|t| t.ttype == TransformType::Esn)
                .map(|t| t.id)
                .collect()
        };
        // Our proposals: ESN first, then without.
        let ours = esp_proposals(&[e], 0x1234_5678, true, false);
        assert_eq!(esn(&ours[0]), vec![1, 0]);
        // A responder preferring ESN picks it; one preferring 32-bit
        // sequence numbers picks those from the same offer.
        assert!(select_esp(&[e], &ours, false, true).unwrap().2.esn);
        assert!(!select_esp(&[e], &ours, false, false).unwrap().2.esn);
        // A peer that offers no ESN: accepted, without ESN.
        let mut theirs = ours.clone();
        theirs[0]
            .transforms
            .retain(|t| !(t.ttype == TransformType::Esn && t.id == 1));
        let (_, _, ch) = select_esp(&[e], &theirs, false, true).unwrap();
        assert!(!ch.esn);
        // As initiator we accept either single choice, never both at once.
        for esn_chosen in [true, false] {
            let chosen = EspChosen {
                encr: e.encr,
                integ: None,
                dh: None,
                esn: esn_chosen,
            };
            let reply = chosen_proposal(1, proto::ESP, vec![0, 0, 1, 0], chosen.transforms());
            let (_, got) = esp_chosen(&[e], &reply, false, true).unwrap();
            assert_eq!(got.esn, esn_chosen);
        }
        assert!(esp_chosen(&[e], &ours, false, true).is_none());
    }

    #[test]
    fn psk_debug_is_redacted() {
        let p = Psk::new(b"secret".to_vec());
        assert_eq!(format!("{p:?}"), "Psk(<redacted>)");
        assert_eq!(p, Psk::new(b"secret".to_vec()));
        assert_ne!(p, Psk::new(b"secreT".to_vec()));
    }
}
