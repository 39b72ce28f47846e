//! Test hooks of the simulated engine: scan, disconnect, crash, incoming messages. Routed only when
//! `engine.kind = "simulated"`.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use wasup_actors::{
    engine::{DisconnectReason, MessagesAck, SimulatedAction},
    registry::SimulateSession,
    session::SimulateCommand,
};

#[allow(unused_imports)]
use super::schema::ErrorBody;
use super::{ApiError, AppState, schema::AcceptedAnswer};

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
    Ok(HttpResponse::Accepted().json(AcceptedAnswer {
        session_id,
        accepted: true,
    }))
}

#[utoipa::path(post, path = "/sessions/{id}/simulate/scan", tag = "simulate", params(("id" = String, Path, description = "Session id")), responses((status = 202, description = "A phone scans the QR", body = AcceptedAnswer), (status = 404, description = "No such session", body = ErrorBody), (status = 409, description = "Refused (closing, restarting, or the connection is down)", body = ErrorBody), (status = 400, description = "Bad input", body = ErrorBody), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody), (status = 429, description = "Rate limited", body = ErrorBody)))]
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
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisconnectRequest {
    /// `logged_out`, `connection_lost`, `connection_replaced`, `restart_required` or `timed_out`.
    reason: DisconnectReason,
}

#[utoipa::path(post, path = "/sessions/{id}/simulate/disconnect", tag = "simulate", params(("id" = String, Path, description = "Session id")), request_body = DisconnectRequest, responses((status = 202, description = "The connection closes", body = AcceptedAnswer), (status = 404, description = "No such session", body = ErrorBody), (status = 409, description = "Refused (closing or restarting)", body = ErrorBody), (status = 400, description = "Bad input", body = ErrorBody), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody), (status = 429, description = "Rate limited", body = ErrorBody)))]
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

#[utoipa::path(post, path = "/sessions/{id}/simulate/crash", tag = "simulate", params(("id" = String, Path, description = "Session id")), responses((status = 202, description = "The session actor panics; the registry restarts it", body = AcceptedAnswer), (status = 404, description = "No such session", body = ErrorBody), (status = 409, description = "Restarting after a crash", body = ErrorBody), (status = 400, description = "Bad input", body = ErrorBody), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody), (status = 429, description = "Rate limited", body = ErrorBody)))]
/// `POST /sessions/{id}/simulate/crash`: the session actor panics; the registry restarts it.
pub async fn crash(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    apply(&state, id.into_inner(), SimulateCommand::Crash).await
}

/// `POST /sessions/{id}/simulate/message` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncomingMessageRequest {
    /// The sender: digits with country code, or a JID.
    #[schema(min_length = 1, max_length = 64)]
    from: String,
    /// The text.
    #[schema(max_length = 4096)]
    text: String,
    /// Its WhatsApp id (a fresh random one when absent): sending the same id again from the same
    /// sender in the same chat is a redelivery.
    #[schema(min_length = 1, max_length = 128)]
    message_id: Option<String>,
    /// A group chat's JID (a direct message when absent).
    #[schema(min_length = 1, max_length = 64)]
    chat: Option<String>,
    /// Wait (at most 10 s) for wasup's receipt, as WhatsApp does, and answer 200 with whether
    /// it came: a receipted message is in the durable outbox; an unreceipted one WhatsApp would
    /// deliver again.
    #[serde(default)]
    wait_receipt: bool,
}

/// How long `wait_receipt` waits for wasup's receipt.
const RECEIPT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `POST /sessions/{id}/simulate/message`'s answer with `wait_receipt`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ReceiptAnswer {
    /// The session.
    session_id: String,
    /// The message's WhatsApp id (the one given, or the fresh one chosen).
    message_id: String,
    /// Whether wasup receipted it (the message is in the durable outbox) within 10 s.
    receipted: bool,
}

