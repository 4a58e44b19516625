//! Packet sizes through a tunnel, in userspace: the inner MTU a tunnel
//! carries (from the WAN MTU, the suite and the outer family), the per-tunnel
//! settings the workers and the slow path read per packet ([`TunnelParams`]),
//! TCP MSS clamping on SYN and SYN-ACK, and the ICMP "too big" errors the
//! workers send back through a tunnel (with their rate limiter). The XDP
//! program answers LAN-side packets itself (`gateway-ebpf`); this module is
//! the same rule for what only userspace sees: decrypted packets, and TCP
//! options. Pure functions over byte slices: no I/O, no allocation.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use gateway_common::{
    icmp_allow, LanConfig, ICMP4_QUOTE_LEN, ICMP6_QUOTE_LEN, LAN_HAS_V4, LAN_HAS_V6,
    LAN_REPLY_REDIRECT, MIN_INNER_MTU, TUNNELS_MAX_ENTRIES, TUNNEL_INNER_MTU,
};
use gateway_esp::checksum::{add, finish, replace16};
use gateway_esp::suite::ESP_HEADER_LEN;
use gateway_esp::Suite;

const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;
const TCP_HLEN: usize = 20;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const TCP_SYN: u8 = 0x02;
const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_MSS: u8 = 2;

/// The largest inner IP packet whose ESP packet fits `wan_mtu`: outer IP
/// (+ UDP when encapsulated) + ESP header + IV + the inner packet and its
/// 2-byte trailer padded to the cipher's alignment + ICV. Never below
/// [`MIN_INNER_MTU`] (a WAN that small cannot carry IPv6 through us at all;
/// the packets are then dropped by the worker's WAN MTU check, counted).
pub fn inner_mtu(suite: Suite, outer_v6: bool, udp_encap: bool, wan_mtu: u32) -> u32 {
    let fixed = if outer_v6 { IPV6_HLEN } else { IPV4_HLEN }
        + if udp_encap { UDP_HLEN } else { 0 }
        + ESP_HEADER_LEN
        + suite.iv_len()
        + suite.icv_len();
    let align = suite.pad_align();
    let room = (wan_mtu as usize).saturating_sub(fixed) / align * align;
    let mtu = room
        .saturating_sub(2)
        .clamp(MIN_INNER_MTU, usize::from(u16::MAX));
    mtu as u32
}

/// TCP MSS that fits `mtu` for this inner family (no IP or TCP options).
pub fn mss_for(mtu: usize, v6: bool) -> u16 {
    let h = if v6 { IPV6_HLEN } else { IPV4_HLEN } + TCP_HLEN;
    u16::try_from(mtu.saturating_sub(h)).unwrap_or(u16::MAX)
}

/// Bit of a [`TunnelParams`] slot: MSS clamping is off for the tunnel (so
/// that an all-zero slot means "default MTU, clamping on").
const NO_CLAMP: u32 = 1 << 16;

/// Per-tunnel inner MTU and MSS clamping switch, read per packet by the
/// workers and the slow path (relaxed atomics: a packet that sees the old
/// value during a change is harmless). Tunnel ids beyond the array (only
/// possible with the fast path off) get the defaults.
#[derive(Debug)]
pub struct TunnelParams {
    slots: Box<[AtomicU32]>,
    clamped: AtomicU64,
    /// The VPN gateways' bandwidth, per tunnel (any tunnel id).
    police: crate::dataplane::police::Policers,
}

impl Default for TunnelParams {
    fn default() -> Self {
        Self {
            slots: (0..TUNNELS_MAX_ENTRIES)
                .map(|_| AtomicU32::new(0))
                .collect(),
            clamped: AtomicU64::new(0),
            police: Default::default(),
        }
    }
}

impl TunnelParams {
    fn slot(&self, tunnel: u32) -> Option<&AtomicU32> {
        self.slots.get(tunnel as usize)
    }

    /// The policers of the VPN gateways' bandwidth.
    pub fn police(&self) -> &crate::dataplane::police::Policers {
        &self.police
    }

