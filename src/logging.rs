//! slog set-up: JSON lines in production (or when stdout is not a terminal), readable otherwise.

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
    (Logger::root(drain.fuse(), o!("service" => "wasup")), guard)
}
