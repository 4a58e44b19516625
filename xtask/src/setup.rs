//! `cargo xtask setup`: everything the build and the tests need on a fresh
//! machine of this kind, installed idempotently with progress output.
//!
//! The eBPF crate needs a Rust toolchain that can `-Z build-std=core` for
//! `bpfel-unknown-none`: rustup's nightly with `rust-src` when present,
//! otherwise Debian's rustc-web + rust-web-src (unlocked by RUSTC_BOOTSTRAP,
//! see gateway-ebpf/.cargo/config.toml). bpf-linker must be built against the
//! LLVM that matches (llvm-22 here).

use std::process::Command;

use anyhow::Context;

use crate::util::{output, sh, step};

/// Debian packages: the eBPF toolchain, then the real peers and tools the
/// interop tests, the lab and the benchmarks drive.
const APT_PACKAGES: &[&str] = &[
    // eBPF toolchain (Debian's Rust 1.96 with std sources; LLVM 22 for bpf-linker)
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    // IKEv2/ESP peer (kernel-libipsec: this kernel has no ESP)
    "strongswan-swanctl",
    "strongswan-charon",
    "libcharon-extra-plugins",
    "libstrongswan-extra-plugins",
    // BGP peers
    "bird2",
    "frr",
    // lab and benchmark tools
    "iproute2",
    "iputils-ping",
    "iperf3",
    "tshark",
    "python3-venv",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

pub fn run() -> anyhow::Result<()> {
    apt_packages()?;
    bpf_linker()?;
    ebpf_toolchain_report();
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        println!("setup: {} Debian packages present", APT_PACKAGES.len());
        return Ok(());
    }
    step(&format!(
        "setup: apt-get install {} missing package(s): {}",
        missing.len(),
        missing.join(" ")
    ));
    sh(Command::new("apt-get").args(["update", "-q"])).context("apt-get update (are you root?)")?;
    sh(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q"])
        .args(&missing))
    .context("apt-get install")?;
    Ok(())
}

fn bpf_linker() -> anyhow::Result<()> {
    let have = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if have.contains(BPF_LINKER_VERSION) {
        println!("setup: {}", have.trim());
        return Ok(());
    }
    step(&format!(
        "setup: cargo install bpf-linker@{BPF_LINKER_VERSION} against LLVM 22 (about 2 minutes)"
    ));
    let path = format!(
        "{LLVM_BIN}:{}",
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    );
    sh(Command::new("cargo").env("PATH", path).args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
        "--no-default-features",
        "--features",
        "llvm-22",
    ]))
    .context("cargo install bpf-linker")?;
    Ok(())
}

/// Which toolchain builds the eBPF crate; the choice itself is made by
/// gateway-user's build script with the same rule.
fn ebpf_toolchain_report() {
    let nightly_src = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .map(|s| s.lines().any(|l| l.starts_with("rust-src")))
    .unwrap_or(false);
    if nightly_src {
        println!("setup: eBPF toolchain: rustup nightly with rust-src");
    } else {
        let v = output(Command::new("/usr/bin/rustc").arg("--version")).unwrap_or_default();
        println!(
            "setup: eBPF toolchain: Debian {} with RUSTC_BOOTSTRAP (no nightly rust-src)",
            v.trim()
        );
    }
}
