//! Keys confined to projects, over HTTP against an in-process server: two
//! tenants (keys A and B, one project each, two organizations) and an
//! operator's key. Every endpoint is tried with the other tenant's ids:
//! lists show only the caller's projects, another project's resource
//! answers `not_found` as if it did not exist (reads, updates, deletes,
//! actions, device configs, events, Secret Manager), creating in another
//! project is `permissions_denied`, and a connection only joins resources
//! of its own project.

mod common;

use serde_json::{json, Value};

const OPERATOR: &str = "operator-key-0123456789";
const KEY_A: &str = "tenant-a-key-0123456789";
const KEY_B: &str = "tenant-b-key-0123456789";
const PROJECT_A: &str = "aaaaaaaa-1111-4111-8111-111111111111";
const PROJECT_B: &str = "bbbbbbbb-2222-4222-8222-222222222222";
const ORG_A: &str = "aaaaaaaa-0000-4000-8000-00000000000a";
const ORG_B: &str = "bbbbbbbb-0000-4000-8000-00000000000b";
const P: &str = "/s2s-vpn/v1alpha1/regions/fr-par";
const SM: &str = "/secret-manager/v1beta1/regions/fr-par";

struct Server {
    server: common::InProcess,
    agent: ureq::Agent,
}

impl Server {
    fn start() -> Self {
        let server = common::serve(|state| {
            format!(
                r#"
[gateway]
state_dir = "{}"
[interfaces]
wan = "wan0"
lan = "lan0"
[api]
tokens = ["{OPERATOR}"]
[[api.keys]]
token = "{KEY_A}"
organization_id = "{ORG_A}"
projects = ["{PROJECT_A}"]
[[api.keys]]
token = "{KEY_B}"
organization_id = "{ORG_B}"
projects = ["{PROJECT_B}"]
[[gateway_types]]
name = "VGW-S"
bandwidth = 100000000
allowed_connections = 10
[[private_networks]]
id = "pn1"
interface = "lan0"
ipv4_subnet = "198.51.100.0/24"
[[public_ips]]
id = "ip-a"
address = "192.0.2.1"
[[public_ips]]
id = "ip-b"
address = "192.0.2.2"
"#,
                state.display()
            )
        });
        Self {
            server,
            agent: ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(10))
                .build(),
        }
    }

    /// One call with `key`; the status and the body (JSON, or the text as
    /// a JSON string).
    fn call(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let req = self
            .agent
            .request(method, &format!("{}{path}", self.server.url))
            .set("X-Auth-Token", key);
        let r = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let (status, text) = match r {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap()),
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    fn ok(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(key, method, path, body);
        assert!(s == 200 || s == 204, "{method} {path}: {s} {v}");
        v
    }

    /// A tenant's VPN gateway, customer gateway, routing policy and
    /// connection (created without `project_id`: in the key's project).
    fn tenant(&self, key: &str, ip: &str, peer: &str) -> Tenant {
        let vgw = self.ok(
            key,
            "POST",
            &format!("{P}/vpn-gateways"),
            Some(
                json!({"name": "g", "gateway_type": "VGW-S", "private_network_id": "pn1",
                        "public_config": {"ipam_ipv4_id": ip}}),
            ),
        );
        let cgw = self.ok(
            key,
            "POST",
            &format!("{P}/customer-gateways"),
            Some(json!({"name": "c", "asn": 65000, "ipv4_public": peer})),
        );
        let rp = self.ok(
            key,
            "POST",
            &format!("{P}/routing-policies"),
            Some(json!({"name": "r", "is_ipv6": false, "prefix_filter_in": ["10.0.0.0/8"]})),
        );
        let conn = self.ok(
            key,
            "POST",
            &format!("{P}/connections"),
            Some(connection_body(&id(&vgw), &id(&cgw), &id(&rp))),
        );
        Tenant {
            vgw: id(&vgw),
            cgw: id(&cgw),
            rp: id(&rp),
            conn: id(&conn["connection"]),
            secret: conn["connection"]["secret_id"].as_str().unwrap().to_owned(),
            vgw_body: vgw,
        }
    }
}

