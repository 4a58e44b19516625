//! One BGP session: the RFC 4271 §8 finite state machine, its Adj-RIB-In
//! and Adj-RIB-Out, sans-I/O.
//!
//! Inputs are driver events (a TCP connection came up or went away, bytes
//! arrived, a timer expired, the operator started or stopped the session)
//! plus `now`; outputs are [`Action`]s (send these bytes, arm this timer,
//! open a connection) and Adj-RIB-In changes that the [`crate::Speaker`] folds
//! into the Loc-RIB. Everything goes through one [`Session::fsm_event`] that
//! matches on the state, then on the event, with the events named as in
//! RFC 4271 §8.1. No sockets, no clocks, no tokio here.
//!
//! Here: the session's types, its inputs and the state machine itself;
//! `fsm_support` has the machine's helpers (connections, collisions, OPEN,
//! timers, back to Idle), `updates` the routes (UPDATEs in, Adj-RIB-Out
//! out, policy changes).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};

use crate::attribute::{
    AfiSafi, AsPath, Community, MpNextHop, MpReachNlri, MpUnreachNlri, Origin, PathAttribute,
};
use crate::message::{
    cease, code, frame_len, open_error, Capability, Codec, GracefulRestart, Message, MessageError,
    Notification, Open, RouteRefresh, Update, MAX_MESSAGE_LEN,
};
use crate::policy::{local_pref_from_communities, RoutingPolicy};
use crate::{Action, SessionId};

mod fsm_support;
mod updates;

/// Identifies one TCP connection; chosen by the driver.
pub type ConnId = u64;

/// Hold time while waiting for the peer's OPEN (RFC 4271 §8.2.2: "large value", 4 minutes).
const OPEN_SENT_HOLD: Duration = Duration::from_secs(240);
/// Default [`SessionConfig::route_refresh_interval`]: an operator's
/// `clear bgp soft in` is answered at once, a second one within 5 s a
/// little later, and a peer that streams refreshes gets at most one full
/// Adj-RIB-Out every 5 s.
pub const ROUTE_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
    /// A coalesced ROUTE-REFRESH is due (see [`SessionConfig::route_refresh_interval`]).
    RouteRefresh,
}

impl Timer {
    const ALL: [Timer; 4] = [
        Timer::ConnectRetry,
        Timer::Hold,
        Timer::Keepalive,
        Timer::RouteRefresh,
    ];

    fn index(self) -> usize {
        match self {
            Timer::ConnectRetry => 0,
            Timer::Hold => 1,
            Timer::Keepalive => 2,
            Timer::RouteRefresh => 3,
        }
    }
}

/// Who opened a TCP connection; decides which one survives a collision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We connected to the peer (active open).
    Outgoing,
    /// The peer connected to us (passive open).
    Incoming,
}

/// What the driver tells a session.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    ManualStart,
    ManualStop,
    /// A TCP connection with the peer is up (RFC 4271 Tcp_CR_Acked for an
    /// outgoing one, TcpConnectionConfirmed for an incoming one).
    TcpConnected {
        conn: ConnId,
        direction: Direction,
    },
    /// An outgoing connection attempt failed.
    TcpConnectFailed,
    /// An established connection closed or failed.
    TcpClosed {
        conn: ConnId,
    },
    Received {
        conn: ConnId,
        bytes: &'a [u8],
    },
    TimerExpired(Timer),
    /// The driver cannot queue more output for `conn` (the peer does not
    /// read what we send): the session ends with Cease/Out of Resources.
    SendQueueFull {
        conn: ConnId,
    },
    /// Whether the peer can be reached at all (the tunnel that carries the
    /// session is up). While it cannot, the session opens no connection of
    /// its own and arms no connect-retry timer (it still accepts the
    /// peer's); once it can, it connects at once.
    Reachable(bool),
}

