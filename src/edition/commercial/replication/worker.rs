//! The primary's replication worker: one thread that sends signed batches to its first
//! reachable backup over verified TLS, retrying on the integer backoff table and failing over to
//! the next backup when one stays unreachable (review items 6, 8, 11, 12).
//!
//! This build's batches carry no rows yet (a heartbeat that proves the pair's keys, clocks, TLS
//! and reachability); shipping dirty rows is the next step of issue 14. Never runs on a backup;
//! never skips TLS verification; every attempt is a node audit row (`replication.send`); logs
//! carry only POP ids and outcomes.

use std::time::Duration;

use serde_json::json;

use super::Role;
use super::apply::{H_NONCE, H_POP, H_SIG, H_TS, PATH, signed_message};
use super::config::Peer;

/// Seconds to wait after the 1st, 2nd, … failed attempt (review item 11: no float math).
pub const BACKOFF_S: [u64; 5] = [1, 5, 25, 125, 625];

/// Starts the worker on a primary; a backup never starts one, whatever its file lists.
pub fn start(rt: &'static super::Runtime) {
    if rt.config.role != Role::Primary {
        return;
    }
    let spawned = std::thread::Builder::new().name("replication-worker".into()).spawn(move || run(rt));
    if let Err(e) = spawned {
        crate::edition::alert(
            "replication_worker",
            "the replication worker could not start",
            &[("error", e.to_string())],
        );
    }
}

fn run(rt: &'static super::Runtime) {
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
    let mut current = 0usize;
    loop {
        let Some(backup) = cfg.backups.get(current % cfg.backups.len().max(1)) else { return };
        if send_with_retries(rt, &agent, backup) {
            std::thread::sleep(Duration::from_secs(cfg.poll_interval_s));
        } else {
            crate::edition::alert(
                "replication_unreachable",
                "a backup POP stayed unreachable through every retry; failing over to the next",
                &[("backup", backup.id.clone())],
            );
            current = current.wrapping_add(1);
        }
    }
}

/// One try plus `retries` retries, waiting `BACKOFF_S[i]` after the i-th failure.
fn send_with_retries(rt: &super::Runtime, agent: &ureq::Agent, backup: &Peer) -> bool {
    let retries = usize::try_from(rt.config.retries).unwrap_or(BACKOFF_S.len()).min(BACKOFF_S.len());
    for attempt in 0..=retries {
        match send_once(rt, agent, backup) {
            Ok(()) => {
                super::audit("replication.send", &format!("pop:{}", backup.id), "ok", "count=0".into());
                return true;
            }
            Err(reason) => {
                tracing::warn!(backup = %backup.id, attempt, reason = %reason, "replication send failed");
                super::audit(
                    "replication.send",
                    &format!("pop:{}", backup.id),
                    "failed",
                    format!("count=0 reason={reason}"),
                );
                if let Some(wait) = BACKOFF_S.get(attempt).filter(|_| attempt < retries) {
                    std::thread::sleep(Duration::from_secs(*wait));
                }
            }
        }
    }
    false
}

fn send_once(rt: &super::Runtime, agent: &ureq::Agent, backup: &Peer) -> Result<(), String> {
    let cfg = &rt.config;
    let url = backup.url.as_deref().ok_or("no url")?;
    let ts = crate::store::now_secs();
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let body = serde_json::to_vec(
        &json!({"source_pop": cfg.pop_id, "vault": "node", "timestamp": ts, "nonce": nonce, "rows": []}),
    )
    .map_err(|e| e.to_string())?;
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
    if status == 200 {
        return Ok(());
    }
    // The backup's error code only (its message may be long); never entry data.
    let text = resp.body_mut().with_config().limit(4096).read_to_string().unwrap_or_default();
    let code = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Err(format!("status {status} {code}"))
}
