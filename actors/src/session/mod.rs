//! `SessionActor`: one WhatsApp session. It drives an [`Engine`], turns its events into
//! `QrCode` / `StatusChanged` for the batch queue, reconnects after drops, and finishes itself
//! on logout, QR expiry, idleness or when the registry asks.

mod config;
mod qr_forwarding;
mod state;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use actix::prelude::*;
use slog::{Logger, debug, info, warn};

pub use config::SessionConfig;
pub use qr_forwarding::{QrDecision, QrForwarder};
pub use state::{ActorInspection, SessionState};

use crate::{
    batch::BatchActor,
    crash::DeathNotice,
    engine::{
        DisconnectReason, Engine, EngineError, EngineEvent, EngineFactory, EngineSpec,
        SimulatedAction, event_channel,
    },
    messages::{
        EstadoQr, OutboundItem, Payload, QrCode, SessionId, StatusChanged, Urgency, unix_millis,
    },
    qr_image::qr_data_url,
    registry::{SessionFinished, SessionRegistry, SessionStateChanged},
    sink::backoff_delay,
};

/// How soon a session retries handing an event to a full batch mailbox.
const FULL_MAILBOX_RETRY: Duration = Duration::from_millis(20);

/// Everything the registry hands a new session actor.
pub struct SessionSetup {
    /// The session.
    pub session_id: SessionId,
    /// Its Laravel owner.
    pub user_id: Option<u64>,
    /// Incarnation number (bumped on each restart).
    pub generation: u64,
    /// Where its engine keeps credentials.
    pub store_dir: PathBuf,
    /// Builds its engine.
    pub engine_factory: Arc<dyn EngineFactory>,
    /// Where its events go.
    pub batch: Addr<BatchActor>,
    /// Who supervises it.
    pub registry: Addr<SessionRegistry>,
    /// Shared settings.
    pub config: Arc<SessionConfig>,
    /// Logger with the session id attached.
    pub log: Logger,
}

/// Events the batch mailbox could not take yet; the latest per lane is kept.
#[derive(Default)]
struct HeldEvents {
    /// The newest QR not yet accepted.
    qr: Option<QrCode>,
    /// The newest status not yet accepted.
    status: Option<StatusChanged>,
    /// Whether a retry is scheduled.
    retry_scheduled: bool,
}

/// How a session ends.
#[derive(Clone, Debug)]
struct Ending {
    /// Status to report to Laravel, if any.
    report: Option<EstadoQr>,
    /// Log out of WhatsApp (forget credentials) rather than just close.
    logout: bool,
    /// Why, for logs and the registry.
    reason: String,
    /// Tell the registry (when the session ends by itself, not on the registry's word).
    notify_registry: bool,
    /// Ask the registry for a fresh incarnation (max lifetime reached).
    renew: bool,
}

/// One WhatsApp session.
pub struct SessionActor {
    /// The session.
    session_id: SessionId,
    /// Its Laravel owner.
    user_id: Option<u64>,
    /// Incarnation number, so the registry ignores news from an old incarnation.
    generation: u64,
    /// The connection.
    engine: Box<dyn Engine>,
    /// Engine events not yet handled (shared with the engine's sender).
    event_backlog: Arc<AtomicUsize>,
    /// Where QR and status events go.
    batch: Addr<BatchActor>,
    /// The supervisor.
    registry: Addr<SessionRegistry>,
    /// Shared settings.
    config: Arc<SessionConfig>,
    /// Lifecycle state.
    state: SessionState,
    /// QR dedupe and throttle.
    qr: QrForwarder,
    /// The pending trailing-edge QR release.
    qr_release: Option<SpawnHandle>,
    /// QR codes produced by the engine.
    qr_count: u64,
    /// QR codes handed on.
    qr_forwarded: u64,
    /// When the last QR arrived.
    last_qr_at: Option<Instant>,
    /// The last status handed on (statuses are deduplicated too).
    last_status: Option<EstadoQr>,
    /// Events waiting for room in the batch mailbox.
    held: HeldEvents,
    /// Reconnect attempts since the connection was last open.
    reconnect_attempts: u32,
    /// Reconnects since this actor started.
    reconnects: u64,
    /// The last error seen.
    last_error: Option<String>,
    /// When this actor started.
    started_at: Instant,
    /// When the connection opened, while active.
    connected_at: Option<Instant>,
    /// When the engine last said anything.
    last_event_at: Instant,
    /// The paired phone.
    phone: Option<String>,
    /// Tells the registry if this actor dies without a clean stop.
    death_notice: DeathNotice,
    /// Logger with the session id.
    log: Logger,
}

