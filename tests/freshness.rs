//! Black-box tests of QR freshness and request scheduling: expiry-aware forwarding, the storm
//! guard, deadlines, the adaptive request budget, the combined call, one rendering per QR, and
//! what `/health` says of Laravel. Simulated engine, stand-in Laravel, no Redis.

mod common;

use std::{collections::HashSet, time::Duration};

use common::{
    Behaviour, Laravel, PATIENCE, TestWasup, fast_config, service::assert_lane_accounting,
    wait_until,
};
use serde_json::Value;
use wasup::config::Config;
use wasup_actors::sink::Contract;

/// A QR's `expires_at` minus its `timestamp`, in ms.
fn lifetime_ms(item: &Value) -> i64 {
    item["expires_at"].as_i64().expect("expires_at")
        - item["timestamp"].as_i64().expect("timestamp")
}

fn distinct_qrs(laravel: &Laravel, session_id: &str) -> HashSet<String> {
    laravel
        .requests()
        .iter()
        .flat_map(|request| request.items_of("qrs"))
        .filter(|item| item["session_id"] == session_id)
        .filter_map(|item| item["qr"].as_str().map(str::to_string))
        .collect()
}

#[actix_rt::test]
async fn whatsapps_rotation_goes_out_at_once_with_each_qrs_expiry() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    // The default storm guard (5 s) must not hold a rotation whose QRs live 400 ms.
    config.sessions.qr_min_interval = Duration::from_secs(5);
    config.batch.qr_deadline = Duration::from_millis(100);
    config.engine.simulated.qr_refs = 4;
    config.engine.simulated.qr_first_ttl = Duration::from_millis(400);
    config.engine.simulated.qr_ttl = Duration::from_millis(400);
    let wasup = TestWasup::start(config).await;
    let session_id = wasup.start_session(1).await;

    wait_until("every rotated QR reaches Laravel", PATIENCE, || async {
        distinct_qrs(&laravel, &session_id).len() >= 4
    })
    .await;
    for request in laravel.requests_to("/qr/batch") {
        for item in request.items() {
            let lifetime = lifetime_ms(&item);
            assert!((350..=450).contains(&lifetime), "expires_at: {item}");
            assert!(
                item["expires_at"].as_u64() > Some(request.received_at_ms),
                "no QR arrives expired: {item}"
            );
        }
    }
    let inspection = wasup.inspect(&session_id).await;
    assert_eq!(inspection["actor"]["qr_forwarded"], 4, "{inspection}");
}

#[actix_rt::test]
async fn the_storm_guard_sends_the_newest_qr_when_its_interval_ends_and_renders_only_that() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.sessions.qr_min_interval = Duration::from_millis(800);
    config.batch.qr_deadline = Duration::from_millis(50);
    config.engine.simulated.qr_refs = 12;
    config.engine.simulated.qr_first_ttl = Duration::from_millis(100);
    config.engine.simulated.qr_ttl = Duration::from_millis(100);
    config.engine.simulated.qr_reported_validity = Duration::from_secs(20);
    let wasup = TestWasup::start(config).await;
    let session_id = wasup.start_session(1).await;

    wait_until("two QRs reach Laravel", PATIENCE, || async {
        laravel.requests_to("/qr/batch").len() >= 2
    })
    .await;
    let inspection = wasup.inspect(&session_id).await;
    assert!(
        inspection["actor"]["qr_count"].as_u64() >= Some(8),
        "{inspection}"
    );
    assert_eq!(inspection["actor"]["qr_forwarded"], 2);
    assert_eq!(
        inspection["actor"]["qr_rendered"], 2,
        "the QRs the guard replaced were never rendered"
    );
    // The 12 QRs run out at 1.2 s: the session expires with a QR still held, never sent.
    laravel.wait_status(&session_id, "expired").await;
    let requests = laravel.requests_to("/qr/batch");
    assert_eq!(
        requests.len(),
        2,
        "first QR at once, the newest at the interval's end, nothing more"
    );
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(700),
        "trailing edge waits for the interval: {gap:?}"
    );
    assert_ne!(requests[0].items()[0]["qr"], requests[1].items()[0]["qr"]);
}

