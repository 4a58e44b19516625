//! Cipher suites of ESP: the API's `encryption` and `integrity` names, the
//! key-material lengths IKEv2 must derive for each, and the keyed per-SA
//! cipher that seals and opens an ESP packet in place.
//!
//! AEADs (RFC 4106 AES-GCM, RFC 4309 AES-CCM, RFC 7634 ChaCha20-Poly1305)
//! take their 8-byte IV from the 64-bit sequence number (unique per SA, never
//! reused because the SA never wraps) and their salt from the tail of the key
//! material. AES-CBC (RFC 3602) pairs with HMAC-SHA2 truncated per RFC 4868.
//! This module owns no packet layout beyond the ESP header/IV/ICV slots.

use aes::cipher::{
    block_padding::NoPadding, BlockDecryptMut, BlockEncrypt, BlockEncryptMut, InnerIvInit, KeyInit,
};
use aes::{Aes128, Aes192, Aes256};
use aes_gcm::aead::consts::{U11, U12, U16};
use aes_gcm::aead::AeadInPlace;
use aes_gcm::AesGcm;
use ccm::Ccm;
use hmac::{Hmac, Mac};
use ring::aead::{self, LessSafeKey, UnboundKey};
use sha2::{Sha256, Sha384, Sha512};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Length of the ESP header (SPI + sequence number), RFC 4303 §2.
pub const ESP_HEADER_LEN: usize = 8;
/// Largest IV of any suite (AES-CBC).
pub const MAX_IV_LEN: usize = 16;
/// Largest ICV of any suite (HMAC-SHA-512-256).
pub const MAX_ICV_LEN: usize = 32;

/// The API's `encryption` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encryption {
    /// `aes128`: AES-128-CBC, RFC 3602.
    Aes128,
    /// `aes192`: AES-192-CBC, RFC 3602.
    Aes192,
    /// `aes256`: AES-256-CBC, RFC 3602.
    Aes256,
    /// `aes128gcm`: AES-128-GCM with 16-byte ICV, RFC 4106.
    Aes128Gcm,
    /// `aes192gcm`: AES-192-GCM with 16-byte ICV, RFC 4106.
    Aes192Gcm,
    /// `aes256gcm`: AES-256-GCM with 16-byte ICV, RFC 4106.
    Aes256Gcm,
    /// `aes128ccm`: AES-128-CCM with 16-byte ICV, RFC 4309.
    Aes128Ccm,
    /// `aes256ccm`: AES-256-CCM with 16-byte ICV, RFC 4309.
    Aes256Ccm,
    /// `chacha20poly1305`: RFC 7634.
    ChaCha20Poly1305,
}

/// The API's `integrity` enum, used only with the AES-CBC encryptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Integrity {
    /// `sha256`: HMAC-SHA-256-128, RFC 4868.
    Sha256,
    /// `sha384`: HMAC-SHA-384-192, RFC 4868.
    Sha384,
    /// `sha512`: HMAC-SHA-512-256, RFC 4868.
    Sha512,
}

/// Why a suite or its keys were refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SuiteError {
    /// The name is not one of the API's encryption values.
    #[error("unknown encryption {0:?}")]
    UnknownEncryption(String),
    /// The name is not one of the API's integrity values.
    #[error("unknown integrity {0:?}")]
    UnknownIntegrity(String),
    /// AES-CBC needs an integrity algorithm (ESP without integrity is refused).
    #[error("encryption {0} needs an integrity algorithm")]
    MissingIntegrity(&'static str),
    /// Key material of the wrong length.
    #[error("{what} key material is {got} bytes, expected {expected}")]
    KeyLength {
        /// `"encryption"` or `"integrity"`.
        what: &'static str,
        /// Length given.
        got: usize,
        /// Length the suite needs.
        expected: usize,
    },
    /// The operating system gave no randomness for the AES-CBC IV key.
    #[error("no randomness available for the AES-CBC IV key")]
    NoRandom,
}

impl Encryption {
    /// Every value, in the API's order.
    pub const ALL: [Encryption; 9] = [
        Encryption::Aes128,
        Encryption::Aes192,
        Encryption::Aes256,
        Encryption::Aes128Gcm,
        Encryption::Aes192Gcm,
        Encryption::Aes256Gcm,
        Encryption::Aes128Ccm,
        Encryption::Aes256Ccm,
        Encryption::ChaCha20Poly1305,
    ];

