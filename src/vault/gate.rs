//! The WebAuthn gate in front of every admin write, the owner's one-time setup, and the start of
//! a further passkey's registration.
//!
//! Owns the order of the checks and their atomicity: for an admin write, one vault transaction
//! takes (deletes) the challenge, checks that it is unexpired, issued to this agent and bound to
//! this exact method, path and body, re-reads the agent (token still valid, still admin),
//! verifies the assertion against that agent's own passkeys (a passkey belongs to the agent
//! that enrolled it), applies the authority rules (`vault::authority`) to the fresh agent row,
//! stores the advanced signature counter, and runs the change. A refusal commits only the
//! consumed challenge and its audit row. It never sees HTTP types and holds no SQL; ceremonies
//! are `auth::webauthn`'s.
//!
//! It also runs the one ungated change an agent makes itself, deriving a narrower token
//! ([`LiveVault::derive_token`]): bearer only, because it can only narrow; the caller's row is
//! re-read and re-checked (token, MAC, expiry) and the rules of `vault::authority` applied in
//! the same transaction as the insert.

use std::sync::Arc;
use std::time::Duration;

use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Uuid};

use super::authority::{self, DeriveAsk, Intent, Rule};
use super::live::LiveVault;
use super::{VaultError, VaultId, ops};
use crate::audit::{Action, Actor, AuditEvent, Outcome};
use crate::auth::webauthn::{ChallengeId, CredentialId, Operation, RelyingParty, challenge_text};
use crate::auth::{Agent, AgentId, NewToken, TokenHash};
use crate::crypto::DataKey;
use crate::store::vault_db::VaultDb;
use crate::store::webauthn_db::ChallengeRow;

/// How long a registration ceremony (setup or a further passkey) may take.
pub const REGISTRATION_TTL: Duration = Duration::from_secs(300);
/// How long a setup code printed by `clavitor init` stays valid.
pub const SETUP_CODE_TTL: Duration = Duration::from_secs(15 * 60);
/// Bounds of `--challenge-ttl-secs`.
pub const MIN_CHALLENGE_TTL: u64 = 1;
pub const MAX_CHALLENGE_TTL: u64 = 300;

const PURPOSE_OPERATION: &str = "operation";
const PURPOSE_REGISTER: &str = "register";
const PURPOSE_SETUP: &str = "setup";

/// Why a gated request was refused. The code goes to the audit row and the 403's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    NotAdmin,
    MissingChallenge,
    MalformedChallenge,
    /// No such challenge: never issued, already used, or swept.
    UnknownChallenge,
    ExpiredChallenge,
    /// Issued to another agent.
    WrongAgent,
    /// Bound to another method, path or body.
    WrongOperation,
    MissingAssertion,
    /// The assertion did not verify (bad JSON, bad signature, a key not registered to this
    /// agent, counter).
    BadAssertion,
    /// Authenticated, but an authority rule refuses the change.
    Refused(Rule),
}

impl Denial {
    pub fn code(&self) -> &'static str {
        match self {
            Denial::NotAdmin => "not_admin",
            Denial::MissingChallenge => "missing_challenge",
            Denial::MalformedChallenge => "malformed_challenge",
            Denial::UnknownChallenge => "unknown_or_used_challenge",
            Denial::ExpiredChallenge => "expired_challenge",
            Denial::WrongAgent => "challenge_for_another_agent",
            Denial::WrongOperation => "challenge_for_another_operation",
            Denial::MissingAssertion => "missing_assertion",
            Denial::BadAssertion => "assertion_rejected",
            Denial::Refused(rule) => rule.code(),
        }
    }

    /// The audit row's detail: which layer refused, and the reason code.
    pub fn audit_detail(&self) -> String {
        match self {
            Denial::Refused(rule) => format!("authority:{}", rule.code()),
            other => format!("webauthn:{}", other.code()),
        }
    }
}

/// What a gated request presents besides its body.
pub struct Presented<'a> {
    pub agent: &'a Agent,
    pub token: &'a TokenHash,
    pub challenge: Option<&'a str>,
    pub assertion: Option<&'a str>,
    pub operation: Operation,
    /// What the change will do, for the authority rules.
    pub intent: &'a Intent,
}

