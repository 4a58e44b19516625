//! The CLI's handle on the API (the typed client's transport,
//! [`gateway_api::client::Client`]) and the request pieces the commands build:
//! queries, cipher proposals, BGP configs, names and tags.

use super::*;
use gateway_api::client::ClientError;
use gateway_api::model::CipherRequest;
use gateway_api::ops::BgpConfigRequest;

pub(super) struct Client {
    pub(super) api: gateway_api::client::Client,
    pub(super) region: String,
}

pub(super) type Query = Vec<(&'static str, String)>;

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Api {
                status,
                message,
                body,
            } => CliError::Api {
                status,
                message,
                body,
            },
            ClientError::Transport { url, reason } | ClientError::Decode { url, reason } => {
                CliError::Transport { url, reason }
            }
        }
    }
}

impl Client {
    /// A JSON request through the typed client's transport; an empty
    /// answer (204) is `null`.
    pub(super) fn call(
        &self,
        method: &str,
        path: &str,
        query: &Query,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        Ok(self.api.call(method, path, query, body)?)
    }

    /// One request; the raw body of a success (empty for 204), Scaleway's
    /// error body turned into [`CliError::Api`] otherwise.
    pub(super) fn send(
        &self,
        method: &str,
        path: &str,
        query: &Query,
        body: Option<Value>,
        accept: &str,
    ) -> Result<(String, String), CliError> {
        Ok(self.api.send(method, path, query, body, accept)?)
    }

    pub(super) fn s2s(&self, rest: &str) -> String {
        self.api.s2s(rest)
    }
}

pub(super) fn push_opt<T: ToString>(q: &mut Query, k: &'static str, v: &Option<T>) {
    if let Some(v) = v {
        q.push((k, v.to_string()));
    }
}

pub(super) fn push_all(q: &mut Query, k: &'static str, v: &[String]) {
    q.extend(v.iter().map(|x| (k, x.clone())));
}

pub(super) fn page_query(p: &Page) -> Query {
    let mut q = Query::new();
    push_opt(&mut q, "page", &p.page);
    push_opt(&mut q, "page_size", &p.page_size);
    q
}

pub(super) fn common_query(c: &Common) -> Query {
    let mut q = page_query(&c.page);
    push_opt(&mut q, "order_by", &c.order_by);
    push_opt(&mut q, "name", &c.name);
    push_opt(&mut q, "project_id", &c.project_id);
    push_all(&mut q, "tags", &c.tags);
    q
}

/// A request body: the typed request as the client sends it.
pub(super) fn body(req: &impl serde::Serialize) -> Result<Value, CliError> {
    Ok(gateway_api::client::body_of(req)?)
}

/// `--ike` / `--esp` values in the compact form (`aes256-sha256-modp2048`).
pub(super) fn ciphers(list: &[String]) -> Result<Vec<CipherRequest>, CliError> {
    list.iter()
        .map(|s| CipherRequest::parse_compact(s).map_err(CliError::Argument))
        .collect()
}

/// `--ike` / `--esp` of an update: only when given.
pub(super) fn ciphers_if_any(list: &[String]) -> Result<Option<Vec<CipherRequest>>, CliError> {
    Ok(if list.is_empty() {
        None
    } else {
        Some(ciphers(list)?)
    })
}

pub(super) fn bgp_config(
    policy: &Option<String>,
    interco: &Option<String>,
    flag: &str,
) -> Result<Option<BgpConfigRequest>, CliError> {
    match (policy, interco) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(CliError::Argument(format!(
            "--bgp-{flag} needs --routing-policy-{flag}"
        ))),
        (Some(p), None) => Ok(Some(BgpConfigRequest {
            routing_policy_id: Some(p.clone()),
            ..Default::default()
        })),
        (Some(p), Some(i)) => {
            let (a, b) = i.split_once(',').ok_or_else(|| {
                CliError::Argument(format!(
                    "--bgp-{flag} is OURS,PEER (e.g. 169.254.0.1/30,169.254.0.2/30)"
                ))
            })?;
            Ok(Some(BgpConfigRequest {
                routing_policy_id: Some(p.clone()),
                private_ip: Some(a.to_owned()),
                peer_private_ip: Some(b.to_owned()),
            }))
        }
    }
}

/// The tags of an update: sent when given, or (`clear`) as an empty list.
pub(super) fn tags_update(tags: Vec<String>, clear: bool) -> Option<Vec<String>> {
    (!tags.is_empty() || clear).then_some(tags)
}
