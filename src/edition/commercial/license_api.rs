//! The license's HTTP routes (commercial only): `POST /api/license` and
//! `GET /api/license/usage`, for node management tokens (`cvm_`, scope `license`).
//!
//! Management tokens authenticate here and on no vault route (the `Caller` extractor refuses
//! anything that is not a `cvt_` token). Never reads an entry or a vault's agents.

use axum::Json;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::{ApiError, JsonBytes};
use crate::store::node_db::NodeDb;

/// The prefix of node management tokens.
pub const MGMT_PREFIX: &str = "cvm_";

pub fn hash_mgmt_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Checks the bearer is an unrevoked management token holding `scope`; returns its id.
pub(super) async fn mgmt_caller(headers: &HeaderMap, scope: &'static str) -> Result<i64, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| t.starts_with(MGMT_PREFIX) && t.len() <= 128)
        .ok_or(ApiError::Unauthorized)?;
    let hash = hash_mgmt_token(token);
    let node_db = super::license::node_db_path().ok_or(ApiError::Internal)?;
    let found = crate::api::blocking(move || {
        NodeDb::open(&node_db).and_then(|db| db.mgmt_token_scope(&hash)).map_err(internal)
    })
    .await?;
    match found {
        Some((id, s)) if s == scope => Ok(id),
        Some(_) => Err(ApiError::forbidden("mgmt_scope", format!("this management token lacks the scope {scope}"))),
        None => Err(ApiError::Unauthorized),
    }
}

fn internal(e: crate::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "license store error");
    ApiError::Internal
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallLicense {
    /// The license token, `base64url(payload).base64url(signature)`.
    pub token: String,
}

#[utoipa::path(
    post,
    path = "/api/license",
    summary = "Install or replace the node's license (management token, scope license)",
    security(("bearer" = [])),
    request_body(content = InstallLicense, content_type = "application/json"),
    responses(
        (status = 200, description = "installed; the new state", body = Object),
        (status = "4XX", description = "error: 400 bad input or license refused (the node is then INVALID), 401 no valid management token, 403 wrong scope, 415 body not JSON", body = crate::api::openapi::schemas::ErrorBody),
    )
)]
pub async fn install(headers: HeaderMap, JsonBytes(body): JsonBytes) -> Result<Json<Value>, ApiError> {
    let id = mgmt_caller(&headers, "license").await?;
    let req: InstallLicense = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("expected {\"token\": \"<license token>\"}".into()))?;
    let actor = format!("mgmt:{id}");
    let result = crate::api::blocking(move || Ok::<_, ApiError>(super::license::install(&req.token, &actor))).await?;
    match result {
        Ok(state) => Ok(Json(json!({"state": state.as_str()}))),
        // The reference: a refused license is a 400 carrying the validator's message.
        Err(e) => Err(ApiError::BadRequest(format!("license refused: {e}"))),
    }
}

#[utoipa::path(
    get,
    path = "/api/license/usage",
    summary = "License state, expiry and per-limit usage (management token, scope license)",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "state, expiry, limits with current, cap and source", body = Object),
        (status = "4XX", description = "error: 401 no valid management token, 403 wrong scope", body = crate::api::openapi::schemas::ErrorBody),
    )
)]
pub async fn usage(headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    mgmt_caller(&headers, "license").await?;
    crate::api::blocking(|| super::license::usage_report().map_err(internal)).await.map(Json)
}
