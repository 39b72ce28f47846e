//! Black-box tests of the pipeline: sessions → batches → the stand-in Laravel, on the simulated engine.

mod common;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use common::{
    Behaviour, Laravel, PATIENCE, TestWasup, fast_config, service::assert_lane_accounting,
    wait_until,
};
use serde_json::json;

#[actix_rt::test]
async fn a_started_session_reports_its_qr_and_pending_status_to_laravel() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;

    let (status, body) = wasup.post("/start", &json!({"user_id": 42})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "pending");
    let session_id = body["session_id"].as_str().expect("id").to_string();

    laravel.wait_qr(&session_id).await;
    let qr = laravel.qr_of(&session_id).expect("qr");
    assert!(
        qr["qr"]
            .as_str()
            .expect("qr string")
            .starts_with("data:image/png;base64,")
    );
    assert_eq!(qr["user_id"], 42);
    assert!(qr["timestamp"].as_u64().is_some());
    laravel.wait_status(&session_id, "pending").await;

    let request = &laravel.requests_to("/qr/batch")[0];
    assert_eq!(request.authorization.as_deref(), Some("Bearer test-token"));
    assert!(
        request
            .idempotency_key
            .as_ref()
            .is_some_and(|key| key.len() >= 32)
    );

    let (status, sessions) = wasup.get("/sessions").await;
    assert_eq!(status, 200);
    assert_eq!(sessions["pendingCount"], 1);
    assert_eq!(sessions["sessions"][0]["session_id"], session_id.as_str());
    assert_eq!(sessions["pendingSessions"][0]["state"], "pending");

    let (status, inspection) = wasup.get(&format!("/sessions/{session_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(inspection["state"], "pending");
    assert_eq!(inspection["engine"], "simulated");
    assert_eq!(inspection["responsive"], true);
    assert_eq!(inspection["restarts"], 0);
    assert_eq!(inspection["actor"]["qr_count"], 1);
    assert!(inspection["actor"]["mailbox_depth"].is_u64());
    assert_lane_accounting(&wasup.batch_metrics().await);
}

#[actix_rt::test]
async fn batches_hold_at_most_max_items_and_one_item_per_session() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.batch.max_items = 5;
    config.engine.simulated.qr_first_ttl = Duration::from_millis(150);
    config.engine.simulated.qr_ttl = Duration::from_millis(150);
    let wasup = TestWasup::start(config).await;
    let sessions: Vec<String> = {
        let mut ids = Vec::new();
        for user in 0..23 {
            ids.push(wasup.start_session(user).await);
        }
        ids
    };
    wait_until("every session's QR reaches Laravel", PATIENCE, || async {
        sessions.iter().all(|id| laravel.qr_of(id).is_some())
    })
    .await;
    actix_rt::time::sleep(Duration::from_millis(600)).await;

    let batches = laravel.requests_to("/batch");
    assert!(batches.len() >= 10, "several batches: {}", batches.len());
    for request in &batches {
        let items = request.items();
        assert!(
            !items.is_empty() && items.len() <= 5,
            "batch of {} items",
            items.len()
        );
        let ids: HashSet<&str> = items
            .iter()
            .filter_map(|item| item["session_id"].as_str())
            .collect();
        assert_eq!(
            ids.len(),
            items.len(),
            "one item per session in {}",
            request.body
        );
    }
    assert!(
        batches.iter().any(|request| request.items().len() == 5),
        "full batches are used"
    );
    assert_lane_accounting(&wasup.batch_metrics().await);
}

