//! Shared fixtures: hex decoding, inner packet builders, SA pairs for every
//! suite and outer family. One place builds the packets every test uses.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::net::IpAddr;

use gateway_esp::{
    Encryption, InboundSa, Integrity, OutboundSa, OuterHeader, SaCipher, Suite, TrafficSelectors,
    UdpEncap, DEFAULT_WINDOW, MAX_HEADROOM, MAX_TAILROOM,
};

pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Every suite of the API: the AEADs, and AES-CBC with each integrity.
pub fn all_suites() -> Vec<Suite> {
    let mut v = Vec::new();
    for e in Encryption::ALL {
        if e.is_aead() {
            v.push(Suite::new(e, None).unwrap());
        } else {
            for i in Integrity::ALL {
                v.push(Suite::new(e, Some(i)).unwrap());
            }
        }
    }
    v
}

/// Deterministic key material of the right lengths for a suite.
pub fn keys(suite: Suite, seed: u8) -> (Vec<u8>, Vec<u8>) {
    let e = (0..suite.encr_keymat_len())
        .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
        .collect();
    let a = (0..suite.integ_keymat_len())
        .map(|i| seed.wrapping_mul(17).wrapping_add(3 * i as u8))
        .collect();
    (e, a)
}

pub const INNER_V4_SRC: &str = "198.51.100.10";
pub const INNER_V4_DST: &str = "192.0.2.20";
pub const INNER_V6_SRC: &str = "2001:db8:1::10";
pub const INNER_V6_DST: &str = "2001:db8:2::20";

/// An inner IPv4/UDP packet of `len` bytes (>= 28) from the peer's side.
pub fn inner_v4(len: usize, src: &str, dst: &str) -> Vec<u8> {
    assert!(len >= 28);
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[1] = 0xb8;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 63;
    p[9] = 17;
    let s: std::net::Ipv4Addr = src.parse().unwrap();
    let d: std::net::Ipv4Addr = dst.parse().unwrap();
    p[12..16].copy_from_slice(&s.octets());
    p[16..20].copy_from_slice(&d.octets());
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    p
}

/// An inner IPv6/UDP packet of `len` bytes (>= 48).
pub fn inner_v6(len: usize, src: &str, dst: &str) -> Vec<u8> {
    assert!(len >= 48);
    let mut p = vec![0u8; len];
    p[0] = 0x6b;
    p[1] = 0x80;
    p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 63;
    let s: std::net::Ipv6Addr = src.parse().unwrap();
    let d: std::net::Ipv6Addr = dst.parse().unwrap();
    p[8..24].copy_from_slice(&s.octets());
    p[24..40].copy_from_slice(&d.octets());
    for (i, b) in p[48..].iter_mut().enumerate() {
        *b = (i * 5 + 1) as u8;
    }
    p
}

pub fn inner(v6: bool, len: usize) -> Vec<u8> {
    if v6 {
        inner_v6(len, INNER_V6_SRC, INNER_V6_DST)
    } else {
        inner_v4(len, INNER_V4_SRC, INNER_V4_DST)
    }
}

pub fn outer(v6: bool, udp: bool) -> OuterHeader {
    let (src, dst): (IpAddr, IpAddr) = if v6 {
        (
            "2001:db8:ffff::1".parse().unwrap(),
            "2001:db8:eeee::2".parse().unwrap(),
        )
    } else {
        (
            "203.0.113.1".parse().unwrap(),
            "203.0.113.2".parse().unwrap(),
        )
    };
    OuterHeader {
        src,
        dst,
        udp: udp.then(UdpEncap::default),
        ttl: 64,
    }
}

pub const SPI: u32 = 0xc0ffee01;

/// An outbound SA and the matching inbound SA (as the peer would hold it).
pub fn pair(suite: Suite, esn: bool, outer_v6: bool, udp: bool) -> (OutboundSa, InboundSa) {
    let (e, a) = keys(suite, 7);
    let out = OutboundSa::new(
        SPI,
        SaCipher::new(suite, &e, &a).unwrap(),
        esn,
        outer(outer_v6, udp),
    )
    .unwrap();
    let inb = InboundSa::new(
        SPI,
        SaCipher::new(suite, &e, &a).unwrap(),
        esn,
        DEFAULT_WINDOW,
        TrafficSelectors::any(),
    )
    .unwrap();
    (out, inb)
}

/// A buffer with the inner packet placed after `MAX_HEADROOM` and with
/// `MAX_TAILROOM` after it; returns the buffer and the inner range.
pub fn framed(inner: &[u8]) -> (Vec<u8>, std::ops::Range<usize>) {
    let mut buf = vec![0u8; MAX_HEADROOM + inner.len() + MAX_TAILROOM];
    buf[MAX_HEADROOM..MAX_HEADROOM + inner.len()].copy_from_slice(inner);
    (buf, MAX_HEADROOM..MAX_HEADROOM + inner.len())
}

/// Internet checksum verification: the sum over a correct header is zero.
pub fn csum_ok(data: &[u8], pseudo: &[u8]) -> bool {
    use gateway_esp::checksum::{add, fold};
    // The pseudo-header has an even length: the sums add up.
    fold(add(add(0, pseudo), data)) == 0xffff
}
