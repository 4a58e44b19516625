//! The cases: each builds its pair of tunnel ends and measures them.

use crate::*;
use gateway_api::ops::CreateSecretRequest;

pub(crate) struct CaseOut {
    pub(crate) points: Vec<Point>,
    pub(crate) napi: Vec<String>,
    /// TCP through the tunnel (cases with our gateway on both sides).
    pub(crate) tcp: Option<Value>,
}

/// iperf3 runs per direction of the TCP case.
pub(crate) const TCP_RUNS: usize = 3;

/// The TCP case for a baseline: the same iperf3 flows through a peer's
/// tunnel, so our TCP numbers have a reference from the same run. A failure
/// here is reported and leaves the case's UDP points standing.
pub(crate) fn with_tcp_baseline(env: &mut Env, mut out: CaseOut) -> CaseOut {
    match tcp_case(env) {
        Ok(t) => out.tcp = Some(t),
        Err(e) => eprintln!("  TCP: {e:#}"),
    }
    out
}

/// TCP through the tunnel: iperf3 from src to dst and back, `TCP_RUNS`
/// runs of 3 s each way; the median, min and max of each.
pub(crate) fn tcp_case(env: &mut Env) -> anyhow::Result<Value> {
    env.spawn("iperf3-server", DST, "exec iperf3 -s")?;
    std::thread::sleep(Duration::from_millis(500));
    let mut dirs = serde_json::Map::new();
    for (name, reverse) in [("src_to_dst", false), ("dst_to_src", true)] {
        let mut runs = Vec::new();
        for _ in 0..TCP_RUNS {
            runs.push(labkit::iperf3(SRC, "203.0.113.10", reverse)?);
        }
        let mut mbps: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let mut retr: Vec<u64> = runs.iter().map(|r| r.1).collect();
        mbps.sort_by(f64::total_cmp);
        retr.sort_unstable();
        let m = json!({
            "mbit_s_median": mbps[TCP_RUNS / 2].round(),
            "mbit_s_min": mbps[0].round(),
            "mbit_s_max": mbps[TCP_RUNS - 1].round(),
            "retransmits_median": retr[TCP_RUNS / 2],
            "retransmits_min": retr[0],
            "retransmits_max": retr[TCP_RUNS - 1],
            "runs": runs.iter().map(|r| json!({"mbit_s": r.0.round(), "retransmits": r.1})).collect::<Vec<_>>(),
        });
        println!(
            "  TCP {name}: {} Mbit/s median ({}..{}), {} retransmits median ({}..{})",
            m["mbit_s_median"],
            m["mbit_s_min"],
            m["mbit_s_max"],
            m["retransmits_median"],
            m["retransmits_min"],
            m["retransmits_max"]
        );
        dirs.insert(name.into(), m);
    }
    Ok(Value::Object(dirs))
}

