//! IKEv2 cryptography: the PRF and prf+ (RFC 7296 §2.13), SKEYSEED and the
//! seven IKE SA keys (§2.14), KEYMAT for CHILD SAs (§2.17), Diffie-Hellman
//! (RFC 3526 MODP with RFC 6989 checks, RFC 5903 ECP with point
//! validation, RFC 8031 Curve25519), protection of the SK payload (AES-CBC
//! with truncated HMAC-SHA2, AES-GCM/CCM per RFC 5282, ChaCha20-Poly1305
//! per RFC 7634) and the NAT-D hash (§2.23). Key material is held in
//! `Zeroizing` buffers; nothing here logs.

use aes::cipher::consts::U16;
use aes::cipher::{BlockDecrypt, BlockEncrypt, BlockSizeUser, KeyInit};
use aes_gcm::aead::{Aead, Payload as AeadPayload};
use hmac::{Hmac, Mac};
use num_bigint::BigUint;
use rand_core::{OsRng, RngCore};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};
use thiserror::Error;
use zeroize::Zeroizing;

pub type Secret = Zeroizing<Vec<u8>>;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    #[error("invalid Diffie-Hellman public value for group {group}")]
    InvalidPublicValue { group: u16 },
    #[error("Diffie-Hellman shared secret is all-zero")]
    ZeroSharedSecret,
    #[error("integrity check failed")]
    IntegrityCheckFailed,
    #[error("bad ciphertext length {0}")]
    BadCiphertextLength(usize),
    #[error("bad padding")]
    BadPadding,
    #[error("unsupported algorithm {0}")]
    Unsupported(&'static str),
}

/// Fills a fresh buffer from the OS RNG.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    OsRng.fill_bytes(&mut v);
    v
}

pub fn random_u64() -> u64 {
    OsRng.next_u64()
}

pub fn random_u32() -> u32 {
    OsRng.next_u32()
}

/// Pseudo-random functions (IKEv2 transform type 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prf {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

macro_rules! hmac_of {
    ($h:ty, $key:expr, $($data:expr),+) => {{
        // HMAC accepts keys of any length, so new_from_slice cannot fail.
        let mut m = <Hmac<$h> as Mac>::new_from_slice($key).expect("HMAC takes any key length");
        $( m.update($data); )+
        m.finalize().into_bytes().to_vec()
    }};
}

impl Prf {
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            5 => Some(Self::HmacSha256),
            6 => Some(Self::HmacSha384),
            7 => Some(Self::HmacSha512),
            _ => None,
        }
    }
    pub fn id(self) -> u16 {
        match self {
            Self::HmacSha256 => 5,
            Self::HmacSha384 => 6,
            Self::HmacSha512 => 7,
        }
    }
    /// Output (and preferred key) length in bytes.
    pub fn out_len(self) -> usize {
        match self {
            Self::HmacSha256 => 32,
            Self::HmacSha384 => 48,
            Self::HmacSha512 => 64,
        }
    }
    pub fn prf(self, key: &[u8], data: &[u8]) -> Secret {
        self.prf2(key, data, &[])
    }
    fn prf2(self, key: &[u8], a: &[u8], b: &[u8]) -> Secret {
        Zeroizing::new(match self {
            Self::HmacSha256 => hmac_of!(Sha256, key, a, b),
            Self::HmacSha384 => hmac_of!(Sha384, key, a, b),
            Self::HmacSha512 => hmac_of!(Sha512, key, a, b),
        })
    }
    /// prf+ (§2.13): T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n).
    pub fn prf_plus(self, key: &[u8], seed: &[u8], len: usize) -> Secret {
        let mut out = Zeroizing::new(Vec::with_capacity(len + self.out_len()));
        let mut t: Secret = Zeroizing::new(Vec::new());
        let mut n: u8 = 1;
        while out.len() < len {
            let mut input = Zeroizing::new(Vec::with_capacity(t.len() + seed.len() + 1));
            input.extend_from_slice(&t);
            input.extend_from_slice(seed);
            input.push(n);
            t = self.prf(key, &input);
            out.extend_from_slice(&t);
            // prf+ is defined for at most 255 iterations.
            n = n.saturating_add(1);
        }
        out.truncate(len);
        out
    }
}

/// Integrity algorithms (transform type 3), HMAC-SHA2 truncated (RFC 4868).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Integ {
    HmacSha256_128,
    HmacSha384_192,
    HmacSha512_256,
}

impl Integ {
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            12 => Some(Self::HmacSha256_128),
            13 => Some(Self::HmacSha384_192),
            14 => Some(Self::HmacSha512_256),
            _ => None,
        }
    }
    pub fn id(self) -> u16 {
        match self {
            Self::HmacSha256_128 => 12,
            Self::HmacSha384_192 => 13,
            Self::HmacSha512_256 => 14,
        }
    }
    pub fn key_len(self) -> usize {
        match self {
            Self::HmacSha256_128 => 32,
            Self::HmacSha384_192 => 48,
            Self::HmacSha512_256 => 64,
        }
    }
    pub fn icv_len(self) -> usize {
        self.key_len() / 2
    }
    /// API name (`integrity` field).
    pub fn api_name(self) -> &'static str {
        match self {
            Self::HmacSha256_128 => "sha256",
            Self::HmacSha384_192 => "sha384",
            Self::HmacSha512_256 => "sha512",
        }
    }
    pub fn mac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut full = match self {
            Self::HmacSha256_128 => hmac_of!(Sha256, key, data),
            Self::HmacSha384_192 => hmac_of!(Sha384, key, data),
            Self::HmacSha512_256 => hmac_of!(Sha512, key, data),
        };
        full.truncate(self.icv_len());
        full
    }
}

