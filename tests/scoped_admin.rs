//! A scoped admin (admin without all access) never grants or changes more than it holds, and a
//! passkey approves writes only for the agent that enrolled it. Real binary, real files, soft
//! passkeys (webauthn-authenticator-rs); every refusal is asserted by its reason code, in the
//! 403 and in the audit row, with nothing changed.

mod common;
#[path = "common/passkey.rs"]
mod passkey;

use common::{Server, Vault};
use passkey::{challenge, origin, post_json, send};
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse};

/// One admin as a client sees it: its token and its own passkey.
struct Admin {
    id: i64,
    token: String,
    key: SoftPasskey,
}

fn bytes(body: &Value) -> Vec<u8> {
    if body.is_null() { Vec::new() } else { body.to_string().into_bytes() }
}

impl Admin {
    /// A complete gated write: challenge, assertion with this admin's own key, request.
    fn write(&mut self, s: &Server, method: &str, path: &str, body: &Value) -> common::Resp {
        let body = bytes(body);
        let (id, rcr) = challenge(s, &self.token, method, path, &body);
        let a = serde_json::to_string(&self.key.do_authentication(origin(), rcr).expect("signs")).unwrap();
        send(s, &self.token, method, path, &body, &id, &a)
    }
}

/// Entries, agents, and (passkey id, counter, owning agent).
type Snapshot = (Value, Value, Vec<(String, i64, Option<i64>)>);

struct World {
    v: Vault,
    s: Server,
    owner: Admin,
}

impl World {
    fn new() -> Self {
        let v = Vault::uninitialised_owner();
        // Wrong methods on known routes are tarpitted in the commercial edition: hold them 1 s.
        // More admins and passkeys than the commercial default tier allows: a roomy license.
        let (args, env) = common::roomy_license(v.tmp.path());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.push(("CLAVITOR_TARPIT_HOLD_SECS", "1"));
        let s = Server::start_env(&v.dir(), &args, &env);
        let (key, r) = passkey::Admin::setup(&s, &v.setup_code);
        assert_eq!(r.status, 200, "{}", r.body);
        let token = r.json()["token"].as_str().unwrap().to_owned();
        World { v, s, owner: Admin { id: 1, token, key } }
    }

    fn owner_write(&mut self, method: &str, path: &str, body: &Value) -> common::Resp {
        self.owner.write(&self.s, method, path, body)
    }

    fn entry(&mut self, title: &str, scopes: &[&str]) -> i64 {
        let body = json!({"title": title, "scopes": scopes,
            "fields": [{"name": "password", "kind": "secret", "value": format!("pw-{title}")}]});
        let r = self.owner_write("POST", "/api/entries", &body);
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["id"].as_i64().unwrap()
    }

    /// Creates an agent as the owner; returns (id, token).
    fn agent(&mut self, body: Value) -> (i64, String) {
        let r = self.owner_write("POST", "/api/agents", &body);
        assert_eq!(r.status, 201, "{}", r.body);
        let v = r.json();
        (v["agent"]["id"].as_i64().unwrap(), v["token"].as_str().unwrap().to_owned())
    }

    /// The owner enrolls a fresh passkey for admin agent `id` (a new admin's first one).
    fn enroll_for(&mut self, id: i64) -> SoftPasskey {
        let mut key = SoftPasskey::new(true);
        let r = post_json(&self.s, "/api/passkeys/options", Some(&self.owner.token), &json!({}));
        assert_eq!(r.status, 200, "{}", r.body);
        let start = r.json();
        let ccr: CreationChallengeResponse = serde_json::from_value(start["options"].clone()).unwrap();
        let cred = key.do_registration(origin(), ccr).unwrap();
        let body = json!({"registration_id": start["registration_id"], "name": format!("agent {id}"),
            "credential": cred, "agent_id": id});
        let r = self.owner_write("POST", "/api/passkeys", &body);
        assert_eq!(r.status, 201, "{}", r.body);
        key
    }

    /// Entries (with values), agents and passkeys (with counters), straight from the files.
    fn snapshot(&self) -> Snapshot {
        let conn = rusqlite::Connection::open(self.v.vault_file()).unwrap();
        let mut st = conn.prepare("SELECT id, sign_count, agent_id FROM webauthn_credentials ORDER BY id").unwrap();
        let creds = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect();
        (
            self.v.cli_json(&["entry", "list", "--json"], None),
            self.v.cli_json(&["agent", "list", "--json"], None),
            creds,
        )
    }

