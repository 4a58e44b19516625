#![cfg_attr(not(test), no_std)]
//! The kernel ↔ userspace contract of the XDP fast path: every map key and
//! value, the metadata the XDP programs place in front of a steered frame,
//! the drop reasons and the constants both sides agree on. Nothing here does
//! I/O; `gateway-ebpf` and `gateway-user` both compile this crate, so a
//! layout change is a change of both sides at once.
//!
//! Every map type is `#[repr(C)]`, has explicit padding fields, uses `u32`
//! flags instead of `bool`, and has its size asserted at compile time.
//! Multi-byte integers in map keys and values are in host byte order unless a
//! field says otherwise; addresses are raw network-order bytes.
//!
//! # The rule for malformed input
//!
//! The XDP programs validate only the headers they consume, and decide as
//! follows (the kernel's own input path would drop the same malformed
//! packets, so dropping them early only adds a counted reason):
//!
//! * Frames that cannot be recognised as IPv4 or IPv6 — shorter than an
//!   Ethernet header, a truncated 802.1Q tag, an unknown EtherType (ARP,
//!   LLDP, ...), a second VLAN tag — are **`XDP_PASS`**: they are not ours
//!   to judge.
//! * An IPv4 header that is truncated, has a version other than 4, an IHL
//!   below 5, or a total length smaller than its header or larger than the
//!   frame is **`XDP_DROP`** with [`DropReason::Ipv4HeaderTruncated`],
//!   [`DropReason::Ipv4BadVersion`], [`DropReason::Ipv4BadIhl`] or
//!   [`DropReason::Ipv4BadTotalLength`]. The IPv6 counterparts (truncated
//!   fixed header, version, payload length larger than the frame, an
//!   extension header running past the payload) drop with
//!   [`DropReason::Ipv6HeaderTruncated`], [`DropReason::Ipv6BadVersion`],
//!   [`DropReason::Ipv6BadPayloadLength`],
//!   [`DropReason::Ipv6ExtHeaderTruncated`]. Lengths are taken from the IP
//!   header, never from the frame, because Ethernet pads short frames.
//! * IP fragments (IPv4 MF or offset, IPv6 Fragment header), IPv6 Routing
//!   headers, extension chains longer than [`MAX_IPV6_EXT_HEADERS`], and
//!   protocols other than ESP and UDP are **`XDP_PASS`**.
//! * On `wan_ingress`, only ESP (protocol 50) and UDP to port
//!   [`NAT_T_PORT`] are looked at further, and every drop below is only for
//!   packets addressed to one of `LOCAL_ADDRS` (anything else is
//!   **`XDP_PASS`**: not ours to judge). UDP whose header does not fit in
//!   the IP payload drops with [`DropReason::UdpHeaderTruncated`]; UDP to
//!   port 4500 whose length field is below 8 or beyond the IP payload with
//!   [`DropReason::UdpBadLength`] (other ports, IKE's 500 included, are
//!   passed unexamined). A UDP 4500 payload shorter than 4 bytes (the
//!   RFC 3948 NAT-keepalive is one byte 0xFF) or starting with the zero
//!   non-ESP marker (IKE) is **`XDP_PASS`**. ESP shorter than SPI +
//!   sequence number drops with [`DropReason::EspHeaderTruncated`]; an
//!   unknown SPI with [`DropReason::UnknownSpi`]; a sequence number left of
//!   the SA's replay window (non-ESN SAs only: with ESN the low 32 bits
//!   alone never prove a replay, RFC 4303 Appendix A) with
//!   [`DropReason::ReplayLeftOfWindow`]. ESP of a known SPI to an address
//!   that is not ours is **`XDP_PASS`**.
//! * Invariant the agent keeps: a tunnel's `TunnelValue::local` is one of
//!   `LOCAL_ADDRS`. `wan_ingress` checks the destination of an SA's packet
//!   against it first (an array lookup) and asks `LOCAL_ADDRS` (a hash
//!   lookup) only on a mismatch, so a missing `TUNNELS` slot only costs
//!   speed, never correctness.
//! * On `lan_ingress`, a TTL / hop limit ≤ 1, a route miss and a tunnel that
//!   is down are **`XDP_PASS`** (the kernel answers with ICMP or routes
//!   through the slow path).
//! * On `lan_ingress`, a packet routed into a tunnel that is up and larger
//!   than the tunnel's inner MTU ([`TunnelValue::inner_mtu`]) is answered
//!   by the program itself (**`XDP_TX`**, or **`XDP_REDIRECT`** to the
//!   same interface with [`LAN_REPLY_REDIRECT`]) with ICMP "fragmentation needed"
//!   (IPv4 with DF) or ICMPv6 "packet too big" (any IPv6) carrying that MTU,
//!   from the gateway's LAN address ([`LanConfig`]), counted as
//!   [`DropReason::PacketTooBig`]; past the per-source rate limit it drops
//!   with [`DropReason::PacketTooBigRateLimited`]. No reply is made for a
//!   source that is not unicast nor for an ICMP error; those drop with
//!   [`DropReason::PacketTooBigNoReply`]. An IPv4 packet without DF, a
//!   VLAN-tagged frame, and a family with no LAN address configured are
//!   **`XDP_PASS`**: the kernel fragments (or answers) through the tunnel's
//!   TUN, whose MTU is the same.
//! * A packet selected for the fast path whose receive queue has no AF_XDP
//!   socket in `XSKS` is **`XDP_PASS`** (slow path) and counted in
//!   [`TunnelStats::no_socket`].