/// RFC 4271 §8.1 events, as far as this implementation distinguishes them.
#[derive(Debug)]
enum Event {
    ManualStart,
    ManualStop,
    ConnectRetryTimerExpires,
    HoldTimerExpires,
    KeepaliveTimerExpires,
    TcpConnectionConfirmed(ConnId, Direction),
    TcpConnectionFails(Option<ConnId>),
    BgpOpen(ConnId, Open),
    /// BGPHeaderErr / BGPOpenMsgErr / UpdateMsgErr: the message error says which.
    MsgErr(ConnId, MessageError),
    NotifMsg(ConnId, Notification),
    KeepAliveMsg(ConnId),
    UpdateMsg(ConnId, Update),
    RouteRefreshMsg(ConnId, RouteRefresh),
    /// A coalesced ROUTE-REFRESH may be answered now.
    RouteRefreshTimerExpires,
    /// Not an RFC 4271 event: the driver's output queue for the connection
    /// is full (RFC 4486 §4, Cease subcode 8).
    OutOfResources(ConnId),
}

/// Static configuration of a session (from a connection's `bgp_session_ipv4/6`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Our ASN (12876 unless configured).
    pub local_asn: u32,
    pub peer_asn: u32,
    /// Our interconnection address: the TCP source and the next hop we announce.
    pub local_addr: IpAddr,
    pub peer_addr: IpAddr,
    /// TCP port, 179 except in tests.
    pub port: u16,
    pub router_id: Ipv4Addr,
    /// Hold time we propose, seconds (0 or >= 3).
    pub hold_time: u16,
    /// Wait before a new connection attempt and before an automatic restart.
    pub connect_retry: Duration,
    /// Only accept connections, never connect.
    pub passive: bool,
    /// Received prefixes beyond which the session ends with Cease/1.
    pub max_prefixes: Option<u32>,
    /// Least time between two answers to ROUTE-REFRESH. Each answer is the
    /// whole Adj-RIB-Out, so a peer streaming refreshes could otherwise make
    /// us encode and queue it again and again. A refresh inside the
    /// interval is not lost: one (and only one) is remembered and answered
    /// when the interval has passed; further ones are folded into it.
    pub route_refresh_interval: Duration,
    /// Announce Graceful Restart (RFC 4724) with this restart time in
    /// seconds: when our side of the session goes without a NOTIFICATION
    /// (the daemon restarting), a peer that helps keeps our routes for
    /// that long, marked stale, until our End-of-RIB after the new
    /// session. `None`: not announced.
    pub graceful_restart: Option<u16>,
    /// Set the Restart State bit in the first OPEN: we have just
    /// restarted, and the peer knew us with Graceful Restart.
    pub restarting: bool,
}

impl SessionConfig {
    pub fn new(local_addr: IpAddr, peer_addr: IpAddr, peer_asn: u32) -> Self {
        let router_id = match local_addr {
            IpAddr::V4(a) => a,
            IpAddr::V6(a) => {
                let o = a.octets();
                let id = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
                if id.is_unspecified() {
                    Ipv4Addr::new(0, 0, 0, 1)
                } else {
                    id
                }
            }
        };
        Self {
            local_asn: crate::DEFAULT_ASN,
            peer_asn,
            local_addr,
            peer_addr,
            port: 179,
            router_id,
            hold_time: 90,
            connect_retry: Duration::from_secs(5),
            passive: false,
            max_prefixes: None,
            route_refresh_interval: ROUTE_REFRESH_INTERVAL,
            graceful_restart: None,
            restarting: false,
        }
    }

    /// From a connection's `bgp_session_ipv4/ipv6`: `private_ip` and
    /// `peer_private_ip` are addresses with their prefix length
    /// (`169.254.0.1/30`) or bare addresses; `peer_asn` is the customer
    /// gateway's ASN, `local_asn` the VPN gateway's.
    pub fn from_interconnect(
        private_ip: &str,
        peer_private_ip: &str,
        local_asn: u32,
        peer_asn: u32,
    ) -> Result<Self, crate::policy::InvalidPrefix> {
        let addr = |s: &str| -> Result<IpAddr, crate::policy::InvalidPrefix> {
            s.parse::<IpNet>()
                .map(|n| n.addr())
                .or_else(|_| s.parse::<IpAddr>())
                .map_err(|_| crate::policy::InvalidPrefix(s.to_owned()))
        };
        let mut c = Self::new(addr(private_ip)?, addr(peer_private_ip)?, peer_asn);
        c.local_asn = local_asn;
        Ok(c)
    }

    /// The family whose routes we can announce: we have a next hop only in
    /// the family of our interconnection address.
    pub fn family(&self) -> AfiSafi {
        AfiSafi::of_addr(&self.local_addr)
    }
}

