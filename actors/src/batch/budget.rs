//! The request budget: how many requests may be at Laravel at once and how many may start per
//! second, adapted to Laravel's answers by additive increase and multiplicative decrease (the
//! idea of Vector's adaptive request concurrency). A failed or slow answer halves both limits
//! (once per round trip); each healthy answer raises them a step, up to the configured maxima.
//! When the budget is tight, items wait longer and batches get fuller.
//!
//! Urgent statuses (a user just scanned, or was logged out) must be at Laravel within
//! `batch.priority_delay`, so a request that carries one may use a small reserve: one place beyond
//! the concurrency limit and one start token borrowed ahead. The borrowed token is paid back
//! before the next ordinary request starts, so over time the start rate stays within the budget.
//! The reserve opens only shortly before the urgent status must leave (a quarter of
//! `batch.priority_delay` before, [`URGENT_RESERVE_MARGIN_DIVISOR`]); until then it waits for an
//! ordinary place like any request. Opened at once, it let the status lane (a request every
//! linger, ~4 of 5 a second at 3,000 sessions) starve the QR lane.
//!
//! Plain data, no actix: the `BatchActor` asks it before each request and tells it each answer.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Lowest start rate the budget falls to (one request every five seconds).
const MIN_RATE_PER_SECOND: f64 = 0.2;
/// Weight of a new sample in the smoothed latencies.
const LATENCY_SMOOTHING: f64 = 0.1;
/// An answer slower than `SLOW_FACTOR × baseline + SLOW_SLACK` counts as Laravel slowing down.
const SLOW_FACTOR: f64 = 2.0;
/// See [`SLOW_FACTOR`]: keeps a fast Laravel's jitter from reading as congestion.
const SLOW_SLACK: Duration = Duration::from_millis(50);
/// What the latency is taken to be before Laravel answered once.
const DEFAULT_LATENCY: Duration = Duration::from_millis(100);
/// Shortest pause between two decreases (a burst of failures cuts once, not once per request).
const MIN_DECREASE_HOLD: Duration = Duration::from_millis(100);
/// Places beyond the concurrency limit a request carrying an urgent item may take.
const URGENT_EXTRA_IN_FLIGHT: usize = 1;
/// Start tokens a request carrying an urgent item may borrow ahead of the refill.
const URGENT_BORROWED_TOKENS: f64 = 1.0;
/// The share of `batch.priority_delay` by which the urgent reserve opens before an urgent item
/// must leave (its deadline less the expected latency): room for Laravel's latency running above
/// its average and for the pump's own delays (500 ms: the reserve opens 125 ms early).
pub(super) const URGENT_RESERVE_MARGIN_DIVISOR: u32 = 4;

/// What a request carries, as far as the budget cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrying {
    /// Only items that can wait for a place.
    Ordinary,
    /// At least one urgent status about to be late: it may use the reserve.
    Urgent,
}

/// The budget's bounds (`[laravel]` settings).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetLimits {
    /// Most requests at Laravel at once.
    pub max_in_flight: usize,
    /// Most requests started per second.
    pub max_per_second: f64,
    /// Optional floor between the starts of two requests.
    pub min_gap: Duration,
}

impl Default for BudgetLimits {
    fn default() -> Self {
        Self {
            max_in_flight: 2,
            max_per_second: 5.0,
            min_gap: Duration::ZERO,
        }
    }
}

/// How one request went, as the budget judges it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestSample {
    /// From sending to the end of the answer.
    pub latency: Duration,
    /// Laravel failed or pushed back (network error, timeout, 5xx, 408, 429): slow down.
    pub congested: bool,
}

