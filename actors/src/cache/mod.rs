//! `CacheActor`: the Redis TTL cache of each session's QR, status, connection and info (SPEC §4),
//! the QR-dedupe memory shared across restarts and nodes, and `is_session_active` with its three
//! tiers: local memory (`local_ttl`) → Redis (`session:{id}:status`) → Laravel
//! `GET /whatsapp/status/{id}`; any error answers "active" (fail-safe).
//!
//! Writes are coalesced per key and leave in one pipelined round trip (the store's journal), so
//! no event costs a Redis round trip of its own. With Redis down, the local tier serves.

mod config;
mod entries;
mod lookup;

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actix::prelude::*;
use deadpool_redis::redis;
use serde::Serialize;
use serde_json::Value;
use slog::{Logger, info, warn};

pub use config::CacheConfig;
use entries::{CachedConnection, CachedInfo, CachedQr, CachedStatus};
pub use lookup::LaravelStatusLookup;

use crate::{
    messages::{EstadoQr, SessionId, unix_millis},
    session::SessionState,
    store::{
        Keys, PersistQueue, RedisHealthSnapshot, RedisMode, RedisPool, RepeatGate, StoreError,
        StoredValue, drive_writes,
    },
    supervision::CoreAddr,
};

/// What a session tells the cache.
#[derive(Clone, Debug)]
pub enum CacheEntry {
    /// A QR was forwarded.
    Qr {
        /// The PNG data URL (the session's one rendering, shared).
        qr: crate::qr_image::QrDataUrl,
        /// Digest of the raw QR text, for dedupe.
        digest: String,
    },
    /// A status was reported.
    Status {
        /// The status.
        estado_qr: EstadoQr,
    },
    /// The session's lifecycle state changed.
    Connection {
        /// The state.
        state: SessionState,
    },
    /// Facts about the session.
    Info {
        /// Its Laravel owner.
        user_id: Option<u64>,
        /// Engine kind.
        engine: &'static str,
        /// The paired phone.
        phone: Option<String>,
    },
}

/// A cache write from a session (best effort: dropped, and counted, when the mailbox is full).
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct CacheUpdate {
    /// The session.
    pub session_id: SessionId,
    /// What changed.
    pub entry: CacheEntry,
}

/// A session's way to the cache: its address and the shared count of dropped updates.
#[derive(Clone)]
pub struct CacheHandle {
    /// The actor.
    pub addr: CoreAddr<CacheActor>,
    /// Updates dropped because the mailbox was full.
    pub dropped: Arc<AtomicU64>,
}