/// Encryption algorithms (transform type 1) with their key size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encr {
    /// ENCR_AES_CBC (12), key bits 128/192/256.
    AesCbc(u16),
    /// ENCR_AES_GCM_16 (20).
    AesGcm16(u16),
    /// ENCR_AES_CCM_16 (16).
    AesCcm16(u16),
    /// ENCR_CHACHA20_POLY1305 (28).
    Chacha20Poly1305,
}

impl Encr {
    pub fn from_transform(id: u16, key_bits: Option<u16>) -> Option<Self> {
        let kb = |allowed: &[u16]| key_bits.filter(|k| allowed.contains(k));
        match id {
            12 => kb(&[128, 192, 256]).map(Self::AesCbc),
            20 => kb(&[128, 192, 256]).map(Self::AesGcm16),
            16 => kb(&[128, 192, 256]).map(Self::AesCcm16),
            28 if key_bits.is_none() || key_bits == Some(256) => Some(Self::Chacha20Poly1305),
            _ => None,
        }
    }
    pub fn id(self) -> u16 {
        match self {
            Self::AesCbc(_) => 12,
            Self::AesGcm16(_) => 20,
            Self::AesCcm16(_) => 16,
            Self::Chacha20Poly1305 => 28,
        }
    }
    /// The Key Length attribute to send; ChaCha20-Poly1305 has none (RFC 7634).
    pub fn key_length_attr(self) -> Option<u16> {
        match self {
            Self::AesCbc(k) | Self::AesGcm16(k) | Self::AesCcm16(k) => Some(k),
            Self::Chacha20Poly1305 => None,
        }
    }
    pub fn is_aead(self) -> bool {
        !matches!(self, Self::AesCbc(_))
    }
    pub fn key_len(self) -> usize {
        match self {
            Self::AesCbc(k) | Self::AesGcm16(k) | Self::AesCcm16(k) => usize::from(k / 8),
            Self::Chacha20Poly1305 => 32,
        }
    }
    /// Salt appended to the key in the key material (RFC 4106/4309/7634).
    pub fn salt_len(self) -> usize {
        match self {
            Self::AesCbc(_) => 0,
            Self::AesGcm16(_) | Self::Chacha20Poly1305 => 4,
            Self::AesCcm16(_) => 3,
        }
    }
    /// Bytes of key material: key plus salt.
    pub fn keymat_len(self) -> usize {
        self.key_len() + self.salt_len()
    }
    pub fn iv_len(self) -> usize {
        match self {
            Self::AesCbc(_) => 16,
            _ => 8,
        }
    }
    /// API name (`encryption` field).
    pub fn api_name(self) -> &'static str {
        match self {
            Self::AesCbc(128) => "aes128",
            Self::AesCbc(192) => "aes192",
            Self::AesCbc(_) => "aes256",
            Self::AesGcm16(128) => "aes128gcm",
            Self::AesGcm16(192) => "aes192gcm",
            Self::AesGcm16(_) => "aes256gcm",
            Self::AesCcm16(128) => "aes128ccm",
            Self::AesCcm16(_) => "aes256ccm",
            Self::Chacha20Poly1305 => "chacha20poly1305",
        }
    }
    pub fn from_api_name(s: &str) -> Option<Self> {
        Some(match s {
            "aes128" => Self::AesCbc(128),
            "aes192" => Self::AesCbc(192),
            "aes256" => Self::AesCbc(256),
            "aes128gcm" => Self::AesGcm16(128),
            "aes192gcm" => Self::AesGcm16(192),
            "aes256gcm" => Self::AesGcm16(256),
            "aes128ccm" => Self::AesCcm16(128),
            "aes256ccm" => Self::AesCcm16(256),
            "chacha20poly1305" => Self::Chacha20Poly1305,
            _ => return None,
        })
    }
}

/// Keys protecting one direction of SK payloads (SK_ei/SK_ai or SK_er/SK_ar).
pub struct SkDirKeys {
    pub encr_key: Secret,
    pub integ_key: Secret,
}

/// The negotiated SK payload protection (§3.14, RFC 5282, RFC 7634).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkCrypto {
    pub encr: Encr,
    pub integ: Option<Integ>,
}

type Aes192Gcm = aes_gcm::AesGcm<aes::Aes192, aes_gcm::aead::consts::U12>;
type Aes128Ccm = ccm::Ccm<aes::Aes128, ccm::consts::U16, ccm::consts::U11>;
type Aes192Ccm = ccm::Ccm<aes::Aes192, ccm::consts::U16, ccm::consts::U11>;
type Aes256Ccm = ccm::Ccm<aes::Aes256, ccm::consts::U16, ccm::consts::U11>;

fn aead_seal<A: Aead + aes_gcm::KeyInit>(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    plain: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let c = A::new_from_slice(key).map_err(|_| CryptoError::Unsupported("AEAD key length"))?;
    c.encrypt(
        aes_gcm::aead::Nonce::<A>::from_slice(nonce),
        AeadPayload { msg: plain, aad },
    )
    .map_err(|_| CryptoError::Unsupported("AEAD seal"))
}

fn aead_open<A: Aead + aes_gcm::KeyInit>(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    ct: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let c = A::new_from_slice(key).map_err(|_| CryptoError::Unsupported("AEAD key length"))?;
    c.decrypt(
        aes_gcm::aead::Nonce::<A>::from_slice(nonce),
        AeadPayload { msg: ct, aad },
    )
    .map_err(|_| CryptoError::IntegrityCheckFailed)
}

fn cbc_encrypt<C: BlockEncrypt + KeyInit + BlockSizeUser<BlockSize = U16>>(
    key: &[u8],
    iv: &[u8],
    data: &mut [u8],
) -> Result<(), CryptoError> {
    let c = C::new_from_slice(key).map_err(|_| CryptoError::Unsupported("AES key length"))?;
    let mut prev = [0u8; 16];
    prev.copy_from_slice(iv);
    for block in data.chunks_exact_mut(16) {
        for (b, p) in block.iter_mut().zip(prev.iter()) {
            *b ^= p;
        }
        c.encrypt_block(aes::Block::from_mut_slice(block));
        prev.copy_from_slice(block);
    }
    Ok(())
}

