//! Editions: what a community binary lacks, operator alerts (local line; commercial POST to HQ),
//! commercial settings validation, and the commercial tarpit.

mod common;

use std::time::Duration;
#[cfg(not(feature = "commercial"))]
use std::time::Instant;

use common::{Server, Vault};
use serde_json::json;

/// Makes entry 1 undecryptable and tells the server it changed, so its watcher raises an alert.
fn corrupt_entry_one(v: &Vault) {
    let conn = rusqlite::Connection::open(v.vault_file()).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'change_seq';
         UPDATE entries SET data = zeroblob(64), change_seq = (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'change_seq') WHERE id = 1;
         COMMIT;",
    )
    .unwrap();
}

fn vault_with_entry() -> Vault {
    let v = Vault::new();
    v.add_entry(&json!({"title": "victim", "fields": [{"name": "pw", "kind": "secret", "value": "x"}]}));
    v
}

/// Strings only commercial code puts into the binary. The commercial run checks that each is in
/// its binary (so a marker that went stale fails there) and the community run that none is in
/// its own: together, a marker found in neither binary fails. Add one per commercial room.
const COMMERCIAL_MARKERS: &[&str] = &[
    "/v1/alerts",
    "CLAVITOR_TARPIT_HOLD_SECS",
    "CLAVITOR_TARPIT_MAX",
    "cannot deliver operator alerts to HQ",
    "alert-sender",
    // issue 15: licenses, caps and management tokens
    "/api/license",
    "max_agents_per_vault",
    "CLAVITOR_LICENSE_TOKEN",
    "CLAVITOR_LICENSE_PUBLIC_KEY",
    "CLAVITOR_TENANT_ID",
    "license_state",
    "reject_license",
    "cap_exceeded",
    "No license installed",
    // issue 16 §2, §5: bulk agents and autoscope
    "/api/mgmt/agents/bulk",
    "/api/autoscope",
    "CLAVITOR_AUTOSCOPE_LLM_URL",
    "autoscope never takes values",
    // issue 16 §4: SCIM provisioning
    "/api/scim/v2",
    "urn:ietf:params:scim:api:messages:2.0:Error",
    "a valid provisioning token is required",
    // issue 16: hosted vaults and the cross-vault audit feed
    "/api/mgmt/vaults",
    "/api/mgmt/audit",
    "CLAVITOR_VAULT_RETIRE_GRACE_SECS",
    "clavitor-cursor",
    "vault-retire",
    "cannot copy audit rows into the feed",
    // issue 14: replication to a backup POP (every route and config key)
    "/api/replication/apply",
    "replication-config",
    "clavitor-replication-v1",
    "x-clavitor-signature",
    "signing_key_file",
    "max_request_age_s",
    "rate_limit_per_s",
    "ban_after_failures",
    "ban_duration_s",
    "max_body_bytes",
    "this node is not a replication backup",
    "replication.send",
    "replication-worker",
    "poll_interval_s",
    "replication_lag_s",
    "transport_key_file",
    // rows travel: the apply's refusals and the divergence check
    "not_a_replica",
    "unknown_vault",
    "digest=in_sync",
];

fn binary_text() -> String {
    String::from_utf8_lossy(&std::fs::read(common::BIN).unwrap()).into_owned()
}

#[cfg(feature = "commercial")]
#[test]
fn every_commercial_marker_is_in_the_commercial_binary() {
    let text = binary_text();
    let missing: Vec<&&str> = COMMERCIAL_MARKERS.iter().filter(|m| !text.contains(**m)).collect();
    assert!(missing.is_empty(), "markers not in the commercial binary (stale: replace them): {missing:?}");
}

fn start_with_env(v: &Vault, env: &[(&str, &str)]) -> Server {
    Server::start_env(&v.dir(), &[], env)
}

#[test]
fn operator_alerts_go_to_the_local_log() {
    let v = vault_with_entry();
    let (agent, token) = v.add_agent("bystander", &[]);
    let s = start_with_env(&v, &[]);
    corrupt_entry_one(&v);
    common::eventually("alert line", || s.stderr().contains("OPERATOR ALERT [vault_rows_damaged]"));
    // The damaged entry is withheld, not served half-read.
    common::eventually("entry withheld", || s.get("/api/entries/1", Some(&v.owner)).status == 404);
    // The server keeps serving, and a revocation still takes effect despite the damaged row.
    assert_eq!(s.get("/healthz", None).status, 200);
    assert_eq!(s.get("/api/entries", Some(&token)).status, 200);
    assert!(v.cli(&["agent", "revoke", &agent.to_string()]).status.success());
    common::eventually("revocation applied", || s.get("/api/entries", Some(&token)).status == 401);
}

