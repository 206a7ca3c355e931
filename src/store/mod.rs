//! SQLite storage: `node.db` and one file per vault. The only module that contains SQL.
//!
//! Owns connections (pragmas, busy timeout), numbered migrations (`PRAGMA user_version`) and
//! every query. It never decrypts anything and never sees a plaintext secret: entry payloads
//! arrive and leave as sealed bytes. Callers get plain Rust rows back.

mod audit_insert;
pub mod audit_sql;
pub mod feed_db;
pub mod gone_names_db;
#[cfg(feature = "commercial")]
pub mod idp_db;
mod migrations;
pub mod node_db;
// A backup POP's apply of replicated rows (issue 14); commercial builds only.
pub mod proxy_requests_db;
#[cfg(feature = "commercial")]
pub mod replica;
pub mod sessions_db;
pub mod vault_db;
pub mod webauthn_db;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

pub use audit_sql::{AuditRecord, AuditRow, AuditStore, AuditSync, RESERVE, Reservation};
pub use migrations::Schema;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: database error: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error(
        "{path} was written by a newer Clavitor (schema {found}, this build knows up to {known}); upgrade the binary"
    )]
    TooNew { path: PathBuf, found: i64, known: i64 },
    #[error("{path} is not a {expected} file (it holds a {found})")]
    WrongKind { path: PathBuf, expected: &'static str, found: String },
    #[error("{0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
}

/// Attaches the file path to a SQLite error, so a message always says which file failed.
pub(crate) trait Ctx<T> {
    fn ctx(self, path: &Path) -> Result<T, StoreError>;
}

impl<T> Ctx<T> for Result<T, rusqlite::Error> {
    fn ctx(self, path: &Path) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sqlite { path: path.to_owned(), source })
    }
}

/// How long a connection waits for another's write lock before giving up.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a connection with the settings every connection must share: WAL, foreign keys,
/// a busy timeout (other processes, e.g. the local operator CLI, write too) and FULL sync so an
/// acknowledged commit survives power loss, not only a crash.
pub(crate) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).ctx(path)?;
    conn.busy_timeout(BUSY_TIMEOUT).ctx(path)?;
    conn.pragma_update(None, "journal_mode", "WAL").ctx(path)?;
    conn.pragma_update(None, "synchronous", "FULL").ctx(path)?;
    conn.pragma_update(None, "foreign_keys", "ON").ctx(path)?;
    // 1 MiB of page cache per connection (SQLite's default is 2 MiB): a node keeps several
    // connections open on a 512 MB machine, and the hot data lives in the server's own memory.
    conn.pragma_update(None, "cache_size", -1024).ctx(path)?;
    Ok(conn)
}

/// `PRAGMA data_version`: changes whenever another connection commits to the file.
pub fn data_version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0)).ctx(path)
}

/// `PRAGMA integrity_check`: "ok" or the first problem found.
pub fn integrity_check(path: &Path) -> Result<String, StoreError> {
    check_connection(path)?.query_row("PRAGMA integrity_check", [], |r| r.get(0)).ctx(path)
}

/// The token hashes of a vault file that could not be opened for serving, read without
/// migrating or writing anything: the server answers those tokens 503 rather than 401.
pub fn salvage_token_hashes(path: &Path) -> Result<Vec<String>, StoreError> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ctx(path)?;
    let mut st = conn.prepare("SELECT token_hash FROM agents").ctx(path)?;
    let rows = st.query_map([], |r| r.get::<_, String>(0)).ctx(path)?;
    rows.collect::<Result<Vec<_>, _>>().ctx(path)
}

/// What a node needs of a vault file it does not open at start (hosted vaults, issue 16): its
/// agents' token hashes and its change sequence, read in one read-only connection that is
/// closed again, without migrating, unwrapping a key or checking a MAC. The hashes only say
/// which vault to open for a token: the open re-reads and checks the agents before any request
/// is admitted.
pub fn scan_vault_file(path: &Path) -> Result<(Vec<String>, i64), StoreError> {
    // A file at rest (no WAL with content: its last connection checkpointed it) is read as
    // immutable: no lock, no `-wal`/`-shm` created and removed again, which for thousands of
    // files at start is most of the cost. If that read fails (a writer raced it), the file is
    // read the ordinary way.
    if let Some(uri) = immutable_uri(path)
        && let Ok(found) = scan_with(path, &uri, rusqlite::OpenFlags::SQLITE_OPEN_URI)
    {
        return Ok(found);
    }
    scan_with(path, &path.to_string_lossy(), rusqlite::OpenFlags::empty())
}

