//! Small process helpers shared by the xtask commands.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
pub use labkit::{output, sh};

pub fn workspace_root() -> PathBuf {
    // xtask lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

/// The cargo that invoked us (rustup's), run from the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// A visible progress line.
pub fn step(what: &str) {
    println!("\n==> {what}");
}

pub fn is_root() -> bool {
    output(Command::new("id").arg("-u"))
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
}

/// Builds the user binaries; gateway-user's build script builds and embeds
/// the eBPF object (and skips that when nothing changed).
pub fn build(release: bool) -> anyhow::Result<()> {
    step(if release {
        "cargo build --release (eBPF object + user binaries)"
    } else {
        "cargo build (eBPF object + user binaries)"
    });
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--package",
        "gateway-user",
        "--package",
        "s2s-loadgen",
        "--bins",
    ]);
    if release {
        cmd.arg("--release");
    }
    sh(&mut cmd)
}

/// Every `.rs` file below `dir`, sorted.
pub fn rust_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}
