//! The security edges: rate limits per key and per client network (through trusted proxies),
//! JSON-only bodies, the `Host` check, `/health`'s short cache, redacted `--print-config`, a
//! refused short key, the start-up log without URL credentials, private session stores.

mod common;

use std::{os::unix::fs::PermissionsExt as _, time::Duration};

use awc::http::Method;
use common::{Laravel, PATIENCE, TestWasup, fast_config, service::API_KEY, wait_until};
use serde_json::json;

/// One request: `headers` on top, `body` sent as `content_type` when given.
async fn send(
    base: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> (u16, awc::http::header::HeaderMap, String) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let mut request = client.request(method, format!("{base}{path}"));
    for header in headers {
        request = request.insert_header(*header);
    }
    let mut response = match body {
        Some((content_type, body)) => {
            request
                .content_type(content_type)
                .send_body(body.to_string())
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

fn retry_after(headers: &awc::http::header::HeaderMap) -> u64 {
    headers
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .expect("Retry-After")
}

#[actix_rt::test]
async fn a_backend_with_the_key_bursts_1000_starts_while_keyless_clients_get_100_a_minute() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    let defaults = wasup::config::HttpConfig::default();
    config.http.rate_limit_per_minute = defaults.rate_limit_per_minute;
    config.http.rate_limit_per_key_per_minute = defaults.rate_limit_per_key_per_minute;
    config.http.rate_limit_per_key_burst = defaults.rate_limit_per_key_burst;
    config.sessions.max_active = 2000;
    let wasup = TestWasup::start(config).await;
    let key = [("X-Api-Key", API_KEY)];
    for batch in 0..100_u64 {
        let calls = (0..10_u64).map(|n| {
            let body = json!({"user_id": batch * 10 + n + 1}).to_string();
            let base = wasup.base.clone();
            async move {
                send(
                    &base,
                    Method::POST,
                    "/start",
                    &key,
                    Some(("application/json", &body)),
                )
                .await
            }
        });
        for (status, _, body) in futures_util::future::join_all(calls).await {
            assert_eq!(status, 201, "start in batch {batch}: {body}");
        }
    }
    // Without a key (or with a wrong one) the client's IP has 100 a minute.
    for n in 0..100 {
        let wrong = [("X-Api-Key", "wrong")];
        let headers: &[(&str, &str)] = if n % 2 == 0 { &wrong } else { &[] };
        let (status, _, body) = send(&wasup.base, Method::GET, "/sessions", headers, None).await;
        assert_eq!(status, 401, "keyless call {n}: {body}");
    }
    let (status, headers, body) = send(&wasup.base, Method::GET, "/sessions", &[], None).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("rate_limited"), "{body}");
    assert!((1..=60).contains(&retry_after(&headers)));
    let (status, _, _) = send(&wasup.base, Method::GET, "/sessions", &key, None).await;
    assert_eq!(status, 200, "the key's bucket is its own");
    let (status, _, _) = send(&wasup.base, Method::GET, "/health", &[], None).await;
    assert_eq!(status, 200, "health is exempt");
}

#[actix_rt::test]
async fn the_key_has_its_own_bucket_with_retry_after() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.http.rate_limit_per_key_per_minute = 60;
    config.http.rate_limit_per_key_burst = 3;
    let wasup = TestWasup::start(config).await;
    let key = [("X-Api-Key", API_KEY)];
    for _ in 0..3 {
        assert_eq!(
            send(&wasup.base, Method::GET, "/sessions", &key, None)
                .await
                .0,
            200
        );
    }
    let (status, headers, body) = send(&wasup.base, Method::GET, "/sessions", &key, None).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry_after(&headers), 1, "one token a second");
}

