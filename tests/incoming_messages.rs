//! Incoming WhatsApp messages reach Laravel's `POST /whatsapp/messages/batch`: batched, each one
//! delivered (no coalescing), in order per session, retried by message id, and kept in the Redis
//! outbox across a restart while Laravel is down. Driven by the simulated engine's message hook.

mod common;

use common::{
    Behaviour, Laravel, PATIENCE, TestWasup, fast_config, redis::RedisServer, wait_until,
};
use serde_json::{Value, json};

async fn paired_session(wasup: &TestWasup, laravel: &Laravel, user_id: u64) -> String {
    let session_id = wasup.start_session(user_id).await;
    laravel.wait_qr(&session_id).await;
    wasup.scan(&session_id).await;
    laravel.wait_status(&session_id, "active").await;
    session_id
}

async fn receive(wasup: &TestWasup, session_id: &str, text: &str) {
    let (status, body) = wasup
        .post(
            &format!("/sessions/{session_id}/simulate/message"),
            &json!({"from": "34600000001", "text": text}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

fn texts(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .filter_map(|message| message["text"].as_str())
        .collect()
}

async fn wait_for_messages(laravel: &Laravel, session_id: &str, count: usize) {
    wait_until("Laravel stores the messages", PATIENCE, || async {
        laravel.messages_of(session_id).len() >= count
    })
    .await;
}

#[actix_rt::test]
async fn every_message_reaches_laravel_in_order_in_few_requests() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    let session_id = paired_session(&wasup, &laravel, 1).await;
    let sent: Vec<String> = (0..12).map(|n| format!("hola {n}")).collect();
    for text in &sent {
        receive(&wasup, &session_id, text).await;
    }
    wait_for_messages(&laravel, &session_id, sent.len()).await;

    let stored = laravel.messages_of(&session_id);
    assert_eq!(
        texts(&stored),
        sent.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let first = &stored[0];
    assert_eq!(first["from"], "34600000001@s.whatsapp.net");
    assert_eq!(first["type"], "text");
    assert!(
        first["message_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert!(
        first["to"]
            .as_str()
            .is_some_and(|to| to.ends_with("@s.whatsapp.net"))
    );
    assert!(first["timestamp"].as_u64().is_some());
    let requests = laravel.requests_to("/whatsapp/messages/batch");
    assert!(
        requests.len() < sent.len(),
        "{} requests for {} messages",
        requests.len(),
        sent.len()
    );
    assert!(
        requests
            .iter()
            .all(|request| request.body["messages"].is_array())
    );
    assert_eq!(
        wasup.inspect(&session_id).await["actor"]["messages_received"],
        12
    );
    let metrics = wasup.batch_metrics().await;
    assert_eq!(metrics["message"]["sent"], 12, "{metrics}");
    assert_eq!(metrics["message"]["coalesced"], 0, "{metrics}");
}

#[actix_rt::test]
async fn a_message_laravel_could_not_store_is_retried_by_its_id() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    let session_id = paired_session(&wasup, &laravel, 2).await;
    receive(&wasup, &session_id, "first").await;
    wait_for_messages(&laravel, &session_id, 1).await;
    let first_id = laravel.messages_of(&session_id)[0]["message_id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_default();

    // Laravel refuses to store messages with a given id; the others of the batch go through.
    laravel.set_behaviour(Behaviour::FailIds([first_id].into()));
    receive(&wasup, &session_id, "second").await;
    wait_for_messages(&laravel, &session_id, 2).await;
    assert_eq!(
        texts(&laravel.messages_of(&session_id)),
        ["first", "second"]
    );
}

#[actix_rt::test]
async fn messages_accepted_while_laravel_is_down_survive_a_restart() {
    let laravel = Laravel::start().await;
    let redis = RedisServer::start();
    let mut config = fast_config(&laravel.url);
    config.redis.url = redis.url();
    config.http.shutdown_timeout = std::time::Duration::from_millis(500);
    let mut first_run = TestWasup::start(config.clone()).await;
    let session_id = paired_session(&first_run, &laravel, 3).await;
    laravel.set_behaviour(Behaviour::Fail(503));
    for text in ["uno", "dos", "tres"] {
        receive(&first_run, &session_id, text).await;
    }
    wait_until("a delivery was attempted", PATIENCE, || async {
        !laravel.requests_to("/whatsapp/messages/batch").is_empty()
    })
    .await;
    first_run.shutdown().await;
    assert!(laravel.messages_of(&session_id).is_empty());

    laravel.set_behaviour(Behaviour::Store);
    let _second_run = TestWasup::start(config).await;
    wait_for_messages(&laravel, &session_id, 3).await;
    assert_eq!(
        texts(&laravel.messages_of(&session_id)),
        ["uno", "dos", "tres"]
    );
}
