//! The thin tokio driver around `IkeManager`: UDP sockets on the IKE port
//! (500) and the NAT-T port (4500) of each public address (bound and
//! closed as addresses come and go: [`Command::Listen`]), timers, a
//! command channel from the agent, and a bounded pool of blocking workers
//! for the manager's Diffie-Hellman jobs. Everything that is not a
//! datagram, a timer or a job (CHILD SA install/remove, IKE SA
//! up/down/failed, a NAT'd peer's new port, logs) is forwarded to the
//! agent on the event channel. No protocol logic lives here.
//!
//! Diffie-Hellman work runs off the event loop (`spawn_blocking`, at most
//! [`DhPool::workers`] at once), so a flood of modp4096 IKE_SA_INIT cannot
//! delay DPD and rekeys of established IKE SAs. Jobs of half-open IKE SAs
//! that peers started are capped per peer address and in all; the excess
//! is refused (the half-open SA is dropped, and counted in [`Stats`]).
//! Our own jobs and those of authenticated IKE SAs are never refused.
//!
//! The event channel is bounded, and the driver never waits for the agent:
//! when the channel is full, events stay in order in the driver's outbox.
//! What changes state (CHILD SA installs and removals, IKE SA up, down, our
//! own failed attempts, endpoint changes) is never dropped; log lines and
//! failures of half-open IKE SAs the peer started (which say nothing about
//! a tunnel) are dropped, and counted, once [`LOSSY_BACKLOG`] events wait.
//! With [`PAUSE_BACKLOG`] events waiting, the driver stops reading
//! datagrams (the kernel's socket buffer, then the peers' retransmissions,
//! absorb the pause) until the agent has caught up; timers and commands
//! keep running.
//!
//! An agent that programs its data plane from the events can ask the
//! driver to hold back datagrams that announce a CHILD SA until the SA is
//! in place ([`UdpDriver::hold_sends_until_applied`], acknowledged with
//! [`Command::ChildSaApplied`]): otherwise our IKE_AUTH or CREATE_CHILD_SA
//! response, or the DELETE that ends a rekey, can reach the peer, and the
//! peer's ESP on the new SA reach us, before the agent installed it.
//!
//! UDP-encapsulated ESP (RFC 3948: a non-zero first word on the NAT-T
//! port) that reaches these sockets — because the XDP fast path is off or
//! has no AF_XDP socket bound — is not IKE: it goes to the optional ESP
//! sink (the data plane's slow path) instead of the IKE core.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::time::{delay_queue, DelayQueue};

use crate::action::{Action, TimerId};
use crate::config::ConnectionConfig;
use crate::dh::{DhJob, DhResult};
use crate::manager::IkeManager;

/// Requests from the agent.
#[derive(Debug)]
pub enum Command {
    AddConnection(Box<ConnectionConfig>),
    RemoveConnection(String),
    Initiate(String),
    DeleteIkeSa(String),
    DeleteChildSa {
        conn: String,
        spi_in: u32,
    },
    /// Rekeys a CHILD SA now, make-before-break (e.g. its volume soft
    /// limit was reached in the data plane). Harmless when that CHILD SA
    /// is being rekeyed already or is gone.
    RekeyChildSa {
        conn: String,
        spi_in: u32,
    },
    RekeyIkeSa(String),
    /// The agent has handled the `InstallChildSa` of this inbound SPI
    /// (installed it, or refused it): datagrams held back for it may go
    /// (see [`UdpDriver::hold_sends_until_applied`]).
    ChildSaApplied {
        spi_in: u32,
    },
    /// Adds a connection and resumes its IKE SAs from snapshots taken
    /// `elapsed` ago (after a restart; see
    /// [`IkeManager::add_connection_resuming`]); `reply` says, per
    /// snapshot, whether it was resumed.
    AddConnectionResuming {
        config: Box<ConnectionConfig>,
        snapshots: Vec<crate::snapshot::IkeSaSnapshot>,
        elapsed: Duration,
        reply: tokio::sync::oneshot::Sender<Vec<Result<(), crate::snapshot::RestoreError>>>,
    },
    /// Counts the IKE and CHILD SAs by state ([`IkeManager::census`]).
    Census(tokio::sync::oneshot::Sender<crate::manager::Census>),
    /// Listens on exactly these public addresses from now on: binds the
    /// IKE and NAT-T ports of the new ones and closes the sockets of
    /// those no longer wanted (a VPN gateway created or deleted while the
    /// daemon runs). `reply` gets the addresses that could not be bound,
    /// with why; they are not listened on (ask again to retry).
    Listen {
        addrs: Vec<IpAddr>,
        reply: tokio::sync::oneshot::Sender<Vec<(IpAddr, std::io::Error)>>,
    },
}

