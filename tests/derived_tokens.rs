//! Short-lived and narrowed tokens (issue 13 §5, §6): `POST /api/tokens/derive`, `GET
//! /api/whoami`, expiring agents (`agent add --ttl`, `expires_at` on `POST /api/agents`),
//! revocation of derived tokens with their parent, and `reveal_to_model`, against the real
//! server.

mod common;
#[path = "common/passkey.rs"]
mod passkey;

use std::time::{Duration, Instant};

use common::{Resp, Server, Vault, eventually};
use passkey::{Admin, post_json};
use serde_json::{Value, json};

fn login(title: &str, scopes: &[&str]) -> Value {
    json!({"title": title, "scopes": scopes,
           "fields": [{"name": "password", "kind": "secret", "value": format!("p-{title}")}]})
}

fn derive(s: &Server, token: &str, body: &Value) -> Resp {
    post_json(s, "/api/tokens/derive", Some(token), body)
}

fn derived(s: &Server, token: &str, body: &Value) -> (i64, String, Value) {
    let r = derive(s, token, body);
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    (v["id"].as_i64().expect("id"), v["token"].as_str().expect("token").to_owned(), v)
}

fn reason(r: &Resp) -> String {
    r.json()["reason"].as_str().unwrap_or_default().to_owned()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn agent_count(v: &Vault) -> usize {
    v.cli_json(&["agent", "list", "--json"], None).as_array().unwrap().len()
}

#[test]
fn a_derived_token_reads_only_what_it_was_given_and_says_who_it_is() {
    let v = Vault::new();
    let (a, token) = v.add_agent("ci", &["--scopes", "00aa"]);
    let own = format!("{a:04x}");
    v.add_entry(&login("Own", &[&own]));
    v.add_entry(&login("Team", &["00aa"]));
    v.add_entry(&login("Owner only", &[]));
    let s = v.serve();
    assert_eq!(common::titles(&s, &token), vec!["Own", "Team"]);

    let before = now();
    let (child, child_token, body) = derived(&s, &token, &json!({"name": "sub", "ttl_secs": 3600, "scopes": ["00aa"]}));
    assert!(child_token.starts_with("cvt_"), "{body}");
    assert_eq!(body["parent_id"], a);
    assert_eq!(body["all_access"], false);
    assert_eq!(body["reveal_to_model"], false);
    let expires = body["expires_at"].as_i64().unwrap();
    assert!((before + 3600..=now() + 3600).contains(&expires), "{body}");
    assert_eq!(common::titles(&s, &child_token), vec!["Team"], "only the scope it was given");

    let who = s.get("/api/whoami", Some(&child_token));
    assert_eq!(who.status, 200, "{}", who.body);
    let who = who.json();
    assert_eq!(who["id"], child);
    assert_eq!(who["parent_id"], a);
    assert_eq!(who["expires_at"], expires);
    assert_eq!(who["admin"], false);
    let mut scopes: Vec<&str> = who["scopes"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    scopes.sort();
    let mut want = vec!["00aa".to_owned(), format!("{child:04x}")];
    want.sort();
    assert_eq!(scopes, want, "its own scope and the one it was given");
    let me = s.get("/api/whoami", Some(&token)).json();
    assert_eq!(me["expires_at"], Value::Null);
    assert_eq!(me["parent_id"], Value::Null);

    // Omitted scopes: the caller's; a derived token derives further (narrowing again).
    let (_, all, _) = derived(&s, &token, &json!({"name": "same", "ttl_secs": 60}));
    assert_eq!(common::titles(&s, &all), vec!["Own", "Team"]);
    let (_, grandchild, g) = derived(&s, &child_token, &json!({"name": "grandchild", "ttl_secs": 30}));
    assert!(g["expires_at"].as_i64().unwrap() <= expires);
    assert_eq!(common::titles(&s, &grandchild), vec!["Team"]);

    // The derivation is audited: actor the caller, the row names the child.
    let rows = v.audit_rows(false);
    let row = rows
        .iter()
        .find(|r| r["action"] == "token.derive" && r["detail"] == format!("agent {child}"))
        .unwrap_or_else(|| panic!("no token.derive row for agent {child}: {rows:?}"));
    assert_eq!(row["agent_id"], a, "{row}");
    assert_eq!(row["outcome"], "ok", "{row}");
    // Listed for the owner with their parent.
    let list = s.get("/api/agents", Some(&v.owner)).json();
    let listed = list["agents"].as_array().unwrap().iter().find(|x| x["id"] == child).expect("listed").clone();
    assert_eq!(listed["parent_id"], a, "{listed}");
    assert_eq!(listed["expires_at"], expires, "{listed}");
    assert_eq!(listed["reveal_to_model"], false, "{listed}");
}

#[test]
fn derivation_only_narrows() {
    let v = Vault::new();
    let (a, token) = v.add_agent("ci", &["--scopes", "00aa"]);
    let s = v.serve();
    let agents = agent_count(&v);
    let refusals: &[(Value, u16, &str)] = &[
        (json!({"name": "x", "ttl_secs": 60, "scopes": ["00aa", "00bb"]}), 403, "derived_scopes_exceed_caller"),
        (json!({"name": "x", "ttl_secs": 60, "scopes": ["0001"]}), 403, "derived_scopes_exceed_caller"),
        (json!({"name": "x", "ttl_secs": 60, "admin": true}), 403, "derived_token_cannot_be_admin"),
        (json!({"name": "x", "ttl_secs": 60, "all_access": true}), 403, "derived_all_access_needs_caller_all_access"),
        (json!({"name": "x", "ttl_secs": 60, "reveal_to_model": true}), 403, "derived_reveal_needs_caller_reveal"),
        (json!({"name": "x", "ttl_secs": 0}), 400, ""),
        (json!({"name": "x", "ttl_secs": 86401}), 400, ""),
        (json!({"name": "x", "ttl_secs": -5}), 400, ""),
        (json!({"name": "x", "ttl_secs": 1.5}), 400, ""),
        (json!({"name": "", "ttl_secs": 60}), 422, ""),
        (json!({"name": "x", "ttl_secs": 60, "scopes": ["nope"]}), 422, ""),
        (json!({"name": "x", "ttl_secs": 60, "unknown": 1}), 400, ""),
    ];
    for (body, status, why) in refusals {
        let r = derive(&s, &token, body);
        assert_eq!(r.status, *status, "{body}: {}", r.body);
        assert!(r.json()["error"].is_string(), "{}", r.body);
        assert_eq!(reason(&r), *why, "{body}: {}", r.body);
    }
    assert_eq!(agent_count(&v), agents, "no refusal created an agent");
    let denied = v
        .audit_rows(false)
        .into_iter()
        .filter(|r| r["action"] == "token.derive" && r["outcome"] == "denied" && r["agent_id"] == a)
        .count();
    assert_eq!(denied, 5, "every rule refusal is audited");

    // A child cannot outlive its parent, and nothing unauthenticated derives.
    // `120.0` is the integer 120 to JSON Schema, so the server takes it too.
    let (_, short, _) = derived(&s, &token, &json!({"name": "short", "ttl_secs": 120.0}));
    let r = derive(&s, &short, &json!({"name": "longer", "ttl_secs": 3600}));
    assert_eq!((r.status, reason(&r)), (403, "expiry_exceeds_parent".to_owned()), "{}", r.body);
    let (_, _, ok) = derived(&s, &short, &json!({"name": "shorter", "ttl_secs": 60}));
    assert_eq!(ok["scopes"].as_array().unwrap().len(), 4, "the parent's three scopes and its own: {ok}");
    assert_eq!(
        derive(&s, "cvt_0000000000000000000000000000000000000000000", &json!({"name": "x", "ttl_secs": 1})).status,
        401
    );
    assert_eq!(derive(&s, &v.owner, &json!({"name": "x", "ttl_secs": 1})).status, 201, "the owner may derive too");
}

#[test]
fn the_owner_derives_any_scope_and_all_access_only_when_asked() {
    let v = Vault::new();
    v.add_entry(&login("Owner only", &[]));
    v.add_entry(&login("Team", &["00aa"]));
    let s = v.serve();
    let (_, narrow, body) = derived(&s, &v.owner, &json!({"name": "n", "ttl_secs": 60, "scopes": ["00aa"]}));
    assert_eq!(body["all_access"], false);
    assert_eq!(common::titles(&s, &narrow), vec!["Team"]);
    let (_, wide, body) = derived(&s, &v.owner, &json!({"name": "w", "ttl_secs": 60, "all_access": true}));
    assert_eq!(body["all_access"], true);
    assert_eq!(common::titles(&s, &wide), vec!["Owner only", "Team"]);
    let who = s.get("/api/whoami", Some(&wide)).json();
    assert_eq!(who["admin"], false, "a derived token is never admin: {who}");
    assert_eq!(s.get("/api/agents", Some(&wide)).status, 403, "so it reads no admin route");
}

#[test]
fn an_expired_token_is_refused_like_an_unknown_one() {
    let v = Vault::new();
    v.add_entry(&login("Team", &["00aa"]));
    let s = v.serve();
    let (_, token) = v.add_agent("brief", &["--scopes", "00aa", "--ttl", "1h"]);
    let listed = v.cli_json(&["agent", "list", "--json"], None);
    let row = listed.as_array().unwrap().iter().find(|a| a["name"] == "brief").unwrap().clone();
    assert!((now() + 3590..=now() + 3600).contains(&row["expires_at"].as_i64().unwrap()), "{row}");
    eventually("the CLI's agent is served", || s.get("/api/entries", Some(&token)).status == 200);

    // A token that lives one second: refused once its second has passed, by the server's clock.
    let (_, child, body) = derived(&s, &token, &json!({"name": "blink", "ttl_secs": 1}));
    let expires = body["expires_at"].as_i64().unwrap();
    let start = Instant::now();
    let refused = loop {
        let asked_at = now();
        let r = s.get("/api/entries", Some(&child));
        if r.status == 401 {
            break r;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(asked_at < expires, "still served at or after its expiry");
        assert!(start.elapsed() < Duration::from_secs(10), "never expired");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(now() >= expires);
    let unknown = s.get("/api/entries", Some("cvt_0000000000000000000000000000000000000000000"));
    assert_eq!((refused.status, &refused.body), (unknown.status, &unknown.body), "same answer as an unknown token");
    assert_eq!(s.get("/api/whoami", Some(&child)).status, 401);
    assert_eq!(
        derive(&s, &child, &json!({"name": "late", "ttl_secs": 1})).status,
        401,
        "an expired caller derives nothing"
    );
    let node = v.audit_rows_when(true, "four refused authentications", |rows| {
        rows.iter().filter(|r| r["action"] == "auth").count() >= 4
    });
    let reasons: Vec<&str> =
        node.iter().filter(|r| r["action"] == "auth").map(|r| r["detail"].as_str().unwrap_or_default()).collect();
    assert!(reasons.len() >= 4 && reasons.iter().all(|d| *d == "unknown"), "audited as unknown: {reasons:?}");

    // A restart changes nothing; the long-lived agent is untouched.
    drop(s);
    let s = v.serve();
    assert_eq!(s.get("/api/entries", Some(&child)).status, 401);
    assert_eq!(common::titles(&s, &token), vec!["Team"]);
    let out = v.cli(&["agent", "add", "--name", "zero", "--ttl", "0s"]);
    assert!(!out.status.success(), "a zero ttl is refused");
}

/// The owner's side, through the passkey-gated API the agents page uses.
#[test]
fn the_owner_sees_expiry_and_parents_sets_reveal_and_revoking_a_parent_kills_its_tokens() {
    let v = Vault::uninitialised_owner();
    let s = v.serve();
    let mut owner = Admin::owner(&s, &v.setup_code);
    let r = owner.write(&s, "POST", "/api/agents", &json!({"name": "old", "expires_at": now() - 1}));
    assert_eq!(r.status, 400, "{}", r.body);
    let later = now() + 7200;
    let r = owner.write(&s, "POST", "/api/agents", &json!({"name": "ci", "scopes": ["00aa"], "expires_at": later}));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["agent"]["expires_at"], later);
    let (a, token) = (r.json()["agent"]["id"].as_i64().unwrap(), r.json()["token"].as_str().unwrap().to_owned());
    assert_eq!(s.get("/api/whoami", Some(&token)).json()["expires_at"], later);

    // reveal_to_model: off by default, set by the owner with a passkey, and only then passed on.
    let r = derive(&s, &token, &json!({"name": "r", "ttl_secs": 60, "reveal_to_model": true}));
    assert_eq!(reason(&r), "derived_reveal_needs_caller_reveal", "{}", r.body);
    let r = request_put_without_passkey(&s, &owner.token, a);
    assert_eq!(r.status, 403, "reveal_to_model is a gated change: {}", r.body);
    assert_eq!(s.get("/api/whoami", Some(&token)).json()["reveal_to_model"], false);
    let r = owner.write(&s, "PATCH", &format!("/api/agents/{a}"), &json!({"reveal_to_model": true}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["agent"]["reveal_to_model"], true);
    assert_eq!(s.get("/api/whoami", Some(&token)).json()["reveal_to_model"], true);
    let (c1, child, body) = derived(&s, &token, &json!({"name": "c1", "ttl_secs": 600, "reveal_to_model": true}));
    assert_eq!(body["reveal_to_model"], true);
    let (c2, grandchild, _) = derived(&s, &child, &json!({"name": "c2", "ttl_secs": 60}));
    assert_eq!(s.get("/api/whoami", Some(&grandchild)).json()["reveal_to_model"], false, "only when asked");
    let list = s.get("/api/agents", Some(&owner.token)).json();
    let by_id = |id: i64| list["agents"].as_array().unwrap().iter().find(|x| x["id"] == id).cloned().unwrap();
    assert_eq!(by_id(c1)["parent_id"], a);
    assert_eq!(by_id(c2)["parent_id"], c1);
    assert_eq!(by_id(a)["reveal_to_model"], true);

    // Rotating the parent's token leaves its children working.
    let r = owner.write(&s, "PUT", &format!("/api/agents/{a}"), &json!({"rotate_token": true}));
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(s.get("/api/entries", Some(&child)).status, 200);

    // Revoking the parent revokes every descendant in the same transaction: 401 at once.
    let r = owner.write(&s, "DELETE", &format!("/api/agents/{a}"), &Value::Null);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["derived_revoked"], json!([c1, c2]));
    for t in [&token, &child, &grandchild] {
        assert_eq!(s.get("/api/entries", Some(t)).status, 401);
    }
    let rows = v.audit_rows(false);
    for id in [c1, c2] {
        assert!(
            rows.iter().any(|r| r["action"] == "agent.revoke"
                && r["detail"].as_str().unwrap_or_default().starts_with(&format!("agent {id} (derived"))),
            "agent {id}'s revocation is audited: {rows:?}"
        );
    }
}

fn request_put_without_passkey(s: &Server, token: &str, id: i64) -> Resp {
    common::request(&s.url(&format!("/api/agents/{id}")), "PATCH", Some(token), Some(br#"{"reveal_to_model":true}"#))
}

#[test]
fn revoking_a_parent_on_the_command_line_kills_its_tokens() {
    let v = Vault::new();
    let (a, token) = v.add_agent("ci", &[]);
    let s = v.serve();
    let (_, child, _) = derived(&s, &token, &json!({"name": "c", "ttl_secs": 600}));
    let out = v.cli(&["agent", "revoke", &a.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually("the child is refused", || s.get("/api/entries", Some(&child)).status == 401);
    assert_eq!(agent_count(&v), 1, "only the owner is left");
}

#[test]
fn the_operator_can_make_an_agent_that_reveals_to_the_model() {
    let v = Vault::new();
    let (_, plain) = v.add_agent("plain", &[]);
    let (_, token) = v.add_agent("reveals", &["--reveal-to-model"]);
    let s = v.serve();
    assert_eq!(s.get("/api/whoami", Some(&plain)).json()["reveal_to_model"], false, "off by default");
    assert_eq!(s.get("/api/whoami", Some(&token)).json()["reveal_to_model"], true);
    let (_, _, body) = derived(&s, &token, &json!({"name": "r", "ttl_secs": 60, "reveal_to_model": true}));
    assert_eq!(body["reveal_to_model"], true);
}

#[test]
fn a_child_never_reads_through_its_own_scope_and_one_tree_holds_at_most_100_live_derived_tokens() {
    let v = Vault::new();
    let (a, token) = v.add_agent("ci", &["--scopes", "00aa"]);
    // The owner tagged an entry with the scope the next agent id will have (its own scope).
    let next = format!("{:04x}", a + 1);
    v.add_entry(&login("Tagged for the next id", &[&next]));
    let s = v.serve();
    let r = derive(&s, &token, &json!({"name": "x", "ttl_secs": 60, "scopes": ["00aa"]}));
    assert_eq!((r.status, reason(&r)), (403, "derived_token_would_read_entries_outside_caller_scopes".to_owned()));
    // The owner may: it reads that entry anyway.
    // Ten minutes: its own derived token (30 s) below must not outlive it, however slow the
    // hundred requests in between.
    let (child, child_token, _) = derived(&s, &v.owner, &json!({"name": "o", "ttl_secs": 600, "scopes": ["00aa"]}));
    assert_eq!(child, a + 1);
    assert_eq!(common::titles(&s, &child_token), vec!["Tagged for the next id"]);

    // 100 live derived tokens under agent `a`, half of them one level further down: a chain
    // does not multiply the cap. (Five minutes each, below c0's ten: all still live at the end
    // on a slow machine, none outliving c0.)
    let (_, first, _) = derived(&s, &token, &json!({"name": "c0", "ttl_secs": 600}));
    for n in 1..100 {
        let from = if n % 2 == 0 { &token } else { &first };
        let r = derive(&s, from, &json!({"name": format!("c{n}"), "ttl_secs": 300}));
        assert_eq!(r.status, 201, "derived token {n}: {}", r.body);
    }
    for from in [&token, &first] {
        let r = derive(&s, from, &json!({"name": "one too many", "ttl_secs": 300}));
        assert_eq!((r.status, reason(&r)), (403, "too_many_derived_tokens".to_owned()), "{}", r.body);
    }
    // The cap is per tree: the owner's tree is another.
    let (_, grandchild, _) = derived(&s, &child_token, &json!({"name": "g", "ttl_secs": 30}));
    assert_eq!(s.get("/api/whoami", Some(&grandchild)).status, 200);
}

#[test]
fn expired_derived_agents_are_removed_with_an_audit_row_and_the_parent_stays() {
    let v = Vault::new();
    let (parent, token) = v.add_agent("ci", &["--scopes", "00aa", "--ttl", "1h"]);
    let s = v.serve();
    let (child, _, _) = derived(&s, &token, &json!({"name": "blink", "ttl_secs": 1}));
    let (kept, _, _) = derived(&s, &token, &json!({"name": "hour", "ttl_secs": 1800}));
    let ids = || -> Vec<i64> {
        let listed = v.cli_json(&["agent", "list", "--json"], None);
        listed.as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()).collect()
    };
    assert!(ids().contains(&child));
    // The server sweeps every 10 s; the expired child's row goes, nothing else does.
    let start = Instant::now();
    while ids().contains(&child) {
        assert!(start.elapsed() < Duration::from_secs(40), "the expired derived agent was never removed");
        std::thread::sleep(Duration::from_millis(250));
    }
    let left = ids();
    assert!(left.contains(&parent) && left.contains(&kept), "{left:?}");
    let rows = v.audit_rows(false);
    let expired: Vec<&Value> = rows.iter().filter(|r| r["action"] == "agent.expire").collect();
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0]["actor"], "node");
    assert!(expired[0]["detail"].as_str().unwrap().starts_with(&format!("agent {child} ")), "{expired:?}");
    // The parent (expiring too, but not derived) still works.
    assert_eq!(s.get("/api/whoami", Some(&token)).status, 200);
}