/// Why the owner's setup was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupRefusal {
    MalformedCode,
    UnknownCode,
    /// The code's row carries no valid MAC: not issued by a holder of the master key.
    ForgedCode,
    UsedCode,
    ExpiredCode,
    AlreadySetUp,
    BadChallenge,
    BadCredential,
    /// The vault has agents but none is an owner (all access + admin) to enroll the passkey for.
    NoOwner,
}

impl SetupRefusal {
    pub fn code(&self) -> &'static str {
        match self {
            SetupRefusal::MalformedCode => "malformed_code",
            SetupRefusal::UnknownCode => "unknown_code",
            SetupRefusal::ForgedCode => "code_not_authentic",
            SetupRefusal::UsedCode => "code_already_used",
            SetupRefusal::ExpiredCode => "code_expired",
            SetupRefusal::AlreadySetUp => "already_set_up",
            SetupRefusal::BadChallenge => "unknown_or_expired_registration",
            SetupRefusal::BadCredential => "credential_rejected",
            SetupRefusal::NoOwner => "no_owner_agent",
        }
    }
}

/// A setup code as printed once: 32 hex characters (128 random bits). Only its hash is stored.
pub struct SetupCode(zeroize::Zeroizing<String>);

impl SetupCode {
    pub fn generate() -> Self {
        Self(zeroize::Zeroizing::new(hex::encode(crate::crypto::random_bytes::<16>())))
    }

    pub fn reveal(&self) -> &str {
        &self.0
    }

    fn hash_of(code: &str) -> Result<String, SetupRefusal> {
        if code.len() == 32 && code.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(crate::crypto::sha256_hex(code.as_bytes()))
        } else {
            Err(SetupRefusal::MalformedCode)
        }
    }
}

