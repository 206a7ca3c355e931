//! Numbered schema migrations, applied at open inside one transaction each.
//!
//! A file's `PRAGMA user_version` says how many migrations it has had. A file from a newer
//! build (higher version than we know) is refused rather than guessed at. A migration is never
//! edited once released: add a new one.

use std::path::Path;

use rusqlite::Connection;

use super::{Ctx, StoreError};

/// Which kind of database a file is; recorded in `meta` so a node.db is never opened as a vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    Node,
    Vault,
}

impl Schema {
    fn name(self) -> &'static str {
        match self {
            Schema::Node => "node",
            Schema::Vault => "vault",
        }
    }

    /// How many migrations this build knows for the kind (a file's `user_version` above it
    /// was written by a newer build).
    pub(crate) fn known(self) -> i64 {
        self.steps().len() as i64
    }

    fn steps(self) -> &'static [&'static str] {
        match self {
            Schema::Node => NODE,
            Schema::Vault => VAULT,
        }
    }
}

// Audit ids are plain rowids (no AUTOINCREMENT): rows are only ever appended, and retention
// deletes the oldest, so an id is never reused, and each batch commit writes one page fewer.
const NODE: &[&str] = &[
    // 1: vault registry, node settings, node-level audit (failed authentication belongs to no vault).
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE vaults (
         vault_id   TEXT PRIMARY KEY,
         file_name  TEXT NOT NULL UNIQUE,
         created_at INTEGER NOT NULL
     );
     CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE audit (
         id        INTEGER PRIMARY KEY,
         ts        INTEGER NOT NULL,
         actor     TEXT NOT NULL,
         agent_id  INTEGER,
         action    TEXT NOT NULL,
         entry_id  INTEGER,
         client    TEXT NOT NULL DEFAULT '',
         outcome   TEXT NOT NULL,
         detail    TEXT NOT NULL DEFAULT ''
     );",
    // 2 (issue 15): the installed license (one row; the commercial edition reads it) and node
    // management tokens (`cvm_`, SHA-256 only), which authenticate on management routes only.
    "CREATE TABLE license (
         id                INTEGER PRIMARY KEY CHECK (id = 1),
         token             TEXT NOT NULL,
         installed_at      INTEGER NOT NULL,
         last_validated_at INTEGER NOT NULL
     );
     CREATE TABLE mgmt_tokens (
         id          INTEGER PRIMARY KEY AUTOINCREMENT,
         name        TEXT NOT NULL,
         scope       TEXT NOT NULL,
         token_hash  TEXT NOT NULL UNIQUE,
         created_at  INTEGER NOT NULL,
         revoked_at  INTEGER
     );
     CREATE INDEX audit_ts ON audit(ts);",
    // (issue 16, hosted vaults and the audit feed) A retired vault leaves the registry's live
    // set at once and its file is removed after `remove_after` (unix seconds). `audit_feed`
    // is the node-wide copy of every file's audit rows in the order they were copied (each
    // file's rows in id order, which is its commit order); `seq` is AUTOINCREMENT so a cursor
    // stays valid when retention empties the table. `audit_feed_progress` says how far each
    // source (a vault id, or "node") has been copied, updated in the copy's transaction.
    "ALTER TABLE vaults ADD COLUMN retired_at INTEGER;
     ALTER TABLE vaults ADD COLUMN remove_after INTEGER;
     CREATE TABLE audit_feed (
         seq       INTEGER PRIMARY KEY AUTOINCREMENT,
         vault_id  TEXT,
         row_id    INTEGER NOT NULL,
         ts        INTEGER NOT NULL,
         actor     TEXT NOT NULL,
         agent_id  INTEGER,
         action    TEXT NOT NULL,
         entry_id  INTEGER,
         client    TEXT NOT NULL DEFAULT '',
         outcome   TEXT NOT NULL
     );
     CREATE INDEX audit_feed_ts ON audit_feed(ts);
     CREATE TABLE audit_feed_progress (source TEXT PRIMARY KEY, upto INTEGER NOT NULL);",
    // (issue 16, hosted vaults at scale) Which vault issued a setup code, so a setup link finds
    // its vault without opening every vault: the code's SHA-256 (as the vault file stores it),
    // never the code. At most one row per vault (a new code replaces the vault's old row); the
    // vault file stays the authority on whether the code is still good.
    "CREATE TABLE setup_code_index (
         code_hash TEXT PRIMARY KEY,
         vault_id  TEXT NOT NULL
     );
     CREATE INDEX setup_code_index_vault ON setup_code_index(vault_id);",
];

