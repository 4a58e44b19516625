use super::*;

fn field_of(e: &ApiError) -> String {
    match e {
        ApiError::InvalidArguments(a) => a[0].argument_name.clone(),
        other => panic!("not invalid_arguments: {other:?}"),
    }
}

#[test]
fn enums_round_trip_sdk_strings() {
    assert_eq!(
        Encryption::parse("chacha20poly1305"),
        Some(Encryption::Chacha20poly1305)
    );
    assert_eq!(DhGroup::Curve25519.as_str(), "curve25519");
    assert_eq!(VpnGatewayStatus::Deprovisioning.as_str(), "deprovisioning");
    let v = serde_json::to_value(TunnelStatus::UnknownTunnelStatus).unwrap();
    assert_eq!(v, "unknown_tunnel_status");
    let e = Integrity::parse_field("x.integrity", "md5").unwrap_err();
    assert_eq!(field_of(&e), "x.integrity");
    assert!(e.to_string().contains("sha256"));
}

#[test]
fn tunnel_mtus_are_an_extension_older_rows_lack() {
    // A connection as stored before the extension: no tunnel_mtu_*.
    let old = serde_json::json!({
        "id": "c", "project_id": "p", "organization_id": "p", "name": "n",
        "tags": [], "created_at": "t", "updated_at": "t", "status": "active",
        "is_ipv6": false, "initiation_policy": "vpn_gateway",
        "ikev2_ciphers": [], "esp_ciphers": [{"encryption": "aes256gcm"}],
        "route_propagation_enabled": true, "vpn_gateway_id": "g",
        "customer_gateway_id": "cg", "tunnel_status": "up",
        "tunnel_status_ipv4": "up", "tunnel_status_ipv6": null,
        "bgp_status_ipv4": "up", "bgp_status_ipv6": "disabled",
        "bgp_session_ipv4": null, "bgp_session_ipv6": null,
        "secret_id": "s", "secret_revision": 1, "region": "fr-par"
    });
    let mut c: Connection = serde_json::from_value(old.clone()).unwrap();
    assert_eq!((c.tunnel_mtu_ipv4, c.tunnel_mtu_ipv6), (None, None));
    c.tunnel_mtu_ipv4 = Some(TunnelMtu {
        inner_mtu: 1438,
        tcp_mss_ipv4: 1398,
        tcp_mss_ipv6: 1378,
        mss_clamp: true,
    });
    assert_eq!(c.tunnel_mtu(Family::V4).map(|m| m.inner_mtu), Some(1438));
    assert_eq!(c.tunnel_mtu(Family::V6), None);
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(
        v["tunnel_mtu_ipv4"],
        serde_json::json!({"inner_mtu": 1438, "tcp_mss_ipv4": 1398,
                           "tcp_mss_ipv6": 1378, "mss_clamp": true})
    );
    assert!(v["tunnel_mtu_ipv6"].is_null());
    // Every field the SDK reads is still there, unchanged: only the two
    // extension fields were added.
    let o = v.as_object().unwrap();
    for (k, val) in old.as_object().unwrap() {
        assert_eq!(o.get(k), Some(val), "{k}");
    }
    assert_eq!(o.len(), old.as_object().unwrap().len() + 2);
    let back: Connection = serde_json::from_value(v).unwrap();
    assert_eq!(back, c);
}

#[test]
fn names_and_tags() {
    assert!(validate_name("name", "gw").is_ok());
    assert_eq!(field_of(&validate_name("name", " ").unwrap_err()), "name");
    assert!(validate_name("name", &"x".repeat(256)).is_err());
    assert!(validate_name("name", "a\nb").is_err());
    assert!(validate_tags("tags", &["a".into()]).is_ok());
    assert_eq!(
        field_of(&validate_tags("tags", &["a".into(), String::new()]).unwrap_err()),
        "tags[1]"
    );
    assert!(validate_tags("tags", &["x".repeat(129)]).is_err());
    assert!(validate_tags("tags", &vec!["a".to_string(); 65]).is_err());
}

#[test]
fn customer_asn_rules() {
    assert_eq!(validate_customer_asn("asn", 65000, 12876).unwrap(), 65000);
    assert_eq!(
        validate_customer_asn("asn", 4_200_000_000, 12876).unwrap(),
        4_200_000_000
    );
    for bad in [0, -1, 12876, 23456, 65535, 4_294_967_295, 4_294_967_296] {
        let e = validate_customer_asn("asn", bad, 12876).unwrap_err();
        assert_eq!(field_of(&e), "asn", "{bad}");
    }
    // Our configured ASN is refused too.
    assert!(validate_customer_asn("asn", 64512, 64512).is_err());
    assert!(validate_customer_asn("asn", 12876, 64512).is_err());
}