#[cfg(not(feature = "commercial"))]
mod community {
    use super::*;

    #[test]
    fn the_community_binary_contains_no_commercial_code() {
        let text = binary_text();
        for needle in COMMERCIAL_MARKERS {
            assert!(!text.contains(needle), "{needle:?} is in the community binary");
        }
        // The commercial edition's name appears only as data, never as the running edition.
        let out = std::process::Command::new(common::BIN).arg("version").output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("(community)"));
    }

    #[test]
    fn the_community_edition_has_no_caps() {
        // More than the commercial default tier's 5 agents and 2 passkeys' worth of creates.
        let v = Vault::new();
        for n in 2..=8 {
            v.add_agent(&format!("agent-{n}"), &[]);
        }
        let lines: String =
            (0..120).map(|n| format!("{}\n", json!({"title": format!("e{n}"), "fields": []}))).collect();
        let out = v.cli_stdin(&["entry", "import", "--file", "-"], Some(&lines));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(v.cli_json(&["agent", "list", "--json"], None).as_array().unwrap().len(), 8);
        // No license subcommands either.
        assert!(!v.cli(&["license", "show"]).status.success());
        assert!(!v.cli(&["mgmt", "token", "list"]).status.success());
    }

    #[test]
    fn commercial_routes_get_an_immediate_plain_404() {
        let v = Vault::new();
        let s = v.serve();
        for (method, path) in [
            ("POST", "/api/mgmt/agents/bulk"),
            ("DELETE", "/api/mgmt/agents/bulk"),
            ("GET", "/api/mgmt/audit"),
            ("POST", "/api/scim/v2/Users"),
            ("DELETE", "/api/scim/v2/Users/7"),
            ("GET", "/api/scim/v2/ServiceProviderConfig"),
            ("PATCH", "/api/scim/v2/Groups/1"),
            ("POST", "/api/scim/tokens"),
            ("POST", "/api/scim/grants"),
            ("POST", "/api/autoscope"),
            ("POST", "/api/replication/apply"),
            ("POST", "/v1/alerts"),
            ("POST", "/api/license"),
            ("GET", "/api/license/usage"),
            ("GET", "/wp-login.php"),
        ] {
            let started = Instant::now();
            let r = common::request(&s.url(path), method, Some(&v.owner), Some(b"{}"));
            assert_eq!(r.status, 404, "{method} {path}");
            assert_eq!(r.json()["error"], "not_found");
            assert!(started.elapsed() < Duration::from_secs(5), "{method} {path} was held");
        }
        let r = common::request(&s.url("/api/entries"), "DELETE", Some(&v.owner), None);
        assert_eq!(r.status, 405);
        assert_eq!(r.json()["error"], "method_not_allowed");
    }

    #[test]
    fn commercial_environment_is_ignored_with_one_warning() {
        let v = Vault::new();
        let s = start_with_env(
            &v,
            &[("TELEMETRY_HOST", "http://127.0.0.1:9"), ("TELEMETRY_TOKEN", "t"), ("POP_REGION", "x")],
        );
        assert_eq!(s.get("/healthz", None).status, 200);
        common::eventually("warning", || s.stderr().contains("configure the commercial edition and are ignored"));
        assert_eq!(s.stderr().matches("are ignored").count(), 1);
        assert!(!s.stderr().contains("OPERATOR ALERT"));
    }
}

#[cfg(feature = "commercial")]
mod commercial {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    use serde_json::Value;

    use super::*;
    use common::{read_head, read_response};

