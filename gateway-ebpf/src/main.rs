//! The XDP programs of the fast path. `wan_ingress` steers inbound ESP of
//! known SAs to the AF_XDP workers and lets IKE and everything else through;
//! `lan_ingress` steers cleartext routed into a tunnel and answers a packet
//! too big for its tunnel with the ICMP error itself. They own
//! classification, counting and that one reply: no crypto, and no rewriting
//! of packets that go on (only metadata in front of the frame). The
//! decision rule for malformed input is documented in `gateway-common`;
//! this file implements it.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::{
        bpf_csum_diff, bpf_ktime_get_ns, bpf_redirect, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
    },
    macros::{map, xdp},
    maps::{Array, HashMap, LruPerCpuHashMap, PerCpuArray, XskMap},
    programs::XdpContext,
};
use aya_log_ebpf::{debug, info, warn};
use gateway_common::{
    drop_event_level, icmp_allow, stats_index, Direction, DropReason, IcmpBucket, IcmpBucketKey,
    LanConfig, LocalAddrKey, LocalAddrValue, RouteValue, SaInKey, SaInValue, TunnelStats,
    TunnelValue, XdpMeta, DROPS_MAX_ENTRIES, FAMILY_V4, ICMP4_QUOTE_LEN, ICMP6_QUOTE_LEN,
    ICMP_BUCKETS_MAX_ENTRIES, IPPROTO_ESP, IPPROTO_UDP, LAN_HAS_V4, LAN_HAS_V6, LAN_REPLY_REDIRECT,
    LOCAL_ADDRS_MAX_ENTRIES, MAX_IPV6_EXT_HEADERS, NAT_T_PORT, ROUTES_V6_MAX_ENTRIES, SA_FLAG_ESN,
    SA_INDEX_NONE, SA_IN_MAX_ENTRIES, STATS_MAX_ENTRIES, TUNNELS_MAX_ENTRIES, TUNNEL_UP,
    XDP_META_MAGIC, XSKS_LAN_BASE, XSKS_MAX_ENTRIES,
};
use gateway_common::{route4, route6, sa_slots, SaSlot};

#[map]
static SA_IN: HashMap<SaInKey, SaInValue> = HashMap::with_max_entries(SA_IN_MAX_ENTRIES, 0);
/// The inbound SAs by the low bits of their SPI (`gateway_common::sa_slots`).
#[map]
static SA_SLOTS: Array<SaSlot> = Array::with_max_entries(sa_slots::ENTRIES, sa_slots::MAP_FLAGS);
/// How many inbound SAs are in `SA_IN` rather than in a slot.
#[map]
static SA_IN_SPILL: Array<u64> = Array::with_max_entries(1, sa_slots::MAP_FLAGS);
#[map]
static TUNNELS: Array<TunnelValue> = Array::with_max_entries(TUNNELS_MAX_ENTRIES, 0);
/// The IPv4 routes, DIR-24-8 (`gateway_common::route4`): one entry per /24 ...
#[map]
static ROUTES_V4_TBL24: Array<u64> =
    Array::with_max_entries(route4::TBL24_ELEMENTS, route4::MAP_FLAGS);
/// ... and 256-entry groups for the /24s that hold longer prefixes.
#[map]
static ROUTES_V4_TBL8: Array<u64> =
    Array::with_max_entries(route4::TBL8_ELEMENTS, route4::MAP_FLAGS);
#[map]
static ROUTES_V6: HashMap<route6::Key, RouteValue> =
    HashMap::with_max_entries(ROUTES_V6_MAX_ENTRIES, route6::HASH_FLAGS);
/// The prefix lengths in use in `ROUTES_V6` (`gateway_common::route6`).
#[map]
static ROUTES_V6_LENGTHS: Array<u64> =
    Array::with_max_entries(route6::LENGTH_WORDS, route6::LENGTHS_FLAGS);
#[map]
static LOCAL_ADDRS: HashMap<LocalAddrKey, LocalAddrValue> =
    HashMap::with_max_entries(LOCAL_ADDRS_MAX_ENTRIES, 0);
