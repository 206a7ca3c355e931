//! Admin writes, each behind the WebAuthn gate: entries, agents, passkeys, the L2 keyring; and
//! the two ungated admin calls that prepare them (a challenge, a passkey registration).
//!
//! A write's body is parsed first (bad input is a 400/422 that consumes nothing), then
//! `vault::gate` checks the bearer, the challenge named by `X-WebAuthn-Challenge` and the
//! assertion in `X-WebAuthn-Assertion` against this exact method, path and body, and runs the
//! change in the same transaction, after the authority rules (`vault::authority`) have accepted
//! the handler's [`Intent`]. Every refusal is a 403 whose `reason` names the check or rule, with
//! an audit row. Handlers hold no SQL.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::admin::{admin_only, agent_view};
use super::extract::{JsonBytes, PositiveId};
use super::openapi::schemas::{IdPath, SignedHeaders};
use super::{ApiError, AppState, Caller};
use crate::audit::{Action, AuditEvent, Outcome};
use crate::auth::AgentId;
use crate::auth::webauthn::{CredentialId, Operation};
use crate::crypto::DataKey;
use crate::store::vault_db::VaultDb;
use crate::vault::authority::{self, AgentAsk, Intent};
use crate::vault::entry::EntryInput;
use crate::vault::gate::{Denial, Presented};
use crate::vault::{VaultError, VaultId, gate, ops};

pub const CHALLENGE_HEADER: &str = "x-webauthn-challenge";
pub const ASSERTION_HEADER: &str = "x-webauthn-assertion";

pub(crate) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let msg = match e.classify() {
            serde_json::error::Category::Data => "the JSON does not have the expected shape",
            _ => "the body is not valid JSON",
        };
        ApiError::BadRequest(msg.into())
    })
}

/// A header's text; a header that is not visible ASCII counts as present but unusable.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap_or(""))
}

/// A write as the gate sees it: the exact method, path and body bytes, and the headers that
/// carry the challenge id and the assertion.
pub(crate) struct Signed {
    method: String,
    path: String,
    headers: HeaderMap,
    pub(super) body: Bytes,
}

impl Signed {
    /// The exact body bytes the assertion is bound to.
    #[cfg_attr(not(feature = "commercial"), allow(dead_code))]
    pub(crate) fn body(&self) -> &[u8] {
        &self.body
    }
}

impl<S: Send + Sync> FromRequest<S> for Signed {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // A write that carries a body must declare it JSON (415 before the body is read, so
        // no challenge is spent on it); DELETE carries none.
        if req.method() != axum::http::Method::DELETE {
            super::extract::require_json(req.headers()).map_err(IntoResponse::into_response)?;
        }
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state).await.map_err(IntoResponse::into_response)?;
        Ok(Self { method, path, headers, body })
    }
}

