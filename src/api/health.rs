//! `GET /health` (the truth about the service, reused for `http.health_cache_ttl`) and
//! `GET /metrics/batch`.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use actix_web::{HttpResponse, http::StatusCode, web};
use serde_json::json;
use wasup_actors::{
    batch::GetBatchStats, breaker::GetBreakerSnapshot, cache::GetCacheReport,
    dispatch::GetDispatchStats, messages::unix_millis, registry::GetRegistryStats,
    sink::GetSinkStats,
};

#[allow(unused_imports)]
use super::schema::ErrorBody;
use super::{
    ApiError, AppState,
    schema::{HealthReport, LaneFigures, QueueFigures},
};
use crate::telemetry::Snapshot;

/// The last `/health` answer: status code, JSON body and when it was computed.
#[derive(Default)]
pub struct HealthCache(Mutex<Option<(Instant, StatusCode, String)>>);

impl HealthCache {
    /// The answer computed less than `ttl` before `now`, if any.
    fn fresh(&self, ttl: Duration, now: Instant) -> Option<(StatusCode, String)> {
        let cached = self.0.lock().ok()?;
        let (at, status, body) = cached.as_ref()?;
        (now.saturating_duration_since(*at) < ttl).then(|| (*status, body.clone()))
    }

    /// Remembers an answer computed at `at`.
    fn store(&self, at: Instant, status: StatusCode, body: &str) {
        if let Ok(mut cached) = self.0.lock() {
            *cached = Some((at, status, body.to_string()));
        }
    }
}

#[utoipa::path(get, path = "/health", tag = "health", security(()), responses((status = 200, description = "Healthy or degraded", body = HealthReport), (status = 503, description = "Shutting down", body = HealthReport)))]
/// `GET /health`: `ok`, `degraded` (Laravel unreachable: breaker not closed or the last request
/// failed; or Redis down) or `shutting_down` (503); one computation (five actor round trips)
/// serves every call for `http.health_cache_ttl`.
pub async fn health(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let ttl = state.config.http.health_cache_ttl;
    let (status, body) = match state.health_cache.fresh(ttl, Instant::now()) {
        Some(answer) => answer,
        None => {
            let now = Instant::now();
            let (status, body) = compute_health(&state).await?;
            if !ttl.is_zero() {
                state.health_cache.store(now, status, &body);
            }
            (status, body)
        }
    };
    Ok(HttpResponse::build(status)
        .content_type("application/json")
        .body(body))
}

/// The health report, and 503 when shutting down.
async fn compute_health(state: &AppState) -> Result<(StatusCode, String), ApiError> {
    let (sessions, batch, breaker, messages, sink) = futures_util::try_join!(
        state.registry.send(GetRegistryStats),
        state.batch.send(GetBatchStats),
        state.breaker.send(GetBreakerSnapshot),
        state.dispatcher.send(GetDispatchStats),
        state.sink.send(GetSinkStats),
    )?;
    let laravel = if breaker.state != "CLOSED" || sink.consecutive_failures > 0 {
        "unreachable"
    } else if sink.requests == 0 {
        "untried"
    } else {
        "reachable"
    };
    let redis = match &state.redis_health {
        None => "disabled",
        Some(health) if health.is_up() => "up",
        Some(_) => "down",
    };
    let status = if !sessions.accepting || batch.draining {
        "shutting_down"
    } else if laravel == "unreachable" || redis == "down" {
        "degraded"
    } else {
        "ok"
    };
    let lane = |stats: &wasup_actors::batch::LaneStats| LaneFigures {
        pending: stats.pending,
        in_flight: stats.in_flight,
        blocked_for_ms: stats.blocked_for_ms,
    };
    let body = HealthReport {
        status: status.into(),
        timestamp: unix_millis(),
        uptime_seconds: state.started_at.elapsed().as_secs(),
        engine: format!("{:?}", state.config.engine.kind).to_lowercase(),
        active_sessions: sessions.active,
        queues: QueueFigures {
            qr: lane(&batch.qr),
            status: lane(&batch.status),
            incoming_messages: lane(&batch.message),
            message_queue: messages,
        },
        sessions,
        circuit_breaker: breaker,
        laravel: laravel.into(),
        redis: redis.into(),
        outbox: batch
            .outbox
            .as_ref()
            .and_then(|outbox| serde_json::to_value(outbox).ok()),
        core_restarts: state.core_restarts.figures(),
    };
    let code = if status == "shutting_down" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    Ok((code, serde_json::to_string(&body).unwrap_or_default()))
}

#[utoipa::path(get, path = "/metrics/batch", tag = "metrics", responses((status = 200, description = "Lanes, batches, sink figures", body = Object), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody)))]
/// `GET /metrics/batch`: per-lane counters, batch sizes, last flush times, and the sink's figures.
pub async fn batch_metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (batch, sink) = futures_util::try_join!(
        state.batch.send(GetBatchStats),
        state.sink.send(GetSinkStats)
    )?;
    Ok(HttpResponse::Ok().json(json!({
        "qr": batch.qr,
        "status": batch.status,
        "message": batch.message,
        "draining": batch.draining,
        "maxItems": batch.max_items,
        "backlogItems": batch.backlog_items,
        "budget": batch.budget,
        "deadLetters": batch.dead_letters,
        "outbox": batch.outbox,
        "sink": sink,
    })))
}

#[utoipa::path(get, path = "/metrics/cache", tag = "metrics", responses((status = 200, description = "Cache tiers, key counts, Redis health", body = Object), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody)))]
/// `GET /metrics/cache`: key counts by kind, tier hits, Redis latency and errors.
pub async fn cache_metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(
        state
            .cache
            .send(GetCacheReport { count_keys: true })
            .await?,
    ))
}

/// One round trip to each core actor (registry, batch queue, sink, breaker, cache, outgoing
/// queue): what `/metrics` renders, and the liveness probe (every actor answered).
pub async fn read_snapshot(state: &AppState) -> Result<Snapshot, actix::MailboxError> {
    let (registry, batch, sink, breaker, cache, messages) = futures_util::try_join!(
        state.registry.send(GetRegistryStats),
        state.batch.send(GetBatchStats),
        state.sink.send(GetSinkStats),
        state.breaker.send(GetBreakerSnapshot),
        state.cache.send(GetCacheReport { count_keys: false }),
        state.dispatcher.send(GetDispatchStats),
    )?;
    Ok(Snapshot {
        registry,
        batch,
        sink,
        breaker,
        cache,
        messages,
        core_restarts: state.core_restarts.figures(),
    })
}

#[utoipa::path(get, path = "/metrics", tag = "metrics", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"), (status = 401, description = "Missing or wrong X-Api-Key", body = ErrorBody)))]
/// `GET /metrics`: Prometheus text format.
pub async fn prometheus_metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let text = state.telemetry.scrape(read_snapshot(&state)).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
