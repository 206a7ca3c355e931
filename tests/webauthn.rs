//! WebAuthn-gated administration against the real binary, with a software authenticator
//! (webauthn-authenticator-rs' soft passkey) producing genuinely signed registrations and
//! assertions: owner setup, every admin write route, and every way a gated write is refused
//! (403, an audit row, nothing changed).

mod common;

use common::{Server, Vault, request, request_with};
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

const ORIGIN: &str = "http://localhost:8080";

fn origin() -> Url {
    Url::parse(ORIGIN).unwrap()
}

fn sha256_hex(b: &[u8]) -> String {
    clavitor::crypto::sha256_hex(b)
}

/// A vault whose owner was set up through the setup link with a soft passkey.
struct Owned {
    v: Vault,
    s: Server,
    token: String,
    key: SoftPasskey,
}

fn post_json(s: &Server, path: &str, token: Option<&str>, body: &Value) -> common::Resp {
    request(&s.url(path), "POST", token, Some(body.to_string().as_bytes()))
}

/// Runs the setup ceremony with `key`; returns the response of `/api/setup/finish`.
fn setup_with(s: &Server, code: &str, key: &mut SoftPasskey) -> common::Resp {
    let r = post_json(s, "/api/setup/start", None, &json!({"code": code}));
    assert_eq!(r.status, 200, "setup start: {}", r.body);
    let start = r.json();
    let ccr: CreationChallengeResponse = serde_json::from_value(start["options"].clone()).unwrap();
    let cred = key.do_registration(origin(), ccr).expect("soft passkey registers");
    post_json(
        s,
        "/api/setup/finish",
        None,
        &json!({"code": code, "registration_id": start["registration_id"], "credential": cred}),
    )
}

fn owned_with(extra: &[&str]) -> Owned {
    let v = Vault::uninitialised_owner();
    // Wrong methods on known routes are tarpitted in the commercial edition: hold them 1 s here.
    let s = Server::start_env(&v.dir(), extra, &[("CLAVITOR_TARPIT_HOLD_SECS", "1")]);
    let mut key = SoftPasskey::new(true);
    let r = setup_with(&s, &v.setup_code, &mut key);
    assert_eq!(r.status, 200, "setup finish: {}", r.body);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    Owned { v, s, token, key }
}

fn owned() -> Owned {
    owned_with(&[])
}

/// Asks for a challenge bound to (method, path, body); returns (challenge id, options).
fn challenge(s: &Server, token: &str, method: &str, path: &str, body: &[u8]) -> (String, RequestChallengeResponse) {
    let r = post_json(
        s,
        "/api/webauthn/challenge",
        Some(token),
        &json!({"method": method, "path": path, "body_sha256": sha256_hex(body)}),
    );
    assert_eq!(r.status, 200, "challenge: {}", r.body);
    let v = r.json();
    (v["challenge_id"].as_str().unwrap().to_owned(), serde_json::from_value(v["options"].clone()).unwrap())
}

fn sign(key: &mut SoftPasskey, rcr: RequestChallengeResponse) -> String {
    serde_json::to_string(&key.do_authentication(origin(), rcr).expect("soft passkey signs")).unwrap()
}

fn send(
    s: &Server,
    token: &str,
    method: &str,
    path: &str,
    body: &[u8],
    ch: Option<&str>,
    assertion: Option<&str>,
) -> common::Resp {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(c) = ch {
        headers.push(("X-WebAuthn-Challenge", c));
    }
    if let Some(a) = assertion {
        headers.push(("X-WebAuthn-Assertion", a));
    }
    request_with(&s.url(path), method, Some(token), &headers, Some(body))
}

impl Owned {
    /// A complete gated write: challenge, assertion, request.
    fn write(&mut self, method: &str, path: &str, body: &Value) -> common::Resp {
        let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
        let (id, rcr) = challenge(&self.s, &self.token, method, path, &body);
        let a = sign(&mut self.key, rcr);
        send(&self.s, &self.token, method, path, &body, Some(&id), Some(&a))
    }

    /// Everything a refused write must leave untouched.
    fn snapshot(&self) -> (Value, Value, Vec<(String, i64)>) {
        let conn = rusqlite::Connection::open(self.v.vault_file()).unwrap();
        let mut st = conn.prepare("SELECT id, sign_count FROM webauthn_credentials ORDER BY id").unwrap();
        let creds = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
        (
            self.v.cli_json(&["entry", "list", "--json"], None),
            self.v.cli_json(&["agent", "list", "--json"], None),
            creds,
        )
    }

