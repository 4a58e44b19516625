//! Traffic selectors of an SA as lists of IP prefixes: the inner source
//! and destination a decapsulated packet may carry (what IKE negotiated),
//! and the [`SourceFilter`] of a tunnel: the inner sources the connection
//! may send at all (its routing policy's `prefix_filter_in` and its
//! interconnection subnets), which the agent keeps up to date as policies
//! change. Outbound, the route maps decide what enters a tunnel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use thiserror::Error;

/// An IPv4 or IPv6 prefix, host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpPrefix {
    /// IPv4 prefix: address and length 0..=32.
    V4(Ipv4Addr, u8),
    /// IPv6 prefix: address and length 0..=128.
    V6(Ipv6Addr, u8),
}

/// A prefix that does not parse or has a length beyond its family.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PrefixError {
    /// Not `addr/len`.
    #[error("prefix {0:?} is not ADDRESS/LENGTH")]
    Syntax(String),
    /// Length too large for the family.
    #[error("prefix length {0} too large")]
    Length(u8),
}

impl IpPrefix {
    /// Builds a prefix, clearing host bits.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        match addr {
            IpAddr::V4(a) if len <= 32 => {
                Ok(IpPrefix::V4(Ipv4Addr::from(u32::from(a) & mask4(len)), len))
            }
            IpAddr::V6(a) if len <= 128 => Ok(IpPrefix::V6(
                Ipv6Addr::from(u128::from(a) & mask6(len)),
                len,
            )),
            _ => Err(PrefixError::Length(len)),
        }
    }

    /// `0.0.0.0/0`.
    pub const ANY_V4: IpPrefix = IpPrefix::V4(Ipv4Addr::UNSPECIFIED, 0);
    /// `::/0`.
    pub const ANY_V6: IpPrefix = IpPrefix::V6(Ipv6Addr::UNSPECIFIED, 0);

    /// True if `addr` is inside the prefix (never across families).
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (*self, addr) {
            (IpPrefix::V4(p, l), IpAddr::V4(a)) => u32::from(a) & mask4(l) == u32::from(p),
            (IpPrefix::V6(p, l), IpAddr::V6(a)) => u128::from(a) & mask6(l) == u128::from(p),
            _ => false,
        }
    }

    /// Prefix length.
    pub fn len(&self) -> u8 {
        match *self {
            IpPrefix::V4(_, l) | IpPrefix::V6(_, l) => l,
        }
    }

    /// True for a zero-length prefix (`0.0.0.0/0`, `::/0`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Network address.
    pub fn addr(&self) -> IpAddr {
        match *self {
            IpPrefix::V4(a, _) => IpAddr::V4(a),
            IpPrefix::V6(a, _) => IpAddr::V6(a),
        }
    }
}

fn mask4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

fn mask6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

impl FromStr for IpPrefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| PrefixError::Syntax(s.to_owned()))?;
        let addr: IpAddr = a.parse().map_err(|_| PrefixError::Syntax(s.to_owned()))?;
        let len: u8 = l.parse().map_err(|_| PrefixError::Syntax(s.to_owned()))?;
        IpPrefix::new(addr, len)
    }
}

impl std::fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len())
    }
}

/// Which inner addresses an inbound SA accepts: the source must match one
/// of `remote`, the destination one of `local`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrafficSelectors {
    /// Prefixes on our side (inner destination of inbound packets).
    pub local: Vec<IpPrefix>,
    /// Prefixes on the peer's side (inner source of inbound packets).
    pub remote: Vec<IpPrefix>,
}

impl TrafficSelectors {
    /// Everything, both families: a route-based tunnel.
    pub fn any() -> Self {
        Self {
            local: vec![IpPrefix::ANY_V4, IpPrefix::ANY_V6],
            remote: vec![IpPrefix::ANY_V4, IpPrefix::ANY_V6],
        }
    }

    /// True if an inbound packet from `src` to `dst` is allowed.
    #[inline]
    pub fn allows_inbound(&self, src: IpAddr, dst: IpAddr) -> bool {
        self.remote.iter().any(|p| p.contains(src)) && self.local.iter().any(|p| p.contains(dst))
    }
}