#[map]
static XSKS: XskMap = XskMap::with_max_entries(XSKS_MAX_ENTRIES, 0);
#[map]
static STATS: PerCpuArray<TunnelStats> = PerCpuArray::with_max_entries(STATS_MAX_ENTRIES, 0);
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROPS_MAX_ENTRIES, 0);
#[map]
static LAN_CONFIG: Array<LanConfig> = Array::with_max_entries(1, 0);
/// Drop events: the most verbose level sent to the daemon's log
/// (`drop_event_level`; 0, the default, sends none). Written by the daemon
/// at start and on reload.
#[map]
static DROP_LOG: Array<u32> = Array::with_max_entries(1, 0);
/// This CPU's last drop whose event is due (reason + 1, its level in the
/// upper 16 bits; 0: none), for the entry point to log.
#[map]
static LAST_DROP: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
#[map]
static ICMP_BUCKETS: LruPerCpuHashMap<IcmpBucketKey, IcmpBucket> =
    LruPerCpuHashMap::with_max_entries(ICMP_BUCKETS_MAX_ENTRIES, 0);

use gateway_common::eth::{ETH_HLEN, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, VLAN_HLEN};
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
    // `reason` is a constant at each inlined call: so is its level.
    let level = reason.event_level();
    if level <= drop_log_level() {
        if let Some(p) = LAST_DROP.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe { *p = (level << 16) | (reason as u32 + 1) };
        }
    }
    XDP_DROP
}

#[inline(always)]
fn drop_log_level() -> u32 {
    DROP_LOG.get(0).copied().unwrap_or(0)
}

