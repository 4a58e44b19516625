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
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct CipherRequest {
    pub encryption: Option<String>,
    pub integrity: Option<String>,
    pub dh_group: Option<String>,
}

impl CipherRequest {
    /// The compact form `s2sctl --ike/--esp` take: names joined by `-`,
    /// `/` or `+` (`aes256-sha256-modp2048`, `aes256gcm/ecp256`), each an
    /// encryption, integrity or DH group name, one of each at most, an
    /// encryption always.
    pub fn parse_compact(s: &str) -> Result<Self, String> {
        let mut out = CipherRequest::default();
        for part in s.split(['-', '/', '+']).filter(|p| !p.is_empty()) {
            let (slot, key) = if Encryption::parse(part).is_some() {
                (&mut out.encryption, "encryption")
            } else if Integrity::parse(part).is_some() {
                (&mut out.integrity, "integrity")
            } else if DhGroup::parse(part).is_some() {
                (&mut out.dh_group, "dh_group")
            } else {
                return Err(format!(
                    "{part:?} in cipher {s:?} is not an encryption, integrity or DH group name"
                ));
            };
            if slot.replace(part.to_owned()).is_some() {
                return Err(format!("cipher {s:?} names two {key}s"));
            }
        }
        if out.encryption.is_none() {
            return Err(format!("cipher {s:?} has no encryption"));
        }
        Ok(out)
    }
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
mod tests;
