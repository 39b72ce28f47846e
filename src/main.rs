//! The `wasup` binary: parse arguments, load config, run until SIGTERM/SIGINT, shut down cleanly.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use slog::{error, info};
use wasup::{Wasup, config};

/// WhatsApp session supervisor: many WhatsApp Web sessions, one Laravel kept informed in batches.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file; environment variables override it (see README).
    #[arg(long, short, default_value = config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Print the effective configuration (after environment overrides) as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Print the OpenAPI document of the REST API and exit.
    #[arg(long)]
    print_openapi: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_openapi {
        print!("{}", wasup::api::openapi::document());
        return ExitCode::SUCCESS;
    }
    let config = match config::load(&args.config, std::env::vars()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("wasup: {error:#}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        return match toml::to_string_pretty(&config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("wasup: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let (log, _log_guard) = wasup::logging::build(&config.log);
    let system = actix_rt::System::new();
    let result = system.block_on(async {
        let wasup = Wasup::start(config, log.clone()).await?;
        wait_for_signal().await?;
        let report = wasup.shutdown().await;
        info!(log, "wasup stopped."; "flushed" => report.flushed, "pending" => report.pending);
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!(log, "wasup failed."; "error" => format!("{error:#}"));
            eprintln!("wasup: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
