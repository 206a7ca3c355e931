//! Who may change what: the rules that keep an admin from granting more than it holds.
//!
//! Owns the authority rules for every admin write ([`check`]) and for what an admin's reads show
//! ([`lists_agent`], [`LiveVault::audit_page_for`]). The owner (all access + admin) passes every
//! rule. A scoped admin (admin without all access) passes only what stays inside what it can
//! itself read:
//!
//! - **Grants.** It never sets `all_access` or `admin` on anyone (itself included; re-stating a
//!   value the target already has is no change), and gives only scopes it holds.
//! - **Agents it may change or revoke.** Itself, or an agent that is neither all-access nor
//!   admin, whose granted scopes it holds, and that reads no entry the admin cannot read. The
//!   last clause covers the agent's own scope (`format!("{:04x}", id)`), which the admin never
//!   holds: an entry the owner tagged with it would otherwise be reachable by rotating that
//!   agent's token.
//! - **Creating an agent.** The same, for the agent it would become: the new id is known inside
//!   the write transaction, and if any entry the admin cannot read already carries the scope
//!   that id produces, the creation is refused.
//! - **Itself.** Only narrower: its new scopes are a subset of its current ones; it may drop
//!   its own admin flag (the last-admin rule of the store still applies).
//! - **Entries.** It edits, re-scopes or deletes only entries it can read (a missing entry is
//!   refused the same way, so ids say nothing), and the scopes it sets are non-empty (empty is
//!   owner-only) and each either its own or already on the entry (keeping a scope another team
//!   shares grants nothing; adding one would).
//! - **Owner business.** The L2 keyring and other agents' passkeys.
//! - **Batches** (bulk agents, commercial): every item passes the rule its single write would,
//!   a created one with the id it will get; one refusal refuses the batch.
//!
//! **Derived tokens** (`POST /api/tokens/derive`, bearer only, no passkey: it can only narrow;
//! [`check_derive`]). Any agent may derive a token from its own: its scopes a subset of the
//! caller's (a caller with all access may name any), never admin, all access or
//! `reveal_to_model` only if the caller has it and asks, a life of 1 s to 24 h that ends no
//! later than the caller's own, at most [`ops::MAX_LIVE_DERIVED`] unexpired derived tokens at a
//! time in the tree under one non-derived agent (so chains of derivations cannot multiply it),
//! and, like a created agent, the child's own scope may not reach an entry the caller cannot
//! read. The child is revoked with its parent (`store`).
//!
//! Everything is evaluated by `vault::gate` inside the write's transaction, against rows read
//! there (never the in-memory cache). It changes nothing and holds no SQL.

use super::live::LiveVault;
use super::{VaultError, ops};
use crate::auth::{Agent, AgentId, ScopeSet};
use crate::store::audit_sql::{AuditFilter, AuditRow};
use crate::store::vault_db::VaultDb;

/// What an admin write is about to do, as far as the rules care.
#[derive(Debug, Clone)]
pub enum Intent {
    CreateEntry {
        scopes: Vec<String>,
    },
    /// A full update (content and scopes) or a scopes-only change.
    UpdateEntry {
        id: i64,
        scopes: Vec<String>,
    },
    DeleteEntry {
        id: i64,
    },
    CreateAgent(AgentAsk),
    /// Name changes and token rotation do not widen anything; they still need authority over
    /// the target (a rotated token is handed to the caller).
    UpdateAgent {
        id: AgentId,
        scopes: Option<Vec<String>>,
        all_access: Option<bool>,
        admin: Option<bool>,
        /// `Some(false)` lifts the proxy restriction: a scoped admin cannot lift its own.
        proxy_only_listed: Option<bool>,
    },
    RevokeAgent {
        id: AgentId,
    },
    /// Identity-provider provisioning settings and grant approvals (commercial): the owner's.
    Provisioning,
    AddPasskey {
        for_agent: AgentId,
    },
    RemovePasskey {
        id: String,
    },
    SetKeyring,
    /// Dismissing an agent's access request: only of an agent the admin lists.
    DismissProxyRequest {
        id: i64,
    },
    /// Many agents created in one write (bulk, commercial): each item is checked as a
    /// `CreateAgent` with the id it will get (they are inserted in order, in this transaction).
    CreateAgents(Vec<AgentAsk>),
    /// Many agents revoked in one write (bulk, commercial): each as a `RevokeAgent`.
    RevokeAgents(Vec<AgentId>),
}

