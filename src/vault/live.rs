//! What a running server keeps in memory: each vault's entry metadata and agents, and the
//! node-wide token index.
//!
//! Authenticating a request costs one SHA-256 and one map lookup. Listing and search never touch
//! SQLite or decrypt anything: titles, URLs and types are decrypted once when a change is seen.
//! Changes made by other processes (the operator CLI) are picked up by a watcher thread that
//! polls each vault's change sequence every [`WATCH_INTERVAL`]; an agent revoked on the command
//! line stops authenticating within that interval. An agent whose `expires_at` has come is
//! refused at each request by the server's clock, exactly like an unknown token, and dropped
//! from the index by the watcher (a sweep that costs one atomic load until the earliest expiry
//! in the index is due).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::data_dir::DataDir;
use super::entry::{EntryData, FieldKind, Tier};
use super::inject::{InjectRule, InjectionPlan};
use super::{VaultError, VaultId, ops};
use crate::audit::{Action, Actor, AuditEvent, AuditWriter, Commit, Outcome};
use crate::auth::{Agent, AgentId, ScopeSet, TokenHash};
use crate::crypto::{DataKey, MemoryKey};
use crate::store::vault_db::VaultDb;
use crate::store::{AuditRow, AuditSync};

pub const WATCH_INTERVAL: Duration = Duration::from_millis(200);
/// How often the WAL of each file is checkpointed (audit connections do not do it themselves).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Expired WebAuthn challenges and expired derived agents are swept every this many watcher
/// ticks (10 s).
const SWEEP_EVERY: u64 = 50;
/// Change sequences of closed vaults read per pass of [`Node::reopen_changed`] at most.
const SEQ_READS_PER_PASS: usize = 200;
/// Freed heap is returned to the kernel at most every this many watcher ticks (5 s), after
/// vaults were closed.
const TRIM_EVERY: u64 = 25;
/// Expired derived agents removed per vault per sweep (the rest go at the next one).
const PRUNE_BATCH: u32 = 1000;

/// Rung each time a refresh installs a new change sequence of any vault (an API write, or the
/// watcher seeing another process's commit), so a background worker (a primary's replication,
/// commercial) wakes on every committed change without polling the files itself.
pub static CHANGES: ChangeBell = ChangeBell::new();

pub struct ChangeBell {
    rung: Mutex<u64>,
    cv: std::sync::Condvar,
}

impl ChangeBell {
    const fn new() -> Self {
        Self { rung: Mutex::new(0), cv: std::sync::Condvar::new() }
    }

    fn ring(&self) {
        let mut n = self.rung.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.wrapping_add(1);
        self.cv.notify_all();
    }

    /// How often it has rung so far.
    pub fn count(&self) -> u64 {
        *self.rung.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until it has rung more than `seen` times, or `timeout` passed; returns the count.
    pub fn wait_past(&self, seen: u64, timeout: Duration) -> u64 {
        let guard = self.rung.lock().unwrap_or_else(|p| p.into_inner());
        let (n, _) = self.cv.wait_timeout_while(guard, timeout, |n| *n == seen).unwrap_or_else(|p| p.into_inner());
        *n
    }
}

/// An entry's metadata, decrypted once, and what agents are shown of it, sealed.
///
/// Laid out for a small heap: a node may cache tens of thousands of these. The texts share one
/// allocation and scopes are inline; the secrets exist here only as the sealed agent view and,
/// for an entry with an L1 TOTP field, its sealed secret.
#[derive(Debug)]
pub struct CachedEntry {
    pub id: i64,
    pub scopes: ScopeSet,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
    /// uuid, title, type and URL, then the lowercased search text (title, URL, type).
    text: Box<str>,
    /// Where uuid, title, type and URL end in `text`.
    ends: [u32; 4],
    /// `view::render`'s JSON, sealed under the vault's memory key.
    view: Box<[u8]>,
    totp: CachedTotp,
    /// The entry's inject rules and the values they read (sealed); `None` for most entries.
    inject: Option<Box<CachedInject>>,
    /// The entry's L1 values are only injected, never shown to an agent.
    pub inject_only: bool,
}

#[derive(Debug)]
struct CachedInject {
    rules: Box<[InjectRule]>,
    /// JSON `[[name, value], ...]` of the fields the rules read, sealed under the memory key.
    values: Box<[u8]>,
}

/// The entry's first TOTP field, as the TOTP route needs it.
#[derive(Debug)]
enum CachedTotp {
    Absent,
    /// Encrypted in the owner's browser: the server cannot compute codes.
    L2,
    /// The secret (URI or base32), sealed under the memory key.
    L1(Box<[u8]>),
}

/// What [`LiveVault::totp_secret`] finds.
pub enum TotpSecret {
    Absent,
    L2,
    L1(zeroize::Zeroizing<String>),
}

impl CachedEntry {
    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..self.ends[i] as usize).unwrap_or_default()
    }

    pub fn uuid(&self) -> &str {
        self.part(0)
    }

    pub fn title(&self) -> &str {
        self.part(1)
    }

    pub fn entry_type(&self) -> &str {
        self.part(2)
    }

    pub fn url(&self) -> &str {
        self.part(3)
    }

    fn haystack(&self) -> &str {
        self.text.get(self.ends[3] as usize..).unwrap_or_default()
    }
}

#[derive(Default)]
struct Snapshot {
    seq: i64,
    entries: BTreeMap<i64, Arc<CachedEntry>>,
    agents: Vec<(TokenHash, Arc<Agent>)>,
}

/// The outcome of looking an entry up on behalf of an agent.
pub enum Lookup {
    Visible(Arc<CachedEntry>),
    /// Exists, but the agent's scopes do not reach it. Answered exactly like `Missing`.
    Hidden,
    Missing,
}

pub struct LiveVault {
    id: VaultId,
    /// This vault's position in [`Node::vaults`], which is how the token index names it.
    slot: usize,
    /// The node's token index; [`LiveVault::refresh`] replaces this vault's part of it.
    index: Arc<TokenIndex>,
    key: DataKey,
    /// Seals what this vault's cache holds of entries (see [`CachedEntry`]).
    memory: MemoryKey,
    db: Mutex<VaultDb>,
    /// The vault file (for the WAL checkpointer).
    path: std::path::PathBuf,
    audit: AuditWriter,
    snapshot: RwLock<Snapshot>,
}

impl LiveVault {
    fn open(
        dir: &DataDir,
        master: &crate::crypto::MasterKey,
        id: &VaultId,
        sync: AuditSync,
        (slot, index): (usize, Arc<TokenIndex>),
    ) -> Result<Self, VaultError> {
        let open = dir.open_vault(master, id)?;
        let audit = AuditWriter::start(open.db.path(), sync)?;
        let vault = Self {
            id: open.id,
            slot,
            index,
            key: open.key,
            memory: MemoryKey::generate()?,
            path: open.db.path().to_owned(),
            db: Mutex::new(open.db),
            audit,
            snapshot: RwLock::new(Snapshot { seq: -1, ..Snapshot::default() }),
        };
        vault.refresh()?;
        // The first load read every row; the server answers from memory from now on.
        vault.db().shrink_memory()?;
        Ok(vault)
    }

    pub fn id(&self) -> &VaultId {
        &self.id
    }

    pub(super) fn key(&self) -> &DataKey {
        &self.key
    }

