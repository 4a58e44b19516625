//! Standalone API server: the resource API on `config.api.listen` without
//! the data plane. With `--simulate-agent` it plays the agent's part for
//! VPN gateway lifecycles (provisioning → active, deprovisioning → gone),
//! so API clients that wait on statuses work without one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use gateway_api::Store;

#[derive(Parser)]
#[command(
    name = "s2s-apiserver",
    about = "Scaleway s2s-vpn v1alpha1 compatible resource API"
)]
struct Args {
    /// Path of the daemon's TOML config.
    #[arg(long)]
    config: PathBuf,
    /// Override `api.listen` (e.g. 127.0.0.1:0 is not useful: give a port).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Drive VPN gateway statuses like the agent would.
    #[arg(long)]
    simulate_agent: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = match gateway_config::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("s2s-apiserver: {e}");
            return ExitCode::FAILURE;
        }
    };
    let store = match Store::open(&config.gateway.state_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("s2s-apiserver: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = args.listen.unwrap_or(config.api.listen);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("s2s-apiserver: binding {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.simulate_agent {
        let store = store.clone();
        let config = std::sync::Arc::new(config.clone());
        let mut rx = store.subscribe();
        tokio::spawn(async move {
            loop {
                let (s, c) = (store.clone(), config.clone());
                let _ =
                    tokio::task::spawn_blocking(move || gateway_api::simulate_agent(&s, &c)).await;
                if rx.changed().await.is_err() {
                    break;
                }
            }
        });
    }
    tracing::info!(%addr, "serving the s2s-vpn API");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match gateway_api::serve_with_shutdown(config, listener, store, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("s2s-apiserver: {e}");
            ExitCode::FAILURE
        }
    }
}
