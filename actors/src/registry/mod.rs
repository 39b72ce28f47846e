//! `SessionRegistry`: owns every session actor. Starts, stops, lists and inspects them, enforces
//! `max_active`, runs the pending and not-connected sweeps, and restarts a session whose actor
//! stopped or panicked (noticed through its [`DeathNotice`](crate::crash::DeathNotice) or,
//! failing that, a watchdog that checks every mailbox is still open).

mod commands;
mod entry;
mod notices;
mod persistence;
mod stopped;
mod stores;
mod tombstones;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use actix::{ArbiterHandle, prelude::*};
use slog::{Logger, error, info, o, warn};

pub use commands::{
    CleanupNotConnected, CleanupPending, GetRegistryStats, InspectSession, ListSessions,
    LookupSession, RegistryStats, RemoveSession, SessionList, SessionReport, SessionStarted,
    SimulateSession, StartSession, StopAllSessions, StoppedListed,
};
pub use entry::{CrashVerdict, SessionEntry, SessionSummary};
pub use notices::{ReportStatesAgain, SessionDied, SessionFinished, SessionStateChanged};
pub use persistence::{FlushRegistry, SessionRecord, SessionStore};
pub use stopped::{StoppedSession, StoppedSessions};
pub use tombstones::{TOMBSTONE_MAX, Tombstones};

use crate::{
    batch::{BatchActor, hand_over},
    cache::CacheHandle,
    engine::EngineFactory,
    messages::{EstadoQr, OutboundItem, Payload, SessionId, StatusChanged, Urgency, unix_millis},
    session::{SessionActor, SessionConfig, SessionError, SessionSetup, SessionState, StopSession},
    supervision::CoreAddr,
};

/// How long an inspection waits for a session actor's answer.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Failures of registry commands, each mapping to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No such session.
    #[error("session {0} not found")]
    NotFound(SessionId),
    /// A session with this id exists.
    #[error("session {0} already exists")]
    AlreadyExists(SessionId),
    /// `max_active` reached.
    #[error("this node already runs its maximum of {max} sessions")]
    AtCapacity {
        /// The limit.
        max: usize,
    },
    /// Shutting down: no new sessions.
    #[error("wasup is shutting down")]
    ShuttingDown,
    /// The id's store (its WhatsApp login) belongs to another Laravel user.
    #[error("session {0} belongs to another user_id")]
    OwnedByAnother(SessionId),
    /// The session ended without a logout; `POST /start` with its id and user starts it again.
    #[error("session {0} is stopped; start it again with its user_id")]
    Stopped(SessionId),
    /// A session with this id is still finishing (logging out, deleting its store).
    #[error("session {0} is still finishing; start it again in a moment")]
    Finishing(SessionId),
    /// The session is restarting after a crash or did not answer in time.
    #[error("session {0} is restarting after a crash; try again shortly")]
    Unavailable(SessionId),
    /// The session refused the command.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// How [`SessionRegistry::remove`] ends a session.
struct Removal<'a> {
    /// Status to report to Laravel.
    report: Option<EstadoQr>,
    /// Log out of WhatsApp and delete the store.
    logout: bool,
    /// Why, for logs and the stopped record.
    reason: &'a str,
    /// Keep a `stopped` record when the login stays (sweeps, crashes); a DELETE forgets it.
    keep_record: bool,
}

impl<'a> Removal<'a> {
    /// An ending wasup decided: the login stays, and so does the record.
    fn decided(report: EstadoQr, reason: &'a str) -> Self {
        Self {
            report: Some(report),
            logout: false,
            reason,
            keep_record: true,
        }
    }
}

/// What the registry works with besides its settings.
pub struct RegistryLinks {
    /// Builds each session's engine.
    pub engine_factory: Arc<dyn EngineFactory>,
    /// Per-session stores live under `store_root/{id}`.
    pub store_root: PathBuf,
    /// Where sessions send events.
    pub batch: CoreAddr<BatchActor>,
    /// The Redis cache, when enabled.
    pub cache: Option<CacheHandle>,
    /// Durable session records, when Redis is enabled.
    pub store: Option<SessionStore>,
    /// This node's name, shown as each session's owner.
    pub node_id: String,
    /// Threads session actors run on (round robin); empty: the registry's own.
    pub session_arbiters: Vec<ArbiterHandle>,
}

