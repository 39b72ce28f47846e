//! Black-box tests of session lifecycles: pairing, logout, reconnects, sweeps, crashes, limits,
//! bad input, and the flush on shutdown.

mod common;

use std::time::Duration;

use common::{
    Laravel, PATIENCE, TestWasup, fast_config, redis::RedisServer, service::assert_lane_accounting,
    wait_until,
};
use serde_json::json;

#[actix_rt::test]
async fn a_scan_connects_and_a_logout_reports_inactive_and_removes_the_session() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    let session_id = wasup.start_session(1).await;
    laravel.wait_status(&session_id, "pending").await;

    wasup.scan(&session_id).await;
    laravel.wait_status(&session_id, "active").await;
    let inspection = wasup.inspect(&session_id).await;
    assert_eq!(inspection["state"], "active");
    assert!(inspection["actor"]["phone"].is_string());
    assert!(inspection["actor"]["connected_for_ms"].is_u64());
    assert!(
        inspection["node"]
            .as_str()
            .is_some_and(|node| !node.is_empty())
    );
    let (_, sessions) = wasup.get("/sessions").await;
    assert_eq!(sessions["pendingCount"], 0);
    assert_eq!(wasup.get("/health").await.1["activeSessions"], 1);

    wasup.disconnect(&session_id, "logged_out").await;
    laravel.wait_status(&session_id, "inactive").await;
    wasup.wait_removed(&session_id).await;
    assert_eq!(
        laravel.statuses_received(&session_id),
        vec!["pending", "active", "inactive"]
    );
}

#[actix_rt::test]
async fn a_lost_connection_reconnects_with_backoff_and_stays_one_session() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    let session_id = wasup.start_session(1).await;
    laravel.wait_qr(&session_id).await;
    wasup.scan(&session_id).await;
    laravel.wait_status(&session_id, "active").await;

    for (reconnects, reason) in [(1, "connection_lost"), (2, "connection_replaced")] {
        let (status, body) = wasup
            .post(
                &format!("/sessions/{session_id}/simulate/disconnect"),
                &json!({ "reason": reason }),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        wait_until("reconnected", PATIENCE, || async {
            let inspection = wasup.inspect(&session_id).await;
            inspection["state"] == "active"
                && inspection["actor"]["reconnect_attempts"] == 0
                && inspection["actor"]["reconnects"] == reconnects
        })
        .await;
    }
    let inspection = wasup.inspect(&session_id).await;
    assert_eq!(inspection["actor"]["reconnects"], 2);
    assert_eq!(inspection["actor"]["last_error"], "connection_replaced");
    assert_eq!(laravel.status_of(&session_id).as_deref(), Some("active"));
}

#[actix_rt::test]
async fn a_never_scanned_session_times_out_as_expired() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.sessions.pending_timeout = Duration::from_millis(500);
    let wasup = TestWasup::start(config).await;
    let session_id = wasup.start_session(1).await;
    laravel.wait_status(&session_id, "pending").await;
    laravel.wait_status(&session_id, "expired").await;
    assert_eq!(wasup.get(&format!("/sessions/{session_id}")).await.0, 404);
    assert_eq!(wasup.get("/sessions").await.1["pendingCount"], 0);
}

#[actix_rt::test]
async fn the_qr_codes_running_out_expire_the_session() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.engine.simulated.qr_first_ttl = Duration::from_millis(60);
    config.engine.simulated.qr_ttl = Duration::from_millis(30);
    let wasup = TestWasup::start(config).await;
    let session_id = wasup.start_session(1).await;
    laravel.wait_status(&session_id, "expired").await;
    assert_eq!(wasup.get(&format!("/sessions/{session_id}")).await.0, 404);
}

