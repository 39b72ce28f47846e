//! The REST API's edges: API key, rate limit, body limit, Prometheus exposition.

mod common;

use std::time::Duration;

use awc::http::Method;
use common::{Laravel, TestWasup, fast_config, service::API_KEY};
use serde_json::json;

async fn raw(
    base: &str,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<String>,
) -> (u16, awc::http::header::HeaderMap, String) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let mut request = client.request(method, format!("{base}{path}"));
    if let Some(key) = key {
        request = request.insert_header(("X-Api-Key", key));
    }
    let mut response = match body {
        Some(body) => {
            request
                .content_type("application/json")
                .send_body(body)
                .await
        }
        None => request.send().await,
    }
    .expect("answers");
    let bytes = response.body().limit(1 << 22).await.expect("body");
    (
        response.status().as_u16(),
        response.headers().clone(),
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[actix_rt::test]
async fn every_call_but_health_needs_the_api_key() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    for (method, path) in [
        (Method::GET, "/sessions"),
        (Method::POST, "/start"),
        (Method::GET, "/metrics"),
        (Method::GET, "/metrics/batch"),
    ] {
        for key in [None, Some("wrong"), Some("test-api-ke")] {
            let (status, _, body) =
                raw(&wasup.base, method.clone(), path, key, Some("{}".into())).await;
            assert_eq!(status, 401, "{method} {path} with {key:?}: {body}");
            assert!(body.contains("\"code\":\"unauthorized\""), "{body}");
        }
    }
    let (status, _, _) = raw(&wasup.base, Method::GET, "/health", None, None).await;
    assert_eq!(status, 200);
    let (status, _, _) = raw(&wasup.base, Method::GET, "/sessions", Some(API_KEY), None).await;
    assert_eq!(status, 200);
}

#[actix_rt::test]
async fn a_client_over_its_rate_limit_gets_429_with_retry_after() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.http.rate_limit_per_minute = 5;
    let wasup = TestWasup::start(config).await;
    for _ in 0..5 {
        assert_eq!(
            raw(&wasup.base, Method::GET, "/sessions", Some(API_KEY), None)
                .await
                .0,
            200
        );
    }
    let (status, headers, body) =
        raw(&wasup.base, Method::GET, "/sessions", Some(API_KEY), None).await;
    assert_eq!(status, 429, "{body}");
    let retry_after: u64 = headers
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .expect("Retry-After");
    assert!((1..=12).contains(&retry_after), "{retry_after}");
    assert!(body.contains("rate_limited"));
    assert_eq!(
        raw(&wasup.base, Method::GET, "/health", None, None).await.0,
        200,
        "health is exempt"
    );
}

#[actix_rt::test]
async fn an_oversized_body_gets_413() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.http.max_body_bytes = 2048;
    let wasup = TestWasup::start(config).await;
    let big = json!({"user_id": 1, "session_id": "x".repeat(4096)}).to_string();
    let (status, _, body) = raw(
        &wasup.base,
        Method::POST,
        "/start",
        Some(API_KEY),
        Some(big),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"));
}

#[actix_rt::test]
async fn metrics_speak_prometheus() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    let session_id = wasup.start_session(1).await;
    laravel.wait_qr(&session_id).await;
    let (status, headers, text) =
        raw(&wasup.base, Method::GET, "/metrics", Some(API_KEY), None).await;
    assert_eq!(status, 200);
    assert!(
        headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain"))
    );
    for expected in [
        "wasup_sessions{state=\"pending\"} 1",
        "wasup_items_total{lane=\"qr\",outcome=\"sent\"} 1",
        "wasup_laravel_request_duration_seconds_count{lane=\"qr\"} 1",
        "wasup_laravel_requests_total{result=\"stored\"}",
        "wasup_breaker_state 0",
        "wasup_redis_up 1",
        "# TYPE wasup_items_total counter",
    ] {
        assert!(text.contains(expected), "missing {expected} in:\\n{text}");
    }
}
