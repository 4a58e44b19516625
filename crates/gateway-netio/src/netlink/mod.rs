//! rtnetlink operations for the agent and the data-path workers: links,
//! addresses, routes (only those tagged with our own protocol number),
//! neighbours and route lookups, over a synchronous `NETLINK_ROUTE` socket.
//!
//! Why raw netlink over `libc` rather than the `rtnetlink`/`netlink-packet-route`
//! crates: those crates change their public types on almost every release, they
//! require tokio for every call (the neighbour refresher and the TUN setup want a
//! plain blocking call from a worker thread), and the handful of messages we need
//! is a few hundred lines with checked decoding we control and fuzz
//! ([`wire`]). Async callers can use `tokio::task::spawn_blocking`; every
//! receive has a timeout so no call blocks forever.
//!
//! This module never touches routes whose protocol is not the caller's: listing
//! and deletion filter on [`Route::protocol`].

mod cache;
pub mod wire;

pub use cache::{NeighbourCache, NeighbourRefresher, NextHop};

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use wire::*;

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

fn to_link(l: &LinkFields<'_>) -> Link {
    Link {
        index: l.index,
        name: String::from_utf8_lossy(l.name.unwrap_or_default()).into_owned(),
        mac: l.address.and_then(|a| <[u8; 6]>::try_from(a).ok()),
        mtu: l.mtu.unwrap_or(0),
        up: l.flags & IFF_UP != 0,
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
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

const RECV_BUF: usize = 64 * 1024;

impl Netlink {
    /// Open a socket in the current network namespace with a 5 s receive timeout.
    pub fn open() -> Result<Self, NetlinkError> {
        Self::open_with_timeout(Duration::from_secs(5))
    }

    pub fn open_with_timeout(timeout: Duration) -> Result<Self, NetlinkError> {
        let io_err = |op| move |source| NetlinkError::Io { op, source };
        // SAFETY: plain syscall with constant arguments; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io_err("socket")(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a freshly created descriptor we exclusively own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid "kernel assigns port" address.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let sa_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: `sa` is a valid sockaddr_nl of the given length, alive across the call.
        let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), sa_len) };
        if rc < 0 {
            return Err(io_err("bind")(io::Error::last_os_error()));
        }
        let tv = libc::timeval {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
        };
        // SAFETY: SO_RCVTIMEO takes a struct timeval; pointer and length match.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
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
            fd,
            seq: 1,
            buf: vec![0; RECV_BUF],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, op: &'static str, msg: &[u8]) -> Result<(), NetlinkError> {
        // SAFETY: `msg` is a valid readable buffer of `msg.len()` bytes. A netlink
        // socket with no destination set sends to the kernel (port 0).
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(NetlinkError::Io {
                op,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    fn recv(&mut self, op: &'static str) -> Result<usize, NetlinkError> {
        loop {
            // SAFETY: `self.buf` is a writable buffer of `self.buf.len()` bytes.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if n >= 0 {
                return usize::try_from(n).map_err(|_| NetlinkError::Malformed { op });
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    return Err(NetlinkError::Timeout { op })
                }
                _ => return Err(NetlinkError::Io { op, source: e }),
            }
        }
    }

    /// Send a request and wait for its ACK (or error).
    fn request_ack(
        &mut self,
        op: &'static str,
        msg: Vec<u8>,
        seq: u32,
    ) -> Result<(), NetlinkError> {
        self.send(op, &msg)?;
        loop {
            let n = self.recv(op)?;
            for m in Messages::new(&self.buf[..n]) {
                if m.seq != seq {
                    continue; // a stale reply to an earlier, timed-out request
                }
                if m.msg_type == NLMSG_ERROR {
                    let errno = decode_error(m.payload).ok_or(NetlinkError::Malformed { op })?;
                    return if errno == 0 {
                        Ok(())
                    } else {
                        Err(NetlinkError::Kernel { op, errno })
                    };
                }
            }
        }
    }

    /// Send a request and hand every reply message of type `want` to `f`, until
    /// `NLMSG_DONE` (dumps) or the first reply (single gets).
    fn request_collect(
        &mut self,
        op: &'static str,
        msg: Vec<u8>,
        seq: u32,
        want: u16,
        mut f: impl FnMut(&[u8]),
    ) -> Result<(), NetlinkError> {
        self.send(op, &msg)?;
        loop {
            let n = self.recv(op)?;
            let mut done = false;
            for m in Messages::new(&self.buf[..n]) {
                if m.seq != seq {
                    continue;
                }
                match m.msg_type {
                    NLMSG_DONE => done = true,
                    NLMSG_ERROR => {
                        let errno =
                            decode_error(m.payload).ok_or(NetlinkError::Malformed { op })?;
                        if errno != 0 {
                            return Err(NetlinkError::Kernel { op, errno });
                        }
                        done = true;
                    }
                    t if t == want => {
                        f(m.payload);
                        if m.flags & NLM_F_MULTI == 0 {
                            done = true;
                        }
                    }
                    _ => {}
                }
            }
            if done {
                return Ok(());
            }
        }
    }

    // ----- links -----

    /// Look a link up by name: index, MAC, MTU, up flag.
    pub fn link_by_name(&mut self, name: &str) -> Result<Link, NetlinkError> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(NetlinkError::BadName(name.to_owned()));
        }
        let mut cname = name.as_bytes().to_vec();
        cname.push(0);
        let seq = self.next_seq();
        let msg = Request::new(RTM_GETLINK, 0, seq)
            .header(&ifinfomsg(AF_UNSPEC, 0, 0, 0))
            .attr(IFLA_IFNAME, &cname)
            .finish();
        self.get_link("get link by name", msg, seq)
    }

    /// Look a link up by index.
    pub fn link_by_index(&mut self, index: u32) -> Result<Link, NetlinkError> {
        let seq = self.next_seq();
        let idx = i32::try_from(index).map_err(|_| NetlinkError::Kernel {
            op: "get link by index",
            errno: libc::ENODEV,
        })?;
        let msg = Request::new(RTM_GETLINK, 0, seq)
            .header(&ifinfomsg(AF_UNSPEC, idx, 0, 0))
            .finish();
        self.get_link("get link by index", msg, seq)
    }

    /// Every link of the namespace (`ip link show`).
    pub fn list_links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let seq = self.next_seq();
        let msg = Request::new(RTM_GETLINK, NLM_F_DUMP, seq)
            .header(&ifinfomsg(AF_UNSPEC, 0, 0, 0))
            .finish();
        let mut out = Vec::new();
        self.request_collect("list links", msg, seq, RTM_NEWLINK, |p| {
            out.extend(decode_link(p).map(|l| to_link(&l)));
        })?;
        Ok(out)
    }

    fn get_link(&mut self, op: &'static str, msg: Vec<u8>, seq: u32) -> Result<Link, NetlinkError> {
        let mut out = None;
        self.request_collect(op, msg, seq, RTM_NEWLINK, |p| {
            if let Some(l) = decode_link(p) {
                out = Some(to_link(&l));
            }
        })?;
        out.ok_or(NetlinkError::Malformed { op })
    }

    /// Set a link administratively up or down.
    pub fn set_link_up(&mut self, index: u32, up: bool) -> Result<(), NetlinkError> {
        let op = "set link up/down";
        let idx = i32::try_from(index).map_err(|_| NetlinkError::Kernel {
            op,
            errno: libc::ENODEV,
        })?;
        let seq = self.next_seq();
        let flags = if up { IFF_UP } else { 0 };
        let msg = Request::new(RTM_NEWLINK, NLM_F_ACK, seq)
            .header(&ifinfomsg(AF_UNSPEC, idx, flags, IFF_UP))
            .finish();
        self.request_ack(op, msg, seq)
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let op = "set mtu";
        let idx = i32::try_from(index).map_err(|_| NetlinkError::Kernel {
            op,
            errno: libc::ENODEV,
        })?;
        let seq = self.next_seq();
        let msg = Request::new(RTM_NEWLINK, NLM_F_ACK, seq)
            .header(&ifinfomsg(AF_UNSPEC, idx, 0, 0))
            .attr_u32(IFLA_MTU, mtu)
            .finish();
        self.request_ack(op, msg, seq)
    }

    // ----- addresses -----

    /// Add an address. IPv6 addresses are added with `IFA_F_NODAD`: ours are
    /// point-to-point interconnection addresses, and duplicate address detection
    /// would hold them unusable ("tentative") for a second or more.
    pub fn add_address(&mut self, a: &Address) -> Result<(), NetlinkError> {
        self.address_op("add address", RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, a)
    }

    pub fn del_address(&mut self, a: &Address) -> Result<(), NetlinkError> {
        self.address_op("delete address", RTM_DELADDR, 0, a)
    }

    fn address_op(
        &mut self,
        op: &'static str,
        kind: u16,
        flags: u16,
        a: &Address,
    ) -> Result<(), NetlinkError> {
        let seq = self.next_seq();
        let fam = family_of(&a.addr);
        let bytes = addr_bytes(&a.addr);
        let nodad = if fam == AF_INET6 { IFA_F_NODAD } else { 0 };
        let mut req = Request::new(kind, NLM_F_ACK | flags, seq)
            .header(&ifaddrmsg(
                fam,
                a.prefix_len,
                0,
                RT_SCOPE_UNIVERSE,
                a.ifindex,
            ))
            .attr(IFA_ADDRESS, &bytes);
        if fam == AF_INET {
            req = req.attr(IFA_LOCAL, &bytes);
        }
        let msg = req.attr_u32(IFA_FLAGS, nodad).finish();
        self.request_ack(op, msg, seq)
    }

    /// List the addresses of one interface (both families).
    pub fn list_addresses(&mut self, ifindex: u32) -> Result<Vec<Address>, NetlinkError> {
        let seq = self.next_seq();
        let msg = Request::new(RTM_GETADDR, NLM_F_DUMP, seq)
            .header(&ifaddrmsg(AF_UNSPEC, 0, 0, 0, 0))
            .finish();
        let mut out = Vec::new();
        self.request_collect("list addresses", msg, seq, RTM_NEWADDR, |p| {
            if let Some((_, prefix_len, idx, addr)) = decode_addr_msg(p) {
                if idx == ifindex {
                    out.push(Address {
                        ifindex: idx,
                        addr,
                        prefix_len,
                    });
                }
            }
        })?;
        Ok(out)
    }

    // ----- routes -----

    fn route_msg(&mut self, kind: u16, flags: u16, r: &Route) -> (Vec<u8>, u32) {
        let seq = self.next_seq();
        let fam = family_of(&r.dst);
        // On delete the kernel matches scope and type exactly unless they are
        // "nowhere"/"unspec" (what `ip route del` sends), so wildcard them.
        let (scope, rtype) = match (kind, r.gateway) {
            (RTM_NEWROUTE, None) => (RT_SCOPE_LINK, RTN_UNICAST),
            (RTM_NEWROUTE, Some(_)) => (RT_SCOPE_UNIVERSE, RTN_UNICAST),
            _ => (RT_SCOPE_NOWHERE, 0),
        };
        let hdr = RtMsg {
            family: fam,
            dst_len: r.prefix_len,
            table: u8::try_from(r.table).unwrap_or(RT_TABLE_UNSPEC),
            protocol: r.protocol,
            scope,
            kind: rtype,
            flags: 0,
        };
        let mut req = Request::new(kind, NLM_F_ACK | flags, seq)
            .header(&hdr.encode())
            .attr(RTA_DST, &addr_bytes(&r.dst))
            .attr_u32(RTA_TABLE, r.table);
        if let Some(gw) = r.gateway {
            if family_of(&gw) == fam {
                req = req.attr(RTA_GATEWAY, &addr_bytes(&gw));
            } else {
                // IPv4 prefix via an IPv6 next hop (RFC 5549 style): struct rtvia.
                let mut via = u16::from(family_of(&gw)).to_ne_bytes().to_vec();
                via.extend_from_slice(&addr_bytes(&gw));
                req = req.attr(RTA_VIA, &via);
            }
        }
        if let Some(oif) = r.oif {
            req = req.attr_u32(RTA_OIF, oif);
        }
        if let Some(m) = r.metric {
            req = req.attr_u32(RTA_PRIORITY, m);
        }
        (req.finish(), seq)
    }

    /// Add a route; fails with `EEXIST` if an identical one exists.
    pub fn add_route(&mut self, r: &Route) -> Result<(), NetlinkError> {
        let (msg, seq) = self.route_msg(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, r);
        self.request_ack("add route", msg, seq)
    }

    /// Add or replace the route for this prefix/table/metric.
    pub fn replace_route(&mut self, r: &Route) -> Result<(), NetlinkError> {
        let (msg, seq) = self.route_msg(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, r);
        self.request_ack("replace route", msg, seq)
    }

    /// Delete a route. The kernel matches on the protocol too, so a route of
    /// another owner with the same prefix is left alone (`ESRCH`).
    pub fn del_route(&mut self, r: &Route) -> Result<(), NetlinkError> {
        let (msg, seq) = self.route_msg(RTM_DELROUTE, 0, r);
        self.request_ack("delete route", msg, seq)
    }

    /// List the routes of `protocol` in `table` for one family (`v6` selects IPv6).
    pub fn list_routes(
        &mut self,
        v6: bool,
        table: u32,
        protocol: u8,
    ) -> Result<Vec<Route>, NetlinkError> {
        let seq = self.next_seq();
        let fam = if v6 { AF_INET6 } else { AF_INET };
        let hdr = RtMsg {
            family: fam,
            dst_len: 0,
            table: RT_TABLE_UNSPEC,
            protocol: 0,
            scope: 0,
            kind: 0,
            flags: 0,
        };
        let msg = Request::new(RTM_GETROUTE, NLM_F_DUMP, seq)
            .header(&hdr.encode())
            .finish();
        let mut out = Vec::new();
        self.request_collect("list routes", msg, seq, RTM_NEWROUTE, |p| {
            let Some(r) = decode_route(p) else { return };
            if r.header.protocol != protocol || r.table != table || r.header.family != fam {
                return;
            }
            let unspecified = if v6 {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
            };
            out.push(Route {
                dst: r.dst.unwrap_or(unspecified),
                prefix_len: r.header.dst_len,
                gateway: r.gateway,
                oif: r.oif,
                table: r.table,
                metric: r.priority,
                protocol: r.header.protocol,
            });
        })?;
        Ok(out)
    }

    /// Ask the kernel which interface and next hop it would use to reach `dst`
    /// (`ip route get dst`).
    pub fn route_get(&mut self, dst: IpAddr) -> Result<RouteLookup, NetlinkError> {
        let op = "route lookup";
        let seq = self.next_seq();
        let fam = family_of(&dst);
        let hdr = RtMsg {
            family: fam,
            dst_len: if fam == AF_INET { 32 } else { 128 },
            table: RT_TABLE_UNSPEC,
            protocol: 0,
            scope: 0,
            kind: 0,
            flags: RTM_F_LOOKUP_TABLE,
        };
        let msg = Request::new(RTM_GETROUTE, 0, seq)
            .header(&hdr.encode())
            .attr(RTA_DST, &addr_bytes(&dst))
            .finish();
        let mut out = None;
        self.request_collect(op, msg, seq, RTM_NEWROUTE, |p| {
            if let Some(r) = decode_route(p) {
                out = r.oif.map(|oif| RouteLookup {
                    oif,
                    gateway: r.gateway,
                    prefsrc: r.prefsrc,
                });
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
        let seq = self.next_seq();
        let msg = Request::new(RTM_GETNEIGH, 0, seq)
            .header(&ndmsg(family_of(&addr), ifindex, 0, 0))
            .attr(NDA_DST, &addr_bytes(&addr))
            .finish();
        let mut out = None;
        let res = self.request_collect("neighbour lookup", msg, seq, RTM_NEWNEIGH, |p| {
            if let Some(n) = decode_neigh(p) {
                out = Some(Neighbour {
                    ifindex: n.ifindex,
                    addr: n.dst.unwrap_or(addr),
                    mac: n.lladdr,
                    state: n.state,
                });
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
        let seq = self.next_seq();
        let msg = Request::new(RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, seq)
            .header(&ndmsg(family_of(&addr), ifindex, nud::NONE, NTF_USE))
            .attr(NDA_DST, &addr_bytes(&addr))
            .finish();
        self.request_ack("trigger neighbour resolution", msg, seq)
    }
}
