//! Black-box tests of the Redis layer: nothing accepted is lost across Laravel outages, Redis
//! restarts and wasup restarts; sessions are restored; QR dedupe survives a restart; and
//! `is_session_active` asks memory, then Redis, then Laravel, failing safe.

mod common;

use std::time::Duration;

use common::{
    Behaviour, Laravel, PATIENCE, TestWasup, fast_config,
    redis::RedisServer,
    service::{API_KEY, assert_lane_accounting},
    wait_until,
};
use serde_json::{Value, json};

#[actix_rt::test]
async fn a_laravel_outage_ends_with_every_latest_state_delivered_in_few_requests() {
    let laravel = Laravel::start().await;
    laravel.set_behaviour(Behaviour::Fail(503));
    let mut config = fast_config(&laravel.url);
    config.breaker.threshold = 3;
    config.breaker.reset_timeout = Duration::from_millis(300);
    config.laravel.retries = 0;
    let wasup = TestWasup::start(config).await;
    let mut sessions = Vec::new();
    for user in 0..30 {
        sessions.push(wasup.start_session(user).await);
    }
    for id in &sessions[..10] {
        wasup.scan(id).await;
    }
    for id in &sessions[..10] {
        wait_until("connected", PATIENCE, || async {
            wasup.inspect(id).await["state"] == "active"
        })
        .await;
    }
    for id in &sessions[..5] {
        wasup.disconnect(id, "logged_out").await;
    }
    wait_until("the breaker is open", PATIENCE, || async {
        wasup.get("/health").await.1["circuitBreaker"]["state"] == "OPEN"
    })
    .await;
    let before = laravel.requests().len();
    actix_rt::time::sleep(Duration::from_secs(1)).await;
    let during = laravel.requests().len() - before;
    assert!(
        during <= 6,
        "only half-open probes while Laravel is down: {during}"
    );
    let metrics = wasup.batch_metrics().await;
    assert!(
        metrics["qr"]["pending"].as_u64() <= Some(30),
        "bounded by sessions: {metrics}"
    );
    assert!(
        metrics["status"]["pending"].as_u64() <= Some(30),
        "bounded by sessions: {metrics}"
    );

    laravel.set_behaviour(Behaviour::Store);
    let recovery_started = laravel.requests().len();
    for id in &sessions[..5] {
        laravel.wait_status(id, "inactive").await;
    }
    for id in &sessions[5..10] {
        laravel.wait_status(id, "active").await;
    }
    for id in &sessions[10..] {
        laravel.wait_status(id, "pending").await;
        laravel.wait_qr(id).await;
    }
    let recovery_requests = laravel.requests().len() - recovery_started;
    assert!(
        recovery_requests <= 8,
        "the backlog drains in batches: {recovery_requests} requests"
    );
    wait_until("the Redis outbox empties", PATIENCE, || async {
        let keys = &wasup.get("/metrics/cache").await.1["keys"];
        keys["outbox_qr"] == 0 && keys["outbox_status"] == 0
    })
    .await;
    assert_lane_accounting(&wasup.batch_metrics().await);
}

#[actix_rt::test]
async fn redis_going_away_degrades_health_loses_nothing_and_recovers() {
    let laravel = Laravel::start().await;
    let mut redis = RedisServer::start();
    let mut config = fast_config(&laravel.url);
    config.redis.url = redis.url();
    let wasup = TestWasup::start(config).await;
    wait_until("healthy", PATIENCE, || async {
        wasup.get("/health").await.1["status"] == "ok"
    })
    .await;
    let first = wasup.start_session(1).await;
    laravel.wait_qr(&first).await;

    redis.kill();
    wait_until("health says Redis is down", PATIENCE, || async {
        let health = wasup.get("/health").await.1;
        health["status"] == "degraded" && health["redis"] == "down"
    })
    .await;
    let during_outage = wasup.start_session(2).await;
    assert_eq!(wasup.get("/sessions").await.0, 200);
    assert_eq!(wasup.inspect(&during_outage).await["responsive"], true);
    laravel.wait_qr(&during_outage).await;
    wasup.scan(&during_outage).await;
    laravel.wait_status(&during_outage, "active").await;

    redis.restart();
    wait_until("health is ok again", PATIENCE, || async {
        let health = wasup.get("/health").await.1;
        health["status"] == "ok" && health["redis"] == "up"
    })
    .await;
    wait_until("the journal caught up", PATIENCE, || async {
        wasup.get("/health").await.1["outbox"]["unwritten"] == 0
    })
    .await;
    wait_until(
        "both sessions recorded once Redis is back",
        PATIENCE,
        || async {
            redis
                .query("HLEN wasup:sessions")
                .is_some_and(|answer| answer.starts_with(":2"))
        },
    )
    .await;
    assert_eq!(laravel.status_of(&first).as_deref(), Some("pending"));
}

