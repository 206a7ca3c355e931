//! SCIM 2.0 provisioning (RFC 7643/7644) at `/api/scim/v2/`, commercial only (issue 16 §4), and
//! the owner's routes that govern it (`/api/scim/tokens`, `/api/scim/grants`).
//!
//! An identity provider authenticates with a per-vault provisioning token (`cvs_<vault id>_…`)
//! that the owner creates with a passkey tap, sees once, and can revoke; only its SHA-256 is
//! stored. It may create, list, change, deactivate and delete the agents it provisioned and
//! keep groups and their members. It must never widen what any agent reads: its agents hold
//! only their own scope and no usable token, its groups stand only for scopes that exist, and
//! a membership grants its scope only after the owner approves it with a passkey
//! (`POST /api/scim/grants`). Deactivation, deletion and removals narrow within the request.
//! A wrong method on a SCIM route is a SCIM 405; unknown paths below `/api/scim/v2/` get a SCIM
//! 404 only with a valid provisioning token, otherwise the edition's tarpit.

mod service;
mod types;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::openapi::schemas::{IdPath, SignedHeaders};
use crate::api::{ApiError, AppState, Caller, Signed, gated, parse_body};
use crate::audit::{Action, Actor, AuditEvent, Outcome};
use crate::vault::authority::Intent;
use crate::vault::{LiveVault, VaultId};
use service::{Ctx, Fail};
use types::{MAX_RESULTS, MEDIA_TYPE, ScimError};

/// Where the SCIM service lives.
pub const BASE_PATH: &str = "/api/scim/v2";
/// The prefix of provisioning tokens.
const TOKEN_PREFIX: &str = "cvs_";

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = scim(status, self.body());
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

fn scim(status: StatusCode, body: Value) -> Response {
    let mut resp = (status, Json(body)).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    resp
}

/// Adds the SCIM routes and the owner's provisioning routes, each documented. Every SCIM route
/// answers a method it does not serve with a SCIM 405 (RFC 7644 §3.12), not the tarpit.
pub fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    let with_405 = |(schemas, paths, methods): utoipa_axum::router::UtoipaMethodRouter<AppState>| {
        (schemas, paths, methods.fallback(method_not_allowed))
    };
    router
        .routes(with_405(routes!(service_provider_config)))
        .routes(with_405(routes!(resource_types)))
        .routes(with_405(routes!(resource_type)))
        .routes(with_405(routes!(schemas)))
        .routes(with_405(routes!(schema)))
        .routes(with_405(routes!(list_users, create_user)))
        .routes(with_405(routes!(get_user, replace_user, patch_user, delete_user)))
        .routes(with_405(routes!(search_users)))
        .routes(with_405(routes!(list_groups, create_group)))
        .routes(with_405(routes!(get_group, replace_group, patch_group, delete_group)))
        .routes(with_405(routes!(search_groups)))
        .routes(with_405(routes!(search_all)))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(list_grants, approve_grants))
}

async fn method_not_allowed() -> ScimError {
    ScimError::new(405, None, "this method is not supported on this SCIM endpoint")
}

/// The edition's fallback: below the SCIM base, a caller with a valid provisioning token gets a
/// SCIM 404; everyone and everything else gets the tarpit.
pub async fn fallback_or_tarpit(
    State(state): State<AppState>,
    method: axum::http::Method,
    peer: Option<axum::Extension<crate::api::serve::Peer>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let below_base = uri.path().strip_prefix(BASE_PATH).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    if below_base && token_vault(&state, &headers).await.is_some() {
        return ScimError::not_found().into_response();
    }
    super::tarpit::hold(method, peer).await
}

/// A request authenticated by a provisioning token: its vault, and the audit/location context.
pub struct Provisioner {
    vault: Arc<LiveVault>,
    ctx: Arc<Ctx>,
}

