//! The one reply the programs build: the ICMP / ICMPv6 "too big" error
//! for a LAN packet larger than its tunnel, sent back out of the LAN.

use crate::*;

#[inline(always)]
pub(crate) fn store<T>(p: *mut u8, off: usize, v: T) {
    // SAFETY: callers pass a pointer checked by ptr_at for a range that
    // covers [off, off + size_of::<T>()).
    unsafe { (p.add(off) as *mut T).write_unaligned(v) }
}

/// One's complement sum of `len` (a multiple of 4, at most 512) packet
/// bytes at `off`, unfolded; `None` if they are not in the frame.
#[inline(always)]
pub(crate) fn csum_chunk<const N: usize>(ctx: &XdpContext, off: usize) -> Option<u64> {
    let p = ptr_at::<[u8; N]>(ctx, off)?;
    // SAFETY: the helper only reads N bytes, checked by ptr_at.
    let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p as *mut u32, N as u32, 0) };
    if r < 0 {
        None
    } else {
        Some(r as u64 & 0xffff_ffff)
    }
}

#[inline(always)]
pub(crate) fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Sum of the 16-bit words of `b`, read in host order like the csum helper.
#[inline(always)]
pub(crate) fn sum_ne(b: &[u8; 16]) -> u64 {
    let mut s = 0u64;
    let mut i = 0;
    while i < 16 {
        s += u16::from_ne_bytes([b[i], b[i + 1]]) as u64;
        i += 2;
    }
    s
}

/// Whether `src` may get an ICMP error now (token bucket per source and
/// CPU, see `LanConfig`).
#[inline(always)]
pub(crate) fn icmp_rate_ok(cfg: &LanConfig, src: &IcmpBucketKey) -> bool {
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(b) = ICMP_BUCKETS.get_ptr_mut(src) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        let tat = unsafe { (*b).tat_ns };
        return match icmp_allow(tat, now, cfg.icmp_interval_ns, cfg.icmp_burst_ns) {
            Some(t) => {
                // SAFETY: as above.
                unsafe { (*b).tat_ns = t };
                true
            }
            None => false,
        };
    }
    match icmp_allow(0, now, cfg.icmp_interval_ns, cfg.icmp_burst_ns) {
        Some(t) => {
            // A full map evicts its least recently used source.
            let _ = ICMP_BUCKETS.insert(src, &IcmpBucket { tat_ns: t }, 0);
            true
        }
        None => false,
    }
}

/// Turns the frame into its Ethernet header followed by `quote` bytes of
/// the IP packet, with `room` free bytes in between for the new IP + ICMP
/// headers; returns the original (destination, source) MACs.
#[inline(always)]
pub(crate) fn make_room(ctx: &XdpContext, quote: usize, room: usize) -> Option<[u8; 12]> {
    let macs = load::<[u8; 12]>(ctx, 0)?;
    let frame_len = (ctx.data_end() - ctx.data()) as i32;
    let delta = (ETH_HLEN + quote) as i32 - frame_len;
    // SAFETY: helper calls on our own context; every packet pointer is
    // re-derived (ptr_at) afterwards.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return None;
    }
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(room as i32)) } != 0 {
        return None;
    }
    Some(macs)
}

#[inline(always)]
pub(crate) fn write_eth(p: *mut u8, macs: &[u8; 12], ethertype: u16) {
    // Back to the sender: its source MAC becomes the destination.
    store(
        p,
        0,
        [macs[6], macs[7], macs[8], macs[9], macs[10], macs[11]],
    );
    store(p, 6, [macs[0], macs[1], macs[2], macs[3], macs[4], macs[5]]);
    store(p, 12, ethertype.to_be_bytes());
}

/// Sends the error built in place back out of the interface it came in
/// on: `XDP_TX`, or a redirect to that interface for a veth LAN (see
/// `LAN_REPLY_REDIRECT` for why).
#[inline(always)]
pub(crate) fn lan_reply(ctx: &XdpContext, flags: u32) -> Verdict {
    count_drop(DropReason::PacketTooBig);
    if flags & LAN_REPLY_REDIRECT == 0 {
        return XDP_TX;
    }
    // SAFETY: reads a field of the context the kernel passed us.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    // SAFETY: helper with plain arguments; it returns XDP_REDIRECT, or
    // XDP_ABORTED for flags it does not know (none here).
    unsafe { bpf_redirect(ifindex, 0) as Verdict }
}