/// What the agent may change at runtime without restarting the session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionPolicy {
    /// `None`: no routing policy attached, nothing accepted or announced (RFC 8212).
    pub routing_policy: Option<RoutingPolicy>,
    /// The connection's route propagation flag.
    pub route_propagation: bool,
    /// VPC prefixes to announce, before `prefix_filter_out`.
    pub exported: Vec<IpNet>,
}

/// A route as the peer announced it, with what best-path selection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// The session it was learned on.
    pub session: SessionId,
    pub next_hop: IpAddr,
    pub origin: Origin,
    pub as_path: AsPath,
    pub med: u32,
    /// Derived from the customer's communities (eBGP LOCAL_PREF is ignored).
    pub local_pref: u32,
    pub communities: Vec<Community>,
    pub peer_addr: IpAddr,
}

/// An Adj-RIB-In change that passed import policy (or stopped passing it).
#[derive(Debug, Clone)]
pub(crate) struct RibChange {
    pub(crate) prefix: IpNet,
    /// `None`: the session no longer offers this prefix.
    pub(crate) path: Option<Arc<Path>>,
}

/// What a session outputs, with the Loc-RIB changes separate.
#[derive(Default)]
pub(crate) struct Out {
    pub(crate) actions: Vec<Action>,
    pub(crate) rib: Vec<RibChange>,
}

impl Out {
    fn push(&mut self, a: Action) {
        self.actions.push(a);
    }
}

#[derive(Debug)]
struct Conn {
    id: ConnId,
    direction: Direction,
    rx: Vec<u8>,
}

impl Conn {
    fn new(id: ConnId, direction: Direction) -> Self {
        Self {
            id,
            direction,
            rx: Vec::new(),
        }
    }
}

/// What the two OPENs agreed on.
#[derive(Debug, Clone)]
struct Negotiated {
    hold_time: u16,
    codec: Codec,
    families: Vec<AfiSafi>,
    peer_id: Ipv4Addr,
    /// Both sides announced Graceful Restart: End-of-RIB markers are
    /// exchanged, and our side may go without a NOTIFICATION.
    graceful_restart: bool,
}

#[derive(Debug)]
pub struct Session {
    id: SessionId,
    config: SessionConfig,
    policy: Option<RoutingPolicy>,
    route_propagation: bool,
    exported: Vec<IpNet>,
    state: State,
    admin_up: bool,
    primary: Option<Conn>,
    /// A second connection during OpenSent/OpenConfirm (RFC 4271 §6.8).
    candidate: Option<Conn>,
    timers: [Option<Instant>; 4],
    negotiated: Option<Negotiated>,
    /// Every route the peer announced, before import policy, so a policy or
    /// propagation change is re-evaluated without a ROUTE-REFRESH.
    adj_rib_in: BTreeMap<IpNet, Arc<Path>>,
    /// Of those, how many import policy accepts (kept as they change).
    accepted: usize,
    adj_rib_out: BTreeSet<IpNet>,
    connect_retry_counter: u32,
    last_error: Option<Notification>,
    /// When we last answered a ROUTE-REFRESH on this connection.
    last_refresh_answer: Option<Instant>,
    /// The NOTIFICATION the peer just sent, for the `SessionDown` it causes.
    received_notification: Option<Notification>,
    /// The Restart State bit of our next OPEN (`SessionConfig::restarting`
    /// until a session was established once).
    restarting: bool,
    /// A ROUTE-REFRESH arrived inside the interval and waits for
    /// [`Timer::RouteRefresh`].
    refresh_pending: bool,
    /// See [`Input::Reachable`]; true until told otherwise.
    reachable: bool,
}

impl Session {
    pub fn new(id: SessionId, config: SessionConfig, policy: SessionPolicy) -> Self {
        let config_restarting = config.restarting;
        Self {
            id,
            config,
            policy: policy.routing_policy,
            route_propagation: policy.route_propagation,
            exported: policy.exported,
            state: State::Idle,
            admin_up: false,
            primary: None,
            candidate: None,
            timers: [None; 4],
            negotiated: None,
            adj_rib_in: BTreeMap::new(),
            accepted: 0,
            adj_rib_out: BTreeSet::new(),
            connect_retry_counter: 0,
            last_error: None,
            last_refresh_answer: None,
            received_notification: None,
            refresh_pending: false,
            restarting: config_restarting,
            reachable: true,
        }
    }

