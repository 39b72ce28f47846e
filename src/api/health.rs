//! `GET /health` (the truth about the service) and `GET /metrics/batch`.

use actix_web::{HttpResponse, web};
use serde_json::json;
use wasup_actors::{
    batch::GetBatchStats, breaker::GetBreakerSnapshot, cache::GetCacheReport,
    dispatch::GetDispatchStats, messages::unix_millis, registry::GetRegistryStats,
    sink::GetSinkStats,
};

use super::{ApiError, AppState};
use crate::telemetry::Snapshot;

/// `GET /health`: `ok`, `degraded` (breaker not closed, or Redis down) or `shutting_down` (503).
pub async fn health(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (sessions, batch, breaker, messages) = futures_util::try_join!(
        state.registry.send(GetRegistryStats),
        state.batch.send(GetBatchStats),
        state.breaker.send(GetBreakerSnapshot),
        state.dispatcher.send(GetDispatchStats),
    )?;
    let redis = match &state.redis_health {
        None => "disabled",
        Some(health) if health.is_up() => "up",
        Some(_) => "down",
    };
    let status = if !sessions.accepting || batch.draining {
        "shutting_down"
    } else if breaker.state != "CLOSED" || redis == "down" {
        "degraded"
    } else {
        "ok"
    };
    let body = json!({
        "status": status,
        "timestamp": unix_millis(),
        "uptimeSeconds": state.started_at.elapsed().as_secs(),
        "engine": state.config.engine.kind,
        "activeSessions": sessions.active,
        "sessions": sessions,
        "queues": {
            "qr": { "pending": batch.qr.pending, "inFlight": batch.qr.in_flight, "blockedForMs": batch.qr.blocked_for_ms },
            "status": { "pending": batch.status.pending, "inFlight": batch.status.in_flight, "blockedForMs": batch.status.blocked_for_ms },
            "messageQueue": messages,
        },
        "circuitBreaker": breaker,
        "redis": redis,
        "outbox": batch.outbox,
    });
    Ok(if status == "shutting_down" {
        HttpResponse::ServiceUnavailable().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// `GET /metrics/batch`: per-lane counters, batch sizes, last flush times, and the sink's figures.
pub async fn batch_metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (batch, sink) = futures_util::try_join!(
        state.batch.send(GetBatchStats),
        state.sink.send(GetSinkStats)
    )?;
    Ok(HttpResponse::Ok().json(json!({
        "qr": batch.qr,
        "status": batch.status,
        "draining": batch.draining,
        "maxItems": batch.max_items,
        "sink": sink,
    })))
}

/// `GET /metrics/cache`: key counts by kind, tier hits, Redis latency and errors.
pub async fn cache_metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(
        state
            .cache
            .send(GetCacheReport { count_keys: true })
            .await?,
    ))
}

/// `GET /metrics`: Prometheus text format.
pub async fn prometheus_metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (registry, batch, sink, breaker, cache, messages) = futures_util::try_join!(
        state.registry.send(GetRegistryStats),
        state.batch.send(GetBatchStats),
        state.sink.send(GetSinkStats),
        state.breaker.send(GetBreakerSnapshot),
        state.cache.send(GetCacheReport { count_keys: false }),
        state.dispatcher.send(GetDispatchStats),
    )?;
    let text = state.telemetry.render(&Snapshot {
        registry,
        batch,
        sink,
        breaker,
        cache,
        messages,
    });
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
