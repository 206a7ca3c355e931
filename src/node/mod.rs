//! The node: what one Clavitor host is besides its vaults — its TLS, how it reports its health,
//! and its WireGuard management link.
//!
//! Owns: the TLS modes (ACME via rustls-acme, static files, or none) and the HTTP→HTTPS redirect
//! (`tls`); the server's own counters (`metrics`: rolling one-hour request/error windows, agents
//! seen in the last five minutes); the scheduled SQLite integrity checks (`integrity`); the
//! telemetry payload of infrastructure.md (`payload`); the pushes to Uptime Kuma (`kuma`) and to
//! HQ (`hq`); WireGuard keys and status (`wg`).
//!
//! Must never: run a check or a push on the request path (requests only bump counters), hold a
//! lock across I/O, log a token, a push URL (it carries Kuma's secret token) or a private key, or
//! contain SQL (integrity checks call `store`). Failures an operator must act on go through
//! `edition::alert`; everything else is logged once per change of state, never per attempt.

pub mod hq;
pub mod integrity;
pub mod kuma;
pub mod metrics;
pub mod payload;
pub mod tls;
pub mod wg;

use std::path::PathBuf;

pub use integrity::DbIntegrity;
pub use metrics::metrics;
pub use payload::{Payload, PayloadSource};

/// Errors of the node room.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Config(String),
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("invalid WireGuard key: expected 32 bytes in base64")]
    WgKey,
    #[error("WireGuard interface {name:?}: {reason}")]
    WgInterface { name: String, reason: String },
    #[error("cannot read system figures: {0}")]
    System(String),
}

type UnavailableSource = Box<dyn Fn() -> Vec<String> + Send + Sync>;
static UNAVAILABLE_VAULTS: std::sync::OnceLock<UnavailableSource> = std::sync::OnceLock::new();

/// Tells the node's reports, once at start, where to learn which vaults it cannot serve now
/// ("vault ID unavailable: why"): a vault that could not be opened at start, or whose first
/// open failed later. While any is listed the Kuma push reports the node down with that reason.
pub fn set_unavailable_vaults(source: impl Fn() -> Vec<String> + Send + Sync + 'static) {
    let _ = UNAVAILABLE_VAULTS.set(Box::new(source));
}

/// The vaults unavailable now, from [`set_unavailable_vaults`]'s source (none before it is set).
pub fn unavailable_vaults() -> Vec<String> {
    UNAVAILABLE_VAULTS.get().map_or_else(Vec::new, |source| source())
}

/// The node's validated settings for `clavitor serve`.
#[derive(Debug)]
pub struct NodeSettings {
    pub tls: tls::TlsPlan,
    pub kuma: Option<kuma::KumaSettings>,
    pub wg: Option<wg::WgTarget>,
}

/// Starts the background work of a serving node: the scheduled integrity checks, the Kuma
/// pushes (when configured) and HQ telemetry (when the edition has settings for it).
pub fn start_reporting(settings: NodeSettings, dir: &crate::vault::DataDir) -> Result<(), NodeError> {
    let spawn_err = |what: &str, e: std::io::Error| NodeError::Config(format!("cannot start {what}: {e}"));
    integrity::spawn(dir.clone()).map_err(|e| spawn_err("the integrity checks", e))?;
    let source = || {
        PayloadSource::new(
            dir.clone(),
            settings.tls.cert_source(dir),
            settings.wg.clone(),
            payload::IntegritySource::Scheduled,
        )
    };
    if let Some(telemetry) = crate::edition::telemetry_settings() {
        hq::spawn(telemetry, source()).map_err(|e| spawn_err("HQ telemetry", e))?;
        tracing::info!(host = %telemetry.host, every_s = telemetry.freq.as_secs(), "HQ telemetry on");
    }
    if let Some(k) = settings.kuma {
        let every = k.interval.as_secs();
        kuma::spawn(k, source()).map_err(|e| spawn_err("the Kuma push", e))?;
        tracing::info!(every_s = every, "Kuma push on");
    }
    Ok(())
}
