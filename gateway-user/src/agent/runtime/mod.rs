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
//!
//! Here: the runtime's state and `apply` (tunnels and sessions added,
//! changed, removed; `sessions` for the BGP sessions and the stale routes
//! kept across a restart); `ike_events` and `routing` take what the IKE driver
//! and the BGP speaker report, `status` writes statuses, events and the
//! metrics snapshot, `sa_persist` the SA state file.

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
use super::plan::{tunnel_name, Plan, SessionPlan, TunnelName, TunnelPlan};
use super::sa_state::{self, SaBook};
use crate::daemon::DataPathHandle;
use crate::dataplane::backend::GatewayDataPlane;
use crate::dataplane::mtu::mss_for;
use crate::metrics::{ConnectionInfo, SessionInfo, SharedSnapshot, Snapshot, TunnelInfo};

mod ike_events;
mod routing;
mod sa_persist;
mod sessions;
mod status;
mod tunnels;
pub use status::connection_status;
use tunnels::*;

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
    /// What the BGP driver was last told of the peer's reachability (a
    /// usable tunnel of the connection); `None`: nothing yet.
    told_reachable: Option<bool>,
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
    /// A change of the last plan failed and is tried again by the next
    /// full pass (a tunnel's interconnection addresses).
    retry: bool,
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
    /// Something may have changed them since (`flush_statuses`).
    statuses_due: bool,
    /// Writes statuses and events off the async runtime.
    status_sink: status::StatusSink,
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
/// How often the tunnels are looked at for starved outbound SAs (the SA
/// state tick is much shorter).
const STARVED_SCAN_EVERY: Duration = Duration::from_secs(1);
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
            status_sink: status::StatusSink::start(store.clone()),
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
            retry: false,
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
            statuses_due: false,
            sa: None,
            stale: HashMap::new(),
            kept_tuns: Vec::new(),
            orphans_checked: false,
        }
    }

    /// Brings the running state to `plan`: removes what is no longer
    /// planned (or planned differently), then adds what is missing, then
    /// updates BGP policy and propagation in place (no session drop).
    pub async fn apply(&mut self, plan: &Plan) -> Result<(), RuntimeError> {
        self.retry = false;
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
                if running.plan.mss_clamp != t.mss_clamp {
                    self.dataplane.set_mss_clamp(running.id, t.mss_clamp);
                    running.plan.mss_clamp = t.mss_clamp;
                    tracing::info!(tunnel = %name, on = t.mss_clamp, "TCP MSS clamping changed");
                }
                if running.plan.bandwidth != t.bandwidth {
                    self.dataplane
                        .set_bandwidth(running.id, &t.vpn_gateway, t.bandwidth);
                    running.plan.bandwidth = t.bandwidth;
                    tracing::info!(tunnel = %name, vpn_gateway = %t.vpn_gateway, bits_per_s = t.bandwidth, "bandwidth changed (the gateway type's)");
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
                        self.retry = true;
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
        // Before the rebalance (in `tick`): the detours it puts back are
        // not in `routes`, and must not be taken for leftovers.
        self.prune_kept_routes();
        self.converged = plan.tunnels.keys().all(|n| self.tunnels.contains_key(n))
            && plan.sessions.keys().all(|n| self.sessions.contains_key(n));
        self.restarted.clear();
        if !self.orphans_checked {
            self.orphans_checked = true;
            delete_orphan_tuns(plan);
        }
        self.tick().await
    }

    /// Whether the last plan is applied whole: every planned tunnel and
    /// BGP session runs (`/readyz`) and no change is left to retry. A pass
    /// that leaves something out is repeated whole at the next resync.
    pub fn settled(&self) -> bool {
        self.converged && !self.retry
    }

    /// The time-driven part of a pass, which needs no new plan: stale
    /// routes past their deadline, initiations due again, the routes'
    /// placement and the statuses. The periodic resync runs only this when
    /// neither the store, the configuration nor the WAN addresses changed.
    pub async fn tick(&mut self) -> Result<(), RuntimeError> {
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
        self.rebalance(true);
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
        // The last statuses reach the store before anything stops (the
        // next start resumes from them).
        self.flush_statuses();
        self.status_sink.finish().await;
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

#[cfg(test)]
mod tests;
