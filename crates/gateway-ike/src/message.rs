//! IKEv2 messages (RFC 7296 §3.1): the fixed header, the payload chain,
//! and protection of the chain inside an SK payload (or SKF fragments,
//! RFC 7383). Decoding is hostile-input safe: the header length must match
//! the datagram, and the SK payload is only opened with the SA's keys.

use thiserror::Error;

use crate::crypto::{CryptoError, SkCrypto, SkDirKeys};
use crate::payload::{self, decode_chain, encode_chain, DecodeError, Payload, Reader};

/// Exchange types (§3.1).
pub mod exchange {
    pub const IKE_SA_INIT: u8 = 34;
    pub const IKE_AUTH: u8 = 35;
    pub const CREATE_CHILD_SA: u8 = 36;
    pub const INFORMATIONAL: u8 = 37;
}

pub const FLAG_INITIATOR: u8 = 0x08;
pub const FLAG_VERSION: u8 = 0x10;
pub const FLAG_RESPONSE: u8 = 0x20;
pub const HEADER_LEN: usize = 28;
/// IKEv2 major version 2, minor 0.
pub const VERSION: u8 = 0x20;

#[derive(Debug, Error)]
pub enum MessageError {
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("unsupported major version {0:#x}")]
    UnsupportedVersion(u8),
    #[error("header length {header} does not match datagram length {datagram}")]
    LengthMismatch { header: usize, datagram: usize },
    #[error("no SK payload in a message that must be protected")]
    NotProtected,
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub spi_i: u64,
    pub spi_r: u64,
    pub next_payload: u8,
    pub version: u8,
    pub exchange: u8,
    pub flags: u8,
    pub message_id: u32,
    pub length: u32,
}

impl Header {
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_RESPONSE != 0
    }
    /// Set when the sender is the original initiator of the IKE SA.
    pub fn from_initiator(&self) -> bool {
        self.flags & FLAG_INITIATOR != 0
    }
    pub fn decode(buf: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(buf);
        let spi_i = u64::from_be_bytes(to8(r.bytes(8, "IKE header")?));
        let spi_r = u64::from_be_bytes(to8(r.bytes(8, "IKE header")?));
        let next_payload = r.u8("IKE header")?;
        let version = r.u8("IKE header")?;
        let exchange = r.u8("IKE header")?;
        let flags = r.u8("IKE header")?;
        let message_id = r.u32("IKE header")?;
        let length = r.u32("IKE header")?;
        Ok(Self {
            spi_i,
            spi_r,
            next_payload,
            version,
            exchange,
            flags,
            message_id,
            length,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.spi_i.to_be_bytes());
        out.extend_from_slice(&self.spi_r.to_be_bytes());
        out.push(self.next_payload);
        out.push(self.version);
        out.push(self.exchange);
        out.push(self.flags);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
    }
}

fn to8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    a
}

/// A message: header fields plus the (plaintext) payload chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub spi_i: u64,
    pub spi_r: u64,
    pub exchange: u8,
    pub flags: u8,
    pub message_id: u32,
    pub payloads: Vec<Payload>,
}

impl Message {
    pub fn new(spi_i: u64, spi_r: u64, exchange: u8, flags: u8, message_id: u32) -> Self {
        Self {
            spi_i,
            spi_r,
            exchange,
            flags,
            message_id,
            payloads: Vec::new(),
        }
    }

    pub fn is_response(&self) -> bool {
        self.flags & FLAG_RESPONSE != 0
    }

