//! Outer and inner IP header work for tunnel mode: parsing a received outer
//! IPv4/IPv6 (+ UDP, RFC 3948) header down to the ESP packet, writing the
//! outer headers of an encapsulated packet, validating a decapsulated inner
//! packet, and the Internet checksum. All reads are bounds-checked: the
//! input is hostile.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use crate::DecapError;

/// IKE and ESP-in-UDP port (RFC 3948).
pub const NAT_T_PORT: u16 = 4500;
/// IP protocol number of ESP.
pub const IPPROTO_ESP: u8 = 50;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// Next header value of an inner IPv4 packet (IP-in-IP).
pub const NEXT_HEADER_IPV4: u8 = 4;
/// Next header value of an inner IPv6 packet.
pub const NEXT_HEADER_IPV6: u8 = 41;
/// Next header value of a dummy (TFC) packet, RFC 4303 §2.6.
pub const NEXT_HEADER_NONE: u8 = 59;

pub(crate) const IPV4_HEADER_LEN: usize = 20;
pub(crate) const IPV6_HEADER_LEN: usize = 40;
pub(crate) const UDP_HEADER_LEN: usize = 8;

/// UDP encapsulation ports (RFC 3948).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpEncap {
    /// Source port of the UDP header.
    pub src_port: u16,
    /// Destination port of the UDP header.
    pub dst_port: u16,
}

impl Default for UdpEncap {
    fn default() -> Self {
        Self {
            src_port: NAT_T_PORT,
            dst_port: NAT_T_PORT,
        }
    }
}

/// Where the ESP packet sits in a received outer packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OuterEsp {
    /// SPI from the ESP header.
    pub spi: u32,
    /// Range of the ESP packet (SPI through ICV) in the buffer.
    pub esp: Range<usize>,
    /// Outer source address.
    pub src: IpAddr,
    /// Outer destination address.
    pub dst: IpAddr,
    /// UDP ports when UDP-encapsulated.
    pub udp: Option<UdpEncap>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn addr4(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let s = b.get(at..at + 4)?;
    Some(Ipv4Addr::new(s[0], s[1], s[2], s[3]))
}

fn addr6(b: &[u8], at: usize) -> Option<Ipv6Addr> {
    let s: [u8; 16] = b.get(at..at + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(s))
}

