//! `s2sctl` against an in-process API server on 127.0.0.1 (no network
//! beyond loopback): every subcommand, tables and `-o json`.

use gateway_api::Store;
use s2sctl::{run, run_with_input, run_with_io, CliError};
use serde_json::Value;

const TOKEN: &str = "11111111-1111-1111-1111-111111111111";

#[path = "../../gateway-api/tests/common/mod.rs"]
mod common;
use common::InProcess as Server;

fn server() -> Server {
    common::serve(|state| common::one_host_config(state, TOKEN, "", 5))
}

fn ctl(s: &Server, args: &[&str]) -> Result<String, CliError> {
    let mut all = vec!["s2sctl", "--api-url", &s.url, "--token", TOKEN];
    all.extend_from_slice(args);
    let mut out = Vec::new();
    run(all, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

fn ctl_json(s: &Server, args: &[&str]) -> Value {
    let mut a = vec!["-o", "json"];
    a.extend_from_slice(args);
    let out = ctl(s, &a).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    serde_json::from_str(&out).unwrap()
}

#[test]
fn every_subcommand() {
    let s = server();
    let t = ctl(&s, &["gateway-type", "list"]).unwrap();
    assert!(t.starts_with("NAME"), "{t}");
    assert!(t.contains("VGW-S") && t.contains("total_count: 1"), "{t}");

    let g = ctl_json(
        &s,
        &[
            "vpn-gateway",
            "create",
            "--name",
            "gw",
            "--gateway-type",
            "VGW-S",
            "--private-network-id",
            "pn1",
            "--ipam-ipv4-id",
            "ip4",
            "--ipam-ipv6-id",
            "ip6",
            "--tag",
            "a",
        ],
    );
    let gid = g["id"].as_str().unwrap().to_owned();
    assert_eq!(g["status"], "provisioning");
    let t = ctl(&s, &["vpn-gateway", "list", "--tag", "a"]).unwrap();
    assert!(t.contains(&gid) && t.contains("total_count: 1"), "{t}");
    assert_eq!(
        ctl_json(&s, &["vpn-gateway", "update", &gid, "--name", "gw2"])["name"],
        "gw2"
    );
    let t = ctl(&s, &["vpn-gateway", "get", &gid]).unwrap();
    assert!(t.contains("gw2") && t.starts_with("FIELD"), "{t}");

    let c = ctl_json(
        &s,
        &[
            "customer-gateway",
            "create",
            "--name",
            "cust",
            "--asn",
            "65000",
            "--ipv4",
            "203.0.113.9",
        ],
    );
    let cid = c["id"].as_str().unwrap().to_owned();
    assert_eq!(
        ctl_json(&s, &["customer-gateway", "update", &cid, "--asn", "65001"])["asn"],
        65001
    );
    assert!(ctl(&s, &["customer-gateway", "list"])
        .unwrap()
        .contains("65001"));
    assert_eq!(
        ctl_json(&s, &["customer-gateway", "get", &cid])["public_ipv4"],
        "203.0.113.9"
    );
    // A refusal surfaces as an API error naming the field.
    match ctl(
        &s,
        &[
            "customer-gateway",
            "create",
            "--name",
            "x",
            "--asn",
            "12876",
            "--ipv4",
            "203.0.113.10",
        ],
    ) {
        Err(CliError::Api {
            status: 400,
            message,
            ..
        }) => assert!(message.contains("asn"), "{message}"),
        other => panic!("expected a 400, got {other:?}"),
    }

    let p = ctl_json(
        &s,
        &[
            "routing-policy",
            "create",
            "--name",
            "rp",
            "--in",
            "10.0.0.0/8",
            "--out",
            "198.51.100.0/24",
        ],
    );
    let pid = p["id"].as_str().unwrap().to_owned();
    let p6 = ctl_json(
        &s,
        &[
            "routing-policy",
            "create",
            "--name",
            "rp6",
            "--ipv6",
            "--in",
            "2001:db8:1::/48",
        ],
    );
    let pid6 = p6["id"].as_str().unwrap().to_owned();
    assert_eq!(
        ctl_json(
            &s,
            &["routing-policy", "update", &pid, "--in", "10.1.0.0/16"]
        )["prefix_filter_in"][0],
        "10.1.0.0/16"
    );
    assert_eq!(
        ctl_json(&s, &["routing-policy", "list", "--ipv6", "true"])["total_count"],
        1
    );
    assert_eq!(
        ctl_json(&s, &["routing-policy", "get", &pid6])["is_ipv6"],
        true
    );

    let r = ctl_json(
        &s,
        &[
            "connection",
            "create",
            "--name",
            "conn",
            "--vpn-gateway-id",
            &gid,
            "--customer-gateway-id",
            &cid,
            "--ike",
            "aes256gcm-ecp256",
            "--esp",
            "aes256gcm",
            "--routing-policy-v4",
            &pid,
            "--bgp-v4",
            "169.254.7.1/30,169.254.7.2/30",
        ],
    );
    let conn = &r["connection"];
    let id = conn["id"].as_str().unwrap().to_owned();
    assert_eq!(
        conn["bgp_session_ipv4"]["peer_private_ip"],
        "169.254.7.2/30"
    );
    let t = ctl(&s, &["connection", "list", "--vpn-gateway-id", &gid]).unwrap();
    assert!(t.contains(&id) && t.contains("total_count: 1"), "{t}");
    assert_eq!(ctl_json(&s, &["connection", "get", &id])["name"], "conn");
    assert_eq!(
        ctl_json(
            &s,
            &[
                "connection",
                "update",
                &id,
                "--initiation-policy",
                "customer_gateway"
            ]
        )["initiation_policy"],
        "customer_gateway"
    );
    let psk1 = ctl(&s, &["connection", "get-psk", &id]).unwrap();
    assert_eq!(psk1.trim().len(), 48);
    let rr = ctl_json(&s, &["connection", "renew-psk", &id]);
    assert_eq!(rr["connection"]["secret_revision"], 2);
    let psk2 = ctl(&s, &["connection", "get-psk", &id]).unwrap();
    assert_ne!(psk1, psk2);

    // Events: the PSK renewal (the API records it; no agent here), then
    // what the agent records, as lines and as JSON lines; `--after` skips
    // what was seen.
    let renewed = ctl(&s, &["connection", "events", &id]).unwrap();
    assert!(
        renewed.contains("psk_changed") && renewed.contains("revision 1 → 2"),
        "{renewed}"
    );
    assert!(
        !renewed.contains(psk2.trim()),
        "the PSK itself is never in an event"
    );
    let store = Store::open(&s.dir.path().join("state")).unwrap();
    store
        .add_connection_events(&[
            (id.clone(), "ike_sa_up".into(), "v4: IKE SA up".into()),
            (
                id.clone(),
                "child_sa_installed".into(),
                "v4: CHILD SA".into(),
            ),
        ])
        .unwrap();
    let text = ctl(&s, &["connection", "events", &id]).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[1].contains("ike_sa_up") && lines[1].ends_with("v4: IKE SA up"),
        "{text}"
    );
    let json: Vec<Value> = ctl(&s, &["-o", "json", "connection", "events", &id])
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json[2]["kind"], "child_sa_installed");
    let first_seq = json[1]["seq"].as_i64().unwrap().to_string();
    let later = ctl(&s, &["connection", "events", &id, "--after", &first_seq]).unwrap();
    assert_eq!(later.lines().count(), 1, "{later}");
    assert!(matches!(
        ctl(&s, &["connection", "events", "no-such-connection"]),
        Err(CliError::Api { .. })
    ));

    // Device configs carry the current PSK, both ends' addresses, the
    // proposals in strongSwan's words, the ASNs, interconnection addresses
    // and the routing policy's prefixes.
    let dc = |vendor: &str| {
        ctl(
            &s,
            &["connection", "device-config", &id, "--vendor", vendor],
        )
    };
    let sw = dc("strongswan").unwrap();
    for want in [
        format!("secret = \"{}\"", psk2.trim()),
        "local_addrs = 203.0.113.9".into(),
        "remote_addrs = 192.0.2.1".into(),
        "proposals = aes256gcm16-prfsha256-ecp256".into(),
        "esp_proposals = aes256gcm16".into(),
        // initiation_policy customer_gateway: the device starts the tunnel.
        "start_action = start".into(),
        // Whoever initiates, the device brings a closed or dead tunnel
        // back on its own, and never gives up.
        "close_action = start".into(),
        "dpd_action = restart".into(),
        "keyingtries = 0".into(),
        "ip addr add 169.254.7.2/30 dev ipsec0".into(),
        "local_ts = 169.254.7.2/32,10.1.0.0/16".into(),
        "remote_ts = 169.254.7.1/32,198.51.100.0/24".into(),
    ] {
        assert!(sw.contains(&want), "missing {want:?} in\n{sw}");
    }
    assert!(
        !sw.contains("s2s-v6"),
        "no IPv6 tunnel without a customer IPv6:\n{sw}"
    );
    let bird = dc("bird").unwrap();
    for want in [
        "local 169.254.7.2 as 65001;",
        "neighbor 169.254.7.1 as 12876;",
        "route 10.1.0.0/16 blackhole;",
        "if net ~ [ 198.51.100.0/24+ ] then accept;",
        "graceful restart on;",
    ] {
        assert!(bird.contains(want), "missing {want:?} in\n{bird}");
    }
    let frr = dc("frr").unwrap();
    for want in [
        "router bgp 65001",
        "no bgp network import-check",
        "neighbor 169.254.7.1 remote-as 12876",
        "network 10.1.0.0/16",
        "ip prefix-list s2s-in-v4 seq 5 permit 198.51.100.0/24 le 32",
        "bgp graceful-restart",
    ] {
        assert!(frr.contains(want), "missing {want:?} in\n{frr}");
    }
    match dc("cisco") {
        Err(CliError::Api {
            status: 400,
            message,
            ..
        }) => assert!(message.contains("vendor"), "{message}"),
        other => panic!("unknown vendor accepted: {other:?}"),
    }
    assert_eq!(
        ctl(&s, &["connection", "get-psk", &id, "--revision", "1"]).unwrap(),
        psk1
    );
    let sid = conn["secret_id"].as_str().unwrap();
    let ch = ctl_json(
        &s,
        &[
            "connection",
            "change-psk",
            &id,
            "--secret-id",
            sid,
            "--revision",
            "1",
        ],
    );
    assert_eq!(ch["connection"]["secret_revision"], 1);
    let v = ctl_json(
        &s,
        &["connection", "set-routing-policy", &id, "--v6", &pid6],
    );
    assert_eq!(v["bgp_session_ipv6"]["routing_policy_id"], pid6.as_str());
    let v = ctl_json(
        &s,
        &["connection", "detach-routing-policy", &id, "--v6", &pid6],
    );
    assert!(v["bgp_session_ipv6"].is_null());
    assert_eq!(
        ctl_json(&s, &["connection", "enable-route-propagation", &id])["route_propagation_enabled"],
        true
    );
    assert_eq!(
        ctl_json(&s, &["connection", "disable-route-propagation", &id])
            ["route_propagation_enabled"],
        false
    );

    // Secrets: a caller's own PSK through stdin, then change-psk to it.
    let sec = ctl_json(&s, &["secret", "create", "--name", "mine"]);
    let own = sec["id"].as_str().unwrap().to_owned();
    let mut out = Vec::new();
    let mut input: &[u8] = b"my-own-pre-shared-key-000\n";
    run_with_input(
        [
            "s2sctl",
            "--api-url",
            &s.url,
            "--token",
            TOKEN,
            "-o",
            "json",
            "secret",
            "add-version",
            &own,
        ],
        &mut input,
        &mut out,
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["revision"], 1);
    assert_eq!(
        ctl(&s, &["secret", "access", &own]).unwrap(),
        "my-own-pre-shared-key-000\n"
    );
    assert_eq!(ctl_json(&s, &["secret", "get", &own])["version_count"], 1);
    ctl(&s, &["connection", "change-psk", &id, "--secret-id", &own]).unwrap();
    let events = ctl(&s, &["connection", "events", &id]).unwrap();
    let last = events.lines().last().unwrap_or_default();
    assert!(
        last.contains("psk_changed") && last.contains(&format!("→ secret {own} revision 1")),
        "{events}"
    );
    assert!(!events.contains("my-own-pre-shared-key"), "{events}");
    assert_eq!(
        ctl(&s, &["connection", "get-psk", &id]).unwrap(),
        "my-own-pre-shared-key-000\n"
    );

    // Deletes, in dependency order.
    assert!(matches!(
        ctl(&s, &["routing-policy", "delete", &pid]),
        Err(CliError::Api { status: 412, .. })
    ));
    assert_eq!(
        ctl(&s, &["connection", "delete", &id]).unwrap(),
        "deleted connection\n"
    );
    ctl(&s, &["routing-policy", "delete", &pid]).unwrap();
    ctl(&s, &["routing-policy", "delete", &pid6]).unwrap();
    ctl(&s, &["customer-gateway", "delete", &cid]).unwrap();
    assert_eq!(
        ctl_json(&s, &["vpn-gateway", "delete", &gid])["status"],
        "deprovisioning"
    );

    // Bad token.
    let mut out = Vec::new();
    let e = run(
        [
            "s2sctl",
            "--api-url",
            &s.url,
            "--token",
            "nope",
            "vpn-gateway",
            "list",
        ],
        &mut out,
    )
    .unwrap_err();
    assert!(matches!(e, CliError::Api { status: 401, .. }), "{e}");
}

