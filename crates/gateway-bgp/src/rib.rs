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

/// Smaller is better: local preference (higher wins), AS path length,
/// origin, MED (always compared, so the order is total and does not depend
/// on arrival order), then the lowest peer address and session.
fn rank(
    p: &Path,
) -> (
    Reverse<u32>,
    u32,
    crate::attribute::Origin,
    u32,
    IpAddr,
    SessionId,
) {
    (
        Reverse(p.local_pref),
        p.as_path.length(),
        p.origin,
        p.med,
        p.peer_addr,
        p.session,
    )
}

fn route(p: &Path, prefix: IpNet) -> Route {
    Route {
        prefix,
        next_hop: p.next_hop,
        session: p.session,
    }
}

/// The paths offered for one prefix. Nearly every prefix has a single
/// path, so that one is stored inline (16 bytes, no allocation).
#[derive(Debug)]
enum Candidates {
    One(Arc<Path>),
    Many(Box<[Arc<Path>]>),
}

impl Candidates {
    fn as_slice(&self) -> &[Arc<Path>] {
        match self {
            Self::One(c) => std::slice::from_ref(c),
            Self::Many(v) => v,
        }
    }

    fn best(&self) -> Option<&Path> {
        self.as_slice().iter().map(|p| &**p).min_by_key(|p| rank(p))
    }

    fn upsert(&mut self, path: Arc<Path>) {
        match self {
            Self::One(c) if c.session == path.session => *c = path,
            Self::One(c) => {
                let first = c.clone();
                *self = Self::Many(vec![first, path].into_boxed_slice());
            }
            Self::Many(v) => match v.iter_mut().find(|c| c.session == path.session) {
                Some(c) => *c = path,
                None => {
                    // Several sessions for one prefix is rare: re-allocating is fine.
                    let mut all = std::mem::take(v).into_vec();
                    all.push(path);
                    *v = all.into_boxed_slice();
                }
            },
        }
    }

    /// Removes `session`'s path; `true` when nothing is left.
    fn remove(&mut self, session: SessionId) -> bool {
        match self {
            Self::One(c) => c.session == session,
            Self::Many(v) => {
                let mut all = std::mem::take(v).into_vec();
                all.retain(|c| c.session != session);
                match all.len() {
                    0 => true,
                    1 => {
                        *self = Self::One(all.remove(0));
                        false
                    }
                    _ => {
                        *v = all.into_boxed_slice();
                        false
                    }
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
            .map(|c| route(c, *prefix))
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
            .filter_map(|(p, c)| c.best().map(|b| route(b, *p)))
    }

    /// Records what `session` offers for `prefix` (`None`: nothing) and
    /// returns the change of the selected route, if any. A path's
    /// `session` must be `session`.
    pub fn update(
        &mut self,
        session: SessionId,
        prefix: IpNet,
        path: Option<Arc<Path>>,
    ) -> Option<RouteChange> {
        debug_assert!(path.as_ref().is_none_or(|p| p.session == session));
        let old = self.best(&prefix);
        let new = match (self.entries.get_mut(&prefix), path) {
            (Some(c), Some(path)) => {
                c.upsert(path);
                c.best().map(|b| route(b, prefix))
            }
            (None, Some(path)) => {
                let r = route(&path, prefix);
                self.entries.insert(prefix, Candidates::One(path));
                Some(r)
            }
            (Some(c), None) => {
                if c.remove(session) {
                    self.entries.remove(&prefix);
                    None
                } else {
                    c.best().map(|b| route(b, prefix))
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

const _: () = assert!(std::mem::size_of::<Candidates>() == 16);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::{AsPath, Origin};

    fn path(
        session: SessionId,
        peer: &str,
        local_pref: u32,
        as_path: Vec<u32>,
        origin: Origin,
        med: u32,
    ) -> Arc<Path> {
        Arc::new(Path {
            session,
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
            rib.update(
                2,
                p,
                Some(path(2, b, 100, vec![65001, 65002], Origin::Igp, 0))
            ),
            install(p, b, 2)
        );
        // Shorter AS path wins.
        assert_eq!(
            rib.update(1, p, Some(path(1, a, 100, vec![65001], Origin::Igp, 0))),
            install(p, a, 1)
        );
        // Higher local preference beats the shorter path.
        assert_eq!(
            rib.update(
                2,
                p,
                Some(path(2, b, 200, vec![65001, 65002], Origin::Igp, 0))
            ),
            install(p, b, 2)
        );
        // Same local pref and length: origin decides.
        assert_eq!(
            rib.update(
                2,
                p,
                Some(path(2, b, 100, vec![65001], Origin::Incomplete, 0))
            ),
            install(p, a, 1)
        );
        // Same origin: MED decides.
        assert_eq!(
            rib.update(2, p, Some(path(2, b, 100, vec![65001], Origin::Igp, 5))),
            None
        );
        assert_eq!(
            rib.update(1, p, Some(path(1, a, 100, vec![65001], Origin::Igp, 10))),
            install(p, b, 2)
        );
        // All equal: lowest peer address.
        assert_eq!(
            rib.update(2, p, Some(path(2, b, 100, vec![65001], Origin::Igp, 10))),
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

    #[test]
    fn three_sessions_one_prefix() {
        let p: IpNet = "2001:db8:200::/48".parse().unwrap();
        let mut rib = LocRib::new();
        let peers = ["fd00::1", "fd00::3", "fd00::5"];
        for (i, peer) in peers.iter().enumerate() {
            let s = i as SessionId + 1;
            let change = rib.update(s, p, Some(path(s, peer, 100, vec![65001], Origin::Igp, 0)));
            // The lowest peer address keeps winning.
            assert_eq!(
                change,
                if s == 1 {
                    install(p, peers[0], 1)
                } else {
                    None
                }
            );
        }
        // Session 2 gets the high preference, then goes away, then session 1.
        assert_eq!(
            rib.update(
                2,
                p,
                Some(path(2, peers[1], 200, vec![65001], Origin::Igp, 0))
            ),
            install(p, peers[1], 2)
        );
        assert_eq!(rib.update(2, p, None), install(p, peers[0], 1));
        assert_eq!(rib.update(1, p, None), install(p, peers[2], 3));
        assert_eq!(rib.len(), 1);
        assert_eq!(
            rib.update(3, p, None),
            Some(RouteChange::Withdraw { prefix: p })
        );
        assert!(rib.is_empty());
    }
}
