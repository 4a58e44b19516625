//! What the IKE driver reports: IKE SAs up and down, CHILD SAs installed,
//! activated and removed, SA limits reached.

use super::*;

impl Runtime {
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
        self.statuses_changed();
    }

    pub(super) fn install_child(&mut self, c: ChildSaInstall) {
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
    pub(super) fn activate_outbound(&mut self, conn: &str, spi_in: u32, spi_out: u32) {
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

    pub(super) fn remove_child(&self, tunnel: TunnelId, spi_in: u32, spi_out: u32) {
        if let Err(e) = self.dataplane.remove_outbound_sa(tunnel, spi_out) {
            tracing::debug!(tunnel, error = %e, "removing outbound SA");
        }
        if let Err(e) = self.dataplane.remove_inbound_sa(spi_in) {
            tracing::debug!(tunnel, error = %e, "removing inbound SA");
        }
    }
}
