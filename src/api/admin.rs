//! Admin reads: the agent list and the audit log. Admin token required; no WebAuthn for reads.
//! What a scoped admin sees is cut to its scopes by `vault::authority` (the owner sees all).

use std::collections::HashMap;

use axum::Json;
use axum::extract::Query;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::json;

use super::{ApiError, Caller};
use crate::audit::{Action, Outcome};
use crate::auth::{Agent, Role};
use crate::store::audit_sql::AuditFilter;
use crate::vault::authority;

const MAX_AUDIT_PAGE: u32 = 1000;

#[derive(Serialize)]
pub(crate) struct AgentView {
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

pub(crate) fn agent_view(a: &Agent) -> AgentView {
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
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn agents(caller: Caller) -> Result<Json<serde_json::Value>, ApiError> {
    admin_only(&caller, Action::AgentList).await?;
    let vault = &caller.principal.vault;
    let me = &caller.principal.agent;
    let sessions = {
        let vault = vault.clone();
        super::blocking(move || vault.extension_sessions()).await?
    };
    let agents: Vec<serde_json::Value> = vault
        .agents()
        .iter()
        .filter(|a| authority::lists_agent(me, a))
        .map(|a| {
            let mut v = serde_json::to_value(agent_view(a)).unwrap_or_default();
            v["extension_session"] = json!(sessions.binary_search(&a.id.0).is_ok());
            v
        })
        .collect();
    vault.audit(caller.event(Action::AgentList, Outcome::Ok)).await?;
    Ok(Json(json!({ "agents": agents })))
}

/// `GET /api/audit?before=ID&limit=N`: newest first; `next_before` continues the walk. Filters
/// (issue 17): `agent`, `entry`, `action`, `outcome`, `since`/`until` (unix ms); `format=csv`
/// answers the same page as CSV. Each row carries the names of its agent and entry as far as
/// the caller may see them (`agent_name`, `entry_title`; null when the item is gone or not the
/// caller's to see).
#[utoipa::path(
    get,
    path = "/api/audit",
    summary = "The audit log, newest first, filtered (admin)",
    security(("bearer" = [])),
    params(
        ("before" = Option<i64>, Query, minimum = 1, maximum = 9223372036854775807i64, description = "only rows older than this id (next_before of the previous page)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "rows per page (default 100)"),
        ("agent" = Option<i64>, Query, minimum = 1, maximum = 9223372036854775807i64, description = "only rows by this agent"),
        ("entry" = Option<i64>, Query, minimum = 1, maximum = 9223372036854775807i64, description = "only rows about this entry"),
        ("action" = Option<String>, Query, pattern = "^[a-z0-9._-]{0,64}$", description = "only rows of this action, e.g. entry.read (empty: any)"),
        ("outcome" = Option<String>, Query, pattern = "^[a-z0-9._-]{0,32}$", description = "only rows of this outcome: ok, denied, not_found, unauthorized, failed (empty: any)"),
        ("since" = Option<i64>, Query, minimum = 0, maximum = 9223372036854775807i64, description = "only rows at or after this time (unix milliseconds)"),
        ("until" = Option<i64>, Query, minimum = 0, maximum = 9223372036854775807i64, description = "only rows before this time (unix milliseconds)"),
        ("format" = Option<String>, Query, pattern = "^(json|csv)$", description = "json (default) or csv"),
    ),
    responses(
        (status = 200, description = "one page of rows (JSON, or CSV with format=csv)", content(
            (super::openapi::schemas::AuditPage = "application/json"),
            (String = "text/csv"),
        )),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn audit(
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<axum::response::Response, ApiError> {
    admin_only(&caller, Action::AuditRead).await?;
    let positive = |key: &str| -> Result<Option<i64>, ApiError> {
        params
            .get(key)
            .map(|b| {
                b.parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ApiError::BadRequest(format!("{key} must be a positive integer")))
            })
            .transpose()
    };
    let time = |key: &str| -> Result<Option<i64>, ApiError> {
        params
            .get(key)
            .map(|b| {
                b.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| ApiError::BadRequest(format!("{key} must be unix milliseconds")))
            })
            .transpose()
    };
    let code = |key: &str, max: usize| -> Result<Option<String>, ApiError> {
        params
            .get(key)
            .filter(|v| !v.is_empty())
            .map(|v| {
                if v.len() <= max
                    && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                {
                    Ok(v.clone())
                } else {
                    Err(ApiError::BadRequest(format!("{key} must be a code like entry.read (a-z, 0-9, '.', '_', '-')")))
                }
            })
            .transpose()
    };
    let before = positive("before")?;
    let limit = match params.get("limit") {
        None => 100,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_AUDIT_PAGE).contains(n))
            .ok_or_else(|| ApiError::BadRequest(format!("limit must be 1 to {MAX_AUDIT_PAGE}")))?,
    };
    let filter = AuditFilter {
        agent: positive("agent")?,
        entry: positive("entry")?,
        action: code("action", 64)?,
        outcome: code("outcome", 32)?,
        since: time("since")?,
        until: time("until")?,
    };
    let csv = match params.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::BadRequest("format must be json or csv".into())),
    };
    let vault = &caller.principal.vault;
    // Settled: the page shows every row acknowledged before this read, spooled ones included.
    vault.audit_settled(caller.event(Action::AuditRead, Outcome::Ok)).await?;
    let (rows, (gone_agents, gone_entries)) = {
        let (vault, me) = (vault.clone(), caller.principal.agent.clone());
        super::blocking(move || {
            let rows = vault.audit_page_filtered(&me, before, limit, &filter)?;
            vault.gone_names_for(&me).map(|g| (rows, g))
        })
        .await?
    };
    let next_before = if rows.len() as u32 == limit { rows.last().map(|r| r.id) } else { None };
    let me = &caller.principal.agent;
    // Gone first: a present item's current name wins.
    let gone = (gone_agents.keys().copied().collect(), gone_entries.keys().copied().collect());
    let mut names = AuditNames { agents: gone_agents, entries: gone_entries, gone };
    for a in vault.agents().iter().filter(|a| authority::lists_agent(me, a)) {
        names.agents.insert(a.id.0, a.name.clone());
        names.gone.0.remove(&a.id.0);
    }
    for e in vault.visible_entries(me) {
        names.entries.insert(e.id, e.title().to_owned());
        names.gone.1.remove(&e.id);
    }
    if csv {
        return Ok(csv_page(&rows, &names));
    }
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["agent_name"] = json!(r.record.agent_id.and_then(|id| names.agents.get(&id)));
            v["entry_title"] = json!(r.record.entry_id.and_then(|id| names.entries.get(&id)));
            // The name is what the item was called when it went (deleted or revoked).
            v["agent_gone"] = json!(r.record.agent_id.is_some_and(|id| names.gone.0.contains(&id)));
            v["entry_gone"] = json!(r.record.entry_id.is_some_and(|id| names.gone.1.contains(&id)));
            v
        })
        .collect();
    Ok(Json(json!({ "rows": rows, "next_before": next_before })).into_response())
}