/// The vault a presented provisioning token belongs to, if the token is valid (unrevoked).
async fn token_vault(state: &AppState, headers: &HeaderMap) -> Option<Arc<LiveVault>> {
    let token = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")?.trim();
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (vault_id, secret) = rest.split_once('_')?;
    if secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let id = VaultId::parse(vault_id).ok()?;
    // Opened on demand: a hosted vault may be closed while its IdP provisions.
    let vault = state.node.vault(id.as_str())?;
    let hash = crate::crypto::sha256_hex(token.as_bytes());
    let v = vault.clone();
    let found = tokio::task::spawn_blocking(move || v.change(|db, _, _| Ok(db.idp_token_valid(&hash)?))).await;
    matches!(found, Ok(Ok(Some(_)))).then_some(vault)
}

impl FromRequestParts<AppState> for Provisioner {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<crate::api::serve::Peer>().map(|p| p.addr.ip());
        let client = peer.map(|ip| ip.to_string()).unwrap_or_default();
        if let Some(vault) = token_vault(state, &parts.headers).await {
            let ctx = Ctx { base: format!("{}{BASE_PATH}", state.rp.origin()), client };
            return Ok(Self { vault, ctx: Arc::new(ctx) });
        }
        if !state.auth_throttle.allow_failure(peer) {
            return Err(ScimError::new(429, None, "too many failed authentications from this address; slow down"));
        }
        let event = AuditEvent::new(Actor::Anonymous, Action::Authenticate, Outcome::Unauthorized)
            .client(client)
            .detail("provisioning token");
        if let Err(e) = state.node.audit(event).await {
            crate::edition::alert(
                "auth_system_error",
                "cannot audit a failed authentication",
                &[("error", e.to_string())],
            );
        }
        Err(ScimError::new(401, None, "a valid provisioning token is required"))
    }
}

impl Provisioner {
    /// Runs `f` on the vault file on the blocking pool; the in-memory view (and the token
    /// index) is refreshed before this returns, so a revocation holds from the next request on.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut crate::store::vault_db::VaultDb, &Ctx) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T, ScimError> {
        let (vault, ctx) = (self.vault.clone(), self.ctx.clone());
        match tokio::task::spawn_blocking(move || vault.change(|db, _, _| Ok(f(db, &ctx)))).await {
            Ok(Ok(out)) => out.map_err(Fail::into_scim),
            Ok(Err(e)) => Err(Fail::Vault(e).into_scim()),
            Err(_) => Err(ScimError::new(500, None, "internal error")),
        }
    }

    fn base(&self) -> &str {
        &self.ctx.base
    }
}

/// The SCIM error schema (RFC 7644 §3.12), as the OpenAPI document states it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_snake_case)]
pub struct ScimErrorBody {
    /// `["urn:ietf:params:scim:api:messages:2.0:Error"]`
    schemas: Vec<String>,
    /// The HTTP status, as a string.
    status: String,
    /// RFC 7644's error type (invalidFilter, invalidValue, uniqueness, …), when one applies.
    scimType: Option<String>,
    detail: String,
}

/// A SCIM request body: `application/scim+json` or `application/json`, a JSON object.
pub struct ScimBody(Value);

impl<S: Send + Sync> FromRequest<S> for ScimBody {
    type Rejection = ScimError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let essence = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
            .unwrap_or_default();
        if essence != MEDIA_TYPE && essence != "application/json" {
            return Err(ScimError::new(415, None, "the body must be application/scim+json"));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| ScimError::new(413, None, "the body could not be read"))?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v @ Value::Object(_)) => Ok(Self(v)),
            _ => Err(ScimError::bad("invalidSyntax", "the body is not a JSON object")),
        }
    }
}

fn object(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// `startIndex` (1-based, at least 1) and `count` (0 to [`MAX_RESULTS`], default the maximum).
fn paging(start: Option<&Value>, count: Option<&Value>) -> (i64, i64) {
    let num = |v: Option<&Value>| v.and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())));
    (num(start).unwrap_or(1).max(1), num(count).unwrap_or(MAX_RESULTS).clamp(0, MAX_RESULTS))
}

/// List parameters from a query string or a SearchRequest body (arrays joined by commas).
struct ListParams {
    filter: Option<String>,
    start: i64,
    count: i64,
    attributes: Option<String>,
    excluded: Option<String>,
}