fn now() -> i64 {
    crate::store::now_ms()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn webauthn_user(db: &mut VaultDb) -> Result<Uuid, VaultError> {
    let stored = db.meta_get_or_set("webauthn_user", &Uuid::new_v4().to_string())?;
    Uuid::parse_str(&stored).map_err(|_| VaultError::Corrupt("meta webauthn_user is not a uuid".into()))
}

/// Issues a setup code for a vault without agents (called by `init`). Audited as the local operator.
pub fn issue_setup_code(db: &mut VaultDb) -> Result<SetupCode, VaultError> {
    let code = SetupCode::generate();
    let hash = crate::crypto::sha256_hex(code.reveal().as_bytes());
    let t = now();
    let event = AuditEvent::new(Actor::LocalOperator, Action::Setup, Outcome::Ok).client("local").detail("code_issued");
    db.insert_setup_code(&hash, t, t + ms(SETUP_CODE_TTL), &event.record())?;
    Ok(code)
}

fn check_code(db: &VaultDb, hash: &str, t: i64) -> Result<Result<(), SetupRefusal>, VaultError> {
    Ok(match db.setup_code(hash)? {
        None => Err(SetupRefusal::UnknownCode),
        Some(c) if !c.authentic => {
            crate::edition::alert(
                "vault_rows_forged",
                "a setup code row fails its integrity check (written without the master key, or from \
                 before setup codes carried a MAC) and sets up nothing; `clavitor init` issues a fresh code",
                &[("rows", "setup code".to_owned())],
            );
            Err(SetupRefusal::ForgedCode)
        }
        Some(c) if c.used_at.is_some() => Err(SetupRefusal::UsedCode),
        Some(c) if c.expires_at <= t => Err(SetupRefusal::ExpiredCode),
        // Set up means a passkey exists. A vault whose owner was made with the break-glass
        // `agent add --admin` (or by an older build) has agents but no passkey: its link
        // enrolls a passkey only.
        Some(_) if !db.credentials()?.is_empty() => Err(SetupRefusal::AlreadySetUp),
        Some(_) => Ok(()),
    })
}

/// The vault that issued `code` (used or not), opened: looked up in node.db's setup-code index
/// (by the code's SHA-256), confirmed by the vault file. A code issued before the index existed
/// is looked for in the open vaults, and in the only vault of a single-vault node.
pub fn vault_for_setup_code(node: &super::Node, code: &str) -> Result<Option<Arc<LiveVault>>, VaultError> {
    let Ok(hash) = SetupCode::hash_of(code) else { return Ok(None) };
    let indexed = crate::store::node_db::NodeDb::open(&node.data_dir().node_db_path())?.setup_code_vault(&hash)?;
    if let Some(v) = indexed.and_then(|id| node.vault(&id))
        && v.knows_setup_code(code)?
    {
        return Ok(Some(v));
    }
    for v in node.vaults() {
        if v.knows_setup_code(code)? {
            return Ok(Some(v));
        }
    }
    if node.served_vaults() == 1
        && let Ok(id) = node.data_dir().pick_vault(None)
        && let Some(v) = node.vault(id.as_str())
        && v.knows_setup_code(code)?
    {
        return Ok(Some(v));
    }
    Ok(None)
}

impl LiveVault {
    /// True if this vault issued `code` (used or not): which vault a setup link belongs to.
    pub fn knows_setup_code(&self, code: &str) -> Result<bool, VaultError> {
        let Ok(hash) = SetupCode::hash_of(code) else { return Ok(false) };
        Ok(self.db().setup_code(&hash)?.is_some())
    }

    /// Issues an operation-bound challenge for an admin agent. The caller has checked `admin`.
    /// `allowCredentials` lists only this agent's passkeys.
    pub fn issue_challenge(
        &self,
        rp: &RelyingParty,
        agent: &Agent,
        operation: &Operation,
        ttl: Duration,
    ) -> Result<(ChallengeId, RequestChallengeResponse, i64), VaultError> {
        let mut db = self.db();
        let creds = passkeys_of(&db, agent.id)?;
        if creds.is_empty() {
            return Err(VaultError::Conflict(
                "this agent has no passkey: the owner enrolls one for it (POST /api/passkeys with agent_id)".into(),
            ));
        }
        let (rcr, state) = rp.start_authentication(&creds).map_err(|e| VaultError::Invalid(e.to_string()))?;
        let id = ChallengeId::generate();
        let t = now();
        let expires_at = t + ms(ttl);
        db.insert_challenge(
            &ChallengeRow {
                id: id.as_str().to_owned(),
                purpose: PURPOSE_OPERATION.into(),
                agent_id: Some(agent.id.0),
                method: operation.method().to_owned(),
                path: operation.path().to_owned(),
                body_sha256: operation.body_sha256().to_owned(),
                challenge: challenge_text(&rcr.public_key.challenge),
                state,
                created_at: t,
                expires_at,
            },
            t,
        )
        .map_err(VaultError::from_store)?;
        Ok((id, rcr, expires_at))
    }

    /// Runs `change` only if the presented challenge and assertion authorise exactly this
    /// operation for this agent; all in one transaction (see the module docs). The outer error
    /// is a failure of the server; the inner `Err(Denial)` a refusal (already audited with
    /// `denied` as its outcome, `event` saying what was attempted).
    pub fn authorized<T>(
        &self,
        rp: &RelyingParty,
        presented: &Presented<'_>,
        event: &AuditEvent,
        change: impl FnOnce(&mut VaultDb, &VaultId, &DataKey, &AuditEvent) -> Result<T, VaultError>,
    ) -> Result<Result<Result<T, VaultError>, Denial>, VaultError> {
        let out = {
            let mut db = self.db();
            let (id, key) = (self.id(), self.key());
            db.atomically(|db| {
                let verdict = match check(db, rp, presented) {
                    Ok(verified) => match authority::check(db, &verified.caller, presented.intent)? {
                        Ok(()) => Ok(verified),
                        Err(rule) => Err(Denial::Refused(rule)),
                    },
                    Err(denial) => Err(denial),
                };
                match verdict {
                    Err(denial) => {
                        let row = AuditEvent { outcome: Outcome::Denied, ..event.clone() }
                            .detail(denial.audit_detail())
                            .record();
                        db.append_audit(&row)?;
                        Ok::<_, VaultError>(Err(denial))
                    }
                    Ok(v) => {
                        db.update_credential(&v.credential, &v.stored, v.sign_count)?;
                        Ok(Ok(change(db, id, key, event)))
                    }
                }
            })?
        };
        self.refresh()?;
        Ok(out)
    }

    /// Starts registering a further passkey for an admin agent (the caller has checked `admin`).
    /// The registration itself is an admin write: it needs an assertion from an existing key.
    pub fn start_passkey_registration(
        &self,
        rp: &RelyingParty,
        agent: &Agent,
    ) -> Result<(ChallengeId, CreationChallengeResponse), VaultError> {
        let mut db = self.db();
        let user = webauthn_user(&mut db)?;
        // Only its own keys are excluded: another agent's credential ids are not this agent's to
        // see (a key registered twice is still refused when it is stored).
        let existing = passkeys_of(&db, agent.id)?;
        let (ccr, state) = rp.start_registration(user, &existing).map_err(|e| VaultError::Invalid(e.to_string()))?;
        let id = ChallengeId::generate();
        let t = now();
        db.insert_challenge(
            &ChallengeRow {
                id: id.as_str().to_owned(),
                purpose: PURPOSE_REGISTER.into(),
                agent_id: Some(agent.id.0),
                method: String::new(),
                path: String::new(),
                body_sha256: String::new(),
                challenge: challenge_text(&ccr.public_key.challenge),
                state,
                created_at: t,
                expires_at: t + ms(REGISTRATION_TTL),
            },
            t,
        )
        .map_err(VaultError::from_store)?;
        Ok((id, ccr))
    }

    /// Step 1 of the owner's setup: checks the code and starts the passkey registration.
    /// A refusal is audited (anonymous actor) and returned as `Err`.
    pub fn setup_start(
        &self,
        rp: &RelyingParty,
        code: &str,
        client: &str,
    ) -> Result<Result<(ChallengeId, CreationChallengeResponse), SetupRefusal>, VaultError> {
        let mut db = self.db();
        let t = now();
        let refused = |db: &mut VaultDb, r: SetupRefusal| -> Result<_, VaultError> {
            let ev = AuditEvent::new(Actor::Anonymous, Action::Setup, Outcome::Denied).client(client).detail(r.code());
            db.append_audit(&ev.record())?;
            Ok(Err(r))
        };
        let hash = match SetupCode::hash_of(code) {
            Ok(h) => h,
            Err(r) => return refused(&mut db, r),
        };
        if let Err(r) = check_code(&db, &hash, t)? {
            return refused(&mut db, r);
        }
        let user = webauthn_user(&mut db)?;
        let (ccr, state) = rp.start_registration(user, &[]).map_err(|e| VaultError::Invalid(e.to_string()))?;
        let id = ChallengeId::generate();
        db.insert_challenge(
            &ChallengeRow {
                id: id.as_str().to_owned(),
                purpose: PURPOSE_SETUP.into(),
                agent_id: None,
                method: String::new(),
                path: String::new(),
                body_sha256: hash,
                challenge: challenge_text(&ccr.public_key.challenge),
                state,
                created_at: t,
                expires_at: t + ms(REGISTRATION_TTL),
            },
            t,
        )
        .map_err(VaultError::from_store)?;
        Ok(Ok((id, ccr)))
    }

    /// Step 2 of the owner's setup, in one transaction: the code is still good and unused, the
    /// vault has no passkey, the registration verifies; then the passkey is stored, the code
    /// marked used, and, if the vault has no agent yet, agent "Owner" (all access, admin)
    /// created and returned with its token. A vault that already has agents (an owner made
    /// with the break-glass CLI) only gets its first passkey: `Ok(None)`.
    pub fn setup_finish(
        &self,
        rp: &RelyingParty,
        code: &str,
        registration: &str,
        credential: &str,
        client: &str,
    ) -> Result<Result<Option<(Agent, NewToken)>, SetupRefusal>, VaultError> {
        let out = {
            let mut db = self.db();
            db.atomically(|db| {
                let t = now();
                let verdict = (|| -> Result<Result<Option<(Agent, NewToken)>, SetupRefusal>, VaultError> {
                    let hash = match SetupCode::hash_of(code) {
                        Ok(h) => h,
                        Err(r) => return Ok(Err(r)),
                    };
                    // The registration state is consumed whatever happens next.
                    let challenge = match ChallengeId::parse(registration) {
                        Ok(id) => db.take_challenge(id.as_str())?,
                        Err(_) => None,
                    };
                    if let Err(r) = check_code(db, &hash, t)? {
                        return Ok(Err(r));
                    }
                    let Some(ch) =
                        challenge.filter(|c| c.purpose == PURPOSE_SETUP && c.body_sha256 == hash && c.expires_at > t)
                    else {
                        return Ok(Err(SetupRefusal::BadChallenge));
                    };
                    let passkey = match rp.finish_registration(&ch.state, credential) {
                        Ok(p) => p,
                        Err(_) => return Ok(Err(SetupRefusal::BadCredential)),
                    };
                    let ok = AuditEvent::new(Actor::Anonymous, Action::Setup, Outcome::Ok).client(client);
                    // The passkey belongs to the owner: the agent created here, or, in a vault
                    // whose owner was made with the break-glass CLI, its first owner agent.
                    let agents = db.agents()?;
                    let (owner, created) = if agents.is_empty() {
                        let (agent, token) = ops::add_agent(db, "Owner", &[], (true, true), None, false, &ok)?;
                        (agent.id, Some((agent, token)))
                    } else {
                        match agents.iter().find(|a| a.all_access && a.admin) {
                            Some(a) => (AgentId(a.id), None),
                            None => return Ok(Err(SetupRefusal::NoOwner)),
                        }
                    };
                    ops::add_passkey(db, &passkey, owner, "owner", &ok.clone().detail("passkey_enrolled"))?;
                    db.use_setup_code(&hash, t).map_err(VaultError::from_store)?;
                    Ok(Ok(created))
                })()?;
                if let Err(r) = &verdict {
                    let ev = AuditEvent::new(Actor::Anonymous, Action::Setup, Outcome::Denied)
                        .client(client)
                        .detail(r.code());
                    db.append_audit(&ev.record())?;
                }
                Ok::<_, VaultError>(verdict)
            })?
        };
        self.refresh()?;
        Ok(out)
    }
}

/// Why a derivation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeriveRefusal {
    /// The caller's row changed under the request (revoked, rotated, expired, forged): 401.
    Unauthenticated,
    /// An authority rule refused (403 with the rule's code; audited as denied).
    Refused(Rule),
}

