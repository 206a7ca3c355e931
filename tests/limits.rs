//! The hardened listener (issue 12 §1): request heads of at most 16 KiB, bodies refused 413
//! before they are read, 408 for bodies that are slow or late, the connection caps, and all of
//! it the same on the TLS listener (static self-signed certificate from `openssl`), which alone
//! sends HSTS. Raw sockets throughout: no client library would send what these tests send.
//! Every read has a timeout; every loop is bounded.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Server, Vault};

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

/// How the tests reach one listener: plain, or TLS trusting the test certificate.
#[derive(Clone)]
enum Target {
    Plain(SocketAddr),
    Tls(SocketAddr, Arc<rustls::ClientConfig>),
}

impl Target {
    /// A connection from `source` (a loopback address) with a 10 s read timeout. TLS completes
    /// its handshake here; a connection refused by the caps fails it (None).
    fn connect_from(&self, source: &str) -> Option<Box<dyn Conn>> {
        let addr = match self {
            Target::Plain(a) | Target::Tls(a, _) => *a,
        };
        let tcp = connect_from(source, addr);
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        match self {
            Target::Plain(_) => Some(Box::new(tcp)),
            Target::Tls(_, config) => {
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                while tls.conn.is_handshaking() {
                    if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                        eprintln!("TLS handshake from {source}: {e}");
                        return None;
                    }
                }
                Some(Box::new(tls))
            }
        }
    }

    fn connect(&self) -> Box<dyn Conn> {
        self.connect_from("127.0.0.1").expect("connection")
    }
}

/// A TCP connection to `to` from the loopback address `source` (127.0.0.0/8 is all ours).
fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    try_connect_from(source, to).expect("connect")
}

/// [`connect_from`], or `None` if the connection is refused.
fn try_connect_from(source: &str, to: SocketAddr) -> Option<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let stream = socket.connect(to).await.ok()?;
        let std = stream.into_std().unwrap();
        std.set_nonblocking(false).unwrap();
        Some(std)
    })
}

/// One response: status, head (lower-cased) and body; None when the connection closed (or was
/// reset) before a byte of it came.
fn response(c: &mut dyn Conn) -> Option<(u16, String, String)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match c.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => return None,
            Err(e) if head.is_empty() && is_closed(&e) => return None,
            Err(e) => panic!("reading a response head: {e} after {:?}", String::from_utf8_lossy(&head)),
        }
    }
    let head = String::from_utf8(head).unwrap().to_lowercase();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let len: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())).unwrap_or(0);
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).unwrap();
    Some((status, head, String::from_utf8_lossy(&body).into_owned()))
}

fn is_closed(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::UnexpectedEof)
        || e.to_string().contains("close_notify")
}

/// True once the server has closed `c` (EOF or reset); false if it still sends or times out.
fn closed(c: &mut dyn Conn) -> bool {
    let mut buf = [0u8; 64];
    match c.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => is_closed(&e),
    }
}

fn health(c: &mut dyn Conn) -> Option<(u16, String, String)> {
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    c.flush().ok()?;
    response(c)
}

