//! The header helpers of both packet paths: where the IP header starts,
//! lengths, destination, TTL, the Ethernet header toward the next hop, and
//! completing a checksum the sender left to offload.

use super::*;

/// Offset of the IP header (after Ethernet and at most one 802.1Q tag).
pub(super) fn l3_start(chunk: &[u8], frame: &Range<usize>) -> Option<usize> {
    let f = chunk.get(frame.clone())?;
    let et = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    let (et, off) = if et == ETH_P_8021Q {
        (u16::from_be_bytes([*f.get(16)?, *f.get(17)?]), ETH_HLEN + 4)
    } else {
        (et, ETH_HLEN)
    };
    if et != ETH_P_IP && et != ETH_P_IPV6 {
        return None;
    }
    (off < f.len()).then_some(frame.start + off)
}

/// Length of the IP packet at the start of `p`, checked against `p`.
pub(super) fn ip_len(p: &[u8]) -> Option<usize> {
    let len = match p.first()? >> 4 {
        4 => usize::from(u16::from_be_bytes([*p.get(2)?, *p.get(3)?])),
        6 => 40 + usize::from(u16::from_be_bytes([*p.get(4)?, *p.get(5)?])),
        _ => return None,
    };
    let min = if p[0] >> 4 == 4 { 20 } else { 40 };
    (len >= min && len <= p.len()).then_some(len)
}

pub(super) fn ip_dst(p: &[u8]) -> Option<IpAddr> {
    match p.first()? >> 4 {
        4 => {
            let a: [u8; 4] = p.get(16..20)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(a)))
        }
        6 => {
            let a: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

pub(super) fn ttl(p: &[u8]) -> Option<u8> {
    match p.first()? >> 4 {
        4 => p.get(8).copied(),
        6 => p.get(7).copied(),
        _ => None,
    }
}

/// Decrements the TTL / hop limit (caller checked it is > 1); the IPv4
/// header checksum is updated incrementally (RFC 1624): the TTL is the
/// high byte of its 16-bit word, so the sum drops by 0x0100 and the
/// checksum grows by it, with end-around carry.
pub(super) fn decrement_ttl(p: &mut [u8]) {
    match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= 20 => {
            p[8] -= 1;
            let c = u32::from(u16::from_be_bytes([p[10], p[11]])) + 0x0100;
            let c = (c & 0xffff) + (c >> 16);
            p[10..12].copy_from_slice(&(c as u16).to_be_bytes());
        }
        Some(6) if p.len() >= 40 => p[7] -= 1,
        _ => {}
    }
}

pub(super) fn write_eth(h: &mut [u8], hop: &NextHop, v6: bool) {
    h[0..6].copy_from_slice(&hop.dst_mac);
    h[6..12].copy_from_slice(&hop.src_mac);
    let et = if v6 { ETH_P_IPV6 } else { ETH_P_IP };
    h[12..14].copy_from_slice(&et.to_be_bytes());
}

/// Completes a UDP/TCP checksum left partial by a sender that expected
/// offload (see the module doc). Returns true if it rewrote the checksum.
/// Fragments, IPv6 extension headers and other protocols are left alone.
pub fn complete_partial_checksum(p: &mut [u8]) -> bool {
    let (proto, l4, pseudo) = match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= 20 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let frag = u16::from_be_bytes([p[6], p[7]]) & 0x3fff;
            if ihl < 20 || p.len() < ihl || frag != 0 {
                return false;
            }
            let l4_len = p.len() - ihl;
            let acc = add(0, &p[12..20]) + u64::from(p[9]) + l4_len as u64;
            (p[9], ihl, acc)
        }
        Some(6) if p.len() >= 40 => {
            let l4_len = p.len() - 40;
            let acc = add(0, &p[8..40]) + u64::from(p[6]) + l4_len as u64;
            (p[6], 40, acc)
        }
        _ => return false,
    };
    let off = match proto {
        17 => 6,
        6 => 16,
        _ => return false,
    };
    let at = l4 + off;
    if p.len() < at + 2 || (proto == 17 && p.len() < l4 + 8) {
        return false;
    }
    let field = u16::from_be_bytes([p[at], p[at + 1]]);
    // Partial state: the field holds the folded pseudo-header sum.
    if field != fold(pseudo) || field == 0 {
        return false;
    }
    // One pass over the segment, with the field as it is.
    let with_field = add(pseudo, &p[l4..]);
    // Correct by coincidence (1 in 65536): leave it.
    if fold(with_field) == 0xffff {
        return false;
    }
    // The same sum with the field zeroed: one's complement subtraction of
    // the word it contributed is the addition of its complement.
    let mut c = gateway_esp::checksum::finish(with_field + u64::from(!field));
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    p[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}
