//! Engine implementations behind `wasup_actors::engine::Engine`, chosen by `engine.kind`.

pub mod files;
pub mod simulated;
pub mod whatsapp;

use std::{path::PathBuf, sync::Arc};

use serde::{Deserialize, Serialize};
use wasup_actors::engine::EngineFactory;

pub use simulated::{SimulatedEngineFactory, SimulatedSettings};
pub use whatsapp::{WhatsAppEngineFactory, WhatsAppSettings};

/// Which engine runs the sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Real WhatsApp Web sessions (whatsapp-rust).
    Whatsapp,
    /// QR codes on the real schedule, paired through the API: tests, demos, load.
    Simulated,
}

/// The `[engine]` settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Which engine.
    pub kind: EngineKind,
    /// Root of per-session stores (`data_dir/sessions/{id}/`).
    pub data_dir: PathBuf,
    /// The real engine's settings.
    pub whatsapp: WhatsAppSettings,
    /// The simulated engine's schedule.
    pub simulated: SimulatedSettings,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            kind: EngineKind::Whatsapp,
            data_dir: PathBuf::from("./data"),
            whatsapp: WhatsAppSettings::default(),
            simulated: SimulatedSettings::default(),
        }
    }
}

impl EngineConfig {
    /// Checks the values, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        self.whatsapp.validate()?;
        self.simulated.validate()
    }

    /// Where sessions keep their stores.
    pub fn sessions_dir(&self) -> PathBuf {
        self.data_dir.join("sessions")
    }

    /// The factory for the configured kind.
    pub fn factory(&self) -> anyhow::Result<Arc<dyn EngineFactory>> {
        Ok(match self.kind {
            EngineKind::Whatsapp => Arc::new(WhatsAppEngineFactory::new(self.whatsapp.clone())?),
            EngineKind::Simulated => Arc::new(SimulatedEngineFactory::new(self.simulated.clone())),
        })
    }
}
