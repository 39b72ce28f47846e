//! What must hold after every round, once wasup has drained: every receipted incoming message
//! and every accepted outgoing message's outcome at Laravel, no message sent under two WhatsApp
//! ids, no poison in Laravel's table, each session's latest status and current QR at Laravel,
//! and no paired session without its credentials unless it was logged out.

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};
use serde_json::Value;
use wasup_actors::session::fnv1a;

use crate::{laravel::ChaosLaravel, load::Api, traffic::Ledger};

/// Examples kept per kind of violation.
const EXAMPLES: usize = 5;
/// Reads at once.
const CONCURRENCY: usize = 32;

/// Violations found, by kind, with a few examples each.
#[derive(Default, Debug)]
pub struct Findings {
    /// Kind → count.
    pub counts: BTreeMap<&'static str, u64>,
    /// Kind → the first examples.
    pub examples: BTreeMap<&'static str, Vec<String>>,
    /// Dead letters wasup holds (`lane status reason` → count), as last read.
    pub dead_letters: BTreeMap<String, u64>,
}

impl Findings {
    fn add(&mut self, kind: &'static str, example: String) {
        *self.counts.entry(kind).or_default() += 1;
        let examples = self.examples.entry(kind).or_default();
        if examples.len() < EXAMPLES {
            examples.push(example);
        }
    }

    /// Adds another round's findings.
    pub fn merge(&mut self, other: Findings) {
        for (kind, count) in other.counts {
            *self.counts.entry(kind).or_default() += count;
        }
        self.dead_letters = other.dead_letters;
        for (kind, examples) in other.examples {
            let kept = self.examples.entry(kind).or_default();
            kept.extend(examples);
            kept.truncate(EXAMPLES);
        }
    }

