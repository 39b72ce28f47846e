//! The simulated engine: WhatsApp Web's QR rotation (first QR valid 60 s, then 20 s each, 6 in
//! all, then `timed_out`), pairing through a "scan", disconnects with any reason, reconnects.
//! Used by tests, demos and load benchmarks; its schedule is configurable so tests run fast.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    path::PathBuf,
    rc::Rc,
    sync::Arc,
    time::Duration,
};

use base64::Engine as _;
use futures_util::future::{LocalBoxFuture, ready};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use wasup_actors::engine::{
    DisconnectReason, Engine, EngineError, EngineEvent, EngineFactory, EngineSpec, EventSender,
    MessagesAck, ReceivedMessage, SimulatedAction,
};
use wasup_actors::messages::{IncomingMessage, unix_millis};
use wasup_actors::session::fnv1a;

/// The `[engine.simulated]` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatedSettings {
    /// Validity of the first QR of a pairing attempt.
    #[serde(with = "humantime_serde")]
    pub qr_first_ttl: Duration,
    /// Validity of each later QR.
    #[serde(with = "humantime_serde")]
    pub qr_ttl: Duration,
    /// QR references per attempt before `timed_out`.
    pub qr_refs: u32,
    /// How long each QR says it is valid; zero (the default) means its rotation slot, as on
    /// WhatsApp. Longer models a QR storm: codes replaced faster than they expire.
    #[serde(with = "humantime_serde")]
    pub qr_reported_validity: Duration,
    /// Time to open an authenticated connection (after a scan or a drop).
    #[serde(with = "humantime_serde")]
    pub connect_delay: Duration,
    /// Time a logout takes (a round trip to WhatsApp's server, as on the real engine).
    #[serde(with = "humantime_serde")]
    pub logout_delay: Duration,
    /// Derive QR texts from the session id and position instead of at random, so a restarted
    /// session shows the same first QR again (exercises QR dedupe across restarts).
    pub deterministic_qr: bool,
}

impl Default for SimulatedSettings {
    fn default() -> Self {
        Self {
            qr_first_ttl: Duration::from_secs(60),
            qr_ttl: Duration::from_secs(20),
            qr_refs: 6,
            qr_reported_validity: Duration::ZERO,
            connect_delay: Duration::from_millis(300),
            logout_delay: Duration::from_millis(100),
            deterministic_qr: false,
        }
    }
}

impl SimulatedSettings {
    /// Checks the values, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.qr_refs == 0 {
            return Err("engine.simulated.qr_refs must be at least 1".into());
        }
        if self.qr_first_ttl.is_zero() || self.qr_ttl.is_zero() {
            return Err("engine.simulated.qr_first_ttl and qr_ttl must be above zero".into());
        }
        Ok(())
    }
}

/// Builds simulated engines.
pub struct SimulatedEngineFactory {
    /// The schedule every engine follows (one copy shared by all: at 100k sessions a copy each
    /// would cost megabytes).
    settings: Arc<SimulatedSettings>,
}

impl SimulatedEngineFactory {
    /// A factory with this schedule.
    pub fn new(settings: SimulatedSettings) -> Self {
        Self {
            settings: Arc::new(settings),
        }
    }
}

impl EngineFactory for SimulatedEngineFactory {
    fn kind(&self) -> &'static str {
        "simulated"
    }

    fn create(&self, spec: &EngineSpec, events: EventSender) -> Box<dyn Engine> {
        Box::new(SimulatedEngine {
            settings: Arc::clone(&self.settings),
            events,
            credentials: Rc::new(Credentials::load(spec.store_dir.join(CREDENTIALS_FILE))),
            qr_seed: self
                .settings
                .deterministic_qr
                .then(|| fnv1a(&spec.session_id)),
            failing_messages: 0,
            connection: None,
        })
    }
}

/// The file that marks a simulated session as paired, like a real engine's credential store.
const CREDENTIALS_FILE: &str = "simulated-credentials.json";

