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
mod tests;