fn cbc_decrypt<C: BlockDecrypt + KeyInit + BlockSizeUser<BlockSize = U16>>(
    key: &[u8],
    iv: &[u8],
    data: &mut [u8],
) -> Result<(), CryptoError> {
    let c = C::new_from_slice(key).map_err(|_| CryptoError::Unsupported("AES key length"))?;
    let mut prev = [0u8; 16];
    prev.copy_from_slice(iv);
    for block in data.chunks_exact_mut(16) {
        let mut saved = [0u8; 16];
        saved.copy_from_slice(block);
        c.decrypt_block(aes::Block::from_mut_slice(block));
        for (b, p) in block.iter_mut().zip(prev.iter()) {
            *b ^= p;
        }
        prev = saved;
    }
    Ok(())
}

impl SkCrypto {
    pub fn iv_len(&self) -> usize {
        self.encr.iv_len()
    }
    pub fn icv_len(&self) -> usize {
        if self.encr.is_aead() {
            16
        } else {
            self.integ.map_or(0, Integ::icv_len)
        }
    }
    /// Ciphertext length for `plain_len` bytes of inner payloads, with the
    /// padding and the Pad Length byte; AEAD modes need no block alignment.
    pub fn ciphertext_len(&self, plain_len: usize) -> usize {
        if self.encr.is_aead() {
            plain_len + 1 + 16
        } else {
            (plain_len + 1).div_ceil(16) * 16
        }
    }
    /// Bytes an SK payload body adds around `plain_len` inner bytes.
    pub fn sk_body_len(&self, plain_len: usize) -> usize {
        let ct = self.ciphertext_len(plain_len);
        if self.encr.is_aead() {
            // the AEAD tag is counted in ciphertext_len
            self.iv_len() + ct
        } else {
            self.iv_len() + ct + self.icv_len()
        }
    }

    fn nonce(&self, keys: &SkDirKeys, iv: &[u8]) -> (Vec<u8>, usize) {
        let kl = self.encr.key_len();
        let mut n = keys.encr_key.get(kl..).unwrap_or_default().to_vec();
        n.extend_from_slice(iv);
        (n, kl)
    }

    /// Produces IV | ciphertext | ICV for an SK/SKF payload. `header` is
    /// every message byte before the IV (IKE header and SK payload header,
    /// with final lengths): the AEAD associated data, or the start of the
    /// HMAC input for CBC.
    pub fn seal(
        &self,
        keys: &SkDirKeys,
        header: &[u8],
        inner: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let iv = random_bytes(self.iv_len());
        let mut plain = Zeroizing::new(Vec::with_capacity(inner.len() + 17));
        plain.extend_from_slice(inner);
        let pad = if self.encr.is_aead() {
            0
        } else {
            self.ciphertext_len(inner.len()) - inner.len() - 1
        };
        plain.extend(std::iter::repeat_n(0u8, pad));
        plain.push(u8::try_from(pad).unwrap_or(0));
        let mut out = iv.clone();
        if self.encr.is_aead() {
            let (nonce, kl) = self.nonce(keys, &iv);
            let key = keys
                .encr_key
                .get(..kl)
                .ok_or(CryptoError::Unsupported("key length"))?;
            let ct = match self.encr {
                Encr::AesGcm16(128) => {
                    aead_seal::<aes_gcm::Aes128Gcm>(key, &nonce, header, &plain)?
                }
                Encr::AesGcm16(192) => aead_seal::<Aes192Gcm>(key, &nonce, header, &plain)?,
                Encr::AesGcm16(_) => aead_seal::<aes_gcm::Aes256Gcm>(key, &nonce, header, &plain)?,
                Encr::AesCcm16(128) => aead_seal::<Aes128Ccm>(key, &nonce, header, &plain)?,
                Encr::AesCcm16(192) => aead_seal::<Aes192Ccm>(key, &nonce, header, &plain)?,
                Encr::AesCcm16(_) => aead_seal::<Aes256Ccm>(key, &nonce, header, &plain)?,
                Encr::Chacha20Poly1305 => {
                    aead_seal::<chacha20poly1305::ChaCha20Poly1305>(key, &nonce, header, &plain)?
                }
                Encr::AesCbc(_) => return Err(CryptoError::Unsupported("CBC as AEAD")),
            };
            out.extend_from_slice(&ct);
        } else {
            let integ = self
                .integ
                .ok_or(CryptoError::Unsupported("CBC without integrity"))?;
            let mut buf = plain.to_vec();
            match self.encr {
                Encr::AesCbc(128) => cbc_encrypt::<aes::Aes128>(&keys.encr_key, &iv, &mut buf)?,
                Encr::AesCbc(192) => cbc_encrypt::<aes::Aes192>(&keys.encr_key, &iv, &mut buf)?,
                _ => cbc_encrypt::<aes::Aes256>(&keys.encr_key, &iv, &mut buf)?,
            }
            out.extend_from_slice(&buf);
            let mut mac_in = Vec::with_capacity(header.len() + out.len());
            mac_in.extend_from_slice(header);
            mac_in.extend_from_slice(&out);
            out.extend_from_slice(&integ.mac(&keys.integ_key, &mac_in));
        }
        Ok(out)
    }

