//! Autoscope (commercial, issue 16 §5) through the real binary: the rules' answer, refusals, and
//! the optional chat-completions endpoint played by a loopback server in this test that records
//! every request it is sent: no value ever reaches it, and when it hangs, fails, answers
//! garbage or names an unknown scope, the rules answer.
#![cfg(feature = "commercial")]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, Vault};
use serde_json::{Value, json};

const SECRET: &str = "hunter2-very-secret-value";

fn ask() -> Value {
    json!({"title": "GitHub deploy", "url": "https://github.com/acme", "type": "login",
           "fields": [{"name": "username", "kind": "text"}, {"name": "password", "kind": "secret"},
                      {"name": "recovery codes", "kind": "note"}]})
}

fn post(s: &Server, token: &str, body: &Value) -> common::Resp {
    common::request(&s.url("/api/autoscope"), "POST", Some(token), Some(body.to_string().as_bytes()))
}

/// A vault whose owner and agents exist, with an entry holding `SECRET` (which autoscope must
/// never read, let alone send).
fn vault() -> (Vault, i64, String) {
    let v = Vault::new();
    v.add_entry(&json!({"title": "GitHub deploy", "url": "https://github.com/acme",
        "fields": [{"name": "password", "kind": "secret", "value": SECRET}]}));
    let (ci, ci_token) = v.add_agent("github-ci", &[]);
    v.add_agent("mailer", &[]);
    (v, ci, ci_token)
}

#[test]
fn the_rules_answer_by_default_and_values_are_refused() {
    let (v, ci, ci_token) = vault();
    let s = v.serve();
    let r = post(&s, &v.owner, &ask());
    assert_eq!(r.status, 200, "{}", r.body);
    let a = r.json();
    assert_eq!(a["source"], "rules");
    assert!(a["fallback"].is_null());
    let ci_scope = format!("{ci:04x}");
    assert_eq!(a["scopes"], json!([{"scope": ci_scope, "reason": a["scopes"][0]["reason"]}]), "{a}");
    assert!(a["scopes"][0]["reason"].as_str().unwrap().contains("github-ci"));
    let tiers: Vec<&str> = a["fields"].as_array().unwrap().iter().map(|f| f["tier"].as_str().unwrap()).collect();
    assert_eq!(tiers, ["L1", "L1", "L2"]);
    assert_eq!(a["fields"][1]["scopes"], json!([ci_scope]));
    assert_eq!(a["fields"][2]["scopes"], json!([]));
    assert!(a["fields"].as_array().unwrap().iter().all(|f| !f["reason"].as_str().unwrap().is_empty()));

    // A value anywhere in the body is refused.
    let mut with_value = ask();
    with_value["fields"][1]["value"] = json!(SECRET);
    let r = post(&s, &v.owner, &with_value);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["message"].as_str().unwrap().contains("never takes values"));
    // Only an admin asks; bad shapes are 4xx.
    assert_eq!(post(&s, &ci_token, &ask()).status, 403);
    assert_eq!(post(&s, "cvt_nope", &ask()).status, 401);
    let mut bad_kind = ask();
    bad_kind["fields"][0]["kind"] = json!("password");
    assert_eq!(post(&s, &v.owner, &bad_kind).status, 422);
    assert_eq!(post(&s, &v.owner, &json!({"title": "x"})).status, 400);
}

/// How the fake model answers.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Good,
    Hang,
    Status500,
    NotJson,
    UnknownScope,
}

struct FakeModel {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    /// Every request as received: head and body.
    seen: Arc<Mutex<Vec<String>>>,
    scope: String,
}

fn read_request(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0usize);
            if buf.len() >= end + 4 + len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

