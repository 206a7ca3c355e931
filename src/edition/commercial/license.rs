//! The node's license at run time: the boot load order, installs and replaces, cap checks, the
//! usage report, revalidation and audit retention pruning (issue 15).
//!
//! Owns the one in-memory [`LicenseSlot`]; the token is persisted in node.db through `store`
//! only after it verified. Never signs, never reads the public key from the DB, and never runs
//! SQLite on a request worker: callers on the request path use `spawn_blocking`, and the daily
//! jobs run on their own thread.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::edition::{CapExceeded, Capped, EditionError};
use crate::license::limits::Source;
use crate::license::state::days_remaining;
use crate::license::{LicenseError, LicenseSlot, Limit, PublicKey, State, validate};
use crate::store::node_db::NodeDb;
use crate::store::vault_db::VaultDb;
use crate::store::{AuditRecord, StoreError};

const DAY_SECS: u64 = 86_400;

/// The commercial edition's flags (global, so `serve` and the local CLI share them).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LicenseArgs {
    /// This node's tenant id; a license is accepted only if its `tenantId` equals it.
    #[arg(long, env = "CLAVITOR_TENANT_ID", global = true)]
    pub tenant_id: Option<String>,
    /// The vendor's Ed25519 public key (PEM) that licenses are verified against; never read from
    /// the database.
    #[arg(long, env = "CLAVITOR_LICENSE_PUBLIC_KEY", global = true)]
    pub license_public_key: Option<PathBuf>,
    /// Keep audit rows this many days (capped by the license's max_audit_retention_days).
    #[arg(long, env = "CLAVITOR_AUDIT_RETENTION_DAYS", global = true)]
    pub audit_retention_days: Option<u64>,
    /// Seconds after start of the first license revalidation (then daily).
    #[arg(long, env = "CLAVITOR_LICENSE_REVALIDATE_AFTER_SECS", default_value_t = 60, global = true)]
    pub license_revalidate_after_secs: u64,
    /// Autoscope's optional model endpoint (issue 16 §5).
    #[command(flatten)]
    pub autoscope: super::autoscope::AutoscopeArgs,
    /// Hosted vaults (issue 16): the retired file's grace period.
    #[command(flatten)]
    pub hosted: super::hosted::HostedArgs,
}

struct Runtime {
    node_db: PathBuf,
    tenant: String,
    key_path: Option<PathBuf>,
    key: Option<PublicKey>,
    slot: LicenseSlot,
    last_validated_at: Option<i64>,
    retention_days: Option<u64>,
    jobs: Option<mpsc::Sender<()>>,
}

fn runtime() -> &'static Mutex<Option<Runtime>> {
    static RT: OnceLock<Mutex<Option<Runtime>>> = OnceLock::new();
    RT.get_or_init(|| Mutex::new(None))
}

fn with_rt<T>(f: impl FnOnce(&mut Runtime) -> T) -> Option<T> {
    let mut guard = runtime().lock().unwrap_or_else(|p| p.into_inner());
    guard.as_mut().map(f)
}

fn now_secs() -> i64 {
    crate::store::now_secs()
}

/// A license audit row in node.db (license events belong to the node, not to one vault).
fn record(action: &'static str, outcome: &'static str, actor: &str, detail: String) -> AuditRecord {
    AuditRecord {
        ts: crate::store::now_ms(),
        actor: actor.to_owned().into(),
        agent_id: None,
        action: action.into(),
        entry_id: None,
        client: String::new(),
        outcome: outcome.into(),
        detail,
    }
}

fn audit(node_db: &Path, rec: &AuditRecord) {
    if let Err(e) = NodeDb::open(node_db).and_then(|db| db.append_audit(rec)) {
        crate::edition::alert(
            "audit_unavailable",
            "a license audit row could not be written",
            &[("error", e.to_string())],
        );
    }
}

