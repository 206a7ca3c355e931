//! A vault file: entries (sealed), agents, WebAuthn tables, audit, meta.
//!
//! Invariants kept here, inside the transaction that changes the data, so no caller can skip
//! them: every change to `entries` or `agents` advances `meta.change_seq` (readers use it to
//! refresh their caches); an entry change stamps the row with that sequence, marks it dirty for
//! replication and bumps its version; deletes are tombstones; the last admin agent can be
//! neither deleted nor demoted; every change writes its audit row in the same transaction;
//! every agent row and every entry's granting columns (id, uuid, scopes, deleted) carry a MAC
//! under the vault's [`RowKey`], written in the same statement sequence as the change, so only a
//! holder of the master key can make a row that grants. Writing an agent or an entry therefore
//! needs a `VaultDb` given its key ([`VaultDb::set_row_key`]); reads hand the MAC to the caller,
//! which checks it with [`VaultDb::agent_authentic`] / [`VaultDb::entry_authentic`].

use std::ops::Deref;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Savepoint, Transaction, TransactionBehavior, params};

use super::audit_sql::{self, AuditRecord, AuditRow};
use super::migrations::{Schema, migrate};
use super::{Ctx, StoreError};
use crate::crypto::RowKey;

/// Live entries, agents that are not derived tokens, passkeys: what the license caps count.
const USAGE_COUNTS: &str = "SELECT (SELECT COUNT(*) FROM entries WHERE deleted = 0),
        (SELECT COUNT(*) FROM agents WHERE parent_id IS NULL),
        (SELECT COUNT(*) FROM webauthn_credentials)";

pub struct VaultDb {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
    /// True while [`VaultDb::atomically`] holds an open transaction: writes then nest as savepoints.
    outer: bool,
    /// The key and vault id that MAC granting rows; `None` until the vault's key is known.
    rows: Option<RowAuth>,
}

#[derive(Clone)]
pub(super) struct RowAuth {
    key: RowKey,
    vault_id: String,
}

impl RowAuth {
    fn agent_mac(&self, r: &AgentRow) -> Vec<u8> {
        let parts = agent_parts(r);
        self.key.mac("agent", &self.vault_id, &parts.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn agent_ok(&self, r: &AgentRow) -> bool {
        let parts = agent_parts(r);
        self.key.verify(
            "agent",
            &self.vault_id,
            &parts.iter().map(String::as_str).collect::<Vec<_>>(),
            r.mac.as_deref(),
        )
    }

    /// A passkey row: who it belongs to and what it verifies with (the stored passkey and its
    /// counter), so a passkey inserted or moved to another agent in the file approves nothing.
    pub(super) fn credential_mac(&self, id: &str, agent_id: Option<i64>, passkey: &str, sign_count: i64) -> Vec<u8> {
        let agent = agent_id.map(|a| a.to_string()).unwrap_or_default();
        self.key.mac("passkey", &self.vault_id, &[id, &agent, passkey, &sign_count.to_string()])
    }

    /// A setup code row: its hash only. Its expiry and use mark are checked as before; changing
    /// them takes the code itself, which only the operator was shown.
    pub(super) fn setup_code_mac(&self, code_hash: &str) -> Vec<u8> {
        self.key.mac("setup_code", &self.vault_id, &[code_hash])
    }

    pub(super) fn setup_code_ok(&self, code_hash: &str, mac: Option<&[u8]>) -> bool {
        self.key.verify("setup_code", &self.vault_id, &[code_hash], mac)
    }

    fn entry_mac(&self, id: i64, uuid: &str, scopes: &str, deleted: bool) -> Vec<u8> {
        self.key.mac("entry", &self.vault_id, &[&id.to_string(), uuid, scopes, bool_str(deleted)])
    }
}

fn bool_str(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// The columns of an agent that grant something: id, token hash, scopes, all_access, admin;
/// then, each only when it differs from its default, a tagged part for `expires_at`,
/// `parent_id` and `reveal_to_model` (migration 5) and `proxy_only_listed` (migration 6). Every
/// part is length-prefixed, so a row at the defaults encodes exactly as before migration 5 (its
/// MAC stays valid) and any change to one of these columns (un-expiring a token, turning reveal
/// on, lifting the proxy restriction) breaks the MAC.
fn agent_parts(r: &AgentRow) -> Vec<String> {
    let mut parts = vec![
        r.id.to_string(),
        r.token_hash.clone(),
        r.scopes.clone(),
        bool_str(r.all_access).into(),
        bool_str(r.admin).into(),
    ];
    if let Some(t) = r.expires_at {
        parts.push(format!("expires_at:{t}"));
    }
    if let Some(p) = r.parent_id {
        parts.push(format!("parent_id:{p}"));
    }
    if r.reveal_to_model {
        parts.push("reveal_to_model:1".into());
    }
    if r.proxy_only_listed {
        parts.push("proxy_only_listed:1".into());
    }
    parts
}

/// A write in progress: its own IMMEDIATE transaction, or a savepoint inside
/// [`VaultDb::atomically`]. Either way it rolls back on drop unless committed.
pub(super) enum WriteTx<'a> {
    Tx(Transaction<'a>),
    Sp(Savepoint<'a>),
}

impl WriteTx<'_> {
    pub(super) fn commit(self) -> rusqlite::Result<()> {
        match self {
            WriteTx::Tx(t) => t.commit(),
            WriteTx::Sp(s) => s.commit(),
        }
    }
}

impl Deref for WriteTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            WriteTx::Tx(t) => t,
            WriteTx::Sp(s) => s,
        }
    }
}

