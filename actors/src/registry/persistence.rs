//! The registry's durable side: each session's record in the Redis hash `wasup:sessions`
//! (written on start, on every state change, removed when the session is forgotten), and the
//! restore of those sessions when wasup starts again.

use std::time::{Duration, Instant};

use actix::prelude::*;
use deadpool_redis::redis;
use serde::{Deserialize, Serialize};
use slog::{info, warn};
use tokio::sync::oneshot;

use super::{SessionEntry, SessionRegistry, StoppedSession, stores};
use crate::{
    messages::{MAX_USER_ID, is_valid_session_id, unix_millis},
    session::SessionState,
    store::{
        Keys, PersistQueue, RedisPool, RepeatGate, drive_writes, next_seq, say_not_readable_yet,
        split_stored,
    },
};

/// How soon the restore is tried again while Redis does not answer.
const RESTORE_RETRY: Duration = Duration::from_secs(1);

/// What is kept of a session in Redis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Its Laravel owner.
    pub user_id: Option<u64>,
    /// Last known state.
    pub state: String,
    /// Creation time, ms since the epoch.
    pub created_at: u64,
    /// Whether it was ever connected.
    pub ever_connected: bool,
    /// Why and when it stopped, for a record in state `stopped` (restored as such, not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<StoppedSession>,
}

/// The registry's Redis link.
pub struct SessionStore {
    /// Journal and write loop for the sessions hash.
    pub queue: PersistQueue,
    /// Key names.
    pub keys: Keys,
    /// For the restore read.
    pub pool: RedisPool,
    /// Whether the records of an earlier run were restored.
    pub restored: bool,
    /// Answered when nothing is left to write ([`FlushRegistry`]).
    pub flush_waiters: Vec<oneshot::Sender<()>>,
    /// Says once (then once a minute) that the records cannot be read yet.
    pub unreadable_log: RepeatGate,
}

impl SessionStore {
    /// A store writing through `queue`.
    pub fn new(pool: RedisPool, keys: Keys, queue: PersistQueue) -> Self {
        Self {
            queue,
            keys,
            pool,
            restored: false,
            flush_waiters: Vec::new(),
            unreadable_log: RepeatGate::default(),
        }
    }
}

impl SessionRegistry {
    /// Queues the write of a session's record.
    pub(super) fn save(&mut self, session_id: &str, ctx: &mut Context<Self>) {
        let Some(entry) = self.sessions.get(session_id) else {
            return;
        };
        let record = SessionRecord {
            user_id: entry.user_id,
            state: entry.state.as_str().to_string(),
            created_at: entry.created_unix_ms,
            ever_connected: entry.ever_connected,
            stopped: None,
        };
        self.write_record(session_id, &record, ctx);
    }

    /// Queues the write of a stopped session's record.
    pub(super) fn save_stopped(&mut self, session_id: &str, ctx: &mut Context<Self>) {
        let Some(stopped) = self.stopped.get(session_id) else {
            return;
        };
        let record = SessionRecord {
            user_id: stopped.user_id,
            state: SessionState::Stopped.as_str().to_string(),
            created_at: stopped.created_at,
            ever_connected: true,
            stopped: Some(stopped.clone()),
        };
        self.write_record(session_id, &record, ctx);
    }

    fn write_record(&mut self, session_id: &str, record: &SessionRecord, ctx: &mut Context<Self>) {
        let Some(store) = &mut self.store else {
            return;
        };
        if let Ok(json) = serde_json::to_string(record) {
            let key = store.keys.sessions();
            store
                .queue
                .journal()
                .put(&key, session_id, next_seq(), json);
            self.persist(ctx);
        }
    }

    /// Queues the removal of a forgotten session's record.
    pub(super) fn unsave(&mut self, session_id: &str, ctx: &mut Context<Self>) {
        if let Some(store) = &mut self.store {
            let key = store.keys.sessions();
            store.queue.journal().remove(&key, session_id, None);
            self.persist(ctx);
        }
    }

    fn persist(&mut self, ctx: &mut Context<Self>) {
        drive_writes(
            self,
            ctx,
            |registry| registry.store.as_mut().map(|store| &mut store.queue),
            |registry, _, error| {
                let Some(store) = &mut registry.store else {
                    return;
                };
                if let Some(error) = error
                    && store.queue.failed_writes.is_power_of_two()
                {
                    warn!(registry.log, "Session registry write to Redis failed; retrying."; "error" => %error);
                }
                if store.queue.unwritten() == 0 {
                    for waiter in store.flush_waiters.drain(..) {
                        let _ = waiter.send(());
                    }
                }
            },
        );
    }

