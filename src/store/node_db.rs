//! node.db: the registry of vaults this node serves, node settings, node-level audit, the
//! installed license token (verified by the commercial edition, never here) and node
//! management tokens (stored as SHA-256 only), and which vault issued each live setup code
//! (its SHA-256, never the code).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use super::audit_sql::{self, AuditRecord, AuditRow};
use super::migrations::{Schema, migrate};
use super::{Ctx, StoreError};

/// The stored license token and when it was last verified (unix seconds).
#[derive(Debug, Clone)]
pub struct LicenseRow {
    pub token: String,
    pub installed_at: i64,
    pub last_validated_at: i64,
}

/// A node management token as stored (never the token itself).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MgmtTokenRow {
    pub id: i64,
    pub name: String,
    pub scope: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

pub struct NodeDb {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct VaultRegistration {
    pub vault_id: String,
    pub file_name: String,
    pub created_at: i64,
}

impl NodeDb {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = super::open_connection(path)?;
        migrate(&mut conn, path, Schema::Node)?;
        Ok(Self { conn, path: path.to_owned() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn vaults(&self) -> Result<Vec<VaultRegistration>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT vault_id, file_name, created_at FROM vaults WHERE retired_at IS NULL
                 ORDER BY created_at, vault_id",
            )
            .ctx(&self.path)?;
        let rows = st
            .query_map([], |r| {
                Ok(VaultRegistration { vault_id: r.get(0)?, file_name: r.get(1)?, created_at: r.get(2)? })
            })
            .ctx(&self.path)?;
        rows.collect::<Result<_, _>>().ctx(&self.path)
    }

    /// One page of live vaults in (created_at, vault_id) order, after the registration `after`
    /// names (its created_at and id), at most `limit` of them.
    pub fn vaults_page(&self, after: Option<(i64, &str)>, limit: u32) -> Result<Vec<VaultRegistration>, StoreError> {
        let (ts, id) = after.unwrap_or((i64::MIN, ""));
        let mut st = self
            .conn
            .prepare(
                "SELECT vault_id, file_name, created_at FROM vaults
                 WHERE retired_at IS NULL AND (created_at, vault_id) > (?1, ?2)
                 ORDER BY created_at, vault_id LIMIT ?3",
            )
            .ctx(&self.path)?;
        let rows = st
            .query_map(params![ts, id, limit], |r| {
                Ok(VaultRegistration { vault_id: r.get(0)?, file_name: r.get(1)?, created_at: r.get(2)? })
            })
            .ctx(&self.path)?;
        rows.collect::<Result<_, _>>().ctx(&self.path)
    }

    /// Records that `vault_id` issued the setup code with this SHA-256 (replacing the vault's
    /// earlier row: a vault has one live code).
    pub fn index_setup_code(&mut self, code_hash: &str, vault_id: &str) -> Result<(), StoreError> {
        let tx = self.conn.transaction().ctx(&self.path)?;
        tx.execute("DELETE FROM setup_code_index WHERE vault_id = ?1", params![vault_id]).ctx(&self.path)?;
        tx.execute(
            "INSERT OR REPLACE INTO setup_code_index (code_hash, vault_id) VALUES (?1, ?2)",
            params![code_hash, vault_id],
        )
        .ctx(&self.path)?;
        tx.commit().ctx(&self.path)
    }

    /// The vault that issued the setup code with this SHA-256, if the index knows it.
    pub fn setup_code_vault(&self, code_hash: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row("SELECT vault_id FROM setup_code_index WHERE code_hash = ?1", params![code_hash], |r| r.get(0))
            .optional()
            .ctx(&self.path)
    }

