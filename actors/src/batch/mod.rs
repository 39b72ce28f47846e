//! `BatchActor`: coalesces QR and status events per session and hands batches to the sink.
//!
//! Three lanes (qr, status, message), each a [`LaneQueue`]; messages are never coalesced (each
//! is its own item, delivered at least once, in arrival order, waiting `status_interval`). A lane flushes when it holds `max_items`, when
//! its earliest item is due (QR: `interval`; normal status: `status_interval`; urgent status:
//! `priority_delay / 2`), or when draining for shutdown. One batch per lane is at the sink at a
//! time. Requests are spaced by the pacing gap and take their items when the slot comes (so
//! batches fill up meanwhile), the fuller lane first; a batch with an urgent status skips the
//! gap without taking a slot, and urgent items are picked first for their batch. A status
//! other than `pending` withdraws the session's waiting QR: once connected or closed, it is stale.

mod config;
mod lane;
mod outbox;

use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;
use slog::{Logger, info, warn};
use tokio::sync::oneshot;

pub use config::BatchConfig;
pub use lane::{LaneCounters, LaneQueue, LaneStats, Pushed, Settled};
pub use outbox::{DurableOutbox, StoredItem};

use crate::{
    messages::{
        EstadoQr, Lane, MessageReceived, OutboundItem, Payload, QrCode, StatusChanged, Urgency,
    },
    sink::{Deliver, DeliveryOutcome, LaravelSink},
    store::{drive_writes, next_seq},
};

/// What a waiter waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Awaited {
    /// Both lanes empty and the outbox written ([`Drain`]).
    Drained,
    /// The outbox written ([`FlushOutbox`]).
    Persisted,
}

/// The batching actor.
pub struct BatchActor {
    /// Sizes and cadences.
    config: BatchConfig,
    /// Indexed by [`Lane::index`].
    lanes: [LaneQueue; 3],
    /// Where batches go.
    sink: Addr<LaravelSink>,
    /// The Redis copy of every undelivered item; `None` when Redis is disabled.
    outbox: Option<DurableOutbox>,
    /// The pending wake-up and when it fires; replaced when something is due sooner.
    wake: Option<(Instant, SpawnHandle)>,
    /// Minimum gap between the starts of two requests (`laravel.min_request_gap`).
    pacing: Duration,
    /// When the next non-urgent request may start.
    next_request_at: Instant,
    /// Set by [`Drain`]: every lane flushes regardless of due times.
    draining: bool,
    /// Answered once what they wait for holds.
    waiters: Vec<(Awaited, oneshot::Sender<()>)>,
    /// Where overflow, drains and Redis trouble are logged.
    log: Logger,
}

impl BatchActor {
    /// A batch actor sending to `sink`, keeping a durable copy in `outbox` when given.
    pub fn new(
        config: BatchConfig,
        sink: Addr<LaravelSink>,
        outbox: Option<DurableOutbox>,
        log: Logger,
    ) -> Self {
        Self {
            config,
            lanes: Lane::ALL.map(LaneQueue::new),
            sink,
            outbox,
            pacing: Duration::ZERO,
            next_request_at: Instant::now(),
            wake: None,
            draining: false,
            waiters: Vec::new(),
            log,
        }
    }

    /// Spaces requests to Laravel by at least `gap` (urgent statuses excepted).
    pub fn with_pacing(mut self, gap: Duration) -> Self {
        self.pacing = gap;
        self
    }

    fn accept(
        &mut self,
        item: OutboundItem,
        delay: Duration,
        urgent: bool,
        ctx: &mut Context<Self>,
    ) {
        let seq = next_seq();
        if let Some(outbox) = &mut self.outbox {
            outbox.record(&item, seq);
        }
        let lane = item.lane();
        let pushed = self.lanes[lane.index()].push(
            item,
            seq,
            Instant::now() + delay,
            urgent,
            self.config.max_pending,
        );
        self.after_push(lane, pushed);
        self.persist(ctx);
        self.pump(ctx);
    }

    fn after_push(&mut self, lane: Lane, pushed: Pushed) {
        if let Pushed::DroppedOldest { key, seq } = pushed {
            warn!(self.log, "Batch lane over max_pending: oldest item dropped."; "lane" => lane.name());
            self.forget(lane, &key, seq);
        }
    }

    fn forget(&mut self, lane: Lane, key: &str, seq: u64) {
        if let Some(outbox) = &mut self.outbox {
            outbox.forget(lane, key, seq);
        }
    }

