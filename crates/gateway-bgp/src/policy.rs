//! Routing policy as the API defines it: `prefix_filter_in` decides what we
//! accept from the customer, `prefix_filter_out` what we announce. RFC 8212:
//! a session without a policy accepts and announces nothing, which is the
//! API's "all routes are blocked by default".
//!
//! This module also owns the mapping of Scaleway's communities onto local
//! preference. It holds no state about sessions.

use ipnet::IpNet;

use crate::attribute::Community;

/// Local preference of a route that carries none of our communities.
pub const DEFAULT_LOCAL_PREF: u32 = 100;
pub const LOCAL_PREF_LOW: u32 = 50;
pub const LOCAL_PREF_MEDIUM: u32 = 100;
pub const LOCAL_PREF_HIGH: u32 = 200;

/// The communities a customer tags routes with (12876:42050 / 42100 / 42200).
pub const COMMUNITY_LOW: Community = Community::new(12876, 42050);
pub const COMMUNITY_MEDIUM: Community = Community::new(12876, 42100);
pub const COMMUNITY_HIGH: Community = Community::new(12876, 42200);

/// A routing policy's filters (API `prefix_filter_in` / `prefix_filter_out`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoutingPolicy {
    pub prefix_filter_in: Vec<IpNet>,
    pub prefix_filter_out: Vec<IpNet>,
}

/// True when `prefix` is equal to or more specific than one of `filter`.
pub fn within(prefix: &IpNet, filter: &[IpNet]) -> bool {
    filter.iter().any(|f| f.contains(prefix))
}

/// A prefix string from the API that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid prefix {0:?}")]
pub struct InvalidPrefix(pub String);

impl RoutingPolicy {
    /// From the API's `prefix_filter_in` / `prefix_filter_out` strings.
    /// Host bits are cleared, so `10.0.0.1/8` filters like `10.0.0.0/8`.
    pub fn from_filters<S: AsRef<str>>(
        prefix_filter_in: &[S],
        prefix_filter_out: &[S],
    ) -> Result<Self, InvalidPrefix> {
        let parse = |v: &[S]| -> Result<Vec<IpNet>, InvalidPrefix> {
            v.iter()
                .map(|s| {
                    s.as_ref()
                        .parse::<IpNet>()
                        .map(|n| n.trunc())
                        .map_err(|_| InvalidPrefix(s.as_ref().to_owned()))
                })
                .collect()
        };
        Ok(Self {
            prefix_filter_in: parse(prefix_filter_in)?,
            prefix_filter_out: parse(prefix_filter_out)?,
        })
    }

    pub fn accepts_in(&self, prefix: &IpNet) -> bool {
        within(prefix, &self.prefix_filter_in)
    }
    pub fn allows_out(&self, prefix: &IpNet) -> bool {
        within(prefix, &self.prefix_filter_out)
    }
}

/// Local preference set by the customer's communities; when several are
/// present the highest wins, so a route is never demoted by an extra tag.
pub fn local_pref_from_communities(communities: &[Community]) -> u32 {
    let mut pref = None;
    for c in communities {
        let p = match *c {
            COMMUNITY_LOW => LOCAL_PREF_LOW,
            COMMUNITY_MEDIUM => LOCAL_PREF_MEDIUM,
            COMMUNITY_HIGH => LOCAL_PREF_HIGH,
            _ => continue,
        };
        pref = Some(pref.map_or(p, |q: u32| q.max(p)));
    }
    pref.unwrap_or(DEFAULT_LOCAL_PREF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn filter_accepts_equal_and_more_specific_only() {
        let p = RoutingPolicy {
            prefix_filter_in: vec![n("203.0.113.0/24"), n("2001:db8:200::/48")],
            prefix_filter_out: vec![],
        };
        assert!(p.accepts_in(&n("203.0.113.0/24")));
        assert!(p.accepts_in(&n("203.0.113.128/25")));
        assert!(!p.accepts_in(&n("203.0.112.0/23")));
        assert!(!p.accepts_in(&n("198.51.100.0/24")));
        assert!(p.accepts_in(&n("2001:db8:200:1::/64")));
        assert!(!p.accepts_in(&n("2001:db8::/32")));
        assert!(!p.allows_out(&n("203.0.113.0/24")));
    }

    #[test]
    fn from_api_strings() {
        let p = RoutingPolicy::from_filters(
            &["203.0.113.7/24"],
            &["198.51.100.0/24", "2001:db8:100::/48"],
        )
        .unwrap();
        assert_eq!(p.prefix_filter_in, vec![n("203.0.113.0/24")]);
        assert_eq!(p.prefix_filter_out.len(), 2);
        assert_eq!(
            RoutingPolicy::from_filters(&["203.0.113.0"], &[]),
            Err(InvalidPrefix("203.0.113.0".into()))
        );
    }

    #[test]
    fn communities_map_to_local_pref() {
        assert_eq!(local_pref_from_communities(&[]), 100);
        assert_eq!(local_pref_from_communities(&[COMMUNITY_LOW]), 50);
        assert_eq!(local_pref_from_communities(&[COMMUNITY_HIGH]), 200);
        assert_eq!(
            local_pref_from_communities(&[Community::new(65000, 1), COMMUNITY_LOW, COMMUNITY_HIGH]),
            200
        );
        assert_eq!(
            local_pref_from_communities(&[Community::new(12876, 1)]),
            100
        );
    }
}
