//! The agent-side subcommands: `get`, `totp`, `ls`, `search`, `run`, `token derive`. They talk
//! to a vault over HTTP with the agent's token (`crate::client`), never to a data dir.
//!
//! Must never: print a token except the one `token derive` creates (once, on stdout), or write a
//! secret value anywhere but stdout (`get`) or the child's environment (`run`).

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;
use zeroize::Zeroizing;

use super::{JsonArg, terminal_safe};
use crate::client::{ClientConfig, DeriveRequest, EntryRef, EntrySummary, SecretRef, VaultClient, run};

/// Where the vault is and how to authenticate. There is deliberately no `--token` flag: a token
/// on the command line is visible in the process list.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The vault's base URL, e.g. https://vault.example.com (plain http:// only to a loopback IP
    /// such as 127.0.0.1).
    #[arg(long, env = "CLAVITOR_URL")]
    pub url: Option<String>,
    /// File holding the agent's token (must not be readable by group or others). Without it:
    /// CLAVITOR_TOKEN, else ~/.config/clavitor/token.
    #[arg(long, env = "CLAVITOR_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA that issued the vault's certificate (a private CA). When given, it is
    /// the only trusted root; TLS is always verified.
    #[arg(long, env = "CLAVITOR_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

impl ClientArgs {
    /// The configuration these flags (and CLAVITOR_TOKEN, the default token file) give.
    pub fn config(&self) -> Result<ClientConfig, crate::client::ClientError> {
        ClientConfig::load(self.url.clone(), self.token_file.clone(), self.ca_file.clone())
    }

