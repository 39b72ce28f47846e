//! `SessionRegistry`: owns every session actor. Starts, stops, lists and inspects them, enforces
//! `max_active`, runs the pending and not-connected sweeps, and restarts a session whose actor
//! stopped or panicked (noticed through its [`DeathNotice`](crate::crash::DeathNotice) or,
//! failing that, a watchdog that checks every mailbox is still open).

mod entry;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use actix::prelude::*;
use serde::Serialize;
use slog::{Logger, error, info, o, warn};

pub use entry::{CrashVerdict, SessionEntry, SessionSummary};

use crate::{
    batch::BatchActor,
    engine::EngineFactory,
    messages::{EstadoQr, OutboundItem, Payload, SessionId, StatusChanged, Urgency, unix_millis},
    session::{
        ActorInspection, Inspect, SessionActor, SessionConfig, SessionError, SessionSetup,
        SessionState, Simulate, SimulateCommand, StopSession, millis,
    },
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
    /// The session is restarting after a crash or did not answer in time.
    #[error("session {0} is not answering (restarting?)")]
    Unavailable(SessionId),
    /// The session refused the command.
    #[error(transparent)]
    Session(#[from] SessionError),
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
    batch: Addr<BatchActor>,
    /// Every session this node owns.
    sessions: HashMap<SessionId, SessionEntry>,
    /// False once shutdown began.
    accepting: bool,
    /// Crashes seen since start.
    crashes: u64,
    /// Logger.
    log: Logger,
}

impl SessionRegistry {
    /// A registry with no sessions.
    pub fn new(
        config: SessionConfig,
        engine_factory: Arc<dyn EngineFactory>,
        store_root: PathBuf,
        batch: Addr<BatchActor>,
        log: Logger,
    ) -> Self {
        Self {
            config: Arc::new(config),
            engine_factory,
            store_root,
            batch,
            sessions: HashMap::new(),
            accepting: true,
            crashes: 0,
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
            engine_factory: Arc::clone(&self.engine_factory),
            batch: self.batch.clone(),
            registry: ctx.address(),
            config: Arc::clone(&self.config),
            log: self.log.new(o!("session_id" => session_id.to_string())),
        };
        entry.addr = Some(SessionActor::launch(setup));
        entry.record_state(SessionState::Starting, Instant::now());
    }

    /// Forgets a session and tells its actor to finish, reporting `report`.
    fn remove(
        &mut self,
        session_id: &str,
        report: Option<EstadoQr>,
        logout: bool,
        reason: &str,
    ) -> bool {
        let Some(entry) = self.sessions.remove(session_id) else {
            return false;
        };
        match entry.addr {
            Some(addr) => addr.do_send(StopSession {
                report,
                logout,
                reason: reason.to_string(),
            }),
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
        // Waits for room in the batch mailbox rather than dropping the status.
        let batch = self.batch.clone();
        actix_rt::spawn(async move {
            let _ = batch.send(event).await;
        });
    }

    fn sweep_pending(&mut self) -> usize {
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
                Some(EstadoQr::Expired),
                false,
                "pending timeout: never scanned",
            );
        }
        if !expired.is_empty() {
            info!(self.log, "Expired pending sessions removed."; "count" => expired.len());
        }
        expired.len()
    }

    fn sweep_not_connected(&mut self) -> usize {
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
                Some(EstadoQr::Inactive),
                false,
                "not connected for a whole sweep interval",
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
                    Some(EstadoQr::Inactive),
                    false,
                    "crashed too often",
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
            accepting: self.accepting,
        }
    }
}

impl Actor for SessionRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.pending_sweep_interval, |registry, _| {
            registry.sweep_pending();
        });
        ctx.run_interval(self.config.not_connected_sweep_interval, |registry, _| {
            registry.sweep_not_connected();
        });
        ctx.run_interval(self.config.watchdog_interval, Self::watchdog);
    }
}

/// Creates a session.
#[derive(Message, Debug)]
#[rtype(result = "Result<SessionStarted, RegistryError>")]
pub struct StartSession {
    /// Its Laravel owner.
    pub user_id: Option<u64>,
    /// A chosen id; a new UUID when absent.
    pub session_id: Option<SessionId>,
}

/// Answer to [`StartSession`].
#[derive(Clone, Debug, Serialize)]
pub struct SessionStarted {
    /// The session's id.
    pub session_id: SessionId,
    /// Its first state (`pending`: a QR follows).
    pub status: &'static str,
}

impl Handler<StartSession> for SessionRegistry {
    type Result = Result<SessionStarted, RegistryError>;

