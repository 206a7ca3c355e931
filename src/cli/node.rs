//! The node's flags on `clavitor serve` (TLS, Kuma push, WireGuard) and the `telemetry` and
//! `wg` subcommands. The work itself is in `crate::node`.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::node::payload::{IntegritySource, PayloadSource};
use crate::node::tls::{CertSource, TlsInputs};
use crate::node::{NodeSettings, kuma, wg};
use crate::vault::DataDir;

/// `clavitor serve` flags of the node room (flattened into `ServeArgs`).
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Obtain a certificate for this domain with ACME (TLS-ALPN-01 on the TLS listener).
    /// Repeatable. Turns TLS on: serves --tls-listen, redirects --http-redirect-listen.
    #[arg(long = "acme-domain", env = "CLAVITOR_ACME_DOMAIN", value_delimiter = ',')]
    pub acme_domains: Vec<String>,
    /// Contact e-mail for the ACME account (repeatable).
    #[arg(long, env = "CLAVITOR_ACME_CONTACT", value_delimiter = ',')]
    pub acme_contact: Vec<String>,
    /// ACME directory: `production` (Let's Encrypt, the default), `staging`, or an https:// URL.
    #[arg(long, env = "CLAVITOR_ACME_DIRECTORY")]
    pub acme_directory: Option<String>,
    /// Extra root certificate(s) (PEM) to trust when talking to the ACME server.
    #[arg(long, env = "CLAVITOR_ACME_CA_FILE")]
    pub acme_ca_file: Option<PathBuf>,
    /// Static certificate chain (PEM), instead of ACME. Needs --tls-key.
    #[arg(long, env = "CLAVITOR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "CLAVITOR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Where TLS is served when it is on (default 0.0.0.0:443).
    #[arg(long, env = "CLAVITOR_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// Plain HTTP listener that only redirects to https (default 0.0.0.0:80 with ACME; `off`).
    #[arg(long, env = "CLAVITOR_HTTP_REDIRECT_LISTEN")]
    pub http_redirect_listen: Option<String>,
    /// Uptime Kuma push URL (http(s)://host/api/push/<token>); secret: prefer --kuma-push-url-file.
    #[arg(long, env = "CLAVITOR_KUMA_PUSH_URL", hide_env_values = true)]
    pub kuma_push_url: Option<String>,
    /// File holding the Kuma push URL.
    #[arg(long, env = "CLAVITOR_KUMA_PUSH_URL_FILE")]
    pub kuma_push_url_file: Option<PathBuf>,
    /// Seconds between Kuma pushes (1 to 3600).
    #[arg(long, env = "CLAVITOR_KUMA_INTERVAL_SECS", default_value_t = kuma::DEFAULT_INTERVAL_SECS)]
    pub kuma_interval_secs: u64,
    /// Allow a plain http:// Kuma push URL to a non-loopback address. Only for a path that is
    /// encrypted already, such as the WireGuard mesh to the Kuma hub; otherwise use https://.
    #[arg(long, env = "CLAVITOR_KUMA_ALLOW_PLAIN_HTTP")]
    pub kuma_allow_plain_http: bool,
    /// Disk usage (percent, 50 to 100) above which the Kuma push reports down.
    #[arg(long, env = "CLAVITOR_KUMA_DISK_DOWN_PCT", default_value_t = kuma::DISK_MAX_PCT)]
    pub kuma_disk_down_pct: u8,
    #[command(flatten)]
    pub wg: WgArgs,
}

/// Which WireGuard interface the telemetry reports the handshake age of.
#[derive(Debug, Args)]
pub struct WgArgs {
    /// WireGuard interface to report the hub handshake age of (e.g. wg0).
    #[arg(long, env = "CLAVITOR_WG_INTERFACE")]
    pub wg_interface: Option<String>,
    /// Read it through the userspace backend (wireguard-go) instead of the kernel's.
    #[arg(long, env = "CLAVITOR_WG_USERSPACE")]
    pub wg_userspace: bool,
}

impl WgArgs {
    fn target(&self) -> Option<wg::WgTarget> {
        self.wg_interface.as_ref().map(|i| wg::WgTarget { interface: i.clone(), userspace: self.wg_userspace })
    }
}

