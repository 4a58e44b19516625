//! `cargo xtask fuzz`: runs every libFuzzer target of every fuzz crate for
//! a bounded time each, with the corpus kept in the repository.
//!
//! Discovery, not a list: a fuzz crate is any `crates/*/fuzz/Cargo.toml` or
//! `*/fuzz/Cargo.toml` at the workspace root (e.g. `gateway-user/fuzz`),
//! and its targets are its `[[bin]]` entries, so a target added by anyone
//! is run without touching this file.
//!
//! Toolchain: cargo-fuzz (installed by `cargo xtask setup`) needs nightly
//! flags (`-Zsanitizer`); they come from `RUSTC_BOOTSTRAP=1` on the rustup
//! stable toolchain, whose x86_64 sysroot ships the AddressSanitizer
//! runtime, so targets run under ASAN. `S2S_FUZZ_SANITIZER=none` turns it
//! off (for a toolchain without the runtime).
//!
//! Corpus: `<fuzz crate>/corpus/<target>/` is read, never written, unless
//! `--update-corpus`: new inputs go to `target/fuzz/corpus/<crate>/<target>/`
//! and, with `--update-corpus`, only those that add coverage are merged
//! into the repository's corpus afterwards (libFuzzer `-merge=1`). Crashes
//! are written under `target/fuzz/artifacts/<crate>/<target>/` and fail
//! the run with the reproducer's path.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::util::{step, workspace_root};

/// One `[[bin]]` of a fuzz crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The fuzz crate's directory (`crates/gateway-bgp/fuzz`).
    pub fuzz_dir: PathBuf,
    pub name: String,
}

impl Target {
    /// `gateway-bgp` for `crates/gateway-bgp/fuzz`.
    fn crate_name(&self) -> String {
        self.fuzz_dir
            .parent()
            .and_then(Path::file_name)
            .map_or_else(|| "fuzz".into(), |n| n.to_string_lossy().into_owned())
    }

    fn corpus(&self) -> PathBuf {
        self.fuzz_dir.join("corpus").join(&self.name)
    }
}

