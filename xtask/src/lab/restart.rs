//! Our daemon stopped and started again under traffic: one restart and
//! what it cost the pingers (scenarios 7 and 10), `bench restart`, and the
//! package upgrade.

use super::*;

/// How the lab stops our daemon before starting it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopKind {
    /// SIGTERM: what `systemctl restart` and upgrades do.
    Term,
    /// SIGKILL: a crash.
    Kill,
    /// SIGKILL and the SA state file removed before the start.
    KillStateLost,
}

impl StopKind {
    pub(super) const ALL: [StopKind; 3] = [StopKind::Term, StopKind::Kill, StopKind::KillStateLost];

    pub(super) fn signal(self) -> &'static str {
        match self {
            StopKind::Term => "-TERM",
            StopKind::Kill | StopKind::KillStateLost => "-KILL",
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            StopKind::Term => "SIGTERM",
            StopKind::Kill => "kill -9",
            StopKind::KillStateLost => "kill -9, state file removed",
        }
    }
}

/// IKE SAs the gateway's log reports up so far: negotiated or resumed.
pub(super) fn ike_sas_up(gw_log: &Path) -> usize {
    count_in_log(gw_log, "IKE SA established") + count_in_log(gw_log, "IKE SA resumed")
}

/// What one restart of our daemon cost one pinger (10 pings a second).
#[derive(Debug, Clone)]
pub(super) struct RestartCost {
    pub target: &'static str,
    pub sent: u32,
    pub lost: u32,
    /// The longest run of unanswered pings, in seconds: from the stop to
    /// the first answered ping after it.
    pub outage_s: f64,
}

impl RestartCost {
    pub(super) fn describe(&self) -> String {
        format!(
            "{} of {} lost, longest gap {:.1} s",
            self.lost, self.sent, self.outage_s
        )
    }
}

/// Stops our daemon (`how`) while the VPC pings the remote site (`count`
/// pings per family, 10 a second), starts it again with the same state
/// directory, waits until the connection is fully back, and returns what
/// each pinger lost.
pub(super) fn restart_once(
    lab: &mut Lab,
    stop: &AtomicBool,
    conn_id: &str,
    how: StopKind,
    count: u32,
    bin: &str,
) -> anyhow::Result<Vec<RestartCost>> {
    let gw_log = lab.dir.join("s2s-gateway.log");
    let pingers = start_pingers(count)?;
    std::thread::sleep(Duration::from_secs(2));
    lab.stop_daemon("s2s-gateway", how.signal())?;
    if how == StopKind::KillStateLost {
        let file = workspace_root().join("target/lab/gw-state/sa-state.sealed");
        fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
    }
    // Stopped for a restart, it left its XDP programs attached (pinned
    // links) for the next start to replace in place; killed, it could not.
    if how == StopKind::Term {
        for dev in ["wan0", "lan0"] {
            let link = GW.out(&["ip", "-d", "link", "show", dev])?;
            if !link.contains("prog/xdp") {
                bail!("SIGTERM: no XDP program on gw's {dev} while the daemon is down:\n{link}");
            }
        }
    }
    let replaced = count_in_log(&gw_log, "XDP program replaced in place");
    // However it stopped, its TUNs and their routes stay: while it is
    // down the VPC's packets to the customer are dropped into them, never
    // sent elsewhere in clear.
    for target in REMOTE_HOSTS {
        let via = GW.out(&["ip", "route", "get", target])?;
        if !via.contains(" dev s2s") {
            bail!("{how:?}: while the daemon is down, gw routes {target} elsewhere than its TUN: {via}");
        }
    }
    // The store keeps the last statuses written: only IKE SAs up again
    // (resumed from the state file, or negotiated) prove the restarted
    // daemon has the tunnels back.
    let before = ike_sas_up(&gw_log);
    let kernel_stale = count_in_log(&gw_log, "routes found on the kept TUN kept (stale)");
    start_gateway(lab, stop, bin)?;
    if how == StopKind::Term {
        let now = count_in_log(&gw_log, "XDP program replaced in place");
        if now < replaced + 2 {
            bail!("SIGTERM: the restarted daemon did not replace both XDP programs in place ({} of 2)", now - replaced);
        }
    }
    wait_for(
        lab,
        stop,
        "the restarted daemon to have both IKE SAs up",
        Duration::from_secs(60),
        || Ok((ike_sas_up(&gw_log) >= before + 2).then_some(())),
    )?;
    // Without the state file, the routes the kept TUNs still have are
    // what keeps the VPC's traffic on the tunnels until BGP is back.
    if how == StopKind::KillStateLost
        && count_in_log(&gw_log, "routes found on the kept TUN kept (stale)") <= kernel_stale
    {
        bail!("state file removed: the restarted daemon did not keep the kept TUNs' routes as stale routes");
    }
    recovered(
        lab,
        stop,
        conn_id,
        "the connection to be active again from the store",
        Duration::from_secs(150),
        Duration::from_secs(15),
    )?;
    let mut costs = Vec::new();
    for (target, p) in REMOTE_HOSTS.iter().zip(pingers) {
        let replies = ping_replies(p)?;
        costs.push(RestartCost {
            target,
            sent: count,
            lost: count.saturating_sub(replies.len() as u32),
            outage_s: f64::from(longest_gap(&replies, count)) / 10.0,
        });
    }
    Ok(costs)
}

