//! Shared test harness: a data dir in a temp folder, the real `clavitor` binary as CLI and as a
//! server on an ephemeral loopback port, and a small HTTP client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_clavitor");

/// The binary the harness runs: `CLAVITOR_TEST_BIN` if set (a benchmark points it at an
/// optimised build), else the one cargo built for the tests.
pub fn bin() -> String {
    std::env::var("CLAVITOR_TEST_BIN").unwrap_or_else(|_| BIN.to_owned())
}

/// A data dir initialised with `clavitor init`; `owner` is the owner's token.
pub struct Vault {
    pub tmp: tempfile::TempDir,
    pub owner: String,
    /// The one-time setup code `init` printed (used up once the owner exists).
    pub setup_code: String,
}

impl Vault {
    /// `init`, then the owner (agent 1, all access, admin) through the documented break-glass
    /// path `clavitor agent add --name Owner --all-access --admin` (no passkey enrolled).
    pub fn new() -> Self {
        let v = Self::uninitialised_owner();
        let (id, owner) = v.add_agent("Owner", &["--all-access", "--admin"]);
        assert_eq!(id, 1, "the owner is agent 1");
        Vault { owner, ..v }
    }

    /// `init` only: the vault waits for its owner's setup (the link's code is `setup_code`).
    pub fn uninitialised_owner() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut v = Vault { tmp, owner: String::new(), setup_code: String::new() };
        let out = v.cli(&["init"]);
        assert!(out.status.success(), "init failed: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(token_in(&stdout).is_none(), "init prints no token: {stdout}");
        v.setup_code = setup_code_in(&stdout).expect("init prints a setup link");
        v
    }

    pub fn dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    pub fn vault_file(&self) -> PathBuf {
        let dir = self.dir().join("vaults");
        std::fs::read_dir(&dir)
            .expect("vaults dir")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "db"))
            .expect("one vault file")
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_stdin(args, None)
    }

    /// Runs the CLI with extra environment variables.
    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(bin());
        cmd.arg("--data-dir").arg(self.dir()).args(args).env_remove("CLAVITOR_LOG");
        cmd.envs(env.iter().copied()).stdin(Stdio::null());
        cmd.output().expect("run clavitor")
    }

    pub fn cli_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(bin());
        cmd.arg("--data-dir").arg(self.dir()).args(args).env_remove("CLAVITOR_LOG");
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn clavitor");
        if let Some(input) = stdin {
            child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("wait clavitor")
    }

    /// Runs a CLI command that must succeed and prints JSON; returns the JSON.
    pub fn cli_json(&self, args: &[&str], stdin: Option<&str>) -> Value {
        let out = self.cli_stdin(args, stdin);
        assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Adds an entry from JSON; returns its id.
    pub fn add_entry(&self, json: &Value) -> i64 {
        let v = self.cli_json(&["entry", "add", "--json-file", "-", "--json"], Some(&json.to_string()));
        v["id"].as_i64().expect("entry id")
    }

    /// Adds an agent; returns (id, token).
    pub fn add_agent(&self, name: &str, extra: &[&str]) -> (i64, String) {
        let mut args = vec!["agent", "add", "--name", name, "--json"];
        args.extend_from_slice(extra);
        let v = self.cli_json(&args, None);
        (v["id"].as_i64().expect("agent id"), v["token"].as_str().expect("token").to_owned())
    }

    pub fn audit_rows(&self, node: bool) -> Vec<Value> {
        let mut args = vec!["audit", "list", "--json", "--limit", "100000"];
        if node {
            args.push("--node");
        }
        self.cli_json(&args, None).as_array().expect("rows").clone()
    }

    /// [`audit_rows`](Self::audit_rows) once `holds` is true of them, for at most 20 s; panics
    /// naming `what` otherwise. A read's row reaches the file a few milliseconds after its answer
    /// (the node's audit spool), and `audit list` run while a node holds the spool reads only
    /// what is in the file: a check of a row the server just wrote waits for it here.
    pub fn audit_rows_when(&self, node: bool, what: &str, holds: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let mut rows = Vec::new();
        eventually(&format!("the audit log to show {what}"), || {
            rows = self.audit_rows(node);
            holds(&rows)
        });
        rows
    }

    pub fn serve(&self) -> Server {
        Server::start(&self.dir(), &[])
    }
}

/// The code of a `…/setup#code=…` link.
pub fn setup_code_in(text: &str) -> Option<String> {
    let start = text.find("/setup#code=")? + "/setup#code=".len();
    Some(text[start..].chars().take_while(|c| c.is_ascii_hexdigit()).collect())
}

