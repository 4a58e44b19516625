//! Routes: UPDATEs received (through the import policy into Adj-RIB-In),
//! End-of-RIB, Adj-RIB-Out kept in step with what we export, the UPDATEs
//! that carry it, and policy changes applied without a reset.

use super::*;

impl Session {
    /// Whether `update` is the End-of-RIB marker of our family (RFC 4724
    /// §2): an empty UPDATE for IPv4 unicast, else one holding only an
    /// empty MP_UNREACH_NLRI of the family.
    pub(super) fn is_end_of_rib(&self, update: &Update) -> bool {
        if !update.withdrawn_routes.is_empty() || !update.nlri.is_empty() {
            return false;
        }
        match (self.config.family(), update.path_attributes.as_slice()) {
            (AfiSafi::Ipv4Unicast, []) => true,
            (family, [PathAttribute::MpUnreachNlri(m)]) => {
                m.afi_safi == family && m.withdrawn.is_empty()
            }
            _ => false,
        }
    }

    pub(super) fn process_update(&mut self, update: Update, now: Instant, out: &mut Out) {
        if self.is_end_of_rib(&update) {
            out.push(Action::EndOfRib { session: self.id });
            return;
        }
        let mut withdrawn: Vec<IpNet> = update
            .withdrawn_routes
            .iter()
            .map(|p| IpNet::V4(*p))
            .collect();
        let mut announced: Vec<(IpNet, IpAddr)> = Vec::new();
        let mut origin = None;
        let mut as_path = None;
        let mut med = 0;
        let mut communities = Vec::new();
        let mut v4_next_hop = None;
        for attr in update.path_attributes {
            match attr {
                PathAttribute::Origin(o) => origin = Some(o),
                PathAttribute::AsPath(p) => as_path = Some(p),
                PathAttribute::NextHop(nh) => v4_next_hop = Some(IpAddr::V4(nh)),
                PathAttribute::MultiExitDisc(m) => med = m,
                PathAttribute::Communities(c) => communities = c,
                PathAttribute::MpReachNlri(m) => {
                    let nh = m.next_hop.addr();
                    announced.extend(m.nlri.into_iter().map(|p| (p, nh)));
                }
                PathAttribute::MpUnreachNlri(m) => withdrawn.extend(m.withdrawn),
                _ => {}
            }
        }
        if let Some(nh) = v4_next_hop {
            announced.extend(update.nlri.iter().map(|p| (IpNet::V4(*p), nh)));
        }
        let families = self
            .negotiated
            .as_ref()
            .map(|n| n.families.clone())
            .unwrap_or_default();
        // A family that was not negotiated is ignored (RFC 4760 §6).
        announced.retain(|(p, _)| families.contains(&AfiSafi::of_prefix(p)));
        withdrawn.retain(|p| families.contains(&AfiSafi::of_prefix(p)));

        let as_path = as_path.unwrap_or_default();
        let usable = update.treat_as_withdraw.is_none()
            // RFC 4271 §9.1.2: our own ASN in the path is a loop.
            && !as_path.contains(self.config.local_asn)
            // An eBGP peer must put its own ASN first (RFC 4271 §6.3, RFC 7606 treat-as-withdraw).
            && as_path.first_asn() == Some(self.config.peer_asn);
        if let Some(e) = &update.treat_as_withdraw {
            tracing::debug!(session = self.id, error = %e, "treat-as-withdraw");
        }
        if !usable {
            withdrawn.extend(announced.drain(..).map(|(p, _)| p));
        }
        for prefix in withdrawn {
            if self.adj_rib_in.remove(&prefix).is_some() && self.imports(&prefix) {
                self.accepted -= 1;
                out.rib.push(RibChange { prefix, path: None });
            }
        }
        if announced.is_empty() {
            return;
        }
        let local_pref = local_pref_from_communities(&communities);
        let mut shared: Option<Arc<Path>> = None;
        for (prefix, next_hop) in announced {
            let path = match &shared {
                Some(p) if p.next_hop == next_hop => p.clone(),
                _ => {
                    let p = Arc::new(Path {
                        session: self.id,
                        next_hop,
                        origin: origin.unwrap_or(Origin::Incomplete),
                        as_path: as_path.clone(),
                        med,
                        local_pref,
                        communities: communities.clone(),
                        peer_addr: self.config.peer_addr,
                    });
                    shared = Some(p.clone());
                    p
                }
            };
            let replaced = self.adj_rib_in.insert(prefix, path.clone()).is_some();
            if self.imports(&prefix) {
                if !replaced {
                    self.accepted += 1;
                }
                out.rib.push(RibChange {
                    prefix,
                    path: Some(path),
                });
            }
        }
        if let Some(max) = self.config.max_prefixes {
            if self.adj_rib_in.len() > max as usize {
                // RFC 4486 §4: AFI, SAFI and the limit as data.
                let mut data = Vec::with_capacity(7);
                data.extend_from_slice(&self.config.family().afi().to_be_bytes());
                data.push(self.config.family().safi());
                data.extend_from_slice(&max.to_be_bytes());
                tracing::warn!(session = self.id, max, "maximum prefix count exceeded");
                self.enter_idle(
                    Some(Notification::with_data(
                        code::CEASE,
                        cease::MAX_PREFIXES,
                        data,
                    )),
                    now,
                    out,
                );
            }
        }
    }

