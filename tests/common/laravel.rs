//! A stand-in for Laravel: a real actix-web server on port 0 that answers the SPEC §2 calls,
//! records every request, keeps the latest stored state per session like Laravel's table would,
//! and can be told to fail, stall, reject or answer partially.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, dev::ServerHandle, web};
use serde_json::{Value, json};

/// How the stand-in answers batch calls.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Store everything: `{"success":true,"updated":N,"failed":0}`.
    Store,
    /// Answer this status with an error body.
    Fail(u16),
    /// Wait this long before answering (as `Store`).
    Stall(Duration),
    /// Store all but these (sessions, message ids or message texts), which come back in
    /// `failed_ids`.
    FailIds(HashSet<String>),
    /// As the drop-in does with items that fail validation: store all but these (sessions,
    /// message ids or message texts), which come back in `failed_ids` and in `rejected` with a
    /// reason.
    RejectIds(HashSet<String>),
    /// As a plain Laravel validator does: answer 422 to any batch holding one of these
    /// (sessions, message ids or message texts).
    RefuseBatchesHolding(HashSet<String>),
    /// Store nothing and say `failed: N` without ids.
    FailWithoutIds,
    /// Answer 413 to batches of more than this many items (store the others).
    TooLargeAbove(usize),
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Request path, e.g. `/api/qr/batch`.
    pub path: String,
    /// JSON body.
    pub body: Value,
    /// `Authorization` header.
    pub authorization: Option<String>,
    /// `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    /// `X-Wasup-Signature` and `X-Wasup-Timestamp` headers.
    pub signature: Option<(String, String)>,
    /// The body as sent.
    pub raw_body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
    /// When it arrived, in ms since the epoch (to compare with items' `expires_at`).
    pub received_at_ms: u64,
    /// The status answered.
    pub answered: u16,
}

/// The body keys of the lanes, as the combined call carries them.
const LANE_KEYS: [&str; 3] = ["qrs", "statuses", "messages"];

impl Recorded {
    /// The items of a batch body (`qrs`, `statuses` or `messages`; for the combined call, every
    /// lane's), or the one item of a legacy call.
    pub fn items(&self) -> Vec<Value> {
        let items: Vec<Value> = self
            .lanes()
            .into_iter()
            .flat_map(|(_, items)| items)
            .collect();
        if items.is_empty() && !self.is_combined() && self.body.get("session_id").is_some() {
            return vec![self.body.clone()];
        }
        items
    }

    /// Whether this is the combined call (`POST /whatsapp/events/batch`).
    pub fn is_combined(&self) -> bool {
        self.path.ends_with("/events/batch")
    }

    /// The items of one lane key (`qrs`, `statuses`, `messages`), whatever the call.
    pub fn items_of(&self, lane_key: &str) -> Vec<Value> {
        self.lanes()
            .into_iter()
            .find(|(key, _)| *key == lane_key)
            .map(|(_, items)| items)
            .unwrap_or_default()
    }

    /// The items by lane key: the body's keys for batch calls, the path's lane for legacy calls.
    fn lanes(&self) -> Vec<(&'static str, Vec<Value>)> {
        let legacy_key = if self.path.ends_with("/qr") {
            Some("qrs")
        } else if self.path.ends_with("/whatsapp/status") {
            Some("statuses")
        } else {
            None
        };
        if let Some(key) = legacy_key {
            return vec![(key, vec![self.body.clone()])];
        }
        LANE_KEYS
            .iter()
            .filter_map(|key| {
                let items = self.body.get(*key)?.as_array()?.clone();
                Some((*key, items))
            })
            .collect()
    }
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<Recorded>>,
    behaviour: Mutex<Option<Behaviour>>,
    latency: Mutex<Duration>,
    /// session → latest stored QR item.
    qrs: Mutex<HashMap<String, Value>>,
    /// session → latest stored status item.
    statuses: Mutex<HashMap<String, Value>>,
    /// Stored message items in arrival order, each (session, chat, sender, message id) once.
    messages: Mutex<Vec<Value>>,
    /// Sessions whose `GET /whatsapp/status/{id}` answers this instead of the stored status.
    account_overrides: Mutex<HashMap<String, String>>,
    /// Status to answer every `GET /whatsapp/status/{id}` with instead (e.g. 500).
    lookup_failure: Mutex<Option<u16>>,
    /// `GET /whatsapp/status/{id}` calls, by session.
    lookups: Mutex<Vec<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The running stand-in.
pub struct Laravel {
    /// Base URL to give wasup (`http://127.0.0.1:PORT/api`).
    pub url: String,
    state: Arc<State>,
    server: ServerHandle,
}

impl Laravel {
    /// Starts it on a free loopback port, storing everything.
    pub async fn start() -> Laravel {
        let state = Arc::new(State::default());
        let data = web::Data::from(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(16 << 20))
                .route("/api/qr/batch", web::post().to(batch))
                .route("/api/whatsapp/status/batch", web::post().to(batch))
                .route("/api/whatsapp/messages/batch", web::post().to(batch))
                .route("/api/whatsapp/events/batch", web::post().to(batch))
                .route("/api/whatsapp/status/{id}", web::get().to(status_of))
                .route("/api/qr", web::post().to(batch))
                .route("/api/whatsapp/status", web::post().to(batch))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind stand-in Laravel");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Laravel {
            url: format!("http://{addr}/api"),
            state,
            server: handle,
        }
    }

