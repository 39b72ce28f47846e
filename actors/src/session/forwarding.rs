//! How a session hands its QR codes, statuses and received messages on: render once, dedupe,
//! storm-guard, and hold what the full batch mailbox cannot take yet (the latest per lane),
//! retrying shortly; received messages are confirmed to the engine once in the durable outbox.

use std::time::{Duration, Instant};

use actix::prelude::*;
use slog::warn;

use super::{QrDecision, SessionActor, SessionState, ShownQr, qr_forwarding::qr_digest};
use crate::{
    batch::{BatchActor, FlushOutbox},
    cache::CacheEntry,
    engine::{MessagesAck, ReceivedMessage},
    messages::{
        EstadoQr, MessageReceived, OutboundItem, Payload, QrCode, StatusChanged, Urgency,
        unix_millis,
    },
};

/// How soon a session retries handing an event to a full batch mailbox.
const FULL_MAILBOX_RETRY: Duration = Duration::from_millis(20);

/// Acknowledgements of received messages the engine waits for: confirmed together once the
/// outbox write that covers them is done. One write is awaited at a time per session, so what
/// waits is bounded by the engine's pending deliveries (abandoned ones are dropped).
#[derive(Default)]
pub(super) struct Unconfirmed {
    /// Waiting for the next outbox write.
    waiting: Vec<MessagesAck>,
    /// The batch queue incarnation that took the waiting messages: only its `FlushOutbox` may
    /// confirm them (a restarted queue answers for its own journal, not for what died).
    taken_by: Option<Addr<BatchActor>>,
    /// Whether a write is awaited.
    flushing: bool,
}

/// Events the batch mailbox could not take yet; the latest per lane is kept.
#[derive(Default)]
pub(super) struct HeldEvents {
    /// The newest QR not yet accepted.
    pub(super) qr: Option<QrCode>,
    /// The newest status not yet accepted.
    pub(super) status: Option<StatusChanged>,
    /// Whether a retry is scheduled.
    pub(super) retry_scheduled: bool,
}

impl SessionActor {
    pub(super) fn item(&self, payload: Payload) -> OutboundItem {
        OutboundItem {
            session_id: self.session_id.clone(),
            payload,
            user_id: self.user_id,
            timestamp: unix_millis(),
        }
    }

    pub(super) fn status_event(
        &mut self,
        estado_qr: EstadoQr,
        urgency: Urgency,
    ) -> Option<StatusChanged> {
        if self.last_status == Some(estado_qr) {
            return None;
        }
        self.last_status = Some(estado_qr);
        self.tell_cache(CacheEntry::Status { estado_qr });
        Some(StatusChanged {
            item: self.item(Payload::Status { estado_qr }),
            urgency,
        })
    }

    pub(super) fn report_status(
        &mut self,
        estado_qr: EstadoQr,
        urgency: Urgency,
        ctx: &mut Context<Self>,
    ) {
        if let Some(event) = self.status_event(estado_qr, urgency) {
            self.held.status = Some(event);
            self.flush_held(ctx);
        }
    }

    /// Hands the QR shown now to the batch actor and the cache, rendering it once (the same
    /// rendering answers `GET /sessions/{id}/qr`).
    pub(super) fn forward_qr(&mut self, code: &str, ctx: &mut Context<Self>) {
        let Some(shown) = self.current_qr.as_mut().filter(|shown| shown.raw == code) else {
            // Only the QR shown now is ever forwarded: an older one is stale.
            return;
        };
        let expires_at = shown.expires_at_ms;
        match shown.rendered(&mut self.qr_rendered) {
            Ok(qr) => {
                self.qr_forwarded += 1;
                self.tell_cache(CacheEntry::Qr {
                    qr: qr.clone(),
                    digest: qr_digest(code),
                });
                self.held.qr = Some(QrCode {
                    item: self.item(Payload::Qr { qr, expires_at }),
                });
                self.flush_held(ctx);
                if self.config.status_with_every_qr {
                    self.last_status = None;
                }
                self.report_status(EstadoQr::Pending, Urgency::Normal, ctx);
            }
            Err(error) => {
                warn!(self.log, "QR could not be rendered."; "error" => %error);
                self.last_error = Some(error.to_string());
            }
        }
    }

    /// Hands held events to the batch actor without waiting; what does not fit is retried soon.
    pub(super) fn flush_held(&mut self, ctx: &mut Context<Self>) {
        if let Some(event) = self.held.qr.take() {
            match self.batch.try_send(event) {
                Err(SendError::Full(event)) => self.held.qr = Some(event),
                Ok(()) | Err(SendError::Closed(_)) => {}
            }
        }
        if let Some(event) = self.held.status.take() {
            match self.batch.try_send(event) {
                Err(SendError::Full(event)) => self.held.status = Some(event),
                Ok(()) | Err(SendError::Closed(_)) => {}
            }
        }
        let anything_held = self.held.qr.is_some() || self.held.status.is_some();
        if anything_held && !self.held.retry_scheduled {
            self.held.retry_scheduled = true;
            ctx.run_later(FULL_MAILBOX_RETRY, |actor, ctx| {
                actor.held.retry_scheduled = false;
                actor.flush_held(ctx);
            });
        }
    }

