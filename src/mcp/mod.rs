//! `clavitor mcp`: the MCP server an agent's model talks to (the official Rust SDK, `rmcp`),
//! over stdio or, behind `--http`, Streamable HTTP on a loopback address.
//!
//! It is a thin layer over `crate::client`: every tool call is one or more calls of the agent
//! read API with the agent's own token, so the vault audits each one as that agent's read. What
//! each tool reveals to the model (and what it never does) is written in its description:
//! `list_entries` and `search_entries` reveal metadata only; `get_totp` a current code, never the
//! seed; `get_field` an L1 value only when the vault marks the agent `reveal_to_model` (asked
//! fresh from `GET /api/whoami` at every call, so the owner's change takes effect at once), else a
//! refusal that shows how to hand the value to a program with `clavitor run` instead;
//! `run_with_secrets` (listed only when the operator named commands with `--allow-run`) runs one
//! of those commands, no shell, with references resolved into its environment, and returns only
//! its output with every resolved value masked.
//!
//! Must never: return an L1 value to the model unless the vault says `reveal_to_model`, return a
//! TOTP seed (the API never sends one), log a token or a value, let a child process inherit the
//! token (`CLAVITOR_TOKEN` is removed from its environment), or answer HTTP on anything but
//! loopback or without the agent's own token as bearer. Vault errors reach the model as tool
//! errors with the vault's message; nothing a request carries can make it panic.

mod http;
mod tools;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt;

use crate::client::{ClientConfig, ClientError, VaultClient};

pub use tools::VaultTools;

/// The largest stdout (and, separately, stderr) `run_with_secrets` returns; the rest is cut.
pub const MAX_RUN_OUTPUT: usize = 64 * 1024;

/// What the operator allowed the model to do beyond reading.
#[derive(Debug, Clone)]
pub struct McpOptions {
    /// Programs `run_with_secrets` may start, compared exactly with the requested command.
    pub allow_run: Vec<String>,
    /// How long an allowed command may run before it is killed.
    pub run_timeout: Duration,
}

/// Why `clavitor mcp` could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("--http {0}: only a loopback address (127.0.0.0/8 or ::1) may serve MCP over HTTP")]
    NotLoopback(SocketAddr),
    #[error("--allow-run {0:?}: a command must be a non-empty program name or path")]
    BadAllowRun(String),
    #[error("--run-timeout must be 1 to 3600 seconds")]
    BadTimeout,
    #[error("MCP transport: {0}")]
    Transport(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Where `clavitor mcp` finds the vault and its token (see `ClientConfig::load`).
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub url: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

fn checked(opts: McpOptions) -> Result<McpOptions, McpError> {
    if let Some(bad) = opts.allow_run.iter().find(|c| c.trim().is_empty() || c.contains('\0')) {
        return Err(McpError::BadAllowRun(bad.clone()));
    }
    if opts.run_timeout.is_zero() || opts.run_timeout > Duration::from_secs(3600) {
        return Err(McpError::BadTimeout);
    }
    Ok(opts)
}

/// Serves MCP on stdin/stdout until the client closes them. Logs go to stderr only.
pub async fn serve_stdio(source: Source, opts: McpOptions) -> Result<(), McpError> {
    let opts = checked(opts)?;
    let cfg = ClientConfig::load(source.url, source.token_file, source.ca_file)?;
    let client = Arc::new(VaultClient::new(cfg)?);
    let server = VaultTools::new(client, Arc::new(opts));
    let running = server.serve(rmcp::transport::stdio()).await.map_err(|e| McpError::Transport(e.to_string()))?;
    running.waiting().await.map_err(|e| McpError::Transport(e.to_string()))?;
    Ok(())
}

/// Serves MCP over Streamable HTTP at `addr` (loopback only) until SIGINT/SIGTERM. Every request
/// must carry the agent's own token as bearer.
pub async fn serve_http(source: Source, opts: McpOptions, addr: SocketAddr) -> Result<(), McpError> {
    if !addr.ip().is_loopback() {
        return Err(McpError::NotLoopback(addr));
    }
    let opts = checked(opts)?;
    let cfg = ClientConfig::load(source.url, source.token_file, source.ca_file)?;
    let bearer = http::BearerHash::of(cfg.token());
    let client = Arc::new(VaultClient::new(cfg)?);
    http::serve(addr, bearer, client, Arc::new(opts)).await
}
