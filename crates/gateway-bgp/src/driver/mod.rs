//! The tokio driver: runs a [`Speaker`] on real TCP sockets (port 179 bound to
//! each session's interconnection address, active connect and passive
//! accept) and real timers, and gives the agent a [`BgpHandle`] to change
//! sessions and policy at runtime plus a channel of [`BgpEvent`]s (Loc-RIB
//! changes and session up/down).
//!
//! It holds no protocol logic: every decision is the `Speaker`'s.
//!
//! Memory a peer can make us hold is bounded: what we read is bounded by
//! the message size and a short channel (TCP pushes back), and what we send
//! waits in a per-connection output queue bounded in bytes
//! ([`DriverLimits::out_queue_bytes`]). A peer that stops reading fills it;
//! the session then ends with a Cease NOTIFICATION (RFC 4486 subcode 8, Out
//! of Resources), the queue is dropped at once, and the connection gets a
//! last [`FLUSH_TIMEOUT`] to take the end of the message under way and the
//! NOTIFICATION before it is closed. ROUTE-REFRESH answers are rate-limited
//! by the session itself ([`SessionConfig::route_refresh_interval`]).
//!
//! How the agent uses it, per connection and IP family:
//!
//! ```no_run
//! # async fn agent() -> Result<(), Box<dyn std::error::Error>> {
//! use gateway_bgp::driver::{self, BgpEvent};
//! use gateway_bgp::{RouteChange, RoutingPolicy, SessionConfig, SessionPolicy};
//!
//! let (bgp, mut events) = driver::spawn();
//! // From the connection's bgp_session_ipv4 and the gateways' ASNs.
//! let config = SessionConfig::from_interconnect("169.254.0.1/30", "169.254.0.2/30", 12876, 65001)?;
//! // From the attached routing policy (None when detached: RFC 8212).
//! let policy = RoutingPolicy::from_filters(&["203.0.113.0/24"], &["198.51.100.0/24"])?;
//! let session_id = 1; // the agent's choice, e.g. per connection and family
//! bgp.add_session(session_id, config, SessionPolicy {
//!     routing_policy: Some(policy),
//!     route_propagation: true,
//!     exported: vec!["198.51.100.0/24".parse()?],
//! }).await?;
//! // Later: bgp.set_route_propagation(session_id, false).await?, set_routing_policy,
//! // set_exported_prefixes, session_status, loc_rib, remove_session.
//! while let Some(event) = events.recv().await {
//!     match event {
//!         BgpEvent::Route(RouteChange::Install(route)) => { /* ROUTES_V4/V6 + kernel route via route.session's tunnel */ }
//!         BgpEvent::Route(RouteChange::Withdraw { prefix }) => { /* remove */ }
//!         BgpEvent::SessionUp(id) | BgpEvent::SessionDown(id, _) => { /* connection status */ }
//!         BgpEvent::EndOfRib(id) => { /* routes kept stale across a restart may go */ }
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_util::time::{delay_queue, DelayQueue};

use crate::message::Notification;
use crate::{
    Action, ConnId, Direction, Input, Route, RouteChange, RoutingPolicy, SessionConfig, SessionId,
    SessionPolicy, Speaker, SpeakerError, State, Timer,
};

/// Bound on an outgoing connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_CHUNK: usize = 64 * 1024;
/// Events waiting for the agent. Bounded on purpose: a slow consumer
/// stalls the driver, which stops reading, so TCP pushes back on the peer
/// instead of a million route changes piling up in memory.
const EVENT_QUEUE: usize = 4096;
/// Socket events (chunks of at most READ_CHUNK) waiting for the driver;
/// bounded so that a busy driver makes the readers, hence TCP, wait.
const NET_QUEUE: usize = 16;
/// Once a connection is closed, the time it gets to take what is still
/// queued for it (a NOTIFICATION last); a peer that does not read by then
/// is cut off, so a closed connection holds no memory for long.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Resource bounds of a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverLimits {
    /// Bytes that may wait to be written on one connection. Must hold one
    /// full Adj-RIB-Out (the answer to a ROUTE-REFRESH is queued at once):
    /// 16 MiB is about 3 million IPv4 prefixes.
    pub out_queue_bytes: usize,
    /// Agent commands waiting for the driver; callers wait beyond it.
    pub command_queue: usize,
}

