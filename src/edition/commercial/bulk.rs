//! Bulk agents (commercial, issue 16 §2): `POST /api/mgmt/agents/bulk` creates up to 500 agents
//! and returns their tokens once; `DELETE /api/mgmt/agents/bulk` revokes a list.
//!
//! Both are vault admin writes like `POST /api/agents`: the caller's admin token (`cvt_`) and
//! one WebAuthn assertion bound to the whole batch's method, path and body hash, checked by
//! `vault::gate` in one transaction with the authority rules (each item as its single write
//! would be) and the license cap, then the batch through `vault::ops` (all or nothing, one audit
//! row per agent). It never lets a batch give an agent more than the calling admin holds, never
//! accepts a management token (`cvm_`: the `Caller` extractor takes only agent tokens), and
//! never logs or keeps a token it hands out.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::api::admin::agent_view;
use crate::api::openapi::schemas::SignedHeaders;
use crate::api::write::{NewAgentRequest, Signed, gated, parse_body};
use crate::api::{ApiError, AppState, Caller};
use crate::audit::{Action, Outcome};
use crate::auth::AgentId;
use crate::vault::authority::{AgentAsk, Intent};
use crate::vault::ops::{self, MAX_BATCH_AGENTS, NewAgentSpec};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkCreate {
    /// 1 to 500 agents, created together or not at all.
    #[schema(min_items = 1, max_items = 500)]
    agents: Vec<NewAgentRequest>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRevoke {
    /// 1 to 500 distinct agent ids, revoked together or not at all.
    #[schema(min_items = 1, max_items = 500)]
    ids: Vec<i64>,
}

/// The created agents, each with its token (shown this once), in the order asked.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct BulkCreated {
    agents: Vec<crate::api::openapi::schemas::AgentWithToken>,
}

/// Per revoked id, the derived agents revoked with it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct BulkRevoked {
    revoked: Vec<RevokedOne>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct RevokedOne {
    id: i64,
    derived_revoked: Vec<i64>,
}

fn too_many(n: usize) -> ApiError {
    ApiError::Unprocessable(format!("a batch holds 1 to {MAX_BATCH_AGENTS} agents, not {n}"))
}

#[utoipa::path(
    post,
    path = "/api/mgmt/agents/bulk",
    summary = "Create up to 500 agents in one passkey-approved write; their tokens are shown once",
    security(("bearer" = [])),
    params(SignedHeaders),
    request_body(content = BulkCreate, content_type = "application/json"),
    responses(
        (status = 201, description = "all created, tokens shown once", body = BulkCreated),
        (status = "4XX", description = "error: 400 bad input, 401 no valid token, 403 refused (WebAuthn, authority rule, license cap), 415 body not JSON, 422 invalid item or more than 500 (nothing created)", body = crate::api::openapi::schemas::ErrorBody),
    )
)]
pub async fn create(State(state): State<AppState>, caller: Caller, signed: Signed) -> Result<Response, ApiError> {
    let req: BulkCreate = parse_body(signed.body())?;
    if req.agents.is_empty() || req.agents.len() > MAX_BATCH_AGENTS {
        return Err(too_many(req.agents.len()));
    }
    let specs: Vec<NewAgentSpec> = req
        .agents
        .into_iter()
        .map(|a| NewAgentSpec {
            name: a.name,
            scopes: a.scopes,
            all_access: a.all_access,
            admin: a.admin,
            expires_at: a.expires_at,
            proxy_only_listed: a.proxy_only_listed,
        })
        .collect();
    // Bad items are refused before the gate: no challenge is spent, nothing changes.
    ops::check_agent_specs(&specs)?;
    let intent = Intent::CreateAgents(
        specs
            .iter()
            .map(|s| AgentAsk {
                scopes: s.scopes.clone(),
                all_access: s.all_access,
                admin: s.admin,
                proxy_only_listed: s.proxy_only_listed,
            })
            .collect(),
    );
    let event = caller.event(Action::AgentCreate, Outcome::Ok).detail(format!("bulk of {}", specs.len()));
    let created =
        gated(&state, &caller, event, &signed, intent, move |db, _, _, ev| ops::add_agents(db, &specs, ev)).await?;
    let agents: Vec<_> =
        created.iter().map(|(agent, token)| json!({"agent": agent_view(agent), "token": token.reveal()})).collect();
    Ok((StatusCode::CREATED, Json(json!({"agents": agents}))).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/mgmt/agents/bulk",
    summary = "Revoke up to 500 agents in one passkey-approved write",
    security(("bearer" = [])),
    params(SignedHeaders),
    request_body(content = BulkRevoke, content_type = "application/json"),
    responses(
        (status = 200, description = "all revoked", body = BulkRevoked),
        (status = "4XX", description = "error: 400 bad input, 401 no valid token, 403 refused (WebAuthn, authority rule), 404 an id does not exist (nothing revoked), 409 the last admin, 422 invalid list", body = crate::api::openapi::schemas::ErrorBody),
    )
)]
pub async fn revoke(State(state): State<AppState>, caller: Caller, signed: Signed) -> Result<Response, ApiError> {
    let req: BulkRevoke = parse_body(signed.body())?;
    if req.ids.is_empty() || req.ids.len() > MAX_BATCH_AGENTS {
        return Err(too_many(req.ids.len()));
    }
    let mut seen = std::collections::HashSet::with_capacity(req.ids.len());
    for (n, id) in req.ids.iter().enumerate() {
        if *id < 1 {
            return Err(ApiError::Unprocessable(format!("id {}: agent ids are positive integers", n + 1)));
        }
        if !seen.insert(*id) {
            return Err(ApiError::Unprocessable(format!("id {}: agent {id} is listed twice", n + 1)));
        }
    }
    let ids: Vec<AgentId> = req.ids.into_iter().map(AgentId).collect();
    let event = caller.event(Action::AgentRevoke, Outcome::Ok).detail(format!("bulk of {}", ids.len()));
    let intent = Intent::RevokeAgents(ids.clone());
    let revoked =
        gated(&state, &caller, event, &signed, intent, move |db, _, _, ev| ops::revoke_agents(db, &ids, ev)).await?;
    let revoked: Vec<_> = revoked
        .into_iter()
        .map(|(id, derived)| json!({"id": id.0, "derived_revoked": derived.iter().map(|d| d.0).collect::<Vec<_>>()}))
        .collect();
    Ok(Json(json!({"revoked": revoked})).into_response())
}
