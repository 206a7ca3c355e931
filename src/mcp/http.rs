//! MCP over Streamable HTTP (rmcp's tower service under axum) on a loopback address.
//!
//! Loopback is not enough on a machine with other users or a browser: every request must carry
//! `Authorization: Bearer <the agent's own token>` (compared as SHA-256 digests in constant
//! time, so no second copy of the token is kept), the `Host` must be a loopback name (DNS
//! rebinding), and any request from a browser page (`Origin` present) is refused. So the port
//! gives nobody anything the token does not already give them.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use super::{McpError, McpOptions, VaultTools};
use crate::client::VaultClient;

/// The path MCP clients post to.
pub const MCP_PATH: &str = "/mcp";
/// The largest JSON-RPC message accepted (tool arguments are small).
const MAX_BODY: usize = 256 * 1024;

/// SHA-256 of the agent's token: what a request's bearer must hash to.
#[derive(Clone)]
pub struct BearerHash([u8; 32]);

impl BearerHash {
    pub fn of(token: &Zeroizing<String>) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    fn admits(&self, req: &Request) -> bool {
        let Some(presented) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        bool::from(digest.ct_eq(&self.0))
    }
}

fn refuse(status: StatusCode, error: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": error, "message": message});
    (status, axum::Json(body)).into_response()
}

async fn guard(State(bearer): State<Arc<BearerHash>>, req: Request, next: Next) -> Response {
    if req.headers().contains_key(header::ORIGIN) {
        return refuse(StatusCode::FORBIDDEN, "forbidden", "requests from web pages are refused");
    }
    if !bearer.admits(&req) {
        let mut resp = refuse(StatusCode::UNAUTHORIZED, "unauthorized", "send the agent's clavitor token as Bearer");
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return resp;
    }
    next.run(req).await
}

pub(super) async fn serve(
    addr: SocketAddr,
    bearer: BearerHash,
    client: Arc<VaultClient>,
    opts: Arc<McpOptions>,
) -> Result<(), McpError> {
    let stop = CancellationToken::new();
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(stop.child_token())
        .with_max_request_body_bytes(MAX_BODY)
        .enforce_origin_validation();
    let service = StreamableHttpService::new(
        move || Ok(VaultTools::new(Arc::clone(&client), Arc::clone(&opts))),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let app =
        Router::new().route_service(MCP_PATH, service).layer(middleware::from_fn_with_state(Arc::new(bearer), guard));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    // Tests and scripts read the port from this line (as with `clavitor serve`).
    println!("clavitor mcp: listening on http://{local}{MCP_PATH}");
    tracing::info!(%local, "MCP over HTTP (loopback, bearer required)");
    let shutdown = {
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            stop.cancel();
        }
    };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
