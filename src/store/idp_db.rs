//! Identity-provider provisioning tables of a vault file (commercial SCIM service, issue 16 §4):
//! provisioning tokens, provisioned users (each one an agent row), groups and memberships.
//!
//! Only bookkeeping lives here: nothing in these tables grants anything by itself. What an
//! agent reads is decided by its `agents` row alone, which the provisioning service changes only
//! through `VaultDb::insert_agent`/`update_agent`/`delete_agent` (MACed, audited, change
//! sequence advanced). Must never write an `agents` or `entries` row itself.

use rusqlite::{OptionalExtension, params};

use super::audit_sql::{self, AuditRecord};
use super::vault_db::VaultDb;
use super::{Ctx, StoreError};

/// A provisioning token as listed to the owner (never its hash).
#[derive(Debug, Clone, serde::Serialize)]
pub struct IdpTokenRow {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// A provisioned user: the agent it is, and the SCIM attributes besides the ones with columns.
#[derive(Debug, Clone)]
pub struct IdpUserRow {
    pub agent_id: i64,
    pub user_name: String,
    pub external_id: Option<String>,
    pub active: bool,
    pub attributes: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
}

#[derive(Debug, Clone)]
pub struct IdpGroupRow {
    pub id: i64,
    pub display_name: String,
    pub external_id: Option<String>,
    /// The scope the group stands for; `None`: the name matched no scope the owner made.
    pub scope: Option<String>,
    pub attributes: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
}

/// A member that is a provisioned agent, and whether the owner approved its grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdpMember {
    pub agent_id: i64,
    pub approved_at: Option<i64>,
}

/// A membership waiting for the owner's passkey.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PendingGrant {
    pub group_id: i64,
    pub group: String,
    pub scope: String,
    pub agent_id: i64,
    pub agent: String,
}

const USER_COLS: &str =
    "u.agent_id, u.user_name, u.external_id, u.active, u.attributes, u.created_at, u.updated_at, u.version";
const GROUP_COLS: &str = "id, display_name, external_id, scope, attributes, created_at, updated_at, version";

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<IdpUserRow> {
    Ok(IdpUserRow {
        agent_id: r.get(0)?,
        user_name: r.get(1)?,
        external_id: r.get(2)?,
        active: r.get(3)?,
        attributes: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
        version: r.get(7)?,
    })
}

fn group_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<IdpGroupRow> {
    Ok(IdpGroupRow {
        id: r.get(0)?,
        display_name: r.get(1)?,
        external_id: r.get(2)?,
        scope: r.get(3)?,
        attributes: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
        version: r.get(7)?,
    })
}

/// What a list query matches on (exact, as SCIM's `eq`; `user_name` case-insensitively).
#[derive(Debug, Clone, Default)]
pub struct IdpFilter {
    pub id: Option<i64>,
    pub name: Option<String>,
    pub external_id: Option<String>,
}

