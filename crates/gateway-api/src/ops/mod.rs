//! The API's operations: each endpoint as a function of one store
//! transaction, the daemon's config and the parsed request. Here live the
//! rules that relate resources to each other and to the host (references,
//! a shared IP family, one policy per family, in-use refusals, the host's
//! private networks and public IPs, `allowed_connections`); the field rules
//! are in `model`. No HTTP here: `api` maps paths and queries onto these.
//!
//! One module per resource (`vpn_gateways`, `customer_gateways`,
//! `routing_policies`, `connections`, `secret_manager`), re-exported here;
//! this module holds what they share: the list layer (`ListQuery`,
//! pagination, ordering, filters), the imports they all use, and the
//! untrusted-input entry point of the fuzz target.

use std::net::IpAddr;

use gateway_config::Config;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::model::{
    allocate_interco, parse_interco, validate_ciphers, validate_customer_asn, validate_name,
    validate_prefixes, validate_public_ip, validate_tags, BgpSession, BgpSessionStatus,
    CipherRequest, CipherUse, Connection, ConnectionStatus, CustomerGateway, Family, GatewayType,
    InitiationPolicy, RoutingPolicy, TunnelStatus, VpnGateway, VpnGatewayPublicConfig,
    VpnGatewayStatus,
};
use crate::secrets::Psk;
use crate::store::{ConnectionQuery, ConnectionRow, GatewayKind, IntercoSet, Owned, Tx};

mod connections;
mod customer_gateways;
mod routing_policies;
mod secret_manager;
mod vpn_gateways;
pub use connections::*;
pub use customer_gateways::*;
pub use routing_policies::*;
pub use secret_manager::*;
pub use vpn_gateways::*;

/// Project of resources created without one (the SDK sends its
/// `default_project_id`, which may be unset).
pub const DEFAULT_PROJECT_ID: &str = "00000000-0000-0000-0000-000000000000";
pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;

/// What the caller's key may act on: every project (an operator's key)
/// or some projects (a tenant's). The API confines every call to it:
/// lists show only its projects, a resource of another project answers
/// `not_found` as if it did not exist, and creating in another project is
/// refused with `permissions_denied`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// `None`: every project. Never empty.
    projects: Option<std::sync::Arc<[String]>>,
}

impl Scope {
    /// Every project.
    pub fn all() -> Self {
        Self::default()
    }

    /// These projects (at least one: a key with none is refused by the
    /// configuration).
    pub fn projects(projects: &[String]) -> Self {
        Self {
            projects: Some(projects.into()),
        }
    }

    /// The projects, or `None` for every one.
    pub fn project_list(&self) -> Option<&[String]> {
        self.projects.as_deref()
    }

    pub fn allows(&self, project: &str) -> bool {
        self.projects
            .as_deref()
            .is_none_or(|ps| ps.iter().any(|p| p == project))
    }

    /// The project a create asks for in `body` (`project_id`; absent or
    /// empty means the key's first project, or the default one for an
    /// operator's key), written back into `body`; refused if the key may
    /// not create there.
    pub fn creating_in(&self, resource: &'static str, body: &mut Value) -> Result<(), ApiError> {
        let Some(projects) = self.projects.as_deref() else {
            return Ok(());
        };
        let asked = body
            .get("project_id")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty());
        match asked {
            Some(p) if self.allows(p) => Ok(()),
            Some(p) => Err(ApiError::PermissionsDenied {
                resource,
                action: "write",
                help: format!("this key may not create in project {p}"),
            }),
            None => {
                if let (Some(obj), Some(first)) = (body.as_object_mut(), projects.first()) {
                    obj.insert("project_id".into(), Value::String(first.clone()));
                }
                Ok(())
            }
        }
    }

    /// Refuses (as `not_found`, like a resource that does not exist) a
    /// resource of a project outside the scope; one that does not exist
    /// passes, for the operation to answer `not_found` itself.
    pub fn may_see(&self, tx: &Tx<'_>, kind: Owned, id: &str) -> Result<(), ApiError> {
        if self.projects.is_none() {
            return Ok(());
        }
        match project_of(tx, kind, id)? {
            Some(p) if !self.allows(&p) => Err(ApiError::not_found(kind.resource(), id)),
            _ => Ok(()),
        }
    }
}

/// The project of a resource, `None` if there is no such resource.
fn project_of(tx: &Tx<'_>, kind: Owned, id: &str) -> Result<Option<String>, ApiError> {
    Ok(match tx.project_of(kind, id)? {
        // A PSK stored before secrets had metadata: the default project.
        None if kind == Owned::Secret && tx.latest_secret_revision(id)?.is_some() => {
            Some(DEFAULT_PROJECT_ID.to_owned())
        }
        p => p,
    })
}

/// What a connection refers to (its gateways, routing policies, secret)
/// must be of the connection's project.
fn same_project(
    tx: &Tx<'_>,
    field: &str,
    kind: Owned,
    id: &str,
    project: &str,
) -> Result<(), ApiError> {
    match project_of(tx, kind, id)? {
        Some(p) if p != project => Err(ApiError::constraint(
            field,
            format!(
                "{} {id} is not in the connection's project {project}: a connection only joins resources of its own project",
                kind.resource()
            ),
        )),
        _ => Ok(()),
    }
}

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
    /// The caller's projects: nothing outside them is listed.
    pub scope: Scope,
}

impl ListQuery {
    pub fn from_query(q: &str) -> ListQuery {
        ListQuery {
            pairs: form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            scope: Scope::all(),
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
        self.scope.allows(project_id)
            && self.one("project_id").is_none_or(|p| p == project_id)
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

/// A list response: `items` (filtered, in creation order) sorted by the
/// field `order` names (`sort_key` gives that field's value; `None` keeps
/// creation order), one page of it, as `{key: [...], "total_count": n}`.
fn list_response<T: serde::Serialize>(
    mut items: Vec<T>,
    order: &str,
    (page, size): (u32, u32),
    key: &str,
    sort_key: impl Fn(&str, &T) -> Option<String>,
) -> Result<Value, ApiError> {
    let field = order.trim_end_matches("_asc").trim_end_matches("_desc");
    sort_by_key(&mut items, order, |t| sort_key(field, t));
    let (items, total) = paginate(items, page, size);
    Ok(json!({key: to_value(&items)?, "total_count": total}))
}

/// Refuses to delete a resource (`resource`, its API name) while
/// connections use it (`users`, their ids): the error lists them, as in
/// "the {`what`} connection(s) A, B: {`then`}".
fn refuse_while_used(
    resource: &'static str,
    what: &str,
    then: &str,
    users: Vec<String>,
) -> Result<(), ApiError> {
    if users.is_empty() {
        return Ok(());
    }
    Err(ApiError::StillInUse {
        resource,
        help: format!("the {what} connection(s) {}: {then}", users.join(", ")),
    })
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

fn render_vpn_gateway(tx: &Tx<'_>, mut g: VpnGateway) -> Result<VpnGateway, ApiError> {
    g.connection_ids = tx.connection_ids_on(GatewayKind::Vpn, &g.id)?;
    Ok(g)
}

fn render_customer_gateway(
    tx: &Tx<'_>,
    mut g: CustomerGateway,
) -> Result<CustomerGateway, ApiError> {
    g.connection_ids = tx.connection_ids_on(GatewayKind::Customer, &g.id)?;
    Ok(g)
}

/// Deserialises a JSON body into a request, as `invalid_request_error`.
pub fn parse_body<T: serde::de::DeserializeOwned + Default>(body: Value) -> Result<T, ApiError> {
    if body.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(body)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid JSON body: {e}")))
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
mod tests;
