//! The `[batch]` settings: batch size, cadences and bounds of the delivery queue.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How items are grouped before they go to Laravel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most items in one request.
    pub max_items: usize,
    /// QR items wait at most this long for company before their lane flushes.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Normal statuses wait at most this long.
    #[serde(with = "humantime_serde")]
    pub status_interval: Duration,
    /// Urgent statuses (open, close, logout) reach Laravel within this delay: they leave at once,
    /// waiting only for the sink's pacing gap, which must be shorter.
    #[serde(with = "humantime_serde")]
    pub priority_delay: Duration,
    /// Cap on the retry delay of items Laravel listed in `failed_ids`.
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
    /// Most items waiting per lane; past it the oldest is dropped (counted). One item per session
    /// and lane is kept, so this only binds with more sessions than it.
    pub max_pending: usize,
    /// Capacity of the batch actor's mailbox; sessions hold their latest item while it is full.
    pub mailbox_capacity: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_items: 50,
            interval: Duration::from_secs(5),
            status_interval: Duration::from_secs(1),
            priority_delay: Duration::from_millis(500),
            retry_backoff_max: Duration::from_secs(300),
            max_pending: 200_000,
            mailbox_capacity: 4096,
        }
    }
}

impl BatchConfig {
    /// Checks the values, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_items == 0 {
            return Err("batch.max_items must be at least 1".into());
        }
        if self.max_pending < self.max_items {
            return Err("batch.max_pending must be at least batch.max_items".into());
        }
        if self.mailbox_capacity == 0 {
            return Err("batch.mailbox_capacity must be at least 1".into());
        }
        if self.interval.is_zero() || self.status_interval.is_zero() {
            return Err("batch.interval and batch.status_interval must be above zero".into());
        }
        if self.priority_delay.is_zero() {
            return Err("batch.priority_delay must be above zero".into());
        }
        Ok(())
    }
}