    /// Changes how batch calls are answered from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *lock(&self.state.behaviour) = Some(behaviour);
    }

    /// Adds latency to every answer.
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.state.latency) = latency;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    /// Requests to a path ending with `suffix` (`"/qr/batch"`, `"/whatsapp/status/batch"`).
    pub fn requests_to(&self, suffix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|request| request.path.ends_with(suffix))
            .collect()
    }

    /// The latest stored status of a session.
    pub fn status_of(&self, session_id: &str) -> Option<String> {
        lock(&self.state.statuses)
            .get(session_id)
            .and_then(|item| item.get("estado_qr"))
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// The messages stored for a session, in arrival order, each once.
    pub fn messages_of(&self, session_id: &str) -> Vec<Value> {
        lock(&self.state.messages)
            .iter()
            .filter(|item| item["session_id"] == session_id)
            .cloned()
            .collect()
    }

    /// The latest stored QR item of a session.
    pub fn qr_of(&self, session_id: &str) -> Option<Value> {
        lock(&self.state.qrs).get(session_id).cloned()
    }

    /// Every status item received (stored or not) for a session, in arrival order, whichever
    /// call carried it.
    pub fn statuses_received(&self, session_id: &str) -> Vec<String> {
        self.requests()
            .iter()
            .flat_map(|request| request.items_of("statuses"))
            .filter(|item| item["session_id"] == session_id)
            .filter_map(|item| item["estado_qr"].as_str().map(str::to_string))
            .collect()
    }

    /// Waits until the stored status of a session is `status`.
    pub async fn wait_status(&self, session_id: &str, status: &str) {
        let what = format!("Laravel to hold {status} for {session_id}");
        super::wait_until(&what, super::PATIENCE, || async {
            self.status_of(session_id).as_deref() == Some(status)
        })
        .await;
    }

    /// Waits until Laravel holds a QR for a session.
    pub async fn wait_qr(&self, session_id: &str) {
        let what = format!("Laravel to hold a QR for {session_id}");
        super::wait_until(&what, super::PATIENCE, || async {
            self.qr_of(session_id).is_some()
        })
        .await;
    }

    /// Makes `GET /whatsapp/status/{id}` say `estado_qr` for this session (the account changed in Laravel).
    pub fn set_account_status(&self, session_id: &str, estado_qr: &str) {
        lock(&self.state.account_overrides).insert(session_id.to_string(), estado_qr.to_string());
    }

    /// Makes every `GET /whatsapp/status/{id}` fail with `status` (or answer again, with `None`).
    pub fn fail_lookups(&self, status: Option<u16>) {
        *lock(&self.state.lookup_failure) = status;
    }

    /// How many `GET /whatsapp/status/{id}` calls were made for a session.
    pub fn lookups_of(&self, session_id: &str) -> usize {
        lock(&self.state.lookups)
            .iter()
            .filter(|id| *id == session_id)
            .count()
    }

    /// Stops the server.
    pub async fn stop(&self) {
        self.server.stop(false).await;
    }
}

/// Whether `item` is one of `names`: a message by its id or text, another item by its session.
fn named_in(item: &Value, names: &HashSet<String>) -> bool {
    let fields: &[&str] = if item.get("message_id").is_some() {
        &["message_id", "text"]
    } else {
        &["session_id"]
    };
    fields.iter().any(|field| {
        item.get(*field)
            .and_then(Value::as_str)
            .is_some_and(|value| names.contains(value))
    })
}