const VAULT: &[&str] = &[
    // 1: spec-dual-build.md's tables, with entries sealed and replication markers in place.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE entries (
         id            INTEGER PRIMARY KEY AUTOINCREMENT,
         uuid          TEXT NOT NULL UNIQUE,
         scopes        TEXT NOT NULL DEFAULT '',
         created_at    INTEGER NOT NULL,
         updated_at    INTEGER NOT NULL,
         version       INTEGER NOT NULL DEFAULT 1,
         deleted       INTEGER NOT NULL DEFAULT 0,
         change_seq    INTEGER NOT NULL DEFAULT 0,
         dirty         INTEGER NOT NULL DEFAULT 1,
         replicated_at INTEGER,
         data          BLOB NOT NULL
     );
     CREATE INDEX entries_change_seq ON entries(change_seq);
     CREATE INDEX entries_dirty ON entries(dirty) WHERE dirty = 1;
     CREATE TABLE agents (
         id          INTEGER PRIMARY KEY AUTOINCREMENT,
         token_hash  TEXT UNIQUE NOT NULL,
         name        TEXT NOT NULL,
         scopes      TEXT NOT NULL DEFAULT '',
         all_access  INTEGER NOT NULL DEFAULT 0,
         admin       INTEGER NOT NULL DEFAULT 0,
         created_at  INTEGER NOT NULL
     );
     CREATE TABLE webauthn_credentials (
         id          TEXT PRIMARY KEY,
         public_key  BLOB NOT NULL,
         sign_count  INTEGER NOT NULL DEFAULT 0,
         created_at  INTEGER NOT NULL
     );
     CREATE TABLE webauthn_challenges (
         challenge_id TEXT PRIMARY KEY,
         challenge    TEXT NOT NULL,
         created_at   INTEGER NOT NULL,
         expires_at   INTEGER NOT NULL
     );
     CREATE TABLE audit (
         id        INTEGER PRIMARY KEY,
         ts        INTEGER NOT NULL,
         actor     TEXT NOT NULL,
         agent_id  INTEGER,
         action    TEXT NOT NULL,
         entry_id  INTEGER,
         client    TEXT NOT NULL DEFAULT '',
         outcome   TEXT NOT NULL,
         detail    TEXT NOT NULL DEFAULT ''
     );
     INSERT INTO meta (key, value) VALUES ('change_seq', '0');",
    // 2: operation-bound WebAuthn challenges (what they authorise, for whom, the ceremony
    // state), passkey names, one-time owner setup codes.
    "ALTER TABLE webauthn_credentials ADD COLUMN name TEXT NOT NULL DEFAULT '';
     ALTER TABLE webauthn_challenges ADD COLUMN purpose TEXT NOT NULL DEFAULT 'operation';
     ALTER TABLE webauthn_challenges ADD COLUMN agent_id INTEGER;
     ALTER TABLE webauthn_challenges ADD COLUMN method TEXT NOT NULL DEFAULT '';
     ALTER TABLE webauthn_challenges ADD COLUMN path TEXT NOT NULL DEFAULT '';
     ALTER TABLE webauthn_challenges ADD COLUMN body_sha256 TEXT NOT NULL DEFAULT '';
     ALTER TABLE webauthn_challenges ADD COLUMN state TEXT NOT NULL DEFAULT '';
     CREATE INDEX webauthn_challenges_expiry ON webauthn_challenges(expires_at);
     CREATE TABLE setup_codes (
         code_hash  TEXT PRIMARY KEY,
         created_at INTEGER NOT NULL,
         expires_at INTEGER NOT NULL,
         used_at    INTEGER
     );",
    // 3: a passkey belongs to the agent that enrolled it; an assertion counts only with that
    // agent's token. Passkeys from before this migration were the owner's: agent 1.
    "ALTER TABLE webauthn_credentials ADD COLUMN agent_id INTEGER;
     UPDATE webauthn_credentials SET agent_id = 1;
     CREATE INDEX webauthn_credentials_agent ON webauthn_credentials(agent_id);",
    // 4 (issue 12 §4): a MAC on every row that grants access. Left NULL here: the SQL has no
    // key. The first open with the master key MACs the existing rows once (`vault::data_dir`),
    // and a row without a MAC after that grants nothing.
    "ALTER TABLE agents ADD COLUMN mac BLOB;
     ALTER TABLE entries ADD COLUMN mac BLOB;
     ALTER TABLE webauthn_credentials ADD COLUMN mac BLOB;",
    // 5 (issue 13): expiring and derived agents. `expires_at` is unix seconds (NULL: never);
    // `parent_id` names the agent a token was derived from (revoked with it); `reveal_to_model`
    // lets the MCP server hand L1 values to the model. The defaults are what every existing
    // row meant, and the agent MAC covers these columns only when they differ from them, so
    // existing MACs stay valid.
    "ALTER TABLE agents ADD COLUMN expires_at INTEGER;
     ALTER TABLE agents ADD COLUMN parent_id INTEGER;
     ALTER TABLE agents ADD COLUMN reveal_to_model INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX agents_parent ON agents(parent_id) WHERE parent_id IS NOT NULL;",
    // 6 (issue 18): `proxy_only_listed` makes the proxy refuse an agent's requests to hosts no
    // inject rule names; covered by the agent MAC only when set (so existing MACs stay valid).
    // `proxy_requests`: an agent's pending requests for access to a host, which the owner
    // grants by creating an entry and rule (a passkey-approved write) or dismisses.
    "ALTER TABLE agents ADD COLUMN proxy_only_listed INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE proxy_requests (
         id         INTEGER PRIMARY KEY AUTOINCREMENT,
         agent_id   INTEGER NOT NULL,
         host       TEXT NOT NULL,
         reason     TEXT NOT NULL DEFAULT '',
         created_at INTEGER NOT NULL
     );
     CREATE INDEX proxy_requests_agent ON proxy_requests(agent_id);",
    // (issue 17) What deleted entries and revoked agents were called, for the audit view
    // (`gone_names_db`): an agent's name as text, an entry's title sealed under the data key.
    "CREATE TABLE IF NOT EXISTS gone_names (
         kind    TEXT NOT NULL,
         id      INTEGER NOT NULL,
         name    BLOB NOT NULL,
         gone_at INTEGER NOT NULL,
         PRIMARY KEY (kind, id)
     );",
    // (issue 16 §4) identity-provider provisioning (the commercial edition's SCIM service): the
    // owner's provisioning tokens (SHA-256 only), the users it provisioned (each an agent; the
    // resource's other attributes as JSON), its groups (each mapped to at most one scope that
    // existed when the group was named) and their members, each membership granting its scope
    // only once the owner approved it with a passkey (`approved_at`). Empty in a community vault.
    // `IF NOT EXISTS`: tests that rewind `user_version` to replay an earlier migration replay this too.
    "CREATE TABLE IF NOT EXISTS idp_tokens (
         id          INTEGER PRIMARY KEY AUTOINCREMENT,
         token_hash  TEXT NOT NULL UNIQUE,
         name        TEXT NOT NULL DEFAULT '',
         created_at  INTEGER NOT NULL,
         revoked_at  INTEGER
     );
     CREATE TABLE IF NOT EXISTS idp_users (
         agent_id    INTEGER PRIMARY KEY,
         user_name   TEXT NOT NULL UNIQUE COLLATE NOCASE,
         external_id TEXT,
         active      INTEGER NOT NULL DEFAULT 1,
         attributes  TEXT NOT NULL DEFAULT '{}',
         created_at  INTEGER NOT NULL,
         updated_at  INTEGER NOT NULL,
         version     INTEGER NOT NULL DEFAULT 1
     );
     CREATE TABLE IF NOT EXISTS idp_groups (
         id           INTEGER PRIMARY KEY AUTOINCREMENT,
         display_name TEXT NOT NULL,
         external_id  TEXT,
         scope        TEXT,
         attributes   TEXT NOT NULL DEFAULT '{}',
         created_at   INTEGER NOT NULL,
         updated_at   INTEGER NOT NULL,
         version      INTEGER NOT NULL DEFAULT 1
     );
     CREATE TABLE IF NOT EXISTS idp_group_members (
         group_id    INTEGER NOT NULL,
         agent_id    INTEGER NOT NULL,
         approved_at INTEGER,
         PRIMARY KEY (group_id, agent_id)
     );
     CREATE INDEX IF NOT EXISTS idp_group_members_agent ON idp_group_members(agent_id);",
    // (issue 14, replication; appended last, so nothing depends on its number.) A primary's
    // acknowledged watermarks per backup and kind (`entries`: change_seq, `auth`: auth_seq,
    // `audit`: audit id); `meta.auth_seq`, advanced by triggers on every change to agents,
    // passkeys and the wrapped L2 keyring, so no writer can forget to mark them for
    // replication; and on a backup, the source POP and id of each replicated audit row (a
    // resend is ignored by the unique index). Challenges and setup codes have no marker: they
    // are never replicated.
    "CREATE TABLE replication_marks (
         backup_id TEXT NOT NULL,
         kind      TEXT NOT NULL,
         seq       INTEGER NOT NULL,
         acked_at  INTEGER NOT NULL,
         PRIMARY KEY (backup_id, kind)
     );
     ALTER TABLE audit ADD COLUMN source_pop TEXT;
     ALTER TABLE audit ADD COLUMN source_id INTEGER;
     CREATE UNIQUE INDEX audit_source ON audit(source_pop, source_id) WHERE source_pop IS NOT NULL;
     INSERT OR IGNORE INTO meta (key, value) VALUES ('auth_seq', '0');
     CREATE TRIGGER auth_seq_agents_i AFTER INSERT ON agents BEGIN
         UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'auth_seq'; END;
     CREATE TRIGGER auth_seq_agents_u AFTER UPDATE ON agents BEGIN
         UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'auth_seq'; END;
     CREATE TRIGGER auth_seq_agents_d AFTER DELETE ON agents BEGIN
         UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'auth_seq'; END;
     CREATE TRIGGER auth_seq_passkeys_i AFTER INSERT ON webauthn_credentials BEGIN
         UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'auth_seq'; END;
     CREATE TRIGGER auth_seq_passkeys_u AFTER UPDATE ON webauthn_credentials BEGIN
         UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'auth_seq'; END;
     CREATE TRIGGER auth_seq_passkeys_d AFTER DELETE ON webauthn_credentials BEGIN
         UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'auth_seq'; END;
     CREATE TRIGGER auth_seq_keyring_i AFTER INSERT ON meta WHEN NEW.key = 'l2_keyring' BEGIN
         UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'auth_seq'; END;
     CREATE TRIGGER auth_seq_keyring_u AFTER UPDATE ON meta WHEN NEW.key = 'l2_keyring' BEGIN
         UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'auth_seq'; END;",
    // (issue 17 §3) Which agents are browser-extension sessions (`sessions_db`): a mark for the
    // agents page only, it grants nothing. The trigger drops the mark with its agent, whatever
    // deletes it (revoke, expiry sweep, replication), so a later agent given a reused id never
    // inherits it.
    "CREATE TABLE IF NOT EXISTS extension_sessions (
         agent_id   INTEGER PRIMARY KEY,
         created_at INTEGER NOT NULL
     );
     CREATE TRIGGER IF NOT EXISTS extension_sessions_gone AFTER DELETE ON agents BEGIN
         DELETE FROM extension_sessions WHERE agent_id = OLD.id; END;",
    // (issue 12 §4) A setup code enrolls the owner's passkey (and, in a vault without agents,
    // creates the owner): its row carries a MAC of its hash too, so a code inserted into the
    // file without the master key sets up nothing. Codes from before this migration have none
    // and are refused; `clavitor init` issues a fresh one.
    "ALTER TABLE setup_codes ADD COLUMN mac BLOB;",
];

