//! Vault changes: the one write path, shared by the local operator CLI and the admin API.
//!
//! Each function validates, seals, and commits the change together with its audit row. Callers
//! decide who is allowed to call them (the CLI: whoever holds the master key; the API: an admin
//! token plus a WebAuthn assertion) and pass the matching [`AuditEvent`].

use crate::audit::AuditEvent;
use crate::auth::webauthn::{CredentialId, StoredPasskey};
use crate::auth::{Agent, AgentId, NewToken, ScopeSet};
use crate::crypto::DataKey;
use crate::edition::Capped;
use crate::store::proxy_requests_db::ProxyRequestRow;
use crate::store::vault_db::{AgentChange, AgentRow, EntryRow, NewAgent, VaultDb};
use crate::store::webauthn_db::CredentialRow;

use super::entry::{EntryData, EntryInput};
use super::inject::HostPattern;
use super::{VaultError, VaultId};

pub const MAX_AGENT_NAME: usize = 128;

/// Refuses a create of `delta` rows of `what` past the edition's cap (community: never). Existing
/// rows above a lowered cap stay and keep working; only new ones are refused.
fn within_cap(db: &VaultDb, what: Capped, delta: u64, event: &AuditEvent) -> Result<(), VaultError> {
    let edition = crate::edition::current();
    if !edition.enforces_caps() {
        return Ok(());
    }
    let (entries, agents, passkeys) = db.usage_counts()?;
    let current = match what {
        Capped::EntriesPerVault => entries,
        Capped::AgentsPerVault => agents,
        Capped::PasskeysPerVault => passkeys,
        Capped::Vaults => 0,
    };
    edition.assert_within_cap(what, current, delta, &event.actor.label()).map_err(|e| VaultError::CapExceeded(e.0))
}

fn now() -> i64 {
    crate::store::now_ms()
}

fn seal(vault: &VaultId, key: &DataKey, uuid: &str, data: &EntryData) -> Result<Vec<u8>, VaultError> {
    let json = zeroize::Zeroizing::new(serde_json::to_vec(data).map_err(|e| VaultError::Invalid(e.to_string()))?);
    Ok(key.seal_entry(vault.as_str(), uuid, &json)?)
}

/// Decrypts a row's payload. A row that fails to open is reported as damage, never skipped.
pub fn open_entry(vault: &VaultId, key: &DataKey, row: &EntryRow) -> Result<EntryData, VaultError> {
    let plain = zeroize::Zeroizing::new(
        key.open_entry(vault.as_str(), &row.uuid, &row.data)
            .map_err(|_| VaultError::Corrupt(format!("entry {} does not decrypt", row.id)))?,
    );
    serde_json::from_slice(&plain).map_err(|_| VaultError::Corrupt(format!("entry {} holds invalid JSON", row.id)))
}

pub fn add_entry(
    db: &mut VaultDb,
    vault: &VaultId,
    key: &DataKey,
    input: EntryInput,
    event: &AuditEvent,
) -> Result<i64, VaultError> {
    let chosen = input.uuid.clone();
    let (data, scopes) = input.into_parts()?;
    let uuid = chosen.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let sealed = seal(vault, key, &uuid, &data)?;
    db.in_one_transaction(|db| {
        within_cap(db, Capped::EntriesPerVault, 1, event)?;
        db.insert_entry(&uuid, &scopes.to_db(), &sealed, now(), &event.record()).map_err(VaultError::from_store)
    })
}

/// Adds many entries in one transaction: all of them or none.
pub fn import_entries(
    db: &mut VaultDb,
    vault: &VaultId,
    key: &DataKey,
    inputs: Vec<EntryInput>,
    event: &AuditEvent,
) -> Result<Vec<i64>, VaultError> {
    let mut rows = Vec::with_capacity(inputs.len());
    for (n, input) in inputs.into_iter().enumerate() {
        let chosen = input.uuid.clone();
        let (data, scopes) = input.into_parts().map_err(|e| VaultError::Invalid(format!("entry {}: {e}", n + 1)))?;
        let uuid = chosen.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let sealed = seal(vault, key, &uuid, &data)?;
        rows.push((uuid, scopes.to_db(), sealed));
    }
    db.in_one_transaction(|db| {
        within_cap(db, Capped::EntriesPerVault, rows.len() as u64, event)?;
        db.insert_entries(&rows, now(), &event.record()).map_err(VaultError::from_store)
    })
}

