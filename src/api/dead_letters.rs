//! Dead letters: items Laravel refused for good, listed (`GET /dead-letters`) and sent again
//! (`POST /dead-letters/replay`), e.g. once Laravel's validation or URL is fixed.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use wasup_actors::{
    batch::{DeadLetterList, ListDeadLetters, ReplayDeadLetters},
    messages::Lane,
};

#[allow(unused_imports)]
use super::schema::ErrorBody;
use super::{ApiError, AppState};

/// Most dead letters one `GET /dead-letters` lists.
const MAX_LIST: usize = 10_000;
/// How many it lists unless told.
const DEFAULT_LIST: usize = 1_000;

/// A lane as the API names it: `qr`, `status` or `message` (plurals accepted).
fn lane_named(name: &str) -> Result<Lane, ApiError> {
    Lane::ALL
        .into_iter()
        .find(|lane| {
            let plural = match lane {
                Lane::Status => "statuses",
                Lane::Qr => "qrs",
                Lane::Message => "messages",
            };
            name == lane.name() || name == plural
        })
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "lane must be one of qr, status, message (not {name:?})"
            ))
        })
}

/// `GET /dead-letters` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this lane's: `qr`, `status` or `message`.
    lane: Option<String>,
    /// At most this many, newest first (1 to 10,000; 1,000 unless given).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/dead-letters", tag = "delivery", params(ListQuery), responses((status = 200, description = "Dead letters, newest first, without their content", body = DeadLetterList), (status = 400, description = "Bad input", body = ErrorBody), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody), (status = 429, description = "Rate limited", body = ErrorBody)))]
/// `GET /dead-letters?lane=&limit=`: `{"items":[{"lane","session_id","key","status","reason","at"}],
/// "total","dropped","superseded","replayed"}`.
pub async fn list(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let ListQuery { lane, limit } = query.into_inner();
    let lane = lane.as_deref().map(lane_named).transpose()?;
    let limit = limit.unwrap_or(DEFAULT_LIST);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIST}"
        )));
    }
    let answer = state
        .batch
        .send(ListDeadLetters { lane, limit })
        .await
        .map_err(|error| ApiError::Unavailable(error.to_string()))?;
    Ok(HttpResponse::Ok().json(answer))
}

/// `POST /dead-letters/replay` body (optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Only this lane's: `qr`, `status` or `message` (every lane when absent).
    lane: Option<String>,
}

/// `POST /dead-letters/replay`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplayAnswer {
    /// Dead letters sent again.
    replayed: usize,
}

#[utoipa::path(post, path = "/dead-letters/replay", tag = "delivery", request_body(content = Option<ReplayRequest>, description = "Optional: only one lane's"), responses((status = 200, description = "Sent again (a QR or status whose session has a newer item pending is not)", body = ReplayAnswer), (status = 503, description = "The previous run's dead letters are still being read from Redis", body = ErrorBody), (status = 400, description = "Bad input", body = ErrorBody), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody), (status = 429, description = "Rate limited", body = ErrorBody)))]
/// `POST /dead-letters/replay [{"lane":"message"}]`: `{"replayed":N}`.
pub async fn replay(
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let request: ReplayRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|error| ApiError::BadRequest(format!("invalid JSON body: {error}")))?
    };
    let lane = request.lane.as_deref().map(lane_named).transpose()?;
    let replayed = state
        .batch
        .send(ReplayDeadLetters { lane })
        .await
        .map_err(|error| ApiError::Unavailable(error.to_string()))?
        .ok_or_else(|| {
            ApiError::Unavailable(
                "the dead letters of the previous run are still being read from Redis".into(),
            )
        })?;
    Ok(HttpResponse::Ok().json(ReplayAnswer { replayed }))
}
