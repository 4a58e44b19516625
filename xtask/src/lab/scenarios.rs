//! The lab's end-to-end scenarios (`cargo xtask lab --scenarios`): a table
//! of named functions run in order on the lab the main steps built, each
//! bounded in time.

use super::restart::*;
use super::*;

/// What every scenario works on: the lab, the Ctrl-C flag, the connection
/// the main steps created, and where the daemons' files are.
pub(super) struct Ctx<'a> {
    lab: &'a mut Lab,
    stop: &'a AtomicBool,
    conn_id: &'a str,
    rp6_id: &'a str,
    dir: PathBuf,
    gw_log: PathBuf,
}

struct Scenario {
    /// What a failure is reported under.
    name: &'static str,
    /// The step line printed when it starts: what it does → what it expects.
    title: &'static str,
    run: fn(&mut Ctx<'_>) -> anyhow::Result<()>,
}

/// In order: later ones start from the state the earlier ones leave.
const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "scenario 1: fast path",
        title: "scenario 1: traffic goes through the fast path (XDP and ESP counters in /metrics move)",
        run: fast_path,
    },
    Scenario {
        name: "scenario 2: route propagation",
        title: "scenario 2: route propagation disabled → routes withdrawn, traffic stops; enabled → back (BGP stays up)",
        run: route_propagation,
    },
    Scenario {
        name: "scenario 3: routing policy detached",
        title: "scenario 3: IPv6 routing policy detached → bgp_status_ipv6 disabled, still active; re-attached → up",
        run: routing_policy_detached,
    },
    Scenario {
        name: "scenario 4: PSK renewed",
        title: "scenario 4: PSK renewed → customer side reloads its new device config → tunnels back with the new key",
        run: psk_renewed,
    },
    Scenario {
        name: "scenario 5: customer gateway restarted",
        title: "scenario 5: customer gateway restarted (charon and BIRD stopped and started again) → recovered",
        run: customer_restarted,
    },
    Scenario {
        name: "scenario 5b: customer gateway crashed",
        title: "scenario 5b: customer gateway crashed (SIGKILL) and restarted; it initiates (INITIAL_CONTACT replaces our stale SAs) → recovered",
        run: customer_crashed,
    },
    Scenario {
        name: "scenario 6: tunnel failover",
        title: "scenario 6: the peer address of the tunnel cgw sends through is cut → routes and that family's BGP session move to the other tunnel on both sides, traffic continues in both families; the address back → back",
        run: tunnel_failover,
    },
    Scenario {
        name: "scenario 7: daemon restarted",
        title: "scenario 7: s2s-gateway restarted (SIGTERM, kill -9, kill -9 with the SA state file removed; same state dir), with initiation policy vpn_gateway then customer_gateway → everything back from the store, no API write, pings lost counted",
        run: daemon_restarted,
    },
    Scenario {
        name: "scenario 8: every proposal",
        title: "scenario 8: each IKE/ESP proposal the API offers → tunnels re-established with it, traffic through our ESP",
        run: every_proposal,
    },
    Scenario {
        name: "scenario 9: rekeys during traffic",
        title: "scenario 9: CHILD SA and IKE SA rekeys (started by the customer) during traffic → pings keep flowing",
        run: rekeys_during_traffic,
    },
    Scenario {
        name: "scenario 10: package upgrade",
        title: "scenario 10: the Debian package installed, then upgraded, with tunnels up → the daemon restarted from the installed files each time (as the package's postinst does under systemd), SAs resumed, pings lost counted",
        run: package_upgraded,
    },
];

/// Runs every scenario in order; `current` names the one running, for
/// the failure report.
pub(super) fn run_scenarios(
    lab: &mut Lab,
    stop: &AtomicBool,
    conn_id: &str,
    rp6_id: &str,
    current: &mut &'static str,
) -> anyhow::Result<()> {
    let dir = lab.dir.clone();
    let mut cx = Ctx {
        lab,
        stop,
        conn_id,
        rp6_id,
        gw_log: dir.join("s2s-gateway.log"),
        dir,
    };
    for s in SCENARIOS {
        *current = s.name;
        step(s.title);
        (s.run)(&mut cx)?;
    }
    println!();
    println!("lab: scenarios: all {} passed", SCENARIOS.len());
    Ok(())
}

