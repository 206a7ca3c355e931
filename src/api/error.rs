//! The one mapping from failures to HTTP: a status and `{"error": code, "message": text}`.
//!
//! Every 403 also carries `"reason"`: a stable code naming the rule that refused (a WebAuthn
//! check such as `assertion_rejected`, an authority rule such as
//! `scoped_admin_cannot_grant_all_access`, `not_admin`, a setup refusal). Clients and tests
//! branch on `reason`, never on the message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::audit::AuditError;
use crate::vault::VaultError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing, malformed, unknown or revoked token: one answer for all, so none can be told apart.
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("{message}")]
    Forbidden { reason: &'static str, message: String },
    /// Also the answer for entries that exist but are outside the caller's scopes.
    #[error("not found")]
    NotFound,
    /// No route matches the path (distinct from a missing entry, which says nothing more).
    #[error("no such route")]
    NoRoute,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unprocessable(String),
    /// A JSON route was sent a body not declared as `application/json`.
    #[error("the body must be JSON, sent with Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("{0}")]
    Conflict(String),
    #[error("too many failed authentications from this address; slow down")]
    TooManyRequests,
    /// The caller's vault could not be opened at start (see `Node::unavailable`).
    #[error("this vault is unavailable on this node ({0}); the operator has been alerted")]
    VaultUnavailable(String),
    /// The audit row could not be committed, so nothing was released.
    #[error("the audit log is unavailable; nothing was released")]
    AuditUnavailable,
    #[error("internal error")]
    Internal,
    /// The edition's cap is reached; the body (from the edition) says which, and why.
    #[error("cap reached")]
    CapExceeded(Box<serde_json::Value>),
}

impl ApiError {
    /// A 403 whose `reason` names the rule that refused.
    pub fn forbidden(reason: &'static str, message: impl Into<String>) -> Self {
        ApiError::Forbidden { reason, message: message.into() }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound | ApiError::NoRoute => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            ApiError::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            ApiError::AuditUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable"),
            ApiError::VaultUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "vault_unavailable"),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::CapExceeded(_) => (StatusCode::FORBIDDEN, "forbidden"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = match &self {
            ApiError::Forbidden { reason, message } => json!({"error": code, "reason": reason, "message": message}),
            ApiError::CapExceeded(body) => (**body).clone(),
            _ => json!({"error": code, "message": self.to_string()}),
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::NotFound => ApiError::NotFound,
            VaultError::Conflict(m) => ApiError::Conflict(m),
            VaultError::Entry(e) => ApiError::Unprocessable(e.to_string()),
            VaultError::Scope(e) => ApiError::Unprocessable(e.to_string()),
            VaultError::Invalid(m) => ApiError::Unprocessable(m),
            VaultError::CapExceeded(body) => ApiError::CapExceeded(body),
            VaultError::Corrupt(m) => {
                crate::edition::alert("vault_corrupt", "vault data failed to decrypt or parse", &[("error", m)]);
                ApiError::Internal
            }
            other => {
                tracing::error!(error = %other, "vault error");
                ApiError::Internal
            }
        }
    }
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        crate::edition::alert(
            "audit_unavailable",
            "an audit row could not be committed; the request was refused",
            &[("error", e.to_string())],
        );
        ApiError::AuditUnavailable
    }
}

/// The code used for a bare status that some layer produced without our JSON body.
pub(crate) fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        411 => "length_required",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "unprocessable",
        429 => "too_many_requests",
        431 => "headers_too_large",
        503 => "unavailable",
        s if s >= 500 => "internal",
        _ => "error",
    }
}
