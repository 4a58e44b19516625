//! `s2s-loadgen`: customer gateways played by the project's own IKEv2 and
//! ESP crates, to size a host the way strongSwan's load-tester plugin does:
//! N peers, each from its own address with its own PSK and proposal, start
//! at once against a gateway; the tool reports how many tunnels are up as
//! it goes and how long all of them took.
//!
//! ```text
//! s2s-loadgen --peers peers.json [--netns NS] [--until-up] [--timeout 120]
//! ```
//!
//! `peers.json` is a JSON array (or one object per line) of
//! `{"name", "local", "remote", "psk" | "psk_hex", "ike", "esp", "initiate"}`:
//! `local` is the peer's address (it must be configured on an interface,
//! in `--netns` if given), `remote` the VPN gateway's public address, `ike`
//! the API's names `["aes256gcm", "sha256", "curve25519"]` (encryption,
//! integrity or null, DH group), `esp` `["aes256gcm", null]`; `initiate`
//! (default true) makes the peer start IKE. Nothing is installed in the
//! kernel: the peers' SAs live in this process. BGP is not spoken.
//!
//! Runs until SIGINT or SIGTERM (the peers stop like a crash: no DELETE),
//! or with `--until-up` until every tunnel is up (exit 0) or `--timeout`
//! passes (exit 1). Progress goes to stderr once a second; the last line on
//! stdout is a JSON summary.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use s2s_loadgen::{Customer, PeerSpec};
use serde::Deserialize;

#[derive(Parser)]
#[command(
    name = "s2s-loadgen",
    version,
    about = "Customer gateways that load an s2s-gateway host"
)]
struct Cli {
    /// The peers: a JSON array, or one JSON object per line.
    #[arg(long)]
    peers: PathBuf,
    /// Network namespace the peers run in (their addresses are there).
    #[arg(long)]
    netns: Option<String>,
    /// Exit once every tunnel is up (0), or when --timeout passes (1).
    #[arg(long)]
    until_up: bool,
    /// Seconds to wait for every tunnel with --until-up.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

#[derive(Deserialize)]
struct PeerFile {
    name: String,
    local: IpAddr,
    remote: IpAddr,
    psk: Option<String>,
    psk_hex: Option<String>,
    ike: (String, Option<String>, String),
    esp: (String, Option<String>),
    #[serde(default = "yes")]
    initiate: bool,
}

fn yes() -> bool {
    true
}

fn read_peers(path: &PathBuf) -> anyhow::Result<Vec<PeerSpec>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let raw: Vec<PeerFile> = if text.trim_start().starts_with('[') {
        serde_json::from_str(&text).context("the peers file")?
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("peers line {}", i + 1)))
            .collect::<anyhow::Result<_>>()?
    };
    if raw.is_empty() {
        bail!("no peers in {}", path.display());
    }
    let mut names = std::collections::HashSet::new();
    raw.into_iter()
        .map(|p| {
            if !names.insert(p.name.clone()) {
                bail!("peer name {:?} given twice", p.name);
            }
            let psk = match (p.psk, p.psk_hex) {
                (Some(s), None) => s.into_bytes(),
                (None, Some(h)) => {
                    hex::decode(h).with_context(|| format!("psk_hex of {}", p.name))?
                }
                _ => bail!("peer {}: give one of psk and psk_hex", p.name),
            };
            if psk.is_empty() {
                bail!("peer {}: empty PSK", p.name);
            }
            Ok(PeerSpec {
                name: p.name,
                local: p.local,
                remote: p.remote,
                psk,
                ike: p.ike,
                esp: p.esp,
                initiate: p.initiate,
            })
        })
        .collect()
}

fn run(cli: &Cli) -> anyhow::Result<bool> {
    let peers = read_peers(&cli.peers)?;
    let names: Vec<String> = peers.iter().map(|p| p.name.clone()).collect();
    let n = names.len();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the signal handler")?;
    let t0 = Instant::now();
    let customer = Customer::start(cli.netns.as_deref(), peers)?;
    eprintln!("s2s-loadgen: {n} peers started");
    let mut all_up: Option<f64> = None;
    let mut last_print = Instant::now() - Duration::from_secs(1);
    let (mut ike, mut child) = (0, 0);
    while !stop.load(Ordering::SeqCst) {
        (ike, child) = (0, 0);
        for p in &names {
            if let Some(s) = customer.state(p) {
                ike += usize::from(s.ike_up);
                child += usize::from(s.child.is_some());
            }
        }
        if child == n && all_up.is_none() {
            let s = t0.elapsed().as_secs_f64();
            all_up = Some(s);
            eprintln!(
                "s2s-loadgen: all {n} tunnels up in {s:.2} s ({:.0} per second)",
                n as f64 / s
            );
            if cli.until_up {
                break;
            }
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            eprintln!(
                "s2s-loadgen: {child}/{n} tunnels up ({ike} IKE SAs) after {:.0} s",
                t0.elapsed().as_secs_f64()
            );
        }
        if cli.until_up && t0.elapsed() > Duration::from_secs(cli.timeout) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    customer.stop()?;
    println!(
        "{}",
        serde_json::json!({
            "peers": n,
            "ike_up": ike,
            "tunnels_up": child,
            "all_up_s": all_up,
            "ran_s": t0.elapsed().as_secs_f64(),
        })
    );
    Ok(all_up.is_some() || !cli.until_up)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!(
                "s2s-loadgen: not every tunnel came up within {} s",
                cli.timeout
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("s2s-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
