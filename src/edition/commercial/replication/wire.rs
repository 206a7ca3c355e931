//! The body of `POST /api/replication/apply`: one batch of one vault's rows, exactly as the
//! primary stored them (entries sealed, every granting row with its MAC), and the conversions
//! to and from the store's rows.
//!
//! What travels: entry rows (tombstones included), the auth snapshot (agents with their token
//! hashes, scopes, roles, flags, expiry and parent; passkeys; the wrapped L2 keyring), audit
//! rows, and the vault's data key sealed to the backup's HPKE key. Never WebAuthn challenges or
//! setup codes: there is no field for them. Binary columns are base64. Never logged.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::store::audit_sql::{AuditRecord, AuditRow};
use crate::store::replica::AuthSnapshot;
use crate::store::vault_db::{AgentRow, EntryRow};
use crate::store::webauthn_db::CredentialRow;

/// The vault name of a heartbeat: a batch that carries no rows and touches no vault.
pub const HEARTBEAT_VAULT: &str = "node";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub source_pop: String,
    pub vault: String,
    pub timestamp: i64,
    pub nonce: String,
    /// The vault's data key, HPKE-sealed to this backup (hex); needed when the backup does not
    /// hold the vault yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_key: Option<String>,
    #[serde(default)]
    pub entries: Vec<WireEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<WireAuth>,
    #[serde(default)]
    pub audit: Vec<WireAudit>,
    /// The divergence check: the primary's [`crate::store::vault_db::VaultDb::entry_digests`]
    /// (first id of each range, SHA-256 hex), sent once it has nothing left to ship.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Vec<(i64, String)>>,
    /// These entries repair a range the check found different: applied whatever their stamp.
    #[serde(default)]
    pub repair: bool,
}

/// Entry ids per range of the divergence digest.
pub const DIGEST_RANGE: i64 = 256;

impl Batch {
    pub fn is_heartbeat(&self) -> bool {
        self.entries.is_empty() && self.auth.is_none() && self.audit.is_empty() && self.digest.is_none()
    }
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Result<Vec<u8>, String> {
    STANDARD.decode(text).map_err(|_| "a binary column is not base64".to_owned())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEntry {
    pub id: i64,
    pub uuid: String,
    pub scopes: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
    pub deleted: bool,
    pub change_seq: i64,
    pub data: String,
    pub mac: Option<String>,
}

impl From<&EntryRow> for WireEntry {
    fn from(r: &EntryRow) -> Self {
        Self {
            id: r.id,
            uuid: r.uuid.clone(),
            scopes: r.scopes.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
            deleted: r.deleted,
            change_seq: r.change_seq,
            data: b64(&r.data),
            mac: r.mac.as_deref().map(b64),
        }
    }
}

impl WireEntry {
    pub fn to_row(&self) -> Result<EntryRow, String> {
        Ok(EntryRow {
            id: self.id,
            uuid: self.uuid.clone(),
            scopes: self.scopes.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
            deleted: self.deleted,
            change_seq: self.change_seq,
            data: unb64(&self.data)?,
            mac: self.mac.as_deref().map(unb64).transpose()?,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireAgent {
    pub id: i64,
    pub token_hash: String,
    pub name: String,
    pub scopes: String,
    pub all_access: bool,
    pub admin: bool,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub parent_id: Option<i64>,
    pub reveal_to_model: bool,
    pub proxy_only_listed: bool,
    pub mac: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WirePasskey {
    pub id: String,
    pub passkey: String,
    pub sign_count: i64,
    pub name: String,
    pub created_at: i64,
    pub agent_id: Option<i64>,
    pub mac: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireAuth {
    /// The primary's `auth_seq` this snapshot was read at; a backup keeps the newest.
    pub seq: i64,
    pub agents: Vec<WireAgent>,
    pub passkeys: Vec<WirePasskey>,
    pub keyring: Option<String>,
}

impl From<&AuthSnapshot> for WireAuth {
    fn from(s: &AuthSnapshot) -> Self {
        Self {
            seq: s.seq,
            agents: s
                .agents
                .iter()
                .map(|a| WireAgent {
                    id: a.id,
                    token_hash: a.token_hash.clone(),
                    name: a.name.clone(),
                    scopes: a.scopes.clone(),
                    all_access: a.all_access,
                    admin: a.admin,
                    created_at: a.created_at,
                    expires_at: a.expires_at,
                    parent_id: a.parent_id,
                    reveal_to_model: a.reveal_to_model,
                    proxy_only_listed: a.proxy_only_listed,
                    mac: a.mac.as_deref().map(b64),
                })
                .collect(),
            passkeys: s
                .passkeys
                .iter()
                .map(|p| WirePasskey {
                    id: p.id.clone(),
                    passkey: p.passkey.clone(),
                    sign_count: p.sign_count,
                    name: p.name.clone(),
                    created_at: p.created_at,
                    agent_id: p.agent_id,
                    mac: p.mac.as_deref().map(b64),
                })
                .collect(),
            keyring: s.keyring.clone(),
        }
    }
}

impl WireAuth {
    pub fn to_snapshot(&self) -> Result<AuthSnapshot, String> {
        let mut agents = Vec::with_capacity(self.agents.len());
        for a in &self.agents {
            agents.push(AgentRow {
                id: a.id,
                token_hash: a.token_hash.clone(),
                name: a.name.clone(),
                scopes: a.scopes.clone(),
                all_access: a.all_access,
                admin: a.admin,
                created_at: a.created_at,
                expires_at: a.expires_at,
                parent_id: a.parent_id,
                reveal_to_model: a.reveal_to_model,
                proxy_only_listed: a.proxy_only_listed,
                mac: a.mac.as_deref().map(unb64).transpose()?,
            });
        }
        let mut passkeys = Vec::with_capacity(self.passkeys.len());
        for p in &self.passkeys {
            passkeys.push(CredentialRow {
                id: p.id.clone(),
                passkey: p.passkey.clone(),
                sign_count: p.sign_count,
                name: p.name.clone(),
                created_at: p.created_at,
                agent_id: p.agent_id,
                mac: p.mac.as_deref().map(unb64).transpose()?,
            });
        }
        Ok(AuthSnapshot { seq: self.seq, agents, passkeys, keyring: self.keyring.clone() })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireAudit {
    pub id: i64,
    pub ts: i64,
    pub actor: String,
    pub agent_id: Option<i64>,
    pub action: String,
    pub entry_id: Option<i64>,
    pub client: String,
    pub outcome: String,
    pub detail: String,
}

impl From<&AuditRow> for WireAudit {
    fn from(r: &AuditRow) -> Self {
        let a = &r.record;
        Self {
            id: r.id,
            ts: a.ts,
            actor: a.actor.to_string(),
            agent_id: a.agent_id,
            action: a.action.to_string(),
            entry_id: a.entry_id,
            client: a.client.clone(),
            outcome: a.outcome.to_string(),
            detail: a.detail.clone(),
        }
    }
}

impl WireAudit {
    pub fn to_row(&self) -> AuditRow {
        AuditRow {
            id: self.id,
            record: AuditRecord {
                ts: self.ts,
                actor: self.actor.clone().into(),
                agent_id: self.agent_id,
                action: self.action.clone().into(),
                entry_id: self.entry_id,
                client: self.client.clone(),
                outcome: self.outcome.clone().into(),
                detail: self.detail.clone(),
            },
        }
    }
}
