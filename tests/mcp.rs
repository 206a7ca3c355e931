//! `clavitor mcp` against the real server: the binary is spawned as a child process and driven
//! over its stdio by rmcp's own client (initialize, tools/list, each tool's call); the Streamable
//! HTTP transport is probed with raw requests. The vault's audit log shows every read.

mod common;
#[path = "common/passkey.rs"]
mod passkey;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Server, Vault, eventually, request_with};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

const PASSWORD: &str = "pw-Zq8-unique-41";
const MASK: &str = "<concealed by clavitor>";
/// RFC 6238's SHA-1 secret ("12345678901234567890"), base32.
const TOTP_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

type Client = RunningService<RoleClient, ()>;

struct Fixture {
    v: Vault,
    s: Server,
    agent: i64,
    token: String,
    login: i64,
}

/// A vault with an agent that sees a login and a TOTP entry, and an owner-only entry it must not.
fn fixture() -> Fixture {
    let v = Vault::new();
    let (agent, token) = v.add_agent("model", &[]);
    let own = format!("{agent:04x}");
    let login = v.add_entry(&json!({
        "title": "Deploy DB", "type": "login", "url": "https://db.example", "scopes": [own],
        "fields": [{"name": "username", "kind": "text", "value": "deployer"},
                   {"name": "password", "kind": "secret", "value": PASSWORD}]
    }));
    let uri = format!("otpauth://totp/Mail:bot?secret={TOTP_SECRET}&algorithm=SHA1&digits=6&period=30");
    v.add_entry(
        &json!({"title": "Mail 2FA", "scopes": [own], "fields": [{"name": "otp", "kind": "totp", "value": uri}]}),
    );
    v.add_entry(&json!({"title": "Hidden Root", "scopes": [], "fields": [{"name": "password", "kind": "secret", "value": "owner-only-77"}]}));
    let s = v.serve();
    Fixture { v, s, agent, token, login }
}

/// Spawns `clavitor mcp` with the token in its environment and connects rmcp's client to it.
/// Its stderr (logging at `trace`, the most it can) goes to `log`.
async fn connect(s: &Server, token: &str, extra: &[&str], log: &Path) -> Client {
    let mut cmd = tokio::process::Command::new(common::BIN);
    cmd.arg("mcp").arg("--url").arg(s.url("")).args(extra);
    cmd.env("CLAVITOR_TOKEN", token).env("CLAVITOR_LOG", "trace").env_remove("CLAVITOR_TOKEN_FILE");
    let stderr = std::fs::File::create(log).expect("log file");
    let (transport, _) = TokioChildProcess::builder(cmd).stderr(stderr).spawn().expect("spawn clavitor mcp");
    tokio::time::timeout(Duration::from_secs(30), ().serve(transport))
        .await
        .expect("initialize within 30 s")
        .expect("initialize")
}

/// The MCP server's log holds no token, none of the given values, and none of rmcp's debug
/// dumps of whole messages (which would carry a revealed value).
fn assert_clean_log(log: &Path, token: &str, values: &[&str]) {
    let text = std::fs::read_to_string(log).expect("log");
    assert!(text.contains("initialized"), "the log is written at all: {text}");
    assert!(!text.contains(&token[4..]), "token in the log");
    for v in values {
        assert!(!text.contains(v), "value {v:?} in the log");
    }
    assert!(!text.contains("response message") && !text.contains("received request"), "rmcp debug in the log");
}

/// Calls a tool; returns (is_error, the text of its first content block). A protocol error
/// (e.g. an unknown tool) is `Err`.
async fn call(c: &Client, name: &str, args: Value) -> Result<(bool, String), String> {
    let params =
        CallToolRequestParams::new(name.to_owned()).with_arguments(args.as_object().cloned().unwrap_or_default());
    let result = tokio::time::timeout(Duration::from_secs(60), c.call_tool(params))
        .await
        .expect("tool answers within 60 s")
        .map_err(|e| e.to_string())?;
    let v = serde_json::to_value(&result).expect("result JSON");
    let text = v["content"][0]["text"].as_str().unwrap_or_default().to_owned();
    Ok((result.is_error == Some(true), text))
}