    /// Verifies and decrypts IV | ciphertext | ICV; returns the inner
    /// payload bytes with padding removed.
    pub fn open(
        &self,
        keys: &SkDirKeys,
        header: &[u8],
        body: &[u8],
    ) -> Result<Secret, CryptoError> {
        let ivl = self.iv_len();
        let icvl = self.icv_len();
        if body.len() < ivl + icvl + 1 {
            return Err(CryptoError::BadCiphertextLength(body.len()));
        }
        let (iv, rest) = body.split_at(ivl);
        let plain: Secret = if self.encr.is_aead() {
            let (nonce, kl) = self.nonce(keys, iv);
            let key = keys
                .encr_key
                .get(..kl)
                .ok_or(CryptoError::Unsupported("key length"))?;
            Zeroizing::new(match self.encr {
                Encr::AesGcm16(128) => aead_open::<aes_gcm::Aes128Gcm>(key, &nonce, header, rest)?,
                Encr::AesGcm16(192) => aead_open::<Aes192Gcm>(key, &nonce, header, rest)?,
                Encr::AesGcm16(_) => aead_open::<aes_gcm::Aes256Gcm>(key, &nonce, header, rest)?,
                Encr::AesCcm16(128) => aead_open::<Aes128Ccm>(key, &nonce, header, rest)?,
                Encr::AesCcm16(192) => aead_open::<Aes192Ccm>(key, &nonce, header, rest)?,
                Encr::AesCcm16(_) => aead_open::<Aes256Ccm>(key, &nonce, header, rest)?,
                Encr::Chacha20Poly1305 => {
                    aead_open::<chacha20poly1305::ChaCha20Poly1305>(key, &nonce, header, rest)?
                }
                Encr::AesCbc(_) => return Err(CryptoError::Unsupported("CBC as AEAD")),
            })
        } else {
            let integ = self
                .integ
                .ok_or(CryptoError::Unsupported("CBC without integrity"))?;
            let (ct, icv) = rest.split_at(rest.len() - icvl);
            if ct.is_empty() || ct.len() % 16 != 0 {
                return Err(CryptoError::BadCiphertextLength(ct.len()));
            }
            let mut mac_in = Vec::with_capacity(header.len() + ivl + ct.len());
            mac_in.extend_from_slice(header);
            mac_in.extend_from_slice(iv);
            mac_in.extend_from_slice(ct);
            let expect = integ.mac(&keys.integ_key, &mac_in);
            if !bool::from(subtle::ConstantTimeEq::ct_eq(expect.as_slice(), icv)) {
                return Err(CryptoError::IntegrityCheckFailed);
            }
            let mut buf = Zeroizing::new(ct.to_vec());
            match self.encr {
                Encr::AesCbc(128) => cbc_decrypt::<aes::Aes128>(&keys.encr_key, iv, &mut buf)?,
                Encr::AesCbc(192) => cbc_decrypt::<aes::Aes192>(&keys.encr_key, iv, &mut buf)?,
                _ => cbc_decrypt::<aes::Aes256>(&keys.encr_key, iv, &mut buf)?,
            }
            buf
        };
        let mut plain = plain;
        let pad = usize::from(*plain.last().ok_or(CryptoError::BadPadding)?);
        if pad + 1 > plain.len() {
            return Err(CryptoError::BadPadding);
        }
        let keep = plain.len() - pad - 1;
        plain.truncate(keep);
        Ok(plain)
    }
}

/// Diffie-Hellman groups (transform type 4) offered by the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DhGroup {
    Modp2048,
    Modp3072,
    Modp4096,
    Ecp256,
    Ecp384,
    Ecp521,
    Curve25519,
}

/// RFC 3526 2048-bit MODP group prime (checked against OpenSSL's modp_2048).
const MODP2048_P: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
);

/// RFC 3526 3072-bit MODP group prime (checked against OpenSSL's modp_3072).
const MODP3072_P: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33",
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7",
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864",
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2",
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF",
);

/// RFC 3526 4096-bit MODP group prime (checked against OpenSSL's modp_4096).
const MODP4096_P: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33",
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7",
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864",
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2",
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7",
    "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8",
    "DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2",
    "233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9",
    "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF",
);

impl DhGroup {
    pub fn from_id(id: u16) -> Option<Self> {
        Some(match id {
            14 => Self::Modp2048,
            15 => Self::Modp3072,
            16 => Self::Modp4096,
            19 => Self::Ecp256,
            20 => Self::Ecp384,
            21 => Self::Ecp521,
            31 => Self::Curve25519,
            _ => return None,
        })
    }
    pub fn id(self) -> u16 {
        match self {
            Self::Modp2048 => 14,
            Self::Modp3072 => 15,
            Self::Modp4096 => 16,
            Self::Ecp256 => 19,
            Self::Ecp384 => 20,
            Self::Ecp521 => 21,
            Self::Curve25519 => 31,
        }
    }
    pub fn api_name(self) -> &'static str {
        match self {
            Self::Modp2048 => "modp2048",
            Self::Modp3072 => "modp3072",
            Self::Modp4096 => "modp4096",
            Self::Ecp256 => "ecp256",
            Self::Ecp384 => "ecp384",
            Self::Ecp521 => "ecp521",
            Self::Curve25519 => "curve25519",
        }
    }
    pub fn from_api_name(s: &str) -> Option<Self> {
        Some(match s {
            "modp2048" => Self::Modp2048,
            "modp3072" => Self::Modp3072,
            "modp4096" => Self::Modp4096,
            "ecp256" => Self::Ecp256,
            "ecp384" => Self::Ecp384,
            "ecp521" => Self::Ecp521,
            "curve25519" | "x25519" => Self::Curve25519,
            _ => return None,
        })
    }
    /// Length of the KE payload's key exchange data.
    pub fn public_len(self) -> usize {
        match self {
            Self::Modp2048 => 256,
            Self::Modp3072 => 384,
            Self::Modp4096 => 512,
            Self::Ecp256 => 64,
            Self::Ecp384 => 96,
            Self::Ecp521 => 132,
            Self::Curve25519 => 32,
        }
    }
    fn modp_prime(self) -> Option<BigUint> {
        let hex = match self {
            Self::Modp2048 => MODP2048_P,
            Self::Modp3072 => MODP3072_P,
            Self::Modp4096 => MODP4096_P,
            _ => return None,
        };
        BigUint::parse_bytes(hex.as_bytes(), 16)
    }
}

