//! The agent-side CLI (`get`, `totp`, `ls`, `search`, `run`) against the real server: the real
//! binary on both sides, entries and agents made with the operator CLI.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{BIN, Server, Vault, eventually};
use serde_json::{Value, json};

const PASSWORD: &str = "gh-pass-1x";
const MASK: &str = "<concealed by clavitor>";
const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

/// A vault, a server, and an agent that reads scope `own` (its own).
struct Setup {
    v: Vault,
    s: Server,
    token: String,
    github: i64,
    totp: i64,
    hidden: i64,
    home: tempfile::TempDir,
    /// The agent's own scope.
    own: String,
}

fn setup() -> Setup {
    let v = Vault::new();
    let (id, token) = v.add_agent("ci", &[]);
    let (other, _) = v.add_agent("other", &[]);
    let own = format!("{id:04x}");
    let github = v.add_entry(&json!({
        "title": "GitHub", "type": "login", "url": "https://github.com", "scopes": [&own],
        "fields": [
            {"name": "username", "kind": "text", "value": "bot"},
            {"name": "password", "kind": "secret", "value": PASSWORD},
        ]
    }));
    let totp = v.add_entry(&json!({
        "title": "Mail", "scopes": [&own],
        "fields": [{"name": "otp", "kind": "totp", "value": TOTP_SECRET}]
    }));
    let hidden = v.add_entry(&json!({
        "title": "Hidden", "scopes": [format!("{other:04x}")],
        "fields": [{"name": "password", "kind": "secret", "value": "never-shown"}]
    }));
    let s = v.serve();
    Setup { v, s, token, github, totp, hidden, home: tempfile::tempdir().expect("home"), own }
}

