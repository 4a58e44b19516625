//! `s2sctl`: a command-line client of the resource API, one subcommand per
//! endpoint, human-readable tables by default, `-o json` and `-o yaml` for
//! scripts, and `--wait` for the changes that the agent carries out.
//!
//! It speaks plain HTTP through `ureq` (no TLS stack: the API listens on a
//! local or management address). [`run`] is the testable core: arguments
//! in, output written to a `Write`; [`main`] wires it to the process.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use base64::Engine as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};

use crate::model::{DhGroup, Encryption, Integrity};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(#[from] clap::Error),
    #[error("API error (HTTP {status}): {message}")]
    Api {
        status: u16,
        message: String,
        body: Value,
    },
    #[error("cannot reach the API at {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("invalid argument: {0}")]
    Argument(String),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    #[error("{what} did not settle within {secs} s: {last}")]
    Timeout {
        what: String,
        secs: u64,
        last: String,
    },
    #[error("{what} failed: {last}")]
    Failed { what: String, last: String },
}

#[derive(Parser, Debug)]
#[command(
    name = "s2sctl",
    about = "Manage the site-to-site VPN gateway (Scaleway s2s-vpn v1alpha1 API)"
)]
struct Cli {
    /// Base URL of the API.
    #[arg(
        long,
        env = "S2S_API_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    api_url: String,
    /// Secret key sent as X-Auth-Token.
    #[arg(long, env = "S2S_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[arg(long, env = "S2S_REGION", default_value = "fr-par", global = true)]
    region: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table", global = true)]
    output: Output,
    /// After a create, update or delete of a VPN gateway or a connection,
    /// wait until it settles: a VPN gateway active (or gone), a connection
    /// active (or gone). A progress line goes to standard error at each
    /// status change; the resource as it settled is printed.
    #[arg(long, global = true)]
    wait: bool,
    /// How long `--wait` waits, in seconds, before failing.
    #[arg(long, default_value_t = 300, global = true, value_name = "SECONDS")]
    wait_timeout: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// VPN gateway types offered by this host.
    #[command(name = "gateway-type")]
    GatewayType {
        #[command(subcommand)]
        cmd: TypeCmd,
    },
    #[command(name = "vpn-gateway")]
    VpnGateway {
        #[command(subcommand)]
        cmd: VgwCmd,
    },
    #[command(name = "customer-gateway")]
    CustomerGateway {
        #[command(subcommand)]
        cmd: CgwCmd,
    },
    #[command(name = "routing-policy")]
    RoutingPolicy {
        #[command(subcommand)]
        cmd: RpCmd,
    },
    Connection {
        #[command(subcommand)]
        cmd: ConnCmd,
    },
    /// Secret Manager: the secrets holding PSKs.
    Secret {
        #[command(subcommand)]
        cmd: SecretCmd,
    },
}

#[derive(Subcommand, Debug)]
enum SecretCmd {
    /// Create an (empty) secret, to hold your own PSK for change-psk.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    Get {
        id: String,
    },
    /// Add a revision whose data is read from standard input (trailing
    /// newline removed), so the key never appears on a command line.
    AddVersion {
        id: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// Print a revision's data (number, latest or latest_enabled).
    Access {
        id: String,
        #[arg(long, default_value = "latest")]
        revision: String,
    },
}

#[derive(Subcommand, Debug)]
enum TypeCmd {
    List(Page),
}

#[derive(Args, Debug, Default)]
struct Page {
    #[arg(long)]
    page: Option<u32>,
    #[arg(long)]
    page_size: Option<u32>,
}

#[derive(Args, Debug, Default)]
struct Common {
    #[command(flatten)]
    page: Page,
    #[arg(long)]
    order_by: Option<String>,
    /// Name substring.
    #[arg(long)]
    name: Option<String>,
    /// Resources having all these tags.
    #[arg(long = "tag")]
    tags: Vec<String>,
    #[arg(long)]
    project_id: Option<String>,
}

