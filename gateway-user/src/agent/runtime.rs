//! Applies a [`Plan`] to the running system and turns what the protocol
//! drivers report into statuses: per tunnel a TUN interface with the
//! interconnection addresses and an IKE connection whose CHILD SAs go into
//! the data plane; per BGP session a speaker session whose Loc-RIB changes
//! become routes (XDP maps and kernel, through the data plane); per
//! connection the API's statuses written back to the store when they change.
//!
//! Failover: a session's routes, and the route to its BGP peer, go through
//! the session's own tunnel while that tunnel has a CHILD SA, else through
//! another tunnel of the same connection that has one (the customer's
//! children carry the same selectors, so either SA is valid for every
//! family). When the tunnel comes back they return. DPD is tuned so that a
//! dead tunnel is noticed well inside the BGP hold time (30 s).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_api::model::{BgpSessionStatus, ConnectionStatus, Family, TunnelMtu, TunnelStatus};
use gateway_api::{ConnectionStatusUpdate, Store};
use gateway_bgp::driver::{BgpEvent, BgpHandle};
use gateway_bgp::{RouteChange, RoutingPolicy, SessionConfig, SessionId, SessionPolicy};
use gateway_esp::table::LimitEvent;
use gateway_esp::table::{DataPlane, InboundSaConfig, OutboundSaConfig, SaKeys, TunnelId};
use gateway_esp::{
    IpPrefix, Lifetime, OuterHeader, SourceFilter, Suite, TrafficSelectors, UdpEncap,
    DEFAULT_WINDOW,
};
use gateway_ike::driver::Command as IkeCommand;
use gateway_ike::{
    Action as IkeAction, ChildSaInstall, ConnectionConfig, DownReason, DpdAction, EspCipher,
    IkeCipher, IkeSaId,
};
use gateway_netio::netlink::{Address, Netlink, RTPROT_GATEWAY};
use gateway_netio::tun::Tun;
use ipnet::IpNet;
use tokio::sync::mpsc;

use super::ids::IdPool;
use super::plan::{Plan, SessionPlan, TunnelName, TunnelPlan};
use super::sa_state::{self, SaBook};
use crate::daemon::DataPathHandle;
use crate::dataplane::backend::GatewayDataPlane;
use crate::dataplane::mtu::mss_for;
use crate::metrics::{ConnectionInfo, SessionInfo, SharedSnapshot, Snapshot, TunnelInfo};