impl IpPrefix {
    /// The smallest list of prefixes that covers exactly the addresses
    /// `start..=end` (an IKE traffic selector's range). Empty when `start >
    /// end` or the families differ.
    pub fn cover_range(start: IpAddr, end: IpAddr) -> Vec<IpPrefix> {
        match (start, end) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                cover(u128::from(u32::from(a)), u128::from(u32::from(b)), 32)
                    .into_iter()
                    .map(|(n, l)| IpPrefix::V4(Ipv4Addr::from(n as u32), l))
                    .collect()
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => cover(u128::from(a), u128::from(b), 128)
                .into_iter()
                .map(|(n, l)| IpPrefix::V6(Ipv6Addr::from(n), l))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Splits `lo..=hi` (addresses of `bits` bits) into aligned blocks: at most
/// 2 × `bits` of them.
fn cover(mut lo: u128, hi: u128, bits: u32) -> Vec<(u128, u8)> {
    let mut out = Vec::new();
    if lo > hi {
        return out;
    }
    loop {
        // The largest block starting at `lo` that is aligned and ends at or
        // before `hi`.
        let align = if lo == 0 {
            bits
        } else {
            lo.trailing_zeros().min(bits)
        };
        let mut size = align;
        while size > 0 && (size >= 128 || lo + ((1u128 << size) - 1) > hi) {
            if size >= 128 && lo == 0 && hi == u128::MAX {
                break;
            }
            size -= 1;
        }
        out.push((lo, (bits - size) as u8));
        let last = if size >= 128 {
            u128::MAX
        } else {
            lo + ((1u128 << size) - 1)
        };
        if last >= hi {
            return out;
        }
        lo = last + 1;
    }
}

/// The inner sources a tunnel accepts, whatever SA carried them: checked
/// on every decapsulated packet after the SA's own selectors. Prefixes are
/// kept per family as (network, mask) words so a check is a few integer
/// operations per prefix.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceFilter {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl SourceFilter {
    /// Accepts sources inside any of `prefixes` (nothing when empty).
    pub fn new<'a>(prefixes: impl IntoIterator<Item = &'a IpPrefix>) -> Self {
        let mut f = Self::default();
        for p in prefixes {
            match *p {
                IpPrefix::V4(a, l) => f.v4.push((u32::from(a), mask4(l))),
                IpPrefix::V6(a, l) => f.v6.push((u128::from(a), mask6(l))),
            }
        }
        // Shortest prefixes first: they match most traffic.
        f.v4.sort_by_key(|(_, m)| m.count_ones());
        f.v6.sort_by_key(|(_, m)| m.count_ones());
        f.v4.dedup();
        f.v6.dedup();
        f
    }