async fn batch(
    state: web::Data<State>,
    request: HttpRequest,
    raw_body: web::Bytes,
) -> HttpResponse {
    let Ok(body) = serde_json::from_slice::<Value>(&raw_body) else {
        return HttpResponse::BadRequest().json(json!({"message": "not JSON"}));
    };
    let latency = *lock(&state.latency);
    let behaviour = lock(&state.behaviour).clone().unwrap_or(Behaviour::Store);
    if !latency.is_zero() {
        actix_rt::time::sleep(latency).await;
    }
    if let Behaviour::Stall(duration) = &behaviour {
        actix_rt::time::sleep(*duration).await;
    }
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    let mut recorded = Recorded {
        path: request.path().to_string(),
        body,
        authorization: header("authorization"),
        idempotency_key: header("idempotency-key"),
        signature: header("x-wasup-signature").zip(header("x-wasup-timestamp")),
        raw_body: raw_body.to_vec(),
        at: Instant::now(),
        received_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64),
        answered: 200,
    };
    let lanes = recorded.lanes();
    let item_count: usize = lanes.iter().map(|(_, items)| items.len()).sum();
    let store = |lane_key: &str, items: &[Value]| {
        if lane_key == "messages" {
            let mut stored = lock(&state.messages);
            for item in items {
                // One row per (session, chat, sender, id): WhatsApp ids are unique only per
                // chat and sender.
                let known = stored.iter().any(|seen| {
                    ["session_id", "to", "from", "message_id"]
                        .iter()
                        .all(|field| seen[*field] == item[*field])
                });
                if !known {
                    stored.push(item.clone());
                }
            }
            return;
        }
        let table = if lane_key == "qrs" {
            &state.qrs
        } else {
            &state.statuses
        };
        let mut table = lock(table);
        for item in items {
            if let Some(id) = item["session_id"].as_str() {
                table.insert(id.to_string(), item.clone());
            }
        }
    };
    let store_all = || {
        for (key, items) in &lanes {
            store(key, items);
        }
    };
    let ack_id = |item: &Value| {
        item.get("message_id")
            .or_else(|| item.get("session_id"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let stored_answer =
        || HttpResponse::Ok().json(json!({"success": true, "updated": item_count, "failed": 0}));
    // Held while storing, so whatever a test sees stored is already in the request log.
    let mut request_log = lock(&state.requests);
    let response = match &behaviour {
        Behaviour::Store | Behaviour::Stall(_) => {
            store_all();
            stored_answer()
        }
        Behaviour::Fail(status) => {
            recorded.answered = *status;
            HttpResponse::build(actix_web::http::StatusCode::from_u16(*status).expect("status"))
                .json(json!({"message": "stand-in failure"}))
        }
        Behaviour::FailIds(failing) | Behaviour::RejectIds(failing) => {
            let rejecting = matches!(behaviour, Behaviour::RejectIds(_));
            let mut failed_by_lane = serde_json::Map::new();
            let mut rejected_by_lane = serde_json::Map::new();
            let mut failed_flat = Vec::new();
            let mut rejected_flat = serde_json::Map::new();
            let mut updated = 0;
            for (key, items) in &lanes {
                let (failed, stored): (Vec<Value>, Vec<Value>) = items
                    .iter()
                    .cloned()
                    .partition(|item| named_in(item, failing));
                store(key, &stored);
                updated += stored.len();
                let ids: Vec<String> = failed.iter().filter_map(ack_id).collect();
                let reasons: serde_json::Map<String, Value> = ids
                    .iter()
                    .filter(|_| rejecting)
                    .map(|id| {
                        (
                            id.clone(),
                            json!("The text must not be greater than 65536 characters."),
                        )
                    })
                    .collect();
                rejected_flat.extend(reasons.clone());
                rejected_by_lane.insert((*key).to_string(), Value::Object(reasons));
                failed_flat.extend(ids.iter().cloned());
                failed_by_lane.insert((*key).to_string(), json!(ids));
            }
            let (failed_ids, rejected) = if recorded.is_combined() {
                (
                    Value::Object(failed_by_lane),
                    Value::Object(rejected_by_lane),
                )
            } else {
                (json!(failed_flat), Value::Object(rejected_flat))
            };
            HttpResponse::Ok().json(json!({"success": true, "updated": updated, "failed": failed_flat.len(), "failed_ids": failed_ids, "rejected": rejected}))
        }
        Behaviour::RefuseBatchesHolding(refused)
            if lanes
                .iter()
                .any(|(_, items)| items.iter().any(|item| named_in(item, refused))) =>
        {
            recorded.answered = 422;
            HttpResponse::UnprocessableEntity().json(json!({
                "message": "The given data was invalid.",
                "errors": {"messages.0.text": ["The messages.0.text must not be greater than 65535 characters."]}
            }))
        }
        Behaviour::RefuseBatchesHolding(_) => {
            store_all();
            stored_answer()
        }
        Behaviour::TooLargeAbove(limit) if item_count > *limit => {
            recorded.answered = 413;
            HttpResponse::PayloadTooLarge().json(json!({"message": "too large"}))
        }
        Behaviour::TooLargeAbove(_) => {
            store_all();
            stored_answer()
        }
        Behaviour::FailWithoutIds => {
            HttpResponse::Ok().json(json!({"success": false, "updated": 0, "failed": item_count}))
        }
    };
    request_log.push(recorded);
    response
}

async fn status_of(state: web::Data<State>, id: web::Path<String>) -> HttpResponse {
    lock(&state.lookups).push(id.to_string());
    if let Some(status) = *lock(&state.lookup_failure) {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"))
            .finish();
    }
    if let Some(estado) = lock(&state.account_overrides).get(id.as_str()) {
        return HttpResponse::Ok().json(json!({"session_id": id.as_str(), "estado_qr": estado}));
    }
    match lock(&state.statuses).get(id.as_str()) {
        Some(item) => HttpResponse::Ok()
            .json(json!({"session_id": id.as_str(), "estado_qr": item["estado_qr"]})),
        None => HttpResponse::NotFound().json(json!({"message": "unknown session"})),
    }
}