/// An entry row exactly as stored: metadata in the clear, the payload sealed.
#[derive(Debug, Clone)]
pub struct EntryRow {
    pub id: i64,
    pub uuid: String,
    pub scopes: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
    pub deleted: bool,
    /// The row's MAC (see the module docs); `None` in a row written without the key.
    pub mac: Option<Vec<u8>>,
    pub change_seq: i64,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct AgentRow {
    pub id: i64,
    pub token_hash: String,
    pub name: String,
    pub scopes: String,
    pub all_access: bool,
    pub admin: bool,
    pub created_at: i64,
    /// Unix seconds after which the token no longer authenticates; `None`: never.
    pub expires_at: Option<i64>,
    /// The agent this one's token was derived from (`POST /api/tokens/derive`).
    pub parent_id: Option<i64>,
    /// The owner lets the MCP server hand this agent's L1 values to the model.
    pub reveal_to_model: bool,
    /// The proxy refuses this agent's requests to hosts no rule names (migration 6).
    pub proxy_only_listed: bool,
    /// The row's MAC (see the module docs); `None` in a row written without the key.
    pub mac: Option<Vec<u8>>,
}

/// A new agent row, before its id (and so its own scope) exists.
#[derive(Debug, Clone, Copy)]
pub struct NewAgent<'a> {
    pub name: &'a str,
    pub token_hash: &'a str,
    pub all_access: bool,
    pub admin: bool,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub parent_id: Option<i64>,
    pub reveal_to_model: bool,
    pub proxy_only_listed: bool,
}

/// What an agent update changes; `None` leaves a column as it is.
#[derive(Debug, Default, Clone)]
pub struct AgentChange {
    pub name: Option<String>,
    pub scopes: Option<String>,
    pub all_access: Option<bool>,
    pub admin: Option<bool>,
    pub token_hash: Option<String>,
    pub reveal_to_model: Option<bool>,
    pub proxy_only_listed: Option<bool>,
}

pub(super) const ENTRY_COLS: &str = "id, uuid, scopes, created_at, updated_at, version, deleted, change_seq, data, mac";
pub(super) const AGENT_COLS: &str = "id, token_hash, name, scopes, all_access, admin, created_at, mac, expires_at, parent_id, reveal_to_model, \
     proxy_only_listed";

pub(super) fn entry_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EntryRow> {
    Ok(EntryRow {
        id: r.get(0)?,
        uuid: r.get(1)?,
        scopes: r.get(2)?,
        created_at: r.get(3)?,
        updated_at: r.get(4)?,
        version: r.get(5)?,
        deleted: r.get(6)?,
        change_seq: r.get(7)?,
        data: r.get(8)?,
        mac: r.get(9)?,
    })
}

pub(super) fn agent_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AgentRow> {
    Ok(AgentRow {
        id: r.get(0)?,
        token_hash: r.get(1)?,
        name: r.get(2)?,
        scopes: r.get(3)?,
        all_access: r.get(4)?,
        admin: r.get(5)?,
        created_at: r.get(6)?,
        mac: r.get(7)?,
        expires_at: r.get(8)?,
        parent_id: r.get(9)?,
        reveal_to_model: r.get(10)?,
        proxy_only_listed: r.get(11)?,
    })
}

