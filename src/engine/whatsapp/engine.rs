//! `WhatsAppEngine`: one session's whatsapp-rust `Bot`. Commands run on the shared runtime and
//! answer the session's arbiter through their join handles; events reach the session through an
//! unbounded hop (the library's event bus cannot wait) drained into the bounded session channel.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, LazyLock, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use futures_util::future::LocalBoxFuture;
use tokio::{runtime::Handle, sync::mpsc};
use wasup_actors::engine::{Engine, EngineError, EngineSpec, EventSender};
use whatsapp_rust::{
    Jid,
    pair_code::PairCodeOptions,
    prelude::{Bot, BotHandle, Client, MessageBuilderExt, SendOptions, SqliteStore, wa},
    transport::TokioWebSocketTransportFactory,
};

use crate::engine::files;

use super::{
    WhatsAppSettings,
    events::{MappingState, MessageHook, SessionEventHandler},
    transport::ReportingTransportFactory,
};

/// The SQLite file of a session's credentials and Signal keys, in its store directory.
const STORE_FILE: &str = "whatsapp.db";
/// Written with our JID once the phone paired; removed on logout.
const PAIRED_MARKER: &str = "paired";

/// The bot running on one session store, tagged with the engine that started it. Shared by the
/// incarnations of a session (a restart after a crash builds a new engine), so two bots never
/// run on one store: starting a bot stops whichever runs there first.
type BotSlot = tokio::sync::Mutex<Option<(u64, BotHandle)>>;

/// The slots of live engines by store directory; entries die with their last engine.
static BOT_SLOTS: LazyLock<Mutex<HashMap<PathBuf, Weak<BotSlot>>>> = LazyLock::new(Mutex::default);

/// Tags engines, so an engine only ever stops its own bot.
static NEXT_ENGINE_ID: AtomicU64 = AtomicU64::new(1);

/// The slot of `store_dir`, shared with any other live engine of the same session.
fn bot_slot(store_dir: &std::path::Path) -> Arc<BotSlot> {
    let mut slots = BOT_SLOTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(slot) = slots.get(store_dir).and_then(Weak::upgrade) {
        return slot;
    }
    slots.retain(|_, slot| slot.strong_count() > 0);
    let slot = Arc::new(BotSlot::new(None));
    slots.insert(store_dir.to_path_buf(), Arc::downgrade(&slot));
    slot
}

/// What the engine shares with the tasks it runs on the runtime.
struct Shared {
    /// The runtime the bot runs on.
    runtime: Handle,
    /// Endpoint, timeouts.
    settings: Arc<WhatsAppSettings>,
    /// `data_dir/sessions/{id}/`.
    store_dir: PathBuf,
    /// The session's event channel.
    events: EventSender,
    /// This engine's tag in the bot slot.
    id: u64,
    /// The bot running on this session's store; a client is single-use, so each connect
    /// builds a new one.
    bot: Arc<BotSlot>,
    /// The running bot's client, for commands.
    client: Mutex<Option<Arc<Client>>>,
    /// The task passing the running bot's events on to the session.
    forwarder: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// One WhatsApp Web session on whatsapp-rust.
pub struct WhatsAppEngine {
    /// Shared with the runtime's tasks.
    shared: Arc<Shared>,
}

impl WhatsAppEngine {
    /// An engine for `spec`; nothing connects until [`Engine::connect`].
    pub fn new(
        spec: &EngineSpec,
        events: EventSender,
        settings: Arc<WhatsAppSettings>,
        runtime: Handle,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                runtime,
                settings,
                store_dir: spec.store_dir.clone(),
                events,
                id: NEXT_ENGINE_ID.fetch_add(1, Ordering::Relaxed),
                bot: bot_slot(&spec.store_dir),
                client: Mutex::new(None),
                forwarder: Mutex::new(None),
            }),
        }
    }

    /// Runs `work` on the runtime; the answer comes back to the caller's arbiter.
    fn on_runtime<T, W>(&self, work: W) -> LocalBoxFuture<'static, Result<T, EngineError>>
    where
        T: Send + 'static,
        W: Future<Output = Result<T, EngineError>> + Send + 'static,
    {
        let task = self.shared.runtime.spawn(work);
        Box::pin(async move {
            task.await
                .map_err(|error| EngineError::Failed(format!("engine task failed: {error}")))?
        })
    }

    fn client(&self) -> Result<Arc<Client>, EngineError> {
        self.shared
            .client
            .lock()
            .ok()
            .and_then(|client| client.clone())
            .ok_or(EngineError::Stopped)
    }
}

impl Shared {
    fn paired_marker(&self) -> PathBuf {
        self.store_dir.join(PAIRED_MARKER)
    }