    /// True if `src` is inside one of the prefixes.
    pub fn allows(&self, src: IpAddr) -> bool {
        match src {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().any(|&(n, m)| a & m == n)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().any(|&(n, m)| a & m == n)
            }
        }
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// True when nothing is accepted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_contains() {
        let p: IpPrefix = "198.51.100.77/24".parse().unwrap();
        assert_eq!(p.to_string(), "198.51.100.0/24");
        assert!(p.contains("198.51.100.1".parse().unwrap()));
        assert!(!p.contains("198.51.101.1".parse().unwrap()));
        assert!(!p.contains("2001:db8::1".parse().unwrap()));
        let p6: IpPrefix = "2001:db8:1::/48".parse().unwrap();
        assert!(p6.contains("2001:db8:1:2::3".parse().unwrap()));
        assert!(!p6.contains("2001:db8:2::3".parse().unwrap()));
        assert!(IpPrefix::ANY_V4.contains("203.0.113.9".parse().unwrap()));
        assert!(IpPrefix::ANY_V6.contains("fd00::1".parse().unwrap()));
        assert_eq!(
            "10.0.0.0/33".parse::<IpPrefix>(),
            Err(PrefixError::Length(33))
        );
        assert!("10.0.0.0".parse::<IpPrefix>().is_err());
        let h: IpPrefix = "192.0.2.1/32".parse().unwrap();
        assert!(h.contains("192.0.2.1".parse().unwrap()));
        assert!(!h.contains("192.0.2.2".parse().unwrap()));
    }

    #[test]
    fn selectors() {
        let ts = TrafficSelectors {
            local: vec!["192.0.2.0/24".parse().unwrap()],
            remote: vec!["198.51.100.0/24".parse().unwrap()],
        };
        assert!(ts.allows_inbound(
            "198.51.100.1".parse().unwrap(),
            "192.0.2.1".parse().unwrap()
        ));
        assert!(!ts.allows_inbound(
            "192.0.2.1".parse().unwrap(),
            "198.51.100.1".parse().unwrap()
        ));
        assert!(TrafficSelectors::any()
            .allows_inbound("fd00::1".parse().unwrap(), "2001:db8::1".parse().unwrap()));
        assert!(!TrafficSelectors::default()
            .allows_inbound("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap()));
    }

    #[test]
    fn ranges_become_exact_prefix_covers() {
        let v4 = |s: &str| -> IpAddr { s.parse().unwrap() };
        let show = |v: Vec<IpPrefix>| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(
            show(IpPrefix::cover_range(v4("0.0.0.0"), v4("255.255.255.255"))),
            ["0.0.0.0/0"]
        );
        assert_eq!(
            show(IpPrefix::cover_range(
                v4("203.0.113.0"),
                v4("203.0.113.255")
            )),
            ["203.0.113.0/24"]
        );
        assert_eq!(
            show(IpPrefix::cover_range(v4("169.254.0.1"), v4("169.254.0.1"))),
            ["169.254.0.1/32"]
        );
        assert_eq!(
            show(IpPrefix::cover_range(v4("192.0.2.1"), v4("192.0.2.6"))),
            [
                "192.0.2.1/32",
                "192.0.2.2/31",
                "192.0.2.4/31",
                "192.0.2.6/32"
            ]
        );
        assert!(IpPrefix::cover_range(v4("192.0.2.9"), v4("192.0.2.1")).is_empty());
        assert!(IpPrefix::cover_range(v4("192.0.2.1"), "::1".parse().unwrap()).is_empty());
        assert_eq!(
            show(IpPrefix::cover_range(
                "::".parse().unwrap(),
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap()
            )),
            ["::/0"]
        );
        assert_eq!(
            show(IpPrefix::cover_range(
                "2001:db8::".parse().unwrap(),
                "2001:db8::ffff:ffff:ffff:ffff".parse().unwrap()
            )),
            ["2001:db8::/64"]
        );
        // Every address of a pseudo-random range is covered, nothing outside.
        let mut x = 0x9e37_79b9u32;
        for _ in 0..200 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let lo = x & 0xffff_f000;
            let hi = lo + (x & 0x3ff);
            let cov = IpPrefix::cover_range(Ipv4Addr::from(lo).into(), Ipv4Addr::from(hi).into());
            assert!(cov.len() <= 64);
            for a in lo.saturating_sub(3)..=hi + 3 {
                let inside = (lo..=hi).contains(&a);
                let covered = cov.iter().any(|p| p.contains(Ipv4Addr::from(a).into()));
                assert_eq!(inside, covered, "{a:#x} in {lo:#x}..={hi:#x}");
            }
        }
    }

    #[test]
    fn source_filter_accepts_only_its_prefixes() {
        let f = SourceFilter::new(&[
            "203.0.113.0/24".parse().unwrap(),
            "169.254.0.1/32".parse().unwrap(),
            "2001:db8:200::/48".parse().unwrap(),
        ]);
        assert_eq!(f.len(), 3);
        assert!(f.allows("203.0.113.77".parse().unwrap()));
        assert!(f.allows("169.254.0.1".parse().unwrap()));
        assert!(!f.allows("169.254.0.0".parse().unwrap()));
        assert!(!f.allows("198.51.100.10".parse().unwrap()));
        assert!(f.allows("2001:db8:200:1::5".parse().unwrap()));
        assert!(!f.allows("2001:db8:100::10".parse().unwrap()));
        assert!(!SourceFilter::default().allows("203.0.113.1".parse().unwrap()));
    }
}
