//! Customer gateways: their public IPs (never one of the host's own) and ASN.

use super::*;

#[derive(Debug, Serialize, Deserialize, Default)]
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
pub(super) fn refuse_own_address(config: &Config, field: &str, ip: IpAddr) -> Result<(), ApiError> {
    if config.public_ips.iter().any(|p| p.address == ip) {
        return Err(ApiError::constraint(
            field,
            format!("{ip} is a public IP of one of our VPN gateways: connecting two of our own VPCs is not supported"),
        ));
    }
    Ok(())
}

pub(super) fn customer_ips(
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
        organization_id: config.organization_of(&project_id),
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
    to_value(&render_customer_gateway(tx, g)?)
}

pub fn list_customer_gateways(tx: &mut Tx<'_>, q: &ListQuery) -> Result<Value, ApiError> {
    let (page, size) = q.page()?;
    let order = q.order_by(&["created_at_asc", "created_at_desc", "name_asc", "name_desc"])?;
    let mut ids = tx.connection_ids_by(GatewayKind::Customer)?;
    let items: Vec<CustomerGateway> = tx
        .customer_gateways()?
        .into_iter()
        .filter(|g| q.common_match(&g.project_id, &g.organization_id, &g.name, &g.tags))
        .map(|mut g| {
            g.connection_ids = ids.remove(&g.id).unwrap_or_default();
            g
        })
        .collect();
    list_response(items, order, (page, size), "gateways", |f, g| {
        (f == "name").then(|| g.name.clone())
    })
}

#[derive(Debug, Serialize, Deserialize, Default)]
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
    // Connections must keep their primary tunnel family; a family added or
    // removed adds or removes their secondary tunnel.
    for c in &tx.connections_on(GatewayKind::Customer, &g.id)? {
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
    to_value(&render_customer_gateway(tx, g)?)
}

pub fn delete_customer_gateway(tx: &mut Tx<'_>, id: &str) -> Result<(), ApiError> {
    if tx.customer_gateway(id)?.is_none() {
        return Err(ApiError::not_found("customer_gateway", id));
    }
    refuse_while_used(
        "customer_gateway",
        "customer gateway is used by",
        "delete them first",
        tx.connection_ids_on(GatewayKind::Customer, id)?,
    )?;
    tx.delete_customer_gateway(id)?;
    Ok(())
}
