//! `cargo xtask bench [NAME...]`: runs the benchmark binaries of the
//! `benches` crate (each writes `target/bench/<name>.json`) and gathers the
//! results of those that ran (all of them without names) into
//! `target/bench/report.md`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context};

use crate::setup;
use crate::util::{build, cargo, sh, step, workspace_root};

/// Benchmarks in the order the report shows them.
const ALL: &[&str] = &[
    "xdp",
    "esp",
    "capture",
    "ike",
    "bgp",
    "tunnel",
    "bandwidth",
    "restart",
    "control-plane",
];

/// Runs of each case in `bench restart` (the median of 3 is reported).
const RESTART_RUNS: u32 = 3;

pub fn run(names: &[String], args: &[String]) -> anyhow::Result<()> {
    setup::run()?;
    let available = available()?;
    let selected: Vec<String> = if names.is_empty() {
        ALL.iter()
            .filter(|n| available.iter().any(|a| a == *n))
            .map(|n| n.to_string())
            .collect()
    } else {
        for n in names {
            if !available.contains(n) {
                bail!(
                    "unknown benchmark {n:?}; available: {}",
                    available.join(", ")
                );
            }
        }
        names.to_vec()
    };
    if selected.iter().any(|n| n == "tunnel" || n == "bandwidth") {
        // The tunnel benchmark drives our daemon, s2sctl, trafficgen and
        // xdpfwd as separate processes in namespaces: build them all (release)
        // next to it, and boringtun-cli into target/tools.
        build(true)?;
        sh(cargo().args(["build", "--release", "--package", "benches", "--bins"]))?;
        if let Err(e) = setup::boringtun() {
            eprintln!(
                "bench: boringtun-cli unavailable, its case will be recorded as missing: {e}"
            );
        }
    } else if selected.iter().any(|n| n == "control-plane") {
        // It drives the release daemon next to it.
        build(true)?;
    }
    for name in &selected {
        step(&format!("bench {name}"));
        if name == "restart" {
            // Our daemon restarted under the lab's traffic: the lab's
            // topology and peers, in xtask (src/lab/).
            crate::lab::session(
                "bird",
                crate::lab::Then::BenchRestart { runs: RESTART_RUNS },
            )?;
            continue;
        }
        // `bandwidth` is a mode of the tunnel benchmark (its topology and
        // gateways).
        let (bin, mode): (&str, &[&str]) = match name.as_str() {
            "bandwidth" => ("tunnel", &["--bandwidth"]),
            other => (other, &[]),
        };
        sh(cargo()
            .args([
                "run",
                "--release",
                "--quiet",
                "--package",
                "benches",
                "--bin",
                bin,
                "--",
            ])
            .args(mode)
            .args(args))?;
    }
    // The report covers what ran: all of them without names, or the named
    // ones (`bench xdp esp tunnel` is enough for the per-stage table).
    let missing: Vec<&str> = if names.is_empty() {
        ALL.iter()
            .copied()
            .filter(|n| !available.iter().any(|a| a == n))
            .collect()
    } else {
        Vec::new()
    };
    report(&selected, &missing)?;
    Ok(())
}

/// Benchmark binaries that exist in benches/src/bin.
fn available() -> anyhow::Result<Vec<String>> {
    let dir = workspace_root().join("benches/src/bin");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        // `name.rs`, or a directory `name/` with a `main.rs` (Cargo's two
        // shapes of an auto-discovered binary).
        let binary = path.extension().is_some_and(|e| e == "rs")
            || (path.is_dir() && path.join("main.rs").exists());
        if binary {
            if let Some(stem) = path.file_stem() {
                names.push(stem.to_string_lossy().into_owned());
            }
        }
    }
    // Not a binary: the lab runs it (`lab::Then::BenchRestart`).
    names.push("restart".into());
    // Not a binary: a mode of `tunnel`.
    names.push("bandwidth".into());
    names.sort();
    Ok(names)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn report(ran: &[String], missing: &[&str]) -> anyhow::Result<()> {
    let dir = workspace_root().join("target/bench");
    let mut md = String::new();
    writeln!(md, "# Benchmark report\n")?;
    writeln!(md, "- CPU: {}", cpu_model())?;
    writeln!(
        md,
        "- cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )?;
    writeln!(
        md,
        "- every ratio compares against a baseline measured in the same run\n"
    )?;
    for name in ran {
        let path = dir.join(format!("{name}.json"));
        if name == "tunnel" {
            tunnel_section(&mut md, &path)?;
        } else {
            table(&mut md, name, &path)?;
        }
    }
    if ran.iter().any(|n| n == "tunnel") {
        let load = |name: &str| -> Option<serde_json::Value> {
            if !ran.iter().any(|n| n == name) {
                return None;
            }
            let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).ok()?;
            serde_json::from_str(&text).ok()
        };
        let (xdp, esp, tunnel) = (load("xdp"), load("esp"), load("tunnel"));
        if let Some(tunnel) = &tunnel {
            stages_section(&mut md, xdp.as_ref(), esp.as_ref(), tunnel)?;
        }
    }
    if !missing.is_empty() {
        writeln!(md, "\nNot yet implemented: {}", missing.join(", "))?;
    }
    let out = dir.join("report.md");
    std::fs::write(&out, md)?;
    println!("xtask: wrote {}", out.display());
    Ok(())
}