fn totp_at(t: u64) -> String {
    let bytes = totp_rs::Secret::Encoded(TOTP_SECRET.to_owned()).to_bytes().unwrap();
    totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes, None, String::new()).generate(t)
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn agent_rows(rows: Vec<Value>, agent: i64) -> Vec<Value> {
    rows.into_iter().filter(|r| r["agent_id"] == agent).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_tools_reveal_metadata_codes_and_no_values() {
    let f = fixture();
    let log = f.v.tmp.path().join("mcp.log");
    let c = connect(&f.s, &f.token, &[], &log).await;
    let info = c.peer_info().expect("server info");
    assert_eq!(info.server_info.as_ref().map(|i| i.name.as_str()), Some("clavitor"));

    let tools = c.list_all_tools().await.expect("tools/list");
    let names: BTreeSet<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["get_field", "get_totp", "list_entries", "search_entries"]),
        "run_with_secrets is off by default"
    );
    let desc = |n: &str| {
        tools.iter().find(|t| t.name == n).and_then(|t| t.description.as_deref()).unwrap_or_default().to_owned()
    };
    assert!(desc("list_entries").contains("metadata only"), "{}", desc("list_entries"));
    assert!(desc("search_entries").contains("metadata only"));
    assert!(desc("get_totp").contains("never the TOTP seed"));
    assert!(desc("get_field").contains("ONLY if") && desc("get_field").contains("reveal_to_model"));

    let (err, text) = call(&c, "list_entries", json!({})).await.unwrap();
    assert!(!err, "{text}");
    let listed: Vec<Value> = serde_json::from_str(&text).expect("list is JSON");
    let titles: BTreeSet<&str> = listed.iter().filter_map(|e| e["title"].as_str()).collect();
    assert_eq!(titles, BTreeSet::from(["Deploy DB", "Mail 2FA"]), "scope-filtered");
    assert!(!text.contains(PASSWORD) && !text.contains(TOTP_SECRET), "metadata only: {text}");

    let (err, text) = call(&c, "search_entries", json!({"query": "deploy"})).await.unwrap();
    assert!(!err, "{text}");
    let hits: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["id"], f.login);
    assert!(!text.contains(PASSWORD));

    let before = now();
    let (err, text) = call(&c, "get_totp", json!({"entry": "Mail 2FA"})).await.unwrap();
    let after = now();
    assert!(!err, "{text}");
    let code: Value = serde_json::from_str(&text).unwrap();
    let code = code["code"].as_str().unwrap().to_owned();
    assert!(code == totp_at(before) || code == totp_at(after), "{code} is not the current code");
    assert!(!text.contains(TOTP_SECRET), "never the seed");
    // The vault's own refusal comes back as a tool error with its message.
    let (err, text) = call(&c, "get_totp", json!({"entry": f.login.to_string()})).await.unwrap();
    assert!(err && text.contains("no TOTP field"), "{text}");

    // Refused without reveal_to_model, with the way to use the value instead; nothing read.
    let (err, text) = call(&c, "get_field", json!({"entry": "Deploy DB", "field": "password"})).await.unwrap();
    assert!(err, "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(
        text.contains("reveal_to_model") && text.contains("PASSWORD='clavitor://Deploy DB/password' clavitor run -- "),
        "{text}"
    );
    let (err, text) = call(&c, "get_field", json!({"entry": "Hidden Root", "field": "password"})).await.unwrap();
    assert!(err && !text.contains("owner-only-77"), "{text}");
    // Not listed, so not callable.
    let unknown = call(&c, "run_with_secrets", json!({"command": "printenv", "args": [], "env": {}})).await;
    assert!(unknown.as_ref().map(|(err, _)| *err).unwrap_or(true), "{unknown:?}");

    let has = |rows: &[Value], action: &str, outcome: &str| {
        rows.iter().any(|r| r["agent_id"] == f.agent && r["action"] == action && r["outcome"] == outcome)
    };
    let rows = f.v.audit_rows_when(false, "the agent's list, search and code reads", |rows| {
        has(rows, "entry.list", "ok")
            && has(rows, "entry.search", "ok")
            && has(rows, "totp.read", "ok")
            && has(rows, "totp.read", "failed")
    });
    let rows = agent_rows(rows, f.agent);
    assert!(!rows.iter().any(|r| r["action"] == "entry.read"), "a refused get_field reads nothing: {rows:?}");

    // Revoked: the vault's 401 comes back as a tool error, and the server keeps serving.
    let out = f.v.cli(&["agent", "revoke", &f.agent.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut last = String::new();
    for _ in 0..100 {
        let (err, text) = call(&c, "list_entries", json!({})).await.unwrap();
        if err {
            last = text;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(last.contains("refused the token"), "{last:?}");
    assert!(!last.contains(&f.token[4..]), "no token in errors");
    c.cancel().await.expect("close");
    assert_clean_log(&log, &f.token, &[PASSWORD, TOTP_SECRET]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_secrets_only_when_allowed_and_masked() {
    let f = fixture();
    let log = f.v.tmp.path().join("mcp.log");
    let c =
        connect(&f.s, &f.token, &["--allow-run", "printenv", "--allow-run", "sleep", "--run-timeout", "3"], &log).await;
    let tools = c.list_all_tools().await.expect("tools/list");
    let run = tools.iter().find(|t| t.name == "run_with_secrets").expect("listed with --allow-run");
    assert!(run.description.as_deref().unwrap_or_default().contains("`printenv`"), "{run:?}");

    // The value reaches the program (printenv prints it) and comes back masked.
    let env = json!({"DB_PASSWORD": "clavitor://Deploy DB/password"});
    let (err, text) = call(&c, "run_with_secrets", json!({"command": "printenv", "args": ["DB_PASSWORD"], "env": env}))
        .await
        .unwrap();
    assert!(!err, "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    let out: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (out["stdout"].as_str().unwrap(), out["exit_code"].as_i64().unwrap()),
        (format!("{MASK}\n").as_str(), 0),
        "{text}"
    );
    f.v.audit_rows_when(false, "the agent's read", |rows| {
        rows.iter().any(|r| {
            r["agent_id"] == f.agent && r["action"] == "entry.read" && r["outcome"] == "ok" && r["entry_id"] == f.login
        })
    });

    // The child does not get the token; the exit code is the program's.
    let (err, text) =
        call(&c, "run_with_secrets", json!({"command": "printenv", "args": ["CLAVITOR_TOKEN"]})).await.unwrap();
    assert!(!err, "{text}");
    let out: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((out["stdout"].as_str().unwrap(), out["exit_code"].as_i64().unwrap()), ("", 1), "{text}");

    // Refusals: a command not on the list (exact match only), plain values, loader variables.
    for (cmd, env) in [
        ("/bin/sh", json!({})),
        ("/usr/bin/printenv", json!({})),
        ("printenv ", json!({})),
        ("printenv", json!({"X": "plain"})),
        ("printenv", json!({"LD_PRELOAD": "clavitor://Deploy DB/password"})),
        ("printenv", json!({"PATH": "clavitor://Deploy DB/password"})),
    ] {
        let (err, text) = call(&c, "run_with_secrets", json!({"command": cmd, "args": [], "env": env})).await.unwrap();
        assert!(err && text.starts_with("Refused"), "{cmd} {env}: {text}");
    }
    // A reference the vault cannot resolve: the vault's message, nothing run.
    let env = json!({"X": "clavitor://Deploy DB/nope"});
    let (err, text) = call(&c, "run_with_secrets", json!({"command": "printenv", "env": env})).await.unwrap();
    assert!(err && text.contains("no field \"nope\""), "{text}");

    // get_field's refusal now points at the tool too.
    let (err, text) = call(&c, "get_field", json!({"entry": "Deploy DB", "field": "password"})).await.unwrap();
    assert!(err && text.contains("`run_with_secrets` tool") && text.contains("printenv, sleep"), "{text}");

    // The time limit kills the command; the answer says so.
    let (err, text) = call(&c, "run_with_secrets", json!({"command": "sleep", "args": ["30"]})).await.unwrap();
    assert!(!err, "{text}");
    let out: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((out["timed_out"].as_bool(), out["exit_code"].as_i64()), (Some(true), Some(137)), "{text}");
    c.cancel().await.expect("close");
    assert_clean_log(&log, &f.token, &[PASSWORD]);
}

#[test]
fn bad_flags_are_refused_at_start() {
    for (args, says) in [
        (&["--run-timeout", "0"][..], "--run-timeout"),
        (&["--run-timeout", "3601"][..], "--run-timeout"),
        (&["--allow-run", ""][..], "--allow-run"),
    ] {
        let out = Command::new(common::BIN)
            .arg("mcp")
            .args(args)
            .env("CLAVITOR_URL", "http://127.0.0.1:9")
            .env("CLAVITOR_TOKEN", "cvt_0000000000000000000000000000000000000000")
            .stdin(Stdio::null())
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Needs the tokens branch: `PATCH /api/agents/{id}` with `reveal_to_model` and `GET /api/whoami`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_field_reveals_only_when_the_vault_marks_the_agent() {
    let v = Vault::uninitialised_owner();
    let s = v.serve();
    let mut owner = passkey::Admin::owner(&s, &v.setup_code);
    let (agent, token) = v.add_agent("model", &[]);
    let own = format!("{agent:04x}");
    let login = v.add_entry(&json!({"title": "Deploy DB", "scopes": [own],
        "fields": [{"name": "password", "kind": "secret", "value": PASSWORD}]}));
    eventually("agent known to the server", || s.get("/api/entries", Some(&token)).status == 200);
    let log = v.tmp.path().join("mcp.log");
    let c = connect(&s, &token, &[], &log).await;
    let args = json!({"entry": "Deploy DB", "field": "password"});
    let (err, text) = call(&c, "get_field", args.clone()).await.unwrap();
    assert!(err && !text.contains(PASSWORD), "{text}");

    let r = owner.write(&s, "PATCH", &format!("/api/agents/{agent}"), &json!({"reveal_to_model": true}));
    assert_eq!(r.status, 200, "{}", r.body);
    // Asked fresh at every call: the same MCP session now gets the value.
    let (err, text) = call(&c, "get_field", args.clone()).await.unwrap();
    assert_eq!((err, text.as_str()), (false, PASSWORD));
    v.audit_rows_when(false, "the agent's read", |rows| {
        rows.iter().any(|r| r["agent_id"] == agent && r["action"] == "entry.read" && r["entry_id"] == login)
    });

    let r = owner.write(&s, "PATCH", &format!("/api/agents/{agent}"), &json!({"reveal_to_model": false}));
    assert_eq!(r.status, 200, "{}", r.body);
    let (err, text) = call(&c, "get_field", args).await.unwrap();
    assert!(err && !text.contains(PASSWORD), "{text}");
    c.cancel().await.expect("close");
    assert_clean_log(&log, &token, &[PASSWORD]);
}

/// A running `clavitor mcp --http …`, killed on drop.
struct HttpMcp(std::process::Child);

impl Drop for HttpMcp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn http_transport_is_loopback_only_and_needs_the_agents_token() {
    let f = fixture();
    let mcp = |addr: &str| {
        let mut cmd = Command::new(common::BIN);
        cmd.args(["mcp", "--url", &f.s.url(""), "--http", addr])
            .env("CLAVITOR_TOKEN", &f.token)
            .env("CLAVITOR_LOG", "warn");
        cmd
    };
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:0"] {
        let out = mcp(addr).stdin(Stdio::null()).output().expect("run");
        assert!(!out.status.success(), "{addr} accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains("only a loopback address"), "{addr}");
    }

    let mut child = mcp("127.0.0.1:0").stdin(Stdio::null()).stdout(Stdio::piped()).spawn().expect("spawn");
    let stdout = child.stdout.take().unwrap();
    let mut guard = HttpMcp(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).expect("listening line");
    let url = line.split("listening on ").nth(1).expect("url").trim().to_owned();
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"), "{line}");

    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    .to_string();
    let accept = ("Accept", "application/json, text/event-stream");
    let post = |token: Option<&str>, extra: &[(&str, &str)]| {
        let mut headers = vec![accept];
        headers.extend_from_slice(extra);
        request_with(&url, "POST", token, &headers, Some(init.as_bytes()))
    };
    let r = post(None, &[]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"], "unauthorized");
    // Another agent's valid token is not this server's token.
    let (_, other) = f.v.add_agent("other", &[]);
    assert_eq!(post(Some(&other), &[]).status, 401);
    let r = post(Some(&f.token), &[("Origin", "http://evil.example")]);
    assert_eq!(r.status, 403, "{}", r.body);
    let r = post(Some(&f.token), &[("Host", "evil.example")]);
    assert!(r.status >= 400, "a foreign Host (DNS rebinding) is refused: {} {}", r.status, r.body);
    let r = post(Some(&f.token), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"name\":\"clavitor\""), "{}", r.body);

    // SIGTERM stops it (bounded wait).
    let _ = Command::new("kill").arg("-TERM").arg(guard.0.id().to_string()).status();
    let mut status = None;
    for _ in 0..100 {
        status = guard.0.try_wait().expect("wait");
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(status.is_some_and(|s| s.success()), "no clean exit on SIGTERM: {status:?}");
}

/// Issue 18: an inject-only entry's values reach no model, even for an agent the owner marked
/// `reveal_to_model`: `get_field`, `get_totp` and `run_with_secrets` refuse and point at the
/// proxy; the metadata tools still list the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inject_only_values_never_reach_the_model() {
    let v = Vault::new();
    let (agent, token) = v.add_agent("model", &["--reveal-to-model"]);
    let own = format!("{agent:04x}");
    v.add_entry(&json!({"title": "Model API", "scopes": [own], "inject_only": true,
        "fields": [{"name": "api_key", "kind": "secret", "value": PASSWORD},
                   {"name": "otp", "kind": "totp", "value": TOTP_SECRET}],
        "inject": [{"host": "api.example.test",
                    "place": {"kind": "header", "name": "Authorization", "template": "Bearer {{api_key}}"}}]}));
    let s = v.serve();
    let log = v.tmp.path().join("mcp.log");
    let c = connect(&s, &token, &["--allow-run", "printenv"], &log).await;

    let (err, text) = call(&c, "list_entries", json!({})).await.unwrap();
    assert!(!err && text.contains("Model API") && !text.contains(PASSWORD), "{text}");
    let (err, text) = call(&c, "get_field", json!({"entry": "Model API", "field": "api_key"})).await.unwrap();
    assert!(err && text.contains("inject-only") && !text.contains(PASSWORD), "{text}");
    let (err, text) = call(&c, "get_totp", json!({"entry": "Model API"})).await.unwrap();
    assert!(err && text.contains("inject-only"), "{text}");
    let env = json!({"K": "clavitor://Model API/api_key"});
    let (err, text) =
        call(&c, "run_with_secrets", json!({"command": "printenv", "args": ["K"], "env": env})).await.unwrap();
    assert!(err && text.contains("inject-only") && !text.contains(PASSWORD), "{text}");
    c.cancel().await.expect("close");
    assert_clean_log(&log, &token, &[PASSWORD]);
}