enum DhInner {
    Modp { x: Secret, p: BigUint },
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    P521(p521::SecretKey),
    X25519(x25519_dalek::StaticSecret),
}

/// Our ephemeral Diffie-Hellman private value for one exchange, with its
/// public value (computed once: for the MODP groups it is a modpow).
pub struct DhPrivate {
    pub group: DhGroup,
    inner: DhInner,
    public: Vec<u8>,
}

impl std::fmt::Debug for DhPrivate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhPrivate")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

fn pad_be(v: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len.saturating_sub(v.len())];
    out.extend_from_slice(&v[v.len().saturating_sub(len)..]);
    out
}

fn sec1_uncompressed(xy: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(xy.len() + 1);
    v.push(0x04);
    v.extend_from_slice(xy);
    v
}

impl DhPrivate {
    pub fn generate(group: DhGroup) -> Self {
        let inner = match group {
            DhGroup::Modp2048 | DhGroup::Modp3072 | DhGroup::Modp4096 => DhInner::Modp {
                // A 512-bit exponent gives more than the groups' strength
                // (RFC 3526 §8) at a fraction of a full-size modpow.
                x: Zeroizing::new(random_bytes(64)),
                p: group.modp_prime().unwrap_or_default(),
            },
            DhGroup::Ecp256 => DhInner::P256(p256::SecretKey::random(&mut OsRng)),
            DhGroup::Ecp384 => DhInner::P384(p384::SecretKey::random(&mut OsRng)),
            DhGroup::Ecp521 => DhInner::P521(p521::SecretKey::random(&mut OsRng)),
            DhGroup::Curve25519 => {
                DhInner::X25519(x25519_dalek::StaticSecret::random_from_rng(OsRng))
            }
        };
        Self::with_public(group, inner)
    }

    fn with_public(group: DhGroup, inner: DhInner) -> Self {
        let public = Self::compute_public(group, &inner);
        Self {
            group,
            inner,
            public,
        }
    }

    /// Builds a private value from fixed bytes, for known-answer tests.
    pub fn from_private_bytes(group: DhGroup, bytes: &[u8]) -> Result<Self, CryptoError> {
        let bad = CryptoError::InvalidPublicValue { group: group.id() };
        let inner = match group {
            DhGroup::Modp2048 | DhGroup::Modp3072 | DhGroup::Modp4096 => DhInner::Modp {
                x: Zeroizing::new(bytes.to_vec()),
                p: group.modp_prime().unwrap_or_default(),
            },
            DhGroup::Ecp256 => DhInner::P256(p256::SecretKey::from_slice(bytes).map_err(|_| bad)?),
            DhGroup::Ecp384 => DhInner::P384(p384::SecretKey::from_slice(bytes).map_err(|_| bad)?),
            DhGroup::Ecp521 => DhInner::P521(p521::SecretKey::from_slice(bytes).map_err(|_| bad)?),
            DhGroup::Curve25519 => {
                let arr: [u8; 32] = bytes.try_into().map_err(|_| bad)?;
                DhInner::X25519(x25519_dalek::StaticSecret::from(arr))
            }
        };
        Ok(Self::with_public(group, inner))
    }

    /// A copy of the key pair, for a computation that runs elsewhere
    /// (`dh`) while the exchange keeps its own.
    pub(crate) fn duplicate(&self) -> Self {
        let inner = match &self.inner {
            DhInner::Modp { x, p } => DhInner::Modp {
                x: x.clone(),
                p: p.clone(),
            },
            DhInner::P256(k) => DhInner::P256(k.clone()),
            DhInner::P384(k) => DhInner::P384(k.clone()),
            DhInner::P521(k) => DhInner::P521(k.clone()),
            DhInner::X25519(k) => DhInner::X25519(k.clone()),
        };
        Self {
            group: self.group,
            inner,
            public: self.public.clone(),
        }
    }

    /// The key exchange data for our KE payload.
    pub fn public_value(&self) -> Vec<u8> {
        self.public.clone()
    }

    fn compute_public(group: DhGroup, inner: &DhInner) -> Vec<u8> {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        match inner {
            DhInner::Modp { x, p } => {
                let y = BigUint::from(2u32).modpow(&BigUint::from_bytes_be(x), p);
                pad_be(&y.to_bytes_be(), group.public_len())
            }
            DhInner::P256(k) => k.public_key().to_encoded_point(false).as_bytes()[1..].to_vec(),
            DhInner::P384(k) => k.public_key().to_encoded_point(false).as_bytes()[1..].to_vec(),
            DhInner::P521(k) => k.public_key().to_encoded_point(false).as_bytes()[1..].to_vec(),
            DhInner::X25519(k) => x25519_dalek::PublicKey::from(k).as_bytes().to_vec(),
        }
    }

