//! The community edition: one vault per node, alerts to the local log only, a plain JSON 404
//! for unknown routes, and telemetry only when the operator opts in with explicit flags.

use axum::Router;

use super::EditionError;
use super::telemetry::{COMMERCIAL_ENV, TelemetryInputs};
use crate::api::AppState;

#[cfg_attr(feature = "commercial", allow(dead_code))]
pub struct Community;

/// No edition flags in the community edition.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EditionArgs {}

/// No edition subcommands in the community edition.
#[derive(Debug, clap::Subcommand)]
pub enum EditionCommand {}

impl super::Edition for Community {
    fn name(&self) -> &'static str {
        "community"
    }

    fn max_vaults(&self) -> usize {
        1
    }

    fn configure(&self, flags: TelemetryInputs) -> Result<(), EditionError> {
        let ignored: Vec<&str> = COMMERCIAL_ENV.iter().copied().filter(|v| std::env::var_os(v).is_some()).collect();
        if !ignored.is_empty() {
            tracing::warn!(
                variables = ignored.join(","),
                "these environment variables configure the commercial edition and are ignored here; \
                 community telemetry is opt-in with --telemetry-host and --telemetry-token-file"
            );
        }
        if let Some(settings) = flags.resolve()? {
            super::set_telemetry(settings);
        }
        Ok(())
    }

    fn alert_operator(&self, kind: &str, message: &str, details: &[(&str, String)]) {
        super::log_alert(self.name(), kind, message, details);
    }

    fn run_command(
        &self,
        cmd: &super::EditionCommand,
        _args: &super::EditionArgs,
        _node_db: &std::path::Path,
    ) -> anyhow::Result<()> {
        #[cfg(not(feature = "commercial"))]
        match *cmd {}
        #[cfg(feature = "commercial")]
        {
            let _ = cmd;
            anyhow::bail!("not a community command")
        }
    }

    fn install_fallback(&self, router: Router<AppState>) -> Router<AppState> {
        // Wrong methods on known routes get axum's 405, which the API's last middleware turns
        // into the same small JSON shape.
        router.fallback(crate::api::not_found)
    }
}
