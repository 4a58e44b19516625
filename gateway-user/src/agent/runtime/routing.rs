//! What the BGP speaker reports, and where routes go: the carrier tunnel
//! of each session (failover and return), kernel and XDP routes.

use super::*;

impl Runtime {
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
        self.statuses_changed();
    }

    /// The tunnel that carries what is planned through `planned`: itself
    /// while it is usable, else another usable tunnel of the same connection
    /// (failover), else itself (nothing better to do).
    pub(super) fn carrier(&self, planned: &str) -> Option<TunnelId> {
        let t = self.tunnels.get(planned)?;
        Some(pick_carrier(
            TunnelState::of(t),
            self.siblings(&t.plan.connection).map(TunnelState::of),
        ))
    }

    /// The tunnels of `connection` (one per family), looked up by name
    /// rather than found among every tunnel of the host.
    fn siblings<'a>(&'a self, connection: &str) -> impl Iterator<Item = &'a RunningTunnel> + 'a {
        [Family::V4, Family::V6]
            .map(|f| tunnel_name(connection, f))
            .into_iter()
            .filter_map(|n| self.tunnels.get(&n))
    }

    /// Tells each BGP session whether its peer can be reached, that is
    /// whether a tunnel of its connection is usable: one that cannot be
    /// reached is not dialled every connect-retry interval for nothing (a
    /// host with thousands of connections and no peers would otherwise
    /// open hundreds of TCP connections a second into tunnels without
    /// SAs), and one that becomes reachable connects at once. Only changes
    /// are sent; one the driver's queue could not take is sent again at the
    /// next call.
    pub(super) fn tell_reachability(&mut self) {
        let mut told = Vec::new();
        for (name, s) in &self.sessions {
            let want = self.siblings(&s.plan.connection).any(RunningTunnel::usable);
            if s.told_reachable != Some(want) && self.bgp.try_set_reachable(s.id, want) {
                told.push((name.clone(), want));
            }
        }
        for (name, want) in told {
            if let Some(s) = self.sessions.get_mut(&name) {
                s.told_reachable = Some(want);
            }
        }
    }

    /// The carrier of a BGP session's planned tunnel.
    pub(super) fn session_carrier(&self, session: SessionId) -> Option<TunnelId> {
        let name = self.session_names.get(&session)?;
        self.carrier(&self.sessions.get(name)?.plan.tunnel)
    }

    /// Puts every route, and every session's route to its BGP peer, on its
    /// carrier. Runs after each IKE report (`force` false: only when the set
    /// of usable tunnels changed) and after plan changes (`force` true).
    pub(super) fn rebalance(&mut self, force: bool) {
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
        self.tell_reachability();
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

    pub(super) fn withdraw_peer_route(&self, plan: &SessionPlan, via: TunnelId) {
        let Some(p) = ip_prefix(IpNet::from(plan.peer.addr())) else {
            return;
        };
        if let Err(e) = self.dataplane.withdraw_route(p, via) {
            tracing::warn!(session = %plan.name, error = %e, "cannot remove the BGP peer's detour route");
        }
    }

    pub(super) fn install_route(&mut self, prefix: IpNet, tunnel: TunnelId, session: SessionId) {
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

    pub(super) fn withdraw_route(&mut self, prefix: IpNet) {
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
}

/// What the carrier choice looks at in a tunnel.
#[derive(Debug, Clone, Copy)]
pub(super) struct TunnelState<'a> {
    pub(super) connection: &'a str,
    pub(super) id: TunnelId,
    pub(super) usable: bool,
}

impl<'a> TunnelState<'a> {
    pub(super) fn of(t: &'a RunningTunnel) -> Self {
        Self {
            connection: &t.plan.connection,
            id: t.id,
            usable: t.usable(),
        }
    }
}

/// The failover rule: the planned tunnel while usable, else the first
/// usable tunnel of the same connection, else the planned one.
pub(super) fn pick_carrier<'a>(
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
