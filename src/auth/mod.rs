//! Who is asking: bearer tokens, agent identities, scopes and roles.
//!
//! Owns the token format (`cvt_` + 43 base62 characters), the hashed form that is stored
//! ([`TokenHash`]), the scope model ([`Scope`], [`ScopeSet`]) and the one access rule
//! ([`Agent::can_read`]). It never stores anything and never sees a plaintext token after
//! hashing it; the raw token exists only in [`NewToken`], which is shown once and dropped.

mod scope;
mod token;
pub mod webauthn;

pub use scope::{Scope, ScopeError, ScopeSet};
pub use token::{NewToken, TokenError, TokenHash};

/// An agent's integer id. Its scope is the id as four (or more) lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct AgentId(pub i64);

impl AgentId {
    pub fn own_scope(self) -> Scope {
        Scope::for_agent(self)
    }
}

impl std::fmt::Display for AgentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An agent as the server knows it: never carries the token, only its identity and rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: AgentId,
    pub name: String,
    pub scopes: ScopeSet,
    pub all_access: bool,
    pub admin: bool,
    pub created_at: i64,
    /// Unix seconds from which the token no longer authenticates; `None`: never.
    pub expires_at: Option<i64>,
    /// The agent whose token this one was derived from; revoked with it.
    pub parent_id: Option<AgentId>,
    /// The owner lets the MCP server hand this agent's L1 values to the model.
    pub reveal_to_model: bool,
    /// The proxy refuses this agent's requests to hosts no inject rule names. In memory it is
    /// also set when any agent this one was derived from has it (`LiveVault::refresh`).
    pub proxy_only_listed: bool,
}

/// The four combinations of `all_access` and `admin` (spec-dual-build.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Scoped read-only: agents, family members, MSP technicians.
    Scoped,
    /// Reads everything, changes nothing.
    ReadAll,
    /// Scoped read plus admin operations (with WebAuthn).
    ScopedAdmin,
    /// Vault owner.
    Owner,
}

impl Agent {
    pub fn role(&self) -> Role {
        match (self.all_access, self.admin) {
            (false, false) => Role::Scoped,
            (true, false) => Role::ReadAll,
            (false, true) => Role::ScopedAdmin,
            (true, true) => Role::Owner,
        }
    }

    /// True once the agent's expiry (unix seconds) has come: it then authenticates nowhere.
    pub fn expired_at(&self, now_secs: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now_secs)
    }

    /// The access rule: `all_access` reads everything; an entry with no scopes is owner-only;
    /// otherwise the agent needs at least one scope in common with the entry.
    pub fn can_read(&self, entry_scopes: &ScopeSet) -> bool {
        if self.all_access {
            return true;
        }
        !entry_scopes.is_empty() && self.scopes.intersects(entry_scopes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(all_access: bool, admin: bool) -> Agent {
        Agent {
            id: AgentId(2),
            name: "a".into(),
            scopes: ScopeSet::parse("0002,00ff").unwrap(),
            all_access,
            admin,
            created_at: 0,
            expires_at: None,
            parent_id: None,
            reveal_to_model: false,
            proxy_only_listed: false,
        }
    }

    #[test]
    fn access_matrix() {
        let empty = ScopeSet::default();
        let matching = ScopeSet::parse("00ff").unwrap();
        let other = ScopeSet::parse("0003").unwrap();
        for (all, admin) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = agent(all, admin);
            assert_eq!(a.can_read(&empty), all, "empty scopes are owner-only");
            assert!(a.can_read(&matching));
            assert_eq!(a.can_read(&other), all);
        }
        assert_eq!(agent(true, true).role(), Role::Owner);
        assert_eq!(agent(false, false).role(), Role::Scoped);
    }
}
