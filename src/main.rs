//! The `wasup` binary: parse arguments, load config, run until SIGTERM/SIGINT, shut down cleanly.
//! Under systemd (`Type=notify`) it reports READY=1 once listening and STOPPING=1 on shutdown.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use sd_notify::NotifyState;
use slog::{Logger, debug, error, info};
use wasup::{Wasup, config};

/// WhatsApp session supervisor: many WhatsApp Web sessions, one Laravel kept informed in batches.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file; environment variables override it (see README).
    #[arg(long, short, default_value = config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Print the effective configuration (after environment overrides) as TOML and exit;
    /// secrets show as "<redacted>".
    #[arg(long)]
    print_config: bool,
    /// With --print-config, show the secrets themselves.
    #[arg(long, requires = "print_config")]
    show_secrets: bool,
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
        let shown = if args.show_secrets {
            config
        } else {
            config.redacted()
        };
        return match toml::to_string_pretty(&shown) {
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
        // Handlers first: a SIGTERM right after READY=1 must already mean a clean shutdown.
        let signal = shutdown_signal()?;
        let wasup = Wasup::start(config, log.clone()).await?;
        let listening = format!("Listening on {}.", wasup.addr);
        notify_systemd(&log, &[NotifyState::Ready, NotifyState::Status(&listening)]);
        let wasup = std::rc::Rc::new(wasup);
        let watchdog = watchdog_interval().map(|every| {
            actix_rt::spawn(feed_watchdog(
                std::rc::Rc::clone(&wasup),
                every,
                log.clone(),
            ))
        });
        signal.await;
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        let Ok(wasup) = std::rc::Rc::try_unwrap(wasup) else {
            anyhow::bail!("the watchdog still holds wasup");
        };
        notify_systemd(
            &log,
            &[
                NotifyState::Stopping,
                NotifyState::Status("Stopping: flushing batches to Laravel."),
            ],
        );
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

/// Tells systemd about a state change (`Type=notify`); does nothing when NOTIFY_SOCKET is unset.
/// A failure only costs systemd's view of the service, so it is logged, not fatal.
fn notify_systemd(log: &Logger, states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(false, states) {
        debug!(log, "Cannot notify systemd."; "error" => %error);
    }
}

/// Half of systemd's `WatchdogSec=` when the unit sets one: `WATCHDOG_USEC`, for this process
/// when `WATCHDOG_PID` names one (as sd_watchdog_enabled(3) reads them).
fn watchdog_interval() -> Option<std::time::Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let for_us = std::env::var("WATCHDOG_PID")
        .ok()
        .is_none_or(|pid| pid.parse() == Ok(std::process::id()));
    Some(std::time::Duration::from_micros(usec / 2)).filter(|every| for_us && !every.is_zero())
}

/// Sends `WATCHDOG=1` every `every`, but only while the pipeline answers a probe; otherwise
/// systemd restarts wasup once `WatchdogSec=` passes without one.
async fn feed_watchdog(wasup: std::rc::Rc<Wasup>, every: std::time::Duration, log: Logger) {
    let mut quiet_since: Option<std::time::Instant> = None;
    loop {
        if wasup.answers_probe(every / 2).await {
            if quiet_since.take().is_some() {
                info!(
                    log,
                    "The pipeline answers again; feeding systemd's watchdog."
                );
            }
            notify_systemd(&log, &[NotifyState::Watchdog]);
        } else if quiet_since.is_none() {
            quiet_since = Some(std::time::Instant::now());
            error!(
                log,
                "A core actor does not answer; no WATCHDOG=1 (systemd will restart wasup)."
            );
        }
        actix_rt::time::sleep(every).await;
    }
}

/// Installs the SIGTERM and SIGINT handlers now; the future resolves when either arrives.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
