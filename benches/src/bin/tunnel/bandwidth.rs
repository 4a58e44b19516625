//! `cargo xtask bench bandwidth`: a gateway type's bandwidth, as customers
//! get it. Our gateway on A and B (fast path) with VPN gateways of type
//! VGW-S (100 Mbit/s) then VGW-M (1 Gbit/s); through each, iperf3 TCP from
//! src to dst and back (`TCP_RUNS` runs of 3 s each way), and iperf3 UDP
//! offered at 1.5 times the rate each way. Writes
//! `target/bench/bandwidth.json`: per type the configured rate, the TCP
//! goodput (median, min, max) and the UDP rate received, each as a ratio
//! of the configured rate. Goals: TCP within 0.85–1.00 of the rate, UDP
//! never above 1.02.

use crate::*;

/// Gateway types of `gateway_config`, and their bandwidth (bits/s).
const TYPES: [(&str, f64); 2] = [("VGW-S", 100e6), ("VGW-M", 1e9)];

/// iperf3 UDP through the tunnel for 3 s at `offered` bits/s of 1400-byte
/// datagrams; the rate the receiver got (bits/s) and the loss (%).
fn iperf3_udp(reverse: bool, offered: f64) -> anyhow::Result<(f64, f64)> {
    let rate = format!("{}", offered.round() as u64);
    let mut args = vec!["-u", "-b", &rate, "-l", "1400"];
    if reverse {
        args.push("-R");
    }
    let v = labkit::iperf3_json(SRC, "203.0.113.10", &args)?;
    // The receiver's view: what crossed the tunnel.
    let sum = &v["end"]["sum_received"];
    let sum = if sum.is_object() {
        sum
    } else {
        &v["end"]["sum"]
    };
    let bps = sum["bits_per_second"].as_f64().unwrap_or(0.0);
    let lost = sum["lost_percent"].as_f64().unwrap_or(0.0);
    Ok((bps, lost))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub(crate) fn run() -> anyhow::Result<()> {
    let stop = start()?;
    let out_dir = root().join("target/bench");
    fs::create_dir_all(&out_dir)?;
    let mut types = Vec::new();
    // One row per type, protocol and direction (the report's table).
    let mut rows = Vec::new();
    for (gateway_type, rate) in TYPES {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        println!(
            "\n==> bandwidth: {gateway_type} ({} Mbit/s) on both gateways",
            rate / 1e6
        );
        let case = format!("bandwidth-{}", gateway_type.to_lowercase());
        let (mut env, _) = ours_pair(&stop, &case, false, gateway_type)?;
        let tcp = tcp_case(&mut env)?;
        let mut udp = serde_json::Map::new();
        for (name, reverse) in [("src_to_dst", false), ("dst_to_src", true)] {
            let (bps, lost) = iperf3_udp(reverse, 1.5 * rate)?;
            println!(
                "  UDP {name}: offered {} Mbit/s, received {:.1} Mbit/s ({lost:.1} % lost)",
                1.5 * rate / 1e6,
                bps / 1e6
            );
            udp.insert(
                name.into(),
                json!({
                    "offered_mbit_s": 1.5 * rate / 1e6,
                    "received_mbit_s": (bps / 1e5).round() / 10.0,
                    "lost_percent": (lost * 10.0).round() / 10.0,
                    "ratio_to_rate": round3(bps / rate),
                    "goal_met": bps / rate <= 1.02,
                }),
            );
            rows.push(json!({
                "gateway_type": gateway_type, "configured_mbit_s": rate / 1e6,
                "protocol": "udp", "direction": name,
                "mbit_s": (bps / 1e5).round() / 10.0, "ratio_to_rate": round3(bps / rate),
                "goal": "<= 1.02", "goal_met": bps / rate <= 1.02,
            }));
        }
        let mut tcp_ratios = serde_json::Map::new();
        for dir in ["src_to_dst", "dst_to_src"] {
            let med = tcp[dir]["mbit_s_median"].as_f64().unwrap_or(0.0) * 1e6 / rate;
            let min = tcp[dir]["mbit_s_min"].as_f64().unwrap_or(0.0) * 1e6 / rate;
            let max = tcp[dir]["mbit_s_max"].as_f64().unwrap_or(0.0) * 1e6 / rate;
            println!(
                "  TCP {dir}: {:.2} of the rate (median; {:.2}..{:.2})",
                med, min, max
            );
            rows.push(json!({
                "gateway_type": gateway_type, "configured_mbit_s": rate / 1e6,
                "protocol": "tcp (median of 3)", "direction": dir,
                "mbit_s": tcp[dir]["mbit_s_median"], "ratio_to_rate": round3(med),
                "goal": "0.85..1.00", "goal_met": (0.85..=1.0).contains(&med),
            }));
            tcp_ratios.insert(
                dir.into(),
                json!({
                    "median": round3(med), "min": round3(min), "max": round3(max),
                    "goal_met": (0.85..=1.0).contains(&med),
                }),
            );
        }
        let drops = metric_total(A, "s2s_bandwidth_drops_total").unwrap_or(0)
            + metric_total(B, "s2s_bandwidth_drops_total").unwrap_or(0);
        types.push(json!({
            "gateway_type": gateway_type,
            "configured_mbit_s": rate / 1e6,
            "tcp": tcp,
            "tcp_ratio_to_rate": tcp_ratios,
            "udp": udp,
            "bandwidth_drops_both_gateways": drops,
        }));
        drop(env);
        teardown();
    }
    let doc = json!({
        "benchmark": "bandwidth",
        "topology": "src —veth— A —veth— B —veth— dst, namespaces s2sbench-*, our gateway (fast path) on A and B, both with a VPN gateway of the type",
        "cpu": cpu_model(),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "method": "iperf3 -t 3: TCP 3 runs each way (median, min, max goodput); UDP -l 1400 offered at 1.5 x the rate each way (receiver's rate)",
        "goals": {"tcp_ratio_to_rate": "0.85..1.00 (median)", "udp_ratio_to_rate": "<= 1.02"},
        "policer": "GCRA per VPN gateway and direction, 20 ms burst, on inner packets (gateway-user/src/dataplane/police.rs)",
        "types": types,
        "results": rows,
    });
    fs::write(
        out_dir.join("bandwidth.json"),
        serde_json::to_string_pretty(&doc)? + "\n",
    )?;
    println!(
        "bandwidth: wrote {}",
        out_dir.join("bandwidth.json").display()
    );
    Ok(())
}
