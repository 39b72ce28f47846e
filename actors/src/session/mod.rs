//! `SessionActor`: one WhatsApp session. It drives an [`Engine`], turns its events into
//! `QrCode` / `StatusChanged` for the batch queue, reconnects after drops, and finishes itself
//! on logout, QR expiry, idleness or when the registry asks.

mod commands;
mod config;
mod forwarding;
mod lifecycle;
mod qr_forwarding;
mod shown_qr;
mod state;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use actix::{ArbiterHandle, prelude::*};
use slog::{Logger, debug, info, warn};

pub use commands::{
    CurrentQr, Inspect, QrView, ReportStateAgain, RequestPairCode, SendText, SessionError,
    Simulate, SimulateCommand, StopSession,
};
pub use config::SessionConfig;
use forwarding::HeldEvents;
pub use qr_forwarding::{QrDecision, QrForwarder, fnv1a, qr_digest};
use shown_qr::ShownQr;
pub use state::{ActorInspection, SessionState};

use crate::{
    batch::BatchActor,
    cache::{CacheEntry, CacheHandle, LastQrDigest},
    crash::DeathNotice,
    engine::{Engine, EngineEvent, EngineFactory, EngineSpec, event_channel},
    messages::{EstadoQr, SessionId},
    registry::{SessionRegistry, SessionStateChanged},
    supervision::CoreAddr,
};

/// How long a session waits for the cache's answers before going on without them.
pub(crate) const CACHE_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// It was connected before (restored): without credentials it must not pair again.
    pub paired_before: bool,
    /// The first actor of an id wasup made just now: no QR can have been forwarded for it, so
    /// the last-QR read from Redis is skipped (at a start burst, one read per session adds up).
    pub first_of_new_id: bool,
    /// Builds its engine.
    pub engine_factory: Arc<dyn EngineFactory>,
    /// Where its events go.
    pub batch: CoreAddr<BatchActor>,
    /// The Redis cache, when enabled.
    pub cache: Option<CacheHandle>,
    /// Who supervises it.
    pub registry: Addr<SessionRegistry>,
    /// Shared settings.
    pub config: Arc<SessionConfig>,
    /// Logger with the session id attached.
    pub log: Logger,
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
    batch: CoreAddr<BatchActor>,
    /// Mirrors QR, status, connection and info to Redis; answers `is_session_active`.
    cache: Option<CacheHandle>,
    /// The supervisor.
    registry: Addr<SessionRegistry>,
    /// Shared settings.
    config: Arc<SessionConfig>,
    /// Lifecycle state.
    state: SessionState,
    /// QR dedupe and storm guard.
    qr: QrForwarder,
    /// The pending trailing-edge QR release (one at a time: a newer hold replaces it).
    qr_release: Option<SpawnHandle>,
    /// QR codes produced by the engine.
    qr_count: u64,
    /// QR codes handed on.
    qr_forwarded: u64,
    /// QR codes rendered as PNG: at most one rendering per QR, and only for a QR that is
    /// forwarded or asked for (a QR the storm guard replaced is never rendered).
    qr_rendered: u64,
    /// When the last QR arrived.
    last_qr_at: Option<Instant>,
    /// The QR shown now, its expiry and rendering; `None` once connected or closed.
    current_qr: Option<ShownQr>,
    /// Text messages sent through the engine.
    messages_sent: u64,
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
    /// When the engine tries WhatsApp again, while it cannot reach it (state `error`).
    next_retry_at: Option<Instant>,
    /// Incoming messages handed to the batch queue.
    messages_received: u64,
    /// Acknowledgements of received messages waiting for the outbox write in flight.
    unconfirmed: forwarding::Unconfirmed,
    /// When this actor started.
    started_at: Instant,
    /// When the connection opened, while active.
    connected_at: Option<Instant>,
    /// When the engine last said anything.
    last_event_at: Instant,
    /// The paired phone.
    phone: Option<String>,
    /// Where the engine keeps this session's credentials; removed when the session is forgotten.
    store_dir: PathBuf,
    /// Connected before this incarnation (restored): it must not start pairing again.
    paired_before: bool,
    /// See [`SessionSetup::first_of_new_id`].
    first_of_new_id: bool,
    /// Tells the registry if this actor dies without a clean stop.
    death_notice: DeathNotice,
    /// Logger with the session id.
    log: Logger,
}

