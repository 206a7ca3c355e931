//! `POST /api/replication/apply` on a backup POP: the signed request's checks, in the order
//! that costs an attacker most and the backup least (review items 1, 2, 4, 7, 10, 14, 15, 16).
//!
//! Order: body size declared (before any read), headers well formed, source POP authorised,
//! not banned, timestamp within the window, body read under the size limit, Ed25519 signature
//! (`verify_strict`) over method, path, timestamp, nonce and the body's SHA-256, within the
//! POP's rate (charged only after the signature verified, so a stranger spoofing a POP id
//! cannot spend that POP's budget; strangers are held off by the per-address ban), nonce
//! unseen, body agrees with the signed headers. A part of a split auth snapshot is checked
//! field by field and staged (`staging`, memory only, filled only by authenticated sources)
//! until its last part applies the whole snapshot in one transaction. Every attempt is one
//! audit row;
//! authentication failures also alert the operator. Never logs entry data; never answers a
//! non-backup node (the route exists, but refuses).

use std::net::IpAddr;

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ed25519_dalek::Signature;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::config::{Role, valid_pop_id};
use super::staging::{MAX_AUTH_PARTS, Part, StageError, Staged};
use super::wire::{Batch, DIGEST_RANGE};
use crate::api::AppState;
use crate::store::replica::Applied;
use crate::vault::live::Node;
use crate::vault::{VaultError, VaultId};

pub const PATH: &str = "/api/replication/apply";
pub const H_POP: &str = "x-clavitor-pop";
pub const H_TS: &str = "x-clavitor-timestamp";
pub const H_NONCE: &str = "x-clavitor-nonce";
pub const H_SIG: &str = "x-clavitor-signature";

/// The bytes a source POP signs (and the backup verifies) for one request.
pub fn signed_message(ts: i64, nonce_hex: &str, body: &[u8]) -> Vec<u8> {
    format!("clavitor-replication-v1\nPOST\n{PATH}\n{ts}\n{nonce_hex}\n{}", hex::encode(Sha256::digest(body)))
        .into_bytes()
}

/// One refusal: status, error code and a message that says why (never entry data).
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Counts towards a ban of this (POP, address) and alerts the operator.
    auth_failure: bool,
}

fn refuse(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { status, code, message: message.into(), auth_failure: false }
}

fn auth_fail(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { status: StatusCode::UNAUTHORIZED, code, message: message.into(), auth_failure: true }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty())
}

/// Whether reading the body failed because it passed the size limit (rather than because the
/// connection broke off mid-body).
fn over_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

fn hex16(s: &str) -> Option<[u8; 16]> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}

#[utoipa::path(
    post,
    path = "/api/replication/apply",
    summary = "Apply a batch replicated from an authorised primary POP (backup POPs only; Ed25519-signed)",
    request_body(content = Object, description = "source_pop, vault, timestamp, nonce, rows", content_type = "application/json"),
    params(
        ("x-clavitor-pop" = String, Header, description = "the source POP's id"),
        ("x-clavitor-timestamp" = i64, Header, description = "Unix seconds when signed"),
        ("x-clavitor-nonce" = String, Header, description = "16 random bytes, hex"),
        ("x-clavitor-signature" = String, Header, description = "Ed25519 signature, hex"),
    ),
    responses(
        (status = 200, description = "batch accepted", body = Object),
        (status = "4XX", description = "refused (signature, POP, window, nonce, size, rate, ban); audited", body = crate::api::openapi::schemas::ErrorBody),
    )
)]
pub async fn apply(axum::extract::State(state): axum::extract::State<AppState>, req: Request) -> Response {
    // The attempt runs to its end on a task of its own: when the source's connection breaks
    // (reset mid-body, or a primary that stopped waiting for the answer), hyper drops this
    // handler, and a batch already applied would be left without its audit row (item 7).
    match tokio::spawn(attempt(state, req)).await {
        Ok(resp) => resp,
        Err(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": "apply_failed", "message": "the apply stopped"})))
                .into_response()
        }
    }
}