    /// Parses the API name (`"aes256gcm"`, ...).
    pub fn from_api_name(name: &str) -> Result<Self, SuiteError> {
        Self::ALL
            .into_iter()
            .find(|e| e.api_name() == name)
            .ok_or_else(|| SuiteError::UnknownEncryption(name.to_owned()))
    }

    /// The API name.
    pub const fn api_name(self) -> &'static str {
        match self {
            Encryption::Aes128 => "aes128",
            Encryption::Aes192 => "aes192",
            Encryption::Aes256 => "aes256",
            Encryption::Aes128Gcm => "aes128gcm",
            Encryption::Aes192Gcm => "aes192gcm",
            Encryption::Aes256Gcm => "aes256gcm",
            Encryption::Aes128Ccm => "aes128ccm",
            Encryption::Aes256Ccm => "aes256ccm",
            Encryption::ChaCha20Poly1305 => "chacha20poly1305",
        }
    }

    /// True for the combined-mode algorithms (no separate integrity).
    pub const fn is_aead(self) -> bool {
        !matches!(
            self,
            Encryption::Aes128 | Encryption::Aes192 | Encryption::Aes256
        )
    }

    /// Cipher key length in bytes, without salt.
    pub const fn key_len(self) -> usize {
        match self {
            Encryption::Aes128 | Encryption::Aes128Gcm | Encryption::Aes128Ccm => 16,
            Encryption::Aes192 | Encryption::Aes192Gcm => 24,
            Encryption::Aes256
            | Encryption::Aes256Gcm
            | Encryption::Aes256Ccm
            | Encryption::ChaCha20Poly1305 => 32,
        }
    }

    /// Salt length taken from the end of the key material (RFC 4106 §8.1,
    /// RFC 4309 §7.1, RFC 7634 §2).
    pub const fn salt_len(self) -> usize {
        match self {
            Encryption::Aes128 | Encryption::Aes192 | Encryption::Aes256 => 0,
            Encryption::Aes128Ccm | Encryption::Aes256Ccm => 3,
            _ => 4,
        }
    }

    /// Bytes of KEYMAT IKEv2 derives for this encryption (key || salt).
    pub const fn keymat_len(self) -> usize {
        self.key_len() + self.salt_len()
    }

    /// Length of the explicit IV on the wire.
    pub const fn iv_len(self) -> usize {
        if self.is_aead() {
            8
        } else {
            16
        }
    }

    /// Alignment of payload + padding + trailer (RFC 4303 §2.4: cipher block
    /// size, at least 4 bytes).
    pub const fn pad_align(self) -> usize {
        if self.is_aead() {
            4
        } else {
            16
        }
    }
}

impl Integrity {
    /// Every value, in the API's order.
    pub const ALL: [Integrity; 3] = [Integrity::Sha256, Integrity::Sha384, Integrity::Sha512];

    /// Parses the API name (`"sha256"`, ...).
    pub fn from_api_name(name: &str) -> Result<Self, SuiteError> {
        Self::ALL
            .into_iter()
            .find(|i| i.api_name() == name)
            .ok_or_else(|| SuiteError::UnknownIntegrity(name.to_owned()))
    }

    /// The API name.
    pub const fn api_name(self) -> &'static str {
        match self {
            Integrity::Sha256 => "sha256",
            Integrity::Sha384 => "sha384",
            Integrity::Sha512 => "sha512",
        }
    }

    /// HMAC key length (RFC 4868 §2.1.1: the hash output length).
    pub const fn key_len(self) -> usize {
        match self {
            Integrity::Sha256 => 32,
            Integrity::Sha384 => 48,
            Integrity::Sha512 => 64,
        }
    }

    /// Truncated ICV length (RFC 4868 §2.3: half the hash output).
    pub const fn icv_len(self) -> usize {
        self.key_len() / 2
    }
}

/// A negotiated ESP transform: an encryption and, for AES-CBC, an integrity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Suite {
    encryption: Encryption,
    integrity: Option<Integrity>,
}

impl Suite {
    /// Builds a suite. For AEADs the integrity is ignored (IKEv2 negotiates
    /// none, RFC 4106 §8.4); for AES-CBC it is required.
    pub fn new(encryption: Encryption, integrity: Option<Integrity>) -> Result<Self, SuiteError> {
        if encryption.is_aead() {
            return Ok(Self {
                encryption,
                integrity: None,
            });
        }
        match integrity {
            Some(i) => Ok(Self {
                encryption,
                integrity: Some(i),
            }),
            None => Err(SuiteError::MissingIntegrity(encryption.api_name())),
        }
    }