/// Brings the file up to this build's schema, or refuses a file from a newer build.
pub(crate) fn migrate(conn: &mut Connection, path: &Path, schema: Schema) -> Result<(), StoreError> {
    let steps = schema.steps();
    let known = steps.len() as i64;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).ctx(path)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).ctx(path)?;
    if current > 0 {
        let kind: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0))
            .map(Some)
            .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })
            .ctx(path)?;
        let kind = kind.unwrap_or_default();
        if kind != schema.name() {
            return Err(StoreError::WrongKind { path: path.to_owned(), expected: schema.name(), found: kind });
        }
    }
    // Checked after the kind: the two kinds have different numbers of migrations.
    if current > known {
        return Err(StoreError::TooNew { path: path.to_owned(), found: current, known });
    }
    for (index, sql) in steps.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql).ctx(path)?;
        if index == 0 {
            tx.execute("INSERT INTO meta (key, value) VALUES ('schema', ?1)", [schema.name()]).ctx(path)?;
        }
        tx.pragma_update(None, "user_version", index as i64 + 1).ctx(path)?;
    }
    tx.commit().ctx(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_file_is_refused_and_kinds_do_not_mix() {
        let dir =
            std::env::temp_dir().join(format!("clavitor-mig-{}", hex::encode(crate::crypto::random_bytes::<8>())));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.db");
        let mut conn = crate::store::open_connection(&path).unwrap();
        migrate(&mut conn, &path, Schema::Vault).unwrap();
        migrate(&mut conn, &path, Schema::Vault).unwrap(); // idempotent
        assert!(matches!(migrate(&mut conn, &path, Schema::Node), Err(StoreError::WrongKind { .. })));
        conn.pragma_update(None, "user_version", 99).unwrap();
        let err = migrate(&mut conn, &path, Schema::Vault).unwrap_err();
        assert!(err.to_string().contains("newer Clavitor"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn passkeys_from_before_migration_3_belong_to_agent_1() {
        let dir =
            std::env::temp_dir().join(format!("clavitor-mig-{}", hex::encode(crate::crypto::random_bytes::<8>())));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.db");
        let mut conn = crate::store::open_connection(&path).unwrap();
        // A file as migration 2 left it, with one passkey.
        conn.execute_batch(VAULT[0]).unwrap();
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema', 'vault')", []).unwrap();
        conn.execute_batch(VAULT[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute(
            "INSERT INTO webauthn_credentials (id, public_key, sign_count, created_at) VALUES ('k', x'00', 0, 0)",
            [],
        )
        .unwrap();
        migrate(&mut conn, &path, Schema::Vault).unwrap();
        let owner: i64 =
            conn.query_row("SELECT agent_id FROM webauthn_credentials WHERE id = 'k'", [], |r| r.get(0)).unwrap();
        assert_eq!(owner, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