async fn attempt(state: AppState, req: Request) -> Response {
    let Some(rt) = super::runtime().filter(|rt| rt.config.role == Role::Backup) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not_found", "message": "this node is not a replication backup"})),
        )
            .into_response();
    };
    let ip: Option<IpAddr> = req.extensions().get::<crate::api::serve::Peer>().map(|p| p.addr.ip());
    let claimed = header(req.headers(), H_POP).filter(|p| valid_pop_id(p)).map(str::to_owned);
    let actor = format!("pop:{}", claimed.as_deref().unwrap_or("unknown"));
    let result = match check(rt, req, ip, claimed.as_deref()).await {
        Ok((batch, bytes)) => {
            let node = state.node.clone();
            tokio::task::spawn_blocking(move || store(rt, &node, batch, bytes))
                .await
                .unwrap_or_else(|_| Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, "apply_failed", "the apply stopped")))
        }
        Err(r) => Err(r),
    };
    let (outcome, detail, resp) = match result {
        Ok(Stored { applied: a, count, vault, digest, part }) => {
            let (check, diverged) = match digest {
                None => (String::new(), None),
                Some(None) => (" digest=in_sync".to_owned(), None),
                Some(Some((lo, hi))) => (format!(" digest=diverged ids={lo}..{hi}"), Some([lo, hi])),
            };
            let staged = part.as_ref().map(|(k, n, what)| format!(" auth_part={}/{n} {what}", k + 1));
            (
                "ok",
                format!(
                    "count={count} vault={vault} written={} skipped={} auth={} audit={}{check}{}",
                    a.written,
                    a.skipped,
                    a.auth,
                    a.audit,
                    staged.unwrap_or_default()
                ),
                (
                    StatusCode::OK,
                    Json(json!({"applied": count, "written": a.written, "skipped": a.skipped, "auth": a.auth,
                                "audit": a.audit, "diverged": diverged, "auth_part": part.map(|p| p.2)})),
                )
                    .into_response(),
            )
        }
        Err(r) => {
            if r.auth_failure {
                let now = crate::store::now_secs();
                let pop = claimed.as_deref().unwrap_or("unknown");
                let banned = rt.gate.fail(pop, ip, now, rt.config.ban_after_failures, rt.config.ban_duration_s);
                let addr = ip.map(|i| i.to_string()).unwrap_or_default();
                crate::edition::alert(
                    "replication_auth",
                    "a replication request failed authentication",
                    &[("pop", pop.to_owned()), ("address", addr.clone()), ("reason", r.code.to_owned())],
                );
                if banned {
                    crate::edition::alert(
                        "replication_ban",
                        "a source POP address is banned after repeated failed authentications",
                        &[("pop", pop.to_owned()), ("address", addr)],
                    );
                }
            }
            tracing::warn!(pop = %actor, reason = r.code, status = r.status.as_u16(), "replication request refused");
            let resp = (r.status, Json(json!({"error": r.code, "message": r.message}))).into_response();
            ("refused", format!("reason={} {}", r.code, r.message), resp)
        }
    };
    let actor2 = actor.clone();
    let _ = tokio::task::spawn_blocking(move || super::audit("replication.apply", &actor2, outcome, detail)).await;
    resp
}

