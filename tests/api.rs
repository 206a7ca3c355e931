//! The agent read API against the real binary: token auth, the scope matrix, hidden-entry 404s,
//! search filtering, TOTP, audit rows, and the operator CLI's rules.

mod common;

use common::{Vault, eventually, read_response, request};
use serde_json::{Value, json};

fn login(title: &str, scopes: &[&str], password: &str) -> Value {
    json!({
        "title": title, "type": "login", "url": format!("https://{}.example", title.to_lowercase()),
        "scopes": scopes,
        "fields": [
            {"name": "username", "kind": "text", "value": "bot"},
            {"name": "password", "kind": "secret", "value": password},
        ]
    })
}

#[test]
fn token_failures_are_one_indistinguishable_401_and_audited() {
    let v = Vault::new();
    let (agent_id, token) = v.add_agent("doomed", &[]);
    let s = v.serve();
    assert_eq!(s.get("/api/entries", Some(&token)).status, 200);

    let revoke = v.cli(&["agent", "revoke", &agent_id.to_string()]);
    assert!(revoke.status.success());
    eventually("revoked token rejected", || s.get("/api/entries", Some(&token)).status == 401);

    let unknown = format!("cvt_{}", "A".repeat(43));
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("malformed", Some("Bearer not-a-token".into())),
        ("wrong scheme", Some(format!("Basic {token}"))),
        ("unknown", Some(format!("Bearer {unknown}"))),
        ("revoked", Some(format!("Bearer {token}"))),
    ];
    let mut bodies = Vec::new();
    for (what, header) in &cases {
        let mut req = ureq::http::Request::builder().uri(s.url("/api/entries"));
        if let Some(h) = header {
            req = req.header("Authorization", h);
        }
        let mut resp = common::client().run(req.body(Vec::new()).unwrap()).unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{what}");
        assert_eq!(resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap()), Some("Bearer"), "{what}");
        bodies.push(resp.body_mut().read_to_string().unwrap());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "401 bodies differ: {bodies:?}");
    let body: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body["error"], "unauthorized");

    // The running node moves its spooled rows into node.db within milliseconds; the CLI reads
    // node.db.
    let reasons_of = |rows: &[Value]| -> Vec<String> {
        rows.iter()
            .filter(|r| r["outcome"] == "unauthorized")
            .filter_map(|r| r["detail"].as_str().map(str::to_owned))
            .collect()
    };
    eventually("the failed authentications are in the node's audit log", || {
        let reasons = reasons_of(&v.audit_rows(true));
        ["missing", "malformed", "unknown"].iter().all(|want| reasons.iter().any(|r| r == want))
    });
    let node_rows = v.audit_rows(true);
    assert!(node_rows.iter().all(|r| !r.to_string().contains(&token[4..])), "token material in the audit log");
    assert!(!s.stderr().contains(&token[4..]), "token in the logs");
}

