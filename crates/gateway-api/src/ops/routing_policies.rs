//! Routing policies: prefix filters in and out, one IP family each.

use super::*;

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct CreateRoutingPolicyRequest {
    pub name: Option<String>,
    pub is_ipv6: Option<bool>,
    pub project_id: Option<String>,
    pub tags: Option<Vec<String>>,
    pub prefix_filter_in: Option<Vec<String>>,
    pub prefix_filter_out: Option<Vec<String>>,
}

pub(super) fn canonical(nets: Vec<ipnet::IpNet>) -> Vec<String> {
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
        organization_id: config.organization_of(&project_id),
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
    let items: Vec<RoutingPolicy> = tx
        .routing_policies()?
        .into_iter()
        .filter(|p| {
            q.common_match(&p.project_id, &p.organization_id, &p.name, &p.tags)
                && ipv6.is_none_or(|v| v == p.is_ipv6)
        })
        .collect();
    list_response(items, order, (page, size), "routing_policies", |f, p| {
        (f == "name").then(|| p.name.clone())
    })
}

#[derive(Debug, Serialize, Deserialize, Default)]
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
    let attached = ConnectionQuery {
        routing_policy_ids: vec![id],
        limit: u64::MAX,
        ..ConnectionQuery::default()
    };
    let (users, _) = tx.connection_page(&attached)?;
    refuse_while_used(
        "routing_policy",
        "routing policy is attached to",
        "detach it first",
        users.into_iter().map(|c| c.conn.id).collect(),
    )?;
    tx.delete_routing_policy(id)?;
    Ok(())
}