impl LiveVault {
    /// Derives a token from the caller's own (see `vault::authority::check_derive`). The outer
    /// error is a failure of the server or malformed input; the inner one a refusal.
    pub fn derive_token(
        &self,
        caller: AgentId,
        token: &TokenHash,
        ask: &DeriveAsk,
        event: &AuditEvent,
    ) -> Result<Result<(Agent, NewToken), DeriveRefusal>, VaultError> {
        let out = {
            let mut db = self.db();
            db.atomically(|db| {
                let t = crate::store::now_secs();
                let fresh = db.agent(caller.0)?.filter(|r| {
                    r.token_hash == token.as_str() && db.agent_authentic(r) && r.expires_at.is_none_or(|e| e > t)
                });
                let Some(row) = fresh else { return Ok(Err(DeriveRefusal::Unauthenticated)) };
                let agent = ops::agent_from_row(&row)?;
                match authority::check_derive(db, &agent, ask, t)? {
                    Err(rule) => {
                        let row = AuditEvent { outcome: Outcome::Denied, ..event.clone() }
                            .detail(format!("authority:{}", rule.code()))
                            .record();
                        db.append_audit(&row)?;
                        Ok::<_, VaultError>(Err(DeriveRefusal::Refused(rule)))
                    }
                    Ok(derivation) => Ok(Ok(ops::derive_agent(db, agent.id, &derivation, event)?)),
                }
            })?
        };
        self.refresh()?;
        Ok(out)
    }
}

