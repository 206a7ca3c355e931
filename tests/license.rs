//! Signed license caps (issue 15), through the real binary: install via env, file, POST and the
//! CLI; restart restores from node.db; every cap end to end with the state's message; key
//! rotation at revalidation; retention pruning after a license change; management tokens.
#![cfg(feature = "commercial")]

mod common;
#[path = "common/passkey.rs"]
mod passkey;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use clavitor::license::{LicenseInfo, Limit, Limits, canonical_payload};
use common::{Server, Vault, request};
use ed25519_dalek::{Signer, SigningKey};
use passkey::{Admin, origin, post_json};
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::CreationChallengeResponse;

const DAY: i64 = 86_400;

/// A vendor key pair made by openssl, as the vendor would.
struct Keys {
    signing: SigningKey,
    public_pem: PathBuf,
}

fn keys(dir: &Path, name: &str) -> Keys {
    let private = dir.join(format!("{name}.pem"));
    let public_pem = dir.join(format!("{name}.pub.pem"));
    assert!(
        Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&private)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public_pem)
            .status()
            .unwrap()
            .success()
    );
    let pem = std::fs::read_to_string(&private).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(b64).unwrap();
    let seed: [u8; 32] = der[16..].try_into().unwrap();
    Keys { signing: SigningKey::from_bytes(&seed), public_pem }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn token(k: &Keys, tenant: &str, exp: i64, grace: u32, limits: &[(Limit, u64)]) -> String {
    let info = LicenseInfo {
        license_id: uuid::Uuid::new_v4(),
        tenant_id: tenant.into(),
        label: Some("ACME prod 2026".into()),
        iat: now(),
        exp,
        grace_period_days: grace,
        limits: Limits(limits.iter().copied().collect()),
    };
    let payload = canonical_payload(&info);
    let sig = k.signing.sign(&payload);
    format!("{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

fn active(k: &Keys, limits: &[(Limit, u64)]) -> String {
    token(k, "acme", now() + 365 * DAY, 30, limits)
}

fn node_args(k: &Keys) -> Vec<String> {
    vec!["--tenant-id".into(), "acme".into(), "--license-public-key".into(), k.public_pem.display().to_string()]
}

fn start(v: &Vault, k: &Keys, env: &[(&str, &str)]) -> Server {
    let args = node_args(k);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_env(&v.dir(), &args, env)
}

/// The CLI with the node's license flags (and optional env).
fn cli(v: &Vault, k: &Keys, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut all: Vec<String> = node_args(k);
    all.extend(args.iter().map(|s| s.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    v.cli_env(&all, env)
}

fn mgmt_token(v: &Vault, scope: &str) -> String {
    let out = v.cli(&["mgmt", "token", "add", "--name", "ops", "--scope", scope]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(t.starts_with("cvm_"), "{t}");
    t
}

/// The audit name of the one management token with `scope` (`mgmt:ID`).
fn mgmt_label(v: &Vault, scope: &str) -> String {
    let list = v.cli_json(&["mgmt", "token", "list"], None);
    let mut ids = list.as_array().unwrap().iter().filter(|t| t["scope"] == scope).map(|t| t["id"].as_i64().unwrap());
    let id = ids.next().expect("a token with the scope");
    assert!(ids.next().is_none(), "one token with scope {scope}");
    format!("mgmt:{id}")
}

fn usage(s: &Server, mgmt: &str) -> Value {
    let r = s.get("/api/license/usage", Some(mgmt));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn cap_of(u: &Value, key: &str) -> (u64, String) {
    let l = u["limits"].as_array().unwrap().iter().find(|l| l["key"] == key).unwrap();
    (l["cap"].as_u64().unwrap(), l["source"].as_str().unwrap().to_owned())
}

fn node_actions(v: &Vault) -> Vec<String> {
    v.audit_rows(true).iter().map(|r| r["action"].as_str().unwrap_or_default().to_owned()).collect()
}

fn install(s: &Server, mgmt: &str, tok: &str) -> common::Resp {
    request(&s.url("/api/license"), "POST", Some(mgmt), Some(json!({"token": tok}).to_string().as_bytes()))
}

#[test]
fn install_via_env_file_and_post_and_restart_restores_from_the_db() {
    let v = Vault::new();
    let k = keys(v.tmp.path(), "vendor");
    let mgmt = mgmt_token(&v, "license");

    // Env. The expiry is an hour past a whole number of days, so the day count is exact.
    let exp = now() + 365 * DAY + 3600;
    let t1 = token(&k, "acme", exp, 21, &[(Limit::MaxAgentsPerVault, 7)]);
    let mut s = start(&v, &k, &[("CLAVITOR_LICENSE_TOKEN", &t1)]);
    let u = usage(&s, &mgmt);
    assert_eq!(u["state"], "ACTIVE");
    assert_eq!(u["tenantId"], "acme");
    assert_eq!(u["expiresAt"], exp, "{u}");
    assert_eq!(u["daysRemaining"], 365, "{u}");
    assert_eq!(u["gracePeriodDays"], 21, "{u}");
    assert_eq!(u["label"], "ACME prod 2026", "{u}");
    assert_eq!(u["message"], "License active. 365 days remaining.");
    assert_eq!(cap_of(&u, "max_agents_per_vault"), (7, "license".into()));
    assert_eq!(cap_of(&u, "max_entries_per_vault"), (100, "default".into()));
    assert!(u["lastValidatedAt"].as_i64().is_some());
    s.terminate();

    // Restart without env: the row in node.db.
    let mut s = start(&v, &k, &[]);
    let restored = usage(&s, &mgmt);
    assert_eq!(restored["state"], "ACTIVE");
    assert_eq!(restored["licenseId"], u["licenseId"]);
    s.terminate();

    // File (the agenix way) replaces the row.
    let file = v.tmp.path().join("license.txt");
    std::fs::write(&file, format!("{}\n", active(&k, &[(Limit::MaxAgentsPerVault, 9)]))).unwrap();
    let s = start(&v, &k, &[("CLAVITOR_LICENSE_FILE", file.to_str().unwrap())]);
    assert_eq!(cap_of(&usage(&s, &mgmt), "max_agents_per_vault").0, 9);

    // POST replaces it at run time.
    let r = install(&s, &mgmt, &active(&k, &[(Limit::MaxAgentsPerVault, 11)]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "ACTIVE");
    assert_eq!(cap_of(&usage(&s, &mgmt), "max_agents_per_vault").0, 11);

    // A token for another tenant is refused, never stored, and the node is INVALID.
    let r = install(&s, &mgmt, &token(&k, "beta", now() + DAY, 0, &[(Limit::MaxAgentsPerVault, 99)]));
    // The reference: 400 with the validator's message.
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["message"].as_str().unwrap().starts_with("license refused: "), "{}", r.body);
    let u = usage(&s, &mgmt);
    assert_eq!(u["state"], "INVALID");
    assert!(u["message"].as_str().unwrap().contains("does not match server tenant 'acme'"), "{u}");
    assert_eq!(cap_of(&u, "max_agents_per_vault"), (5, "default".into()), "INVALID falls back to the default tier");
    drop(s);

    let mut s = start(&v, &k, &[]);
    assert_eq!(cap_of(&usage(&s, &mgmt), "max_agents_per_vault").0, 11, "the refused token was not stored");
    s.terminate();

    let actions = node_actions(&v);
    for a in ["install_license", "replace_license", "reject_license"] {
        assert!(actions.iter().any(|x| x == a), "{a} not audited: {actions:?}");
    }
}

#[test]
fn management_tokens_work_only_on_management_routes() {
    let v = Vault::new();
    let k = keys(v.tmp.path(), "vendor");
    let license = mgmt_token(&v, "license");
    let vaults = mgmt_token(&v, "vaults");
    let s = start(&v, &k, &[]);
    for path in ["/api/entries", "/api/agents", "/api/whoami", "/api/audit", "/api/entries/1", "/api/passkeys"] {
        assert_eq!(s.get(path, Some(&license)).status, 401, "{path}");
    }
    let r = request(&s.url("/api/entries"), "POST", Some(&license), Some(b"{\"title\":\"x\",\"fields\":[]}"));
    assert_eq!(r.status, 401);
    assert_eq!(s.get("/api/license/usage", Some(&vaults)).status, 403, "wrong scope");
    assert_eq!(s.get("/api/license/usage", Some(&v.owner)).status, 401, "an agent token is not a management token");
    assert_eq!(s.get("/api/license/usage", None).status, 401);
    let u = usage(&s, &license);
    assert_eq!(u["state"], "ABSENT");
    assert_eq!(u["message"], "No license installed. Default tier applies.");
    for field in ["expiresAt", "daysRemaining", "gracePeriodDays", "label", "licenseId", "lastValidatedAt"] {
        assert!(u[field].is_null(), "{field} without a license: {u}");
    }

    let list = v.cli_json(&["mgmt", "token", "list"], None);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains("cvm_"), "tokens are never listed");
    assert!(v.cli(&["mgmt", "token", "revoke", "1"]).status.success());
    assert_eq!(s.get("/api/license/usage", Some(&license)).status, 401, "revoked");
}

fn cap_refusal(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a cap refusal");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn agent_cap_per_state_through_the_cli() {
    let v = Vault::new(); // the owner is agent 1
    let k = keys(v.tmp.path(), "vendor");
    for n in 2..=5 {
        assert!(cli(&v, &k, &["agent", "add", "--name", &format!("a{n}")], &[]).status.success());
    }
    // ABSENT: the default tier's 5.
    let err = cap_refusal(&cli(&v, &k, &["agent", "add", "--name", "a6"], &[]));
    assert!(err.contains("No license installed: default tier applies (cap = 5 for max_agents_per_vault)"), "{err}");
    // GRACE: the license's cap still applies.
    let grace = token(&k, "acme", now() - 2 * DAY, 30, &[(Limit::MaxAgentsPerVault, 6)]);
    assert!(cli(&v, &k, &["agent", "add", "--name", "a6"], &[("CLAVITOR_LICENSE_TOKEN", &grace)]).status.success());
    let err = cap_refusal(&cli(&v, &k, &["agent", "add", "--name", "a7"], &[("CLAVITOR_LICENSE_TOKEN", &grace)]));
    assert!(err.contains("License expired 2 day(s) ago and is in its grace period"), "{err}");
    // ACTIVE.
    let act = active(&k, &[(Limit::MaxAgentsPerVault, 6)]);
    let err = cap_refusal(&cli(&v, &k, &["agent", "add", "--name", "a7"], &[("CLAVITOR_LICENSE_TOKEN", &act)]));
    assert!(err.contains("License cap reached: max_agents_per_vault = 6. Current usage is 6."), "{err}");
    // EXPIRED falls back to the default tier (6 rows stay; none is added).
    let expired = token(&k, "acme", now() - 40 * DAY, 0, &[(Limit::MaxAgentsPerVault, 50)]);
    let err = cap_refusal(&cli(&v, &k, &["agent", "add", "--name", "a7"], &[("CLAVITOR_LICENSE_TOKEN", &expired)]));
    assert!(err.contains("License expired 40 days ago: system reverted to default tier (cap = 5"), "{err}");
    // INVALID (signed by someone else) falls back too.
    let other = keys(v.tmp.path(), "other");
    let forged = active(&other, &[(Limit::MaxAgentsPerVault, 50)]);
    let err = cap_refusal(&cli(&v, &k, &["agent", "add", "--name", "a7"], &[("CLAVITOR_LICENSE_TOKEN", &forged)]));
    assert!(err.contains("License rejected (License signature verification failed)"), "{err}");
    // The existing six keep working.
    assert_eq!(v.cli_json(&["agent", "list", "--json"], None).as_array().unwrap().len(), 6);
    assert!(node_actions(&v).iter().any(|a| a == "cap_exceeded"));
}

#[test]
fn entry_cap_covers_cli_add_import_and_the_api() {
    let v = Vault::uninitialised_owner();
    let k = keys(v.tmp.path(), "vendor");
    let lines: String = (0..99).map(|n| format!("{}\n", json!({"title": format!("e{n}"), "fields": []}))).collect();
    // An import over the cap is refused whole.
    let two_too_many =
        format!("{lines}{}\n{}\n", json!({"title": "x", "fields": []}), json!({"title": "y", "fields": []}));
    let out = v.cli_stdin(&["entry", "import", "--file", "-"], Some(&two_too_many));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_entries_per_vault"), "{out:?}");
    let out = v.cli_stdin(&["entry", "import", "--file", "-"], Some(&lines));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        v.cli_stdin(&["entry", "add", "--json-file", "-"], Some(r#"{"title":"e100","fields":[]}"#)).status.success()
    );
    let out = v.cli_stdin(&["entry", "add", "--json-file", "-"], Some(r#"{"title":"e101","fields":[]}"#));
    assert!(cap_refusal(&out).contains("cap = 100 for max_entries_per_vault"));

    // Through the API with a passkey: 403 with the reference's body.
    let s = start(&v, &k, &[]);
    let mut owner = Admin::owner(&s, &v.setup_code);
    let r = owner.write(&s, "POST", "/api/entries", &json!({"title": "over", "fields": []}));
    assert_eq!(r.status, 403, "{}", r.body);
    let b = r.json();
    assert_eq!(b["error"], "license cap reached");
    assert_eq!(b["limit"], "max_entries_per_vault");
    assert_eq!(b["current"], 100);
    assert_eq!(b["cap"], 100);
    assert_eq!(b["state"], "ABSENT");
    assert!(b["message"].as_str().unwrap().starts_with("No license installed"));
    // The pages' import (one batch) is capped the same way.
    let r = owner.write(&s, "POST", "/api/entries/import", &json!({"entries": [{"title": "batch"}]}));
    assert_eq!((r.status, r.json()["limit"].clone()), (403, json!("max_entries_per_vault")), "{}", r.body);

    // A license lifts it at run time.
    let mgmt = mgmt_token(&v, "license");
    assert_eq!(install(&s, &mgmt, &active(&k, &[(Limit::MaxEntriesPerVault, 101)])).status, 200);
    // A batch of two with room for one is refused whole.
    let r = owner.write(&s, "POST", "/api/entries/import", &json!({"entries": [{"title": "b1"}, {"title": "b2"}]}));
    assert_eq!(r.status, 403, "{}", r.body);
    let r = owner.write(&s, "POST", "/api/entries", &json!({"title": "fits", "fields": []}));
    assert_eq!(r.status, 201, "{}", r.body);
    let r = owner.write(&s, "POST", "/api/entries", &json!({"title": "over", "fields": []}));
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["state"], "ACTIVE");
}

#[test]
fn agent_and_passkey_caps_through_the_api() {
    let v = Vault::uninitialised_owner();
    let k = keys(v.tmp.path(), "vendor");
    let s = start(&v, &k, &[]);
    let mut owner = Admin::owner(&s, &v.setup_code); // agent 1, passkey 1
    for n in 2..=5 {
        let r = owner.write(&s, "POST", "/api/agents", &json!({"name": format!("a{n}")}));
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = owner.write(&s, "POST", "/api/agents", &json!({"name": "a6"}));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["limit"], "max_agents_per_vault");
    assert_eq!(r.json()["current"], 5);

    let mut enroll = || {
        let mut other = SoftPasskey::new(true);
        let r = post_json(&s, "/api/passkeys/options", Some(&owner.token), &json!({}));
        assert_eq!(r.status, 200, "{}", r.body);
        let start = r.json();
        let ccr: CreationChallengeResponse = serde_json::from_value(start["options"].clone()).unwrap();
        let cred = other.do_registration(origin(), ccr).unwrap();
        let body = json!({"registration_id": start["registration_id"], "name": "spare", "credential": cred});
        owner.write(&s, "POST", "/api/passkeys", &body)
    };
    assert_eq!(enroll().status, 201, "second passkey fits the default tier's 2");
    let r = enroll();
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["limit"], "max_passkeys_per_vault");
    assert_eq!(r.json()["cap"], 2);
}

#[test]
fn key_rotation_makes_revalidation_move_the_node_to_invalid() {
    let v = Vault::new();
    let k = keys(v.tmp.path(), "vendor");
    let mgmt = mgmt_token(&v, "license");
    let install_out = {
        let file = v.tmp.path().join("lic");
        std::fs::write(&file, active(&k, &[(Limit::MaxAgentsPerVault, 20)])).unwrap();
        cli(&v, &k, &["license", "install", file.to_str().unwrap()], &[])
    };
    assert!(install_out.status.success(), "{}", String::from_utf8_lossy(&install_out.stderr));
    let mut args = node_args(&k);
    args.extend(["--license-revalidate-after-secs".into(), "2".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Server::start_env(&v.dir(), &args, &[]);
    assert_eq!(usage(&s, &mgmt)["state"], "ACTIVE");
    // The vendor rotates its key and the node's key file gets the new one, without the license
    // being reissued: the next revalidation notices.
    let rotated = keys(v.tmp.path(), "rotated");
    std::fs::copy(&rotated.public_pem, &k.public_pem).unwrap();
    common::eventually("revalidation ran", || usage(&s, &mgmt)["state"] == "INVALID");
    assert!(s.stderr().contains("OPERATOR ALERT [license]"));
    common::eventually("audited", || node_actions(&v).iter().any(|a| a == "revalidate_license"));
}

#[test]
fn revalidation_updates_last_validated_at() {
    let v = Vault::new();
    let k = keys(v.tmp.path(), "vendor");
    let mgmt = mgmt_token(&v, "license");
    let file = v.tmp.path().join("lic");
    std::fs::write(&file, active(&k, &[])).unwrap();
    assert!(cli(&v, &k, &["license", "install", file.to_str().unwrap()], &[]).status.success());
    let conn = rusqlite::Connection::open(v.dir().join("node.db")).unwrap();
    conn.execute("UPDATE license SET last_validated_at = 1000", []).unwrap();
    let mut args = node_args(&k);
    args.extend(["--license-revalidate-after-secs".into(), "1".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Server::start_env(&v.dir(), &args, &[]);
    common::eventually("revalidated", || usage(&s, &mgmt)["lastValidatedAt"].as_i64().unwrap_or(0) > 1000);
    assert_eq!(usage(&s, &mgmt)["state"], "ACTIVE");
}

#[test]
fn the_clock_moves_a_running_node_to_expired_with_an_alert() {
    let v = Vault::new();
    let k = keys(v.tmp.path(), "vendor");
    let mgmt = mgmt_token(&v, "license");
    // Ten seconds ahead: a loaded machine may take a few to start the node and answer.
    let soon = token(&k, "acme", now() + 10, 0, &[(Limit::MaxAgentsPerVault, 50)]);
    let s = start(&v, &k, &[("CLAVITOR_LICENSE_TOKEN", &soon)]);
    assert_eq!(usage(&s, &mgmt)["state"], "ACTIVE");
    assert!(!s.stderr().contains("OPERATOR ALERT [license]"));
    // Bounded: the thread wakes at exp + 1 s. (On a timeout the server's stderr is printed as
    // it is dropped.)
    common::eventually_within(std::time::Duration::from_secs(40), "the alert when the license expired", || {
        s.stderr().contains("OPERATOR ALERT [license]")
    });
    let u = usage(&s, &mgmt);
    assert_eq!(u["state"], "EXPIRED");
    assert_eq!(cap_of(&u, "max_agents_per_vault"), (5, "default".into()));
}

#[test]
fn boot_warns_once_per_limit_above_the_cap_and_license_show_prints_usage() {
    let v = Vault::new();
    let k = keys(v.tmp.path(), "vendor");
    let big = active(&k, &[(Limit::MaxAgentsPerVault, 10)]);
    for n in 2..=7 {
        let out = cli(&v, &k, &["agent", "add", "--name", &format!("a{n}")], &[("CLAVITOR_LICENSE_TOKEN", &big)]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // No license now: 7 agents against the default 5.
    let s = start(&v, &k, &[]);
    common::eventually("started", || s.get("/healthz", None).status == 200);
    // Warned by the license-jobs thread (it reads every vault's counts), not before serving.
    common::eventually("the over-cap warning", || s.stderr().contains("usage is above the license cap"));
    let warnings = s.stderr().matches("usage is above the license cap").count();
    assert_eq!(warnings, 1, "{}", s.stderr());
    assert!(s.stderr().contains("max_agents_per_vault"));
    // The existing agents keep working.
    assert_eq!(s.get("/api/entries", Some(&v.owner)).status, 200);
    let out = cli(&v, &k, &["license", "show"], &[]);
    assert!(out.status.success());
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["state"], "ABSENT");
    assert_eq!(cap_of(&shown, "max_agents_per_vault"), (5, "default".into()));
    assert_eq!(shown["limits"][1]["current"], 7);
}

fn insert_old_audit_row(v: &Vault, days_ago: i64, detail: &str) {
    let conn = rusqlite::Connection::open(v.vault_file()).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let ts = (now() - days_ago * DAY) * 1000;
    conn.execute(
        "INSERT INTO audit (ts, actor, action, outcome, detail) VALUES (?1, 'local-operator', 'entry.list', 'ok', ?2)",
        rusqlite::params![ts, detail],
    )
    .unwrap();
}

fn vault_audit_details(v: &Vault) -> Vec<String> {
    v.audit_rows(false).iter().map(|r| r["detail"].as_str().unwrap_or_default().to_owned()).collect()
}

#[test]
fn retention_pruning_follows_a_license_change_without_a_restart() {
    let v = Vault::new();
    let k = keys(v.tmp.path(), "vendor");
    let mgmt = mgmt_token(&v, "license");
    insert_old_audit_row(&v, 40, "forty-days");
    insert_old_audit_row(&v, 10, "ten-days");
    let t30 = active(&k, &[(Limit::MaxAuditRetentionDays, 30)]);
    let s = start(&v, &k, &[("CLAVITOR_LICENSE_TOKEN", &t30)]);
    common::eventually("40-day row pruned at start", || !vault_audit_details(&v).contains(&"forty-days".into()));
    assert!(vault_audit_details(&v).contains(&"ten-days".into()), "within 30 days: kept");
    // The license now allows 7 days: the 10-day row goes at once, no restart.
    let r = install(&s, &mgmt, &active(&k, &[(Limit::MaxAuditRetentionDays, 7)]));
    assert_eq!(r.status, 200);
    common::eventually("10-day row pruned", || !vault_audit_details(&v).contains(&"ten-days".into()));
    assert_eq!(usage(&s, &mgmt)["limits"][4]["current"], 7);
}

#[test]
fn telemetry_payload_carries_the_license_state() {
    let v = Vault::new();
    let k = keys(v.tmp.path(), "vendor");
    let t = active(&k, &[]);
    let out = cli(&v, &k, &["telemetry", "show"], &[("CLAVITOR_LICENSE_TOKEN", &t)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["license_state"], "ACTIVE", "{p}");
    assert!(p["license_days_remaining"].as_i64().unwrap() >= 364);
    assert!(p.get("license_last_validated_age_s").is_some());
}

#[test]
fn the_node_binary_holds_no_signing_code_path() {
    let text = String::from_utf8_lossy(&std::fs::read(common::BIN).unwrap()).into_owned();
    // The minter's own texts (private-key loading, minting, --verify) are absent...
    for needle in [
        "clavitor-license",
        "not an Ed25519 PKCS#8 private key",
        "verification failed, token discarded",
        "--private-key",
        "--gen-keypair",
        "--grace-days",
    ] {
        assert!(!text.contains(needle), "{needle:?} is in the node binary");
    }
    // ...and the validator is there, so the check looks at the right binary.
    assert!(text.contains("License signature verification failed"));
    // No signing function is linked in (a debug build's debuginfo still names ed25519-dalek's
    // types, so look at the defined code symbols, not the strings).
    let nm = Command::new("nm").arg("-C").arg("--defined-only").arg(common::BIN).output().expect("nm (binutils)");
    assert!(nm.status.success());
    let symbols = String::from_utf8_lossy(&nm.stdout);
    let signing: Vec<&str> = symbols
        .lines()
        .filter(|l| l.contains("ed25519_dalek::signing") || l.contains("ed25519_dalek::hazmat::raw_sign"))
        .collect();
    assert!(signing.is_empty(), "signing code in the node binary: {signing:?}");
    assert!(symbols.contains("verify_strict"), "nm sees the validator's code");
}

/// The REST create paths a cap covers, for the table below.
#[derive(Debug, Clone, Copy)]
enum CreatePath {
    Agent,
    Passkey,
    Entry,
    Vault,
}

impl CreatePath {
    const ALL: [CreatePath; 4] = [CreatePath::Agent, CreatePath::Passkey, CreatePath::Entry, CreatePath::Vault];

    fn limit(self) -> Limit {
        match self {
            CreatePath::Agent => Limit::MaxAgentsPerVault,
            CreatePath::Passkey => Limit::MaxPasskeysPerVault,
            CreatePath::Entry => Limit::MaxEntriesPerVault,
            CreatePath::Vault => Limit::MaxVaults,
        }
    }

    /// The default tier's cap, as the issue states it (not read from the code under test).
    fn default_cap(self) -> u64 {
        match self {
            CreatePath::Agent => 5,
            CreatePath::Passkey => 2,
            CreatePath::Entry => 100,
            CreatePath::Vault => 1,
        }
    }

    /// One create through the API: the owner's passkey-approved write, or the management token's
    /// vault registration.
    fn create(self, s: &Server, owner: &mut Admin, vaults: &str, n: usize) -> common::Resp {
        match self {
            CreatePath::Agent => owner.write(s, "POST", "/api/agents", &json!({"name": format!("agent-{n}")})),
            CreatePath::Passkey => {
                let mut other = SoftPasskey::new(true);
                let r = post_json(s, "/api/passkeys/options", Some(&owner.token), &json!({}));
                assert_eq!(r.status, 200, "{}", r.body);
                let start = r.json();
                let ccr: CreationChallengeResponse = serde_json::from_value(start["options"].clone()).unwrap();
                let cred = other.do_registration(origin(), ccr).unwrap();
                let body = json!({"registration_id": start["registration_id"], "name": format!("key-{n}"), "credential": cred});
                owner.write(s, "POST", "/api/passkeys", &body)
            }
            CreatePath::Entry => {
                owner.write(s, "POST", "/api/entries", &json!({"title": format!("e-{n}"), "fields": []}))
            }
            CreatePath::Vault => request(&s.url("/api/mgmt/vaults"), "POST", Some(vaults), None),
        }
    }
}

/// The reference's per-state 403 message (§4), written out here so the test checks the texts,
/// not the code that renders them. GRACE and EXPIRED are for the tokens made below (expired 2 and
/// 40 days ago, an hour of margin each way).
fn expected_cap_message(state: &str, limit: &str, current: u64, cap: u64) -> String {
    match state {
        "ABSENT" => {
            format!(
                "No license installed: default tier applies (cap = {cap} for {limit}). Install a license to raise this."
            )
        }
        "ACTIVE" => format!(
            "License cap reached: {limit} = {cap}. Current usage is {current}. Contact your vendor to raise the cap."
        ),
        "GRACE" => format!(
            "License expired 2 day(s) ago and is in its grace period (ends in 28 days). Cap unchanged at {cap}. Renew before grace ends."
        ),
        "EXPIRED" => format!(
            "License expired 40 days ago: system reverted to default tier (cap = {cap} for {limit}). Current usage is {current}. Renew the license to lift the cap."
        ),
        "INVALID" => format!(
            "License rejected (License signature verification failed): default tier applies (cap = {cap} for {limit}). Fix the license to raise this."
        ),
        other => panic!("no such state {other}"),
    }
}

/// Every REST create path a cap covers, in every state: the 403 body carries the reference's
/// fields and the state's message, each refusal leaves one `cap_exceeded` row naming limit,
/// current and cap, and EXPIRED and INVALID fall back to the default tier (cap below usage).
#[test]
fn every_rest_cap_in_every_state_refuses_with_the_states_message_and_an_audit_row() {
    let v = Vault::uninitialised_owner();
    let k = keys(v.tmp.path(), "vendor");
    // 100 entries (the default tier's cap) before the server starts: 100 API writes would be slow.
    let lines: String = (0..100).map(|n| format!("{}\n", json!({"title": format!("seed{n}"), "fields": []}))).collect();
    let out = v.cli_stdin(&["entry", "import", "--file", "-"], Some(&lines));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = start(&v, &k, &[]);
    let license = mgmt_token(&v, "license");
    let vaults = mgmt_token(&v, "vaults");
    let mut owner = Admin::owner(&s, &v.setup_code); // agent 1, passkey 1, the node's vault 1
    let mut n = 0;
    // To the default tier's caps: 4 more agents, 1 more passkey (the entries and the vault are there).
    for (p, count) in [(CreatePath::Agent, 4), (CreatePath::Passkey, 1)] {
        for _ in 0..count {
            n += 1;
            let r = p.create(&s, &mut owner, &vaults, n);
            assert_eq!(r.status, 201, "{p:?}: {}", r.body);
        }
    }

    // The license's caps are one above the default tier's: ACTIVE allows one more of each, and
    // from then on usage stands one above the default cap that EXPIRED and INVALID fall back to.
    let caps: Vec<(Limit, u64)> = CreatePath::ALL.iter().map(|p| (p.limit(), p.default_cap() + 1)).collect();
    let active_t = token(&k, "acme", now() + 365 * DAY, 30, &caps);
    let grace_t = token(&k, "acme", now() - 2 * DAY - 3600, 30, &caps);
    let expired_t = token(&k, "acme", now() - 40 * DAY - 3600, 5, &caps);
    let forged = active(&keys(v.tmp.path(), "other"), &caps);
    // (state, the token POSTed first, its install status)
    let table: [(&str, Option<&str>, u16); 5] = [
        ("ABSENT", None, 0),
        ("ACTIVE", Some(&active_t), 200),
        ("GRACE", Some(&grace_t), 200),
        ("EXPIRED", Some(&expired_t), 200),
        ("INVALID", Some(&forged), 400),
    ];
    let mut above = 0;
    let mut expected_rows = Vec::new();
    for (state, tok, status) in table {
        if let Some(tok) = tok {
            let r = install(&s, &license, tok);
            assert_eq!(r.status, status, "{state}: {}", r.body);
        }
        assert_eq!(usage(&s, &license)["state"], state);
        if state == "ACTIVE" {
            // The license lifts every cap by one: one more of each is created.
            for p in CreatePath::ALL {
                n += 1;
                let r = p.create(&s, &mut owner, &vaults, n);
                assert_eq!(r.status, 201, "ACTIVE {p:?}: {}", r.body);
            }
            above = 1;
        }
        let license_caps = matches!(state, "ACTIVE" | "GRACE");
        for p in CreatePath::ALL {
            let current = p.default_cap() + above;
            let cap = p.default_cap() + u64::from(license_caps);
            let key = p.limit().key();
            n += 1;
            let r = p.create(&s, &mut owner, &vaults, n);
            assert_eq!(r.status, 403, "{state} {p:?}: {}", r.body);
            let expected = json!({
                "error": "license cap reached",
                "limit": key,
                "current": current,
                "cap": cap,
                "state": state,
                "message": expected_cap_message(state, key, current, cap),
            });
            assert_eq!(r.json(), expected, "{state} {p:?}");
            // Who asked: the owner (agent 1), or for a vault the management token.
            let by = if matches!(p, CreatePath::Vault) { mgmt_label(&v, "vaults") } else { "agent:1".to_owned() };
            expected_rows.push(format!("{key} current={current} cap={cap} state={state} requested_by={by}"));
        }
    }

    let rows: Vec<Value> = v.audit_rows(true).into_iter().filter(|r| r["action"] == "cap_exceeded").collect();
    let mut rows: Vec<(i64, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["outcome"].as_str().unwrap().to_owned(),
                r["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    rows.sort();
    assert!(rows.iter().all(|(_, outcome, _)| outcome == "failed"), "{rows:?}");
    let details: Vec<String> = rows.into_iter().map(|(_, _, d)| d).collect();
    assert_eq!(details, expected_rows, "one cap_exceeded row per refusal, naming limit, current, cap and requester");
}

/// The default tier's caps as the usage report lists them.
fn assert_default_tier(u: &Value) {
    for (key, cap) in [
        ("max_vaults", 1),
        ("max_agents_per_vault", 5),
        ("max_passkeys_per_vault", 2),
        ("max_entries_per_vault", 100),
        ("max_audit_retention_days", 7),
    ] {
        assert_eq!(cap_of(u, key), (cap, "default".into()), "{key}: {u}");
    }
}

#[test]
fn a_token_without_a_public_key_is_invalid_and_the_default_tier_applies() {
    let v = Vault::new();
    let k = keys(v.tmp.path(), "vendor");
    let mgmt = mgmt_token(&v, "license");
    let vaults = mgmt_token(&v, "vaults");
    let big: Vec<(Limit, u64)> = Limit::ALL.iter().map(|l| (*l, 50)).collect();
    let good = active(&k, &big);
    let no_key = ["--tenant-id", "acme"];
    const MESSAGE: &str = "License rejected: no license public key is configured but a license token is present. \
                           Default tier applies. Fix the license to recover.";

    // A well-signed token in the environment, no --license-public-key.
    let s = Server::start_env(&v.dir(), &no_key, &[("CLAVITOR_LICENSE_TOKEN", &good)]);
    let u = usage(&s, &mgmt);
    assert_eq!(u["state"], "INVALID", "{u}");
    assert_eq!(u["message"], MESSAGE);
    assert!(u["licenseId"].is_null() && u["expiresAt"].is_null(), "nothing of the unverified token is shown: {u}");
    assert_default_tier(&u);
    assert!(s.stderr().contains("OPERATOR ALERT [license]"), "{}", s.stderr());
    // The default tier is enforced, not just reported: the node's one vault is the cap.
    let r = request(&s.url("/api/mgmt/vaults"), "POST", Some(&vaults), None);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!((r.json()["state"].clone(), r.json()["cap"].clone()), (json!("INVALID"), json!(1)));
    // A runtime install cannot be verified either.
    let r = install(&s, &mgmt, &good);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["message"].as_str().unwrap().contains("no license public key"), "{}", r.body);
    assert_eq!(usage(&s, &mgmt)["state"], "INVALID");
    drop(s);
    let rejected: Vec<String> = v
        .audit_rows(true)
        .iter()
        .filter(|r| r["action"] == "reject_license")
        .map(|r| r["detail"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(rejected.len(), 2, "boot and POST each audited: {rejected:?}");
    assert!(rejected.iter().all(|d| d.contains("no license public key")), "{rejected:?}");

    // `clavitor license show` says the same, for a token in the environment...
    let show = |env: &[(&str, &str)]| -> Value {
        let mut args = no_key.to_vec();
        args.extend(["license", "show"]);
        let out = v.cli_env(&args, env);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let shown = show(&[("CLAVITOR_LICENSE_TOKEN", &good)]);
    assert_eq!((shown["state"].as_str(), shown["message"].as_str()), (Some("INVALID"), Some(MESSAGE)));
    assert_default_tier(&shown);
    // ...and for one stored in node.db by an install that had the key.
    let file = v.tmp.path().join("lic");
    std::fs::write(&file, &good).unwrap();
    let out = cli(&v, &k, &["license", "install", file.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = show(&[]);
    assert_eq!(shown["state"], "INVALID", "{shown}");
    assert_default_tier(&shown);
    // The same node.db with the key configured: ACTIVE with the license's caps.
    let out = cli(&v, &k, &["license", "show"], &[]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((shown["state"].as_str(), cap_of(&shown, "max_vaults")), (Some("ACTIVE"), (50, "license".into())));
}

#[test]
fn a_valid_install_brings_an_invalid_node_back_to_active() {
    let v = Vault::new();
    let k = keys(v.tmp.path(), "vendor");
    let mgmt = mgmt_token(&v, "license");
    let vaults = mgmt_token(&v, "vaults");
    let mut s = start(&v, &k, &[]);
    assert_eq!(install(&s, &mgmt, &active(&k, &[(Limit::MaxAgentsPerVault, 7)])).status, 200);
    // A bad runtime install: another vendor's signature.
    let forged = active(&keys(v.tmp.path(), "other"), &[(Limit::MaxVaults, 9)]);
    assert_eq!(install(&s, &mgmt, &forged).status, 400);
    let u = usage(&s, &mgmt);
    assert_eq!(u["state"], "INVALID");
    assert_default_tier(&u);
    let r = request(&s.url("/api/mgmt/vaults"), "POST", Some(&vaults), None);
    assert_eq!((r.status, r.json()["state"].clone()), (403, json!("INVALID")), "{}", r.body);

    // A valid license recovers the node at once, with its caps.
    let good = active(&k, &[(Limit::MaxVaults, 2), (Limit::MaxAgentsPerVault, 8)]);
    let r = install(&s, &mgmt, &good);
    assert_eq!((r.status, r.json()["state"].clone()), (200, json!("ACTIVE")), "{}", r.body);
    let u = usage(&s, &mgmt);
    assert_eq!(u["state"], "ACTIVE");
    assert!(u["message"].as_str().unwrap().starts_with("License active."), "{u}");
    assert_eq!(cap_of(&u, "max_vaults"), (2, "license".into()));
    assert_eq!(cap_of(&u, "max_agents_per_vault"), (8, "license".into()));
    assert_eq!(cap_of(&u, "max_entries_per_vault"), (100, "default".into()), "a key the license omits");
    let r = request(&s.url("/api/mgmt/vaults"), "POST", Some(&vaults), None);
    assert_eq!(r.status, 201, "the license's max_vaults applies again: {}", r.body);
    let r = request(&s.url("/api/mgmt/vaults"), "POST", Some(&vaults), None);
    assert_eq!((r.status, r.json()["state"].clone(), r.json()["cap"].clone()), (403, json!("ACTIVE"), json!(2)));
    s.terminate();
    // And it is the stored one: a restart stays ACTIVE.
    let mut s = start(&v, &k, &[]);
    let restored = usage(&s, &mgmt);
    assert_eq!((restored["state"].as_str(), restored["licenseId"].clone()), (Some("ACTIVE"), u["licenseId"].clone()));
    s.terminate();
}
