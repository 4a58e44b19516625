//! The rtnetlink wire format: building requests and decoding replies.
//!
//! This module owns the byte layout of `nlmsghdr`, the rtnetlink family headers
//! (`ifinfomsg`, `ifaddrmsg`, `rtmsg`, `ndmsg`) and their `rtattr` TLVs. It does
//! no I/O. Every decoder treats its input as hostile: all reads are checked, a
//! truncated or inconsistent message yields `None` or an error, never a panic,
//! and nothing allocates more than the input's own size.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

// Kernel ABI constants (include/uapi/linux/{netlink,rtnetlink,if_link,if_addr,neighbour}.h).
// Spelled out here rather than taken from `libc` because not every libc
// release carries all of them, and they are frozen ABI.
pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_ROOT: u16 = 0x100;
pub const NLM_F_MATCH: u16 = 0x200;
pub const NLM_F_DUMP: u16 = NLM_F_ROOT | NLM_F_MATCH;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_DELROUTE: u16 = 25;
pub const RTM_GETROUTE: u16 = 26;
pub const RTM_NEWNEIGH: u16 = 28;
pub const RTM_GETNEIGH: u16 = 30;

pub const IFLA_ADDRESS: u16 = 1;
pub const IFLA_IFNAME: u16 = 3;
pub const IFLA_MTU: u16 = 4;

pub const IFA_ADDRESS: u16 = 1;
pub const IFA_LOCAL: u16 = 2;
pub const IFA_FLAGS: u16 = 8;
pub const IFA_F_NODAD: u32 = 0x02;

pub const RTA_DST: u16 = 1;
pub const RTA_OIF: u16 = 4;
pub const RTA_GATEWAY: u16 = 5;
pub const RTA_PRIORITY: u16 = 6;
pub const RTA_PREFSRC: u16 = 7;
pub const RTA_TABLE: u16 = 15;
pub const RTA_VIA: u16 = 18;

pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;
pub const RT_SCOPE_HOST: u8 = 254;
pub const RT_SCOPE_NOWHERE: u8 = 255;
pub const RTN_UNICAST: u8 = 1;
pub const RT_TABLE_UNSPEC: u8 = 0;
pub const RTM_F_LOOKUP_TABLE: u32 = 0x1000;

pub const NDA_DST: u16 = 1;
pub const NDA_LLADDR: u16 = 2;
pub const NTF_USE: u8 = 0x01;

pub const IFF_UP: u32 = 0x1;

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
pub const AF_UNSPEC: u8 = 0;

/// Netlink aligns every message and attribute to 4 bytes.
pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

