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

/// Starts one session and waits until its QR is queued (with Redis: written to the outbox); with
/// `in_flight`, until a request carrying it is out at Laravel.
async fn start_with_qr_queued(client: &awc::Client, base: &str, in_flight: bool) -> String {
    let (status, body) = call(
        client,
        Method::POST,
        format!("{base}/start"),
        Some(json!({"user_id": 1})),
    )
    .await
    .expect("start");
    assert_eq!(status, 201);
    wait_until("its QR is queued", PATIENCE, || async {
        let health = get(client, format!("{base}/health")).await;
        let qr = &get(client, format!("{base}/metrics/batch")).await["qr"];
        let queued = if in_flight {
            qr["in_flight"].as_u64() >= Some(1)
        } else {
            qr["pending"].as_u64() >= Some(1)
        };
        queued && matches!(health["outbox"]["unwritten"].as_u64(), None | Some(0))
    })
    .await;
    body["session_id"].as_str().expect("id").to_string()
}

/// `POST /simulate/halt`: the core actor stops, or panics.
async fn halt(client: &awc::Client, base: &str, actor: &str, panic: bool) {
    let (status, _) = call(
        client,
        Method::POST,
        format!("{base}/simulate/halt"),
        Some(json!({"actor": actor, "panic": panic})),
    )
    .await
    .expect("halt");
    assert_eq!(status, 202);
}

#[actix_rt::test]
async fn a_stopped_or_panicked_core_actor_is_replaced_in_the_process_and_nothing_queued_is_lost() {
    // (actor, panic rather than stop, Redis on, a request out at Laravel when it dies). Without
    // Redis nothing can be read back: the batch queue's QR comes back only because the sessions
    // report again; the sink's request, out when it panicked, still ends (it is not the actor's).
    let cases = [
        ("batch", false, true, false),
        ("batch", true, false, false),
        ("sink", true, false, true),
        ("cache", false, true, false),
        ("breaker", true, true, false),
    ];
    for (actor, panic, with_redis, in_flight) in cases {
        let case = format!("{actor} (panic: {panic}, Redis: {with_redis})");
        eprintln!("case: {case}");
        let laravel = Laravel::start().await;
        laravel.set_behaviour(if in_flight {
            Behaviour::Stall(Duration::from_secs(3))
        } else {
            Behaviour::Fail(503)
        });
        let redis = RedisServer::start();
        let data_dir = std::env::temp_dir().join(format!(
            "wasup-replaced-{}-{actor}-{panic}",
            std::process::id()
        ));
        let mut env = FAST.to_vec();
        if !with_redis {
            env.push(("WASUP__REDIS__ENABLED", "false"));
        }
        let client = awc::Client::default();
        let mut running = Running::spawn(free_port(), &laravel.url, &redis.url(), &data_dir, &env);
        let base = running.base.clone();
        wait_until("wasup answers", PATIENCE, || async {
            get(&client, format!("{base}/health")).await["uptimeSeconds"].is_u64()
        })
        .await;
        let queued = start_with_qr_queued(&client, &base, in_flight).await;

        halt(&client, &base, actor, panic).await;
        wait_until(
            &format!("{case}: a fresh actor in its place"),
            PATIENCE,
            || async { get(&client, format!("{base}/health")).await["coreRestarts"][actor] == 1 },
        )
        .await;
        laravel.set_behaviour(Behaviour::Store);
        laravel.wait_qr(&queued).await;
        laravel.wait_status(&queued, "pending").await;
        let (status, body) = call(
            &client,
            Method::POST,
            format!("{base}/start"),
            Some(json!({"user_id": 2})),
        )
        .await
        .expect("start after the restart");
        assert_eq!(status, 201, "{case}");
        laravel
            .wait_qr(body["session_id"].as_str().expect("id"))
            .await;
        assert!(
            running.child.try_wait().expect("wait").is_none(),
            "{case}: the process lives on"
        );
        let mut metrics = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("/metrics");
        let text = String::from_utf8_lossy(&metrics.body().await.expect("body")).into_owned();
        let counted = format!("wasup_core_actor_restarts_total{{actor=\"{actor}\"}} 1");
        assert!(text.contains(&counted), "{case}: {counted} in /metrics");
        drop(running);
        let _ = std::fs::remove_dir_all(&data_dir);
    }
}

#[actix_rt::test]
async fn a_core_actor_past_its_restart_limit_ends_the_process_and_a_restart_delivers_what_was_pending()
 {
    let mut env = FAST.to_vec();
    env.extend([
        ("WASUP__HTTP__PROBE_INTERVAL", "100ms"),
        ("WASUP__HTTP__PROBE_FAILURES", "3"),
        ("WASUP__HTTP__SHUTDOWN_TIMEOUT", "1s"),
        ("WASUP__HTTP__CORE_RESTARTS", "1"),
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
        let session_id = start_with_qr_queued(&client, &base, false).await;

        halt(&client, &base, actor, false).await;
        wait_until(&format!("{actor}: restarted once"), PATIENCE, || async {
            get(&client, format!("{base}/health")).await["coreRestarts"][actor] == 1
        })
        .await;
        halt(&client, &base, actor, true).await;
        let exit = first
            .exit_within(PATIENCE)
            .await
            .unwrap_or_else(|| panic!("{actor}: past the limit, the process must not live on"));
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
