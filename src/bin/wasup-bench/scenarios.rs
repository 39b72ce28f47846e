//! The benchmark's five scenarios. Each starts what it needs (Redis, the counting Laravel,
//! wasup as a release binary), drives load, measures, and answers its figures as JSON.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::{
    coverage,
    laravel::CountingLaravel,
    load::{Api, SEEDS_MIX, churn, wrk},
    processes::{RedisProcess, WasupProcess},
};

/// Sizes and durations of a run.
pub struct Plan {
    /// The one-minute version.
    pub quick: bool,
    /// Session counts for the scale scenario, when given (else its defaults).
    pub scale_sizes: Vec<usize>,
    /// The seeds' scenario's modes to run (wasup, combined, naive).
    pub seeds_modes: Vec<String>,
}

impl Plan {
    fn seeds_sessions(&self) -> usize {
        if self.quick { 300 } else { 3000 }
    }
    fn warmup(&self) -> Duration {
        Duration::from_secs(if self.quick { 5 } else { 20 })
    }
    fn window(&self) -> Duration {
        Duration::from_secs(if self.quick { 15 } else { 90 })
    }
    fn scale_sizes(&self) -> Vec<usize> {
        if !self.scale_sizes.is_empty() {
            self.scale_sizes.clone()
        } else if self.quick {
            vec![2_000]
        } else {
            vec![10_000, 30_000, 100_000]
        }
    }
    fn scale_window(&self) -> Duration {
        Duration::from_secs(if self.quick { 5 } else { 20 })
    }
    fn wrk_seconds(&self) -> u32 {
        if self.quick { 3 } else { 10 }
    }
    fn outage(&self) -> Duration {
        Duration::from_secs(if self.quick { 10 } else { 60 })
    }
}

/// Laravel's answer time in the seeds' scenario, as the issue asks.
const LARAVEL_LATENCY: Duration = Duration::from_millis(100);

fn env(
    laravel: &CountingLaravel,
    redis: Option<&RedisProcess>,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("LARAVEL_API", laravel.url.clone()),
        ("WASUP__SESSIONS__MAX_ACTIVE", "1000000".to_string()),
        ("WASUP__SESSIONS__RECONNECT_BASE", "200ms".to_string()),
    ];
    match redis {
        Some(redis) => env.push(("REDIS_URL", redis.url())),
        None => env.push(("WASUP__REDIS__ENABLED", "false".to_string())),
    }
    env.extend(
        extra
            .iter()
            .map(|(name, value)| (*name, (*value).to_string())),
    );
    env
}

/// What the seeds' old Node service did: every event its own request, at once, to the legacy
/// single-item endpoints; `pending` again with every QR; no throttle, no batching, no cache.
const NAIVE: &[(&str, &str)] = &[
    ("WASUP__LARAVEL__SINGLE_ITEM_CALLS", "true"),
    ("WASUP__LARAVEL__MIN_REQUEST_GAP", "0s"),
    ("WASUP__LARAVEL__MAX_IN_FLIGHT", "1000"),
    ("WASUP__LARAVEL__MAX_REQUESTS_PER_SECOND", "100000"),
    ("WASUP__LARAVEL__RETRIES", "0"),
    ("WASUP__BATCH__MAX_ITEMS", "200"),
    ("WASUP__BATCH__QR_DEADLINE", "1ms"),
    ("WASUP__BATCH__STATUS_INTERVAL", "1ms"),
    ("WASUP__BATCH__PRIORITY_DELAY", "2ms"),
    ("WASUP__SESSIONS__QR_MIN_INTERVAL", "0s"),
    ("WASUP__SESSIONS__STATUS_WITH_EVERY_QR", "true"),
];

