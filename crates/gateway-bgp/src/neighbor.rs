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
                if self.config.passive {
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

    fn answer_route_refresh(&mut self, now: Instant, out: &mut Out) {
        self.last_refresh_answer = Some(now);
        self.adj_rib_out.clear();
        self.sync_adj_rib_out(out);
    }

    /// Leaves Idle: active open unless passive.
    fn start(&mut self, now: Instant, out: &mut Out) {
        if self.config.passive {
            self.state = State::Active;
        } else {
            out.push(Action::Connect {
                session: self.id,
                local: self.config.local_addr,
                peer: self.config.peer_addr,
                port: self.config.port,
            });
            self.state = State::Connect;
            self.arm(Timer::ConnectRetry, now + self.config.connect_retry, out);
        }
    }

    fn tcp_connected(&mut self, conn: ConnId, direction: Direction, now: Instant, out: &mut Out) {
        match self.state {
            // Accepting in Idle after an error lets a restarted peer come
            // back before our own connect-retry fires.
            State::Idle | State::Connect | State::Active if self.admin_up => {
                self.stop(Timer::ConnectRetry, out);
                self.primary = Some(Conn::new(conn, direction));
                self.send_open(conn, out);
                self.arm(Timer::Hold, now + OPEN_SENT_HOLD, out);
                self.state = State::OpenSent;
            }
            State::OpenSent | State::OpenConfirm
                if self.candidate.is_none()
                    && self
                        .primary
                        .as_ref()
                        .is_some_and(|p| p.direction != direction) =>
            {
                self.candidate = Some(Conn::new(conn, direction));
                self.send_open(conn, out);
            }
            _ => out.push(Action::Close {
                session: self.id,
                conn,
            }),
        }
    }

    /// Events on the second connection of a collision (RFC 4271 §6.8).
    fn candidate_event(&mut self, event: Event, now: Instant, out: &mut Out) {
        let Some(cand) = self.candidate.as_ref() else {
            return;
        };
        let cand_id = cand.id;
        let cand_dir = cand.direction;
        match event {
            Event::BgpOpen(_, open) => {
                let n = match self.check_open(&open) {
                    Ok(n) => n,
                    Err(notification) => {
                        self.candidate = None;
                        self.close_with(cand_id, Some(notification), out);
                        return;
                    }
                };
                // The higher BGP Identifier keeps the connection it initiated.
                let keep = if u32::from(self.config.router_id) < u32::from(n.peer_id) {
                    Direction::Incoming
                } else {
                    Direction::Outgoing
                };
                let collision = Some(Notification::new(code::CEASE, cease::CONNECTION_COLLISION));
                if cand_dir == keep && self.state != State::Established {
                    let cand = self.candidate.take();
                    if let Some(old) = std::mem::replace(&mut self.primary, cand) {
                        self.close_with(old.id, collision, out);
                    }
                    self.negotiated = Some(n);
                    self.send_to_primary(&Message::Keepalive, out);
                    self.arm_hold(now, out);
                    self.arm_keepalive(now, out);
                    self.state = State::OpenConfirm;
                } else {
                    self.candidate = None;
                    self.close_with(cand_id, collision, out);
                }
            }
            Event::TcpConnectionFails(_) | Event::NotifMsg(..) => self.candidate = None,
            Event::OutOfResources(_) => {
                self.candidate = None;
                self.close_with(
                    cand_id,
                    Some(Notification::new(code::CEASE, cease::OUT_OF_RESOURCES)),
                    out,
                );
            }
            _ => {
                self.candidate = None;
                self.close_with(cand_id, Some(Notification::new(code::FSM, 1)), out);
            }
        }
    }

    fn check_open(&self, open: &Open) -> Result<Negotiated, Notification> {
        let peer_asn = open.asn();
        if peer_asn != self.config.peer_asn {
            return Err(Notification::with_data(
                code::OPEN_MESSAGE,
                open_error::BAD_PEER_AS,
                open.my_as.to_be_bytes().to_vec(),
            ));
        }
        if open.hold_time == 1 || open.hold_time == 2 {
            return Err(Notification::with_data(
                code::OPEN_MESSAGE,
                open_error::UNACCEPTABLE_HOLD_TIME,
                open.hold_time.to_be_bytes().to_vec(),
            ));
        }
        if open.bgp_identifier.is_unspecified() {
            return Err(Notification::with_data(
                code::OPEN_MESSAGE,
                open_error::BAD_BGP_IDENTIFIER,
                open.bgp_identifier.octets().to_vec(),
            ));
        }
        let ours = [self.config.family()];
        let theirs = open.families();
        Ok(Negotiated {
            hold_time: self.config.hold_time.min(open.hold_time),
            codec: Codec {
                four_octet_as: open.four_octet_as().is_some(),
            },
            families: ours.into_iter().filter(|f| theirs.contains(f)).collect(),
            peer_id: open.bgp_identifier,
            graceful_restart: self.config.graceful_restart.is_some()
                && open.graceful_restart().is_some(),
        })
    }

    fn send_open(&self, conn: ConnId, out: &mut Out) {
        let mut open = Open::new(
            self.config.local_asn,
            self.config.hold_time,
            self.config.router_id,
            &[self.config.family()],
        );
        if let Some(restart_time) = self.config.graceful_restart {
            let f = self.config.family();
            open.capabilities
                .push(Capability::GracefulRestart(GracefulRestart {
                    restarting: self.restarting,
                    restart_time: restart_time.min(0x0fff),
                    // What we announce are the VPC's prefixes, reached on
                    // the LAN whatever the BGP session does: forwarding to
                    // them survives our restart.
                    families: vec![(f.afi(), f.safi(), true)],
                }));
        }
        out.push(Action::Send {
            session: self.id,
            conn,
            bytes: Message::Open(open).encode(Codec::default()),
        });
    }

    fn codec(&self) -> Codec {
        self.negotiated
            .as_ref()
            .map_or_else(Codec::default, |n| n.codec)
    }

    fn send_to_primary(&self, msg: &Message, out: &mut Out) {
        if let Some(p) = &self.primary {
            out.push(Action::Send {
                session: self.id,
                conn: p.id,
                bytes: msg.encode(self.codec()),
            });
        }
    }

    fn close_with(&self, conn: ConnId, notification: Option<Notification>, out: &mut Out) {
        if let Some(n) = notification {
            out.push(Action::Send {
                session: self.id,
                conn,
                bytes: Message::Notification(n).encode(self.codec()),
            });
        }
        out.push(Action::Close {
            session: self.id,
            conn,
        });
    }

    fn arm(&mut self, timer: Timer, deadline: Instant, out: &mut Out) {
        self.timers[timer.index()] = Some(deadline);
        out.push(Action::ArmTimer {
            session: self.id,
            timer,
            deadline,
        });
    }

    fn stop(&mut self, timer: Timer, out: &mut Out) {
        if self.timers[timer.index()].take().is_some() {
            out.push(Action::StopTimer {
                session: self.id,
                timer,
            });
        }
    }

    fn arm_hold(&mut self, now: Instant, out: &mut Out) {
        let hold = self.negotiated.as_ref().map_or(0, |n| n.hold_time);
        if hold == 0 {
            self.stop(Timer::Hold, out);
        } else {
            self.arm(Timer::Hold, now + Duration::from_secs(hold.into()), out);
        }
    }

    fn arm_keepalive(&mut self, now: Instant, out: &mut Out) {
        let hold = self.negotiated.as_ref().map_or(0, |n| n.hold_time);
        if hold == 0 {
            self.stop(Timer::Keepalive, out);
        } else {
            // RFC 4271 §10: one third of the hold time.
            let ms = u64::from(hold) * 1000 / 3;
            self.arm(Timer::Keepalive, now + Duration::from_millis(ms), out);
        }
    }

    /// Back to Idle: optional NOTIFICATION, connections closed, routes
    /// withdrawn, and an automatic restart after connect-retry when the
    /// session is administratively up.
    fn enter_idle(&mut self, notification: Option<Notification>, now: Instant, out: &mut Out) {
        let received = self.received_notification.take();
        let cause = match (&notification, received) {
            (Some(n), _) => Some(crate::DownCause::Sent(n.clone())),
            (None, Some(n)) => Some(crate::DownCause::Received(n)),
            (None, None) => None,
        };
        if let Some(n) = &notification {
            tracing::info!(session = self.id, %n, "closing session");
            self.last_error = Some(n.clone());
        }
        if let Some(p) = self.primary.take() {
            self.close_with(p.id, notification.clone(), out);
        }
        if let Some(c) = self.candidate.take() {
            self.close_with(c.id, notification, out);
        }
        for t in Timer::ALL {
            self.stop(t, out);
        }
        self.refresh_pending = false;
        self.last_refresh_answer = None;
        let was_established = self.state == State::Established;
        self.state = State::Idle;
        self.negotiated = None;
        self.adj_rib_out.clear();
        self.accepted = 0;
        for (prefix, _) in std::mem::take(&mut self.adj_rib_in) {
            // Only what passed import policy ever reached the Loc-RIB.
            if self.route_propagation && self.policy.as_ref().is_some_and(|p| p.accepts_in(&prefix))
            {
                out.rib.push(RibChange { prefix, path: None });
            }
        }
        if was_established {
            out.push(Action::SessionDown {
                session: self.id,
                cause,
            });
        }
        if self.admin_up {
            self.connect_retry_counter = self.connect_retry_counter.saturating_add(1);
            self.arm(Timer::ConnectRetry, now + self.config.connect_retry, out);
        }
    }

    /// Whether `update` is the End-of-RIB marker of our family (RFC 4724
    /// §2): an empty UPDATE for IPv4 unicast, else one holding only an
    /// empty MP_UNREACH_NLRI of the family.
    fn is_end_of_rib(&self, update: &Update) -> bool {
        if !update.withdrawn_routes.is_empty() || !update.nlri.is_empty() {
            return false;
        }
        match (self.config.family(), update.path_attributes.as_slice()) {
            (AfiSafi::Ipv4Unicast, []) => true,
            (family, [PathAttribute::MpUnreachNlri(m)]) => {
                m.afi_safi == family && m.withdrawn.is_empty()
            }
            _ => false,
        }
    }

    fn process_update(&mut self, update: Update, now: Instant, out: &mut Out) {
        if self.is_end_of_rib(&update) {
            out.push(Action::EndOfRib { session: self.id });
            return;
        }
        let mut withdrawn: Vec<IpNet> = update
            .withdrawn_routes
            .iter()
            .map(|p| IpNet::V4(*p))
            .collect();
        let mut announced: Vec<(IpNet, IpAddr)> = Vec::new();
        let mut origin = None;
        let mut as_path = None;
        let mut med = 0;
        let mut communities = Vec::new();
        let mut v4_next_hop = None;
        for attr in update.path_attributes {
            match attr {
                PathAttribute::Origin(o) => origin = Some(o),
                PathAttribute::AsPath(p) => as_path = Some(p),
                PathAttribute::NextHop(nh) => v4_next_hop = Some(IpAddr::V4(nh)),
                PathAttribute::MultiExitDisc(m) => med = m,
                PathAttribute::Communities(c) => communities = c,
                PathAttribute::MpReachNlri(m) => {
                    let nh = m.next_hop.addr();
                    announced.extend(m.nlri.into_iter().map(|p| (p, nh)));
                }
                PathAttribute::MpUnreachNlri(m) => withdrawn.extend(m.withdrawn),
                _ => {}
            }
        }
        if let Some(nh) = v4_next_hop {
            announced.extend(update.nlri.iter().map(|p| (IpNet::V4(*p), nh)));
        }
        let families = self
            .negotiated
            .as_ref()
            .map(|n| n.families.clone())
            .unwrap_or_default();
        // A family that was not negotiated is ignored (RFC 4760 §6).
        announced.retain(|(p, _)| families.contains(&AfiSafi::of_prefix(p)));
        withdrawn.retain(|p| families.contains(&AfiSafi::of_prefix(p)));

        let as_path = as_path.unwrap_or_default();
        let usable = update.treat_as_withdraw.is_none()
            // RFC 4271 §9.1.2: our own ASN in the path is a loop.
            && !as_path.contains(self.config.local_asn)
            // An eBGP peer must put its own ASN first (RFC 4271 §6.3, RFC 7606 treat-as-withdraw).
            && as_path.first_asn() == Some(self.config.peer_asn);
        if let Some(e) = &update.treat_as_withdraw {
            tracing::debug!(session = self.id, error = %e, "treat-as-withdraw");
        }
        if !usable {
            withdrawn.extend(announced.drain(..).map(|(p, _)| p));
        }
        for prefix in withdrawn {
            if self.adj_rib_in.remove(&prefix).is_some() && self.imports(&prefix) {
                self.accepted -= 1;
                out.rib.push(RibChange { prefix, path: None });
            }
        }
        if announced.is_empty() {
            return;
        }
        let local_pref = local_pref_from_communities(&communities);
        let mut shared: Option<Arc<Path>> = None;
        for (prefix, next_hop) in announced {
            let path = match &shared {
                Some(p) if p.next_hop == next_hop => p.clone(),
                _ => {
                    let p = Arc::new(Path {
                        session: self.id,
                        next_hop,
                        origin: origin.unwrap_or(Origin::Incomplete),
                        as_path: as_path.clone(),
                        med,
                        local_pref,
                        communities: communities.clone(),
                        peer_addr: self.config.peer_addr,
                    });
                    shared = Some(p.clone());
                    p
                }
            };
            let replaced = self.adj_rib_in.insert(prefix, path.clone()).is_some();
            if self.imports(&prefix) {
                if !replaced {
                    self.accepted += 1;
                }
                out.rib.push(RibChange {
                    prefix,
                    path: Some(path),
                });
            }
        }
        if let Some(max) = self.config.max_prefixes {
            if self.adj_rib_in.len() > max as usize {
                // RFC 4486 §4: AFI, SAFI and the limit as data.
                let mut data = Vec::with_capacity(7);
                data.extend_from_slice(&self.config.family().afi().to_be_bytes());
                data.push(self.config.family().safi());
                data.extend_from_slice(&max.to_be_bytes());
                tracing::warn!(session = self.id, max, "maximum prefix count exceeded");
                self.enter_idle(
                    Some(Notification::with_data(
                        code::CEASE,
                        cease::MAX_PREFIXES,
                        data,
                    )),
                    now,
                    out,
                );
            }
        }
    }

    /// Brings the peer's view in line with what policy allows us to announce.
    fn sync_adj_rib_out(&mut self, out: &mut Out) {
        if self.state != State::Established {
            return;
        }
        let family = self.config.family();
        let negotiated = self
            .negotiated
            .as_ref()
            .is_some_and(|n| n.families.contains(&family));
        let desired: BTreeSet<IpNet> = match &self.policy {
            Some(policy) if self.route_propagation && negotiated => self
                .exported
                .iter()
                .map(|p| p.trunc())
                .filter(|p| AfiSafi::of_prefix(p) == family && policy.allows_out(p))
                .collect(),
            _ => BTreeSet::new(),
        };
        let withdraw: Vec<IpNet> = self.adj_rib_out.difference(&desired).copied().collect();
        let announce: Vec<IpNet> = desired.difference(&self.adj_rib_out).copied().collect();
        for msg in self.build_updates(&withdraw, &announce) {
            self.send_to_primary(&msg, out);
        }
        self.adj_rib_out = desired;
    }

    fn build_updates(&self, withdraw: &[IpNet], announce: &[IpNet]) -> Vec<Message> {
        // Room for NLRI once the header, the two length fields and the
        // attributes are accounted for, with margin for MP_* headers.
        const BUDGET: usize = MAX_MESSAGE_LEN - 19 - 4 - 100;
        let chunks = |prefixes: &[IpNet]| -> Vec<Vec<IpNet>> {
            let mut all = Vec::new();
            let mut cur = Vec::new();
            let mut size = 0;
            for p in prefixes {
                let l = crate::attribute::prefix_wire_len(p);
                if size + l > BUDGET {
                    all.push(std::mem::take(&mut cur));
                    size = 0;
                }
                size += l;
                cur.push(*p);
            }
            if !cur.is_empty() {
                all.push(cur);
            }
            all
        };
        let v4 = |ps: Vec<IpNet>| -> Vec<Ipv4Net> {
            ps.into_iter()
                .filter_map(|p| match p {
                    IpNet::V4(v) => Some(v),
                    IpNet::V6(_) => None,
                })
                .collect()
        };
        let mut msgs = Vec::new();
        let family = self.config.family();
        for chunk in chunks(withdraw) {
            msgs.push(Message::Update(match family {
                AfiSafi::Ipv4Unicast => Update {
                    withdrawn_routes: v4(chunk),
                    ..Update::default()
                },
                AfiSafi::Ipv6Unicast => Update {
                    path_attributes: vec![PathAttribute::MpUnreachNlri(MpUnreachNlri {
                        afi_safi: family,
                        withdrawn: chunk,
                    })],
                    ..Update::default()
                },
            }));
        }
        let base = vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::sequence(vec![self.config.local_asn])),
        ];
        for chunk in chunks(announce) {
            let mut attrs = base.clone();
            let update = match self.config.local_addr {
                IpAddr::V4(nh) => {
                    attrs.push(PathAttribute::NextHop(nh));
                    Update {
                        path_attributes: attrs,
                        nlri: v4(chunk),
                        ..Update::default()
                    }
                }
                IpAddr::V6(global) => {
                    attrs.insert(
                        0,
                        PathAttribute::MpReachNlri(MpReachNlri {
                            afi_safi: family,
                            next_hop: MpNextHop::Ipv6 {
                                global,
                                link_local: None,
                            },
                            nlri: chunk,
                        }),
                    );
                    Update {
                        path_attributes: attrs,
                        ..Update::default()
                    }
                }
            };
            msgs.push(Message::Update(update));
        }
        msgs
    }

    /// Changes import/export policy; Adj-RIB-In is re-evaluated and the
    /// peer's view updated without touching the session.
    pub(crate) fn reconfigure(
        &mut self,
        policy: Option<Option<RoutingPolicy>>,
        route_propagation: Option<bool>,
        exported: Option<Vec<IpNet>>,
        out: &mut Out,
    ) {
        let before: Vec<IpNet> = self
            .adj_rib_in
            .keys()
            .filter(|p| self.imports(p))
            .copied()
            .collect();
        if let Some(p) = policy {
            self.policy = p;
        }
        if let Some(r) = route_propagation {
            self.route_propagation = r;
        }
        if let Some(e) = exported {
            self.exported = e;
        }
        let before: HashSet<IpNet> = before.into_iter().collect();
        self.accepted = 0;
        for (prefix, path) in &self.adj_rib_in {
            let now_in = self.imports(prefix);
            self.accepted += usize::from(now_in);
            let was_in = before.contains(prefix);
            if now_in && !was_in {
                out.rib.push(RibChange {
                    prefix: *prefix,
                    path: Some(path.clone()),
                });
            } else if was_in && !now_in {
                out.rib.push(RibChange {
                    prefix: *prefix,
                    path: None,
                });
            }
        }
        self.sync_adj_rib_out(out);
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
