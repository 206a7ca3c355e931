//! Replicated entry rows (commercial, issue 14 items 3 and 5): the primary's dirty rows and
//! their acknowledgement, and a backup's apply of a batch exactly as the primary stored it.
//!
//! Primary: [`VaultDb::dirty_entries`] reads the oldest dirty rows (tombstones included) in
//! change order; [`VaultDb::mark_replicated`] clears `dirty` only for a row whose `change_seq`
//! is still the one that was sent, so a row changed while its batch was in flight stays dirty
//! and goes again. The backlog is the dirty rows on disk; nothing is held in memory.
//!
//! Rows keep the primary's id, uuid, sealed payload and MAC: the MAC covers the id, so a row is
//! valid here only under the same data key (which the backup received sealed to it, see
//! `crypto::key_transport`). A batch with any row whose MAC does not verify is refused whole and
//! changes nothing. Applying is idempotent and last write wins by (updated_at, version); on an
//! exact tie a tombstone wins, otherwise the stored row stays (a resend of the same row). Every
//! row applied advances the backup's own `change_seq`, so the running server's change watcher
//! picks it up. Applied rows are never dirty: a backup never replicates onward. Never decrypts.

use super::audit_sql::{audit_settled_below, next_free_audit_id};
use rusqlite::{OptionalExtension, params};

use super::audit_sql::{AuditRecord, AuditRow};
use super::vault_db::{AgentRow, EntryRow, VaultDb, bump_seq};
use super::webauthn_db::CredentialRow;
use super::{Ctx, StoreError};

/// What one batch did: rows written, and rows skipped because the stored row was as new or newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    pub written: usize,
    pub skipped: usize,
    /// The batch's auth snapshot replaced the held one.
    pub auth: bool,
    /// Audit rows inserted (a resent row is not counted).
    pub audit: usize,
}

/// Which watermark a primary keeps per backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    /// The last acknowledged entry row's change_seq, and with `EntryId` its id.
    Entries,
    EntryId,
    Auth,
    Audit,
}

impl MarkKind {
    fn as_str(self) -> &'static str {
        match self {
            MarkKind::Entries => "entries",
            MarkKind::EntryId => "entry_id",
            MarkKind::Auth => "auth",
            MarkKind::Audit => "audit",
        }
    }
}

/// What one backup has not acknowledged of a vault yet, by its watermarks: entry rows after the
/// (change_seq, id) mark, the vault's own audit rows after the audit mark, and whether the auth
/// snapshot moved past the auth mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    pub entries: u64,
    pub audit: u64,
    pub auth: bool,
}

impl Backlog {
    /// Rows still to ship, the auth snapshot counting as one.
    pub fn rows(&self) -> u64 {
        self.entries.saturating_add(self.audit).saturating_add(u64::from(self.auth))
    }

    pub fn plus(self, other: Backlog) -> Backlog {
        Backlog {
            entries: self.entries.saturating_add(other.entries),
            audit: self.audit.saturating_add(other.audit),
            auth: self.auth || other.auth,
        }
    }
}

/// Agents, passkeys and the wrapped L2 keyring as stored, with the `auth_seq` they belong to.
#[derive(Debug, Clone)]
pub struct AuthSnapshot {
    pub seq: i64,
    pub agents: Vec<AgentRow>,
    pub passkeys: Vec<CredentialRow>,
    pub keyring: Option<String>,
}

/// True if `incoming` should replace the stored row with (updated_at, version, deleted).
fn newer(incoming: &EntryRow, stored: (i64, i64, bool)) -> bool {
    let (updated_at, version, deleted) = stored;
    match (incoming.updated_at, incoming.version).cmp(&(updated_at, version)) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        // A tombstone beats a write with the same stamp; anything else is a resend.
        std::cmp::Ordering::Equal => incoming.deleted && !deleted,
    }
}