/// Manifests of the fuzz crates, sorted.
pub fn manifests() -> anyhow::Result<Vec<PathBuf>> {
    let root = workspace_root();
    let mut found = Vec::new();
    for parent in [root.join("crates"), root.clone()] {
        for entry in
            std::fs::read_dir(&parent).with_context(|| format!("reading {}", parent.display()))?
        {
            let manifest = entry?.path().join("fuzz/Cargo.toml");
            if manifest.is_file() {
                found.push(manifest);
            }
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// The `[[bin]]` names of one fuzz crate's manifest.
pub fn bins(manifest_text: &str) -> anyhow::Result<Vec<String>> {
    let doc: toml::Table = manifest_text.parse().context("parsing a fuzz Cargo.toml")?;
    let Some(bins) = doc.get("bin") else {
        return Ok(Vec::new());
    };
    let bins = bins
        .as_array()
        .context("[[bin]] is not an array of tables")?;
    bins.iter()
        .map(|b| {
            b.get("name")
                .and_then(toml::Value::as_str)
                .map(str::to_owned)
                .context("a [[bin]] without a name")
        })
        .collect()
}

/// Every target of every fuzz crate.
pub fn targets() -> anyhow::Result<Vec<Target>> {
    let mut out = Vec::new();
    for manifest in manifests()? {
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        let fuzz_dir = manifest
            .parent()
            .context("a manifest has a directory")?
            .to_path_buf();
        for name in bins(&text).with_context(|| manifest.display().to_string())? {
            out.push(Target {
                fuzz_dir: fuzz_dir.clone(),
                name,
            });
        }
    }
    Ok(out)
}

fn sanitizer() -> String {
    std::env::var("S2S_FUZZ_SANITIZER").unwrap_or_else(|_| "address".into())
}

/// `cargo fuzz run <target>` from the fuzz crate's parent, on the stable
/// toolchain with nightly flags unlocked, building into `target/fuzz/build`.
fn cargo_fuzz(t: &Target) -> Command {
    let root = workspace_root();
    let mut cmd = crate::util::cargo();
    cmd.current_dir(t.fuzz_dir.parent().unwrap_or(&root))
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "run", "--sanitizer"])
        .arg(sanitizer())
        .arg("--fuzz-dir")
        .arg(&t.fuzz_dir)
        .arg("--target-dir")
        .arg(root.join("target/fuzz/build"))
        .arg(&t.name);
    cmd
}

/// Runs every target (or those named in `only`) for `seconds` each; fails
/// if any crashed.
pub fn run(seconds: u64, update_corpus: bool, only: &[String]) -> anyhow::Result<()> {
    crate::setup::cargo_fuzz()?;
    let root = workspace_root();
    let targets: Vec<Target> = targets()?
        .into_iter()
        .filter(|t| {
            only.is_empty()
                || only
                    .iter()
                    .any(|o| *o == t.name || *o == format!("{}/{}", t.crate_name(), t.name))
        })
        .collect();
    anyhow::ensure!(
        !targets.is_empty(),
        "no fuzz targets found (or none matches {only:?})"
    );
    let mut failed = Vec::new();
    for t in &targets {
        let krate = t.crate_name();
        step(&format!(
            "fuzz {krate}/{} for {seconds} s (sanitizer {})",
            t.name,
            sanitizer()
        ));
        let corpus = t.corpus();
        let scratch = root.join("target/fuzz/corpus").join(&krate).join(&t.name);
        let artifacts = root
            .join("target/fuzz/artifacts")
            .join(&krate)
            .join(&t.name);
        for d in [&corpus, &scratch, &artifacts] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let before = artifact_files(&artifacts)?;
        // The first corpus directory receives new inputs: the scratch one.
        let status = cargo_fuzz(t)
            .arg(&scratch)
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg("-print_final_stats=1")
            .status()
            .context("running cargo fuzz")?;
        let new: Vec<PathBuf> = artifact_files(&artifacts)?
            .into_iter()
            .filter(|a| !before.contains(a))
            .collect();
        if !status.success() || !new.is_empty() {
            for a in &new {
                eprintln!(
                    "fuzz: {krate}/{} failed; reproducer {}\n      replay: (cd {} && RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer {} {} {})",
                    t.name,
                    a.display(),
                    t.fuzz_dir.parent().unwrap_or(&root).display(),
                    sanitizer(),
                    t.name,
                    a.display()
                );
            }
            failed.push(format!("{krate}/{} ({status})", t.name));
            continue;
        }
        if update_corpus {
            step(&format!(
                "merge new inputs of {krate}/{} into {}",
                t.name,
                corpus.display()
            ));
            let status = cargo_fuzz(t)
                .arg(&corpus)
                .arg(&scratch)
                .arg("--")
                .arg("-merge=1")
                .status()
                .context("running cargo fuzz -merge")?;
            anyhow::ensure!(
                status.success(),
                "merging the corpus of {krate}/{} failed",
                t.name
            );
        }
    }
    anyhow::ensure!(
        failed.is_empty(),
        "fuzz targets failed: {} (reproducers above)",
        failed.join(", ")
    );
    println!(
        "fuzz: {} targets ran {seconds} s each without a crash",
        targets.len()
    );
    Ok(())
}

/// Crash, leak, timeout and OOM reproducers libFuzzer wrote in `dir`.
fn artifact_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| {
            ["crash-", "leak-", "timeout-", "oom-", "slow-unit-"]
                .iter()
                .any(|pre| n.starts_with(pre))
        }) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Targets that came with a seed corpus (targets added later start
    /// from an empty one, which libFuzzer handles).
    const SEEDED: &[(&str, &str)] = &[
        ("gateway-api", "api_input"),
        ("gateway-api", "device_secret"),
        ("gateway-bgp", "decode"),
        ("gateway-bgp", "session"),
        ("gateway-esp", "decap"),
        ("gateway-ike", "decode"),
        ("gateway-ike", "snapshot"),
        ("gateway-netio", "netlink_decode"),
        ("gateway-user", "pipeline"),
    ];

    #[test]
    fn bins_come_from_the_manifest() {
        let text = r#"
[package]
name = "x-fuzz"
[[bin]]
name = "decode"
path = "fuzz_targets/decode.rs"
[[bin]]
name = "responder"
path = "fuzz_targets/responder.rs"
"#;
        assert_eq!(bins(text).unwrap(), vec!["decode", "responder"]);
        assert!(bins("[package]\nname = \"x\"\n").unwrap().is_empty());
        assert!(bins("[[bin]]\npath = \"a.rs\"\n").is_err());
    }

    #[test]
    fn every_fuzz_crate_of_the_repository_is_found_with_a_seed_corpus() {
        let all = targets().unwrap();
        for (krate, target) in SEEDED {
            let t = all
                .iter()
                .find(|t| t.crate_name() == *krate && t.name == *target)
                .unwrap_or_else(|| panic!("{krate}/{target} missing from {all:?}"));
            let seeds = std::fs::read_dir(t.corpus()).map_or(0, Iterator::count);
            assert!(seeds > 0, "no seed corpus in {}", t.corpus().display());
        }
    }
}
