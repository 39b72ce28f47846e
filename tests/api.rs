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
        for key in [None, Some("wrong"), Some(&API_KEY[..API_KEY.len() - 1])] {
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

#[actix_rt::test]
async fn the_current_qr_is_served_as_png_or_json_until_the_session_connects() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    let session_id = wasup.start_session(1).await;
    common::wait_until("a QR", common::PATIENCE, || async {
        wasup.inspect(&session_id).await["actor"]["qr_count"] == 1
    })
    .await;
    let (status, body) = wasup.get(&format!("/sessions/{session_id}/qr")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["qr"]
            .as_str()
            .is_some_and(|qr| qr.starts_with("data:image/png;base64,"))
    );
    assert!(
        body["raw"]
            .as_str()
            .is_some_and(|raw| raw.starts_with("2@"))
    );
    let expires_in = body["expires_in"].as_u64().expect("expires_in");
    assert!(
        (55..=60).contains(&expires_in),
        "the first QR lives 60 s: {expires_in}"
    );

    let client = awc::Client::default();
    let mut response = client
        .get(format!("{}/sessions/{session_id}/qr", wasup.base))
        .insert_header(("X-Api-Key", API_KEY))
        .insert_header(("Accept", "image/png"))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("image/png")
    );
    let png = response.body().await.expect("png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    wasup.scan(&session_id).await;
    laravel.wait_status(&session_id, "active").await;
    let (status, body) = wasup.get(&format!("/sessions/{session_id}/qr")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("no_qr")),
        "{body}"
    );
    assert_eq!(wasup.get("/sessions/nope/qr").await.0, 404);
}

#[actix_rt::test]
async fn a_pairing_code_is_given_for_a_valid_phone() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    let session_id = wasup.start_session(1).await;
    let (status, body) = wasup
        .post(
            &format!("/sessions/{session_id}/pair-code"),
            &json!({"phone": "+5215512345678"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let code = body["code"].as_str().expect("code");
    assert_eq!(code.len(), 9, "XXXX-XXXX: {code}");
    assert_eq!(code.as_bytes()[4], b'-');
    for bad in [
        json!({"phone": "12"}),
        json!({"phone": "55-12"}),
        json!({"telefono": "5215512345678"}),
        json!({"phone": 5}),
    ] {
        let (status, body) = wasup
            .post(&format!("/sessions/{session_id}/pair-code"), &bad)
            .await;
        assert_eq!(status, 400, "{bad} → {body}");
    }
    assert_eq!(
        wasup
            .post(
                "/sessions/nope/pair-code",
                &json!({"phone": "5215512345678"})
            )
            .await
            .0,
        404
    );
    wasup.scan(&session_id).await;
    laravel.wait_status(&session_id, "active").await;
    let (status, body) = wasup
        .post(
            &format!("/sessions/{session_id}/pair-code"),
            &json!({"phone": "5215512345678"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("engine_error")),
        "already paired: {body}"
    );
}

#[actix_rt::test]
async fn queued_messages_are_sent_retried_and_reported() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    let session_id = wasup.start_session(1).await;
    wasup.scan(&session_id).await;
    laravel.wait_status(&session_id, "active").await;
    let send = |text: &'static str| {
        let wasup = &wasup;
        let session_id = session_id.clone();
        async move {
            let (status, body) = wasup
                .post(
                    &format!("/sessions/{session_id}/messages"),
                    &json!({"to": "+5215500000000", "text": text}),
                )
                .await;
            assert_eq!(status, 202, "{body}");
            assert_eq!(body["state"], "queued");
            body["message_id"].as_str().expect("id").to_string()
        }
    };
    let state_of = |message_id: String| {
        let wasup = &wasup;
        let session_id = session_id.clone();
        async move {
            wasup
                .get(&format!("/sessions/{session_id}/messages/{message_id}"))
                .await
                .1
        }
    };

    let first = send("hola").await;
    common::wait_until("sent", common::PATIENCE, || async {
        state_of(first.clone()).await["state"] == "sent"
    })
    .await;
    let record = state_of(first.clone()).await;
    assert_eq!(record["attempts"], 1);
    assert!(record["whatsapp_id"].is_string());
    assert!(record.get("text").is_none(), "texts are never echoed");

    wasup
        .post(
            &format!("/sessions/{session_id}/simulate/fail-messages"),
            &json!({"count": 2}),
        )
        .await;
    let retried = send("otra vez").await;
    let chosen_id = state_of(retried.clone()).await["whatsapp_id"].clone();
    assert!(
        chosen_id
            .as_str()
            .is_some_and(|id| id.len() == 22 && id.starts_with("3EB0")),
        "the WhatsApp id is chosen before the first attempt: {chosen_id}"
    );
    common::wait_until("sent after retries", common::PATIENCE, || async {
        state_of(retried.clone()).await["state"] == "sent"
    })
    .await;
    let record = state_of(retried.clone()).await;
    assert_eq!(record["attempts"], 3);
    assert_eq!(
        record["whatsapp_id"], chosen_id,
        "every retry carried the same id, the one it was sent under"
    );
    assert!(
        record["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("simulated send failure"))
    );

    wasup
        .post(
            &format!("/sessions/{session_id}/simulate/fail-messages"),
            &json!({"count": 10}),
        )
        .await;
    let doomed = send("nunca").await;
    common::wait_until("given up", common::PATIENCE, || async {
        state_of(doomed.clone()).await["state"] == "failed"
    })
    .await;
    assert_eq!(
        state_of(doomed.clone()).await["attempts"],
        3,
        "1 try + 2 retries"
    );
    assert_eq!(
        wasup.inspect(&session_id).await["actor"]["messages_sent"],
        2
    );

    let health = wasup.get("/health").await.1;
    assert_eq!(health["queues"]["messageQueue"]["completed"], 2);
    assert_eq!(health["queues"]["messageQueue"]["failed"], 1);

    // Laravel hears every outcome in the messages lane.
    let outcome_of = |message_id: &str| {
        laravel
            .messages_of(&session_id)
            .into_iter()
            .find(|item| item["direction"] == "outgoing" && item["message_id"] == message_id)
    };
    common::wait_until(
        "Laravel has the three outcomes",
        common::PATIENCE,
        || async {
            [&first, &retried, &doomed]
                .iter()
                .all(|id| outcome_of(id).is_some())
        },
    )
    .await;
    let sent = outcome_of(&retried).expect("outcome");
    assert_eq!(sent["state"], "sent");
    assert_eq!(sent["whatsapp_id"], chosen_id);
    assert_eq!(sent["to"], "5215500000000@s.whatsapp.net");
    assert!(sent.get("text").is_none(), "no text goes back to Laravel");
    let failed = outcome_of(&doomed).expect("outcome");
    assert_eq!(failed["state"], "failed");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|error| error.contains("simulated send failure"))
    );

    let (status, _) = wasup
        .get(&format!("/sessions/{session_id}/messages/unknown"))
        .await;
    assert_eq!(status, 404);
    let other = wasup.start_session(2).await;
    let (status, _) = wasup
        .get(&format!("/sessions/{other}/messages/{first}"))
        .await;
    assert_eq!(status, 404, "another session cannot read it");
    for bad in [
        json!({"to": "abc", "text": "x"}),
        json!({"to": "5215500000000", "text": "  "}),
        json!({"to": "5215500000000"}),
    ] {
        let (status, body) = wasup
            .post(&format!("/sessions/{session_id}/messages"), &bad)
            .await;
        assert_eq!(status, 400, "{bad} → {body}");
    }
    let (status, _) = wasup
        .post(
            "/sessions/nope/messages",
            &json!({"to": "5215500000000", "text": "x"}),
        )
        .await;
    assert_eq!(status, 404);
}

