//! One `Deliver`'s journey to Laravel: breaker permits, attempts with retries, a batch Laravel
//! refuses as a whole narrowed down to the refused items, and what became of every item.

use std::{cell::RefCell, rc::Rc, time::Instant};

use slog::{Logger, debug, warn};

use super::{
    SinkConfig,
    actor::{CORE_ACTOR_GONE_WAIT, Deliver, DeliveryOutcome, Refused, SinkStats},
    failed_ids::FailedIds,
    narrowing::narrowing_budget,
    request::{
        AttemptResult, Contract, classify, parse_retry_after, request_for, request_signature,
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

/// One request's journey: permits, attempts, retries.
pub(super) struct Delivery {
    /// Timeouts, retries, URLs, credentials.
    pub(super) config: Rc<SinkConfig>,
    /// The sink's HTTP client (its connection pool).
    pub(super) client: awc::Client,
    /// Asked for a permit before each attempt, told each result.
    pub(super) breaker: CoreAddr<CircuitBreaker>,
    /// The sink's counters.
    pub(super) stats: Rc<RefCell<SinkStats>>,
    /// Request durations, by lane.
    pub(super) latency: Option<prometheus::HistogramVec>,
    /// How each attempt went, for the request budget.
    pub(super) samples: RefCell<Vec<RequestSample>>,
    /// Logger.
    pub(super) log: Logger,
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
    pub(super) async fn run(self, Deliver { items }: Deliver) -> DeliveryOutcome {
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
