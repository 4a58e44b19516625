//! The typed client (`gateway_api::client`) against an in-process API
//! server on 127.0.0.1: every resource created, read, listed and deleted
//! through the server's own wire types, connection actions, device
//! configs, the PSK through the Secret Manager, and Scaleway's error shape.

use gateway_api::client::{Client, ClientError};
use gateway_api::model::{
    BgpSessionStatus, CipherRequest, ConnectionStatus, Encryption, VpnGatewayStatus,
};
use gateway_api::ops::{
    BgpConfigRequest, CreateConnectionRequest, CreateCustomerGatewayRequest,
    CreateRoutingPolicyRequest, CreateSecretRequest, CreateVpnGatewayRequest, IpamPair,
    RenewPskRequest, RoutingPolicyOneOf, UpdateConnectionRequest,
};

const TOKEN: &str = "22222222-2222-2222-2222-222222222222";

mod common;

fn server() -> common::InProcess {
    common::serve(|state| common::one_host_config(state, TOKEN, "", 5))
}

fn policy(c: &Client, name: &str, v6: bool, filter_in: &str) -> String {
    c.create_routing_policy(&CreateRoutingPolicyRequest {
        name: Some(name.into()),
        is_ipv6: Some(v6),
        prefix_filter_in: Some(vec![filter_in.into()]),
        ..Default::default()
    })
    .unwrap()
    .id
}

