//! Secrets do not leak through the operating system or the network (issue 12 §5): the setup
//! link stays out of systemd's journal, files are private whatever the umask, no environment
//! variable grants privilege, and outgoing requests follow no redirect.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{BIN, Server, Vault};

fn clavitor(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir").arg(dir).env_remove("CLAVITOR_LOG").env_remove("INVOCATION_ID").env_remove("JOURNAL_STREAM");
    cmd
}

#[test]
fn under_systemd_the_setup_link_goes_to_a_private_file_not_to_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let out =
        clavitor(&dir).arg("init").env("INVOCATION_ID", "0123abcd").env("JOURNAL_STREAM", "8:1234").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(common::setup_code_in(&stdout).is_none(), "the code reached the journal: {stdout}");
    assert!(common::setup_code_in(&logs).is_none(), "the code reached the logs: {logs}");
    assert!(stdout.contains("clavitor setup-link"), "stdout says where the link is: {stdout}");

    let file = dir.join("setup-link");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "setup-link file mode");
    let saved = std::fs::read_to_string(&file).unwrap();
    let code = common::setup_code_in(&saved).expect("the file holds the link");

    let out = clavitor(&dir).arg("setup-link").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(common::setup_code_in(&String::from_utf8_lossy(&out.stdout)).as_deref(), Some(code.as_str()));

    // A run outside systemd (a terminal, a script) still prints a link, and the file follows
    // the newest one.
    let out = clavitor(&dir).arg("init").output().unwrap();
    let fresh = common::setup_code_in(&String::from_utf8_lossy(&out.stdout)).expect("printed outside systemd");
    assert_ne!(fresh, code);
    assert_eq!(common::setup_code_in(&std::fs::read_to_string(&file).unwrap()), Some(fresh));

    // Once the code is used, setup-link says so instead of printing a dead link.
    let conn = rusqlite::Connection::open(vault_file(&dir)).unwrap();
    conn.execute("UPDATE setup_codes SET used_at = 1", []).unwrap();
    let out = clavitor(&dir).arg("setup-link").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("used already"), "{}", String::from_utf8_lossy(&out.stderr));
}

fn vault_file(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir.join("vaults"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "db"))
        .unwrap()
}

/// Every file and directory under `root`, with its mode.
fn modes(root: &Path) -> Vec<(String, u32, bool)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        out.push((p.display().to_string(), meta.permissions().mode() & 0o777, meta.is_dir()));
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        }
    }
    out
}

#[test]
fn files_the_node_creates_are_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let with_open_umask = |args: &[&str]| {
        let script = format!("umask 000; exec \"$0\" --data-dir '{}' \"$@\"", dir.display());
        Command::new("sh").arg("-c").arg(script).arg(BIN).args(args).env_remove("CLAVITOR_LOG").output().unwrap()
    };
    let out = with_open_umask(&["init"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = with_open_umask(&["agent", "add", "--name", "o", "--all-access", "--admin", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = common::token_in(&String::from_utf8_lossy(&out.stdout)).unwrap();
    // A serving process writes WAL files and audit rows.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("umask 000; exec \"$0\" --data-dir '{}' serve --listen 127.0.0.1:0", dir.display()))
        .arg(BIN)
        .env_remove("CLAVITOR_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("server printed its address").unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.trim().to_owned();
        }
    };
    let r = common::request(&format!("http://{addr}/api/entries"), "GET", Some(&token), None);
    assert_eq!(r.status, 200);
    let found = modes(&dir);
    let _ = child.kill();
    let _ = child.wait();
    assert!(found.iter().any(|(p, _, _)| p.ends_with("-wal")), "a WAL file exists: {found:?}");
    for (path, mode, is_dir) in found {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{path} is {mode:o}");
    }
}

#[test]
fn no_environment_variable_grants_privilege() {
    let v = Vault::new();
    let out = v.cli_env(
        &["agent", "add", "--name", "from env", "--json"],
        &[
            ("CLAVITOR_AGENT_ADMIN", "true"),
            ("CLAVITOR_AGENT_ALL_ACCESS", "true"),
            ("CLAVITOR_AGENT_SCOPES", "0001"),
            ("CLAVITOR_AGENT_REVEAL_TO_MODEL", "true"),
            ("CLAVITOR_AGENT_TTL", "1h"),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let agent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(agent["admin"], false, "{agent}");
    assert_eq!(agent["all_access"], false, "{agent}");
    assert_eq!(agent["reveal_to_model"], false, "{agent}");
    assert_eq!(agent["expires_at"], serde_json::Value::Null, "{agent}");
    assert_eq!(agent["scopes"].as_array().unwrap().len(), 1, "only its own scope: {agent}");
    let id = v.add_entry(&serde_json::json!({"title": "t", "fields": []}));
    let out = v.cli_env(
        &["entry", "add", "--title", "env scoped", "--json"],
        &[("CLAVITOR_ENTRY_SCOPES", &format!("{:04x}", agent["id"].as_i64().unwrap()))],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let entries = v.cli_json(&["entry", "list", "--json"], None);
    let e = entries.as_array().unwrap().iter().find(|e| e["title"] == "env scoped").unwrap();
    assert_eq!(e["scopes"], "", "owner-only: {e}");
    assert!(id > 0);
}

/// A receiver that answers every request with a redirect to `to`; reports each request line.
fn redirector(to: String) -> (String, mpsc::Receiver<String>) {
    let (url, raw) = common::receiver(50, move |_| Some(common::response(307, &format!("location: {to}\r\n"), "")));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for r in raw {
            if tx.send(r.line()).is_err() {
                break;
            }
        }
    });
    (url, rx)
}

#[test]
fn outgoing_requests_follow_no_redirect() {
    // The second hop must never see a request: not the Kuma secret, not the HQ bearer token.
    let (second, second_rx) = redirector("http://127.0.0.1:9/".into());
    let (first, first_rx) = redirector(format!("{second}/stolen"));
    let v = Vault::new();
    let token_file = v.tmp.path().join("hq.token");
    std::fs::write(&token_file, "hq-telemetry-token\n").unwrap();
    let push = format!("{first}/api/push/kuma-secret");
    let _s = Server::start(
        &v.dir(),
        &[
            "--kuma-push-url",
            &push,
            "--kuma-interval-secs",
            "1",
            "--telemetry-host",
            &first,
            "--telemetry-token-file",
            token_file.to_str().unwrap(),
            "--telemetry-freq",
            "10",
        ],
    );
    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(first_rx.recv_timeout(Duration::from_secs(30)).expect("the node pushes"));
    }
    assert!(seen.iter().any(|l| l.starts_with("POST /v1/telemetry")), "{seen:?}");
    assert!(seen.iter().any(|l| l.starts_with("GET /api/push/kuma-secret")), "{seen:?}");
    assert!(second_rx.recv_timeout(Duration::from_secs(2)).is_err(), "a redirect was followed");
}

#[test]
fn plain_http_goes_only_to_loopback_ip_literals() {
    let v = Vault::new();
    for (flag, url) in [
        ("--telemetry-host", "http://127.0.0.1.example.com"),
        ("--telemetry-host", "http://localhost:9"),
        ("--kuma-push-url", "http://127.0.0.1.example.com/api/push/t"),
    ] {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", flag, url];
        if flag == "--telemetry-host" {
            args.extend(["--telemetry-token-file", "/dev/null"]);
        }
        let out = v.cli(&args);
        assert!(!out.status.success(), "{url} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("loopback"), "{url}: {err}");
    }
}
