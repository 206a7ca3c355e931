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

#[derive(Clone, Serialize, Deserialize)]
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

#[derive(Clone, Serialize, Deserialize)]
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

/// The auth snapshot, or one part of it: a snapshot too big for one body travels in `parts`
/// requests, each with a slice of the agents and passkeys (part 0 also the keyring), which the
/// backup stages and applies whole once the last arrives (see `staging`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireAuth {
    /// The primary's `auth_seq` this snapshot was read at; a backup keeps the newest.
    pub seq: i64,
    pub agents: Vec<WireAgent>,
    pub passkeys: Vec<WirePasskey>,
    pub keyring: Option<String>,
    /// This part's index, 0-based (0 for a whole snapshot).
    pub part: u32,
    /// How many parts the snapshot travels in (1: whole).
    pub parts: u32,
}

impl WireAuth {
    /// Splits this (whole) snapshot into parts whose body, as `body_len` measures a batch that
    /// carries one, stays within `room`, packing agents then passkeys in order; the keyring goes
    /// with part 0. A single row larger than the room gets a part of its own (and the backup's
    /// 413). `body_len` is called on the empty part once; rows are measured one by one.
    pub fn split(self, room: usize, body_len: impl Fn(&WireAuth) -> usize) -> Vec<WireAuth> {
        // The part numbers are measured at their widest.
        let empty = |keyring: Option<String>| WireAuth {
            seq: self.seq,
            agents: Vec::new(),
            passkeys: Vec::new(),
            keyring,
            part: u32::MAX,
            parts: u32::MAX,
        };
        let bare = body_len(&empty(None));
        let first = body_len(&empty(self.keyring.clone()));
        let len = |v: serde_json::Result<Vec<u8>>| v.map_or(usize::MAX, |b| b.len());
        let mut out = Vec::new();
        let mut cur = empty(self.keyring.clone());
        let mut used = first;
        // One row more: its length, plus a comma unless it opens its list.
        let fits = |used: usize, n: usize, list_empty: bool| {
            used.saturating_add(n).saturating_add(usize::from(!list_empty)) <= room
        };
        for a in self.agents {
            let n = len(serde_json::to_vec(&a));
            let has_rows = !cur.agents.is_empty() || !cur.passkeys.is_empty();
            if has_rows && !fits(used, n, cur.agents.is_empty()) {
                out.push(std::mem::replace(&mut cur, empty(None)));
                used = bare;
            }
            used = used.saturating_add(n).saturating_add(usize::from(!cur.agents.is_empty()));
            cur.agents.push(a);
        }
        for p in self.passkeys {
            let n = len(serde_json::to_vec(&p));
            let has_rows = !cur.agents.is_empty() || !cur.passkeys.is_empty();
            if has_rows && !fits(used, n, cur.passkeys.is_empty()) {
                out.push(std::mem::replace(&mut cur, empty(None)));
                used = bare;
            }
            used = used.saturating_add(n).saturating_add(usize::from(!cur.passkeys.is_empty()));
            cur.passkeys.push(p);
        }
        out.push(cur);
        let count = u32::try_from(out.len()).unwrap_or(u32::MAX);
        for (i, p) in out.iter_mut().enumerate() {
            p.part = u32::try_from(i).unwrap_or(u32::MAX);
            p.parts = count;
        }
        out
    }
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
            part: 0,
            parts: 1,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: i64) -> WireAgent {
        WireAgent {
            id,
            token_hash: format!("{id:064x}"),
            name: format!("agent-{id}"),
            scopes: String::new(),
            all_access: false,
            admin: false,
            created_at: 0,
            expires_at: None,
            parent_id: None,
            reveal_to_model: false,
            proxy_only_listed: false,
            mac: Some(b64(&[7; 32])),
        }
    }

    fn passkey(id: i64) -> WirePasskey {
        WirePasskey {
            id: format!("cred-{id}"),
            passkey: "{}".into(),
            sign_count: 0,
            name: "key".into(),
            created_at: 0,
            agent_id: Some(id),
            mac: None,
        }
    }

    #[test]
    fn a_split_snapshot_keeps_every_row_once_in_order_each_part_within_the_room() {
        let whole = WireAuth {
            seq: 9,
            agents: (1..=120).map(agent).collect(),
            passkeys: (1..=30).map(passkey).collect(),
            keyring: Some(format!("{{\"wraps\":[\"{}\"]}}", "k".repeat(500))),
            part: 0,
            parts: 1,
        };
        let overhead = 300;
        let len = |p: &WireAuth| overhead + serde_json::to_vec(p).map_or(usize::MAX, |b| b.len());
        let room = 4096;
        let parts = whole.clone().split(room, len);
        assert!(parts.len() >= 3, "{}", parts.len());
        for (i, p) in parts.iter().enumerate() {
            assert!(len(p) <= room, "part {i}: {} bytes", len(p));
            assert_eq!((p.part as usize, p.parts as usize, p.seq), (i, parts.len(), 9));
            assert_eq!(p.keyring.is_some(), i == 0, "the keyring goes with part 0 only");
            assert!(!p.agents.is_empty() || !p.passkeys.is_empty(), "no empty part");
        }
        let agents: Vec<i64> = parts.iter().flat_map(|p| p.agents.iter().map(|a| a.id)).collect();
        let passkeys: Vec<&str> = parts.iter().flat_map(|p| p.passkeys.iter().map(|k| k.id.as_str())).collect();
        assert_eq!(agents, (1..=120).collect::<Vec<_>>());
        assert_eq!(passkeys, whole.passkeys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>());
        // One that fits stays whole.
        let small = WireAuth { agents: vec![agent(1)], passkeys: Vec::new(), ..whole.clone() };
        let one = small.split(room, len);
        assert_eq!((one.len(), one[0].part, one[0].parts), (1, 0, 1));
    }
}