#[derive(Subcommand, Debug)]
enum VgwCmd {
    List {
        #[command(flatten)]
        common: Common,
        #[arg(long = "status")]
        statuses: Vec<String>,
        #[arg(long = "gateway-type")]
        gateway_types: Vec<String>,
        #[arg(long = "private-network-id")]
        private_network_ids: Vec<String>,
    },
    Get {
        id: String,
    },
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        gateway_type: String,
        #[arg(long)]
        private_network_id: String,
        /// Public IP (IPAM) id of the IPv4 /32.
        #[arg(long)]
        ipam_ipv4_id: Option<String>,
        /// Public IP (IPAM) id of the IPv6 /128.
        #[arg(long)]
        ipam_ipv6_id: Option<String>,
        #[arg(long)]
        zone: Option<String>,
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long)]
        project_id: Option<String>,
    },
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// Replaces the tags (give --tag "" ... to clear is not supported: use --clear-tags).
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long)]
        clear_tags: bool,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum CgwCmd {
    List {
        #[command(flatten)]
        common: Common,
    },
    Get {
        id: String,
    },
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        asn: i64,
        #[arg(long)]
        ipv4: Option<String>,
        #[arg(long)]
        ipv6: Option<String>,
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long)]
        project_id: Option<String>,
    },
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        asn: Option<i64>,
        #[arg(long)]
        ipv4: Option<String>,
        #[arg(long)]
        ipv6: Option<String>,
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long)]
        clear_tags: bool,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum RpCmd {
    List {
        #[command(flatten)]
        common: Common,
        /// Only IPv6 (true) or IPv4 (false) policies.
        #[arg(long)]
        ipv6: Option<bool>,
    },
    Get {
        id: String,
    },
    Create {
        #[arg(long)]
        name: String,
        /// An IPv6 policy (default IPv4).
        #[arg(long)]
        ipv6: bool,
        /// Prefix accepted from the peer (repeatable).
        #[arg(long = "in")]
        prefix_in: Vec<String>,
        /// Prefix announced to the peer (repeatable).
        #[arg(long = "out")]
        prefix_out: Vec<String>,
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long)]
        project_id: Option<String>,
    },
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "in")]
        prefix_in: Vec<String>,
        #[arg(long = "out")]
        prefix_out: Vec<String>,
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum ConnCmd {
    List {
        #[command(flatten)]
        common: Common,
        #[arg(long = "status")]
        statuses: Vec<String>,
        #[arg(long)]
        is_ipv6: Option<bool>,
        #[arg(long)]
        route_propagation_enabled: Option<bool>,
        #[arg(long = "routing-policy-id")]
        routing_policy_ids: Vec<String>,
        #[arg(long = "vpn-gateway-id")]
        vpn_gateway_ids: Vec<String>,
        #[arg(long = "customer-gateway-id")]
        customer_gateway_ids: Vec<String>,
    },
    Get {
        id: String,
    },
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        vpn_gateway_id: String,
        #[arg(long)]
        customer_gateway_id: String,
        /// vpn_gateway or customer_gateway.
        #[arg(long, default_value = "vpn_gateway")]
        initiation_policy: String,
        /// The primary tunnel is IPv6.
        #[arg(long)]
        ipv6: bool,
        /// IKEv2 proposal, e.g. aes256gcm-ecp256 or aes256-sha256-modp2048 (repeatable).
        #[arg(long = "ike", required = true)]
        ike: Vec<String>,
        /// ESP proposal, e.g. aes256gcm or aes128-sha256-curve25519 (repeatable).
        #[arg(long = "esp", required = true)]
        esp: Vec<String>,
        #[arg(long)]
        route_propagation: bool,
        #[arg(long)]
        routing_policy_v4: Option<String>,
        #[arg(long)]
        routing_policy_v6: Option<String>,
        /// IPv4 interconnection: OURS,PEER (e.g. 169.254.0.1/30,169.254.0.2/30).
        #[arg(long)]
        bgp_v4: Option<String>,
        /// IPv6 interconnection: OURS,PEER.
        #[arg(long)]
        bgp_v6: Option<String>,
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long)]
        project_id: Option<String>,
    },
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        initiation_policy: Option<String>,
        #[arg(long = "ike")]
        ike: Vec<String>,
        #[arg(long = "esp")]
        esp: Vec<String>,
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    Delete {
        id: String,
    },
    /// New PSK (new secret revision).
    RenewPsk {
        id: String,
        /// Always generate a new revision (else move to the latest one if newer).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        generate_revision: bool,
    },
    /// Point the connection at another secret id / revision.
    ChangePsk {
        id: String,
        #[arg(long)]
        secret_id: String,
        #[arg(long)]
        revision: Option<u32>,
    },
    SetRoutingPolicy {
        id: String,
        #[arg(long, conflicts_with = "v6", required_unless_present = "v6")]
        v4: Option<String>,
        #[arg(long)]
        v6: Option<String>,
    },
    DetachRoutingPolicy {
        id: String,
        #[arg(long, conflicts_with = "v6", required_unless_present = "v6")]
        v4: Option<String>,
        #[arg(long)]
        v6: Option<String>,
    },
    EnableRoutePropagation {
        id: String,
    },
    DisableRoutePropagation {
        id: String,
    },
    /// What happened to the connection's tunnels and BGP sessions (IKE and
    /// CHILD SAs up, rekeyed, down and why; BGP up and down), oldest first;
    /// the first thing to read when a tunnel does not come up.
    Events {
        id: String,
        /// Keep printing new events as they come (until interrupted).
        #[arg(long)]
        follow: bool,
        /// Only events after this seq.
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// Configuration for the customer gateway device (holds the PSK).
    DeviceConfig {
        id: String,
        /// strongswan (swanctl.conf), bird (BIRD 2) or frr.
        #[arg(long)]
        vendor: String,
    },
    /// Print the connection's PSK (from the Secret Manager access call).
    GetPsk {
        id: String,
        /// A revision other than the connection's current one.
        #[arg(long)]
        revision: Option<u32>,
    },
}

