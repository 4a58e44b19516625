//! The desired running state, computed purely from the store's desired
//! state and the host config: which tunnels (one per IP family both gateways
//! have), which TUN interface and addresses each gets, and which BGP sessions
//! run over which tunnel. No I/O here, so every rule is unit-tested.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use gateway_api::model::{
    ConnectionCipher, Family, InitiationPolicy, TunnelStatus, VpnGatewayStatus,
};
use gateway_api::DesiredState;
use gateway_config::Config;
use ipnet::IpNet;

/// A tunnel's name (`<connection id>/v4` or `/v6`): the IKE connection
/// name and the runtime's map key.
pub type TunnelName = String;

/// The IKE connection name of a tunnel, echoed in every IKE action.
pub fn tunnel_name(connection: &str, family: Family) -> TunnelName {
    format!("{connection}/{}", family_tag(family))
}

fn family_tag(f: Family) -> &'static str {
    match f {
        Family::V4 => "v4",
        Family::V6 => "v6",
    }
}

/// TUN interface name: at most 15 bytes (IFNAMSIZ - 1), stable for a
/// connection and family.
pub fn tun_name(connection: &str, family: Family) -> String {
    let short: String = connection
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(8)
        .collect();
    format!("s2s{short}{}", family_tag(family))
}

/// Whether `name` has the shape of [`tun_name`]'s names.
pub fn is_tun_name(name: &str) -> bool {
    let Some(mid) = name
        .strip_prefix("s2s")
        .and_then(|r| r.strip_suffix("v4").or_else(|| r.strip_suffix("v6")))
    else {
        return false;
    };
    mid.len() <= 8 && mid.chars().all(|c| c.is_ascii_hexdigit())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelPlan {
    pub name: TunnelName,
    pub connection: String,
    pub family: Family,
    pub local: IpAddr,
    pub remote: IpAddr,
    pub tun: String,
    /// Our interconnection addresses carried by this tunnel (with prefix).
    pub interco: Vec<IpNet>,
    pub initiate: bool,
    pub ikev2_ciphers: Vec<ConnectionCipher>,
    pub esp_ciphers: Vec<ConnectionCipher>,
    /// What the IKE SA depends on: a change re-creates the IKE connection
    /// (new PSK revision, other proposals, other initiation policy).
    pub ike_fingerprint: String,
    /// Clamp the TCP MSS through this tunnel (config, per gateway type).
    /// Changes apply in place.
    pub mss_clamp: bool,
    /// The VPN gateway the tunnel belongs to, and its type's bandwidth
    /// (bits per second, both ways, shared by the gateway's tunnels; 0:
    /// unlimited). Changes of the rate apply in place.
    pub vpn_gateway: String,
    pub bandwidth: u64,
    /// Inner sources the customer may send through this tunnel: its
    /// routing policies' `prefix_filter_in` and the BGP peers'
    /// interconnection subnets (both families: after a failover either
    /// tunnel carries both). Changes apply in place.
    pub allowed_sources: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPlan {
    /// `connection/v4` for the IPv4 session, `connection/v6` for IPv6.
    pub name: String,
    pub connection: String,
    pub family: Family,
    /// The tunnel the session runs through.
    pub tunnel: TunnelName,
    pub local: IpNet,
    pub peer: IpNet,
    pub local_asn: u32,
    pub peer_asn: u32,
    pub prefix_filter_in: Vec<String>,
    pub prefix_filter_out: Vec<String>,
    pub route_propagation: bool,
    /// The VPC prefixes to announce (before `prefix_filter_out`).
    pub exported: Vec<IpNet>,
    pub max_prefixes: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub tunnels: BTreeMap<TunnelName, TunnelPlan>,
    pub sessions: BTreeMap<String, SessionPlan>,
    /// Tunnels the store last reported up. Read once, when the daemon
    /// starts: a restart sends no DELETE, so their customers probably
    /// still hold SAs with us that we no longer have.
    pub resume: BTreeSet<TunnelName>,
}

/// Computes the plan. Only connections of active VPN gateways get tunnels.
pub fn plan(state: &DesiredState, config: &Config) -> Plan {
    let mut out = Plan::default();
    for spec in &state.connections {
        let vgw = &spec.vpn_gateway;
        if vgw.status != VpnGatewayStatus::Active || spec.tunnels.is_empty() {
            continue;
        }
        let conn = &spec.connection;
        let ike_fingerprint = format!(
            "{}#{}|{:?}|{:?}|{:?}",
            conn.secret_id,
            conn.secret_revision,
            conn.initiation_policy,
            conn.ikev2_ciphers,
            conn.esp_ciphers
        );
        let allowed_sources = allowed_sources(spec);
        for t in &spec.tunnels {
            let name = tunnel_name(&conn.id, t.family);
            let reported = match t.family {
                Family::V4 => conn.tunnel_status_ipv4,
                Family::V6 => conn.tunnel_status_ipv6,
            };
            if reported.or(t.primary.then_some(conn.tunnel_status)) == Some(TunnelStatus::Up) {
                out.resume.insert(name.clone());
            }
            out.tunnels.insert(
                name.clone(),
                TunnelPlan {
                    name,
                    connection: conn.id.clone(),
                    family: t.family,
                    local: t.local,
                    remote: t.remote,
                    tun: tun_name(&conn.id, t.family),
                    interco: Vec::new(),
                    initiate: conn.initiation_policy == InitiationPolicy::VpnGateway,
                    ikev2_ciphers: conn.ikev2_ciphers.clone(),
                    esp_ciphers: conn.esp_ciphers.clone(),
                    ike_fingerprint: ike_fingerprint.clone(),
                    mss_clamp: config.mss_clamp(&vgw.gateway_type),
                    vpn_gateway: vgw.id.clone(),
                    bandwidth: config
                        .gateway_type(&vgw.gateway_type)
                        .map_or(0, |t| t.bandwidth),
                    allowed_sources: allowed_sources.clone(),
                },
            );
        }
        let exported_of = |f: Family| -> Vec<IpNet> {
            spec.private_network
                .as_ref()
                .map(|pn| match f {
                    Family::V4 => pn.ipv4_subnet.map(IpNet::V4).into_iter().collect(),
                    Family::V6 => pn.ipv6_subnet.map(IpNet::V6).into_iter().collect(),
                })
                .unwrap_or_default()
        };
        let sessions = [
            (Family::V4, &spec.routing_policy_ipv4, spec.interco_ipv4),
            (Family::V6, &spec.routing_policy_ipv6, spec.interco_ipv6),
        ];
        for (family, policy, interco) in sessions {
            let (Some(policy), Some(interco)) = (policy, interco) else {
                continue;
            };
            // A session runs through the tunnel of its own family when there
            // is one, else through the primary tunnel.
            let carrier = spec
                .tunnels
                .iter()
                .find(|t| t.family == family)
                .unwrap_or(&spec.tunnels[0])
                .family;
            let tunnel = tunnel_name(&conn.id, carrier);
            if let Some(t) = out.tunnels.get_mut(&tunnel) {
                t.interco.push(interco.local);
            }
            let name = tunnel_name(&conn.id, family);
            out.sessions.insert(
                name.clone(),
                SessionPlan {
                    name,
                    connection: conn.id.clone(),
                    family,
                    tunnel,
                    local: interco.local,
                    peer: interco.peer,
                    local_asn: if vgw.asn != 0 {
                        vgw.asn
                    } else {
                        config.gateway.asn
                    },
                    peer_asn: spec.customer_gateway.asn,
                    prefix_filter_in: policy.prefix_filter_in.clone(),
                    prefix_filter_out: policy.prefix_filter_out.clone(),
                    route_propagation: conn.route_propagation_enabled,
                    exported: exported_of(family),
                    max_prefixes: config.gateway.bgp_max_prefixes,
                },
            );
        }
    }
    out
}

/// What a connection's customer may send from: the prefixes its routing
/// policies accept (`prefix_filter_in`) and its interconnection subnets
/// (where its BGP speaker sits). Sorted, without duplicates.
fn allowed_sources(spec: &gateway_api::ConnectionSpec) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = [&spec.routing_policy_ipv4, &spec.routing_policy_ipv6]
        .into_iter()
        .flatten()
        .flat_map(|p| p.prefix_filter_in.iter())
        .filter_map(|s| s.parse::<IpNet>().ok())
        .map(|n| n.trunc())
        .chain(
            [spec.interco_ipv4, spec.interco_ipv6]
                .into_iter()
                .flatten()
                .map(|i| i.peer.trunc()),
        )
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tun_names_are_recognised() {
        for f in [Family::V4, Family::V6] {
            assert!(is_tun_name(&tun_name("8a6f4e3c-0b1d", f)));
            assert!(is_tun_name(&tun_name("", f)));
        }
        for other in [
            "s2sv5",
            "eth0",
            "s2s8a6f4e3c0v4",
            "s2sxyzv4",
            "s2s8a6fv4x",
            "lan0",
        ] {
            assert!(!is_tun_name(other), "{other}");
        }
    }

    #[test]
    fn tun_names_fit_ifnamsiz() {
        let n = tun_name("8a6f4e3c-0b1d-4c6e-9f5a-2d7b8c9e0f11", Family::V6);
        assert_eq!(n, "s2s8a6f4e3cv6");
        assert!(n.len() <= 15);
        assert_ne!(
            tun_name("8a6f4e3c-0b1d", Family::V4),
            tun_name("8a6f4e3c-0b1d", Family::V6)
        );
    }

    #[test]
    fn tunnel_names_distinguish_families() {
        assert_eq!(tunnel_name("c1", Family::V4), "c1/v4");
        assert_eq!(tunnel_name("c1", Family::V6), "c1/v6");
    }
}
