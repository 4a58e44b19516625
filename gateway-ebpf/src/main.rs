//! The XDP programs of the fast path. `wan_ingress` steers inbound ESP of
//! known SAs to the AF_XDP workers and lets IKE and everything else through;
//! `lan_ingress` steers cleartext routed into a tunnel. They own only
//! classification and counting: no crypto, no rewriting of packet bytes
//! (only metadata in front of the frame). The decision rule for malformed
//! input is documented in `gateway-common`; this file implements it.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::bpf_xdp_adjust_meta,
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray, XskMap},
    programs::XdpContext,
};
use gateway_common::{
    stats_index, Direction, DropReason, LocalAddrKey, LocalAddrValue, RouteValue, SaInKey,
    SaInValue, TunnelStats, TunnelValue, XdpMeta, DROPS_MAX_ENTRIES, FAMILY_V4, IPPROTO_ESP,
    IPPROTO_UDP, LOCAL_ADDRS_MAX_ENTRIES, MAX_IPV6_EXT_HEADERS, NAT_T_PORT, ROUTES_V4_MAX_ENTRIES,
    ROUTES_V6_MAX_ENTRIES, SA_FLAG_ESN, SA_INDEX_NONE, SA_IN_MAX_ENTRIES, STATS_MAX_ENTRIES,
    TUNNELS_MAX_ENTRIES, TUNNEL_INNER_MTU, TUNNEL_UP, XDP_META_MAGIC, XSKS_LAN_BASE,
    XSKS_MAX_ENTRIES,
};

#[map]
static SA_IN: HashMap<SaInKey, SaInValue> = HashMap::with_max_entries(SA_IN_MAX_ENTRIES, 0);
#[map]
static TUNNELS: Array<TunnelValue> = Array::with_max_entries(TUNNELS_MAX_ENTRIES, 0);
#[map]
static ROUTES_V4: LpmTrie<[u8; 4], RouteValue> =
    LpmTrie::with_max_entries(ROUTES_V4_MAX_ENTRIES, 0);
#[map]
static ROUTES_V6: LpmTrie<[u8; 16], RouteValue> =
    LpmTrie::with_max_entries(ROUTES_V6_MAX_ENTRIES, 0);
#[map]
static LOCAL_ADDRS: HashMap<LocalAddrKey, LocalAddrValue> =
    HashMap::with_max_entries(LOCAL_ADDRS_MAX_ENTRIES, 0);
#[map]
static XSKS: XskMap = XskMap::with_max_entries(XSKS_MAX_ENTRIES, 0);
#[map]
static STATS: PerCpuArray<TunnelStats> = PerCpuArray::with_max_entries(STATS_MAX_ENTRIES, 0);
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROPS_MAX_ENTRIES, 0);

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;
/// SPI + sequence number.
const ESP_HLEN: usize = 8;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_DEST: u8 = 60;

/// Early exit of the parsers: the XDP action to return.
type Verdict = u32;

/// A bounds-checked pointer `off` bytes into the frame. The comparison is on
/// packet pointers so the verifier learns the range. `data` / `data_end` are
/// read volatile: otherwise LLVM proves the check redundant from the IP
/// length checks (scalar arithmetic the verifier does not track) and
/// deletes it, and the verifier rejects the access.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*const T> {
    // SAFETY: ctx.ctx is the program's valid context pointer.
    let (start, end) = unsafe {
        (
            core::ptr::read_volatile(&(*ctx.ctx).data) as usize,
            core::ptr::read_volatile(&(*ctx.ctx).data_end) as usize,
        )
    };
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *const T)
}

