//! `BatchActor`: coalesces QR and status events per session and hands batches to the sink.
//!
//! Two lanes (qr, status), each a [`LaneQueue`]. A lane flushes when it holds `max_items`, when
//! its earliest item is due (QR: `interval`; normal status: `status_interval`; urgent status: at
//! once), or when draining for shutdown. One batch per lane is at the sink at a time. A status
//! other than `pending` withdraws the session's waiting QR: once connected or closed, it is stale.

mod config;
mod lane;

use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;
use slog::{Logger, info, warn};
use tokio::sync::oneshot;

pub use config::BatchConfig;
pub use lane::{LaneCounters, LaneQueue, LaneStats, Pushed};

use crate::{
    messages::{EstadoQr, Lane, OutboundItem, Payload, QrCode, StatusChanged, Urgency},
    sink::{Deliver, DeliveryOutcome, LaravelSink},
};

/// The batching actor.
pub struct BatchActor {
    /// Sizes and cadences.
    config: BatchConfig,
    /// Indexed by [`Lane::index`].
    lanes: [LaneQueue; 2],
    /// Where batches go.
    sink: Addr<LaravelSink>,
    /// The pending wake-up and when it fires; replaced when something is due sooner.
    wake: Option<(Instant, SpawnHandle)>,
    /// Set by [`Drain`]: every lane flushes regardless of due times.
    draining: bool,
    /// Answered once both lanes are empty during a drain.
    drain_waiters: Vec<oneshot::Sender<()>>,
    /// Where overflow and drains are logged.
    log: Logger,
}

impl BatchActor {
    /// A batch actor sending to `sink`.
    pub fn new(config: BatchConfig, sink: Addr<LaravelSink>, log: Logger) -> Self {
        Self {
            config,
            lanes: [LaneQueue::new(Lane::Qr), LaneQueue::new(Lane::Status)],
            sink,
            wake: None,
            draining: false,
            drain_waiters: Vec::new(),
            log,
        }
    }

    fn accept(&mut self, item: OutboundItem, delay: Duration, ctx: &mut Context<Self>) {
        let lane = item.lane();
        let due = Instant::now() + delay;
        if self.lanes[lane.index()].push(item, due, self.config.max_pending)
            == Pushed::DroppedOldest
        {
            warn!(self.log, "Batch lane over max_pending: oldest item dropped."; "lane" => lane.name());
        }
        self.pump(ctx);
    }

    /// Sends every ready lane's batch, then sets the next wake-up.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        for index in 0..self.lanes.len() {
            if self.lanes[index].is_ready(now, self.config.max_items, self.draining) {
                let lane = self.lanes[index].lane();
                let items = self.lanes[index].take_batch(self.config.max_items);
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
        self.answer_drain_waiters();
    }

    fn settle(&mut self, lane: Lane, outcome: DeliveryOutcome, ctx: &mut Context<Self>) {
        let retry_base = match lane {
            Lane::Qr => self.config.interval,
            Lane::Status => self.config.status_interval,
        };
        self.lanes[lane.index()].settle(
            outcome,
            Instant::now(),
            retry_base,
            self.config.retry_backoff_max,
        );
        self.pump(ctx);
    }

    fn schedule_wake(&mut self, ctx: &mut Context<Self>) {
        let next = self
            .lanes
            .iter()
            .filter_map(|lane| lane.next_wake(self.config.max_items))
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

    fn answer_drain_waiters(&mut self) {
        if self.draining && self.lanes.iter().all(LaneQueue::is_idle) {
            for waiter in self.drain_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    fn stats(&self) -> BatchStats {
        let now = Instant::now();
        BatchStats {
            qr: self.lanes[Lane::Qr.index()].stats(now),
            status: self.lanes[Lane::Status.index()].stats(now),
            draining: self.draining,
            max_items: self.config.max_items,
        }
    }
}

impl Actor for BatchActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.config.mailbox_capacity);
    }
}

impl Handler<QrCode> for BatchActor {
    type Result = ();

    fn handle(&mut self, event: QrCode, ctx: &mut Context<Self>) {
        self.accept(event.item, self.config.interval, ctx);
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
        if waiting_qr_is_stale {
            self.lanes[Lane::Qr.index()].retract(&event.item.session_id);
        }
        let delay = match event.urgency {
            Urgency::Urgent => Duration::ZERO,
            Urgency::Normal => self.config.status_interval,
        };
        self.accept(event.item, delay, ctx);
    }
}

/// Flush everything now and answer once both lanes are empty (shutdown). The caller bounds the
/// wait with its own deadline; items still pending then stay counted as pending.
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
        let (sender, receiver) = oneshot::channel();
        self.drain_waiters.push(sender);
        self.pump(ctx);
        Box::pin(async move {
            let _ = receiver.await;
        })
    }
}

/// Both lanes' figures (`/metrics/batch`).
#[derive(Clone, Debug, Serialize)]
pub struct BatchStats {
    /// The QR lane.
    pub qr: LaneStats,
    /// The status lane.
    pub status: LaneStats,
    /// Whether a shutdown drain is under way.
    pub draining: bool,
    /// Configured batch size.
    pub max_items: usize,
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
