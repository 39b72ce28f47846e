//! The `LaravelSink` actor: one `Deliver` per batch, answered with what became of each item.

use std::{
    cell::RefCell,
    rc::Rc,
    time::{Duration, Instant},
};

use actix::prelude::*;
use serde::Serialize;
use slog::{Logger, debug, warn};

use super::{
    SinkConfig,
    narrowing::narrowing_budget,
    request::{
        AttemptResult, Contract, FailedIds, classify, parse_retry_after, request_for,
        request_signature,
    },
    retry::backoff_delay,
};
use crate::{
    batch::RequestSample,
    breaker::{AcquirePermit, CircuitBreaker, Permit, RecordOutcome},
    messages::{OutboundItem, unix_millis},
    supervision::CoreAddr,
};

/// Largest answer body read from Laravel.
const MAX_ANSWER_BYTES: usize = 1 << 20;
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

/// How one part of a batch ended.
enum Chunk {
    /// Settled (delivered, deferred or dead-lettered).
    Done(DeliveryOutcome),
    /// Laravel refused it as a whole (400, 413, 422): split and try again, down to single items.
    Refused {
        /// The part.
        items: Vec<OutboundItem>,
        /// The status code.
        status: u16,
        /// Laravel's reason.
        reason: String,
    },
}

/// Every item of `items` refused with `status` and `reason`.
fn refused_all(items: Vec<OutboundItem>, status: u16, reason: &str) -> Vec<Refused> {
    items
        .into_iter()
        .map(|item| Refused {
            item,
            status,
            reason: reason.to_string(),
        })
        .collect()
}

impl DeliveryOutcome {
    fn absorb(&mut self, other: DeliveryOutcome) {
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

/// One request's journey: permits, attempts, retries.
struct Delivery {
    config: Rc<SinkConfig>,
    client: awc::Client,
    breaker: CoreAddr<CircuitBreaker>,
    stats: Rc<RefCell<SinkStats>>,
    latency: Option<prometheus::HistogramVec>,
    /// How each attempt went, for the request budget.
    samples: RefCell<Vec<RequestSample>>,
    log: Logger,
}

/// What logs and metrics call a request: its lane, or `combined`.
fn request_label(items: &[OutboundItem], contract: Contract) -> &'static str {
    match (contract, items.first()) {
        (Contract::Split, Some(item)) => item.lane().name(),
        (Contract::Split, None) => "none",
        (Contract::Combined, _) => "combined",
    }
}

impl Delivery {
    /// Delivers a batch; a batch Laravel refuses as a whole (400, 413, 422) is split in halves,
    /// down to single items, so one bad or oversized item cannot cost the others.
    async fn run(self, Deliver { items }: Deliver) -> DeliveryOutcome {
        let lane = request_label(&items, self.config.contract);
        let mut outcome = if self.config.single_item_calls {
            self.run_single_items(lane, items).await
        } else {
            self.run_batches(lane, items).await
        };
        outcome.samples = self.samples.take();
        outcome
    }

    async fn run_batches(&self, lane: &'static str, items: Vec<OutboundItem>) -> DeliveryOutcome {
        let mut outcome = DeliveryOutcome::default();
        // Past the budget, what is still refused is dead-lettered as it stands.
        let batch_size = items.len();
        let (mut splits, mut accepted_a_part) = (0usize, false);
        let mut chunks = vec![items];
        while let Some(chunk) = chunks.pop() {
            if outcome.retry_after.is_some() {
                // An earlier part was deferred (breaker open, retries used up): the rest waits too.
                outcome.deferred.extend(chunk);
                continue;
            }
            match self.deliver_chunk(lane, chunk).await {
                Chunk::Done(done) => {
                    accepted_a_part |= !done.delivered.is_empty();
                    outcome.absorb(done);
                }
                Chunk::Refused {
                    mut items, status, ..
                } if items.len() > 1 && splits < narrowing_budget(batch_size, accepted_a_part) => {
                    splits += 1;
                    outcome.too_large |= status == 413;
                    debug!(self.log, "Laravel refused a batch; splitting it to find the refused items.";
                        "lane" => lane, "status" => status, "items" => items.len());
                    let second_half = items.split_off(items.len() / 2);
                    chunks.push(second_half);
                    chunks.push(items);
                }
                Chunk::Refused {
                    items,
                    status,
                    reason,
                } => {
                    outcome.too_large |= status == 413;
                    warn!(self.log, "Laravel refused an item; dead-lettered.";
                        "lane" => lane, "status" => status, "reason" => &reason);
                    self.stats.borrow_mut().rejected += 1;
                    outcome
                        .dead_lettered
                        .extend(refused_all(items, status, &reason));
                }
            }
        }
        outcome
    }

