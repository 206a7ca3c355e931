//! The `audit` table, which node.db and every vault file share in shape.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use super::audit_insert::{Inserts, OnTaken};
use super::{Ctx, StoreError};

/// One audit row as stored. Text columns hold short codes, never secrets or token material.
/// The codes are static when written (no allocation per request) and owned when read back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRecord {
    pub ts: i64,
    pub actor: Cow<'static, str>,
    pub agent_id: Option<i64>,
    pub action: Cow<'static, str>,
    pub entry_id: Option<i64>,
    pub client: String,
    pub outcome: Cow<'static, str>,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    #[serde(flatten)]
    pub record: AuditRecord,
}

/// The id a row written outside the audit spool takes: above every row, and above the ids a
/// running server has reserved for its spool (`meta.audit_reserved_upto`), so the two never meet.
/// A SQL expression (a scalar subquery), for every `INSERT INTO audit` that is not the spool's.
macro_rules! next_free_audit_id {
    () => {
        "(SELECT max(coalesce((SELECT max(id) FROM audit), 0), \
          coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'audit_reserved_upto'), 0)) + 1)"
    };
}

/// Below this id, a file's audit rows are final: no row will ever be written with a lower id.
/// Rows at or above it may still gain neighbours below them (the spool's rows, which a running
/// server assigns ids ahead of moving them into the file), so whoever copies rows out in id
/// order (the audit feed, replication) copies only below it. No server: no bound.
macro_rules! audit_settled_below {
    () => {
        "coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'audit_settled'), 9223372036854775807)"
    };
}

pub(crate) use audit_settled_below;
// Used outside this file only by replication (commercial).
#[cfg_attr(not(feature = "commercial"), allow(unused_imports))]
pub(crate) use next_free_audit_id;

pub(crate) fn insert(conn: &Connection, path: &Path, r: &AuditRecord) -> Result<i64, StoreError> {
    conn.prepare_cached(concat!(
        "INSERT INTO audit (id, ts, actor, agent_id, action, entry_id, client, outcome, detail)
         VALUES (",
        next_free_audit_id!(),
        ", ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
    ))
    .and_then(|mut st| {
        st.execute(params![r.ts, r.actor, r.agent_id, r.action, r.entry_id, r.client, r.outcome, r.detail])
    })
    .ctx(path)?;
    Ok(conn.last_insert_rowid())
}

/// Newest first; `before` pages backwards by id.
/// Deletes rows older than `before_ms` (audit retention); returns how many.
pub(crate) fn prune(conn: &Connection, path: &Path, before_ms: i64) -> Result<usize, StoreError> {
    conn.execute("DELETE FROM audit WHERE ts < ?1", params![before_ms]).ctx(path)
}

/// Which rows a reader asks for (issue 17's audit view); `None` matches every row. Times are
/// the rows' `ts` (unix milliseconds): `since` inclusive, `until` exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub agent: Option<i64>,
    pub entry: Option<i64>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

/// `within`: only rows by one of these agents that name no entry or one of these entries.
pub(crate) fn list(
    conn: &Connection,
    path: &Path,
    before: Option<i64>,
    limit: u32,
    within: Option<(&[i64], &[i64])>,
) -> Result<Vec<AuditRow>, StoreError> {
    list_filtered(conn, path, before, limit, within, &AuditFilter::default())
}

/// [`list`] narrowed by `filter`.
pub(crate) fn list_filtered(
    conn: &Connection,
    path: &Path,
    before: Option<i64>,
    limit: u32,
    within: Option<(&[i64], &[i64])>,
    filter: &AuditFilter,
) -> Result<Vec<AuditRow>, StoreError> {
    let ids = |v: &[i64]| format!("[{}]", v.iter().map(i64::to_string).collect::<Vec<_>>().join(","));
    let (filtered, agents, entries) = match within {
        None => (0, String::from("[]"), String::from("[]")),
        Some((a, e)) => (1, ids(a), ids(e)),
    };
    let mut st = conn
        .prepare_cached(
            "SELECT id, ts, actor, agent_id, action, entry_id, client, outcome, detail FROM audit
             WHERE id < ?1 AND (?3 = 0 OR (agent_id IN (SELECT value FROM json_each(?4))
                                 AND (entry_id IS NULL OR entry_id IN (SELECT value FROM json_each(?5)))))
               AND (?6 IS NULL OR agent_id = ?6) AND (?7 IS NULL OR entry_id = ?7)
               AND (?8 IS NULL OR action = ?8) AND (?9 IS NULL OR outcome = ?9)
               AND (?10 IS NULL OR ts >= ?10) AND (?11 IS NULL OR ts < ?11)
             ORDER BY id DESC LIMIT ?2",
        )
        .ctx(path)?;
    let rows = st
        .query_map(
            params![
                before.unwrap_or(i64::MAX),
                limit,
                filtered,
                agents,
                entries,
                filter.agent,
                filter.entry,
                filter.action,
                filter.outcome,
                filter.since,
                filter.until
            ],
            |r| {
                Ok(AuditRow {
                    id: r.get(0)?,
                    record: AuditRecord {
                        ts: r.get(1)?,
                        actor: Cow::Owned(r.get(2)?),
                        agent_id: r.get(3)?,
                        action: Cow::Owned(r.get(4)?),
                        entry_id: r.get(5)?,
                        client: r.get(6)?,
                        outcome: Cow::Owned(r.get(7)?),
                        detail: r.get(8)?,
                    },
                })
            },
        )
        .ctx(path)?;
    rows.collect::<Result<_, _>>().ctx(path)
}

/// How hard an audit commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditSync {
    /// WAL with `synchronous=NORMAL`: a committed row survives the process dying (even by
    /// SIGKILL); a power cut may lose the last moments of rows. No fsync per batch.
    #[default]
    Normal,
    /// `synchronous=FULL`: a committed row also survives a power cut; one fsync per batch.
    Full,
}

