//! The `[redis]` settings: where Redis is (standalone, Sentinel or Cluster) and how wasup uses it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How Redis is deployed: configuration, not code forks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One server (`url`).
    Standalone,
    /// Sentinels (`urls`) watching the master `master_name`.
    Sentinel,
    /// A Redis Cluster (`urls`: some of its nodes).
    Cluster,
}

/// Redis settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Use Redis at all. Without it wasup keeps everything in memory: no durability, no
    /// shared cache.
    pub enabled: bool,
    /// Deployment shape.
    pub mode: RedisMode,
    /// Standalone server URL, e.g. `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// Sentinel or Cluster node URLs.
    pub urls: Vec<String>,
    /// Sentinel: the monitored master's name.
    pub master_name: String,
    /// Password (or set `REDIS_PASSWORD`); empty for none.
    pub password: String,
    /// Prepended to every key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Most pooled connections.
    pub pool_size: usize,
    /// Timeout of one Redis call (connect included).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// First retry delay of a failed write; doubles up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// Cap on the write retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// How often Redis is pinged to tell `/health` the truth.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: RedisMode::Standalone,
            url: "redis://127.0.0.1:6379/0".into(),
            urls: Vec::new(),
            master_name: "mymaster".into(),
            password: String::new(),
            key_prefix: String::new(),
            pool_size: 16,
            timeout: Duration::from_secs(2),
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            check_interval: Duration::from_secs(1),
        }
    }
}

impl RedisConfig {
    /// Checks the values, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let is_redis_url = |url: &str| url.starts_with("redis://") || url.starts_with("rediss://");
        match self.mode {
            RedisMode::Standalone if !is_redis_url(&self.url) => {
                return Err(format!(
                    "redis.url must start with redis:// or rediss://, got {:?}",
                    self.url
                ));
            }
            RedisMode::Sentinel | RedisMode::Cluster if self.urls.is_empty() => {
                return Err(
                    "redis.urls must list at least one node for sentinel or cluster mode".into(),
                );
            }
            RedisMode::Sentinel | RedisMode::Cluster => {
                if let Some(bad) = self.urls.iter().find(|url| !is_redis_url(url)) {
                    return Err(format!(
                        "redis.urls entries must start with redis:// or rediss://, got {bad:?}"
                    ));
                }
            }
            RedisMode::Standalone => {}
        }
        if self.mode == RedisMode::Sentinel && self.master_name.is_empty() {
            return Err("redis.master_name must be set for sentinel mode".into());
        }
        if self.pool_size == 0 {
            return Err("redis.pool_size must be at least 1".into());
        }
        if self.timeout.is_zero() || self.retry_base.is_zero() || self.check_interval.is_zero() {
            return Err(
                "redis.timeout, redis.retry_base and redis.check_interval must be above zero"
                    .into(),
            );
        }
        if self.retry_max < self.retry_base {
            return Err("redis.retry_max must be at least redis.retry_base".into());
        }
        Ok(())
    }
}
