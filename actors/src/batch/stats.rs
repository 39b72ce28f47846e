//! What `/metrics/batch` shows of the batch actor: each lane, the budget, the outbox.

use std::time::Instant;

use actix::prelude::*;
use serde::Serialize;

use super::{BatchActor, BudgetStats, LaneStats};
use crate::messages::Lane;

impl BatchActor {
    fn stats(&self) -> BatchStats {
        let now = Instant::now();
        BatchStats {
            qr: self.lanes[Lane::Qr.index()].stats(now),
            status: self.lanes[Lane::Status.index()].stats(now),
            message: self.lanes[Lane::Message.index()].stats(now),
            draining: self.draining,
            max_items: self.config.max_items,
            backlog_items: self.backlog_items,
            budget: self.budget.stats(),
            dead_letters: DeadLetterStats {
                held: self.dead_letters.len(),
                bytes: self.dead_letters.bytes(),
                dropped: self.dead_letters.dropped,
                superseded: self.dead_letters.superseded,
                replayed: self.dead_letters.replayed,
            },
            outbox: self.outbox.as_ref().map(|outbox| OutboxStats {
                write_delay_ms: WriteDelayFigures {
                    last: outbox.queue.delays.last_ms,
                    max: outbox.queue.delays.max_ms,
                    p99: outbox.queue.delays.quantile_ms(0.99),
                },
                unwritten: outbox.queue.unwritten(),
                written: outbox.queue.written,
                failed_writes: outbox.queue.failed_writes,
                recovered: outbox.recovered,
            }),
        }
    }
}

/// The dead letters' figures.
#[derive(Clone, Debug, Serialize)]
pub struct DeadLetterStats {
    /// Held now (`GET /dead-letters`).
    pub held: usize,
    /// Their size, in bytes of JSON.
    pub bytes: usize,
    /// Dropped since start (oldest first) to stay within the bounds.
    pub dropped: u64,
    /// Replaced since start by a newer item of their session that Laravel accepted.
    pub superseded: u64,
    /// Sent again since start.
    pub replayed: u64,
}

/// How long accepted changes waited to be in Redis (the write-behind window a kill -9 can hit).
#[derive(Clone, Debug, Serialize)]
pub struct WriteDelayFigures {
    /// The last write's longest wait.
    pub last: u64,
    /// The longest since start.
    pub max: u64,
    /// 99 % of writes stayed within this (bucket bound: 1, 2, 5, 10, 20, 50, ... ms).
    pub p99: Option<u64>,
}

/// The durable outbox's figures.
#[derive(Clone, Debug, Serialize)]
pub struct OutboxStats {
    /// How long accepted items waited to be written, per write, in ms.
    pub write_delay_ms: WriteDelayFigures,
    /// Changes not yet known to be in Redis.
    pub unwritten: usize,
    /// Changes written since start.
    pub written: u64,
    /// Failed writes since start.
    pub failed_writes: u64,
    /// Whether the previous run's items were loaded.
    pub recovered: bool,
}

/// Every lane's figures (`/metrics/batch`).
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
    /// Largest batch while a backlog drains now (`max_items_backlog`, halved by each 413).
    pub backlog_items: usize,
    /// The adaptive request budget.
    pub budget: BudgetStats,
    /// Items Laravel refused for good.
    pub dead_letters: DeadLetterStats,
    /// The durable outbox, when Redis is enabled.
    pub outbox: Option<OutboxStats>,
}

/// Reads every lane's figures.
#[derive(Message, Debug)]
#[rtype(result = "BatchStats")]
pub struct GetBatchStats;

impl Handler<GetBatchStats> for BatchActor {
    type Result = MessageResult<GetBatchStats>;

    fn handle(&mut self, _: GetBatchStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats())
    }
}