/// How long one wait of [`wait_for_lock`] sleeps.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_micros(200);

/// The audit connection's busy handler: waits for another connection's write lock in short
/// steps, for as long as a busy timeout would ([`super::BUSY_TIMEOUT`]).
///
/// SQLite's own busy timeout sleeps 1, 2, 5, 10, 15, 20, 25… ms between tries, so a lock held
/// for a moment (the checkpointer restarting the WAL) cost every read waiting on its audit row
/// up to ~50 ms; in steps of 200 µs the wait ends about when the lock is released.
fn wait_for_lock(tries: i32) -> bool {
    let limit = super::BUSY_TIMEOUT.as_micros() / LOCK_POLL.as_micros();
    if u128::try_from(tries).unwrap_or(u128::MAX) >= limit {
        return false;
    }
    std::thread::sleep(LOCK_POLL);
    true
}

/// How many ids a spool reserves at a time. Rows written outside the spool meanwhile take ids
/// above the reservation, so this is also the largest jump in ids such a row makes.
pub const RESERVE: i64 = 8192;

/// The ids an audit spool may hand out: `next` up to `upto`, inclusive (`meta.audit_reserved_upto`
/// holds `upto`, so that no one else takes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub next: i64,
    pub upto: i64,
}

/// The highest audit id in the file (0: none).
fn last_id(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    conn.prepare_cached("SELECT coalesce(max(id), 0) FROM audit")
        .and_then(|mut st| st.query_row([], |r| r.get(0)))
        .ctx(path)
}

fn set_meta(conn: &Connection, path: &Path, key: &str, value: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut st| st.execute(params![key, value]))
    .ctx(path)?;
    Ok(())
}

/// A connection used only for appending audit rows in batches (the group-commit writer's).
pub struct AuditStore {
    /// Statements of `conn`: dropped before it (see `Drop`).
    inserts: Inserts,
    conn: Connection,
    path: PathBuf,
    sync: AuditSync,
    /// The `meta.audit_settled` this connection last wrote: a move that would write the same
    /// again, with no rows and no change to the reservation, takes no write lock at all.
    settled_written: Option<i64>,
}

impl Drop for AuditStore {
    /// The prepared statements go before their connection closes, whatever order the fields are
    /// declared in: SQLite refuses to close a connection with statements left (`SQLITE_BUSY`),
    /// and rusqlite would then leak it, file handle and all.
    fn drop(&mut self) {
        self.inserts.clear();
    }
}

impl AuditStore {
    /// Opens an already-migrated node.db or vault file for audit appends.
    pub fn open(path: &Path, sync: AuditSync) -> Result<Self, StoreError> {
        let mut conn = super::open_connection(path)?;
        if sync == AuditSync::Normal {
            conn.pragma_update(None, "synchronous", "NORMAL").ctx(path)?;
        }
        // Checkpoints would otherwise run inside whichever audit commit crosses the threshold,
        // stalling every request waiting on that batch; a [`Checkpointer`] runs them instead.
        conn.pragma_update(None, "wal_autocheckpoint", 0).ctx(path)?;
        conn.busy_handler(Some(wait_for_lock)).ctx(path)?;
        Ok(Self { inserts: Inserts::default(), conn, path: path.to_owned(), sync, settled_written: None })
    }

