//! `MessageDispatcher`: the outgoing text-message queue. At most `max_concurrent` sends run at
//! once on this node; a failed send is retried with exponential backoff up to `retries` times,
//! each attempt bounded by `timeout`; the outcome of every message can be asked by its id.
//! Bounded: at most `max_queued` messages wait, and at most `max_remembered` outcomes are kept.
//! Durable with Redis ([`OutgoingStore`]): a message is accepted only once it is stored, and a
//! restart takes back every message not finished. A text is kept only until its message is sent
//! or given up.

mod config;
mod idempotency;
mod outcomes;
mod queue;
mod store;

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use actix::prelude::*;
use serde::{Deserialize, Serialize};

pub use config::MessagesConfig;
use idempotency::IdempotencyKeys;
pub use outcomes::ReportOutcomesAgain;
pub use queue::{QueueMessage, Queued};
use slog::{Logger, debug, info, warn};
pub use store::OutgoingStore;

use crate::{
    batch::BatchActor,
    messages::{SessionId, unix_millis},
    registry::{LookupSession, RegistryError, SessionRegistry},
    session::SendText,
    sink::backoff_delay,
    store::{drive_writes, say_not_readable_yet},
    supervision::CoreAddr,
};

/// Where a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    /// Waiting for a free sender.
    Queued,
    /// Being sent.
    Sending,
    /// Failed; waiting for its retry.
    Retrying,
    /// Sent.
    Sent,
    /// Given up.
    Failed,
}

/// A message and what became of it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct MessageRecord {
    /// wasup's id.
    pub message_id: String,
    /// The sending session.
    pub session_id: SessionId,
    /// Recipient.
    pub to: String,
    /// State.
    pub state: MessageState,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// Its WhatsApp message id, chosen when it is queued and carried by every attempt, so a
    /// retry after a timeout is the same message to WhatsApp and to the recipient.
    pub whatsapp_id: Option<String>,
    /// Creation time, ms since the epoch.
    pub created_at: u64,
    /// Last change, ms since the epoch.
    pub updated_at: u64,
    /// The text (not serialised: never echoed or logged).
    #[serde(skip)]
    text: String,
    /// Its outcome is in the batch outbox (durable): until then a restart reports it again.
    #[serde(skip)]
    outcome_reported: bool,
    /// The caller's `Idempotency-Key`: the same key again answers this message.
    #[serde(skip)]
    idempotency_key: Option<String>,
    /// Digest of `to` and the text, telling a retry under the key from another request.
    #[serde(skip)]
    request_digest: u64,
}

/// Counters for `/health` and metrics.
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct DispatchStats {
    /// Sends running now.
    pub active: usize,
    /// Messages waiting (queued or retrying).
    pub waiting: usize,
    /// Messages sent since start.
    pub completed: u64,
    /// Messages given up since start.
    pub failed: u64,
    /// Retries since start.
    pub retries: u64,
    /// Messages refused because the queue was full.
    pub refused: u64,
}

/// Why a message was not queued.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// `max_queued` reached.
    #[error("the message queue is full ({0} waiting)")]
    QueueFull(usize),
    /// Redis did not take the message: accepting it would risk losing it on a restart.
    #[error("the message could not be stored ({0}); try again")]
    NotStored(String),
    /// The idempotency key was already used for a different request of this session.
    #[error("this Idempotency-Key was used for a different message")]
    KeyReused,
}

/// The dispatcher actor.
pub struct MessageDispatcher {
    /// Limits and retry policy.
    config: MessagesConfig,
    /// Routes sends to session actors.
    registry: Addr<SessionRegistry>,
    /// Message ids ready to send, oldest first.
    ready: VecDeque<String>,
    /// Every remembered message.
    records: HashMap<String, MessageRecord>,
    /// Finished message ids, oldest first, for forgetting past `max_remembered`.
    finished: VecDeque<String>,
    /// The records' idempotency keys.
    idempotency: IdempotencyKeys,
    /// Messages waiting for their retry delay.
    retrying: usize,
    /// Counters.
    stats: DispatchStats,
    /// The Redis copy of every message; `None` when Redis is disabled (memory only).
    store: Option<OutgoingStore>,
    /// Where each message's outcome (sent, failed) goes, for Laravel's messages lane.
    outcomes: Option<CoreAddr<BatchActor>>,
    /// Answered once every change is in Redis ([`FlushOutgoing`], at shutdown).
    flush_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    /// Logger.
    log: Logger,
}

impl MessageDispatcher {
    /// A dispatcher sending through `registry`'s sessions.
    pub fn new(config: MessagesConfig, registry: Addr<SessionRegistry>, log: Logger) -> Self {
        Self {
            config,
            registry,
            ready: VecDeque::new(),
            records: HashMap::new(),
            finished: VecDeque::new(),
            idempotency: IdempotencyKeys::default(),
            retrying: 0,
            stats: DispatchStats::default(),
            store: None,
            outcomes: None,
            flush_waiters: Vec::new(),
            log,
        }
    }

