//! The local operator commands: `agent`, `entry`, `audit`, `check`.

use std::io::{BufRead, Read};
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::json;

use super::{AgentCommand, AuditCommand, Command, EntryCommand, GlobalArgs, terminal_safe};
use crate::audit::{Action, Actor, AuditEvent, Outcome};
use crate::auth::AgentId;
use crate::store::node_db::NodeDb;
use crate::store::{AuditRow, integrity_check};
use crate::vault::data_dir::{DataDir, OpenVault};
use crate::vault::entry::{EntryInput, Field, FieldKind, Tier};
use crate::vault::ops;

fn data_dir(global: &GlobalArgs) -> DataDir {
    DataDir::new(global.data_dir.clone(), global.master_key_file.clone())
}

fn open(dir: &DataDir, vault: Option<&str>) -> anyhow::Result<OpenVault> {
    let master = dir.load_master_key()?;
    let id = dir.pick_vault(vault)?;
    Ok(dir.open_vault(&master, &id)?)
}

fn event(action: Action) -> AuditEvent {
    AuditEvent::new(Actor::LocalOperator, action, Outcome::Ok).client("local")
}

fn print_json(v: &serde_json::Value) {
    println!("{v}");
}

pub fn run_operator(global: &GlobalArgs, command: &Command) -> anyhow::Result<()> {
    let dir = data_dir(global);
    let edition = crate::edition::current();
    if let Command::Edition(cmd) = command {
        return edition.run_command(cmd, &global.edition, &dir.node_db_path());
    }
    if !dir.is_uninitialised() {
        // The edition's caps apply to the CLI's creates as to the API's.
        edition.open_node(&global.edition, &dir.node_db_path(), false)?;
        // A replication backup changes only through its primary's batches (issue 14).
        let writes = matches!(
            command,
            Command::Agent(AgentCommand::Add { .. } | AgentCommand::Revoke { .. })
                | Command::Entry(EntryCommand::Add { .. } | EntryCommand::Import { .. } | EntryCommand::Rm { .. })
                | Command::SetupLink
        );
        if let Some(why) = edition.refuses_writes().filter(|_| writes) {
            bail!("{why}");
        }
    }
    match command {
        Command::Init(args) => {
            // Checked like `serve` would, so the printed link is one the server will accept.
            crate::auth::webauthn::RelyingParty::new(
                url_host(&args.origin.origin).unwrap_or_default().as_str(),
                &args.origin.origin,
            )?;
            let report = dir.init()?;
            super::serve::report_init(&dir, &report, &args.origin.origin);
        }
        Command::Agent(cmd) => agent(&dir, cmd)?,
        Command::Entry(cmd) => entry(&dir, cmd)?,
        Command::Audit(cmd) => audit(&dir, cmd)?,
        Command::Check => check(&dir)?,
        Command::SetupLink => setup_link(&dir)?,
        Command::Telemetry(cmd) => super::node::telemetry(&dir, cmd)?,
        Command::Wg(cmd) => super::node::wg(cmd)?,
        Command::Proxy(super::ProxyCommand::Ca) => {
            let master = dir.load_master_key().context("cannot load the master key")?;
            let (ca, _) = crate::proxy::ca::load_or_create(&dir, &master)?;
            print!("{}", ca.pem());
        }
        Command::Serve(_) | Command::Version => bail!("not an operator command"),
        Command::Client(_) | Command::Mcp(_) | Command::Edition(_) => bail!("not an operator command"),
    }
    Ok(())
}