#[actix_rt::test]
async fn qrs_of_one_session_within_a_window_coalesce_into_the_latest() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.batch.qr_deadline = Duration::from_secs(1);
    config.engine.simulated.qr_refs = 200;
    config.engine.simulated.qr_first_ttl = Duration::from_millis(20);
    config.engine.simulated.qr_ttl = Duration::from_millis(20);
    // A storm of codes that stay valid (rotating every 20 ms, each valid 20 s).
    config.engine.simulated.qr_reported_validity = Duration::from_secs(20);
    let wasup = TestWasup::start(config).await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let session_id = wasup.start_session(1).await;

    wait_until("the first QR batch arrives", PATIENCE, || async {
        !laravel.requests_to("/qr/batch").is_empty()
    })
    .await;
    let first = &laravel.requests_to("/qr/batch")[0];
    let items = first.items();
    assert_eq!(
        items.len(),
        1,
        "many QRs inside one window → one item: {items:?}"
    );
    assert_eq!(items[0]["session_id"], session_id.as_str());
    let delivered_at = items[0]["timestamp"].as_u64().expect("timestamp");
    assert!(
        delivered_at >= before + 700,
        "the item is the latest QR of the window, not the first ({} ms after start)",
        delivered_at - before
    );
    let metrics = wasup.batch_metrics().await;
    assert!(metrics["qr"]["coalesced"].as_u64() >= Some(20), "{metrics}");
    assert_lane_accounting(&metrics);
}

#[actix_rt::test]
async fn an_urgent_status_overtakes_a_normal_backlog() {
    let laravel = Laravel::start().await;
    laravel.set_latency(Duration::from_millis(100));
    let mut config = fast_config(&laravel.url);
    config.batch.status_interval = Duration::from_secs(3);
    config.batch.qr_deadline = Duration::from_secs(3);
    config.laravel.max_requests_per_second = 10.0;
    let wasup = TestWasup::start(config).await;
    let mut sessions = Vec::new();
    for user in 0..20 {
        sessions.push(wasup.start_session(user).await);
    }
    let metrics_have_backlog = || async {
        let metrics = wasup.batch_metrics().await;
        metrics["status"]["pending"].as_u64() == Some(20)
    };
    wait_until(
        "a backlog of normal statuses",
        PATIENCE,
        metrics_have_backlog,
    )
    .await;

    let scanned = &sessions[7];
    let asked = Instant::now();
    wasup.scan(scanned).await;
    laravel.wait_status(scanned, "active").await;
    let arrived = laravel
        .requests_to("/whatsapp/status/batch")
        .iter()
        .find(|request| {
            request
                .items()
                .iter()
                .any(|item| item["session_id"] == scanned.as_str())
        })
        .map(|request| request.at)
        .expect("request");
    // connect_delay (30 ms) + priority_delay (500 ms) + Laravel's 100 ms + scheduling margin.
    let took = arrived - asked;
    assert!(
        took < Duration::from_millis(900),
        "urgent status took {took:?}"
    );
}

#[actix_rt::test]
async fn an_urgent_status_takes_the_budget_reserve_while_every_ordinary_place_is_busy() {
    let laravel = Laravel::start().await;
    // The first request (the QR) is held at Laravel for 8 s and takes the only ordinary place.
    laravel.set_behaviour(Behaviour::Stall(Duration::from_secs(8)));
    let mut config = fast_config(&laravel.url);
    config.laravel.max_in_flight = 1;
    config.laravel.timeout = Duration::from_secs(10);
    config.batch.status_interval = Duration::from_secs(3);
    let wasup = TestWasup::start(config).await;
    let session = wasup.start_session(1).await;
    let one_request_out =
        || async { wasup.batch_metrics().await["budget"]["in_flight"].as_u64() == Some(1) };
    wait_until("the QR request held at Laravel", PATIENCE, one_request_out).await;
    laravel.set_behaviour(Behaviour::Store);

    let asked = Instant::now();
    wasup.scan(&session).await;
    laravel.wait_status(&session, "active").await;
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the urgent status waited {took:?} for the held request"
    );
    assert!(
        laravel.qr_of(&session).is_none(),
        "the QR request is still held: the status left beside it"
    );
    let budget = &wasup.batch_metrics().await["budget"];
    assert_eq!(budget["urgent_reserve_starts"], 1, "{budget}");
}