impl CacheHandle {
    /// Sends an update without waiting; counts it when the mailbox is full.
    pub fn update(&self, session_id: &SessionId, entry: CacheEntry) {
        let update = CacheUpdate {
            session_id: session_id.clone(),
            entry,
        };
        if let Err(SendError::Full(_)) = self.addr.try_send(update) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counters for `/metrics/cache`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CacheCounters {
    /// Updates received from sessions.
    pub updates: u64,
    /// `is_session_active` answered from memory.
    pub local_hits: u64,
    /// ... not known (or stale) in memory.
    pub local_misses: u64,
    /// ... from Redis.
    pub redis_hits: u64,
    /// ... not in Redis (or Redis unreachable).
    pub redis_misses: u64,
    /// ... from Laravel.
    pub laravel_hits: u64,
    /// ... by the fail-safe ("active") after errors everywhere.
    pub fail_safe: u64,
    /// QR digests found for dedupe.
    pub qr_digest_hits: u64,
    /// QR digest look-ups that found nothing.
    pub qr_digest_misses: u64,
}

/// The cache actor.
pub struct CacheActor {
    /// TTLs.
    config: CacheConfig,
    /// Redis, when enabled; its journal holds writes not yet made.
    redis: Option<(RedisPool, PersistQueue)>,
    /// Whether Redis is a cluster (key counting by SCAN is then skipped).
    redis_mode: RedisMode,
    /// Key names.
    keys: Keys,
    /// How often Redis is pinged.
    check_interval: Duration,
    /// Tier 1 of `is_session_active`: session → (active, when learned).
    local: HashMap<SessionId, (bool, Instant)>,
    /// Tier 3.
    laravel: LaravelStatusLookup,
    /// Counters.
    counters: CacheCounters,
    /// Shared with sessions' [`CacheHandle`]s.
    dropped: Arc<AtomicU64>,
    /// Says that Redis is down once, then once a minute, and that it is back.
    redis_down_log: RepeatGate,
    /// Logger.
    log: Logger,
}

impl CacheActor {
    /// A cache over `redis` (or memory only), asking `laravel` as the last tier.
    pub fn new(
        config: CacheConfig,
        redis: Option<(RedisPool, PersistQueue)>,
        redis_mode: RedisMode,
        keys: Keys,
        check_interval: Duration,
        laravel: LaravelStatusLookup,
        log: Logger,
    ) -> Self {
        Self {
            config,
            redis,
            redis_mode,
            keys,
            check_interval,
            local: HashMap::new(),
            laravel,
            counters: CacheCounters::default(),
            dropped: Arc::default(),
            redis_down_log: RepeatGate::default(),
            log,
        }
    }

    /// Logs Redis going down (once, then once a minute while it stays down) and coming back.
    fn report_redis(&mut self, answered: Result<(), StoreError>) {
        match answered {
            Ok(()) if self.redis_down_log.is_open() => {
                self.redis_down_log.clear();
                info!(self.log, "Redis is back; writing what waited.");
            }
            Ok(()) => {}
            Err(error) => {
                if let Some(held_back) = self.redis_down_log.pass(Instant::now()) {
                    warn!(self.log, "Redis is down; wasup keeps running from memory and writes every change once it is back (said again once a minute while it lasts).";
                        "error" => %error, "checks_failed_since_last_said" => held_back);
                }
            }
        }
    }

    /// Counts dropped updates in `dropped` (shared with the handle of a supervised cache, so a
    /// restarted actor keeps counting where the last one stopped).
    pub fn counting_dropped_in(mut self, dropped: Arc<AtomicU64>) -> Self {
        self.dropped = dropped;
        self
    }

    fn set(&mut self, key: String, value: StoredValue, ttl: Duration, ctx: &mut Context<Self>) {
        if let Some((_, queue)) = &mut self.redis {
            queue.journal().set_expiring(&key, value, ttl);
            self.persist(ctx);
        }
    }

    fn persist(&mut self, ctx: &mut Context<Self>) {
        drive_writes(
            self,
            ctx,
            |actor| actor.redis.as_mut().map(|(_, queue)| queue),
            |actor, _, error| {
                if let (Some(error), Some((_, queue))) = (error, &actor.redis)
                    && queue.failed_writes.is_power_of_two()
                {
                    warn!(actor.log, "Cache write to Redis failed; retrying."; "error" => %error,
                        "failed_writes" => queue.failed_writes);
                }
            },
        );
    }

    fn remember(&mut self, session_id: &SessionId, active: bool) {
        if self.local.len() >= self.config.local_max_entries && !self.local.contains_key(session_id)
        {
            let ttl = self.config.local_ttl;
            self.local.retain(|_, (_, at)| at.elapsed() < ttl);
            if self.local.len() >= self.config.local_max_entries {
                return;
            }
        }
        self.local
            .insert(session_id.clone(), (active, Instant::now()));
    }

    /// A value waiting in the journal or stored in Redis.
    fn read(
        &self,
        key: String,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + 'static {
        let queued = self
            .redis
            .as_ref()
            .and_then(|(_, queue)| queue.queued_value(&key));
        let pool = self.redis.as_ref().map(|(pool, _)| pool.clone());
        async move {
            if queued.is_some() {
                return Ok(queued);
            }
            match pool {
                Some(pool) => pool.command(redis::cmd("GET").arg(&key)).await,
                None => Ok(None),
            }
        }
    }

    fn count_keys(&self) -> impl Future<Output = Value> + 'static {
        let Some(pool) = self.redis.as_ref().map(|(pool, _)| pool.clone()) else {
            return futures_util::future::Either::Left(async { Value::Null });
        };
        let cluster = self.redis_mode == RedisMode::Cluster;
        let patterns: Vec<(&'static str, String)> = ["qr", "status", "connection", "info"]
            .into_iter()
            .map(|kind| (kind, self.keys.pattern(kind)))
            .collect();
        let hashes = [
            ("outbox_qr", self.keys.outbox(crate::messages::Lane::Qr)),
            (
                "outbox_status",
                self.keys.outbox(crate::messages::Lane::Status),
            ),
            (
                "outbox_message",
                self.keys.outbox(crate::messages::Lane::Message),
            ),
            ("sessions", self.keys.sessions()),
        ];
        futures_util::future::Either::Right(async move {
            let mut counts = serde_json::Map::new();
            if !cluster {
                for (kind, pattern) in patterns {
                    counts.insert(
                        kind.into(),
                        scan_count(&pool, &pattern)
                            .await
                            .map_or(Value::Null, Value::from),
                    );
                }
            }
            for (name, key) in hashes {
                let length: Result<u64, _> = pool.command(redis::cmd("HLEN").arg(&key)).await;
                counts.insert(name.into(), length.map_or(Value::Null, Value::from));
            }
            Value::Object(counts)
        })
    }
}

/// Most keys counted by one SCAN walk, so a huge keyspace cannot stall `/metrics/cache`.
const MAX_SCANNED_KEYS: u64 = 1_000_000;

async fn scan_count(pool: &RedisPool, pattern: &str) -> Result<u64, StoreError> {
    let mut cursor = 0u64;
    let mut count = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = pool
            .command(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000),
            )
            .await?;
        count += keys.len() as u64;
        if next == 0 || count >= MAX_SCANNED_KEYS {
            return Ok(count);
        }
        cursor = next;
    }
}