/// One row of the per-stage table: what, where it was measured, ns per
/// packet (`None`: not measured in this run).
struct Stage {
    what: String,
    source: &'static str,
    ns: Option<f64>,
}

/// The per-packet cost of each stage at 64 bytes and its share of the
/// budget: the time one packet may take at the rate the fast path reached
/// in `bench tunnel` (1 / received pps of `ours-fastpath` at 64 B; with
/// the system under test pinned to one CPU, that CPU's time per packet).
/// The worker rows are the encrypting worker's measured CPU time per
/// packet, split by the profile's categories. `None` when that run has no
/// 64-byte rate of ours.
fn stages(
    xdp: Option<&serde_json::Value>,
    esp: Option<&serde_json::Value>,
    tunnel: &serde_json::Value,
) -> Option<(f64, Vec<Stage>)> {
    let pps = results(Some(tunnel))
        .iter()
        .find(|r| r["case"] == "ours-fastpath" && r["frame_bytes"] == 64)
        .and_then(|r| r["rx_pps"].as_f64())
        .filter(|p| *p > 0.0)?;
    let budget = 1e9 / pps;
    let xdp_rows = results(xdp);
    let xdp_ns = |name: &str| {
        xdp_rows
            .iter()
            .find(|r| r["name"] == name)
            .and_then(|r| r["ns_per_packet"].as_f64())
    };
    let esp_rows = results(esp);
    let esp_ns = |suffix: &str| {
        esp_rows
            .iter()
            .find(|r| {
                r["bytes"] == 64
                    && r["name"]
                        .as_str()
                        .is_some_and(|n| n == format!("aes256gcm/{suffix}"))
            })
            .and_then(|r| r["ns_per_packet"].as_f64())
    };
    // The encrypting worker's CPU time per packet (from its profile's
    // sample count), split by the profile's categories.
    let worker = tunnel["worker_cpu_ns_per_packet_64b"].as_f64();
    let share = |key: &str| {
        tunnel["profile_shares"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["category"] == key))
            .and_then(|c| c["pct"].as_f64())
            .and_then(|pct| Some(pct / 100.0 * worker?))
    };
    let mut v = vec![
        Stage {
            what: "XDP `lan_ingress`, route hit (1 route), encrypting side".into(),
            source: "bench xdp",
            ns: xdp_ns("lan_route_hit_1_route"),
        },
        Stage {
            what: "XDP `wan_ingress`, ESP steering, decrypting side".into(),
            source: "bench xdp",
            ns: xdp_ns("wan_esp_steer"),
        },
        Stage {
            what: "ESP encap, aes256gcm (framing + AEAD)".into(),
            source: "bench esp",
            ns: esp_ns("encap"),
        },
        Stage {
            what: "of which the raw AEAD seal (ring)".into(),
            source: "bench esp",
            ns: esp_ns("seal_raw_ring"),
        },
        Stage {
            what: "ESP decap, aes256gcm (framing + AEAD)".into(),
            source: "bench esp",
            ns: esp_ns("decap"),
        },
    ];
    v.push(Stage {
        what: "encrypting worker, all of its CPU time".into(),
        source: "bench tunnel profile",
        ns: worker,
    });
    for (key, what) in [
        (
            "worker",
            "worker: our code (steering, SA lookup, framing, rings)",
        ),
        ("crypto", "worker: crypto"),
        ("kernel_tx", "worker: kernel AF_XDP TX / veth / skb"),
        ("scheduling", "worker: scheduling, poll(2), syscalls"),
        ("kernel_other", "worker: other kernel"),
    ] {
        v.push(Stage {
            what: what.into(),
            source: "bench tunnel profile",
            ns: share(key),
        });
    }
    Some((budget, v))
}

