//! `CircuitBreaker` actor: stops requests to Laravel after repeated failures, then probes.
//!
//! The sink asks [`AcquirePermit`] before each request and reports every result with
//! [`RecordOutcome`]. Closed → Open after `threshold` consecutive failures → HalfOpen after
//! `reset_timeout`, letting one probe through → Closed on success, Open again on failure.

use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use slog::{Logger, info, warn};

/// Breaker settings (`[breaker]` in config.toml).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub threshold: u32,
    /// How long the breaker stays open before a probe.
    #[serde(with = "humantime_serde")]
    pub reset_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            threshold: 20,
            reset_timeout: Duration::from_secs(180),
        }
    }
}

impl BreakerConfig {
    /// Checks the values, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.threshold == 0 {
            return Err("breaker.threshold must be at least 1".into());
        }
        if self.reset_timeout.is_zero() {
            return Err("breaker.reset_timeout must be above zero".into());
        }
        Ok(())
    }
}

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow; counts consecutive failures.
    Closed {
        /// Failures in a row so far.
        failures: u32,
    },
    /// Nothing is sent until `until`.
    Open {
        /// When a probe may go.
        until: Instant,
    },
    /// One probe may go; its result decides.
    HalfOpen {
        /// Whether the probe is out.
        probe_in_flight: bool,
    },
}

impl BreakerState {
    /// `CLOSED`, `OPEN` or `HALF_OPEN`, as the seeds' `/health` shows it.
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed { .. } => "CLOSED",
            BreakerState::Open { .. } => "OPEN",
            BreakerState::HalfOpen { .. } => "HALF_OPEN",
        }
    }
}

/// The state machine, free of actix so it can be unit-tested.
#[derive(Debug)]
pub struct Breaker {
    /// Thresholds.
    config: BreakerConfig,
    /// Current state.
    state: BreakerState,
    /// Consecutive failures (kept across Open/HalfOpen for reporting).
    consecutive_failures: u32,
    /// Successful requests since start.
    successes: u64,
    /// Failed requests since start.
    failures_total: u64,
    /// Times the breaker opened.
    opened: u64,
}

/// Whether a request may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permit {
    /// Send it.
    Granted,
    /// Do not; ask again after this long.
    Denied {
        /// Time until the breaker may let a request through.
        retry_after: Duration,
    },
}

/// What changed after an outcome, for logging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// No state change.
    None,
    /// The breaker opened.
    Opened,
    /// The breaker closed again.
    Closed,
}

/// Poll interval suggested to a caller denied because a probe is already out.
const PROBE_WAIT: Duration = Duration::from_millis(100);

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed { failures: 0 },
            consecutive_failures: 0,
            successes: 0,
            failures_total: 0,
            opened: 0,
        }
    }

    /// Asks whether a request may go now.
    pub fn acquire(&mut self, now: Instant) -> Permit {
        match self.state {
            BreakerState::Closed { .. } => Permit::Granted,
            BreakerState::Open { until } if now < until => Permit::Denied {
                retry_after: until - now,
            },
            BreakerState::Open { .. }
            | BreakerState::HalfOpen {
                probe_in_flight: false,
            } => {
                self.state = BreakerState::HalfOpen {
                    probe_in_flight: true,
                };
                Permit::Granted
            }
            BreakerState::HalfOpen {
                probe_in_flight: true,
            } => Permit::Denied {
                retry_after: PROBE_WAIT,
            },
        }
    }

    /// Records a request's result.
    pub fn record(&mut self, success: bool, now: Instant) -> Transition {
        if success {
            self.successes += 1;
            self.consecutive_failures = 0;
            let was_closed = matches!(self.state, BreakerState::Closed { .. });
            self.state = BreakerState::Closed { failures: 0 };
            return if was_closed {
                Transition::None
            } else {
                Transition::Closed
            };
        }
        self.failures_total += 1;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        match self.state {
            BreakerState::Closed { failures } if failures + 1 < self.config.threshold => {
                self.state = BreakerState::Closed {
                    failures: failures + 1,
                };
                Transition::None
            }
            BreakerState::Open { .. } => Transition::None,
            BreakerState::Closed { .. } | BreakerState::HalfOpen { .. } => {
                self.state = BreakerState::Open {
                    until: now + self.config.reset_timeout,
                };
                self.opened += 1;
                Transition::Opened
            }
        }
    }

    /// A copy of the counters for `/health`.
    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        BreakerSnapshot {
            state: self.state.name(),
            failure_count: self.consecutive_failures,
            success_count: self.successes,
            failures_total: self.failures_total,
            times_opened: self.opened,
            retry_in_ms: match self.state {
                BreakerState::Open { until } => Some(
                    u64::try_from(until.saturating_duration_since(now).as_millis())
                        .unwrap_or(u64::MAX),
                ),
                _ => None,
            },
        }
    }
}

