//! Issue 18 as the owner and the agents see it, against the real server: inject rules written
//! through the operator CLI and the passkey-gated API, inject-only entries whose values no
//! route hands out (API, TOTP, `clavitor get`, `clavitor run`), the per-agent flag
//! `proxy_only_listed` (stored, MACed, shown, inherited by derived tokens), and agents' access
//! requests, which grant nothing until the owner writes a rule with a passkey.

mod common;
#[path = "common/passkey.rs"]
mod passkey;

use std::process::{Command, Output, Stdio};

use common::{BIN, Resp, Server, Vault, eventually, request};
use passkey::{Admin, post_json};
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;

const KEY: &str = "sk-live-Inject-0nly-93xq";
const USER: &str = "robot-user-77";
/// RFC 6238's SHA-1 secret, base32.
const TOTP_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

fn rule() -> Value {
    json!({"host": "api.example.test", "path_prefix": "/v1/", "methods": ["GET", "POST"],
           "place": {"kind": "header", "name": "Authorization", "template": "Bearer {{api_key}}"}})
}

fn inject_only_entry(scope: &str) -> Value {
    json!({
        "title": "Model API", "type": "api", "url": "https://api.example.test", "scopes": [scope],
        "fields": [
            {"name": "api_key", "kind": "secret", "value": KEY},
            {"name": "user", "kind": "text", "value": USER},
            {"name": "otp", "kind": "totp", "value": TOTP_SECRET},
        ],
        "inject": [rule(), {"host": "*.example.test", "place": {"kind": "basic", "username_field": "user", "password_field": "api_key"}}],
        "inject_only": true,
    })
}