struct Client {
    base: String,
    token: String,
    region: String,
    agent: ureq::Agent,
}

type Query = Vec<(&'static str, String)>;

impl Client {
    fn call(
        &self,
        method: &str,
        path: &str,
        query: &Query,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let (url, text) = self.send(method, path, query, body, "application/json")?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| CliError::Transport {
            url,
            reason: format!("response is not JSON: {e}"),
        })
    }

    /// One request; the raw body of a success (empty for 204), Scaleway's
    /// error body turned into [`CliError::Api`] otherwise.
    fn send(
        &self,
        method: &str,
        path: &str,
        query: &Query,
        body: Option<Value>,
        accept: &str,
    ) -> Result<(String, String), CliError> {
        let url = format!("{}{}", self.base.trim_end_matches('/'), path);
        let mut req = self
            .agent
            .request(method, &url)
            .set("X-Auth-Token", &self.token)
            .set("Accept", accept);
        for (k, v) in query {
            req = req.query(k, v);
        }
        let resp = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match resp {
            Ok(r) => {
                if r.status() == 204 {
                    return Ok((url, String::new()));
                }
                let text = r.into_string().map_err(CliError::Output)?;
                Ok((url, text))
            }
            Err(ureq::Error::Status(status, r)) => {
                let body: Value = r.into_json().unwrap_or(Value::Null);
                let message = body
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
                    .to_owned();
                Err(CliError::Api {
                    status,
                    message,
                    body,
                })
            }
            Err(e) => Err(CliError::Transport {
                url,
                reason: e.to_string(),
            }),
        }
    }

    fn s2s(&self, rest: &str) -> String {
        format!("/s2s-vpn/v1alpha1/regions/{}/{rest}", self.region)
    }
}

fn push_opt<T: ToString>(q: &mut Query, k: &'static str, v: &Option<T>) {
    if let Some(v) = v {
        q.push((k, v.to_string()));
    }
}

fn push_all(q: &mut Query, k: &'static str, v: &[String]) {
    q.extend(v.iter().map(|x| (k, x.clone())));
}

fn page_query(p: &Page) -> Query {
    let mut q = Query::new();
    push_opt(&mut q, "page", &p.page);
    push_opt(&mut q, "page_size", &p.page_size);
    q
}

fn common_query(c: &Common) -> Query {
    let mut q = page_query(&c.page);
    push_opt(&mut q, "order_by", &c.order_by);
    push_opt(&mut q, "name", &c.name);
    push_opt(&mut q, "project_id", &c.project_id);
    push_all(&mut q, "tags", &c.tags);
    q
}

/// Parses `aes256-sha256-modp2048` / `aes256gcm-ecp256` into a cipher.
pub fn parse_cipher(s: &str) -> Result<Value, CliError> {
    let mut out = Map::new();
    for part in s.split(['-', '/', '+']).filter(|p| !p.is_empty()) {
        let (key, ok) = if Encryption::parse(part).is_some() {
            ("encryption", true)
        } else if Integrity::parse(part).is_some() {
            ("integrity", true)
        } else if DhGroup::parse(part).is_some() {
            ("dh_group", true)
        } else {
            ("", false)
        };
        if !ok {
            return Err(CliError::Argument(format!(
                "{part:?} in cipher {s:?} is not an encryption, integrity or DH group name"
            )));
        }
        if out
            .insert(key.to_owned(), Value::String(part.to_owned()))
            .is_some()
        {
            return Err(CliError::Argument(format!("cipher {s:?} names two {key}s")));
        }
    }
    if !out.contains_key("encryption") {
        return Err(CliError::Argument(format!(
            "cipher {s:?} has no encryption"
        )));
    }
    Ok(Value::Object(out))
}

fn ciphers(list: &[String]) -> Result<Vec<Value>, CliError> {
    list.iter().map(|s| parse_cipher(s)).collect()
}

fn bgp_config(
    policy: &Option<String>,
    interco: &Option<String>,
    flag: &str,
) -> Result<Option<Value>, CliError> {
    match (policy, interco) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(CliError::Argument(format!(
            "--bgp-{flag} needs --routing-policy-{flag}"
        ))),
        (Some(p), None) => Ok(Some(json!({"routing_policy_id": p}))),
        (Some(p), Some(i)) => {
            let (a, b) = i.split_once(',').ok_or_else(|| {
                CliError::Argument(format!(
                    "--bgp-{flag} is OURS,PEER (e.g. 169.254.0.1/30,169.254.0.2/30)"
                ))
            })?;
            Ok(Some(
                json!({"routing_policy_id": p, "private_ip": a, "peer_private_ip": b}),
            ))
        }
    }
}

fn name_tags(name: &Option<String>, tags: &[String], clear: bool) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(n) = name {
        m.insert("name".into(), json!(n));
    }
    if !tags.is_empty() || clear {
        m.insert("tags".into(), json!(tags));
    }
    m
}