async fn check(
    rt: &'static super::Runtime,
    req: Request,
    ip: Option<IpAddr>,
    claimed: Option<&str>,
) -> Result<(Batch, usize), Refusal> {
    let cfg = &rt.config;
    let max = cfg.max_body_bytes;
    // Review item 15: a declared size over the limit is refused before any of the body is read.
    let declared = header(req.headers(), "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("the body exceeds {max} bytes")));
    }
    let (parts, body) = req.into_parts();
    let h = &parts.headers;
    let (Some(pop), Some(ts), Some(nonce_hex), Some(sig_hex)) =
        (claimed, header(h, H_TS), header(h, H_NONCE), header(h, H_SIG))
    else {
        return Err(auth_fail(
            "unsigned",
            "the x-clavitor-pop, -timestamp, -nonce and -signature headers are required",
        ));
    };
    let Some(peer) = cfg.sources.iter().find(|p| p.id == pop) else {
        return Err(auth_fail("unknown_pop", "this source POP is not authorised on this backup"));
    };
    let now = crate::store::now_secs();
    if let Some(left) = rt.gate.banned(pop, ip, now) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "banned",
            format!("banned after repeated failed authentications; {left} s left"),
        ));
    }
    let (Ok(ts), Some(nonce)) = (ts.parse::<i64>(), hex16(nonce_hex)) else {
        return Err(auth_fail("malformed", "timestamp must be Unix seconds and nonce 16 bytes of hex"));
    };
    let window = i64::try_from(cfg.max_request_age_s).unwrap_or(i64::MAX);
    let skew = now.saturating_sub(ts);
    if skew.saturating_abs() > window {
        // Not an authentication failure: a clock that drifted must not ban a POP, and
        // replication resumes by itself once the clocks agree again.
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "clock_skew",
            format!("request timestamp is {skew} s off this POP's clock; the window is ±{window} s"),
        ));
    }
    let Some(sig) =
        hex::decode(sig_hex).ok().and_then(|b| <[u8; 64]>::try_from(b).ok()).map(|b| Signature::from_bytes(&b))
    else {
        return Err(auth_fail("bad_signature", "the signature is not 64 bytes of hex"));
    };
    let body = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(e) if over_limit(&e) => {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body exceeds {max} bytes"),
            ));
        }
        // The connection ended (or was reset) before the whole body arrived: nothing to apply.
        Err(_) => {
            return Err(refuse(StatusCode::BAD_REQUEST, "incomplete_body", "the body ended before it was complete"));
        }
    };
    if peer.key.verify_strict(&signed_message(ts, nonce_hex, &body), &sig).is_err() {
        return Err(auth_fail("bad_signature", "the signature does not verify with this POP's key"));
    }
    // Charged only once the POP proved who it is: a stranger who claims a real POP's id must
    // not use up that POP's budget (its bad signatures count towards its own ban instead).
    if !rt.gate.within_rate(pop, cfg.rate_limit_per_s, now) {
        return Err(refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("more than {} requests per second from this POP", cfg.rate_limit_per_s),
        ));
    }
    if !rt.gate.fresh_nonce(nonce, now, window) {
        return Err(auth_fail("replayed", "this nonce was already used"));
    }
    rt.gate.succeed(pop, ip);
    let parsed: Batch = serde_json::from_slice(&body)
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, "bad_body", "the body is not a replication batch"))?;
    // The signature covers the body's digest, so these only catch a confused sender.
    let agrees = parsed.source_pop.as_bytes().ct_eq(pop.as_bytes()).unwrap_u8() == 1
        && parsed.timestamp == ts
        && parsed.nonce.as_bytes().ct_eq(nonce_hex.as_bytes()).unwrap_u8() == 1;
    if !agrees {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "the body's source_pop, timestamp and nonce must equal the signed headers",
        ));
    }
    if !valid_pop_id(&parsed.vault) {
        return Err(refuse(StatusCode::BAD_REQUEST, "bad_body", "vault must be a vault id"));
    }
    Ok((parsed, body.len()))
}

/// Checks an auth snapshot's part fields, field by field: `parts` 1 to [`MAX_AUTH_PARTS`],
/// `part` below it, the keyring only in part 0, and a part of a split snapshot alone in its
/// batch (so staging it never holds back entries or audit rows).
fn check_auth_part(batch: &Batch) -> Result<(), Refusal> {
    let Some(a) = &batch.auth else { return Ok(()) };
    let bad = |m: String| refuse(StatusCode::BAD_REQUEST, "bad_auth_part", m);
    if a.parts == 0 || a.parts > MAX_AUTH_PARTS {
        return Err(bad(format!("auth.parts must be 1 to {MAX_AUTH_PARTS}, not {}", a.parts)));
    }
    if a.part >= a.parts {
        return Err(bad(format!("auth.part must be below auth.parts ({}), not {}", a.parts, a.part)));
    }
    if a.part > 0 && a.keyring.is_some() {
        return Err(bad("only part 0 of an auth snapshot carries the keyring".into()));
    }
    if a.parts > 1 && (!batch.entries.is_empty() || !batch.audit.is_empty() || batch.digest.is_some() || batch.repair) {
        return Err(bad("a part of a split auth snapshot travels alone: no entries, audit rows or digest".into()));
    }
    Ok(())
}

