//! The `[cache]` settings: TTLs of the Redis cache keys (SPEC §4) and of the local tier.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Cache lifetimes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// `session:{id}:qr`.
    #[serde(with = "humantime_serde")]
    pub qr_ttl: Duration,
    /// `session:{id}:status`.
    #[serde(with = "humantime_serde")]
    pub status_ttl: Duration,
    /// `session:{id}:connection`.
    #[serde(with = "humantime_serde")]
    pub connection_ttl: Duration,
    /// `session:{id}:info`.
    #[serde(with = "humantime_serde")]
    pub info_ttl: Duration,
    /// The in-memory tier of `is_session_active`.
    #[serde(with = "humantime_serde")]
    pub local_ttl: Duration,
    /// Most sessions remembered in the in-memory tier.
    pub local_max_entries: usize,
    /// Timeout of the Laravel tier (`GET /whatsapp/status/{id}`).
    #[serde(with = "humantime_serde")]
    pub laravel_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            qr_ttl: Duration::from_secs(60),
            status_ttl: Duration::from_secs(120),
            connection_ttl: Duration::from_secs(30),
            info_ttl: Duration::from_secs(300),
            local_ttl: Duration::from_secs(30),
            local_max_entries: 100_000,
            laravel_timeout: Duration::from_secs(5),
        }
    }
}

impl CacheConfig {
    /// Checks the values, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        let ttls = [
            ("cache.qr_ttl", self.qr_ttl),
            ("cache.status_ttl", self.status_ttl),
            ("cache.connection_ttl", self.connection_ttl),
            ("cache.info_ttl", self.info_ttl),
            ("cache.local_ttl", self.local_ttl),
            ("cache.laravel_timeout", self.laravel_timeout),
        ];
        if let Some((name, _)) = ttls.iter().find(|(_, ttl)| ttl.is_zero()) {
            return Err(format!("{name} must be above zero"));
        }
        if self.local_max_entries == 0 {
            return Err("cache.local_max_entries must be at least 1".into());
        }
        Ok(())
    }
}
