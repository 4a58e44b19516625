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
use gateway_config::{Config, LiveConfig};
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
    /// Capture what the fast path handles, as pcap (IP packets): the ESP
    /// the workers receive and send, and the inner packets they decrypt
    /// and encrypt (tcpdump cannot see those). Asks the running daemon
    /// through the socket in its state directory (root only).
    Capture {
        #[arg(long, default_value = "/etc/s2s-gateway/gateway.toml")]
        config: PathBuf,
        /// One tunnel, named as /metrics labels it (tunnel="..."); default: all.
        #[arg(long)]
        tunnel: Option<String>,
        /// Stop after this many packets.
        #[arg(long, short = 'c')]
        count: Option<u64>,
        /// Stop after this many seconds (default: when interrupted, or at
        /// --count).
        #[arg(long)]
        seconds: Option<u64>,
        /// The pcap file to write ("-": standard output, e.g. into tshark -r -).
        #[arg(long, short = 'w')]
        write: PathBuf,
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
    if let Command::Capture {
        config,
        tunnel,
        count,
        seconds,
        write,
    } = &cli.command
    {
        let req = gateway_user::capture::Request {
            tunnel: tunnel.clone(),
            count: *count,
            seconds: *seconds,
        };
        return capture(config, &req, write);
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
            Command::CheckConfig { .. } | Command::Capture { .. } => {
                unreachable!("handled before the runtime starts")
            }
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

/// `s2s-gateway capture`: the pcap stream of the running daemon into
/// `write`, with a count on standard error.
fn capture(
    config: &std::path::Path,
    req: &gateway_user::capture::Request,
    write: &std::path::Path,
) -> ExitCode {
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("s2s-gateway capture: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out: Box<dyn std::io::Write> = if write == std::path::Path::new("-") {
        Box::new(std::io::stdout().lock())
    } else {
        match std::fs::File::create(write) {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(e) => {
                eprintln!("s2s-gateway capture: {}: {e}", write.display());
                return ExitCode::FAILURE;
            }
        }
    };
    let mut last = std::time::Instant::now();
    let r = gateway_user::capture::fetch(&config.gateway.state_dir, req, out, |n| {
        if last.elapsed() >= std::time::Duration::from_millis(500) {
            eprint!("\r{n} packets");
            last = std::time::Instant::now();
        }
    });
    match r {
        Ok(n) => {
            eprintln!("\r{n} packets captured");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ns2s-gateway capture: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves `s2s-gateway capture` on `<state_dir>/capture.sock` (mode 0600)
/// from a thread of its own, one capture at a time; tunnel names are
/// looked up in what the agent publishes.
fn serve_captures(
    state_dir: &std::path::Path,
    capture: Arc<gateway_user::capture::Capture>,
    snapshot: SharedSnapshot,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = gateway_user::capture::socket_path(state_dir);
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path)
        .with_context(|| format!("binding the capture socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tracing::info!(socket = %path.display(), "serving packet captures");
    std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                // A thread per client: a second one is told that a
                // capture runs instead of waiting.
                let (capture, snapshot, stop) = (capture.clone(), snapshot.clone(), stop.clone());
                let _ = std::thread::Builder::new()
                    .name("capture-client".into())
                    .spawn(move || {
                        let lookup = |name: &str| {
                            snapshot
                                .read()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .tunnels
                                .iter()
                                .find(|t| t.name == name)
                                .map(|t| t.id)
                        };
                        match gateway_user::capture::serve(&capture, stream, lookup, &stop) {
                            Ok(n) => tracing::info!(packets = n, "capture ended"),
                            Err(e) => tracing::warn!(error = %e, "capture refused or ended"),
                        }
                    });
            }
        })?;
    Ok(())
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

/// Reloads the config file on each SIGHUP (see [`reload`]).
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    path: std::path::PathBuf,
    live: LiveConfig,
    store: gateway_api::Store,
    xdp: Option<Arc<Mutex<XdpDataplane>>>,
) {
    while hup.recv().await.is_some() {
        let (path, live, store, xdp) = (path.clone(), live.clone(), store.clone(), xdp.clone());
        // Reads files: off the runtime.
        let _ = tokio::task::spawn_blocking(move || {
            let before = live.get().datapath.drop_events;
            reload(&path, &live, &store);
            let after = live.get().datapath.drop_events;
            if after != before {
                if let Some(dp) = &xdp {
                    set_drop_events(dp, after);
                }
            }
        })
        .await;
    }
}

/// Sets which XDP drops are logged, and says so.
fn set_drop_events(xdp: &Mutex<XdpDataplane>, level: gateway_config::DropEvents) {
    let mut dp = xdp.lock().unwrap_or_else(|p| p.into_inner());
    match dp.set_drop_events(level) {
        Ok(()) => tracing::info!(
            level = level.name(),
            "XDP drop events (datapath.drop_events)"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot set the XDP drop events' level"),
    }
}

/// Takes the config file again: API tokens (and the tokens file),
/// gateway types, public IPs and private networks apply at once (the API
/// per request, the agent from its next pass, which this wakes); tunnels
/// the change does not touch stay up. A file that does not check, or
/// that changes a key that needs a restart, is refused whole and logged.
fn reload(path: &std::path::Path, live: &LiveConfig, store: &gateway_api::Store) {
    let problems = Config::check_file(path);
    if !problems.is_empty() {
        for p in &problems {
            tracing::error!(path = %path.display(), problem = %p, "SIGHUP: configuration problem");
        }
        tracing::error!(path = %path.display(), problems = problems.len(), "SIGHUP: configuration not reloaded (the running one stays; see s2s-gateway check-config)");
        return;
    }
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "SIGHUP: configuration not reloaded");
            return;
        }
    };
    match live.replace(new) {
        Ok(()) => {
            let c = live.get();
            tracing::info!(
                path = %path.display(),
                keys = live.keys().len(),
                gateway_types = c.gateway_types.len(),
                public_ips = c.public_ips.len(),
                private_networks = c.private_networks.len(),
                "SIGHUP: configuration reloaded"
            );
            store.poke();
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "SIGHUP: configuration not reloaded (the running one stays)")
        }
    }
}

