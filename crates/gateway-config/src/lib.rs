//! The daemon's configuration file (`config/gateway.toml`).
//!
//! It owns what an operator states about the host: which interfaces face the
//! WAN and the LAN, where the API listens and which tokens it accepts, the
//! VPN gateway types on offer, and how the API's `private_network_id`s and
//! public IP IDs map onto this host's interfaces and addresses. It does not
//! own resources created through the API: those live in the store.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Deserialize;

/// Scaleway's ASN, our side of every BGP session unless configured otherwise.
pub const DEFAULT_ASN: u32 = 12876;
/// API tokens shorter than this are refused: a token is the only thing
/// between the network and every PSK.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
    #[error("{key}: a token is {len} characters long; at least {MIN_TOKEN_LEN} are required")]
    ShortToken { key: String, len: usize },
    #[error("api.tokens_file {path} has mode {mode:o}: it must not be readable or writable by group or others (chmod 600)")]
    LooseTokensFile { path: PathBuf, mode: u32 },
    #[error("{key}: {reason}")]
    BadKey { key: String, reason: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub gateway: GatewaySection,
    pub interfaces: Interfaces,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default)]
    pub datapath: DatapathSection,
    #[serde(default)]
    pub gateway_types: Vec<GatewayType>,
    #[serde(default)]
    pub private_networks: Vec<PrivateNetwork>,
    #[serde(default)]
    pub public_ips: Vec<PublicIp>,
    #[serde(default)]
    pub child_sa: ChildSaSection,
    /// Project → organization, from every confined key (`tokens_file`
    /// included), filled when the configuration is loaded for serving
    /// ([`LiveConfig`]).
    #[serde(skip)]
    organizations: std::collections::HashMap<String, String>,
}

/// Volume lifetimes of every CHILD SA (`[child_sa]`, RFC 4301 §4.4.2.1).
/// Past a soft limit the gateway rekeys the CHILD SA (make-before-break);
/// past a hard limit the SA stops sending. Unset limits leave it to the
/// sequence space: a rekey at 7/8 of 2^32 packets without ESN.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildSaSection {
    pub soft_packets: Option<u64>,
    pub hard_packets: Option<u64>,
    pub soft_bytes: Option<u64>,
    pub hard_bytes: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Our BGP ASN.
    #[serde(default = "default_asn")]
    pub asn: u32,
    /// The region this host serves (`fr-par`, ...). Requests for another
    /// region are refused.
    #[serde(default = "default_region")]
    pub region: String,
    /// Holds the database and the master key of the secrets.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// bpffs directory under which the XDP maps are pinned.
    #[serde(default = "default_pin_dir")]
    pub bpf_pin_dir: PathBuf,
    /// Prefixes one BGP session may send before it is closed with a Cease
    /// NOTIFICATION (RFC 4271 §6.7, maximum number of prefixes reached).
    #[serde(default = "default_max_prefixes")]
    pub bgp_max_prefixes: u32,
    /// Connections this host accepts in all (every VPN gateway together),
    /// on top of each gateway type's `allowed_connections`; creating one
    /// more answers `quotas_exceeded`. Unset: no host-wide limit. Takes
    /// effect on SIGHUP.
    #[serde(default)]
    pub connections_per_host: Option<u32>,
}

impl Default for GatewaySection {
    fn default() -> Self {
        Self {
            asn: default_asn(),
            region: default_region(),
            state_dir: default_state_dir(),
            bpf_pin_dir: default_pin_dir(),
            bgp_max_prefixes: default_max_prefixes(),
            connections_per_host: None,
        }
    }
}

fn default_asn() -> u32 {
    DEFAULT_ASN
}
fn default_region() -> String {
    "fr-par".to_owned()
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/s2s-gateway")
}
fn default_max_prefixes() -> u32 {
    10_000
}
fn default_pin_dir() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/s2s-gateway")
}

