//! What every request passes before its handler: the `Host` check (DNS rebinding), the rate
//! limits (per API key, or per client network without a valid key; 429 with `Retry-After`), the
//! browser checks (cross-site writes refused, JSON bodies only: 415) and the API key
//! (`X-Api-Key`, compared as SHA-256 digests in constant time; 401). `/health` is exempt.
//! The QR page's login cookie ([`super::ui`]) stands in for the key; on a POST or DELETE only when
//! the browser says the request comes from the same origin (else 403 `cross_origin`, against
//! CSRF). `/ui` pages without a credential get the login form (HTML, 401) instead of JSON.

use std::{net::IpAddr, time::Instant};

use actix_web::{
    HttpRequest, HttpResponse,
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::header,
    middleware::Next,
    web,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{
    limits::{Cidr, RateLimiter, client_ip, client_network},
    schema::ErrorBody,
    ui,
};
use crate::config::HttpConfig;

/// Paths that need neither a key nor a rate-limit token.
const OPEN_PATHS: [&str; 1] = ["/health"];
/// Most client networks tracked at once; the least recently seen are forgotten first.
const MAX_TRACKED_CLIENTS: usize = 100_000;
/// Forms of the QR page, the only bodies that need not be JSON.
const FORM_PATHS: [&str; 2] = ["/ui/login", "/ui/logout"];

/// The guard's settings and state, shared by every worker.
pub struct Guard {
    /// Required `X-Api-Key`; empty disables the check.
    pub api_key: String,
    /// SHA-256 of `api_key`: what a given key's digest is compared with (no length leak).
    key_digest: [u8; 32],
    /// The bucket of requests carrying the valid key (or a login cookie).
    key_limiter: RateLimiter<u8>,
    /// Buckets of requests without a valid key, per client network.
    ip_limiter: RateLimiter<IpAddr>,
    /// Peers whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Host names besides IP literals and `localhost` that requests may name.
    allowed_hosts: Vec<String>,
    /// Login cookies signed out before their expiry.
    pub logins: ui::Revoked,
}

impl Guard {
    /// The guard for `http` (validated: proxies parse).
    pub fn new(http: &HttpConfig) -> Self {
        Self {
            api_key: http.api_key.clone(),
            key_digest: Sha256::digest(http.api_key.as_bytes()).into(),
            key_limiter: RateLimiter::new(
                http.rate_limit_per_key_per_minute,
                http.rate_limit_per_key_burst,
                1,
            ),
            ip_limiter: RateLimiter::new(
                http.rate_limit_per_minute,
                http.rate_limit_per_minute,
                MAX_TRACKED_CLIENTS,
            ),
            trusted_proxies: http
                .trusted_proxies
                .iter()
                .filter_map(|text| Cidr::parse(text))
                .collect(),
            allowed_hosts: http
                .allowed_hosts
                .iter()
                .map(|host| host.to_ascii_lowercase())
                .collect(),
            logins: ui::Revoked::default(),
        }
    }

    /// Whether `given` is the API key: digests compared in constant time.
    pub fn key_matches(&self, given: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(given).into();
        bool::from(digest.ct_eq(&self.key_digest))
    }

    /// Whether the request came from a trusted proxy.
    pub fn from_trusted_proxy(&self, request: &HttpRequest) -> bool {
        request.peer_addr().is_some_and(|peer| {
            self.trusted_proxies
                .iter()
                .any(|cidr| cidr.contains(peer.ip()))
        })
    }

    /// Whether a `Host` header value may be served: IP literals (not rebindable), `localhost`,
    /// and `http.allowed_hosts` (`*` allows any).
    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let name = match host.strip_prefix('[') {
            Some(rest) => rest.split_once(']').map_or(rest, |(inside, _)| inside),
            None => host.rsplit_once(':').map_or(host.as_str(), |(name, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    name
                } else {
                    host.as_str()
                }
            }),
        };
        let name = name.trim_end_matches('.');
        name.parse::<IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self
                .allowed_hosts
                .iter()
                .any(|allowed| allowed == "*" || allowed == name || allowed == &host)
    }
}

/// The middleware function (`actix_web::middleware::from_fn`).
pub async fn guard(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if OPEN_PATHS.contains(&request.path()) {
        return Ok(next.call(request).await?.map_into_left_body());
    }
    let Some(guard) = request
        .app_data::<web::Data<std::sync::Arc<Guard>>>()
        .cloned()
    else {
        return Ok(next.call(request).await?.map_into_left_body());
    };
    if let Some(response) = screen(&request, &guard) {
        return Ok(request.into_response(response).map_into_right_body());
    }
    Ok(next.call(request).await?.map_into_left_body())
}

/// How a request proves it may use wasup.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Credential {
    /// The right `X-Api-Key`.
    ApiKey,
    /// A valid login cookie of the QR page.
    Cookie,
    /// Neither.
    Missing,
}