/// Scenario 10: moves the lab's daemon onto the Debian package that
/// `cargo xtask package` built (installed with apt-get), then upgrades the
/// package in place (`apt-get install --reinstall`) and restarts the
/// daemon from the installed files the way the package's postinst does
/// (`systemctl try-restart`: SIGTERM, then start; this machine's PID 1 is
/// not systemd, so the lab does both steps). Both moves must resume the
/// SAs. The package is purged at the end, and the lab's daemon is the
/// release build again.
pub(super) fn package_upgrade(
    lab: &mut Lab,
    stop: &AtomicBool,
    conn_id: &str,
) -> anyhow::Result<()> {
    let Some(deb) = crate::package::built() else {
        println!("  skipped: no package built for this version (cargo xtask package builds it; cargo xtask test does before the lab)");
        return Ok(());
    };
    if crate::package::installed() {
        println!("  skipped: s2s-gateway is installed on this machine already (not replacing it)");
        return Ok(());
    }
    let gw_log = lab.dir.join("s2s-gateway.log");
    let installed = crate::package::Installed::install(&deb)?;
    println!("  apt-get install {}: done", deb.display());
    for (what, upgrade) in [
        ("onto the installed package", false),
        ("across a package upgrade", true),
    ] {
        if upgrade {
            installed.reinstall()?;
            println!("  apt-get install --reinstall: done (the running daemon's files replaced)");
        }
        let resumed = count_in_log(&gw_log, "resumed from the SA state");
        let costs = restart_once(lab, stop, conn_id, StopKind::Term, 300, INSTALLED_GATEWAY)?;
        for c in &costs {
            println!("  ping vpc → {} {what}: {}", c.target, c.describe());
        }
        let now = count_in_log(&gw_log, "resumed from the SA state");
        if now < resumed + 2 {
            bail!(
                "{what}: the daemon from the package did not resume both tunnels' SAs ({} of 2)",
                now - resumed
            );
        }
        println!("  {what}: both tunnels resumed from the SA state (no handshake)");
    }
    // Back to the release build before the package goes.
    let costs = restart_once(lab, stop, conn_id, StopKind::Term, 100, BUILT_GATEWAY)?;
    for c in &costs {
        println!(
            "  ping vpc → {} back onto the release build: {}",
            c.target,
            c.describe()
        );
    }
    drop(installed);
    println!("  package purged");
    Ok(())
}

/// Pings per family in one restart measurement: 10 a second for 40 s.
pub(super) const BENCH_RESTART_PINGS: u32 = 400;