/// Runs `change` behind the gate. `event` says what is attempted (its outcome is set here).
pub(crate) async fn gated<T>(
    state: &AppState,
    caller: &Caller,
    event: AuditEvent,
    req: &Signed,
    intent: Intent,
    change: impl FnOnce(&mut VaultDb, &VaultId, &DataKey, &AuditEvent) -> Result<T, VaultError> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
{
    let operation = Operation::of_request(&req.method, &req.path, &req.body);
    let challenge = header(&req.headers, CHALLENGE_HEADER).map(str::to_owned);
    let assertion = header(&req.headers, ASSERTION_HEADER).map(str::to_owned);
    let (agent, token, rp) = (caller.principal.agent.clone(), caller.token.clone(), state.rp.clone());
    let vault = caller.principal.vault.clone();
    let attempted = event.clone();
    let verdict = super::blocking(move || {
        let presented = Presented {
            agent: &agent,
            token: &token,
            challenge: challenge.as_deref(),
            assertion: assertion.as_deref(),
            operation,
            intent: &intent,
        };
        vault.authorized(&rp, &presented, &attempted, change)
    })
    .await?;
    let vault = &caller.principal.vault;
    match verdict {
        Err(denial) => Err(denied(&denial)),
        Ok(Err(e)) => {
            let code = match &e {
                VaultError::NotFound => "not_found",
                VaultError::Conflict(_) => "conflict",
                _ => "invalid",
            };
            vault.audit(AuditEvent { outcome: Outcome::Failed, ..event }.detail(code)).await?;
            Err(e.into())
        }
        Ok(Ok(v)) => Ok(v),
    }
}

fn denied(d: &Denial) -> ApiError {
    match d {
        Denial::Refused(rule) => ApiError::forbidden(
            rule.code(),
            format!("a scoped admin never grants or changes more than it holds ({})", rule.code()),
        ),
        other => ApiError::forbidden(
            other.code(),
            format!("this change needs a valid WebAuthn assertion for exactly this request ({})", other.code()),
        ),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// The method of the write this challenge is for.
    #[schema(value_type = super::openapi::schemas::WriteMethod)]
    method: String,
    /// The exact path of that write (no query).
    #[schema(pattern = "^/api/[!-\"$->@-~]*$", max_length = 256)]
    path: String,
    /// SHA-256 of the write's exact body bytes, lowercase hex.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    body_sha256: String,
}

/// `POST /api/webauthn/challenge`: an admin asks for a challenge bound to one operation.
#[utoipa::path(
    post,
    path = "/api/webauthn/challenge",
    summary = "A challenge bound to one operation (admin)",
    security(("bearer" = [])),
    request_body(content = ChallengeRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "the challenge and its WebAuthn request options", body = super::openapi::schemas::Challenge),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn challenge(
    State(state): State<AppState>,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    admin_only(&caller, Action::ChallengeIssue).await?;
    let req: ChallengeRequest = parse_body(&body)?;
    let op =
        Operation::new(&req.method, &req.path, &req.body_sha256).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let vault = &caller.principal.vault;
    let (id, options, expires_at) = {
        let (vault, rp, agent, op, ttl) =
            (vault.clone(), state.rp.clone(), caller.principal.agent.clone(), op.clone(), state.challenge_ttl);
        super::blocking(move || vault.issue_challenge(&rp, &agent, &op, ttl)).await?
    };
    vault.audit(caller.event(Action::ChallengeIssue, Outcome::Ok).detail(op.method().to_owned())).await?;
    Ok(Json(json!({"challenge_id": id.as_str(), "expires_at": expires_at, "options": options})).into_response())
}

#[utoipa::path(
    post,
    path = "/api/entries",
    summary = "Create an entry",
    security(("bearer" = [])),
    params(SignedHeaders),
    request_body(content = EntryInput, content_type = "application/json"),
    responses(
        (status = 201, description = "created", body = super::openapi::schemas::Created),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn create_entry(State(state): State<AppState>, caller: Caller, signed: Signed) -> Result<Response, ApiError> {
    let input: EntryInput = parse_body(&signed.body)?;
    let event = caller.event(Action::EntryCreate, Outcome::Ok);
    let intent = Intent::CreateEntry { scopes: input.scopes.clone() };
    let id =
        gated(&state, &caller, event, &signed, intent, move |db, v, k, ev| ops::add_entry(db, v, k, input, ev)).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": id}))).into_response())
}

#[utoipa::path(
    put,
    path = "/api/entries/{id}",
    summary = "Replace an entry",
    security(("bearer" = [])),
    params(IdPath, SignedHeaders),
    request_body(content = EntryInput, content_type = "application/json"),
    responses(
        (status = 200, description = "replaced", body = super::openapi::schemas::EntryVersion),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn update_entry(
    State(state): State<AppState>,
    caller: Caller,
    PositiveId(id): PositiveId,
    signed: Signed,
) -> Result<Response, ApiError> {
    let input: EntryInput = parse_body(&signed.body)?;
    let event = caller.event(Action::EntryUpdate, Outcome::Ok).entry(id);
    let intent = Intent::UpdateEntry { id, scopes: input.scopes.clone() };
    let version = gated(&state, &caller, event, &signed, intent, move |db, v, k, ev| {
        ops::update_entry(db, v, k, id, input, None, ev)
    })
    .await?;
    Ok(Json(json!({"id": id, "version": version})).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopesRequest {
    scopes: Vec<String>,
}

#[utoipa::path(
    put,
    path = "/api/entries/{id}/scopes",
    summary = "Change an entry's scopes",
    security(("bearer" = [])),
    params(IdPath, SignedHeaders),
    request_body(content = ScopesRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "changed", body = super::openapi::schemas::EntryVersion),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn set_entry_scopes(
    State(state): State<AppState>,
    caller: Caller,
    PositiveId(id): PositiveId,
    signed: Signed,
) -> Result<Response, ApiError> {
    let req: ScopesRequest = parse_body(&signed.body)?;
    let event = caller.event(Action::EntryUpdate, Outcome::Ok).entry(id).detail("scopes");
    let intent = Intent::UpdateEntry { id, scopes: req.scopes.clone() };
    let version = gated(&state, &caller, event, &signed, intent, move |db, v, k, ev| {
        ops::set_entry_scopes(db, v, k, id, &req.scopes, ev)
    })
    .await?;
    Ok(Json(json!({"id": id, "version": version})).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/entries/{id}",
    summary = "Delete an entry (tombstone)",
    security(("bearer" = [])),
    params(IdPath, SignedHeaders),
    responses(
        (status = 200, description = "deleted", body = super::openapi::schemas::Deleted),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn delete_entry(
    State(state): State<AppState>,
    caller: Caller,
    PositiveId(id): PositiveId,
    signed: Signed,
) -> Result<Response, ApiError> {
    let event = caller.event(Action::EntryDelete, Outcome::Ok).entry(id);
    gated(&state, &caller, event, &signed, Intent::DeleteEntry { id }, move |db, v, k, ev| {
        ops::delete_entry(db, v, k, id, ev)
    })
    .await?;
    Ok(Json(json!({"deleted": id})).into_response())
}

/// One agent to create: the body of `POST /api/agents`, and each item of a bulk create.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgentRequest {
    #[schema(min_length = 1, max_length = 128)]
    pub(crate) name: String,
    /// Scopes besides the agent's own; a scoped admin gives only scopes it holds.
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    /// Only the owner may set it.
    #[serde(default)]
    pub(crate) all_access: bool,
    /// Only the owner may set it.
    #[serde(default)]
    pub(crate) admin: bool,
    /// Unix seconds from which the token stops working; must be in the future. Default: never.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub(crate) expires_at: Option<i64>,
    /// The proxy refuses this agent's requests to hosts no inject rule names. Default off.
    #[serde(default)]
    pub(crate) proxy_only_listed: bool,
}

#[utoipa::path(
    post,
    path = "/api/agents",
    summary = "Create an agent; its token is shown once",
    security(("bearer" = [])),
    params(SignedHeaders),
    request_body(content = NewAgentRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "created", body = super::openapi::schemas::AgentWithToken),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn create_agent(State(state): State<AppState>, caller: Caller, signed: Signed) -> Result<Response, ApiError> {
    let req: NewAgentRequest = parse_body(signed.body())?;
    if req.expires_at.is_some_and(|t| t <= crate::store::now_secs()) {
        return Err(ApiError::BadRequest("expires_at must be in the future (unix seconds)".into()));
    }
    let event = caller.event(Action::AgentCreate, Outcome::Ok);
    let intent = Intent::CreateAgent(AgentAsk {
        scopes: req.scopes.clone(),
        all_access: req.all_access,
        admin: req.admin,
        proxy_only_listed: req.proxy_only_listed,
    });
    let (agent, token) = gated(&state, &caller, event, &signed, intent, move |db, _, _, ev| {
        ops::add_agent(
            db,
            &req.name,
            &req.scopes,
            (req.all_access, req.admin),
            req.expires_at,
            req.proxy_only_listed,
            ev,
        )
    })
    .await?;
    let body = json!({"agent": agent_view(&agent), "token": token.reveal()});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgentRequest {
    name: Option<String>,
    scopes: Option<Vec<String>>,
    all_access: Option<bool>,
    admin: Option<bool>,
    #[serde(default)]
    rotate_token: bool,
    /// Let the MCP server hand this agent's L1 values to the model (`get_field`). Default off.
    reveal_to_model: Option<bool>,
    /// Make the proxy refuse this agent's requests to hosts no inject rule names. A scoped
    /// admin cannot lift it from itself.
    proxy_only_listed: Option<bool>,
}

#[utoipa::path(
    put,
    path = "/api/agents/{id}",
    summary = "Change or rotate an agent",
    security(("bearer" = [])),
    params(IdPath, SignedHeaders),
    request_body(content = UpdateAgentRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "changed", body = super::openapi::schemas::AgentUpdated),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn update_agent(
    State(state): State<AppState>,
    caller: Caller,
    PositiveId(id): PositiveId,
    signed: Signed,
) -> Result<Response, ApiError> {
    change_agent(state, caller, AgentId(id), signed).await
}

/// The same change as `PUT` (every field is optional either way); the name issue 13's contract
/// uses for setting `reveal_to_model`.
#[utoipa::path(
    patch,
    path = "/api/agents/{id}",
    summary = "Change or rotate an agent (same as PUT)",
    security(("bearer" = [])),
    params(IdPath, SignedHeaders),
    request_body(content = UpdateAgentRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "changed", body = super::openapi::schemas::AgentUpdated),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn patch_agent(
    State(state): State<AppState>,
    caller: Caller,
    PositiveId(id): PositiveId,
    signed: Signed,
) -> Result<Response, ApiError> {
    change_agent(state, caller, AgentId(id), signed).await
}

async fn change_agent(state: AppState, caller: Caller, id: AgentId, signed: Signed) -> Result<Response, ApiError> {
    let req: UpdateAgentRequest = parse_body(&signed.body)?;
    let update = ops::AgentUpdate {
        name: req.name,
        scopes: req.scopes,
        all_access: req.all_access,
        admin: req.admin,
        rotate_token: req.rotate_token,
        reveal_to_model: req.reveal_to_model,
        proxy_only_listed: req.proxy_only_listed,
    };
    let event = caller.event(Action::AgentUpdate, Outcome::Ok).detail(format!("agent {id}"));
    let intent = Intent::UpdateAgent {
        id,
        scopes: update.scopes.clone(),
        all_access: update.all_access,
        admin: update.admin,
        proxy_only_listed: update.proxy_only_listed,
    };
    let (agent, token) =
        gated(&state, &caller, event, &signed, intent, move |db, _, _, ev| ops::update_agent(db, id, &update, ev))
            .await?;
    let mut out = json!({"agent": agent_view(&agent)});
    if let Some(t) = token {
        out["token"] = json!(t.reveal());
    }
    Ok(Json(out).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/agents/{id}",
    summary = "Revoke an agent",
    security(("bearer" = [])),
    params(IdPath, SignedHeaders),
    responses(
        (status = 200, description = "revoked", body = super::openapi::schemas::Revoked),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn delete_agent(
    State(state): State<AppState>,
    caller: Caller,
    PositiveId(id): PositiveId,
    signed: Signed,
) -> Result<Response, ApiError> {
    let id = AgentId(id);
    let event = caller.event(Action::AgentRevoke, Outcome::Ok).detail(format!("agent {id}"));
    let derived = gated(&state, &caller, event, &signed, Intent::RevokeAgent { id }, move |db, _, _, ev| {
        ops::revoke_agent(db, id, ev)
    })
    .await?;
    let derived: Vec<i64> = derived.into_iter().map(|a| a.0).collect();
    Ok(Json(json!({"revoked": id.0, "derived_revoked": derived})).into_response())
}

/// `GET /api/passkeys`: the registered passkeys (ids, names, counters, the owning agent; never
/// key material). The owner sees every agent's; any other admin only its own.
#[utoipa::path(
    get,
    path = "/api/passkeys",
    summary = "List passkeys (admin)",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the passkeys", body = super::openapi::schemas::PasskeyList),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn passkeys(caller: Caller) -> Result<Response, ApiError> {
    admin_only(&caller, Action::PasskeyList).await?;
    let vault = &caller.principal.vault;
    let me = &caller.principal.agent;
    let all = authority::sees_all_passkeys(me);
    let stored = {
        let vault = vault.clone();
        super::blocking(move || vault.passkeys()).await?
    };
    let list: Vec<Value> = stored
        .into_iter()
        .filter(|r| all || r.agent_id == Some(me.id.0))
        .map(|r| {
            json!({"id": r.id, "name": r.name, "sign_count": r.sign_count, "created_at": r.created_at,
                   "agent_id": r.agent_id})
        })
        .collect();
    vault.audit(caller.event(Action::PasskeyList, Outcome::Ok)).await?;
    Ok(Json(json!({"passkeys": list})).into_response())
}

/// `POST /api/passkeys/options`: starts registering a further passkey (no change yet).
#[utoipa::path(
    post,
    path = "/api/passkeys/options",
    summary = "Registration options for a further passkey (admin)",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "a registration in progress", body = super::openapi::schemas::Registration),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn passkey_options(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    admin_only(&caller, Action::PasskeyRegisterStart).await?;
    let vault = &caller.principal.vault;
    let (id, options) = {
        let (vault, rp, agent) = (vault.clone(), state.rp.clone(), caller.principal.agent.clone());
        super::blocking(move || vault.start_passkey_registration(&rp, &agent)).await?
    };
    vault.audit(caller.event(Action::PasskeyRegisterStart, Outcome::Ok)).await?;
    Ok(Json(json!({"registration_id": id.as_str(), "options": options})).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddPasskeyRequest {
    registration_id: String,
    #[serde(default)]
    name: String,
    /// The admin agent the passkey is for; default the caller. Only the owner enrolls a passkey
    /// for another agent (a new admin's first one).
    #[serde(default)]
    #[schema(minimum = 1)]
    agent_id: Option<i64>,
    /// The browser's `PublicKeyCredential.toJSON()` from the registration ceremony.
    #[schema(value_type = Object)]
    credential: Value,
}

/// `POST /api/passkeys`: enrolls a further passkey for the caller (or, by the owner, for the
/// admin agent named by `agent_id`); gated, so an existing key of the caller must approve it.
#[utoipa::path(
    post,
    path = "/api/passkeys",
    summary = "Enroll a further passkey",
    security(("bearer" = [])),
    params(SignedHeaders),
    request_body(content = AddPasskeyRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "enrolled", body = super::openapi::schemas::PasskeyAdded),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn add_passkey(State(state): State<AppState>, caller: Caller, signed: Signed) -> Result<Response, ApiError> {
    let req: AddPasskeyRequest = parse_body(&signed.body)?;
    let agent = caller.principal.agent.id;
    let for_agent = match req.agent_id {
        None => agent,
        Some(n) if n > 0 => AgentId(n),
        Some(_) => return Err(ApiError::BadRequest("agent_id must be a positive integer".into())),
    };
    let event = caller.event(Action::PasskeyAdd, Outcome::Ok).detail(format!("agent {for_agent}"));
    let rp = state.rp.clone();
    let intent = Intent::AddPasskey { for_agent };
    let id = gated(&state, &caller, event, &signed, intent, move |db, _, _, ev| {
        let credential = req.credential.to_string();
        gate::register_passkey(db, &rp, agent, for_agent, &req.registration_id, &credential, &req.name, ev)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!({"id": id.as_str()}))).into_response())
}

/// `DELETE /api/passkeys/{id}`: removes a passkey (never an agent's last). A scoped admin
/// removes only its own.
#[utoipa::path(
    delete,
    path = "/api/passkeys/{id}",
    summary = "Remove a passkey (never the last)",
    security(("bearer" = [])),
    params(("id" = String, Path, pattern = "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048]|[A-Za-z0-9_-][AQgw])?$", min_length = 2, max_length = 1364, description = "the credential id: canonical base64url without padding, 1 to 1023 bytes"), ("X-WebAuthn-Challenge" = String, Header, description = "id of a challenge from POST /api/webauthn/challenge bound to this exact request"), ("X-WebAuthn-Assertion" = String, Header, description = "the assertion (PublicKeyCredential JSON) over that challenge")),
    responses(
        (status = 200, description = "removed", body = super::openapi::schemas::PasskeyRemoved),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn remove_passkey(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let id = CredentialId::parse(&raw).map_err(|_| ApiError::BadRequest("passkey id must be base64url".into()))?;
    let event = caller.event(Action::PasskeyRemove, Outcome::Ok);
    let cred = id.clone();
    let intent = Intent::RemovePasskey { id: id.as_str().to_owned() };
    gated(&state, &caller, event, &signed, intent, move |db, _, _, ev| ops::remove_passkey(db, &cred, ev)).await?;
    Ok(Json(json!({"removed": id.as_str()})).into_response())
}

/// `GET /api/keyring`: the owner's wrapped L2 keyring (useless without the owner's passkey PRF
/// output or passphrase), or null.
#[utoipa::path(
    get,
    path = "/api/keyring",
    summary = "The wrapped L2 keyring (admin)",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the keyring, or null", body = super::openapi::schemas::KeyringHolder),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn keyring(caller: Caller) -> Result<Response, ApiError> {
    admin_only(&caller, Action::KeyringRead).await?;
    let vault = &caller.principal.vault;
    let keyring = {
        let vault = vault.clone();
        super::blocking(move || vault.keyring()).await?
    };
    vault.audit(caller.event(Action::KeyringRead, Outcome::Ok)).await?;
    Ok(Json(json!({"keyring": keyring})).into_response())
}

/// `PUT /api/keyring`: replaces the wrapped L2 keyring; gated, and the owner's alone.
#[utoipa::path(
    put,
    path = "/api/keyring",
    summary = "Replace the wrapped L2 keyring",
    security(("bearer" = [])),
    params(SignedHeaders),
    request_body(content = super::openapi::schemas::Keyring, content_type = "application/json"),
    responses(
        (status = 200, description = "replaced", body = super::openapi::schemas::Ok),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn set_keyring(State(state): State<AppState>, caller: Caller, signed: Signed) -> Result<Response, ApiError> {
    let keyring: Value = parse_body(&signed.body)?;
    let event = caller.event(Action::KeyringUpdate, Outcome::Ok);
    gated(&state, &caller, event, &signed, Intent::SetKeyring, move |db, _, _, ev| ops::set_keyring(db, &keyring, ev))
        .await?;
    Ok(Json(json!({"ok": true})).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/proxy/requests/{id}",
    summary = "Dismiss an agent's access request (granting is writing an entry with a rule)",
    security(("bearer" = [])),
    params(IdPath, SignedHeaders),
    responses(
        (status = 200, description = "dismissed", body = super::openapi::schemas::Dismissed),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn dismiss_access_request(
    State(state): State<AppState>,
    caller: Caller,
    PositiveId(id): PositiveId,
    signed: Signed,
) -> Result<Response, ApiError> {
    let event = caller.event(Action::ProxyRequestDismiss, Outcome::Ok);
    let intent = Intent::DismissProxyRequest { id };
    let gone =
        gated(&state, &caller, event, &signed, intent, move |db, _, _, ev| ops::dismiss_proxy_request(db, id, ev))
            .await?;
    Ok(Json(json!({"dismissed": gone.id, "host": gone.host, "agent_id": gone.agent_id})).into_response())
}
