//! Rows changed in the vault file without the master key grant nothing (issue 12 §4).
//!
//! Each test tampers with the real file through Debian's `sqlite3`, as anyone who can write the
//! file but does not hold the master key could, and bumps the change sequence so the running
//! server reloads. The forged row must grant nothing and raise an operator alert; both
//! editions log alerts (the commercial one also sends them to HQ), so the server's stderr shows
//! `vault_rows_forged`.

mod common;
#[path = "common/passkey.rs"]
mod passkey;

use std::process::Command;

use common::{Server, Vault, eventually};
use serde_json::{Value, json};

fn sqlite(file: &std::path::Path, sql: &str) -> String {
    // With a busy timeout, as any forger would: the running node takes the write lock briefly
    // every few milliseconds (audit rows moved from its spool).
    let out = Command::new("sqlite3")
        .args(["-cmd", ".timeout 5000"])
        .arg(file)
        .arg(sql)
        .output()
        .expect("sqlite3 (Debian package) is installed");
    assert!(out.status.success(), "sqlite3 {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// What a forger runs after a change so that a running server picks it up.
const BUMP: &str = "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'change_seq';";

/// Undoes the appended migrations that add columns, so cannot replay as the `IF NOT EXISTS`
/// ones after 6 do: replication (issue 14) and setup-code MACs. The first step of turning a file
/// back into what an older build wrote.
const UNDO_APPENDED: &str =
    "ALTER TABLE setup_codes DROP COLUMN mac; DROP TRIGGER auth_seq_agents_i; DROP TRIGGER auth_seq_agents_u;
     DROP TRIGGER auth_seq_agents_d; DROP TRIGGER auth_seq_passkeys_i; DROP TRIGGER auth_seq_passkeys_u;
     DROP TRIGGER auth_seq_passkeys_d; DROP TRIGGER auth_seq_keyring_i; DROP TRIGGER auth_seq_keyring_u;
     DROP TABLE replication_marks; DROP INDEX audit_source; ALTER TABLE audit DROP COLUMN source_pop;
     ALTER TABLE audit DROP COLUMN source_id; DELETE FROM meta WHERE key = 'auth_seq';";

fn login(title: &str, scopes: &[&str], password: &str) -> Value {
    json!({"title": title, "scopes": scopes,
           "fields": [{"name": "password", "kind": "secret", "value": password}]})
}

fn forged_alert(s: &Server) -> bool {
    s.stderr().contains("vault_rows_forged")
}

#[test]
fn a_copied_owner_row_with_a_new_token_is_refused_and_alerted() {
    let v = Vault::new();
    v.add_entry(&login("Owner only", &[], "p-owner"));
    // A well-formed token whose hash the forger will put on a copy of the owner's row: an agent
    // made and removed again, so the token itself is valid and only the row is forged.
    let (id, token) = v.add_agent("Throwaway", &[]);
    let file = v.vault_file();
    let hash = sqlite(&file, &format!("SELECT token_hash FROM agents WHERE id = {id}"));
    let s = v.serve();
    assert_eq!(common::titles(&s, &token), Vec::<String>::new(), "the real agent sees nothing owner-only");
    sqlite(
        &file,
        &format!(
            "DELETE FROM agents WHERE id = {id};
             INSERT INTO agents (token_hash, name, scopes, all_access, admin, created_at, mac)
                 SELECT '{hash}', 'Owner copy', scopes, all_access, admin, created_at, mac FROM agents WHERE id = 1;
             {BUMP}"
        ),
    );
    eventually("the forged row is noticed", || forged_alert(&s));
    assert_eq!(s.get("/api/entries", Some(&token)).status, 401, "a copied owner row does not authenticate");
    assert_eq!(common::titles(&s, &v.owner), vec!["Owner only"], "the real owner is untouched");
    assert!(s.stderr().contains("agent 3"), "the alert names the row: {}", s.stderr());
    // The CLI's view flags it too.
    let list = v.cli_json(&["agent", "list", "--json"], None);
    let forged: Vec<&Value> = list.as_array().unwrap().iter().filter(|a| a["authentic"] == false).collect();
    assert_eq!(forged.len(), 1, "{list}");
    assert_eq!(forged[0]["name"], "Owner copy");
}

#[test]
fn flipping_all_access_in_the_file_refuses_the_agent() {
    let v = Vault::new();
    let (id, token) = v.add_agent("Scoped", &[]);
    let own = format!("{id:04x}");
    v.add_entry(&login("Shared", &[&own], "p-shared"));
    v.add_entry(&login("Owner only", &[], "p-owner"));
    let s = v.serve();
    assert_eq!(common::titles(&s, &token), vec!["Shared"]);
    sqlite(&v.vault_file(), &format!("UPDATE agents SET all_access = 1 WHERE id = {id}; {BUMP}"));
    // Refused entirely (401), not silently reduced: the row as a whole is not the owner's.
    eventually("the flipped agent is refused", || s.get("/api/entries", Some(&token)).status == 401);
    assert!(forged_alert(&s), "{}", s.stderr());
    assert_eq!(common::titles(&s, &v.owner), vec!["Owner only", "Shared"]);
}

#[test]
fn changing_an_entrys_scopes_in_the_file_withholds_it() {
    let v = Vault::new();
    let (id, token) = v.add_agent("Scoped", &[]);
    let own = format!("{id:04x}");
    v.add_entry(&login("Shared", &[&own], "p-shared"));
    let secret = v.add_entry(&login("Owner only", &[], "p-owner"));
    let s = v.serve();
    assert_eq!(common::titles(&s, &token), vec!["Shared"]);
    sqlite(
        &v.vault_file(),
        &format!(
            "UPDATE entries SET scopes = '{own}',
                 change_seq = (SELECT CAST(value AS INTEGER) + 1 FROM meta WHERE key = 'change_seq')
             WHERE id = {secret}; {BUMP}"
        ),
    );
    eventually("the forged entry is noticed", || forged_alert(&s));
    assert_eq!(common::titles(&s, &token), vec!["Shared"], "the agent gains nothing");
    assert_eq!(s.get(&format!("/api/entries/{secret}"), Some(&token)).status, 404);
    assert_eq!(common::titles(&s, &v.owner), vec!["Shared"], "withheld from everyone until the owner saves it again");
    let list = v.cli_json(&["entry", "list", "--json"], None);
    let flagged: Vec<i64> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["authentic"] == false)
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(flagged, vec![secret]);
}

/// A file from before row MACs (schema 2, data key wrapped under the bare vault id) opens,
/// gets its MACs once, and works; a row forged after that is refused, and a restart does not
/// launder it.
#[test]
fn a_vault_from_before_row_macs_is_upgraded_once() {
    let v = Vault::new();
    let (id, token) = v.add_agent("Scoped", &[]);
    let own = format!("{id:04x}");
    v.add_entry(&login("Shared", &[&own], "p-shared"));
    v.add_entry(&login("Owner only", &[], "p-owner"));
    let file = v.vault_file();
    // Turn the file back into what a build at schema 3 wrote: no MAC columns, and the data key
    // wrapped under the bare vault id (the tests hold the master key, so they can re-wrap it).
    let vault_id = sqlite(&file, "SELECT value FROM meta WHERE key = 'vault_id'");
    let wrapped = hex::decode(sqlite(&file, "SELECT value FROM meta WHERE key = 'wrapped_key'")).unwrap();
    let master = clavitor::crypto::MasterKey::load(&v.dir().join("master.key")).unwrap();
    let key = master.unwrap_key(&wrapped, &format!("{vault_id}\0rows-mac-v1")).expect("a current vault's wrap");
    let old = hex::encode(master.wrap(&key, &vault_id).unwrap());
    sqlite(
        &file,
        &format!(
            "{UNDO_APPENDED} DROP INDEX agents_parent; ALTER TABLE agents DROP COLUMN expires_at;
             ALTER TABLE agents DROP COLUMN parent_id; ALTER TABLE agents DROP COLUMN reveal_to_model;
             ALTER TABLE agents DROP COLUMN proxy_only_listed; DROP TABLE proxy_requests;
             ALTER TABLE agents DROP COLUMN mac; ALTER TABLE entries DROP COLUMN mac;
             ALTER TABLE webauthn_credentials DROP COLUMN mac;
             UPDATE meta SET value = '{old}' WHERE key = 'wrapped_key'; PRAGMA user_version = 3;"
        ),
    );
    assert_eq!(sqlite(&file, "PRAGMA user_version"), "3");

    let mut s = v.serve();
    assert_eq!(common::titles(&s, &v.owner), vec!["Owner only", "Shared"]);
    assert_eq!(common::titles(&s, &token), vec!["Shared"]);
    assert!(!forged_alert(&s), "{}", s.stderr());
    assert_eq!(sqlite(&file, "SELECT count(*) FROM agents WHERE mac IS NULL"), "0");
    assert_eq!(sqlite(&file, "SELECT count(*) FROM entries WHERE mac IS NULL"), "0");
    assert_ne!(sqlite(&file, "SELECT value FROM meta WHERE key = 'wrapped_key'"), old, "re-wrapped");

    // After the upgrade, a row without a MAC grants nothing, also after a restart.
    sqlite(&file, &format!("UPDATE agents SET all_access = 1, mac = NULL WHERE id = {id}; {BUMP}"));
    eventually("the forged agent is refused", || s.get("/api/entries", Some(&token)).status == 401);
    s.terminate();
    drop(s);
    let s = v.serve();
    assert_eq!(s.get("/api/entries", Some(&token)).status, 401, "a restart does not MAC a forged row");
    assert!(forged_alert(&s));
    assert_eq!(common::titles(&s, &v.owner), vec!["Owner only", "Shared"]);
}

/// A setup code sets up the owner: one inserted into the file by someone who picked the code
/// (and so knows it) is refused with an operator alert, and the vault stays without an owner;
/// the code the vault issued still works.
#[test]
fn a_setup_code_inserted_in_the_file_sets_up_nothing() {
    let v = Vault::uninitialised_owner();
    let forged = "0123456789abcdef0123456789abcdef";
    let hash = clavitor::crypto::sha256_hex(forged.as_bytes());
    sqlite(
        &v.vault_file(),
        &format!("INSERT INTO setup_codes (code_hash, created_at, expires_at) VALUES ('{hash}', 0, 9000000000000);"),
    );
    let s = v.serve();
    let start = |code: &str| {
        common::request(&s.url("/api/setup/start"), "POST", None, Some(json!({"code": code}).to_string().as_bytes()))
    };
    let r = start(forged);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["reason"], "code_not_authentic", "{}", r.body);
    assert!(forged_alert(&s), "{}", s.stderr());
    assert!(v.audit_rows(false).iter().any(|r| r["action"] == "setup" && r["detail"] == "code_not_authentic"));
    assert_eq!(v.cli_json(&["agent", "list", "--json"], None).as_array().unwrap().len(), 0, "no owner was made");
    // A MAC copied from the real code's row does not fit another hash either.
    sqlite(
        &v.vault_file(),
        &format!(
            "UPDATE setup_codes SET mac = (SELECT mac FROM setup_codes WHERE code_hash <> '{hash}') \
             WHERE code_hash = '{hash}';"
        ),
    );
    assert_eq!(start(forged).json()["reason"], "code_not_authentic");
    let r = start(&v.setup_code);
    assert_eq!(r.status, 200, "the issued code still works: {}", r.body);
}

