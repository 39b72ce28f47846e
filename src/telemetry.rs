//! Prometheus metrics (`GET /metrics`): request latency is observed as requests happen (in the
//! sink); everything else is read from the actors' own counters at scrape time, so the actors
//! keep one source of truth and the exposition stays consistent with `/health` and `/metrics/*`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use wasup_actors::{
    batch::{BatchStats, LaneStats},
    breaker::BreakerSnapshot,
    cache::CacheReport,
    dispatch::DispatchStats,
    registry::RegistryStats,
    sink::SinkStats,
};

use crate::core_actors::CoreRestartFigures;

/// Latency buckets for Laravel requests, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 45.0,
];

/// Every metric wasup exports.
pub struct Telemetry {
    registry: Registry,
    /// What each counter followed at the last scrape.
    followed: Followed,
    /// One scrape at a time, its snapshot read under the turn: an older snapshot rendered after
    /// a newer one would look like a restarted actor to [`Followed`].
    scrape_turn: tokio::sync::Mutex<()>,
    /// Core actors started afresh, by actor.
    core_restarts: IntCounterVec,
    /// Observed by the sink.
    pub laravel_latency: HistogramVec,
    sessions: IntGaugeVec,
    sessions_max: IntGauge,
    crashes: IntCounter,
    items: IntCounterVec,
    items_pending: IntGaugeVec,
    batches: IntCounterVec,
    laravel_requests: IntCounterVec,
    laravel_retries: IntCounter,
    breaker_state: IntGauge,
    breaker_opened: IntCounter,
    cache_lookups: IntCounterVec,
    cache_dropped: IntCounter,
    redis_up: IntGauge,
    redis_errors: IntCounter,
    outbox_unwritten: IntGauge,
    dead_letters: IntGauge,
    dead_letters_dropped: IntCounter,
    messages: IntCounterVec,
    messages_waiting: IntGauge,
    qr_renders: IntCounter,
    budget_in_flight_limit: IntGauge,
    budget_rate: prometheus::Gauge,
    budget_decreases: IntCounter,
    budget_urgent_reserve_starts: IntCounter,
}

/// Everything a scrape reads from the actors.
pub struct Snapshot {
    /// Sessions.
    pub registry: RegistryStats,
    /// Lanes and outbox.
    pub batch: BatchStats,
    /// Requests.
    pub sink: SinkStats,
    /// Breaker.
    pub breaker: BreakerSnapshot,
    /// Cache and Redis.
    pub cache: CacheReport,
    /// Outgoing messages.
    pub messages: DispatchStats,
    /// Core actor restarts.
    pub core_restarts: CoreRestartFigures,
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(Opts::new(name, help))
        .unwrap_or_else(|_| unreachable!("static metric options are valid"))
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|_| unreachable!("static metric options are valid"))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::with_opts(Opts::new(name, help))
        .unwrap_or_else(|_| unreachable!("static metric options are valid"))
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|_| unreachable!("static metric options are valid"))
}

/// The source values each counter last followed, by counter name and labels.
#[derive(Default)]
struct Followed(std::sync::Mutex<std::collections::HashMap<String, u64>>);

impl Followed {
    /// Moves `counter` on by what the actor's own count `value` grew since the last scrape.
    /// A count below the last one means the actor was restarted (its counts start again at
    /// zero): all of `value` is new (what the old actor counted after the last scrape is not).
    fn follow(&self, key: String, counter: &IntCounter, value: u64) {
        let mut followed = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let last = followed.entry(key).or_insert(0);
        let grown = value.checked_sub(*last).unwrap_or(value);
        *last = value;
        counter.inc_by(grown);
    }
}