impl SessionActor {
    /// Builds the engine and starts the actor on the current arbiter.
    pub fn launch(setup: SessionSetup) -> Addr<SessionActor> {
        let (events, receiver) = event_channel();
        let spec = EngineSpec {
            session_id: setup.session_id.clone(),
            user_id: setup.user_id,
            store_dir: setup.store_dir,
        };
        let engine = setup.engine_factory.create(&spec, events);
        let death_notice = DeathNotice::new(
            setup.registry.clone().recipient(),
            setup.session_id.clone(),
            setup.generation,
        );
        let now = Instant::now();
        SessionActor::create(move |ctx| {
            let event_backlog = receiver.backlog();
            ctx.add_stream(receiver.into_stream());
            SessionActor {
                session_id: setup.session_id,
                user_id: setup.user_id,
                generation: setup.generation,
                engine,
                event_backlog,
                batch: setup.batch,
                registry: setup.registry,
                config: setup.config,
                state: SessionState::Starting,
                qr: QrForwarder::default(),
                qr_release: None,
                qr_count: 0,
                qr_forwarded: 0,
                last_qr_at: None,
                last_status: None,
                held: HeldEvents::default(),
                reconnect_attempts: 0,
                reconnects: 0,
                last_error: None,
                started_at: now,
                connected_at: None,
                last_event_at: now,
                phone: None,
                death_notice,
                log: setup.log,
            }
        })
    }

    fn set_state(&mut self, state: SessionState) {
        if self.state == state {
            return;
        }
        debug!(self.log, "Session state changed."; "from" => self.state.as_str(), "to" => state.as_str());
        self.state = state;
        self.registry.do_send(SessionStateChanged {
            session_id: self.session_id.clone(),
            generation: self.generation,
            state,
        });
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        self.engine
            .connect()
            .into_actor(self)
            .map(|result, actor, ctx| {
                if let Err(error) = result {
                    actor.connection_dropped(format!("connect failed: {error}"), ctx);
                }
            })
            .spawn(ctx);
    }

    fn item(&self, payload: Payload) -> OutboundItem {
        OutboundItem {
            session_id: self.session_id.clone(),
            payload,
            user_id: self.user_id,
            timestamp: unix_millis(),
        }
    }

    fn status_event(&mut self, estado_qr: EstadoQr, urgency: Urgency) -> Option<StatusChanged> {
        if self.last_status == Some(estado_qr) {
            return None;
        }
        self.last_status = Some(estado_qr);
        Some(StatusChanged {
            item: self.item(Payload::Status { estado_qr }),
            urgency,
        })
    }

    fn report_status(&mut self, estado_qr: EstadoQr, urgency: Urgency, ctx: &mut Context<Self>) {
        if let Some(event) = self.status_event(estado_qr, urgency) {
            self.held.status = Some(event);
            self.flush_held(ctx);
        }
    }

    fn forward_qr(&mut self, code: &str, ctx: &mut Context<Self>) {
        match qr_data_url(code) {
            Ok(qr) => {
                self.qr_forwarded += 1;
                self.held.qr = Some(QrCode {
                    item: self.item(Payload::Qr { qr }),
                });
                self.flush_held(ctx);
                self.report_status(EstadoQr::Pending, Urgency::Normal, ctx);
            }
            Err(error) => {
                warn!(self.log, "QR could not be rendered."; "error" => %error);
                self.last_error = Some(error.to_string());
            }
        }
    }

    /// Hands held events to the batch actor without waiting; what does not fit is retried soon.
    fn flush_held(&mut self, ctx: &mut Context<Self>) {
        if let Some(event) = self.held.qr.take() {
            match self.batch.try_send(event) {
                Err(SendError::Full(event)) => self.held.qr = Some(event),
                Ok(()) | Err(SendError::Closed(_)) => {}
            }
        }
        if let Some(event) = self.held.status.take() {
            match self.batch.try_send(event) {
                Err(SendError::Full(event)) => self.held.status = Some(event),
                Ok(()) | Err(SendError::Closed(_)) => {}
            }
        }
        let anything_held = self.held.qr.is_some() || self.held.status.is_some();
        if anything_held && !self.held.retry_scheduled {
            self.held.retry_scheduled = true;
            ctx.run_later(FULL_MAILBOX_RETRY, |actor, ctx| {
                actor.held.retry_scheduled = false;
                actor.flush_held(ctx);
            });
        }
    }

    fn on_qr(&mut self, code: String, ctx: &mut Context<Self>) {
        self.qr_count += 1;
        let now = Instant::now();
        self.last_qr_at = Some(now);
        if matches!(
            self.state,
            SessionState::Starting | SessionState::Connecting
        ) {
            self.set_state(SessionState::Pending);
        }
        match self.qr.offer(code, now, self.config.qr_throttle) {
            QrDecision::Forward(code) => self.forward_qr(&code, ctx),
            QrDecision::HoldUntil(at) => {
                if self.qr_release.is_none() {
                    let handle = ctx.run_later(at.saturating_duration_since(now), |actor, ctx| {
                        actor.qr_release = None;
                        if let Some(code) =
                            actor.qr.release(Instant::now(), actor.config.qr_throttle)
                        {
                            actor.forward_qr(&code, ctx);
                        }
                    });
                    self.qr_release = Some(handle);
                }
            }
            QrDecision::Duplicate => {}
        }
    }