use core::mem::size_of;

/// IKE (RFC 7296 §2).
pub const IKE_PORT: u16 = 500;
/// IKE and UDP-encapsulated ESP behind NAT (RFC 3948).
pub const NAT_T_PORT: u16 = 4500;
/// IP protocol number of ESP.
pub const IPPROTO_ESP: u8 = 50;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// At most this many IPv6 extension headers are walked before giving up
/// (`XDP_PASS`); keeps the program's loop bounded for the verifier.
pub const MAX_IPV6_EXT_HEADERS: u32 = 4;

/// Ethernet framing: the one definition for the XDP programs, the workers,
/// the test frame builders and the benchmarks' generators.
pub mod eth {
    /// An untagged Ethernet header.
    pub const ETH_HLEN: usize = 14;
    /// One 802.1Q tag.
    pub const VLAN_HLEN: usize = 4;
    pub const ETH_P_IP: u16 = 0x0800;
    pub const ETH_P_IPV6: u16 = 0x86dd;
    pub const ETH_P_ARP: u16 = 0x0806;
    pub const ETH_P_8021Q: u16 = 0x8100;
}

/// Map names, as declared by the `#[map]` statics of `gateway-ebpf`.
pub mod map_names {
    pub const SA_IN: &str = "SA_IN";
    /// Inbound SAs by the low bits of their SPI ([`crate::sa_slots`]).
    pub const SA_SLOTS: &str = "SA_SLOTS";
    /// How many inbound SAs are in `SA_IN` (not in a slot).
    pub const SA_IN_SPILL: &str = "SA_IN_SPILL";
    pub const TUNNELS: &str = "TUNNELS";
    /// The IPv4 route table's first level (DIR-24-8, see [`crate::route4`]).
    pub const ROUTES_V4_TBL24: &str = "ROUTES_V4_TBL24";
    /// Its second level: 256-entry groups for the /24s with longer prefixes.
    pub const ROUTES_V4_TBL8: &str = "ROUTES_V4_TBL8";
    /// The IPv6 routes: one hash of every prefix length ([`crate::route6`]).
    pub const ROUTES_V6: &str = "ROUTES_V6";
    /// The prefix lengths in use in `ROUTES_V6`, a bitmap.
    pub const ROUTES_V6_LENGTHS: &str = "ROUTES_V6_LENGTHS";
    pub const LOCAL_ADDRS: &str = "LOCAL_ADDRS";
    pub const XSKS: &str = "XSKS";
    pub const STATS: &str = "STATS";
    pub const DROPS: &str = "DROPS";
    pub const LAN_CONFIG: &str = "LAN_CONFIG";
    pub const ICMP_BUCKETS: &str = "ICMP_BUCKETS";
    /// Drop events' level (not pinned: each daemon sets it at start).
    pub const DROP_LOG: &str = "DROP_LOG";
    /// Every map the daemon pins (and unpins).
    pub const ALL: [&str; 14] = [
        SA_IN,
        SA_SLOTS,
        SA_IN_SPILL,
        TUNNELS,
        ROUTES_V4_TBL24,
        ROUTES_V4_TBL8,
        ROUTES_V6,
        ROUTES_V6_LENGTHS,
        LOCAL_ADDRS,
        XSKS,
        STATS,
        DROPS,
        LAN_CONFIG,
        ICMP_BUCKETS,
    ];
}

/// Program names, as declared by the `#[xdp]` functions of `gateway-ebpf`.
pub mod program_names {
    pub const WAN_INGRESS: &str = "wan_ingress";
    pub const LAN_INGRESS: &str = "lan_ingress";
    /// Returns `XDP_PASS` and nothing else: the benchmark's baseline.
    pub const XDP_PASS: &str = "xdp_pass";
    /// `wan_ingress` without its drop-event hook: the benchmark's baseline
    /// for what the hook costs (never attached).
    pub const WAN_INGRESS_NO_EVENTS: &str = "wan_ingress_no_events";
}

/// Inbound SAs (keyed by SPI).
pub const SA_IN_MAX_ENTRIES: u32 = 8192;

/// The inbound SAs as `wan_ingress` finds them first: an array indexed by
/// the low bits of the SPI (`SA_SLOTS`), one array read inlined by the
/// verifier where `SA_IN`, a hash, costs a hash and a bucket walk. We pick
/// our inbound SPIs, and the IKE SPI allocator avoids SPIs whose slot is
/// taken, so every SA we negotiate has a slot; an SA whose slot is taken
/// anyway (restored from an older run, installed by a test) goes to
/// `SA_IN`, which `wan_ingress` reads only when `SA_IN_SPILL` says it holds
/// something. The daemon writes the slots through `mmap`: a slot's fields
/// first and its SPI last, the SPI cleared first on removal, and a slot is
/// reused only after a grace period, so a lookup that matched an SPI reads
/// that SA's fields.
pub mod sa_slots {
    /// Slots: as many as `SA_IN` entries.
    pub const ENTRIES: u32 = crate::SA_IN_MAX_ENTRIES;
    /// The slot of an SPI: `spi & MASK`.
    pub const MASK: u32 = ENTRIES - 1;
    /// `BPF_F_MMAPABLE`.
    pub const MAP_FLAGS: u32 = 1 << 10;
    const _: () = assert!(ENTRIES.is_power_of_two());