impl Telemetry {
    /// Creates and registers every metric.
    pub fn new() -> anyhow::Result<Self> {
        let telemetry = Self {
            registry: Registry::new(),
            followed: Followed::default(),
            scrape_turn: tokio::sync::Mutex::new(()),
            core_restarts: counter_vec(
                "wasup_core_actor_restarts_total",
                "Core actors (batch, sink, cache, breaker) that stopped or panicked and were started afresh.",
                &["actor"],
            ),
            laravel_latency: HistogramVec::new(
                HistogramOpts::new(
                    "wasup_laravel_request_duration_seconds",
                    "Duration of requests to Laravel.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["lane"],
            )?,
            sessions: gauge_vec(
                "wasup_sessions",
                "Sessions on this node, by state.",
                &["state"],
            ),
            sessions_max: gauge("wasup_sessions_max", "The most sessions this node accepts."),
            crashes: counter(
                "wasup_session_crashes_total",
                "Session actors that crashed.",
            ),
            items: counter_vec(
                "wasup_items_total",
                "Items by lane and what became of them (received = sent + coalesced + dead_lettered + dropped + expired + pending).",
                &["lane", "outcome"],
            ),
            items_pending: gauge_vec(
                "wasup_items_pending",
                "Items waiting or in flight, by lane.",
                &["lane"],
            ),
            batches: counter_vec(
                "wasup_batches_total",
                "Batches handed to the Laravel sink, by lane.",
                &["lane"],
            ),
            laravel_requests: counter_vec(
                "wasup_laravel_requests_total",
                "Requests to Laravel by result.",
                &["result"],
            ),
            laravel_retries: counter(
                "wasup_laravel_retries_total",
                "Request retries after a retryable failure.",
            ),
            breaker_state: gauge(
                "wasup_breaker_state",
                "Circuit breaker: 0 closed, 1 half-open, 2 open.",
            ),
            breaker_opened: counter(
                "wasup_breaker_opened_total",
                "Times the circuit breaker opened.",
            ),
            cache_lookups: counter_vec(
                "wasup_cache_lookups_total",
                "is_session_active answers by tier.",
                &["tier"],
            ),
            cache_dropped: counter(
                "wasup_cache_dropped_updates_total",
                "Cache updates dropped on a full mailbox.",
            ),
            redis_up: gauge("wasup_redis_up", "1 when the last Redis call succeeded."),
            redis_errors: counter("wasup_redis_errors_total", "Failed Redis calls."),
            outbox_unwritten: gauge(
                "wasup_outbox_unwritten",
                "Outbox changes not yet written to Redis.",
            ),
            dead_letters: gauge(
                "wasup_dead_letters",
                "Items Laravel refused for good, held for GET /dead-letters and replay.",
            ),
            dead_letters_dropped: counter(
                "wasup_dead_letters_dropped_total",
                "Dead letters dropped (oldest first) to stay within batch.dead_letters_max(_bytes).",
            ),
            messages: counter_vec(
                "wasup_messages_total",
                "Outgoing text messages by outcome.",
                &["outcome"],
            ),
            messages_waiting: gauge(
                "wasup_messages_waiting",
                "Outgoing text messages waiting to be sent.",
            ),
            qr_renders: counter(
                "wasup_qr_renders_total",
                "QR codes rendered as PNG (each at most once).",
            ),
            budget_in_flight_limit: gauge(
                "wasup_laravel_budget_in_flight_limit",
                "Requests allowed at Laravel at once now (adaptive, at most laravel.max_in_flight).",
            ),
            budget_rate: prometheus::Gauge::new(
                "wasup_laravel_budget_requests_per_second",
                "Requests allowed to start per second now (adaptive, at most laravel.max_requests_per_second).",
            )?,
            budget_decreases: counter(
                "wasup_laravel_budget_decreases_total",
                "Times the request budget was cut because Laravel slowed down or failed.",
            ),
            budget_urgent_reserve_starts: counter(
                "wasup_laravel_budget_urgent_reserve_starts_total",
                "Requests carrying an urgent status that started on the budget's reserve.",
            ),
        };
        let registry = &telemetry.registry;
        registry.register(Box::new(telemetry.laravel_latency.clone()))?;
        registry.register(Box::new(telemetry.sessions.clone()))?;
        registry.register(Box::new(telemetry.sessions_max.clone()))?;
        registry.register(Box::new(telemetry.crashes.clone()))?;
        registry.register(Box::new(telemetry.core_restarts.clone()))?;
        registry.register(Box::new(telemetry.items.clone()))?;
        registry.register(Box::new(telemetry.items_pending.clone()))?;
        registry.register(Box::new(telemetry.batches.clone()))?;
        registry.register(Box::new(telemetry.laravel_requests.clone()))?;
        registry.register(Box::new(telemetry.laravel_retries.clone()))?;
        registry.register(Box::new(telemetry.breaker_state.clone()))?;
        registry.register(Box::new(telemetry.breaker_opened.clone()))?;
        registry.register(Box::new(telemetry.cache_lookups.clone()))?;
        registry.register(Box::new(telemetry.cache_dropped.clone()))?;
        registry.register(Box::new(telemetry.redis_up.clone()))?;
        registry.register(Box::new(telemetry.redis_errors.clone()))?;
        registry.register(Box::new(telemetry.outbox_unwritten.clone()))?;
        registry.register(Box::new(telemetry.dead_letters.clone()))?;
        registry.register(Box::new(telemetry.dead_letters_dropped.clone()))?;
        registry.register(Box::new(telemetry.messages.clone()))?;
        registry.register(Box::new(telemetry.messages_waiting.clone()))?;
        registry.register(Box::new(telemetry.qr_renders.clone()))?;
        registry.register(Box::new(telemetry.budget_in_flight_limit.clone()))?;
        registry.register(Box::new(telemetry.budget_rate.clone()))?;
        registry.register(Box::new(telemetry.budget_decreases.clone()))?;
        registry.register(Box::new(telemetry.budget_urgent_reserve_starts.clone()))?;
        Ok(telemetry)
    }

    /// Reads a snapshot with `read` and renders it, one scrape at a time.
    pub async fn scrape<E>(
        &self,
        read: impl Future<Output = Result<Snapshot, E>>,
    ) -> Result<String, E> {
        let _turn = self.scrape_turn.lock().await;
        Ok(self.render(&read.await?))
    }

    /// Brings every metric up to date with `snapshot` and renders the text exposition format.
    fn render(&self, snapshot: &Snapshot) -> String {
        self.sessions.reset();
        for (state, count) in &snapshot.registry.by_state {
            self.sessions
                .with_label_values(&[state])
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
        self.sessions_max
            .set(i64::try_from(snapshot.registry.max_active).unwrap_or(i64::MAX));
        self.follow("crashes", &self.crashes, snapshot.registry.crashes);
        let restarts = snapshot.core_restarts;
        for (actor, value) in [
            ("batch", restarts.batch),
            ("sink", restarts.sink),
            ("cache", restarts.cache),
            ("breaker", restarts.breaker),
        ] {
            self.follow_labelled("core_restarts", &self.core_restarts, &[actor], value);
        }
        for (lane, stats) in [
            ("qr", &snapshot.batch.qr),
            ("status", &snapshot.batch.status),
            ("message", &snapshot.batch.message),
        ] {
            self.lane(lane, stats);
        }
        let budget = &snapshot.batch.budget;
        self.budget_in_flight_limit
            .set(i64::try_from(budget.concurrency_limit).unwrap_or(i64::MAX));
        self.budget_rate.set(budget.rate_per_second);
        self.follow("budget_decreases", &self.budget_decreases, budget.decreases);
        self.follow(
            "budget_urgent_reserve_starts",
            &self.budget_urgent_reserve_starts,
            budget.urgent_reserve_starts,
        );
        self.follow(
            "qr_renders",
            &self.qr_renders,
            wasup_actors::qr_image::renders_total(),
        );
        let sink = &snapshot.sink;
        for (result, value) in [
            ("stored", sink.stored),
            ("retryable_failure", sink.retryable_failures),
            ("rejected", sink.rejected),
        ] {
            self.follow_labelled("laravel_requests", &self.laravel_requests, &[result], value);
        }
        self.follow("laravel_retries", &self.laravel_retries, sink.retries);
        self.breaker_state.set(match snapshot.breaker.state {
            "CLOSED" => 0,
            "HALF_OPEN" => 1,
            _ => 2,
        });
        self.follow(
            "breaker_opened",
            &self.breaker_opened,
            snapshot.breaker.times_opened,
        );
        let cache = &snapshot.cache.counters;
        for (tier, value) in [
            ("local_hit", cache.local_hits),
            ("local_miss", cache.local_misses),
            ("redis_hit", cache.redis_hits),
            ("redis_miss", cache.redis_misses),
            ("laravel", cache.laravel_hits),
            ("fail_safe", cache.fail_safe),
        ] {
            self.follow_labelled("cache_lookups", &self.cache_lookups, &[tier], value);
        }
        self.follow(
            "cache_dropped",
            &self.cache_dropped,
            snapshot.cache.dropped_updates,
        );
        if let Some(redis) = &snapshot.cache.redis {
            self.redis_up.set(i64::from(redis.state == "up"));
            self.follow("redis_errors", &self.redis_errors, redis.errors);
        }
        let unwritten = snapshot
            .batch
            .outbox
            .as_ref()
            .map_or(0, |outbox| outbox.unwritten);
        self.outbox_unwritten
            .set(i64::try_from(unwritten).unwrap_or(i64::MAX));
        let dead_letters = &snapshot.batch.dead_letters;
        self.dead_letters
            .set(i64::try_from(dead_letters.held).unwrap_or(i64::MAX));
        self.follow(
            "dead_letters_dropped",
            &self.dead_letters_dropped,
            dead_letters.dropped,
        );
        let messages = &snapshot.messages;
        for (outcome, value) in [
            ("sent", messages.completed),
            ("failed", messages.failed),
            ("retried", messages.retries),
            ("refused", messages.refused),
        ] {
            self.follow_labelled("messages", &self.messages, &[outcome], value);
        }
        self.messages_waiting
            .set(i64::try_from(messages.waiting).unwrap_or(i64::MAX));
        let mut text = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut text);
        String::from_utf8(text).unwrap_or_default()
    }

    fn follow(&self, name: &str, counter: &IntCounter, value: u64) {
        self.followed.follow(name.to_string(), counter, value);
    }

    fn follow_labelled(&self, name: &str, counters: &IntCounterVec, labels: &[&str], value: u64) {
        let key = format!("{name}{{{}}}", labels.join(","));
        self.followed
            .follow(key, &counters.with_label_values(labels), value);
    }

    fn lane(&self, lane: &str, stats: &LaneStats) {
        let counters = &stats.counters;
        for (outcome, value) in [
            ("received", counters.received),
            ("sent", counters.sent),
            ("coalesced", counters.coalesced),
            ("dead_lettered", counters.dead_lettered),
            ("dropped", counters.dropped),
            ("expired", counters.expired),
            ("retried", counters.retried),
            ("recovered", counters.recovered),
        ] {
            self.follow_labelled("items", &self.items, &[lane, outcome], value);
        }
        self.follow_labelled("batches", &self.batches, &[lane], counters.batches);
        self.items_pending
            .with_label_values(&[lane])
            .set(i64::try_from(stats.pending).unwrap_or(i64::MAX));
    }
}