/// What to print for a response.
enum Shape {
    /// A list under this key, with these columns.
    List(&'static str, &'static [&'static str]),
    /// One object, possibly under a key (`connection` of create).
    One(Option<&'static str>),
    Nothing(&'static str),
    Psk,
    /// A text document printed as it is (device configs).
    Text,
    /// A connection's events, one per line.
    Events,
}

const VGW_COLS: &[&str] = &[
    "id",
    "name",
    "status",
    "gateway_type",
    "private_network_id",
    "public_config",
    "tags",
];
const CGW_COLS: &[&str] = &[
    "id",
    "name",
    "asn",
    "public_ipv4",
    "public_ipv6",
    "connection_ids",
    "tags",
];
const RP_COLS: &[&str] = &[
    "id",
    "name",
    "is_ipv6",
    "prefix_filter_in",
    "prefix_filter_out",
    "tags",
];
const CONN_COLS: &[&str] = &[
    "id",
    "name",
    "status",
    "is_ipv6",
    "tunnel_status",
    "bgp_status_ipv4",
    "bgp_status_ipv6",
    "route_propagation_enabled",
    "secret_revision",
];
const TYPE_COLS: &[&str] = &["name", "bandwidth", "allowed_connections", "zones"];

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(o) => o
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

fn table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.chars().count());
            }
        }
    }
    let line = |out: &mut dyn Write, cells: Vec<String>| -> std::io::Result<()> {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w.get(i).copied().unwrap_or(0)))
            .collect();
        writeln!(out, "{}", s.join("  ").trim_end())
    };
    line(out, header.iter().map(|h| h.to_uppercase()).collect())?;
    for r in rows {
        line(out, r.clone())?;
    }
    Ok(())
}

fn print(out: &mut dyn Write, format: Output, shape: Shape, v: &Value) -> Result<(), CliError> {
    match shape {
        Shape::Psk => {
            // The operator asked for the key: print it, nothing else.
            writeln!(out, "{}", v.as_str().unwrap_or_default())?;
            return Ok(());
        }
        Shape::Text => {
            write!(out, "{}", v.as_str().unwrap_or_default())?;
            return Ok(());
        }
        Shape::Events => {
            print_events(out, format, v)?;
            return Ok(());
        }
        _ => {}
    }
    if format != Output::Table {
        let deleted;
        let v = match shape {
            Shape::Nothing(what) => {
                deleted = json!({ "deleted": what });
                &deleted
            }
            _ => v,
        };
        match format {
            Output::Yaml => write!(out, "{}", to_yaml(v))?,
            _ if matches!(shape, Shape::Nothing(_)) => writeln!(out, "{v}")?,
            _ => writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(v).unwrap_or_default()
            )?,
        }
        return Ok(());
    }
    match shape {
        Shape::List(key, cols) => {
            let items = v
                .get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|it| cols.iter().map(|c| cell(&it[*c])).collect())
                .collect();
            table(out, cols, &rows)?;
            writeln!(out, "total_count: {}", cell(&v["total_count"]))?;
        }
        Shape::One(key) => {
            let obj = key.map(|k| &v[k]).unwrap_or(v);
            let rows: Vec<Vec<String>> = obj
                .as_object()
                .map(|o| o.iter().map(|(k, v)| vec![k.clone(), cell(v)]).collect())
                .unwrap_or_default();
            table(out, &["field", "value"], &rows)?;
        }
        Shape::Nothing(what) => writeln!(out, "deleted {what}")?,
        Shape::Psk | Shape::Text | Shape::Events => {}
    }
    Ok(())
}

/// `v` as a YAML document (block style, keys in the API's order).
fn to_yaml(v: &Value) -> String {
    serde_norway::to_string(v).unwrap_or_default()
}