fn read_key(path: &Path) -> Result<PublicKey, LicenseError> {
    let pem =
        std::fs::read_to_string(path).map_err(|e| LicenseError::BadPublicKey(format!("{}: {e}", path.display())))?;
    PublicKey::from_pem(&pem)
}

fn check(token: &str, key: Option<&PublicKey>, tenant: &str) -> Result<crate::license::LicenseInfo, LicenseError> {
    let key = key.ok_or(LicenseError::NoPublicKey)?;
    validate(token, key, tenant)
}

fn log_state(slot: &LicenseSlot) {
    let now = now_secs();
    let state = slot.state(now);
    let message = slot.usage_message(now);
    match state {
        State::Absent | State::Active => tracing::info!(state = state.as_str(), "{message}"),
        State::Grace => tracing::warn!(state = state.as_str(), "{message}"),
        State::Expired | State::Invalid => {
            crate::edition::alert("license", &message, &[("state", state.as_str().to_owned())])
        }
    }
}

/// Boot: `CLAVITOR_LICENSE_TOKEN`, then `CLAVITOR_LICENSE_FILE`, then the row in node.db, else
/// ABSENT. A verified env or file token replaces the row; a refused one is never stored.
pub fn open(args: &LicenseArgs, node_db: &Path, serving: bool) -> Result<(), EditionError> {
    let tenant = args.tenant_id.clone().unwrap_or_default();
    let key = match &args.license_public_key {
        Some(path) => Some(read_key(path).map_err(|e| EditionError::Setting(e.to_string()))?),
        None => None,
    };
    let db = NodeDb::open(node_db).map_err(|e| EditionError::Setting(e.to_string()))?;
    let row = db.license().map_err(|e| EditionError::Setting(e.to_string()))?;
    let from_env = std::env::var("CLAVITOR_LICENSE_TOKEN").ok().filter(|t| !t.trim().is_empty());
    let from_file = match std::env::var_os("CLAVITOR_LICENSE_FILE") {
        Some(path) => Some(std::fs::read_to_string(&path).map_err(|e| {
            EditionError::Setting(format!("CLAVITOR_LICENSE_FILE {}: {e}", Path::new(&path).display()))
        })?),
        None => None,
    };
    let mut last_validated_at = row.as_ref().map(|r| r.last_validated_at);
    let slot = match from_env.or(from_file) {
        Some(token) => {
            let token = token.trim().to_owned();
            let result = check(&token, key.as_ref(), &tenant);
            if serving {
                match &result {
                    Ok(info) if row.as_ref().map(|r| r.token.as_str()) != Some(token.as_str()) => {
                        let action = if row.is_some() { "replace_license" } else { "install_license" };
                        let rec = record(action, "ok", "local-operator", info.license_id.to_string());
                        let mut db = db;
                        db.put_license(&token, now_secs(), &rec).map_err(|e| EditionError::Setting(e.to_string()))?;
                        last_validated_at = Some(now_secs());
                    }
                    Ok(_) => {}
                    Err(e) => audit(node_db, &record("reject_license", "failed", "local-operator", e.to_string())),
                }
            }
            LicenseSlot::install(result)
        }
        None => match &row {
            Some(r) => LicenseSlot::install(check(&r.token, key.as_ref(), &tenant)),
            None => LicenseSlot::Absent,
        },
    };
    if serving {
        log_state(&slot);
    }
    let mut guard = runtime().lock().unwrap_or_else(|p| p.into_inner());
    *guard = Some(Runtime {
        node_db: node_db.to_owned(),
        tenant,
        key_path: args.license_public_key.clone(),
        key,
        slot,
        last_validated_at,
        retention_days: args.audit_retention_days,
        jobs: None,
    });
    drop(guard);
    if serving {
        start_jobs(Duration::from_secs(args.license_revalidate_after_secs.min(DAY_SECS)));
    }
    Ok(())
}

/// node.db of the node this process serves (set by [`open`]).
pub fn node_db_path() -> Option<PathBuf> {
    with_rt(|rt| rt.node_db.clone())
}