/// Datagrams held back until the agent has applied the CHILD SAs that
/// were installed before them.
struct Gate {
    /// Inbound SPIs of `InstallChildSa` events not acknowledged yet.
    waiting: HashSet<u32>,
    held: Vec<(Vec<u8>, SocketAddr, SocketAddr)>,
    /// Released at this instant even without the acknowledgements.
    until: Instant,
}

struct Received {
    bytes: Vec<u8>,
    from: SocketAddr,
    to: SocketAddr,
}

/// An ESP packet (from the SPI on) received on a NAT-T socket.
#[derive(Debug)]
pub struct EspDatagram {
    pub esp: Vec<u8>,
    pub from: SocketAddr,
    pub to: SocketAddr,
}

/// Whether a datagram on the NAT-T port is ESP (RFC 3948 §2.2): at least
/// an SPI and a sequence number, and a non-zero first word (zero is the
/// non-ESP marker in front of IKE; 0xff alone is a NAT keepalive).
pub fn is_udp_esp(payload: &[u8]) -> bool {
    payload.len() >= 8 && payload[..4] != [0, 0, 0, 0]
}

/// With this many events waiting for the agent, droppable ones (logs,
/// half-open failures) are dropped.
pub const LOSSY_BACKLOG: usize = 256;
/// With this many events waiting for the agent, datagrams are not read.
pub const PAUSE_BACKLOG: usize = 2048;

/// How Diffie-Hellman jobs run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhPool {
    /// Jobs computing at once, each on a blocking thread.
    pub workers: usize,
    /// Jobs of half-open IKE SAs that peers started (unauthenticated),
    /// queued or running, per peer address; beyond, refused.
    pub max_unauthenticated_per_addr: usize,
    /// The same in all addresses.
    pub max_unauthenticated: usize,
}

impl Default for DhPool {
    fn default() -> Self {
        // One core stays for the event loop and the data path.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            workers: cores.saturating_sub(1).clamp(1, 8),
            max_unauthenticated_per_addr: 2,
            max_unauthenticated: 64,
        }
    }
}

/// What the driver counted; shared, readable while it runs.
#[derive(Debug, Default)]
pub struct Stats {
    dh_jobs_run: AtomicU64,
    dh_jobs_refused: AtomicU64,
    events_dropped: AtomicU64,
    sends_released_unapplied: AtomicU64,
}

impl Stats {
    /// Diffie-Hellman jobs computed.
    pub fn dh_jobs_run(&self) -> u64 {
        self.dh_jobs_run.load(Ordering::Relaxed)
    }
    /// Jobs of half-open IKE SAs refused (per-address or total cap).
    pub fn dh_jobs_refused(&self) -> u64 {
        self.dh_jobs_refused.load(Ordering::Relaxed)
    }
    /// Droppable events (logs, half-open failures) dropped while the
    /// agent was behind.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped.load(Ordering::Relaxed)
    }
    /// Times held-back datagrams went out because the agent had not
    /// acknowledged its CHILD SA installs in time.
    pub fn sends_released_unapplied(&self) -> u64 {
        self.sends_released_unapplied.load(Ordering::Relaxed)
    }
}

/// A finished job, and the address whose unauthenticated count it held.
struct JobDone {
    result: Option<DhResult>,
    unauthenticated: Option<IpAddr>,
}