fn fast_path(cx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let stop = cx.stop;
    let conn_id = cx.conn_id;
    let lab = &mut *cx.lab;
    let before = tunnel_counters(conn_id)?;
    for target in REMOTE_HOSTS {
        let mut c = VPC.cmd("ping");
        if target.contains(':') {
            c.arg("-6");
        }
        sh(c.args(["-q", "-c", "5", "-i", "0.2", "-W", "2", target]))?;
    }
    let after = tunnel_counters(conn_id)?;
    for ((t, x0, e0), (_, x1, e1)) in before.iter().zip(&after) {
        println!("  {t}: s2s_xdp_packets_total {x0} → {x1}, s2s_esp_packets_total {e0} → {e1}");
        if x1 <= x0 || e1 <= e0 {
            bail!("tunnel {t}: the fast-path counters did not move with the pings");
        }
    }

    // SA census and per-session prefix counts (refreshed on the agent's
    // 5 s pass): both tunnels' SAs established, and each session's
    // customer prefix received and accepted.
    wait_for(
        lab,
        stop,
        "/metrics to count the SAs and the accepted prefixes",
        Duration::from_secs(15),
        || {
            let text = metrics()?;
            let sample = |line: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(line))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let ike = sample("s2s_ike_sas{state=\"established\"}");
            let child = sample("s2s_child_sas{state=\"installed\"}");
            let accepted: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.starts_with("s2s_bgp_prefixes{")
                        && l.contains("state=\"accepted\"")
                        && !l.ends_with(" 0")
                })
                .collect();
            Ok((ike >= 2 && child >= 2 && accepted.len() >= 2).then(|| {
                println!(
                    "  /metrics: {ike} IKE SAs established, {child} CHILD SAs installed; {}",
                    accepted.join(", ")
                );
            }))
        },
    )?;
    Ok(())
}

fn route_propagation(cx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let stop = cx.stop;
    let conn_id = cx.conn_id;
    let dir = cx.dir.clone();
    let lab = &mut *cx.lab;
    let sessions = bird_sessions(&dir)?;
    println!("  BIRD sessions: {sessions:?}");
    set_route_propagation(conn_id, false)?;
    wait_for(
        lab,
        stop,
        "gw's kernel routes (proto 196) to be withdrawn",
        Duration::from_secs(20),
        || Ok(gw_routes()?.trim().is_empty().then_some(())),
    )?;
    println!("  gw kernel routes (proto 196): none");
    wait_for(
        lab,
        stop,
        "BIRD to lose the VPC prefixes",
        Duration::from_secs(20),
        || {
            let r = bird_learned(&dir)?;
            Ok((!r.contains("198.51.100.0/24") && !r.contains("2001:db8:100::/64")).then_some(()))
        },
    )?;
    println!("  BIRD: no route learned from us");
    for target in REMOTE_HOSTS {
        if ping_once(target) {
            bail!("ping vpc → {target} still works with route propagation disabled");
        }
        println!("  ping vpc → {target}: fails, as it must");
    }
    set_route_propagation(conn_id, true)?;
    wait_gw_routes(lab, stop, Duration::from_secs(20))?;
    wait_for(
        lab,
        stop,
        "BIRD to learn the VPC prefixes again",
        Duration::from_secs(20),
        || {
            let r = bird_learned(&dir)?;
            Ok((r.contains("198.51.100.0/24") && r.contains("2001:db8:100::/64")).then_some(()))
        },
    )?;
    wait_pings(lab, stop, Duration::from_secs(15))?;
    let now = bird_sessions(&dir)?;
    if !same_sessions(&sessions, &now) || !now.iter().all(|(_, s)| s.contains("Established")) {
        bail!("BGP sessions changed while toggling route propagation: {sessions:?} → {now:?}");
    }
    println!("  BIRD sessions unchanged (still Established, same since-time)");
    Ok(())
}