    /// Hands received messages to the batch queue in order, waiting for room in its mailbox
    /// (engine events queue up behind them meanwhile), then confirms them to the engine once the
    /// outbox holds them. Unconfirmed (a failure, or the session closing), WhatsApp redelivers.
    pub(super) fn on_messages(
        &mut self,
        messages: Vec<ReceivedMessage>,
        ack: MessagesAck,
        ctx: &mut Context<Self>,
    ) {
        let items: Vec<MessageReceived> = messages
            .into_iter()
            .map(|received| MessageReceived {
                item: OutboundItem {
                    timestamp: received.timestamp,
                    ..self.item(Payload::Message(received.message))
                },
            })
            .collect();
        self.messages_received += items.len() as u64;
        let batch = self.batch.current();
        let taker = batch.clone();
        ctx.wait(
            async move {
                for item in items {
                    batch.send(item).await?;
                }
                Ok::<_, MailboxError>(())
            }
            .into_actor(self)
            .map(move |accepted, actor, ctx| match accepted {
                Ok(()) => {
                    let unconfirmed = &mut actor.unconfirmed;
                    if unconfirmed.taken_by.as_ref() != Some(&taker) {
                        // Taken by a queue that died since: never confirmed, WhatsApp redelivers.
                        unconfirmed.waiting.clear();
                        unconfirmed.taken_by = Some(taker);
                    }
                    unconfirmed.waiting.retain(MessagesAck::is_awaited);
                    unconfirmed.waiting.push(ack);
                    actor.confirm_when_persisted(ctx);
                }
                Err(error) => {
                    warn!(actor.log, "Batch queue gone: received messages not forwarded."; "error" => %error);
                }
            }),
        );
    }

    /// Drops the acknowledgements waiting on a batch queue that died: never confirmed, so
    /// WhatsApp redelivers those messages (to the queue that replaced it).
    pub(super) fn forget_acks_of_a_dead_queue(&mut self) {
        let unconfirmed = &mut self.unconfirmed;
        if unconfirmed
            .taken_by
            .as_ref()
            .is_some_and(|taker| !taker.connected())
        {
            unconfirmed.waiting.clear();
            unconfirmed.taken_by = None;
        }
    }

    /// Awaits one outbox write for the waiting acknowledgements, then confirms them; repeats
    /// while more arrived meanwhile.
    fn confirm_when_persisted(&mut self, ctx: &mut Context<Self>) {
        if self.unconfirmed.flushing || self.unconfirmed.waiting.is_empty() {
            return;
        }
        let Some(batch) = self.unconfirmed.taken_by.clone() else {
            return;
        };
        self.unconfirmed.flushing = true;
        let covered = std::mem::take(&mut self.unconfirmed.waiting);
        batch
            .send(FlushOutbox)
            .into_actor(self)
            .map(move |written, actor, ctx| {
                actor.unconfirmed.flushing = false;
                if matches!(written, Ok(Ok(()))) {
                    covered.iter().for_each(MessagesAck::confirm);
                }
                actor.confirm_when_persisted(ctx);
            })
            .spawn(ctx);
    }

    pub(super) fn on_qr(&mut self, code: String, valid_for: Duration, ctx: &mut Context<Self>) {
        self.qr_count += 1;
        let now = Instant::now();
        self.last_qr_at = Some(now);
        let expires_at = now + valid_for;
        self.current_qr = Some(ShownQr::new(code.clone(), expires_at, valid_for));
        self.next_retry_at = None;
        if matches!(
            self.state,
            SessionState::Starting | SessionState::Connecting | SessionState::Error
        ) {
            self.set_state(SessionState::Pending);
        }
        match self
            .qr
            .offer(code, expires_at, now, self.config.qr_min_interval)
        {
            QrDecision::Forward(code) => self.forward_qr(&code, ctx),
            QrDecision::HoldUntil(at) => {
                if let Some(handle) = self.qr_release.take() {
                    ctx.cancel_future(handle);
                }
                let handle = ctx.run_later(at.saturating_duration_since(now), |actor, ctx| {
                    actor.qr_release = None;
                    if let Some(code) = actor
                        .qr
                        .release(Instant::now(), actor.config.qr_min_interval)
                    {
                        actor.forward_qr(&code, ctx);
                    }
                });
                self.qr_release = Some(handle);
            }
            QrDecision::Duplicate => {}
        }
    }

    pub(super) fn discard_held_qr(&mut self, ctx: &mut Context<Self>) {
        self.current_qr = None;
        self.qr.discard_held();
        self.held.qr = None;
        if let Some(handle) = self.qr_release.take() {
            ctx.cancel_future(handle);
        }
    }
}