/// Installs or replaces the license (`POST /api/license`, `clavitor license install`). A
/// refused token is never stored and puts the node in INVALID.
pub fn install(token: &str, actor: &str) -> Result<State, LicenseError> {
    let token = token.trim();
    let prepared = with_rt(|rt| (rt.node_db.clone(), rt.key.clone(), rt.tenant.clone()));
    let Some((node_db, key, tenant)) = prepared else { return Err(LicenseError::NoPublicKey) };
    let result = check(token, key.as_ref(), &tenant);
    match &result {
        Ok(info) => {
            let stored = NodeDb::open(&node_db).and_then(|mut db| {
                let action = if db.license()?.is_some() { "replace_license" } else { "install_license" };
                db.put_license(token, now_secs(), &record(action, "ok", actor, info.license_id.to_string()))
            });
            if let Err(e) = stored {
                tracing::error!(error = %e, "cannot store the license");
                return Err(LicenseError::Json(format!("cannot store the license: {e}")));
            }
        }
        Err(e) => audit(&node_db, &record("reject_license", "failed", actor, e.to_string())),
    }
    let slot = LicenseSlot::install(result.clone());
    log_state(&slot);
    let state = slot.state(now_secs());
    with_rt(|rt| {
        rt.slot = slot;
        if result.is_ok() {
            rt.last_validated_at = Some(now_secs());
        }
        if let Some(jobs) = &rt.jobs {
            // Retention follows the new caps at once.
            let _ = jobs.send(());
        }
    });
    result.map(|_| state)
}

fn limit_of(what: Capped) -> Limit {
    match what {
        Capped::Vaults => Limit::MaxVaults,
        Capped::AgentsPerVault => Limit::MaxAgentsPerVault,
        Capped::PasskeysPerVault => Limit::MaxPasskeysPerVault,
        Capped::EntriesPerVault => Limit::MaxEntriesPerVault,
    }
}

/// `assert_within_cap(limit, current, delta)`: one check for every create path. A refusal's
/// `cap_exceeded` row names who asked (`requested_by`), as the reference's payload does.
pub fn assert_within_cap(what: Capped, current: u64, delta: u64, requested_by: &str) -> Result<(), CapExceeded> {
    let limit = limit_of(what);
    let now = now_secs();
    let (slot, node_db) =
        with_rt(|rt| (rt.slot.clone(), Some(rt.node_db.clone()))).unwrap_or((LicenseSlot::Absent, None));
    let (cap, _) = slot.cap(limit, now);
    if current.saturating_add(delta) <= cap {
        return Ok(());
    }
    let state = slot.state(now);
    let message = slot.cap_message(limit, current, cap, now);
    tracing::warn!(limit = limit.key(), current, cap, state = state.as_str(), "license cap reached");
    if let Some(node_db) = node_db {
        let detail =
            format!("{} current={current} cap={cap} state={} requested_by={requested_by}", limit.key(), state.as_str());
        audit(&node_db, &record("cap_exceeded", "failed", "node", detail));
    }
    Err(CapExceeded(Box::new(json!({
        "error": "license cap reached",
        "limit": limit.key(),
        "current": current,
        "cap": cap,
        "state": state.as_str(),
        "message": message,
    }))))
}

/// Current usage per limit: vaults on the node; per-vault limits report the fullest vault.
fn usage(node_db: &Path) -> Result<Vec<(Limit, u64)>, StoreError> {
    let db = NodeDb::open(node_db)?;
    let regs = db.vaults()?;
    let dir = node_db.parent().unwrap_or(Path::new("."));
    let (mut entries, mut agents, mut passkeys) = (0, 0, 0);
    for reg in &regs {
        let path = dir.join("vaults").join(&reg.file_name);
        let (e, a, p) = VaultDb::usage_counts_of(&path)?;
        entries = entries.max(e);
        agents = agents.max(a);
        passkeys = passkeys.max(p);
    }
    Ok(vec![
        (Limit::MaxVaults, regs.len() as u64),
        (Limit::MaxAgentsPerVault, agents),
        (Limit::MaxPasskeysPerVault, passkeys),
        (Limit::MaxEntriesPerVault, entries),
        (Limit::MaxAuditRetentionDays, effective_retention_days().unwrap_or(0)),
    ])
}