    /// The slot of `spi`.
    pub const fn slot(spi: u32) -> u32 {
        spi & MASK
    }
}

/// Value of `SA_SLOTS`: an inbound SA and its SPI (0: empty; SPI 0 is
/// reserved, RFC 4303 §2.1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaSlot {
    pub spi: u32,
    pub tunnel_id: u32,
    pub sa_index: u32,
    pub flags: u32,
    pub replay_window: u32,
    pub _pad: u32,
    pub replay_right_edge: u64,
}
const _: () = assert!(size_of::<SaSlot>() == 32);

impl SaSlot {
    /// Offsets of the fields in 4-byte words, for the daemon's stores.
    pub const SPI_WORD: usize = 0;
    pub const TUNNEL_ID_WORD: usize = 1;
    pub const SA_INDEX_WORD: usize = 2;
    pub const FLAGS_WORD: usize = 3;
    pub const REPLAY_WINDOW_WORD: usize = 4;
    /// `replay_right_edge`, in 8-byte words.
    pub const EDGE_DWORD: usize = 3;
    /// Words per slot.
    pub const WORDS: usize = 8;

    #[inline(always)]
    pub fn value(&self) -> SaInValue {
        SaInValue {
            tunnel_id: self.tunnel_id,
            sa_index: self.sa_index,
            replay_right_edge: self.replay_right_edge,
            replay_window: self.replay_window,
            flags: self.flags,
        }
    }
}
/// Tunnel ids are indexes `0..TUNNELS_MAX_ENTRIES` into the `TUNNELS` array.
pub const TUNNELS_MAX_ENTRIES: u32 = 1024;
/// IPv6 routes (`ROUTES_V6`, allocated as they are inserted).
pub const ROUTES_V6_MAX_ENTRIES: u32 = 1 << 20;

/// The IPv6 route table: one hash map keyed by (prefix length, prefix)
/// for every length at once, and a bitmap of the lengths in use
/// (`ROUTES_V6_LENGTHS`, three `u64` words, bit `l % 64` of word `l / 64`
/// for length `l`). A lookup tries the lengths in use from the longest
/// down and stops at the first hit: as many hash lookups as there are
/// lengths in use longer than the match, one for a table of /48s, where
/// the kernel's LPM trie walks a node per distinguishing bit. The daemon
/// inserts a prefix before it sets its length's bit and clears the bit
/// after the last prefix of that length is gone (the bitmap is mapped and
/// written with single 8-byte stores), so a lookup sees each route from
/// before or after a change.
pub mod route6 {
    /// Words of `ROUTES_V6_LENGTHS`: lengths 0..=128.
    pub const LENGTH_WORDS: u32 = 3;
    /// `BPF_F_NO_PREALLOC` for the hash map (entries allocated on insert,
    /// as the LPM trie did), `BPF_F_MMAPABLE` for the bitmap.
    pub const HASH_FLAGS: u32 = 1;
    pub const LENGTHS_FLAGS: u32 = 1 << 10;

    /// Key of `ROUTES_V6`: the prefix length and the prefix, host bits
    /// zero, in network order.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Key {
        pub len: u32,
        pub prefix: [u8; 16],
    }
    const _: () = assert!(core::mem::size_of::<Key>() == 20);

    /// `addr` (as two big-endian halves) with all but its first `len`
    /// bits cleared.
    #[inline(always)]
    pub fn masked(hi: u64, lo: u64, len: u32) -> (u64, u64) {
        let hi_mask = if len >= 64 { !0 } else { !(!0u64 >> len) };
        let lo_mask = if len <= 64 {
            0
        } else if len >= 128 {
            !0
        } else {
            !(!0u64 >> (len - 64))
        };
        (hi & hi_mask, lo & lo_mask)
    }

    /// The key of `addr/len`.
    #[inline(always)]
    pub fn key(hi: u64, lo: u64, len: u32) -> Key {
        let (hi, lo) = masked(hi, lo, len);
        key_of_masked(hi, lo, len)
    }

    /// The key of a prefix whose host bits are already zero.
    #[inline(always)]
    pub fn key_of_masked(hi: u64, lo: u64, len: u32) -> Key {
        let mut prefix = [0u8; 16];
        let (a, b) = prefix.split_at_mut(8);
        a.copy_from_slice(&hi.to_be_bytes());
        b.copy_from_slice(&lo.to_be_bytes());
        Key { len, prefix }
    }

    /// The highest set bit of a non-zero `w` (without branches: the
    /// verifier and the pipeline both like it better).
    #[inline(always)]
    pub fn top_bit(mut w: u64) -> u32 {
        let mut n = 0u64;
        // (x + 0xffff_ffff) >> 32 is 1 exactly when 0 < x < 2^32.
        for step in [32u64, 16, 8, 4, 2, 1] {
            let s = (((w >> step) + 0xffff_ffff) >> 32) * step;
            w >>= s;
            n += s;
        }
        n as u32
    }
}

