//! Statuses: the API's per-connection statuses written back when they
//! change, per-connection events, the `/metrics` snapshot and its counts.

use super::*;

/// What one report leaves for the store: the statuses that changed and
/// the events since the last one.
#[derive(Debug, Default)]
struct StatusBatch {
    statuses: Vec<(String, ConnectionStatusUpdate)>,
    events: Vec<(String, String, String)>,
}

impl StatusBatch {
    /// `later` folded in: its statuses replace ours, its events follow.
    fn merge(&mut self, later: StatusBatch) {
        for (id, update) in later.statuses {
            match self.statuses.iter_mut().find(|(i, _)| *i == id) {
                Some(slot) => slot.1 = update,
                None => self.statuses.push((id, update)),
            }
        }
        self.events.extend(later.events);
    }
}

/// Writes the agent's statuses and events to the store on a thread of its
/// own, in the order they were reported, batches that queued up while it
/// wrote folded into one transaction: the async runtime never waits on
/// SQLite for them.
pub(super) struct StatusSink {
    tx: Option<std::sync::mpsc::Sender<StatusBatch>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Connections whose last write failed: reported again next time.
    failed: Arc<std::sync::Mutex<Vec<String>>>,
}

impl StatusSink {
    pub(super) fn start(store: Store) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<StatusBatch>();
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let failures = Arc::clone(&failed);
        let writer = std::thread::Builder::new()
            .name("status-writer".into())
            .spawn(move || {
                while let Ok(mut batch) = rx.recv() {
                    while let Ok(later) = rx.try_recv() {
                        batch.merge(later);
                    }
                    write_batch(&store, batch, &failures);
                }
            })
            .map_err(|e| tracing::error!(error = %e, "cannot start the status writer: statuses are written inline"))
            .ok();
        Self {
            tx: writer.is_some().then_some(tx),
            writer,
            failed,
        }
    }

    /// Queues `batch`; written inline if the writer is gone.
    fn send(&self, batch: StatusBatch, store: &Store) {
        match &self.tx {
            Some(tx) => {
                if let Err(std::sync::mpsc::SendError(batch)) = tx.send(batch) {
                    write_batch(store, batch, &self.failed);
                }
            }
            None => write_batch(store, batch, &self.failed),
        }
    }

    /// The connections whose write failed since the last call.
    fn take_failed(&self) -> Vec<String> {
        std::mem::take(&mut *self.failed.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Waits until everything queued is written (shutdown); later reports
    /// are written inline.
    pub(super) async fn finish(&mut self) {
        self.tx = None;
        if let Some(writer) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
    }
}

fn write_batch(store: &Store, batch: StatusBatch, failed: &std::sync::Mutex<Vec<String>>) {
    if !batch.statuses.is_empty() {
        if let Err(e) = store.set_connection_statuses(&batch.statuses) {
            tracing::warn!(error = %e, connections = batch.statuses.len(), "cannot record statuses");
            failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(batch.statuses.into_iter().map(|(id, _)| id));
        }
    }
    if !batch.events.is_empty() {
        if let Err(e) = store.add_connection_events(&batch.events) {
            tracing::warn!(error = %e, events = batch.events.len(), "cannot record connection events");
        }
    }
}

impl Runtime {
    /// Statuses may have changed: [`Runtime::flush_statuses`] reports them
    /// (protocol events come in bursts; one report per burst, not one
    /// pass over every connection per event).
    pub(super) fn statuses_changed(&mut self) {
        self.statuses_due = true;
    }

    /// Reports the statuses if something changed since the last report.
    pub fn flush_statuses(&mut self) {
        if self.statuses_due {
            self.report_statuses();
        }
    }

    /// Hands each connection's statuses to the store writer when they
    /// changed, with the pending events, and publishes the snapshot.
    pub(super) fn report_statuses(&mut self) {
        self.statuses_due = false;
        for id in self.status_sink.take_failed() {
            self.reported.remove(&id);
        }
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
        let mut batch = StatusBatch {
            statuses: Vec::new(),
            events: std::mem::take(&mut self.pending_events),
        };
        for (conn, mut update) in per_conn {
            update.status = connection_status(&update);
            connections.push(ConnectionInfo {
                id: conn.clone(),
                status: update.status.as_str(),
            });
            if self.reported.get(&conn) == Some(&update) {
                continue;
            }
            tracing::info!(connection = %conn, status = %update.status, "connection status");
            self.reported.insert(conn.clone(), update);
            batch.statuses.push((conn, update));
        }
        if !batch.statuses.is_empty() || !batch.events.is_empty() {
            self.status_sink.send(batch, &self.store);
        }
        self.publish(connections);
    }

    /// Records an event of the connection that `tunnel` belongs to (for
    /// `GET .../connections/{id}/events`); never a secret in `message`.
    pub(super) fn event(&mut self, tunnel: &str, kind: &str, message: String) {
        let Some(conn) = self.tunnels.get(tunnel).map(|t| t.plan.connection.clone()) else {
            return;
        };
        let family = tunnel.rsplit('/').next().unwrap_or("");
        self.pending_events
            .push((conn, kind.to_owned(), format!("{family}: {message}")));
        self.statuses_due = true;
    }

    /// Publishes what runs for `/metrics`.
    pub(super) fn publish(&self, connections: Vec<ConnectionInfo>) {
        let family = |f: Family| match f {
            Family::V4 => "v4",
            Family::V6 => "v6",
        };
        // One pass over the routes and one over the tunnels, not one per
        // session.
        let mut routes_of: HashMap<SessionId, u64> = HashMap::new();
        for (_, id) in self.routes.values() {
            *routes_of.entry(*id).or_default() += 1;
        }
        let tunnel_name: HashMap<TunnelId, &TunnelName> = self
            .tunnels
            .values()
            .map(|t| (t.id, &t.plan.name))
            .collect();
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
                    routes: routes_of.get(&s.id).copied().unwrap_or(0),
                    prefixes: self.prefix_counts.get(&s.id).copied(),
                    failover_via: s
                        .detour
                        .and_then(|via| tunnel_name.get(&via).map(|n| (*n).clone())),
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
}

/// A tunnel's part of its connection's statuses: up while usable, and then
/// its packet sizes (the inner MTU the data plane fixed from its CHILD SA:
/// WAN MTU, suite, outer family, NAT-T; the TCP MSS that fits it, which the
/// gateway clamps to when the tunnel's plan says so).
pub(super) fn report_tunnel(
    e: &mut ConnectionStatusUpdate,
    t: &RunningTunnel,
    dp: &GatewayDataPlane,
) {
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

pub(super) fn down_update() -> ConnectionStatusUpdate {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_batch_replaces_statuses_and_appends_events() {
        let up = ConnectionStatusUpdate {
            status: ConnectionStatus::Active,
            ..down_update()
        };
        let ev = |c: &str, m: &str| (c.to_owned(), "kind".to_owned(), m.to_owned());
        let mut first = StatusBatch {
            statuses: vec![("a".into(), down_update()), ("b".into(), down_update())],
            events: vec![ev("a", "1")],
        };
        first.merge(StatusBatch {
            statuses: vec![("b".into(), up), ("c".into(), up)],
            events: vec![ev("b", "2"), ev("a", "3")],
        });
        assert_eq!(
            first.statuses,
            vec![
                ("a".to_owned(), down_update()),
                ("b".to_owned(), up),
                ("c".to_owned(), up)
            ]
        );
        assert_eq!(first.events, vec![ev("a", "1"), ev("b", "2"), ev("a", "3")]);
    }
}
