//! A vault file's WebAuthn side: registered passkeys, outstanding challenges, one-time owner
//! setup codes, and the owner's wrapped L2 keyring (in `meta`).
//!
//! Challenges are taken with `DELETE … RETURNING`, so a challenge can be used once even when
//! two requests race for it; expired ones are swept whenever a new one is stored. A passkey
//! belongs to one agent (`agent_id`); an agent's last passkey cannot be removed. Nothing here verifies a signature: callers pass verified results.

use rusqlite::{OptionalExtension, params};

use super::audit_sql::{self, AuditRecord};
use super::vault_db::VaultDb;
use super::{Ctx, StoreError};

/// Outstanding (unexpired) challenges a vault holds at most; bounds what a client can make us store.
pub const MAX_OPEN_CHALLENGES: i64 = 1000;
/// Largest wrapped L2 keyring accepted.
pub const MAX_KEYRING: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct CredentialRow {
    pub id: String,
    /// The passkey as webauthn-rs serialises it (public key, algorithm, flags).
    pub passkey: String,
    pub sign_count: i64,
    pub name: String,
    pub created_at: i64,
    /// The agent that enrolled it; only that agent's token can use it.
    pub agent_id: Option<i64>,
    /// Set by the store on write; see [`VaultDb::credential_authentic`].
    pub mac: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRow {
    pub id: String,
    /// `operation` (an admin write), `register` (a further passkey) or `setup` (the first one).
    pub purpose: String,
    pub agent_id: Option<i64>,
    pub method: String,
    pub path: String,
    pub body_sha256: String,
    pub challenge: String,
    /// The serialised ceremony state.
    pub state: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupCodeRow {
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    /// The row's MAC verifies under the vault's key (false when the vault was opened without
    /// it): the code was issued by a holder of the master key, not inserted into the file.
    pub authentic: bool,
}

const CHALLENGE_COLS: &str =
    "challenge_id, purpose, agent_id, method, path, body_sha256, challenge, state, created_at, expires_at";

fn credential_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CredentialRow> {
    Ok(CredentialRow {
        id: r.get(0)?,
        passkey: r.get(1)?,
        sign_count: r.get(2)?,
        name: r.get(3)?,
        created_at: r.get(4)?,
        agent_id: r.get(5)?,
        mac: r.get(6)?,
    })
}

fn challenge_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChallengeRow> {
    Ok(ChallengeRow {
        id: r.get(0)?,
        purpose: r.get(1)?,
        agent_id: r.get(2)?,
        method: r.get(3)?,
        path: r.get(4)?,
        body_sha256: r.get(5)?,
        challenge: r.get(6)?,
        state: r.get(7)?,
        created_at: r.get(8)?,
        expires_at: r.get(9)?,
    })
}

impl VaultDb {
    pub fn credentials(&self) -> Result<Vec<CredentialRow>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, CAST(public_key AS TEXT), sign_count, name, created_at, agent_id, mac FROM webauthn_credentials
                 ORDER BY created_at, id",
            )
            .ctx(&self.path)?;
        let rows = st.query_map([], credential_row).ctx(&self.path)?;
        rows.collect::<Result<_, _>>().ctx(&self.path)
    }

    pub fn credential(&self, id: &str) -> Result<Option<CredentialRow>, StoreError> {
        self.conn
            .query_row(
                "SELECT id, CAST(public_key AS TEXT), sign_count, name, created_at, agent_id, mac FROM webauthn_credentials
                 WHERE id = ?1",
                [id],
                credential_row,
            )
            .optional()
            .ctx(&self.path)
    }

    /// Registers a passkey; a credential id already registered is a conflict.
    pub fn insert_credential(&mut self, row: &CredentialRow, audit: &AuditRecord) -> Result<(), StoreError> {
        let auth = self.row_auth()?;
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let exists: Option<i64> = tx
            .query_row("SELECT 1 FROM webauthn_credentials WHERE id = ?1", [&row.id], |r| r.get(0))
            .optional()
            .ctx(&path)?;
        if exists.is_some() {
            return Err(StoreError::Conflict("this passkey is already registered".into()));
        }
        let mac = auth.credential_mac(&row.id, row.agent_id, &row.passkey, row.sign_count);
        tx.execute(
            "INSERT INTO webauthn_credentials (id, public_key, sign_count, name, created_at, agent_id, mac)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![row.id, row.passkey.as_bytes(), row.sign_count, row.name, row.created_at, row.agent_id, mac],
        )
        .ctx(&path)?;
        audit_sql::insert(&tx, &path, audit)?;
        tx.commit().ctx(&path)
    }

    /// Stores a passkey's state after a verified assertion (its new signature counter).
    pub fn update_credential(&mut self, id: &str, passkey: &str, sign_count: i64) -> Result<(), StoreError> {
        let auth = self.row_auth()?;
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let agent: Option<Option<i64>> = tx
            .query_row("SELECT agent_id FROM webauthn_credentials WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .ctx(&path)?;
        let Some(agent) = agent else {
            return Err(StoreError::NotFound);
        };
        tx.execute(
            "UPDATE webauthn_credentials SET public_key = ?2, sign_count = ?3, mac = ?4 WHERE id = ?1",
            params![id, passkey.as_bytes(), sign_count, auth.credential_mac(id, agent, passkey, sign_count)],
        )
        .ctx(&path)?;
        tx.commit().ctx(&path)
    }

    /// Removes a passkey; refuses to remove an agent's last one (that agent could never approve
    /// a change again; revoke or demote the agent instead). A passkey whose agent is gone counts
    /// for nobody and may always go.
    pub fn delete_credential(&mut self, id: &str, audit: &AuditRecord) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let owner: Option<Option<i64>> = tx
            .query_row("SELECT agent_id FROM webauthn_credentials WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .ctx(&path)?;
        let Some(owner) = owner else {
            return Err(StoreError::NotFound);
        };
        let (agent_exists, others): (i64, i64) = tx
            .query_row(
                "SELECT (SELECT count(*) FROM agents WHERE id = ?2),
                        (SELECT count(*) FROM webauthn_credentials WHERE id != ?1 AND agent_id = ?2)",
                params![id, owner],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ctx(&path)?;
        if agent_exists > 0 && others == 0 {
            return Err(StoreError::Conflict("cannot remove an agent's last passkey".into()));
        }
        tx.execute("DELETE FROM webauthn_credentials WHERE id = ?1", [id]).ctx(&path)?;
        audit_sql::insert(&tx, &path, audit)?;
        tx.commit().ctx(&path)
    }

    /// Stores a challenge after sweeping expired ones; refuses when too many are outstanding.
    pub fn insert_challenge(&mut self, row: &ChallengeRow, now: i64) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        tx.execute("DELETE FROM webauthn_challenges WHERE expires_at <= ?1", [now]).ctx(&path)?;
        let open: i64 = tx.query_row("SELECT count(*) FROM webauthn_challenges", [], |r| r.get(0)).ctx(&path)?;
        if open >= MAX_OPEN_CHALLENGES {
            return Err(StoreError::Conflict("too many outstanding challenges; retry in a minute".into()));
        }
        tx.execute(
            &format!(
                "INSERT INTO webauthn_challenges ({CHALLENGE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ),
            params![
                row.id,
                row.purpose,
                row.agent_id,
                row.method,
                row.path,
                row.body_sha256,
                row.challenge,
                row.state,
                row.created_at,
                row.expires_at
            ],
        )
        .ctx(&path)?;
        tx.commit().ctx(&path)
    }

    /// Removes a challenge and returns it (expired or not: the caller judges). Single use: a
    /// second take of the same id finds nothing.
    pub fn take_challenge(&mut self, id: &str) -> Result<Option<ChallengeRow>, StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let row = tx
            .query_row(
                &format!("DELETE FROM webauthn_challenges WHERE challenge_id = ?1 RETURNING {CHALLENGE_COLS}"),
                [id],
                challenge_row,
            )
            .optional()
            .ctx(&path)?;
        tx.commit().ctx(&path)?;
        Ok(row)
    }

    /// Deletes expired challenges; returns how many.
    pub fn sweep_challenges(&mut self, now: i64) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let n = tx.execute("DELETE FROM webauthn_challenges WHERE expires_at <= ?1", [now]).ctx(&path)?;
        tx.commit().ctx(&path)?;
        Ok(n)
    }

    pub fn open_challenges(&self) -> Result<i64, StoreError> {
        self.conn.query_row("SELECT count(*) FROM webauthn_challenges", [], |r| r.get(0)).ctx(&self.path)
    }

    /// Stores a new setup code (its hash), replacing any code not yet used.
    pub fn insert_setup_code(
        &mut self,
        code_hash: &str,
        now: i64,
        expires_at: i64,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let mac = self.row_auth()?.setup_code_mac(code_hash);
        let tx = self.write_tx()?;
        tx.execute("DELETE FROM setup_codes WHERE used_at IS NULL", []).ctx(&path)?;
        tx.execute(
            "INSERT INTO setup_codes (code_hash, created_at, expires_at, mac) VALUES (?1, ?2, ?3, ?4)",
            params![code_hash, now, expires_at, mac],
        )
        .ctx(&path)?;
        audit_sql::insert(&tx, &path, audit)?;
        tx.commit().ctx(&path)
    }

    pub fn setup_code(&self, code_hash: &str) -> Result<Option<SetupCodeRow>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT created_at, expires_at, used_at, mac FROM setup_codes WHERE code_hash = ?1",
                [code_hash],
                |r| {
                    let mac: Option<Vec<u8>> = r.get(3)?;
                    Ok((
                        SetupCodeRow {
                            created_at: r.get(0)?,
                            expires_at: r.get(1)?,
                            used_at: r.get(2)?,
                            authentic: false,
                        },
                        mac,
                    ))
                },
            )
            .optional()
            .ctx(&self.path)?;
        Ok(row.map(|(mut code, mac)| {
            code.authentic = self.row_auth().is_ok_and(|a| a.setup_code_ok(code_hash, mac.as_deref()));
            code
        }))
    }

    /// Marks an unused code used; `NotFound` if it was used (or removed) meanwhile.
    pub fn use_setup_code(&mut self, code_hash: &str, now: i64) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let n = tx
            .execute(
                "UPDATE setup_codes SET used_at = ?2 WHERE code_hash = ?1 AND used_at IS NULL",
                params![code_hash, now],
            )
            .ctx(&path)?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().ctx(&path)
    }

    /// Sets a `meta` value once; returns the value now stored (the existing one if any).
    pub fn meta_get_or_set(&mut self, key: &str, value: &str) -> Result<String, StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        tx.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)", params![key, value]).ctx(&path)?;
        let v: String = tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).ctx(&path)?;
        tx.commit().ctx(&path)?;
        Ok(v)
    }

    /// Replaces the owner's wrapped L2 keyring (opaque JSON the browser made).
    pub fn set_keyring(&mut self, keyring: &str, audit: &AuditRecord) -> Result<(), StoreError> {
        if keyring.len() > MAX_KEYRING {
            return Err(StoreError::Conflict("keyring too large".into()));
        }
        let path = self.path.clone();
        let tx = self.write_tx()?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('l2_keyring', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1",
            [keyring],
        )
        .ctx(&path)?;
        audit_sql::insert(&tx, &path, audit)?;
        tx.commit().ctx(&path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (std::path::PathBuf, VaultDb) {
        let dir = std::env::temp_dir().join(format!("clavitor-wa-{}", hex::encode(crate::crypto::random_bytes::<8>())));
        std::fs::create_dir_all(&dir).unwrap();
        let db = VaultDb::open(&dir.join("v.db")).unwrap();
        (dir, db)
    }

    fn challenge(id: &str, expires_at: i64) -> ChallengeRow {
        ChallengeRow {
            id: id.into(),
            purpose: "operation".into(),
            agent_id: Some(1),
            method: "POST".into(),
            path: "/api/agents".into(),
            body_sha256: "0".repeat(64),
            challenge: "c".into(),
            state: "{}".into(),
            created_at: 0,
            expires_at,
        }
    }

    #[test]
    fn challenges_are_single_use_swept_and_atomic_with_their_refusal() {
        let (dir, mut db) = db();
        db.insert_challenge(&challenge("a", 10), 0).unwrap();
        db.insert_challenge(&challenge("b", 1000), 0).unwrap();
        assert_eq!(db.take_challenge("a").unwrap().map(|c| c.expires_at), Some(10));
        assert_eq!(db.take_challenge("a").unwrap(), None, "single use");
        db.insert_challenge(&challenge("c", 2000), 500).unwrap();
        assert_eq!(db.sweep_challenges(1500).unwrap(), 1, "b expired");
        assert_eq!(db.open_challenges().unwrap(), 1);

        // Ok commits every step; Err rolls every step back.
        let r: Result<(), StoreError> = db.atomically(|db| {
            db.take_challenge("c")?;
            Err(StoreError::NotFound)
        });
        assert!(r.is_err());
        assert_eq!(db.open_challenges().unwrap(), 1, "rolled back");
        let r: Result<Option<ChallengeRow>, StoreError> = db.atomically(|db| {
            let taken = db.take_challenge("c")?;
            // A write that fails inside keeps the earlier steps (its own savepoint rolls back).
            assert!(db.update_credential("missing", "{}", 1).is_err());
            Ok(taken)
        });
        assert!(r.unwrap().is_some());
        assert_eq!(db.open_challenges().unwrap(), 0, "committed");
        let nested: Result<(), StoreError> = db.atomically(|db| db.atomically(|_| Ok(())));
        assert!(nested.is_err(), "nesting is refused");

        // A panic inside rolls back and leaves the connection usable.
        db.insert_challenge(&challenge("d", 5000), 0).unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _: Result<(), StoreError> = db.atomically(|db| {
                db.take_challenge("d")?;
                panic!("boom");
            });
        }));
        assert!(caught.is_err());
        assert_eq!(db.open_challenges().unwrap(), 1, "rolled back by the panic");
        assert!(db.take_challenge("d").unwrap().is_some(), "and later writes commit on their own");
        assert_eq!(db.open_challenges().unwrap(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
