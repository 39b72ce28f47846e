//! The real WhatsApp engine (whatsapp-rust) where WhatsApp cannot be reached: the session shows
//! `error` with the reason and the next attempt, keeps retrying, and nothing panics; its store
//! lives in `data_dir/sessions/{id}/` and goes with the session; restore honours credentials.
//! (No test reaches WhatsApp's servers: the endpoint is a closed port on loopback.)

mod common;

use std::{path::Path, time::Duration};

use common::{Laravel, TestWasup, child::free_port, fast_config, redis::RedisServer, wait_until};
use serde_json::Value;
use wasup::{config::Config, engine::EngineKind};

/// Long enough for a few of the library's retries (1 s, 1 s, 2 s, ...).
const RETRY_PATIENCE: Duration = Duration::from_secs(20);

/// A config running the real engine against a loopback port nobody listens on.
fn offline_config(laravel_url: &str) -> Config {
    let mut config = fast_config(laravel_url);
    config.engine.kind = EngineKind::Whatsapp;
    config.engine.whatsapp.url = format!("ws://127.0.0.1:{}/ws/chat", free_port());
    config.engine.whatsapp.connect_timeout = Duration::from_secs(2);
    config.engine.whatsapp.worker_threads = 2;
    config
}

fn store_dir(config: &Config, session_id: &str) -> std::path::PathBuf {
    config.engine.sessions_dir().join(session_id)
}

async fn wait_for_state(wasup: &TestWasup, session_id: &str, state: &str) -> Value {
    let what = format!("session {session_id} in state {state}");
    wait_until(&what, RETRY_PATIENCE, || async {
        wasup.inspect(session_id).await["state"] == state
    })
    .await;
    wasup.inspect(session_id).await
}

#[actix_rt::test]
async fn unreachable_whatsapp_shows_error_with_the_reason_and_keeps_retrying() {
    let laravel = Laravel::start().await;
    let config = offline_config(&laravel.url);
    let wasup = TestWasup::start(config.clone()).await;
    let session_id = wasup.start_session(7).await;

    let inspection = wait_for_state(&wasup, &session_id, "error").await;
    assert_eq!(inspection["engine"], "whatsapp");
    let actor = &inspection["actor"];
    let reason = actor["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(reason.contains("refused"), "reason: {reason}");
    assert!(
        actor["next_retry_in_ms"]
            .as_u64()
            .is_some_and(|ms| ms <= 21_000),
        "{actor}"
    );
    assert_eq!(actor["qr_count"], 0);
    assert!(
        store_dir(&config, &session_id).join("whatsapp.db").exists(),
        "the per-session store is created under data_dir/sessions/{{id}}/"
    );

    wait_until("three failed attempts", RETRY_PATIENCE, || async {
        wasup.inspect(&session_id).await["actor"]["reconnect_attempts"].as_u64() >= Some(3)
    })
    .await;
    let (status, health) = wasup.get("/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(wasup.inspect(&session_id).await["responsive"], true);
    assert_eq!(wasup.inspect(&session_id).await["restarts"], 0);
}

#[actix_rt::test]
async fn deleting_a_real_session_logs_out_and_removes_its_store() {
    let laravel = Laravel::start().await;
    let config = offline_config(&laravel.url);
    let wasup = TestWasup::start(config.clone()).await;
    let session_id = wasup.start_session(8).await;
    wait_for_state(&wasup, &session_id, "error").await;
    let store = store_dir(&config, &session_id);
    assert!(store.join("whatsapp.db").exists());

    let (status, body) = wasup.delete(&format!("/sessions/{session_id}")).await;
    assert_eq!(status, 200, "{body}");
    wasup.wait_removed(&session_id).await;
    wait_until("the store is deleted", RETRY_PATIENCE, || async {
        !store.exists()
    })
    .await;
    laravel.wait_status(&session_id, "inactive").await;
}

/// Runs a session on the simulated engine until it is paired, then stops: Redis remembers a
/// session that was connected, and its store directory exists.
async fn a_paired_session(laravel: &Laravel, config: &Config) -> String {
    let mut simulated = config.clone();
    simulated.engine.kind = EngineKind::Simulated;
    let mut first_run = TestWasup::start(simulated).await;
    let session_id = first_run.start_session(9).await;
    laravel.wait_qr(&session_id).await;
    first_run.scan(&session_id).await;
    laravel.wait_status(&session_id, "active").await;
    assert!(first_run.shutdown().await.flushed);
    session_id
}

fn mark_paired(store: &Path) {
    std::fs::create_dir_all(store).expect("store dir");
    std::fs::write(store.join("paired"), "34600000009@s.whatsapp.net").expect("marker");
}

#[actix_rt::test]
async fn a_restored_session_with_credentials_reconnects_without_a_new_qr() {
    let laravel = Laravel::start().await;
    let redis = RedisServer::start();
    let mut config = offline_config(&laravel.url);
    config.redis.url = redis.url();
    let session_id = a_paired_session(&laravel, &config).await;
    mark_paired(&store_dir(&config, &session_id));

    let second_run = TestWasup::start(config.clone()).await;
    let inspection = wait_for_state(&second_run, &session_id, "error").await;
    assert_eq!(inspection["engine"], "whatsapp");
    assert_eq!(inspection["actor"]["qr_count"], 0);
    assert!(store_dir(&config, &session_id).join("paired").exists());
}

#[actix_rt::test]
async fn a_restored_session_whose_credentials_are_gone_does_not_pair_again() {
    let laravel = Laravel::start().await;
    let redis = RedisServer::start();
    let mut config = offline_config(&laravel.url);
    config.redis.url = redis.url();
    let session_id = a_paired_session(&laravel, &config).await;

    let second_run = TestWasup::start(config).await;
    laravel.wait_status(&session_id, "inactive").await;
    second_run.wait_removed(&session_id).await;
}