/// The usage report (`GET /api/license/usage`, `clavitor license show`). Blocking (SQLite).
pub fn usage_report() -> Result<Value, StoreError> {
    let Some((slot, node_db, tenant, last)) =
        with_rt(|rt| (rt.slot.clone(), rt.node_db.clone(), rt.tenant.clone(), rt.last_validated_at))
    else {
        return Ok(json!({"state": State::Absent.as_str()}));
    };
    let now = now_secs();
    let info = slot.info();
    let limits: Vec<Value> = usage(&node_db)?
        .into_iter()
        .map(|(l, current)| {
            let (cap, source): (u64, Source) = slot.cap(l, now);
            json!({"key": l.key(), "current": current, "cap": cap, "source": source.as_str()})
        })
        .collect();
    Ok(json!({
        "state": slot.state(now).as_str(),
        "expiresAt": info.map(|i| i.exp),
        "daysRemaining": info.map(|i| days_remaining(i, now)),
        "gracePeriodDays": info.map(|i| i.grace_period_days),
        "tenantId": info.map_or(tenant, |i| i.tenant_id.clone()),
        "label": info.and_then(|i| i.label.clone()),
        "licenseId": info.map(|i| i.license_id.to_string()),
        "lastValidatedAt": last,
        "message": slot.usage_message(now),
        "limits": limits,
    }))
}

/// Telemetry fields: state, days remaining, age of the last successful validation.
pub fn telemetry_fields() -> Vec<(&'static str, Value)> {
    let now = now_secs();
    let (state, days, age) = with_rt(|rt| {
        (
            rt.slot.state(now).as_str(),
            rt.slot.info().map(|i| days_remaining(i, now)),
            rt.last_validated_at.map(|t| (now - t).max(0)),
        )
    })
    .unwrap_or(("ABSENT", None, None));
    vec![
        ("license_state", json!(state)),
        ("license_days_remaining", json!(days)),
        ("license_last_validated_age_s", json!(age)),
    ]
}

/// min(configured, cap): how many days of audit rows to keep.
fn effective_retention_days() -> Option<u64> {
    with_rt(|rt| {
        let (cap, _) = rt.slot.cap(Limit::MaxAuditRetentionDays, now_secs());
        rt.retention_days.map_or(cap, |c| c.min(cap))
    })
}