/// The IPv4 route table: DIR-24-8 (Gupta, Lin and McKeown, "Routing lookups
/// in hardware at memory access speeds", 1998; the layout of DPDK's
/// `rte_lpm`) over two BPF array maps, so that a lookup is one or two array
/// reads whatever the number of routes. `ROUTES_V4_TBL24` has one entry per
/// /24; an entry either answers for its whole /24 or names a group of 256
/// entries in `ROUTES_V4_TBL8`, one per address of that /24. Both maps are
/// memory-mapped by the daemon, which writes them in place (one aligned
/// 4-byte store per entry, a group filled before it is linked), so the data
/// path never sees a half-written route: each lookup sees an entry from
/// before or after a change.
pub mod route4 {
    /// Entries of `ROUTES_V4_TBL24`: one per /24.
    pub const TBL24_ENTRIES: u32 = 1 << 24;
    /// Groups of `ROUTES_V4_TBL8`: how many /24s may hold prefixes longer
    /// than /24 at once (prefixes up to /24 need none).
    pub const TBL8_GROUPS: u32 = 1 << 16;
    /// Entries per group: one per address of a /24.
    pub const TBL8_GROUP_ENTRIES: u32 = 256;
    pub const TBL8_ENTRIES: u32 = TBL8_GROUPS * TBL8_GROUP_ENTRIES;
    /// A BPF array rounds each element up to 8 bytes, so the maps hold
    /// `u64` elements of two entries each: entry `i` is the low half
    /// (even `i`) or the high half (odd `i`) of element `i / 2`, which on
    /// a little-endian host puts entry `i` at byte `4 * i` of the mapped
    /// array, as in a plain `u32` array.
    pub const ENTRIES_PER_ELEMENT: u32 = 2;
    /// Elements of `ROUTES_V4_TBL24` and `ROUTES_V4_TBL8`.
    pub const TBL24_ELEMENTS: u32 = TBL24_ENTRIES / ENTRIES_PER_ELEMENT;
    pub const TBL8_ELEMENTS: u32 = TBL8_ENTRIES / ENTRIES_PER_ELEMENT;
    /// The entry holds a route (else: no route, the kernel decides).
    pub const VALID: u32 = 1 << 31;
    /// A `TBL24` entry that names a `TBL8` group (its index in
    /// [`VALUE_MASK`]) instead of a route.
    pub const GROUP: u32 = 1 << 30;
    /// The prefix length of the route the entry holds (bits 24..30).
    pub const DEPTH_SHIFT: u32 = 24;
    pub const DEPTH_MASK: u32 = 0x3f << DEPTH_SHIFT;
    /// The tunnel id of a route, or the group index of a [`GROUP`] entry.
    pub const VALUE_MASK: u32 = (1 << DEPTH_SHIFT) - 1;
    /// `BPF_F_MMAPABLE`: the daemon writes the tables through `mmap`.
    pub const MAP_FLAGS: u32 = 1 << 10;

    /// The entry of a route of `depth` bits into `tunnel_id`.
    pub const fn route(tunnel_id: u32, depth: u8) -> u32 {
        VALID | ((depth as u32) << DEPTH_SHIFT) | (tunnel_id & VALUE_MASK)
    }

    /// The `TBL24` entry naming group `group`.
    pub const fn group(group: u32) -> u32 {
        GROUP | (group & VALUE_MASK)
    }

    /// The route an entry holds: (tunnel id, prefix length).
    pub const fn decode(entry: u32) -> Option<(u32, u8)> {
        if entry & VALID == 0 || entry & GROUP != 0 {
            return None;
        }
        Some((
            entry & VALUE_MASK,
            ((entry & DEPTH_MASK) >> DEPTH_SHIFT) as u8,
        ))
    }

