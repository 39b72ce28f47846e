//! Outgoing text messages: `POST /sessions/{id}/messages` queues one, `GET .../messages/{mid}`
//! tells its state.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use wasup_actors::{
    dispatch::{GetMessage, QueueMessage},
    registry::LookupSession,
};

use super::{ApiError, AppState};

/// Longest text accepted (WhatsApp's own limit is 65,536 characters).
const MAX_TEXT_CHARS: usize = 65_536;

/// `POST /sessions/{id}/messages` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Recipient: digits with country code (a leading `+` is allowed).
    to: String,
    /// The text.
    text: String,
}

/// `POST /sessions/{id}/messages {"to","text"}`: 202 with the message's record (`message_id`, `state`).
pub async fn send(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<SendRequest>,
) -> Result<HttpResponse, ApiError> {
    let SendRequest { to, text } = body.into_inner();
    let to = to.strip_prefix('+').unwrap_or(&to).to_string();
    if !(5..=20).contains(&to.len()) || !to.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(ApiError::BadRequest(
            "to must be 5 to 20 digits with country code".into(),
        ));
    }
    if text.trim().is_empty() || text.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::BadRequest(format!(
            "text must be 1 to {MAX_TEXT_CHARS} characters"
        )));
    }
    let session_id = id.into_inner();
    state
        .registry
        .send(LookupSession {
            session_id: session_id.clone(),
        })
        .await??;
    let record = state
        .dispatcher
        .send(QueueMessage {
            session_id,
            to,
            text,
        })
        .await?
        .map_err(|error| ApiError::Unavailable(error.to_string()))?;
    Ok(HttpResponse::Accepted().json(record))
}

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