/// MTU of a tunnel interface until its first CHILD SA fixes the tunnel's
/// inner MTU (the backend then sets the TUN to it, so that path MTU
/// discovery gives the same answer on both paths).
const TUN_MTU: u32 = gateway_common::TUNNEL_INNER_MTU as u32;
/// Graceful Restart (RFC 4724) restart time we announce: how long a
/// customer that helps keeps our routes while the daemon restarts.
const GRACEFUL_RESTART_TIME: u16 = 120;
/// DPD every 3 s of IKE silence; a request unanswered after 3
/// retransmissions (1 s, x1.5 each: 8.1 s in all) declares the peer dead.
/// A cut path is thus noticed within about 11 s, and its routes have moved
/// to the other tunnel before a 30 s BGP hold time runs out.
const DPD_INTERVAL: Duration = Duration::from_secs(3);
const RETRANSMIT_TIMEOUT: Duration = Duration::from_secs(1);
const RETRANSMIT_BASE: f64 = 1.5;
const RETRANSMIT_TRIES: u32 = 3;
/// How long an initiating tunnel whose IKE SA the peer deleted waits
/// before initiating again (a restarting peer deletes its SAs on the way
/// down and needs a moment to come back); the next reconcile after it
/// sends the initiation, so the wait is up to `RESYNC` longer.
const REINITIATE_AFTER_DELETE: Duration = Duration::from_secs(2);
/// The same after a failed negotiation (authentication, proposals,
/// half-open timeout): slower, not to hammer a misconfigured peer.
const REINITIATE_AFTER_FAILURE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("tunnel {tunnel}: {what}: {source}")]
    Tunnel {
        tunnel: String,
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the {0} driver has stopped")]
    DriverStopped(&'static str),
}

fn tunnel_err(
    tunnel: &str,
    what: &'static str,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> RuntimeError {
    let tunnel = tunnel.to_owned();
    move |source| RuntimeError::Tunnel {
        tunnel,
        what,
        source,
    }
}

struct RunningTunnel {
    plan: TunnelPlan,
    id: TunnelId,
    ike_up: bool,
    /// Which of the connection's IKE SAs are established, and which one
    /// carries the tunnel (`ike_up` is "one is established").
    ike: IkeTrack,
    /// Installed CHILD SA (inbound SPI, outbound SPI).
    child: Option<(u32, u32)>,
    /// When `child` started sending.
    child_since: Option<Instant>,
    /// CHILD SAs installed so far (the first and every rekey).
    child_installs: u64,
    /// Every inbound SPI of the tunnel in the data plane: the current
    /// CHILD SA's, a successor's whose outbound waits, rekeyed ones in
    /// their grace (the IKE core removes those later). All go with the
    /// tunnel.
    inbound: BTreeSet<u32>,
    /// Outbound SAs installed deferred (we answered the peer's rekey),
    /// with their inbound SPI: they send once the IKE core says so.
    pending_out: Vec<(u32, OutboundSaConfig)>,
    /// When an initiating tunnel whose IKE SA went down initiates again
    /// (the IKE manager itself only restarts after DPD).
    reinitiate_at: Option<Instant>,
}

impl RunningTunnel {
    /// Can carry traffic: an IKE SA with an installed CHILD SA.
    fn usable(&self) -> bool {
        self.ike_up && self.child.is_some()
    }
}

/// A tunnel's IKE SAs as the IKE driver reported them. A connection can
/// have several at once: half-open ones anyone can start from the peer's
/// address (never recorded here), the established one, a second one while
/// it takes over (INITIAL_CONTACT, reauthentication) and the two sides of
/// a rekey. Only the loss of the one whose CHILD SA is installed (the
/// carrier) or of the last established one concerns the tunnel.
#[derive(Debug, Default)]
struct IkeTrack {
    /// Established (reported up, not yet down), oldest first.
    up: Vec<IkeSaId>,
    /// The IKE SA of the installed CHILD SA.
    carrier: Option<IkeSaId>,
}

/// What an IKE SA going down means for its tunnel.
#[derive(Debug, PartialEq, Eq)]
enum IkeLoss {
    /// Not one of its established IKE SAs: nothing.
    NotEstablished,
    /// Another established IKE SA carries the tunnel: nothing.
    Other,
    /// The carrier (its CHILD SA is gone) or the last established one.
    /// `still_up`: another established IKE SA remains.
    Carrier { still_up: bool },
}

impl IkeTrack {
    /// An IKE SA is established; after a rekey (`rekey_of`) it takes over
    /// the old one's CHILD SAs, and with them the tunnel.
    fn up(&mut self, ike: IkeSaId, rekey_of: Option<IkeSaId>) {
        if let Some(old) = rekey_of {
            self.up.retain(|s| *s != old);
            if self.carrier == Some(old) {
                self.carrier = Some(ike);
            }
        }
        if !self.up.contains(&ike) {
            self.up.push(ike);
        }
    }

    fn is_up(&self, ike: IkeSaId) -> bool {
        self.up.contains(&ike)
    }

    /// A CHILD SA of `ike` was installed: `ike` carries the tunnel now.
    fn installed(&mut self, ike: IkeSaId) {
        self.carrier = Some(ike);
    }

    fn down(&mut self, ike: IkeSaId) -> IkeLoss {
        if !self.is_up(ike) {
            return IkeLoss::NotEstablished;
        }
        self.up.retain(|s| *s != ike);
        let still_up = !self.up.is_empty();
        if self.carrier == Some(ike) || !still_up {
            if self.carrier == Some(ike) {
                self.carrier = None;
            }
            IkeLoss::Carrier { still_up }
        } else {
            IkeLoss::Other
        }
    }
}

struct RunningSession {
    plan: SessionPlan,
    id: SessionId,
    up: bool,
    /// While the session's own tunnel is down: the tunnel the host route to
    /// the BGP peer's interconnection address goes through instead.
    detour: Option<TunnelId>,
}

/// The running state of every connection of this host.
pub struct Runtime {
    store: Store,
    dataplane: Arc<GatewayDataPlane>,
    datapath: DataPathHandle,
    ike: mpsc::Sender<IkeCommand>,
    bgp: BgpHandle,
    tunnels: BTreeMap<TunnelName, RunningTunnel>,
    sessions: BTreeMap<String, RunningSession>,
    session_names: HashMap<SessionId, String>,
    /// Installed routes: prefix → (tunnel it goes through, session it was
    /// learned on).
    routes: HashMap<IpNet, (TunnelId, SessionId)>,
    /// The usable tunnels when routes were last placed (see `rebalance`).
    placed_on: Vec<TunnelId>,
    snapshot: SharedSnapshot,
    ids: IdPool,
    tunnels_created: u64,
    /// The last `apply` left every planned tunnel and session running.
    converged: bool,
    /// IKE SAs never established, by reason (`/metrics`).
    negotiation_failures: BTreeMap<&'static str, u64>,
    /// Rekeys seen since the daemon started: IKE SAs, CHILD SAs (`/metrics`).
    rekeys: (u64, u64),
    /// The IKE driver's SA count by state and the BGP sessions' prefix
    /// counts, as of the last `refresh_counts`.
    census: Option<gateway_ike::Census>,
    prefix_counts: HashMap<SessionId, (u64, u64)>,
    /// Connection events not yet written to the store: (connection id,
    /// kind, message); written with the statuses.
    pending_events: Vec<(String, String, String)>,
    /// Set by the first `apply`: the tunnels the store reported up when
    /// the daemon started and that are not running yet (`initiate_resumed`).
    resume: Option<BTreeSet<TunnelName>>,
    /// During the first `apply`, the same tunnels: their BGP sessions
    /// announce that we restarted (Graceful Restart's Restart State).
    restarted: BTreeSet<TunnelName>,
    next_session: SessionId,
    /// Volume lifetimes of every outbound SA (from `[child_sa]`).
    lifetime: Lifetime,
    /// Last statuses written, per connection.
    reported: HashMap<String, ConnectionStatusUpdate>,
    /// The IKE and ESP state a restart resumes, when enabled
    /// (`enable_sa_state`).
    sa: Option<SaBook>,
    /// Routes kept from before a restart, per session, until the session
    /// sends them again or its End-of-RIB (then the rest go), or until
    /// the deadline.
    stale: HashMap<SessionId, StaleRoutes>,
    /// TUNs found from before a restart or a crash and attached to again,
    /// whose leftover routes the end of `apply` checks (`prune_kept_routes`).
    kept_tuns: Vec<(TunnelName, u32)>,
    /// TUNs of connections gone while the daemon was down are deleted once,
    /// after the first plan (`delete_orphan_tuns`).
    orphans_checked: bool,
}

/// A session's routes from before a restart (Graceful Restart, RFC 4724
/// §4.2, on our side: kept and used, marked stale).
#[derive(Debug)]
struct StaleRoutes {
    prefixes: BTreeSet<IpNet>,
    /// Withdrawn then if the session has not refreshed them.
    deadline: Instant,
}

/// How long an outbound SA may stay without sequence numbers and without
/// an SA-state entry before the agent logs it.
const STARVED_WARN_AFTER: Duration = Duration::from_secs(5);
/// How long stale routes wait for their session to come back (our restart
/// time, as announced).
const STALE_UNTIL_UP: Duration = Duration::from_secs(GRACEFUL_RESTART_TIME as u64);
/// How long stale routes stay once the session is up, if the peer sends
/// no End-of-RIB.
const STALE_AFTER_UP: Duration = Duration::from_secs(30);

impl Runtime {
    pub fn new(
        store: Store,
        datapath: DataPathHandle,
        ike: mpsc::Sender<IkeCommand>,
        bgp: BgpHandle,
        snapshot: SharedSnapshot,
        lifetime: Lifetime,
    ) -> Self {
        Self {
            snapshot,
            store,
            dataplane: Arc::clone(&datapath.dataplane),
            datapath,
            ike,
            bgp,
            tunnels: BTreeMap::new(),
            sessions: BTreeMap::new(),
            session_names: HashMap::new(),
            routes: HashMap::new(),
            placed_on: Vec::new(),
            ids: IdPool::new(gateway_common::TUNNELS_MAX_ENTRIES),
            tunnels_created: 0,
            converged: false,
            negotiation_failures: BTreeMap::new(),
            rekeys: (0, 0),
            census: None,
            prefix_counts: HashMap::new(),
            pending_events: Vec::new(),
            resume: None,
            restarted: BTreeSet::new(),
            next_session: 1,
            lifetime,
            reported: HashMap::new(),
            sa: None,
            stale: HashMap::new(),
            kept_tuns: Vec::new(),
            orphans_checked: false,
        }
    }

    /// Persists the resumable IKE and ESP state in `dir` (`sa_state`) and
    /// resumes what the file there holds: outbound SAs from now on send
    /// only sequence numbers the file has reserved.
    pub fn enable_sa_state(&mut self, dir: &std::path::Path) {
        let resumable = match sa_state::load(&self.store, dir) {
            Ok(r) => {
                let n: usize = r.entries.values().map(Vec::len).sum();
                let routes: usize = r.routes.values().map(Vec::len).sum();
                if n + routes > 0 {
                    tracing::info!(ike_sas = n, routes, file = %dir.join(sa_state::FILE).display(), "IKE and CHILD SAs to resume, routes to keep until BGP is back");
                }
                r
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the SA state: every tunnel starts with a new handshake");
                Default::default()
            }
        };
        self.dataplane
            .table()
            .set_seq_reservation(Some(sa_state::SEQ_BLOCK));
        self.sa = Some(SaBook::new(dir.to_owned(), resumable));
    }

    /// A resumed CHILD SA waits for the state file to reserve its next
    /// sequence numbers: write it without waiting for the tick.
    pub fn sa_state_urgent(&self) -> bool {
        self.sa.as_ref().is_some_and(|b| b.urgent)
    }

    /// Writes the SA state file when something changed, when an outbound
    /// SA needs more sequence numbers reserved, or (every
    /// `sa_state::EDGE_EVERY`) when inbound right edges moved; `force`:
    /// write now (a stop). Raises the outbound SAs' limits once written.
    pub async fn persist_sa_state(&mut self, force: bool) {
        let Some(book) = self.sa.as_mut() else {
            return;
        };
        book.urgent = false;
        let table = Arc::clone(self.dataplane.table());
        let tunnel_ids: HashMap<&str, TunnelId> = self
            .tunnels
            .iter()
            .map(|(n, t)| (n.as_str(), t.id))
            .collect();
        // Where each CHILD SA's numbers stand (outbound SPI → the mark to
        // write; inbound SPI → right edge); entries are copied only when
        // the file is written.
        let mut marks: HashMap<u32, (TunnelId, u64)> = HashMap::new();
        let mut need_seq = false;
        let mut edges = BTreeMap::new();
        for e in book.current.values() {
            let Some(&tid) = tunnel_ids.get(e.tunnel.as_str()) else {
                continue;
            };
            let out = table.outbound(tid);
            for c in &e.snapshot.children {
                // Only a CHILD SA whose outbound SA we hold can vouch for
                // its sequence numbers.
                let Some(o) = out.as_ref().filter(|o| o.sa.spi() == c.spi_out) else {
                    continue;
                };
                let (last, reserved) = (o.sa.last_seq(), o.sa.reserved());
                let target = if last.saturating_add(sa_state::SEQ_BLOCK / 2) > reserved {
                    need_seq = true;
                    last.saturating_add(sa_state::SEQ_BLOCK)
                } else {
                    reserved
                };
                marks.insert(c.spi_out, (tid, target));
                let edge = table.inbound(c.spi_in).map_or(0, |i| i.sa.right_edge());
                edges.insert(c.spi_in, edge);
            }
        }
        // An outbound SA that used up its reservation and that no reported
        // CHILD SA vouches for sends nothing (each packet is refused, never
        // sent with a number that could repeat) until one does. A resumed
        // SA is in that state until its first report, a moment; one still
        // in it after STARVED_WARN_AFTER is logged, once.
        let mut starved = BTreeMap::new();
        for (name, t) in &self.tunnels {
            let Some(o) = table.outbound(t.id) else {
                continue;
            };
            let spi = o.sa.spi();
            if o.sa.last_seq() < o.sa.reserved() || marks.contains_key(&spi) {
                continue;
            }
            let (since, warned) = book
                .starved
                .get(&spi)
                .copied()
                .unwrap_or((Instant::now(), false));
            let warn = !warned && since.elapsed() >= STARVED_WARN_AFTER;
            if warn {
                tracing::warn!(
                    tunnel = %name,
                    spi = format_args!("{spi:08x}"),
                    last_seq = o.sa.last_seq(),
                    reserved = o.sa.reserved(),
                    "outbound SA out of reserved sequence numbers and in no SA-state entry: it sends nothing until its CHILD SA is reported"
                );
            }
            starved.insert(spi, (since, warned || warn));
        }
        book.starved = starved;
        let edge_due = edges != book.edges
            && book
                .last_write
                .is_none_or(|t| t.elapsed() >= sa_state::EDGE_EVERY);
        if !(force || book.dirty || need_seq || edge_due) {
            return;
        }
        let entries: Vec<sa_state::Entry> = book
            .current
            .values()
            .filter(|e| tunnel_ids.contains_key(e.tunnel.as_str()))
            .map(|e| {
                let mut e = e.clone();
                e.snapshot.children.retain_mut(|c| {
                    let Some(&(_, target)) = marks.get(&c.spi_out) else {
                        return false;
                    };
                    c.seq_out = target;
                    c.replay_right_edge = edges.get(&c.spi_in).copied().unwrap_or(0);
                    true
                });
                e
            })
            .collect();
        let reserve: Vec<(TunnelId, u32, u64)> = marks
            .into_iter()
            .map(|(spi, (tid, target))| (tid, spi, target))
            .collect();
        book.dirty = false;
        book.last_write = Some(Instant::now());
        book.edges = edges;
        let store = self.store.clone();
        let dir = book.dir.clone();
        let routes: Vec<sa_state::RouteRecord> = self
            .routes
            .iter()
            .filter_map(|(prefix, (_, session))| {
                Some(sa_state::RouteRecord {
                    session: self.session_names.get(session)?.clone(),
                    prefix: *prefix,
                })
            })
            .collect();
        let written = tokio::task::spawn_blocking(move || {
            sa_state::save(&store, &dir, &entries, &routes)?;
            // On disk: the SAs may send what the file reserved.
            for (tid, spi, target) in reserve {
                if let Some(o) = table.outbound(tid).filter(|o| o.sa.spi() == spi) {
                    o.sa.reserve_through(target);
                }
            }
            Ok::<_, sa_state::SaStateError>(())
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // Retried on the next tick; meanwhile SAs that used their
                // reservation stop sending (never a number twice).
                tracing::error!(error = %e, "cannot write the SA state");
                if let Some(b) = self.sa.as_mut() {
                    b.dirty = true;
                }
            }
            Err(e) => tracing::error!(error = %e, "SA state writer panicked"),
        }
    }

    /// A tunnel that was up when the daemon stopped (restart, crash): the
    /// customer probably still holds its IKE and CHILD SAs, which we lost,
    /// and would notice only when its DPD gives up (if it restarts at
    /// all). So we initiate once, whatever the initiation policy, and our
    /// IKE_AUTH's INITIAL_CONTACT makes the customer drop its stale SAs:
    /// the outage is one handshake. Tunnels that were down are left to
    /// their policy (a customer that initiates may be doing so already).
    async fn initiate_resumed(&mut self, t: &TunnelPlan) -> Result<(), RuntimeError> {
        let Some(resume) = self.resume.as_mut() else {
            return Ok(());
        };
        if !resume.remove(&t.name) || t.initiate {
            // Initiating tunnels initiate on their own.
            return Ok(());
        }
        tracing::info!(tunnel = %t.name, "was up before the daemon started: initiating once with INITIAL_CONTACT (initiation policy customer_gateway)");
        self.ike
            .send(IkeCommand::Initiate(t.name.clone()))
            .await
            .map_err(|_| RuntimeError::DriverStopped("IKE"))
    }

    /// Brings the running state to `plan`: removes what is no longer
    /// planned (or planned differently), then adds what is missing, then
    /// updates BGP policy and propagation in place (no session drop).
    pub async fn apply(&mut self, plan: &Plan) -> Result<(), RuntimeError> {
        if self.resume.is_none() {
            self.resume = Some(plan.resume.clone());
            self.restarted = plan.resume.clone();
        }
        let stale: Vec<TunnelName> = self
            .tunnels
            .iter()
            .filter(|(name, t)| {
                plan.tunnels
                    .get(*name)
                    .is_none_or(|p| !same_tunnel(p, &t.plan))
            })
            .map(|(name, _)| name.clone())
            .collect();
        // Sessions go first: they run through the tunnels.
        let stale_sessions: Vec<String> = self
            .sessions
            .iter()
            .filter(|(name, s)| {
                let p = plan.sessions.get(*name);
                p.is_none_or(|p| !same_session(p, &s.plan)) || stale.contains(&s.plan.tunnel)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale_sessions {
            self.remove_session(&name, true).await?;
        }
        for name in stale {
            self.remove_tunnel(&name, true, false).await?;
        }
        for (name, t) in &plan.tunnels {
            if let Some(running) = self.tunnels.get_mut(name) {
                if running.plan.allowed_sources != t.allowed_sources {
                    set_source_filter(&self.dataplane, running.id, &t.allowed_sources);
                    running.plan.allowed_sources = t.allowed_sources.clone();
                    tracing::info!(tunnel = %name, prefixes = t.allowed_sources.len(), "inner sources allowed from the customer updated");
                }
            }
            match self.tunnels.get_mut(name) {
                None => match self.add_tunnel(t).await {
                    Ok(()) => self.initiate_resumed(t).await?,
                    Err(e) => {
                        tracing::warn!(tunnel = %name, error = %e, "cannot start tunnel; will retry")
                    }
                },
                Some(running) if running.plan.interco != t.interco => {
                    // A session attached or detached: change the TUN's
                    // addresses in place, the tunnel itself stays up.
                    if let Err(e) =
                        update_addresses(&running.plan.tun, &running.plan.interco, &t.interco)
                    {
                        tracing::warn!(tunnel = %name, error = %e, "cannot update interconnection addresses");
                    } else {
                        running.plan.interco = t.interco.clone();
                    }
                }
                Some(_) => {}
            }
        }
        for (name, s) in &plan.sessions {
            if !self.tunnels.contains_key(&s.tunnel) {
                continue;
            }
            match self.sessions.get_mut(name) {
                None => {
                    if let Err(e) = self.add_session(s).await {
                        tracing::warn!(session = %name, error = %e, "cannot start BGP session; will retry");
                    }
                }
                Some(running) if running.plan != *s => {
                    let id = running.id;
                    let policy = routing_policy(s);
                    self.bgp
                        .set_routing_policy(id, policy)
                        .await
                        .map_err(|_| RuntimeError::DriverStopped("BGP"))?;
                    self.bgp
                        .set_route_propagation(id, s.route_propagation)
                        .await
                        .map_err(|_| RuntimeError::DriverStopped("BGP"))?;
                    self.bgp
                        .set_exported_prefixes(id, s.exported.clone())
                        .await
                        .map_err(|_| RuntimeError::DriverStopped("BGP"))?;
                    running.plan = s.clone();
                }
                Some(_) => {}
            }
        }
        let now = Instant::now();
        let expired: Vec<SessionId> = self
            .stale
            .iter()
            .filter(|(_, st)| st.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.sweep_stale(id, "not refreshed in time");
        }
        // Initiators re-establish tunnels the peer deleted or refused.
        let due: Vec<TunnelName> = self
            .tunnels
            .iter_mut()
            .filter(|(_, t)| !t.ike_up && t.reinitiate_at.is_some_and(|at| at <= now))
            .map(|(name, t)| {
                t.reinitiate_at = None;
                name.clone()
            })
            .collect();
        for name in due {
            tracing::info!(tunnel = %name, "initiating the IKE SA again");
            self.ike
                .send(IkeCommand::Initiate(name))
                .await
                .map_err(|_| RuntimeError::DriverStopped("IKE"))?;
        }
        // Our own addresses never go to the workers' neighbour cache.
        let mut local: Vec<IpAddr> = self
            .tunnels
            .values()
            .flat_map(|t| {
                t.plan
                    .interco
                    .iter()
                    .map(|n| n.addr())
                    .chain([t.plan.local])
            })
            .collect();
        local.sort();
        local.dedup();
        self.datapath.set_local_addresses(local);
        // Before the rebalance: the detours it puts back are not in
        // `routes`, and must not be taken for leftovers.
        self.prune_kept_routes();
        self.rebalance(true);
        self.converged = plan.tunnels.keys().all(|n| self.tunnels.contains_key(n))
            && plan.sessions.keys().all(|n| self.sessions.contains_key(n));
        self.restarted.clear();
        if !self.orphans_checked {
            self.orphans_checked = true;
            delete_orphan_tuns(plan);
        }
        self.report_statuses();
        Ok(())
    }

    /// A TUN kept from before the restart still has every route it had
    /// then. Once this plan's sessions have put back the stale routes
    /// from the SA state file, the others (the file was lost or is older)
    /// become stale routes of the tunnel's BGP session too, swept like
    /// the file's when the session is back (End-of-RIB, or the deadlines);
    /// without a session that takes routes, they are deleted.
    fn prune_kept_routes(&mut self) {
        if self.kept_tuns.is_empty() {
            return;
        }
        let mut nl = match Netlink::open() {
            Ok(nl) => nl,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check the routes of kept TUNs");
                return;
            }
        };
        // One dump per family for all the kept TUNs (a restart keeps them
        // all at once).
        let mut routes = Vec::new();
        for v6 in [false, true] {
            match nl.list_routes(v6, 254, RTPROT_GATEWAY) {
                Ok(r) => routes.extend(r),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the kept TUNs' routes");
                    self.kept_tuns.clear();
                    return;
                }
            }
        }
        for (name, ifindex) in std::mem::take(&mut self.kept_tuns) {
            let Some(t) = self.tunnels.get(&name) else {
                continue;
            };
            let tunnel = t.id;
            let session = self
                .sessions
                .values()
                .find(|s| s.plan.tunnel == name && s.plan.route_propagation)
                .map(|s| s.id);
            let mut kept = 0usize;
            for r in routes.iter().filter(|r| r.oif == Some(ifindex)) {
                let prefix = IpNet::new(r.dst, r.prefix_len).ok();
                let ours = prefix
                    .and_then(|p| self.routes.get(&p))
                    .is_some_and(|(via, _)| *via == tunnel);
                if ours {
                    continue;
                }
                if let (Some(prefix), Some(session)) = (prefix, session) {
                    // Not in `routes` yet: nobody else owns it.
                    if !self.routes.contains_key(&prefix) {
                        self.install_route(prefix, tunnel, session);
                        self.stale
                            .entry(session)
                            .or_insert_with(|| StaleRoutes {
                                prefixes: BTreeSet::new(),
                                deadline: Instant::now() + STALE_UNTIL_UP,
                            })
                            .prefixes
                            .insert(prefix);
                        kept += 1;
                        continue;
                    }
                }
                match nl.del_route(r) {
                    Ok(()) => {
                        tracing::info!(tunnel = %name, prefix = %format_args!("{}/{}", r.dst, r.prefix_len), "route left from before the restart removed")
                    }
                    Err(e) => {
                        tracing::warn!(tunnel = %name, error = %e, "cannot remove a route left from before the restart")
                    }
                }
            }
            if kept > 0 {
                tracing::info!(tunnel = %name, routes = kept, "routes found on the kept TUN kept (stale) until the BGP session is back");
            }
        }
    }

    async fn add_tunnel(&mut self, plan: &TunnelPlan) -> Result<(), RuntimeError> {
        let psk = {
            let store = self.store.clone();
            let conn = plan.connection.clone();
            tokio::task::spawn_blocking(move || store.connection_psk(&conn))
                .await
                .map_err(|e| tunnel_err(&plan.name, "reading the PSK")(Box::new(e)))?
                .map_err(|e| tunnel_err(&plan.name, "reading the PSK")(Box::new(e)))?
        };
        let mut nl = Netlink::open()
            .map_err(|e| tunnel_err(&plan.name, "opening rtnetlink")(Box::new(e)))?;
        // The TUN is persistent: a restart or a crash leaves it, its
        // addresses and its routes in place, so the VPC's packets to the
        // customer are dropped into it while we are down instead of
        // following another route (a default route: in clear). Found, it
        // is ours from before: attach to it again.
        let kept = nl.link_by_name(&plan.tun).is_ok();
        let tun = Tun::create(&plan.tun, false)
            .map_err(|e| tunnel_err(&plan.name, "creating the TUN interface")(Box::new(e)))?;
        tun.set_persist(true)
            .map_err(|e| tunnel_err(&plan.name, "making the TUN persistent")(Box::new(e)))?;
        // Forwarding, reverse-path filter, no IPv6 link-local address.
        crate::sysctl::prepare_tunnel(&plan.tun)
            .map_err(|e| tunnel_err(&plan.name, "kernel settings of the TUN")(Box::new(e)))?;
        let addrs: Vec<Address> = plan.interco.iter().map(|n| to_address(n, 0)).collect();
        let ifindex = tun
            .configure(&mut nl, TUN_MTU, &addrs)
            .map_err(|e| tunnel_err(&plan.name, "configuring the TUN interface")(Box::new(e)))?;
        if kept {
            tracing::info!(tunnel = %plan.name, tun = %plan.tun, "TUN kept from before the restart: attached again with its routes");
            self.kept_tuns.push((plan.name.clone(), ifindex));
        }
        let ike = Self::ike_config(
            plan,
            gateway_ike::Psk::new(psk.expose().to_vec()),
            self.lifetime,
        )
        .map_err(|e| tunnel_err(&plan.name, "IKE configuration")(Box::new(e)))?;
        let id = self
            .ids
            .allocate(Instant::now())
            .map_err(|e| tunnel_err(&plan.name, "allocating a tunnel id")(Box::new(e)))?;
        // The slow path owns the TUN from now on: it reads what the kernel
        // routes into it, and dropping it (remove_tunnel) deletes it.
        if let Err(e) = self
            .datapath
            .slow
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add_tunnel(id, tun)
        {
            self.ids.release(id, Instant::now());
            return Err(tunnel_err(&plan.name, "starting the slow path")(Box::new(
                e,
            )));
        }
        self.tunnels_created += 1;
        self.dataplane.set_tunnel_interface(id, ifindex);
        self.dataplane.set_mss_clamp(id, plan.mss_clamp);
        set_source_filter(&self.dataplane, id, &plan.allowed_sources);
        let fingerprint = sa_state::fingerprint(plan);
        let (snapshots, elapsed, why_not) = match self.sa.as_mut() {
            Some(book) => book.take(&plan.name, &fingerprint, std::time::SystemTime::now()),
            None => Default::default(),
        };
        for why in why_not {
            tracing::info!(tunnel = %plan.name, "not resuming an IKE SA: {why}");
        }
        let sent = if snapshots.is_empty() {
            self.ike
                .send(IkeCommand::AddConnection(Box::new(ike)))
                .await
                .is_ok()
        } else {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let sent = self
                .ike
                .send(IkeCommand::AddConnectionResuming {
                    config: Box::new(ike),
                    snapshots,
                    elapsed,
                    reply,
                })
                .await
                .is_ok();
            let results = answer.await.unwrap_or_default();
            let resumed = results.iter().filter(|r| r.is_ok()).count();
            for e in results.iter().filter_map(|r| r.as_ref().err()) {
                tracing::warn!(tunnel = %plan.name, error = %e, "cannot resume an IKE SA");
            }
            if resumed > 0 {
                tracing::info!(tunnel = %plan.name, ike_sas = resumed, age_ms = elapsed.as_millis() as u64, "resumed from the SA state: no handshake");
                // Nothing to initiate: the customer's SAs are ours again.
                if let Some(r) = self.resume.as_mut() {
                    r.remove(&plan.name);
                }
            }
            sent
        };
        if !sent {
            // Nothing can run without IKE: the daemon is going down.
            return Err(RuntimeError::DriverStopped("IKE"));
        }
        tracing::info!(
            tunnel = %plan.name,
            tunnel_id = id,
            tun = %plan.tun,
            local = %plan.local,
            remote = %plan.remote,
            initiator = plan.initiate,
            "tunnel configured"
        );
        self.tunnels.insert(
            plan.name.clone(),
            RunningTunnel {
                plan: plan.clone(),
                id,
                ike_up: false,
                ike: IkeTrack::default(),
                child: None,
                child_since: None,
                child_installs: 0,
                inbound: BTreeSet::new(),
                pending_out: Vec::new(),
                reinitiate_at: None,
            },
        );
        Ok(())
    }

    fn ike_config(
        plan: &TunnelPlan,
        psk: gateway_ike::Psk,
        lifetime: Lifetime,
    ) -> Result<ConnectionConfig, gateway_ike::config::ConfigError> {
        let mut c = ConnectionConfig::new(plan.name.clone(), plan.local, plan.remote, psk);
        c.initiate = plan.initiate;
        // The IKE layer hands these back in every install, so the
        // outbound SA gets exactly what the CHILD SA was negotiated with.
        c.child_volume = gateway_ike::VolumeLifetimes {
            soft_packets: lifetime.soft_packets,
            hard_packets: lifetime.hard_packets,
            soft_bytes: lifetime.soft_bytes,
            hard_bytes: lifetime.hard_bytes,
        };
        if !plan.ikev2_ciphers.is_empty() {
            c.ike_ciphers = plan
                .ikev2_ciphers
                .iter()
                .map(|x| {
                    IkeCipher::from_api(
                        x.encryption.as_str(),
                        x.integrity.map(|i| i.as_str()),
                        x.dh_group.map(|d| d.as_str()),
                    )
                })
                .collect::<Result<_, _>>()?;
        }
        if !plan.esp_ciphers.is_empty() {
            c.esp_ciphers = plan
                .esp_ciphers
                .iter()
                .map(|x| {
                    EspCipher::from_api(
                        x.encryption.as_str(),
                        x.integrity.map(|i| i.as_str()),
                        x.dh_group.map(|d| d.as_str()),
                    )
                })
                .collect::<Result<_, _>>()?;
        }
        // strongSwan's userspace ESP (and most NAT'ed peers) only speak
        // UDP-encapsulated ESP; our data path handles both, so always ask.
        c.force_encap = true;
        c.dpd_interval = Some(DPD_INTERVAL);
        c.retransmit_timeout = RETRANSMIT_TIMEOUT;
        c.retransmit_base = RETRANSMIT_BASE;
        c.retransmit_tries = RETRANSMIT_TRIES;
        c.dpd_action = if plan.initiate {
            DpdAction::Restart
        } else {
            DpdAction::Clear
        };
        Ok(c)
    }

    /// Removes a tunnel from this host; `tell_peer`: delete its IKE SAs
    /// toward the customer (DELETE) too, else they are only forgotten (a
    /// restart: the customer keeps them until we are back). `keep_on_host`
    /// (a restart): the TUN, its addresses and its kernel routes stay for
    /// the next process.
    async fn remove_tunnel(
        &mut self,
        name: &str,
        tell_peer: bool,
        keep_on_host: bool,
    ) -> Result<(), RuntimeError> {
        let Some(t) = self.tunnels.remove(name) else {
            return Ok(());
        };
        // Nothing of the tunnel may outlive it: its id goes to another
        // tunnel soon.
        for spi in &t.inbound {
            if let Err(e) = self.dataplane.remove_inbound_sa(*spi) {
                tracing::debug!(spi = format_args!("{spi:08x}"), error = %e, "removing an inbound SA");
            }
        }
        if tell_peer {
            self.ike
                .send(IkeCommand::RemoveConnection(name.to_owned()))
                .await
                .map_err(|_| RuntimeError::DriverStopped("IKE"))?;
        }
        if let Some((spi_in, spi_out)) = t.child {
            self.remove_child(t.id, spi_in, spi_out);
        }
        // What went through it moves to its session's carrier, or goes
        // (on a restart it stays where it is, in the kernel).
        let through: Vec<(IpNet, SessionId)> = self
            .routes
            .iter()
            .filter(|(_, (id, _))| *id == t.id && !keep_on_host)
            .map(|(p, (_, s))| (*p, *s))
            .collect();
        for (prefix, session) in through {
            match self.session_carrier(session) {
                Some(carrier) if carrier != t.id => self.install_route(prefix, carrier, session),
                _ => self.withdraw_route(prefix),
            }
        }
        // Detours through it are moved by the rebalance that ends `apply`.
        // Stopping its reader drops the TUN: unless kept for a restart, the
        // interface, its addresses and routes go with it.
        {
            let mut slow = self.datapath.slow.lock().unwrap_or_else(|p| p.into_inner());
            if keep_on_host {
                slow.remove_tunnel(t.id);
            } else {
                slow.delete_tunnel(t.id);
            }
        }
        // Its id goes back to the pool, zeroed, for a later tunnel.
        if let Err(e) = self.dataplane.forget_tunnel(t.id) {
            tracing::warn!(tunnel = %name, tunnel_id = t.id, error = %e, "cannot reset the tunnel's data-plane state");
        }
        self.ids.release(t.id, Instant::now());
        tracing::info!(tunnel = %name, tun = %t.plan.tun, "tunnel removed");
        Ok(())
    }

    async fn add_session(&mut self, plan: &SessionPlan) -> Result<(), RuntimeError> {
        let mut config = SessionConfig::from_interconnect(
            &plan.local.to_string(),
            &plan.peer.to_string(),
            plan.local_asn,
            plan.peer_asn,
        )
        .map_err(|e| tunnel_err(&plan.tunnel, "BGP session")(Box::new(e)))?;
        config.max_prefixes = Some(plan.max_prefixes);
        config.graceful_restart = Some(GRACEFUL_RESTART_TIME);
        config.restarting = self.restarted.contains(&plan.tunnel);
        let id = self.next_session;
        self.next_session += 1;
        let policy = SessionPolicy {
            routing_policy: routing_policy(plan),
            route_propagation: plan.route_propagation,
            exported: plan.exported.clone(),
        };
        self.bgp
            .add_session(id, config, policy)
            .await
            .map_err(|e| tunnel_err(&plan.tunnel, "BGP session")(Box::new(e)))?;
        tracing::info!(session = %plan.name, local = %plan.local, peer = %plan.peer, peer_asn = plan.peer_asn, "BGP session configured");
        self.session_names.insert(id, plan.name.clone());
        self.sessions.insert(
            plan.name.clone(),
            RunningSession {
                plan: plan.clone(),
                id,
                up: false,
                detour: None,
            },
        );
        self.keep_stale_routes(plan, id);
        Ok(())
    }

    /// After a restart: the routes the session had go back at once,
    /// stale, so that the VPC keeps reaching the customer while BGP comes
    /// back (the customer keeps ours the same way). The session's own
    /// routes replace them; its End-of-RIB or the deadline removes the
    /// rest.
    fn keep_stale_routes(&mut self, plan: &SessionPlan, id: SessionId) {
        let Some(prefixes) = self
            .sa
            .as_mut()
            .and_then(|b| b.routes_at_start.remove(&plan.name))
        else {
            return;
        };
        if !plan.route_propagation {
            return;
        }
        let Some(tunnel) = self.session_carrier(id) else {
            return;
        };
        for prefix in &prefixes {
            self.install_route(*prefix, tunnel, id);
        }
        tracing::info!(session = %plan.name, routes = prefixes.len(), "routes from before the restart kept (stale) until the BGP session is back");
        self.stale.insert(
            id,
            StaleRoutes {
                prefixes: prefixes.into_iter().collect(),
                deadline: Instant::now() + STALE_UNTIL_UP,
            },
        );
    }

    /// Withdraws what is still stale of `session` (its End-of-RIB came, or
    /// the deadline passed).
    fn sweep_stale(&mut self, session: SessionId, why: &str) {
        let Some(stale) = self.stale.remove(&session) else {
            return;
        };
        let gone: Vec<IpNet> = stale
            .prefixes
            .into_iter()
            .filter(|p| self.routes.get(p).is_some_and(|(_, s)| *s == session))
            .collect();
        if !gone.is_empty() {
            tracing::info!(
                session,
                routes = gone.len(),
                "stale routes withdrawn: {why}"
            );
        }
        for p in gone {
            self.withdraw_route(p);
        }
    }

    /// Removes a BGP session; `cease`: close it toward the customer with
    /// a Cease, else leave it to end with the process (Graceful Restart).
    async fn remove_session(&mut self, name: &str, cease: bool) -> Result<(), RuntimeError> {
        let Some(s) = self.sessions.remove(name) else {
            return Ok(());
        };
        self.sweep_stale(s.id, "the session was removed");
        self.session_names.remove(&s.id);
        if let Some(via) = s.detour {
            self.withdraw_peer_route(&s.plan, via);
        }
        if cease {
            self.bgp
                .remove_session(s.id)
                .await
                .map_err(|_| RuntimeError::DriverStopped("BGP"))?;
        }
        Ok(())
    }

    /// Handles one report of the IKE driver.
    pub fn on_ike(&mut self, action: IkeAction) {
        match action {
            IkeAction::IkeSaUp {
                conn,
                ike,
                rekey_of,
                remote,
                resumed,
                ..
            } => {
                self.rekeys.0 += u64::from(rekey_of.is_some());
                match rekey_of {
                    Some(old) => self.event(
                        &conn,
                        "ike_sa_rekeyed",
                        format!("IKE SA {ike} replaces {old}"),
                    ),
                    None if resumed => self.event(
                        &conn,
                        "ike_sa_resumed",
                        format!("IKE SA {ike} with {remote} resumed after a restart"),
                    ),
                    None => self.event(
                        &conn,
                        "ike_sa_up",
                        format!("IKE SA {ike} established with {remote}"),
                    ),
                }
                if let Some(t) = self.tunnels.get_mut(&conn) {
                    t.ike.up(ike, rekey_of);
                    t.ike_up = true;
                    t.reinitiate_at = None;
                    match rekey_of {
                        Some(old) => {
                            tracing::info!(tunnel = %conn, %ike, %old, "IKE SA rekeyed")
                        }
                        None if resumed => {
                            tracing::info!(tunnel = %conn, %ike, "IKE SA resumed (no handshake)")
                        }
                        None => tracing::info!(tunnel = %conn, %ike, "IKE SA established"),
                    }
                }
            }
            IkeAction::IkeSaDown { conn, ike, reason } => {
                let why = match reason {
                    DownReason::PeerUnreachable => {
                        "the peer stopped answering (DPD or retransmissions)".to_owned()
                    }
                    ref r => format!("{r:?}"),
                };
                self.event(&conn, "ike_sa_down", format!("IKE SA {ike} down: {why}"));
                if let Some(t) = self.tunnels.get_mut(&conn) {
                    match t.ike.down(ike) {
                        IkeLoss::NotEstablished => {
                            tracing::debug!(tunnel = %conn, %ike, reason = ?reason, "IKE SA down that was not the tunnel's: ignored");
                            return;
                        }
                        IkeLoss::Other => {
                            // INITIAL_CONTACT or a second IKE SA of the
                            // peer: the tunnel's own SA is another one.
                            tracing::info!(tunnel = %conn, %ike, reason = ?reason, "an older IKE SA of the tunnel went");
                        }
                        IkeLoss::Carrier { still_up } => {
                            // Its CHILD SAs were removed just before; the
                            // tunnel has none until a new one is installed.
                            let child = t.child.take();
                            let id = t.id;
                            t.ike_up = still_up;
                            if !still_up {
                                tracing::warn!(tunnel = %conn, %ike, reason = ?reason, "IKE SA down");
                                // The IKE manager restarts on DPD failure
                                // itself; a removed or replaced SA needs
                                // nothing.
                                let wait = match reason {
                                    DownReason::PeerUnreachable
                                    | DownReason::Removed
                                    | DownReason::Replaced => None,
                                    DownReason::Deleted => Some(REINITIATE_AFTER_DELETE),
                                    _ => Some(REINITIATE_AFTER_FAILURE),
                                };
                                if t.plan.initiate {
                                    t.reinitiate_at = wait.map(|w| Instant::now() + w);
                                }
                            } else {
                                tracing::warn!(tunnel = %conn, %ike, reason = ?reason, "the IKE SA carrying the tunnel went down; another IKE SA is up");
                            }
                            if let Some((i, o)) = child {
                                self.remove_child(id, i, o);
                            }
                        }
                    }
                }
            }
            IkeAction::IkeSaFailed {
                conn,
                ike,
                initiator,
                reason,
            } => {
                let label = crate::metrics::failure_reason(&reason);
                *self.negotiation_failures.entry(label).or_insert(0) += 1;
                // A half-open SA that timed out or was refused for load says
                // nothing (anyone can start one from the customer's address).
                if initiator
                    || !matches!(reason, DownReason::HalfOpenTimeout | DownReason::Overload)
                {
                    let who = if initiator {
                        "our attempt"
                    } else {
                        "the customer's attempt"
                    };
                    self.event(
                        &conn,
                        "ike_sa_failed",
                        format!("{who} failed: {label} ({reason:?})"),
                    );
                }
                let Some(t) = self.tunnels.get_mut(&conn) else {
                    return;
                };
                if !initiator {
                    // A half-open IKE SA the peer (or anyone sending from
                    // its address) started: says nothing about the tunnel.
                    tracing::debug!(tunnel = %conn, %ike, reason = ?reason, "half-open IKE SA failed");
                    return;
                }
                tracing::warn!(tunnel = %conn, %ike, reason = ?reason, "IKE SA not established");
                // Our own attempt: try again later, unless an established
                // IKE SA carries the tunnel meanwhile. The IKE manager
                // restarts itself when the peer did not answer.
                let wait = match reason {
                    DownReason::PeerUnreachable | DownReason::Removed => None,
                    _ => Some(REINITIATE_AFTER_FAILURE),
                };
                if t.plan.initiate && !t.ike_up {
                    t.reinitiate_at = wait.map(|w| Instant::now() + w);
                }
            }
            IkeAction::InstallChildSa(c) => {
                let spi_in = c.spi_in;
                self.rekeys.1 += u64::from(c.replaces_spi_in.is_some());
                let (kind, what) = match c.replaces_spi_in {
                    Some(old) => ("child_sa_rekeyed", format!(", replaces {old:08x}_i")),
                    None => ("child_sa_installed", String::new()),
                };
                let msg = format!(
                    "CHILD SA {:08x}_i {:08x}_o {}{}{what}",
                    c.spi_in,
                    c.spi_out,
                    c.encryption,
                    if c.esn { " ESN" } else { "" }
                );
                self.event(&c.conn, kind, msg);
                self.install_child(c);
                // The IKE driver holds the datagrams that let the peer use
                // it until now (a full channel: until its own deadline).
                let _ = self.ike.try_send(IkeCommand::ChildSaApplied { spi_in });
            }
            IkeAction::RemoveChildSa {
                conn,
                spi_in,
                spi_out,
                ..
            } => {
                self.event(
                    &conn,
                    "child_sa_deleted",
                    format!("CHILD SA {spi_in:08x}_i {spi_out:08x}_o removed"),
                );
                if let Some(t) = self.tunnels.get_mut(&conn) {
                    if t.child.map(|(i, _)| i) == Some(spi_in) {
                        t.child = None;
                    }
                    t.inbound.remove(&spi_in);
                    t.pending_out.retain(|(i, _)| *i != spi_in);
                    let id = t.id;
                    self.remove_child(id, spi_in, spi_out);
                }
            }
            IkeAction::ActivateOutbound {
                conn,
                spi_in,
                spi_out,
                ..
            } => self.activate_outbound(&conn, spi_in, spi_out),
            IkeAction::Log {
                conn,
                level,
                message,
            } => match level {
                gateway_ike::LogLevel::Debug => tracing::debug!(tunnel = %conn, "{message}"),
                gateway_ike::LogLevel::Info => tracing::info!(tunnel = %conn, "{message}"),
                gateway_ike::LogLevel::Warn => tracing::warn!(tunnel = %conn, "{message}"),
            },
            IkeAction::PeerEndpointChanged {
                conn,
                old,
                new,
                spis_out,
                ..
            } => {
                if let Some(t) = self.tunnels.get(&conn) {
                    let id = t.id;
                    tracing::info!(tunnel = %conn, %old, %new, "peer's NAT mapping changed: its ESP follows");
                    for spi in spis_out {
                        // Only the tunnel's current outbound SA is in the
                        // table; one being rekeyed away is refused
                        // (NoOutboundSa), which is harmless.
                        if let Err(e) =
                            self.dataplane
                                .set_outbound_udp_dst_port(id, spi, new.port())
                        {
                            tracing::debug!(tunnel = %conn, spi = format_args!("{spi:08x}"), error = %e, "moving outbound SA");
                        }
                    }
                }
                return;
            }
            IkeAction::SaState {
                conn,
                ike,
                snapshot,
            } => {
                let fingerprint = self
                    .tunnels
                    .get(&conn)
                    .map(|t| sa_state::fingerprint(&t.plan));
                if let Some(book) = self.sa.as_mut() {
                    match (snapshot, fingerprint) {
                        (Some(snapshot), Some(fingerprint)) => {
                            book.current.insert(
                                ike.0,
                                sa_state::Entry {
                                    tunnel: conn,
                                    fingerprint,
                                    taken_unix_ms: sa_state::unix_ms(std::time::SystemTime::now()),
                                    snapshot: *snapshot,
                                },
                            );
                        }
                        _ => {
                            book.current.remove(&ike.0);
                        }
                    }
                    book.dirty = true;
                }
                return;
            }
            IkeAction::Send { .. } | IkeAction::ArmTimer { .. } | IkeAction::ComputeDh(_) => return,
        }
        self.rebalance(false);
        self.report_statuses();
    }

    fn install_child(&mut self, c: ChildSaInstall) {
        let Some(t) = self.tunnels.get_mut(&c.conn) else {
            tracing::warn!(tunnel = %c.conn, "CHILD SA for an unknown tunnel ignored");
            return;
        };
        if !t.ike.is_up(c.ike) {
            // Keys from an IKE SA that is not (or no longer) established
            // for this tunnel never reach the data plane.
            tracing::error!(
                tunnel = %c.conn,
                ike = %c.ike,
                spi_in = format_args!("{:08x}", c.spi_in),
                "CHILD SA of an IKE SA that is not up refused"
            );
            return;
        }
        let tunnel = t.id;
        if let Some(r) = c.resume {
            // A CHILD SA resumed after a restart continues its sequence
            // numbers (both directions) where the state file left them;
            // its outbound SA sends once the next mark is written (now).
            self.dataplane.table().expect_resume(
                c.spi_in,
                r.replay_right_edge,
                c.spi_out,
                r.seq_out,
            );
            if let Some(book) = self.sa.as_mut() {
                book.urgent = true;
            }
        }
        // Deferred only while an older CHILD SA still sends; else there is
        // nothing to wait for.
        let deferred = c.outbound_deferred && t.child.is_some();
        let dataplane = &self.dataplane;
        let result =
            (|| -> Result<Option<OutboundSaConfig>, Box<dyn std::error::Error + Send + Sync>> {
                let suite = Suite::from_api_names(c.encryption, c.integrity)?;
                let keys_in =
                    SaKeys::new(suite, &c.keys_in.encryption_key, &c.keys_in.integrity_key)?;
                let keys_out =
                    SaKeys::new(suite, &c.keys_out.encryption_key, &c.keys_out.integrity_key)?;
                let udp = c.udp_encap.map(|u| UdpEncap {
                    src_port: u.local_port,
                    dst_port: u.remote_port,
                });
                let outbound = OutboundSaConfig {
                    tunnel,
                    spi: c.spi_out,
                    keys: keys_out,
                    esn: c.esn,
                    outer: OuterHeader {
                        src: c.local_addr,
                        dst: c.remote_addr,
                        udp,
                        ttl: 64,
                    },
                    lifetime: Lifetime {
                        soft_packets: c.volume.soft_packets,
                        hard_packets: c.volume.hard_packets,
                        soft_bytes: c.volume.soft_bytes,
                        hard_bytes: c.volume.hard_bytes,
                    },
                };
                dataplane.install_inbound_sa(InboundSaConfig {
                    tunnel,
                    spi: c.spi_in,
                    keys: keys_in,
                    esn: c.esn,
                    replay_window: DEFAULT_WINDOW,
                    selectors: negotiated_selectors(&c.local_ts, &c.remote_ts),
                })?;
                if deferred {
                    return Ok(Some(outbound));
                }
                dataplane.install_outbound_sa(outbound)?;
                Ok(None)
            })();
        match result {
            Ok(pending) => {
                tracing::info!(
                    tunnel = %c.conn,
                    spi_in = format_args!("{:08x}", c.spi_in),
                    spi_out = format_args!("{:08x}", c.spi_out),
                    encryption = c.encryption,
                    udp_encap = c.udp_encap.is_some(),
                    outbound_deferred = deferred,
                    "CHILD SA installed"
                );
                t.child_installs += 1;
                t.ike.installed(c.ike);
                t.inbound.insert(c.spi_in);
                match pending {
                    // The old pair sends until the peer deleted it.
                    Some(out) => t.pending_out.push((c.spi_in, out)),
                    None => {
                        t.child = Some((c.spi_in, c.spi_out));
                        t.child_since = Some(Instant::now());
                    }
                }
            }
            Err(e) => tracing::error!(tunnel = %c.conn, error = %e, "cannot install CHILD SA"),
        }
    }

    /// The peer deleted the CHILD SA that a deferred one replaces (or
    /// took too long to): the successor's outbound SA sends from now on.
    fn activate_outbound(&mut self, conn: &str, spi_in: u32, spi_out: u32) {
        let Some(t) = self.tunnels.get_mut(conn) else {
            return;
        };
        let Some(pos) = t.pending_out.iter().position(|(i, _)| *i == spi_in) else {
            // Installed at once (nothing sent before it): nothing waits.
            return;
        };
        let (_, out) = t.pending_out.swap_remove(pos);
        match self.dataplane.install_outbound_sa(out) {
            Ok(_) => {
                tracing::info!(
                    tunnel = %conn,
                    spi_in = format_args!("{spi_in:08x}"),
                    spi_out = format_args!("{spi_out:08x}"),
                    "sending on the rekeyed CHILD SA"
                );
                t.child = Some((spi_in, spi_out));
                t.child_since = Some(Instant::now());
            }
            Err(e) => {
                tracing::error!(tunnel = %conn, error = %e, "cannot switch to the rekeyed outbound SA")
            }
        }
    }

    /// An outbound SA passed a volume lifetime limit (reported by the data
    /// plane once per SA): the soft limit rekeys the tunnel's CHILD SA now
    /// (make-before-break, like a time-based rekey); the hard limit means
    /// the rekey came too late and the SA no longer sends.
    pub async fn on_limit(&mut self, e: LimitEvent) {
        let Some((name, spi_in)) = self.tunnels.iter().find_map(|(name, t)| {
            t.child
                .filter(|&(_, out)| t.id == e.tunnel && out == e.spi)
                .map(|(spi_in, _)| (name.clone(), spi_in))
        }) else {
            // A rekeyed-away SA: its successor is in place already.
            return;
        };
        if e.hard {
            tracing::error!(tunnel = %name, spi_out = format_args!("{:08x}", e.spi), "outbound SA reached its hard lifetime before its rekey completed: traffic stops until it does");
            return;
        }
        tracing::info!(tunnel = %name, spi_out = format_args!("{:08x}", e.spi), "outbound SA passed its soft lifetime: rekeying the CHILD SA");
        if self
            .ike
            .send(IkeCommand::RekeyChildSa { conn: name, spi_in })
            .await
            .is_err()
        {
            tracing::error!("the IKE driver has stopped");
        }
    }

    fn remove_child(&self, tunnel: TunnelId, spi_in: u32, spi_out: u32) {
        if let Err(e) = self.dataplane.remove_outbound_sa(tunnel, spi_out) {
            tracing::debug!(tunnel, error = %e, "removing outbound SA");
        }
        if let Err(e) = self.dataplane.remove_inbound_sa(spi_in) {
            tracing::debug!(tunnel, error = %e, "removing inbound SA");
        }
    }

    /// Handles one report of the BGP driver.
    pub fn on_bgp(&mut self, event: BgpEvent) {
        match event {
            BgpEvent::EndOfRib(id) => {
                self.sweep_stale(id, "the peer's End-of-RIB");
                // The route count once the peer's initial routes are in.
                if let Some(s) = self
                    .session_names
                    .get(&id)
                    .and_then(|n| self.sessions.get(n))
                {
                    let installed = self.routes.values().filter(|(_, sid)| *sid == id).count();
                    let family = s.plan.name.rsplit('/').next().unwrap_or("");
                    self.pending_events.push((
                        s.plan.connection.clone(),
                        "bgp_routes".to_owned(),
                        format!(
                            "{family}: End-of-RIB from {}: {installed} route(s) installed",
                            s.plan.peer.addr()
                        ),
                    ));
                }
            }
            BgpEvent::SessionUp(id) | BgpEvent::SessionDown(id, _) => {
                let up = matches!(event, BgpEvent::SessionUp(_));
                let cause = match &event {
                    BgpEvent::SessionDown(_, Some(c)) => format!(": {c}"),
                    _ => String::new(),
                };
                if let (true, Some(st)) = (up, self.stale.get_mut(&id)) {
                    // A peer without Graceful Restart sends no End-of-RIB.
                    st.deadline = st.deadline.min(Instant::now() + STALE_AFTER_UP);
                }
                if let Some(name) = self.session_names.get(&id) {
                    if let Some(s) = self.sessions.get_mut(name) {
                        s.up = up;
                        tracing::info!(session = %name, up, "BGP session state");
                        let (kind, word) = if up {
                            ("bgp_up", "up")
                        } else {
                            ("bgp_down", "down")
                        };
                        let family = name.rsplit('/').next().unwrap_or("");
                        self.pending_events.push((
                            s.plan.connection.clone(),
                            kind.to_owned(),
                            format!(
                                "{family}: BGP session with {} {word}{cause}",
                                s.plan.peer.addr()
                            ),
                        ));
                    }
                }
            }
            BgpEvent::Route(RouteChange::Install(route)) => {
                // Refreshed: no longer stale (under whichever session).
                for st in self.stale.values_mut() {
                    st.prefixes.remove(&route.prefix);
                }
                match self.session_carrier(route.session) {
                    Some(tunnel) => self.install_route(route.prefix, tunnel, route.session),
                    None => {
                        tracing::warn!(prefix = %route.prefix, "route from an unknown session ignored")
                    }
                }
            }
            BgpEvent::Route(RouteChange::Withdraw { prefix }) => {
                for st in self.stale.values_mut() {
                    st.prefixes.remove(&prefix);
                }
                self.withdraw_route(prefix)
            }
        }
        self.report_statuses();
    }

    /// The tunnel that carries what is planned through `planned`: itself
    /// while it is usable, else another usable tunnel of the same connection
    /// (failover), else itself (nothing better to do).
    fn carrier(&self, planned: &str) -> Option<TunnelId> {
        let t = self.tunnels.get(planned)?;
        Some(pick_carrier(
            TunnelState::of(t),
            self.tunnels.values().map(TunnelState::of),
        ))
    }

    /// The carrier of a BGP session's planned tunnel.
    fn session_carrier(&self, session: SessionId) -> Option<TunnelId> {
        let name = self.session_names.get(&session)?;
        self.carrier(&self.sessions.get(name)?.plan.tunnel)
    }

    /// Puts every route, and every session's route to its BGP peer, on its
    /// carrier. Runs after each IKE report (`force` false: only when the set
    /// of usable tunnels changed) and after plan changes (`force` true).
    fn rebalance(&mut self, force: bool) {
        let usable: Vec<TunnelId> = self
            .tunnels
            .values()
            .filter(|t| t.usable())
            .map(|t| t.id)
            .collect();
        if !force && usable == self.placed_on {
            return;
        }
        self.placed_on = usable;
        let moves: Vec<(IpNet, TunnelId, TunnelId, SessionId)> = self
            .routes
            .iter()
            .filter_map(|(prefix, &(via, session))| {
                let want = self.session_carrier(session)?;
                (want != via).then_some((*prefix, via, want, session))
            })
            .collect();
        if !moves.is_empty() {
            tracing::warn!(
                routes = moves.len(),
                "moving routes to the tunnels that carry them now"
            );
        }
        for (prefix, from, to, session) in moves {
            tracing::debug!(%prefix, from, to, "route moved");
            self.install_route(prefix, to, session);
        }
        // The BGP peer's interconnection address is on the session's own
        // TUN (a connected route); while that tunnel is down a host route
        // through the carrier's TUN keeps the session's TCP flowing.
        let detours: Vec<(String, Option<TunnelId>)> = self
            .sessions
            .iter()
            .filter_map(|(name, s)| {
                let own = self.tunnels.get(&s.plan.tunnel).map(|t| t.id);
                let want = self.carrier(&s.plan.tunnel).filter(|c| Some(*c) != own);
                (want != s.detour).then(|| (name.clone(), want))
            })
            .collect();
        for (name, want) in detours {
            let Some(s) = self.sessions.get(&name) else {
                continue;
            };
            let (plan, old) = (s.plan.clone(), s.detour);
            if let Some(via) = want {
                let Some(p) = ip_prefix(IpNet::from(plan.peer.addr())) else {
                    continue;
                };
                match self.dataplane.install_route(p, via) {
                    Ok(()) => {
                        tracing::warn!(session = %name, peer = %plan.peer.addr(), via, "BGP session rerouted through the connection's other tunnel")
                    }
                    Err(e) => {
                        tracing::error!(session = %name, error = %e, "cannot reroute the BGP session")
                    }
                }
            }
            if let Some(old) = old {
                self.withdraw_peer_route(&plan, old);
                if want.is_none() {
                    tracing::info!(session = %name, "BGP session back on its own tunnel");
                }
            }
            if let Some(s) = self.sessions.get_mut(&name) {
                s.detour = want;
            }
        }
    }

    fn withdraw_peer_route(&self, plan: &SessionPlan, via: TunnelId) {
        let Some(p) = ip_prefix(IpNet::from(plan.peer.addr())) else {
            return;
        };
        if let Err(e) = self.dataplane.withdraw_route(p, via) {
            tracing::warn!(session = %plan.name, error = %e, "cannot remove the BGP peer's detour route");
        }
    }

    fn install_route(&mut self, prefix: IpNet, tunnel: TunnelId, session: SessionId) {
        let Some(p) = ip_prefix(prefix) else { return };
        if let Some(b) = self.sa.as_mut() {
            b.dirty = true;
        }
        if let Some((old, _)) = self.routes.insert(prefix, (tunnel, session)) {
            if old != tunnel {
                let _ = self.dataplane.withdraw_route(p, old);
            }
        }
        match self.dataplane.install_route(p, tunnel) {
            Ok(()) => tracing::info!(%prefix, tunnel, "route installed"),
            Err(e) => tracing::error!(%prefix, tunnel, error = %e, "cannot install route"),
        }
    }

    fn withdraw_route(&mut self, prefix: IpNet) {
        let Some((tunnel, _)) = self.routes.remove(&prefix) else {
            return;
        };
        if let Some(b) = self.sa.as_mut() {
            b.dirty = true;
        }
        let Some(p) = ip_prefix(prefix) else { return };
        match self.dataplane.withdraw_route(p, tunnel) {
            Ok(()) => tracing::info!(%prefix, tunnel, "route withdrawn"),
            Err(e) => tracing::error!(%prefix, tunnel, error = %e, "cannot withdraw route"),
        }
    }

    /// Writes each connection's statuses to the store when they changed.
    fn report_statuses(&mut self) {
        let mut per_conn: BTreeMap<String, ConnectionStatusUpdate> = BTreeMap::new();
        for t in self.tunnels.values() {
            let e = per_conn
                .entry(t.plan.connection.clone())
                .or_insert_with(down_update);
            report_tunnel(e, t, &self.dataplane);
        }
        for s in self.sessions.values() {
            let e = per_conn
                .entry(s.plan.connection.clone())
                .or_insert_with(down_update);
            // A planned session always has its routing policy attached; a
            // family without one stays `disabled` (the default above).
            let st = if s.up {
                BgpSessionStatus::Up
            } else {
                BgpSessionStatus::Down
            };
            match s.plan.family {
                Family::V4 => e.bgp_status_ipv4 = st,
                Family::V6 => e.bgp_status_ipv6 = st,
            }
        }
        let mut connections = Vec::new();
        for (conn, mut update) in per_conn {
            update.status = connection_status(&update);
            connections.push(ConnectionInfo {
                id: conn.clone(),
                status: update.status.as_str(),
            });
            if self.reported.get(&conn) == Some(&update) {
                continue;
            }
            match self.store.set_connection_status(&conn, &update) {
                Ok(()) => {
                    tracing::info!(connection = %conn, status = %update.status, "connection status");
                    self.reported.insert(conn, update);
                }
                Err(e) => tracing::warn!(connection = %conn, error = %e, "cannot record status"),
            }
        }
        if !self.pending_events.is_empty() {
            let events = std::mem::take(&mut self.pending_events);
            if let Err(e) = self.store.add_connection_events(&events) {
                tracing::warn!(error = %e, events = events.len(), "cannot record connection events");
            }
        }
        self.publish(connections);
    }

    /// Records an event of the connection that `tunnel` belongs to (for
    /// `GET .../connections/{id}/events`); never a secret in `message`.
    fn event(&mut self, tunnel: &str, kind: &str, message: String) {
        let Some(conn) = self.tunnels.get(tunnel).map(|t| t.plan.connection.clone()) else {
            return;
        };
        let family = tunnel.rsplit('/').next().unwrap_or("");
        self.pending_events
            .push((conn, kind.to_owned(), format!("{family}: {message}")));
    }

    /// Publishes what runs for `/metrics`.
    fn publish(&self, connections: Vec<ConnectionInfo>) {
        let family = |f: Family| match f {
            Family::V4 => "v4",
            Family::V6 => "v6",
        };
        let snap = Snapshot {
            tunnels: self
                .tunnels
                .values()
                .map(|t| TunnelInfo {
                    name: t.plan.name.clone(),
                    connection: t.plan.connection.clone(),
                    family: family(t.plan.family),
                    id: t.id,
                    ike_up: t.ike_up,
                    child_installed: t.child.is_some(),
                    child_sas_installed: t.child_installs,
                    child_since: t.child.and(t.child_since),
                })
                .collect(),
            sessions: self
                .sessions
                .values()
                .map(|s| SessionInfo {
                    name: s.plan.name.clone(),
                    connection: s.plan.connection.clone(),
                    family: family(s.plan.family),
                    up: s.up,
                    routes: self.routes.values().filter(|(_, id)| *id == s.id).count() as u64,
                    prefixes: self.prefix_counts.get(&s.id).copied(),
                    failover_via: s.detour.and_then(|via| {
                        self.tunnels
                            .values()
                            .find(|t| t.id == via)
                            .map(|t| t.plan.name.clone())
                    }),
                })
                .collect(),
            connections,
            tunnels_created: self.tunnels_created,
            converged: self.converged,
            negotiation_failures: self.negotiation_failures.clone(),
            ike_rekeys: self.rekeys.0,
            child_rekeys: self.rekeys.1,
            census: self.census,
        };
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = snap;
    }

    /// Asks the IKE driver for its SA count by state and the BGP driver
    /// for every session's prefix counts (one round trip each; each is a
    /// pass over the SAs or the sessions, so the agent calls this on its
    /// resync tick, not per event), and puts them in the published
    /// snapshot.
    pub async fn refresh_counts(&mut self) {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if self.ike.send(IkeCommand::Census(reply)).await.is_ok() {
            // No answer: the driver is not running yet (addresses unbound).
            if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(1), rx).await {
                self.census = Some(c);
            }
        }
        if let Ok(counts) = self.bgp.prefix_counts().await {
            self.prefix_counts = counts
                .into_iter()
                .map(|c| (c.session, (c.received as u64, c.accepted as u64)))
                .collect();
        }
        let mut snap = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        snap.census = self.census;
        for info in &mut snap.sessions {
            if let Some(s) = self.sessions.get(&info.name) {
                info.prefixes = self.prefix_counts.get(&s.id).copied();
            }
        }
    }

    /// Tears everything down (daemon shutdown).
    /// Removes everything this host set up. `drain`: the host leaves
    /// service, so the IKE SAs are deleted toward the customers and the BGP
    /// sessions closed with a Cease. Otherwise (a restart) no DELETE goes
    /// out, customers keep their SAs until we are back (see
    /// `initiate_resumed`), and a BGP session that negotiated Graceful
    /// Restart ends without a NOTIFICATION, so the customer keeps our
    /// routes; one without it still gets a Cease (a session whose TCP
    /// vanished silently would end only at the customer's hold timer).
    pub async fn shutdown(&mut self, drain: bool) {
        if drain {
            tracing::warn!(
                tunnels = self.tunnels.len(),
                sessions = self.sessions.len(),
                "draining: deleting every IKE SA toward the customers"
            );
        } else {
            tracing::info!(
                tunnels = self.tunnels.len(),
                "stopping for a restart: customers keep their IKE and CHILD SAs (no IKE DELETE)"
            );
        }
        if drain {
            // Deleted toward the customers: nothing to resume.
            if let Some(book) = &self.sa {
                sa_state::remove(&book.dir);
            }
        } else {
            // Last, exact: message IDs, sequence numbers, edges and routes
            // as they are (the SAs send nothing beyond what the file
            // reserved).
            self.persist_sa_state(true).await;
        }
        if !drain {
            // Routes still stale from the last start stay in the kernel too
            // (they are in the file just written).
            self.stale.clear();
        }
        let names: Vec<String> = self.sessions.keys().cloned().collect();
        for n in names {
            let graceful = match self.sessions.get(&n) {
                Some(s) if !drain => self
                    .bgp
                    .session_status(s.id)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|st| st.graceful_restart),
                _ => false,
            };
            if graceful {
                // No Cease: the customer keeps our routes (stale) for the
                // restart time, and the restarted daemon's session, its
                // routes and its End-of-RIB refresh them.
                tracing::info!(session = %n, restart_time = GRACEFUL_RESTART_TIME, "BGP session left to Graceful Restart");
            }
            let _ = self.remove_session(&n, !graceful).await;
        }
        let names: Vec<String> = self.tunnels.keys().cloned().collect();
        for n in names {
            let _ = self.remove_tunnel(&n, drain, !drain).await;
        }
    }

    /// The local addresses the IKE driver must listen on.
    pub fn local_addresses(plan: &Plan) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = plan.tunnels.values().map(|t| t.local).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Deletes the TUNs a previous run left (they are persistent) whose
