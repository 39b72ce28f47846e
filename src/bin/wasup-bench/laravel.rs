//! A counting stand-in for Laravel: answers every call of the contract (batch and legacy),
//! optionally after a delay or with a failure, and counts requests, items, bytes and each
//! item's latency (arrival minus the item's event `timestamp`); keeps the latest QR of every
//! session (as a digest) so QR coverage can be sampled against what the sessions show.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, dev::ServerHandle, web};
use serde_json::{Value, json};
use wasup_actors::{messages::unix_millis, session::fnv1a};

/// What the stand-in has seen since the last [`CountingLaravel::take`].
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Requests, by path.
    pub requests: HashMap<String, u64>,
    /// Items received.
    pub items: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// Latencies (ms) of urgent statuses (`active`, `inactive`, `expired`).
    pub urgent_latency_ms: Vec<u64>,
    /// Latencies (ms) of QRs and `pending` statuses.
    pub normal_latency_ms: Vec<u64>,
    /// Arrival time (ms since the epoch) of every request, for peak rates.
    pub arrivals_ms: Vec<u64>,
    /// Age of each QR when it arrived (arrival minus the QR's `timestamp`), in ms.
    pub qr_age_ms: Vec<u64>,
    /// When each QR that arrived was made (its `timestamp`, ms since the epoch): how bursty
    /// the QR load is (sessions started together rotate together).
    pub qr_made_ms: Vec<u64>,
    /// QRs that arrived at or after their `expires_at` (a dead QR shown to a user).
    pub expired_qrs: u64,
}

impl Counts {
    /// All requests.
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }
}

#[derive(Default)]
struct State {
    counts: Mutex<Counts>,
    latency: Mutex<Duration>,
    failing: Mutex<Option<u16>>,
    /// Session → digest of the latest QR stored.
    latest_qrs: Mutex<HashMap<String, u64>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The running stand-in.
pub struct CountingLaravel {
    /// `http://127.0.0.1:PORT/api`.
    pub url: String,
    state: Arc<State>,
    server: ServerHandle,
}

impl CountingLaravel {
    /// Starts it on a free loopback port.
    pub fn start() -> anyhow::Result<Self> {
        let state = Arc::new(State::default());
        let data = web::Data::from(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(64 << 20))
                .route("/api/qr/batch", web::post().to(receive))
                .route("/api/whatsapp/status/batch", web::post().to(receive))
                .route("/api/whatsapp/events/batch", web::post().to(receive))
                .route("/api/qr", web::post().to(receive))
                .route("/api/whatsapp/status", web::post().to(receive))
                .route(
                    "/api/whatsapp/status/{id}",
                    web::get()
                        .to(|| async { HttpResponse::Ok().json(json!({"estado_qr": "active"})) }),
                )
        })
        .workers(2)
        .disable_signals()
        .bind("127.0.0.1:0")?;
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Ok(Self {
            url: format!("http://{addr}/api"),
            state,
            server: handle,
        })
    }

    /// Delay before every answer.
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.state.latency) = latency;
    }

    /// Answer every batch call with this status (`None`: store again).
    pub fn set_failing(&self, status: Option<u16>) {
        *lock(&self.state.failing) = status;
    }

    /// Takes the counts so far and starts counting afresh.
    pub fn take(&self) -> Counts {
        std::mem::take(&mut *lock(&self.state.counts))
    }

    /// Digest (FNV-1a of the data URL) of the latest QR stored for a session.
    pub fn latest_qr_digest(&self, session_id: &str) -> Option<u64> {
        lock(&self.state.latest_qrs).get(session_id).copied()
    }

    /// Stops the server.
    pub async fn stop(&self) {
        self.server.stop(false).await;
    }
}

async fn receive(state: web::Data<State>, request: HttpRequest, body: web::Bytes) -> HttpResponse {
    let latency = *lock(&state.latency);
    if !latency.is_zero() {
        actix_rt::time::sleep(latency).await;
    }
    let arrival = unix_millis();
    let failing = *lock(&state.failing);
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut items: Vec<Value> = ["qrs", "statuses", "messages"]
        .iter()
        .filter_map(|key| parsed.get(*key).and_then(Value::as_array).cloned())
        .flatten()
        .collect();
    if items.is_empty() {
        items.push(parsed.clone());
    }
    {
        let mut counts = lock(&state.counts);
        *counts
            .requests
            .entry(request.path().to_string())
            .or_default() += 1;
        counts.bytes += body.len() as u64;
        counts.arrivals_ms.push(arrival);
        if failing.is_none() {
            counts.items += items.len() as u64;
            let mut latest_qrs = lock(&state.latest_qrs);
            for item in &items {
                if let (Some(session), Some(qr)) =
                    (item["session_id"].as_str(), item["qr"].as_str())
                {
                    latest_qrs.insert(session.to_string(), fnv1a(qr));
                    if let Some(timestamp) = item["timestamp"].as_u64() {
                        counts.qr_age_ms.push(arrival.saturating_sub(timestamp));
                        counts.qr_made_ms.push(timestamp);
                    }
                    if item["expires_at"]
                        .as_u64()
                        .is_some_and(|expires| expires <= arrival)
                    {
                        counts.expired_qrs += 1;
                    }
                }
                let Some(timestamp) = item["timestamp"].as_u64() else {
                    continue;
                };
                let latency = arrival.saturating_sub(timestamp);
                match item["estado_qr"].as_str() {
                    Some("active" | "inactive" | "expired") => {
                        counts.urgent_latency_ms.push(latency)
                    }
                    _ => counts.normal_latency_ms.push(latency),
                }
            }
        }
    }
    match failing {
        Some(status) => HttpResponse::build(
            actix_web::http::StatusCode::from_u16(status)
                .unwrap_or(actix_web::http::StatusCode::SERVICE_UNAVAILABLE),
        )
        .finish(),
        None => {
            HttpResponse::Ok().json(json!({"success": true, "updated": items.len(), "failed": 0}))
        }
    }
}