/// `clavitor setup-link`: the saved link, if its code is still good.
fn setup_link(dir: &DataDir) -> anyhow::Result<()> {
    let path = super::serve::setup_link_path(dir);
    let link = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("no setup link is saved in {}; run `clavitor init` for one", dir.root.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let code = link.rsplit_once("#code=").map(|(_, c)| c).unwrap_or_default();
    let hash = crate::crypto::sha256_hex(code.as_bytes());
    let master = dir.load_master_key()?;
    let now = crate::store::now_ms();
    for id in dir.vault_ids()? {
        let v = dir.open_vault(&master, &id)?;
        let Some(row) = v.db.setup_code(&hash)? else { continue };
        if row.used_at.is_some() {
            bail!("the saved setup link was used already; run `clavitor init` if the vault still needs a passkey");
        }
        if row.expires_at <= now {
            bail!("the saved setup link has expired; run `clavitor init` for a fresh one");
        }
        println!("setup link: {link}");
        return Ok(());
    }
    bail!("the saved setup link belongs to no vault here; run `clavitor init` for a fresh one")
}

/// The host of an origin, e.g. `localhost` for `http://localhost:8080`.
fn url_host(origin: &str) -> Option<String> {
    let rest = origin.split_once("://")?.1;
    let host = rest.split(['/', ':']).next()?;
    (!host.is_empty()).then(|| host.to_owned())
}

fn agent(dir: &DataDir, cmd: &AgentCommand) -> anyhow::Result<()> {
    match cmd {
        AgentCommand::Add { name, scopes, all_access, admin, ttl, reveal_to_model, proxy_only_listed, vault, out } => {
            let mut v = open(dir, vault.vault.as_deref())?;
            let extra: Vec<String> =
                scopes.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
            let expires_at = match ttl {
                None => None,
                Some(d) if d.as_secs() == 0 => bail!("--ttl must be at least 1s"),
                Some(d) => Some(
                    i64::try_from(d.as_secs())
                        .ok()
                        .and_then(|s| crate::store::now_secs().checked_add(s))
                        .context("--ttl is too long")?,
                ),
            };
            // One transaction: an agent never exists without the reveal flag it was made with.
            let (agent, token) = v.db.atomically(|db| {
                let (agent, token) = ops::add_agent(
                    db,
                    name,
                    &extra,
                    (*all_access, *admin),
                    expires_at,
                    *proxy_only_listed,
                    &event(Action::AgentCreate),
                )?;
                if !*reveal_to_model {
                    return Ok::<_, crate::vault::VaultError>((agent, token));
                }
                let update = ops::AgentUpdate { reveal_to_model: Some(true), ..ops::AgentUpdate::default() };
                let event = event(Action::AgentUpdate).detail("reveal_to_model");
                Ok((ops::update_agent(db, agent.id, &update, &event)?.0, token))
            })?;
            if out.json {
                print_json(&json!({
                    "id": agent.id.0, "name": agent.name, "scopes": agent.scopes.to_vec(),
                    "all_access": agent.all_access, "admin": agent.admin, "expires_at": agent.expires_at,
                    "reveal_to_model": agent.reveal_to_model,
                    "proxy_only_listed": agent.proxy_only_listed,
                    "token": token.reveal(),
                }));
            } else {
                println!(
                    "created agent {} {:?} (scopes {}, role {:?})",
                    agent.id,
                    agent.name,
                    agent.scopes.to_db(),
                    agent.role()
                );
                println!("token (shown once, store it now): {}", token.reveal());
            }
        }
        AgentCommand::List { vault, out } => {
            let v = open(dir, vault.vault.as_deref())?;
            let rows = v.db.agents()?;
            let agents = rows
                .iter()
                .map(|r| ops::agent_from_row(r).map(|a| (a, v.db.agent_authentic(r))))
                .collect::<Result<Vec<_>, _>>()?;
            warn_forged(&v.id, agents.iter().filter(|(_, ok)| !ok).map(|(a, _)| format!("agent {}", a.id)));
            if out.json {
                let list: Vec<_> = agents
                    .iter()
                    .map(|(a, ok)| json!({"id": a.id.0, "name": a.name, "scopes": a.scopes.to_vec(), "all_access": a.all_access, "admin": a.admin, "created_at": a.created_at, "expires_at": a.expires_at, "parent_id": a.parent_id, "reveal_to_model": a.reveal_to_model, "proxy_only_listed": a.proxy_only_listed, "authentic": ok}))
                    .collect();
                print_json(&json!(list));
            } else {
                for (a, ok) in agents {
                    let mark = if ok { "" } else { "  FORGED: fails its integrity check, grants nothing" };
                    let mut extra = String::new();
                    if let Some(t) = a.expires_at {
                        let state = if a.expired_at(crate::store::now_secs()) { "expired" } else { "expires" };
                        extra.push_str(&format!("  {state} at {t} (unix)"));
                    }
                    if let Some(p) = a.parent_id {
                        extra.push_str(&format!("  derived from {p}"));
                    }
                    if a.reveal_to_model {
                        extra.push_str("  reveal_to_model");
                    }
                    if a.proxy_only_listed {
                        extra.push_str("  proxy_only_listed");
                    }
                    println!(
                        "{:>5}  {:<24}  {:<12?}  {}{extra}{mark}",
                        a.id,
                        terminal_safe(&a.name),
                        a.role(),
                        a.scopes.to_db()
                    );
                }
            }
        }
        AgentCommand::Revoke { id, vault } => {
            let mut v = open(dir, vault.vault.as_deref())?;
            ops::revoke_agent(&mut v.db, AgentId(*id), &event(Action::AgentRevoke))
                .map_err(|e| match e {
                    crate::vault::VaultError::NotFound => anyhow::anyhow!("no agent {id}"),
                    other => other.into(),
                })
                .map(|derived| {
                    if !derived.is_empty() {
                        let ids: Vec<String> = derived.iter().map(ToString::to_string).collect();
                        println!("revoked the tokens derived from it: {}", ids.join(", "));
                    }
                })?;
            println!("revoked agent {id}");
        }
    }
    Ok(())
}

/// Parses `NAME:KIND[:l2]=VALUE`.
fn parse_field(spec: &str) -> anyhow::Result<Field> {
    let (head, value) = spec.split_once('=').context("a field is NAME:KIND[:l2]=VALUE")?;
    let mut parts = head.split(':');
    let name = parts.next().unwrap_or_default().to_owned();
    let kind: FieldKind = serde_json::from_value(json!(parts.next().unwrap_or_default()))
        .context("field kind must be one of text, secret, url, totp, note")?;
    let tier = match parts.next() {
        None | Some("l1") => Tier::L1,
        Some("l2") => Tier::L2,
        Some(other) => bail!("unknown tier {other:?}: use l1 or l2"),
    };
    if parts.next().is_some() {
        bail!("a field is NAME:KIND[:l2]=VALUE");
    }
    Ok(Field { name, kind, tier, value: value.to_owned() })
}

fn read_source(path: &Path) -> anyhow::Result<String> {
    let mut s = String::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut s).context("cannot read stdin")?;
    } else {
        s = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    }
    Ok(s)
}