/// The budget's figures (`/metrics/batch`).
#[derive(Clone, Debug, Serialize)]
pub struct BudgetStats {
    /// Requests allowed at once now.
    pub concurrency_limit: usize,
    /// Requests allowed to start per second now.
    pub rate_per_second: f64,
    /// Requests at Laravel now.
    pub in_flight: usize,
    /// Smoothed latency of Laravel's answers, in ms.
    pub latency_ms: u64,
    /// Times the budget was cut.
    pub decreases: u64,
    /// Requests that started on the urgent reserve (no ordinary place or token was free).
    pub urgent_reserve_starts: u64,
}

/// The adaptive budget.
#[derive(Debug)]
pub struct RequestBudget {
    /// The bounds it adapts within.
    limits: BudgetLimits,
    /// Requests allowed at once, fractional so that it can grow by one per round trip.
    concurrency: f64,
    /// Requests allowed to start per second.
    rate: f64,
    /// Start tokens, refilled at `rate`, at most `limits.max_in_flight`: a short burst may start.
    /// Below zero while an urgent request's borrowed token is being paid back.
    tokens: f64,
    /// When `tokens` was last refilled.
    refilled_at: Instant,
    /// Requests sent and not answered.
    in_flight: usize,
    /// When the last request started (for `min_gap`).
    last_start: Option<Instant>,
    /// Smoothed latency of answers that were not failures: what "slow" is judged against.
    baseline: Option<Duration>,
    /// No decrease before this: one cut per round trip.
    hold_decrease_until: Option<Instant>,
    /// Times the budget was cut.
    decreases: u64,
    /// Requests that started on the urgent reserve.
    urgent_reserve_starts: u64,
}

impl RequestBudget {
    /// A budget at its maxima.
    pub fn new(limits: BudgetLimits, now: Instant) -> Self {
        let max_in_flight = limits.max_in_flight.max(1) as f64;
        Self {
            limits,
            concurrency: max_in_flight,
            rate: limits.max_per_second.max(MIN_RATE_PER_SECOND),
            tokens: max_in_flight,
            refilled_at: now,
            in_flight: 0,
            last_start: None,
            baseline: None,
            hold_decrease_until: None,
            decreases: 0,
            urgent_reserve_starts: 0,
        }
    }