    /// Sets a tunnel's inner MTU (0: the default).
    pub fn set_inner_mtu(&self, tunnel: u32, mtu: u32) {
        if let Some(s) = self.slot(tunnel) {
            let mtu = mtu.min(u32::from(u16::MAX));
            let _ = s.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v & !0xffff | mtu)
            });
        }
    }

    /// Turns MSS clamping on or off for a tunnel.
    pub fn set_mss_clamp(&self, tunnel: u32, on: bool) {
        if let Some(s) = self.slot(tunnel) {
            if on {
                s.fetch_and(!NO_CLAMP, Ordering::Relaxed);
            } else {
                s.fetch_or(NO_CLAMP, Ordering::Relaxed);
            }
        }
    }

    /// Back to the defaults (the tunnel id may be reused).
    pub fn reset(&self, tunnel: u32) {
        if let Some(s) = self.slot(tunnel) {
            s.store(0, Ordering::Relaxed);
        }
    }

    /// The tunnel's inner MTU.
    pub fn inner_mtu(&self, tunnel: u32) -> usize {
        match self
            .slot(tunnel)
            .map(|s| s.load(Ordering::Relaxed) & 0xffff)
        {
            Some(m) if m != 0 => m as usize,
            _ => TUNNEL_INNER_MTU,
        }
    }

    /// Whether MSS clamping is on for the tunnel.
    pub fn mss_clamp(&self, tunnel: u32) -> bool {
        self.slot(tunnel)
            .is_none_or(|s| s.load(Ordering::Relaxed) & NO_CLAMP == 0)
    }

    /// Clamps the MSS of `p` (an inner IP packet of `tunnel`) if it is a
    /// TCP SYN and clamping is on; counts it. Returns true if rewritten.
    pub fn clamp(&self, tunnel: u32, p: &mut [u8]) -> bool {
        if !self.mss_clamp(tunnel) {
            return false;
        }
        let done = clamp_mss(p, self.inner_mtu(tunnel));
        if done {
            self.clamped.fetch_add(1, Ordering::Relaxed);
        }
        done
    }

    /// SYNs and SYN-ACKs whose MSS was lowered, all tunnels and paths.
    pub fn clamped_syns(&self) -> u64 {
        self.clamped.load(Ordering::Relaxed)
    }
}

/// Lowers the MSS option of a TCP SYN (or SYN-ACK) in the IP packet `p` to
/// what fits `mtu`, updating the TCP checksum incrementally. Packets that
/// are not TCP, not a SYN, fragments, IPv6 with extension headers, without
/// an MSS option, or already at or below the value are left alone; so is
/// anything malformed (options are walked within the header only). Returns
/// true if it rewrote the option.
pub fn clamp_mss(p: &mut [u8], mtu: usize) -> bool {
    let (l4, v6) = match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= IPV4_HLEN => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let frag = u16::from_be_bytes([p[6], p[7]]) & 0x3fff;
            if p[9] != IPPROTO_TCP || ihl < IPV4_HLEN || frag != 0 {
                return false;
            }
            (ihl, false)
        }
        Some(6) if p.len() >= IPV6_HLEN => {
            if p[6] != IPPROTO_TCP {
                return false;
            }
            (IPV6_HLEN, true)
        }
        _ => return false,
    };
    let Some(tcp) = p.get_mut(l4..) else {
        return false;
    };
    if tcp.len() < TCP_HLEN || tcp[13] & TCP_SYN == 0 {
        return false;
    }
    let doff = usize::from(tcp[12] >> 4) * 4;
    if doff < TCP_HLEN || doff > tcp.len() {
        return false;
    }
    let max = mss_for(mtu, v6);
    let mut i = TCP_HLEN;
    while i < doff {
        match tcp[i] {
            TCPOPT_EOL => return false,
            TCPOPT_NOP => i += 1,
            kind => {
                let Some(&len) = tcp.get(i + 1) else {
                    return false;
                };
                let len = usize::from(len);
                if len < 2 || i + len > doff {
                    return false;
                }
                if kind == TCPOPT_MSS && len == 4 {
                    let old = u16::from_be_bytes([tcp[i + 2], tcp[i + 3]]);
                    if old <= max {
                        return false;
                    }
                    tcp[i + 2..i + 4].copy_from_slice(&max.to_be_bytes());
                    let hc = u16::from_be_bytes([tcp[16], tcp[17]]);
                    // At an odd offset the value straddles two checksum
                    // words: it counts byte-swapped (a swap is a multiply
                    // by 256 modulo 0xffff, so the update stays linear).
                    let c = if (i + 2).is_multiple_of(2) {
                        replace16(hc, old, max)
                    } else {
                        replace16(hc, old.swap_bytes(), max.swap_bytes())
                    };
                    tcp[16..18].copy_from_slice(&c.to_be_bytes());
                    return true;
                }
                i += len;
            }
        }
    }
    false
}