/// Replaces an entry; `expected_version` guards against overwriting a concurrent change.
pub fn update_entry(
    db: &mut VaultDb,
    vault: &VaultId,
    key: &DataKey,
    id: i64,
    input: EntryInput,
    expected_version: Option<i64>,
    event: &AuditEvent,
) -> Result<i64, VaultError> {
    let chosen = input.uuid.clone();
    let (data, scopes) = input.into_parts()?;
    let row = db.entry(id)?.filter(|r| !r.deleted).ok_or(VaultError::NotFound)?;
    if chosen.is_some_and(|u| u != row.uuid) {
        return Err(VaultError::Invalid("uuid is not this entry's uuid (an entry's uuid never changes)".into()));
    }
    let sealed = seal(vault, key, &row.uuid, &data)?;
    db.update_entry(id, &scopes.to_db(), &sealed, expected_version, now(), &event.record())
        .map_err(VaultError::from_store)
}

/// Deletes an entry (a tombstone) and keeps its title, sealed, for the audit view.
pub fn delete_entry(
    db: &mut VaultDb,
    vault: &VaultId,
    key: &DataKey,
    id: i64,
    event: &AuditEvent,
) -> Result<(), VaultError> {
    let sealed_title = match db.entry(id)?.filter(|r| !r.deleted) {
        Some(row) => {
            let title = open_entry(vault, key, &row).map(|d| d.title).unwrap_or_default();
            Some(key.seal_entry(vault.as_str(), &gone_title_binding(id), title.as_bytes())?)
        }
        None => None,
    };
    db.in_one_transaction(|db| {
        if let Some(sealed) = &sealed_title {
            db.remember_gone_entry(id, sealed, now()).map_err(VaultError::from_store)?;
        }
        db.delete_entry(id, now(), &event.record()).map_err(VaultError::from_store)
    })
}

/// The associated data a gone entry's title is sealed with: its own, so the blob opens
/// nowhere else (not as any entry's data).
fn gone_title_binding(id: i64) -> String {
    format!("gone-entry-title/{id}")
}

/// The names of gone items: (agent id → name, entry id → title).
pub type GoneNames = (std::collections::HashMap<i64, String>, std::collections::HashMap<i64, String>);

/// [`GoneNames`] of the vault. A title that does not open is left out.
pub fn gone_names(db: &VaultDb, vault: &VaultId, key: &DataKey) -> Result<GoneNames, VaultError> {
    let (mut agents, mut entries) = (std::collections::HashMap::new(), std::collections::HashMap::new());
    for g in db.gone_names()? {
        match g {
            crate::store::gone_names_db::GoneName::Agent { id, name } => {
                agents.insert(id, name);
            }
            crate::store::gone_names_db::GoneName::Entry { id, sealed_title } => {
                if let Ok(t) = key.open_entry(vault.as_str(), &gone_title_binding(id), &sealed_title) {
                    entries.insert(id, String::from_utf8_lossy(&t).into_owned());
                }
            }
        }
    }
    Ok((agents, entries))
}

/// Live (non-deleted) entries with their decrypted data, in id order.
pub fn list_entries(db: &VaultDb, vault: &VaultId, key: &DataKey) -> Result<Vec<(EntryRow, EntryData)>, VaultError> {
    db.entries_since(0)?
        .into_iter()
        .filter(|r| !r.deleted)
        .map(|r| open_entry(vault, key, &r).map(|d| (r, d)))
        .collect::<Result<Vec<_>, _>>()
        .map(|mut v| {
            v.sort_by_key(|(r, _)| r.id);
            v
        })
}

pub(crate) fn check_name(name: &str) -> Result<(), VaultError> {
    if name.trim().is_empty() || name.chars().count() > MAX_AGENT_NAME || name.chars().any(char::is_control) {
        return Err(VaultError::Invalid(format!("agent name must be 1 to {MAX_AGENT_NAME} characters")));
    }
    Ok(())
}