impl VaultDb {
    /// The oldest `limit` dirty entry rows, in change order.
    pub fn dirty_entries(&self, limit: u32) -> Result<Vec<EntryRow>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, uuid, scopes, created_at, updated_at, version, deleted, change_seq, data, mac
                 FROM entries WHERE dirty = 1 ORDER BY change_seq LIMIT ?1",
            )
            .ctx(&self.path)?;
        let rows = st.query_map([limit], super::vault_db::entry_row).ctx(&self.path)?;
        rows.collect::<Result<_, _>>().ctx(&self.path)
    }

    /// How many entry rows wait for their first acknowledgement (`dirty`; the backlog per backup
    /// is [`VaultDb::backlog_for`]).
    pub fn dirty_count(&self) -> Result<u64, StoreError> {
        let n: i64 =
            self.conn.query_row("SELECT count(*) FROM entries WHERE dirty = 1", [], |r| r.get(0)).ctx(&self.path)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Marks the acknowledged rows, given as (id, change_seq as sent), replicated. A row whose
    /// change_seq moved on since it was sent stays dirty. Returns how many were marked.
    pub fn mark_replicated(&mut self, acked: &[(i64, i64)], now_ms: i64) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let mut marked = 0;
        for (id, seq) in acked {
            marked += tx
                .execute(
                    "UPDATE entries SET dirty = 0, replicated_at = ?3 WHERE id = ?1 AND change_seq = ?2 AND dirty = 1",
                    params![id, seq, now_ms],
                )
                .ctx(&path)?;
        }
        tx.commit().ctx(&path)?;
        Ok(marked)
    }

    /// Applies replicated entry rows in one transaction (see the module docs). Refused whole,
    /// with nothing changed, if a row's MAC does not verify under this vault's key or its uuid
    /// belongs to another id here.
    pub fn apply_replicated_entries(&mut self, rows: &[EntryRow], now_ms: i64) -> Result<Applied, StoreError> {
        self.apply_entries(rows, now_ms, false)
    }

    /// Like [`Self::apply_replicated_entries`]; with `repair` (the primary resends a range the
    /// divergence check found different) the primary's row replaces the stored one whatever its
    /// stamp says, since the stored one was changed behind replication's back.
    fn apply_entries(&mut self, rows: &[EntryRow], now_ms: i64, repair: bool) -> Result<Applied, StoreError> {
        if let Some(bad) = rows.iter().find(|r| !self.entry_authentic(r)) {
            return Err(StoreError::Conflict(format!(
                "replicated entry {} does not verify under this vault's key",
                bad.id
            )));
        }
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let mut out = Applied::default();
        // One change sequence for the whole batch (as an import's rows share one): the running
        // server's watcher reads every row after its last sequence either way. Statements are
        // prepared once per connection, not per row: a batch of 1000 rows is 3000 statements.
        let mut seq = None;
        {
            let mut stored_q =
                tx.prepare_cached("SELECT updated_at, version, deleted FROM entries WHERE id = ?1").ctx(&path)?;
            let mut uuid_q = tx.prepare_cached("SELECT id FROM entries WHERE uuid = ?1").ctx(&path)?;
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO entries (id, uuid, scopes, created_at, updated_at, version, deleted, change_seq,
                                          dirty, replicated_at, data, mac)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?10, ?11)
                     ON CONFLICT(id) DO UPDATE SET scopes = excluded.scopes, updated_at = excluded.updated_at,
                         version = excluded.version, deleted = excluded.deleted, change_seq = excluded.change_seq,
                         dirty = 0, replicated_at = excluded.replicated_at, data = excluded.data, mac = excluded.mac",
                )
                .ctx(&path)?;
            for r in rows {
                let stored: Option<(i64, i64, bool)> =
                    stored_q.query_row([r.id], |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?))).optional().ctx(&path)?;
                let uuid_owner: Option<i64> = uuid_q.query_row([&r.uuid], |x| x.get(0)).optional().ctx(&path)?;
                if uuid_owner.is_some_and(|id| id != r.id) {
                    return Err(StoreError::Conflict(format!("replicated entry {} reuses another entry's uuid", r.id)));
                }
                if !repair && stored.is_some_and(|s| !newer(r, s)) {
                    out.skipped += 1;
                    continue;
                }
                let seq = match seq {
                    Some(s) => s,
                    None => *seq.insert(bump_seq(&tx, &path)?),
                };
                upsert
                    .execute(params![
                        r.id,
                        r.uuid,
                        r.scopes,
                        r.created_at,
                        r.updated_at,
                        r.version,
                        r.deleted,
                        seq,
                        now_ms,
                        r.data,
                        r.mac
                    ])
                    .ctx(&path)?;
                out.written += 1;
            }
        }
        tx.commit().ctx(&path)?;
        Ok(out)
    }

    /// At most `limit` entry rows after the watermark `(seq, id)` in (change_seq, id) order. Rows
    /// written in one transaction share a change_seq (an import), so the id breaks the tie and
    /// a batch may end inside one transaction's rows without skipping any.
    pub fn entries_after(&self, (seq, id): (i64, i64), limit: u32) -> Result<Vec<EntryRow>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, uuid, scopes, created_at, updated_at, version, deleted, change_seq, data, mac
                 FROM entries WHERE change_seq > ?1 OR (change_seq = ?1 AND id > ?2)
                 ORDER BY change_seq, id LIMIT ?3",
            )
            .ctx(&self.path)?;
        let rows = st.query_map(params![seq, id, limit.max(1)], super::vault_db::entry_row).ctx(&self.path)?;
        rows.collect::<Result<_, _>>().ctx(&self.path)
    }

    /// `meta.auth_seq`: advanced by triggers on every change to agents, passkeys and the keyring.
    pub fn auth_seq(&self) -> Result<i64, StoreError> {
        let v: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'auth_seq'", [], |r| r.get(0))
            .optional()
            .ctx(&self.path)?;
        Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// Everything that lets an agent in, as stored (MACs included): agents, passkeys and the
    /// wrapped L2 keyring, read in one transaction with the `auth_seq` they belong to.
    pub fn auth_snapshot(&mut self) -> Result<AuthSnapshot, StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().ctx(&path)?;
        let seq: String = tx.query_row("SELECT value FROM meta WHERE key = 'auth_seq'", [], |r| r.get(0)).ctx(&path)?;
        let agents = {
            let mut st =
                tx.prepare(&format!("SELECT {} FROM agents ORDER BY id", super::vault_db::AGENT_COLS)).ctx(&path)?;
            let rows = st.query_map([], super::vault_db::agent_row).ctx(&path)?;
            rows.collect::<Result<Vec<_>, _>>().ctx(&path)?
        };
        let passkeys = {
            let mut st = tx
                .prepare(
                    "SELECT id, CAST(public_key AS TEXT), sign_count, name, created_at, agent_id, mac
                     FROM webauthn_credentials ORDER BY id",
                )
                .ctx(&path)?;
            let rows = st
                .query_map([], |r| {
                    Ok(CredentialRow {
                        id: r.get(0)?,
                        passkey: r.get(1)?,
                        sign_count: r.get(2)?,
                        name: r.get(3)?,
                        created_at: r.get(4)?,
                        agent_id: r.get(5)?,
                        mac: r.get(6)?,
                    })
                })
                .ctx(&path)?;
            rows.collect::<Result<Vec<_>, _>>().ctx(&path)?
        };
        let keyring: Option<String> =
            tx.query_row("SELECT value FROM meta WHERE key = 'l2_keyring'", [], |r| r.get(0)).optional().ctx(&path)?;
        tx.commit().ctx(&path)?;
        Ok(AuthSnapshot { seq: seq.parse().unwrap_or(0), agents, passkeys, keyring })
    }

    /// The vault's own audit rows after id `after` (never rows replicated into it), oldest first.
    pub fn audit_after(&self, after: i64, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(concat!(
                "SELECT id, ts, actor, agent_id, action, entry_id, client, outcome, detail FROM audit
                     WHERE id > ?1 AND source_pop IS NULL AND id < ",
                audit_settled_below!(),
                " ORDER BY id LIMIT ?2"
            ))
            .ctx(&self.path)?;
        let rows = st
            .query_map(params![after, limit], |r| {
                Ok(AuditRow {
                    id: r.get(0)?,
                    record: AuditRecord {
                        ts: r.get(1)?,
                        actor: r.get::<_, String>(2)?.into(),
                        agent_id: r.get(3)?,
                        action: r.get::<_, String>(4)?.into(),
                        entry_id: r.get(5)?,
                        client: r.get(6)?,
                        outcome: r.get::<_, String>(7)?.into(),
                        detail: r.get(8)?,
                    },
                })
            })
            .ctx(&self.path)?;
        rows.collect::<Result<_, _>>().ctx(&self.path)
    }

    /// What `backup` has not acknowledged of this vault (see [`Backlog`]), read in one
    /// transaction so the three parts agree.
    pub fn backlog_for(&mut self, backup: &str) -> Result<Backlog, StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().ctx(&path)?;
        let mark = |kind: MarkKind| mark_of(&tx, &path, backup, kind);
        let (seq, id, auth, audit) =
            (mark(MarkKind::Entries)?, mark(MarkKind::EntryId)?, mark(MarkKind::Auth)?, mark(MarkKind::Audit)?);
        let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<u64, StoreError> {
            let n: i64 = tx.query_row(sql, p, |r| r.get(0)).ctx(&path)?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        let entries =
            count("SELECT count(*) FROM entries WHERE change_seq > ?1 OR (change_seq = ?1 AND id > ?2)", &[&seq, &id])?;
        let audit = count(
            concat!(
                "SELECT count(*) FROM audit WHERE id > ?1 AND source_pop IS NULL AND id < ",
                audit_settled_below!()
            ),
            &[&audit],
        )?;
        let auth_seq: Option<String> =
            tx.query_row("SELECT value FROM meta WHERE key = 'auth_seq'", [], |r| r.get(0)).optional().ctx(&path)?;
        let auth = auth_seq.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0) > auth;
        drop(tx);
        Ok(Backlog { entries, audit, auth })
    }

    /// The watermarks this primary holds for `backup`: (entries change_seq, entry id, auth, audit).
    pub fn replication_marks(&self, backup: &str) -> Result<[i64; 4], StoreError> {
        Ok([
            self.replication_mark(backup, MarkKind::Entries)?,
            self.replication_mark(backup, MarkKind::EntryId)?,
            self.replication_mark(backup, MarkKind::Auth)?,
            self.replication_mark(backup, MarkKind::Audit)?,
        ])
    }

    /// The watermark this primary holds for `backup` and `kind` (0: nothing acknowledged).
    pub fn replication_mark(&self, backup: &str, kind: MarkKind) -> Result<i64, StoreError> {
        mark_of(&self.conn, &self.path, backup, kind)
    }

    /// Records what `backup` acknowledged, in one transaction: the watermarks (one worker
    /// sends to a backup, in order, so each is the newer one) and the acknowledged entry rows, given as (id, change_seq as sent), stop being dirty
    /// unless they changed since.
    pub fn acknowledge(
        &mut self,
        backup: &str,
        marks: &[(MarkKind, i64)],
        entries: &[(i64, i64)],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        for (kind, seq) in marks {
            tx.execute(
                "INSERT INTO replication_marks (backup_id, kind, seq, acked_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(backup_id, kind) DO UPDATE SET seq = excluded.seq, acked_at = excluded.acked_at",
                params![backup, kind.as_str(), seq, now_ms],
            )
            .ctx(&path)?;
        }
        {
            let mut clear = tx
                .prepare_cached(
                    "UPDATE entries SET dirty = 0, replicated_at = ?3 WHERE id = ?1 AND change_seq = ?2 AND dirty = 1",
                )
                .ctx(&path)?;
            for (id, seq) in entries {
                clear.execute(params![id, seq, now_ms]).ctx(&path)?;
            }
        }
        tx.commit().ctx(&path)
    }

    /// The source POP this vault is a replica of (`None`: a vault of this node's own).
    pub fn replica_of(&self) -> Result<Option<String>, StoreError> {
        self.meta("replica_of")
    }

    /// A backup's apply of one batch, in one transaction (see the module docs): entries (last
    /// write wins), the auth snapshot if newer than the one held (agents and passkeys replaced
    /// whole, so a revoked agent is gone here too), and audit rows (a resend is ignored).
    /// Refused whole, with nothing changed, if any entry, agent or passkey MAC does not verify.
    pub fn apply_replicated_batch(
        &mut self,
        source_pop: &str,
        entries: &[EntryRow],
        auth: Option<&AuthSnapshot>,
        audit: &[AuditRow],
        now_ms: i64,
        repair: bool,
    ) -> Result<Applied, StoreError> {
        if let Some(a) = auth {
            if let Some(bad) = a.agents.iter().find(|r| !self.agent_authentic(r)) {
                return Err(StoreError::Conflict(format!(
                    "replicated agent {} does not verify under this vault's key",
                    bad.id
                )));
            }
            if let Some(bad) = a.passkeys.iter().find(|r| !self.credential_authentic(r)) {
                return Err(StoreError::Conflict(format!(
                    "replicated passkey {} does not verify under this vault's key",
                    bad.id
                )));
            }
        }
        let source = source_pop.to_owned();
        self.in_one_transaction(|db| {
            let mut out = db.apply_entries(entries, now_ms, repair)?;
            let path = db.path.clone();
            let tx = db.write_tx()?;
            let held: Option<String> = tx
                .query_row("SELECT value FROM meta WHERE key = 'replica_auth_seq'", [], |r| r.get(0))
                .optional()
                .ctx(&path)?;
            let held: i64 = held.and_then(|v| v.parse().ok()).unwrap_or(-1);
            if let Some(a) = auth.filter(|a| a.seq > held) {
                bump_seq(&tx, &path)?;
                tx.execute("DELETE FROM agents", []).ctx(&path)?;
                for r in &a.agents {
                    tx.execute(
                        "INSERT INTO agents (id, token_hash, name, scopes, all_access, admin, created_at, mac,
                             expires_at, parent_id, reveal_to_model, proxy_only_listed)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                        params![
                            r.id,
                            r.token_hash,
                            r.name,
                            r.scopes,
                            r.all_access,
                            r.admin,
                            r.created_at,
                            r.mac,
                            r.expires_at,
                            r.parent_id,
                            r.reveal_to_model,
                            r.proxy_only_listed
                        ],
                    )
                    .ctx(&path)?;
                }
                tx.execute("DELETE FROM webauthn_credentials", []).ctx(&path)?;
                for p in &a.passkeys {
                    tx.execute(
                        "INSERT INTO webauthn_credentials (id, public_key, sign_count, name, created_at, agent_id, mac)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![p.id, p.passkey.as_bytes(), p.sign_count, p.name, p.created_at, p.agent_id, p.mac],
                    )
                    .ctx(&path)?;
                }
                match &a.keyring {
                    Some(k) => tx.execute(
                        "INSERT INTO meta (key, value) VALUES ('l2_keyring', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1",
                        [k],
                    ),
                    None => tx.execute("DELETE FROM meta WHERE key = 'l2_keyring'", []),
                }
                .ctx(&path)?;
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('replica_auth_seq', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1",
                    [a.seq.to_string()],
                )
                .ctx(&path)?;
                out.auth = true;
            }
            let mut insert_audit = tx
                .prepare_cached(
                    concat!(
                        "INSERT OR IGNORE INTO audit (id, ts, actor, agent_id, action, entry_id, client, outcome, detail,
                             source_pop, source_id) VALUES (",
                        next_free_audit_id!(),
                        ", ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                    ),
                )
                .ctx(&path)?;
            for r in audit {
                let rec = &r.record;
                out.audit += insert_audit
                    .execute(params![
                            rec.ts,
                            rec.actor,
                            rec.agent_id,
                            rec.action,
                            rec.entry_id,
                            rec.client,
                            rec.outcome,
                            rec.detail,
                            source,
                            r.id
                        ])
                    .ctx(&path)?;
            }
            drop(insert_audit);
            tx.commit().ctx(&path)?;
            Ok(out)
        })
    }

    /// The divergence digest: for each range of `width` entry ids that holds rows, the SHA-256
    /// over its rows as stored (every column replication carries), as (first id of the range,
    /// hex). Equal on both sides when the backup holds exactly what the primary sent.
    pub fn entry_digests(&self, width: i64) -> Result<Vec<(i64, String)>, StoreError> {
        digests(&self.conn, &self.path, width)
    }

    /// [`Self::entry_digests`], but only if `backup` has acknowledged every entry row, checked in
    /// the same read transaction; `None` while rows wait. A digest taken while a write is still on
    /// its way to the backup would report a difference that is only lag.
    pub fn settled_entry_digests(
        &mut self,
        backup: &str,
        width: i64,
    ) -> Result<Option<Vec<(i64, String)>>, StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().ctx(&path)?;
        let mark = |kind: MarkKind| mark_of(&tx, &path, backup, kind);
        let (seq, id) = (mark(MarkKind::Entries)?, mark(MarkKind::EntryId)?);
        let waiting: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM entries WHERE change_seq > ?1 OR (change_seq = ?1 AND id > ?2))",
                params![seq, id],
                |r| r.get(0),
            )
            .ctx(&path)?;
        let out = if waiting { None } else { Some(digests(&tx, &path, width)?) };
        drop(tx);
        Ok(out)
    }
}