/// The `results` array of a benchmark's JSON (empty when absent).
fn results(v: Option<&serde_json::Value>) -> &[serde_json::Value] {
    v.and_then(|v| v["results"].as_array())
        .map_or(&[], Vec::as_slice)
}

/// The per-stage table of the report (see [`stages`]).
fn stages_section(
    md: &mut String,
    xdp: Option<&serde_json::Value>,
    esp: Option<&serde_json::Value>,
    tunnel: &serde_json::Value,
) -> anyhow::Result<()> {
    writeln!(
        md,
        "## Per stage at 64 bytes
"
    )?;
    let Some((budget, rows)) = stages(xdp, esp, tunnel) else {
        writeln!(
            md,
            "No 64-byte `ours-fastpath` rate in this run's tunnel benchmark: no budget to share.\n"
        )?;
        return Ok(());
    };
    writeln!(
        md,
        "Budget: {budget:.0} ns per packet (1 / the rate `ours-fastpath` received at 64 B in `bench tunnel`; where the system under test is pinned to one CPU, as the tunnel section's pinning says, that CPU's time per packet, shared by both gateways, their NAPI threads and the sink). The worker rows are the encrypting worker's own CPU time per packet (its profile's samples over the packets received while it was recorded), split by the profile's categories.\n"
    )?;
    writeln!(
        md,
        "| stage | measured by | ns/packet | share of the budget |"
    )?;
    writeln!(md, "| --- | --- | --- | --- |")?;
    for s in &rows {
        let (ns, pct) = match s.ns {
            Some(ns) => (format!("{ns:.0}"), format!("{:.0} %", ns / budget * 100.0)),
            None => ("not measured in this run".into(), String::new()),
        };
        writeln!(md, "| {} | {} | {ns} | {pct} |", s.what, s.source)?;
    }
    writeln!(
        md,
        "\nThe XDP and ESP rows are micro-benchmarks (one program run by BPF_PROG_TEST_RUN, the ESP engine in a loop, caches warm); the worker rows split the encrypting worker's measured CPU time by the profile's categories, so the ESP engine's cost is inside its \"our code\" and \"crypto\" rows. XDP runs in the kernel's receive path, outside the worker's time.\n"
    )?;
    Ok(())
}

/// Renders `{"results":[{...}, ...]}` as a Markdown table whose columns are
/// the union of the result keys, in first-seen order.
fn table(md: &mut String, name: &str, path: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let rows = v["results"]
        .as_array()
        .with_context(|| format!("{}: no results array", path.display()))?;
    let mut cols: Vec<String> = Vec::new();
    for r in rows {
        if let Some(obj) = r.as_object() {
            for k in obj.keys() {
                if !cols.contains(k) {
                    cols.push(k.clone());
                }
            }
        }
    }
    writeln!(md, "## {name}\n")?;
    writeln!(md, "| {} |", cols.join(" | "))?;
    writeln!(md, "|{}", " --- |".repeat(cols.len()))?;
    for r in rows {
        let cells: Vec<String> = cols
            .iter()
            .map(|c| match &r[c] {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => match n.as_f64() {
                    Some(f) if n.is_f64() => format!("{f:.3}"),
                    _ => n.to_string(),
                },
                other => other.to_string(),
            })
            .collect();
        writeln!(md, "| {} |", cells.join(" | "))?;
    }
    writeln!(md)?;
    Ok(())
}