fn read_bytes(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut b = Vec::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut b).context("cannot read stdin")?;
    } else {
        b = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    }
    Ok(b)
}

fn entry(dir: &DataDir, cmd: &EntryCommand) -> anyhow::Result<()> {
    match cmd {
        EntryCommand::Add { json_file, title, entry_type, url, scopes, field, vault, out } => {
            let input: EntryInput = match (json_file, title) {
                (Some(path), _) => serde_json::from_str(&read_source(path)?).context("the entry JSON is invalid")?,
                (None, Some(title)) => EntryInput {
                    uuid: None,
                    title: title.clone(),
                    entry_type: entry_type.clone(),
                    url: url.clone(),
                    scopes: scopes.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
                    fields: field.iter().map(|f| parse_field(f)).collect::<anyhow::Result<_>>()?,
                    inject: Vec::new(),
                    inject_only: false,
                },
                (None, None) => bail!("give --title (and --field ...) or --json-file"),
            };
            let mut v = open(dir, vault.vault.as_deref())?;
            let id = ops::add_entry(&mut v.db, &v.id, &v.key, input, &event(Action::EntryCreate))?;
            if out.json {
                print_json(&json!({"id": id}));
            } else {
                println!("added entry {id}");
            }
        }
        EntryCommand::Import { from: Some(source), export: Some(path), vault, .. } => {
            let bytes = read_bytes(path)?;
            let inputs = crate::import::parse(*source, &bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}; nothing was imported", path.display()))?;
            let mut v = open(dir, vault.vault.as_deref())?;
            let ids = ops::import_entries(&mut v.db, &v.id, &v.key, inputs, &event(Action::EntryCreate))?;
            println!("imported {} entries (owner-only, every field L1)", ids.len());
        }
        EntryCommand::Import { file: None, .. } => bail!("give --file FILE (JSON lines) or --from FORMAT FILE"),
        EntryCommand::Import { file: Some(file), vault, .. } => {
            let text = read_source(file)?;
            let mut inputs = Vec::new();
            for (n, line) in text.as_bytes().lines().enumerate() {
                let line = line.context("cannot read the import file")?;
                if line.trim().is_empty() {
                    continue;
                }
                inputs.push(
                    serde_json::from_str::<EntryInput>(&line)
                        .with_context(|| format!("line {}: invalid entry JSON", n + 1))?,
                );
            }
            let mut v = open(dir, vault.vault.as_deref())?;
            let ids = ops::import_entries(&mut v.db, &v.id, &v.key, inputs, &event(Action::EntryCreate))?;
            println!("imported {} entries", ids.len());
        }
        EntryCommand::List { vault, out } => {
            let v = open(dir, vault.vault.as_deref())?;
            let entries = ops::list_entries(&v.db, &v.id, &v.key)?;
            warn_forged(
                &v.id,
                entries.iter().filter(|(r, _)| !v.db.entry_authentic(r)).map(|(r, _)| format!("entry {}", r.id)),
            );
            if out.json {
                let list: Vec<_> = entries
                    .iter()
                    .map(|(r, d)| json!({"id": r.id, "uuid": r.uuid, "title": d.title, "type": d.entry_type, "url": d.url, "scopes": r.scopes, "version": r.version, "updated_at": r.updated_at, "authentic": v.db.entry_authentic(r)}))
                    .collect();
                print_json(&json!(list));
            } else {
                for (r, d) in entries {
                    let mark = if v.db.entry_authentic(&r) {
                        ""
                    } else {
                        "  FORGED: scopes fail their integrity check, shown to no agent"
                    };
                    println!(
                        "{:>6}  {:<32}  {:<10}  {}{mark}",
                        r.id,
                        terminal_safe(&d.title),
                        terminal_safe(&d.entry_type),
                        r.scopes
                    );
                }
            }
        }
        EntryCommand::Rm { id, vault } => {
            let mut v = open(dir, vault.vault.as_deref())?;
            ops::delete_entry(&mut v.db, &v.id, &v.key, *id, &event(Action::EntryDelete)).map_err(|e| match e {
                crate::vault::VaultError::NotFound => anyhow::anyhow!("no entry {id}"),
                other => other.into(),
            })?;
            println!("deleted entry {id}");
        }
    }
    Ok(())
}