pub(crate) fn measure_all(
    env: &mut Env,
    case: &str,
    check: &Check<'_>,
    profile: Option<u32>,
) -> anyhow::Result<CaseOut> {
    let mut points = Vec::new();
    let sizes: Vec<usize> = std::env::var("S2S_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| SIZES.to_vec());
    for size in sizes {
        let mut p = measure(
            env,
            case,
            size,
            check,
            if size == 64 { profile } else { None },
            0.0,
            DURATION,
        )?;
        // Saturation can cost more than it carries (receive livelock on
        // a shared core): also find the highest paced rate with at most
        // LOSS_TARGET % loss, by bisection below the saturation rate.
        // The lossless rate rarely exceeds what saturation delivered by much:
        // bisect in [0, 1.25 x received at saturation] (at most the offer).
        let offered = p.json["offered_pps"].as_f64().unwrap_or(0.0);
        let (mut lo, mut hi) = (0.0f64, offered.min(1.25 * p.rx_pps));
        let mut r = p.rx_pps;
        let mut best = 0.0f64;
        for _ in 0..SEARCH_STEPS {
            if r < 1000.0 || hi - lo < 0.02 * hi {
                break;
            }
            let t = measure(env, case, size, check, None, r, SEARCH_DURATION)?;
            if t.ok && t.loss <= LOSS_TARGET {
                best = best.max(t.rx_pps);
                lo = r;
            } else {
                hi = r;
            }
            r = (lo + hi) / 2.0;
        }
        p.json["pps_at_le_1pct_loss"] = json!(best.round());
        p.json["gbit_s_at_le_1pct_loss"] =
            json!((best * size as f64 * 8.0 / 1e9 * 1000.0).round() / 1000.0);
        points.push(p);
    }
    Ok(CaseOut {
        points,
        napi: env.napi.clone(),
        tcp: None,
    })
}

/// Our gateway on A and B, a VPN gateway of `gateway_type` on each, the
/// tunnel up and routes exchanged; the environment and A's daemon pid.
pub(crate) fn ours_pair(
    stop: &AtomicBool,
    case: &str,
    no_xdp: bool,
    gateway_type: &str,
) -> anyhow::Result<(Env, u32)> {
    let mut env = Env::new(case, &[])?;
    let pid = start_gateway(
        &mut env,
        stop,
        A,
        ASN_A,
        "192.0.2.1",
        "198.51.100.0/24",
        no_xdp,
    )?;
    start_gateway(
        &mut env,
        stop,
        B,
        ASN_B,
        "192.0.2.2",
        "203.0.113.0/24",
        no_xdp,
    )?;
    let ca = provision(
        &mut env,
        stop,
        A,
        gateway_type,
        "192.0.2.2",
        ASN_B,
        "203.0.113.0/24",
        "198.51.100.0/24",
        Some("169.254.10.1/30,169.254.10.2/30"),
    )?;
    let cb = provision(
        &mut env,
        stop,
        B,
        gateway_type,
        "192.0.2.1",
        ASN_A,
        "198.51.100.0/24",
        "203.0.113.0/24",
        Some("169.254.10.2/30,169.254.10.1/30"),
    )?;
    // B uses A's server-generated PSK: a secret of its own, then change-psk.
    // Never printed.
    let sid = {
        let c = connection(A, &ca)?;
        let psk = api(A, move |api| api.psk(&c.secret_id, c.secret_revision))?;
        let secret = api(B, |c| {
            c.create_secret(&CreateSecretRequest {
                name: Some("bench-psk".into()),
                ..Default::default()
            })
        })?;
        let sid = secret.id;
        let id = sid.clone();
        api(B, move |c| c.add_secret_version(&id, &psk))?;
        sid
    };
    {
        let cb = cb.clone();
        api(B, move |c| c.change_psk(&cb, &sid, None))?;
    }
    initiate(A, &ca)?;
    wait_active(&mut env, stop, A, &ca)?;
    wait_active(&mut env, stop, B, &cb)?;
    wait_route(&mut env, stop, A, "203.0.113.0/24")?;
    wait_route(&mut env, stop, B, "198.51.100.0/24")?;
    env.ping_through(stop)?;
    Ok((env, pid))
}

pub(crate) fn case_ours_pair(
    stop: &AtomicBool,
    case: &str,
    no_xdp: bool,
) -> anyhow::Result<CaseOut> {
    // A type without a bandwidth: the engine's own throughput.
    let (mut env, pid) = ours_pair(stop, case, no_xdp, UNLIMITED_TYPE)?;
    let mut out = measure_all(
        &mut env,
        case,
        &Check::Metric(A, "s2s_esp_packets_total"),
        if no_xdp { None } else { Some(pid) },
    )?;
    out.tcp = Some(tcp_case(&mut env)?);
    Ok(out)
}

pub(crate) fn case_ours_vs_strongswan(stop: &AtomicBool, case: &str) -> anyhow::Result<CaseOut> {
    let mut env = Env::new(case, &[B])?;
    start_gateway(
        &mut env,
        stop,
        A,
        ASN_A,
        "192.0.2.1",
        "198.51.100.0/24",
        false,
    )?;
    let ca = provision(
        &mut env,
        stop,
        A,
        UNLIMITED_TYPE,
        "192.0.2.2",
        ASN_B,
        "203.0.113.0/24",
        "198.51.100.0/24",
        None,
    )?;
    let swanctl = device_config(A, &ca, "strongswan")?;
    let bird = device_config(A, &ca, "bird")?;
    let dir = start_charon(&mut env, stop, B, &swanctl)?;
    env.wait_for(stop, "ipsec0 in b", Duration::from_secs(15), || {
        Ok(B.out(&["ip", "link", "show", "ipsec0"]).ok().map(|_| ()))
    })?;
    let conn = connection(A, &ca)?;
    if let Some(s) = &conn.bgp_session_ipv4 {
        B.exec(&["ip", "addr", "add", &s.peer_private_ip, "dev", "ipsec0"])?;
    }
    B.exec(&["ip", "link", "set", "ipsec0", "up"])?;
    let d = env.dir.display().to_string();
    fs::write(env.dir.join("bird.conf"), bird)?;
    env.spawn(
        "bird",
        B,
        &format!("exec bird -f -c {d}/bird.conf -s {d}/bird.ctl -P {d}/bird.pid"),
    )?;
    initiate(A, &ca)?;
    wait_active(&mut env, stop, A, &ca)?;
    wait_route(&mut env, stop, A, "203.0.113.0/24")?;
    env.ping_through(stop)?;
    let _ = dir;
    let out = measure_all(
        &mut env,
        case,
        &Check::Metric(A, "s2s_esp_packets_total"),
        None,
    )?;
    Ok(with_tcp_baseline(&mut env, out))
}

pub(crate) fn case_strongswan_pair(stop: &AtomicBool, case: &str) -> anyhow::Result<CaseOut> {
    let mut env = Env::new(case, &[A, B])?;
    let psk = "bench-strongswan-pair-psk-0123456789";
    let conf_b = swan_pair_conf(
        "192.0.2.2",
        "192.0.2.1",
        "203.0.113.0/24",
        "198.51.100.0/24",
        psk,
        false,
    );
    let conf_a = swan_pair_conf(
        "192.0.2.1",
        "192.0.2.2",
        "198.51.100.0/24",
        "203.0.113.0/24",
        psk,
        true,
    );
    start_charon(&mut env, stop, B, &conf_b)?;
    let dir_a = start_charon(&mut env, stop, A, &conf_a)?;
    for ns in [A, B] {
        env.wait_for(stop, "ipsec0", Duration::from_secs(15), || {
            Ok(ns.out(&["ip", "link", "show", "ipsec0"]).ok().map(|_| ()))
        })?;
        ns.exec(&["ip", "link", "set", "ipsec0", "up"])?;
    }
    env.wait_for(stop, "the CHILD SA", Duration::from_secs(30), || {
        let out = A.out(&["swanctl", "--list-sas", "--uri", &charon::vici_uri(&dir_a)])?;
        Ok(out.contains("INSTALLED").then_some(()))
    })?;
    env.ping_through(stop)?;
    let out = measure_all(&mut env, case, &Check::Charon(A, &dir_a), None)?;
    Ok(with_tcp_baseline(&mut env, out))
}

pub(crate) fn boringtun() -> Option<PathBuf> {
    let p = root().join("target/tools/bin/boringtun-cli");
    p.exists().then_some(p)
}

/// The userspace WireGuard implementations paired up as baselines.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wg {
    /// Cloudflare's boringtun-cli (Rust), from crates.io.
    Boringtun,
    /// The Go reference implementation, from Debian's `wireguard-go`.
    Go,
}

