//! What the registry remembers of each session, and its crash-restart policy.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use actix::Addr;
use serde::Serialize;

use crate::{
    messages::unix_millis,
    session::{SessionActor, SessionState, millis},
};

/// Longest wait before a crashed session is restarted.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);

/// One supervised session.
pub struct SessionEntry {
    /// Its Laravel owner.
    pub user_id: Option<u64>,
    /// Incarnation number: bumped on every (re)start, so news from an old actor is ignored.
    pub generation: u64,
    /// The running actor; `None` while a restart is scheduled.
    pub addr: Option<Addr<SessionActor>>,
    /// State as last reported by the actor.
    pub state: SessionState,
    /// Whether it was ever connected (never-connected sessions are what the pending sweep removes).
    pub ever_connected: bool,
    /// It started on a store kept from an earlier incarnation, which may hold a login: ending
    /// before it connects must not delete it (only a logout does).
    pub kept_store: bool,
    /// When the session was created (kept across restarts).
    pub created_at: Instant,
    /// The same, in ms since the epoch, for the API.
    pub created_unix_ms: u64,
    /// When the state last changed.
    pub state_since: Instant,
    /// Crash restarts so far.
    pub restarts: u32,
    /// When recent crashes happened (within the restart window).
    pub recent_crashes: VecDeque<Instant>,
    /// The last crash's reason.
    pub last_crash: Option<String>,
    /// Renewals after max lifetime.
    pub renewals: u32,
    /// Its id was made by wasup at `POST /start` (none was given): until its first actor runs,
    /// no earlier run or node can have left anything in Redis under it.
    pub id_made_here: bool,
}

/// What to do after a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashVerdict {
    /// Restart after this delay.
    RestartAfter(Duration),
    /// Too many crashes in the window: give the session up.
    GiveUp,
}

impl SessionEntry {
    /// A fresh entry for a session about to start.
    pub fn new(user_id: Option<u64>, now: Instant) -> Self {
        Self {
            user_id,
            generation: 0,
            addr: None,
            state: SessionState::Starting,
            ever_connected: false,
            kept_store: false,
            created_at: now,
            created_unix_ms: unix_millis(),
            state_since: now,
            restarts: 0,
            recent_crashes: VecDeque::new(),
            last_crash: None,
            renewals: 0,
            id_made_here: false,
        }
    }

    /// Records a state the actor reported.
    pub fn record_state(&mut self, state: SessionState, now: Instant) {
        if state == SessionState::Active {
            self.ever_connected = true;
        }
        if state != self.state {
            self.state = state;
            self.state_since = now;
        }
    }

    /// Records a crash and decides: restart with a backoff doubling per recent crash, or give up
    /// after `max_restarts` crashes within `window`.
    pub fn record_crash(
        &mut self,
        reason: String,
        now: Instant,
        base: Duration,
        max_restarts: u32,
        window: Duration,
    ) -> CrashVerdict {
        self.addr = None;
        self.last_crash = Some(reason);
        self.record_state(SessionState::Restarting, now);
        while self
            .recent_crashes
            .front()
            .is_some_and(|at| now.duration_since(*at) > window)
        {
            self.recent_crashes.pop_front();
        }
        self.recent_crashes.push_back(now);
        let recent = u32::try_from(self.recent_crashes.len()).unwrap_or(u32::MAX);
        if recent > max_restarts {
            return CrashVerdict::GiveUp;
        }
        self.restarts += 1;
        let delay = base
            .saturating_mul(1 << (recent - 1).min(16))
            .min(MAX_RESTART_DELAY);
        CrashVerdict::RestartAfter(delay)
    }

    /// Whether the pending sweep should remove it: never connected and older than `timeout`.
    pub fn is_expired_pending(&self, now: Instant, timeout: Duration) -> bool {
        !self.ever_connected
            && self.state != SessionState::Closed
            && now.duration_since(self.created_at) >= timeout
    }

    /// Whether the not-connected sweep should remove it: it was connected once, is not now, and
    /// has not been for a whole sweep interval.
    pub fn is_lost(&self, now: Instant, interval: Duration) -> bool {
        self.ever_connected
            && matches!(
                self.state,
                SessionState::Connecting | SessionState::Pending | SessionState::Starting
            )
            && now.duration_since(self.state_since) >= interval
    }

    /// The list view of this entry.
    pub fn summary(&self, session_id: &str, now: Instant) -> SessionSummary {
        SessionSummary {
            session_id: session_id.to_string(),
            user_id: self.user_id,
            state: self.state,
            created_at: self.created_unix_ms,
            age_ms: millis(now - self.created_at),
            state_age_ms: millis(now - self.state_since),
            restarts: self.restarts,
        }
    }
}

/// A session in `GET /sessions`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SessionSummary {
    /// The session.
    pub session_id: String,
    /// Its Laravel owner.
    pub user_id: Option<u64>,
    /// Lifecycle state.
    pub state: SessionState,
    /// Creation time, ms since the epoch.
    pub created_at: u64,
    /// Milliseconds since creation.
    pub age_ms: u64,
    /// Milliseconds in the current state.
    pub state_age_ms: u64,
    /// Crash restarts.
    pub restarts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_then_give_up_within_the_window() {
        let now = Instant::now();
        let mut entry = SessionEntry::new(None, now);
        let base = Duration::from_millis(100);
        let window = Duration::from_secs(60);
        let verdicts: Vec<_> = (0..4)
            .map(|_| entry.record_crash("boom".into(), now, base, 3, window))
            .collect();
        assert_eq!(
            verdicts,
            vec![
                CrashVerdict::RestartAfter(Duration::from_millis(100)),
                CrashVerdict::RestartAfter(Duration::from_millis(200)),
                CrashVerdict::RestartAfter(Duration::from_millis(400)),
                CrashVerdict::GiveUp,
            ]
        );
        assert_eq!(entry.restarts, 3);
        let later = now + Duration::from_secs(61);
        assert_eq!(
            entry.record_crash("boom".into(), later, base, 3, window),
            CrashVerdict::RestartAfter(Duration::from_millis(100)),
            "old crashes leave the window"
        );
    }

    #[test]
    fn sweeps_pick_never_connected_and_lost_sessions() {
        let now = Instant::now();
        let mut entry = SessionEntry::new(None, now);
        entry.record_state(SessionState::Pending, now);
        assert!(!entry.is_expired_pending(now + Duration::from_secs(5), Duration::from_secs(10)));
        assert!(entry.is_expired_pending(now + Duration::from_secs(10), Duration::from_secs(10)));
        entry.record_state(SessionState::Active, now);
        assert!(!entry.is_expired_pending(now + Duration::from_secs(10), Duration::from_secs(10)));
        assert!(!entry.is_lost(now + Duration::from_secs(100), Duration::from_secs(10)));
        entry.record_state(SessionState::Connecting, now);
        assert!(entry.is_lost(now + Duration::from_secs(10), Duration::from_secs(10)));
    }
}