/// Whether the IP packet `p` is too big for `mtu` and must be answered with
/// an ICMP error (`Some(true)`), fragmented by the kernel (`Some(false)`:
/// IPv4 without DF), or fits (`None`).
pub fn too_big(p: &[u8], mtu: usize) -> Option<bool> {
    if p.len() <= mtu {
        return None;
    }
    match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= IPV4_HLEN => Some(p[6] & 0x40 != 0),
        Some(6) => Some(true),
        _ => None,
    }
}

/// Builds in `out` the ICMP "fragmentation needed" (IPv4, RFC 792 / 1191)
/// or ICMPv6 "packet too big" (RFC 4443 §3.2) error about `orig`, an IP
/// packet that did not fit `mtu`, from `src` (the gateway's address of the
/// family) to `orig`'s source, quoting as much of `orig` as keeps the error
/// within 576 / 1280 bytes. Returns the error's length, or `None` when no
/// error may be sent: `orig` malformed, its source not unicast, `orig`
/// itself an ICMP error, or `out` too small.
pub fn build_too_big(
    orig: &[u8],
    mtu: usize,
    src_v4: Option<Ipv4Addr>,
    src_v6: Option<Ipv6Addr>,
    out: &mut [u8],
) -> Option<usize> {
    match orig.first()? >> 4 {
        4 => {
            let src = src_v4?;
            if orig.len() < IPV4_HLEN {
                return None;
            }
            let dst: [u8; 4] = orig[12..16].try_into().ok()?;
            let d = Ipv4Addr::from(dst);
            if d.is_unspecified() || d.is_loopback() || d.is_multicast() || d.is_broadcast() {
                return None;
            }
            let ihl = usize::from(orig[0] & 0x0f) * 4;
            let first_fragment = u16::from_be_bytes([orig[6], orig[7]]) & 0x1fff == 0;
            if orig[9] == IPPROTO_ICMP
                && first_fragment
                && orig
                    .get(ihl)
                    .is_some_and(|t| matches!(t, 3 | 4 | 5 | 11 | 12))
            {
                return None;
            }
            let quote = orig.len().min(ICMP4_QUOTE_LEN);
            let total = IPV4_HLEN + 8 + quote;
            let out = out.get_mut(..total)?;
            out[..IPV4_HLEN + 8].fill(0);
            out[0] = 0x45;
            out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            out[8] = 64;
            out[9] = IPPROTO_ICMP;
            out[12..16].copy_from_slice(&src.octets());
            out[16..20].copy_from_slice(&dst);
            let c = finish(add(0, &out[..IPV4_HLEN]));
            out[10..12].copy_from_slice(&c.to_be_bytes());
            let icmp = &mut out[IPV4_HLEN..];
            icmp[0] = 3;
            icmp[1] = 4;
            icmp[6..8].copy_from_slice(&(mtu.min(usize::from(u16::MAX)) as u16).to_be_bytes());
            icmp[8..].copy_from_slice(&orig[..quote]);
            let c = finish(add(0, icmp));
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            Some(total)
        }
        6 => {
            let src = src_v6?;
            if orig.len() < IPV6_HLEN {
                return None;
            }
            let dst: [u8; 16] = orig[8..24].try_into().ok()?;
            let d = Ipv6Addr::from(dst);
            if d.is_unspecified() || d.is_multicast() || d.is_loopback() {
                return None;
            }
            if orig[6] == IPPROTO_ICMPV6 && orig.get(IPV6_HLEN).is_some_and(|t| *t < 128) {
                return None;
            }
            let quote = orig.len().min(ICMP6_QUOTE_LEN);
            let plen = 8 + quote;
            let out = out.get_mut(..IPV6_HLEN + plen)?;
            out[..IPV6_HLEN + 8].fill(0);
            out[0] = 0x60;
            out[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
            out[6] = IPPROTO_ICMPV6;
            out[7] = 64;
            out[8..24].copy_from_slice(&src.octets());
            out[24..40].copy_from_slice(&dst);
            let pseudo = add(0, &out[8..40]) + plen as u64 + u64::from(IPPROTO_ICMPV6);
            let icmp = &mut out[IPV6_HLEN..];
            icmp[0] = 2;
            icmp[4..8].copy_from_slice(&(mtu as u32).to_be_bytes());
            icmp[8..].copy_from_slice(&orig[..quote]);
            let c = finish(add(pseudo, icmp));
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            Some(IPV6_HLEN + plen)
        }
        _ => None,
    }
}

/// How `lan_ingress` sends its ICMP errors back out of the LAN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LanReply {
    /// `XDP_TX`: what every XDP driver of a NIC implements.
    Tx,
    /// A redirect to the LAN interface itself: for a veth LAN, where
    /// `XDP_TX` frames wait in the peer's ring unless the peer runs an XDP
    /// program (see `LAN_REPLY_REDIRECT` in `gateway-common`).
    Redirect,
}

