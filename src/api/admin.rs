//! Admin reads: the agent list and the audit log. Admin token required; no WebAuthn for reads.
//! What a scoped admin sees is cut to its scopes by `vault::authority` (the owner sees all).

use std::collections::HashMap;

use axum::Json;
use axum::extract::Query;
use serde::Serialize;
use serde_json::json;

use super::{ApiError, Caller};
use crate::audit::{Action, Outcome};
use crate::auth::{Agent, Role};
use crate::vault::authority;

const MAX_AUDIT_PAGE: u32 = 1000;

#[derive(Serialize)]
pub(super) struct AgentView {
    id: i64,
    name: String,
    scope: String,
    scopes: Vec<String>,
    all_access: bool,
    admin: bool,
    role: Role,
    created_at: i64,
    /// Unix seconds; `None`: never expires.
    expires_at: Option<i64>,
    /// The agent this one was derived from.
    parent_id: Option<i64>,
    reveal_to_model: bool,
    /// The proxy refuses this agent's requests to hosts no inject rule names (also when an
    /// agent it was derived from is so marked).
    proxy_only_listed: bool,
}

pub(super) fn agent_view(a: &Agent) -> AgentView {
    AgentView {
        id: a.id.0,
        name: a.name.clone(),
        scope: a.id.own_scope().as_str().to_owned(),
        scopes: a.scopes.to_vec(),
        all_access: a.all_access,
        admin: a.admin,
        role: a.role(),
        created_at: a.created_at,
        expires_at: a.expires_at,
        parent_id: a.parent_id.map(|p| p.0),
        reveal_to_model: a.reveal_to_model,
        proxy_only_listed: a.proxy_only_listed,
    }
}

pub(super) async fn admin_only(caller: &Caller, action: Action) -> Result<(), ApiError> {
    if let Err(e) = caller.require_admin() {
        caller.principal.vault.audit(caller.event(action, Outcome::Denied).detail("not_admin")).await?;
        return Err(e);
    }
    Ok(())
}

#[utoipa::path(
    get,
    path = "/api/agents",
    summary = "List agents (admin)",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the agents", body = super::openapi::schemas::AgentList),
        (status = "4XX", description = "error: 400 bad input, 401 no valid token, 403 refused, 404 missing or not visible, 415 body not JSON, 422 invalid", body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn agents(caller: Caller) -> Result<Json<serde_json::Value>, ApiError> {
    admin_only(&caller, Action::AgentList).await?;
    let vault = &caller.principal.vault;
    let me = &caller.principal.agent;
    let agents: Vec<AgentView> =
        vault.agents().iter().filter(|a| authority::lists_agent(me, a)).map(|a| agent_view(a)).collect();
    vault.audit(caller.event(Action::AgentList, Outcome::Ok)).await?;
    Ok(Json(json!({ "agents": agents })))
}

/// `GET /api/audit?before=ID&limit=N`: newest first; `next_before` continues the walk.
#[utoipa::path(
    get,
    path = "/api/audit",
    summary = "The audit log, newest first (admin)",
    security(("bearer" = [])),
    params(
        ("before" = Option<i64>, Query, minimum = 1, maximum = 9223372036854775807i64, description = "only rows older than this id (next_before of the previous page)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "rows per page (default 100)"),
    ),
    responses(
        (status = 200, description = "one page of rows", body = super::openapi::schemas::AuditPage),
        (status = "4XX", description = "error: 400 bad input, 401 no valid token, 403 refused, 404 missing or not visible, 415 body not JSON, 422 invalid", body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn audit(
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    admin_only(&caller, Action::AuditRead).await?;
    let before = match params.get("before") {
        None => None,
        Some(b) => Some(
            b.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ApiError::BadRequest("before must be a positive integer".into()))?,
        ),
    };
    let limit = match params.get("limit") {
        None => 100,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_AUDIT_PAGE).contains(n))
            .ok_or_else(|| ApiError::BadRequest(format!("limit must be 1 to {MAX_AUDIT_PAGE}")))?,
    };
    let vault = &caller.principal.vault;
    vault.audit(caller.event(Action::AuditRead, Outcome::Ok)).await?;
    let rows = {
        let (vault, me) = (vault.clone(), caller.principal.agent.clone());
        super::blocking(move || vault.audit_page_for(&me, before, limit)).await?
    };
    let next_before = if rows.len() as u32 == limit { rows.last().map(|r| r.id) } else { None };
    Ok(Json(json!({ "rows": rows, "next_before": next_before })))
}