    /// Restarts the sessions an earlier run left in Redis; retries until Redis answers.
    pub(super) fn restore(&mut self, ctx: &mut Context<Self>) {
        let Some(store) = &self.store else { return };
        if store.restored {
            return;
        }
        let pool = store.pool.clone();
        let key = store.keys.sessions();
        async move { pool.command::<Vec<(String, String)>>(redis::cmd("HGETALL").arg(&key)).await }
            .into_actor(self)
            .map(|loaded, registry, ctx| match loaded {
                Ok(entries) => {
                    if let Some(store) = &mut registry.store {
                        store.restored = true;
                    }
                    let mut restored = 0usize;
                    let mut skipped = 0usize;
                    let mut kept_stopped = 0usize;
                    for (session_id, stored) in entries {
                        if registry.sessions.contains_key(&session_id) || !registry.accepting {
                            continue;
                        }
                        let record = match restorable(&session_id, &stored) {
                            Ok(record) => record,
                            Err(why) => {
                                skipped += 1;
                                warn!(registry.log, "Session record in Redis not restored."; "why" => why,
                                    "session_id" => session_id.escape_debug().take(80).collect::<String>());
                                continue;
                            }
                        };
                        if let Some(stopped) = record.stopped {
                            registry.stopped.insert(session_id, stopped);
                            kept_stopped += 1;
                            continue;
                        }
                        let store_dir = registry.store_root.join(&session_id);
                        if !stores::may_start(&store_dir, record.user_id) {
                            skipped += 1;
                            warn!(registry.log, "Session not restored: its store belongs to another user_id."; "session_id" => &session_id);
                            continue;
                        }
                        if registry.sessions.len() >= registry.config.max_active {
                            skipped += 1;
                            warn!(registry.log, "Session not restored: sessions.max_active reached.";
                                "session_id" => &session_id, "max_active" => registry.config.max_active);
                            continue;
                        }
                        let kept_store = stores::holds_anything(&store_dir);
                        if let Err(error) = stores::claim(&store_dir, record.user_id) {
                            warn!(registry.log, "Session store could not be claimed."; "session_id" => &session_id, "error" => %error);
                        }
                        let mut entry = restored_entry(&record);
                        entry.kept_store = kept_store;
                        registry.sessions.insert(session_id.clone(), entry);
                        registry.launch(&session_id, ctx);
                        restored += 1;
                    }
                    if restored > 0 || skipped > 0 || kept_stopped > 0 {
                        info!(registry.log, "Sessions restored from Redis."; "count" => restored,
                            "skipped" => skipped, "stopped" => kept_stopped);
                    }
                }
                Err(error) => {
                    let gate = registry.store.as_mut().map(|store| &mut store.unreadable_log);
                    say_not_readable_yet(gate, &registry.log, "session registry", &error);
                    ctx.run_later(RESTORE_RETRY, Self::restore);
                }
            })
            .spawn(ctx);
    }
}

/// A stored record, checked as the API checks its input: a session id safe as a directory name
/// (an id like `../x` must never reach the store's `remove_dir_all`), a user id Laravel can hold.
fn restorable(session_id: &str, stored: &str) -> Result<SessionRecord, &'static str> {
    if !is_valid_session_id(session_id) {
        return Err("invalid session id");
    }
    let record = split_stored(stored)
        .and_then(|(_, json)| serde_json::from_str::<SessionRecord>(json).ok())
        .ok_or("unreadable record")?;
    if record.user_id.is_some_and(|user_id| user_id > MAX_USER_ID) {
        return Err("user_id out of range");
    }
    Ok(record)
}

fn restored_entry(record: &SessionRecord) -> SessionEntry {
    let age = Duration::from_millis(unix_millis().saturating_sub(record.created_at));
    let now = Instant::now();
    let mut entry = SessionEntry::new(record.user_id, now.checked_sub(age).unwrap_or(now));
    entry.created_unix_ms = record.created_at;
    entry.ever_connected = record.ever_connected;
    entry
}

/// Answers once every session record change is written to Redis (shutdown).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct FlushRegistry;

impl Handler<FlushRegistry> for SessionRegistry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: FlushRegistry, ctx: &mut Context<Self>) -> Self::Result {
        let Some(store) = &mut self.store else {
            return Box::pin(async {});
        };
        if store.queue.unwritten() == 0 {
            return Box::pin(async {});
        }
        let (sender, receiver) = oneshot::channel();
        store.flush_waiters.push(sender);
        self.persist(ctx);
        Box::pin(async move {
            let _ = receiver.await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restored_entry_keeps_its_age_and_history() {
        let record = SessionRecord {
            user_id: Some(3),
            state: "active".into(),
            created_at: unix_millis() - 60_000,
            ever_connected: true,
            stopped: None,
        };
        let entry = restored_entry(&record);
        assert!(entry.created_at.elapsed() >= Duration::from_secs(59));
        assert!(entry.ever_connected);
        assert_eq!(entry.state, SessionState::Starting);
    }
}
