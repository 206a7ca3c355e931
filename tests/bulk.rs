//! Bulk agents (commercial, issue 16 §2) through the real binary with soft passkeys: 500 agents
//! under one assertion and revoked under another; a bad or mismatched assertion, a bad item, an
//! id that does not exist, more than 500 or past the license cap change nothing; a scoped admin's
//! batch never grants more than it holds.
#![cfg(feature = "commercial")]

mod common;
#[path = "common/passkey.rs"]
mod passkey;

use common::{Server, Vault};
use passkey::{Admin, challenge, origin, post_json, send};
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::CreationChallengeResponse;

const BULK: &str = "/api/mgmt/agents/bulk";

struct World {
    v: Vault,
    s: Server,
    owner: Admin,
}

impl World {
    /// An owner set up through the setup link; `roomy`: with a license allowing 10,000 agents
    /// (else the default tier: 5 agents per vault).
    fn new(roomy: bool) -> Self {
        let v = Vault::uninitialised_owner();
        let (args, env) = if roomy { common::roomy_license(v.tmp.path()) } else { (Vec::new(), Vec::new()) };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let s = Server::start_env(&v.dir(), &args, &env);
        let owner = Admin::owner(&s, &v.setup_code);
        World { v, s, owner }
    }

    fn owner_write(&mut self, method: &str, path: &str, body: &Value) -> common::Resp {
        self.owner.write(&self.s, method, path, body)
    }

    /// Agents as the files hold them (id, name, scopes, flags), and the passkeys' counters.
    fn agents(&self) -> Value {
        self.v.cli_json(&["agent", "list", "--json"], None)
    }

    fn agent_count(&self) -> usize {
        self.agents().as_array().unwrap().len()
    }

    /// Audit rows of `action` with outcome ok.
    fn ok_rows(&self, action: &str) -> usize {
        self.v.audit_rows(false).iter().filter(|r| r["action"] == action && r["outcome"] == "ok").count()
    }

    /// Creates an admin agent with `scopes` as the owner and enrolls a passkey for it.
    fn scoped_admin(&mut self, scopes: &[&str]) -> Admin {
        let r = self.owner_write("POST", "/api/agents", &json!({"name": "lead", "scopes": scopes, "admin": true}));
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.json()["agent"]["id"].as_i64().unwrap();
        let token = r.json()["token"].as_str().unwrap().to_owned();
        let mut key = SoftPasskey::new(true);
        let r = post_json(&self.s, "/api/passkeys/options", Some(&self.owner.token), &json!({}));
        assert_eq!(r.status, 200, "{}", r.body);
        let start = r.json();
        let ccr: CreationChallengeResponse = serde_json::from_value(start["options"].clone()).unwrap();
        let cred = key.do_registration(origin(), ccr).unwrap();
        let body =
            json!({"registration_id": start["registration_id"], "name": "lead", "credential": cred, "agent_id": id});
        let r = self.owner_write("POST", "/api/passkeys", &body);
        assert_eq!(r.status, 201, "{}", r.body);
        Admin { token, key }
    }
}

fn batch(n: usize, scopes: &[&str]) -> Value {
    let agents: Vec<Value> = (1..=n).map(|i| json!({"name": format!("worker-{i}"), "scopes": scopes})).collect();
    json!({ "agents": agents })
}

#[test]
fn five_hundred_agents_under_one_assertion_and_revoked_under_another() {
    let mut w = World::new(true);
    let r = w.owner_write("POST", BULK, &batch(500, &["beef"]));
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json()["agents"].as_array().unwrap().clone();
    assert_eq!(created.len(), 500);
    let tokens: std::collections::HashSet<&str> = created.iter().map(|a| a["token"].as_str().unwrap()).collect();
    assert_eq!(tokens.len(), 500, "every token distinct");
    assert!(tokens.iter().all(|t| t.starts_with("cvt_")));
    assert_eq!(created[499]["agent"]["name"], "worker-500");
    assert_eq!(created[0]["agent"]["scopes"].as_array().unwrap().len(), 2, "its own scope and beef");
    assert_eq!(w.agent_count(), 501);
    // One audit row per agent, each naming it.
    assert_eq!(w.ok_rows("agent.create"), 500);
    // The tokens work at once, and are never shown again (the list carries none).
    let last = created[499]["token"].as_str().unwrap();
    assert_eq!(w.s.get("/api/whoami", Some(last)).status, 200);
    assert!(!w.s.get("/api/agents", Some(&w.owner.token)).body.contains(last));

    let ids: Vec<i64> = created.iter().map(|a| a["agent"]["id"].as_i64().unwrap()).collect();
    let r = w.owner_write("DELETE", BULK, &json!({ "ids": ids }));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["revoked"].as_array().unwrap().len(), 500);
    assert_eq!(w.agent_count(), 1);
    assert_eq!(w.ok_rows("agent.revoke"), 500);
    assert_eq!(w.s.get("/api/whoami", Some(last)).status, 401);
}