impl Default for DriverLimits {
    fn default() -> Self {
        Self {
            out_queue_bytes: 16 * 1024 * 1024,
            command_queue: 64,
        }
    }
}

/// Output queue figures over all connections of a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Bytes waiting in output queues now.
    pub queued_bytes: usize,
    /// The most one connection's queue ever held.
    pub peak_bytes: usize,
    /// Connections closed because their queue was full.
    pub overflows: u64,
}

#[derive(Default)]
struct Stats {
    queued_bytes: AtomicUsize,
    peak_bytes: AtomicUsize,
    overflows: AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BgpEvent {
    Route(RouteChange),
    SessionUp(SessionId),
    /// With the NOTIFICATION that ended it, if one did.
    SessionDown(SessionId, Option<crate::DownCause>),
    /// The peer's initial routes are all in (RFC 4724 End-of-RIB).
    EndOfRib(SessionId),
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Speaker(#[from] SpeakerError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the BGP driver has stopped")]
    Stopped,
}

enum Command {
    AddSession {
        id: SessionId,
        config: Box<SessionConfig>,
        policy: SessionPolicy,
        reply: oneshot::Sender<Result<(), DriverError>>,
    },
    RemoveSession(SessionId, oneshot::Sender<Result<(), DriverError>>),
    SetPolicy(
        SessionId,
        Option<RoutingPolicy>,
        oneshot::Sender<Result<(), DriverError>>,
    ),
    SetPropagation(SessionId, bool, oneshot::Sender<Result<(), DriverError>>),
    SetReachable(SessionId, bool),
    SetExported(
        SessionId,
        Vec<IpNet>,
        oneshot::Sender<Result<(), DriverError>>,
    ),
    LocRib(oneshot::Sender<Vec<Route>>),
    SessionStatus(SessionId, oneshot::Sender<Option<SessionStatus>>),
    PrefixCounts(oneshot::Sender<Vec<PrefixCounts>>),
}

/// One session's prefix counts (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixCounts {
    pub session: SessionId,
    /// In the Adj-RIB-In (before import policy).
    pub received: usize,
    /// Of those, accepted by import policy (the rest are rejected).
    pub accepted: usize,
}

/// A session as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    pub state: State,
    /// The last NOTIFICATION sent or received.
    pub last_error: Option<Notification>,
    /// Prefixes received, before import policy.
    pub adj_rib_in: usize,
    /// Of those, accepted by import policy.
    pub accepted: usize,
    /// Prefixes announced.
    pub adj_rib_out: usize,
    /// Bytes waiting to be written to the peer.
    pub out_queue_bytes: usize,
    /// Established with Graceful Restart negotiated (RFC 4724): ending it
    /// without a NOTIFICATION leaves the peer our routes, marked stale.
    pub graceful_restart: bool,
}

enum NetEvent {
    Accepted {
        local: SocketAddr,
        peer: SocketAddr,
        stream: TcpStream,
    },
    Connected {
        session: SessionId,
        stream: TcpStream,
    },
    ConnectFailed {
        session: SessionId,
    },
    Data {
        conn: ConnId,
        bytes: Vec<u8>,
    },
    Closed {
        conn: ConnId,
    },
}

/// The agent's side of a running speaker. Cheap to clone.
#[derive(Clone)]
pub struct BgpHandle {
    tx: mpsc::Sender<Command>,
    stats: Arc<Stats>,
}

/// Starts the driver task on the current tokio runtime, with the default
/// [`DriverLimits`].
///
/// The agent must keep draining the returned receiver (from its own task):
/// while the queue is full the driver waits, and so do [`BgpHandle`] calls.
pub fn spawn() -> (BgpHandle, mpsc::Receiver<BgpEvent>) {
    spawn_with(DriverLimits::default())
}

