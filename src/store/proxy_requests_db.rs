//! A vault file's access requests (issue 18 §5): an agent asks the owner for a rule for a host
//! it may not reach through the proxy. A request grants nothing; the owner grants one by
//! writing an entry with a rule (a passkey-approved write) and dismisses it here.
//!
//! Bounded: an agent holds at most a fixed number of pending requests, a second request for
//! the same host replaces the first one's reason rather than adding a row, and an agent's
//! requests go when the agent is revoked. Every change writes its audit row in its transaction.

use rusqlite::{OptionalExtension, params};

use super::audit_sql::{self, AuditRecord};
use super::vault_db::VaultDb;
use super::{Ctx, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRequestRow {
    pub id: i64,
    pub agent_id: i64,
    pub host: String,
    pub reason: String,
    pub created_at: i64,
}

const COLS: &str = "id, agent_id, host, reason, created_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ProxyRequestRow> {
    Ok(ProxyRequestRow {
        id: r.get(0)?,
        agent_id: r.get(1)?,
        host: r.get(2)?,
        reason: r.get(3)?,
        created_at: r.get(4)?,
    })
}

impl VaultDb {
    /// Stores `agent_id`'s request for `host` (already validated), or, if it has one pending for
    /// that host, updates its reason and time. Refuses a new one past `max_pending` pending
    /// requests of that agent. Returns the row and whether it is new.
    pub fn add_proxy_request(
        &mut self,
        agent_id: i64,
        host: &str,
        reason: &str,
        now_secs: i64,
        max_pending: i64,
        audit: &AuditRecord,
    ) -> Result<(ProxyRequestRow, bool), StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let existing: Option<i64> = tx
            .query_row(
                "SELECT id FROM proxy_requests WHERE agent_id = ?1 AND host = ?2",
                params![agent_id, host],
                |r| r.get(0),
            )
            .optional()
            .ctx(&path)?;
        let (id, new) = match existing {
            Some(id) => {
                tx.execute(
                    "UPDATE proxy_requests SET reason = ?2, created_at = ?3 WHERE id = ?1",
                    params![id, reason, now_secs],
                )
                .ctx(&path)?;
                (id, false)
            }
            None => {
                let pending: i64 = tx
                    .query_row("SELECT count(*) FROM proxy_requests WHERE agent_id = ?1", [agent_id], |r| r.get(0))
                    .ctx(&path)?;
                if pending >= max_pending {
                    return Err(StoreError::Conflict(format!(
                        "this agent already has {pending} pending access requests (at most {max_pending}); wait \
                         for the owner to grant or dismiss them"
                    )));
                }
                tx.execute(
                    "INSERT INTO proxy_requests (agent_id, host, reason, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![agent_id, host, reason, now_secs],
                )
                .ctx(&path)?;
                (tx.last_insert_rowid(), true)
            }
        };
        let detail = format!("request {id} host {host}{}", if new { "" } else { " (updated)" });
        audit_sql::insert(&tx, &path, &AuditRecord { detail, ..audit.clone() })?;
        let stored = tx.query_row(&format!("SELECT {COLS} FROM proxy_requests WHERE id = ?1"), [id], row).ctx(&path)?;
        tx.commit().ctx(&path)?;
        Ok((stored, new))
    }

    /// Every pending request, oldest first.
    pub fn proxy_requests(&self) -> Result<Vec<ProxyRequestRow>, StoreError> {
        let mut st = self.conn.prepare(&format!("SELECT {COLS} FROM proxy_requests ORDER BY id")).ctx(&self.path)?;
        let rows = st.query_map([], row).ctx(&self.path)?;
        rows.collect::<Result<_, _>>().ctx(&self.path)
    }

    pub fn proxy_request(&self, id: i64) -> Result<Option<ProxyRequestRow>, StoreError> {
        self.conn
            .query_row(&format!("SELECT {COLS} FROM proxy_requests WHERE id = ?1"), [id], row)
            .optional()
            .ctx(&self.path)
    }

    /// Removes a pending request (the owner dismissed it or granted it with a rule).
    pub fn delete_proxy_request(&mut self, id: i64, audit: &AuditRecord) -> Result<ProxyRequestRow, StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let gone = tx
            .query_row(&format!("DELETE FROM proxy_requests WHERE id = ?1 RETURNING {COLS}"), [id], row)
            .optional()
            .ctx(&path)?
            .ok_or(StoreError::NotFound)?;
        let detail = format!("request {id} host {} agent {}", gone.host, gone.agent_id);
        audit_sql::insert(&tx, &path, &AuditRecord { detail, ..audit.clone() })?;
        tx.commit().ctx(&path)?;
        Ok(gone)
    }
}
