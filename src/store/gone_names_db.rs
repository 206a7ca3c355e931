//! What deleted entries and revoked agents were called (issue 17): the audit view names the
//! items its rows are about, also once they are gone. A row is written in the transaction that
//! deletes the item; it grants nothing and is never read on an agent's path.
//!
//! An agent's name is kept as the `agents` table held it (plain text there too). An entry's
//! title was sealed in the entry's data, so it is kept sealed: the caller (`vault::ops`) seals
//! it under the vault's data key before it gets here; this module never sees it in the clear.

use rusqlite::params;

use super::vault_db::VaultDb;
use super::{Ctx, StoreError};

/// What a gone item was called: an agent's name, or an entry's title sealed by `vault::ops`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoneName {
    Agent { id: i64, name: String },
    Entry { id: i64, sealed_title: Vec<u8> },
}

impl VaultDb {
    /// Keeps the names of agents about to be deleted; call in the deleting transaction.
    pub(super) fn remember_gone_agents(
        tx: &rusqlite::Connection,
        path: &std::path::Path,
        ids: &[i64],
        now: i64,
    ) -> Result<(), StoreError> {
        for id in ids {
            tx.execute(
                "INSERT OR REPLACE INTO gone_names (kind, id, name, gone_at)
                 SELECT 'agent', id, CAST(name AS BLOB), ?2 FROM agents WHERE id = ?1",
                params![id, now],
            )
            .ctx(path)?;
        }
        Ok(())
    }

    /// Keeps a deleted entry's sealed title. Call inside the transaction that deletes it
    /// (`VaultDb::in_one_transaction`).
    pub fn remember_gone_entry(&mut self, id: i64, sealed_title: &[u8], now: i64) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        tx.execute(
            "INSERT OR REPLACE INTO gone_names (kind, id, name, gone_at) VALUES ('entry', ?1, ?2, ?3)",
            params![id, sealed_title, now],
        )
        .ctx(&path)?;
        tx.commit().ctx(&path)
    }

    /// Every gone item's name, agents and entries.
    pub fn gone_names(&self) -> Result<Vec<GoneName>, StoreError> {
        let mut st = self.conn.prepare_cached("SELECT kind, id, name FROM gone_names").ctx(&self.path)?;
        let rows = st
            .query_map([], |r| {
                let kind: String = r.get(0)?;
                let id: i64 = r.get(1)?;
                let name: Vec<u8> = r.get(2)?;
                Ok(if kind == "agent" {
                    GoneName::Agent { id, name: String::from_utf8_lossy(&name).into_owned() }
                } else {
                    GoneName::Entry { id, sealed_title: name }
                })
            })
            .ctx(&self.path)?;
        rows.collect::<Result<_, _>>().ctx(&self.path)
    }
}
