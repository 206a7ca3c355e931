//! The cross-vault audit feed for SIEMs (issue 16 §3, commercial only): `GET /api/mgmt/audit`
//! for node management tokens (scope `audit-feed`), and the `audit-feed` thread that copies
//! every vault's audit rows and node.db's own into node.db's `audit_feed` (`store::feed_db`).
//!
//! Order: each file's rows in id order (its commit order), files interleaved in the order the
//! copier took them; the feed's sequence is that order and never changes. A cursor names a
//! place in it, so a collector that crashes resumes with no event lost or repeated, also
//! across a node restart (the copy and its progress mark are one transaction). The server's
//! own commits wake the copier at once (`mark`); rows other processes write (the local CLI)
//! are found by a full pass every [`FULL_PASS`].
//!
//! An event carries time, actor, action, outcome, vault, entry id, client address and POP.
//! Never a title, URL, value, token, or the row's `detail` (which may name a host or path); and
//! a feed token reads nothing else.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::license_api::mgmt_caller;
use crate::api::{ApiError, AppState};
use crate::store::StoreError;
use crate::store::feed_db::{FeedRow, read_vault_rows};
use crate::store::node_db::NodeDb;

/// Rows copied from one source per transaction.
const COPY_BATCH: u32 = 1000;
/// How often every registered file is looked at, for rows written by other processes.
const FULL_PASS: Duration = Duration::from_secs(60);
/// Longest long-poll.
const MAX_WAIT_SECS: u64 = 30;
const MAX_LIMIT: u32 = 1000;
const DEFAULT_LIMIT: u32 = 100;
/// The header carrying the cursor to resume from after this answer.
pub const CURSOR_HEADER: &str = "clavitor-cursor";

struct Pending {
    files: Mutex<HashSet<PathBuf>>,
    wake: Condvar,
}

fn pending() -> &'static Pending {
    static P: OnceLock<Pending> = OnceLock::new();
    P.get_or_init(|| Pending { files: Mutex::new(HashSet::new()), wake: Condvar::new() })
}

static RUNNING: OnceLock<PathBuf> = OnceLock::new();

/// The highest feed sequence copied so far; long-polls wait on it.
fn latest() -> &'static watch::Sender<i64> {
    static L: OnceLock<watch::Sender<i64>> = OnceLock::new();
    L.get_or_init(|| watch::channel(0).0)
}

/// An audit batch of `file` committed (called from the audit writer; never blocks for long).
pub fn mark(file: &Path) {
    if RUNNING.get().is_none() {
        return;
    }
    let p = pending();
    let mut files = p.files.lock().unwrap_or_else(|e| e.into_inner());
    if !files.contains(file) {
        files.insert(file.to_owned());
    }
    drop(files);
    p.wake.notify_one();
}

/// At `serve`: starts the copier thread.
pub fn start(node_db: &Path) -> Result<(), String> {
    if RUNNING.set(node_db.to_owned()).is_err() {
        return Ok(());
    }
    let node_db = node_db.to_owned();
    std::thread::Builder::new()
        .name("audit-feed".into())
        .spawn(move || copier(&node_db))
        .map(drop)
        .map_err(|e| format!("cannot start the audit feed thread: {e}"))
}