    /// Sends every ready lane's batch, then sets the next wake-up.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        // The fuller lane takes the next pacing slot; an urgent status skips the gap without
        // taking a slot, so urgent traffic cannot starve the QR lane.
        let mut order = Lane::ALL;
        order.sort_by_key(|lane| std::cmp::Reverse(self.lanes[lane.index()].pending()));
        // Messages wait for what an earlier run left in the outbox, so they stay in order.
        let recovering = self.outbox.as_ref().is_some_and(|outbox| !outbox.recovered);
        for lane in order {
            let queue = &self.lanes[lane.index()];
            if !queue.is_ready(now, self.config.max_items, self.draining)
                || (lane == Lane::Message && recovering)
            {
                continue;
            }
            if now >= self.next_request_at {
                self.next_request_at = now + self.pacing;
            } else if !queue.has_urgent() {
                continue;
            }
            {
                let items = self.lanes[lane.index()].take_batch(self.config.max_items);
                self.sink
                    .send(Deliver { lane, items })
                    .into_actor(self)
                    .map(move |answer, actor, ctx| {
                        let outcome = answer.unwrap_or_else(|_| DeliveryOutcome::default());
                        actor.settle(lane, outcome, ctx);
                    })
                    .spawn(ctx);
            }
        }
        self.schedule_wake(ctx);
        self.answer_waiters();
    }

    fn settle(&mut self, lane: Lane, outcome: DeliveryOutcome, ctx: &mut Context<Self>) {
        let retry_base = match lane {
            Lane::Qr => self.config.interval,
            Lane::Status | Lane::Message => self.config.status_interval,
        };
        let settled = self.lanes[lane.index()].settle(
            outcome,
            Instant::now(),
            retry_base,
            self.config.retry_backoff_max,
        );
        for (key, seq) in settled {
            self.forget(lane, &key, seq);
        }
        self.persist(ctx);
        self.pump(ctx);
    }

    /// Writes the outbox journal to Redis, one write at a time; retries with backoff on failure.
    fn persist(&mut self, ctx: &mut Context<Self>) {
        drive_writes(
            self,
            ctx,
            |actor| actor.outbox.as_mut().map(|outbox| &mut outbox.queue),
            |actor, _, error| {
                if let (Some(error), Some(outbox)) = (error, &actor.outbox) {
                    let failures = outbox.queue.failed_writes;
                    if failures.is_power_of_two() {
                        warn!(actor.log, "Outbox write to Redis failed; retrying.";
                            "error" => %error, "failed_writes" => failures, "unwritten" => outbox.queue.unwritten());
                    }
                }
                actor.answer_waiters();
            },
        );
    }

    /// Loads what an earlier run left in the outbox; retries until Redis answers.
    fn recover(&mut self, ctx: &mut Context<Self>) {
        let Some(outbox) = &self.outbox else { return };
        if outbox.recovered {
            return;
        }
        outbox
            .load()
            .into_actor(self)
            .map(|loaded, actor, ctx| match loaded {
                Ok(items) => {
                    let count = items.len();
                    let now = Instant::now();
                    for StoredItem { lane, seq, item } in items {
                        let pushed = actor.lanes[lane.index()].push_recovered(item, seq, now, actor.config.max_pending);
                        actor.after_push(lane, pushed);
                    }
                    if let Some(outbox) = actor.outbox.as_mut() {
                        outbox.recovered = true;
                    }
                    if count > 0 {
                        info!(actor.log, "Undelivered items recovered from the outbox."; "items" => count);
                    }
                    actor.pump(ctx);
                }
                Err(error) => {
                    warn!(actor.log, "Outbox not readable yet; retrying."; "error" => %error);
                    ctx.run_later(RECOVERY_RETRY, Self::recover);
                }
            })
            .spawn(ctx);
    }

    fn schedule_wake(&mut self, ctx: &mut Context<Self>) {
        let next = self
            .lanes
            .iter()
            .filter_map(|lane| {
                let wake = lane.next_wake(self.config.max_items, self.draining)?;
                Some(if lane.has_urgent() {
                    wake
                } else {
                    wake.max(self.next_request_at)
                })
            })
            .min();
        let Some(next) = next else { return };
        if let Some((at, handle)) = self.wake {
            if at <= next {
                return;
            }
            ctx.cancel_future(handle);
        }
        let handle = ctx.run_later(
            next.saturating_duration_since(Instant::now()),
            |actor, ctx| {
                actor.wake = None;
                actor.pump(ctx);
            },
        );
        self.wake = Some((next, handle));
    }

    fn unwritten(&self) -> usize {
        self.outbox
            .as_ref()
            .map_or(0, |outbox| outbox.queue.unwritten())
    }

    fn answer_waiters(&mut self) {
        let persisted = self.unwritten() == 0;
        let drained = persisted && self.draining && self.lanes.iter().all(LaneQueue::is_idle);
        let mut index = 0;
        while index < self.waiters.len() {
            let done = match self.waiters[index].0 {
                Awaited::Drained => drained,
                Awaited::Persisted => persisted,
            };
            if done {
                let (_, waiter) = self.waiters.swap_remove(index);
                let _ = waiter.send(());
            } else {
                index += 1;
            }
        }
    }

    fn wait_for(&mut self, awaited: Awaited) -> ResponseFuture<()> {
        let (sender, receiver) = oneshot::channel();
        self.waiters.push((awaited, sender));
        Box::pin(async move {
            let _ = receiver.await;
        })
    }

    fn stats(&self) -> BatchStats {
        let now = Instant::now();
        BatchStats {
            qr: self.lanes[Lane::Qr.index()].stats(now),
            status: self.lanes[Lane::Status.index()].stats(now),
            message: self.lanes[Lane::Message.index()].stats(now),
            draining: self.draining,
            max_items: self.config.max_items,
            outbox: self.outbox.as_ref().map(|outbox| OutboxStats {
                unwritten: outbox.queue.unwritten(),
                written: outbox.queue.written,
                failed_writes: outbox.queue.failed_writes,
                recovered: outbox.recovered,
            }),
        }
    }
}