    fn last_audit(&self) -> Value {
        self.v.audit_rows(false).first().cloned().unwrap()
    }
}

/// A refused gated write: 403 naming `reason`, an audit row with the same reason, nothing changed.
fn assert_refused(
    o: &Owned,
    what: &str,
    r: &common::Resp,
    before: &(Value, Value, Vec<(String, i64)>),
    audits: usize,
    reason: &str,
) {
    assert_eq!(r.status, 403, "{what}: {}", r.body);
    let v = r.json();
    assert_eq!(v["error"], "forbidden", "{what}");
    assert_eq!(v["reason"], reason, "{what}: {}", r.body);
    let rows = o.v.audit_rows(false);
    assert!(rows.len() > audits, "{what}: no audit row");
    let last = &rows[0];
    assert_eq!(last["outcome"], "denied", "{what}: {last}");
    assert_eq!(last["detail"], format!("webauthn:{reason}"), "{what}: {last}");
    let after = o.snapshot();
    assert_eq!(&after.0, &before.0, "{what}: entries changed");
    assert_eq!(&after.1, &before.1, "{what}: agents changed");
    // A refused assertion never advances a counter.
    assert_eq!(&after.2, &before.2, "{what}: passkeys changed");
}

fn open_challenges(o: &Owned) -> i64 {
    let conn = rusqlite::Connection::open(o.v.vault_file()).unwrap();
    conn.query_row("SELECT count(*) FROM webauthn_challenges", [], |r| r.get(0)).unwrap()
}

#[test]
fn setup_link_enrolls_the_owner_once() {
    let v = Vault::uninitialised_owner();
    let s = v.serve();
    // No agent yet: nothing authenticates.
    assert_eq!(s.get("/api/entries", None).status, 401);
    // Garbage and unknown codes are refused and audited.
    // No vault issued either code, so neither reaches a vault's checks: both are unknown.
    for (code, reason) in [("nothex", "unknown_code"), ("0123456789abcdef0123456789abcdef", "unknown_code")] {
        let r = post_json(&s, "/api/setup/start", None, &json!({"code": code}));
        assert_eq!(r.status, 403, "{}", r.body);
        assert_eq!(r.json()["reason"], reason, "{}", r.body);
    }
    assert!(v.audit_rows(true).iter().any(|r| r["action"] == "setup" && r["outcome"] == "denied"));

    let mut key = SoftPasskey::new(true);
    let r = setup_with(&s, &v.setup_code, &mut key);
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["agent"]["id"], 1);
    assert_eq!(body["agent"]["name"], "Owner");
    assert_eq!(body["agent"]["role"], "owner");
    let token = body["token"].as_str().unwrap();
    assert_eq!(s.get("/api/agents", Some(token)).status, 200, "the owner token works at once");

    // The code is single use: a second setup is refused, audited, and changes nothing.
    let r = post_json(&s, "/api/setup/start", None, &json!({"code": v.setup_code}));
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["reason"], "code_already_used", "{}", r.body);
    let mut other = SoftPasskey::new(true);
    let rows = v.audit_rows(false);
    assert!(rows.iter().any(|r| r["action"] == "setup" && r["detail"] == "code_already_used"));
    assert!(rows.iter().any(|r| r["action"] == "setup" && r["outcome"] == "ok" && r["detail"] == "passkey_enrolled"));
    assert!(rows.iter().any(|r| r["action"] == "setup" && r["outcome"] == "ok" && r["detail"] == "agent 1"));
    assert_eq!(v.cli_json(&["agent", "list", "--json"], None).as_array().unwrap().len(), 1);
    // `init` now has nothing to do and prints no link.
    let out = v.cli(&["init"]);
    assert!(out.status.success());
    assert!(common::setup_code_in(&String::from_utf8_lossy(&out.stdout)).is_none());
    drop(s);

    // An expired code is refused too.
    let v2 = Vault::uninitialised_owner();
    let conn = rusqlite::Connection::open(v2.vault_file()).unwrap();
    conn.execute("UPDATE setup_codes SET expires_at = 1", []).unwrap();
    drop(conn);
    let s2 = v2.serve();
    let r = post_json(&s2, "/api/setup/start", None, &json!({"code": v2.setup_code}));
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["reason"], "code_expired", "{}", r.body);
    assert!(v2.audit_rows(false).iter().any(|r| r["action"] == "setup" && r["detail"] == "code_expired"));
    // A code finished with a bogus credential or registration id is refused and the vault stays
    // ownerless. (The code is made valid again first: refused as expired, this said nothing
    // about the credential.)
    let conn = rusqlite::Connection::open(v2.vault_file()).unwrap();
    conn.execute("UPDATE setup_codes SET expires_at = 9000000000000", []).unwrap();
    drop(conn);
    let r = post_json(&s2, "/api/setup/start", None, &json!({"code": v2.setup_code}));
    assert_eq!(r.status, 200, "{}", r.body);
    let registration = r.json()["registration_id"].clone();
    for (reg, reason) in [(json!("00"), "unknown_or_expired_registration"), (registration, "credential_rejected")] {
        let r = post_json(
            &s2,
            "/api/setup/finish",
            None,
            &json!({"code": v2.setup_code, "registration_id": reg, "credential": {}}),
        );
        assert_eq!(r.status, 403);
        assert_eq!(r.json()["reason"], reason, "{}", r.body);
    }
    assert_eq!(v2.cli_json(&["agent", "list", "--json"], None).as_array().unwrap().len(), 0);
    let _ = &mut other;
}