impl VaultDb {
    /// Opens (creating if needed) and migrates a vault file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = super::open_connection(path)?;
        migrate(&mut conn, path, Schema::Vault)?;
        Ok(Self { conn, path: path.to_owned(), outer: false, rows: None })
    }

    /// Gives this connection the vault's row key: from now on its writes MAC the rows they
    /// change, and [`VaultDb::agent_authentic`] can check them.
    pub fn set_row_key(&mut self, key: RowKey, vault_id: &str) {
        self.rows = Some(RowAuth { key, vault_id: vault_id.to_owned() });
    }

    pub(super) fn row_auth(&self) -> Result<RowAuth, StoreError> {
        self.rows.clone().ok_or_else(|| StoreError::Conflict("vault opened without its key: cannot write rows".into()))
    }

    /// True if the agent row carries a valid MAC (false without a key: nothing is trusted).
    pub fn agent_authentic(&self, row: &AgentRow) -> bool {
        self.rows.as_ref().is_some_and(|a| a.agent_ok(row))
    }

    /// True if the passkey row (owner, stored passkey, counter) carries a valid MAC.
    pub fn credential_authentic(&self, row: &super::webauthn_db::CredentialRow) -> bool {
        self.rows.as_ref().is_some_and(|a| {
            let agent = row.agent_id.map(|a| a.to_string()).unwrap_or_default();
            a.key.verify(
                "passkey",
                &a.vault_id,
                &[&row.id, &agent, &row.passkey, &row.sign_count.to_string()],
                row.mac.as_deref(),
            )
        })
    }

    /// True if the entry's id, uuid, scopes and deleted flag carry a valid MAC.
    pub fn entry_authentic(&self, row: &EntryRow) -> bool {
        self.rows.as_ref().is_some_and(|a| {
            a.key.verify(
                "entry",
                &a.vault_id,
                &[&row.id.to_string(), &row.uuid, &row.scopes, bool_str(row.deleted)],
                row.mac.as_deref(),
            )
        })
    }

    /// The one-time upgrade of a file from before row MACs: MACs every existing agent and entry
    /// and replaces the wrapped data key with `wrapped_key_hex` (the wrap that says "rows are
    /// authenticated", see `vault::data_dir`) in one transaction, so the two never disagree.
    pub fn authenticate_existing_rows(&mut self, wrapped_key_hex: &str) -> Result<(usize, usize), StoreError> {
        let auth = self.row_auth()?;
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let agents: Vec<AgentRow> = {
            let mut st = tx.prepare(&format!("SELECT {AGENT_COLS} FROM agents")).ctx(&path)?;
            let rows = st.query_map([], agent_row).ctx(&path)?;
            rows.collect::<Result<_, _>>().ctx(&path)?
        };
        for a in &agents {
            tx.execute("UPDATE agents SET mac = ?2 WHERE id = ?1", params![a.id, auth.agent_mac(a)]).ctx(&path)?;
        }
        let entries: Vec<(i64, String, String, bool)> = {
            let mut st = tx.prepare("SELECT id, uuid, scopes, deleted FROM entries").ctx(&path)?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).ctx(&path)?;
            rows.collect::<Result<_, _>>().ctx(&path)?
        };
        for (id, uuid, scopes, deleted) in &entries {
            tx.execute(
                "UPDATE entries SET mac = ?2 WHERE id = ?1",
                params![id, auth.entry_mac(*id, uuid, scopes, *deleted)],
            )
            .ctx(&path)?;
        }
        let passkeys: Vec<(String, Option<i64>, String, i64)> = {
            let mut st = tx
                .prepare("SELECT id, agent_id, CAST(public_key AS TEXT), sign_count FROM webauthn_credentials")
                .ctx(&path)?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).ctx(&path)?;
            rows.collect::<Result<_, _>>().ctx(&path)?
        };
        for (id, agent, passkey, count) in &passkeys {
            tx.execute(
                "UPDATE webauthn_credentials SET mac = ?2 WHERE id = ?1",
                params![id, auth.credential_mac(id, *agent, passkey, *count)],
            )
            .ctx(&path)?;
        }
        let n = tx.execute("UPDATE meta SET value = ?1 WHERE key = 'wrapped_key'", [wrapped_key_hex]).ctx(&path)?;
        if n != 1 {
            return Err(StoreError::Conflict("vault file has no data key".into()));
        }
        // Readers must reload: every row changed under them.
        bump_seq(&tx, &path)?;
        tx.commit().ctx(&path)?;
        Ok((agents.len(), entries.len()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns page cache memory to the allocator (after a bulk read such as the first load).
    pub fn shrink_memory(&self) -> Result<(), StoreError> {
        self.conn.execute_batch("PRAGMA shrink_memory").ctx(&self.path)
    }

    pub fn data_version(&self) -> Result<i64, StoreError> {
        super::data_version(&self.conn, &self.path)
    }

    /// Runs `f` inside the transaction already open on this connection (the WebAuthn gate's),
    /// or else in a new IMMEDIATE one: a check that counts rows and the insert it guards then
    /// see the same file, even with another process writing to it.
    pub fn in_one_transaction<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<T, E> {
        if self.outer { f(self) } else { self.atomically(f) }
    }

    pub(super) fn write_tx(&mut self) -> Result<WriteTx<'_>, StoreError> {
        if self.outer {
            return self.conn.savepoint().map(WriteTx::Sp).ctx(&self.path);
        }
        self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map(WriteTx::Tx).ctx(&self.path)
    }

    /// Runs `f` in one IMMEDIATE transaction: every write it makes through this `VaultDb`
    /// becomes a savepoint inside it. Commits when `f` returns `Ok` (callers that must persist
    /// part of a refused request, such as a consumed challenge and its audit row, return `Ok`
    /// carrying the refusal), rolls everything back on `Err`. Must not be nested.
    pub fn atomically<T, E: From<StoreError>>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, E>) -> Result<T, E> {
        if self.outer {
            return Err(StoreError::Conflict("nested vault transaction".into()).into());
        }
        self.conn.execute_batch("BEGIN IMMEDIATE").ctx(&self.path)?;
        self.outer = true;
        // A panic inside must not leave the transaction open (every later write would nest in
        // it and never commit): roll back, then let the panic go on.
        let out = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self))) {
            Ok(out) => out,
            Err(panic) => {
                self.outer = false;
                let _ = self.conn.execute_batch("ROLLBACK");
                std::panic::resume_unwind(panic);
            }
        };
        self.outer = false;
        match out {
            Ok(v) => match self.conn.execute_batch("COMMIT").ctx(&self.path) {
                Ok(()) => Ok(v),
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    Err(e.into())
                }
            },
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Runs `f` so that its writes happen all or not at all: one savepoint inside the open
    /// transaction (where [`VaultDb::in_one_transaction`] would let each write commit on its
    /// own, so a batch failing half-way would keep its first half), or its own transaction when
    /// none is open. Batches (bulk agents) use it inside the WebAuthn gate's transaction.
    pub fn all_or_nothing<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<T, E> {
        if !self.outer {
            return self.atomically(f);
        }
        self.conn.execute_batch("SAVEPOINT all_or_nothing").ctx(&self.path)?;
        match f(self) {
            Ok(v) => {
                self.conn.execute_batch("RELEASE all_or_nothing").ctx(&self.path)?;
                Ok(v)
            }
            Err(e) => {
                // If even the rollback fails, returning an error would let the caller commit the
                // half-batch; a panic makes `atomically` roll the whole transaction back instead.
                if let Err(re) = self.conn.execute_batch("ROLLBACK TO all_or_nothing; RELEASE all_or_nothing") {
                    panic!("rolling back a batch failed ({re}); the transaction is rolled back whole");
                }
                Err(e)
            }
        }
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional().ctx(&self.path)
    }

    /// Records the vault's identity and wrapped data key once; refuses to replace them.
    pub fn set_identity(&mut self, vault_id: &str, wrapped_key_hex: &str) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let existing: Option<String> =
            tx.query_row("SELECT value FROM meta WHERE key = 'vault_id'", [], |r| r.get(0)).optional().ctx(&path)?;
        if existing.is_some() {
            return Err(StoreError::Conflict("vault file already has an identity".into()));
        }
        tx.execute("INSERT INTO meta (key, value) VALUES ('vault_id', ?1)", [vault_id]).ctx(&path)?;
        tx.execute("INSERT INTO meta (key, value) VALUES ('wrapped_key', ?1)", [wrapped_key_hex]).ctx(&path)?;
        tx.commit().ctx(&path)
    }

    pub fn change_seq(&self) -> Result<i64, StoreError> {
        let v: String =
            self.conn.query_row("SELECT value FROM meta WHERE key = 'change_seq'", [], |r| r.get(0)).ctx(&self.path)?;
        Ok(v.parse().unwrap_or(0))
    }

    pub fn entry(&self, id: i64) -> Result<Option<EntryRow>, StoreError> {
        self.conn
            .prepare_cached(&format!("SELECT {ENTRY_COLS} FROM entries WHERE id = ?1"))
            .and_then(|mut st| st.query_row([id], entry_row).optional())
            .ctx(&self.path)
    }

    /// How many rows each capped kind has: live entries, agents that are not derived tokens
    /// (those are ephemeral and bounded by their own rule), passkeys.
    pub fn usage_counts(&self) -> Result<(u64, u64, u64), StoreError> {
        self.conn
            .query_row(USAGE_COUNTS, [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64))
            })
            .ctx(&self.path)
    }

    /// [`VaultDb::usage_counts`] of a file, read through a read-only connection (no migration
    /// check, a small cache): listing a thousand hosted vaults reads a thousand files. A file
    /// this read cannot count (one from before the columns it counts) is opened and migrated.
    pub fn usage_counts_of(path: &Path) -> Result<(u64, u64, u64), StoreError> {
        let read_only = || -> Result<(u64, u64, u64), StoreError> {
            let conn = rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .ctx(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(10)).ctx(path)?;
            conn.pragma_update(None, "cache_size", -64).ctx(path)?;
            let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).ctx(path)?;
            if version != super::Schema::Vault.known() {
                return Err(StoreError::Conflict("not at this build's schema".into()));
            }
            conn.query_row(USAGE_COUNTS, [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64))
            })
            .ctx(path)
        };
        read_only().or_else(|_| Self::open(path)?.usage_counts())
    }

    /// Deletes audit rows older than `before_ms` (audit retention); returns how many.
    pub fn prune_audit(&self, before_ms: i64) -> Result<usize, StoreError> {
        super::audit_sql::prune(&self.conn, &self.path, before_ms)
    }

    /// Every row (tombstones included) changed after `seq`, in change order.
    pub fn entries_since(&self, seq: i64) -> Result<Vec<EntryRow>, StoreError> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT {ENTRY_COLS} FROM entries WHERE change_seq > ?1 ORDER BY change_seq"))
            .ctx(&self.path)?;
        let rows = st.query_map([seq], entry_row).ctx(&self.path)?;
        rows.collect::<Result<_, _>>().ctx(&self.path)
    }

    /// Inserts an entry the caller sealed against the uuid it chose. Returns the new id.
    pub fn insert_entry(
        &mut self,
        uuid: &str,
        scopes: &str,
        sealed: &[u8],
        now: i64,
        audit: &AuditRecord,
    ) -> Result<i64, StoreError> {
        let ids = self.insert_entries(&[(uuid.to_owned(), scopes.to_owned(), sealed.to_vec())], now, audit)?;
        ids.first().copied().ok_or(StoreError::NotFound)
    }

    /// Inserts many sealed entries (uuid, scopes, sealed) in one transaction, one audit row each.
    pub fn insert_entries(
        &mut self,
        rows: &[(String, String, Vec<u8>)],
        now: i64,
        audit: &AuditRecord,
    ) -> Result<Vec<i64>, StoreError> {
        let auth = self.row_auth()?;
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let mut ids = Vec::with_capacity(rows.len());
        for (uuid, scopes, sealed) in rows {
            // Tombstones keep their uuid: a uuid is never used twice in a vault.
            let taken: Option<i64> =
                tx.query_row("SELECT id FROM entries WHERE uuid = ?1", [uuid], |r| r.get(0)).optional().ctx(&path)?;
            if taken.is_some() {
                return Err(StoreError::Conflict(format!("an entry with uuid {uuid} exists or existed")));
            }
            let seq = bump_seq(&tx, &path)?;
            tx.execute(
                "INSERT INTO entries (uuid, scopes, created_at, updated_at, version, change_seq, dirty, data)
                 VALUES (?1, ?2, ?3, ?3, 1, ?4, 1, ?5)",
                params![uuid, scopes, now, seq, sealed],
            )
            .ctx(&path)?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "UPDATE entries SET mac = ?2 WHERE id = ?1",
                params![id, auth.entry_mac(id, uuid, scopes, false)],
            )
            .ctx(&path)?;
            audit_sql::insert(&tx, &path, &AuditRecord { entry_id: Some(id), ..audit.clone() })?;
            ids.push(id);
        }
        tx.commit().ctx(&path)?;
        Ok(ids)
    }

    /// Replaces an entry's payload and scopes. `expected_version`, when given, makes the write
    /// fail with a conflict if someone else changed the entry first.
    pub fn update_entry(
        &mut self,
        id: i64,
        scopes: &str,
        sealed: &[u8],
        expected_version: Option<i64>,
        now: i64,
        audit: &AuditRecord,
    ) -> Result<i64, StoreError> {
        let auth = self.row_auth()?;
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let current: Option<(i64, bool, String)> = tx
            .query_row("SELECT version, deleted, uuid FROM entries WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .ctx(&path)?;
        let (version, uuid) = match current {
            Some((_, true, _)) | None => return Err(StoreError::NotFound),
            Some((v, false, uuid)) => (v, uuid),
        };
        if expected_version.is_some_and(|e| e != version) {
            return Err(StoreError::Conflict(format!("entry changed since version {}", expected_version.unwrap_or(0))));
        }
        let seq = bump_seq(&tx, &path)?;
        tx.execute(
            "UPDATE entries SET scopes = ?2, data = ?3, updated_at = max(updated_at, ?4), version = version + 1,
             change_seq = ?5, dirty = 1, mac = ?6 WHERE id = ?1",
            params![id, scopes, sealed, now, seq, auth.entry_mac(id, &uuid, scopes, false)],
        )
        .ctx(&path)?;
        audit_sql::insert(&tx, &path, &AuditRecord { entry_id: Some(id), ..audit.clone() })?;
        tx.commit().ctx(&path)?;
        Ok(version + 1)
    }

    /// Turns an entry into a tombstone: payload gone, row kept so replication can carry the delete.
    pub fn delete_entry(&mut self, id: i64, now: i64, audit: &AuditRecord) -> Result<(), StoreError> {
        let auth = self.row_auth()?;
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let seq = bump_seq(&tx, &path)?;
        let uuid: Option<String> = tx
            .query_row(
                "UPDATE entries SET deleted = 1, data = x'', scopes = '', updated_at = max(updated_at, ?2),
                 version = version + 1, change_seq = ?3, dirty = 1 WHERE id = ?1 AND deleted = 0 RETURNING uuid",
                params![id, now, seq],
                |r| r.get(0),
            )
            .optional()
            .ctx(&path)?;
        let Some(uuid) = uuid else {
            return Err(StoreError::NotFound);
        };
        tx.execute("UPDATE entries SET mac = ?2 WHERE id = ?1", params![id, auth.entry_mac(id, &uuid, "", true)])
            .ctx(&path)?;
        audit_sql::insert(&tx, &path, &AuditRecord { entry_id: Some(id), ..audit.clone() })?;
        tx.commit().ctx(&path)
    }

    pub fn agents(&self) -> Result<Vec<AgentRow>, StoreError> {
        let mut st = self.conn.prepare(&format!("SELECT {AGENT_COLS} FROM agents ORDER BY id")).ctx(&self.path)?;
        let rows = st.query_map([], agent_row).ctx(&self.path)?;
        rows.collect::<Result<_, _>>().ctx(&self.path)
    }

    pub fn agent(&self, id: i64) -> Result<Option<AgentRow>, StoreError> {
        self.conn
            .query_row(&format!("SELECT {AGENT_COLS} FROM agents WHERE id = ?1"), [id], agent_row)
            .optional()
            .ctx(&self.path)
    }

    /// Inserts an agent. `scopes_for` receives the new id, so the agent's own scope (derived
    /// from the id) can be part of its scopes in the same transaction.
    pub fn insert_agent(
        &mut self,
        new: &NewAgent<'_>,
        scopes_for: impl FnOnce(i64) -> String,
        audit: &AuditRecord,
    ) -> Result<AgentRow, StoreError> {
        let auth = self.row_auth()?;
        let path = self.path.clone();
        let tx = self.write_tx()?;
        bump_seq(&tx, &path)?;
        tx.execute(
            "INSERT INTO agents (token_hash, name, scopes, all_access, admin, created_at, expires_at, parent_id,
             reveal_to_model, proxy_only_listed) VALUES (?1, ?2, '', ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                new.token_hash,
                new.name,
                new.all_access,
                new.admin,
                new.created_at,
                new.expires_at,
                new.parent_id,
                new.reveal_to_model,
                new.proxy_only_listed
            ],
        )
        .ctx(&path)?;
        let id = tx.last_insert_rowid();
        let scopes = scopes_for(id);
        tx.execute("UPDATE agents SET scopes = ?2 WHERE id = ?1", params![id, scopes]).ctx(&path)?;
        audit_sql::insert(&tx, &path, &AuditRecord { detail: format!("agent {id}"), ..audit.clone() })?;
        let row = mac_agent(&tx, &path, &auth, id)?;
        tx.commit().ctx(&path)?;
        Ok(row)
    }

    /// Changes an agent; refuses to leave the vault without an admin.
    pub fn update_agent(&mut self, id: i64, change: &AgentChange, audit: &AuditRecord) -> Result<AgentRow, StoreError> {
        let auth = self.row_auth()?;
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let current = tx
            .query_row(&format!("SELECT {AGENT_COLS} FROM agents WHERE id = ?1"), [id], agent_row)
            .optional()
            .ctx(&path)?
            .ok_or(StoreError::NotFound)?;
        if current.admin && change.admin == Some(false) && other_admins(&tx, &path, &auth, id)? == 0 {
            return Err(StoreError::Conflict("cannot remove admin from the last admin agent".into()));
        }
        bump_seq(&tx, &path)?;
        tx.execute(
            "UPDATE agents SET name = coalesce(?2, name), scopes = coalesce(?3, scopes),
             all_access = coalesce(?4, all_access), admin = coalesce(?5, admin),
             token_hash = coalesce(?6, token_hash), reveal_to_model = coalesce(?7, reveal_to_model),
             proxy_only_listed = coalesce(?8, proxy_only_listed) WHERE id = ?1",
            params![
                id,
                change.name,
                change.scopes,
                change.all_access,
                change.admin,
                change.token_hash,
                change.reveal_to_model,
                change.proxy_only_listed
            ],
        )
        .ctx(&path)?;
        audit_sql::insert(&tx, &path, &AuditRecord { detail: format!("agent {id}"), ..audit.clone() })?;
        let row = mac_agent(&tx, &path, &auth, id)?;
        tx.commit().ctx(&path)?;
        Ok(row)
    }

    /// Revokes (deletes) an agent and every agent derived from it, recursively, in one
    /// transaction; refuses to leave the vault without an admin. Ids are AUTOINCREMENT, so a
    /// revoked agent's id, and with it its scope, is never handed to anyone else. Returns the
    /// ids of the derived agents revoked with it (each gets its own audit row).
    pub fn delete_agent(&mut self, id: i64, audit: &AuditRecord) -> Result<Vec<i64>, StoreError> {
        let auth = self.row_auth()?;
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let admin: Option<bool> =
            tx.query_row("SELECT admin FROM agents WHERE id = ?1", [id], |r| r.get(0)).optional().ctx(&path)?;
        if admin.is_none() {
            return Err(StoreError::NotFound);
        }
        let descendants: Vec<i64> = {
            let mut st = tx
                .prepare(
                    "WITH RECURSIVE d(id) AS (
                         SELECT id FROM agents WHERE parent_id = ?1
                         UNION SELECT a.id FROM agents a JOIN d ON a.parent_id = d.id)
                     SELECT id FROM d WHERE id != ?1 ORDER BY id",
                )
                .ctx(&path)?;
            let rows = st.query_map([id], |r| r.get(0)).ctx(&path)?;
            rows.collect::<Result<_, _>>().ctx(&path)?
        };
        let mut going = descendants.clone();
        going.push(id);
        if remaining_admins(&tx, &path, &auth, &going)? == 0 && any_admin(&tx, &path, &going)? {
            return Err(StoreError::Conflict("cannot revoke the last admin agent".into()));
        }
        bump_seq(&tx, &path)?;
        Self::remember_gone_agents(&tx, &path, &going, audit.ts)?;
        for gone in &going {
            tx.execute("DELETE FROM agents WHERE id = ?1", [gone]).ctx(&path)?;
            // Its passkeys go with it: ids are never reused, but a key nobody holds is no key to keep.
            tx.execute("DELETE FROM webauthn_credentials WHERE agent_id = ?1", [gone]).ctx(&path)?;
            // Its access requests too: nobody is left to grant them to.
            tx.execute("DELETE FROM proxy_requests WHERE agent_id = ?1", [gone]).ctx(&path)?;
        }
        audit_sql::insert(&tx, &path, &AuditRecord { detail: format!("agent {id}"), ..audit.clone() })?;
        for child in &descendants {
            let detail = format!("agent {child} (derived, revoked with agent {id})");
            audit_sql::insert(&tx, &path, &AuditRecord { detail, ..audit.clone() })?;
        }
        tx.commit().ctx(&path)?;
        Ok(descendants)
    }

    /// Removes derived agents that expired at or before `expired_by` (unix seconds), at most
    /// `limit` per call, with one audit row each; their passkeys and access requests go with
    /// them. A child never outlives its parent, so an expired agent's descendants are expired
    /// too and go in the same or an earlier pass. Nothing is written when none is due. Returns
    /// the ids removed.
    pub fn prune_expired_derived(
        &mut self,
        expired_by: i64,
        limit: u32,
        audit: &AuditRecord,
    ) -> Result<Vec<i64>, StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let due: Vec<(i64, i64)> = {
            let mut st = tx
                .prepare(
                    "SELECT id, expires_at FROM agents
                     WHERE parent_id IS NOT NULL AND expires_at IS NOT NULL AND expires_at <= ?1 AND admin = 0
                     ORDER BY id LIMIT ?2",
                )
                .ctx(&path)?;
            let rows = st.query_map(params![expired_by, limit], |r| Ok((r.get(0)?, r.get(1)?))).ctx(&path)?;
            rows.collect::<Result<_, _>>().ctx(&path)?
        };
        if due.is_empty() {
            return Ok(Vec::new());
        }
        bump_seq(&tx, &path)?;
        for (id, expired) in &due {
            tx.execute("DELETE FROM agents WHERE id = ?1", [id]).ctx(&path)?;
            tx.execute("DELETE FROM webauthn_credentials WHERE agent_id = ?1", [id]).ctx(&path)?;
            tx.execute("DELETE FROM proxy_requests WHERE agent_id = ?1", [id]).ctx(&path)?;
            let detail = format!("agent {id} (derived token, expired at {expired})");
            audit_sql::insert(&tx, &path, &AuditRecord { detail, ..audit.clone() })?;
        }
        tx.commit().ctx(&path)?;
        Ok(due.into_iter().map(|(id, _)| id).collect())
    }

    /// Unexpired derived agents in the tree `agent` belongs to: every descendant of its root
    /// (the ancestor that was not derived). The cap on derived tokens counts these, so a chain
    /// of derivations cannot multiply it.
    pub fn live_derived_in_tree(&self, agent: i64, now_secs: i64) -> Result<i64, StoreError> {
        self.conn
            .query_row(
                "WITH RECURSIVE
                     up(id, parent_id) AS (
                         SELECT id, parent_id FROM agents WHERE id = ?1
                         UNION SELECT a.id, a.parent_id FROM agents a JOIN up ON a.id = up.parent_id),
                     down(id) AS (
                         SELECT a.id FROM agents a JOIN up ON a.parent_id = up.id WHERE up.parent_id IS NULL
                         UNION SELECT a.id FROM agents a JOIN down ON a.parent_id = down.id)
                 SELECT count(*) FROM agents
                 WHERE id IN (SELECT id FROM down) AND (expires_at IS NULL OR expires_at > ?2)",
                params![agent, now_secs],
                |r| r.get(0),
            )
            .ctx(&self.path)
    }

    pub fn append_audit(&self, record: &AuditRecord) -> Result<i64, StoreError> {
        audit_sql::insert(&self.conn, &self.path, record)
    }

    pub fn audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        audit_sql::list(&self.conn, &self.path, before, limit, None)
    }

    /// Like [`Self::audit`], but only rows by one of `agents` that name no entry or one of `entries`.
    pub fn audit_within(
        &self,
        before: Option<i64>,
        limit: u32,
        agents: &[i64],
        entries: &[i64],
    ) -> Result<Vec<AuditRow>, StoreError> {
        audit_sql::list(&self.conn, &self.path, before, limit, Some((agents, entries)))
    }

    /// [`Self::audit`] or [`Self::audit_within`] (when `within` is given), narrowed by `filter`.
    pub fn audit_filtered(
        &self,
        before: Option<i64>,
        limit: u32,
        within: Option<(&[i64], &[i64])>,
        filter: &audit_sql::AuditFilter,
    ) -> Result<Vec<AuditRow>, StoreError> {
        audit_sql::list_filtered(&self.conn, &self.path, before, limit, within, filter)
    }

    /// Every live entry's id and stored scopes (no payload): what the authority rules compare.
    pub fn live_entry_scopes(&self) -> Result<Vec<(i64, String)>, StoreError> {
        let mut st = self.conn.prepare_cached("SELECT id, scopes FROM entries WHERE deleted = 0").ctx(&self.path)?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).ctx(&self.path)?;
        rows.collect::<Result<_, _>>().ctx(&self.path)
    }

    /// The id the next inserted agent will get (ids are AUTOINCREMENT, never reused). Exact only
    /// inside a write transaction, where no one else can insert first.
    pub fn next_agent_id(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row(
                "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'agents'), 0),
                            coalesce((SELECT max(id) FROM agents), 0)) + 1",
                [],
                |r| r.get(0),
            )
            .ctx(&self.path)
    }
}

