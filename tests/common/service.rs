//! wasup started in-process on port 0 with short durations, plus a small JSON client for it.

use std::{path::PathBuf, time::Duration};

use serde_json::Value;
use slog::{Drain, Logger, o};
use wasup::{Wasup, config::Config, engine::EngineKind};
use wasup_actors::store::RedisConfig;

use super::redis::RedisServer;

/// The API key test services require; [`TestWasup`]'s client sends it.
pub const API_KEY: &str = "test-api-key-at-least-32-characters";

/// A config with every duration short enough for tests, pointing at `laravel_url`. Redis stays
/// at its default URL, which [`TestWasup::start`] replaces with a private server of its own;
/// tests that control Redis themselves set `redis.url`.
pub fn fast_config(laravel_url: &str) -> Config {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".into();
    config.http.workers = 1;
    config.http.shutdown_timeout = Duration::from_secs(5);
    config.http.api_key = API_KEY.into();
    config.http.rate_limit_per_minute = 0;
    config.http.rate_limit_per_key_per_minute = 0;
    config.http.health_cache_ttl = Duration::ZERO;
    config.engine.kind = EngineKind::Simulated;
    config.engine.data_dir = scratch_dir();
    config.engine.simulated.connect_delay = Duration::from_millis(30);
    config.laravel.base_url = laravel_url.to_string();
    config.laravel.token = "test-token".into();
    config.laravel.timeout = Duration::from_secs(2);
    config.laravel.retries = 2;
    config.laravel.backoff_base = Duration::from_millis(20);
    config.laravel.backoff_max = Duration::from_millis(200);
    // Tests make many small requests: a roomy budget (its defaults are tested on their own).
    config.laravel.max_requests_per_second = 100.0;
    config.laravel.max_in_flight = 4;
    config.batch.qr_deadline = Duration::from_millis(200);
    config.batch.status_interval = Duration::from_millis(100);
    config.batch.retry_backoff_max = Duration::from_millis(300);
    config.breaker.threshold = 5;
    config.breaker.reset_timeout = Duration::from_millis(500);
    config.sessions.qr_min_interval = Duration::ZERO;
    config.sessions.pending_sweep_interval = Duration::from_millis(100);
    config.sessions.restart_backoff = Duration::from_millis(50);
    config.sessions.reconnect_base = Duration::from_millis(20);
    config.sessions.reconnect_max = Duration::from_millis(200);
    config.sessions.watchdog_interval = Duration::from_millis(200);
    config.messages.retries = 2;
    config.messages.backoff_base = Duration::from_millis(20);
    config.messages.backoff_max = Duration::from_millis(100);
    config.messages.timeout = Duration::from_secs(2);
    config.redis.timeout = Duration::from_millis(500);
    config.redis.retry_base = Duration::from_millis(20);
    config.redis.retry_max = Duration::from_millis(200);
    config.redis.check_interval = Duration::from_millis(100);
    config
}

fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!(
        "wasup-test-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ))
}

fn test_logger() -> Logger {
    if std::env::var_os("WASUP_TEST_LOG").is_some() {
        let decorator = slog_term::PlainSyncDecorator::new(slog_term::TestStdoutWriter);
        Logger::root(slog_term::FullFormat::new(decorator).build().fuse(), o!())
    } else {
        Logger::root(slog::Discard, o!())
    }
}

/// A running wasup and a client for its API.
pub struct TestWasup {
    /// Its private Redis, when it started one.
    pub redis: Option<RedisServer>,
    /// The service.
    pub wasup: Option<Wasup>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    client: awc::Client,
}

impl TestWasup {
    /// Starts wasup with `config`.
    pub async fn start(mut config: Config) -> TestWasup {
        let redis =
            (config.redis.enabled && config.redis.url == RedisConfig::default().url).then(|| {
                let server = RedisServer::start();
                config.redis.url = server.url();
                server
            });
        let wasup = Wasup::start(config, test_logger())
            .await
            .expect("wasup starts");
        let base = format!("http://{}", wasup.addr);
        TestWasup {
            redis,
            wasup: Some(wasup),
            base,
            client: awc::Client::builder()
                .timeout(Duration::from_secs(10))
                .add_default_header(("X-Api-Key", API_KEY))
                .finish(),
        }
    }

