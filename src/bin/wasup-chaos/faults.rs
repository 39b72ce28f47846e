//! The processes the chaos suite runs (Redis, wasup, the stand-in Laravel) and the faults it
//! strikes them with, one per round, while traffic flows.

use std::time::Duration;

use serde_json::json;

use crate::{
    laravel::{Answering, ChaosLaravel},
    load::Api,
    processes::{RedisProcess, WasupProcess, free_port},
    traffic::Ledger,
};

/// One fault per round, in this order (the order repeats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// wasup killed with -9 and started again at once.
    KillWasup,
    /// Laravel's port closed (connections refused), then opened again.
    LaravelDown,
    /// Laravel answers 500 to every batch.
    Laravel500,
    /// Many poison messages: Laravel refuses whole batches with 422.
    PoisonBurst,
    /// Laravel takes `stall` to answer (longer than wasup's request timeout), then stores.
    LaravelStall,
    /// Laravel's status look-ups answer 404 while connected sessions lose their link.
    Lookups404,
    /// Redis stopped and started again.
    RedisRestart,
    /// wasup stopped with SIGTERM and started again.
    RestartWasup,
}

impl Fault {
    /// Every fault, in round order.
    pub const ALL: [Fault; 8] = [
        Fault::KillWasup,
        Fault::LaravelDown,
        Fault::Laravel500,
        Fault::PoisonBurst,
        Fault::LaravelStall,
        Fault::Lookups404,
        Fault::RedisRestart,
        Fault::RestartWasup,
    ];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillWasup => "kill_9",
            Fault::LaravelDown => "laravel_down",
            Fault::Laravel500 => "laravel_500",
            Fault::PoisonBurst => "laravel_422",
            Fault::LaravelStall => "laravel_stall",
            Fault::Lookups404 => "lookups_404",
            Fault::RedisRestart => "redis_restart",
            Fault::RestartWasup => "sigterm",
        }
    }
}

/// What the suite runs.
pub struct World {
    /// Redis, with AOF.
    pub redis: RedisProcess,
    /// The stand-in Laravel.
    pub laravel: ChaosLaravel,
    /// The wasup release (or dev) binary.
    pub wasup: WasupProcess,
    /// A client for wasup's API.
    pub api: Api,
}

/// wasup's settings in the suite: production defaults except the recovery timers, shortened so
/// a round recovers in seconds rather than minutes (the breaker's 180 s, backoffs of minutes),
/// a request timeout below the stall so stalls end in timeouts and retries, and cache tiers
/// short enough that status look-ups reach Laravel.
fn wasup_env(laravel: &ChaosLaravel, redis: &RedisProcess) -> Vec<(&'static str, String)> {
    let shortened = [
        ("WASUP__SESSIONS__MAX_ACTIVE", "1000000"),
        ("WASUP__SESSIONS__RECONNECT_BASE", "200ms"),
        ("WASUP__SESSIONS__RECONNECT_MAX", "2s"),
        ("WASUP__BREAKER__RESET_TIMEOUT", "3s"),
        ("WASUP__LARAVEL__TIMEOUT", "5s"),
        ("WASUP__LARAVEL__BACKOFF_BASE", "500ms"),
        ("WASUP__LARAVEL__BACKOFF_MAX", "3s"),
        ("WASUP__BATCH__RETRY_BACKOFF_MAX", "3s"),
        ("WASUP__MESSAGES__BACKOFF_BASE", "500ms"),
        ("WASUP__MESSAGES__BACKOFF_MAX", "3s"),
        // The cache tiers forget fast, so a dropped link asks Laravel (and meets its 404s).
        ("WASUP__CACHE__LOCAL_TTL", "200ms"),
        ("WASUP__CACHE__STATUS_TTL", "200ms"),
        ("WASUP__CACHE__CONNECTION_TTL", "200ms"),
    ];
    let mut env: Vec<(&'static str, String)> = shortened
        .into_iter()
        .map(|(name, value)| (name, value.to_string()))
        .collect();
    env.push(("LARAVEL_API", laravel.url.clone()));
    env.push(("REDIS_URL", redis.url()));
    env
}

impl World {
    /// Starts Redis, the stand-in and wasup, and waits until wasup answers.
    pub async fn start() -> anyhow::Result<Self> {
        let redis = RedisProcess::start()?;
        let laravel = ChaosLaravel::start(free_port()?)?;
        let wasup = WasupProcess::start(&wasup_env(&laravel, &redis))?;
        let api = Api::new(&wasup.base);
        api.wait_ready(Duration::from_secs(60)).await?;
        Ok(Self {
            redis,
            laravel,
            wasup,
            api,
        })
    }

    /// Strikes `fault` now and undoes it after `lasting` (the process faults are instant).
    pub async fn strike(
        &mut self,
        fault: Fault,
        lasting: Duration,
        stall: Duration,
        ledger: &std::cell::RefCell<Ledger>,
    ) -> anyhow::Result<()> {
        match fault {
            Fault::KillWasup => {
                self.wasup.kill()?;
                self.wasup.start_again()?;
                self.api.wait_ready(Duration::from_secs(120)).await?;
            }
            Fault::RestartWasup => {
                self.wasup.terminate().await?;
                self.wasup.start_again()?;
                self.api.wait_ready(Duration::from_secs(120)).await?;
            }
            Fault::LaravelDown => {
                self.laravel.down().await;
                actix_rt::time::sleep(lasting).await;
                self.laravel.up()?;
            }
            Fault::Laravel500 => {
                self.laravel.answer(Answering::Failing(500));
                actix_rt::time::sleep(lasting).await;
                self.laravel.answer(Answering::Healthy);
            }
            Fault::PoisonBurst => actix_rt::time::sleep(lasting).await,
            Fault::LaravelStall => {
                self.laravel.answer(Answering::Stalling(stall));
                actix_rt::time::sleep(lasting).await;
                self.laravel.answer(Answering::Healthy);
            }
            Fault::Lookups404 => {
                self.laravel.lookups_missing(true);
                let dropped: Vec<String> = {
                    let ledger = ledger.borrow();
                    let paired = ledger.sessions.iter().filter(|session| session.paired);
                    paired.take(10).map(|session| session.id.clone()).collect()
                };
                for id in dropped {
                    let body = json!({"reason": "connection_lost"});
                    let _ = self
                        .api
                        .post(&format!("/sessions/{id}/simulate/disconnect"), &body)
                        .await;
                }
                actix_rt::time::sleep(lasting).await;
                self.laravel.lookups_missing(false);
            }
            Fault::RedisRestart => {
                self.redis.stop()?;
                actix_rt::time::sleep(lasting).await;
                self.redis.start_again()?;
            }
        }
        Ok(())
    }
}
