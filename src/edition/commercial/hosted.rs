//! Hosted vaults (issue 16 §1, commercial only): `POST/GET/DELETE /api/mgmt/vaults` for node
//! management tokens (scope `vaults`), `clavitor vault add|list|rm` locally, and the removal of
//! a retired vault's file once its grace period is over.
//!
//! A management token creates, lists and retires vaults. It never reads a vault's entries,
//! titles, URLs, values or agents, and never changes what any agent can read: nothing here
//! writes an agent, an entry or a passkey. A new vault's only way in is its one-time owner
//! setup link, which enrolls the owner's passkey (`vault::gate`), so only the owner's passkey
//! ever grants access to what the vault will hold.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::license_api::mgmt_caller;
use crate::api::{ApiError, AppState};
use crate::store::node_db::NodeDb;
use crate::store::vault_db::VaultDb;
use crate::store::{AuditRecord, StoreError};
use crate::vault::data_dir::{DataDir, remove_vault_files};
use crate::vault::{VaultError, VaultId};

/// Default grace period of a retired vault's file: 7 days.
const DEFAULT_GRACE_SECS: u64 = 7 * 86_400;
/// How often retired vaults are looked at for removal.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// A retired file is removed no sooner than this after retirement, whatever the grace period:
/// time for the node to close the vault's connections first.
const MIN_RETIRED_SECS: i64 = 5;

/// The hosted-vault flags (global, so `serve` and `clavitor vault rm` share them).
#[derive(Debug, Clone, clap::Args)]
pub struct HostedArgs {
    /// Seconds a retired vault's file is kept before it is removed (default 7 days; at least 5 s
    /// pass in any case).
    #[arg(long, env = "CLAVITOR_VAULT_RETIRE_GRACE_SECS", default_value_t = DEFAULT_GRACE_SECS, global = true)]
    pub vault_retire_grace_secs: u64,
}

impl Default for HostedArgs {
    fn default() -> Self {
        Self { vault_retire_grace_secs: DEFAULT_GRACE_SECS }
    }
}

static GRACE_SECS: OnceLock<u64> = OnceLock::new();
static SWEEP_NOW: OnceLock<mpsc::SyncSender<()>> = OnceLock::new();

fn grace_secs() -> i64 {
    i64::try_from(*GRACE_SECS.get().unwrap_or(&DEFAULT_GRACE_SECS)).unwrap_or(i64::MAX / 2)
}

/// At `serve`: remembers the grace period and starts the thread that removes retired files.
pub fn start(args: &HostedArgs, node_db: &Path) -> Result<(), String> {
    let _ = GRACE_SECS.set(args.vault_retire_grace_secs);
    let (tx, rx) = mpsc::sync_channel::<()>(1);
    if SWEEP_NOW.set(tx).is_err() {
        return Ok(());
    }
    let node_db = node_db.to_owned();
    std::thread::Builder::new()
        .name("vault-retire".into())
        .spawn(move || {
            loop {
                match rx.recv_timeout(SWEEP_INTERVAL) {
                    Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                if let Err(e) = remove_due(&node_db) {
                    tracing::warn!(error = %e, "cannot remove retired vault files; retried shortly");
                }
            }
        })
        .map(drop)
        .map_err(|e| format!("cannot start the vault-retire thread: {e}"))
}

fn node_record(actor: &str, action: &'static str, detail: String) -> AuditRecord {
    AuditRecord {
        ts: crate::store::now_ms(),
        actor: actor.to_owned().into(),
        agent_id: None,
        action: action.into(),
        entry_id: None,
        client: String::new(),
        outcome: "ok".into(),
        detail,
    }
}

/// Removes the files of retired vaults whose grace period is over, after the audit feed took
/// their last rows; then forgets them in the registry.
fn remove_due(node_db: &Path) -> Result<(), StoreError> {
    let now = crate::store::now_secs();
    let mut db = NodeDb::open(node_db)?;
    let dir = node_db.parent().unwrap_or(Path::new("."));
    for (vault_id, file_name) in db.retired_due(now, now - MIN_RETIRED_SECS)? {
        let path = dir.join("vaults").join(&file_name);
        if path.exists() {
            super::audit_feed::copy_vault_now(&mut db, &vault_id, &path)?;
        }
        if !remove_vault_files(&path) {
            tracing::warn!(vault = %vault_id, "cannot remove a retired vault's file; retried shortly");
            continue;
        }
        db.forget_retired_vault(&vault_id, &node_record("node", "vault.remove", format!("vault={vault_id}")))?;
        tracing::info!(vault = %vault_id, "retired vault removed");
    }
    Ok(())
}

/// One vault as listed: never a title, URL, value, agent name or token.
fn describe(dir: &Path, reg: &crate::store::node_db::VaultRegistration) -> Result<Value, StoreError> {
    let path = dir.join("vaults").join(&reg.file_name);
    let (entries, agents, passkeys) = VaultDb::usage_counts_of(&path)?;
    let size: u64 = ["", "-wal"]
        .iter()
        .filter_map(|s| {
            let mut p = path.as_os_str().to_owned();
            p.push(s);
            std::fs::metadata(PathBuf::from(p)).ok().map(|m| m.len())
        })
        .sum();
    Ok(json!({
        "id": reg.vault_id,
        "created_at": reg.created_at,
        "agents": agents,
        "entries": entries,
        "passkeys": passkeys,
        "size_bytes": size,
    }))
}

/// Default and largest page of `GET /api/mgmt/vaults` (each listed vault's file is read for
/// its counts, so a page costs a file open per vault).
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// The opaque cursor after a listed vault: its created time and id, base64url.
fn cursor_after(reg: &crate::store::node_db::VaultRegistration) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}.{}", reg.created_at, reg.vault_id))
}