#[actix_rt::test]
async fn the_breaker_opens_stops_sending_half_opens_and_every_latest_state_arrives() {
    let laravel = Laravel::start().await;
    laravel.set_behaviour(Behaviour::Fail(500));
    let mut config = fast_config(&laravel.url);
    config.breaker.threshold = 3;
    config.breaker.reset_timeout = Duration::from_millis(800);
    config.laravel.retries = 0;
    let wasup = TestWasup::start(config).await;
    let mut sessions = Vec::new();
    for user in 0..4 {
        sessions.push(wasup.start_session(user).await);
    }
    wait_until("the breaker opens", PATIENCE, || async {
        wasup.get("/health").await.1["circuitBreaker"]["state"] == "OPEN"
    })
    .await;
    let (_, health) = wasup.get("/health").await;
    assert_eq!(health["status"], "degraded");
    let failed_so_far = laravel.requests().len();
    assert!(failed_so_far >= 3);

    // While open: a session pairs; nothing is sent.
    let (status, _) = wasup
        .post(
            &format!("/sessions/{}/simulate/scan", sessions[0]),
            &json!({}),
        )
        .await;
    assert_eq!(status, 202);
    actix_rt::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        laravel.requests().len(),
        failed_so_far,
        "nothing is sent while the breaker is open"
    );

    laravel.set_behaviour(Behaviour::Store);
    wait_until("every latest state reaches Laravel", PATIENCE, || async {
        laravel.status_of(&sessions[0]).as_deref() == Some("active")
            && sessions[1..]
                .iter()
                .all(|id| laravel.status_of(id).as_deref() == Some("pending"))
            && sessions[1..].iter().all(|id| laravel.qr_of(id).is_some())
    })
    .await;
    let (_, health) = wasup.get("/health").await;
    assert_eq!(health["circuitBreaker"]["state"], "CLOSED");
    assert_eq!(health["status"], "ok");
    assert!(health["circuitBreaker"]["successCount"].as_u64() >= Some(1));
    let probes_after_open = laravel.requests()[failed_so_far..].len();
    assert!(
        probes_after_open <= 6,
        "recovery is batched: {probes_after_open} requests"
    );
    assert_lane_accounting(&wasup.batch_metrics().await);
}

#[actix_rt::test]
async fn items_laravel_lists_as_failed_are_retried_until_stored() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.batch.qr_deadline = Duration::from_millis(300);
    let wasup = TestWasup::start(config).await;
    let first = wasup.start_session(1).await;
    laravel.set_behaviour(Behaviour::FailIds(HashSet::from([first.clone()])));
    let second = wasup.start_session(2).await;
    laravel.wait_qr(&second).await;
    wait_until(
        "the failing item was refused at least twice",
        PATIENCE,
        || async {
            laravel
                .requests_to("/qr/batch")
                .iter()
                .filter(|request| {
                    request
                        .items()
                        .iter()
                        .any(|item| item["session_id"] == first.as_str())
                })
                .count()
                >= 2
        },
    )
    .await;
    assert!(laravel.qr_of(&first).is_none());
    laravel.set_behaviour(Behaviour::Store);
    laravel.wait_qr(&first).await;
    let metrics = wasup.batch_metrics().await;
    assert!(metrics["qr"]["retried"].as_u64() >= Some(2), "{metrics}");
    assert!(metrics["sink"]["items_failed_by_laravel"].as_u64() >= Some(2));
    assert_lane_accounting(&metrics);
}

#[actix_rt::test]
async fn failed_without_ids_retries_the_whole_batch() {
    let laravel = Laravel::start().await;
    laravel.set_behaviour(Behaviour::FailWithoutIds);
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    let session_id = wasup.start_session(1).await;
    wait_until("the batch was retried", PATIENCE, || async {
        laravel.requests_to("/qr/batch").len() >= 2
    })
    .await;
    let keys: HashSet<_> = laravel
        .requests_to("/qr/batch")
        .iter()
        .take(2)
        .map(|request| request.idempotency_key.clone())
        .collect();
    assert_eq!(keys.len(), 1, "a retried batch keeps its Idempotency-Key");
    laravel.set_behaviour(Behaviour::Store);
    laravel.wait_qr(&session_id).await;
}