    pub(super) fn db(&self) -> std::sync::MutexGuard<'_, VaultDb> {
        // A panic while holding the lock cannot leave the connection half-written (SQLite rolls
        // back an open transaction on drop), so a poisoned lock is safe to keep using.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        self.snapshot.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the in-memory view and this vault's part of the token index up to date with the
    /// file. Returns true if agents changed.
    ///
    /// The file's lock is held until both are installed, so two refreshes of one vault (the
    /// watcher's and an API write's) apply in change order: an older view can never overwrite a
    /// newer one, and whoever installs a change of agents also updates the index.
    ///
    /// A damaged row (an entry that does not decrypt, an agent with malformed scopes) is
    /// withheld and reported to the operator, never allowed to stall the refresh: a revocation
    /// must reach the token index even while some other row is broken. So is a row whose MAC
    /// does not verify (written into the file by someone without the master key): such an
    /// agent does not authenticate and such an entry is shown to no one.
    pub fn refresh(&self) -> Result<bool, VaultError> {
        let db = self.db();
        let seq = db.change_seq()?;
        let last = self.read().seq;
        if seq == last {
            return Ok(false);
        }
        let rows = db.entries_since(last.max(0))?;
        let mut decoded = Vec::with_capacity(rows.len());
        let mut damaged = Vec::new();
        let mut forged = Vec::new();
        for row in rows {
            if !db.entry_authentic(&row) {
                forged.push(format!("entry {}", row.id));
                decoded.push((row.id, None));
                continue;
            }
            if row.deleted {
                decoded.push((row.id, None));
                continue;
            }
            let opened = ops::open_entry(&self.id, &self.key, &row).and_then(|data| {
                ScopeSet::parse(&row.scopes)
                    .map(|scopes| (data, scopes))
                    .map_err(|_| VaultError::Corrupt(format!("entry {} has malformed scopes", row.id)))
            });
            let (data, scopes) = match opened {
                Ok(ok) => ok,
                Err(e) => {
                    damaged.push(e.to_string());
                    decoded.push((row.id, None));
                    continue;
                }
            };
            match self.cache_entry(row.id, row.uuid, scopes, (row.created_at, row.updated_at, row.version), &data) {
                Ok(entry) => decoded.push((row.id, Some(Arc::new(entry)))),
                Err(e) => {
                    damaged.push(e.to_string());
                    decoded.push((row.id, None));
                }
            }
        }
        let mut agents = Vec::new();
        for row in db.agents()? {
            if !db.agent_authentic(&row) {
                forged.push(format!("agent {}", row.id));
                continue;
            }
            match ops::agent_from_row(&row) {
                Ok(agent) => agents.push((TokenHash::from_stored(row.token_hash), Arc::new(agent))),
                Err(e) => damaged.push(e.to_string()),
            }
        }
        inherit_proxy_restriction(&mut agents);
        if !damaged.is_empty() {
            crate::edition::alert(
                "vault_rows_damaged",
                "vault rows failed to decrypt or parse and are withheld",
                &[("vault", self.id.to_string()), ("count", damaged.len().to_string()), ("error", damaged.join("; "))],
            );
        }
        if !forged.is_empty() {
            crate::edition::alert(
                "vault_rows_forged",
                "vault rows fail their integrity check (changed without the master key) and grant nothing",
                &[("vault", self.id.to_string()), ("count", forged.len().to_string()), ("rows", forged.join(", "))],
            );
        }
        let mut snap = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        for (id, entry) in decoded {
            match entry {
                Some(e) => snap.entries.insert(id, e),
                None => snap.entries.remove(&id),
            };
        }
        let agents_changed = snap.agents != agents;
        if agents_changed {
            self.index.replace(self.slot, seq, &agents);
        }
        snap.agents = agents;
        snap.seq = seq;
        drop(snap);
        drop(db);
        CHANGES.ring();
        Ok(agents_changed)
    }

    /// The change sequence the in-memory view was built from.
    fn seq(&self) -> i64 {
        self.read().seq
    }

    /// Entries the agent may see, in id order.
    pub fn visible_entries(&self, agent: &Agent) -> Vec<Arc<CachedEntry>> {
        self.read().entries.values().filter(|e| agent.can_read(&e.scopes)).cloned().collect()
    }

    /// Case-insensitive substring search over title, URL and type; at most `limit` results.
    pub fn search(&self, agent: &Agent, query: &str, limit: usize) -> Vec<Arc<CachedEntry>> {
        let needle = query.to_lowercase();
        self.read()
            .entries
            .values()
            .filter(|e| agent.can_read(&e.scopes) && e.haystack().contains(&needle))
            .take(limit)
            .cloned()
            .collect()
    }

    pub fn lookup(&self, agent: &Agent, id: i64) -> Lookup {
        match self.read().entries.get(&id) {
            Some(e) if agent.can_read(&e.scopes) => Lookup::Visible(e.clone()),
            Some(_) => Lookup::Hidden,
            None => Lookup::Missing,
        }
    }

    /// Builds the cache form of a decrypted entry: texts in one allocation, the agent view
    /// rendered once and sealed.
    fn cache_entry(
        &self,
        id: i64,
        uuid: String,
        scopes: ScopeSet,
        (created_at, updated_at, version): (i64, i64, i64),
        data: &EntryData,
    ) -> Result<CachedEntry, VaultError> {
        let corrupt = |what: &str| VaultError::Corrupt(format!("entry {id}: {what}"));
        let haystack = format!("{}\n{}\n{}", data.title, data.url, data.entry_type).to_lowercase();
        let mut text = String::with_capacity(
            uuid.len() + data.title.len() + data.entry_type.len() + data.url.len() + haystack.len(),
        );
        let mut ends = [0u32; 4];
        for (end, part) in ends.iter_mut().zip([uuid.as_str(), &data.title, &data.entry_type, &data.url]) {
            text.push_str(part);
            *end = u32::try_from(text.len()).map_err(|_| corrupt("texts too long"))?;
        }
        text.push_str(&haystack);
        let totp = match data.fields.iter().find(|f| f.kind == FieldKind::Totp) {
            None => CachedTotp::Absent,
            Some(f) if f.tier == Tier::L2 => CachedTotp::L2,
            Some(f) => CachedTotp::L1(self.memory.seal(f.value.as_bytes()).map_err(|_| corrupt("cannot seal"))?),
        };
        let inject = if data.inject.is_empty() {
            None
        } else {
            let values = zeroize::Zeroizing::new(
                serde_json::to_vec(&super::inject::referenced_values(data)).map_err(|_| corrupt("cannot render"))?,
            );
            let values = self.memory.seal(&values).map_err(|_| corrupt("cannot seal"))?;
            Some(Box::new(CachedInject { rules: data.inject.clone().into_boxed_slice(), values }))
        };
        let mut entry = CachedEntry {
            id,
            scopes,
            created_at,
            updated_at,
            version,
            text: text.into_boxed_str(),
            ends,
            view: Box::default(),
            totp,
            inject,
            inject_only: data.inject_only,
        };
        let json = super::view::render(&entry, data).map_err(|_| corrupt("cannot render"))?;
        entry.view = self.memory.seal(&json).map_err(|_| corrupt("cannot seal"))?;
        Ok(entry)
    }

    /// The entry's agent view as JSON bytes (the caller has already checked visibility).
    pub fn agent_view(&self, entry: &CachedEntry) -> Result<Vec<u8>, VaultError> {
        self.unseal(entry, &entry.view)
    }

    /// Opens something `cache_entry` sealed for `entry`.
    fn unseal(&self, entry: &CachedEntry, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        self.memory.open(sealed).map_err(|_| VaultError::Corrupt(format!("entry {} cache does not open", entry.id)))
    }

    /// The entry's first TOTP field (the caller has already checked visibility).
    pub fn totp_secret(&self, entry: &CachedEntry) -> Result<TotpSecret, VaultError> {
        Ok(match &entry.totp {
            CachedTotp::Absent => TotpSecret::Absent,
            CachedTotp::L2 => TotpSecret::L2,
            CachedTotp::L1(sealed) => {
                let plain = zeroize::Zeroizing::new(self.unseal(entry, sealed)?);
                let text = std::str::from_utf8(&plain)
                    .map_err(|_| VaultError::Corrupt(format!("entry {} TOTP secret is not text", entry.id)))?;
                TotpSecret::L1(zeroize::Zeroizing::new(text.to_owned()))
            }
        })
    }

