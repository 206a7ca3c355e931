//! The audit trail: what happened, who did it, from where, and how it ended.
//!
//! Owns the vocabulary of audit rows ([`Action`], [`Outcome`], [`Actor`]), the spool and the
//! writer. A request that hands out a secret has its row made durable first, so a crash (even
//! `kill -9`) can never leave a secret read without its evidence: under `--audit-sync normal` the
//! row is copied into the file's memory-mapped spool (no syscall, no wait) and a pool thread
//! moves spooled rows into SQLite in batches (`spool`); under `full` the request waits for its
//! batch's transaction (group commit, `writer`). Audit rows never contain token material,
//! secret values, or search text.

mod spool;
mod writer;

pub use spool::move_left_rows;
pub use writer::{
    AuditError, AuditWriter, Commit, after_worker_unpark, before_worker_blocks, before_worker_park, settle_all,
};

use std::net::IpAddr;

use crate::auth::AgentId;
use crate::store::AuditRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    Agent(AgentId),
    /// Someone running `clavitor` subcommands on the node with its master key.
    LocalOperator,
    /// A request that did not authenticate.
    Anonymous,
    /// The server itself (housekeeping such as removing expired derived tokens).
    Node,
    /// The vault's identity provider, through a provisioning (SCIM) token (commercial).
    IdentityProvider,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Authenticate,
    EntryRead,
    EntryList,
    EntrySearch,
    TotpRead,
    AgentList,
    AuditRead,
    EntryCreate,
    EntryUpdate,
    EntryDelete,
    AgentCreate,
    AgentUpdate,
    AgentRevoke,
    /// An expired derived token's agent was removed (by the node, some time after its expiry).
    AgentExpire,
    VaultInit,
    /// An operation-bound WebAuthn challenge was issued.
    ChallengeIssue,
    PasskeyList,
    /// A registration ceremony for a further passkey was started.
    PasskeyRegisterStart,
    PasskeyAdd,
    PasskeyRemove,
    KeyringRead,
    KeyringUpdate,
    /// The one-time owner setup (code issued, passkey enrolled, owner created, or refused).
    Setup,
    /// An agent derived a narrower, expiring token from its own (the row names the child).
    TokenDerive,
    /// An agent asked the owner for access to a host through the proxy (grants nothing).
    ProxyRequest,
    ProxyRequestList,
    /// An admin dismissed an access request (a passkey-approved write).
    ProxyRequestDismiss,
    /// The proxy put an entry's credential into an agent's request (one row per entry, committed
    /// before the request is forwarded).
    ProxyInject,
    /// The proxy refused an agent's tunnel or request (no or bad credentials, host not allowed,
    /// rate limit).
    ProxyRefuse,
    /// The upstream's answer to a request the proxy injected into: status and bytes.
    ProxyResult,
    /// Identity-provider provisioning (commercial SCIM): groups, tokens, grant approvals.
    IdpGroupChange,
    IdpTokenCreate,
    IdpTokenRevoke,
    IdpTokenList,
    IdpGrantList,
    IdpGrantApprove,
    /// An admin asked autoscope for suggestions (commercial); the detail says whether the rules
    /// or the configured model answered. Nothing of the entry is recorded.
    AutoscopeSuggest,
}

impl Actor {
    /// Who this is in one word, as a refusal's detail names a requester: `agent:3`,
    /// `local-operator`, `anonymous`, `node` or `idp`.
    pub fn label(self) -> String {
        match self {
            Actor::Agent(id) => format!("agent:{}", id.0),
            other => other.kind().to_owned(),
        }
    }