    const _: () = assert!(crate::TUNNELS_MAX_ENTRIES <= VALUE_MASK + 1);
    const _: () = assert!(TBL8_GROUPS <= VALUE_MASK + 1);
    const _: () = assert!(
        cfg!(target_endian = "little"),
        "route4 packs entries little-endian"
    );
}
pub const LOCAL_ADDRS_MAX_ENTRIES: u32 = 64;
/// The inner MTU of a tunnel whose [`TunnelValue::inner_mtu`] is not set:
/// the largest that fits a 1500-byte outer packet with the largest overhead
/// of any suite, IPv6 40 + UDP 8 + ESP 8 + IV 16 + ICV 32 (AES-CBC with
/// HMAC-SHA-512-256) = 104 plus the ciphertext, which is the inner packet
/// and its 2-byte trailer padded to 16 bytes: 104 + roundup(1390 + 2, 16)
/// = 1496, while 1391..=1394 would need 1512. A tunnel with an installed
/// CHILD SA carries its own value, computed from the WAN MTU, the suite and
/// the outer family.
pub const TUNNEL_INNER_MTU: usize = 1390;
/// The smallest inner MTU ever used: IPv6's minimum link MTU (RFC 8200
/// §5), so every tunnel carries IPv6 and every ICMP quote below fits.
pub const MIN_INNER_MTU: usize = 1280;
/// ICMP "fragmentation needed" quotes as much of the original packet as
/// keeps the error within 576 bytes (RFC 1812 §4.3.2.3): 576 - 20 - 8.
pub const ICMP4_QUOTE_LEN: usize = 548;
/// ICMPv6 "packet too big" quotes as much as keeps the error within the
/// minimum MTU (RFC 4443 §2.4 (c)): 1280 - 40 - 8.
pub const ICMP6_QUOTE_LEN: usize = 1232;
/// Sources remembered by the ICMP rate limiter (per CPU, least recently
/// used first out).
pub const ICMP_BUCKETS_MAX_ENTRIES: u32 = 4096;
/// Receive queues that can carry an AF_XDP socket.
pub const XSKS_MAX_ENTRIES: u32 = 64;
/// `XSKS` key of the LAN side's socket for receive queue 0: `wan_ingress`
/// redirects to `XSKS[queue]`, `lan_ingress` to `XSKS[XSKS_LAN_BASE +
/// queue]`, so one map serves queue N of both interfaces (a socket only
/// accepts frames of the device and queue it is bound to).
pub const XSKS_LAN_BASE: u32 = XSKS_MAX_ENTRIES / 2;
/// One `TunnelStats` slot per tunnel and direction, see [`stats_index`].
pub const STATS_MAX_ENTRIES: u32 = TUNNELS_MAX_ENTRIES * 2;
/// Room for the drop reasons to grow without resizing the map.
pub const DROPS_MAX_ENTRIES: u32 = 64;

/// Key of `SA_IN`: the SPI of an inbound CHILD SA, host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SaInKey {
    pub spi: u32,
}
const _: () = assert!(size_of::<SaInKey>() == 4);

/// [`SaInValue::flags`]: the SA uses 64-bit extended sequence numbers.
pub const SA_FLAG_ESN: u32 = 1;

/// Value of `SA_IN`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaInValue {
    /// The tunnel the SA belongs to (index into `TUNNELS`).
    pub tunnel_id: u32,
    /// The userspace SA table slot that holds the keys.
    pub sa_index: u32,
    /// Highest authenticated sequence number (ESN-extended to 64 bits);
    /// written by the ESP workers after authentication.
    pub replay_right_edge: u64,
    /// Anti-replay window size in packets (0 disables the early check).
    pub replay_window: u32,
    /// `SA_FLAG_*`.
    pub flags: u32,
}
const _: () = assert!(size_of::<SaInValue>() == 24);

/// [`TunnelValue::state`].
pub const TUNNEL_DOWN: u32 = 0;
pub const TUNNEL_UP: u32 = 1;
/// [`TunnelValue::family`].
pub const FAMILY_V4: u32 = 4;
pub const FAMILY_V6: u32 = 6;

/// Value of `TUNNELS` (an array indexed by tunnel id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelValue {
    /// [`TUNNEL_UP`] or [`TUNNEL_DOWN`]; an all-zero (never set) slot is down.
    pub state: u32,
    /// Outer family, [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u32,
    /// Our outer address; IPv4 in the first 4 bytes, the rest zero.
    pub local: [u8; 16],
    /// The peer's outer address, same encoding.
    pub remote: [u8; 16],
    /// Largest inner IP packet the tunnel carries (from the WAN MTU, the
    /// suite and the outer family); 0: [`TUNNEL_INNER_MTU`].
    pub inner_mtu: u32,
    /// Explicit padding (always 0).
    pub _pad: u32,
}
const _: () = assert!(size_of::<TunnelValue>() == 48);

impl TunnelValue {
    /// [`Self::inner_mtu`], or the default when unset.
    #[inline(always)]
    pub const fn effective_inner_mtu(&self) -> usize {
        if self.inner_mtu == 0 {
            TUNNEL_INNER_MTU
        } else {
            self.inner_mtu as usize
        }
    }
}

/// [`LanConfig::flags`]: `addr_v4` is set (ICMP errors for IPv4 can be sent).
pub const LAN_HAS_V4: u32 = 1;
/// [`LanConfig::flags`]: `addr_v6` is set.
pub const LAN_HAS_V6: u32 = 2;
/// [`LanConfig::flags`]: send the ICMP errors back out of the LAN with
/// `bpf_redirect` to the interface they came in on instead of `XDP_TX`.
/// For a veth LAN: veth queues an `XDP_TX` frame in its peer's ring but
/// wakes the peer's NAPI only if the peer runs an XDP program of its own
/// (`veth_xdp_flush`), so with the usual plain peer the error is never
/// delivered; a redirect is transmitted with a flush that always wakes it
/// (the peer needs NAPI: GRO on or an XDP program). A NIC takes `XDP_TX`,
/// which every XDP driver implements (redirect needs `ndo_xdp_xmit`).
pub const LAN_REPLY_REDIRECT: u32 = 4;

