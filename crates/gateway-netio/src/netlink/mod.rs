//! rtnetlink operations for the agent and the data-path workers: links,
//! addresses, routes (only those tagged with our own protocol number),
//! neighbours and route lookups, over a synchronous `NETLINK_ROUTE` socket.
//!
//! Messages are encoded and decoded by the `netlink-packet-route` family
//! (`netlink-packet-core`, `netlink-sys` for the socket), pinned to one version
//! in the workspace; the `rtnetlink` crate's async handle is not used because
//! every caller here wants a plain blocking call (the neighbour refresher and
//! the TUN setup run on worker threads, the agent uses `spawn_blocking`).
//! [`wire`] frames received datagrams and converts the library's types into
//! ours; every receive has a timeout so no call blocks forever.
//!
//! This module never touches routes whose protocol is not the caller's: listing
//! and deletion filter on [`Route::protocol`].

mod cache;
pub mod wire;

pub use cache::{NeighbourCache, NeighbourRefresher, NextHop};

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{
    NLMSG_ERROR, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_MULTIPART, NLM_F_REPLACE,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourFlags, NeighbourMessage};
use netlink_packet_route::route::{
    RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

use wire::Body;

/// `RT_TABLE_UNSPEC`: the table id goes in `RTA_TABLE` when it exceeds a byte.
const RT_TABLE_UNSPEC: u8 = 0;

/// Our routing protocol number (`rtm_protocol`), between the kernel's reserved
/// values and the ones routing daemons use (bird 12, zebra 11, bgp 186, ...).
pub const RTPROT_GATEWAY: u8 = 196;

/// Errors from rtnetlink operations.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket I/O during {op}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("kernel refused {op}: errno {errno} ({})", io::Error::from_raw_os_error(*errno))]
    Kernel { op: &'static str, errno: i32 },
    #[error("malformed netlink reply to {op}")]
    Malformed { op: &'static str },
    #[error("no reply to {op} within the receive timeout")]
    Timeout { op: &'static str },
    #[error("interface name {0:?} is not valid (empty, too long or contains NUL)")]
    BadName(String),
}

impl NetlinkError {
    /// The kernel's errno if the kernel answered with an error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `None` for links without an Ethernet address (TUN, loopback has all zeros).
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub up: bool,
}

/// An interface address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub ifindex: u32,
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// A route we own (or found when listing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix (network address) and its length.
    pub dst: IpAddr,
    pub prefix_len: u8,
    /// Next hop; `None` for a directly connected route (`dev` only).
    pub gateway: Option<IpAddr>,
    /// Output interface.
    pub oif: Option<u32>,
    /// Routing table id (254 is `main`).
    pub table: u32,
    pub metric: Option<u32>,
    /// `rtm_protocol`; normally [`RTPROT_GATEWAY`].
    pub protocol: u8,
}

impl Route {
    /// A route in `main` tagged with our protocol.
    pub fn new(dst: IpAddr, prefix_len: u8) -> Self {
        Self {
            dst,
            prefix_len,
            gateway: None,
            oif: None,
            table: 254,
            metric: None,
            protocol: RTPROT_GATEWAY,
        }
    }
}

/// The answer of a route lookup (`ip route get`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLookup {
    pub oif: u32,
    /// The next hop if the destination is not on-link.
    pub gateway: Option<IpAddr>,
    /// The source address the kernel would pick.
    pub prefsrc: Option<IpAddr>,
}

impl RouteLookup {
    /// The address whose link-layer address must be resolved to reach `dst`.
    pub fn next_hop(&self, dst: IpAddr) -> IpAddr {
        self.gateway.unwrap_or(dst)
    }
}

/// Neighbour (ARP / NDP) entry states, `NUD_*`.
pub mod nud {
    pub const INCOMPLETE: u16 = 0x01;
    pub const REACHABLE: u16 = 0x02;
    pub const STALE: u16 = 0x04;
    pub const DELAY: u16 = 0x08;
    pub const PROBE: u16 = 0x10;
    pub const FAILED: u16 = 0x20;
    pub const NOARP: u16 = 0x40;
    pub const PERMANENT: u16 = 0x80;
    pub const NONE: u16 = 0x00;
    /// States whose link-layer address may be used to send (`NUD_VALID`).
    pub const VALID: u16 = PERMANENT | NOARP | REACHABLE | PROBE | STALE | DELAY;
}

/// A neighbour table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    pub addr: IpAddr,
    pub mac: Option<[u8; 6]>,
    /// `NUD_*` bits, see [`nud`].
    pub state: u16,
}

