//! QR coverage: how often Laravel holds the QR a pending session shows now. Every tick, a random
//! sample of pending sessions is read through `GET /sessions/{id}/qr` and compared with the
//! latest QR the counting Laravel stored for each; the share of matches estimates the share of
//! pending-session time during which a user scanning Laravel's QR would succeed.

use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use wasup_actors::session::fnv1a;

use crate::{laravel::CountingLaravel, load::Api};

/// How often the sessions are sampled.
const TICK: Duration = Duration::from_secs(2);
/// Sessions read per tick.
const PER_TICK: usize = 100;
/// Reads at once.
const CONCURRENCY: usize = 16;

/// Ids of the sessions `GET /sessions` lists as pending (strings, or objects with an id).
fn pending_ids(list: &Value) -> Vec<String> {
    list["pendingSessions"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|entry| {
                    entry
                        .as_str()
                        .or_else(|| entry["session_id"].as_str())
                        .or_else(|| entry["id"].as_str())
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Samples for `duration`; answers `{samples, matches, share}`.
pub async fn sample(api: &Api, laravel: &CountingLaravel, duration: Duration) -> Value {
    let started = Instant::now();
    let (mut samples, mut matches) = (0u64, 0u64);
    let mut rng = fastrand::Rng::with_seed(7);
    while started.elapsed() < duration {
        let tick = Instant::now();
        let mut ids = api
            .get("/sessions")
            .await
            .map(|list| pending_ids(&list))
            .unwrap_or_default();
        rng.shuffle(&mut ids);
        ids.truncate(PER_TICK);
        let shown: Vec<(String, Option<u64>)> = stream::iter(ids)
            .map(|id| async move {
                let answer = api.get(&format!("/sessions/{id}/qr")).await.ok();
                let digest = answer.and_then(|body| body["qr"].as_str().map(fnv1a));
                (id, digest)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (id, digest) in shown {
            // A session that connected or ended between the list and the read shows no QR.
            let Some(digest) = digest else { continue };
            samples += 1;
            matches += u64::from(laravel.latest_qr_digest(&id) == Some(digest));
        }
        actix_rt::time::sleep(TICK.saturating_sub(tick.elapsed())).await;
    }
    json!({
        "samples": samples,
        "matches": matches,
        "share": if samples == 0 { 0.0 } else { matches as f64 / samples as f64 },
    })
}