/// Rows that fail their MAC are shown (the operator must see them) but flagged, and reported
/// like the server reports them.
fn warn_forged(vault: &crate::vault::VaultId, rows: impl Iterator<Item = String>) {
    let rows: Vec<String> = rows.collect();
    if !rows.is_empty() {
        crate::edition::alert(
            "vault_rows_forged",
            "vault rows fail their integrity check (changed without the master key) and grant nothing",
            &[("vault", vault.to_string()), ("count", rows.len().to_string()), ("rows", rows.join(", "))],
        );
    }
}

fn audit(dir: &DataDir, cmd: &AuditCommand) -> anyhow::Result<()> {
    let AuditCommand::List { node, limit, before, vault, out } = cmd;
    // Rows a killed node left in a file's audit spool are moved first (a running node moves its
    // own within milliseconds).
    let rows: Vec<AuditRow> = if *node {
        crate::audit::move_left_rows(&dir.node_db_path())?;
        NodeDb::open(&dir.node_db_path())?.audit(*before, *limit)?
    } else {
        // Reading the audit log needs no master key: it holds no secrets.
        let id = dir.pick_vault(vault.vault.as_deref())?;
        crate::audit::move_left_rows(&dir.vault_path(&id))?;
        crate::store::vault_db::VaultDb::open(&dir.vault_path(&id))?.audit(*before, *limit)?
    };
    if out.json {
        print_json(&json!(rows));
    } else {
        for r in rows {
            let a = &r.record;
            println!(
                "{:>8}  {}  {:<15} {:<6} {:<14} {:<6} {:<13} {:<15} {}",
                r.id,
                a.ts,
                a.actor,
                a.agent_id.map(|i| i.to_string()).unwrap_or_default(),
                a.action,
                a.entry_id.map(|i| i.to_string()).unwrap_or_default(),
                a.outcome,
                terminal_safe(&a.client),
                terminal_safe(&a.detail)
            );
        }
    }
    Ok(())
}

fn check(dir: &DataDir) -> anyhow::Result<()> {
    let mut bad = 0;
    let mut files = vec![dir.node_db_path()];
    files.extend(dir.vault_ids()?.iter().map(|id| dir.vault_path(id)));
    for path in files {
        let result = integrity_check(&path)?;
        println!("{}: {result}", path.display());
        if result != "ok" {
            bad += 1;
        }
    }
    if bad > 0 {
        bail!("{bad} file(s) failed the integrity check");
    }
    Ok(())
}
