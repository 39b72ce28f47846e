//! A session's lifecycle states and the inspection view of a session actor.

use serde::Serialize;

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// The engine is opening its first connection; no QR yet.
    Starting,
    /// A QR is shown, waiting for a scan.
    Pending,
    /// A phone scanned the QR; the authenticated connection is being opened.
    Pairing,
    /// The connection dropped; reconnecting with backoff.
    Connecting,
    /// WhatsApp cannot be reached; the engine retries with capped backoff (see `last_error`
    /// and `next_retry_in_ms`).
    Error,
    /// WhatsApp refused the session for good (replaced, banned, client outdated): no retries;
    /// `last_error` says why. Delete it, or start it again once the cause is gone.
    Failed,
    /// Connected.
    Active,
    /// Crashed; the registry restarts it after a backoff.
    Restarting,
    /// Finished (logged out, expired, removed); the actor is stopping.
    Closed,
    /// Ended without a logout (idle, reconnects used up, Laravel says inactive, ...): no actor
    /// runs; the record and the login are kept for its user, and `POST /start` with the same id
    /// and `user_id` reconnects it without a QR.
    Stopped,
}

impl SessionState {
    /// The state's name as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Starting => "starting",
            SessionState::Pending => "pending",
            SessionState::Pairing => "pairing",
            SessionState::Connecting => "connecting",
            SessionState::Error => "error",
            SessionState::Failed => "failed",
            SessionState::Active => "active",
            SessionState::Restarting => "restarting",
            SessionState::Closed => "closed",
            SessionState::Stopped => "stopped",
        }
    }
}

/// What a session actor says about itself (`GET /sessions/{id}`).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ActorInspection {
    /// Lifecycle state.
    pub state: SessionState,
    /// Engine kind.
    pub engine: &'static str,
    /// Milliseconds since this actor (this generation) started.
    pub actor_age_ms: u64,
    /// Milliseconds since the connection opened, while active.
    pub connected_for_ms: Option<u64>,
    /// Milliseconds since the last engine event.
    pub last_event_age_ms: u64,
    /// QR codes the engine produced in this actor's life.
    pub qr_count: u64,
    /// Milliseconds since the last QR.
    pub last_qr_age_ms: Option<u64>,
    /// QR codes handed to the batch queue.
    pub qr_forwarded: u64,
    /// QR codes rendered as PNG (once per QR at most).
    pub qr_rendered: u64,
    /// QRs the storm guard held until they expired (never sent).
    pub qr_expired_held: u64,
    /// QR codes dropped as duplicates.
    pub qr_duplicates: u64,
    /// Whether a QR waits for the throttle window.
    pub qr_held: bool,
    /// The last status handed to the batch queue.
    pub last_status: Option<&'static str>,
    /// Reconnect attempts since the connection was last open.
    pub reconnect_attempts: u32,
    /// Reconnects since this actor started.
    pub reconnects: u64,
    /// The last error seen.
    pub last_error: Option<String>,
    /// While WhatsApp cannot be reached: milliseconds until the engine's next attempt.
    pub next_retry_in_ms: Option<u64>,
    /// Incoming messages handed to the batch queue.
    pub messages_received: u64,
    /// Engine events waiting for this actor (its mailbox depth for engine traffic).
    pub mailbox_depth: usize,
    /// Text messages sent.
    pub messages_sent: u64,
    /// The paired phone, when known.
    pub phone: Option<String>,
}
