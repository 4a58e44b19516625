//! Prometheus exposition (`/metrics`, text format 0.0.4): per-tunnel
//! packets/bytes from the XDP per-CPU maps and from the ESP workers and slow
//! path, XDP drops by reason, IKE/CHILD SA state, rekeys, BGP session states
//! and prefix counts, and connection statuses. It only reads: the agent's
//! runtime publishes a [`Snapshot`] of what it runs.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, RwLock};

use gateway_common::{Direction, DropReason};
use gateway_esp::table::DataPlane;

use crate::dataplane::backend::GatewayDataPlane;
use crate::dataplane::xdp::XdpDataplane;

/// One tunnel as the runtime knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunnelInfo {
    pub name: String,
    pub connection: String,
    pub family: &'static str,
    pub id: u32,
    pub ike_up: bool,
    pub child_installed: bool,
    pub child_sas_installed: u64,
    /// When the CHILD SA that sends now was installed.
    pub child_since: Option<std::time::Instant>,
}

/// One BGP session as the runtime knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionInfo {
    pub name: String,
    pub connection: String,
    pub family: &'static str,
    pub up: bool,
    /// Routes of this session installed in the data plane.
    pub routes: u64,
    /// While the session's own tunnel is down: the tunnel its routes and
    /// its BGP traffic fail over to.
    pub failover_via: Option<String>,
    /// Prefixes received (Adj-RIB-In) and, of those, accepted by import
    /// policy, as of the agent's last count.
    pub prefixes: Option<(u64, u64)>,
}

/// One connection's reported status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub id: String,
    pub status: &'static str,
}

/// What the runtime publishes after each change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub tunnels: Vec<TunnelInfo>,
    pub sessions: Vec<SessionInfo>,
    pub connections: Vec<ConnectionInfo>,
    /// Tunnels configured since the daemon started (each takes a tunnel id).
    pub tunnels_created: u64,
    /// The agent's last pass brought up everything the store plans
    /// (every tunnel and BGP session configured): what `/readyz` reports.
    pub converged: bool,
    /// IKE SAs that were never established, by reason (see
    /// [`failure_reason`]), since the daemon started.
    pub negotiation_failures: std::collections::BTreeMap<&'static str, u64>,
    /// IKE SAs and CHILD SAs replaced by a rekey since the daemon started.
    pub ike_rekeys: u64,
    pub child_rekeys: u64,
    /// The IKE driver's SAs by state, as of the agent's last count (`None`
    /// until the driver runs).
    pub census: Option<gateway_ike::Census>,
}

/// The `reason` label of a failed IKE negotiation.
pub fn failure_reason(r: &gateway_ike::DownReason) -> &'static str {
    use gateway_ike::DownReason::*;
    match r {
        NoProposalChosen => "no_proposal_chosen",
        AuthenticationFailed => "authentication_failed",
        PeerAuthenticationFailed => "peer_authentication_failed",
        HalfOpenTimeout | PeerUnreachable => "timeout",
        // RFC 7296 notify types.
        Protocol(38) => "ts_unacceptable",
        Protocol(17) => "invalid_ke",
        Protocol(_) => "protocol_error",
        Overload => "overload",
        Deleted | Removed | Replaced => "other",
    }
}

pub type SharedSnapshot = Arc<RwLock<Snapshot>>;