#[actix_rt::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    let laravel = Laravel::start().await;
    for trusted in [true, false] {
        let mut config = fast_config(&laravel.url);
        config.http.rate_limit_per_minute = 2;
        if trusted {
            config.http.trusted_proxies = vec!["127.0.0.0/8".into()];
        }
        let wasup = TestWasup::start(config).await;
        let from = |client: &'static str| [("X-Forwarded-For", client)];
        for _ in 0..2 {
            let (status, _, _) = send(
                &wasup.base,
                Method::GET,
                "/sessions",
                &from("203.0.113.1"),
                None,
            )
            .await;
            assert_eq!(status, 401);
        }
        let (status, _, _) = send(
            &wasup.base,
            Method::GET,
            "/sessions",
            &from("203.0.113.1"),
            None,
        )
        .await;
        assert_eq!(status, 429, "the first client is over its limit");
        let (status, _, _) = send(
            &wasup.base,
            Method::GET,
            "/sessions",
            &from("203.0.113.2"),
            None,
        )
        .await;
        let expected = if trusted { 401 } else { 429 };
        assert_eq!(
            status, expected,
            "another forwarded client (proxy trusted: {trusted})"
        );
    }
}

#[actix_rt::test]
async fn bodies_must_be_json_and_cross_site_writes_are_refused() {
    let laravel = Laravel::start().await;
    for api_key in [API_KEY, ""] {
        let mut config = fast_config(&laravel.url);
        config.http.api_key = api_key.into();
        let wasup = TestWasup::start(config).await;
        let key = [("X-Api-Key", API_KEY)];
        let body = json!({"user_id": 1}).to_string();
        for (path, content_type) in [
            ("/start", "text/plain"),
            ("/start", "application/x-www-form-urlencoded"),
            ("/cleanup-inactive-sessions", "text/plain"),
            ("/sessions/abc/messages", "multipart/form-data; boundary=x"),
        ] {
            let (status, _, answer) = send(
                &wasup.base,
                Method::POST,
                path,
                &key,
                Some((content_type, &body)),
            )
            .await;
            assert_eq!(status, 415, "{path} as {content_type}: {answer}");
            assert!(answer.contains("unsupported_media_type"), "{answer}");
        }
        let (status, _, answer) = send(
            &wasup.base,
            Method::POST,
            "/cleanup-pending-sessions",
            &[("Sec-Fetch-Site", "cross-site")],
            None,
        )
        .await;
        assert_eq!(status, 403, "a cross-site browser write: {answer}");
        let (status, _, answer) = send(
            &wasup.base,
            Method::POST,
            "/start",
            &key,
            Some(("application/json", &body)),
        )
        .await;
        assert_eq!(status, 201, "JSON passes: {answer}");
    }
}

#[actix_rt::test]
async fn a_host_that_is_not_wasup_is_refused() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.http.allowed_hosts = vec!["wasup.example.com".into()];
    let wasup = TestWasup::start(config).await;
    let port = wasup.base.rsplit(':').next().expect("port").to_string();
    let key = ("X-Api-Key", API_KEY);
    for host in [
        "evil.example",
        "rebind.evil.example:PORT",
        "localhost.evil.example",
    ] {
        let host = host.replace("PORT", &port);
        let (status, _, body) = send(
            &wasup.base,
            Method::GET,
            "/sessions",
            &[key, ("Host", host.as_str())],
            None,
        )
        .await;
        assert_eq!(status, 403, "Host {host}: {body}");
        assert!(body.contains("host_not_allowed"), "{body}");
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "wasup.example.com".into(),
    ] {
        let (status, _, body) = send(
            &wasup.base,
            Method::GET,
            "/sessions",
            &[key, ("Host", host.as_str())],
            None,
        )
        .await;
        assert_eq!(status, 200, "Host {host}: {body}");
    }
}

#[actix_rt::test]
async fn health_is_computed_at_most_once_per_cache_period() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.http.health_cache_ttl = Duration::from_secs(1);
    let wasup = TestWasup::start(config).await;
    let first = wasup.get("/health").await.1["timestamp"].clone();
    for _ in 0..5 {
        assert_eq!(
            wasup.get("/health").await.1["timestamp"],
            first,
            "a fresh computation inside the cache period"
        );
    }
    wait_until("a new computation", PATIENCE, || async {
        wasup.get("/health").await.1["timestamp"] != first
    })
    .await;
}