impl Neighbour {
    /// The MAC if the kernel considers it usable for sending.
    pub fn usable_mac(&self) -> Option<[u8; 6]> {
        if self.state & nud::VALID != 0 {
            self.mac
        } else {
            None
        }
    }
}

/// A synchronous `NETLINK_ROUTE` socket. Not shared between threads: open one per
/// thread that needs it (the agent, the neighbour refresher).
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

const RECV_BUF: usize = 64 * 1024;

/// What a request waits for after sending.
enum Expect {
    /// The kernel's ACK (the request carries `NLM_F_ACK`).
    Ack,
    /// Reply messages until `NLMSG_DONE` (dumps) or the first one (gets).
    Replies,
}

fn index_of(op: &'static str, index: u32) -> Result<u32, NetlinkError> {
    // The kernel's ifindex is an int: anything above i32::MAX names no device.
    if i32::try_from(index).is_err() {
        return Err(NetlinkError::Kernel {
            op,
            errno: libc::ENODEV,
        });
    }
    Ok(index)
}

impl Netlink {
    /// Open a socket in the current network namespace with a 5 s receive timeout.
    pub fn open() -> Result<Self, NetlinkError> {
        Self::open_with_timeout(Duration::from_secs(5))
    }

    pub fn open_with_timeout(timeout: Duration) -> Result<Self, NetlinkError> {
        let io_err = |op| move |source| NetlinkError::Io { op, source };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(io_err("socket"))?;
        socket.bind_auto().map_err(io_err("bind"))?;
        let tv = libc::timeval {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
        };
        // SAFETY: SO_RCVTIMEO takes a struct timeval; pointer and length match,
        // and the descriptor is the socket's own, open for the call.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io_err("setsockopt")(io::Error::last_os_error()));
        }
        Ok(Self {
            socket,
            seq: 1,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    fn recv(&mut self, op: &'static str) -> Result<(), NetlinkError> {
        loop {
            self.buf.clear();
            match self.socket.recv(&mut self.buf, 0) {
                Ok(_) => return Ok(()),
                Err(e) => match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        return Err(NetlinkError::Timeout { op })
                    }
                    _ => return Err(NetlinkError::Io { op, source: e }),
                },
            }
        }
    }