pub(crate) const ICMP_HLEN: usize = 8;
pub(crate) const IPPROTO_ICMP: u8 = 1;
pub(crate) const IPPROTO_ICMPV6: u8 = 58;

/// An IPv4 packet with DF, too big for its tunnel: answered with ICMP
/// destination unreachable / fragmentation needed (RFC 792, RFC 1191)
/// quoting the first `ICMP4_QUOTE_LEN` bytes of the packet (the error is
/// 576 bytes, RFC 1812 §4.3.2.3), from our LAN address, back out of the
/// LAN (`lan_reply`).
#[inline(always)]
pub(crate) fn too_big_v4(ctx: &XdpContext, l3: usize, ip: &Ipv4, mtu: usize) -> Verdict {
    let Some(cfg) = LAN_CONFIG.get(0) else {
        return XDP_PASS;
    };
    // No address to answer from; VLAN tags are not rebuilt: the kernel's.
    if cfg.flags & LAN_HAS_V4 == 0 || l3 != ETH_HLEN || ip.l4_off - l3 + ip.l4_len < ICMP4_QUOTE_LEN
    {
        return XDP_PASS;
    }
    let s = ip.src;
    // Never an error to a non-unicast source (RFC 1122 §3.2.2).
    if s[0] == 0 || s[0] == 127 || s[0] >= 224 {
        return count_drop(DropReason::PacketTooBigNoReply);
    }
    // Nor about an ICMP error (only queries and echoes get one).
    if ip.proto == IPPROTO_ICMP && !ip.is_fragment {
        // Type and code: a 1-byte load's bounds check is folded by LLVM
        // into a form the verifier does not learn the range from.
        let Some([t, _]) = load::<[u8; 2]>(ctx, ip.l4_off) else {
            return count_drop(DropReason::PacketTooBigNoReply);
        };
        if t == 3 || t == 4 || t == 5 || t == 11 || t == 12 {
            return count_drop(DropReason::PacketTooBigNoReply);
        }
    }
    if !icmp_rate_ok(cfg, &local_key_v4(s)) {
        return count_drop(DropReason::PacketTooBigRateLimited);
    }
    let (src, flags) = (cfg.addr_v4, cfg.flags);
    let Some(macs) = make_room(ctx, ICMP4_QUOTE_LEN, IPV4_HLEN + ICMP_HLEN) else {
        return count_drop(DropReason::PacketTooBigNoReply);
    };
    let Some(p) = ptr_at::<[u8; ETH_HLEN + IPV4_HLEN + ICMP_HLEN]>(ctx, 0) else {
        return XDP_DROP;
    };
    let p = p as *mut u8;
    write_eth(p, &macs, ETH_P_IP);
    let total = (IPV4_HLEN + ICMP_HLEN + ICMP4_QUOTE_LEN) as u16;
    // Version/IHL, TOS, total length, id 0, no flags, TTL 64, ICMP.
    let w = [
        0x4500u16,
        total,
        0,
        0,
        (64u16 << 8) | IPPROTO_ICMP as u16,
        0,
        u16::from_be_bytes([src[0], src[1]]),
        u16::from_be_bytes([src[2], src[3]]),
        u16::from_be_bytes([s[0], s[1]]),
        u16::from_be_bytes([s[2], s[3]]),
    ];
    let mut sum = 0u64;
    let mut i = 0;
    while i < 10 {
        sum += w[i] as u64;
        i += 1;
    }
    let hcsum = !fold(sum);
    let h = ETH_HLEN;
    store(p, h, 0x4500u16.to_be_bytes());
    store(p, h + 2, total.to_be_bytes());
    store(p, h + 4, 0u32);
    store(p, h + 8, [64u8, IPPROTO_ICMP]);
    store(p, h + 10, hcsum.to_be_bytes());
    store(p, h + 12, src);
    store(p, h + 16, s);
    let c = h + IPV4_HLEN;
    // Type 3 code 4, checksum (below), unused, next-hop MTU (RFC 1191).
    store(p, c, [3u8, 4u8, 0, 0]);
    store(p, c + 4, [0u8, 0u8]);
    store(p, c + 6, (mtu as u16).to_be_bytes());
    // 8 + 548 = 556 bytes: two helper calls (at most 512 bytes each).
    let (Some(a), Some(b)) = (
        csum_chunk::<512>(ctx, c),
        csum_chunk::<{ ICMP_HLEN + ICMP4_QUOTE_LEN - 512 }>(ctx, c + 512),
    ) else {
        return XDP_DROP;
    };
    let Some(p) = ptr_at::<[u8; ETH_HLEN + IPV4_HLEN + ICMP_HLEN]>(ctx, 0) else {
        return XDP_DROP;
    };
    store(p as *mut u8, c + 2, (!fold(a + b)).to_ne_bytes());
    lan_reply(ctx, flags)
}