impl ListParams {
    fn from_map(m: &Map<String, Value>) -> Self {
        let get = |k: &str| m.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v);
        let text = |k: &str| {
            get(k).and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Array(a) => Some(a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")),
                _ => None,
            })
        };
        let (start, count) = paging(get("startIndex"), get("count"));
        Self {
            filter: text("filter"),
            start,
            count,
            attributes: text("attributes"),
            excluded: text("excludedAttributes"),
        }
    }

    fn from_query(q: &HashMap<String, String>) -> Self {
        Self::from_map(&q.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
    }
}

async fn list(p: &Provisioner, params: ListParams, users: bool) -> Result<Response, ScimError> {
    let filter = service::parse_filter(params.filter.as_deref(), if users { "userName" } else { "displayName" })?;
    let (start, count) = (params.start, params.count);
    let (total, items) = p
        .run(move |db, ctx| {
            if users {
                service::list_users(db, ctx, &filter, start, count)
            } else {
                service::list_groups(db, ctx, &filter, start, count)
            }
        })
        .await?;
    let urn = if users { types::USER_URN } else { types::GROUP_URN };
    let items = items
        .into_iter()
        .map(|r| types::project(r, params.attributes.as_deref(), params.excluded.as_deref(), urn))
        .collect();
    Ok(scim(StatusCode::OK, types::list_response(total, start, items)))
}

fn one(resource: Value, q: &HashMap<String, String>, urn: &str, status: StatusCode) -> Response {
    let location = resource["meta"]["location"].as_str().and_then(|l| HeaderValue::from_str(l).ok());
    let out = types::project(
        resource,
        q.get("attributes").map(String::as_str),
        q.get("excludedAttributes").map(String::as_str),
        urn,
    );
    let mut resp = scim(status, out);
    if status == StatusCode::CREATED
        && let Some(l) = location
    {
        resp.headers_mut().insert(header::LOCATION, l);
    }
    resp
}

// ---- discovery ----

#[utoipa::path(get, path = "/api/scim/v2/ServiceProviderConfig", summary = "SCIM: service provider configuration (provisioning token)",
    security(("bearer" = [])),
    responses((status = 200, description = "the configuration", body = Object, content_type = "application/scim+json"),
              (status = "4XX", description = "SCIM error: 401 no valid provisioning token", body = ScimErrorBody, content_type = "application/scim+json")))]
pub async fn service_provider_config(p: Provisioner) -> Response {
    scim(StatusCode::OK, types::service_provider_config(p.base()))
}

#[utoipa::path(get, path = "/api/scim/v2/ResourceTypes", summary = "SCIM: resource types (provisioning token)",
    security(("bearer" = [])),
    responses((status = 200, description = "a ListResponse of resource types", body = Object, content_type = "application/scim+json"),
              (status = "4XX", description = "SCIM error: 401 no valid provisioning token", body = ScimErrorBody, content_type = "application/scim+json")))]
pub async fn resource_types(p: Provisioner) -> Response {
    let all = types::resource_types(p.base());
    scim(StatusCode::OK, types::list_response(all.len() as i64, 1, all))
}

#[utoipa::path(get, path = "/api/scim/v2/ResourceTypes/{id}", summary = "SCIM: one resource type (provisioning token)",
    security(("bearer" = [])), params(("id" = String, Path, description = "User or Group")),
    responses((status = 200, description = "the resource type", body = Object, content_type = "application/scim+json"),
              (status = "4XX", description = "SCIM error: 401 no valid provisioning token, 404 no such type", body = ScimErrorBody, content_type = "application/scim+json")))]
pub async fn resource_type(p: Provisioner, Path(id): Path<String>) -> Result<Response, ScimError> {
    let found = types::resource_types(p.base()).into_iter().find(|r| r["id"] == id.as_str());
    found.map(|r| scim(StatusCode::OK, r)).ok_or_else(ScimError::not_found)
}

#[utoipa::path(get, path = "/api/scim/v2/Schemas", summary = "SCIM: schemas (provisioning token)",
    security(("bearer" = [])),
    responses((status = 200, description = "a ListResponse of schemas", body = Object, content_type = "application/scim+json"),
              (status = "4XX", description = "SCIM error: 401 no valid provisioning token", body = ScimErrorBody, content_type = "application/scim+json")))]