/// Whether a phone paired, kept on disk so a restarted session reconnects without a QR.
struct Credentials {
    /// `store_dir/simulated-credentials.json`.
    path: PathBuf,
    /// Cached existence of the file.
    paired: Cell<bool>,
}

impl Credentials {
    fn load(path: PathBuf) -> Self {
        let paired = Cell::new(path.exists());
        Self { path, paired }
    }

    fn is_paired(&self) -> bool {
        self.paired.get()
    }

    fn store(&self, phone: &str) -> Result<(), EngineError> {
        let written = self
            .path
            .parent()
            .map_or(Ok(()), |dir| super::files::private_dir(dir, 2))
            .and_then(|()| {
                super::files::write_private(&self.path, format!("{{\"phone\":\"{phone}\"}}\n"))
            });
        written
            .map_err(|error| EngineError::Failed(format!("cannot store credentials: {error}")))?;
        self.paired.set(true);
        Ok(())
    }

    /// The paired phone, read back from the file.
    fn phone(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let stored: serde_json::Value = serde_json::from_str(&text).ok()?;
        stored["phone"].as_str().map(str::to_string)
    }

    fn forget(&self) {
        self.paired.set(false);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What a connection's task is told.
#[derive(Clone, Copy, Debug)]
enum ConnectionCommand {
    /// A phone scans the current QR.
    Scan,
    /// The connection closes.
    Disconnect(DisconnectReason),
}

/// Commands waiting for a connection's task: a queue and a wake-up, shared on the session's
/// thread. A tokio channel would do the same at about five times the memory (its halves are
/// cache-padded for threads this never crosses), once per session.
#[derive(Default)]
struct ConnectionInbox {
    /// Commands not yet taken, oldest first.
    queue: RefCell<VecDeque<ConnectionCommand>>,
    /// Wakes the task when a command arrives (a wake-up sent before it waits is kept).
    arrived: Notify,
}

/// Commands a connection holds before it takes them: its task ends on the first scan or
/// disconnect, so more than a few waiting means a client is hammering `simulate`.
const INBOX_CAPACITY: usize = 8;

impl ConnectionInbox {
    /// Queues `command`, or hands it back when the inbox is full.
    fn push(&self, command: ConnectionCommand) -> Result<(), ConnectionCommand> {
        let mut queue = self.queue.borrow_mut();
        if queue.len() >= INBOX_CAPACITY {
            return Err(command);
        }
        queue.push_back(command);
        self.arrived.notify_one();
        Ok(())
    }

    /// The next command, waiting for one if none is queued.
    async fn next(&self) -> ConnectionCommand {
        loop {
            if let Some(command) = self.queue.borrow_mut().pop_front() {
                return command;
            }
            self.arrived.notified().await;
        }
    }
}

/// One simulated connection's task and its command inbox.
struct Connection {
    /// The task emitting this connection's events.
    task: tokio::task::JoinHandle<()>,
    /// Scan / disconnect commands for the task.
    commands: Rc<ConnectionInbox>,
}

/// One simulated session.
struct SimulatedEngine {
    /// The schedule.
    settings: Arc<SimulatedSettings>,
    /// Where events go.
    events: EventSender,
    /// Whether a phone paired (stored on disk): reconnects skip the QR.
    credentials: Rc<Credentials>,
    /// Seed of deterministic QR texts (from the session id), when configured.
    qr_seed: Option<u64>,
    /// Text messages still to fail (test hook).
    failing_messages: u32,
    /// The open connection, if any.
    connection: Option<Connection>,
}

impl SimulatedEngine {
    fn close(&mut self) {
        if let Some(connection) = self.connection.take() {
            connection.task.abort();
        }
    }
}

impl Drop for SimulatedEngine {
    fn drop(&mut self) {
        self.close();
    }
}

impl SimulatedEngine {
    /// A text message from `from` arrives on the open connection, in `chat` (a group) or
    /// directly; with `message_id`, under that id (a redelivery when repeated).
    fn receive_message(
        &self,
        from: String,
        text: String,
        message_id: Option<String>,
        chat: Option<String>,
        receipt: Option<MessagesAck>,
    ) -> Result<(), EngineError> {
        if self.connection.is_none() || !self.credentials.is_paired() {
            return Err(EngineError::Failed("not connected".into()));
        }
        let jid = |number: &str| {
            if number.contains('@') {
                number.to_string()
            } else {
                format!("{number}@s.whatsapp.net")
            }
        };
        let event = EngineEvent::Messages {
            messages: vec![ReceivedMessage {
                message: IncomingMessage {
                    message_id: message_id
                        .unwrap_or_else(|| format!("3EB0{:016X}", fastrand::u64(..))),
                    from: jid(&from),
                    to: chat.unwrap_or_else(|| jid(&self.credentials.phone().unwrap_or_default())),
                    kind: "text".into(),
                    text: Some(text),
                },
                timestamp: unix_millis(),
            }],
            ack: receipt.unwrap_or_else(MessagesAck::unobserved),
        };
        let events = self.events.clone();
        actix_rt::spawn(async move {
            let _ = events.send(event).await;
        });
        Ok(())
    }
}

impl Engine for SimulatedEngine {
    fn kind(&self) -> &'static str {
        "simulated"
    }

    fn has_credentials(&self) -> bool {
        self.credentials.is_paired()
    }

    fn connect(&mut self) -> LocalBoxFuture<'static, Result<(), EngineError>> {
        self.close();
        let commands = Rc::new(ConnectionInbox::default());
        let task = actix_rt::spawn(run_connection(
            Arc::clone(&self.settings),
            self.events.clone(),
            Rc::clone(&self.credentials),
            self.qr_seed,
            Rc::clone(&commands),
        ));
        self.connection = Some(Connection { task, commands });
        Box::pin(ready(Ok(())))
    }

