//! The `wasup` binary as an operator runs it: bad config exits non-zero with one line; SIGTERM
//! flushes what is pending to Laravel and exits 0; logs are JSON lines when not on a terminal.

mod common;

use std::{process::Command, time::Duration};

use common::{
    Laravel,
    child::{Running, call, free_port, wasup_command},
    redis::RedisServer,
    wait_until,
};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(15);

#[test]
fn a_bad_config_value_exits_non_zero_with_one_clear_line() {
    let output = wasup_command()
        .env("WASUP__BATCH__QR_DEADLINE", "soonish")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("batch.qr_deadline"), "{stderr}");

    let output = wasup_command()
        .args(["--config", "/nonexistent.toml"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent.toml"));
}

#[test]
fn print_config_shows_the_effective_configuration() {
    let output = wasup_command()
        .arg("--print-config")
        .env("PORT", "4999")
        .env("WASUP__SESSIONS__MAX_ACTIVE", "7")
        .output()
        .expect("runs");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("listen = \"127.0.0.1:4999\""), "{text}");
    assert!(text.contains("max_active = 7"), "{text}");
}

#[actix_rt::test]
async fn sigterm_flushes_pending_batches_and_exits_zero() {
    let laravel = Laravel::start().await;
    let redis = RedisServer::start();
    let port = free_port();
    let data_dir = std::env::temp_dir().join(format!("wasup-process-{}", std::process::id()));
    let mut running = Running::spawn(
        port,
        &laravel.url,
        &redis.url(),
        &data_dir,
        &[
            ("WASUP__BATCH__QR_DEADLINE", "60s"),
            ("WASUP__BATCH__STATUS_INTERVAL", "60s"),
        ],
    );
    let client = awc::Client::default();
    let base = running.base.clone();
    wait_until("wasup answers /health", PATIENCE, || async {
        call(
            &client,
            awc::http::Method::GET,
            format!("{base}/health"),
            None,
        )
        .await
        .is_some_and(|(status, body)| status == 200 && body["status"] == "ok")
    })
    .await;
    let mut sessions = Vec::new();
    for user in 0..3 {
        let (status, body) = call(
            &client,
            awc::http::Method::POST,
            format!("{base}/start"),
            Some(json!({"user_id": user})),
        )
        .await
        .expect("start");
        assert_eq!(status, 201);
        sessions.push(body["session_id"].as_str().expect("id").to_string());
    }
    wait_until("QRs pending in wasup", PATIENCE, || async {
        call(
            &client,
            awc::http::Method::GET,
            format!("{base}/metrics/batch"),
            None,
        )
        .await
        .is_some_and(|(_, body)| body["qr"]["pending"] == 3)
    })
    .await;
    assert!(laravel.requests().is_empty());

    let pid = running.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = running
        .exit_within(PATIENCE)
        .await
        .expect("wasup did not exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status");
    for session_id in &sessions {
        assert!(
            laravel.qr_of(session_id).is_some(),
            "QR of {session_id} flushed on SIGTERM"
        );
        assert_eq!(laravel.status_of(session_id).as_deref(), Some("pending"));
    }
    let mut stdout = String::new();
    use std::io::Read;
    running
        .child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("JSON log line: {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|line| line["msg"] == "Every batch flushed."),
        "{stdout}"
    );
    assert!(
        !stdout.contains("data:image/png"),
        "QR payloads are never logged"
    );
    let _ = std::fs::remove_dir_all(data_dir);
}

#[actix_rt::test]
async fn a_redis_that_may_evict_is_reported_at_start() {
    let laravel = Laravel::start().await;
    let redis = RedisServer::start();
    let answer = redis
        .query("CONFIG SET maxmemory-policy allkeys-lru")
        .unwrap_or_default();
    assert!(answer.starts_with("+OK"), "{answer}");
    let data_dir = std::env::temp_dir().join(format!("wasup-evict-{}", std::process::id()));
    let mut running = Running::spawn(free_port(), &laravel.url, &redis.url(), &data_dir, &[]);
    let client = awc::Client::default();
    let base = running.base.clone();
    wait_until("wasup answers /health", PATIENCE, || async {
        call(
            &client,
            awc::http::Method::GET,
            format!("{base}/health"),
            None,
        )
        .await
        .is_some()
    })
    .await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    let pid = running.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let _ = running.child.wait();
    let mut stdout = String::new();
    use std::io::Read;
    running
        .child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read");
    assert!(
        stdout.lines().any(
            |line| line.contains("Redis is not set up as wasup expects.")
                && line.contains("maxmemory-policy")
        ),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(data_dir);
}