/// p50/p95/p99/max of latencies in ms.
fn percentiles(mut samples: Vec<u64>) -> Value {
    if samples.is_empty() {
        return json!({"count": 0});
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    json!({"count": samples.len(), "p50_ms": at(0.5), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": samples[samples.len() - 1]})
}

/// QRs made per second over the window: the mean, and the busiest second (sessions started
/// together rotate together, so QRs come in waves).
fn qr_waves(made_ms: &[u64], seconds: f64) -> Value {
    let mut per_second: HashMap<u64, u64> = HashMap::new();
    for made in made_ms {
        *per_second.entry(made / 1000).or_default() += 1;
    }
    json!({
        "mean": made_ms.len() as f64 / seconds,
        "busiest_second": per_second.values().max().copied().unwrap_or(0),
    })
}

/// wasup with the combined contract: every lane in one request.
const COMBINED: &[(&str, &str)] = &[("WASUP__LARAVEL__CONTRACT", "combined")];

/// 1 and 2: the seeds' scenario, wasup as designed (split and combined contracts) and naive,
/// then latency per item and QR coverage.
pub async fn seeds(plan: &Plan) -> anyhow::Result<Value> {
    let sessions = plan.seeds_sessions();
    let mut runs = serde_json::Map::new();
    for mode in ["wasup", "combined", "naive"] {
        if !plan.seeds_modes.iter().any(|wanted| wanted == mode) {
            continue;
        }
        let laravel = CountingLaravel::start()?;
        laravel.set_latency(LARAVEL_LATENCY);
        let redis = if mode == "naive" {
            None
        } else {
            Some(RedisProcess::start()?)
        };
        let extra = match mode {
            "naive" => NAIVE,
            "combined" => COMBINED,
            _ => &[],
        };
        let mut wasup = WasupProcess::start(&env(&laravel, redis.as_ref(), extra))?;
        let api = Api::new(&wasup.base);
        api.wait_ready(Duration::from_secs(30)).await?;
        api.start_sessions(sessions, 64).await?;
        churn(&api, sessions, &SEEDS_MIX, plan.warmup()).await?;
        laravel.take();
        let cpu_before = wasup.cpu_seconds();
        let started = Instant::now();
        let (actions, qr_coverage) = futures_util::join!(
            churn(&api, sessions, &SEEDS_MIX, plan.window()),
            coverage::sample(&api, &laravel, plan.window()),
        );
        let actions = actions?;
        let counts = laravel.take();
        let seconds = started.elapsed().as_secs_f64();
        let cpu = wasup.cpu_seconds() - cpu_before;
        // The write-behind window: how long accepted items waited to be in Redis.
        let write_delay = api.get("/health").await?["outbox"]["write_delay_ms"].clone();
        // How the request budget stood (limits, decreases, urgent reserve starts).
        let budget = match mode {
            "naive" => Value::Null,
            _ => api.get("/metrics/batch").await?["budget"].clone(),
        };
        runs.insert(
            mode.into(),
            json!({
                "requests_per_second": counts.total_requests() as f64 / seconds,
                "items_per_second": counts.items as f64 / seconds,
                "bytes_per_second": counts.bytes as f64 / seconds,
                "requests_by_path": counts.requests,
                "window_seconds": seconds,
                "actions": actions,
                "cpu_percent_of_one_core": cpu / seconds * 100.0,
                "rss_mib": wasup.rss_kib() as f64 / 1024.0,
                "latency_urgent": percentiles(counts.urgent_latency_ms),
                "latency_normal": percentiles(counts.normal_latency_ms),
                "qr_coverage": qr_coverage,
                "qr_made_per_second": qr_waves(&counts.qr_made_ms, seconds),
                "qr_age_at_arrival": percentiles(counts.qr_age_ms),
                "expired_qrs_delivered": counts.expired_qrs,
                "outbox_write_delay_ms": write_delay,
                "budget": budget,
            }),
        );
        wasup.terminate().await?;
        laravel.stop().await;
    }
    let rate = |mode: &str| runs.get(mode)?["requests_per_second"].as_f64();
    let ratio_to = |mode: &str| match (rate("naive"), rate(mode)) {
        (Some(naive), Some(rate)) if rate > 0.0 => Some(naive / rate),
        (Some(_), Some(_)) => Some(f64::INFINITY),
        _ => None,
    };
    let (ratio, combined_ratio) = (ratio_to("wasup"), ratio_to("combined"));
    Ok(json!({
        "sessions": sessions,
        "clock": "real time (no speed-up): QR rotation 60 s then 20 s, QR deadline 1 s, urgent 500 ms, budget 2 in flight / 5 req/s (adaptive), batch 50",
        "laravel_latency_ms": LARAVEL_LATENCY.as_millis() as u64,
        "mix_per_1000_sessions_per_second": {"scans": SEEDS_MIX.scans, "drops": SEEDS_MIX.drops, "logouts": SEEDS_MIX.logouts},
        "runs": runs,
        "naive_to_wasup_request_ratio": ratio,
        "naive_to_combined_request_ratio": combined_ratio,
    }))
}

/// 3: many sessions on one node: start time, memory, CPU per 1k events/s, restore time.
pub async fn scale(plan: &Plan) -> anyhow::Result<Value> {
    let mut results = Vec::new();
    for size in plan.scale_sizes() {
        let laravel = CountingLaravel::start()?;
        let redis = RedisProcess::start()?;
        let extra = [
            ("WASUP__ENGINE__SIMULATED__QR_FIRST_TTL", "20s"),
            ("WASUP__ENGINE__SIMULATED__QR_TTL", "20s"),
            ("WASUP__ENGINE__SIMULATED__QR_REFS", "100000"),
            ("WASUP__SESSIONS__PENDING_TIMEOUT", "1h"),
            // What SIGTERM does not deliver stays in the Redis outbox: keep the restart short.
            ("WASUP__HTTP__SHUTDOWN_TIMEOUT", "5s"),
        ];
        let mut wasup = WasupProcess::start(&env(&laravel, Some(&redis), &extra))?;
        let api = Api::new(&wasup.base);
        api.wait_ready(Duration::from_secs(30))
            .await
            .context("scale: wasup ready")?;
        let idle_rss = wasup.rss_kib();
        let started = Instant::now();
        api.start_sessions(size, 128)
            .await
            .context("scale: starting sessions")?;
        let start_seconds = started.elapsed().as_secs_f64();
        actix_rt::time::sleep(plan.scale_window()).await;
        let rss_kib = wasup.rss_kib();
        let events = |metrics: &Value| {
            metrics["qr"]["received"].as_u64().unwrap_or(0)
                + metrics["status"]["received"].as_u64().unwrap_or(0)
        };
        let (cpu_before, events_before, window_start) = (
            wasup.cpu_seconds(),
            events(
                &api.get("/metrics/batch")
                    .await
                    .context("scale: metrics before")?,
            ),
            Instant::now(),
        );
        actix_rt::time::sleep(plan.scale_window()).await;
        let seconds = window_start.elapsed().as_secs_f64();
        let cpu_percent = (wasup.cpu_seconds() - cpu_before) / seconds * 100.0;
        let events_per_second = (events(
            &api.get("/metrics/batch")
                .await
                .context("scale: metrics after")?,
        ) - events_before) as f64
            / seconds;
        let threads = wasup.threads();
        let stop_started = Instant::now();
        wasup.terminate().await.context("scale: SIGTERM")?;
        let stop_seconds = stop_started.elapsed().as_secs_f64();
        let restore_started = Instant::now();
        wasup.start_again()?;
        let api = Api::new(&wasup.base);
        api.wait_ready(Duration::from_secs(60))
            .await
            .context("scale: ready after restart")?;
        while api.session_count().await.unwrap_or(0) < size as u64 {
            if restore_started.elapsed() > Duration::from_secs(300) {
                anyhow::bail!("{size} sessions were not restored within 300 s");
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
        let restore_seconds = restore_started.elapsed().as_secs_f64();
        results.push(json!({
            "sessions": size,
            "start_seconds": start_seconds,
            "rss_mib": rss_kib as f64 / 1024.0,
            "rss_kib_per_session": (rss_kib.saturating_sub(idle_rss)) as f64 / size as f64,
            "threads": threads,
            "events_per_second": events_per_second,
            "cpu_percent_of_one_core": cpu_percent,
            "cpu_percent_per_1k_events_per_second": if events_per_second > 0.0 { cpu_percent / (events_per_second / 1000.0) } else { f64::NAN },
            "shutdown_seconds": stop_seconds,
            "restore_seconds": restore_seconds,
        }));
        wasup.terminate().await.context("scale: terminate")?;
        laravel.stop().await;
    }
    Ok(json!({
        "schedule": "QR every 20 s per session (throttle 30 s), sessions never time out",
        "events": "items accepted by the batch queue (QR + status)",
        "sizes": results,
    }))
}

/// 4: the control API under wrk.
pub async fn control_api(plan: &Plan) -> anyhow::Result<Value> {
    let laravel = CountingLaravel::start()?;
    let redis = RedisProcess::start()?;
    let mut wasup = WasupProcess::start(&env(&laravel, Some(&redis), &[]))?;
    let api = Api::new(&wasup.base);
    api.wait_ready(Duration::from_secs(30)).await?;
    let ids = api.start_sessions(1000, 64).await?;
    let seconds = plan.wrk_seconds();
    let base = format!("http://127.0.0.1:{}", wasup.port());
    let health = wrk(&format!("{base}/health"), 64, seconds)?;
    let session = wrk(&format!("{base}/sessions/{}", ids[0]), 64, seconds)?;
    wasup.terminate().await?;
    laravel.stop().await;
    Ok(json!({"sessions": 1000, "health": health, "session_inspection": session}))
}

/// 5: Laravel down for a while under the seeds' load, then back.
pub async fn recovery(plan: &Plan) -> anyhow::Result<Value> {
    let sessions = plan.seeds_sessions();
    let laravel = CountingLaravel::start()?;
    laravel.set_latency(LARAVEL_LATENCY);
    let redis = RedisProcess::start()?;
    let mut wasup = WasupProcess::start(&env(&laravel, Some(&redis), &[]))?;
    let api = Api::new(&wasup.base);
    api.wait_ready(Duration::from_secs(30)).await?;
    api.start_sessions(sessions, 64).await?;
    churn(&api, sessions, &SEEDS_MIX, plan.warmup()).await?;

    laravel.set_failing(Some(503));
    let outage = plan.outage();
    let churning = {
        let api = api.clone();
        actix_rt::spawn(async move { churn(&api, sessions, &SEEDS_MIX, outage).await })
    };
    let mut rss_mib = Vec::new();
    let outage_started = Instant::now();
    while outage_started.elapsed() < outage {
        rss_mib.push(wasup.rss_kib() as f64 / 1024.0);
        actix_rt::time::sleep(outage / 6).await;
    }
    let _ = churning.await;
    let backlog = api.get("/metrics/batch").await?;
    let backlog_items = backlog["qr"]["pending"].as_u64().unwrap_or(0)
        + backlog["status"]["pending"].as_u64().unwrap_or(0);
    let requests_during_outage = laravel.take().total_requests();

    laravel.set_failing(None);
    let back = Instant::now();
    loop {
        let metrics = api.get("/metrics/batch").await?;
        let pending = metrics["qr"]["pending"].as_u64().unwrap_or(0)
            + metrics["status"]["pending"].as_u64().unwrap_or(0);
        let breaker_closed = api.get("/health").await?["circuitBreaker"]["state"] == "CLOSED";
        if breaker_closed && pending <= 50 {
            break;
        }
        if back.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("the backlog did not drain within 600 s");
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let drain_seconds = back.elapsed().as_secs_f64();
    let counts = laravel.take();
    let mut per_second = std::collections::BTreeMap::<u64, u64>::new();
    for arrival in &counts.arrivals_ms {
        *per_second.entry(arrival / 1000).or_default() += 1;
    }
    wasup.terminate().await?;
    laravel.stop().await;
    Ok(json!({
        "sessions": sessions,
        "outage_seconds": outage.as_secs(),
        "requests_during_outage": requests_during_outage,
        "backlog_items_at_recovery": backlog_items,
        "rss_mib_during_outage": rss_mib,
        "drain_seconds": drain_seconds,
        "drain_requests": counts.total_requests(),
        "drain_items": counts.items,
        "peak_requests_per_second_while_draining": per_second.values().max().copied().unwrap_or(0),
    }))
}