pub async fn schemas(p: Provisioner) -> Response {
    let all = types::schemas(p.base());
    scim(StatusCode::OK, types::list_response(all.len() as i64, 1, all))
}

#[utoipa::path(get, path = "/api/scim/v2/Schemas/{id}", summary = "SCIM: one schema (provisioning token)",
    security(("bearer" = [])), params(("id" = String, Path, description = "the schema URN")),
    responses((status = 200, description = "the schema", body = Object, content_type = "application/scim+json"),
              (status = "4XX", description = "SCIM error: 401 no valid provisioning token, 404 no such schema", body = ScimErrorBody, content_type = "application/scim+json")))]
pub async fn schema(p: Provisioner, Path(id): Path<String>) -> Result<Response, ScimError> {
    let found = types::schemas(p.base()).into_iter().find(|s| s["id"] == id.as_str());
    found.map(|s| scim(StatusCode::OK, s)).ok_or_else(ScimError::not_found)
}

// ---- Users ----

#[utoipa::path(get, path = "/api/scim/v2/Users", summary = "SCIM: list provisioned users (filter userName eq, startIndex, count)",
    security(("bearer" = [])),
    responses((status = 200, description = "a ListResponse", body = Object, content_type = "application/scim+json"),
              (status = "4XX", description = "SCIM error: 400 invalid filter, 401 no valid provisioning token", body = ScimErrorBody, content_type = "application/scim+json")))]
pub async fn list_users(p: Provisioner, Query(q): Query<HashMap<String, String>>) -> Result<Response, ScimError> {
    list(&p, ListParams::from_query(&q), true).await
}

#[utoipa::path(post, path = "/api/scim/v2/Users/.search", summary = "SCIM: search provisioned users (SearchRequest)",
    security(("bearer" = [])), request_body(content = Object, content_type = "application/scim+json"),
    responses((status = 200, description = "a ListResponse", body = Object, content_type = "application/scim+json"),
              (status = "4XX", description = "SCIM error: 400 invalid filter, 401 no valid provisioning token", body = ScimErrorBody, content_type = "application/scim+json")))]
pub async fn search_users(p: Provisioner, ScimBody(body): ScimBody) -> Result<Response, ScimError> {
    list(&p, ListParams::from_map(&object(&body)), true).await
}

#[utoipa::path(post, path = "/api/scim/v2/Users", summary = "SCIM: provision a user (an agent with only its own scope and no usable token)",
    security(("bearer" = [])), request_body(content = Object, content_type = "application/scim+json"),
    responses((status = 201, description = "the created User", body = Object, content_type = "application/scim+json"),
              (status = "4XX", description = "SCIM error: 400 invalid, 401 no valid provisioning token, 403 license cap, 409 userName taken", body = ScimErrorBody, content_type = "application/scim+json")))]
pub async fn create_user(
    p: Provisioner,
    Query(q): Query<HashMap<String, String>>,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let doc = object(&body);
    let user = p.run(move |db, ctx| service::create_user(db, ctx, &doc)).await?;
    Ok(one(user, &q, types::USER_URN, StatusCode::CREATED))
}

#[utoipa::path(get, path = "/api/scim/v2/Users/{id}", summary = "SCIM: one provisioned user",
    security(("bearer" = [])), params(("id" = String, Path, description = "the User id")),
    responses((status = 200, description = "the User", body = Object, content_type = "application/scim+json"),
              (status = "4XX", description = "SCIM error: 401 no valid provisioning token, 404 no such User", body = ScimErrorBody, content_type = "application/scim+json")))]
pub async fn get_user(
    p: Provisioner,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ScimError> {
    let id = service::parse_id(&id)?;
    let user = p.run(move |db, ctx| service::get_user(db, ctx, id)).await?;
    Ok(one(user, &q, types::USER_URN, StatusCode::OK))
}

#[utoipa::path(put, path = "/api/scim/v2/Users/{id}", summary = "SCIM: replace a provisioned user (active=false revokes its token now)",
    security(("bearer" = [])), params(("id" = String, Path, description = "the User id")), request_body(content = Object, content_type = "application/scim+json"),
    responses((status = 200, description = "the User", body = Object, content_type = "application/scim+json"),
              (status = "4XX", description = "SCIM error: 400 invalid, 401 no valid provisioning token, 404 no such User, 409 userName taken", body = ScimErrorBody, content_type = "application/scim+json")))]