#[utoipa::path(post, path = "/sessions/{id}/simulate/message", tag = "simulate", params(("id" = String, Path, description = "Session id")), request_body = IncomingMessageRequest, responses((status = 202, description = "A text message arrives; it is forwarded to Laravel's messages batch", body = AcceptedAnswer), (status = 200, description = "With wait_receipt: whether wasup receipted it", body = ReceiptAnswer), (status = 404, description = "No such session", body = ErrorBody), (status = 409, description = "Refused (not connected, closing or restarting)", body = ErrorBody), (status = 400, description = "Bad input", body = ErrorBody), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody), (status = 429, description = "Rate limited", body = ErrorBody)))]
/// `POST /sessions/{id}/simulate/message {"from":"...","text":"..."}`: a message arrives.
pub async fn message(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<IncomingMessageRequest>,
) -> Result<HttpResponse, ApiError> {
    let IncomingMessageRequest {
        from,
        text,
        message_id,
        chat,
        wait_receipt,
    } = body.into_inner();
    let within = |value: &Option<String>, max: usize| {
        value
            .as_ref()
            .is_none_or(|value| !value.is_empty() && value.len() <= max)
    };
    if from.is_empty()
        || from.len() > 64
        || text.len() > 4096
        || !within(&message_id, 128)
        || !within(&chat, 64)
    {
        return Err(ApiError::BadRequest(
            "from must be 1 to 64 characters, text at most 4096, message_id 1 to 128, chat 1 to 64"
                .into(),
        ));
    }
    if !wait_receipt {
        let action = SimulatedAction::ReceiveMessage {
            from,
            text,
            message_id,
            chat,
            receipt: None,
        };
        return apply(&state, id.into_inner(), SimulateCommand::Engine(action)).await;
    }
    let message_id = message_id.unwrap_or_else(|| format!("3EB0{:016X}", fastrand::u64(..)));
    let (receipt, receipted) = MessagesAck::new();
    let action = SimulatedAction::ReceiveMessage {
        from,
        text,
        message_id: Some(message_id.clone()),
        chat,
        receipt: Some(receipt),
    };
    let session_id = id.into_inner();
    apply(&state, session_id.clone(), SimulateCommand::Engine(action)).await?;
    let receipted = matches!(
        actix_rt::time::timeout(RECEIPT_WAIT, receipted).await,
        Ok(Ok(()))
    );
    Ok(HttpResponse::Ok().json(ReceiptAnswer {
        session_id,
        message_id,
        receipted,
    }))
}

/// `POST /sessions/{id}/simulate/fail-messages` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailMessagesRequest {
    /// How many of the next text messages fail.
    count: u32,
}

#[utoipa::path(post, path = "/sessions/{id}/simulate/fail-messages", tag = "simulate", params(("id" = String, Path, description = "Session id")), request_body = FailMessagesRequest, responses((status = 202, description = "The next sends fail", body = AcceptedAnswer), (status = 404, description = "No such session", body = ErrorBody), (status = 409, description = "Restarting after a crash", body = ErrorBody), (status = 400, description = "Bad input", body = ErrorBody), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody), (status = 429, description = "Rate limited", body = ErrorBody)))]
/// `POST /sessions/{id}/simulate/fail-messages {"count":N}`: the next N sends fail.
pub async fn fail_messages(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<FailMessagesRequest>,
) -> Result<HttpResponse, ApiError> {
    let action = SimulatedAction::FailMessages { count: body.count };
    apply(&state, id.into_inner(), SimulateCommand::Engine(action)).await
}

/// `POST /simulate/halt` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HaltRequest {
    /// `batch`, `sink`, `cache` or `breaker`.
    actor: String,
    /// Panic in the handler instead of stopping (default false).
    #[serde(default)]
    panic: bool,
}

#[utoipa::path(post, path = "/simulate/halt", tag = "simulate", request_body = HaltRequest, responses((status = 202, description = "The core actor stops (or panics); the supervisor starts a fresh one, up to http.core_restarts within http.core_restart_window, after which the liveness probe ends the process", body = HaltAnswer), (status = 400, description = "Bad input", body = ErrorBody), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody), (status = 429, description = "Rate limited", body = ErrorBody)))]
/// `POST /simulate/halt {"actor":"batch","panic":false}`: stops a core actor, as a crash would.
pub async fn halt(
    state: web::Data<AppState>,
    body: web::Json<HaltRequest>,
) -> Result<HttpResponse, ApiError> {
    use wasup_actors::halt::Halt;
    let HaltRequest { actor, panic } = body.into_inner();
    let halt = Halt { panic };
    match actor.as_str() {
        "batch" => state.batch.do_send(halt),
        "sink" => state.sink.do_send(halt),
        "cache" => state.cache.do_send(halt),
        "breaker" => state.breaker.do_send(halt),
        _ => {
            return Err(ApiError::BadRequest(
                "actor must be one of batch, sink, cache, breaker".into(),
            ));
        }
    }
    Ok(HttpResponse::Accepted().json(HaltAnswer { halted: actor }))
}

/// `POST /simulate/halt`'s answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct HaltAnswer {
    /// The actor told to stop.
    halted: String,
}