    /// Tells Laravel (through `batch`, in the messages lane) what became of every message.
    pub fn with_outcomes_to(mut self, batch: impl Into<CoreAddr<BatchActor>>) -> Self {
        self.outcomes = Some(batch.into());
        self
    }

    /// Keeps every message in `store` and takes back, on start, those an earlier run left.
    pub fn with_store(mut self, store: OutgoingStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Queues the Redis write of `message_id`'s record and writes.
    fn save(&mut self, message_id: &str, ctx: &mut Context<Self>) {
        if let (Some(store), Some(record)) = (&mut self.store, self.records.get(message_id)) {
            store.record(record);
            self.persist(ctx);
        }
    }

    fn persist(&mut self, ctx: &mut Context<Self>) {
        drive_writes(
            self,
            ctx,
            |actor| actor.store.as_mut().map(|store| &mut store.queue),
            |actor, _, error| {
                if let (Some(error), Some(store)) = (error, &actor.store)
                    && store.queue.failed_writes.is_power_of_two()
                {
                    warn!(actor.log, "Outgoing message write to Redis failed; retrying."; "error" => %error);
                }
                if actor
                    .store
                    .as_ref()
                    .is_none_or(|store| store.queue.unwritten() == 0)
                {
                    for waiter in actor.flush_waiters.drain(..) {
                        let _ = waiter.send(());
                    }
                }
            },
        );
    }

    /// Takes back what an earlier run left: unfinished messages are queued again (their text
    /// kept), finished ones are remembered. Retries until Redis answers.
    fn load(&mut self, ctx: &mut Context<Self>) {
        let Some(store) = &self.store else { return };
        if store.loaded {
            return;
        }
        store
            .load()
            .into_actor(self)
            .map(|loaded, actor, ctx| match loaded {
                Ok(records) => {
                    if let Some(store) = &mut actor.store {
                        store.loaded = true;
                    }
                    let mut requeued = 0usize;
                    for mut record in records {
                        if actor.records.contains_key(&record.message_id) {
                            continue;
                        }
                        let id = record.message_id.clone();
                        let finished =
                            matches!(record.state, MessageState::Sent | MessageState::Failed);
                        if !finished {
                            // A fresh retry budget: the restart, not the message, failed.
                            record.state = MessageState::Queued;
                            record.attempts = 0;
                            actor.ready.push_back(id.clone());
                            requeued += 1;
                        }
                        let unreported = finished && !record.outcome_reported;
                        actor.idempotency.remember(&record);
                        actor.records.insert(id.clone(), record);
                        if finished {
                            actor.remember_finished(id.clone(), ctx);
                        }
                        if unreported {
                            // Finished just before a crash, its outcome not yet in the outbox.
                            actor.report_outcome(&id, ctx);
                        }
                    }
                    if requeued > 0 {
                        info!(actor.log, "Outgoing messages taken back from Redis."; "queued" => requeued);
                    }
                    actor.pump(ctx);
                }
                Err(error) => {
                    let gate = actor.store.as_mut().map(|store| &mut store.unreadable_log);
                    say_not_readable_yet(gate, &actor.log, "outgoing messages", &error);
                    ctx.run_later(Duration::from_secs(1), Self::load);
                }
            })
            .spawn(ctx);
    }

    /// Keeps a finished message's record (its text dropped), forgetting the oldest past
    /// `max_remembered`.
    fn remember_finished(&mut self, message_id: String, ctx: &mut Context<Self>) {
        if let Some(record) = self.records.get_mut(&message_id) {
            record.text = String::new();
        }
        self.finished.push_back(message_id);
        while self.finished.len() > self.config.max_remembered {
            if let Some(oldest) = self.finished.pop_front() {
                if let Some(record) = self.records.remove(&oldest) {
                    self.idempotency.forget(&record);
                }
                if let Some(store) = &mut self.store {
                    store.forget(&oldest);
                }
            }
        }
        self.persist(ctx);
    }

    /// Starts sends while there is room.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while self.stats.active < self.config.max_concurrent {
            let Some(message_id) = self.ready.pop_front() else {
                break;
            };
            let Some(record) = self.records.get_mut(&message_id) else {
                continue;
            };
            record.state = MessageState::Sending;
            record.attempts += 1;
            record.updated_at = unix_millis();
            self.stats.active += 1;
            if let Some(store) = &mut self.store {
                store.record(record);
            }
            let registry = self.registry.clone();
            let id = record
                .whatsapp_id
                .get_or_insert_with(new_whatsapp_message_id)
                .clone();
            let (session_id, to, text) = (
                record.session_id.clone(),
                record.to.clone(),
                record.text.clone(),
            );
            let timeout = self.config.timeout;
            self.persist(ctx);
            async move { send(registry, session_id, SendText { to, text, id }, timeout).await }
                .into_actor(self)
                .map(move |outcome, actor, ctx| {
                    actor.stats.active -= 1;
                    actor.settle(&message_id, outcome, ctx);
                    actor.pump(ctx);
                })
                .spawn(ctx);
        }
    }

    fn settle(&mut self, message_id: &str, outcome: SendOutcome, ctx: &mut Context<Self>) {
        let Some(record) = self.records.get_mut(message_id) else {
            return;
        };
        record.updated_at = unix_millis();
        match outcome {
            SendOutcome::Sent(whatsapp_id) => {
                record.state = MessageState::Sent;
                record.whatsapp_id = Some(whatsapp_id);
                self.stats.completed += 1;
            }
            SendOutcome::Retryable(error) if record.attempts <= self.config.retries => {
                record.state = MessageState::Retrying;
                record.last_error = Some(error);
                self.stats.retries += 1;
                let delay = backoff_delay(
                    self.config.backoff_base,
                    self.config.backoff_max,
                    record.attempts - 1,
                );
                let message_id = message_id.to_string();
                self.save(&message_id, ctx);
                self.retrying += 1;
                ctx.run_later(delay, move |actor, ctx| {
                    actor.retrying -= 1;
                    actor.ready.push_back(message_id);
                    actor.pump(ctx);
                });
                return;
            }
            SendOutcome::Retryable(error) => {
                debug!(self.log, "Message given up."; "session_id" => &record.session_id, "error" => &error);
                record.state = MessageState::Failed;
                record.last_error = Some(error);
                self.stats.failed += 1;
            }
        }
        if let Some(record) = self.records.get_mut(message_id) {
            // Sent or given up: the text is no longer needed, in memory or in Redis.
            record.text = String::new();
        }
        self.save(message_id, ctx);
        self.report_outcome(message_id, ctx);
        self.remember_finished(message_id.to_string(), ctx);
    }
}