    /// g^ir from the peer's key exchange data, after validating it.
    pub fn shared_secret(&self, peer: &[u8]) -> Result<Secret, CryptoError> {
        let bad = CryptoError::InvalidPublicValue {
            group: self.group.id(),
        };
        if peer.len() != self.group.public_len() {
            return Err(bad);
        }
        Ok(Zeroizing::new(match &self.inner {
            DhInner::Modp { x, p } => {
                // RFC 6989 §2.1: 1 < y < p-1 for safe-prime MODP groups.
                let y = BigUint::from_bytes_be(peer);
                let one = BigUint::from(1u32);
                if y <= one || y >= p - &one {
                    return Err(bad);
                }
                let s = y.modpow(&BigUint::from_bytes_be(x), p);
                pad_be(&s.to_bytes_be(), self.group.public_len())
            }
            // from_sec1_bytes rejects points not on the curve and the
            // identity (RFC 6989 §2.3 checks).
            DhInner::P256(k) => {
                let pk =
                    p256::PublicKey::from_sec1_bytes(&sec1_uncompressed(peer)).map_err(|_| bad)?;
                p256::ecdh::diffie_hellman(k.to_nonzero_scalar(), pk.as_affine())
                    .raw_secret_bytes()
                    .to_vec()
            }
            DhInner::P384(k) => {
                let pk =
                    p384::PublicKey::from_sec1_bytes(&sec1_uncompressed(peer)).map_err(|_| bad)?;
                p384::ecdh::diffie_hellman(k.to_nonzero_scalar(), pk.as_affine())
                    .raw_secret_bytes()
                    .to_vec()
            }
            DhInner::P521(k) => {
                let pk =
                    p521::PublicKey::from_sec1_bytes(&sec1_uncompressed(peer)).map_err(|_| bad)?;
                p521::ecdh::diffie_hellman(k.to_nonzero_scalar(), pk.as_affine())
                    .raw_secret_bytes()
                    .to_vec()
            }
            DhInner::X25519(k) => {
                let arr: [u8; 32] = peer.try_into().map_err(|_| bad)?;
                let s = k.diffie_hellman(&x25519_dalek::PublicKey::from(arr));
                // RFC 8031 §2.3: refuse the all-zero output of small-order points.
                if !s.was_contributory() {
                    return Err(CryptoError::ZeroSharedSecret);
                }
                s.as_bytes().to_vec()
            }
        }))
    }
}

/// The seven IKE SA keys (§2.14).
pub struct IkeKeys {
    pub sk_d: Secret,
    pub sk_ai: Secret,
    pub sk_ar: Secret,
    pub sk_ei: Secret,
    pub sk_er: Secret,
    pub sk_pi: Secret,
    pub sk_pr: Secret,
}

impl std::fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IkeKeys(..)")
    }
}

/// Derives the IKE SA keys. `skeyseed` is prf(Ni | Nr, g^ir) for a new
/// IKE SA, or prf(SK_d(old), g^ir(new) | Ni | Nr) for a rekeyed one.
pub fn derive_ike_keys(
    prf: Prf,
    sk: SkCrypto,
    skeyseed: &[u8],
    ni: &[u8],
    nr: &[u8],
    spi_i: u64,
    spi_r: u64,
) -> IkeKeys {
    let integ_len = if sk.encr.is_aead() {
        0
    } else {
        sk.integ.map_or(0, Integ::key_len)
    };
    let enc_len = sk.encr.keymat_len();
    let total = 3 * prf.out_len() + 2 * integ_len + 2 * enc_len;
    let mut seed = Vec::with_capacity(ni.len() + nr.len() + 16);
    seed.extend_from_slice(ni);
    seed.extend_from_slice(nr);
    seed.extend_from_slice(&spi_i.to_be_bytes());
    seed.extend_from_slice(&spi_r.to_be_bytes());
    let km = prf.prf_plus(skeyseed, &seed, total);
    let mut off = 0;
    let mut take = |n: usize| {
        let v = Zeroizing::new(km[off..off + n].to_vec());
        off += n;
        v
    };
    IkeKeys {
        sk_d: take(prf.out_len()),
        sk_ai: take(integ_len),
        sk_ar: take(integ_len),
        sk_ei: take(enc_len),
        sk_er: take(enc_len),
        sk_pi: take(prf.out_len()),
        sk_pr: take(prf.out_len()),
    }
}

/// SKEYSEED for a new IKE SA: prf(Ni | Nr, g^ir).
pub fn skeyseed(prf: Prf, ni: &[u8], nr: &[u8], gir: &[u8]) -> Secret {
    let mut k = Zeroizing::new(Vec::with_capacity(ni.len() + nr.len()));
    k.extend_from_slice(ni);
    k.extend_from_slice(nr);
    prf.prf(&k, gir)
}

/// SKEYSEED for a rekeyed IKE SA (§2.18): prf(SK_d(old), g^ir(new) | Ni | Nr).
pub fn skeyseed_rekey(prf_old: Prf, sk_d_old: &[u8], gir: &[u8], ni: &[u8], nr: &[u8]) -> Secret {
    let mut d = Zeroizing::new(Vec::with_capacity(gir.len() + ni.len() + nr.len()));
    d.extend_from_slice(gir);
    d.extend_from_slice(ni);
    d.extend_from_slice(nr);
    prf_old.prf(sk_d_old, &d)
}

/// KEYMAT for a CHILD SA (§2.17): prf+(SK_d, [g^ir(new) |] Ni | Nr).
pub fn child_keymat(
    prf: Prf,
    sk_d: &[u8],
    gir: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    len: usize,
) -> Secret {
    let mut seed = Zeroizing::new(Vec::new());
    if let Some(g) = gir {
        seed.extend_from_slice(g);
    }
    seed.extend_from_slice(ni);
    seed.extend_from_slice(nr);
    prf.prf_plus(sk_d, &seed, len)
}

/// The PSK AUTH value (§2.15):
/// prf(prf(PSK, "Key Pad for IKEv2"), <msg octets> | Nonce | prf(SK_p, ID')).
pub fn psk_auth(
    prf: Prf,
    psk: &[u8],
    msg: &[u8],
    peer_nonce: &[u8],
    sk_p: &[u8],
    id_body: &[u8],
) -> Secret {
    let maced_id = prf.prf(sk_p, id_body);
    let mut octets = Vec::with_capacity(msg.len() + peer_nonce.len() + maced_id.len());
    octets.extend_from_slice(msg);
    octets.extend_from_slice(peer_nonce);
    octets.extend_from_slice(&maced_id);
    let key = prf.prf(psk, b"Key Pad for IKEv2");
    prf.prf(&key, &octets)
}