#[actix_rt::test]
async fn manual_sweeps_answer_how_many_sessions_they_removed() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.sessions.pending_timeout = Duration::from_millis(300);
    config.sessions.pending_sweep_interval = Duration::from_secs(3600);
    config.sessions.not_connected_sweep_interval = Duration::from_millis(300);
    config.sessions.reconnect_base = Duration::from_secs(30);
    config.sessions.reconnect_max = Duration::from_secs(30);
    let wasup = TestWasup::start(config).await;
    let pending = wasup.start_session(1).await;
    let connected = wasup.start_session(2).await;
    wasup.scan(&connected).await;
    laravel.wait_status(&connected, "active").await;
    wasup.disconnect(&connected, "connection_lost").await;
    actix_rt::time::sleep(Duration::from_millis(400)).await;

    let (status, body) = wasup.post("/cleanup-pending-sessions", &json!({})).await;
    assert_eq!((status, body["removed"].as_u64()), (200, Some(1)));
    let (status, body) = wasup.post("/cleanup-inactive-sessions", &json!({})).await;
    assert_eq!((status, body["removed"].as_u64()), (200, Some(1)));
    wait_until("reported", PATIENCE, || async {
        laravel.status_of(&pending).as_deref() == Some("expired")
            && laravel.status_of(&connected).as_deref() == Some("inactive")
    })
    .await;
    assert_eq!(wasup.get("/sessions").await.1["sessions"], json!([]));
}

#[actix_rt::test]
async fn a_panicking_session_actor_is_restarted_and_its_crash_is_kept_for_inspection() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    let session_id = wasup.start_session(1).await;
    laravel.wait_qr(&session_id).await;
    let first_qr = laravel.qr_of(&session_id);

    let (status, _) = wasup
        .post(
            &format!("/sessions/{session_id}/simulate/crash"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 202);
    wait_until("restarted once and answering", PATIENCE, || async {
        let inspection = wasup.inspect(&session_id).await;
        inspection["restarts"] == 1
            && inspection["responsive"] == true
            && inspection["generation"] == 2
    })
    .await;
    let inspection = wasup.inspect(&session_id).await;
    let crash = inspection["last_crash"].as_str().expect("crash reason");
    assert!(crash.contains("simulated crash"), "{crash}");
    wait_until("a fresh QR after the restart", PATIENCE, || async {
        laravel.qr_of(&session_id) != first_qr
    })
    .await;
    assert_eq!(wasup.get("/health").await.1["sessions"]["crashes"], 1);
}

#[actix_rt::test]
async fn a_session_crashing_over_and_over_is_given_up_as_inactive() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.sessions.max_restarts = 2;
    config.sessions.restart_backoff = Duration::from_millis(10);
    let wasup = TestWasup::start(config).await;
    let session_id = wasup.start_session(1).await;
    for crash in 1..=3u64 {
        wait_until("answering", PATIENCE, || async {
            wasup.inspect(&session_id).await["responsive"] == true
        })
        .await;
        wasup
            .post(
                &format!("/sessions/{session_id}/simulate/crash"),
                &json!({}),
            )
            .await;
        if crash < 3 {
            wait_until("restarted", PATIENCE, || async {
                wasup.inspect(&session_id).await["restarts"] == crash
            })
            .await;
        }
    }
    wasup.wait_removed(&session_id).await;
    laravel.wait_status(&session_id, "inactive").await;
}