/// Serialises the creation of replica vaults (two batches for one new vault must not race).
static ADOPTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Applies an authenticated batch in one transaction of its vault's file; creates the vault
/// first (its data key opened with this POP's transport secret and re-wrapped under this
/// node's master key) if this node does not hold it yet. A vault of this node's own, or a
/// replica of another source, is never written. Runs on a blocking thread.
/// What an accepted batch did; `digest`: `None` if it asked for no divergence check, else the
/// first range of entry ids that differs (`Some(None)`: in sync).
/// `part`: for a part of a split auth snapshot, (index, count, what became of it: `staged`,
/// `applied` with the last part, or `held` when this backup holds that snapshot or a newer one).
struct Stored {
    applied: Applied,
    count: usize,
    vault: String,
    digest: Option<Option<(i64, i64)>>,
    part: Option<(u32, u32, &'static str)>,
}

/// What one part of a split auth snapshot did, inside the vault's write lock.
enum PartOutcome {
    Staged,
    Held,
    Applied(Applied),
    Refused(StageError),
}

fn store(rt: &super::Runtime, node: &Node, batch: Batch, bytes: usize) -> Result<Stored, Refusal> {
    let count = batch.entries.len() + batch.audit.len() + usize::from(batch.auth.is_some());
    check_auth_part(&batch)?;
    if batch.is_heartbeat() {
        return Ok(Stored { applied: Applied::default(), count: 0, vault: batch.vault, digest: None, part: None });
    }
    let bad = |m: String| refuse(StatusCode::BAD_REQUEST, "bad_body", m);
    let id = VaultId::parse(&batch.vault).map_err(|_| bad("vault must be a vault id".into()))?;
    let source = batch.source_pop.as_str();
    let entries = batch.entries.iter().map(|e| e.to_row()).collect::<Result<Vec<_>, _>>().map_err(bad)?;
    let mut auth = batch.auth.as_ref().map(|a| a.to_snapshot()).transpose().map_err(bad)?;
    let audit: Vec<_> = batch.audit.iter().map(|a| a.to_row()).collect();
    let vault = match node.vault(id.as_str()) {
        Some(v) => v,
        None => {
            let _one = ADOPTING.lock().unwrap_or_else(|p| p.into_inner());
            match node.vault(id.as_str()) {
                Some(v) => v,
                None => adopt(rt, node, &id, source, batch.data_key.as_deref())?,
            }
        }
    };
    let now = crate::store::now_ms();
    if let Some(a) = batch.auth.as_ref().filter(|a| a.parts > 1)
        && let Some(rows) = auth.take()
    {
        let (index, parts) = (a.part, a.parts);
        let outcome = vault.change(|db, _, _| {
            let of = db.replica_of()?;
            if of.as_deref() != Some(source) {
                return Err(VaultError::Conflict("not_a_replica".into()));
            }
            // A snapshot this backup holds already (the last part's answer was lost, and the
            // primary sends it again): nothing to stage.
            let held = db.meta("replica_auth_seq")?.and_then(|v| v.parse::<i64>().ok()).unwrap_or(-1);
            if rows.seq <= held {
                return Ok(PartOutcome::Held);
            }
            let part = Part { seq: rows.seq, index, count: parts, rows, bytes };
            match rt.staging.put(source, id.as_str(), part, crate::store::now_secs()) {
                Ok(Staged::Waiting { have }) => {
                    tracing::debug!(vault = %id, source = %source, have, parts, "auth snapshot part staged");
                    Ok(PartOutcome::Staged)
                }
                // The last part: the whole snapshot in one transaction, as a whole one travels.
                Ok(Staged::Complete(whole)) => db
                    .apply_replicated_batch(source, &[], Some(&whole), &[], now, false)
                    .map(PartOutcome::Applied)
                    .map_err(VaultError::from_store),
                Err(e) => Ok(PartOutcome::Refused(e)),
            }
        });
        let done = |applied: Applied, what: &'static str| Stored {
            applied,
            count,
            vault: batch.vault.clone(),
            digest: None,
            part: Some((index, parts, what)),
        };
        return match outcome {
            Ok(PartOutcome::Staged) => Ok(done(Applied::default(), "staged")),
            Ok(PartOutcome::Held) => Ok(done(Applied::default(), "held")),
            Ok(PartOutcome::Applied(a)) => Ok(done(a, "applied")),
            Ok(PartOutcome::Refused(e @ StageError::Full { .. })) => {
                tracing::warn!(vault = %id, source = %source, "auth snapshot staging is full");
                Err(refuse(StatusCode::SERVICE_UNAVAILABLE, "auth_staging_full", e.to_string()))
            }
            Ok(PartOutcome::Refused(e @ StageError::Missing { .. })) => {
                Err(refuse(StatusCode::CONFLICT, "auth_parts_missing", e.to_string()))
            }
            Ok(PartOutcome::Refused(e @ StageError::Mismatch { .. })) => {
                Err(refuse(StatusCode::CONFLICT, "auth_part_mismatch", e.to_string()))
            }
            Err(e) => Err(stored_error(&id, e)),
        };
    }
    let applied = vault.change(|db, _, _| {
        let of = db.replica_of()?;
        if of.as_deref() != Some(source) {
            return Err(VaultError::Conflict("not_a_replica".into()));
        }
        let a = db
            .apply_replicated_batch(source, &entries, auth.as_ref(), &audit, now, batch.repair)
            .map_err(VaultError::from_store)?;
        let digest = match &batch.digest {
            None => None,
            Some(theirs) => Some(first_difference(theirs, &db.entry_digests(DIGEST_RANGE)?)),
        };
        Ok((a, digest))
    });
    match applied {
        Ok((applied, digest)) => Ok(Stored { applied, count, vault: batch.vault, digest, part: None }),
        Err(e) => Err(stored_error(&id, e)),
    }
}

