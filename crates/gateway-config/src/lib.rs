//! The daemon's configuration file (`config/gateway.toml`).
//!
//! It owns what an operator states about the host: which interfaces face the
//! WAN and the LAN, where the API listens and which tokens it accepts, the
//! VPN gateway types on offer, and how the API's `private_network_id`s and
//! public IP IDs map onto this host's interfaces and addresses. It does not
//! own resources created through the API: those live in the store.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Deserialize;

/// Scaleway's ASN, our side of every BGP session unless configured otherwise.
pub const DEFAULT_ASN: u32 = 12876;

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
}

impl Default for GatewaySection {
    fn default() -> Self {
        Self {
            asn: default_asn(),
            region: default_region(),
            state_dir: default_state_dir(),
            bpf_pin_dir: default_pin_dir(),
            bgp_max_prefixes: default_max_prefixes(),
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Secret keys accepted in `X-Auth-Token` (the SDK sends its secret key).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Optional file holding one token per line, read at start.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    /// Prometheus exposition address.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tokens: Vec::new(),
            tokens_file: None,
            metrics_listen: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
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
}

impl Default for DatapathSection {
    fn default() -> Self {
        Self {
            mss_clamp: true,
            icmp_too_big_per_second: default_icmp_rate(),
            icmp_too_big_burst: default_icmp_burst(),
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
    /// Bandwidth in bit/s.
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

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::from("<string>"),
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.interfaces.wan == self.interfaces.lan {
            return Err(ConfigError::Invalid(
                "interfaces.wan and interfaces.lan must differ".into(),
            ));
        }
        if self.datapath.icmp_too_big_per_second == 0 || self.datapath.icmp_too_big_burst == 0 {
            return Err(ConfigError::Invalid(
                "datapath.icmp_too_big_per_second and icmp_too_big_burst must be at least 1".into(),
            ));
        }
        let l = &self.child_sa;
        for (what, soft, hard) in [
            ("packets", l.soft_packets, l.hard_packets),
            ("bytes", l.soft_bytes, l.hard_bytes),
        ] {
            if soft == Some(0) || hard == Some(0) {
                return Err(ConfigError::Invalid(format!(
                    "child_sa: soft_{what} and hard_{what} must be positive"
                )));
            }
            if let (Some(s), Some(h)) = (soft, hard) {
                if s >= h {
                    return Err(ConfigError::Invalid(format!(
                        "child_sa.soft_{what} ({s}) must be below child_sa.hard_{what} ({h}): the rekey must start before the SA stops"
                    )));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.gateway_types {
            if !seen.insert(t.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "gateway_types: duplicate name {}",
                    t.name
                )));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for ip in &self.public_ips {
            if !seen.insert(ip.id.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "public_ips: duplicate id {}",
                    ip.id
                )));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for pn in &self.private_networks {
            if !seen.insert(pn.id.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "private_networks: duplicate id {}",
                    pn.id
                )));
            }
            if pn.ipv4_subnet.is_none() && pn.ipv6_subnet.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "private_networks {}: needs ipv4_subnet and/or ipv6_subnet",
                    pn.id
                )));
            }
        }
        Ok(())
    }

    /// The token list with `tokens_file` merged in.
    pub fn api_tokens(&self) -> Result<Vec<String>, ConfigError> {
        let mut tokens = self.api.tokens.clone();
        if let Some(path) = &self.api.tokens_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        Ok(tokens)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../../config/gateway.toml");
        let c = Config::parse(text).expect("example config must parse");
        assert_eq!(c.gateway.asn, DEFAULT_ASN);
        assert!(c.gateway_type("VGW-S").is_some());
        assert!(!c.public_ips.is_empty());
    }

    #[test]
    fn mss_clamp_defaults_on_and_follows_gateway_types() {
        let base = "[interfaces]\nwan = \"a\"\nlan = \"b\"\n";
        let c = Config::parse(base).unwrap();
        assert!(c.mss_clamp("VGW-S"));
        assert_eq!(c.datapath.icmp_too_big_per_second, 100);
        let c = Config::parse(&format!(
            "{base}[datapath]\nmss_clamp = false\n\
             [[gateway_types]]\nname = \"VGW-S\"\nbandwidth = 1\nallowed_connections = 1\n\
             [[gateway_types]]\nname = \"VGW-M\"\nbandwidth = 1\nallowed_connections = 1\nmss_clamp = true\n"
        ))
        .unwrap();
        assert!(!c.mss_clamp("VGW-S"));
        assert!(c.mss_clamp("VGW-M"));
        assert!(!c.mss_clamp("unknown"));
        let err =
            Config::parse(&format!("{base}[datapath]\nicmp_too_big_burst = 0\n")).unwrap_err();
        assert!(err.to_string().contains("icmp_too_big"), "{err}");
    }

    #[test]
    fn same_wan_and_lan_refused() {
        let err = Config::parse("[interfaces]\nwan = \"a\"\nlan = \"a\"\n").unwrap_err();
        assert!(err.to_string().contains("must differ"), "{err}");
    }

    #[test]
    fn child_sa_lifetimes_must_leave_room_to_rekey() {
        let base = "[interfaces]\nwan = \"a\"\nlan = \"b\"\n[child_sa]\n";
        let c =
            Config::parse(&format!("{base}soft_packets = 1000\nhard_packets = 2000\n")).unwrap();
        assert_eq!(c.child_sa.soft_packets, Some(1000));
        let err = Config::parse(&format!("{base}soft_bytes = 5\nhard_bytes = 5\n")).unwrap_err();
        assert!(err.to_string().contains("child_sa.soft_bytes"), "{err}");
        let err = Config::parse(&format!("{base}hard_packets = 0\n")).unwrap_err();
        assert!(err.to_string().contains("positive"), "{err}");
    }

    #[test]
    fn unknown_field_refused() {
        let err = Config::parse("[interfaces]\nwan = \"a\"\nlan = \"b\"\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