/// This agent's passkeys, parsed.
fn passkeys_of(db: &VaultDb, agent: AgentId) -> Result<Vec<crate::auth::webauthn::StoredPasskey>, VaultError> {
    Ok(ops::passkeys(db)?.into_iter().filter(|(row, _)| row.agent_id == Some(agent.0)).map(|(_, k)| k).collect())
}

/// What passed the gate's checks: the caller as read inside the transaction, and the passkey's
/// new state (stored only if the change is allowed, so a refusal changes no counter).
struct Verified {
    caller: Agent,
    credential: String,
    stored: String,
    sign_count: i64,
}

/// The gate's checks, in order; takes the challenge first so it is consumed whatever follows.
fn check(db: &mut VaultDb, rp: &RelyingParty, p: &Presented<'_>) -> Result<Verified, Denial> {
    let raw = p.challenge.ok_or(Denial::MissingChallenge)?;
    let id = ChallengeId::parse(raw).map_err(|_| Denial::MalformedChallenge)?;
    let challenge = db.take_challenge(id.as_str()).map_err(|_| Denial::UnknownChallenge)?;
    let ch = challenge.filter(|c| c.purpose == PURPOSE_OPERATION).ok_or(Denial::UnknownChallenge)?;
    if ch.expires_at <= now() {
        return Err(Denial::ExpiredChallenge);
    }
    // The token must still name an unexpired admin agent, read inside this transaction, whose
    // row was written with the master key (MAC).
    let row = db.agent(p.agent.id.0).map_err(|_| Denial::NotAdmin)?.ok_or(Denial::NotAdmin)?;
    let expired = row.expires_at.is_some_and(|t| t <= crate::store::now_secs());
    if row.token_hash != p.token.as_str() || !row.admin || expired || !db.agent_authentic(&row) {
        return Err(Denial::NotAdmin);
    }
    if ch.agent_id != Some(p.agent.id.0) {
        return Err(Denial::WrongAgent);
    }
    let bound = Operation::new(&ch.method, &ch.path, &ch.body_sha256).map_err(|_| Denial::WrongOperation)?;
    if bound != p.operation {
        return Err(Denial::WrongOperation);
    }
    let assertion = p.assertion.ok_or(Denial::MissingAssertion)?;
    // Only the calling agent's own passkeys: another admin's key never approves this token.
    let registered = passkeys_of(db, p.agent.id).map_err(|_| Denial::BadAssertion)?;
    let verified = rp.verify_assertion(&ch.state, assertion, &registered).map_err(|e| {
        tracing::info!(reason = %e, "assertion refused");
        Denial::BadAssertion
    })?;
    let stored = verified.passkey.to_stored().map_err(|_| Denial::BadAssertion)?;
    let caller = ops::agent_from_row(&row).map_err(|_| Denial::NotAdmin)?;
    Ok(Verified {
        caller,
        credential: verified.passkey.id().as_str().to_owned(),
        stored,
        sign_count: verified.passkey.sign_count,
    })
}

