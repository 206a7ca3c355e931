//! The browser extension's session token (issue 17 §3): `POST /api/sessions`, a WebAuthn-gated
//! write that creates a short-lived derived agent for the owner's extension. Against the real
//! server with a software passkey: issuance needs a valid assertion for exactly this request,
//! the token reads what the owner reads (audited) and nothing admin, it is listed and marked on
//! the agents page, its life is 12 h by default (flag and env change it), a revoke ends it at
//! once and its expiry is honoured.

mod common;
#[path = "common/passkey.rs"]
mod passkey;

use std::time::{Duration, Instant};

use common::{Resp, Server, Vault};
use passkey::{Admin, challenge, post_json, send};
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn login(title: &str) -> Value {
    json!({"title": title, "url": "https://example.com/login",
           "fields": [{"name": "username", "kind": "text", "value": "me"},
                      {"name": "password", "kind": "secret", "value": format!("p-{title}")}]})
}

fn agents(s: &Server, owner: &str) -> Vec<Value> {
    let r = s.get("/api/agents", Some(owner));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["agents"].as_array().unwrap().clone()
}

fn reason(r: &Resp) -> String {
    r.json()["reason"].as_str().unwrap_or_default().to_owned()
}

/// Signs the extension in; returns (agent id, token, body).
fn session(owner: &mut Admin, s: &Server, body: &Value) -> (i64, String, Value) {
    let r = owner.write(s, "POST", "/api/sessions", body);
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    (v["id"].as_i64().unwrap(), v["token"].as_str().unwrap().to_owned(), v)
}

