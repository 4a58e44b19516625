//! The four resources of the s2s-vpn v1alpha1 API (VPN gateway, customer
//! gateway, routing policy, connection) plus VPN gateway types, exactly as the
//! official SDK (`scaleway==2.12.0`, `scaleway/s2s_vpn/v1alpha1/types.py`)
//! names them on the wire, and the validation rules of the seed that do not
//! need the store (field syntax, enums, families, ASNs). Rules that depend on
//! other resources (references, sharing a family, in-use) live in `ops`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Defines a wire enum: the SDK's strings, parsed without serde's generic
/// errors so a refusal can name the field.
macro_rules! str_enum {
    ($(#[$m:meta])* $name:ident { $($var:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($var),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),+ }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$var),)+ _ => None }
            }
            /// Parses a request field, refusing unknown strings with the field name.
            pub fn parse_field(field: &str, s: &str) -> Result<Self, ApiError> {
                Self::parse(s).ok_or_else(|| ApiError::unknown(
                    field,
                    format!("unknown value {s:?}, expected one of: {}",
                        Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")),
                ))
            }
        }
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| serde::de::Error::custom(
                    format!("unknown {} {s:?}", stringify!($name))))
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

str_enum!(BgpSessionStatus {
    UnknownStatus = "unknown_status",
    Up = "up",
    Down = "down",
    Disabled = "disabled",
});
str_enum!(DhGroup {
    UnknownDhgroup = "unknown_dhgroup",
    Modp2048 = "modp2048",
    Modp3072 = "modp3072",
    Modp4096 = "modp4096",
    Ecp256 = "ecp256",
    Ecp384 = "ecp384",
    Ecp521 = "ecp521",
    Curve25519 = "curve25519",
});
str_enum!(Encryption {
    UnknownEncryption = "unknown_encryption",
    Aes128 = "aes128",
    Aes192 = "aes192",
    Aes256 = "aes256",
    Aes128gcm = "aes128gcm",
    Aes192gcm = "aes192gcm",
    Aes256gcm = "aes256gcm",
    Aes128ccm = "aes128ccm",
    Aes256ccm = "aes256ccm",
    Chacha20poly1305 = "chacha20poly1305",
});
str_enum!(InitiationPolicy {
    UnknownInitiationPolicy = "unknown_initiation_policy",
    VpnGateway = "vpn_gateway",
    CustomerGateway = "customer_gateway",
});
str_enum!(Integrity {
    UnknownIntegrity = "unknown_integrity",
    Sha256 = "sha256",
    Sha384 = "sha384",
    Sha512 = "sha512",
});
str_enum!(ConnectionStatus {
    UnknownStatus = "unknown_status",
    Active = "active",
    LimitedConnectivity = "limited_connectivity",
    Down = "down",
    Locked = "locked",
});
str_enum!(TunnelStatus {
    UnknownTunnelStatus = "unknown_tunnel_status",
    Up = "up",
    Down = "down",
});
str_enum!(VpnGatewayStatus {
    UnknownStatus = "unknown_status",
    Configuring = "configuring",
    Failed = "failed",
    Provisioning = "provisioning",
    Active = "active",
    Deprovisioning = "deprovisioning",
    Locked = "locked",
});

impl Encryption {
    /// AEAD transforms carry their own integrity (RFC 4106, 4309, 7634).
    pub fn is_aead(self) -> bool {
        matches!(
            self,
            Encryption::Aes128gcm
                | Encryption::Aes192gcm
                | Encryption::Aes256gcm
                | Encryption::Aes128ccm
                | Encryption::Aes256ccm
                | Encryption::Chacha20poly1305
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectionCipher {
    pub encryption: Encryption,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub integrity: Option<Integrity>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dh_group: Option<DhGroup>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BgpSession {
    pub routing_policy_id: String,
    /// Our interconnection address with its prefix (`169.254.0.1/30`).
    pub private_ip: String,
    /// The customer gateway's interconnection address with its prefix.
    pub peer_private_ip: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct VpnGatewayPublicConfig {
    pub ipam_ipv4_id: Option<String>,
    pub ipam_ipv6_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VpnGateway {
    pub id: String,
    pub project_id: String,
    pub organization_id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub status: VpnGatewayStatus,
    pub created_at: String,
    pub updated_at: String,
    pub gateway_type: String,
    pub private_network_id: String,
    pub ipam_private_ipv4_id: String,
    pub ipam_private_ipv6_id: String,
    pub asn: u32,
    /// Filled from the connections at read time; stored empty.
    pub connection_ids: Vec<String>,
    pub zone: String,
    pub region: String,
    pub public_config: Option<VpnGatewayPublicConfig>,
    /// The SDK's `VpnGatewayPrivateConfig` is an empty message; we only
    /// serve public gateways.
    pub private_config: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CustomerGateway {
    pub id: String,
    pub project_id: String,
    pub organization_id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub public_ipv4: Option<String>,
    pub public_ipv6: Option<String>,
    pub asn: u32,
    /// Filled from the connections at read time; stored empty.
    pub connection_ids: Vec<String>,
    pub region: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoutingPolicy {
    pub id: String,
    pub project_id: String,
    pub organization_id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub is_ipv6: bool,
    pub prefix_filter_in: Vec<String>,
    pub prefix_filter_out: Vec<String>,
    pub region: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Connection {
    pub id: String,
    pub project_id: String,
    pub organization_id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub status: ConnectionStatus,
    /// The family of the primary tunnel (the one `tunnel_status` reports).
    /// It must be shared by both gateways; the other shared family, if any,
    /// gets a second tunnel reported by `tunnel_status_ipv4/ipv6`.
    pub is_ipv6: bool,
    pub initiation_policy: InitiationPolicy,
    pub ikev2_ciphers: Vec<ConnectionCipher>,
    pub esp_ciphers: Vec<ConnectionCipher>,
    pub route_propagation_enabled: bool,
    pub vpn_gateway_id: String,
    pub customer_gateway_id: String,
    pub tunnel_status: TunnelStatus,
    pub tunnel_status_ipv4: Option<TunnelStatus>,
    pub tunnel_status_ipv6: Option<TunnelStatus>,
    pub bgp_status_ipv4: BgpSessionStatus,
    pub bgp_status_ipv6: BgpSessionStatus,
    pub bgp_session_ipv4: Option<BgpSession>,
    pub bgp_session_ipv6: Option<BgpSession>,
    pub secret_id: String,
    pub secret_revision: u32,
    pub region: String,
    /// Extension (not in the SDK, which ignores it): the packet sizes of the
    /// IPv4 tunnel (IPv4 outer addresses) while it has a CHILD SA, `null`
    /// otherwise (no tunnel of that family, not negotiated yet, or down).
    /// Written by the agent with the statuses.
    #[serde(default)]
    pub tunnel_mtu_ipv4: Option<TunnelMtu>,
    /// Extension: the same for the IPv6 tunnel.
    #[serde(default)]
    pub tunnel_mtu_ipv6: Option<TunnelMtu>,
}

/// Packet sizes through one tunnel, fixed when its CHILD SA is installed:
/// what the customer should set on their side of the tunnel (tunnel
/// interface MTU, MSS clamping) so that nothing needs fragmenting. An
/// extension of the connection resource (`tunnel_mtu_ipv4/ipv6`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct TunnelMtu {
    /// The largest inner IP packet the tunnel carries: the WAN MTU less
    /// the outer IP header (of the tunnel's family), the UDP header when
    /// NAT-T encapsulates, and the negotiated ESP suite's header, IV,
    /// padding alignment, trailer and ICV.
    pub inner_mtu: u32,
    /// The TCP MSS that fits `inner_mtu` for IPv4 inside the tunnel
    /// (`inner_mtu` − 40).
    pub tcp_mss_ipv4: u32,
    /// The same for IPv6 inside the tunnel (`inner_mtu` − 60).
    pub tcp_mss_ipv6: u32,
    /// Whether the gateway lowers the MSS of TCP SYNs and SYN-ACKs crossing
    /// the tunnel (both ways) to these values.
    pub mss_clamp: bool,
}

impl Connection {
    /// The reported packet sizes of the tunnel of `family`.
    pub fn tunnel_mtu(&self, family: Family) -> Option<TunnelMtu> {
        match family {
            Family::V4 => self.tunnel_mtu_ipv4,
            Family::V6 => self.tunnel_mtu_ipv6,
        }
    }

    pub fn routing_policy_ids(&self) -> impl Iterator<Item = &str> {
        self.bgp_session_ipv4
            .iter()
            .chain(self.bgp_session_ipv6.iter())
            .map(|s| s.routing_policy_id.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GatewayType {
    pub name: String,
    pub bandwidth: u64,
    pub allowed_connections: u32,
    pub zones: Vec<String>,
    pub region: String,
}

/// IP family of a tunnel or a BGP session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
    pub fn from_is_ipv6(is_ipv6: bool) -> Family {
        if is_ipv6 {
            Family::V6
        } else {
            Family::V4
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// The BGP interconnection subnet of one session: the first address is
/// ours (the VPN gateway's), the second the customer gateway's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interco {
    pub local: IpNet,
    pub peer: IpNet,
}

impl Interco {
    pub fn subnet(&self) -> IpNet {
        self.local.trunc()
    }
    pub fn overlaps(&self, other: &Interco) -> bool {
        let (a, b) = (self.subnet(), other.subnet());
        a.contains(&b.network()) || b.contains(&a.network())
    }
}

// ---------------------------------------------------------------------------
// Field rules
// ---------------------------------------------------------------------------

pub const MAX_NAME_LEN: usize = 255;
pub const MAX_TAG_LEN: usize = 128;
pub const MAX_TAGS: usize = 64;
pub const MAX_PREFIXES: usize = 1000;
pub const MAX_CIPHERS: usize = 32;

/// Names: non-empty, at most 255 characters, no control characters.
pub fn validate_name(field: &str, name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::constraint(field, "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(ApiError::constraint(
            field,
            format!("must be at most {MAX_NAME_LEN} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::constraint(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Tags: at most 64, each non-empty, at most 128 characters, no control
/// characters.
pub fn validate_tags(field: &str, tags: &[String]) -> Result<(), ApiError> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::constraint(
            field,
            format!("at most {MAX_TAGS} tags are allowed"),
        ));
    }
    for (i, t) in tags.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if t.is_empty() {
            return Err(ApiError::constraint(f, "a tag must not be empty"));
        }
        if t.chars().count() > MAX_TAG_LEN || t.chars().any(char::is_control) {
            return Err(ApiError::constraint(
                f,
                format!("a tag is at most {MAX_TAG_LEN} printable characters"),
            ));
        }
    }
    Ok(())
}

/// A customer gateway ASN: 2- or 4-octet (1..=4294967295), and neither
/// Scaleway's own (12876), ours, nor a reserved one (AS_TRANS 23456, 65535,
/// 4294967295).
pub fn validate_customer_asn(field: &str, asn: i64, our_asn: u32) -> Result<u32, ApiError> {
    let Ok(asn32) = u32::try_from(asn) else {
        return Err(ApiError::constraint(
            field,
            "must be a 2- or 4-octet ASN (1 to 4294967294)",
        ));
    };
    if asn32 == 0 {
        return Err(ApiError::constraint(
            field,
            "must be a 2- or 4-octet ASN (1 to 4294967294), not 0",
        ));
    }
    if asn32 == gateway_config::DEFAULT_ASN || asn32 == our_asn {
        return Err(ApiError::constraint(
            field,
            format!("must not be {asn32}, the VPN gateway's own ASN"),
        ));
    }
    if asn32 == 23456 || asn32 == 65535 || asn32 == u32::MAX {
        return Err(ApiError::constraint(
            field,
            format!("{asn32} is a reserved ASN (RFC 6793, RFC 7300)"),
        ));
    }
    Ok(asn32)
}

/// A public address of a customer gateway: of the field's family and
/// globally routable in shape (not unspecified, loopback, multicast,
/// link-local or broadcast).
pub fn validate_public_ip(field: &str, s: &str, family: Family) -> Result<IpAddr, ApiError> {
    let ip: IpAddr = s.parse().map_err(|_| {
        ApiError::constraint(field, format!("must be an {} address", family.name()))
    })?;
    if Family::of(&ip) != family {
        return Err(ApiError::constraint(
            field,
            format!("must be an {} address", family.name()),
        ));
    }
    let bad = match ip {
        IpAddr::V4(v4) => {
            v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_multicast()
                || v4.is_link_local()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    if bad {
        return Err(ApiError::constraint(
            field,
            "must be a unicast address usable as a tunnel endpoint (not unspecified, loopback, multicast or link-local)",
        ));
    }
    Ok(ip)
}

/// Routing policy prefixes: each a valid prefix of the policy's family,
/// without host bits.
pub fn validate_prefixes(
    field: &str,
    prefixes: &[String],
    family: Family,
) -> Result<Vec<IpNet>, ApiError> {
    if prefixes.len() > MAX_PREFIXES {
        return Err(ApiError::constraint(
            field,
            format!("at most {MAX_PREFIXES} prefixes are allowed"),
        ));
    }
    let mut out = Vec::with_capacity(prefixes.len());
    for (i, p) in prefixes.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let net: IpNet = p.parse().map_err(|_| {
            ApiError::constraint(
                f.clone(),
                format!("{p:?} is not a valid prefix (address/length)"),
            )
        })?;
        if Family::of(&net.addr()) != family {
            return Err(ApiError::constraint(
                f,
                format!(
                    "{p} is not an {} prefix, the routing policy's family",
                    family.name()
                ),
            ));
        }
        if net.trunc() != net {
            return Err(ApiError::constraint(
                f,
                format!("{p} has host bits set (did you mean {}?)", net.trunc()),
            ));
        }
        out.push(net);
    }
    Ok(out)
}

/// A cipher as received: strings, so unknown enum values name the field.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct CipherRequest {
    pub encryption: Option<String>,
    pub integrity: Option<String>,
    pub dh_group: Option<String>,
}

/// Which proposal list a cipher belongs to: IKE needs a PRF (so an
/// integrity algorithm even with AEAD... expressed here as: non-AEAD needs
/// integrity) and a DH group; ESP's DH group (PFS) is optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherUse {
    Ikev2,
    Esp,
}

pub fn validate_ciphers(
    field: &str,
    ciphers: &[CipherRequest],
    usage: CipherUse,
) -> Result<Vec<ConnectionCipher>, ApiError> {
    if ciphers.is_empty() {
        return Err(ApiError::constraint(
            field,
            "at least one cipher proposal is required",
        ));
    }
    if ciphers.len() > MAX_CIPHERS {
        return Err(ApiError::constraint(
            field,
            format!("at most {MAX_CIPHERS} cipher proposals are allowed"),
        ));
    }
    let mut out = Vec::with_capacity(ciphers.len());
    for (i, c) in ciphers.iter().enumerate() {
        let fe = format!("{field}[{i}].encryption");
        let Some(enc) = c.encryption.as_deref() else {
            return Err(ApiError::required(fe));
        };
        let encryption = Encryption::parse_field(&fe, enc)?;
        if encryption == Encryption::UnknownEncryption {
            return Err(ApiError::constraint(
                fe,
                "must name an encryption algorithm",
            ));
        }
        let fi = format!("{field}[{i}].integrity");
        let integrity = match c.integrity.as_deref() {
            None => None,
            Some(s) => match Integrity::parse_field(&fi, s)? {
                Integrity::UnknownIntegrity => None,
                x => Some(x),
            },
        };
        if integrity.is_none() && !encryption.is_aead() {
            return Err(ApiError::constraint(
                fi,
                format!("is required with the non-AEAD encryption {encryption}"),
            ));
        }
        let fd = format!("{field}[{i}].dh_group");
        let dh_group = match c.dh_group.as_deref() {
            None => None,
            Some(s) => match DhGroup::parse_field(&fd, s)? {
                DhGroup::UnknownDhgroup => None,
                x => Some(x),
            },
        };
        if dh_group.is_none() && usage == CipherUse::Ikev2 {
            return Err(ApiError::constraint(
                fd,
                "is required for IKEv2 proposals (the IKE SA needs a Diffie-Hellman group)",
            ));
        }
        out.push(ConnectionCipher {
            encryption,
            integrity,
            dh_group,
        });
    }
    Ok(out)
}

/// Parses `private_ip`/`peer_private_ip` of a `bgp_config_ipv4/ipv6`:
/// `address/length` (a bare address gets /30 in IPv4, /127 in IPv6); both
/// of the session's family, distinct, usable host addresses of the same
/// subnet (IPv4 at most /31, IPv6 at most /127).
pub fn parse_interco(
    field: &str,
    private_ip: &str,
    peer_private_ip: &str,
    family: Family,
) -> Result<Interco, ApiError> {
    let parse = |sub: &str, s: &str| -> Result<IpNet, ApiError> {
        let f = format!("{field}.{sub}");
        let net = if s.contains('/') {
            s.parse::<IpNet>().map_err(|_| {
                ApiError::constraint(f.clone(), format!("{s:?} is not an address/length"))
            })?
        } else {
            let ip: IpAddr = s
                .parse()
                .map_err(|_| ApiError::constraint(f.clone(), format!("{s:?} is not an address")))?;
            match ip {
                IpAddr::V4(a) => IpNet::V4(
                    Ipv4Net::new(a, 30)
                        .map_err(|_| ApiError::constraint(f.clone(), "invalid prefix length"))?,
                ),
                IpAddr::V6(a) => IpNet::V6(
                    Ipv6Net::new(a, 127)
                        .map_err(|_| ApiError::constraint(f.clone(), "invalid prefix length"))?,
                ),
            }
        };
        if Family::of(&net.addr()) != family {
            return Err(ApiError::constraint(
                f,
                format!("must be an {} address", family.name()),
            ));
        }
        let max = match family {
            Family::V4 => 31,
            Family::V6 => 127,
        };
        if net.prefix_len() > max || net.prefix_len() < 8 {
            return Err(ApiError::constraint(
                f,
                format!("prefix length must be between /8 and /{max}"),
            ));
        }
        if let IpNet::V4(n) = net {
            if n.prefix_len() < 31 && (n.addr() == n.network() || n.addr() == n.broadcast()) {
                return Err(ApiError::constraint(
                    f,
                    "must be a host address, not the subnet's network or broadcast address",
                ));
            }
        }
        Ok(net)
    };
    let local = parse("private_ip", private_ip)?;
    let peer = parse("peer_private_ip", peer_private_ip)?;
    if local.prefix_len() != peer.prefix_len() || local.trunc() != peer.trunc() {
        return Err(ApiError::constraint(
            format!("{field}.peer_private_ip"),
            "must be in the same subnet as private_ip",
        ));
    }
    if local.addr() == peer.addr() {
        return Err(ApiError::constraint(
            format!("{field}.peer_private_ip"),
            "must differ from private_ip",
        ));
    }
    Ok(Interco { local, peer })
}

/// IPv4 pool of the interconnection subnets: link-local, per the seed's
/// "private subnet" and what Scaleway hands out.
pub const INTERCO_V4_POOL: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(169, 254, 0, 0), 16) {
    Ok(n) => n,
    Err(_) => panic!("constant"),
};
/// IPv6 pool: a ULA /48 (RFC 4193) reserved for interconnection /127s.
pub const INTERCO_V6_POOL: Ipv6Net =
    match Ipv6Net::new(Ipv6Addr::new(0xfd53, 0x3273, 0x7670, 0, 0, 0, 0, 0), 48) {
        Ok(n) => n,
        Err(_) => panic!("constant"),
    };

/// Allocates the first interconnection subnet of `family` (IPv4 /30 with
/// .1 ours and .2 the peer's; IPv6 /127 with ::0 ours and ::1 the peer's)
/// that overlaps none of `taken`. One sort and one sweep over `taken`
/// (checking each candidate against every taken subnet made N creates
/// cost N² steps each).
pub fn allocate_interco(family: Family, taken: &[Interco]) -> Option<Interco> {
    // The pool as candidates: `base + i * unit` for i below `count`.
    let (base, unit, count) = match family {
        // 2^14 /30s in the /16.
        Family::V4 => (u128::from(u32::from(INTERCO_V4_POOL.network())), 4, 1 << 14),
        // Bounded: the first 2^16 /127s are plenty for one host.
        Family::V6 => (u128::from(INTERCO_V6_POOL.network()), 2, 1 << 16),
    };
    let mut used: Vec<(u128, u128)> = taken
        .iter()
        .filter(|t| Family::of(&t.local.addr()) == family)
        .map(|t| span(t.subnet()))
        .collect();
    used.sort_unstable();
    let end = base + unit * count;
    let mut at = base;
    for (first, last) in used {
        if last < at {
            continue;
        }
        if first >= at + unit {
            break;
        }
        // Overlaps the candidate: the next one after this subnet.
        let past = last.checked_add(1)?;
        at = base + (past - base).div_ceil(unit) * unit;
        if at >= end {
            return None;
        }
    }
    (at < end).then(|| interco_at(family, at))
}

/// The first and last address of a subnet, as numbers.
fn span(net: IpNet) -> (u128, u128) {
    match net {
        IpNet::V4(n) => (
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// The pool's interconnection subnet that starts at `net`.
fn interco_at(family: Family, net: u128) -> Interco {
    match family {
        Family::V4 => {
            let n = u32::try_from(net).unwrap_or(u32::MAX);
            let v4 = |a: u32| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), 30).unwrap_or_default());
            Interco {
                local: v4(n + 1),
                peer: v4(n + 2),
            }
        }
        Family::V6 => {
            let v6 = |a: u128| IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), 127).unwrap_or_default());
            Interco {
                local: v6(net),
                peer: v6(net + 1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: &ApiError) -> String {
        match e {
            ApiError::InvalidArguments(a) => a[0].argument_name.clone(),
            other => panic!("not invalid_arguments: {other:?}"),
        }
    }

    #[test]
    fn enums_round_trip_sdk_strings() {
        assert_eq!(
            Encryption::parse("chacha20poly1305"),
            Some(Encryption::Chacha20poly1305)
        );
        assert_eq!(DhGroup::Curve25519.as_str(), "curve25519");
        assert_eq!(VpnGatewayStatus::Deprovisioning.as_str(), "deprovisioning");
        let v = serde_json::to_value(TunnelStatus::UnknownTunnelStatus).unwrap();
        assert_eq!(v, "unknown_tunnel_status");
        let e = Integrity::parse_field("x.integrity", "md5").unwrap_err();
        assert_eq!(field_of(&e), "x.integrity");
        assert!(e.to_string().contains("sha256"));
    }

    #[test]
    fn tunnel_mtus_are_an_extension_older_rows_lack() {
        // A connection as stored before the extension: no tunnel_mtu_*.
        let old = serde_json::json!({
            "id": "c", "project_id": "p", "organization_id": "p", "name": "n",
            "tags": [], "created_at": "t", "updated_at": "t", "status": "active",
            "is_ipv6": false, "initiation_policy": "vpn_gateway",
            "ikev2_ciphers": [], "esp_ciphers": [{"encryption": "aes256gcm"}],
            "route_propagation_enabled": true, "vpn_gateway_id": "g",
            "customer_gateway_id": "cg", "tunnel_status": "up",
            "tunnel_status_ipv4": "up", "tunnel_status_ipv6": null,
            "bgp_status_ipv4": "up", "bgp_status_ipv6": "disabled",
            "bgp_session_ipv4": null, "bgp_session_ipv6": null,
            "secret_id": "s", "secret_revision": 1, "region": "fr-par"
        });
        let mut c: Connection = serde_json::from_value(old.clone()).unwrap();
        assert_eq!((c.tunnel_mtu_ipv4, c.tunnel_mtu_ipv6), (None, None));
        c.tunnel_mtu_ipv4 = Some(TunnelMtu {
            inner_mtu: 1438,
            tcp_mss_ipv4: 1398,
            tcp_mss_ipv6: 1378,
            mss_clamp: true,
        });
        assert_eq!(c.tunnel_mtu(Family::V4).map(|m| m.inner_mtu), Some(1438));
        assert_eq!(c.tunnel_mtu(Family::V6), None);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v["tunnel_mtu_ipv4"],
            serde_json::json!({"inner_mtu": 1438, "tcp_mss_ipv4": 1398,
                               "tcp_mss_ipv6": 1378, "mss_clamp": true})
        );
        assert!(v["tunnel_mtu_ipv6"].is_null());
        // Every field the SDK reads is still there, unchanged: only the two
        // extension fields were added.
        let o = v.as_object().unwrap();
        for (k, val) in old.as_object().unwrap() {
            assert_eq!(o.get(k), Some(val), "{k}");
        }
        assert_eq!(o.len(), old.as_object().unwrap().len() + 2);
        let back: Connection = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn names_and_tags() {
        assert!(validate_name("name", "gw").is_ok());
        assert_eq!(field_of(&validate_name("name", " ").unwrap_err()), "name");
        assert!(validate_name("name", &"x".repeat(256)).is_err());
        assert!(validate_name("name", "a\nb").is_err());
        assert!(validate_tags("tags", &["a".into()]).is_ok());
        assert_eq!(
            field_of(&validate_tags("tags", &["a".into(), String::new()]).unwrap_err()),
            "tags[1]"
        );
        assert!(validate_tags("tags", &["x".repeat(129)]).is_err());
        assert!(validate_tags("tags", &vec!["a".to_string(); 65]).is_err());
    }

    #[test]
    fn customer_asn_rules() {
        assert_eq!(validate_customer_asn("asn", 65000, 12876).unwrap(), 65000);
        assert_eq!(
            validate_customer_asn("asn", 4_200_000_000, 12876).unwrap(),
            4_200_000_000
        );
        for bad in [0, -1, 12876, 23456, 65535, 4_294_967_295, 4_294_967_296] {
            let e = validate_customer_asn("asn", bad, 12876).unwrap_err();
            assert_eq!(field_of(&e), "asn", "{bad}");
        }
        // Our configured ASN is refused too.
        assert!(validate_customer_asn("asn", 64512, 64512).is_err());
        assert!(validate_customer_asn("asn", 12876, 64512).is_err());
    }

    #[test]
    fn public_ip_rules() {
        assert!(validate_public_ip("ipv4_public", "203.0.113.7", Family::V4).is_ok());
        assert!(validate_public_ip("ipv6_public", "2001:db8::7", Family::V6).is_ok());
        for (s, fam) in [
            ("2001:db8::7", Family::V4),
            ("203.0.113.7", Family::V6),
            ("nope", Family::V4),
            ("0.0.0.0", Family::V4),
            ("127.0.0.1", Family::V4),
            ("224.0.0.1", Family::V4),
            ("169.254.1.1", Family::V4),
            ("::1", Family::V6),
            ("fe80::1", Family::V6),
            ("ff02::1", Family::V6),
        ] {
            assert!(validate_public_ip("f", s, fam).is_err(), "{s}");
        }
    }

    #[test]
    fn prefix_rules() {
        let ok = validate_prefixes("prefix_filter_in", &["10.0.0.0/8".into()], Family::V4).unwrap();
        assert_eq!(ok.len(), 1);
        let e = validate_prefixes(
            "prefix_filter_in",
            &["10.0.0.0/8".into(), "2001:db8::/32".into()],
            Family::V4,
        )
        .unwrap_err();
        assert_eq!(field_of(&e), "prefix_filter_in[1]");
        assert!(e.to_string().contains("IPv4"));
        assert!(validate_prefixes("p", &["10.0.0.1/8".into()], Family::V4)
            .unwrap_err()
            .to_string()
            .contains("host bits"));
        assert!(validate_prefixes("p", &["10.0.0.0".into()], Family::V4).is_err());
        assert!(validate_prefixes("p", &["10.0.0.0/33".into()], Family::V4).is_err());
        assert!(validate_prefixes("p", &["10.0.0.0/8".into()], Family::V6).is_err());
    }

    fn c(enc: &str, int: Option<&str>, dh: Option<&str>) -> CipherRequest {
        CipherRequest {
            encryption: Some(enc.into()),
            integrity: int.map(Into::into),
            dh_group: dh.map(Into::into),
        }
    }

    #[test]
    fn cipher_rules() {
        let ok = validate_ciphers(
            "ikev2_ciphers",
            &[
                c("aes256", Some("sha256"), Some("ecp256")),
                c("aes256gcm", None, Some("curve25519")),
            ],
            CipherUse::Ikev2,
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert!(
            validate_ciphers("esp_ciphers", &[c("aes256gcm", None, None)], CipherUse::Esp).is_ok()
        );
        let e = validate_ciphers("ikev2_ciphers", &[], CipherUse::Ikev2).unwrap_err();
        assert_eq!(field_of(&e), "ikev2_ciphers");
        let e = validate_ciphers("ikev2_ciphers", &[c("des", None, None)], CipherUse::Ikev2)
            .unwrap_err();
        assert_eq!(field_of(&e), "ikev2_ciphers[0].encryption");
        let e = validate_ciphers(
            "ikev2_ciphers",
            &[c("unknown_encryption", None, None)],
            CipherUse::Ikev2,
        )
        .unwrap_err();
        assert_eq!(field_of(&e), "ikev2_ciphers[0].encryption");
        let e = validate_ciphers("esp_ciphers", &[c("aes128", None, None)], CipherUse::Esp)
            .unwrap_err();
        assert_eq!(field_of(&e), "esp_ciphers[0].integrity");
        let e = validate_ciphers(
            "esp_ciphers",
            &[c("aes128", Some("md5"), None)],
            CipherUse::Esp,
        )
        .unwrap_err();
        assert_eq!(field_of(&e), "esp_ciphers[0].integrity");
        let e = validate_ciphers(
            "ikev2_ciphers",
            &[c("aes128gcm", None, None)],
            CipherUse::Ikev2,
        )
        .unwrap_err();
        assert_eq!(field_of(&e), "ikev2_ciphers[0].dh_group");
        let e = validate_ciphers(
            "esp_ciphers",
            &[c("aes128gcm", None, Some("modp1024"))],
            CipherUse::Esp,
        )
        .unwrap_err();
        assert_eq!(field_of(&e), "esp_ciphers[0].dh_group");
        let missing = CipherRequest::default();
        let e = validate_ciphers("esp_ciphers", &[missing], CipherUse::Esp).unwrap_err();
        assert_eq!(field_of(&e), "esp_ciphers[0].encryption");
        assert!(validate_ciphers(
            "esp_ciphers",
            &vec![c("aes128gcm", None, None); 33],
            CipherUse::Esp
        )
        .is_err());
    }

    #[test]
    fn interco_rules() {
        let i = parse_interco(
            "bgp_config_ipv4",
            "169.254.10.1/30",
            "169.254.10.2/30",
            Family::V4,
        )
        .unwrap();
        assert_eq!(i.subnet().to_string(), "169.254.10.0/30");
        let i = parse_interco(
            "bgp_config_ipv4",
            "169.254.10.1",
            "169.254.10.2",
            Family::V4,
        )
        .unwrap();
        assert_eq!(i.local.prefix_len(), 30);
        assert!(parse_interco("b", "169.254.10.0/31", "169.254.10.1/31", Family::V4).is_ok());
        let i6 = parse_interco("bgp_config_ipv6", "fd00::/127", "fd00::1/127", Family::V6).unwrap();
        assert_eq!(i6.local.prefix_len(), 127);
        // Wrong family, different subnets, same address, network address, /32.
        let e =
            parse_interco("bgp_config_ipv4", "fd00::/127", "fd00::1/127", Family::V4).unwrap_err();
        assert_eq!(field_of(&e), "bgp_config_ipv4.private_ip");
        let e = parse_interco(
            "bgp_config_ipv4",
            "169.254.0.1/30",
            "169.254.0.6/30",
            Family::V4,
        )
        .unwrap_err();
        assert_eq!(field_of(&e), "bgp_config_ipv4.peer_private_ip");
        assert!(parse_interco("b", "169.254.0.1/30", "169.254.0.1/30", Family::V4).is_err());
        assert!(parse_interco("b", "169.254.0.0/30", "169.254.0.1/30", Family::V4).is_err());
        assert!(parse_interco("b", "169.254.0.1/32", "169.254.0.1/32", Family::V4).is_err());
        assert!(parse_interco("b", "garbage", "169.254.0.1/30", Family::V4).is_err());
    }

    #[test]
    fn interco_allocation_never_overlaps() {
        let mut taken = Vec::new();
        for _ in 0..50 {
            let c = allocate_interco(Family::V4, &taken).unwrap();
            assert!(IpNet::V4(INTERCO_V4_POOL).contains(&c.local.addr()));
            assert!(!taken.iter().any(|t: &Interco| t.overlaps(&c)));
            taken.push(c);
        }
        // A caller-given /29 blocks two /30s.
        let given = parse_interco("b", "169.254.0.1/29", "169.254.0.2/29", Family::V4).unwrap();
        let c = allocate_interco(Family::V4, &[given]).unwrap();
        assert_eq!(c.local.to_string(), "169.254.0.9/30");
        assert_eq!(c.peer.to_string(), "169.254.0.10/30");
        let mut t6 = Vec::new();
        for _ in 0..10 {
            let c = allocate_interco(Family::V6, &t6).unwrap();
            assert!(IpNet::V6(INTERCO_V6_POOL).contains(&c.peer.addr()));
            assert!(!t6.iter().any(|t: &Interco| t.overlaps(&c)));
            t6.push(c);
        }
    }

    /// The sweep picks what checking each candidate against every taken
    /// subnet picks, over random mixes of allocated, caller-given (any
    /// size, inside the pool or not) and other-family subnets, and an
    /// exhausted pool gives none.
    #[test]
    fn interco_allocation_is_the_first_free_subnet() {
        fn naive(family: Family, taken: &[Interco]) -> Option<Interco> {
            let (base, unit, count) = match family {
                Family::V4 => (
                    u128::from(u32::from(INTERCO_V4_POOL.network())),
                    4,
                    1u128 << 14,
                ),
                Family::V6 => (u128::from(INTERCO_V6_POOL.network()), 2, 1 << 16),
            };
            (0..count)
                .map(|i| interco_at(family, base + i * unit))
                .find(|c| !taken.iter().any(|t| t.overlaps(c)))
        }
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..300 {
            let mut taken = Vec::new();
            for _ in 0..(next() % 40) {
                let r = next();
                let c = match r % 4 {
                    0 => allocate_interco(Family::V4, &taken),
                    1 => allocate_interco(Family::V6, &taken),
                    2 => {
                        // A caller-given IPv4 subnet near the pool's start,
                        // /26 to /31, sometimes just outside the pool.
                        let len = 26 + (next() % 6) as u8;
                        let a = u32::from(Ipv4Addr::new(169, 254, 0, 0))
                            .wrapping_add((next() % 300) as u32)
                            .wrapping_sub(if r % 8 == 2 { 256 } else { 0 });
                        let n = Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().trunc();
                        let hosts: Vec<Ipv4Addr> = n.hosts().take(2).collect();
                        (hosts.len() == 2).then(|| Interco {
                            local: IpNet::V4(Ipv4Net::new(hosts[0], len).unwrap()),
                            peer: IpNet::V4(Ipv4Net::new(hosts[1], len).unwrap()),
                        })
                    }
                    _ => {
                        let len = 120 + (next() % 8) as u8;
                        let a = u128::from(INTERCO_V6_POOL.network()) + u128::from(next() % 500);
                        let n = Ipv6Net::new(Ipv6Addr::from(a), len).unwrap().trunc();
                        let first = u128::from(n.network());
                        Some(Interco {
                            local: IpNet::V6(Ipv6Net::new(Ipv6Addr::from(first), len).unwrap()),
                            peer: IpNet::V6(Ipv6Net::new(Ipv6Addr::from(first + 1), len).unwrap()),
                        })
                    }
                };
                taken.extend(c);
            }
            for family in [Family::V4, Family::V6] {
                assert_eq!(
                    allocate_interco(family, &taken),
                    naive(family, &taken),
                    "round {round}, {family:?}, taken {taken:?}"
                );
            }
        }
        // The whole IPv4 pool given away as one subnet: nothing left.
        let all = parse_interco("b", "169.254.0.1/16", "169.254.0.2/16", Family::V4).unwrap();
        assert_eq!(allocate_interco(Family::V4, &[all]), None);
        assert!(allocate_interco(Family::V6, &[all]).is_some());
    }
}