/// The answer refusing `request`, or `None` to let it through.
fn screen(request: &ServiceRequest, guard: &Guard) -> Option<HttpResponse> {
    let http = request.request();
    if let Some(host) = request.headers().get(header::HOST)
        && !host.to_str().is_ok_and(|host| guard.host_allowed(host))
    {
        return Some(error(
            HttpResponse::Forbidden(),
            "the Host header names no address of wasup; add it to http.allowed_hosts",
            "host_not_allowed",
        ));
    }
    let credential = credential(request, guard);
    // With no key configured (loopback only) every caller is as good as a key holder.
    let keyed = credential != Credential::Missing || guard.api_key.is_empty();
    let limited = match (keyed, request.peer_addr()) {
        (true, _) => guard.key_limiter.take(0, Instant::now()),
        (false, Some(peer)) => {
            let forwarded = request
                .headers()
                .get("x-forwarded-for")
                .and_then(|value| value.to_str().ok());
            let ip = client_ip(peer.ip(), forwarded, &guard.trusted_proxies);
            guard.ip_limiter.take(client_network(ip), Instant::now())
        }
        (false, None) => Ok(()),
    };
    if let Err(wait) = limited {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut response = HttpResponse::TooManyRequests();
        response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        return Some(error(
            response,
            &format!("rate limit exceeded; retry in {seconds} s"),
            "rate_limited",
        ));
    }
    let writes = !request.method().is_safe();
    if writes && credential != Credential::ApiKey && cross_site(http) {
        return Some(error(
            HttpResponse::Forbidden(),
            "a browser request from another site may not change wasup; use X-Api-Key",
            "cross_origin",
        ));
    }
    if writes && !FORM_PATHS.contains(&request.path()) && !json_or_empty(http) {
        return Some(error(
            HttpResponse::UnsupportedMediaType(),
            "request bodies must be JSON (Content-Type: application/json)",
            "unsupported_media_type",
        ));
    }
    if guard.api_key.is_empty() {
        return None;
    }
    match credential {
        Credential::ApiKey => None,
        Credential::Cookie if request.method().is_safe() || ui::same_origin(http) => None,
        Credential::Cookie => Some(error(
            HttpResponse::Forbidden(),
            "a cookie-authenticated POST or DELETE must come from wasup's own pages \
                (same origin); use X-Api-Key elsewhere",
            "cross_origin",
        )),
        Credential::Missing if ui::is_public(http) => None,
        Credential::Missing if ui::is_page(request.path()) => Some(ui::login_required(http)),
        Credential::Missing => Some(error(
            HttpResponse::Unauthorized(),
            "missing or wrong X-Api-Key header",
            "unauthorized",
        )),
    }
}

/// The request's credential (none when no key is configured).
fn credential(request: &ServiceRequest, guard: &Guard) -> Credential {
    if guard.api_key.is_empty() {
        return Credential::Missing;
    }
    if let Some(given) = request.headers().get("x-api-key")
        && guard.key_matches(given.as_bytes())
    {
        return Credential::ApiKey;
    }
    if ui::cookie_grants(request.request(), &guard.api_key, &guard.logins) {
        return Credential::Cookie;
    }
    Credential::Missing
}

/// Whether a browser says the request comes from another site (`Sec-Fetch-Site`).
fn cross_site(request: &HttpRequest) -> bool {
    request
        .headers()
        .get("sec-fetch-site")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|site| matches!(site, "cross-site" | "same-site"))
}

/// Whether the request's body is absent or declared JSON (`application/json`, `...+json`).
fn json_or_empty(request: &HttpRequest) -> bool {
    let headers = request.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    let Some(content_type) = content_type else {
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok());
        return !headers.contains_key(header::TRANSFER_ENCODING)
            && length.is_none_or(|length| length.trim() == "0");
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A JSON error answer.
fn error(mut response: actix_web::HttpResponseBuilder, message: &str, code: &str) -> HttpResponse {
    response.json(ErrorBody {
        error: message.into(),
        code: code.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(allowed: &[&str]) -> Guard {
        Guard::new(&HttpConfig {
            api_key: "k".repeat(32),
            allowed_hosts: allowed.iter().map(|host| (*host).to_string()).collect(),
            ..HttpConfig::default()
        })
    }

    #[test]
    fn hosts_are_ip_literals_localhost_or_allowed() {
        let open = guard(&[]);
        for host in [
            "127.0.0.1:4000",
            "127.0.0.1",
            "[::1]:4000",
            "localhost:4000",
            "LOCALHOST",
            "10.1.2.3:80",
        ] {
            assert!(open.host_allowed(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:4000",
            "127.0.0.1.evil.example",
            "",
        ] {
            assert!(!open.host_allowed(host), "{host}");
        }
        let named = guard(&["wasup.example.com"]);
        assert!(named.host_allowed("wasup.example.com"));
        assert!(named.host_allowed("wasup.example.com:443"));
        assert!(!named.host_allowed("other.example.com"));
        assert!(guard(&["*"]).host_allowed("anything.example"));
    }

    #[test]
    fn keys_compare_by_digest() {
        let guard = guard(&[]);
        assert!(guard.key_matches("k".repeat(32).as_bytes()));
        assert!(!guard.key_matches(b"k"));
        assert!(!guard.key_matches("k".repeat(33).as_bytes()));
    }

    #[test]
    fn only_json_bodies_pass() {
        let request = |headers: &[(&str, &str)]| {
            let mut request = actix_web::test::TestRequest::post();
            for header in headers {
                request = request.insert_header(*header);
            }
            request.to_http_request()
        };
        assert!(json_or_empty(&request(&[])));
        assert!(json_or_empty(&request(&[("content-length", "0")])));
        assert!(json_or_empty(&request(&[(
            "content-type",
            "application/json; charset=utf-8"
        )])));
        assert!(json_or_empty(&request(&[(
            "content-type",
            "application/merge-patch+json"
        )])));
        assert!(!json_or_empty(&request(&[("content-type", "text/plain")])));
        assert!(!json_or_empty(&request(&[(
            "content-type",
            "application/x-www-form-urlencoded"
        )])));
        assert!(!json_or_empty(&request(&[("content-length", "12")])));
        assert!(!json_or_empty(&request(&[(
            "transfer-encoding",
            "chunked"
        )])));
    }
}
