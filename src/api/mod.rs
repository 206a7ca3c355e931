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
mod finish;
pub mod openapi;
pub mod serve;
mod setup;
mod throttle;
mod write;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
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
        .layer(finish::FinishLayer)
        .with_state(state)
}

/// Liveness: 200 when every registered vault is served, 503 `degraded` when one could not be
/// opened (so a deploy's health check stops and rolls back).
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let unavailable = state.node.unavailable().len();
    let status =
        if unavailable == 0 { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE };
    let body = axum::Json(json!({
        "status": if unavailable == 0 { "ok" } else { "degraded" },
        "edition": crate::edition::current().name(),
        "version": env!("CARGO_PKG_VERSION"),
        "vaults": state.node.vaults().len(),
        "vaults_unavailable": unavailable,
        "uptime_s": state.started.elapsed().as_secs(),
    }));
    (status, body)
}

/// The plain answer for an unknown route.
pub async fn not_found() -> ApiError {
    ApiError::NoRoute
}
