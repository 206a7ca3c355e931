//! node.db: the registry of vaults this node serves, node settings, and node-level audit.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use super::audit_sql::{self, AuditRecord, AuditRow};
use super::migrations::{Schema, migrate};
use super::{Ctx, StoreError};

pub struct NodeDb {
    conn: Connection,
    path: PathBuf,
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
            .prepare("SELECT vault_id, file_name, created_at FROM vaults ORDER BY created_at, vault_id")
            .ctx(&self.path)?;
        let rows = st
            .query_map([], |r| {
                Ok(VaultRegistration { vault_id: r.get(0)?, file_name: r.get(1)?, created_at: r.get(2)? })
            })
            .ctx(&self.path)?;
        rows.collect::<Result<_, _>>().ctx(&self.path)
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

    pub fn append_audit(&self, record: &AuditRecord) -> Result<i64, StoreError> {
        audit_sql::insert(&self.conn, &self.path, record)
    }

    pub fn audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        audit_sql::list(&self.conn, &self.path, before, limit, None)
    }
}
