//! `cargo xtask bench [NAME...]`: runs the benchmark binaries of the
//! `benches` crate (each writes `target/bench/<name>.json`) and, when run
//! without names, gathers every result into `target/bench/report.md`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context};

use crate::setup;
use crate::util::{cargo, sh, step, workspace_root};

/// Benchmarks in the order the report shows them.
const ALL: &[&str] = &["xdp", "esp", "ike", "bgp", "tunnel"];

pub fn run(names: &[String]) -> anyhow::Result<()> {
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
    for name in &selected {
        step(&format!("bench {name}"));
        sh(cargo().args([
            "run",
            "--release",
            "--quiet",
            "--package",
            "benches",
            "--bin",
            name,
        ]))?;
    }
    if names.is_empty() {
        let missing: Vec<&str> = ALL
            .iter()
            .copied()
            .filter(|n| !available.iter().any(|a| a == n))
            .collect();
        report(&selected, &missing)?;
    }
    Ok(())
}

/// Benchmark binaries that exist in benches/src/bin.
fn available() -> anyhow::Result<Vec<String>> {
    let dir = workspace_root().join("benches/src/bin");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            if let Some(stem) = path.file_stem() {
                names.push(stem.to_string_lossy().into_owned());
            }
        }
    }
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
        table(&mut md, name, &dir.join(format!("{name}.json")))?;
    }
    if !missing.is_empty() {
        writeln!(md, "\nNot yet implemented: {}", missing.join(", "))?;
    }
    let out = dir.join("report.md");
    std::fs::write(&out, md)?;
    println!("xtask: wrote {}", out.display());
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
