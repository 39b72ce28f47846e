//! Commands a session actor takes from the registry: inspect, simulate hooks, stop.

use actix::prelude::*;

use super::{ActorInspection, SessionActor, SessionState, lifecycle::Ending};
use crate::engine::{EngineError, SimulatedAction};
use crate::messages::EstadoQr;

/// Failures of session commands.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The session is closing.
    #[error("the session is closing")]
    Closing,
}

/// Test hooks of the simulated engine, plus a deliberate crash of the actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimulateCommand {
    /// Passed to the engine.
    Engine(SimulatedAction),
    /// The actor panics in its handler (proves crash restarts).
    Crash,
}

/// Applies a test hook.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), SessionError>")]
pub struct Simulate {
    /// What to do.
    pub command: SimulateCommand,
}

impl Handler<Simulate> for SessionActor {
    type Result = Result<(), SessionError>;

    fn handle(&mut self, simulate: Simulate, _: &mut Context<Self>) -> Self::Result {
        if self.state == SessionState::Closed {
            return Err(SessionError::Closing);
        }
        match simulate.command {
            SimulateCommand::Engine(action) => Ok(self.engine.simulate(action)?),
            SimulateCommand::Crash => {
                // Test hook: the registry must notice and restart this session.
                panic!("simulated crash requested through the API")
            }
        }
    }
}

/// Reads the actor's own view of itself.
#[derive(Message, Debug)]
#[rtype(result = "ActorInspection")]
pub struct Inspect;

impl Handler<Inspect> for SessionActor {
    type Result = MessageResult<Inspect>;

    fn handle(&mut self, _: Inspect, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.inspection())
    }
}

/// The registry ends this session.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopSession {
    /// Status to report, if any (none on shutdown: the session will be restored).
    pub report: Option<EstadoQr>,
    /// Log out of WhatsApp rather than just close.
    pub logout: bool,
    /// Why.
    pub reason: String,
    /// Delete the session's store (it is forgotten); false on shutdown, when it will be restored.
    pub forget_store: bool,
}

impl Handler<StopSession> for SessionActor {
    type Result = ();

    fn handle(&mut self, stop: StopSession, ctx: &mut Context<Self>) {
        self.finish(
            Ending {
                report: stop.report,
                logout: stop.logout,
                reason: stop.reason,
                notify_registry: false,
                renew: false,
                forget_store: stop.forget_store,
            },
            ctx,
        );
    }
}
