//! Test hooks of the simulated engine: scan, disconnect, crash. Routed only when
//! `engine.kind = "simulated"`.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use wasup_actors::{
    engine::{DisconnectReason, SimulatedAction},
    registry::SimulateSession,
    session::SimulateCommand,
};

use super::{ApiError, AppState};

async fn apply(
    state: &AppState,
    session_id: String,
    command: SimulateCommand,
) -> Result<HttpResponse, ApiError> {
    state
        .registry
        .send(SimulateSession {
            session_id: session_id.clone(),
            command,
        })
        .await??;
    Ok(HttpResponse::Accepted().json(json!({ "session_id": session_id, "accepted": true })))
}

/// `POST /sessions/{id}/simulate/scan`: a phone scans the current QR.
pub async fn scan(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    apply(
        &state,
        id.into_inner(),
        SimulateCommand::Engine(SimulatedAction::Scan),
    )
    .await
}

/// `POST /sessions/{id}/simulate/disconnect` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisconnectRequest {
    /// `logged_out`, `connection_lost`, `connection_replaced`, `restart_required` or `timed_out`.
    reason: DisconnectReason,
}

/// `POST /sessions/{id}/simulate/disconnect {"reason":"..."}`: the connection closes.
pub async fn disconnect(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<DisconnectRequest>,
) -> Result<HttpResponse, ApiError> {
    apply(
        &state,
        id.into_inner(),
        SimulateCommand::Engine(SimulatedAction::Disconnect(body.reason)),
    )
    .await
}

/// `POST /sessions/{id}/simulate/crash`: the session actor panics; the registry restarts it.
pub async fn crash(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    apply(&state, id.into_inner(), SimulateCommand::Crash).await
}

/// `POST /sessions/{id}/simulate/fail-messages` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailMessagesRequest {
    /// How many of the next text messages fail.
    count: u32,
}

/// `POST /sessions/{id}/simulate/fail-messages {"count":N}`: the next N sends fail.
pub async fn fail_messages(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<FailMessagesRequest>,
) -> Result<HttpResponse, ApiError> {
    let action = SimulatedAction::FailMessages { count: body.count };
    apply(&state, id.into_inner(), SimulateCommand::Engine(action)).await
}
