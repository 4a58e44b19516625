//! The gateway daemon. `run` serves the API, loads the XDP programs and runs
//! the agent; `load` only loads and attaches the XDP programs (what
//! `cargo xtask build-and-load` runs). Both stop cleanly on Ctrl-C or
//! SIGTERM, detaching the programs. SIGTERM and Ctrl-C are a restart for
//! `run`: customers' IKE SAs are not deleted, and the restarted daemon
//! initiates again with INITIAL_CONTACT; SIGUSR2 drains the host first
//! (every IKE SA deleted) for taking it out of service.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{Parser, Subcommand};
use gateway_config::Config;
use gateway_user::agent::{Agent, Stop};
use gateway_user::daemon::DataPath;
use gateway_user::dataplane::xdp::XdpDataplane;
use gateway_user::logging::{self, LogFormat};
use gateway_user::metrics::{self, SharedSnapshot};
use gateway_user::sdnotify;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(
    name = "s2s-gateway",
    version,
    about = "XDP-accelerated site-to-site IPsec VPN gateway"
)]
struct Cli {
    /// Log lines as text, or as one JSON object per line (fields such as
    /// the tunnel and connection ids at the top level). RUST_LOG sets the
    /// level (default info).
    #[arg(long, global = true, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: API, agent and XDP fast path.
    Run {
        #[arg(long, default_value = "/etc/s2s-gateway/gateway.toml")]
        config: PathBuf,
        /// Do not load the XDP programs (slow path only).
        #[arg(long)]
        no_xdp: bool,
    },
    /// Load and attach the XDP programs per the config, pin the maps, and
    /// wait for Ctrl-C or SIGTERM.
    Load {
        #[arg(long, default_value = "/etc/s2s-gateway/gateway.toml")]
        config: PathBuf,
    },
    /// Check a config file without starting anything: every problem, one
    /// per line, each naming its key; exit status 1 if there is any.
    CheckConfig {
        #[arg(long, default_value = "/etc/s2s-gateway/gateway.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(r) =
        gateway_user::docgen::answer(<Cli as clap::CommandFactory>::command(), "8", &args)
    {
        return match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("s2s-gateway: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    logging::init(cli.log_format);
    if let Command::CheckConfig { config } = &cli.command {
        return check_config(config);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("s2s-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run { config, no_xdp } => run(&config, no_xdp).await,
            Command::Load { config } => load(&config).await,
            Command::CheckConfig { .. } => unreachable!("handled before the runtime starts"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, no backtrace.
            eprintln!("s2s-gateway: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping a cause whose text the
/// message before already includes (many errors print their source).
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

fn check_config(path: &std::path::Path) -> ExitCode {
    let problems = Config::check_file(path);
    if problems.is_empty() {
        println!("{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    for p in &problems {
        // The parser's message spans lines (it quotes the offending one).
        let text = p.to_string();
        let mut cause = std::error::Error::source(p);
        let mut line = text.clone();
        while let Some(c) = cause {
            let c_text = c.to_string();
            if !line.contains(&c_text) {
                line = format!("{line}: {c_text}");
            }
            cause = c.source();
        }
        eprintln!("{}: {}", path.display(), line.replace('\n', " "));
    }
    eprintln!("{}: {} problem(s)", path.display(), problems.len());
    ExitCode::FAILURE
}

/// Resolves on the first SIGINT or SIGTERM (a restart) or SIGUSR2 (drain:
/// the host leaves service).
async fn terminated() -> anyhow::Result<(&'static str, Stop)> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut usr2 = signal(SignalKind::user_defined2()).context("installing the SIGUSR2 handler")?;
    Ok(tokio::select! {
        _ = term.recv() => ("SIGTERM", Stop::Restart),
        _ = int.recv() => ("SIGINT", Stop::Restart),
        _ = usr2.recv() => ("SIGUSR2", Stop::Drain),
    })
}

async fn load(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let dp = XdpDataplane::load(&config)?;
    println!("{}", dp.describe());
    println!("attached; Ctrl-C or SIGTERM detaches");
    let (sig, _) = terminated().await?;
    drop(dp);
    println!("{sig}: detached and unpinned");
    Ok(())
}

async fn run(path: &std::path::Path, no_xdp: bool) -> anyhow::Result<()> {
    let config = Arc::new(Config::load(path)?);
    let store = gateway_api::Store::open(&config.gateway.state_dir)?;
    let xdp = if no_xdp {
        tracing::warn!("XDP fast path disabled (--no-xdp)");
        None
    } else {
        let dp = XdpDataplane::load(&config)?;
        tracing::info!("{}", dp.describe().replace('\n', "; "));
        Some(Arc::new(Mutex::new(dp)))
    };
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding the API to {}", config.api.listen))?;
    tracing::info!(listen = %config.api.listen, "serving the s2s-vpn API");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(Stop::No);
    let datapath = DataPath::start(&config, xdp.clone())?;
    let dataplane = datapath.dataplane.clone();
    let snapshot = SharedSnapshot::default();
    if let Some(addr) = config.api.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics endpoint to {addr}"))?;
        tracing::info!(listen = %addr, "serving /metrics");
        let (snapshot, dataplane, xdp) = (snapshot.clone(), dataplane.clone(), xdp.clone());
        let ready = snapshot.clone();
        let app = axum::Router::new()
            // The process serves.
            .route("/healthz", axum::routing::get(|| async { "ok\n" }))
            // Ready for traffic: the store opened, the data path started and
            // the XDP programs attached (all before this listener exists),
            // and the agent's last pass configured everything planned.
            .route(
                "/readyz",
                axum::routing::get(move || {
                    let converged = ready.read().map(|s| s.converged).unwrap_or(false);
                    async move {
                        if converged {
                            (axum::http::StatusCode::OK, "ready\n")
                        } else {
                            (
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                "not ready: the agent has not configured every planned tunnel and BGP session yet\n",
                            )
                        }
                    }
                }),
            )
            .route(
            "/metrics",
            axum::routing::get(move || {
                let (snapshot, dataplane, xdp) = (snapshot.clone(), dataplane.clone(), xdp.clone());
                async move {
                    let text = tokio::task::spawn_blocking(move || {
                        let snap = snapshot.read().unwrap_or_else(|p| p.into_inner()).clone();
                        let mut text = metrics::render(&snap, dataplane.as_ref(), xdp.as_deref());
                        text.push_str(&metrics::render_packet_sizes(&snap, &dataplane));
                        text
                    })
                    .await
                    .unwrap_or_default();
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        text,
                    )
                }
            }),
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
    }
    let agent_alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let alive = agent_alive.clone();
    let agent_run = Agent::new(config.clone(), store.clone(), xdp.clone()).run(
        datapath.handle(),
        snapshot,
        stop_rx.clone(),
    );
    let agent = tokio::spawn(async move {
        agent_run.await;
        // A dead agent starves the watchdog: systemd restarts us.
        alive.store(false, std::sync::atomic::Ordering::Relaxed);
    });
    let mut api_stop = stop_rx;
    let api = tokio::spawn(gateway_api::serve_with_shutdown(
        (*config).clone(),
        listener,
        store,
        async move {
            let _ = api_stop.wait_for(|s| *s != Stop::No).await;
        },
    ));
    // systemd (Type=notify): the API serves, the data path and the agent
    // run. The watchdog is fed while the agent task lives.
    if sdnotify::notify("READY=1\nSTATUS=serving the API; agent running") {
        tracing::info!("told systemd we are ready");
    }
    if let Some(every) = sdnotify::watchdog_interval() {
        tracing::info!(every = ?every, "feeding systemd's watchdog");
        let alive = agent_alive.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if alive.load(std::sync::atomic::Ordering::Relaxed) {
                    sdnotify::notify("WATCHDOG=1");
                }
            }
        });
    }
    let (sig, stop) = tokio::select! {
        s = terminated() => s?,
        r = api => {
            r.context("API task")??;
            anyhow::bail!("the API server stopped");
        }
    };
    tracing::info!(signal = sig, mode = ?stop, "shutting down");
    sdnotify::notify("STOPPING=1");
    let _ = stop_tx.send(stop);
    let _ = agent.await;
    datapath.shutdown();
    if stop == Stop::Restart {
        // The programs stay attached for the next start to replace in
        // place; with the workers' sockets gone they pass what they would
        // steer to the kernel, which drops it into the kept TUNs.
        if let Some(x) = &xdp {
            x.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .keep_attached();
        }
    }
    drop(xdp);
    Ok(())
}