/// One agent of a bulk create, as far as the rules care.
#[derive(Debug, Clone)]
pub struct AgentAsk {
    pub scopes: Vec<String>,
    pub all_access: bool,
    pub admin: bool,
    /// Whether the new agent may open proxy tunnels only to hosts its entries list.
    pub proxy_only_listed: bool,
}

/// A rule that refused. The code is the 403's `reason` and goes to the audit row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    GrantAllAccess,
    GrantAdmin,
    ScopeNotHeld,
    SelfOnlyNarrower,
    AgentHasAllAccess,
    AgentIsAdmin,
    AgentOutsideScopes,
    NewAgentReadsMore,
    EntryOutsideScopes,
    EntryOwnerOnly,
    KeyringOwnerOnly,
    PasskeyOfAnotherAgent,
    DeriveAdmin,
    DeriveAllAccess,
    DeriveScopeNotHeld,
    DeriveReveal,
    ExpiryExceedsParent,
    DerivedReadsMore,
    TooManyDerived,
    SelfLiftProxyOnly,
    LiftProxyOnly,
    ProvisioningOwnerOnly,
}

impl Rule {
    pub fn code(self) -> &'static str {
        match self {
            Rule::GrantAllAccess => "scoped_admin_cannot_grant_all_access",
            Rule::GrantAdmin => "scoped_admin_cannot_grant_admin",
            Rule::ScopeNotHeld => "scoped_admin_cannot_grant_scope_it_lacks",
            Rule::SelfOnlyNarrower => "scoped_admin_can_only_narrow_itself",
            Rule::AgentHasAllAccess => "scoped_admin_cannot_change_all_access_agent",
            Rule::AgentIsAdmin => "scoped_admin_cannot_change_another_admin",
            Rule::AgentOutsideScopes => "scoped_admin_cannot_change_agent_outside_its_scopes",
            Rule::NewAgentReadsMore => "new_agent_would_read_entries_outside_admin_scopes",
            Rule::EntryOutsideScopes => "scoped_admin_cannot_change_entry_outside_its_scopes",
            Rule::EntryOwnerOnly => "scoped_admin_cannot_make_entry_owner_only",
            Rule::KeyringOwnerOnly => "keyring_is_owner_only",
            Rule::PasskeyOfAnotherAgent => "passkeys_of_other_agents_are_owner_only",
            Rule::DeriveAdmin => "derived_token_cannot_be_admin",
            Rule::DeriveAllAccess => "derived_all_access_needs_caller_all_access",
            Rule::DeriveScopeNotHeld => "derived_scopes_exceed_caller",
            Rule::DeriveReveal => "derived_reveal_needs_caller_reveal",
            Rule::ExpiryExceedsParent => "expiry_exceeds_parent",
            Rule::DerivedReadsMore => "derived_token_would_read_entries_outside_caller_scopes",
            Rule::TooManyDerived => "too_many_derived_tokens",
            Rule::SelfLiftProxyOnly => "scoped_admin_cannot_lift_its_own_proxy_restriction",
            Rule::LiftProxyOnly => "proxy_restricted_admin_cannot_grant_unrestricted_proxy",
            Rule::ProvisioningOwnerOnly => "provisioning_is_owner_only",
        }
    }
}

fn is_owner(a: &Agent) -> bool {
    a.all_access && a.admin
}

/// Parses a requested scope list; a malformed list is not this module's refusal (the change
/// itself answers 422), so it yields `None` and the rules that need it pass.
fn parse(list: &[String]) -> Option<ScopeSet> {
    ScopeSet::from_strs(list.iter().map(String::as_str)).ok()
}

/// True if every scope in `set`, except `except` (an agent's own), is one `admin` holds.
fn holds_all(admin: &Agent, set: &ScopeSet, except: Option<AgentId>) -> bool {
    let own = except.map(AgentId::own_scope);
    set.iter().all(|s| own.is_some_and(|o| o.as_str() == s) || admin.scopes.iter().any(|h| h == s))
}

/// True if an agent holding `scopes` (without all access) would read an entry `admin` cannot.
fn reads_more(db: &VaultDb, admin: &Agent, scopes: &ScopeSet) -> Result<bool, VaultError> {
    Ok(reads_more_of(&unreadable_entries(db, admin)?, scopes))
}

/// The scopes of the live entries `admin` cannot read (read once for a whole batch).
fn unreadable_entries(db: &VaultDb, admin: &Agent) -> Result<Vec<ScopeSet>, VaultError> {
    let mut out = Vec::new();
    for (_, stored) in db.live_entry_scopes()? {
        let entry =
            ScopeSet::parse(&stored).map_err(|_| VaultError::Corrupt("an entry has malformed scopes".into()))?;
        if !entry.is_empty() && !admin.can_read(&entry) {
            out.push(entry);
        }
    }
    Ok(out)
}