    /// Builds and starts a fresh bot, stopping the previous one on this store first.
    async fn start_bot(self: Arc<Self>) -> Result<(), EngineError> {
        let mut running = self.bot.lock().await;
        if let Some((_, previous)) = running.take() {
            previous.shutdown().await;
        }
        // The store, `sessions/` and the data directory: 0700; the database 0600.
        let store_path = self.store_dir.join(STORE_FILE);
        files::private_dir(&self.store_dir, 2)
            .and_then(|()| files::private_file(&store_path))
            .map_err(|error| {
                EngineError::Failed(format!(
                    "store directory {} not writable: {error}",
                    self.store_dir.display()
                ))
            })?;
        let store = SqliteStore::new(&store_path.to_string_lossy())
            .await
            .map_err(|error| EngineError::Failed(format!("session store: {error}")))?;
        let (mapped, mut mapped_events) = mpsc::unbounded_channel();
        let own_jid = std::fs::read_to_string(self.paired_marker()).ok();
        let established = Arc::new(AtomicBool::new(false));
        let state = Arc::new(MappingState::new(own_jid));
        let handler = SessionEventHandler::new(
            Arc::clone(&state),
            mapped.clone(),
            self.paired_marker(),
            Arc::clone(&established),
        );
        let message_hook = MessageHook::new(state, mapped.clone());
        let transport = ReportingTransportFactory::new(
            TokioWebSocketTransportFactory::new().with_url(self.settings.url.clone()),
            self.settings.connect_timeout,
            established,
            mapped,
        );
        let mut builder = Bot::builder()
            .with_backend(store)
            .with_transport_factory(transport)
            .with_event_handler(handler)
            .with_inbound_durability_hook(message_hook);
        if self.settings.skip_history_sync {
            builder = builder.skip_history_sync();
        }
        let bot = builder
            .build()
            .await
            .map_err(|error| EngineError::Failed(format!("client: {error}")))?;
        if let Ok(mut client) = self.client.lock() {
            *client = Some(bot.client());
        }
        let events = self.events.clone();
        let forwarder = tokio::spawn(async move {
            while let Some(event) = mapped_events.recv().await {
                if events.send(event).await.is_err() {
                    break;
                }
            }
        });
        if let Some(previous) = self
            .forwarder
            .lock()
            .ok()
            .and_then(|mut slot| slot.replace(forwarder))
        {
            previous.abort();
        }
        *running = Some((self.id, bot.spawn()));
        Ok(())
    }

    /// Stops this engine's bot gracefully (flushing its store), keeping credentials.
    async fn stop_bot(self: Arc<Self>) {
        if let Ok(mut client) = self.client.lock() {
            client.take();
        }
        if let Some(forwarder) = self.forwarder.lock().ok().and_then(|mut slot| slot.take()) {
            forwarder.abort();
        }
        let mut running = self.bot.lock().await;
        if running.as_ref().is_some_and(|(owner, _)| *owner == self.id)
            && let Some((_, bot)) = running.take()
        {
            bot.shutdown().await;
        }
    }
}

/// An engine dropped without a shutdown (its session crashed) still stops its bot gracefully.
impl Drop for WhatsAppEngine {
    fn drop(&mut self) {
        self.shared
            .runtime
            .spawn(Arc::clone(&self.shared).stop_bot());
    }
}

impl Engine for WhatsAppEngine {
    fn kind(&self) -> &'static str {
        "whatsapp"
    }

    fn has_credentials(&self) -> bool {
        self.shared.paired_marker().exists()
    }

    fn connect(&mut self) -> LocalBoxFuture<'static, Result<(), EngineError>> {
        self.on_runtime(Arc::clone(&self.shared).start_bot())
    }

    fn logout(&mut self) -> LocalBoxFuture<'static, Result<(), EngineError>> {
        let shared = Arc::clone(&self.shared);
        let client = self.client().ok();
        self.on_runtime(async move {
            if let Some(client) = client {
                client.logout().await;
            }
            let marker = shared.paired_marker();
            shared.stop_bot().await;
            match std::fs::remove_file(marker) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(
                    EngineError::Failed(format!("paired marker not removed: {error}")),
                ),
                _ => Ok(()),
            }
        })
    }

    fn shutdown(&mut self) -> LocalBoxFuture<'static, ()> {
        let shared = Arc::clone(&self.shared);
        let stop = self.on_runtime(async move {
            shared.stop_bot().await;
            Ok(())
        });
        Box::pin(async move {
            let _ = stop.await;
        })
    }

    fn request_pair_code(
        &mut self,
        phone: &str,
    ) -> LocalBoxFuture<'static, Result<String, EngineError>> {
        let client = match self.client() {
            Ok(client) => client,
            Err(error) => return Box::pin(futures_util::future::ready(Err(error))),
        };
        let options = PairCodeOptions {
            phone_number: phone.to_string(),
            ..PairCodeOptions::default()
        };
        self.on_runtime(async move {
            client
                .pair_with_code(options)
                .await
                .map_err(|error| EngineError::Failed(format!("pairing code refused: {error}")))
        })
    }

    fn send_text(
        &mut self,
        to: &str,
        text: &str,
        id: &str,
    ) -> LocalBoxFuture<'static, Result<String, EngineError>> {
        let client = match self.client() {
            Ok(client) => client,
            Err(error) => return Box::pin(futures_util::future::ready(Err(error))),
        };
        let recipient = if to.contains('@') {
            to.to_string()
        } else {
            format!("{to}@s.whatsapp.net")
        };
        let text = text.to_string();
        let options = SendOptions::default().with_message_id(id);
        self.on_runtime(async move {
            let jid: Jid = recipient.parse().map_err(|error| {
                EngineError::Failed(format!("bad recipient {recipient}: {error}"))
            })?;
            client
                .send_message_with_options(jid, wa::Message::text(text), options)
                .await
                .map(|sent| sent.message_id)
                .map_err(|error| EngineError::Failed(format!("send failed: {error}")))
        })
    }
}