#[inline(always)]
fn load<T: Copy>(ctx: &XdpContext, off: usize) -> Option<T> {
    // SAFETY: ptr_at checked that size_of::<T>() bytes are inside the frame.
    ptr_at::<T>(ctx, off).map(|p| unsafe { p.read_unaligned() })
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
fn count_drop(reason: DropReason) -> Verdict {
    if let Some(p) = DROPS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
    XDP_DROP
}

/// Parses Ethernet with at most one 802.1Q tag. Returns (EtherType, L3
/// offset); anything unrecognisable is not ours: XDP_PASS.
#[inline(always)]
fn parse_eth(ctx: &XdpContext) -> Result<(u16, usize), Verdict> {
    let ethertype = be16(load::<[u8; 2]>(ctx, 12).ok_or(XDP_PASS)?);
    if ethertype == ETH_P_8021Q {
        let inner = be16(load::<[u8; 2]>(ctx, ETH_HLEN + 2).ok_or(XDP_PASS)?);
        return Ok((inner, ETH_HLEN + VLAN_HLEN));
    }
    Ok((ethertype, ETH_HLEN))
}

struct Ipv4 {
    proto: u8,
    ttl: u8,
    is_fragment: bool,
    dst: [u8; 4],
    l4_off: usize,
    l4_len: usize,
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l3: usize) -> Result<Ipv4, Verdict> {
    let Some(h) = load::<[u8; IPV4_HLEN]>(ctx, l3) else {
        return Err(count_drop(DropReason::Ipv4HeaderTruncated));
    };
    if h[0] >> 4 != 4 {
        return Err(count_drop(DropReason::Ipv4BadVersion));
    }
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    if ihl < IPV4_HLEN {
        return Err(count_drop(DropReason::Ipv4BadIhl));
    }
    let total_len = be16([h[2], h[3]]) as usize;
    let frame_len = ctx.data_end() - ctx.data();
    if total_len < ihl || l3 + total_len > frame_len {
        return Err(count_drop(DropReason::Ipv4BadTotalLength));
    }
    Ok(Ipv4 {
        proto: h[9],
        ttl: h[8],
        // MF set or a non-zero fragment offset.
        is_fragment: be16([h[6], h[7]]) & 0x3fff != 0,
        dst: [h[16], h[17], h[18], h[19]],
        l4_off: l3 + ihl,
        l4_len: total_len - ihl,
    })
}

struct Ipv6 {
    next_header: u8,
    hop_limit: u8,
    dst: [u8; 16],
    payload_off: usize,
    payload_len: usize,
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, l3: usize) -> Result<Ipv6, Verdict> {
    let Some(h) = load::<[u8; 8]>(ctx, l3) else {
        return Err(count_drop(DropReason::Ipv6HeaderTruncated));
    };
    let Some(dst) = load::<[u8; 16]>(ctx, l3 + 24) else {
        return Err(count_drop(DropReason::Ipv6HeaderTruncated));
    };
    if h[0] >> 4 != 6 {
        return Err(count_drop(DropReason::Ipv6BadVersion));
    }
    let payload_len = be16([h[4], h[5]]) as usize;
    let frame_len = ctx.data_end() - ctx.data();
    if l3 + IPV6_HLEN + payload_len > frame_len {
        return Err(count_drop(DropReason::Ipv6BadPayloadLength));
    }
    Ok(Ipv6 {
        next_header: h[6],
        hop_limit: h[7],
        dst,
        payload_off: l3 + IPV6_HLEN,
        payload_len,
    })
}

/// Counts the frame for the tunnel, places the metadata and redirects to the
/// AF_XDP socket of the receiving queue, or passes when there is none.
#[inline(always)]
fn steer(ctx: &XdpContext, tunnel_id: u32, sa_index: u32, direction: Direction) -> Verdict {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let stats = STATS.get_ptr_mut(stats_index(tunnel_id, direction));
    if let Some(s) = stats {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe {
            (*s).packets += 1;
            (*s).bytes += len;
        }
    }
    // Size the metadata area to exactly one XdpMeta whatever was there
    // before, so the result does not depend on earlier programs (or on
    // BPF_PROG_TEST_RUN's repeat, which reruns on the same buffer).
    let current = ctx.data().wrapping_sub(ctx.metadata()) as i32;
    let delta = current - size_of::<XdpMeta>() as i32;
    // SAFETY: helper call on our own context.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, delta) } != 0 {
        return XDP_PASS;
    }
    let meta = ctx.metadata();
    if meta + size_of::<XdpMeta>() > ctx.data() {
        return XDP_PASS;
    }
    // SAFETY: the metadata area [meta, meta + 16) was just checked against data.
    unsafe {
        (meta as *mut XdpMeta).write_unaligned(XdpMeta {
            magic: XDP_META_MAGIC,
            tunnel_id,
            sa_index,
            direction: direction as u32,
        });
    }
    let key = match direction {
        Direction::Inbound => ctx.rx_queue_index(),
        Direction::Outbound => XSKS_LAN_BASE + ctx.rx_queue_index(),
    };
    match XSKS.redirect(key, XDP_PASS as u64) {
        Ok(action) => action,
        Err(_) => {
            if let Some(s) = stats {
                // SAFETY: as above.
                unsafe { (*s).no_socket += 1 };
            }
            XDP_PASS
        }
    }
}

#[inline(always)]
fn is_local(key: &LocalAddrKey) -> bool {
    // SAFETY: only presence is read.
    unsafe { LOCAL_ADDRS.get(key) }.is_some()
}

/// L4 problems are only ours to judge for packets addressed to us.
#[inline(always)]
fn drop_if_local(dst: &LocalAddrKey, reason: DropReason) -> Verdict {
    if is_local(dst) {
        count_drop(reason)
    } else {
        XDP_PASS
    }
}

