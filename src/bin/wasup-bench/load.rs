//! Load on wasup through its REST API: starting many sessions, the mix of scans, drops and
//! logouts of the seeds' scenario, and `wrk` runs against read-only calls.

use std::{
    collections::HashSet,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};

/// A small JSON client for one wasup.
#[derive(Clone)]
pub struct Api {
    base: String,
    client: awc::Client,
}

impl Api {
    /// A client for the wasup at `base`.
    pub fn new(base: &str) -> Self {
        // Idle connections are dropped before the server's 5 s keep-alive closes them under us.
        let connector = awc::Connector::new()
            .limit(256)
            .conn_keep_alive(Duration::from_secs(2));
        Self {
            base: base.to_string(),
            client: awc::Client::builder()
                .connector(connector)
                .timeout(Duration::from_secs(30))
                .finish(),
        }
    }

    /// `GET path` as JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let mut response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let body = response.body().limit(256 << 20).await?;
        Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// `POST path` with a JSON body; the status and the answer.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        self.call(awc::http::Method::POST, path, Some(body)).await
    }

    /// `DELETE path`; the status and the answer.
    pub async fn delete(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.call(awc::http::Method::DELETE, path, None).await
    }

    async fn call(
        &self,
        method: awc::http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let request = self.client.request(method, format!("{}{path}", self.base));
        let sent = match body {
            Some(body) => request.send_json(body),
            None => request.send(),
        };
        let mut response = sent.await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let status = response.status().as_u16();
        let answer = response.body().await?;
        Ok((
            status,
            serde_json::from_slice(&answer).unwrap_or(Value::Null),
        ))
    }

    /// Waits until `/health` answers.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        while self
            .get("/health")
            .await
            .map_or(true, |health| health["status"].is_null())
        {
            if started.elapsed() > timeout {
                bail!("wasup did not answer /health within {timeout:?}");
            }
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Starts `count` sessions, `concurrency` requests at a time; their ids.
    pub async fn start_sessions(
        &self,
        count: usize,
        concurrency: usize,
    ) -> anyhow::Result<Vec<String>> {
        let answers: Vec<anyhow::Result<(u16, Value)>> = stream::iter(0..count)
            .map(|user| async move { self.post("/start", &json!({ "user_id": user })).await })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut ids = Vec::with_capacity(count);
        for answer in answers {
            let (status, body) = answer?;
            if status != 201 {
                bail!("POST /start answered {status}: {body}");
            }
            ids.push(
                body["session_id"]
                    .as_str()
                    .context("session_id")?
                    .to_string(),
            );
        }
        Ok(ids)
    }

    /// Sessions wasup holds now.
    pub async fn session_count(&self) -> anyhow::Result<u64> {
        Ok(self.get("/health").await?["sessions"]["total"]
            .as_u64()
            .unwrap_or(0))
    }
}

/// Per-second rates of the seeds' scenario, for every 1,000 sessions.
pub struct Mix {
    /// Pending sessions whose QR is scanned.
    pub scans: f64,
    /// Connected sessions whose link drops (they reconnect).
    pub drops: f64,
    /// Connected sessions logged out from the phone (replaced by new sessions).
    pub logouts: f64,
}

/// The mix used by the scenarios: over a minute, for 1,000 sessions, 120 scans, 60 drops and
/// 30 logouts.
pub const SEEDS_MIX: Mix = Mix {
    scans: 2.0,
    drops: 1.0,
    logouts: 0.5,
};

