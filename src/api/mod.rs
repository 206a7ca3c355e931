//! HTTP: the axum router, its handlers, and the one error mapping. The only module with HTTP types.
//!
//! Invariants: every response that is an error carries a JSON body (a last middleware rewrites
//! any bare error some layer produced); every response says `Cache-Control: no-store`; an entry
//! the caller may not see answers exactly like a missing one; a secret leaves only after its
//! audit row is committed. Handlers never touch SQL: they call `vault`.

mod admin;
mod caller;
mod entries;
mod error;
pub mod openapi;
pub mod serve;
mod setup;
mod throttle;
mod write;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;

pub use caller::Caller;
pub use error::ApiError;
pub use throttle::AuthThrottle;
pub use write::{ASSERTION_HEADER, CHALLENGE_HEADER};

use crate::auth::webauthn::RelyingParty;
use crate::vault::Node;

/// Largest request body accepted anywhere. Admin writes (entries of up to 64 fields) fit easily.
pub const MAX_BODY: usize = 256 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    pub started: Instant,
    /// The WebAuthn relying party (`--rp-id`, `--origin`).
    pub rp: Arc<RelyingParty>,
    /// How long an operation-bound challenge stays valid (`--challenge-ttl-secs`).
    pub challenge_ttl: Duration,
    pub auth_throttle: Arc<AuthThrottle>,
}

impl AppState {
    pub fn new(node: Arc<Node>, webauthn: crate::config::WebauthnConfig) -> Self {
        Self {
            node,
            started: Instant::now(),
            rp: Arc::new(webauthn.rp),
            challenge_ttl: webauthn.challenge_ttl,
            auth_throttle: Arc::new(AuthThrottle::default()),
        }
    }
}

pub fn router(state: AppState) -> Router {
    let shared = Router::new()
        .route("/healthz", get(health))
        .route("/api/openapi.json", get(openapi::serve))
        .route("/api/entries", get(entries::list).post(write::create_entry))
        .route("/api/entries/{id}", get(entries::get_one).put(write::update_entry).delete(write::delete_entry))
        .route("/api/entries/{id}/scopes", put(write::set_entry_scopes))
        .route("/api/search", get(entries::search))
        .route("/api/ext/totp/{id}", get(entries::totp))
        .route("/api/agents", get(admin::agents).post(write::create_agent))
        .route("/api/agents/{id}", put(write::update_agent).delete(write::delete_agent))
        .route("/api/audit", get(admin::audit))
        .route("/api/webauthn/challenge", post(write::challenge))
        .route("/api/passkeys", get(write::passkeys).post(write::add_passkey))
        .route("/api/passkeys/options", post(write::passkey_options))
        .route("/api/passkeys/{id}", axum::routing::delete(write::remove_passkey))
        .route("/api/keyring", get(write::keyring).put(write::set_keyring))
        .route("/api/setup/start", post(setup::start))
        .route("/api/setup/finish", post(setup::finish))
        .route("/api/webauthn/info", get(setup::info))
        .merge(crate::web::routes());
    // The edition adds its own routes and its handler for everything unmatched.
    crate::edition::current()
        .install_routes(shared)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
        .layer(middleware::from_fn(finish_response))
        .with_state(state)
}

async fn health(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(json!({
        "status": "ok",
        "edition": crate::edition::current().name(),
        "version": env!("CARGO_PKG_VERSION"),
        "vaults": state.node.vaults().len(),
        "uptime_s": state.started.elapsed().as_secs(),
    }))
}

/// The plain answer for an unknown route.
pub async fn not_found() -> ApiError {
    ApiError::NoRoute
}

/// Security headers on everything, and a JSON body on every error that lacks one (axum's own
/// 405, a body-limit 413, an extractor's rejection).
async fn finish_response(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    // The route pattern, not the request's URI: it names the route without ids, and holding a
    // clone of the URI across the handler would pin hyper's read buffer (the URI shares its
    // bytes), making hyper allocate a fresh 8 KB one for every request.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let started = Instant::now();
    let mut resp = next.run(req).await;
    let status = resp.status();
    // Node telemetry: req_1h / err_1h (every 4xx and 5xx is an error).
    crate::node::metrics().record_response(status.as_u16());
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let message = status.canonical_reason().unwrap_or("error");
        let body = json!({"error": error::code_for(status), "message": message}).to_string();
        let headers = std::mem::take(resp.headers_mut());
        resp = Response::new(Body::from(body));
        *resp.status_mut() = status;
        for name in [header::ALLOW, header::WWW_AUTHENTICATE] {
            if let Some(v) = headers.get(&name) {
                resp.headers_mut().insert(name, v.clone());
            }
        }
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Route patterns only: no ids, and never a query string (search text).
    let route = route.as_ref().map_or("(no route)", MatchedPath::as_str);
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::warn!(%method, route, status = status.as_u16(), "request failed");
    } else {
        tracing::debug!(%method, route, status = status.as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    }
    resp
}
