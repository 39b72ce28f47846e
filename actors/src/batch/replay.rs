//! The batch actor's dead letters, seen and sent again: `GET /dead-letters` and
//! `POST /dead-letters/replay` go through these messages.

use std::time::Instant;

use actix::prelude::*;
use serde::Serialize;
use slog::info;

use super::{BatchActor, DeadLetterView, Timing, journal_of};
use crate::messages::Lane;

/// Lists dead letters, newest first.
#[derive(Message, Debug)]
#[rtype(result = "DeadLetterList")]
pub struct ListDeadLetters {
    /// Only this lane's (every lane when `None`).
    pub lane: Option<Lane>,
    /// At most this many.
    pub limit: usize,
}

/// `GET /dead-letters`'s answer.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterList {
    /// The newest dead letters, newest first, without their content.
    pub items: Vec<DeadLetterView>,
    /// How many are held (every lane).
    pub total: usize,
    /// Dropped since start, the oldest first, to stay within `batch.dead_letters_max(_bytes)`.
    pub dropped: u64,
    /// Replaced since start by a newer item of their session that Laravel accepted.
    pub superseded: u64,
    /// Sent again since start.
    pub replayed: u64,
}

impl Handler<ListDeadLetters> for BatchActor {
    type Result = MessageResult<ListDeadLetters>;

    fn handle(&mut self, list: ListDeadLetters, _: &mut Context<Self>) -> Self::Result {
        MessageResult(DeadLetterList {
            items: self.dead_letters.list(list.lane, list.limit),
            total: self.dead_letters.len(),
            dropped: self.dead_letters.dropped,
            superseded: self.dead_letters.superseded,
            replayed: self.dead_letters.replayed,
        })
    }
}

/// Sends dead letters again, as newly accepted items; answers how many went back in a lane, or
/// `None` while those of an earlier run are not loaded from Redis yet (a replay then could
/// miss them, or send one twice once they arrive).
/// A QR or status whose session has a newer item waiting or in flight is not replayed (that
/// newer item is the latest state); a replayed QR that has expired meanwhile is dropped when its
/// batch is taken (counted as `expired`).
#[derive(Message, Debug)]
#[rtype(result = "Option<usize>")]
pub struct ReplayDeadLetters {
    /// Only this lane's (every lane when `None`).
    pub lane: Option<Lane>,
}

impl Handler<ReplayDeadLetters> for BatchActor {
    type Result = Option<usize>;

    fn handle(&mut self, replay: ReplayDeadLetters, ctx: &mut Context<Self>) -> Option<usize> {
        if self.outbox.as_ref().is_some_and(|outbox| !outbox.recovered) {
            return None;
        }
        let letters = self.dead_letters.take(replay.lane);
        let now = Instant::now();
        let mut replayed = 0;
        for letter in &letters {
            let lane = letter.item.lane();
            let superseded = lane != Lane::Message
                && self.lanes[lane.index()].holds(&letter.item.coalescing_key());
            if !superseded {
                let timing = Timing::deadline(now + self.deadline_of(lane));
                self.accept(letter.item.clone(), timing, false, ctx);
                replayed += 1;
            }
            self.dead_letters
                .forget_replayed(letter, journal_of(&mut self.outbox));
        }
        self.dead_letters.replayed += replayed as u64;
        self.dead_letters.superseded += (letters.len() - replayed) as u64;
        if !letters.is_empty() {
            info!(self.log, "Dead letters sent again."; "replayed" => replayed, "superseded" => letters.len() - replayed);
        }
        self.persist(ctx);
        self.pump(ctx);
        Some(replayed)
    }
}
