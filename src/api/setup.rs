//! The owner's one-time setup over HTTP: `POST /api/setup/start` and `/api/setup/finish`.
//!
//! No bearer token exists yet: the setup code printed by `clavitor init` (15 minutes, single
//! use) is the credential. Every refusal is a 403 and an audit row. Handlers hold no SQL.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::admin::agent_view;
use super::caller::ClientIp;
use super::extract::JsonBytes;
use super::{ApiError, AppState};
use crate::audit::{Action, Actor, AuditEvent, Outcome};
use crate::vault::gate::SetupRefusal;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The one-time setup code from `clavitor init`.
    code: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishRequest {
    code: String,
    registration_id: String,
    #[schema(value_type = Object)]
    credential: Value,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|_| ApiError::BadRequest("expected a JSON object with the setup fields".into()))
}

fn refused(r: &SetupRefusal) -> ApiError {
    ApiError::forbidden(r.code(), format!("setup refused ({})", r.code()))
}

/// The vault that issued this code, or a node-level audited refusal.
async fn vault_for(
    state: &AppState,
    code: &str,
    client: &str,
) -> Result<std::sync::Arc<crate::vault::LiveVault>, ApiError> {
    let (node, owned) = (state.node.clone(), code.to_owned());
    let found = super::blocking(move || crate::vault::gate::vault_for_setup_code(&node, &owned)).await?;
    if let Some(v) = found {
        return Ok(v);
    }
    let ev = AuditEvent::new(Actor::Anonymous, Action::Setup, Outcome::Denied)
        .client(client.to_owned())
        .detail(SetupRefusal::UnknownCode.code());
    state.node.audit(ev).await?;
    Err(refused(&SetupRefusal::UnknownCode))
}

/// Setup calls carry no token: each counts against the client's failed-authentication quota,
/// so a flood of guessed codes is refused (429) before it costs work or audit rows.
fn throttle(state: &AppState, ip: &ClientIp) -> Result<String, ApiError> {
    if !state.auth_throttle.allow_failure(ip.0) {
        return Err(ApiError::TooManyRequests);
    }
    Ok(ip.text())
}

#[utoipa::path(
    post,
    path = "/api/setup/start",
    summary = "Begin owner setup with a one-time code",
    request_body(content = StartRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "a registration in progress", body = super::openapi::schemas::Registration),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn start(
    State(state): State<AppState>,
    ip: ClientIp,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let client = throttle(&state, &ip)?;
    let req: StartRequest = parse(&body)?;
    let vault = vault_for(&state, &req.code, &client).await?;
    let started = {
        let (vault, rp, code, client) = (vault.clone(), state.rp.clone(), req.code.clone(), client.clone());
        super::blocking(move || vault.setup_start(&rp, &code, &client)).await?
    };
    match started {
        Err(r) => Err(refused(&r)),
        Ok((id, options)) => Ok(Json(json!({"registration_id": id.as_str(), "options": options})).into_response()),
    }
}

#[utoipa::path(
    post,
    path = "/api/setup/finish",
    summary = "Finish owner setup; the owner token is shown once",
    request_body(content = FinishRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "the owner and its token", body = super::openapi::schemas::SetupDone),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn finish(
    State(state): State<AppState>,
    ip: ClientIp,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let client = throttle(&state, &ip)?;
    let req: FinishRequest = parse(&body)?;
    let vault = vault_for(&state, &req.code, &client).await?;
    let credential = req.credential.to_string();
    let finished = {
        let (vault, rp, code, registration) =
            (vault.clone(), state.rp.clone(), req.code.clone(), req.registration_id.clone());
        super::blocking(move || vault.setup_finish(&rp, &code, &registration, &credential, &client)).await?
    };
    match finished {
        Err(r) => Err(refused(&r)),
        Ok(Some((agent, token))) => {
            Ok(Json(json!({"agent": agent_view(&agent), "token": token.reveal()})).into_response())
        }
        // The vault already had an owner (break-glass CLI): only its first passkey was enrolled.
        Ok(None) => Ok(Json(json!({"agent": null, "token": null})).into_response()),
    }
}

/// `GET /api/webauthn/info`: the relying party id and origin (public; the pages need the rp id
/// to evaluate the PRF extension outside a server ceremony).
#[utoipa::path(
    get,
    path = "/api/webauthn/info",
    summary = "Relying party id and origin",
    responses(
        (status = 200, description = "the relying party", body = super::openapi::schemas::RelyingParty),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn info(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"rp_id": state.rp.rp_id(), "origin": state.rp.origin()}))
}
