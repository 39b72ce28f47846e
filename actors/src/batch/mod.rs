//! `BatchActor`: coalesces QR and status events per session and hands batches to the sink.
//!
//! Three lanes (qr, status, message), each a [`LaneQueue`]; messages are never coalesced (each
//! is its own item, delivered at least once, in arrival order). Every item has a deadline at
//! Laravel: a QR `qr_deadline` after it appeared, an urgent status `priority_delay` (lingering
//! for company until only the expected latency and a quarter of it are left), a normal status
//! `status_interval`, a message `message_deadline`. A lane flushes when its earliest item must
//! leave (its deadline less the expected request latency), when it holds `max_items`
//! (`max_items_combined` under the combined contract), or when draining for shutdown, and takes
//! everything it holds up to that cap, so a request carries as much as it can. With the combined
//! contract, every other lane that holds items joins that request. Requests start within the
//! adaptive [`RequestBudget`] (a request carrying an urgent status about to be late may use its
//! reserve); while it is tight, items wait and batches fill up (up to `max_items_backlog` while
//! batches of the usual size would leave items late). One batch per lane is at the sink at a
//! time. QRs that would reach Laravel after they expire are dropped. A status other than
//! `pending` withdraws the session's waiting QR: once connected or closed, it is stale.

mod budget;
mod config;
mod dead_letters;
mod handover;
mod lane;
mod outbox;
mod recovery;
mod replay;
mod stats;
mod waiting;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use actix::prelude::*;
use slog::{Logger, error, info, warn};
use tokio::sync::oneshot;

use budget::URGENT_RESERVE_MARGIN_DIVISOR;
pub use budget::{BudgetLimits, BudgetStats, Carrying, RequestBudget, RequestSample};
pub use config::BatchConfig;
pub use dead_letters::{DeadLetter, DeadLetterLimits, DeadLetterView, DeadLetters};
pub use handover::hand_over;
pub use lane::{
    BatchCap, LaneCounters, LaneQueue, LaneStats, Pushed, Settled, SettledBatch, TakenBatch, Timing,
};
pub use outbox::{DurableOutbox, Recovered, StoredItem};
pub use replay::{DeadLetterList, ListDeadLetters, ReplayDeadLetters};
pub use stats::{BatchStats, DeadLetterStats, GetBatchStats, OutboxStats};

use crate::{
    messages::{
        EstadoQr, Lane, MessageReceived, OutboundItem, Payload, QrCode, StatusChanged, Urgency,
        unix_millis,
    },
    sink::{CORE_ACTOR_GONE_WAIT, Contract, Deliver, DeliveryOutcome, LaravelSink},
    store::{HashJournal, drive_writes, next_seq},
    supervision::CoreAddr,
};

/// What a waiter waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Awaited {
    /// Both lanes empty and the outbox written ([`Drain`]).
    Drained,
    /// Every change queued in the outbox up to then written ([`FlushOutbox`]); newer ones may
    /// still wait, so steady traffic cannot keep the waiter waiting.
    Persisted(Instant),
}

