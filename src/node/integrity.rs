//! Scheduled SQLite integrity checks, off the request path: `PRAGMA quick_check` at start and
//! hourly, the full `integrity_check` daily, over node.db and every vault file.
//!
//! The latest verdict feeds the telemetry (`db_integrity`) and the Kuma status; a check that
//! fails raises `edition::alert("db_integrity", …)` once per change from healthy to failing.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::vault::DataDir;

pub const QUICK_EVERY: Duration = Duration::from_secs(3600);
/// Every this many quick checks the full check runs instead (24 × 1 h = daily).
pub const FULL_EVERY_N: u32 = 24;

/// The verdict of the latest check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DbIntegrity {
    /// No check has finished yet.
    Unchecked,
    Ok,
    /// A file failed its check, or could not be checked.
    Failed,
}

impl DbIntegrity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unchecked => "unchecked",
            Self::Ok => "ok",
            Self::Failed => "failed",
        }
    }
}

static LATEST: AtomicU8 = AtomicU8::new(0);

/// The server's latest verdict.
pub fn latest() -> DbIntegrity {
    match LATEST.load(Ordering::Relaxed) {
        1 => DbIntegrity::Ok,
        2 => DbIntegrity::Failed,
        _ => DbIntegrity::Unchecked,
    }
}

fn set_latest(v: DbIntegrity) {
    LATEST.store(
        match v {
            DbIntegrity::Unchecked => 0,
            DbIntegrity::Ok => 1,
            DbIntegrity::Failed => 2,
        },
        Ordering::Relaxed,
    );
}

/// The files a check covers: node.db and every vault file.
pub fn db_files(dir: &DataDir) -> Vec<PathBuf> {
    let mut files = vec![dir.node_db_path()];
    if let Ok(ids) = dir.vault_ids() {
        files.extend(ids.iter().map(|id| dir.vault_path(id)));
    }
    files
}

/// One failed file: which, and what SQLite said (or why it could not check).
#[derive(Debug, Clone)]
pub struct Problem {
    pub path: PathBuf,
    pub detail: String,
}

/// Checks every file; `full` runs `integrity_check`, otherwise `quick_check`.
pub fn check_files(files: &[PathBuf], full: bool) -> Vec<Problem> {
    let mut problems = Vec::new();
    for path in files {
        let result = if full { crate::store::integrity_check(path) } else { crate::store::quick_check(path) };
        match result {
            Ok(s) if s == "ok" => {}
            Ok(s) => problems.push(Problem { path: path.clone(), detail: s.chars().take(300).collect() }),
            Err(e) => problems.push(Problem { path: path.clone(), detail: e.to_string() }),
        }
    }
    problems
}

/// Runs one check now and records its verdict (alerting on a change to failed).
pub fn run_once(dir: &DataDir, full: bool) -> DbIntegrity {
    let problems = check_files(&db_files(dir), full);
    let verdict = if problems.is_empty() { DbIntegrity::Ok } else { DbIntegrity::Failed };
    let before = latest();
    set_latest(verdict);
    let kind = if full { "integrity_check" } else { "quick_check" };
    if let (Some(first), true) = (problems.first(), before != DbIntegrity::Failed) {
        crate::edition::alert(
            "db_integrity",
            "a database file failed its integrity check",
            &[
                ("check", kind.to_owned()),
                ("file", first.path.display().to_string()),
                ("detail", first.detail.clone()),
                ("failed_files", problems.len().to_string()),
            ],
        );
    } else if verdict == DbIntegrity::Ok && before == DbIntegrity::Failed {
        tracing::info!(check = kind, "database integrity check passes again");
    }
    verdict
}

/// Starts the checking thread: a quick check now and hourly, the full check every 24th time.
pub fn spawn(dir: DataDir) -> std::io::Result<()> {
    std::thread::Builder::new().name("db-integrity".into()).spawn(move || {
        let mut n: u32 = 0;
        loop {
            // The first run is a quick one, so the verdict is there within seconds of start.
            let full = n > 0 && n.is_multiple_of(FULL_EVERY_N);
            run_once(&dir, full);
            n = n.wrapping_add(1);
            std::thread::sleep(QUICK_EVERY);
        }
    })?;
    Ok(())
}