    fn header(&self, next: u8, length: usize) -> Header {
        Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            next_payload: next,
            version: VERSION,
            exchange: self.exchange,
            flags: self.flags,
            message_id: self.message_id,
            length: u32::try_from(length).unwrap_or(u32::MAX),
        }
    }

    /// Encodes without protection (IKE_SA_INIT and its errors).
    pub fn encode_plain(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let first = encode_chain(&self.payloads, &mut body);
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        self.header(first, HEADER_LEN + body.len()).encode(&mut out);
        out.extend_from_slice(&body);
        out
    }

    /// Encodes with all payloads inside one SK payload.
    pub fn encode_protected(
        &self,
        sk: &SkCrypto,
        keys: &SkDirKeys,
    ) -> Result<Vec<u8>, MessageError> {
        let mut inner = Vec::new();
        let first = encode_chain(&self.payloads, &mut inner);
        self.seal_chain(first, &inner, sk, keys)
    }

    /// Encodes with `inner` (an encoded payload chain whose first payload
    /// is of type `first`, as it is, whatever it holds) inside one SK
    /// payload. The scripted peers of tests and fuzzing send hostile
    /// chains this way.
    pub fn seal_chain(
        &self,
        first: u8,
        inner: &[u8],
        sk: &SkCrypto,
        keys: &SkDirKeys,
    ) -> Result<Vec<u8>, MessageError> {
        let body_len = sk.sk_body_len(inner.len());
        let total = HEADER_LEN + 4 + body_len;
        let mut out = Vec::with_capacity(total);
        self.header(payload::ptype::SK, total).encode(&mut out);
        out.push(first);
        out.push(0);
        out.extend_from_slice(
            &u16::try_from(4 + body_len)
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        let sealed = sk.seal(keys, &out, inner)?;
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Encodes as RFC 7383 fragments whose datagrams stay within `max_len`
    /// bytes; a single fragment is still an SKF payload (RFC 7383 §2.5.3).
    pub fn encode_fragments(
        &self,
        sk: &SkCrypto,
        keys: &SkDirKeys,
        max_len: usize,
    ) -> Result<Vec<Vec<u8>>, MessageError> {
        let mut inner = Vec::new();
        let first = encode_chain(&self.payloads, &mut inner);
        // Overhead per fragment: header, SKF header, IV, padding, ICV.
        let overhead = HEADER_LEN + 8 + sk.sk_body_len(0) + 16;
        let chunk = max_len.saturating_sub(overhead).max(64);
        let chunks: Vec<&[u8]> = inner.chunks(chunk).collect();
        let total = u16::try_from(chunks.len()).unwrap_or(u16::MAX);
        let mut out = Vec::with_capacity(chunks.len());
        for (i, c) in chunks.iter().enumerate() {
            let number = u16::try_from(i + 1).unwrap_or(u16::MAX);
            let body_len = sk.sk_body_len(c.len());
            let len = HEADER_LEN + 8 + body_len;
            let mut m = Vec::with_capacity(len);
            self.header(payload::ptype::SKF, len).encode(&mut m);
            // Only the first fragment names the first inner payload.
            m.push(if number == 1 { first } else { 0 });
            m.push(0);
            m.extend_from_slice(
                &u16::try_from(8 + body_len)
                    .unwrap_or(u16::MAX)
                    .to_be_bytes(),
            );
            m.extend_from_slice(&number.to_be_bytes());
            m.extend_from_slice(&total.to_be_bytes());
            let sealed = sk.seal(keys, &m, c)?;
            m.extend_from_slice(&sealed);
            out.push(m);
        }
        Ok(out)
    }

    /// Decodes the header and the outer payload chain. An SK payload is
    /// left sealed; call [`Message::decrypt`] with the raw bytes.
    pub fn decode(buf: &[u8]) -> Result<Self, MessageError> {
        let h = Header::decode(buf)?;
        if h.version >> 4 != 2 {
            return Err(MessageError::UnsupportedVersion(h.version));
        }
        let len = usize::try_from(h.length).unwrap_or(usize::MAX);
        if len != buf.len() {
            return Err(MessageError::LengthMismatch {
                header: len,
                datagram: buf.len(),
            });
        }
        let payloads = decode_chain(h.next_payload, &buf[HEADER_LEN..])?;
        Ok(Self {
            spi_i: h.spi_i,
            spi_r: h.spi_r,
            exchange: h.exchange,
            flags: h.flags,
            message_id: h.message_id,
            payloads,
        })
    }

    /// The sealed SK or SKF payload, if any.
    pub fn sealed(&self) -> Option<&Payload> {
        self.payloads
            .last()
            .filter(|p| matches!(p, Payload::Sk { .. } | Payload::Skf { .. }))
    }

    /// Verifies and decrypts the SK payload of `raw` (the datagram this
    /// message was decoded from) and replaces it with its inner payloads.
    pub fn decrypt(
        &mut self,
        raw: &[u8],
        sk: &SkCrypto,
        keys: &SkDirKeys,
    ) -> Result<(), MessageError> {
        let Some(Payload::Sk { first, data }) = self.payloads.last() else {
            return Err(MessageError::NotProtected);
        };
        // decode_chain guarantees the SK body runs to the end of `raw`.
        let header_end = raw.len().saturating_sub(data.len());
        let plain = sk.open(keys, &raw[..header_end], data)?;
        let inner = decode_chain(*first, &plain)?;
        self.payloads.pop();
        self.payloads.extend(inner);
        Ok(())
    }

    /// Opens one SKF fragment of `raw`; returns (number, total, first, plaintext).
    pub fn decrypt_fragment(
        &self,
        raw: &[u8],
        sk: &SkCrypto,
        keys: &SkDirKeys,
    ) -> Result<(u16, u16, u8, Vec<u8>), MessageError> {
        let Some(Payload::Skf {
            first,
            number,
            total,
            data,
        }) = self.payloads.last()
        else {
            return Err(MessageError::NotProtected);
        };
        let header_end = raw.len().saturating_sub(data.len());
        let plain = sk.open(keys, &raw[..header_end], data)?;
        Ok((*number, *total, *first, plain.to_vec()))
    }

    pub fn notifies(&self) -> impl Iterator<Item = &payload::NotifyPayload> {
        self.payloads.iter().filter_map(|p| match p {
            Payload::Notify(n) => Some(n),
            _ => None,
        })
    }

    pub fn notify(&self, ntype: u16) -> Option<&payload::NotifyPayload> {
        self.notifies().find(|n| n.ntype == ntype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Encr, Integ};
    use crate::payload::{KePayload, NotifyPayload};
    use zeroize::Zeroizing;

    fn keys(encr: Encr, integ: Option<Integ>) -> SkDirKeys {
        SkDirKeys {
            encr_key: Zeroizing::new((0..encr.keymat_len()).map(|i| i as u8).collect()),
            integ_key: Zeroizing::new(vec![0x5a; integ.map_or(0, Integ::key_len)]),
        }
    }

    fn sample() -> Message {
        let mut m = Message::new(
            0x0102030405060708,
            0x1112131415161718,
            exchange::IKE_AUTH,
            FLAG_INITIATOR,
            1,
        );
        m.payloads.push(Payload::Notify(NotifyPayload::new(
            payload::notify::INITIAL_CONTACT,
            vec![],
        )));
        m.payloads.push(Payload::Ke(KePayload {
            group: 19,
            data: vec![3; 64],
        }));
        m
    }

    #[test]
    fn plain_roundtrip_and_golden_header() {
        let mut m = Message::new(1, 0, exchange::IKE_SA_INIT, FLAG_INITIATOR, 0);
        m.payloads.push(Payload::Nonce(vec![0xab; 16]));
        let b = m.encode_plain();
        assert_eq!(
            &b[..HEADER_LEN],
            &[
                0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 40, 0x20, 34, 0x08, 0, 0, 0, 0, 0,
                0, 0, 48
            ]
        );
        assert_eq!(Message::decode(&b).unwrap(), m);
    }

    #[test]
    fn protected_roundtrip_all_sk_ciphers() {
        for (encr, integ) in [
            (Encr::AesGcm16(128), None),
            (Encr::AesGcm16(192), None),
            (Encr::AesGcm16(256), None),
            (Encr::AesCcm16(128), None),
            (Encr::AesCcm16(256), None),
            (Encr::Chacha20Poly1305, None),
            (Encr::AesCbc(128), Some(Integ::HmacSha256_128)),
            (Encr::AesCbc(192), Some(Integ::HmacSha384_192)),
            (Encr::AesCbc(256), Some(Integ::HmacSha512_256)),
        ] {
            let sk = SkCrypto { encr, integ };
            let k = keys(encr, integ);
            let m = sample();
            let raw = m.encode_protected(&sk, &k).unwrap();
            let mut d = Message::decode(&raw).unwrap();
            d.decrypt(&raw, &sk, &k).unwrap();
            assert_eq!(d, m, "{encr:?}");
            // Any flipped bit must fail the integrity check.
            for pos in [10, HEADER_LEN + 2, raw.len() / 2, raw.len() - 1] {
                let mut bad = raw.clone();
                bad[pos] ^= 1;
                let r = Message::decode(&bad).and_then(|mut d| d.decrypt(&bad, &sk, &k));
                assert!(r.is_err(), "{encr:?} flip at {pos}");
            }
        }
    }

    #[test]
    fn fragments_reassemble() {
        let sk = SkCrypto {
            encr: Encr::AesGcm16(256),
            integ: None,
        };
        let k = keys(sk.encr, None);
        let mut m = sample();
        m.payloads.push(Payload::VendorId(vec![7; 1500]));
        let frags = m.encode_fragments(&sk, &k, 576).unwrap();
        assert!(frags.len() > 2);
        let mut inner = Vec::new();
        let mut first_type = 0;
        for f in &frags {
            assert!(f.len() <= 576);
            let d = Message::decode(f).unwrap();
            let (n, t, first, plain) = d.decrypt_fragment(f, &sk, &k).unwrap();
            assert_eq!(usize::from(t), frags.len());
            if n == 1 {
                first_type = first;
            }
            inner.extend_from_slice(&plain);
        }
        assert_eq!(decode_chain(first_type, &inner).unwrap(), m.payloads);
    }

    #[test]
    fn length_mismatch_rejected() {
        let mut b = sample().encode_plain();
        b.push(0);
        assert!(matches!(
            Message::decode(&b),
            Err(MessageError::LengthMismatch { .. })
        ));
    }
}
