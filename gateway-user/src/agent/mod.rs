//! The reconciler: desired state (the store) → running state (maps,
//! tunnels, BGP sessions, routes) → statuses written back to the store. A
//! full pass runs on every store change, configuration reload and change
//! of the WAN interface's addresses, so state is recovered from the store
//! after a restart without operator action; the periodic resync runs a full
//! pass only when the last one left something to retry, and otherwise only
//! the runtime's timed part (stale routes, initiations due, statuses).
//!
//! Two layers: the VPN gateway lifecycle here (provisioning → active when
//! its public addresses are present on the WAN interface, failed when one is
//! missing, deprovisioning → removed; the XDP `LOCAL_ADDRS` map), and per
//! connection the [`plan`] (pure: which tunnels, TUN interfaces, BGP
//! sessions) applied by the [`runtime`] (IKE and BGP drivers, data plane,
//! statuses).

pub mod ids;
pub mod plan;
pub mod runtime;
pub mod sa_state;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_api::model::VpnGatewayStatus;
use gateway_api::{Store, StoreError};
use gateway_common::{IKE_PORT, NAT_T_PORT};
use gateway_config::{Config, LiveConfig};
use gateway_ike::driver::{EspDatagram, UdpDriver};
use gateway_netio::netlink::{Netlink, NetlinkError};
use tokio::sync::{mpsc, watch};

use crate::daemon::DataPathHandle;
use crate::dataplane::xdp::{XdpDataplane, XdpError};
use crate::metrics::SharedSnapshot;
use runtime::Runtime;

/// How often the agent wakes without a store change: to look at the WAN
/// interface's addresses (not store changes), retry what failed and run
/// the timed part of the runtime.
const RESYNC: Duration = Duration::from_secs(5);
/// Events from the IKE driver waiting for the agent. Bounded: when it is
/// full the driver keeps CHILD SA installs and removals and IKE SA state
/// changes in order in its own outbox (never dropped), drops log lines and
/// half-open failures (counted), and stops reading datagrams while its
/// backlog is large; it never waits for the agent (see
/// `gateway_ike::driver`).
const IKE_EVENTS: usize = 1024;
/// How long the IKE driver holds the datagrams that announce a CHILD SA
/// (our IKE_AUTH or CREATE_CHILD_SA response, the DELETE ending a rekey)
/// for the agent to put the SA in the data plane; past it they go anyway
/// (a reconcile pass can keep the agent from its events that long).
const APPLY_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("netlink: {0}")]
    Netlink(#[from] NetlinkError),
    #[error("XDP maps: {0}")]
    Xdp(#[from] XdpError),
}

/// Why the agent stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Still running.
    No,
    /// A restart or an upgrade (SIGTERM, SIGINT): no IKE DELETE, so the
    /// customers keep their SAs and the restarted daemon replaces them
    /// with one handshake; BGP sessions with Graceful Restart end without
    /// a Cease, so customers keep our routes; the local state (TUNs,
    /// routes, SAs in the data plane) goes with the process and comes back
    /// from the store.
    Restart,
    /// The host leaves service on purpose (SIGUSR2): every IKE SA is
    /// deleted toward its customer and every BGP session closed with a
    /// Cease first.
    Drain,
}

/// The agent of one host.
#[derive(Clone)]
pub struct Agent {
    /// Taken once per pass: a reload (SIGHUP) applies from the next one.
    config: LiveConfig,
    store: Store,
    xdp: Option<Arc<Mutex<XdpDataplane>>>,
}

impl Agent {
    pub fn new(config: LiveConfig, store: Store, xdp: Option<Arc<Mutex<XdpDataplane>>>) -> Self {
        Self { config, store, xdp }
    }

