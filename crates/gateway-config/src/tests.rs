use super::*;

#[test]
fn example_config_parses() {
    let text = include_str!("../../../config/gateway.toml");
    let c = Config::parse(text).expect("example config must parse");
    assert_eq!(c.gateway.asn, DEFAULT_ASN);
    assert!(c.gateway_type("VGW-S").is_some());
    assert!(!c.public_ips.is_empty());
    assert_eq!(c.gateway.connections_per_host, Some(10_000));
    let live = Config::parse(&text.replace("connections_per_host = 10000", "")).unwrap();
    assert_eq!(live.gateway.connections_per_host, None);
    assert!(c.fixed_changes(&live).is_empty(), "a live key");
}

#[test]
fn drop_events_parse_by_level_and_change_live() {
    let base = "[interfaces]\nwan = \"a\"\nlan = \"b\"\n";
    let c = Config::parse(base).unwrap();
    assert_eq!(c.datapath.drop_events, DropEvents::Off);
    assert_eq!(c.datapath.drop_events.aya_level(), 0);
    let on = Config::parse(&format!("{base}[datapath]\ndrop_events = \"info\"\n")).unwrap();
    assert_eq!(on.datapath.drop_events, DropEvents::Info);
    assert_eq!(on.datapath.drop_events.aya_level(), 3);
    assert!(DropEvents::Warn < DropEvents::Info && DropEvents::Info < DropEvents::Debug);
    // Not one of the keys that need a restart.
    assert!(
        c.fixed_changes(&on).is_empty(),
        "{:?}",
        c.fixed_changes(&on)
    );
    let err = Config::parse(&format!("{base}[datapath]\ndrop_events = \"loud\"\n")).unwrap_err();
    assert!(err.to_string().contains("drop_events"), "{err}");
}