/// Label values are our own ids and fixed words, but escape anyway.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every metric.
pub fn render(
    snapshot: &Snapshot,
    dataplane: &dyn DataPlane,
    xdp: Option<&Mutex<XdpDataplane>>,
) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "s2s_build_info",
        "gauge",
        "Always 1; the daemon's version as a label.",
    );
    let _ = writeln!(
        out,
        "s2s_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    header(
        &mut out,
        "s2s_ike_negotiation_failures_total",
        "counter",
        "IKE SAs never established, by reason (ours and the peers' attempts).",
    );
    for (reason, n) in &snapshot.negotiation_failures {
        let _ = writeln!(
            out,
            "s2s_ike_negotiation_failures_total{{reason=\"{reason}\"}} {n}"
        );
    }
    header(
        &mut out,
        "s2s_rekeys_total",
        "counter",
        "IKE SAs and CHILD SAs replaced by a rekey (either side started it).",
    );
    for (kind, n) in [
        ("ike", snapshot.ike_rekeys),
        ("child", snapshot.child_rekeys),
    ] {
        let _ = writeln!(out, "s2s_rekeys_total{{kind=\"{kind}\"}} {n}");
    }
    if let Some(census) = &snapshot.census {
        header(
            &mut out,
            "s2s_ike_sas",
            "gauge",
            "IKE SAs by state (connecting: IKE_SA_INIT/IKE_AUTH in progress, ours or a peer's).",
        );
        for (state, n) in census.ike() {
            let _ = writeln!(out, "s2s_ike_sas{{state=\"{state}\"}} {n}");
        }
        header(
            &mut out,
            "s2s_child_sas",
            "gauge",
            "CHILD SAs by state (rekeyed: replaced, waiting for its DELETE or grace period).",
        );
        for (state, n) in census.child() {
            let _ = writeln!(out, "s2s_child_sas{{state=\"{state}\"}} {n}");
        }
    }
    header(
        &mut out,
        "s2s_child_sa_age_seconds",
        "gauge",
        "Age of the CHILD SA each tunnel sends on.",
    );
    let now = std::time::Instant::now();
    for t in &snapshot.tunnels {
        if let Some(since) = t.child_since {
            let _ = writeln!(
                out,
                "s2s_child_sa_age_seconds{{tunnel=\"{}\"}} {}",
                esc(&t.name),
                now.saturating_duration_since(since).as_secs()
            );
        }
    }
    header(
        &mut out,
        "s2s_tunnel_up",
        "gauge",
        "1 when the tunnel's IKE SA is established and a CHILD SA installed.",
    );
    for t in &snapshot.tunnels {
        let _ = writeln!(
            out,
            "s2s_tunnel_up{{tunnel=\"{}\",connection=\"{}\",family=\"{}\"}} {}",
            esc(&t.name),
            esc(&t.connection),
            t.family,
            u8::from(t.ike_up && t.child_installed)
        );
    }
    header(
        &mut out,
        "s2s_child_sa_installs_total",
        "counter",
        "CHILD SAs installed in the data plane (the first one and every rekey).",
    );
    for t in &snapshot.tunnels {
        let _ = writeln!(
            out,
            "s2s_child_sa_installs_total{{tunnel=\"{}\"}} {}",
            esc(&t.name),
            t.child_sas_installed
        );
    }
    let counters: Vec<_> = snapshot
        .tunnels
        .iter()
        .filter_map(|t| dataplane.tunnel_counters(t.id).map(|c| (t, c)))
        .collect();
    for (metric, help, get) in [
        (
            "s2s_esp_packets_total",
            "ESP packets processed by the workers and the slow path.",
            0,
        ),
        (
            "s2s_esp_bytes_total",
            "Inner bytes processed by the workers and the slow path.",
            1,
        ),
        (
            "s2s_esp_errors_total",
            "Packets dropped by the ESP engine (encap errors, decap drops).",
            2,
        ),
    ] {
        header(&mut out, metric, "counter", help);
        for (t, c) in &counters {
            let (tx, rx) = match get {
                0 => (c.tx_packets, c.rx_packets),
                1 => (c.tx_bytes, c.rx_bytes),
                _ => (c.tx_errors, c.rx_drops),
            };
            let _ = writeln!(
                out,
                "{metric}{{tunnel=\"{}\",direction=\"outbound\"}} {tx}",
                esc(&t.name)
            );
            let _ = writeln!(
                out,
                "{metric}{{tunnel=\"{}\",direction=\"inbound\"}} {rx}",
                esc(&t.name)
            );
        }
    }
    header(
        &mut out,
        "s2s_tunnels_created_total",
        "counter",
        "Tunnels configured since the daemon started (tunnel ids are reused).",
    );
    let _ = writeln!(
        out,
        "s2s_tunnels_created_total {}",
        snapshot.tunnels_created
    );
    header(
        &mut out,
        "s2s_tunnel_drops_total",
        "counter",
        "Inbound ESP of a known SA dropped, per tunnel and reason: replay (anti-replay window), auth_failed (integrity check), inner_source (an inner source the connection may not send from), malformed (the rest).",
    );
    for (t, c) in &counters {
        let malformed = c
            .rx_drops
            .saturating_sub(c.rx_source_refused + c.rx_replay + c.rx_auth_failed);
        for (reason, n) in [
            ("replay", c.rx_replay),
            ("auth_failed", c.rx_auth_failed),
            ("inner_source", c.rx_source_refused),
            ("malformed", malformed),
        ] {
            let _ = writeln!(
                out,
                "s2s_tunnel_drops_total{{tunnel=\"{}\",reason=\"{reason}\"}} {n}",
                esc(&t.name)
            );
        }
    }
    if let Some(xdp) = xdp {
        let xdp = xdp.lock().unwrap_or_else(|p| p.into_inner());
        header(
            &mut out,
            "s2s_xdp_packets_total",
            "counter",
            "Frames the XDP programs selected for a tunnel's fast path.",
        );
        let mut bytes = String::new();
        let mut no_socket = String::new();
        for t in &snapshot.tunnels {
            for (dir, label) in [
                (Direction::Inbound, "inbound"),
                (Direction::Outbound, "outbound"),
            ] {
                if let Ok(s) = xdp.tunnel_stats(t.id, dir) {
                    let labels = format!("tunnel=\"{}\",direction=\"{label}\"", esc(&t.name));
                    let _ = writeln!(out, "s2s_xdp_packets_total{{{labels}}} {}", s.packets);
                    let _ = writeln!(bytes, "s2s_xdp_bytes_total{{{labels}}} {}", s.bytes);
                    let _ = writeln!(
                        no_socket,
                        "s2s_xdp_no_socket_total{{{labels}}} {}",
                        s.no_socket
                    );
                }
            }
        }
        header(
            &mut out,
            "s2s_xdp_bytes_total",
            "counter",
            "Bytes (Ethernet header included) of those frames.",
        );
        out.push_str(&bytes);
        header(
            &mut out,
            "s2s_xdp_no_socket_total",
            "counter",
            "Of those, frames passed to the kernel because no AF_XDP socket was bound.",
        );
        out.push_str(&no_socket);
        header(
            &mut out,
            "s2s_xdp_drops_total",
            "counter",
            "Frames dropped by the XDP programs, by reason.",
        );
        if let Ok(drops) = xdp.drops() {
            for (reason, n) in drops {
                let _ = writeln!(
                    out,
                    "s2s_xdp_drops_total{{reason=\"{}\"}} {n}",
                    reason.name()
                );
            }
        }
        let routes = xdp.route_table_usage();
        header(
            &mut out,
            "s2s_xdp_routes",
            "gauge",
            "Prefixes in the XDP route tables, by family.",
        );
        let _ = writeln!(
            out,
            "s2s_xdp_routes{{family=\"ipv4\"}} {}",
            routes.v4_prefixes
        );
        let _ = writeln!(
            out,
            "s2s_xdp_routes{{family=\"ipv6\"}} {}",
            routes.v6_prefixes
        );
        header(
            &mut out,
            "s2s_xdp_route_groups_v4",
            "gauge",
            "Groups of the IPv4 table (one per /24 holding prefixes longer than /24) in use, and the limit.",
        );
        let _ = writeln!(
            out,
            "s2s_xdp_route_groups_v4{{state=\"used\"}} {}",
            routes.v4_groups_used
        );
        let _ = writeln!(
            out,
            "s2s_xdp_route_groups_v4{{state=\"limit\"}} {}",
            routes.v4_groups_limit
        );
        header(
            &mut out,
            "s2s_xdp_route_slow_24s_v4",
            "gauge",
            "IPv4 /24s whose packets the XDP route table leaves to the kernel (slow path) because no group was free.",
        );
        let _ = writeln!(out, "s2s_xdp_route_slow_24s_v4 {}", routes.v4_punted);
    }
    header(
        &mut out,
        "s2s_bgp_session_up",
        "gauge",
        "1 when the BGP session is Established.",
    );
    for s in &snapshot.sessions {
        let _ = writeln!(
            out,
            "s2s_bgp_session_up{{session=\"{}\",connection=\"{}\",family=\"{}\"}} {}",
            esc(&s.name),
            esc(&s.connection),
            s.family,
            u8::from(s.up)
        );
    }
    header(
        &mut out,
        "s2s_bgp_routes_installed",
        "gauge",
        "Prefixes learned on the session and installed (allowed, propagation on, best).",
    );
    for s in &snapshot.sessions {
        let _ = writeln!(
            out,
            "s2s_bgp_routes_installed{{session=\"{}\"}} {}",
            esc(&s.name),
            s.routes
        );
    }
    header(
        &mut out,
        "s2s_bgp_prefixes",
        "gauge",
        "Prefixes per session: received (Adj-RIB-In), accepted by import policy (routing policy, propagation), rejected by it.",
    );
    for s in &snapshot.sessions {
        if let Some((received, accepted)) = s.prefixes {
            let rejected = received.saturating_sub(accepted);
            for (what, n) in [
                ("received", received),
                ("accepted", accepted),
                ("rejected", rejected),
            ] {
                let _ = writeln!(
                    out,
                    "s2s_bgp_prefixes{{session=\"{}\",state=\"{what}\"}} {n}",
                    esc(&s.name)
                );
            }
        }
    }
    header(
        &mut out,
        "s2s_bgp_session_failover",
        "gauge",
        "1 while the session's own tunnel is down and its routes and BGP traffic go through the tunnel `via`.",
    );
    for s in &snapshot.sessions {
        let _ = writeln!(
            out,
            "s2s_bgp_session_failover{{session=\"{}\",via=\"{}\"}} {}",
            esc(&s.name),
            esc(s.failover_via.as_deref().unwrap_or("")),
            u8::from(s.failover_via.is_some())
        );
    }
    header(
        &mut out,
        "s2s_connection_status",
        "gauge",
        "1 for the connection's current status (active, limited_connectivity, down).",
    );
    for c in &snapshot.connections {
        for st in ["active", "limited_connectivity", "down"] {
            let _ = writeln!(
                out,
                "s2s_connection_status{{connection=\"{}\",status=\"{st}\"}} {}",
                esc(&c.id),
                u8::from(c.status == st)
            );
        }
    }
    // Keep the enum in the exposition even without XDP so dashboards see
    // every reason name once.
    if xdp.is_none() {
        let _ = writeln!(
            out,
            "# XDP fast path off: s2s_xdp_* absent ({} drop reasons known)",
            DropReason::ALL.len()
        );
    }
    out
}