#[actix_rt::test]
async fn delete_stops_the_session_reports_inactive_and_forgets_its_store() {
    let laravel = Laravel::start().await;
    let config = fast_config(&laravel.url);
    let sessions_dir = config.engine.data_dir.join("sessions");
    let wasup = TestWasup::start(config).await;
    let session_id = wasup.start_session(1).await;
    wasup.scan(&session_id).await;
    laravel.wait_status(&session_id, "active").await;
    assert!(
        sessions_dir.join(&session_id).exists(),
        "a paired session has a store"
    );
    let (status, body) = wasup
        .delete(&format!("/sessions/{session_id}?logout=true"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["removed"], true);
    laravel.wait_status(&session_id, "inactive").await;
    assert_eq!(
        wasup.delete(&format!("/sessions/{session_id}")).await.0,
        404
    );
    wait_until("store removed", PATIENCE, || async {
        !sessions_dir.join(&session_id).exists()
    })
    .await;
}

#[actix_rt::test]
async fn only_a_logout_deletes_credentials_not_a_plain_delete_nor_a_404_from_laravel() {
    let laravel = Laravel::start().await;
    let redis = RedisServer::start();
    let mut config = fast_config(&laravel.url);
    config.redis.url = redis.url();
    // The cache tiers forget quickly, so the connection drop below asks Laravel.
    config.cache.local_ttl = std::time::Duration::from_millis(50);
    config.cache.status_ttl = std::time::Duration::from_millis(50);
    config.cache.connection_ttl = std::time::Duration::from_millis(50);
    let sessions_dir = config.engine.data_dir.join("sessions");
    let mut wasup = TestWasup::start(config.clone()).await;
    let paired = |session_id: String| {
        let (wasup, laravel) = (&wasup, &laravel);
        async move {
            wasup.scan(&session_id).await;
            laravel.wait_status(&session_id, "active").await;
            session_id
        }
    };
    let deleted = paired(wasup.start_session(1).await).await;
    let unknown_to_laravel = paired(wasup.start_session(2).await).await;

    assert_eq!(wasup.delete(&format!("/sessions/{deleted}")).await.0, 200);
    laravel.wait_status(&deleted, "inactive").await;
    wasup.wait_removed(&deleted).await;

    // A wrong base URL or a restored Laravel database: the status look-up answers 404.
    laravel.fail_lookups(Some(404));
    actix_rt::time::sleep(std::time::Duration::from_millis(200)).await;
    wasup
        .disconnect(&unknown_to_laravel, "connection_lost")
        .await;
    laravel.wait_status(&unknown_to_laravel, "inactive").await;
    // An inferred ending keeps the record, bound to its user, across a restart.
    wasup.wait_stopped(&unknown_to_laravel).await;
    assert!(
        laravel.lookups_of(&unknown_to_laravel) >= 1,
        "Laravel was asked"
    );

    for session_id in [&deleted, &unknown_to_laravel] {
        assert!(
            sessions_dir.join(session_id).exists(),
            "{session_id}: the credentials stay without a logout"
        );
    }
    let (_, list) = wasup.get("/sessions").await;
    assert_eq!(
        list["stoppedSessions"][0]["session_id"],
        unknown_to_laravel.as_str(),
        "{list}"
    );
    wasup.shutdown().await;
    laravel.fail_lookups(None);
    let wasup = TestWasup::start(config).await;
    wasup.wait_stopped(&unknown_to_laravel).await;
    let stopped = wasup.inspect(&unknown_to_laravel).await;
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert_eq!(stopped["user_id"], 2, "{stopped}");
    let messages = format!("/sessions/{unknown_to_laravel}/messages");
    let (status, refused) = wasup
        .post(&messages, &json!({"to": "34600000001", "text": "hola"}))
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (409, Some("session_stopped")),
        "{refused}"
    );

    let reopen = |user_id: u64| json!({"user_id": user_id, "session_id": unknown_to_laravel});
    let (status, refused) = wasup.post("/start", &reopen(99)).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["code"], "owned_by_another_user");
    let (status, started) = wasup.post("/start", &reopen(2)).await;
    assert_eq!(status, 201, "{started}");
    laravel.wait_status(&unknown_to_laravel, "active").await;
    assert_eq!(
        wasup.inspect(&unknown_to_laravel).await["actor"]["qr_count"],
        0,
        "its own user reconnects it without a QR"
    );

    // A logout from the phone ends it for good: no stopped record, no store.
    wasup.disconnect(&unknown_to_laravel, "logged_out").await;
    wasup.wait_removed(&unknown_to_laravel).await;
    wait_until("its store removed", PATIENCE, || async {
        !sessions_dir.join(&unknown_to_laravel).exists()
    })
    .await;
}

#[actix_rt::test]
async fn an_id_deleted_and_started_again_waits_for_the_old_incarnation_to_finish() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    // The logout's round trip to WhatsApp: the old incarnation is still finishing meanwhile.
    config.engine.simulated.logout_delay = std::time::Duration::from_millis(400);
    let sessions_dir = config.engine.data_dir.join("sessions");
    let wasup = TestWasup::start(config).await;
    let (status, started) = wasup
        .post("/start", &json!({"user_id": 1, "session_id": "reused"}))
        .await;
    assert_eq!(status, 201, "{started}");
    laravel.wait_qr("reused").await;
    wasup.scan("reused").await;
    laravel.wait_status("reused", "active").await;

    assert_eq!(wasup.delete("/sessions/reused?logout=true").await.0, 200);
    let (status, refused) = wasup
        .post("/start", &json!({"user_id": 1, "session_id": "reused"}))
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["code"], "session_finishing");
    wait_until("the id can start again", PATIENCE, || async {
        wasup
            .post("/start", &json!({"user_id": 1, "session_id": "reused"}))
            .await
            .0
            == 201
    })
    .await;
    wait_until(
        "Laravel heard the old incarnation end",
        PATIENCE,
        || async {
            laravel
                .statuses_received("reused")
                .iter()
                .any(|status| status == "inactive")
        },
    )
    .await;
    wasup.scan("reused").await;
    laravel.wait_status("reused", "active").await;
    assert_eq!(
        laravel
            .statuses_received("reused")
            .last()
            .map(String::as_str),
        Some("active"),
        "the old incarnation's last status came before the new one's"
    );
    assert!(
        sessions_dir.join("reused").exists(),
        "the new incarnation's store is not deleted by the old one"
    );
}

