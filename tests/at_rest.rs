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

/// The server's own memory: after it has loaded an entry and answered reads of it (whole entry
/// and TOTP code), no readable, writable mapping of the process holds the secret values. The
/// cache keeps them sealed under the memory key, and the buffers they passed through (the
/// decrypted entry, the rendered view, the answers) were wiped when freed.
#[test]
fn a_serving_process_keeps_no_plaintext_secret_in_its_memory() {
    let v = Vault::new();
    let password = "in-memory-canary-Zq81Lw3Rk92-and-then-some-more-bytes-7731";
    let seed = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXQJBSWY3DPEHPK3PXR";
    v.add_entry(&json!({"title": "canary", "scopes": ["0001"], "fields": [
        {"name": "password", "kind": "secret", "value": password},
        {"name": "otp", "kind": "totp", "value": seed},
    ]}));
    let s = v.serve();
    // A second entry arrives while the server runs, so the watcher's refresh path (not only the
    // first load, whose scratch memory is handed back to the OS) has decrypted and cached it.
    let late = "late-arriving-canary-Hh27Vx0Mq55-with-enough-length-to-scan";
    v.add_entry(&json!({"title": "late", "scopes": ["0001"], "fields": [
        {"name": "password", "kind": "secret", "value": late},
    ]}));
    common::eventually("the late entry is served", || s.get("/api/entries/2", Some(&v.owner)).status == 200);
    for _ in 0..3 {
        assert_eq!(s.get("/api/entries/1", Some(&v.owner)).json()["fields"][0]["value"], password);
        assert_eq!(s.get("/api/entries/2", Some(&v.owner)).json()["fields"][0]["value"], late);
        assert_eq!(s.get("/api/ext/totp/1", Some(&v.owner)).status, 200);
    }
    let pid = s.child.id();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut scanned = 0usize;
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else { continue };
        if !perms.starts_with("rw") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let (start, end) = (u64::from_str_radix(start, 16).unwrap(), u64::from_str_radix(end, 16).unwrap());
        let mut bytes = vec![0u8; (end - start) as usize];
        use std::io::{Read, Seek, SeekFrom};
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut bytes).is_err() {
            continue; // guard pages and the like
        }
        // The tails: freeing a small buffer overwrites its first 16 bytes with allocator
        // bookkeeping, so a whole-string search would miss an unwiped one.
        for secret in [&password[16..], &seed[16..], &late[16..]] {
            assert!(!contains(&bytes, secret), "{secret:?} is in the server's memory at {line}");
        }
        scanned += bytes.len();
    }
    assert!(scanned > 1 << 20, "only {scanned} bytes of the process could be read");
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
