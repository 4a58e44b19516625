//! The resource API of the gateway: the four resources of Scaleway's
//! Site-to-Site VPN (`s2s-vpn/v1alpha1`, wire-compatible with the official
//! SDK) and their rules (`model`, `ops`), their persistence (`store`), the
//! pre-shared keys (`secrets`), the HTTP server (`api`) and the typed
//! client of that server (`client`, on which the `s2sctl` crate is built).
//! The agent reads desired state and writes statuses through
//! [`store::Store`].

pub mod api;
pub mod client;
pub mod device_config;
pub mod error;
pub mod model;
pub mod ops;
pub mod secrets;
pub mod store;

pub use api::{router, router_live, serve, serve_live, serve_with_shutdown, ServeError};
pub use error::ApiError;
pub use secrets::Psk;
pub use store::{
    ConnectionEvent, ConnectionSpec, ConnectionStatusUpdate, DesiredState, Store, StoreError,
    TunnelSpec, VpnGatewaySpec,
};

/// A random (version 4) UUID, the id format of every resource.
pub fn new_id() -> Result<String, ApiError> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|_| ApiError::internal(secrets::SecretError::Random))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// One pass of the agent's part in VPN gateway lifecycles, without a data
/// plane (`s2s-apiserver --simulate-agent`, tests): provisioning becomes
/// active, deprovisioning finishes.
pub fn simulate_agent(store: &Store, config: &gateway_config::Config) {
    let Ok(state) = store.desired_state(config) else {
        return;
    };
    for g in state.vpn_gateways.into_iter().map(|s| s.gateway) {
        let r = match g.status {
            model::VpnGatewayStatus::Provisioning => {
                store.set_vpn_gateway_status(&g.id, model::VpnGatewayStatus::Active)
            }
            model::VpnGatewayStatus::Deprovisioning => {
                store.finish_vpn_gateway_deletion(&g.id).map(|_| ())
            }
            _ => Ok(()),
        };
        if let Err(e) = r {
            tracing::warn!(gateway = %g.id, error = %e, "simulated agent failed");
        }
    }
}

/// Now, as RFC 3339 in UTC (what the SDK's `isoparse` reads).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_uuid_v4() {
        let a = super::new_id().unwrap();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(a, super::new_id().unwrap());
    }
}
