//! Crash detection for session actors: a panic in an actix handler ends the actor's task without
//! a restart, so each session carries a [`DeathNotice`] that tells the registry when the actor is
//! dropped without having stopped cleanly, with the panic message captured by a process hook.

use std::{cell::RefCell, sync::Once};

use actix::Recipient;

use crate::registry::SessionDied;

thread_local! {
    /// The last panic message seen on this thread (actors of one arbiter share its thread).
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs (once) a panic hook that records each panic's message for [`DeathNotice`], then
/// calls the previous hook.
pub fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|text| (*text).to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let location = info
                .location()
                .map(|at| format!(" at {}:{}", at.file(), at.line()))
                .unwrap_or_default();
            LAST_PANIC
                .with(|last| *last.borrow_mut() = Some(format!("panicked: {message}{location}")));
            previous(info);
        }));
    });
}

/// The last panic message seen on this thread, taken (the next call answers `None`).
pub(crate) fn take_last_panic() -> Option<String> {
    LAST_PANIC.with(|last| last.borrow_mut().take())
}

/// Carried by a session actor; tells the registry if the actor dies without [`disarm`](Self::disarm).
pub struct DeathNotice {
    /// The registry's crash inbox.
    registry: Recipient<SessionDied>,
    /// The session.
    session_id: String,
    /// Which incarnation of the session this is.
    generation: u64,
    /// Cleared on a clean stop.
    armed: bool,
}

impl DeathNotice {
    /// An armed notice.
    pub fn new(registry: Recipient<SessionDied>, session_id: String, generation: u64) -> Self {
        Self {
            registry,
            session_id,
            generation,
            armed: true,
        }
    }

    /// The actor is stopping on purpose: no notice.
    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for DeathNotice {
    fn drop(&mut self) {
        if self.armed {
            self.registry.do_send(SessionDied {
                session_id: std::mem::take(&mut self.session_id),
                generation: self.generation,
                reason: take_last_panic()
                    .unwrap_or_else(|| "the actor stopped unexpectedly".into()),
            });
        }
    }
}