/// Creates an agent and its token. The agent always holds its own scope besides `extra_scopes`.
/// `expires_at` (unix seconds), if given, must be in the future.
pub fn add_agent(
    db: &mut VaultDb,
    name: &str,
    extra_scopes: &[String],
    (all_access, admin): (bool, bool),
    expires_at: Option<i64>,
    proxy_only_listed: bool,
    event: &AuditEvent,
) -> Result<(Agent, NewToken), VaultError> {
    check_name(name)?;
    if expires_at.is_some_and(|t| t <= crate::store::now_secs()) {
        return Err(VaultError::Invalid("expires_at must be in the future (unix seconds)".into()));
    }
    let extra = ScopeSet::from_strs(extra_scopes.iter().map(String::as_str))?;
    let token = NewToken::generate();
    let row = db.in_one_transaction(|db| {
        within_cap(db, Capped::AgentsPerVault, 1, event)?;
        db.insert_agent(
            &NewAgent {
                name,
                token_hash: token.hash().as_str(),
                all_access,
                admin,
                created_at: now(),
                expires_at,
                parent_id: None,
                reveal_to_model: false,
                proxy_only_listed,
            },
            |id| {
                let mut scopes = extra.clone();
                scopes.insert(AgentId(id).own_scope());
                scopes.to_db()
            },
            &event.record(),
        )
        .map_err(VaultError::from_store)
    })?;
    Ok((agent_from_row(&row)?, token))
}

/// Most agents one batch creates or revokes (bulk agents, commercial).
pub const MAX_BATCH_AGENTS: usize = 500;

/// One agent of a batch create, as shape-checked by the caller.
#[derive(Debug, Clone)]
pub struct NewAgentSpec {
    pub name: String,
    pub scopes: Vec<String>,
    pub all_access: bool,
    pub admin: bool,
    pub expires_at: Option<i64>,
    pub proxy_only_listed: bool,
}

/// Checks a batch before anything is spent on it (names, scopes, expiry, size), naming the
/// first bad item (1-based).
pub fn check_agent_specs(specs: &[NewAgentSpec]) -> Result<(), VaultError> {
    if specs.is_empty() || specs.len() > MAX_BATCH_AGENTS {
        return Err(VaultError::Invalid(format!("a batch holds 1 to {MAX_BATCH_AGENTS} agents, not {}", specs.len())));
    }
    let now = crate::store::now_secs();
    for (n, s) in specs.iter().enumerate() {
        let at = |e: VaultError| VaultError::Invalid(format!("agent {}: {e}", n + 1));
        check_name(&s.name).map_err(at)?;
        ScopeSet::from_strs(s.scopes.iter().map(String::as_str)).map_err(|e| at(e.into()))?;
        if s.expires_at.is_some_and(|t| t <= now) {
            return Err(at(VaultError::Invalid("expires_at must be in the future (unix seconds)".into())));
        }
    }
    Ok(())
}

/// Creates every agent of `specs` with its token, or none: one savepoint, the cap counted for
/// the whole batch in it, one audit row per agent. Ids are handed out in order from
/// `next_agent_id` (the authority rules were checked against exactly those ids in this
/// transaction; a different id refuses the batch).
pub fn add_agents(
    db: &mut VaultDb,
    specs: &[NewAgentSpec],
    event: &AuditEvent,
) -> Result<Vec<(Agent, NewToken)>, VaultError> {
    check_agent_specs(specs)?;
    let record = event.record();
    db.all_or_nothing(|db| {
        within_cap(db, Capped::AgentsPerVault, specs.len() as u64, event)?;
        let first = db.next_agent_id()?;
        let mut out = Vec::with_capacity(specs.len());
        for (n, s) in specs.iter().enumerate() {
            let extra = ScopeSet::from_strs(s.scopes.iter().map(String::as_str))?;
            let token = NewToken::generate();
            let row = db
                .insert_agent(
                    &NewAgent {
                        name: &s.name,
                        token_hash: token.hash().as_str(),
                        all_access: s.all_access,
                        admin: s.admin,
                        created_at: now(),
                        expires_at: s.expires_at,
                        parent_id: None,
                        reveal_to_model: false,
                        proxy_only_listed: s.proxy_only_listed,
                    },
                    |id| {
                        let mut scopes = extra.clone();
                        scopes.insert(AgentId(id).own_scope());
                        scopes.to_db()
                    },
                    &record,
                )
                .map_err(VaultError::from_store)?;
            if row.id != first.saturating_add(n as i64) {
                return Err(VaultError::Conflict("agent ids moved during the batch; nothing was created".into()));
            }
            out.push((agent_from_row(&row)?, token));
        }
        Ok(out)
    })
}

/// Revokes every agent of `ids` (and what was derived from each), or none: one savepoint, an
/// audit row per agent. An id that does not exist (also one already revoked with an earlier
/// item's parent) refuses the batch. Returns, per id, the derived agents revoked with it.
pub fn revoke_agents(
    db: &mut VaultDb,
    ids: &[AgentId],
    event: &AuditEvent,
) -> Result<Vec<(AgentId, Vec<AgentId>)>, VaultError> {
    db.all_or_nothing(|db| {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push((*id, revoke_agent(db, *id, event)?));
        }
        Ok(out)
    })
}

