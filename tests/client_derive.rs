//! `clavitor token derive` against the real server's `POST /api/tokens/derive`: the new token is
//! printed once, reads only what it was narrowed to, and a refusal shows the server's message.

mod common;

use std::process::{Command, Output, Stdio};

use clavitor::client::{ClientConfig, VaultClient};
use common::{BIN, Vault, eventually};
use serde_json::{Value, json};
use zeroize::Zeroizing;

fn clavitor(url: &str, token: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("CLAVITOR_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).env("CLAVITOR_URL", url).env("CLAVITOR_TOKEN", token).env("HOME", "/nonexistent");
    cmd.stdin(Stdio::null()).output().expect("run clavitor")
}

#[test]
#[ignore = "needs POST /api/tokens/derive (branch tokens)"]
fn derive_prints_a_narrower_token_once() {
    let v = Vault::new();
    let (id, token) = v.add_agent("ci", &["--scopes", "00aa"]);
    let own = format!("{id:04x}");
    v.add_entry(
        &json!({"title": "Own", "scopes": [own], "fields": [{"name": "k", "kind": "secret", "value": "own-v"}]}),
    );
    v.add_entry(
        &json!({"title": "Extra", "scopes": ["00aa"], "fields": [{"name": "k", "kind": "secret", "value": "extra-v"}]}),
    );
    let s = v.serve();
    let url = format!("http://{}", s.addr);

    let out = clavitor(&url, &token, &["token", "derive", "--name", "sub", "--ttl", "1h", "--scopes", &own]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let child = text.strip_suffix('\n').expect("one line");
    assert!(child.starts_with("cvt_") && !child.contains('\n') && child != token, "{text}");
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));

    // The new token reads its scope and nothing else.
    eventually("the derived token is known", || clavitor(&url, child, &["ls"]).status.success());
    let ls = String::from_utf8(clavitor(&url, child, &["ls"]).stdout).unwrap();
    assert!(ls.contains("Own") && !ls.contains("Extra"), "{ls}");
    let out = clavitor(&url, child, &["get", "clavitor://Own/k"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "own-v\n");

    // --json: the whole answer.
    let out = clavitor(&url, &token, &["token", "derive", "--name", "sub2", "--ttl", "10m", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["name"], "sub2");
    assert_eq!(j["parent_id"], id);
    assert_eq!(j["all_access"], false);
    assert!(j["token"].as_str().unwrap().starts_with("cvt_"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let expires = j["expires_at"].as_i64().expect("expires_at");
    assert!(expires > now && expires <= now + 600 + 5, "{expires} vs {now}");

    // Widening is refused with the server's message; nothing is printed on stdout.
    let out = clavitor(&url, &token, &["token", "derive", "--name", "wide", "--ttl", "1h", "--scopes", "ffff"]);
    assert!(!out.status.success() && out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the vault answered 403"), "{err}");
    assert!(!err.contains(&token[4..]), "{err}");
    let out = clavitor(&url, &token, &["token", "derive", "--name", "long", "--ttl", "48h"]);
    assert!(!out.status.success() && out.stdout.is_empty());

    // The library's whoami (used by clavitor mcp) reads the derived token's own agent.
    let cfg = ClientConfig::new(url.clone(), Zeroizing::new(child.to_owned()), None).unwrap();
    let me = VaultClient::new(cfg).unwrap().whoami().unwrap();
    // Its scopes: the one it was narrowed to, and its own (every agent has one).
    let mut scopes = vec![own.clone(), format!("{:04x}", me.id)];
    scopes.sort();
    assert_eq!((me.name.as_str(), me.parent_id, me.scopes.clone()), ("sub", Some(id), scopes));
    assert!(!me.admin && !me.all_access && me.expires_at.is_some_and(|e| e <= now + 3600 + 5));
}
