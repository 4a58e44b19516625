//! Secret Manager: create a secret, add a version, get a secret (the PSKs connections refer to).

use super::*;

/// PSKs given through Secret Manager must be at least this long (the whole
/// rule is [`crate::secrets::check_psk`]).
pub const MIN_PSK_LEN: usize = crate::secrets::MIN_PSK_LEN;

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct CreateSecretRequest {
    pub name: Option<String>,
    pub project_id: Option<String>,
    pub tags: Option<Vec<String>>,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub path: Option<String>,
    pub protected: Option<bool>,
}

/// The SDK's `Secret`, as stored in `secret_meta`.
pub(super) struct SecretMeta<'a> {
    id: &'a str,
    name: &'a str,
    project_id: &'a str,
    tags: &'a [String],
    description: Option<&'a str>,
    path: &'a str,
    protected: bool,
    /// Created by the VPN service (a connection's PSK), not by a caller.
    managed: bool,
}

pub(super) fn secret_json(config: &Config, m: &SecretMeta<'_>, now: &str) -> Value {
    json!({
        "id": m.id, "project_id": m.project_id, "name": m.name, "status": "ready",
        "created_at": now, "updated_at": now, "tags": m.tags, "version_count": 0,
        "description": m.description, "managed": m.managed, "protected": m.protected,
        "type": "opaque", "path": m.path, "used_by": [], "region": config.gateway.region,
    })
}

/// Records the metadata of a secret a connection generated.
pub(super) fn record_generated_secret(
    tx: &mut Tx<'_>,
    config: &Config,
    sid: &str,
    conn_id: &str,
    project_id: &str,
) -> Result<(), ApiError> {
    let now = crate::now_rfc3339();
    let meta = secret_json(
        config,
        &SecretMeta {
            id: sid,
            name: &format!("s2s-vpn-connection-{conn_id}"),
            project_id,
            tags: &[],
            description: Some("pre-shared key of a site-to-site VPN connection"),
            path: "/",
            protected: false,
            managed: true,
        },
        &now,
    );
    tx.put_secret_meta(sid, &meta)?;
    Ok(())
}

pub fn create_secret(
    tx: &mut Tx<'_>,
    config: &Config,
    req: CreateSecretRequest,
) -> Result<Value, ApiError> {
    let name = req.name.ok_or_else(|| ApiError::required("name"))?;
    validate_name("name", &name)?;
    let tags = req.tags.unwrap_or_default();
    validate_tags("tags", &tags)?;
    if let Some(t) = req
        .type_
        .as_deref()
        .filter(|t| *t != "unknown_type" && *t != "opaque")
    {
        return Err(ApiError::constraint(
            "type",
            format!("only opaque secrets are supported, not {t}"),
        ));
    }
    let path = req.path.unwrap_or_else(|| "/".to_owned());
    if !path.starts_with('/') || path.len() > 255 {
        return Err(ApiError::constraint(
            "path",
            "must be an absolute path of at most 255 characters",
        ));
    }
    let project_id = project(req.project_id)?;
    let id = crate::new_id()?;
    let now = crate::now_rfc3339();
    let meta = secret_json(
        config,
        &SecretMeta {
            id: &id,
            name: &name,
            project_id: &project_id,
            tags: &tags,
            description: req.description.as_deref(),
            path: &path,
            protected: req.protected.unwrap_or(false),
            managed: false,
        },
        &now,
    );
    tx.put_secret_meta(&id, &meta)?;
    Ok(meta)
}

pub fn get_secret(tx: &mut Tx<'_>, config: &Config, id: &str) -> Result<Value, ApiError> {
    let latest = tx.latest_secret_revision(id)?;
    let mut meta = match tx.secret_meta(id)? {
        Some(m) => m,
        None if latest.is_some() => secret_json(
            config,
            &SecretMeta {
                id,
                name: id,
                project_id: DEFAULT_PROJECT_ID,
                tags: &[],
                description: None,
                path: "/",
                protected: false,
                managed: true,
            },
            &crate::now_rfc3339(),
        ),
        None => return Err(ApiError::not_found("secret", id)),
    };
    meta["version_count"] = json!(latest.unwrap_or(0));
    Ok(meta)
}

#[derive(Serialize, Deserialize, Default)]
pub struct CreateSecretVersionRequest {
    /// The PSK, base64: never printed.
    pub data: Option<String>,
    pub description: Option<String>,
    pub disable_previous: Option<bool>,
    pub data_crc32: Option<u32>,
}

impl std::fmt::Debug for CreateSecretVersionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateSecretVersionRequest")
            .field("data", &self.data.as_ref().map(|_| "<redacted>"))
            .field("description", &self.description)
            .field("disable_previous", &self.disable_previous)
            .field("data_crc32", &self.data_crc32)
            .finish()
    }
}

pub fn create_secret_version(
    tx: &mut Tx<'_>,
    config: &Config,
    secret_id: &str,
    req: CreateSecretVersionRequest,
) -> Result<Value, ApiError> {
    use base64::Engine as _;
    if tx.secret_meta(secret_id)?.is_none() && tx.latest_secret_revision(secret_id)?.is_none() {
        return Err(ApiError::not_found("secret", secret_id));
    }
    let data = req.data.ok_or_else(|| ApiError::required("data"))?;
    if data.len() > 2 * crate::secrets::MAX_PSK_LEN {
        return Err(ApiError::constraint(
            "data",
            format!("at most {} bytes", crate::secrets::MAX_PSK_LEN),
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.as_bytes())
        .map_err(|_| ApiError::constraint("data", "must be base64"))?;
    let psk = Psk::from_bytes(bytes);
    // Every version is a PSK some connection may adopt (`renew-psk` moves
    // to the latest one): the same rule as for the PSK of a connection.
    crate::secrets::check_psk(psk.expose())
        .map_err(|e| ApiError::constraint("data", e.to_string()))?;
    if req.data_crc32.is_some() {
        return Err(ApiError::constraint(
            "data_crc32",
            "CRC32 verification is not supported: omit data_crc32",
        ));
    }
    let rev = tx.add_secret_revision(secret_id, &psk)?;
    let now = crate::now_rfc3339();
    Ok(json!({
        "revision": rev, "secret_id": secret_id, "status": "enabled", "latest": true,
        "created_at": now, "updated_at": now, "deleted_at": null,
        "description": req.description, "region": config.gateway.region,
    }))
}