/// Each tunnel holds its TUN's descriptor and each gateway address its IKE
/// sockets: systemd's default soft limit (1,024 open files) would stop a
/// host near a thousand tunnels. Raises the soft limit to the hard one,
/// and says so.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-file limit");
        return;
    }
    let before = lim.rlim_cur;
    if before < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot raise the open-file limit");
            return;
        }
        tracing::info!(
            from = before,
            to = lim.rlim_max,
            "open-file limit raised to the hard limit (a descriptor per tunnel)"
        );
    }
    if lim.rlim_max < 65_536 {
        tracing::warn!(limit = lim.rlim_max, "the open-file limit caps the tunnels this host can run (one descriptor each): raise LimitNOFILE");
    }
}

async fn run(path: &std::path::Path, no_xdp: bool) -> anyhow::Result<()> {
    raise_open_files_limit();
    // From here on SIGHUP no longer terminates the process; reloads are
    // handled once everything runs.
    let hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let config = Arc::new(Config::load(path)?);
    let live = LiveConfig::new((*config).clone())?;
    let store = gateway_api::Store::open(&config.gateway.state_dir)?;
    let xdp = if no_xdp {
        tracing::warn!("XDP fast path disabled (--no-xdp)");
        None
    } else {
        let dp = XdpDataplane::load(&config)?;
        tracing::info!("{}", dp.describe().replace('\n', "; "));
        Some(Arc::new(Mutex::new(dp)))
    };
    // The programs' drop events: read from the start, sent at the level
    // the config sets (off by default).
    let _drop_events = match &xdp {
        Some(dp) => {
            let reader = dp
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .start_drop_events();
            if config.datapath.drop_events != gateway_config::DropEvents::Off {
                set_drop_events(dp, config.datapath.drop_events);
            }
            reader
                .inspect_err(|e| tracing::warn!(error = %e, "XDP drop events unavailable"))
                .ok()
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding the API to {}", config.api.listen))?;
    tracing::info!(listen = %config.api.listen, "serving the s2s-vpn API");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(Stop::No);
    let datapath = DataPath::start(&config, xdp.clone())?;
    let dataplane = datapath.dataplane.clone();
    let snapshot = SharedSnapshot::default();
    let capture_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Err(e) = serve_captures(
        &config.gateway.state_dir,
        Arc::clone(&datapath.capture),
        snapshot.clone(),
        Arc::clone(&capture_stop),
    ) {
        tracing::warn!(error = %e, "packet capture unavailable");
    }
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
    let agent_run = Agent::new(live.clone(), store.clone(), xdp.clone()).run(
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
    let api = tokio::spawn(gateway_api::serve_live(
        live.clone(),
        listener,
        store.clone(),
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
    let reloads = tokio::spawn(reload_on_sighup(
        hup,
        path.to_owned(),
        live.clone(),
        store.clone(),
        xdp.clone(),
    ));
    let (sig, stop) = tokio::select! {
        s = terminated() => s?,
        r = api => {
            r.context("API task")??;
            anyhow::bail!("the API server stopped");
        }
    };
    tracing::info!(signal = sig, mode = ?stop, "shutting down");
    reloads.abort();
    sdnotify::notify("STOPPING=1");
    let _ = stop_tx.send(stop);
    let _ = agent.await;
    capture_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = std::fs::remove_file(gateway_user::capture::socket_path(
        &config.gateway.state_dir,
    ));
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
