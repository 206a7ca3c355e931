//! SCIM 2.0 provisioning (issue 16 §4), commercial only, through the real binary: the owner's
//! passkey-gated provisioning token, deprovisioning within one request, and THE RULE: no SCIM
//! request (on any SCIM route, with any attribute) changes what any agent can read; only the
//! owner's approval of a pending membership (a passkey tap) grants a group's scope.
//! `scim2_tester_passes` runs the PyPI scim2-tester (via tests/scim/run.sh, which installs it).
#![cfg(feature = "commercial")]

mod common;
#[path = "common/passkey.rs"]
mod passkey;

use common::{Resp, Server, Vault, request_with, titles};
use passkey::Admin;
use serde_json::{Value, json};

const BASE: &str = "/api/scim/v2";

struct Setup {
    v: Vault,
    s: Server,
    owner: Admin,
    scim: String,
}

/// A commercial node with a roomy license, an owner with a passkey, a provisioning token, an
/// agent "team" (agent 2, scope 0002) and three entries: one for scope 0002, one owner-only, and
/// one for the scope of a provisioned agent's would-be neighbour.
fn setup() -> Setup {
    let v = Vault::uninitialised_owner();
    let (args, env) = common::roomy_license(v.tmp.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, x)| (k.as_str(), x.as_str())).collect();
    env.push(("CLAVITOR_TARPIT_HOLD_SECS", "1"));
    let s = Server::start_env(&v.dir(), &args, &env);
    let mut owner = Admin::owner(&s, &v.setup_code);
    let (team, _) = v.add_agent("team", &[]);
    assert_eq!(team, 2);
    v.add_entry(&json!({"title": "team-secret", "scopes": ["0002"], "fields": [{"name": "pw", "kind": "secret", "value": "s1"}]}));
    v.add_entry(&json!({"title": "owner-only", "fields": [{"name": "pw", "kind": "secret", "value": "s2"}]}));
    common::eventually("entries served", || titles(&s, &owner.token).len() == 2);
    let r = owner.write(&s, "POST", "/api/scim/tokens", &json!({"name": "idp"}));
    assert_eq!(r.status, 201, "{}", r.body);
    let scim = r.json()["token"].as_str().expect("token").to_owned();
    assert!(scim.starts_with("cvs_"));
    Setup { v, s, owner, scim }
}

fn scim(s: &Server, token: &str, method: &str, path: &str, body: Option<&Value>) -> Resp {
    let body = body.map(|b| b.to_string().into_bytes());
    let headers = [("Content-Type", "application/scim+json")];
    request_with(&s.url(&format!("{BASE}{path}")), method, Some(token), &headers, body.as_deref())
}

fn patch(ops: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
}

/// What every agent in the vault is (id, scopes, all_access, admin), as the owner lists them.
fn agents(st: &Setup) -> Vec<Value> {
    let r = st.s.get("/api/agents", Some(&st.owner.token));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| json!([a["id"], a["scopes"], a["all_access"], a["admin"]]))
        .collect()
}

/// The owner issues an agent a token (rotation is a passkey-gated write).
fn issue_token(st: &mut Setup, agent: i64) -> String {
    let r = st.owner.write(&st.s, "PUT", &format!("/api/agents/{agent}"), &json!({"rotate_token": true}));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["token"].as_str().expect("token").to_owned()
}

fn create_user(st: &Setup, name: &str, extra: Value) -> i64 {
    let mut body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name});
    body.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    let r = scim(&st.s, &st.scim, "POST", "/Users", Some(&body));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/scim+json"));
    r.json()["id"].as_str().unwrap().parse().unwrap()
}

