//! Replication to a backup POP (commercial, issue 14): the POP's role and peers from its
//! replication file, and the backup side's gate for signed apply requests.
//!
//! Owns the one loaded [`config::Config`] and the gate's memory (seen nonces, per-POP rates,
//! failure counts and bans). The role comes from the file only, never from the environment
//! (review item 3). Never logs or audits entry data, only POP ids, counts and outcomes
//! (review item 16); never holds another POP's private key.

pub mod apply;
pub mod backup_mode;
pub mod cli;
pub mod config;
mod gate;
mod staging;
pub mod wire;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::edition::EditionError;

pub use config::{Config, Role};

/// The replication flags. The file alone says a node is a backup, so it has no environment
/// variable (review item 3: nothing in the environment makes a node a backup).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReplicationArgs {
    /// This POP's replication file (TOML): role, peers, keys, limits. Without it the node
    /// neither replicates nor accepts replication.
    #[arg(long, global = true, value_name = "FILE")]
    pub replication_config: Option<PathBuf>,
}

struct Runtime {
    config: Config,
    node_db: PathBuf,
    gate: gate::Gate,
    /// A backup's auth snapshot parts waiting for their last part.
    staging: staging::Staging,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

fn runtime() -> Option<&'static Runtime> {
    RUNTIME.get()
}

/// This node's replication role, if it has a replication file.
pub fn role() -> Option<Role> {
    runtime().map(|r| r.config.role)
}

/// Installs the backup's write guard on a backup's router; any other router is unchanged.
pub fn guard_router<S: Clone + Send + Sync + 'static>(router: axum::Router<S>) -> axum::Router<S> {
    if role() == Some(Role::Backup) { router.layer(axum::middleware::from_fn(backup_mode::guard)) } else { router }
}

/// Loads and validates the replication file at start. A bad file stops the node: a POP that
/// is meant to be a backup must never serve as a primary by accident.
pub fn open(args: &ReplicationArgs, node_db: &Path, serving: bool) -> Result<(), EditionError> {
    let Some(path) = &args.replication_config else {
        return Ok(());
    };
    let config = config::load(path).map_err(|e| EditionError::Setting(e.to_string()))?;
    tracing::info!(
        pop_id = %config.pop_id,
        role = config.role.as_str(),
        backups = config.backups.len(),
        sources = config.sources.len(),
        "replication configured"
    );
    if config.role == Role::Backup && !config.backups.is_empty() {
        // Review item 8: a backup never replicates onward, whatever its file lists.
        tracing::warn!("this POP is a backup: its backups list is ignored (no cascade replication)");
    }
    // A second open in one process (tests) keeps the first. The worker starts once the
    // server's vaults are open (`node_started`); a local CLI run (`serving` false) has none.
    let _ = serving;
    let staging = staging::Staging::new(staging::STAGING_CAP_BYTES, config.max_request_age_s);
    let _ = RUNTIME.set(Runtime { config, node_db: node_db.to_owned(), gate: gate::Gate::new(), staging });
    Ok(())
}

/// The server is up: a primary starts its replication worker on the server's data dir.
pub fn node_started(node: &std::sync::Arc<crate::vault::live::Node>) {
    if let Some(rt) = runtime() {
        worker::start(rt, node.data_dir().clone());
    }
}

/// One replication audit row in node.db (both sides audit every attempt, review item 7).
fn audit(action: &'static str, actor: &str, outcome: &'static str, detail: String) {
    let Some(rt) = runtime() else { return };
    let rec = crate::store::AuditRecord {
        ts: crate::store::now_ms(),
        actor: actor.to_owned().into(),
        agent_id: None,
        action: action.into(),
        entry_id: None,
        client: String::new(),
        outcome: outcome.into(),
        detail,
    };
    if let Err(e) = crate::store::node_db::NodeDb::open(&rt.node_db).and_then(|db| db.append_audit(&rec)) {
        crate::edition::alert(
            "audit_unavailable",
            "a replication audit row could not be written",
            &[("error", e.to_string())],
        );
    }
}

/// The telemetry figures (issue 14): this POP's role and `replication_lag_s`, the seconds since
/// the last batch the peer acknowledged (primary: `replication.send` ok; backup:
/// `replication.apply` ok), from node.db's audit so the local CLI reports what the server did.
/// `replication_backlog` (a primary's): the rows its backup still has to acknowledge (entries,
/// the vault's own audit rows, and an auth snapshot that moved counting as one) summed over its
/// vaults, for the backup that has the least left (the one in use), read from the files (the
/// backlog lives on disk only); null on a backup, or if a file cannot be read.
/// Called on the telemetry thread, never on a request.
pub fn telemetry_fields() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let Some(rt) = runtime() else { return Vec::new() };
    let action = match rt.config.role {
        Role::Primary => "replication.send",
        Role::Backup => "replication.apply",
    };
    let last_ok = crate::store::node_db::NodeDb::open(&rt.node_db)
        .and_then(|db| db.audit(None, 1000))
        .ok()
        .and_then(|rows| rows.into_iter().find(|r| r.record.action == action && r.record.outcome == "ok"))
        .map(|r| r.record.ts);
    let lag = last_ok.map(|ts| (crate::store::now_ms().saturating_sub(ts) / 1000).max(0));
    let backlog = match rt.config.role {
        Role::Primary => backlogs(rt).and_then(|b| b.iter().map(|(_, b)| b.rows()).min()),
        Role::Backup => None,
    };
    vec![
        ("replication_role", json!(rt.config.role.as_str())),
        ("replication_lag_s", json!(lag)),
        ("replication_backlog", json!(backlog)),
    ]
}

/// A primary's backlog per backup (in file order), summed over its vaults; `None` if any file
/// cannot be read.
fn backlogs(rt: &Runtime) -> Option<Vec<(String, crate::store::replica::Backlog)>> {
    let root = rt.node_db.parent()?;
    let dir = crate::vault::data_dir::DataDir::new(root.to_owned(), None);
    let mut dbs = Vec::new();
    for id in dir.vault_ids().ok()? {
        dbs.push(crate::store::vault_db::VaultDb::open(&dir.vault_path(&id)).ok()?);
    }
    rt.config
        .backups
        .iter()
        .map(|b| {
            let mut sum = crate::store::replica::Backlog::default();
            for db in &mut dbs {
                sum = sum.plus(db.backlog_for(&b.id).ok()?);
            }
            Some((b.id.clone(), sum))
        })
        .collect()
}