    /// Builds a suite from the API names (`"aes256gcm"`, `Some("sha256")`).
    pub fn from_api_names(encryption: &str, integrity: Option<&str>) -> Result<Self, SuiteError> {
        let e = Encryption::from_api_name(encryption)?;
        let i = if e.is_aead() {
            None
        } else {
            integrity.map(Integrity::from_api_name).transpose()?
        };
        Self::new(e, i)
    }

    /// The encryption.
    pub const fn encryption(self) -> Encryption {
        self.encryption
    }

    /// The integrity, `None` for AEADs.
    pub const fn integrity(self) -> Option<Integrity> {
        self.integrity
    }

    /// Encryption KEYMAT length IKEv2 must derive per direction.
    pub const fn encr_keymat_len(self) -> usize {
        self.encryption.keymat_len()
    }

    /// Integrity KEYMAT length IKEv2 must derive per direction (0 for AEADs).
    pub const fn integ_keymat_len(self) -> usize {
        match self.integrity {
            Some(i) => i.key_len(),
            None => 0,
        }
    }

    /// Explicit IV length on the wire.
    pub const fn iv_len(self) -> usize {
        self.encryption.iv_len()
    }

    /// ICV length on the wire.
    pub const fn icv_len(self) -> usize {
        match self.integrity {
            Some(i) => i.icv_len(),
            None => 16,
        }
    }

    /// Padding alignment.
    pub const fn pad_align(self) -> usize {
        self.encryption.pad_align()
    }
}

/// The ICV did not verify (or the packet is too short to hold one).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("ICV mismatch")]
pub struct IcvMismatch;

/// The cipher refused to seal (layout inconsistent with the suite, or input
/// longer than the algorithm allows).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("cipher refused to seal")]
pub struct SealFailed;

type Aes192Gcm = AesGcm<Aes192, U12>;
type Aes128Ccm = Ccm<Aes128, U16, U11>;
type Aes256Ccm = Ccm<Aes256, U16, U11>;

enum CbcKey {
    A128(Aes128),
    A192(Aes192),
    A256(Aes256),
}

enum MacKey {
    S256(Hmac<Sha256>),
    S384(Hmac<Sha384>),
    S512(Hmac<Sha512>),
}

#[expect(
    clippy::large_enum_variant,
    reason = "the ring key is the hot path; keep it inline, box the rest"
)]
enum Keyed {
    /// AES-128/256-GCM and ChaCha20-Poly1305: ring (VAES/AVX2 path).
    Ring {
        key: LessSafeKey,
        salt: [u8; 4],
    },
    Aes192Gcm {
        aead: Box<Aes192Gcm>,
        salt: [u8; 4],
    },
    Aes128Ccm {
        aead: Box<Aes128Ccm>,
        salt: [u8; 3],
    },
    Aes256Ccm {
        aead: Box<Aes256Ccm>,
        salt: [u8; 3],
    },
    Cbc {
        aes: Box<CbcKey>,
        mac: Box<MacKey>,
        iv_gen: Box<Aes128>,
    },
}

/// A suite keyed for one SA direction. Sealing and opening work in place on
/// an ESP packet (SPI through ICV) and never allocate.
pub struct SaCipher {
    suite: Suite,
    keyed: Keyed,
}

impl std::fmt::Debug for SaCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SaCipher")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

fn check_len(what: &'static str, got: &[u8], expected: usize) -> Result<(), SuiteError> {
    if got.len() == expected {
        Ok(())
    } else {
        Err(SuiteError::KeyLength {
            what,
            got: got.len(),
            expected,
        })
    }
}

