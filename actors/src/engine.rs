//! The `Engine` trait a `SessionActor` drives: one WhatsApp Web connection, real or simulated.
//!
//! An engine reports through an [`EventSender`] handed to it at creation; its commands are
//! futures that the session runs on its own arbiter (so they need not be `Send`).

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::{Stream, future::LocalBoxFuture};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::messages::{IncomingMessage, SessionId};

/// How many engine events may wait for a session before the engine's sends wait.
pub const ENGINE_EVENT_BACKLOG: usize = 64;

/// Why a connection closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectReason {
    /// The phone logged the session out (or it was logged out through wasup): terminal.
    LoggedOut,
    /// The link dropped; reconnect with backoff.
    ConnectionLost,
    /// Another client took over the connection.
    ConnectionReplaced,
    /// WhatsApp asks for a fresh connection (right after pairing): reconnect at once.
    RestartRequired,
    /// Every QR reference expired without a scan: terminal.
    TimedOut,
}

impl DisconnectReason {
    /// The wire name, as the simulate API accepts it.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::LoggedOut => "logged_out",
            DisconnectReason::ConnectionLost => "connection_lost",
            DisconnectReason::ConnectionReplaced => "connection_replaced",
            DisconnectReason::RestartRequired => "restart_required",
            DisconnectReason::TimedOut => "timed_out",
        }
    }
}

/// What an engine tells its session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineEvent {
    /// A QR code to show; `index` counts from 0 within one pairing attempt.
    Qr {
        /// The raw QR string (`ref,noise-key,identity-key,adv-secret`).
        code: String,
        /// Position in the rotation.
        index: u32,
        /// How long this QR stays valid.
        valid_for: Duration,
    },
    /// A phone scanned the QR and the pairing succeeded.
    Paired {
        /// The paired phone's number, when known.
        phone: Option<String>,
    },
    /// The connection is open and authenticated.
    Connected,
    /// The connection closed.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
    /// WhatsApp could not be reached; the engine tries again by itself after `retry_in`.
    Unreachable {
        /// What failed (DNS, refused, TLS, timeout, ...).
        error: String,
        /// When the engine's next attempt starts.
        retry_in: Duration,
    },
    /// The link dropped; the engine reconnects by itself (no QR needed).
    Reconnecting {
        /// Why it dropped.
        reason: String,
    },
    /// WhatsApp refused the session for good (another client took over, temporary ban, client
    /// outdated, ...): the engine stopped and does not retry; credentials are kept.
    Refused {
        /// WhatsApp's reason, readable.
        reason: String,
    },
    /// Messages arrived, in order. The engine holds WhatsApp's acknowledgement until `ack` is
    /// confirmed (the messages are in the durable outbox); unconfirmed, WhatsApp redelivers them.
    Messages {
        /// The messages.
        messages: Vec<ReceivedMessage>,
        /// Confirmed once they are safe.
        ack: MessagesAck,
    },
}

/// One received message and when it was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The message.
    pub message: IncomingMessage,
    /// When it was sent, in milliseconds since the Unix epoch.
    pub timestamp: u64,
}

/// Answered once received messages are safe; dropped unanswered, it tells the engine they are
/// not (the engine then lets WhatsApp redeliver them).
#[derive(Clone, Debug)]
pub struct MessagesAck(Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>>);

impl MessagesAck {
    /// An acknowledgement and the receiver the engine waits on.
    pub fn new() -> (Self, tokio::sync::oneshot::Receiver<()>) {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        (
            Self(Arc::new(std::sync::Mutex::new(Some(sender)))),
            receiver,
        )
    }

    /// An acknowledgement nobody waits for (an engine without redelivery).
    pub fn unobserved() -> Self {
        Self(Arc::new(std::sync::Mutex::new(None)))
    }

    /// Tells the engine the messages are safe.
    pub fn confirm(&self) {
        if let Some(sender) = self.0.lock().ok().and_then(|mut sender| sender.take()) {
            let _ = sender.send(());
        }
    }

    /// Whether the engine still waits for it.
    pub fn is_awaited(&self) -> bool {
        self.0
            .lock()
            .ok()
            .is_some_and(|sender| sender.as_ref().is_some_and(|sender| !sender.is_closed()))
    }
}

impl PartialEq for MessagesAck {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for MessagesAck {}

/// Failures of engine commands.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine cannot do this (e.g. a simulate hook on the real engine).
    #[error("the {engine} engine does not support {what}")]
    Unsupported {
        /// Engine kind.
        engine: &'static str,
        /// The command.
        what: &'static str,
    },
    /// The engine is gone (its task ended).
    #[error("the engine has stopped")]
    Stopped,
    /// Anything the engine reports.
    #[error("{0}")]
    Failed(String),
}

/// Test hooks the simulated engine understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimulatedAction {
    /// A phone scans the current QR.
    Scan,
    /// The connection closes for this reason.
    Disconnect(DisconnectReason),
    /// The next `count` text messages fail to send.
    FailMessages {
        /// How many.
        count: u32,
    },
    /// A text message arrives from `from`.
    ReceiveMessage {
        /// The sender's number or JID.
        from: String,
        /// The text.
        text: String,
        /// Its WhatsApp id (a fresh random one when `None`): the same id twice is a redelivery.
        message_id: Option<String>,
        /// The chat's JID (a group), or `None` for a direct message (our own JID).
        chat: Option<String>,
        /// The phone side waiting for wasup's receipt (confirmed once the message is in the
        /// durable outbox), or `None` when nobody waits.
        receipt: Option<MessagesAck>,
    },
}

