//! Command-line parsing (clap) and the subcommands. Every flag is also a `CLAVITOR_*` variable.
//!
//! The operator subcommands (`agent`, `entry`, `audit`) work on the data dir directly: the
//! break-glass path for whoever holds the node's master key. They are audited as the local
//! operator, and a running server picks their changes up within a fraction of a second.

mod client;
mod mcp;
mod node;
mod operator;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::store::AuditSync;

pub use client::{ClientCommand, run_client};
pub use mcp::{McpArgs, run_mcp};
pub use node::{NodeArgs, TelemetryCommand, WgCommand};
pub use operator::run_operator;
pub use serve::serve;

#[derive(Debug, Parser)]
#[command(name = "clavitor", version, about = "A credential vault for AI agents", propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Directory holding node.db, vaults/ and (by default) master.key.
    #[arg(long, env = "CLAVITOR_DATA_DIR", default_value = "./clavitor-data", global = true)]
    pub data_dir: PathBuf,
    /// The 32-byte master key file (mode 0600). Default: <data-dir>/master.key.
    #[arg(long, env = "CLAVITOR_MASTER_KEY_FILE", global = true)]
    pub master_key_file: Option<PathBuf>,
    /// Log output format (logs go to stderr and never contain tokens or secret values).
    #[arg(long, env = "CLAVITOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// The edition's own flags (commercial: tenant id, license public key, audit retention).
    #[command(flatten)]
    pub edition: crate::edition::EditionArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the vault server (initialises an empty data dir first).
    Serve(ServeArgs),
    /// Create the master key and the vault where missing; print a one-time owner setup link.
    Init(InitArgs),
    /// Print the version and the edition.
    Version,
    /// Print the pending owner setup link saved by `init` or a first `serve` (for root: the file
    /// is mode 0600 in the data dir), or say why there is none.
    SetupLink,
    /// Manage agents locally (break-glass; needs the data dir).
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Manage entries locally (break-glass; needs the data dir and the master key).
    #[command(subcommand)]
    Entry(EntryCommand),
    /// Read the audit log locally.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Run SQLite's integrity check on node.db and every vault file.
    Check,
    /// Node telemetry (the payload sent to Kuma and HQ).
    #[command(subcommand)]
    Telemetry(TelemetryCommand),
    /// WireGuard keys and interface status.
    #[command(subcommand)]
    Wg(WgCommand),
    /// Serve MCP to an agent's model (stdio, or Streamable HTTP with --http) with the agent's token.
    Mcp(McpArgs),
    /// The credential-brokering proxy's CA.
    #[command(subcommand)]
    Proxy(ProxyCommand),
    /// The agent's side (get, totp, ls, search, run, token): talks to a vault over HTTP.
    #[command(flatten)]
    Client(ClientCommand),
    /// The edition's own subcommands (commercial: `license`, `mgmt`).
    #[command(flatten)]
    Edition(crate::edition::EditionCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on (plain HTTP).
    #[arg(long, env = "CLAVITOR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Allow plain HTTP on a non-loopback address (only behind a TLS terminator you trust).
    #[arg(long, env = "CLAVITOR_ALLOW_PLAIN_HTTP")]
    pub allow_plain_http: bool,
    /// WebAuthn relying party id: the origin's host or a parent domain of it.
    #[arg(long, env = "CLAVITOR_RP_ID", default_value = "localhost")]
    pub rp_id: String,
    #[command(flatten)]
    pub origin: OriginArg,
    /// How long an operation-bound WebAuthn challenge stays valid, in seconds (1 to 300).
    #[arg(long, env = "CLAVITOR_CHALLENGE_TTL_SECS", default_value_t = 60)]
    pub challenge_ttl_secs: u64,
    /// Life of a browser-extension session token, in seconds (60 to 86400; default 12 hours).
    #[arg(long, env = "CLAVITOR_EXTENSION_SESSION_TTL_SECS",
          default_value_t = crate::vault::sessions::DEFAULT_SESSION_TTL_SECS,
          value_parser = clap::value_parser!(u64).range(60..=86400))]
    pub extension_session_ttl_secs: u64,
    /// Audit durability: `normal` survives the process dying (even SIGKILL) without an fsync per
    /// batch; `full` also survives a power cut, at the cost of an fsync per batch.
    #[arg(long, env = "CLAVITOR_AUDIT_SYNC", value_enum, default_value_t = AuditSyncArg::Normal)]
    pub audit_sync: AuditSyncArg,
    /// Most vaults kept open at once (a hosted node serves thousands): the least recently used
    /// beyond it are closed (their tokens stay indexed) and reopened by their next request.
    #[arg(long, env = "CLAVITOR_MAX_OPEN_VAULTS", default_value_t = crate::vault::live::DEFAULT_MAX_OPEN_VAULTS)]
    pub max_open_vaults: usize,
    /// Seconds after which a vault nobody used is closed (0: only --max-open-vaults closes
    /// vaults). Its next request reopens it.
    #[arg(long, env = "CLAVITOR_VAULT_IDLE_SECS", default_value_t = crate::vault::live::DEFAULT_VAULT_IDLE.as_secs())]
    pub vault_idle_secs: u64,
    /// Send node telemetry to this HQ base URL (https://; opt-in in the community edition).
    #[arg(long, env = "CLAVITOR_TELEMETRY_HOST")]
    pub telemetry_host: Option<String>,
    /// File holding the HQ bearer token.
    #[arg(long, env = "CLAVITOR_TELEMETRY_TOKEN_FILE")]
    pub telemetry_token_file: Option<PathBuf>,
    /// Seconds between telemetry reports (10 to 86400, default 300).
    #[arg(long, env = "CLAVITOR_TELEMETRY_FREQ")]
    pub telemetry_freq: Option<String>,
    /// This node's POP region, for HQ dashboards (a-z, 0-9, '-').
    #[arg(long, env = "CLAVITOR_POP_REGION")]
    pub pop_region: Option<String>,
    /// The node: TLS, Kuma push, WireGuard (see src/cli/node.rs).
    #[command(flatten)]
    pub node: Box<NodeArgs>,
    /// Connection caps and request limits (see src/cli/serve.rs).
    #[command(flatten)]
    pub limits: serve::ListenerArgs,
    /// The credential-brokering proxy (see src/proxy/).
    #[command(flatten)]
    pub proxy: Box<serve::ProxyArgs>,
}

