//! The command line: clap's definitions of every subcommand and option.

use super::*;

#[derive(Parser, Debug)]
#[command(
    name = "s2sctl",
    about = "Manage the site-to-site VPN gateway (Scaleway s2s-vpn v1alpha1 API)"
)]
pub(super) struct Cli {
    /// Base URL of the API.
    #[arg(
        long,
        env = "S2S_API_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub(super) api_url: String,
    /// Secret key sent as X-Auth-Token.
    #[arg(long, env = "S2S_TOKEN", global = true, hide_env_values = true)]
    pub(super) token: Option<String>,
    #[arg(long, env = "S2S_REGION", default_value = "fr-par", global = true)]
    pub(super) region: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table", global = true)]
    pub(super) output: Output,
    /// After a create, update or delete of a VPN gateway or a connection,
    /// wait until it settles: a VPN gateway active (or gone), a connection
    /// active (or gone). A progress line goes to standard error at each
    /// status change; the resource as it settled is printed.
    #[arg(long, global = true)]
    pub(super) wait: bool,
    /// How long `--wait` waits, in seconds, before failing.
    #[arg(long, default_value_t = 300, global = true, value_name = "SECONDS")]
    pub(super) wait_timeout: u64,
    #[command(subcommand)]
    pub(super) cmd: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(super) enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand, Debug)]
pub(super) enum Cmd {
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
pub(super) enum SecretCmd {
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
pub(super) enum TypeCmd {
    List(Page),
}

#[derive(Args, Debug, Default)]
pub(super) struct Page {
    #[arg(long)]
    pub(super) page: Option<u32>,
    #[arg(long)]
    pub(super) page_size: Option<u32>,
}

#[derive(Args, Debug, Default)]
pub(super) struct Common {
    #[command(flatten)]
    pub(super) page: Page,
    #[arg(long)]
    pub(super) order_by: Option<String>,
    /// Name substring.
    #[arg(long)]
    pub(super) name: Option<String>,
    /// Resources having all these tags.
    #[arg(long = "tag")]
    pub(super) tags: Vec<String>,
    #[arg(long)]
    pub(super) project_id: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(super) enum VgwCmd {
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
        /// Another gateway type of the host (its bandwidth applies to the
        /// running tunnels at once).
        #[arg(long)]
        gateway_type: Option<String>,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum CgwCmd {
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
pub(super) enum RpCmd {
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
pub(super) enum ConnCmd {
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