/// tunnels are not in `plan`: their connections were deleted or changed
/// while the daemon was down. One that another process holds open, or that
/// is not a TUN, is left alone (the kernel refuses to attach to it).
fn delete_orphan_tuns(plan: &Plan) {
    let links = match Netlink::open().and_then(|mut nl| nl.list_links()) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the interfaces to find TUNs left by a previous run");
            return;
        }
    };
    let planned: BTreeSet<&str> = plan.tunnels.values().map(|t| t.tun.as_str()).collect();
    for link in links {
        if !super::plan::is_tun_name(&link.name) || planned.contains(link.name.as_str()) {
            continue;
        }
        let Ok(tun) = Tun::create(&link.name, false) else {
            continue;
        };
        match tun.set_persist(false) {
            Ok(()) => {
                tracing::info!(tun = %link.name, "TUN left by a previous run deleted: its tunnel is no longer configured")
            }
            Err(e) => {
                tracing::warn!(tun = %link.name, error = %e, "cannot delete a TUN left by a previous run")
            }
        }
    }
}

/// What the carrier choice looks at in a tunnel.
#[derive(Debug, Clone, Copy)]
struct TunnelState<'a> {
    connection: &'a str,
    id: TunnelId,
    usable: bool,
}

impl<'a> TunnelState<'a> {
    fn of(t: &'a RunningTunnel) -> Self {
        Self {
            connection: &t.plan.connection,
            id: t.id,
            usable: t.usable(),
        }
    }
}