/// Drives the mix for `duration`, keeping about `population` sessions (new ones replace those
/// logged out or expired). Returns how many actions of each kind it made.
pub async fn churn(
    api: &Api,
    population: usize,
    mix: &Mix,
    duration: Duration,
) -> anyhow::Result<Value> {
    const TICK: Duration = Duration::from_millis(250);
    let per_tick = |rate: f64| rate * population as f64 / 1000.0 * TICK.as_secs_f64();
    let (mut scans, mut drops, mut logouts, mut started) = (0u64, 0u64, 0u64, 0u64);
    let mut credit = [0.0f64; 3];
    let mut connected: Vec<String> = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let began = Instant::now();
    let mut last_refresh = Instant::now() - Duration::from_secs(10);
    while began.elapsed() < duration {
        if last_refresh.elapsed() >= Duration::from_secs(2) {
            let list = api.get("/sessions").await?;
            let never_connected: HashSet<&str> = list["pendingSessions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|session| session["session_id"].as_str())
                .collect();
            pending.clear();
            connected.clear();
            for session in list["sessions"].as_array().into_iter().flatten() {
                let (Some(id), Some(state)) =
                    (session["session_id"].as_str(), session["state"].as_str())
                else {
                    continue;
                };
                if state == "active" {
                    connected.push(id.to_string());
                } else if state == "pending" && never_connected.contains(id) {
                    pending.push(id.to_string());
                }
            }
            let total = list["sessions"].as_array().map_or(0, Vec::len);
            if total < population {
                let missing = population - total;
                api.start_sessions(missing, 32).await?;
                started += missing as u64;
            }
            last_refresh = Instant::now();
        }
        for (slot, rate) in [mix.scans, mix.drops, mix.logouts].into_iter().enumerate() {
            credit[slot] += per_tick(rate);
        }
        while credit[0] >= 1.0 {
            credit[0] -= 1.0;
            if let Some(id) = take_random(&mut pending) {
                api.post(&format!("/sessions/{id}/simulate/scan"), &json!({}))
                    .await?;
                scans += 1;
            }
        }
        while credit[1] >= 1.0 {
            credit[1] -= 1.0;
            if let Some(id) = pick_random(&connected) {
                api.post(
                    &format!("/sessions/{id}/simulate/disconnect"),
                    &json!({"reason": "connection_lost"}),
                )
                .await?;
                drops += 1;
            }
        }
        while credit[2] >= 1.0 {
            credit[2] -= 1.0;
            if let Some(id) = take_random(&mut connected) {
                api.post(
                    &format!("/sessions/{id}/simulate/disconnect"),
                    &json!({"reason": "logged_out"}),
                )
                .await?;
                logouts += 1;
            }
        }
        actix_rt::time::sleep(TICK).await;
    }
    Ok(json!({"scans": scans, "drops": drops, "logouts": logouts, "sessions_started": started}))
}

fn take_random(ids: &mut Vec<String>) -> Option<String> {
    (!ids.is_empty()).then(|| ids.swap_remove(fastrand::usize(..ids.len())))
}

fn pick_random(ids: &[String]) -> Option<&String> {
    (!ids.is_empty()).then(|| &ids[fastrand::usize(..ids.len())])
}

/// `wrk -t2 -c<connections> -d<seconds>s --latency` against `url`: requests/s and p99 (ms).
pub fn wrk(url: &str, connections: u32, seconds: u32) -> anyhow::Result<Value> {
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            url,
        ])
        .output()
        .context("wrk must be installed (scripts/bench installs it)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let requests_per_second = text
        .lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .context("wrk printed no Requests/sec")?;
    let p99_ms = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("99%"))
        .map(|value| parse_wrk_duration(value.trim()))
        .unwrap_or(f64::NAN);
    let errors = text
        .lines()
        .any(|line| line.contains("Non-2xx") || line.contains("Socket errors"));
    Ok(
        json!({"url_path": url.splitn(4, '/').nth(3).map(|path| format!("/{path}")), "connections": connections,
        "seconds": seconds, "requests_per_second": requests_per_second, "p99_ms": p99_ms, "errors_reported": errors}),
    )
}

/// `1.23ms`, `456.00us`, `2.01s` → milliseconds.
fn parse_wrk_duration(text: &str) -> f64 {
    let (number, factor) = if let Some(value) = text.strip_suffix("us") {
        (value, 0.001)
    } else if let Some(value) = text.strip_suffix("ms") {
        (value, 1.0)
    } else if let Some(value) = text.strip_suffix('s') {
        (value, 1000.0)
    } else {
        (text, 1.0)
    };
    number
        .trim()
        .parse::<f64>()
        .map_or(f64::NAN, |value| value * factor)
}

#[cfg(test)]
mod tests {
    use super::parse_wrk_duration;

    #[test]
    fn wrk_durations_become_milliseconds() {
        assert_eq!(parse_wrk_duration("456.00us"), 0.456);
        assert_eq!(parse_wrk_duration("1.50ms"), 1.5);
        assert_eq!(parse_wrk_duration("2.00s"), 2000.0);
    }
}