fn routing_policy_detached(cx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let stop = cx.stop;
    let conn_id = cx.conn_id;
    let rp6_id = cx.rp6_id;
    let lab = &mut *cx.lab;
    {
        let (id, req) = (conn_id.to_owned(), v6_policy(rp6_id));
        api(move |c| c.detach_routing_policy(&id, &req))?;
    }
    wait_connection(
        lab,
        stop,
        conn_id,
        "bgp_status_ipv6 disabled with the connection active (IPv4 session up)",
        Duration::from_secs(20),
        |c| {
            c.bgp_status_ipv6 == BgpSessionStatus::Disabled
                && c.bgp_status_ipv4 == BgpSessionStatus::Up
                && c.status == ConnectionStatus::Active
        },
    )?;
    wait_for(
        lab,
        stop,
        "the IPv6 routes to be withdrawn from gw's kernel table",
        Duration::from_secs(20),
        || Ok((!gw_routes()?.contains("2001:db8:200::/48")).then_some(())),
    )?;
    println!("  gw: 2001:db8:200::/48 withdrawn");
    {
        let (id, req) = (conn_id.to_owned(), v6_policy(rp6_id));
        api(move |c| c.set_routing_policy(&id, &req))?;
    }
    recovered(
        lab,
        stop,
        conn_id,
        "bgp_status_ipv6 up again",
        Duration::from_secs(120),
        Duration::from_secs(15),
    )?;
    Ok(())
}

fn psk_renewed(cx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let stop = cx.stop;
    let conn_id = cx.conn_id;
    let dir = cx.dir.clone();
    let gw_log = cx.gw_log.clone();
    let lab = &mut *cx.lab;
    let established = count_in_log(&gw_log, "IKE SA established");
    let old = fs::read_to_string(dir.join("swanctl.conf"))?;
    {
        let id = conn_id.to_owned();
        api(move |c| c.renew_psk(&id, &RenewPskRequest::default()))?;
    }
    let new = write_swanctl(&dir, conn_id)?;
    if new == old {
        bail!("the strongSwan device config did not change with the new PSK");
    }
    load_swanctl(&dir)?;
    println!("  cgw: new swanctl.conf loaded (swanctl --load-all)");
    wait_new_ike_sas(
        lab,
        stop,
        &gw_log,
        established,
        "both tunnels to re-establish their IKE SAs",
        Duration::from_secs(90),
    )?;
    recovered(
        lab,
        stop,
        conn_id,
        "the connection to be active with the new PSK",
        Duration::from_secs(120),
        Duration::from_secs(15),
    )?;
    Ok(())
}

fn customer_restarted(cx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let stop = cx.stop;
    let conn_id = cx.conn_id;
    let lab = &mut *cx.lab;
    restart_customer(lab, stop, conn_id, "-TERM")?;
    println!("  cgw: charon and BIRD stopped (SIGTERM: charon deletes its SAs) and started again with the same configs");
    recovered(
        lab,
        stop,
        conn_id,
        "the connection to recover",
        Duration::from_secs(150),
        Duration::from_secs(15),
    )?;
    Ok(())
}

fn customer_crashed(cx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let stop = cx.stop;
    let conn_id = cx.conn_id;
    let dir = cx.dir.clone();
    let lab = &mut *cx.lab;
    restart_customer(lab, stop, conn_id, "-KILL")?;
    println!("  cgw: charon and BIRD killed (no DELETE sent: our IKE SAs stay) and started again");
    let uri = charon::vici_uri(&dir);
    for child in ["s2s-v4-net", "s2s-v6-net"] {
        CGW.out(&[
            "swanctl",
            "--initiate",
            "--child",
            child,
            "--timeout",
            "15",
            "--uri",
            &uri,
        ])
        .with_context(|| format!("cgw: swanctl --initiate --child {child}"))?;
        println!("  cgw: {child} initiated by the customer gateway");
    }
    recovered(
        lab,
        stop,
        conn_id,
        "the connection to recover",
        Duration::from_secs(60),
        Duration::from_secs(15),
    )?;
    Ok(())
}