/// `ctl` with `--wait`: the result, and the progress lines.
fn ctl_wait(s: &Server, args: &[&str]) -> (Result<String, CliError>, String) {
    let mut all = vec!["s2sctl", "--api-url", &s.url, "--token", TOKEN];
    all.extend_from_slice(args);
    let (mut out, mut progress) = (Vec::new(), Vec::new());
    let r = run_with_io(all, &mut std::io::empty(), &mut out, &mut progress);
    (
        r.map(|()| String::from_utf8(out).unwrap()),
        String::from_utf8(progress).unwrap(),
    )
}

/// Plays the agent's part after `delay`: VPN gateways provisioned and
/// deleted, and (with `connections`) every connection reported active.
fn agent_after(s: &Server, delay: std::time::Duration, connections: bool) {
    let (store, config) = (s.store.clone(), s.config.clone());
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        gateway_api::simulate_agent(&store, &config);
        if connections {
            for spec in store.desired_state(&config).unwrap().connections {
                let update = gateway_api::ConnectionStatusUpdate {
                    status: gateway_api::model::ConnectionStatus::Active,
                    tunnel_status_ipv4: gateway_api::model::TunnelStatus::Up,
                    tunnel_status_ipv6: gateway_api::model::TunnelStatus::Up,
                    bgp_status_ipv4: gateway_api::model::BgpSessionStatus::Up,
                    bgp_status_ipv6: gateway_api::model::BgpSessionStatus::Disabled,
                    tunnel_mtu_ipv4: None,
                    tunnel_mtu_ipv6: None,
                };
                store
                    .set_connection_status(&spec.connection.id, &update)
                    .unwrap();
            }
        }
    });
}