    #[test]
    fn alerts_are_posted_to_hq_with_the_reference_payload() {
        let (url, rx) = common::receiver(50, |_| Some(common::response(200, "", "{}")));
        let v = vault_with_entry();
        let s = start_with_env(
            &v,
            &[("TELEMETRY_HOST", &url), ("TELEMETRY_TOKEN", "hq-secret-token"), ("POP_REGION", "test-region-1")],
        );
        corrupt_entry_one(&v);
        // Node telemetry (POST /v1/telemetry, tests/node.rs) shares the receiver: skip it.
        let alert = std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(30)).ok())
            .take(10)
            .find(|r| r.target != "/v1/telemetry")
            .expect("alert POST");
        assert_eq!(alert.line(), "POST /v1/alerts");
        assert_eq!(alert.header("authorization"), Some("Bearer hq-secret-token"));
        assert_eq!(alert.header("content-type"), Some("application/json"));
        let p: Value = serde_json::from_str(&alert.body).unwrap();
        assert_eq!(p["edition"], "commercial");
        assert_eq!(p["type"], "vault_rows_damaged");
        assert!(p["message"].as_str().unwrap().contains("withheld"));
        assert!(p["details"]["error"].as_str().unwrap().contains("decrypt"));
        assert!(p["hostname"].is_string());
        assert_eq!(p["pop_region"], "test-region-1");
        let ts = p["timestamp"].as_str().unwrap();
        assert!(ts.len() == 20 && ts.ends_with('Z') && &ts[10..11] == "T", "{ts}");
        let keys: Vec<&String> = p.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 7, "{keys:?}");
        assert!(s.stderr().contains("OPERATOR ALERT [vault_rows_damaged]"));
        assert!(!s.stderr().contains("hq-secret-token"), "token in the logs");
    }

    #[test]
    fn a_dead_or_hanging_hq_does_not_slow_requests() {
        let (url, _rx) = common::receiver(50, |_| None);
        let v = vault_with_entry();
        let s = start_with_env(&v, &[("TELEMETRY_HOST", &url), ("TELEMETRY_TOKEN", "t")]);
        corrupt_entry_one(&v);
        common::eventually("alert raised", || s.stderr().contains("OPERATOR ALERT"));
        // The sender is now stuck on a connection that never answers (and then on retries).
        // A request that waited on the sender would take its 5 s timeout: each one is bounded
        // well below that, and the whole run loosely (a loaded machine slows all of them).
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        for _ in 0..200 {
            let t = Instant::now();
            assert_eq!(s.get("/healthz", None).status, 200);
            assert_eq!(s.get("/api/entries", Some(&v.owner)).status, 200);
            slowest = slowest.max(t.elapsed());
        }
        assert!(slowest < Duration::from_millis(2500), "a request waited on the sender: {slowest:?}");
        assert!(started.elapsed() < Duration::from_secs(60), "requests were slowed: {:?}", started.elapsed());
    }

    #[test]
    fn invalid_commercial_settings_stop_the_start_with_a_clear_error() {
        for (env, expect) in [
            (vec![("TELEMETRY_HOST", "http://hq.example.com")], "https://"),
            (vec![("TELEMETRY_HOST", "https://hq.example.com")], "no token"),
            (
                vec![("TELEMETRY_HOST", "https://hq.example.com"), ("TELEMETRY_TOKEN", "t"), ("TELEMETRY_FREQ", "5")],
                "10 to 86400",
            ),
            (
                vec![("TELEMETRY_HOST", "https://hq.example.com"), ("TELEMETRY_TOKEN_FILE", "/nonexistent/token")],
                "cannot read",
            ),
            (vec![("CLAVITOR_TARPIT_MAX", "0")], "CLAVITOR_TARPIT_MAX"),
            (vec![("CLAVITOR_TARPIT_HOLD_SECS", "301")], "CLAVITOR_TARPIT_HOLD_SECS must be 0 to 300"),
        ] {
            let v = Vault::new();
            let out = std::process::Command::new(common::BIN)
                .arg("--data-dir")
                .arg(v.dir())
                .args(["serve", "--listen", "127.0.0.1:0"])
                .envs(env.iter().copied())
                .output()
                .unwrap();
            assert!(!out.status.success(), "{env:?} was accepted");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(expect), "{env:?}: {err}");
        }
    }

    fn send_unknown(addr: std::net::SocketAddr) -> TcpStream {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /wp-admin/setup.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        s
    }

    #[test]
    fn tarpit_drips_one_byte_a_second_then_answers() {
        let v = Vault::new();
        let s = start_with_env(&v, &[("CLAVITOR_TARPIT_HOLD_SECS", "3")]);
        let started = Instant::now();
        let mut conn = send_unknown(s.addr);
        let head = read_head(&mut conn);
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        let mut arrivals = Vec::new();
        let mut body = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            arrivals.push(started.elapsed());
            body.extend_from_slice(&buf[..n]);
        }
        let elapsed = started.elapsed();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains(r#"{"error":"not_found""#), "{text}");
        // Chunked framing: each dripped space is its own one-byte chunk.
        assert!(text.matches("1\r\n \r\n").count() >= 2, "the dripped spaces: {text:?}");
        assert!(elapsed >= Duration::from_millis(2500), "released early: {elapsed:?}");
        assert!(elapsed < Duration::from_secs(15), "held too long: {elapsed:?}");
        // Several separate arrivals spread over the hold, not one burst at the end.
        assert!(arrivals.len() >= 3, "{arrivals:?}");
        assert!(arrivals[arrivals.len() - 1] - arrivals[0] >= Duration::from_millis(1500), "{arrivals:?}");
    }

    /// A hold of 0 turns the tarpit off: the JSON 404 comes whole at once, no space dripped.
    #[test]
    fn a_tarpit_hold_of_0_answers_at_once() {
        let v = Vault::new();
        let s = start_with_env(&v, &[("CLAVITOR_TARPIT_HOLD_SECS", "0")]);
        let mut conn = send_unknown(s.addr);
        // The default hold (30 s) would outlast this: the read would fail.
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).expect("the whole answer within 10 s");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 404"), "{text}");
        assert!(text.contains(r#"{"error":"not_found""#), "{text}");
        assert!(!text.contains("1\r\n \r\n"), "a space was dripped: {text:?}");
    }

    /// The plain listener hands a tarpitted socket over from hyper; that must work on a
    /// kept-alive connection too, after real requests were answered on it.
    #[test]
    fn tarpit_takes_over_a_kept_alive_connection_and_head_is_answered_at_once() {
        let v = Vault::new();
        let s = start_with_env(&v, &[("CLAVITOR_TARPIT_HOLD_SECS", "2")]);
        let mut conn = TcpStream::connect(s.addr).unwrap();
        for _ in 0..2 {
            conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let answer = read_response(&mut conn);
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
        let started = Instant::now();
        conn.write_all(b"GET /.env HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let head = read_head(&mut conn);
        assert!(head.starts_with("HTTP/1.1 404") && head.contains("chunked"), "{head}");
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
        let rest = String::from_utf8_lossy(&rest);
        assert!(rest.matches("1\r\n \r\n").count() >= 1, "{rest:?}");
        assert!(rest.ends_with("\r\n0\r\n\r\n") && rest.contains(r#"{"error":"not_found""#), "{rest:?}");
        assert!(started.elapsed() >= Duration::from_millis(1500), "not held: {:?}", started.elapsed());

        // HEAD has no body to drip: a bodiless 404 at once, even with the full 30 s hold.
        let s = start_with_env(&v, &[]);
        let started = Instant::now();
        let mut head_req = TcpStream::connect(s.addr).unwrap();
        head_req.write_all(b"HEAD /wp-login.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        head_req.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut whole = String::new();
        head_req.read_to_string(&mut whole).unwrap();
        assert!(whole.starts_with("HTTP/1.1 404") && whole.ends_with("\r\n\r\n"), "{whole:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "HEAD was held: {:?}", started.elapsed());
    }

    #[test]
    fn tarpit_caps_at_1000_and_releases_everyone_on_shutdown() {
        let _ = rlimit::increase_nofile_limit(u64::MAX);
        let v = Vault::new();
        // All 1000 come from 127.0.0.1: lift the per-address cap (64), which would close the
        // 65th connection while earlier ones still wait for their handoff.
        let mut s = start_with_env(&v, &[("CLAVITOR_MAX_CONNECTIONS_PER_IP", "1024")]);
        let mut held: Vec<TcpStream> = (0..1000).map(|_| send_unknown(s.addr)).collect();
        for conn in held.iter_mut() {
            assert!(read_head(conn).starts_with("HTTP/1.1 404"));
        }
        // The 1001st: a plain 404 at once, whole.
        let started = Instant::now();
        let mut extra = send_unknown(s.addr);
        extra.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut whole = String::new();
        extra.read_to_string(&mut whole).unwrap();
        assert!(
            whole.starts_with("HTTP/1.1 404") && whole.ends_with(r#"{"error":"not_found","message":"not found"}"#),
            "{whole}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "1001st was held: {:?}", started.elapsed());
        // Real routes still work while 1000 are held.
        assert_eq!(s.get("/healthz", None).status, 200);

        // Shutdown releases every held connection promptly, and the process exits.
        let started = Instant::now();
        s.sigterm();
        for conn in held.iter_mut() {
            let mut rest = Vec::new();
            conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            conn.read_to_end(&mut rest).unwrap();
            assert!(String::from_utf8_lossy(&rest).contains("not_found"));
        }
        let released = started.elapsed();
        let status = s.terminate().expect("server exits");
        assert!(status.success());
        assert!(released < Duration::from_secs(5), "held connections released after {released:?}");
        eprintln!("tarpit: 1000 held connections released {released:?} after SIGTERM");
    }
}
