//! Hostile input to every route: malformed JSON, oversized bodies, non-UTF-8, huge ids, SQL
//! metacharacters, path tricks, junk headers. Always a 4xx with a JSON error body, never a 5xx,
//! never a panic, and nothing changes.

mod common;

use common::{Vault, request};
use serde_json::{Value, json};

const ROUTES: &[&str] = &[
    "/healthz",
    "/api/entries",
    "/api/entries/1",
    "/api/search?q=a",
    "/api/ext/totp/1",
    "/api/agents",
    "/api/audit",
    // The WebAuthn-gated admin routes and their helpers (tests/webauthn.rs goes deeper).
    "/api/entries/1/scopes",
    "/api/agents/2",
    "/api/webauthn/challenge",
    "/api/passkeys",
    "/api/passkeys/AAAA",
    "/api/keyring",
    "/api/setup/start",
    "/api/setup/finish",
    "/api/webauthn/info",
];

fn assert_4xx_json(what: &str, status: u16, body: &str) {
    assert!((400..500).contains(&status), "{what}: status {status}, body {body:?}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: non-JSON error body {body:?}"));
    assert!(v["error"].is_string() && v["message"].is_string(), "{what}: {v}");
}

/// The body of a raw HTTP/1.1 response, with chunked framing removed.
fn body_of(raw: &str) -> String {
    let Some((head, body)) = raw.split_once("\r\n\r\n") else { return String::new() };
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[test]
fn every_route_survives_hostile_input() {
    let v = Vault::new();
    v.add_entry(&json!({"title": "Target", "fields": [{"name": "otp", "kind": "totp", "value": "JBSWY3DPEHPK3PXP"}]}));
    // The commercial edition tarpits unknown routes and wrong methods; hold them 1 s here.
    let s = common::Server::start_env(&v.dir(), &[], &[("CLAVITOR_TARPIT_HOLD_SECS", "1")]);
    let owner = v.owner.as_str();
    let before_entries = s.get("/api/entries", Some(owner)).body;
    let before_agents = v.cli_json(&["agent", "list", "--json"], None);

    std::thread::scope(|scope| {
        for route in ROUTES {
            let s = &s;
            scope.spawn(move || {
        // Methods that do not exist on these read routes, with malformed JSON bodies.
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let r = request(&s.url(route), method, Some(owner), Some(b"{\"title\": [unterminated"));
            assert_4xx_json(&format!("{method} {route} malformed JSON"), r.status, &r.body);
        }
        // Oversized body announced by Content-Length: refused before it is read.
        let big = format!(
            "POST {route} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {owner}\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\nConnection: close\r\n\r\n{{"
        );
        let (status, raw) = s.raw(big.as_bytes());
        assert_4xx_json(&format!("oversized body to {route}"), status, &body_of(&raw));
        // An actually large body on a GET: refused from its Content-Length (413), and the server
        // may close before the client finished writing, so a cut connection is fine too.
        let mut big_get = format!("GET {route} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {owner}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", 512 * 1024).into_bytes();
        big_get.extend(std::iter::repeat_n(b'x', 512 * 1024));
        let (status, raw) = s.raw(&big_get);
        assert!(status == 0 || status == 413, "large GET body to {route}: {status}");
        if status == 413 {
            assert_4xx_json(&format!("large GET body to {route}"), status, &body_of(&raw));
        }
        // Non-UTF-8 bytes in the Authorization header.
        let raw = format!("GET {route} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer cvt_\u{0}");
        let mut bytes = raw.into_bytes();
        bytes.extend_from_slice(b"\xff\xfe\r\n\r\n");
        let (status, raw) = s.raw(&bytes);
        assert!((400..500).contains(&status) || route == &"/healthz", "non-UTF-8 auth to {route}: {status}");
        if status >= 400 && !raw.is_empty() && !body_of(&raw).is_empty() {
            assert_4xx_json(&format!("non-UTF-8 auth to {route}"), status, &body_of(&raw));
        }
        });
        }
    });

    let tricky_paths = [
        "/api/entries/99999999999999999999999999",
        "/api/entries/-1",
        "/api/entries/0",
        "/api/entries/1e3",
        "/api/entries/%FF%FE",
        "/api/entries/1%00",
        "/api/entries/1;DROP%20TABLE%20entries",
        "/api/entries/1'%20OR%20'1'='1",
        "/api/entries/..%2f..%2fagents",
        "/api/entries/../agents",
        "/api/entries/1/",
        "/api/entries//1",
        "/api/ext/totp/99999999999999999999999999",
        "/api/ext/totp/%FF",
        "/api/ext/totp/1%20UNION%20SELECT%201",
        "/api/search?q=%FF%FE",
        "/api/search?q=%ZZ",
        "/api/search?q=a&limit=99999999999999999999999",
        "/api/search?q=a&limit=-5",
        "/api/audit?before=%FF",
        "/api/audit?limit=abc",
        "/api/audit?before=99999999999999999999999999",
        "/api/nope",
        "/../../etc/passwd",
        "/api/entries/1/../../agents",
    ];
    for path in tricky_paths {
        let raw =
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {owner}\r\nConnection: close\r\n\r\n");
        let (status, resp) = s.raw(raw.as_bytes());
        assert!(status < 500 && status != 0, "{path}: {status}");
        if status >= 400 {
            assert_4xx_json(path, status, &body_of(&resp));
        }
    }
    // SQL metacharacters in search are just text.
    let r = s.get("/api/search?q=%27%20OR%201%3D1%20--", Some(owner));
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!([]));
    let r = s.get(&format!("/api/search?q={}", "a".repeat(5000)), Some(owner));
    assert_4xx_json("overlong q", r.status, &r.body);

    // Huge headers: hyper refuses them (431 or a closed connection), the server lives on.
    let huge =
        format!("GET /api/entries HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\nConnection: close\r\n\r\n", "a".repeat(1 << 20));
    let (status, _) = s.raw(huge.as_bytes());
    assert!(status == 0 || (400..500).contains(&status), "huge header: {status}");
    // Non-UTF-8 raw bytes in the request line.
    let (status, _) = s.raw(b"GET /api/entries/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(status == 0 || (400..500).contains(&status), "raw non-UTF-8 path: {status}");
    // Garbage that is not HTTP at all.
    let (status, _) = s.raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n");
    assert!(status == 0 || (400..500).contains(&status));

    // Still alive, and nothing changed.
    assert_eq!(s.get("/healthz", None).status, 200);
    assert_eq!(s.get("/api/entries", Some(owner)).body, before_entries);
    assert_eq!(v.cli_json(&["agent", "list", "--json"], None), before_agents);
    assert!(!s.stderr().contains("panicked"), "{}", s.stderr());
}
