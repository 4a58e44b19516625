//! The API's operations: each endpoint as a function of one store
//! transaction, the daemon's config and the parsed request. Here live the
//! rules that relate resources to each other and to the host (references,
//! a shared IP family, one policy per family, in-use refusals, the host's
//! private networks and public IPs, `allowed_connections`); the field rules
//! are in `model`. No HTTP here: `api` maps paths and queries onto these.

use std::net::IpAddr;

use gateway_config::Config;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::model::{
    allocate_interco, parse_interco, validate_ciphers, validate_customer_asn, validate_name,
    validate_prefixes, validate_public_ip, validate_tags, BgpSession, BgpSessionStatus,
    CipherRequest, CipherUse, Connection, ConnectionStatus, CustomerGateway, Family, GatewayType,
    InitiationPolicy, Interco, RoutingPolicy, TunnelStatus, VpnGateway, VpnGatewayPublicConfig,
    VpnGatewayStatus,
};
use crate::secrets::Psk;
use crate::store::{ConnectionRow, IntercoSet, Tx};

/// Project of resources created without one (the SDK sends its
/// `default_project_id`, which may be unset).
pub const DEFAULT_PROJECT_ID: &str = "00000000-0000-0000-0000-000000000000";
pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(ApiError::internal)
}

fn project(p: Option<String>) -> Result<String, ApiError> {
    match p {
        None => Ok(DEFAULT_PROJECT_ID.to_owned()),
        Some(p) if p.is_empty() => Ok(DEFAULT_PROJECT_ID.to_owned()),
        Some(p) if p.len() <= 64 && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => {
            Ok(p)
        }
        Some(_) => Err(ApiError::constraint("project_id", "must be a UUID")),
    }
}

// ---------------------------------------------------------------------------
// Lists
// ---------------------------------------------------------------------------

/// The query of a list call, from repeated `key=value` pairs (the SDK sends
/// list filters as repeated keys, booleans as `True`/`False`).
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    pub pairs: Vec<(String, String)>,
}