    fn logout(&mut self) -> LocalBoxFuture<'static, Result<(), EngineError>> {
        self.close();
        self.credentials.forget();
        let round_trip = self.settings.logout_delay;
        Box::pin(async move {
            actix_rt::time::sleep(round_trip).await;
            Ok(())
        })
    }

    fn shutdown(&mut self) -> LocalBoxFuture<'static, ()> {
        self.close();
        Box::pin(ready(()))
    }

    fn request_pair_code(
        &mut self,
        phone: &str,
    ) -> LocalBoxFuture<'static, Result<String, EngineError>> {
        let answer = if self.credentials.is_paired() {
            Err(EngineError::Failed("already paired".into()))
        } else if !(8..=15).contains(&phone.len())
            || !phone.bytes().all(|byte| byte.is_ascii_digit())
        {
            Err(EngineError::Failed(
                "phone must be 8 to 15 digits with country code".into(),
            ))
        } else {
            const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTVWXYZ123456789";
            let mut code: String = (0..8)
                .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
                .collect();
            code.insert(4, '-');
            Ok(code)
        };
        Box::pin(ready(answer))
    }

    fn send_text(
        &mut self,
        to: &str,
        _text: &str,
        id: &str,
    ) -> LocalBoxFuture<'static, Result<String, EngineError>> {
        let answer = if self.connection.is_none() || !self.credentials.is_paired() {
            Err(EngineError::Failed("not connected".into()))
        } else if self.failing_messages > 0 {
            self.failing_messages -= 1;
            Err(EngineError::Failed(format!(
                "simulated send failure to {to}"
            )))
        } else {
            Ok(id.to_string())
        };
        Box::pin(ready(answer))
    }

    fn simulate(&mut self, action: SimulatedAction) -> Result<(), EngineError> {
        let command = match action {
            SimulatedAction::FailMessages { count } => {
                self.failing_messages = count;
                return Ok(());
            }
            SimulatedAction::ReceiveMessage {
                from,
                text,
                message_id,
                chat,
                receipt,
            } => {
                return self.receive_message(from, text, message_id, chat, receipt);
            }
            SimulatedAction::Scan => ConnectionCommand::Scan,
            SimulatedAction::Disconnect(reason) => ConnectionCommand::Disconnect(reason),
        };
        let connection = self.connection.as_ref().ok_or(EngineError::Stopped)?;
        if connection.task.is_finished() {
            return Err(EngineError::Failed(
                "the connection is closed; try again once it reconnects".into(),
            ));
        }
        connection.commands.push(command).map_err(|_| {
            EngineError::Failed("the connection has commands waiting; try again shortly".into())
        })
    }
}

