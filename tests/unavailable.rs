//! A vault that cannot be opened at start does not stop the node (issue 12 §6): `serve` comes up,
//! answers that vault's requests 503 with a clear reason, reports down to Kuma with the reason,
//! raises an operator alert, and /healthz says `degraded`.

mod common;

use common::{Server, Vault, a_down_push, kuma};
use serde_json::json;

fn start(v: &Vault, kuma_url: &str) -> Server {
    Server::start(&v.dir(), &["--kuma-push-url", kuma_url, "--kuma-interval-secs", "1", "--kuma-disk-down-pct", "100"])
}

#[test]
fn a_vault_file_that_does_not_open_is_answered_503_and_reported_down() {
    let v = Vault::new();
    v.add_entry(&json!({"title": "t", "fields": []}));
    // Garbage over the SQLite header: the file no longer opens at all.
    let file = v.vault_file();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[..100].fill(0x5a);
    std::fs::write(&file, bytes).unwrap();
    let (url, rx) = kuma();
    let s = start(&v, &url);

    let h = s.get("/healthz", None);
    assert_eq!(h.status, 503, "{}", h.body);
    assert_eq!(h.json()["status"], "degraded");
    assert_eq!(h.json()["vaults_unavailable"], 1);

    let r = s.get("/api/entries", Some(&v.owner));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "vault_unavailable");
    assert!(r.json()["message"].as_str().unwrap().contains("operator has been alerted"), "{}", r.body);
    // Its agents cannot be read either, so an unknown token might be one of them: 503, not 401.
    let unknown = format!("cvt_{}", "A".repeat(43));
    assert_eq!(s.get("/api/entries", Some(&unknown)).status, 503);

    let push = a_down_push(&rx);
    assert!(push.contains("unavailable"), "{push}");
    assert!(s.stderr().contains("vault_unavailable"), "operator alert: {}", s.stderr());
}

#[test]
fn a_vault_from_a_newer_build_is_503_for_its_own_tokens_only() {
    let v = Vault::new();
    let conn = rusqlite::Connection::open(v.vault_file()).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let (url, rx) = kuma();
    let s = start(&v, &url);
    let r = s.get("/api/entries", Some(&v.owner));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.json()["message"].as_str().unwrap().contains("unavailable"));
    // Its agents could be read, so a token that is nobody's is the usual 401.
    let unknown = format!("cvt_{}", "A".repeat(43));
    assert_eq!(s.get("/api/entries", Some(&unknown)).status, 401);
    let push = a_down_push(&rx);
    assert!(push.contains("newer"), "the reason reaches Kuma: {push}");
}