/// How soon recovery is tried again while Redis does not answer.
const RECOVERY_RETRY: Duration = Duration::from_secs(1);

impl Actor for BatchActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.config.mailbox_capacity);
        self.recover(ctx);
    }
}

impl Handler<MessageReceived> for BatchActor {
    type Result = ();

    fn handle(&mut self, event: MessageReceived, ctx: &mut Context<Self>) {
        self.accept(event.item, self.config.status_interval, false, ctx);
    }
}

impl Handler<QrCode> for BatchActor {
    type Result = ();

    fn handle(&mut self, event: QrCode, ctx: &mut Context<Self>) {
        self.accept(event.item, self.config.interval, false, ctx);
    }
}

impl Handler<StatusChanged> for BatchActor {
    type Result = ();

    fn handle(&mut self, event: StatusChanged, ctx: &mut Context<Self>) {
        let waiting_qr_is_stale = !matches!(
            event.item.payload,
            Payload::Status {
                estado_qr: EstadoQr::Pending
            }
        );
        if waiting_qr_is_stale
            && let Some(seq) = self.lanes[Lane::Qr.index()].retract(&event.item.session_id)
        {
            self.forget(Lane::Qr, &event.item.session_id, seq);
        }
        let delay = match event.urgency {
            // Up to half the allowed delay for company: bursts of urgent statuses share a request.
            Urgency::Urgent => self.config.priority_delay / 2,
            Urgency::Normal => self.config.status_interval,
        };
        self.accept(event.item, delay, event.urgency == Urgency::Urgent, ctx);
    }
}

/// Flush everything now and answer once both lanes are empty and the outbox written (shutdown).
/// The caller bounds the wait with its own deadline; items still pending then stay counted as
/// pending (and stay in the Redis outbox for the next start).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Drain;

impl Handler<Drain> for BatchActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) -> Self::Result {
        if !self.draining {
            let pending: usize = self.lanes.iter().map(LaneQueue::pending).sum();
            info!(self.log, "Draining batches."; "pending" => pending);
        }
        self.draining = true;
        let answer = self.wait_for(Awaited::Drained);
        self.pump(ctx);
        answer
    }
}

/// Answers once every accepted item's latest state is written to Redis.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct FlushOutbox;

impl Handler<FlushOutbox> for BatchActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: FlushOutbox, ctx: &mut Context<Self>) -> Self::Result {
        let answer = self.wait_for(Awaited::Persisted);
        self.persist(ctx);
        self.answer_waiters();
        answer
    }
}

/// The durable outbox's figures.
#[derive(Clone, Debug, Serialize)]
pub struct OutboxStats {
    /// Changes not yet known to be in Redis.
    pub unwritten: usize,
    /// Changes written since start.
    pub written: u64,
    /// Failed writes since start.
    pub failed_writes: u64,
    /// Whether the previous run's items were loaded.
    pub recovered: bool,
}

/// Both lanes' figures (`/metrics/batch`).
#[derive(Clone, Debug, Serialize)]
pub struct BatchStats {
    /// The QR lane.
    pub qr: LaneStats,
    /// The status lane.
    pub status: LaneStats,
    /// The incoming-message lane.
    pub message: LaneStats,
    /// Whether a shutdown drain is under way.
    pub draining: bool,
    /// Configured batch size.
    pub max_items: usize,
    /// The durable outbox, when Redis is enabled.
    pub outbox: Option<OutboxStats>,
}

/// Reads both lanes' figures.
#[derive(Message, Debug)]
#[rtype(result = "BatchStats")]
pub struct GetBatchStats;

impl Handler<GetBatchStats> for BatchActor {
    type Result = MessageResult<GetBatchStats>;

    fn handle(&mut self, _: GetBatchStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats())
    }
}
