//! `clavitor serve` and first-run initialisation.

use std::io::Write;

use anyhow::Context;

use super::{GlobalArgs, ServeArgs};
use crate::api::serve::{DEFAULT_BODY_MIN_RATE, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP, Gate};
use crate::api::{AppState, router};
use crate::config::{Config, WebauthnConfig};
use crate::proxy;
use crate::vault::data_dir::{DataDir, InitReport};
use crate::vault::{Node, data_dir};

/// Where the pending setup link is saved (mode 0600), for `clavitor setup-link`.
pub fn setup_link_path(dir: &DataDir) -> std::path::PathBuf {
    dir.root.join("setup-link")
}

/// Whether stdout may carry the setup link: a terminal, or anything that is not systemd's
/// journal. Under systemd (`INVOCATION_ID`/`JOURNAL_STREAM` set) stdout ends up in journald,
/// which more people can read than the vault's owner.
fn stdout_is_private() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdout())
        || (std::env::var_os("INVOCATION_ID").is_none() && std::env::var_os("JOURNAL_STREAM").is_none())
}

/// Saves the link for `clavitor setup-link`: 0600 whatever the umask, replaced atomically.
fn save_setup_link(dir: &DataDir, link: &str) -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = setup_link_path(dir);
    let tmp = dir.root.join(".setup-link.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(link.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Prints what `init` did. The setup link never goes to the logs; it is saved to a 0600 file in
/// the data dir and shown on stdout unless stdout is systemd's journal (see
/// [`stdout_is_private`]). Its code is in the URL fragment, which browsers do not send.
pub fn report_init(dir: &DataDir, report: &InitReport, origin: &str) {
    let mut out = std::io::stdout().lock();
    if report.created_master_key {
        let _ = writeln!(
            out,
            "created master key {} (mode 0600; back it up: without it the vault cannot be read)",
            dir.master_key_file.display()
        );
    }
    if report.created_vault {
        let _ = writeln!(out, "created vault {} in {}", report.vault_id, dir.root.display());
    }
    let minutes = crate::vault::gate::SETUP_CODE_TTL.as_secs() / 60;
    if let Some(code) = &report.setup_code {
        if report.owner_exists {
            let _ = writeln!(out, "{} is already initialised and has an owner", dir.root.display());
            let _ = writeln!(out, "the vault has no passkey yet: open this link within {minutes} minutes (once) to");
            let _ = writeln!(out, "enroll one, then sign in to the pages with your existing admin token:");
        } else {
            let _ =
                writeln!(out, "the vault has no owner yet: open this link within {minutes} minutes (once) to enroll");
            let _ = writeln!(out, "your passkey and receive the owner token:");
        }
        let link = zeroize::Zeroizing::new(format!("{}/setup#code={}", origin.trim_end_matches('/'), code.reveal()));
        let saved = save_setup_link(dir, &link);
        if stdout_is_private() {
            let _ = writeln!(out, "setup link: {}", link.as_str());
        } else {
            match &saved {
                Ok(path) => {
                    let _ = writeln!(
                        out,
                        "the setup link is saved in {} (mode 0600); print it as root with `clavitor setup-link --data-dir {}`",
                        path.display(),
                        dir.root.display()
                    );
                }
                Err(_) => {
                    let _ = writeln!(out, "the setup link could not be saved; run `clavitor init` from a terminal");
                }
            }
        }
        if let Err(e) = &saved {
            tracing::warn!(error = %e, "cannot save the setup link for `clavitor setup-link`");
        }
    } else if !report.created_vault {
        let _ = writeln!(out, "{} is already initialised; nothing to do", dir.root.display());
    }
    let _ = out.flush();
}

/// What every listener (plain, TLS, redirect) enforces, together: see `api::serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ListenerArgs {
    /// Open connections at most, all listeners together; past it, new ones are closed at once.
    #[arg(long, env = "CLAVITOR_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Open connections at most from one IPv4 address or IPv6 /64.
    #[arg(long, env = "CLAVITOR_MAX_CONNECTIONS_PER_IP", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: usize,
    /// Seconds a request body may take to arrive in full; later: 408 and the connection closes.
    #[arg(long, env = "CLAVITOR_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub body_timeout_secs: u64,
    /// Bytes per second a request body must average after its first 5 s (0: no floor); slower: 408.
    #[arg(long, env = "CLAVITOR_BODY_MIN_RATE", default_value_t = DEFAULT_BODY_MIN_RATE)]
    pub body_min_rate: u64,
}