impl SaCipher {
    /// Keys a suite with the KEYMAT IKEv2 derived for one direction:
    /// `encr` is the encryption key followed by the salt (AEADs), `integ`
    /// the HMAC key (AES-CBC only; pass an empty slice for AEADs).
    pub fn new(suite: Suite, encr: &[u8], integ: &[u8]) -> Result<Self, SuiteError> {
        let e = suite.encryption;
        check_len("encryption", encr, e.keymat_len())?;
        check_len("integrity", integ, suite.integ_keymat_len())?;
        let (key, salt) = encr.split_at(e.key_len());
        let salt4 = || {
            let mut s = [0u8; 4];
            s.copy_from_slice(salt);
            s
        };
        let salt3 = || {
            let mut s = [0u8; 3];
            s.copy_from_slice(salt);
            s
        };
        let bad_key = || SuiteError::KeyLength {
            what: "encryption",
            got: encr.len(),
            expected: e.keymat_len(),
        };
        let ring_key = |alg: &'static aead::Algorithm| -> Result<Keyed, SuiteError> {
            let k = UnboundKey::new(alg, key).map_err(|_| bad_key())?;
            Ok(Keyed::Ring {
                key: LessSafeKey::new(k),
                salt: salt4(),
            })
        };
        let keyed = match e {
            Encryption::Aes128Gcm => ring_key(&aead::AES_128_GCM)?,
            Encryption::Aes256Gcm => ring_key(&aead::AES_256_GCM)?,
            Encryption::ChaCha20Poly1305 => ring_key(&aead::CHACHA20_POLY1305)?,
            Encryption::Aes192Gcm => Keyed::Aes192Gcm {
                aead: Box::new(Aes192Gcm::new_from_slice(key).map_err(|_| bad_key())?),
                salt: salt4(),
            },
            Encryption::Aes128Ccm => Keyed::Aes128Ccm {
                aead: Box::new(Aes128Ccm::new_from_slice(key).map_err(|_| bad_key())?),
                salt: salt3(),
            },
            Encryption::Aes256Ccm => Keyed::Aes256Ccm {
                aead: Box::new(Aes256Ccm::new_from_slice(key).map_err(|_| bad_key())?),
                salt: salt3(),
            },
            Encryption::Aes128 | Encryption::Aes192 | Encryption::Aes256 => {
                let aes = match e {
                    Encryption::Aes128 => {
                        CbcKey::A128(Aes128::new_from_slice(key).map_err(|_| bad_key())?)
                    }
                    Encryption::Aes192 => {
                        CbcKey::A192(Aes192::new_from_slice(key).map_err(|_| bad_key())?)
                    }
                    _ => CbcKey::A256(Aes256::new_from_slice(key).map_err(|_| bad_key())?),
                };
                let bad_integ = || SuiteError::KeyLength {
                    what: "integrity",
                    got: integ.len(),
                    expected: suite.integ_keymat_len(),
                };
                let mac = match suite.integrity {
                    Some(Integrity::Sha256) => MacKey::S256(
                        <Hmac<Sha256> as Mac>::new_from_slice(integ).map_err(|_| bad_integ())?,
                    ),
                    Some(Integrity::Sha384) => MacKey::S384(
                        <Hmac<Sha384> as Mac>::new_from_slice(integ).map_err(|_| bad_integ())?,
                    ),
                    Some(Integrity::Sha512) => MacKey::S512(
                        <Hmac<Sha512> as Mac>::new_from_slice(integ).map_err(|_| bad_integ())?,
                    ),
                    None => return Err(SuiteError::MissingIntegrity(e.api_name())),
                };
                // RFC 3602 §3 wants unpredictable IVs. Each SA gets a random
                // AES key that encrypts the (unique) sequence number into the
                // IV: one block operation per packet instead of a getrandom
                // call, and unpredictable without that key.
                let mut iv_key = [0u8; 16];
                fill_random(&mut iv_key)?;
                let iv_gen = Aes128::new(&iv_key.into());
                zeroize::Zeroize::zeroize(&mut iv_key);
                Keyed::Cbc {
                    aes: Box::new(aes),
                    mac: Box::new(mac),
                    iv_gen: Box::new(iv_gen),
                }
            }
        };
        Ok(Self { suite, keyed })
    }

    /// The suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Seals an ESP packet in place. `esp` runs from the SPI to the end of
    /// the ICV slot; the SPI and low sequence number are already written, and
    /// the plaintext (payload, padding, pad length, next header) sits between
    /// the IV slot and the ICV slot. Writes the IV and ICV.
    pub fn seal(&self, seq: u64, esn: bool, esp: &mut [u8]) -> Result<(), SealFailed> {
        let iv_len = self.suite.iv_len();
        let icv_len = self.suite.icv_len();
        let body = ESP_HEADER_LEN + iv_len;
        if esp.len() < body + icv_len {
            return Err(SealFailed);
        }
        let mut aad_buf = [0u8; 12];
        let aad = build_aad(esp, seq, esn, &mut aad_buf);
        match &self.keyed {
            Keyed::Ring { key, salt } => {
                esp[ESP_HEADER_LEN..body].copy_from_slice(&seq.to_be_bytes());
                let nonce = aead::Nonce::assume_unique_for_key(nonce12(salt, seq));
                let (rest, icv) = esp.split_at_mut(esp.len() - icv_len);
                let tag = key
                    .seal_in_place_separate_tag(nonce, aead::Aad::from(aad), &mut rest[body..])
                    .map_err(|_| SealFailed)?;
                icv.copy_from_slice(tag.as_ref());
            }
            Keyed::Aes192Gcm { aead, salt } => {
                seal_rc(&**aead, &nonce12(salt, seq), aad, seq, esp, body)?
            }
            Keyed::Aes128Ccm { aead, salt } => {
                seal_rc(&**aead, &nonce11(salt, seq), aad, seq, esp, body)?
            }
            Keyed::Aes256Ccm { aead, salt } => {
                seal_rc(&**aead, &nonce11(salt, seq), aad, seq, esp, body)?
            }
            Keyed::Cbc { aes, mac, iv_gen } => {
                let mut iv = [0u8; 16];
                iv[..8].copy_from_slice(&seq.to_be_bytes());
                iv[8..12].copy_from_slice(&esp[..4]);
                iv_gen.encrypt_block((&mut iv).into());
                esp[ESP_HEADER_LEN..body].copy_from_slice(&iv);
                let end = esp.len() - icv_len;
                let pt = &mut esp[body..end];
                let n = pt.len();
                if n % 16 != 0 {
                    return Err(SealFailed);
                }
                let ok = match &**aes {
                    CbcKey::A128(k) => {
                        cbc::Encryptor::<Aes128>::inner_iv_init(k.clone(), (&iv).into())
                            .encrypt_padded_mut::<NoPadding>(pt, n)
                            .is_ok()
                    }
                    CbcKey::A192(k) => {
                        cbc::Encryptor::<Aes192>::inner_iv_init(k.clone(), (&iv).into())
                            .encrypt_padded_mut::<NoPadding>(pt, n)
                            .is_ok()
                    }
                    CbcKey::A256(k) => {
                        cbc::Encryptor::<Aes256>::inner_iv_init(k.clone(), (&iv).into())
                            .encrypt_padded_mut::<NoPadding>(pt, n)
                            .is_ok()
                    }
                };
                if !ok {
                    return Err(SealFailed);
                }
                let mut full = [0u8; 64];
                let full = mac.compute(&esp[..end], seq, esn, &mut full);
                esp[end..].copy_from_slice(&full[..icv_len]);
            }
        }
        Ok(())
    }

    /// Verifies the ICV and decrypts an ESP packet in place (`esp` from the
    /// SPI to the end of the ICV). On success the plaintext sits between the
    /// IV and the ICV. On failure the buffer content is unspecified.
    pub fn open(&self, seq: u64, esn: bool, esp: &mut [u8]) -> Result<(), IcvMismatch> {
        let iv_len = self.suite.iv_len();
        let icv_len = self.suite.icv_len();
        let body = ESP_HEADER_LEN + iv_len;
        if esp.len() < body + icv_len {
            return Err(IcvMismatch);
        }
        let mut aad_buf = [0u8; 12];
        let aad = build_aad(esp, seq, esn, &mut aad_buf);
        let mut iv = [0u8; 16];
        iv[..iv_len].copy_from_slice(&esp[ESP_HEADER_LEN..body]);
        let iv8 = u64::from_be_bytes([iv[0], iv[1], iv[2], iv[3], iv[4], iv[5], iv[6], iv[7]]);
        let end = esp.len() - icv_len;
        match &self.keyed {
            Keyed::Ring { key, salt } => {
                let mut tag = [0u8; 16];
                tag.copy_from_slice(&esp[end..]);
                let nonce = aead::Nonce::assume_unique_for_key(nonce12(salt, iv8));
                key.open_in_place_separate_tag(
                    nonce,
                    aead::Aad::from(aad),
                    aead::Tag::from(tag),
                    &mut esp[body..end],
                    0..,
                )
                .map_err(|_| IcvMismatch)?;
            }
            Keyed::Aes192Gcm { aead, salt } => {
                open_rc(&**aead, &nonce12(salt, iv8), aad, esp, body)?
            }
            Keyed::Aes128Ccm { aead, salt } => {
                open_rc(&**aead, &nonce11(salt, iv8), aad, esp, body)?
            }
            Keyed::Aes256Ccm { aead, salt } => {
                open_rc(&**aead, &nonce11(salt, iv8), aad, esp, body)?
            }
            Keyed::Cbc { aes, mac, .. } => {
                let mut full = [0u8; 64];
                let full = mac.compute(&esp[..end], seq, esn, &mut full);
                if !bool::from(full[..icv_len].ct_eq(&esp[end..])) {
                    return Err(IcvMismatch);
                }
                let ct = &mut esp[body..end];
                if ct.len() % 16 != 0 {
                    return Err(IcvMismatch);
                }
                let ok = match &**aes {
                    CbcKey::A128(k) => {
                        cbc::Decryptor::<Aes128>::inner_iv_init(k.clone(), (&iv).into())
                            .decrypt_padded_mut::<NoPadding>(ct)
                            .is_ok()
                    }
                    CbcKey::A192(k) => {
                        cbc::Decryptor::<Aes192>::inner_iv_init(k.clone(), (&iv).into())
                            .decrypt_padded_mut::<NoPadding>(ct)
                            .is_ok()
                    }
                    CbcKey::A256(k) => {
                        cbc::Decryptor::<Aes256>::inner_iv_init(k.clone(), (&iv).into())
                            .decrypt_padded_mut::<NoPadding>(ct)
                            .is_ok()
                    }
                };
                if !ok {
                    return Err(IcvMismatch);
                }
            }
        }
        Ok(())
    }
}

