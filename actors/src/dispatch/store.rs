//! The outgoing messages' Redis copy (`wasup:outgoing`, message id → `seq|record`): a message is
//! answered 202 only once its record (with its text) is in Redis, every change of state follows
//! through the journal, the text is dropped once the message is sent or given up, and a restart
//! takes back every message not finished. Finished records are kept (without text) up to
//! `messages.max_remembered`, for `GET /sessions/{id}/messages/{mid}`.

use deadpool_redis::redis;
use serde::{Deserialize, Serialize};

use super::{MessageRecord, MessageState};
use crate::{
    messages::SessionId,
    store::{Keys, PersistQueue, RedisPool, RepeatGate, StoreError, next_seq, split_stored},
};

/// A message as stored in Redis: its record and, until it is finished, its text.
#[derive(Debug, Serialize, Deserialize)]
struct StoredMessage {
    message_id: String,
    session_id: SessionId,
    to: String,
    state: MessageState,
    attempts: u32,
    last_error: Option<String>,
    whatsapp_id: Option<String>,
    created_at: u64,
    updated_at: u64,
    /// `None` once the message is sent or given up: no text is kept longer than needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    /// Its outcome reached the batch outbox. Records of versions that did not say are taken as
    /// reported (those versions reported at once).
    #[serde(default = "reported_by_default")]
    outcome_reported: bool,
    /// The caller's idempotency key, answered again while the record is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<String>,
    /// Digest of the request that queued it (with the key).
    #[serde(default, skip_serializing_if = "is_zero")]
    request_digest: u64,
}

fn is_zero(digest: &u64) -> bool {
    *digest == 0
}

fn reported_by_default() -> bool {
    true
}

impl StoredMessage {
    fn of(record: &MessageRecord) -> Self {
        let finished = matches!(record.state, MessageState::Sent | MessageState::Failed);
        Self {
            message_id: record.message_id.clone(),
            session_id: record.session_id.clone(),
            to: record.to.clone(),
            state: record.state,
            attempts: record.attempts,
            last_error: record.last_error.clone(),
            whatsapp_id: record.whatsapp_id.clone(),
            created_at: record.created_at,
            updated_at: record.updated_at,
            text: (!finished).then(|| record.text.clone()),
            outcome_reported: record.outcome_reported,
            idempotency_key: record.idempotency_key.clone(),
            request_digest: record.request_digest,
        }
    }

    fn into_record(self) -> MessageRecord {
        MessageRecord {
            message_id: self.message_id,
            session_id: self.session_id,
            to: self.to,
            state: self.state,
            attempts: self.attempts,
            last_error: self.last_error,
            whatsapp_id: self.whatsapp_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
            text: self.text.unwrap_or_default(),
            outcome_reported: self.outcome_reported,
            idempotency_key: self.idempotency_key,
            request_digest: self.request_digest,
        }
    }
}

/// The dispatcher's Redis link.
pub struct OutgoingStore {
    /// Journal and write loop for state changes.
    pub queue: PersistQueue,
    /// For the accepting write and the load at start.
    pool: RedisPool,
    /// `wasup:outgoing`.
    key: String,
    /// Whether the messages of an earlier run were taken back.
    pub loaded: bool,
    /// Says once (then once a minute) that they cannot be read yet.
    pub unreadable_log: RepeatGate,
}

impl OutgoingStore {
    /// A store writing through `queue`.
    pub fn new(pool: RedisPool, keys: &Keys, queue: PersistQueue) -> Self {
        Self {
            queue,
            pool,
            key: keys.outgoing(),
            loaded: false,
            unreadable_log: RepeatGate::default(),
        }
    }

    /// Writes a new message (its text included) at once: it is accepted only once this succeeds.
    pub fn accept(
        &self,
        record: &MessageRecord,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + 'static {
        let pool = self.pool.clone();
        // Plain data: serialising cannot fail.
        let json = serde_json::to_string(&StoredMessage::of(record)).unwrap_or_default();
        let mut command = redis::cmd("HSET");
        command
            .arg(&self.key)
            .arg(&record.message_id)
            .arg(format!("{}|{json}", next_seq()));
        async move { pool.command::<()>(&command).await }
    }

    /// Queues the write of a record's new state.
    pub fn record(&mut self, record: &MessageRecord) {
        if let Ok(json) = serde_json::to_string(&StoredMessage::of(record)) {
            let key = self.key.clone();
            self.queue
                .journal()
                .put(&key, &record.message_id, next_seq(), json);
        }
    }

    /// Queues the removal of a record no longer remembered.
    pub fn forget(&mut self, message_id: &str) {
        let key = self.key.clone();
        self.queue.journal().remove(&key, message_id, None);
    }

    /// Reads every stored message, oldest first. Unreadable entries are skipped.
    pub fn load(
        &self,
    ) -> impl std::future::Future<Output = Result<Vec<MessageRecord>, StoreError>> + 'static {
        let pool = self.pool.clone();
        let key = self.key.clone();
        async move {
            let entries: Vec<(String, String)> =
                pool.command(redis::cmd("HGETALL").arg(&key)).await?;
            let mut records: Vec<MessageRecord> = entries
                .into_iter()
                .filter_map(|(_, stored)| {
                    let (_, json) = split_stored(&stored)?;
                    serde_json::from_str::<StoredMessage>(json).ok()
                })
                .map(StoredMessage::into_record)
                .collect();
            records.sort_by_key(|record| (record.created_at, record.updated_at));
            Ok(records)
        }
    }
}
