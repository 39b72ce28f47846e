//! The batch actor's start: what an earlier run left in the Redis outbox (undelivered items and
//! dead letters) is read back and queued again, retried every second while Redis does not answer.

use std::time::{Duration, Instant};

use actix::prelude::*;
use slog::info;

use super::{BatchActor, Recovered, StoredItem, journal_of};
use crate::store::say_not_readable_yet;

/// How soon recovery is tried again while Redis does not answer.
const RECOVERY_RETRY: Duration = Duration::from_secs(1);

impl BatchActor {
    /// Loads what an earlier run left in the outbox; retries until Redis answers.
    pub(super) fn recover(&mut self, ctx: &mut Context<Self>) {
        let Some(outbox) = &self.outbox else { return };
        if outbox.recovered {
            return;
        }
        outbox
            .load()
            .into_actor(self)
            .map(|loaded, actor, ctx| match loaded {
                Ok(Recovered {
                    items,
                    dead_letters,
                }) => {
                    actor
                        .dead_letters
                        .load(dead_letters, journal_of(&mut actor.outbox));
                    for ((lane, key), seq) in std::mem::take(&mut actor.delivered_before_recovery) {
                        actor
                            .dead_letters
                            .supersede(lane, &key, seq, journal_of(&mut actor.outbox));
                    }
                    let count = items.len();
                    let now = Instant::now();
                    for StoredItem {
                        field,
                        lane,
                        seq,
                        item,
                    } in items
                    {
                        if field != item.coalescing_key()
                            && let Some(outbox) = actor.outbox.as_mut()
                        {
                            outbox.rekey(&field, &item, seq);
                        }
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
                    let gate = actor.outbox.as_mut().map(|outbox| &mut outbox.unreadable_log);
                    say_not_readable_yet(gate, &actor.log, "outbox", &error);
                    ctx.run_later(RECOVERY_RETRY, Self::recover);
                }
            })
            .spawn(ctx);
    }
}