impl Setup {
    /// `clavitor ARGS` as the agent: CLAVITOR_URL and CLAVITOR_TOKEN set, an empty HOME.
    fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[("CLAVITOR_TOKEN", &self.token)])
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).stdin(Stdio::null()).output().expect("run clavitor")
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(BIN);
        for (k, _) in std::env::vars() {
            if k.starts_with("CLAVITOR_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(args).env("HOME", self.home.path()).env("CLAVITOR_URL", format!("http://{}", self.s.addr));
        cmd.envs(env.iter().copied());
        cmd
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn failed(o: &Output) -> String {
    assert!(!o.status.success(), "expected failure, got {:?}: {}", o.status, stdout(o));
    assert!(o.stdout.is_empty(), "a failure prints nothing on stdout: {}", stdout(o));
    stderr(o)
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed ({:?}): {}", o.status, stderr(o));
    stdout(o)
}

#[test]
fn get_by_title_and_id_and_as_json() {
    let t = setup();
    assert_eq!(ok(&t.run(&["get", "clavitor://GitHub/password"])), format!("{PASSWORD}\n"));
    assert_eq!(ok(&t.run(&["get", &format!("clavitor://{}/username", t.github)])), "bot\n");
    let j: Value = serde_json::from_str(&ok(&t.run(&["get", "clavitor://GitHub/password", "--json"]))).unwrap();
    assert_eq!(j["value"], PASSWORD);
    assert_eq!(j["entry_id"], t.github);
    assert_eq!(j["field"], "password");
    assert_eq!(j["kind"], "secret");
    let audit_id = j["audit_id"].as_i64().expect("audit id");
    let rows = t.v.audit_rows_when(false, "the row the read names", |rows| rows.iter().any(|r| r["id"] == audit_id));
    let row = rows.iter().find(|r| r["id"] == audit_id).expect("the audit row the read names");
    assert_eq!(
        (row["action"].as_str(), row["outcome"].as_str(), row["entry_id"].as_i64()),
        (Some("entry.read"), Some("ok"), Some(t.github))
    );
}

#[test]
fn totp_prints_the_current_code() {
    let t = setup();
    let out = ok(&t.run(&["totp", "clavitor://Mail"]));
    let code = out.trim_end();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let bytes = totp_rs::Secret::Encoded(TOTP_SECRET.into()).to_bytes().unwrap();
    let totp = totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes, None, String::new());
    // The code of this step or the one before (the step may turn between the two clocks' reads).
    let expected = [totp.generate(now), totp.generate(now - 30)];
    assert!(expected.iter().any(|c| c == code), "{code} not in {expected:?}");
    // A field part is ignored; --json gives the whole answer.
    let j: Value =
        serde_json::from_str(&ok(&t.run(&["totp", &format!("clavitor://{}/otp", t.totp), "--json"]))).unwrap();
    assert_eq!(j["digits"], 6);
    assert_eq!(j["period"], 30);
    // The seed itself is never handed out.
    let err = failed(&t.run(&["get", "clavitor://Mail/otp"]));
    assert!(err.contains("TOTP seed") && !err.contains(TOTP_SECRET), "{err}");
}

#[test]
fn ls_and_search_print_metadata_of_visible_entries_only() {
    let t = setup();
    let ls = ok(&t.run(&["ls"]));
    assert!(ls.contains(&format!("{}\tlogin\tGitHub\thttps://github.com\t", t.github)), "{ls}");
    assert!(ls.contains("Mail") && !ls.contains("Hidden"), "{ls}");
    assert!(!ls.contains(PASSWORD) && !ls.contains(TOTP_SECRET), "{ls}");
    let j: Value = serde_json::from_str(&ok(&t.run(&["ls", "--json"]))).unwrap();
    let titles: Vec<&str> = j.as_array().unwrap().iter().map(|e| e["title"].as_str().unwrap()).collect();
    assert_eq!(titles.len(), 2, "{titles:?}");
    assert!(j.as_array().unwrap().iter().all(|e| e.get("fields").is_none()));
    let hits = ok(&t.run(&["search", "git hub"]));
    assert!(hits.is_empty(), "{hits}");
    let hits = ok(&t.run(&["search", "GITHUB"]));
    assert_eq!(hits.lines().count(), 1, "{hits}");
    assert!(hits.starts_with(&format!("{}\t", t.github)));
    let j: Value = serde_json::from_str(&ok(&t.run(&["search", "hidden", "--json"]))).unwrap();
    assert_eq!(j, json!([]));
}

#[test]
fn ambiguous_missing_and_hidden_entries_and_missing_fields_are_errors() {
    let t = setup();
    let own = format!("{:04x}", 2); // the agent "ci"
    let a = t.v.add_entry(
        &json!({"title": "Dup", "scopes": [own], "fields": [{"name": "k", "kind": "secret", "value": "v-a"}]}),
    );
    let b = t.v.add_entry(
        &json!({"title": "Dup", "scopes": [own], "fields": [{"name": "k", "kind": "secret", "value": "v-b"}]}),
    );
    eventually("new entries served", || t.run(&["ls"]).stdout.windows(3).filter(|w| w == b"Dup").count() == 2);
    let err = failed(&t.run(&["get", "clavitor://Dup/k"]));
    assert!(err.contains(&format!("ids {a}, {b}")) && !err.contains("v-a") && !err.contains("v-b"), "{err}");

    for reference in ["clavitor://Nope/password", "clavitor://999999/password", "clavitor://Hidden/password"] {
        let err = failed(&t.run(&["get", reference]));
        assert!(err.contains("no entry") && err.contains("is visible to this token"), "{reference}: {err}");
    }
    // Hidden and missing read alike, by id too.
    let hidden = failed(&t.run(&["get", &format!("clavitor://{}/password", t.hidden)]));
    assert_eq!(hidden, failed(&t.run(&["get", "clavitor://999999/password"])).replace("999999", &t.hidden.to_string()));

    let err = failed(&t.run(&["get", "clavitor://GitHub/pasword"]));
    assert!(err.contains("no field \"pasword\"") && err.contains("\"username\", \"password\""), "{err}");
    assert!(!err.contains(PASSWORD) && !err.contains("bot"), "field values in the error: {err}");

    let err = failed(&t.run(&["get", "GitHub/password"]));
    assert!(err.contains("not a clavitor reference"), "{err}");
}

#[test]
fn a_revoked_token_is_refused_clearly() {
    let t = setup();
    ok(&t.run(&["ls"]));
    let id =
        t.v.cli_json(&["agent", "list", "--json"], None)
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "ci")
            .unwrap()["id"]
            .as_i64()
            .unwrap();
    assert!(t.v.cli(&["agent", "revoke", &id.to_string()]).status.success());
    eventually("revoked", || !t.run(&["ls"]).status.success());
    let err = failed(&t.run(&["get", "clavitor://GitHub/password"]));
    assert!(err.contains("refused the token (unknown, revoked or expired)"), "{err}");
    assert!(!err.contains(&t.token[4..]), "{err}");
}

