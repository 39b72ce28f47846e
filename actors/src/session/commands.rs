//! Commands a session actor takes from the registry: inspect, current QR, pairing code, send a
//! text, simulate hooks, stop, report its state again.

use std::time::Instant;

use actix::prelude::*;

use super::{ActorInspection, SessionActor, SessionState, lifecycle::Ending};
use crate::engine::{EngineError, SimulatedAction};
use crate::messages::{EstadoQr, Urgency};

/// Failures of session commands.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The session is closing.
    #[error("the session is closing")]
    Closing,
    /// The command needs an open connection.
    #[error("the session is not connected (state: {0})")]
    NotConnected(&'static str),
}

/// Test hooks of the simulated engine, plus a deliberate crash of the actor.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// The QR a session shows now.
#[derive(Clone, Debug, serde::Serialize)]
pub struct QrView {
    /// The raw QR text.
    pub raw: String,
    /// Its PNG data URL: the rendering Laravel gets (made once per QR).
    pub qr: crate::qr_image::QrDataUrl,
    /// Milliseconds until it expires.
    pub expires_in_ms: u64,
}

/// Reads the QR shown now, if any (an error when it cannot be rendered).
#[derive(Message, Debug)]
#[rtype(result = "Option<Result<QrView, crate::qr_image::QrImageError>>")]
pub struct CurrentQr;

impl Handler<CurrentQr> for SessionActor {
    type Result = Option<Result<QrView, crate::qr_image::QrImageError>>;

    fn handle(&mut self, _: CurrentQr, _: &mut Context<Self>) -> Self::Result {
        let shown = self.current_qr.as_mut()?;
        let expires_in_ms = super::millis(
            shown
                .expires_at
                .saturating_duration_since(std::time::Instant::now()),
        );
        Some(shown.rendered(&mut self.qr_rendered).map(|qr| QrView {
            raw: shown.raw.clone(),
            qr,
            expires_in_ms,
        }))
    }
}

/// Asks for a pairing code for `phone` (an alternative to scanning the QR).
#[derive(Message, Debug)]
#[rtype(result = "Result<String, SessionError>")]
pub struct RequestPairCode {
    /// Digits with country code.
    pub phone: String,
}

impl Handler<RequestPairCode> for SessionActor {
    type Result = ResponseFuture<Result<String, SessionError>>;

    fn handle(&mut self, request: RequestPairCode, _: &mut Context<Self>) -> Self::Result {
        if self.state == SessionState::Closed {
            return Box::pin(async { Err(SessionError::Closing) });
        }
        let code = self.engine.request_pair_code(&request.phone);
        Box::pin(async move { Ok(code.await?) })
    }
}

/// Sends a text message through this session; answers WhatsApp's message id.
#[derive(Message, Debug)]
#[rtype(result = "Result<String, SessionError>")]
pub struct SendText {
    /// Recipient: digits with country code.
    pub to: String,
    /// The text.
    pub text: String,
    /// Its WhatsApp message id, the same on every attempt.
    pub id: String,
}

impl Handler<SendText> for SessionActor {
    type Result = ResponseActFuture<Self, Result<String, SessionError>>;

    fn handle(&mut self, message: SendText, _: &mut Context<Self>) -> Self::Result {
        if self.state != SessionState::Active {
            let state = self.state.as_str();
            return Box::pin(actix::fut::ready(Err(SessionError::NotConnected(state))));
        }
        let sending = self
            .engine
            .send_text(&message.to, &message.text, &message.id);
        Box::pin(sending.into_actor(self).map(|sent, actor, _| {
            let id = sent?;
            actor.messages_sent += 1;
            Ok(id)
        }))
    }
}

/// The batch queue was restarted and what its old mailbox held is gone: hand on the QR shown
/// now (if still valid) and the last status again, so Laravel ends with the latest state.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct ReportStateAgain;

impl Handler<ReportStateAgain> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: ReportStateAgain, ctx: &mut Context<Self>) {
        if self.state == SessionState::Closed {
            return;
        }
        self.forget_acks_of_a_dead_queue();
        let last_status = self.last_status.take();
        let shown = self
            .current_qr
            .as_ref()
            .filter(|shown| shown.expires_at > Instant::now())
            .map(|shown| shown.raw.clone());
        if let Some(code) = shown {
            self.forward_qr(&code, ctx);
        }
        if let Some(estado_qr) = last_status {
            self.report_status(estado_qr, Urgency::Normal, ctx);
        }
    }
}
