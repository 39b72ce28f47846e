//! The `[messages]` settings: concurrency, retries and bounds of the outgoing message queue.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `[messages]` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagesConfig {
    /// Sends running at once on this node.
    pub max_concurrent: usize,
    /// Retries of a failed send.
    pub retries: u32,
    /// First retry delay; doubles each retry, jittered.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Cap on the retry delay.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Time one send may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Messages waiting at most; more are refused (503).
    pub max_queued: usize,
    /// Outcomes remembered for `GET /sessions/{id}/messages/{mid}`.
    pub max_remembered: usize,
    /// Send each message's outcome (sent, failed) to Laravel in the messages lane
    /// (`"direction":"outgoing"`; the drop-in stores them). Off for a Laravel app whose messages
    /// endpoint accepts only incoming messages.
    pub report_outcomes: bool,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 20,
            retries: 5,
            backoff_base: Duration::from_secs(3),
            backoff_max: Duration::from_secs(120),
            timeout: Duration::from_secs(45),
            max_queued: 10_000,
            max_remembered: 50_000,
            report_outcomes: true,
        }
    }
}

impl MessagesConfig {
    /// Checks the values, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_concurrent == 0 || self.max_queued == 0 || self.max_remembered == 0 {
            return Err(
                "messages.max_concurrent, max_queued and max_remembered must be at least 1".into(),
            );
        }
        if self.timeout.is_zero() || self.backoff_base.is_zero() {
            return Err("messages.timeout and messages.backoff_base must be above zero".into());
        }
        if self.backoff_max < self.backoff_base {
            return Err("messages.backoff_max must be at least messages.backoff_base".into());
        }
        Ok(())
    }
}