impl LanReply {
    /// The way that works on a LAN interface whose driver is `driver`
    /// (`ethtool -i`).
    pub fn for_driver(driver: &str) -> Self {
        if driver == "veth" {
            Self::Redirect
        } else {
            Self::Tx
        }
    }
}

/// The `LAN_CONFIG` value for `lan_ingress`: our LAN addresses (the
/// sources of its ICMP errors), the rate limit, `per_second` errors per
/// source with bursts of `burst`, and how the errors leave.
pub fn lan_config(
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
    per_second: u32,
    burst: u32,
    reply: LanReply,
) -> LanConfig {
    let interval = 1_000_000_000 / u64::from(per_second.max(1));
    LanConfig {
        flags: if v4.is_some() { LAN_HAS_V4 } else { 0 }
            | if v6.is_some() { LAN_HAS_V6 } else { 0 }
            | match reply {
                LanReply::Tx => 0,
                LanReply::Redirect => LAN_REPLY_REDIRECT,
            },
        addr_v4: v4.map_or([0; 4], |a| a.octets()),
        addr_v6: v6.map_or([0; 16], |a| a.octets()),
        icmp_interval_ns: interval,
        icmp_burst_ns: interval * u64::from(burst.max(1)),
    }
}

/// Slots of a worker's [`IcmpLimiter`] (sources hash into them; two
/// sources sharing a slot share a bucket, which only limits harder).
const LIMITER_SLOTS: usize = 256;

/// The workers' ICMP rate limit: the token bucket of `lan_ingress` (same
/// GCRA rule, [`icmp_allow`]) per source, in a fixed table per worker.
#[derive(Debug)]
pub struct IcmpLimiter {
    interval_ns: u64,
    burst_ns: u64,
    slots: Box<[(u128, u64)]>,
}

impl IcmpLimiter {
    /// `per_second` errors per source, bursts of `burst`.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let interval_ns = 1_000_000_000 / u64::from(per_second.max(1));
        Self {
            interval_ns,
            burst_ns: interval_ns * u64::from(burst.max(1)),
            slots: vec![(u128::MAX, 0); LIMITER_SLOTS].into_boxed_slice(),
        }
    }

    /// Whether an error to `source` may be sent at `now_ns`.
    pub fn allow(&mut self, source: u128, now_ns: u64) -> bool {
        let h = (source ^ (source >> 64)) as u64;
        let i = (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize % LIMITER_SLOTS;
        let slot = &mut self.slots[i];
        let tat = if slot.0 == source { slot.1 } else { 0 };
        match icmp_allow(tat, now_ns, self.interval_ns, self.burst_ns) {
            Some(t) => {
                *slot = (source, t);
                true
            }
            None => false,
        }
    }
}

