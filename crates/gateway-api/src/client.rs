//! The typed client of the API: the server's own wire types ([`crate::model`]
//! for resources, the request types of [`crate::ops`] for bodies) over plain
//! HTTP (`ureq`, blocking; the API listens on a local or management
//! address, so no TLS stack). `s2sctl` sends its requests through
//! [`Client::send`]; the lab, the benchmarks and the tests call the typed
//! methods instead of spawning `s2sctl` and parsing its output.
//!
//! Errors keep Scaleway's shape: an answer other than 2xx is
//! [`ClientError::Api`] with the status, the `message` and the whole body.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Connection, CustomerGateway, GatewayType, RoutingPolicy, VpnGateway};
use crate::ops::{
    ChangePskRequest, CreateConnectionRequest, CreateCustomerGatewayRequest,
    CreateRoutingPolicyRequest, CreateSecretRequest, CreateSecretVersionRequest,
    CreateVpnGatewayRequest, RenewPskRequest, RoutingPolicyOneOf, SecretRef,
    UpdateConnectionRequest,
};

/// Query parameters, in order (repeated keys for lists).
pub type Query = Vec<(&'static str, String)>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("API error (HTTP {status}): {message}")]
    Api {
        status: u16,
        message: String,
        body: Value,
    },
    #[error("cannot reach the API at {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("unexpected answer from {url}: {reason}")]
    Decode { url: String, reason: String },
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What `POST connections` answers: the connection, and the deprecated
/// `pre_shared_key` (always null: the PSK is only served by the Secret
/// Manager).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateConnectionResponse {
    pub connection: Connection,
    #[serde(default)]
    pub pre_shared_key: Option<String>,
}

/// The fields of the Secret Manager's `Secret` the callers use (the rest
/// of the SDK's message is ignored).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Secret {
    pub id: String,
    pub name: String,
    pub project_id: String,
}

/// One page of a list and the total the filters match.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total_count: u64,
}

/// A client of one API endpoint, with one secret key, in one region.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    region: String,
    agent: ureq::Agent,
}