#[actix_rt::test]
async fn sessions_are_restored_after_a_restart_and_paired_ones_need_no_new_qr() {
    let laravel = Laravel::start().await;
    let redis = RedisServer::start();
    let mut config = fast_config(&laravel.url);
    config.redis.url = redis.url();
    let mut first_run = TestWasup::start(config.clone()).await;
    let pending = first_run.start_session(1).await;
    let paired = first_run.start_session(2).await;
    laravel.wait_qr(&paired).await;
    first_run.scan(&paired).await;
    laravel.wait_status(&paired, "active").await;
    assert!(first_run.shutdown().await.flushed);
    let qr_requests = laravel.requests_to("/qr/batch").len();

    let second_run = TestWasup::start(config).await;
    wait_until("both sessions restored", PATIENCE, || async {
        second_run.get("/sessions").await.1["sessions"]
            .as_array()
            .map(Vec::len)
            == Some(2)
    })
    .await;
    wait_until("the paired session reconnects", PATIENCE, || async {
        second_run.inspect(&paired).await["state"] == "active"
    })
    .await;
    assert_eq!(second_run.inspect(&paired).await["actor"]["qr_count"], 0);
    wait_until("the pending session shows a QR again", PATIENCE, || async {
        second_run.inspect(&pending).await["actor"]["qr_count"].as_u64() >= Some(1)
    })
    .await;
    wait_until("its new QR reaches Laravel", PATIENCE, || async {
        laravel.requests_to("/qr/batch").len() > qr_requests
    })
    .await;
    assert_eq!(laravel.status_of(&paired).as_deref(), Some("active"));
}

