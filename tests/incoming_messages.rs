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

/// Sends `texts` in a burst (one batch) and waits until Laravel stores every text but `bad`.
async fn burst_with_one_bad(wasup: &TestWasup, laravel: &Laravel, session_id: &str, bad: &str) {
    let texts: Vec<String> = (0..9)
        .map(|n| format!("bueno {n}"))
        .chain([bad.to_string()])
        .collect();
    for text in &texts {
        receive(wasup, session_id, text).await;
    }
    wait_for_messages(laravel, session_id, texts.len() - 1).await;
    wait_until("the bad message is dead-lettered", PATIENCE, || async {
        wasup.batch_metrics().await["message"]["dead_lettered"] == 1
    })
    .await;
}

/// `GET /dead-letters`'s only item, checked to carry no message text.
async fn only_dead_letter(wasup: &TestWasup, bad: &str) -> Value {
    let (status, listed) = wasup.get("/dead-letters").await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["total"], 1, "{listed}");
    assert!(
        !listed.to_string().contains(bad),
        "dead letters are listed without their content: {listed}"
    );
    listed["items"][0].clone()
}

#[actix_rt::test]
async fn a_batch_laravel_refuses_is_narrowed_down_to_the_bad_message_which_is_replayed_later() {
    let laravel = Laravel::start().await;
    laravel.set_behaviour(Behaviour::RefuseBatchesHolding(
        ["veneno".to_string()].into(),
    ));
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    let session_id = paired_session(&wasup, &laravel, 1).await;
    burst_with_one_bad(&wasup, &laravel, &session_id, "veneno").await;
    assert!(
        !texts(&laravel.messages_of(&session_id)).contains(&"veneno"),
        "Laravel never stored it"
    );
    let refused = laravel
        .requests_to("/whatsapp/messages/batch")
        .into_iter()
        .filter(|request| request.answered == 422)
        .map(|request| request.items().len())
        .collect::<Vec<_>>();
    assert!(
        refused.iter().any(|items| *items > 1) && refused.contains(&1),
        "a refused batch of several was split down to the bad one: {refused:?}"
    );
    let letter = only_dead_letter(&wasup, "veneno").await;
    assert_eq!(letter["lane"], "message");
    assert_eq!(letter["session_id"], session_id.as_str());
    assert_eq!(letter["status"], 422);
    assert!(
        letter["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("65535 characters")),
        "Laravel's first validation error: {letter}"
    );
    assert_eq!(
        wasup.get("/dead-letters?lane=qr").await.1["items"],
        json!([]),
        "filtered by lane"
    );

    laravel.set_behaviour(Behaviour::Store);
    let (status, answer) = wasup
        .post("/dead-letters/replay", &json!({"lane": "message"}))
        .await;
    assert_eq!((status, answer), (200, json!({"replayed": 1})));
    wait_for_messages(&laravel, &session_id, 10).await;
    assert_eq!(wasup.get("/dead-letters").await.1["total"], 0);
    let metrics = wasup.batch_metrics().await;
    common::service::assert_lane_accounting(&metrics);
    assert_eq!(
        wasup
            .post("/dead-letters/replay", &json!({"lane": "nope"}))
            .await
            .0,
        400
    );
}

#[actix_rt::test]
async fn an_item_the_drop_in_rejects_is_dead_lettered_at_once_with_its_reason() {
    let laravel = Laravel::start().await;
    laravel.set_behaviour(Behaviour::RejectIds(["demasiado largo".to_string()].into()));
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    let session_id = paired_session(&wasup, &laravel, 1).await;
    let before = laravel.requests_to("/whatsapp/messages/batch").len();
    burst_with_one_bad(&wasup, &laravel, &session_id, "demasiado largo").await;
    let letter = only_dead_letter(&wasup, "demasiado largo").await;
    assert_eq!(letter["status"], 200, "refused inside an accepted batch");
    assert_eq!(
        letter["reason"],
        "The text must not be greater than 65536 characters."
    );
    actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
    let requests = laravel.requests_to("/whatsapp/messages/batch").len() - before;
    assert!(requests <= 3, "not retried, not split: {requests} requests");
}

#[actix_rt::test]
async fn message_ids_are_told_apart_by_chat_and_sender_and_a_redelivery_is_one_message() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    let session_id = paired_session(&wasup, &laravel, 1).await;
    // Laravel fails meanwhile, so all four wait in the lane together (where a shared key would
    // fold them into one).
    laravel.set_behaviour(Behaviour::Fail(503));
    let group = "120363000000000001@g.us";
    for (from, chat, text) in [
        ("34600000001", None, "direct"),
        ("34600000001", Some(group), "in the group"),
        ("34600000002", Some(group), "another sender, same group"),
        ("34600000002", Some(group), "redelivered"),
    ] {
        let mut body = json!({"from": from, "text": text, "message_id": "3EB0SAME"});
        if let Some(chat) = chat {
            body["chat"] = json!(chat);
        }
        let (status, answer) = wasup
            .post(&format!("/sessions/{session_id}/simulate/message"), &body)
            .await;
        assert_eq!(status, 202, "{answer}");
    }
    wait_until("the four are accepted", PATIENCE, || async {
        wasup.batch_metrics().await["message"]["received"] == 4
    })
    .await;
    laravel.set_behaviour(Behaviour::Store);
    wait_for_messages(&laravel, &session_id, 3).await;
    wait_until("every item settled", PATIENCE, || async {
        wasup.batch_metrics().await["message"]["pending"] == 0
    })
    .await;
    let stored = laravel.messages_of(&session_id);
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert!(
        texts(&stored).contains(&"direct") && texts(&stored).contains(&"in the group"),
        "one id in two chats is two messages: {stored:?}"
    );
    let metrics = wasup.batch_metrics().await;
    assert_eq!(
        metrics["message"]["coalesced"], 1,
        "only the redelivery is folded into its first copy: {metrics}"
    );
    common::service::assert_lane_accounting(&metrics);
}

#[actix_rt::test]
async fn a_backlog_holding_many_bad_messages_loses_none_of_the_good_ones() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    let session_id = paired_session(&wasup, &laravel, 1).await;
    // An outage first: the messages pile up into one backlog batch.
    laravel.set_behaviour(Behaviour::Fail(503));
    let texts_sent: Vec<String> = (0..48)
        .map(|n| {
            if n % 6 == 3 {
                format!("veneno {n}")
            } else {
                format!("bueno {n}")
            }
        })
        .collect();
    for text in &texts_sent {
        receive(&wasup, &session_id, text).await;
    }
    let bad: std::collections::HashSet<String> = texts_sent
        .iter()
        .filter(|text| text.starts_with("veneno"))
        .cloned()
        .collect();
    wait_until("the backlog waits in the outbox", PATIENCE, || async {
        wasup.batch_metrics().await["message"]["pending"].as_u64() == Some(48)
    })
    .await;
    // Laravel is back, with a validator that refuses any batch holding one of the 8 bad ones.
    laravel.set_behaviour(Behaviour::RefuseBatchesHolding(bad.clone()));
    wait_for_messages(&laravel, &session_id, texts_sent.len() - bad.len()).await;
    wait_until("the bad ones are dead-lettered", PATIENCE, || async {
        wasup.get("/dead-letters").await.1["total"] == bad.len()
    })
    .await;
    let stored = laravel.messages_of(&session_id);
    assert_eq!(stored.len(), 40, "every good message, once");
    assert!(texts(&stored).iter().all(|text| text.starts_with("bueno")));
}