/// What may change about an agent. Scopes given here replace the extra scopes; the agent's own
/// scope is kept regardless.
#[derive(Debug, Default, Clone)]
pub struct AgentUpdate {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub all_access: Option<bool>,
    pub admin: Option<bool>,
    pub rotate_token: bool,
    pub reveal_to_model: Option<bool>,
    pub proxy_only_listed: Option<bool>,
}

pub fn update_agent(
    db: &mut VaultDb,
    id: AgentId,
    update: &AgentUpdate,
    event: &AuditEvent,
) -> Result<(Agent, Option<NewToken>), VaultError> {
    if let Some(name) = &update.name {
        check_name(name)?;
    }
    let scopes = match &update.scopes {
        Some(list) => {
            let mut set = ScopeSet::from_strs(list.iter().map(String::as_str))?;
            set.insert(id.own_scope());
            Some(set.to_db())
        }
        None => None,
    };
    let token = update.rotate_token.then(NewToken::generate);
    let change = AgentChange {
        name: update.name.clone(),
        scopes,
        all_access: update.all_access,
        admin: update.admin,
        token_hash: token.as_ref().map(|t| t.hash().as_str().to_owned()),
        reveal_to_model: update.reveal_to_model,
        proxy_only_listed: update.proxy_only_listed,
    };
    let row = db.update_agent(id.0, &change, &event.record()).map_err(VaultError::from_store)?;
    Ok((agent_from_row(&row)?, token))
}

/// Revokes an agent and, in the same transaction, every token derived from it (recursively).
/// Returns the derived agents revoked with it.
pub fn revoke_agent(db: &mut VaultDb, id: AgentId, event: &AuditEvent) -> Result<Vec<AgentId>, VaultError> {
    Ok(db.delete_agent(id.0, &event.record()).map_err(VaultError::from_store)?.into_iter().map(AgentId).collect())
}

/// Longest life of a derived token.
pub const MAX_DERIVED_TTL_SECS: u64 = 24 * 60 * 60;
/// Unexpired derived tokens at a time in the tree under one agent that was not itself derived
/// (its children, theirs, …): an agent's token cannot grow the vault file without bound, also
/// not through a chain of derivations.
pub const MAX_LIVE_DERIVED: i64 = 100;

/// A derived token as the authority rules have accepted it (see
/// `vault::authority::check_derive`): the child's scopes (without its own, which is added
/// here), flags and absolute expiry.
#[derive(Debug, Clone)]
pub struct Derivation {
    pub name: String,
    pub scopes: ScopeSet,
    pub all_access: bool,
    pub reveal_to_model: bool,
    /// Always the caller's: a derived token is never less restricted at the proxy.
    pub proxy_only_listed: bool,
    pub expires_at: i64,
}

/// Creates the derived agent (never admin) under `parent`. Runs inside the transaction in
/// which the rules were checked.
pub fn derive_agent(
    db: &mut VaultDb,
    parent: AgentId,
    d: &Derivation,
    event: &AuditEvent,
) -> Result<(Agent, NewToken), VaultError> {
    check_name(&d.name)?;
    let token = NewToken::generate();
    let row = db
        .insert_agent(
            &NewAgent {
                name: &d.name,
                token_hash: token.hash().as_str(),
                all_access: d.all_access,
                admin: false,
                created_at: now(),
                expires_at: Some(d.expires_at),
                parent_id: Some(parent.0),
                reveal_to_model: d.reveal_to_model,
                proxy_only_listed: d.proxy_only_listed,
            },
            |id| {
                let mut scopes = d.scopes.clone();
                scopes.insert(AgentId(id).own_scope());
                scopes.to_db()
            },
            &event.record(),
        )
        .map_err(VaultError::from_store)?;
    Ok((agent_from_row(&row)?, token))
}

pub fn agent_from_row(row: &AgentRow) -> Result<Agent, VaultError> {
    Ok(Agent {
        id: AgentId(row.id),
        name: row.name.clone(),
        scopes: ScopeSet::parse(&row.scopes)
            .map_err(|_| VaultError::Corrupt(format!("agent {} has malformed scopes", row.id)))?,
        all_access: row.all_access,
        admin: row.admin,
        created_at: row.created_at,
        expires_at: row.expires_at,
        parent_id: row.parent_id.map(AgentId),
        reveal_to_model: row.reveal_to_model,
        proxy_only_listed: row.proxy_only_listed,
    })
}