/// The refusal for a batch its vault did not take.
fn stored_error(id: &VaultId, e: VaultError) -> Refusal {
    match e {
        VaultError::Conflict(m) if m == "not_a_replica" => refuse(
            StatusCode::CONFLICT,
            "not_a_replica",
            "this vault is not a replica of the source POP here; nothing was applied",
        ),
        VaultError::Conflict(m) => refuse(StatusCode::CONFLICT, "rows_rejected", format!("{m}; nothing was applied")),
        e => {
            tracing::error!(vault = %id, error = %e, "a replicated batch could not be stored");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "apply_failed",
                "the batch could not be stored; nothing was applied",
            )
        }
    }
}

/// The first range of entry ids (lo, hi) whose digest differs between the two lists (a range
/// only one side has differs too); `None` if they are equal.
fn first_difference(theirs: &[(i64, String)], ours: &[(i64, String)]) -> Option<(i64, i64)> {
    let a: std::collections::BTreeMap<i64, &str> = theirs.iter().map(|(lo, h)| (*lo, h.as_str())).collect();
    let b: std::collections::BTreeMap<i64, &str> = ours.iter().map(|(lo, h)| (*lo, h.as_str())).collect();
    a.keys()
        .chain(b.keys())
        .copied()
        .collect::<std::collections::BTreeSet<i64>>()
        .into_iter()
        .find(|lo| a.get(lo) != b.get(lo))
        .map(|lo| (lo, lo.saturating_add(DIGEST_RANGE - 1)))
}

fn adopt(
    rt: &super::Runtime,
    node: &Node,
    id: &VaultId,
    source: &str,
    sealed: Option<&str>,
) -> Result<std::sync::Arc<crate::vault::live::LiveVault>, Refusal> {
    let unknown = || {
        refuse(
            StatusCode::CONFLICT,
            "unknown_vault",
            "this backup does not hold the vault and the batch carries no data key it can open; nothing was applied",
        )
    };
    let sealed = sealed.and_then(|h| hex::decode(h).ok()).ok_or_else(unknown)?;
    let secret = rt.config.transport_secret.as_ref().ok_or_else(unknown)?;
    let key = crate::crypto::key_transport::open_data_key(secret, &sealed, id.as_str(), source, &rt.config.pop_id)
        .map_err(|_| unknown())?;
    let failed = |e: VaultError| {
        tracing::error!(vault = %id, error = %e, "a replica vault could not be created");
        refuse(StatusCode::SERVICE_UNAVAILABLE, "apply_failed", "the replica vault could not be created")
    };
    // A file left by an adoption that was killed before it registered the vault (its replica
    // mark is this source's, or it never got that far) is removed and the adoption done again;
    // otherwise the backup would refuse this vault for ever.
    let leftover = node
        .data_dir()
        .remove_unregistered_vault(id, |db| db.replica_of().is_ok_and(|of| of.is_none_or(|of| of == source)))
        .map_err(failed)?;
    if leftover {
        tracing::warn!(vault = %id, source = %source, "an interrupted replica adoption is done again");
    }
    let created = node.data_dir().create_vault_with_key(id, &key, |db| db.set_replica_of(source));
    created.map_err(failed)?;
    let vault = node.adopt(id).map_err(failed)?;
    tracing::info!(vault = %id, source = %source, "replica vault created");
    Ok(vault)
}
