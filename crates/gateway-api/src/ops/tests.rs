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
    fx_with(CFG)
}

fn fx_with(cfg: &str) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    Fx {
        store,
        config: Config::parse(cfg).unwrap(),
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
    world_with(CFG)
}

fn world_with(cfg: &str) -> World {
    let f = fx_with(cfg);
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

/// The connections in the store, by id, and their interconnections.
fn stored(f: &Fx) -> (Vec<String>, usize) {
    f.store
        .read(|tx| {
            let ids = tx.connections()?.into_iter().map(|c| c.conn.id).collect();
            Ok::<_, StoreError>((ids, tx.intercos(None)?.len()))
        })
        .unwrap()
}

#[test]
fn creating_past_a_quota_answers_quotas_exceeded_and_leaves_nothing_behind() {
    let cfg = CFG.replace("asn = 12876", "asn = 12876\nconnections_per_host = 2");
    let w = world_with(&cfg);
    let f = &w.f;
    // VGW-S allows one connection, the host two.
    let first = id(&f.conn(conn_body(&w, &w.gw_v4, &w.cg_dual, false)).unwrap()["connection"]);
    let before = stored(f);
    match f.conn(conn_body(&w, &w.gw_v4, &w.cg_dual, false)) {
        Err(e @ ApiError::QuotaExceeded { .. }) => {
            assert_eq!(e.status(), 403);
            let body = e.body();
            assert_eq!(body["type"], "quotas_exceeded");
            assert_eq!(
                body["details"],
                json!([{"resource": "connections", "quota": 1, "current": 1}])
            );
        }
        other => panic!("wanted quotas_exceeded, got {other:?}"),
    }
    assert_eq!(stored(f), before, "a refused create leaves nothing");

    let second = id(&f
        .conn(conn_body(&w, &w.gw_dual, &w.cg_dual, false))
        .unwrap()["connection"]);
    let before = stored(f);
    assert_eq!(before.0.len(), 2);
    match f.conn(conn_body(&w, &w.gw_dual, &w.cg_dual, false)) {
        Err(e @ ApiError::QuotaExceeded { .. }) => assert_eq!(
            e.body()["details"],
            json!([{"resource": "connections_per_host", "quota": 2, "current": 2}])
        ),
        other => panic!("wanted the host's quota, got {other:?}"),
    }
    assert_eq!(stored(f), before, "a refused create leaves nothing");

    // Room again once one goes: the new one takes the freed interconnection.
    let freed =
        f.w(|tx, _| get_connection(tx, &first)).unwrap()["bgp_session_ipv4"]["private_ip"].clone();
    f.w(|tx, _| delete_connection(tx, &first).map(|_| Value::Null))
        .unwrap();
    let third = f
        .conn(conn_body(&w, &w.gw_dual, &w.cg_dual, false))
        .unwrap();
    assert_eq!(third["connection"]["bgp_session_ipv4"]["private_ip"], freed);
    assert_ne!(id(&third["connection"]), second);
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
        parse_body(json!({"data": "c2VjcmV0LXNlY3JldC1zZWNyZXQ=", "description": "d"})).unwrap();
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
        f.w(|tx, c| update_vpn_gateway(tx, c, &gid, json!({"private_network_id": "pn-v4"}))),
        "private_network_id",
    );
    refused(
        f.w(|tx, c| update_vpn_gateway(tx, c, &gid, json!({"name": ""}))),
        "name",
    );
    let u = f
        .w(|tx, c| update_vpn_gateway(tx, c, &gid, json!({"name": "z", "tags": ["t"]})))
        .unwrap();
    assert_eq!(
        (u["name"].as_str(), u["tags"][0].as_str()),
        (Some("z"), Some("t"))
    );
}