/// How the XDP programs are attached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XdpMode {
    /// Driver (native) mode; attaching fails if the driver lacks it.
    #[default]
    Native,
    /// Generic (skb) mode: slow, only as an explicit fallback.
    Generic,
    /// Try native, fall back to generic with a warning.
    NativeOrGeneric,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interfaces {
    /// Faces the customer gateways (ESP, IKE).
    pub wan: String,
    /// Faces the private network (VPC).
    pub lan: String,
    #[serde(default)]
    pub xdp_mode: XdpMode,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Secret keys accepted in `X-Auth-Token` (the SDK sends its secret key).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Keys confined to projects: each acts on its `projects` only.
    #[serde(default)]
    pub keys: Vec<ProjectKey>,
    /// Optional file holding one key per line, read at start and on
    /// reload: `TOKEN` (every project, as `tokens`) or `TOKEN
    /// ORGANIZATION_ID PROJECT_ID[,PROJECT_ID...]` (as `keys`).
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    /// Prometheus exposition address.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Seconds a client has to send a request's headers, counted from the
    /// connection (or the previous response): slow or idle clients are
    /// closed.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's body once its headers are
    /// in; also how long a response may make no progress (a client that
    /// does not read) before the connection is closed.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_secs: u64,
    /// HTTP connections served at once; further ones wait in the listen
    /// backlog until one ends.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tokens: Vec::new(),
            keys: Vec::new(),
            tokens_file: None,
            metrics_listen: None,
            header_timeout_secs: default_header_timeout(),
            body_timeout_secs: default_body_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

/// Tokens are secrets: the `Debug` output (and so any log of the config)
/// only says how many there are.
impl std::fmt::Debug for ApiSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSection")
            .field("listen", &self.listen)
            .field("tokens", &format_args!("<{} redacted>", self.tokens.len()))
            .field("keys", &self.keys)
            .field("tokens_file", &self.tokens_file)
            .field("metrics_listen", &self.metrics_listen)
            .field("header_timeout_secs", &self.header_timeout_secs)
            .field("body_timeout_secs", &self.body_timeout_secs)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// A secret key confined to projects (`[[api.keys]]`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectKey {
    /// The secret key the SDK sends in `X-Auth-Token`.
    pub token: String,
    /// The organization its projects belong to: the `organization_id` of
    /// the resources created in them.
    pub organization_id: String,
    /// The projects it may read and write; the first is where a request
    /// without `project_id` creates.
    pub projects: Vec<String>,
}

/// The token is a secret: only the projects show.
impl std::fmt::Debug for ProjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectKey")
            .field("token", &"<redacted>")
            .field("organization_id", &self.organization_id)
            .field("projects", &self.projects)
            .finish()
    }
}

/// A key as the API checks it: its secret and what it may act on.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub secret: Vec<u8>,
    /// `None`: every project (an operator's key, from `api.tokens` or a
    /// one-word `tokens_file` line).
    pub scope: Option<KeyScope>,
}

/// The projects of a confined key, and their organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyScope {
    pub organization_id: String,
    /// Never empty.
    pub projects: Vec<String>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("secret", &"<redacted>")
            .field("scope", &self.scope)
            .finish()
    }
}

/// Whether `s` can be a project or organization id (a UUID in Scaleway's
/// API; any id of letters, digits and dashes here, as `project_id` is).
fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

impl ApiSection {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_secs)
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_header_timeout() -> u64 {
    10
}
fn default_body_timeout() -> u64 {
    30
}
fn default_max_connections() -> usize {
    256
}

