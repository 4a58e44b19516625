//! Errors of the resource API, rendered in Scaleway's error body shapes.
//!
//! Every refusal of the API is an [`ApiError`]; [`ApiError::status`] and
//! [`ApiError::body`] give the HTTP status and the JSON body the official
//! SDKs understand (`type` + `message`, and the per-type fields:
//! `details` for `invalid_arguments` and `quotas_exceeded`, `resource` /
//! `resource_id` for `not_found`, `precondition` for `precondition_failed`).
//! The `message` always names the field and the rule that refused the request.

use serde_json::{json, Value};

/// One refused argument of an `invalid_arguments` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidArgument {
    /// The request field, with its path (`ikev2_ciphers[0].encryption`).
    pub argument_name: String,
    /// Scaleway's reason: `required`, `constraint` or `unknown`.
    pub reason: &'static str,
    /// The rule, in words.
    pub help_message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid argument(s): {}", describe(.0))]
    InvalidArguments(Vec<InvalidArgument>),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("{resource} {resource_id} is not found")]
    NotFound {
        resource: &'static str,
        resource_id: String,
    },
    #[error("authentication is denied")]
    Unauthenticated { reason: &'static str },
    #[error("{resource} is still in use: {help}")]
    StillInUse {
        resource: &'static str,
        help: String,
    },
    #[error("{resource} {resource_id} is in transient state {current_state}")]
    TransientState {
        resource: &'static str,
        resource_id: String,
        current_state: String,
    },
    #[error("quota exceeded for {resource}: {current} of {quota} used")]
    QuotaExceeded {
        resource: &'static str,
        quota: u64,
        current: u64,
    },
    /// The caller's key may not act there (a project outside its scope).
    #[error("insufficient permissions: {action} {resource}: {help}")]
    PermissionsDenied {
        resource: &'static str,
        action: &'static str,
        help: String,
    },
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn describe(args: &[InvalidArgument]) -> String {
    args.iter()
        .map(|a| format!("{}: {}", a.argument_name, a.help_message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// A single `invalid_arguments` entry with reason `constraint`.
    pub fn constraint(field: impl Into<String>, rule: impl Into<String>) -> Self {
        ApiError::InvalidArguments(vec![InvalidArgument {
            argument_name: field.into(),
            reason: "constraint",
            help_message: rule.into(),
        }])
    }

    /// A single `invalid_arguments` entry with reason `required`.
    pub fn required(field: impl Into<String>) -> Self {
        let field = field.into();
        ApiError::InvalidArguments(vec![InvalidArgument {
            help_message: format!("{field} is required"),
            argument_name: field,
            reason: "required",
        }])
    }

    /// A single `invalid_arguments` entry with reason `unknown` (an enum
    /// string or a reference the server does not know).
    pub fn unknown(field: impl Into<String>, rule: impl Into<String>) -> Self {
        ApiError::InvalidArguments(vec![InvalidArgument {
            argument_name: field.into(),
            reason: "unknown",
            help_message: rule.into(),
        }])
    }

    pub fn not_found(resource: &'static str, id: impl Into<String>) -> Self {
        ApiError::NotFound {
            resource,
            resource_id: id.into(),
        }
    }

    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Internal(Box::new(e))
    }

    pub fn status(&self) -> u16 {
        match self {
            ApiError::InvalidArguments(_) | ApiError::InvalidRequest(_) => 400,
            ApiError::Unauthenticated { .. } => 401,
            ApiError::QuotaExceeded { .. } | ApiError::PermissionsDenied { .. } => 403,
            ApiError::NotFound { .. } => 404,
            ApiError::TransientState { .. } => 409,
            ApiError::StillInUse { .. } => 412,
            ApiError::Internal(_) => 500,
        }
    }

    /// The JSON body, in the shape of Scaleway's error types.
    pub fn body(&self) -> Value {
        let message = self.to_string();
        match self {
            ApiError::InvalidArguments(args) => json!({
                "type": "invalid_arguments",
                "message": message,
                "details": args.iter().map(|a| json!({
                    "argument_name": a.argument_name,
                    "reason": a.reason,
                    "help_message": a.help_message,
                })).collect::<Vec<_>>(),
            }),
            ApiError::InvalidRequest(_) => json!({
                "type": "invalid_request_error",
                "message": message,
            }),
            ApiError::NotFound {
                resource,
                resource_id,
            } => json!({
                "type": "not_found",
                "message": message,
                "resource": resource,
                "resource_id": resource_id,
            }),
            ApiError::Unauthenticated { reason } => json!({
                "type": "denied_authentication",
                "message": message,
                "method": "api_key",
                "reason": reason,
            }),
            ApiError::StillInUse { help, .. } => json!({
                "type": "precondition_failed",
                "message": message,
                "precondition": "resource_still_in_use",
                "help_message": help,
            }),
            ApiError::TransientState {
                resource,
                resource_id,
                current_state,
            } => json!({
                "type": "transient_state",
                "message": message,
                "resource": resource,
                "resource_id": resource_id,
                "current_state": current_state,
            }),
            ApiError::QuotaExceeded {
                resource,
                quota,
                current,
            } => json!({
                "type": "quotas_exceeded",
                "message": message,
                "details": [{"resource": resource, "quota": quota, "current": current}],
            }),
            ApiError::PermissionsDenied {
                resource, action, ..
            } => json!({
                "type": "permissions_denied",
                "message": message,
                "details": [{"resource": resource, "action": action}],
            }),
            ApiError::Internal(_) => json!({
                "type": "internal_error",
                "message": message,
            }),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::internal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_arguments_shape_names_field() {
        let e = ApiError::constraint("asn", "must not be 12876");
        assert_eq!(e.status(), 400);
        let b = e.body();
        assert_eq!(b["type"], "invalid_arguments");
        assert_eq!(b["details"][0]["argument_name"], "asn");
        assert_eq!(b["details"][0]["reason"], "constraint");
        assert!(b["message"]
            .as_str()
            .unwrap()
            .contains("asn: must not be 12876"));
    }

    #[test]
    fn not_found_and_auth_shapes() {
        let b = ApiError::not_found("connection", "x").body();
        assert_eq!(b["type"], "not_found");
        assert_eq!(b["resource"], "connection");
        assert_eq!(b["resource_id"], "x");
        let e = ApiError::Unauthenticated {
            reason: "invalid_argument",
        };
        assert_eq!(e.status(), 401);
        assert_eq!(e.body()["type"], "denied_authentication");
    }
}
