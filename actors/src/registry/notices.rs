//! What session actors tell the registry: state changes, endings (kept as `stopped` records
//! when the login stays), deaths; and what the supervisor tells it: a restarted batch queue.

use std::time::Instant;

use actix::prelude::*;
use slog::info;

use super::{SessionRegistry, StoppedSession};
use crate::{
    messages::SessionId,
    session::{ReportStateAgain, SessionState},
};

/// A session actor reports its new state.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SessionStateChanged {
    /// The session.
    pub session_id: SessionId,
    /// The reporting incarnation.
    pub generation: u64,
    /// Its new state.
    pub state: SessionState,
}

impl Handler<SessionStateChanged> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, changed: SessionStateChanged, ctx: &mut Context<Self>) {
        if let Some(entry) = self.sessions.get_mut(&changed.session_id)
            && entry.generation == changed.generation
        {
            entry.record_state(changed.state, Instant::now());
            self.save(&changed.session_id, ctx);
        }
    }
}

/// A session ended by itself (logout, QR expiry, idle, gave up reconnecting, renewal).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SessionFinished {
    /// The session.
    pub session_id: SessionId,
    /// The reporting incarnation.
    pub generation: u64,
    /// Why.
    pub reason: String,
    /// Start a fresh incarnation (max lifetime reached) instead of forgetting it.
    pub renew: bool,
    /// The store stays (no logout; it may hold a login): the registry keeps the record as
    /// `stopped`, bound to its user.
    pub keeps_store: bool,
}

impl Handler<SessionFinished> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, finished: SessionFinished, ctx: &mut Context<Self>) {
        let current = self
            .sessions
            .get(&finished.session_id)
            .is_some_and(|entry| entry.generation == finished.generation);
        if !current {
            return;
        }
        if finished.renew && self.accepting {
            if let Some(entry) = self.sessions.get_mut(&finished.session_id) {
                entry.renewals += 1;
            }
            self.launch(&finished.session_id, ctx);
        } else if let Some(entry) = self.sessions.remove(&finished.session_id) {
            if !finished.renew {
                let record =
                    StoppedSession::now(entry.user_id, &finished.reason, entry.created_unix_ms);
                self.keep_stopped(&finished.session_id, record, finished.keeps_store, ctx);
            }
            // The actor is still finishing (last status, logout, store): its id waits for it.
            if let Some(addr) = entry.addr {
                self.entomb(&finished.session_id, addr, ctx);
            }
        }
    }
}

/// A session actor died without a clean stop (sent by its death notice).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SessionDied {
    /// The session.
    pub session_id: SessionId,
    /// The incarnation that died.
    pub generation: u64,
    /// The panic message, or why it is thought dead.
    pub reason: String,
}

impl Handler<SessionDied> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, died: SessionDied, ctx: &mut Context<Self>) {
        self.crashed(&died.session_id, died.generation, died.reason, ctx);
    }
}

/// The batch queue was restarted: every running session hands on its QR and status again (what
/// the dead queue held in memory, or in its mailbox, is gone; the outbox brings back the rest).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct ReportStatesAgain;

impl Handler<ReportStatesAgain> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, _: ReportStatesAgain, _: &mut Context<Self>) {
        let running = self
            .sessions
            .values()
            .filter_map(|entry| entry.addr.as_ref());
        let mut told = 0_usize;
        for addr in running {
            addr.do_send(ReportStateAgain);
            told += 1;
        }
        info!(self.log, "Sessions asked to report their state again."; "sessions" => told);
    }
}