fn tunnel_failover(cx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let stop = cx.stop;
    let conn_id = cx.conn_id;
    let dir = cx.dir.clone();
    let gw_log = cx.gw_log.clone();
    let lab = &mut *cx.lab;
    // Which of the customer's CHILD SAs carries the replies of each family:
    // both children of our device config have the same traffic selectors.
    // The cut hits the one it uses, so that both sides must switch.
    let mut customer_uses = Vec::new();
    for target in REMOTE_HOSTS {
        let before = cgw_child_out_packets(&dir)?;
        let mut c = VPC.cmd("ping");
        if target.contains(':') {
            c.arg("-6");
        }
        sh(c.args(["-q", "-c", "5", "-i", "0.2", "-W", "2", target]))?;
        let after = cgw_child_out_packets(&dir)?;
        let used: Vec<String> = after
            .iter()
            .filter(|(name, n)| {
                before
                    .iter()
                    .find(|(b, _)| b == name)
                    .is_none_or(|(_, b)| n > b)
            })
            .map(|(name, _)| name.clone())
            .collect();
        println!("  before the cut, cgw sends the replies to vpc → {target} through {used:?}");
        customer_uses.extend(used);
    }
    let cut_v6 = customer_uses.iter().any(|u| u == "s2s-v6-net");
    let (address, cut_family, other) = if cut_v6 {
        ("2001:db8::2/64", "v6", "v4")
    } else {
        ("192.0.2.2/24", "v4", "v6")
    };
    println!("  cutting {address} in cgw (the {cut_family} tunnel's peer address)");
    let bgp_downs_before = count_in_log(&gw_log, "up=false");
    CGW.exec(&["ip", "addr", "del", address, "dev", "wan0"])?;
    let cut = Instant::now();
    let result = failover_while_cut(lab, stop, conn_id, cut, cut_family, other);
    // The address comes back whatever happened, so that the next scenarios
    // (and a failure's diagnosis) see a whole lab.
    let mut restore = vec!["ip", "addr", "add", address, "dev", "wan0"];
    if cut_v6 {
        restore.push("nodad");
    }
    CGW.exec(&restore)?;
    result?;
    let bgp_downs = count_in_log(&gw_log, "up=false") - bgp_downs_before;
    if bgp_downs > 0 {
        bail!("{bgp_downs} BGP session(s) went down during the failover (see gw.log)");
    }
    println!("  no BGP session went down during the cut");
    println!("  cgw: {address} restored after {:.0?}", cut.elapsed());
    recovered(
        lab,
        stop,
        conn_id,
        "both tunnels up again after the address came back",
        Duration::from_secs(90),
        Duration::from_secs(15),
    )?;
    let prefix = route_of(cut_family);
    wait_for(
        lab,
        stop,
        &format!("{prefix} back on the {cut_family} tunnel's TUN"),
        Duration::from_secs(20),
        || Ok(route_dev(prefix)?.ends_with(cut_family).then_some(())),
    )?;
    println!("  {prefix} is back on {}", route_dev(prefix)?);
    Ok(())
}

fn daemon_restarted(cx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let stop = cx.stop;
    let conn_id = cx.conn_id;
    let dir = cx.dir.clone();
    let lab = &mut *cx.lab;
    // The pings lost are measured and printed (`bench restart` reports
    // them against the goals), not held to a number here: no timing
    // thresholds in tests.
    for policy in ["vpn_gateway", "customer_gateway"] {
        if policy != "vpn_gateway" {
            switch_policy(lab, stop, conn_id, policy)?;
        }
        for how in StopKind::ALL {
            // BIRD waits out its error delay before every new session, a
            // clean one too: what it carries from the steps before shows
            // why a session takes long to come back.
            for l in bird_bgp_detail(&dir) {
                println!("  cgw BIRD before the restart: {l}");
            }
            let costs = restart_once(lab, stop, conn_id, how, 300, BUILT_GATEWAY)?;
            for c in &costs {
                println!(
                    "  ping vpc → {} across a restart ({}, {policy}): {}",
                    c.target,
                    how.name(),
                    c.describe()
                );
            }
        }
    }
    switch_policy(lab, stop, conn_id, "vpn_gateway")?;
    Ok(())
}

