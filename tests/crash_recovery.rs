//! kill -9 of the real wasup binary in the middle of a flush, then a restart on the same Redis:
//! every accepted latest state still reaches Laravel (at-least-once), recovered from the outbox.

mod common;

use std::{collections::HashMap, time::Duration};

use awc::http::Method;
use common::{
    Behaviour, Laravel, PATIENCE,
    child::{Running, call, free_port},
    redis::RedisServer,
    wait_until,
};
use serde_json::{Value, json};

/// Short cadences, and QR texts derived from the session id so a restarted session's first QR
/// is a duplicate (not re-sent): what reaches Laravel after the restart came from the outbox.
const FAST: &[(&str, &str)] = &[
    ("WASUP__BATCH__QR_DEADLINE", "200ms"),
    ("WASUP__BATCH__STATUS_INTERVAL", "100ms"),
    ("WASUP__SESSIONS__QR_MIN_INTERVAL", "0s"),
    ("WASUP__ENGINE__SIMULATED__CONNECT_DELAY", "30ms"),
    ("WASUP__ENGINE__SIMULATED__DETERMINISTIC_QR", "true"),
    ("WASUP__LARAVEL__MIN_REQUEST_GAP", "10ms"),
    ("WASUP__LARAVEL__TIMEOUT", "20s"),
    ("WASUP__REDIS__CHECK_INTERVAL", "100ms"),
];

async fn get(client: &awc::Client, url: String) -> Value {
    call(client, Method::GET, url, None)
        .await
        .map(|(_, body)| body)
        .unwrap_or(Value::Null)
}

#[actix_rt::test]
async fn kill_9_mid_flush_then_restart_delivers_every_accepted_latest_state() {
    for kill_after in [0u64, 250, 700] {
        let laravel = Laravel::start().await;
        laravel.set_behaviour(Behaviour::Stall(Duration::from_secs(5)));
        let redis = RedisServer::start();
        let data_dir =
            std::env::temp_dir().join(format!("wasup-kill9-{}-{kill_after}", std::process::id()));
        let client = awc::Client::default();
        let mut first = Running::spawn(free_port(), &laravel.url, &redis.url(), &data_dir, FAST);
        let base = first.base.clone();
        wait_until("first run healthy", PATIENCE, || async {
            get(&client, format!("{base}/health")).await["status"] == "ok"
        })
        .await;

        let mut sessions = Vec::new();
        for user in 0..8 {
            let (status, body) = call(
                &client,
                Method::POST,
                format!("{base}/start"),
                Some(json!({"user_id": user})),
            )
            .await
            .expect("start");
            assert_eq!(status, 201);
            sessions.push(body["session_id"].as_str().expect("id").to_string());
        }
        let (paired, pending) = sessions.split_at(3);
        for id in paired {
            wait_until("a QR first", PATIENCE, || async {
                get(&client, format!("{base}/sessions/{id}")).await["actor"]["qr_count"] == 1
            })
            .await;
            call(
                &client,
                Method::POST,
                format!("{base}/sessions/{id}/simulate/scan"),
                Some(json!({})),
            )
            .await;
            wait_until("paired", PATIENCE, || async {
                get(&client, format!("{base}/sessions/{id}")).await["state"] == "active"
            })
            .await;
        }
        wait_until(
            "everything accepted is in Redis and a flush is in flight",
            PATIENCE,
            || async {
                let health = get(&client, format!("{base}/health")).await;
                let metrics = get(&client, format!("{base}/metrics/batch")).await;
                health["outbox"]["unwritten"] == 0
                    && metrics["status"]["pending"].as_u64() >= Some(8)
                    && metrics["sink"]["requests"].as_u64() >= Some(1)
            },
        )
        .await;
        let expected_qrs: HashMap<String, Value> = pending
            .iter()
            .map(|id| {
                let cached = redis.get(&format!("session:{id}:qr")).expect("QR cached");
                let cached: Value = serde_json::from_str(&cached).expect("JSON");
                (id.clone(), cached["qr"].clone())
            })
            .collect();
        actix_rt::time::sleep(Duration::from_millis(kill_after)).await;
        first.kill_9();
        assert!(
            laravel.qr_of(&pending[0]).is_none(),
            "nothing was stored before the kill"
        );

        laravel.set_behaviour(Behaviour::Store);
        let second = Running::spawn(free_port(), &laravel.url, &redis.url(), &data_dir, FAST);
        let base = second.base.clone();
        for id in pending {
            laravel.wait_qr(id).await;
            assert_eq!(
                laravel.qr_of(id).expect("qr")["qr"],
                expected_qrs[id],
                "the QR accepted before the kill"
            );
            laravel.wait_status(id, "pending").await;
        }
        for id in paired {
            laravel.wait_status(id, "active").await;
        }
        let metrics = get(&client, format!("{base}/metrics/batch")).await;
        let recovered = metrics["qr"]["recovered"].as_u64().unwrap_or(0)
            + metrics["status"]["recovered"].as_u64().unwrap_or(0);
        assert!(
            recovered >= pending.len() as u64,
            "recovered from the outbox: {metrics}"
        );
        drop(second);
        let _ = std::fs::remove_dir_all(&data_dir);
    }
}

