//! The Loc-RIB: for each prefix, the paths offered by every session whose
//! import policy accepted it, and the best one (RFC 4271 §9.1.2).
//!
//! Changes of the best path come out as [`RouteChange`]s: the data plane
//! (`ROUTES_V4/V6`) and the kernel route table follow them. Adj-RIB-In and
//! policy live in the sessions; this module only ranks what they offer.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::neighbor::Path;
use crate::SessionId;

/// The route the data plane must use for a prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub prefix: IpNet,
    pub next_hop: IpAddr,
    /// The session (hence connection / tunnel) the route was learned on.
    pub session: SessionId,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteChange {
    /// Install, or replace whatever was installed for `route.prefix`.
    Install(Route),
    /// No route any more for this prefix.
    Withdraw { prefix: IpNet },
}

#[derive(Debug, Clone)]
struct Candidate {
    session: SessionId,
    path: Arc<Path>,
}

impl Candidate {
    /// Smaller is better: local preference (higher wins), AS path length,
    /// origin, MED (always compared, so the order is total and does not
    /// depend on arrival order), then the lowest peer address and session.
    fn rank(
        &self,
    ) -> (
        Reverse<u32>,
        u32,
        crate::attribute::Origin,
        u32,
        IpAddr,
        SessionId,
    ) {
        let p = &self.path;
        (
            Reverse(p.local_pref),
            p.as_path.length(),
            p.origin,
            p.med,
            p.peer_addr,
            self.session,
        )
    }
    fn route(&self, prefix: IpNet) -> Route {
        Route {
            prefix,
            next_hop: self.path.next_hop,
            session: self.session,
        }
    }
}

/// The paths offered for one prefix. Nearly every prefix has a single
/// path, so that one is stored inline: no allocation per prefix.
#[derive(Debug)]
enum Candidates {
    One(Candidate),
    Many(Vec<Candidate>),
}

impl Candidates {
    fn as_slice(&self) -> &[Candidate] {
        match self {
            Self::One(c) => std::slice::from_ref(c),
            Self::Many(v) => v,
        }
    }

    fn best(&self) -> Option<&Candidate> {
        self.as_slice().iter().min_by_key(|c| c.rank())
    }

    fn upsert(&mut self, session: SessionId, path: Arc<Path>) {
        match self {
            Self::One(c) if c.session == session => c.path = path,
            Self::One(c) => {
                let first = c.clone();
                *self = Self::Many(vec![first, Candidate { session, path }]);
            }
            Self::Many(v) => match v.iter_mut().find(|c| c.session == session) {
                Some(c) => c.path = path,
                None => v.push(Candidate { session, path }),
            },
        }
    }

    /// Removes `session`'s path; `true` when nothing is left.
    fn remove(&mut self, session: SessionId) -> bool {
        match self {
            Self::One(c) => c.session == session,
            Self::Many(v) => {
                v.retain(|c| c.session != session);
                match v.len() {
                    0 => true,
                    1 => {
                        let last = v.remove(0);
                        *self = Self::One(last);
                        false
                    }
                    _ => false,
                }
            }
        }
    }
}

/// Ordered map, not a hash map: no rehash spike at a million prefixes, and
/// about half the memory per prefix.
#[derive(Debug, Default)]
pub struct LocRib {
    entries: BTreeMap<IpNet, Candidates>,
}

impl LocRib {
    pub fn new() -> Self {
        Self::default()
    }

    /// The selected route for `prefix`.
    pub fn best(&self, prefix: &IpNet) -> Option<Route> {
        self.entries
            .get(prefix)
            .and_then(Candidates::best)
            .map(|c| c.route(*prefix))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The selected routes, in prefix order.
    pub fn routes(&self) -> impl Iterator<Item = Route> + '_ {
        self.entries
            .iter()
            .filter_map(|(p, c)| c.best().map(|b| b.route(*p)))
    }

    /// Records what `session` offers for `prefix` (`None`: nothing) and
    /// returns the change of the selected route, if any.
    pub fn update(
        &mut self,
        session: SessionId,
        prefix: IpNet,
        path: Option<Arc<Path>>,
    ) -> Option<RouteChange> {
        let old = self.best(&prefix);
        let new = match (self.entries.get_mut(&prefix), path) {
            (Some(c), Some(path)) => {
                c.upsert(session, path);
                c.best().map(|b| b.route(prefix))
            }
            (None, Some(path)) => {
                let c = Candidate { session, path };
                let route = c.route(prefix);
                self.entries.insert(prefix, Candidates::One(c));
                Some(route)
            }
            (Some(c), None) => {
                if c.remove(session) {
                    self.entries.remove(&prefix);
                    None
                } else {
                    c.best().map(|b| b.route(prefix))
                }
            }
            (None, None) => None,
        };
        match (old, new) {
            (old, Some(new)) if old.as_ref() != Some(&new) => Some(RouteChange::Install(new)),
            (Some(_), None) => Some(RouteChange::Withdraw { prefix }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::{AsPath, Origin};

    fn path(peer: &str, local_pref: u32, as_path: Vec<u32>, origin: Origin, med: u32) -> Arc<Path> {
        Arc::new(Path {
            next_hop: peer.parse().unwrap(),
            origin,
            as_path: AsPath::sequence(as_path),
            med,
            local_pref,
            communities: vec![],
            peer_addr: peer.parse().unwrap(),
        })
    }

    fn install(prefix: IpNet, nh: &str, session: SessionId) -> Option<RouteChange> {
        Some(RouteChange::Install(Route {
            prefix,
            next_hop: nh.parse().unwrap(),
            session,
        }))
    }

    #[test]
    fn best_path_order() {
        let p: IpNet = "203.0.113.0/24".parse().unwrap();
        let mut rib = LocRib::new();
        let a = "169.254.0.2";
        let b = "169.254.0.6";
        assert_eq!(
            rib.update(2, p, Some(path(b, 100, vec![65001, 65002], Origin::Igp, 0))),
            install(p, b, 2)
        );
        // Shorter AS path wins.
        assert_eq!(
            rib.update(1, p, Some(path(a, 100, vec![65001], Origin::Igp, 0))),
            install(p, a, 1)
        );
        // Higher local preference beats the shorter path.
        assert_eq!(
            rib.update(2, p, Some(path(b, 200, vec![65001, 65002], Origin::Igp, 0))),
            install(p, b, 2)
        );
        // Same local pref and length: origin decides.
        assert_eq!(
            rib.update(2, p, Some(path(b, 100, vec![65001], Origin::Incomplete, 0))),
            install(p, a, 1)
        );
        // Same origin: MED decides.
        assert_eq!(
            rib.update(2, p, Some(path(b, 100, vec![65001], Origin::Igp, 5))),
            None
        );
        assert_eq!(
            rib.update(1, p, Some(path(a, 100, vec![65001], Origin::Igp, 10))),
            install(p, b, 2)
        );
        // All equal: lowest peer address.
        assert_eq!(
            rib.update(2, p, Some(path(b, 100, vec![65001], Origin::Igp, 10))),
            install(p, a, 1)
        );
        // Best withdrawn: the other one takes over; last one gone: withdraw.
        assert_eq!(rib.update(1, p, None), install(p, b, 2));
        assert_eq!(rib.update(1, p, None), None);
        assert_eq!(
            rib.update(2, p, None),
            Some(RouteChange::Withdraw { prefix: p })
        );
        assert!(rib.is_empty());
    }
}