pub async fn replace_user(
    p: Provisioner,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let id = service::parse_id(&id)?;
    let doc = object(&body);
    let user = p.run(move |db, ctx| service::change_user(db, ctx, id, &doc, None)).await?;
    Ok(one(user, &q, types::USER_URN, StatusCode::OK))
}

#[utoipa::path(patch, path = "/api/scim/v2/Users/{id}", summary = "SCIM: patch a provisioned user (active=false revokes its token now)",
    security(("bearer" = [])), params(("id" = String, Path, description = "the User id")), request_body(content = Object, content_type = "application/scim+json"),
    responses((status = 200, description = "the User", body = Object, content_type = "application/scim+json"),
              (status = "4XX", description = "SCIM error: 400 invalid, 401 no valid provisioning token, 404 no such User, 409 userName taken", body = ScimErrorBody, content_type = "application/scim+json")))]
pub async fn patch_user(
    p: Provisioner,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let id = service::parse_id(&id)?;
    let user = p.run(move |db, ctx| service::change_user(db, ctx, id, &Map::new(), Some(&body))).await?;
    Ok(one(user, &q, types::USER_URN, StatusCode::OK))
}

#[utoipa::path(delete, path = "/api/scim/v2/Users/{id}", summary = "SCIM: delete a provisioned user (revokes its agent now)",
    security(("bearer" = [])), params(("id" = String, Path, description = "the User id")),
    responses((status = 204, description = "deleted"),
              (status = "4XX", description = "SCIM error: 401 no valid provisioning token, 404 no such User", body = ScimErrorBody, content_type = "application/scim+json")))]
pub async fn delete_user(p: Provisioner, Path(id): Path<String>) -> Result<Response, ScimError> {
    let id = service::parse_id(&id)?;
    p.run(move |db, ctx| service::delete_user(db, ctx, id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- Groups ----

#[utoipa::path(get, path = "/api/scim/v2/Groups", summary = "SCIM: list groups (filter displayName eq, startIndex, count)",
    security(("bearer" = [])),
    responses((status = 200, description = "a ListResponse", body = Object, content_type = "application/scim+json"),
              (status = "4XX", description = "SCIM error: 400 invalid filter, 401 no valid provisioning token", body = ScimErrorBody, content_type = "application/scim+json")))]
pub async fn list_groups(p: Provisioner, Query(q): Query<HashMap<String, String>>) -> Result<Response, ScimError> {
    list(&p, ListParams::from_query(&q), false).await
}

#[utoipa::path(post, path = "/api/scim/v2/Groups/.search", summary = "SCIM: search groups (SearchRequest)",
    security(("bearer" = [])), request_body(content = Object, content_type = "application/scim+json"),
    responses((status = 200, description = "a ListResponse", body = Object, content_type = "application/scim+json"),
              (status = "4XX", description = "SCIM error: 400 invalid filter, 401 no valid provisioning token", body = ScimErrorBody, content_type = "application/scim+json")))]
pub async fn search_groups(p: Provisioner, ScimBody(body): ScimBody) -> Result<Response, ScimError> {
    list(&p, ListParams::from_map(&object(&body)), false).await
}

#[utoipa::path(post, path = "/api/scim/v2/Groups", summary = "SCIM: create a group (stands for an existing scope; members wait for the owner's approval)",
    security(("bearer" = [])), request_body(content = Object, content_type = "application/scim+json"),
    responses((status = 201, description = "the created Group", body = Object, content_type = "application/scim+json"),
              (status = "4XX", description = "SCIM error: 400 invalid, 401 no valid provisioning token", body = ScimErrorBody, content_type = "application/scim+json")))]
pub async fn create_group(
    p: Provisioner,
    Query(q): Query<HashMap<String, String>>,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let doc = object(&body);
    let group = p.run(move |db, ctx| service::create_group(db, ctx, &doc)).await?;
    Ok(one(group, &q, types::GROUP_URN, StatusCode::CREATED))
}

