//! wasup, the service: configuration, logging, engines, the REST API, and [`Wasup::start`] which
//! wires the actor pipeline of `wasup_actors` to them.

pub mod api;
pub mod config;
pub mod core_actors;
pub mod engine;
pub mod logging;
pub mod telemetry;

use std::{net::SocketAddr, sync::Arc, time::Instant};

use actix::{Actor, Addr};
use actix_web::{App, HttpServer, dev::ServerHandle, web};
use anyhow::Context as _;
use slog::{Logger, info, warn};
use wasup_actors::{
    batch::{Drain, FlushOutbox, GetBatchStats},
    crash::install_panic_hook,
    dispatch::{FlushOutgoing, MessageDispatcher, OutgoingStore},
    registry::{FlushRegistry, RegistryLinks, SessionRegistry, SessionStore, StopAllSessions},
    store::{Keys, RedisPool},
};

use crate::{api::AppState, config::Config, core_actors::CoreActors, engine::EngineKind};

/// A running wasup: its address and what shutdown needs.
pub struct Wasup {
    /// Where the REST API listens (the real port when configured with port 0).
    pub addr: SocketAddr,
    /// The HTTP server.
    server: ServerHandle,
    /// Handlers' shared state (actor addresses, config).
    state: AppState,
    /// Threads the session actors run on (stopped on shutdown).
    session_arbiters: Vec<actix::Arbiter>,
    /// Logger.
    log: Logger,
}

/// What a shutdown achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Whether every pending item reached Laravel before the deadline.
    pub flushed: bool,
    /// Items still pending at exit.
    pub pending: usize,
}

