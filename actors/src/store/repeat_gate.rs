//! Log discipline for a lasting outage: say it once, then at most once a minute, with how many
//! repeats were held back, instead of a line per retry (Redis down means a retry every second).

use std::{
    fmt::Display,
    time::{Duration, Instant},
};

use slog::{Logger, warn};

/// Says that `what` (the outbox, the session registry, ...) could not be read back from Redis
/// and is retried every second: the first time, then once a minute through `gate`.
pub fn say_not_readable_yet(
    gate: Option<&mut RepeatGate>,
    log: &Logger,
    what: &'static str,
    error: &dyn Display,
) {
    if let Some(held_back) = gate.and_then(|gate| gate.pass(Instant::now())) {
        warn!(log, "Not readable from Redis yet (Redis down?); retrying every second, saying so once a minute.";
            "what" => what, "error" => %error, "attempts_since_last_said" => held_back);
    }
}

/// How often a repeated problem is logged again.
pub const REPEAT_LOG_EVERY: Duration = Duration::from_secs(60);

/// Lets the first report through, then one per `every`.
#[derive(Debug, Clone)]
pub struct RepeatGate {
    /// The least time between two reports.
    every: Duration,
    /// When the last report went through.
    last: Option<Instant>,
    /// Reports held back since then.
    held_back: u64,
}

impl Default for RepeatGate {
    fn default() -> Self {
        Self::new(REPEAT_LOG_EVERY)
    }
}

impl RepeatGate {
    /// A gate letting one report through per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// Whether to log this report now; when so, how many were held back before it.
    pub fn pass(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.every)
        {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }

    /// Whether a problem is being reported (a report went through and no [`clear`](Self::clear)
    /// followed).
    pub fn is_open(&self) -> bool {
        self.last.is_some()
    }

    /// The problem is over: the next report goes through at once.
    pub fn clear(&mut self) {
        self.last = None;
        self.held_back = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_report_passes_then_one_a_minute_with_the_count_held_back() {
        let start = Instant::now();
        let mut gate = RepeatGate::default();
        assert_eq!(gate.pass(start), Some(0));
        for second in 1..60 {
            assert_eq!(gate.pass(start + Duration::from_secs(second)), None);
        }
        assert_eq!(gate.pass(start + Duration::from_secs(60)), Some(59));
        assert!(gate.is_open());
        gate.clear();
        assert!(!gate.is_open());
        assert_eq!(gate.pass(start + Duration::from_secs(61)), Some(0));
    }
}