/// `file:PATH?immutable=1` for a file whose WAL is absent or empty and whose path needs no
/// escaping in a URI.
fn immutable_uri(path: &Path) -> Option<String> {
    let text = path.to_str()?;
    if !text.starts_with('/') || text.contains(['?', '#', '%']) {
        return None;
    }
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    match std::fs::metadata(PathBuf::from(wal)) {
        Ok(m) if m.len() > 0 => None,
        _ => Some(format!("file:{text}?immutable=1")),
    }
}

fn scan_with(path: &Path, name: &str, flags: rusqlite::OpenFlags) -> Result<(Vec<String>, i64), StoreError> {
    let conn = rusqlite::Connection::open_with_flags(
        name,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX | flags,
    )
    .ctx(path)?;
    conn.busy_timeout(Duration::from_secs(10)).ctx(path)?;
    // A small page cache: a few pages are read, once, for each of possibly thousands of files.
    conn.pragma_update(None, "cache_size", -64).ctx(path)?;
    let tx = conn.unchecked_transaction().ctx(path)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).ctx(path)?;
    let known = Schema::Vault.known();
    if version > known {
        return Err(StoreError::TooNew { path: path.to_owned(), found: version, known });
    }
    let seq: Option<String> = {
        use rusqlite::OptionalExtension;
        tx.query_row("SELECT value FROM meta WHERE key = 'change_seq'", [], |r| r.get(0)).optional().ctx(path)?
    };
    let mut st = tx.prepare("SELECT token_hash FROM agents").ctx(path)?;
    let hashes = st.query_map([], |r| r.get::<_, String>(0)).ctx(path)?.collect::<Result<Vec<_>, _>>().ctx(path)?;
    Ok((hashes, seq.and_then(|s| s.parse().ok()).unwrap_or(0)))
}

/// A vault file's change sequence, read without keeping a connection (a closed vault's check).
pub fn read_change_seq(path: &Path) -> Result<i64, StoreError> {
    let conn = open_connection(path)?;
    let v: String = conn.query_row("SELECT value FROM meta WHERE key = 'change_seq'", [], |r| r.get(0)).ctx(path)?;
    Ok(v.parse().unwrap_or(0))
}

/// `PRAGMA quick_check`: the cheaper check (no index cross-checks), "ok" or the first problem.
pub fn quick_check(path: &Path) -> Result<String, StoreError> {
    check_connection(path)?.query_row("PRAGMA quick_check", [], |r| r.get(0)).ctx(path)
}

/// A read-only connection for a whole-file check. A small page cache: the check reads every
/// page once, and a serving node's scheduled checks should not grow its memory.
fn check_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ctx(path)?;
    conn.busy_timeout(Duration::from_secs(10)).ctx(path)?;
    conn.pragma_update(None, "cache_size", -256).ctx(path)?;
    Ok(conn)
}

/// A cheap read of the schema: the node's self-check that a file answers at all.
pub fn ping(path: &Path) -> Result<(), StoreError> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ctx(path)?;
    conn.busy_timeout(Duration::from_secs(2)).ctx(path)?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)).ctx(path)?;
    Ok(())
}

/// Runs passive WAL checkpoints off the request path, for files whose audit connection leaves
/// them to it. Passive checkpoints never block readers or writers.
///
/// node.db keeps a connection here. A vault file gets one only for the moment of a checkpoint,
/// and only when its WAL changed since the last: a hosted node has hundreds of vaults open,
/// and a connection held for each would cost its memory and file handles for nothing while
/// the vault is idle.
pub struct Checkpointer {
    files: Vec<(PathBuf, Connection)>,
    /// WAL frames past which a checkpoint also restarts the log (see [`checkpoint`]).
    restart_frames: i64,
    /// Vault files followed, with their WAL's (mtime ns, length) at the last checkpoint.
    transient: std::collections::HashMap<PathBuf, Option<(i128, u64)>>,
}

/// A WAL holding this many frames (64 MiB of 4 KiB pages) is restarted by the checkpointer.
const WAL_RESTART_FRAMES: i64 = 16 * 1024;
/// How long a restarting checkpoint may hold off writers while it waits for readers.
const WAL_RESTART_WAIT: Duration = Duration::from_millis(50);