#[utoipa::path(get, path = "/api/scim/v2/Groups/{id}", summary = "SCIM: one group",
    security(("bearer" = [])), params(("id" = String, Path, description = "the Group id")),
    responses((status = 200, description = "the Group", body = Object, content_type = "application/scim+json"),
              (status = "4XX", description = "SCIM error: 401 no valid provisioning token, 404 no such Group", body = ScimErrorBody, content_type = "application/scim+json")))]
pub async fn get_group(
    p: Provisioner,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ScimError> {
    let id = service::parse_group_id(&id)?;
    let group = p.run(move |db, ctx| service::get_group(db, ctx, id)).await?;
    Ok(one(group, &q, types::GROUP_URN, StatusCode::OK))
}

#[utoipa::path(put, path = "/api/scim/v2/Groups/{id}", summary = "SCIM: replace a group (removed members lose its scope now)",
    security(("bearer" = [])), params(("id" = String, Path, description = "the Group id")), request_body(content = Object, content_type = "application/scim+json"),
    responses((status = 200, description = "the Group", body = Object, content_type = "application/scim+json"),
              (status = "4XX", description = "SCIM error: 400 invalid, 401 no valid provisioning token, 404 no such Group", body = ScimErrorBody, content_type = "application/scim+json")))]
pub async fn replace_group(
    p: Provisioner,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let id = service::parse_group_id(&id)?;
    let doc = object(&body);
    let group = p.run(move |db, ctx| service::change_group(db, ctx, id, &doc, None)).await?;
    Ok(one(group, &q, types::GROUP_URN, StatusCode::OK))
}

#[utoipa::path(patch, path = "/api/scim/v2/Groups/{id}", summary = "SCIM: patch a group's members or name (removed members lose its scope now)",
    security(("bearer" = [])), params(("id" = String, Path, description = "the Group id")), request_body(content = Object, content_type = "application/scim+json"),
    responses((status = 200, description = "the Group", body = Object, content_type = "application/scim+json"),
              (status = "4XX", description = "SCIM error: 400 invalid, 401 no valid provisioning token, 404 no such Group", body = ScimErrorBody, content_type = "application/scim+json")))]
pub async fn patch_group(
    p: Provisioner,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    let id = service::parse_group_id(&id)?;
    let group = p.run(move |db, ctx| service::change_group(db, ctx, id, &Map::new(), Some(&body))).await?;
    Ok(one(group, &q, types::GROUP_URN, StatusCode::OK))
}

#[utoipa::path(delete, path = "/api/scim/v2/Groups/{id}", summary = "SCIM: delete a group (its members lose its scope now)",
    security(("bearer" = [])), params(("id" = String, Path, description = "the Group id")),
    responses((status = 204, description = "deleted"),
              (status = "4XX", description = "SCIM error: 401 no valid provisioning token, 404 no such Group", body = ScimErrorBody, content_type = "application/scim+json")))]
