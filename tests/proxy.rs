//! The credential-brokering proxy (issue 18) with real processes: the `clavitor` server with
//! `--proxy-listen`, an HTTPS upstream on loopback with its own test CA that records every
//! request it receives and echoes it back, `curl` and Python `requests` (pinned, in a venv this
//! test creates) as agents.
//!
//! Both upstream names (`api.example.test`, `evil.example.test`) are mapped to 127.0.0.1 with
//! `--proxy-resolve`; the upstream's certificate covers both, so a request that reaches the
//! wrong name would succeed at the TLS level and show up in the record: the tests look there.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use common::{Server, Vault, eventually};
use rustls::pki_types::pem::PemObject as _;
use serde_json::{Value, json};

const KEY: &str = "sk-live-0123456789abcdef";
const USER: &str = "robot-user";
const PASS: &str = "pw-9f8e7d6c5b4a";
const QKEY: &str = "qk-ABCDEFGH12345678";

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
}

/// An HTTPS server on 127.0.0.1 for both test names, under a CA of its own.
struct Upstream {
    port: u16,
    ca_file: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// TLS connections accepted.
    conns: Arc<std::sync::atomic::AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

impl Upstream {
    fn start(dir: &Path) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "upstream test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["api.example.test".to_owned(), "evil.example.test".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let ca_file = dir.join("upstream-ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![leaf.der().clone()],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
                )
                .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let conns: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let counter = conns.clone();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                let record = record.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let record = record.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(req, &record).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Upstream { port, ca_file, seen, conns, _rt: rt }
    }

    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Echoes the request as JSON; `/redirect` answers 302 to the other host with the
/// Authorization it got in the URL (as a leaky upstream might).
async fn answer(req: hyper::Request<hyper::body::Incoming>, record: &Mutex<Vec<Seen>>) -> hyper::Response<String> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let seen = Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    record.lock().unwrap().push(seen.clone());
    // `/…/slow`: answers 2 s after the request was recorded (a request in flight at shutdown).
    if parts.uri.path().ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if parts.uri.path().starts_with("/redirect") {
        let auth = seen.header("authorization").first().copied().unwrap_or("").replace(' ', "+");
        return hyper::Response::builder()
            .status(302)
            .header("location", format!("https://evil.example.test/steal?a={auth}"))
            .header("x-echo-auth", seen.header("authorization").first().copied().unwrap_or(""))
            .body(String::new())
            .unwrap();
    }
    let echo = json!({"method": seen.method, "uri": seen.uri, "headers": seen.headers, "body": seen.body});
    // `/…/gzip`: claims an encoding the proxy did not ask for (the body is the plain echo).
    let encoding = if parts.uri.path().ends_with("/gzip") { "gzip" } else { "identity" };
    hyper::Response::builder()
        .header("content-encoding", encoding)
        .header("content-type", "application/json")
        .header("x-echo-auth", seen.header("authorization").first().copied().unwrap_or(""))
        .body(echo.to_string())
        .unwrap()
}

struct Setup {
    v: Vault,
    up: Upstream,
    server: Server,
    proxy: String,
    ca: PathBuf,
    agent: (i64, String),
    entry: i64,
}

fn setup() -> Setup {
    setup_with(&[])
}

