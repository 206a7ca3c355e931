//! `clavitor replication status` (both roles): this POP's role, its own public key (for the
//! peers' files), its peers and limits, and the last accepted and refused apply from the node's
//! audit log. `anyhow` is allowed here (CLI). Never prints the signing key or entry data.

use anyhow::bail;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::Subcommand;
use serde_json::{Value, json};

use super::Role;
use crate::store::node_db::NodeDb;

#[derive(Debug, Subcommand)]
pub enum ReplicationCommand {
    /// Role, peers, limits, this POP's public key, last success and last error (JSON).
    Status,
}

/// `openssl pkey -pubout`'s base64 line for this POP's key: what the peers' files list.
fn public_key_b64(key: &[u8]) -> String {
    let mut der = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
    der.extend_from_slice(key);
    STANDARD.encode(der)
}

/// The value of `key` (e.g. `vault=`) in an audit detail of space-separated `key=value` parts.
fn field<'a>(detail: &'a str, key: &str) -> Option<&'a str> {
    detail.split(' ').find_map(|part| part.strip_prefix(key))
}

fn row_json(r: &crate::store::AuditRow) -> Value {
    json!({"ts_ms": r.record.ts, "actor": r.record.actor, "outcome": r.record.outcome, "detail": r.record.detail})
}

pub fn run(cmd: &ReplicationCommand, node_db: &std::path::Path) -> anyhow::Result<()> {
    let ReplicationCommand::Status = cmd;
    let Some(rt) = super::runtime() else {
        bail!("this node has no replication file: pass --replication-config FILE");
    };
    let c = &rt.config;
    let peer = |p: &super::config::Peer| json!({"id": p.id, "url": p.url, "transport_key": p.transport_key.as_ref().map(|k| k.to_hex())});
    // The newest apply attempts in node.db (both outcomes); bounded, newest first.
    let rows = NodeDb::open(node_db)?.audit(None, 1000)?;
    // A backup's attempts are `replication.apply`, a primary's `replication.send`.
    let applies: Vec<_> =
        rows.iter().filter(|r| matches!(r.record.action.as_ref(), "replication.apply" | "replication.send")).collect();
    let last_success = applies.iter().find(|r| r.record.outcome == "ok").map(|r| row_json(r));
    let last_error = applies.iter().find(|r| r.record.outcome != "ok").map(|r| row_json(r));
    // The newest divergence check per vault: "in sync" or the first range of entry ids that
    // differs (both sides record it: the backup's apply row, the primary's send row).
    let mut divergence = serde_json::Map::new();
    for r in applies.iter().filter(|r| r.record.outcome == "ok") {
        let d = &r.record.detail;
        let (Some(vault), Some(check)) = (field(d, "vault="), field(d, "digest=")) else { continue };
        if divergence.contains_key(vault) {
            continue;
        }
        let state = match check {
            "in_sync" => "in sync".to_owned(),
            _ => format!("differs at entry ids {}", field(d, "ids=").unwrap_or("?")),
        };
        divergence.insert(vault.to_owned(), json!({"state": state, "ts_ms": r.record.ts}));
    }
    // A primary's backlog per backup (rows not yet acknowledged) and its watermarks per vault.
    let (backlog, watermarks) = match c.role {
        Role::Primary => (backlog_json(rt), watermarks_json(rt, node_db)),
        Role::Backup => (Value::Null, Value::Null),
    };
    let worker = match c.role {
        Role::Backup => "none: a backup never replicates onward",
        Role::Primary => "ships dirty rows on every change (30 s poll as backstop)",
    };
    let report = json!({
        "pop_id": c.pop_id,
        "role": c.role.as_str(),
        "public_key": public_key_b64(ring::signature::KeyPair::public_key(&c.signing_key).as_ref()),
        // What a primary's `[[backups]] transport_key` lists for this POP (null: none configured).
        "transport_key": c.transport_secret.as_ref().map(|s| s.public().to_hex()),
        "backups": if c.role == Role::Primary { c.backups.iter().map(peer).collect::<Vec<_>>() } else { Vec::new() },
        "sources": c.sources.iter().map(peer).collect::<Vec<_>>(),
        "worker": worker,
        "limits": {
            "batch_size": c.batch_size,
            "retries": c.retries,
            "request_timeout_s": c.request_timeout_s,
            "max_request_age_s": c.max_request_age_s,
            "rate_limit_per_s": c.rate_limit_per_s,
            "ban_after_failures": c.ban_after_failures,
            "ban_duration_s": c.ban_duration_s,
            "max_body_bytes": c.max_body_bytes,
            "private_ca": c.ca_file.is_some(),
        },
        "backlog": backlog,
        "watermarks": watermarks,
        "last_success": last_success,
        "last_error": last_error,
        "divergence": divergence,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `{backup id: {entries, audit, auth, rows}}`; null if a vault file cannot be read.
fn backlog_json(rt: &super::Runtime) -> Value {
    let Some(per) = super::backlogs(rt) else { return Value::Null };
    let map: serde_json::Map<String, Value> = per
        .into_iter()
        .map(|(id, b)| (id, json!({"entries": b.entries, "audit": b.audit, "auth": b.auth, "rows": b.rows()})))
        .collect();
    Value::Object(map)
}

/// `{vault id: {backup id: {entries: [change_seq, id], auth, audit}}}`: the last acknowledged
/// positions; null if a vault file cannot be read.
fn watermarks_json(rt: &super::Runtime, node_db: &std::path::Path) -> Value {
    let Some(root) = node_db.parent() else { return Value::Null };
    let dir = crate::vault::data_dir::DataDir::new(root.to_owned(), None);
    let Ok(ids) = dir.vault_ids() else { return Value::Null };
    let mut out = serde_json::Map::new();
    for id in ids {
        let Ok(db) = crate::store::vault_db::VaultDb::open(&dir.vault_path(&id)) else { return Value::Null };
        let mut per = serde_json::Map::new();
        for b in &rt.config.backups {
            let Ok([seq, entry, auth, audit]) = db.replication_marks(&b.id) else { return Value::Null };
            per.insert(b.id.clone(), json!({"entries": [seq, entry], "auth": auth, "audit": audit}));
        }
        out.insert(id.to_string(), Value::Object(per));
    }
    Value::Object(out)
}