/// The failover rule: the planned tunnel while usable, else the first
/// usable tunnel of the same connection, else the planned one.
fn pick_carrier<'a>(
    planned: TunnelState<'a>,
    all: impl IntoIterator<Item = TunnelState<'a>>,
) -> TunnelId {
    if planned.usable {
        return planned.id;
    }
    all.into_iter()
        .find(|o| o.connection == planned.connection && o.usable)
        .map_or(planned.id, |o| o.id)
}

/// A tunnel's part of its connection's statuses: up while usable, and then
/// its packet sizes (the inner MTU the data plane fixed from its CHILD SA:
/// WAN MTU, suite, outer family, NAT-T; the TCP MSS that fits it, which the
/// gateway clamps to when the tunnel's plan says so).
fn report_tunnel(e: &mut ConnectionStatusUpdate, t: &RunningTunnel, dp: &GatewayDataPlane) {
    let usable = t.usable();
    let st = if usable {
        TunnelStatus::Up
    } else {
        TunnelStatus::Down
    };
    let mtu = usable
        .then(|| dp.tunnel_inner_mtu(t.id))
        .flatten()
        .map(|inner_mtu| TunnelMtu {
            inner_mtu,
            tcp_mss_ipv4: u32::from(mss_for(inner_mtu as usize, false)),
            tcp_mss_ipv6: u32::from(mss_for(inner_mtu as usize, true)),
            mss_clamp: t.plan.mss_clamp,
        });
    match t.plan.family {
        Family::V4 => {
            e.tunnel_status_ipv4 = st;
            e.tunnel_mtu_ipv4 = mtu;
        }
        Family::V6 => {
            e.tunnel_status_ipv6 = st;
            e.tunnel_mtu_ipv6 = mtu;
        }
    }
}

