//! The `audit` table, which node.db and every vault file share in shape.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

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

pub(crate) fn insert(conn: &Connection, path: &Path, r: &AuditRecord) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO audit (ts, actor, agent_id, action, entry_id, client, outcome, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
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

/// Rows per multi-row INSERT, largest first; a batch is split into these so that only this
/// many statements are ever prepared (the statement cache holds them all).
const CHUNKS: [usize; 4] = [64, 16, 4, 1];
const COLUMNS: usize = 8;

fn insert_sql(size: usize) -> &'static str {
    static SQL: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        CHUNKS
            .iter()
            .map(|n| {
                let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; *n].join(", ");
                // OR FAIL, not the default ABORT: an ABORT statement that writes several rows
                // keeps a statement journal so it can undo its own rows alone (a 64 KiB buffer
                // and a copy of every page it touches, per batch). A failed batch is rolled back
                // whole by `append_batch`, so that undo is never needed.
                format!(
                    "INSERT OR FAIL INTO audit (ts, actor, agent_id, action, entry_id, client, outcome, detail) VALUES {rows}"
                )
            })
            .collect()
    });
    SQL.get(size).map_or("", String::as_str)
}

/// Inserts `rows` (exactly `CHUNKS[size]` of them) with one statement; returns the last rowid.
fn insert_rows(conn: &Connection, path: &Path, size: usize, rows: &[&AuditRecord]) -> Result<i64, StoreError> {
    let mut st = conn.prepare_cached(insert_sql(size)).ctx(path)?;
    for (i, r) in rows.iter().enumerate() {
        let at = i * COLUMNS;
        st.raw_bind_parameter(at + 1, r.ts).ctx(path)?;
        st.raw_bind_parameter(at + 2, r.actor.as_ref()).ctx(path)?;
        st.raw_bind_parameter(at + 3, r.agent_id).ctx(path)?;
        st.raw_bind_parameter(at + 4, r.action.as_ref()).ctx(path)?;
        st.raw_bind_parameter(at + 5, r.entry_id).ctx(path)?;
        st.raw_bind_parameter(at + 6, r.client.as_str()).ctx(path)?;
        st.raw_bind_parameter(at + 7, r.outcome.as_ref()).ctx(path)?;
        st.raw_bind_parameter(at + 8, r.detail.as_str()).ctx(path)?;
    }
    st.raw_execute().ctx(path)?;
    Ok(conn.last_insert_rowid())
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

/// A connection used only for appending audit rows in batches (the group-commit writer's).
pub struct AuditStore {
    conn: Connection,
    path: PathBuf,
    sync: AuditSync,
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
        Ok(Self { conn, path: path.to_owned(), sync })
    }

    /// Appends every record in one transaction; returns their ids in order.
    ///
    /// Rows go in through multi-row INSERTs of [`CHUNKS`] sizes, which costs SQLite far less
    /// per row than one statement each; this runs for every read a busy server answers.
    pub fn append_batch<'a>(
        &mut self,
        records: impl ExactSizeIterator<Item = &'a AuditRecord>,
    ) -> Result<Vec<i64>, StoreError> {
        let records: Vec<&AuditRecord> = records.collect();
        // BEGIN and COMMIT from the statement cache: `Connection::transaction` parses both anew
        // for every batch, which showed in profiles of a busy server.
        self.conn.prepare_cached("BEGIN").and_then(|mut st| st.execute([])).ctx(&self.path)?;
        let result = self.insert_all(&records).and_then(|ids| {
            self.conn.prepare_cached("COMMIT").and_then(|mut st| st.execute([])).ctx(&self.path)?;
            Ok(ids)
        });
        if result.is_err() && !self.conn.is_autocommit() {
            // Nothing of a failed batch stays; its callers get the error.
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

    /// The inserts of [`append_batch`](Self::append_batch), inside its transaction.
    fn insert_all(&self, records: &[&AuditRecord]) -> Result<Vec<i64>, StoreError> {
        let tx = &self.conn;
        let mut ids = Vec::with_capacity(records.len());
        let mut rest = records;
        while !rest.is_empty() {
            let size = CHUNKS.iter().position(|c| *c <= rest.len()).unwrap_or(CHUNKS.len() - 1);
            let (chunk, tail) = rest.split_at(CHUNKS[size].min(rest.len()));
            let last = insert_rows(tx, &self.path, size, chunk)?;
            // Rows of one statement get consecutive rowids (max + 1 each: ids are never
            // reused and the table is only appended to). Checked, not assumed, across chunks.
            let first = last - (chunk.len() as i64 - 1);
            if ids.last().is_some_and(|prev| *prev + 1 != first) {
                return Err(StoreError::Conflict("audit ids are not consecutive".into()));
            }
            ids.extend(first..=last);
            rest = tail;
        }
        Ok(ids)
    }

    pub fn get(&self, id: i64) -> Result<Option<AuditRow>, StoreError> {
        Ok(list(&self.conn, &self.path, Some(id + 1), 1, None)?.into_iter().find(|r| r.id == id))
    }

    pub fn max_id(&self) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_row("SELECT max(id) FROM audit", [], |r| r.get(0))
            .optional()
            .ctx(&self.path)
            .map(Option::flatten)
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
