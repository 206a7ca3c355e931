//! The commercial edition: many vaults per node, telemetry on when configured, operator alerts
//! also POSTed to HQ, and a tarpit for unrecognised requests.
//!
//! Everything in this folder exists only in a `--features commercial` build.

mod alerts;
mod tarpit;

use axum::Router;

use super::EditionError;
use super::telemetry::TelemetryInputs;
use crate::api::AppState;

pub struct Commercial;

impl super::Edition for Commercial {
    fn name(&self) -> &'static str {
        "commercial"
    }

    fn max_vaults(&self) -> usize {
        10_000
    }

    fn configure(&self, flags: TelemetryInputs) -> Result<(), EditionError> {
        tarpit::configure_from_env().map_err(EditionError::Setting)?;
        match flags.or_env().resolve()? {
            Some(settings) => {
                alerts::start(&settings);
                super::set_telemetry(settings);
            }
            None => tracing::info!("no TELEMETRY_HOST configured: operator alerts go to the local log only"),
        }
        Ok(())
    }

    fn alert_operator(&self, kind: &str, message: &str, details: &[(&str, String)]) {
        super::log_alert(self.name(), kind, message, details);
        alerts::enqueue(kind, message, details);
    }

    fn install_fallback(&self, router: Router<AppState>) -> Router<AppState> {
        router.fallback(tarpit::hold).method_not_allowed_fallback(tarpit::hold)
    }
}