fn setup_with(extra: &[&str]) -> Setup {
    let v = Vault::new();
    let up = Upstream::start(v.tmp.path());
    let agent = v.add_agent("robot", &[]);
    let scope = format!("{:04x}", agent.0);
    let entry = v.add_entry(&json!({
        "title": "Example API", "scopes": [scope],
        "fields": [
            {"name": "api_key", "kind": "secret", "value": KEY},
            {"name": "user", "kind": "text", "value": USER},
            {"name": "password", "kind": "secret", "value": PASS},
            {"name": "qkey", "kind": "secret", "value": QKEY},
        ],
        "inject": [
            {"host": "api.example.test", "path_prefix": "/v1/",
             "place": {"kind": "header", "name": "Authorization", "template": "Bearer {{api_key}}"}},
            {"host": "api.example.test", "path_prefix": "/redirect",
             "place": {"kind": "header", "name": "Authorization", "template": "Bearer {{api_key}}"}},
            {"host": "api.example.test", "path_prefix": "/basic/", "methods": ["GET"],
             "place": {"kind": "basic", "username_field": "user", "password_field": "password"}},
            {"host": "api.example.test", "path_prefix": "/q/",
             "place": {"kind": "query", "param": "key", "field": "qkey"}},
        ],
    }));
    // An entry the agent cannot read: its rule must never fire for it.
    v.add_entry(&json!({
        "title": "Not yours", "scopes": ["0fff"],
        "fields": [{"name": "k", "kind": "secret", "value": "other-secret-value"}],
        "inject": [{"host": "api.example.test", "place": {"kind": "header", "name": "X-Other", "template": "{{k}}"}}],
    }));
    let ca_arg = up.ca_file.to_str().unwrap().to_owned();
    let mut args = vec![
        "--proxy-listen",
        "127.0.0.1:0",
        "--proxy-upstream-ca",
        &ca_arg,
        "--proxy-resolve",
        "api.example.test=127.0.0.1,evil.example.test=127.0.0.1",
    ];
    args.extend_from_slice(extra);
    let server = Server::start(&v.dir(), &args);
    let proxy = server
        .stdout
        .iter()
        .find_map(|l| l.split("clavitor proxy listening on ").nth(1))
        .expect("the proxy's address is printed")
        .trim()
        .to_owned();
    let pem = server.get("/api/proxy/ca.pem", None);
    assert_eq!(pem.status, 200);
    assert_eq!(pem.header("content-type"), Some("application/x-pem-file"));
    let ca = v.tmp.path().join("vault-ca.pem");
    std::fs::write(&ca, &pem.body).unwrap();
    Setup { v, up, server, proxy, ca, agent, entry }
}

/// Runs curl through the proxy; returns (status, headers text, body).
fn curl(s: &Setup, token: Option<&str>, url: &str, extra: &[&str]) -> (u16, String, String) {
    let head = s.v.tmp.path().join("curl-head.txt");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--proxy", &format!("http://{}", s.proxy), "--cacert"])
        .arg(&s.ca)
        .arg("-D")
        .arg(&head)
        .args(["-w", "\n"])
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY");
    if let Some(t) = token {
        cmd.args(["--proxy-user", &format!("x:{t}")]);
    }
    let out = cmd.args(extra).arg(url).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, _) = text.rsplit_once('\n').unwrap_or(("", &text));
    // The last status line: the tunnel's answer, or the proxy's refusal of the CONNECT.
    let head = std::fs::read_to_string(&head).unwrap_or_default();
    let status = head
        .lines()
        .rfind(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head, body.to_owned())
}

fn url(s: &Setup, host: &str, path: &str) -> String {
    format!("https://{host}:{}{path}", s.up.port)
}