/// The batching actor.
pub struct BatchActor {
    /// Sizes and cadences.
    config: BatchConfig,
    /// Indexed by [`Lane::index`].
    lanes: [LaneQueue; 3],
    /// Where batches go.
    sink: CoreAddr<LaravelSink>,
    /// The Redis copy of every undelivered item; `None` when Redis is disabled.
    outbox: Option<DurableOutbox>,
    /// Items Laravel refused for good, kept to be seen and replayed (mirrored in Redis).
    dead_letters: DeadLetters,
    /// QRs and statuses Laravel accepted before the outbox (and its dead letters) was read back:
    /// they supersede older dead letters loaded then. Emptied at recovery; one per session.
    delivered_before_recovery: HashMap<(Lane, String), u64>,
    /// The pending wake-up and when it fires; replaced when something is due sooner.
    wake: Option<(Instant, SpawnHandle)>,
    /// How many requests may be out and how fast they may start; adapts to Laravel's answers.
    budget: RequestBudget,
    /// One request carries every lane that holds items (`laravel.contract = "combined"`).
    combined: bool,
    /// Largest batch while a backlog drains; a 413 halves it, down to `max_items`.
    backlog_items: usize,
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
        sink: impl Into<CoreAddr<LaravelSink>>,
        outbox: Option<DurableOutbox>,
        log: Logger,
    ) -> Self {
        let dead_letter_limits = DeadLetterLimits {
            max_items: config.dead_letters_max,
            max_bytes: config.dead_letters_max_bytes,
        };
        Self {
            backlog_items: config.max_items_backlog,
            delivered_before_recovery: HashMap::new(),
            dead_letters: DeadLetters::new(
                dead_letter_limits,
                outbox.as_ref().map(DurableOutbox::dead_letters_key),
            ),
            config,
            lanes: Lane::ALL.map(LaneQueue::new),
            sink: sink.into(),
            outbox,
            budget: RequestBudget::new(BudgetLimits::default(), Instant::now()),
            combined: false,
            wake: None,
            draining: false,
            waiters: Vec::new(),
            log,
        }
    }

    /// Starts requests within `limits` (adapted below them) under `contract`.
    pub fn with_budget(mut self, limits: BudgetLimits, contract: Contract) -> Self {
        self.budget = RequestBudget::new(limits, Instant::now());
        self.combined = contract == Contract::Combined;
        self
    }

    fn accept(
        &mut self,
        item: OutboundItem,
        timing: Timing,
        urgent: bool,
        ctx: &mut Context<Self>,
    ) {
        let seq = next_seq();
        if let Some(outbox) = &mut self.outbox {
            outbox.record(&item, seq);
        }
        let lane = item.lane();
        let pushed =
            self.lanes[lane.index()].push(item, seq, timing, urgent, self.config.max_pending);
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

    /// Most items of one lane in a request outside a backlog: the combined contract carries
    /// every lane in one request, so each may carry more (a 413 lowers it with the backlog cap).
    fn lane_cap(&self) -> usize {
        if self.combined {
            self.config.max_items_combined.min(self.backlog_items)
        } else {
            self.config.max_items
        }
    }

    /// How long an item of `lane` may take to reach Laravel (urgent statuses aside).
    fn deadline_of(&self, lane: Lane) -> Duration {
        match lane {
            Lane::Qr => self.config.qr_deadline,
            Lane::Status => self.config.status_interval,
            Lane::Message => self.config.message_deadline,
        }
    }

    fn forget(&mut self, lane: Lane, key: &str, seq: u64) {
        if let Some(outbox) = &mut self.outbox {
            outbox.forget(lane, key, seq);
        }
    }

    /// Whether `lane` may send at all now (messages wait for the outbox recovery, so they
    /// stay in order).
    fn lane_open(&self, lane: Lane) -> bool {
        lane != Lane::Message || self.outbox.as_ref().is_none_or(|outbox| outbox.recovered)
    }

    /// The ready lanes in the order they get the budget: first those that must send (full,
    /// draining or at a deadline), then those only past an item's linger time, each group the
    /// one whose first item must leave soonest first. A lingering lane (an urgent status waiting
    /// for company) never takes the place of one that must send; when its status is about to be
    /// late, the urgent reserve takes it anyway.
    fn ready_lanes(&self, now: Instant, lead: Duration) -> Vec<Lane> {
        let cap = self.lane_cap();
        let mut ready: Vec<(bool, Instant, Lane)> = Lane::ALL
            .into_iter()
            .filter(|lane| self.lane_open(*lane))
            .filter_map(|lane| {
                let queue = &self.lanes[lane.index()];
                queue.is_ready(now, lead, cap, self.draining).then(|| {
                    let only_lingering = !queue.must_send(now, lead, cap, self.draining);
                    let send_at = queue.earliest_send_at(lead).unwrap_or(now);
                    (only_lingering, send_at, lane)
                })
            })
            .collect();
        ready.sort_unstable_by_key(|(only_lingering, send_at, lane)| {
            (*only_lingering, *send_at, lane.index())
        });
        ready.into_iter().map(|(.., lane)| lane).collect()
    }

    /// Items waiting in every lane (not those out at Laravel).
    fn waiting_items(&self) -> usize {
        self.lanes.iter().map(LaneQueue::waiting_len).sum()
    }

    /// From when a request starting with `lane` may use the budget's urgent reserve: shortly
    /// before the first urgent status it would carry must leave (a combined request takes the
    /// status lane along whenever it may join). `None` when it would carry no urgent status.
    fn urgent_reserve_from(&self, lane: Lane, now: Instant, lead: Duration) -> Option<Instant> {
        let status = &self.lanes[Lane::Status.index()];
        let takes_status = lane == Lane::Status || (self.combined && status.can_join(now));
        let send_at = status.urgent_send_at(lead).filter(|_| takes_status)?;
        Some(waiting::earlier_by(send_at, self.urgent_margin()))
    }

    /// What an urgent status keeps of `priority_delay` for Laravel's latency running above its
    /// average and for the pump's own delays.
    fn urgent_margin(&self) -> Duration {
        self.config.priority_delay / URGENT_RESERVE_MARGIN_DIVISOR
    }

    /// What a request starting with `lane` now carries, as far as the budget cares.
    fn carrying(&self, lane: Lane, now: Instant, lead: Duration) -> Carrying {
        if self
            .urgent_reserve_from(lane, now, lead)
            .is_some_and(|from| from <= now)
        {
            Carrying::Urgent
        } else {
            Carrying::Ordinary
        }
    }

    /// The lane the next request starts with: the first ready one if the budget has an ordinary
    /// place, else one holding an urgent status about to be late if the reserve allows it.
    fn first_allowed(&mut self, ready: &[Lane], now: Instant, lead: Duration) -> Option<Lane> {
        let &first = ready.first()?;
        if self.budget.may_start(now, Carrying::Ordinary) {
            return Some(first);
        }
        let urgent = ready
            .iter()
            .copied()
            .find(|lane| self.carrying(*lane, now, lead) == Carrying::Urgent)?;
        self.budget
            .may_start(now, Carrying::Urgent)
            .then_some(urgent)
    }

    /// Sends requests while a lane is ready and the budget allows, then sets the next wake-up.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let lead = self.budget.expected_latency();
        let mut forgot = false;
        loop {
            let ready = self.ready_lanes(now, lead);
            let Some(first) = self.first_allowed(&ready, now, lead) else {
                break;
            };
            let lanes: Vec<Lane> = if self.combined {
                Lane::ALL
                    .into_iter()
                    .filter(|lane| self.lane_open(*lane) && self.lanes[lane.index()].can_join(now))
                    .collect()
            } else {
                vec![first]
            };
            let waiting_before = self.waiting_items();
            let (items, sent_lanes) = self.take_request(&lanes, now, lead, &mut forgot);
            if items.is_empty() {
                // Expired QRs were dropped: look again. Nothing taken and nothing dropped would
                // mean a lane says it is ready with nothing to take: stop rather than spin.
                if self.waiting_items() < waiting_before {
                    continue;
                }
                error!(
                    self.log,
                    "A ready lane gave no batch; waiting for the next wake-up."
                );
                break;
            }
            self.budget.start(now);
            // A copy for the sink dying with the request (stopped or panicked): nothing is
            // lost, the lanes take the items back and a restarted sink gets them.
            let retained = items.clone();
            self.sink
                .send(Deliver { items })
                .into_actor(self)
                .map(move |answer, actor, ctx| {
                    let outcome = answer.unwrap_or_else(|_| {
                        DeliveryOutcome::defer_all(retained, CORE_ACTOR_GONE_WAIT)
                    });
                    actor.settle(&sent_lanes, outcome, ctx);
                })
                .spawn(ctx);
        }
        if forgot {
            self.persist(ctx);
        }
        self.schedule_wake(ctx);
        self.answer_waiters();
    }

    /// Takes one batch from each of `lanes`; QRs that would arrive expired are dropped (and
    /// forgotten by the outbox). Answers the items and the lanes that now have a batch out.
    fn take_request(
        &mut self,
        lanes: &[Lane],
        now: Instant,
        lead: Duration,
        forgot: &mut bool,
    ) -> (Vec<OutboundItem>, Vec<Lane>) {
        // Under the split contract, the lanes that hold items share the budget's starts.
        let sharing = if self.combined {
            1
        } else {
            self.lanes.iter().filter(|lane| !lane.is_idle()).count()
        };
        let cap = BatchCap {
            max_items: if self.draining {
                self.backlog_items
            } else {
                self.lane_cap()
            },
            backlog_items: self.backlog_items,
            request_every: self
                .budget
                .start_interval()
                .saturating_mul(u32::try_from(sharing.max(1)).unwrap_or(u32::MAX)),
            lead,
        };
        let lead_ms = u64::try_from(lead.as_millis()).unwrap_or(u64::MAX);
        let arrival_ms = unix_millis().saturating_add(lead_ms);
        let mut items = Vec::new();
        let mut sent_lanes = Vec::with_capacity(lanes.len());
        for &lane in lanes {
            let taken = self.lanes[lane.index()].take_batch(cap, now, arrival_ms);
            for (key, seq) in &taken.expired {
                self.forget(lane, key, *seq);
                *forgot = true;
            }
            if !taken.items.is_empty() {
                sent_lanes.push(lane);
                items.extend(taken.items);
            }
        }
        (items, sent_lanes)
    }

    fn settle(&mut self, lanes: &[Lane], mut outcome: DeliveryOutcome, ctx: &mut Context<Self>) {
        let now = Instant::now();
        self.budget.finish(&outcome.samples, now);
        if outcome.too_large {
            self.backlog_items = (self.backlog_items / 2).max(self.config.max_items);
        }
        for &lane in lanes {
            let retry_base = match lane {
                Lane::Qr => self.config.qr_deadline,
                Lane::Status | Lane::Message => self.config.status_interval,
            };
            let settled = self.lanes[lane.index()].settle(
                outcome.for_lane(lane),
                now,
                retry_base,
                self.config.retry_backoff_max,
            );
            let at = unix_millis();
            for (refused, seq) in settled.refused {
                let key = refused.item.coalescing_key();
                // Kept as a dead letter before the outbox forgets it: the journal writes in order.
                self.dead_letters
                    .add(refused, seq, at, journal_of(&mut self.outbox));
                self.forget(lane, &key, seq);
            }
            let recovered = self.outbox.as_ref().is_none_or(|outbox| outbox.recovered);
            for (key, seq) in settled.delivered {
                self.dead_letters
                    .supersede(lane, &key, seq, journal_of(&mut self.outbox));
                if !recovered && lane != Lane::Message {
                    self.delivered_before_recovery
                        .insert((lane, key.clone()), seq);
                }
                self.forget(lane, &key, seq);
            }
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

    fn schedule_wake(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let lead = self.budget.expected_latency();
        // Each lane's next wake-up, no earlier than the budget lets an ordinary request start or,
        // for one carrying an urgent status, than its reserve opens; with every place it may
        // take in use, the next answer pumps again.
        let mut next: Option<Instant> = None;
        for lane in Lane::ALL {
            let queue = &self.lanes[lane.index()];
            let lane_wake = queue.next_wake(now, lead, self.lane_cap(), self.draining);
            let Some(lane_wake) = lane_wake.filter(|_| self.lane_open(lane)) else {
                continue;
            };
            let reserve_from = self.urgent_reserve_from(lane, now, lead);
            let ordinary = self.budget.next_start(now, Carrying::Ordinary);
            let reserve = reserve_from.and_then(|from| {
                let start = self.budget.next_start(now, Carrying::Urgent)?;
                Some(start.max(from))
            });
            let Some(start) = ordinary.into_iter().chain(reserve).min() else {
                continue;
            };
            let at = lane_wake.max(start);
            next = Some(next.map_or(at, |earlier| earlier.min(at)));
        }
        let Some(next) = next else { return };
        if let Some((at, handle)) = self.wake {
            if at <= next {
                return;
            }
            ctx.cancel_future(handle);
        }
        let handle = ctx.run_later(next.saturating_duration_since(now), |actor, ctx| {
            actor.wake = None;
            actor.pump(ctx);
        });
        self.wake = Some((next, handle));
    }

    fn unwritten(&self) -> usize {
        self.outbox
            .as_ref()
            .map_or(0, |outbox| outbox.queue.unwritten())
    }

    fn answer_waiters(&mut self) {
        let drained =
            self.unwritten() == 0 && self.draining && self.lanes.iter().all(LaneQueue::is_idle);
        let mut index = 0;
        while index < self.waiters.len() {
            let done = match self.waiters[index].0 {
                Awaited::Drained => drained,
                Awaited::Persisted(asked) => self
                    .outbox
                    .as_ref()
                    .is_none_or(|outbox| outbox.queue.written_through(asked)),
            };
            if done {
                let (_, waiter) = self.waiters.swap_remove(index);
                let _ = waiter.send(());
            } else {
                index += 1;
            }
        }
    }

    /// Answers once `awaited` holds; [`BatchGone`] when this actor dies first (the answer is
    /// a task of its own and outlives the actor: without the error, a dead queue would answer
    /// "written").
    fn wait_for(&mut self, awaited: Awaited) -> ResponseFuture<Result<(), BatchGone>> {
        let (sender, receiver) = oneshot::channel();
        self.waiters.push((awaited, sender));
        Box::pin(async move { receiver.await.map_err(|_| BatchGone) })
    }
}

/// The outbox's journal, when Redis is enabled (dead letters are written through it too).
fn journal_of(outbox: &mut Option<DurableOutbox>) -> Option<&mut HashJournal> {
    outbox.as_mut().map(|outbox| outbox.queue.journal())
}

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
        let timing = Timing::deadline(Instant::now() + self.deadline_of(Lane::Message));
        self.accept(event.item, timing, false, ctx);
    }
}