impl Actor for CacheActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(CACHE_MAILBOX);
        ctx.run_interval(self.check_interval, |actor, ctx| {
            let Some(pool) = actor.redis.as_ref().map(|(pool, _)| pool.clone()) else {
                return;
            };
            async move { pool.command::<String>(&redis::cmd("PING")).await.map(drop) }
                .into_actor(actor)
                .map(|answered, actor, ctx| {
                    actor.report_redis(answered);
                    actor.persist(ctx);
                })
                .spawn(ctx);
        });
    }
}

/// Capacity of the cache's mailbox; updates beyond it are dropped and counted.
const CACHE_MAILBOX: usize = 8192;

impl Handler<CacheUpdate> for CacheActor {
    type Result = ();

    fn handle(&mut self, update: CacheUpdate, ctx: &mut Context<Self>) {
        self.counters.updates += 1;
        let timestamp = unix_millis();
        let id = &update.session_id;
        let (key, value, ttl) = match update.entry {
            CacheEntry::Qr { qr, digest } => (
                self.keys.qr(id),
                StoredValue::json(CachedQr {
                    qr,
                    digest,
                    timestamp,
                }),
                self.config.qr_ttl,
            ),
            CacheEntry::Status { estado_qr } => {
                self.remember(id, lookup::counts_as_active(estado_qr.as_str()));
                (
                    self.keys.status(id),
                    StoredValue::json(CachedStatus {
                        estado_qr: Cow::Borrowed(estado_qr.as_str()),
                        timestamp,
                    }),
                    self.config.status_ttl,
                )
            }
            CacheEntry::Connection { state } => (
                self.keys.connection(id),
                StoredValue::json(CachedConnection { state, timestamp }),
                self.config.connection_ttl,
            ),
            CacheEntry::Info {
                user_id,
                engine,
                phone,
            } => (
                self.keys.info(id),
                StoredValue::json(CachedInfo {
                    engine,
                    phone,
                    timestamp,
                    user_id,
                }),
                self.config.info_ttl,
            ),
        };
        self.set(key, value, ttl, ctx);
    }
}

/// The digest of the last QR forwarded for a session, by any run or node.
#[derive(Message, Debug)]
#[rtype(result = "Option<String>")]
pub struct LastQrDigest {
    /// The session.
    pub session_id: SessionId,
}

impl Handler<LastQrDigest> for CacheActor {
    type Result = ResponseActFuture<Self, Option<String>>;

    fn handle(&mut self, ask: LastQrDigest, _: &mut Context<Self>) -> Self::Result {
        Box::pin(
            self.read(self.keys.qr(&ask.session_id))
                .into_actor(self)
                .map(|stored, actor, _| {
                    let digest = stored
                        .ok()
                        .flatten()
                        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                        .and_then(|value| value["digest"].as_str().map(str::to_string));
                    if digest.is_some() {
                        actor.counters.qr_digest_hits += 1;
                    } else {
                        actor.counters.qr_digest_misses += 1;
                    }
                    digest
                }),
        )
    }
}