    /// The injections for one request the agent sends through the proxy: the rules of entries
    /// the agent can read whose host pattern matches `host` (a bare DNS name, the CONNECT
    /// host) and whose methods and path prefix match, filled with their values, in entry-id and
    /// rule order; when two set the same header or parameter the first wins. `path` is the
    /// request path without its query.
    pub fn injections(&self, agent: &Agent, host: &str, method: &str, path: &str) -> Result<InjectionPlan, VaultError> {
        let matching: Vec<(Arc<CachedEntry>, Vec<usize>)> = self
            .read()
            .entries
            .values()
            .filter_map(|e| {
                let inject = e.inject.as_ref()?;
                if !agent.can_read(&e.scopes) {
                    return None;
                }
                let rules: Vec<usize> = (inject.rules.iter().enumerate())
                    .filter(|(_, r)| r.host.matches(host) && r.matches_request(method, path))
                    .map(|(i, _)| i)
                    .collect();
                (!rules.is_empty()).then(|| (e.clone(), rules))
            })
            .collect();
        let mut plan = InjectionPlan::default();
        for (entry, rules) in matching {
            let Some(inject) = entry.inject.as_ref() else { continue };
            let plain = zeroize::Zeroizing::new(self.unseal(&entry, &inject.values)?);
            let values: Vec<(String, zeroize::Zeroizing<String>)> =
                serde_json::from_slice::<Vec<(String, String)>>(&plain)
                    .map_err(|_| VaultError::Corrupt(format!("entry {} inject values do not parse", entry.id)))?
                    .into_iter()
                    .map(|(n, v)| (n, zeroize::Zeroizing::new(v)))
                    .collect();
            for i in rules {
                plan.add((entry.id, entry.uuid()), &inject.rules[i].place, &values);
            }
        }
        Ok(plan)
    }

    /// Records `agent`'s access request (see `ops::request_proxy_access`); touches SQLite.
    pub fn request_proxy_access(
        &self,
        agent: &Agent,
        host: &str,
        reason: &str,
        event: &AuditEvent,
    ) -> Result<(crate::store::proxy_requests_db::ProxyRequestRow, bool), VaultError> {
        ops::request_proxy_access(&mut self.db(), agent.id, host, reason, event)
    }

    /// The pending access requests `admin` may see (those of the agents it lists), with the
    /// requesting agent, oldest first; touches SQLite.
    pub fn proxy_requests_for(
        &self,
        admin: &Agent,
    ) -> Result<Vec<(crate::store::proxy_requests_db::ProxyRequestRow, Arc<Agent>)>, VaultError> {
        let rows = self.db().proxy_requests()?;
        let agents: HashMap<i64, Arc<Agent>> = self.agents().into_iter().map(|a| (a.id.0, a)).collect();
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let agent = agents.get(&r.agent_id)?;
                super::authority::lists_agent(admin, agent).then(|| (r, agent.clone()))
            })
            .collect())
    }

    /// True if some entry the agent can read has a rule naming `host` (any method and path):
    /// what a `proxy_only_listed` agent needs to open a tunnel to it.
    pub fn has_rules_for(&self, agent: &Agent, host: &str) -> bool {
        self.read().entries.values().any(|e| {
            e.inject.as_ref().is_some_and(|i| agent.can_read(&e.scopes) && i.rules.iter().any(|r| r.host.matches(host)))
        })
    }

    pub fn agents(&self) -> Vec<Arc<Agent>> {
        self.read().agents.iter().map(|(_, a)| a.clone()).collect()
    }

    /// Records an event: queued now, committed when the returned wait resolves to its row id.
    pub fn audit(&self, event: AuditEvent) -> Commit {
        self.audit.commit(event)
    }

    /// Records an event and waits until its row, and every row acknowledged before it, is where
    /// the audit view reads (see `AuditWriter::commit_settled`).
    pub async fn audit_settled(&self, event: AuditEvent) -> Result<i64, crate::audit::AuditError> {
        self.audit.commit_settled(event).await
    }

    /// Commits a row no request waits on (see `AuditWriter::commit_background`).
    pub fn audit_background(&self, event: AuditEvent) -> Commit {
        self.audit.commit_background(event)
    }

    /// The registered passkeys (rows as stored: id, name, counter, the public passkey JSON).
    pub fn passkeys(&self) -> Result<Vec<crate::store::webauthn_db::CredentialRow>, VaultError> {
        // Only rows whose MAC verifies: a forged one is reported by `ops::passkeys`.
        Ok(ops::passkeys(&self.db())?.into_iter().map(|(row, _)| row).collect())
    }

    /// The owner's wrapped L2 keyring, if one was stored.
    pub fn keyring(&self) -> Result<Option<serde_json::Value>, VaultError> {
        match self.db().meta("l2_keyring")? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|_| VaultError::Corrupt("the stored L2 keyring is not JSON".into())),
        }
    }

    /// Deletes expired WebAuthn challenges (also done whenever a new one is stored).
    pub fn sweep_challenges(&self) -> Result<usize, VaultError> {
        Ok(self.db().sweep_challenges(crate::store::now_ms())?)
    }

    /// Removes derived agents whose tokens have expired, each with an `agent.expire` row: an
    /// agent deriving short-lived tokens all day must not grow the file (and the tree count
    /// `live_derived_in_tree` walks) without bound. Expired tokens are refused from the moment
    /// they expire; this only clears the rows. Returns how many went.
    pub fn prune_expired_derived(&self) -> Result<usize, VaultError> {
        let event = AuditEvent::new(Actor::Node, Action::AgentExpire, Outcome::Ok);
        let gone = self.db().prune_expired_derived(crate::store::now_secs(), PRUNE_BATCH, &event.record())?;
        if !gone.is_empty() {
            self.refresh()?;
        }
        Ok(gone.len())
    }

    /// True while the vault has no agent: the owner's setup has not happened yet.
    pub fn awaiting_setup(&self) -> bool {
        self.read().agents.is_empty()
    }

    pub fn audit_page(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditRow>, VaultError> {
        Ok(self.db().audit(before, limit)?)
    }

    /// Runs a change against the vault file, then refreshes the in-memory view before returning,
    /// so the caller's next request already sees it.
    pub fn change<T>(
        &self,
        f: impl FnOnce(&mut VaultDb, &VaultId, &DataKey) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let out = {
            let mut db = self.db();
            f(&mut db, &self.id, &self.key)?
        };
        self.refresh()?;
        Ok(out)
    }
}

/// Marks every agent derived (at any depth) from a `proxy_only_listed` agent as such too: a
/// derived token copies the flag when it is made, and this keeps it so when the flag is set on
/// its parent later. The stored row is left as it is; only the in-memory agent is restricted.
fn inherit_proxy_restriction(agents: &mut [(TokenHash, Arc<Agent>)]) {
    let rows: HashMap<AgentId, (Option<AgentId>, bool)> =
        agents.iter().map(|(_, a)| (a.id, (a.parent_id, a.proxy_only_listed))).collect();
    for (_, agent) in agents.iter_mut() {
        let mut parent = agent.parent_id;
        // Bounded: parent ids only ever name older agents, but a forged file could loop.
        for _ in 0..rows.len() {
            let Some((grand, restricted)) = parent.and_then(|p| rows.get(&p)) else { break };
            if *restricted {
                if !agent.proxy_only_listed {
                    Arc::make_mut(agent).proxy_only_listed = true;
                }
                break;
            }
            parent = *grand;
        }
    }
}

/// Who a request is: the vault it belongs to and the agent within it.
#[derive(Clone)]
pub struct Principal {
    pub vault: Arc<LiveVault>,
    pub agent: Arc<Agent>,
}

