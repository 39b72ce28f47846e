//! Tombstones: a session the registry has forgotten whose actor is still finishing (reporting its
//! last status, logging out, deleting its store). Until it has stopped, `POST /start` with the
//! same id is refused (409, `Retry-After`), so the old incarnation cannot delete the new one's
//! store, overwrite its status or withdraw its QR: its last events come before the new ones.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use actix::prelude::*;
use slog::warn;

use super::SessionRegistry;
use crate::{messages::SessionId, session::SessionActor};

/// How often the finishing actors are checked for having stopped (one timer for them all).
const CHECK_EVERY: Duration = Duration::from_millis(20);

/// Longest a tombstone stands: an actor that has not stopped by then is stuck, and its id is
/// given back (with a warning) rather than blocked forever.
pub const TOMBSTONE_MAX: Duration = Duration::from_secs(30);

/// One finishing incarnation.
#[derive(Debug)]
struct Standing {
    /// Its actor, checked for having stopped.
    addr: Addr<SessionActor>,
    /// Since when it finishes.
    since: Instant,
}

/// Sessions forgotten but still finishing.
#[derive(Debug, Default)]
pub struct Tombstones {
    /// Session → its finishing incarnation.
    standing: HashMap<SessionId, Standing>,
    /// Whether the next check is scheduled.
    check_scheduled: bool,
}

impl Tombstones {
    /// Whether `session_id` is still finishing.
    pub fn stands(&self, session_id: &str) -> bool {
        self.standing.contains_key(session_id)
    }

    /// How many stand.
    pub fn len(&self) -> usize {
        self.standing.len()
    }

    /// Whether none stands.
    pub fn is_empty(&self) -> bool {
        self.standing.is_empty()
    }
}

impl SessionRegistry {
    /// Keeps `session_id` out of reach until `addr` has stopped, at most [`TOMBSTONE_MAX`].
    pub(super) fn entomb(
        &mut self,
        session_id: &str,
        addr: Addr<SessionActor>,
        ctx: &mut Context<Self>,
    ) {
        let standing = Standing {
            addr,
            since: Instant::now(),
        };
        self.tombstones
            .standing
            .insert(session_id.to_string(), standing);
        self.schedule_tombstone_check(ctx);
    }

    fn schedule_tombstone_check(&mut self, ctx: &mut Context<Self>) {
        if self.tombstones.check_scheduled || self.tombstones.standing.is_empty() {
            return;
        }
        self.tombstones.check_scheduled = true;
        ctx.run_later(CHECK_EVERY, |registry, ctx| {
            registry.tombstones.check_scheduled = false;
            let log = registry.log.clone();
            registry.tombstones.standing.retain(|session_id, standing| {
                if !standing.addr.connected() {
                    return false;
                }
                let stuck = standing.since.elapsed() >= TOMBSTONE_MAX;
                if stuck {
                    warn!(log, "A finishing session did not stop in time; its id is free again.";
                        "session_id" => session_id.as_str(), "waited" => ?TOMBSTONE_MAX);
                }
                !stuck
            });
            registry.schedule_tombstone_check(ctx);
        });
    }
}
