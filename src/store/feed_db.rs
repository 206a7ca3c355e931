//! The node-wide audit feed's storage (issue 16 §3): node.db's `audit_feed`, a copy of every
//! file's audit rows (each vault's and node.db's own), and reading it back by sequence.
//!
//! A copy and the source's progress mark are one transaction in node.db, so a copier that dies
//! anywhere leaves either both or neither: after a restart it resumes where the mark says, with
//! no row lost or copied twice. Never copies the `detail` column (it may name a host or path),
//! and never reads anything but the audit table of a source.

use super::audit_sql::audit_settled_below;
use std::path::Path;

use rusqlite::{OptionalExtension, params};

use super::node_db::NodeDb;
use super::{Ctx, StoreError};

/// The progress key of node.db's own audit rows.
pub const NODE_SOURCE: &str = "node";

/// An audit row as the feed keeps it (no `detail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRow {
    pub id: i64,
    pub ts: i64,
    pub actor: String,
    pub agent_id: Option<i64>,
    pub action: String,
    pub entry_id: Option<i64>,
    pub client: String,
    pub outcome: String,
}

/// One feed row: where it came from and its place in the node-wide order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRow {
    pub seq: i64,
    /// `None` for node-level rows (failed authentication, license, vault registry).
    pub vault_id: Option<String>,
    pub row: SourceRow,
}

fn source_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<SourceRow> {
    Ok(SourceRow {
        id: r.get(at)?,
        ts: r.get(at + 1)?,
        actor: r.get(at + 2)?,
        agent_id: r.get(at + 3)?,
        action: r.get(at + 4)?,
        entry_id: r.get(at + 5)?,
        client: r.get(at + 6)?,
        outcome: r.get(at + 7)?,
    })
}

const SOURCE_COLUMNS: &str = "id, ts, actor, agent_id, action, entry_id, client, outcome";

/// Audit rows of a vault file with an id above `after`, in id order, up to the rows that are
/// final ([`audit_settled_below`]): no row is ever written below what this has returned.
pub fn read_vault_rows(path: &Path, after: i64, limit: u32) -> Result<Vec<SourceRow>, StoreError> {
    let conn = super::open_connection(path)?;
    let mut st = conn
        .prepare(&format!(
            "SELECT {SOURCE_COLUMNS} FROM audit WHERE id > ?1 AND id < {} ORDER BY id LIMIT ?2",
            audit_settled_below!()
        ))
        .ctx(path)?;
    let rows = st.query_map(params![after, limit], |r| source_row(r, 0)).ctx(path)?;
    rows.collect::<Result<_, _>>().ctx(path)
}

impl NodeDb {
    /// How far `source` has been copied (0: nothing yet).
    pub fn feed_progress(&self, source: &str) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT upto FROM audit_feed_progress WHERE source = ?1", params![source], |r| r.get(0))
            .optional()
            .ctx(&self.path)
            .map(|v| v.unwrap_or(0))
    }

    /// Appends `rows` of a vault (all above `expected_upto`, in id order) and moves its mark,
    /// in one transaction. Refused if the mark moved meanwhile (another copier), so a row is
    /// never copied twice.
    pub fn feed_append(&mut self, vault_id: &str, expected_upto: i64, rows: &[SourceRow]) -> Result<(), StoreError> {
        let Some(last) = rows.last() else { return Ok(()) };
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).ctx(&self.path)?;
        let upto: i64 = tx
            .query_row("SELECT upto FROM audit_feed_progress WHERE source = ?1", params![vault_id], |r| r.get(0))
            .optional()
            .ctx(&self.path)?
            .unwrap_or(0);
        if upto != expected_upto {
            return Err(StoreError::Conflict(format!("audit feed mark of {vault_id} moved")));
        }
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO audit_feed (vault_id, row_id, ts, actor, agent_id, action, entry_id, client, outcome)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .ctx(&self.path)?;
            for r in rows {
                st.execute(params![
                    vault_id, r.id, r.ts, r.actor, r.agent_id, r.action, r.entry_id, r.client, r.outcome
                ])
                .ctx(&self.path)?;
            }
        }
        tx.execute(
            "INSERT INTO audit_feed_progress (source, upto) VALUES (?1, ?2)
             ON CONFLICT(source) DO UPDATE SET upto = excluded.upto",
            params![vault_id, last.id],
        )
        .ctx(&self.path)?;
        tx.commit().ctx(&self.path)
    }

    /// Copies node.db's own audit rows above the node mark (at most `limit`), in one
    /// transaction; returns how many.
    pub fn feed_copy_node_rows(&mut self, limit: u32) -> Result<usize, StoreError> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).ctx(&self.path)?;
        let upto: i64 = tx
            .query_row("SELECT upto FROM audit_feed_progress WHERE source = ?1", params![NODE_SOURCE], |r| r.get(0))
            .optional()
            .ctx(&self.path)?
            .unwrap_or(0);
        let last: Option<i64> = tx
            .query_row(
                concat!(
                    "SELECT max(id) FROM (SELECT id FROM audit WHERE id > ?1 AND id < ",
                    audit_settled_below!(),
                    " ORDER BY id LIMIT ?2)"
                ),
                params![upto, limit],
                |r| r.get(0),
            )
            .ctx(&self.path)?;
        let Some(last) = last else { return Ok(0) };
        let n = tx
            .execute(
                "INSERT INTO audit_feed (vault_id, row_id, ts, actor, agent_id, action, entry_id, client, outcome)
                 SELECT NULL, id, ts, actor, agent_id, action, entry_id, client, outcome FROM audit
                 WHERE id > ?1 AND id <= ?2 ORDER BY id",
                params![upto, last],
            )
            .ctx(&self.path)?;
        tx.execute(
            "INSERT INTO audit_feed_progress (source, upto) VALUES (?1, ?2)
             ON CONFLICT(source) DO UPDATE SET upto = excluded.upto",
            params![NODE_SOURCE, last],
        )
        .ctx(&self.path)?;
        tx.commit().ctx(&self.path)?;
        Ok(n)
    }

    /// The highest sequence in the feed (0: empty).
    pub fn feed_page_max_seq(&self) -> Result<i64, StoreError> {
        self.conn.query_row("SELECT COALESCE(max(seq), 0) FROM audit_feed", [], |r| r.get(0)).ctx(&self.path)
    }

    /// Feed rows after `after_seq`, in sequence order, at most `limit`.
    pub fn feed_page(&self, after_seq: i64, limit: u32) -> Result<Vec<FeedRow>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT seq, vault_id, row_id, ts, actor, agent_id, action, entry_id, client, outcome
                 FROM audit_feed WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .ctx(&self.path)?;
        let rows = st
            .query_map(params![after_seq, limit], |r| {
                Ok(FeedRow { seq: r.get(0)?, vault_id: r.get(1)?, row: source_row(r, 2)? })
            })
            .ctx(&self.path)?;
        rows.collect::<Result<_, _>>().ctx(&self.path)
    }
}