pub fn family_of(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

pub fn addr_bytes(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Decode an address attribute of the given family.
pub fn decode_addr(family: u8, bytes: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => {
            let b: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        AF_INET6 => {
            let b: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

fn rd_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn rd_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn rd_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A request under construction: one netlink message, header fixed up on `finish`.
pub struct Request {
    buf: Vec<u8>,
}

impl Request {
    pub fn new(msg_type: u16, flags: u16, seq: u32) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, fixed in finish()
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: kernel fills it
        Self { buf }
    }

    /// Append a family header (already laid out by the caller) padded to 4 bytes.
    pub fn header(mut self, bytes: &[u8]) -> Self {
        self.buf.extend_from_slice(bytes);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    pub fn attr(mut self, kind: u16, payload: &[u8]) -> Self {
        let len = 4 + payload.len();
        // Attribute payloads we build are a few bytes; a u16 length always fits.
        self.buf
            .extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    pub fn attr_u32(self, kind: u16, v: u32) -> Self {
        self.attr(kind, &v.to_ne_bytes())
    }

    pub fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

pub fn ifinfomsg(family: u8, index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = family;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

pub fn ifaddrmsg(family: u8, prefix_len: u8, flags: u8, scope: u8, index: u32) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[0] = family;
    h[1] = prefix_len;
    h[2] = flags;
    h[3] = scope;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h
}

pub struct RtMsg {
    pub family: u8,
    pub dst_len: u8,
    pub table: u8,
    pub protocol: u8,
    pub scope: u8,
    pub kind: u8,
    pub flags: u32,
}

impl RtMsg {
    pub fn encode(&self) -> [u8; 12] {
        let mut h = [0u8; 12];
        h[0] = self.family;
        h[1] = self.dst_len;
        h[4] = self.table;
        h[5] = self.protocol;
        h[6] = self.scope;
        h[7] = self.kind;
        h[8..12].copy_from_slice(&self.flags.to_ne_bytes());
        h
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        Some(Self {
            family: *b.first()?,
            dst_len: *b.get(1)?,
            table: *b.get(4)?,
            protocol: *b.get(5)?,
            scope: *b.get(6)?,
            kind: *b.get(7)?,
            flags: rd_u32(b, 8)?,
        })
    }
}

pub fn ndmsg(family: u8, ifindex: u32, state: u16, flags: u8) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = family;
    h[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    h[8..10].copy_from_slice(&state.to_ne_bytes());
    h[10] = flags;
    h
}

/// One netlink message as found in a receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub msg_type: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the 16-byte `nlmsghdr`.
    pub payload: &'a [u8],
}

/// Iterator over the messages of one datagram. Stops at the first malformed header.
pub struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Message<'a>;

    fn next(&mut self) -> Option<Message<'a>> {
        let len = usize::try_from(rd_u32(self.rest, 0)?).ok()?;
        if len < NLMSG_HDRLEN || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let msg = Message {
            msg_type: rd_u16(self.rest, 4)?,
            flags: rd_u16(self.rest, 6)?,
            seq: rd_u32(self.rest, 8)?,
            payload: self.rest.get(NLMSG_HDRLEN..len)?,
        };
        self.rest = self.rest.get(align4(len)..).unwrap_or(&[]);
        Some(msg)
    }
}

/// The errno of an `NLMSG_ERROR` payload (0 is an ACK), as a positive number.
pub fn decode_error(payload: &[u8]) -> Option<i32> {
    rd_i32(payload, 0).map(|e| e.checked_neg().unwrap_or(i32::MAX))
}

/// Iterator over the `rtattr`s that follow a family header.
pub struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }
}

impl<'a> Iterator for Attrs<'a> {
    /// (type without the NESTED/BYTEORDER bits, payload)
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<(u16, &'a [u8])> {
        let len = usize::from(rd_u16(self.rest, 0)?);
        let kind = rd_u16(self.rest, 2)? & 0x3fff;
        if len < 4 || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let payload = self.rest.get(4..len)?;
        self.rest = self.rest.get(align4(len)..).unwrap_or(&[]);
        Some((kind, payload))
    }
}

/// `RTM_NEWLINK` payload → (ifindex, flags, name, MAC if 6 bytes, MTU).
pub struct LinkFields<'a> {
    pub index: u32,
    pub flags: u32,
    pub name: Option<&'a [u8]>,
    pub address: Option<&'a [u8]>,
    pub mtu: Option<u32>,
}

pub fn decode_link(payload: &[u8]) -> Option<LinkFields<'_>> {
    let index = u32::try_from(rd_i32(payload, 4)?).ok()?;
    let flags = rd_u32(payload, 8)?;
    let mut out = LinkFields {
        index,
        flags,
        name: None,
        address: None,
        mtu: None,
    };
    for (kind, val) in Attrs::new(payload.get(16..)?) {
        match kind {
            IFLA_IFNAME => {
                // NUL-terminated C string.
                let end = val.iter().position(|&c| c == 0).unwrap_or(val.len());
                out.name = val.get(..end);
            }
            IFLA_ADDRESS => out.address = Some(val),
            IFLA_MTU => out.mtu = rd_u32(val, 0),
            _ => {}
        }
    }
    Some(out)
}