impl ServeArgs {
    pub fn telemetry_inputs(&self) -> crate::edition::TelemetryInputs {
        crate::edition::TelemetryInputs {
            host: self.telemetry_host.clone(),
            token: None,
            token_file: self.telemetry_token_file.clone(),
            freq: self.telemetry_freq.clone(),
            pop_region: self.pop_region.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// Print the proxy's CA certificate (PEM), creating the CA if the data dir has none yet.
    /// Agents trust it to let the proxy terminate their TLS.
    Ca,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AuditSyncArg {
    Normal,
    Full,
}

impl From<AuditSyncArg> for AuditSync {
    fn from(a: AuditSyncArg) -> Self {
        match a {
            AuditSyncArg::Normal => AuditSync::Normal,
            AuditSyncArg::Full => AuditSync::Full,
        }
    }
}

#[derive(Debug, Args)]
pub struct OriginArg {
    /// The origin the owner's pages are opened at (WebAuthn checks it), e.g. https://vault.example.com.
    #[arg(long, env = "CLAVITOR_ORIGIN", default_value = "http://localhost:8080")]
    pub origin: String,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub origin: OriginArg,
}

#[derive(Debug, Args)]
pub struct VaultArg {
    /// Which vault (needed only when the data dir holds several).
    #[arg(long, env = "CLAVITOR_VAULT")]
    pub vault: Option<String>,
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print JSON instead of text.
    #[arg(long, env = "CLAVITOR_JSON")]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create an agent and print its token (shown once).
    Add {
        /// A name for people to recognise the agent by.
        #[arg(long, env = "CLAVITOR_AGENT_NAME")]
        name: String,
        /// Extra scopes, comma-separated 4-hex ids (the agent's own scope is always included).
        /// Grants access, so it has no environment variable: only the command line sets it.
        #[arg(long, default_value = "")]
        scopes: String,
        /// Read every entry regardless of scopes. No environment variable (grants access).
        #[arg(long)]
        all_access: bool,
        /// May perform admin operations (with a WebAuthn assertion over the API). No environment
        /// variable (grants privilege).
        #[arg(long)]
        admin: bool,
        /// The token stops working this long from now (e.g. `1h`, `30m`, `7d`); default: never.
        /// No environment variable: it is part of what the agent is granted.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
        /// Let `clavitor mcp`'s `get_field` hand this agent's L1 values to the model. No
        /// environment variable (grants privilege).
        #[arg(long)]
        reveal_to_model: bool,
        /// The proxy (`serve --proxy-listen`) refuses this agent's requests to hosts no inject
        /// rule names, instead of passing them through. No environment variable: it is part of
        /// what the agent is granted.
        #[arg(long)]
        proxy_only_listed: bool,
        #[command(flatten)]
        vault: VaultArg,
        #[command(flatten)]
        out: JsonArg,
    },
    /// List agents (never their tokens).
    List {
        #[command(flatten)]
        vault: VaultArg,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Revoke an agent: its token stops working at once (refused for the last admin).
    Revoke {
        /// The agent's id.
        id: i64,
        #[command(flatten)]
        vault: VaultArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum EntryCommand {
    /// Add an entry from JSON (stdin with `--json-file -`) or from flags.
    ///
    /// Field values given with --field are visible in the process list; prefer JSON on stdin
    /// for secrets.
    Add {
        /// Read the entry as JSON from this file, or `-` for stdin.
        #[arg(long, env = "CLAVITOR_ENTRY_JSON_FILE", conflicts_with_all = ["title", "field"])]
        json_file: Option<PathBuf>,
        #[arg(long, env = "CLAVITOR_ENTRY_TITLE")]
        title: Option<String>,
        /// Entry type, e.g. login, api_key, note.
        #[arg(long = "type", env = "CLAVITOR_ENTRY_TYPE", default_value = "login")]
        entry_type: String,
        #[arg(long, env = "CLAVITOR_ENTRY_URL", default_value = "")]
        url: String,
        /// Comma-separated scopes; empty means owner-only. No environment variable: who may read
        /// an entry is set on the command line only.
        #[arg(long, default_value = "")]
        scopes: String,
        /// NAME:KIND[:l2]=VALUE, KIND one of text, secret, url, totp, note. Repeatable.
        #[arg(long, env = "CLAVITOR_ENTRY_FIELD", value_delimiter = '\n')]
        field: Vec<String>,
        #[command(flatten)]
        vault: VaultArg,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Add many entries in one transaction (all or nothing): from a file of JSON objects (one
    /// per line, `--file`), or from another password manager's export (`--from FORMAT FILE`).
    ///
    /// Exports are imported with every field L1 and every entry owner-only (share them
    /// afterwards). `--from 1password` reads a 1PUX archive (a zip file) or a CSV export, and
    /// `--from keepass` an XML export (first character `<`) or a CSV export, told apart by
    /// content; `--from csv` reads the Chrome/Firefox password CSV.
    Import {
        /// The file of JSON lines, or `-` for stdin.
        #[arg(long, env = "CLAVITOR_ENTRY_IMPORT_FILE", conflicts_with_all = ["from", "export"], required_unless_present = "from")]
        file: Option<PathBuf>,
        /// The manager whose export FILE is.
        #[arg(long, env = "CLAVITOR_ENTRY_IMPORT_FROM", requires = "export", value_enum)]
        from: Option<crate::import::Source>,
        /// The export file (with `--from`), or `-` for stdin.
        #[arg(value_name = "FILE")]
        export: Option<PathBuf>,
        #[command(flatten)]
        vault: VaultArg,
    },
    /// List entries (metadata only, never values).
    List {
        #[command(flatten)]
        vault: VaultArg,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Delete an entry (it becomes a tombstone).
    Rm {
        /// The entry's id.
        id: i64,
        #[command(flatten)]
        vault: VaultArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print audit rows, newest first.
    List {
        /// Read node-level rows (failed authentication) instead of the vault's.
        #[arg(long, env = "CLAVITOR_AUDIT_NODE")]
        node: bool,
        #[arg(long, env = "CLAVITOR_AUDIT_LIMIT", default_value_t = 100)]
        limit: u32,
        /// Only rows with an id below this one.
        #[arg(long, env = "CLAVITOR_AUDIT_BEFORE")]
        before: Option<i64>,
        #[command(flatten)]
        vault: VaultArg,
        #[command(flatten)]
        out: JsonArg,
    },
}

/// `text` fit for a terminal line: control characters (escape sequences, tabs, newlines) and
/// the Unicode bidirectional overrides are written as `\u{..}`. Titles, names, URLs and audit
/// details come from whoever wrote the entry or made the request; printed raw, an `ESC [` could
/// rewrite the operator's screen, and a newline or tab forge a row of the listing.
pub(crate) fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
    }
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn terminal_safe_escapes_controls_and_bidi_overrides_only() {
        assert_eq!(terminal_safe("GitHub – prod ✓"), "GitHub – prod ✓");
        assert_eq!(terminal_safe("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(terminal_safe("x\ty\nz"), "x\\u{9}y\\u{a}z");
        assert_eq!(terminal_safe("abc\u{202e}fdp.exe"), "abc\\u{202e}fdp.exe");
    }
}