/// (created_at, vault id) of a cursor this node issued; `None` for anything else.
fn parse_cursor(cursor: &str) -> Option<(i64, String)> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (ts, id) = text.split_once('.')?;
    let id = VaultId::parse(id).ok()?;
    Some((ts.parse().ok()?, id.as_str().to_owned()))
}

/// One page of live vaults after `after`, and the cursor of the next page (`None`: this was
/// the last).
fn list_page(
    node_db: &Path,
    after: Option<&(i64, String)>,
    limit: u32,
) -> Result<(Vec<Value>, Option<String>), StoreError> {
    let db = NodeDb::open(node_db)?;
    let dir = node_db.parent().unwrap_or(Path::new("."));
    let regs = db.vaults_page(after.map(|(ts, id)| (*ts, id.as_str())), limit)?;
    let next = if regs.len() == limit as usize { regs.last().map(cursor_after) } else { None };
    let listed = regs.iter().map(|reg| describe(dir, reg)).collect::<Result<_, _>>()?;
    Ok((listed, next))
}

/// Every live vault, page by page (the local CLI).
fn list_vaults(node_db: &Path) -> Result<Vec<Value>, StoreError> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = list_page(node_db, after.as_ref(), MAX_PAGE)?;
        all.extend(page);
        match next.as_deref().and_then(parse_cursor) {
            Some(c) => after = Some(c),
            None => return Ok(all),
        }
    }
}

/// `GET /api/mgmt/vaults` paging.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Vaults per page: 1 to 1000, default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page (opaque); absent for the first page.
    cursor: Option<String>,
}

/// Retires a live vault: out of the registry's live set now, its file removed after the grace
/// period. Returns `remove_after` (unix seconds).
fn retire(node_db: &Path, id: &VaultId, actor: &str, grace: i64) -> Result<i64, StoreError> {
    let now = crate::store::now_secs();
    let remove_after = now.saturating_add(grace);
    let mut db = NodeDb::open(node_db)?;
    db.retire_vault(
        id.as_str(),
        now,
        remove_after,
        &node_record(actor, "vault.retire", format!("vault={id} remove_after={remove_after}")),
    )?;
    Ok(remove_after)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "hosted vault store error");
    ApiError::Internal
}

fn vault_error(e: VaultError) -> ApiError {
    match e {
        VaultError::Store(StoreError::Sqlite { source, .. })
            if source.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) =>
        {
            ApiError::Conflict("another vault was registered at the same moment; try again".into())
        }
        other => other.into(),
    }
}

#[utoipa::path(
    post,
    path = "/api/mgmt/vaults",
    summary = "Create a hosted vault and return its one-time owner setup link (management token, scope vaults)",
    security(("bearer" = [])),
    responses(
        (status = 201, description = "created: the vault id and its one-time owner setup link", body = Object),
        (status = "4XX", description = "error: 401 no valid management token, 403 wrong scope or license cap max_vaults reached, 409 concurrent create", body = crate::api::openapi::schemas::ErrorBody),
    )
)]
pub async fn create(State(state): State<AppState>, headers: HeaderMap) -> Result<(StatusCode, Json<Value>), ApiError> {
    let token_id = mgmt_caller(&headers, "vaults").await?;
    let node = state.node.clone();
    let (id, code) = crate::api::blocking(move || {
        let dir = node.data_dir().clone();
        let master = dir.load_master_key().map_err(vault_error)?;
        // A registration racing another's is refused by SQLite (see `register_vault_checked`);
        // a few retries make concurrent creates succeed without the caller seeing it.
        let mut tries = 0;
        let made = loop {
            tries += 1;
            match dir.add_vault(&master, &format!("mgmt:{token_id}")).map_err(vault_error) {
                Err(ApiError::Conflict(_)) if tries < 5 => std::thread::sleep(Duration::from_millis(20 * tries)),
                other => break other?,
            }
        };
        node.sync_registry().map_err(vault_error)?;
        Ok::<_, ApiError>(made)
    })
    .await?;
    let minutes = crate::vault::gate::SETUP_CODE_TTL.as_secs() / 60;
    let link = format!("{}/setup#code={}", state.rp.origin().trim_end_matches('/'), code.reveal());
    Ok((StatusCode::CREATED, Json(json!({"id": id.as_str(), "setup_link": link, "setup_link_valid_minutes": minutes}))))
}

