//! The `LaravelSink` actor: one `Deliver` per batch, answered with what became of each item (the
//! journey itself is in `delivery`).

use std::{cell::RefCell, rc::Rc, time::Duration};

use actix::prelude::*;
use serde::Serialize;
use slog::Logger;

use super::{SinkConfig, delivery::Delivery};
use crate::{
    batch::RequestSample, breaker::CircuitBreaker, messages::OutboundItem, supervision::CoreAddr,
};

/// Wait suggested to the queue when a core actor on the way is gone (the breaker while it is
/// restarted, the sink itself): the lanes take the items back and try again after it.
pub const CORE_ACTOR_GONE_WAIT: Duration = Duration::from_secs(1);

/// Delivers one request's items: one lane's batch (split contract), or a batch of every due
/// lane (combined). Items hold at most one entry per session and lane.
#[derive(Message, Debug)]
#[rtype(result = "DeliveryOutcome")]
pub struct Deliver {
    /// The items; each knows its lane.
    pub items: Vec<OutboundItem>,
}

/// An item Laravel refused for good, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Refused {
    /// The item.
    pub item: OutboundItem,
    /// Laravel's status code (200 when it refused the item inside an accepted batch; 0 when the
    /// item never left, e.g. it could not be serialised).
    pub status: u16,
    /// Laravel's reason (never the item's content).
    pub reason: String,
}

/// What became of a batch's items. Every item lands in exactly one list.
#[derive(Debug, Default)]
pub struct DeliveryOutcome {
    /// Acknowledged by Laravel.
    pub delivered: Vec<OutboundItem>,
    /// Not delivered yet: the queue takes them back (latest wins) and tries later.
    pub deferred: Vec<OutboundItem>,
    /// Refused for good (a 4xx for the item alone, or listed in `rejected`): dead letters.
    pub dead_lettered: Vec<Refused>,
    /// How long the lane should wait before its next batch, when the sink knows.
    pub retry_after: Option<Duration>,
    /// Every attempt that reached Laravel (or failed on the way): the request budget adapts to them.
    pub samples: Vec<RequestSample>,
    /// Laravel answered 413 at least once: batches should be smaller.
    pub too_large: bool,
}

impl DeliveryOutcome {
    /// Adds `other`'s items and samples to this outcome.
    pub(super) fn absorb(&mut self, other: DeliveryOutcome) {
        self.delivered.extend(other.delivered);
        self.deferred.extend(other.deferred);
        self.dead_lettered.extend(other.dead_lettered);
        self.retry_after = self.retry_after.max(other.retry_after);
        self.samples.extend(other.samples);
        self.too_large |= other.too_large;
    }

    /// The part of this outcome about `lane`'s items (the samples stay with the whole).
    pub fn for_lane(&mut self, lane: crate::messages::Lane) -> DeliveryOutcome {
        fn take<T>(items: &mut Vec<T>, of_lane: impl Fn(&T) -> bool) -> Vec<T> {
            let (taken, rest) = std::mem::take(items).into_iter().partition(of_lane);
            *items = rest;
            taken
        }
        let in_lane = |item: &OutboundItem| item.lane() == lane;
        DeliveryOutcome {
            delivered: take(&mut self.delivered, in_lane),
            deferred: take(&mut self.deferred, in_lane),
            dead_lettered: take(&mut self.dead_lettered, |refused: &Refused| {
                in_lane(&refused.item)
            }),
            retry_after: self.retry_after,
            samples: Vec::new(),
            too_large: self.too_large,
        }
    }

    /// Every item deferred, to be tried again after `retry_after`.
    pub fn defer_all(items: Vec<OutboundItem>, retry_after: Duration) -> Self {
        Self {
            deferred: items,
            retry_after: Some(retry_after),
            ..Self::default()
        }
    }
}

/// Counters for `/metrics/batch`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SinkStats {
    /// HTTP requests sent.
    pub requests: u64,
    /// Requests Laravel answered with 2xx.
    pub stored: u64,
    /// Requests that failed in a retryable way.
    pub retryable_failures: u64,
    /// Requests refused with a non-retryable 4xx.
    pub rejected: u64,
    /// Retries slept for.
    pub retries: u64,
    /// Batches handed back to the queue (breaker open, retries used up, partial failure).
    pub batches_deferred: u64,
    /// Items Laravel listed in `failed_ids`.
    pub items_failed_by_laravel: u64,
    /// Attempts in a row that failed to reach Laravel or got a failure answer (network error,
    /// timeout, 5xx, 408, 429, 401/403); zero once Laravel answers. `/health` reads it.
    pub consecutive_failures: u64,
    /// Duration of the last request, in milliseconds.
    pub last_latency_ms: Option<u64>,
    /// The last failure, for operators.
    pub last_error: Option<String>,
}

/// Drains batches to Laravel.
pub struct LaravelSink {
    /// Endpoint, auth, timeouts, retries, contract.
    config: Rc<SinkConfig>,
    /// Keep-alive HTTP client (lives on this actor's arbiter).
    client: awc::Client,
    /// Asked before each request, told after.
    breaker: CoreAddr<CircuitBreaker>,
    /// Shared with running deliveries.
    stats: Rc<RefCell<SinkStats>>,
    /// Request durations by lane, for Prometheus.
    latency: Option<prometheus::HistogramVec>,
    /// Where delivery problems are logged.
    log: Logger,
}

impl LaravelSink {
    /// Records each request's duration (labelled by lane) in `histogram`.
    pub fn with_latency_histogram(mut self, histogram: prometheus::HistogramVec) -> Self {
        self.latency = Some(histogram);
        self
    }

    /// A sink; call on the arbiter it will run on (the HTTP client is thread-local).
    pub fn new(
        config: SinkConfig,
        breaker: impl Into<CoreAddr<CircuitBreaker>>,
        log: Logger,
    ) -> Self {
        // HTTPS to Laravel uses rustls with ring; make it the process default once, so TLS
        // works whichever other rustls users (and their providers) share the process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let connector = awc::Connector::new()
            .limit(config.max_connections)
            .conn_keep_alive(config.keep_alive)
            .timeout(config.timeout.min(Duration::from_secs(10)));
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(config.timeout)
            .disable_redirects()
            .finish();
        Self {
            config: Rc::new(config),
            client,
            breaker: breaker.into(),
            stats: Rc::default(),
            latency: None,
            log,
        }
    }

    fn delivery(&self) -> Delivery {
        Delivery {
            config: Rc::clone(&self.config),
            client: self.client.clone(),
            breaker: self.breaker.clone(),
            stats: Rc::clone(&self.stats),
            latency: self.latency.clone(),
            samples: RefCell::default(),
            log: self.log.clone(),
        }
    }
}

impl Actor for LaravelSink {
    type Context = Context<Self>;
}

impl Handler<Deliver> for LaravelSink {
    type Result = ResponseFuture<DeliveryOutcome>;

    fn handle(&mut self, deliver: Deliver, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.delivery().run(deliver))
    }
}

/// Reads the sink's counters.
#[derive(Message, Debug)]
#[rtype(result = "SinkStats")]
pub struct GetSinkStats;

impl Handler<GetSinkStats> for LaravelSink {
    type Result = MessageResult<GetSinkStats>;

    fn handle(&mut self, _: GetSinkStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats.borrow().clone())
    }
}