/// A forged admin row cannot authenticate, so it must not count as "another admin" either:
/// otherwise the last real admin could be revoked and the vault left without one.
#[test]
fn a_forged_admin_row_does_not_let_the_last_admin_go() {
    let v = Vault::new();
    let file = v.vault_file();
    sqlite(
        &file,
        "INSERT INTO agents (token_hash, name, scopes, all_access, admin, created_at, mac)
             SELECT 'ab' || substr(token_hash, 3), 'Forged admin', scopes, 1, 1, created_at, mac FROM agents WHERE id = 1;",
    );
    let out = v.cli(&["agent", "revoke", "1"]);
    assert!(!out.status.success(), "the last real admin was revoked");
    assert!(String::from_utf8_lossy(&out.stderr).contains("last admin"), "{}", String::from_utf8_lossy(&out.stderr));
    let s = v.serve();
    assert_eq!(s.get("/api/entries", Some(&v.owner)).status, 200, "the owner is still there");
}

#[test]
fn a_passkey_moved_to_another_agent_in_the_file_approves_nothing() {
    // Someone who can write the file and holds a scoped admin's token moves the owner's passkey
    // to that admin, hoping to approve the admin's writes with it.
    let v = Vault::uninitialised_owner();
    let s = v.serve();
    let mut owner = passkey::Admin::owner(&s, &v.setup_code);
    let r = owner.write(&s, "POST", "/api/agents", &json!({"name": "lead", "admin": true}));
    assert_eq!(r.status, 201, "{}", r.body);
    let (lead_id, lead_token) =
        (r.json()["agent"]["id"].as_i64().unwrap(), r.json()["token"].as_str().unwrap().to_owned());
    let file = v.vault_file();
    sqlite(&file, &format!("UPDATE webauthn_credentials SET agent_id = {lead_id}; {BUMP}"));
    let mut lead = passkey::Admin { token: lead_token, key: owner.key };
    let body = json!({"method": "POST", "path": "/api/agents", "body_sha256": clavitor::crypto::sha256_hex(b"")});
    let r = passkey::post_json(&s, "/api/webauthn/challenge", Some(&lead.token), &body);
    assert_eq!(r.status, 409, "the moved passkey is not the lead's: {}", r.body);
    assert!(forged_alert(&s), "alert: {}", s.stderr());
    // Put back by hand, the row still does not verify (its MAC named the owner), and a copy
    // under a new id fails too: only the master key's holder makes passkey rows.
    sqlite(&file, &format!("UPDATE webauthn_credentials SET agent_id = 1; {BUMP}"));
    let r = passkey::post_json(&s, "/api/webauthn/challenge", Some(&lead.token), &body);
    assert_eq!(r.status, 409, "{}", r.body);
    owner.key = lead.key;
    lead.key = webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true);
    let r = owner.write(&s, "POST", "/api/agents", &json!({"name": "after"}));
    assert_eq!(r.status, 201, "the untouched owner row verifies again: {}", r.body);
}

