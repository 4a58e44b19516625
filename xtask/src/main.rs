//! Project automation, run as `cargo xtask <command>`.
//!
//! Every command that needs the toolchain or the test peers calls `setup`
//! first, so nothing is ever a manual step on a fresh machine. This crate owns
//! no product logic: it drives cargo, apt, the binaries and the benchmarks.

mod bench;
mod fuzz;
mod lab;
mod package;
mod setup;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "s2s-gateway project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install (idempotently) the eBPF toolchain, bpf-linker and the Debian
    /// packages the build and the tests need.
    Setup,
    /// Build the eBPF object and the user binaries.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build, then load and attach the XDP programs per the config; detach on
    /// Ctrl-C or SIGTERM.
    BuildAndLoad {
        #[arg(long, default_value = "config/gateway.toml")]
        config: PathBuf,
    },
    /// The whole test suite: fmt, clippy, unit tests, a short pass of every
    /// fuzz target, then the privileged tests (BPF_PROG_TEST_RUN,
    /// namespaces, interop with real peers).
    Test {
        /// Skip the privileged phase (it also skips itself when not root).
        #[arg(long)]
        unprivileged: bool,
    },
    /// Build the Debian package (target/package/s2s-gateway_*.deb): release
    /// binaries, example config, systemd unit, man pages, completions.
    Package {
        /// Then install it on this machine, verify the unit, start the
        /// installed daemon and purge it again (root).
        #[arg(long)]
        check: bool,
    },
    /// Run benchmarks (all when no name is given): xdp, esp, bgp, ...
    Bench {
        names: Vec<String>,
        /// Arguments after `--` go to each benchmark binary (e.g.
        /// `bench control-plane -- --connections 300`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run every fuzz target of every fuzz crate (libFuzzer via cargo-fuzz)
    /// for a bounded time each, from the corpus kept in the repository.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Merge the new inputs that add coverage into the repository's
        /// corpus (otherwise they stay under target/fuzz/corpus).
        #[arg(long)]
        update_corpus: bool,
        /// Only these targets (`target` or `crate/target`); all by default.
        only: Vec<String>,
    },
    /// The two-site lab in network namespaces.
    Lab {
        /// Run every step non-interactively and exit (0 only if all passed).
        #[arg(long)]
        once: bool,
        /// The customer-side BGP daemon.
        #[arg(long, default_value = "bird")]
        peer: String,
        /// After the main steps, run the end-to-end scenarios (fast-path
        /// counters, route propagation, policy detach, PSK renewal, customer
        /// gateway restart, tunnel failover, daemon restart); BIRD peer only.
        #[arg(long)]
        scenarios: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Build { release } => setup::run().and_then(|()| util::build(release)),
        Command::BuildAndLoad { config } => build_and_load(&config),
        Command::Test { unprivileged } => test(unprivileged),
        Command::Package { check } => setup::run()
            .and_then(|()| package::build())
            .and_then(|deb| if check { package::check(&deb) } else { Ok(()) }),
        Command::Bench { names, args } => bench::run(&names, &args),
        Command::Fuzz {
            seconds,
            update_corpus,
            only,
        } => fuzz::run(seconds, update_corpus, &only),
        Command::Lab {
            once,
            peer,
            scenarios,
        } => lab::run(once, &peer, scenarios),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn build_and_load(config: &std::path::Path) -> anyhow::Result<()> {
    setup::run()?;
    util::build(false)?;
    let bin = util::workspace_root().join("target/debug/s2s-gateway");
    util::step(&format!("s2s-gateway load --config {}", config.display()));
    // exec-like: the child gets Ctrl-C / SIGTERM from the terminal's process
    // group and detaches the programs itself; we only relay its exit status.
    let status = std::process::Command::new(bin)
        .arg("load")
        .arg("--config")
        .arg(config)
        .status()?;
    if !status.success() {
        anyhow::bail!("s2s-gateway load exited with {status}");
    }
    Ok(())
}

/// Seconds per fuzz target in `cargo xtask test`.
const FUZZ_SECONDS_IN_TEST: u64 = 10;

fn test(unprivileged: bool) -> anyhow::Result<()> {
    setup::run()?;
    let root = util::workspace_root();
    util::step("cargo fmt --check");
    util::sh(util::cargo().args(["fmt", "--all", "--check"]))?;
    // gateway-ebpf is outside the workspace (own toolchain); check its files
    // with the workspace's rustfmt.
    let mut rustfmt = std::process::Command::new("rustfmt");
    rustfmt.args(["--check", "--edition", "2021"]);
    rustfmt.args(util::rust_files(&root.join("gateway-ebpf/src"))?);
    util::sh(&mut rustfmt)?;
    util::step("cargo clippy --workspace --all-targets -- -D warnings");
    util::sh(util::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    util::step("fuzz targets compile");
    for manifest in fuzz::manifests()? {
        util::sh(
            util::cargo()
                .env("CARGO_TARGET_DIR", root.join("target/fuzz"))
                .args(["check", "--manifest-path"])
                .arg(&manifest),
        )?;
    }
    util::step("unit tests: cargo test --workspace");
    util::sh(util::cargo().args(["test", "--workspace"]))?;
    // A short pass of every fuzz target: 10 s each from the repository's
    // corpus (about a minute and a half of fuzzing plus the builds).
    fuzz::run(FUZZ_SECONDS_IN_TEST, false, &[])?;
    if unprivileged {
        println!("xtask: privileged tests skipped (--unprivileged)");
        return Ok(());
    }
    if !util::is_root() {
        anyhow::bail!(
            "the privileged tests need root (BPF, network namespaces); \
             run as root or pass --unprivileged"
        );
    }
    util::step("privileged tests: cargo test --workspace -- --ignored");
    util::sh(util::cargo().args(["test", "--workspace", "--", "--ignored", "--test-threads=1"]))?;
    // What an operator installs: the Debian package, installed, verified,
    // started from the installed files and purged.
    let deb = package::build()?;
    package::check(&deb)?;
    // End to end, as the README's main command runs it: the lab against
    // strongSwan + BIRD with every issue-7 scenario, then against FRR.
    util::step("end to end: cargo xtask lab --once --scenarios");
    util::sh(util::cargo().args(["xtask", "lab", "--once", "--scenarios"]))?;
    util::step("end to end: cargo xtask lab --once --peer frr");
    util::sh(util::cargo().args(["xtask", "lab", "--once", "--peer", "frr"]))?;
    println!("xtask: all tests passed");
    Ok(())
}