fn down_update() -> ConnectionStatusUpdate {
    ConnectionStatusUpdate {
        status: ConnectionStatus::Down,
        tunnel_status_ipv4: TunnelStatus::Down,
        tunnel_status_ipv6: TunnelStatus::Down,
        bgp_status_ipv4: BgpSessionStatus::Disabled,
        bgp_status_ipv6: BgpSessionStatus::Disabled,
        tunnel_mtu_ipv4: None,
        tunnel_mtu_ipv6: None,
    }
}

/// `active` when every BGP session with a routing policy is up,
/// `limited_connectivity` when only some are, `down` otherwise.
pub fn connection_status(u: &ConnectionStatusUpdate) -> ConnectionStatus {
    let enabled: Vec<BgpSessionStatus> = [u.bgp_status_ipv4, u.bgp_status_ipv6]
        .into_iter()
        .filter(|s| *s != BgpSessionStatus::Disabled)
        .collect();
    let up = enabled
        .iter()
        .filter(|s| **s == BgpSessionStatus::Up)
        .count();
    if !enabled.is_empty() && up == enabled.len() {
        ConnectionStatus::Active
    } else if up > 0 {
        ConnectionStatus::LimitedConnectivity
    } else {
        ConnectionStatus::Down
    }
}

fn same_tunnel(a: &TunnelPlan, b: &TunnelPlan) -> bool {
    // Interconnection addresses change in place (see `apply`).
    TunnelPlan {
        interco: Vec::new(),
        ..a.clone()
    } == TunnelPlan {
        interco: Vec::new(),
        ..b.clone()
    }
}