#[actix_rt::test]
async fn a_non_retryable_4xx_is_dead_lettered_and_counted() {
    let laravel = Laravel::start().await;
    laravel.set_behaviour(Behaviour::Fail(422));
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    wasup.start_session(1).await;
    wait_until("both lanes dead-letter", PATIENCE, || async {
        let metrics = wasup.batch_metrics().await;
        metrics["qr"]["dead_lettered"] == 1 && metrics["status"]["dead_lettered"] == 1
    })
    .await;
    actix_rt::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(laravel.requests().len(), 2, "never retried");
    let metrics = wasup.batch_metrics().await;
    assert_eq!(metrics["sink"]["rejected"], 2);
    assert_eq!(
        wasup.get("/health").await.1["circuitBreaker"]["state"],
        "CLOSED"
    );
    assert_lane_accounting(&metrics);
}

#[actix_rt::test]
async fn retryable_statuses_are_retried_with_backoff_then_delivered() {
    for status in [408u16, 429, 503] {
        let laravel = Laravel::start().await;
        laravel.set_behaviour(Behaviour::Fail(status));
        let mut config = fast_config(&laravel.url);
        // About retries, not the breaker: keep it closed.
        config.breaker.threshold = 1000;
        let wasup = TestWasup::start(config).await;
        let session_id = wasup.start_session(1).await;
        wait_until("a retry", PATIENCE, || async {
            laravel.requests_to("/qr/batch").len() >= 2
        })
        .await;
        laravel.set_behaviour(Behaviour::Store);
        laravel.wait_qr(&session_id).await;
        let metrics = wasup.batch_metrics().await;
        assert!(
            metrics["sink"]["retries"].as_u64() >= Some(1),
            "{status}: {metrics}"
        );
        assert_eq!(metrics["qr"]["dead_lettered"], 0);
    }
}

#[actix_rt::test]
async fn a_stalled_laravel_times_out_and_is_retried() {
    let laravel = Laravel::start().await;
    laravel.set_behaviour(Behaviour::Stall(Duration::from_secs(3)));
    let mut config = fast_config(&laravel.url);
    config.laravel.timeout = Duration::from_millis(300);
    let wasup = TestWasup::start(config).await;
    let session_id = wasup.start_session(1).await;
    wait_until("a timeout is recorded", PATIENCE, || async {
        wasup.batch_metrics().await["sink"]["retryable_failures"].as_u64() >= Some(1)
    })
    .await;
    laravel.set_behaviour(Behaviour::Store);
    laravel.wait_status(&session_id, "pending").await;
}

#[actix_rt::test]
async fn a_waiting_qr_is_withdrawn_once_its_session_connects() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.batch.qr_deadline = Duration::from_secs(2);
    let wasup = TestWasup::start(config).await;
    let session_id = wasup.start_session(1).await;
    wait_until("the QR waits in its lane", PATIENCE, || async {
        wasup.batch_metrics().await["qr"]["pending"] == 1
    })
    .await;
    wasup.scan(&session_id).await;
    laravel.wait_status(&session_id, "active").await;
    actix_rt::time::sleep(Duration::from_millis(2300)).await;
    assert!(
        laravel.requests_to("/qr/batch").is_empty(),
        "a stale QR never follows 'active'"
    );
    let metrics = wasup.batch_metrics().await;
    assert_eq!(metrics["qr"]["coalesced"], 1);
    assert_lane_accounting(&metrics);
}

