//! The state machine's helpers: starting and accepting connections,
//! collision resolution, OPEN checks and sends, timers, and the way back
//! to Idle.

use super::*;

impl Session {
    pub(super) fn answer_route_refresh(&mut self, now: Instant, out: &mut Out) {
        self.last_refresh_answer = Some(now);
        self.adj_rib_out.clear();
        self.sync_adj_rib_out(out);
    }

    /// Leaves Idle: active open unless passive or the peer is unreachable.
    pub(super) fn start(&mut self, now: Instant, out: &mut Out) {
        if self.config.passive || !self.reachable {
            self.state = State::Active;
        } else {
            out.push(Action::Connect {
                session: self.id,
                local: self.config.local_addr,
                peer: self.config.peer_addr,
                port: self.config.port,
            });
            self.state = State::Connect;
            self.arm(Timer::ConnectRetry, now + self.config.connect_retry, out);
        }
    }

    /// [`Input::Reachable`]: a session waiting in Active for its peer to
    /// become reachable connects at once (as its connect-retry timer
    /// would); one that can no longer reach it stops trying after the
    /// attempt under way.
    pub(super) fn set_reachable(&mut self, reachable: bool, now: Instant, out: &mut Out) {
        if self.reachable == reachable {
            return;
        }
        self.reachable = reachable;
        if reachable
            && self.admin_up
            && !self.config.passive
            && self.state == State::Active
            && self.primary.is_none()
        {
            self.start(now, out);
        }
    }

    pub(super) fn tcp_connected(
        &mut self,
        conn: ConnId,
        direction: Direction,
        now: Instant,
        out: &mut Out,
    ) {
        match self.state {
            // Accepting in Idle after an error lets a restarted peer come
            // back before our own connect-retry fires.
            State::Idle | State::Connect | State::Active if self.admin_up => {
                self.stop(Timer::ConnectRetry, out);
                self.primary = Some(Conn::new(conn, direction));
                self.send_open(conn, out);
                self.arm(Timer::Hold, now + OPEN_SENT_HOLD, out);
                self.state = State::OpenSent;
            }
            State::OpenSent | State::OpenConfirm
                if self.candidate.is_none()
                    && self
                        .primary
                        .as_ref()
                        .is_some_and(|p| p.direction != direction) =>
            {
                self.candidate = Some(Conn::new(conn, direction));
                self.send_open(conn, out);
            }
            _ => out.push(Action::Close {
                session: self.id,
                conn,
            }),
        }
    }

    /// Events on the second connection of a collision (RFC 4271 §6.8).
    pub(super) fn candidate_event(&mut self, event: Event, now: Instant, out: &mut Out) {
        let Some(cand) = self.candidate.as_ref() else {
            return;
        };
        let cand_id = cand.id;
        let cand_dir = cand.direction;
        match event {
            Event::BgpOpen(_, open) => {
                let n = match self.check_open(&open) {
                    Ok(n) => n,
                    Err(notification) => {
                        self.candidate = None;
                        self.close_with(cand_id, Some(notification), out);
                        return;
                    }
                };
                // The higher BGP Identifier keeps the connection it initiated.
                let keep = if u32::from(self.config.router_id) < u32::from(n.peer_id) {
                    Direction::Incoming
                } else {
                    Direction::Outgoing
                };
                let collision = Some(Notification::new(code::CEASE, cease::CONNECTION_COLLISION));
                if cand_dir == keep && self.state != State::Established {
                    let cand = self.candidate.take();
                    if let Some(old) = std::mem::replace(&mut self.primary, cand) {
                        self.close_with(old.id, collision, out);
                    }
                    self.negotiated = Some(n);
                    self.send_to_primary(&Message::Keepalive, out);
                    self.arm_hold(now, out);
                    self.arm_keepalive(now, out);
                    self.state = State::OpenConfirm;
                } else {
                    self.candidate = None;
                    self.close_with(cand_id, collision, out);
                }
            }
            Event::TcpConnectionFails(_) | Event::NotifMsg(..) => self.candidate = None,
            Event::OutOfResources(_) => {
                self.candidate = None;
                self.close_with(
                    cand_id,
                    Some(Notification::new(code::CEASE, cease::OUT_OF_RESOURCES)),
                    out,
                );
            }
            _ => {
                self.candidate = None;
                self.close_with(cand_id, Some(Notification::new(code::FSM, 1)), out);
            }
        }
    }

    pub(super) fn check_open(&self, open: &Open) -> Result<Negotiated, Notification> {
        let peer_asn = open.asn();
        if peer_asn != self.config.peer_asn {
            return Err(Notification::with_data(
                code::OPEN_MESSAGE,
                open_error::BAD_PEER_AS,
                open.my_as.to_be_bytes().to_vec(),
            ));
        }
        if open.hold_time == 1 || open.hold_time == 2 {
            return Err(Notification::with_data(
                code::OPEN_MESSAGE,
                open_error::UNACCEPTABLE_HOLD_TIME,
                open.hold_time.to_be_bytes().to_vec(),
            ));
        }
        if open.bgp_identifier.is_unspecified() {
            return Err(Notification::with_data(
                code::OPEN_MESSAGE,
                open_error::BAD_BGP_IDENTIFIER,
                open.bgp_identifier.octets().to_vec(),
            ));
        }
        let ours = [self.config.family()];
        let theirs = open.families();
        Ok(Negotiated {
            hold_time: self.config.hold_time.min(open.hold_time),
            codec: Codec {
                four_octet_as: open.four_octet_as().is_some(),
            },
            families: ours.into_iter().filter(|f| theirs.contains(f)).collect(),
            peer_id: open.bgp_identifier,
            graceful_restart: self.config.graceful_restart.is_some()
                && open.graceful_restart().is_some(),
        })
    }

