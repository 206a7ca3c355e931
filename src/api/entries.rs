//! The agent read API: list, fetch, search, TOTP. Every handler is scope-filtered and audited.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::Query;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::extract::PositiveId;
use super::openapi::schemas::IdPath;
use super::{ApiError, Caller};
use crate::audit::{Action, Outcome};
use crate::vault::live::Lookup;
use crate::vault::view::EntrySummary;
use crate::vault::{CachedEntry, TotpSecret, totp};

/// The audit row that records this response, so a client can cite it.
pub const AUDIT_ID_HEADER: &str = "x-clavitor-audit-id";

const MAX_QUERY: usize = 256;
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

fn with_audit_id(body: impl IntoResponse, audit_id: i64) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut().insert(HeaderName::from_static(AUDIT_ID_HEADER), HeaderValue::from(audit_id));
    resp
}

/// Looks an entry up for the caller; hidden and missing are audited apart but answered alike.
async fn visible(caller: &Caller, id: i64, action: Action) -> Result<std::sync::Arc<CachedEntry>, ApiError> {
    let vault = &caller.principal.vault;
    let outcome = match vault.lookup(&caller.principal.agent, id) {
        Lookup::Visible(e) => return Ok(e),
        Lookup::Hidden => Outcome::Denied,
        Lookup::Missing => Outcome::NotFound,
    };
    vault.audit(caller.event(action, outcome).entry(id)).await?;
    Err(ApiError::NotFound)
}

#[utoipa::path(
    get,
    path = "/api/entries",
    summary = "Metadata of the entries the caller may see",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the visible entries (an array)", body = Vec<EntrySummary<'static>>, headers(("x-clavitor-audit-id" = i64, description = "the audit row that records this read"))),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn list(caller: Caller) -> Result<Response, ApiError> {
    let vault = &caller.principal.vault;
    let entries = vault.visible_entries(&caller.principal.agent);
    let body: Vec<EntrySummary> = entries.iter().map(|e| EntrySummary::of(e)).collect();
    let audit_id =
        vault.audit(caller.event(Action::EntryList, Outcome::Ok).detail(format!("count={}", body.len()))).await?;
    Ok(with_audit_id(Json(body), audit_id))
}

#[utoipa::path(
    get,
    path = "/api/entries/{id}",
    summary = "One entry: L1 values (none for an inject-only entry), L2 ciphertexts, inject rules",
    security(("bearer" = [])),
    params(IdPath),
    responses(
        (status = 200, description = "the entry", body = crate::vault::view::EntryView<'static>, headers(("x-clavitor-audit-id" = i64, description = "the audit row that records this read"))),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn get_one(caller: Caller, PositiveId(id): PositiveId) -> Result<Response, ApiError> {
    let entry = visible(&caller, id, Action::EntryRead).await?;
    let vault = &caller.principal.vault;
    // Rendered when the entry was cached (`vault::view::EntryView`); only unsealed here.
    let view = vault.agent_view(&entry)?;
    // Committed before the secret leaves: a crash after this line still leaves the evidence.
    let audit_id = vault.audit(caller.event(Action::EntryRead, Outcome::Ok).entry(id)).await?;
    let json = [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    // Wiped once hyper has written it and lets go.
    let body = Body::from(axum::body::Bytes::from_owner(zeroize::Zeroizing::new(view)));
    Ok(with_audit_id((json, body), audit_id))
}

#[utoipa::path(
    get,
    path = "/api/search",
    summary = "Search title, URL and type",
    security(("bearer" = [])),
    params(
        ("q" = String, Query, min_length = 1, max_length = 256, pattern = r"\S", description = "the text to look for: 1 to 256 characters, not only spaces"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "at most this many hits (default 50)"),
    ),
    responses(
        (status = 200, description = "the matching visible entries (an array)", body = Vec<EntrySummary<'static>>, headers(("x-clavitor-audit-id" = i64, description = "the audit row that records this read"))),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn search(caller: Caller, Query(params): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    let q = params.get("q").map(|s| s.trim()).unwrap_or_default();
    if q.is_empty() || q.chars().count() > MAX_QUERY {
        return Err(ApiError::BadRequest(format!("q must be 1 to {MAX_QUERY} characters")));
    }
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::BadRequest(format!("limit must be 1 to {MAX_LIMIT}")))?,
    };
    let vault = &caller.principal.vault;
    let hits = vault.search(&caller.principal.agent, q, limit);
    let body: Vec<EntrySummary> = hits.iter().map(|e| EntrySummary::of(e)).collect();
    // The search text itself is not recorded: it may be sensitive, and the count says enough.
    let audit_id =
        vault.audit(caller.event(Action::EntrySearch, Outcome::Ok).detail(format!("count={}", body.len()))).await?;
    Ok(with_audit_id(Json(body), audit_id))
}

#[utoipa::path(
    get,
    path = "/api/ext/totp/{id}",
    summary = "The current TOTP code of an entry (422 if it has no L1 TOTP field, 403 if it is inject-only)",
    security(("bearer" = [])),
    params(IdPath),
    responses(
        (status = 200, description = "the current code", body = crate::vault::totp::TotpCode, headers(("x-clavitor-audit-id" = i64, description = "the audit row that records this read"))),
        (status = "4XX", description = super::openapi::API_ERRORS, body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn totp(caller: Caller, PositiveId(id): PositiveId) -> Result<Response, ApiError> {
    let entry = visible(&caller, id, Action::TotpRead).await?;
    let vault = &caller.principal.vault;
    if entry.inject_only {
        vault.audit(caller.event(Action::TotpRead, Outcome::Denied).entry(id).detail("inject_only")).await?;
        return Err(ApiError::forbidden(
            "inject_only",
            "inject-only: this entry's values are only injected by the proxy, never handed out; use the proxy",
        ));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let code = match vault.totp_secret(&entry)? {
        TotpSecret::Absent => Err("this entry has no TOTP field".to_owned()),
        TotpSecret::L2 => Err(
            "this entry's TOTP secret is L2 (encrypted in the owner's browser): the server cannot compute its codes"
                .to_owned(),
        ),
        TotpSecret::L1(secret) => totp::code_at(&secret, now).map_err(|e| e.to_string()),
    };
    let code = match code {
        Ok(code) => code,
        Err(msg) => {
            vault.audit(caller.event(Action::TotpRead, Outcome::Failed).entry(id)).await?;
            return Err(ApiError::Unprocessable(msg));
        }
    };
    let audit_id = vault.audit(caller.event(Action::TotpRead, Outcome::Ok).entry(id)).await?;
    Ok(with_audit_id(Json(code), audit_id))
}