/// Migration 5 (expiry, parent, reveal_to_model) re-MACs nothing: a file from schema 4 opens
/// with every MAC still valid. After it, un-expiring a token, re-parenting it or turning
/// reveal_to_model on in the file withholds the agent as forged.
#[test]
fn the_columns_of_migration_5_are_under_the_agent_mac() {
    let v = Vault::new();
    let (id, token) = v.add_agent("Scoped", &["--scopes", "00aa"]);
    v.add_entry(&login("Team", &["00aa"], "p-team"));
    let file = v.vault_file();
    // This build's schema (migrations after 5 are appended; no number is assumed here).
    let latest = sqlite(&file, "PRAGMA user_version");
    // A file as schema 4 left it.
    sqlite(
        &file,
        &format!(
            "{UNDO_APPENDED} DROP INDEX agents_parent; ALTER TABLE agents DROP COLUMN expires_at;
             ALTER TABLE agents DROP COLUMN parent_id; ALTER TABLE agents DROP COLUMN reveal_to_model;
             ALTER TABLE agents DROP COLUMN proxy_only_listed; DROP TABLE proxy_requests;
             PRAGMA user_version = 4;"
        ),
    );
    let s = v.serve();
    // A vault is opened (and migrated) by its first request, not at start.
    assert_eq!(common::titles(&s, &token), vec!["Team"], "existing MACs stay valid");
    assert_eq!(sqlite(&file, "PRAGMA user_version"), latest);
    assert!(!forged_alert(&s), "{}", s.stderr());

    // A derived, expiring token, and each column changed behind the server's back.
    let r = common::request(
        &s.url("/api/tokens/derive"),
        "POST",
        Some(&token),
        Some(br#"{"name":"child","ttl_secs":3600}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let (child, child_token) = (r.json()["id"].as_i64().unwrap(), r.json()["token"].as_str().unwrap().to_owned());
    assert_eq!(common::titles(&s, &child_token), vec!["Team"]);
    sqlite(&file, &format!("UPDATE agents SET expires_at = NULL WHERE id = {child}; {BUMP}"));
    eventually("the un-expired token is refused", || s.get("/api/entries", Some(&child_token)).status == 401);
    assert!(forged_alert(&s), "{}", s.stderr());
    assert!(s.stderr().contains(&format!("agent {child}")), "{}", s.stderr());

    sqlite(&file, &format!("UPDATE agents SET reveal_to_model = 1 WHERE id = {id}; {BUMP}"));
    eventually("the agent with reveal turned on is refused", || s.get("/api/entries", Some(&token)).status == 401);
    sqlite(&file, &format!("UPDATE agents SET reveal_to_model = 0 WHERE id = {id}; {BUMP}"));
    eventually("back as it was, it is served again", || s.get("/api/entries", Some(&token)).status == 200);
    sqlite(&file, &format!("UPDATE agents SET parent_id = 1 WHERE id = {id}; {BUMP}"));
    eventually("a re-parented agent is refused", || s.get("/api/entries", Some(&token)).status == 401);
    assert_eq!(common::titles(&s, &v.owner), vec!["Team"], "the owner is untouched");
}

/// Migration 6 (`proxy_only_listed`, issue 18) re-MACs nothing: a file from schema 5 opens with
/// every MAC valid. After it, lifting the flag in the file withholds the agent as forged, so
/// the proxy restriction cannot be removed without the master key.
#[test]
fn proxy_only_listed_is_under_the_agent_mac() {
    let v = Vault::new();
    let (id, token) = v.add_agent("Strict", &["--scopes", "00aa", "--proxy-only-listed"]);
    let (_, plain) = v.add_agent("Plain", &["--scopes", "00aa"]);
    v.add_entry(&login("Team", &["00aa"], "p-team"));
    let file = v.vault_file();
    let latest = sqlite(&file, "PRAGMA user_version");
    let s = v.serve();
    assert_eq!(sqlite(&file, "PRAGMA user_version"), latest);
    assert_eq!(common::titles(&s, &token), vec!["Team"]);
    assert_eq!(common::titles(&s, &plain), vec!["Team"]);
    drop(s);
    // Back to schema 5, the column's values set aside: migration 6 adds it again at its default.
    sqlite(
        &file,
        &format!(
            "{UNDO_APPENDED} ALTER TABLE agents RENAME COLUMN proxy_only_listed TO kept;
             DROP TABLE proxy_requests; PRAGMA user_version = 5;"
        ),
    );
    let s = v.serve();
    // A vault is opened (and migrated) by its first request, not at start.
    assert_eq!(common::titles(&s, &plain), vec!["Team"], "a row at the default keeps its MAC across migration 6");
    assert_eq!(sqlite(&file, "PRAGMA user_version"), latest);
    assert_eq!(s.get("/api/entries", Some(&token)).status, 401, "the strict agent, its flag lost, is withheld");
    assert!(forged_alert(&s), "{}", s.stderr());
    // Put back as it was written, it is served again; lifted on the running server, refused.
    sqlite(&file, &format!("UPDATE agents SET proxy_only_listed = 1 WHERE id = {id}; {BUMP}"));
    eventually("the agent with its flag back is served", || s.get("/api/entries", Some(&token)).status == 200);
    assert_eq!(s.get("/api/whoami", Some(&token)).json()["proxy_only_listed"], true);
    sqlite(&file, &format!("UPDATE agents SET proxy_only_listed = 0 WHERE id = {id}; {BUMP}"));
    eventually("the agent with its flag lifted is refused", || s.get("/api/entries", Some(&token)).status == 401);
    assert_eq!(common::titles(&s, &plain), vec!["Team"], "other agents are untouched");
}
