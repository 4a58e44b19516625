//! Netlink datagrams in and out, over the `netlink-packet-route` family: the
//! library encodes and decodes every message; this module frames a received
//! datagram into its messages, turns the library's types into ours and builds
//! the few requests the gateway sends.
//!
//! Decoding treats the kernel's bytes as untrusted like any other input: a
//! message the library cannot decode is reported as [`Body::Undecodable`] and
//! skipped by the callers, a length that does not fit ends the datagram.

use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_ERROR, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteVia};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Address, Link, Neighbour, Route, RouteLookup};

/// Size of `struct nlmsghdr`.
const HEADER_LEN: usize = 16;

/// The address family of an IP address, as the library names it.
pub fn family_of(addr: &IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// Encode one request: `NLM_F_REQUEST` plus `flags`, sequence number `seq`.
pub fn encode(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// One message of a received datagram.
#[derive(Debug)]
pub struct Reply {
    pub seq: u32,
    /// `nlmsg_flags` (`NLM_F_MULTI` marks a dump's parts).
    pub flags: u16,
    pub body: Body,
}

#[derive(Debug)]
pub enum Body {
    /// `NLMSG_ERROR` with code 0.
    Ack,
    /// `NLMSG_ERROR` with a non-zero code: the positive errno.
    Error(i32),
    /// `NLMSG_DONE`: the end of a dump.
    Done,
    Message(RouteNetlinkMessage),
    /// A message the library could not decode, by its `nlmsg_type`.
    Undecodable(u16),
    /// `NLMSG_NOOP`, `NLMSG_OVERRUN` and anything the library adds.
    Other,
}

/// The messages of one datagram, in order. Stops at the first header whose
/// length is shorter than a header or longer than what is left.
pub fn replies(buf: &[u8]) -> impl Iterator<Item = Reply> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let rest = buf.get(at..)?;
        let frame = NetlinkBuffer::new_checked(rest).ok()?;
        let len = usize::try_from(frame.length()).ok()?;
        if len < HEADER_LEN || len > rest.len() {
            return None;
        }
        let (seq, flags, msg_type) = (frame.sequence_number(), frame.flags(), frame.message_type());
        // Messages are 4-byte aligned; the last one may omit its padding.
        at = at.saturating_add(len.next_multiple_of(4));
        let body = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len]) {
            Ok(m) => match m.payload {
                NetlinkPayload::Error(e) => match e.code {
                    None => Body::Ack,
                    Some(code) => Body::Error(code.get().saturating_neg()),
                },
                NetlinkPayload::Done(_) => Body::Done,
                NetlinkPayload::InnerMessage(m) => Body::Message(m),
                _ => Body::Other,
            },
            Err(_) if msg_type == NLMSG_ERROR => Body::Undecodable(NLMSG_ERROR),
            Err(_) => Body::Undecodable(msg_type),
        };
        Some(Reply { seq, flags, body })
    })
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn neighbour_ip(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

pub fn to_link(m: &LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: m.header.flags.contains(LinkFlags::Up),
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(name) => link.name.clone_from(name),
            LinkAttribute::Address(mac) => link.mac = <[u8; 6]>::try_from(mac.as_slice()).ok(),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            _ => {}
        }
    }
    link
}

pub fn to_address(m: &AddressMessage) -> Option<Address> {
    let mut local = None;
    let mut address = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address on point-to-point links; prefer it.
    Some(Address {
        ifindex: m.header.index,
        addr: local.or(address)?,
        prefix_len: m.header.prefix_len,
    })
}

/// The fields of a route message we use: the route and its preferred source.
pub struct RouteFields {
    pub family: AddressFamily,
    pub route: Route,
    /// `None` when the message has no destination attribute (a default route).
    pub has_dst: bool,
    pub prefsrc: Option<IpAddr>,
}

