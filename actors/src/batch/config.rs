//! The `[batch]` settings: batch sizes, deadlines and bounds of the delivery queue.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How items are grouped before they go to Laravel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most items of one lane in one request (the split contract's cap per call).
    pub max_items: usize,
    /// Most items of one lane in one combined request (`laravel.contract = "combined"`): one
    /// request carries every lane, so a busy lane filling up does not add requests of its own.
    pub max_items_combined: usize,
    /// Most items of one lane in one request while batches of `max_items` at the budget's pace
    /// would leave some item late (a backlog after an outage, a wave of QRs from sessions that
    /// started together, a shutdown drain); a 413 halves it.
    pub max_items_backlog: usize,
    /// A QR reaches Laravel at most this long after it appeared (it lives 20 s; at scale a batch
    /// fills long before). (`interval`, its old name, is read as this with a warning.)
    #[serde(with = "humantime_serde")]
    pub qr_deadline: Duration,
    /// A normal status reaches Laravel within this delay.
    #[serde(with = "humantime_serde")]
    pub status_interval: Duration,
    /// Urgent statuses (open, close, logout) reach Laravel within this delay, the request's own
    /// latency included: they wait for company until only the expected latency and a quarter of
    /// it are left.
    #[serde(with = "humantime_serde")]
    pub priority_delay: Duration,
    /// An incoming WhatsApp message reaches Laravel within this delay.
    #[serde(with = "humantime_serde")]
    pub message_deadline: Duration,
    /// Cap on the retry delay of items Laravel listed in `failed_ids`.
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
    /// Most items waiting per lane; past it the oldest is dropped (counted). One item per session
    /// and lane is kept, so this only binds with more sessions than it.
    pub max_pending: usize,
    /// Capacity of the batch actor's mailbox; sessions hold their latest item while it is full.
    pub mailbox_capacity: usize,
    /// Most dead letters kept (items Laravel refused for good); past it the oldest is dropped
    /// (counted).
    pub dead_letters_max: usize,
    /// Most bytes of dead letters kept (their JSON: a QR image is ~2 KB, a message up to its
    /// text); past it the oldest is dropped (counted).
    pub dead_letters_max_bytes: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_items: 50,
            max_items_combined: 200,
            max_items_backlog: 500,
            qr_deadline: Duration::from_secs(1),
            status_interval: Duration::from_secs(1),
            priority_delay: Duration::from_millis(500),
            message_deadline: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(300),
            max_pending: 200_000,
            mailbox_capacity: 4096,
            dead_letters_max: 10_000,
            dead_letters_max_bytes: 64 << 20,
        }
    }
}

impl BatchConfig {
    /// Checks the values, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_items == 0 {
            return Err("batch.max_items must be at least 1".into());
        }
        if self.max_items_combined < self.max_items {
            return Err("batch.max_items_combined must be at least batch.max_items".into());
        }
        if self.max_items_backlog < self.max_items {
            return Err("batch.max_items_backlog must be at least batch.max_items".into());
        }
        if self.max_pending < self.max_items {
            return Err("batch.max_pending must be at least batch.max_items".into());
        }
        if self.dead_letters_max == 0 || self.dead_letters_max_bytes == 0 {
            return Err(
                "batch.dead_letters_max and batch.dead_letters_max_bytes must be at least 1".into(),
            );
        }
        if self.mailbox_capacity == 0 {
            return Err("batch.mailbox_capacity must be at least 1".into());
        }
        if self.qr_deadline.is_zero()
            || self.status_interval.is_zero()
            || self.message_deadline.is_zero()
        {
            return Err(
                "batch.qr_deadline, batch.status_interval and batch.message_deadline must be above zero"
                    .into(),
            );
        }
        if self.priority_delay.is_zero() {
            return Err("batch.priority_delay must be above zero".into());
        }
        Ok(())
    }
}