    /// Violations in all.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Waits (at most `timeout`) until wasup holds nothing for Laravel and no outgoing message
/// waits; whether it did.
pub async fn drained(api: &Api, timeout: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Ok(health) = api.get("/health").await {
            let queues = &health["queues"];
            let lane_empty = |lane: &str| queues[lane]["pending"].as_u64() == Some(0);
            let dispatch = &queues["messageQueue"];
            if ["qr", "status", "incomingMessages"]
                .into_iter()
                .all(lane_empty)
                && dispatch["active"].as_u64() == Some(0)
                && dispatch["waiting"].as_u64() == Some(0)
            {
                return true;
            }
        }
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Dead letters wasup holds, as `lane status reason` → count, and the set of their keys.
async fn dead_letters(api: &Api) -> (BTreeMap<String, u64>, HashSet<String>) {
    let listed = api
        .get("/dead-letters?limit=1000")
        .await
        .unwrap_or_default();
    let mut kinds = BTreeMap::new();
    let mut keys = HashSet::new();
    for item in listed["items"].as_array().into_iter().flatten() {
        let reason: String = item["reason"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(60)
            .collect();
        *kinds
            .entry(format!("{} {} {reason}", item["lane"], item["status"]))
            .or_default() += 1;
        if let Some(key) = item["key"].as_str() {
            keys.insert(key.to_string());
        }
    }
    (kinds, keys)
}

/// Checks the ledger against Laravel's tables and wasup's sessions.
pub async fn check(api: &Api, laravel: &ChaosLaravel, ledger: &Ledger) -> Findings {
    let mut findings = Findings::default();
    let (dead_letter_kinds, dead_keys) = dead_letters(api).await;
    findings.dead_letters = dead_letter_kinds;
    {
        let tables = laravel.tables();
        for key in &ledger.receipted {
            if tables.incoming.contains(key) {
                continue;
            }
            // The outbox keys messages session/chat/sender/id, the stand-in with `|`.
            if dead_keys.contains(&key.replace('|', "/")) {
                findings.add("incoming_dead_lettered", key.clone());
            } else {
                findings.add("incoming_lost", key.clone());
            }
        }
        if tables.poison_stored > 0 {
            findings.add(
                "poison_stored",
                format!("{} poison messages", tables.poison_stored),
            );
        }
        for id in &ledger.outgoing {
            match tables.outgoing.get(id) {
                None => findings.add("outgoing_outcome_lost", id.clone()),
                Some(outcome) if outcome.whatsapp_ids.len() > 1 => findings.add(
                    "outgoing_sent_twice",
                    format!("{id}: {:?}", outcome.whatsapp_ids),
                ),
                Some(_) => {}
            }
        }
    }
    let reports: Vec<(String, bool, Option<Value>)> = stream::iter(ledger.sessions.iter())
        .map(|session| async move {
            let report = settled_report(api, &session.id, session.paired).await;
            (session.id.clone(), session.paired, report)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for (id, paired, report) in reports {
        let Some(report) = report.filter(|report| report["session_id"].is_string()) else {
            findings.add("session_missing", id);
            continue;
        };
        let state = report["state"].as_str().unwrap_or_default();
        if paired && matches!(state, "pending" | "pairing") {
            findings.add("credentials_lost", format!("{id} shows a QR again"));
        } else if paired && state != "active" {
            findings.add("not_reconnected", format!("{id} is {state}"));
        }
        if let Err(stale) = status_current(api, laravel, &id, &report).await {
            findings.add("status_stale", stale);
        }
        if state == "pending" && !qr_current(api, laravel, &id).await {
            findings.add("qr_stale", id);
        }
    }
    findings
}

/// Whether Laravel holds the status the session reported last: at once, or within
/// [`STATUS_SETTLES`] (a status reported just now waits for its lane's deadline).
/// How long a paired session revived at the end of a round may take to connect again.
const RECONNECT_SETTLES: Duration = Duration::from_secs(20);

/// `GET /sessions/{id}`; for a paired session still on its way back (`starting`, `connecting`),
/// the report once it settled, or the last one after [`RECONNECT_SETTLES`].
async fn settled_report(api: &Api, id: &str, paired: bool) -> Option<Value> {
    let path = format!("/sessions/{id}");
    let started = std::time::Instant::now();
    loop {
        let report = api.get(&path).await.ok();
        let on_its_way = report.as_ref().is_some_and(|report| {
            matches!(report["state"].as_str(), Some("starting" | "connecting"))
        });
        if !(paired && on_its_way) || started.elapsed() >= RECONNECT_SETTLES {
            return report;
        }
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn status_current(
    api: &Api,
    laravel: &ChaosLaravel,
    id: &str,
    report: &Value,
) -> Result<(), String> {
    let started = Instant::now();
    let mut report = report.clone();
    loop {
        let state = report["state"].as_str().unwrap_or_default();
        let reported = report["actor"]["last_status"]
            .as_str()
            .or((state == "active").then_some("active"));
        let held = laravel
            .tables()
            .statuses
            .get(id)
            .map(|(_, estado)| estado.clone());
        match reported {
            Some(reported) if held.as_deref() != Some(reported) => {
                if started.elapsed() > STATUS_SETTLES {
                    return Err(format!("{id}: wasup {reported}, Laravel {held:?}"));
                }
            }
            _ => return Ok(()),
        }
        actix_rt::time::sleep(Duration::from_millis(500)).await;
        report = api
            .get(&format!("/sessions/{id}"))
            .await
            .unwrap_or_default();
    }
}

/// How long a status just reported may take to reach Laravel (its lane's deadline, a retry).
const STATUS_SETTLES: Duration = Duration::from_secs(15);

/// Whether Laravel holds the QR the session shows (three reads, as a QR may rotate between the
/// read and the comparison).
async fn qr_current(api: &Api, laravel: &ChaosLaravel, id: &str) -> bool {
    for _ in 0..3 {
        let shown = api.get(&format!("/sessions/{id}/qr")).await.ok();
        let Some(digest) = shown.as_ref().and_then(|qr| qr["qr"].as_str()).map(fnv1a) else {
            // Connected or ended meanwhile: no QR to hold.
            return true;
        };
        if laravel.tables().qrs.get(id).map(|(_, held)| *held) == Some(digest) {
            return true;
        }
        actix_rt::time::sleep(Duration::from_millis(700)).await;
    }
    false
}
