//! Fills a data dir for bench/hosted.sh (issue 16): N hosted vaults made by the product's own
//! code, without 10,000 HTTP round trips and process starts. Each vault is created by
//! `DataDir::add_vault` (what `POST /api/mgmt/vaults` and `clavitor vault add` run: its file,
//! wrapped key, registry row under the license cap, setup code), then given an owner-like agent
//! (all access, admin) and one entry by `vault::ops` (what `clavitor agent add` and `entry add`
//! run), on a few threads.
//!
//!   hosted_fill DATA_DIR N [THREADS]
//!       prints one `vault_id token` line per vault (the agent's token).
//!
//! The data dir must be initialised, and the license environment (`CLAVITOR_TENANT_ID`,
//! `CLAVITOR_LICENSE_PUBLIC_KEY`, `CLAVITOR_LICENSE_FILE`) must allow N more vaults.
//! Commercial builds only.

#[cfg(feature = "commercial")]
fn main() {
    if let Err(e) = fill::run() {
        eprintln!("hosted_fill: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(not(feature = "commercial"))]
fn main() {
    eprintln!("hosted_fill needs a --features commercial build (hosted vaults are commercial)");
    std::process::exit(2);
}

#[cfg(feature = "commercial")]
mod fill {
    use std::io::Write;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use anyhow::{Context, bail};
    use clap::Parser;
    use clavitor::audit::{Action, Actor, AuditEvent, Outcome};
    use clavitor::vault::DataDir;
    use clavitor::vault::entry::EntryInput;
    use clavitor::vault::ops;

    #[derive(Parser)]
    struct Env {
        #[command(flatten)]
        edition: clavitor::edition::EditionArgs,
    }

    pub fn run() -> anyhow::Result<()> {
        let args: Vec<String> = std::env::args().collect();
        let (Some(root), Some(n)) = (args.get(1), args.get(2)) else {
            bail!("usage: hosted_fill DATA_DIR N [THREADS]");
        };
        let n: usize = n.parse().context("N is a number")?;
        let threads: usize = args.get(3).map_or(Ok(4), |t| t.parse()).context("THREADS is a number")?;
        let dir = DataDir::new(PathBuf::from(root), None);
        let env = Env::parse_from(["hosted_fill"]);
        clavitor::edition::current()
            .open_node(&env.edition, &dir.node_db_path(), false)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let master = dir.load_master_key()?;
        let next = AtomicUsize::new(0);
        let out = std::sync::Mutex::new(std::io::BufWriter::new(std::io::stdout()));
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads.max(1))
                .map(|_| {
                    scope.spawn(|| -> anyhow::Result<()> {
                        while next.fetch_add(1, Ordering::Relaxed) < n {
                            let line = one(&dir, &master)?;
                            let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                            writeln!(out, "{line}")?;
                        }
                        Ok(())
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|w| w.join().unwrap_or_else(|_| bail!("a worker panicked")))
        })?;
        out.lock().unwrap_or_else(|p| p.into_inner()).flush()?;
        Ok(())
    }

    /// One vault with its agent and entry: `vault_id token`.
    fn one(dir: &DataDir, master: &clavitor::crypto::MasterKey) -> anyhow::Result<String> {
        // Registrations racing on node.db are refused (SQLITE_BUSY) and retried, as the API does.
        let mut tries = 0;
        let (id, _code) = loop {
            tries += 1;
            match dir.add_vault(master, "bench") {
                Ok(made) => break made,
                Err(e) if tries < 20 => {
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(5 * tries));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let mut v = dir.open_vault(master, &id)?;
        let event = |a| AuditEvent::new(Actor::LocalOperator, a, Outcome::Ok).client("local");
        let (_, token) =
            ops::add_agent(&mut v.db, "owner", &[], (true, true), None, false, &event(Action::AgentCreate))?;
        let input: EntryInput = serde_json::from_value(serde_json::json!({
            "title": "bench",
            "fields": [{"name": "pw", "kind": "secret", "value": "bench-value"}],
        }))?;
        ops::add_entry(&mut v.db, &v.id, &v.key, input, &event(Action::EntryCreate))?;
        Ok(format!("{id} {}", token.reveal()))
    }
}
