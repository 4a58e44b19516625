//! One measurement: offered load, what the sink received, the tunnel's own
//! counters as the check, and the loss-bounded rate search.

use crate::*;

/// What proves that a point's packets went through the tunnel: a counter
/// read before and after, which must grow by at least what the sink got.
pub(crate) enum Check<'a> {
    Metric(Ns, &'static str),
    Charon(Ns, &'a Path),
    WireGuard(Ns, &'static str),
    XdpFwd,
}

impl Check<'_> {
    pub(crate) fn read(&self) -> anyhow::Result<u64> {
        match self {
            Check::Metric(ns, name) => metric_total(*ns, name),
            Check::Charon(ns, dir) => charon_packets(*ns, dir),
            Check::WireGuard(ns, dev) => {
                let out = ns.out(&["wg", "show", dev, "transfer"])?;
                Ok(out
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|n| n.parse::<u64>().ok())
                    .sum())
            }
            Check::XdpFwd => Ok(0),
        }
    }
    pub(crate) fn describe(&self) -> String {
        match self {
            Check::Metric(ns, name) => format!("{name} on {}", ns.short()),
            Check::Charon(ns, _) => format!("CHILD SA packets (in+out) on {}", ns.short()),
            Check::WireGuard(ns, dev) => format!("wg {dev} transfer bytes on {}", ns.short()),
            Check::XdpFwd => "frames forwarded by xdpfwd".into(),
        }
    }
}

pub(crate) struct Point {
    pub(crate) json: Value,
    pub(crate) rx_pps: f64,
    pub(crate) loss: f64,
    pub(crate) ok: bool,
}

