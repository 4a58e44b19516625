//! The tokio driver: runs a [`Speaker`] on real TCP sockets (port 179 bound to
//! each session's interconnection address, active connect and passive
//! accept) and real timers, and gives the agent a [`BgpHandle`] to change
//! sessions and policy at runtime plus a channel of [`BgpEvent`]s (Loc-RIB
//! changes and session up/down).
//!
//! It holds no protocol logic: every decision is the `Speaker`'s.
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
//!         BgpEvent::SessionUp(id) | BgpEvent::SessionDown(id) => { /* connection status */ }
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BgpEvent {
    Route(RouteChange),
    SessionUp(SessionId),
    SessionDown(SessionId),
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
    SetExported(
        SessionId,
        Vec<IpNet>,
        oneshot::Sender<Result<(), DriverError>>,
    ),
    LocRib(oneshot::Sender<Vec<Route>>),
    SessionStatus(SessionId, oneshot::Sender<Option<SessionStatus>>),
}

/// A session as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    pub state: State,
    /// The last NOTIFICATION sent or received.
    pub last_error: Option<Notification>,
    /// Prefixes received, before import policy.
    pub adj_rib_in: usize,
    /// Prefixes announced.
    pub adj_rib_out: usize,
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
    tx: mpsc::UnboundedSender<Command>,
}

/// Starts the driver task on the current tokio runtime.
///
/// The agent must keep draining the returned receiver (from its own task):
/// while the queue is full the driver waits, and so do [`BgpHandle`] calls.
pub fn spawn() -> (BgpHandle, mpsc::Receiver<BgpEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (net_tx, net_rx) = mpsc::channel(NET_QUEUE);
    let main = Main {
        speaker: Speaker::new(),
        conns: HashMap::new(),
        timers: HashMap::new(),
        listeners: HashMap::new(),
        net_tx,
        next_conn: 1,
        events: events_tx,
    };
    tokio::spawn(main.run(rx, net_rx));
    (BgpHandle { tx }, events_rx)
}

impl BgpHandle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
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
    writer: mpsc::UnboundedSender<Vec<u8>>,
    reader: JoinHandle<()>,
}

struct Main {
    speaker: Speaker,
    conns: HashMap<ConnId, ConnHandle>,
    timers: HashMap<(SessionId, Timer), Instant>,
    listeners: HashMap<SocketAddr, JoinHandle<()>>,
    net_tx: mpsc::Sender<NetEvent>,
    next_conn: ConnId,
    events: mpsc::Sender<BgpEvent>,
}

impl Main {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut net: mpsc::Receiver<NetEvent>,
    ) {
        let mut actions = Vec::new();
        loop {
            let next = self.timers.values().min().copied();
            let sleep = async {
                match next {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd, &mut actions).await,
                    None => break,
                },
                Some(ev) = net.recv() => self.net_event(ev, &mut actions),
                () = sleep => {
                    let now = Instant::now();
                    let due: Vec<(SessionId, Timer)> = self
                        .timers
                        .iter()
                        .filter(|(_, d)| **d <= now)
                        .map(|(k, _)| *k)
                        .collect();
                    for (session, timer) in due {
                        self.timers.remove(&(session, timer));
                        let _ = self.speaker.handle(session, Input::TimerExpired(timer), now, &mut actions);
                    }
                }
            }
            self.apply(&mut actions).await;
        }
        for (_, l) in self.listeners.drain() {
            l.abort();
        }
        for (_, c) in self.conns.drain() {
            c.reader.abort();
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
                self.timers.retain(|(s, _), _| *s != id);
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
            Command::SetExported(id, e, reply) => {
                let r = self.speaker.set_exported_prefixes(id, e, actions);
                let _ = reply.send(r.map_err(DriverError::from));
            }
            Command::LocRib(reply) => {
                let _ = reply.send(self.speaker.loc_rib().routes().collect());
            }
            Command::SessionStatus(id, reply) => {
                let _ = reply.send(self.speaker.session(id).map(|s| SessionStatus {
                    state: s.state(),
                    last_error: s.last_error().cloned(),
                    adj_rib_in: s.adj_rib_in_len(),
                    adj_rib_out: s.adj_rib_out().count(),
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
        let (mut rd, mut wr) = stream.into_split();
        let (writer, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(b) = wrx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    return;
                }
            }
            // Every queued message (a NOTIFICATION last) is out: now FIN.
            let _ = wr.shutdown().await;
        });
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
                writer,
                reader,
            },
        );
        conn
    }

    async fn apply(&mut self, actions: &mut Vec<Action>) {
        for action in actions.drain(..) {
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
                Action::Send { conn, bytes, .. } => {
                    if let Some(c) = self.conns.get(&conn) {
                        let _ = c.writer.send(bytes);
                    }
                }
                Action::Close { conn, .. } => {
                    if let Some(c) = self.conns.remove(&conn) {
                        // Dropping the writer flushes then shuts the socket down.
                        c.reader.abort();
                    }
                }
                Action::ArmTimer {
                    session,
                    timer,
                    deadline,
                } => {
                    self.timers.insert((session, timer), deadline);
                }
                Action::StopTimer { session, timer } => {
                    self.timers.remove(&(session, timer));
                }
                Action::SessionUp { session } => {
                    let _ = self.events.send(BgpEvent::SessionUp(session)).await;
                }
                Action::SessionDown { session } => {
                    let _ = self.events.send(BgpEvent::SessionDown(session)).await;
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