struct Tenant {
    vgw: String,
    cgw: String,
    rp: String,
    conn: String,
    secret: String,
    vgw_body: Value,
}

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {v}"))
        .to_owned()
}

fn connection_body(vgw: &str, cgw: &str, rp: &str) -> Value {
    json!({"name": "x", "is_ipv6": false, "initiation_policy": "vpn_gateway",
           "ikev2_ciphers": [{"encryption": "aes256gcm", "dh_group": "curve25519"}],
           "esp_ciphers": [{"encryption": "aes256gcm"}],
           "vpn_gateway_id": vgw, "customer_gateway_id": cgw,
           "bgp_config_ipv4": {"routing_policy_id": rp}})
}

/// The ids of a list response's items.
fn listed(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key}: {v}"))
        .iter()
        .map(id)
        .collect()
}

#[test]
fn tenants_see_and_touch_only_their_own_projects() {
    let s = Server::start();
    let a = s.tenant(KEY_A, "ip-a", "203.0.113.1");
    let b = s.tenant(KEY_B, "ip-b", "203.0.113.2");

    // Created in the key's project, with the organization of that project.
    assert_eq!(a.vgw_body["project_id"], PROJECT_A);
    assert_eq!(a.vgw_body["organization_id"], ORG_A);
    let conn_a = s.ok(KEY_A, "GET", &format!("{P}/connections/{}", a.conn), None);
    assert_eq!(conn_a["organization_id"], ORG_A);
    assert_eq!(b.vgw_body["organization_id"], ORG_B);

    // Lists: each tenant its own, the operator both; a filter on the
    // other's project finds nothing.
    for (path, key, ta, tb) in [
        ("vpn-gateways", "gateways", &a.vgw, &b.vgw),
        ("customer-gateways", "gateways", &a.cgw, &b.cgw),
        ("routing-policies", "routing_policies", &a.rp, &b.rp),
        ("connections", "connections", &a.conn, &b.conn),
    ] {
        let l = |k: &str, q: &str| listed(&s.ok(k, "GET", &format!("{P}/{path}{q}"), None), key);
        assert_eq!(l(KEY_A, ""), vec![ta.clone()], "{path} for A");
        assert_eq!(l(KEY_B, ""), vec![tb.clone()], "{path} for B");
        assert_eq!(
            l(OPERATOR, ""),
            [ta.clone(), tb.clone()],
            "{path} for the operator"
        );
        assert!(l(KEY_A, &format!("?project_id={PROJECT_B}")).is_empty());
        let total = s.ok(KEY_A, "GET", &format!("{P}/{path}"), None)["total_count"].clone();
        assert_eq!(total, 1, "{path}: total_count counts only A's");
    }

    // Every call on one of A's resources with B's key: not found, and
    // nothing changed.
    let not_found = |method: &str, path: String, body: Option<Value>| {
        let (st, v) = s.call(KEY_B, method, &path, body);
        assert_eq!(st, 404, "{method} {path}: {v}");
        assert_eq!(v["type"], "not_found", "{method} {path}: {v}");
    };
    for (path, id) in [
        ("vpn-gateways", &a.vgw),
        ("customer-gateways", &a.cgw),
        ("routing-policies", &a.rp),
        ("connections", &a.conn),
    ] {
        not_found("GET", format!("{P}/{path}/{id}"), None);
        not_found(
            "PATCH",
            format!("{P}/{path}/{id}"),
            Some(json!({"name": "mine"})),
        );
        not_found("DELETE", format!("{P}/{path}/{id}"), None);
    }
    for action in [
        "renew-psk",
        "enable-route-propagation",
        "disable-route-propagation",
    ] {
        not_found(
            "POST",
            format!("{P}/connections/{}/{action}", a.conn),
            Some(json!({})),
        );
    }
    not_found(
        "POST",
        format!("{P}/connections/{}/set-routing-policy", a.conn),
        Some(json!({"routing_policy_v4": b.rp})),
    );
    not_found(
        "POST",
        format!("{P}/connections/{}/detach-routing-policy", a.conn),
        Some(json!({"routing_policy_v4": a.rp})),
    );
    not_found(
        "POST",
        format!("{P}/connections/{}/change-psk", a.conn),
        Some(json!({"secret": {"id": b.secret}})),
    );
    not_found(
        "GET",
        format!("{P}/connections/{}/device-config?vendor=strongswan", a.conn),
        None,
    );
    not_found("GET", format!("{P}/connections/{}/events", a.conn), None);
    not_found("GET", format!("{SM}/secrets/{}", a.secret), None);
    not_found(
        "GET",
        format!("{SM}/secrets/{}/versions/latest/access", a.secret),
        None,
    );
    not_found(
        "POST",
        format!("{SM}/secrets/{}/versions", a.secret),
        Some(json!({"data": "c2hhcmVkIHNlY3JldCBvZiBhdCBsZWFzdCAzMiBieXRlcyBsb25nIQ=="})),
    );
    let after = s.ok(KEY_A, "GET", &format!("{P}/connections/{}", a.conn), None);
    assert_eq!(after, conn_a, "B changed A's connection");
    assert_eq!(
        listed(
            &s.ok(KEY_A, "GET", &format!("{P}/vpn-gateways"), None),
            "gateways"
        ),
        vec![a.vgw.clone()]
    );

    // Creating in A's project with B's key: refused, nothing created.
    for (path, body) in [
        (
            "customer-gateways",
            json!({"name": "c", "asn": 65001, "ipv4_public": "203.0.113.9"}),
        ),
        ("routing-policies", json!({"name": "r", "is_ipv6": false})),
        (
            "vpn-gateways",
            json!({"name": "g", "gateway_type": "VGW-S", "private_network_id": "pn1"}),
        ),
    ] {
        let mut body = body;
        body["project_id"] = json!(PROJECT_A);
        let (st, v) = s.call(KEY_B, "POST", &format!("{P}/{path}"), Some(body));
        assert_eq!(st, 403, "{path}: {v}");
        assert_eq!(v["type"], "permissions_denied", "{v}");
        assert_eq!(v["details"][0]["action"], "write", "{v}");
    }
    let (st, v) = s.call(
        KEY_B,
        "POST",
        &format!("{SM}/secrets"),
        Some(json!({"name": "psk", "project_id": PROJECT_A})),
    );
    assert_eq!(
        (st, v["type"].clone()),
        (403, json!("permissions_denied")),
        "{v}"
    );
    assert_eq!(
        listed(
            &s.ok(OPERATOR, "GET", &format!("{P}/customer-gateways"), None),
            "gateways"
        )
        .len(),
        2
    );

    // A connection of B's project that names A's gateway, or A's routing
    // policy: refused (a connection joins resources of its own project).
    for body in [
        connection_body(&a.vgw, &b.cgw, &b.rp),
        connection_body(&b.vgw, &a.cgw, &b.rp),
        connection_body(&b.vgw, &b.cgw, &a.rp),
    ] {
        let (st, v) = s.call(KEY_B, "POST", &format!("{P}/connections"), Some(body));
        assert_eq!(st, 400, "{v}");
        assert!(
            v["message"].as_str().unwrap().contains("its own project"),
            "{v}"
        );
    }
    // The same rule binds the operator's key.
    let mut body = connection_body(&a.vgw, &b.cgw, &b.rp);
    body["project_id"] = json!(PROJECT_A);
    let (st, v) = s.call(OPERATOR, "POST", &format!("{P}/connections"), Some(body));
    assert_eq!(st, 400, "{v}");

    // B's own resources work for B as for the operator.
    let psk = s.ok(
        KEY_B,
        "GET",
        &format!("{SM}/secrets/{}/versions/latest/access", b.secret),
        None,
    );
    assert!(psk["data"].is_string());
    s.ok(
        KEY_B,
        "POST",
        &format!("{P}/connections/{}/enable-route-propagation", b.conn),
        Some(json!({})),
    );
    s.ok(
        OPERATOR,
        "GET",
        &format!("{P}/connections/{}", a.conn),
        None,
    );
    s.ok(
        KEY_B,
        "DELETE",
        &format!("{P}/connections/{}", b.conn),
        None,
    );
}
