//! CHILD SA state (RFC 7296 §1.3, §2.17): the negotiated ESP transforms,
//! SPIs, traffic selectors and the KEYMAT split into the two directions'
//! keys handed to the data plane.

use std::time::{Duration, Instant};

use crate::action::EspKeys;
use crate::config::EspChosen;
use crate::crypto::{child_keymat, Prf, Secret};
use crate::payload::TrafficSelector;
use zeroize::Zeroizing;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildSaState {
    Installed,
    Rekeying,
    /// A rekey installed its successor: it waits for its DELETE.
    Rekeyed,
    Deleting,
}

#[derive(Debug)]
pub struct ChildSa {
    /// Holds `spi_in` against reuse while this CHILD SA exists.
    pub(crate) _lease: crate::spi::SpiLease,
    pub spi_in: u32,
    pub spi_out: u32,
    pub chosen: EspChosen,
    pub encap: bool,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    pub state: ChildSaState,
    pub installed_at: Instant,
    /// When we start rekeying it (soft lifetime with jitter).
    pub rekey_at: Option<Instant>,
    /// Hard lifetime: deleted at this point if still in use.
    pub expire_at: Option<Instant>,
    /// The CHILD SA this one replaces (inbound SPI), if a rekey made it.
    pub replaces: Option<u32>,
    /// Set while the outbound SA waits for the one it replaces to be
    /// deleted (we answered the rekey): sent on from then, or from this
    /// instant at the latest.
    pub outbound_deferred_until: Option<Instant>,
    /// Its keys, kept for snapshots (`snapshot`): a restarted daemon
    /// resumes the CHILD SA with them.
    pub(crate) keys: ChildKeys,
}

/// Both directions' keys of a CHILD SA (zeroized when dropped).
#[derive(Clone)]
pub(crate) struct ChildKeys {
    pub(crate) inbound: EspKeys,
    pub(crate) outbound: EspKeys,
}

impl std::fmt::Debug for ChildKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChildKeys(redacted)")
    }
}

/// A rekeyed CHILD SA after its DELETE exchange: its inbound SA still
/// decrypts what the peer sealed with it and was in flight, until `until`.
#[derive(Debug)]
pub(crate) struct Retired {
    /// Holds `spi_in` against reuse while the data plane has it.
    pub(crate) _lease: crate::spi::SpiLease,
    pub(crate) spi_in: u32,
    pub(crate) spi_out: u32,
    pub(crate) until: Instant,
}

/// Splits KEYMAT (§2.17): keys for initiator-to-responder first, each as
/// encryption key (with salt) then integrity key. Returns (in, out) for
/// our role.
pub fn derive_child_keys(
    prf: Prf,
    sk_d: &[u8],
    gir: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    chosen: &EspChosen,
    we_are_initiator: bool,
) -> (EspKeys, EspKeys) {
    let el = chosen.encr.keymat_len();
    let il = chosen.integ.map_or(0, |i| i.key_len());
    let km = child_keymat(prf, sk_d, gir, ni, nr, 2 * (el + il));
    let part = |a: usize, n: usize| -> Secret { Zeroizing::new(km[a..a + n].to_vec()) };
    let i2r = EspKeys {
        encryption_key: part(0, el),
        integrity_key: part(el, il),
    };
    let r2i = EspKeys {
        encryption_key: part(el + il, el),
        integrity_key: part(2 * el + il, il),
    };
    if we_are_initiator {
        (r2i, i2r)
    } else {
        (i2r, r2i)
    }
}

/// A soft-lifetime deadline: `from + life` minus up to 10% random jitter,
/// so both peers rarely start the same rekey at once (§2.8.1).
pub fn jittered(from: Instant, life: Duration) -> Instant {
    let frac = f64::from(crate::crypto::random_u32() % 1000) / 10_000.0;
    from + life.mul_f64(1.0 - frac)
}

/// When to retry a refused rekey: 10-20 s later, randomised so two peers
/// that collided (§2.8.2) do not collide again.
pub fn retry_at(now: Instant) -> Instant {
    now + Duration::from_millis(10_000 + u64::from(crate::crypto::random_u32() % 10_000))
}