fn to_address(n: &IpNet, ifindex: u32) -> Address {
    Address {
        ifindex,
        addr: n.addr(),
        prefix_len: n.prefix_len(),
    }
}

fn update_addresses(
    tun: &str,
    old: &[IpNet],
    new: &[IpNet],
) -> Result<(), gateway_netio::netlink::NetlinkError> {
    let mut nl = Netlink::open()?;
    let ifindex = nl.link_by_name(tun)?.index;
    for n in old.iter().filter(|n| !new.contains(n)) {
        nl.del_address(&to_address(n, ifindex))?;
    }
    for n in new.iter().filter(|n| !old.contains(n)) {
        nl.add_address(&to_address(n, ifindex))?;
    }
    Ok(())
}

fn same_session(a: &SessionPlan, b: &SessionPlan) -> bool {
    // Policy, propagation and exports change in place; anything else
    // (addresses, ASNs, carrier tunnel) needs a new session.
    a.local == b.local
        && a.peer == b.peer
        && a.local_asn == b.local_asn
        && a.peer_asn == b.peer_asn
        && a.tunnel == b.tunnel
}

fn routing_policy(s: &SessionPlan) -> Option<RoutingPolicy> {
    match RoutingPolicy::from_filters(&s.prefix_filter_in, &s.prefix_filter_out) {
        Ok(p) => Some(p),
        Err(e) => {
            // The API validated the prefixes; a failure here is a bug, and
            // the safe reaction is RFC 8212's: no policy, no routes.
            tracing::error!(session = %s.name, error = %e, "invalid routing policy");
            None
        }
    }
}

