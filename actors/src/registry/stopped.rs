//! Sessions that ended without a logout while their store may hold a WhatsApp login: the
//! registry keeps their record (state `stopped`, in `GET /sessions/{id}` and in Redis) so the
//! login stays bound to its user: `POST /start` with the same id and `user_id` reopens it
//! without a QR, another `user_id` is refused. Bounded by `sessions.max_stopped` (the oldest is
//! forgotten first, counted) and by the leftover-store retention (a record whose store was
//! swept is forgotten with it).

use std::{collections::HashMap, time::Duration};

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use slog::{info, warn};

use super::{RegistryError, SessionRegistry, SessionReport};
use crate::{
    messages::{SessionId, unix_millis},
    session::SessionState,
};

/// One stopped session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoppedSession {
    /// Its Laravel owner: the only user that may start it again.
    pub user_id: Option<u64>,
    /// Why it ended (idle, reconnects used up, Laravel says inactive, ...).
    pub reason: String,
    /// When it stopped, ms since the epoch.
    pub stopped_at: u64,
    /// When it was first created, ms since the epoch.
    pub created_at: u64,
}

/// The stopped sessions, bounded.
#[derive(Debug)]
pub struct StoppedSessions {
    /// By id.
    records: HashMap<SessionId, StoppedSession>,
    /// Most records kept.
    max: usize,
    /// Records forgotten to stay within `max` since start.
    pub dropped: u64,
}

impl StoppedSessions {
    /// Empty, keeping at most `max`.
    pub fn new(max: usize) -> Self {
        Self {
            records: HashMap::new(),
            max,
            dropped: 0,
        }
    }

    /// Keeps a record; answers the id forgotten to make room, if any.
    pub fn insert(&mut self, session_id: SessionId, record: StoppedSession) -> Option<SessionId> {
        if self.max == 0 {
            self.dropped += 1;
            return Some(session_id);
        }
        let mut evicted = None;
        if !self.records.contains_key(&session_id) && self.records.len() >= self.max {
            // Rare (only at the bound), so a scan for the oldest is cheaper than an index.
            evicted = self
                .records
                .iter()
                .min_by_key(|(_, record)| record.stopped_at)
                .map(|(id, _)| id.clone());
            if let Some(id) = &evicted {
                self.records.remove(id);
                self.dropped += 1;
            }
        }
        self.records.insert(session_id, record);
        evicted
    }

    /// The record of a stopped session.
    pub fn get(&self, session_id: &str) -> Option<&StoppedSession> {
        self.records.get(session_id)
    }

    /// Forgets a record (started again, deleted, or past the retention).
    pub fn remove(&mut self, session_id: &str) -> Option<StoppedSession> {
        self.records.remove(session_id)
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every record, newest first.
    pub fn list(&self) -> Vec<(SessionId, StoppedSession)> {
        let mut all: Vec<_> = self
            .records
            .iter()
            .map(|(id, record)| (id.clone(), record.clone()))
            .collect();
        all.sort_by_key(|(_, record)| std::cmp::Reverse(record.stopped_at));
        all
    }

    /// Ids stopped longer ago than `retention`.
    pub fn older_than(&self, retention: Duration, now_ms: u64) -> Vec<SessionId> {
        let limit = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        self.records
            .iter()
            .filter(|(_, record)| now_ms.saturating_sub(record.stopped_at) > limit)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

impl SessionRegistry {
    /// Keeps the record of a session that ended without a logout, when its store may hold a
    /// login; otherwise forgets the record.
    pub(super) fn keep_stopped(
        &mut self,
        session_id: &str,
        record: StoppedSession,
        may_hold_login: bool,
        ctx: &mut Context<Self>,
    ) {
        if !may_hold_login {
            self.unsave(session_id, ctx);
            return;
        }
        let evicted = self.stopped.insert(session_id.to_string(), record);
        self.save_stopped(session_id, ctx);
        if let Some(evicted) = evicted {
            info!(self.log, "Oldest stopped session forgotten (sessions.max_stopped); its store stays until the leftover sweep.";
                "session_id" => &evicted);
            self.unsave(&evicted, ctx);
        }
    }

    /// `GET /sessions/{id}` of a stopped session: no actor to ask.
    pub(super) fn stopped_report(
        &self,
        session_id: SessionId,
        stopped: &StoppedSession,
    ) -> SessionReport {
        SessionReport {
            session_id,
            user_id: stopped.user_id,
            state: SessionState::Stopped,
            engine: self.engine_factory.kind(),
            generation: 0,
            created_at: stopped.created_at,
            age_ms: unix_millis().saturating_sub(stopped.created_at),
            restarts: 0,
            last_crash: None,
            renewals: 0,
            node: self.node_id.clone(),
            responsive: false,
            stopped: Some(stopped.clone()),
            actor: None,
        }
    }

    /// Why a session that does not run cannot be used: stopped (start it again) or unknown.
    pub(super) fn not_running(&self, session_id: SessionId) -> RegistryError {
        if self.stopped.get(&session_id).is_some() {
            RegistryError::Stopped(session_id)
        } else {
            RegistryError::NotFound(session_id)
        }
    }

    /// Deletes a stopped session's store (`DELETE ?logout=true`: no actor runs to do it).
    pub(super) fn delete_store(&self, session_id: &str) {
        let dir = self.store_root.join(session_id);
        match std::fs::remove_dir_all(&dir) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                warn!(self.log, "Session store could not be removed."; "dir" => %dir.display(), "error" => %error);
            }
            _ => {}
        }
    }

    /// Forgets stopped records whose stores the leftover sweep may now remove.
    pub(super) fn forget_stale_stopped(&mut self, ctx: &mut Context<Self>) {
        let stale = self
            .stopped
            .older_than(self.config.leftover_store_retention, unix_millis());
        for session_id in &stale {
            self.stopped.remove(session_id);
            self.unsave(session_id, ctx);
        }
    }
}

impl StoppedSession {
    /// A session stopping now, for `reason` (at most 200 characters kept).
    pub fn now(user_id: Option<u64>, reason: &str, created_at: u64) -> Self {
        Self {
            user_id,
            reason: reason.chars().take(200).collect(),
            stopped_at: unix_millis(),
            created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(at: u64) -> StoppedSession {
        StoppedSession {
            user_id: Some(1),
            reason: "idle".into(),
            stopped_at: at,
            created_at: 0,
        }
    }

    #[test]
    fn the_oldest_record_goes_first_at_the_bound() {
        let mut stopped = StoppedSessions::new(2);
        assert_eq!(stopped.insert("a".into(), record(10)), None);
        assert_eq!(stopped.insert("b".into(), record(5)), None);
        assert_eq!(
            stopped.insert("a".into(), record(20)),
            None,
            "a replaces itself"
        );
        assert_eq!(stopped.insert("c".into(), record(30)), Some("b".into()));
        assert_eq!(stopped.len(), 2);
        assert_eq!(stopped.dropped, 1);
        assert!(stopped.get("b").is_none());
        let ids: Vec<String> = stopped.list().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, ["c", "a"]);
    }

    #[test]
    fn records_past_the_retention_are_found() {
        let mut stopped = StoppedSessions::new(10);
        stopped.insert("old".into(), record(1_000));
        stopped.insert("new".into(), record(9_000));
        assert_eq!(
            stopped.older_than(Duration::from_secs(5), 10_000),
            vec!["old".to_string()]
        );
    }
}