/// The registry actor.
pub struct SessionRegistry {
    /// Limits, sweeps, restart policy.
    config: Arc<SessionConfig>,
    /// Builds each session's engine.
    engine_factory: Arc<dyn EngineFactory>,
    /// Per-session stores live under `store_root/{id}`.
    store_root: PathBuf,
    /// Where sessions send events (and where the registry reports given-up sessions).
    batch: CoreAddr<BatchActor>,
    /// The Redis cache sessions mirror their state to, when enabled.
    cache: Option<CacheHandle>,
    /// The Redis record of every session, for restore; `None` when Redis is disabled.
    store: Option<SessionStore>,
    /// Every session this node runs.
    sessions: HashMap<SessionId, SessionEntry>,
    /// Sessions that ended without a logout, their login kept for their user (bounded).
    stopped: StoppedSessions,
    /// This node's name.
    node_id: String,
    /// Threads session actors run on, round robin, so sessions use every core.
    session_arbiters: Vec<ArbiterHandle>,
    /// Next arbiter to use.
    next_arbiter: usize,
    /// False once shutdown began.
    accepting: bool,
    /// Crashes seen since start.
    crashes: u64,
    /// Sessions forgotten whose actors are still finishing: their ids cannot start again yet.
    tombstones: Tombstones,
    /// Logger.
    log: Logger,
}

impl SessionRegistry {
    /// A registry with no sessions (it restores those recorded in `links.store` on start).
    pub fn new(config: SessionConfig, links: RegistryLinks, log: Logger) -> Self {
        let max_stopped = config.max_stopped;
        Self {
            config: Arc::new(config),
            engine_factory: links.engine_factory,
            store_root: links.store_root,
            batch: links.batch,
            cache: links.cache,
            store: links.store,
            node_id: links.node_id,
            session_arbiters: links.session_arbiters,
            next_arbiter: 0,
            sessions: HashMap::new(),
            accepting: true,
            crashes: 0,
            tombstones: Tombstones::default(),
            stopped: StoppedSessions::new(max_stopped),
            log,
        }
    }

    /// Starts (or restarts) the actor of an entry that exists.
    fn launch(&mut self, session_id: &str, ctx: &mut Context<Self>) {
        let Some(entry) = self.sessions.get_mut(session_id) else {
            return;
        };
        entry.generation += 1;
        let setup = SessionSetup {
            session_id: session_id.to_string(),
            user_id: entry.user_id,
            generation: entry.generation,
            store_dir: self.store_root.join(session_id),
            paired_before: entry.ever_connected,
            first_of_new_id: entry.id_made_here && entry.generation == 1,
            engine_factory: Arc::clone(&self.engine_factory),
            batch: self.batch.clone(),
            cache: self.cache.clone(),
            registry: ctx.address(),
            config: Arc::clone(&self.config),
            log: self.log.new(o!("session_id" => session_id.to_string())),
        };
        let arbiter = if self.session_arbiters.is_empty() {
            actix::Arbiter::current()
        } else {
            self.next_arbiter = (self.next_arbiter + 1) % self.session_arbiters.len();
            self.session_arbiters[self.next_arbiter].clone()
        };
        entry.addr = Some(SessionActor::launch(setup, &arbiter));
        entry.record_state(SessionState::Starting, Instant::now());
        self.save(session_id, ctx);
    }

    /// Forgets a session and tells its actor to finish, reporting `report`. Its store (the
    /// WhatsApp credentials) is deleted only with `logout`, or when the session never connected
    /// (then it holds no login). With `keep_record` (an ending wasup decided, not a DELETE) a
    /// session whose login stays is kept as `stopped`.
    fn remove(&mut self, session_id: &str, ending: Removal<'_>, ctx: &mut Context<Self>) -> bool {
        let Removal {
            report,
            logout,
            reason,
            keep_record,
        } = ending;
        let Some(entry) = self.sessions.remove(session_id) else {
            return false;
        };
        let forget_store = logout || !(entry.ever_connected || entry.kept_store);
        let record = StoppedSession::now(entry.user_id, reason, entry.created_unix_ms);
        self.keep_stopped(session_id, record, keep_record && !forget_store, ctx);
        match entry.addr {
            Some(addr) => {
                addr.do_send(StopSession {
                    report,
                    logout,
                    reason: reason.to_string(),
                    forget_store,
                });
                self.entomb(session_id, addr, ctx);
            }
            // Between a crash and its restart there is no actor: report for it.
            None => {
                if let Some(estado_qr) = report {
                    self.report_for(session_id, entry.user_id, estado_qr);
                }
            }
        }
        true
    }

    fn report_for(&self, session_id: &str, user_id: Option<u64>, estado_qr: EstadoQr) {
        let event = StatusChanged {
            item: OutboundItem {
                session_id: session_id.to_string(),
                payload: Payload::Status { estado_qr },
                user_id,
                timestamp: unix_millis(),
            },
            urgency: Urgency::Urgent,
        };
        // Waits for room in the batch mailbox rather than dropping the status, and hands it
        // again to a restarted queue (the session is gone: nothing else would report it).
        let batch = self.batch.clone();
        actix_rt::spawn(async move {
            hand_over(&batch, event).await;
        });
    }