    async fn call(
        &self,
        method: awc::http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let request = self.client.request(method, format!("{}{path}", self.base));
        let sent = match body {
            Some(body) => request.send_json(body).await,
            None => request.send().await,
        };
        let mut response = sent.expect("wasup answers");
        let status = response.status().as_u16();
        let bytes = response.body().await.expect("body");
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(awc::http::Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(awc::http::Method::POST, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(awc::http::Method::DELETE, path, None).await
    }

    /// Sends raw bytes, for malformed-input tests.
    pub async fn send_raw(
        &self,
        method: awc::http::Method,
        path: &str,
        body: &'static str,
    ) -> (u16, Value) {
        let mut response = self
            .client
            .request(method, format!("{}{path}", self.base))
            .insert_header(("content-type", "application/json"))
            .send_body(body)
            .await
            .expect("wasup answers");
        let status = response.status().as_u16();
        let bytes = response.body().await.expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// `POST /start` for `user_id`; returns the session id.
    pub async fn start_session(&self, user_id: u64) -> String {
        let (status, body) = self
            .post("/start", &serde_json::json!({ "user_id": user_id }))
            .await;
        assert_eq!(status, 201, "start answered {body}");
        body["session_id"].as_str().expect("session_id").to_string()
    }

    /// A phone scans the session's QR (simulated engine).
    pub async fn scan(&self, session_id: &str) {
        let (status, body) = self
            .post(
                &format!("/sessions/{session_id}/simulate/scan"),
                &serde_json::json!({}),
            )
            .await;
        assert_eq!(status, 202, "scan answered {body}");
    }

    /// The session's connection closes for `reason` (simulated engine).
    pub async fn disconnect(&self, session_id: &str, reason: &str) {
        let (status, body) = self
            .post(
                &format!("/sessions/{session_id}/simulate/disconnect"),
                &serde_json::json!({ "reason": reason }),
            )
            .await;
        assert_eq!(status, 202, "disconnect answered {body}");
    }

    /// `GET /sessions/{id}` body.
    pub async fn inspect(&self, session_id: &str) -> Value {
        self.get(&format!("/sessions/{session_id}")).await.1
    }

    /// Waits until the session is gone (404).
    pub async fn wait_removed(&self, session_id: &str) {
        let what = format!("session {session_id} removed");
        super::wait_until(&what, super::PATIENCE, || async {
            self.get(&format!("/sessions/{session_id}")).await.0 == 404
        })
        .await;
    }

    /// Waits until the session ended without a logout: its record stays, state `stopped`.
    pub async fn wait_stopped(&self, session_id: &str) {
        let what = format!("session {session_id} stopped");
        super::wait_until(&what, super::PATIENCE, || async {
            self.inspect(session_id).await["state"] == "stopped"
        })
        .await;
    }

    /// `GET /metrics/batch`.
    pub async fn batch_metrics(&self) -> Value {
        self.get("/metrics/batch").await.1
    }

    /// Graceful shutdown, as on SIGTERM.
    pub async fn shutdown(&mut self) -> wasup::ShutdownReport {
        self.wasup.take().expect("running").shutdown().await
    }
}

/// Asserts `received = sent + coalesced + dead_lettered + dropped + expired + pending` for the
/// QR and status lanes.
pub fn assert_lane_accounting(metrics: &Value) {
    for lane in ["qr", "status"] {
        let figures = &metrics[lane];
        let count = |key: &str| {
            figures[key]
                .as_u64()
                .unwrap_or_else(|| panic!("{lane}.{key} in {figures}"))
        };
        assert_eq!(
            count("received"),
            count("sent")
                + count("coalesced")
                + count("dead_lettered")
                + count("dropped")
                + count("expired")
                + count("pending"),
            "lane {lane} accounting: {figures}"
        );
    }
}