pub fn token_in(text: &str) -> Option<String> {
    let start = text.find("cvt_")?;
    Some(text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
}

/// The real binary serving on 127.0.0.1 with an ephemeral port. Killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub stdout: Vec<String>,
    /// The server's stdout lines after the API's address line (see [`Server::listening_on`]).
    later: std::sync::Mutex<mpsc::Receiver<String>>,
    stderr_file: PathBuf,
}

impl Server {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Self::start_env(data_dir, extra, &[])
    }

    pub fn start_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let stderr_file = data_dir.with_extension(format!("stderr-{}.log", std::process::id() ^ rand_u32()));
        if let Some(parent) = stderr_file.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        let err = std::fs::File::create(&stderr_file).expect("stderr file");
        let mut child = Command::new(bin())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("CLAVITOR_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let addr = loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        break rest.trim().parse().expect("address");
                    }
                    lines.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("server did not start: {}", std::fs::read_to_string(&stderr_file).unwrap_or_default());
                }
            }
        };
        Server { child, addr, stdout: lines, later: std::sync::Mutex::new(rx), stderr_file }
    }

    /// The address of the server's `kind` listener (`https`, `http-redirect`), from the line
    /// it prints once that listener is bound (after the API's line). Tests pass `:0` and read
    /// the port here: a port picked free beforehand can be taken by another test's server in
    /// between, and a connect to it then reaches that server instead.
    pub fn listening_on(&mut self, kind: &str) -> SocketAddr {
        let prefix = format!("clavitor {kind} listening on ");
        loop {
            let later = self.later.get_mut().unwrap_or_else(|p| p.into_inner());
            match later.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix(&prefix) {
                        return addr.trim().parse().expect("address");
                    }
                    self.stdout.push(line);
                }
                Err(_) => panic!("no {kind} listener: {}", self.stderr()),
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Resp {
        request(&self.url(path), "GET", token, None)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_file).unwrap_or_default()
    }

    /// Sends raw bytes and returns the raw response (for requests no client library would make).
    pub fn raw(&self, bytes: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let _ = s.write_all(bytes);
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, text)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.sigterm();
        self.exit_within(Duration::from_secs(10))
    }

    pub fn sigterm(&self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
    }

    /// The exit status, if the process ends within `limit` (polled every 100 ms).
    pub fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        for _ in 0..limit.as_millis().div_ceil(100) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The test failed: whether the server was still running, and what it said last.
            let state = match self.child.try_wait() {
                Ok(Some(status)) => format!("had exited: {status}"),
                Ok(None) => "still running".to_owned(),
                Err(e) => format!("unknown: {e}"),
            };
            let stderr = self.stderr();
            let lines: Vec<&str> = stderr.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "--- server on {} {state}; the last {} lines of its stderr:\n{}",
                self.addr,
                tail.len(),
                tail.join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr_file);
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    u32::from_le_bytes(b)
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

pub fn request(url: &str, method: &str, token: Option<&str>, body: Option<&[u8]>) -> Resp {
    request_with(url, method, token, &[], body)
}

pub fn request_with(
    url: &str,
    method: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    run_request(url, method, token, headers, body).unwrap_or_else(|e| panic!("HTTP request {method} {url}: {e}"))
}