#[derive(Default)]
struct AuditNames {
    agents: HashMap<i64, String>,
    entries: HashMap<i64, String>,
    /// (agents, entries) whose name is what they were called when they went.
    gone: (std::collections::HashSet<i64>, std::collections::HashSet<i64>),
}

/// One audit page as CSV (RFC 4180 quoting; a cell starting with `=`, `+`, `-` or `@` gets a
/// leading `'` so a spreadsheet never runs a name as a formula).
fn csv_page(rows: &[crate::store::AuditRow], names: &AuditNames) -> axum::response::Response {
    fn cell(out: &mut String, text: &str) {
        let guarded = if text.starts_with(['=', '+', '-', '@']) { format!("'{text}") } else { text.to_owned() };
        if guarded.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&guarded.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&guarded);
        }
    }
    let mut out =
        String::from("id,time_ms,actor,agent_id,agent_name,action,entry_id,entry_title,outcome,detail,client\r\n");
    for r in rows {
        let a = &r.record;
        let opt = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_default();
        let agent_name = a.agent_id.and_then(|id| names.agents.get(&id)).cloned().unwrap_or_default();
        let title = a.entry_id.and_then(|id| names.entries.get(&id)).cloned().unwrap_or_default();
        let cells = [
            r.id.to_string(),
            a.ts.to_string(),
            a.actor.to_string(),
            opt(a.agent_id),
            agent_name,
            a.action.to_string(),
            opt(a.entry_id),
            title,
            a.outcome.to_string(),
            a.detail.clone(),
            a.client.clone(),
        ];
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            cell(&mut out, c);
        }
        out.push_str("\r\n");
    }
    let mut resp = out.into_response();
    let h = resp.headers_mut();
    h.insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("text/csv; charset=utf-8"));
    h.insert(
        axum::http::header::CONTENT_DISPOSITION,
        axum::http::HeaderValue::from_static("attachment; filename=\"clavitor-audit.csv\""),
    );
    resp
}