#[test]
fn more_than_500_or_a_bad_item_is_refused_before_anything_is_spent() {
    let mut w = World::new(true);
    let before = w.agents();
    for (body, why) in [
        (batch(501, &[]), "501 agents"),
        (json!({"agents": []}), "empty"),
        (json!({"agents": [{"name": "a"}, {"name": "b", "scopes": ["NOT-HEX"]}, {"name": "c"}]}), "bad scope"),
        (json!({"agents": [{"name": "a"}, {"name": ""}]}), "empty name"),
        (json!({"agents": [{"name": "a", "expires_at": 1}]}), "expired"),
    ] {
        let r = w.owner_write("POST", BULK, &body);
        assert_eq!(r.status, 422, "{why}: {}", r.body);
        assert!(r.json()["message"].as_str().is_some_and(|m| !m.is_empty()), "{why}");
    }
    let r = w.owner_write("POST", BULK, &json!({"agents": [{"name": "a", "colour": "red"}]}));
    assert_eq!(r.status, 400, "unknown key: {}", r.body);
    for (ids, why) in [(json!([]), "empty"), (json!([2, 2]), "twice"), (json!([0]), "zero")] {
        let r = w.owner_write("DELETE", BULK, &json!({ "ids": ids }));
        assert_eq!(r.status, 422, "{why}: {}", r.body);
    }
    assert_eq!(w.agents(), before);
    let too_many = batch(501, &[]);
    let r = w.owner_write("POST", BULK, &too_many);
    assert!(r.json()["message"].as_str().unwrap().contains("500"), "{}", r.body);
}

#[test]
fn a_batch_failing_half_way_is_rolled_back_whole() {
    let mut w = World::new(true);
    let r = w.owner_write("POST", BULK, &batch(3, &[]));
    assert_eq!(r.status, 201, "{}", r.body);
    let before = w.agents();
    // The first two revocations succeed inside the transaction, the third finds no agent.
    let r = w.owner_write("DELETE", BULK, &json!({"ids": [2, 3, 999]}));
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(w.agents(), before, "agents 2 and 3 are back");
    // The last admin (the owner) cannot go, and takes the batch with it.
    let r = w.owner_write("DELETE", BULK, &json!({"ids": [4, 1]}));
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(w.agents(), before);
    assert_eq!(w.ok_rows("agent.revoke"), 0);
}

#[test]
fn a_bad_or_mismatched_assertion_changes_nothing() {
    let mut w = World::new(true);
    let before = w.agents();
    let body = batch(3, &[]).to_string().into_bytes();
    let other = batch(4, &[]).to_string().into_bytes();
    let tok = w.owner.token.clone();
    // Bound to another batch (the hash of 4 agents, sent with 3).
    let (id, rcr) = challenge(&w.s, &tok, "POST", BULK, &other);
    let a = serde_json::to_string(&w.owner.key.do_authentication(origin(), rcr).unwrap()).unwrap();
    let r = send(&w.s, &tok, "POST", BULK, &body, &id, &a);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["reason"], "challenge_for_another_operation");
    // A genuine assertion over another challenge.
    let (_, rcr) = challenge(&w.s, &tok, "POST", BULK, &body);
    let a = serde_json::to_string(&w.owner.key.do_authentication(origin(), rcr).unwrap()).unwrap();
    let (id, _) = challenge(&w.s, &tok, "POST", BULK, &body);
    let r = send(&w.s, &tok, "POST", BULK, &body, &id, &a);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["reason"], "assertion_rejected");
    // Garbage, and none at all.
    let (id, _) = challenge(&w.s, &tok, "POST", BULK, &body);
    let r = send(&w.s, &tok, "POST", BULK, &body, &id, "{\"id\":\"x\"}");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["reason"], "assertion_rejected");
    let r =
        common::request_with(&w.s.url(BULK), "POST", Some(&tok), &[("Content-Type", "application/json")], Some(&body));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["reason"], "missing_challenge");
    assert_eq!(w.agents(), before);
    assert_eq!(w.ok_rows("agent.create"), 0);
}

