//! The `[laravel]` settings: where batches go and how hard wasup tries.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::request::Contract;
use crate::batch::BudgetLimits;

/// How the sink talks to Laravel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Base URL of Laravel's API, e.g. `http://127.0.0.1:8000/api`.
    pub base_url: String,
    /// Bearer token sent as `Authorization: Bearer ...`; empty sends none.
    pub token: String,
    /// Send each item on its own to the legacy `POST /qr` / `POST /whatsapp/status` instead of
    /// batches (for a Laravel without the batch endpoints, and the benchmark's naive mode).
    pub single_item_calls: bool,
    /// `split` (one call per lane, the SPEC's default) or `combined` (every due lane in one
    /// `POST /whatsapp/events/batch`; the Laravel drop-in serves it).
    pub contract: Contract,
    /// Shared secret for `X-Wasup-Signature` (HMAC-SHA256 of `"{timestamp}.{idempotency_key}.{body}"`); empty signs nothing.
    pub signing_secret: String,
    /// Whole-request timeout.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries of one batch after its first attempt, before it goes back to the queue.
    pub retries: u32,
    /// First retry delay; doubles each retry, jittered.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Cap on any retry delay.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Most requests at Laravel at once; the budget adapts below it when Laravel slows or fails.
    pub max_in_flight: usize,
    /// Most requests started per second; adapted below it like `max_in_flight`.
    pub max_requests_per_second: f64,
    /// Optional floor between the starts of two requests; zero (the default) leaves pacing to
    /// the adaptive budget.
    #[serde(with = "humantime_serde")]
    pub min_request_gap: Duration,
    /// Most open connections to Laravel.
    pub max_connections: usize,
    /// How long an idle connection is kept.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8000/api".into(),
            token: String::new(),
            signing_secret: String::new(),
            single_item_calls: false,
            timeout: Duration::from_secs(45),
            retries: 5,
            backoff_base: Duration::from_secs(3),
            backoff_max: Duration::from_secs(300),
            contract: Contract::Split,
            max_in_flight: 2,
            max_requests_per_second: 5.0,
            min_request_gap: Duration::ZERO,
            max_connections: 500,
            keep_alive: Duration::from_secs(60),
        }
    }
}

impl SinkConfig {
    /// Checks the values, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(format!(
                "laravel.base_url must start with http:// or https://, got {:?}",
                self.base_url
            ));
        }
        if self.timeout.is_zero() {
            return Err("laravel.timeout must be above zero".into());
        }
        if self.backoff_base.is_zero() {
            return Err("laravel.backoff_base must be above zero".into());
        }
        if self.backoff_max < self.backoff_base {
            return Err("laravel.backoff_max must be at least laravel.backoff_base".into());
        }
        if self.max_in_flight == 0 {
            return Err("laravel.max_in_flight must be at least 1".into());
        }
        if !(self.max_requests_per_second.is_finite() && self.max_requests_per_second >= 0.2) {
            return Err("laravel.max_requests_per_second must be at least 0.2".into());
        }
        if self.max_connections == 0 {
            return Err("laravel.max_connections must be at least 1".into());
        }
        Ok(())
    }

    /// The bounds of the adaptive request budget.
    pub fn budget_limits(&self) -> BudgetLimits {
        BudgetLimits {
            max_in_flight: self.max_in_flight,
            max_per_second: self.max_requests_per_second,
            min_gap: self.min_request_gap,
        }
    }

    /// The full URL of a path under the base URL.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url.trim_end_matches('/'), path)
    }
}
