//! Redis key names (SPEC §4), all under the configured prefix.

use crate::messages::{Lane, SessionId};

/// Builds key names.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    /// `redis.key_prefix`.
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// `session:{id}:qr` (the last QR forwarded, 60 s).
    pub fn qr(&self, session_id: &SessionId) -> String {
        format!("{}session:{session_id}:qr", self.prefix)
    }

    /// `session:{id}:status` (120 s).
    pub fn status(&self, session_id: &SessionId) -> String {
        format!("{}session:{session_id}:status", self.prefix)
    }

    /// `session:{id}:connection` (30 s).
    pub fn connection(&self, session_id: &SessionId) -> String {
        format!("{}session:{session_id}:connection", self.prefix)
    }

    /// `session:{id}:info` (300 s).
    pub fn info(&self, session_id: &SessionId) -> String {
        format!("{}session:{session_id}:info", self.prefix)
    }

    /// Pattern matching every key of one kind (`qr`, `status`, ...), for counting.
    pub fn pattern(&self, kind: &str) -> String {
        format!("{}session:*:{kind}", self.prefix)
    }

    /// Hash of undelivered items of a lane: session → `seq|json` (never expires).
    pub fn outbox(&self, lane: Lane) -> String {
        format!("{}wasup:outbox:{}", self.prefix, lane.name())
    }

    /// Hash of dead letters: `lane|coalescing key` → `seq|json` (bounded by the batch actor).
    pub fn dead_letters(&self) -> String {
        format!("{}wasup:dead_letters", self.prefix)
    }

    /// Hash of outgoing messages: message id → `seq|record` (text only until sent or given up).
    pub fn outgoing(&self) -> String {
        format!("{}wasup:outgoing", self.prefix)
    }

    /// Hash of sessions to restore: session → JSON record (never expires).
    pub fn sessions(&self) -> String {
        format!("{}wasup:sessions", self.prefix)
    }
}
