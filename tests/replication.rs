//! Replication (commercial, issue 14): the replication file's validation and the backup's gate
//! for signed apply requests, against the real binary. Each test is named after the item of the
//! security review (security-review-replication.md) it closes.
#![cfg(feature = "commercial")]

mod common;
#[path = "common/fault_proxy.rs"]
mod fault_proxy;
#[path = "common/passkey.rs"]
mod passkey;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{Server, Vault};
use ed25519_dalek::{Signer, SigningKey};
use fault_proxy::{FaultProxy, Mode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SOURCE: &str = "calgary-01";

/// `openssl pkey -pubout`'s base64 line for an Ed25519 key.
fn spki_b64(key: &SigningKey) -> String {
    let mut der = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
    der.extend_from_slice(key.verifying_key().as_bytes());
    STANDARD.encode(der)
}

/// The backup's own signing key, made by openssl as an operator makes it, mode 0600.
fn openssl_key(dir: &Path) -> PathBuf {
    let path = dir.join("pop.key.pem");
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&path)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    set_mode(&path, 0o600);
    path
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A backup POP `zurich-01` that accepts `calgary-01` signing with `source`.
struct Backup {
    v: Vault,
    s: Server,
    source: SigningKey,
}

fn backup_config(v: &Vault, source: &SigningKey, extra: &str) -> PathBuf {
    let key = openssl_key(v.tmp.path());
    let text = format!(
        "pop_id = \"zurich-01\"\nrole = \"backup\"\nsigning_key_file = \"{}\"\n{extra}\n\n[[sources]]\nid = \"{SOURCE}\"\npublic_key = \"{}\"\n",
        key.display(),
        spki_b64(source)
    );
    let path = v.tmp.path().join("replication.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn backup(extra: &str) -> Backup {
    let v = Vault::new();
    let source = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let cfg = backup_config(&v, &source, extra);
    let s = Server::start(&v.dir(), &["--replication-config", cfg.to_str().unwrap()]);
    Backup { v, s, source }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A signed request as a primary sends it: (headers, body).
struct Signed {
    pop: String,
    ts: i64,
    nonce: String,
    sig: String,
    body: Vec<u8>,
}

fn sign_with(key: &SigningKey, pop: &str, ts: i64, entries: Value) -> Signed {
    sign_batch(key, pop, ts, "v1", entries)
}

fn sign_batch(key: &SigningKey, pop: &str, ts: i64, vault: &str, entries: Value) -> Signed {
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let body = serde_json::to_vec(
        &json!({"source_pop": pop, "vault": vault, "timestamp": ts, "nonce": nonce, "entries": entries}),
    )
    .unwrap();
    let msg = format!(
        "clavitor-replication-v1\nPOST\n/api/replication/apply\n{ts}\n{nonce}\n{}",
        hex::encode(Sha256::digest(&body))
    );
    let sig = hex::encode(key.sign(msg.as_bytes()).to_bytes());
    Signed { pop: pop.into(), ts, nonce, sig, body }
}

fn send(s: &Server, r: &Signed) -> common::Resp {
    let ts = r.ts.to_string();
    common::request_with(
        &s.url("/api/replication/apply"),
        "POST",
        None,
        &[
            ("x-clavitor-pop", &r.pop),
            ("x-clavitor-timestamp", &ts),
            ("x-clavitor-nonce", &r.nonce),
            ("x-clavitor-signature", &r.sig),
        ],
        Some(&r.body),
    )
}

fn replication_audit(v: &Vault) -> Vec<Value> {
    v.audit_rows(true).into_iter().filter(|r| r["action"] == "replication.apply").collect()
}

fn refused_with(b: &Backup, r: &Signed, status: u16, code: &str) {
    let before = replication_audit(&b.v).len();
    let resp = send(&b.s, r);
    assert_eq!(resp.status, status, "{}", resp.body);
    assert_eq!(resp.json()["error"], code, "{}", resp.body);
    let rows = replication_audit(&b.v);
    assert_eq!(rows.len(), before + 1, "one audit row per attempt");
    let last = rows.iter().max_by_key(|r| r["id"].as_i64()).unwrap();
    assert_eq!(last["outcome"], "refused");
    assert!(last["detail"].as_str().unwrap().contains(code), "{last}");
}

#[test]
fn item_1_2_signed_batch_from_an_authorised_pop_is_accepted_and_audited() {
    let b = backup("rate_limit_per_s = 0");
    let r = sign_with(&b.source, SOURCE, now(), json!([]));
    let resp = send(&b.s, &r);
    assert_eq!(resp.status, 200, "{}", resp.body);
    let rows = replication_audit(&b.v);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["outcome"], "ok");
    assert_eq!(rows[0]["actor"], "pop:calgary-01");
    assert!(rows[0]["detail"].as_str().unwrap().contains("count=0"));
}

#[test]
fn item_1_2_14_unknown_pop_wrong_key_tampered_body_and_unsigned_are_refused() {
    let b = backup("rate_limit_per_s = 0");
    let stranger = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    refused_with(&b, &sign_with(&b.source, "evil-01", now(), json!([])), 401, "unknown_pop");
    refused_with(&b, &sign_with(&stranger, SOURCE, now(), json!([])), 401, "bad_signature");
    let mut tampered = sign_with(&b.source, SOURCE, now(), json!([]));
    tampered.body = String::from_utf8(tampered.body).unwrap().replace("\"v1\"", "\"v2\"").into_bytes();
    refused_with(&b, &tampered, 401, "bad_signature");
    let mut unsigned = sign_with(&b.source, SOURCE, now(), json!([]));
    unsigned.sig = String::new();
    refused_with(&b, &unsigned, 401, "unsigned");
    // Authentication failures alert the operator.
    common::eventually("alert", || b.s.stderr().contains("OPERATOR ALERT [replication_auth]"));
}

#[test]
fn item_4_replayed_request_is_refused() {
    let b = backup("rate_limit_per_s = 0");
    let r = sign_with(&b.source, SOURCE, now(), json!([]));
    assert_eq!(send(&b.s, &r).status, 200);
    refused_with(&b, &r, 401, "replayed");
}

#[test]
fn item_4_timestamp_window_4_minutes_accepted_6_minutes_refused_with_reason() {
    let b = backup("rate_limit_per_s = 0");
    for skew in [-240, 240] {
        let resp = send(&b.s, &sign_with(&b.source, SOURCE, now() + skew, json!([])));
        assert_eq!(resp.status, 200, "skew {skew}: {}", resp.body);
    }
    for skew in [-360, 360] {
        refused_with(&b, &sign_with(&b.source, SOURCE, now() + skew, json!([])), 401, "clock_skew");
    }
    let last = replication_audit(&b.v).into_iter().max_by_key(|r| r["id"].as_i64()).unwrap();
    assert!(last["detail"].as_str().unwrap().contains("off this POP's clock"), "{last}");
    // A skewed clock is not an attack: no ban, and the next in-window request goes through.
    let resp = send(&b.s, &sign_with(&b.source, SOURCE, now(), json!([])));
    assert_eq!(resp.status, 200, "{}", resp.body);
}

#[test]
fn item_15_oversized_body_is_refused_before_it_is_read() {
    let b = backup("rate_limit_per_s = 0\nmax_body_bytes = 2048");
    let big = json!([{"pad": "x".repeat(4096)}]);
    refused_with(&b, &sign_with(&b.source, SOURCE, now(), big), 413, "body_too_large");
}

#[test]
fn item_10_flood_past_the_rate_limit_is_refused() {
    let b = backup("");
    let statuses: Vec<u16> =
        (0..6).map(|_| send(&b.s, &sign_with(&b.source, SOURCE, now(), json!([]))).status).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    let rows = replication_audit(&b.v);
    assert_eq!(rows.len(), 6, "every attempt audited");
    assert!(rows.iter().any(|r| r["detail"].as_str().unwrap().contains("rate_limited")));
}

/// Sleeps to just after the next second boundary, so two requests sent at once share a
/// second of the backup's per-second rate window.
fn at_second_start() {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_millis();
    std::thread::sleep(std::time::Duration::from_millis(u64::from(1000 - ms) + 10));
}

#[test]
fn item_10_a_stranger_spoofing_a_pop_id_cannot_spend_its_rate_budget() {
    // 1 request/s: a stranger's bad signature in the same second used to be charged first,
    // leaving the real POP a 429.
    let b = backup("rate_limit_per_s = 1");
    let stranger = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    for _ in 0..3 {
        at_second_start();
        let spoofed = send(&b.s, &sign_with(&stranger, SOURCE, now(), json!([])));
        assert_eq!(spoofed.status, 401, "{}", spoofed.body);
        let real = send(&b.s, &sign_with(&b.source, SOURCE, now(), json!([])));
        assert_eq!(real.status, 200, "{}", real.body);
    }
}

#[test]
fn item_10_ban_after_repeated_failed_authentications() {
    let b = backup("rate_limit_per_s = 0\nban_after_failures = 3");
    let stranger = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    for _ in 0..3 {
        refused_with(&b, &sign_with(&stranger, SOURCE, now(), json!([])), 401, "bad_signature");
    }
    // Even a correctly signed request from that address is now refused, and audited.
    refused_with(&b, &sign_with(&b.source, SOURCE, now(), json!([])), 403, "banned");
    common::eventually("ban alert", || b.s.stderr().contains("OPERATOR ALERT [replication_ban]"));
}

/// A replicated entry row as the wire carries it (sealed data, MAC), here forged by a test.
fn wire_entry(id: i64) -> Value {
    json!({"id": id, "uuid": format!("u{id}"), "scopes": "", "created_at": 0, "updated_at": 0, "version": 1,
           "deleted": false, "change_seq": id, "data": "AAAA", "mac": null})
}

#[test]
fn a_batch_for_a_vault_the_backup_cannot_open_or_does_not_replicate_changes_nothing() {
    let b = backup("rate_limit_per_s = 0");
    // No data key sealed to this backup: it cannot hold the vault, so nothing is applied.
    let unknown = "0123456789abcdef0123456789abcdef";
    refused_with(&b, &sign_batch(&b.source, SOURCE, now(), unknown, json!([wire_entry(1)])), 409, "unknown_vault");
    assert!(!b.v.dir().join("vaults").join(format!("{unknown}.db")).exists());
    // The backup's own vault is never written by a source, even a signed one.
    let own = b.v.vault_file().file_stem().unwrap().to_str().unwrap().to_owned();
    refused_with(&b, &sign_batch(&b.source, SOURCE, now(), &own, json!([wire_entry(1)])), 409, "not_a_replica");
    // A malformed row is refused whole.
    refused_with(&b, &sign_batch(&b.source, SOURCE, now(), &own, json!([{"id": 1}])), 400, "bad_body");
}

#[test]
fn item_3_backup_mode_environment_variable_has_no_effect() {
    let v = Vault::new();
    let s = Server::start_env(&v.dir(), &[], &[("CLAVITOR_BACKUP_MODE", "true")]);
    let source = SigningKey::from_bytes(&[5; 32]);
    let resp = send(&s, &sign_with(&source, SOURCE, now(), json!([])));
    assert_eq!(resp.status, 404, "{}", resp.body);
    assert_eq!(resp.json()["message"], "this node is not a replication backup");
    // Local writes still work: the variable did not make this node a backup.
    let out = v.cli_env(&["agent", "add", "--name", "still-primary", "--json"], &[("CLAVITOR_BACKUP_MODE", "true")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn item_9_bad_files_stop_the_start_naming_the_problem_not_the_path() {
    let v = Vault::new();
    let source = SigningKey::from_bytes(&[6; 32]);
    let cfg = backup_config(&v, &source, "");
    let key = v.tmp.path().join("pop.key.pem");
    set_mode(&key, 0o644);
    let start = |cfg: &Path| {
        Command::new(common::BIN)
            .arg("--data-dir")
            .arg(v.dir())
            .args(["serve", "--listen", "127.0.0.1:0", "--replication-config"])
            .arg(cfg)
            .output()
            .expect("run")
    };
    let out = start(&cfg);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mode 0600"), "{err}");
    // The error itself names the problem, not the path (that is in the log lines only).
    let error_line = err.lines().find(|l| l.starts_with("clavitor: error:")).unwrap_or_default();
    assert!(error_line.contains("mode 0600") && !error_line.contains("pop.key.pem"), "{err}");
    set_mode(&key, 0o600);
    std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap().replace("role = \"backup\"", "role = \"leader\""))
        .unwrap();
    let out = start(&cfg);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("replication configuration error"), "{err}");
}

fn config_of(b: &Backup) -> String {
    b.v.tmp.path().join("replication.toml").display().to_string()
}

#[test]
fn item_8_backup_refuses_api_and_cli_writes_naming_the_primary() {
    let b = backup("rate_limit_per_s = 0");
    let r = common::request(
        &b.s.url("/api/entries"),
        "POST",
        Some(&b.v.owner),
        Some(br#"{"title":"t","fields":[{"name":"u","kind":"text","value":"x"}]}"#),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["reason"], "backup_pop");
    assert!(r.json()["message"].as_str().unwrap().contains("calgary-01"), "{}", r.body);
    // Reads are served: DNS may move the vault's agents here.
    assert_eq!(b.s.get("/api/entries", Some(&b.v.owner)).status, 200);
    let cfg = config_of(&b);
    let out = b.v.cli(&["--replication-config", &cfg, "agent", "add", "--name", "x", "--json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("make changes on the primary (calgary-01)"));
    let out = b.v.cli(&["--replication-config", &cfg, "agent", "list", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn item_8_a_backup_never_replicates_onward_even_if_its_file_lists_backups() {
    let v = Vault::new();
    let source = SigningKey::from_bytes(&[8; 32]);
    let onward = SigningKey::from_bytes(&[9; 32]);
    let extra = format!(
        "rate_limit_per_s = 0\n\n[[backups]]\nid = \"tokyo-01\"\nurl = \"https://127.0.0.1:9\"\npublic_key = \"{}\"\n",
        spki_b64(&onward)
    );
    let cfg = backup_config(&v, &source, &extra);
    let s = Server::start(&v.dir(), &["--replication-config", cfg.to_str().unwrap()]);
    common::eventually("no-cascade warning", || s.stderr().contains("no cascade replication"));
    let status = v.cli_json(&["--replication-config", cfg.to_str().unwrap(), "replication", "status"], None);
    assert_eq!(status["backups"], json!([]), "{status}");
    assert!(status["worker"].as_str().unwrap().starts_with("none"), "{status}");
    // Had a worker started, it would have tried (and audited) a send within its first second.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(sends(&v).is_empty(), "a backup sent onward: {:?}", sends(&v));
}

#[test]
fn replication_status_shows_role_key_peers_and_last_outcomes() {
    let b = backup("rate_limit_per_s = 0");
    assert_eq!(send(&b.s, &sign_with(&b.source, SOURCE, now(), json!([]))).status, 200);
    refused_with(&b, &sign_with(&b.source, SOURCE, now() - 3600, json!([])), 401, "clock_skew");
    let cfg = config_of(&b);
    let status = b.v.cli_json(&["--replication-config", &cfg, "replication", "status"], None);
    assert_eq!(status["role"], "backup");
    assert_eq!(status["pop_id"], "zurich-01");
    assert_eq!(status["sources"][0]["id"], SOURCE);
    assert_eq!(status["limits"]["batch_size"], 100);
    // The public key is what `openssl pkey -pubout` prints for the POP's key file.
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(b.v.tmp.path().join("pop.key.pem"))
        .output()
        .expect("openssl");
    assert!(String::from_utf8_lossy(&out.stdout).contains(status["public_key"].as_str().unwrap()), "{status}");
    assert_eq!(status["last_success"]["outcome"], "ok", "{status}");
    assert!(status["last_error"]["detail"].as_str().unwrap().contains("clock_skew"), "{status}");
    // The same figures go into the telemetry payload.
    let t = b.v.cli_json(&["--replication-config", &cfg, "telemetry", "show"], None);
    assert_eq!(t["replication_role"], "backup", "{t}");
    assert!(t["replication_lag_s"].as_i64().is_some_and(|s| (0..60).contains(&s)), "{t}");
    assert!(t.get("replication_backlog").is_some(), "{t}");
}

#[test]
fn status_shows_the_backups_transport_key_for_its_primaries_files() {
    let v = Vault::new();
    let source = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let key = v.tmp.path().join("transport.key");
    std::fs::write(&key, format!("{}\n", hex::encode(rand::random::<[u8; 32]>()))).expect("write");
    set_mode(&key, 0o600);
    let with = backup_config(&v, &source, &format!("transport_key_file = \"{}\"", key.display()));
    let status = v.cli_json(&["--replication-config", with.to_str().unwrap(), "replication", "status"], None);
    let hex = status["transport_key"].as_str().expect("transport_key").to_owned();
    assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()), "{status}");
    let again = v.cli_json(&["--replication-config", with.to_str().unwrap(), "replication", "status"], None);
    assert_eq!(again["transport_key"], hex.as_str(), "derived from the file, so stable");

    let without = backup_config(&v, &source, "");
    let status = v.cli_json(&["--replication-config", without.to_str().unwrap(), "replication", "status"], None);
    assert!(status["transport_key"].is_null(), "{status}");
}

#[test]
fn a_primarys_backlog_is_what_its_backup_has_not_acknowledged_read_from_disk() {
    let v = Vault::new();
    let key = openssl_key(v.tmp.path());
    let cfg = v.tmp.path().join("replication.toml");
    let other = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    std::fs::write(
        &cfg,
        format!(
            "pop_id = \"{SOURCE}\"\nrole = \"primary\"\nsigning_key_file = \"{}\"\n\n[[backups]]\nid = \"zurich-01\"\nurl = \"https://127.0.0.1:9\"\npublic_key = \"{}\"\n",
            key.display(),
            spki_b64(&other)
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let backlog = || {
        let s = v.cli_json(&["--replication-config", cfg, "replication", "status"], None);
        let t = v.cli_json(&["--replication-config", cfg, "telemetry", "show"], None);
        let b = s["backlog"]["zurich-01"].clone();
        // The telemetry figure is the status's rows: entries, audit rows and the auth snapshot.
        assert_eq!(t["replication_backlog"], b["rows"], "{t} {s}");
        assert_eq!(b["rows"].as_u64(), Some(b["entries"].as_u64().unwrap() + b["audit"].as_u64().unwrap() + 1), "{b}");
        b
    };
    // The owner agent (the auth snapshot) and its audit rows wait for the backup already.
    let first = backlog();
    assert_eq!((first["entries"].as_u64(), first["auth"].as_bool()), (Some(0), Some(true)), "{first}");
    assert!(first["audit"].as_u64() > Some(0), "{first}");
    v.add_entry(&json!({"title": "a", "url": "https://a.example"}));
    v.add_entry(&json!({"title": "b", "url": "https://b.example"}));
    let then = backlog();
    assert_eq!(then["entries"], 2, "nothing acknowledged yet: {then}");
    assert_eq!(then["audit"].as_u64(), first["audit"].as_u64().map(|n| n + 2), "an audit row per entry: {then}");
}

/// `openssl pkey -pubout`'s base64 line for a POP key file.
fn openssl_pub(key: &Path) -> String {
    let out = Command::new("openssl").args(["pkey", "-pubout", "-in"]).arg(key).output().expect("openssl");
    String::from_utf8_lossy(&out.stdout).lines().nth(1).expect("PEM body").to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A test CA and a certificate it issued for 127.0.0.1: (CA PEM, leaf cert, leaf key).
fn tls_cert(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n).display().to_string();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    let (ca_key, ca_pem, key, csr, cert, ext) =
        (p("ca-key.pem"), p("ca.pem"), p("tls-key.pem"), p("tls.csr"), p("tls-cert.pem"), p("tls.ext"));
    ca.extend(["-keyout", &ca_key, "-out", &ca_pem, "-days", "2", "-subj", "/CN=clavitor test CA"]);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]);
    openssl(&ca);
    let mut req = vec!["req"];
    req.extend(ec);
    req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
    openssl(&req);
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        &cert,
        "-extfile",
        &ext,
    ]);
    (PathBuf::from(ca_pem), PathBuf::from(cert), PathBuf::from(key))
}

/// A real pair on loopback: a TLS backup `zurich-01` and a primary `calgary-01` whose backups are
/// `first` (if any) and then the real backup. `ca`: whether the primary trusts the backup's CA.
struct Pair {
    primary_vault: Vault,
    backup_vault: Vault,
    primary: Server,
    backup: Server,
    primary_args: Vec<String>,
    backup_args: Vec<String>,
    primary_env: Vec<(String, String)>,
    /// Between the primary and the backup's TLS listener, if the test asked for one.
    proxy: Option<FaultProxy>,
}

impl Pair {
    fn restart_backup(&mut self) {
        let args: Vec<&str> = self.backup_args.iter().map(String::as_str).collect();
        self.backup = Server::start(&self.backup_vault.dir(), &args);
        let listen = self.backup_args.last().expect("tls listen").clone();
        // Its own line, not a connect: a connect would also succeed on someone else's listener.
        assert_eq!(self.backup.listening_on("https").to_string(), listen, "the backup's TLS listener");
    }

    /// The local CLI on the primary's data dir with its flags and environment (its license).
    fn primary_cli(&self, args: &[&str], stdin: &str) -> std::process::Output {
        use std::io::Write;
        let mut cmd = Command::new(common::bin());
        cmd.arg("--data-dir").arg(self.primary_vault.dir()).args(&self.primary_args).args(args);
        cmd.envs(self.primary_env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).env_remove("CLAVITOR_LOG");
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("cli");
        child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
        child.wait_with_output().expect("wait cli")
    }

    fn restart_primary(&mut self) {
        let args: Vec<&str> = self.primary_args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self.primary_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.primary = Server::start_env(&self.primary_vault.dir(), &args, &env);
    }
}

fn pair(first: Option<&str>, ca: bool) -> Pair {
    pair_env(first, ca, &[])
}

/// Like [`pair`], with extra environment for the backup process (e.g. a fake clock).
fn pair_env(first: Option<&str>, ca: bool, backup_env: &[(&str, &str)]) -> Pair {
    pair_full(first, ca, backup_env, "", false, (5, 1))
}

/// Like [`pair_env`], with extra lines for the primary's replication file.
/// `(rate, poll)`: both sides' `rate_limit_per_s`, the primary's `poll_interval_s`.
fn pair_full(
    first: Option<&str>,
    ca: bool,
    backup_env: &[(&str, &str)],
    primary_extra: &str,
    licensed: bool,
    (rate, poll): (u32, u64),
) -> Pair {
    pair_setup(Setup { first, ca, backup_env, primary_extra, licensed, rate, poll, ..Setup::default() })
}

/// Everything [`pair_full`] takes, plus: `proxy`, a [`FaultProxy`] between the two (the
/// primary's backup URL points at it); `passkey_owner`, the primary's vault left for its owner
/// to set up through the setup link (so the test can write through the API).
#[derive(Default)]
struct Setup<'a> {
    first: Option<&'a str>,
    ca: bool,
    backup_env: &'a [(&'a str, &'a str)],
    primary_extra: &'a str,
    licensed: bool,
    rate: u32,
    poll: u64,
    proxy: bool,
    passkey_owner: bool,
    /// Extra lines for the backup's replication file.
    backup_extra: &'a str,
}

fn pair_setup(setup: Setup) -> Pair {
    let Setup { first, ca, backup_env, primary_extra, licensed, rate, poll, proxy, passkey_owner, backup_extra } =
        setup;
    let pv = if passkey_owner { Vault::uninitialised_owner() } else { Vault::new() };
    let bv = Vault::new();
    let (pkey, bkey) = (openssl_key(pv.tmp.path()), openssl_key(bv.tmp.path()));
    let (ca_pem, cert, tls_key) = tls_cert(bv.tmp.path());
    let bcfg = bv.tmp.path().join("replication.toml");
    let transport = bv.tmp.path().join("transport.key");
    std::fs::write(&transport, format!("{}\n", hex::encode(rand::random::<[u8; 32]>()))).unwrap();
    set_mode(&transport, 0o600);
    std::fs::write(
        &bcfg,
        format!(
            "pop_id = \"zurich-01\"\nrole = \"backup\"\nsigning_key_file = \"{}\"\nrate_limit_per_s = {rate}\ntransport_key_file = \"{}\"\n{backup_extra}\n\n[[sources]]\nid = \"{SOURCE}\"\npublic_key = \"{}\"\n",
            bkey.display(),
            transport.display(),
            openssl_pub(&pkey)
        ),
    )
    .unwrap();
    let status = bv.cli_json(&["--replication-config", bcfg.to_str().unwrap(), "replication", "status"], None);
    let transport_pub = status["transport_key"].as_str().expect("transport key").to_owned();
    let mut backup_args: Vec<String> = vec![
        "--replication-config".into(),
        bcfg.display().to_string(),
        "--tls-cert".into(),
        cert.display().to_string(),
        "--tls-key".into(),
        tls_key.display().to_string(),
        "--tls-listen".into(),
        "127.0.0.1:0".into(),
    ];
    let args: Vec<&str> = backup_args.iter().map(String::as_str).collect();
    let mut backup = Server::start_env(&bv.dir(), &args, backup_env);
    // The port the backup bound (a port picked free beforehand could be another test's server
    // by the time the backup tried it); restarts bind it again.
    let tls_listen = backup.listening_on("https").to_string();
    *backup_args.last_mut().expect("tls listen") = tls_listen.clone();
    let mut backups = String::new();
    if let Some(url) = first {
        let other = SigningKey::from_bytes(&[3; 32]);
        backups +=
            &format!("[[backups]]\nid = \"dead-01\"\nurl = \"{url}\"\npublic_key = \"{}\"\n\n", spki_b64(&other));
    }
    let proxy = proxy.then(|| FaultProxy::start(tls_listen.parse().expect("tls address")));
    let url = proxy.as_ref().map_or_else(|| format!("https://{tls_listen}"), FaultProxy::url);
    backups += &format!(
        "[[backups]]\nid = \"zurich-01\"\nurl = \"{url}\"\npublic_key = \"{}\"\ntransport_key = \"{transport_pub}\"\n",
        openssl_pub(&bkey)
    );
    let ca_line = if ca { format!("ca_file = \"{}\"\n", ca_pem.display()) } else { String::new() };
    let pcfg = pv.tmp.path().join("replication.toml");
    std::fs::write(
        &pcfg,
        format!(
            "pop_id = \"{SOURCE}\"\nrole = \"primary\"\nsigning_key_file = \"{}\"\nretries = 1\npoll_interval_s = {poll}\nrate_limit_per_s = {rate}\n{primary_extra}\n{ca_line}\n{backups}",
            pkey.display()
        ),
    )
    .unwrap();
    let mut primary_args = vec!["--replication-config".to_owned(), pcfg.display().to_string()];
    let mut primary_env = Vec::new();
    if licensed {
        let (args, env) = common::roomy_license(pv.tmp.path());
        primary_args.extend(args);
        primary_env = env;
    }
    let pa: Vec<&str> = primary_args.iter().map(String::as_str).collect();
    let pe: Vec<(&str, &str)> = primary_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let primary = Server::start_env(&pv.dir(), &pa, &pe);
    Pair { primary_vault: pv, backup_vault: bv, primary, backup, primary_args, backup_args, primary_env, proxy }
}

fn sends(v: &Vault) -> Vec<Value> {
    v.audit_rows(true).into_iter().filter(|r| r["action"] == "replication.send").collect()
}

#[test]
fn item_6_11_primary_reaches_its_backup_over_verified_tls_and_fails_over_from_a_dead_one() {
    let dead = format!("https://127.0.0.1:{}", free_port());
    let p = pair(Some(&dead), true);
    // The dead backup is tried, retried once after the table's first step (1 s), then the
    // worker fails over to the live one, which accepts the signed batch.
    let accepted = (0..60).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(250));
        replication_audit(&p.backup_vault).iter().any(|r| r["outcome"] == "ok" && r["actor"] == "pop:calgary-01")
    });
    assert!(accepted, "primary: {:?}\nbackup: {:?}", sends(&p.primary_vault), replication_audit(&p.backup_vault));
    // The primary audits the acknowledged send once the backup's answer arrived.
    common::eventually("the primary's ok row", || {
        sends(&p.primary_vault).iter().any(|r| r["actor"] == "pop:zurich-01" && r["outcome"] == "ok")
    });
    let rows = sends(&p.primary_vault);
    // Item 11: the retry waited the table's first step (1 s) after the first failure.
    let dead: Vec<i64> = rows.iter().filter(|r| r["actor"] == "pop:dead-01").filter_map(|r| r["ts"].as_i64()).collect();
    assert!(dead.len() >= 2, "{rows:?}");
    let (lo, hi) = (dead.iter().min().unwrap(), dead.iter().max().unwrap());
    assert!(hi - lo >= 1000, "retry after {} ms", hi - lo);
    assert!(p.primary.stderr().contains("OPERATOR ALERT [replication_unreachable]"));
}

#[test]
fn item_6_an_unverifiable_backup_certificate_is_never_accepted() {
    let p = pair(None, false);
    common::eventually("a failed send", || sends(&p.primary_vault).iter().any(|r| r["outcome"] == "failed"));
    let rows = sends(&p.primary_vault);
    assert!(rows.iter().all(|r| r["outcome"] == "failed"), "{rows:?}");
    assert!(rows[0]["detail"].as_str().unwrap().contains("transport"), "{rows:?}");
    assert!(replication_audit(&p.backup_vault).is_empty(), "the backup received nothing");
}

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[test]
fn clock_skew_4_minutes_works_6_minutes_is_refused_with_the_reason_and_replication_resumes() {
    assert!(Path::new(LIBFAKETIME).exists(), "libfaketime missing: run scripts/install-test-deps.sh");
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("backup-clock");
    std::fs::write(&clock, "+240\n").unwrap();
    let clock_s = clock.display().to_string();
    // The backup's wall clock is read from `clock` on every call (libfaketime, no cache).
    let p = pair_env(
        None,
        true,
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", &clock_s),
            ("FAKETIME_NO_CACHE", "1"),
            // Only the wall clock moves: tokio's timers run on the monotonic clock.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let ok_count = |v: &Vault| replication_audit(v).iter().filter(|r| r["outcome"] == "ok").count();
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let held = (0..80).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(250));
            f()
        });
        assert!(
            held,
            "{what}: backup audit {:?}\nprimary {:?}",
            replication_audit(&p.backup_vault),
            sends(&p.primary_vault)
        );
    };
    wait("accepted 4 minutes off", &|| ok_count(&p.backup_vault) > 0);
    std::fs::write(&clock, "+360\n").unwrap();
    wait("refused 6 minutes off", &|| {
        replication_audit(&p.backup_vault).iter().any(|r| {
            r["outcome"] == "refused" && r["detail"].as_str().unwrap_or_default().contains("off this POP's clock")
        })
    });
    std::fs::write(&clock, "+0\n").unwrap();
    let before = ok_count(&p.backup_vault);
    wait("resumed once the clocks agree", &|| ok_count(&p.backup_vault) > before);
}