/// [`spawn`] with explicit limits.
pub fn spawn_with(limits: DriverLimits) -> (BgpHandle, mpsc::Receiver<BgpEvent>) {
    let (tx, rx) = mpsc::channel(limits.command_queue.max(1));
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (net_tx, net_rx) = mpsc::channel(NET_QUEUE);
    let stats = Arc::new(Stats::default());
    let main = Main {
        speaker: Speaker::new(),
        conns: HashMap::new(),
        timers: DelayQueue::new(),
        timer_keys: HashMap::new(),
        listeners: HashMap::new(),
        net_tx,
        next_conn: 1,
        events: events_tx,
        limits,
        stats: stats.clone(),
    };
    tokio::spawn(main.run(rx, net_rx));
    (BgpHandle { tx, stats }, events_rx)
}

impl BgpHandle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }

    /// Adds and starts a session; listens on `config.local_addr:config.port`.
    pub async fn add_session(
        &self,
        id: SessionId,
        config: SessionConfig,
        policy: SessionPolicy,
    ) -> Result<(), DriverError> {
        self.call(|reply| Command::AddSession {
            id,
            config: Box::new(config),
            policy,
            reply,
        })
        .await?
    }

    pub async fn remove_session(&self, id: SessionId) -> Result<(), DriverError> {
        self.call(|r| Command::RemoveSession(id, r)).await?
    }

    pub async fn set_routing_policy(
        &self,
        id: SessionId,
        policy: Option<RoutingPolicy>,
    ) -> Result<(), DriverError> {
        self.call(|r| Command::SetPolicy(id, policy, r)).await?
    }

    pub async fn set_route_propagation(
        &self,
        id: SessionId,
        enabled: bool,
    ) -> Result<(), DriverError> {
        self.call(|r| Command::SetPropagation(id, enabled, r))
            .await?
    }

    /// Tells a session whether its peer can be reached (see
    /// [`Input::Reachable`](crate::neighbor::Input::Reachable)), without
    /// waiting: false if the command queue is full (the caller tries again
    /// later; an untold session keeps connecting as before).
    pub fn try_set_reachable(&self, id: SessionId, reachable: bool) -> bool {
        self.tx
            .try_send(Command::SetReachable(id, reachable))
            .is_ok()
    }

    pub async fn set_exported_prefixes(
        &self,
        id: SessionId,
        exported: Vec<IpNet>,
    ) -> Result<(), DriverError> {
        self.call(|r| Command::SetExported(id, exported, r)).await?
    }

    /// The selected routes, in no particular order.
    pub async fn loc_rib(&self) -> Result<Vec<Route>, DriverError> {
        self.call(Command::LocRib).await
    }

    /// Output queue figures (no round trip to the driver task).
    pub fn queue_stats(&self) -> QueueStats {
        QueueStats {
            queued_bytes: self.stats.queued_bytes.load(Ordering::Relaxed),
            peak_bytes: self.stats.peak_bytes.load(Ordering::Relaxed),
            overflows: self.stats.overflows.load(Ordering::Relaxed),
        }
    }

    /// Every session's prefix counts (one round trip for all of them).
    pub async fn prefix_counts(&self) -> Result<Vec<PrefixCounts>, DriverError> {
        self.call(Command::PrefixCounts).await
    }

    /// `None` when there is no such session.
    pub async fn session_status(
        &self,
        id: SessionId,
    ) -> Result<Option<SessionStatus>, DriverError> {
        self.call(|r| Command::SessionStatus(id, r)).await
    }
}

struct ConnHandle {
    session: SessionId,
    out: Arc<OutQueue>,
    reader: JoinHandle<()>,
}

mod out_queue;
use out_queue::{write_loop, OutQueue};

/// The latest a timer is armed for (`DelayQueue` refuses beyond ~2 years).
const TIMER_HORIZON: Duration = Duration::from_secs(365 * 24 * 3600);

