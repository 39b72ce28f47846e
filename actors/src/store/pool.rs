//! One Redis pool for the three deployment shapes, with a shared health record every caller
//! updates, so `/health` tells the truth about Redis.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use deadpool_redis::{
    Runtime,
    redis::{self, Cmd, FromRedisValue, Pipeline, RedisFuture, Value, aio::ConnectionLike},
};
use serde::Serialize;

use super::config::{RedisConfig, RedisMode};

/// Failures talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The pool could not be built from the configuration.
    #[error("redis configuration: {0}")]
    Config(String),
    /// No connection could be had.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// A command failed.
    #[error("redis command failed: {0}")]
    Command(#[from] redis::RedisError),
    /// A call took longer than `redis.timeout`.
    #[error("redis call timed out after {0:?}")]
    Timeout(Duration),
}

/// What callers know of Redis's health.
#[derive(Debug, Default)]
pub struct RedisHealth {
    /// Whether the last call succeeded.
    up: AtomicBool,
    /// Calls that failed since start.
    errors: AtomicU64,
    /// Calls that succeeded since start.
    calls: AtomicU64,
    /// Round-trip time of the last successful call, in microseconds.
    last_latency_us: AtomicU64,
    /// The last error.
    last_error: Mutex<Option<String>>,
}

/// `/health` and `/metrics/cache` view of [`RedisHealth`].
#[derive(Clone, Debug, Serialize)]
pub struct RedisHealthSnapshot {
    /// `up`, `down` or `disabled`.
    pub state: &'static str,
    /// Successful calls.
    pub calls: u64,
    /// Failed calls.
    pub errors: u64,
    /// Last round trip, in microseconds.
    pub last_latency_us: u64,
    /// The last error.
    pub last_error: Option<String>,
}

impl RedisHealth {
    fn record(&self, result: Result<Duration, &StoreError>) {
        match result {
            Ok(latency) => {
                self.up.store(true, Ordering::Relaxed);
                self.calls.fetch_add(1, Ordering::Relaxed);
                self.last_latency_us.store(
                    u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
            }
            Err(error) => {
                self.up.store(false, Ordering::Relaxed);
                self.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some(error.to_string());
                }
            }
        }
    }

    /// Whether the last call succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// A copy for reporting.
    pub fn snapshot(&self) -> RedisHealthSnapshot {
        RedisHealthSnapshot {
            state: if self.is_up() { "up" } else { "down" },
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            last_latency_us: self.last_latency_us.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|last| last.clone()),
        }
    }
}

#[derive(Clone)]
enum Pools {
    Standalone(deadpool_redis::Pool),
    Sentinel(deadpool_redis::sentinel::Pool),
    Cluster(deadpool_redis::cluster::Pool),
}

