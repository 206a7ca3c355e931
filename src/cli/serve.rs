//! `clavitor serve` and first-run initialisation.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;

use super::{GlobalArgs, ServeArgs};
use crate::api::{AppState, router};
use crate::config::Config;
use crate::vault::data_dir::{DataDir, InitReport};
use crate::vault::{Node, data_dir};

/// Prints what `init` did. The owner token goes to stdout exactly once, never to the logs.
pub fn report_init(dir: &DataDir, report: &InitReport) {
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
    match &report.owner_token {
        Some(token) => {
            let _ = writeln!(out, "created agent 1 \"Owner\" (all access, admin)");
            let _ = writeln!(out, "owner token (shown once, store it now): {}", token.reveal());
        }
        None if !report.created_vault => {
            let _ = writeln!(out, "{} is already initialised; nothing to do", dir.root.display());
        }
        None => {}
    }
    let _ = out.flush();
}

pub async fn serve(global: &GlobalArgs, args: &ServeArgs) -> anyhow::Result<()> {
    let config =
        Config::new(global.data_dir.clone(), global.master_key_file.clone(), args.listen, args.allow_plain_http)?;
    let dir = &config.data_dir;
    if dir.is_uninitialised() {
        let report = dir.init().context("first-run initialisation failed")?;
        report_init(dir, &report);
    }
    if data_dir::is_group_or_world_accessible(&dir.root) {
        tracing::warn!(path = %dir.root.display(), "data dir is accessible to group or others; chmod 700 it");
    }
    let edition = crate::edition::current();
    edition.configure(args.telemetry_inputs()).context("invalid telemetry settings")?;
    // Many held or slow connections need file descriptors; take what the hard limit allows.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "cannot raise the open-file limit");
    }
    let node = Node::start(dir, edition.max_vaults(), args.audit_sync.into()).context("cannot open the vault")?;
    let watcher = node.spawn_watcher().context("cannot start the change watcher")?;
    let checkpointer = node.spawn_checkpointer().context("cannot start WAL checkpoints")?;
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
    let app = router(AppState::new(node.clone()));
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")?;
    node.stop();
    let _ = watcher.join();
    let _ = checkpointer.join();
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM; in-flight requests (and their audit commits) then finish.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
    crate::edition::current().begin_shutdown();
}