pub async fn delete_group(p: Provisioner, Path(id): Path<String>) -> Result<Response, ScimError> {
    let id = service::parse_group_id(&id)?;
    p.run(move |db, ctx| service::delete_group(db, ctx, id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/api/scim/v2/.search", summary = "SCIM: search Users and Groups at once (SearchRequest)",
    security(("bearer" = [])), request_body(content = Object, content_type = "application/scim+json"),
    responses((status = "4XX", description = "SCIM error: 401 no valid provisioning token", body = ScimErrorBody, content_type = "application/scim+json"),
              (status = 200, description = "a ListResponse of Users, then Groups", body = Object, content_type = "application/scim+json")))]
pub async fn search_all(p: Provisioner, ScimBody(body): ScimBody) -> Result<Response, ScimError> {
    let params = ListParams::from_map(&object(&body));
    // A filter on userName searches Users only, on displayName Groups only; others search both.
    let attr = params.filter.as_deref().and_then(types::parse_eq).map(|(a, _)| a.to_ascii_lowercase());
    let (users, groups) = match attr.as_deref() {
        Some("username") => (true, false),
        Some("displayname") => (false, true),
        _ => (true, true),
    };
    let user_filter = if users { Some(service::parse_filter(params.filter.as_deref(), "userName")?) } else { None };
    let group_filter =
        if groups { Some(service::parse_filter(params.filter.as_deref(), "displayName")?) } else { None };
    let (start, count) = (params.start, params.count);
    let (total, items) = p
        .run(move |db, ctx| {
            // Both kinds in one order (Users, then Groups), paged over the whole.
            let (mut total, mut items) = (0, Vec::new());
            if let Some(f) = &user_filter {
                let (t, v) = service::list_users(db, ctx, f, 1, MAX_RESULTS)?;
                total += t;
                items.extend(v);
            }
            if let Some(f) = &group_filter {
                let (t, v) = service::list_groups(db, ctx, f, 1, MAX_RESULTS)?;
                total += t;
                items.extend(v);
            }
            let page = items
                .into_iter()
                .skip(usize::try_from(start - 1).unwrap_or(0))
                .take(usize::try_from(count).unwrap_or(0));
            Ok((total, page.collect::<Vec<_>>()))
        })
        .await?;
    let items = items
        .into_iter()
        .map(|r| {
            let urn = if r["schemas"][0] == types::GROUP_URN { types::GROUP_URN } else { types::USER_URN };
            types::project(r, params.attributes.as_deref(), params.excluded.as_deref(), urn)
        })
        .collect();
    Ok(scim(StatusCode::OK, types::list_response(total, start, items)))
}

// ---- the owner's side: provisioning tokens and grant approvals ----

fn owner_only(caller: &Caller) -> Result<(), ApiError> {
    let a = &caller.principal.agent;
    if a.all_access && a.admin {
        Ok(())
    } else {
        Err(ApiError::forbidden("provisioning_is_owner_only", "only the vault owner governs provisioning"))
    }
}

#[utoipa::path(get, path = "/api/scim/tokens", summary = "List provisioning (SCIM) tokens (owner)",
    security(("bearer" = [])),
    responses((status = 200, description = "the tokens (never their values)", body = Object),
              (status = "4XX", description = "error: 401 no valid token, 403 not the owner", body = crate::api::openapi::schemas::ErrorBody)))]
pub async fn list_tokens(caller: Caller) -> Result<Response, ApiError> {
    owner_only(&caller)?;
    let vault = caller.principal.vault.clone();
    let tokens = crate::api::blocking(move || vault.change(|db, _, _| Ok(db.idp_tokens()?))).await?;
    caller.principal.vault.audit(caller.event(Action::IdpTokenList, Outcome::Ok)).await?;
    Ok(Json(json!({"tokens": tokens})).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProvisioningToken {
    /// A label for the owner (which identity provider uses it).
    #[schema(max_length = 64)]
    #[serde(default)]
    name: String,
}

#[utoipa::path(post, path = "/api/scim/tokens", summary = "Create a provisioning (SCIM) token; shown once (owner, passkey)",
    security(("bearer" = [])),
    params(SignedHeaders),
    request_body(content = NewProvisioningToken, content_type = "application/json"),
    responses((status = 201, description = "the token, shown once", body = Object),
              (status = "4XX", description = "error: 400 bad input, 401 no valid token, 403 refused, 415 body not JSON", body = crate::api::openapi::schemas::ErrorBody)))]
pub async fn create_token(State(state): State<AppState>, caller: Caller, signed: Signed) -> Result<Response, ApiError> {
    let req: NewProvisioningToken = parse_body(signed.body())?;
    if req.name.chars().count() > 64 {
        return Err(ApiError::BadRequest("name: at most 64 characters".into()));
    }
    let vault_id = caller.principal.vault.id().clone();
    let event = caller.event(Action::IdpTokenCreate, Outcome::Ok);
    let (id, token) = gated(&state, &caller, event, &signed, Intent::Provisioning, move |db, _, _, ev| {
        let secret = zeroize::Zeroizing::new(hex::encode(crate::crypto::random_bytes::<32>()));
        let token = zeroize::Zeroizing::new(format!("{TOKEN_PREFIX}{vault_id}_{}", secret.as_str()));
        let hash = crate::crypto::sha256_hex(token.as_bytes());
        let id = db
            .idp_token_insert(&hash, &req.name, crate::store::now_ms(), &ev.record())
            .map_err(crate::vault::VaultError::from_store)?;
        Ok((id, token))
    })
    .await?;
    let base = format!("{}{BASE_PATH}", state.rp.origin());
    Ok((StatusCode::CREATED, Json(json!({"id": id, "token": token.as_str(), "scim_base_url": base}))).into_response())
}