    /// Reconciles until `shutdown` says stop, driving the IKE and BGP
    /// drivers and programming `dataplane`; on exit removes what it set
    /// up on this host, and tells the customers only for [`Stop::Drain`].
    pub async fn run(
        self,
        datapath: DataPathHandle,
        snapshot: SharedSnapshot,
        mut shutdown: watch::Receiver<Stop>,
    ) {
        let mut changes = self.store.subscribe();
        let (ike_tx, ike_rx) = mpsc::channel(256);
        // The receiver is handed to the IKE driver on the first pass.
        let mut ike = IkeListen {
            rx: Some(ike_rx),
            tx: ike_tx.clone(),
            bound: Vec::new(),
        };
        let (ike_events_tx, mut ike_events) = mpsc::channel(IKE_EVENTS);
        let (bgp, mut bgp_events) = gateway_bgp::driver::spawn();
        // Neither may change while the daemon runs (`Config::fixed_changes`).
        let fixed = self.config.get();
        let l = fixed.child_sa;
        let lifetime = gateway_esp::Lifetime {
            soft_packets: l.soft_packets,
            hard_packets: l.hard_packets,
            soft_bytes: l.soft_bytes,
            hard_bytes: l.hard_bytes,
        };
        let mut rt = Runtime::new(
            self.store.clone(),
            datapath.clone(),
            ike_tx,
            bgp,
            snapshot,
            lifetime,
        );
        // What a restart resumes (IKE and CHILD SAs, sequence numbers).
        rt.enable_sa_state(&fixed.gateway.state_dir);
        let mut persist = tokio::time::interval(sa_state::TICK);
        persist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Volume limits are reported by the workers once per outbound SA
        // (so this channel holds at most two events per SA).
        let (limit_tx, mut limits) = mpsc::unbounded_channel();
        datapath
            .dataplane
            .table()
            .set_limit_listener(Box::new(move |e| {
                let _ = limit_tx.send(e);
            }));
        // ESP that reaches the IKE sockets (fast path off, or no AF_XDP
        // socket on the queue) goes to the slow path.
        let (esp_tx, mut esp_rx) = mpsc::channel::<EspDatagram>(1024);
        let slow = datapath.slow.clone();
        tokio::spawn(async move {
            while let Some(d) = esp_rx.recv().await {
                let mut slow = slow.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = slow.inbound_esp(&d.esp, d.from, d.to) {
                    tracing::debug!(from = %d.from, error = %e, "slow-path ESP dropped");
                }
            }
        });
        // What the last full pass was computed from, and whether it left
        // nothing to retry: while both hold, a resync only runs the
        // runtime's timed part instead of reading the whole store again.
        let mut last: Option<PassInputs> = None;
        let mut settled = false;
        loop {
            let config = self.config.get();
            // Read before the store is: a write during the pass wakes the
            // next one.
            let generation = *changes.borrow_and_update();
            let wan_name = config.interfaces.wan.clone();
            let wan = tokio::task::spawn_blocking(move || wan_addresses(&wan_name))
                .await
                .ok()
                .and_then(Result::ok);
            let inputs = wan.map(|wan| PassInputs {
                generation,
                config: Arc::clone(&config),
                wan,
            });
            if settled && last.is_some() && last == inputs {
                if let Err(e) = rt.tick().await {
                    tracing::error!(error = %e, "the periodic pass failed");
                }
                rt.refresh_counts().await;
            } else {
                settled = self
                    .full_pass(
                        &config,
                        &mut rt,
                        &mut ike,
                        &ike_events_tx,
                        &esp_tx,
                        &datapath,
                    )
                    .await;
                last = inputs;
            }
            // Protocol events are handled as they come; a store change, the
            // resync tick or shutdown ends the wait.
            let resync = tokio::time::sleep(RESYNC);
            tokio::pin!(resync);
            let stop = loop {
                tokio::select! {
                    r = changes.changed() => break r.is_err(),
                    () = &mut resync => break false,
                    _ = shutdown.changed() => break true,
                    Some(a) = ike_events.recv() => {
                        rt.on_ike(a);
                        if rt.sa_state_urgent() {
                            rt.persist_sa_state(false).await;
                        }
                    }
                    Some(e) = bgp_events.recv() => rt.on_bgp(e),
                    Some(e) = limits.recv() => rt.on_limit(e).await,
                    _ = persist.tick() => {
                        // Statuses the events since the last tick changed.
                        rt.flush_statuses();
                        rt.persist_sa_state(false).await;
                    }
                }
            };
            if stop || *shutdown.borrow() != Stop::No {
                break;
            }
        }
        let drain = *shutdown.borrow() == Stop::Drain;
        rt.shutdown(drain).await;
    }