/// `cargo xtask bench restart`: each case (initiation policy × how the
/// daemon stops) `runs` times, the median and range of pings lost and of
/// the longest gap per family, in `target/bench/restart.json`.
pub(super) fn bench_restarts(
    lab: &mut Lab,
    stop: &AtomicBool,
    conn_id: &str,
    runs: u32,
) -> anyhow::Result<()> {
    step(&format!(
        "bench restart: {runs} runs per case, {BENCH_RESTART_PINGS} pings per family each (10/s)"
    ));
    let mut results = Vec::new();
    for policy in ["vpn_gateway", "customer_gateway"] {
        // The lab's connection starts with policy vpn_gateway.
        if policy != "vpn_gateway" {
            switch_policy(lab, stop, conn_id, policy)?;
        }
        for how in StopKind::ALL {
            let mut per_family: Vec<(&'static str, Vec<u32>, Vec<f64>)> = REMOTE_HOSTS
                .iter()
                .map(|t| (*t, Vec::new(), Vec::new()))
                .collect();
            for run in 1..=runs {
                let costs =
                    restart_once(lab, stop, conn_id, how, BENCH_RESTART_PINGS, BUILT_GATEWAY)?;
                for c in costs {
                    println!(
                        "  {policy}, {}, run {run}/{runs}, {}: {}",
                        how.name(),
                        c.target,
                        c.describe()
                    );
                    if let Some(f) = per_family.iter_mut().find(|f| f.0 == c.target) {
                        f.1.push(c.lost);
                        f.2.push(c.outage_s);
                    }
                }
            }
            for (target, lost, gaps) in per_family {
                let lost_f: Vec<f64> = lost.iter().map(|&l| f64::from(l)).collect();
                let (lost_med, lost_min, lost_max) = median_range(&lost_f);
                let (gap_med, gap_min, gap_max) = median_range(&gaps);
                results.push(serde_json::json!({
                    "initiation_policy": policy,
                    "stop": how.name(),
                    "family": if target.contains(':') { "IPv6" } else { "IPv4" },
                    "runs": runs,
                    "pings_per_run": BENCH_RESTART_PINGS,
                    "lost_median": lost_med,
                    "lost_min": lost_min,
                    "lost_max": lost_max,
                    "gap_s_median": gap_med,
                    "gap_s_min": gap_min,
                    "gap_s_max": gap_max,
                    "lost_per_run": lost,
                }));
            }
        }
    }
    let out = workspace_root().join("target/bench/restart.json");
    fs::create_dir_all(out.parent().context("bench dir")?)?;
    fs::write(
        &out,
        serde_json::to_string_pretty(&serde_json::json!({
            "what": "pings lost by the VPC host (10/s per family) while our daemon is stopped and started again with the same state directory, tunnels to a strongSwan customer with our generated device configs and BIRD",
            "goals": {"SIGTERM": "at most 3 lost", "kill -9": "at most 10 lost", "kill -9, state file removed": "at most 20 lost"},
            "results": results,
        }))?,
    )?;
    println!("bench restart: wrote {}", out.display());
    Ok(())
}

/// Median, minimum and maximum of a non-empty sample.
pub(super) fn median_range(xs: &[f64]) -> (f64, f64, f64) {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    (median, v[0], v[v.len() - 1])
}

/// Changes the connection's initiation policy and gives the customer
/// gateway the device config that goes with it (charon and BIRD stopped,
/// the new swanctl.conf written, both started again), then waits until
/// the connection is back.
pub(super) fn switch_policy(
    lab: &mut Lab,
    stop: &AtomicBool,
    conn_id: &str,
    policy: &str,
) -> anyhow::Result<()> {
    lab.stop_daemon("bird", "-TERM")?;
    lab.stop_daemon("charon", "-TERM")?;
    update_connection(
        conn_id,
        UpdateConnectionRequest {
            initiation_policy: Some(policy.to_owned()),
            ..Default::default()
        },
    )?;
    // charon starts with nothing to initiate: a connection it starts at
    // once (start_action = start) would find ipsec0 without the
    // interconnection addresses and fail to install its CHILD SA's route.
    let dir = lab.dir.clone();
    fs::write(dir.join("swanctl.conf"), "connections {\n}\nsecrets {\n}\n")?;
    start_charon(lab, stop)?;
    interco_on_ipsec0(lab, stop, conn_id)?;
    write_swanctl(&dir, conn_id)?;
    load_swanctl(&dir)?;
    start_bird(lab)?;
    recovered(
        lab,
        stop,
        conn_id,
        &format!("the connection to be active with initiation policy {policy}"),
        Duration::from_secs(120),
        Duration::from_secs(15),
    )?;
    println!("  connection: initiation policy {policy}, device config reloaded, active");
    Ok(())
}

/// The longest run of unanswered sequence numbers among `1..=count`,
/// given the answered ones.
pub(super) fn longest_gap(answered: &[u32], count: u32) -> u32 {
    let mut seqs: Vec<u32> = answered.iter().copied().filter(|&s| s <= count).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let mut longest = 0;
    let mut prev = 0;
    for s in seqs.into_iter().chain(std::iter::once(count + 1)) {
        longest = longest.max(s.saturating_sub(prev + 1));
        prev = s;
    }
    longest
}

/// One `ping` per remote host from the VPC host, 10 a second, `count`
/// each, running in the background.
pub(super) fn start_pingers(count: u32) -> anyhow::Result<Vec<std::process::Child>> {
    let count = count.to_string();
    let pingers = REMOTE_HOSTS
        .iter()
        .map(|target| {
            let mut c = VPC.cmd("ping");
            if target.contains(':') {
                c.arg("-6");
            }
            c.args(["-c", &count, "-i", "0.1", "-W", "1", target])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    Ok(pingers)
}

/// Waits for a pinger of `start_pingers`: its summary line and how many
/// replies it received.
pub(super) fn ping_summary(p: std::process::Child) -> anyhow::Result<(String, u32)> {
    let out = p.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or("no summary")
        .to_owned();
    let received: u32 = summary
        .split(", ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Ok((summary, received))
}

/// Waits for a pinger of `start_pingers`: the sequence numbers answered.
pub(super) fn ping_replies(p: std::process::Child) -> anyhow::Result<Vec<u32>> {
    let out = p.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter(|l| l.contains(" bytes from "))
        .filter_map(|l| {
            let rest = l.split_once("icmp_seq=")?.1;
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect())
}
