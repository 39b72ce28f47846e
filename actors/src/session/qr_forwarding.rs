//! Per-session QR forwarding: a new QR goes to Laravel at once; duplicates are dropped; a storm
//! guard lets through at most one QR per `qr_min_interval`, keeping the newest (trailing edge)
//! and never holding it past the expiry of the QR Laravel already has. Dedupe compares digests,
//! so the last digest can be seeded from Redis after a restart or on another node.

use std::time::{Duration, Instant};

/// What to do with a QR now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QrDecision {
    /// Send this QR now.
    Forward(String),
    /// Held by the storm guard; call [`QrForwarder::release`] at this instant.
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

/// The QR last handed on: what Laravel holds (or soon will).
#[derive(Debug)]
struct Forwarded {
    /// When it was handed on: the storm guard's interval starts there.
    at: Instant,
    /// When WhatsApp stops accepting it: a held QR never waits past this.
    expires_at: Instant,
}

/// A QR held by the storm guard.
#[derive(Debug)]
struct Held {
    /// The raw QR text.
    code: String,
    /// When it expires itself: released later than this, it is dropped.
    expires_at: Instant,
}

/// Dedupe and storm-guard state for one session.
#[derive(Debug, Default)]
pub struct QrForwarder {
    /// Digest of the last QR handed on, for dedupe (seeded from Redis after a restart).
    last_digest: Option<String>,
    /// The last QR handed on in this run.
    last: Option<Forwarded>,
    /// The newest QR waiting for the guard's interval to end.
    held: Option<Held>,
    /// QRs dropped as duplicates.
    pub duplicates: u64,
    /// QRs replaced while held (a newer one came within the interval).
    pub superseded: u64,
    /// Held QRs that expired before the guard let them through.
    pub expired: u64,
}

impl QrForwarder {
    /// Decides what to do with a QR received at `now` that WhatsApp accepts until `expires_at`.
    pub fn offer(
        &mut self,
        code: String,
        expires_at: Instant,
        now: Instant,
        min_interval: Duration,
    ) -> QrDecision {
        let same_as_held = self.held.as_ref().is_some_and(|held| held.code == code);
        if same_as_held
            || (self.held.is_none() && self.last_digest.as_deref() == Some(&qr_digest(&code)))
        {
            self.duplicates += 1;
            return QrDecision::Duplicate;
        }
        match self.release_at(min_interval) {
            Some(release_at) if now < release_at => {
                if self.held.replace(Held { code, expires_at }).is_some() {
                    self.superseded += 1;
                }
                QrDecision::HoldUntil(release_at)
            }
            _ => {
                self.held = None;
                self.mark_forwarded(&code, expires_at, now);
                QrDecision::Forward(code)
            }
        }
    }

    /// When the guard lets the next QR through: the interval's end, or sooner if the QR Laravel
    /// holds expires first. `None` before any QR was handed on in this run.
    fn release_at(&self, min_interval: Duration) -> Option<Instant> {
        self.last
            .as_ref()
            .map(|last| (last.at + min_interval).min(last.expires_at))
    }

    /// The held QR, once the guard lets it through; it counts as forwarded now. A held QR that
    /// expired meanwhile is dropped.
    pub fn release(&mut self, now: Instant, min_interval: Duration) -> Option<String> {
        if self
            .release_at(min_interval)
            .is_some_and(|release_at| now < release_at)
        {
            return None;
        }
        let held = self.held.take()?;
        if held.expires_at <= now {
            self.expired += 1;
            return None;
        }
        if self.last_digest.as_deref() == Some(&qr_digest(&held.code)) {
            self.duplicates += 1;
            return None;
        }
        self.mark_forwarded(&held.code, held.expires_at, now);
        Some(held.code)
    }

    /// Remembers the digest of a QR forwarded before (by an earlier run or another node).
    pub fn seed(&mut self, digest: String) {
        if self.last_digest.is_none() {
            self.last_digest = Some(digest);
        }
    }

    /// Forgets a held QR (the session connected or closed: it is stale).
    pub fn discard_held(&mut self) {
        self.held = None;
    }

    /// Whether a QR waits for the guard.
    pub fn has_held(&self) -> bool {
        self.held.is_some()
    }