impl ListQuery {
    pub fn from_query(q: &str) -> ListQuery {
        ListQuery {
            pairs: form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }
    fn one(&self, k: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
    fn many(&self, k: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(key, v)| key == k && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn bool(&self, k: &str) -> Result<Option<bool>, ApiError> {
        match self.one(k) {
            None => Ok(None),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(Some(true)),
                "false" | "0" => Ok(Some(false)),
                _ => Err(ApiError::constraint(k, "must be true or false")),
            },
        }
    }
    fn u32(&self, k: &str) -> Result<Option<u32>, ApiError> {
        self.one(k)
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|_| ApiError::constraint(k, "must be a non-negative integer"))
            })
            .transpose()
    }

    /// `(page, page_size)`: page counts from 1 (0 means 1), page_size
    /// defaults to 20 and is at most 100.
    pub fn page(&self) -> Result<(u32, u32), ApiError> {
        let page = self.u32("page")?.unwrap_or(1).max(1);
        let size = self.u32("page_size")?.unwrap_or(0);
        let size = if size == 0 { DEFAULT_PAGE_SIZE } else { size };
        if size > MAX_PAGE_SIZE {
            return Err(ApiError::constraint(
                "page_size",
                format!("must be at most {MAX_PAGE_SIZE}"),
            ));
        }
        Ok((page, size))
    }

    fn order_by(&self, allowed: &[&'static str]) -> Result<&'static str, ApiError> {
        match self.one("order_by") {
            None => Ok("created_at_asc"),
            Some(v) => allowed.iter().copied().find(|a| *a == v).ok_or_else(|| {
                ApiError::unknown(
                    "order_by",
                    format!(
                        "unknown value {v:?}, expected one of: {}",
                        allowed.join(", ")
                    ),
                )
            }),
        }
    }

    /// The filters every resource shares: project, organization, name
    /// (substring), tags (all of them).
    fn common_match(
        &self,
        project_id: &str,
        organization_id: &str,
        name: &str,
        tags: &[String],
    ) -> bool {
        self.one("project_id").is_none_or(|p| p == project_id)
            && self
                .one("organization_id")
                .is_none_or(|o| o == organization_id)
            && self.one("name").is_none_or(|n| name.contains(n))
            && self
                .many("tags")
                .iter()
                .all(|t| tags.iter().any(|x| x == t))
    }
}

fn paginate<T>(mut items: Vec<T>, page: u32, size: u32) -> (Vec<T>, usize) {
    let total = items.len();
    let start = usize::try_from(u64::from(page - 1) * u64::from(size)).unwrap_or(usize::MAX);
    if start >= items.len() {
        return (Vec::new(), total);
    }
    let mut rest = items.split_off(start);
    rest.truncate(usize::try_from(size).unwrap_or(usize::MAX));
    (rest, total)
}

/// Sorts by `key` for `*_asc` / `*_desc`, ties in creation order.
fn sort_by_key<T, K: Ord>(items: &mut [T], order: &str, key: impl Fn(&T) -> K) {
    // Items arrive in creation order; a stable sort keeps it within ties.
    items.sort_by_key(key);
    if order.ends_with("_desc") {
        items.reverse();
    }
}

// ---------------------------------------------------------------------------
// Rendering: fill the computed `connection_ids`
// ---------------------------------------------------------------------------

fn render_vpn_gateway(mut g: VpnGateway, conns: &[ConnectionRow]) -> VpnGateway {
    g.connection_ids = conns
        .iter()
        .filter(|c| c.conn.vpn_gateway_id == g.id)
        .map(|c| c.conn.id.clone())
        .collect();
    g
}

fn render_customer_gateway(mut g: CustomerGateway, conns: &[ConnectionRow]) -> CustomerGateway {
    g.connection_ids = conns
        .iter()
        .filter(|c| c.conn.customer_gateway_id == g.id)
        .map(|c| c.conn.id.clone())
        .collect();
    g
}

// ---------------------------------------------------------------------------
// VPN gateway types
// ---------------------------------------------------------------------------

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

fn default_zone(config: &Config) -> String {
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

#[derive(Debug, Deserialize, Default)]
pub struct IpamPair {
    pub ipam_ipv4_id: Option<String>,
    pub ipam_ipv6_id: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct SingleIpTunnel {
    pub ipam_id: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct PublicTunnelConfig {
    pub single_ipv4_tunnel: Option<SingleIpTunnel>,
    pub single_ipv6_tunnel: Option<SingleIpTunnel>,
    pub dual_ipv4v6_tunnel: Option<IpamPair>,
}

#[derive(Debug, Deserialize, Default)]
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
fn requested_public_ips(req: &CreateVpnGatewayRequest) -> Result<Option<IpamIds>, ApiError> {
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

fn customer_addresses(g: &CustomerGateway) -> (Option<IpAddr>, Option<IpAddr>) {
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
    if config.gateway_type(&gateway_type).is_none() {
        return Err(ApiError::unknown(
            "gateway_type",
            format!(
                "unknown gateway type {gateway_type:?}, expected one of: {}",
                config
                    .gateway_types
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
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
        organization_id: project_id.clone(),
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
    to_value(&render_vpn_gateway(g, &tx.connections()?))
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
    let conns = tx.connections()?;
    let mut items: Vec<VpnGateway> = tx
        .vpn_gateways()?
        .into_iter()
        .filter(|g| {
            q.common_match(&g.project_id, &g.organization_id, &g.name, &g.tags)
                && (statuses.is_empty() || statuses.contains(&g.status))
                && (types.is_empty() || types.contains(&g.gateway_type.as_str()))
                && (pns.is_empty() || pns.contains(&g.private_network_id.as_str()))
        })
        .map(|g| render_vpn_gateway(g, &conns))
        .collect();
    match order.trim_end_matches("_asc").trim_end_matches("_desc") {
        "name" => sort_by_key(&mut items, order, |g| g.name.clone()),
        "type" => sort_by_key(&mut items, order, |g| g.gateway_type.clone()),
        "status" => sort_by_key(&mut items, order, |g| g.status.as_str()),
        _ => sort_by_key(&mut items, order, |_| ()),
    }
    let (items, total) = paginate(items, page, size);
    Ok(json!({"gateways": to_value(&items)?, "total_count": total}))
}

#[derive(Debug, Deserialize, Default)]
pub struct UpdateNameTags {
    pub name: Option<String>,
    pub tags: Option<Vec<String>>,
}

/// Refuses fields of a PATCH that are immutable, naming them.
fn refuse_immutable(body: &Value, allowed: &[&str], what: &str) -> Result<(), ApiError> {
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

pub fn update_vpn_gateway(tx: &mut Tx<'_>, id: &str, body: Value) -> Result<Value, ApiError> {
    refuse_immutable(&body, &["name", "tags"], "VPN gateway")?;
    let req: UpdateNameTags = parse_body(body)?;
    let mut g = tx
        .vpn_gateway(id)?
        .ok_or_else(|| ApiError::not_found("vpn_gateway", id))?;
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
    to_value(&render_vpn_gateway(g, &tx.connections()?))
}

pub fn delete_vpn_gateway(tx: &mut Tx<'_>, id: &str) -> Result<Value, ApiError> {
    let mut g = tx
        .vpn_gateway(id)?
        .ok_or_else(|| ApiError::not_found("vpn_gateway", id))?;
    let conns = tx.connections()?;
    let users: Vec<&str> = conns
        .iter()
        .filter(|c| c.conn.vpn_gateway_id == id)
        .map(|c| c.conn.id.as_str())
        .collect();
    if !users.is_empty() {
        return Err(ApiError::StillInUse {
            resource: "vpn_gateway",
            help: format!(
                "the VPN gateway is used by connection(s) {}: delete them first",
                users.join(", ")
            ),
        });
    }
    // The agent tears the gateway down and removes it
    // (`Store::finish_vpn_gateway_deletion`).
    g.status = VpnGatewayStatus::Deprovisioning;
    g.updated_at = crate::now_rfc3339();
    tx.put_vpn_gateway(&g)?;
    to_value(&g)
}

// ---------------------------------------------------------------------------
// Customer gateways
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize, Default)]
pub struct CreateCustomerGatewayRequest {
    pub name: Option<String>,
    pub asn: Option<i64>,
    pub project_id: Option<String>,
    pub tags: Option<Vec<String>>,
    pub ipv4_public: Option<String>,
    pub ipv6_public: Option<String>,
}

/// Refuses a customer gateway address that is one of ours: the seed forbids
/// connecting two of our own VPCs.
fn refuse_own_address(config: &Config, field: &str, ip: IpAddr) -> Result<(), ApiError> {
    if config.public_ips.iter().any(|p| p.address == ip) {
        return Err(ApiError::constraint(
            field,
            format!("{ip} is a public IP of one of our VPN gateways: connecting two of our own VPCs is not supported"),
        ));
    }
    Ok(())
}

fn customer_ips(
    config: &Config,
    v4: Option<&str>,
    v6: Option<&str>,
) -> Result<(Option<String>, Option<String>), ApiError> {
    let v4 = v4.filter(|s| !s.is_empty());
    let v6 = v6.filter(|s| !s.is_empty());
    if v4.is_none() && v6.is_none() {
        return Err(ApiError::constraint(
            "ipv4_public",
            "at least one of ipv4_public and ipv6_public is required",
        ));
    }
    let mut out = (None, None);
    if let Some(s) = v4 {
        let ip = validate_public_ip("ipv4_public", s, Family::V4)?;
        refuse_own_address(config, "ipv4_public", ip)?;
        out.0 = Some(ip.to_string());
    }
    if let Some(s) = v6 {
        let ip = validate_public_ip("ipv6_public", s, Family::V6)?;
        refuse_own_address(config, "ipv6_public", ip)?;
        out.1 = Some(ip.to_string());
    }
    Ok(out)
}

pub fn create_customer_gateway(
    tx: &mut Tx<'_>,
    config: &Config,
    req: CreateCustomerGatewayRequest,
) -> Result<Value, ApiError> {
    let name = req.name.ok_or_else(|| ApiError::required("name"))?;
    validate_name("name", &name)?;
    let tags = req.tags.unwrap_or_default();
    validate_tags("tags", &tags)?;
    let asn = validate_customer_asn(
        "asn",
        req.asn.ok_or_else(|| ApiError::required("asn"))?,
        config.gateway.asn,
    )?;
    let (v4, v6) = customer_ips(
        config,
        req.ipv4_public.as_deref(),
        req.ipv6_public.as_deref(),
    )?;
    let project_id = project(req.project_id)?;
    let now = crate::now_rfc3339();
    let g = CustomerGateway {
        id: crate::new_id()?,
        organization_id: project_id.clone(),
        project_id,
        name,
        tags,
        created_at: now.clone(),
        updated_at: now,
        public_ipv4: v4,
        public_ipv6: v6,
        asn,
        connection_ids: vec![],
        region: config.gateway.region.clone(),
    };
    tx.put_customer_gateway(&g)?;
    to_value(&g)
}

pub fn get_customer_gateway(tx: &mut Tx<'_>, id: &str) -> Result<Value, ApiError> {
    let g = tx
        .customer_gateway(id)?
        .ok_or_else(|| ApiError::not_found("customer_gateway", id))?;
    to_value(&render_customer_gateway(g, &tx.connections()?))
}

pub fn list_customer_gateways(tx: &mut Tx<'_>, q: &ListQuery) -> Result<Value, ApiError> {
    let (page, size) = q.page()?;
    let order = q.order_by(&["created_at_asc", "created_at_desc", "name_asc", "name_desc"])?;
    let conns = tx.connections()?;
    let mut items: Vec<CustomerGateway> = tx
        .customer_gateways()?
        .into_iter()
        .filter(|g| q.common_match(&g.project_id, &g.organization_id, &g.name, &g.tags))
        .map(|g| render_customer_gateway(g, &conns))
        .collect();
    if order.starts_with("name") {
        sort_by_key(&mut items, order, |g| g.name.clone());
    } else {
        sort_by_key(&mut items, order, |_| ());
    }
    let (items, total) = paginate(items, page, size);
    Ok(json!({"gateways": to_value(&items)?, "total_count": total}))
}

#[derive(Debug, Deserialize, Default)]
pub struct UpdateCustomerGatewayRequest {
    pub name: Option<String>,
    pub tags: Option<Vec<String>>,
    pub ipv4_public: Option<String>,
    pub ipv6_public: Option<String>,
    pub asn: Option<i64>,
}

pub fn update_customer_gateway(
    tx: &mut Tx<'_>,
    config: &Config,
    id: &str,
    req: UpdateCustomerGatewayRequest,
) -> Result<Value, ApiError> {
    let mut g = tx
        .customer_gateway(id)?
        .ok_or_else(|| ApiError::not_found("customer_gateway", id))?;
    if let Some(name) = req.name {
        validate_name("name", &name)?;
        g.name = name;
    }
    if let Some(tags) = req.tags {
        validate_tags("tags", &tags)?;
        g.tags = tags;
    }
    // proto3: 0 means "not set".
    if let Some(asn) = req.asn.filter(|a| *a != 0) {
        g.asn = validate_customer_asn("asn", asn, config.gateway.asn)?;
    }
    if req.ipv4_public.is_some() || req.ipv6_public.is_some() {
        let v4 = req.ipv4_public.as_deref().or(g.public_ipv4.as_deref());
        let v6 = req.ipv6_public.as_deref().or(g.public_ipv6.as_deref());
        let (v4, v6) = customer_ips(config, v4, v6)?;
        g.public_ipv4 = v4;
        g.public_ipv6 = v6;
    }
    let conns = tx.connections()?;
    // Connections must keep their primary tunnel family; a family added or
    // removed adds or removes their secondary tunnel.
    for c in conns.iter().filter(|c| c.conn.customer_gateway_id == g.id) {
        if let Some(vgw) = tx.vpn_gateway(&c.conn.vpn_gateway_id)? {
            let fams = tunnel_families(config, &vgw, &g);
            let mut row = c.clone();
            let keep =
                |has: bool, s: Option<TunnelStatus>| has.then(|| s.unwrap_or(TunnelStatus::Down));
            row.conn.tunnel_status_ipv4 =
                keep(fams.contains(&Family::V4), row.conn.tunnel_status_ipv4);
            row.conn.tunnel_status_ipv6 =
                keep(fams.contains(&Family::V6), row.conn.tunnel_status_ipv6);
            // A tunnel that goes away takes its packet sizes with it.
            row.conn.tunnel_mtu_ipv4 = row
                .conn
                .tunnel_mtu_ipv4
                .filter(|_| fams.contains(&Family::V4));
            row.conn.tunnel_mtu_ipv6 = row
                .conn
                .tunnel_mtu_ipv6
                .filter(|_| fams.contains(&Family::V6));
            if row != *c {
                tx.put_connection(&row)?;
            }
            let primary = Family::from_is_ipv6(c.conn.is_ipv6);
            if !fams.contains(&primary) {
                return Err(ApiError::constraint(
                    if primary == Family::V4 { "ipv4_public" } else { "ipv6_public" },
                    format!(
                        "connection {} uses an {} tunnel with this customer gateway: its {} address cannot be removed",
                        c.conn.id,
                        primary.name(),
                        primary.name()
                    ),
                ));
            }
        }
    }
    g.updated_at = crate::now_rfc3339();
    tx.put_customer_gateway(&g)?;
    to_value(&render_customer_gateway(g, &conns))
}

pub fn delete_customer_gateway(tx: &mut Tx<'_>, id: &str) -> Result<(), ApiError> {
    if tx.customer_gateway(id)?.is_none() {
        return Err(ApiError::not_found("customer_gateway", id));
    }
    let users: Vec<String> = tx
        .connections()?
        .into_iter()
        .filter(|c| c.conn.customer_gateway_id == id)
        .map(|c| c.conn.id)
        .collect();
    if !users.is_empty() {
        return Err(ApiError::StillInUse {
            resource: "customer_gateway",
            help: format!(
                "the customer gateway is used by connection(s) {}: delete them first",
                users.join(", ")
            ),
        });
    }
    tx.delete_customer_gateway(id)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Routing policies
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize, Default)]
pub struct CreateRoutingPolicyRequest {
    pub name: Option<String>,
    pub is_ipv6: Option<bool>,
    pub project_id: Option<String>,
    pub tags: Option<Vec<String>>,
    pub prefix_filter_in: Option<Vec<String>>,
    pub prefix_filter_out: Option<Vec<String>>,
}

fn canonical(nets: Vec<ipnet::IpNet>) -> Vec<String> {
    nets.into_iter().map(|n| n.to_string()).collect()
}

pub fn create_routing_policy(
    tx: &mut Tx<'_>,
    config: &Config,
    req: CreateRoutingPolicyRequest,
) -> Result<Value, ApiError> {
    let name = req.name.ok_or_else(|| ApiError::required("name"))?;
    validate_name("name", &name)?;
    let tags = req.tags.unwrap_or_default();
    validate_tags("tags", &tags)?;
    let is_ipv6 = req.is_ipv6.unwrap_or(false);
    let fam = Family::from_is_ipv6(is_ipv6);
    let fin = validate_prefixes(
        "prefix_filter_in",
        &req.prefix_filter_in.unwrap_or_default(),
        fam,
    )?;
    let fout = validate_prefixes(
        "prefix_filter_out",
        &req.prefix_filter_out.unwrap_or_default(),
        fam,
    )?;
    let project_id = project(req.project_id)?;
    let now = crate::now_rfc3339();
    let p = RoutingPolicy {
        id: crate::new_id()?,
        organization_id: project_id.clone(),
        project_id,
        name,
        tags,
        created_at: now.clone(),
        updated_at: now,
        is_ipv6,
        prefix_filter_in: canonical(fin),
        prefix_filter_out: canonical(fout),
        region: config.gateway.region.clone(),
    };
    tx.put_routing_policy(&p)?;
    to_value(&p)
}

pub fn get_routing_policy(tx: &mut Tx<'_>, id: &str) -> Result<Value, ApiError> {
    let p = tx
        .routing_policy(id)?
        .ok_or_else(|| ApiError::not_found("routing_policy", id))?;
    to_value(&p)
}

pub fn list_routing_policies(tx: &mut Tx<'_>, q: &ListQuery) -> Result<Value, ApiError> {
    let (page, size) = q.page()?;
    let order = q.order_by(&["created_at_asc", "created_at_desc", "name_asc", "name_desc"])?;
    let ipv6 = q.bool("ipv6")?;
    let mut items: Vec<RoutingPolicy> = tx
        .routing_policies()?
        .into_iter()
        .filter(|p| {
            q.common_match(&p.project_id, &p.organization_id, &p.name, &p.tags)
                && ipv6.is_none_or(|v| v == p.is_ipv6)
        })
        .collect();
    if order.starts_with("name") {
        sort_by_key(&mut items, order, |p| p.name.clone());
    } else {
        sort_by_key(&mut items, order, |_| ());
    }
    let (items, total) = paginate(items, page, size);
    Ok(json!({"routing_policies": to_value(&items)?, "total_count": total}))
}

#[derive(Debug, Deserialize, Default)]
pub struct UpdateRoutingPolicyRequest {
    pub name: Option<String>,
    pub tags: Option<Vec<String>>,
    pub prefix_filter_in: Option<Vec<String>>,
    pub prefix_filter_out: Option<Vec<String>>,
}

pub fn update_routing_policy(tx: &mut Tx<'_>, id: &str, body: Value) -> Result<Value, ApiError> {
    refuse_immutable(
        &body,
        &["name", "tags", "prefix_filter_in", "prefix_filter_out"],
        "routing policy",
    )?;
    let req: UpdateRoutingPolicyRequest = parse_body(body)?;
    let mut p = tx
        .routing_policy(id)?
        .ok_or_else(|| ApiError::not_found("routing_policy", id))?;
    let fam = Family::from_is_ipv6(p.is_ipv6);
    if let Some(name) = req.name {
        validate_name("name", &name)?;
        p.name = name;
    }
    if let Some(tags) = req.tags {
        validate_tags("tags", &tags)?;
        p.tags = tags;
    }
    if let Some(v) = req.prefix_filter_in {
        p.prefix_filter_in = canonical(validate_prefixes("prefix_filter_in", &v, fam)?);
    }
    if let Some(v) = req.prefix_filter_out {
        p.prefix_filter_out = canonical(validate_prefixes("prefix_filter_out", &v, fam)?);
    }
    p.updated_at = crate::now_rfc3339();
    tx.put_routing_policy(&p)?;
    to_value(&p)
}

pub fn delete_routing_policy(tx: &mut Tx<'_>, id: &str) -> Result<(), ApiError> {
    if tx.routing_policy(id)?.is_none() {
        return Err(ApiError::not_found("routing_policy", id));
    }
    let users: Vec<String> = tx
        .connections()?
        .into_iter()
        .filter(|c| c.conn.routing_policy_ids().any(|p| p == id))
        .map(|c| c.conn.id)
        .collect();
    if !users.is_empty() {
        return Err(ApiError::StillInUse {
            resource: "routing_policy",
            help: format!(
                "the routing policy is attached to connection(s) {}: detach it first",
                users.join(", ")
            ),
        });
    }
    tx.delete_routing_policy(id)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize, Default, Clone)]
pub struct BgpConfigRequest {
    pub routing_policy_id: Option<String>,
    pub private_ip: Option<String>,
    pub peer_private_ip: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
pub struct SecretRef {
    pub id: Option<String>,
    pub revision: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
pub struct CreateConnectionRequest {
    pub name: Option<String>,
    pub is_ipv6: Option<bool>,
    pub initiation_policy: Option<String>,
    pub project_id: Option<String>,
    pub tags: Option<Vec<String>>,
    pub ikev2_ciphers: Option<Vec<CipherRequest>>,
    pub esp_ciphers: Option<Vec<CipherRequest>>,
    pub enable_route_propagation: Option<bool>,
    pub vpn_gateway_id: Option<String>,
    pub customer_gateway_id: Option<String>,
    pub secret: Option<SecretRef>,
    pub bgp_config_ipv4: Option<BgpConfigRequest>,
    pub bgp_config_ipv6: Option<BgpConfigRequest>,
}

fn initiation_policy(field: &str, s: &str) -> Result<InitiationPolicy, ApiError> {
    let p = InitiationPolicy::parse_field(field, s)?;
    if p == InitiationPolicy::UnknownInitiationPolicy {
        return Err(ApiError::constraint(
            field,
            "must be vpn_gateway or customer_gateway",
        ));
    }
    Ok(p)
}

/// All interconnection subnets in use, except those of `except`.
fn taken_intercos(conns: &[ConnectionRow], except: Option<&str>) -> Vec<Interco> {
    conns
        .iter()
        .filter(|c| Some(c.conn.id.as_str()) != except)
        .flat_map(|c| [c.interco.v4, c.interco.v6])
        .flatten()
        .collect()
}

/// Checks a routing policy for the session of `family`.
fn policy_for(
    tx: &Tx<'_>,
    field: &str,
    id: &str,
    family: Family,
) -> Result<RoutingPolicy, ApiError> {
    let p = tx
        .routing_policy(id)?
        .ok_or_else(|| ApiError::not_found("routing_policy", id))?;
    if Family::from_is_ipv6(p.is_ipv6) != family {
        return Err(ApiError::constraint(
            field,
            format!(
                "routing policy {id} is {}, the {} BGP session needs an {} routing policy",
                Family::from_is_ipv6(p.is_ipv6).name(),
                family.name(),
                family.name()
            ),
        ));
    }
    Ok(p)
}

fn session_of(c: &mut Connection, f: Family) -> &mut Option<BgpSession> {
    match f {
        Family::V4 => &mut c.bgp_session_ipv4,
        Family::V6 => &mut c.bgp_session_ipv6,
    }
}

fn bgp_status_of(c: &mut Connection, f: Family) -> &mut BgpSessionStatus {
    match f {
        Family::V4 => &mut c.bgp_status_ipv4,
        Family::V6 => &mut c.bgp_status_ipv6,
    }
}

/// A BGP session of `family` needs the VPN gateway's private network to
/// have a subnet of that family to announce.
fn check_private_network_family(
    config: &Config,
    vgw: &VpnGateway,
    field: &str,
    family: Family,
) -> Result<(), ApiError> {
    let Some(pn) = config.private_network(&vgw.private_network_id) else {
        return Err(ApiError::constraint(
            "vpn_gateway_id",
            format!(
                "the VPN gateway's private network {} is no longer in the daemon's config",
                vgw.private_network_id
            ),
        ));
    };
    let has = match family {
        Family::V4 => pn.ipv4_subnet.is_some(),
        Family::V6 => pn.ipv6_subnet.is_some(),
    };
    if !has {
        return Err(ApiError::constraint(
            field,
            format!(
                "the VPN gateway's private network {} has no {} subnet to route",
                vgw.private_network_id,
                family.name()
            ),
        ));
    }
    Ok(())
}

fn render_connection(row: &ConnectionRow) -> Result<Value, ApiError> {
    to_value(&row.conn)
}

pub fn create_connection(
    tx: &mut Tx<'_>,
    config: &Config,
    req: CreateConnectionRequest,
) -> Result<Value, ApiError> {
    let name = req.name.ok_or_else(|| ApiError::required("name"))?;
    validate_name("name", &name)?;
    let tags = req.tags.unwrap_or_default();
    validate_tags("tags", &tags)?;
    let is_ipv6 = req.is_ipv6.unwrap_or(false);
    let initiation = initiation_policy(
        "initiation_policy",
        req.initiation_policy
            .as_deref()
            .ok_or_else(|| ApiError::required("initiation_policy"))?,
    )?;
    let ike = validate_ciphers(
        "ikev2_ciphers",
        &req.ikev2_ciphers.unwrap_or_default(),
        CipherUse::Ikev2,
    )?;
    let esp = validate_ciphers(
        "esp_ciphers",
        &req.esp_ciphers.unwrap_or_default(),
        CipherUse::Esp,
    )?;
    let vgw_id = req
        .vpn_gateway_id
        .ok_or_else(|| ApiError::required("vpn_gateway_id"))?;
    let cgw_id = req
        .customer_gateway_id
        .ok_or_else(|| ApiError::required("customer_gateway_id"))?;
    let vgw = tx
        .vpn_gateway(&vgw_id)?
        .ok_or_else(|| ApiError::not_found("vpn_gateway", &vgw_id))?;
    let cgw = tx
        .customer_gateway(&cgw_id)?
        .ok_or_else(|| ApiError::not_found("customer_gateway", &cgw_id))?;
    if vgw.status == VpnGatewayStatus::Deprovisioning {
        return Err(ApiError::TransientState {
            resource: "vpn_gateway",
            resource_id: vgw.id,
            current_state: vgw.status.to_string(),
        });
    }
    if vgw.region != cgw.region {
        return Err(ApiError::constraint(
            "customer_gateway_id",
            format!(
                "the customer gateway is in region {}, the VPN gateway in {}: they must be in the same region",
                cgw.region, vgw.region
            ),
        ));
    }
    for (field, ip) in [
        ("ipv4_public", &cgw.public_ipv4),
        ("ipv6_public", &cgw.public_ipv6),
    ] {
        if let Some(ip) = ip.as_deref().and_then(|s| s.parse::<IpAddr>().ok()) {
            refuse_own_address(config, &format!("customer_gateway_id ({field})"), ip)?;
        }
    }
    let families = tunnel_families(config, &vgw, &cgw);
    if families.is_empty() {
        return Err(ApiError::constraint(
            "customer_gateway_id",
            "the VPN gateway and the customer gateway share no IP family (both need an IPv4, or both an IPv6, public address)",
        ));
    }
    let primary = Family::from_is_ipv6(is_ipv6);
    if !families.contains(&primary) {
        return Err(ApiError::constraint(
            "is_ipv6",
            format!(
                "the primary tunnel is {} but the gateways only share {}",
                primary.name(),
                families
                    .iter()
                    .map(|f| f.name())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        ));
    }
    let conns = tx.connections()?;
    let on_gateway = conns
        .iter()
        .filter(|c| c.conn.vpn_gateway_id == vgw.id)
        .count();
    let allowed = config
        .gateway_type(&vgw.gateway_type)
        .map(|t| t.allowed_connections)
        .unwrap_or(0);
    if on_gateway >= usize::try_from(allowed).unwrap_or(usize::MAX) {
        return Err(ApiError::QuotaExceeded {
            resource: "connections",
            quota: u64::from(allowed),
            current: u64::try_from(on_gateway).unwrap_or(u64::MAX),
        });
    }
    if req.bgp_config_ipv4.is_none() && req.bgp_config_ipv6.is_none() {
        return Err(ApiError::constraint(
            "bgp_config_ipv4",
            "at least one routing policy is required: set bgp_config_ipv4 and/or bgp_config_ipv6",
        ));
    }
    let mut taken = taken_intercos(&conns, None);
    let mut interco = IntercoSet::default();
    let mut sessions = [None, None];
    for (i, (field, fam, cfg)) in [
        ("bgp_config_ipv4", Family::V4, &req.bgp_config_ipv4),
        ("bgp_config_ipv6", Family::V6, &req.bgp_config_ipv6),
    ]
    .into_iter()
    .enumerate()
    {
        let Some(cfg) = cfg else { continue };
        let pid = cfg
            .routing_policy_id
            .as_deref()
            .ok_or_else(|| ApiError::required(format!("{field}.routing_policy_id")))?;
        policy_for(tx, &format!("{field}.routing_policy_id"), pid, fam)?;
        check_private_network_family(config, &vgw, field, fam)?;
        let ic = match (&cfg.private_ip, &cfg.peer_private_ip) {
            (Some(a), Some(b)) => {
                let ic = parse_interco(field, a, b, fam)?;
                if let Some(t) = taken.iter().find(|t| t.overlaps(&ic)) {
                    return Err(ApiError::constraint(
                        format!("{field}.private_ip"),
                        format!(
                            "{} overlaps {} already used by another connection",
                            ic.subnet(),
                            t.subnet()
                        ),
                    ));
                }
                ic
            }
            (None, None) => allocate_interco(fam, &taken).ok_or_else(|| {
                ApiError::constraint(field, "no free interconnection subnet left")
            })?,
            (Some(_), None) => return Err(ApiError::required(format!("{field}.peer_private_ip"))),
            (None, Some(_)) => return Err(ApiError::required(format!("{field}.private_ip"))),
        };
        taken.push(ic);
        interco.set(fam, Some(ic));
        sessions[i] = Some(BgpSession {
            routing_policy_id: pid.to_owned(),
            private_ip: ic.local.to_string(),
            peer_private_ip: ic.peer.to_string(),
        });
    }
    let [bgp_session_ipv4, bgp_session_ipv6] = sessions;
    let id = crate::new_id()?;
    let (secret_id, secret_revision) = match req.secret {
        Some(s) => resolve_secret_ref(tx, "secret", &s)?,
        None => {
            let sid = crate::new_id()?;
            let psk = Psk::generate().map_err(ApiError::internal)?;
            let rev = tx.add_secret_revision(&sid, &psk)?;
            record_generated_secret(tx, config, &sid, &id, &project(req.project_id.clone())?)?;
            (sid, rev)
        }
    };
    let project_id = project(req.project_id)?;
    let now = crate::now_rfc3339();
    let tstat = |f: Family| families.contains(&f).then_some(TunnelStatus::Down);
    let bstat = |s: &Option<BgpSession>| {
        if s.is_some() {
            BgpSessionStatus::Down
        } else {
            BgpSessionStatus::Disabled
        }
    };
    let conn = Connection {
        id,
        organization_id: project_id.clone(),
        project_id,
        name,
        tags,
        created_at: now.clone(),
        updated_at: now,
        status: ConnectionStatus::Down,
        is_ipv6,
        initiation_policy: initiation,
        ikev2_ciphers: ike,
        esp_ciphers: esp,
        route_propagation_enabled: req.enable_route_propagation.unwrap_or(false),
        vpn_gateway_id: vgw.id,
        customer_gateway_id: cgw.id,
        tunnel_status: TunnelStatus::Down,
        tunnel_status_ipv4: tstat(Family::V4),
        tunnel_status_ipv6: tstat(Family::V6),
        bgp_status_ipv4: bstat(&bgp_session_ipv4),
        bgp_status_ipv6: bstat(&bgp_session_ipv6),
        bgp_session_ipv4,
        bgp_session_ipv6,
        secret_id,
        secret_revision,
        region: config.gateway.region.clone(),
        tunnel_mtu_ipv4: None,
        tunnel_mtu_ipv6: None,
    };
    let row = ConnectionRow { conn, interco };
    tx.put_connection(&row)?;
    // `pre_shared_key` is deprecated in the SDK: the PSK is only served by
    // the Secret Manager access call.
    Ok(json!({"connection": render_connection(&row)?, "pre_shared_key": null}))
}

fn resolve_secret_ref(tx: &Tx<'_>, field: &str, s: &SecretRef) -> Result<(String, u32), ApiError> {
    let id =
        s.id.clone()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| ApiError::required(format!("{field}.id")))?;
    let latest = tx
        .latest_secret_revision(&id)?
        .ok_or_else(|| ApiError::not_found("secret", &id))?;
    let rev = match s.revision {
        None | Some(0) => latest,
        Some(r) if r <= latest => r,
        Some(r) => {
            return Err(ApiError::constraint(
                format!("{field}.revision"),
                format!("secret {id} has no revision {r} (latest is {latest})"),
            ))
        }
    };
    usable_psk(tx, &id, rev, &format!("{field}.id"))?;
    Ok((id, rev))
}

/// A connection may only be pointed at a revision that follows the PSK
/// rules, whatever path put it in the store (a database from before the
/// rules, or a revision written by another tool).
fn usable_psk(tx: &Tx<'_>, id: &str, rev: u32, field: &str) -> Result<(), ApiError> {
    let psk = tx
        .secret(id, rev)?
        .ok_or_else(|| ApiError::not_found("secret_version", format!("{id}/{rev}")))?;
    crate::secrets::check_psk(psk.expose()).map_err(|e| {
        ApiError::constraint(
            field,
            format!("secret {id} revision {rev} is not usable as a PSK: {e}"),
        )
    })
}

fn load_connection(tx: &Tx<'_>, id: &str) -> Result<ConnectionRow, ApiError> {
    tx.connection(id)?
        .ok_or_else(|| ApiError::not_found("connection", id))
}

pub fn get_connection(tx: &mut Tx<'_>, id: &str) -> Result<Value, ApiError> {
    render_connection(&load_connection(tx, id)?)
}

/// `GET .../connections/{id}/events?after=SEQ&limit=N` (an extension):
/// what happened to the connection's tunnels and BGP sessions, oldest
/// first, after `after` (0: from the oldest kept), at most `limit`
/// (1..=1000, default 100). `next_after` is what to pass to follow.
pub fn connection_events(
    tx: &mut Tx<'_>,
    id: &str,
    after: Option<&str>,
    limit: Option<&str>,
) -> Result<Value, ApiError> {
    load_connection(tx, id)?;
    let after: i64 = match after {
        None => 0,
        Some(a) => a
            .parse()
            .ok()
            .filter(|a| *a >= 0)
            .ok_or_else(|| ApiError::constraint("after", "a non-negative event seq"))?,
    };
    let limit: u32 = match limit {
        None => 100,
        Some(l) => l
            .parse()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| ApiError::constraint("limit", "between 1 and 1000"))?,
    };
    let events = tx.connection_events(id, after, limit)?;
    let next_after = events.last().map_or(after, |e| e.seq);
    Ok(json!({ "events": events, "next_after": next_after }))
}

pub fn list_connections(tx: &mut Tx<'_>, q: &ListQuery) -> Result<Value, ApiError> {
    let (page, size) = q.page()?;
    let order = q.order_by(&[
        "created_at_asc",
        "created_at_desc",
        "name_asc",
        "name_desc",
        "status_asc",
        "status_desc",
    ])?;
    let statuses = q
        .many("statuses")
        .into_iter()
        .map(|s| ConnectionStatus::parse_field("statuses", s))
        .collect::<Result<Vec<_>, _>>()?;
    let is_ipv6 = q.bool("is_ipv6")?;
    let prop = q.bool("route_propagation_enabled")?;
    let rps = q.many("routing_policy_ids");
    let vgws = q.many("vpn_gateway_ids");
    let cgws = q.many("customer_gateway_ids");
    let mut items: Vec<Connection> = tx
        .connections()?
        .into_iter()
        .map(|r| r.conn)
        .filter(|c| {
            q.common_match(&c.project_id, &c.organization_id, &c.name, &c.tags)
                && (statuses.is_empty() || statuses.contains(&c.status))
                && is_ipv6.is_none_or(|v| v == c.is_ipv6)
                && prop.is_none_or(|v| v == c.route_propagation_enabled)
                && (rps.is_empty() || c.routing_policy_ids().any(|p| rps.contains(&p)))
                && (vgws.is_empty() || vgws.contains(&c.vpn_gateway_id.as_str()))
                && (cgws.is_empty() || cgws.contains(&c.customer_gateway_id.as_str()))
        })
        .collect();
    match order.trim_end_matches("_asc").trim_end_matches("_desc") {
        "name" => sort_by_key(&mut items, order, |c| c.name.clone()),
        "status" => sort_by_key(&mut items, order, |c| c.status.as_str()),
        _ => sort_by_key(&mut items, order, |_| ()),
    }
    let (items, total) = paginate(items, page, size);
    Ok(json!({"connections": to_value(&items)?, "total_count": total}))
}

#[derive(Debug, Deserialize, Default)]
pub struct UpdateConnectionRequest {
    pub name: Option<String>,
    pub tags: Option<Vec<String>>,
    pub initiation_policy: Option<String>,
    pub ikev2_ciphers: Option<Vec<CipherRequest>>,
    pub esp_ciphers: Option<Vec<CipherRequest>>,
}

pub fn update_connection(tx: &mut Tx<'_>, id: &str, body: Value) -> Result<Value, ApiError> {
    refuse_immutable(
        &body,
        &[
            "name",
            "tags",
            "initiation_policy",
            "ikev2_ciphers",
            "esp_ciphers",
        ],
        "connection",
    )?;
    let req: UpdateConnectionRequest = parse_body(body)?;
    let mut row = load_connection(tx, id)?;
    let c = &mut row.conn;
    if let Some(name) = req.name {
        validate_name("name", &name)?;
        c.name = name;
    }
    if let Some(tags) = req.tags {
        validate_tags("tags", &tags)?;
        c.tags = tags;
    }
    // proto3 defaults (unknown_initiation_policy, empty lists) mean "unchanged".
    if let Some(p) = req
        .initiation_policy
        .as_deref()
        .filter(|p| *p != InitiationPolicy::UnknownInitiationPolicy.as_str())
    {
        c.initiation_policy = initiation_policy("initiation_policy", p)?;
    }
    if let Some(v) = req.ikev2_ciphers.filter(|v| !v.is_empty()) {
        c.ikev2_ciphers = validate_ciphers("ikev2_ciphers", &v, CipherUse::Ikev2)?;
    }
    if let Some(v) = req.esp_ciphers.filter(|v| !v.is_empty()) {
        c.esp_ciphers = validate_ciphers("esp_ciphers", &v, CipherUse::Esp)?;
    }
    c.updated_at = crate::now_rfc3339();
    tx.put_connection(&row)?;
    render_connection(&row)
}

pub fn delete_connection(tx: &mut Tx<'_>, id: &str) -> Result<(), ApiError> {
    let row = load_connection(tx, id)?;
    tx.delete_connection(id)?;
    // Its generated PSK goes with it unless another connection was pointed
    // at it; a caller's own secret (Secret Manager, not `managed`) stays.
    let shared = tx
        .connections()?
        .iter()
        .any(|c| c.conn.secret_id == row.conn.secret_id);
    let managed = tx
        .secret_meta(&row.conn.secret_id)?
        .is_none_or(|m| m["managed"] == Value::Bool(true));
    if !shared && managed {
        tx.delete_secret(&row.conn.secret_id)?;
    }
    Ok(())
}

#[derive(Debug, Deserialize, Default)]
pub struct RenewPskRequest {
    pub generate_revision: Option<bool>,
}

/// `renew-psk`: with `generate_revision` (or when the connection already
/// uses the latest revision) a new PSK becomes a new revision of the
/// connection's secret; otherwise the connection moves to the latest
/// existing revision.
pub fn renew_psk(tx: &mut Tx<'_>, id: &str, req: RenewPskRequest) -> Result<Value, ApiError> {
    let mut row = load_connection(tx, id)?;
    let sid = row.conn.secret_id.clone();
    let latest = tx.latest_secret_revision(&sid)?.unwrap_or(0);
    let rev = if req.generate_revision.unwrap_or(false) || latest <= row.conn.secret_revision {
        let psk = Psk::generate().map_err(ApiError::internal)?;
        tx.add_secret_revision(&sid, &psk)?
    } else {
        usable_psk(tx, &sid, latest, "generate_revision")?;
        latest
    };
    let before = row.conn.secret_revision;
    row.conn.secret_revision = rev;
    row.conn.updated_at = crate::now_rfc3339();
    tx.put_connection(&row)?;
    tx.add_connection_event(
        id,
        "psk_changed",
        &format!(
            "PSK renewed: secret {sid} revision {before} → {rev} (the tunnels renegotiate with it)"
        ),
    )?;
    Ok(json!({"connection": render_connection(&row)?, "pre_shared_key": null}))
}

#[derive(Debug, Deserialize, Default)]
pub struct ChangePskRequest {
    pub secret: Option<SecretRef>,
}

/// `change-psk`: points the connection at a caller-given secret (id and
/// revision, latest if omitted) that the secret store holds.
pub fn change_psk(tx: &mut Tx<'_>, id: &str, req: ChangePskRequest) -> Result<Value, ApiError> {
    let mut row = load_connection(tx, id)?;
    let s = req.secret.ok_or_else(|| ApiError::required("secret"))?;
    let (sid, rev) = resolve_secret_ref(tx, "secret", &s)?;
    let message = format!(
        "PSK changed: secret {} revision {} → secret {sid} revision {rev} (the tunnels renegotiate with it)",
        row.conn.secret_id, row.conn.secret_revision
    );
    row.conn.secret_id = sid;
    row.conn.secret_revision = rev;
    row.conn.updated_at = crate::now_rfc3339();
    tx.put_connection(&row)?;
    tx.add_connection_event(id, "psk_changed", &message)?;
    Ok(json!({"connection": render_connection(&row)?}))
}

#[derive(Debug, Deserialize, Default)]
pub struct RoutingPolicyOneOf {
    pub routing_policy_v4: Option<String>,
    pub routing_policy_v6: Option<String>,
}

impl RoutingPolicyOneOf {
    fn one(&self) -> Result<(Family, &str, &'static str), ApiError> {
        match (&self.routing_policy_v4, &self.routing_policy_v6) {
            (Some(a), None) => Ok((Family::V4, a, "routing_policy_v4")),
            (None, Some(b)) => Ok((Family::V6, b, "routing_policy_v6")),
            _ => Err(ApiError::constraint(
                "routing_policy_v4",
                "exactly one of routing_policy_v4 and routing_policy_v6 must be set",
            )),
        }
    }
}

pub fn set_routing_policy(
    tx: &mut Tx<'_>,
    config: &Config,
    id: &str,
    req: RoutingPolicyOneOf,
) -> Result<Value, ApiError> {
    let (fam, pid, field) = req.one()?;
    let mut row = load_connection(tx, id)?;
    policy_for(tx, field, pid, fam)?;
    let vgw = tx
        .vpn_gateway(&row.conn.vpn_gateway_id)?
        .ok_or_else(|| ApiError::not_found("vpn_gateway", &row.conn.vpn_gateway_id))?;
    check_private_network_family(config, &vgw, field, fam)?;
    let ic = match row.interco.get(fam) {
        Some(ic) => ic,
        None => {
            let conns = tx.connections()?;
            let mut taken = taken_intercos(&conns, Some(id));
            taken.extend([row.interco.v4, row.interco.v6].into_iter().flatten());
            let ic = allocate_interco(fam, &taken).ok_or_else(|| {
                ApiError::constraint(field, "no free interconnection subnet left")
            })?;
            row.interco.set(fam, Some(ic));
            ic
        }
    };
    let c = &mut row.conn;
    let was = session_of(c, fam).is_some();
    *session_of(c, fam) = Some(BgpSession {
        routing_policy_id: pid.to_owned(),
        private_ip: ic.local.to_string(),
        peer_private_ip: ic.peer.to_string(),
    });
    if !was {
        *bgp_status_of(c, fam) = BgpSessionStatus::Down;
    }
    c.updated_at = crate::now_rfc3339();
    tx.put_connection(&row)?;
    render_connection(&row)
}

pub fn detach_routing_policy(
    tx: &mut Tx<'_>,
    id: &str,
    req: RoutingPolicyOneOf,
) -> Result<Value, ApiError> {
    let (fam, pid, field) = req.one()?;
    let mut row = load_connection(tx, id)?;
    let c = &mut row.conn;
    match session_of(c, fam) {
        Some(s) if s.routing_policy_id == pid => {}
        _ => {
            return Err(ApiError::constraint(
                field,
                format!(
                    "routing policy {pid} is not attached to this connection as its {} policy",
                    fam.name()
                ),
            ))
        }
    }
    let other = match fam {
        Family::V4 => c.bgp_session_ipv6.is_some(),
        Family::V6 => c.bgp_session_ipv4.is_some(),
    };
    if !other {
        return Err(ApiError::StillInUse {
            resource: "routing_policy",
            help: "a connection needs at least one routing policy: attach the other family's policy before detaching this one".into(),
        });
    }
    *session_of(c, fam) = None;
    *bgp_status_of(c, fam) = BgpSessionStatus::Disabled;
    c.updated_at = crate::now_rfc3339();
    tx.put_connection(&row)?;
    render_connection(&row)
}

pub fn set_route_propagation(tx: &mut Tx<'_>, id: &str, enabled: bool) -> Result<Value, ApiError> {
    let mut row = load_connection(tx, id)?;
    row.conn.route_propagation_enabled = enabled;
    row.conn.updated_at = crate::now_rfc3339();
    tx.put_connection(&row)?;
    render_connection(&row)
}

/// Secret Manager `access`: `revision` is a number, `latest` or
/// `latest_enabled` (every revision is enabled here).
pub fn access_secret(tx: &mut Tx<'_>, secret_id: &str, revision: &str) -> Result<Value, ApiError> {
    use base64::Engine as _;
    let latest = tx
        .latest_secret_revision(secret_id)?
        .ok_or_else(|| ApiError::not_found("secret", secret_id))?;
    let rev = match revision {
        "latest" | "latest_enabled" => latest,
        n => n.parse::<u32>().map_err(|_| {
            ApiError::constraint(
                "revision",
                "must be a revision number, latest or latest_enabled",
            )
        })?,
    };
    let psk = tx
        .secret(secret_id, rev)?
        .ok_or_else(|| ApiError::not_found("secret_version", format!("{secret_id}/{rev}")))?;
    let data = base64::engine::general_purpose::STANDARD.encode(psk.expose());
    Ok(json!({
        "secret_id": secret_id,
        "revision": rev,
        "data": data,
        "type": "opaque",
    }))
}

/// Deserialises a JSON body into a request, as `invalid_request_error`.
pub fn parse_body<T: serde::de::DeserializeOwned + Default>(body: Value) -> Result<T, ApiError> {
    if body.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(body)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid JSON body: {e}")))
}

// ---------------------------------------------------------------------------
// Secret Manager: create a secret, add a version, get a secret
// ---------------------------------------------------------------------------

/// PSKs given through Secret Manager must be at least this long (the whole
/// rule is [`crate::secrets::check_psk`]).
pub const MIN_PSK_LEN: usize = crate::secrets::MIN_PSK_LEN;

#[derive(Debug, Deserialize, Default)]
pub struct CreateSecretRequest {
    pub name: Option<String>,
    pub project_id: Option<String>,
    pub tags: Option<Vec<String>>,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub path: Option<String>,
    pub protected: Option<bool>,
}

/// The SDK's `Secret`, as stored in `secret_meta`.
struct SecretMeta<'a> {
    id: &'a str,
    name: &'a str,
    project_id: &'a str,
    tags: &'a [String],
    description: Option<&'a str>,
    path: &'a str,
    protected: bool,
    /// Created by the VPN service (a connection's PSK), not by a caller.
    managed: bool,
}

fn secret_json(config: &Config, m: &SecretMeta<'_>, now: &str) -> Value {
    json!({
        "id": m.id, "project_id": m.project_id, "name": m.name, "status": "ready",
        "created_at": now, "updated_at": now, "tags": m.tags, "version_count": 0,
        "description": m.description, "managed": m.managed, "protected": m.protected,
        "type": "opaque", "path": m.path, "used_by": [], "region": config.gateway.region,
    })
}

/// Records the metadata of a secret a connection generated.
fn record_generated_secret(
    tx: &mut Tx<'_>,
    config: &Config,
    sid: &str,
    conn_id: &str,
    project_id: &str,
) -> Result<(), ApiError> {
    let now = crate::now_rfc3339();
    let meta = secret_json(
        config,
        &SecretMeta {
            id: sid,
            name: &format!("s2s-vpn-connection-{conn_id}"),
            project_id,
            tags: &[],
            description: Some("pre-shared key of a site-to-site VPN connection"),
            path: "/",
            protected: false,
            managed: true,
        },
        &now,
    );
    tx.put_secret_meta(sid, &meta)?;
    Ok(())
}

pub fn create_secret(
    tx: &mut Tx<'_>,
    config: &Config,
    req: CreateSecretRequest,
) -> Result<Value, ApiError> {
    let name = req.name.ok_or_else(|| ApiError::required("name"))?;
    validate_name("name", &name)?;
    let tags = req.tags.unwrap_or_default();
    validate_tags("tags", &tags)?;
    if let Some(t) = req
        .type_
        .as_deref()
        .filter(|t| *t != "unknown_type" && *t != "opaque")
    {
        return Err(ApiError::constraint(
            "type",
            format!("only opaque secrets are supported, not {t}"),
        ));
    }
    let path = req.path.unwrap_or_else(|| "/".to_owned());
    if !path.starts_with('/') || path.len() > 255 {
        return Err(ApiError::constraint(
            "path",
            "must be an absolute path of at most 255 characters",
        ));
    }
    let project_id = project(req.project_id)?;
    let id = crate::new_id()?;
    let now = crate::now_rfc3339();
    let meta = secret_json(
        config,
        &SecretMeta {
            id: &id,
            name: &name,
            project_id: &project_id,
            tags: &tags,
            description: req.description.as_deref(),
            path: &path,
            protected: req.protected.unwrap_or(false),
            managed: false,
        },
        &now,
    );
    tx.put_secret_meta(&id, &meta)?;
    Ok(meta)
}

pub fn get_secret(tx: &mut Tx<'_>, config: &Config, id: &str) -> Result<Value, ApiError> {
    let latest = tx.latest_secret_revision(id)?;
    let mut meta = match tx.secret_meta(id)? {
        Some(m) => m,
        None if latest.is_some() => secret_json(
            config,
            &SecretMeta {
                id,
                name: id,
                project_id: DEFAULT_PROJECT_ID,
                tags: &[],
                description: None,
                path: "/",
                protected: false,
                managed: true,
            },
            &crate::now_rfc3339(),
        ),
        None => return Err(ApiError::not_found("secret", id)),
    };
    meta["version_count"] = json!(latest.unwrap_or(0));
    Ok(meta)
}

#[derive(Deserialize, Default)]
pub struct CreateSecretVersionRequest {
    /// The PSK, base64: never printed.
    pub data: Option<String>,
    pub description: Option<String>,
    pub disable_previous: Option<bool>,
    pub data_crc32: Option<u32>,
}

impl std::fmt::Debug for CreateSecretVersionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateSecretVersionRequest")
            .field("data", &self.data.as_ref().map(|_| "<redacted>"))
            .field("description", &self.description)
            .field("disable_previous", &self.disable_previous)
            .field("data_crc32", &self.data_crc32)
            .finish()
    }
}

pub fn create_secret_version(
    tx: &mut Tx<'_>,
    config: &Config,
    secret_id: &str,
    req: CreateSecretVersionRequest,
) -> Result<Value, ApiError> {
    use base64::Engine as _;
    if tx.secret_meta(secret_id)?.is_none() && tx.latest_secret_revision(secret_id)?.is_none() {
        return Err(ApiError::not_found("secret", secret_id));
    }
    let data = req.data.ok_or_else(|| ApiError::required("data"))?;
    if data.len() > 2 * crate::secrets::MAX_PSK_LEN {
        return Err(ApiError::constraint(
            "data",
            format!("at most {} bytes", crate::secrets::MAX_PSK_LEN),
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.as_bytes())
        .map_err(|_| ApiError::constraint("data", "must be base64"))?;
    let psk = Psk::from_bytes(bytes);
    // Every version is a PSK some connection may adopt (`renew-psk` moves
    // to the latest one): the same rule as for the PSK of a connection.
    crate::secrets::check_psk(psk.expose())
        .map_err(|e| ApiError::constraint("data", e.to_string()))?;
    if req.data_crc32.is_some() {
        return Err(ApiError::constraint(
            "data_crc32",
            "CRC32 verification is not supported: omit data_crc32",
        ));
    }
    let rev = tx.add_secret_revision(secret_id, &psk)?;
    let now = crate::now_rfc3339();
    Ok(json!({
        "revision": rev, "secret_id": secret_id, "status": "enabled", "latest": true,
        "created_at": now, "updated_at": now, "deleted_at": null,
        "description": req.description, "region": config.gateway.region,
    }))
}

/// Runs every decoder and field rule the API applies to untrusted input
/// (query strings, JSON bodies, then the per-field validators) on `data`,
/// without a store. For the fuzz target and the random-input test: it must
/// never panic, whatever `data` is.
#[doc(hidden)]
pub fn exercise_untrusted_input(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let q = ListQuery::from_query(&text);
    let _ = q.page();
    let _ = q.order_by(&["created_at_asc", "name_desc"]);
    let _ = q.bool("is_ipv6");
    let _ = q.many("tags");
    let _ = q.common_match("p", "o", "n", &[]);
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(r) = parse_body::<CreateConnectionRequest>(body.clone()) {
        let _ = validate_ciphers(
            "ikev2_ciphers",
            r.ikev2_ciphers.as_deref().unwrap_or_default(),
            CipherUse::Ikev2,
        );
        let _ = validate_ciphers(
            "esp_ciphers",
            r.esp_ciphers.as_deref().unwrap_or_default(),
            CipherUse::Esp,
        );
        for (f, fam, c) in [
            ("v4", Family::V4, &r.bgp_config_ipv4),
            ("v6", Family::V6, &r.bgp_config_ipv6),
        ] {
            if let Some(BgpConfigRequest {
                private_ip: Some(a),
                peer_private_ip: Some(b),
                ..
            }) = c
            {
                let _ = parse_interco(f, a, b, fam);
            }
        }
        if let Some(n) = &r.name {
            let _ = validate_name("name", n);
        }
        if let Some(t) = &r.tags {
            let _ = validate_tags("tags", t);
        }
        if let Some(p) = &r.initiation_policy {
            let _ = initiation_policy("initiation_policy", p);
        }
    }
    if let Ok(r) = parse_body::<CreateCustomerGatewayRequest>(body.clone()) {
        if let Some(a) = r.asn {
            let _ = validate_customer_asn("asn", a, 12876);
        }
        if let Some(ip) = &r.ipv4_public {
            let _ = validate_public_ip("ipv4_public", ip, Family::V4);
        }
        if let Some(ip) = &r.ipv6_public {
            let _ = validate_public_ip("ipv6_public", ip, Family::V6);
        }
    }
    if let Ok(r) = parse_body::<CreateRoutingPolicyRequest>(body.clone()) {
        let fam = Family::from_is_ipv6(r.is_ipv6.unwrap_or(false));
        let _ = validate_prefixes(
            "prefix_filter_in",
            r.prefix_filter_in.as_deref().unwrap_or_default(),
            fam,
        );
        let _ = validate_prefixes(
            "prefix_filter_out",
            r.prefix_filter_out.as_deref().unwrap_or_default(),
            fam,
        );
    }
    if let Ok(r) = parse_body::<CreateVpnGatewayRequest>(body.clone()) {
        let _ = requested_public_ips(&r);
    }
    let _ = refuse_immutable(&body, &["name", "tags"], "x");
    let _ = parse_body::<RoutingPolicyOneOf>(body.clone()).map(|r| r.one().is_ok());
    let _ = parse_body::<ChangePskRequest>(body.clone());
    let _ = parse_body::<RenewPskRequest>(body.clone());
    let _ = parse_body::<UpdateConnectionRequest>(body.clone());
    let _ = parse_body::<UpdateCustomerGatewayRequest>(body);
}

#[cfg(test)]
mod tests {
    //! The rules that relate resources, against a real store.
    use super::*;
    use crate::store::{ConnectionStatusUpdate, Store, StoreError};

    const CFG: &str = r#"
[gateway]
asn = 12876
[interfaces]
wan = "wan0"
lan = "lan0"
[api]
tokens = ["0123456789abcdef"]
[[gateway_types]]
name = "VGW-S"
bandwidth = 100000000
allowed_connections = 1
[[gateway_types]]
name = "VGW-M"
bandwidth = 1000000000
allowed_connections = 10
[[private_networks]]
id = "pn-dual"
interface = "lan0"
ipv4_subnet = "198.51.100.0/24"
ipv6_subnet = "2001:db8:100::/64"
[[private_networks]]
id = "pn-v4"
interface = "lan1"
ipv4_subnet = "198.51.100.128/25"
[[public_ips]]
id = "ip4a"
address = "192.0.2.1"
[[public_ips]]
id = "ip6a"
address = "2001:db8::1"
[[public_ips]]
id = "ip4b"
address = "192.0.2.2"
"#;

    struct Fx {
        store: Store,
        config: Config,
        _dir: tempfile::TempDir,
    }

    fn fx() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        Fx {
            store,
            config: Config::parse(CFG).unwrap(),
            _dir: dir,
        }
    }

    impl Fx {
        fn w<T>(
            &self,
            f: impl FnOnce(&mut Tx<'_>, &Config) -> Result<T, ApiError>,
        ) -> Result<T, ApiError> {
            self.store.write(|tx| f(tx, &self.config))
        }
        fn vgw(&self, body: Value) -> Result<Value, ApiError> {
            self.w(|tx, c| create_vpn_gateway(tx, c, parse_body(body)?))
        }
        fn cgw(&self, body: Value) -> Result<Value, ApiError> {
            self.w(|tx, c| create_customer_gateway(tx, c, parse_body(body)?))
        }
        fn rp(&self, body: Value) -> Result<Value, ApiError> {
            self.w(|tx, c| create_routing_policy(tx, c, parse_body(body)?))
        }
        fn conn(&self, body: Value) -> Result<Value, ApiError> {
            self.w(|tx, c| create_connection(tx, c, parse_body(body)?))
        }
    }

    fn id(v: &Value) -> String {
        v["id"].as_str().unwrap().to_owned()
    }

    /// Asserts an `invalid_arguments` refusal naming `field`.
    #[track_caller]
    fn refused(r: Result<Value, ApiError>, field: &str) {
        match r {
            Err(ApiError::InvalidArguments(a)) => {
                assert!(
                    a[0].argument_name.starts_with(field),
                    "wanted {field}, got {a:?}"
                );
            }
            other => panic!("wanted invalid_arguments on {field}, got {other:?}"),
        }
    }

    fn ciphers() -> (Value, Value) {
        (
            json!([{"encryption": "aes256gcm", "dh_group": "ecp256"}]),
            json!([{"encryption": "aes256gcm"}]),
        )
    }

    struct World {
        f: Fx,
        gw_dual: String,
        gw_v4: String,
        cg_dual: String,
        cg_v6: String,
        rp4: String,
        rp6: String,
    }

    fn world() -> World {
        let f = fx();
        let gw_dual = id(&f
            .vgw(
                json!({"name": "d", "gateway_type": "VGW-M", "private_network_id": "pn-dual",
                        "public_config": {"ipam_ipv4_id": "ip4a", "ipam_ipv6_id": "ip6a"}}),
            )
            .unwrap());
        let gw_v4 = id(&f
            .vgw(
                json!({"name": "v4", "gateway_type": "VGW-S", "private_network_id": "pn-v4",
                        "public_tunnel_config": {"single_ipv4_tunnel": {"ipam_id": "ip4b"}}}),
            )
            .unwrap());
        let cg_dual = id(&f
            .cgw(json!({"name": "c", "asn": 65000, "ipv4_public": "203.0.113.1", "ipv6_public": "2001:db8:f::1"}))
            .unwrap());
        let cg_v6 = id(&f
            .cgw(json!({"name": "c6", "asn": 65001, "ipv6_public": "2001:db8:f::2"}))
            .unwrap());
        let rp4 = id(&f
            .rp(json!({"name": "r4", "is_ipv6": false, "prefix_filter_in": ["10.0.0.0/8"]}))
            .unwrap());
        let rp6 = id(&f
            .rp(json!({"name": "r6", "is_ipv6": true, "prefix_filter_in": ["2001:db8:a::/48"]}))
            .unwrap());
        World {
            f,
            gw_dual,
            gw_v4,
            cg_dual,
            cg_v6,
            rp4,
            rp6,
        }
    }

    fn conn_body(w: &World, vgw: &str, cgw: &str, is_ipv6: bool) -> Value {
        let (ike, esp) = ciphers();
        json!({"name": "x", "is_ipv6": is_ipv6, "initiation_policy": "vpn_gateway",
               "ikev2_ciphers": ike, "esp_ciphers": esp, "enable_route_propagation": false,
               "vpn_gateway_id": vgw, "customer_gateway_id": cgw,
               "bgp_config_ipv4": {"routing_policy_id": w.rp4}})
    }

    #[test]
    fn connection_events_are_kept_bounded_in_order_and_go_with_the_connection() {
        let w = world();
        let c =
            w.f.conn(conn_body(&w, &w.gw_dual, &w.cg_dual, false))
                .unwrap();
        let cid = id(&c["connection"]);
        let n = crate::store::EVENTS_KEPT + 5;
        let batch: Vec<(String, String, String)> = (0..n)
            .map(|i| (cid.clone(), "ike_sa_up".to_owned(), format!("event {i}")))
            .chain([(
                "gone".to_owned(),
                "ike_sa_up".to_owned(),
                "dropped".to_owned(),
            )])
            .collect();
        w.f.store.add_connection_events(&batch).unwrap();
        let all =
            w.f.store
                .read(|tx| tx.connection_events(&cid, 0, 1000))
                .unwrap();
        assert_eq!(all.len() as i64, crate::store::EVENTS_KEPT);
        assert_eq!(all[0].message, "event 5", "the oldest went");
        assert_eq!(all.last().unwrap().message, format!("event {}", n - 1));
        assert!(all.windows(2).all(|p| p[0].seq < p[1].seq));
        // Paging and following by seq.
        let after = all[all.len() - 3].seq;
        let tail =
            w.f.store
                .read(|tx| tx.connection_events(&cid, after, 10))
                .unwrap();
        assert_eq!(tail.len(), 2);
        let none =
            w.f.store
                .read(|tx| tx.connection_events("gone", 0, 10))
                .unwrap();
        assert!(none.is_empty());
        w.f.w(|tx, _| delete_connection(tx, &cid)).unwrap();
        let left =
            w.f.store
                .read(|tx| tx.connection_events(&cid, 0, 1000))
                .unwrap();
        assert!(left.is_empty());
    }

    #[test]
    fn secret_version_request_debug_hides_the_psk() {
        let r: CreateSecretVersionRequest =
            parse_body(json!({"data": "c2VjcmV0LXNlY3JldC1zZWNyZXQ=", "description": "d"}))
                .unwrap();
        let d = format!("{r:?}");
        assert!(!d.contains("c2VjcmV0"), "{d}");
        assert!(d.contains("<redacted>") && d.contains("\"d\""), "{d}");
    }

    #[test]
    fn psk_rules_hold_on_every_path() {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let w = world();
        let f = &w.f;
        let c = f
            .conn(conn_body(&w, &w.gw_dual, &w.cg_dual, false))
            .unwrap()["connection"]
            .clone();
        let cid = id(&c);
        let sid = c["secret_id"].as_str().unwrap().to_owned();
        let own = id(&f
            .w(|tx, c| create_secret(tx, c, parse_body(json!({"name": "mine"}))?))
            .unwrap());
        let version = |secret: &str, data: &[u8]| {
            let data = b64(data);
            f.w(|tx, c| create_secret_version(tx, c, secret, parse_body(json!({ "data": data }))?))
        };
        // Secret Manager versions follow the PSK rule: length and charset,
        // on the caller's secrets and on a connection's own.
        for bad in [
            &b"short"[..],
            &[b'a'; 129][..],
            b"0123456789abcdef\"\n}\nsecrets {",
            b"0123456789abcdef #comment",
            b"0123456789abcdef\\",
            b"0123456789abcdef\xc3\xa9",
        ] {
            refused(version(&own, bad), "data");
            refused(version(&sid, bad), "data");
        }
        assert_eq!(
            version(&own, b"operator-chosen-psk-0123456789").unwrap()["revision"],
            1
        );

        // Revisions that broke the rule before it existed (an older
        // database): change-psk and renew-psk refuse to adopt them.
        let bad = Psk::from_bytes(b"0123456789abcdef\"\nsecrets {".to_vec());
        let bad_rev = f
            .store
            .write(|tx| Ok::<_, ApiError>(tx.add_secret_revision(&sid, &bad)?))
            .unwrap();
        let renew = |generate: Option<bool>| {
            f.w(|tx, _| {
                renew_psk(
                    tx,
                    &cid,
                    RenewPskRequest {
                        generate_revision: generate,
                    },
                )
            })
        };
        refused(renew(None), "generate_revision");
        let change = |secret: &str, revision: u32| {
            f.w(|tx, _| {
                change_psk(
                    tx,
                    &cid,
                    ChangePskRequest {
                        secret: Some(SecretRef {
                            id: Some(secret.to_owned()),
                            revision: Some(revision),
                        }),
                    },
                )
            })
        };
        refused(change(&sid, bad_rev), "secret.id");
        let row = f
            .store
            .read(|tx| Ok::<_, ApiError>(tx.connection(&cid)?))
            .unwrap()
            .unwrap();
        assert_eq!(row.conn.secret_revision, 1, "the connection kept its PSK");
        // A good revision is still adopted, and generating one always works.
        assert_eq!(
            change(&own, 1).unwrap()["connection"]["secret_id"],
            own.as_str()
        );
        let r = renew(Some(true)).unwrap();
        assert_eq!(r["connection"]["secret_revision"], 1 + 1);
    }

    #[test]
    fn vpn_gateway_host_mapping_rules() {
        let f = fx();
        refused(
            f.vgw(json!({"name": "a", "gateway_type": "VGW-XL", "private_network_id": "pn-dual"})),
            "gateway_type",
        );
        refused(
            f.vgw(json!({"name": "a", "gateway_type": "VGW-S", "private_network_id": "pn-nope"})),
            "private_network_id",
        );
        refused(
            f.vgw(json!({"gateway_type": "VGW-S", "private_network_id": "pn-dual"})),
            "name",
        );
        refused(
            f.vgw(
                json!({"name": "a", "gateway_type": "VGW-S", "private_network_id": "pn-dual",
                         "public_config": {"ipam_ipv4_id": "ip6a"}}),
            ),
            "public_config.ipam_ipv4_id",
        );
        refused(
            f.vgw(
                json!({"name": "a", "gateway_type": "VGW-S", "private_network_id": "pn-dual",
                         "public_config": {"ipam_ipv6_id": "nope"}}),
            ),
            "public_config.ipam_ipv6_id",
        );
        refused(
            f.vgw(
                json!({"name": "a", "gateway_type": "VGW-S", "private_network_id": "pn-dual",
                         "public_config": {}, "public_tunnel_config": {}}),
            ),
            "public_config",
        );
        refused(
            f.vgw(
                json!({"name": "a", "gateway_type": "VGW-S", "private_network_id": "pn-dual",
                         "public_tunnel_config": {"single_ipv4_tunnel": {"ipam_id": "ip4a"},
                                                  "single_ipv6_tunnel": {"ipam_id": "ip6a"}}}),
            ),
            "public_tunnel_config",
        );
        refused(
            f.vgw(json!({"name": "a", "gateway_type": "VGW-S", "private_network_id": "pn-dual", "zone": "nl-ams-1"})),
            "zone",
        );
        // Without public IPs, free ones are taken; once all are used, refused.
        let g = f
            .vgw(json!({"name": "a", "gateway_type": "VGW-S", "private_network_id": "pn-dual"}))
            .unwrap();
        assert_eq!(g["public_config"]["ipam_ipv4_id"], "ip4a");
        assert_eq!(g["public_config"]["ipam_ipv6_id"], "ip6a");
        assert_eq!(g["status"], "provisioning");
        refused(
            f.vgw(
                json!({"name": "b", "gateway_type": "VGW-S", "private_network_id": "pn-dual",
                         "public_config": {"ipam_ipv4_id": "ip4a"}}),
            ),
            "public_config.ipam_ipv4_id",
        );
        let g2 = f
            .vgw(json!({"name": "b", "gateway_type": "VGW-S", "private_network_id": "pn-dual"}))
            .unwrap();
        assert_eq!(g2["public_config"]["ipam_ipv4_id"], "ip4b");
        assert!(g2["public_config"]["ipam_ipv6_id"].is_null());
        refused(
            f.vgw(json!({"name": "c", "gateway_type": "VGW-S", "private_network_id": "pn-dual"})),
            "public_config",
        );
        // The private network is immutable; unknown update fields are refused.
        let gid = id(&g);
        refused(
            f.w(|tx, _| update_vpn_gateway(tx, &gid, json!({"private_network_id": "pn-v4"}))),
            "private_network_id",
        );
        refused(
            f.w(|tx, _| update_vpn_gateway(tx, &gid, json!({"name": ""}))),
            "name",
        );
        let u = f
            .w(|tx, _| update_vpn_gateway(tx, &gid, json!({"name": "z", "tags": ["t"]})))
            .unwrap();
        assert_eq!(
            (u["name"].as_str(), u["tags"][0].as_str()),
            (Some("z"), Some("t"))
        );
    }

    #[test]
    fn customer_gateway_rules() {
        let f = fx();
        refused(f.cgw(json!({"name": "c", "asn": 65000})), "ipv4_public");
        refused(
            f.cgw(json!({"name": "c", "ipv4_public": "203.0.113.1"})),
            "asn",
        );
        refused(
            f.cgw(json!({"name": "c", "asn": 12876, "ipv4_public": "203.0.113.1"})),
            "asn",
        );
        refused(
            f.cgw(json!({"name": "c", "asn": 65000, "ipv4_public": "2001:db8::5"})),
            "ipv4_public",
        );
        refused(
            f.cgw(json!({"name": "c", "asn": 65000, "ipv6_public": "203.0.113.1"})),
            "ipv6_public",
        );
        // One of our own public IPs: no connecting two of our own VPCs.
        refused(
            f.cgw(json!({"name": "c", "asn": 65000, "ipv4_public": "192.0.2.2"})),
            "ipv4_public",
        );
        refused(
            f.cgw(json!({"name": "c", "asn": 65000, "ipv6_public": "2001:db8::1"})),
            "ipv6_public",
        );
        let c = f
            .cgw(json!({"name": "c", "asn": 65000, "ipv4_public": "203.0.113.1"}))
            .unwrap();
        let cid = id(&c);
        refused(
            f.w(|tx, c| {
                update_customer_gateway(
                    tx,
                    c,
                    &cid,
                    parse_body(json!({"ipv4_public": "192.0.2.1"}))?,
                )
            }),
            "ipv4_public",
        );
        refused(
            f.w(|tx, c| update_customer_gateway(tx, c, &cid, parse_body(json!({"asn": 12876}))?)),
            "asn",
        );
        let u = f
            .w(|tx, c| {
                update_customer_gateway(
                    tx,
                    c,
                    &cid,
                    parse_body(json!({"asn": 0, "ipv6_public": "2001:db8:f::9"}))?,
                )
            })
            .unwrap();
        assert_eq!(u["asn"], 65000, "asn 0 means unchanged");
        assert_eq!(u["public_ipv6"], "2001:db8:f::9");
    }

    #[test]
    fn routing_policy_rules() {
        let f = fx();
        refused(
            f.rp(json!({"name": "r", "is_ipv6": true, "prefix_filter_in": ["10.0.0.0/8"]})),
            "prefix_filter_in[0]",
        );
        refused(
            f.rp(json!({"name": "r", "prefix_filter_out": ["2001:db8::/32"]})),
            "prefix_filter_out[0]",
        );
        let p = f
            .rp(json!({"name": "r", "prefix_filter_in": ["10.0.0.0/8"]}))
            .unwrap();
        assert_eq!(p["is_ipv6"], false);
        let pid = id(&p);
        refused(
            f.w(|tx, _| update_routing_policy(tx, &pid, json!({"prefix_filter_in": ["::/0"]}))),
            "prefix_filter_in[0]",
        );
        refused(
            f.w(|tx, _| update_routing_policy(tx, &pid, json!({"is_ipv6": true}))),
            "is_ipv6",
        );
    }

    #[test]
    fn connection_relational_rules() {
        let w = world();
        let f = &w.f;
        // References.
        assert!(matches!(
            f.conn(conn_body(&w, "nope", &w.cg_dual, false)),
            Err(ApiError::NotFound {
                resource: "vpn_gateway",
                ..
            })
        ));
        assert!(matches!(
            f.conn(conn_body(&w, &w.gw_dual, "nope", false)),
            Err(ApiError::NotFound {
                resource: "customer_gateway",
                ..
            })
        ));
        // No shared family: IPv4-only VPN gateway, IPv6-only customer gateway.
        refused(
            f.conn(conn_body(&w, &w.gw_v4, &w.cg_v6, false)),
            "customer_gateway_id",
        );
        // The primary tunnel family must be shared.
        refused(f.conn(conn_body(&w, &w.gw_v4, &w.cg_dual, true)), "is_ipv6");
        refused(
            f.conn(conn_body(&w, &w.gw_dual, &w.cg_v6, false)),
            "is_ipv6",
        );
        // Routing policies: one at least, of the session's family.
        let mut b = conn_body(&w, &w.gw_dual, &w.cg_dual, false);
        b.as_object_mut().unwrap().remove("bgp_config_ipv4");
        refused(f.conn(b), "bgp_config_ipv4");
        let mut b = conn_body(&w, &w.gw_dual, &w.cg_dual, false);
        b["bgp_config_ipv4"] = json!({"routing_policy_id": w.rp6});
        refused(f.conn(b), "bgp_config_ipv4.routing_policy_id");
        let mut b = conn_body(&w, &w.gw_dual, &w.cg_dual, false);
        b["bgp_config_ipv6"] = json!({"routing_policy_id": w.rp4});
        refused(f.conn(b), "bgp_config_ipv6.routing_policy_id");
        // An IPv6 session needs an IPv6 subnet on the private network.
        let mut b = conn_body(&w, &w.gw_v4, &w.cg_dual, false);
        b["bgp_config_ipv6"] = json!({"routing_policy_id": w.rp6});
        refused(f.conn(b), "bgp_config_ipv6");
        // Initiation policy and ciphers.
        let mut b = conn_body(&w, &w.gw_dual, &w.cg_dual, false);
        b["initiation_policy"] = json!("unknown_initiation_policy");
        refused(f.conn(b), "initiation_policy");
        let mut b = conn_body(&w, &w.gw_dual, &w.cg_dual, false);
        b["esp_ciphers"] = json!([]);
        refused(f.conn(b), "esp_ciphers");

        // A dual connection with the primary tunnel on IPv6.
        let mut b = conn_body(&w, &w.gw_dual, &w.cg_dual, true);
        b["bgp_config_ipv6"] = json!({"routing_policy_id": w.rp6});
        b["bgp_config_ipv4"] = json!({"routing_policy_id": w.rp4,
                                      "private_ip": "169.254.0.1/30", "peer_private_ip": "169.254.0.2/30"});
        let c = f.conn(b).unwrap()["connection"].clone();
        assert_eq!(c["is_ipv6"], true);
        assert_eq!(c["tunnel_status_ipv4"], "down");
        assert_eq!(c["tunnel_status_ipv6"], "down");
        assert_eq!(c["bgp_session_ipv4"]["private_ip"], "169.254.0.1/30");
        assert_eq!(c["bgp_session_ipv6"]["private_ip"], "fd53:3273:7670::/127");
        assert_eq!(
            c["bgp_session_ipv6"]["peer_private_ip"],
            "fd53:3273:7670::1/127"
        );
        assert_eq!(c["secret_revision"], 1);
        let cid = id(&c);

        // Given interconnection subnets must not overlap; allocation skips them.
        let mut b = conn_body(&w, &w.gw_v4, &w.cg_dual, false);
        b["bgp_config_ipv4"] = json!({"routing_policy_id": w.rp4,
                                      "private_ip": "169.254.0.2/31", "peer_private_ip": "169.254.0.3/31"});
        refused(f.conn(b), "bgp_config_ipv4.private_ip");
        let c2 = f.conn(conn_body(&w, &w.gw_v4, &w.cg_dual, false)).unwrap()["connection"].clone();
        assert_eq!(c2["bgp_session_ipv4"]["private_ip"], "169.254.0.5/30");
        assert!(
            c2["tunnel_status_ipv6"].is_null(),
            "no IPv6 tunnel on an IPv4-only gateway"
        );
        assert_eq!(c2["bgp_status_ipv6"], "disabled");

        // allowed_connections of VGW-S is 1.
        assert!(matches!(
            f.conn(conn_body(&w, &w.gw_v4, &w.cg_dual, false)),
            Err(ApiError::QuotaExceeded {
                quota: 1,
                current: 1,
                ..
            })
        ));

        // In use: refused deletes, and a customer gateway keeps its primary family.
        let (g, cg, rp) = (w.gw_dual.clone(), w.cg_dual.clone(), w.rp6.clone());
        assert!(matches!(
            f.w(|tx, _| delete_vpn_gateway(tx, &g)),
            Err(ApiError::StillInUse { .. })
        ));
        assert!(matches!(
            f.w(|tx, _| delete_customer_gateway(tx, &cg).map(|_| Value::Null)),
            Err(ApiError::StillInUse { .. })
        ));
        assert!(matches!(
            f.w(|tx, _| delete_routing_policy(tx, &rp).map(|_| Value::Null)),
            Err(ApiError::StillInUse { .. })
        ));
        refused(
            f.w(|tx, c| {
                update_customer_gateway(tx, c, &cg, parse_body(json!({"ipv6_public": ""}))?)
            }),
            "ipv6_public",
        );

        // Routing policy actions.
        let one = |v4: Option<&str>, v6: Option<&str>| RoutingPolicyOneOf {
            routing_policy_v4: v4.map(Into::into),
            routing_policy_v6: v6.map(Into::into),
        };
        refused(
            f.w(|tx, c| set_routing_policy(tx, c, &cid, one(None, None))),
            "routing_policy_v4",
        );
        refused(
            f.w(|tx, c| set_routing_policy(tx, c, &cid, one(Some(&w.rp4), Some(&w.rp6)))),
            "routing_policy_v4",
        );
        refused(
            f.w(|tx, c| set_routing_policy(tx, c, &cid, one(Some(&w.rp6), None))),
            "routing_policy_v4",
        );
        let d = f
            .w(|tx, _| detach_routing_policy(tx, &cid, one(None, Some(&w.rp6))))
            .unwrap();
        assert!(d["bgp_session_ipv6"].is_null());
        assert_eq!(d["bgp_status_ipv6"], "disabled");
        assert!(matches!(
            f.w(|tx, _| detach_routing_policy(tx, &cid, one(Some(&w.rp4), None))),
            Err(ApiError::StillInUse { .. })
        ));
        // Re-attaching gives the same interconnection subnet back.
        let s = f
            .w(|tx, c| set_routing_policy(tx, c, &cid, one(None, Some(&w.rp6))))
            .unwrap();
        assert_eq!(s["bgp_session_ipv6"]["private_ip"], "fd53:3273:7670::/127");

        // PSK revisions.
        let r = f
            .w(|tx, _| {
                renew_psk(
                    tx,
                    &cid,
                    RenewPskRequest {
                        generate_revision: Some(true),
                    },
                )
            })
            .unwrap();
        assert_eq!(r["connection"]["secret_revision"], 2);
        assert!(r["pre_shared_key"].is_null());
        let sid = c["secret_id"].as_str().unwrap().to_owned();
        let psk1 = f.w(|tx, _| access_secret(tx, &sid, "1")).unwrap()["data"].clone();
        let psk2 = f.w(|tx, _| access_secret(tx, &sid, "latest")).unwrap()["data"].clone();
        assert_ne!(psk1, psk2);
        let ch = f
            .w(|tx, _| {
                change_psk(
                    tx,
                    &cid,
                    ChangePskRequest {
                        secret: Some(SecretRef {
                            id: Some(sid.clone()),
                            revision: Some(1),
                        }),
                    },
                )
            })
            .unwrap();
        assert_eq!(ch["connection"]["secret_revision"], 1);
        refused(
            f.w(|tx, _| {
                change_psk(
                    tx,
                    &cid,
                    ChangePskRequest {
                        secret: Some(SecretRef {
                            id: Some(sid.clone()),
                            revision: Some(7),
                        }),
                    },
                )
            }),
            "secret.revision",
        );
        assert!(matches!(
            f.w(|tx, _| access_secret(tx, &sid, "x")),
            Err(ApiError::InvalidArguments(_))
        ));

        // Lists: filters, order, pagination.
        let q = |s: &str| ListQuery::from_query(s);
        let l = f
            .w(|tx, _| list_connections(tx, &q("is_ipv6=True")))
            .unwrap();
        assert_eq!(l["total_count"], 1);
        let l = f
            .w(|tx, _| list_connections(tx, &q("order_by=created_at_desc&page_size=1&page=1")))
            .unwrap();
        assert_eq!(l["total_count"], 2);
        assert_eq!(l["connections"][0]["id"], c2["id"]);
        let l = f
            .w(|tx, _| list_connections(tx, &q(&format!("routing_policy_ids={}", w.rp6))))
            .unwrap();
        assert_eq!(l["total_count"], 1);
        assert!(f
            .w(|tx, _| list_connections(tx, &q("is_ipv6=maybe")))
            .is_err());
        assert!(f
            .w(|tx, _| list_connections(tx, &q("statuses=sideways")))
            .is_err());
        let g = f.w(|tx, _| get_vpn_gateway(tx, &w.gw_dual)).unwrap();
        assert_eq!(g["connection_ids"], json!([cid]));

        // Deleting the connection deletes its secret and frees the gateways.
        f.w(|tx, _| delete_connection(tx, &cid).map(|_| Value::Null))
            .unwrap();
        assert!(matches!(
            f.w(|tx, _| access_secret(tx, &sid, "1")),
            Err(ApiError::NotFound { .. })
        ));
        let d = f.w(|tx, _| delete_vpn_gateway(tx, &w.gw_dual)).unwrap();
        assert_eq!(d["status"], "deprovisioning");
        // No new connection on a deprovisioning gateway.
        assert!(matches!(
            f.conn(conn_body(&w, &w.gw_dual, &w.cg_dual, false)),
            Err(ApiError::TransientState { .. })
        ));
    }

    #[test]
    fn agent_view_and_statuses() {
        let w = world();
        let f = &w.f;
        let mut rx = f.store.subscribe();
        let mut b = conn_body(&w, &w.gw_dual, &w.cg_dual, true);
        b["bgp_config_ipv6"] = json!({"routing_policy_id": w.rp6});
        let c = f.conn(b).unwrap()["connection"].clone();
        let cid = id(&c);
        assert!(rx.has_changed().unwrap(), "API writes notify the agent");
        rx.borrow_and_update();

        let st = f.store.desired_state(&f.config).unwrap();
        assert_eq!(st.vpn_gateways.len(), 2);
        let v4gw = st
            .vpn_gateways
            .iter()
            .find(|g| g.gateway.id == w.gw_v4)
            .unwrap();
        assert_eq!(v4gw.public_ipv4, Some("192.0.2.2".parse().unwrap()));
        assert_eq!(v4gw.public_ipv6, None);
        assert_eq!(v4gw.private_network.as_ref().unwrap().interface, "lan1");
        assert_eq!(st.connections.len(), 1);
        let spec = &st.connections[0];
        // Two tunnels, the primary (IPv6, `is_ipv6`) first.
        assert_eq!(spec.tunnels.len(), 2);
        assert!(spec.tunnels[0].primary && spec.tunnels[0].family == Family::V6);
        assert_eq!(
            spec.tunnels[0].local,
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            spec.tunnels[0].remote,
            "2001:db8:f::1".parse::<IpAddr>().unwrap()
        );
        assert!(!spec.tunnels[1].primary && spec.tunnels[1].family == Family::V4);
        assert_eq!(
            spec.tunnels[1].remote,
            "203.0.113.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(spec.private_network.as_ref().unwrap().interface, "lan0");
        assert_eq!(spec.customer_gateway.asn, 65000);
        assert_eq!(spec.vpn_gateway.id, w.gw_dual);
        assert_eq!(spec.customer_gateway.id, w.cg_dual);
        assert_eq!(spec.routing_policy_ipv4.as_ref().unwrap().id, w.rp4);
        assert_eq!(spec.routing_policy_ipv6.as_ref().unwrap().id, w.rp6);
        assert_eq!(
            spec.interco_ipv4.unwrap().local.to_string(),
            "169.254.0.1/30"
        );
        assert_eq!(
            tunnel_families(&f.config, &spec.vpn_gateway, &spec.customer_gateway),
            vec![Family::V4, Family::V6]
        );
        assert_eq!(
            vpn_gateway_addresses(&f.config, &spec.vpn_gateway),
            (
                Some("192.0.2.1".parse().unwrap()),
                Some("2001:db8::1".parse().unwrap())
            )
        );
        let psk = f.store.connection_psk(&cid).unwrap();
        assert_eq!(psk.len(), crate::secrets::PSK_LEN);

        // Statuses: tunnel_status follows the primary (IPv6) tunnel; status
        // writes do not wake the agent.
        f.store
            .set_connection_status(
                &cid,
                &ConnectionStatusUpdate {
                    status: crate::model::ConnectionStatus::LimitedConnectivity,
                    tunnel_status_ipv4: TunnelStatus::Down,
                    tunnel_status_ipv6: TunnelStatus::Up,
                    bgp_status_ipv4: BgpSessionStatus::Down,
                    bgp_status_ipv6: BgpSessionStatus::Up,
                    tunnel_mtu_ipv4: None,
                    tunnel_mtu_ipv6: None,
                },
            )
            .unwrap();
        assert!(!rx.has_changed().unwrap());
        let g = f.w(|tx, _| get_connection(tx, &cid)).unwrap();
        assert_eq!(g["status"], "limited_connectivity");
        assert_eq!(g["tunnel_status"], "up");
        assert_eq!(g["tunnel_status_ipv4"], "down");
        assert_eq!(g["bgp_status_ipv6"], "up");
        f.store
            .set_vpn_gateway_status(&w.gw_v4, VpnGatewayStatus::Active)
            .unwrap();
        assert_eq!(
            f.w(|tx, _| get_vpn_gateway(tx, &w.gw_v4)).unwrap()["status"],
            "active"
        );
        // Deletion: deprovisioning, then the agent removes it.
        assert!(
            !f.store.finish_vpn_gateway_deletion(&w.gw_v4).unwrap(),
            "only deprovisioning gateways"
        );
        f.w(|tx, _| delete_vpn_gateway(tx, &w.gw_v4)).unwrap();
        assert!(f.store.finish_vpn_gateway_deletion(&w.gw_v4).unwrap());
        assert!(matches!(
            f.w(|tx, _| get_vpn_gateway(tx, &w.gw_v4)),
            Err(ApiError::NotFound { .. })
        ));
        assert!(matches!(
            f.store.connection_psk("nope"),
            Err(StoreError::NotFound(_))
        ));
    }

    /// Bounded deterministic random input (xorshift): raw bytes, and
    /// mutations of valid bodies so the validators are reached.
    #[test]
    fn random_untrusted_input_never_panics() {
        let seeds: [&[u8]; 5] = [
            br#"{"name":"c","is_ipv6":true,"initiation_policy":"vpn_gateway","ikev2_ciphers":[{"encryption":"aes256","integrity":"sha256","dh_group":"ecp256"}],"esp_ciphers":[{"encryption":"aes128gcm"}],"bgp_config_ipv4":{"routing_policy_id":"x","private_ip":"169.254.0.1/30","peer_private_ip":"169.254.0.2/30"},"tags":["a"]}"#,
            br#"{"name":"c","asn":65000,"ipv4_public":"203.0.113.1","ipv6_public":"2001:db8::1"}"#,
            br#"{"name":"r","is_ipv6":false,"prefix_filter_in":["10.0.0.0/8"],"prefix_filter_out":["2001:db8::/32"]}"#,
            br#"{"name":"g","public_tunnel_config":{"dual_ipv4v6_tunnel":{"ipam_ipv4_id":"a","ipam_ipv6_id":"b"}},"routing_policy_v4":"x"}"#,
            b"page=1&page_size=100&order_by=name_desc&tags=a&tags=b&is_ipv6=True&name=%ff%00",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000u32 {
            let r = next();
            let data: Vec<u8> = if i % 2 == 0 {
                let len = usize::try_from(r % 300).unwrap_or(0);
                (0..len)
                    .map(|_| u8::try_from(next() & 0xff).unwrap_or(0))
                    .collect()
            } else {
                let mut d = seeds[usize::try_from(r % 5).unwrap_or(0)].to_vec();
                for _ in 0..(1 + r % 4) {
                    let n = next();
                    let pos = usize::try_from(n % u64::try_from(d.len()).unwrap_or(1)).unwrap_or(0);
                    // Printable replacements keep most mutants valid JSON.
                    const CHARS: &[u8] = b"0123456789:/.,{}[]-af\" ";
                    let c = CHARS[usize::try_from((n >> 32) % CHARS.len() as u64).unwrap_or(0)];
                    if let Some(b) = d.get_mut(pos) {
                        *b = c;
                    }
                }
                d
            };
            exercise_untrusted_input(&data);
        }
    }

    #[test]
    fn secret_manager_calls() {
        use base64::Engine as _;
        let w = world();
        let f = &w.f;
        let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        let s = f
            .w(|tx, c| {
                create_secret(
                    tx,
                    c,
                    parse_body(json!({"name": "mine", "type": "opaque"}))?,
                )
            })
            .unwrap();
        let sid = id(&s);
        refused(
            f.w(|tx, c| {
                create_secret(
                    tx,
                    c,
                    parse_body(json!({"name": "k", "type": "key_value"}))?,
                )
            }),
            "type",
        );
        let ver = |data: Value| {
            let sid = sid.clone();
            f.w(move |tx, c| create_secret_version(tx, c, &sid, parse_body(json!({"data": data}))?))
        };
        refused(ver(json!("not base64!")), "data");
        refused(ver(json!("")), "data");
        refused(ver(json!(b64(&[7u8; 5000]))), "data");
        refused(ver(json!(b64(b"short"))), "data");
        // A revision from before the PSK rule (older database) is too short.
        let old = f
            .store
            .write(|tx| {
                Ok::<_, ApiError>(
                    tx.add_secret_revision(&sid, &Psk::from_bytes(b"short".to_vec()))?,
                )
            })
            .unwrap();
        assert_eq!(old, 1);
        assert_eq!(
            ver(json!(b64(b"a-long-enough-pre-shared-key"))).unwrap()["revision"],
            2
        );
        assert_eq!(
            f.w(|tx, c| get_secret(tx, c, &sid)).unwrap()["version_count"],
            2
        );
        let got = f
            .w(|tx, _| access_secret(tx, &sid, "latest_enabled"))
            .unwrap();
        assert_eq!(got["data"], b64(b"a-long-enough-pre-shared-key"));
        assert_eq!(got["type"], "opaque");

        // A connection created on the caller's secret (revision 1 is too short).
        let mut b = conn_body(&w, &w.gw_dual, &w.cg_dual, false);
        b["secret"] = json!({"id": sid, "revision": 1});
        refused(f.conn(b.clone()), "secret.id");
        b["secret"] = json!({"id": sid});
        let c = f.conn(b).unwrap()["connection"].clone();
        assert_eq!(
            (c["secret_id"].as_str(), c["secret_revision"].as_u64()),
            (Some(sid.as_str()), Some(2))
        );
        assert_eq!(
            f.store.connection_psk(&id(&c)).unwrap().expose(),
            b"a-long-enough-pre-shared-key"
        );
        // Deleting the connection keeps the caller's secret.
        let cid = id(&c);
        f.w(|tx, _| delete_connection(tx, &cid).map(|_| Value::Null))
            .unwrap();
        assert!(f.w(|tx, _| access_secret(tx, &sid, "2")).is_ok());
        assert!(matches!(
            f.w(|tx, c| get_secret(tx, c, "nope")),
            Err(ApiError::NotFound { .. })
        ));
    }

    #[test]
    fn customer_gateway_family_change_updates_tunnels() {
        let w = world();
        let f = &w.f;
        // Primary IPv6 on the dual gateways: IPv4 is the secondary tunnel.
        let mut b = conn_body(&w, &w.gw_dual, &w.cg_dual, true);
        b["bgp_config_ipv6"] = json!({"routing_policy_id": w.rp6});
        let cid = id(&f.conn(b).unwrap()["connection"]);
        let cg = w.cg_dual.clone();
        let upd = |body: Value| {
            let cg = cg.clone();
            f.w(move |tx, c| update_customer_gateway(tx, c, &cg, parse_body(body)?))
        };
        upd(json!({"ipv4_public": ""})).unwrap();
        let c = f.w(|tx, _| get_connection(tx, &cid)).unwrap();
        assert!(c["tunnel_status_ipv4"].is_null());
        assert_eq!(c["tunnel_status_ipv6"], "down");
        upd(json!({"ipv4_public": "203.0.113.77"})).unwrap();
        let c = f.w(|tx, _| get_connection(tx, &cid)).unwrap();
        assert_eq!(c["tunnel_status_ipv4"], "down");
        let st = f.store.desired_state(&f.config).unwrap();
        assert_eq!(st.connections[0].tunnels.len(), 2);
        assert_eq!(
            st.connections[0].tunnels[1].remote,
            "203.0.113.77".parse::<IpAddr>().unwrap()
        );
        // Removing the primary family is refused.
        refused(upd(json!({"ipv6_public": ""})), "ipv6_public");
    }

    #[test]
    fn tunnel_mtus_are_stored_served_and_advised() {
        use crate::model::TunnelMtu;
        let w = world();
        let f = &w.f;
        let mut b = conn_body(&w, &w.gw_dual, &w.cg_dual, true);
        b["bgp_config_ipv6"] = json!({"routing_policy_id": w.rp6});
        let cid = id(&f.conn(b).unwrap()["connection"]);
        let get = || f.w(|tx, _| get_connection(tx, &cid)).unwrap();
        // Created: no CHILD SA yet, null (and still null in a fresh store).
        let c = get();
        assert!(c["tunnel_mtu_ipv4"].is_null() && c["tunnel_mtu_ipv6"].is_null());
        let v4 = TunnelMtu {
            inner_mtu: 1438,
            tcp_mss_ipv4: 1398,
            tcp_mss_ipv6: 1378,
            mss_clamp: true,
        };
        let up = ConnectionStatusUpdate {
            status: crate::model::ConnectionStatus::LimitedConnectivity,
            tunnel_status_ipv4: TunnelStatus::Up,
            tunnel_status_ipv6: TunnelStatus::Down,
            bgp_status_ipv4: BgpSessionStatus::Up,
            bgp_status_ipv6: BgpSessionStatus::Down,
            tunnel_mtu_ipv4: Some(v4),
            tunnel_mtu_ipv6: None,
        };
        f.store.set_connection_status(&cid, &up).unwrap();
        let c = get();
        assert_eq!(
            c["tunnel_mtu_ipv4"],
            json!({"inner_mtu": 1438, "tcp_mss_ipv4": 1398, "tcp_mss_ipv6": 1378, "mss_clamp": true})
        );
        assert!(c["tunnel_mtu_ipv6"].is_null());
        // The SDK's fields are all still there.
        assert_eq!(c["tunnel_status_ipv4"], "up");
        assert_eq!(c["tunnel_status"], "down");
        // Persisted: a restarted daemon (a second store on the same
        // directory) reads it back.
        let reopened = Store::open(f._dir.path()).unwrap();
        let row = reopened.read(|tx| tx.connection(&cid)).unwrap().unwrap();
        assert_eq!(row.conn.tunnel_mtu_ipv4, Some(v4));
        assert_eq!(row.conn.tunnel_mtu_ipv6, None);
        // The strongSwan config advises it.
        let dc = f
            .w(|tx, c| crate::device_config::for_connection(tx, c, &cid, "strongswan"))
            .unwrap();
        assert!(
            dc.contains("#   v4 tunnel: inner MTU 1438, TCP MSS 1398 (IPv4) / 1378 (IPv6), clamped by our gateway\n"),
            "{dc}"
        );
        assert!(
            dc.contains("#   v6 tunnel: not reported yet (no CHILD SA up)\n"),
            "{dc}"
        );
        assert!(dc.contains("#   ip link set ipsec0 mtu 1438\n"), "{dc}");
        // The tunnel goes down: null again.
        f.store
            .set_connection_status(
                &cid,
                &ConnectionStatusUpdate {
                    tunnel_status_ipv4: TunnelStatus::Down,
                    tunnel_mtu_ipv4: None,
                    ..up
                },
            )
            .unwrap();
        assert!(get()["tunnel_mtu_ipv4"].is_null());
        // A family without a tunnel never reports sizes, and removing a
        // tunnel's family takes its sizes away.
        f.store.set_connection_status(&cid, &up).unwrap();
        let cg = w.cg_dual.clone();
        f.w(move |tx, c| {
            update_customer_gateway(tx, c, &cg, parse_body(json!({"ipv4_public": ""}))?)
        })
        .unwrap();
        assert!(get()["tunnel_mtu_ipv4"].is_null());
        f.store.set_connection_status(&cid, &up).unwrap();
        assert!(get()["tunnel_mtu_ipv4"].is_null());
        let dc = f
            .w(|tx, c| crate::device_config::for_connection(tx, c, &cid, "strongswan"))
            .unwrap();
        assert!(!dc.contains("ip link set"), "{dc}");
    }
}