#[test]
fn public_ip_rules() {
    assert!(validate_public_ip("ipv4_public", "203.0.113.7", Family::V4).is_ok());
    assert!(validate_public_ip("ipv6_public", "2001:db8::7", Family::V6).is_ok());
    for (s, fam) in [
        ("2001:db8::7", Family::V4),
        ("203.0.113.7", Family::V6),
        ("nope", Family::V4),
        ("0.0.0.0", Family::V4),
        ("127.0.0.1", Family::V4),
        ("224.0.0.1", Family::V4),
        ("169.254.1.1", Family::V4),
        ("::1", Family::V6),
        ("fe80::1", Family::V6),
        ("ff02::1", Family::V6),
    ] {
        assert!(validate_public_ip("f", s, fam).is_err(), "{s}");
    }
}

#[test]
fn prefix_rules() {
    let ok = validate_prefixes("prefix_filter_in", &["10.0.0.0/8".into()], Family::V4).unwrap();
    assert_eq!(ok.len(), 1);
    let e = validate_prefixes(
        "prefix_filter_in",
        &["10.0.0.0/8".into(), "2001:db8::/32".into()],
        Family::V4,
    )
    .unwrap_err();
    assert_eq!(field_of(&e), "prefix_filter_in[1]");
    assert!(e.to_string().contains("IPv4"));
    assert!(validate_prefixes("p", &["10.0.0.1/8".into()], Family::V4)
        .unwrap_err()
        .to_string()
        .contains("host bits"));
    assert!(validate_prefixes("p", &["10.0.0.0".into()], Family::V4).is_err());
    assert!(validate_prefixes("p", &["10.0.0.0/33".into()], Family::V4).is_err());
    assert!(validate_prefixes("p", &["10.0.0.0/8".into()], Family::V6).is_err());
}

fn c(enc: &str, int: Option<&str>, dh: Option<&str>) -> CipherRequest {
    CipherRequest {
        encryption: Some(enc.into()),
        integrity: int.map(Into::into),
        dh_group: dh.map(Into::into),
    }
}

#[test]
fn cipher_rules() {
    let ok = validate_ciphers(
        "ikev2_ciphers",
        &[
            c("aes256", Some("sha256"), Some("ecp256")),
            c("aes256gcm", None, Some("curve25519")),
        ],
        CipherUse::Ikev2,
    )
    .unwrap();
    assert_eq!(ok.len(), 2);
    assert!(validate_ciphers("esp_ciphers", &[c("aes256gcm", None, None)], CipherUse::Esp).is_ok());
    let e = validate_ciphers("ikev2_ciphers", &[], CipherUse::Ikev2).unwrap_err();
    assert_eq!(field_of(&e), "ikev2_ciphers");
    let e =
        validate_ciphers("ikev2_ciphers", &[c("des", None, None)], CipherUse::Ikev2).unwrap_err();
    assert_eq!(field_of(&e), "ikev2_ciphers[0].encryption");
    let e = validate_ciphers(
        "ikev2_ciphers",
        &[c("unknown_encryption", None, None)],
        CipherUse::Ikev2,
    )
    .unwrap_err();
    assert_eq!(field_of(&e), "ikev2_ciphers[0].encryption");
    let e =
        validate_ciphers("esp_ciphers", &[c("aes128", None, None)], CipherUse::Esp).unwrap_err();
    assert_eq!(field_of(&e), "esp_ciphers[0].integrity");
    let e = validate_ciphers(
        "esp_ciphers",
        &[c("aes128", Some("md5"), None)],
        CipherUse::Esp,
    )
    .unwrap_err();
    assert_eq!(field_of(&e), "esp_ciphers[0].integrity");
    let e = validate_ciphers(
        "ikev2_ciphers",
        &[c("aes128gcm", None, None)],
        CipherUse::Ikev2,
    )
    .unwrap_err();
    assert_eq!(field_of(&e), "ikev2_ciphers[0].dh_group");
    let e = validate_ciphers(
        "esp_ciphers",
        &[c("aes128gcm", None, Some("modp1024"))],
        CipherUse::Esp,
    )
    .unwrap_err();
    assert_eq!(field_of(&e), "esp_ciphers[0].dh_group");
    let missing = CipherRequest::default();
    let e = validate_ciphers("esp_ciphers", &[missing], CipherUse::Esp).unwrap_err();
    assert_eq!(field_of(&e), "esp_ciphers[0].encryption");
    assert!(validate_ciphers(
        "esp_ciphers",
        &vec![c("aes128gcm", None, None); 33],
        CipherUse::Esp
    )
    .is_err());
}

