//! The `wasup` binary: parse arguments, load config, run until SIGTERM/SIGINT, shut down cleanly.
//! Under systemd (`Type=notify`) it reports READY=1 once listening and STOPPING=1 on shutdown.

use std::{path::PathBuf, process::ExitCode, rc::Rc, time::Duration};

use clap::Parser;
use sd_notify::NotifyState;
use slog::{Logger, debug, error, info};
use wasup::{Wasup, config};

/// jemalloc instead of the system allocator: many small per-session allocations and the start
/// burst's transient buffers fragment glibc's heap; jemalloc hands freed pages back (100k
/// sessions: 1,489 -> 1,086 MiB RSS, and less CPU per event; docs/BENCHMARKS.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    let probe = Probe {
        // Under WatchdogSec=, often enough to ping at a third of it.
        every: watchdog_interval().map_or(config.http.probe_interval, |ping| {
            ping.min(config.http.probe_interval)
        }),
        failures: config.http.probe_failures,
        feeds_watchdog: watchdog_interval().is_some(),
    };
    let system = actix_rt::System::new();
    let result = system.block_on(async {
        // Handlers first: a SIGTERM right after READY=1 must already mean a clean shutdown.
        let signal = shutdown_signal()?;
        let wasup = Rc::new(Wasup::start(config, log.clone()).await?);
        let listening = format!("Listening on {}.", wasup.addr);
        notify_systemd(&log, &[NotifyState::Ready, NotifyState::Status(&listening)]);
        let mut supervision = actix_rt::spawn(supervise(Rc::clone(&wasup), probe, log.clone()));
        let pipeline_died = tokio::select! {
            () = signal => false,
            _ = &mut supervision => true,
        };
        if !pipeline_died {
            // Wait until the aborted task is dropped, with its share of `wasup`.
            supervision.abort();
            let _ = supervision.await;
        }
        let Ok(wasup) = Rc::try_unwrap(wasup) else {
            anyhow::bail!("the liveness probe still holds wasup");
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
        if pipeline_died {
            anyhow::bail!(
                "a core actor stopped answering; exiting so the supervisor restarts wasup"
            );
        }
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

/// How the pipeline's liveness is checked.
#[derive(Clone, Copy, Debug)]
struct Probe {
    /// Between two probes.
    every: Duration,
    /// Failed probes in a row that end the process.
    failures: u32,
    /// Send `WATCHDOG=1` after each probe that passed.
    feeds_watchdog: bool,
}

/// A third of systemd's `WatchdogSec=` when the unit sets one (a probe may take a whole period,
/// so two pings can be two periods apart): `WATCHDOG_USEC`, for this process
/// when `WATCHDOG_PID` names one (as sd_watchdog_enabled(3) reads them).
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let for_us = std::env::var("WATCHDOG_PID")
        .ok()
        .is_none_or(|pid| pid.parse() == Ok(std::process::id()));
    Some(Duration::from_micros(usec / 3)).filter(|every| for_us && !every.is_zero())
}

/// Probes every core actor each `probe.every`; feeds systemd's watchdog after each probe that
/// passed; returns once `probe.failures` probes in a row failed (a stopped or wedged actor: the
/// process would look alive and deliver nothing).
async fn supervise(wasup: Rc<Wasup>, probe: Probe, log: Logger) {
    let mut failed = 0;
    loop {
        let started = std::time::Instant::now();
        // A slow answer shortens the pause: probes start every `probe.every`, so two pings are at
        // most two periods apart (under WatchdogSec=, a third of it each: within it).
        if wasup.answers_probe(probe.every).await {
            if failed > 0 {
                info!(log, "Every core actor answers again.");
            }
            failed = 0;
            if probe.feeds_watchdog {
                notify_systemd(&log, &[NotifyState::Watchdog]);
            }
        } else {
            failed += 1;
            error!(log, "A core actor does not answer."; "failed_probes" => failed, "limit" => probe.failures);
            if failed >= probe.failures {
                return;
            }
        }
        actix_rt::time::sleep(probe.every.saturating_sub(started.elapsed())).await;
    }
}

/// Tells systemd about a state change (`Type=notify`); does nothing when NOTIFY_SOCKET is unset.
/// A failure only costs systemd's view of the service, so it is logged, not fatal.
fn notify_systemd(log: &Logger, states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(false, states) {
        debug!(log, "Cannot notify systemd."; "error" => %error);
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
