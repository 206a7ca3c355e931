//! Access requests (issue 18 §5): an agent that finds no inject rule for a host asks the owner
//! for one (`POST /api/proxy/requests`, its bearer token only); admins list the pending ones
//! (`GET`, a scoped admin only those of agents it lists); dismissing one is a passkey-gated
//! write (`DELETE /api/proxy/requests/{id}`, in `write.rs`).
//!
//! Must never: grant anything. A request is a note to the owner; access comes only from an
//! entry with a rule, written through the WebAuthn gate like every entry.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::admin::admin_only;
use super::extract::JsonBytes;
use super::{ApiError, Caller};
use crate::audit::{Action, Outcome};
use crate::store::proxy_requests_db::ProxyRequestRow;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessRequestBody {
    /// The host the agent wants to reach with a credential: `api.example.com` or
    /// `*.example.com`, as an inject rule names it (no scheme, port or path).
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = r"^(\*\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+|[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)$"
    )]
    host: String,
    /// Why, for the owner to read: at most 500 characters, no control characters but newlines
    /// and tabs.
    #[serde(default)]
    #[schema(max_length = 500, pattern = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f]*$")]
    reason: String,
}

/// A pending access request as admins see it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AccessRequest {
    id: i64,
    agent_id: i64,
    /// The requesting agent's name.
    agent_name: String,
    host: String,
    reason: String,
    /// Unix seconds of the (latest) request.
    created_at: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AccessRequestList {
    requests: Vec<AccessRequest>,
}

/// What the requesting agent gets back.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AccessRequestAck {
    id: i64,
    host: String,
    /// Always "pending": nothing is granted until the owner writes a rule with a passkey.
    status: &'static str,
    /// False when it replaced the reason of this agent's pending request for the same host.
    new: bool,
}

fn view(r: ProxyRequestRow, agent_name: String) -> AccessRequest {
    AccessRequest {
        id: r.id,
        agent_id: r.agent_id,
        agent_name,
        host: r.host,
        reason: r.reason,
        created_at: r.created_at,
    }
}

#[utoipa::path(
    post,
    path = "/api/proxy/requests",
    summary = "Ask the owner for an inject rule for a host (grants nothing by itself)",
    security(("bearer" = [])),
    request_body(content = AccessRequestBody, content_type = "application/json"),
    responses(
        (status = 201, description = "recorded as pending (or the pending one for this host updated)", body = AccessRequestAck),
        (status = "4XX", description = "error: 400 bad input, 401 no valid token, 409 too many pending requests (20 per agent), 415 body not JSON, 422 invalid host or reason", body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn create(caller: Caller, JsonBytes(body): JsonBytes) -> Result<Response, ApiError> {
    let req: AccessRequestBody = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("the body must be JSON {host, reason?}".into()))?;
    let event = caller.event(Action::ProxyRequest, Outcome::Ok);
    let (vault, agent) = (caller.principal.vault.clone(), caller.principal.agent.clone());
    let outcome =
        super::blocking(move || Ok::<_, ApiError>(vault.request_proxy_access(&agent, &req.host, &req.reason, &event)))
            .await?;
    match outcome {
        Ok((row, new)) => {
            let ack = AccessRequestAck { id: row.id, host: row.host, status: "pending", new };
            Ok((StatusCode::CREATED, Json(ack)).into_response())
        }
        Err(e) => {
            let detail = match &e {
                crate::vault::VaultError::Conflict(_) => "too_many_pending",
                _ => "invalid",
            };
            let refused = caller.event(Action::ProxyRequest, Outcome::Failed).detail(detail);
            caller.principal.vault.audit(refused).await?;
            Err(e.into())
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/proxy/requests",
    summary = "Pending access requests (admin; a scoped admin sees those of the agents it lists)",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "pending requests, oldest first", body = AccessRequestList),
        (status = "4XX", description = "error: 401 no valid token, 403 not an admin", body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn list(caller: Caller) -> Result<Json<AccessRequestList>, ApiError> {
    admin_only(&caller, Action::ProxyRequestList).await?;
    let (vault, me) = (caller.principal.vault.clone(), caller.principal.agent.clone());
    let rows = super::blocking(move || vault.proxy_requests_for(&me)).await?;
    let requests = rows.into_iter().map(|(r, a)| view(r, a.name.clone())).collect();
    caller.principal.vault.audit(caller.event(Action::ProxyRequestList, Outcome::Ok)).await?;
    Ok(Json(AccessRequestList { requests }))
}