/// How one send attempt ended.
enum SendOutcome {
    /// Sent; WhatsApp's id.
    Sent(String),
    /// Worth retrying (not connected, engine error, timeout); given up once retries run out.
    Retryable(String),
}

/// A WhatsApp message id in WhatsApp Web's current shape: `3EB0` and 18 upper-case hex digits
/// (WhatsApp Web hashes time, account and randomness; random bytes cannot be told apart).
pub fn new_whatsapp_message_id() -> String {
    let mut id = String::from("3EB0");
    for _ in 0..9 {
        id.push_str(&format!("{:02X}", fastrand::u8(..)));
    }
    id
}

async fn send(
    registry: Addr<SessionRegistry>,
    session_id: SessionId,
    message: SendText,
    timeout: Duration,
) -> SendOutcome {
    let session = match registry.send(LookupSession { session_id }).await {
        Ok(Ok(session)) => session,
        // Retried, not final: after a restart, messages are taken back before the registry has
        // restored their sessions. One whose session is really gone fails once retries run out.
        Ok(Err(RegistryError::NotFound(id))) => {
            return SendOutcome::Retryable(format!("session {id} not found"));
        }
        Ok(Err(error)) => return SendOutcome::Retryable(error.to_string()),
        Err(error) => return SendOutcome::Retryable(error.to_string()),
    };
    match session.send(message).timeout(timeout).await {
        Ok(Ok(whatsapp_id)) => SendOutcome::Sent(whatsapp_id),
        Ok(Err(error)) => SendOutcome::Retryable(error.to_string()),
        Err(MailboxError::Timeout) => {
            SendOutcome::Retryable(format!("no answer within {timeout:?}"))
        }
        Err(MailboxError::Closed) => SendOutcome::Retryable("the session is restarting".into()),
    }
}

impl Actor for MessageDispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.load(ctx);
    }
}

/// Answers once every outgoing message's latest state is in Redis (shutdown).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct FlushOutgoing;

impl Handler<FlushOutgoing> for MessageDispatcher {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: FlushOutgoing, ctx: &mut Context<Self>) -> Self::Result {
        if self
            .store
            .as_ref()
            .is_none_or(|store| store.queue.unwritten() == 0)
        {
            return Box::pin(async {});
        }
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.flush_waiters.push(sender);
        self.persist(ctx);
        Box::pin(async move {
            let _ = receiver.await;
        })
    }
}

/// Reads a message's record (only the session that sent it can see it).
#[derive(Message, Debug)]
#[rtype(result = "Option<MessageRecord>")]
pub struct GetMessage {
    /// The session.
    pub session_id: SessionId,
    /// The message.
    pub message_id: String,
}

impl Handler<GetMessage> for MessageDispatcher {
    type Result = Option<MessageRecord>;

    fn handle(&mut self, get: GetMessage, _: &mut Context<Self>) -> Self::Result {
        self.records
            .get(&get.message_id)
            .filter(|record| record.session_id == get.session_id)
            .cloned()
    }
}

/// Reads the dispatcher's counters.
#[derive(Message, Debug)]
#[rtype(result = "DispatchStats")]
pub struct GetDispatchStats;

impl Handler<GetDispatchStats> for MessageDispatcher {
    type Result = MessageResult<GetDispatchStats>;

    fn handle(&mut self, _: GetDispatchStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(DispatchStats {
            waiting: self.ready.len() + self.retrying,
            ..self.stats.clone()
        })
    }
}