/// MACs an agent row as it now stands in the transaction; returns the row with its MAC.
fn mac_agent(tx: &Connection, path: &Path, auth: &RowAuth, id: i64) -> Result<AgentRow, StoreError> {
    let mut row = tx.query_row(&format!("SELECT {AGENT_COLS} FROM agents WHERE id = ?1"), [id], agent_row).ctx(path)?;
    let mac = auth.agent_mac(&row);
    tx.execute("UPDATE agents SET mac = ?2 WHERE id = ?1", params![id, mac]).ctx(path)?;
    row.mac = Some(mac);
    Ok(row)
}

/// Authentic admins outside `going`.
fn remaining_admins(tx: &Connection, path: &Path, auth: &RowAuth, going: &[i64]) -> Result<usize, StoreError> {
    let mut st = tx.prepare(&format!("SELECT {AGENT_COLS} FROM agents WHERE admin = 1")).ctx(path)?;
    let rows = st.query_map([], agent_row).ctx(path)?.collect::<Result<Vec<_>, _>>().ctx(path)?;
    Ok(rows.iter().filter(|r| !going.contains(&r.id) && auth.agent_ok(r)).count())
}

fn any_admin(tx: &Connection, path: &Path, ids: &[i64]) -> Result<bool, StoreError> {
    for id in ids {
        let admin: Option<bool> =
            tx.query_row("SELECT admin FROM agents WHERE id = ?1", [id], |r| r.get(0)).optional().ctx(path)?;
        if admin == Some(true) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Admins other than `id` whose rows verify: a forged admin row (which cannot authenticate) must
/// not let the last real admin go.
fn other_admins(tx: &Connection, path: &Path, auth: &RowAuth, id: i64) -> Result<usize, StoreError> {
    let mut st = tx.prepare(&format!("SELECT {AGENT_COLS} FROM agents WHERE admin = 1 AND id != ?1")).ctx(path)?;
    let rows = st.query_map([id], agent_row).ctx(path)?.collect::<Result<Vec<_>, _>>().ctx(path)?;
    Ok(rows.iter().filter(|r| auth.agent_ok(r)).count())
}

pub(super) fn bump_seq(tx: &Connection, path: &Path) -> Result<i64, StoreError> {
    let v: String = tx
        .query_row(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'change_seq' RETURNING value",
            [],
            |r| r.get(0),
        )
        .ctx(path)?;
    Ok(v.parse().unwrap_or(0))
}