/// Packet sizes through the tunnels: TCP MSS clamping and the ICMP errors
/// the data path sends for packets too big for a tunnel or the LAN.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatapathSection {
    /// Lower the MSS of TCP SYNs and SYN-ACKs, both ways, to what fits the
    /// tunnel's inner MTU (a gateway type may override it).
    #[serde(default = "default_true")]
    pub mss_clamp: bool,
    /// ICMP "too big" errors per second to one source (per CPU on the
    /// XDP path, per worker for decrypted packets).
    #[serde(default = "default_icmp_rate")]
    pub icmp_too_big_per_second: u32,
    /// How many such errors one source may get in a burst.
    #[serde(default = "default_icmp_burst")]
    pub icmp_too_big_burst: u32,
    /// The XDP programs' drop events in the daemon's log (aya-log): off by
    /// default; changes on reload (SIGHUP).
    #[serde(default)]
    pub drop_events: DropEvents,
    /// Preferred busy polling on the AF_XDP workers' sockets
    /// (`SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL`): microseconds one receive
    /// may busy-poll the queue for; 0 (the default) leaves it off. Pair it
    /// with the NIC's `napi_defer_hard_irqs` and `gro_flush_timeout`
    /// (README, "Polling"); the daemon does not change them.
    #[serde(default)]
    pub busy_poll_usecs: u32,
    /// `SO_BUSY_POLL_BUDGET`: packets per NAPI poll when busy polling.
    #[serde(default = "default_busy_poll_budget")]
    pub busy_poll_budget: u16,
    /// How many /24s may hold IPv4 prefixes longer than /24 at once in the
    /// XDP route table (1 KiB of kernel memory each; prefixes up to /24
    /// need none). Read at start.
    #[serde(default = "default_route_groups_v4")]
    pub route_groups_v4: u32,
}

impl Default for DatapathSection {
    fn default() -> Self {
        Self {
            mss_clamp: true,
            icmp_too_big_per_second: default_icmp_rate(),
            icmp_too_big_burst: default_icmp_burst(),
            drop_events: DropEvents::default(),
            busy_poll_usecs: 0,
            busy_poll_budget: default_busy_poll_budget(),
            route_groups_v4: default_route_groups_v4(),
        }
    }
}

impl DatapathSection {
    /// Busy polling's (microseconds, budget) when it is on.
    pub fn busy_poll(&self) -> Option<(u32, u16)> {
        (self.busy_poll_usecs > 0).then_some((self.busy_poll_usecs, self.busy_poll_budget))
    }
}

/// Longest busy poll accepted (`datapath.busy_poll_usecs`): a worker
/// blocked longer than this in one receive would delay its other socket.
pub const MAX_BUSY_POLL_USECS: u32 = 1000;

fn default_busy_poll_budget() -> u16 {
    64
}

/// Most groups `datapath.route_groups_v4` may ask for (the size the XDP
/// object declares).
pub const MAX_ROUTE_GROUPS_V4: u32 = 65_536;

fn default_route_groups_v4() -> u32 {
    4096
}

/// Which XDP drops are sent to the daemon's log, by level: each level
/// includes the ones above it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DropEvents {
    /// None (the counters in `/metrics` still count every drop).
    #[default]
    Off,
    /// Malformed packets: truncated or inconsistent IP, UDP or ESP headers.
    Warn,
    /// Also ESP with an SPI we do not know, and replays.
    Info,
    /// Also packets too big for their tunnel (answered with ICMP).
    Debug,
}