impl SessionActor {
    /// Starts the actor on `arbiter`, building its engine there (engines may spawn local tasks).
    pub fn launch(setup: SessionSetup, arbiter: &ArbiterHandle) -> Addr<SessionActor> {
        SessionActor::start_in_arbiter(arbiter, move |ctx| {
            let (events, receiver) = event_channel();
            let spec = EngineSpec {
                session_id: setup.session_id.clone(),
                user_id: setup.user_id,
                store_dir: setup.store_dir.clone(),
                paired_before: setup.paired_before,
            };
            let engine = setup.engine_factory.create(&spec, events);
            let death_notice = DeathNotice::new(
                setup.registry.clone().recipient(),
                setup.session_id.clone(),
                setup.generation,
            );
            let now = Instant::now();
            let event_backlog = receiver.backlog();
            ctx.add_stream(receiver.into_stream());
            SessionActor {
                session_id: setup.session_id,
                user_id: setup.user_id,
                generation: setup.generation,
                engine,
                event_backlog,
                batch: setup.batch,
                cache: setup.cache,
                registry: setup.registry,
                config: setup.config,
                state: SessionState::Starting,
                qr: QrForwarder::default(),
                qr_release: None,
                qr_count: 0,
                qr_forwarded: 0,
                qr_rendered: 0,
                last_qr_at: None,
                current_qr: None,
                messages_sent: 0,
                last_status: None,
                held: HeldEvents::default(),
                reconnect_attempts: 0,
                reconnects: 0,
                last_error: None,
                next_retry_at: None,
                messages_received: 0,
                unconfirmed: forwarding::Unconfirmed::default(),
                started_at: now,
                connected_at: None,
                last_event_at: now,
                phone: None,
                store_dir: setup.store_dir,
                paired_before: setup.paired_before,
                first_of_new_id: setup.first_of_new_id,
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
        self.tell_cache(CacheEntry::Connection { state });
        self.registry.do_send(SessionStateChanged {
            session_id: self.session_id.clone(),
            generation: self.generation,
            state,
        });
    }

    fn tell_cache(&self, entry: CacheEntry) {
        if let Some(cache) = &self.cache {
            cache.update(&self.session_id, entry);
        }
    }

    fn info_entry(&self) -> CacheEntry {
        CacheEntry::Info {
            user_id: self.user_id,
            engine: self.engine.kind(),
            phone: self.phone.clone(),
        }
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

    pub(super) fn inspection(&self) -> ActorInspection {
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
            qr_rendered: self.qr_rendered,
            qr_expired_held: self.qr.expired,
            qr_duplicates: self.qr.duplicates,
            qr_held: self.qr.has_held(),
            last_status: self.last_status.map(EstadoQr::as_str),
            reconnect_attempts: self.reconnect_attempts,
            reconnects: self.reconnects,
            last_error: self.last_error.clone(),
            next_retry_in_ms: self
                .next_retry_at
                .map(|at| millis(at.saturating_duration_since(now))),
            messages_received: self.messages_received,
            mailbox_depth: self.event_backlog.load(Ordering::Relaxed),
            messages_sent: self.messages_sent,
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
        self.tell_cache(self.info_entry());
        ctx.run_interval(self.config.housekeeping_interval, Self::housekeeping);
        if self.paired_before && !self.engine.has_credentials() {
            // Pairing again is the user's decision (a new POST /start), not a restart's.
            return self.finish(lifecycle::Ending::lost_credentials(), ctx);
        }
        let Some(cache) = self.cache.as_ref().filter(|_| !self.first_of_new_id) else {
            return self.connect(ctx);
        };
        // Learn the last QR forwarded for this session (by an earlier run or another node)
        // before the first QR arrives, so it is not sent twice.
        let ask = cache.addr.send(LastQrDigest {
            session_id: self.session_id.clone(),
        });
        ctx.wait(
            async move { ask.timeout(CACHE_ANSWER_TIMEOUT).await.ok().flatten() }
                .into_actor(self)
                .map(|digest, actor, ctx| {
                    if let Some(digest) = digest {
                        actor.qr.seed(digest);
                    }
                    actor.connect(ctx);
                }),
        );
    }
}

impl StreamHandler<EngineEvent> for SessionActor {
    fn handle(&mut self, event: EngineEvent, ctx: &mut Context<Self>) {
        if self.state == SessionState::Closed {
            return;
        }
        self.last_event_at = Instant::now();
        match event {
            EngineEvent::Qr {
                code, valid_for, ..
            } => self.on_qr(code, valid_for, ctx),
            EngineEvent::Paired { phone } => {
                self.phone = phone;
                self.discard_held_qr(ctx);
                self.set_state(SessionState::Pairing);
            }
            EngineEvent::Connected => self.on_connected(ctx),
            EngineEvent::Disconnected { reason } => self.on_disconnected(reason, ctx),
            EngineEvent::Unreachable { error, retry_in } => self.on_unreachable(error, retry_in),
            EngineEvent::Reconnecting { reason } => self.on_reconnecting(reason),
            EngineEvent::Refused { reason } => self.on_refused(reason, ctx),
            EngineEvent::Messages { messages, ack } => self.on_messages(messages, ack, ctx),
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