    /// Send `msg` and hand every reply message to `f` until the request is
    /// answered: its ACK or error, `NLMSG_DONE`, or a single (non-multipart)
    /// reply. Replies to earlier, timed-out requests are skipped by sequence.
    fn request(
        &mut self,
        op: &'static str,
        msg: RouteNetlinkMessage,
        flags: u16,
        expect: Expect,
        mut f: impl FnMut(RouteNetlinkMessage),
    ) -> Result<(), NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let flags = match expect {
            Expect::Ack => flags | NLM_F_ACK,
            Expect::Replies => flags,
        };
        let bytes = wire::encode(msg, flags, seq);
        self.socket
            .send(&bytes, 0)
            .map_err(|source| NetlinkError::Io { op, source })?;
        loop {
            self.recv(op)?;
            let mut done = false;
            for r in wire::replies(&self.buf) {
                if r.seq != seq {
                    continue;
                }
                match r.body {
                    Body::Ack | Body::Done => done = true,
                    Body::Error(errno) => return Err(NetlinkError::Kernel { op, errno }),
                    Body::Undecodable(NLMSG_ERROR) => return Err(NetlinkError::Malformed { op }),
                    Body::Message(m) => {
                        f(m);
                        done |= matches!(expect, Expect::Replies) && r.flags & NLM_F_MULTIPART == 0;
                    }
                    Body::Undecodable(_) | Body::Other => {
                        done |= matches!(expect, Expect::Replies) && r.flags & NLM_F_MULTIPART == 0;
                    }
                }
            }
            if done {
                return Ok(());
            }
        }
    }

    fn ack(
        &mut self,
        op: &'static str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), NetlinkError> {
        self.request(op, msg, flags, Expect::Ack, |_| {})
    }

    // ----- links -----

    /// Look a link up by name: index, MAC, MTU, up flag.
    pub fn link_by_name(&mut self, name: &str) -> Result<Link, NetlinkError> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(NetlinkError::BadName(name.to_owned()));
        }
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        self.get_link("get link by name", m)
    }

    /// Look a link up by index.
    pub fn link_by_index(&mut self, index: u32) -> Result<Link, NetlinkError> {
        let op = "get link by index";
        let mut m = LinkMessage::default();
        m.header.index = index_of(op, index)?;
        self.get_link(op, m)
    }

    /// Every link of the namespace (`ip link show`).
    pub fn list_links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let mut out = Vec::new();
        let msg = RouteNetlinkMessage::GetLink(LinkMessage::default());
        self.request("list links", msg, NLM_F_DUMP, Expect::Replies, |m| {
            if let RouteNetlinkMessage::NewLink(l) = m {
                out.push(wire::to_link(&l));
            }
        })?;
        Ok(out)
    }

    fn get_link(&mut self, op: &'static str, m: LinkMessage) -> Result<Link, NetlinkError> {
        let mut out = None;
        let msg = RouteNetlinkMessage::GetLink(m);
        self.request(op, msg, 0, Expect::Replies, |m| {
            if let RouteNetlinkMessage::NewLink(l) = m {
                out = Some(wire::to_link(&l));
            }
        })?;
        out.ok_or(NetlinkError::Malformed { op })
    }

    /// Set a link administratively up or down.
    pub fn set_link_up(&mut self, index: u32, up: bool) -> Result<(), NetlinkError> {
        let op = "set link up/down";
        let mut m = LinkMessage::default();
        m.header.index = index_of(op, index)?;
        m.header.flags = if up {
            LinkFlags::Up
        } else {
            LinkFlags::empty()
        };
        m.header.change_mask = LinkFlags::Up;
        self.ack(op, RouteNetlinkMessage::NewLink(m), 0)
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let op = "set mtu";
        let mut m = LinkMessage::default();
        m.header.index = index_of(op, index)?;
        m.attributes.push(LinkAttribute::Mtu(mtu));
        self.ack(op, RouteNetlinkMessage::NewLink(m), 0)
    }

    // ----- addresses -----

    /// Add an address. IPv6 addresses are added with `IFA_F_NODAD`: ours are
    /// point-to-point interconnection addresses, and duplicate address detection
    /// would hold them unusable ("tentative") for a second or more.
    pub fn add_address(&mut self, a: &Address) -> Result<(), NetlinkError> {
        let msg = RouteNetlinkMessage::NewAddress(address_msg(a));
        self.ack("add address", msg, NLM_F_CREATE | NLM_F_REPLACE)
    }

    pub fn del_address(&mut self, a: &Address) -> Result<(), NetlinkError> {
        let msg = RouteNetlinkMessage::DelAddress(address_msg(a));
        self.ack("delete address", msg, 0)
    }

    /// List the addresses of one interface (both families).
    pub fn list_addresses(&mut self, ifindex: u32) -> Result<Vec<Address>, NetlinkError> {
        let mut out = Vec::new();
        let msg = RouteNetlinkMessage::GetAddress(AddressMessage::default());
        self.request("list addresses", msg, NLM_F_DUMP, Expect::Replies, |m| {
            if let RouteNetlinkMessage::NewAddress(a) = m {
                out.extend(wire::to_address(&a).filter(|a| a.ifindex == ifindex));
            }
        })?;
        Ok(out)
    }

    // ----- routes -----

    /// Add a route; fails with `EEXIST` if an identical one exists.
    pub fn add_route(&mut self, r: &Route) -> Result<(), NetlinkError> {
        let msg = RouteNetlinkMessage::NewRoute(route_msg(r, true));
        self.ack("add route", msg, NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Add or replace the route for this prefix/table/metric.
    pub fn replace_route(&mut self, r: &Route) -> Result<(), NetlinkError> {
        let msg = RouteNetlinkMessage::NewRoute(route_msg(r, true));
        self.ack("replace route", msg, NLM_F_CREATE | NLM_F_REPLACE)
    }

    /// Delete a route. The kernel matches on the protocol too, so a route of
    /// another owner with the same prefix is left alone (`ESRCH`).
    pub fn del_route(&mut self, r: &Route) -> Result<(), NetlinkError> {
        let msg = RouteNetlinkMessage::DelRoute(route_msg(r, false));
        self.ack("delete route", msg, 0)
    }

    /// List the routes of `protocol` in `table` for one family (`v6` selects IPv6).
    pub fn list_routes(
        &mut self,
        v6: bool,
        table: u32,
        protocol: u8,
    ) -> Result<Vec<Route>, NetlinkError> {
        let family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        let mut out = Vec::new();
        let msg = RouteNetlinkMessage::GetRoute(m);
        self.request("list routes", msg, NLM_F_DUMP, Expect::Replies, |m| {
            let RouteNetlinkMessage::NewRoute(m) = m else {
                return;
            };
            let r = wire::to_route(&m);
            if r.family == family && r.route.protocol == protocol && r.route.table == table {
                out.push(r.route);
            }
        })?;
        Ok(out)
    }

    /// Ask the kernel which interface and next hop it would use to reach `dst`
    /// (`ip route get dst`).
    pub fn route_get(&mut self, dst: IpAddr) -> Result<RouteLookup, NetlinkError> {
        let op = "route lookup";
        let mut m = RouteMessage::default();
        m.header.address_family = wire::family_of(&dst);
        m.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        m.header.flags = RouteFlags::LookupTable;
        m.attributes.push(RouteAttribute::Destination(dst.into()));
        let mut out = None;
        let msg = RouteNetlinkMessage::GetRoute(m);
        self.request(op, msg, 0, Expect::Replies, |m| {
            if let RouteNetlinkMessage::NewRoute(m) = m {
                out = wire::to_lookup(&m);
            }
        })?;
        out.ok_or(NetlinkError::Malformed { op })
    }

    // ----- neighbours -----

    /// The neighbour entry for `addr` on `ifindex`, `None` if the kernel has none.
    pub fn neighbour_get(
        &mut self,
        ifindex: u32,
        addr: IpAddr,
    ) -> Result<Option<Neighbour>, NetlinkError> {
        let mut out = None;
        let msg = RouteNetlinkMessage::GetNeighbour(neighbour_msg(ifindex, addr));
        let res = self.request("neighbour lookup", msg, 0, Expect::Replies, |m| {
            if let RouteNetlinkMessage::NewNeighbour(n) = m {
                out = Some(wire::to_neighbour(&n, addr));
            }
        });
        match res {
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
            Ok(()) => Ok(out),
        }
    }

    /// Make the kernel start resolving `addr` on `ifindex` (send an ARP request
    /// or Neighbour Solicitation) without sending any data packet.
    ///
    /// This is `ip neigh replace ADDR dev IF use`: `RTM_NEWNEIGH` with
    /// `NTF_USE` creates the entry if missing and calls `neigh_event_send()`,
    /// exactly what the kernel does when it has a packet to send to it. We chose
    /// this over sending a dummy UDP datagram because it puts nothing on the wire
    /// except the resolution itself and needs no socket or port.
    pub fn neighbour_resolve(&mut self, ifindex: u32, addr: IpAddr) -> Result<(), NetlinkError> {
        let mut m = neighbour_msg(ifindex, addr);
        m.header.flags = NeighbourFlags::Use;
        let msg = RouteNetlinkMessage::NewNeighbour(m);
        self.ack(
            "trigger neighbour resolution",
            msg,
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }
}

fn address_msg(a: &Address) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = wire::family_of(&a.addr);
    m.header.prefix_len = a.prefix_len;
    m.header.scope = AddressScope::Universe;
    m.header.index = a.ifindex;
    m.attributes.push(AddressAttribute::Address(a.addr));
    if a.addr.is_ipv4() {
        m.attributes.push(AddressAttribute::Local(a.addr));
    }
    let flags = if a.addr.is_ipv6() {
        AddressFlags::Nodad
    } else {
        AddressFlags::empty()
    };
    m.attributes.push(AddressAttribute::Flags(flags));
    m
}

/// The message for adding (`new`) or deleting a route.
fn route_msg(r: &Route, new: bool) -> RouteMessage {
    let mut m = RouteMessage::default();
    let h = &mut m.header;
    h.address_family = wire::family_of(&r.dst);
    h.destination_prefix_length = r.prefix_len;
    h.table = u8::try_from(r.table).unwrap_or(RT_TABLE_UNSPEC);
    h.protocol = RouteProtocol::from(r.protocol);
    // On delete the kernel matches scope and type exactly unless they are
    // "nowhere"/"unspec" (what `ip route del` sends), so wildcard them.
    (h.scope, h.kind) = match (new, r.gateway) {
        (true, None) => (RouteScope::Link, RouteType::Unicast),
        (true, Some(_)) => (RouteScope::Universe, RouteType::Unicast),
        (false, _) => (RouteScope::NoWhere, RouteType::Unspec),
    };
    m.attributes.push(RouteAttribute::Destination(r.dst.into()));
    m.attributes.push(RouteAttribute::Table(r.table));
    if let Some(gw) = r.gateway {
        m.attributes.push(if gw.is_ipv4() == r.dst.is_ipv4() {
            RouteAttribute::Gateway(gw.into())
        } else {
            // An IPv4 prefix via an IPv6 next hop (RFC 5549 style): struct rtvia.
            RouteAttribute::Via(gw.into())
        });
    }
    if let Some(oif) = r.oif {
        m.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(metric) = r.metric {
        m.attributes.push(RouteAttribute::Priority(metric));
    }
    m
}

fn neighbour_msg(ifindex: u32, addr: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = wire::family_of(&addr);
    m.header.ifindex = ifindex;
    m.attributes
        .push(NeighbourAttribute::Destination(addr.into()));
    m
}
