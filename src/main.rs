//! The `clavitor` binary: parse arguments, set up logging, run a subcommand.

use clap::Parser;
use clavitor::cli::{Cli, Command, LogFormat};

fn main() -> std::process::ExitCode {
    // Everything this process creates (master key, databases and their WAL files, the ACME cache,
    // the setup-link file) is for the owner alone, whatever umask it was started with.
    // SAFETY: umask only sets the process's file-creation mask; no threads exist yet.
    let inherited_umask = unsafe { libc::umask(0o077) };
    let cli = Cli::parse();
    if let Command::Client(cmd) = &cli.command {
        // The agent-side commands create no files; `run` starts the user's command, which gets
        // the umask it was started with.
        // SAFETY: as above; still no threads.
        unsafe {
            libc::umask(inherited_umask);
        }
        return match clavitor::cli::run_client(cmd) {
            Ok(code) => std::process::ExitCode::from(code),
            Err(e) => {
                eprintln!("clavitor: error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Command::Mcp(_) = &cli.command {
        // Like the agent-side commands: `run_with_secrets` children get the caller's umask.
        // SAFETY: as above; still no threads.
        unsafe {
            libc::umask(inherited_umask);
        }
    }
    init_logging(cli.global.log_format);
    let result = match &cli.command {
        Command::Version => {
            println!("clavitor {} ({})", env!("CARGO_PKG_VERSION"), clavitor::edition::current().name());
            Ok(())
        }
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            // Audit rows are committed when a worker goes idle (one batch per idle moment) and
            // the other workers are idle too (see `audit::before_worker_park`).
            .on_thread_park(clavitor::audit::before_worker_park)
            .on_thread_unpark(clavitor::audit::after_worker_unpark)
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(clavitor::cli::serve(&cli.global, args))),
        Command::Mcp(args) => clavitor::cli::run_mcp(args),
        other => clavitor::cli::run_operator(&cli.global, other),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clavitor: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLAVITOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    // rmcp logs whole JSON-RPC messages at debug, and a tool result may hold a value the vault
    // let `get_field` reveal: whatever CLAVITOR_LOG says, its events stop at info.
    let mcp_cap = tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.target().starts_with("rmcp") && *meta.level() > tracing::Level::INFO)
    });
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    match format {
        LogFormat::Text => builder.finish().with(mcp_cap).init(),
        LogFormat::Json => builder.json().finish().with(mcp_cap).init(),
    }
}
