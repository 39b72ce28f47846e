//! The `[sessions]` settings: limits, sweeps, the QR storm guard, reconnects and restarts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How sessions live, reconnect, restart and get cleaned up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Most sessions on this node; more are refused with 503.
    pub max_active: usize,
    /// Threads session actors run on; 0 means one per core.
    pub worker_threads: usize,
    /// A never-connected session older than this is removed (`expired`).
    #[serde(with = "humantime_serde")]
    pub pending_timeout: Duration,
    /// How often the pending sweep runs.
    #[serde(with = "humantime_serde")]
    pub pending_sweep_interval: Duration,
    /// How often sessions that were connected but are not any more are removed (`inactive`).
    #[serde(with = "humantime_serde")]
    pub not_connected_sweep_interval: Duration,
    /// A session not connected and with no engine event for this long is removed (`inactive`),
    /// keeping its credentials.
    #[serde(with = "humantime_serde")]
    pub idle_ttl: Duration,
    /// A session is renewed (restarted with its credentials) after this long.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// How often a session checks its idle time and lifetime.
    #[serde(with = "humantime_serde")]
    pub housekeeping_interval: Duration,
    /// Storm guard: at most one QR per session per interval reaches Laravel; a newer one waits
    /// (the newest wins) until the interval ends, or until the QR Laravel holds expires if that
    /// comes first. WhatsApp's own rotation (one QR per 20 s) is never held. Zero disables it.
    /// (`qr_throttle`, its old name, is read as this with a deprecation warning.)
    #[serde(with = "humantime_serde")]
    pub qr_min_interval: Duration,
    /// Report `pending` again with every QR, as the seeds' old service did (benchmark's naive
    /// mode only: it doubles the traffic).
    pub status_with_every_qr: bool,
    /// First reconnect delay after a dropped connection; doubles, jittered.
    #[serde(with = "humantime_serde")]
    pub reconnect_base: Duration,
    /// Cap on the reconnect delay.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Reconnect attempts in a row before the session is given up (`inactive`).
    pub reconnect_max_attempts: u32,
    /// First delay before restarting a crashed session; doubles per recent crash.
    #[serde(with = "humantime_serde")]
    pub restart_backoff: Duration,
    /// Crashes within `restart_window` after which a session is given up.
    pub max_restarts: u32,
    /// Window over which crashes are counted.
    #[serde(with = "humantime_serde")]
    pub restart_window: Duration,
    /// How often the registry checks every session's mailbox is still open.
    #[serde(with = "humantime_serde")]
    pub watchdog_interval: Duration,
    /// A session store (credentials) that no session has used this long is removed, so stores
    /// left by sessions that ended without a logout do not pile up; swept hourly.
    #[serde(with = "humantime_serde")]
    pub leftover_store_retention: Duration,
    /// Records of sessions that ended without a logout (state `stopped`, their login kept and
    /// bound to their user) kept at most; past it the oldest is forgotten (its store stays until
    /// the leftover sweep). Bounds the registry against churn.
    pub max_stopped: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_active: 250,
            worker_threads: 0,
            pending_timeout: Duration::from_secs(120),
            pending_sweep_interval: Duration::from_secs(30),
            not_connected_sweep_interval: Duration::from_secs(30 * 60),
            idle_ttl: Duration::from_secs(24 * 3600),
            max_lifetime: Duration::from_secs(7 * 24 * 3600),
            housekeeping_interval: Duration::from_secs(60),
            qr_min_interval: Duration::from_secs(5),
            status_with_every_qr: false,
            reconnect_base: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            reconnect_max_attempts: 20,
            restart_backoff: Duration::from_secs(1),
            max_restarts: 5,
            restart_window: Duration::from_secs(600),
            watchdog_interval: Duration::from_secs(5),
            leftover_store_retention: Duration::from_secs(30 * 24 * 3600),
            max_stopped: 10_000,
        }
    }
}

impl SessionConfig {
    /// Checks the values, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("sessions.pending_timeout", self.pending_timeout),
            (
                "sessions.pending_sweep_interval",
                self.pending_sweep_interval,
            ),
            (
                "sessions.not_connected_sweep_interval",
                self.not_connected_sweep_interval,
            ),
            ("sessions.idle_ttl", self.idle_ttl),
            ("sessions.max_lifetime", self.max_lifetime),
            ("sessions.housekeeping_interval", self.housekeeping_interval),
            ("sessions.reconnect_base", self.reconnect_base),
            ("sessions.restart_backoff", self.restart_backoff),
            ("sessions.restart_window", self.restart_window),
            ("sessions.watchdog_interval", self.watchdog_interval),
            (
                "sessions.leftover_store_retention",
                self.leftover_store_retention,
            ),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| value.is_zero()) {
            return Err(format!("{name} must be above zero"));
        }
        if self.max_active == 0 {
            return Err("sessions.max_active must be at least 1".into());
        }
        if self.reconnect_max < self.reconnect_base {
            return Err("sessions.reconnect_max must be at least sessions.reconnect_base".into());
        }
        Ok(())
    }
}