/// After a verdict that may follow a drop (`XDP_DROP`, or `XDP_TX` for
/// the packet-too-big reply): sends the event `count_drop` left due, at
/// its level (`DropReason::event_level`). Verdicts that send a packet on
/// (`XDP_REDIRECT`, `XDP_PASS`) never come here: the forwarding path pays
/// nothing for the feature.
#[inline(always)]
fn log_drop(ctx: &XdpContext, wan: bool) {
    let Some(p) = LAST_DROP.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot, no concurrent writer on this CPU.
    let last = unsafe { *p };
    if last == 0 {
        return;
    }
    // SAFETY: as above.
    unsafe { *p = 0 };
    let reason = (last & 0xffff) - 1;
    // SAFETY: reads a field of the context the kernel passed us.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let side: u32 = if wan { 0 } else { 1 };
    match last >> 16 {
        drop_event_level::WARN => warn!(
            ctx,
            "xdp drop reason={} side={} ifindex={}", reason, side, ifindex
        ),
        drop_event_level::INFO => info!(
            ctx,
            "xdp drop reason={} side={} ifindex={}", reason, side, ifindex
        ),
        _ => debug!(
            ctx,
            "xdp drop reason={} side={} ifindex={}", reason, side, ifindex
        ),
    }
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
    dont_fragment: bool,
    src: [u8; 4],
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
        dont_fragment: h[6] & 0x40 != 0,
        src: [h[12], h[13], h[14], h[15]],
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
    // The metadata travels in the frame itself, in front of the Ethernet
    // header (`bpf_xdp_adjust_head`), not in the XDP metadata area: some
    // kernels refuse `bpf_xdp_adjust_meta` at load time ("program of this
    // type cannot use helper"; Linux 6.18 as built for this project's CI
    // host), and the frame's own headroom works everywhere.
    const META: i32 = size_of::<XdpMeta>() as i32;
    // SAFETY: helper call on our own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -META) } != 0 {
        return XDP_PASS;
    }
    let data = ctx.data();
    if data + size_of::<XdpMeta>() > ctx.data_end() {
        return unsteer(ctx, stats);
    }
    // SAFETY: [data, data + 16) was just checked against data_end.
    unsafe {
        (data as *mut XdpMeta).write_unaligned(XdpMeta {
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
        Err(_) => unsteer(ctx, stats),
    }
}

/// No socket took the frame: takes the metadata off again and passes the
/// frame to the kernel as it came.
#[inline(always)]
fn unsteer(ctx: &XdpContext, stats: Option<*mut TunnelStats>) -> Verdict {
    if let Some(s) = stats {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { (*s).no_socket += 1 };
    }
    // SAFETY: helper call on our own context; it only moves `data` back
    // over the 16 bytes added in `steer`.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, size_of::<XdpMeta>() as i32) } != 0 {
        return XDP_DROP;
    }
    XDP_PASS
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

/// The inbound SA of `spi`: its slot, else `SA_IN` if anything is there.
#[inline(always)]
fn inbound_sa(spi: u32) -> Option<SaInValue> {
    if spi != 0 {
        if let Some(slot) = SA_SLOTS.get(sa_slots::slot(spi)) {
            // The SPI first: the daemon writes it after the other fields
            // and clears it before them.
            // SAFETY: a valid reference to the map value.
            let owner = unsafe { core::ptr::read_volatile(&slot.spi) };
            if owner == spi {
                // SAFETY: as above; volatile, so read after the SPI.
                return Some(unsafe { core::ptr::read_volatile(slot) }.value());
            }
        }
    }
    if *SA_IN_SPILL.get(0)? == 0 {
        return None;
    }
    // SAFETY: the value is copied out at once; a concurrent update by
    // userspace can at worst give a stale window edge, which only makes the
    // early check weaker (userspace checks again after authentication).
    (unsafe { SA_IN.get(SaInKey { spi }) }).copied()
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
    let Some(sa) = inbound_sa(spi) else {
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
    let v = wan_ingress_verdict(&ctx);
    if v == XDP_DROP || v == XDP_TX {
        log_drop(&ctx, true);
    }
    v
}

/// `wan_ingress` without the drop-event hook: `bench xdp` measures the
/// hook's cost against it. Loaded, never attached.
#[xdp]
pub fn wan_ingress_no_events(ctx: XdpContext) -> u32 {
    wan_ingress_verdict(&ctx)
}

#[inline(always)]
fn wan_ingress_verdict(ctx: &XdpContext) -> u32 {
    // The body below was written against an owned context.
    let ctx = XdpContext::new(ctx.ctx);
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

mod routes;
mod too_big;
use routes::*;
use too_big::*;

/// LAN ingress: steer cleartext whose destination is routed into a tunnel
/// that is up; answer what is too big for that tunnel with the ICMP error;
/// pass misses and expiring TTLs to the kernel.
#[xdp]
pub fn lan_ingress(ctx: XdpContext) -> u32 {
    let v = lan_ingress_verdict(&ctx);
    if v == XDP_DROP || v == XDP_TX {
        log_drop(&ctx, false);
    }
    v
}

#[inline(always)]
fn lan_ingress_verdict(ctx: &XdpContext) -> u32 {
    // The body below was written against an owned context.
    let ctx = XdpContext::new(ctx.ctx);
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
            // Expiring TTL: the kernel answers with ICMP.
            if ip.ttl <= 1 {
                return XDP_PASS;
            }
            let Some((tunnel_id, t)) = lan_route(route_v4(ip.dst)) else {
                return XDP_PASS;
            };
            let mtu = t.effective_inner_mtu();
            if ip.l4_off - l3 + ip.l4_len > mtu {
                // Without DF the kernel fragments into the TUN (same MTU).
                if !ip.dont_fragment {
                    return XDP_PASS;
                }
                return too_big_v4(&ctx, l3, &ip, mtu);
            }
            steer(&ctx, tunnel_id, SA_INDEX_NONE, Direction::Outbound)
        }
        ETH_P_IPV6 => {
            let ip = match parse_ipv6(&ctx, l3) {
                Ok(ip) => ip,
                Err(v) => return v,
            };
            if ip.hop_limit <= 1 {
                return XDP_PASS;
            }
            let Some((tunnel_id, t)) = lan_route(route_v6(ip.dst)) else {
                return XDP_PASS;
            };
            let mtu = t.effective_inner_mtu();
            if IPV6_HLEN + ip.payload_len > mtu {
                return too_big_v6(&ctx, l3, &ip, mtu);
            }
            steer(&ctx, tunnel_id, SA_INDEX_NONE, Direction::Outbound)
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