#[test]
fn every_problem_is_reported_in_one_pass_with_its_key() {
    let text = "[gateway]\nconnections_per_host = 0\n\
                [interfaces]\nwan = \"eth0\"\nlan = \"eth0\"\n\
                [api]\ntokens = [\"short\"]\nmax_connections = 0\n\
                [child_sa]\nsoft_packets = 10\nhard_packets = 5\n\
                [[public_ips]]\nid = \"a\"\naddress = \"192.0.2.1\"\n\
                [[public_ips]]\nid = \"a\"\naddress = \"192.0.2.2\"\n";
    let dir = tempfile_dir();
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let found: Vec<String> = Config::check_file(&path)
        .iter()
        .map(|e| e.to_string())
        .collect();
    for key in [
        "interfaces.wan and interfaces.lan",
        "api.tokens[0]",
        "api.max_connections",
        "child_sa.soft_packets (10)",
        "public_ips: duplicate id a",
        "gateway.connections_per_host",
    ] {
        assert!(
            found.iter().any(|f| f.contains(key)),
            "{key} not in {found:#?}"
        );
    }
    assert_eq!(found.len(), 6, "{found:#?}");
    // A parse error names the key and stops there.
    std::fs::write(&path, "[interfaces]\nwan = \"a\"\nlan = \"b\"\nbogus = 1\n").unwrap();
    let found = Config::check_file(&path);
    assert_eq!(found.len(), 1);
    assert!(
        format!("{:?}", found[0]).contains("bogus"),
        "{:?}",
        found[0]
    );
    // The example config is clean.
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/gateway.toml");
    assert!(Config::check_file(&example).is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_reload_takes_the_live_keys_and_refuses_the_rest() {
    let base = "[interfaces]\nwan = \"wan0\"\nlan = \"lan0\"\n\
                [api]\ntokens = [\"first-token-0123456789\"]\n";
    let live = LiveConfig::new(Config::parse(base).unwrap()).unwrap();
    let first = live.get();
    // Tokens, gateway types, public IPs and private networks change live.
    let next = format!(
        "{}\n[[gateway_types]]\nname = \"VGW-XL\"\nbandwidth = 1\nallowed_connections = 1\n\
         [[public_ips]]\nid = \"p\"\naddress = \"192.0.2.9\"\n\
         [[private_networks]]\nid = \"n\"\ninterface = \"lan0\"\nipv4_subnet = \"198.51.100.0/24\"\n",
        base.replace("first-token-0123456789", "second-token-0123456789")
    );
    live.replace(Config::parse(&next).unwrap()).unwrap();
    assert!(live.get().gateway_type("VGW-XL").is_some());
    assert!(live.get().public_ip("p").is_some());
    assert_eq!(secrets(&live), [b"second-token-0123456789".to_vec()]);
    // The old one stays whole for whoever still holds it.
    assert!(first.gateway_type("VGW-XL").is_none());
    // A key that needs a restart refuses the whole reload.
    let moved = next
        .replace("wan0", "eth9")
        .replace("second-token", "third-token0");
    match live.replace(Config::parse(&moved).unwrap()) {
        Err(ReloadError::Fixed(keys)) => assert_eq!(keys, ["interfaces.wan"]),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(secrets(&live), [b"second-token-0123456789".to_vec()]);
    // So does leaving no token.
    let open = next.replace("tokens = [\"second-token-0123456789\"]", "tokens = []");
    assert!(matches!(
        live.replace(Config::parse(&open).unwrap()),
        Err(ReloadError::NoTokens)
    ));
    assert!(live.get().gateway_type("VGW-XL").is_some());
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("s2s-config-check-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn mss_clamp_defaults_on_and_follows_gateway_types() {
    let base = "[interfaces]\nwan = \"a\"\nlan = \"b\"\n";
    let c = Config::parse(base).unwrap();
    assert!(c.mss_clamp("VGW-S"));
    assert_eq!(c.datapath.icmp_too_big_per_second, 100);
    let c = Config::parse(&format!(
        "{base}[datapath]\nmss_clamp = false\n\
         [[gateway_types]]\nname = \"VGW-S\"\nbandwidth = 1\nallowed_connections = 1\n\
         [[gateway_types]]\nname = \"VGW-M\"\nbandwidth = 1\nallowed_connections = 1\nmss_clamp = true\n"
    ))
    .unwrap();
    assert!(!c.mss_clamp("VGW-S"));
    assert!(c.mss_clamp("VGW-M"));
    assert!(!c.mss_clamp("unknown"));
    let err = Config::parse(&format!("{base}[datapath]\nicmp_too_big_burst = 0\n")).unwrap_err();
    assert!(err.to_string().contains("icmp_too_big"), "{err}");
}

#[test]
fn busy_polling_is_off_by_default_and_bounded() {
    let base = "[interfaces]\nwan = \"a\"\nlan = \"b\"\n[datapath]\n";
    assert_eq!(Config::parse(base).unwrap().datapath.busy_poll(), None);
    let c = Config::parse(&format!("{base}busy_poll_usecs = 50\n")).unwrap();
    assert_eq!(c.datapath.busy_poll(), Some((50, 64)));
    let c = Config::parse(&format!(
        "{base}busy_poll_usecs = 20\nbusy_poll_budget = 16\n"
    ))
    .unwrap();
    assert_eq!(c.datapath.busy_poll(), Some((20, 16)));
    for bad in [
        "busy_poll_usecs = 1001",
        "busy_poll_budget = 0",
        "busy_poll_budget = 2000",
    ] {
        let err = Config::parse(&format!("{base}{bad}\n")).unwrap_err();
        assert!(
            err.to_string().contains("datapath.busy_poll"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn route_groups_default_and_bounds() {
    let base = "[interfaces]\nwan = \"a\"\nlan = \"b\"\n[datapath]\n";
    assert_eq!(Config::parse(base).unwrap().datapath.route_groups_v4, 4096);
    let c = Config::parse(&format!("{base}route_groups_v4 = 65536\n")).unwrap();
    assert_eq!(c.datapath.route_groups_v4, MAX_ROUTE_GROUPS_V4);
    for bad in ["route_groups_v4 = 0", "route_groups_v4 = 65537"] {
        let err = Config::parse(&format!("{base}{bad}\n")).unwrap_err();
        assert!(
            err.to_string()
                .contains("datapath.route_groups_v4 must be between 1 and 65536"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn same_wan_and_lan_refused() {
    let err = Config::parse("[interfaces]\nwan = \"a\"\nlan = \"a\"\n").unwrap_err();
    assert!(err.to_string().contains("must differ"), "{err}");
}

#[test]
fn child_sa_lifetimes_must_leave_room_to_rekey() {
    let base = "[interfaces]\nwan = \"a\"\nlan = \"b\"\n[child_sa]\n";
    let c = Config::parse(&format!("{base}soft_packets = 1000\nhard_packets = 2000\n")).unwrap();
    assert_eq!(c.child_sa.soft_packets, Some(1000));
    let err = Config::parse(&format!("{base}soft_bytes = 5\nhard_bytes = 5\n")).unwrap_err();
    assert!(err.to_string().contains("child_sa.soft_bytes"), "{err}");
    let err = Config::parse(&format!("{base}hard_packets = 0\n")).unwrap_err();
    assert!(err.to_string().contains("positive"), "{err}");
}

#[test]
fn unknown_field_refused() {
    let err = Config::parse("[interfaces]\nwan = \"a\"\nlan = \"b\"\nbogus = 1\n").unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
}

const BASE: &str = "[interfaces]\nwan = \"a\"\nlan = \"b\"\n";

#[test]
fn short_token_refused_naming_the_key() {
    let ok = format!("{BASE}[api]\ntokens = [\"0123456789abcdef\"]\n");
    Config::parse(&ok).unwrap();
    let short = format!("{BASE}[api]\ntokens = [\"0123456789abcdef\", \"lab-0000-token\"]\n");
    let err = Config::parse(&short).unwrap_err();
    assert!(
        matches!(&err, ConfigError::ShortToken { key, len: 14 } if key == "api.tokens[1]"),
        "{err}"
    );
    assert!(err.to_string().contains("api.tokens[1]"), "{err}");
}

fn secrets(live: &LiveConfig) -> Vec<Vec<u8>> {
    live.keys().iter().map(|k| k.secret.clone()).collect()
}

#[test]
fn keys_are_confined_to_their_projects_and_checked() {
    let text = format!(
        "{BASE}[api]\ntokens = [\"operator-token-0123456789\"]\n\
         [[api.keys]]\ntoken = \"tenant-a-token-0123456789\"\norganization_id = \"org-a\"\nprojects = [\"p-a1\", \"p-a2\"]\n\
         [[api.keys]]\ntoken = \"tenant-b-token-0123456789\"\norganization_id = \"org-b\"\nprojects = [\"p-b\"]\n"
    );
    let live = LiveConfig::new(Config::parse(&text).unwrap()).unwrap();
    let keys = live.keys();
    assert_eq!(keys.len(), 3);
    assert_eq!(keys[0].scope, None, "api.tokens act on every project");
    let a = keys[1].scope.as_ref().unwrap();
    assert_eq!((a.organization_id.as_str(), a.projects.len()), ("org-a", 2));
    let config = live.get();
    assert_eq!(config.organization_of("p-a2"), "org-a");
    assert_eq!(config.organization_of("p-b"), "org-b");
    assert_eq!(config.organization_of("p-other"), "p-other");
    // The token never shows in the config's Debug output.
    let shown = format!("{:?} {:?}", Config::parse(&text).unwrap(), keys);
    assert!(!shown.contains("tenant-a-token"), "{shown}");

    let refused = |text: &str, what: &str| {
        let err = Config::parse(text).unwrap_err();
        assert!(err.to_string().contains(what), "{what}: {err}");
    };
    refused(
        &text.replace("projects = [\"p-b\"]", "projects = []"),
        "at least one",
    );
    refused(
        &text.replace("tenant-b-token-0123456789", "tenant-a-token-0123456789"),
        "same token as api.keys[0]",
    );
    refused(
        &text.replace("projects = [\"p-b\"]", "projects = [\"p-a1\"]"),
        "project p-a1 is in organization org-b here and org-a in api.keys[0]",
    );
    refused(&text.replace("org-b", "org b"), "not an id");
    refused(
        &text.replace("tenant-b-token-0123456789", "short"),
        "api.keys[1].token",
    );
}

#[test]
fn tokens_file_lines_may_confine_a_key() {
    let dir = std::env::temp_dir().join(format!("gwcfg-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokens");
    std::fs::write(
        &path,
        "operator-token-0123456789\ntenant-token-0123456789 org-1 p-1,p-2\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!("{BASE}[api]\ntokens_file = \"{}\"\n", path.display());
    let keys = Config::parse(&text).unwrap().api_keys().unwrap();
    assert_eq!(keys[0].scope, None);
    // The file's organizations name the resources of its projects.
    let live = LiveConfig::new(Config::parse(&text).unwrap()).unwrap();
    assert_eq!(live.get().organization_of("p-2"), "org-1");
    assert_eq!(
        keys[1].scope,
        Some(KeyScope {
            organization_id: "org-1".into(),
            projects: vec!["p-1".into(), "p-2".into()]
        })
    );
    std::fs::write(&path, "tenant-token-0123456789 org-1\n").unwrap();
    let err = Config::parse(&text).unwrap_err();
    assert!(err.to_string().contains("line 1: expected TOKEN"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tokens_file_mode_and_length_checked() {
    let dir = std::env::temp_dir().join(format!("gwcfg-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokens");
    std::fs::write(&path, "# ops\n\n0123456789abcdef0123\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!("{BASE}[api]\ntokens_file = \"{}\"\n", path.display());
    let c = Config::parse(&text).unwrap();
    let keys = c.api_keys().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].secret, b"0123456789abcdef0123");
    assert_eq!(keys[0].scope, None);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = c.api_keys().unwrap_err();
    assert!(
        matches!(err, ConfigError::LooseTokensFile { mode: 0o640, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("chmod 600"), "{err}");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&path, "0123456789abcdef0123\nshort\n").unwrap();
    let err = c.api_keys().unwrap_err();
    assert!(
        matches!(&err, ConfigError::ShortToken { key, len: 5 } if key.ends_with("line 2")),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn debug_output_hides_tokens() {
    let c = Config::parse(&format!(
        "{BASE}[api]\ntokens = [\"0123456789abcdef-secret\"]\n"
    ))
    .unwrap();
    let d = format!("{c:?}");
    assert!(!d.contains("0123456789abcdef-secret"), "{d}");
    assert!(d.contains("<1 redacted>"), "{d}");
}

#[test]
fn http_limits_have_defaults_and_refuse_zero() {
    let c = Config::parse(BASE).unwrap();
    assert_eq!(c.api.header_timeout(), Duration::from_secs(10));
    assert_eq!(c.api.max_connections, 256);
    let err = Config::parse(&format!("{BASE}[api]\nmax_connections = 0\n")).unwrap_err();
    assert!(err.to_string().contains("max_connections"), "{err}");
}