/// Never the secret key.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `base`: `http://host:port`; `token`: the secret key sent as
    /// `X-Auth-Token`.
    pub fn new(base: &str, token: &str, region: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            region: region.to_owned(),
            agent: ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(30))
                .build(),
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// The path of an s2s-vpn resource in this region.
    pub fn s2s(&self, rest: &str) -> String {
        format!("/s2s-vpn/v1alpha1/regions/{}/{rest}", self.region)
    }

    /// The path of a Secret Manager resource in this region.
    pub fn secrets(&self, rest: &str) -> String {
        format!("/secret-manager/v1beta1/regions/{}/{rest}", self.region)
    }

    /// One request; the URL and the raw body of a success (empty for 204),
    /// Scaleway's error body turned into [`ClientError::Api`] otherwise.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
        accept: &str,
    ) -> Result<(String, String), ClientError> {
        let url = format!("{}{}", self.base, path);
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
            Ok(r) if r.status() == 204 => Ok((url, String::new())),
            Ok(r) => match r.into_string() {
                Ok(text) => Ok((url, text)),
                Err(e) => Err(ClientError::Transport {
                    url,
                    reason: e.to_string(),
                }),
            },
            Err(ureq::Error::Status(status, r)) => {
                let body: Value = r.into_json().unwrap_or(Value::Null);
                let message = body
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
                    .to_owned();
                Err(ClientError::Api {
                    status,
                    message,
                    body,
                })
            }
            Err(e) => Err(ClientError::Transport {
                url,
                reason: e.to_string(),
            }),
        }
    }

    /// A JSON request whose answer is decoded as `T` (`Value` for any; an
    /// empty answer is `null`).
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<T, ClientError> {
        let (url, text) = self.send(method, path, query, body, "application/json")?;
        let text = if text.trim().is_empty() {
            "null"
        } else {
            &text
        };
        serde_json::from_str(text).map_err(|e| ClientError::Decode {
            url,
            reason: format!("not the expected JSON: {e}"),
        })
    }

    fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        self.call("POST", path, &[], Some(body_of(body)?))
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call("GET", path, &[], None)
    }

    fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.send("DELETE", path, &[], None, "application/json")
            .map(|_| ())
    }

    /// One page of the list at `path` (whose items are under `key`).
    pub fn list_page<T: DeserializeOwned>(
        &self,
        path: &str,
        key: &str,
        query: &[(&str, String)],
    ) -> Result<Page<T>, ClientError> {
        let mut v: Value = self.call("GET", path, query, None)?;
        let decode = |reason: String| ClientError::Decode {
            url: format!("{}{path}", self.base),
            reason,
        };
        let total_count = v["total_count"]
            .as_u64()
            .ok_or_else(|| decode("no total_count".into()))?;
        let items =
            serde_json::from_value(v[key].take()).map_err(|e| decode(format!("{key}: {e}")))?;
        Ok(Page { items, total_count })
    }

    /// Every item of the list at `path`, page by page (100 per page, as
    /// the SDK's `list_all`).
    pub fn list_all<T: DeserializeOwned>(
        &self,
        path: &str,
        key: &str,
        filters: &[(&str, String)],
    ) -> Result<Vec<T>, ClientError> {
        let mut all = Vec::new();
        for page in 1u32.. {
            let mut q: Vec<(&str, String)> = filters.to_vec();
            q.push(("page", page.to_string()));
            q.push(("page_size", "100".into()));
            let p: Page<T> = self.list_page(path, key, &q)?;
            let n = p.items.len();
            all.extend(p.items);
            if n == 0 || all.len() as u64 >= p.total_count {
                break;
            }
        }
        Ok(all)
    }

    pub fn gateway_types(&self) -> Result<Vec<GatewayType>, ClientError> {
        self.list_all(&self.s2s("vpn-gateway-types"), "gateway_types", &[])
    }

    pub fn create_vpn_gateway(
        &self,
        req: &CreateVpnGatewayRequest,
    ) -> Result<VpnGateway, ClientError> {
        self.post(&self.s2s("vpn-gateways"), req)
    }

    pub fn vpn_gateway(&self, id: &str) -> Result<VpnGateway, ClientError> {
        self.get(&self.s2s(&format!("vpn-gateways/{id}")))
    }

    pub fn vpn_gateways(&self, filters: &[(&str, String)]) -> Result<Vec<VpnGateway>, ClientError> {
        self.list_all(&self.s2s("vpn-gateways"), "gateways", filters)
    }

    pub fn delete_vpn_gateway(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&self.s2s(&format!("vpn-gateways/{id}")))
    }

    pub fn create_customer_gateway(
        &self,
        req: &CreateCustomerGatewayRequest,
    ) -> Result<CustomerGateway, ClientError> {
        self.post(&self.s2s("customer-gateways"), req)
    }

    pub fn customer_gateway(&self, id: &str) -> Result<CustomerGateway, ClientError> {
        self.get(&self.s2s(&format!("customer-gateways/{id}")))
    }

    pub fn customer_gateways(
        &self,
        filters: &[(&str, String)],
    ) -> Result<Vec<CustomerGateway>, ClientError> {
        self.list_all(&self.s2s("customer-gateways"), "gateways", filters)
    }

    pub fn delete_customer_gateway(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&self.s2s(&format!("customer-gateways/{id}")))
    }

    pub fn create_routing_policy(
        &self,
        req: &CreateRoutingPolicyRequest,
    ) -> Result<RoutingPolicy, ClientError> {
        self.post(&self.s2s("routing-policies"), req)
    }

    pub fn routing_policy(&self, id: &str) -> Result<RoutingPolicy, ClientError> {
        self.get(&self.s2s(&format!("routing-policies/{id}")))
    }

    pub fn routing_policies(
        &self,
        filters: &[(&str, String)],
    ) -> Result<Vec<RoutingPolicy>, ClientError> {
        self.list_all(&self.s2s("routing-policies"), "routing_policies", filters)
    }

    pub fn delete_routing_policy(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&self.s2s(&format!("routing-policies/{id}")))
    }

    pub fn create_connection(
        &self,
        req: &CreateConnectionRequest,
    ) -> Result<CreateConnectionResponse, ClientError> {
        self.post(&self.s2s("connections"), req)
    }

    pub fn connection(&self, id: &str) -> Result<Connection, ClientError> {
        self.get(&self.s2s(&format!("connections/{id}")))
    }

    pub fn connections(&self, filters: &[(&str, String)]) -> Result<Vec<Connection>, ClientError> {
        self.list_all(&self.s2s("connections"), "connections", filters)
    }

    pub fn update_connection(
        &self,
        id: &str,
        req: &UpdateConnectionRequest,
    ) -> Result<Connection, ClientError> {
        let path = self.s2s(&format!("connections/{id}"));
        self.call("PATCH", &path, &[], Some(body_of(req)?))
    }

    pub fn delete_connection(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&self.s2s(&format!("connections/{id}")))
    }

    /// `POST connections/{id}/{action}` with `body`.
    fn connection_action<T: DeserializeOwned>(
        &self,
        id: &str,
        action: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        self.post(&self.s2s(&format!("connections/{id}/{action}")), body)
    }

    pub fn set_route_propagation(
        &self,
        id: &str,
        enabled: bool,
    ) -> Result<Connection, ClientError> {
        let action = if enabled {
            "enable-route-propagation"
        } else {
            "disable-route-propagation"
        };
        self.connection_action(id, action, &serde_json::json!({}))
    }

    pub fn set_routing_policy(
        &self,
        id: &str,
        req: &RoutingPolicyOneOf,
    ) -> Result<Connection, ClientError> {
        self.connection_action(id, "set-routing-policy", req)
    }

    pub fn detach_routing_policy(
        &self,
        id: &str,
        req: &RoutingPolicyOneOf,
    ) -> Result<Connection, ClientError> {
        self.connection_action(id, "detach-routing-policy", req)
    }

    pub fn renew_psk(
        &self,
        id: &str,
        req: &RenewPskRequest,
    ) -> Result<CreateConnectionResponse, ClientError> {
        self.connection_action(id, "renew-psk", req)
    }

    /// Points the connection at revision `revision` (the latest if `None`)
    /// of a secret of the caller's.
    pub fn change_psk(
        &self,
        id: &str,
        secret_id: &str,
        revision: Option<u32>,
    ) -> Result<Connection, ClientError> {
        let req = ChangePskRequest {
            secret: Some(SecretRef {
                id: Some(secret_id.to_owned()),
                revision,
            }),
        };
        // Answered like `renew-psk`: the connection, wrapped.
        let r: CreateConnectionResponse = self.connection_action(id, "change-psk", &req)?;
        Ok(r.connection)
    }

    pub fn create_secret(&self, req: &CreateSecretRequest) -> Result<Secret, ClientError> {
        self.post(&self.secrets("secrets"), req)
    }

    /// Adds `psk` as the secret's new latest version; its revision. The PSK
    /// travels base64 in the body and is never logged.
    pub fn add_secret_version(&self, secret_id: &str, psk: &[u8]) -> Result<u32, ClientError> {
        use base64::Engine as _;
        let req = CreateSecretVersionRequest {
            data: Some(base64::engine::general_purpose::STANDARD.encode(psk)),
            ..Default::default()
        };
        let path = self.secrets(&format!("secrets/{secret_id}/versions"));
        let v: Value = self.post(&path, &req)?;
        v["revision"]
            .as_u64()
            .and_then(|r| u32::try_from(r).ok())
            .ok_or_else(|| ClientError::Decode {
                url: format!("{}{path}", self.base),
                reason: "no revision in the answer".into(),
            })
    }

    /// The configuration of the customer's device for `vendor` (`bird`,
    /// `frr`, `strongswan`, ...), as text.
    pub fn device_config(&self, id: &str, vendor: &str) -> Result<String, ClientError> {
        self.send(
            "GET",
            &self.s2s(&format!("connections/{id}/device-config")),
            &[("vendor", vendor.to_owned())],
            None,
            "text/plain",
        )
        .map(|(_, text)| text)
    }

    /// The PSK of `revision` of a connection's secret (the Secret Manager's
    /// `access`, base64-decoded). The caller must not log it.
    pub fn psk(&self, secret_id: &str, revision: u32) -> Result<Vec<u8>, ClientError> {
        use base64::Engine as _;
        let path = self.secrets(&format!("secrets/{secret_id}/versions/{revision}/access"));
        let v: Value = self.get(&path)?;
        let data = v["data"].as_str().unwrap_or_default();
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| ClientError::Decode {
                url: format!("{}{path}", self.base),
                reason: format!("data is not base64: {e}"),
            })
    }
}

/// A request body as JSON without its unset fields (the server reads a
/// missing field and a null alike; an update sends only what it changes).
pub fn body_of(req: &impl Serialize) -> Result<Value, ClientError> {
    let mut v = serde_json::to_value(req).map_err(|e| ClientError::Decode {
        url: String::new(),
        reason: format!("request not serialisable: {e}"),
    })?;
    drop_nulls(&mut v);
    Ok(v)
}

fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_key() {
        let c = Client::new("http://127.0.0.1:8080", "secret-key-1234", "fr-par");
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret-key-1234"), "{shown}");
        assert!(shown.contains("127.0.0.1:8080"), "{shown}");
    }

    #[test]
    fn bodies_leave_unset_fields_out() {
        let req = CreateRoutingPolicyRequest {
            name: Some("p".into()),
            prefix_filter_in: Some(vec!["203.0.113.0/24".into()]),
            ..Default::default()
        };
        let v = body_of(&req).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name": "p", "prefix_filter_in": ["203.0.113.0/24"]})
        );
    }
}