/// The credential-brokering proxy (`src/proxy/`): off unless `--proxy-listen` is given.
#[derive(clap::Args, Debug, Clone)]
pub struct ProxyArgs {
    /// Run the HTTPS proxy that injects credentials (CONNECT) on this address. Loopback only
    /// unless --allow-plain-http: agents send their token to it in the clear.
    #[arg(long, env = "CLAVITOR_PROXY_LISTEN")]
    pub proxy_listen: Option<std::net::SocketAddr>,
    /// Open proxy connections (tunnels) at most; past it, new ones are closed at once.
    #[arg(long, env = "CLAVITOR_PROXY_MAX_TUNNELS", default_value_t = proxy::DEFAULT_MAX_TUNNELS)]
    pub proxy_max_tunnels: usize,
    /// Open proxy connections at most from one IPv4 address or IPv6 /64.
    #[arg(long, env = "CLAVITOR_PROXY_MAX_TUNNELS_PER_IP", default_value_t = proxy::DEFAULT_MAX_TUNNELS_PER_IP)]
    pub proxy_max_tunnels_per_ip: usize,
    /// Seconds a tunnel may sit with no request in flight and no bytes moving before it is closed.
    #[arg(long, env = "CLAVITOR_PROXY_IDLE_SECS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = proxy::DEFAULT_IDLE_SECS)]
    pub proxy_idle_secs: u64,
    /// Seconds a tunnel may live at most, whatever it does.
    #[arg(long, env = "CLAVITOR_PROXY_LIFETIME_SECS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = proxy::DEFAULT_LIFETIME_SECS)]
    pub proxy_lifetime_secs: u64,
    /// Seconds an upstream connection is kept unused between requests (one agent's tunnels to
    /// one host share kept connections; the next request after that opens a new one).
    #[arg(long, env = "CLAVITOR_PROXY_UPSTREAM_IDLE_SECS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = proxy::DEFAULT_UPSTREAM_IDLE_SECS)]
    pub proxy_upstream_idle_secs: u64,
    /// Largest request body forwarded (bytes); a larger one is refused 413 or cut.
    #[arg(long, env = "CLAVITOR_PROXY_MAX_REQUEST_BYTES", default_value_t = proxy::DEFAULT_MAX_REQUEST_BYTES)]
    pub proxy_max_request_bytes: u64,
    /// Largest upstream response passed back (bytes); a larger one is refused 502 or cut.
    #[arg(long, env = "CLAVITOR_PROXY_MAX_RESPONSE_BYTES", value_parser = clap::value_parser!(u64).range(1..), default_value_t = proxy::DEFAULT_MAX_RESPONSE_BYTES)]
    pub proxy_max_response_bytes: u64,
    /// Proxied requests (CONNECTs included) per second per agent, sustained.
    #[arg(long, env = "CLAVITOR_PROXY_RATE", value_parser = clap::value_parser!(u32).range(1..), default_value_t = proxy::DEFAULT_RATE_PER_AGENT)]
    pub proxy_rate: u32,
    /// Proxied requests per agent allowed in a burst above the sustained rate.
    #[arg(long, env = "CLAVITOR_PROXY_BURST", value_parser = clap::value_parser!(u32).range(1..), default_value_t = proxy::DEFAULT_RATE_BURST)]
    pub proxy_burst: u32,
    /// PEM file of extra root certificates upstreams may chain to (private CAs, tests); the web
    /// PKI roots are always trusted.
    #[arg(long, env = "CLAVITOR_PROXY_UPSTREAM_CA")]
    pub proxy_upstream_ca: Option<std::path::PathBuf>,
    /// NAME=IP: connect to IP for upstream NAME instead of asking DNS (repeatable; the env var
    /// takes a comma-separated list). The upstream must still prove to be NAME over TLS.
    #[arg(long, env = "CLAVITOR_PROXY_RESOLVE", value_delimiter = ',')]
    pub proxy_resolve: Vec<String>,
    /// Let upstream names that DNS resolves to loopback, private or link-local addresses be
    /// reached through the proxy (off: agents cannot use it to reach the node's own network).
    #[arg(long, env = "CLAVITOR_PROXY_ALLOW_PRIVATE_UPSTREAMS")]
    pub proxy_allow_private_upstreams: bool,
}