pub fn to_route(m: &RouteMessage) -> RouteFields {
    let h = &m.header;
    let unspecified = if h.address_family == AddressFamily::Inet6 {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    };
    let mut out = RouteFields {
        family: h.address_family,
        route: Route {
            dst: unspecified,
            prefix_len: h.destination_prefix_length,
            gateway: None,
            oif: None,
            table: u32::from(h.table),
            metric: None,
            protocol: u8::from(h.protocol),
        },
        has_dst: false,
        prefsrc: None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => {
                if let Some(ip) = route_ip(d) {
                    out.route.dst = ip;
                    out.has_dst = true;
                }
            }
            RouteAttribute::Gateway(g) => out.route.gateway = route_ip(g),
            // An IPv4 route via an IPv6 next hop (RFC 5549 style).
            RouteAttribute::Via(RouteVia::Inet(v4)) => out.route.gateway = Some(IpAddr::V4(*v4)),
            RouteAttribute::Via(RouteVia::Inet6(v6)) => out.route.gateway = Some(IpAddr::V6(*v6)),
            RouteAttribute::Oif(oif) => out.route.oif = Some(*oif),
            RouteAttribute::Priority(p) => out.route.metric = Some(*p),
            RouteAttribute::PrefSource(s) => out.prefsrc = route_ip(s),
            RouteAttribute::Table(t) => out.route.table = *t,
            _ => {}
        }
    }
    out
}

pub fn to_lookup(m: &RouteMessage) -> Option<RouteLookup> {
    let r = to_route(m);
    Some(RouteLookup {
        oif: r.route.oif?,
        gateway: r.route.gateway,
        prefsrc: r.prefsrc,
    })
}

pub fn to_neighbour(m: &NeighbourMessage, asked: IpAddr) -> Neighbour {
    let mut n = Neighbour {
        ifindex: m.header.ifindex,
        addr: asked,
        mac: None,
        state: u16::from(m.header.state),
    };
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(d) => n.addr = neighbour_ip(d).unwrap_or(asked),
            NeighbourAttribute::LinkLayerAddress(mac) => {
                n.mac = mac.get(..6).and_then(|m| <[u8; 6]>::try_from(m).ok());
            }
            _ => {}
        }
    }
    n
}

