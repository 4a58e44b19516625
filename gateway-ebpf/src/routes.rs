//! The LAN lookups of `lan_ingress`: IPv4 in the DIR-24-8 arrays, IPv6 in
//! the per-length hash, and the tunnel the route names.

use crate::*;

/// The tunnel a LAN destination is routed into, if it is up.
#[inline(always)]
pub(crate) fn lan_route(tunnel_id: Option<u32>) -> Option<(u32, TunnelValue)> {
    let tunnel_id = tunnel_id?;
    match TUNNELS.get(tunnel_id) {
        Some(t) if t.state == TUNNEL_UP => Some((tunnel_id, *t)),
        // Down or never set: the kernel routes through the TUN slow path.
        _ => None,
    }
}

/// Entry `i` of a route table: a half of element `i / 2`
/// (`route4::ENTRIES_PER_ELEMENT`).
#[inline(always)]
pub(crate) fn entry(table: &Array<u64>, i: u32) -> Option<u32> {
    let w = *table.get(i >> 1)?;
    Some((w >> ((i & 1) * 32)) as u32)
}

/// The tunnel of the longest IPv4 prefix holding `dst`: one array read,
/// two for a /24 that holds prefixes longer than /24.
#[inline(always)]
pub(crate) fn route_v4(dst: [u8; 4]) -> Option<u32> {
    let a = u32::from_be_bytes(dst);
    let mut e = entry(&ROUTES_V4_TBL24, a >> 8)?;
    if e & route4::GROUP != 0 {
        e = entry(
            &ROUTES_V4_TBL8,
            ((e & route4::VALUE_MASK) << 8) | (a & 0xff),
        )?;
    }
    if e & route4::VALID == 0 {
        return None;
    }
    Some(e & route4::VALUE_MASK)
}

/// The tunnel of the longest IPv6 prefix holding `dst`: the lengths in
/// use, longest first, one hash lookup each until one hits.
#[inline(always)]
pub(crate) fn route_v6(dst: [u8; 16]) -> Option<u32> {
    let a = u128::from_be_bytes(dst);
    let (hi, lo) = ((a >> 64) as u64, a as u64);
    let w0 = *ROUTES_V6_LENGTHS.get(0)?;
    let w1 = *ROUTES_V6_LENGTHS.get(1)?;
    let w2 = *ROUTES_V6_LENGTHS.get(2)?;
    if w2 & 1 != 0 {
        if let Some(t) = lookup_v6(128, hi, lo) {
            return Some(t);
        }
    }
    if let Some(t) = probe_lengths(w1, 64, hi, lo) {
        return Some(t);
    }
    probe_lengths(w0, 0, hi, lo)
}

/// Probes the lengths `base + bit` for the bits set in `w`, highest
/// first. One path goes on from each iteration (a miss), so the verifier
/// walks 64 iterations, not a tree of them.
#[inline(always)]
pub(crate) fn probe_lengths(mut w: u64, base: u32, hi: u64, lo: u64) -> Option<u32> {
    for _ in 0..64 {
        if w == 0 {
            return None;
        }
        let bit = route6::top_bit(w);
        w &= !(1u64 << bit);
        // The first `bit` bits of the half this word's lengths end in.
        let mask = !(!0u64 >> bit);
        let t = if base == 64 {
            lookup_v6(64 + bit, hi, lo & mask)
        } else {
            lookup_v6(bit, hi & mask, 0)
        };
        if t.is_some() {
            return t;
        }
    }
    None
}

/// The route of the prefix `hi:lo` (host bits already zero) of `len` bits.
#[inline(always)]
pub(crate) fn lookup_v6(len: u32, hi: u64, lo: u64) -> Option<u32> {
    let key = route6::key_of_masked(hi, lo, len);
    // SAFETY: the value is copied out at once.
    unsafe { ROUTES_V6.get(&key) }.map(|r| r.tunnel_id)
}