#[utoipa::path(delete, path = "/api/scim/tokens/{id}", summary = "Revoke a provisioning (SCIM) token (owner, passkey)",
    security(("bearer" = [])),
    params(IdPath, SignedHeaders),
    responses((status = 200, description = "revoked", body = Object),
              (status = "4XX", description = "error: 400 bad input, 401 no valid token, 403 refused, 404 no such token", body = crate::api::openapi::schemas::ErrorBody)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    crate::api::PositiveId(id): crate::api::PositiveId,
    signed: Signed,
) -> Result<Response, ApiError> {
    let event = caller.event(Action::IdpTokenRevoke, Outcome::Ok);
    gated(&state, &caller, event, &signed, Intent::Provisioning, move |db, _, _, ev| {
        db.idp_token_revoke(id, crate::store::now_ms(), &ev.record()).map_err(crate::vault::VaultError::from_store)
    })
    .await?;
    Ok(Json(json!({"revoked": id})).into_response())
}

#[utoipa::path(get, path = "/api/scim/grants", summary = "Group memberships waiting for the owner's approval (owner)",
    security(("bearer" = [])),
    responses((status = 200, description = "pending grants: group, scope, agent", body = Object),
              (status = "4XX", description = "error: 401 no valid token, 403 not the owner", body = crate::api::openapi::schemas::ErrorBody)))]
pub async fn list_grants(caller: Caller) -> Result<Response, ApiError> {
    owner_only(&caller)?;
    let vault = caller.principal.vault.clone();
    let pending = crate::api::blocking(move || vault.change(|db, _, _| Ok(db.idp_pending()?))).await?;
    caller.principal.vault.audit(caller.event(Action::IdpGrantList, Outcome::Ok)).await?;
    Ok(Json(json!({"pending": pending})).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    #[schema(minimum = 1)]
    group_id: i64,
    #[schema(minimum = 1)]
    agent_id: i64,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveGrants {
    /// The pending memberships to grant, all or none.
    #[schema(min_items = 1, max_items = 500)]
    grants: Vec<Grant>,
}

#[utoipa::path(post, path = "/api/scim/grants", summary = "Approve pending group memberships: each agent gets the group's scope (owner, passkey)",
    security(("bearer" = [])),
    params(SignedHeaders),
    request_body(content = ApproveGrants, content_type = "application/json"),
    responses((status = 200, description = "granted", body = Object),
              (status = "4XX", description = "error: 400 bad input, 401 no valid token, 403 refused, 415 body not JSON, 422 not pending", body = crate::api::openapi::schemas::ErrorBody)))]
pub async fn approve_grants(
    State(state): State<AppState>,
    caller: Caller,
    signed: Signed,
) -> Result<Response, ApiError> {
    let req: ApproveGrants = parse_body(signed.body())?;
    if req.grants.is_empty() || req.grants.len() > 500 || req.grants.iter().any(|g| g.group_id < 1 || g.agent_id < 1) {
        return Err(ApiError::BadRequest("grants: 1 to 500 pairs of positive group_id and agent_id".into()));
    }
    let pairs: Vec<(i64, i64)> = req.grants.iter().map(|g| (g.group_id, g.agent_id)).collect();
    let event = caller.event(Action::IdpGrantApprove, Outcome::Ok);
    let granted = gated(&state, &caller, event, &signed, Intent::Provisioning, move |db, _, _, ev| {
        service::approve(db, &pairs, ev)
    })
    .await?;
    let granted: Vec<Value> =
        granted.into_iter().map(|(agent, scope)| json!({"agent_id": agent, "scope": scope})).collect();
    Ok(Json(json!({"granted": granted})).into_response())
}
