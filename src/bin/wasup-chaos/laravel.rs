//! The chaos suite's stand-in for Laravel: answers the contract's batch calls and status
//! look-ups, keeps what Laravel's tables would hold (latest status and QR per session by event
//! time, incoming messages once per key, outgoing outcomes by message), and misbehaves on
//! command: down (connections refused), 500s, stalls, 404 look-ups. A batch holding a poison
//! message (text starting with [`POISON`]) is refused whole with a 422, as a plain Laravel
//! validator does. Memory stays small: digests, keys and counters, never bodies.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use actix_web::{App, HttpResponse, HttpServer, dev::ServerHandle, web};
use anyhow::Context as _;
use serde_json::{Value, json};
use wasup_actors::session::fnv1a;

/// Texts starting with this are refused by the stand-in's validator.
pub const POISON: &str = "POISON";

/// How batch calls are answered now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answering {
    /// Store and answer 200.
    Healthy,
    /// Answer this status, storing nothing.
    Failing(u16),
    /// Wait this long, then store and answer 200 (wasup has usually given up by then).
    Stalling(Duration),
}

/// What the stand-in's tables hold.
#[derive(Default)]
pub struct Tables {
    /// Session → (event time, `estado_qr`) of the latest status.
    pub statuses: HashMap<String, (u64, String)>,
    /// Session → (event time, digest of the data URL) of the latest QR.
    pub qrs: HashMap<String, (u64, u64)>,
    /// Incoming messages stored, as `session|chat|sender|id`.
    pub incoming: HashSet<String>,
    /// Poison messages that reached the table (the validator should have kept them out).
    pub poison_stored: u64,
    /// wasup message id → the WhatsApp ids and states its outcome reports carried.
    pub outgoing: HashMap<String, Outcome>,
    /// Requests by the status answered.
    pub answers: HashMap<u16, u64>,
}

/// What Laravel heard about one outgoing message.
#[derive(Default, Debug)]
pub struct Outcome {
    /// Every WhatsApp id reported for it: more than one means it went out twice.
    pub whatsapp_ids: HashSet<String>,
    /// Every state reported (`sent`, `failed`).
    pub states: HashSet<String>,
}

#[derive(Default)]
struct State {
    tables: Mutex<Tables>,
    answering: Mutex<Option<Answering>>,
    /// Look-ups answer 404 while set (a wrong base URL, a restored database).
    lookups_missing: Mutex<bool>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The running stand-in; [`down`](Self::down) and [`up`](Self::up) close and reopen its port.
pub struct ChaosLaravel {
    /// `http://127.0.0.1:PORT/api`.
    pub url: String,
    port: u16,
    state: Arc<State>,
    server: Option<ServerHandle>,
}

impl ChaosLaravel {
    /// Starts it on a free loopback port.
    pub fn start(port: u16) -> anyhow::Result<Self> {
        let mut laravel = Self {
            url: format!("http://127.0.0.1:{port}/api"),
            port,
            state: Arc::default(),
            server: None,
        };
        laravel.up()?;
        Ok(laravel)
    }

    /// Opens the port again (retrying while the old socket lingers).
    pub fn up(&mut self) -> anyhow::Result<()> {
        if self.server.is_some() {
            return Ok(());
        }
        let data = web::Data::from(Arc::clone(&self.state));
        let mut attempts = 0;
        let server = loop {
            let data = data.clone();
            let bound = HttpServer::new(move || {
                App::new()
                    .app_data(data.clone())
                    .app_data(web::PayloadConfig::new(64 << 20))
                    .route("/api/qr/batch", web::post().to(receive))
                    .route("/api/whatsapp/status/batch", web::post().to(receive))
                    .route("/api/whatsapp/messages/batch", web::post().to(receive))
                    .route("/api/whatsapp/events/batch", web::post().to(receive))
                    .route("/api/whatsapp/status/{id}", web::get().to(look_up))
            })
            .workers(2)
            .disable_signals()
            .shutdown_timeout(0)
            .bind(("127.0.0.1", self.port));
            match bound {
                Ok(server) => break server,
                Err(_) if attempts < 100 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(error) => return Err(error).context("the stand-in's port stays taken"),
            }
        };
        let server = server.run();
        self.server = Some(server.handle());
        actix_rt::spawn(server);
        Ok(())
    }

