//! The token index always ends up equal to the agents in the file: a change made on the command
//! line while the server also changes agents through the API is never lost or undone.

mod common;
#[path = "common/passkey.rs"]
mod passkey;

use std::time::{Duration, Instant};

use common::{Server, Vault};
use passkey::Admin;
use serde_json::json;

/// How long the test waits for a CLI change to reach the server. The server's watcher polls every
/// 200 ms, so a change normally lands well within 1 s; the bound is generous for a loaded machine,
/// and a lost change (the bug this guards against) never lands at all.
const BOUND: Duration = Duration::from_secs(5);

fn status(s: &Server, token: &str) -> u16 {
    s.get("/api/entries", Some(token)).status
}

/// Waits until `token` answers `want`; returns how long that took.
fn settles(s: &Server, token: &str, want: u16, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let got = status(s, token);
        if got == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < BOUND, "{what}: still {got} after {BOUND:?}, want {want}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_agent_added_on_the_command_line_just_before_the_first_passkey_authenticates() {
    // A break-glass owner (no passkey), then a fresh link. The CLI adds an agent and the
    // passkey is enrolled before the watcher's next tick: the enrolment's refresh sees the new
    // agent first, and the index must still learn of it.
    for round in 0..3 {
        let v = Vault::new();
        let out = v.cli(&["init"]);
        let code = common::setup_code_in(&String::from_utf8_lossy(&out.stdout)).expect("enrollment link");
        let s = v.serve();
        let start = passkey::post_json(&s, "/api/setup/start", None, &json!({"code": code}));
        assert_eq!(start.status, 200, "{}", start.body);
        drop(start);
        let (_, token) = v.add_agent(&format!("late {round}"), &[]);
        let (_, r) = Admin::setup(&s, &code);
        assert_eq!(r.status, 200, "{}", r.body);
        settles(&s, &token, 200, "an agent added just before the passkey");
    }
}

#[test]
fn cli_and_api_agent_changes_race_and_the_last_change_wins() {
    let v = Vault::uninitialised_owner();
    let s = v.serve();
    let mut owner = Admin::owner(&s, &v.setup_code);
    v.add_entry(&json!({"title": "t", "fields": []}));
    let (api_target, _) = v.add_agent("renamed by the API", &[]);
    // The token index is the same code in both editions: the community run races it 1,000
    // times, the commercial run (which only adds routes around it) 200 times, to keep CI short.
    let default_rounds = if cfg!(feature = "commercial") { 200 } else { 1000 };
    let rounds: usize =
        std::env::var("CLAVITOR_RACE_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(default_rounds);
    let mut live: Vec<(i64, String)> = Vec::new();
    let mut slowest = Duration::ZERO;
    for round in 0..rounds {
        // Add on even rounds and on odd ones revoke what the previous round added, each racing an
        // API change of another agent (which refreshes the vault and the index).
        let add = round % 2 == 0 || live.is_empty();
        let cli = {
            let dir = v.dir();
            let victim = if add { None } else { live.pop() };
            std::thread::spawn(move || {
                let mut cmd = std::process::Command::new(common::BIN);
                cmd.arg("--data-dir").arg(&dir).env_remove("CLAVITOR_LOG");
                match &victim {
                    None => cmd.args(["agent", "add", "--name", &format!("cli {round}"), "--json"]),
                    Some((id, _)) => cmd.args(["agent", "revoke", &id.to_string()]),
                };
                let out = cmd.output().expect("run clavitor");
                assert!(out.status.success(), "cli: {}", String::from_utf8_lossy(&out.stderr));
                match victim {
                    None => {
                        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
                        Ok((v["id"].as_i64().expect("id"), v["token"].as_str().expect("token").to_owned()))
                    }
                    Some(revoked) => Err(revoked),
                }
            })
        };
        let r = owner.write(&s, "PUT", &format!("/api/agents/{api_target}"), &json!({"name": format!("api {round}")}));
        assert_eq!(r.status, 200, "round {round}: {}", r.body);
        match cli.join().expect("cli thread") {
            Ok(added) => {
                slowest = slowest.max(settles(&s, &added.1, 200, &format!("round {round}: new agent")));
                live.push(added);
            }
            Err((id, token)) => {
                slowest = slowest.max(settles(&s, &token, 401, &format!("round {round}: revoked agent {id}")));
            }
        }
        // Every agent that should be live still is: no change was undone.
        if round % 50 == 0 {
            for (id, token) in &live {
                assert_eq!(status(&s, token), 200, "round {round}: agent {id} lost");
            }
            assert_eq!(status(&s, &owner.token), 200, "round {round}: owner lost");
        }
    }
    println!("{rounds} rounds; slowest CLI change to reach the server: {slowest:?}");
}