/// Parses a received outer packet (from the IP header on) down to the ESP
/// packet. Accepts ESP directly (protocol 50) and ESP in UDP to port 4500;
/// reports IKE (non-ESP marker) and NAT keepalives as typed errors so the
/// caller can hand them to the kernel/IKE instead.
pub fn parse_outer(buf: &[u8], packet: Range<usize>) -> Result<OuterEsp, DecapError> {
    let p = buf
        .get(packet.clone())
        .ok_or(DecapError::RangeOutOfBounds)?;
    let base = packet.start;
    let first = *p.first().ok_or(DecapError::OuterTruncated)?;
    let (src, dst, proto, l4) = match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < IPV4_HEADER_LEN || p.len() < ihl {
                return Err(DecapError::OuterTruncated);
            }
            let total = usize::from(be16(p, 2).ok_or(DecapError::OuterTruncated)?);
            if total < ihl || total > p.len() {
                return Err(DecapError::OuterTruncated);
            }
            let frag = be16(p, 6).ok_or(DecapError::OuterTruncated)?;
            // MF set or a non-zero offset: the kernel reassembles, not us.
            if frag & 0x3fff != 0 {
                return Err(DecapError::OuterFragment);
            }
            let src = addr4(p, 12).ok_or(DecapError::OuterTruncated)?;
            let dst = addr4(p, 16).ok_or(DecapError::OuterTruncated)?;
            (IpAddr::V4(src), IpAddr::V4(dst), p[9], ihl..total)
        }
        6 => {
            if p.len() < IPV6_HEADER_LEN {
                return Err(DecapError::OuterTruncated);
            }
            let total =
                IPV6_HEADER_LEN + usize::from(be16(p, 4).ok_or(DecapError::OuterTruncated)?);
            if total > p.len() {
                return Err(DecapError::OuterTruncated);
            }
            let src = addr6(p, 8).ok_or(DecapError::OuterTruncated)?;
            let dst = addr6(p, 24).ok_or(DecapError::OuterTruncated)?;
            let mut nh = p[6];
            let mut off = IPV6_HEADER_LEN;
            // Skip the extension headers a router may add; bounded count.
            for _ in 0..8 {
                match nh {
                    0 | 43 | 60 => {
                        let next = *p.get(off).ok_or(DecapError::OuterTruncated)?;
                        let len = (usize::from(*p.get(off + 1).ok_or(DecapError::OuterTruncated)?)
                            + 1)
                            * 8;
                        nh = next;
                        off += len;
                        if off > total {
                            return Err(DecapError::OuterTruncated);
                        }
                    }
                    44 => return Err(DecapError::OuterFragment),
                    _ => break,
                }
            }
            (IpAddr::V6(src), IpAddr::V6(dst), nh, off..total)
        }
        v => return Err(DecapError::OuterNotIp { version: v }),
    };
    let (esp, udp) = match proto {
        IPPROTO_ESP => (l4, None),
        IPPROTO_UDP => {
            let u = &p[l4.clone()];
            let sport = be16(u, 0).ok_or(DecapError::OuterTruncated)?;
            let dport = be16(u, 2).ok_or(DecapError::OuterTruncated)?;
            let ulen = usize::from(be16(u, 4).ok_or(DecapError::OuterTruncated)?);
            if ulen < UDP_HEADER_LEN || ulen > u.len() {
                return Err(DecapError::OuterTruncated);
            }
            if dport != NAT_T_PORT {
                return Err(DecapError::NotEspPort { port: dport });
            }
            let payload = &u[UDP_HEADER_LEN..ulen];
            if payload == [0xff] {
                return Err(DecapError::NatKeepalive);
            }
            if payload.len() >= 4 && payload[..4] == [0, 0, 0, 0] {
                return Err(DecapError::IkeMessage);
            }
            let start = l4.start + UDP_HEADER_LEN;
            (
                start..l4.start + ulen,
                Some(UdpEncap {
                    src_port: sport,
                    dst_port: dport,
                }),
            )
        }
        other => return Err(DecapError::NotEsp { protocol: other }),
    };
    let spi = be32(p, esp.start).ok_or(DecapError::EspTruncated { len: esp.len() })?;
    if esp.len() < 8 {
        return Err(DecapError::EspTruncated { len: esp.len() });
    }
    Ok(OuterEsp {
        spi,
        esp: base + esp.start..base + esp.end,
        src,
        dst,
        udp,
    })
}

/// Inner packet family, from the ESP next header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InnerFamily {
    /// IPv4 (next header 4).
    Ipv4,
    /// IPv6 (next header 41).
    Ipv6,
}

/// Validates a decrypted inner packet and returns its length (trimming TFC
/// padding, RFC 4303 §2.7) and its source and destination.
#[inline(always)]
pub(crate) fn check_inner(
    p: &[u8],
    family: InnerFamily,
) -> Result<(usize, IpAddr, IpAddr), DecapError> {
    match family {
        InnerFamily::Ipv4 => {
            if p.len() < IPV4_HEADER_LEN {
                return Err(DecapError::InnerTruncated { len: p.len() });
            }
            let version = p[0] >> 4;
            if version != 4 {
                return Err(DecapError::InnerVersionMismatch {
                    next_header: NEXT_HEADER_IPV4,
                    version,
                });
            }
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            if ihl < IPV4_HEADER_LEN || total < ihl || total > p.len() {
                return Err(DecapError::InnerLengthMismatch {
                    claimed: total,
                    available: p.len(),
                });
            }
            let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
            let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            Ok((total, IpAddr::V4(src), IpAddr::V4(dst)))
        }
        InnerFamily::Ipv6 => {
            if p.len() < IPV6_HEADER_LEN {
                return Err(DecapError::InnerTruncated { len: p.len() });
            }
            let version = p[0] >> 4;
            if version != 6 {
                return Err(DecapError::InnerVersionMismatch {
                    next_header: NEXT_HEADER_IPV6,
                    version,
                });
            }
            let total = IPV6_HEADER_LEN + usize::from(u16::from_be_bytes([p[4], p[5]]));
            if total > p.len() {
                return Err(DecapError::InnerLengthMismatch {
                    claimed: total,
                    available: p.len(),
                });
            }
            let mut s = [0u8; 16];
            s.copy_from_slice(&p[8..24]);
            let mut d = [0u8; 16];
            d.copy_from_slice(&p[24..40]);
            Ok((
                total,
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
            ))
        }
    }
}

