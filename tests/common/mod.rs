//! Shared helpers of the black-box tests: a stand-in Laravel, a wasup on port 0, polling waits.
#![allow(dead_code)]

pub mod child;
pub mod laravel;
pub mod redis;
pub mod service;

use std::{
    future::Future,
    time::{Duration, Instant},
};

#[allow(unused_imports)]
pub use laravel::{Behaviour, Laravel};
#[allow(unused_imports)]
pub use service::{TestWasup, fast_config};

/// How long tests wait for an outcome before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Polls `condition` every 20 ms until it holds or `timeout` passes; panics with `what` then.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if condition().await {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}
