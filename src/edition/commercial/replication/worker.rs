//! The primary's replication worker: one thread that sends signed batches to its first
//! reachable backup over verified TLS, retrying on the integer backoff table and failing over to
//! the next backup when one stays unreachable (review items 6, 8, 11, 12).
//!
//! Woken by every committed change (`vault::live::CHANGES`), with the poll interval (30 s by
//! default) as a backstop: for each vault, ships what the backup has not acknowledged (entry
//! rows after its watermark, the auth snapshot if it changed, audit rows) in batches of
//! `batch_size` entries with as many audit rows as the body has room for, paced to the backup's
//! rate, and advances the watermarks and clears the dirty
//! marks only when the backup acknowledged the batch. Unacknowledged rows stay on disk (review
//! item 13), nothing is held in memory between rounds. An idle round (the poll interval passed
//! with no change) with nothing to ship sends a signed empty batch (a heartbeat that proves keys,
//! clocks, TLS and reachability); a round a change started never does, so that at 1 request/s
//! no heartbeat takes the slot the next write needs. Uses the server's
//! own store code and connection settings (item 12). Never runs on a backup; never skips TLS
//! verification; every attempt is a node audit row (`replication.send`); logs carry only POP
//! ids, counts and outcomes.

use std::time::Duration;

use std::collections::HashMap;
use std::time::Instant;

use super::Role;
use super::apply::{H_NONCE, H_POP, H_SIG, H_TS, PATH, signed_message};
use super::config::Peer;
use super::staging::MAX_AUTH_PARTS;
use super::wire::{Batch, DIGEST_RANGE, HEARTBEAT_VAULT, WireAudit, WireAuth, WireEntry};
use crate::store::replica::MarkKind;
use crate::vault::VaultId;
use crate::vault::data_dir::{DataDir, OpenVault};

/// A vault that ships rows in every round is still checked for divergence once in this many
/// poll intervals.
const BUSY_CHECK_EVERY: u32 = 10;

/// Bytes of a batch body kept free for what `send_once` fills in (timestamp, nonce).
const BODY_MARGIN: usize = 512;

/// Audit rows one batch carries at most, besides its entries: they fill the body room the
/// entries leave (a row is some 200 bytes, so the default 256 KiB body holds about 1,200), and
/// this bounds the rows read and serialised per batch when `max_body_bytes` is large.
pub const MAX_AUDIT_ROWS: u32 = 5_000;

/// Times one call of `ship_auth_parts` starts a split snapshot over (its seq moved, or the
/// backup lost its staging) before it stops chasing a moving seq or fails the round.
const MAX_RESTARTS: u32 = 3;

/// Seconds to wait after the 1st, 2nd, … failed attempt (review item 11: no float math).
pub const BACKOFF_S: [u64; 5] = [1, 5, 25, 125, 625];

/// Starts the worker on a primary; a backup never starts one, whatever its file lists.
pub fn start(rt: &'static super::Runtime, dir: DataDir) {
    if rt.config.role != Role::Primary {
        return;
    }
    let spawned = std::thread::Builder::new().name("replication-worker".into()).spawn(move || run(rt, dir));
    if let Err(e) = spawned {
        crate::edition::alert(
            "replication_worker",
            "the replication worker could not start",
            &[("error", e.to_string())],
        );
    }
}

/// The worker's state between rounds: open vault files (connections, not rows) and pacing.
struct Shipper<'a> {
    rt: &'a super::Runtime,
    agent: ureq::Agent,
    dir: DataDir,
    open: HashMap<VaultId, OpenVault>,
    last_send: Option<Instant>,
    /// When each (backup, vault) pair's divergence was last checked.
    checked: HashMap<(String, VaultId), Instant>,
    started: Instant,
}

