//! Typed answers of the API calls that are not an actor's own type, so the handlers and the
//! OpenAPI document (`/openapi.json`) describe the same JSON.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use wasup_actors::{breaker::BreakerSnapshot, dispatch::DispatchStats, registry::RegistryStats};

use crate::core_actors::CoreRestartFigures;

/// Every error: `{"error": "...", "code": "..."}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// What went wrong, for programs (`not_found`, `bad_request`, `unauthorized`, ...).
    pub code: String,
}

/// `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// `ok`, `degraded` (breaker not closed or Redis down) or `shutting_down`.
    pub status: String,
    /// Now, ms since the epoch.
    pub timestamp: u64,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Engine kind.
    pub engine: String,
    /// Connected sessions.
    pub active_sessions: usize,
    /// Session figures.
    pub sessions: RegistryStats,
    /// Delivery lanes and the message queue.
    pub queues: QueueFigures,
    /// The circuit breaker.
    pub circuit_breaker: BreakerSnapshot,
    /// `reachable`, `unreachable` (breaker not closed, or the last request failed) or
    /// `untried` (no request yet).
    pub laravel: String,
    /// `up`, `down` or `disabled`.
    pub redis: String,
    /// The durable outbox (absent without Redis).
    #[schema(value_type = Option<Object>)]
    pub outbox: Option<Value>,
    /// Restarts of each core actor in this process (a stopped or panicked actor is replaced,
    /// up to `http.core_restarts` within `http.core_restart_window`).
    pub core_restarts: CoreRestartFigures,
}

/// The queues in `/health`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueFigures {
    /// The QR lane.
    pub qr: LaneFigures,
    /// The status lane.
    pub status: LaneFigures,
    /// The lane of incoming messages on their way to Laravel.
    pub incoming_messages: LaneFigures,
    /// Outgoing text messages.
    pub message_queue: DispatchStats,
}

/// One lane in `/health`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LaneFigures {
    /// Items waiting or in flight.
    pub pending: usize,
    /// Items in the batch out now.
    pub in_flight: usize,
    /// Milliseconds until the lane may send again, while it waits on a failure.
    pub blocked_for_ms: Option<u64>,
}

/// `GET /sessions/{id}/qr` as JSON.
#[derive(Debug, Serialize, ToSchema)]
pub struct QrAnswer {
    /// The session.
    pub session_id: String,
    /// The QR as a PNG data URL.
    pub qr: String,
    /// The raw QR text.
    pub raw: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// `POST /sessions/{id}/pair-code`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PairCodeAnswer {
    /// The session.
    pub session_id: String,
    /// The code to type on the phone (`XXXX-XXXX`).
    pub code: String,
}

/// `DELETE /sessions/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RemovedAnswer {
    /// The session.
    pub session_id: String,
    /// Always `inactive`.
    pub status: String,
    /// Always true.
    pub removed: bool,
}

/// The manual sweeps.
#[derive(Debug, Serialize, ToSchema)]
pub struct CleanupAnswer {
    /// Sessions removed.
    pub removed: usize,
}

/// The simulate hooks.
#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedAnswer {
    /// The session.
    pub session_id: String,
    /// Always true.
    pub accepted: bool,
}