#[actix_rt::test]
async fn a_message_to_a_session_that_is_not_connected_waits_for_it() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.messages.retries = 20;
    let wasup = TestWasup::start(config).await;
    let session_id = wasup.start_session(1).await;
    let (status, body) = wasup
        .post(
            &format!("/sessions/{session_id}/messages"),
            &json!({"to": "5215500000000", "text": "espera"}),
        )
        .await;
    assert_eq!(status, 202);
    let message_id = body["message_id"].as_str().expect("id").to_string();
    common::wait_until("retrying while pending", common::PATIENCE, || async {
        let record = wasup
            .get(&format!("/sessions/{session_id}/messages/{message_id}"))
            .await
            .1;
        record["attempts"].as_u64() >= Some(2)
            && record["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("not connected"))
    })
    .await;
    wasup.scan(&session_id).await;
    common::wait_until("sent once connected", common::PATIENCE, || async {
        wasup
            .get(&format!("/sessions/{session_id}/messages/{message_id}"))
            .await
            .1["state"]
            == "sent"
    })
    .await;
}

#[actix_rt::test]
async fn the_served_openapi_document_is_the_checked_in_one() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    let (status, _, served) = raw(
        &wasup.base,
        Method::GET,
        "/openapi.json",
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
            .expect("docs/openapi.json");
    assert!(
        served == checked_in,
        "docs/openapi.json is stale: run scripts/openapi"
    );
    let document: serde_json::Value = serde_json::from_str(&served).expect("JSON");
    for path in [
        "/start",
        "/sessions",
        "/sessions/{id}",
        "/sessions/{id}/qr",
        "/sessions/{id}/messages",
        "/health",
        "/metrics",
    ] {
        assert!(document["paths"][path].is_object(), "{path} documented");
    }
    assert_eq!(
        document["components"]["securitySchemes"]["api_key"]["name"],
        "X-Api-Key"
    );
}

#[actix_rt::test]
async fn a_full_message_queue_answers_503_with_retry_after() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.messages.max_queued = 1;
    // The first send fails and its retry comes only much later: it keeps the queue full.
    config.messages.backoff_base = Duration::from_secs(3600);
    config.messages.backoff_max = Duration::from_secs(3600);
    let wasup = TestWasup::start(config).await;
    let session_id = wasup.start_session(1).await;
    laravel.wait_qr(&session_id).await;
    wasup.scan(&session_id).await;
    laravel.wait_status(&session_id, "active").await;
    wasup
        .post(
            &format!("/sessions/{session_id}/simulate/fail-messages"),
            &json!({"count": 1}),
        )
        .await;
    let path = format!("/sessions/{session_id}/messages");
    let message = json!({"to": "34600000001", "text": "hola"});
    assert_eq!(wasup.post(&path, &message).await.0, 202);
    let mut refused = awc::Client::default()
        .post(format!("{}{path}", wasup.base))
        .insert_header(("X-Api-Key", API_KEY))
        .send_json(&message)
        .await
        .expect("answers");
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok()),
        Some("5"),
        "a client is told when to try again"
    );
    let body: serde_json::Value = refused.json().await.expect("JSON");
    assert_eq!(body["code"], "busy", "{body}");
}
