//! `POST /api/sessions`: the owner's browser extension signs in (issue 17 §3).
//!
//! The extension cannot run a WebAuthn ceremony for the vault's RP ID itself, so the vault's
//! own page `/extension` (`web`) runs it: an admin's token plus a challenge bound to exactly
//! this request (`POST /api/webauthn/challenge`) and the passkey's assertion over it, checked
//! by `vault::gate` like every admin write. The answer is a short-lived session token
//! (`vault::sessions`: a derived agent, never admin, reading what the admin reads, default
//! 12 h, `--extension-session-ttl-secs`), listed on the agents page and revoked there like any
//! agent. It never hands out the admin's own token and never creates an admin.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::openapi::schemas::SignedHeaders;
use super::write::{Signed, gated, parse_body};
use super::{ApiError, AppState, Caller};
use crate::audit::{Action, Outcome};
use crate::vault::authority::{AgentAsk, Intent};
use crate::vault::sessions;

/// Longest label the owner may give a session (it becomes part of the agent's name).
const MAX_LABEL: usize = 64;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// Shown on the agents page after "Browser extension: " (e.g. the browser's name); no
    /// control characters.
    #[serde(default)]
    #[schema(max_length = 64, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    label: String,
    /// A shorter life than the server's (`--extension-session-ttl-secs`, default 43200).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86400)]
    ttl_secs: Option<u64>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SessionToken {
    /// The session's agent id (revoke it on the agents page).
    id: i64,
    name: String,
    /// The session token, shown only here.
    token: String,
    /// Unix seconds.
    expires_at: i64,
}

#[utoipa::path(
    post,
    path = "/api/sessions",
    summary = "Sign in the browser extension: a short-lived, read-only session token (passkey)",
    security(("bearer" = [])),
    params(SignedHeaders),
    request_body(content = SessionRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "the session; its token is shown only here", body = SessionToken),
        (status = "4XX", description = "error: 400 bad input, 401 no valid token, 403 refused (not an admin, or no valid assertion for this request), 409 no session possible (too many derived tokens), 415 body not JSON, 422 invalid", body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn create(State(state): State<AppState>, caller: Caller, signed: Signed) -> Result<Response, ApiError> {
    let req: SessionRequest = parse_body(&signed.body)?;
    if req.label.chars().count() > MAX_LABEL || req.label.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!("label: at most {MAX_LABEL} characters, no control characters")));
    }
    let ttl = match req.ttl_secs {
        None => state.session_ttl_secs,
        Some(t) if (1..=state.session_ttl_secs).contains(&t) => t,
        Some(_) => {
            return Err(ApiError::BadRequest(format!("ttl_secs must be 1 to {}", state.session_ttl_secs)));
        }
    };
    let event = caller.event(Action::TokenDerive, Outcome::Ok).detail("extension session");
    let me = caller.principal.agent.id;
    // What a session may read is the caller's own (the derivation rules re-check it in the
    // transaction): the intent the authority rules see is "an agent holding what I hold".
    let intent = Intent::CreateAgent(AgentAsk {
        scopes: caller.principal.agent.scopes.to_vec(),
        all_access: caller.principal.agent.all_access,
        admin: false,
        proxy_only_listed: caller.principal.agent.proxy_only_listed,
    });
    let label = req.label;
    let (agent, token) =
        gated(&state, &caller, event, &signed, intent, move |db, _, _, ev| sessions::create(db, me, &label, ttl, ev))
            .await?;
    let body = json!({
        "id": agent.id.0,
        "name": agent.name,
        "token": token.reveal(),
        "expires_at": agent.expires_at,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}