impl ProxyArgs {
    fn settings(&self) -> anyhow::Result<proxy::Settings> {
        let mut resolve = std::collections::HashMap::new();
        for item in &self.proxy_resolve {
            let (name, ip) = item.split_once('=').context("--proxy-resolve takes NAME=IP")?;
            let ip: std::net::IpAddr =
                ip.trim().parse().with_context(|| format!("--proxy-resolve: {ip:?} is no IP"))?;
            resolve.insert(name.trim().trim_end_matches('.').to_ascii_lowercase(), ip);
        }
        anyhow::ensure!(self.proxy_max_tunnels > 0 && self.proxy_max_tunnels_per_ip > 0, "tunnel caps must be > 0");
        Ok(proxy::Settings {
            max_tunnels: self.proxy_max_tunnels,
            max_tunnels_per_ip: self.proxy_max_tunnels_per_ip,
            idle: std::time::Duration::from_secs(self.proxy_idle_secs),
            lifetime: std::time::Duration::from_secs(self.proxy_lifetime_secs),
            upstream_idle: std::time::Duration::from_secs(self.proxy_upstream_idle_secs),
            max_request_bytes: self.proxy_max_request_bytes,
            max_response_bytes: self.proxy_max_response_bytes,
            rate_per_agent: self.proxy_rate,
            rate_burst: self.proxy_burst,
            upstream_ca: self.proxy_upstream_ca.clone(),
            resolve,
            allow_private_upstreams: self.proxy_allow_private_upstreams,
        })
    }
}