    /// Legacy single-item calls: one request per item, all at once (as an unbatched service
    /// would send them); an item refused (400, 413, 422) is dead-lettered.
    async fn run_single_items(
        &self,
        lane: &'static str,
        items: Vec<OutboundItem>,
    ) -> DeliveryOutcome {
        let attempts = items
            .into_iter()
            .map(|item| self.deliver_chunk(lane, vec![item]));
        let mut outcome = DeliveryOutcome::default();
        for chunk in futures_util::future::join_all(attempts).await {
            match chunk {
                Chunk::Done(done) => outcome.absorb(done),
                Chunk::Refused {
                    items,
                    status,
                    reason,
                } => {
                    self.stats.borrow_mut().rejected += 1;
                    outcome
                        .dead_lettered
                        .extend(refused_all(items, status, &reason));
                }
            }
        }
        outcome
    }

    async fn deliver_chunk(&self, lane: &'static str, items: Vec<OutboundItem>) -> Chunk {
        let idempotency_key = uuid::Uuid::new_v4().to_string();
        let (path, body) = request_for(&items, self.config.contract, self.config.single_item_calls);
        let body = match serde_json::to_vec(&body) {
            Ok(body) => body,
            Err(error) => {
                warn!(self.log, "Batch could not be serialised; dead-lettered."; "lane" => lane, "error" => %error);
                return Chunk::Done(DeliveryOutcome {
                    dead_lettered: refused_all(items, 0, &format!("not serialisable: {error}")),
                    ..DeliveryOutcome::default()
                });
            }
        };
        let url = self.config.url(path);
        let mut attempt = 0u32;
        loop {
            match self.breaker.send(AcquirePermit).await {
                Ok(Permit::Granted) => {}
                Ok(Permit::Denied { retry_after }) => {
                    self.stats.borrow_mut().batches_deferred += 1;
                    return Chunk::Done(DeliveryOutcome::defer_all(items, retry_after));
                }
                Err(_) => {
                    return Chunk::Done(DeliveryOutcome::defer_all(items, CORE_ACTOR_GONE_WAIT));
                }
            }
            let result = self
                .post(lane, &url, &idempotency_key, attempt, &body)
                .await;
            let breaker_failure = matches!(
                result,
                AttemptResult::Retry {
                    breaker_failure: true,
                    ..
                }
            );
            self.breaker.do_send(RecordOutcome {
                success: !breaker_failure,
            });
            match result {
                AttemptResult::Stored { failed_ids } => {
                    return Chunk::Done(self.stored(lane, items, &failed_ids));
                }
                AttemptResult::Refused { status, reason } => {
                    return Chunk::Refused {
                        items,
                        status,
                        reason,
                    };
                }
                AttemptResult::Rejected { status, reason } => {
                    warn!(self.log, "Laravel refused a batch; dead-lettered.";
                        "lane" => lane, "status" => status, "items" => items.len(),
                        "idempotency_key" => &idempotency_key);
                    let mut stats = self.stats.borrow_mut();
                    stats.rejected += 1;
                    stats.last_error = Some(format!("{reason} (dead-lettered)"));
                    return Chunk::Done(DeliveryOutcome {
                        dead_lettered: refused_all(items, status, &reason),
                        ..DeliveryOutcome::default()
                    });
                }
                AttemptResult::Retry {
                    reason,
                    retry_after,
                    ..
                } => {
                    let delay =
                        backoff_delay(self.config.backoff_base, self.config.backoff_max, attempt)
                            .max(retry_after.unwrap_or_default());
                    {
                        let mut stats = self.stats.borrow_mut();
                        stats.retryable_failures += 1;
                        stats.last_error = Some(reason.clone());
                    }
                    if attempt >= self.config.retries {
                        warn!(self.log, "Batch not delivered after its retries; back in the queue.";
                            "lane" => lane, "items" => items.len(), "reason" => &reason);
                        self.stats.borrow_mut().batches_deferred += 1;
                        return Chunk::Done(DeliveryOutcome::defer_all(items, delay));
                    }
                    debug!(self.log, "Batch delivery failed; retrying.";
                        "lane" => lane, "attempt" => attempt, "reason" => &reason, "delay" => ?delay);
                    self.stats.borrow_mut().retries += 1;
                    actix_rt::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    fn stored(
        &self,
        lane: &'static str,
        items: Vec<OutboundItem>,
        failed_ids: &FailedIds,
    ) -> DeliveryOutcome {
        let mut dead_lettered = Vec::new();
        let mut deferred = Vec::new();
        let mut delivered = Vec::new();
        for item in items {
            if let Some(reason) = failed_ids.rejection(&item) {
                dead_lettered.push(Refused {
                    reason: reason.to_string(),
                    status: 200,
                    item,
                });
            } else if failed_ids.contains(&item) {
                deferred.push(item);
            } else {
                delivered.push(item);
            }
        }
        let mut stats = self.stats.borrow_mut();
        stats.stored += 1;
        if !dead_lettered.is_empty() {
            stats.rejected += 1;
            warn!(self.log, "Laravel refused some items of a batch; dead-lettered."; "lane" => lane, "refused" => dead_lettered.len());
        }
        if !deferred.is_empty() {
            stats.items_failed_by_laravel += deferred.len() as u64;
            stats.batches_deferred += 1;
            debug!(self.log, "Laravel could not store some items; retrying them."; "lane" => lane, "failed" => deferred.len());
        }
        DeliveryOutcome {
            delivered,
            deferred,
            dead_lettered,
            ..DeliveryOutcome::default()
        }
    }

    async fn post(
        &self,
        lane: &'static str,
        url: &str,
        idempotency_key: &str,
        attempt: u32,
        body: &[u8],
    ) -> AttemptResult {
        let mut request = self
            .client
            .post(url)
            .insert_header(("Idempotency-Key", idempotency_key))
            .insert_header(("X-Wasup-Attempt", attempt.to_string()))
            .content_type("application/json");
        if !self.config.token.is_empty() {
            request = request.bearer_auth(&self.config.token);
        }
        if !self.config.signing_secret.is_empty() {
            let timestamp = unix_millis() / 1000;
            request = request
                .insert_header(("X-Wasup-Timestamp", timestamp.to_string()))
                .insert_header((
                    "X-Wasup-Signature",
                    request_signature(
                        &self.config.signing_secret,
                        timestamp,
                        idempotency_key,
                        body,
                    ),
                ));
        }
        let started = Instant::now();
        self.stats.borrow_mut().requests += 1;
        let result = match request.send_body(body.to_vec()).await {
            Err(error) => AttemptResult::Retry {
                reason: format!("request failed: {error}"),
                retry_after: None,
                breaker_failure: true,
            },
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after = parse_retry_after(
                    response
                        .headers()
                        .get("retry-after")
                        .and_then(|value| value.to_str().ok()),
                );
                let answer = response.body().limit(MAX_ANSWER_BYTES).await;
                match answer {
                    Ok(answer) => classify(status, retry_after, &answer),
                    Err(error) if (200..300).contains(&status) => AttemptResult::Retry {
                        reason: format!("answer body unreadable: {error}"),
                        retry_after: None,
                        breaker_failure: true,
                    },
                    Err(_) => classify(status, retry_after, b""),
                }
            }
        };
        if let Some(latency) = &self.latency {
            latency
                .with_label_values(&[lane])
                .observe(started.elapsed().as_secs_f64());
        }
        let failed = matches!(
            result,
            AttemptResult::Retry {
                breaker_failure: true,
                ..
            }
        );
        {
            let mut stats = self.stats.borrow_mut();
            stats.consecutive_failures = if failed {
                stats.consecutive_failures + 1
            } else {
                0
            };
        }
        self.samples.borrow_mut().push(RequestSample {
            latency: started.elapsed(),
            congested: failed,
        });
        self.stats.borrow_mut().last_latency_ms =
            Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        result
    }
}
