//! Idempotency keys of `POST /sessions/{id}/messages`: a caller that did not hear the answer
//! (a timeout, a dropped connection) sends the same request again with the same
//! `Idempotency-Key`, and gets the message queued the first time instead of a second message.
//! A key lives as long as its message's record (finished ones up to `messages.max_remembered`,
//! in Redis across restarts), so the map is bounded by the records.

use std::collections::HashMap;

use super::MessageRecord;
use crate::{messages::SessionId, session::fnv1a};

/// The digest a record keeps of the request that queued it.
pub(super) fn request_digest(to: &str, text: &str) -> u64 {
    fnv1a(&format!("{to}\n{text}"))
}

/// What a key already names.
pub(super) enum Earlier {
    /// Nothing: queue the message.
    None,
    /// The same request was queued as this message.
    Same(String),
    /// The key was used for another request.
    Conflict,
    /// The request that brought the key is still being written to Redis.
    Pending,
}

/// Key → message id, per session.
#[derive(Debug, Default)]
pub(super) struct IdempotencyKeys {
    /// (session, key) → message id.
    by_key: HashMap<(SessionId, String), String>,
}

impl IdempotencyKeys {
    /// What `key` names for `session_id`, given the records and this request's digest.
    pub(super) fn earlier(
        &self,
        session_id: &SessionId,
        key: &str,
        digest: u64,
        records: &HashMap<String, MessageRecord>,
    ) -> Earlier {
        let Some(message_id) = self.by_key.get(&(session_id.clone(), key.to_string())) else {
            return Earlier::None;
        };
        let Some(record) = records.get(message_id) else {
            return Earlier::Pending;
        };
        if record.request_digest == digest {
            Earlier::Same(record.message_id.clone())
        } else {
            Earlier::Conflict
        }
    }

    /// Remembers the key of `record`, if it has one.
    pub(super) fn remember(&mut self, record: &MessageRecord) {
        if let Some(key) = &record.idempotency_key {
            self.by_key.insert(
                (record.session_id.clone(), key.to_string()),
                record.message_id.clone(),
            );
        }
    }

    /// Forgets the key of `record` (forgotten, or refused by Redis).
    pub(super) fn forget(&mut self, record: &MessageRecord) {
        if let Some(key) = &record.idempotency_key {
            let slot = (record.session_id.clone(), key.to_string());
            if self.by_key.get(&slot) == Some(&record.message_id) {
                self.by_key.remove(&slot);
            }
        }
    }
}
