//! Browser-extension sessions (issue 17 §3): a short-lived token the owner's extension reads
//! with, created by a WebAuthn-gated write (`api::sessions`).
//!
//! A session is a derived agent (`ops::derive_agent`) of the admin whose passkey approved it:
//! the same scopes and all-access flag, never admin, never `reveal_to_model`, expiring, revoked
//! with its parent and swept by the expiry watcher like every derived token; the derivation
//! rules (`authority::check_derive`) are checked inside the gate's transaction on the caller's
//! fresh row. It is marked (`store::sessions_db`) so the agents page can say what it is; the
//! mark grants nothing. This module must never create an admin or widen what the caller reads.

use crate::audit::AuditEvent;
use crate::auth::{Agent, AgentId, NewToken};
use crate::store::vault_db::VaultDb;

use super::authority::{self, DeriveAsk};
use super::{VaultError, live::LiveVault, ops};

/// Default life of a session: 12 hours (`--extension-session-ttl-secs`).
pub const DEFAULT_SESSION_TTL_SECS: u64 = 12 * 60 * 60;
/// Bounds of `--extension-session-ttl-secs`: a derived token lives at most 24 hours.
pub const MIN_SESSION_TTL_SECS: u64 = 60;
pub const MAX_SESSION_TTL_SECS: u64 = ops::MAX_DERIVED_TTL_SECS;
/// The name every session's agent carries (plus the owner's label, if any).
pub const SESSION_NAME: &str = "Browser extension";

/// Creates the session's agent under `caller` (the admin the gate verified), living `ttl_secs`
/// but never past the caller's own expiry. Runs inside the gate's transaction.
pub fn create(
    db: &mut VaultDb,
    caller: AgentId,
    label: &str,
    ttl_secs: u64,
    event: &AuditEvent,
) -> Result<(Agent, NewToken), VaultError> {
    let now = crate::store::now_secs();
    let row = db.agent(caller.0)?.ok_or(VaultError::NotFound)?;
    let parent = ops::agent_from_row(&row)?;
    let ttl_secs = match parent.expires_at {
        Some(end) => ttl_secs.min(end.saturating_sub(now).max(0) as u64),
        None => ttl_secs,
    };
    if ttl_secs == 0 {
        return Err(VaultError::Conflict("the signing-in agent expires now".into()));
    }
    let name = if label.trim().is_empty() { SESSION_NAME.to_owned() } else { format!("{SESSION_NAME}: {label}") };
    let ask =
        DeriveAsk { name, ttl_secs, scopes: None, all_access: parent.all_access, reveal_to_model: false, admin: false };
    let derivation = match authority::check_derive(db, &parent, &ask, now)? {
        Ok(d) => d,
        Err(rule) => return Err(VaultError::Conflict(format!("no session: {}", rule.code()))),
    };
    let (agent, token) = ops::derive_agent(db, parent.id, &derivation, event)?;
    db.mark_extension_session(agent.id.0, now)?;
    Ok((agent, token))
}

impl LiveVault {
    /// The ids of the agents that are extension sessions (for the agents page).
    pub fn extension_sessions(&self) -> Result<Vec<i64>, VaultError> {
        Ok(self.db().extension_sessions()?)
    }
}