#[test]
fn wait_follows_the_statuses_until_they_settle_and_yaml_prints_them() {
    let s = server();
    let second = std::time::Duration::from_secs(1);
    // Nothing to wait for on a command that changes no status.
    match ctl_wait(&s, &["--wait", "gateway-type", "list"]).0 {
        Err(CliError::Argument(m)) => assert!(m.contains("--wait applies to"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }

    agent_after(&s, second, false);
    let (out, progress) = ctl_wait(
        &s,
        &[
            "-o",
            "yaml",
            "--wait",
            "vpn-gateway",
            "create",
            "--name",
            "gw",
            "--gateway-type",
            "VGW-S",
            "--private-network-id",
            "pn1",
            "--ipam-ipv4-id",
            "ip4",
        ],
    );
    let g: Value = serde_norway::from_str(&out.unwrap()).unwrap();
    assert_eq!(g["status"], "active", "{g}");
    let gid = g["id"].as_str().unwrap().to_owned();
    let lines: Vec<&str> = progress.lines().collect();
    assert!(
        lines
            .first()
            .is_some_and(|l| l.starts_with(&format!("VPN gateway {gid}: provisioning ("))),
        "{progress}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with(&format!("VPN gateway {gid}: active ("))),
        "{progress}"
    );

    let cid = ctl_json(
        &s,
        &[
            "customer-gateway",
            "create",
            "--name",
            "c",
            "--asn",
            "65000",
            "--ipv4",
            "203.0.113.9",
        ],
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pid = ctl_json(
        &s,
        &[
            "routing-policy",
            "create",
            "--name",
            "rp",
            "--in",
            "10.0.0.0/8",
        ],
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // No agent reports the connection: the wait runs out, naming the
    // statuses it saw last.
    let (r, progress) = ctl_wait(
        &s,
        &[
            "--wait",
            "--wait-timeout",
            "1",
            "connection",
            "create",
            "--name",
            "conn",
            "--vpn-gateway-id",
            &gid,
            "--customer-gateway-id",
            &cid,
            "--ike",
            "aes256gcm-ecp256",
            "--esp",
            "aes256gcm",
            "--routing-policy-v4",
            &pid,
            "--bgp-v4",
            "169.254.7.1/30,169.254.7.2/30",
        ],
    );
    let id = match r {
        Err(CliError::Timeout {
            what,
            secs: 1,
            last,
        }) => {
            assert!(last.contains("tunnel_status_ipv4=down"), "{last}");
            what.strip_prefix("connection ").unwrap().to_owned()
        }
        other => panic!("expected a timeout, got {other:?}"),
    };
    assert!(
        progress.starts_with(&format!("connection {id}: ")),
        "{progress}"
    );
    // Once the agent reports it active, the wait ends there.
    agent_after(&s, second, true);
    let (out, progress) = ctl_wait(
        &s,
        &[
            "-o",
            "json",
            "--wait",
            "connection",
            "update",
            &id,
            "--name",
            "conn2",
        ],
    );
    let c: Value = serde_json::from_str(&out.unwrap()).unwrap();
    assert_eq!(
        (c["name"].as_str(), c["status"].as_str()),
        (Some("conn2"), Some("active"))
    );
    assert!(
        progress
            .lines()
            .last()
            .unwrap()
            .contains(": active tunnel_status_ipv4=up"),
        "{progress}"
    );

    // Deletes wait until the resource is gone.
    let (out, progress) = ctl_wait(&s, &["--wait", "connection", "delete", &id]);
    assert_eq!(out.unwrap(), "deleted connection\n");
    assert!(progress.ends_with(": gone (0 s)\n"), "{progress}");
    agent_after(&s, second, false);
    let (out, progress) = ctl_wait(&s, &["-o", "yaml", "--wait", "vpn-gateway", "delete", &gid]);
    let d: Value = serde_norway::from_str(&out.unwrap()).unwrap();
    assert_eq!(d["status"], "deprovisioning");
    assert!(
        progress.starts_with(&format!("VPN gateway {gid}: deprovisioning")),
        "{progress}"
    );
    assert!(
        progress.lines().last().unwrap().contains(": gone ("),
        "{progress}"
    );
    assert!(matches!(
        ctl(&s, &["vpn-gateway", "get", &gid]),
        Err(CliError::Api { status: 404, .. })
    ));
}
