//! The commercial subcommands: `clavitor license install|show` and `clavitor mgmt token
//! add|list|revoke`, run locally by the node operator on the data dir.
//!
//! A management token is printed once and stored only as its SHA-256. `anyhow` is allowed here
//! (CLI). Never prints a license's signature key or a stored token.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};

use super::license::{self, LicenseArgs};
use super::license_api::{MGMT_PREFIX, hash_mgmt_token};
use crate::store::node_db::NodeDb;

#[derive(Debug, Subcommand)]
pub enum CommercialCommand {
    /// The node's license (commercial).
    #[command(subcommand)]
    License(LicenseCommand),
    /// Node management tokens (`cvm_`) for the hosted operator's machines.
    #[command(subcommand)]
    Mgmt(MgmtCommand),
    /// Hosted vaults on this node (commercial): add, list, retire.
    #[command(subcommand)]
    Vault(super::hosted::VaultCommand),
    /// Replication to a backup POP (commercial).
    #[command(subcommand)]
    Replication(super::replication::cli::ReplicationCommand),
}

#[derive(Debug, Subcommand)]
pub enum LicenseCommand {
    /// Verify and store a license token from FILE (`-` for stdin).
    Install { file: PathBuf },
    /// Print the state, expiry and per-limit usage.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum MgmtCommand {
    #[command(subcommand)]
    Token(MgmtTokenCommand),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MgmtScope {
    License,
    AuditFeed,
    Vaults,
}

impl MgmtScope {
    fn as_str(self) -> &'static str {
        match self {
            MgmtScope::License => "license",
            MgmtScope::AuditFeed => "audit-feed",
            MgmtScope::Vaults => "vaults",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum MgmtTokenCommand {
    /// Create a management token and print it (shown once). No environment variables: it
    /// grants access.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        scope: MgmtScope,
    },
    /// List management tokens (never the tokens themselves).
    List,
    /// Revoke a management token by id.
    Revoke { id: i64 },
}

pub fn run(cmd: &CommercialCommand, args: &LicenseArgs, node_db: &Path) -> anyhow::Result<()> {
    if !node_db.exists() {
        bail!("{} does not exist; run `clavitor init` first", node_db.display());
    }
    match cmd {
        CommercialCommand::Vault(v) => super::hosted::run_cli(v, args, node_db)?,
        // Dispatched by the edition, which loads the replication file first.
        CommercialCommand::Replication(_) => bail!("not a license command"),
        CommercialCommand::License(LicenseCommand::Install { file }) => {
            license::open(args, node_db, false)?;
            let token = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading stdin")?
            } else {
                std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
            };
            let state =
                license::install(&token, "local-operator").map_err(|e| anyhow::anyhow!("license refused: {e}"))?;
            println!("license installed: {}", state.as_str());
        }
        CommercialCommand::License(LicenseCommand::Show) => {
            license::open(args, node_db, false)?;
            let report = license::usage_report()?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        CommercialCommand::Mgmt(MgmtCommand::Token(t)) => {
            let db = NodeDb::open(node_db)?;
            match t {
                MgmtTokenCommand::Add { name, scope } => {
                    if name.trim().is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                        bail!("--name must be 1 to 128 printable characters");
                    }
                    let token =
                        zeroize::Zeroizing::new(format!("{MGMT_PREFIX}{}", hex::encode(rand::random::<[u8; 32]>())));
                    let id =
                        db.add_mgmt_token(name, scope.as_str(), &hash_mgmt_token(&token), crate::store::now_secs())?;
                    eprintln!("management token {id} ({}) created; it is shown only now:", scope.as_str());
                    println!("{}", token.as_str());
                }
                MgmtTokenCommand::List => {
                    println!("{}", serde_json::to_string_pretty(&db.mgmt_tokens()?)?);
                }
                MgmtTokenCommand::Revoke { id } => {
                    db.revoke_mgmt_token(*id, crate::store::now_secs())
                        .map_err(|_| anyhow::anyhow!("no unrevoked management token {id}"))?;
                    println!("management token {id} revoked");
                }
            }
        }
    }
    Ok(())
}