/// What `--wait` waits for after a command.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Settle {
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
    fn of(cmd: &Cmd) -> Option<Self> {
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
fn status_line(v: &Value) -> String {
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
fn wait_settled(
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
const WAIT_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs `s2sctl` with `args` (including the program name), writing the
/// result to `out`; standard input is only read by `secret add-version`.
pub fn run<I, T>(args: I, out: &mut dyn Write) -> Result<(), CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run_with_input(args, &mut std::io::stdin(), out)
}

/// [`run`] with an explicit standard input.
pub fn run_with_input<I, T>(
    args: I,
    stdin: &mut dyn std::io::Read,
    out: &mut dyn Write,
) -> Result<(), CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run_with_io(args, stdin, out, &mut std::io::stderr())
}

/// [`run_with_input`] with an explicit destination for `--wait`'s progress
/// lines (standard error otherwise).
pub fn run_with_io<I, T>(
    args: I,
    stdin: &mut dyn std::io::Read,
    out: &mut dyn Write,
    progress: &mut dyn Write,
) -> Result<(), CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    let settle = if cli.wait {
        Some(Settle::of(&cli.cmd).ok_or_else(|| {
            CliError::Argument(
                "--wait applies to create, update and delete of a vpn-gateway or a connection"
                    .into(),
            )
        })?)
    } else {
        None
    };
    let token = cli
        .token
        .clone()
        .ok_or_else(|| CliError::Argument("no API token: pass --token or set S2S_TOKEN".into()))?;
    let c = Client {
        base: cli.api_url.clone(),
        token,
        region: cli.region.clone(),
        agent: ureq::AgentBuilder::new()
            .timeout(std::time::Duration::from_secs(30))
            .build(),
    };
    let none = Query::new();
    let (v, shape) = match cli.cmd {
        Cmd::GatewayType { cmd: TypeCmd::List(p) } => (
            c.call("GET", &c.s2s("vpn-gateway-types"), &page_query(&p), None)?,
            Shape::List("gateway_types", TYPE_COLS),
        ),
        Cmd::VpnGateway { cmd } => match cmd {
            VgwCmd::List {
                common,
                statuses,
                gateway_types,
                private_network_ids,
            } => {
                let mut q = common_query(&common);
                push_all(&mut q, "statuses", &statuses);
                push_all(&mut q, "gateway_types", &gateway_types);
                push_all(&mut q, "private_network_ids", &private_network_ids);
                (c.call("GET", &c.s2s("vpn-gateways"), &q, None)?, Shape::List("gateways", VGW_COLS))
            }
            VgwCmd::Get { id } => (
                c.call("GET", &c.s2s(&format!("vpn-gateways/{id}")), &none, None)?,
                Shape::One(None),
            ),
            VgwCmd::Create {
                name,
                gateway_type,
                private_network_id,
                ipam_ipv4_id,
                ipam_ipv6_id,
                zone,
                tags,
                project_id,
            } => {
                let mut b = json!({
                    "name": name, "gateway_type": gateway_type,
                    "private_network_id": private_network_id, "tags": tags,
                    "project_id": project_id, "zone": zone,
                });
                if ipam_ipv4_id.is_some() || ipam_ipv6_id.is_some() {
                    b["public_config"] = json!({"ipam_ipv4_id": ipam_ipv4_id, "ipam_ipv6_id": ipam_ipv6_id});
                }
                (c.call("POST", &c.s2s("vpn-gateways"), &none, Some(b))?, Shape::One(None))
            }
            VgwCmd::Update {
                id,
                name,
                tags,
                clear_tags,
            } => (
                c.call(
                    "PATCH",
                    &c.s2s(&format!("vpn-gateways/{id}")),
                    &none,
                    Some(Value::Object(name_tags(&name, &tags, clear_tags))),
                )?,
                Shape::One(None),
            ),
            VgwCmd::Delete { id } => (
                c.call("DELETE", &c.s2s(&format!("vpn-gateways/{id}")), &none, None)?,
                Shape::One(None),
            ),
        },
        Cmd::CustomerGateway { cmd } => match cmd {
            CgwCmd::List { common } => (
                c.call("GET", &c.s2s("customer-gateways"), &common_query(&common), None)?,
                Shape::List("gateways", CGW_COLS),
            ),
            CgwCmd::Get { id } => (
                c.call("GET", &c.s2s(&format!("customer-gateways/{id}")), &none, None)?,
                Shape::One(None),
            ),
            CgwCmd::Create {
                name,
                asn,
                ipv4,
                ipv6,
                tags,
                project_id,
            } => (
                c.call(
                    "POST",
                    &c.s2s("customer-gateways"),
                    &none,
                    Some(json!({"name": name, "asn": asn, "ipv4_public": ipv4, "ipv6_public": ipv6,
                                "tags": tags, "project_id": project_id})),
                )?,
                Shape::One(None),
            ),
            CgwCmd::Update {
                id,
                name,
                asn,
                ipv4,
                ipv6,
                tags,
                clear_tags,
            } => {
                let mut b = name_tags(&name, &tags, clear_tags);
                if let Some(a) = asn {
                    b.insert("asn".into(), json!(a));
                }
                if let Some(a) = ipv4 {
                    b.insert("ipv4_public".into(), json!(a));
                }
                if let Some(a) = ipv6 {
                    b.insert("ipv6_public".into(), json!(a));
                }
                (
                    c.call("PATCH", &c.s2s(&format!("customer-gateways/{id}")), &none, Some(Value::Object(b)))?,
                    Shape::One(None),
                )
            }
            CgwCmd::Delete { id } => {
                c.call("DELETE", &c.s2s(&format!("customer-gateways/{id}")), &none, None)?;
                (Value::Null, Shape::Nothing("customer gateway"))
            }
        },
        Cmd::RoutingPolicy { cmd } => match cmd {
            RpCmd::List { common, ipv6 } => {
                let mut q = common_query(&common);
                push_opt(&mut q, "ipv6", &ipv6);
                (c.call("GET", &c.s2s("routing-policies"), &q, None)?, Shape::List("routing_policies", RP_COLS))
            }
            RpCmd::Get { id } => (
                c.call("GET", &c.s2s(&format!("routing-policies/{id}")), &none, None)?,
                Shape::One(None),
            ),
            RpCmd::Create {
                name,
                ipv6,
                prefix_in,
                prefix_out,
                tags,
                project_id,
            } => (
                c.call(
                    "POST",
                    &c.s2s("routing-policies"),
                    &none,
                    Some(json!({"name": name, "is_ipv6": ipv6, "prefix_filter_in": prefix_in,
                                "prefix_filter_out": prefix_out, "tags": tags, "project_id": project_id})),
                )?,
                Shape::One(None),
            ),
            RpCmd::Update {
                id,
                name,
                prefix_in,
                prefix_out,
                tags,
            } => {
                let mut b = name_tags(&name, &tags, false);
                if !prefix_in.is_empty() {
                    b.insert("prefix_filter_in".into(), json!(prefix_in));
                }
                if !prefix_out.is_empty() {
                    b.insert("prefix_filter_out".into(), json!(prefix_out));
                }
                (
                    c.call("PATCH", &c.s2s(&format!("routing-policies/{id}")), &none, Some(Value::Object(b)))?,
                    Shape::One(None),
                )
            }
            RpCmd::Delete { id } => {
                c.call("DELETE", &c.s2s(&format!("routing-policies/{id}")), &none, None)?;
                (Value::Null, Shape::Nothing("routing policy"))
            }
        },
        Cmd::Connection {
            cmd:
                ConnCmd::Events {
                    id,
                    follow: true,
                    after,
                },
        } => return follow_events(&c, &id, after, cli.output, out),
        Cmd::Connection { cmd } => connection(&c, cmd)?,
        Cmd::Secret { cmd } => secret(&c, cmd, stdin)?,
    };
    if let Some(settle) = settle {
        let timeout = std::time::Duration::from_secs(cli.wait_timeout);
        let settled = wait_settled(&c, &settle, &v, timeout, progress)?;
        if !settled.is_null() {
            return print(out, cli.output, Shape::One(None), &settled);
        }
    }
    print(out, cli.output, shape, &v)
}

