//! What the chaos suite asks of wasup while faults strike, and the ledger of what wasup
//! accepted: incoming messages it receipted (as WhatsApp would wait for the receipt), outgoing
//! messages it answered 202, scans and logouts. The checks hold wasup to this ledger.

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    laravel::{POISON, incoming_key},
    load::Api,
};

/// One session the suite keeps alive.
#[derive(Clone, Debug)]
pub struct Planned {
    /// Its id.
    pub id: String,
    /// Its Laravel user.
    pub user_id: u64,
    /// Seen connected since its last logout: its credentials must survive everything but one.
    pub paired: bool,
    /// Logged out on purpose this round (started again as a new pending session).
    pub logged_out: bool,
}

/// What wasup accepted, to be found at Laravel.
#[derive(Clone, Default)]
pub struct Ledger {
    /// The sessions.
    pub sessions: Vec<Planned>,
    /// Keys (as the stand-in keys them) of healthy incoming messages wasup receipted.
    pub receipted: Vec<String>,
    /// Incoming messages offered but not receipted (WhatsApp would deliver them again).
    pub unreceipted: u64,
    /// Poison messages receipted (they must end as dead letters, not in Laravel's table).
    pub poison_receipted: u64,
    /// wasup ids of outgoing messages answered 202.
    pub outgoing: Vec<String>,
    /// Outgoing messages refused (not accepted, so not owed).
    pub outgoing_refused: u64,
    /// Scans accepted.
    pub scans: u64,
    /// Logouts made.
    pub logouts: u64,
}

/// Messages, sends and scans at once, at most.
const IN_FLIGHT: usize = 48;
/// A tick of the traffic loop.
const TICK: Duration = Duration::from_millis(100);
/// Group chats the incoming messages arrive in (shared by sessions, as real groups are).
const GROUPS: u64 = 25;

/// How much traffic a round makes.
pub struct Rate {
    /// For how long.
    pub duration: Duration,
    /// Incoming messages per tick.
    pub messages_per_tick: usize,
    /// One incoming message in this many is poison.
    pub poison_one_in: u8,
}

/// Drives traffic: per tick incoming messages, one outgoing message, and now and then a scan;
/// one logout per call.
pub async fn drive(api: Api, ledger: Rc<RefCell<Ledger>>, rate: Rate, seed: u64) {
    let duration = rate.duration;
    let mut rng = fastrand::Rng::with_seed(seed);
    let in_flight = Rc::new(Cell::new(0usize));
    let started = Instant::now();
    let mut tick = 0u64;
    let mut logged_out = false;
    while started.elapsed() < duration {
        let (paired, unpaired): (Vec<Planned>, Vec<Planned>) = ledger
            .borrow()
            .sessions
            .iter()
            .cloned()
            .partition(|session| session.paired);
        for _ in 0..rate.messages_per_tick {
            if let Some(session) = pick(&mut rng, &paired) {
                let poison = rng.u8(..rate.poison_one_in) == 0;
                let chat = format!("1203630{:05}@g.us", rng.u64(..GROUPS));
                let from = format!("49151{:07}", rng.u32(..10_000_000));
                let text = if poison {
                    format!("{POISON} {}", rng.u64(..))
                } else {
                    format!("chaos {tick}")
                };
                let body = json!({"from": from, "text": text, "chat": chat, "wait_receipt": true});
                let path = format!("/sessions/{}/simulate/message", session.id);
                let session_id = session.id.clone();
                let key_of = move |id: &str| {
                    incoming_key(&session_id, &chat, &format!("{from}@s.whatsapp.net"), id)
                };
                post_then(
                    &in_flight,
                    &api,
                    &ledger,
                    path,
                    body,
                    move |ledger, answer| match answer {
                        Ok((200, answer)) if answer["receipted"] == true => {
                            let id = answer["message_id"].as_str().unwrap_or_default();
                            if poison {
                                ledger.poison_receipted += 1;
                            } else {
                                ledger.receipted.push(key_of(id));
                            }
                        }
                        _ => ledger.unreceipted += 1,
                    },
                );
            }
        }
        if let Some(session) = pick(&mut rng, &paired) {
            let path = format!("/sessions/{}/messages", session.id);
            let body = json!({"to": format!("49160{:07}", rng.u32(..10_000_000)), "text": format!("out {tick}")});
            post_then(
                &in_flight,
                &api,
                &ledger,
                path,
                body,
                |ledger, answer| match answer {
                    Ok((202, answer)) => ledger.outgoing.push(
                        answer["message_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    ),
                    _ => ledger.outgoing_refused += 1,
                },
            );
        }
        if tick.is_multiple_of(5)
            && let Some(session) = pick(&mut rng, &unpaired)
        {
            let path = format!("/sessions/{}/simulate/scan", session.id);
            post_then(
                &in_flight,
                &api,
                &ledger,
                path,
                json!({}),
                |ledger, answer| {
                    if matches!(answer, Ok((202, _))) {
                        ledger.scans += 1;
                    }
                },
            );
        }
        if !logged_out
            && started.elapsed() > duration / 2
            && let Some(session) = pick(&mut rng, &paired)
        {
            logged_out = true;
            log_out(&api, &ledger, &session.id).await;
        }
        tick += 1;
        actix_rt::time::sleep(TICK).await;
    }
    while in_flight.get() > 0 {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Posts `body` to `path` in the background (bounded by `in_flight`), then lets `record` note
/// wasup's answer in the ledger.
fn post_then(
    in_flight: &Rc<Cell<usize>>,
    api: &Api,
    ledger: &Rc<RefCell<Ledger>>,
    path: String,
    body: Value,
    record: impl FnOnce(&mut Ledger, anyhow::Result<(u16, Value)>) + 'static,
) {
    let (api, ledger) = (api.clone(), Rc::clone(ledger));
    spawn_bounded(in_flight, async move {
        let answer = api.post(&path, &body).await;
        record(&mut ledger.borrow_mut(), answer);
    });
}

fn pick<'a>(rng: &mut fastrand::Rng, sessions: &'a [Planned]) -> Option<&'a Planned> {
    (!sessions.is_empty()).then(|| &sessions[rng.usize(..sessions.len())])
}

/// Runs `work` unless [`IN_FLIGHT`] calls are out already (then the tick skips it).
fn spawn_bounded(in_flight: &Rc<Cell<usize>>, work: impl Future<Output = ()> + 'static) {
    if in_flight.get() >= IN_FLIGHT {
        return;
    }
    in_flight.set(in_flight.get() + 1);
    let in_flight = Rc::clone(in_flight);
    actix_rt::spawn(async move {
        work.await;
        in_flight.set(in_flight.get() - 1);
    });
}

/// `DELETE /sessions/{id}?logout=true`: the one way credentials may go.
async fn log_out(api: &Api, ledger: &Rc<RefCell<Ledger>>, id: &str) {
    if matches!(
        api.delete(&format!("/sessions/{id}?logout=true")).await,
        Ok((200, _))
    ) {
        let mut ledger = ledger.borrow_mut();
        ledger.logouts += 1;
        if let Some(session) = ledger.sessions.iter_mut().find(|session| session.id == id) {
            session.paired = false;
            session.logged_out = true;
        }
    }
}
