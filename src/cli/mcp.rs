//! `clavitor mcp`: flags, and the runtime it serves on (see `crate::mcp`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use super::client::ClientArgs;
use crate::mcp::{McpOptions, Source};

#[derive(Debug, Args)]
pub struct McpArgs {
    /// The vault, the agent's token (CLAVITOR_TOKEN or the token file, never argv), the CA.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Offer the tool `run_with_secrets` for this program (exact name or path as the model must
    /// write it; no shell). Repeatable. Off when absent. No environment variable: it lets the
    /// model run programs with the agent's secrets.
    #[arg(long = "allow-run", value_name = "CMD")]
    pub allow_run: Vec<String>,
    /// Seconds an allowed command may run before it is killed (1 to 3600).
    #[arg(long, env = "CLAVITOR_MCP_RUN_TIMEOUT", default_value_t = 60)]
    pub run_timeout: u64,
    /// Serve Streamable HTTP on this loopback address (e.g. 127.0.0.1:8765) instead of stdio;
    /// requests must carry the agent's token as bearer. No environment variable: it opens the
    /// token's use to other local clients.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
}

/// Runs `clavitor mcp` to the end (stdio closed, or SIGINT/SIGTERM for HTTP).
pub fn run_mcp(args: &McpArgs) -> anyhow::Result<()> {
    let c = &args.client;
    let source = Source { url: c.url.clone(), token_file: c.token_file.clone(), ca_file: c.ca_file.clone() };
    let opts = McpOptions { allow_run: args.allow_run.clone(), run_timeout: Duration::from_secs(args.run_timeout) };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = match args.http {
        Some(addr) => rt.block_on(crate::mcp::serve_http(source, opts, addr)),
        None => rt.block_on(crate::mcp::serve_stdio(source, opts)),
    };
    // A blocking read of stdin cannot be cancelled; do not wait for it at shutdown.
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(result?)
}