    fn discard_held_qr(&mut self, ctx: &mut Context<Self>) {
        self.qr.discard_held();
        self.held.qr = None;
        if let Some(handle) = self.qr_release.take() {
            ctx.cancel_future(handle);
        }
    }

    fn on_connected(&mut self, ctx: &mut Context<Self>) {
        self.discard_held_qr(ctx);
        self.reconnect_attempts = 0;
        self.connected_at = Some(Instant::now());
        self.set_state(SessionState::Active);
        info!(self.log, "Session connected.");
        self.report_status(EstadoQr::Active, Urgency::Urgent, ctx);
    }

    fn on_disconnected(&mut self, reason: DisconnectReason, ctx: &mut Context<Self>) {
        self.connected_at = None;
        match reason {
            DisconnectReason::LoggedOut => self.finish(
                Ending {
                    report: Some(EstadoQr::Inactive),
                    logout: true,
                    reason: "logged out".into(),
                    notify_registry: true,
                    renew: false,
                },
                ctx,
            ),
            DisconnectReason::TimedOut => self.finish(
                Ending {
                    report: Some(EstadoQr::Expired),
                    logout: false,
                    reason: "every QR code expired without a scan".into(),
                    notify_registry: true,
                    renew: false,
                },
                ctx,
            ),
            DisconnectReason::RestartRequired => {
                self.set_state(SessionState::Pairing);
                self.connect(ctx);
            }
            DisconnectReason::ConnectionLost | DisconnectReason::ConnectionReplaced => {
                self.connection_dropped(reason.as_str().to_string(), ctx);
            }
        }
    }

    fn connection_dropped(&mut self, reason: String, ctx: &mut Context<Self>) {
        if self.state == SessionState::Closed {
            return;
        }
        self.last_error = Some(reason.clone());
        self.reconnect_attempts += 1;
        if self.reconnect_attempts > self.config.reconnect_max_attempts {
            let reason = format!(
                "gave up after {} reconnect attempts ({reason})",
                self.config.reconnect_max_attempts
            );
            return self.finish(
                Ending {
                    report: Some(EstadoQr::Inactive),
                    logout: false,
                    reason,
                    notify_registry: true,
                    renew: false,
                },
                ctx,
            );
        }
        let delay = backoff_delay(
            self.config.reconnect_base,
            self.config.reconnect_max,
            self.reconnect_attempts - 1,
        );
        info!(self.log, "Connection closed; reconnecting."; "reason" => &reason, "attempt" => self.reconnect_attempts, "delay" => ?delay);
        self.set_state(SessionState::Connecting);
        ctx.run_later(delay, |actor, ctx| {
            if actor.state == SessionState::Connecting {
                actor.reconnects += 1;
                actor.connect(ctx);
            }
        });
    }

    /// Ends the session: reports its last status (waiting for room in the batch mailbox, so it
    /// is not lost), closes or logs out the engine, then stops without a death notice.
    fn finish(&mut self, ending: Ending, ctx: &mut Context<Self>) {
        if self.state == SessionState::Closed {
            return;
        }
        info!(self.log, "Session finished."; "reason" => &ending.reason,
            "status" => ending.report.map(EstadoQr::as_str));
        self.discard_held_qr(ctx);
        self.set_state(SessionState::Closed);
        let final_status = ending
            .report
            .and_then(|estado| self.status_event(estado, Urgency::Urgent))
            .or_else(|| self.held.status.take());
        self.held.status = None;
        if ending.notify_registry {
            self.registry.do_send(SessionFinished {
                session_id: self.session_id.clone(),
                generation: self.generation,
                reason: ending.reason.clone(),
                renew: ending.renew,
            });
        }
        let close_engine = if ending.logout {
            let logout = self.engine.logout();
            Box::pin(async move {
                let _ = logout.await;
            }) as futures_util::future::LocalBoxFuture<'static, ()>
        } else {
            self.engine.shutdown()
        };
        let batch = self.batch.clone();
        ctx.wait(
            async move {
                if let Some(status) = final_status {
                    let _ = batch.send(status).await;
                }
                close_engine.await;
            }
            .into_actor(self)
            .map(|(), actor, ctx| {
                actor.death_notice.disarm();
                ctx.stop();
            }),
        );
    }

