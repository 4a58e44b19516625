//! The lab's calls to its gateway's API: the typed client
//! (`gateway_api::client`) run inside gw, and the few requests the steps
//! and scenarios share.

use super::*;

/// The API as the lab's gateway serves it, inside gw.
pub(super) const API_URL: &str = "http://127.0.0.1:8080";

/// Runs `f` with the typed API client inside gw.
pub(super) fn api<T: Send + 'static>(
    f: impl FnOnce(&Client) -> Result<T, ClientError> + Send + 'static,
) -> anyhow::Result<T> {
    labkit::gateway::with_api(&GW.name(), API_URL, TOKEN, f)
}

/// The connection as the API reports it.
pub(super) fn connection(id: &str) -> anyhow::Result<Connection> {
    let id = id.to_owned();
    api(move |c| c.connection(&id))
}

/// The connection's device config for `vendor`, as the API serves it.
pub(super) fn device_config(id: &str, vendor: &'static str) -> anyhow::Result<String> {
    let id = id.to_owned();
    api(move |c| c.device_config(&id, vendor))
}

pub(super) fn set_route_propagation(id: &str, enabled: bool) -> anyhow::Result<()> {
    let id = id.to_owned();
    api(move |c| c.set_route_propagation(&id, enabled)).map(|_| ())
}

pub(super) fn update_connection(id: &str, req: UpdateConnectionRequest) -> anyhow::Result<()> {
    let id = id.to_owned();
    api(move |c| c.update_connection(&id, &req)).map(|_| ())
}

/// The IPv6 routing policy `id` as `set-`/`detach-routing-policy` name it.
pub(super) fn v6_policy(id: &str) -> RoutingPolicyOneOf {
    RoutingPolicyOneOf {
        routing_policy_v6: Some(id.to_owned()),
        ..Default::default()
    }
}

/// A cipher in s2sctl's compact form (`aes256gcm-sha256-curve25519`).
pub(super) fn cipher(s: &str) -> anyhow::Result<CipherRequest> {
    CipherRequest::parse_compact(s).map_err(|e| anyhow!(e))
}

/// One line of a connection's statuses, for progress output.
pub(super) fn status_line(c: &Connection) -> String {
    let opt = |t: Option<TunnelStatus>| t.map_or("-", TunnelStatus::as_str);
    format!(
        "status={} tunnel_ipv4={} tunnel_ipv6={} bgp_ipv4={} bgp_ipv6={}",
        c.status,
        opt(c.tunnel_status_ipv4),
        opt(c.tunnel_status_ipv6),
        c.bgp_status_ipv4,
        c.bgp_status_ipv6,
    )
}