#[test]
fn a_provisioned_user_is_a_scoped_agent_with_no_usable_token() {
    let st = setup();
    // Everything an identity provider could try to smuggle in on create.
    let id = create_user(
        &st,
        "alice@example.com",
        json!({"admin": true, "all_access": true, "scopes": ["0002"], "roles": [{"value": "admin"}],
               "entitlements": [{"value": "0002"}], "groups": [{"value": "1"}], "externalId": "ext-1",
               "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "0002"}}),
    );
    let me = agents(&st).into_iter().find(|a| a[0] == id).expect("the agent exists");
    assert_eq!(me, json!([id, [format!("{id:04x}")], false, false]));
    // The token made with it was never shown: nothing authenticates as it yet.
    let r = scim(&st.s, &st.scim, "GET", &format!("/Users/{id}"), None);
    assert_eq!(r.status, 200);
    let u = r.json();
    assert_eq!(u["userName"], "alice@example.com");
    assert_eq!(u["externalId"], "ext-1");
    assert!(u.get("roles").is_none() && u.get("admin").is_none(), "{u}");
    // userName is unique (case-insensitively), and the filter finds it so.
    let dup = scim(&st.s, &st.scim, "POST", "/Users", Some(&json!({"schemas": [], "userName": "ALICE@example.com"})));
    assert_eq!(dup.status, 409, "{}", dup.body);
    assert_eq!(dup.json()["scimType"], "uniqueness");
    let r = scim(&st.s, &st.scim, "GET", "/Users?filter=userName%20eq%20%22Alice%40example.com%22", None);
    assert_eq!(r.json()["totalResults"], 1, "{}", r.body);
    // Searching Users and Groups at once finds the user, and a group, with distinct ids.
    let g = scim(&st.s, &st.scim, "POST", "/Groups", Some(&json!({"displayName": "beef"})));
    assert_eq!(g.status, 201, "{}", g.body);
    let r = scim(
        &st.s,
        &st.scim,
        "POST",
        "/.search",
        Some(&json!({"schemas": [], "attributes": ["userName", "displayName"]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let found = r.json();
    let ids: Vec<String> =
        found["Resources"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, vec![id.to_string(), g.json()["id"].as_str().unwrap().to_owned()]);
    // Pagination: startIndex/count.
    for n in 0..3 {
        create_user(&st, &format!("u{n}"), json!({}));
    }
    let r = scim(&st.s, &st.scim, "GET", "/Users?startIndex=2&count=2", None).json();
    assert_eq!(
        (r["totalResults"].as_i64(), r["startIndex"].as_i64(), r["itemsPerPage"].as_i64()),
        (Some(4), Some(2), Some(2))
    );
    assert_eq!(r["Resources"].as_array().unwrap().len(), 2);
}

#[test]
fn no_scim_request_widens_what_anyone_reads() {
    let mut st = setup();
    let alice = create_user(&st, "alice", json!({}));
    let alice_token = issue_token(&mut st, alice);
    let before = agents(&st);
    let owner_titles = titles(&st.s, &st.owner.token);
    assert!(titles(&st.s, &alice_token).is_empty());
    let u = format!("/Users/{alice}");
    // Every SCIM route, with everything that could name a right or a scope.
    let widen = json!({"admin": true, "all_access": true, "scopes": ["0002"], "roles": [{"value": "owner"}]});
    let attempts: Vec<(&str, String, Option<Value>)> = vec![
        ("PATCH", u.clone(), Some(patch(json!([{"op": "add", "path": "scopes", "value": ["0002"]}])))),
        ("PATCH", u.clone(), Some(patch(json!([{"op": "replace", "value": widen}])))),
        ("PATCH", u.clone(), Some(patch(json!([{"op": "add", "path": "roles", "value": [{"value": "admin"}]}])))),
        ("PUT", u.clone(), Some(json!({"userName": "alice", "admin": true, "all_access": true, "scopes": ["0002"]}))),
        ("POST", "/Users".into(), Some(json!({"userName": "mallory", "admin": true, "all_access": true}))),
        ("POST", "/Groups".into(), Some(json!({"displayName": "0002", "members": [{"value": alice.to_string()}]}))),
        ("POST", "/Groups".into(), Some(json!({"displayName": "0001", "members": [{"value": alice.to_string()}]}))),
        // A scope nobody made: the group stands for nothing.
        ("POST", "/Groups".into(), Some(json!({"displayName": "beef", "members": [{"value": alice.to_string()}]}))),
        // The owner and the team agent are not provisioned users: never members, never changed.
        ("POST", "/Groups".into(), Some(json!({"displayName": "0002", "members": [{"value": "1"}]}))),
        ("PATCH", "/Users/1".into(), Some(patch(json!([{"op": "replace", "path": "active", "value": false}])))),
        ("DELETE", "/Users/2".into(), None),
        ("PUT", "/Users/1".into(), Some(json!({"userName": "owner"}))),
        ("POST", "/Users/.search".into(), Some(json!({"filter": "userName eq \"alice\""}))),
        ("POST", "/.search".into(), Some(json!({}))),
        ("GET", "/Schemas".into(), None),
    ];
    for (method, path, body) in &attempts {
        let r = scim(&st.s, &st.scim, method, path, body.as_ref());
        assert!(r.status < 500 || r.status == 501, "{method} {path}: {} {}", r.status, r.body);
    }
    // Groups: every membership change, on every group created above.
    let groups = scim(&st.s, &st.scim, "GET", "/Groups", None).json();
    for g in groups["Resources"].as_array().unwrap() {
        let gp = format!("/Groups/{}", g["id"].as_str().unwrap());
        let member = json!([{"value": alice.to_string()}]);
        for body in [
            patch(json!([{"op": "add", "path": "members", "value": member}])),
            patch(json!([{"op": "replace", "path": "members", "value": member}])),
            patch(json!([{"op": "replace", "path": "displayName", "value": "0002"}])),
            json!({"displayName": "0002", "members": member}),
        ] {
            let method = if body.get("Operations").is_some() { "PATCH" } else { "PUT" };
            let r = scim(&st.s, &st.scim, method, &gp, Some(&body));
            assert_eq!(r.status, 200, "{method} {gp}: {}", r.body);
        }
    }
    // Nothing changed: no agent gained a scope or a flag, alice reads nothing, the owner's
    // entries (and so their scopes) are as they were; the team agent and the owner are intact.
    let mallory_gone: Vec<Value> = agents(&st).into_iter().filter(|a| before.iter().any(|b| b[0] == a[0])).collect();
    assert_eq!(mallory_gone, before);
    for a in agents(&st) {
        assert!(a[2] == false || a[0] == 1, "all_access: {a}");
        assert!(a[3] == false || a[0] == 1, "admin: {a}");
    }
    assert!(titles(&st.s, &alice_token).is_empty());
    assert_eq!(titles(&st.s, &st.owner.token), owner_titles);
    let r = st.s.get("/api/entries", Some(&st.owner.token)).json();
    let team = r.as_array().unwrap().iter().find(|e| e["title"] == "team-secret").unwrap();
    assert_eq!(team["scopes"], json!(["0002"]));
    // The memberships wait for the owner: listed as pending, granting nothing yet.
    let pending = st.s.get("/api/scim/grants", Some(&st.owner.token)).json()["pending"].clone();
    assert!(pending.as_array().unwrap().iter().any(|p| p["agent_id"] == alice && p["scope"] == "0002"), "{pending}");
    // Approval without a passkey (or by the provisioning token) is refused and changes nothing.
    let ask = json!({"grants": [{"group_id": pending[0]["group_id"], "agent_id": alice}]});
    let r = passkey::post_json(&st.s, "/api/scim/grants", Some(&st.owner.token), &ask);
    assert_eq!(r.status, 403, "{}", r.body);
    let r = passkey::post_json(&st.s, "/api/scim/grants", Some(&st.scim), &ask);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(titles(&st.s, &alice_token).is_empty());
}

#[test]
fn pending_membership_grants_only_after_the_owners_tap_and_removal_takes_it_back() {
    let mut st = setup();
    let alice = create_user(&st, "alice", json!({}));
    let token = issue_token(&mut st, alice);
    let r = scim(
        &st.s,
        &st.scim,
        "POST",
        "/Groups",
        Some(&json!({"displayName": "0002", "members": [{"value": alice.to_string()}]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // Group ids are `g<n>` (unique across all resources, RFC 7643 §3.1); the owner's API uses n.
    let scim_id = r.json()["id"].as_str().unwrap().to_owned();
    let group: i64 = scim_id.strip_prefix('g').expect("g<n>").parse().unwrap();
    assert_eq!(r.json()["members"][0]["value"], alice.to_string());
    assert!(titles(&st.s, &token).is_empty(), "an added membership granted before approval");
    let approve = json!({"grants": [{"group_id": group, "agent_id": alice}]});
    let r = st.owner.write(&st.s, "POST", "/api/scim/grants", &approve);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(titles(&st.s, &token), ["team-secret"]);
    // Approving twice is refused (nothing pending).
    let r = st.owner.write(&st.s, "POST", "/api/scim/grants", &approve);
    assert_eq!(r.status, 422, "{}", r.body);
    // Removing the member takes the scope at once (the very next request).
    let gp = format!("/Groups/{scim_id}");
    let rm = patch(json!([{"op": "remove", "path": format!("members[value eq \"{alice}\"]")}]));
    assert_eq!(scim(&st.s, &st.scim, "PATCH", &gp, Some(&rm)).status, 200);
    assert!(titles(&st.s, &token).is_empty());
    // Added again: pending again, nothing granted; approved; then the group is deleted.
    let add = patch(json!([{"op": "add", "path": "members", "value": [{"value": alice.to_string()}]}]));
    assert_eq!(scim(&st.s, &st.scim, "PATCH", &gp, Some(&add)).status, 200);
    assert!(titles(&st.s, &token).is_empty());
    assert_eq!(st.owner.write(&st.s, "POST", "/api/scim/grants", &approve).status, 200);
    assert_eq!(titles(&st.s, &token), ["team-secret"]);
    let r = scim(&st.s, &st.scim, "DELETE", &gp, None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(titles(&st.s, &token).is_empty());
    assert_eq!(scim(&st.s, &st.scim, "GET", &gp, None).status, 404);
}

#[test]
fn deprovisioning_revokes_within_one_request() {
    let mut st = setup();
    let alice = create_user(&st, "alice", json!({}));
    let bob = create_user(&st, "bob", json!({}));
    let alice_token = issue_token(&mut st, alice);
    let bob_token = issue_token(&mut st, bob);
    // A token alice derived goes with her.
    let r =
        passkey::post_json(&st.s, "/api/tokens/derive", Some(&alice_token), &json!({"name": "child", "ttl_secs": 600}));
    assert_eq!(r.status, 201, "{}", r.body);
    let child = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(st.s.get("/api/entries", Some(&child)).status, 200);
    assert_eq!(st.s.get("/api/entries", Some(&alice_token)).status, 200);
    // Entra's form: replace without a path, "False" as a string.
    let off = patch(json!([{"op": "Replace", "value": {"active": "False"}}]));
    let r = scim(&st.s, &st.scim, "PATCH", &format!("/Users/{alice}"), Some(&off));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["active"], false);
    assert_eq!(st.s.get("/api/entries", Some(&alice_token)).status, 401);
    assert_eq!(st.s.get("/api/entries", Some(&child)).status, 401);
    // Active again: still no usable token until the owner issues one.
    let on = patch(json!([{"op": "replace", "path": "active", "value": true}]));
    assert_eq!(scim(&st.s, &st.scim, "PATCH", &format!("/Users/{alice}"), Some(&on)).status, 200);
    assert_eq!(st.s.get("/api/entries", Some(&alice_token)).status, 401);
    // DELETE revokes too.
    assert_eq!(st.s.get("/api/entries", Some(&bob_token)).status, 200);
    assert_eq!(scim(&st.s, &st.scim, "DELETE", &format!("/Users/{bob}"), None).status, 204);
    assert_eq!(st.s.get("/api/entries", Some(&bob_token)).status, 401);
    assert_eq!(scim(&st.s, &st.scim, "GET", &format!("/Users/{bob}"), None).status, 404);
    assert!(agents(&st).iter().all(|a| a[0] != bob));
}

#[test]
fn tokens_errors_and_methods() {
    let mut st = setup();
    // Only a provisioning token authenticates on SCIM routes; it authenticates nowhere else.
    for token in [st.owner.token.clone(), "cvs_nope".into()] {
        let r = scim(&st.s, &token, "GET", "/Users", None);
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.json()["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    }
    assert_eq!(st.s.get("/api/entries", Some(&st.scim)).status, 401);
    assert_eq!(st.s.get("/api/scim/tokens", Some(&st.scim)).status, 401);
    // A wrong method on a SCIM route is a SCIM 405, not the tarpit.
    for (m, p) in [("POST", "/ServiceProviderConfig"), ("DELETE", "/Users"), ("POST", "/Users/1"), ("PUT", "/Schemas")]
    {
        let r = scim(&st.s, &st.scim, m, p, Some(&json!({})));
        assert_eq!(r.status, 405, "{m} {p}: {}", r.body);
        assert_eq!(r.json()["status"], "405");
    }
    // An unknown path below the SCIM base: a SCIM 404 for the provisioning token, the tarpit
    // (held, then dripped spaces) for anyone else.
    let r = scim(&st.s, &st.scim, "GET", "/Nothing", None);
    assert_eq!((r.status, r.json()["status"].as_str()), (404, Some("404")), "{}", r.body);
    let r = scim(&st.s, &st.owner.token, "GET", "/Nothing", None);
    assert!(r.status == 404 && r.body.starts_with(' '), "{}", r.body);
    let r = common::request(&st.s.url("/api/scim/v2Nothing"), "GET", Some(&st.scim), None);
    assert!(r.status == 404 && r.body.starts_with(' '), "outside the base: {}", r.body);
    // Bad input: a SCIM error, nothing created.
    let r = scim(&st.s, &st.scim, "POST", "/Users", Some(&json!({"displayName": "no userName"})));
    assert_eq!((r.status, r.json()["scimType"].as_str()), (400, Some("invalidValue")), "{}", r.body);
    let r = scim(&st.s, &st.scim, "GET", "/Users?filter=userName%20co%20%22a%22", None);
    assert_eq!((r.status, r.json()["scimType"].as_str()), (400, Some("invalidFilter")), "{}", r.body);
    // The owner lists and revokes tokens (passkey); a revoked token stops at once.
    let listed = st.s.get("/api/scim/tokens", Some(&st.owner.token)).json();
    let id = listed["tokens"][0]["id"].as_i64().unwrap();
    assert!(!listed.to_string().contains(&st.scim[10..]), "the token's value is listed");
    let r = st.owner.write(&st.s, "DELETE", &format!("/api/scim/tokens/{id}"), &Value::Null);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(scim(&st.s, &st.scim, "GET", "/Users", None).status, 401);
    // Creating a token needs the passkey.
    let r = passkey::post_json(&st.s, "/api/scim/tokens", Some(&st.owner.token), &json!({"name": "x"}));
    assert_eq!(r.status, 403, "{}", r.body);
    let _ = &st.v;
}

/// The PyPI conformance suite (scim2-tester through scim2-cli's `scim test`) against the real
/// server; every check it runs for the discovery endpoints, Users and Groups must pass. Run by
/// tests/scim/run.sh, which installs the pinned packages and sets CLAVITOR_SCIM_CLI.
#[test]
#[ignore = "needs the scim2-cli venv: run tests/scim/run.sh"]
fn scim2_tester_passes() {
    let cli = std::env::var("CLAVITOR_SCIM_CLI").expect("CLAVITOR_SCIM_CLI: the scim2-cli `scim` executable");
    let st = setup();
    let out = std::process::Command::new(cli)
        .args(["--url", &st.s.url(BASE), "test", "--verbose"])
        .env("SCIM_CLI_HEADERS", format!("Authorization: Bearer {}", st.scim))
        .output()
        .expect("run scim test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    let ran = lines.iter().filter(|l| l.starts_with("SUCCESS ")).count();
    let failed: Vec<&&str> =
        lines.iter().filter(|l| ["ERROR", "CRITICAL", "DEVIATION"].iter().any(|s| l.starts_with(s))).collect();
    assert!(failed.is_empty(), "failed checks: {failed:?}");
    assert!(ran >= 30, "only {ran} checks passed: {stdout}");
    assert!(!st.s.stderr().contains("panicked"));
}