impl DropEvents {
    /// The most verbose level the XDP programs send
    /// (`gateway_common::drop_event_level`, aya-log's numbers); 0 for none.
    pub fn aya_level(self) -> u32 {
        use gateway_common::drop_event_level as level;
        match self {
            DropEvents::Off => level::OFF,
            DropEvents::Warn => level::WARN,
            DropEvents::Info => level::INFO,
            DropEvents::Debug => level::DEBUG,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DropEvents::Off => "off",
            DropEvents::Warn => "warn",
            DropEvents::Info => "info",
            DropEvents::Debug => "debug",
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_icmp_rate() -> u32 {
    100
}
fn default_icmp_burst() -> u32 {
    20
}

/// A VPN gateway type offered by this host (`VGW-S`, ...).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayType {
    pub name: String,
    /// Bandwidth in bit/s, enforced per VPN gateway and direction on its
    /// tunnels' inner packets; 0 enforces nothing.
    pub bandwidth: u64,
    pub allowed_connections: u32,
    /// Overrides `datapath.mss_clamp` for gateways of this type.
    #[serde(default)]
    pub mss_clamp: Option<bool>,
}

/// Maps an API `private_network_id` to a LAN interface and its subnets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateNetwork {
    pub id: String,
    pub interface: String,
    pub ipv4_subnet: Option<Ipv4Net>,
    pub ipv6_subnet: Option<Ipv6Net>,
}

/// Maps a public IP (IPAM) ID to an address on the WAN interface.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicIp {
    pub id: String,
    pub address: IpAddr,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Everything wrong with the config file at `path`, for
    /// `s2s-gateway check-config`: the read or parse error (TOML syntax,
    /// an unknown key, a wrong type: the parser stops at the first, and
    /// its message names the key and line), else every semantic problem
    /// ([`Config::problems`]). Empty: the file is valid.
    pub fn check_file(path: &Path) -> Vec<ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(source) => {
                return vec![ConfigError::Read {
                    path: path.to_owned(),
                    source,
                }]
            }
        };
        match toml::from_str::<Config>(&text) {
            Ok(config) => config.problems(),
            Err(source) => vec![ConfigError::Parse {
                path: path.to_owned(),
                source: Box::new(source),
            }],
        }
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::from("<string>"),
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every semantic problem of a config that parsed, in one pass, each
    /// naming its key (what `s2s-gateway check-config` prints).
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let mut bad = |msg: String| out.push(ConfigError::Invalid(msg));
        if self.interfaces.wan == self.interfaces.lan {
            bad("interfaces.wan and interfaces.lan must differ".into());
        }
        if self.gateway.connections_per_host == Some(0) {
            bad(
                "gateway.connections_per_host must be at least 1 (leave it out for no limit)"
                    .into(),
            );
        }
        if self.datapath.icmp_too_big_per_second == 0 || self.datapath.icmp_too_big_burst == 0 {
            bad(
                "datapath.icmp_too_big_per_second and icmp_too_big_burst must be at least 1".into(),
            );
        }
        if self.datapath.busy_poll_usecs > MAX_BUSY_POLL_USECS {
            bad(format!(
                "datapath.busy_poll_usecs must be at most {MAX_BUSY_POLL_USECS} (0 turns busy polling off)"
            ));
        }
        if self.datapath.busy_poll_budget == 0 || self.datapath.busy_poll_budget > 1024 {
            bad("datapath.busy_poll_budget must be between 1 and 1024".into());
        }
        if self.datapath.route_groups_v4 == 0 || self.datapath.route_groups_v4 > MAX_ROUTE_GROUPS_V4
        {
            bad(format!(
                "datapath.route_groups_v4 must be between 1 and {MAX_ROUTE_GROUPS_V4}"
            ));
        }
        let l = &self.child_sa;
        for (what, soft, hard) in [
            ("packets", l.soft_packets, l.hard_packets),
            ("bytes", l.soft_bytes, l.hard_bytes),
        ] {
            if soft == Some(0) || hard == Some(0) {
                bad(format!(
                    "child_sa: soft_{what} and hard_{what} must be positive"
                ));
            } else if let (Some(s), Some(h)) = (soft, hard) {
                if s >= h {
                    bad(format!(
                        "child_sa.soft_{what} ({s}) must be below child_sa.hard_{what} ({h}): the rekey must start before the SA stops"
                    ));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.gateway_types {
            if !seen.insert(t.name.as_str()) {
                bad(format!("gateway_types: duplicate name {}", t.name));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for ip in &self.public_ips {
            if !seen.insert(ip.id.as_str()) {
                bad(format!("public_ips: duplicate id {}", ip.id));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for pn in &self.private_networks {
            if !seen.insert(pn.id.as_str()) {
                bad(format!("private_networks: duplicate id {}", pn.id));
            }
            if pn.ipv4_subnet.is_none() && pn.ipv6_subnet.is_none() {
                bad(format!(
                    "private_networks {}: needs ipv4_subnet and/or ipv6_subnet",
                    pn.id
                ));
            }
        }
        if self.api.header_timeout_secs == 0 || self.api.body_timeout_secs == 0 {
            bad("api.header_timeout_secs and api.body_timeout_secs must be at least 1".into());
        }
        if self.api.max_connections == 0 {
            bad("api.max_connections must be at least 1".into());
        }
        // A short token, a loose or malformed tokens file fails the load,
        // not the first request.
        if let Err(e) = self.api_keys() {
            out.push(e);
        }
        out
    }

    /// Every API key: `api.tokens` (every project), `api.keys` and the
    /// lines of `tokens_file`. The file must not be readable or writable
    /// by group or others; every token follows the length rule, a token
    /// appears once, a confined key names at least one project, and a
    /// project belongs to one organization whatever key names it.
    pub fn api_keys(&self) -> Result<Vec<ApiKey>, ConfigError> {
        let mut keys: Vec<(String, ApiKey)> = Vec::new();
        for (i, t) in self.api.tokens.iter().enumerate() {
            let at = format!("api.tokens[{i}]");
            check_token(t, || at.clone())?;
            keys.push((
                at,
                ApiKey {
                    secret: t.clone().into_bytes(),
                    scope: None,
                },
            ));
        }
        for (i, k) in self.api.keys.iter().enumerate() {
            let at = format!("api.keys[{i}]");
            let scope = key_scope(&at, &k.organization_id, &k.projects)?;
            check_token(&k.token, || format!("{at}.token"))?;
            keys.push((
                at,
                ApiKey {
                    secret: k.token.clone().into_bytes(),
                    scope: Some(scope),
                },
            ));
        }
        if let Some(path) = &self.api.tokens_file {
            let read = |source| ConfigError::Read {
                path: path.clone(),
                source,
            };
            let file = std::fs::File::open(path).map_err(read)?;
            // Checked on the open file, so a swap between check and read
            // cannot slip a loose one in.
            let mode = file.metadata().map_err(read)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(ConfigError::LooseTokensFile {
                    path: path.clone(),
                    mode: mode & 0o7777,
                });
            }
            let text = std::io::read_to_string(file).map_err(read)?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let at = format!("api.tokens_file {} line {}", path.display(), n + 1);
                let words: Vec<&str> = line.split_whitespace().collect();
                let scope = match words[..] {
                    [_] => None,
                    [_, org, projects] => {
                        let projects: Vec<String> =
                            projects.split(',').map(str::to_owned).collect();
                        Some(key_scope(&at, org, &projects)?)
                    }
                    _ => return Err(ConfigError::BadKey {
                        key: at,
                        reason:
                            "expected TOKEN, or TOKEN ORGANIZATION_ID PROJECT_ID[,PROJECT_ID...]"
                                .into(),
                    }),
                };
                check_token(words[0], || at.clone())?;
                keys.push((
                    at,
                    ApiKey {
                        secret: words[0].as_bytes().to_vec(),
                        scope,
                    },
                ));
            }
        }
        let mut orgs: std::collections::HashMap<&str, (&str, &str)> = Default::default();
        for (i, (at, k)) in keys.iter().enumerate() {
            if let Some((first, _)) = keys[..i].iter().find(|(_, o)| o.secret == k.secret) {
                return Err(ConfigError::BadKey {
                    key: at.clone(),
                    reason: format!("the same token as {first}: a token has one scope"),
                });
            }
            for p in k.scope.iter().flat_map(|s| &s.projects) {
                let org = k.scope.as_ref().map_or("", |s| s.organization_id.as_str());
                match orgs.get(p.as_str()) {
                    Some((o, first)) if *o != org => {
                        return Err(ConfigError::BadKey {
                            key: at.clone(),
                            reason: format!(
                                "project {p} is in organization {org} here and {o} in {first}"
                            ),
                        })
                    }
                    Some(_) => {}
                    None => {
                        orgs.insert(p, (org, at));
                    }
                }
            }
        }
        Ok(keys.into_iter().map(|(_, k)| k).collect())
    }

    /// The organization of `project`: the one of the confined keys that
    /// name it (they agree), or the project's own id if none does (as
    /// before keys had scopes).
    pub fn organization_of(&self, project: &str) -> String {
        self.organizations
            .get(project)
            .cloned()
            .or_else(|| {
                self.api
                    .keys
                    .iter()
                    .find(|k| k.projects.iter().any(|p| p == project))
                    .map(|k| k.organization_id.clone())
            })
            .unwrap_or_else(|| project.to_owned())
    }

    pub fn public_ip(&self, id: &str) -> Option<&PublicIp> {
        self.public_ips.iter().find(|p| p.id == id)
    }

    pub fn private_network(&self, id: &str) -> Option<&PrivateNetwork> {
        self.private_networks.iter().find(|p| p.id == id)
    }

    pub fn gateway_type(&self, name: &str) -> Option<&GatewayType> {
        self.gateway_types.iter().find(|t| t.name == name)
    }

    /// Whether tunnels of gateways of type `gateway_type` clamp the MSS.
    pub fn mss_clamp(&self, gateway_type: &str) -> bool {
        self.gateway_type(gateway_type)
            .and_then(|t| t.mss_clamp)
            .unwrap_or(self.datapath.mss_clamp)
    }
}

/// The scope of a confined key, its ids checked.
fn key_scope(at: &str, org: &str, projects: &[String]) -> Result<KeyScope, ConfigError> {
    let bad = |reason: String| ConfigError::BadKey {
        key: at.to_owned(),
        reason,
    };
    if !is_id(org) {
        return Err(bad(format!(
            "organization_id {org:?} is not an id (letters, digits and dashes)"
        )));
    }
    if projects.is_empty() {
        return Err(bad("a key confined to projects needs at least one".into()));
    }
    if let Some(p) = projects.iter().find(|p| !is_id(p)) {
        return Err(bad(format!(
            "project {p:?} is not an id (letters, digits and dashes)"
        )));
    }
    Ok(KeyScope {
        organization_id: org.to_owned(),
        projects: projects.to_vec(),
    })
}

fn check_token(token: &str, key: impl FnOnce() -> String) -> Result<(), ConfigError> {
    let len = token.chars().count();
    if len < MIN_TOKEN_LEN {
        return Err(ConfigError::ShortToken { key: key(), len });
    }
    Ok(())
}

/// Why a reload was refused (the running configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error(
        "no API token left (api.tokens and api.tokens_file): refusing to lock every caller out"
    )]
    NoTokens,
    #[error("{} cannot change while the daemon runs (restart it to apply)", .0.join(", "))]
    Fixed(Vec<&'static str>),
}

impl Config {
    /// The keys that differ between `self` and `new` among those a
    /// running daemon cannot take: everything except `api.tokens`,
    /// `api.tokens_file`, `gateway.connections_per_host`,
    /// `[[gateway_types]]`, `[[public_ips]]` and `[[private_networks]]`.
    pub fn fixed_changes(&self, new: &Config) -> Vec<&'static str> {
        let (a, b) = (self, new);
        [
            ("gateway.asn", a.gateway.asn == b.gateway.asn),
            ("gateway.region", a.gateway.region == b.gateway.region),
            (
                "gateway.state_dir",
                a.gateway.state_dir == b.gateway.state_dir,
            ),
            (
                "gateway.bpf_pin_dir",
                a.gateway.bpf_pin_dir == b.gateway.bpf_pin_dir,
            ),
            (
                "gateway.bgp_max_prefixes",
                a.gateway.bgp_max_prefixes == b.gateway.bgp_max_prefixes,
            ),
            ("interfaces.wan", a.interfaces.wan == b.interfaces.wan),
            ("interfaces.lan", a.interfaces.lan == b.interfaces.lan),
            (
                "interfaces.xdp_mode",
                a.interfaces.xdp_mode == b.interfaces.xdp_mode,
            ),
            ("api.listen", a.api.listen == b.api.listen),
            (
                "api.metrics_listen",
                a.api.metrics_listen == b.api.metrics_listen,
            ),
            (
                "api.header_timeout_secs",
                a.api.header_timeout_secs == b.api.header_timeout_secs,
            ),
            (
                "api.body_timeout_secs",
                a.api.body_timeout_secs == b.api.body_timeout_secs,
            ),
            (
                "api.max_connections",
                a.api.max_connections == b.api.max_connections,
            ),
            (
                "datapath.mss_clamp",
                a.datapath.mss_clamp == b.datapath.mss_clamp,
            ),
            (
                "datapath.icmp_too_big_per_second",
                a.datapath.icmp_too_big_per_second == b.datapath.icmp_too_big_per_second,
            ),
            (
                "datapath.icmp_too_big_burst",
                a.datapath.icmp_too_big_burst == b.datapath.icmp_too_big_burst,
            ),
            (
                "datapath.busy_poll_usecs",
                a.datapath.busy_poll_usecs == b.datapath.busy_poll_usecs,
            ),
            (
                "datapath.busy_poll_budget",
                a.datapath.busy_poll_budget == b.datapath.busy_poll_budget,
            ),
            (
                "datapath.route_groups_v4",
                a.datapath.route_groups_v4 == b.datapath.route_groups_v4,
            ),
            ("child_sa", a.child_sa == b.child_sa),
        ]
        .into_iter()
        .filter_map(|(key, same)| (!same).then_some(key))
        .collect()
    }
}

