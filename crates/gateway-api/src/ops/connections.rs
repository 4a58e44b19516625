//! Connections: their gateways, tunnels and BGP sessions, PSKs, routing policies and route propagation, events.

use super::*;
use crate::store::ConnectionOrder;

#[derive(Debug, Serialize, Deserialize, Default, Clone)]
pub struct BgpConfigRequest {
    pub routing_policy_id: Option<String>,
    pub private_ip: Option<String>,
    pub peer_private_ip: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, Default, Clone)]
pub struct SecretRef {
    pub id: Option<String>,
    pub revision: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, Default)]
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

pub(super) fn initiation_policy(field: &str, s: &str) -> Result<InitiationPolicy, ApiError> {
    let p = InitiationPolicy::parse_field(field, s)?;
    if p == InitiationPolicy::UnknownInitiationPolicy {
        return Err(ApiError::constraint(
            field,
            "must be vpn_gateway or customer_gateway",
        ));
    }
    Ok(p)
}

/// Checks a routing policy for the session of `family`.
pub(super) fn policy_for(
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

pub(super) fn session_of(c: &mut Connection, f: Family) -> &mut Option<BgpSession> {
    match f {
        Family::V4 => &mut c.bgp_session_ipv4,
        Family::V6 => &mut c.bgp_session_ipv6,
    }
}

pub(super) fn bgp_status_of(c: &mut Connection, f: Family) -> &mut BgpSessionStatus {
    match f {
        Family::V4 => &mut c.bgp_status_ipv4,
        Family::V6 => &mut c.bgp_status_ipv6,
    }
}

/// A BGP session of `family` needs the VPN gateway's private network to
/// have a subnet of that family to announce.
pub(super) fn check_private_network_family(
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

pub(super) fn render_connection(row: &ConnectionRow) -> Result<Value, ApiError> {
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
    let project_id = project(req.project_id)?;
    same_project(
        tx,
        "vpn_gateway_id",
        Owned::VpnGateway,
        &vgw_id,
        &project_id,
    )?;
    same_project(
        tx,
        "customer_gateway_id",
        Owned::CustomerGateway,
        &cgw_id,
        &project_id,
    )?;
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
    let allowed = config
        .gateway_type(&vgw.gateway_type)
        .map(|t| t.allowed_connections)
        .unwrap_or(0);
    quota("connections", tx.connection_count_on(&vgw.id)?, allowed)?;
    if let Some(limit) = config.gateway.connections_per_host {
        quota("connections_per_host", tx.connection_count()?, limit)?;
    }
    if req.bgp_config_ipv4.is_none() && req.bgp_config_ipv6.is_none() {
        return Err(ApiError::constraint(
            "bgp_config_ipv4",
            "at least one routing policy is required: set bgp_config_ipv4 and/or bgp_config_ipv6",
        ));
    }
    let mut taken = tx.intercos(None)?;
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
        let pfield = format!("{field}.routing_policy_id");
        policy_for(tx, &pfield, pid, fam)?;
        same_project(tx, &pfield, Owned::RoutingPolicy, pid, &project_id)?;
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
        Some(s) => {
            let (sid, rev) = resolve_secret_ref(tx, "secret", &s)?;
            same_project(tx, "secret.id", Owned::Secret, &sid, &project_id)?;
            (sid, rev)
        }
        None => {
            let sid = crate::new_id()?;
            let psk = Psk::generate().map_err(ApiError::internal)?;
            let rev = tx.add_secret_revision(&sid, &psk)?;
            record_generated_secret(tx, config, &sid, &id, &project_id)?;
            (sid, rev)
        }
    };
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
        organization_id: config.organization_of(&project_id),
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

pub(super) fn resolve_secret_ref(
    tx: &Tx<'_>,
    field: &str,
    s: &SecretRef,
) -> Result<(String, u32), ApiError> {
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
pub(super) fn usable_psk(tx: &Tx<'_>, id: &str, rev: u32, field: &str) -> Result<(), ApiError> {
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

pub(super) fn load_connection(tx: &Tx<'_>, id: &str) -> Result<ConnectionRow, ApiError> {
    tx.connection(id)?
        .ok_or_else(|| ApiError::not_found("connection", id))
}

/// `quotas_exceeded` once `used` reaches `allowed`.
fn quota(resource: &'static str, used: usize, allowed: u32) -> Result<(), ApiError> {
    if used >= usize::try_from(allowed).unwrap_or(usize::MAX) {
        return Err(ApiError::QuotaExceeded {
            resource,
            quota: u64::from(allowed),
            current: u64::try_from(used).unwrap_or(u64::MAX),
        });
    }
    Ok(())
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
    let query = ConnectionQuery {
        projects: q.scope.project_list(),
        project_id: q.one("project_id"),
        organization_id: q.one("organization_id"),
        name_contains: q.one("name"),
        tags: q.many("tags"),
        statuses,
        is_ipv6: q.bool("is_ipv6")?,
        route_propagation_enabled: q.bool("route_propagation_enabled")?,
        routing_policy_ids: q.many("routing_policy_ids"),
        vpn_gateway_ids: q.many("vpn_gateway_ids"),
        customer_gateway_ids: q.many("customer_gateway_ids"),
        order: match order.trim_end_matches("_asc").trim_end_matches("_desc") {
            "name" => ConnectionOrder::Name,
            "status" => ConnectionOrder::Status,
            _ => ConnectionOrder::Created,
        },
        descending: order.ends_with("_desc"),
        offset: u64::from(page - 1) * u64::from(size),
        limit: u64::from(size),
    };
    let (rows, total) = tx.connection_page(&query)?;
    let items: Vec<Connection> = rows.into_iter().map(|r| r.conn).collect();
    Ok(json!({"connections": to_value(&items)?, "total_count": total}))
}

#[derive(Debug, Serialize, Deserialize, Default)]
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

#[derive(Debug, Serialize, Deserialize, Default)]
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

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct ChangePskRequest {
    pub secret: Option<SecretRef>,
}

/// `change-psk`: points the connection at a caller-given secret (id and
/// revision, latest if omitted) that the secret store holds.
pub fn change_psk(tx: &mut Tx<'_>, id: &str, req: ChangePskRequest) -> Result<Value, ApiError> {
    let mut row = load_connection(tx, id)?;
    let s = req.secret.ok_or_else(|| ApiError::required("secret"))?;
    let (sid, rev) = resolve_secret_ref(tx, "secret", &s)?;
    same_project(tx, "secret.id", Owned::Secret, &sid, &row.conn.project_id)?;
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

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct RoutingPolicyOneOf {
    pub routing_policy_v4: Option<String>,
    pub routing_policy_v6: Option<String>,
}

impl RoutingPolicyOneOf {
    pub(super) fn one(&self) -> Result<(Family, &str, &'static str), ApiError> {
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
    same_project(tx, field, Owned::RoutingPolicy, pid, &row.conn.project_id)?;
    let vgw = tx
        .vpn_gateway(&row.conn.vpn_gateway_id)?
        .ok_or_else(|| ApiError::not_found("vpn_gateway", &row.conn.vpn_gateway_id))?;
    check_private_network_family(config, &vgw, field, fam)?;
    let ic = match row.interco.get(fam) {
        Some(ic) => ic,
        None => {
            let mut taken = tx.intercos(Some(id))?;
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