/// The node-wide token index: token hash → (vault slot, agent).
///
/// Each vault replaces only its own part, from [`LiveVault::refresh`] while it holds its file's
/// lock, so the updates of one vault arrive in change order and the last change wins. There is
/// no "rebuild everything" that could run on a stale view and overwrite a newer one.
struct TokenIndex {
    map: RwLock<HashMap<TokenHash, (usize, Arc<Agent>)>>,
    /// Token hashes of vaults not opened since start, read from their files unchecked
    /// ([`crate::store::scan_vault_file`]): they only say which vault to open. A slot's hints
    /// go when its agents are installed in `map` (its first open), which from then on is the
    /// authority for it.
    hints: RwLock<HashMap<TokenHash, usize>>,
    /// The change sequence each slot's agents were installed from.
    installed: Mutex<HashMap<usize, i64>>,
    /// The earliest `expires_at` in `map` (`i64::MAX`: none): the sweep does nothing before it.
    next_expiry: AtomicI64,
}

impl Default for TokenIndex {
    fn default() -> Self {
        Self {
            map: RwLock::default(),
            hints: RwLock::default(),
            installed: Mutex::default(),
            next_expiry: AtomicI64::new(i64::MAX),
        }
    }
}

impl TokenIndex {
    /// Replaces `slot`'s agents; those already expired are left out.
    /// A closed vault's old instance (still serving a request) and its reopened one may both
    /// refresh: the change sequence `seq` each saw orders them, and an older view never
    /// replaces a newer one.
    fn replace(&self, slot: usize, seq: i64, agents: &[(TokenHash, Arc<Agent>)]) {
        let now = crate::store::now_secs();
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let mut installed = self.installed.lock().unwrap_or_else(|p| p.into_inner());
        if installed.get(&slot).is_some_and(|newer| *newer > seq) {
            return;
        }
        installed.insert(slot, seq);
        drop(installed);
        self.drop_hints(slot);
        map.retain(|_, (s, _)| *s != slot);
        for (hash, agent) in agents {
            if !agent.expired_at(now) {
                map.insert(hash.clone(), (slot, agent.clone()));
            }
        }
        self.next_expiry.store(earliest_expiry(&map), Ordering::Relaxed);
    }

