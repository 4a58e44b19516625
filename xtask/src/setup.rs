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
    // libfuzzer-sys builds libFuzzer (C++) for `cargo xtask fuzz`
    "g++",
    // the IKE test with strongSwan behind a NAT router (masquerade)
    "nftables",
    // tunnel benchmark: NAPI/GRO settings, WireGuard keys and UAPI
    // configuration of boringtun and wireguard-go, the worker profile;
    // wireguard-go (Go's userspace WireGuard) as a baseline pair
    "ethtool",
    "wireguard-tools",
    "wireguard-go",
    "linux-perf",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// Userspace WireGuard the tunnel benchmark compares with (crates.io).
const BORINGTUN_VERSION: &str = "0.7.1";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

pub fn run() -> anyhow::Result<()> {
    apt_packages()?;
    bpf_linker()?;
    cargo_fuzz()?;
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

/// `boringtun-cli` into `target/tools/bin` (the tunnel benchmark's
/// WireGuard pair). A failed build is reported, not fatal: the benchmark
/// records the case as missing with the reason.
pub fn boringtun() -> Result<std::path::PathBuf, String> {
    let root = crate::util::workspace_root().join("target/tools");
    let bin = root.join("bin/boringtun-cli");
    let have = output(Command::new(&bin).arg("--version")).unwrap_or_default();
    if have.contains(BORINGTUN_VERSION) {
        println!("setup: {}", have.trim());
        return Ok(bin);
    }
    step(&format!(
        "setup: cargo install boringtun-cli@{BORINGTUN_VERSION} into target/tools"
    ));
    let log = root.join("boringtun-install.log");
    let _ = std::fs::create_dir_all(&root);
    let status = std::fs::File::create(&log)
        .map_err(|e| e.to_string())
        .and_then(|f| {
            let f2 = f.try_clone().map_err(|e| e.to_string())?;
            Command::new("cargo")
                .args([
                    "install",
                    &format!("boringtun-cli@{BORINGTUN_VERSION}"),
                    "--locked",
                    "--root",
                ])
                .arg(&root)
                .env("CARGO_TARGET_DIR", root.join("build"))
                .stdout(f)
                .stderr(f2)
                .status()
                .map_err(|e| e.to_string())
        })?;
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let reason = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        let _ = std::fs::write(root.join("boringtun-failed.txt"), &reason);
        return Err(format!(
            "cargo install boringtun-cli failed ({status}):\n{reason}"
        ));
    }
    let _ = std::fs::remove_file(root.join("boringtun-failed.txt"));
    Ok(bin)
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

/// cargo-fuzz, for `cargo xtask fuzz`: from crates.io into the user's cargo
/// bin directory when `cargo fuzz` is missing.
pub fn cargo_fuzz() -> anyhow::Result<()> {
    let present = crate::util::cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        println!("setup: cargo-fuzz present");
        return Ok(());
    }
    step("cargo install cargo-fuzz --locked");
    sh(crate::util::cargo().args(["install", "cargo-fuzz", "--locked"]))
        .context("installing cargo-fuzz")
}
