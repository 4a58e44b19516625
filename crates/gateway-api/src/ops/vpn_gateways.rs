//! VPN gateway types and VPN gateways: creation (public IPs from the host or IPAM), reads, lists, updates, deletion.

use super::*;

/// A gateway type this host offers, or `gateway_type`'s error naming them.
fn known_type<'a>(
    config: &'a Config,
    name: &str,
) -> Result<&'a gateway_config::GatewayType, ApiError> {
    config.gateway_type(name).ok_or_else(|| {
        ApiError::unknown(
            "gateway_type",
            format!(
                "unknown gateway type {name:?}, expected one of: {}",
                config
                    .gateway_types
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

pub fn gateway_types(config: &Config) -> Vec<GatewayType> {
    config
        .gateway_types
        .iter()
        .map(|t| GatewayType {
            name: t.name.clone(),
            bandwidth: t.bandwidth,
            allowed_connections: t.allowed_connections,
            zones: vec![default_zone(config)],
            region: config.gateway.region.clone(),
        })
        .collect()
}

pub(super) fn default_zone(config: &Config) -> String {
    format!("{}-1", config.gateway.region)
}

pub fn list_vpn_gateway_types(config: &Config, q: &ListQuery) -> Result<Value, ApiError> {
    let (page, size) = q.page()?;
    let (items, total) = paginate(gateway_types(config), page, size);
    Ok(json!({"gateway_types": to_value(&items)?, "total_count": total}))
}

// ---------------------------------------------------------------------------
// VPN gateways
// ---------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct IpamPair {
    pub ipam_ipv4_id: Option<String>,
    pub ipam_ipv6_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct SingleIpTunnel {
    pub ipam_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct PublicTunnelConfig {
    pub single_ipv4_tunnel: Option<SingleIpTunnel>,
    pub single_ipv6_tunnel: Option<SingleIpTunnel>,
    pub dual_ipv4v6_tunnel: Option<IpamPair>,
}

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct CreateVpnGatewayRequest {
    pub name: Option<String>,
    pub gateway_type: Option<String>,
    pub private_network_id: Option<String>,
    pub project_id: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    pub public_config: Option<IpamPair>,
    pub public_tunnel_config: Option<PublicTunnelConfig>,
    pub ipam_private_ipv4_id: Option<String>,
    pub ipam_private_ipv6_id: Option<String>,
    pub zone: Option<String>,
}

/// Public IP (IPAM) ids: IPv4, IPv6.
type IpamIds = (Option<String>, Option<String>);

/// The public IP ids a gateway asks for, from either of the SDK's shapes.
pub(super) fn requested_public_ips(
    req: &CreateVpnGatewayRequest,
) -> Result<Option<IpamIds>, ApiError> {
    match (&req.public_config, &req.public_tunnel_config) {
        (Some(_), Some(_)) => Err(ApiError::constraint(
            "public_config",
            "at most one of public_config and public_tunnel_config may be set",
        )),
        (Some(p), None) => Ok(Some((p.ipam_ipv4_id.clone(), p.ipam_ipv6_id.clone()))),
        (None, Some(t)) => {
            let n = usize::from(t.single_ipv4_tunnel.is_some())
                + usize::from(t.single_ipv6_tunnel.is_some())
                + usize::from(t.dual_ipv4v6_tunnel.is_some());
            if n != 1 {
                return Err(ApiError::constraint(
                    "public_tunnel_config",
                    "exactly one of single_ipv4_tunnel, single_ipv6_tunnel and dual_ipv4v6_tunnel must be set",
                ));
            }
            if let Some(s) = &t.single_ipv4_tunnel {
                let id = s.ipam_id.clone().ok_or_else(|| {
                    ApiError::required("public_tunnel_config.single_ipv4_tunnel.ipam_id")
                })?;
                return Ok(Some((Some(id), None)));
            }
            if let Some(s) = &t.single_ipv6_tunnel {
                let id = s.ipam_id.clone().ok_or_else(|| {
                    ApiError::required("public_tunnel_config.single_ipv6_tunnel.ipam_id")
                })?;
                return Ok(Some((None, Some(id))));
            }
            let d = t
                .dual_ipv4v6_tunnel
                .as_ref()
                .ok_or_else(|| ApiError::required("public_tunnel_config.dual_ipv4v6_tunnel"))?;
            match (&d.ipam_ipv4_id, &d.ipam_ipv6_id) {
                (Some(a), Some(b)) => Ok(Some((Some(a.clone()), Some(b.clone())))),
                (None, _) => Err(ApiError::required(
                    "public_tunnel_config.dual_ipv4v6_tunnel.ipam_ipv4_id",
                )),
                (_, None) => Err(ApiError::required(
                    "public_tunnel_config.dual_ipv4v6_tunnel.ipam_ipv6_id",
                )),
            }
        }
        (None, None) => Ok(None),
    }
}

/// The public addresses of a VPN gateway, resolved through the config.
pub fn vpn_gateway_addresses(config: &Config, g: &VpnGateway) -> (Option<IpAddr>, Option<IpAddr>) {
    let pc = g.public_config.clone().unwrap_or_default();
    let get = |id: Option<String>| id.and_then(|id| config.public_ip(&id).map(|p| p.address));
    (get(pc.ipam_ipv4_id), get(pc.ipam_ipv6_id))
}

pub(super) fn customer_addresses(g: &CustomerGateway) -> (Option<IpAddr>, Option<IpAddr>) {
    (
        g.public_ipv4.as_deref().and_then(|s| s.parse().ok()),
        g.public_ipv6.as_deref().and_then(|s| s.parse().ok()),
    )
}

/// The tunnel families of a connection: those both gateways have an
/// address of.
pub fn tunnel_families(config: &Config, vgw: &VpnGateway, cgw: &CustomerGateway) -> Vec<Family> {
    let (v4, v6) = vpn_gateway_addresses(config, vgw);
    let (c4, c6) = customer_addresses(cgw);
    let mut f = Vec::new();
    if v4.is_some() && c4.is_some() {
        f.push(Family::V4);
    }
    if v6.is_some() && c6.is_some() {
        f.push(Family::V6);
    }
    f
}

pub fn create_vpn_gateway(
    tx: &mut Tx<'_>,
    config: &Config,
    req: CreateVpnGatewayRequest,
) -> Result<Value, ApiError> {
    let name = req.name.clone().ok_or_else(|| ApiError::required("name"))?;
    validate_name("name", &name)?;
    let tags = req.tags.clone().unwrap_or_default();
    validate_tags("tags", &tags)?;
    let gateway_type = req
        .gateway_type
        .clone()
        .ok_or_else(|| ApiError::required("gateway_type"))?;
    known_type(config, &gateway_type)?;
    let pn_id = req
        .private_network_id
        .clone()
        .ok_or_else(|| ApiError::required("private_network_id"))?;
    if config.private_network(&pn_id).is_none() {
        return Err(ApiError::unknown(
            "private_network_id",
            format!(
                "private network {pn_id} is not attached to this host (not in the daemon's config)"
            ),
        ));
    }
    let zone = req.zone.clone().unwrap_or_else(|| default_zone(config));
    if zone != default_zone(config) {
        return Err(ApiError::constraint(
            "zone",
            format!(
                "must be {} (the zone this host serves)",
                default_zone(config)
            ),
        ));
    }
    let project_id = project(req.project_id.clone())?;
    let existing = tx.vpn_gateways()?;
    let used = |id: &str| {
        existing.iter().any(|g| {
            g.public_config.as_ref().is_some_and(|p| {
                p.ipam_ipv4_id.as_deref() == Some(id) || p.ipam_ipv6_id.as_deref() == Some(id)
            })
        })
    };
    let (v4, v6) = match requested_public_ips(&req)? {
        Some((v4, v6)) => {
            if v4.is_none() && v6.is_none() {
                return Err(ApiError::constraint(
                    "public_config",
                    "at least one of ipam_ipv4_id and ipam_ipv6_id is required",
                ));
            }
            for (field, id, fam) in [
                ("public_config.ipam_ipv4_id", &v4, Family::V4),
                ("public_config.ipam_ipv6_id", &v6, Family::V6),
            ] {
                let Some(id) = id else { continue };
                let Some(ip) = config.public_ip(id) else {
                    return Err(ApiError::unknown(
                        field,
                        format!("public IP {id} is not an address of this host (not in the daemon's config)"),
                    ));
                };
                if Family::of(&ip.address) != fam {
                    return Err(ApiError::constraint(
                        field,
                        format!(
                            "public IP {id} is {}, an {} /{} is required",
                            ip.address,
                            fam.name(),
                            if fam == Family::V4 { 32 } else { 128 }
                        ),
                    ));
                }
                if used(id) {
                    return Err(ApiError::constraint(
                        field,
                        format!("public IP {id} is already used by another VPN gateway"),
                    ));
                }
            }
            (v4, v6)
        }
        None => {
            // Like Scaleway booking IPs: take a free address of each family.
            let free = |fam: Family| {
                config
                    .public_ips
                    .iter()
                    .find(|p| Family::of(&p.address) == fam && !used(&p.id))
                    .map(|p| p.id.clone())
            };
            let (v4, v6) = (free(Family::V4), free(Family::V6));
            if v4.is_none() && v6.is_none() {
                return Err(ApiError::constraint(
                    "public_config",
                    "no public IP of this host is free: every configured public IP is used by a VPN gateway",
                ));
            }
            (v4, v6)
        }
    };
    let id = crate::new_id()?;
    let now = crate::now_rfc3339();
    let g = VpnGateway {
        id: id.clone(),
        organization_id: config.organization_of(&project_id),
        project_id,
        name,
        tags,
        status: VpnGatewayStatus::Provisioning,
        created_at: now.clone(),
        updated_at: now,
        gateway_type,
        private_network_id: pn_id,
        ipam_private_ipv4_id: req
            .ipam_private_ipv4_id
            .clone()
            .unwrap_or_else(|| format!("{id}-ipv4")),
        ipam_private_ipv6_id: req
            .ipam_private_ipv6_id
            .clone()
            .unwrap_or_else(|| format!("{id}-ipv6")),
        asn: config.gateway.asn,
        connection_ids: vec![],
        zone,
        region: config.gateway.region.clone(),
        public_config: Some(VpnGatewayPublicConfig {
            ipam_ipv4_id: v4,
            ipam_ipv6_id: v6,
        }),
        private_config: None,
    };
    tx.put_vpn_gateway(&g)?;
    to_value(&g)
}

pub fn get_vpn_gateway(tx: &mut Tx<'_>, id: &str) -> Result<Value, ApiError> {
    let g = tx
        .vpn_gateway(id)?
        .ok_or_else(|| ApiError::not_found("vpn_gateway", id))?;
    to_value(&render_vpn_gateway(tx, g)?)
}

pub fn list_vpn_gateways(tx: &mut Tx<'_>, q: &ListQuery) -> Result<Value, ApiError> {
    let (page, size) = q.page()?;
    let order = q.order_by(&[
        "created_at_asc",
        "created_at_desc",
        "name_asc",
        "name_desc",
        "type_asc",
        "type_desc",
        "status_asc",
        "status_desc",
    ])?;
    let statuses = q
        .many("statuses")
        .into_iter()
        .map(|s| VpnGatewayStatus::parse_field("statuses", s))
        .collect::<Result<Vec<_>, _>>()?;
    let types = q.many("gateway_types");
    let pns = q.many("private_network_ids");
    let mut ids = tx.connection_ids_by(GatewayKind::Vpn)?;
    let items: Vec<VpnGateway> = tx
        .vpn_gateways()?
        .into_iter()
        .filter(|g| {
            q.common_match(&g.project_id, &g.organization_id, &g.name, &g.tags)
                && (statuses.is_empty() || statuses.contains(&g.status))
                && (types.is_empty() || types.contains(&g.gateway_type.as_str()))
                && (pns.is_empty() || pns.contains(&g.private_network_id.as_str()))
        })
        .map(|mut g| {
            g.connection_ids = ids.remove(&g.id).unwrap_or_default();
            g
        })
        .collect();
    list_response(items, order, (page, size), "gateways", |f, g| match f {
        "name" => Some(g.name.clone()),
        "type" => Some(g.gateway_type.clone()),
        "status" => Some(g.status.as_str().to_owned()),
        _ => None,
    })
}

/// Refuses fields of a PATCH that are immutable, naming them.
pub(super) fn refuse_immutable(body: &Value, allowed: &[&str], what: &str) -> Result<(), ApiError> {
    if let Some(obj) = body.as_object() {
        for k in obj.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::constraint(
                    k.clone(),
                    format!(
                        "cannot be modified after creation of the {what} (only {} can)",
                        allowed.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct UpdateVpnGatewayRequest {
    pub name: Option<String>,
    pub tags: Option<Vec<String>>,
    /// An extension of Scaleway's API (whose update takes only the name
    /// and tags): another type of this host, whose bandwidth applies to
    /// the running tunnels in place.
    pub gateway_type: Option<String>,
}

/// `PATCH .../vpn-gateways/{id}`: name, tags and (our extension) the
/// gateway type; a smaller type must still allow the gateway's
/// connections.
pub fn update_vpn_gateway(
    tx: &mut Tx<'_>,
    config: &Config,
    id: &str,
    body: Value,
) -> Result<Value, ApiError> {
    refuse_immutable(&body, &["name", "tags", "gateway_type"], "VPN gateway")?;
    let req: UpdateVpnGatewayRequest = parse_body(body)?;
    let mut g = tx
        .vpn_gateway(id)?
        .ok_or_else(|| ApiError::not_found("vpn_gateway", id))?;
    if let Some(t) = req.gateway_type {
        let ty = known_type(config, &t)?;
        let used = tx.connection_count_on(&g.id)?;
        if used as u64 > u64::from(ty.allowed_connections) {
            return Err(ApiError::constraint(
                "gateway_type",
                format!(
                    "{t} allows {} connections and this VPN gateway has {used}: delete some first",
                    ty.allowed_connections
                ),
            ));
        }
        g.gateway_type = t;
    }
    if let Some(name) = req.name {
        validate_name("name", &name)?;
        g.name = name;
    }
    if let Some(tags) = req.tags {
        validate_tags("tags", &tags)?;
        g.tags = tags;
    }
    g.updated_at = crate::now_rfc3339();
    tx.put_vpn_gateway(&g)?;
    to_value(&render_vpn_gateway(tx, g)?)
}

pub fn delete_vpn_gateway(tx: &mut Tx<'_>, id: &str) -> Result<Value, ApiError> {
    let mut g = tx
        .vpn_gateway(id)?
        .ok_or_else(|| ApiError::not_found("vpn_gateway", id))?;
    refuse_while_used(
        "vpn_gateway",
        "VPN gateway is used by",
        "delete them first",
        tx.connection_ids_on(GatewayKind::Vpn, id)?,
    )?;
    // The agent tears the gateway down and removes it
    // (`Store::finish_vpn_gateway_deletion`).
    g.status = VpnGatewayStatus::Deprovisioning;
    g.updated_at = crate::now_rfc3339();
    tx.put_vpn_gateway(&g)?;
    to_value(&g)
}