/// A WireGuard pair of `which` on A and B, set up as both projects'
/// READMEs describe: the daemon creates the TUN device and its UAPI socket,
/// `wg set` gives it keys, port and peer, `ip` the address, MTU 1420 and
/// the route to the other site.
pub(crate) fn case_wireguard(stop: &AtomicBool, case: &str, which: Wg) -> anyhow::Result<CaseOut> {
    let program = match which {
        Wg::Boringtun => match boringtun() {
            Some(bt) => bt,
            None => {
                let why = fs::read_to_string(root().join("target/tools/boringtun-failed.txt"))
                    .unwrap_or_else(|_| {
                        "not installed (cargo xtask bench tunnel installs it)".into()
                    });
                bail!("boringtun-cli unavailable: {why}");
            }
        },
        Wg::Go => {
            let p = PathBuf::from("/usr/bin/wireguard-go");
            if !p.exists() {
                bail!("wireguard-go unavailable: not installed (cargo xtask setup installs Debian's wireguard-go)");
            }
            p
        }
    };
    let mut env = Env::new(case, &[A, B])?;
    let mut keys = Vec::new();
    for side in ["a", "b"] {
        let key = output(Command::new("wg").arg("genkey"))?;
        let key = key.trim().to_owned();
        let path = env.dir.join(format!("{side}.key"));
        fs::write(&path, &key)?;
        let mut c = Command::new("wg")
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        use std::io::Write as _;
        c.stdin.take().context("stdin")?.write_all(key.as_bytes())?;
        let out = c.wait_with_output()?;
        keys.push((path, String::from_utf8_lossy(&out.stdout).trim().to_owned()));
    }
    let sides = [
        (
            A,
            "s2sbwga",
            "169.254.20.1/30",
            "192.0.2.2",
            "203.0.113.0/24",
            &keys[0].0,
            &keys[1].1,
        ),
        (
            B,
            "s2sbwgb",
            "169.254.20.2/30",
            "192.0.2.1",
            "198.51.100.0/24",
            &keys[1].0,
            &keys[0].1,
        ),
    ];
    for (ns, dev, addr, peer, remote_net, key, peer_pub) in sides {
        let _ = fs::remove_file(format!("/run/wireguard/{dev}.sock"));
        let (name, script) = match which {
            Wg::Boringtun => (
                "boringtun",
                format!(
                    "exec {} --foreground --disable-drop-privileges --log {}/{dev}.out {dev}",
                    program.display(),
                    env.dir.display()
                ),
            ),
            // -f: stay in the foreground (logs to stderr, into the case's log).
            Wg::Go => (
                "wireguard-go",
                format!("exec {} -f {dev}", program.display()),
            ),
        };
        env.spawn(&format!("{name}-{}", ns.short()), ns, &script)?;
        let sock = PathBuf::from(format!("/run/wireguard/{dev}.sock"));
        env.wait_for(
            stop,
            "the WireGuard UAPI socket",
            Duration::from_secs(10),
            || Ok(sock.exists().then_some(())),
        )?;
        ns.exec(&[
            "wg",
            "set",
            dev,
            "listen-port",
            "51820",
            "private-key",
            &key.display().to_string(),
            "peer",
            peer_pub,
            "endpoint",
            &format!("{peer}:51820"),
            "allowed-ips",
            &format!("{remote_net},169.254.20.0/30"),
        ])?;
        ns.exec(&["ip", "addr", "add", addr, "dev", dev])?;
        ns.exec(&["ip", "link", "set", dev, "mtu", "1420", "up"])?;
        ns.exec(&["ip", "route", "add", remote_net, "dev", dev])?;
    }
    env.ping_through(stop)?;
    let out = measure_all(&mut env, case, &Check::WireGuard(A, "s2sbwga"), None)?;
    Ok(with_tcp_baseline(&mut env, out))
}

pub(crate) fn case_xdpfwd(stop: &AtomicBool, case: &str) -> anyhow::Result<CaseOut> {
    let mut env = Env::new(case, &[A, B])?;
    // The forwarders rewrite MACs themselves; this only proves the chain.
    B.exec(&["ping", "-c", "1", "-W", "2", "203.0.113.10"])?;
    env.check_daemons()?;
    let _ = stop;
    // No TCP: the forwarder carries one direction only.
    measure_all(&mut env, case, &Check::XdpFwd, None)
}