fn reads_more_of(unreadable: &[ScopeSet], scopes: &ScopeSet) -> bool {
    unreadable.iter().any(|entry| scopes.intersects(entry))
}

/// Whether `admin` may change or revoke `target` (another agent), read fresh.
fn may_manage(db: &VaultDb, admin: &Agent, target: &Agent) -> Result<Result<(), Rule>, VaultError> {
    Ok(may_manage_of(&unreadable_entries(db, admin)?, admin, target))
}

/// [`may_manage`] with `unreadable` = [`unreadable_entries`] for `admin` (read once per batch).
fn may_manage_of(unreadable: &[ScopeSet], admin: &Agent, target: &Agent) -> Result<(), Rule> {
    if target.all_access {
        return Err(Rule::AgentHasAllAccess);
    }
    if target.admin {
        return Err(Rule::AgentIsAdmin);
    }
    if !holds_all(admin, &target.scopes, Some(target.id)) || reads_more_of(unreadable, &target.scopes) {
        return Err(Rule::AgentOutsideScopes);
    }
    Ok(())
}

/// The scopes an admin sets on an entry: not empty, and each one it holds or one the entry
/// already has (keeping a scope grants nothing new; adding one does).
fn entry_scopes_ok(admin: &Agent, scopes: &[String], current: &ScopeSet) -> Result<(), Rule> {
    let Some(set) = parse(scopes) else { return Ok(()) };
    if set.is_empty() {
        return Err(Rule::EntryOwnerOnly);
    }
    let held = |s: &str| admin.scopes.iter().any(|h| h == s) || current.iter().any(|c| c == s);
    if !set.iter().all(held) {
        return Err(Rule::ScopeNotHeld);
    }
    Ok(())
}

/// The entry's current scopes if `admin` can read it; a missing entry is refused alike.
fn readable_entry(db: &VaultDb, admin: &Agent, id: i64) -> Result<Result<ScopeSet, Rule>, VaultError> {
    let Some(row) = db.entry(id)?.filter(|r| !r.deleted) else { return Ok(Err(Rule::EntryOutsideScopes)) };
    let scopes =
        ScopeSet::parse(&row.scopes).map_err(|_| VaultError::Corrupt(format!("entry {id} has malformed scopes")))?;
    Ok(if admin.can_read(&scopes) { Ok(scopes) } else { Err(Rule::EntryOutsideScopes) })
}

/// Whether `admin` may create an agent as `ask` describes that will get the id `new_id`.
/// `unreadable`: [`unreadable_entries`] for `admin`.
fn may_create(admin: &Agent, unreadable: &[ScopeSet], ask: &AgentAsk, new_id: AgentId) -> Result<(), Rule> {
    if ask.all_access {
        Err(Rule::GrantAllAccess)
    } else if ask.admin {
        Err(Rule::GrantAdmin)
    } else if admin.proxy_only_listed && !ask.proxy_only_listed {
        // An admin whose own tunnels are limited to listed hosts cannot mint an agent that
        // tunnels anywhere: that would be more than the admin holds.
        Err(Rule::LiftProxyOnly)
    } else if let Some(mut set) = parse(&ask.scopes) {
        if !holds_all(admin, &set, None) {
            Err(Rule::ScopeNotHeld)
        } else {
            set.insert(new_id.own_scope());
            if reads_more_of(unreadable, &set) { Err(Rule::NewAgentReadsMore) } else { Ok(()) }
        }
    } else {
        Ok(())
    }
}

