//! Crash safety: concurrent CLI writes, WebAuthn-approved API writes and API reads, the server
//! killed with SIGKILL mid-load. Afterwards every acknowledged write is present with what it
//! wrote and its audit row, every secret that was returned has its audit row, and SQLite's
//! integrity check says ok.

mod common;
#[path = "common/passkey.rs"]
mod passkey;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, Vault, request};
use serde_json::json;

#[test]
fn kill_9_under_load_loses_nothing_acknowledged() {
    let v = Arc::new(Vault::uninitialised_owner());
    for i in 0..20 {
        v.add_entry(&json!({"title": format!("seed {i}"), "fields": [{"name": "pw", "kind": "secret", "value": format!("seed-secret-{i}")}]}));
    }
    let mut server = Server::start(&v.dir(), &[]);
    let url = server.url("");
    let owner = passkey::Admin::owner(&server, &v.setup_code);
    let token = owner.token.clone();
    let stop = Arc::new(AtomicBool::new(false));
    // (entry id, title) of every write the CLI or the API acknowledged.
    let acked_writes = Arc::new(Mutex::new(Vec::<(i64, String)>::new()));
    let served_reads = Arc::new(Mutex::new(Vec::<(i64, i64)>::new())); // (audit id, entry id)
    let deadline = Instant::now() + Duration::from_secs(60);

    let mut threads = Vec::new();
    for w in 0..2 {
        let (v, stop, acked) = (v.clone(), stop.clone(), acked_writes.clone());
        threads.push(std::thread::spawn(move || {
            for n in 0..400 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let title = format!("w{w}-{n}");
                let entry =
                    json!({"title": title, "fields": [{"name": "pw", "kind": "secret", "value": format!("s{w}-{n}")}]});
                let out = v.cli_stdin(&["entry", "add", "--json-file", "-", "--json"], Some(&entry.to_string()));
                if out.status.success() {
                    let id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"].as_i64().unwrap();
                    acked.lock().unwrap().push((id, title));
                }
            }
        }));
    }
    {
        // Writes over the API, each approved by the owner's passkey: acknowledged by a 201.
        let (stop, acked, url, mut owner) = (stop.clone(), acked_writes.clone(), url.clone(), owner);
        threads.push(std::thread::spawn(move || {
            for n in 0..100_000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let title = format!("api-{n}");
                let entry =
                    json!({"title": title, "fields": [{"name": "pw", "kind": "secret", "value": format!("a-{n}")}]});
                let Some(r) = owner.try_write(&url, "POST", "/api/entries", &entry) else { break };
                if r.status == 201 {
                    acked.lock().unwrap().push((r.json()["id"].as_i64().unwrap(), title));
                }
            }
        }));
    }
    for r in 0..4 {
        let (stop, served, url, token) = (stop.clone(), served_reads.clone(), url.clone(), token.clone());
        threads.push(std::thread::spawn(move || {
            let agent = common::client();
            for n in 0..100_000i64 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let id = 1 + (n * 7 + r) % 20;
                let req = ureq::http::Request::builder()
                    .uri(format!("{url}/api/entries/{id}"))
                    .header("Authorization", format!("Bearer {token}"))
                    .body(Vec::new())
                    .unwrap();
                // Connection errors are expected once the server is gone.
                let Ok(mut resp) = agent.run(req) else { break };
                if resp.status() == 200 {
                    let audit: i64 = resp.headers()["x-clavitor-audit-id"].to_str().unwrap().parse().unwrap();
                    // Only count the read once the secret has actually arrived.
                    if let Ok(body) = resp.body_mut().read_to_string()
                        && body.contains(&format!("seed-secret-{}", id - 1))
                    {
                        served.lock().unwrap().push((audit, id));
                    }
                }
            }
        }));
    }

    // Let the load build up, then pull the plug on the server mid-load.
    common::eventually("load under way", || {
        let acked = acked_writes.lock().unwrap();
        served_reads.lock().unwrap().len() > 200 && acked.len() > 5 && acked.iter().any(|(_, t)| t.starts_with("api-"))
    });
    server.kill9();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked_writes.lock().unwrap().clone();
    let served = served_reads.lock().unwrap().clone();
    assert!(!served.is_empty() && !acked.is_empty());

    // Reopen: integrity, every acknowledged write, every returned secret's audit row.
    let check = v.cli(&["check"]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let present: std::collections::HashMap<i64, String> = v
        .cli_json(&["entry", "list", "--json"], None)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_i64().unwrap(), e["title"].as_str().unwrap().to_owned()))
        .collect();
    for (id, title) in &acked {
        assert_eq!(present.get(id), Some(title), "acknowledged entry {id} ({title}) lost or changed");
    }
    let rows = v.audit_rows(false);
    let audited: HashSet<(i64, i64)> = rows
        .iter()
        .filter(|r| r["action"] == "entry.read" && r["outcome"] == "ok")
        .map(|r| (r["id"].as_i64().unwrap(), r["entry_id"].as_i64().unwrap()))
        .collect();
    for read in &served {
        assert!(audited.contains(read), "secret returned without an audit row: {read:?}");
    }
    let created: HashSet<i64> =
        rows.iter().filter(|r| r["action"] == "entry.create").filter_map(|r| r["entry_id"].as_i64()).collect();
    for (id, _) in &acked {
        assert!(created.contains(id), "write {id} has no audit row");
    }

    // And the vault serves again.
    let s = Server::start(&v.dir(), &[]);
    let r = request(&s.url("/api/entries"), "GET", Some(&token), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json().as_array().unwrap().len(), present.len());
    let api = acked.iter().filter(|(_, t)| t.starts_with("api-")).count();
    eprintln!(
        "crash test: {} acknowledged writes ({api} over the API), {} audited reads before SIGKILL",
        acked.len(),
        served.len()
    );
}