/// See [`VaultDb::entry_digests`].
/// The watermark held for `backup` and `kind` (0: nothing acknowledged), read on `conn` (a
/// transaction derefs to one, so callers reading several things in one snapshot use this too).
fn mark_of(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
    backup: &str,
    kind: MarkKind,
) -> Result<i64, StoreError> {
    let v: Option<i64> = conn
        .query_row(
            "SELECT seq FROM replication_marks WHERE backup_id = ?1 AND kind = ?2",
            params![backup, kind.as_str()],
            |r| r.get(0),
        )
        .optional()
        .ctx(path)?;
    Ok(v.unwrap_or(0))
}

fn digests(conn: &rusqlite::Connection, path: &std::path::Path, width: i64) -> Result<Vec<(i64, String)>, StoreError> {
    use sha2::{Digest, Sha256};
    let width = width.max(1);
    let mut st = conn
        .prepare(
            "SELECT id, uuid, scopes, created_at, updated_at, version, deleted, data, coalesce(mac, x'')
                 FROM entries ORDER BY id",
        )
        .ctx(path)?;
    let mut rows = st.query([]).ctx(path)?;
    let mut out: Vec<(i64, String)> = Vec::new();
    let mut current: Option<(i64, Sha256)> = None;
    while let Some(r) = rows.next().ctx(path)? {
        let id: i64 = r.get(0).ctx(path)?;
        let lo = id.div_euclid(width) * width;
        if current.as_ref().is_none_or(|(l, _)| *l != lo) {
            if let Some((l, h)) = current.take() {
                out.push((l, hex::encode(h.finalize())));
            }
            current = Some((lo, Sha256::new()));
        }
        let Some((_, h)) = current.as_mut() else { continue };
        let text = |i: usize| r.get::<_, String>(i);
        let int = |i: usize| r.get::<_, i64>(i);
        let blob = |i: usize| r.get::<_, Vec<u8>>(i);
        let (uuid, scopes, data, mac) = (text(1), text(2), blob(7), blob(8));
        let nums = [id, int(3).ctx(path)?, int(4).ctx(path)?, int(5).ctx(path)?, int(6).ctx(path)?];
        for n in nums {
            h.update(n.to_le_bytes());
        }
        for part in [uuid.ctx(path)?.into_bytes(), scopes.ctx(path)?.into_bytes(), data.ctx(path)?, mac.ctx(path)?] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(&part);
        }
    }
    if let Some((l, h)) = current.take() {
        out.push((l, hex::encode(h.finalize())));
    }
    Ok(out)
}