/// An IPv6 packet too big for its tunnel: answered with ICMPv6 packet too
/// big (RFC 4443 §3.2) quoting as much of it as keeps the error within
/// 1280 bytes, from our LAN address, back out of the LAN (`lan_reply`).
#[inline(always)]
pub(crate) fn too_big_v6(ctx: &XdpContext, l3: usize, ip: &Ipv6, mtu: usize) -> Verdict {
    let Some(cfg) = LAN_CONFIG.get(0) else {
        return XDP_PASS;
    };
    if cfg.flags & LAN_HAS_V6 == 0 || l3 != ETH_HLEN || IPV6_HLEN + ip.payload_len < ICMP6_QUOTE_LEN
    {
        return XDP_PASS;
    }
    let Some(s) = load::<[u8; 16]>(ctx, l3 + 8) else {
        return XDP_PASS;
    };
    // Not to the unspecified address nor to a multicast one (RFC 4443 §2.4).
    if s[0] == 0xff || sum_ne(&s) == 0 {
        return count_drop(DropReason::PacketTooBigNoReply);
    }
    // Not about an ICMPv6 error (types below 128).
    if ip.next_header == IPPROTO_ICMPV6 {
        let Some([t, _]) = load::<[u8; 2]>(ctx, ip.payload_off) else {
            return count_drop(DropReason::PacketTooBigNoReply);
        };
        if t < 128 {
            return count_drop(DropReason::PacketTooBigNoReply);
        }
    }
    if !icmp_rate_ok(cfg, &LocalAddrKey::v6(s)) {
        return count_drop(DropReason::PacketTooBigRateLimited);
    }
    let (src, flags) = (cfg.addr_v6, cfg.flags);
    let Some(macs) = make_room(ctx, ICMP6_QUOTE_LEN, IPV6_HLEN + ICMP_HLEN) else {
        return count_drop(DropReason::PacketTooBigNoReply);
    };
    let Some(p) = ptr_at::<[u8; ETH_HLEN + IPV6_HLEN + ICMP_HLEN]>(ctx, 0) else {
        return XDP_DROP;
    };
    let p = p as *mut u8;
    write_eth(p, &macs, ETH_P_IPV6);
    let plen = (ICMP_HLEN + ICMP6_QUOTE_LEN) as u16;
    let h = ETH_HLEN;
    store(p, h, 0x6000_0000u32.to_be_bytes());
    store(p, h + 4, plen.to_be_bytes());
    store(p, h + 6, [IPPROTO_ICMPV6, 64u8]);
    store(p, h + 8, src);
    store(p, h + 24, s);
    let c = h + IPV6_HLEN;
    store(p, c, [2u8, 0u8, 0, 0]);
    store(p, c + 4, (mtu as u32).to_be_bytes());
    // Pseudo-header (RFC 8200 §8.1): addresses, upper-layer length, next
    // header, summed in host order like the helper.
    let pseudo = sum_ne(&src)
        + sum_ne(&s)
        + u16::from_ne_bytes(plen.to_be_bytes()) as u64
        + u16::from_ne_bytes([0, IPPROTO_ICMPV6]) as u64;
    // 8 + 1232 = 1240 bytes: three helper calls.
    let (Some(a), Some(b), Some(d)) = (
        csum_chunk::<512>(ctx, c),
        csum_chunk::<512>(ctx, c + 512),
        csum_chunk::<{ ICMP_HLEN + ICMP6_QUOTE_LEN - 1024 }>(ctx, c + 1024),
    ) else {
        return XDP_DROP;
    };
    let Some(p) = ptr_at::<[u8; ETH_HLEN + IPV6_HLEN + ICMP_HLEN]>(ctx, 0) else {
        return XDP_DROP;
    };
    store(
        p as *mut u8,
        c + 2,
        (!fold(a + b + d + pseudo)).to_ne_bytes(),
    );
    lan_reply(ctx, flags)
}
