//! `POST /api/entries/import`: many entries in one WebAuthn-gated write (issue 17). The owner's
//! pages parse another manager's export in the browser, encrypt the fields chosen as L2 there,
//! and send the whole batch here: one challenge, one assertion, one transaction
//! (`vault::ops::import_entries`: all entries or none; the edition's entry cap counts the
//! whole batch). Imported entries are owner-only until shared: a batch naming any scope is
//! refused before a challenge is spent. It never parses export files itself (`import` does that
//! for the CLI) and never sees an L2 plaintext.

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
use crate::vault::authority::Intent;
use crate::vault::entry::EntryInput;
use crate::vault::ops;

/// Entries per import request; the request body limit (256 KiB) usually binds first.
pub const MAX_IMPORT: usize = 5000;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The entries, each without scopes (owner-only). L2 values are the browser's envelopes.
    #[schema(min_items = 1, max_items = 5000)]
    entries: Vec<EntryInput>,
}

#[derive(utoipa::ToSchema)]
pub struct Imported {
    /// The new entries' ids, in the order given.
    #[allow(dead_code)]
    ids: Vec<i64>,
}

#[utoipa::path(
    post,
    path = "/api/entries/import",
    summary = "Import many entries at once, owner-only (all or nothing)",
    security(("bearer" = [])),
    params(SignedHeaders),
    request_body(content = ImportRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "every entry was created", body = Imported),
        (status = "4XX", description = "error: 400 bad input, 401 no valid token, 403 refused, 404 missing or not visible, 415 body not JSON, 422 invalid (names the entry at fault; nothing imported)", body = super::openapi::schemas::ErrorBody),
    )
)]
pub async fn import(State(state): State<AppState>, caller: Caller, signed: Signed) -> Result<Response, ApiError> {
    let req: ImportRequest = parse_body(&signed.body)?;
    if req.entries.is_empty() || req.entries.len() > MAX_IMPORT {
        return Err(ApiError::BadRequest(format!("an import holds 1 to {MAX_IMPORT} entries")));
    }
    if let Some(n) = req.entries.iter().position(|e| !e.scopes.is_empty()) {
        return Err(ApiError::BadRequest(format!(
            "entry {}: imported entries are owner-only until shared (no scopes)",
            n + 1
        )));
    }
    let count = req.entries.len();
    let event = caller.event(Action::EntryCreate, Outcome::Ok).detail("import");
    let intent = Intent::CreateEntry { scopes: Vec::new() };
    let ids = gated(&state, &caller, event, &signed, intent, move |db, v, k, ev| {
        ops::import_entries(db, v, k, req.entries, ev)
    })
    .await?;
    debug_assert_eq!(ids.len(), count);
    Ok((StatusCode::CREATED, Json(json!({ "ids": ids }))).into_response())
}