#[inline(always)]
fn eq16(a: &[u8; 16], b: &[u8; 16]) -> bool {
    // SAFETY: both are 16-byte arrays; unaligned reads of their halves.
    unsafe {
        let (a, b) = (a.as_ptr() as *const u64, b.as_ptr() as *const u64);
        a.read_unaligned() == b.read_unaligned()
            && a.add(1).read_unaligned() == b.add(1).read_unaligned()
    }
}

/// Whether `dst` is one of our addresses, for a packet of an SA of
/// `tunnel_id`. The tunnel's own local address (one of LOCAL_ADDRS by the
/// agent's invariant) is an array lookup, inlined by the verifier; only a
/// mismatch pays for the LOCAL_ADDRS hash lookup.
#[inline(always)]
fn is_local_for_tunnel(tunnel_id: u32, dst: &LocalAddrKey) -> bool {
    if let Some(t) = TUNNELS.get(tunnel_id) {
        if t.family == dst.family && eq16(&t.local, &dst.addr) {
            return true;
        }
    }
    is_local(dst)
}

/// ESP (bare or after the UDP header): steer it if it is addressed to us
/// and its SPI is known and its sequence number is not left of the window.
#[inline(always)]
fn wan_esp(ctx: &XdpContext, esp_off: usize, esp_len: usize, dst: &LocalAddrKey) -> Verdict {
    if esp_len < ESP_HLEN {
        return drop_if_local(dst, DropReason::EspHeaderTruncated);
    }
    let Some(h) = load::<[u8; ESP_HLEN]>(ctx, esp_off) else {
        return drop_if_local(dst, DropReason::EspHeaderTruncated);
    };
    let spi = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let seq = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as u64;
    // SAFETY: the value is copied out at once; a concurrent update by
    // userspace can at worst give a stale window edge, which only makes the
    // early check weaker (userspace checks again after authentication).
    let Some(sa) = (unsafe { SA_IN.get(SaInKey { spi }) }).copied() else {
        return drop_if_local(dst, DropReason::UnknownSpi);
    };
    if !is_local_for_tunnel(sa.tunnel_id, dst) {
        return XDP_PASS;
    }
    if sa.flags & SA_FLAG_ESN == 0 && sa.replay_window != 0 {
        let w = sa.replay_window as u64;
        let t = sa.replay_right_edge;
        if t >= w && seq <= t - w {
            return count_drop(DropReason::ReplayLeftOfWindow);
        }
    }
    steer(ctx, sa.tunnel_id, sa.sa_index, Direction::Inbound)
}

/// The transport part of `wan_ingress`, shared by IPv4 and IPv6. Whether
/// the destination is ours is asked only when it matters (a steer or a
/// drop): the hash lookup is the most expensive step.
#[inline(always)]
fn wan_l4(ctx: &XdpContext, proto: u8, l4: usize, l4_len: usize, dst: &LocalAddrKey) -> Verdict {
    if proto == IPPROTO_ESP {
        return wan_esp(ctx, l4, l4_len, dst);
    }
    if proto != IPPROTO_UDP {
        return XDP_PASS;
    }
    if l4_len < UDP_HLEN {
        return drop_if_local(dst, DropReason::UdpHeaderTruncated);
    }
    let Some(udp) = load::<[u8; UDP_HLEN]>(ctx, l4) else {
        return drop_if_local(dst, DropReason::UdpHeaderTruncated);
    };
    let dport = be16([udp[2], udp[3]]);
    if dport != NAT_T_PORT {
        // IKE on 500 and every other port: the kernel's.
        return XDP_PASS;
    }
    let udp_len = be16([udp[4], udp[5]]) as usize;
    if udp_len < UDP_HLEN || udp_len > l4_len {
        return drop_if_local(dst, DropReason::UdpBadLength);
    }
    let payload_len = udp_len - UDP_HLEN;
    // Shorter than the non-ESP marker: the 1-byte NAT-keepalive (RFC 3948
    // §2.3) or junk for the socket to judge.
    if payload_len < 4 {
        return XDP_PASS;
    }
    let Some(marker) = load::<[u8; 4]>(ctx, l4 + UDP_HLEN) else {
        return XDP_PASS;
    };
    if marker == [0, 0, 0, 0] {
        // Non-ESP marker: IKE on port 4500.
        return XDP_PASS;
    }
    wan_esp(ctx, l4 + UDP_HLEN, payload_len, dst)
}

/// `LocalAddrKey::v4` without the `memset` call LLVM emits for the zero tail.
#[inline(always)]
fn local_key_v4(dst: [u8; 4]) -> LocalAddrKey {
    let words: [u32; 5] = [FAMILY_V4, u32::from_ne_bytes(dst), 0, 0, 0];
    // SAFETY: LocalAddrKey is #[repr(C)] {u32, [u8; 16]}: 20 bytes, align 4,
    // every bit pattern valid; the words lay out family, then the address
    // bytes in order, then zeros.
    unsafe { core::mem::transmute::<[u32; 5], LocalAddrKey>(words) }
}