/// `RTM_NEWADDR` payload → (family, prefix length, ifindex, address).
pub fn decode_addr_msg(payload: &[u8]) -> Option<(u8, u8, u32, IpAddr)> {
    let family = *payload.first()?;
    let prefix_len = *payload.get(1)?;
    let index = rd_u32(payload, 4)?;
    let mut local = None;
    let mut address = None;
    for (kind, val) in Attrs::new(payload.get(8..)?) {
        match kind {
            IFA_LOCAL => local = decode_addr(family, val),
            IFA_ADDRESS => address = decode_addr(family, val),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address on point-to-point links; prefer it.
    Some((family, prefix_len, index, local.or(address)?))
}

/// Decoded fields of an `RTM_NEWROUTE` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFields {
    pub header: RtMsgFields,
    pub dst: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub priority: Option<u32>,
    pub prefsrc: Option<IpAddr>,
    pub table: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtMsgFields {
    pub family: u8,
    pub dst_len: u8,
    pub protocol: u8,
    pub scope: u8,
    pub kind: u8,
}

pub fn decode_route(payload: &[u8]) -> Option<RouteFields> {
    let h = RtMsg::decode(payload)?;
    let mut out = RouteFields {
        header: RtMsgFields {
            family: h.family,
            dst_len: h.dst_len,
            protocol: h.protocol,
            scope: h.scope,
            kind: h.kind,
        },
        dst: None,
        gateway: None,
        oif: None,
        priority: None,
        prefsrc: None,
        table: u32::from(h.table),
    };
    for (kind, val) in Attrs::new(payload.get(12..)?) {
        match kind {
            RTA_DST => out.dst = decode_addr(h.family, val),
            RTA_GATEWAY => out.gateway = decode_addr(h.family, val),
            RTA_VIA => {
                // struct rtvia { family: u16, addr[] } — an IPv4 route via an IPv6 next hop.
                let fam = rd_u16(val, 0).and_then(|f| u8::try_from(f).ok());
                out.gateway = fam.and_then(|f| decode_addr(f, val.get(2..)?));
            }
            RTA_OIF => out.oif = rd_u32(val, 0),
            RTA_PRIORITY => out.priority = rd_u32(val, 0),
            RTA_PREFSRC => out.prefsrc = decode_addr(h.family, val),
            RTA_TABLE => out.table = rd_u32(val, 0).unwrap_or(out.table),
            _ => {}
        }
    }
    Some(out)
}

/// Decoded fields of an `RTM_NEWNEIGH` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighFields {
    pub family: u8,
    pub ifindex: u32,
    pub state: u16,
    pub dst: Option<IpAddr>,
    pub lladdr: Option<[u8; 6]>,
}

pub fn decode_neigh(payload: &[u8]) -> Option<NeighFields> {
    let family = *payload.first()?;
    let mut out = NeighFields {
        family,
        ifindex: rd_u32(payload, 4)?,
        state: rd_u16(payload, 8)?,
        dst: None,
        lladdr: None,
    };
    for (kind, val) in Attrs::new(payload.get(12..)?) {
        match kind {
            NDA_DST => out.dst = decode_addr(family, val),
            NDA_LLADDR => out.lladdr = val.get(..6).and_then(|m| m.try_into().ok()),
            _ => {}
        }
    }
    Some(out)
}

/// Run every decoder over one datagram. For fuzzing and the random-input test:
/// it must never panic whatever the bytes.
pub fn decode_all(buf: &[u8]) -> usize {
    let mut n = 0;
    for m in Messages::new(buf) {
        n += usize::from(decode_error(m.payload).is_some());
        n += usize::from(decode_link(m.payload).is_some());
        n += usize::from(decode_addr_msg(m.payload).is_some());
        n += usize::from(decode_route(m.payload).is_some());
        n += usize::from(decode_neigh(m.payload).is_some());
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_through_the_decoders() {
        let rt = RtMsg {
            family: AF_INET,
            dst_len: 24,
            table: RT_TABLE_UNSPEC,
            protocol: 196,
            scope: RT_SCOPE_UNIVERSE,
            kind: RTN_UNICAST,
            flags: 0,
        };
        let msg = Request::new(RTM_NEWROUTE, NLM_F_ACK, 7)
            .header(&rt.encode())
            .attr(RTA_DST, &[198, 51, 100, 0])
            .attr(RTA_GATEWAY, &[192, 0, 2, 1])
            .attr_u32(RTA_OIF, 3)
            .attr_u32(RTA_TABLE, 1000)
            .finish();
        assert_eq!(msg.len() % 4, 0);
        let msgs: Vec<_> = Messages::new(&msg).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].msg_type, RTM_NEWROUTE);
        assert_eq!(msgs[0].seq, 7);
        let r = decode_route(msgs[0].payload).unwrap();
        assert_eq!(r.header.dst_len, 24);
        assert_eq!(r.header.protocol, 196);
        assert_eq!(r.dst, Some("198.51.100.0".parse().unwrap()));
        assert_eq!(r.gateway, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(r.oif, Some(3));
        assert_eq!(r.table, 1000);
    }

    #[test]
    fn neigh_decodes_mac_and_state() {
        let msg = Request::new(RTM_NEWNEIGH, 0, 1)
            .header(&ndmsg(AF_INET6, 4, 0x02, 0))
            .attr(
                NDA_DST,
                &"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets(),
            )
            .attr(NDA_LLADDR, &[2, 0, 0, 0, 0, 1])
            .finish();
        let m = Messages::new(&msg).next().unwrap();
        let n = decode_neigh(m.payload).unwrap();
        assert_eq!(n.ifindex, 4);
        assert_eq!(n.state, 0x02);
        assert_eq!(n.dst, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(n.lladdr, Some([2, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn truncated_lengths_stop_iteration() {
        // A header claiming 1000 bytes in a 20-byte buffer yields nothing.
        let mut b = vec![0u8; 20];
        b[..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(Messages::new(&b).count(), 0);
        // An attribute with length 2 (< 4) ends the attribute walk.
        let a = [2u8, 0, 1, 0, 9, 9, 9, 9];
        assert_eq!(Attrs::new(&a).count(), 0);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut buf = [0u8; 256];
        let mut decoded = 0usize;
        for i in 0..20_000 {
            let len = usize::try_from(next() % 256).unwrap();
            for b in buf.iter_mut().take(len) {
                *b = u8::try_from(next() & 0xff).unwrap();
            }
            // Make half the inputs start with a plausible header so the decoders run deep.
            if i % 2 == 0 && len >= 16 {
                buf[..4].copy_from_slice(&u32::try_from(len).unwrap().to_ne_bytes());
            }
            decoded += decode_all(&buf[..len]);
        }
        assert!(
            decoded > 0,
            "the plausible-header half must reach the decoders"
        );
    }
}
