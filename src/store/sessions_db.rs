//! Which agents are browser-extension sessions (issue 17 §3): the owner's pages mark them on
//! the agents page. A mark is written in the transaction that creates the session's agent and
//! leaves with the agent (a trigger of its migration). It grants nothing and is never read on
//! an agent's path: what a session can read is its agent row's, like every agent's.

use rusqlite::params;

use super::vault_db::VaultDb;
use super::{Ctx, StoreError};

impl VaultDb {
    /// Marks `agent_id` as an extension session; call inside the transaction that created it.
    pub fn mark_extension_session(&mut self, agent_id: i64, now: i64) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        tx.execute(
            "INSERT OR REPLACE INTO extension_sessions (agent_id, created_at) VALUES (?1, ?2)",
            params![agent_id, now],
        )
        .ctx(&path)?;
        tx.commit().ctx(&path)
    }

    /// The ids of the agents that are extension sessions, ascending.
    pub fn extension_sessions(&self) -> Result<Vec<i64>, StoreError> {
        let mut st =
            self.conn.prepare_cached("SELECT agent_id FROM extension_sessions ORDER BY agent_id").ctx(&self.path)?;
        let rows = st.query_map([], |r| r.get(0)).ctx(&self.path)?;
        rows.collect::<Result<Vec<i64>, _>>().ctx(&self.path)
    }
}