/// The vault's data key sealed to `backup`'s HPKE key (hex); `None` if its entry lists none.
fn seal_for(backup: &Peer, v: &OpenVault, id: &VaultId, pop_id: &str) -> Result<Option<String>, String> {
    match &backup.transport_key {
        Some(to) => crate::crypto::key_transport::seal_data_key(to, &v.key, id.as_str(), pop_id, &backup.id)
            .map(|k| Some(hex::encode(k)))
            .map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

fn run(rt: &'static super::Runtime, dir: DataDir) {
    let cfg = &rt.config;
    let timeout = Duration::from_secs(cfg.request_timeout_s);
    // Verified TLS only: the private CA (if any) replaces the public roots, never verification.
    let agent = match crate::outbound::vault_client(timeout, cfg.ca_pem.as_deref()) {
        Ok(a) => a,
        Err(e) => {
            crate::edition::alert(
                "replication_worker",
                "the replication worker has no TLS client",
                &[("error", e.to_string())],
            );
            return;
        }
    };
    let mut shipper = Shipper {
        rt,
        agent,
        dir,
        open: HashMap::new(),
        last_send: None,
        checked: HashMap::new(),
        started: Instant::now(),
    };
    let mut current = 0usize;
    // The first round, and every round the poll interval started (no change rang for that
    // long), is idle: only an idle round sends a heartbeat or an idle vault's divergence check.
    // A round a change started may find its rows shipped already (the bell rang while the last
    // round sent them); a heartbeat then would take the backup's next rate slot from a write.
    let mut idle = true;
    loop {
        let Some(backup) = cfg.backups.get(current % cfg.backups.len().max(1)) else { return };
        let seen = crate::vault::live::CHANGES.count();
        if shipper.round_with_retries(backup, idle) {
            let rung = crate::vault::live::CHANGES.wait_past(seen, Duration::from_secs(cfg.poll_interval_s.max(1)));
            idle = rung == seen;
        } else {
            crate::edition::alert(
                "replication_unreachable",
                "a backup POP stayed unreachable through every retry; failing over to the next",
                &[("backup", backup.id.clone())],
            );
            current = current.wrapping_add(1);
            // The next backup is greeted with a heartbeat if there is nothing to ship.
            idle = true;
        }
    }
}

impl Shipper<'_> {
    /// One round plus `retries` retries, waiting `BACKOFF_S[i]` after the i-th failure.
    fn round_with_retries(&mut self, backup: &Peer, idle: bool) -> bool {
        let retries = usize::try_from(self.rt.config.retries).unwrap_or(BACKOFF_S.len()).min(BACKOFF_S.len());
        for attempt in 0..=retries {
            match self.round(backup, idle) {
                Ok(()) => return true,
                Err(reason) => {
                    tracing::warn!(backup = %backup.id, attempt, reason = %reason, "replication send failed");
                    if let Some(wait) = BACKOFF_S.get(attempt).filter(|_| attempt < retries) {
                        std::thread::sleep(Duration::from_secs(*wait));
                    }
                }
            }
        }
        false
    }

    /// Ships everything `backup` has not acknowledged, vault by vault; a heartbeat if nothing
    /// went and the round is `idle`.
    fn round(&mut self, backup: &Peer, idle: bool) -> Result<(), String> {
        let ids = self.dir.vault_ids().map_err(|e| format!("vaults: {e}"))?;
        let mut sent = false;
        for id in ids {
            let shipped = self.ship_vault(backup, &id)?;
            sent |= shipped;
            sent |= self.check_vault(backup, &id, !idle || shipped)?;
        }
        if !sent && idle {
            let batch = self.batch(HEARTBEAT_VAULT, None, Vec::new(), None, Vec::new());
            self.send(backup, &batch, 0)?;
        }
        Ok(())
    }

    /// The divergence check of one vault, once per poll interval when it has nothing left to
    /// ship: the backup compares the digests with its own copy and names the first range that
    /// differs, which is then resent as a repair (and checked again next time). A round a change
    /// started, or that just shipped rows of the vault (`busy`), leaves the check to an idle
    /// round, since the check's request takes a slot of the backup's rate that the next write
    /// may need, unless [`BUSY_CHECK_EVERY`] intervals passed (a vault written to without pause
    /// is checked too).
    fn check_vault(&mut self, backup: &Peer, id: &VaultId, busy: bool) -> Result<bool, String> {
        let interval = Duration::from_secs(self.rt.config.poll_interval_s.max(1));
        let key = (backup.id.clone(), id.clone());
        let due = if busy { interval.saturating_mul(BUSY_CHECK_EVERY) } else { interval };
        // Never checked: counted from the worker's start, so a backlog shipped at start is not
        // followed at once by a check that takes the next write's slot.
        let last = *self.checked.entry(key.clone()).or_insert(self.started);
        if last.elapsed() < due {
            return Ok(false);
        }
        let pop_id = self.rt.config.pop_id.clone();
        let v = self.vault(id)?;
        // Only over rows the backup acknowledged all of: a write still on its way is lag, not
        // divergence. Rows waiting: checked after the next round ships them.
        let Some(digest) = v.db.settled_entry_digests(&backup.id, DIGEST_RANGE).map_err(|e| e.to_string())? else {
            return Ok(false);
        };
        let data_key = seal_for(backup, v, id, &pop_id)?;
        self.checked.insert(key, Instant::now());
        let mut batch = self.batch(id.as_str(), data_key.clone(), Vec::new(), None, Vec::new());
        batch.digest = Some(digest);
        let answer = self.send(backup, &batch, 0)?;
        let Some(range) = answer.get("diverged").and_then(|d| d.as_array()) else { return Ok(true) };
        let (Some(lo), Some(hi)) = (range.first().and_then(|v| v.as_i64()), range.get(1).and_then(|v| v.as_i64()))
        else {
            return Ok(true);
        };
        let rows = self.vault(id)?.db.entries_in(lo, hi).map_err(|e| e.to_string())?;
        for chunk in rows.chunks(self.rt.config.batch_size.max(1) as usize) {
            let mut repair = self.batch(
                id.as_str(),
                data_key.clone(),
                chunk.iter().map(WireEntry::from).collect(),
                None,
                Vec::new(),
            );
            repair.repair = true;
            self.send(backup, &repair, chunk.len())?;
        }
        // Checked again at the next round rather than after the interval.
        self.checked.remove(&(backup.id.clone(), id.clone()));
        Ok(true)
    }

    fn vault(&mut self, id: &VaultId) -> Result<&mut OpenVault, String> {
        if !self.open.contains_key(id) {
            let master = self.dir.load_master_key().map_err(|e| format!("master key: {e}"))?;
            let v = self.dir.open_vault(&master, id).map_err(|e| format!("vault {id}: {e}"))?;
            self.open.insert(id.clone(), v);
        }
        self.open.get_mut(id).ok_or_else(|| "vault not open".to_owned())
    }

    fn batch(
        &self,
        vault: &str,
        data_key: Option<String>,
        entries: Vec<WireEntry>,
        auth: Option<WireAuth>,
        audit: Vec<WireAudit>,
    ) -> Batch {
        Batch {
            source_pop: self.rt.config.pop_id.clone(),
            vault: vault.to_owned(),
            timestamp: 0,
            nonce: String::new(),
            data_key,
            entries,
            auth,
            audit,
            digest: None,
            repair: false,
        }
    }

    /// Ships one vault's unacknowledged rows to `backup` in batches; true if anything went.
    ///
    /// Entries go at most `batch_size` a batch (the "entries per batch"); audit rows are
    /// small and one is written on every agent read, so they fill whatever body room the entries
    /// (and the auth snapshot) leave, up to [`MAX_AUDIT_ROWS`]: a vault read thousands of times a
    /// second still catches up at one request a second.
    fn ship_vault(&mut self, backup: &Peer, id: &VaultId) -> Result<bool, String> {
        let cfg = &self.rt.config;
        let mut limit = cfg.batch_size.max(1);
        // The body room a batch is fitted to; halved when the backup answers 413 (its limit is
        // smaller than this POP's file says).
        let mut room = cfg.max_body_bytes.saturating_sub(BODY_MARGIN).max(1);
        let mut sent = false;
        loop {
            let pop_id = cfg.pop_id.clone();
            let v = self.vault(id)?;
            let err = |e: crate::store::StoreError| e.to_string();
            let (w_entries, w_entry_id, w_auth, w_audit) = (
                v.db.replication_mark(&backup.id, MarkKind::Entries).map_err(err)?,
                v.db.replication_mark(&backup.id, MarkKind::EntryId).map_err(err)?,
                v.db.replication_mark(&backup.id, MarkKind::Auth).map_err(err)?,
                v.db.replication_mark(&backup.id, MarkKind::Audit).map_err(err)?,
            );
            let entries = v.db.entries_after((w_entries, w_entry_id), limit).map_err(err)?;
            let auth =
                if v.db.auth_seq().map_err(err)? > w_auth { Some(v.db.auth_snapshot().map_err(err)?) } else { None };
            let mut audit = v.db.audit_after(w_audit, MAX_AUDIT_ROWS).map_err(err)?;
            if entries.is_empty() && auth.is_none() && audit.is_empty() {
                return Ok(sent);
            }
            let data_key = seal_for(backup, v, id, &pop_id)?;
            if let Some(a) = &auth {
                // A snapshot too big for a body of its own (a few hundred agents) goes in parts.
                let alone = self.batch(id.as_str(), data_key.clone(), Vec::new(), Some(WireAuth::from(a)), Vec::new());
                if body_len(&alone) > room {
                    self.ship_auth_parts(backup, id, data_key, room)?;
                    sent = true;
                    continue;
                }
            }
            let mut entries = entries;
            let mut batch = self.batch(
                id.as_str(),
                data_key,
                entries.iter().map(WireEntry::from).collect(),
                auth.as_ref().map(WireAuth::from),
                Vec::new(),
            );
            // Fitted to the body limit here rather than by the backup's 413: a refused body is a
            // round trip (and the listener closes that connection), and at a large `batch_size`
            // every call would pay it again. Entries first: the limit shrinks in proportion,
            // with a margin for the timestamp and nonce the send fills in.
            let mut base = body_len(&batch);
            if base > room && limit > 1 {
                let scaled = u64::from(limit).saturating_mul(room as u64) / (base as u64).max(1);
                limit = u32::try_from(scaled).unwrap_or(1).clamp(1, limit - 1);
                continue;
            }
            // The snapshot fits alone but not beside even one entry: it goes first, alone.
            let held_back = base > room && auth.is_some() && !entries.is_empty();
            if held_back {
                entries.clear();
                batch.entries.clear();
                base = body_len(&batch);
            }
            // Then audit rows, each as many bytes as it serialises to (plus its comma), while
            // they fit: the body stays within `room` exactly.
            let fetched = audit.len();
            let mut left = room.saturating_sub(base);
            let mut fit = 0;
            let mut wire = Vec::with_capacity(fetched);
            for row in &audit {
                let w = WireAudit::from(row);
                let len = serde_json::to_vec(&w).map_or(usize::MAX, |b| b.len()).saturating_add(usize::from(fit > 0));
                if len > left {
                    break;
                }
                left -= len;
                fit += 1;
                wire.push(w);
            }
            audit.truncate(fit);
            batch.audit = wire;
            // More may wait: a full entry batch, audit rows left behind for room, or as many as
            // one batch takes.
            let full =
                held_back || entries.len() >= limit as usize || fit < fetched || fetched >= MAX_AUDIT_ROWS as usize;
            let marks = [
                (MarkKind::Entries, entries.last().map_or(w_entries, |r| r.change_seq)),
                (MarkKind::EntryId, entries.last().map_or(w_entry_id, |r| r.id)),
                (MarkKind::Auth, auth.as_ref().map_or(w_auth, |a| a.seq)),
                (MarkKind::Audit, audit.last().map_or(w_audit, |r| r.id)),
            ];
            let acked: Vec<(i64, i64)> = entries.iter().map(|r| (r.id, r.change_seq)).collect();
            let count = entries.len() + audit.len() + usize::from(auth.is_some());
            if count == 0 {
                // Not even one audit row fits beside nothing: the backup's limit is below one row.
                return Err(format!("an audit row does not fit the body room of {room} bytes"));
            }
            match self.send(backup, &batch, count) {
                Ok(_) => {}
                // Too big for the backup's body limit: halve the batch and try again at once.
                Err(reason) if reason.starts_with("status 413") && (limit > 1 || fit > 1) => {
                    limit = (limit / 2).max(1);
                    room = (room / 2).max(1);
                    continue;
                }
                Err(reason) => return Err(reason),
            }
            sent = true;
            let v = self.vault(id)?;
            v.db.acknowledge(&backup.id, &marks, &acked, crate::store::now_ms()).map_err(|e| e.to_string())?;
            if !full {
                return Ok(sent);
            }
        }
    }

    /// Sends `id`'s auth snapshot in parts that each fit `room` (the backup stages them and
    /// applies the whole snapshot with the last), then advances the Auth watermark to the
    /// snapshot's seq. Starts over with a fresh snapshot from part 0 when the vault's `auth_seq`
    /// moved between parts (the backup would only stage an outdated set), when the backup
    /// lost its staging or holds another snapshot's parts, or (in parts half the size) when it
    /// refused a part as too large; at most [`MAX_RESTARTS`] times per
    /// call, after which a moved seq no longer restarts it (the snapshot in hand is whole and
    /// consistent; the next round sends the newer one) and a lost staging fails the round.
    fn ship_auth_parts(
        &mut self,
        backup: &Peer,
        id: &VaultId,
        data_key: Option<String>,
        mut room: usize,
    ) -> Result<(), String> {
        let err = |e: crate::store::StoreError| e.to_string();
        let mut restarts = 0u32;
        'snapshot: loop {
            let snap = self.vault(id)?.db.auth_snapshot().map_err(err)?;
            let shell = self.batch(id.as_str(), data_key.clone(), Vec::new(), None, Vec::new());
            // The shell's body plus `,"auth":` and the part.
            let overhead = body_len(&shell).saturating_add(8);
            let parts = WireAuth::from(&snap)
                .split(room, |p| overhead.saturating_add(serde_json::to_vec(p).map_or(usize::MAX, |b| b.len())));
            if parts.len() > MAX_AUTH_PARTS as usize {
                return Err(format!(
                    "the auth snapshot needs {} parts of {room} bytes, more than {MAX_AUTH_PARTS}",
                    parts.len()
                ));
            }
            for part in parts {
                if part.part > 0 && restarts < MAX_RESTARTS && self.vault(id)?.db.auth_seq().map_err(err)? != snap.seq {
                    restarts += 1;
                    continue 'snapshot;
                }
                let batch = self.batch(id.as_str(), data_key.clone(), Vec::new(), Some(part), Vec::new());
                match self.send(backup, &batch, 1) {
                    Ok(_) => {}
                    Err(r)
                        if restarts < MAX_RESTARTS
                            && (r.starts_with("status 409 auth_parts_missing")
                                || r.starts_with("status 409 auth_part_mismatch")) =>
                    {
                        restarts += 1;
                        continue 'snapshot;
                    }
                    // The backup's body limit is below this POP's: smaller parts.
                    Err(r) if restarts < MAX_RESTARTS && r.starts_with("status 413") => {
                        restarts += 1;
                        room = (room / 2).max(1);
                        continue 'snapshot;
                    }
                    Err(r) => return Err(r),
                }
            }
            let v = self.vault(id)?;
            return v
                .db
                .acknowledge(&backup.id, &[(MarkKind::Auth, snap.seq)], &[], crate::store::now_ms())
                .map_err(err);
        }
    }

    /// Signs and sends one batch, paced to the backup's rate (`rate_limit_per_s`, the same
    /// figure both sides' files carry); a 429 waits 300 ms and goes again, uncounted. Audited.
    fn send(&mut self, backup: &Peer, batch: &Batch, count: usize) -> Result<serde_json::Value, String> {
        let cfg = &self.rt.config;
        let actor = format!("pop:{}", backup.id);
        for _ in 0..8 {
            if cfg.rate_limit_per_s > 0
                && let Some(last) = self.last_send
            {
                // A small margin over the backup's per-second window (a 429 from jitter costs
                // only a 300 ms retry; a wider margin would cost throughput on every request).
                let gap = Duration::from_millis(1000 / u64::from(cfg.rate_limit_per_s) + 5);
                if let Some(left) = gap.checked_sub(last.elapsed()) {
                    std::thread::sleep(left);
                }
            }
            self.last_send = Some(Instant::now());
            let result = send_once(self.rt, &self.agent, backup, batch);
            let vault = &batch.vault;
            match result {
                Ok(answer) => {
                    let digest = match (&batch.digest, answer.get("diverged").and_then(|d| d.as_array())) {
                        (None, _) => String::new(),
                        (Some(_), None) => " digest=in_sync".to_owned(),
                        (Some(_), Some(r)) => format!(
                            " digest=diverged ids={}..{}",
                            r.first().and_then(|v| v.as_i64()).unwrap_or(0),
                            r.get(1).and_then(|v| v.as_i64()).unwrap_or(0)
                        ),
                    };
                    let repair = if batch.repair { " repair=1" } else { "" };
                    super::audit(
                        "replication.send",
                        &actor,
                        "ok",
                        format!("count={count} vault={vault}{digest}{repair}{}", part_of(batch)),
                    );
                    return Ok(answer);
                }
                Err(reason) if reason.starts_with("status 429") => {
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(reason) => {
                    super::audit(
                        "replication.send",
                        &actor,
                        "failed",
                        format!("count={count} vault={vault}{} reason={reason}", part_of(batch)),
                    );
                    return Err(reason);
                }
            }
        }
        super::audit("replication.send", &actor, "failed", format!("count={count} reason=rate_limited"));
        Err("status 429 rate_limited".into())
    }
}

/// ` auth_part=K/N` (1-based) for a part of a split auth snapshot, for the audit detail.
fn part_of(batch: &Batch) -> String {
    match &batch.auth {
        Some(a) if a.parts > 1 => format!(" auth_part={}/{}", a.part.saturating_add(1), a.parts),
        _ => String::new(),
    }
}

/// The size of `batch`'s body as fitted (the timestamp and nonce `send_once` fills in are
/// [`BODY_MARGIN`]'s).
fn body_len(batch: &Batch) -> usize {
    serde_json::to_vec(batch).map_or(usize::MAX, |b| b.len())
}

fn send_once(
    rt: &super::Runtime,
    agent: &ureq::Agent,
    backup: &Peer,
    batch: &Batch,
) -> Result<serde_json::Value, String> {
    let cfg = &rt.config;
    let url = backup.url.as_deref().ok_or("no url")?;
    let ts = crate::store::now_secs();
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let signed = Batch {
        source_pop: batch.source_pop.clone(),
        vault: batch.vault.clone(),
        timestamp: ts,
        nonce: nonce.clone(),
        data_key: batch.data_key.clone(),
        entries: Vec::new(),
        auth: None,
        audit: Vec::new(),
        digest: None,
        repair: false,
    };
    let body = serialize_with(&signed, batch).map_err(|e| e.to_string())?;
    let sig = hex::encode(cfg.signing_key.sign(&signed_message(ts, &nonce, &body)).as_ref());
    let req = ureq::http::Request::builder()
        .method("POST")
        .uri(format!("{url}{PATH}"))
        .header("content-type", "application/json")
        .header(H_POP, &cfg.pop_id)
        .header(H_TS, ts.to_string())
        .header(H_NONCE, &nonce)
        .header(H_SIG, sig)
        .body(body)
        .map_err(|e| e.to_string())?;
    let mut resp = agent.run(req).map_err(|e| format!("transport: {e}"))?;
    let status = resp.status().as_u16();
    // The backup's answer is short (counts, the divergence range) or its error code.
    let text = resp.body_mut().with_config().limit(4096).read_to_string().unwrap_or_default();
    if status == 200 {
        return Ok(serde_json::from_str(&text).unwrap_or_default());
    }
    let code = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Err(format!("status {status} {code}"))
}

/// The body: `head`'s scalar fields (fresh timestamp and nonce) with `rows`' row lists, without
/// copying the rows.
fn serialize_with(head: &Batch, rows: &Batch) -> serde_json::Result<Vec<u8>> {
    #[derive(serde::Serialize)]
    struct View<'a> {
        source_pop: &'a str,
        vault: &'a str,
        timestamp: i64,
        nonce: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        data_key: Option<&'a str>,
        entries: &'a [WireEntry],
        #[serde(skip_serializing_if = "Option::is_none")]
        auth: Option<&'a WireAuth>,
        audit: &'a [WireAudit],
        #[serde(skip_serializing_if = "Option::is_none")]
        digest: Option<&'a [(i64, String)]>,
        repair: bool,
    }
    serde_json::to_vec(&View {
        source_pop: &head.source_pop,
        vault: &head.vault,
        timestamp: head.timestamp,
        nonce: &head.nonce,
        data_key: head.data_key.as_deref(),
        entries: &rows.entries,
        auth: rows.auth.as_ref(),
        audit: &rows.audit,
        digest: rows.digest.as_deref(),
        repair: rows.repair,
    })
}