impl NodeArgs {
    /// Validates every node flag; refuses inconsistent combinations.
    pub fn settings(&self) -> anyhow::Result<NodeSettings> {
        let tls = TlsInputs {
            acme_domains: self.acme_domains.clone(),
            acme_contact: self.acme_contact.clone(),
            acme_directory: self.acme_directory.clone(),
            acme_ca_file: self.acme_ca_file.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_listen: self.tls_listen,
            http_redirect_listen: self.http_redirect_listen.clone(),
        }
        .resolve()
        .context("invalid TLS settings")?;
        let kuma = kuma::KumaSettings::resolve(
            self.kuma_push_url.clone(),
            self.kuma_push_url_file.clone(),
            self.kuma_interval_secs,
            self.kuma_disk_down_pct,
            if self.kuma_allow_plain_http {
                crate::outbound::PlainHttp::Allowed
            } else {
                crate::outbound::PlainHttp::LoopbackOnly
            },
        )
        .context("invalid Kuma push settings")?;
        if self.wg.wg_userspace && self.wg.wg_interface.is_none() {
            anyhow::bail!("--wg-userspace needs --wg-interface");
        }
        Ok(NodeSettings { tls, kuma, wg: self.wg.target() })
    }
}

#[derive(Debug, Subcommand)]
pub enum TelemetryCommand {
    /// Print one telemetry payload as JSON, gathered now by this process (the request
    /// counters are the server's and read 0 here; the integrity check runs now).
    Show {
        /// The served certificate (static TLS); by default the ACME cache in the data dir.
        #[arg(long, env = "CLAVITOR_TLS_CERT")]
        tls_cert: Option<PathBuf>,
        #[command(flatten)]
        wg: WgArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum WgCommand {
    /// Make a private key into a new file (mode 0600) and print its public key.
    Keygen {
        /// The new key file (never overwritten).
        #[arg(long, env = "CLAVITOR_WG_KEY_OUT")]
        out: PathBuf,
    },
    /// Print the public key of a private key read from stdin or --key-file.
    Pubkey {
        #[arg(long, env = "CLAVITOR_WG_KEY_FILE")]
        key_file: Option<PathBuf>,
    },
    /// Show an interface's peers: endpoint, allowed IPs, latest handshake, transfer.
    Status {
        #[arg(long, env = "CLAVITOR_WG_INTERFACE", default_value = "wg0")]
        interface: String,
        /// Use the userspace backend (wireguard-go) instead of the kernel's.
        #[arg(long, env = "CLAVITOR_WG_USERSPACE")]
        userspace: bool,
        /// Print JSON instead of text.
        #[arg(long, env = "CLAVITOR_JSON")]
        json: bool,
    },
}

pub fn telemetry(dir: &DataDir, cmd: &TelemetryCommand) -> anyhow::Result<()> {
    match cmd {
        TelemetryCommand::Show { tls_cert, wg } => {
            if dir.is_uninitialised() {
                anyhow::bail!("{} holds no node.db; run `clavitor init` or pass --data-dir", dir.root.display());
            }
            let cert = CertSource::detect(dir, tls_cert.clone());
            let mut source = PayloadSource::new(dir.clone(), cert, wg.target(), IntegritySource::CheckNow);
            let payload = source.collect();
            println!("{}", serde_json::to_string_pretty(&payload)?);
        }
    }
    Ok(())
}

pub fn wg(cmd: &WgCommand) -> anyhow::Result<()> {
    match cmd {
        WgCommand::Keygen { out } => println!("{}", wg::keygen(out)?),
        WgCommand::Pubkey { key_file } => {
            let mut text = zeroize::Zeroizing::new(String::new());
            match key_file {
                Some(f) => {
                    let mut file = std::fs::File::open(f).with_context(|| format!("cannot read {}", f.display()))?;
                    file.read_to_string(&mut text).with_context(|| format!("cannot read {}", f.display()))?;
                }
                None => {
                    std::io::stdin().read_to_string(&mut text).context("cannot read the key from stdin")?;
                }
            }
            println!("{}", wg::public_of(&text)?);
        }
        WgCommand::Status { interface, userspace, json } => {
            let status = wg::WgTarget { interface: interface.clone(), userspace: *userspace }.status()?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", wg::render_text(&status));
            }
        }
    }
    Ok(())
}