    fn sweep_pending(&mut self, ctx: &mut Context<Self>) -> usize {
        let now = Instant::now();
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, entry)| entry.is_expired_pending(now, self.config.pending_timeout))
            .map(|(id, _)| id.clone())
            .collect();
        for session_id in &expired {
            self.remove(
                session_id,
                Removal::decided(EstadoQr::Expired, "pending timeout: never scanned"),
                ctx,
            );
        }
        if !expired.is_empty() {
            info!(self.log, "Expired pending sessions removed."; "count" => expired.len());
        }
        expired.len()
    }

    fn sweep_not_connected(&mut self, ctx: &mut Context<Self>) -> usize {
        let now = Instant::now();
        let lost: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, entry)| entry.is_lost(now, self.config.not_connected_sweep_interval))
            .map(|(id, _)| id.clone())
            .collect();
        for session_id in &lost {
            self.remove(
                session_id,
                Removal::decided(
                    EstadoQr::Inactive,
                    "not connected for a whole sweep interval",
                ),
                ctx,
            );
        }
        if !lost.is_empty() {
            info!(self.log, "Inactive sessions removed."; "count" => lost.len());
        }
        lost.len()
    }

    fn crashed(
        &mut self,
        session_id: &str,
        generation: u64,
        reason: String,
        ctx: &mut Context<Self>,
    ) {
        let config = Arc::clone(&self.config);
        let Some(entry) = self.sessions.get_mut(session_id) else {
            return;
        };
        if entry.generation != generation || entry.addr.is_none() {
            return;
        }
        self.crashes += 1;
        let verdict = entry.record_crash(
            reason.clone(),
            Instant::now(),
            config.restart_backoff,
            config.max_restarts,
            config.restart_window,
        );
        match verdict {
            CrashVerdict::RestartAfter(delay) => {
                warn!(self.log, "Session crashed; restarting."; "session_id" => session_id,
                    "reason" => &reason, "restarts" => entry.restarts, "delay" => ?delay);
                self.save(session_id, ctx);
                let session_id = session_id.to_string();
                ctx.run_later(delay, move |registry, ctx| {
                    let still_waiting = registry.sessions.get(&session_id).is_some_and(|entry| {
                        entry.generation == generation && entry.addr.is_none()
                    });
                    if still_waiting && registry.accepting {
                        registry.launch(&session_id, ctx);
                    }
                });
            }
            CrashVerdict::GiveUp => {
                error!(self.log, "Session keeps crashing; given up."; "session_id" => session_id, "reason" => &reason);
                self.remove(
                    session_id,
                    Removal::decided(EstadoQr::Inactive, "crashed too often"),
                    ctx,
                );
            }
        }
    }

    fn watchdog(&mut self, ctx: &mut Context<Self>) {
        let dead: Vec<(SessionId, u64)> = self
            .sessions
            .iter()
            .filter(|(_, entry)| entry.addr.as_ref().is_some_and(|addr| !addr.connected()))
            .map(|(id, entry)| (id.clone(), entry.generation))
            .collect();
        for (session_id, generation) in dead {
            self.crashed(
                &session_id,
                generation,
                "mailbox closed (found by the watchdog)".into(),
                ctx,
            );
        }
    }

    fn stats(&self) -> RegistryStats {
        let mut by_state: HashMap<&'static str, usize> = HashMap::new();
        for entry in self.sessions.values() {
            *by_state.entry(entry.state.as_str()).or_default() += 1;
        }
        RegistryStats {
            total: self.sessions.len(),
            max_active: self.config.max_active,
            active: by_state.get("active").copied().unwrap_or(0),
            pending: self
                .sessions
                .values()
                .filter(|entry| !entry.ever_connected)
                .count(),
            by_state,
            restarts: self
                .sessions
                .values()
                .map(|entry| u64::from(entry.restarts))
                .sum(),
            crashes: self.crashes,
            stopped: self.stopped.len(),
            stopped_dropped: self.stopped.dropped,
            accepting: self.accepting,
        }
    }
}

impl Actor for SessionRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.pending_sweep_interval, |registry, ctx| {
            registry.sweep_pending(ctx);
        });
        ctx.run_interval(self.config.not_connected_sweep_interval, |registry, ctx| {
            registry.sweep_not_connected(ctx);
        });
        ctx.run_interval(self.config.watchdog_interval, Self::watchdog);
        // Hourly (more often only with a retention under an hour, as in tests).
        let retention = self.config.leftover_store_retention;
        ctx.run_interval(
            stores::LEFTOVER_SWEEP_EVERY.min(retention),
            Self::sweep_leftover_stores,
        );
        ctx.run_later(
            stores::FIRST_LEFTOVER_SWEEP.min(retention),
            Self::sweep_leftover_stores,
        );
        self.restore(ctx);
    }
}