pub(crate) fn run_json(cmd: &mut Command, what: &str) -> anyhow::Result<Value> {
    let out = cmd.stdin(Stdio::null()).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| {
            anyhow!(
                "{what}: no JSON ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
    Ok(serde_json::from_str(line)?)
}

pub(crate) fn measure(
    env: &mut Env,
    case: &str,
    size: usize,
    check: &Check<'_>,
    profile: Option<u32>,
    rate: f64,
    duration: f64,
) -> anyhow::Result<Point> {
    let dst_mac = mac(A, "alan0")?;
    let fwd_mac = mac(B, "bwan0")?;
    let sink_bin = bin("trafficgen")?;
    env.pin_all();
    let sink = pinned(DST, "sink", &sink_bin)
        .args([
            "sink",
            "--addr",
            SINK,
            "--duration",
            &format!("{}", duration + 6.0),
            "--idle",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // The no-crypto baseline runs where our gateways run: an AF_XDP
    // forwarder on A (LAN → WAN) and one on B (WAN → LAN), so that the
    // path is the same as the tunnel's, minus the crypto.
    let mut fwds = Vec::new();
    if matches!(check, Check::XdpFwd) {
        let dst_mac_b = mac(DST, "dst0")?;
        for (ns, role, input, output, next_mac) in [
            (A, "a", "alan0", "awan0", &fwd_mac),
            (B, "b", "bwan0", "blan0", &dst_mac_b),
        ] {
            let c = pinned(ns, role, &bin("xdpfwd")?)
                .args([
                    "--in",
                    input,
                    "--out",
                    output,
                    "--dst-mac",
                    next_mac,
                    "--duration",
                    &format!("{}", duration + 4.0),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            fwds.push(c);
        }
    }
    std::thread::sleep(Duration::from_millis(800));
    env.check_daemons()?;
    let before = check.read()?;
    // The worker (perf -p on A's daemon) and, when the system under test
    // is pinned to one CPU, that whole CPU (every hop's NAPI, both
    // gateways, the sink).
    let mut perf = Vec::new();
    if let Some(pid) = profile {
        let secs = format!("{}", duration - 1.0);
        let mut runs = vec![(
            "perf.data",
            vec!["-g".to_owned(), "-p".to_owned(), pid.to_string()],
        )];
        if let Some(cpu) = pin_cpu("a") {
            runs.push((
                "perf-cpu.data",
                vec!["-a".to_owned(), "-C".to_owned(), cpu.to_string()],
            ));
        }
        for (file, args) in runs {
            perf.push(
                Command::new("perf")
                    .arg("record")
                    .args(&args)
                    .arg("-o")
                    .arg(env.dir.join(file))
                    .args(["--", "sleep", &secs])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?,
            );
        }
    }
    let sent = run_json(
        pinned(SRC, "sender", &sink_bin).args([
            "send",
            "--iface",
            "src0",
            "--dst-mac",
            &dst_mac,
            "--src",
            "198.51.100.10",
            "--dst",
            "203.0.113.10",
            "--size",
            &size.to_string(),
            "--rate",
            &format!("{rate:.0}"),
            "--duration",
            &duration.to_string(),
            "--flows",
            &FLOWS.to_string(),
        ]),
        "trafficgen send",
    )?;
    let got = {
        let out = sink.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .ok_or_else(|| anyhow!("trafficgen sink: no JSON ({})", out.status))?;
        serde_json::from_str::<Value>(line)?
    };
    for mut p in perf {
        let _ = p.wait();
    }
    let (after, fwd_json) = if fwds.is_empty() {
        (check.read()?, Value::Null)
    } else {
        // Both forwarders must have carried every received frame.
        let mut least = u64::MAX;
        let mut reports = Vec::new();
        for c in fwds {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let out = c.wait_with_output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let v: Value = text
                .lines()
                .rev()
                .find(|l| l.starts_with('{'))
                .and_then(|l| serde_json::from_str(l).ok())
                .unwrap_or(Value::Null);
            least = least.min(v["forwarded"].as_u64().unwrap_or(0));
            reports.push(v);
        }
        (least, Value::Array(reports))
    };
    if let Check::Metric(_, _) = check {
        // Kept for diagnosis: every counter of both gateways after the point.
        for ns in [A, B] {
            if let Ok(t) = metrics_text(ns) {
                let _ = fs::write(
                    env.dir.join(format!("metrics-{size}-{}.txt", ns.short())),
                    t,
                );
            }
        }
    }
    let sent_n = sent["sent"].as_u64().unwrap_or(0);
    let offered = sent["pps"].as_f64().unwrap_or(0.0);
    let received = got["received"].as_u64().unwrap_or(0);
    let rx_pps = got["pps"].as_f64().unwrap_or(0.0);
    let delta = after.saturating_sub(before);
    // WireGuard counts bytes: each received frame carried at least its
    // inner IP packet.
    let needed = match check {
        Check::WireGuard(_, _) => received * (size as u64 - 14),
        _ => received,
    };
    let ok = received > 0 && delta >= needed;
    let loss = if sent_n > 0 {
        100.0 * sent_n.saturating_sub(received) as f64 / sent_n as f64
    } else {
        0.0
    };
    let gbit = rx_pps * size as f64 * 8.0 / 1e9;
    println!(
        "  {case:<22} {size:>5} B {:>8}  offered {:>9.0} pps  received {:>9.0} pps  {:>6.3} Gbit/s  loss {:>5.1}%  check {}",
        if rate > 0.0 { "paced" } else { "max" },
        offered,
        rx_pps,
        gbit,
        loss,
        if ok { "ok" } else { "FAILED" }
    );
    let mut notes = Vec::new();
    if !ok {
        notes.push(format!(
            "tunnel counter ({}) moved by {delta}, sink received {received}",
            check.describe()
        ));
    }
    if got["reordered"].as_u64().unwrap_or(0) > 0 || got["duplicates"].as_u64().unwrap_or(0) > 0 {
        notes.push(format!(
            "reordered {}, duplicates {}",
            got["reordered"], got["duplicates"]
        ));
    }
    Ok(Point {
        json: json!({
            "case": case,
            "frame_bytes": size,
            "offered_pps": offered.round(),
            "sent": sent_n,
            "received": received,
            "seq_lost": got["lost"],
            "loss_pct": (loss * 100.0).round() / 100.0,
            "rx_pps": rx_pps.round(),
            "gbit_s": (gbit * 1000.0).round() / 1000.0,
            "tunnel_check": if ok { "ok" } else { "FAILED" },
            "tunnel_counter": check.describe(),
            "tunnel_counter_delta": delta,
            "xdpfwd": fwd_json,
            "notes": notes.join("; "),
        }),
        rx_pps,
        loss,
        ok,
    })
}
