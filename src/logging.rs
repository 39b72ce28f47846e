//! slog set-up: JSON lines in production (or when stdout is not a terminal), readable otherwise.
//! What the WhatsApp library logs through the `log` facade joins the same stream.

use std::io::IsTerminal;

use slog::{Drain, Level, Logger, o};

use crate::config::{LogConfig, LogFormat};

/// Records the async drain may hold before it drops (and reports) the excess.
const LOG_CHANNEL_SIZE: usize = 8192;

/// Builds the root logger. Keep the guard alive until exit so buffered records are written.
pub fn build(config: &LogConfig) -> (Logger, slog_async::AsyncGuard) {
    let level: Level = config.level.parse().unwrap_or(Level::Info);
    let json = match config.format {
        LogFormat::Json => true,
        LogFormat::Term => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let drain: Box<dyn Drain<Ok = (), Err = slog::Never> + Send> = if json {
        Box::new(
            slog_json::Json::new(std::io::stdout())
                .add_default_keys()
                .build()
                .fuse(),
        )
    } else {
        let decorator = slog_term::TermDecorator::new().stdout().build();
        Box::new(slog_term::FullFormat::new(decorator).build().fuse())
    };
    let (drain, guard) = slog_async::Async::new(drain.filter_level(level).fuse())
        .chan_size(LOG_CHANNEL_SIZE)
        .overflow_strategy(slog_async::OverflowStrategy::DropAndReport)
        .build_with_guard();
    let root = Logger::root(drain.fuse(), o!("service" => "wasup"));
    let library_level: Level = config.library_level.parse().unwrap_or(Level::Warning);
    // Only the first logger of the process gets the library's records (tests start many).
    if log::set_boxed_logger(Box::new(LibraryLog(root.new(o!("source" => "library"))))).is_ok() {
        log::set_max_level(level_filter(library_level));
    }
    (root, guard)
}

/// whatsapp-rust targets whose info/debug records can carry pairing codes, phone numbers or whole
/// protocol nodes (QR references, message payloads): only their warnings and errors are kept,
/// whatever `log.library_level` says.
const SENSITIVE_TARGETS: [&str; 4] = [
    "Client/Recv",
    "Client/Send",
    "Client/PairCode",
    "Bot/PairCode",
];

/// Whether a library record may be written: not below warning from a [`SENSITIVE_TARGETS`] one.
fn may_log(target: &str, level: log::Level) -> bool {
    level <= log::Level::Warn || !SENSITIVE_TARGETS.iter().any(|t| target.starts_with(t))
}

/// The `log` facade's records (whatsapp-rust and its crates), written through slog.
struct LibraryLog(Logger);

impl log::Log for LibraryLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) || !may_log(record.target(), record.level()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => Level::Error,
            log::Level::Warn => Level::Warning,
            log::Level::Info => Level::Info,
            log::Level::Debug => Level::Debug,
            log::Level::Trace => Level::Trace,
        };
        let target = record.target();
        let text = record.args().to_string();
        match level {
            Level::Error => slog::error!(self.0, "{}", text; "target" => target),
            Level::Warning => slog::warn!(self.0, "{}", text; "target" => target),
            Level::Info => slog::info!(self.0, "{}", text; "target" => target),
            Level::Debug => slog::debug!(self.0, "{}", text; "target" => target),
            _ => slog::trace!(self.0, "{}", text; "target" => target),
        }
    }

    fn flush(&self) {}
}

/// The `log` filter letting through what `level` allows.
fn level_filter(level: Level) -> log::LevelFilter {
    match level {
        Level::Critical | Level::Error => log::LevelFilter::Error,
        Level::Warning => log::LevelFilter::Warn,
        Level::Info => log::LevelFilter::Info,
        Level::Debug => log::LevelFilter::Debug,
        Level::Trace => log::LevelFilter::Trace,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_library_targets_keep_only_warnings() {
        for target in SENSITIVE_TARGETS {
            assert!(!may_log(target, log::Level::Info), "{target}");
            assert!(!may_log(target, log::Level::Debug), "{target}");
            assert!(may_log(target, log::Level::Warn), "{target}");
        }
        assert!(may_log("Client/Connect", log::Level::Info));
    }
}
