//! The owner's web pages: setup, entries (with who can read each), agents (with what each can
//! read), passkeys, audit, import, and the browser extension's sign-in page (`/extension`).
//! Plain HTML, CSS and JS, embedded in the binary with `include_str!` and served from here.
//!
//! Owns the page routes (`/`, `/setup`, `/extension`, `/assets/…`) and their security headers: a strict
//! Content-Security-Policy (only this origin's own scripts and styles; no inline script, no
//! eval, no framing, no plugins), `X-Frame-Options: DENY`, and no caching (set for every
//! response by the API's last middleware). It must never serve anything but these embedded
//! files, never template secrets or user data into a page (pages fetch everything over the
//! JSON API with the owner's token), and never load anything from another origin. L2 values
//! are encrypted and decrypted by `assets/common.js` in the browser; the server never sees
//! their key.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::{ApiError, AppState};

/// The policy every page and asset is served with.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset { name: "style.css", content_type: "text/css; charset=utf-8", body: include_str!("assets/style.css") },
    Asset { name: "common.js", content_type: "text/javascript; charset=utf-8", body: include_str!("assets/common.js") },
    Asset { name: "import.js", content_type: "text/javascript; charset=utf-8", body: include_str!("assets/import.js") },
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", body: include_str!("assets/app.js") },
    Asset { name: "setup.js", content_type: "text/javascript; charset=utf-8", body: include_str!("assets/setup.js") },
    Asset {
        name: "extension.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/extension.js"),
    },
];

const APP_HTML: &str = include_str!("assets/app.html");
const SETUP_HTML: &str = include_str!("assets/setup.html");
/// The page the browser extension opens to sign in with the passkey (issue 17 §3).
const EXTENSION_HTML: &str = include_str!("assets/extension.html");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { page("text/html; charset=utf-8", APP_HTML) }))
        .route("/setup", get(|| async { page("text/html; charset=utf-8", SETUP_HTML) }))
        .route("/extension", get(|| async { page("text/html; charset=utf-8", EXTENSION_HTML) }))
        .route("/assets/{name}", get(asset))
        // Browsers ask for it on every page; there is none, and a 404 would be noise.
        .route("/favicon.ico", get(|| async { axum::http::StatusCode::NO_CONTENT }))
}

async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    // The edition's own controls (empty in the community edition, so the page loads the same).
    if name == "edition.js" {
        return Ok(page("text/javascript; charset=utf-8", crate::edition::current().page_script()));
    }
    ASSETS.iter().find(|a| a.name == name).map(|a| page(a.content_type, a.body)).ok_or(ApiError::NotFound)
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    resp
}
