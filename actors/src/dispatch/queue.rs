//! `QueueMessage`: a text message for a session is queued once Redis holds it (a 202 must
//! survive a restart); the same `Idempotency-Key` again answers the message queued the first
//! time.

use actix::prelude::*;

use super::{
    DispatchError, MessageDispatcher, MessageRecord, MessageState,
    idempotency::{Earlier, request_digest},
    new_whatsapp_message_id,
};
use crate::messages::{SessionId, unix_millis};

/// What [`QueueMessage`] did.
#[derive(Debug)]
pub enum Queued {
    /// Queued now.
    New(MessageRecord),
    /// Queued by an earlier request with the same idempotency key (its record now).
    Earlier(MessageRecord),
}

/// Queues a text message.
#[derive(Message, Debug)]
#[rtype(result = "Result<Queued, DispatchError>")]
pub struct QueueMessage {
    /// The sending session.
    pub session_id: SessionId,
    /// Recipient digits.
    pub to: String,
    /// The text.
    pub text: String,
    /// The caller's `Idempotency-Key`, if it sent one.
    pub idempotency_key: Option<String>,
}

impl Handler<QueueMessage> for MessageDispatcher {
    type Result = ResponseActFuture<Self, Result<Queued, DispatchError>>;

    fn handle(&mut self, queue: QueueMessage, _: &mut Context<Self>) -> Self::Result {
        let digest = request_digest(&queue.to, &queue.text);
        let loading = self.store.as_ref().is_some_and(|store| !store.loaded);
        if queue.idempotency_key.is_some() && loading {
            // The key may name a message of the last run, not read back yet.
            let loading = "the messages of the last run are still being read back";
            return Box::pin(actix::fut::ready(Err(DispatchError::NotStored(
                loading.into(),
            ))));
        }
        if let Some(key) = &queue.idempotency_key {
            let earlier = self
                .idempotency
                .earlier(&queue.session_id, key, digest, &self.records);
            match earlier {
                Earlier::None => {}
                Earlier::Same(message_id) => {
                    let record = self.records.get(&message_id).cloned();
                    let answer = record.map(Queued::Earlier).ok_or(DispatchError::KeyReused);
                    return Box::pin(actix::fut::ready(answer));
                }
                Earlier::Conflict => {
                    return Box::pin(actix::fut::ready(Err(DispatchError::KeyReused)));
                }
                Earlier::Pending => {
                    let pending = "an earlier request with this Idempotency-Key is being stored";
                    let answer = Err(DispatchError::NotStored(pending.into()));
                    return Box::pin(actix::fut::ready(answer));
                }
            }
        }
        let waiting = self.ready.len() + self.retrying + self.stats.active;
        if waiting >= self.config.max_queued {
            self.stats.refused += 1;
            return Box::pin(actix::fut::ready(Err(DispatchError::QueueFull(waiting))));
        }
        let now = unix_millis();
        let record = MessageRecord {
            message_id: uuid::Uuid::new_v4().simple().to_string(),
            session_id: queue.session_id,
            to: queue.to,
            state: MessageState::Queued,
            attempts: 0,
            last_error: None,
            whatsapp_id: Some(new_whatsapp_message_id()),
            created_at: now,
            updated_at: now,
            text: queue.text,
            outcome_reported: false,
            idempotency_key: queue.idempotency_key,
            request_digest: digest,
        };
        // Known at once: a retry racing the Redis write below finds it.
        self.idempotency.remember(&record);
        // Accepted only once Redis holds it (when Redis is in use): a 202 must survive a restart.
        let stored = self.store.as_ref().map(|store| store.accept(&record));
        Box::pin(
            async move {
                match stored {
                    Some(stored) => stored.await.map_err(|error| error.to_string()),
                    None => Ok(()),
                }
            }
            .into_actor(self)
            .map(move |stored, actor, ctx| {
                if let Err(error) = stored {
                    actor.stats.refused += 1;
                    actor.idempotency.forget(&record);
                    // The write may have landed although Redis did not answer: take it back, or
                    // the next start would send a message the caller was told was refused.
                    if let Some(store) = &mut actor.store {
                        store.forget(&record.message_id);
                        actor.persist(ctx);
                    }
                    return Err(DispatchError::NotStored(error));
                }
                actor
                    .records
                    .insert(record.message_id.clone(), record.clone());
                actor.ready.push_back(record.message_id.clone());
                actor.pump(ctx);
                Ok(Queued::New(record))
            }),
        )
    }
}