#[test]
fn every_admin_route_works_with_a_genuine_assertion() {
    let mut o = owned();
    // Entries: create, update, scopes, delete.
    let r = o.write(
        "POST",
        "/api/entries",
        &json!({"title": "GitHub", "scopes": ["0002"],
        "fields": [{"name": "password", "kind": "secret", "value": "hunter2"}]}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let entry = r.json()["id"].as_i64().unwrap();
    let r = o.write(
        "PUT",
        &format!("/api/entries/{entry}"),
        &json!({"title": "GitHub 2", "scopes": ["0002"],
        "fields": [{"name": "password", "kind": "secret", "value": "hunter3"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["version"], 2);
    let r = o.write("PUT", &format!("/api/entries/{entry}/scopes"), &json!({"scopes": ["0002", "0003"]}));
    assert_eq!(r.status, 200, "{}", r.body);
    let got = o.s.get(&format!("/api/entries/{entry}"), Some(&o.token)).json();
    assert_eq!(got["title"], "GitHub 2");
    assert_eq!(got["scopes"], json!(["0002", "0003"]));
    assert_eq!(got["fields"][0]["value"], "hunter3");

    // Agents: create (token once), it reads what its scope allows; update, rotate, revoke.
    let r = o.write("POST", "/api/agents", &json!({"name": "ci-bot"}));
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    let agent = created["agent"]["id"].as_i64().unwrap();
    assert_eq!(agent, 2);
    let bot = created["token"].as_str().unwrap().to_owned();
    assert_eq!(o.s.get(&format!("/api/entries/{entry}"), Some(&bot)).json()["fields"][0]["value"], "hunter3");
    let r = o.write("PUT", &format!("/api/agents/{agent}"), &json!({"name": "ci-bot-2", "rotate_token": true}));
    assert_eq!(r.status, 200, "{}", r.body);
    let rotated = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(o.s.get("/api/entries", Some(&bot)).status, 401, "the old token stops at once");
    assert_eq!(o.s.get("/api/entries", Some(&rotated)).status, 200);
    let r = o.write("DELETE", &format!("/api/agents/{agent}"), &Value::Null);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(o.s.get("/api/entries", Some(&rotated)).status, 401);

    // Last-admin and self-demotion rules are 409 JSON.
    let r = o.write("PUT", "/api/agents/1", &json!({"admin": false}));
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.json()["error"], "conflict");
    let r = o.write("DELETE", "/api/agents/1", &Value::Null);
    assert_eq!(r.status, 409, "{}", r.body);

    // Passkeys: a second key is enrolled with the first one's approval, then the first removed.
    let mut second = SoftPasskey::new(true);
    let r = post_json(&o.s, "/api/passkeys/options", Some(&o.token), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let start = r.json();
    let ccr: CreationChallengeResponse = serde_json::from_value(start["options"].clone()).unwrap();
    let cred = second.do_registration(origin(), ccr).unwrap();
    let r = o.write(
        "POST",
        "/api/passkeys",
        &json!({"registration_id": start["registration_id"], "name": "backup", "credential": cred}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let list = o.s.get("/api/passkeys", Some(&o.token)).json();
    let ids: Vec<String> =
        list["passkeys"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 2);
    let first_id = ids.iter().find(|i| **i != r.json()["id"]).unwrap().clone();
    let r = o.write("DELETE", &format!("/api/passkeys/{first_id}"), &Value::Null);
    assert_eq!(r.status, 200, "{}", r.body);
    o.key = second;
    let r = o.write("DELETE", &format!("/api/entries/{entry}"), &Value::Null);
    assert_eq!(r.status, 200, "the second key approves writes: {}", r.body);
    assert_eq!(o.s.get(&format!("/api/entries/{entry}"), Some(&o.token)).status, 404);
    let last = o.s.get("/api/passkeys", Some(&o.token)).json()["passkeys"][0]["id"].as_str().unwrap().to_owned();
    let r = o.write("DELETE", &format!("/api/passkeys/{last}"), &Value::Null);
    assert_eq!(r.status, 409, "never the last passkey: {}", r.body);

    // The wrapped L2 keyring round-trips.
    let ring = json!({"version": 1, "wraps": [{"kind": "passphrase", "salt": "AAAA", "iterations": 600000, "iv": "AAAA", "wrapped": "AAAA"}]});
    let r = o.write("PUT", "/api/keyring", &ring);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(o.s.get("/api/keyring", Some(&o.token)).json()["keyring"], ring);

    let rows = o.v.audit_rows(false);
    for action in [
        "entry.create",
        "entry.update",
        "entry.delete",
        "agent.create",
        "agent.update",
        "agent.revoke",
        "passkey.add",
        "passkey.remove",
        "keyring.update",
    ] {
        assert!(rows.iter().any(|r| r["action"] == action && r["outcome"] == "ok"), "{action} audited");
    }
    assert_eq!(open_challenges(&o), 0, "every used challenge is gone");
}

#[test]
fn refused_writes_are_403_audited_and_change_nothing() {
    let mut o = owned();
    let r = o.write("POST", "/api/entries", &json!({"title": "Keep", "fields": []}));
    assert_eq!(r.status, 201);
    let body = json!({"name": "intruder", "admin": true}).to_string().into_bytes();
    let path = "/api/agents";
    let check =
        |o: &Owned, what: &str, r: common::Resp, before: &(Value, Value, Vec<(String, i64)>), n: usize, why: &str| {
            assert_refused(o, what, &r, before, n, why)
        };

    // Missing challenge; missing assertion; malformed and unknown challenge ids.
    let before = o.snapshot();
    let n = o.v.audit_rows(false).len();
    let (id, rcr) = challenge(&o.s, &o.token, "POST", path, &body);
    let a = sign(&mut o.key, rcr);
    check(
        &o,
        "missing challenge",
        send(&o.s, &o.token, "POST", path, &body, None, Some(&a)),
        &before,
        n,
        "missing_challenge",
    );
    let n = o.v.audit_rows(false).len();
    check(
        &o,
        "malformed challenge",
        send(&o.s, &o.token, "POST", path, &body, Some("zz"), Some(&a)),
        &before,
        n,
        "malformed_challenge",
    );
    let n = o.v.audit_rows(false).len();
    check(
        &o,
        "unknown challenge",
        send(&o.s, &o.token, "POST", path, &body, Some(&"0".repeat(32)), Some(&a)),
        &before,
        n,
        "unknown_or_used_challenge",
    );
    let n = o.v.audit_rows(false).len();
    check(
        &o,
        "missing assertion",
        send(&o.s, &o.token, "POST", path, &body, Some(&id), None),
        &before,
        n,
        "missing_assertion",
    );
    // That challenge was consumed by the failed attempt: the right assertion cannot use it now.
    let n = o.v.audit_rows(false).len();
    check(
        &o,
        "consumed on failure",
        send(&o.s, &o.token, "POST", path, &body, Some(&id), Some(&a)),
        &before,
        n,
        "unknown_or_used_challenge",
    );

    // Reused: a successful write's exact request, replayed.
    let ok_body = json!({"name": "once"}).to_string().into_bytes();
    let (id, rcr) = challenge(&o.s, &o.token, "POST", path, &ok_body);
    let a = sign(&mut o.key, rcr);
    assert_eq!(send(&o.s, &o.token, "POST", path, &ok_body, Some(&id), Some(&a)).status, 201);
    let before = o.snapshot();
    let n = o.v.audit_rows(false).len();
    check(
        &o,
        "replayed",
        send(&o.s, &o.token, "POST", path, &ok_body, Some(&id), Some(&a)),
        &before,
        n,
        "unknown_or_used_challenge",
    );

    // Bound to another path, method or body.
    for (what, m, p, b, sent_m, sent_p, sent_b) in [
        ("other path", "POST", "/api/entries", body.clone(), "POST", path, body.clone()),
        ("other method", "PUT", "/api/entries/1", Vec::new(), "DELETE", "/api/entries/1", Vec::new()),
        ("other body", "POST", path, json!({"name": "harmless"}).to_string().into_bytes(), "POST", path, body.clone()),
    ] {
        let (id, rcr) = challenge(&o.s, &o.token, m, p, &b);
        let a = sign(&mut o.key, rcr);
        let n = o.v.audit_rows(false).len();
        check(
            &o,
            what,
            send(&o.s, &o.token, sent_m, sent_p, &sent_b, Some(&id), Some(&a)),
            &before,
            n,
            "challenge_for_another_operation",
        );
        assert!(o.last_audit()["detail"].as_str().unwrap().contains("another_operation"), "{what}");
    }

    // An assertion from a key this vault never registered (registered with another vault).
    let stranger_vault = owned();
    let mut stranger = stranger_vault.key;
    let stranger_id = stranger_vault.s.get("/api/passkeys", Some(&stranger_vault.token)).json()["passkeys"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (id, mut rcr) = challenge(&o.s, &o.token, "POST", path, &body);
    let mut opts = serde_json::to_value(&rcr).unwrap();
    opts["publicKey"]["allowCredentials"] = json!([{"type": "public-key", "id": stranger_id}]);
    rcr = serde_json::from_value(opts).unwrap();
    let a = sign(&mut stranger, rcr);
    let n = o.v.audit_rows(false).len();
    check(
        &o,
        "unregistered key",
        send(&o.s, &o.token, "POST", path, &body, Some(&id), Some(&a)),
        &before,
        n,
        "assertion_rejected",
    );

    // Out of order: two assertions signed in turn, the later one used first; the earlier one's
    // counter then no longer advances past the stored one (how a cloned authenticator shows).
    let early_body = json!({"name": "early"}).to_string().into_bytes();
    let late_body = json!({"name": "late"}).to_string().into_bytes();
    let (early_id, rcr) = challenge(&o.s, &o.token, "POST", path, &early_body);
    let early = sign(&mut o.key, rcr);
    let (late_id, rcr) = challenge(&o.s, &o.token, "POST", path, &late_body);
    let late = sign(&mut o.key, rcr);
    assert_eq!(send(&o.s, &o.token, "POST", path, &late_body, Some(&late_id), Some(&late)).status, 201);
    let before = o.snapshot();
    let n = o.v.audit_rows(false).len();
    let r = send(&o.s, &o.token, "POST", path, &early_body, Some(&early_id), Some(&early));
    check(&o, "counter not advancing", r, &before, n, "assertion_rejected");

    // A stored counter changed in the file (to make a cloned authenticator's counter pass, or
    // to lock the owner out): the passkey row's MAC no longer verifies, so the key approves
    // nothing until the row is as the server wrote it (clone detection itself is the
    // out-of-order case above).
    let conn = rusqlite::Connection::open(o.v.vault_file()).unwrap();
    let stored: i64 = conn.query_row("SELECT sign_count FROM webauthn_credentials", [], |r| r.get(0)).unwrap();
    conn.execute("UPDATE webauthn_credentials SET sign_count = 1000000", []).unwrap();
    let r = post_json(
        &o.s,
        "/api/webauthn/challenge",
        Some(&o.token),
        &json!({"method": "POST", "path": path, "body_sha256": sha256_hex(&body)}),
    );
    assert_eq!(r.status, 409, "a passkey row changed in the file is no passkey: {}", r.body);
    conn.execute("UPDATE webauthn_credentials SET sign_count = ?1", [stored]).unwrap();
    drop(conn);

    // A non-admin token: no challenge for it, and an admin's challenge and assertion do not help.
    let (_, reader) = o.v.add_agent("reader", &["--all-access"]);
    common::eventually("reader known", || o.s.get("/api/entries", Some(&reader)).status == 200);
    let r = post_json(
        &o.s,
        "/api/webauthn/challenge",
        Some(&reader),
        &json!({"method": "POST", "path": path, "body_sha256": sha256_hex(&body)}),
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["reason"], "not_admin");
    let before = o.snapshot();
    let (id, rcr) = challenge(&o.s, &o.token, "POST", path, &body);
    let a = sign(&mut o.key, rcr);
    let n = o.v.audit_rows(false).len();
    check(&o, "non-admin", send(&o.s, &reader, "POST", path, &body, Some(&id), Some(&a)), &before, n, "not_admin");
    let n = o.v.audit_rows(false).len();
    check(
        &o,
        "consumed by the non-admin attempt",
        send(&o.s, &o.token, "POST", path, &body, Some(&id), Some(&a)),
        &before,
        n,
        "unknown_or_used_challenge",
    );

    // Every gated route refuses a challenge bound to another body, and one that is missing.
    let (victim_id, _) = o.v.add_agent("victim", &[]);
    common::eventually("victim known", || o.s.get("/api/agents", Some(&o.token)).body.contains("\"victim\""));
    let passkey = o.s.get("/api/passkeys", Some(&o.token)).json()["passkeys"][0]["id"].as_str().unwrap().to_owned();
    let routes: Vec<(&str, String, Value)> = vec![
        ("POST", "/api/agents".into(), json!({"name": "x"})),
        ("PUT", format!("/api/agents/{victim_id}"), json!({"admin": true})),
        ("DELETE", format!("/api/agents/{victim_id}"), Value::Null),
        ("POST", "/api/entries".into(), json!({"title": "x"})),
        ("PUT", "/api/entries/1".into(), json!({"title": "changed"})),
        ("PUT", "/api/entries/1/scopes".into(), json!({"scopes": ["0004"]})),
        ("DELETE", "/api/entries/1".into(), Value::Null),
        ("POST", "/api/passkeys".into(), json!({"registration_id": "0".repeat(32), "credential": {}})),
        ("DELETE", format!("/api/passkeys/{passkey}"), Value::Null),
        ("PUT", "/api/keyring".into(), json!({"version": 1})),
    ];
    let before = o.snapshot();
    for (m, p, b) in &routes {
        let sent = if b.is_null() { Vec::new() } else { b.to_string().into_bytes() };
        let other = json!({"something": "else"}).to_string().into_bytes();
        let (id, rcr) = challenge(&o.s, &o.token, m, p, &other);
        let a = sign(&mut o.key, rcr);
        let n = o.v.audit_rows(false).len();
        check(
            &o,
            &format!("{m} {p} other body"),
            send(&o.s, &o.token, m, p, &sent, Some(&id), Some(&a)),
            &before,
            n,
            "challenge_for_another_operation",
        );
        let n = o.v.audit_rows(false).len();
        check(
            &o,
            &format!("{m} {p} no challenge"),
            send(&o.s, &o.token, m, p, &sent, None, None),
            &before,
            n,
            "missing_challenge",
        );
        // A fresh challenge for exactly this request: the one above is used up, and reusing it
        // would be refused as unknown before the token is even looked at.
        let (id, rcr) = challenge(&o.s, &o.token, m, p, &sent);
        let a = sign(&mut o.key, rcr);
        let n = o.v.audit_rows(false).len();
        check(
            &o,
            &format!("{m} {p} non-admin"),
            send(&o.s, &reader, m, p, &sent, Some(&id), Some(&a)),
            &before,
            n,
            "not_admin",
        );
    }
    // A non-admin cannot start a passkey registration either.
    for r in
        [post_json(&o.s, "/api/passkeys/options", Some(&reader), &json!({})), o.s.get("/api/keyring", Some(&reader))]
    {
        assert_eq!(r.status, 403);
        assert_eq!(r.json()["reason"], "not_admin", "{}", r.body);
    }

    assert!(!o.s.stderr().contains("panicked"));
}

#[test]
fn a_break_glass_owner_enrolls_its_first_passkey_with_a_fresh_link() {
    // The owner made on the command line (or by a build before passkeys) has no passkey, so
    // it can change nothing over the API until `init` prints a link that enrolls one.
    let v = Vault::new();
    let out = v.cli(&["init"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("already initialised and has an owner"), "{stdout}");
    let code = common::setup_code_in(&stdout).expect("a passkey enrollment link");
    let s = v.serve();
    let r = post_json(
        &s,
        "/api/webauthn/challenge",
        Some(&v.owner),
        &json!({"method": "POST", "path": "/api/agents", "body_sha256": sha256_hex(b"")}),
    );
    assert_eq!(r.status, 409, "no passkey yet: {}", r.body);
    let mut key = SoftPasskey::new(true);
    let r = setup_with(&s, &code, &mut key);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["token"], Value::Null, "no new owner, no token");
    assert_eq!(v.cli_json(&["agent", "list", "--json"], None).as_array().unwrap().len(), 1);
    let mut o = Owned { v, s, token: String::new(), key };
    o.token = o.v.owner.clone();
    let r = o.write("POST", "/api/agents", &json!({"name": "after"}));
    assert_eq!(r.status, 201, "the existing owner token plus the new passkey: {}", r.body);
    // The link is used up, and init has nothing more to print.
    let r = post_json(&o.s, "/api/setup/start", None, &json!({"code": code}));
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["reason"], "code_already_used", "{}", r.body);
    let out = o.v.cli(&["init"]);
    assert!(common::setup_code_in(&String::from_utf8_lossy(&out.stdout)).is_none());
}

#[test]
fn serve_on_an_empty_dir_prints_the_setup_link() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let s = Server::start(&dir, &["--origin", "http://localhost:9999"]);
    let printed = s.stdout.join("\n");
    let code = common::setup_code_in(&printed).unwrap_or_else(|| panic!("no setup link in {printed}"));
    assert!(printed.contains("http://localhost:9999/setup#code="), "{printed}");
    assert!(common::token_in(&printed).is_none(), "no token before the passkey: {printed}");
    assert!(!s.stderr().contains(&code), "the code never reaches the logs");
    let r = post_json(&s, "/api/setup/start", None, &json!({"code": code}));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn expired_challenges_are_refused_and_swept() {
    let mut o = owned_with(&["--challenge-ttl-secs", "1"]);
    let body = json!({"name": "late"}).to_string().into_bytes();
    let before = o.snapshot();
    let (id, rcr) = challenge(&o.s, &o.token, "POST", "/api/agents", &body);
    let a = sign(&mut o.key, rcr);
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let n = o.v.audit_rows(false).len();
    let r = send(&o.s, &o.token, "POST", "/api/agents", &body, Some(&id), Some(&a));
    assert_refused(&o, "expired", &r, &before, n, "expired_challenge");
    assert!(o.last_audit()["detail"].as_str().unwrap().contains("expired"));
    // Unused expired challenges are swept (when a new one is stored, and by the server's timer).
    for _ in 0..3 {
        challenge(&o.s, &o.token, "POST", "/api/agents", &body);
    }
    std::thread::sleep(std::time::Duration::from_millis(1300));
    challenge(&o.s, &o.token, "POST", "/api/agents", &body);
    assert_eq!(open_challenges(&o), 1, "only the fresh challenge remains");
    // A bad TTL is refused at start.
    let v = Vault::uninitialised_owner();
    let out = v.cli(&["serve", "--challenge-ttl-secs", "0"]);
    assert!(!out.status.success());
    let out = v.cli(&["serve", "--rp-id", "example.com", "--origin", "http://localhost:8080"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rp id"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn hostile_input_to_gated_routes_is_4xx_and_changes_nothing() {
    let mut o = owned();
    let r = o.write("POST", "/api/entries", &json!({"title": "Keep", "fields": []}));
    assert_eq!(r.status, 201);
    let before = o.snapshot();
    let body = json!({"name": "x"}).to_string().into_bytes();
    let routes: &[(&str, &str)] = &[
        ("POST", "/api/agents"),
        ("PUT", "/api/agents/1"),
        ("DELETE", "/api/agents/1"),
        ("POST", "/api/entries"),
        ("PUT", "/api/entries/1"),
        ("PUT", "/api/entries/1/scopes"),
        ("DELETE", "/api/entries/1"),
        ("POST", "/api/passkeys"),
        ("DELETE", "/api/passkeys/AAAA"),
        ("PUT", "/api/keyring"),
    ];
    let good = |o: &mut Owned, m: &str, p: &str, b: &[u8]| {
        let (id, rcr) = challenge(&o.s, &o.token, m, p, b);
        let a = sign(&mut o.key, rcr);
        (id, a)
    };
    for (m, p) in routes {
        // Malformed JSON bodies: 400 before anything is consumed.
        let r = send(&o.s, &o.token, m, p, b"{\"name\": [", Some(&"0".repeat(32)), Some("{}"));
        assert!((400..500).contains(&r.status), "{m} {p} bad JSON: {}", r.status);
        assert!(r.json()["error"].is_string());
        // Malformed assertion JSON, wrong base64, wrong types: 403, never 500.
        let (id, a) = good(&mut o, m, p, &body);
        let mut tampered: Value = serde_json::from_str(&a).unwrap();
        tampered["response"]["signature"] = json!("!!!not base64!!!");
        for bad in ["{not json", "null", "[]", "{\"id\":1}", &tampered.to_string(), &"A".repeat(20_000)] {
            let (id2, _) = challenge(&o.s, &o.token, m, p, &body);
            let r = send(&o.s, &o.token, m, p, &body, Some(&id2), Some(bad));
            assert!((400..500).contains(&r.status), "{m} {p} bad assertion {bad:.20}: {} {}", r.status, r.body);
            assert!(r.json()["error"].is_string());
            if r.status == 403 {
                assert_eq!(r.json()["reason"], "assertion_rejected", "{m} {p} bad assertion {bad:.20}: {}", r.body);
            }
        }
        let _ = (id, a);
        // A huge assertion header: refused by the HTTP layer or as 4xx.
        let huge = format!(
            "{m} {p} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nX-WebAuthn-Challenge: {}\r\nX-WebAuthn-Assertion: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            o.token,
            "0".repeat(32),
            "A".repeat(1 << 20)
        );
        let (status, _) = o.s.raw(huge.as_bytes());
        assert!(status == 0 || (400..500).contains(&status), "{m} {p} huge header: {status}");
        // Non-ASCII header bytes.
        let mut raw = format!("{m} {p} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\nX-WebAuthn-Challenge: ", o.token).into_bytes();
        raw.extend_from_slice(b"\xff\xfe\r\n\r\n");
        let (status, _) = o.s.raw(&raw);
        assert!(status == 0 || (400..500).contains(&status), "{m} {p} non-ASCII header: {status}");
    }
    // Bad challenge requests.
    for bad in [
        json!({"method": "GET", "path": "/api/agents", "body_sha256": sha256_hex(b"")}),
        json!({"method": "POST", "path": "/etc/passwd", "body_sha256": sha256_hex(b"")}),
        json!({"method": "POST", "path": "/api/agents", "body_sha256": "xyz"}),
        json!({"method": "POST", "path": format!("/api/{}", "a".repeat(5000)), "body_sha256": sha256_hex(b"")}),
        json!({"method": "POST"}),
        json!([1, 2]),
    ] {
        let r = post_json(&o.s, "/api/webauthn/challenge", Some(&o.token), &bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    for (path, bad) in [
        ("/api/setup/start", json!({"code": 5})),
        ("/api/setup/finish", json!({"code": "00", "registration_id": "zz", "credential": "x"})),
    ] {
        let r = post_json(&o.s, path, Some(&o.token), &bad);
        assert!((400..500).contains(&r.status), "{path}: {}", r.status);
    }
    for p in ["/api/passkeys/!!", "/api/agents/abc", "/api/entries/-1/scopes"] {
        let r = send(&o.s, &o.token, "DELETE", p, b"", None, None);
        assert!((400..500).contains(&r.status), "{p}: {}", r.status);
    }
    let after = o.snapshot();
    assert_eq!(after.0, before.0);
    assert_eq!(after.1, before.1);
    assert_eq!(after.2.len(), before.2.len());
    assert!(!o.s.stderr().contains("panicked"), "{}", o.s.stderr());
    assert_eq!(o.s.get("/healthz", None).status, 200);
}

#[test]
fn guessing_setup_codes_is_throttled() {
    let v = Vault::uninitialised_owner();
    let s = v.serve();
    let mut statuses = Vec::new();
    for i in 0..80 {
        let r = post_json(&s, "/api/setup/start", None, &json!({"code": format!("{i:032x}")}));
        statuses.push(r.status);
    }
    assert!(statuses.iter().all(|s| *s == 403 || *s == 429), "{statuses:?}");
    assert!(statuses.contains(&429), "a burst of guesses is cut off: {statuses:?}");
    let denied = v.audit_rows(true).iter().filter(|r| r["action"] == "setup").count();
    assert!(denied < 80, "throttled guesses add no audit rows ({denied})");
}

#[test]
fn user_verification_is_preferred_not_required() {
    // A security key without a PIN (no user verification, user presence only) enrolls and
    // approves writes; presence is still checked by the verifier on every assertion.
    let v = Vault::uninitialised_owner();
    let s = v.serve();
    let mut key = SoftPasskey::new(false);
    let r = setup_with(&s, &v.setup_code, &mut key);
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let mut o = Owned { v, s, token, key };
    let r = o.write("POST", "/api/agents", &json!({"name": "no-pin"}));
    assert_eq!(r.status, 201, "{}", r.body);
}