    fn get(&self, hash: &TokenHash) -> Option<(usize, Arc<Agent>)> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).get(hash).cloned()
    }

    /// Records the unchecked token hashes of `slot`, a vault not opened yet.
    fn hint(&self, slot: usize, hashes: Vec<String>) {
        let mut hints = self.hints.write().unwrap_or_else(|p| p.into_inner());
        hints.extend(hashes.into_iter().map(|h| (TokenHash::from_stored(h), slot)));
    }

    /// Forgets `slot`'s hints (its agents, if any, are installed; or it was retired).
    fn drop_hints(&self, slot: usize) {
        let mut hints = self.hints.write().unwrap_or_else(|p| p.into_inner());
        if !hints.is_empty() {
            hints.retain(|_, s| *s != slot);
        }
    }

    /// The slot whose file named this hash when it was scanned, if it has not been opened since.
    fn hinted(&self, hash: &TokenHash) -> Option<usize> {
        self.hints.read().unwrap_or_else(|p| p.into_inner()).get(hash).copied()
    }

    /// Drops expired agents once the earliest expiry has come; returns how many went.
    fn sweep_expired(&self, now: i64) -> usize {
        if now < self.next_expiry.load(Ordering::Relaxed) {
            return 0;
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let before = map.len();
        map.retain(|_, (_, agent)| !agent.expired_at(now));
        self.next_expiry.store(earliest_expiry(&map), Ordering::Relaxed);
        before - map.len()
    }

    fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn earliest_expiry(map: &HashMap<TokenHash, (usize, Arc<Agent>)>) -> i64 {
    map.values().filter_map(|(_, a)| a.expires_at).min().unwrap_or(i64::MAX)
}

/// A registered vault this node could not open at start (the file does not open, fails its
/// integrity check, or is from a newer build). The node serves the others; this one's requests
/// are answered 503 until the operator repairs it and restarts.
pub struct UnavailableVault {
    pub id: VaultId,
    pub reason: String,
    /// Its agents' token hashes, read from the file without opening it for serving; `None` when
    /// even that failed (then any unknown token may be this vault's).
    tokens: Option<HashSet<TokenHash>>,
}

/// Why a token did not authenticate.
pub enum AuthFailure {
    /// No vault here knows it.
    Unknown,
    /// It belongs (or may belong) to a vault this node cannot serve.
    Unavailable(VaultId),
}

/// One registered vault in the node: open ([`LiveVault`]) or closed (its agents stay in the
/// token index, nothing else is held).
struct Slot {
    id: VaultId,
    path: std::path::PathBuf,
    live: RwLock<Option<Arc<LiveVault>>>,
    /// Unix ms of the last authentication (for closing the least recently used).
    last_used: AtomicI64,
    /// The file's (db, wal) stamps when its change sequence was last read while closed: a
    /// change makes the watcher read the sequence again.
    closed_stamp: Mutex<Option<FileStamp>>,
    /// The change sequence the vault's view had when it was closed: a file whose sequence moved
    /// since (another process, e.g. the local CLI, changed it) is opened to refresh its agents.
    closed_seq: AtomicI64,
    /// The file passed `quick_check` (done at its first open, not at start: a node with
    /// thousands of vaults would read every file whole before serving).
    checked: AtomicBool,
    /// Why its last open failed, until an open succeeds: the vault is unavailable meanwhile
    /// (/healthz and Kuma say so), and the operator was told when it began to fail.
    failure: Mutex<Option<String>>,
}

impl Slot {
    /// A slot for a vault not opened yet, from its file's scan (closed, its tokens hinted).
    fn closed(id: VaultId, path: std::path::PathBuf, stamp: FileStamp, seq: i64) -> Self {
        Self {
            id,
            path,
            live: RwLock::new(None),
            last_used: AtomicI64::new(0),
            closed_stamp: Mutex::new(Some(stamp)),
            closed_seq: AtomicI64::new(seq),
            checked: AtomicBool::new(false),
            failure: Mutex::new(None),
        }
    }
}

type FileStamp = [(i64, u64); 2];

/// The (mtime ns, length) of a vault file and of its WAL. An empty WAL counts as none: any
/// connection's open creates one and its close removes it, which changes nothing in the file.
fn file_stamp(path: &std::path::Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    let of = |p: &std::path::Path| std::fs::metadata(p).map(|m| (m.mtime_nsec() + m.mtime() * 1_000_000_000, m.len()));
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = of(std::path::Path::new(&wal)).ok().filter(|(_, len)| *len > 0).unwrap_or((0, 0));
    [of(path).unwrap_or((0, 0)), wal]
}

impl Slot {
    fn open_now(&self) -> Option<Arc<LiveVault>> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Runs `f`, which touches SQLite, without stalling a tokio worker's other tasks. The one
/// `block_in_place` of the server: the audit's group commit is told the worker leaves first.
fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            crate::audit::before_worker_blocks();
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Every vault this node serves, the token index over all of them, and the node-level audit.
///
/// The set of vaults follows node.db's registry while the node runs (hosted vaults, issue 16):
/// [`Node::sync_registry`] opens vaults registered since and drops retired ones. A slot is
/// never reused: a retired vault's slot stays empty, so an index entry that still names it
/// (from a refresh racing the retirement) authenticates nothing.
///
/// At most `max_open` vaults are open (file handles, connections, decrypted cache); the least
/// recently used beyond that are closed by the watcher. A closed vault's agents stay in the
/// token index; its first request opens it again (a refresh from the file, so a revocation made
/// meanwhile is seen before the request is admitted), and a closed file another process writes
/// to is opened to refresh its agents. No vault is opened at start (see [`Node::start_with`]);
/// one awaiting its owner's setup is found by its setup link through node.db's index and may
/// be closed like any other.
pub struct Node {
    dir: DataDir,
    sync: AuditSync,
    max_vaults: usize,
    max_open: std::sync::atomic::AtomicUsize,
    /// Vaults unused this long (ms) are closed; 0: never for idleness.
    idle_ms: AtomicI64,
    vaults: RwLock<Vec<Option<Arc<Slot>>>>,
    /// Serialises [`Node::sync_registry`] (the watcher's and the API's).
    registry: Mutex<()>,
    unavailable: Vec<UnavailableVault>,
    /// How many slots' last open failed (their `failure`): kept so that /healthz need not visit
    /// every slot of a hosted node.
    failing_opens: std::sync::atomic::AtomicUsize,
    without_agents_at_start: usize,
    tokens: Arc<TokenIndex>,
    node_audit: AuditWriter,
    stop: Arc<AtomicBool>,
}

/// Default for `--max-open-vaults`.
pub const DEFAULT_MAX_OPEN_VAULTS: usize = 256;
/// Default for `--vault-idle-secs`: an open vault costs its connections and cache; one nobody
/// used for this long is closed (reopening costs a few milliseconds).
pub const DEFAULT_VAULT_IDLE: Duration = Duration::from_secs(300);

impl Node {
    /// Serves every registered vault (opened on demand). `max_vaults` is the edition's limit
    /// (community: one).
    pub fn start(dir: &DataDir, max_vaults: usize, sync: AuditSync) -> Result<Arc<Self>, VaultError> {
        Self::start_with(dir, max_vaults, sync, DEFAULT_MAX_OPEN_VAULTS)
    }

    /// Like [`Node::start`], keeping at most `max_open` vaults open. No vault is opened here:
    /// each file is scanned read-only for its token hashes and change sequence (so its tokens
    /// find it) and opened by its first request, the setup of its owner, or a change another
    /// process makes to it. A file that does not scan, or fails `quick_check` when the node
    /// has no more vaults than `max_open` (beyond that, each is checked at its first open), is
    /// unavailable (503) from the start.
    pub fn start_with(
        dir: &DataDir,
        max_vaults: usize,
        sync: AuditSync,
        max_open: usize,
    ) -> Result<Arc<Self>, VaultError> {
        dir.load_master_key()?;
        let ids = dir.vault_ids()?;
        if ids.is_empty() {
            return Err(VaultError::Setup("the data dir holds no vault; run `clavitor init`".into()));
        }
        if ids.len() > max_vaults {
            return Err(VaultError::Setup(format!(
                "the data dir holds {} vaults but this edition serves {max_vaults}",
                ids.len()
            )));
        }
        let max_open = max_open.max(1);
        let tokens = Arc::new(TokenIndex::default());
        let mut vaults = Vec::with_capacity(ids.len());
        let mut unavailable = Vec::new();
        let mut without_agents = 0;
        // A node that could hold all its vaults open checks every file before it serves (the
        // operator learns of a damaged one at once); a larger one checks each at its first open.
        let check_now = ids.len() <= max_open;
        for id in &ids {
            let scanned = if check_now { check_at_start(&dir.vault_path(id)) } else { Ok(()) }
                .and_then(|()| scan(dir, id))
                .inspect(|(slot, _)| slot.checked.store(check_now, Ordering::Relaxed));
            match scanned {
                Ok((slot, hashes)) => {
                    without_agents += usize::from(hashes.is_empty());
                    tokens.hint(vaults.len(), hashes);
                    vaults.push(Some(Arc::new(slot)));
                }
                Err(e) => unavailable.push(UnavailableVault::salvage(id.clone(), &dir.vault_path(id), &e)),
            }
        }
        let node_audit = AuditWriter::start(&dir.node_db_path(), sync)?;
        Ok(Arc::new(Self {
            dir: dir.clone(),
            sync,
            max_vaults,
            max_open: std::sync::atomic::AtomicUsize::new(max_open),
            idle_ms: AtomicI64::new(i64::try_from(DEFAULT_VAULT_IDLE.as_millis()).unwrap_or(i64::MAX)),
            vaults: RwLock::new(vaults),
            registry: Mutex::new(()),
            unavailable,
            failing_opens: std::sync::atomic::AtomicUsize::new(0),
            without_agents_at_start: without_agents,
            tokens,
            node_audit,
            stop: Arc::new(AtomicBool::new(false)),
        }))
    }

    /// How many vaults had no agent when the node started (awaiting their owner's setup).
    pub fn awaiting_setup_at_start(&self) -> usize {
        self.without_agents_at_start
    }

    fn slots(&self) -> Vec<(usize, Arc<Slot>)> {
        let vaults = self.vaults.read().unwrap_or_else(|p| p.into_inner());
        vaults.iter().enumerate().filter_map(|(i, s)| s.clone().map(|s| (i, s))).collect()
    }

    /// Opens a closed vault (no-op if open); touches SQLite.
    fn open_slot(&self, slot: usize, s: &Slot) -> Result<Arc<LiveVault>, VaultError> {
        let mut live = s.live.write().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = live.as_ref() {
            return Ok(v.clone());
        }
        let opened = (|| {
            if !s.checked.load(Ordering::Relaxed) {
                check_at_start(&s.path)?;
                s.checked.store(true, Ordering::Relaxed);
            }
            let master = self.dir.load_master_key()?;
            LiveVault::open(&self.dir, &master, &s.id, self.sync, (slot, self.tokens.clone()))
        })();
        let vault = match opened {
            Ok(v) => Arc::new(v),
            Err(e) => {
                let mut failure = s.failure.lock().unwrap_or_else(|p| p.into_inner());
                if failure.is_none() {
                    self.failing_opens.fetch_add(1, Ordering::SeqCst);
                    crate::edition::alert(
                        "vault_unavailable",
                        "a vault cannot be opened; its requests are answered 503 until it is repaired",
                        &[("vault", s.id.to_string()), ("error", e.to_string())],
                    );
                }
                *failure = Some(e.to_string());
                return Err(e);
            }
        };
        if s.failure.lock().unwrap_or_else(|p| p.into_inner()).take().is_some() {
            self.failing_opens.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(vault = %s.id, "vault opens again: served");
        }
        *live = Some(vault.clone());
        // Its agents are in the index now (a file without agents installs none: its hints
        // must go all the same).
        self.tokens.drop_hints(slot);
        *s.closed_stamp.lock().unwrap_or_else(|p| p.into_inner()) = None;
        // Opened for a reason (a request, a setup, another process's change): not idle yet.
        s.last_used.store(crate::store::now_ms(), Ordering::Relaxed);
        Ok(vault)
    }

    /// Closes the least recently used open vaults beyond the cap, and those unused for the
    /// idle time (one awaiting its owner's setup too: its setup link finds it through node.db's
    /// setup-code index). Returns how many were closed.
    pub fn close_idle(&self) -> usize {
        let cap = self.max_open.load(Ordering::Relaxed);
        let idle_ms = self.idle_ms.load(Ordering::Relaxed);
        let mut open: Vec<(i64, Arc<Slot>)> = self
            .slots()
            .into_iter()
            .filter(|(_, s)| s.open_now().is_some())
            .map(|(_, s)| (s.last_used.load(Ordering::Relaxed), s))
            .collect();
        open.sort_by_key(|(used, _)| *used);
        let idle_before = if idle_ms > 0 { crate::store::now_ms().saturating_sub(idle_ms) } else { i64::MIN };
        let idle = open.iter().take_while(|(used, _)| *used < idle_before).count();
        let excess = open.len().saturating_sub(cap).max(idle);
        if excess == 0 {
            return 0;
        }
        for (_, s) in open.iter().take(excess) {
            let mut live = s.live.write().unwrap_or_else(|p| p.into_inner());
            if let Some(v) = live.take() {
                s.closed_seq.store(v.seq(), Ordering::Relaxed);
                *s.closed_stamp.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
        }
        excess
    }

    /// Closes vaults unused for `idle` (`--vault-idle-secs`; zero: only the cap closes them).
    pub fn set_vault_idle(&self, idle: Duration) {
        self.idle_ms.store(i64::try_from(idle.as_millis()).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Opens closed vaults whose files another process changed (and stamps the newly closed),
    /// so their agents in the token index follow the file. Returns how many were opened.
    fn reopen_changed(&self) -> Result<usize, VaultError> {
        let mut opened = 0;
        let mut reads = 0;
        for (slot, s) in self.slots() {
            if s.open_now().is_some() {
                continue;
            }
            // Stamped before the read, so a write landing after it is seen next time. Closing
            // the vault (and this read) may checkpoint the file: that costs one more read, and
            // the sequence tells it from a real change.
            let now = file_stamp(&s.path);
            let touched = {
                let mut stamp = s.closed_stamp.lock().unwrap_or_else(|p| p.into_inner());
                let touched = *stamp != Some(now);
                // Past this pass's budget a touched file keeps its old stamp: the next pass
                // reads it. A node-wide job touching every file (a check, a retention run)
                // must not hold the watcher, which also closes idle vaults, for seconds.
                if touched && reads >= SEQ_READS_PER_PASS {
                    continue;
                }
                *stamp = Some(now);
                touched
            };
            if !touched {
                continue;
            }
            reads += 1;
            if crate::store::read_change_seq(&s.path)? != s.closed_seq.load(Ordering::Relaxed) {
                self.open_slot(slot, &s)?;
                opened += 1;
            }
        }
        Ok(opened)
    }

    /// Sets the open-vault cap (`--max-open-vaults`).
    pub fn set_max_open_vaults(&self, n: usize) {
        self.max_open.store(n.max(1), Ordering::Relaxed);
    }

    /// Brings the served set in line with node.db's registry: serves vaults registered since
    /// (by the management API or `clavitor vault add`; scanned, opened on demand) and drops
    /// retired ones, whose tokens stop authenticating at once. Returns (added, dropped).
    pub fn sync_registry(&self) -> Result<(usize, usize), VaultError> {
        let _serial = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let ids: HashSet<VaultId> = self.dir.vault_ids()?.into_iter().collect();
        let mut dropped = 0;
        {
            let mut vaults = self.vaults.write().unwrap_or_else(|p| p.into_inner());
            for (slot, v) in vaults.iter_mut().enumerate() {
                if let Some(retired) = v.as_ref().filter(|v| !ids.contains(&v.id)) {
                    if retired.failure.lock().unwrap_or_else(|p| p.into_inner()).take().is_some() {
                        self.failing_opens.fetch_sub(1, Ordering::SeqCst);
                    }
                    *v = None;
                    self.tokens.replace(slot, i64::MAX, &[]);
                    dropped += 1;
                }
            }
        }
        let served: HashSet<VaultId> = self.slots().into_iter().map(|(_, s)| s.id.clone()).collect();
        let mut new: Vec<&VaultId> =
            ids.iter().filter(|id| !served.contains(*id) && !self.unavailable.iter().any(|u| &u.id == *id)).collect();
        new.sort();
        if new.is_empty() {
            return Ok((0, dropped));
        }
        let mut added = 0;
        for id in new {
            if served.len() + added >= self.max_vaults {
                return Err(VaultError::Setup(format!("this edition serves at most {} vaults", self.max_vaults)));
            }
            let (slot, hashes) = scan(&self.dir, id)?;
            let mut vaults = self.vaults.write().unwrap_or_else(|p| p.into_inner());
            self.tokens.hint(vaults.len(), hashes);
            vaults.push(Some(Arc::new(slot)));
            added += 1;
        }
        Ok((added, dropped))
    }

    /// The vault files whose WAL the checkpointer keeps short (besides node.db): the open ones.
    fn files(&self) -> Vec<std::path::PathBuf> {
        self.vaults().iter().map(|v| v.path.clone()).collect()
    }

    /// The vaults that could not be opened at start, with the reason.
    pub fn unavailable(&self) -> &[UnavailableVault] {
        &self.unavailable
    }

    /// How many vaults are unavailable now: those that could not be served from the start, and
    /// those whose last open failed (checked at their first open, or damaged since).
    pub fn unavailable_count(&self) -> usize {
        self.unavailable.len() + self.failing_opens.load(Ordering::SeqCst)
    }

    /// The vaults unavailable now and why, as [`Node::unavailable_count`] counts them.
    pub fn unavailable_now(&self) -> Vec<(VaultId, String)> {
        let mut now: Vec<(VaultId, String)> =
            self.unavailable.iter().map(|u| (u.id.clone(), u.reason.clone())).collect();
        if self.failing_opens.load(Ordering::SeqCst) > 0 {
            for (_, slot) in self.slots() {
                if let Some(reason) = slot.failure.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                    now.push((slot.id.clone(), reason));
                }
            }
        }
        now
    }

    /// The data dir this node serves.
    pub fn data_dir(&self) -> &DataDir {
        &self.dir
    }

    /// The vaults open now (see [`Node::served_vaults`] for all).
    pub fn vaults(&self) -> Vec<Arc<LiveVault>> {
        self.slots().into_iter().filter_map(|(_, s)| s.open_now()).collect()
    }

    /// How many vaults this node serves, open or closed.
    pub fn served_vaults(&self) -> usize {
        self.slots().len()
    }

    /// The vault with this id, opened if it was closed (`None` if this node does not serve it
    /// or it cannot be opened).
    pub fn vault(&self, id: &str) -> Option<Arc<LiveVault>> {
        let (slot, s) = self.slots().into_iter().find(|(_, s)| s.id.as_str() == id)?;
        off_the_runtime(|| self.open_slot(slot, &s))
            .map_err(|e| tracing::error!(vault = %s.id, error = %e, "cannot open a vault"))
            .ok()
    }

    /// Starts serving a vault registered after start (a backup POP's new replica, commercial):
    /// the registry is read again, and the vault is opened with the master key like the others,
    /// its agents joining the token index at once.
    pub fn adopt(&self, id: &VaultId) -> Result<Arc<LiveVault>, VaultError> {
        self.sync_registry()?;
        let (slot, s) = self
            .slots()
            .into_iter()
            .find(|(_, s)| &s.id == id)
            .ok_or_else(|| VaultError::Setup(format!("vault {id} is not registered on this node")))?;
        off_the_runtime(|| self.open_slot(slot, &s))
    }

    pub fn authenticate(&self, hash: &TokenHash) -> Result<Principal, AuthFailure> {
        self.authenticate_at(hash, crate::store::now_ms())
    }

    /// [`authenticate`](Self::authenticate) judged at `now_ms` (unix milliseconds), for a caller
    /// that needs the clock anyway: one read per request instead of one per use.
    pub fn authenticate_at(&self, hash: &TokenHash, now_ms: i64) -> Result<Principal, AuthFailure> {
        if let Some((slot, agent)) = self.tokens.get(hash)
            && let Some(s) = self.vaults.read().unwrap_or_else(|p| p.into_inner()).get(slot).cloned().flatten()
        {
            let (vault, agent) = match s.open_now() {
                Some(v) => (v, agent),
                None => {
                    // Opening refreshes the agents from the file: the token is looked up again,
                    // so one revoked while the vault was closed is refused.
                    let vault = off_the_runtime(|| self.open_slot(slot, &s)).map_err(|e| {
                        tracing::error!(vault = %s.id, error = %e, "cannot open a closed vault");
                        AuthFailure::Unavailable(s.id.clone())
                    })?;
                    match self.tokens.get(hash) {
                        Some((again, agent)) if again == slot => (vault, agent),
                        _ => return Err(AuthFailure::Unknown),
                    }
                }
            };
            s.last_used.store(now_ms, Ordering::Relaxed);
            // Judged by the clock at each request, not only when the sweep has run: an expired
            // token is answered exactly like an unknown one.
            if agent.expired_at(now_ms.div_euclid(1000)) {
                return Err(AuthFailure::Unknown);
            }
            return Ok(Principal { vault, agent });
        }
        // A token of a vault not opened since start: open it, then look the token up among the
        // agents the open read and checked.
        if let Some(slot) = self.tokens.hinted(hash)
            && let Some(s) = self.vaults.read().unwrap_or_else(|p| p.into_inner()).get(slot).cloned().flatten()
        {
            let vault = off_the_runtime(|| self.open_slot(slot, &s)).map_err(|e| {
                tracing::error!(vault = %s.id, error = %e, "cannot open a vault");
                AuthFailure::Unavailable(s.id.clone())
            })?;
            s.last_used.store(crate::store::now_ms(), Ordering::Relaxed);
            return match self.tokens.get(hash) {
                Some((again, agent)) if again == slot && !agent.expired_at(crate::store::now_secs()) => {
                    Ok(Principal { vault, agent })
                }
                _ => Err(AuthFailure::Unknown),
            };
        }
        match self.unavailable.iter().find(|u| u.tokens.as_ref().is_none_or(|t| t.contains(hash))) {
            Some(u) => Err(AuthFailure::Unavailable(u.id.clone())),
            None => Err(AuthFailure::Unknown),
        }
    }

    /// Drops expired agents from the token index (bounded: nothing until the earliest expiry
    /// is due, then one pass over the index). Returns how many went.
    pub fn sweep_expired(&self) -> usize {
        self.tokens.sweep_expired(crate::store::now_secs())
    }

    /// How many tokens the index holds (expired ones leave it at the next sweep).
    pub fn indexed_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Refreshes every open vault (each updates its own part of the token index).
    pub fn refresh(&self) -> Result<(), VaultError> {
        let mut first_error = None;
        for vault in self.vaults() {
            if let Err(e) = vault.refresh() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Records a node-level event (e.g. a failed authentication) and waits for the commit.
    pub fn audit(&self, event: AuditEvent) -> Commit {
        self.node_audit.commit(event)
    }

    /// Starts the thread that picks up changes other processes make; stops with [`Node::stop`].
    pub fn spawn_watcher(self: &Arc<Self>) -> std::io::Result<JoinHandle<()>> {
        let node = Arc::clone(self);
        std::thread::Builder::new().name("vault-watch".into()).spawn(move || {
            let mut failing = false;
            let mut registry_failing = false;
            let mut closed_failing = false;
            let mut ticks: u64 = 0;
            let mut closed = 0;
            while !node.stop.load(Ordering::Relaxed) {
                std::thread::sleep(WATCH_INTERVAL);
                ticks = ticks.wrapping_add(1);
                node.sweep_expired();
                if ticks.is_multiple_of(SWEEP_EVERY) {
                    for vault in node.vaults() {
                        if let Err(e) = vault.sweep_challenges() {
                            tracing::warn!(error = %e, "cannot sweep expired WebAuthn challenges");
                        }
                        // A replication backup changes only through its primary's batches: the
                        // primary's own pruning reaches it.
                        if crate::edition::current().refuses_writes().is_none()
                            && let Err(e) = vault.prune_expired_derived()
                        {
                            tracing::warn!(error = %e, "cannot remove expired derived agents");
                        }
                    }
                    // Vaults added or retired by `clavitor vault add|rm` on this node.
                    alert_on_new_failure(
                        &mut registry_failing,
                        node.sync_registry().map(drop),
                        "vault_registry_failed",
                        "cannot follow the vault registry in node.db",
                    );
                }
                if ticks.is_multiple_of(5) {
                    alert_on_new_failure(
                        &mut closed_failing,
                        node.reopen_changed().map(drop),
                        "vault_refresh_failed",
                        "cannot open a closed vault another process changed",
                    );
                }
                closed += node.close_idle();
                // Not at every close: under churn (more vaults in use than may be open) a trim
                // at every tick would take the allocator's locks from the requests for nothing.
                if closed > 0 && ticks.is_multiple_of(TRIM_EVERY) {
                    release_freed_memory();
                    closed = 0;
                }
                alert_on_new_failure(
                    &mut failing,
                    node.refresh(),
                    "vault_refresh_failed",
                    "cannot refresh the vault view from disk; serving the last good one",
                );
            }
        })
    }

    /// Starts the thread that checkpoints every file's WAL; stops with [`Node::stop`].
    pub fn spawn_checkpointer(self: &Arc<Self>) -> Result<JoinHandle<()>, VaultError> {
        let node = Arc::clone(self);
        let mut checkpointer = crate::store::Checkpointer::open(&[self.dir.node_db_path()])?;
        std::thread::Builder::new()
            .name("wal-checkpoint".into())
            .spawn(move || {
                background_priority();
                let mut failing = false;
                while !node.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(CHECKPOINT_INTERVAL);
                    alert_on_new_failure(
                        &mut failing,
                        checkpointer.follow(&node.files()).and_then(|()| checkpointer.run()),
                        "wal_checkpoint_failed",
                        "cannot checkpoint a database WAL",
                    );
                }
            })
            .map_err(|e| VaultError::Setup(format!("cannot start the checkpoint thread: {e}")))
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Returns the heap pages closed vaults freed to the kernel: their connections and caches are
/// many small allocations, which glibc would otherwise keep (in the arena of whichever thread
/// made them) and the process's RSS with them.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Lowers the calling thread's scheduling priority (nice 10). A checkpoint copies the WAL into
/// the database and fsyncs; on a 2-core node it otherwise competes for a core with the request
/// workers and the audit writer, and the reads in flight wait.
fn background_priority() {
    // SAFETY: gettid and setpriority only read and set this thread's scheduling attributes.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the checkpoint thread's priority");
    }
}

/// A registered vault's slot, closed, from a read-only scan of its file; and its token hashes
/// (unchecked, for the index's hints). The stamp is taken before the read, so a write landing
/// after it is seen by the watcher.
fn scan(dir: &DataDir, id: &VaultId) -> Result<(Slot, Vec<String>), VaultError> {
    let path = dir.vault_path(id);
    if !path.exists() {
        return Err(VaultError::Setup(format!("vault file {} is missing", path.display())));
    }
    let stamp = file_stamp(&path);
    let (hashes, seq) = crate::store::scan_vault_file(&path)?;
    Ok((Slot::closed(id.clone(), path, stamp, seq), hashes))
}

/// The check a vault file must pass before it is served: SQLite's `quick_check`.
fn check_at_start(path: &std::path::Path) -> Result<(), VaultError> {
    let verdict = crate::store::quick_check(path)?;
    if verdict == "ok" {
        Ok(())
    } else {
        // The verdict starts with "*** in database main ***"; the first real finding says more.
        let finding = verdict.lines().find(|l| !l.starts_with("***")).unwrap_or("no details");
        Err(VaultError::Corrupt(format!("integrity check failed: {finding}")))
    }
}

impl UnavailableVault {
    /// Records why `id` cannot be served, tells the operator, and reads what it can of the
    /// file's token hashes.
    fn salvage(id: VaultId, path: &std::path::Path, error: &VaultError) -> Self {
        let reason = error.to_string();
        crate::edition::alert(
            "vault_unavailable",
            "a vault cannot be opened; its requests are answered 503 until it is repaired and the node restarted",
            &[("vault", id.to_string()), ("error", reason.clone())],
        );
        let tokens = crate::store::salvage_token_hashes(path)
            .ok()
            .map(|hashes| hashes.into_iter().map(TokenHash::from_stored).collect());
        Self { id, reason, tokens }
    }
}

/// Alerts on the first failure of a streak only: a periodic task failing every tick must not
/// flood the operator.
fn alert_on_new_failure<E: std::fmt::Display>(failing: &mut bool, result: Result<(), E>, kind: &str, message: &str) {
    match result {
        Ok(()) => *failing = false,
        Err(e) => {
            if !*failing {
                crate::edition::alert(kind, message, &[("error", e.to_string())]);
            }
            *failing = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: i64, expires_at: Option<i64>) -> (TokenHash, Arc<Agent>) {
        let agent = Agent {
            id: AgentId(id),
            name: format!("a{id}"),
            scopes: ScopeSet::default(),
            all_access: false,
            admin: false,
            created_at: 0,
            expires_at,
            parent_id: None,
            reveal_to_model: false,
            proxy_only_listed: false,
        };
        (TokenHash::from_stored(format!("{id:064x}")), Arc::new(agent))
    }

    #[test]
    fn agents_derived_from_a_proxy_restricted_agent_are_restricted_too() {
        let mut list: Vec<_> = (1..=5).map(|i| agent(i, None)).collect();
        let with = |(h, a): &(TokenHash, Arc<Agent>), parent: Option<i64>, restricted: bool| {
            let mut a = (**a).clone();
            a.parent_id = parent.map(AgentId);
            a.proxy_only_listed = restricted;
            (h.clone(), Arc::new(a))
        };
        // 1 -> 2 -> 3 (restricted at 2), 4 on its own, 5 derived from the unrestricted 1.
        list[1] = with(&list[1], Some(1), true);
        list[2] = with(&list[2], Some(2), false);
        list[4] = with(&list[4], Some(1), false);
        inherit_proxy_restriction(&mut list);
        let flags: Vec<bool> = list.iter().map(|(_, a)| a.proxy_only_listed).collect();
        assert_eq!(flags, [false, true, true, false, false]);
        // A loop in a forged file ends.
        let mut looped = vec![with(&agent(7, None), Some(8), false), with(&agent(8, None), Some(7), false)];
        inherit_proxy_restriction(&mut looped);
        assert!(!looped[0].1.proxy_only_listed);
    }

    #[test]
    fn expired_agents_leave_the_index_when_their_time_comes_and_not_before() {
        let now = crate::store::now_secs();
        let index = TokenIndex::default();
        let (forever, soon, later, past) =
            (agent(1, None), agent(2, Some(now + 100)), agent(3, Some(now + 200)), agent(4, Some(now - 1)));
        index.replace(0, 1, &[forever.clone(), soon.clone(), later.clone(), past.clone()]);
        assert_eq!(index.len(), 3, "an agent already expired is never indexed");
        assert!(index.get(&past.0).is_none());
        assert_eq!(index.next_expiry.load(Ordering::Relaxed), now + 100);
        assert_eq!(index.sweep_expired(now + 99), 0, "nothing is due yet");
        assert_eq!(index.sweep_expired(now + 100), 1);
        assert!(index.get(&soon.0).is_none());
        assert_eq!(index.next_expiry.load(Ordering::Relaxed), now + 200, "the next one is due next");
        assert_eq!(index.sweep_expired(now + 1000), 1);
        assert_eq!(index.next_expiry.load(Ordering::Relaxed), i64::MAX);
        assert!(index.get(&forever.0).is_some() && index.len() == 1);
    }

    #[test]
    fn an_access_request_alone_injects_nothing() {
        use crate::audit::{Action, Actor, AuditEvent, Outcome};
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("data"), None);
        dir.init().unwrap();
        let node = Node::start(&dir, 1, AuditSync::Normal).unwrap();
        let vault = node.vault(dir.pick_vault(None).unwrap().as_str()).unwrap();
        let mut asker = (*agent(5, None).1).clone();
        asker.scopes = ScopeSet::parse("0005").unwrap();
        let event = AuditEvent::new(Actor::Agent(asker.id), Action::ProxyRequest, Outcome::Ok);
        let (row, new) = vault.request_proxy_access(&asker, "api.example.test", "please", &event).unwrap();
        assert!(new && row.host == "api.example.test");
        assert!(vault.injections(&asker, "api.example.test", "GET", "/").unwrap().injections.is_empty());
        assert!(vault.visible_entries(&asker).is_empty());
        node.stop();
    }

    #[test]
    fn injections_follow_scopes_host_method_and_path() {
        use crate::audit::{Action, Actor, AuditEvent, Outcome};
        use crate::vault::entry::EntryInput;
        use crate::vault::inject::Filled;
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("data"), None);
        dir.init().unwrap();
        let node = Node::start(&dir, 1, AuditSync::Normal).unwrap();
        let vault = node.vault(dir.pick_vault(None).unwrap().as_str()).unwrap();
        let event = AuditEvent::new(Actor::LocalOperator, Action::EntryCreate, Outcome::Ok);
        let add = |json: &str| {
            let input: EntryInput = serde_json::from_str(json).unwrap();
            vault.change(|db, id, key| ops::add_entry(db, id, key, input, &event)).unwrap()
        };
        let fields = r#""fields":[{"name":"api_key","kind":"secret","value":"sk-first-0001"}]"#;
        let first = add(&format!(
            r#"{{"title":"a","scopes":["00aa"],{fields},"inject_only":true,"inject":[{{"host":"api.example.test","path_prefix":"/v1/","methods":["GET"],"place":{{"kind":"header","name":"Authorization","template":"Bearer {{{{api_key}}}}"}}}}]}}"#
        ));
        // Same header from a later entry: loses to the first. A query rule: added.
        let fields2 = r#""fields":[{"name":"k","kind":"secret","value":"sk-second-002"}]"#;
        add(&format!(
            r#"{{"title":"b","scopes":["00aa"],{fields2},"inject":[{{"host":"*.example.test","place":{{"kind":"header","name":"authorization","template":"{{{{k}}}}"}}}},{{"host":"api.example.test","place":{{"kind":"query","param":"key","field":"k"}}}}]}}"#
        ));
        // Not readable by the agent.
        add(&format!(
            r#"{{"title":"c","scopes":["00bb"],{fields},"inject":[{{"host":"api.example.test","place":{{"kind":"header","name":"X-Other","template":"{{{{api_key}}}}"}}}}]}}"#
        ));
        let mut reader = (*agent(5, None).1).clone();
        reader.scopes = ScopeSet::parse("0005,00aa").unwrap();
        let plan = vault.injections(&reader, "api.example.test", "GET", "/v1/models").unwrap();
        let got: Vec<(i64, String)> = plan
            .injections
            .iter()
            .map(|i| match &i.place {
                Filled::Header { name, value } => (i.entry_id, format!("{name}: {}", value.as_str())),
                Filled::Query { param, value } => (i.entry_id, format!("?{param}={}", value.as_str())),
            })
            .collect();
        assert_eq!(
            got,
            [(first, "Authorization: Bearer sk-first-0001".to_owned()), (first + 1, "?key=sk-second-002".to_owned())]
        );
        assert!(plan.mask.iter().any(|m| m.as_str() == "sk-second-002"), "a losing rule's value is not injected");
        assert!(!plan.mask.iter().any(|m| m.as_str().contains("X-Other")));
        // Method and path outside the first rule: only the second entry's rules apply.
        let plan = vault.injections(&reader, "api.example.test", "POST", "/v1/models").unwrap();
        assert!(matches!(&plan.injections[0].place, Filled::Header { value, .. } if value.as_str() == "sk-second-002"));
        // Another host: only the wildcard; a look-alike host: nothing.
        let plan = vault.injections(&reader, "evil.example.test", "GET", "/v1/models").unwrap();
        assert_eq!(plan.injections.len(), 1);
        for host in ["example.test", "api.example.test.evil.test", "a.b.example.test"] {
            assert!(vault.injections(&reader, host, "GET", "/v1/").unwrap().injections.is_empty(), "{host}");
        }
        // An agent without the scope gets nothing.
        let stranger = agent(6, None).1;
        assert!(vault.injections(&stranger, "api.example.test", "GET", "/v1/x").unwrap().injections.is_empty());
        let cached = match vault.lookup(&reader, first) {
            Lookup::Visible(e) => e,
            _ => panic!("visible"),
        };
        assert!(cached.inject_only);
        node.stop();
    }
}