/// Decode one datagram and convert every message to our types, as the
/// socket's callers do. For fuzzing and the random-input test: it must never
/// panic whatever the bytes. Returns how many messages were converted.
pub fn decode_all(buf: &[u8]) -> usize {
    let any = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
    replies(buf)
        .filter(|r| match &r.body {
            Body::Message(RouteNetlinkMessage::NewLink(m)) => !to_link(m).name.is_empty(),
            Body::Message(RouteNetlinkMessage::NewAddress(m)) => to_address(m).is_some(),
            Body::Message(RouteNetlinkMessage::NewRoute(m)) => {
                to_route(m);
                to_lookup(m).is_some()
            }
            Body::Message(RouteNetlinkMessage::NewNeighbour(m)) => {
                to_neighbour(m, any).mac.is_some()
            }
            Body::Ack | Body::Error(_) | Body::Done => true,
            _ => false,
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NLM_F_ACK, NLM_F_MULTIPART};
    use netlink_packet_route::neighbour::NeighbourState;
    use netlink_packet_route::route::RouteProtocol;

    fn route_msg() -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = 24;
        m.header.protocol = RouteProtocol::from(196);
        m.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet("198.51.100.0".parse().unwrap())),
            RouteAttribute::Gateway(RouteAddress::Inet("192.0.2.1".parse().unwrap())),
            RouteAttribute::Oif(3),
            RouteAttribute::Table(1000),
        ];
        m
    }

    #[test]
    fn a_request_frames_and_converts_back() {
        let msg = encode(RouteNetlinkMessage::NewRoute(route_msg()), NLM_F_ACK, 7);
        assert_eq!(msg.len() % 4, 0);
        let replies: Vec<_> = replies(&msg).collect();
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].seq, 7);
        assert_eq!(replies[0].flags, NLM_F_REQUEST | NLM_F_ACK);
        let Body::Message(RouteNetlinkMessage::NewRoute(m)) = &replies[0].body else {
            panic!("not a route: {:?}", replies[0].body);
        };
        let r = to_route(m);
        assert_eq!(r.route.prefix_len, 24);
        assert_eq!(r.route.protocol, 196);
        assert_eq!(r.route.dst, "198.51.100.0".parse::<IpAddr>().unwrap());
        assert_eq!(r.route.gateway, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(r.route.oif, Some(3));
        assert_eq!(r.route.table, 1000);
    }

    #[test]
    fn a_datagram_of_several_messages_yields_each_in_order() {
        let mut dgram = encode(
            RouteNetlinkMessage::NewRoute(route_msg()),
            NLM_F_MULTIPART,
            9,
        );
        let mut n = NeighbourMessage::default();
        n.header.family = AddressFamily::Inet6;
        n.header.ifindex = 4;
        n.header.state = NeighbourState::Reachable;
        n.attributes = vec![
            NeighbourAttribute::Destination("2001:db8::1".parse::<IpAddr>().unwrap().into()),
            NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 1]),
        ];
        dgram.extend(encode(
            RouteNetlinkMessage::NewNeighbour(n),
            NLM_F_MULTIPART,
            9,
        ));
        let replies: Vec<_> = replies(&dgram).collect();
        assert_eq!(replies.len(), 2);
        assert!(matches!(
            replies[0].body,
            Body::Message(RouteNetlinkMessage::NewRoute(_))
        ));
        let Body::Message(RouteNetlinkMessage::NewNeighbour(m)) = &replies[1].body else {
            panic!("not a neighbour: {:?}", replies[1].body);
        };
        let n = to_neighbour(m, "2001:db8::9".parse().unwrap());
        assert_eq!(n.ifindex, 4);
        assert_eq!(n.state, super::super::nud::REACHABLE);
        assert_eq!(n.addr, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(n.usable_mac(), Some([2, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn kernel_errors_come_out_as_positive_errnos() {
        // struct nlmsgerr: error code, then the offending request's header.
        let mut b = vec![0u8; HEADER_LEN + 4 + HEADER_LEN];
        let len = u32::try_from(b.len()).unwrap();
        b[..4].copy_from_slice(&len.to_ne_bytes());
        b[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        b[8..12].copy_from_slice(&5u32.to_ne_bytes());
        b[16..20].copy_from_slice(&(-libc::EEXIST).to_ne_bytes());
        let r: Vec<_> = replies(&b).collect();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].seq, 5);
        assert!(
            matches!(r[0].body, Body::Error(e) if e == libc::EEXIST),
            "{:?}",
            r[0].body
        );
        b[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert!(matches!(replies(&b).next().unwrap().body, Body::Ack));
    }

    #[test]
    fn truncated_lengths_stop_iteration() {
        // A header claiming 1000 bytes in a 20-byte buffer yields nothing,
        // and so does one claiming less than a header.
        let mut b = vec![0u8; 20];
        b[..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(replies(&b).count(), 0);
        b[..4].copy_from_slice(&8u32.to_ne_bytes());
        assert_eq!(replies(&b).count(), 0);
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
        let mut framed = 0usize;
        for i in 0..20_000 {
            let len = usize::try_from(next() % 256).unwrap();
            for b in buf.iter_mut().take(len) {
                *b = u8::try_from(next() & 0xff).unwrap();
            }
            // Make half the inputs start with a plausible header so the decoders run deep.
            if i % 2 == 0 && len >= HEADER_LEN {
                buf[..4].copy_from_slice(&u32::try_from(len).unwrap().to_ne_bytes());
                // One of the types the gateway reads: link, address, route, neighbour.
                let t = [16u16, 20, 24, 28][i % 4];
                buf[4..6].copy_from_slice(&t.to_ne_bytes());
            }
            framed += replies(&buf[..len]).count();
            decode_all(&buf[..len]);
        }
        assert!(
            framed > 0,
            "the plausible-header half must reach the decoders"
        );
    }
}