#[actix_rt::test]
async fn https_to_a_server_that_does_not_speak_tls_is_a_retryable_failure() {
    let laravel = Laravel::start().await;
    let https_url = laravel.url.replace("http://", "https://");
    let wasup = TestWasup::start(fast_config(&https_url)).await;
    wasup.start_session(1).await;
    wait_until("a failed TLS request is recorded", PATIENCE, || async {
        let metrics = wasup.batch_metrics().await;
        metrics["sink"]["retryable_failures"].as_u64() >= Some(1)
    })
    .await;
    let metrics = wasup.batch_metrics().await;
    assert!(
        metrics["sink"]["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("request failed")),
        "{metrics}"
    );
    assert_eq!(metrics["qr"]["dead_lettered"], 0, "kept for a later try");
    assert!(laravel.requests().is_empty());
}

#[actix_rt::test]
async fn requests_to_laravel_are_signed_with_the_shared_secret() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.laravel.signing_secret = "shh".into();
    let wasup = TestWasup::start(config).await;
    let session_id = wasup.start_session(1).await;
    laravel.wait_qr(&session_id).await;
    let request = &laravel.requests_to("/qr/batch")[0];
    let (signature, timestamp) = request.signature.clone().expect("signed");
    let timestamp: u64 = timestamp.parse().expect("unix seconds");
    let now = wasup_actors::messages::unix_millis() / 1000;
    assert!(now.abs_diff(timestamp) < 60, "fresh timestamp");
    let key = request.idempotency_key.clone().expect("idempotency key");
    assert_eq!(
        signature,
        wasup_actors::sink::request_signature("shh", timestamp, &key, &request.raw_body)
    );
    assert_ne!(
        signature,
        wasup_actors::sink::request_signature("other", timestamp, &key, &request.raw_body)
    );
}

#[actix_rt::test]
async fn a_batch_laravel_finds_too_large_is_split_until_it_fits() {
    let laravel = Laravel::start().await;
    laravel.set_behaviour(Behaviour::TooLargeAbove(2));
    let mut config = fast_config(&laravel.url);
    config.batch.qr_deadline = Duration::from_millis(500);
    let wasup = TestWasup::start(config).await;
    let mut sessions = Vec::new();
    for user in 0..9 {
        sessions.push(wasup.start_session(user).await);
    }
    for id in &sessions {
        laravel.wait_qr(id).await;
    }
    let metrics = wasup.batch_metrics().await;
    assert_eq!(metrics["qr"]["dead_lettered"], 0, "{metrics}");
    assert!(
        laravel
            .requests_to("/qr/batch")
            .iter()
            .any(|request| request.answered == 413)
    );

    laravel.set_behaviour(Behaviour::TooLargeAbove(0));
    let lonely = wasup.start_session(99).await;
    wait_until(
        "a single oversized item is dead-lettered",
        PATIENCE,
        || async { wasup.batch_metrics().await["qr"]["dead_lettered"] == 1 },
    )
    .await;
    assert!(laravel.qr_of(&lonely).is_none());
    assert_lane_accounting(&wasup.batch_metrics().await);
}

#[actix_rt::test]
async fn single_item_calls_use_the_legacy_endpoints() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.laravel.single_item_calls = true;
    let wasup = TestWasup::start(config).await;
    let sessions = [wasup.start_session(1).await, wasup.start_session(2).await];
    for id in &sessions {
        laravel.wait_qr(id).await;
        laravel.wait_status(id, "pending").await;
    }
    let requests = laravel.requests();
    assert!(
        requests
            .iter()
            .all(|request| request.path == "/api/qr" || request.path == "/api/whatsapp/status"),
        "legacy paths only"
    );
    assert_eq!(
        laravel.requests_to("/api/qr").len(),
        2,
        "one request per item"
    );
    let body = &laravel.requests_to("/api/qr")[0].body;
    assert!(
        body["qr"]
            .as_str()
            .is_some_and(|qr| qr.starts_with("data:image/png"))
            && body["session_id"].is_string()
    );
}