    /// Appends every record in one transaction; returns their ids in order (consecutive, from
    /// the next free id: see [`next_free_audit_id`]).
    ///
    /// Rows go in through multi-row INSERTs (`audit_insert`), which costs SQLite far less
    /// per row than one statement each.
    pub fn append_batch<'a>(
        &mut self,
        records: impl ExactSizeIterator<Item = &'a AuditRecord>,
    ) -> Result<Vec<i64>, StoreError> {
        let records: Vec<&AuditRecord> = records.collect();
        self.in_transaction(|conn, inserts, path| {
            let first: i64 = conn
                .prepare_cached(concat!("SELECT ", next_free_audit_id!()))
                .and_then(|mut st| st.query_row([], |r| r.get(0)))
                .ctx(path)?;
            let rows: Vec<(i64, &AuditRecord)> = (first..).zip(records.iter().copied()).collect();
            inserts.insert_all(conn, &rows, OnTaken::Fail).ctx(path)?;
            Ok(rows.into_iter().map(|(id, _)| id).collect())
        })
    }

    /// Runs `f` in one transaction; nothing of it stays if it fails.
    fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&Connection, &mut Inserts, &Path) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // BEGIN and COMMIT from the statement cache: `Connection::transaction` parses both anew
        // for every batch, which showed in profiles of a busy server. IMMEDIATE: the write lock
        // is taken (or waited for) first; a transaction that read first (the next free id) and
        // then found another connection had written meanwhile could not write at all.
        self.conn.prepare_cached("BEGIN IMMEDIATE").and_then(|mut st| st.execute([])).ctx(&self.path)?;
        let result = f(&self.conn, &mut self.inserts, &self.path).and_then(|out| {
            self.conn.prepare_cached("COMMIT").and_then(|mut st| st.execute([])).ctx(&self.path)?;
            Ok(out)
        });
        if result.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        result
    }

    /// Like [`append_batch`](Self::append_batch), for a caller that must not block: never waits
    /// for the file's write lock (another connection holding it gives `Ok(None)` and nothing is
    /// written) and never syncs to disk (under [`AuditSync::Full`] it declines at once).
    pub fn try_append_batch<'a>(
        &mut self,
        records: impl ExactSizeIterator<Item = &'a AuditRecord>,
    ) -> Result<Option<Vec<i64>>, StoreError> {
        if self.sync != AuditSync::Normal {
            return Ok(None);
        }
        self.conn.busy_handler(None::<fn(i32) -> bool>).ctx(&self.path)?;
        let result = self.append_batch(records);
        self.conn.busy_handler(Some(wait_for_lock)).ctx(&self.path)?;
        match result {
            Err(StoreError::Sqlite { source, .. })
                if matches!(
                    source.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) =>
            {
                Ok(None)
            }
            other => other.map(Some),
        }
    }

    /// Writes rows found in an audit spool after a restart, with the ids they were given; a row
    /// whose id is already there was moved before the restart and is skipped. Returns how many
    /// were written.
    pub fn replay_spooled(&mut self, rows: &[(i64, AuditRecord)]) -> Result<usize, StoreError> {
        let rows: Vec<(i64, &AuditRecord)> = rows.iter().map(|(id, r)| (*id, r)).collect();
        self.in_transaction(|conn, inserts, path| inserts.insert_all(conn, &rows, OnTaken::Skip).ctx(path))
    }

    /// Reserves ids for a spool that starts now (its rows of an earlier run already replayed):
    /// from just above the last row, [`RESERVE`] of them. Rows below are final.
    pub fn reserve_fresh(&mut self) -> Result<Reservation, StoreError> {
        let reservation = self.in_transaction(|conn, _, path| {
            let max = last_id(conn, path)?;
            let reservation = Reservation { next: max + 1, upto: max + RESERVE };
            set_meta(conn, path, "audit_reserved_upto", reservation.upto)?;
            set_meta(conn, path, "audit_settled", reservation.next)?;
            Ok(reservation)
        })?;
        self.settled_written = Some(reservation.next);
        Ok(reservation)
    }

    /// Moves rows from the spool into the file, with the ids they were given, in one
    /// transaction that also records that every id below `settled_below` is final and keeps the
    /// reservation ahead of the spool: `held` is the spool's reservation when the rows were
    /// taken. A row written meanwhile by someone else (the CLI, a passkey-approved write) took
    /// an id above the reservation; the spool's next ids then jump above that row, so that the
    /// file's order stays the order rows were written in, give or take one move.
    pub fn move_spooled(
        &mut self,
        rows: &[(i64, AuditRecord)],
        settled_below: i64,
        held: Reservation,
    ) -> Result<Reservation, StoreError> {
        let rows: Vec<(i64, &AuditRecord)> = rows.iter().map(|(id, r)| (*id, r)).collect();
        if rows.is_empty() && self.settled_written == Some(settled_below) && held.upto - held.next >= RESERVE / 4 {
            // Nothing to write unless a row outside the spool calls for a jump: a read first.
            let max = last_id(&self.conn, &self.path)?;
            if max <= held.upto {
                return Ok(held);
            }
        }
        let written = self.in_transaction(|conn, inserts, path| {
            inserts.insert_all(conn, &rows, OnTaken::Fail).ctx(path)?;
            let max = last_id(conn, path)?;
            let next = if max > held.upto { max + 1 } else { held.next };
            let reservation = if next != held.next || held.upto - held.next < RESERVE / 4 {
                let r = Reservation { next, upto: next + RESERVE - 1 };
                set_meta(conn, path, "audit_reserved_upto", r.upto)?;
                r
            } else {
                held
            };
            set_meta(conn, path, "audit_settled", settled_below)?;
            Ok(reservation)
        })?;
        self.settled_written = Some(settled_below);
        Ok(written)
    }

    /// Gives back the ids a spool reserved but did not use (a clean stop): rows written after
    /// it follow on from `next`, and every row is final.
    pub fn release(&mut self, next: i64) -> Result<(), StoreError> {
        self.in_transaction(|conn, _, path| {
            let max = last_id(conn, path)?;
            if max < next {
                set_meta(conn, path, "audit_reserved_upto", next - 1)?;
            }
            conn.execute("DELETE FROM meta WHERE key = 'audit_settled'", []).ctx(path)?;
            Ok(())
        })?;
        self.settled_written = None;
        Ok(())
    }

    /// SQLite's `data_version`: changes when another connection commits to the file.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        self.conn.query_row("PRAGMA data_version", [], |r| r.get(0)).ctx(&self.path)
    }

    pub fn get(&self, id: i64) -> Result<Option<AuditRow>, StoreError> {
        Ok(list(&self.conn, &self.path, Some(id + 1), 1, None)?.into_iter().find(|r| r.id == id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> AuditRecord {
        AuditRecord {
            ts: i as i64,
            actor: Cow::Borrowed("agent"),
            agent_id: Some(i as i64),
            action: Cow::Borrowed("entry_read"),
            entry_id: i.is_multiple_of(2).then_some(i as i64),
            client: format!("10.0.0.{}", i % 250),
            outcome: Cow::Borrowed("ok"),
            detail: if i.is_multiple_of(3) { String::new() } else { format!("n={i}") },
        }
    }

    #[test]
    fn batches_of_every_size_get_consecutive_ids_and_exact_rows() {
        let dir = std::env::temp_dir().join(format!("clavitor-au-{}", hex::encode(crate::crypto::random_bytes::<8>())));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.db");
        drop(super::super::vault_db::VaultDb::open(&path).unwrap());
        let mut store = AuditStore::open(&path, AuditSync::Normal).unwrap();
        let mut all = Vec::new();
        let mut n = 0;
        for size in [1, 0, 3, 4, 5, 16, 21, 64, 65, 150, 1024] {
            let batch: Vec<AuditRecord> = (n..n + size).map(record).collect();
            n += size;
            let ids = store.append_batch(batch.iter()).unwrap();
            assert_eq!(ids.len(), size);
            assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
            if let (Some(first), Some(last)) = (ids.first(), all.last().map(|(id, _)| *id)) {
                assert_eq!(*first, last + 1);
            }
            all.extend(ids.into_iter().zip(batch));
        }
        let stored = list(&store.conn, &path, None, 10_000, None).unwrap();
        assert_eq!(stored.len(), all.len());
        for row in stored {
            let (_, want) = all.iter().find(|(id, _)| *id == row.id).unwrap();
            assert_eq!(&row.record, want);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