#[test]
fn a_session_needs_the_passkey_for_exactly_this_request() {
    let v = Vault::uninitialised_owner();
    let s = v.serve();
    let mut owner = Admin::owner(&s, &v.setup_code);
    let before = agents(&s, &owner.token).len();
    let body = br#"{"label":"Chromium"}"#;

    // No challenge, no assertion.
    let r = request_plain(&s, &owner.token, body);
    assert_eq!((r.status, reason(&r)), (403, "missing_challenge".to_owned()), "{}", r.body);
    // A challenge but a garbage assertion.
    let (ch, _) = challenge(&s, &owner.token, "POST", "/api/sessions", body);
    let r = send(&s, &owner.token, "POST", "/api/sessions", body, &ch, "{\"id\":\"x\"}");
    assert_eq!((r.status, reason(&r)), (403, "assertion_rejected".to_owned()), "{}", r.body);
    // A valid assertion over a challenge bound to another body.
    let (ch, rcr) = challenge(&s, &owner.token, "POST", "/api/sessions", br#"{"label":"other"}"#);
    let assertion = serde_json::to_string(&owner.key.do_authentication(passkey::origin(), rcr).unwrap()).unwrap();
    let r = send(&s, &owner.token, "POST", "/api/sessions", body, &ch, &assertion);
    assert_eq!((r.status, reason(&r)), (403, "challenge_for_another_operation".to_owned()), "{}", r.body);
    assert_eq!(agents(&s, &owner.token).len(), before, "no refusal created an agent");

    // The real thing, then the same challenge and assertion again: the challenge is spent.
    let (ch, rcr) = challenge(&s, &owner.token, "POST", "/api/sessions", body);
    let assertion = serde_json::to_string(&owner.key.do_authentication(passkey::origin(), rcr).unwrap()).unwrap();
    let t0 = now();
    let r = send(&s, &owner.token, "POST", "/api/sessions", body, &ch, &assertion);
    assert_eq!(r.status, 201, "{}", r.body);
    let first = r.json();
    assert!(first["token"].as_str().unwrap().starts_with("cvt_"), "{first}");
    assert_eq!(first["name"], "Browser extension: Chromium");
    let expires = first["expires_at"].as_i64().unwrap();
    assert!((t0 + 12 * 3600..=now() + 12 * 3600).contains(&expires), "default life 12 h: {first}");
    let replay = send(&s, &owner.token, "POST", "/api/sessions", body, &ch, &assertion);
    assert_eq!((replay.status, reason(&replay)), (403, "unknown_or_used_challenge".to_owned()), "{}", replay.body);
    assert_eq!(agents(&s, &owner.token).len(), before + 1, "exactly one session");

    // Bad bodies are refused before a challenge is spent.
    for bad in [
        json!({"ttl_secs": 0}),
        json!({"ttl_secs": 43201}),
        json!({"label": "x".repeat(65)}),
        json!({"label": "a\u{7}b"}),
        json!({"admin": true}),
    ] {
        let r = owner.write(&s, "POST", "/api/sessions", &bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    assert_eq!(agents(&s, &owner.token).len(), before + 1);

    let audit = v.audit_rows(false);
    let issued: Vec<&Value> = audit.iter().filter(|r| r["action"] == "token.derive" && r["outcome"] == "ok").collect();
    assert_eq!(issued.len(), 1, "one issuance row: {issued:?}");
    assert_eq!(issued[0]["agent_id"], 1, "{}", issued[0]);
}

fn request_plain(s: &Server, token: &str, body: &[u8]) -> Resp {
    common::request_with(
        &s.url("/api/sessions"),
        "POST",
        Some(token),
        &[("Content-Type", "application/json")],
        Some(body),
    )
}

#[test]
fn a_session_reads_like_the_owner_is_never_admin_is_listed_and_dies_when_revoked() {
    let v = Vault::uninitialised_owner();
    let s = v.serve();
    let mut owner = Admin::owner(&s, &v.setup_code);
    let r = owner.write(&s, "POST", "/api/entries", &login("Example"));
    assert_eq!(r.status, 201, "{}", r.body);
    let entry = r.json()["id"].as_i64().unwrap();
    let (id, token, _) = session(&mut owner, &s, &json!({}));

    // Reads what the owner reads, each read audited as the session's agent.
    assert_eq!(common::titles(&s, &token), vec!["Example"]);
    let r = s.get(&format!("/api/entries/{entry}"), Some(&token));
    assert_eq!(r.status, 200, "{}", r.body);
    v.audit_rows_when(false, "the read, audited as the session", |rows| {
        rows.iter().any(|r| r["action"] == "entry.read" && r["agent_id"] == id && r["entry_id"] == entry)
    });

    // Never admin: no admin read, no challenge, no write.
    let who = s.get("/api/whoami", Some(&token)).json();
    assert_eq!((who["admin"].clone(), who["parent_id"].clone()), (json!(false), json!(1)), "{who}");
    assert_eq!(s.get("/api/agents", Some(&token)).status, 403);
    let ask = json!({"method": "POST", "path": "/api/entries", "body_sha256": "0".repeat(64)});
    assert_eq!(post_json(&s, "/api/webauthn/challenge", Some(&token), &ask).status, 403);
    let r = common::request_with(
        &s.url("/api/entries"),
        "POST",
        Some(&token),
        &[("Content-Type", "application/json")],
        Some(login("Mine").to_string().as_bytes()),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = common::request_with(
        &s.url("/api/sessions"),
        "POST",
        Some(&token),
        &[("Content-Type", "application/json")],
        Some(b"{}"),
    );
    assert_eq!(r.status, 403, "a session cannot mint sessions: {}", r.body);

    // Listed and marked for the owner, with its expiry; other agents are not marked.
    let list = agents(&s, &owner.token);
    let me = list.iter().find(|a| a["id"] == id).expect("listed");
    assert_eq!(me["extension_session"], true, "{me}");
    assert_eq!(me["parent_id"], 1, "{me}");
    assert!(me["expires_at"].as_i64().is_some(), "{me}");
    assert_eq!(list.iter().find(|a| a["id"] == 1).unwrap()["extension_session"], false);

    // Revoked on the agents page (the gated agent revoke): refused at its next request.
    let r = owner.write(&s, "DELETE", &format!("/api/agents/{id}"), &Value::Null);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.get("/api/entries", Some(&token)).status, 401);
    assert!(agents(&s, &owner.token).iter().all(|a| a["id"] != id));
}

#[test]
fn a_session_expires_and_its_life_is_set_by_flag_or_env() {
    let v = Vault::uninitialised_owner();
    let s = Server::start(&v.dir(), &["--extension-session-ttl-secs", "600"]);
    let mut owner = Admin::owner(&s, &v.setup_code);
    let t0 = now();
    let (_, _, body) = session(&mut owner, &s, &json!({}));
    let expires = body["expires_at"].as_i64().unwrap();
    assert!((t0 + 600..=now() + 600).contains(&expires), "{body}");
    let r = owner.write(&s, "POST", "/api/sessions", &json!({"ttl_secs": 601}));
    assert_eq!(r.status, 400, "never longer than the flag: {}", r.body);

    // A session asked to live 2 s: served until then, refused after, by the server's clock.
    let (_, token, body) = session(&mut owner, &s, &json!({"ttl_secs": 2}));
    let expires = body["expires_at"].as_i64().unwrap();
    let start = Instant::now();
    loop {
        let asked_at = now();
        let r = s.get("/api/entries", Some(&token));
        if r.status == 401 {
            break;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(asked_at < expires, "still served at or after its expiry");
        assert!(start.elapsed() < Duration::from_secs(10), "never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(s);

    // The env var sets it too; out-of-range values are refused at start.
    let s = Server::start_env(&v.dir(), &[], &[("CLAVITOR_EXTENSION_SESSION_TTL_SECS", "900")]);
    let t0 = now();
    let (_, _, body) = session(&mut owner, &s, &json!({}));
    assert!((t0 + 900..=now() + 900).contains(&body["expires_at"].as_i64().unwrap()), "{body}");
    drop(s);
    for bad in ["59", "86401"] {
        let out = v.cli(&["serve", "--listen", "127.0.0.1:0", "--extension-session-ttl-secs", bad]);
        assert!(!out.status.success(), "{bad} is refused");
        assert!(String::from_utf8_lossy(&out.stderr).contains("extension-session-ttl-secs"), "{bad}");
    }
}