/// Like [`request_with`], but a connection the server closed early (e.g. a 405 sent before a
/// large body was read) is `None` rather than a panic.
pub fn try_request(
    url: &str,
    method: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Option<Resp> {
    run_request(url, method, token, headers, body).ok()
}

fn run_request(
    url: &str,
    method: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Resp, ureq::Error> {
    let agent = client();
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        builder = builder.header("Authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    // JSON routes refuse a body not declared as JSON (415); tests that mean to send another
    // type say so in `headers`.
    if body.is_some() && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
        builder = builder.header("Content-Type", "application/json");
    }
    let req = builder.body(body.map(<[u8]>::to_vec).unwrap_or_default()).expect("request");
    let mut resp = agent.run(req)?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    Ok(Resp { status, headers, body })
}

/// Waits until `f` holds, for at most 20 s. The server picks up CLI changes within a fraction of
/// a second; the margin is for a loaded CI machine (tests that hold the server to a time bound
/// measure it themselves).
pub fn eventually(what: &str, f: impl FnMut() -> bool) {
    eventually_within(Duration::from_secs(20), what, f);
}

/// [`eventually`] with another bound, for what the server does only after a wait of its own.
pub fn eventually_within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if f() {
            return;
        }
        if std::time::Instant::now() >= deadline {
            panic!("timed out waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads from a raw connection until the end of an HTTP response head (20 s at most).
pub fn read_head(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed in the head: {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Reads one whole HTTP/1.1 response with a Content-Length body from a raw connection.
pub fn read_response(s: &mut TcpStream) -> String {
    let mut whole = read_head(s);
    let len: usize = whole
        .to_lowercase()
        .lines()
        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .expect("content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    whole.push_str(&String::from_utf8_lossy(&body));
    whole
}

/// The flags and environment that run a node with a roomy license (commercial builds cap a
/// vault without one: 5 agents, 2 passkeys, 100 entries). The vendor key is a throwaway made
/// here; the node is told its public half, as a real node is told the vendor's. Community: none.
pub fn roomy_license(dir: &Path) -> (Vec<String>, Vec<(String, String)>) {
    #[cfg(feature = "commercial")]
    {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        use clavitor::license::{LicenseInfo, Limit, Limits, canonical_payload};
        use ed25519_dalek::Signer;

        let key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
        let mut der = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
        der.extend_from_slice(key.verifying_key().as_bytes());
        let public = dir.join("test-vendor.pub.pem");
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", STANDARD.encode(&der));
        std::fs::write(&public, pem).expect("write public key");
        let limits = Limit::ALL.iter().map(|l| (*l, 10_000)).collect();
        let info = LicenseInfo {
            license_id: uuid::Uuid::new_v4(),
            tenant_id: "test".into(),
            label: Some("tests".into()),
            iat: 0,
            exp: 4_000_000_000,
            grace_period_days: 0,
            limits: Limits(limits),
        };
        let payload = canonical_payload(&info);
        let token =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(key.sign(&payload).to_bytes()));
        (
            vec!["--tenant-id".into(), "test".into(), "--license-public-key".into(), public.display().to_string()],
            vec![("CLAVITOR_LICENSE_TOKEN".into(), token)],
        )
    }
    #[cfg(not(feature = "commercial"))]
    {
        let _ = dir;
        (Vec::new(), Vec::new())
    }
}

/// The titles of the entries `token` lists, sorted.
pub fn titles(s: &Server, token: &str) -> Vec<String> {
    let r = s.get("/api/entries", Some(token));
    assert_eq!(r.status, 200, "{}", r.body);
    let mut t: Vec<String> =
        r.json().as_array().expect("list").iter().map(|e| e["title"].as_str().unwrap_or_default().to_owned()).collect();
    t.sort();
    t
}

/// A loopback Kuma stand-in: answers `{"ok":true}` and reports each request line.
pub fn kuma() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/push/t0ken", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(100) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
            }
            let _ =
                stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"ok\":true}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (url, rx)
}

pub fn percent_decoded(s: &str) -> String {
    s.replace('+', " ").replace("%20", " ").replace("%3A", ":").replace("%3B", ";").replace("%7C", "|")
}

/// The next push with `status=down` (of at most 20, each within 30 s), percent-decoded.
pub fn a_down_push(rx: &mpsc::Receiver<String>) -> String {
    for _ in 0..20 {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("a Kuma push");
        if line.contains("status=down") {
            return percent_decoded(&line);
        }
    }
    panic!("no down push");
}

/// One request a [`receiver`] read.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: std::time::Instant,
    pub method: String,
    /// The request target as sent: path and query.
    pub target: String,
    /// Names lowercased, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    /// The request line as sent (without the version).
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.target)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A loopback HTTP/1.1 receiver for what a node sends out (Kuma pushes, alerts, telemetry):
/// serves up to `max` connections one at a time, reads each request whole (10 s at most),
/// answers it with `answer`'s full response (`None`: holds the connection unanswered for 30 s,
/// so the sender must time out on its own) and hands the request to the test.
pub fn receiver(
    max: usize,
    answer: impl Fn(&Received) -> Option<String> + Send + 'static,
) -> (String, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let Some(request) = read_request(&stream) else { continue };
            match answer(&request) {
                Some(response) => {
                    let _ = stream.write_all(response.as_bytes());
                }
                None => {
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_secs(30));
                        drop(stream);
                    });
                }
            }
            if tx.send(request).is_err() {
                break;
            }
        }
    });
    (url, rx)
}

/// A response for [`receiver`]: `status` with `body` (and any `extra` header lines, each ending
/// in CRLF), closing the connection.
pub fn response(status: u16, extra: &str, body: &str) -> String {
    let reason = match status {
        200 => "OK",
        307 => "Temporary Redirect",
        404 => "Not Found",
        _ => "Status",
    };
    format!("HTTP/1.1 {status} {reason}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
}

/// One request from a raw connection: head, then a Content-Length body; `None` if it breaks off.
fn read_request(stream: &TcpStream) -> Option<Received> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let mut parts = line.split_whitespace();
    Some(Received {
        at: std::time::Instant::now(),
        method: parts.next().unwrap_or("").to_owned(),
        target: parts.next().unwrap_or("").to_owned(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
