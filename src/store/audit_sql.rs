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
pub(crate) fn list(
    conn: &Connection,
    path: &Path,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<AuditRow>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT id, ts, actor, agent_id, action, entry_id, client, outcome, detail FROM audit
             WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
        )
        .ctx(path)?;
    let rows = st
        .query_map(params![before.unwrap_or(i64::MAX), limit], |r| {
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
        })
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

/// A connection used only for appending audit rows in batches (the group-commit writer's).
pub struct AuditStore {
    conn: Connection,
    path: PathBuf,
}

impl AuditStore {
    /// Opens an already-migrated node.db or vault file for audit appends.
    pub fn open(path: &Path, sync: AuditSync) -> Result<Self, StoreError> {
        let conn = super::open_connection(path)?;
        if sync == AuditSync::Normal {
            conn.pragma_update(None, "synchronous", "NORMAL").ctx(path)?;
        }
        // Checkpoints would otherwise run inside whichever audit commit crosses the threshold,
        // stalling every request waiting on that batch; a [`Checkpointer`] runs them instead.
        conn.pragma_update(None, "wal_autocheckpoint", 0).ctx(path)?;
        Ok(Self { conn, path: path.to_owned() })
    }

    /// Appends every record in one transaction; returns their ids in order.
    pub fn append_batch<'a>(
        &mut self,
        records: impl ExactSizeIterator<Item = &'a AuditRecord>,
    ) -> Result<Vec<i64>, StoreError> {
        let tx = self.conn.transaction().ctx(&self.path)?;
        let mut ids = Vec::with_capacity(records.len());
        for r in records {
            ids.push(insert(&tx, &self.path, r)?);
        }
        tx.commit().ctx(&self.path)?;
        Ok(ids)
    }

    pub fn get(&self, id: i64) -> Result<Option<AuditRow>, StoreError> {
        Ok(list(&self.conn, &self.path, Some(id + 1), 1)?.into_iter().find(|r| r.id == id))
    }

    pub fn max_id(&self) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_row("SELECT max(id) FROM audit", [], |r| r.get(0))
            .optional()
            .ctx(&self.path)
            .map(Option::flatten)
    }
}