#[actix_rt::test]
async fn the_same_qr_is_not_sent_again_after_a_restart() {
    let laravel = Laravel::start().await;
    let redis = RedisServer::start();
    let mut config = fast_config(&laravel.url);
    config.redis.url = redis.url();
    config.engine.simulated.deterministic_qr = true;
    let mut first_run = TestWasup::start(config.clone()).await;
    let session_id = first_run.start_session(1).await;
    laravel.wait_qr(&session_id).await;
    let cache = first_run.get("/metrics/cache").await.1;
    assert_eq!(
        cache["qr_digest_misses"], 0,
        "an id wasup made has no last QR to read: {cache}"
    );
    let (status, body) = first_run
        .post(
            "/start",
            &json!({"user_id": 2, "session_id": "given-by-laravel"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    laravel.wait_qr("given-by-laravel").await;
    let cache = first_run.get("/metrics/cache").await.1;
    assert_eq!(
        cache["qr_digest_misses"], 1,
        "an id given by the caller may have a QR from before: {cache}"
    );
    first_run.shutdown().await;
    let sent_before = laravel.requests_to("/qr/batch").len();

    let second_run = TestWasup::start(config).await;
    wait_until(
        "the restored session saw its first QR again",
        PATIENCE,
        || async { second_run.inspect(&session_id).await["actor"]["qr_duplicates"] == 1 },
    )
    .await;
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        laravel.requests_to("/qr/batch").len(),
        sent_before,
        "not sent twice"
    );
    let cache = second_run.get("/metrics/cache").await.1;
    assert!(cache["qr_digest_hits"].as_u64() >= Some(1), "{cache}");
}

#[actix_rt::test]
async fn is_session_active_asks_memory_then_redis_then_laravel_and_fails_safe() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.cache.local_ttl = Duration::from_millis(100);
    config.cache.status_ttl = Duration::from_millis(1500);
    // "active" must reach Laravel well within local_ttl of being cached (urgent statuses linger
    // up to half of priority_delay for company).
    config.batch.priority_delay = Duration::from_millis(40);
    let wasup = TestWasup::start(config).await;
    let session_id = wasup.start_session(1).await;
    wasup.scan(&session_id).await;
    laravel.wait_status(&session_id, "active").await;
    let reconnected = |expected: u64| {
        let wasup = &wasup;
        let session_id = session_id.clone();
        async move {
            wait_until("reconnected", PATIENCE, || async {
                let inspection = wasup.inspect(&session_id).await;
                inspection["state"] == "active" && inspection["actor"]["reconnects"] == expected
            })
            .await;
        }
    };
    let cache = || async { wasup.get("/metrics/cache").await.1 };

    // Tier 1: the status was just cached in memory.
    wasup.disconnect(&session_id, "connection_lost").await;
    reconnected(1).await;
    let metrics = cache().await;
    assert!(metrics["local_hits"].as_u64() >= Some(1), "{metrics}");

    // Tier 2: memory expired, Redis still holds `session:{id}:status`.
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    wasup.disconnect(&session_id, "connection_lost").await;
    reconnected(2).await;
    assert!(cache().await["redis_hits"].as_u64() >= Some(1));
    assert_eq!(
        laravel.lookups_of(&session_id),
        0,
        "no Laravel call while a tier knows"
    );

    // Tier 3: both expired; Laravel says active.
    actix_rt::time::sleep(Duration::from_millis(1600)).await;
    wasup.disconnect(&session_id, "connection_lost").await;
    reconnected(3).await;
    assert_eq!(laravel.lookups_of(&session_id), 1);
    let figures = cache().await;
    assert!(figures["laravel_hits"].as_u64() >= Some(1), "{figures}");
    assert!(figures["local_misses"].as_u64() >= Some(2), "{figures}");
    assert!(figures["redis_misses"].as_u64() >= Some(1), "{figures}");
    assert!(
        figures["redis"]["last_latency_us"].as_u64() > Some(0),
        "{figures}"
    );
    assert!(figures["keys"]["status"].as_u64() >= Some(1), "{figures}");

    // Fail-safe: Laravel errors, the session reconnects anyway.
    laravel.fail_lookups(Some(500));
    actix_rt::time::sleep(Duration::from_millis(1600)).await;
    wasup.disconnect(&session_id, "connection_lost").await;
    reconnected(4).await;
    assert!(cache().await["fail_safe"].as_u64() >= Some(1));

    // Laravel no longer wants the session: it is finished as inactive.
    laravel.fail_lookups(None);
    laravel.set_account_status(&session_id, "inactive");
    actix_rt::time::sleep(Duration::from_millis(1600)).await;
    wasup.disconnect(&session_id, "connection_lost").await;
    laravel.wait_status(&session_id, "inactive").await;
    wasup.wait_stopped(&session_id).await;
}

#[actix_rt::test]
async fn dead_letters_are_kept_in_redis_across_a_restart_and_replayed_from_there() {
    let laravel = Laravel::start().await;
    let redis = RedisServer::start();
    let mut config = fast_config(&laravel.url);
    config.redis.url = redis.url();
    let mut first_run = TestWasup::start(config.clone()).await;
    let session_id = first_run.start_session(1).await;
    laravel.wait_qr(&session_id).await;
    first_run.scan(&session_id).await;
    laravel.wait_status(&session_id, "active").await;
    laravel.set_behaviour(Behaviour::RefuseBatchesHolding(
        ["veneno".to_string()].into(),
    ));
    let (status, _) = first_run
        .post(
            &format!("/sessions/{session_id}/simulate/message"),
            &serde_json::json!({"from": "34600000001", "text": "veneno"}),
        )
        .await;
    assert_eq!(status, 202);
    wait_until("the message is dead-lettered", PATIENCE, || async {
        first_run.get("/dead-letters").await.1["total"] == 1
    })
    .await;
    assert!(first_run.shutdown().await.flushed);
    assert!(
        redis
            .query("HLEN wasup:dead_letters")
            .is_some_and(|answer| answer.starts_with(":1\r")),
        "kept in Redis"
    );
    assert!(
        redis
            .query("HLEN wasup:outbox:message")
            .is_some_and(|answer| answer.starts_with(":0\r")),
        "and no longer in the outbox"
    );

    laravel.set_behaviour(Behaviour::Store);
    let second_run = TestWasup::start(config).await;
    wait_until("the dead letter is loaded", PATIENCE, || async {
        second_run.get("/dead-letters").await.1["total"] == 1
    })
    .await;
    let (status, answer) = second_run
        .post("/dead-letters/replay", &serde_json::json!({}))
        .await;
    assert_eq!((status, answer), (200, serde_json::json!({"replayed": 1})));
    wait_until("Laravel stores it", PATIENCE, || async {
        laravel
            .messages_of(&session_id)
            .iter()
            .any(|message| message["text"] == "veneno")
    })
    .await;
    wait_until("and it leaves Redis", PATIENCE, || async {
        redis
            .query("HLEN wasup:dead_letters")
            .is_some_and(|answer| answer.starts_with(":0\r"))
    })
    .await;
}

#[actix_rt::test]
async fn a_newer_status_laravel_accepts_supersedes_a_dead_lettered_one_even_after_a_restart() {
    let laravel = Laravel::start().await;
    laravel.set_behaviour(Behaviour::Fail(404));
    let redis = RedisServer::start();
    let mut config = fast_config(&laravel.url);
    config.redis.url = redis.url();
    let mut first_run = TestWasup::start(config.clone()).await;
    let session_id = first_run.start_session(1).await;
    wait_until("its QR and status are dead-lettered", PATIENCE, || async {
        let listed = first_run.get("/dead-letters").await.1;
        listed["total"] == 2
            && listed["items"].as_array().is_some_and(|items| {
                items
                    .iter()
                    .all(|item| item["reason"] == "HTTP 404: stand-in failure")
            })
    })
    .await;
    assert!(first_run.shutdown().await.flushed);

    laravel.set_behaviour(Behaviour::Store);
    let second_run = TestWasup::start(config).await;
    laravel.wait_qr(&session_id).await;
    wait_until(
        "the restored session's newer items supersede them",
        PATIENCE,
        || async {
            let listed = second_run.get("/dead-letters").await.1;
            listed["total"] == 0 && listed["superseded"].as_u64() >= Some(1)
        },
    )
    .await;
}

#[actix_rt::test]
async fn restore_checks_records_like_api_input_and_skips_bad_ones() {
    let laravel = Laravel::start().await;
    let redis = RedisServer::start();
    let mut config = fast_config(&laravel.url);
    config.redis.url = redis.url();
    let outside = config.engine.data_dir.join("x");
    std::fs::create_dir_all(&outside).expect("a directory beside the stores");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis());
    let record = |user_id: &str| {
        format!(
            r#"'1|{{"user_id":{user_id},"state":"pending","created_at":{now_ms},"ever_connected":false}}'"#
        )
    };
    for (session_id, user_id) in [
        ("../x", "1"),
        ("huge", "18446744073709551615"),
        ("good", "2"),
    ] {
        let answer = redis.query(&format!(
            "HSET wasup:sessions {session_id} {}",
            record(user_id)
        ));
        assert!(
            answer.is_some_and(|answer| answer.starts_with(":1")),
            "seeded {session_id}"
        );
    }
    redis.query("HSET wasup:sessions junk 'not a record'");
    let wasup = TestWasup::start(config).await;
    laravel.wait_qr("good").await;
    let listed = wasup.get("/sessions").await.1;
    let ids: Vec<&str> = listed["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|session| session["session_id"].as_str())
        .collect();
    assert_eq!(ids, ["good"], "{listed}");
    assert!(
        outside.exists(),
        "nothing outside data_dir/sessions is touched"
    );
}

#[actix_rt::test]
async fn a_message_an_older_release_stored_under_its_old_key_is_delivered_and_then_deleted() {
    let laravel = Laravel::start().await;
    let redis = RedisServer::start();
    let mut config = fast_config(&laravel.url);
    config.redis.url = redis.url();
    // Keyed `session/message id`, as before messages were told apart by chat and sender.
    let stored = r#"'5|{"session_id":"s1","message_id":"OLD1","from":"34600000001@s.whatsapp.net","to":"34600000002@s.whatsapp.net","type":"text","text":"hola","timestamp":1}'"#;
    let answer = redis.query(&format!("HSET wasup:outbox:message s1/OLD1 {stored}"));
    assert!(answer.is_some_and(|answer| answer.starts_with(":1")));
    let _wasup = TestWasup::start(config).await;
    wait_until("Laravel stores it", PATIENCE, || async {
        laravel.messages_of("s1").len() == 1
    })
    .await;
    wait_until("and the outbox forgets it", PATIENCE, || async {
        redis
            .query("HLEN wasup:outbox:message")
            .is_some_and(|answer| answer.starts_with(":0\r"))
    })
    .await;
}

#[actix_rt::test]
async fn an_accepted_outgoing_message_survives_a_restart_and_its_text_leaves_redis_once_sent() {
    let laravel = Laravel::start().await;
    let redis = RedisServer::start();
    let mut config = fast_config(&laravel.url);
    config.redis.url = redis.url();
    let mut first_config = config.clone();
    // The first attempt fails and the retry would come only much later: the restart comes first.
    first_config.messages.backoff_base = Duration::from_secs(3600);
    first_config.messages.backoff_max = Duration::from_secs(3600);
    let mut first_run = TestWasup::start(first_config).await;
    let session_id = first_run.start_session(1).await;
    laravel.wait_qr(&session_id).await;
    first_run.scan(&session_id).await;
    laravel.wait_status(&session_id, "active").await;
    first_run
        .post(
            &format!("/sessions/{session_id}/simulate/fail-messages"),
            &serde_json::json!({"count": 1}),
        )
        .await;
    let (status, record) = first_run
        .post(
            &format!("/sessions/{session_id}/messages"),
            &serde_json::json!({"to": "5215500000000", "text": "sobrevive al reinicio"}),
        )
        .await;
    assert_eq!(status, 202, "{record}");
    let message_id = record["message_id"].as_str().expect("id").to_string();
    let stored = || redis.query(&format!("HGET wasup:outgoing {message_id}"));
    assert!(
        stored().is_some_and(|value| value.contains("sobrevive al reinicio")),
        "in Redis with its text before the 202"
    );
    let path = format!("/sessions/{session_id}/messages/{message_id}");
    wait_until("the first attempt failed", PATIENCE, || async {
        first_run.get(&path).await.1["state"] == "retrying"
    })
    .await;
    assert!(first_run.shutdown().await.flushed);

    // Enough retries to cover the restored session's reconnection, however slow the machine.
    config.messages.retries = 50;
    let second_run = TestWasup::start(config).await;
    wait_until(
        "taken back and sent after the restart",
        PATIENCE,
        || async { second_run.get(&path).await.1["state"] == "sent" },
    )
    .await;
    assert_eq!(
        second_run.inspect(&session_id).await["actor"]["messages_sent"],
        1
    );
    wait_until("its text left Redis", PATIENCE, || async {
        stored().is_some_and(|value| value.contains("\"sent\"") && !value.contains("sobrevive"))
    })
    .await;
}

#[actix_rt::test]
async fn an_outcome_not_yet_in_the_outbox_when_wasup_died_is_reported_after_the_restart() {
    let laravel = Laravel::start().await;
    let redis = RedisServer::start();
    let mut config = fast_config(&laravel.url);
    config.redis.url = redis.url();
    // What a kill -9 leaves in the few ms between the dispatcher's write and the outbox's: the
    // message finished (sent), its outcome not reported; and one an earlier release reported.
    let finished = |id: &str, reported: &str| {
        format!(
            r#"'7|{{"message_id":"{id}","session_id":"s1","to":"34600000002","state":"sent","attempts":1,"last_error":null,"whatsapp_id":"3EB0AABBCCDDEEFF001122","created_at":1,"updated_at":2{reported}}}'"#
        )
    };
    for (id, reported) in [
        ("m-unreported", r#","outcome_reported":false"#),
        ("m-old", ""),
    ] {
        let answer = redis.query(&format!(
            "HSET wasup:outgoing {id} {}",
            finished(id, reported)
        ));
        assert!(
            answer.is_some_and(|answer| answer.starts_with(":1")),
            "{id}"
        );
    }
    let _wasup = TestWasup::start(config).await;
    wait_until("Laravel hears the outcome", PATIENCE, || async {
        laravel
            .messages_of("s1")
            .iter()
            .any(|item| item["message_id"] == "m-unreported" && item["state"] == "sent")
    })
    .await;
    wait_until("the record is marked reported", PATIENCE, || async {
        redis
            .query("HGET wasup:outgoing m-unreported")
            .is_some_and(|answer| answer.contains(r#""outcome_reported":true"#))
    })
    .await;
    assert!(
        !laravel
            .messages_of("s1")
            .iter()
            .any(|item| item["message_id"] == "m-old"),
        "a record of an older release counts as reported"
    );
}

#[actix_rt::test]
async fn a_message_taken_by_a_batch_queue_that_died_before_writing_it_is_not_receipted() {
    let laravel = Laravel::start().await;
    let mut redis = RedisServer::start();
    let mut config = fast_config(&laravel.url);
    config.redis.url = redis.url();
    let wasup = TestWasup::start(config).await;
    let session_id = wasup.start_session(1).await;
    laravel.wait_qr(&session_id).await;
    wasup.scan(&session_id).await;
    laravel.wait_status(&session_id, "active").await;

    // Laravel refuses and Redis is gone: the queue holds the message in memory only, and its
    // outbox write waits. Then the queue panics.
    laravel.set_behaviour(Behaviour::Fail(503));
    redis.kill();
    let path = format!("/sessions/{session_id}/simulate/message");
    let message = serde_json::json!({"from": "34600000001", "text": "hola",
        "message_id": "3EB0A1B2C3D4", "wait_receipt": true});
    let ((status, answer), ()) = futures_util::join!(wasup.post(&path, &message), async {
        actix_rt::time::sleep(Duration::from_millis(500)).await;
        let halt = serde_json::json!({"actor": "batch", "panic": true});
        assert_eq!(wasup.post("/simulate/halt", &halt).await.0, 202);
    });
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["receipted"], false,
        "never written, so never receipted (WhatsApp redelivers it)"
    );

    // WhatsApp redelivers it: the queue that replaced the dead one takes it, and Laravel gets it.
    redis.restart();
    laravel.set_behaviour(Behaviour::Store);
    wait_until("a fresh batch queue", PATIENCE, || async {
        wasup.get("/health").await.1["coreRestarts"]["batch"] == 1
    })
    .await;
    let (status, answer) = wasup.post(&path, &message).await;
    assert_eq!((status, answer["receipted"].clone()), (200, true.into()));
    wait_until("Laravel holds the message", PATIENCE, || async {
        laravel
            .messages_of(&session_id)
            .iter()
            .any(|item| item["text"] == "hola")
    })
    .await;
}

/// `POST path` with `Idempotency-Key: key`.
async fn post_with_key(wasup: &TestWasup, path: &str, key: &str, body: &Value) -> (u16, Value) {
    let mut response = awc::Client::default()
        .post(format!("{}{path}", wasup.base))
        .insert_header(("X-Api-Key", API_KEY))
        .insert_header(("Idempotency-Key", key))
        .send_json(body)
        .await
        .expect("answers");
    let body = response.json().await.unwrap_or(Value::Null);
    (response.status().as_u16(), body)
}

#[actix_rt::test]
async fn a_send_retried_under_its_idempotency_key_is_one_message_across_a_restart() {
    let laravel = Laravel::start().await;
    let redis = RedisServer::start();
    let mut config = fast_config(&laravel.url);
    config.redis.url = redis.url();
    let mut first_run = TestWasup::start(config.clone()).await;
    let session_id = first_run.start_session(1).await;
    let other_session = first_run.start_session(2).await;
    let path = format!("/sessions/{session_id}/messages");
    let message = json!({"to": "34600000001", "text": "hola"});

    let (status, queued) = post_with_key(&first_run, &path, "order-17", &message).await;
    assert_eq!(status, 202, "{queued}");
    let message_id = queued["message_id"].clone();
    let (status, again) = post_with_key(&first_run, &path, "order-17", &message).await;
    assert_eq!(status, 200, "the same request again: {again}");
    assert_eq!(
        again["message_id"], message_id,
        "the message queued the first time"
    );
    let other = json!({"to": "34600000001", "text": "otra cosa"});
    let (status, refused) = post_with_key(&first_run, &path, "order-17", &other).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    let elsewhere = format!("/sessions/{other_session}/messages");
    let (status, own) = post_with_key(&first_run, &elsewhere, "order-17", &message).await;
    assert_eq!(status, 202, "keys are per session: {own}");
    assert_ne!(own["message_id"], message_id);
    for bad in ["", &"k".repeat(129), "with space"] {
        let (status, answer) = post_with_key(&first_run, &path, bad, &message).await;
        assert_eq!(status, 400, "{bad:?}: {answer}");
    }
    assert!(first_run.shutdown().await.flushed);

    let second_run = TestWasup::start(config).await;
    wait_until("the same request after a restart", PATIENCE, || async {
        let (status, again) = post_with_key(&second_run, &path, "order-17", &message).await;
        status == 200 && again["message_id"] == message_id
    })
    .await;
}