#[test]
fn the_license_cap_counts_the_whole_batch() {
    // No license: the default tier allows 5 agents per vault; the owner is one.
    let mut w = World::new(false);
    let r = w.owner_write("POST", BULK, &batch(5, &[]));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"], "license cap reached", "{}", r.body);
    assert_eq!(r.json()["limit"], "max_agents_per_vault", "{}", r.body);
    assert_eq!(w.agent_count(), 1);
    let r = w.owner_write("POST", BULK, &batch(4, &[]));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(w.agent_count(), 5);
}

#[test]
fn a_proxy_restricted_admin_makes_only_proxy_restricted_agents() {
    let mut w = World::new(true);
    let lead = w.scoped_admin(&["beef"]);
    let lead_id = w.agents().as_array().unwrap().iter().find(|a| a["name"] == "lead").unwrap()["id"].clone();
    let r = w.owner_write("PATCH", &format!("/api/agents/{lead_id}"), &json!({"proxy_only_listed": true}));
    assert_eq!(r.status, 200, "{}", r.body);
    let mut lead = lead;
    let before = w.agents();
    let mixed = json!({"agents": [{"name": "a", "scopes": ["beef"], "proxy_only_listed": true},
        {"name": "b", "scopes": ["beef"]}]});
    let r = lead.write(&w.s, "POST", BULK, &mixed);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["reason"], "proxy_restricted_admin_cannot_grant_unrestricted_proxy");
    assert_eq!(w.agents(), before, "nothing of the batch was made");
    let restricted = json!({"agents": [{"name": "a", "scopes": ["beef"], "proxy_only_listed": true}]});
    let r = lead.write(&w.s, "POST", BULK, &restricted);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["agents"][0]["agent"]["proxy_only_listed"], true);
}

#[test]
fn no_batch_gives_more_than_the_calling_admin_holds() {
    let mut w = World::new(true);
    let mut lead = w.scoped_admin(&["beef"]);
    let before = w.agents();
    for (body, reason) in [
        (
            json!({"agents": [{"name": "a", "scopes": ["beef"]}, {"name": "b", "all_access": true}]}),
            "scoped_admin_cannot_grant_all_access",
        ),
        (json!({"agents": [{"name": "a", "admin": true}]}), "scoped_admin_cannot_grant_admin"),
        (
            json!({"agents": [{"name": "a", "scopes": ["beef"]}, {"name": "b", "scopes": ["cafe"]}]}),
            "scoped_admin_cannot_grant_scope_it_lacks",
        ),
    ] {
        let r = lead.write(&w.s, "POST", BULK, &body);
        assert_eq!(r.status, 403, "{body}: {}", r.body);
        assert_eq!(r.json()["reason"], reason, "{}", r.body);
        assert_eq!(w.agents(), before);
    }
    // An entry the lead cannot read, tagged with the scope the batch's second agent would get:
    // each item is checked with its own future id.
    let next = w.agents().as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()).max().unwrap() + 1;
    let second = format!("{:04x}", next + 1);
    let r = w.owner_write(
        "POST",
        "/api/entries",
        &json!({"title": "owner's", "scopes": [second],
        "fields": [{"name": "pw", "kind": "secret", "value": "x"}]}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = lead.write(&w.s, "POST", BULK, &batch(2, &["beef"]));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["reason"], "new_agent_would_read_entries_outside_admin_scopes");
    assert_eq!(w.agents(), before);
    // Revoking the owner, or another admin, is refused too.
    let r = lead.write(&w.s, "DELETE", BULK, &json!({"ids": [1]}));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(w.agents(), before);
    // Within what it holds, it works.
    let r = lead.write(&w.s, "POST", BULK, &json!({"agents": [{"name": "x", "scopes": ["beef"]}]}));
    assert_eq!(r.status, 201, "{}", r.body);
    let made = r.json()["agents"][0]["agent"].clone();
    assert_eq!(made["all_access"], false);
    assert_eq!(made["admin"], false);
    let r = lead.write(&w.s, "DELETE", BULK, &json!({"ids": [made["id"]]}));
    assert_eq!(r.status, 200, "{}", r.body);
    // A management token is no vault admin: it authenticates on neither route.
    let out = w.v.cli(&["mgmt", "token", "add", "--name", "ops", "--scope", "license"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cvm = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(cvm.starts_with("cvm_"));
    for method in ["POST", "DELETE"] {
        let r =
            common::request_with(&w.s.url(BULK), method, Some(&cvm), &[], Some(batch(1, &[]).to_string().as_bytes()));
        assert_eq!(r.status, 401, "{method}: {}", r.body);
    }
}
