//! The core actors (breaker, Laravel sink, batch queue, cache), each started under its
//! supervisor ([`keep_running`]) from a closure that builds it afresh after a crash: the batch
//! queue reads its outbox back from Redis, the others start empty. A restarted batch queue (or
//! cache) asks the registry and the dispatcher, once they exist
//! ([`CoreActors::tell_after_restart`]), to hand on again what its dead mailbox may have
//! held.

use std::{
    cell::RefCell,
    rc::Rc,
    sync::{Arc, atomic::AtomicU64},
};

use actix::Addr;
use serde::Serialize;
use slog::Logger;
use wasup_actors::{
    batch::{BatchActor, DurableOutbox},
    breaker::CircuitBreaker,
    cache::{CacheActor, CacheHandle, LaravelStatusLookup},
    dispatch::{MessageDispatcher, ReportOutcomesAgain},
    registry::{ReportStatesAgain, SessionRegistry},
    sink::LaravelSink,
    store::{Keys, PersistQueue, RedisConfig, RedisPool},
    supervision::{CoreAddr, RestartCount, RestartLimit, Supervised, keep_running},
};

use crate::config::Config;

/// Restarts of each core actor, for `/health` and `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct CoreRestarts {
    /// The breaker.
    pub breaker: Arc<RestartCount>,
    /// The Laravel sink.
    pub sink: Arc<RestartCount>,
    /// The batch queue.
    pub batch: Arc<RestartCount>,
    /// The cache.
    pub cache: Arc<RestartCount>,
}

/// `/health`'s `coreRestarts`.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct CoreRestartFigures {
    /// Restarts of the breaker since wasup started.
    pub breaker: u64,
    /// Restarts of the Laravel sink.
    pub sink: u64,
    /// Restarts of the batch queue.
    pub batch: u64,
    /// Restarts of the cache.
    pub cache: u64,
}

impl CoreRestarts {
    /// The counts now.
    pub fn figures(&self) -> CoreRestartFigures {
        CoreRestartFigures {
            breaker: self.breaker.get(),
            sink: self.sink.get(),
            batch: self.batch.get(),
            cache: self.cache.get(),
        }
    }
}

/// Who hears of a batch queue or cache restart.
struct RestartListeners {
    /// Has every session report its QR and status again.
    registry: Addr<SessionRegistry>,
    /// Reports unreported send outcomes again.
    dispatcher: Addr<MessageDispatcher>,
}

/// The supervised core actors.
pub struct CoreActors {
    /// Laravel's circuit breaker.
    pub breaker: CoreAddr<CircuitBreaker>,
    /// The Laravel sink.
    pub sink: CoreAddr<LaravelSink>,
    /// The batch queue.
    pub batch: CoreAddr<BatchActor>,
    /// The cache, as sessions hold it.
    pub cache: CacheHandle,
    /// Restart counts.
    pub restarts: CoreRestarts,
    /// Filled by [`Self::tell_after_restart`]; read after each batch queue or cache restart.
    listeners: Rc<RefCell<Option<RestartListeners>>>,
}

/// After a restart of the batch queue or the cache, whose dead mailbox may have held QRs and
/// statuses: every session hands them on again; with `outcomes`, unreported send outcomes too.
fn report_again(
    listeners: &Rc<RefCell<Option<RestartListeners>>>,
    outcomes: bool,
) -> Box<dyn Fn()> {
    let listeners = Rc::clone(listeners);
    Box::new(move || {
        if let Some(listeners) = listeners.borrow().as_ref() {
            listeners.registry.do_send(ReportStatesAgain);
            if outcomes {
                listeners.dispatcher.do_send(ReportOutcomesAgain);
            }
        }
    })
}

/// A write queue to Redis with the configured retry backoff.
pub fn journal(pool: &RedisPool, redis: &RedisConfig) -> PersistQueue {
    PersistQueue::new(pool.clone(), redis.retry_base, redis.retry_max)
}

impl CoreActors {
    /// Starts the four actors on the current arbiter.
    pub fn start(
        config: &Arc<Config>,
        redis: Option<&RedisPool>,
        keys: &Keys,
        latency: prometheus::HistogramVec,
        log: &Logger,
    ) -> Self {
        let restarts = CoreRestarts::default();
        let limit = RestartLimit {
            restarts: config.http.core_restarts,
            window: config.http.core_restart_window,
        };
        let breaker = keep_running(
            Supervised::new(
                "breaker",
                {
                    let (config, log) = (config.breaker.clone(), log.clone());
                    move || CircuitBreaker::new(config.clone(), log.clone())
                },
                limit,
                &restarts.breaker,
            ),
            log.clone(),
        );
        let sink = keep_running(
            Supervised::new(
                "sink",
                {
                    let (config, breaker, log) =
                        (config.laravel.clone(), breaker.clone(), log.clone());
                    move || {
                        LaravelSink::new(config.clone(), breaker.clone(), log.clone())
                            .with_latency_histogram(latency.clone())
                    }
                },
                limit,
                &restarts.sink,
            ),
            log.clone(),
        );
        let listeners: Rc<RefCell<Option<RestartListeners>>> = Rc::default();
        let batch = keep_running(
            Supervised {
                after_restart: report_again(&listeners, true),
                ..Supervised::new(
                    "batch",
                    {
                        let (config, sink, log) = (Arc::clone(config), sink.clone(), log.clone());
                        let redis = redis.map(|pool| (pool.clone(), keys.clone()));
                        move || {
                            let outbox = redis.as_ref().map(|(pool, keys)| {
                                DurableOutbox::new(
                                    pool.clone(),
                                    keys.clone(),
                                    journal(pool, &config.redis),
                                )
                            });
                            BatchActor::new(config.batch.clone(), sink.clone(), outbox, log.clone())
                                .with_budget(
                                    config.laravel.budget_limits(),
                                    config.laravel.contract,
                                )
                        }
                    },
                    limit,
                    &restarts.batch,
                )
            },
            log.clone(),
        );
        let dropped = Arc::<AtomicU64>::default();
        let cache = keep_running(
            Supervised {
                after_restart: report_again(&listeners, false),
                ..Supervised::new(
                    "cache",
                    {
                        let (config, keys, log) = (Arc::clone(config), keys.clone(), log.clone());
                        let (redis, dropped) = (redis.cloned(), Arc::clone(&dropped));
                        move || {
                            let lookup = LaravelStatusLookup::new(
                                &config.laravel.base_url,
                                &config.laravel.token,
                                config.cache.laravel_timeout,
                            );
                            CacheActor::new(
                                config.cache.clone(),
                                redis
                                    .as_ref()
                                    .map(|pool| (pool.clone(), journal(pool, &config.redis))),
                                config.redis.mode,
                                keys.clone(),
                                config.redis.check_interval,
                                lookup,
                                log.clone(),
                            )
                            .counting_dropped_in(Arc::clone(&dropped))
                        }
                    },
                    limit,
                    &restarts.cache,
                )
            },
            log.clone(),
        );
        Self {
            breaker,
            sink,
            batch,
            cache: CacheHandle {
                addr: cache,
                dropped,
            },
            restarts,
            listeners,
        }
    }

    /// After a batch queue restart, `registry` has every session hand on its QR and status
    /// again and `dispatcher` reports unreported outcomes again.
    pub fn tell_after_restart(
        &self,
        registry: Addr<SessionRegistry>,
        dispatcher: Addr<MessageDispatcher>,
    ) {
        *self.listeners.borrow_mut() = Some(RestartListeners {
            registry,
            dispatcher,
        });
    }
}