/// The change behind `POST /api/passkeys`: consumes the registration started by the same
/// agent, verifies the new credential, stores it as `for_agent`'s (the caller itself, or, for
/// the owner, another admin agent; the authority rules have checked which). Runs inside the
/// gate's transaction.
#[allow(clippy::too_many_arguments)]
pub fn register_passkey(
    db: &mut VaultDb,
    rp: &RelyingParty,
    agent: AgentId,
    for_agent: AgentId,
    registration: &str,
    credential: &str,
    name: &str,
    event: &AuditEvent,
) -> Result<CredentialId, VaultError> {
    let id =
        ChallengeId::parse(registration).map_err(|_| VaultError::Invalid("registration_id is malformed".into()))?;
    let ch = db
        .take_challenge(id.as_str())?
        .filter(|c| c.purpose == PURPOSE_REGISTER && c.agent_id == Some(agent.0) && c.expires_at > now())
        .ok_or_else(|| VaultError::Invalid("unknown, expired or used registration_id".into()))?;
    let passkey = rp.finish_registration(&ch.state, credential).map_err(|e| VaultError::Invalid(e.to_string()))?;
    match db.agent(for_agent.0)? {
        None => return Err(VaultError::NotFound),
        Some(a) if !a.admin => return Err(VaultError::Invalid("only an admin agent uses passkeys".into())),
        Some(_) => {}
    }
    ops::add_passkey(db, &passkey, for_agent, name, event)
}
