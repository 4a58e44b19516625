//! The SA state file: what is written when, the sequence numbers it
//! reserves before an outbound SA may send them, and the one handshake a
//! tunnel that was up gets after a restart.

use super::*;

impl Runtime {
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
        // Looked up per reported IKE SA: the tick costs nothing for the
        // tunnels that have none.
        let tunnels = &self.tunnels;
        let tunnel_id = |name: &str| tunnels.get(name).map(|t| t.id);
        // Where each CHILD SA's numbers stand (outbound SPI → the mark to
        // write; inbound SPI → right edge); entries are copied only when
        // the file is written.
        let mut marks: HashMap<u32, (TunnelId, u64)> = HashMap::new();
        let mut need_seq = false;
        let mut edges = BTreeMap::new();
        for e in book.current.values() {
            let Some(tid) = tunnel_id(&e.tunnel) else {
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
        // in it after STARVED_WARN_AFTER is logged, once. Every tunnel is
        // looked at, so at most once per STARVED_SCAN_EVERY, not every tick.
        let scan_due = book
            .starved_scan
            .is_none_or(|t| t.elapsed() >= STARVED_SCAN_EVERY);
        let mut starved = BTreeMap::new();
        if scan_due {
            book.starved_scan = Some(Instant::now());
        }
        for (name, t) in self.tunnels.iter().filter(|_| scan_due) {
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
        if scan_due {
            book.starved = starved;
        }
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
            .filter(|e| tunnel_id(&e.tunnel).is_some())
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
    pub(super) async fn initiate_resumed(&mut self, t: &TunnelPlan) -> Result<(), RuntimeError> {
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
}
