//! A tunnel's life in the runtime: bring-up (TUN, addresses, IKE
//! configuration, SAs into the data plane) and tear-down, and the helpers
//! they share with `apply`.

use super::*;

impl Runtime {
    pub(super) async fn add_tunnel(&mut self, plan: &TunnelPlan) -> Result<(), RuntimeError> {
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
        self.dataplane
            .set_bandwidth(id, &plan.vpn_gateway, plan.bandwidth);
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

    pub(super) fn ike_config(
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
    pub(super) async fn remove_tunnel(
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
}

/// Deletes the TUNs a previous run left (they are persistent) whose
/// tunnels are not in `plan`: their connections were deleted or changed
/// while the daemon was down. One that another process holds open, or that
/// is not a TUN, is left alone (the kernel refuses to attach to it).
pub(super) fn delete_orphan_tuns(plan: &Plan) {
    let links = match Netlink::open().and_then(|mut nl| nl.list_links()) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the interfaces to find TUNs left by a previous run");
            return;
        }
    };
    let planned: BTreeSet<&str> = plan.tunnels.values().map(|t| t.tun.as_str()).collect();
    for link in links {
        if !super::super::plan::is_tun_name(&link.name) || planned.contains(link.name.as_str()) {
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

pub(super) fn same_tunnel(a: &TunnelPlan, b: &TunnelPlan) -> bool {
    // Interconnection addresses, the inner sources allowed, MSS clamping
    // and the bandwidth change in place (see `apply`): the tunnel and its
    // SAs stay.
    let in_place = |p: &TunnelPlan| TunnelPlan {
        interco: Vec::new(),
        allowed_sources: Vec::new(),
        mss_clamp: false,
        bandwidth: 0,
        ..p.clone()
    };
    in_place(a) == in_place(b)
}

pub(super) fn to_address(n: &IpNet, ifindex: u32) -> Address {
    Address {
        ifindex,
        addr: n.addr(),
        prefix_len: n.prefix_len(),
    }
}

pub(super) fn update_addresses(
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

pub(super) fn same_session(a: &SessionPlan, b: &SessionPlan) -> bool {
    // Policy, propagation and exports change in place; anything else
    // (addresses, ASNs, carrier tunnel) needs a new session.
    a.local == b.local
        && a.peer == b.peer
        && a.local_asn == b.local_asn
        && a.peer_asn == b.peer_asn
        && a.tunnel == b.tunnel
}

pub(super) fn routing_policy(s: &SessionPlan) -> Option<RoutingPolicy> {
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

pub(super) fn ip_prefix(n: IpNet) -> Option<IpPrefix> {
    IpPrefix::new(n.network(), n.prefix_len()).ok()
}

/// The tunnel's source filter from its planned allowed sources.
pub(super) fn set_source_filter(dp: &GatewayDataPlane, tunnel: TunnelId, allowed: &[IpNet]) {
    let prefixes: Vec<IpPrefix> = allowed.iter().copied().filter_map(ip_prefix).collect();
    dp.table()
        .set_source_filter(tunnel, Some(SourceFilter::new(&prefixes)));
}

/// An inbound SA's selectors from what IKE negotiated: inner sources in
/// the peer's traffic selectors (`remote_ts`), destinations in ours. IKE
/// ranges become the prefixes that cover them exactly.
pub(super) fn negotiated_selectors(
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
