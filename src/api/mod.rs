//! HTTP: the axum router, its handlers, and the one error mapping. The only module with HTTP types.
//!
//! Invariants: every response that is an error carries a JSON body (a last middleware rewrites
//! any bare error some layer produced); every response says `Cache-Control: no-store`; an entry
//! the caller may not see answers exactly like a missing one; a secret leaves only after its
//! audit row is committed. Handlers never touch SQL: they call `vault`.

mod access_requests;
pub(crate) mod admin;
mod caller;
mod entries;
mod error;
mod extract;
mod finish;
mod import;
pub mod openapi;
pub mod serve;
mod sessions;
mod setup;
pub(crate) mod throttle;
mod tokens;
pub(crate) mod write;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use caller::Caller;
pub use error::ApiError;
pub use extract::JsonBytes;
#[cfg(feature = "commercial")]
pub(crate) use extract::{PositiveId, parse_positive as parse_positive_id};
pub use throttle::AuthThrottle;
pub use write::{ASSERTION_HEADER, CHALLENGE_HEADER};
#[cfg(feature = "commercial")]
pub(crate) use write::{Signed, gated, parse_body};

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
    /// Life of a browser-extension session token (`--extension-session-ttl-secs`).
    pub session_ttl_secs: u64,
}

impl AppState {
    pub fn new(node: Arc<Node>, webauthn: crate::config::WebauthnConfig) -> Self {
        Self {
            node,
            started: Instant::now(),
            rp: Arc::new(webauthn.rp),
            challenge_ttl: webauthn.challenge_ttl,
            auth_throttle: Arc::new(AuthThrottle::default()),
            session_ttl_secs: crate::vault::sessions::DEFAULT_SESSION_TTL_SECS,
        }
    }

    /// Sets the extension sessions' life (the flag's bounds are checked by the CLI).
    pub fn with_session_ttl(mut self, secs: u64) -> Self {
        use crate::vault::sessions::{MAX_SESSION_TTL_SECS, MIN_SESSION_TTL_SECS};
        self.session_ttl_secs = secs.clamp(MIN_SESSION_TTL_SECS, MAX_SESSION_TTL_SECS);
        self
    }
}

/// Every API operation, each registered through `routes!` from the handler's own
/// `#[utoipa::path]`: the route and its entry in the OpenAPI document are one thing, so a route
/// cannot exist undocumented. The edition adds its own documented routes here too. `routes!`
/// groups handlers that share one path. Nothing is added by a plain axum route call (a test checks).
pub fn documented_routes() -> OpenApiRouter<AppState> {
    let shared = OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(openapi::serve))
        .routes(routes!(proxy_ca))
        .routes(routes!(entries::list, write::create_entry))
        .routes(routes!(entries::get_one, write::update_entry, write::delete_entry))
        .routes(routes!(write::set_entry_scopes))
        .routes(routes!(import::import))
        .routes(routes!(entries::search))
        .routes(routes!(entries::totp))
        .routes(routes!(admin::agents, write::create_agent))
        .routes(routes!(write::update_agent, write::patch_agent, write::delete_agent))
        .routes(routes!(admin::audit))
        .routes(routes!(tokens::whoami))
        .routes(routes!(tokens::derive))
        .routes(routes!(sessions::create))
        .routes(routes!(access_requests::create, access_requests::list))
        .routes(routes!(write::dismiss_access_request))
        .routes(routes!(write::challenge))
        .routes(routes!(write::passkeys, write::add_passkey))
        .routes(routes!(write::passkey_options))
        .routes(routes!(write::remove_passkey))
        .routes(routes!(write::keyring, write::set_keyring))
        .routes(routes!(setup::start))
        .routes(routes!(setup::finish))
        .routes(routes!(setup::info));
    crate::edition::current().documented_routes(shared)
}

pub fn router(state: AppState) -> Router {
    let (api, _document) = documented_routes().split_for_parts();
    // The owner's pages are HTML and static assets, not API: they are left out of the document.
    let routes = api.merge(crate::web::routes());
    // The edition's handler for everything unmatched (and wrong methods). No body-limit layer:
    // the listener (`serve::read_body`, the one way in for plain HTTP and TLS alike) hands the
    // router whole bodies only, each within `MAX_BODY`, and refuses the rest with 413 before
    // reading them; two more layers here cost every request their boxed futures (issue 12 §8).
    crate::edition::current().install_fallback(routes).layer(finish::FinishLayer).with_state(state)
}

/// Liveness: 200 when every registered vault is served, 503 `degraded` when one cannot be: it
/// could not be opened at start, or its last open failed (so a deploy's health check stops and
/// rolls back, and a vault found damaged at its first open is not a silent 503).
#[utoipa::path(
    get,
    path = "/healthz",
    summary = "Liveness, edition and version",
    responses(
        (status = 200, description = "the node is up", body = openapi::schemas::Health),
        (status = 503, description = "degraded: a vault cannot be served (it could not be opened at start, or its last open failed)", body = openapi::schemas::Health),
        (status = "4XX", description = "error", body = openapi::schemas::ErrorBody),
    )
)]
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let unavailable = state.node.unavailable_count();
    let status =
        if unavailable == 0 { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE };
    let body = axum::Json(json!({
        "status": if unavailable == 0 { "ok" } else { "degraded" },
        "edition": crate::edition::current().name(),
        "version": env!("CARGO_PKG_VERSION"),
        "vaults": state.node.served_vaults(),
        "vaults_unavailable": unavailable,
        "uptime_s": state.started.elapsed().as_secs(),
    }));
    (status, body)
}

/// The proxy's CA certificate, for agents to trust (`HTTPS_PROXY` with the vault's proxy). It
/// is public: no token is needed. 404 when this server runs no proxy (`--proxy-listen`).
#[utoipa::path(
    get,
    path = "/api/proxy/ca.pem",
    summary = "The credential proxy's CA certificate (PEM)",
    responses(
        (status = 200, description = "the CA certificate", body = String, content_type = "application/x-pem-file"),
        (status = "4XX", description = "error; 404: no proxy runs here", body = openapi::schemas::ErrorBody),
    )
)]
async fn proxy_ca() -> Result<axum::response::Response, ApiError> {
    let pem = crate::proxy::ca_pem().ok_or(ApiError::NotFound)?;
    let mut resp = pem.to_owned().into_response();
    resp.headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/x-pem-file"));
    Ok(resp)
}

/// Runs `f`, which touches SQLite, on tokio's blocking pool rather than on a worker thread: a
/// slow disk, a checkpoint or a lock held by another process then stalls only the requests that
/// need that file, never the runtime that answers everything else.
pub(crate) async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(Into::into),
        Err(e) => {
            tracing::error!(error = %e, "a blocking task failed");
            Err(ApiError::Internal)
        }
    }
}

/// The plain answer for an unknown route.
pub async fn not_found() -> ApiError {
    ApiError::NoRoute
}
