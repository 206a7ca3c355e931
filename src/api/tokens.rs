//! The agent's own token: who it is (`GET /api/whoami`) and deriving a narrower, expiring token
//! from it (`POST /api/tokens/derive`).
//!
//! Both take only the bearer token: deriving needs no passkey because it can only narrow (the
//! rules are `vault::authority::check_derive`, run by `vault::gate` inside the insert's
//! transaction). A derived token is shown once, in the 201, and never logged.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::extract::JsonBytes;
use super::{ApiError, Caller};
use crate::audit::{Action, Outcome};
use crate::vault::authority::DeriveAsk;
use crate::vault::gate::DeriveRefusal;
use crate::vault::ops;

/// `GET /api/whoami`: the calling agent (not a secret; not audited).
#[utoipa::path(
    get,
    path = "/api/whoami",
    summary = "The calling agent: scopes, flags, expiry, parent",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the caller", body = super::openapi::schemas::WhoAmI),
        (status = "4XX", description = "error: 401 no valid token", body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn whoami(caller: Caller) -> Json<serde_json::Value> {
    let a = &caller.principal.agent;
    Json(json!({
        "id": a.id.0,
        "name": a.name,
        "scopes": a.scopes.to_vec(),
        "all_access": a.all_access,
        "admin": a.admin,
        "reveal_to_model": a.reveal_to_model,
        "proxy_only_listed": a.proxy_only_listed,
        "expires_at": a.expires_at,
        "parent_id": a.parent_id.map(|p| p.0),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeriveRequest {
    /// A name for people to recognise the derived agent by: 1 to 128 characters, not only
    /// spaces, no control characters (as for every agent name).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
    /// Life of the token in seconds, 1 to 86400; it also ends no later than the caller's own.
    #[schema(minimum = 1, maximum = 86400)]
    #[serde(deserialize_with = "whole_number")]
    ttl_secs: u64,
    /// A subset of the caller's scopes (any scopes if the caller has all access). Default: the
    /// caller's scopes.
    #[serde(default)]
    #[schema(max_items = 256, inline, value_type = Option<Vec<ScopeText>>)]
    scopes: Option<Vec<String>>,
    /// Only if the caller has all access.
    #[serde(default)]
    all_access: bool,
    /// Only if the caller has it.
    #[serde(default)]
    reveal_to_model: bool,
    /// Always refused (403): a derived token is never admin.
    #[serde(default)]
    admin: bool,
}

/// A scope as JSON carries it: 4 to 8 lowercase hex digits.
#[derive(utoipa::ToSchema)]
#[schema(pattern = "^[0-9a-f]{4,8}$")]
#[allow(dead_code)]
pub struct ScopeText(String);

/// A non-negative whole number, also when written `3600.0` (JSON Schema's `integer` admits it,
/// serde's `u64` does not).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(u) = n.as_u64() {
        return Ok(u);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&f) => Ok(f as u64),
        _ => Err(serde::de::Error::custom("expected a non-negative whole number")),
    }
}

/// `POST /api/tokens/derive`: a new token that can do at most what the caller can, for at
/// most 24 hours; revoked with the caller.
#[utoipa::path(
    post,
    path = "/api/tokens/derive",
    summary = "Derive a narrower, expiring token from the caller's",
    security(("bearer" = [])),
    request_body(content = DeriveRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "derived; the token is shown only here", body = super::openapi::schemas::DerivedToken),
        (status = "4XX", description = "error: 400 bad input, 401 no valid token, 403 refused (reason names the rule), 415 body not JSON, 422 invalid", body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn derive(caller: Caller, JsonBytes(body): JsonBytes) -> Result<Response, ApiError> {
    let req: DeriveRequest = serde_json::from_slice(&body).map_err(|_| {
        ApiError::BadRequest("the body must be JSON {name, ttl_secs, scopes?, all_access?, reveal_to_model?}".into())
    })?;
    if !(1..=ops::MAX_DERIVED_TTL_SECS).contains(&req.ttl_secs) {
        return Err(ApiError::BadRequest(format!("ttl_secs must be 1 to {}", ops::MAX_DERIVED_TTL_SECS)));
    }
    let ask = DeriveAsk {
        name: req.name,
        ttl_secs: req.ttl_secs,
        scopes: req.scopes,
        all_access: req.all_access,
        reveal_to_model: req.reveal_to_model,
        admin: req.admin,
    };
    let event = caller.event(Action::TokenDerive, Outcome::Ok);
    let outcome = {
        let (vault, id, token) = (caller.principal.vault.clone(), caller.principal.agent.id, caller.token.clone());
        super::blocking(move || vault.derive_token(id, &token, &ask, &event)).await?
    };
    match outcome {
        Err(DeriveRefusal::Unauthenticated) => Err(ApiError::Unauthorized),
        Err(DeriveRefusal::Refused(rule)) => Err(ApiError::forbidden(
            rule.code(),
            format!("a derived token can only narrow the caller's own ({})", rule.code()),
        )),
        Ok((agent, token)) => {
            let body = json!({
                "id": agent.id.0,
                "name": agent.name,
                "token": token.reveal(),
                "scopes": agent.scopes.to_vec(),
                "all_access": agent.all_access,
                "reveal_to_model": agent.reveal_to_model,
                "proxy_only_listed": agent.proxy_only_listed,
                "expires_at": agent.expires_at,
                "parent_id": agent.parent_id.map(|p| p.0),
            });
            Ok((StatusCode::CREATED, Json(body)).into_response())
        }
    }
}