    /// Whether the established session negotiated Graceful Restart: it
    /// may then end without a NOTIFICATION and the peer keeps our routes
    /// for the restart time.
    pub fn graceful_restart(&self) -> bool {
        self.state == State::Established
            && self.negotiated.as_ref().is_some_and(|n| n.graceful_restart)
    }

    /// The End-of-RIB marker of our family (RFC 4724 §2): an empty UPDATE
    /// for IPv4 unicast, an empty MP_UNREACH_NLRI otherwise.
    fn end_of_rib(&self) -> Message {
        Message::Update(match self.config.family() {
            AfiSafi::Ipv4Unicast => Update::default(),
            family => Update {
                path_attributes: vec![PathAttribute::MpUnreachNlri(MpUnreachNlri {
                    afi_safi: family,
                    withdrawn: Vec::new(),
                })],
                ..Update::default()
            },
        })
    }

    pub fn id(&self) -> SessionId {
        self.id
    }
    pub fn state(&self) -> State {
        self.state
    }
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }
    /// Prefixes in the Adj-RIB-In (before import policy).
    pub fn adj_rib_in_len(&self) -> usize {
        self.adj_rib_in.len()
    }
    /// Prefixes of the Adj-RIB-In that import policy accepts (the rest
    /// were received and rejected).
    pub fn adj_rib_in_accepted(&self) -> usize {
        self.accepted
    }
    /// Prefixes we currently announce.
    pub fn adj_rib_out(&self) -> impl Iterator<Item = &IpNet> {
        self.adj_rib_out.iter()
    }
    /// The last NOTIFICATION sent or received.
    pub fn last_error(&self) -> Option<&Notification> {
        self.last_error.as_ref()
    }
    pub fn connect_retry_counter(&self) -> u32 {
        self.connect_retry_counter
    }

    /// Import policy (RFC 8212 with the propagation flag on top).
    fn imports(&self, prefix: &IpNet) -> bool {
        self.route_propagation && self.policy.as_ref().is_some_and(|p| p.accepts_in(prefix))
    }

    pub(crate) fn input(&mut self, input: Input<'_>, now: Instant, out: &mut Out) {
        match input {
            Input::ManualStart => self.fsm_event(Event::ManualStart, now, out),
            Input::ManualStop => self.fsm_event(Event::ManualStop, now, out),
            Input::Reachable(r) => self.set_reachable(r, now, out),
            Input::TcpConnected { conn, direction } => {
                self.fsm_event(Event::TcpConnectionConfirmed(conn, direction), now, out)
            }
            Input::TcpConnectFailed => self.fsm_event(Event::TcpConnectionFails(None), now, out),
            Input::TcpClosed { conn } => {
                self.fsm_event(Event::TcpConnectionFails(Some(conn)), now, out)
            }
            Input::TimerExpired(t) => {
                // Stale or early timer events are ignored: the deadline here is the truth.
                match self.timers[t.index()] {
                    Some(d) if d <= now => self.timers[t.index()] = None,
                    _ => return,
                }
                let event = match t {
                    Timer::ConnectRetry => Event::ConnectRetryTimerExpires,
                    Timer::Hold => Event::HoldTimerExpires,
                    Timer::Keepalive => Event::KeepaliveTimerExpires,
                    Timer::RouteRefresh => Event::RouteRefreshTimerExpires,
                };
                self.fsm_event(event, now, out);
            }
            Input::Received { conn, bytes } => self.received(conn, bytes, now, out),
            Input::SendQueueFull { conn } => self.fsm_event(Event::OutOfResources(conn), now, out),
        }
    }

    fn conn_mut(&mut self, conn: ConnId) -> Option<&mut Conn> {
        if self.primary.as_ref().is_some_and(|c| c.id == conn) {
            self.primary.as_mut()
        } else if self.candidate.as_ref().is_some_and(|c| c.id == conn) {
            self.candidate.as_mut()
        } else {
            None
        }
    }

    fn received(&mut self, conn: ConnId, bytes: &[u8], now: Instant, out: &mut Out) {
        let Some(c) = self.conn_mut(conn) else {
            return;
        };
        c.rx.extend_from_slice(bytes);
        let mut offset = 0;
        loop {
            let codec = self
                .negotiated
                .as_ref()
                .filter(|_| self.primary.as_ref().is_some_and(|p| p.id == conn))
                .map_or_else(Codec::default, |n| n.codec);
            let Some(c) = self.conn_mut(conn) else {
                // The connection was closed by the last event.
                return;
            };
            let buf = &c.rx[offset..];
            let event = match frame_len(buf) {
                Ok(None) => break,
                Ok(Some(len)) => {
                    let frame = &buf[..len];
                    offset += len;
                    match Message::decode(frame, codec) {
                        Ok(Message::Open(o)) => Event::BgpOpen(conn, o),
                        Ok(Message::Update(u)) => Event::UpdateMsg(conn, u),
                        Ok(Message::Notification(n)) => Event::NotifMsg(conn, n),
                        Ok(Message::Keepalive) => Event::KeepAliveMsg(conn),
                        Ok(Message::RouteRefresh(r)) => Event::RouteRefreshMsg(conn, r),
                        Err(e) => Event::MsgErr(conn, e),
                    }
                }
                Err(e) => {
                    // The stream cannot be resynchronised: drop what is buffered.
                    offset = c.rx.len();
                    Event::MsgErr(conn, e)
                }
            };
            self.fsm_event(event, now, out);
        }
        if let Some(c) = self.conn_mut(conn) {
            c.rx.drain(..offset.min(c.rx.len()));
            debug_assert!(c.rx.len() < MAX_MESSAGE_LEN);
        }
    }

    /// The RFC 4271 §8.2.2 state machine.
    fn fsm_event(&mut self, event: Event, now: Instant, out: &mut Out) {
        use State::*;
        // Events on a second connection are collision handling, whatever the state.
        if let Some(conn) = event_conn(&event) {
            if self.candidate.as_ref().is_some_and(|c| c.id == conn) {
                return self.candidate_event(event, now, out);
            }
            if self.primary.as_ref().is_none_or(|c| c.id != conn)
                && !matches!(event, Event::TcpConnectionConfirmed(..))
            {
                // A connection we already let go of.
                return;
            }
        }
        match (self.state, event) {
            (_, Event::ManualStop) => {
                self.admin_up = false;
                self.connect_retry_counter = 0;
                self.enter_idle(
                    Some(Notification::new(code::CEASE, cease::ADMIN_SHUTDOWN)),
                    now,
                    out,
                );
            }
            (Idle, Event::ManualStart) => {
                self.admin_up = true;
                self.connect_retry_counter = 0;
                self.start(now, out);
            }
            (_, Event::ManualStart) => {}
            (Idle, Event::ConnectRetryTimerExpires) => {
                if self.admin_up {
                    self.start(now, out);
                }
            }
            (Connect | Active, Event::ConnectRetryTimerExpires) => {
                if self.config.passive || !self.reachable {
                    self.state = Active;
                } else {
                    out.push(Action::Connect {
                        session: self.id,
                        local: self.config.local_addr,
                        peer: self.config.peer_addr,
                        port: self.config.port,
                    });
                    self.arm(Timer::ConnectRetry, now + self.config.connect_retry, out);
                    self.state = Connect;
                }
            }
            (_, Event::ConnectRetryTimerExpires) => {}

            (_, Event::TcpConnectionConfirmed(conn, direction)) => {
                self.tcp_connected(conn, direction, now, out)
            }
            (Connect, Event::TcpConnectionFails(None)) => {
                self.state = Active;
                if self.timers[Timer::ConnectRetry.index()].is_none() {
                    self.arm(Timer::ConnectRetry, now + self.config.connect_retry, out);
                }
            }
            (_, Event::TcpConnectionFails(None)) => {}
            (OpenSent | OpenConfirm | Established, Event::TcpConnectionFails(Some(_))) => {
                self.primary = None;
                if self.state != Established {
                    if let Some(c) = self.candidate.take() {
                        // The other connection carries on where this one failed.
                        self.primary = Some(c);
                        self.state = OpenSent;
                        return;
                    }
                }
                self.enter_idle(None, now, out);
            }
            (_, Event::TcpConnectionFails(Some(_))) => {}

            (OpenSent | OpenConfirm | Established, Event::HoldTimerExpires) => {
                self.enter_idle(
                    Some(Notification::new(code::HOLD_TIMER_EXPIRED, 0)),
                    now,
                    out,
                );
            }
            (_, Event::HoldTimerExpires) => {}
            (OpenConfirm | Established, Event::KeepaliveTimerExpires) => {
                self.send_to_primary(&Message::Keepalive, out);
                self.arm_keepalive(now, out);
            }
            (_, Event::KeepaliveTimerExpires) => {}

            (OpenSent, Event::BgpOpen(_, open)) => match self.check_open(&open) {
                Ok(n) => {
                    self.negotiated = Some(n);
                    self.send_to_primary(&Message::Keepalive, out);
                    self.arm_hold(now, out);
                    self.arm_keepalive(now, out);
                    self.state = OpenConfirm;
                }
                Err(notification) => self.enter_idle(Some(notification), now, out),
            },
            (OpenConfirm, Event::KeepAliveMsg(_)) => {
                self.arm_hold(now, out);
                self.state = Established;
                if let Some(c) = self.candidate.take() {
                    // RFC 4271 §6.8: an Established connection wins a collision.
                    self.close_with(
                        c.id,
                        Some(Notification::new(code::CEASE, cease::CONNECTION_COLLISION)),
                        out,
                    );
                }
                out.push(Action::SessionUp { session: self.id });
                self.sync_adj_rib_out(out);
                if self.negotiated.as_ref().is_some_and(|n| n.graceful_restart) {
                    // RFC 4724 §2: our initial routes are all sent.
                    self.send_to_primary(&self.end_of_rib(), out);
                }
                self.restarting = false;
            }
            (Established, Event::KeepAliveMsg(_)) => self.arm_hold(now, out),
            (Established, Event::UpdateMsg(_, update)) => {
                self.arm_hold(now, out);
                self.process_update(update, now, out);
            }
            (Established, Event::RouteRefreshMsg(_, rr)) => {
                // RFC 2918: re-advertise the Adj-RIB-Out of the family asked
                // for; at most once per interval, the rest coalesced.
                if AfiSafi::from_codes(rr.afi, rr.safi) == Some(self.config.family()) {
                    let due = self
                        .last_refresh_answer
                        .map(|t| t + self.config.route_refresh_interval);
                    match due {
                        Some(due) if due > now => {
                            if !self.refresh_pending {
                                self.refresh_pending = true;
                                self.arm(Timer::RouteRefresh, due, out);
                            }
                        }
                        _ => self.answer_route_refresh(now, out),
                    }
                }
            }
            (Established, Event::RouteRefreshTimerExpires) => {
                if std::mem::take(&mut self.refresh_pending) {
                    self.answer_route_refresh(now, out);
                }
            }
            (_, Event::RouteRefreshTimerExpires) => self.refresh_pending = false,
            (OpenSent | OpenConfirm | Established, Event::OutOfResources(_)) => {
                tracing::warn!(
                    session = self.id,
                    "peer does not read what we send: output queue full"
                );
                self.enter_idle(
                    Some(Notification::new(code::CEASE, cease::OUT_OF_RESOURCES)),
                    now,
                    out,
                );
            }
            (OpenSent | OpenConfirm | Established, Event::NotifMsg(_, n)) => {
                tracing::info!(session = self.id, %n, "peer sent NOTIFICATION");
                self.last_error = Some(n.clone());
                self.received_notification = Some(n);
                self.enter_idle(None, now, out);
            }
            (OpenSent | OpenConfirm | Established, Event::MsgErr(_, e)) => {
                tracing::info!(session = self.id, error = %e, "bad message from peer");
                self.enter_idle(e.notification(), now, out);
            }
            (OpenSent | OpenConfirm | Established, _) => {
                // RFC 6608: a message unexpected in this state is an FSM error.
                let subcode = match self.state {
                    OpenSent => 1,
                    OpenConfirm => 2,
                    _ => 3,
                };
                self.enter_idle(Some(Notification::new(code::FSM, subcode)), now, out);
            }
            (Idle | Connect | Active, _) => {}
        }
    }
}

fn event_conn(e: &Event) -> Option<ConnId> {
    match e {
        Event::TcpConnectionConfirmed(c, _)
        | Event::BgpOpen(c, _)
        | Event::MsgErr(c, _)
        | Event::NotifMsg(c, _)
        | Event::KeepAliveMsg(c)
        | Event::UpdateMsg(c, _)
        | Event::RouteRefreshMsg(c, _)
        | Event::OutOfResources(c) => Some(*c),
        Event::TcpConnectionFails(c) => *c,
        _ => None,
    }
}
