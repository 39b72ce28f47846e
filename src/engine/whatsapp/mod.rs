//! The real engine: one whatsapp-rust `Bot` per session, its credentials in a SQLite file under
//! `data_dir/sessions/{id}/`, all bots on one process-wide multi-thread tokio runtime (the
//! library spawns with `tokio::spawn` and assumes one), events mapped into the session's channel.

mod engine;
pub mod events;
pub mod transport;

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::runtime::{Handle, Runtime};
use wasup_actors::engine::{Engine, EngineFactory, EngineSpec, EventSender};

pub use engine::WhatsAppEngine;

/// WhatsApp Web's WebSocket endpoint.
pub const WHATSAPP_WEB_URL: &str = "wss://web.whatsapp.com/ws/chat";

/// The `[engine.whatsapp]` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WhatsAppSettings {
    /// The WebSocket endpoint (tests point it at loopback).
    pub url: String,
    /// Threads of the runtime every connection shares; 0 means one per core.
    pub worker_threads: usize,
    /// Most threads for the library's blocking work (SQLite stores, HTTP version checks); more
    /// work waits for one. Idle ones exit after 10 s.
    pub max_blocking_threads: usize,
    /// One connection attempt gives up after this long (the session then shows `error`).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Skip the chat history a freshly paired phone offers (wasup forwards live messages).
    pub skip_history_sync: bool,
}

impl Default for WhatsAppSettings {
    fn default() -> Self {
        Self {
            url: WHATSAPP_WEB_URL.into(),
            worker_threads: 0,
            max_blocking_threads: 64,
            connect_timeout: Duration::from_secs(15),
            skip_history_sync: true,
        }
    }
}

impl WhatsAppSettings {
    /// Checks the values, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.url.starts_with("wss://") || self.url.starts_with("ws://")) {
            return Err(format!(
                "engine.whatsapp.url must be a ws:// or wss:// URL, not {:?}",
                self.url
            ));
        }
        if self.max_blocking_threads == 0 {
            return Err("engine.whatsapp.max_blocking_threads must be at least 1".into());
        }
        if self.connect_timeout.is_zero() || self.connect_timeout > Duration::from_secs(20) {
            // Past 20 s the library abandons the attempt itself, unreported.
            return Err(
                "engine.whatsapp.connect_timeout must be above zero and at most 20s".into(),
            );
        }
        Ok(())
    }
}

/// The runtime every WhatsApp connection of the process runs on; built on first use and kept
/// for the life of the process (dropping a runtime inside async code would panic).
static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

fn shared_runtime(settings: &WhatsAppSettings) -> Result<Handle, String> {
    let built = RUNTIME.get_or_init(|| {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if settings.worker_threads > 0 {
            builder.worker_threads(settings.worker_threads);
        }
        builder
            .max_blocking_threads(settings.max_blocking_threads)
            .thread_name("whatsapp")
            .enable_all()
            .build()
            .map_err(|error| format!("the WhatsApp runtime could not start: {error}"))
    });
    built
        .as_ref()
        .map(|runtime| runtime.handle().clone())
        .map_err(Clone::clone)
}

/// Builds WhatsApp engines.
pub struct WhatsAppEngineFactory {
    /// Shared by every engine.
    settings: Arc<WhatsAppSettings>,
    /// Where the bots run.
    runtime: Handle,
}

impl WhatsAppEngineFactory {
    /// A factory; starts the shared runtime if this is the first.
    pub fn new(settings: WhatsAppSettings) -> anyhow::Result<Self> {
        let runtime = shared_runtime(&settings).map_err(anyhow::Error::msg)?;
        Ok(Self {
            settings: Arc::new(settings),
            runtime,
        })
    }
}

impl EngineFactory for WhatsAppEngineFactory {
    fn kind(&self) -> &'static str {
        "whatsapp"
    }

    fn create(&self, spec: &EngineSpec, events: EventSender) -> Box<dyn Engine> {
        Box::new(WhatsAppEngine::new(
            spec,
            events,
            Arc::clone(&self.settings),
            self.runtime.clone(),
        ))
    }
}