/// The breaker as `/health` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakerSnapshot {
    /// `CLOSED`, `OPEN` or `HALF_OPEN`.
    pub state: &'static str,
    /// Consecutive failures.
    pub failure_count: u32,
    /// Successful requests since start.
    pub success_count: u64,
    /// Failed requests since start.
    pub failures_total: u64,
    /// Times the breaker opened since start.
    pub times_opened: u64,
    /// While open: milliseconds until the probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
}

/// The actor around [`Breaker`].
pub struct CircuitBreaker {
    /// The state machine.
    breaker: Breaker,
    /// Where transitions are logged.
    log: Logger,
}

impl CircuitBreaker {
    /// A closed breaker actor.
    pub fn new(config: BreakerConfig, log: Logger) -> Self {
        Self {
            breaker: Breaker::new(config),
            log,
        }
    }
}

impl Actor for CircuitBreaker {
    type Context = Context<Self>;
}

/// May a request to Laravel go now?
#[derive(Message, Debug)]
#[rtype(result = "Permit")]
pub struct AcquirePermit;

impl Handler<AcquirePermit> for CircuitBreaker {
    type Result = MessageResult<AcquirePermit>;

    fn handle(&mut self, _: AcquirePermit, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.breaker.acquire(Instant::now()))
    }
}

/// The result of a permitted request.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RecordOutcome {
    /// Whether Laravel answered (2xx, or a 4xx that is the request's fault).
    pub success: bool,
}

impl Handler<RecordOutcome> for CircuitBreaker {
    type Result = ();

    fn handle(&mut self, outcome: RecordOutcome, _: &mut Context<Self>) {
        match self.breaker.record(outcome.success, Instant::now()) {
            Transition::Opened => {
                warn!(self.log, "Circuit breaker opened: Laravel requests paused.";
                "consecutive_failures" => self.breaker.consecutive_failures,
                "reset_timeout" => ?self.breaker.config.reset_timeout)
            }
            Transition::Closed => info!(self.log, "Circuit breaker closed: Laravel answers again."),
            Transition::None => {}
        }
    }
}

/// Reads the breaker's counters.
#[derive(Message, Debug)]
#[rtype(result = "BreakerSnapshot")]
pub struct GetBreakerSnapshot;

impl Handler<GetBreakerSnapshot> for CircuitBreaker {
    type Result = MessageResult<GetBreakerSnapshot>;

    fn handle(&mut self, _: GetBreakerSnapshot, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.breaker.snapshot(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32) -> Breaker {
        Breaker::new(BreakerConfig {
            threshold,
            reset_timeout: Duration::from_secs(10),
        })
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let now = Instant::now();
        let mut breaker = breaker(3);
        assert_eq!(breaker.record(false, now), Transition::None);
        assert_eq!(breaker.record(true, now), Transition::None);
        assert_eq!(breaker.record(false, now), Transition::None);
        assert_eq!(breaker.record(false, now), Transition::None);
        assert_eq!(breaker.acquire(now), Permit::Granted);
        assert_eq!(breaker.record(false, now), Transition::Opened);
        assert_eq!(
            breaker.acquire(now + Duration::from_secs(4)),
            Permit::Denied {
                retry_after: Duration::from_secs(6)
            }
        );
    }

    #[test]
    fn half_open_lets_one_probe_and_its_result_decides() {
        let now = Instant::now();
        let mut breaker = breaker(1);
        assert_eq!(breaker.record(false, now), Transition::Opened);
        let later = now + Duration::from_secs(10);
        assert_eq!(breaker.acquire(later), Permit::Granted);
        assert!(matches!(breaker.acquire(later), Permit::Denied { .. }));
        assert_eq!(breaker.record(false, later), Transition::Opened);
        assert!(matches!(breaker.acquire(later), Permit::Denied { .. }));
        let much_later = later + Duration::from_secs(10);
        assert_eq!(breaker.acquire(much_later), Permit::Granted);
        assert_eq!(breaker.record(true, much_later), Transition::Closed);
        assert_eq!(breaker.acquire(much_later), Permit::Granted);
        let snapshot = breaker.snapshot(much_later);
        assert_eq!(snapshot.state, "CLOSED");
        assert_eq!(snapshot.times_opened, 2);
        assert_eq!(snapshot.success_count, 1);
    }
}