/// `clavitor ARGS` as an agent (its token in the environment, the server's URL).
fn agent_cli(s: &Server, token: &str, args: &[&str]) -> Output {
    let home = tempfile::tempdir().expect("home");
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("CLAVITOR_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .env("HOME", home.path())
        .env("CLAVITOR_URL", format!("http://{}", s.addr))
        .env("CLAVITOR_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .expect("run clavitor")
}

fn no_value(r: &Resp) {
    assert!(!r.body.contains(KEY) && !r.body.contains(USER), "a value leaked: {}", r.body);
}

#[test]
fn no_route_hands_out_an_inject_only_value_to_any_token() {
    let v = Vault::new();
    let (agent, token) = v.add_agent("model", &[]);
    let own = format!("{agent:04x}");
    let id = v.add_entry(&inject_only_entry(&own));
    let plain = v.add_entry(&json!({"title": "Plain", "scopes": [own], "inject": [rule()],
        "fields": [{"name": "api_key", "kind": "secret", "value": "sk-plain-value-1"}]}));
    let s = v.serve();

    for t in [&token, &v.owner] {
        // The full view: names, kinds, tiers and the rules; no value.
        let r = s.get(&format!("/api/entries/{id}"), Some(t));
        assert_eq!(r.status, 200, "{}", r.body);
        no_value(&r);
        let e = r.json();
        assert_eq!(e["inject_only"], true, "{e}");
        let fields: Vec<(String, String, String)> = e["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                assert!(f.get("value").is_none() && f.get("ciphertext").is_none(), "{f}");
                (
                    f["name"].as_str().unwrap().into(),
                    f["kind"].as_str().unwrap().into(),
                    f["tier"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(
            fields,
            [("api_key", "secret", "l1"), ("user", "text", "l1"), ("otp", "totp", "l1")].map(|(a, b, c)| (
                a.to_owned(),
                b.to_owned(),
                c.to_owned()
            ))
        );
        assert_eq!(e["inject"][0], rule(), "{e}");
        assert_eq!(e["inject"][1]["place"]["kind"], "basic", "{e}");

        // Metadata routes never carried values; still none.
        for path in ["/api/entries", "/api/search?q=model"] {
            let r = s.get(path, Some(t));
            assert_eq!(r.status, 200, "{}", r.body);
            no_value(&r);
            assert!(r.body.contains("Model API"), "{}", r.body);
        }
        // No code from the seed of an inject-only entry either.
        let r = s.get(&format!("/api/ext/totp/{id}"), Some(t));
        assert_eq!((r.status, r.json()["reason"].as_str()), (403, Some("inject_only")), "{}", r.body);
        no_value(&r);
    }
    // An entry with rules that is not inject-only shows its values and its rules.
    let r = s.get(&format!("/api/entries/{plain}"), Some(&token));
    assert!(r.body.contains("sk-plain-value-1"), "{}", r.body);
    assert_eq!(r.json()["inject"][0], rule());
    assert!(r.json().get("inject_only").is_none(), "{}", r.body);

    // The agent-side CLI refuses with a pointer to the proxy; no value on either stream.
    let reference = format!("clavitor://{id}/api_key");
    for args in [
        vec!["get", "clavitor://Model API/api_key"],
        vec!["get", reference.as_str()],
        vec!["get", "clavitor://Model API/user", "--json"],
        vec!["totp", "clavitor://Model API"],
        vec!["run", "--", "printenv", "K"],
    ] {
        let mut cmd_args = args.clone();
        let env_file;
        if args[0] == "run" {
            env_file = v.tmp.path().join("env");
            std::fs::write(&env_file, format!("K={reference}\n")).unwrap();
            cmd_args = vec!["run", "--env-file", env_file.to_str().unwrap(), "--", "printenv", "K"];
        }
        let out = agent_cli(&s, &token, &cmd_args);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{args:?}: {stdout}");
        assert!(stderr.contains("inject-only"), "{args:?}: {stderr}");
        assert!(!stdout.contains(KEY) && !stderr.contains(KEY) && !stdout.contains(USER), "{args:?}");
    }

    // Every refusal is audited: the TOTP route as denied, the reads as what they were (a read
    // of names and rules).
    let rows = v.audit_rows(false);
    assert!(
        rows.iter().any(|r| r["action"] == "totp.read"
            && r["outcome"] == "denied"
            && r["entry_id"] == id
            && r["agent_id"] == agent
            && r["detail"] == "inject_only"),
        "{rows:?}"
    );
}

#[test]
fn rules_are_validated_on_every_write_path() {
    let v = Vault::uninitialised_owner();
    let s = v.serve();
    let mut owner = Admin::owner(&s, &v.setup_code);
    let good = inject_only_entry("00aa");
    let r = owner.write(&s, "POST", "/api/entries", &good);
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_i64().expect("id");
    let e = s.get(&format!("/api/entries/{id}"), Some(&owner.token)).json();
    assert_eq!(e["inject"].as_array().map(Vec::len), Some(2), "{e}");

    let bad_rules = [
        json!([{"host": "https://api.example.test", "place": {"kind": "header", "name": "X-Key", "template": "{{api_key}}"}}]),
        json!([{"host": "api.example.test", "place": {"kind": "header", "name": "Host", "template": "{{api_key}}"}}]),
        json!([{"host": "api.example.test", "place": {"kind": "header", "name": "Proxy-Authorization", "template": "{{api_key}}"}}]),
        json!([{"host": "api.example.test", "place": {"kind": "header", "name": "X-Key", "template": "{{nope}}"}}]),
        json!([{"host": "api.example.test", "place": {"kind": "query", "param": "key", "field": "otp"}}]),
        json!([{"host": "api.example.test", "path_prefix": "v1", "place": {"kind": "query", "param": "key", "field": "api_key"}}]),
        json!([{"host": "*.test", "place": {"kind": "query", "param": "key", "field": "api_key"}}]),
        json!([{"host": "api.example.test", "place": {"kind": "smoke"}}]),
        json!(vec![rule(); 17]),
    ];
    for rules in &bad_rules {
        let mut body = good.clone();
        body["inject"] = rules.clone();
        let r = owner.write(&s, "PUT", &format!("/api/entries/{id}"), &body);
        assert!(matches!(r.status, 400 | 422), "{rules}: {} {}", r.status, r.body);
        assert!(r.json()["error"].is_string(), "{}", r.body);
        // The operator CLI refuses the same, for one entry and in an import (which then
        // imports nothing, not even the good line).
        let out = v.cli_stdin(&["entry", "add", "--json-file", "-"], Some(&body.to_string()));
        assert!(!out.status.success(), "CLI took {rules}");
        let lines = format!("{good}\n{body}\n");
        let out = v.cli_stdin(&["entry", "import", "--file", "-"], Some(&lines));
        assert!(!out.status.success(), "import took {rules}");
    }
    let e2 = s.get(&format!("/api/entries/{id}"), Some(&owner.token)).json();
    assert_eq!(e, e2, "refused writes changed nothing");
    let listed = v.cli_json(&["entry", "list", "--json"], None);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "nothing was added or imported: {listed}");
    // A good import carries the rules and the flag.
    let out = v.cli_stdin(&["entry", "import", "--file", "-"], Some(&format!("{good}\n")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let imported = v.cli_json(&["entry", "list", "--json"], None);
    let new_id = imported.as_array().unwrap().iter().filter_map(|e| e["id"].as_i64()).max().unwrap();
    eventually("the import is served", || s.get(&format!("/api/entries/{new_id}"), Some(&owner.token)).status == 200);
    let ie = s.get(&format!("/api/entries/{new_id}"), Some(&owner.token)).json();
    assert_eq!((ie["inject"].clone(), ie["inject_only"].clone()), (e["inject"].clone(), json!(true)), "{ie}");

    // Lifting inject-only is an ordinary passkey-gated write (with the values re-entered).
    let mut lifted = good.clone();
    lifted["inject_only"] = json!(false);
    let r = owner.write(&s, "PUT", &format!("/api/entries/{id}"), &lifted);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(s.get(&format!("/api/entries/{id}"), Some(&owner.token)).body.contains(KEY));
    // Without a passkey, nothing changes.
    let r =
        request(&s.url(&format!("/api/entries/{id}")), "PUT", Some(&owner.token), Some(good.to_string().as_bytes()));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(s.get(&format!("/api/entries/{id}"), Some(&owner.token)).body.contains(KEY));
}

fn whoami(s: &Server, token: &str) -> Value {
    let r = s.get("/api/whoami", Some(token));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn listed(s: &Server, admin: &str, id: i64) -> Value {
    let list = s.get("/api/agents", Some(admin)).json();
    list["agents"].as_array().unwrap().iter().find(|a| a["id"] == id).cloned().expect("listed")
}

#[test]
fn proxy_only_listed_is_set_by_cli_and_passkey_shown_and_inherited() {
    let v = Vault::uninitialised_owner();
    let s = v.serve();
    let mut owner = Admin::owner(&s, &v.setup_code);
    let (plain, plain_token) = v.add_agent("plain", &[]);
    let (strict, strict_token) = v.add_agent("strict", &["--proxy-only-listed"]);
    eventually("the agents are known", || s.get("/api/whoami", Some(&strict_token)).status == 200);
    assert_eq!(whoami(&s, &plain_token)["proxy_only_listed"], false);
    assert_eq!(whoami(&s, &strict_token)["proxy_only_listed"], true);
    assert_eq!(listed(&s, &owner.token, strict)["proxy_only_listed"], true);
    let cli = v.cli_json(&["agent", "list", "--json"], None);
    assert!(cli.as_array().unwrap().iter().any(|a| a["id"] == strict && a["proxy_only_listed"] == true), "{cli}");

    // A derived token of a restricted agent is restricted, at any depth.
    // Each level asks for less time than its parent has left: a child may not outlive its parent,
    // and a second can pass between two derivations.
    let derive = |t: &str, ttl_secs: u64| {
        let r = post_json(&s, "/api/tokens/derive", Some(t), &json!({"name": "sub", "ttl_secs": ttl_secs}));
        assert_eq!(r.status, 201, "{}", r.body);
        (r.json()["token"].as_str().unwrap().to_owned(), r.json())
    };
    let (child, body) = derive(&strict_token, 600);
    assert_eq!(body["proxy_only_listed"], true, "{body}");
    let (grandchild, _) = derive(&child, 300);
    assert_eq!(whoami(&s, &grandchild)["proxy_only_listed"], true);

    // Set later on a parent: its existing children are restricted from then on.
    let (free_child, body) = derive(&plain_token, 600);
    assert_eq!(body["proxy_only_listed"], false);
    let r = request(
        &s.url(&format!("/api/agents/{plain}")),
        "PATCH",
        Some(&owner.token),
        Some(br#"{"proxy_only_listed":true}"#),
    );
    assert_eq!(r.status, 403, "a gated change: {}", r.body);
    assert_eq!(whoami(&s, &plain_token)["proxy_only_listed"], false);
    let r = owner.write(&s, "PATCH", &format!("/api/agents/{plain}"), &json!({"proxy_only_listed": true}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["agent"]["proxy_only_listed"], true);
    assert_eq!(whoami(&s, &plain_token)["proxy_only_listed"], true);
    assert_eq!(whoami(&s, &free_child)["proxy_only_listed"], true, "inherited from the parent");
    let r = owner.write(&s, "PATCH", &format!("/api/agents/{plain}"), &json!({"proxy_only_listed": false}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(whoami(&s, &free_child)["proxy_only_listed"], false);

    // Created restricted through the API.
    let r = owner.write(&s, "POST", "/api/agents", &json!({"name": "api-made", "proxy_only_listed": true}));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["agent"]["proxy_only_listed"], true);

    // A scoped admin cannot lift its own restriction (the owner can).
    let (team_admin, team_token) = v.add_agent("team admin", &["--admin", "--proxy-only-listed"]);
    let mut lead = Admin { token: team_token, key: webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true) };
    enroll(&s, &mut owner, &mut lead, team_admin);
    let r = lead.write(&s, "PATCH", &format!("/api/agents/{team_admin}"), &json!({"proxy_only_listed": false}));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["reason"], "scoped_admin_cannot_lift_its_own_proxy_restriction");
    assert_eq!(whoami(&s, &lead.token)["proxy_only_listed"], true);
    let r = owner.write(&s, "PATCH", &format!("/api/agents/{team_admin}"), &json!({"proxy_only_listed": false}));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_proxy_restricted_admin_hands_out_only_proxy_restricted_agents() {
    // Few agents, so the commercial edition's unlicensed cap (5 per vault) is not what answers.
    let v = Vault::uninitialised_owner();
    let s = v.serve();
    let mut owner = Admin::owner(&s, &v.setup_code);
    let (team_admin, team_token) = v.add_agent("team admin", &["--admin", "--proxy-only-listed"]);
    let mut lead = Admin { token: team_token, key: webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true) };
    enroll(&s, &mut owner, &mut lead, team_admin);
    // A scoped admin hands out no more than it holds: every agent it makes is restricted too,
    // and it cannot lift the restriction of one it manages.
    let before = s.get("/api/agents", Some(&owner.token)).json()["agents"].as_array().unwrap().len();
    let r = lead.write(&s, "POST", "/api/agents", &json!({"name": "unrestricted"}));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["reason"], "proxy_restricted_admin_cannot_grant_unrestricted_proxy");
    assert_eq!(s.get("/api/agents", Some(&owner.token)).json()["agents"].as_array().unwrap().len(), before);
    let r = lead.write(&s, "POST", "/api/agents", &json!({"name": "restricted", "proxy_only_listed": true}));
    assert_eq!(r.status, 201, "{}", r.body);
    let made = r.json()["agent"]["id"].as_i64().unwrap();
    let r = lead.write(&s, "PATCH", &format!("/api/agents/{made}"), &json!({"proxy_only_listed": false}));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["reason"], "proxy_restricted_admin_cannot_grant_unrestricted_proxy");
    assert_eq!(listed(&s, &owner.token, made)["proxy_only_listed"], true);
}

/// The owner enrolls a fresh passkey for admin agent `id` (the options are asked with the
/// owner's token; the passkey is registered for `id`).
fn enroll(s: &Server, owner: &mut Admin, who: &mut Admin, id: i64) {
    let r = post_json(s, "/api/passkeys/options", Some(&owner.token), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let start = r.json();
    let ccr = serde_json::from_value(start["options"].clone()).expect("options");
    let cred = who.key.do_registration(passkey::origin(), ccr).expect("registers");
    let body = json!({"registration_id": start["registration_id"], "name": format!("agent {id}"),
        "credential": cred, "agent_id": id});
    let r = owner.write(s, "POST", "/api/passkeys", &body);
    assert_eq!(r.status, 201, "enroll agent {id}: {}", r.body);
}

fn ask(s: &Server, token: &str, host: &str, reason: &str) -> Resp {
    post_json(s, "/api/proxy/requests", Some(token), &json!({"host": host, "reason": reason}))
}

fn pending(s: &Server, admin: &str) -> Vec<Value> {
    let r = s.get("/api/proxy/requests", Some(admin));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["requests"].as_array().cloned().unwrap_or_default()
}

#[test]
fn access_requests_are_bounded_seen_by_admins_and_grant_nothing() {
    let v = Vault::uninitialised_owner();
    let s = v.serve();
    let mut owner = Admin::owner(&s, &v.setup_code);
    let (agent, token) = v.add_agent("model", &["--scopes", "00aa"]);
    let (other, other_token) = v.add_agent("outsider", &["--scopes", "00bb"]);
    eventually("the agents are known", || s.get("/api/whoami", Some(&other_token)).status == 200);
    let before = s.get("/api/entries", Some(&token)).json();
    let me_before = whoami(&s, &token);

    let r = ask(&s, &token, "API.NewThing.test", "to call the new model");
    assert_eq!(r.status, 201, "{}", r.body);
    let first = r.json();
    assert_eq!(
        (first["host"].as_str(), first["status"].as_str(), first["new"].as_bool()),
        (Some("api.newthing.test"), Some("pending"), Some(true))
    );
    // The same host again updates the reason, adds no row.
    let r = ask(&s, &token, "api.newthing.test", "still needed");
    assert_eq!((r.status, r.json()["id"].clone(), r.json()["new"].clone()), (201, first["id"].clone(), json!(false)));
    assert_eq!(ask(&s, &other_token, "*.other.test", "").status, 201);

    // Bad input: a clear 4xx with a JSON body, nothing stored.
    for (body, ct) in [
        (json!({"host": "https://api.newthing.test"}), "application/json"),
        (json!({"host": "api.newthing.test:443"}), "application/json"),
        (json!({"host": "*.test"}), "application/json"),
        (json!({"host": "a.test", "reason": "x".repeat(501)}), "application/json"),
        (json!({"host": "a.test", "reason": "bell\u{7}"}), "application/json"),
        (json!({"host": "a.test", "grant": true}), "application/json"),
        (json!({"host": "a.test"}), "text/plain"),
    ] {
        let r = common::request_with(
            &s.url("/api/proxy/requests"),
            "POST",
            Some(&token),
            &[("Content-Type", ct)],
            Some(body.to_string().as_bytes()),
        );
        assert!((400..500).contains(&r.status), "{body}: {} {}", r.status, r.body);
        assert!(r.json()["error"].is_string(), "{}", r.body);
    }
    assert_eq!(post_json(&s, "/api/proxy/requests", None, &json!({"host": "a.test"})).status, 401);

    // At most 20 pending per agent.
    for i in 1..20 {
        assert_eq!(ask(&s, &token, &format!("h{i}.example.test"), "").status, 201, "request {i}");
    }
    let r = ask(&s, &token, "one-too-many.example.test", "");
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.json()["message"].as_str().unwrap_or_default().contains("20"), "{}", r.body);

    // Only admins list them; the owner sees all, with the agent's name.
    assert_eq!(s.get("/api/proxy/requests", Some(&token)).status, 403);
    let all = pending(&s, &owner.token);
    assert_eq!(all.len(), 21, "{all:?}");
    assert_eq!((all[0]["agent_id"].as_i64(), all[0]["agent_name"].as_str()), (Some(agent), Some("model")));
    assert_eq!(all[0]["reason"], "still needed");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let asked = all[0]["created_at"].as_i64().unwrap_or_default();
    assert!((now - 60..=now + 1).contains(&asked), "created_at is unix seconds: {asked}");
    // A scoped admin sees only the requests of agents it lists.
    let (lead_id, lead_token) = v.add_agent("lead", &["--admin", "--scopes", "00aa"]);
    let mut lead = Admin { token: lead_token, key: webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true) };
    enroll(&s, &mut owner, &mut lead, lead_id);
    let seen = pending(&s, &lead.token);
    assert!(!seen.is_empty() && seen.iter().all(|r| r["agent_id"] == agent), "{seen:?}");
    let outsiders = all.iter().find(|r| r["agent_id"] == other).expect("the outsider's request").clone();
    let r = lead.write(&s, "DELETE", &format!("/api/proxy/requests/{}", outsiders["id"]), &Value::Null);
    assert_eq!(r.status, 403, "{}", r.body);

    // A request grants nothing: the agent sees what it saw before.
    assert_eq!(s.get("/api/entries", Some(&token)).json(), before);
    assert_eq!(whoami(&s, &token), me_before);

    // Dismissing is a passkey-gated write, audited.
    let id = first["id"].as_i64().unwrap();
    let path = format!("/api/proxy/requests/{id}");
    let r = request(&s.url(&path), "DELETE", Some(&owner.token), None);
    assert_eq!(r.status, 403, "{}", r.body);
    let r = owner.write(&s, "DELETE", &path, &Value::Null);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["host"], "api.newthing.test");
    assert_eq!(owner.write(&s, "DELETE", &path, &Value::Null).status, 404);
    assert_eq!(pending(&s, &owner.token).len(), 20);
    let rows = v.audit_rows(false);
    for (action, who) in [("proxy.request", agent), ("proxy.request_dismiss", 1), ("proxy.request_list", 1)] {
        assert!(
            rows.iter().any(|r| r["action"] == action && r["agent_id"] == who && r["outcome"] == "ok"),
            "{action}: {rows:?}"
        );
    }
    assert!(rows.iter().any(|r| r["action"] == "proxy.request" && r["outcome"] == "failed"), "refusals are audited");

    // Revoking an agent takes its requests with it.
    let r = owner.write(&s, "DELETE", &format!("/api/agents/{agent}"), &Value::Null);
    assert_eq!(r.status, 200, "{}", r.body);
    let left = pending(&s, &owner.token);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["agent_id"], other);
}