pub async fn serve(global: &GlobalArgs, args: &ServeArgs) -> anyhow::Result<()> {
    let config =
        Config::new(global.data_dir.clone(), global.master_key_file.clone(), args.listen, args.allow_plain_http)?;
    let limits = crate::config::listener_limits(
        args.limits.max_connections,
        args.limits.max_connections_per_ip,
        args.limits.body_timeout_secs,
        args.limits.body_min_rate,
    )?;
    let webauthn = WebauthnConfig::new(&args.rp_id, &args.origin.origin, args.challenge_ttl_secs)?;
    let node_settings = args.node.settings()?;
    let proxy_settings = args.proxy.settings()?;
    if let Some(addr) = args.proxy.proxy_listen
        && !addr.ip().is_loopback()
        && !args.allow_plain_http
    {
        anyhow::bail!(
            "--proxy-listen {addr} is not loopback: agents send their tokens to it in the clear; \
             pass --allow-plain-http only if that network is trusted"
        );
    }
    let dir = &config.data_dir;
    if dir.is_uninitialised() {
        let report = dir.init().context("first-run initialisation failed")?;
        report_init(dir, &report, &webauthn.rp.origin());
    }
    if data_dir::is_group_or_world_accessible(&dir.root) {
        tracing::warn!(path = %dir.root.display(), "data dir is accessible to group or others; chmod 700 it");
    }
    let edition = crate::edition::current();
    edition.configure(args.telemetry_inputs()).context("invalid telemetry settings")?;
    edition.open_node(&global.edition, &dir.node_db_path(), true)?;
    // Many held or slow connections need file descriptors; take what the hard limit allows.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "cannot raise the open-file limit");
    }
    let node = Node::start_with(dir, edition.max_vaults(), args.audit_sync.into(), args.max_open_vaults)
        .context("cannot open the vault")?;
    node.set_vault_idle(std::time::Duration::from_secs(args.vault_idle_secs));
    // Kuma's message is short: the reason without the file's path (the id names it). Asked at
    // each push: a vault can become unavailable later (checked at its first open) or recover.
    {
        let node = node.clone();
        let dir = dir.clone();
        crate::node::set_unavailable_vaults(move || {
            node.unavailable_now()
                .into_iter()
                .map(|(id, reason)| {
                    let reason = reason.replace(&dir.vault_path(&id).display().to_string(), "file");
                    format!("vault {} unavailable: {reason}", id.as_str().get(..8).unwrap_or(id.as_str()))
                })
                .collect()
        });
    }
    for u in node.unavailable() {
        tracing::error!(vault = %u.id, reason = %u.reason, "vault unavailable: its requests get 503");
    }
    release_startup_scratch();
    if node.awaiting_setup_at_start() > 0 {
        let _ = writeln!(
            std::io::stdout().lock(),
            "a vault has no owner yet: open the setup link `clavitor init` printed (run it again for a fresh one)"
        );
    }
    edition.node_started(&node);
    let watcher = node.spawn_watcher().context("cannot start the change watcher")?;
    let checkpointer = node.spawn_checkpointer().context("cannot start WAL checkpoints")?;
    // Take over SIGINT/SIGTERM before anyone can see the address: axum polls the shutdown future
    // in a task of its own, so registering there left a moment in which SIGTERM still killed the
    // process outright instead of shutting it down gracefully.
    let signals = Signals::register().context("cannot listen for SIGINT/SIGTERM")?;
    // The proxy's address is printed before the API's: tests and scripts read up to the latter.
    let (stop_proxy, proxy_stopped) = tokio::sync::oneshot::channel::<()>();
    let proxy_task = match args.proxy.proxy_listen {
        None => None,
        Some(addr) => {
            let master = dir.load_master_key().context("cannot load the master key")?;
            let (ca, created) = proxy::ca::load_or_create(dir, &master).context("cannot load the proxy CA")?;
            drop(master);
            if created {
                tracing::info!(path = %proxy::ca::cert_path(dir).display(), "created the proxy CA");
            }
            let proxy = proxy::Proxy::new(node.clone(), ca, proxy_settings).context("cannot start the proxy")?;
            let proxy_listener =
                tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
            let local = proxy_listener.local_addr().context("cannot read the bound address")?;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "clavitor proxy listening on {local}");
            let _ = out.flush();
            tracing::info!(%local, "proxy serving");
            Some(tokio::spawn(proxy.serve(proxy_listener, async {
                let _ = proxy_stopped.await;
            })))
        }
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr().context("cannot read the bound address")?;
    {
        let mut out = std::io::stdout().lock();
        let _ =
            writeln!(out, "clavitor {} ({}) listening on http://{local}", env!("CARGO_PKG_VERSION"), edition.name());
        let _ = out.flush();
    }
    tracing::info!(%local, edition = edition.name(), "serving");
    tracing::info!(rp_id = webauthn.rp.rp_id(), origin = %webauthn.rp.origin(), "WebAuthn relying party");
    let app = router(AppState::new(node.clone(), webauthn).with_session_ttl(args.extension_session_ttl_secs));
    // One gate for every listener: the caps count connections of the process, not of a port.
    let gate = Gate::new(limits);
    // The node room: TLS listeners beside the plain one, integrity checks, Kuma and HQ reports.
    let tls =
        crate::node::tls::start(&node_settings.tls, dir, app.clone(), gate.clone()).context("cannot start TLS")?;
    for (kind, addr) in &tls.bound {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "clavitor {kind} listening on {addr}");
        let _ = out.flush();
        tracing::info!(%addr, kind, "serving");
    }
    crate::node::start_reporting(node_settings, dir).context("cannot start node reporting")?;
    // The proxy begins to drain at the same signal as the API, so the two grace periods run
    // side by side rather than one after the other.
    let shutdown = async move {
        shutdown_signal(signals).await;
        let _ = stop_proxy.send(());
    };
    crate::api::serve::serve(listener, None, gate, app, shutdown).await;
    if let Some(task) = proxy_task {
        let _ = task.await;
    }
    tls.wait().await;
    // Every request is answered: the spooled audit rows go into the files now, so that the CLI
    // sees them all once the node has stopped (a node that is killed instead moves them at its
    // next start).
    let _ = tokio::task::spawn_blocking(crate::audit::settle_all).await;
    node.stop();
    let _ = watcher.join();
    let _ = checkpointer.join();
    tracing::info!("stopped");
    Ok(())
}

/// SIGINT and SIGTERM, registered with tokio (their default action, ending the process, is off
/// from then on).
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
    }
}

/// Resolves on SIGINT or SIGTERM; in-flight requests (and their audit commits) then finish.
async fn shutdown_signal(mut signals: Signals) {
    tokio::select! {
        _ = signals.interrupt.recv() => {},
        _ = signals.terminate.recv() => {},
    }
    tracing::info!("shutting down");
    crate::edition::current().begin_shutdown();
}

/// The first load decrypts every entry once; glibc keeps the freed scratch memory in its heaps
/// unless asked to give it back. On a 512 MB node that is worth a few megabytes.
fn release_startup_scratch() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