struct Main {
    speaker: Speaker,
    conns: HashMap<ConnId, ConnHandle>,
    /// Armed timers (keepalive, hold, connect retry... per session): a
    /// timing wheel (tokio-util's `DelayQueue`) and each timer's entry in
    /// it, so that arming, stopping and firing cost the same whatever the
    /// number of sessions.
    timers: DelayQueue<(SessionId, Timer)>,
    timer_keys: HashMap<(SessionId, Timer), delay_queue::Key>,
    listeners: HashMap<SocketAddr, JoinHandle<()>>,
    net_tx: mpsc::Sender<NetEvent>,
    next_conn: ConnId,
    events: mpsc::Sender<BgpEvent>,
    limits: DriverLimits,
    stats: Arc<Stats>,
}

impl Main {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut net: mpsc::Receiver<NetEvent>,
    ) {
        let mut actions = Vec::new();
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd, &mut actions).await,
                    None => break,
                },
                Some(ev) = net.recv() => self.net_event(ev, &mut actions),
                Some(expired) = std::future::poll_fn(|cx| self.timers.poll_expired(cx)),
                    if !self.timers.is_empty() =>
                {
                    let (session, timer) = expired.into_inner();
                    self.timer_keys.remove(&(session, timer));
                    let _ = self.speaker.handle(
                        session,
                        Input::TimerExpired(timer),
                        Instant::now(),
                        &mut actions,
                    );
                }
            }
            self.apply(&mut actions).await;
        }
        for (_, l) in self.listeners.drain() {
            l.abort();
        }
        for (_, c) in self.conns.drain() {
            c.reader.abort();
            c.out.close();
        }
    }

    /// Stops the armed timers that `which` picks (a scan: for removing a
    /// session, not for one timer).
    fn stop_timers(&mut self, which: impl Fn(&(SessionId, Timer)) -> bool) {
        let keys: Vec<(SessionId, Timer)> = self
            .timer_keys
            .keys()
            .filter(|k| which(k))
            .copied()
            .collect();
        for k in keys {
            if let Some(key) = self.timer_keys.remove(&k) {
                self.timers.remove(&key);
            }
        }
    }

    async fn command(&mut self, cmd: Command, actions: &mut Vec<Action>) {
        let now = Instant::now();
        match cmd {
            Command::AddSession {
                id,
                config,
                policy,
                reply,
            } => {
                let addr = SocketAddr::new(config.local_addr, config.port);
                let result = match self.listen(addr) {
                    Ok(()) => self
                        .speaker
                        .add_session(id, *config, policy, now, actions)
                        .map_err(DriverError::from),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::RemoveSession(id, reply) => {
                let r = self.speaker.remove_session(id, now, actions);
                self.stop_timers(|(s, _)| *s == id);
                let _ = reply.send(r.map_err(DriverError::from));
            }
            Command::SetPolicy(id, p, reply) => {
                let r = self.speaker.set_routing_policy(id, p, actions);
                let _ = reply.send(r.map_err(DriverError::from));
            }
            Command::SetPropagation(id, on, reply) => {
                let r = self.speaker.set_route_propagation(id, on, actions);
                let _ = reply.send(r.map_err(DriverError::from));
            }
            Command::SetReachable(id, r) => {
                // An unknown session (removed meanwhile) has nothing to do.
                let _ = self
                    .speaker
                    .handle(id, crate::neighbor::Input::Reachable(r), now, actions);
            }
            Command::SetExported(id, e, reply) => {
                let r = self.speaker.set_exported_prefixes(id, e, actions);
                let _ = reply.send(r.map_err(DriverError::from));
            }
            Command::LocRib(reply) => {
                let _ = reply.send(self.speaker.loc_rib().routes().collect());
            }
            Command::PrefixCounts(reply) => {
                let _ = reply.send(
                    self.speaker
                        .sessions()
                        .map(|s| PrefixCounts {
                            session: s.id(),
                            received: s.adj_rib_in_len(),
                            accepted: s.adj_rib_in_accepted(),
                        })
                        .collect(),
                );
            }
            Command::SessionStatus(id, reply) => {
                let out_queue_bytes = self
                    .conns
                    .values()
                    .filter(|c| c.session == id)
                    .map(|c| c.out.bytes())
                    .sum();
                let _ = reply.send(self.speaker.session(id).map(|s| SessionStatus {
                    state: s.state(),
                    last_error: s.last_error().cloned(),
                    adj_rib_in: s.adj_rib_in_len(),
                    accepted: s.adj_rib_in_accepted(),
                    adj_rib_out: s.adj_rib_out().count(),
                    out_queue_bytes,
                    graceful_restart: s.graceful_restart(),
                }));
            }
        }
    }

    fn listen(&mut self, addr: SocketAddr) -> Result<(), DriverError> {
        if self.listeners.contains_key(&addr) {
            return Ok(());
        }
        // An interconnection address that is not there yet (tunnel interface
        // still being set up, IPv6 DAD) is waited for; anything else fails.
        let first = match bind_listener(addr) {
            Ok(l) => Some(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                tracing::info!(%addr, "address not available yet, will listen when it is");
                None
            }
            Err(source) => return Err(DriverError::Listen { addr, source }),
        };
        let net = self.net_tx.clone();
        let task = tokio::spawn(async move {
            let listener = match first {
                Some(l) => l,
                None => loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    match bind_listener(addr) {
                        Ok(l) => break l,
                        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {}
                        Err(e) => {
                            tracing::warn!(%addr, error = %e, "cannot listen");
                            return;
                        }
                    }
                },
            };
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        if net
                            .send(NetEvent::Accepted {
                                local: addr,
                                peer,
                                stream,
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        self.listeners.insert(addr, task);
        Ok(())
    }

    fn net_event(&mut self, ev: NetEvent, actions: &mut Vec<Action>) {
        let now = Instant::now();
        match ev {
            NetEvent::Accepted {
                local,
                peer,
                stream,
            } => {
                let Some(session) = self.speaker.session_for(local.ip(), peer.ip()) else {
                    tracing::info!(%peer, %local, "connection from an unknown peer refused");
                    return;
                };
                let conn = self.add_conn(session, stream);
                let _ = self.speaker.handle(
                    session,
                    Input::TcpConnected {
                        conn,
                        direction: Direction::Incoming,
                    },
                    now,
                    actions,
                );
            }
            NetEvent::Connected { session, stream } => {
                if self.speaker.session(session).is_none() {
                    return;
                }
                let conn = self.add_conn(session, stream);
                let _ = self.speaker.handle(
                    session,
                    Input::TcpConnected {
                        conn,
                        direction: Direction::Outgoing,
                    },
                    now,
                    actions,
                );
            }
            NetEvent::ConnectFailed { session } => {
                let _ = self
                    .speaker
                    .handle(session, Input::TcpConnectFailed, now, actions);
            }
            NetEvent::Data { conn, bytes } => {
                if let Some(c) = self.conns.get(&conn) {
                    let session = c.session;
                    let _ = self.speaker.handle(
                        session,
                        Input::Received {
                            conn,
                            bytes: &bytes,
                        },
                        now,
                        actions,
                    );
                }
            }
            NetEvent::Closed { conn } => {
                if let Some(c) = self.conns.remove(&conn) {
                    let _ = self
                        .speaker
                        .handle(c.session, Input::TcpClosed { conn }, now, actions);
                }
            }
        }
    }

    fn add_conn(&mut self, session: SessionId, stream: TcpStream) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        let _ = stream.set_nodelay(true);
        let (mut rd, wr) = stream.into_split();
        let out = Arc::new(OutQueue::new(
            self.limits.out_queue_bytes,
            self.stats.clone(),
        ));
        tokio::spawn(write_loop(out.clone(), wr));
        let net = self.net_tx.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = net.send(NetEvent::Closed { conn }).await;
                        return;
                    }
                    Ok(n) => {
                        if net
                            .send(NetEvent::Data {
                                conn,
                                bytes: buf[..n].to_vec(),
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        self.conns.insert(
            conn,
            ConnHandle {
                session,
                out,
                reader,
            },
        );
        conn
    }

    async fn apply(&mut self, actions: &mut Vec<Action>) {
        // Actions may cause more (a full queue closes the session).
        while !actions.is_empty() {
            let batch = std::mem::take(actions);
            for action in batch {
                self.apply_one(action, actions).await;
            }
        }
    }

    async fn apply_one(&mut self, action: Action, more: &mut Vec<Action>) {
        {
            match action {
                Action::Connect {
                    session,
                    local,
                    peer,
                    port,
                } => {
                    let net = self.net_tx.clone();
                    tokio::spawn(async move {
                        let ev = match connect(local, peer, port).await {
                            Ok(stream) => NetEvent::Connected { session, stream },
                            Err(e) => {
                                tracing::debug!(%peer, error = %e, "connect failed");
                                NetEvent::ConnectFailed { session }
                            }
                        };
                        let _ = net.send(ev).await;
                    });
                }
                Action::Send {
                    session,
                    conn,
                    bytes,
                } => {
                    let Some(c) = self.conns.get(&conn) else {
                        return;
                    };
                    if c.out.push(bytes).is_ok() {
                        return;
                    }
                    let out = c.out.clone();
                    self.stats.overflows.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        session,
                        conn,
                        limit = self.limits.out_queue_bytes,
                        "output queue full: the peer does not read"
                    );
                    let mut closing = Vec::new();
                    let _ = self.speaker.handle(
                        session,
                        Input::SendQueueFull { conn },
                        Instant::now(),
                        &mut closing,
                    );
                    // The session's NOTIFICATION on this connection skips
                    // the full queue, which is dropped in the same step.
                    let mut notification = None;
                    closing.retain_mut(|a| match a {
                        Action::Send { conn: c, bytes, .. } if *c == conn => {
                            notification = Some(std::mem::take(bytes));
                            false
                        }
                        _ => true,
                    });
                    out.abort(notification);
                    more.extend(closing);
                }
                Action::Close { conn, .. } => {
                    if let Some(c) = self.conns.remove(&conn) {
                        // The writer flushes (within FLUSH_TIMEOUT), then
                        // shuts the socket down.
                        c.reader.abort();
                        c.out.close();
                    }
                }
                Action::ArmTimer {
                    session,
                    timer,
                    deadline,
                } => {
                    // The wheel spans about two years: later is never.
                    let at = deadline.min(Instant::now() + TIMER_HORIZON).into();
                    match self.timer_keys.get(&(session, timer)) {
                        Some(key) => self.timers.reset_at(key, at),
                        None => {
                            let key = self.timers.insert_at((session, timer), at);
                            self.timer_keys.insert((session, timer), key);
                        }
                    }
                }
                Action::StopTimer { session, timer } => {
                    if let Some(key) = self.timer_keys.remove(&(session, timer)) {
                        self.timers.remove(&key);
                    }
                }
                Action::SessionUp { session } => {
                    let _ = self.events.send(BgpEvent::SessionUp(session)).await;
                }
                Action::SessionDown { session, cause } => {
                    let _ = self
                        .events
                        .send(BgpEvent::SessionDown(session, cause))
                        .await;
                }
                Action::EndOfRib { session } => {
                    let _ = self.events.send(BgpEvent::EndOfRib(session)).await;
                }
                Action::Route(c) => {
                    let _ = self.events.send(BgpEvent::Route(c)).await;
                }
            }
        }
    }
}

fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(16)
}

async fn connect(local: IpAddr, peer: IpAddr, port: u16) -> std::io::Result<TcpStream> {
    let socket = match peer {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(local, 0))?;
    tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(SocketAddr::new(peer, port)))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}