    fn housekeeping(&mut self, ctx: &mut Context<Self>) {
        if self.state == SessionState::Closed {
            return;
        }
        if self.started_at.elapsed() >= self.config.max_lifetime {
            self.finish(
                Ending {
                    report: None,
                    logout: false,
                    reason: "max lifetime reached: renewing".into(),
                    notify_registry: true,
                    renew: true,
                },
                ctx,
            );
        } else if self.last_event_at.elapsed() >= self.config.idle_ttl {
            self.finish(
                Ending {
                    report: Some(EstadoQr::Inactive),
                    logout: false,
                    reason: "idle".into(),
                    notify_registry: true,
                    renew: false,
                },
                ctx,
            );
        }
    }

    fn inspection(&self) -> ActorInspection {
        let now = Instant::now();
        ActorInspection {
            state: self.state,
            engine: self.engine.kind(),
            actor_age_ms: millis(now - self.started_at),
            connected_for_ms: self.connected_at.map(|at| millis(now - at)),
            last_event_age_ms: millis(now - self.last_event_at),
            qr_count: self.qr_count,
            last_qr_age_ms: self.last_qr_at.map(|at| millis(now - at)),
            qr_forwarded: self.qr_forwarded,
            qr_duplicates: self.qr.duplicates,
            qr_held: self.qr.has_held(),
            last_status: self.last_status.map(EstadoQr::as_str),
            reconnect_attempts: self.reconnect_attempts,
            reconnects: self.reconnects,
            last_error: self.last_error.clone(),
            mailbox_depth: self.event_backlog.load(Ordering::Relaxed),
            phone: self.phone.clone(),
        }
    }
}

/// Whole milliseconds of a duration, saturating.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(self.log, "Session started."; "engine" => self.engine.kind(), "generation" => self.generation);
        self.connect(ctx);
        ctx.run_interval(self.config.housekeeping_interval, Self::housekeeping);
    }
}

impl StreamHandler<EngineEvent> for SessionActor {
    fn handle(&mut self, event: EngineEvent, ctx: &mut Context<Self>) {
        if self.state == SessionState::Closed {
            return;
        }
        self.last_event_at = Instant::now();
        match event {
            EngineEvent::Qr { code, .. } => self.on_qr(code, ctx),
            EngineEvent::Paired { phone } => {
                self.phone = phone;
                self.discard_held_qr(ctx);
                self.set_state(SessionState::Pairing);
            }
            EngineEvent::Connected => self.on_connected(ctx),
            EngineEvent::Disconnected { reason } => self.on_disconnected(reason, ctx),
        }
    }

    /// The engine dropped its sender: it is gone. Keep the actor; the registry decides.
    fn finished(&mut self, _: &mut Context<Self>) {
        if self.state != SessionState::Closed {
            warn!(self.log, "Engine event stream ended.");
            self.last_error = Some("engine event stream ended".into());
        }
    }
}

/// Failures of session commands.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The session is closing.
    #[error("the session is closing")]
    Closing,
}

/// Test hooks of the simulated engine, plus a deliberate crash of the actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimulateCommand {
    /// Passed to the engine.
    Engine(SimulatedAction),
    /// The actor panics in its handler (proves crash restarts).
    Crash,
}

/// Applies a test hook.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), SessionError>")]
pub struct Simulate {
    /// What to do.
    pub command: SimulateCommand,
}

impl Handler<Simulate> for SessionActor {
    type Result = Result<(), SessionError>;

    fn handle(&mut self, simulate: Simulate, _: &mut Context<Self>) -> Self::Result {
        if self.state == SessionState::Closed {
            return Err(SessionError::Closing);
        }
        match simulate.command {
            SimulateCommand::Engine(action) => Ok(self.engine.simulate(action)?),
            SimulateCommand::Crash => {
                // Test hook: the registry must notice and restart this session.
                panic!("simulated crash requested through the API")
            }
        }
    }
}

/// Reads the actor's own view of itself.
#[derive(Message, Debug)]
#[rtype(result = "ActorInspection")]
pub struct Inspect;

impl Handler<Inspect> for SessionActor {
    type Result = MessageResult<Inspect>;

    fn handle(&mut self, _: Inspect, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.inspection())
    }
}

/// The registry ends this session.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopSession {
    /// Status to report, if any (none on shutdown: the session will be restored).
    pub report: Option<EstadoQr>,
    /// Log out of WhatsApp rather than just close.
    pub logout: bool,
    /// Why.
    pub reason: String,
}

impl Handler<StopSession> for SessionActor {
    type Result = ();

    fn handle(&mut self, stop: StopSession, ctx: &mut Context<Self>) {
        self.finish(
            Ending {
                report: stop.report,
                logout: stop.logout,
                reason: stop.reason,
                notify_registry: false,
                renew: false,
            },
            ctx,
        );
    }
}
