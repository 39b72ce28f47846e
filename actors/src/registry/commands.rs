//! Commands the API gives the registry: start, list, inspect, remove, simulate, sweeps, stats,
//! and stop-all for shutdown.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use actix::prelude::*;
use serde::Serialize;
use slog::{info, warn};

use super::{
    INSPECT_TIMEOUT, RegistryError, Removal, SessionEntry, SessionRegistry, SessionSummary,
    StoppedSession, stores,
};
use crate::{
    messages::{EstadoQr, SessionId},
    session::{
        ActorInspection, Inspect, SessionActor, SessionState, Simulate, SimulateCommand,
        StopSession, millis,
    },
};

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
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
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
        let id_made_here = start.session_id.is_none();
        let session_id = start
            .session_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        if self.sessions.contains_key(&session_id) {
            return Err(RegistryError::AlreadyExists(session_id));
        }
        if self.tombstones.stands(&session_id) {
            return Err(RegistryError::Finishing(session_id));
        }
        let reopened = self.stopped.get(&session_id).cloned();
        if reopened
            .as_ref()
            .is_some_and(|stopped| stopped.user_id != start.user_id)
        {
            return Err(RegistryError::OwnedByAnother(session_id));
        }
        let store_dir = self.store_root.join(&session_id);
        if !stores::may_start(&store_dir, start.user_id) {
            return Err(RegistryError::OwnedByAnother(session_id));
        }
        let kept_store = stores::holds_anything(&store_dir);
        if let Err(error) = stores::claim(&store_dir, start.user_id) {
            warn!(self.log, "Session store could not be claimed."; "session_id" => &session_id, "error" => %error);
        }
        let mut entry = SessionEntry::new(start.user_id, Instant::now());
        entry.kept_store = kept_store;
        entry.id_made_here = id_made_here;
        if let Some(stopped) = reopened {
            self.stopped.remove(&session_id);
            entry.created_unix_ms = stopped.created_at;
            info!(self.log, "Stopped session started again by its user."; "session_id" => &session_id);
        }
        self.sessions.insert(session_id.clone(), entry);
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
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionList {
    /// Every session.
    pub sessions: Vec<SessionSummary>,
    /// Sessions never connected yet.
    pub pending_sessions: Vec<SessionSummary>,
    /// Their count.
    pub pending_count: usize,
    /// Sessions ended without a logout, their login kept (state `stopped`), newest first.
    pub stopped_sessions: Vec<StoppedListed>,
}

/// A stopped session in [`SessionList`].
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StoppedListed {
    /// The session.
    pub session_id: SessionId,
    /// Its record.
    #[serde(flatten)]
    pub record: StoppedSession,
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
        let stopped_sessions = self
            .stopped
            .list()
            .into_iter()
            .map(|(session_id, record)| StoppedListed { session_id, record })
            .collect();
        MessageResult(SessionList {
            pending_count: pending_sessions.len(),
            sessions,
            pending_sessions,
            stopped_sessions,
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
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
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
    /// The node that owns the session (several nodes can share one Redis).
    pub node: String,
    /// Whether the actor answered.
    pub responsive: bool,
    /// Why and when it stopped, for a session in state `stopped`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<StoppedSession>,
    /// The actor's own view, when it answered.
    pub actor: Option<ActorInspection>,
}

impl Handler<InspectSession> for SessionRegistry {
    type Result = ResponseFuture<Result<SessionReport, RegistryError>>;

    fn handle(&mut self, inspect: InspectSession, _: &mut Context<Self>) -> Self::Result {
        let session_id = inspect.session_id;
        let Some(entry) = self.sessions.get(&session_id) else {
            let answer = match self.stopped.get(&session_id) {
                Some(stopped) => Ok(self.stopped_report(session_id, stopped)),
                None => Err(RegistryError::NotFound(session_id)),
            };
            return Box::pin(async move { answer });
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
            node: self.node_id.clone(),
            responsive: false,
            stopped: None,
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

    fn handle(&mut self, remove: RemoveSession, ctx: &mut Context<Self>) -> Self::Result {
        let reason = if remove.logout {
            "deleted with logout"
        } else {
            "deleted"
        };
        let removal = Removal {
            report: Some(EstadoQr::Inactive),
            logout: remove.logout,
            reason,
            keep_record: false,
        };
        if self.remove(&remove.session_id, removal, ctx) {
            Ok(())
        } else if self.stopped.remove(&remove.session_id).is_some() {
            self.unsave(&remove.session_id, ctx);
            if remove.logout {
                self.delete_store(&remove.session_id);
            }
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

    fn handle(&mut self, _: CleanupPending, ctx: &mut Context<Self>) -> usize {
        self.sweep_pending(ctx)
    }
}

/// Runs the not-connected sweep now (`POST /cleanup-inactive-sessions`).
#[derive(Message, Debug)]
#[rtype(result = "usize")]
pub struct CleanupNotConnected;

impl Handler<CleanupNotConnected> for SessionRegistry {
    type Result = usize;

    fn handle(&mut self, _: CleanupNotConnected, ctx: &mut Context<Self>) -> usize {
        self.sweep_not_connected(ctx)
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
                forget_store: false,
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
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
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
    /// Sessions ended without a logout whose record and login are kept (`stopped`).
    pub stopped: usize,
    /// Stopped records forgotten at `sessions.max_stopped` since start.
    pub stopped_dropped: u64,
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

/// The address of a session's actor, to talk to it directly.
#[derive(Message, Debug)]
#[rtype(result = "Result<Addr<SessionActor>, RegistryError>")]
pub struct LookupSession {
    /// The session.
    pub session_id: SessionId,
}

impl Handler<LookupSession> for SessionRegistry {
    type Result = Result<Addr<SessionActor>, RegistryError>;

    fn handle(&mut self, lookup: LookupSession, _: &mut Context<Self>) -> Self::Result {
        match self.sessions.get(&lookup.session_id) {
            None => Err(self.not_running(lookup.session_id)),
            Some(entry) => entry
                .addr
                .clone()
                .ok_or(RegistryError::Unavailable(lookup.session_id)),
        }
    }
}
