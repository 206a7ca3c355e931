//! The minter's command line with keys made by `openssl genpkey -algorithm ed25519`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_clavitor-license");

/// Writes `<name>.pem` (private) and `<name>.pub.pem` into `dir` with openssl.
fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let ok = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&private)
        .status()
        .expect("openssl")
        .success();
    assert!(ok);
    let ok = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    (private, public)
}

fn mint(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn happy_path_writes_a_token_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keypair(dir.path(), "vendor");
    let out = dir.path().join("acme.lic");
    let r = mint(&[
        "--private-key",
        s(&private),
        "--public-key",
        s(&public),
        "--tenant",
        "acme",
        "--label",
        "ACME prod",
        "--expires",
        "2099-01-01",
        "--grace-days",
        "30",
        "--max-agents-per-vault",
        "50",
        "--output",
        s(&out),
        "--verify",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let token = std::fs::read_to_string(&out).unwrap();
    let pem = std::fs::read_to_string(&public).unwrap();
    let key = clavitor::license::PublicKey::from_pem(&pem).unwrap();
    let info = clavitor::license::validate(&token, &key, "acme").unwrap();
    assert_eq!(info.grace_period_days, 30);
    assert_eq!(info.label.as_deref(), Some("ACME prod"));
    assert_eq!(info.limits.0.len(), 1, "unspecified limits are omitted");
    // Stdout mode prints the token.
    let r = mint(&["--private-key", s(&private), "--tenant", "acme", "--expires", "2099-01-01"]);
    assert!(r.status.success());
    assert!(clavitor::license::validate(String::from_utf8_lossy(&r.stdout).trim(), &key, "acme").is_ok());
    // The private key never reaches the output.
    let key_text = std::fs::read_to_string(&private).unwrap();
    let key_b64 = key_text.lines().nth(1).unwrap();
    assert!(!String::from_utf8_lossy(&r.stdout).contains(key_b64));
}

#[test]
fn verify_with_the_wrong_public_key_fails_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let (private, _) = keypair(dir.path(), "vendor");
    let (_, other_public) = keypair(dir.path(), "other");
    let out = dir.path().join("acme.lic");
    let r = mint(&[
        "--private-key",
        s(&private),
        "--public-key",
        s(&other_public),
        "--tenant",
        "acme",
        "--expires",
        "2099-01-01",
        "--output",
        s(&out),
        "--verify",
    ]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("signature verification failed"));
    assert!(!out.exists(), "the bad token was not deleted");
}

#[test]
fn unknown_flags_and_missing_public_key_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (private, _) = keypair(dir.path(), "vendor");
    let base = ["--private-key", s(&private), "--tenant", "acme", "--expires", "2099-01-01"];
    let r = mint(&[&base[..], &["--max-apps", "3"]].concat());
    assert!(!r.status.success());
    let r = mint(&[&base[..], &["--verify"]].concat());
    assert!(!r.status.success(), "--verify without --public-key");
    let r = mint(&[&base[..], &["--gen-keypair"]].concat());
    assert!(!r.status.success(), "no key generation");
}