/// A configuration with its API tokens read (`api.tokens_file` included).
struct Loaded {
    config: Arc<Config>,
    keys: Arc<Vec<ApiKey>>,
}

/// The configuration a running daemon serves from, shared by the API and
/// the agent; [`LiveConfig::replace`] swaps it whole (SIGHUP). Readers take
/// the current one per request or per pass and never see half of a
/// reload.
#[derive(Clone)]
pub struct LiveConfig(Arc<RwLock<Arc<Loaded>>>);

impl LiveConfig {
    /// Reads the tokens file once, here (and again at each reload).
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        Ok(Self(Arc::new(RwLock::new(Arc::new(Self::load(config)?)))))
    }

    fn load(mut config: Config) -> Result<Loaded, ConfigError> {
        let keys = config.api_keys()?;
        config.organizations = keys
            .iter()
            .filter_map(|k| k.scope.as_ref())
            .flat_map(|s| {
                s.projects
                    .iter()
                    .map(|p| (p.clone(), s.organization_id.clone()))
            })
            .collect();
        Ok(Loaded {
            config: Arc::new(config),
            keys: Arc::new(keys),
        })
    }

    fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The configuration now.
    pub fn get(&self) -> Arc<Config> {
        Arc::clone(&self.current().config)
    }

    /// The API keys now.
    pub fn keys(&self) -> Arc<Vec<ApiKey>> {
        Arc::clone(&self.current().keys)
    }

    /// Takes `new` if it is valid, keeps at least one API token, and
    /// changes none of the keys that need a restart
    /// ([`Config::fixed_changes`]); else keeps the current one.
    pub fn replace(&self, new: Config) -> Result<(), ReloadError> {
        new.validate()?;
        let fixed = self.get().fixed_changes(&new);
        if !fixed.is_empty() {
            return Err(ReloadError::Fixed(fixed));
        }
        let loaded = Self::load(new)?;
        if loaded.keys.is_empty() {
            return Err(ReloadError::NoTokens);
        }
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