#[utoipa::path(
    get,
    path = "/api/mgmt/vaults",
    summary = "List hosted vaults, a page at a time: id, created, counts of agents, entries and passkeys, size (management token, scope vaults)",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "a page of live vaults in creation order (never titles, URLs or values): `vaults`, and `next_cursor` (null on the last page) to pass as `cursor` for the next", body = Object),
        (status = "4XX", description = "error: 400 bad limit or cursor, 401 no valid management token, 403 wrong scope", body = crate::api::openapi::schemas::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    mgmt_caller(&headers, "vaults").await?;
    let Query(q) = query.map_err(|_| ApiError::BadRequest("the query takes limit and cursor".into()))?;
    let limit = match q.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| ApiError::BadRequest(format!("limit must be 1 to {MAX_PAGE}")))?,
    };
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => {
            Some(parse_cursor(c).ok_or_else(|| ApiError::BadRequest("cursor is not one this node issued".into()))?)
        }
    };
    let node_db = state.node.data_dir().node_db_path();
    let (vaults, next) =
        crate::api::blocking(move || list_page(&node_db, after.as_ref(), limit).map_err(internal)).await?;
    Ok(Json(json!({"vaults": vaults, "next_cursor": next})))
}

#[utoipa::path(
    delete,
    path = "/api/mgmt/vaults/{id}",
    summary = "Retire a hosted vault: its tokens stop at once, its file is removed after the grace period (management token, scope vaults)",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "the vault id (32 hex characters)", pattern = "^[0-9a-f]{32}$")),
    responses(
        (status = 200, description = "retired; when the file will be removed", body = Object),
        (status = "4XX", description = "error: 400 malformed id, 401 no valid management token, 403 wrong scope, 404 no live vault with this id", body = crate::api::openapi::schemas::ErrorBody),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let token_id = mgmt_caller(&headers, "vaults").await?;
    let id = VaultId::parse(&id).map_err(|_| ApiError::BadRequest("a vault id is 32 hex characters".into()))?;
    let node = state.node.clone();
    let node_db = node.data_dir().node_db_path();
    let vid = id.clone();
    let remove_after = crate::api::blocking(move || {
        let at = match retire(&node_db, &vid, &format!("mgmt:{token_id}"), grace_secs()) {
            Ok(at) => at,
            Err(StoreError::NotFound) => return Err(ApiError::NotFound),
            Err(e) => return Err(internal(e)),
        };
        node.sync_registry().map_err(vault_error)?;
        Ok(at)
    })
    .await?;
    if let Some(tx) = SWEEP_NOW.get() {
        let _ = tx.try_send(());
    }
    Ok(Json(json!({"id": id.as_str(), "retired": true, "remove_after": remove_after})))
}

/// `clavitor vault …` (commercial): hosted vaults on this node, locally.
#[derive(Debug, clap::Subcommand)]
pub enum VaultCommand {
    /// Create a vault and print its one-time owner setup link (shown once).
    Add {
        #[command(flatten)]
        origin: crate::cli::OriginArg,
    },
    /// List the live vaults: id, created, counts, size (never titles or values).
    List,
    /// Retire a vault: a running server drops it within 10 s; its file is removed after
    /// --vault-retire-grace-secs.
    Rm { id: String },
}

pub fn run_cli(cmd: &VaultCommand, args: &super::license::LicenseArgs, node_db: &Path) -> anyhow::Result<()> {
    let root = node_db.parent().context("the node.db path has no directory")?;
    match cmd {
        VaultCommand::Add { origin } => {
            super::license::open(args, node_db, false)?;
            let dir = DataDir::new(root.to_owned(), global_master_key_file());
            let master = dir.load_master_key()?;
            let (id, code) = dir.add_vault(&master, "local-operator").map_err(|e| match e {
                VaultError::CapExceeded(body) => {
                    anyhow::anyhow!("{}", body["message"].as_str().unwrap_or("cap reached"))
                }
                other => anyhow::Error::new(other),
            })?;
            let minutes = crate::vault::gate::SETUP_CODE_TTL.as_secs() / 60;
            eprintln!("created vault {id}; its owner opens this link within {minutes} minutes (once):");
            println!("{}/setup#code={}", origin.origin.trim_end_matches('/'), code.reveal());
        }
        VaultCommand::List => {
            println!("{}", serde_json::to_string_pretty(&list_vaults(node_db)?)?);
        }
        VaultCommand::Rm { id } => {
            let Ok(id) = VaultId::parse(id) else { bail!("a vault id is 32 hex characters") };
            let grace = i64::try_from(args.hosted.vault_retire_grace_secs).unwrap_or(i64::MAX / 2);
            match retire(node_db, &id, "local-operator", grace) {
                Ok(at) => println!("vault {id} retired; its file is removed after {at} (unix seconds)"),
                Err(StoreError::NotFound) => bail!("no live vault {id}"),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// The master key file as the global flags name it (`--master-key-file`), if they do.
fn global_master_key_file() -> Option<PathBuf> {
    std::env::var_os("CLAVITOR_MASTER_KEY_FILE").map(PathBuf::from)
}