    /// The audit row's `actor` column (an agent's id goes in `agent_id`).
    fn kind(self) -> &'static str {
        match self {
            Actor::Agent(_) => "agent",
            Actor::LocalOperator => "local-operator",
            Actor::Anonymous => "anonymous",
            Actor::Node => "node",
            Actor::IdentityProvider => "idp",
        }
    }
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Authenticate => "auth",
            Action::EntryRead => "entry.read",
            Action::EntryList => "entry.list",
            Action::EntrySearch => "entry.search",
            Action::TotpRead => "totp.read",
            Action::AgentList => "agent.list",
            Action::AuditRead => "audit.read",
            Action::EntryCreate => "entry.create",
            Action::EntryUpdate => "entry.update",
            Action::EntryDelete => "entry.delete",
            Action::AgentCreate => "agent.create",
            Action::AgentUpdate => "agent.update",
            Action::AgentRevoke => "agent.revoke",
            Action::AgentExpire => "agent.expire",
            Action::VaultInit => "vault.init",
            Action::ChallengeIssue => "webauthn.challenge",
            Action::PasskeyList => "passkey.list",
            Action::PasskeyRegisterStart => "passkey.register_start",
            Action::PasskeyAdd => "passkey.add",
            Action::PasskeyRemove => "passkey.remove",
            Action::KeyringRead => "keyring.read",
            Action::KeyringUpdate => "keyring.update",
            Action::Setup => "setup",
            Action::TokenDerive => "token.derive",
            Action::ProxyRequest => "proxy.request",
            Action::ProxyRequestList => "proxy.request_list",
            Action::ProxyRequestDismiss => "proxy.request_dismiss",
            Action::ProxyInject => "proxy.inject",
            Action::ProxyRefuse => "proxy.refuse",
            Action::ProxyResult => "proxy.result",
            Action::IdpGroupChange => "idp.group",
            Action::IdpTokenCreate => "idp.token_create",
            Action::IdpTokenRevoke => "idp.token_revoke",
            Action::IdpTokenList => "idp.token_list",
            Action::IdpGrantList => "idp.grant_list",
            Action::IdpGrantApprove => "idp.grant_approve",
            Action::AutoscopeSuggest => "autoscope.suggest",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Authenticated, but the scopes do not allow it (answered as 404 to the caller).
    Denied,
    NotFound,
    /// Missing, malformed, unknown or revoked token.
    Unauthorized,
    /// The request was refused as invalid (4xx) or failed (5xx).
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::NotFound => "not_found",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Failed => "failed",
        }
    }
}

/// Who sent the request, as its row's `client` column records it. A peer's address is kept as
/// an address and written out only when the row is made: a read then formats it once and
/// allocates nothing for it before its row is queued.
#[derive(Debug, Clone, Default)]
pub enum Client {
    #[default]
    Unknown,
    Ip(IpAddr),
    Text(String),
}

impl Client {
    fn into_text(self) -> String {
        match self {
            Client::Unknown => String::new(),
            Client::Ip(ip) => ip_text(ip),
            Client::Text(text) => text,
        }
    }
}

/// `ip` as audit rows record it (`Display`'s text). IPv4, every request's case on a node, is
/// written by hand: the formatting machinery took about 1 % of a read's CPU in profiles.
pub fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else { return ip.to_string() };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub actor: Actor,
    pub action: Action,
    pub entry: Option<i64>,
    pub client: Client,
    pub outcome: Outcome,
    /// A short code or count; never user-supplied text.
    pub detail: String,
}

impl AuditEvent {
    pub fn new(actor: Actor, action: Action, outcome: Outcome) -> Self {
        Self { actor, action, entry: None, client: Client::Unknown, outcome, detail: String::new() }
    }

    pub fn entry(mut self, id: i64) -> Self {
        self.entry = Some(id);
        self
    }

    pub fn client(mut self, client: impl Into<String>) -> Self {
        self.client = Client::Text(client.into());
        self
    }

    /// The peer's address, if the request came over a socket.
    pub fn peer(mut self, ip: Option<IpAddr>) -> Self {
        self.client = ip.map_or(Client::Unknown, Client::Ip);
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// The row to store, without copying the event's strings.
    pub fn into_record(self) -> AuditRecord {
        let agent_id = match self.actor {
            Actor::Agent(id) => Some(id.0),
            _ => None,
        };
        AuditRecord {
            ts: crate::store::now_ms(),
            actor: self.actor.kind().into(),
            agent_id,
            action: self.action.as_str().into(),
            entry_id: self.entry,
            client: self.client.into_text(),
            outcome: self.outcome.as_str().into(),
            detail: self.detail,
        }
    }

    pub fn record(&self) -> AuditRecord {
        self.clone().into_record()
    }
}

/// A new, migrated vault file in a directory of its own, for tests: (directory, file).
#[cfg(test)]
pub(crate) fn temp_vault_file() -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("clavitor-audit-{}", hex::encode(crate::crypto::random_bytes::<8>())));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("v.db");
    drop(crate::store::vault_db::VaultDb::open(&path).unwrap());
    (dir, path)
}

#[cfg(test)]
mod tests {
    use super::ip_text;

    #[test]
    fn ip_text_is_displays_text() {
        let samples = ["0.0.0.0", "127.0.0.1", "10.9.99.100", "255.255.255.255", "192.168.1.20", "::1", "fe80::1:2"];
        for text in samples {
            let ip: std::net::IpAddr = text.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
        for n in 0..=255u8 {
            let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::new(n, 7, n, 250));
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }
}