#[actix_rt::test]
async fn a_kept_store_opens_only_for_its_own_user_and_leftovers_are_swept_after_the_retention() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.sessions.leftover_store_retention = std::time::Duration::from_secs(3);
    let sessions_dir = config.engine.data_dir.join("sessions");
    let wasup = TestWasup::start(config).await;
    let start = |user_id: u64| {
        let wasup = &wasup;
        async move {
            wasup
                .post("/start", &json!({"user_id": user_id, "session_id": "kept"}))
                .await
        }
    };
    assert_eq!(start(1).await.0, 201);
    laravel.wait_qr("kept").await;
    wasup.scan("kept").await;
    laravel.wait_status("kept", "active").await;
    assert_eq!(wasup.delete("/sessions/kept").await.0, 200);
    wasup.wait_removed("kept").await;
    assert!(sessions_dir.join("kept").exists(), "kept without a logout");

    let (status, refused) = loop {
        let answer = start(2).await;
        if answer.1["code"] != "session_finishing" {
            break answer;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["code"], "owned_by_another_user");
    let qrs_before = laravel.requests_to("/qr/batch").len();
    assert_eq!(start(1).await.0, 201, "its own user may");
    laravel.wait_status("kept", "active").await;
    assert_eq!(
        laravel.requests_to("/qr/batch").len(),
        qrs_before,
        "reconnected with the kept credentials, no QR"
    );

    assert_eq!(wasup.delete("/sessions/kept").await.0, 200);
    wasup.wait_removed("kept").await;
    wait_until("the unused store is swept", PATIENCE, || async {
        !sessions_dir.join("kept").exists()
    })
    .await;
}

#[actix_rt::test]
async fn a_crashed_connected_session_comes_back_connected_without_a_new_qr() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    let session_id = wasup.start_session(1).await;
    laravel.wait_qr(&session_id).await;
    wasup.scan(&session_id).await;
    laravel.wait_status(&session_id, "active").await;
    let qrs_before = laravel.requests_to("/qr/batch").len();
    wasup
        .post(
            &format!("/sessions/{session_id}/simulate/crash"),
            &json!({}),
        )
        .await;
    wait_until("restarted and connected", PATIENCE, || async {
        let inspection = wasup.inspect(&session_id).await;
        inspection["restarts"] == 1 && inspection["state"] == "active"
    })
    .await;
    let inspection = wasup.inspect(&session_id).await;
    assert_eq!(
        inspection["actor"]["qr_count"], 0,
        "stored credentials: no QR after a restart"
    );
    assert_eq!(laravel.requests_to("/qr/batch").len(), qrs_before);
}

#[actix_rt::test]
async fn sessions_beyond_max_active_are_refused_with_503() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.sessions.max_active = 2;
    let wasup = TestWasup::start(config).await;
    wasup.start_session(1).await;
    wasup.start_session(2).await;
    let (status, body) = wasup.post("/start", &json!({"user_id": 3})).await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "at_capacity");
    assert!(body["error"].as_str().expect("message").contains('2'));
}