/// Should a session whose connection closed (not by logout) reconnect?
#[derive(Message, Debug)]
#[rtype(result = "bool")]
pub struct IsSessionActive {
    /// The session.
    pub session_id: SessionId,
}

impl Handler<IsSessionActive> for CacheActor {
    type Result = ResponseActFuture<Self, bool>;

    fn handle(&mut self, ask: IsSessionActive, _: &mut Context<Self>) -> Self::Result {
        let session_id = ask.session_id;
        if let Some((active, at)) = self.local.get(&session_id)
            && at.elapsed() < self.config.local_ttl
        {
            self.counters.local_hits += 1;
            return Box::pin(actix::fut::ready(*active));
        }
        self.counters.local_misses += 1;
        let from_redis = self.read(self.keys.status(&session_id));
        let laravel = self.laravel.clone();
        let id = session_id.clone();
        Box::pin(
            async move {
                let cached = from_redis
                    .await
                    .ok()
                    .flatten()
                    .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                    .and_then(|value| value["estado_qr"].as_str().map(lookup::counts_as_active));
                match cached {
                    Some(active) => lookup::Answer::Redis(active),
                    None => laravel.ask(&id).await,
                }
            }
            .into_actor(self)
            .map(move |answer, actor, ctx| {
                let active = match answer {
                    lookup::Answer::Redis(active) => {
                        actor.counters.redis_hits += 1;
                        active
                    }
                    lookup::Answer::Laravel(estado) => {
                        actor.counters.redis_misses += 1;
                        actor.counters.laravel_hits += 1;
                        let key = actor.keys.status(&session_id);
                        let ttl = actor.config.status_ttl;
                        actor.set(
                            key,
                            StoredValue::json(CachedStatus {
                                estado_qr: Cow::Owned(estado.clone()),
                                timestamp: unix_millis(),
                            }),
                            ttl,
                            ctx,
                        );
                        lookup::counts_as_active(&estado)
                    }
                    lookup::Answer::Unknown => {
                        actor.counters.redis_misses += 1;
                        actor.counters.fail_safe += 1;
                        return true;
                    }
                };
                actor.remember(&session_id, active);
                active
            }),
        )
    }
}

/// `/metrics/cache`.
#[derive(Clone, Debug, Serialize)]
pub struct CacheReport {
    /// Counters.
    #[serde(flatten)]
    pub counters: CacheCounters,
    /// Updates dropped on a full mailbox.
    pub dropped_updates: u64,
    /// Entries in the local tier.
    pub local_entries: usize,
    /// Cache writes not yet in Redis.
    pub unwritten: usize,
    /// Redis's health, `None` when disabled.
    pub redis: Option<RedisHealthSnapshot>,
    /// Key counts by kind, and outbox and session-registry sizes.
    pub keys: Value,
}

/// Reads the cache's figures.
#[derive(Message, Debug)]
#[rtype(result = "CacheReport")]
pub struct GetCacheReport {
    /// Also count keys in Redis (a SCAN walk: for `/metrics/cache`, not for every scrape).
    pub count_keys: bool,
}

impl Handler<GetCacheReport> for CacheActor {
    type Result = ResponseActFuture<Self, CacheReport>;

    fn handle(&mut self, ask: GetCacheReport, _: &mut Context<Self>) -> Self::Result {
        let keys = if ask.count_keys {
            futures_util::future::Either::Left(self.count_keys())
        } else {
            futures_util::future::Either::Right(async { Value::Null })
        };
        Box::pin(keys.into_actor(self).map(|keys, actor, _| {
            CacheReport {
                counters: actor.counters.clone(),
                dropped_updates: actor.dropped.load(Ordering::Relaxed),
                local_entries: actor.local.len(),
                unwritten: actor
                    .redis
                    .as_ref()
                    .map_or(0, |(_, queue)| queue.unwritten()),
                redis: actor
                    .redis
                    .as_ref()
                    .map(|(pool, _)| pool.health().snapshot()),
                keys,
            }
        }))
    }
}
