//! Session calls: start, list, inspect, delete, manual sweeps.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use wasup_actors::messages::{MAX_SESSION_ID_LEN, MAX_USER_ID, is_valid_session_id};
use wasup_actors::registry::{
    CleanupNotConnected, CleanupPending, InspectSession, ListSessions, RemoveSession, StartSession,
};

#[allow(unused_imports)]
use super::schema::ErrorBody;
use super::{
    ApiError, AppState,
    schema::{CleanupAnswer, RemovedAnswer},
};
use wasup_actors::registry::{SessionList, SessionReport, SessionStarted};

/// `POST /start` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The Laravel user owning the session (0 to 2^63-1).
    #[schema(maximum = 9223372036854775807_u64)]
    user_id: Option<u64>,
    /// A chosen id (letters, digits, `-`, `_`); a new one when absent.
    session_id: Option<String>,
}

#[utoipa::path(post, path = "/start", tag = "sessions", request_body = StartRequest, responses((status = 201, description = "Created; its QR follows", body = SessionStarted), (status = 409, description = "The chosen id exists", body = ErrorBody), (status = 503, description = "At capacity or shutting down", body = ErrorBody), (status = 400, description = "Bad input", body = ErrorBody), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody), (status = 429, description = "Rate limited", body = ErrorBody)))]
/// `POST /start`: creates a session; 201 with its id and first status.
pub async fn start(
    state: web::Data<AppState>,
    body: web::Json<StartRequest>,
) -> Result<HttpResponse, ApiError> {
    let StartRequest {
        user_id,
        session_id,
    } = body.into_inner();
    if let Some(id) = &session_id
        && !is_valid_session_id(id)
    {
        return Err(ApiError::BadRequest(format!(
            "session_id must be 1 to {MAX_SESSION_ID_LEN} letters, digits, '-' or '_'"
        )));
    }
    if user_id.is_some_and(|user_id| user_id > MAX_USER_ID) {
        return Err(ApiError::BadRequest(format!(
            "user_id must be 0 to {MAX_USER_ID} (Laravel's ids are signed 64-bit integers)"
        )));
    }
    let started = state
        .registry
        .send(StartSession {
            user_id,
            session_id,
        })
        .await??;
    Ok(HttpResponse::Created().json(started))
}

#[utoipa::path(get, path = "/sessions", tag = "sessions", responses((status = 200, description = "Every session; those never connected apart", body = SessionList), (status = 400, description = "Bad input", body = ErrorBody), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody), (status = 429, description = "Rate limited", body = ErrorBody)))]
/// `GET /sessions`: `sessions`, `pendingSessions`, `pendingCount`.
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.registry.send(ListSessions).await?))
}

#[utoipa::path(get, path = "/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "Session id")), responses((status = 200, description = "Supervision facts and the actor's own view", body = SessionReport), (status = 404, description = "No such session", body = ErrorBody), (status = 400, description = "Bad input", body = ErrorBody), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody), (status = 429, description = "Rate limited", body = ErrorBody)))]
/// `GET /sessions/{id}`: the per-session actor inspection.
pub async fn inspect(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let report = state
        .registry
        .send(InspectSession {
            session_id: id.into_inner(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(report))
}

/// `DELETE /sessions/{id}` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// Log out of WhatsApp too.
    #[serde(default)]
    logout: bool,
}

#[utoipa::path(delete, path = "/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "Session id"), RemoveQuery), responses((status = 200, description = "Stopped and forgotten; inactive reported", body = RemovedAnswer), (status = 404, description = "No such session", body = ErrorBody), (status = 400, description = "Bad input", body = ErrorBody), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody), (status = 429, description = "Rate limited", body = ErrorBody)))]
/// `DELETE /sessions/{id}[?logout=true]`: stops and forgets the session, reporting `inactive`.
pub async fn remove(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<RemoveQuery>,
) -> Result<HttpResponse, ApiError> {
    let session_id = id.into_inner();
    state
        .registry
        .send(RemoveSession {
            session_id: session_id.clone(),
            logout: query.logout,
        })
        .await??;
    Ok(HttpResponse::Ok().json(RemovedAnswer {
        session_id,
        status: "inactive".into(),
        removed: true,
    }))
}

#[utoipa::path(post, path = "/cleanup-pending-sessions", tag = "sessions", responses((status = 200, description = "Never-scanned sessions past the pending timeout removed", body = CleanupAnswer), (status = 400, description = "Bad input", body = ErrorBody), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody), (status = 429, description = "Rate limited", body = ErrorBody)))]
/// `POST /cleanup-pending-sessions`: removes never-scanned sessions past the pending timeout.
pub async fn cleanup_pending(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let removed = state.registry.send(CleanupPending).await?;
    Ok(HttpResponse::Ok().json(CleanupAnswer { removed }))
}

#[utoipa::path(post, path = "/cleanup-inactive-sessions", tag = "sessions", responses((status = 200, description = "Sessions that lost their connection removed", body = CleanupAnswer), (status = 400, description = "Bad input", body = ErrorBody), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody), (status = 429, description = "Rate limited", body = ErrorBody)))]
/// `POST /cleanup-inactive-sessions`: removes sessions that lost their connection a sweep interval ago.
pub async fn cleanup_inactive(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let removed = state.registry.send(CleanupNotConnected).await?;
    Ok(HttpResponse::Ok().json(CleanupAnswer { removed }))
}