    fn mark_forwarded(&mut self, code: &str, expires_at: Instant, now: Instant) {
        self.last_digest = Some(qr_digest(code));
        self.last = Some(Forwarded {
            at: now,
            expires_at,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUARD: Duration = Duration::from_secs(5);
    const LIFE: Duration = Duration::from_secs(20);

    #[test]
    fn a_new_qr_goes_at_once_and_duplicates_are_dropped() {
        let now = Instant::now();
        let mut forwarder = QrForwarder::default();
        assert_eq!(
            forwarder.offer("a".into(), now + LIFE, now, GUARD),
            QrDecision::Forward("a".into())
        );
        let later = now + GUARD * 2;
        assert_eq!(
            forwarder.offer("a".into(), later + LIFE, later, GUARD),
            QrDecision::Duplicate
        );
        assert_eq!(
            forwarder.offer("b".into(), later + LIFE, later, GUARD),
            QrDecision::Forward("b".into()),
            "WhatsApp's real rotation (one QR per 20 s) is never held"
        );
        assert_eq!(forwarder.duplicates, 1);
    }

    #[test]
    fn a_storm_keeps_the_newest_and_sends_it_when_the_interval_ends() {
        let now = Instant::now();
        let mut forwarder = QrForwarder::default();
        assert_eq!(
            forwarder.offer("a".into(), now + LIFE, now, GUARD),
            QrDecision::Forward("a".into())
        );
        let second = now + Duration::from_secs(1);
        assert_eq!(
            forwarder.offer("b".into(), second + LIFE, second, GUARD),
            QrDecision::HoldUntil(now + GUARD)
        );
        assert_eq!(
            forwarder.offer("c".into(), second + LIFE, second, GUARD),
            QrDecision::HoldUntil(now + GUARD)
        );
        assert_eq!(forwarder.superseded, 1);
        assert_eq!(forwarder.release(now + Duration::from_secs(4), GUARD), None);
        assert_eq!(forwarder.release(now + GUARD, GUARD), Some("c".into()));
        assert_eq!(forwarder.release(now + GUARD * 3, GUARD), None);
    }

    #[test]
    fn a_held_qr_never_waits_past_the_expiry_of_the_one_laravel_holds() {
        let now = Instant::now();
        let mut forwarder = QrForwarder::default();
        let short_life = Duration::from_secs(2);
        forwarder.offer("a".into(), now + short_life, now, GUARD);
        let second = now + Duration::from_secs(1);
        assert_eq!(
            forwarder.offer("b".into(), second + LIFE, second, GUARD),
            QrDecision::HoldUntil(now + short_life),
            "released when `a` dies, before the 5 s interval ends"
        );
        assert_eq!(forwarder.release(now + short_life, GUARD), Some("b".into()));
        let third = now + Duration::from_secs(3);
        assert_eq!(
            forwarder.offer("c".into(), third + LIFE, third, GUARD),
            QrDecision::HoldUntil(now + short_life + GUARD)
        );
    }

    #[test]
    fn a_held_qr_that_expired_is_dropped_and_counted() {
        let now = Instant::now();
        let mut forwarder = QrForwarder::default();
        forwarder.offer("a".into(), now + LIFE, now, GUARD);
        let second = now + Duration::from_secs(1);
        forwarder.offer("b".into(), second + Duration::from_secs(1), second, GUARD);
        assert_eq!(forwarder.release(now + GUARD, GUARD), None);
        assert_eq!(forwarder.expired, 1);
        assert!(!forwarder.has_held());
    }

    #[test]
    fn a_seeded_digest_drops_the_same_qr_after_a_restart() {
        let now = Instant::now();
        let mut forwarder = QrForwarder::default();
        forwarder.seed(qr_digest("a"));
        assert_eq!(
            forwarder.offer("a".into(), now + LIFE, now, GUARD),
            QrDecision::Duplicate
        );
        assert_eq!(qr_digest("a"), "af63dc4c8601ec8c");
    }

    #[test]
    fn zero_interval_forwards_everything_new() {
        let now = Instant::now();
        let mut forwarder = QrForwarder::default();
        for code in ["a", "b", "c"] {
            assert_eq!(
                forwarder.offer(code.into(), now + LIFE, now, Duration::ZERO),
                QrDecision::Forward(code.into())
            );
        }
    }
}