/// The source address of an IP packet as a limiter key.
pub fn source_key(p: &[u8]) -> Option<u128> {
    match p.first()? >> 4 {
        4 => {
            let a: [u8; 4] = p.get(12..16)?.try_into().ok()?;
            Some(u128::from(u32::from_be_bytes(a)))
        }
        6 => {
            let a: [u8; 16] = p.get(8..24)?.try_into().ok()?;
            Some(u128::from_be_bytes(a))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_esp::checksum::fold;
    use gateway_esp::{Encryption, Integrity};

    #[test]
    fn veth_lan_replies_by_redirect_nics_by_xdp_tx() {
        assert_eq!(LanReply::for_driver("veth"), LanReply::Redirect);
        for nic in ["mlx5_core", "ixgbe", "virtio_net", ""] {
            assert_eq!(LanReply::for_driver(nic), LanReply::Tx, "{nic}");
        }
        let v4 = Some(Ipv4Addr::new(198, 51, 100, 1));
        let c = lan_config(v4, None, 10, 5, LanReply::Redirect);
        assert_eq!(c.flags, LAN_HAS_V4 | LAN_REPLY_REDIRECT);
        assert_eq!(c.icmp_burst_ns, 5 * c.icmp_interval_ns);
        let c = lan_config(v4, None, 10, 5, LanReply::Tx);
        assert_eq!(c.flags, LAN_HAS_V4);
    }

    fn tcp_ok(p: &[u8], l4: usize, v6: bool) -> bool {
        let len = (p.len() - l4) as u64;
        let pseudo = if v6 {
            add(0, &p[8..40]) + 6 + len
        } else {
            add(0, &p[12..20]) + 6 + len
        };
        fold(add(pseudo, &p[l4..])) == 0xffff
    }

    fn set_tcp_checksum(p: &mut [u8], l4: usize, v6: bool) {
        p[l4 + 16] = 0;
        p[l4 + 17] = 0;
        let len = (p.len() - l4) as u64;
        let pseudo = if v6 {
            add(0, &p[8..40]) + 6 + len
        } else {
            add(0, &p[12..20]) + 6 + len
        };
        let c = finish(add(pseudo, &p[l4..]));
        p[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
    }

    /// A TCP segment with `flags` and `options` (padded by the caller).
    fn tcp(v6: bool, flags: u8, options: &[u8]) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0);
        let l4 = if v6 { 40 } else { 20 };
        let tcp_len = 20 + options.len();
        let mut p = vec![0u8; l4 + tcp_len];
        if v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
            p[6] = 6;
            p[7] = 64;
            p[8..24].copy_from_slice(&"2001:db8:100::10".parse::<Ipv6Addr>().unwrap().octets());
            p[24..40].copy_from_slice(&"2001:db8:200::10".parse::<Ipv6Addr>().unwrap().octets());
        } else {
            p[0] = 0x45;
            let total = p.len() as u16;
            p[2..4].copy_from_slice(&total.to_be_bytes());
            p[6] = 0x40;
            p[8] = 64;
            p[9] = 6;
            p[12..16].copy_from_slice(&[198, 51, 100, 10]);
            p[16..20].copy_from_slice(&[203, 0, 113, 10]);
        }
        let t = &mut p[l4..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        t[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        t[12] = ((tcp_len / 4) as u8) << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&64240u16.to_be_bytes());
        t[20..].copy_from_slice(options);
        set_tcp_checksum(&mut p, l4, v6);
        p
    }

    fn mss_of(p: &[u8], l4: usize, at: usize) -> u16 {
        u16::from_be_bytes([p[l4 + 20 + at + 2], p[l4 + 20 + at + 3]])
    }

    #[test]
    fn inner_mtu_follows_suite_family_and_wan_mtu() {
        let cbc512 = Suite::new(Encryption::Aes256, Some(Integrity::Sha512)).unwrap();
        let gcm = Suite::new(Encryption::Aes256Gcm, None).unwrap();
        // The worst case the old constant was sized for.
        assert_eq!(inner_mtu(cbc512, true, true, 1500), 1390);
        assert_eq!(
            inner_mtu(cbc512, true, true, 1500) as usize,
            TUNNEL_INNER_MTU
        );
        // GCM over IPv4 with NAT-T: 20 + 8 + 8 + 8 + 16 = 60 bytes, 4-byte
        // alignment: 1440 - 2.
        assert_eq!(inner_mtu(gcm, false, true, 1500), 1438);
        assert_eq!(inner_mtu(gcm, false, false, 1500), 1446);
        // PPPoE.
        assert_eq!(inner_mtu(gcm, false, true, 1492), 1430);
        // Jumbo WAN.
        assert_eq!(inner_mtu(gcm, true, true, 9000), 8918);
        // Never below IPv6's minimum.
        assert_eq!(inner_mtu(gcm, false, true, 1000), 1280);
        // Each value is the largest that fits: one byte more does not.
        for (s, v6, udp, wan) in [
            (cbc512, true, true, 1500u32),
            (gcm, false, true, 1500),
            (gcm, true, false, 1480),
        ] {
            let m = inner_mtu(s, v6, udp, wan) as usize;
            let outer = |n: usize| {
                let fixed = if v6 { 40 } else { 20 }
                    + if udp { 8 } else { 0 }
                    + 8
                    + s.iv_len()
                    + s.icv_len();
                fixed + (n + 2).div_ceil(s.pad_align()) * s.pad_align()
            };
            assert!(outer(m) <= wan as usize);
            assert!(outer(m + 1) > wan as usize);
        }
    }

    #[test]
    fn syn_mss_is_clamped_with_a_valid_checksum() {
        // MSS, NOP, window scale, SACK permitted, timestamps: what Linux sends.
        let opts = [
            2, 4, 0x05, 0xb4, 1, 3, 3, 7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0,
        ];
        for v6 in [false, true] {
            let l4 = if v6 { 40 } else { 20 };
            for flags in [0x02u8, 0x12] {
                let mut p = tcp(v6, flags, &opts);
                assert!(tcp_ok(&p, l4, v6));
                assert!(clamp_mss(&mut p, 1390));
                assert_eq!(mss_of(&p, l4, 0), if v6 { 1330 } else { 1350 });
                assert!(tcp_ok(&p, l4, v6), "v6 {v6} flags {flags:#x}");
                // Idempotent: at the value, left alone.
                assert!(!clamp_mss(&mut p, 1390));
            }
        }
    }

    #[test]
    fn mss_at_an_odd_offset_keeps_the_checksum_valid() {
        // NOP then MSS at offset 1, padded: the word boundaries shift.
        let opts = [1, 2, 4, 0x23, 0x28, 1, 1, 1];
        let mut p = tcp(false, 0x02, &opts);
        assert!(clamp_mss(&mut p, 1390));
        assert_eq!(u16::from_be_bytes([p[20 + 20 + 3], p[20 + 20 + 4]]), 1350);
        assert!(tcp_ok(&p, 20, false));
    }

    #[test]
    fn clamp_leaves_other_packets_alone() {
        let opts = [2, 4, 0x05, 0xb4];
        // Not a SYN.
        let mut p = tcp(false, 0x10, &opts);
        let before = p.clone();
        assert!(!clamp_mss(&mut p, 1390));
        assert_eq!(p, before);
        // Small MSS already.
        let mut p = tcp(false, 0x02, &[2, 4, 0x02, 0x18]);
        assert!(!clamp_mss(&mut p, 1390));
        // No MSS option.
        let mut p = tcp(false, 0x02, &[1, 1, 1, 0]);
        assert!(!clamp_mss(&mut p, 1390));
        // A fragment.
        let mut p = tcp(false, 0x02, &opts);
        p[6] = 0x20;
        assert!(!clamp_mss(&mut p, 1390));
        // An option running past the header.
        let mut p = tcp(false, 0x02, &[3, 9, 0, 0]);
        assert!(!clamp_mss(&mut p, 1390));
    }

    #[test]
    fn clamp_survives_hostile_input() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = (rng % 100) as usize;
            let mut b: Vec<u8> = (0..len).map(|i| (rng >> (i % 56)) as u8).collect();
            if len > 0 {
                b[0] = if rng & 1 == 0 { 0x45 } else { 0x60 };
            }
            if len > 9 {
                b[9] = 6;
                b[6] = if rng & 2 == 0 { 6 } else { 0 };
            }
            let _ = clamp_mss(&mut b, 1390);
            let _ = too_big(&b, 40);
            let mut out = [0u8; 1280];
            let _ = build_too_big(
                &b,
                1390,
                Some(Ipv4Addr::new(198, 51, 100, 1)),
                Some(Ipv6Addr::LOCALHOST),
                &mut out,
            );
        }
    }

    #[test]
    fn params_default_to_clamping_at_the_default_mtu() {
        let t = TunnelParams::default();
        assert!(t.mss_clamp(3));
        assert_eq!(t.inner_mtu(3), TUNNEL_INNER_MTU);
        t.set_inner_mtu(3, 1438);
        t.set_mss_clamp(3, false);
        assert_eq!(t.inner_mtu(3), 1438);
        assert!(!t.mss_clamp(3));
        let mut p = tcp(false, 0x02, &[2, 4, 0x05, 0xb4]);
        assert!(!t.clamp(3, &mut p));
        t.set_mss_clamp(3, true);
        assert_eq!(t.inner_mtu(3), 1438);
        assert!(t.clamp(3, &mut p));
        assert_eq!(mss_of(&p, 20, 0), 1398);
        assert_eq!(t.clamped_syns(), 1);
        t.reset(3);
        assert!(t.mss_clamp(3));
        assert_eq!(t.inner_mtu(3), TUNNEL_INNER_MTU);
        // Out of range: defaults, no panic.
        assert!(t.mss_clamp(u32::MAX));
    }

    fn big_v4(df: bool, len: usize) -> Vec<u8> {
        let mut p = vec![0xabu8; len];
        p[0] = 0x45;
        p[1] = 0;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[6] = if df { 0x40 } else { 0 };
        p[7] = 0;
        p[8] = 63;
        p[9] = 17;
        p[12..16].copy_from_slice(&[203, 0, 113, 10]);
        p[16..20].copy_from_slice(&[198, 51, 100, 10]);
        p
    }

    #[test]
    fn icmp4_frag_needed_quotes_548_bytes_with_valid_checksums() {
        let orig = big_v4(true, 1500);
        assert_eq!(too_big(&orig, 1500), None);
        assert_eq!(too_big(&orig, 1400), Some(true));
        assert_eq!(too_big(&big_v4(false, 1500), 1400), Some(false));
        let mut out = [0u8; 2048];
        let n = build_too_big(
            &orig,
            1400,
            Some(Ipv4Addr::new(198, 51, 100, 1)),
            None,
            &mut out,
        )
        .unwrap();
        assert_eq!(n, 576);
        let e = &out[..n];
        assert_eq!(fold(add(0, &e[..20])), 0xffff, "IP header checksum");
        assert_eq!(fold(add(0, &e[20..])), 0xffff, "ICMP checksum");
        assert_eq!(&e[12..16], &[198, 51, 100, 1]);
        assert_eq!(&e[16..20], &[203, 0, 113, 10]);
        assert_eq!((e[20], e[21]), (3, 4));
        assert_eq!(u16::from_be_bytes([e[26], e[27]]), 1400);
        assert_eq!(&e[28..], &orig[..548]);
        // No IPv4 source configured, non-unicast source, ICMP error: none.
        assert!(build_too_big(&orig, 1400, None, None, &mut out).is_none());
        let mut m = orig.clone();
        m[12] = 224;
        assert!(build_too_big(&m, 1400, Some(Ipv4Addr::LOCALHOST), None, &mut out).is_none());
        let mut m = orig.clone();
        m[9] = 1;
        m[20] = 3;
        assert!(build_too_big(&m, 1400, Some(Ipv4Addr::LOCALHOST), None, &mut out).is_none());
        m[20] = 8;
        assert!(build_too_big(&m, 1400, Some(Ipv4Addr::LOCALHOST), None, &mut out).is_some());
    }

    #[test]
    fn icmp6_packet_too_big_fits_1280_with_a_valid_checksum() {
        let mut orig = vec![0x5au8; 1500];
        orig[0] = 0x60;
        orig[4..6].copy_from_slice(&1460u16.to_be_bytes());
        orig[6] = 17;
        let s: Ipv6Addr = "2001:db8:200::10".parse().unwrap();
        orig[8..24].copy_from_slice(&s.octets());
        let ours: Ipv6Addr = "2001:db8:100::1".parse().unwrap();
        let mut out = [0u8; 2048];
        let n = build_too_big(&orig, 1390, None, Some(ours), &mut out).unwrap();
        assert_eq!(n, 1280);
        let e = &out[..n];
        let pseudo = add(0, &e[8..40]) + (n as u64 - 40) + 58;
        assert_eq!(fold(add(pseudo, &e[40..])), 0xffff);
        assert_eq!(&e[24..40], &s.octets());
        assert_eq!(e[40], 2);
        assert_eq!(u32::from_be_bytes([e[44], e[45], e[46], e[47]]), 1390);
        assert_eq!(&e[48..], &orig[..1232]);
        // About an ICMPv6 error: none.
        orig[6] = 58;
        orig[40] = 1;
        assert!(build_too_big(&orig, 1390, None, Some(ours), &mut out).is_none());
    }

    #[test]
    fn limiter_allows_bursts_per_source() {
        let mut l = IcmpLimiter::new(10, 2);
        let (a, b) = (1u128, 2u128);
        assert!(l.allow(a, 1_000_000_000));
        assert!(l.allow(a, 1_000_000_000));
        assert!(!l.allow(a, 1_000_000_000));
        // Another source has its own bucket.
        assert!(l.allow(b, 1_000_000_000));
        // 100 ms later (the rate is 10/s): one more.
        assert!(l.allow(a, 1_100_000_000));
        assert!(!l.allow(a, 1_100_000_000));
    }
}
