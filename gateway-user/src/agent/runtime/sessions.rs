//! BGP sessions added to and removed from the speaker, and the routes a
//! restarted daemon keeps (stale) until each session is back.

use super::*;

impl Runtime {
    pub(super) async fn add_session(&mut self, plan: &SessionPlan) -> Result<(), RuntimeError> {
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
                told_reachable: None,
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
    pub(super) fn keep_stale_routes(&mut self, plan: &SessionPlan, id: SessionId) {
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
    pub(super) fn sweep_stale(&mut self, session: SessionId, why: &str) {
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
    pub(super) async fn remove_session(
        &mut self,
        name: &str,
        cease: bool,
    ) -> Result<(), RuntimeError> {
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
}
