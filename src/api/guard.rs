//! What every request passes before its handler: the per-IP rate limit (429 with `Retry-After`)
//! and the API key (`X-Api-Key`, compared in constant time; 401). `/health` is exempt from both.
//! The QR page's login cookie ([`super::ui`]) stands in for the key; on a POST or DELETE only when
//! the browser says the request comes from the same origin (else 403 `cross_origin`, against
//! CSRF). `/ui` pages without a credential get the login form (HTML, 401) instead of JSON.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{
    HttpResponse,
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::header,
    middleware::Next,
    web,
};
use subtle::ConstantTimeEq;

use super::{schema::ErrorBody, ui};

/// Paths that need neither a key nor a rate-limit token.
const OPEN_PATHS: [&str; 1] = ["/health"];
/// Most client IPs tracked at once; idle ones are forgotten first.
const MAX_TRACKED_CLIENTS: usize = 100_000;

/// A token bucket per client IP: `per_minute` tokens, refilled continuously.
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` requests per IP (0: unlimited).
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `ip`, or says how long until one is available.
    pub fn take(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() >= MAX_TRACKED_CLIENTS && !buckets.contains_key(&ip) {
            buckets.retain(|_, (_, seen)| now.duration_since(*seen) < Duration::from_secs(60));
        }
        let (tokens, seen) = buckets.entry(ip).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*seen).as_secs_f64() * per_second).min(capacity);
        *seen = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / per_second))
        }
    }
}

/// The guard's settings, shared by every worker.
pub struct Guard {
    /// Required `X-Api-Key`; empty disables the check.
    pub api_key: String,
    /// Per-IP limiter.
    pub limiter: RateLimiter,
}

/// The middleware function (`actix_web::middleware::from_fn`).
pub async fn guard(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if OPEN_PATHS.contains(&request.path()) {
        return Ok(next.call(request).await?.map_into_left_body());
    }
    let Some(guard) = request.app_data::<web::Data<Arc<Guard>>>().cloned() else {
        return Ok(next.call(request).await?.map_into_left_body());
    };
    if let Some(ip) = request.peer_addr().map(|addr| addr.ip())
        && let Err(wait) = guard.limiter.take(ip, Instant::now())
    {
        let seconds = wait.as_secs().max(1);
        let response = HttpResponse::TooManyRequests()
            .insert_header((header::RETRY_AFTER, seconds.to_string()))
            .json(ErrorBody {
                error: format!("rate limit exceeded; retry in {seconds} s"),
                code: "rate_limited".into(),
            });
        return Ok(request.into_response(response).map_into_right_body());
    }
    if !guard.api_key.is_empty()
        && let Some(response) = refusal(&request, &guard.api_key)
    {
        return Ok(request.into_response(response).map_into_right_body());
    }
    Ok(next.call(request).await?.map_into_left_body())
}

/// How a request proves it may use wasup.
enum Credential {
    /// The right `X-Api-Key`.
    ApiKey,
    /// A valid login cookie of the QR page.
    Cookie,
    /// Neither.
    Missing,
}

/// The answer refusing `request` when a key is required, or `None` to let it through.
fn refusal(request: &ServiceRequest, api_key: &str) -> Option<HttpResponse> {
    let http = request.request();
    let given = request
        .headers()
        .get("x-api-key")
        .map(|value| value.as_bytes())
        .unwrap_or_default();
    let credential = if bool::from(given.ct_eq(api_key.as_bytes())) {
        Credential::ApiKey
    } else if ui::cookie_grants(http, api_key) {
        Credential::Cookie
    } else {
        Credential::Missing
    };
    match credential {
        Credential::ApiKey => None,
        Credential::Cookie if request.method().is_safe() || ui::same_origin(http) => None,
        Credential::Cookie => Some(
            HttpResponse::Forbidden().json(ErrorBody {
                error: "a cookie-authenticated POST or DELETE must come from wasup's own pages \
                    (same origin); use X-Api-Key elsewhere"
                    .into(),
                code: "cross_origin".into(),
            }),
        ),
        Credential::Missing if ui::is_public(http) => None,
        Credential::Missing if ui::is_page(request.path()) => Some(ui::login_required(http)),
        Credential::Missing => Some(HttpResponse::Unauthorized().json(ErrorBody {
            error: "missing or wrong X-Api-Key header".into(),
            code: "unauthorized".into(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_refills_over_the_minute() {
        let limiter = RateLimiter::new(2);
        let ip: IpAddr = [127, 0, 0, 1].into();
        let now = Instant::now();
        assert!(limiter.take(ip, now).is_ok());
        assert!(limiter.take(ip, now).is_ok());
        let wait = limiter.take(ip, now).expect_err("empty");
        assert!(
            wait <= Duration::from_secs(30) && wait > Duration::from_secs(29),
            "{wait:?}"
        );
        assert!(limiter.take(ip, now + Duration::from_secs(30)).is_ok());
        assert!(limiter.take([10, 0, 0, 1].into(), now).is_ok(), "per IP");
        assert!(RateLimiter::new(0).take(ip, now).is_ok());
    }
}