/// The gateway type changes through an update (our extension): to a
/// type of the host that still allows the gateway's connections.
#[test]
fn a_vpn_gateways_type_changes_within_its_connections() {
    let w = world();
    let f = &w.f;
    let gid = w.gw_dual.clone();
    assert_eq!(
        f.w(|tx, _| get_vpn_gateway(tx, &gid)).unwrap()["gateway_type"],
        "VGW-M"
    );
    for _ in 0..2 {
        f.conn(conn_body(&w, &gid, &w.cg_dual, false)).unwrap();
    }
    refused(
        f.w(|tx, c| update_vpn_gateway(tx, c, &gid, json!({"gateway_type": "VGW-XL"}))),
        "gateway_type",
    );
    // VGW-S allows one connection; the gateway has two.
    let e = f
        .w(|tx, c| update_vpn_gateway(tx, c, &gid, json!({"gateway_type": "VGW-S"})))
        .unwrap_err();
    assert!(e.to_string().contains("allows 1 connections"), "{e}");
    assert_eq!(
        f.w(|tx, _| get_vpn_gateway(tx, &gid)).unwrap()["gateway_type"],
        "VGW-M"
    );
    // The other one, with none, may.
    let other = w.gw_v4.clone();
    let u = f
        .w(|tx, c| update_vpn_gateway(tx, c, &other, json!({"gateway_type": "VGW-M"})))
        .unwrap();
    assert_eq!(u["gateway_type"], "VGW-M");
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
fn lists_sort_by_the_named_field_then_keep_creation_order() {
    let f = fx();
    for name in ["b", "c", "a"] {
        f.rp(json!({"name": name, "prefix_filter_in": ["10.0.0.0/8"]}))
            .unwrap();
    }
    let names = |query: &str| -> Vec<String> {
        let l = f
            .w(|tx, _| list_routing_policies(tx, &ListQuery::from_query(query)))
            .unwrap();
        assert_eq!(l["total_count"], 3);
        l["routing_policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("order_by=name_asc"), ["a", "b", "c"]);
    assert_eq!(names("order_by=name_desc"), ["c", "b", "a"]);
    assert_eq!(names("order_by=created_at_asc"), ["b", "c", "a"]);
    assert_eq!(names("order_by=created_at_desc"), ["a", "c", "b"]);
    assert_eq!(names("order_by=name_asc&page=2&page_size=2"), ["c"]);
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
    match f.w(|tx, _| delete_vpn_gateway(tx, &g)) {
        Err(ApiError::StillInUse { resource, help }) => {
            assert_eq!(resource, "vpn_gateway");
            assert_eq!(
                help,
                format!("the VPN gateway is used by connection(s) {cid}: delete them first")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        f.w(|tx, _| delete_customer_gateway(tx, &cg).map(|_| Value::Null)),
        Err(ApiError::StillInUse { .. })
    ));
    assert!(matches!(
        f.w(|tx, _| delete_routing_policy(tx, &rp).map(|_| Value::Null)),
        Err(ApiError::StillInUse { .. })
    ));
    refused(
        f.w(|tx, c| update_customer_gateway(tx, c, &cg, parse_body(json!({"ipv6_public": ""}))?)),
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
            Ok::<_, ApiError>(tx.add_secret_revision(&sid, &Psk::from_bytes(b"short".to_vec()))?)
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
    f.w(move |tx, c| update_customer_gateway(tx, c, &cg, parse_body(json!({"ipv4_public": ""}))?))
        .unwrap();
    assert!(get()["tunnel_mtu_ipv4"].is_null());
    f.store.set_connection_status(&cid, &up).unwrap();
    assert!(get()["tunnel_mtu_ipv4"].is_null());
    let dc = f
        .w(|tx, c| crate::device_config::for_connection(tx, c, &cid, "strongswan"))
        .unwrap();
    assert!(!dc.contains("ip link set"), "{dc}");
}

#[test]
fn statuses_are_written_in_one_batch_skipping_connections_gone() {
    let w = world();
    let f = &w.f;
    let a = id(&f
        .conn(conn_body(&w, &w.gw_dual, &w.cg_dual, false))
        .unwrap()["connection"]);
    let b = id(&f
        .conn(conn_body(&w, &w.gw_dual, &w.cg_dual, false))
        .unwrap()["connection"]);
    let up = ConnectionStatusUpdate {
        status: ConnectionStatus::Active,
        tunnel_status_ipv4: TunnelStatus::Up,
        tunnel_status_ipv6: TunnelStatus::Down,
        bgp_status_ipv4: BgpSessionStatus::Up,
        bgp_status_ipv6: BgpSessionStatus::Down,
        tunnel_mtu_ipv4: None,
        tunnel_mtu_ipv6: None,
    };
    let batch = vec![(a.clone(), up), ("gone".to_owned(), up), (b.clone(), up)];
    assert_eq!(f.store.set_connection_statuses(&batch).unwrap(), 2);
    for cid in [&a, &b] {
        let c = f.w(|tx, _| get_connection(tx, cid)).unwrap();
        assert_eq!(c["status"], "active", "{cid}");
        assert_eq!(c["tunnel_status_ipv4"], "up", "{cid}");
        assert_eq!(c["bgp_status_ipv4"], "up", "{cid}");
    }
    // One at a time, a connection that is not there is an error.
    assert!(matches!(
        f.store.set_connection_status("gone", &up),
        Err(StoreError::NotFound(_))
    ));
}

/// The list as it was computed before the store answered it: every
/// connection decoded, filtered and sorted in memory. The oracle of the
/// test below.
fn list_connections_by_scan(tx: &mut Tx<'_>, q: &ListQuery) -> Result<Value, ApiError> {
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
    let items: Vec<Connection> = tx
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
    list_response(items, order, (page, size), "connections", |f, c| match f {
        "name" => Some(c.name.clone()),
        "status" => Some(c.status.as_str().to_owned()),
        _ => None,
    })
}

#[test]
fn connection_pages_from_the_store_match_a_scan_of_every_connection() {
    let cfg = CFG
        .replace("allowed_connections = 10", "allowed_connections = 100")
        .replace("allowed_connections = 1\n", "allowed_connections = 100\n");
    let w = world_with(&cfg);
    let f = &w.f;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    const NAMES: [&str; 6] = ["alpha", "beta", "alp", "Beta", "gamma-1", "beta"];
    const TAGS: [&str; 3] = ["t1", "t2", "t3"];
    const PROJECTS: [&str; 2] = [
        "11111111-1111-4111-8111-111111111111",
        "22222222-2222-4222-8222-222222222222",
    ];
    let mut created = Vec::new();
    for _ in 0..60 {
        let (vgw, cgw, v6) = match next(3) {
            0 => (&w.gw_v4, &w.cg_dual, false),
            1 => (&w.gw_dual, &w.cg_dual, next(2) == 1),
            _ => (&w.gw_dual, &w.cg_v6, true),
        };
        let mut b = conn_body(&w, vgw, cgw, v6);
        b["name"] = json!(NAMES[next(6) as usize]);
        b["tags"] = json!(TAGS
            .iter()
            .filter(|_| next(2) == 1)
            .copied()
            .collect::<Vec<_>>());
        b["enable_route_propagation"] = json!(next(2) == 1);
        if v6 && next(2) == 1 {
            b["bgp_config_ipv6"] = json!({"routing_policy_id": w.rp6});
        }
        if let Ok(c) = f.conn(b) {
            created.push(id(&c["connection"]));
        }
    }
    assert!(created.len() >= 40, "only {} created", created.len());
    for cid in &created {
        let status = [
            ConnectionStatus::Active,
            ConnectionStatus::LimitedConnectivity,
            ConnectionStatus::Down,
        ][next(3) as usize];
        let mut u = crate::store::ConnectionStatusUpdate {
            status,
            tunnel_status_ipv4: TunnelStatus::Down,
            tunnel_status_ipv6: TunnelStatus::Down,
            bgp_status_ipv4: BgpSessionStatus::Down,
            bgp_status_ipv6: BgpSessionStatus::Down,
            tunnel_mtu_ipv4: None,
            tunnel_mtu_ipv6: None,
        };
        if next(2) == 1 {
            u.tunnel_status_ipv4 = TunnelStatus::Up;
        }
        f.store.set_connection_status(cid, &u).unwrap();
        // Moved to a project of its own afterwards (a connection is
        // created in its gateways' project): the filters see both.
        let project = PROJECTS[next(2) as usize];
        f.store
            .write(|tx| {
                let mut row = tx.connection(cid)?.expect("created");
                row.conn.project_id = project.to_owned();
                row.conn.organization_id = project.to_owned();
                tx.put_connection(&row)
            })
            .unwrap();
    }
    let orders = [
        "created_at_asc",
        "created_at_desc",
        "name_asc",
        "name_desc",
        "status_asc",
        "status_desc",
    ];
    let statuses = ["active", "limited_connectivity", "down"];
    let mut nonempty = 0;
    for _ in 0..600 {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut add = |k: &str, v: &str| pairs.push((k.to_owned(), v.to_owned()));
        add("order_by", orders[next(6) as usize]);
        add("page", &(1 + next(4)).to_string());
        add("page_size", &(1 + next(12)).to_string());
        if next(4) == 0 {
            add(
                "project_id",
                [PROJECTS[0], PROJECTS[1], "nope"][next(3) as usize],
            );
        }
        if next(4) == 0 {
            add(
                "name",
                ["al", "beta", "a", "zzz", "-", "\u{fffd}\0"][next(6) as usize],
            );
        }
        for t in TAGS {
            if next(5) == 0 {
                add("tags", t);
            }
        }
        for s in statuses {
            if next(4) == 0 {
                add("statuses", s);
            }
        }
        if next(4) == 0 {
            add("is_ipv6", ["true", "false"][next(2) as usize]);
        }
        if next(4) == 0 {
            add(
                "route_propagation_enabled",
                ["true", "false"][next(2) as usize],
            );
        }
        if next(5) == 0 {
            add("routing_policy_ids", [&w.rp4, &w.rp6][next(2) as usize]);
        }
        if next(4) == 0 {
            add("vpn_gateway_ids", [&w.gw_dual, &w.gw_v4][next(2) as usize]);
        }
        if next(4) == 0 {
            add(
                "customer_gateway_ids",
                [&w.cg_dual, &w.cg_v6][next(2) as usize],
            );
        }
        // A key of one project, of both, or an operator's key.
        let scope = match next(4) {
            0 => Scope::projects(&[PROJECTS[0].to_owned()]),
            1 => Scope::projects(&[PROJECTS[1].to_owned()]),
            2 => Scope::projects(&[PROJECTS[1].to_owned(), PROJECTS[0].to_owned()]),
            _ => Scope::all(),
        };
        let q = ListQuery { pairs, scope };
        let ours = f.w(|tx, _| list_connections(tx, &q)).unwrap();
        let scan = f.w(|tx, _| list_connections_by_scan(tx, &q)).unwrap();
        assert_eq!(ours, scan, "{:?} {:?}", q.pairs, q.scope);
        for c in ours["connections"].as_array().unwrap() {
            let p = c["project_id"].as_str().unwrap();
            assert!(q.scope.allows(p), "{p} listed for {:?}", q.scope);
        }
        nonempty += usize::from(!ours["connections"].as_array().unwrap().is_empty());
    }
    assert!(nonempty > 200, "only {nonempty} queries selected anything");

    // The gateways' connection_ids, read on the indexes: the connections
    // that use them, in creation order, in a get and in a list.
    let all = f.store.read(|tx| tx.connections()).unwrap();
    let using = |pick: &dyn Fn(&Connection) -> &str, gw: &str| -> Value {
        json!(all
            .iter()
            .filter(|c| pick(&c.conn) == gw)
            .map(|c| c.conn.id.clone())
            .collect::<Vec<_>>())
    };
    let everything = ListQuery::from_query("page_size=100");
    let vgws = f.w(|tx, _| list_vpn_gateways(tx, &everything)).unwrap();
    for gw in [&w.gw_dual, &w.gw_v4] {
        let want = using(&|c| c.vpn_gateway_id.as_str(), gw);
        assert_eq!(
            f.w(|tx, _| get_vpn_gateway(tx, gw)).unwrap()["connection_ids"],
            want
        );
        let listed = vgws["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["id"] == **gw);
        assert_eq!(listed.unwrap()["connection_ids"], want);
    }
    let cgws = f
        .w(|tx, _| list_customer_gateways(tx, &everything))
        .unwrap();
    for gw in [&w.cg_dual, &w.cg_v6] {
        let want = using(&|c| c.customer_gateway_id.as_str(), gw);
        assert_eq!(
            f.w(|tx, _| get_customer_gateway(tx, gw)).unwrap()["connection_ids"],
            want
        );
        let listed = cgws["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["id"] == **gw);
        assert_eq!(listed.unwrap()["connection_ids"], want);
    }
}