#[test]
fn token_files_must_be_private_and_plain_http_only_to_loopback() {
    let t = setup();
    let file = t.home.path().join("token");
    std::fs::write(&file, format!("{}\n", t.token)).unwrap();
    let f = file.to_str().unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = failed(&t.run_env(&["ls", "--token-file", f], &[]));
    assert!(err.contains("readable by group or others (mode 644)") && !err.contains(&t.token[4..]), "{err}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    ok(&t.run_env(&["ls", "--token-file", f], &[]));

    // The default place, and the same rule there.
    let default = t.home.path().join(".config/clavitor/token");
    let err = failed(&t.run_env(&["ls"], &[]));
    assert!(err.contains("no token") && err.contains(default.to_str().unwrap()), "{err}");
    std::fs::create_dir_all(default.parent().unwrap()).unwrap();
    std::fs::copy(&file, &default).unwrap();
    std::fs::set_permissions(&default, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(failed(&t.run_env(&["ls"], &[])).contains("readable by group or others"));
    std::fs::set_permissions(&default, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(ok(&t.run_env(&["ls"], &[])).contains("GitHub"));

    for url in ["http://10.1.2.3:8080", "http://localhost:1", "http://vault.example.com"] {
        let err = failed(&t.run_env(&["ls", "--url", url], &[("CLAVITOR_TOKEN", &t.token)]));
        assert!(err.contains("plain http:// is accepted only for a loopback IP address"), "{url}: {err}");
    }
    let err = failed(&t.run_env(&["ls", "--url", "https://127.0.0.1:1"], &[("CLAVITOR_TOKEN", &t.token)]));
    assert!(err.contains("could not reach the vault"), "{err}");
}

/// A shell child that checks and prints `$var`.
fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

fn run_child(t: &Setup, extra: &[&str], script: &str, env: &[(&str, &str)]) -> Output {
    let mut args = vec!["run"];
    args.extend_from_slice(extra);
    args.push("--");
    let child = sh(script);
    args.extend(child.iter().map(String::as_str));
    let mut all = vec![("CLAVITOR_TOKEN", t.token.as_str())];
    all.extend_from_slice(env);
    t.run_env(&args, &all)
}

#[test]
fn run_gives_values_to_the_child_and_masks_its_output() {
    let t = setup();
    let script = r#"
        test "$DB_PASS" = "gh-pass-1x" && echo env-ok
        test -z "$CLAVITOR_TOKEN" && echo no-token
        echo "user=$DB_USER pass=$DB_PASS"
        printf 'to stderr: %s\n' "$DB_PASS" >&2
        a=${DB_PASS%"${DB_PASS#?????}"}; b=${DB_PASS#?????}
        printf 'split: %s' "$a"; sleep 0.3; printf '%s end\n' "$b"
        printf '%s' "$a" >&2; sleep 0.3; printf '%s\n' "$b" >&2
        exit 7"#;
    let out = run_child(
        &t,
        &[],
        script,
        &[("DB_PASS", "clavitor://GitHub/password"), ("DB_USER", "clavitor://GitHub/username")],
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("env-ok\nno-token\nuser={MASK} pass={MASK}\nsplit: {MASK} end\n"),
        "stderr: {}",
        stderr(&out)
    );
    assert_eq!(stderr(&out), format!("to stderr: {MASK}\n{MASK}\n"));

    // --pass-token hands the token over (and it is masked too).
    let out = run_child(
        &t,
        &["--pass-token"],
        r#"test "${CLAVITOR_TOKEN#cvt_}" != "$CLAVITOR_TOKEN" && echo has-token; echo "$CLAVITOR_TOKEN""#,
        &[],
    );
    assert_eq!(ok(&out), format!("has-token\n{MASK}\n"));
}

#[test]
fn run_reads_an_env_file() {
    let t = setup();
    let file = t.home.path().join("app.env");
    std::fs::write(
        &file,
        "# the app's settings\n\nexport API_KEY=\"clavitor://GitHub/password\"\nPLAIN='hello world'\nDB_PASS=clavitor://999999/x\n",
    )
    .unwrap();
    let script = r#"test "$API_KEY" = "gh-pass-1x" && echo key-ok; echo "$PLAIN"; echo "$API_KEY"; echo "db=$DB_PASS""#;
    // The file's DB_PASS overrides the environment's, so the environment's reference is not read.
    let out = run_child(&t, &["--env-file", file.to_str().unwrap()], script, &[("DB_PASS", "clavitor://Nope/x")]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("$DB_PASS") && err.contains("no entry 999999 is visible") && !err.contains("Nope"), "{err}");
    std::fs::write(&file, "export API_KEY=\"clavitor://GitHub/password\"\nPLAIN='hello world'\n").unwrap();
    let out = run_child(&t, &["--env-file", file.to_str().unwrap()], script, &[]);
    assert_eq!(ok(&out), format!("key-ok\nhello world\n{MASK}\ndb=\n"));
}

#[test]
fn run_never_writes_a_value_to_its_own_stderr() {
    let t = setup();
    let marker = t.home.path().join("ran");
    let script = format!("touch {}", marker.display());
    // One reference resolves, the next does not: the error names the variable and the
    // reference's parts, never the value already read, and the command does not start.
    let out =
        run_child(&t, &[], &script, &[("A_PASS", "clavitor://GitHub/password"), ("B_PASS", "clavitor://GitHub/nope")]);
    let err = failed(&out);
    assert!(err.contains("$B_PASS") && err.contains("no field \"nope\""), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    assert!(!Path::new(&marker).exists(), "the command ran although a reference failed");
    // A child that fails to start.
    let out = t.run_env(
        &["run", "--", "/nonexistent/cmd"],
        &[("CLAVITOR_TOKEN", &t.token), ("A_PASS", "clavitor://GitHub/password")],
    );
    let err = failed(&out);
    assert!(err.contains("could not start /nonexistent/cmd") && !err.contains(PASSWORD), "{err}");
}

/// Issue 13: every `clavitor://` reference `run` resolves is an audited read on the server, one
/// `entry.read` row per reference, with the agent as actor; a plain variable reads nothing.
#[test]
fn run_resolves_each_reference_with_an_audited_read() {
    let t = setup();
    let agent = i64::from_str_radix(&t.own, 16).expect("the agent's id");
    let db = t.v.add_entry(&json!({
        "title": "Db", "scopes": [&t.own],
        "fields": [{"name": "api_key", "kind": "secret", "value": "db-key-2y"}]
    }));
    eventually("the new entry served", || t.run(&["ls"]).stdout.windows(2).any(|w| w == b"Db"));
    let before = t.v.audit_rows(false).iter().filter_map(|r| r["id"].as_i64()).max().unwrap_or(0);

    let script = r#"test "$A_PASS" = gh-pass-1x && test "$B_USER" = bot && test "$C_KEY" = db-key-2y && echo all-ok"#;
    let out = run_child(
        &t,
        &[],
        script,
        &[
            ("A_PASS", "clavitor://GitHub/password"),
            ("B_USER", &format!("clavitor://{}/username", t.github)),
            ("C_KEY", &format!("clavitor://{db}/api_key")),
            ("PLAIN", "not-a-reference"),
        ],
    );
    assert_eq!(ok(&out), "all-ok\n");

    let newer = |r: &&Value| r["id"].as_i64().unwrap_or(0) > before;
    let rows: Vec<Value> =
        t.v.audit_rows_when(false, "three reads", |rows| {
            rows.iter().filter(newer).filter(|r| r["action"] == "entry.read").count() >= 3
        })
        .into_iter()
        .filter(|r| newer(&r))
        .collect();
    let reads: Vec<&Value> = rows.iter().filter(|r| r["action"] == "entry.read").collect();
    for r in &reads {
        assert_eq!(
            (r["actor"].as_str(), r["agent_id"].as_i64(), r["outcome"].as_str()),
            (Some("agent"), Some(agent), Some("ok")),
            "{r}"
        );
    }
    let mut read: Vec<i64> = reads.iter().filter_map(|r| r["entry_id"].as_i64()).collect();
    read.sort_unstable();
    let mut expected = vec![t.github, t.github, db];
    expected.sort_unstable();
    assert_eq!(read, expected, "one audited read per resolved reference (two name GitHub): {rows:?}");
}

#[test]
fn run_forwards_sigterm_and_reports_signals() {
    let t = setup();
    let out = run_child(&t, &[], "kill -9 $$", &[]);
    assert_eq!(out.status.code(), Some(137));

    let mut cmd = t.command(
        &["run", "--", "sh", "-c", "trap 'echo got-term; exit 5' TERM; echo ready $$; while :; do sleep 0.1; done"],
        &[("CLAVITOR_TOKEN", &t.token)],
    );
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Lines arrive through a thread, so a broken forwarder fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(30)).expect("the child starts");
    let sh_pid: i32 = ready.strip_prefix("ready ").and_then(|p| p.parse().ok()).expect("ready <pid>");
    // SAFETY: signals our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let got = rx.recv_timeout(Duration::from_secs(30));
    let mut status = None;
    for _ in 0..200 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if status.is_none() || got.is_err() {
        // SAFETY: cleans up the processes this test started.
        unsafe {
            libc::kill(sh_pid, libc::SIGKILL);
        }
        let _ = child.kill();
    }
    assert_eq!(got.ok().as_deref(), Some("got-term"), "the child did not get the SIGTERM");
    assert_eq!(status.and_then(|s| s.code()), Some(5), "clavitor exits with the child's code");
}

#[test]
fn run_child_gets_sigterm_when_clavitor_is_killed() {
    let t = setup();
    let mut cmd = t.command(
        &["run", "--", "sh", "-c", "trap 'exit 3' TERM; echo ready $$; while :; do sleep 0.1; done"],
        &[("CLAVITOR_TOKEN", &t.token)],
    );
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().and_then(Result::ok).expect("the child starts");
    let sh_pid: i32 = ready.strip_prefix("ready ").and_then(|p| p.parse().ok()).expect("ready <pid>");
    child.kill().unwrap(); // SIGKILL: nothing to forward, the kernel's parent-death signal acts
    child.wait().unwrap();
    // SAFETY: signal 0 only asks whether the process exists.
    let alive = || unsafe { libc::kill(sh_pid, 0) } == 0;
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        !alive()
    });
    if !gone {
        // SAFETY: cleans up the process this test started.
        unsafe {
            libc::kill(sh_pid, libc::SIGKILL);
        }
    }
    assert!(gone, "the command outlived the killed clavitor");
}

#[test]
fn ls_escapes_bidirectional_overrides_in_titles() {
    // Control characters are refused in titles at every write; a right-to-left override is
    // valid text, but printed raw it makes "evil<U+202E>txt.exe" read as "evilexe.txt".
    let t = setup();
    t.v.add_entry(&json!({
        "title": "evil\u{202e}txt.exe", "scopes": [&t.own],
        "fields": [{"name": "x", "kind": "text", "value": "y"}],
    }));
    // The running server picks the operator's write up within a fraction of a second.
    let mut ls = String::new();
    for _ in 0..100 {
        ls = ok(&t.run(&["ls"]));
        if ls.contains("evil") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ls.contains("evil\\u{202e}txt.exe"), "{ls}");
    assert!(!ls.contains('\u{202e}'), "{ls}");
}

/// A self-signed certificate for 127.0.0.1 (not a CA: webpki refuses a CA as the server's own).
fn self_signed(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

#[test]
fn https_is_verified_and_ca_file_names_the_trusted_root() {
    let v = Vault::new();
    let (_, token) = v.add_agent("ci", &[]);
    let (cert, key) = self_signed(v.tmp.path(), "server");
    let (other, _) = self_signed(v.tmp.path(), "other");
    let mut s = Server::start(
        &v.dir(),
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap(), "--tls-listen", "127.0.0.1:0"],
    );
    let listen = s.listening_on("https").to_string();
    let url = format!("https://{listen}");
    let ls = |extra: &[&str]| {
        let mut cmd = Command::new(BIN);
        for (k, _) in std::env::vars() {
            if k.starts_with("CLAVITOR_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(["ls", "--url", &url]).args(extra).env("CLAVITOR_TOKEN", &token).env("HOME", "/nonexistent");
        cmd.stdin(Stdio::null()).output().expect("run clavitor")
    };
    let err = failed(&ls(&[]));
    assert!(err.contains("TLS error"), "an unknown issuer is refused: {err}");
    let err = failed(&ls(&["--ca-file", other.to_str().unwrap()]));
    assert!(err.contains("TLS error"), "another CA is not this server's: {err}");
    ok(&ls(&["--ca-file", cert.to_str().unwrap()]));
    let err = failed(&ls(&["--ca-file", key.with_extension("missing").to_str().unwrap()]));
    assert!(err.contains("CA file"), "{err}");
}

#[test]
fn run_gives_the_child_the_umask_clavitor_was_started_with() {
    let t = setup();
    // SAFETY: reads the mask by setting it and putting it back at once.
    let mine = unsafe {
        let m = libc::umask(0o027);
        libc::umask(0o027);
        m
    };
    let out = run_child(&t, &[], "umask", &[]);
    // SAFETY: restores the test process's mask.
    unsafe {
        libc::umask(mine);
    }
    // The child runs with 027 here, not the 077 clavitor sets for the server's files.
    assert_eq!(ok(&out).trim(), "0027");
}