    fn passkey_ids(&self, token: &str) -> Vec<(String, i64)> {
        let r = self.s.get("/api/passkeys", Some(token));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["passkeys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["id"].as_str().unwrap().to_owned(), p["agent_id"].as_i64().unwrap()))
            .collect()
    }
}

/// A refused write: 403 with `reason`, the newest audit row denied with `layer:reason`, and the
/// files unchanged.
fn assert_refused(w: &World, what: &str, r: &common::Resp, layer: &str, reason: &str) {
    assert_eq!(r.status, 403, "{what}: {}", r.body);
    let v = r.json();
    assert_eq!(v["error"], "forbidden", "{what}");
    assert_eq!(v["reason"], reason, "{what}: {}", r.body);
    let last = w.v.audit_rows(false).first().cloned().unwrap();
    assert_eq!(last["outcome"], "denied", "{what}: {last}");
    assert_eq!(last["detail"], format!("{layer}:{reason}"), "{what}: {last}");
}

/// Signs `rcr` with `key` after pointing its allowCredentials at `cred` (a key the server did
/// not offer), the way a client holding another agent's passkey would.
fn sign_with_other(key: &mut SoftPasskey, rcr: RequestChallengeResponse, cred: &str) -> String {
    let mut opts = serde_json::to_value(&rcr).unwrap();
    opts["publicKey"]["allowCredentials"] = json!([{"type": "public-key", "id": cred}]);
    let rcr: RequestChallengeResponse = serde_json::from_value(opts).unwrap();
    serde_json::to_string(&key.do_authentication(origin(), rcr).expect("signs")).unwrap()
}

#[test]
fn a_scoped_admin_never_grants_more_than_it_holds() {
    let mut w = World::new();
    let inside = w.entry("inside", &["00aa"]);
    let outside = w.entry("outside", &["00bb"]);
    let owner_only = w.entry("owner-only", &[]);
    let (lead_id, lead_token) = w.agent(json!({"name": "lead", "scopes": ["00aa", "00ab"], "admin": true}));
    let (reader_id, _) = w.agent(json!({"name": "reader", "all_access": true}));
    let (foreign_id, _) = w.agent(json!({"name": "foreign", "scopes": ["00bb"]}));
    let (member_id, _) = w.agent(json!({"name": "member", "scopes": ["00aa"]}));
    let (peer_id, _) = w.agent(json!({"name": "peer admin", "scopes": ["00aa"], "admin": true}));

    // A new admin has no passkey: no challenge for it until the owner enrolls one.
    let r = post_json(
        &w.s,
        "/api/webauthn/challenge",
        Some(&lead_token),
        &json!({"method": "POST", "path": "/api/agents", "body_sha256": clavitor::crypto::sha256_hex(b"")}),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    let key = w.enroll_for(lead_id);
    let mut lead = Admin { id: lead_id, token: lead_token, key };

    // Passkeys belong to their agent: the owner sees both (with the owning agent), the lead its own.
    let all = w.passkey_ids(&w.owner.token.clone());
    assert_eq!(all.iter().map(|p| p.1).collect::<Vec<_>>(), vec![1, lead_id]);
    let mine = w.passkey_ids(&lead.token);
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].1, lead_id);
    let owner_key_id = all[0].0.clone();
    let lead_key_id = mine[0].0.clone();
    // Registering a further key, it is shown only its own credential ids.
    let r = post_json(&w.s, "/api/passkeys/options", Some(&lead.token), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let excluded = r.json()["options"]["publicKey"]["excludeCredentials"].clone();
    assert_eq!(excluded.as_array().map(Vec::len), Some(1), "{excluded}");
    assert_eq!(excluded[0]["id"], lead_key_id.as_str());

    // Another agent's passkey never approves this token's write, in either direction.
    let before = w.snapshot();
    let body = bytes(&json!({"name": "sneaky"}));
    let (id, rcr) = challenge(&w.s, &lead.token, "POST", "/api/agents", &body);
    let offered = serde_json::to_value(&rcr).unwrap()["publicKey"]["allowCredentials"].clone();
    assert_eq!(offered.as_array().unwrap().len(), 1, "only the lead's own key is offered: {offered}");
    assert_eq!(offered[0]["id"], lead_key_id.as_str());
    let a = sign_with_other(&mut w.owner.key, rcr, &owner_key_id);
    let r = send(&w.s, &lead.token, "POST", "/api/agents", &body, &id, &a);
    assert_refused(&w, "lead token, owner key", &r, "webauthn", "assertion_rejected");
    let (id, rcr) = challenge(&w.s, &w.owner.token, "POST", "/api/agents", &body);
    let a = sign_with_other(&mut lead.key, rcr, &lead_key_id);
    let r = send(&w.s, &w.owner.token, "POST", "/api/agents", &body, &id, &a);
    assert_refused(&w, "owner token, lead key", &r, "webauthn", "assertion_rejected");
    assert_eq!(w.snapshot(), before);

    // The subtle ones: an entry already tagged with the scope the next agent's id will produce,
    // and an agent inside the lead's scopes whose own scope tags an entry the lead cannot read.
    let next = w.v.cli_json(&["agent", "list", "--json"], None).as_array().unwrap().len() as i64 + 1;
    let preassigned = w.entry("preassigned", &[&format!("{next:04x}")]);
    let (watched_id, _) = w.agent(json!({"name": "watched", "scopes": ["00aa"]}));
    w.entry("for-watched", &[&format!("{watched_id:04x}")]);
    let next = watched_id + 1;
    let preassigned_2 = w.entry("preassigned-2", &[&format!("{next:04x}")]);

    let e = |id: i64| format!("/api/entries/{id}");
    let a = |id: i64| format!("/api/agents/{id}");
    let entry_body = |scopes: &[&str]| json!({"title": "t", "scopes": scopes, "fields": []});
    let refusals: Vec<(&str, &str, String, Value, &str)> = vec![
        (
            "create all-access agent",
            "POST",
            a(0)[..11].to_owned(),
            json!({"name": "x", "all_access": true}),
            "scoped_admin_cannot_grant_all_access",
        ),
        (
            "create admin agent",
            "POST",
            "/api/agents".into(),
            json!({"name": "x", "admin": true}),
            "scoped_admin_cannot_grant_admin",
        ),
        (
            "create foreign-scope agent",
            "POST",
            "/api/agents".into(),
            json!({"name": "x", "scopes": ["00aa", "00bb"]}),
            "scoped_admin_cannot_grant_scope_it_lacks",
        ),
        (
            "create an agent whose id scope tags a foreign entry",
            "POST",
            "/api/agents".into(),
            json!({"name": "x", "scopes": ["00aa"]}),
            "new_agent_would_read_entries_outside_admin_scopes",
        ),
        ("edit the owner", "PUT", a(1), json!({"name": "pwned"}), "scoped_admin_cannot_change_all_access_agent"),
        ("demote the owner", "PUT", a(1), json!({"admin": false}), "scoped_admin_cannot_change_all_access_agent"),
        ("revoke the owner", "DELETE", a(1), Value::Null, "scoped_admin_cannot_change_all_access_agent"),
        (
            "rotate the all-access reader",
            "PUT",
            a(reader_id),
            json!({"rotate_token": true}),
            "scoped_admin_cannot_change_all_access_agent",
        ),
        (
            "revoke the all-access reader",
            "DELETE",
            a(reader_id),
            Value::Null,
            "scoped_admin_cannot_change_all_access_agent",
        ),
        (
            "edit a foreign agent",
            "PUT",
            a(foreign_id),
            json!({"scopes": ["00aa"]}),
            "scoped_admin_cannot_change_agent_outside_its_scopes",
        ),
        (
            "revoke a foreign agent",
            "DELETE",
            a(foreign_id),
            Value::Null,
            "scoped_admin_cannot_change_agent_outside_its_scopes",
        ),
        (
            "rotate an agent whose own scope tags a foreign entry",
            "PUT",
            a(watched_id),
            json!({"rotate_token": true}),
            "scoped_admin_cannot_change_agent_outside_its_scopes",
        ),
        (
            "edit a missing agent",
            "PUT",
            a(9999),
            json!({"name": "x"}),
            "scoped_admin_cannot_change_agent_outside_its_scopes",
        ),
        (
            "rotate another scoped admin",
            "PUT",
            a(peer_id),
            json!({"rotate_token": true}),
            "scoped_admin_cannot_change_another_admin",
        ),
        ("revoke another scoped admin", "DELETE", a(peer_id), Value::Null, "scoped_admin_cannot_change_another_admin"),
        ("make a member admin", "PUT", a(member_id), json!({"admin": true}), "scoped_admin_cannot_grant_admin"),
        (
            "make a member all-access",
            "PUT",
            a(member_id),
            json!({"all_access": true}),
            "scoped_admin_cannot_grant_all_access",
        ),
        (
            "give a member a foreign scope",
            "PUT",
            a(member_id),
            json!({"scopes": ["00aa", "00bb"]}),
            "scoped_admin_cannot_grant_scope_it_lacks",
        ),
        (
            "make itself all-access",
            "PUT",
            a(lead_id),
            json!({"all_access": true}),
            "scoped_admin_cannot_grant_all_access",
        ),
        (
            "widen itself",
            "PUT",
            a(lead_id),
            json!({"scopes": ["00aa", "00ab", "00bb"]}),
            "scoped_admin_can_only_narrow_itself",
        ),
        (
            "edit a foreign entry",
            "PUT",
            e(outside),
            entry_body(&["00aa"]),
            "scoped_admin_cannot_change_entry_outside_its_scopes",
        ),
        (
            "re-scope a foreign entry",
            "PUT",
            format!("{}/scopes", e(outside)),
            json!({"scopes": ["00aa"]}),
            "scoped_admin_cannot_change_entry_outside_its_scopes",
        ),
        (
            "delete a foreign entry",
            "DELETE",
            e(outside),
            Value::Null,
            "scoped_admin_cannot_change_entry_outside_its_scopes",
        ),
        (
            "delete an owner-only entry",
            "DELETE",
            e(owner_only),
            Value::Null,
            "scoped_admin_cannot_change_entry_outside_its_scopes",
        ),
        (
            "delete the preassigned entry",
            "DELETE",
            e(preassigned),
            Value::Null,
            "scoped_admin_cannot_change_entry_outside_its_scopes",
        ),
        (
            "delete a missing entry",
            "DELETE",
            e(999_999),
            Value::Null,
            "scoped_admin_cannot_change_entry_outside_its_scopes",
        ),
        (
            "add a foreign scope to its entry",
            "PUT",
            format!("{}/scopes", e(inside)),
            json!({"scopes": ["00aa", "00bb"]}),
            "scoped_admin_cannot_grant_scope_it_lacks",
        ),
        (
            "edit its entry into a foreign scope",
            "PUT",
            e(inside),
            entry_body(&["00bb"]),
            "scoped_admin_cannot_grant_scope_it_lacks",
        ),
        (
            "make its entry owner-only",
            "PUT",
            format!("{}/scopes", e(inside)),
            json!({"scopes": []}),
            "scoped_admin_cannot_make_entry_owner_only",
        ),
        (
            "create a foreign-scope entry",
            "POST",
            "/api/entries".into(),
            entry_body(&["00bb"]),
            "scoped_admin_cannot_grant_scope_it_lacks",
        ),
        (
            "create an owner-only entry",
            "POST",
            "/api/entries".into(),
            entry_body(&[]),
            "scoped_admin_cannot_make_entry_owner_only",
        ),
        ("replace the L2 keyring", "PUT", "/api/keyring".into(), json!({"version": 1}), "keyring_is_owner_only"),
        (
            "remove the owner's passkey",
            "DELETE",
            format!("/api/passkeys/{owner_key_id}"),
            Value::Null,
            "passkeys_of_other_agents_are_owner_only",
        ),
        (
            "enroll a passkey for the owner",
            "POST",
            "/api/passkeys".into(),
            json!({"registration_id": "0".repeat(32), "credential": {}, "agent_id": 1}),
            "passkeys_of_other_agents_are_owner_only",
        ),
    ];
    let before = w.snapshot();
    for (what, method, path, body, reason) in &refusals {
        let r = lead.write(&w.s, method, path, body);
        assert_refused(&w, what, &r, "authority", reason);
        assert_eq!(w.snapshot(), before, "{what}: something changed");
    }
    // Reads outside its scopes stay 404, exactly like a missing entry.
    let hidden = w.s.get(&e(outside), Some(&lead.token));
    assert_eq!(hidden.status, 404);
    assert_eq!(hidden.body, w.s.get(&e(999_999), Some(&lead.token)).body);

    // What it may do: a narrower agent, its own entries, narrowing itself.
    let r = lead.write(&w.s, "POST", "/api/entries", &json!({"title": "team", "scopes": ["00ab"], "fields": []}));
    assert_eq!(r.status, 201, "{}", r.body);
    let team = r.json()["id"].as_i64().unwrap();
    let r = lead.write(
        &w.s,
        "PUT",
        &e(inside),
        &json!({"title": "inside 2", "scopes": ["00aa"],
        "fields": [{"name": "password", "kind": "secret", "value": "new"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = lead.write(&w.s, "PUT", &format!("{}/scopes", e(inside)), &json!({"scopes": ["00aa", "00ab"]}));
    assert_eq!(r.status, 200, "{}", r.body);
    // An entry shared with another team: it keeps the foreign scope when editing, adds none.
    let shared = w.entry("shared", &["00aa", "00bb"]);
    let r = lead.write(&w.s, "PUT", &e(shared), &entry_body(&["00aa", "00bb"]));
    assert_eq!(r.status, 200, "keeping a scope grants nothing: {}", r.body);
    let r = lead.write(&w.s, "PUT", &format!("{}/scopes", e(shared)), &json!({"scopes": ["00aa", "00bb", "00cc"]}));
    assert_refused(
        &w,
        "adding a foreign scope to a shared entry",
        &r,
        "authority",
        "scoped_admin_cannot_grant_scope_it_lacks",
    );
    let r = lead.write(&w.s, "PUT", &format!("{}/scopes", e(shared)), &json!({"scopes": ["00bb"]}));
    assert_eq!(r.status, 200, "narrowing to a kept scope: {}", r.body);
    // The preassigned entries blocked the next id; the owner removes the second one first.
    let r = w.owner_write("DELETE", &e(preassigned_2), &Value::Null);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = lead.write(&w.s, "POST", "/api/agents", &json!({"name": "helper", "scopes": ["00ab"]}));
    assert_eq!(r.status, 201, "{}", r.body);
    let helper = r.json();
    let helper_id = helper["agent"]["id"].as_i64().unwrap();
    assert_eq!(helper_id, next);
    assert_eq!(helper["agent"]["all_access"], false);
    assert_eq!(helper["agent"]["admin"], false);
    let helper_token = helper["token"].as_str().unwrap().to_owned();
    assert_eq!(w.s.get(&e(team), Some(&helper_token)).status, 200);
    assert_eq!(w.s.get(&e(outside), Some(&helper_token)).status, 404);
    let r = lead.write(&w.s, "PUT", &a(helper_id), &json!({"scopes": ["00aa"], "rotate_token": true}));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = lead.write(&w.s, "PUT", &a(member_id), &json!({"name": "member 2", "admin": false}));
    assert_eq!(r.status, 200, "re-stating no admin is no grant: {}", r.body);
    let r = lead.write(&w.s, "DELETE", &e(team), &Value::Null);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = lead.write(&w.s, "DELETE", &a(helper_id), &Value::Null);
    assert_eq!(r.status, 200, "{}", r.body);

    // Its agent list and audit view are its slice.
    let listed: Vec<i64> = w.s.get("/api/agents", Some(&lead.token)).json()["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, vec![lead_id, member_id, peer_id, watched_id], "neither owner, reader nor foreign agents");
    let rows = w.s.get("/api/audit?limit=1000", Some(&lead.token)).json()["rows"].as_array().unwrap().clone();
    assert!(rows.iter().any(|r| r["detail"] == "authority:scoped_admin_cannot_grant_all_access"), "its refusals");
    assert!(rows.iter().any(|r| r["action"] == "entry.create" && r["agent_id"] == lead_id));
    for row in &rows {
        assert!(listed.contains(&row["agent_id"].as_i64().unwrap_or(-1)), "row by someone else: {row}");
        assert!(row["entry_id"].is_null() || row["entry_id"] == inside, "row about a foreign entry: {row}");
    }
    let owner_rows = w.s.get("/api/audit?limit=1000", Some(&w.owner.token)).json()["rows"].as_array().unwrap().clone();
    assert!(owner_rows.len() > rows.len());
    assert!(owner_rows.iter().any(|r| r["agent_id"] == 1 && r["entry_id"] == outside));

    // It narrows itself, and its passkey still approves.
    let r = lead.write(&w.s, "PUT", &a(lead_id), &json!({"scopes": ["00aa"]}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["agent"]["scopes"], json!([format!("{lead_id:04x}"), "00aa"]));
    let r = lead.write(&w.s, "POST", "/api/entries", &json!({"title": "t", "scopes": ["00ab"], "fields": []}));
    assert_refused(&w, "a scope it gave up", &r, "authority", "scoped_admin_cannot_grant_scope_it_lacks");

    // The owner keeps full power.
    let r = w.owner_write("PUT", &a(foreign_id), &json!({"scopes": ["00aa", "00bb"], "rotate_token": true}));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = w.owner_write("PUT", &a(reader_id), &json!({"name": "reader 2"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = w.owner_write("POST", "/api/agents", &json!({"name": "second owner", "all_access": true, "admin": true}));
    assert_eq!(r.status, 201, "{}", r.body);
    let r = w.owner_write("PUT", "/api/keyring", &json!({"version": 1, "wraps": [{"kind": "passphrase"}]}));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = w.owner_write("PUT", &format!("{}/scopes", e(outside)), &json!({"scopes": []}));
    assert_eq!(r.status, 200, "{}", r.body);

    // The owner enrolls passkeys only for admin agents that exist.
    let mut stray = SoftPasskey::new(true);
    for (agent, status) in [(member_id, 422), (9999, 404)] {
        let r = post_json(&w.s, "/api/passkeys/options", Some(&w.owner.token.clone()), &json!({}));
        let start = r.json();
        let ccr: CreationChallengeResponse = serde_json::from_value(start["options"].clone()).unwrap();
        let cred = stray.do_registration(origin(), ccr).unwrap();
        let body = json!({"registration_id": start["registration_id"], "credential": cred, "agent_id": agent});
        let r = w.owner_write("POST", "/api/passkeys", &body);
        assert_eq!(r.status, status, "passkey for agent {agent}: {}", r.body);
    }

    // Its only passkey cannot be removed (revoke or demote instead), not even by itself.
    let r = lead.write(&w.s, "DELETE", &format!("/api/passkeys/{lead_key_id}"), &Value::Null);
    assert_eq!(r.status, 409, "{}", r.body);
    // Revoked, its passkeys go with it.
    let r = w.owner_write("DELETE", &a(lead_id), &Value::Null);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(w.snapshot().2.iter().all(|(_, _, agent)| *agent != Some(lead_id)), "passkey rows removed");
    assert!(w.passkey_ids(&w.owner.token.clone()).iter().all(|p| p.1 == 1));
    assert_eq!(w.s.get("/api/entries", Some(&lead.token)).status, 401);
    assert!(!w.s.stderr().contains("panicked"));
    let _ = lead.id;
}

#[test]
fn a_break_glass_owner_gets_the_setup_passkey_and_a_scoped_admin_reads_only_its_slice() {
    // The owner made on the command line; its setup link enrolls the passkey for agent 1.
    let v = Vault::new();
    let out = v.cli(&["init"]);
    let code = common::setup_code_in(&String::from_utf8_lossy(&out.stdout)).expect("an enrollment link");
    let s = Server::start_env(&v.dir(), &[], &[("CLAVITOR_TARPIT_HOLD_SECS", "1")]);
    let mut key = SoftPasskey::new(true);
    let r = post_json(&s, "/api/setup/start", None, &json!({"code": code}));
    let start = r.json();
    let ccr: CreationChallengeResponse = serde_json::from_value(start["options"].clone()).unwrap();
    let cred = key.do_registration(origin(), ccr).unwrap();
    let r = post_json(
        &s,
        "/api/setup/finish",
        None,
        &json!({"code": code, "registration_id": start["registration_id"], "credential": cred}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let conn = rusqlite::Connection::open(v.vault_file()).unwrap();
    let owner: i64 = conn.query_row("SELECT agent_id FROM webauthn_credentials", [], |r| r.get(0)).unwrap();
    assert_eq!(owner, 1);
    drop(conn);
    // A scoped admin made with the CLI (it has no passkey yet) reads only its agents.
    let (admin_id, admin_token) = v.add_agent("team admin", &["--admin"]);
    common::eventually("admin known", || s.get("/api/agents", Some(&admin_token)).status == 200);
    let listed = s.get("/api/agents", Some(&admin_token)).json();
    let ids: Vec<i64> = listed["agents"].as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![admin_id]);
    assert!(s.get("/api/passkeys", Some(&admin_token)).json()["passkeys"].as_array().unwrap().is_empty());
    let mut owner = Admin { id: 1, token: v.owner.clone(), key };
    let r = owner.write(&s, "POST", "/api/agents", &json!({"name": "after"}));
    assert_eq!(r.status, 201, "{}", r.body);
    let _ = owner.id;
}