/// Checks `intent` for `caller` (its agent row as read inside the gate's transaction). The outer
/// error is a failure of the server; the inner one the rule that refused.
pub fn check(db: &VaultDb, caller: &Agent, intent: &Intent) -> Result<Result<(), Rule>, VaultError> {
    if is_owner(caller) {
        return Ok(Ok(()));
    }
    let verdict = match intent {
        Intent::SetKeyring => Err(Rule::KeyringOwnerOnly),
        Intent::Provisioning => Err(Rule::ProvisioningOwnerOnly),
        Intent::DismissProxyRequest { id } => match db.proxy_request(*id)?.map(|r| db.agent(r.agent_id)).transpose()? {
            Some(Some(row)) if lists_agent(caller, &ops::agent_from_row(&row)?) => Ok(()),
            _ => Err(Rule::AgentOutsideScopes),
        },
        Intent::AddPasskey { for_agent } => {
            if *for_agent == caller.id {
                Ok(())
            } else {
                Err(Rule::PasskeyOfAnotherAgent)
            }
        }
        Intent::RemovePasskey { id } => match db.credential(id)? {
            Some(row) if row.agent_id == Some(caller.id.0) => Ok(()),
            _ => Err(Rule::PasskeyOfAnotherAgent),
        },
        Intent::CreateEntry { scopes } => entry_scopes_ok(caller, scopes, &ScopeSet::default()),
        Intent::UpdateEntry { id, scopes } => {
            readable_entry(db, caller, *id)?.and_then(|current| entry_scopes_ok(caller, scopes, &current))
        }
        Intent::DeleteEntry { id } => readable_entry(db, caller, *id)?.map(drop),
        Intent::CreateAgent(ask) => {
            may_create(caller, &unreadable_entries(db, caller)?, ask, AgentId(db.next_agent_id()?))
        }
        Intent::CreateAgents(asks) => {
            let (first, unreadable) = (db.next_agent_id()?, unreadable_entries(db, caller)?);
            asks.iter()
                .enumerate()
                .try_for_each(|(n, ask)| may_create(caller, &unreadable, ask, AgentId(first.saturating_add(n as i64))))
        }
        Intent::RevokeAgents(ids) => {
            let unreadable = unreadable_entries(db, caller)?;
            let mut verdict = Ok(());
            for id in ids {
                verdict = match db.agent(id.0)? {
                    _ if *id == caller.id => Ok(()),
                    None => Err(Rule::AgentOutsideScopes),
                    Some(row) => may_manage_of(&unreadable, caller, &ops::agent_from_row(&row)?),
                };
                if verdict.is_err() {
                    break;
                }
            }
            verdict
        }
        // Dropping its own admin flag is allowed (the store keeps the last admin); `Some(true)`
        // is no change for an admin.
        Intent::UpdateAgent { id, scopes, all_access, admin: _, proxy_only_listed } if *id == caller.id => {
            if *all_access == Some(true) {
                Err(Rule::GrantAllAccess)
            } else if caller.proxy_only_listed && *proxy_only_listed == Some(false) {
                Err(Rule::SelfLiftProxyOnly)
            } else {
                match scopes.as_deref().and_then(parse) {
                    Some(set) if !holds_all(caller, &set, Some(caller.id)) => Err(Rule::SelfOnlyNarrower),
                    _ => Ok(()),
                }
            }
        }
        Intent::UpdateAgent { id, scopes, all_access, admin, proxy_only_listed } => match db.agent(id.0)? {
            None => Err(Rule::AgentOutsideScopes),
            Some(row) => {
                let target = ops::agent_from_row(&row)?;
                may_manage(db, caller, &target)?.and_then(|()| {
                    if all_access.is_some_and(|a| a && !target.all_access) {
                        Err(Rule::GrantAllAccess)
                    } else if admin.is_some_and(|a| a && !target.admin) {
                        Err(Rule::GrantAdmin)
                    } else if caller.proxy_only_listed && *proxy_only_listed == Some(false) && target.proxy_only_listed
                    {
                        Err(Rule::LiftProxyOnly)
                    } else {
                        match scopes.as_deref().and_then(parse) {
                            Some(set) if !holds_all(caller, &set, Some(target.id)) => Err(Rule::ScopeNotHeld),
                            _ => Ok(()),
                        }
                    }
                })
            }
        },
        Intent::RevokeAgent { id } if *id == caller.id => Ok(()),
        Intent::RevokeAgent { id } => match db.agent(id.0)? {
            None => Err(Rule::AgentOutsideScopes),
            Some(row) => may_manage(db, caller, &ops::agent_from_row(&row)?)?,
        },
    };
    Ok(verdict)
}

/// What an agent asks for when it derives a token (already shape-checked by the API).
#[derive(Debug, Clone)]
pub struct DeriveAsk {
    pub name: String,
    pub ttl_secs: u64,
    /// `None`: the caller's scopes.
    pub scopes: Option<Vec<String>>,
    pub all_access: bool,
    pub reveal_to_model: bool,
    pub admin: bool,
}

