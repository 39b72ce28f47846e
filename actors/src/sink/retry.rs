//! Exponential backoff with jitter, shared by the sink and the batch queue.

use std::time::Duration;

/// Delay before retry number `attempt` (0 for the first retry): `base * 2^attempt`, capped at
/// `max`, then jittered to between 50 % and 100 % of that so retries from many batches spread out.
pub fn backoff_delay(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exponential = base.saturating_mul(1u32 << attempt.min(20)).min(max);
    exponential.mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps_with_jitter_below_the_nominal_value() {
        let base = Duration::from_secs(3);
        let max = Duration::from_secs(20);
        for (attempt, nominal) in [(0, 3), (1, 6), (2, 12), (3, 20), (30, 20)] {
            let nominal = Duration::from_secs(nominal);
            for _ in 0..50 {
                let delay = backoff_delay(base, max, attempt);
                assert!(
                    delay <= nominal && delay >= nominal / 2,
                    "{attempt}: {delay:?}"
                );
            }
        }
    }
}