/// One page (1000) of a connection's events after `after`.
fn fetch_events(c: &Client, id: &str, after: i64) -> Result<Value, CliError> {
    c.call(
        "GET",
        &c.s2s(&format!("connections/{id}/events")),
        &vec![("after", after.to_string()), ("limit", "1000".into())],
        None,
    )
}

/// One line per event, or one JSON object per line with `-o json`.
fn print_events(out: &mut dyn Write, format: Output, v: &Value) -> Result<usize, CliError> {
    let batch = v["events"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for e in batch {
        match format {
            Output::Json => writeln!(out, "{e}")?,
            // One YAML document per event, so a follower can stream them.
            Output::Yaml => write!(out, "---\n{}", to_yaml(e))?,
            Output::Table => writeln!(
                out,
                "{}  {:<20} {}",
                cell(&e["created_at"]),
                cell(&e["kind"]),
                cell(&e["message"])
            )?,
        }
    }
    out.flush()?;
    Ok(batch.len())
}

/// `connection events --follow`: polls every second until interrupted.
fn follow_events(
    c: &Client,
    id: &str,
    mut after: i64,
    format: Output,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    loop {
        let v = fetch_events(c, id, after)?;
        let n = print_events(out, format, &v)?;
        after = v["next_after"].as_i64().unwrap_or(after);
        if n < 1000 {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

fn connection(c: &Client, cmd: ConnCmd) -> Result<(Value, Shape), CliError> {
    let none = Query::new();
    let path = |id: &str, action: &str| {
        if action.is_empty() {
            c.s2s(&format!("connections/{id}"))
        } else {
            c.s2s(&format!("connections/{id}/{action}"))
        }
    };
    Ok(match cmd {
        ConnCmd::Events { id, after, .. } => (fetch_events(c, &id, after)?, Shape::Events),
        ConnCmd::List {
            common,
            statuses,
            is_ipv6,
            route_propagation_enabled,
            routing_policy_ids,
            vpn_gateway_ids,
            customer_gateway_ids,
        } => {
            let mut q = common_query(&common);
            push_all(&mut q, "statuses", &statuses);
            push_opt(&mut q, "is_ipv6", &is_ipv6);
            push_opt(
                &mut q,
                "route_propagation_enabled",
                &route_propagation_enabled,
            );
            push_all(&mut q, "routing_policy_ids", &routing_policy_ids);
            push_all(&mut q, "vpn_gateway_ids", &vpn_gateway_ids);
            push_all(&mut q, "customer_gateway_ids", &customer_gateway_ids);
            (
                c.call("GET", &c.s2s("connections"), &q, None)?,
                Shape::List("connections", CONN_COLS),
            )
        }
        ConnCmd::Get { id } => (
            c.call("GET", &path(&id, ""), &none, None)?,
            Shape::One(None),
        ),
        ConnCmd::Create {
            name,
            vpn_gateway_id,
            customer_gateway_id,
            initiation_policy,
            ipv6,
            ike,
            esp,
            route_propagation,
            routing_policy_v4,
            routing_policy_v6,
            bgp_v4,
            bgp_v6,
            tags,
            project_id,
        } => {
            let mut b = json!({
                "name": name, "is_ipv6": ipv6, "initiation_policy": initiation_policy,
                "ikev2_ciphers": ciphers(&ike)?, "esp_ciphers": ciphers(&esp)?,
                "enable_route_propagation": route_propagation,
                "vpn_gateway_id": vpn_gateway_id, "customer_gateway_id": customer_gateway_id,
                "tags": tags, "project_id": project_id,
            });
            if let Some(x) = bgp_config(&routing_policy_v4, &bgp_v4, "v4")? {
                b["bgp_config_ipv4"] = x;
            }
            if let Some(x) = bgp_config(&routing_policy_v6, &bgp_v6, "v6")? {
                b["bgp_config_ipv6"] = x;
            }
            (
                c.call("POST", &c.s2s("connections"), &none, Some(b))?,
                Shape::One(Some("connection")),
            )
        }
        ConnCmd::Update {
            id,
            name,
            initiation_policy,
            ike,
            esp,
            tags,
        } => {
            let mut b = name_tags(&name, &tags, false);
            if let Some(p) = initiation_policy {
                b.insert("initiation_policy".into(), json!(p));
            }
            if !ike.is_empty() {
                b.insert("ikev2_ciphers".into(), json!(ciphers(&ike)?));
            }
            if !esp.is_empty() {
                b.insert("esp_ciphers".into(), json!(ciphers(&esp)?));
            }
            (
                c.call("PATCH", &path(&id, ""), &none, Some(Value::Object(b)))?,
                Shape::One(None),
            )
        }
        ConnCmd::Delete { id } => {
            c.call("DELETE", &path(&id, ""), &none, None)?;
            (Value::Null, Shape::Nothing("connection"))
        }
        ConnCmd::RenewPsk {
            id,
            generate_revision,
        } => (
            c.call(
                "POST",
                &path(&id, "renew-psk"),
                &none,
                Some(json!({"generate_revision": generate_revision})),
            )?,
            Shape::One(Some("connection")),
        ),
        ConnCmd::ChangePsk {
            id,
            secret_id,
            revision,
        } => (
            c.call(
                "POST",
                &path(&id, "change-psk"),
                &none,
                Some(json!({"secret": {"id": secret_id, "revision": revision}})),
            )?,
            Shape::One(Some("connection")),
        ),
        ConnCmd::SetRoutingPolicy { id, v4, v6 } => (
            c.call(
                "POST",
                &path(&id, "set-routing-policy"),
                &none,
                Some(one_of(v4, v6)),
            )?,
            Shape::One(None),
        ),
        ConnCmd::DetachRoutingPolicy { id, v4, v6 } => (
            c.call(
                "POST",
                &path(&id, "detach-routing-policy"),
                &none,
                Some(one_of(v4, v6)),
            )?,
            Shape::One(None),
        ),
        ConnCmd::EnableRoutePropagation { id } => (
            c.call(
                "POST",
                &path(&id, "enable-route-propagation"),
                &none,
                Some(json!({})),
            )?,
            Shape::One(None),
        ),
        ConnCmd::DisableRoutePropagation { id } => (
            c.call(
                "POST",
                &path(&id, "disable-route-propagation"),
                &none,
                Some(json!({})),
            )?,
            Shape::One(None),
        ),
        ConnCmd::DeviceConfig { id, vendor } => {
            let (_, text) = c.send(
                "GET",
                &path(&id, "device-config"),
                &vec![("vendor", vendor)],
                None,
                "text/plain",
            )?;
            (Value::String(text), Shape::Text)
        }
        ConnCmd::GetPsk { id, revision } => {
            let conn = c.call("GET", &path(&id, ""), &none, None)?;
            let sid = conn["secret_id"].as_str().unwrap_or_default().to_owned();
            let rev = revision
                .map(|r| r.to_string())
                .unwrap_or_else(|| cell(&conn["secret_revision"]));
            let r = c.call(
                "GET",
                &format!(
                    "/secret-manager/v1beta1/regions/{}/secrets/{sid}/versions/{rev}/access",
                    c.region
                ),
                &none,
                None,
            )?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(r["data"].as_str().unwrap_or_default())
                .map_err(|e| CliError::Argument(format!("secret data is not base64: {e}")))?;
            (
                Value::String(String::from_utf8_lossy(&data).into_owned()),
                Shape::Psk,
            )
        }
    })
}

fn secret(
    c: &Client,
    cmd: SecretCmd,
    stdin: &mut dyn std::io::Read,
) -> Result<(Value, Shape), CliError> {
    let none = Query::new();
    let base = format!("/secret-manager/v1beta1/regions/{}/secrets", c.region);
    Ok(match cmd {
        SecretCmd::Create {
            name,
            description,
            tags,
        } => (
            c.call(
                "POST",
                &base,
                &none,
                Some(json!({"name": name, "description": description, "tags": tags, "protected": false})),
            )?,
            Shape::One(None),
        ),
        SecretCmd::Get { id } => (c.call("GET", &format!("{base}/{id}"), &none, None)?, Shape::One(None)),
        SecretCmd::AddVersion { id, description } => {
            let mut data = zeroize::Zeroizing::new(Vec::new());
            let limit = u64::try_from(crate::secrets::MAX_PSK_LEN).unwrap_or(u64::MAX) + 2;
            std::io::Read::read_to_end(&mut std::io::Read::take(stdin, limit), &mut data)?;
            while data.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                data.pop();
            }
            let b64 = zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&data[..]));
            (
                c.call(
                    "POST",
                    &format!("{base}/{id}/versions"),
                    &none,
                    Some(json!({"data": b64.as_str(), "description": description})),
                )?,
                Shape::One(None),
            )
        }
        SecretCmd::Access { id, revision } => {
            let r = c.call("GET", &format!("{base}/{id}/versions/{revision}/access"), &none, None)?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(r["data"].as_str().unwrap_or_default())
                .map_err(|e| CliError::Argument(format!("secret data is not base64: {e}")))?;
            (Value::String(String::from_utf8_lossy(&data).into_owned()), Shape::Psk)
        }
    })
}

fn one_of(v4: Option<String>, v6: Option<String>) -> Value {
    match (v4, v6) {
        (Some(a), _) => json!({"routing_policy_v4": a}),
        (None, Some(b)) => json!({"routing_policy_v6": b}),
        (None, None) => json!({}),
    }
}

/// The `s2sctl` process: parses `std::env::args`, prints to stdout, errors
/// to stderr (exit 2 for usage errors, 1 otherwise).
/// The command-line definition, for generated man pages and shell
/// completions (`cargo xtask package`).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

pub fn main() -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match run(std::env::args_os(), &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(e)) => {
            let _ = e.print();
            if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("s2sctl: {e}");
            if let CliError::Api { body, .. } = &e {
                if let Some(details) = body.get("details") {
                    eprintln!("details: {details}");
                }
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_syntax() {
        assert_eq!(
            parse_cipher("aes256-sha256-modp2048").unwrap(),
            json!({"encryption": "aes256", "integrity": "sha256", "dh_group": "modp2048"})
        );
        assert_eq!(
            parse_cipher("aes256gcm/ecp256").unwrap(),
            json!({"encryption": "aes256gcm", "dh_group": "ecp256"})
        );
        assert!(parse_cipher("des-sha1").is_err());
        assert!(parse_cipher("sha256").is_err());
        assert!(parse_cipher("aes256-aes128").is_err());
    }

    #[test]
    fn usage_errors_are_usage() {
        let mut out = Vec::new();
        let e = run(["s2sctl", "connection", "frobnicate"], &mut out).unwrap_err();
        assert!(matches!(e, CliError::Usage(_)));
        let e = run(
            [
                "s2sctl",
                "--token",
                "t",
                "connection",
                "set-routing-policy",
                "x",
            ],
            &mut out,
        )
        .unwrap_err();
        assert!(matches!(e, CliError::Usage(_)), "{e}");
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn connection_get_shows_the_tunnel_mtus() {
        let v = json!({
            "id": "c",
            "tunnel_status_ipv4": "up",
            "tunnel_mtu_ipv4": {"inner_mtu": 1438, "tcp_mss_ipv4": 1398,
                                "tcp_mss_ipv6": 1378, "mss_clamp": true},
            "tunnel_mtu_ipv6": null,
        });
        let mut out = Vec::new();
        print(&mut out, Output::Table, Shape::One(None), &v).unwrap();
        let s = String::from_utf8(out).unwrap();
        let line = |k: &str| {
            s.lines()
                .find(|l| l.starts_with(k))
                .map(|l| l[k.len()..].trim().to_owned())
        };
        let v4 = line("tunnel_mtu_ipv4").unwrap();
        for part in [
            "inner_mtu=1438",
            "tcp_mss_ipv4=1398",
            "tcp_mss_ipv6=1378",
            "mss_clamp=true",
        ] {
            assert!(v4.split(' ').any(|p| p == part), "{part} in {v4}");
        }
        assert_eq!(line("tunnel_mtu_ipv6").as_deref(), Some("-"));
    }

    #[test]
    fn table_is_aligned() {
        let mut out = Vec::new();
        table(
            &mut out,
            &["id", "name"],
            &[vec!["1".into(), "a".into()], vec!["22".into(), "bb".into()]],
        )
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s, "ID  NAME\n1   a\n22  bb\n");
    }
}