#[test]
fn interco_rules() {
    let i = parse_interco(
        "bgp_config_ipv4",
        "169.254.10.1/30",
        "169.254.10.2/30",
        Family::V4,
    )
    .unwrap();
    assert_eq!(i.subnet().to_string(), "169.254.10.0/30");
    let i = parse_interco(
        "bgp_config_ipv4",
        "169.254.10.1",
        "169.254.10.2",
        Family::V4,
    )
    .unwrap();
    assert_eq!(i.local.prefix_len(), 30);
    assert!(parse_interco("b", "169.254.10.0/31", "169.254.10.1/31", Family::V4).is_ok());
    let i6 = parse_interco("bgp_config_ipv6", "fd00::/127", "fd00::1/127", Family::V6).unwrap();
    assert_eq!(i6.local.prefix_len(), 127);
    // Wrong family, different subnets, same address, network address, /32.
    let e = parse_interco("bgp_config_ipv4", "fd00::/127", "fd00::1/127", Family::V4).unwrap_err();
    assert_eq!(field_of(&e), "bgp_config_ipv4.private_ip");
    let e = parse_interco(
        "bgp_config_ipv4",
        "169.254.0.1/30",
        "169.254.0.6/30",
        Family::V4,
    )
    .unwrap_err();
    assert_eq!(field_of(&e), "bgp_config_ipv4.peer_private_ip");
    assert!(parse_interco("b", "169.254.0.1/30", "169.254.0.1/30", Family::V4).is_err());
    assert!(parse_interco("b", "169.254.0.0/30", "169.254.0.1/30", Family::V4).is_err());
    assert!(parse_interco("b", "169.254.0.1/32", "169.254.0.1/32", Family::V4).is_err());
    assert!(parse_interco("b", "garbage", "169.254.0.1/30", Family::V4).is_err());
}

#[test]
fn interco_allocation_never_overlaps() {
    let mut taken = Vec::new();
    for _ in 0..50 {
        let c = allocate_interco(Family::V4, &taken).unwrap();
        assert!(IpNet::V4(INTERCO_V4_POOL).contains(&c.local.addr()));
        assert!(!taken.iter().any(|t: &Interco| t.overlaps(&c)));
        taken.push(c);
    }
    // A caller-given /29 blocks two /30s.
    let given = parse_interco("b", "169.254.0.1/29", "169.254.0.2/29", Family::V4).unwrap();
    let c = allocate_interco(Family::V4, &[given]).unwrap();
    assert_eq!(c.local.to_string(), "169.254.0.9/30");
    assert_eq!(c.peer.to_string(), "169.254.0.10/30");
    let mut t6 = Vec::new();
    for _ in 0..10 {
        let c = allocate_interco(Family::V6, &t6).unwrap();
        assert!(IpNet::V6(INTERCO_V6_POOL).contains(&c.peer.addr()));
        assert!(!t6.iter().any(|t: &Interco| t.overlaps(&c)));
        t6.push(c);
    }
}

/// The sweep picks what checking each candidate against every taken
/// subnet picks, over random mixes of allocated, caller-given (any
/// size, inside the pool or not) and other-family subnets, and an
/// exhausted pool gives none.
#[test]
fn interco_allocation_is_the_first_free_subnet() {
    fn naive(family: Family, taken: &[Interco]) -> Option<Interco> {
        let (base, unit, count) = match family {
            Family::V4 => (
                u128::from(u32::from(INTERCO_V4_POOL.network())),
                4,
                1u128 << 14,
            ),
            Family::V6 => (u128::from(INTERCO_V6_POOL.network()), 2, 1 << 16),
        };
        (0..count)
            .map(|i| interco_at(family, base + i * unit))
            .find(|c| !taken.iter().any(|t| t.overlaps(c)))
    }
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..300 {
        let mut taken = Vec::new();
        for _ in 0..(next() % 40) {
            let r = next();
            let c = match r % 4 {
                0 => allocate_interco(Family::V4, &taken),
                1 => allocate_interco(Family::V6, &taken),
                2 => {
                    // A caller-given IPv4 subnet near the pool's start,
                    // /26 to /31, sometimes just outside the pool.
                    let len = 26 + (next() % 6) as u8;
                    let a = u32::from(Ipv4Addr::new(169, 254, 0, 0))
                        .wrapping_add((next() % 300) as u32)
                        .wrapping_sub(if r % 8 == 2 { 256 } else { 0 });
                    let n = Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().trunc();
                    let hosts: Vec<Ipv4Addr> = n.hosts().take(2).collect();
                    (hosts.len() == 2).then(|| Interco {
                        local: IpNet::V4(Ipv4Net::new(hosts[0], len).unwrap()),
                        peer: IpNet::V4(Ipv4Net::new(hosts[1], len).unwrap()),
                    })
                }
                _ => {
                    let len = 120 + (next() % 8) as u8;
                    let a = u128::from(INTERCO_V6_POOL.network()) + u128::from(next() % 500);
                    let n = Ipv6Net::new(Ipv6Addr::from(a), len).unwrap().trunc();
                    let first = u128::from(n.network());
                    Some(Interco {
                        local: IpNet::V6(Ipv6Net::new(Ipv6Addr::from(first), len).unwrap()),
                        peer: IpNet::V6(Ipv6Net::new(Ipv6Addr::from(first + 1), len).unwrap()),
                    })
                }
            };
            taken.extend(c);
        }
        for family in [Family::V4, Family::V6] {
            assert_eq!(
                allocate_interco(family, &taken),
                naive(family, &taken),
                "round {round}, {family:?}, taken {taken:?}"
            );
        }
    }
    // The whole IPv4 pool given away as one subnet: nothing left.
    let all = parse_interco("b", "169.254.0.1/16", "169.254.0.2/16", Family::V4).unwrap();
    assert_eq!(allocate_interco(Family::V4, &[all]), None);
    assert!(allocate_interco(Family::V6, &[all]).is_some());
}