#[test]
fn print_config_redacts_secrets_unless_asked() {
    let secrets = [
        ("WASUP_API_KEY", "an-api-key-of-at-least-32-characters-here"),
        ("LARAVEL_TOKEN", "laravel-token-value"),
        ("LARAVEL_SIGNING_SECRET", "signing-secret-value"),
        ("REDIS_PASSWORD", "redis-password-value"),
        ("LARAVEL_API", "https://user:url-password@laravel.test/api"),
    ];
    let print = |extra: &[&str]| {
        let mut command = common::child::wasup_command();
        command.arg("--print-config").args(extra);
        for (name, value) in secrets {
            command.env(name, value);
        }
        let output = command.output().expect("runs");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).expect("utf-8")
    };
    let redacted = print(&[]);
    for (_, secret) in secrets {
        assert!(!redacted.contains(secret), "{secret} printed:\n{redacted}");
    }
    assert!(!redacted.contains("url-password"), "{redacted}");
    assert!(redacted.contains("api_key = \"<redacted>\""), "{redacted}");
    let shown = print(&["--show-secrets"]);
    for (_, secret) in secrets {
        assert!(shown.contains(secret), "{secret} missing:\n{shown}");
    }
}

#[test]
fn a_short_api_key_is_refused_at_start_naming_the_field() {
    let output = common::child::wasup_command()
        .arg("--print-config")
        .env("WASUP_API_KEY", "too-short")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("http.api_key") && stderr.contains("32"),
        "{stderr}"
    );
    assert!(!stderr.contains("too-short"), "the key is echoed: {stderr}");
}

#[actix_rt::test]
async fn the_start_up_log_shows_no_url_credentials_and_stores_are_private() {
    use std::io::Read as _;
    let laravel = Laravel::start().await;
    let redis = common::redis::RedisServer::start();
    let data = std::env::temp_dir().join(format!("wasup-security-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let port = common::child::free_port();
    let laravel_url = laravel.url.replace("http://", "http://user:url-password@");
    let mut running = common::child::Running::spawn(
        port,
        &laravel_url,
        &redis.url(),
        &data,
        &[("WASUP_API_KEY", API_KEY)],
    );
    let client = awc::Client::builder()
        .add_default_header(("X-Api-Key", API_KEY))
        .finish();
    let base = running.base.clone();
    wait_until("wasup answers", PATIENCE, || async {
        common::child::call(&client, Method::GET, format!("{base}/health"), None)
            .await
            .is_some()
    })
    .await;
    let (status, started) = common::child::call(
        &client,
        Method::POST,
        format!("{base}/start"),
        Some(json!({"user_id": 7})),
    )
    .await
    .expect("start");
    assert_eq!(status, 201, "{started}");
    let id = started["session_id"].as_str().expect("id").to_string();
    let (status, _) = common::child::call(
        &client,
        Method::POST,
        format!("{base}/sessions/{id}/simulate/scan"),
        None,
    )
    .await
    .expect("scan");
    assert_eq!(status, 202);
    let store = data.join("sessions").join(&id);
    wait_until("credentials stored", PATIENCE, || async {
        std::fs::read_dir(&store).is_ok_and(|mut entries| entries.next().is_some())
    })
    .await;
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    for dir in [data.clone(), data.join("sessions"), store.clone()] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    for entry in std::fs::read_dir(&store).expect("store") {
        let path = entry.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    running.kill_9();
    let mut log = String::new();
    if let Some(mut stdout) = running.child.stdout.take() {
        let _ = stdout.read_to_string(&mut log);
    }
    assert!(log.contains("wasup listening"), "{log}");
    assert!(!log.contains("url-password"), "credentials logged:\n{log}");
    let _ = std::fs::remove_dir_all(&data);
}