/// NAT_DETECTION_*_IP data (§2.23): SHA-1(SPIi | SPIr | IP | port).
pub fn natd_hash(spi_i: u64, spi_r: u64, ip: std::net::IpAddr, port: u16) -> Vec<u8> {
    let mut h = Sha1::new();
    h.update(spi_i.to_be_bytes());
    h.update(spi_r.to_be_bytes());
    match ip {
        std::net::IpAddr::V4(a) => h.update(a.octets()),
        std::net::IpAddr::V6(a) => h.update(a.octets()),
    }
    h.update(port.to_be_bytes());
    h.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }

    #[test]
    fn rfc4231_hmac_sha2_vectors() {
        // Test case 1
        let key = [0x0b; 20];
        assert_eq!(
            *Prf::HmacSha256.prf(&key, b"Hi There"),
            h("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        );
        assert_eq!(
            *Prf::HmacSha384.prf(&key, b"Hi There"),
            h("afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6")
        );
        assert_eq!(
            *Prf::HmacSha512.prf(&key, b"Hi There"),
            h("87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854")
        );
        // Test case 2
        assert_eq!(
            *Prf::HmacSha256.prf(b"Jefe", b"what do ya want for nothing?"),
            h("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        // Truncated integrity output (RFC 4868 uses the first half).
        assert_eq!(
            Integ::HmacSha256_128.mac(&key, b"Hi There"),
            h("b0344c61d8db38535ca8afceaf0bf12b")
        );
    }

    #[test]
    fn prf_plus_follows_rfc7296() {
        let p = Prf::HmacSha256;
        let k = b"key";
        let s = b"seed";
        let t1 = p.prf(k, b"seed\x01");
        let mut in2 = t1.to_vec();
        in2.extend_from_slice(b"seed\x02");
        let t2 = p.prf(k, &in2);
        let mut expect = t1.to_vec();
        expect.extend_from_slice(&t2);
        expect.truncate(50);
        assert_eq!(*p.prf_plus(k, s, 50), expect);
        assert_eq!(p.prf_plus(k, s, 0).len(), 0);
    }

    #[test]
    fn rfc3526_groups_are_well_formed() {
        for g in [DhGroup::Modp2048, DhGroup::Modp3072, DhGroup::Modp4096] {
            let p = g.modp_prime().unwrap();
            assert_eq!(p.bits() as usize, g.public_len() * 8);
            // RFC 3526 primes start and end with 64 one bits.
            let b = p.to_bytes_be();
            assert!(b[..8].iter().all(|&x| x == 0xff));
            assert!(b[b.len() - 8..].iter().all(|&x| x == 0xff));
            // Safe prime: p = 2q + 1 with generator 2 of order q, so 2^q = 1 (mod p).
            let q = (&p - 1u32) >> 1;
            assert_eq!(BigUint::from(2u32).modpow(&q, &p), BigUint::from(1u32));
        }
    }

    #[test]
    fn modp_exchange_and_rfc6989_checks() {
        let a = DhPrivate::generate(DhGroup::Modp2048);
        let b = DhPrivate::generate(DhGroup::Modp2048);
        let pa = a.public_value();
        assert_eq!(pa.len(), 256);
        assert_eq!(
            *a.shared_secret(&b.public_value()).unwrap(),
            *b.shared_secret(&pa).unwrap()
        );
        let p = DhGroup::Modp2048.modp_prime().unwrap();
        let mut one = vec![0u8; 256];
        one[255] = 1;
        for bad in [
            vec![0u8; 256],
            one,
            pad_be(&(&p - 1u32).to_bytes_be(), 256),
            pad_be(&p.to_bytes_be(), 256),
        ] {
            assert!(a.shared_secret(&bad).is_err());
        }
        assert!(a.shared_secret(&[1u8; 255]).is_err());
    }

    struct EcVector {
        group: DhGroup,
        priv_i: &'static str,
        priv_r: &'static str,
        pub_i: &'static str,
        pub_r: &'static str,
        shared: &'static str,
    }

    /// ECDH known answers of RFC 5114 (appendix A.6-A.8), as used in
    /// strongSwan's test_vectors plugin.
    const EC_VECTORS: &[EcVector] = &[
        EcVector {
            group: DhGroup::Ecp256,
            priv_i: "814264145f2f56f2e96a8e337a1284993faf432a5abce59e867b7291d507a3af",
            priv_r: "2ce1788ec197e096db95a200cc0ab26a19ce6bccad562b8eee1b593761cf7f41",
            pub_i: "2af502f3be8952f2c9b5a8d4160d09e97165be50bc42ae4a5e8d3b4ba83aeb15eb0faf4ca986c4d38681a0f9872d79d56795bd4bff6e6de3c0f5015ece5efd85",
            pub_r: "b120de4aa36492795346e8de6c2c8646ae06aaea279fa775b3ab0715f6ce51b09f1b7eece20d7b5ed8ec685fa3f071d83727027092a8411385c34dde5708b2b6",
            shared: "dd0f5396219d1ea393310412d19a08f1f5811e9dc8ec8eea7f80d21c820c2788",
        },
        EcVector {
            group: DhGroup::Ecp384,
            priv_i: "d27335ea71664af244dd14e9fd1260715dfd8a7965571c48d709ee7a7962a156d706a90cbcb5df2986f05feadb9376f1",
            priv_r: "52d1791fdb4b70f89c0f00d456c2f7023b6125262c36a7df1f80231121cce3d39be52e00c194a4132c4a6c768bcd94d2",
            pub_i: "793148f1787634d5da4c6d9074417d05e057ab62f82054d10ee6b0403d6279547e6a8ea9d1fd77427d016fe27a8b8c66c6c41294331d23e6f480f4fb4cd40504c947392e94f4c3f06b8f398bb29e42368f7a685923de3b67baced214a1a1d128",
            pub_r: "5cd42ab9c41b5347f74b8d4efb708b3d5b36db65915359b44abc17647b6b9999789d72a84865ae2f223f12b5a1abc120e171458feaa939aaa3a8bfac46b404bd8f6d5b348c0fa4d80ceca16356ca933240bde8723415a8ece035b0edf36755de",
            shared: "5ea1fc4af7256d2055981b110575e0a8cae53160137d904c59d926eb1b8456e427aa8a4540884c37de159a58028abc0e",
        },
        EcVector {
            group: DhGroup::Ecp521,
            priv_i: "0113f82da825735e3d97276683b2b74277bad27335ea71664af2430cc4f33459b9669ee78b3ffb9b8683015d344dcbfef6fb9af4c6c470be254516cd3c1a1fb47362",
            priv_r: "00cee3480d8645a17d249f2776d28bae616952d1791fdb4b70f7c3378732aa1b22928448bcd1dc2496d435b01048066ebe4f72903c361b1a9dc1193dc2c9d0891b96",
            pub_i: "01ebb34dd75721abf8adc9dbed17889cbb9765d90a7c60f2cef007bb0f2b26e14881fd4442e689d61cb2dd046ee30e3ffd20f9a45bbdf6413d583a2dbf59924fd35c00f6b632d194c0388e22d8437e558c552ae195adfd153f92d74908351b2f8c4eda94edb0916d1b53c020b5eecaed1a5fc38a233e4830587bb2ee3489b3b42a5a86a4",
            pub_r: "010ebfafc6e85e08d24bfffcc1a4511db0e634beeb1b6dec8c5939ae44766201af6200430ba97c8ac6a0e9f08b33ce7e9feeb5ba4ee5e0d81510c24295b8a08d023500a4a6ec300df9e257b0372b5e7abfef093436719a77887ebb0b18cf8099b9f4212b6e30a1419c18e029d36863cc9d448f4dba4d2a0e60711be572915fbd4fef2695",
            shared: "00cdea89621cfa46b132f9e4cfe2261cde2d4368eb5656634c7cc98c7a00cde54ed1866a0dd3e6126c9d2f845daff82ceb1da08f5d87521bb0ebeca77911169c20cc",
        },
    ];

    #[test]
    fn ecdh_known_answers() {
        for v in EC_VECTORS {
            let i = DhPrivate::from_private_bytes(v.group, &h(v.priv_i)).unwrap();
            let r = DhPrivate::from_private_bytes(v.group, &h(v.priv_r)).unwrap();
            assert_eq!(i.public_value(), h(v.pub_i), "{:?}", v.group);
            assert_eq!(r.public_value(), h(v.pub_r), "{:?}", v.group);
            assert_eq!(*i.shared_secret(&h(v.pub_r)).unwrap(), h(v.shared));
            assert_eq!(*r.shared_secret(&h(v.pub_i)).unwrap(), h(v.shared));
            // A point off the curve is refused.
            let mut bad = h(v.pub_r);
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(i.shared_secret(&bad).is_err(), "{:?}", v.group);
            assert!(i.shared_secret(&vec![0u8; v.group.public_len()]).is_err());
        }
    }

    #[test]
    fn rfc7748_x25519_vector() {
        let a = DhPrivate::from_private_bytes(
            DhGroup::Curve25519,
            &h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
        )
        .unwrap();
        let b = DhPrivate::from_private_bytes(
            DhGroup::Curve25519,
            &h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"),
        )
        .unwrap();
        assert_eq!(
            a.public_value(),
            h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        assert_eq!(
            b.public_value(),
            h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
        );
        let k = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(*a.shared_secret(&b.public_value()).unwrap(), k);
        assert_eq!(*b.shared_secret(&a.public_value()).unwrap(), k);
        // RFC 8031 §2.3: a small-order point giving an all-zero secret is refused.
        assert_eq!(
            a.shared_secret(&[0u8; 32]),
            Err(CryptoError::ZeroSharedSecret)
        );
    }

    #[test]
    fn ike_key_lengths() {
        let sk = SkCrypto {
            encr: Encr::AesCbc(256),
            integ: Some(Integ::HmacSha256_128),
        };
        let k = derive_ike_keys(Prf::HmacSha256, sk, &[1; 32], &[2; 32], &[3; 32], 1, 2);
        assert_eq!(
            [
                k.sk_d.len(),
                k.sk_ai.len(),
                k.sk_ar.len(),
                k.sk_ei.len(),
                k.sk_er.len(),
                k.sk_pi.len(),
                k.sk_pr.len()
            ],
            [32, 32, 32, 32, 32, 32, 32]
        );
        let sk = SkCrypto {
            encr: Encr::AesGcm16(256),
            integ: None,
        };
        let k = derive_ike_keys(Prf::HmacSha384, sk, &[1; 48], &[2; 32], &[3; 32], 1, 2);
        assert_eq!([k.sk_ai.len(), k.sk_ei.len(), k.sk_pi.len()], [0, 36, 48]);
        // Keys are consecutive slices of prf+ output.
        let km = Prf::HmacSha384.prf_plus(
            &[1; 48],
            &[
                [2u8; 32].as_slice(),
                &[3; 32],
                &1u64.to_be_bytes(),
                &2u64.to_be_bytes(),
            ]
            .concat(),
            48,
        );
        assert_eq!(*k.sk_d, *km);
    }

    #[test]
    fn natd_hash_is_sha1_of_spis_ip_port() {
        let v = natd_hash(1, 2, "192.0.2.1".parse().unwrap(), 500);
        let mut in_ = Vec::new();
        in_.extend_from_slice(&1u64.to_be_bytes());
        in_.extend_from_slice(&2u64.to_be_bytes());
        in_.extend_from_slice(&[192, 0, 2, 1]);
        in_.extend_from_slice(&500u16.to_be_bytes());
        assert_eq!(v, Sha1::digest(&in_).to_vec());
        // SHA-1("abc") known answer so the hash itself is pinned.
        assert_eq!(
            Sha1::digest(b"abc").to_vec(),
            h("a9993e364706816aba3e25717850c26c9cd0d89d")
        );
    }
}