#[actix_rt::test]
async fn a_stopped_core_actor_ends_the_process_and_a_restart_delivers_what_was_pending() {
    let mut env = FAST.to_vec();
    env.extend([
        ("WASUP__HTTP__PROBE_INTERVAL", "100ms"),
        ("WASUP__HTTP__PROBE_FAILURES", "3"),
        ("WASUP__HTTP__SHUTDOWN_TIMEOUT", "1s"),
    ]);
    for actor in ["batch", "sink", "cache", "breaker"] {
        let laravel = Laravel::start().await;
        laravel.set_behaviour(Behaviour::Fail(503));
        let redis = RedisServer::start();
        let data_dir =
            std::env::temp_dir().join(format!("wasup-halt-{}-{actor}", std::process::id()));
        let client = awc::Client::default();
        let mut first = Running::spawn(free_port(), &laravel.url, &redis.url(), &data_dir, &env);
        let base = first.base.clone();
        wait_until("first run healthy", PATIENCE, || async {
            get(&client, format!("{base}/health")).await["status"] == "ok"
        })
        .await;
        let (status, body) = call(
            &client,
            Method::POST,
            format!("{base}/start"),
            Some(json!({"user_id": 1})),
        )
        .await
        .expect("start");
        assert_eq!(status, 201);
        let session_id = body["session_id"].as_str().expect("id").to_string();
        wait_until("its QR waits in the outbox", PATIENCE, || async {
            let health = get(&client, format!("{base}/health")).await;
            let metrics = get(&client, format!("{base}/metrics/batch")).await;
            health["outbox"]["unwritten"] == 0 && metrics["qr"]["pending"].as_u64() >= Some(1)
        })
        .await;

        let (status, _) = call(
            &client,
            Method::POST,
            format!("{base}/simulate/halt"),
            Some(json!({"actor": actor})),
        )
        .await
        .expect("halt");
        assert_eq!(status, 202);
        let started = std::time::Instant::now();
        let exit = loop {
            if let Some(exit) = first.child.try_wait().expect("wait") {
                break exit;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{actor}: the process must not live on without it"
            );
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            exit.code(),
            Some(1),
            "{actor}: a failure, for the supervisor to restart"
        );

        laravel.set_behaviour(Behaviour::Store);
        let second = Running::spawn(free_port(), &laravel.url, &redis.url(), &data_dir, &env);
        let base = second.base.clone();
        laravel.wait_qr(&session_id).await;
        wait_until(
            "what was pending came back from the outbox",
            PATIENCE,
            || async {
                let metrics = get(&client, format!("{base}/metrics/batch")).await;
                metrics["qr"]["recovered"].as_u64().unwrap_or(0)
                    + metrics["status"]["recovered"].as_u64().unwrap_or(0)
                    >= 1
            },
        )
        .await;
        drop(second);
        let _ = std::fs::remove_dir_all(&data_dir);
    }
}