    /// Closes the port: wasup's requests are refused, those in flight cut.
    pub async fn down(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop(false).await;
        }
    }

    /// How batch calls are answered from now on.
    pub fn answer(&self, answering: Answering) {
        *lock(&self.state.answering) = Some(answering);
    }

    /// Whether status look-ups answer 404.
    pub fn lookups_missing(&self, missing: bool) {
        *lock(&self.state.lookups_missing) = missing;
    }

    /// Reads the tables.
    pub fn tables(&self) -> MutexGuard<'_, Tables> {
        lock(&self.state.tables)
    }
}

/// The items of a batch body, each with its lane key.
fn items_of(body: &Value) -> Vec<(&'static str, &Value)> {
    ["qrs", "statuses", "messages"]
        .into_iter()
        .flat_map(|key| {
            body.get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(move |item| (key, item))
        })
        .collect()
}

fn is_poison(item: &Value) -> bool {
    item["text"]
        .as_str()
        .is_some_and(|text| text.starts_with(POISON))
}

async fn receive(state: web::Data<State>, body: web::Bytes) -> HttpResponse {
    let answering = lock(&state.answering).unwrap_or(Answering::Healthy);
    let status = match answering {
        Answering::Failing(status) => status,
        Answering::Stalling(stall) => {
            actix_rt::time::sleep(stall).await;
            200
        }
        Answering::Healthy => 200,
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().json(json!({"message": "not JSON"}));
    };
    let items = items_of(&body);
    let refused = status == 200 && items.iter().any(|(_, item)| is_poison(item));
    let status = if refused { 422 } else { status };
    let mut tables = lock(&state.tables);
    *tables.answers.entry(status).or_default() += 1;
    if status != 200 {
        drop(tables);
        let code = actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
        return HttpResponse::build(code).json(json!({"message": "The given data was invalid."}));
    }
    for (lane, item) in &items {
        store(&mut tables, lane, item);
    }
    HttpResponse::Ok().json(json!({"success": true, "updated": items.len(), "failed": 0}))
}

/// Stores one item as the drop-in would: the latest event time wins per session.
fn store(tables: &mut Tables, lane: &str, item: &Value) {
    let text = |field: &str| item[field].as_str().unwrap_or_default().to_string();
    let session = text("session_id");
    let at = item["timestamp"].as_u64().unwrap_or(0);
    match lane {
        "qrs" => {
            let digest = fnv1a(item["qr"].as_str().unwrap_or_default());
            let latest = tables.qrs.entry(session).or_insert((0, 0));
            if at >= latest.0 {
                *latest = (at, digest);
            }
        }
        "statuses" => {
            let latest = tables.statuses.entry(session).or_insert((0, String::new()));
            if at >= latest.0 {
                *latest = (at, text("estado_qr"));
            }
        }
        _ if item["direction"] == "outgoing" => {
            let outcome = tables.outgoing.entry(text("message_id")).or_default();
            outcome.states.insert(text("state"));
            if let Some(id) = item["whatsapp_id"].as_str() {
                outcome.whatsapp_ids.insert(id.to_string());
            }
        }
        _ => {
            if is_poison(item) {
                tables.poison_stored += 1;
            }
            let key = incoming_key(&session, &text("to"), &text("from"), &text("message_id"));
            tables.incoming.insert(key);
        }
    }
}

/// How the stand-in keys an incoming message (WhatsApp ids are unique per chat and sender).
pub fn incoming_key(session: &str, chat: &str, sender: &str, id: &str) -> String {
    format!("{session}|{chat}|{sender}|{id}")
}

/// `GET /whatsapp/status/{id}`: the stored status, 404 for an unknown session or while told to.
async fn look_up(state: web::Data<State>, id: web::Path<String>) -> HttpResponse {
    if *lock(&state.lookups_missing) {
        return HttpResponse::NotFound().json(json!({"message": "unknown session"}));
    }
    match lock(&state.tables).statuses.get(id.as_str()) {
        Some((_, estado)) => {
            HttpResponse::Ok().json(json!({"session_id": id.as_str(), "estado_qr": estado}))
        }
        None => HttpResponse::NotFound().json(json!({"message": "unknown session"})),
    }
}