    fn handle(&mut self, start: StartSession, ctx: &mut Context<Self>) -> Self::Result {
        if !self.accepting {
            return Err(RegistryError::ShuttingDown);
        }
        if self.sessions.len() >= self.config.max_active {
            return Err(RegistryError::AtCapacity {
                max: self.config.max_active,
            });
        }
        let session_id = start
            .session_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        if self.sessions.contains_key(&session_id) {
            return Err(RegistryError::AlreadyExists(session_id));
        }
        self.sessions.insert(
            session_id.clone(),
            SessionEntry::new(start.user_id, Instant::now()),
        );
        self.launch(&session_id, ctx);
        Ok(SessionStarted {
            session_id,
            status: EstadoQr::Pending.as_str(),
        })
    }
}

/// Lists sessions (`GET /sessions`).
#[derive(Message, Debug)]
#[rtype(result = "SessionList")]
pub struct ListSessions;

/// Answer to [`ListSessions`], in the seeds' shape.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionList {
    /// Every session.
    pub sessions: Vec<SessionSummary>,
    /// Sessions never connected yet.
    pub pending_sessions: Vec<SessionSummary>,
    /// Their count.
    pub pending_count: usize,
}

impl Handler<ListSessions> for SessionRegistry {
    type Result = MessageResult<ListSessions>;

    fn handle(&mut self, _: ListSessions, _: &mut Context<Self>) -> Self::Result {
        let now = Instant::now();
        let mut sessions: Vec<SessionSummary> = self
            .sessions
            .iter()
            .map(|(id, entry)| entry.summary(id, now))
            .collect();
        sessions.sort_by_key(|summary| std::cmp::Reverse(summary.age_ms));
        let pending_sessions: Vec<SessionSummary> = sessions
            .iter()
            .filter(|summary| {
                self.sessions
                    .get(&summary.session_id)
                    .is_some_and(|entry| !entry.ever_connected)
            })
            .cloned()
            .collect();
        MessageResult(SessionList {
            pending_count: pending_sessions.len(),
            sessions,
            pending_sessions,
        })
    }
}

/// Inspects one session (`GET /sessions/{id}`).
#[derive(Message, Debug)]
#[rtype(result = "Result<SessionReport, RegistryError>")]
pub struct InspectSession {
    /// The session.
    pub session_id: SessionId,
}

/// Supervision facts plus the actor's own view.
#[derive(Clone, Debug, Serialize)]
pub struct SessionReport {
    /// The session.
    pub session_id: SessionId,
    /// Its Laravel owner.
    pub user_id: Option<u64>,
    /// Lifecycle state (the actor's when it answered).
    pub state: SessionState,
    /// Engine kind.
    pub engine: &'static str,
    /// Incarnation number.
    pub generation: u64,
    /// Creation time, ms since the epoch.
    pub created_at: u64,
    /// Milliseconds since creation.
    pub age_ms: u64,
    /// Crash restarts.
    pub restarts: u32,
    /// The last crash's reason.
    pub last_crash: Option<String>,
    /// Renewals after max lifetime.
    pub renewals: u32,
    /// Whether the actor answered.
    pub responsive: bool,
    /// The actor's own view, when it answered.
    pub actor: Option<ActorInspection>,
}

impl Handler<InspectSession> for SessionRegistry {
    type Result = ResponseFuture<Result<SessionReport, RegistryError>>;

    fn handle(&mut self, inspect: InspectSession, _: &mut Context<Self>) -> Self::Result {
        let session_id = inspect.session_id;
        let Some(entry) = self.sessions.get(&session_id) else {
            return Box::pin(async move { Err(RegistryError::NotFound(session_id)) });
        };
        let mut report = SessionReport {
            session_id,
            user_id: entry.user_id,
            state: entry.state,
            engine: self.engine_factory.kind(),
            generation: entry.generation,
            created_at: entry.created_unix_ms,
            age_ms: millis(entry.created_at.elapsed()),
            restarts: entry.restarts,
            last_crash: entry.last_crash.clone(),
            renewals: entry.renewals,
            responsive: false,
            actor: None,
        };
        let addr = entry.addr.clone();
        Box::pin(async move {
            if let Some(addr) = addr
                && let Ok(inspection) = addr.send(Inspect).timeout(INSPECT_TIMEOUT).await
            {
                report.state = inspection.state;
                report.responsive = true;
                report.actor = Some(inspection);
            }
            Ok(report)
        })
    }
}

/// Stops and forgets a session (`DELETE /sessions/{id}`); reports `inactive`.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct RemoveSession {
    /// The session.
    pub session_id: SessionId,
    /// Log out of WhatsApp too.
    pub logout: bool,
}

impl Handler<RemoveSession> for SessionRegistry {
    type Result = Result<(), RegistryError>;