impl FakeModel {
    fn start(scope: String) -> FakeModel {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(Mutex::new(Mode::Good));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (m, sn, sc) = (mode.clone(), seen.clone(), scope.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let req = read_request(&mut stream);
                sn.lock().unwrap().push(req);
                let mode = *m.lock().unwrap();
                let content = match mode {
                    Mode::UnknownScope => json!({"fields": [
                        {"name": "username", "tier": "L1", "scopes": ["ffff"], "reason": "x"},
                        {"name": "password", "tier": "L1", "scopes": [], "reason": "x"},
                        {"name": "recovery codes", "tier": "L2", "scopes": [], "reason": "x"}]})
                    .to_string(),
                    // Distinguishable from the rules: the model calls the username L2.
                    _ => json!({"fields": [
                        {"name": "username", "tier": "L2", "scopes": [], "reason": "model says so"},
                        {"name": "password", "tier": "L1", "scopes": [sc], "reason": "ci deploys"},
                        {"name": "recovery codes", "tier": "L2", "scopes": [], "reason": "recovery"}]})
                    .to_string(),
                };
                let (status, body) = match mode {
                    Mode::Status500 => ("500 Internal Server Error", "{}".to_owned()),
                    Mode::NotJson => ("200 OK", "<html>not json</html>".to_owned()),
                    _ => (
                        "200 OK",
                        json!({"choices": [{"message": {"role": "assistant", "content": content}}]}).to_string(),
                    ),
                };
                if mode == Mode::Hang {
                    // Hold the connection without answering, longer than the server waits.
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_secs(8));
                        drop(stream);
                    });
                    continue;
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FakeModel { port, mode, seen, scope }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

#[test]
fn the_model_never_receives_a_value_and_any_failure_falls_back_to_the_rules() {
    let (v, ci, _) = vault();
    let model = FakeModel::start(format!("{ci:04x}"));
    let key_file = v.tmp.path().join("llm.key");
    std::fs::write(&key_file, "sk-test-key\n").unwrap();
    let url = format!("http://127.0.0.1:{}/v1/chat/completions", model.port);
    let s = Server::start(
        &v.dir(),
        &[
            "--autoscope-llm-url",
            &url,
            "--autoscope-llm-key-file",
            key_file.to_str().unwrap(),
            // Long enough for the loopback model's answer on a loaded machine, shorter than the
            // 8 s the hanging model holds its connection.
            "--autoscope-llm-timeout-secs",
            "4",
        ],
    );

    let r = post(&s, &v.owner, &ask());
    assert_eq!(r.status, 200, "{}", r.body);
    let a = r.json();
    assert_eq!(a["source"], "llm", "{a}");
    assert_eq!(a["fields"][0]["tier"], "L2");
    assert_eq!(a["fields"][1]["scopes"], json!([model.scope]));
    assert!(a["fields"][1]["reason"].as_str().unwrap().starts_with("model: "));

    for (mode, why) in [
        (Mode::Hang, "timed out"),
        (Mode::Status500, "HTTP status 500"),
        (Mode::NotJson, "not the JSON"),
        (Mode::UnknownScope, "scope"),
    ] {
        model.set(mode);
        let r = post(&s, &v.owner, &ask());
        assert_eq!(r.status, 200, "{mode:?}: {}", r.body);
        let a = r.json();
        assert_eq!(a["source"], "rules", "{mode:?}: {a}");
        assert!(a["fallback"].as_str().unwrap().contains(why), "{mode:?}: {a}");
        assert_eq!(a["fields"][0]["tier"], "L1", "{mode:?}: the rules' answer");
    }

    // A request carrying a value is refused before the model is asked.
    model.set(Mode::Good);
    let sent_before = model.seen.lock().unwrap().len();
    let mut with_value = ask();
    with_value["fields"][0]["value"] = json!(SECRET);
    assert_eq!(post(&s, &v.owner, &with_value).status, 400);
    assert_eq!(model.seen.lock().unwrap().len(), sent_before);

    let seen = model.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 5, "one call per accepted request");
    for req in &seen {
        assert!(!req.contains(SECRET), "a value reached the model: {req}");
        assert!(!req.contains(&v.owner), "a token reached the model");
        assert!(req.to_ascii_lowercase().contains("authorization: bearer sk-test-key"), "{req}");
        assert!(req.contains("GitHub deploy") && req.contains("recovery codes") && req.contains("github-ci"), "{req}");
    }
    // The key is not in the server's logs.
    assert!(!s.stderr().contains("sk-test-key"));

    // Each accepted ask is an audit row saying who answered, and nothing of the entry.
    let rows = s.get("/api/audit?action=autoscope.suggest&limit=50", Some(&v.owner)).json();
    let details: Vec<String> = rows["rows"].as_array().expect("rows").iter().map(|r| r["detail"].to_string()).collect();
    assert_eq!(details.len(), 5, "{rows}");
    assert_eq!(details.iter().filter(|d| d.contains("answered by llm")).count(), 1, "{details:?}");
    assert_eq!(details.iter().filter(|d| d.contains("answered by rules")).count(), 4, "{details:?}");
    assert!(!rows.to_string().contains("GitHub deploy") && !rows.to_string().contains("recovery codes"));
}

#[test]
fn a_bad_model_setting_stops_the_start() {
    let v = Vault::new();
    for (args, expect) in [
        (vec!["--autoscope-llm-url", "http://10.1.2.3/v1/chat/completions"], "autoscope-llm-url"),
        (
            vec!["--autoscope-llm-url", "https://llm.example/v1", "--autoscope-llm-key-file", "/nonexistent/key"],
            "key-file",
        ),
        (vec!["--autoscope-llm-key-file", "/nonexistent/key"], "needs --autoscope-llm-url"),
    ] {
        let err_file = v.tmp.path().join("refused.stderr");
        let mut child = std::process::Command::new(common::BIN)
            .arg("--data-dir")
            .arg(v.dir())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&err_file).unwrap())
            .spawn()
            .unwrap();
        // Bounded: a server that started anyway is killed and the test fails.
        let mut status = None;
        for _ in 0..300 {
            if let Some(s) = child.try_wait().unwrap() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(status.is_some_and(|s| !s.success()), "{args:?} started");
        let err = std::fs::read_to_string(&err_file).unwrap();
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}