/// Writes an outer IPv4 header (20 bytes, no options) into `h`.
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per header field, called from one place"
)]
pub(crate) fn write_ipv4(
    h: &mut [u8],
    tos: u8,
    total_len: u16,
    id: u16,
    df: bool,
    ttl: u8,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
) {
    let flags: u16 = if df { 0x4000 } else { 0 };
    let (s, d) = (u32::from(src), u32::from(dst));
    // The checksum from the field values, not by reading the header back:
    // an 8-byte load over the narrow stores just made cannot be forwarded
    // from them and stalls (half of this function's samples in a profile
    // of `bench esp` at 64 B).
    let words = [
        0x4500 | u16::from(tos),
        total_len,
        id,
        flags,
        (u16::from(ttl) << 8) | u16::from(proto),
        (s >> 16) as u16,
        s as u16,
        (d >> 16) as u16,
        d as u16,
    ];
    let c = crate::checksum::finish(words.iter().map(|&w| u64::from(w)).sum());
    let mut out = [0u8; IPV4_HEADER_LEN];
    out[0] = 0x45;
    out[1] = tos;
    out[2..4].copy_from_slice(&total_len.to_be_bytes());
    out[4..6].copy_from_slice(&id.to_be_bytes());
    out[6..8].copy_from_slice(&flags.to_be_bytes());
    out[8] = ttl;
    out[9] = proto;
    out[10..12].copy_from_slice(&c.to_be_bytes());
    out[12..16].copy_from_slice(&src.octets());
    out[16..20].copy_from_slice(&dst.octets());
    h[..IPV4_HEADER_LEN].copy_from_slice(&out);
}

/// Writes an outer IPv6 header (40 bytes) into `h`.
pub(crate) fn write_ipv6(
    h: &mut [u8],
    tc: u8,
    payload_len: u16,
    next: u8,
    hop_limit: u8,
    src: Ipv6Addr,
    dst: Ipv6Addr,
) {
    h[0] = 0x60 | (tc >> 4);
    h[1] = tc << 4;
    h[2] = 0;
    h[3] = 0;
    h[4..6].copy_from_slice(&payload_len.to_be_bytes());
    h[6] = next;
    h[7] = hop_limit;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
}

/// UDP checksum over IPv6 (mandatory there, RFC 8200 §8.1): `udp` is the
/// UDP header (checksum field zero) and payload.
pub(crate) fn udp6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, udp: &[u8]) -> u16 {
    let mut sum = crate::checksum::add(0, &src.octets());
    sum = crate::checksum::add(sum, &dst.octets());
    sum += udp.len() as u64 + u64::from(IPPROTO_UDP);
    let c = crate::checksum::finish(crate::checksum::add(sum, udp));
    // RFC 768: a computed zero is sent as all ones.
    if c == 0 {
        0xffff
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_verifies() {
        // Small fields, and all-ones fields whose sum carries many times.
        let cases = [
            (0, 100, 7, true, 64, Ipv4Addr::new(192, 0, 2, 1)),
            (
                0xb8,
                0xffff,
                0xffff,
                false,
                255,
                Ipv4Addr::new(255, 255, 255, 255),
            ),
        ];
        for (tos, len, id, df, ttl, src) in cases {
            let mut h = [0u8; 20];
            write_ipv4(
                &mut h,
                tos,
                len,
                id,
                df,
                ttl,
                IPPROTO_ESP,
                src,
                Ipv4Addr::new(198, 51, 100, 2),
            );
            assert_eq!(crate::checksum::finish(crate::checksum::add(0, &h)), 0);
            assert_eq!((h[0], h[1], h[8], h[9]), (0x45, tos, ttl, IPPROTO_ESP));
            assert_eq!(u16::from_be_bytes([h[2], h[3]]), len);
            assert_eq!(u16::from_be_bytes([h[4], h[5]]), id);
            assert_eq!(h[6] & 0x40 != 0, df);
            assert_eq!(h[12..16], src.octets());
        }
    }
}