    pub fn register_vault(&self, reg: &VaultRegistration) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO vaults (vault_id, file_name, created_at) VALUES (?1, ?2, ?3)",
                params![reg.vault_id, reg.file_name, reg.created_at],
            )
            .ctx(&self.path)?;
        Ok(())
    }

    /// Registers a vault if `check` accepts the number of live vaults, counted in the same
    /// transaction as the insert (two concurrent creates cannot both pass a cap).
    /// The outer error is the store's; the inner one is `check`'s refusal (nothing written).
    pub fn register_vault_checked<E>(
        &mut self,
        reg: &VaultRegistration,
        audit: &AuditRecord,
        check: impl FnOnce(u64) -> Result<(), E>,
    ) -> Result<Result<(), E>, StoreError> {
        // Deferred, not IMMEDIATE: `check` may itself write node.db (a cap refusal's audit row)
        // through another connection while this one holds only a read snapshot. If any write
        // lands between the count and the insert, the insert fails (SQLITE_BUSY_SNAPSHOT) and
        // nothing is registered: the count the decision used is the one the insert commits on.
        let tx = self.conn.transaction().ctx(&self.path)?;
        let live: i64 =
            tx.query_row("SELECT COUNT(*) FROM vaults WHERE retired_at IS NULL", [], |r| r.get(0)).ctx(&self.path)?;
        if let Err(e) = check(live.max(0) as u64) {
            return Ok(Err(e));
        }
        tx.execute(
            "INSERT INTO vaults (vault_id, file_name, created_at) VALUES (?1, ?2, ?3)",
            params![reg.vault_id, reg.file_name, reg.created_at],
        )
        .ctx(&self.path)?;
        audit_sql::insert(&tx, &self.path, audit)?;
        tx.commit().ctx(&self.path)?;
        Ok(Ok(()))
    }

    /// Takes a live vault out of the registry's live set; its file may be removed from
    /// `remove_after` (unix seconds). `NotFound` if no live vault has this id.
    pub fn retire_vault(
        &mut self,
        vault_id: &str,
        now: i64,
        remove_after: i64,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction().ctx(&self.path)?;
        let n = tx
            .execute(
                "UPDATE vaults SET retired_at = ?2, remove_after = ?3 WHERE vault_id = ?1 AND retired_at IS NULL",
                params![vault_id, now, remove_after],
            )
            .ctx(&self.path)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        tx.execute("DELETE FROM setup_code_index WHERE vault_id = ?1", params![vault_id]).ctx(&self.path)?;
        audit_sql::insert(&tx, &self.path, audit)?;
        tx.commit().ctx(&self.path)
    }

    /// Retired vaults whose grace period is over at `now` and that were retired no later than
    /// `retired_before`: (vault id, file name).
    pub fn retired_due(&self, now: i64, retired_before: i64) -> Result<Vec<(String, String)>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT vault_id, file_name FROM vaults
                 WHERE retired_at IS NOT NULL AND remove_after <= ?1 AND retired_at <= ?2",
            )
            .ctx(&self.path)?;
        let rows = st.query_map(params![now, retired_before], |r| Ok((r.get(0)?, r.get(1)?))).ctx(&self.path)?;
        rows.collect::<Result<_, _>>().ctx(&self.path)
    }

    /// Forgets a retired vault whose file is gone (with its audit row).
    pub fn forget_retired_vault(&mut self, vault_id: &str, audit: &AuditRecord) -> Result<(), StoreError> {
        let tx = self.conn.transaction().ctx(&self.path)?;
        tx.execute("DELETE FROM vaults WHERE vault_id = ?1 AND retired_at IS NOT NULL", params![vault_id])
            .ctx(&self.path)?;
        tx.execute("DELETE FROM audit_feed_progress WHERE source = ?1", params![vault_id]).ctx(&self.path)?;
        audit_sql::insert(&tx, &self.path, audit)?;
        tx.commit().ctx(&self.path)
    }

    pub fn append_audit(&self, record: &AuditRecord) -> Result<i64, StoreError> {
        audit_sql::insert(&self.conn, &self.path, record)
    }

    pub fn audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        audit_sql::list(&self.conn, &self.path, before, limit, None)
    }

    pub fn license(&self) -> Result<Option<LicenseRow>, StoreError> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row("SELECT token, installed_at, last_validated_at FROM license WHERE id = 1", [], |r| {
                Ok(LicenseRow { token: r.get(0)?, installed_at: r.get(1)?, last_validated_at: r.get(2)? })
            })
            .optional()
            .ctx(&self.path)
    }

    /// Stores (or replaces) the license together with its audit row.
    pub fn put_license(&mut self, token: &str, now: i64, audit: &AuditRecord) -> Result<(), StoreError> {
        let tx = self.conn.transaction().ctx(&self.path)?;
        tx.execute(
            "INSERT INTO license (id, token, installed_at, last_validated_at) VALUES (1, ?1, ?2, ?2)
             ON CONFLICT(id) DO UPDATE SET token = excluded.token, installed_at = excluded.installed_at,
             last_validated_at = excluded.last_validated_at",
            params![token, now],
        )
        .ctx(&self.path)?;
        audit_sql::insert(&tx, &self.path, audit)?;
        tx.commit().ctx(&self.path)
    }

    pub fn touch_license_validated(&self, now: i64) -> Result<(), StoreError> {
        self.conn.execute("UPDATE license SET last_validated_at = ?1 WHERE id = 1", params![now]).ctx(&self.path)?;
        Ok(())
    }

    pub fn add_mgmt_token(&self, name: &str, scope: &str, token_hash: &str, now: i64) -> Result<i64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO mgmt_tokens (name, scope, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, scope, token_hash, now],
            )
            .ctx(&self.path)?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn mgmt_tokens(&self) -> Result<Vec<MgmtTokenRow>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT id, name, scope, created_at, revoked_at FROM mgmt_tokens ORDER BY id")
            .ctx(&self.path)?;
        let rows = st
            .query_map([], |r| {
                Ok(MgmtTokenRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    scope: r.get(2)?,
                    created_at: r.get(3)?,
                    revoked_at: r.get(4)?,
                })
            })
            .ctx(&self.path)?;
        rows.collect::<Result<_, _>>().ctx(&self.path)
    }

    /// The scope of the unrevoked management token with this hash.
    pub fn mgmt_token_scope(&self, token_hash: &str) -> Result<Option<(i64, String)>, StoreError> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row(
                "SELECT id, scope FROM mgmt_tokens WHERE token_hash = ?1 AND revoked_at IS NULL",
                params![token_hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .ctx(&self.path)
    }

    pub fn revoke_mgmt_token(&self, id: i64, now: i64) -> Result<(), StoreError> {
        let n = self
            .conn
            .execute("UPDATE mgmt_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", params![id, now])
            .ctx(&self.path)?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// Deletes node-level audit rows older than `before_ms`; returns how many.
    /// The node-wide audit feed's copies age out with the rows they copy.
    pub fn prune_audit(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.conn.execute("DELETE FROM audit_feed WHERE ts < ?1", params![before_ms]).ctx(&self.path)?;
        audit_sql::prune(&self.conn, &self.path, before_ms)
    }
}
