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

/// How often a finishing actor is checked for having stopped.
const CHECK_EVERY: Duration = Duration::from_millis(10);

/// Longest a tombstone stands: an actor that has not stopped by then is stuck, and its id is
/// given back (with a warning) rather than blocked forever.
pub const TOMBSTONE_MAX: Duration = Duration::from_secs(30);

/// Sessions forgotten but still finishing, with when each began to finish.
#[derive(Debug, Default)]
pub struct Tombstones {
    /// Session → (its generation, since when).
    standing: HashMap<SessionId, (u64, Instant)>,
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
    /// Keeps `session_id` out of reach until `addr` (its incarnation `generation`) has stopped,
    /// at most [`TOMBSTONE_MAX`].
    pub(super) fn entomb(
        &mut self,
        session_id: &str,
        generation: u64,
        addr: Addr<SessionActor>,
        ctx: &mut Context<Self>,
    ) {
        let since = Instant::now();
        self.tombstones
            .standing
            .insert(session_id.to_string(), (generation, since));
        let session_id = session_id.to_string();
        async move {
            while addr.connected() && since.elapsed() < TOMBSTONE_MAX {
                actix_rt::time::sleep(CHECK_EVERY).await;
            }
            !addr.connected()
        }
        .into_actor(self)
        .map(move |stopped, registry, _| {
            let ours = registry
                .tombstones
                .standing
                .get(&session_id)
                .is_some_and(|(standing, _)| *standing == generation);
            if !ours {
                return;
            }
            registry.tombstones.standing.remove(&session_id);
            if !stopped {
                warn!(registry.log, "A finishing session did not stop in time; its id is free again.";
                    "session_id" => &session_id, "waited" => ?TOMBSTONE_MAX);
            }
        })
        .spawn(ctx);
    }
}