    /// A pass over the whole desired state: VPN gateway statuses, the IKE
    /// driver started (first pass) and listening on the public addresses
    /// in use, the plan applied. True if it left nothing to retry.
    async fn full_pass(
        &self,
        config: &Arc<Config>,
        rt: &mut Runtime,
        ike: &mut IkeListen,
        ike_events_tx: &mpsc::Sender<gateway_ike::Action>,
        esp_tx: &mpsc::Sender<EspDatagram>,
        datapath: &DataPathHandle,
    ) -> bool {
        let me = self.clone();
        let pass = Arc::clone(config);
        let state = tokio::task::spawn_blocking(move || {
            me.reconcile(&pass)?;
            Ok::<_, AgentError>(me.store.desired_state(&pass)?)
        })
        .await;
        let state = match state {
            Ok(Ok(state)) => state,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reconcile failed; will retry");
                return false;
            }
            Err(e) => {
                tracing::error!(error = %e, "reconcile task panicked");
                return false;
            }
        };
        let plan = plan::plan(&state, config);
        let addrs = Runtime::local_addresses(&plan);
        if let Some(rx) = ike.rx.take() {
            let mut driver = UdpDriver::new(IKE_PORT, NAT_T_PORT, Some(esp_tx.clone()));
            // New inbound SPIs avoid the `SA_SLOTS` slot of every SPI in the
            // data plane (also old SAs in their grace; an equal SPI has the
            // same slot), so that every SA we negotiate is found by one
            // array read in XDP (a collision still works, through the
            // `SA_IN` hash).
            let table = Arc::clone(datapath.dataplane.table());
            driver.manager_mut().set_spi_in_use(Arc::new(move |spi| {
                let slot = gateway_common::sa_slots::slot(spi);
                table.any_inbound(|s| gateway_common::sa_slots::slot(s) == slot)
            }));
            // The peer learns of a CHILD SA only once it is in the data
            // plane (acknowledged in `Runtime::on_ike`).
            driver.hold_sends_until_applied(APPLY_WAIT);
            tokio::spawn(driver.run(rx, ike_events_tx.clone()));
        }
        // The public addresses of the VPN gateways with tunnels, bound as
        // gateways appear and released as they go.
        let listening = ike.listen(addrs).await;
        let applied = match rt.apply(&plan).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "applying the plan failed");
                false
            }
        };
        // SA and prefix counts for /metrics (the IKE driver runs: it answers).
        rt.refresh_counts().await;
        applied && listening && rt.settled()
    }

    /// One pass over the desired state.
    pub fn reconcile(&self, config: &Config) -> Result<(), AgentError> {
        let gateways = self.store.vpn_gateway_specs(config)?;
        let present = wan_addresses(&config.interfaces.wan)?;
        let mut local = BTreeSet::new();
        for spec in &gateways {
            let g = &spec.gateway;
            let wanted: Vec<IpAddr> = spec
                .public_ipv4
                .iter()
                .chain(&spec.public_ipv6)
                .copied()
                .collect();
            let unmapped = g.public_config.as_ref().is_some_and(|pc| {
                (pc.ipam_ipv4_id.is_some() && spec.public_ipv4.is_none())
                    || (pc.ipam_ipv6_id.is_some() && spec.public_ipv6.is_none())
            });
            let missing: Vec<IpAddr> = wanted
                .iter()
                .copied()
                .filter(|a| !present.contains(a))
                .collect();
            let next = match g.status {
                VpnGatewayStatus::Deprovisioning => {
                    if self.store.finish_vpn_gateway_deletion(&g.id)? {
                        tracing::info!(vpn_gateway = %g.id, "VPN gateway removed");
                    }
                    continue;
                }
                VpnGatewayStatus::Locked => continue,
                _ if missing.is_empty() && !unmapped => VpnGatewayStatus::Active,
                _ => VpnGatewayStatus::Failed,
            };
            if next == VpnGatewayStatus::Active {
                local.extend(wanted.iter().copied());
            }
            if next != g.status {
                if unmapped {
                    tracing::warn!(vpn_gateway = %g.id, "public IP id no longer in the config's public_ips");
                } else if next == VpnGatewayStatus::Failed {
                    tracing::warn!(
                        vpn_gateway = %g.id,
                        missing = ?missing,
                        wan = %config.interfaces.wan,
                        "public address not on the WAN interface"
                    );
                } else {
                    tracing::info!(vpn_gateway = %g.id, status = ?next, "VPN gateway status");
                }
                self.store.set_vpn_gateway_status(&g.id, next)?;
            }
        }
        if let Some(xdp) = &self.xdp {
            let local: Vec<IpAddr> = local.into_iter().collect();
            let mut xdp = xdp.lock().unwrap_or_else(|p| p.into_inner());
            xdp.set_local_addrs(&local)?;
        }
        Ok(())
    }
}

