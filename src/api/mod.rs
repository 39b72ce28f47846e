//! The REST control API (actix-web): routes, shared state, JSON error handling.

mod dead_letters;
mod error;
mod guard;
mod health;
mod limits;
mod messages;
pub mod openapi;
mod qr;
pub mod schema;
mod sessions;
mod simulate;
mod ui;

use std::{sync::Arc, time::Instant};

use actix::Addr;
use actix_web::{HttpRequest, HttpResponse, web};
use wasup_actors::{
    batch::BatchActor, breaker::CircuitBreaker, cache::CacheActor, dispatch::MessageDispatcher,
    registry::LookupSession, registry::SessionRegistry, session::SessionActor, sink::LaravelSink,
    store::RedisHealth, supervision::CoreAddr,
};

pub use error::ApiError;
pub use guard::{Guard, guard};
pub use health::read_snapshot;
pub use limits::{Cidr, RateLimiter};

use crate::{config::Config, core_actors::CoreRestarts, telemetry::Telemetry};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Owns the sessions.
    pub registry: Addr<SessionRegistry>,
    /// The batch queue.
    pub batch: CoreAddr<BatchActor>,
    /// The Laravel sink.
    pub sink: CoreAddr<LaravelSink>,
    /// The breaker.
    pub breaker: CoreAddr<CircuitBreaker>,
    /// The Redis cache.
    pub cache: CoreAddr<CacheActor>,
    /// Restarts of the core actors.
    pub core_restarts: CoreRestarts,
    /// The outgoing message queue.
    pub dispatcher: Addr<MessageDispatcher>,
    /// Redis's health, `None` when Redis is disabled.
    pub redis_health: Option<Arc<RedisHealth>>,
    /// The configuration in force.
    pub config: Arc<Config>,
    /// When the service started.
    pub started_at: Instant,
    /// Prometheus metrics.
    pub telemetry: Arc<Telemetry>,
    /// `/health`'s last answer, reused for `http.health_cache_ttl`.
    pub health_cache: Arc<health::HealthCache>,
}

/// Registers every route on an app.
pub fn configure(
    simulate_hooks: bool,
    max_body_bytes: usize,
) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::PayloadConfig::default().limit(max_body_bytes))
            .app_data(
                web::JsonConfig::default()
                    .limit(max_body_bytes)
                    .content_type_required(true)
                    .error_handler(move |error, _| json_error(error, max_body_bytes).into()),
            )
            .app_data(
                web::PathConfig::default()
                    .error_handler(|error, _| ApiError::BadRequest(error.to_string()).into()),
            )
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|error, _| ApiError::BadRequest(error.to_string()).into()),
            )
            .service(resource("/health").route(web::get().to(health::health)))
            .service(resource("/openapi.json").route(web::get().to(openapi_json)))
            .service(resource("/metrics/batch").route(web::get().to(health::batch_metrics)))
            .service(resource("/metrics/cache").route(web::get().to(health::cache_metrics)))
            .service(resource("/metrics").route(web::get().to(health::prometheus_metrics)))
            .service(resource("/dead-letters").route(web::get().to(dead_letters::list)))
            .service(resource("/dead-letters/replay").route(web::post().to(dead_letters::replay)))
            .service(resource("/start").route(web::post().to(sessions::start)))
            .service(resource("/sessions").route(web::get().to(sessions::list)))
            .service(
                resource("/sessions/{id}")
                    .route(web::get().to(sessions::inspect))
                    .route(web::delete().to(sessions::remove)),
            )
            .service(resource("/sessions/{id}/qr").route(web::get().to(qr::current_qr)))
            .service(resource("/sessions/{id}/pair-code").route(web::post().to(qr::pair_code)))
            .service(resource("/sessions/{id}/messages").route(web::post().to(messages::send)))
            .service(
                resource("/sessions/{id}/messages/{message_id}")
                    .route(web::get().to(messages::status)),
            )
            .service(
                resource("/cleanup-pending-sessions")
                    .route(web::post().to(sessions::cleanup_pending)),
            )
            .service(
                resource("/cleanup-inactive-sessions")
                    .route(web::post().to(sessions::cleanup_inactive)),
            )
            .configure(ui::configure);
        if simulate_hooks {
            cfg.service(
                resource("/sessions/{id}/simulate/scan").route(web::post().to(simulate::scan)),
            )
            .service(
                resource("/sessions/{id}/simulate/disconnect")
                    .route(web::post().to(simulate::disconnect)),
            )
            .service(
                resource("/sessions/{id}/simulate/crash").route(web::post().to(simulate::crash)),
            )
            .service(
                resource("/sessions/{id}/simulate/message")
                    .route(web::post().to(simulate::message)),
            )
            .service(
                resource("/sessions/{id}/simulate/fail-messages")
                    .route(web::post().to(simulate::fail_messages)),
            )
            .service(resource("/simulate/halt").route(web::post().to(simulate::halt)));
        }
        cfg.default_service(web::to(no_route));
    }
}

/// The actor of a session, or 404 / 409 (restarting).
async fn session_actor(state: &AppState, session_id: &str) -> Result<Addr<SessionActor>, ApiError> {
    let lookup = LookupSession {
        session_id: session_id.to_string(),
    };
    Ok(state.registry.send(lookup).await??)
}

/// A phone number as digits: an optional leading `+` dropped, `min` to `max` digits, else `None`.
fn phone_digits(value: &str, min: usize, max: usize) -> Option<String> {
    let digits = value.strip_prefix('+').unwrap_or(value);
    ((min..=max).contains(&digits.len()) && digits.bytes().all(|byte| byte.is_ascii_digit()))
        .then(|| digits.to_string())
}

/// A JSON body problem as an API error: 413 when too large, 400 otherwise.
fn json_error(error: actix_web::error::JsonPayloadError, max_body_bytes: usize) -> ApiError {
    use actix_web::error::{JsonPayloadError, PayloadError};
    match error {
        JsonPayloadError::Overflow { .. }
        | JsonPayloadError::OverflowKnownLength { .. }
        | JsonPayloadError::Payload(PayloadError::Overflow) => {
            ApiError::PayloadTooLarge(max_body_bytes)
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        other => ApiError::BadRequest(format!("invalid JSON body: {other}")),
    }
}

/// A resource whose unknown methods answer 405 in JSON.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed)
    }))
}

/// `GET /openapi.json`: the OpenAPI 3 document.
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(openapi::document())
}

async fn no_route(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NoRoute(request.path().to_string()))
}
