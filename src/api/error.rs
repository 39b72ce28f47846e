//! API errors: every failure answers JSON `{"error": "...", "code": "..."}` with its status.

use super::schema::ErrorBody;
use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use wasup_actors::{registry::RegistryError, session::SessionError};

/// What an API call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A registry refusal.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than `http.max_body_bytes`.
    #[error("request body too large (at most {0} bytes)")]
    PayloadTooLarge(usize),
    /// The session shows no QR now (connected, or between QRs).
    #[error("session {0} shows no QR now")]
    NoQr(String),
    /// No such message (or not this session's).
    #[error("message {0} not found")]
    NoMessage(String),
    /// No such route.
    #[error("no such route: {0}")]
    NoRoute(String),
    /// The body is not declared JSON.
    #[error("request bodies must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// The route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// An actor did not answer (shutting down).
    #[error("wasup is not answering: {0}")]
    Unavailable(String),
    /// An `Idempotency-Key` already used for a different message of the session: 422.
    #[error("this Idempotency-Key was used for a different message of this session")]
    KeyReused,
    /// Refused for a moment (the message queue is full, Redis did not take the message): 503
    /// with `Retry-After`, so a client knows to try again and when.
    #[error("{reason}")]
    Busy {
        /// What refused it.
        reason: String,
        /// Seconds after which trying again makes sense.
        retry_after_secs: u64,
    },
}

impl ApiError {
    /// A short machine-readable code.
    fn code(&self) -> &'static str {
        match self {
            ApiError::Registry(RegistryError::NotFound(_)) => "not_found",
            ApiError::Registry(RegistryError::AlreadyExists(_)) => "already_exists",
            ApiError::Registry(RegistryError::AtCapacity { .. }) => "at_capacity",
            ApiError::Registry(RegistryError::ShuttingDown) => "shutting_down",
            ApiError::Registry(RegistryError::Unavailable(_)) => "session_restarting",
            ApiError::Registry(RegistryError::Finishing(_)) => "session_finishing",
            ApiError::Registry(RegistryError::Stopped(_)) => "session_stopped",
            ApiError::Registry(RegistryError::OwnedByAnother(_)) => "owned_by_another_user",
            ApiError::Registry(RegistryError::Session(SessionError::Closing)) => "session_closing",
            ApiError::Registry(RegistryError::Session(SessionError::NotConnected(_))) => {
                "not_connected"
            }
            ApiError::Registry(RegistryError::Session(SessionError::Engine(_))) => "engine_error",
            ApiError::NoQr(_) => "no_qr",
            ApiError::NoMessage(_) => "message_not_found",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::NoRoute(_) => "no_route",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Busy { .. } => "busy",
            ApiError::KeyReused => "idempotency_key_reused",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Registry(RegistryError::NotFound(_))
            | ApiError::NoRoute(_)
            | ApiError::NoQr(_)
            | ApiError::NoMessage(_) => StatusCode::NOT_FOUND,
            ApiError::Registry(
                RegistryError::AlreadyExists(_)
                | RegistryError::Session(_)
                | RegistryError::Unavailable(_)
                | RegistryError::Finishing(_)
                | RegistryError::Stopped(_)
                | RegistryError::OwnedByAnother(_),
            ) => StatusCode::CONFLICT,
            ApiError::Registry(RegistryError::AtCapacity { .. } | RegistryError::ShuttingDown)
            | ApiError::Unavailable(_)
            | ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            // A finishing session stops within moments (a logout round trip, a store removal).
            ApiError::Registry(RegistryError::Finishing(_)) => {
                response.insert_header(("Retry-After", "1"));
            }
            ApiError::Busy {
                retry_after_secs, ..
            } => {
                response.insert_header(("Retry-After", retry_after_secs.to_string()));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: self.to_string(),
            code: self.code().into(),
        })
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(error: actix::MailboxError) -> Self {
        ApiError::Unavailable(error.to_string())
    }
}