    pub(super) fn send_open(&self, conn: ConnId, out: &mut Out) {
        let mut open = Open::new(
            self.config.local_asn,
            self.config.hold_time,
            self.config.router_id,
            &[self.config.family()],
        );
        if let Some(restart_time) = self.config.graceful_restart {
            let f = self.config.family();
            open.capabilities
                .push(Capability::GracefulRestart(GracefulRestart {
                    restarting: self.restarting,
                    restart_time: restart_time.min(0x0fff),
                    // What we announce are the VPC's prefixes, reached on
                    // the LAN whatever the BGP session does: forwarding to
                    // them survives our restart.
                    families: vec![(f.afi(), f.safi(), true)],
                }));
        }
        out.push(Action::Send {
            session: self.id,
            conn,
            bytes: Message::Open(open).encode(Codec::default()),
        });
    }

    pub(super) fn codec(&self) -> Codec {
        self.negotiated
            .as_ref()
            .map_or_else(Codec::default, |n| n.codec)
    }

    pub(super) fn send_to_primary(&self, msg: &Message, out: &mut Out) {
        if let Some(p) = &self.primary {
            out.push(Action::Send {
                session: self.id,
                conn: p.id,
                bytes: msg.encode(self.codec()),
            });
        }
    }

    pub(super) fn close_with(
        &self,
        conn: ConnId,
        notification: Option<Notification>,
        out: &mut Out,
    ) {
        if let Some(n) = notification {
            out.push(Action::Send {
                session: self.id,
                conn,
                bytes: Message::Notification(n).encode(self.codec()),
            });
        }
        out.push(Action::Close {
            session: self.id,
            conn,
        });
    }

    pub(super) fn arm(&mut self, timer: Timer, deadline: Instant, out: &mut Out) {
        self.timers[timer.index()] = Some(deadline);
        out.push(Action::ArmTimer {
            session: self.id,
            timer,
            deadline,
        });
    }

    pub(super) fn stop(&mut self, timer: Timer, out: &mut Out) {
        if self.timers[timer.index()].take().is_some() {
            out.push(Action::StopTimer {
                session: self.id,
                timer,
            });
        }
    }

    pub(super) fn arm_hold(&mut self, now: Instant, out: &mut Out) {
        let hold = self.negotiated.as_ref().map_or(0, |n| n.hold_time);
        if hold == 0 {
            self.stop(Timer::Hold, out);
        } else {
            self.arm(Timer::Hold, now + Duration::from_secs(hold.into()), out);
        }
    }

    pub(super) fn arm_keepalive(&mut self, now: Instant, out: &mut Out) {
        let hold = self.negotiated.as_ref().map_or(0, |n| n.hold_time);
        if hold == 0 {
            self.stop(Timer::Keepalive, out);
        } else {
            // RFC 4271 §10: one third of the hold time.
            let ms = u64::from(hold) * 1000 / 3;
            self.arm(Timer::Keepalive, now + Duration::from_millis(ms), out);
        }
    }

    /// Back to Idle: optional NOTIFICATION, connections closed, routes
    /// withdrawn, and an automatic restart after connect-retry when the
    /// session is administratively up.
    pub(super) fn enter_idle(
        &mut self,
        notification: Option<Notification>,
        now: Instant,
        out: &mut Out,
    ) {
        let received = self.received_notification.take();
        let cause = match (&notification, received) {
            (Some(n), _) => Some(crate::DownCause::Sent(n.clone())),
            (None, Some(n)) => Some(crate::DownCause::Received(n)),
            (None, None) => None,
        };
        if let Some(n) = &notification {
            tracing::info!(session = self.id, %n, "closing session");
            self.last_error = Some(n.clone());
        }
        if let Some(p) = self.primary.take() {
            self.close_with(p.id, notification.clone(), out);
        }
        if let Some(c) = self.candidate.take() {
            self.close_with(c.id, notification, out);
        }
        for t in Timer::ALL {
            self.stop(t, out);
        }
        self.refresh_pending = false;
        self.last_refresh_answer = None;
        let was_established = self.state == State::Established;
        self.state = State::Idle;
        self.negotiated = None;
        self.adj_rib_out.clear();
        self.accepted = 0;
        for (prefix, _) in std::mem::take(&mut self.adj_rib_in) {
            // Only what passed import policy ever reached the Loc-RIB.
            if self.route_propagation && self.policy.as_ref().is_some_and(|p| p.accepts_in(&prefix))
            {
                out.rib.push(RibChange { prefix, path: None });
            }
        }
        if was_established {
            out.push(Action::SessionDown {
                session: self.id,
                cause,
            });
        }
        if self.admin_up {
            self.connect_retry_counter = self.connect_retry_counter.saturating_add(1);
            self.arm(Timer::ConnectRetry, now + self.config.connect_retry, out);
        }
    }
}