#[test]
fn resources_round_trip_through_the_wire_types() {
    let s = server();
    let c = Client::new(&s.url, TOKEN, "fr-par");

    let types = c.gateway_types().unwrap();
    assert_eq!(types.len(), 1);
    assert_eq!(types[0].name, "VGW-S");
    assert_eq!(types[0].bandwidth, 100_000_000);

    let g = c
        .create_vpn_gateway(&CreateVpnGatewayRequest {
            name: Some("gw".into()),
            gateway_type: Some("VGW-S".into()),
            private_network_id: Some("pn1".into()),
            public_config: Some(IpamPair {
                ipam_ipv4_id: Some("ip4".into()),
                ipam_ipv6_id: Some("ip6".into()),
            }),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(g.name, "gw");
    assert_eq!(g.status, VpnGatewayStatus::Provisioning);
    assert_eq!(c.vpn_gateway(&g.id).unwrap(), g);
    let listed = c.vpn_gateways(&[]).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, g.id);

    let cgw = c
        .create_customer_gateway(&CreateCustomerGatewayRequest {
            name: Some("cgw".into()),
            asn: Some(65010),
            ipv4_public: Some("203.0.113.2".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(cgw.asn, 65010);
    assert_eq!(cgw.public_ipv4.as_deref(), Some("203.0.113.2"));
    assert_eq!(c.customer_gateways(&[]).unwrap().len(), 1);

    let rp4 = policy(&c, "v4", false, "203.0.113.0/24");
    let rp4b = policy(&c, "v4b", false, "203.0.113.128/25");
    assert_eq!(
        c.routing_policy(&rp4).unwrap().prefix_filter_in,
        ["203.0.113.0/24"]
    );
    assert_eq!(c.routing_policies(&[]).unwrap().len(), 2);

    let created = c
        .create_connection(&CreateConnectionRequest {
            name: Some("conn".into()),
            vpn_gateway_id: Some(g.id.clone()),
            customer_gateway_id: Some(cgw.id.clone()),
            initiation_policy: Some("customer_gateway".into()),
            ikev2_ciphers: Some(vec![CipherRequest::parse_compact(
                "aes256gcm-sha256-curve25519",
            )
            .unwrap()]),
            esp_ciphers: Some(vec![CipherRequest::parse_compact("aes256gcm").unwrap()]),
            bgp_config_ipv4: Some(BgpConfigRequest {
                routing_policy_id: Some(rp4.clone()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        created.pre_shared_key, None,
        "the PSK is only served by the Secret Manager"
    );
    let conn = created.connection;
    assert_eq!(conn.esp_ciphers[0].encryption, Encryption::Aes256gcm);
    assert!(!conn.route_propagation_enabled);
    assert_eq!(conn.status, ConnectionStatus::Down, "no agent runs here");
    assert_eq!(conn.bgp_status_ipv6, BgpSessionStatus::Disabled);
    assert_eq!(c.connection(&conn.id).unwrap(), conn);

    let on = c.set_route_propagation(&conn.id, true).unwrap();
    assert!(on.route_propagation_enabled);
    let moved = c
        .set_routing_policy(
            &conn.id,
            &RoutingPolicyOneOf {
                routing_policy_v4: Some(rp4b.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        moved.routing_policy_ids().collect::<Vec<_>>(),
        [rp4b.as_str()]
    );
    let renamed = c
        .update_connection(
            &conn.id,
            &UpdateConnectionRequest {
                name: Some("renamed".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(renamed.name, "renamed");
    assert_eq!(
        renamed.esp_ciphers, conn.esp_ciphers,
        "an update changes only what it sends"
    );

    let psk = c.psk(&conn.secret_id, conn.secret_revision).unwrap();
    assert!(!psk.is_empty());
    let renewed = c.renew_psk(&conn.id, &RenewPskRequest::default()).unwrap();
    let again = c
        .psk(
            &renewed.connection.secret_id,
            renewed.connection.secret_revision,
        )
        .unwrap();
    assert_ne!(psk, again, "renew-psk gives a new PSK");

    let secret = c
        .create_secret(&CreateSecretRequest {
            name: Some("own-psk".into()),
            ..Default::default()
        })
        .unwrap();
    let own = b"an-operators-own-PSK.long+enough=32".to_vec();
    let rev = c.add_secret_version(&secret.id, &own).unwrap();
    let changed = c.change_psk(&conn.id, &secret.id, Some(rev)).unwrap();
    assert_eq!(
        (changed.secret_id.as_str(), changed.secret_revision),
        (secret.id.as_str(), rev)
    );
    assert_eq!(c.psk(&secret.id, rev).unwrap(), own);

    let swan = c.device_config(&conn.id, "strongswan").unwrap();
    assert!(swan.contains("aes256gcm16"), "{swan}");

    let page = c
        .list_page::<gateway_api::model::Connection>(
            &c.s2s("connections"),
            "connections",
            &[("name", "renamed".into())],
        )
        .unwrap();
    assert_eq!(page.total_count, 1);
    assert_eq!(page.items[0].id, conn.id);

    c.delete_connection(&conn.id).unwrap();
    let gone = c.connection(&conn.id).unwrap_err();
    assert_eq!(gone.status(), Some(404), "{gone}");
    c.delete_routing_policy(&rp4).unwrap();
    c.delete_customer_gateway(&cgw.id).unwrap();
    c.delete_vpn_gateway(&g.id).unwrap();
}

#[test]
fn errors_keep_scaleways_shape() {
    let s = server();
    let c = Client::new(&s.url, TOKEN, "fr-par");
    let e = c
        .create_routing_policy(&CreateRoutingPolicyRequest {
            name: Some("bad".into()),
            prefix_filter_in: Some(vec!["not a prefix".into()]),
            ..Default::default()
        })
        .unwrap_err();
    match &e {
        ClientError::Api { status, body, .. } => {
            assert_eq!(*status, 400, "{e}");
            assert!(
                body.get("type").is_some() || body.get("message").is_some(),
                "{body}"
            );
        }
        other => panic!("expected an API error, got {other}"),
    }

    let wrong = Client::new(&s.url, "33333333-3333-3333-3333-333333333333", "fr-par");
    assert_eq!(wrong.gateway_types().unwrap_err().status(), Some(401));

    let nowhere = Client::new("http://127.0.0.1:9", TOKEN, "fr-par");
    assert!(matches!(
        nowhere.gateway_types().unwrap_err(),
        ClientError::Transport { .. }
    ));
}