/// One WhatsApp Web connection.
pub trait Engine {
    /// `"simulated"`, `"whatsapp"`, ...
    fn kind(&self) -> &'static str;
    /// Whether credentials of an earlier pairing are stored (the session reconnects without QR).
    fn has_credentials(&self) -> bool;
    /// Opens (or reopens) the connection; events follow on the session's channel.
    fn connect(&mut self) -> LocalBoxFuture<'static, Result<(), EngineError>>;
    /// Logs the account out and forgets its credentials.
    fn logout(&mut self) -> LocalBoxFuture<'static, Result<(), EngineError>>;
    /// Closes the connection, keeping credentials.
    fn shutdown(&mut self) -> LocalBoxFuture<'static, ()>;
    /// Asks WhatsApp for a pairing code for `phone` (digits, with country code), an alternative
    /// to scanning the QR.
    fn request_pair_code(
        &mut self,
        phone: &str,
    ) -> LocalBoxFuture<'static, Result<String, EngineError>> {
        let _ = phone;
        let error = EngineError::Unsupported {
            engine: self.kind(),
            what: "pairing codes",
        };
        Box::pin(futures_util::future::ready(Err(error)))
    }
    /// Sends a text message under WhatsApp message id `id` (chosen once per message, so a retry
    /// after a timeout carries the same id and WhatsApp and the recipient see one message);
    /// answers the id it went under.
    fn send_text(
        &mut self,
        to: &str,
        text: &str,
        id: &str,
    ) -> LocalBoxFuture<'static, Result<String, EngineError>>;
    /// Applies a test hook; only the simulated engine accepts them.
    fn simulate(&mut self, action: SimulatedAction) -> Result<(), EngineError> {
        let _ = action;
        Err(EngineError::Unsupported {
            engine: self.kind(),
            what: "simulate hooks",
        })
    }
}

/// What an engine factory needs to build one session's engine.
#[derive(Clone, Debug)]
pub struct EngineSpec {
    /// The session.
    pub session_id: SessionId,
    /// Its owner in Laravel.
    pub user_id: Option<u64>,
    /// Where this session may keep its credentials.
    pub store_dir: PathBuf,
    /// The session paired before (restored after a restart): without credentials it must not
    /// start pairing again.
    pub paired_before: bool,
}

/// Builds engines; one per process, shared by the registry.
pub trait EngineFactory: Send + Sync {
    /// The kind of the engines it builds.
    fn kind(&self) -> &'static str;
    /// Builds one session's engine, reporting on `events`.
    fn create(&self, spec: &EngineSpec, events: EventSender) -> Box<dyn Engine>;
}

/// Sending half of a session's engine-event channel; counts what waits in it.
#[derive(Clone, Debug)]
pub struct EventSender {
    /// The bounded channel to the session. Events travel boxed: tokio allocates a channel's
    /// slots 32 at a time, and 32 pointers cost a sixth of 32 events (one block per session).
    sender: mpsc::Sender<Box<EngineEvent>>,
    /// Events sent but not yet handled by the session (its mailbox depth for engine events).
    backlog: Arc<AtomicUsize>,
}

impl EventSender {
    /// Sends one event, waiting while the session's backlog is full. Fails once the session is gone.
    pub async fn send(&self, event: EngineEvent) -> Result<(), EngineError> {
        self.backlog.fetch_add(1, Ordering::Relaxed);
        self.sender.send(Box::new(event)).await.map_err(|_| {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            EngineError::Stopped
        })
    }
}

/// Receiving half: a stream of events plus the backlog counter the session reports.
pub struct EventReceiver {
    /// The bounded channel from the engine.
    receiver: mpsc::Receiver<Box<EngineEvent>>,
    /// Shared with the sender.
    backlog: Arc<AtomicUsize>,
}

impl EventReceiver {
    /// A handle to read the backlog while the stream is owned by the actor.
    pub fn backlog(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.backlog)
    }

    /// Turns the receiver into a stream; each yielded event lowers the backlog.
    pub fn into_stream(self) -> impl Stream<Item = EngineEvent> {
        let EventReceiver {
            mut receiver,
            backlog,
        } = self;
        futures_util::stream::poll_fn(move |cx| {
            let polled = receiver.poll_recv(cx);
            if let std::task::Poll::Ready(Some(_)) = &polled {
                backlog.fetch_sub(1, Ordering::Relaxed);
            }
            polled.map(|event| event.map(|event| *event))
        })
    }
}

/// A bounded engine-event channel.
pub fn event_channel() -> (EventSender, EventReceiver) {
    let (sender, receiver) = mpsc::channel(ENGINE_EVENT_BACKLOG);
    let backlog = Arc::new(AtomicUsize::new(0));
    (
        EventSender {
            sender,
            backlog: Arc::clone(&backlog),
        },
        EventReceiver { receiver, backlog },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledgement_is_answered_once_and_dropped_unanswered_means_no() {
        let (ack, confirmed) = MessagesAck::new();
        let copy = ack.clone();
        assert!(ack.is_awaited());
        copy.confirm();
        copy.confirm();
        assert!(!ack.is_awaited());
        assert_eq!(confirmed.blocking_recv(), Ok(()));

        let (ack, refused) = MessagesAck::new();
        drop(ack);
        assert!(refused.blocking_recv().is_err());

        let (ack, waiting) = MessagesAck::new();
        drop(waiting);
        assert!(!ack.is_awaited(), "nobody waits once the engine gave up");
        assert!(!MessagesAck::unobserved().is_awaited());
    }
}