impl Wasup {
    /// Starts the actors and the REST API. Call inside an actix system.
    pub async fn start(config: Config, log: Logger) -> anyhow::Result<Wasup> {
        install_panic_hook();
        let config = Arc::new(config);
        for deprecation in &config.deprecations {
            warn!(log, "Deprecated setting."; "detail" => deprecation);
        }
        if config.laravel.token.is_empty() {
            warn!(
                log,
                "laravel.token is empty: requests to Laravel carry no Authorization header."
            );
        }
        let redis = if config.redis.enabled {
            Some(RedisPool::build(&config.redis).context("cannot set up Redis")?)
        } else {
            warn!(
                log,
                "Redis is disabled: no durable outbox, no session restore, no shared cache."
            );
            None
        };
        if let Some(pool) = &redis {
            let pool = pool.clone();
            let log = log.clone();
            actix_rt::spawn(async move {
                for warning in pool.settings_warnings().await {
                    warn!(log, "Redis is not set up as wasup expects."; "detail" => warning);
                }
            });
        }
        let keys = Keys::new(&config.redis.key_prefix);
        let journal = |pool: &RedisPool| core_actors::journal(pool, &config.redis);
        let telemetry = Arc::new(telemetry::Telemetry::new()?);
        let core = CoreActors::start(
            &config,
            redis.as_ref(),
            &keys,
            telemetry.laravel_latency.clone(),
            &log,
        );
        let threads = match config.sessions.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            threads => threads,
        };
        let session_arbiters: Vec<actix::Arbiter> =
            (0..threads).map(|_| actix::Arbiter::new()).collect();
        let store = redis
            .as_ref()
            .map(|pool| SessionStore::new(pool.clone(), keys.clone(), journal(pool)));
        let links = RegistryLinks {
            engine_factory: config.engine.factory()?,
            store_root: config.engine.sessions_dir(),
            batch: core.batch.clone(),
            cache: Some(core.cache.clone()),
            store,
            node_id: config.node_id(),
            session_arbiters: session_arbiters
                .iter()
                .map(actix::Arbiter::handle)
                .collect(),
        };
        let registry = SessionRegistry::new(config.sessions.clone(), links, log.clone()).start();
        let mut dispatcher =
            MessageDispatcher::new(config.messages.clone(), registry.clone(), log.clone());
        if config.messages.report_outcomes {
            dispatcher = dispatcher.with_outcomes_to(core.batch.clone());
        }
        if let Some(pool) = &redis {
            dispatcher =
                dispatcher.with_store(OutgoingStore::new(pool.clone(), &keys, journal(pool)));
        }
        let dispatcher = dispatcher.start();
        core.tell_after_restart(registry.clone(), dispatcher.clone());
        let state = AppState {
            dispatcher,
            registry,
            batch: core.batch,
            sink: core.sink,
            breaker: core.breaker,
            cache: core.cache.addr,
            core_restarts: core.restarts,
            redis_health: redis.as_ref().map(RedisPool::health),
            config: Arc::clone(&config),
            started_at: Instant::now(),
            telemetry,
            health_cache: Arc::default(),
        };
        let guard = Arc::new(api::Guard::new(&config.http));
        let max_body_bytes = config.http.max_body_bytes;
        let simulate_hooks = config.engine.kind == EngineKind::Simulated;
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(app_state.clone()))
                .app_data(web::Data::new(Arc::clone(&guard)))
                .wrap(actix_web::middleware::from_fn(api::guard))
                .configure(api::configure(simulate_hooks, max_body_bytes))
        })
        .disable_signals()
        .shutdown_timeout(5);
        if config.http.workers > 0 {
            server = server.workers(config.http.workers);
        }
        let server = server
            .bind(&config.http.listen)
            .with_context(|| format!("cannot listen on {}", config.http.listen))?;
        let addr = server
            .addrs()
            .first()
            .copied()
            .context("the HTTP server bound no address")?;
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        info!(log, "wasup listening."; "addr" => %addr, "engine" => ?config.engine.kind,
            "laravel" => crate::config::without_credentials(&config.laravel.base_url));
        Ok(Wasup {
            addr,
            server: handle,
            state,
            session_arbiters,
            log,
        })
    }

    /// The actors, for in-process callers.
    pub fn registry(&self) -> &Addr<SessionRegistry> {
        &self.state.registry
    }

    /// Whether every core actor (registry, batch queue, sink, breaker, cache, outgoing queue)
    /// answers within `within`: the liveness probe behind systemd's `WATCHDOG=1`. A stopped or
    /// wedged actor leaves a process that looks alive and delivers nothing; systemd then
    /// restarts it, and the outbox in Redis brings back what was pending.
    pub async fn answers_probe(&self, within: std::time::Duration) -> bool {
        actix_rt::time::timeout(within, api::read_snapshot(&self.state))
            .await
            .is_ok_and(|answered| answered.is_ok())
    }

    /// Graceful shutdown: refuse new sessions, stop every session (no status: they are not logged
    /// out, and will be restored), flush every batch until `http.shutdown_timeout`, make sure
    /// Redis holds whatever is still pending, then stop the HTTP server.
    pub async fn shutdown(self) -> ShutdownReport {
        let deadline = self.state.config.http.shutdown_timeout;
        let started = Instant::now();
        let remaining = || deadline.saturating_sub(started.elapsed());
        info!(self.log, "Shutting down: stopping sessions and flushing batches."; "deadline" => ?deadline);
        let _ =
            actix_rt::time::timeout(remaining(), self.state.registry.send(StopAllSessions)).await;
        let flushed = actix_rt::time::timeout(remaining(), self.state.batch.send(Drain))
            .await
            .is_ok_and(|answer| matches!(answer, Ok(Ok(()))));
        // Whatever did not reach Laravel must at least be in Redis (bounded, even past the deadline).
        let store_deadline = self.state.config.redis.timeout * 3;
        let _ = actix_rt::time::timeout(store_deadline, async {
            let _ = futures_util::join!(
                self.state.batch.send(FlushOutbox),
                self.state.registry.send(FlushRegistry),
                self.state.dispatcher.send(FlushOutgoing),
            );
        })
        .await;
        // Bounded: with a core actor gone or wedged (the liveness probe's exit), no answer comes.
        let pending =
            match actix_rt::time::timeout(store_deadline, self.state.batch.send(GetBatchStats))
                .await
            {
                Ok(Ok(stats)) => stats.qr.pending + stats.status.pending,
                _ => 0,
            };
        if flushed {
            info!(self.log, "Every batch flushed."; "took" => ?started.elapsed());
        } else {
            warn!(self.log, "Shutdown deadline reached with items pending (kept in Redis)."; "pending" => pending);
        }
        self.server.stop(true).await;
        for arbiter in &self.session_arbiters {
            arbiter.stop();
        }
        ShutdownReport { flushed, pending }
    }
}