/// The tunnel benchmark: one row per (case, frame size), then the goal
/// ratios, the NAPI settings and links to the plot and the profile.
fn tunnel_section(md: &mut String, path: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let s = |x: &serde_json::Value| match x {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    writeln!(md, "## tunnel\n")?;
    writeln!(md, "Topology: {}.", s(&v["topology"]))?;
    writeln!(
        md,
        "Offered load: {}; {} s per point, {} flows. Gbit/s = {}.\n",
        s(&v["offered_load"]),
        s(&v["duration_s_per_point"]),
        s(&v["flows"]),
        s(&v["gbit_s"])
    )?;
    writeln!(
        md,
        "| case | frame B | offered pps | sent | received | loss % | received pps | Gbit/s | pps, ≤ 1 % loss | Gbit/s, ≤ 1 % loss | tunnel check | notes |"
    )?;
    writeln!(md, "|{}", " --- |".repeat(12))?;
    for r in v["results"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s(&r["case"]),
            s(&r["frame_bytes"]),
            s(&r["offered_pps"]),
            s(&r["sent"]),
            s(&r["received"]),
            s(&r["loss_pct"]),
            s(&r["rx_pps"]),
            s(&r["gbit_s"]),
            s(&r["pps_at_le_1pct_loss"]),
            s(&r["gbit_s_at_le_1pct_loss"]),
            s(&r["tunnel_check"]),
            s(&r["notes"]).replace('|', "/").replace('\n', " "),
        )?;
    }
    writeln!(md, "\n| goal ratio | value | goal | met |")?;
    writeln!(md, "| --- | --- | --- | --- |")?;
    for r in v["ratios"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        writeln!(
            md,
            "| {} | {} | ≥ {} | {} |",
            s(&r["ratio"]),
            s(&r["value"]),
            s(&r["goal"]),
            s(&r["met"])
        )?;
    }
    let tcp = v["tcp"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !tcp.is_empty() {
        writeln!(md, "\nTCP through the tunnel ({}):\n", s(&v["tcp_method"]))?;
        writeln!(
            md,
            "| case | direction | Mbit/s median (min..max) | retransmits median (min..max) |"
        )?;
        writeln!(md, "| --- | --- | --- | --- |")?;
        for c in tcp {
            for dir in ["src_to_dst", "dst_to_src"] {
                let d = &c["tcp"][dir];
                writeln!(
                    md,
                    "| {} | {} | {} ({}..{}) | {} ({}..{}) |",
                    s(&c["case"]),
                    dir.replace('_', " "),
                    s(&d["mbit_s_median"]),
                    s(&d["mbit_s_min"]),
                    s(&d["mbit_s_max"]),
                    s(&d["retransmits_median"]),
                    s(&d["retransmits_min"]),
                    s(&d["retransmits_max"]),
                )?;
            }
        }
    }
    writeln!(md, "\nCases:\n")?;
    for c in v["cases"].as_array().map(Vec::as_slice).unwrap_or_default() {
        writeln!(md, "- `{}`: {}", s(&c["case"]), s(&c["what"]))?;
    }
    let napi: Vec<String> = v["napi"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(s)
        .collect();
    writeln!(md, "\nNAPI settings (every case): {}", napi.join(", "))?;
    if let Some(p) = v["pinning"].as_str() {
        writeln!(md, "\nCPU pinning (every case): {p}")?;
    }
    writeln!(
        md,
        "\nPlot: `target/bench/tunnel.svg`; worker profile: `target/bench/tunnel-profile.txt`.\n"
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_benchmark_of_the_report_is_found_single_file_or_directory() {
        let found = available().unwrap();
        for name in ALL {
            assert!(found.iter().any(|f| f == name), "{name} not in {found:?}");
        }
    }

    #[test]
    fn stage_table_shares_the_64_byte_budget() {
        let tunnel = serde_json::json!({
            "results": [
                {"case": "ours-fastpath", "frame_bytes": 1400, "rx_pps": 1.0},
                {"case": "xdpfwd-nocrypto", "frame_bytes": 64, "rx_pps": 1.0},
                {"case": "ours-fastpath", "frame_bytes": 64, "rx_pps": 100_000.0},
            ],
            "profile_shares": [
                {"category": "kernel_tx", "pct": 35.0},
                {"category": "worker", "pct": 23.0},
            ],
            "worker_cpu_ns_per_packet_64b": 2000.0,
        });
        let xdp = serde_json::json!({"results": [
            {"name": "trivial_xdp_pass", "ns_per_packet": 10.0},
            {"name": "wan_esp_steer", "ns_per_packet": 30.0},
            {"name": "lan_route_hit_1_route", "ns_per_packet": 40.0},
        ]});
        let esp = serde_json::json!({"results": [
            {"name": "aes256gcm/encap", "bytes": 1400, "ns_per_packet": 999.0},
            {"name": "aes128gcm/encap", "bytes": 64, "ns_per_packet": 999.0},
            {"name": "aes256gcm/encap", "bytes": 64, "ns_per_packet": 150.0},
            {"name": "aes256gcm/seal_raw_ring", "bytes": 64, "ns_per_packet": 120.0},
        ]});
        let (budget, rows) = stages(Some(&xdp), Some(&esp), &tunnel).unwrap();
        assert_eq!(budget, 10_000.0);
        let ns = |prefix: &str| {
            rows.iter()
                .find(|r| r.what.starts_with(prefix))
                .unwrap_or_else(|| panic!("no row {prefix}"))
                .ns
        };
        assert_eq!(ns("XDP `lan_ingress`"), Some(40.0));
        assert_eq!(ns("XDP `wan_ingress`"), Some(30.0));
        assert_eq!(ns("ESP encap"), Some(150.0));
        assert_eq!(ns("of which the raw AEAD"), Some(120.0));
        assert_eq!(ns("ESP decap"), None);
        assert_eq!(ns("encrypting worker, all"), Some(2000.0));
        assert_eq!(ns("worker: our code"), Some(460.0));
        assert_eq!(ns("worker: kernel AF_XDP"), Some(700.0));
        assert_eq!(ns("worker: crypto"), None);
        let mut md = String::new();
        stages_section(&mut md, Some(&xdp), None, &tunnel).unwrap();
        assert!(md.contains("Budget: 10000 ns"), "{md}");
        assert!(md.contains("| 460 | 5 % |"), "{md}");
        assert!(md.contains("| 2000 | 20 % |"), "{md}");
        // Without the worker's CPU time, its rows are not measured.
        let mut no_cpu = tunnel.clone();
        no_cpu["worker_cpu_ns_per_packet_64b"] = serde_json::Value::Null;
        let (_, rows) = stages(None, None, &no_cpu).unwrap();
        assert!(rows
            .iter()
            .filter(|r| r.what.starts_with("worker"))
            .all(|r| r.ns.is_none()));
        assert!(
            md.contains(
                "ESP encap, aes256gcm (framing + AEAD) | bench esp | not measured in this run"
            ),
            "{md}"
        );
        // No 64-byte rate of ours: no budget, said so.
        let none = serde_json::json!({"results": []});
        assert!(stages(None, None, &none).is_none());
        let mut md = String::new();
        stages_section(&mut md, None, None, &none).unwrap();
        assert!(md.contains("no budget"), "{md}");
    }

    #[test]
    fn tunnel_section_renders_rows_ratios_and_settings() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tunnel.json");
        let doc = serde_json::json!({
            "topology": "src — A — B — dst",
            "offered_load": "max",
            "duration_s_per_point": 5.0,
            "flows": 4,
            "gbit_s": "frames × 8",
            "napi": ["a:alan0 gro=on threaded=1"],
            "pinning": "sender=0",
            "cases": [{"case": "ours-fastpath", "what": "ours on both sides"}],
            "results": [{"case": "ours-fastpath", "frame_bytes": 64, "offered_pps": 1000.0,
                         "sent": 5000, "received": 4000, "loss_pct": 20.0, "rx_pps": 800.0,
                         "gbit_s": 0.0, "pps_at_le_1pct_loss": 700.0,
                         "gbit_s_at_le_1pct_loss": 0.0, "tunnel_check": "ok",
                         "notes": "a|b"}],
            "ratios": [{"ratio": "ours / xdpfwd", "value": 0.8, "goal": 0.7, "met": true}],
            "tcp_method": "iperf3",
            "tcp": [{"case": "ours-fastpath", "tcp": {
                "src_to_dst": {"mbit_s_median": 900.0, "mbit_s_min": 800.0, "mbit_s_max": 950.0,
                               "retransmits_median": 3, "retransmits_min": 0, "retransmits_max": 9},
                "dst_to_src": {"mbit_s_median": 700.0, "mbit_s_min": 650.0, "mbit_s_max": 720.0,
                               "retransmits_median": 0, "retransmits_min": 0, "retransmits_max": 1}}}],
        });
        std::fs::write(&path, doc.to_string()).unwrap();
        let mut md = String::new();
        tunnel_section(&mut md, &path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(md.contains("| ours-fastpath | 64 | 1000.0 | 5000 | 4000 | 20.0 | 800.0 | 0.0 | 700.0 | 0.0 | ok | a/b |"), "{md}");
        assert!(
            md.contains("| ours / xdpfwd | 0.8 | ≥ 0.7 | true |"),
            "{md}"
        );
        assert!(md.contains("TCP through the tunnel (iperf3)"), "{md}");
        assert!(
            md.contains("| ours-fastpath | src to dst | 900.0 (800.0..950.0) | 3 (0..9) |"),
            "{md}"
        );
        assert!(
            md.contains("| ours-fastpath | dst to src | 700.0 (650.0..720.0) | 0 (0..1) |"),
            "{md}"
        );
        assert!(md.contains("a:alan0 gro=on threaded=1"));
        assert!(md.contains("CPU pinning (every case): sender=0"));
    }
}