    /// Brings the peer's view in line with what policy allows us to announce.
    pub(super) fn sync_adj_rib_out(&mut self, out: &mut Out) {
        if self.state != State::Established {
            return;
        }
        let family = self.config.family();
        let negotiated = self
            .negotiated
            .as_ref()
            .is_some_and(|n| n.families.contains(&family));
        let desired: BTreeSet<IpNet> = match &self.policy {
            Some(policy) if self.route_propagation && negotiated => self
                .exported
                .iter()
                .map(|p| p.trunc())
                .filter(|p| AfiSafi::of_prefix(p) == family && policy.allows_out(p))
                .collect(),
            _ => BTreeSet::new(),
        };
        let withdraw: Vec<IpNet> = self.adj_rib_out.difference(&desired).copied().collect();
        let announce: Vec<IpNet> = desired.difference(&self.adj_rib_out).copied().collect();
        for msg in self.build_updates(&withdraw, &announce) {
            self.send_to_primary(&msg, out);
        }
        self.adj_rib_out = desired;
    }

    pub(super) fn build_updates(&self, withdraw: &[IpNet], announce: &[IpNet]) -> Vec<Message> {
        // Room for NLRI once the header, the two length fields and the
        // attributes are accounted for, with margin for MP_* headers.
        const BUDGET: usize = MAX_MESSAGE_LEN - 19 - 4 - 100;
        let chunks = |prefixes: &[IpNet]| -> Vec<Vec<IpNet>> {
            let mut all = Vec::new();
            let mut cur = Vec::new();
            let mut size = 0;
            for p in prefixes {
                let l = crate::attribute::prefix_wire_len(p);
                if size + l > BUDGET {
                    all.push(std::mem::take(&mut cur));
                    size = 0;
                }
                size += l;
                cur.push(*p);
            }
            if !cur.is_empty() {
                all.push(cur);
            }
            all
        };
        let v4 = |ps: Vec<IpNet>| -> Vec<Ipv4Net> {
            ps.into_iter()
                .filter_map(|p| match p {
                    IpNet::V4(v) => Some(v),
                    IpNet::V6(_) => None,
                })
                .collect()
        };
        let mut msgs = Vec::new();
        let family = self.config.family();
        for chunk in chunks(withdraw) {
            msgs.push(Message::Update(match family {
                AfiSafi::Ipv4Unicast => Update {
                    withdrawn_routes: v4(chunk),
                    ..Update::default()
                },
                AfiSafi::Ipv6Unicast => Update {
                    path_attributes: vec![PathAttribute::MpUnreachNlri(MpUnreachNlri {
                        afi_safi: family,
                        withdrawn: chunk,
                    })],
                    ..Update::default()
                },
            }));
        }
        let base = vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::sequence(vec![self.config.local_asn])),
        ];
        for chunk in chunks(announce) {
            let mut attrs = base.clone();
            let update = match self.config.local_addr {
                IpAddr::V4(nh) => {
                    attrs.push(PathAttribute::NextHop(nh));
                    Update {
                        path_attributes: attrs,
                        nlri: v4(chunk),
                        ..Update::default()
                    }
                }
                IpAddr::V6(global) => {
                    attrs.insert(
                        0,
                        PathAttribute::MpReachNlri(MpReachNlri {
                            afi_safi: family,
                            next_hop: MpNextHop::Ipv6 {
                                global,
                                link_local: None,
                            },
                            nlri: chunk,
                        }),
                    );
                    Update {
                        path_attributes: attrs,
                        ..Update::default()
                    }
                }
            };
            msgs.push(Message::Update(update));
        }
        msgs
    }

    /// Changes import/export policy; Adj-RIB-In is re-evaluated and the
    /// peer's view updated without touching the session.
    pub(crate) fn reconfigure(
        &mut self,
        policy: Option<Option<RoutingPolicy>>,
        route_propagation: Option<bool>,
        exported: Option<Vec<IpNet>>,
        out: &mut Out,
    ) {
        let before: Vec<IpNet> = self
            .adj_rib_in
            .keys()
            .filter(|p| self.imports(p))
            .copied()
            .collect();
        if let Some(p) = policy {
            self.policy = p;
        }
        if let Some(r) = route_propagation {
            self.route_propagation = r;
        }
        if let Some(e) = exported {
            self.exported = e;
        }
        let before: HashSet<IpNet> = before.into_iter().collect();
        self.accepted = 0;
        for (prefix, path) in &self.adj_rib_in {
            let now_in = self.imports(prefix);
            self.accepted += usize::from(now_in);
            let was_in = before.contains(prefix);
            if now_in && !was_in {
                out.rib.push(RibChange {
                    prefix: *prefix,
                    path: Some(path.clone()),
                });
            } else if was_in && !now_in {
                out.rib.push(RibChange {
                    prefix: *prefix,
                    path: None,
                });
            }
        }
        self.sync_adj_rib_out(out);
    }
}