impl VaultDb {
    pub fn idp_token_insert(
        &mut self,
        hash: &str,
        name: &str,
        now: i64,
        audit: &AuditRecord,
    ) -> Result<i64, StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        tx.execute(
            "INSERT INTO idp_tokens (token_hash, name, created_at) VALUES (?1, ?2, ?3)",
            params![hash, name, now],
        )
        .ctx(&path)?;
        let id = tx.last_insert_rowid();
        audit_sql::insert(&tx, &path, &AuditRecord { detail: format!("provisioning token {id}"), ..audit.clone() })?;
        tx.commit().ctx(&path)?;
        Ok(id)
    }

    /// Revokes a token; `NotFound` if there is no such unrevoked token.
    pub fn idp_token_revoke(&mut self, id: i64, now: i64, audit: &AuditRecord) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let n = tx
            .execute("UPDATE idp_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", params![id, now])
            .ctx(&path)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        audit_sql::insert(&tx, &path, &AuditRecord { detail: format!("provisioning token {id}"), ..audit.clone() })?;
        tx.commit().ctx(&path)
    }

    pub fn idp_tokens(&self) -> Result<Vec<IdpTokenRow>, StoreError> {
        let mut st =
            self.conn.prepare("SELECT id, name, created_at, revoked_at FROM idp_tokens ORDER BY id").ctx(&self.path)?;
        let rows = st
            .query_map([], |r| {
                Ok(IdpTokenRow { id: r.get(0)?, name: r.get(1)?, created_at: r.get(2)?, revoked_at: r.get(3)? })
            })
            .ctx(&self.path)?;
        rows.collect::<Result<_, _>>().ctx(&self.path)
    }

    /// The id of the unrevoked token with this hash.
    pub fn idp_token_valid(&self, hash: &str) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_row("SELECT id FROM idp_tokens WHERE token_hash = ?1 AND revoked_at IS NULL", [hash], |r| r.get(0))
            .optional()
            .ctx(&self.path)
    }

    /// Whether another provisioned user (not `except`) has this user name (case-insensitively).
    pub fn idp_user_name_taken(&self, user_name: &str, except: Option<i64>) -> Result<bool, StoreError> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM idp_users u JOIN agents a ON a.id = u.agent_id
                 WHERE u.user_name = ?1 COLLATE NOCASE AND u.agent_id IS NOT ?2",
                params![user_name, except],
                |r| r.get(0),
            )
            .ctx(&self.path)?;
        Ok(n > 0)
    }

    /// Records the provisioning data of an agent just inserted (same transaction as the agent).
    pub fn idp_user_upsert(&mut self, row: &IdpUserRow) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        tx.execute(
            "INSERT INTO idp_users (agent_id, user_name, external_id, active, attributes, created_at, updated_at, version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (agent_id) DO UPDATE SET user_name = ?2, external_id = ?3, active = ?4, attributes = ?5,
                 updated_at = ?7, version = version + 1",
            params![
                row.agent_id,
                row.user_name,
                row.external_id,
                row.active,
                row.attributes,
                row.created_at,
                row.updated_at,
                row.version
            ],
        )
        .ctx(&path)?;
        tx.commit().ctx(&path)
    }

    /// A provisioned user whose agent still exists.
    pub fn idp_user(&self, agent_id: i64) -> Result<Option<IdpUserRow>, StoreError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {USER_COLS} FROM idp_users u JOIN agents a ON a.id = u.agent_id WHERE u.agent_id = ?1"
                ),
                [agent_id],
                user_row,
            )
            .optional()
            .ctx(&self.path)
    }

    /// One page of provisioned users (by agent id) matching `filter`, and how many match in all.
    pub fn idp_users(&self, filter: &IdpFilter, offset: i64, limit: i64) -> Result<(i64, Vec<IdpUserRow>), StoreError> {
        let cond = "(?1 IS NULL OR u.agent_id = ?1) AND (?2 IS NULL OR u.user_name = ?2 COLLATE NOCASE)
                    AND (?3 IS NULL OR u.external_id = ?3)";
        let args = params![filter.id, filter.name, filter.external_id];
        let total: i64 = self
            .conn
            .query_row(
                &format!("SELECT count(*) FROM idp_users u JOIN agents a ON a.id = u.agent_id WHERE {cond}"),
                args,
                |r| r.get(0),
            )
            .ctx(&self.path)?;
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {USER_COLS} FROM idp_users u JOIN agents a ON a.id = u.agent_id WHERE {cond}
                 ORDER BY u.agent_id LIMIT ?4 OFFSET ?5"
            ))
            .ctx(&self.path)?;
        let rows = st
            .query_map(params![filter.id, filter.name, filter.external_id, limit, offset], user_row)
            .ctx(&self.path)?;
        Ok((total, rows.collect::<Result<_, _>>().ctx(&self.path)?))
    }

    /// Forgets a user's provisioning data and memberships (its agent is revoked separately).
    pub fn idp_user_forget(&mut self, agent_id: i64) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        tx.execute("DELETE FROM idp_users WHERE agent_id = ?1", [agent_id]).ctx(&path)?;
        tx.execute("DELETE FROM idp_group_members WHERE agent_id = ?1", [agent_id]).ctx(&path)?;
        tx.commit().ctx(&path)
    }

    pub fn idp_group_upsert(&mut self, row: &IdpGroupRow, audit: &AuditRecord) -> Result<i64, StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let id = if row.id == 0 {
            tx.execute(
                "INSERT INTO idp_groups (display_name, external_id, scope, attributes, created_at, updated_at, version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1)",
                params![row.display_name, row.external_id, row.scope, row.attributes, row.created_at, row.updated_at],
            )
            .ctx(&path)?;
            tx.last_insert_rowid()
        } else {
            tx.execute(
                "UPDATE idp_groups SET display_name = ?2, external_id = ?3, scope = ?4, attributes = ?5, updated_at = ?6,
                 version = version + 1 WHERE id = ?1",
                params![row.id, row.display_name, row.external_id, row.scope, row.attributes, row.updated_at],
            )
            .ctx(&path)?;
            row.id
        };
        audit_sql::insert(&tx, &path, &AuditRecord { detail: format!("group {id}"), ..audit.clone() })?;
        tx.commit().ctx(&path)?;
        Ok(id)
    }

    pub fn idp_group(&self, id: i64) -> Result<Option<IdpGroupRow>, StoreError> {
        self.conn
            .query_row(&format!("SELECT {GROUP_COLS} FROM idp_groups WHERE id = ?1"), [id], group_row)
            .optional()
            .ctx(&self.path)
    }

    pub fn idp_groups(
        &self,
        filter: &IdpFilter,
        offset: i64,
        limit: i64,
    ) -> Result<(i64, Vec<IdpGroupRow>), StoreError> {
        let cond = "(?1 IS NULL OR id = ?1) AND (?2 IS NULL OR display_name = ?2) AND (?3 IS NULL OR external_id = ?3)";
        let total: i64 = self
            .conn
            .query_row(
                &format!("SELECT count(*) FROM idp_groups WHERE {cond}"),
                params![filter.id, filter.name, filter.external_id],
                |r| r.get(0),
            )
            .ctx(&self.path)?;
        let mut st = self
            .conn
            .prepare(&format!("SELECT {GROUP_COLS} FROM idp_groups WHERE {cond} ORDER BY id LIMIT ?4 OFFSET ?5"))
            .ctx(&self.path)?;
        let rows = st
            .query_map(params![filter.id, filter.name, filter.external_id, limit, offset], group_row)
            .ctx(&self.path)?;
        Ok((total, rows.collect::<Result<_, _>>().ctx(&self.path)?))
    }

    pub fn idp_group_delete(&mut self, id: i64, audit: &AuditRecord) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let n = tx.execute("DELETE FROM idp_groups WHERE id = ?1", [id]).ctx(&path)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        tx.execute("DELETE FROM idp_group_members WHERE group_id = ?1", [id]).ctx(&path)?;
        audit_sql::insert(&tx, &path, &AuditRecord { detail: format!("group {id}"), ..audit.clone() })?;
        tx.commit().ctx(&path)
    }

    /// The members of a group that are provisioned agents.
    pub fn idp_members(&self, group_id: i64) -> Result<Vec<IdpMember>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT agent_id, approved_at FROM idp_group_members WHERE group_id = ?1 ORDER BY agent_id")
            .ctx(&self.path)?;
        let rows = st
            .query_map([group_id], |r| Ok(IdpMember { agent_id: r.get(0)?, approved_at: r.get(1)? }))
            .ctx(&self.path)?;
        rows.collect::<Result<_, _>>().ctx(&self.path)
    }

    /// Adds a membership as pending (an existing one keeps its approval).
    pub fn idp_member_add(&mut self, group_id: i64, agent_id: i64) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        tx.execute(
            "INSERT OR IGNORE INTO idp_group_members (group_id, agent_id, approved_at) VALUES (?1, ?2, NULL)",
            params![group_id, agent_id],
        )
        .ctx(&path)?;
        tx.commit().ctx(&path)
    }

    pub fn idp_member_remove(&mut self, group_id: i64, agent_id: i64) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        tx.execute("DELETE FROM idp_group_members WHERE group_id = ?1 AND agent_id = ?2", params![group_id, agent_id])
            .ctx(&path)?;
        tx.commit().ctx(&path)
    }

    /// Marks every membership of a group pending again (its scope changed).
    pub fn idp_members_unapprove(&mut self, group_id: i64) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        tx.execute("UPDATE idp_group_members SET approved_at = NULL WHERE group_id = ?1", [group_id]).ctx(&path)?;
        tx.commit().ctx(&path)
    }

    pub fn idp_member_approve(&mut self, group_id: i64, agent_id: i64, now: i64) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let n = tx
            .execute(
                "UPDATE idp_group_members SET approved_at = ?3 WHERE group_id = ?1 AND agent_id = ?2 AND approved_at IS NULL",
                params![group_id, agent_id, now],
            )
            .ctx(&path)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().ctx(&path)
    }

    /// Whether `agent_id` holds `scope` through an approved membership of a group other than `except`.
    pub fn idp_scope_held_elsewhere(&self, agent_id: i64, scope: &str, except: i64) -> Result<bool, StoreError> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM idp_group_members m JOIN idp_groups g ON g.id = m.group_id
                 WHERE m.agent_id = ?1 AND g.scope = ?2 AND m.group_id != ?3 AND m.approved_at IS NOT NULL",
                params![agent_id, scope, except],
                |r| r.get(0),
            )
            .ctx(&self.path)?;
        Ok(n > 0)
    }

    /// Memberships of mapped groups that wait for the owner's approval, agents still existing.
    pub fn idp_pending(&self) -> Result<Vec<PendingGrant>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT g.id, g.display_name, g.scope, a.id, a.name FROM idp_group_members m
                 JOIN idp_groups g ON g.id = m.group_id JOIN agents a ON a.id = m.agent_id
                 WHERE m.approved_at IS NULL AND g.scope IS NOT NULL ORDER BY g.id, a.id",
            )
            .ctx(&self.path)?;
        let rows = st
            .query_map([], |r| {
                Ok(PendingGrant {
                    group_id: r.get(0)?,
                    group: r.get(1)?,
                    scope: r.get(2)?,
                    agent_id: r.get(3)?,
                    agent: r.get(4)?,
                })
            })
            .ctx(&self.path)?;
        rows.collect::<Result<_, _>>().ctx(&self.path)
    }
}