impl Handler<QrCode> for BatchActor {
    type Result = ();

    fn handle(&mut self, event: QrCode, ctx: &mut Context<Self>) {
        let timing = Timing::deadline(Instant::now() + self.deadline_of(Lane::Qr));
        self.accept(event.item, timing, false, ctx);
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
        let now = Instant::now();
        let timing = match event.urgency {
            // It waits for company as long as its deadline allows, less the expected latency
            // and the margin: bursts of urgent statuses share a request, and the status lane
            // takes fewer of the budget's starts.
            Urgency::Urgent => {
                let linger = self
                    .config
                    .priority_delay
                    .saturating_sub(self.budget.expected_latency())
                    .saturating_sub(self.urgent_margin());
                Timing {
                    send_by: now + linger,
                    deadline: now + self.config.priority_delay,
                }
            }
            Urgency::Normal => Timing::deadline(now + self.deadline_of(Lane::Status)),
        };
        self.accept(event.item, timing, event.urgency == Urgency::Urgent, ctx);
    }
}

/// Flush everything now and answer once both lanes are empty and the outbox written (shutdown).
/// The caller bounds the wait with its own deadline; items still pending then stay counted as
/// pending (and stay in the Redis outbox for the next start).
#[derive(Message, Debug)]
#[rtype(result = "Result<(), BatchGone>")]
pub struct Drain;

/// The batch queue stopped before what was awaited held.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the batch queue stopped before answering")]
pub struct BatchGone;

impl Handler<Drain> for BatchActor {
    type Result = ResponseFuture<Result<(), BatchGone>>;

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

/// Answers once every item accepted before it is written to Redis, in its latest state (items
/// accepted after it need not be: under steady traffic the outbox is seldom empty).
#[derive(Message, Debug)]
#[rtype(result = "Result<(), BatchGone>")]
pub struct FlushOutbox;

impl Handler<FlushOutbox> for BatchActor {
    type Result = ResponseFuture<Result<(), BatchGone>>;

    fn handle(&mut self, _: FlushOutbox, ctx: &mut Context<Self>) -> Self::Result {
        let answer = self.wait_for(Awaited::Persisted(Instant::now()));
        self.persist(ctx);
        self.answer_waiters();
        answer
    }
}