fn ip_prefix(n: IpNet) -> Option<IpPrefix> {
    IpPrefix::new(n.network(), n.prefix_len()).ok()
}

/// The tunnel's source filter from its planned allowed sources.
fn set_source_filter(dp: &GatewayDataPlane, tunnel: TunnelId, allowed: &[IpNet]) {
    let prefixes: Vec<IpPrefix> = allowed.iter().copied().filter_map(ip_prefix).collect();
    dp.table()
        .set_source_filter(tunnel, Some(SourceFilter::new(&prefixes)));
}

/// An inbound SA's selectors from what IKE negotiated: inner sources in
/// the peer's traffic selectors (`remote_ts`), destinations in ours. IKE
/// ranges become the prefixes that cover them exactly.
fn negotiated_selectors(
    local: &[gateway_ike::payload::TrafficSelector],
    remote: &[gateway_ike::payload::TrafficSelector],
) -> TrafficSelectors {
    let cover = |ts: &[gateway_ike::payload::TrafficSelector]| -> Vec<IpPrefix> {
        ts.iter()
            .flat_map(|t| IpPrefix::cover_range(t.start_addr, t.end_addr))
            .collect()
    };
    TrafficSelectors {
        local: cover(local),
        remote: cover(remote),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(v4: BgpSessionStatus, v6: BgpSessionStatus) -> ConnectionStatusUpdate {
        ConnectionStatusUpdate {
            bgp_status_ipv4: v4,
            bgp_status_ipv6: v6,
            ..down_update()
        }
    }

    #[test]
    fn failover_picks_a_usable_tunnel_of_the_same_connection() {
        let t = |connection, id, usable| TunnelState {
            connection,
            id,
            usable,
        };
        let all = [
            t("a", 1, false),
            t("b", 2, true),
            t("a", 3, true),
            t("a", 4, false),
        ];
        // Its own tunnel while usable.
        assert_eq!(pick_carrier(all[2], all), 3);
        // Down: the connection's usable tunnel, never another connection's.
        assert_eq!(pick_carrier(all[0], all), 3);
        assert_eq!(pick_carrier(all[3], all), 3);
        // Nothing usable in the connection: stays where it was planned.
        let none = [t("a", 1, false), t("b", 2, true), t("a", 4, false)];
        assert_eq!(pick_carrier(none[0], none), 1);
        assert_eq!(pick_carrier(none[2], none), 4);
    }

    #[test]
    fn connection_status_follows_the_bgp_sessions() {
        use BgpSessionStatus::*;
        assert_eq!(connection_status(&update(Up, Up)), ConnectionStatus::Active);
        assert_eq!(
            connection_status(&update(Up, Disabled)),
            ConnectionStatus::Active
        );
        assert_eq!(
            connection_status(&update(Up, Down)),
            ConnectionStatus::LimitedConnectivity
        );
        assert_eq!(
            connection_status(&update(Down, Down)),
            ConnectionStatus::Down
        );
        assert_eq!(
            connection_status(&update(Disabled, Disabled)),
            ConnectionStatus::Down
        );
    }

    #[test]
    fn only_the_carrier_or_the_last_established_ike_sa_concerns_the_tunnel() {
        let (a, b, c, half_open) = (IkeSaId(1), IkeSaId(2), IkeSaId(3), IkeSaId(9));
        let mut t = IkeTrack::default();
        // A half-open SA that never came up: nothing to do with the tunnel.
        assert_eq!(t.down(half_open), IkeLoss::NotEstablished);
        t.up(a, None);
        t.installed(a);
        assert_eq!(t.down(half_open), IkeLoss::NotEstablished);
        // A rekey: the new IKE SA carries the CHILD SA it adopted.
        t.up(b, Some(a));
        assert!(!t.is_up(a) && t.is_up(b));
        assert_eq!(t.carrier, Some(b));
        assert_eq!(t.down(a), IkeLoss::NotEstablished);
        // INITIAL_CONTACT: the new SA is up and installed first, then the
        // old one goes without touching the tunnel.
        t.up(c, None);
        t.installed(c);
        assert_eq!(t.down(b), IkeLoss::Other);
        // The carrier goes: the tunnel loses its CHILD SA and its IKE SA.
        assert_eq!(t.down(c), IkeLoss::Carrier { still_up: false });
        assert!(t.up.is_empty() && t.carrier.is_none());
        // The carrier goes while another SA is up: the CHILD SA is lost,
        // the IKE SA is not.
        t.up(a, None);
        t.up(b, None);
        t.installed(b);
        assert_eq!(t.down(b), IkeLoss::Carrier { still_up: true });
        // The last one without a CHILD SA: still the end of the tunnel's IKE.
        assert_eq!(t.down(a), IkeLoss::Carrier { still_up: false });
    }

    #[test]
    fn a_usable_tunnel_reports_the_inner_mtu_of_its_suite_and_wan_mtu() {
        use gateway_esp::table::SaTable;

        let dp = GatewayDataPlane::new(Arc::new(SaTable::new()));
        dp.set_wan_mtu(1500);
        let (local, remote): (IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let suite = Suite::from_api_names("aes256gcm", None).unwrap();
        dp.install_outbound_sa(OutboundSaConfig {
            tunnel: 1,
            spi: 0x1100,
            keys: SaKeys::new(suite, &[7; 36], &[]).unwrap(),
            esn: true,
            outer: OuterHeader {
                src: local,
                dst: remote,
                udp: Some(UdpEncap {
                    src_port: 4500,
                    dst_port: 4500,
                }),
                ttl: 64,
            },
            lifetime: Lifetime::NONE,
        })
        .unwrap();
        let mut t = RunningTunnel {
            plan: TunnelPlan {
                name: "conn/v4".into(),
                connection: "conn".into(),
                family: Family::V4,
                local,
                remote,
                tun: "s2stest0".into(),
                interco: Vec::new(),
                initiate: true,
                ikev2_ciphers: Vec::new(),
                esp_ciphers: Vec::new(),
                ike_fingerprint: String::new(),
                allowed_sources: Vec::new(),
                mss_clamp: true,
            },
            id: 1,
            ike_up: true,
            ike: IkeTrack::default(),
            child: Some((0x100, 0x1100)),
            child_since: None,
            child_installs: 1,
            reinitiate_at: None,
            inbound: BTreeSet::new(),
            pending_out: Vec::new(),
        };
        // AES-256-GCM over IPv4 with NAT-T on a 1500-byte WAN: 20 (IPv4) +
        // 8 (UDP) + 8 (SPI, sequence) + 8 (IV) + 16 (ICV) = 60 bytes, 1440
        // left (a multiple of GCM's 4-byte alignment), less the 2-byte ESP
        // trailer: 1438. TCP MSS: 1438 - 40 over IPv4, 1438 - 60 over IPv6.
        let mut e = down_update();
        report_tunnel(&mut e, &t, &dp);
        assert_eq!(e.tunnel_status_ipv4, TunnelStatus::Up);
        assert_eq!(
            e.tunnel_mtu_ipv4,
            Some(TunnelMtu {
                inner_mtu: 1438,
                tcp_mss_ipv4: 1398,
                tcp_mss_ipv6: 1378,
                mss_clamp: true,
            })
        );
        assert_eq!(e.tunnel_mtu_ipv6, None, "no IPv6 tunnel");
        // Clamping off for the gateway type: the sizes stay, advisory.
        t.plan.mss_clamp = false;
        let mut e = down_update();
        report_tunnel(&mut e, &t, &dp);
        assert_eq!(
            e.tunnel_mtu_ipv4.map(|m| (m.inner_mtu, m.mss_clamp)),
            Some((1438, false))
        );
        // Not usable (IKE SA down): down, and no sizes.
        t.ike_up = false;
        let mut e = down_update();
        report_tunnel(&mut e, &t, &dp);
        assert_eq!(e.tunnel_status_ipv4, TunnelStatus::Down);
        assert_eq!(e.tunnel_mtu_ipv4, None);
        // Its outbound SA gone: nothing to report either.
        t.ike_up = true;
        dp.remove_outbound_sa(1, 0x1100).unwrap();
        let mut e = down_update();
        report_tunnel(&mut e, &t, &dp);
        assert_eq!(e.tunnel_mtu_ipv4, None);
    }

    /// A runtime over a real SA table, its store in a temporary directory
    /// (removed on drop), with one tunnel `conn/v4` (id 1) from 192.0.2.1
    /// to 192.0.2.2; the drivers' channels stay open while it lives.
    struct Harness {
        rt: Runtime,
        table: Arc<gateway_esp::table::SaTable>,
        store: Store,
        dir: std::path::PathBuf,
        _ike: mpsc::Receiver<IkeCommand>,
        _bgp: mpsc::Receiver<BgpEvent>,
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    const LOCAL: &str = "192.0.2.1";
    const REMOTE: &str = "192.0.2.2";

    fn harness(tag: &str) -> Harness {
        use crate::dataplane::slowpath::SlowPath;
        use gateway_esp::table::SaTable;

        let dir = std::env::temp_dir().join(format!("s2s-agent-{tag}-{}", std::process::id()));
        let store = Store::open(&dir).unwrap();
        let table = Arc::new(SaTable::new());
        let datapath = DataPathHandle {
            dataplane: Arc::new(GatewayDataPlane::new(Arc::clone(&table))),
            slow: Arc::new(std::sync::Mutex::new(
                SlowPath::new(Arc::clone(&table)).unwrap(),
            )),
            local: None,
        };
        let (ike_tx, ike_rx) = mpsc::channel(16);
        let (bgp, bgp_events) = gateway_bgp::driver::spawn();
        let mut rt = Runtime::new(
            store.clone(),
            datapath,
            ike_tx,
            bgp,
            SharedSnapshot::default(),
            Lifetime::NONE,
        );
        let name = "conn/v4".to_string();
        rt.tunnels.insert(
            name.clone(),
            RunningTunnel {
                plan: TunnelPlan {
                    name,
                    connection: "conn".into(),
                    family: Family::V4,
                    local: LOCAL.parse().unwrap(),
                    remote: REMOTE.parse().unwrap(),
                    tun: format!("s2stest{tag}"),
                    interco: Vec::new(),
                    initiate: true,
                    ikev2_ciphers: Vec::new(),
                    esp_ciphers: Vec::new(),
                    ike_fingerprint: "fp".into(),
                    allowed_sources: Vec::new(),
                    mss_clamp: true,
                },
                id: 1,
                ike_up: false,
                ike: IkeTrack::default(),
                child: None,
                child_since: None,
                child_installs: 0,
                reinitiate_at: None,
                inbound: BTreeSet::new(),
                pending_out: Vec::new(),
            },
        );
        Harness {
            rt,
            table,
            store,
            dir,
            _ike: ike_rx,
            _bgp: bgp_events,
        }
    }

    /// The CHILD SA pair `spi_in` / `spi_in + 0x1000` of IKE SA `ike` on
    /// `conn/v4`; `replaces`: the peer's rekey of that CHILD SA, which we
    /// answered.
    fn child_install(ike: u64, spi_in: u32, replaces: Option<u32>) -> IkeAction {
        use gateway_ike::crypto::Secret;
        use gateway_ike::EspKeys;
        let key = |b: u8| EspKeys {
            encryption_key: Secret::new(vec![b; 36]),
            integrity_key: Secret::new(Vec::new()),
        };
        IkeAction::InstallChildSa(ChildSaInstall {
            conn: "conn/v4".into(),
            ike: IkeSaId(ike),
            spi_in,
            spi_out: spi_in + 0x1000,
            encryption: "aes256gcm",
            integrity: None,
            keys_in: key(1),
            keys_out: key(2),
            esn: true,
            udp_encap: None,
            local_addr: LOCAL.parse().unwrap(),
            remote_addr: REMOTE.parse().unwrap(),
            local_ts: Vec::new(),
            remote_ts: Vec::new(),
            replaces_spi_in: replaces,
            outbound_deferred: replaces.is_some(),
            volume: gateway_ike::VolumeLifetimes::default(),
            resume: None,
        })
    }

    /// IKE SA `ike` of `conn/v4` up (a rekey of `rekey_of`).
    fn ike_up(ike: u64, rekey_of: Option<u64>) -> IkeAction {
        IkeAction::IkeSaUp {
            conn: "conn/v4".into(),
            ike: IkeSaId(ike),
            spi_i: ike,
            spi_r: ike + 1,
            local: std::net::SocketAddr::new(LOCAL.parse().unwrap(), 500),
            remote: std::net::SocketAddr::new(REMOTE.parse().unwrap(), 500),
            rekey_of: rekey_of.map(IkeSaId),
            resumed: false,
        }
    }

    /// The runtime itself, fed IKE events as the driver reports them, with
    /// the real SA table behind it.
    #[tokio::test]
    #[ignore = "needs root: the slow path opens raw sockets"]
    async fn a_half_open_failure_never_removes_the_tunnels_child_sa() {
        let mut h = harness("ike");
        let table = Arc::clone(&h.table);
        let rt = &mut h.rt;
        let rekey = child_install;
        let install = |ike: u64, spi_in: u32| rekey(ike, spi_in, None);
        let activate = |ike: u64, spi_in: u32| IkeAction::ActivateOutbound {
            conn: "conn/v4".into(),
            ike: IkeSaId(ike),
            spi_in,
            spi_out: spi_in + 0x1000,
        };
        let up = ike_up;
        let down = |ike: u64, reason: DownReason| IkeAction::IkeSaDown {
            conn: "conn/v4".into(),
            ike: IkeSaId(ike),
            reason,
        };
        let failed = |ike: u64, initiator: bool, reason: DownReason| IkeAction::IkeSaFailed {
            conn: "conn/v4".into(),
            ike: IkeSaId(ike),
            initiator,
            reason,
        };
        let remove = |ike: u64, spi_in: u32| IkeAction::RemoveChildSa {
            conn: "conn/v4".into(),
            ike: IkeSaId(ike),
            spi_in,
            spi_out: spi_in + 0x1000,
        };
        let usable = |rt: &Runtime| rt.tunnels["conn/v4"].usable();

        // Keys from an IKE SA that is not up never reach the data plane.
        rt.on_ike(install(7, 0x700));
        assert!(table.inbound(0x700).is_none());
        // The tunnel's IKE SA and its CHILD SA.
        rt.on_ike(up(1, None));
        rt.on_ike(install(1, 0x100));
        assert!(table.inbound(0x100).is_some() && usable(rt));
        // Half-open SAs refused or expired (the peer's, and ours): the
        // tunnel and its SAs stay, and nothing is re-initiated.
        rt.on_ike(failed(9, false, DownReason::NoProposalChosen));
        rt.on_ike(failed(10, false, DownReason::HalfOpenTimeout));
        rt.on_ike(failed(11, true, DownReason::AuthenticationFailed));
        rt.on_ike(down(9, DownReason::HalfOpenTimeout));
        assert!(table.inbound(0x100).is_some() && usable(rt));
        assert_eq!(table.outbound(1).map(|o| o.sa.spi()), Some(0x1100));
        assert!(rt.tunnels["conn/v4"].reinitiate_at.is_none());
        // An IKE rekey: the new SA carries the tunnel; the old one's end
        // (never reported, but if it were) changes nothing.
        rt.on_ike(up(2, Some(1)));
        rt.on_ike(down(1, DownReason::Deleted));
        assert!(usable(rt));
        // INITIAL_CONTACT: the new SA and its CHILD SA first, then the old.
        rt.on_ike(up(3, None));
        rt.on_ike(install(3, 0x300));
        rt.on_ike(remove(2, 0x100));
        rt.on_ike(down(2, DownReason::Replaced));
        assert!(usable(rt) && table.inbound(0x300).is_some());
        assert_eq!(table.outbound(1).map(|o| o.sa.spi()), Some(0x1300));
        // The peer rekeys the CHILD SA: the new pair decrypts at once, but
        // we send on the old one until the peer deleted it.
        rt.on_ike(rekey(3, 0x301, Some(0x300)));
        assert!(table.inbound(0x301).is_some() && table.inbound(0x300).is_some());
        assert_eq!(table.outbound(1).map(|o| o.sa.spi()), Some(0x1300));
        assert!(usable(rt));
        rt.on_ike(activate(3, 0x301));
        assert_eq!(table.outbound(1).map(|o| o.sa.spi()), Some(0x1301));
        assert_eq!(rt.tunnels["conn/v4"].child, Some((0x301, 0x1301)));
        // One IKE SA rekey and one CHILD SA rekey so far (INITIAL_CONTACT
        // is not a rekey): `s2s_rekeys_total`.
        assert_eq!(rt.rekeys, (1, 1));
        // The old pair goes after its grace: the new one keeps sending.
        rt.on_ike(remove(3, 0x300));
        assert!(table.inbound(0x300).is_none() && table.inbound(0x301).is_some());
        assert_eq!(table.outbound(1).map(|o| o.sa.spi()), Some(0x1301));
        assert!(usable(rt));
        // The carrier goes: the tunnel is down and its CHILD SA removed.
        rt.on_ike(remove(3, 0x301));
        rt.on_ike(down(3, DownReason::PeerUnreachable));
        assert!(!usable(rt) && !rt.tunnels["conn/v4"].ike_up);
        assert!(table.inbound(0x301).is_none());
        assert!(rt.tunnels["conn/v4"].inbound.is_empty());
        // Our own next attempt fails: try again later.
        rt.on_ike(failed(12, true, DownReason::AuthenticationFailed));
        assert!(rt.tunnels["conn/v4"].reinitiate_at.is_some());
    }

    /// The agent's half of the sequence-number rule: an outbound SA sends
    /// only what the state file has reserved, and the agent writes a new
    /// mark (then raises the SA's limit) before it runs out.
    #[tokio::test]
    #[ignore = "needs root: the slow path opens raw sockets"]
    async fn the_state_file_reserves_sequence_numbers_before_they_are_sent() {
        let mut h = harness("sa");
        let (table, store, dir) = (Arc::clone(&h.table), h.store.clone(), h.dir.clone());
        let rt = &mut h.rt;
        rt.enable_sa_state(&dir);
        let name = "conn/v4".to_string();
        rt.on_ike(IkeAction::SaState {
            conn: name.clone(),
            ike: IkeSaId(1),
            snapshot: Some(Box::new(sa_state::sample_snapshot(
                &name,
                Some((0x100, 0x1100)),
            ))),
        });
        rt.on_ike(ike_up(1, None));
        rt.on_ike(child_install(1, 0x100, None));
        let out = table.outbound(1).unwrap();
        // A new SA: its first block without a mark.
        assert_eq!(out.sa.reserved(), sa_state::SEQ_BLOCK);
        rt.persist_sa_state(false).await;
        let written = |dir: &std::path::Path| {
            let loaded = sa_state::load(&store, dir).unwrap();
            let c = &loaded.entries[&name][0].snapshot.children[0];
            (c.seq_out, c.replay_right_edge)
        };
        assert_eq!(written(&dir), (sa_state::SEQ_BLOCK, 0));
        // Half the block used: a mark a block ahead is written, then the
        // SA may use it.
        out.sa.set_last_seq(sa_state::SEQ_BLOCK / 2 + 1);
        rt.persist_sa_state(false).await;
        let mark = sa_state::SEQ_BLOCK / 2 + 1 + sa_state::SEQ_BLOCK;
        assert_eq!(written(&dir).0, mark);
        assert_eq!(out.sa.reserved(), mark);
        // Nothing changed: nothing written (a write would seal with a new
        // nonce, so the bytes would differ).
        let file = dir.join(sa_state::FILE);
        let before = std::fs::read(&file).unwrap();
        rt.persist_sa_state(false).await;
        assert_eq!(std::fs::read(&file).unwrap(), before, "written again");
        // The SA gone: it leaves the file.
        rt.on_ike(IkeAction::SaState {
            conn: name.clone(),
            ike: IkeSaId(1),
            snapshot: None,
        });
        rt.persist_sa_state(false).await;
        assert!(sa_state::load(&store, &dir).unwrap().entries.is_empty());
        // Its outbound SA still in the table, its reservation used up:
        // nothing vouches for more, so it is tracked as starved (logged
        // after STARVED_WARN_AFTER), and no longer once it has numbers.
        assert_eq!(out.sa.spi(), 0x1100);
        out.sa.set_last_seq(out.sa.reserved());
        rt.persist_sa_state(false).await;
        assert!(rt.sa.as_ref().unwrap().starved.contains_key(&0x1100));
        out.sa.reserve_through(out.sa.last_seq() + 10);
        rt.persist_sa_state(false).await;
        assert!(rt.sa.as_ref().unwrap().starved.is_empty());
    }
}