#[test]
fn scope_matrix_for_all_four_roles() {
    let v = Vault::new();
    // Agents first, so their ids (and scopes) are known: 2..=5.
    let roles = [
        ("scoped", &[][..], false, false),
        ("read-all", &["--all-access"][..], true, false),
        ("scoped-admin", &["--admin"][..], false, true),
    ];
    let mut agents = vec![(1i64, v.owner.clone(), true, true)];
    for (name, flags, all, admin) in roles {
        let (id, token) = v.add_agent(name, flags);
        agents.push((id, token, all, admin));
    }
    let (outsider_id, _) = v.add_agent("outsider", &[]);
    let mut cases = Vec::new(); // (entry id, entry scope kind)
    for (id, token, all, admin) in &agents {
        let own = format!("{id:04x}");
        let other = format!("{outsider_id:04x}");
        let empty = v.add_entry(&login(&format!("Empty{id}"), &[], "p-empty"));
        let matching = v.add_entry(&login(&format!("Match{id}"), &[&own, &other], "p-match"));
        let nonmatching = v.add_entry(&login(&format!("Other{id}"), &[&other], "p-other"));
        cases.push((token.clone(), *all, *admin, empty, matching, nonmatching));
    }
    let s = v.serve();
    for (token, all, admin, empty, matching, nonmatching) in &cases {
        let role = format!("all_access={all} admin={admin}");
        let get = |id: i64| s.get(&format!("/api/entries/{id}"), Some(token));
        assert_eq!(get(*empty).status, if *all { 200 } else { 404 }, "{role}: empty scopes are owner-only");
        let m = get(*matching);
        assert_eq!(m.status, 200, "{role}: matching scope");
        assert_eq!(m.json()["fields"][1]["value"], "p-match");
        assert!(m.header("x-clavitor-audit-id").is_some());
        let n = get(*nonmatching);
        assert_eq!(n.status, if *all { 200 } else { 404 }, "{role}: non-matching scope");
        if !*all {
            // Hidden must look exactly like missing.
            let missing = s.get("/api/entries/999999", Some(token));
            assert_eq!(n.status, missing.status);
            assert_eq!(n.body, missing.body);
        }
        let listed: Vec<i64> = s
            .get("/api/entries", Some(token))
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect();
        assert_eq!(listed.contains(empty), *all, "{role}: list/empty");
        assert!(listed.contains(matching), "{role}: list/matching");
        assert_eq!(listed.contains(nonmatching), *all, "{role}: list/non-matching");
        for path in ["/api/agents", "/api/audit"] {
            let r = s.get(path, Some(token));
            assert_eq!(r.status, if *admin { 200 } else { 403 }, "{role}: {path}");
            if !*admin {
                assert_eq!(r.json()["reason"], "not_admin", "{role}: {path}: {}", r.body);
            }
        }
    }

    // Audit rows for the reads and the denials above.
    let rows = v.audit_rows(false);
    let (scoped_token_id, _, _, _) = &agents[1];
    let scoped = &cases[1];
    let has = |action: &str, outcome: &str, entry: i64| {
        rows.iter().any(|r| {
            r["action"] == action
                && r["outcome"] == outcome
                && r["entry_id"] == entry
                && r["agent_id"] == *scoped_token_id
        })
    };
    assert!(has("entry.read", "ok", scoped.4), "read row");
    assert!(has("entry.read", "denied", scoped.3), "denied row for an owner-only entry");
    assert!(has("entry.read", "denied", scoped.5), "denied row for a foreign-scope entry");
    assert!(rows.iter().any(|r| r["action"] == "entry.read" && r["outcome"] == "not_found" && r["entry_id"] == 999999));
    assert!(rows.iter().any(|r| r["action"] == "audit.read" && r["outcome"] == "denied" && r["detail"] == "not_admin"));
    assert!(rows.iter().all(|r| r["client"] == "127.0.0.1" || r["client"] == "local"));
}