/// Every entry `token` lists, each as `GET /api/entries/{id}` returns it (L1 values, L2
/// ciphertexts), by id; `None` while the token is refused.
fn content(s: &Server, token: &str) -> Option<std::collections::BTreeMap<i64, Value>> {
    let list = s.get("/api/entries", Some(token));
    if list.status != 200 {
        return None;
    }
    let mut out = std::collections::BTreeMap::new();
    for e in list.json().as_array()? {
        let id = e["id"].as_i64()?;
        let one = s.get(&format!("/api/entries/{id}"), Some(token));
        if one.status != 200 {
            return None;
        }
        out.insert(id, one.json());
    }
    Some(out)
}

/// Waits (bounded) until the primary serves `token` its `n` entries (it picks up the local CLI's
/// writes within moments), then until the backup serves that token exactly the same.
fn converges(p: &Pair, token: &str, n: usize, what: &str) {
    let mut want = None;
    for _ in 0..200 {
        want = content(&p.primary, token).filter(|c| c.len() == n);
        if want.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let want = want.unwrap_or_else(|| panic!("{what}: the primary does not serve {n} entries"));
    let same = (0..120).any(|_| {
        if content(&p.backup, token).as_ref() == Some(&want) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
        false
    });
    assert!(
        same,
        "{what}: backup {:?}\nwant {want:?}\nsends {:?}\napplies {:?}",
        content(&p.backup, token),
        sends(&p.primary_vault),
        replication_audit(&p.backup_vault)
    );
}

fn l2_value() -> String {
    format!("v2.{}.{}", "A".repeat(16), "B".repeat(24))
}

#[test]
fn rows_travel_entries_agents_revocation_and_deletes_reach_the_backup_for_the_same_token() {
    let p = pair(None, true);
    let pv = &p.primary_vault;
    let kept = pv.add_entry(&json!({"title": "kept", "url": "https://k.example",
        "fields": [{"name": "user", "kind": "text", "value": "alice"}, {"name": "pw", "kind": "secret", "value": "l1-secret"},
                   {"name": "note", "kind": "note", "tier": "l2", "value": l2_value()}]}));
    let gone = pv.add_entry(&json!({"title": "gone", "url": "https://g.example"}));
    let (agent, token) = pv.add_agent("reader", &["--all-access"]);
    // The same tokens read the same L1 values and L2 ciphertexts on the backup.
    converges(&p, &pv.owner, 2, "owner after add");
    converges(&p, &token, 2, "agent after add");
    let on_backup = content(&p.backup, &token).unwrap();
    assert_eq!(on_backup[&kept]["fields"][1]["value"], "l1-secret", "{on_backup:?}");
    assert_eq!(on_backup[&kept]["fields"][2]["ciphertext"], l2_value().as_str(), "{on_backup:?}");
    // The backup's own vault and its owner are untouched, and writes there are still refused.
    assert_eq!(p.backup.get("/api/entries", Some(&p.backup_vault.owner)).status, 200);

    // Revocation reaches the backup: the token is refused there too.
    assert!(pv.cli(&["agent", "revoke", &agent.to_string()]).status.success());
    let refused = (0..120).any(|_| {
        if p.backup.get("/api/entries", Some(&token)).status == 401 {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
        false
    });
    assert!(refused, "the revoked token still reads on the backup");

    // A delete travels as a tombstone.
    assert!(pv.cli(&["entry", "rm", &gone.to_string()]).status.success());
    converges(&p, &pv.owner, 1, "owner after delete");
    assert_eq!(p.backup.get(&format!("/api/entries/{gone}"), Some(&pv.owner)).status, 404);
    // The primary's audit rows travelled too, and the primary's backlog drained.
    let status = |v: &Vault| {
        let cfg = v.tmp.path().join("replication.toml");
        v.cli_json(&["--replication-config", cfg.to_str().unwrap(), "telemetry", "show"], None)
    };
    common::eventually("backlog drained", || status(pv)["replication_backlog"] == 0);
    let backup_audit = p.backup.get("/api/audit?limit=1000", Some(&pv.owner));
    assert!(backup_audit.body.contains("entry.create"), "{}", backup_audit.body);
    // Item 16: neither side's log carries entry data, though rows travelled all along.
    for log in [p.primary.stderr(), p.backup.stderr()] {
        assert!(log.contains("replication"), "structured replication lines are logged");
        assert!(!log.contains("l1-secret") && !log.contains("alice") && !log.contains(&l2_value()), "{log}");
    }
}

#[test]
fn a_backup_killed_between_creating_a_replica_and_registering_it_adopts_the_vault_again() {
    let mut p = pair(None, true);
    p.primary_vault.add_entry(&json!({"title": "one", "url": "https://1.example"}));
    converges(&p, &p.primary_vault.owner, 1, "before");
    let vault = p.primary_vault.vault_file().file_stem().unwrap().to_str().unwrap().to_owned();
    // The state a kill -9 leaves in the middle of the backup's first batch for a vault: the
    // replica's file exists but node.db never registered it, and the primary never heard back.
    p.backup.kill9();
    let sql = |db: PathBuf, sql: String| {
        let out = Command::new("sqlite3").arg(&db).arg(&sql).output().expect("sqlite3");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    };
    sql(p.backup_vault.dir().join("node.db"), format!("DELETE FROM vaults WHERE vault_id = '{vault}';"));
    sql(p.primary_vault.vault_file(), "DELETE FROM replication_marks;".into());
    assert!(p.backup_vault.dir().join("vaults").join(format!("{vault}.db")).exists());
    p.restart_backup();
    // The backup adopts the vault again (it used to answer 503 "already exists" for ever).
    converges(&p, &p.primary_vault.owner, 1, "after the interrupted adoption");
    p.primary_vault.add_entry(&json!({"title": "two", "url": "https://2.example"}));
    converges(&p, &p.primary_vault.owner, 2, "and after");
}

/// The writes a test made on the primary and the primary acknowledged: (entry id, title).
struct Writes {
    owner: passkey::Admin,
    acked: Vec<(i64, String)>,
    n: usize,
}

impl Writes {
    /// One entry through the API (approved by the owner's passkey), with an L1 secret and an L2
    /// ciphertext; must be acknowledged with a 201.
    fn api(&mut self, p: &Pair, tag: &str) {
        self.n += 1;
        let title = format!("{tag}-api-{}", self.n);
        let body = json!({"title": title, "url": "https://api.example", "fields": [
            {"name": "pw", "kind": "secret", "value": format!("l1-{title}")},
            {"name": "note", "kind": "note", "tier": "l2", "value": l2_value()}]});
        let r = self.owner.write(&p.primary, "POST", "/api/entries", &body);
        assert_eq!(r.status, 201, "{}", r.body);
        self.acked.push((r.json()["id"].as_i64().expect("id"), title));
    }

    /// Deletes the oldest acknowledged entry through the API (a tombstone to replicate).
    fn api_delete(&mut self, p: &Pair) {
        let (id, _) = self.acked.remove(0);
        let r = self.owner.write(&p.primary, "DELETE", &format!("/api/entries/{id}"), &Value::Null);
        assert!(r.status == 200 || r.status == 204, "{}", r.body);
    }

    /// `count` entries in one import (one transaction: a backlog that goes in several batches).
    fn import(&mut self, p: &Pair, tag: &str, count: usize) {
        self.import_padded(p, tag, count, 0);
    }

    /// Like [`Writes::import`], each entry with a note of `pad` characters.
    fn import_padded(&mut self, p: &Pair, tag: &str, count: usize, pad: usize) {
        let titles: Vec<String> = (0..count).map(|i| format!("{tag}-import-{i}")).collect();
        let note = |t: &str| format!("{t}:{}", "n".repeat(pad));
        let lines: String = titles
            .iter()
            .map(|t| {
                let fields =
                    if pad > 0 { json!([{"name": "note", "kind": "note", "value": note(t)}]) } else { json!([]) };
                format!("{}\n", json!({"title": t, "url": "https://import.example", "fields": fields}))
            })
            .collect();
        let out = p.primary_cli(&["entry", "import", "--file", "-"], &lines);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        self.acked.extend(titles.into_iter().map(|t| (0, t)));
    }

    fn titles(&self) -> Vec<String> {
        let mut t: Vec<String> = self.acked.iter().map(|(_, t)| t.clone()).collect();
        t.sort();
        t
    }
}

/// Waits (bounded by `secs`) until `f` holds; panics with `what` and `why()` otherwise.
fn within(secs: u64, what: &str, mut f: impl FnMut() -> bool, why: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("timed out waiting for: {what}\n{}", why());
}

/// Titles `token` lists on `s`, sorted (empty while the token is refused).
fn listed(s: &Server, token: &str) -> Vec<String> {
    let r = s.get("/api/entries", Some(token));
    if r.status != 200 {
        return Vec::new();
    }
    let mut t: Vec<String> = r
        .json()
        .as_array()
        .map_or_else(Vec::new, |a| a.iter().map(|e| e["title"].as_str().unwrap_or_default().to_owned()).collect());
    t.sort();
    t
}

/// The primary lists exactly the acknowledged writes (nothing lost there), and the backup
/// comes to list exactly the same (bounded wait).
fn caught_up(p: &Pair, w: &Writes, what: &str) {
    let want = w.titles();
    within(
        10,
        &format!("{what}: the primary lists every acknowledged write"),
        || listed(&p.primary, &w.owner.token) == want,
        || format!("primary {:?}\nwant {want:?}", listed(&p.primary, &w.owner.token)),
    );
    within(
        30,
        &format!("{what}: the backup lists what the primary does"),
        || listed(&p.backup, &w.owner.token) == want,
        || {
            format!(
                "backup {:?}\nwant {want:?}\nsends {:?}\napplies {:?}",
                listed(&p.backup, &w.owner.token),
                sends(&p.primary_vault),
                replication_audit(&p.backup_vault)
            )
        },
    );
}

fn max_id(rows: &[Value]) -> i64 {
    rows.iter().filter_map(|r| r["id"].as_i64()).max().unwrap_or(0)
}

/// The primary's `replication.send` rows after audit id `after` that failed.
fn failed_sends_after(v: &Vault, after: i64) -> Vec<Value> {
    sends(v).into_iter().filter(|r| r["id"].as_i64() > Some(after) && r["outcome"] == "failed").collect()
}

fn replication_status(v: &Vault) -> Value {
    let cfg = v.tmp.path().join("replication.toml");
    v.cli_json(&["--replication-config", cfg.to_str().unwrap(), "replication", "status"], None)
}

#[test]
fn faults_through_a_proxy_drop_delay_reset_and_kill_9_lose_and_duplicate_nothing() {
    // Batches of 5 at 5 requests/s, a 1 s poll, and a 2 s request timeout (so a delay past it
    // is a lost answer, not a long wait); the primary reaches the backup only through the proxy.
    let mut p = pair_setup(Setup {
        ca: true,
        licensed: true,
        rate: 5,
        poll: 1,
        proxy: true,
        passkey_owner: true,
        primary_extra: "batch_size = 5\nrequest_timeout_s = 2",
        ..Setup::default()
    });
    let owner = passkey::Admin::owner(&p.primary, &p.primary_vault.setup_code);
    let (_, reader) = p.primary_vault.add_agent("reader", &["--all-access"]);
    let mut w = Writes { owner, acked: Vec::new(), n: 0 };
    let proxy = |p: &Pair, m: Mode| p.proxy.as_ref().expect("proxy").set(m);
    let applied = |v: &Vault| replication_audit(v).iter().filter(|r| r["outcome"] == "ok").count();

    // Pass: API writes go through the proxy.
    for _ in 0..3 {
        w.api(&p, "pass");
    }
    caught_up(&p, &w, "pass");

    // Drop: nothing reaches the backup, the primary's sends fail; then the backlog goes.
    let mark = max_id(&sends(&p.primary_vault));
    proxy(&p, Mode::Drop);
    w.api(&p, "drop");
    w.api(&p, "drop");
    w.api_delete(&p);
    within(
        20,
        "a failed send while dropped",
        || !failed_sends_after(&p.primary_vault, mark).is_empty(),
        || format!("{:?}", sends(&p.primary_vault)),
    );
    assert!(p.proxy.as_ref().unwrap().dropped() > 0);
    assert!(!listed(&p.backup, &w.owner.token).iter().any(|t| t.starts_with("drop-")), "nothing got through");
    proxy(&p, Mode::Pass);
    caught_up(&p, &w, "after drop");

    // A slow link (every chunk held 150 ms either way) still replicates.
    proxy(&p, Mode::Delay(std::time::Duration::from_millis(150)));
    w.api(&p, "slow");
    w.import(&p, "slow", 8);
    caught_up(&p, &w, "slow link");

    // Requests held past the request timeout: a batch arrives (and is applied) after the
    // primary stopped waiting, so its answer is lost; the resend must not duplicate anything.
    let mark = max_id(&sends(&p.primary_vault));
    proxy(&p, Mode::DelayRequests(std::time::Duration::from_millis(2500)));
    w.api(&p, "late");
    w.import(&p, "late", 10);
    within(
        20,
        "a timed-out send",
        || !failed_sends_after(&p.primary_vault, mark).is_empty(),
        || format!("{:?}", sends(&p.primary_vault)),
    );
    proxy(&p, Mode::Pass);
    caught_up(&p, &w, "after the timeouts");
    // Item 7 through lost answers: a batch the backup applied after the primary stopped waiting
    // still has its audit row, so the rows written add up to every entry created plus the one
    // tombstone (resends are skipped, not written again).
    let written = |v: &Vault| -> usize {
        replication_audit(v)
            .iter()
            .filter_map(|r| {
                r["detail"].as_str()?.split(' ').find_map(|f| f.strip_prefix("written="))?.parse::<usize>().ok()
            })
            .sum()
    };
    within(
        10,
        "every applied batch audited",
        || written(&p.backup_vault) == w.acked.len() + 2,
        || {
            format!(
                "written {} != {}: {:?}",
                written(&p.backup_vault),
                w.acked.len() + 2,
                replication_audit(&p.backup_vault)
            )
        },
    );

    // Reset mid-body: each connection forwards 18,000 bytes of the client's side (from the
    // switch), then RST. The batches carry 4 kB notes, so a request spans more than one TLS
    // record (16 kB) and the backup decrypts its head and part of the body before the reset.
    let mark = max_id(&sends(&p.primary_vault));
    proxy(&p, Mode::ResetAfter(18_000));
    w.import_padded(&p, "reset", 30, 4000);
    within(
        20,
        "requests reset mid-body",
        || p.proxy.as_ref().unwrap().resets() >= 2 && !failed_sends_after(&p.primary_vault, mark).is_empty(),
        || format!("resets {}, sends {:?}", p.proxy.as_ref().unwrap().resets(), sends(&p.primary_vault)),
    );
    // The listener reads a body whole before any handler, so a cut-off batch never reaches
    // the apply: none of them was applied.
    assert!(!listed(&p.backup, &w.owner.token).iter().any(|t| t.starts_with("reset-")), "a cut-off batch was applied");
    proxy(&p, Mode::Pass);
    caught_up(&p, &w, "after the resets");

    // kill -9 of the backup mid-stream; a write while it is down; back up.
    let before = applied(&p.backup_vault);
    w.import(&p, "stream", 40);
    within(
        20,
        "the stream started",
        || applied(&p.backup_vault) >= before + 2,
        || format!("{:?}", replication_audit(&p.backup_vault)),
    );
    p.backup.kill9();
    w.api(&p, "down");
    std::thread::sleep(std::time::Duration::from_millis(500));
    p.restart_backup();
    caught_up(&p, &w, "after kill -9 of the backup");

    // kill -9 of the primary mid-batch: what the backup did not acknowledge is still dirty on
    // disk and goes again after the restart.
    let before = applied(&p.backup_vault);
    w.import(&p, "batch", 40);
    within(
        20,
        "the batches started",
        || applied(&p.backup_vault) > before,
        || format!("{:?}", replication_audit(&p.backup_vault)),
    );
    p.primary.kill9();
    p.restart_primary();
    w.api(&p, "restarted");
    caught_up(&p, &w, "after kill -9 of the primary");

    // Both sides' content compared through the API for the same tokens: the same ids, L1 values
    // and L2 ciphertexts; as many entries as acknowledged writes, each title once.
    let n = w.acked.len();
    converges(&p, &w.owner.token, n, "owner at the end");
    converges(&p, &reader, n, "reader at the end");
    let titles = listed(&p.backup, &w.owner.token);
    let mut unique = titles.clone();
    unique.dedup();
    assert_eq!((titles.len(), unique.len()), (n, n), "nothing lost, nothing duplicated");
    let on_backup = content(&p.backup, &reader).expect("reader on the backup");
    let (_, api) = on_backup.iter().find(|(_, e)| e["title"] == "pass-api-2").expect("an API write");
    assert_eq!(api["fields"][0]["value"], "l1-pass-api-2", "{api}");
    assert_eq!(api["fields"][1]["ciphertext"], l2_value().as_str(), "{api}");
    // The entry deleted while the link was down is gone on the backup too (its tombstone went).
    assert!(!titles.contains(&"pass-api-1".to_owned()), "{titles:?}");

    // The backlog drains and the divergence check finds both sides in sync.
    let vault = p.primary_vault.vault_file().file_stem().unwrap().to_str().unwrap().to_owned();
    let synced_after = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    within(
        20,
        "backlog 0 and in sync",
        || {
            let s = replication_status(&p.primary_vault);
            s["backlog"]["zurich-01"]["rows"] == 0
                && s["divergence"][&vault]["state"] == "in sync"
                && s["divergence"][&vault]["ts_ms"].as_i64() > Some(synced_after)
        },
        || format!("{}", replication_status(&p.primary_vault)),
    );
    // Nothing was changed behind replication's back, so no check may report a difference (a
    // digest taken while rows were on their way would).
    let diverged: Vec<Value> = replication_audit(&p.backup_vault)
        .into_iter()
        .filter(|r| r["detail"].as_str().unwrap_or_default().contains("diverged"))
        .collect();
    assert!(diverged.is_empty(), "{diverged:?}");
    let proxy = p.proxy.as_ref().unwrap();
    println!(
        "proxy: {} connections, {} dropped, {} reset mid-body",
        proxy.connections(),
        proxy.dropped(),
        proxy.resets()
    );
}

#[test]
fn backup_down_then_kill_9_of_either_side_mid_stream_loses_and_duplicates_nothing() {
    let mut p = pair_full(None, true, &[], "batch_size = 3", false, (5, 1));
    let pv = &p.primary_vault;
    pv.add_entry(&json!({"title": "first", "url": "https://f.example"}));
    converges(&p, &pv.owner, 1, "first entry");

    // A write made while the backup is down arrives once it is up.
    p.backup.kill9();
    let lines: String =
        (0..25).map(|i| format!("{}\n", json!({"title": format!("down-{i}"), "url": "https://d.example"}))).collect();
    let out = p.primary_vault.cli_stdin(&["entry", "import", "--file", "-"], Some(&lines));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    p.restart_backup();
    converges(&p, &p.primary_vault.owner, 26, "after the backup came back");

    // kill -9 of the backup while a backlog streams in batches of 3 (at 5 requests/s). Under the
    // default license's 100 entries: 1 + 25 + 35 + 35.
    let ok = |v: &Vault| replication_audit(v).iter().filter(|r| r["outcome"] == "ok").count();
    let before = ok(&p.backup_vault);
    let lines: String =
        (0..35).map(|i| format!("{}\n", json!({"title": format!("b-{i}"), "url": "https://b.example"}))).collect();
    assert!(p.primary_vault.cli_stdin(&["entry", "import", "--file", "-"], Some(&lines)).status.success());
    common::eventually("the stream started", || ok(&p.backup_vault) > before + 1);
    p.backup.kill9();
    p.restart_backup();
    converges(&p, &p.primary_vault.owner, 61, "after kill -9 of the backup");

    // kill -9 of the primary mid-batch: its unacknowledged rows stay dirty on disk and go again.
    let lines: String =
        (0..35).map(|i| format!("{}\n", json!({"title": format!("p-{i}"), "url": "https://p.example"}))).collect();
    assert!(p.primary_vault.cli_stdin(&["entry", "import", "--file", "-"], Some(&lines)).status.success());
    std::thread::sleep(std::time::Duration::from_millis(700));
    p.primary.kill9();
    p.restart_primary();
    converges(&p, &p.primary_vault.owner, 96, "after kill -9 of the primary");
    let titles = common::titles(&p.backup, &p.primary_vault.owner);
    let mut unique = titles.clone();
    unique.dedup();
    assert_eq!(titles.len(), 96, "nothing lost");
    assert_eq!(unique.len(), titles.len(), "nothing duplicated");
}

#[test]
fn divergence_a_row_changed_behind_replication_is_reported_and_the_resend_repairs_it() {
    let p = pair(None, true);
    let pv = &p.primary_vault;
    let first = pv.add_entry(&json!({"title": "one", "url": "https://1.example"}));
    pv.add_entry(&json!({"title": "two", "url": "https://2.example"}));
    converges(&p, &pv.owner, 2, "before the change");
    let vault = pv.vault_file().file_stem().unwrap().to_str().unwrap().to_owned();
    let cfg = p.backup_vault.tmp.path().join("replication.toml");
    let status =
        || p.backup_vault.cli_json(&["--replication-config", cfg.to_str().unwrap(), "replication", "status"], None);
    common::eventually("in sync", || status()["divergence"][&vault]["state"] == "in sync");

    // Someone changes a row in the backup's file with sqlite3, behind replication's back.
    let replica = p.backup_vault.dir().join("vaults").join(format!("{vault}.db"));
    let sql = format!("UPDATE entries SET scopes = 'ffff' WHERE id = {first};");
    // A busy timeout: the running backup takes the write lock every few milliseconds (audit rows
    // moved from its spool).
    let out =
        Command::new("sqlite3").args(["-cmd", ".timeout 5000"]).arg(&replica).arg(&sql).output().expect("sqlite3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let diverged = |v: &Vault| {
        v.audit_rows(true)
            .into_iter()
            .any(|r| r["detail"].as_str().unwrap_or_default().contains("digest=diverged ids=0..255"))
    };
    common::eventually("the check reports the range", || diverged(&p.backup_vault));
    // The backup writes its row before it answers; the primary writes its own on the answer.
    common::eventually("the primary records it too", || diverged(&p.primary_vault));
    // The primary's resend repairs it, and the next check finds the two in sync again.
    let scopes = || {
        let out = Command::new("sqlite3")
            .arg(&replica)
            .arg(format!("SELECT scopes FROM entries WHERE id = {first};"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    common::eventually("repaired", || scopes().is_empty());
    common::eventually("in sync again", || status()["divergence"][&vault]["state"] == "in sync");
    converges(&p, &pv.owner, 2, "after the repair");
}

/// One column of `sql`'s rows, run by sqlite3 on `db`.
fn sqlite_ids(db: &Path, sql: &str) -> Vec<i64> {
    let out = Command::new("sqlite3").arg(db).arg(sql).output().expect("sqlite3");
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// The `count=` of a `replication.send` row's detail.
fn send_count(r: &Value) -> usize {
    r["detail"]
        .as_str()
        .unwrap_or_default()
        .split(' ')
        .find_map(|f| f.strip_prefix("count="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn audit_rows_fill_the_body_room_so_a_read_heavy_vault_catches_up_in_few_sends() {
    // 10 entries a batch and a 16 KiB body on both sides, at the review's 1 request/s.
    let mut p = pair_setup(Setup {
        ca: true,
        rate: 1,
        poll: 1,
        primary_extra: "batch_size = 10\nmax_body_bytes = 16384",
        backup_extra: "max_body_bytes = 16384",
        ..Setup::default()
    });
    let pv = &p.primary_vault;
    let entry = pv.add_entry(&json!({"title": "read-me", "url": "https://r.example"}));
    let (agent, token) = pv.add_agent("reader", &["--all-access"]);
    converges(&p, &token, 1, "before the reads");
    // ~300 agent reads (an audit row each) while the backup is down: a backlog of audit rows.
    p.backup.kill9();
    let mark = max_id(&sends(&p.primary_vault));
    for _ in 0..300 {
        assert_eq!(p.primary.get(&format!("/api/entries/{entry}"), Some(&token)).status, 200);
    }
    p.restart_backup();
    let vault = p.primary_vault.vault_file();
    let replica = p.backup_vault.dir().join("vaults").join(vault.file_name().unwrap());
    let own = || sqlite_ids(&vault, "SELECT id FROM audit WHERE source_pop IS NULL ORDER BY id");
    let held =
        || sqlite_ids(&replica, "SELECT source_id FROM audit WHERE source_pop = 'calgary-01' ORDER BY source_id");
    let reads = sqlite_ids(&vault, &format!("SELECT id FROM audit WHERE action = 'entry.read' AND agent_id = {agent}"));
    assert!(reads.len() >= 300, "{}", reads.len());
    within(
        60,
        "the backup holds every audit row of the primary's vault",
        || held() == own(),
        || format!("primary {} rows, backup {}; sends {:?}", own().len(), held().len(), sends(&p.primary_vault)),
    );
    // Far fewer sends than 300 rows at 10 a batch would take, and none refused for its size.
    let shipped: Vec<Value> = sends(&p.primary_vault)
        .into_iter()
        .filter(|r| r["id"].as_i64() > Some(mark) && r["outcome"] == "ok" && send_count(r) > 0)
        .collect();
    let rows: usize = shipped.iter().map(send_count).sum();
    assert!(rows >= 300, "{shipped:?}");
    assert!(shipped.len() <= 10, "{} sends for {rows} rows: {shipped:?}", shipped.len());
    println!("{rows} rows in {} sends", shipped.len());
    let too_big: Vec<Value> = replication_audit(&p.backup_vault)
        .into_iter()
        .filter(|r| r["detail"].as_str().unwrap_or_default().contains("body_too_large"))
        .collect();
    assert!(too_big.is_empty(), "the fitting kept every body within 16 KiB: {too_big:?}");
}

/// Creates `n` agents on `server` in one bulk call approved by `owner`'s passkey; their tokens.
fn bulk_agent_tokens(owner: &mut passkey::Admin, server: &Server, n: usize) -> Vec<String> {
    let agents: Vec<Value> = (0..n).map(|i| json!({"name": format!("bulk-{i}")})).collect();
    let r = owner.write(server, "POST", "/api/mgmt/agents/bulk", &json!({ "agents": agents }));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["agents"].as_array().unwrap().iter().map(|a| a["token"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_large_auth_snapshot_travels_in_parts_applied_whole_and_survives_a_kill_9_between_parts() {
    // A 16 KiB body on both sides and 1 request/s: 200 agents (~60 kB of snapshot) need >= 3
    // parts, a second apart.
    let mut p = pair_setup(Setup {
        ca: true,
        licensed: true,
        rate: 1,
        poll: 1,
        passkey_owner: true,
        primary_extra: "max_body_bytes = 16384",
        backup_extra: "max_body_bytes = 16384",
        ..Setup::default()
    });
    let mut owner = passkey::Admin::owner(&p.primary, &p.primary_vault.setup_code);
    let tokens = bulk_agent_tokens(&mut owner, &p.primary, 200);
    assert_eq!(tokens.len(), 200);
    let parts = |v: &Vault, what: &str| -> Vec<(u32, u32)> {
        replication_audit(v)
            .iter()
            .filter(|r| r["outcome"] == "ok")
            .filter_map(|r| {
                let d = r["detail"].as_str()?;
                if !d.contains(what) {
                    return None;
                }
                let (k, n) = d.split(' ').find_map(|f| f.strip_prefix("auth_part="))?.split_once('/')?;
                Some((k.parse().ok()?, n.parse().ok()?))
            })
            .collect()
    };
    // The first part staged: none of the new agents is served yet (the set is applied whole,
    // with the last part), and the backup is killed before the rest arrives.
    within(
        60,
        "a first part staged",
        || parts(&p.backup_vault, "staged").iter().any(|(k, _)| *k == 1),
        || format!("{:?}", replication_audit(&p.backup_vault)),
    );
    let reads = |s: &Server, t: &str| s.get("/api/entries", Some(t)).status == 200;
    assert!(!reads(&p.backup, &tokens[0]), "an agent of a half-arrived snapshot is served");
    p.backup.kill9();
    let (_, n) = parts(&p.backup_vault, "staged")[0];
    assert!(n >= 3, "{n} parts");
    std::thread::sleep(std::time::Duration::from_millis(500));
    p.restart_backup();
    // The restarted backup lost its staging: the primary starts over from part 0 and the whole
    // set arrives.
    within(
        90,
        "every agent reads on the backup",
        || reads(&p.backup, &tokens[199]) && tokens.iter().all(|t| reads(&p.backup, t)),
        || format!("{:?}\nsends {:?}", replication_audit(&p.backup_vault), sends(&p.primary_vault)),
    );
    let applied = parts(&p.backup_vault, "applied");
    assert!(applied.iter().any(|(k, n)| k == n && *n >= 3), "{applied:?}");
    // Every part was a body within the 16 KiB limit.
    let too_big = replication_audit(&p.backup_vault)
        .into_iter()
        .filter(|r| r["detail"].as_str().unwrap_or_default().contains("body_too_large"))
        .count();
    assert_eq!(too_big, 0);
    // The primary's watermark moved only with the last part: nothing of the auth snapshot waits.
    within(
        20,
        "the primary's backlog drained",
        || replication_status(&p.primary_vault)["backlog"]["zurich-01"]["auth"] == false,
        || format!("{}", replication_status(&p.primary_vault)),
    );
}

#[test]
fn auth_parts_shrink_when_the_backups_body_limit_is_below_the_primarys() {
    // The primary's file says 64 KiB, the backup's 16 KiB: the backup's 413s halve the parts.
    let p = pair_setup(Setup {
        ca: true,
        licensed: true,
        rate: 5,
        poll: 1,
        passkey_owner: true,
        primary_extra: "max_body_bytes = 65536",
        backup_extra: "max_body_bytes = 16384",
        ..Setup::default()
    });
    let mut owner = passkey::Admin::owner(&p.primary, &p.primary_vault.setup_code);
    let tokens = bulk_agent_tokens(&mut owner, &p.primary, 200);
    within(
        60,
        "every agent reads on the backup",
        || tokens.iter().all(|t| p.backup.get("/api/entries", Some(t)).status == 200),
        || format!("{:?}\nsends {:?}", replication_audit(&p.backup_vault), sends(&p.primary_vault)),
    );
    let refused = replication_audit(&p.backup_vault)
        .into_iter()
        .filter(|r| r["detail"].as_str().unwrap_or_default().contains("body_too_large"))
        .count();
    assert!(refused > 0, "the primary's first, larger bodies were refused");
}

#[test]
fn malformed_auth_parts_are_refused_field_by_field() {
    let b = backup("rate_limit_per_s = 0");
    let part = |part: u32, parts: u32, keyring: Option<&str>, entries: Value| {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let ts = now();
        let body = serde_json::to_vec(&json!({"source_pop": SOURCE, "vault": "0123456789abcdef0123456789abcdef",
            "timestamp": ts, "nonce": nonce, "entries": entries,
            "auth": {"seq": 5, "agents": [], "passkeys": [], "keyring": keyring, "part": part, "parts": parts}}))
        .unwrap();
        let msg = format!(
            "clavitor-replication-v1\nPOST\n/api/replication/apply\n{ts}\n{nonce}\n{}",
            hex::encode(Sha256::digest(&body))
        );
        let sig = hex::encode(b.source.sign(msg.as_bytes()).to_bytes());
        Signed { pop: SOURCE.into(), ts, nonce, sig, body }
    };
    for (signed, says) in [
        (part(0, 0, None, json!([])), "auth.parts must be 1 to 1024, not 0"),
        (part(0, 1025, None, json!([])), "not 1025"),
        (part(3, 3, None, json!([])), "auth.part must be below auth.parts (3), not 3"),
        (part(1, 3, Some("{}"), json!([])), "only part 0"),
        (part(0, 3, None, json!([wire_entry(1)])), "travels alone"),
    ] {
        refused_with(&b, &signed, 400, "bad_auth_part");
        let last = replication_audit(&b.v).into_iter().max_by_key(|r| r["id"].as_i64()).unwrap();
        assert!(last["detail"].as_str().unwrap().contains(says), "{says}: {last}");
    }
}

/// Entries the backup serves `token` (0 while it refuses the token).
fn count_on(s: &Server, token: &str) -> usize {
    let r = s.get("/api/entries", Some(token));
    if r.status != 200 {
        return 0;
    }
    r.json().as_array().map_or(0, Vec::len)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

/// bench/replication.sh: the catch-up rate of a backlog (default 10,000 entries) and the lag of
/// single writes under a steady write load (one every 250 ms), at the review's defaults and with
/// the limits lifted. Prints figures (and the machine's load average), asserts none. Runs the
/// binary `CLAVITOR_TEST_BIN` names (the script builds it with the `ci-release` profile).
#[test]
#[ignore = "a benchmark: bench/replication.sh runs it"]
fn bench_replication() {
    use std::time::{Duration, Instant};
    let env_or = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (backlog, writes) = (env_or("BENCH_BACKLOG", 10_000), env_or("BENCH_WRITES", 40));
    let load = || {
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
    };
    println!("binary: {}", common::bin());
    let cases = [
        ("defaults (1 request/s per POP, 100 entries a batch)", "", 1),
        ("lifted (batch_size = 1000, no rate limit)", "batch_size = 1000", 0),
    ];
    // BENCH_ONLY=defaults|lifted runs one of the two.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    for (label, extra, rate) in cases {
        if !only.is_empty() && !label.starts_with(only.as_str()) {
            continue;
        }
        println!("{label}: load average before {}", load());
        let mut p = pair_full(None, true, &[], extra, true, (rate, 30));
        let owner = p.primary_vault.owner.clone();
        let cli = |p: &Pair, args: &[&str], stdin: Option<&str>| {
            let out = p.primary_cli(args, stdin.unwrap_or_default());
            assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        // The backlog: written while the backup is down, then timed from the backup's start to
        // the backup serving the import's last entry (batches go in (change_seq, id) order).
        p.backup.kill9();
        let lines: String = (0..backlog)
            .map(|i| format!("{}\n", json!({"title": format!("e{i}"), "url": "https://e.example"})))
            .collect();
        cli(&p, &["entry", "import", "--file", "-"], Some(&lines));
        let start = Instant::now();
        p.restart_backup();
        let last = format!("/api/entries/{backlog}");
        while p.backup.get(&last, Some(&owner)).status != 200 && start.elapsed() < Duration::from_secs(600) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let secs = start.elapsed().as_secs_f64();
        let got = count_on(&p.backup, &owner);
        // The apply pipeline alone, from the backup's audit: entries written after the first
        // batch over the time from the first batch's row to the last's.
        let batches: Vec<(i64, usize)> = replication_audit(&p.backup_vault)
            .iter()
            .filter(|r| r["outcome"] == "ok")
            .filter_map(|r| {
                let n = r["detail"].as_str()?.split(' ').find_map(|f| f.strip_prefix("written="))?.parse().ok()?;
                Some((r["ts"].as_i64()?, n))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        let (t0, t1) = (batches.iter().map(|b| b.0).min().unwrap_or(0), batches.iter().map(|b| b.0).max().unwrap_or(0));
        let first = batches.iter().find(|b| b.0 == t0).map_or(0, |b| b.1);
        let total: usize = batches.iter().map(|b| b.1).sum();
        let pipeline = if t1 > t0 { (total - first) as f64 * 1000.0 / (t1 - t0) as f64 } else { f64::NAN };
        println!(
            "{label}: catch-up of {got}/{backlog} entries in {secs:.2} s from the backup's start = {:.0} entries/s; \
             {} batches, first to last {} ms = {pipeline:.0} entries/s",
            got as f64 / secs,
            batches.len(),
            t1 - t0
        );
        // The backlog's tail (the import's audit rows can outlast its entries by a batch) is
        // catch-up, not lag: the lag is measured once the primary's backlog is empty.
        // (The primary's flags carry its --replication-config.)
        let status = || {
            let out = p.primary_cli(&["replication", "status"], "");
            serde_json::from_slice::<Value>(&out.stdout).unwrap_or_default()
        };
        let drained = (0..600).any(|_| {
            status()["backlog"]["zurich-01"]["rows"] == 0 || {
                std::thread::sleep(Duration::from_millis(100));
                false
            }
        });
        assert!(drained, "the primary's backlog did not drain: {}", status());
        // Lag: one write every 250 ms (a delete: the roomy license's cap is 10,000 live entries),
        // each timed from the CLI's commit to the backup no longer serving the entry (one cheap
        // GET by id per 10 ms, so the probe does not load the backup).
        let mut lags = Vec::new();
        let lag_start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        for id in 1..=writes {
            let path = format!("/api/entries/{id}");
            cli(&p, &["entry", "rm", &id.to_string()], None);
            let t = Instant::now();
            while p.backup.get(&path, Some(&owner)).status == 200 && t.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(10));
            }
            lags.push(t.elapsed().as_secs_f64() * 1000.0);
            std::thread::sleep(Duration::from_millis(250));
        }
        if std::env::var_os("BENCH_TRACE").is_some() {
            println!("  lags in order (ms): {:?}", lags.iter().map(|l| l.round() as i64).collect::<Vec<_>>());
            let mut rows = sends(&p.primary_vault);
            rows.reverse();
            for r in rows.iter().filter(|r| r["ts"].as_i64() >= Some(lag_start)).take(8) {
                println!("  send {} {} {}", r["ts"], r["outcome"], r["detail"]);
            }
        }
        lags.sort_by(f64::total_cmp);
        println!(
            "{label}: lag of {writes} single writes: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (slowest: {:?})",
            percentile(&lags, 0.5),
            percentile(&lags, 0.99),
            lags.last().copied().unwrap_or(f64::NAN),
            lags.iter().rev().take(4).map(|l| l.round() as i64).collect::<Vec<_>>()
        );
        println!("{label}: load average after {}", load());
    }
}
