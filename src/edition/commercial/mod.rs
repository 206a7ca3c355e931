//! The commercial edition: many vaults per node (hosted vaults and the cross-vault audit feed,
//! `hosted.rs` and `audit_feed.rs`), telemetry on when configured, operator alerts
//! also POSTed to HQ, and a tarpit for unrecognised requests.
//!
//! Everything in this folder exists only in a `--features commercial` build.

mod alerts;
mod audit_feed;
mod autoscope;
mod bulk;
mod hosted;
mod license;
mod license_api;
mod license_cli;
mod replication;
mod scim;
mod tarpit;

use axum::Router;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::telemetry::TelemetryInputs;
use super::{CapExceeded, Capped, EditionError};
use crate::api::AppState;

/// The commercial edition's flags (global, so `serve` and the local CLI share them).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EditionArgs {
    #[command(flatten)]
    pub license: license::LicenseArgs,
    #[command(flatten)]
    pub replication: replication::ReplicationArgs,
}
pub use license_cli::CommercialCommand as EditionCommand;

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

    fn refuses_writes(&self) -> Option<String> {
        replication::backup_mode::refusal()
    }

    fn alert_operator(&self, kind: &str, message: &str, details: &[(&str, String)]) {
        super::log_alert(self.name(), kind, message, details);
        alerts::enqueue(kind, message, details);
    }

    fn open_node(&self, args: &EditionArgs, node_db: &std::path::Path, serving: bool) -> Result<(), EditionError> {
        license::open(&args.license, node_db, serving)?;
        if serving {
            autoscope::configure(&args.license.autoscope)?;
            hosted::start(&args.license.hosted, node_db).map_err(EditionError::Setting)?;
            audit_feed::start(node_db).map_err(EditionError::Setting)?;
        }
        replication::open(&args.replication, node_db, serving)
    }

    fn audit_committed(&self, file: &std::path::Path) {
        audit_feed::mark(file);
    }

    fn node_started(&self, node: &std::sync::Arc<crate::vault::live::Node>) {
        replication::node_started(node);
    }

    fn enforces_caps(&self) -> bool {
        true
    }

    fn assert_within_cap(&self, what: Capped, current: u64, delta: u64, requested_by: &str) -> Result<(), CapExceeded> {
        license::assert_within_cap(what, current, delta, requested_by)
    }

    fn run_command(&self, cmd: &EditionCommand, args: &EditionArgs, node_db: &std::path::Path) -> anyhow::Result<()> {
        if let EditionCommand::Replication(c) = cmd {
            replication::open(&args.replication, node_db, false)?;
            return replication::cli::run(c, node_db);
        }
        license_cli::run(cmd, &args.license, node_db)
    }

    fn telemetry_fields(&self) -> Vec<(&'static str, serde_json::Value)> {
        let mut fields = license::telemetry_fields();
        fields.extend(replication::telemetry_fields());
        fields
    }

    fn documented_routes(&self, router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
        let router = router
            .routes(routes!(license_api::install))
            .routes(routes!(license_api::usage))
            .routes(routes!(hosted::create, hosted::list))
            .routes(routes!(hosted::remove))
            .routes(routes!(audit_feed::feed))
            .routes(routes!(bulk::create, bulk::revoke))
            .routes(routes!(autoscope::suggest))
            .routes(routes!(replication::apply::apply));
        scim::routes(router)
    }

    fn page_script(&self) -> &'static str {
        include_str!("assets/edition.js")
    }

    fn install_fallback(&self, router: Router<AppState>) -> Router<AppState> {
        // Unknown paths below the SCIM base answer a provisioning token with a SCIM 404; a
        // backup POP refuses writes (replication's guard).
        replication::guard_router(router.fallback(scim::fallback_or_tarpit).method_not_allowed_fallback(tarpit::hold))
    }
}