/// A pooled connection of any shape.
enum Connection {
    Standalone(deadpool_redis::Connection),
    Sentinel(deadpool_redis::sentinel::Connection),
    Cluster(deadpool_redis::cluster::Connection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Standalone(conn) => conn.req_packed_command(cmd),
            Connection::Sentinel(conn) => conn.req_packed_command(cmd),
            Connection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Standalone(conn) => conn.req_packed_commands(pipeline, offset, count),
            Connection::Sentinel(conn) => conn.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Standalone(conn) => conn.get_db(),
            Connection::Sentinel(conn) => conn.get_db(),
            Connection::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The Redis pool every Redis user shares.
#[derive(Clone)]
pub struct RedisPool {
    pools: Pools,
    /// Per-call timeout.
    timeout: Duration,
    /// Shared health record.
    health: Arc<RedisHealth>,
}

impl RedisPool {
    /// Builds the pool (no connection is made yet).
    pub fn build(config: &RedisConfig) -> Result<Self, StoreError> {
        let pool_config = deadpool_redis::PoolConfig {
            max_size: config.pool_size,
            timeouts: deadpool_redis::Timeouts {
                wait: Some(config.timeout),
                create: Some(config.timeout),
                recycle: Some(config.timeout),
            },
            ..deadpool_redis::PoolConfig::default()
        };
        let config_error = |error: &dyn std::fmt::Display| StoreError::Config(error.to_string());
        let pools = match config.mode {
            RedisMode::Standalone => {
                let mut pool =
                    deadpool_redis::Config::from_url(with_password(&config.url, &config.password));
                pool.pool = Some(pool_config);
                Pools::Standalone(
                    pool.create_pool(Some(Runtime::Tokio1))
                        .map_err(|e| config_error(&e))?,
                )
            }
            RedisMode::Cluster => {
                let urls: Vec<String> = config
                    .urls
                    .iter()
                    .map(|url| with_password(url, &config.password))
                    .collect();
                let mut pool = deadpool_redis::cluster::Config::from_urls(urls);
                pool.pool = Some(pool_config);
                Pools::Cluster(
                    pool.create_pool(Some(Runtime::Tokio1))
                        .map_err(|e| config_error(&e))?,
                )
            }
            RedisMode::Sentinel => {
                let mut pool = deadpool_redis::sentinel::Config::from_urls(
                    config.urls.clone(),
                    config.master_name.clone(),
                    deadpool_redis::sentinel::SentinelServerType::Master,
                );
                if !config.password.is_empty() {
                    pool.node_connection_info =
                        Some(deadpool_redis::sentinel::SentinelNodeConnectionInfo {
                            tls_mode: None,
                            redis_connection_info: Some(deadpool_redis::RedisConnectionInfo {
                                password: Some(config.password.clone()),
                                ..deadpool_redis::RedisConnectionInfo::default()
                            }),
                        });
                }
                pool.pool = Some(pool_config);
                Pools::Sentinel(
                    pool.create_pool(Some(Runtime::Tokio1))
                        .map_err(|e| config_error(&e))?,
                )
            }
        };
        Ok(Self {
            pools,
            timeout: config.timeout,
            health: Arc::new(RedisHealth::default()),
        })
    }

    /// The shared health record.
    pub fn health(&self) -> Arc<RedisHealth> {
        Arc::clone(&self.health)
    }

    async fn connection(&self) -> Result<Connection, StoreError> {
        let unavailable =
            |error: &dyn std::fmt::Display| StoreError::Unavailable(error.to_string());
        Ok(match &self.pools {
            Pools::Standalone(pool) => {
                Connection::Standalone(pool.get().await.map_err(|e| unavailable(&e))?)
            }
            Pools::Sentinel(pool) => {
                Connection::Sentinel(pool.get().await.map_err(|e| unavailable(&e))?)
            }
            Pools::Cluster(pool) => {
                Connection::Cluster(pool.get().await.map_err(|e| unavailable(&e))?)
            }
        })
    }

    /// Runs a pipeline (one round trip), within the timeout, recording health.
    pub async fn pipeline<T: FromRedisValue>(&self, pipeline: &Pipeline) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, async {
            let mut connection = self.connection().await?;
            Ok::<T, StoreError>(pipeline.query_async(&mut connection).await?)
        })
        .await
        {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        self.health
            .record(result.as_ref().map(|_| started.elapsed()));
        result
    }

    /// Runs one command.
    pub async fn command<T: FromRedisValue>(&self, command: &Cmd) -> Result<T, StoreError> {
        let mut pipeline = redis::pipe();
        pipeline.add_command(command.clone());
        let (value,): (T,) = self.pipeline(&pipeline).await?;
        Ok(value)
    }
}

/// Server settings wasup relies on, and the value each should have.
const EXPECTED_SETTINGS: [(&str, &str, &str); 3] = [
    (
        "appendonly",
        "yes",
        "undelivered items survive a Redis restart only with AOF",
    ),
    (
        "appendfsync",
        "everysec",
        "AOF should reach the disk every second",
    ),
    (
        "maxmemory-policy",
        "noeviction",
        "Redis must never evict the outbox or the session registry",
    ),
];

impl RedisPool {
    /// Asks Redis for the settings wasup relies on and describes each that differs. Empty when
    /// all match or when `CONFIG GET` is not allowed (managed Redis services often forbid it).
    pub async fn settings_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (name, expected, why) in EXPECTED_SETTINGS {
            let answer: Result<Vec<String>, _> = self
                .command(redis::cmd("CONFIG").arg("GET").arg(name))
                .await;
            if let Ok(pair) = answer
                && let Some(actual) = pair.get(1)
                && actual != expected
            {
                warnings.push(format!(
                    "Redis {name} is {actual:?}, expected {expected:?}: {why}"
                ));
            }
        }
        warnings
    }
}

/// Puts `password` into a Redis URL that has no credentials of its own.
fn with_password(url: &str, password: &str) -> String {
    if password.is_empty() {
        return url.to_string();
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    if rest[..authority_end].contains('@') {
        return url.to_string();
    }
    let encoded: String = password
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect();
    format!("{scheme}://:{encoded}@{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_go_into_urls_without_credentials() {
        assert_eq!(with_password("redis://h:1/0", ""), "redis://h:1/0");
        assert_eq!(
            with_password("redis://h:1/0", "p@ss w"),
            "redis://:p%40ss%20w@h:1/0"
        );
        assert_eq!(with_password("redis://:x@h:1/0", "p"), "redis://:x@h:1/0");
    }

    #[test]
    fn every_mode_builds_a_pool() {
        for (mode, urls) in [
            (RedisMode::Standalone, vec![]),
            (
                RedisMode::Sentinel,
                vec!["redis://127.0.0.1:26379".to_string()],
            ),
            (
                RedisMode::Cluster,
                vec![
                    "redis://127.0.0.1:7000".to_string(),
                    "redis://127.0.0.1:7001".to_string(),
                ],
            ),
        ] {
            let config = RedisConfig {
                mode,
                urls,
                password: "secret".into(),
                ..RedisConfig::default()
            };
            assert!(config.validate().is_ok(), "{mode:?}");
            assert!(RedisPool::build(&config).is_ok(), "{mode:?}");
        }
        let bad = RedisConfig {
            mode: RedisMode::Cluster,
            ..RedisConfig::default()
        };
        assert!(
            bad.validate()
                .is_err_and(|message| message.contains("redis.urls"))
        );
    }
}