/// One WARN per limit where existing rows already exceed the cap (they stay and keep working).
fn warn_over_caps() {
    let Some((slot, node_db)) = with_rt(|rt| (rt.slot.clone(), rt.node_db.clone())) else { return };
    match usage(&node_db) {
        Ok(rows) => {
            for (l, current) in rows {
                let (cap, _) = slot.cap(l, now_secs());
                if l != Limit::MaxAuditRetentionDays && current > cap {
                    tracing::warn!(
                        limit = l.key(),
                        current,
                        cap,
                        "usage is above the license cap: existing rows keep working, new creates are refused"
                    );
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count license usage"),
    }
}

/// Deletes audit rows older than the effective retention in node.db and every vault file.
fn prune() {
    let Some(days) = effective_retention_days() else { return };
    let Some(node_db) = with_rt(|rt| rt.node_db.clone()) else { return };
    let before = crate::store::now_ms() - (days as i64) * DAY_SECS as i64 * 1000;
    let result = (|| -> Result<usize, StoreError> {
        let db = NodeDb::open(&node_db)?;
        let mut n = db.prune_audit(before)?;
        let dir = node_db.parent().unwrap_or(Path::new("."));
        for reg in db.vaults()? {
            n += VaultDb::open(&dir.join("vaults").join(&reg.file_name))?.prune_audit(before)?;
        }
        Ok(n)
    })();
    match result {
        Ok(n) => tracing::info!(days, deleted = n, "audit retention applied"),
        Err(e) => {
            tracing::warn!(error = %e, "audit retention pruning failed; retried at the next license change or tomorrow")
        }
    }
}

/// Re-verifies the stored token against the key file as it is now (catching a rotated key).
fn revalidate() {
    let Some((node_db, key_path, tenant)) = with_rt(|rt| (rt.node_db.clone(), rt.key_path.clone(), rt.tenant.clone()))
    else {
        return;
    };
    let row = match NodeDb::open(&node_db).and_then(|db| db.license()) {
        Ok(Some(row)) => row,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the stored license for revalidation");
            return;
        }
    };
    let key = match &key_path {
        Some(p) => read_key(p).map(Some),
        None => Ok(None),
    };
    let result = key.and_then(|k| check(&row.token, k.as_ref(), &tenant));
    match result {
        Ok(info) => {
            let now = now_secs();
            if let Err(e) = NodeDb::open(&node_db).and_then(|db| db.touch_license_validated(now)) {
                tracing::warn!(error = %e, "cannot record the license revalidation");
            }
            with_rt(|rt| {
                rt.last_validated_at = Some(now);
                rt.slot = LicenseSlot::Valid(info);
            });
        }
        Err(e) => {
            audit(&node_db, &record("revalidate_license", "failed", "node", e.to_string()));
            let slot = LicenseSlot::Invalid(e);
            log_state(&slot);
            with_rt(|rt| rt.slot = slot);
            prune();
        }
    }
}

/// When the held license next changes state by the clock alone (ACTIVE -> GRACE -> EXPIRED).
fn next_transition(now: i64) -> Option<i64> {
    with_rt(|rt| {
        let info = rt.slot.info()?;
        let grace_end = info.exp.saturating_add(i64::from(info.grace_period_days) * DAY_SECS as i64);
        [info.exp, grace_end].into_iter().find(|t| *t > now)
    })
    .flatten()
}

/// One thread: revalidation `first` after start and daily; retention pruning at start, daily,
/// at once whenever the license changes (a message on the channel), and when the clock moves the
/// license to GRACE or EXPIRED (logged, EXPIRED alerted, retention re-applied for the new caps).
fn start_jobs(first: Duration) {
    let (tx, rx) = mpsc::channel::<()>();
    with_rt(|rt| rt.jobs = Some(tx));
    let spawned = std::thread::Builder::new().name("license-jobs".into()).spawn(move || {
        // Here, not before serving: it reads every vault file's counts, which on a node with
        // thousands of vaults takes seconds.
        warn_over_caps();
        let day = Duration::from_secs(DAY_SECS);
        let mut next_revalidate = Instant::now() + first;
        let mut next_prune = Instant::now();
        let state_now = || with_rt(|rt| rt.slot.state(now_secs()));
        let mut last_state = state_now();
        loop {
            let now = Instant::now();
            let state = state_now();
            if state != last_state {
                if let Some(slot) = with_rt(|rt| rt.slot.clone()) {
                    log_state(&slot);
                }
                last_state = state;
                next_prune = now;
            }
            if now >= next_prune {
                prune();
                next_prune = now + day;
            }
            if now >= next_revalidate {
                revalidate();
                next_revalidate = now + day;
            }
            last_state = state_now().or(last_state);
            let mut wait = next_prune.min(next_revalidate).saturating_duration_since(Instant::now());
            if let Some(t) = next_transition(now_secs()) {
                wait = wait.min(Duration::from_secs((t - now_secs()).max(0) as u64 + 1));
            }
            match rx.recv_timeout(wait) {
                // A license change: `install` logged it; only prune here.
                Ok(()) => {
                    next_prune = Instant::now();
                    last_state = state_now();
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the license jobs thread");
    }
}