    /// A client for the vault these flags name (`clavitor mcp` uses it too).
    pub fn client(&self) -> Result<VaultClient, crate::client::ClientError> {
        VaultClient::new(self.config()?)
    }
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Print one field's value: clavitor get clavitor://<entry id or exact title>/<field>.
    ///
    /// An audited read. The value goes to stdout followed by a newline; errors never contain it.
    Get {
        /// The reference, e.g. clavitor://GitHub/password or clavitor://42/api key.
        reference: String,
        #[command(flatten)]
        out: JsonArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print an entry's current TOTP code: clavitor totp clavitor://<entry id or exact title>.
    ///
    /// A trailing /<field> is accepted and ignored (the vault uses the entry's TOTP field), so a
    /// title containing "/" is written with one, e.g. clavitor://a/b/otp.
    Totp {
        reference: String,
        #[command(flatten)]
        out: JsonArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the entries this token can read (metadata only: id, type, title, URL, scopes).
    Ls {
        #[command(flatten)]
        out: JsonArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Search title, URL and type of the entries this token can read (metadata only).
    Search {
        query: String,
        #[command(flatten)]
        out: JsonArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a command with clavitor:// references resolved in its environment, masked in its output.
    ///
    /// clavitor run [--env-file F] [--pass-token] -- CMD ARGS…
    ///
    /// Every environment variable (and env file line) whose value is a clavitor:// reference is
    /// replaced by the value (one audited read each). The command's stdout and stderr pass
    /// through a filter that replaces each value with <concealed by clavitor>. CLAVITOR_TOKEN is
    /// removed from the command's environment. Exits with the command's exit code (128 + signal
    /// if it was killed); SIGINT and SIGTERM are forwarded to it.
    Run {
        /// Also read variables from this file: KEY=VALUE lines, # comments, optional quotes,
        /// optional `export`. Its variables override the process environment's.
        #[arg(long, env = "CLAVITOR_ENV_FILE")]
        env_file: Option<PathBuf>,
        /// Give the command clavitor's token as CLAVITOR_TOKEN (by default it is removed). No
        /// environment variable: it hands the command the agent's access.
        #[arg(long)]
        pass_token: bool,
        #[command(flatten)]
        client: ClientArgs,
        /// The command and its arguments (after --).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Tokens for sub-agents.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Derive a narrower, shorter-lived token from this one and print it once (no passkey needed:
    /// it can only narrow). It is revoked with its parent.
    Derive {
        /// A name for people to recognise the new token by.
        #[arg(long, env = "CLAVITOR_DERIVE_NAME")]
        name: String,
        /// How long it lives, e.g. 15m, 1h (at most 24h, and never past this token's expiry).
        #[arg(long, env = "CLAVITOR_DERIVE_TTL")]
        ttl: String,
        /// Comma-separated scopes, a subset of this token's (default: all of them). No environment
        /// variable: it says what the new token may read.
        #[arg(long)]
        scopes: Option<String>,
        /// Keep all-access (only if this token has it). No environment variable.
        #[arg(long)]
        all_access: bool,
        /// Let the new token's MCP get_field return values to the model (only if this token may).
        /// No environment variable.
        #[arg(long)]
        reveal_to_model: bool,
        #[command(flatten)]
        out: JsonArg,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Runs an agent-side subcommand; returns the process's exit code.
pub fn run_client(cmd: &ClientCommand) -> anyhow::Result<u8> {
    match cmd {
        ClientCommand::Get { reference, out, client } => {
            let r = SecretRef::parse(reference)?;
            let field = client.client()?.resolve(&r)?;
            let mut text = if out.json {
                #[derive(Serialize)]
                struct GetJson<'a> {
                    reference: &'a str,
                    entry_id: i64,
                    title: &'a str,
                    field: &'a str,
                    kind: &'a str,
                    value: &'a str,
                    audit_id: Option<i64>,
                }
                let j = GetJson {
                    reference,
                    entry_id: field.entry_id,
                    title: &field.title,
                    field: &field.field,
                    kind: &field.kind,
                    value: &field.value,
                    audit_id: field.audit_id,
                };
                let mut buf = Zeroizing::new(Vec::with_capacity(
                    256 + 6 * (field.value.len() + field.title.len() + reference.len()),
                ));
                serde_json::to_writer(&mut *buf, &j)?;
                buf
            } else {
                let mut buf = Zeroizing::new(Vec::with_capacity(field.value.len() + 1));
                buf.extend_from_slice(field.value.as_bytes());
                buf
            };
            text.push(b'\n');
            write_stdout(&text)?;
        }
        ClientCommand::Totp { reference, out, client } => {
            let e = EntryRef::parse(reference)?;
            let code = client.client()?.totp(&e)?;
            if out.json {
                println!("{}", serde_json::to_string(&code)?);
            } else {
                println!("{}", code.code);
            }
        }
        ClientCommand::Ls { out, client } => print_summaries(&client.client()?.list()?, out.json)?,
        ClientCommand::Search { query, out, client } => print_summaries(&client.client()?.search(query)?, out.json)?,
        ClientCommand::Run { env_file, pass_token, client, command } => {
            let client = client.client()?;
            let mut vars = run::references_in(std::env::vars_os());
            if let Some(path) = env_file {
                vars.extend(run::read_env_file(path)?);
            }
            let resolved = run::resolve(&client, vars)?;
            let (program, args) = command.split_first().context("no command given after --")?;
            let child = resolved.command(&client, program, args, *pass_token);
            let code = run::run_masked(child, resolved.secrets())?;
            return Ok(u8::try_from(code).unwrap_or(1));
        }
        ClientCommand::Token(TokenCommand::Derive { name, ttl, scopes, all_access, reveal_to_model, out, client }) => {
            let ttl =
                humantime::parse_duration(ttl).with_context(|| format!("--ttl {ttl:?}: expected e.g. 15m or 1h"))?;
            let scopes = scopes
                .as_ref()
                .map(|s| s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect());
            let req = DeriveRequest {
                name: name.clone(),
                ttl_secs: ttl.as_secs(),
                scopes,
                all_access: *all_access,
                reveal_to_model: *reveal_to_model,
            };
            let derived = client.client()?.derive(&req)?;
            let mut text = if out.json {
                let mut buf = Zeroizing::new(Vec::with_capacity(1024));
                serde_json::to_writer(&mut *buf, &derived)?;
                buf
            } else {
                let mut buf = Zeroizing::new(Vec::with_capacity(derived.token.len() + 1));
                buf.extend_from_slice(derived.token.as_bytes());
                buf
            };
            text.push(b'\n');
            write_stdout(&text)?;
        }
    }
    Ok(0)
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

fn print_summaries(entries: &[EntrySummary], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(entries)?);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for e in entries {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            e.id,
            terminal_safe(&e.entry_type),
            terminal_safe(&e.title),
            terminal_safe(&e.url),
            terminal_safe(&e.scopes.join(","))
        )?;
    }
    out.flush()?;
    Ok(())
}
