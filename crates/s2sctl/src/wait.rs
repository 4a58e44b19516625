//! `--wait`: polling a resource until it settles, with progress lines.

use super::*;

/// What `--wait` waits for after a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Settle {
    /// The VPN gateway active (`None`: its id is in the response).
    GatewayActive(Option<String>),
    GatewayGone(String),
    /// The connection active (`None`: its id is in the response).
    ConnectionActive(Option<String>),
    ConnectionGone(String),
}

impl Settle {
    /// What `--wait` means for `cmd`, or `None` for a command that does not
    /// change a status.
    pub(super) fn of(cmd: &Cmd) -> Option<Self> {
        use Settle::*;
        match cmd {
            Cmd::VpnGateway { cmd } => match cmd {
                VgwCmd::Create { .. } => Some(GatewayActive(None)),
                VgwCmd::Update { id, .. } => Some(GatewayActive(Some(id.clone()))),
                VgwCmd::Delete { id } => Some(GatewayGone(id.clone())),
                VgwCmd::List { .. } | VgwCmd::Get { .. } => None,
            },
            Cmd::Connection { cmd } => match cmd {
                ConnCmd::Create { .. } => Some(ConnectionActive(None)),
                ConnCmd::Delete { id } => Some(ConnectionGone(id.clone())),
                ConnCmd::Update { id, .. }
                | ConnCmd::RenewPsk { id, .. }
                | ConnCmd::ChangePsk { id, .. }
                | ConnCmd::SetRoutingPolicy { id, .. }
                | ConnCmd::DetachRoutingPolicy { id, .. }
                | ConnCmd::EnableRoutePropagation { id }
                | ConnCmd::DisableRoutePropagation { id } => {
                    Some(ConnectionActive(Some(id.clone())))
                }
                ConnCmd::List { .. }
                | ConnCmd::Get { .. }
                | ConnCmd::Events { .. }
                | ConnCmd::DeviceConfig { .. }
                | ConnCmd::GetPsk { .. } => None,
            },
            Cmd::GatewayType { .. }
            | Cmd::CustomerGateway { .. }
            | Cmd::RoutingPolicy { .. }
            | Cmd::Secret { .. } => None,
        }
    }
}

/// One line of what a resource's statuses are now.
pub(super) fn status_line(v: &Value) -> String {
    let mut parts = vec![cell(&v["status"])];
    for k in [
        "tunnel_status_ipv4",
        "tunnel_status_ipv6",
        "bgp_status_ipv4",
        "bgp_status_ipv6",
    ] {
        if let Some(s) = v.get(k).filter(|s| !s.is_null()) {
            parts.push(format!("{k}={}", cell(s)));
        }
    }
    parts.join(" ")
}

/// Polls until `settle` holds (once a second), printing a progress line to
/// `progress` whenever the statuses change; returns the settled resource
/// (`Null` for one that is gone).
pub(super) fn wait_settled(
    c: &Client,
    settle: &Settle,
    created: &Value,
    timeout: std::time::Duration,
    progress: &mut dyn Write,
) -> Result<Value, CliError> {
    let id = |known: &Option<String>| -> Result<String, CliError> {
        known
            .clone()
            .or_else(|| {
                created["id"]
                    .as_str()
                    .or_else(|| created["connection"]["id"].as_str())
                    .map(str::to_owned)
            })
            .ok_or_else(|| CliError::Argument("--wait: the response names no id".into()))
    };
    let (kind, path, id, want_gone) = match settle {
        Settle::GatewayActive(known) => ("VPN gateway", "vpn-gateways", id(known)?, false),
        Settle::GatewayGone(known) => ("VPN gateway", "vpn-gateways", known.clone(), true),
        Settle::ConnectionActive(known) => ("connection", "connections", id(known)?, false),
        Settle::ConnectionGone(known) => ("connection", "connections", known.clone(), true),
    };
    let what = format!("{kind} {id}");
    let start = std::time::Instant::now();
    let mut last = String::new();
    loop {
        let now = match c.call("GET", &c.s2s(&format!("{path}/{id}")), &Query::new(), None) {
            Ok(v) => Some(v),
            Err(CliError::Api { status: 404, .. }) => None,
            Err(e) => return Err(e),
        };
        let line = now.as_ref().map_or_else(|| "gone".to_owned(), status_line);
        if line != last {
            writeln!(progress, "{what}: {line} ({} s)", start.elapsed().as_secs())?;
            progress.flush()?;
            last = line;
        }
        match &now {
            None if want_gone => return Ok(Value::Null),
            None => {
                return Err(CliError::Failed {
                    what,
                    last: "deleted while waiting".into(),
                })
            }
            Some(v) if !want_gone => match v["status"].as_str() {
                Some("active") => return Ok(v.clone()),
                Some("failed") | Some("locked") => return Err(CliError::Failed { what, last }),
                _ => {}
            },
            Some(_) => {}
        }
        if start.elapsed() >= timeout {
            return Err(CliError::Timeout {
                what,
                secs: timeout.as_secs(),
                last,
            });
        }
        std::thread::sleep(WAIT_POLL.min(timeout.saturating_sub(start.elapsed())));
    }
}

/// How often `--wait` asks.
pub(super) const WAIT_POLL: std::time::Duration = std::time::Duration::from_secs(1);