fn assert_json_error(body: &str, code: &str) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    assert_eq!(v["error"], code, "{body}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

/// A self-signed certificate for localhost / 127.0.0.1.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // Not a CA: webpki refuses a CA certificate as the server's own.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// The server with `extra` flags, and the targets to test: plain, and TLS when `tls`.
fn start(v: &Vault, extra: &[&str], tls: bool) -> (Server, Target) {
    let mut args: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
    if !tls {
        let s = Server::start(&v.dir(), extra);
        let t = Target::Plain(s.addr);
        return (s, t);
    }
    let (cert, key) = self_signed(v.tmp.path());
    args.extend([
        "--tls-cert".into(),
        cert.to_str().unwrap().into(),
        "--tls-key".into(),
        key.to_str().unwrap().into(),
        "--tls-listen".into(),
        "127.0.0.1:0".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut s = Server::start(&v.dir(), &args);
    let listen = s.listening_on("https");
    // The probe comes from an address no test uses, and waits until the server has closed it
    // (its TLS handshake read the end of the stream), so that it does not still hold a place
    // under the connection caps when a test's first connections arrive.
    common::eventually("the TLS listener accepts", || {
        let Some(mut probe) = try_connect_from("127.0.0.9", listen) else { return false };
        probe.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = probe.shutdown(std::net::Shutdown::Write);
        let _ = probe.read(&mut [0u8; 64]);
        true
    });
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&cert).unwrap();
    for c in rustls_pemfile_certs(&pem) {
        roots.add(c).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (s, Target::Tls(listen, Arc::new(config)))
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).map(Result::unwrap).collect()
}

// ---- the checks, each run on the plain and on the TLS listener ----

fn head_of(len: usize) -> Vec<u8> {
    let start = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Pad: ";
    let mut head = start.to_vec();
    head.resize(len - 4, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    head
}

fn heads_up_to_16_kib(t: &Target) {
    let mut c = t.connect();
    c.write_all(&head_of(15 * 1024)).unwrap();
    let (status, _, _) = response(&mut *c).expect("a 15 KiB head is answered");
    assert_eq!(status, 200);
    let mut c = t.connect();
    // The server may stop reading (and close) before all of it is written.
    let _ = c.write_all(&head_of(17 * 1024));
    let _ = c.flush();
    match response(&mut *c) {
        // Closed while the client was still writing (a reset can swallow the answer).
        None => {}
        Some((status, _, body)) => {
            assert_eq!(status, 431, "a 17 KiB head");
            assert_json_error(&body, "headers_too_large");
        }
    }
    assert!(closed(&mut *c), "the connection closes after a head over 16 KiB");
}

fn declared_oversize_body_is_refused_before_it_is_sent(t: &Target) {
    let mut c = t.connect();
    // 1 MiB declared, 10 bytes sent: the answer must come while the client still holds the rest.
    c.write_all(
        b"POST /api/setup/start HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 1048576\r\n\r\n{\"code\":\"",
    )
    .unwrap();
    c.flush().unwrap();
    let (status, head, body) = response(&mut *c).expect("an answer before the body");
    assert_eq!(status, 413, "{head}{body}");
    assert_json_error(&body, "payload_too_large");
    assert!(head.contains("connection: close"), "{head}");
    assert!(closed(&mut *c));
}

/// A client that sends its whole oversize body regardless still reads the 413: the server
/// drains what it sends after the answer instead of resetting the connection.
fn oversize_body_sent_in_full_still_gets_its_413(url: &str) {
    let body = vec![b' '; 1 << 20];
    for _ in 0..3 {
        let r = common::try_request(url, "POST", None, &[("Content-Type", "application/json")], Some(&body))
            .expect("the 413 arrives (no reset)");
        assert_eq!(r.status, 413, "{}", r.body);
        assert_json_error(&r.body, "payload_too_large");
    }
}

fn chunked_body_is_cut_at_the_limit(t: &Target) {
    let mut c = t.connect();
    c.write_all(b"POST /api/setup/start HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let chunk = [b"10000\r\n".as_slice(), &[b' '; 0x10000], b"\r\n"].concat();
    // Up to 8 chunks of 64 KiB (512 KiB); the server refuses after the fourth or fifth.
    let mut sent = 0;
    for _ in 0..8 {
        if c.write_all(&chunk).is_err() {
            break;
        }
        sent += 1;
    }
    let _ = c.flush();
    let (status, _, body) = response(&mut *c).expect("an answer");
    assert_eq!(status, 413, "after {sent} chunks: {body}");
    assert_json_error(&body, "payload_too_large");
}

fn slow_body_gets_408_and_the_connection_closes(t: &Target) {
    let mut c = t.connect();
    // Taken before the write: the server's clock starts once it has the head, never earlier.
    let started = Instant::now();
    c.write_all(
        b"POST /api/setup/start HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"code\"",
    )
    .unwrap();
    c.flush().unwrap();
    let (status, head, body) = response(&mut *c).expect("an answer to a late body");
    // --body-timeout-secs 2
    assert!(started.elapsed() >= Duration::from_millis(1500), "too early: {:?}", started.elapsed());
    assert_eq!(status, 408, "{head}{body}");
    assert_json_error(&body, "timeout");
    assert!(closed(&mut *c), "the connection closes after a 408");
}

fn connection_caps(t: &Target) {
    // --max-connections 4 --max-connections-per-ip 2
    let mut a1 = t.connect();
    let mut a2 = t.connect();
    assert_eq!(health(&mut *a1).unwrap().0, 200);
    assert_eq!(health(&mut *a2).unwrap().0, 200);
    match t.connect_from("127.0.0.1") {
        None => {}
        Some(mut a3) => {
            let started = Instant::now();
            assert!(health(&mut *a3).is_none(), "a third connection from one address is not served");
            assert!(started.elapsed() < Duration::from_secs(5), "closed at once, not after a timeout");
        }
    }
    let mut b1 = t.connect_from("127.0.0.2").expect("another address gets in");
    let mut c1 = t.connect_from("127.0.0.3").expect("up to the total cap");
    assert_eq!(health(&mut *b1).unwrap().0, 200);
    assert_eq!(health(&mut *c1).unwrap().0, 200);
    if let Some(mut d1) = t.connect_from("127.0.0.4") {
        assert!(health(&mut *d1).is_none(), "a fifth connection is not served");
    }
    // The existing ones keep working, keep-alive.
    for c in [&mut a1, &mut a2, &mut b1, &mut c1] {
        assert_eq!(health(&mut **c).unwrap().0, 200);
    }
    // A closed connection gives its place back (the server notices the close asynchronously).
    drop(c1);
    let mut ok = false;
    for _ in 0..50 {
        if let Some(mut d) = t.connect_from("127.0.0.4")
            && health(&mut *d).is_some_and(|r| r.0 == 200)
        {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "a place freed by a closed connection is taken by a new one");
}

#[test]
fn plain_listener_limits() {
    let v = Vault::new();
    let (_s, t) = start(&v, &["--body-timeout-secs", "2"], false);
    heads_up_to_16_kib(&t);
    declared_oversize_body_is_refused_before_it_is_sent(&t);
    chunked_body_is_cut_at_the_limit(&t);
    slow_body_gets_408_and_the_connection_closes(&t);
    oversize_body_sent_in_full_still_gets_its_413(&_s.url("/api/setup/start"));
    let mut c = t.connect();
    let (_, head, _) = health(&mut *c).unwrap();
    assert!(!head.contains("strict-transport-security"), "no HSTS over plain http: {head}");
}

#[test]
fn tls_listener_limits_are_the_same() {
    let v = Vault::new();
    let (_s, t) = start(&v, &["--body-timeout-secs", "2"], true);
    heads_up_to_16_kib(&t);
    declared_oversize_body_is_refused_before_it_is_sent(&t);
    chunked_body_is_cut_at_the_limit(&t);
    slow_body_gets_408_and_the_connection_closes(&t);
    let mut c = t.connect();
    let (status, head, _) = health(&mut *c).unwrap();
    assert_eq!(status, 200);
    assert!(head.contains("strict-transport-security: max-age=31536000"), "HSTS over TLS: {head}");
    // Errors and pages too.
    c.write_all(b"GET /setup HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let (_, head, _) = response(&mut *c).unwrap();
    assert!(head.contains("strict-transport-security: max-age=31536000"), "{head}");
    assert!(head.contains("content-security-policy"), "pages keep their CSP: {head}");
    c.write_all(b"GET /api/entries HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let (status, head, _) = response(&mut *c).unwrap();
    assert_eq!(status, 401);
    assert!(head.contains("strict-transport-security: max-age=31536000"), "{head}");
}

#[test]
fn plain_connection_caps() {
    let v = Vault::new();
    let (_s, t) = start(&v, &["--max-connections", "4", "--max-connections-per-ip", "2"], false);
    connection_caps(&t);
}

#[test]
fn tls_connection_caps() {
    let v = Vault::new();
    // The caps count the process's connections: the plain listener's too. None are open here.
    let (_s, t) = start(&v, &["--max-connections", "4", "--max-connections-per-ip", "2"], true);
    connection_caps(&t);
}

/// The floor rate: a body trickling in below `--body-min-rate` is cut off long before the
/// timeout (here 60 s). Takes about 6 s (the first 5 s are grace).
#[test]
fn a_body_below_the_floor_rate_gets_408() {
    let v = Vault::new();
    let s = Server::start(&v.dir(), &["--body-timeout-secs", "60", "--body-min-rate", "1000"]);
    let mut c = connect_from("127.0.0.1", s.addr);
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // Taken before the write: the server's clock starts once it has the head, never earlier.
    let started = Instant::now();
    c.write_all(b"POST /api/setup/start HTTP/1.1\r\nHost: localhost\r\nContent-Length: 60000\r\n\r\n").unwrap();
    // 10 bytes every 200 ms (50 B/s) until the server closes; at most 20 s.
    let mut writer = c.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) && writer.write_all(b"          ").is_ok() {
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let (status, _, body) = response(&mut c).expect("an answer");
    let elapsed = started.elapsed();
    assert_eq!(status, 408, "{body}");
    assert_json_error(&body, "timeout");
    assert!(elapsed >= Duration::from_secs(5), "not before the grace: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(15), "cut by the rate, not the 60 s timeout: {elapsed:?}");
    drop(c);
    let _ = trickle.join();
}

/// Commercial: connections held by the tarpit leave the listener's caps once handed off, so a
/// thousand held scanners do not take the places of real clients (`--max-connections 1060`:
/// 1000 held plus 100 real clients fit only if the held ones no longer count).
#[cfg(feature = "commercial")]
#[test]
fn tarpit_held_connections_leave_the_caps() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let v = Vault::new();
    let s = Server::start(&v.dir(), &["--max-connections", "1060", "--max-connections-per-ip", "1060"]);
    let mut held = Vec::new();
    // In batches of 50, each read up to its response head (written after the handoff), so no
    // more than 50 are ever waiting inside hyper.
    for _ in 0..20 {
        let mut batch = Vec::new();
        for _ in 0..50 {
            let mut c = connect_from("127.0.0.2", s.addr);
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            c.write_all(b"GET /wp-login.php HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            batch.push(c);
        }
        for c in &mut batch {
            let head = common::read_head(c);
            assert!(head.starts_with("HTTP/1.1 404") && head.contains("chunked"), "{head}");
        }
        held.extend(batch);
    }
    let t = Target::Plain(s.addr);
    let mut real: Vec<Box<dyn Conn>> = Vec::new();
    for i in 0..100 {
        let mut c = t.connect_from("127.0.0.1").expect("connection");
        let answer = health(&mut *c);
        assert_eq!(answer.map(|r| r.0), Some(200), "real client {i} with 1000 held");
        real.push(c);
    }
    drop(held);
}

#[test]
fn one_address_cannot_hold_more_than_its_share_of_the_body_budget() {
    // Eight 256 KiB bodies trickling from one address hold its 2 MiB share; the ninth is told
    // to come back (429) at once instead of queueing, and another address's body still goes
    // through at once.
    let v = Vault::new();
    let (_s, t) = start(&v, &[], false);
    let post = |len: usize| {
        format!(
            "POST /api/setup/start HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {len}\r\n\r\n{{\"code\":\""
        )
    };
    let mut holding = Vec::new();
    for _ in 0..8 {
        let mut c = t.connect_from("127.0.0.2").expect("connection");
        c.write_all(post(256 * 1024).as_bytes()).unwrap();
        c.flush().unwrap();
        holding.push(c);
    }
    // Let the server book the eight shares (a head each to parse; generous for a loaded
    // machine, since the ninth must find them booked).
    std::thread::sleep(Duration::from_secs(2));
    let mut ninth = t.connect_from("127.0.0.2").expect("connection");
    ninth.write_all(post(256 * 1024).as_bytes()).unwrap();
    ninth.flush().unwrap();
    let started = Instant::now();
    let (status, head, body) = response(&mut *ninth).expect("an answer at once");
    assert_eq!(status, 429, "{head}{body}");
    assert_json_error(&body, "too_many_requests");
    assert!(started.elapsed() < Duration::from_secs(5), "queued instead of refused: {:?}", started.elapsed());

    let mut other = t.connect_from("127.0.0.3").expect("connection");
    let small = r#"{"code":"00000000000000000000000000000000"}"#;
    let req = format!(
        "POST /api/setup/start HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{small}",
        small.len()
    );
    other.write_all(req.as_bytes()).unwrap();
    let (status, head, body) = response(&mut *other).expect("another address is served");
    assert_ne!(status, 429, "{head}{body}");
    assert_ne!(status, 408, "{head}{body}");
    drop(holding);
}