#[actix_rt::test]
async fn a_qr_that_would_reach_laravel_expired_is_not_sent() {
    let laravel = Laravel::start().await;
    laravel.set_behaviour(Behaviour::Fail(503));
    let mut config = fast_config(&laravel.url);
    config.engine.simulated.qr_refs = 3;
    config.engine.simulated.qr_first_ttl = Duration::from_millis(300);
    config.engine.simulated.qr_ttl = Duration::from_millis(300);
    config.batch.qr_deadline = Duration::from_millis(50);
    let wasup = TestWasup::start(config).await;
    let session_id = wasup.start_session(1).await;

    wait_until("QRs expire while Laravel fails", PATIENCE, || async {
        wasup.batch_metrics().await["qr"]["expired"].as_u64() >= Some(1)
    })
    .await;
    laravel.set_behaviour(Behaviour::Store);
    laravel.wait_status(&session_id, "expired").await;
    for request in laravel.requests_to("/qr/batch") {
        if request.answered != 200 {
            continue;
        }
        for item in request.items() {
            assert!(
                item["expires_at"].as_u64() > Some(request.received_at_ms),
                "an expired QR reached Laravel: {item}"
            );
        }
    }
    let metrics = wasup.batch_metrics().await;
    assert_lane_accounting(&metrics);
}

#[actix_rt::test]
async fn items_wait_for_company_until_their_deadline() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.batch.qr_deadline = Duration::from_millis(800);
    let wasup = TestWasup::start(config).await;
    let mut sessions = Vec::new();
    for user in 0..3 {
        sessions.push(wasup.start_session(user).await);
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until("a QR batch arrives", PATIENCE, || async {
        !laravel.requests_to("/qr/batch").is_empty()
    })
    .await;
    let first = &laravel.requests_to("/qr/batch")[0];
    assert_eq!(
        first.items().len(),
        3,
        "QRs that appeared within the deadline share one request"
    );
}

fn budget_config(laravel: &Laravel) -> Config {
    let mut config = fast_config(&laravel.url);
    config.laravel.max_in_flight = 2;
    config.laravel.max_requests_per_second = 5.0;
    config.laravel.timeout = Duration::from_secs(5);
    config.batch.qr_deadline = Duration::from_millis(100);
    config.batch.status_interval = Duration::from_millis(100);
    config.engine.simulated.qr_refs = 1000;
    config.engine.simulated.qr_first_ttl = Duration::from_millis(150);
    config.engine.simulated.qr_ttl = Duration::from_millis(150);
    config.engine.simulated.qr_reported_validity = Duration::from_secs(20);
    config
}

#[actix_rt::test]
async fn the_request_budget_shrinks_when_laravel_slows_and_grows_back_as_it_recovers() {
    let laravel = Laravel::start().await;
    laravel.set_latency(Duration::from_millis(10));
    let wasup = TestWasup::start(budget_config(&laravel)).await;
    for user in 0..4 {
        wasup.start_session(user).await;
    }
    let budget = || async { wasup.batch_metrics().await["budget"].clone() };
    wait_until("requests flow", PATIENCE, || async {
        laravel.requests().len() >= 5
    })
    .await;
    assert_eq!(budget().await["decreases"], 0);

    laravel.set_latency(Duration::from_millis(800));
    wait_until("the budget is cut", PATIENCE, || async {
        budget().await["decreases"].as_u64() >= Some(1)
    })
    .await;
    let cut = budget().await;
    assert!(
        cut["rate_per_second"].as_f64() < Some(5.0),
        "slower starts after a slow answer: {cut}"
    );
    let statuses_while_slow = laravel.requests().len();

    laravel.set_latency(Duration::from_millis(10));
    wait_until("the budget grows back to its maximum", PATIENCE, || async {
        let budget = budget().await;
        budget["rate_per_second"].as_f64() == Some(5.0) && budget["concurrency_limit"] == 2
    })
    .await;
    assert!(laravel.requests().len() > statuses_while_slow);
    let requests = laravel.requests();
    let window = requests.last().expect("requests").at - requests[0].at;
    // 5 per second, plus the burst of 2: never more, whatever the load.
    let allowed = (window.as_secs_f64() * 5.0).ceil() as usize + 2;
    assert!(
        requests.len() <= allowed,
        "{} requests in {window:?}",
        requests.len()
    );
}