/// One connection's life: QR rotation until a scan, a disconnect or the last QR's expiry; or,
/// once paired, an open connection until told to drop.
async fn run_connection(
    settings: Arc<SimulatedSettings>,
    events: EventSender,
    credentials: Rc<Credentials>,
    qr_seed: Option<u64>,
    inbox: Rc<ConnectionInbox>,
) {
    let _ = if credentials.is_paired() {
        stay_connected(&settings, &events, &credentials, &inbox).await
    } else {
        let mut rng = qr_seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        rotate_qr_codes(&settings, &events, &credentials, &mut rng, &inbox).await
    };
}

async fn stay_connected(
    settings: &SimulatedSettings,
    events: &EventSender,
    credentials: &Credentials,
    inbox: &ConnectionInbox,
) -> Result<(), EngineError> {
    actix_rt::time::sleep(settings.connect_delay).await;
    events.send(EngineEvent::Connected).await?;
    loop {
        if let ConnectionCommand::Disconnect(reason) = inbox.next().await {
            if reason == DisconnectReason::LoggedOut {
                credentials.forget();
            }
            return events.send(EngineEvent::Disconnected { reason }).await;
        }
    }
}

async fn rotate_qr_codes(
    settings: &SimulatedSettings,
    events: &EventSender,
    credentials: &Credentials,
    rng: &mut fastrand::Rng,
    inbox: &ConnectionInbox,
) -> Result<(), EngineError> {
    for index in 0..settings.qr_refs {
        let valid_for = if index == 0 {
            settings.qr_first_ttl
        } else {
            settings.qr_ttl
        };
        let reported = if settings.qr_reported_validity.is_zero() {
            valid_for
        } else {
            settings.qr_reported_validity
        };
        events
            .send(EngineEvent::Qr {
                code: random_qr_text(rng),
                index,
                valid_for: reported,
            })
            .await?;
        tokio::select! {
            () = actix_rt::time::sleep(valid_for) => {}
            action = inbox.next() => match action {
                ConnectionCommand::Scan => {
                    let phone = random_phone();
                    credentials.store(&phone)?;
                    events.send(EngineEvent::Paired { phone: Some(phone) }).await?;
                    return events.send(EngineEvent::Disconnected { reason: DisconnectReason::RestartRequired }).await;
                }
                ConnectionCommand::Disconnect(reason) => {
                    return events.send(EngineEvent::Disconnected { reason }).await;
                }
            },
        }
    }
    events
        .send(EngineEvent::Disconnected {
            reason: DisconnectReason::TimedOut,
        })
        .await
}

/// A QR payload shaped like WhatsApp Web's: `ref,noise-public-key,identity-key,adv-secret`.
pub fn random_qr_text(rng: &mut fastrand::Rng) -> String {
    let mut encode = |len: usize| {
        let bytes: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    format!(
        "2@{},{},{},{}",
        encode(48),
        encode(32),
        encode(32),
        encode(32)
    )
}

fn random_phone() -> String {
    format!("5215{:08}", fastrand::u32(..100_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qr_texts_look_like_whatsapp_web_refs_and_differ() {
        let mut rng = fastrand::Rng::new();
        let first = random_qr_text(&mut rng);
        assert!(first.starts_with("2@"));
        assert_eq!(first.split(',').count(), 4);
        assert_ne!(first, random_qr_text(&mut rng));
        let seeded = |id| random_qr_text(&mut fastrand::Rng::with_seed(fnv1a(id)));
        assert_eq!(seeded("abc"), seeded("abc"), "deterministic per session");
        assert_ne!(seeded("abc"), seeded("abd"));
    }
}