/// The sockets of the listened addresses and their receive loops.
struct Listener {
    ike_port: u16,
    natt_port: u16,
    esp: Option<mpsc::Sender<EspDatagram>>,
    /// Where the receive loops put what they read.
    tx: mpsc::Sender<Received>,
    /// Per address, the receive loops of its two sockets (each loop owns
    /// its socket with the driver: aborting it and dropping the driver's
    /// copy closes the socket).
    bound: HashMap<IpAddr, Vec<tokio::task::JoinHandle<()>>>,
}

impl Listener {
    /// Binds both ports of `ip` (both or neither) and starts their loops.
    async fn bind(&mut self, ip: IpAddr) -> std::io::Result<Vec<(SocketAddr, Arc<UdpSocket>)>> {
        let mut socks = Vec::new();
        for port in [self.ike_port, self.natt_port] {
            let local = SocketAddr::new(ip, port);
            // On failure the first socket is dropped, closed, with `socks`.
            socks.push((local, Arc::new(UdpSocket::bind(local).await?)));
        }
        let loops = socks
            .iter()
            .map(|(local, sock)| {
                let esp = if local.port() == self.natt_port {
                    self.esp.clone()
                } else {
                    None
                };
                tokio::spawn(receive(Arc::clone(sock), *local, self.tx.clone(), esp))
            })
            .collect();
        self.bound.insert(ip, loops);
        Ok(socks)
    }