impl VaultDb {
    /// The entry rows with ids in `lo..=hi`, as stored (a repair resend).
    pub fn entries_in(&self, lo: i64, hi: i64) -> Result<Vec<EntryRow>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, uuid, scopes, created_at, updated_at, version, deleted, change_seq, data, mac
                 FROM entries WHERE id BETWEEN ?1 AND ?2 ORDER BY id",
            )
            .ctx(&self.path)?;
        let rows = st.query_map(params![lo, hi], super::vault_db::entry_row).ctx(&self.path)?;
        rows.collect::<Result<_, _>>().ctx(&self.path)
    }

    /// Makes this (new, empty) vault file a replica of `source_pop`: its writes come only from
    /// that POP's batches.
    pub fn set_replica_of(&mut self, source_pop: &str) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('replica_of', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1",
            [source_pop],
        )
        .ctx(&path)?;
        tx.commit().ctx(&path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::DataKey;
    use crate::store::AuditRecord;

    struct Pair {
        dir: std::path::PathBuf,
        primary: VaultDb,
        backup: VaultDb,
    }

    impl Drop for Pair {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn pair(backup_key: &DataKey) -> (Pair, DataKey) {
        let dir =
            std::env::temp_dir().join(format!("clavitor-rep-{}", hex::encode(crate::crypto::random_bytes::<8>())));
        std::fs::create_dir_all(&dir).unwrap();
        let dk = DataKey::generate();
        let mut primary = VaultDb::open(&dir.join("p.db")).unwrap();
        primary.set_row_key(dk.row_key(), "v1");
        let mut backup = VaultDb::open(&dir.join("b.db")).unwrap();
        backup.set_row_key(backup_key.row_key(), "v1");
        (Pair { dir, primary, backup }, dk)
    }

    fn audit() -> AuditRecord {
        AuditRecord {
            ts: 0,
            actor: "test".to_owned().into(),
            agent_id: None,
            action: "entry.create".into(),
            entry_id: None,
            client: String::new(),
            outcome: "ok".into(),
            detail: String::new(),
        }
    }

    /// The primary's data key as the backup receives it: sealed to its transport key.
    fn same_key(dk: &DataKey) -> DataKey {
        use crate::crypto::key_transport::{TransportSecret, open_data_key, seal_data_key};
        let backup = TransportSecret::from_seed(&crate::crypto::random_bytes());
        let moved = seal_data_key(&backup.public(), dk, "v1", "paris-01", "zurich-01").unwrap();
        open_data_key(&backup, &moved, "v1", "paris-01", "zurich-01").unwrap()
    }

    #[test]
    fn rows_arrive_as_stored_idempotently_and_the_last_write_wins() {
        let dk0 = DataKey::generate();
        let (mut p, dk) = pair(&dk0);
        // The backup holds the primary's data key (as HPKE transport gives it).
        p.backup.set_row_key(same_key(&dk).row_key(), "v1");
        let id = p.primary.insert_entry("u1", "s1", b"sealed-1", 1000, &audit()).unwrap();
        let first = p.primary.entries_since(0).unwrap();
        let before = p.backup.change_seq().unwrap();
        assert_eq!(
            p.backup.apply_replicated_entries(&first, 1).unwrap(),
            Applied { written: 1, skipped: 0, ..Applied::default() }
        );
        assert!(p.backup.change_seq().unwrap() > before, "the backup's watcher sees the change");
        // A resend changes nothing.
        assert_eq!(
            p.backup.apply_replicated_entries(&first, 2).unwrap(),
            Applied { written: 0, skipped: 1, ..Applied::default() }
        );
        let got = p.backup.entry(id).unwrap().unwrap();
        assert_eq!((got.uuid.as_str(), got.data.as_slice(), got.version), ("u1", b"sealed-1".as_slice(), 1));
        assert!(p.backup.entry_authentic(&got), "the MAC verifies on the backup");

        p.primary.update_entry(id, "s2", b"sealed-2", None, 2000, &audit()).unwrap();
        let second = p.primary.entries_since(0).unwrap();
        p.backup.apply_replicated_entries(&second, 3).unwrap();
        // An older write arriving late loses.
        assert_eq!(
            p.backup.apply_replicated_entries(&first, 4).unwrap(),
            Applied { written: 0, skipped: 1, ..Applied::default() }
        );
        let got = p.backup.entry(id).unwrap().unwrap();
        assert_eq!((got.scopes.as_str(), got.data.as_slice(), got.version), ("s2", b"sealed-2".as_slice(), 2));

        // The tombstone wins over the write before it, and a late resend does not resurrect it.
        p.primary.delete_entry(id, 2000, &audit()).unwrap();
        let tomb = p.primary.entries_since(0).unwrap();
        p.backup.apply_replicated_entries(&tomb, 5).unwrap();
        assert_eq!(
            p.backup.apply_replicated_entries(&second, 6).unwrap(),
            Applied { written: 0, skipped: 1, ..Applied::default() }
        );
        let got = p.backup.entry(id).unwrap().unwrap();
        assert!(got.deleted && got.data.is_empty(), "{got:?}");
    }

    #[test]
    fn only_acknowledged_unchanged_rows_stop_being_dirty() {
        let dk0 = DataKey::generate();
        let (mut p, _dk) = pair(&dk0);
        let a = p.primary.insert_entry("a", "s", b"1", 1000, &audit()).unwrap();
        let b = p.primary.insert_entry("b", "s", b"2", 1000, &audit()).unwrap();
        let c = p.primary.insert_entry("c", "s", b"3", 1000, &audit()).unwrap();
        let batch = p.primary.dirty_entries(2).unwrap();
        assert_eq!(batch.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a, b], "oldest first, batch-sized");
        // `b` changes while the batch is in flight: its acknowledgement must not clear it.
        p.primary.update_entry(b, "s", b"2b", None, 1001, &audit()).unwrap();
        let acked: Vec<_> = batch.iter().map(|r| (r.id, r.change_seq)).collect();
        assert_eq!(p.primary.mark_replicated(&acked, 5).unwrap(), 1);
        assert_eq!(p.primary.dirty_count().unwrap(), 2);
        let next = p.primary.dirty_entries(10).unwrap();
        assert_eq!(next.iter().map(|r| r.id).collect::<Vec<_>>(), vec![c, b]);
        assert_eq!(next[1].data, b"2b");
        // A second acknowledgement of the same rows is harmless.
        assert_eq!(p.primary.mark_replicated(&acked, 6).unwrap(), 0);
        // A delete makes the row dirty again, and the tombstone goes.
        p.primary.delete_entry(a, 1002, &audit()).unwrap();
        assert!(p.primary.dirty_entries(10).unwrap().iter().any(|r| r.id == a && r.deleted));
    }

    #[test]
    fn a_tombstone_beats_a_write_with_the_same_stamp() {
        let stored = (2000, 3, false);
        let mut row = EntryRow {
            id: 1,
            uuid: "u".into(),
            scopes: String::new(),
            created_at: 0,
            updated_at: 2000,
            version: 3,
            deleted: true,
            mac: None,
            change_seq: 0,
            data: Vec::new(),
        };
        assert!(newer(&row, stored));
        row.deleted = false;
        assert!(!newer(&row, stored), "same stamp, not a tombstone: a resend");
        assert!(!newer(&row, (2000, 3, true)), "a live row never replaces a tombstone of the same stamp");
    }

    #[test]
    fn a_batch_with_a_row_that_does_not_verify_changes_nothing() {
        let other = DataKey::generate();
        let (mut p, dk) = pair(&other);
        p.primary.insert_entry("u1", "s1", b"x", 1000, &audit()).unwrap();
        let rows = p.primary.entries_since(0).unwrap();
        // The backup holds another key: the primary's MACs do not verify under it.
        let err = p.backup.apply_replicated_entries(&rows, 1).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
        assert!(p.backup.entries_since(0).unwrap().is_empty());

        // One forged row in an otherwise good batch: refused whole.
        p.backup.set_row_key(same_key(&dk).row_key(), "v1");
        let mut forged = rows[0].clone();
        forged.id = 99;
        forged.uuid = "u99".into();
        let err = p.backup.apply_replicated_entries(&[rows[0].clone(), forged], 1).unwrap_err();
        assert!(err.to_string().contains("99"), "{err}");
        assert!(p.backup.entries_since(0).unwrap().is_empty(), "nothing applied");
    }
    #[test]
    fn the_auth_snapshot_travels_whole_a_revocation_with_it_and_an_older_one_never_wins() {
        use crate::store::vault_db::NewAgent;
        let dk0 = DataKey::generate();
        let (mut p, dk) = pair(&dk0);
        p.backup.set_row_key(same_key(&dk).row_key(), "v1");
        let new = |name: &'static str, hash: &'static str| NewAgent {
            name,
            token_hash: hash,
            all_access: true,
            admin: true,
            created_at: 0,
            expires_at: None,
            parent_id: None,
            reveal_to_model: false,
            proxy_only_listed: false,
        };
        let seq0 = p.primary.auth_seq().unwrap();
        p.primary.insert_agent(&new("owner", "h1"), |id| format!("{id:04x}"), &audit()).unwrap();
        let second = p.primary.insert_agent(&new("second", "h2"), |id| format!("{id:04x}"), &audit()).unwrap();
        let passkey = CredentialRow {
            id: "cred".into(),
            passkey: "{}".into(),
            sign_count: 3,
            name: "key".into(),
            created_at: 0,
            agent_id: Some(second.id),
            mac: None,
        };
        p.primary.insert_credential(&passkey, &audit()).unwrap();
        p.primary.set_keyring("{\"wraps\":[]}", &audit()).unwrap();
        let first = p.primary.auth_snapshot().unwrap();
        assert!(first.seq > seq0 + 3, "triggers advanced auth_seq for agents, passkey and keyring");
        let a = p.backup.apply_replicated_batch("paris-01", &[], Some(&first), &[], 1, false).unwrap();
        assert!(a.auth);
        assert_eq!(p.backup.agents().unwrap().len(), 2);
        assert!(p.backup.agents().unwrap().iter().all(|r| p.backup.agent_authentic(r)), "MACs verify here");
        assert_eq!(p.backup.credentials().unwrap()[0].sign_count, 3);
        assert_eq!(p.backup.meta("l2_keyring").unwrap().as_deref(), Some("{\"wraps\":[]}"));

        // The revocation (and its passkey going with it) travels as the next snapshot.
        p.primary.delete_agent(second.id, &audit()).unwrap();
        let after = p.primary.auth_snapshot().unwrap();
        p.backup.apply_replicated_batch("paris-01", &[], Some(&after), &[], 2, false).unwrap();
        assert_eq!(p.backup.agents().unwrap().iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), vec!["owner"]);
        assert!(p.backup.credentials().unwrap().is_empty());
        // A late resend of the older snapshot does not bring the revoked agent back.
        let late = p.backup.apply_replicated_batch("paris-01", &[], Some(&first), &[], 3, false).unwrap();
        assert!(!late.auth);
        assert_eq!(p.backup.agents().unwrap().len(), 1);

        // Audit rows arrive once, however often they are sent.
        let rows = p.primary.audit_after(0, 100).unwrap();
        assert!(!rows.is_empty());
        let once = p.backup.apply_replicated_batch("paris-01", &[], None, &rows, 4, false).unwrap();
        let twice = p.backup.apply_replicated_batch("paris-01", &[], None, &rows, 5, false).unwrap();
        assert_eq!((once.audit, twice.audit), (rows.len(), 0));

        // A forged agent row (not MACed under the vault's key) is refused with the whole batch.
        let mut forged = after.clone();
        forged.seq += 10;
        forged.agents[0].admin = false;
        assert!(p.backup.apply_replicated_batch("paris-01", &[], Some(&forged), &[], 6, false).is_err());
        assert!(p.backup.agents().unwrap()[0].admin, "nothing changed");
    }

    #[test]
    fn entries_after_splits_one_transactions_rows_across_batches_without_skipping() {
        let dk0 = DataKey::generate();
        let (mut p, _dk) = pair(&dk0);
        let rows: Vec<(String, String, Vec<u8>)> = (0..7).map(|i| (format!("u{i}"), String::new(), vec![i])).collect();
        p.primary.insert_entries(&rows, 1000, &audit()).unwrap();
        let (mut mark, mut seen) = ((0, 0), Vec::new());
        loop {
            let batch = p.primary.entries_after(mark, 3).unwrap();
            let Some(last) = batch.last() else { break };
            mark = (last.change_seq, last.id);
            seen.extend(batch.iter().map(|r| r.id));
        }
        assert_eq!(seen.len(), 7, "{seen:?}");
        seen.dedup();
        assert_eq!(seen.len(), 7);
    }
}
