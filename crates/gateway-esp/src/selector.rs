//! Traffic selectors of an SA as lists of IP prefixes: the inner source
//! and destination a decapsulated packet may carry. Route-based tunnels use
//! `0.0.0.0/0` and `::/0`; the routing policy itself is enforced by the
//! route maps, not here.

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
    pub fn allows_inbound(&self, src: IpAddr, dst: IpAddr) -> bool {
        self.remote.iter().any(|p| p.contains(src)) && self.local.iter().any(|p| p.contains(dst))
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
}