/// Replaces only an entry's scopes (the sealed content is re-sealed unchanged).
pub fn set_entry_scopes(
    db: &mut VaultDb,
    vault: &VaultId,
    key: &DataKey,
    id: i64,
    scopes: &[String],
    event: &AuditEvent,
) -> Result<i64, VaultError> {
    let scopes = ScopeSet::from_strs(scopes.iter().map(String::as_str))?;
    let row = db.entry(id)?.filter(|r| !r.deleted).ok_or(VaultError::NotFound)?;
    let data = open_entry(vault, key, &row)?;
    let sealed = seal(vault, key, &row.uuid, &data)?;
    db.update_entry(id, &scopes.to_db(), &sealed, None, now(), &event.record()).map_err(VaultError::from_store)
}

pub const MAX_PASSKEY_NAME: usize = 64;

/// The registered passkeys, parsed.
/// Passkey rows whose MAC fails (written into the file without the master key, or moved to
/// another agent) are left out and reported: they approve nothing.
pub fn passkeys(db: &VaultDb) -> Result<Vec<(CredentialRow, StoredPasskey)>, VaultError> {
    let (authentic, forged): (Vec<_>, Vec<_>) = db.credentials()?.into_iter().partition(|r| db.credential_authentic(r));
    if !forged.is_empty() {
        crate::edition::alert(
            "vault_rows_forged",
            "passkey rows fail their integrity check (changed without the master key) and approve nothing",
            &[("rows", forged.iter().map(|r| format!("passkey {}", r.id)).collect::<Vec<_>>().join(", "))],
        );
    }
    authentic
        .into_iter()
        .map(|row| {
            let pk = StoredPasskey::from_stored(&row.passkey, row.sign_count)
                .map_err(|_| VaultError::Corrupt(format!("passkey {} is unreadable", row.id)))?;
            Ok((row, pk))
        })
        .collect()
}

/// Stores a newly verified passkey as `agent`'s (only that agent's token can use it).
pub fn add_passkey(
    db: &mut VaultDb,
    passkey: &StoredPasskey,
    agent: AgentId,
    name: &str,
    event: &AuditEvent,
) -> Result<CredentialId, VaultError> {
    if name.chars().count() > MAX_PASSKEY_NAME || name.chars().any(char::is_control) {
        return Err(VaultError::Invalid(format!("passkey name must be at most {MAX_PASSKEY_NAME} characters")));
    }
    let id = passkey.id();
    let row = CredentialRow {
        id: id.as_str().to_owned(),
        passkey: passkey.to_stored().map_err(|e| VaultError::Invalid(e.to_string()))?,
        sign_count: passkey.sign_count,
        name: name.to_owned(),
        created_at: now(),
        agent_id: Some(agent.0),
        mac: None,
    };
    db.in_one_transaction(|db| {
        within_cap(db, Capped::PasskeysPerVault, 1, event)?;
        db.insert_credential(&row, &event.record()).map_err(VaultError::from_store)
    })?;
    Ok(id)
}

/// Removes a passkey: never an agent's last one, and never the only thing that unwraps the L2
/// key (L2 data must not become unreadable by a click).
pub fn remove_passkey(db: &mut VaultDb, id: &CredentialId, event: &AuditEvent) -> Result<(), VaultError> {
    if let Some(ring) = stored_keyring(db)? {
        let wraps = keyring_wraps(&ring);
        let registered: Vec<String> = db.credentials()?.into_iter().map(|c| c.id).collect();
        let unlocks = |w: &Wrap| match w {
            Wrap::Passphrase => true,
            Wrap::Prf(cred) => cred != id.as_str() && registered.iter().any(|r| r == cred),
            Wrap::Other => false,
        };
        let wraps_this = wraps.iter().any(|w| matches!(w, Wrap::Prf(c) if c == id.as_str()));
        if wraps_this && !wraps.iter().any(unlocks) {
            return Err(VaultError::Conflict(
                "this passkey is the only key to your L2 (browser-encrypted) fields; removing it would make them \
                 unreadable. First add another way to unlock them on the Passkeys page (\"Add a recovery passphrase\", \
                 or \"Let this passkey unlock L2\" signed in with another passkey), then remove this one"
                    .into(),
            ));
        }
    }
    db.delete_credential(id.as_str(), &event.record()).map_err(VaultError::from_store)
}