/// A passive checkpoint, which never blocks anyone. Under a steady stream of commits a passive
/// checkpoint never finds the log fully copied with no reader on it, so SQLite never starts the
/// log over and the file grows without bound (199 MB after 20 s of load was measured). Once
/// the log holds `restart_frames` frames, a `RESTART` checkpoint makes the next commit write
/// from the start of the file again, so the file stays at about that size: it holds off new
/// writers for at most `WAL_RESTART_WAIT` while readers finish (if they do not, it gives up and
/// tries again at the next tick), then copies what is left. Not `TRUNCATE`: cutting a 64 MiB
/// file back to nothing held every writer off for 30–50 ms each time, which put the read
/// path's p99.9 at 50 ms (`bench/read.sh`); the log's size, not the file's, is what matters.
fn checkpoint(conn: &Connection, path: &Path, restart_frames: i64) -> Result<(), StoreError> {
    let log: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1)).ctx(path)?;
    if log < restart_frames {
        return Ok(());
    }
    conn.busy_timeout(WAL_RESTART_WAIT).ctx(path)?;
    let restarted = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0)).ctx(path);
    conn.busy_timeout(Duration::from_secs(10)).ctx(path)?;
    if restarted? != 0 {
        tracing::debug!(frames = log, "WAL restart put off: readers or a writer were busy");
    }
    Ok(())
}

fn wal_stamp(path: &Path) -> Option<(i128, u64)> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let m = std::fs::metadata(PathBuf::from(wal)).ok()?;
    let mtime = m.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos() as i128;
    Some((mtime, m.len()))
}

impl Checkpointer {
    /// Keeps a connection to each of `paths` (node.db).
    pub fn open(paths: &[PathBuf]) -> Result<Self, StoreError> {
        let files = paths.iter().map(|p| Ok((p.clone(), open_connection(p)?))).collect::<Result<_, StoreError>>()?;
        Ok(Self { files, restart_frames: WAL_RESTART_FRAMES, transient: std::collections::HashMap::new() })
    }

    /// The same, restarting a WAL once it holds `frames` frames (tests use a small number).
    pub fn with_restart_frames(mut self, frames: i64) -> Self {
        self.restart_frames = frames;
        self
    }

    /// Follows exactly these vault files (the open ones: vaults come and go on a hosted node).
    pub fn follow(&mut self, paths: &[PathBuf]) -> Result<(), StoreError> {
        let wanted: std::collections::HashSet<&PathBuf> = paths.iter().collect();
        self.transient.retain(|p, _| wanted.contains(p));
        for p in paths {
            self.transient.entry(p.clone()).or_insert(None);
        }
        Ok(())
    }

    pub fn run(&mut self) -> Result<(), StoreError> {
        for (path, conn) in &self.files {
            checkpoint(conn, path, self.restart_frames)?;
        }
        for (path, last) in &mut self.transient {
            let now = wal_stamp(path);
            if now.is_none() || now == *last {
                continue;
            }
            let conn = open_connection(path)?;
            checkpoint(&conn, path, self.restart_frames)?;
            drop(conn);
            // The stamp from before the checkpoint: a write landing during it is checkpointed
            // at the next run.
            *last = now;
        }
        Ok(())
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Unix seconds: the unit of agents' `expires_at`.
pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_len(path: &Path) -> u64 {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::metadata(PathBuf::from(wal)).map(|m| m.len()).unwrap_or(0)
    }

    /// Fills `path`'s WAL with about 300 frames that no automatic checkpoint copies.
    fn fill(path: &Path) -> Connection {
        let conn = open_connection(path).unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute("CREATE TABLE IF NOT EXISTS t (b BLOB)", []).unwrap();
        for _ in 0..300 {
            conn.execute("INSERT INTO t VALUES (zeroblob(4000))", []).unwrap();
        }
        conn
    }

    #[test]
    fn a_long_wal_is_started_over_and_a_short_one_left_to_passive_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.db");
        let _writer = fill(&path);
        let before = wal_len(&path);
        assert!(before > 300 * 4000, "the WAL holds the rows: {before}");
        let mut passive_only = Checkpointer::open(std::slice::from_ref(&path)).unwrap().with_restart_frames(i64::MAX);
        passive_only.run().unwrap();
        assert_eq!(wal_len(&path), before, "a passive checkpoint leaves the file as it is");
        let mut restarting = Checkpointer::open(std::slice::from_ref(&path)).unwrap().with_restart_frames(100);
        restarting.run().unwrap();
        // The next commit writes from the start of the file: the log is short again and the
        // file does not grow.
        _writer.execute("INSERT INTO t VALUES (zeroblob(4000))", []).unwrap();
        let conn = open_connection(&path).unwrap();
        let log: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1)).unwrap();
        assert!(log <= 5, "past the limit the log is started over: {log} frames");
        assert_eq!(wal_len(&path), before, "the file is reused, not grown");
        let rows: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 301, "nothing lost");
    }
}