    fn release(&mut self, ip: IpAddr) {
        for task in self.bound.remove(&ip).into_iter().flatten() {
            task.abort();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        for task in self.bound.values().flatten() {
            task.abort();
        }
    }
}

/// A socket's receive loop: IKE to the driver, UDP-encapsulated ESP to
/// the sink if there is one.
async fn receive(
    s: Arc<UdpSocket>,
    local: SocketAddr,
    tx: mpsc::Sender<Received>,
    esp: Option<mpsc::Sender<EspDatagram>>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((n, from)) = s.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(sink) = &esp {
            if is_udp_esp(&buf[..n]) {
                let _ = sink.try_send(EspDatagram {
                    esp: buf[..n].to_vec(),
                    from,
                    to: local,
                });
                continue;
            }
        }
        let msg = Received {
            bytes: buf[..n].to_vec(),
            from,
            to: local,
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

/// The latest a timer is armed for (`DelayQueue` refuses beyond ~2 years).
const TIMER_HORIZON: Duration = Duration::from_secs(365 * 24 * 3600);

pub struct UdpDriver {
    mgr: IkeManager,
    /// What a datagram is sent from: the sockets of the listened addresses.
    sockets: HashMap<SocketAddr, Arc<UdpSocket>>,
    listener: Listener,
    /// Armed timers, one per IKE SA at most: a timing wheel (tokio-util's
    /// `DelayQueue`) and each id's entry in it, so that arming,
    /// re-arming and firing cost the same whatever the number of SAs.
    timers: DelayQueue<TimerId>,
    timer_keys: HashMap<TimerId, delay_queue::Key>,
    rx: mpsc::Receiver<Received>,
    pool: DhPool,
    workers: Arc<Semaphore>,
    unauthenticated: HashMap<IpAddr, usize>,
    jobs_tx: mpsc::Sender<JobDone>,
    jobs_rx: mpsc::Receiver<JobDone>,
    /// Events for the agent that did not fit the channel yet, in order.
    outbox: VecDeque<Action>,
    stats: Arc<Stats>,
    /// Hold datagrams behind CHILD SA installs, for at most this long.
    hold_max: Option<Duration>,
    gate: Option<Gate>,
}

/// Largest datagram read; IKE messages above this are fragmented (RFC 7383).
const MAX_DATAGRAM: usize = 65_535;

/// Whether the agent can do without an event when it is behind.
fn droppable(a: &Action) -> bool {
    matches!(
        a,
        Action::Log { .. }
            | Action::IkeSaFailed {
                initiator: false,
                ..
            }
    )
}

impl UdpDriver {
    /// Binds `ike_port` and `natt_port` on every address (the VPN
    /// gateway's public IPs) and starts the receive loops.
    pub async fn bind(addrs: &[IpAddr], ike_port: u16, natt_port: u16) -> std::io::Result<Self> {
        Self::bind_with_esp_sink(addrs, ike_port, natt_port, None).await
    }

    /// As [`UdpDriver::bind`], and hands ESP received on the NAT-T sockets
    /// to `esp` (dropped when the sink is full: ESP is lossy by nature).
    pub async fn bind_with_esp_sink(
        addrs: &[IpAddr],
        ike_port: u16,
        natt_port: u16,
        esp: Option<mpsc::Sender<EspDatagram>>,
    ) -> std::io::Result<Self> {
        let mut driver = Self::new(ike_port, natt_port, esp);
        match driver.listen(addrs).await.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(driver),
        }
    }

    /// A driver listening nowhere yet: [`UdpDriver::listen`] (or
    /// [`Command::Listen`] once it runs) gives it its addresses.
    pub fn new(ike_port: u16, natt_port: u16, esp: Option<mpsc::Sender<EspDatagram>>) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let mut mgr = IkeManager::new();
        mgr.set_dh_offload(true);
        let pool = DhPool::default();
        let (jobs_tx, jobs_rx) = mpsc::channel(64);
        Self {
            mgr,
            sockets: HashMap::new(),
            listener: Listener {
                ike_port,
                natt_port,
                esp,
                tx,
                bound: HashMap::new(),
            },
            timers: DelayQueue::new(),
            timer_keys: HashMap::new(),
            rx,
            workers: Arc::new(Semaphore::new(pool.workers)),
            pool,
            unauthenticated: HashMap::new(),
            jobs_tx,
            jobs_rx,
            outbox: VecDeque::new(),
            stats: Arc::new(Stats::default()),
            hold_max: None,
            gate: None,
        }
    }

    /// Listens on exactly `addrs` from now on (see [`Command::Listen`]);
    /// returns the addresses that could not be bound, with why.
    pub async fn listen(&mut self, addrs: &[IpAddr]) -> Vec<(IpAddr, std::io::Error)> {
        let gone: Vec<IpAddr> = self
            .listener
            .bound
            .keys()
            .filter(|ip| !addrs.contains(ip))
            .copied()
            .collect();
        for ip in gone {
            self.listener.release(ip);
            for port in [self.listener.ike_port, self.listener.natt_port] {
                self.sockets.remove(&SocketAddr::new(ip, port));
            }
        }
        let mut failed = Vec::new();
        for ip in addrs {
            if self.listener.bound.contains_key(ip) {
                continue;
            }
            match self.listener.bind(*ip).await {
                Ok(socks) => self.sockets.extend(socks),
                Err(e) => failed.push((*ip, e)),
            }
        }
        failed
    }

    /// The addresses listened on.
    pub fn listening(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.listener.bound.keys().copied().collect();
        v.sort();
        v
    }

    /// The IKE manager, to configure before `run` (limits, the data
    /// plane's SPI predicate).
    pub fn manager_mut(&mut self) -> &mut IkeManager {
        &mut self.mgr
    }

    /// Replaces the Diffie-Hellman pool's settings (before `run`).
    pub fn set_dh_pool(&mut self, pool: DhPool) {
        self.workers = Arc::new(Semaphore::new(pool.workers.max(1)));
        self.pool = pool;
    }

    /// From now on, datagrams that follow an `InstallChildSa` (the
    /// response or DELETE that lets the peer use the SA) wait until the
    /// agent acknowledges the install with [`Command::ChildSaApplied`], or
    /// for `max` at most (an agent busy elsewhere delays, never stops, the
    /// protocol). Without it they leave at once.
    pub fn hold_sends_until_applied(&mut self, max: Duration) {
        self.hold_max = Some(max);
    }

    /// The driver's counters.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Starts a job, or refuses it (returns the refusal to feed back).
    fn start_job(&mut self, job: DhJob) -> Option<DhResult> {
        let unauthenticated = job.unauthenticated.then_some(job.peer);
        if let Some(peer) = unauthenticated {
            let here = self.unauthenticated.get(&peer).copied().unwrap_or(0);
            let all: usize = self.unauthenticated.values().sum();
            if here >= self.pool.max_unauthenticated_per_addr
                || all >= self.pool.max_unauthenticated
            {
                self.stats.dh_jobs_refused.fetch_add(1, Ordering::Relaxed);
                return Some(job.refuse());
            }
            *self.unauthenticated.entry(peer).or_insert(0) += 1;
        }
        let workers = Arc::clone(&self.workers);
        let done = self.jobs_tx.clone();
        let stats = Arc::clone(&self.stats);
        tokio::spawn(async move {
            let result = match workers.acquire_owned().await {
                Ok(_permit) => tokio::task::spawn_blocking(move || job.run()).await.ok(),
                Err(_) => None,
            };
            if result.is_some() {
                stats.dh_jobs_run.fetch_add(1, Ordering::Relaxed);
            }
            // A lost result (a panicked worker) still gives back its count.
            let _ = done
                .send(JobDone {
                    result,
                    unauthenticated,
                })
                .await;
        });
        None
    }

    fn job_done(&mut self, done: JobDone) -> Vec<Action> {
        if let Some(peer) = done.unauthenticated {
            if let Some(n) = self.unauthenticated.get_mut(&peer) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.unauthenticated.remove(&peer);
                }
            }
        }
        match done.result {
            Some(r) => self.mgr.handle_dh_result(r, Instant::now()),
            None => Vec::new(),
        }
    }

    async fn apply(&mut self, actions: Vec<Action>, events: &mpsc::Sender<Action>) {
        let mut work: VecDeque<Action> = actions.into();
        while let Some(a) = work.pop_front() {
            match a {
                Action::Send { bytes, from, to } => match &mut self.gate {
                    Some(g) => g.held.push((bytes, from, to)),
                    None => self.send(&bytes, from, to).await,
                },
                Action::InstallChildSa(c) if self.hold_max.is_some() => {
                    let until = Instant::now() + self.hold_max.unwrap_or_default();
                    let g = self.gate.get_or_insert_with(|| Gate {
                        waiting: HashSet::new(),
                        held: Vec::new(),
                        until,
                    });
                    g.waiting.insert(c.spi_in);
                    self.outbox.push_back(Action::InstallChildSa(c));
                }
                Action::ArmTimer { id, at } => {
                    // The wheel spans about two years: later is never.
                    let at = tokio::time::Instant::from_std(at.min(Instant::now() + TIMER_HORIZON));
                    match self.timer_keys.get(&id) {
                        Some(key) => self.timers.reset_at(key, at),
                        None => {
                            let key = self.timers.insert_at(id, at);
                            self.timer_keys.insert(id, key);
                        }
                    }
                }
                Action::ComputeDh(job) => {
                    if let Some(refused) = self.start_job(job) {
                        work.extend(self.mgr.handle_dh_result(refused, Instant::now()));
                    }
                }
                // InstallChildSa, RemoveChildSa, IkeSaUp/Down/Failed,
                // PeerEndpointChanged (the data plane must move the ESP of
                // those CHILD SAs), Log: the agent's business.
                other if droppable(&other) && self.outbox.len() >= LOSSY_BACKLOG => {
                    self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
                }
                other => self.outbox.push_back(other),
            }
        }
        self.flush(events);
    }

    async fn send(&self, bytes: &[u8], from: SocketAddr, to: SocketAddr) {
        if let Some(s) = self.sockets.get(&from) {
            // A lost datagram is recovered by retransmission.
            let _ = s.send_to(bytes, to).await;
        }
    }

    /// Sends what the gate held, in order.
    async fn release(&mut self) {
        if let Some(g) = self.gate.take() {
            for (bytes, from, to) in g.held {
                self.send(&bytes, from, to).await;
            }
        }
    }

    async fn applied(&mut self, spi_in: u32) {
        if let Some(g) = &mut self.gate {
            g.waiting.remove(&spi_in);
            if g.waiting.is_empty() {
                self.release().await;
            }
        }
    }

    /// Moves waiting events into the channel as far as it has room.
    fn flush(&mut self, events: &mpsc::Sender<Action>) {
        while let Some(a) = self.outbox.pop_front() {
            match events.try_send(a) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(a)) => {
                    self.outbox.push_front(a);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    // Nobody listens any more.
                    self.outbox.clear();
                    return;
                }
            }
        }
    }

    /// Runs until the command channel closes. `events` is bounded; see
    /// the module documentation for what happens when it is full.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Action>,
    ) {
        loop {
            let gate_until = self.gate.as_ref().map(|g| g.until);
            let gate_sleep = async {
                match gate_until {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending::<()>().await,
                }
            };
            let backlog = self.outbox.len();
            tokio::select! {
                permit = events.reserve(), if backlog > 0 => {
                    match permit {
                        Ok(permit) => {
                            if let Some(a) = self.outbox.pop_front() {
                                permit.send(a);
                            }
                            self.flush(&events);
                        }
                        // Nobody listens any more.
                        Err(_) => self.outbox.clear(),
                    }
                }
                Some(r) = self.rx.recv(), if backlog < PAUSE_BACKLOG => {
                    let acts = self.mgr.handle_datagram(&r.bytes, r.from, r.to, Instant::now());
                    self.apply(acts, &events).await;
                }
                Some(done) = self.jobs_rx.recv() => {
                    let acts = self.job_done(done);
                    self.apply(acts, &events).await;
                }
                cmd = commands.recv() => {
                    let now = Instant::now();
                    let acts = match cmd {
                        None => return,
                        Some(Command::AddConnection(c)) => self.mgr.add_connection(*c, now),
                        Some(Command::RemoveConnection(n)) => self.mgr.remove_connection(&n, now),
                        Some(Command::Initiate(n)) => self.mgr.initiate(&n, now),
                        Some(Command::DeleteIkeSa(n)) => self.mgr.delete_ike_sa(&n, now),
                        Some(Command::DeleteChildSa { conn, spi_in }) => self.mgr.delete_child_sa(&conn, spi_in, now),
                        Some(Command::RekeyChildSa { conn, spi_in }) => self.mgr.rekey_child_sa(&conn, spi_in, now),
                        Some(Command::RekeyIkeSa(n)) => self.mgr.rekey_ike_sa(&n, now),
                        Some(Command::ChildSaApplied { spi_in }) => {
                            self.applied(spi_in).await;
                            continue;
                        }
                        Some(Command::AddConnectionResuming { config, snapshots, elapsed, reply }) => {
                            let (acts, results) =
                                self.mgr.add_connection_resuming(*config, &snapshots, elapsed, now);
                            let _ = reply.send(results);
                            acts
                        }
                        Some(Command::Census(reply)) => {
                            let _ = reply.send(self.mgr.census());
                            continue;
                        }
                        Some(Command::Listen { addrs, reply }) => {
                            let _ = reply.send(self.listen(&addrs).await);
                            continue;
                        }
                    };
                    self.apply(acts, &events).await;
                }
                () = gate_sleep => {
                    self.stats.sends_released_unapplied.fetch_add(1, Ordering::Relaxed);
                    self.release().await;
                }
                Some(expired) = std::future::poll_fn(|cx| self.timers.poll_expired(cx)),
                    if !self.timers.is_empty() =>
                {
                    let id = expired.into_inner();
                    self.timer_keys.remove(&id);
                    let acts = self.mgr.handle_timer(id, Instant::now());
                    self.apply(acts, &events).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_udp_esp;

    #[test]
    fn esp_is_told_from_ike_and_keepalives() {
        assert!(is_udp_esp(&[0, 0, 0, 1, 0, 0, 0, 1]));
        assert!(
            !is_udp_esp(&[0, 0, 0, 0, 1, 2, 3, 4, 5]),
            "non-ESP marker: IKE"
        );
        assert!(!is_udp_esp(&[0xff]), "NAT keepalive");
        assert!(
            !is_udp_esp(&[1, 2, 3]),
            "too short for SPI + sequence number"
        );
    }
}