/// Value of `LAN_CONFIG` (an array of one): what `lan_ingress` needs to
/// answer a packet itself. The ICMP rate limit is a token bucket per source
/// and CPU, kept as its GCRA equivalent (one timestamp per source): a
/// source may send one error every `icmp_interval_ns` with bursts of
/// `icmp_burst_ns / icmp_interval_ns` errors.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LanConfig {
    /// `LAN_HAS_*`.
    pub flags: u32,
    /// The gateway's IPv4 address on the LAN (source of its ICMP errors).
    pub addr_v4: [u8; 4],
    /// The gateway's IPv6 address on the LAN.
    pub addr_v6: [u8; 16],
    /// Nanoseconds between two errors to one source (the refill rate).
    pub icmp_interval_ns: u64,
    /// The bucket's depth in nanoseconds (burst × interval).
    pub icmp_burst_ns: u64,
}
const _: () = assert!(size_of::<LanConfig>() == 40);

/// Key of `ICMP_BUCKETS`: a source address, as [`LocalAddrKey`].
pub type IcmpBucketKey = LocalAddrKey;

/// Value of `ICMP_BUCKETS` (LRU per-CPU hash): the theoretical arrival
/// time of the next error (GCRA); an error is sent when it is at most
/// `icmp_burst_ns - icmp_interval_ns` ahead of now.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpBucket {
    pub tat_ns: u64,
}
const _: () = assert!(size_of::<IcmpBucket>() == 8);

/// GCRA decision shared by the XDP program and the workers: returns the
/// new theoretical arrival time if an error may be sent at `now`.
#[inline(always)]
pub const fn icmp_allow(tat_ns: u64, now_ns: u64, interval_ns: u64, burst_ns: u64) -> Option<u64> {
    let tat = if tat_ns > now_ns { tat_ns } else { now_ns };
    let limit = burst_ns.saturating_sub(interval_ns);
    if tat - now_ns > limit {
        None
    } else {
        Some(tat + interval_ns)
    }
}

/// Value of `ROUTES_V6` (keys: [`route6::Key`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteValue {
    pub tunnel_id: u32,
}
const _: () = assert!(size_of::<RouteValue>() == 4);

/// Key of `LOCAL_ADDRS`: one of our public (outer) addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LocalAddrKey {
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u32,
    /// IPv4 in the first 4 bytes, the rest zero.
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<LocalAddrKey>() == 20);

impl LocalAddrKey {
    pub const fn v4(a: [u8; 4]) -> Self {
        Self {
            family: FAMILY_V4,
            addr: [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        }
    }
    pub const fn v6(addr: [u8; 16]) -> Self {
        Self {
            family: FAMILY_V6,
            addr,
        }
    }
}

/// Value of `LOCAL_ADDRS`; its presence is what matters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalAddrValue {
    pub flags: u32,
}
const _: () = assert!(size_of::<LocalAddrValue>() == 4);

/// Direction of a tunnel's traffic.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// WAN → LAN: ESP to decrypt.
    Inbound = 0,
    /// LAN → WAN: cleartext to encrypt.
    Outbound = 1,
}

/// Index of a tunnel's slot in `STATS`.
#[inline(always)]
pub const fn stats_index(tunnel_id: u32, direction: Direction) -> u32 {
    tunnel_id * 2 + direction as u32
}

/// Value of `STATS` (per-CPU array, see [`stats_index`]). Userspace sums
/// the per-CPU values.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelStats {
    /// Frames selected for the fast path.
    pub packets: u64,
    /// Their bytes, Ethernet header included.
    pub bytes: u64,
    /// Of those, frames passed to the kernel because no AF_XDP socket was
    /// bound to the receive queue.
    pub no_socket: u64,
}
const _: () = assert!(size_of::<TunnelStats>() == 24);

/// Magic of [`XdpMeta`], "S2S1" read as a little-endian `u32`, so that a
/// worker can tell our metadata from a leftover of another program.
pub const XDP_META_MAGIC: u32 = u32::from_le_bytes(*b"S2S1");
/// [`XdpMeta::sa_index`] for outbound frames (the worker picks the tunnel's
/// current outbound SA).
pub const SA_INDEX_NONE: u32 = u32::MAX;

/// Metadata the XDP programs put in front of a steered frame's Ethernet
/// header (`bpf_xdp_adjust_head`, in the frame's headroom, not the XDP
/// metadata area: some kernels refuse `bpf_xdp_adjust_meta`); the AF_XDP
/// workers read it from the frame's first 16 bytes and process the rest.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpMeta {
    /// [`XDP_META_MAGIC`].
    pub magic: u32,
    pub tunnel_id: u32,
    /// `SA_IN` value's `sa_index` (inbound) or [`SA_INDEX_NONE`].
    pub sa_index: u32,
    /// [`Direction`] as `u32`.
    pub direction: u32,
}
const _: () = assert!(size_of::<XdpMeta>() == 16);
// Keeps the Ethernet header (and the IP header behind it) 4-byte aligned
// as the frame's start was.
const _: () = assert!(size_of::<XdpMeta>().is_multiple_of(4));

impl XdpMeta {
    /// Decodes the metadata from bytes (e.g. a BPF_PROG_TEST_RUN output).
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let word = |i: usize| -> Option<u32> {
            let s = b.get(i * 4..i * 4 + 4)?;
            Some(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
        };
        Some(Self {
            magic: word(0)?,
            tunnel_id: word(1)?,
            sa_index: word(2)?,
            direction: word(3)?,
        })
    }
}