    fn burst(&self) -> f64 {
        self.limits.max_in_flight.max(1) as f64
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst());
        self.refilled_at = now;
    }

    /// The places and the token level a request carrying `carrying` needs to start.
    fn needs(&self, carrying: Carrying) -> (usize, f64) {
        match carrying {
            Carrying::Ordinary => (self.concurrency_limit(), 1.0),
            Carrying::Urgent => (
                self.concurrency_limit() + URGENT_EXTRA_IN_FLIGHT,
                1.0 - URGENT_BORROWED_TOKENS,
            ),
        }
    }

    /// When the next request carrying `carrying` may start: `now` or later, or `None` while the
    /// requests in flight use every place it may take (an answer frees one).
    pub fn next_start(&mut self, now: Instant, carrying: Carrying) -> Option<Instant> {
        let (places, tokens_needed) = self.needs(carrying);
        if self.in_flight >= places {
            return None;
        }
        self.refill(now);
        let token_at = if self.tokens >= tokens_needed {
            now
        } else {
            now + Duration::from_secs_f64((tokens_needed - self.tokens) / self.rate)
        };
        let gap_at = self
            .last_start
            .map_or(now, |last| (last + self.limits.min_gap).max(now));
        Some(token_at.max(gap_at))
    }

    /// Whether a request carrying `carrying` may start now.
    pub fn may_start(&mut self, now: Instant, carrying: Carrying) -> bool {
        self.next_start(now, carrying).is_some_and(|at| at <= now)
    }

    /// A request started (the caller asked [`Self::may_start`] with what it carries).
    pub fn start(&mut self, now: Instant) {
        self.refill(now);
        if self.in_flight >= self.concurrency_limit() || self.tokens < 1.0 {
            self.urgent_reserve_starts += 1;
        }
        self.tokens = (self.tokens - 1.0).max(-URGENT_BORROWED_TOKENS);
        self.in_flight += 1;
        self.last_start = Some(now);
    }

    /// A request ended; `samples` are its attempts (none when it never reached Laravel, e.g.
    /// the breaker was open).
    pub fn finish(&mut self, samples: &[RequestSample], now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        for sample in samples {
            self.observe(*sample, now);
        }
    }

    fn observe(&mut self, sample: RequestSample, now: Instant) {
        let slow = self
            .baseline
            .is_some_and(|baseline| sample.latency > baseline.mul_f64(SLOW_FACTOR) + SLOW_SLACK);
        if !sample.congested {
            self.baseline = Some(match self.baseline {
                None => sample.latency,
                Some(baseline) => {
                    baseline.mul_f64(1.0 - LATENCY_SMOOTHING)
                        + sample.latency.mul_f64(LATENCY_SMOOTHING)
                }
            });
        }
        if sample.congested || slow {
            if self.hold_decrease_until.is_none_or(|until| now >= until) {
                self.concurrency = (self.concurrency / 2.0).max(1.0);
                self.rate = (self.rate / 2.0).max(MIN_RATE_PER_SECOND);
                self.tokens = self.tokens.min(1.0);
                self.decreases += 1;
                self.hold_decrease_until = Some(now + sample.latency.max(MIN_DECREASE_HOLD));
            }
            return;
        }
        let max_in_flight = self.burst();
        self.concurrency = (self.concurrency + 1.0 / self.concurrency).min(max_in_flight);
        let step = self.limits.max_per_second / 10.0;
        self.rate = (self.rate + step).min(self.limits.max_per_second.max(MIN_RATE_PER_SECOND));
    }

    /// Requests allowed at once now.
    pub fn concurrency_limit(&self) -> usize {
        (self.concurrency.floor() as usize).max(1)
    }

    /// The time between two starts the budget allows now (its rate, or the gap floor if longer).
    pub fn start_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate).max(self.limits.min_gap)
    }

    /// How long a request is expected to take: an item due at Laravel by a deadline leaves this
    /// much earlier.
    pub fn expected_latency(&self) -> Duration {
        self.baseline.unwrap_or(DEFAULT_LATENCY)
    }

    /// The figures.
    pub fn stats(&self) -> BudgetStats {
        BudgetStats {
            concurrency_limit: self.concurrency_limit(),
            rate_per_second: self.rate,
            in_flight: self.in_flight,
            latency_ms: u64::try_from(self.expected_latency().as_millis()).unwrap_or(u64::MAX),
            decreases: self.decreases,
            urgent_reserve_starts: self.urgent_reserve_starts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: RequestSample = RequestSample {
        latency: Duration::from_millis(100),
        congested: false,
    };

    fn budget(now: Instant) -> RequestBudget {
        RequestBudget::new(BudgetLimits::default(), now)
    }

    #[test]
    fn at_most_max_in_flight_requests_at_once() {
        let now = Instant::now();
        let mut budget = budget(now);
        assert!(budget.may_start(now, Carrying::Ordinary));
        budget.start(now);
        assert!(budget.may_start(now, Carrying::Ordinary));
        budget.start(now);
        assert_eq!(
            budget.next_start(now, Carrying::Ordinary),
            None,
            "two in flight: wait for an answer"
        );
        budget.finish(&[FAST], now);
        assert!(budget.next_start(now, Carrying::Ordinary).is_some());
    }

    #[test]
    fn starts_are_spread_to_the_rate_limit() {
        let now = Instant::now();
        let mut budget = budget(now);
        budget.start(now);
        budget.finish(&[], now);
        budget.start(now);
        budget.finish(&[], now);
        // The burst (2 tokens) is spent; the next token comes after 1/5 s.
        assert_eq!(
            budget.next_start(now, Carrying::Ordinary),
            Some(now + Duration::from_millis(200))
        );
        let later = now + Duration::from_millis(200);
        assert!(budget.may_start(later, Carrying::Ordinary));
    }

    #[test]
    fn failures_halve_the_budget_once_per_round_trip_and_successes_restore_it() {
        let now = Instant::now();
        let mut budget = budget(now);
        budget.finish(&[FAST], now);
        let failure = RequestSample {
            latency: Duration::from_millis(300),
            congested: true,
        };
        budget.start(now);
        budget.finish(&[failure, failure], now);
        assert_eq!(budget.stats().decreases, 1, "one cut per round trip");
        assert_eq!(budget.concurrency_limit(), 1);
        assert!((budget.stats().rate_per_second - 2.5).abs() < 1e-9);
        let mut at = now + Duration::from_secs(1);
        for _ in 0..20 {
            budget.finish(&[FAST], at);
            at += Duration::from_millis(100);
        }
        assert_eq!(budget.concurrency_limit(), 2);
        assert!((budget.stats().rate_per_second - 5.0).abs() < 1e-9);
    }

    #[test]
    fn a_slow_answer_cuts_the_budget_and_a_lasting_new_latency_becomes_the_baseline() {
        let now = Instant::now();
        let mut budget = budget(now);
        for _ in 0..5 {
            budget.finish(&[FAST], now);
        }
        let slow = RequestSample {
            latency: Duration::from_millis(600),
            congested: false,
        };
        budget.finish(&[slow], now);
        assert_eq!(budget.stats().decreases, 1);
        let mut at = now;
        for _ in 0..40 {
            at += Duration::from_secs(1);
            budget.finish(&[slow], at);
        }
        assert!(budget.expected_latency() > Duration::from_millis(400));
        assert_eq!(budget.concurrency_limit(), 2, "recovered at the new level");
    }

    #[test]
    fn the_minimum_gap_is_a_floor_between_starts() {
        let now = Instant::now();
        let limits = BudgetLimits {
            min_gap: Duration::from_millis(400),
            ..BudgetLimits::default()
        };
        let mut budget = RequestBudget::new(limits, now);
        budget.start(now);
        assert_eq!(
            budget.next_start(now, Carrying::Ordinary),
            Some(now + Duration::from_millis(400))
        );
    }

    #[test]
    fn an_urgent_request_takes_the_reserve_and_the_next_ordinary_one_pays_it_back() {
        let now = Instant::now();
        let mut budget = budget(now);
        budget.start(now);
        budget.start(now);
        assert!(
            !budget.may_start(now, Carrying::Ordinary),
            "both places taken"
        );
        assert!(
            budget.may_start(now, Carrying::Urgent),
            "an urgent status takes the reserve place"
        );
        budget.start(now);
        assert_eq!(budget.stats().urgent_reserve_starts, 1);
        assert_eq!(
            budget.next_start(now, Carrying::Urgent),
            None,
            "one reserve place only"
        );
        for _ in 0..3 {
            budget.finish(&[FAST], now);
        }
        // Two tokens spent and one borrowed: the next ordinary start waits for two refills
        // (2/5 s), the next urgent one for one.
        assert_eq!(
            budget.next_start(now, Carrying::Ordinary),
            Some(now + Duration::from_millis(400))
        );
        assert_eq!(
            budget.next_start(now, Carrying::Urgent),
            Some(now + Duration::from_millis(200))
        );
    }

    #[test]
    fn urgent_requests_alone_stay_within_the_start_rate() {
        let now = Instant::now();
        let mut budget = budget(now);
        let mut at = now;
        let mut started = 0;
        while at < now + Duration::from_secs(10) {
            if budget.may_start(at, Carrying::Urgent) {
                budget.start(at);
                budget.finish(&[FAST], at);
                started += 1;
            }
            at += Duration::from_millis(10);
        }
        // 5 per second for 10 s, plus the burst of two and the one token borrowed.
        assert!(started <= 53, "{started} urgent starts in 10 s");
        assert!(started >= 50, "{started} urgent starts in 10 s");
    }
}
