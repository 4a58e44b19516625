//! The reconciler: desired state (the store) → running state (maps, and
//! later tunnels, BGP sessions and routes) → statuses written back to the
//! store. It runs on every store change and on a periodic resync, so state
//! is recovered from the store after a restart without operator action.
//!
//! Implemented so far: the VPN gateway lifecycle (provisioning → active when
//! its public addresses are present on the WAN interface, failed when one is
//! missing, deprovisioning → removed) and the XDP `LOCAL_ADDRS` map (the
//! public addresses of active gateways). Tunnels, BGP sessions and routes
//! per connection are not reconciled yet.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_api::model::{VpnGateway, VpnGatewayStatus};
use gateway_api::{Store, StoreError};
use gateway_config::Config;
use gateway_netio::netlink::{Netlink, NetlinkError};
use tokio::sync::watch;

use crate::dataplane::xdp::{XdpDataplane, XdpError};

/// How often the agent reconciles even without a store change (addresses
/// appearing on the WAN interface are not store changes).
const RESYNC: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("netlink: {0}")]
    Netlink(#[from] NetlinkError),
    #[error("XDP maps: {0}")]
    Xdp(#[from] XdpError),
}

/// The agent of one host.
#[derive(Clone)]
pub struct Agent {
    config: Arc<Config>,
    store: Store,
    xdp: Option<Arc<Mutex<XdpDataplane>>>,
}

impl Agent {
    pub fn new(config: Arc<Config>, store: Store, xdp: Option<Arc<Mutex<XdpDataplane>>>) -> Self {
        Self { config, store, xdp }
    }

    /// Reconciles until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut changes = self.store.subscribe();
        loop {
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.reconcile()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "reconcile failed; will retry"),
                Err(e) => tracing::error!(error = %e, "reconcile task panicked"),
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(RESYNC) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// One pass over the desired state.
    pub fn reconcile(&self) -> Result<(), AgentError> {
        let state = self.store.desired_state()?;
        let present = self.wan_addresses()?;
        let mut local = BTreeSet::new();
        for g in &state.vpn_gateways {
            let wanted = self.public_addresses(g);
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
                _ if missing.is_empty() => VpnGatewayStatus::Active,
                _ => VpnGatewayStatus::Failed,
            };
            if next == VpnGatewayStatus::Active {
                local.extend(wanted.iter().copied());
            }
            if next != g.status {
                if next == VpnGatewayStatus::Failed {
                    tracing::warn!(
                        vpn_gateway = %g.id,
                        missing = ?missing,
                        wan = %self.config.interfaces.wan,
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

    /// The gateway's public addresses, from its IPAM IDs via the config's
    /// host mapping (the API refuses unknown IDs, so a miss is skipped).
    fn public_addresses(&self, g: &VpnGateway) -> Vec<IpAddr> {
        let Some(pc) = &g.public_config else {
            return Vec::new();
        };
        [&pc.ipam_ipv4_id, &pc.ipam_ipv6_id]
            .into_iter()
            .flatten()
            .filter_map(|id| self.config.public_ip(id).map(|p| p.address))
            .collect()
    }

    fn wan_addresses(&self) -> Result<BTreeSet<IpAddr>, AgentError> {
        let mut nl = Netlink::open()?;
        let link = nl.link_by_name(&self.config.interfaces.wan)?;
        Ok(nl
            .list_addresses(link.index)?
            .into_iter()
            .map(|a| a.addr)
            .collect())
    }
}