impl MacKey {
    /// HMAC over the ESP packet up to the ICV, with the ESN high-order bits
    /// appended for the computation only (RFC 4303 §2.2.1).
    fn compute<'a>(&self, data: &[u8], seq: u64, esn: bool, out: &'a mut [u8; 64]) -> &'a [u8] {
        let hi = ((seq >> 32) as u32).to_be_bytes();
        macro_rules! run {
            ($m:expr) => {{
                let mut m = $m.clone();
                m.update(data);
                if esn {
                    m.update(&hi);
                }
                let d = m.finalize().into_bytes();
                out[..d.len()].copy_from_slice(&d);
                &out[..d.len()]
            }};
        }
        match self {
            MacKey::S256(m) => run!(m),
            MacKey::S384(m) => run!(m),
            MacKey::S512(m) => run!(m),
        }
    }
}

/// AAD of RFC 4106 §5 (also RFC 4309 §5, RFC 7634 §3): SPI || seq, or with
/// ESN SPI || seq high || seq low.
fn build_aad<'a>(esp: &[u8], seq: u64, esn: bool, out: &'a mut [u8; 12]) -> &'a [u8] {
    out[..4].copy_from_slice(&esp[..4]);
    if esn {
        out[4..8].copy_from_slice(&((seq >> 32) as u32).to_be_bytes());
        out[8..12].copy_from_slice(&esp[4..8]);
        &out[..12]
    } else {
        out[4..8].copy_from_slice(&esp[4..8]);
        &out[..8]
    }
}