/// Why the XDP programs dropped a frame; the index into `DROPS`.
///
/// Append-only: **never renumber or reuse a discriminant**. Dashboards and
/// stored metrics refer to these numbers; add new reasons at the end with
/// the next free value (below [`DROPS_MAX_ENTRIES`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// ESP to one of our addresses with an SPI not in `SA_IN`.
    UnknownSpi = 0,
    /// Sequence number left of the SA's anti-replay window (RFC 4303 §3.4.3).
    ReplayLeftOfWindow = 1,
    Ipv4HeaderTruncated = 2,
    Ipv4BadVersion = 3,
    Ipv4BadIhl = 4,
    Ipv4BadTotalLength = 5,
    Ipv6HeaderTruncated = 6,
    Ipv6BadVersion = 7,
    Ipv6BadPayloadLength = 8,
    Ipv6ExtHeaderTruncated = 9,
    UdpHeaderTruncated = 10,
    UdpBadLength = 11,
    EspHeaderTruncated = 12,
    /// Routed into a tunnel but larger than its inner MTU: answered with
    /// ICMP fragmentation needed / packet too big (`XDP_TX`).
    PacketTooBig = 13,
    /// As [`Self::PacketTooBig`] but the source is past its ICMP rate limit.
    PacketTooBigRateLimited = 14,
    /// As [`Self::PacketTooBig`] but no error may be sent (source not
    /// unicast, or the packet is itself an ICMP error).
    PacketTooBigNoReply = 15,
}

impl DropReason {
    /// Every reason, in discriminant order.
    pub const ALL: [DropReason; 16] = [
        DropReason::UnknownSpi,
        DropReason::ReplayLeftOfWindow,
        DropReason::Ipv4HeaderTruncated,
        DropReason::Ipv4BadVersion,
        DropReason::Ipv4BadIhl,
        DropReason::Ipv4BadTotalLength,
        DropReason::Ipv6HeaderTruncated,
        DropReason::Ipv6BadVersion,
        DropReason::Ipv6BadPayloadLength,
        DropReason::Ipv6ExtHeaderTruncated,
        DropReason::UdpHeaderTruncated,
        DropReason::UdpBadLength,
        DropReason::EspHeaderTruncated,
        DropReason::PacketTooBig,
        DropReason::PacketTooBigRateLimited,
        DropReason::PacketTooBigNoReply,
    ];

    /// Stable snake_case name, used as a metrics label.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::UnknownSpi => "unknown_spi",
            DropReason::ReplayLeftOfWindow => "replay_left_of_window",
            DropReason::Ipv4HeaderTruncated => "ipv4_header_truncated",
            DropReason::Ipv4BadVersion => "ipv4_bad_version",
            DropReason::Ipv4BadIhl => "ipv4_bad_ihl",
            DropReason::Ipv4BadTotalLength => "ipv4_bad_total_length",
            DropReason::Ipv6HeaderTruncated => "ipv6_header_truncated",
            DropReason::Ipv6BadVersion => "ipv6_bad_version",
            DropReason::Ipv6BadPayloadLength => "ipv6_bad_payload_length",
            DropReason::Ipv6ExtHeaderTruncated => "ipv6_ext_header_truncated",
            DropReason::UdpHeaderTruncated => "udp_header_truncated",
            DropReason::UdpBadLength => "udp_bad_length",
            DropReason::EspHeaderTruncated => "esp_header_truncated",
            DropReason::PacketTooBig => "packet_too_big",
            DropReason::PacketTooBigRateLimited => "packet_too_big_rate_limited",
            DropReason::PacketTooBigNoReply => "packet_too_big_no_reply",
        }
    }

    /// The level its drop event is sent at (`drop_event_level`):
    /// malformed headers warn, unknown SPIs and replays info, packets too
    /// big for their tunnel debug.
    pub const fn event_level(self) -> u32 {
        match self {
            DropReason::Ipv4HeaderTruncated
            | DropReason::Ipv4BadVersion
            | DropReason::Ipv4BadIhl
            | DropReason::Ipv4BadTotalLength
            | DropReason::Ipv6HeaderTruncated
            | DropReason::Ipv6BadVersion
            | DropReason::Ipv6BadPayloadLength
            | DropReason::Ipv6ExtHeaderTruncated
            | DropReason::UdpHeaderTruncated
            | DropReason::UdpBadLength
            | DropReason::EspHeaderTruncated => drop_event_level::WARN,
            DropReason::UnknownSpi | DropReason::ReplayLeftOfWindow => drop_event_level::INFO,
            DropReason::PacketTooBig
            | DropReason::PacketTooBigRateLimited
            | DropReason::PacketTooBigNoReply => drop_event_level::DEBUG,
        }
    }

    /// The reason with this discriminant, if any.
    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| *r as u32 == v)
    }
}
const _: () = assert!(DropReason::ALL.len() as u32 <= DROPS_MAX_ENTRIES);