#[actix_rt::test]
async fn bad_input_gets_a_json_error_with_the_right_status() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    use awc::http::Method;
    let cases: Vec<(Method, &str, &'static str, u16)> = vec![
        (Method::POST, "/start", "{not json", 400),
        (Method::POST, "/start", r#"{"user_id":"seven"}"#, 400),
        (Method::POST, "/start", r#"{"user_id":-1}"#, 400),
        (
            Method::POST,
            "/start",
            r#"{"user_id":9223372036854775808}"#,
            400,
        ),
        (Method::GET, "/dead-letters?limit=0", "", 400),
        (Method::GET, "/dead-letters?lane=everything", "", 400),
        (Method::POST, "/dead-letters/replay", r#"{"lane":7}"#, 400),
        (
            Method::POST,
            "/start",
            r#"{"user_id":1,"session_id":"../../etc"}"#,
            400,
        ),
        (
            Method::POST,
            "/start",
            r#"{"user_id":1,"surprise":true}"#,
            400,
        ),
        (Method::GET, "/sessions/nope", "", 404),
        (Method::DELETE, "/sessions/nope", "", 404),
        (Method::POST, "/sessions/nope/simulate/scan", "", 404),
        (
            Method::POST,
            "/sessions/nope/simulate/disconnect",
            r#"{"reason":"exploded"}"#,
            400,
        ),
        (Method::GET, "/no/such/route", "", 404),
        (Method::PUT, "/start", "{}", 405),
        (Method::GET, "/start", "", 405),
    ];
    for (method, path, body, expected) in cases {
        let (status, answer) = wasup.send_raw(method.clone(), path, body).await;
        assert_eq!(status, expected, "{method} {path} {body} → {answer}");
        assert!(
            answer["error"].is_string(),
            "{method} {path}: JSON error body, got {answer}"
        );
    }
    let chosen = json!({"user_id": 1, "session_id": "chosen-id_1"});
    for (expected_status, key, expected) in [
        (201, "session_id", "chosen-id_1"),
        (409, "code", "already_exists"),
    ] {
        let (status, body) = wasup.post("/start", &chosen).await;
        assert_eq!(
            (status, body[key].as_str()),
            (expected_status, Some(expected)),
            "{body}"
        );
    }
}

#[actix_rt::test]
async fn shutdown_flushes_every_pending_item_before_it_returns() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.batch.qr_deadline = Duration::from_secs(60);
    config.batch.status_interval = Duration::from_secs(60);
    let mut wasup = TestWasup::start(config).await;
    let mut sessions = Vec::new();
    for user in 0..7 {
        sessions.push(wasup.start_session(user).await);
    }
    wait_until("items pending", PATIENCE, || async {
        let metrics = wasup.batch_metrics().await;
        metrics["qr"]["pending"] == 7 && metrics["status"]["pending"] == 7
    })
    .await;
    assert!(laravel.requests().is_empty(), "nothing due yet");
    assert_lane_accounting(&wasup.batch_metrics().await);

    let report = wasup.shutdown().await;
    assert!(report.flushed, "{report:?}");
    assert_eq!(report.pending, 0);
    for session_id in &sessions {
        assert!(
            laravel.qr_of(session_id).is_some(),
            "QR of {session_id} flushed"
        );
        assert_eq!(laravel.status_of(session_id).as_deref(), Some("pending"));
    }
}

#[actix_rt::test]
async fn a_quiet_connected_session_is_not_idle_but_a_dead_one_is() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.sessions.idle_ttl = Duration::from_millis(300);
    config.sessions.housekeeping_interval = Duration::from_millis(50);
    // A dropped connection retries only after a long while: no engine event meanwhile.
    config.sessions.reconnect_base = Duration::from_secs(60);
    config.sessions.reconnect_max = Duration::from_secs(60);
    let wasup = TestWasup::start(config).await;
    let session_id = wasup.start_session(1).await;
    wasup.scan(&session_id).await;
    laravel.wait_status(&session_id, "active").await;
    actix_rt::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(wasup.inspect(&session_id).await["state"], "active");

    wasup.disconnect(&session_id, "connection_lost").await;
    laravel.wait_status(&session_id, "inactive").await;
    // Ended without a logout: its record stays, bound to its user, its login kept.
    wasup.wait_stopped(&session_id).await;
}

#[actix_rt::test]
async fn a_session_past_its_max_lifetime_is_renewed_not_dropped() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.sessions.max_lifetime = Duration::from_millis(400);
    config.sessions.housekeeping_interval = Duration::from_millis(50);
    let wasup = TestWasup::start(config).await;
    let session_id = wasup.start_session(1).await;
    wasup.scan(&session_id).await;
    wait_until("renewed and connected again", PATIENCE, || async {
        let inspection = wasup.inspect(&session_id).await;
        inspection["renewals"].as_u64() >= Some(1) && inspection["state"] == "active"
    })
    .await;
    let inspection = wasup.inspect(&session_id).await;
    assert_eq!(inspection["restarts"], 0, "a renewal is not a crash");
    assert_eq!(laravel.status_of(&session_id).as_deref(), Some("active"));
    assert!(
        !laravel
            .statuses_received(&session_id)
            .contains(&"inactive".to_string())
    );
}