#[test]
fn search_is_case_insensitive_and_scope_filtered() {
    let v = Vault::new();
    let (id, token) = v.add_agent("searcher", &[]);
    let own = format!("{id:04x}");
    v.add_entry(&json!({"title": "GitHub Deploy", "type": "api_key", "url": "https://github.com", "scopes": [own]}));
    v.add_entry(&json!({"title": "GitLab", "url": "https://gitlab.com", "scopes": []}));
    v.add_entry(&json!({"title": "Mail", "type": "login", "url": "https://mail.example/GITHUB-sso", "scopes": [own]}));
    let s = v.serve();
    let titles = |token: &str, q: &str| -> Vec<String> {
        let r = s.get(&format!("/api/search?q={q}"), Some(token));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json().as_array().unwrap().iter().map(|e| e["title"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(titles(&token, "github"), vec!["GitHub Deploy", "Mail"]);
    assert_eq!(titles(&token, "GIT"), vec!["GitHub Deploy", "Mail"], "GitLab is owner-only");
    assert_eq!(titles(&v.owner, "git"), vec!["GitHub Deploy", "GitLab", "Mail"]);
    assert_eq!(titles(&token, "API_KEY"), vec!["GitHub Deploy"], "type is searched");
    assert!(titles(&token, "nothing-like-this").is_empty());
    assert_eq!(s.get("/api/search?q=git&limit=1", Some(&token)).json().as_array().unwrap().len(), 1);
    assert_eq!(s.get("/api/search", Some(&token)).status, 400);
    assert_eq!(s.get("/api/search?q=git&limit=0", Some(&token)).status, 400);
    // A change made on the command line is searchable without a restart.
    v.add_entry(&json!({"title": "GitHub Late", "scopes": [own]}));
    eventually("new entry searchable", || titles(&token, "late") == vec!["GitHub Late"]);
    let rows = v.audit_rows_when(false, "the agent's search", |rows| {
        rows.iter().any(|r| r["action"] == "entry.search" && r["agent_id"] == id)
    });
    assert!(rows.iter().all(|r| !r.to_string().contains("nothing-like-this")), "search text must not be audited");
}

#[test]
fn totp_codes_match_rfc6238_and_l2_secrets_are_refused() {
    let v = Vault::new();
    // The RFC 6238 test seeds, as otpauth URIs with 8 digits, for each hash.
    // RFC 6238 Appendix B: ASCII "1234567890" repeated to 20, 32 and 64 bytes.
    let b32 = |n: usize| {
        totp_rs::Secret::Raw(b"1234567890".iter().cycle().take(n).copied().collect()).to_encoded().to_string()
    };
    let seeds = [("SHA1", b32(20)), ("SHA256", b32(32)), ("SHA512", b32(64))];
    let mut ids = Vec::new();
    for (alg, secret) in &seeds {
        let uri = format!("otpauth://totp/RFC:{alg}?secret={secret}&algorithm={alg}&digits=8&period=30");
        ids.push((
            alg,
            secret,
            v.add_entry(
                &json!({"title": format!("RFC {alg}"), "fields": [{"name": "otp", "kind": "totp", "value": uri}]}),
            ),
        ));
    }
    let l2 = v.add_entry(&json!({"title": "L2 otp", "fields": [{"name": "otp", "kind": "totp", "tier": "l2", "value": "v2.AAAAAAAAAAAAAAAA.c2VjcmV0Y2lwaGVydGV4dA"}]}));
    let none = v.add_entry(&json!({"title": "no otp"}));
    let s = v.serve();
    for (alg, secret, id) in ids {
        let algorithm = match *alg {
            "SHA1" => totp_rs::Algorithm::SHA1,
            "SHA256" => totp_rs::Algorithm::SHA256,
            _ => totp_rs::Algorithm::SHA512,
        };
        let bytes = totp_rs::Secret::Encoded(secret.to_string()).to_bytes().unwrap();
        let reference = totp_rs::TOTP::new_unchecked(algorithm, 8, 1, 30, bytes, None, String::new());
        // Our reference implementation is itself checked against the RFC's table.
        let table = match *alg {
            "SHA1" => "94287082",
            "SHA256" => "46119246",
            _ => "90693936",
        };
        assert_eq!(reference.generate(59), table);
        let before = now();
        let r = s.get(&format!("/api/ext/totp/{id}"), Some(&v.owner));
        let after = now();
        assert_eq!(r.status, 200, "{}", r.body);
        let body = r.json();
        let code = body["code"].as_str().unwrap();
        assert!(code == reference.generate(before) || code == reference.generate(after), "{alg}: {code}");
        assert_eq!(body["digits"], 8);
        assert_eq!(body["period"], 30);
        // The entry itself never hands out the seed.
        let entry = s.get(&format!("/api/entries/{id}"), Some(&v.owner)).json();
        assert!(!entry.to_string().contains(secret.as_str()));
    }
    let r = s.get(&format!("/api/ext/totp/{l2}"), Some(&v.owner));
    assert_eq!(r.status, 422);
    assert!(r.json()["message"].as_str().unwrap().contains("L2"));
    assert_eq!(s.get(&format!("/api/ext/totp/{none}"), Some(&v.owner)).status, 422);
    assert_eq!(s.get("/api/ext/totp/424242", Some(&v.owner)).status, 404);
    v.audit_rows_when(false, "the code read", |rows| {
        rows.iter().any(|r| r["action"] == "totp.read" && r["outcome"] == "ok")
    });
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn the_last_admin_cannot_be_revoked() {
    let v = Vault::new();
    let out = v.cli(&["agent", "revoke", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("last admin"), "{}", String::from_utf8_lossy(&out.stderr));
    let (second, _) = v.add_agent("second admin", &["--admin"]);
    assert!(v.cli(&["agent", "revoke", "1"]).status.success(), "with another admin the owner may go");
    let out = v.cli(&["agent", "revoke", &second.to_string()]);
    assert!(!out.status.success(), "now the second admin is the last one");
    let agents = v.cli_json(&["agent", "list", "--json"], None);
    assert_eq!(agents.as_array().unwrap().len(), 1);
    assert!(!v.cli(&["agent", "revoke", "77"]).status.success());
    // A revoked id (and its scope) is never reused.
    let (next, _) = v.add_agent("next", &[]);
    assert!(next > second);
}

#[test]
fn audit_pages_backwards() {
    let v = Vault::new();
    let s = v.serve();
    for _ in 0..5 {
        assert_eq!(s.get("/api/entries", Some(&v.owner)).status, 200);
    }
    let first = s.get("/api/audit?limit=2", Some(&v.owner)).json();
    let rows = first["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let next = first["next_before"].as_i64().unwrap();
    let second = s.get(&format!("/api/audit?limit=2&before={next}"), Some(&v.owner)).json();
    assert!(second["rows"][0]["id"].as_i64().unwrap() < next);
    assert_eq!(request(&s.url("/api/audit?before=abc"), "GET", Some(&v.owner), None).status, 400);
}

#[test]
fn health_reports_edition_and_shutdown_is_graceful() {
    let v = Vault::new();
    let mut s = v.serve();
    let h = s.get("/healthz", None).json();
    assert_eq!(h["status"], "ok");
    let expected = if cfg!(feature = "commercial") { "commercial" } else { "community" };
    assert_eq!(h["edition"], expected);
    let status = s.terminate().expect("server exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    let version = std::process::Command::new(common::BIN).arg("version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains(expected));
}

#[test]
fn shutdown_finishes_in_flight_requests_and_does_not_wait_for_idle_connections() {
    use std::io::Write;
    let v = Vault::new();
    let mut s = v.serve();
    // An idle keep-alive connection, after one request.
    let mut idle = std::net::TcpStream::connect(s.addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(read_response(&mut idle).starts_with("HTTP/1.1 200"));
    // A request whose body is still arriving when SIGTERM comes.
    let mut slow = std::net::TcpStream::connect(s.addr).unwrap();
    let body = br#"{"name":"late","scopes":[]}"#;
    let head = format!(
        "POST /api/agents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        v.owner,
        body.len()
    );
    slow.write_all(head.as_bytes()).unwrap();
    slow.write_all(&body[..5]).unwrap();
    // Time for the server to take the connection and start on the body before SIGTERM.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    s.sigterm();
    std::thread::sleep(std::time::Duration::from_millis(300));
    slow.write_all(&body[5..]).unwrap();
    let answer = read_response(&mut slow);
    // No passkey assertion came with it: the WebAuthn gate refuses, but it does answer.
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert!(answer.contains(r#""error""#), "{answer}");
    let status = s.terminate().expect("server exits though a keep-alive connection is open");
    assert!(status.success(), "{status:?}");
    drop(idle);
}

/// A request whose body never finishes cannot hold up a stop: after the grace period (10 s) the
/// server drops it and exits.
#[test]
fn a_request_that_never_finishes_does_not_hold_up_shutdown() {
    use std::io::{Read, Write};
    let v = Vault::new();
    let mut s = v.serve();
    let mut stuck = std::net::TcpStream::connect(s.addr).unwrap();
    let head = format!(
        "POST /api/agents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        v.owner
    );
    stuck.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    s.sigterm();
    let status = s
        .exit_within(std::time::Duration::from_secs(30))
        .unwrap_or_else(|| panic!("still running {:?} after SIGTERM", started.elapsed()));
    assert!(status.success(), "{status:?}");
    // The stuck client sees its connection end rather than hang.
    stuck.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let ended = match stuck.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(ended, "the stuck connection was left open");
    eprintln!("exited {:?} after SIGTERM with a request stuck mid-body", started.elapsed());
}

/// Slow-loris: a connection that never finishes its request head is closed after hyper's 30 s
/// limit instead of being held forever (this test takes that long).
#[test]
fn a_request_head_that_never_finishes_is_cut_off() {
    use std::io::{Read, Write};
    let v = Vault::new();
    let s = v.serve();
    let started = std::time::Instant::now();
    let mut slow = std::net::TcpStream::connect(s.addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(90))).unwrap();
    let mut got = Vec::new();
    // Ends with EOF (or a reset) once the server gives up; a read timeout means it never did.
    match slow.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the connection was still open after {:?}: {e}", started.elapsed()),
    }
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"), "{got:?}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(20), "cut off early: {:?}", started.elapsed());
    // The server is fine and still answers others.
    assert_eq!(s.get("/healthz", None).status, 200);
}

#[test]
fn a_flood_of_bad_tokens_is_throttled_but_valid_tokens_are_not() {
    let v = Vault::new();
    let s = v.serve();
    let bad = format!("cvt_{}", "B".repeat(43));
    let mut statuses = Vec::new();
    for _ in 0..200 {
        statuses.push(s.get("/api/entries", Some(&bad)).status);
    }
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert!(throttled > 0, "no throttling after 200 failures");
    let r = s.get("/api/entries", Some(&bad));
    if r.status == 429 {
        assert_eq!(r.json()["error"], "too_many_requests");
    }
    // The owner, from the same address, is not affected.
    assert_eq!(s.get("/api/entries", Some(&v.owner)).status, 200);
    // Throttled failures are not each written to the audit log.
    let rows = v.audit_rows(true).iter().filter(|r| r["outcome"] == "unauthorized").count();
    assert!(rows < 200, "{rows} audit rows for 200 failures");
}