/// Drop-event levels, as aya-log numbers them (error 1 ... trace 5): the
/// value of `DROP_LOG` is the most verbose one sent, 0 for none.
pub mod drop_event_level {
    pub const OFF: u32 = 0;
    pub const WARN: u32 = 2;
    pub const INFO: u32 = 3;
    pub const DEBUG: u32 = 4;
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY (all impls): #[repr(C)], only integer fields and byte arrays,
    // no implicit padding (sizes asserted above), every bit pattern valid.
    unsafe impl aya::Pod for SaInKey {}
    unsafe impl aya::Pod for SaInValue {}
    unsafe impl aya::Pod for SaSlot {}
    unsafe impl aya::Pod for TunnelValue {}
    unsafe impl aya::Pod for RouteValue {}
    unsafe impl aya::Pod for crate::route6::Key {}
    unsafe impl aya::Pod for LocalAddrKey {}
    unsafe impl aya::Pod for LocalAddrValue {}
    unsafe impl aya::Pod for TunnelStats {}
    unsafe impl aya::Pod for XdpMeta {}
    unsafe impl aya::Pod for LanConfig {}
    unsafe impl aya::Pod for IcmpBucket {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route6_top_bit_and_masks() {
        for b in 0..64 {
            assert_eq!(route6::top_bit(1 << b), b);
            assert_eq!(route6::top_bit((1 << b) | 1), b);
            assert_eq!(route6::top_bit(u64::MAX >> (63 - b)), b);
        }
        let a = 0x2001_0db8_ffff_ffffu128 << 64 | 0xffff_ffff_ffff_ffff;
        let (hi, lo) = ((a >> 64) as u64, a as u64);
        for len in 0..=128u32 {
            let (h, l) = route6::masked(hi, lo, len);
            let want = if len == 0 {
                0
            } else {
                a & (u128::MAX << (128 - len))
            };
            assert_eq!((h as u128) << 64 | l as u128, want, "/{len}");
            let k = route6::key(hi, lo, len);
            assert_eq!(k.len, len);
            assert_eq!(u128::from_be_bytes(k.prefix), want, "/{len}");
        }
    }

    #[test]
    fn route4_entries_round_trip() {
        assert_eq!(route4::decode(route4::route(1023, 32)), Some((1023, 32)));
        assert_eq!(route4::decode(route4::route(0, 0)), Some((0, 0)));
        assert_eq!(route4::decode(0), None);
        assert_eq!(route4::decode(route4::group(7)), None);
    }

    #[test]
    fn drop_reasons_are_dense_and_named_uniquely() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32, "{r:?} out of order");
            assert_eq!(DropReason::from_u32(i as u32), Some(*r));
            for other in &DropReason::ALL[i + 1..] {
                assert_ne!(r.name(), other.name());
            }
        }
        assert_eq!(DropReason::from_u32(DropReason::ALL.len() as u32), None);
    }

    #[test]
    fn drop_reason_numbers_are_frozen() {
        // Renumbering breaks stored metrics: this pins a few by value.
        assert_eq!(DropReason::UnknownSpi as u32, 0);
        assert_eq!(DropReason::ReplayLeftOfWindow as u32, 1);
        assert_eq!(DropReason::EspHeaderTruncated as u32, 12);
    }

    #[test]
    fn icmp_rate_limit_allows_a_burst_then_the_rate() {
        let (interval, burst) = (1_000, 3_000);
        let mut tat = 0;
        let mut sent = 0;
        // Ten errors at the same instant: the burst of three passes.
        for _ in 0..10 {
            if let Some(t) = icmp_allow(tat, 10_000, interval, burst) {
                tat = t;
                sent += 1;
            }
        }
        assert_eq!(sent, 3);
        // One interval later, exactly one more.
        assert!(icmp_allow(tat, 11_000, interval, burst).is_some());
        let tat = icmp_allow(tat, 11_000, interval, burst).unwrap();
        assert!(icmp_allow(tat, 11_000, interval, burst).is_none());
        // Idle for long: a full burst again, not more.
        let mut tat2 = tat;
        let mut n = 0;
        while let Some(t) = icmp_allow(tat2, 1_000_000, interval, burst) {
            tat2 = t;
            n += 1;
            assert!(n <= 3);
        }
        assert_eq!(n, 3);
    }

    #[test]
    fn meta_roundtrip() {
        let m = XdpMeta {
            magic: XDP_META_MAGIC,
            tunnel_id: 7,
            sa_index: 3,
            direction: Direction::Inbound as u32,
        };
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&m.magic.to_ne_bytes());
        b[4..8].copy_from_slice(&m.tunnel_id.to_ne_bytes());
        b[8..12].copy_from_slice(&m.sa_index.to_ne_bytes());
        b[12..16].copy_from_slice(&m.direction.to_ne_bytes());
        assert_eq!(XdpMeta::from_bytes(&b), Some(m));
        assert_eq!(XdpMeta::from_bytes(&b[..15]), None);
    }

    #[test]
    fn stats_index_interleaves_directions() {
        assert_eq!(stats_index(0, Direction::Inbound), 0);
        assert_eq!(stats_index(0, Direction::Outbound), 1);
        assert_eq!(stats_index(5, Direction::Outbound), 11);
        assert!(stats_index(TUNNELS_MAX_ENTRIES - 1, Direction::Outbound) < STATS_MAX_ENTRIES);
    }
}
