//! Builds `gateway-ebpf` (the XDP programs) for `bpfel-unknown-none` and
//! hands the object to the library through `OUT_DIR`. The eBPF crate has its
//! own toolchain (see gateway-ebpf/rust-toolchain.toml), so the inner cargo
//! runs with a cleared environment: the outer build's RUSTC, RUSTFLAGS,
//! RUSTUP_TOOLCHAIN, CARGO_TARGET_DIR, ... would otherwise leak into it.
//! Cargo re-runs this script only when the eBPF sources or gateway-common
//! change.

use std::{
    env,
    path::{Path, PathBuf},
    process::{exit, Command},
};

const SETUP_HINT: &str = "eBPF toolchain missing: run `cargo xtask setup`";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("gateway-user lives in the workspace root");
    let ebpf_dir = root.join("gateway-ebpf");
    let common_dir = root.join("gateway-common");

    for p in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        ebpf_dir.join("Cargo.lock"),
        ebpf_dir.join("rust-toolchain.toml"),
        ebpf_dir.join(".cargo/config.toml"),
        common_dir.join("src"),
        common_dir.join("Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    let Some(linker_dir) = find_bpf_linker() else {
        fail("bpf-linker not found in PATH or ~/.cargo/bin");
    };
    // rustup's nightly when it has rust-src (the usual aya setup); otherwise
    // the Debian toolchain named by gateway-ebpf/rust-toolchain.toml, with
    // the std sources that -Z build-std=core compiles.
    let nightly = nightly_with_rust_src();
    if !nightly {
        for needed in [
            "/usr/bin/cargo",
            "/usr/bin/rustc",
            "/usr/lib/rustlib/src/rust/library/core",
        ] {
            if !Path::new(needed).exists() {
                fail(&format!(
                    "{needed} not found (and no rustup nightly with rust-src)"
                ));
            }
        }
    }

    let mut path = vec![linker_dir];
    if let Some(p) = env::var_os("PATH") {
        path.extend(env::split_paths(&p));
    }
    let path = env::join_paths(path).expect("PATH entries contain no separator");

    let mut cmd = Command::new("cargo");
    cmd.env_clear()
        .env("PATH", path)
        .current_dir(&ebpf_dir)
        .args(["build", "--release", "--locked"]);
    for keep in ["HOME", "CARGO_HOME", "RUSTUP_HOME", "TERM", "TMPDIR"] {
        if let Some(v) = env::var_os(keep) {
            cmd.env(keep, v);
        }
    }
    if nightly {
        // Overrides gateway-ebpf/rust-toolchain.toml.
        cmd.env("RUSTUP_TOOLCHAIN", "nightly");
    }
    let status = match cmd.status() {
        Ok(s) => s,
        Err(e) => fail(&format!("cannot run cargo: {e}")),
    };
    if !status.success() {
        // The compiler's own diagnostics were printed above.
        eprintln!("error: building gateway-ebpf failed ({status})");
        exit(1);
    }

    let obj = ebpf_dir.join("target/bpfel-unknown-none/release/gateway-ebpf");
    let dest = out_dir.join("gateway-ebpf.o");
    if let Err(e) = std::fs::copy(&obj, &dest) {
        eprintln!(
            "error: copying {} to {}: {e}",
            obj.display(),
            dest.display()
        );
        exit(1);
    }
}

/// Whether rustup has a nightly toolchain with the `rust-src` component.
fn nightly_with_rust_src() -> bool {
    let mut cmd = Command::new("rustup");
    cmd.env_clear()
        .args(["component", "list", "--toolchain", "nightly", "--installed"]);
    for keep in ["PATH", "HOME", "CARGO_HOME", "RUSTUP_HOME"] {
        if let Some(v) = env::var_os(keep) {
            cmd.env(keep, v);
        }
    }
    cmd.output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.starts_with("rust-src"))
        })
        .unwrap_or(false)
}

fn find_bpf_linker() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(h) = env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(h).join("bin"));
    }
    if let Some(h) = env::var_os("HOME") {
        dirs.push(PathBuf::from(h).join(".cargo/bin"));
    }
    dirs.into_iter().find(|d| d.join("bpf-linker").is_file())
}

fn fail(detail: &str) -> ! {
    eprintln!("error: {SETUP_HINT} ({detail})");
    exit(1);
}
