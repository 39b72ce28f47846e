//! Per-session QR forwarding: drop duplicates, throttle to one per window, keep the newest
//! (trailing edge) so the last QR of a burst is always sent when the window ends. Dedupe compares
//! digests, so the last digest can be seeded from Redis after a restart or on another node.

use std::time::{Duration, Instant};

/// What to do with a QR now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QrDecision {
    /// Send this QR now.
    Forward(String),
    /// Held; call [`QrForwarder::release`] at this instant.
    HoldUntil(Instant),
    /// The same as the last one sent (or held): nothing to do.
    Duplicate,
}

/// FNV-1a, 64 bits: a hash that is the same on every node and run (unlike std's).
pub fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A stable digest of a QR text (hex FNV-1a).
pub fn qr_digest(code: &str) -> String {
    format!("{:016x}", fnv1a(code))
}

/// Dedupe and throttle state for one session.
#[derive(Debug, Default)]
pub struct QrForwarder {
    /// Digest of the last QR handed on, for dedupe.
    last_forwarded: Option<String>,
    /// When the last QR was handed on: the throttle window starts there.
    last_forwarded_at: Option<Instant>,
    /// The newest QR waiting for the window to end.
    held: Option<String>,
    /// QRs dropped as duplicates.
    pub duplicates: u64,
    /// QRs replaced while held (a newer one came within the window).
    pub superseded: u64,
}

impl QrForwarder {
    /// Decides what to do with a QR received at `now`.
    pub fn offer(&mut self, code: String, now: Instant, window: Duration) -> QrDecision {
        if self.held.as_deref() == Some(code.as_str())
            || (self.held.is_none() && self.last_forwarded == Some(qr_digest(&code)))
        {
            self.duplicates += 1;
            return QrDecision::Duplicate;
        }
        match self.last_forwarded_at {
            Some(at) if now < at + window => {
                if self.held.replace(code).is_some() {
                    self.superseded += 1;
                }
                QrDecision::HoldUntil(at + window)
            }
            _ => {
                self.held = None;
                self.mark_forwarded(code.clone(), now);
                QrDecision::Forward(code)
            }
        }
    }

    /// The held QR, if the window has ended; it counts as forwarded now.
    pub fn release(&mut self, now: Instant, window: Duration) -> Option<String> {
        let window_over = self.last_forwarded_at.is_none_or(|at| now >= at + window);
        if !window_over {
            return None;
        }
        let code = self.held.take()?;
        if self.last_forwarded == Some(qr_digest(&code)) {
            self.duplicates += 1;
            return None;
        }
        self.mark_forwarded(code.clone(), now);
        Some(code)
    }

    /// Remembers the digest of a QR forwarded before (by an earlier run or another node).
    pub fn seed(&mut self, digest: String) {
        if self.last_forwarded.is_none() {
            self.last_forwarded = Some(digest);
        }
    }

    /// Forgets a held QR (the session connected or closed: it is stale).
    pub fn discard_held(&mut self) {
        self.held = None;
    }

    /// Whether a QR waits for its window.
    pub fn has_held(&self) -> bool {
        self.held.is_some()
    }

    fn mark_forwarded(&mut self, code: String, now: Instant) {
        self.last_forwarded = Some(qr_digest(&code));
        self.last_forwarded_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(30);

    #[test]
    fn first_qr_goes_at_once_and_duplicates_are_dropped() {
        let now = Instant::now();
        let mut forwarder = QrForwarder::default();
        assert_eq!(
            forwarder.offer("a".into(), now, WINDOW),
            QrDecision::Forward("a".into())
        );
        assert_eq!(
            forwarder.offer("a".into(), now + WINDOW * 2, WINDOW),
            QrDecision::Duplicate
        );
        assert_eq!(forwarder.duplicates, 1);
    }

    #[test]
    fn a_burst_keeps_the_newest_and_sends_it_when_the_window_ends() {
        let now = Instant::now();
        let mut forwarder = QrForwarder::default();
        assert_eq!(
            forwarder.offer("a".into(), now, WINDOW),
            QrDecision::Forward("a".into())
        );
        let second = now + Duration::from_secs(1);
        assert_eq!(
            forwarder.offer("b".into(), second, WINDOW),
            QrDecision::HoldUntil(now + WINDOW)
        );
        assert_eq!(
            forwarder.offer("c".into(), second, WINDOW),
            QrDecision::HoldUntil(now + WINDOW)
        );
        assert_eq!(forwarder.superseded, 1);
        assert_eq!(
            forwarder.release(now + Duration::from_secs(29), WINDOW),
            None
        );
        assert_eq!(forwarder.release(now + WINDOW, WINDOW), Some("c".into()));
        assert_eq!(forwarder.release(now + WINDOW * 3, WINDOW), None);
    }

    #[test]
    fn a_seeded_digest_drops_the_same_qr_after_a_restart() {
        let mut forwarder = QrForwarder::default();
        forwarder.seed(qr_digest("a"));
        assert_eq!(
            forwarder.offer("a".into(), Instant::now(), WINDOW),
            QrDecision::Duplicate
        );
        assert_eq!(qr_digest("a"), "af63dc4c8601ec8c");
    }

    #[test]
    fn zero_window_forwards_everything_new() {
        let now = Instant::now();
        let mut forwarder = QrForwarder::default();
        for code in ["a", "b", "c"] {
            assert_eq!(
                forwarder.offer(code.into(), now, Duration::ZERO),
                QrDecision::Forward(code.into())
            );
        }
    }
}