/// A wrap of the L2 key, as far as the server reads the browser's keyring.
enum Wrap {
    Prf(String),
    Passphrase,
    Other,
}

fn stored_keyring(db: &VaultDb) -> Result<Option<serde_json::Value>, VaultError> {
    match db.meta("l2_keyring")? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|_| VaultError::Corrupt("the stored L2 keyring is not JSON".into())),
    }
}

fn keyring_wraps(ring: &serde_json::Value) -> Vec<Wrap> {
    let Some(wraps) = ring.get("wraps").and_then(|w| w.as_array()) else { return Vec::new() };
    wraps
        .iter()
        .map(|w| match (w.get("kind").and_then(|k| k.as_str()), w.get("credential_id").and_then(|c| c.as_str())) {
            (Some("prf"), Some(cred)) => Wrap::Prf(cred.to_owned()),
            (Some("passphrase"), _) => Wrap::Passphrase,
            _ => Wrap::Other,
        })
        .collect()
}

/// Stores the owner's wrapped L2 keyring: JSON the browser made (it holds only wrapped keys and
/// the public parameters to unwrap them). The server reads just enough to refuse a keyring
/// that would lock the owner out of L2 data: one without a usable wrap, or one that keeps none
/// of the stored wraps (which would mean a different L2 key, and every stored L2 value lost).
pub fn set_keyring(db: &mut VaultDb, keyring: &serde_json::Value, event: &AuditEvent) -> Result<(), VaultError> {
    let text = keyring.to_string();
    if !keyring.is_object() || text.len() > crate::store::webauthn_db::MAX_KEYRING {
        return Err(VaultError::Invalid("the keyring must be a JSON object of at most 16 KiB".into()));
    }
    if !keyring_wraps(keyring).iter().any(|w| !matches!(w, Wrap::Other)) {
        return Err(VaultError::Invalid(
            "the keyring must hold at least one wrap (kind \"prf\" with a credential_id, or \"passphrase\")".into(),
        ));
    }
    if let Some(old) = stored_keyring(db)? {
        let kept = |w: &serde_json::Value| {
            keyring["wraps"].as_array().is_some_and(|new| {
                new.iter().any(|n| n.get("wrapped").is_some() && n.get("wrapped") == w.get("wrapped"))
            })
        };
        let old_wraps = old.get("wraps").and_then(|w| w.as_array()).cloned().unwrap_or_default();
        if !old_wraps.is_empty() && !old_wraps.iter().any(kept) {
            return Err(VaultError::Conflict(
                "the new keyring keeps none of the stored wraps of the L2 key: every L2 value would become \
                 unreadable. Add or remove single wraps instead"
                    .into(),
            ));
        }
    }
    db.set_keyring(&text, &event.record()).map_err(VaultError::from_store)
}

/// Pending access requests one agent may hold at a time.
pub const MAX_PENDING_REQUESTS: i64 = 20;
/// Longest reason an agent may give, in characters.
pub const MAX_REQUEST_REASON: usize = 500;

/// Records an agent's request for access to `host` through the proxy (issue 18 §5). It grants
/// nothing: the owner grants by writing an entry with an inject rule for the host, with a
/// passkey. `host` is checked like a rule's host; `reason` is at most
/// [`MAX_REQUEST_REASON`] characters without control characters other than newlines and tabs.
pub fn request_proxy_access(
    db: &mut VaultDb,
    agent: AgentId,
    host: &str,
    reason: &str,
    event: &AuditEvent,
) -> Result<(ProxyRequestRow, bool), VaultError> {
    let host =
        HostPattern::parse(host.trim()).map_err(|super::entry::EntryError::Invalid(m)| VaultError::Invalid(m))?;
    let reason = reason.trim();
    if reason.chars().count() > MAX_REQUEST_REASON || reason.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(VaultError::Invalid(format!(
            "reason must be at most {MAX_REQUEST_REASON} characters without control characters"
        )));
    }
    db.add_proxy_request(
        agent.0,
        host.as_str(),
        reason,
        crate::store::now_secs(),
        MAX_PENDING_REQUESTS,
        &event.record(),
    )
    .map_err(VaultError::from_store)
}

/// Removes a pending access request (dismissed, or granted by a rule written separately).
pub fn dismiss_proxy_request(db: &mut VaultDb, id: i64, event: &AuditEvent) -> Result<ProxyRequestRow, VaultError> {
    db.delete_proxy_request(id, &event.record()).map_err(VaultError::from_store)
}
