//! Which edition this binary is, behind one trait: name, vault limit, telemetry, operator
//! alerts, the edition's own routes and fallback, and shutdown.
//!
//! Community is the default build. The commercial edition exists only when compiled with the
//! cargo feature `commercial`, gated once at its `mod` line below; its routes register
//! themselves through [`Edition::documented_routes`] (each from its handler's `#[utoipa::path]`,
//! so they are in this edition's OpenAPI document and no other), and the shared router names
//! none of them.
//! Application code asks [`current()`] and never tests the feature itself: a community binary
//! holds no commercial code to switch on. Because commercial HTTP handlers must not exist in a
//! community build, they live in `commercial/` rather than in `api/` (the one exception to
//! "HTTP types only in api/").

#[cfg(feature = "commercial")]
mod commercial;
mod community;
pub mod telemetry;

use std::sync::OnceLock;

use axum::Router;
use tokio::sync::watch;
use utoipa_axum::router::OpenApiRouter;

use crate::api::AppState;
pub use telemetry::{TelemetryError, TelemetryInputs, TelemetrySettings};

/// A resource a commercial license caps (community: nothing is capped).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Capped {
    Vaults,
    AgentsPerVault,
    PasskeysPerVault,
    EntriesPerVault,
}

/// A create refused by the edition's caps: the 403 body, which explains why and what to do.
pub struct CapExceeded(pub Box<serde_json::Value>);

/// The edition's own command-line flags and subcommands: empty in the community edition.
#[cfg(feature = "commercial")]
pub use commercial::{EditionArgs, EditionCommand};
#[cfg(not(feature = "commercial"))]
pub use community::{EditionArgs, EditionCommand};

/// A setting the edition was given at start is invalid.
#[derive(Debug, thiserror::Error)]
pub enum EditionError {
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    #[error("{0}")]
    Setting(String),
}

pub trait Edition: Send + Sync {
    /// "community" or "commercial".
    fn name(&self) -> &'static str;
    /// How many vaults one node serves.
    fn max_vaults(&self) -> usize;
    /// Validates and applies the edition's settings once, at start. `flags` are the operator's
    /// explicit telemetry flags; an edition may also read its own environment variables.
    fn configure(&self, flags: TelemetryInputs) -> Result<(), EditionError>;
    /// Whether node telemetry goes to HQ (commercial: when configured; community: only when the
    /// operator opted in with flags).
    fn telemetry_enabled(&self) -> bool {
        telemetry_settings().is_some()
    }
    /// Reports an event the operator must see (auth system errors, DB damage, …). Never blocks.
    fn alert_operator(&self, kind: &str, message: &str, details: &[(&str, String)]);
    /// Loads what the edition keeps in node.db (commercial: the license) for a server or a
    /// local CLI run. `serving` starts the edition's background jobs.
    fn open_node(&self, _args: &EditionArgs, _node_db: &std::path::Path, _serving: bool) -> Result<(), EditionError> {
        Ok(())
    }
    /// The server's vaults are open (commercial: a primary's replication worker starts here,
    /// on the server's own data dir and store).
    fn node_started(&self, _node: &std::sync::Arc<crate::vault::live::Node>) {}
    /// Whether the edition caps creates at all (community: no, so nothing is counted).
    fn enforces_caps(&self) -> bool {
        false
    }
    /// Refuses a create that would take `what` past the edition's cap (community: never).
    /// `requested_by` names who asked (an audit actor: `agent:3`, `local-operator`, `mgmt:2`).
    fn assert_within_cap(
        &self,
        _what: Capped,
        _current: u64,
        _delta: u64,
        _requested_by: &str,
    ) -> Result<(), CapExceeded> {
        Ok(())
    }
    /// Why this node refuses every write (commercial: it is a replication backup), if it does.
    fn refuses_writes(&self) -> Option<String> {
        None
    }
    /// Runs one of the edition's own subcommands (community has none).
    fn run_command(&self, cmd: &EditionCommand, args: &EditionArgs, node_db: &std::path::Path) -> anyhow::Result<()>;
    /// Extra telemetry fields (commercial: the license state), as JSON pairs.
    fn telemetry_fields(&self) -> Vec<(&'static str, serde_json::Value)> {
        Vec::new()
    }
    /// Told after an audit batch of `file` (a vault file or node.db) committed. Must not block
    /// (commercial: marks the file for the cross-vault audit feed; community: nothing).
    fn audit_committed(&self, _file: &std::path::Path) {}
    /// Adds the edition's own API routes, each with `routes!` so it is documented.
    fn documented_routes(&self, router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
        router
    }
    /// The edition's script for the owner's pages, served as `/assets/edition.js` (community:
    /// empty; commercial: the bulk-agents and autoscope controls).
    fn page_script(&self) -> &'static str {
        ""
    }
    /// Adds the edition's handler for unmatched routes and wrong methods.
    fn install_fallback(&self, router: Router<AppState>) -> Router<AppState>;
    /// Starts shutdown: whatever the edition holds open is released within a second.
    fn begin_shutdown(&self) {
        shutdown_sender().send_replace(true);
    }
}

/// The edition compiled into this binary.
pub fn current() -> &'static dyn Edition {
    #[cfg(feature = "commercial")]
    {
        &commercial::Commercial
    }
    #[cfg(not(feature = "commercial"))]
    {
        &community::Community
    }
}

/// Shorthand for `current().alert_operator(...)`.
pub fn alert(kind: &str, message: &str, details: &[(&str, String)]) {
    current().alert_operator(kind, message, details);
}

static TELEMETRY: OnceLock<TelemetrySettings> = OnceLock::new();

/// HQ telemetry settings, if this node sends telemetry at all.
pub fn telemetry_settings() -> Option<&'static TelemetrySettings> {
    TELEMETRY.get()
}

pub(crate) fn set_telemetry(settings: TelemetrySettings) {
    // Set once at start; a second configure keeps the first (tests configure per process).
    let _ = TELEMETRY.set(settings);
}

fn shutdown_sender() -> &'static watch::Sender<bool> {
    static SHUTDOWN: OnceLock<watch::Sender<bool>> = OnceLock::new();
    SHUTDOWN.get_or_init(|| watch::channel(false).0)
}

/// Resolves once shutdown has begun.
pub async fn shutdown_started() {
    let mut rx = shutdown_sender().subscribe();
    // Err only if the sender is gone, which it never is (it is static).
    let _ = rx.wait_for(|started| *started).await;
}

/// The local half of every operator alert: one structured line on stderr.
pub(crate) fn log_alert(edition: &str, kind: &str, message: &str, details: &[(&str, String)]) {
    let details: serde_json::Map<String, serde_json::Value> =
        details.iter().map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(v.clone()))).collect();
    let details = serde_json::Value::Object(details);
    tracing::error!(target: "operator_alert", edition, kind, %details, "OPERATOR ALERT [{kind}]: {message}");
}