fn every_proposal(cx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let stop = cx.stop;
    let conn_id = cx.conn_id;
    let dir = cx.dir.clone();
    let gw_log = cx.gw_log.clone();
    let lab = &mut *cx.lab;
    for (ike, esp, strongswan) in SUITES {
        let established = count_in_log(&gw_log, "IKE SA established");
        update_connection(
            conn_id,
            UpdateConnectionRequest {
                ikev2_ciphers: Some(vec![cipher(ike)?]),
                esp_ciphers: Some(vec![cipher(esp)?]),
                ..Default::default()
            },
        )?;
        let conf = write_swanctl(&dir, conn_id)?;
        if !conf.contains(strongswan) {
            bail!("the device config does not propose {strongswan}:\n{conf}");
        }
        load_swanctl(&dir)?;
        wait_new_ike_sas(
            lab,
            stop,
            &gw_log,
            established,
            &format!("both tunnels re-established with {strongswan}"),
            Duration::from_secs(90),
        )?;
        wait_connection(
            lab,
            stop,
            conn_id,
            &format!("the connection to be active with {strongswan}"),
            Duration::from_secs(120),
            all_up,
        )?;
        // New proposals make new tunnels, whose counters start at zero.
        let before = esp_packets(conn_id)?;
        wait_pings(lab, stop, Duration::from_secs(30))?;
        let after = esp_packets(conn_id)?;
        if after <= before {
            bail!("{strongswan}: our ESP counters did not move ({before} → {after})");
        }
        println!("  {strongswan}: active, pings both ways, our ESP packets {before} → {after}");
    }
    Ok(())
}

fn rekeys_during_traffic(cx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let stop = cx.stop;
    let conn_id = cx.conn_id;
    let dir = cx.dir.clone();
    let gw_log = cx.gw_log.clone();
    let lab = &mut *cx.lab;
    let installs = count_in_log(&gw_log, "CHILD SA installed");
    let pingers = start_pingers(100)?;
    std::thread::sleep(Duration::from_secs(2));
    let uri = charon::vici_uri(&dir);
    for (what, name) in [
        ("--child", "s2s-v4-net"),
        ("--child", "s2s-v6-net"),
        ("--ike", "s2s-v4"),
        ("--ike", "s2s-v6"),
    ] {
        CGW.out(&["swanctl", "--rekey", what, name, "--uri", &uri])?;
        println!("  cgw: swanctl --rekey {what} {name}");
        std::thread::sleep(Duration::from_secs(1));
    }
    for (target, p) in REMOTE_HOSTS.iter().zip(pingers) {
        let (summary, received) = ping_summary(p)?;
        println!("  ping vpc → {target} during the rekeys: {summary}");
        // Make-before-break on our side; strongSwan's libipsec may drop the
        // few packets in flight when it switches: allow 5 of 100.
        if received < 95 {
            bail!("ping vpc → {target} lost more than 5 of 100 packets during the rekeys");
        }
    }
    let rekeyed = count_in_log(&gw_log, "CHILD SA installed") - installs;
    if rekeyed < 2 {
        bail!("expected new CHILD SAs on both tunnels after the rekeys, saw {rekeyed}");
    }
    println!("  gw: {rekeyed} CHILD SAs installed during the rekeys");
    wait_connection(
        lab,
        stop,
        conn_id,
        "the connection to stay active after the rekeys",
        Duration::from_secs(60),
        all_up,
    )?;
    Ok(())
}

fn package_upgraded(cx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let stop = cx.stop;
    let conn_id = cx.conn_id;
    let lab = &mut *cx.lab;
    package_upgrade(lab, stop, conn_id)?;
    Ok(())
}

/// The API's cipher suites: its proposal (s2sctl syntax) and the strongSwan
/// keyword the device config must carry for it.
pub(super) const SUITES: [(&str, &str, &str); 5] = [
    (
        "aes256gcm-sha384-ecp384",
        "aes256gcm",
        "aes256gcm16-prfsha384-ecp384",
    ),
    (
        "aes128gcm-sha256-modp2048",
        "aes128gcm",
        "aes128gcm16-prfsha256-modp2048",
    ),
    (
        "aes256gcm-sha256-curve25519",
        "aes256gcm",
        "aes256gcm16-prfsha256-curve25519",
    ),
    (
        "aes256-sha256-ecp256",
        "aes256-sha256",
        "aes256-sha256-ecp256",
    ),
    (
        "chacha20poly1305-sha256-curve25519",
        "chacha20poly1305",
        "chacha20poly1305-prfsha256-curve25519",
    ),
];

/// ESP packets our engine processed on the connection's tunnels, both
/// directions (`s2s_esp_packets_total` in /metrics).
pub(super) fn esp_packets(conn_id: &str) -> anyhow::Result<u64> {
    let text = metrics()?;
    let prefix = format!("s2s_esp_packets_total{{tunnel=\"{conn_id}/");
    Ok(text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}