#[test]
fn curl_gets_the_credential_injected_for_the_named_host_only_and_never_sees_it() {
    let s = setup();
    let token = s.agent.1.clone();
    // Header placement; the agent's own Authorization is replaced, the answer is masked.
    let (status, head, body) =
        curl(&s, Some(&token), &url(&s, "api.example.test", "/v1/models?x=1"), &["-H", "Authorization: mine"]);
    assert_eq!(status, 200, "{head}{body}");
    let seen = s.up.take();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("authorization"), [format!("Bearer {KEY}")]);
    assert!(seen[0].header("x-other").is_empty(), "an entry the agent cannot read never injects");
    assert!(seen[0].header("proxy-authorization").is_empty(), "the agent's token stays with the proxy");
    assert!(seen[0].header("accept-encoding").is_empty(), "identity answers, so they can be masked");
    assert_eq!(seen[0].header("host"), [format!("api.example.test:{}", s.up.port)]);
    assert!(!body.contains(KEY) && !head.contains(KEY), "the echoed key is masked: {head}{body}");
    assert!(body.contains(&"*".repeat(KEY.len())), "{body}");
    let echoed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["method"], "GET");
    assert!(head.to_ascii_lowercase().contains(&format!("x-echo-auth: {}", "*".repeat(7 + KEY.len()))), "{head}");

    // Basic and query placements.
    let (status, _, body) = curl(&s, Some(&token), &url(&s, "api.example.test", "/basic/x"), &[]);
    assert_eq!(status, 200);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    assert_eq!(s.up.take()[0].header("authorization"), [format!("Basic {basic}")]);
    assert!(!body.contains(&basic) && !body.contains(PASS));
    let (status, _, body) = curl(&s, Some(&token), &url(&s, "api.example.test", "/q/list?a=1&key=mine"), &[]);
    assert_eq!(status, 200);
    assert_eq!(s.up.take()[0].uri, format!("/q/list?a=1&key={QKEY}"));
    assert!(!body.contains(QKEY), "{body}");
    // Method outside the rule: no Basic for a POST.
    let (status, _, _) = curl(&s, Some(&token), &url(&s, "api.example.test", "/basic/x"), &["-d", "a=1"]);
    assert_eq!(status, 200);
    assert!(s.up.take()[0].header("authorization").is_empty());

    // Another host: the tunnel works, nothing is injected, whatever names the allowed host.
    for (u, extra) in [
        (url(&s, "evil.example.test", "/v1/models"), vec![]),
        (url(&s, "evil.example.test", "/api.example.test/v1/models"), vec![]),
        (url(&s, "evil.example.test", "/v1/x?host=api.example.test"), vec!["-H", "X-Forwarded-Host: api.example.test"]),
    ] {
        let (status, _, body) = curl(&s, Some(&token), &u, &extra);
        assert_eq!(status, 200, "{u}: {body}");
        let seen = s.up.take();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].header("authorization").is_empty(), "{u}: {seen:?}");
        assert!(seen.iter().all(|r| !format!("{r:?}").contains(KEY)));
    }
    // A tunnel to evil.example.test whose request claims Host: api.example.test is refused.
    let (status, _, body) =
        curl(&s, Some(&token), &url(&s, "evil.example.test", "/v1/models"), &["-H", "Host: api.example.test"]);
    assert_eq!(status, 421, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"], "wrong_host");
    assert!(s.up.take().is_empty(), "nothing reached any upstream");

    // An upstream that encodes its answer anyway: refused, since it could not be masked.
    let (status, _, body) = curl(&s, Some(&token), &url(&s, "api.example.test", "/v1/gzip"), &[]);
    assert_eq!(status, 502, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"], "upstream_encoded");
    assert!(!body.contains(KEY));
    assert_eq!(s.up.take().len(), 1);

    // Redirects are handed back, never followed; the leaked value in Location is masked.
    let (status, head, _) = curl(&s, Some(&token), &url(&s, "api.example.test", "/redirect"), &[]);
    assert_eq!(status, 302);
    assert_eq!(s.up.take().len(), 1, "the proxy did not follow the redirect");
    assert!(!head.contains(KEY) && head.contains("location: https://evil.example.test/steal?a=Bearer+*"), "{head}");

    // No credentials, a malformed and an unknown token: 407 with a JSON body.
    let (status, head, body) = curl(&s, None, &url(&s, "api.example.test", "/v1/models"), &[]);
    assert_eq!(status, 407, "{head}{body}");
    let bad = format!("cvt_{}", "A".repeat(43));
    for t in ["nonsense", bad.as_str()] {
        let (status, _, _) = curl(&s, Some(t), &url(&s, "api.example.test", "/v1/models"), &[]);
        assert_eq!(status, 407);
    }
    assert!(s.up.take().is_empty());
    // Plain http is not proxied.
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--proxy", &format!("http://{}", s.proxy)])
        .args(["--proxy-user", &format!("x:{token}"), "http://api.example.test/v1/"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "405");

    // The audit: one inject row per injected request, before forwarding, naming entry, host and
    // path without the query; results; refusals (agent and anonymous); never a value.
    let rows = s.v.audit_rows(false);
    let of = |action: &str| rows.iter().filter(|r| r["action"] == action).collect::<Vec<_>>();
    let injects = of("proxy.inject");
    assert_eq!(injects.len(), 5, "{injects:?}");
    assert!(injects.iter().all(|r| r["entry_id"] == s.entry && r["agent_id"] == s.agent.0));
    let details: Vec<&str> = injects.iter().filter_map(|r| r["detail"].as_str()).collect();
    assert!(details.contains(&format!("GET api.example.test:{}/v1/models", s.up.port).as_str()), "{details:?}");
    assert!(details.contains(&format!("GET api.example.test:{}/q/list", s.up.port).as_str()), "no query: {details:?}");
    eventually("result rows", || s.v.audit_rows(false).iter().filter(|r| r["action"] == "proxy.result").count() == 5);
    assert!(
        of("proxy.refuse")
            .iter()
            .any(|r| r["agent_id"] == s.agent.0 && r["detail"].as_str().is_some_and(|d| d.contains("another host")))
    );
    let node_rows = s.v.audit_rows(true);
    assert!(node_rows.iter().filter(|r| r["action"] == "proxy.refuse" && r["outcome"] == "unauthorized").count() >= 3);
    let all = format!("{rows:?}{node_rows:?}");
    for secret in [KEY, PASS, QKEY, token.as_str()] {
        assert!(!all.contains(secret), "audit rows hold no values");
    }
    assert!(!s.server.stderr().contains(KEY), "logs hold no values");
}

/// A raw tunnel (CONNECT, then TLS with the vault CA) kept open across requests.
struct Tunnel {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl Tunnel {
    fn open(s: &Setup, host: &str, token: &str) -> Result<Self, String> {
        let mut tcp = TcpStream::connect(&s.proxy).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("x:{token}"));
        write!(
            tcp,
            "CONNECT {host}:{p} HTTP/1.1\r\nHost: {host}:{p}\r\nProxy-Authorization: Basic {auth}\r\n\r\n",
            p = s.up.port
        )
        .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match tcp.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                other => return Err(format!("connection ended: {other:?}")),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        if !head.starts_with("HTTP/1.1 200") {
            return Err(head);
        }
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(&s.ca).unwrap();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        Ok(Tunnel { tls: rustls::StreamOwned::new(conn, tcp) })
    }

    /// Sends a GET and reads the answer (status, body); `None` if the tunnel is closed.
    fn get(&mut self, host_header: &str, path: &str) -> Option<(u16, String)> {
        self.send(&format!("GET {path} HTTP/1.1\r\nHost: {host_header}\r\n\r\n"))
    }

    /// Sends a raw request and reads the answer.
    fn send(&mut self, request: &str) -> Option<(u16, String)> {
        self.tls.write_all(request.as_bytes()).ok()?;
        self.answer()
    }

    /// Reads the answer to a request sent before.
    fn answer(&mut self) -> Option<(u16, String)> {
        let mut reader = BufReader::new(&mut self.tls);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).ok()?;
        let status = status_line.split(' ').nth(1)?.parse().ok()?;
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).ok()?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().ok()?;
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).ok()?;
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

#[test]
fn revoking_the_agent_stops_its_open_tunnel_at_the_next_request() {
    let s = setup();
    let (id, token) = s.agent.clone();
    let host = format!("api.example.test:{}", s.up.port);
    let mut tunnel = Tunnel::open(&s, "api.example.test", &token).expect("tunnel");
    let (status, body) = tunnel.get(&host, "/v1/a").expect("first answer");
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains(KEY));
    assert_eq!(s.up.take()[0].header("authorization"), [format!("Bearer {KEY}")]);
    // The same tunnel, another Host: refused, nothing sent upstream.
    let (status, _) = tunnel.get(&format!("evil.example.test:{}", s.up.port), "/v1/a").expect("answer");
    assert_eq!(status, 421);
    assert!(s.up.take().is_empty());
    let out = s.v.cli(&["agent", "revoke", &id.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The watcher picks the revocation up within a fraction of a second (tried for 10 s at most
    // on a loaded machine); each try is a new request on the same tunnel until it is refused
    // (then the tunnel closes).
    let mut refused = false;
    for _ in 0..200 {
        match tunnel.get(&host, "/v1/b") {
            Some((407, body)) => {
                assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"], "unauthorized");
                refused = true;
                break;
            }
            Some((200, _)) => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(refused, "the revoked token was refused inside its tunnel");
    let before = s.up.take().len();
    assert!(Tunnel::open(&s, "api.example.test", &token).is_err_and(|h| h.starts_with("HTTP/1.1 407")));
    assert_eq!(s.up.take().len(), 0, "{before} requests went out before the revocation took");
}

/// SIGTERM drains the proxy as it drains the API: a request in flight inside a tunnel is
/// forwarded, answered and audited before the node exits; the tunnel then closes, and no new
/// tunnel is accepted.
#[test]
fn a_request_in_flight_in_a_tunnel_is_answered_before_the_node_stops() {
    let mut s = setup();
    let token = s.agent.1.clone();
    let host = format!("api.example.test:{}", s.up.port);
    let mut tunnel = Tunnel::open(&s, "api.example.test", &token).expect("tunnel");
    tunnel.tls.write_all(format!("GET /v1/slow HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).unwrap();
    // Bounded: the upstream records the request as soon as it arrives, then takes 2 s to answer.
    for _ in 0..200 {
        if !s.up.seen.lock().unwrap().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(s.up.take().len(), 1, "the request did not reach the upstream");
    s.server.sigterm();
    let (status, body) = tunnel.answer().expect("the request in flight was answered");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("/v1/slow") && !body.contains(KEY), "{body}");
    assert!(tunnel.get(&host, "/v1/a").is_none(), "the tunnel stayed open after the shutdown began");
    let status = s.server.exit_within(Duration::from_secs(15)).expect("the node exits after draining");
    assert!(status.success(), "{status:?}");
    assert!(TcpStream::connect(&s.proxy).is_err(), "the proxy still accepts connections");
    // Its inject row was committed before it left, and its result row before the node exited.
    let rows = s.v.audit_rows(false);
    let slow = |action: &str| {
        rows.iter()
            .filter(|r| r["action"] == action && r["detail"].as_str().is_some_and(|d| d.contains("/v1/slow")))
            .count()
    };
    assert_eq!((slow("proxy.inject"), slow("proxy.result")), (1, 1), "{rows:?}");
}

/// Python `requests`, pinned, in a venv under the target dir (created on first use).
fn python() -> PathBuf {
    const VERSION: &str = "2.32.3";
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("venv-proxy-requests-{VERSION}"));
    let py = venv.join("bin/python");
    let ok = |py: &Path| {
        Command::new(py)
            .args(["-c", &format!("import requests,sys; sys.exit(requests.__version__ != '{VERSION}')")])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(&py) {
        let _ = std::fs::remove_dir_all(&venv);
        assert!(
            Command::new("python3").arg("-m").arg("venv").arg(&venv).status().unwrap().success(),
            "python3 -m venv"
        );
        let pip = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", &format!("requests=={VERSION}")])
            .status()
            .unwrap();
        assert!(pip.success(), "pip install requests");
        assert!(ok(&py));
    }
    py
}

#[test]
fn python_requests_with_https_proxy_gets_the_header_and_a_masked_echo() {
    let s = setup();
    let py = python();
    let script = r#"
import json, os, sys, requests
s = requests.Session()
r = s.post(sys.argv[1], data={"form": "field value", "n": "1"}, verify=os.environ["REQUESTS_CA_BUNDLE"])
print(json.dumps({"status": r.status_code, "body": r.text, "auth_echo": r.headers.get("x-echo-auth")}))
"#;
    let out = Command::new(&py)
        .args(["-c", script, &url(&s, "api.example.test", "/v1/form")])
        .env("HTTPS_PROXY", format!("http://x:{}@{}", s.agent.1, s.proxy))
        .env("REQUESTS_CA_BUNDLE", &s.ca)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["status"], 200);
    let seen = s.up.take();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].header("authorization"), [format!("Bearer {KEY}")]);
    assert_eq!(seen[0].body, "form=field+value&n=1", "the form body passes untouched");
    let body = got["body"].as_str().unwrap();
    assert!(!body.contains(KEY) && body.contains("field+value"), "{body}");
    assert_eq!(got["auth_echo"].as_str().unwrap(), "*".repeat(7 + KEY.len()));
    // Without the vault CA, requests refuses the proxy's certificate: the agent must opt in.
    let out = Command::new(&py)
        .args(["-c", "import requests,sys; requests.get(sys.argv[1])", &url(&s, "api.example.test", "/v1/x")])
        .env("HTTPS_PROXY", format!("http://x:{}@{}", s.agent.1, s.proxy))
        .env_remove("REQUESTS_CA_BUNDLE")
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("SSL"));
    assert!(s.up.take().is_empty());
}

#[test]
fn the_ca_command_prints_the_served_certificate() {
    let s = setup();
    let out = s.v.cli(&["proxy", "ca"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), std::fs::read_to_string(&s.ca).unwrap());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("-----BEGIN CERTIFICATE-----"));
    let key = std::fs::read(s.v.dir().join("proxy-ca.key")).unwrap();
    assert!(!String::from_utf8_lossy(&key).contains("PRIVATE KEY"), "the CA key is sealed at rest");
    // Off by default: a server without --proxy-listen has no CA to hand out.
    drop(s.server);
    let plain = s.v.serve();
    assert_eq!(plain.get("/api/proxy/ca.pem", None).status, 404);
}

/// A zero rate, burst, timeout or response cap would make the proxy refuse everything (or, for a
/// rate, silently mean 1): `serve` refuses to start with the flag's name instead.
#[test]
fn zero_proxy_rates_timeouts_and_caps_are_refused_at_start() {
    let v = Vault::new();
    for flag in [
        "--proxy-rate",
        "--proxy-burst",
        "--proxy-idle-secs",
        "--proxy-lifetime-secs",
        "--proxy-upstream-idle-secs",
        "--proxy-max-response-bytes",
    ] {
        let arg = format!("{flag}=0");
        let out = v.cli(&["serve", "--listen", "127.0.0.1:0", "--proxy-listen", "127.0.0.1:0", &arg]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{arg}: {stderr}");
        assert!(stderr.contains(flag) && stderr.contains("0 is not in 1.."), "{arg}: {stderr}");
    }
}

/// The rules side through the proxy: an inject-only entry is injected while no read route
/// returns its value; a `proxy_only_listed` agent (and a token derived from it) may tunnel only
/// to hosts a rule names; an access request alone opens and injects nothing.
#[test]
fn inject_only_values_are_injected_never_read_and_proxy_only_listed_limits_hosts() {
    const ONLY: &str = "sk-inject-only-7Hq2Lm";
    let s = setup();
    let (agent, token) = s.agent.clone();
    let scope = format!("{agent:04x}");
    let only = s.v.add_entry(&json!({
        "title": "Only injected", "scopes": [scope], "inject_only": true,
        "fields": [{"name": "k", "kind": "secret", "value": ONLY}],
        "inject": [{"host": "api.example.test", "path_prefix": "/only/",
                    "place": {"kind": "header", "name": "X-Only", "template": "{{k}}"}}],
    }));
    eventually("the entry is served", || s.server.get(&format!("/api/entries/{only}"), Some(&token)).status == 200);
    let (status, _, body) = curl(&s, Some(&token), &url(&s, "api.example.test", "/only/x"), &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.up.take()[0].header("x-only"), [ONLY], "injected");
    assert!(!body.contains(ONLY), "the echo is masked: {body}");
    let view = s.server.get(&format!("/api/entries/{only}"), Some(&token));
    assert!(!view.body.contains(ONLY) && view.json()["inject_only"] == true, "{}", view.body);

    // An access request for an unlisted host grants nothing: passed through, nothing injected.
    let r = common::request_with(
        &s.server.url("/api/proxy/requests"),
        "POST",
        Some(&token),
        &[("Content-Type", "application/json")],
        Some(br#"{"host":"evil.example.test","reason":"please"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let (status, _, _) = curl(&s, Some(&token), &url(&s, "evil.example.test", "/only/x"), &[]);
    assert_eq!(status, 200);
    let seen = s.up.take();
    assert!(seen[0].header("x-only").is_empty() && seen[0].header("authorization").is_empty(), "{seen:?}");

    // proxy_only_listed: a host with a rule works, another is refused at CONNECT, also for a
    // token derived from the agent; the request on file changes nothing.
    let (_, strict) = s.v.add_agent("strict", &["--scopes", &scope, "--proxy-only-listed"]);
    eventually("the agent is known", || s.server.get("/api/whoami", Some(&strict)).status == 200);
    let r = common::request_with(
        &s.server.url("/api/tokens/derive"),
        "POST",
        Some(&strict),
        &[("Content-Type", "application/json")],
        Some(br#"{"name":"child","ttl_secs":600}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let child = r.json()["token"].as_str().unwrap().to_owned();
    for t in [&strict, &child] {
        let (status, _, _) = curl(&s, Some(t), &url(&s, "api.example.test", "/only/x"), &[]);
        assert_eq!(status, 200);
        assert_eq!(s.up.take()[0].header("x-only"), [ONLY]);
        let err = Tunnel::open(&s, "evil.example.test", t).err().expect("refused");
        assert!(err.starts_with("HTTP/1.1 403"), "{err}");
        assert!(s.up.take().is_empty());
    }
    let rows = s.v.audit_rows(false);
    assert!(
        rows.iter().any(|r| r["action"] == "proxy.refuse"
            && r["detail"].as_str().is_some_and(|d| d.contains("not listed: evil.example.test"))),
        "{rows:?}"
    );
    // The plain agent still passes through to the unlisted host.
    assert!(Tunnel::open(&s, "evil.example.test", &token).is_ok());
    // Judged at every request: once no rule names the host any more, the restricted agent's
    // open tunnel to it is refused at its next request.
    let host = format!("api.example.test:{}", s.up.port);
    let mut tunnel = Tunnel::open(&s, "api.example.test", &strict).expect("tunnel to a listed host");
    assert_eq!(tunnel.get(&host, "/only/x").map(|r| r.0), Some(200));
    s.up.take();
    for id in [only, s.entry] {
        let out = s.v.cli(&["entry", "rm", &id.to_string()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut refused = false;
    // Tried for 10 s at most (the watcher takes a fraction of a second; a loaded machine more).
    for _ in 0..200 {
        match tunnel.get(&host, "/only/x") {
            Some((403, body)) => {
                assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"], "host_not_allowed");
                refused = true;
                break;
            }
            Some((200, _)) => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(refused, "the open tunnel was refused once the host was no longer listed");
}

#[test]
fn limits_hold_tunnels_sizes_idle_rate_and_private_upstreams() {
    let s = setup_with(&[
        "--proxy-max-tunnels",
        "3",
        "--proxy-max-request-bytes",
        "64",
        "--proxy-max-response-bytes",
        "100",
        "--proxy-idle-secs",
        "1",
        "--proxy-rate",
        "1",
        "--proxy-burst",
        "8",
    ]);
    let token = s.agent.1.clone();
    let host = format!("api.example.test:{}", s.up.port);
    // Three connections fill the cap; a fourth is closed before a byte is read.
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&s.proxy).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fourth = TcpStream::connect(&s.proxy).unwrap();
    fourth.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = fourth.write_all(b"CONNECT api.example.test:1 HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    match fourth.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("over the cap, the connection is closed at once, not {other:?}"),
    }
    drop(held);
    drop(fourth);
    let mut tunnel = None;
    eventually("a slot again", || {
        tunnel = Tunnel::open(&s, "api.example.test", &token).ok();
        tunnel.is_some()
    });
    let mut tunnel = tunnel.unwrap();
    // A body over the request limit: 413, nothing sent.
    let body = "x".repeat(100);
    let post = format!("POST /v1/x HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100\r\n\r\n{body}");
    let (status, answer) = tunnel.send(&post).expect("answer");
    assert_eq!(status, 413, "{answer}");
    assert!(s.up.take().is_empty());
    // An answer over the response limit (the echo is longer than 100 bytes): 502.
    let (status, answer) = tunnel.get(&host, "/v1/big").expect("answer");
    assert_eq!(status, 502, "{answer}");
    assert_eq!(serde_json::from_str::<Value>(&answer).unwrap()["error"], "upstream_too_large");
    assert_eq!(s.up.take().len(), 1);
    // Idle for longer than --proxy-idle-secs: the proxy closes the tunnel.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(tunnel.get(&host, "/v1/x").is_none(), "an idle tunnel is closed");
    // A name DNS resolves to loopback (not pinned with --proxy-resolve) is not reached.
    let mut local = Tunnel::open(&s, "localhost", &token).expect("tunnel");
    let (status, answer) = local.get(&format!("localhost:{}", s.up.port), "/v1/x").expect("answer");
    assert_eq!(status, 403, "{answer}");
    assert_eq!(serde_json::from_str::<Value>(&answer).unwrap()["error"], "upstream_not_allowed");
    // The per-agent rate: a burst of CONNECTs ends in 429, audited.
    let refused = (0..20)
        .any(|_| matches!(Tunnel::open(&s, "api.example.test", &token), Err(h) if h.starts_with("HTTP/1.1 429")));
    assert!(refused, "the rate limit refused a CONNECT");
    let rows = s.v.audit_rows(false);
    assert!(
        rows.iter()
            .any(|r| r["action"] == "proxy.refuse"
                && r["detail"].as_str().is_some_and(|d| d.starts_with("rate limited")))
    );
}

#[test]
fn upstream_connections_are_kept_per_agent_and_host_and_let_go_when_quiet() {
    // Three seconds: the second tunnel below (a TCP connect, CONNECT and TLS handshake) must
    // find the first one's connection still kept on a loaded machine.
    let s = setup_with(&["--proxy-upstream-idle-secs", "3"]);
    let host = format!("api.example.test:{}", s.up.port);
    let conns = || s.up.conns.load(std::sync::atomic::Ordering::SeqCst);
    let mut tunnel = Tunnel::open(&s, "api.example.test", &s.agent.1).expect("tunnel");
    for _ in 0..3 {
        assert_eq!(tunnel.get(&host, "/v1/a").expect("answer").0, 200);
    }
    assert_eq!(conns(), 1, "one upstream connection carries a tunnel's requests");
    // The agent's next tunnel to the same host takes the kept connection: 1,000 tunnels do
    // not mean 1,000 upstream TLS sessions.
    let mut second = Tunnel::open(&s, "api.example.test", &s.agent.1).expect("second tunnel");
    assert_eq!(second.get(&host, "/v1/a").expect("answer").0, 200);
    assert_eq!(conns(), 1, "the agent's tunnels to one host share kept connections");
    // Another agent never gets a connection that carried this agent's credentials.
    let other = s.v.add_agent("other", &[]);
    let mut third = (0..100)
        .find_map(|_| {
            Tunnel::open(&s, "api.example.test", &other.1)
                .map_err(|_| std::thread::sleep(Duration::from_millis(100)))
                .ok()
        })
        .expect("the new agent's tunnel (once the server saw the agent)");
    assert_eq!(third.get(&host, "/v1/a").expect("answer").0, 200);
    assert_eq!(conns(), 2, "another agent's request went on a connection of its own");
    std::thread::sleep(Duration::from_millis(4500));
    assert_eq!(tunnel.get(&host, "/v1/a").expect("the tunnel is still open").0, 200);
    assert_eq!(conns(), 3, "the quiet upstream connection was closed and a new one opened");
    assert_eq!(s.up.take().len(), 6);
}
