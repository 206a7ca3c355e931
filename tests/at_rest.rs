//! Nothing of an entry but ids, scopes, timestamps and version is readable in the vault file, and
//! the files refuse to open with the wrong or a lax master key, or from a newer schema.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::Vault;
use serde_json::json;

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn raw_sqlite_files_hold_no_plaintext() {
    let v = Vault::new();
    let password = "correct-horse-battery-staple-81273";
    let title = "Quarterly Payroll Portal 5521";
    let url = "https://payroll-portal-5521.example.com/login";
    let note = "deeply private note 99173";
    v.add_entry(&json!({"title": title, "url": url, "scopes": ["0001"], "fields": [
        {"name": "password", "kind": "secret", "value": password},
        {"name": "note", "kind": "note", "value": note},
    ]}));
    {
        // Read it through the server too, so caches and audit rows exist before the scan.
        let s = v.serve();
        assert_eq!(s.get("/api/entries/1", Some(&v.owner)).json()["fields"][0]["value"], password);
        assert!(!s.stderr().contains(password));
    }
    // Every file under the data dir (vault file, its WAL, node.db) except the key itself.
    let mut scanned = 0;
    for path in walk(&v.dir()) {
        if path.file_name().is_some_and(|n| n == "master.key") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for secret in [password, title, url, note, &v.owner[4..]] {
            assert!(!contains(&bytes, secret), "{secret:?} found in {}", path.display());
        }
        scanned += 1;
    }
    assert!(scanned >= 2);
    // And the scopes really are in the clear (the scan would find plaintext if it were there).
    let conn = rusqlite::Connection::open(v.vault_file()).unwrap();
    let scopes: String = conn.query_row("SELECT scopes FROM entries WHERE id = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(scopes, "0001");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn master_key_rules() {
    let v = Vault::new();
    let key = v.dir().join("master.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = v.cli(&["entry", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A different key does not open the vault, and is not silently replaced.
    let other = v.tmp.path().join("other.key");
    std::fs::write(&other, [7u8; 32]).unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = v.cli(&["--master-key-file", other.to_str().unwrap(), "entry", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not open vault"));

    // A data dir whose key went missing is refused, not re-keyed.
    std::fs::rename(&key, v.tmp.path().join("moved.key")).unwrap();
    let out = v.cli(&["init"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to create a new key"));
}

#[test]
fn a_file_from_a_newer_version_is_refused() {
    let v = Vault::new();
    let conn = rusqlite::Connection::open(v.vault_file()).unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);
    let out = v.cli(&["entry", "list"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("newer Clavitor"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn init_is_idempotent_and_check_passes() {
    let v = Vault::new();
    let out = v.cli(&["init"]);
    assert!(out.status.success());
    assert!(common::token_in(&String::from_utf8_lossy(&out.stdout)).is_none(), "a second init prints no token");
    assert!(String::from_utf8_lossy(&out.stdout).contains("already initialised"));
    let out = v.cli(&["check"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches(": ok").count(), 2);
}

#[test]
fn bad_operator_input_is_refused_cleanly() {
    let v = Vault::new();
    for (args, stdin) in [
        (vec!["entry", "add", "--json-file", "-"], Some("{not json")),
        (
            vec!["entry", "add", "--json-file", "-"],
            Some(r#"{"title":"x","fields":[{"name":"otp","kind":"totp","value":"%%%"}]}"#),
        ),
        (vec!["entry", "add", "--title", "x", "--field", "nokind=1"], None),
        (vec!["entry", "add", "--title", "x", "--scopes", "ZZZZ"], None),
        (vec!["agent", "add", "--name", "x", "--scopes", "1;drop table agents"], None),
        (vec!["agent", "add", "--name", ""], None),
        (vec!["entry", "rm", "12345"], None),
    ] {
        let out = v.cli_stdin(&args, stdin);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("clavitor: error:") || err.contains("error:"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert_eq!(v.cli_json(&["entry", "list", "--json"], None).as_array().unwrap().len(), 0);
    assert_eq!(v.cli_json(&["agent", "list", "--json"], None).as_array().unwrap().len(), 1);
}