fn nonce12(salt: &[u8; 4], iv: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(salt);
    n[4..].copy_from_slice(&iv.to_be_bytes());
    n
}

fn nonce11(salt: &[u8; 3], iv: u64) -> [u8; 11] {
    let mut n = [0u8; 11];
    n[..3].copy_from_slice(salt);
    n[3..].copy_from_slice(&iv.to_be_bytes());
    n
}

fn seal_rc<A: AeadInPlace>(
    aead: &A,
    nonce: &[u8],
    aad: &[u8],
    seq: u64,
    esp: &mut [u8],
    body: usize,
) -> Result<(), SealFailed> {
    esp[ESP_HEADER_LEN..body].copy_from_slice(&seq.to_be_bytes());
    let end = esp.len() - 16;
    let (rest, icv) = esp.split_at_mut(end);
    let tag = aead
        .encrypt_in_place_detached(
            aes_gcm::aead::Nonce::<A>::from_slice(nonce),
            aad,
            &mut rest[body..],
        )
        .map_err(|_| SealFailed)?;
    icv.copy_from_slice(&tag);
    Ok(())
}

fn open_rc<A: AeadInPlace>(
    aead: &A,
    nonce: &[u8],
    aad: &[u8],
    esp: &mut [u8],
    body: usize,
) -> Result<(), IcvMismatch> {
    let end = esp.len() - 16;
    let (rest, icv) = esp.split_at_mut(end);
    aead.decrypt_in_place_detached(
        aes_gcm::aead::Nonce::<A>::from_slice(nonce),
        aad,
        &mut rest[body..],
        aes_gcm::aead::Tag::<A>::from_slice(icv),
    )
    .map_err(|_| IcvMismatch)
}

fn fill_random(out: &mut [u8]) -> Result<(), SuiteError> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(out)
        .map_err(|_| SuiteError::NoRandom)
}