#[inline(always)]
fn wan_v4(ctx: &XdpContext, l3: usize) -> Verdict {
    let ip = match parse_ipv4(ctx, l3) {
        Ok(ip) => ip,
        Err(v) => return v,
    };
    if ip.is_fragment {
        return XDP_PASS;
    }
    wan_l4(ctx, ip.proto, ip.l4_off, ip.l4_len, &local_key_v4(ip.dst))
}

#[inline(always)]
fn wan_v6(ctx: &XdpContext, l3: usize) -> Verdict {
    let ip = match parse_ipv6(ctx, l3) {
        Ok(ip) => ip,
        Err(v) => return v,
    };
    let mut nh = ip.next_header;
    let mut off = ip.payload_off;
    let mut remaining = ip.payload_len;
    let mut i = 0;
    // Hop-by-Hop and Destination Options are skipped; Fragment, Routing
    // (the destination may not be final), AH and the rest go to the kernel.
    while i < MAX_IPV6_EXT_HEADERS {
        if nh != NEXTHDR_HOP && nh != NEXTHDR_DEST {
            break;
        }
        if remaining < 8 {
            return count_drop(DropReason::Ipv6ExtHeaderTruncated);
        }
        let Some(eh) = load::<[u8; 2]>(ctx, off) else {
            return count_drop(DropReason::Ipv6ExtHeaderTruncated);
        };
        let len = (eh[1] as usize + 1) * 8;
        if len > remaining {
            return count_drop(DropReason::Ipv6ExtHeaderTruncated);
        }
        nh = eh[0];
        off += len;
        remaining -= len;
        i += 1;
    }
    if nh != IPPROTO_ESP && nh != IPPROTO_UDP {
        return XDP_PASS;
    }
    wan_l4(ctx, nh, off, remaining, &LocalAddrKey::v6(ip.dst))
}

/// WAN ingress: steer ESP of known SAs to the workers, drop unknown SPIs and
/// replays, pass IKE and everything else.
#[xdp]
pub fn wan_ingress(ctx: XdpContext) -> u32 {
    let (ethertype, l3) = match parse_eth(&ctx) {
        Ok(x) => x,
        Err(v) => return v,
    };
    match ethertype {
        ETH_P_IP => wan_v4(&ctx, l3),
        ETH_P_IPV6 => wan_v6(&ctx, l3),
        _ => XDP_PASS,
    }
}

#[inline(always)]
fn lan_tunnel(ctx: &XdpContext, route: Option<&RouteValue>) -> Verdict {
    let Some(route) = route else {
        return XDP_PASS;
    };
    let tunnel_id = route.tunnel_id;
    match TUNNELS.get(tunnel_id) {
        Some(t) if t.state == TUNNEL_UP => {
            steer(ctx, tunnel_id, SA_INDEX_NONE, Direction::Outbound)
        }
        // Down or never set: the kernel routes through the TUN slow path.
        _ => XDP_PASS,
    }
}

/// LAN ingress: steer cleartext whose destination is routed into a tunnel
/// that is up; pass misses and expiring TTLs to the kernel.
#[xdp]
pub fn lan_ingress(ctx: XdpContext) -> u32 {
    let (ethertype, l3) = match parse_eth(&ctx) {
        Ok(x) => x,
        Err(v) => return v,
    };
    match ethertype {
        ETH_P_IP => {
            let ip = match parse_ipv4(&ctx, l3) {
                Ok(ip) => ip,
                Err(v) => return v,
            };
            // Expiring TTL: the kernel answers with ICMP. Too big for the
            // tunnel: the kernel answers with fragmentation needed (or
            // fragments), via the TUN whose MTU is the same.
            if ip.ttl <= 1 || ip.l4_off - l3 + ip.l4_len > TUNNEL_INNER_MTU {
                return XDP_PASS;
            }
            lan_tunnel(&ctx, ROUTES_V4.get(Key::new(32, ip.dst)))
        }
        ETH_P_IPV6 => {
            let ip = match parse_ipv6(&ctx, l3) {
                Ok(ip) => ip,
                Err(v) => return v,
            };
            if ip.hop_limit <= 1 || IPV6_HLEN + ip.payload_len > TUNNEL_INNER_MTU {
                return XDP_PASS;
            }
            lan_tunnel(&ctx, ROUTES_V6.get(Key::new(128, ip.dst)))
        }
        _ => XDP_PASS,
    }
}

/// Returns XDP_PASS and does nothing else: the benchmark's baseline.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// None of the helpers used is GPL-only; the string states the crate's licence.
#[link_section = "license"]
#[used]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";
