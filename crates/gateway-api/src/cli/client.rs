//! The HTTP client of the API (plain HTTP through `ureq`) and the request
//! pieces the commands build: queries, cipher proposals, BGP configs, names
//! and tags.

use super::*;

pub(super) struct Client {
    pub(super) base: String,
    pub(super) token: String,
    pub(super) region: String,
    pub(super) agent: ureq::Agent,
}

pub(super) type Query = Vec<(&'static str, String)>;

impl Client {
    pub(super) fn call(
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
    pub(super) fn send(
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

    pub(super) fn s2s(&self, rest: &str) -> String {
        format!("/s2s-vpn/v1alpha1/regions/{}/{rest}", self.region)
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

pub(super) fn ciphers(list: &[String]) -> Result<Vec<Value>, CliError> {
    list.iter().map(|s| parse_cipher(s)).collect()
}

pub(super) fn bgp_config(
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

pub(super) fn name_tags(name: &Option<String>, tags: &[String], clear: bool) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(n) = name {
        m.insert("name".into(), json!(n));
    }
    if !tags.is_empty() || clear {
        m.insert("tags".into(), json!(tags));
    }
    m
}