/// The IKE driver's command channel as the agent's passes see it.
struct IkeListen {
    /// Handed to the driver on the first pass.
    rx: Option<mpsc::Receiver<gateway_ike::driver::Command>>,
    tx: mpsc::Sender<gateway_ike::driver::Command>,
    /// The addresses the driver listens on, sorted.
    bound: Vec<IpAddr>,
}

impl IkeListen {
    /// Makes the driver listen on exactly `addrs` (sorted); true if it
    /// does (an address that cannot be bound is retried on the next pass).
    async fn listen(&mut self, addrs: Vec<IpAddr>) -> bool {
        if addrs == self.bound {
            return true;
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let asked = gateway_ike::driver::Command::Listen {
            addrs: addrs.clone(),
            reply,
        };
        if self.tx.send(asked).await.is_err() {
            tracing::error!("the IKE driver has stopped");
            return false;
        }
        let Ok(failed) = answer.await else {
            tracing::error!("the IKE driver has stopped");
            return false;
        };
        for (address, e) in &failed {
            tracing::warn!(%address, error = %e, "IKE cannot bind UDP 500 and 4500 on this address; will retry");
        }
        let now: Vec<IpAddr> = addrs
            .into_iter()
            .filter(|a| failed.iter().all(|(f, _)| f != a))
            .collect();
        for a in now.iter().filter(|a| !self.bound.contains(a)) {
            tracing::info!(address = %a, "IKE listening on UDP 500 and 4500");
        }
        for a in self.bound.iter().filter(|a| !now.contains(a)) {
            tracing::info!(address = %a, "IKE no longer listening on this address");
        }
        self.bound = now;
        failed.is_empty()
    }
}

/// What a full pass is computed from besides the runtime's own state.
struct PassInputs {
    /// The store's generation (bumped by every API write).
    generation: u64,
    /// The configuration (a reload replaces it).
    config: Arc<Config>,
    /// The addresses on the WAN interface (a VPN gateway is active once its
    /// public addresses are there).
    wan: BTreeSet<IpAddr>,
}

impl PartialEq for PassInputs {
    fn eq(&self, other: &Self) -> bool {
        self.generation == other.generation
            && Arc::ptr_eq(&self.config, &other.config)
            && self.wan == other.wan
    }
}

/// The addresses on the WAN interface.
fn wan_addresses(wan: &str) -> Result<BTreeSet<IpAddr>, AgentError> {
    let mut nl = Netlink::open()?;
    let link = nl.link_by_name(wan)?;
    Ok(nl
        .list_addresses(link.index)?
        .into_iter()
        .map(|a| a.addr)
        .collect())
}