    fn handle(&mut self, remove: RemoveSession, _: &mut Context<Self>) -> Self::Result {
        let reason = if remove.logout {
            "deleted with logout"
        } else {
            "deleted"
        };
        if self.remove(
            &remove.session_id,
            Some(EstadoQr::Inactive),
            remove.logout,
            reason,
        ) {
            Ok(())
        } else {
            Err(RegistryError::NotFound(remove.session_id))
        }
    }
}

/// Passes a test hook to a session.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct SimulateSession {
    /// The session.
    pub session_id: SessionId,
    /// The hook.
    pub command: SimulateCommand,
}

impl Handler<SimulateSession> for SessionRegistry {
    type Result = ResponseFuture<Result<(), RegistryError>>;

    fn handle(&mut self, simulate: SimulateSession, _: &mut Context<Self>) -> Self::Result {
        let session_id = simulate.session_id;
        let addr = match self.sessions.get(&session_id) {
            None => return Box::pin(async move { Err(RegistryError::NotFound(session_id)) }),
            Some(entry) => entry.addr.clone(),
        };
        Box::pin(async move {
            let Some(addr) = addr else {
                return Err(RegistryError::Unavailable(session_id));
            };
            let command = simulate.command;
            if command == SimulateCommand::Crash {
                // The actor dies handling it, so no answer comes: do not wait for one.
                addr.do_send(Simulate { command });
                return Ok(());
            }
            match addr
                .send(Simulate { command })
                .timeout(INSPECT_TIMEOUT)
                .await
            {
                Ok(result) => Ok(result?),
                Err(_) => Err(RegistryError::Unavailable(session_id)),
            }
        })
    }
}

/// Runs the pending sweep now (`POST /cleanup-pending-sessions`); answers how many were removed.
#[derive(Message, Debug)]
#[rtype(result = "usize")]
pub struct CleanupPending;

impl Handler<CleanupPending> for SessionRegistry {
    type Result = usize;

    fn handle(&mut self, _: CleanupPending, _: &mut Context<Self>) -> usize {
        self.sweep_pending()
    }
}

/// Runs the not-connected sweep now (`POST /cleanup-inactive-sessions`).
#[derive(Message, Debug)]
#[rtype(result = "usize")]
pub struct CleanupNotConnected;

impl Handler<CleanupNotConnected> for SessionRegistry {
    type Result = usize;

    fn handle(&mut self, _: CleanupNotConnected, _: &mut Context<Self>) -> usize {
        self.sweep_not_connected()
    }
}

/// Shutdown: refuse new sessions and close every session's engine without reporting a status
/// (they are not logged out). Answers once every session actor has stopped.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopAllSessions;

impl Handler<StopAllSessions> for SessionRegistry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopAllSessions, _: &mut Context<Self>) -> Self::Result {
        self.accepting = false;
        let addrs: Vec<Addr<SessionActor>> = self
            .sessions
            .drain()
            .filter_map(|(_, entry)| entry.addr)
            .collect();
        info!(self.log, "Stopping every session."; "count" => addrs.len());
        for addr in &addrs {
            addr.do_send(StopSession {
                report: None,
                logout: false,
                reason: "shutdown".into(),
            });
        }
        Box::pin(async move {
            while addrs.iter().any(Addr::connected) {
                actix_rt::time::sleep(Duration::from_millis(10)).await;
            }
        })
    }
}

/// Registry figures for `/health` and metrics.
#[derive(Clone, Debug, Serialize)]
pub struct RegistryStats {
    /// Sessions owned.
    pub total: usize,
    /// The cap.
    pub max_active: usize,
    /// Connected sessions.
    pub active: usize,
    /// Never-connected sessions.
    pub pending: usize,
    /// Count per state.
    pub by_state: HashMap<&'static str, usize>,
    /// Crash restarts of current sessions.
    pub restarts: u64,
    /// Crashes since start.
    pub crashes: u64,
    /// Whether new sessions are accepted.
    pub accepting: bool,
}

/// Reads registry figures.
#[derive(Message, Debug)]
#[rtype(result = "RegistryStats")]
pub struct GetRegistryStats;

impl Handler<GetRegistryStats> for SessionRegistry {
    type Result = MessageResult<GetRegistryStats>;

    fn handle(&mut self, _: GetRegistryStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats())
    }
}

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

    fn handle(&mut self, changed: SessionStateChanged, _: &mut Context<Self>) {
        if let Some(entry) = self.sessions.get_mut(&changed.session_id)
            && entry.generation == changed.generation
        {
            entry.record_state(changed.state, Instant::now());
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
        } else {
            self.sessions.remove(&finished.session_id);
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