/// Packet sizes through the tunnels: each tunnel's inner MTU (what a
/// customer sets its own side to) and the SYNs whose MSS was clamped.
pub fn render_packet_sizes(snapshot: &Snapshot, dataplane: &GatewayDataPlane) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "s2s_tunnel_inner_mtu",
        "gauge",
        "Largest inner IP packet the tunnel carries (from the WAN MTU, the suite and the outer family); set once a CHILD SA is installed.",
    );
    for t in &snapshot.tunnels {
        if let Some(mtu) = dataplane.tunnel_inner_mtu(t.id) {
            let _ = writeln!(
                out,
                "s2s_tunnel_inner_mtu{{tunnel=\"{}\",connection=\"{}\",family=\"{}\"}} {mtu}",
                esc(&t.name),
                esc(&t.connection),
                t.family
            );
        }
    }
    header(
        &mut out,
        "s2s_tcp_mss_clamped_total",
        "counter",
        "TCP SYNs and SYN-ACKs whose MSS option was lowered to fit a tunnel (both directions, fast and slow path).",
    );
    let _ = writeln!(
        out,
        "s2s_tcp_mss_clamped_total {}",
        dataplane.tunnel_params().clamped_syns()
    );
    let police = dataplane.tunnel_params().police();
    header(
        &mut out,
        "s2s_tunnel_bandwidth_bits_per_second",
        "gauge",
        "The bandwidth a tunnel is policed at, both ways: its VPN gateway's type's, shared by the gateway's tunnels (absent: unlimited).",
    );
    for t in &snapshot.tunnels {
        if let Some(rate) = police.rate(t.id) {
            let _ = writeln!(
                out,
                "s2s_tunnel_bandwidth_bits_per_second{{tunnel=\"{}\"}} {rate}",
                esc(&t.name)
            );
        }
    }
    header(
        &mut out,
        "s2s_bandwidth_drops_total",
        "counter",
        "Inner packets dropped because their VPN gateway was past its bandwidth, fast and slow path.",
    );
    let d = police.dropped();
    let _ = writeln!(
        out,
        "s2s_bandwidth_drops_total{{direction=\"inbound\"}} {}",
        d.inbound
    );
    let _ = writeln!(
        out,
        "s2s_bandwidth_drops_total{{direction=\"outbound\"}} {}",
        d.outbound
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_esp::table::SaTable;

    #[test]
    fn renders_states_and_statuses() {
        let snap = Snapshot {
            tunnels: vec![TunnelInfo {
                name: "c1/v4".into(),
                connection: "c1".into(),
                family: "v4",
                id: 1,
                ike_up: true,
                child_installed: true,
                child_sas_installed: 2,
                child_since: Some(std::time::Instant::now() - std::time::Duration::from_secs(7)),
            }],
            sessions: vec![SessionInfo {
                name: "c1/v4".into(),
                connection: "c1".into(),
                family: "v4",
                up: false,
                routes: 0,
                failover_via: Some("c1/v6".into()),
                prefixes: Some((5, 3)),
            }],
            connections: vec![ConnectionInfo {
                id: "c1".into(),
                status: "limited_connectivity",
            }],
            tunnels_created: 3,
            converged: true,
            negotiation_failures: [("authentication_failed", 2), ("timeout", 1)]
                .into_iter()
                .collect(),
            ike_rekeys: 4,
            child_rekeys: 9,
            census: Some(gateway_ike::Census {
                ike_established: 2,
                ike_connecting: 1,
                child_installed: 2,
                child_rekeyed: 1,
                ..Default::default()
            }),
        };
        let table = crate::dataplane::backend::GatewayDataPlane::new(Arc::new(SaTable::new()));
        let c1 = snap.tunnels.iter().find(|t| t.name == "c1/v4").unwrap().id;
        table.set_bandwidth(c1, "vgw-1", 100_000_000);
        let sizes = render_packet_sizes(&snap, &table);
        assert!(sizes.contains("s2s_tunnel_bandwidth_bits_per_second{tunnel=\"c1/v4\"} 100000000"));
        assert!(sizes.contains("s2s_bandwidth_drops_total{direction=\"outbound\"} 0"));
        let text = render(&snap, &table, None);
        assert!(text.contains("s2s_tunnel_up{tunnel=\"c1/v4\",connection=\"c1\",family=\"v4\"} 1"));
        assert!(text.contains("s2s_child_sa_installs_total{tunnel=\"c1/v4\"} 2"));
        assert!(text
            .contains("s2s_bgp_session_up{session=\"c1/v4\",connection=\"c1\",family=\"v4\"} 0"));
        assert!(text.contains(
            "s2s_connection_status{connection=\"c1\",status=\"limited_connectivity\"} 1"
        ));
        assert!(text.contains("s2s_bgp_session_failover{session=\"c1/v4\",via=\"c1/v6\"} 1"));
        assert!(text.contains("s2s_connection_status{connection=\"c1\",status=\"active\"} 0"));
        assert!(text.contains(&format!(
            "s2s_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(
            text.contains("s2s_ike_negotiation_failures_total{reason=\"authentication_failed\"} 2")
        );
        assert!(text.contains("s2s_ike_negotiation_failures_total{reason=\"timeout\"} 1"));
        for line in [
            "s2s_rekeys_total{kind=\"ike\"} 4",
            "s2s_rekeys_total{kind=\"child\"} 9",
            "s2s_ike_sas{state=\"established\"} 2",
            "s2s_ike_sas{state=\"connecting\"} 1",
            "s2s_ike_sas{state=\"deleting\"} 0",
            "s2s_child_sas{state=\"installed\"} 2",
            "s2s_child_sas{state=\"rekeyed\"} 1",
            "s2s_bgp_prefixes{session=\"c1/v4\",state=\"received\"} 5",
            "s2s_bgp_prefixes{session=\"c1/v4\",state=\"accepted\"} 3",
            "s2s_bgp_prefixes{session=\"c1/v4\",state=\"rejected\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in {text}");
        }
        let age = text
            .lines()
            .find_map(|l| l.strip_prefix("s2s_child_sa_age_seconds{tunnel=\"c1/v4\"} "))
            .and_then(|v| v.parse::<u64>().ok());
        assert!(age.is_some_and(|a| a >= 7), "{text}");
        // Every sample line has a HELP'd metric name.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# HELP {name} ")), "{line}");
        }
    }

    /// The Grafana dashboard in config/grafana queries only metrics this
    /// module exports (a renamed metric would leave a panel empty).
    #[test]
    fn the_grafana_dashboard_queries_exported_metrics() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../config/grafana/s2s-gateway.json")).unwrap();
        let source = include_str!("metrics.rs");
        let mut queried = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let names: Vec<&str> = expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("s2s_"))
                    .collect();
                assert!(!names.is_empty(), "{expr}: no s2s_ metric");
                for name in names {
                    assert!(
                        source.contains(&format!("\"{name}\""))
                            || source.contains(&format!("\"{name}{{")),
                        "panel {:?} queries {name}, which /metrics does not export",
                        panel["title"]
                    );
                    queried += 1;
                }
            }
        }
        assert!(queried >= 10);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