fn copier(node_db: &Path) {
    let mut last_full: Option<Instant> = None;
    let mut stamps = Stamps::default();
    let mut failing = false;
    loop {
        let full = last_full.is_none_or(|t| t.elapsed() >= FULL_PASS);
        let files: Vec<PathBuf> = {
            let p = pending();
            let mut files = p.files.lock().unwrap_or_else(|e| e.into_inner());
            if files.is_empty() && !full {
                let wait = FULL_PASS.saturating_sub(last_full.map_or(Duration::ZERO, |t| t.elapsed()));
                files = p.wake.wait_timeout(files, wait).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
            }
            files.drain().collect()
        };
        let result = (|| -> Result<(), StoreError> {
            let mut db = NodeDb::open(node_db)?;
            if full {
                copy_everything(&mut db, node_db, &mut stamps)?;
                last_full = Some(Instant::now());
            } else {
                for file in &files {
                    copy_file(&mut db, node_db, file)?;
                }
            }
            let top = db.feed_page_max_seq()?;
            latest().send_if_modified(|v| {
                let moved = *v != top;
                *v = top;
                moved
            });
            Ok(())
        })();
        match result {
            Ok(()) => failing = false,
            Err(e) => {
                if !failing {
                    crate::edition::alert(
                        "audit_feed_failed",
                        "cannot copy audit rows into the feed",
                        &[("error", e.to_string())],
                    );
                }
                failing = true;
                // Do not spin on a broken file; the files come back at the next full pass.
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Every this many full passes, each file is read whatever its stamp (a write can leave a
/// file's length and, within the file system's clock tick, its mtime as they were).
const UNCONDITIONAL_EVERY: u32 = 10;

/// What a full pass saw of each vault file: (mtime ns, length) of the file and its WAL, taken
/// before the read. A hosted node has thousands of files, nearly all unchanged between passes;
/// opening each one every minute would cost seconds of a core.
#[derive(Default)]
struct Stamps {
    seen: std::collections::HashMap<PathBuf, [(i128, u64); 2]>,
    passes: u32,
}

fn stamp(path: &Path) -> [(i128, u64); 2] {
    let of = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| {
                let t = m.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
                Some((t.as_nanos() as i128, m.len()))
            })
            .unwrap_or((0, 0))
    };
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    [of(path), of(Path::new(&wal))]
}

fn copy_everything(db: &mut NodeDb, node_db: &Path, stamps: &mut Stamps) -> Result<(), StoreError> {
    while db.feed_copy_node_rows(COPY_BATCH)? == COPY_BATCH as usize {}
    let dir = node_db.parent().unwrap_or(Path::new("."));
    let every = stamps.passes.is_multiple_of(UNCONDITIONAL_EVERY);
    stamps.passes = stamps.passes.wrapping_add(1);
    let mut seen = std::collections::HashMap::new();
    for reg in db.vaults()? {
        let path = dir.join("vaults").join(&reg.file_name);
        if !path.exists() {
            continue;
        }
        let now = stamp(&path);
        if every || stamps.seen.get(&path) != Some(&now) {
            copy_vault_now(db, &reg.vault_id, &path)?;
        }
        seen.insert(path, now);
    }
    stamps.seen = seen;
    Ok(())
}

fn copy_file(db: &mut NodeDb, node_db: &Path, file: &Path) -> Result<(), StoreError> {
    if file == node_db {
        while db.feed_copy_node_rows(COPY_BATCH)? == COPY_BATCH as usize {}
        return Ok(());
    }
    let Some(id) = file.file_stem().and_then(|s| s.to_str()) else { return Ok(()) };
    // Only files that still exist: opening a missing one would create it.
    if crate::vault::VaultId::parse(id).is_ok() && file.exists() {
        copy_vault_now(db, id, file)?;
    }
    Ok(())
}

/// Copies whatever the vault file holds beyond its mark. Also used before a retired vault's
/// file is removed, so its last rows are in the feed first.
pub fn copy_vault_now(db: &mut NodeDb, vault_id: &str, path: &Path) -> Result<usize, StoreError> {
    let mut n = 0;
    loop {
        let upto = db.feed_progress(vault_id)?;
        let rows = read_vault_rows(path, upto, COPY_BATCH)?;
        if rows.is_empty() {
            return Ok(n);
        }
        db.feed_append(vault_id, upto, &rows)?;
        n += rows.len();
        if rows.len() < COPY_BATCH as usize {
            return Ok(n);
        }
    }
}

fn cursor_of(seq: i64) -> String {
    format!("c1{seq:016x}")
}

fn parse_cursor(c: &str) -> Option<i64> {
    let hex = c.strip_prefix("c1").filter(|h| h.len() == 16)?;
    i64::from_str_radix(hex, 16).ok().filter(|s| *s >= 0)
}

fn pop() -> Option<String> {
    crate::edition::telemetry_settings()
        .and_then(|s| s.pop_region.clone())
        .or_else(|| std::env::var("CLAVITOR_POP_REGION").ok().filter(|p| !p.is_empty()))
}

/// One event, OCSF-style. Built from [`FeedRow`], which holds no detail, title, URL or value.
fn event(r: &FeedRow, pop: &Option<String>) -> Value {
    let src = match r.row.client.parse::<std::net::IpAddr>() {
        Ok(ip) => json!({"ip": ip.to_string()}),
        Err(_) => json!({"name": r.row.client}),
    };
    json!({
        "time": r.row.ts,
        "cursor": cursor_of(r.seq),
        "actor": {"type": r.row.actor, "agent_id": r.row.agent_id},
        "action": r.row.action,
        "outcome": r.row.outcome,
        "vault": r.vault_id,
        "entry_id": r.row.entry_id,
        "src_endpoint": src,
        "pop": pop,
        "metadata": {"product": "clavitor", "version": env!("CARGO_PKG_VERSION"), "audit_id": r.row.id},
    })
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// Where to resume: the `cursor` of the last event processed (or the `Clavitor-Cursor`
    /// header of the last answer). Absent: from the oldest retained event.
    cursor: Option<String>,
    /// Events per answer, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// Seconds to wait for an event when there is none yet (long-poll), 0 to 30 (default 0).
    wait: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/api/mgmt/audit",
    summary = "The node's audit events across all vaults, in commit order, as NDJSON (management token, scope audit-feed)",
    security(("bearer" = [])),
    params(FeedQuery),
    responses(
        (status = 200, description = "one JSON event per line (time, actor, action, outcome, vault, entry_id, src_endpoint, pop, cursor); never a title, URL or value. The Clavitor-Cursor header is where to resume", content_type = "application/x-ndjson", body = String),
        (status = "4XX", description = "error: 400 bad cursor, limit or wait, 401 no valid management token, 403 wrong scope", body = crate::api::openapi::schemas::ErrorBody),
    )
)]
pub async fn feed(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<FeedQuery>,
) -> Result<Response, ApiError> {
    mgmt_caller(&headers, "audit-feed").await?;
    let after = match q.cursor.as_deref() {
        None | Some("") => 0,
        Some(c) => parse_cursor(c).ok_or_else(|| ApiError::BadRequest("cursor is not one this node issued".into()))?,
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::BadRequest(format!("wait must be 0 to {MAX_WAIT_SECS} seconds")));
    }
    let node_db = state.node.data_dir().node_db_path();
    // Subscribed before the first read, so a copy landing between the read and the wait wakes it.
    let mut copied = latest().subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let rows = loop {
        let path = node_db.clone();
        let rows = crate::api::blocking(move || {
            NodeDb::open(&path).and_then(|db| db.feed_page(after, limit)).map_err(|e| {
                tracing::error!(error = %e, "audit feed read failed");
                ApiError::Internal
            })
        })
        .await?;
        if !rows.is_empty() || tokio::time::Instant::now() >= deadline {
            break rows;
        }
        tokio::select! {
            changed = copied.changed() => if changed.is_err() { break rows },
            () = tokio::time::sleep_until(deadline) => {}
            () = crate::edition::shutdown_started() => break rows,
        }
    };
    let pop = pop();
    let mut body = String::with_capacity(rows.len() * 320);
    for r in &rows {
        body.push_str(&event(r, &pop).to_string());
        body.push('\n');
    }
    let next = rows.last().map_or(after, |r| r.seq);
    let mut resp = body.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    if let Ok(v) = HeaderValue::from_str(&cursor_of(next)) {
        resp.headers_mut().insert(CURSOR_HEADER, v);
    }
    Ok(resp)
}