/// Checks a derivation for `caller` (its row as read inside the write's transaction, already
/// known to be authentic and unexpired) at `now_secs`. The outer error is a failure of the
/// server (or malformed scopes, 422); the inner one the rule that refused.
pub fn check_derive(
    db: &VaultDb,
    caller: &Agent,
    ask: &DeriveAsk,
    now_secs: i64,
) -> Result<Result<ops::Derivation, Rule>, VaultError> {
    let scopes = match &ask.scopes {
        Some(list) => ScopeSet::from_strs(list.iter().map(String::as_str))?,
        None => caller.scopes.clone(),
    };
    if !(1..=ops::MAX_DERIVED_TTL_SECS).contains(&ask.ttl_secs) {
        return Err(VaultError::Invalid(format!("ttl_secs must be 1 to {}", ops::MAX_DERIVED_TTL_SECS)));
    }
    let expires_at = now_secs.saturating_add(ask.ttl_secs as i64);
    let verdict = if ask.admin {
        Err(Rule::DeriveAdmin)
    } else if ask.all_access && !caller.all_access {
        Err(Rule::DeriveAllAccess)
    } else if ask.reveal_to_model && !caller.reveal_to_model {
        Err(Rule::DeriveReveal)
    } else if !caller.all_access && !holds_all(caller, &scopes, None) {
        Err(Rule::DeriveScopeNotHeld)
    } else if caller.expires_at.is_some_and(|t| expires_at > t) {
        Err(Rule::ExpiryExceedsParent)
    } else if db.live_derived_in_tree(caller.id.0, now_secs)? >= ops::MAX_LIVE_DERIVED {
        Err(Rule::TooManyDerived)
    } else {
        // The child also holds its own scope (`format!("{:04x}", id)`), which the caller does
        // not: an entry the owner tagged with it must not become readable by deriving.
        let mut with_own = scopes.clone();
        with_own.insert(AgentId(db.next_agent_id()?).own_scope());
        if !caller.all_access && reads_more(db, caller, &with_own)? { Err(Rule::DerivedReadsMore) } else { Ok(()) }
    };
    Ok(verdict.map(|()| ops::Derivation {
        name: ask.name.clone(),
        scopes,
        all_access: ask.all_access,
        reveal_to_model: ask.reveal_to_model,
        proxy_only_listed: caller.proxy_only_listed,
        expires_at,
    }))
}

/// Whether `admin`'s agent list shows `agent`: all of them for the owner; for a scoped admin
/// itself and the agents without all access whose granted scopes it holds.
pub fn lists_agent(admin: &Agent, agent: &Agent) -> bool {
    is_owner(admin) || agent.id == admin.id || (!agent.all_access && holds_all(admin, &agent.scopes, Some(agent.id)))
}

/// Whether `admin` sees every passkey (the owner) or only its own.
pub fn sees_all_passkeys(admin: &Agent) -> bool {
    is_owner(admin)
}

impl LiveVault {
    /// The audit page `admin` may see: everything for the owner; for a scoped admin, rows by an
    /// agent its list shows that name no entry, or an entry it can read now. Rows of the local
    /// operator, of unauthenticated callers and about deleted entries are the owner's.
    pub fn audit_page_for(&self, admin: &Agent, before: Option<i64>, limit: u32) -> Result<Vec<AuditRow>, VaultError> {
        self.audit_page_filtered(admin, before, limit, &AuditFilter::default())
    }

    /// What gone agents and entries were called, for the audit view: the owner's only (rows
    /// about gone items are in no scoped admin's slice).
    pub fn gone_names_for(&self, admin: &Agent) -> Result<ops::GoneNames, VaultError> {
        if !is_owner(admin) {
            return Ok(Default::default());
        }
        ops::gone_names(&self.db(), self.id(), self.key())
    }

    /// [`Self::audit_page_for`] narrowed by `filter` (the audit view's filters).
    pub fn audit_page_filtered(
        &self,
        admin: &Agent,
        before: Option<i64>,
        limit: u32,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditRow>, VaultError> {
        let db = self.db();
        if is_owner(admin) {
            return Ok(db.audit_filtered(before, limit, None, filter)?);
        }
        let mut agents = Vec::new();
        for row in db.agents()? {
            let agent = ops::agent_from_row(&row)?;
            if lists_agent(admin, &agent) {
                agents.push(agent.id.0);
            }
        }
        let mut entries = Vec::new();
        for (id, stored) in db.live_entry_scopes()? {
            if ScopeSet::parse(&stored).is_ok_and(|s| admin.can_read(&s)) {
                entries.push(id);
            }
        }
        Ok(db.audit_filtered(before, limit, Some((&agents, &entries)), filter)?)
    }
}