#[actix_rt::test]
async fn the_combined_contract_carries_every_due_lane_in_one_request() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.laravel.contract = Contract::Combined;
    let wasup = TestWasup::start(config).await;
    let first = wasup.start_session(1).await;
    let refused = wasup.start_session(2).await;
    laravel.set_behaviour(Behaviour::FailIds(HashSet::from([refused.clone()])));
    laravel.wait_status(&first, "pending").await;
    laravel.wait_qr(&first).await;

    let requests = laravel.requests();
    assert!(
        requests.iter().all(|request| request.is_combined()),
        "only the combined call"
    );
    assert!(
        requests.iter().any(|request| {
            !request.items_of("qrs").is_empty() && !request.items_of("statuses").is_empty()
        }),
        "a request carries QRs and statuses together"
    );
    let retried = || {
        laravel
            .requests()
            .iter()
            .flat_map(|request| request.items_of("qrs"))
            .filter(|item| item["session_id"] == refused.as_str())
            .count()
    };
    wait_until("the refused session's QR is retried", PATIENCE, || async {
        retried() >= 2
    })
    .await;
    laravel.set_behaviour(Behaviour::Store);
    laravel.wait_qr(&refused).await;
    laravel.wait_status(&refused, "pending").await;
    assert_lane_accounting(&wasup.batch_metrics().await);
}

#[actix_rt::test]
async fn a_combined_request_carries_more_of_a_lane_than_the_split_cap() {
    let laravel = Laravel::start().await;
    let mut config = fast_config(&laravel.url);
    config.laravel.contract = Contract::Combined;
    config.batch.max_items = 5;
    config.batch.max_items_combined = 40;
    config.batch.qr_deadline = Duration::from_secs(2);
    config.batch.status_interval = Duration::from_secs(2);
    let wasup = TestWasup::start(config).await;
    let mut sessions = Vec::new();
    for user in 0..30 {
        sessions.push(wasup.start_session(user).await);
    }
    for session in &sessions {
        laravel.wait_qr(session).await;
    }
    let most_qrs = laravel
        .requests()
        .iter()
        .map(|request| request.items_of("qrs").len())
        .max()
        .unwrap_or(0);
    assert!(
        most_qrs > 5,
        "a combined request carried at most {most_qrs} QRs: a lane filling up to the split cap sent early"
    );
    assert!(most_qrs <= 40, "{most_qrs} QRs in one request");
}

#[actix_rt::test]
async fn the_qr_api_serves_the_rendering_laravel_got() {
    let laravel = Laravel::start().await;
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    let session_id = wasup.start_session(1).await;
    laravel.wait_qr(&session_id).await;
    let sent = laravel.qr_of(&session_id).expect("qr")["qr"].clone();
    for _ in 0..5 {
        let (status, body) = wasup.get(&format!("/sessions/{session_id}/qr")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["qr"], sent);
    }
    let inspection = wasup.inspect(&session_id).await;
    assert_eq!(inspection["actor"]["qr_rendered"], 1, "{inspection}");
}

#[actix_rt::test]
async fn health_says_when_laravel_is_unreachable() {
    let laravel = Laravel::start().await;
    laravel.set_behaviour(Behaviour::Fail(500));
    let wasup = TestWasup::start(fast_config(&laravel.url)).await;
    let (_, health) = wasup.get("/health").await;
    assert_eq!(health["laravel"], "untried");
    wasup.start_session(1).await;
    wait_until("health reports Laravel unreachable", PATIENCE, || async {
        let (_, health) = wasup.get("/health").await;
        health["laravel"] == "unreachable" && health["status"] == "degraded"
    })
    .await;
    laravel.set_behaviour(Behaviour::Store);
    wait_until("health reports Laravel reachable", PATIENCE, || async {
        let (_, health) = wasup.get("/health").await;
        health["laravel"] == "reachable" && health["status"] == "ok"
    })
    .await;
}
