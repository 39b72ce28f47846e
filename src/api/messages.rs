//! Outgoing text messages: `POST /sessions/{id}/messages` queues one, `GET .../messages/{mid}`
//! tells its state.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use wasup_actors::dispatch::{DispatchError, GetMessage, QueueMessage, Queued};

#[allow(unused_imports)]
use super::schema::ErrorBody;
use super::{ApiError, AppState, phone_digits, session_actor};
use wasup_actors::dispatch::MessageRecord;

/// Longest text accepted (WhatsApp's own limit is 65,536 characters).
const MAX_TEXT_CHARS: usize = 65_536;

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;

/// The request's `Idempotency-Key`: 1 to 128 visible ASCII characters, or absent.
fn idempotency_key(request: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers().get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|key| {
            (1..=MAX_IDEMPOTENCY_KEY_CHARS).contains(&key.len())
                && key.bytes().all(|byte| byte.is_ascii_graphic())
        })
        .map(|key| Some(key.to_string()))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters"
            ))
        })
}

/// `POST /sessions/{id}/messages` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Recipient: digits with country code (a leading `+` is allowed).
    #[schema(pattern = r"^\+?[0-9]{5,20}$")]
    to: String,
    /// The text (not only spaces).
    #[schema(pattern = r"\S", max_length = 65536)]
    text: String,
}

#[utoipa::path(post, path = "/sessions/{id}/messages", tag = "messages", params(("id" = String, Path, description = "Session id"), ("Idempotency-Key" = Option<String>, Header, description = "1 to 128 visible ASCII characters: the same request again answers the message queued the first time")), request_body = SendRequest, responses((status = 202, description = "Queued", body = MessageRecord), (status = 200, description = "Queued earlier under the same Idempotency-Key: that message's record", body = MessageRecord), (status = 422, description = "The Idempotency-Key was used for a different message of this session", body = ErrorBody), (status = 404, description = "No such session", body = ErrorBody), (status = 409, description = "Restarting after a crash", body = ErrorBody), (status = 503, description = "Queue full, or Redis did not take the message; Retry-After says when to try again", body = ErrorBody), (status = 400, description = "Bad input", body = ErrorBody), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody), (status = 429, description = "Rate limited", body = ErrorBody)))]
/// `POST /sessions/{id}/messages {"to","text"}`: 202 with the message's record (`message_id`,
/// `state`). With `Idempotency-Key`, the same request again answers 200 with the message queued
/// the first time (while its record is kept), never a second message.
pub async fn send(
    state: web::Data<AppState>,
    request: HttpRequest,
    id: web::Path<String>,
    body: web::Json<SendRequest>,
) -> Result<HttpResponse, ApiError> {
    let idempotency_key = idempotency_key(&request)?;
    let SendRequest { to, text } = body.into_inner();
    let to = phone_digits(&to, 5, 20).ok_or_else(|| {
        ApiError::BadRequest("to must be 5 to 20 digits with country code".into())
    })?;
    if text.trim().is_empty() || text.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::BadRequest(format!(
            "text must be 1 to {MAX_TEXT_CHARS} characters"
        )));
    }
    let session_id = id.into_inner();
    session_actor(&state, &session_id).await?;
    let record = state
        .dispatcher
        .send(QueueMessage {
            session_id,
            to,
            text,
            idempotency_key,
        })
        .await?
        .map_err(|error| match error {
            DispatchError::KeyReused => ApiError::KeyReused,
            // Sends drain the queue at their own pace; Redis comes back or is retried soon.
            DispatchError::QueueFull(_) => ApiError::Busy {
                retry_after_secs: 5,
                reason: error.to_string(),
            },
            DispatchError::NotStored(_) => ApiError::Busy {
                retry_after_secs: 2,
                reason: error.to_string(),
            },
        })?;
    Ok(match record {
        Queued::New(record) => HttpResponse::Accepted().json(record),
        Queued::Earlier(record) => HttpResponse::Ok().json(record),
    })
}

#[utoipa::path(get, path = "/sessions/{id}/messages/{message_id}", tag = "messages", params(("id" = String, Path, description = "Session id"), ("message_id" = String, Path, description = "Message id")), responses((status = 200, description = "State, attempts, last error", body = MessageRecord), (status = 404, description = "No such message for this session", body = ErrorBody), (status = 400, description = "Bad input", body = ErrorBody), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody), (status = 429, description = "Rate limited", body = ErrorBody)))]
/// `GET /sessions/{id}/messages/{mid}`: the message's state, attempts and last error.
pub async fn status(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (session_id, message_id) = path.into_inner();
    let record = state
        .dispatcher
        .send(GetMessage {
            session_id,
            message_id: message_id.clone(),
        })
        .await?
        .ok_or(ApiError::NoMessage(message_id))?;
    Ok(HttpResponse::Ok().json(record))
}
