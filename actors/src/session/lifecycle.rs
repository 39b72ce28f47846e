//! How a session's connection lives and ends: connected, dropped (reconnect with backoff),
//! unreachable or reconnecting by the engine's own retries, refused for good, logged out or
//! expired (finish), idle or too old (housekeeping).

use std::time::{Duration, Instant};

use actix::prelude::*;
use slog::{info, warn};

use super::{CACHE_ANSWER_TIMEOUT, SessionActor, SessionState};
use crate::{
    batch::hand_over,
    cache::IsSessionActive,
    engine::DisconnectReason,
    messages::{EstadoQr, Urgency},
    registry::SessionFinished,
    sink::backoff_delay,
};

/// How a session ends.
#[derive(Clone, Debug)]
pub(super) struct Ending {
    /// Status to report to Laravel, if any.
    pub(super) report: Option<EstadoQr>,
    /// Log out of WhatsApp (forget credentials) rather than just close.
    pub(super) logout: bool,
    /// Why, for logs and the registry.
    pub(super) reason: String,
    /// Tell the registry (when the session ends by itself, not on the registry's word).
    pub(super) notify_registry: bool,
    /// Ask the registry for a fresh incarnation (max lifetime reached).
    pub(super) renew: bool,
    /// Delete the session's store directory once the engine closed: only after an explicit
    /// logout, or when the store holds no login (never paired, or its credentials are gone).
    /// An ending wasup only infers (Laravel no longer knows the session, reconnects used up,
    /// idle) keeps it: a wrong URL or a restored Laravel database must not log users out.
    pub(super) forget_store: bool,
}

impl Ending {
    /// A session that was paired comes back without credentials: it ends as `inactive`.
    pub(super) fn lost_credentials() -> Self {
        Self {
            forget_store: true,
            ..Self::by_itself(
                EstadoQr::Inactive,
                "paired before, but its credentials are gone: not pairing again on restore",
            )
        }
    }

    /// WhatsApp logged the session out: its credentials are void and deleted.
    fn logged_out() -> Self {
        Self {
            logout: true,
            forget_store: true,
            ..Self::by_itself(EstadoQr::Inactive, "logged out")
        }
    }

    /// Every QR expired without a scan: the store holds no login; it goes with the session.
    fn never_paired() -> Self {
        Self {
            forget_store: true,
            ..Self::by_itself(EstadoQr::Expired, "every QR code expired without a scan")
        }
    }

    /// The session ends by itself and reports `report`; its store (credentials) stays.
    fn by_itself(report: EstadoQr, reason: impl Into<String>) -> Self {
        Self {
            report: Some(report),
            logout: false,
            reason: reason.into(),
            notify_registry: true,
            renew: false,
            forget_store: false,
        }
    }
}

impl SessionActor {
    pub(super) fn on_connected(&mut self, ctx: &mut Context<Self>) {
        self.discard_held_qr(ctx);
        self.tell_cache(self.info_entry());
        self.reconnect_attempts = 0;
        self.next_retry_at = None;
        self.connected_at = Some(Instant::now());
        self.set_state(SessionState::Active);
        info!(self.log, "Session connected.");
        self.report_status(EstadoQr::Active, Urgency::Urgent, ctx);
    }

    pub(super) fn on_disconnected(&mut self, reason: DisconnectReason, ctx: &mut Context<Self>) {
        self.connected_at = None;
        match reason {
            DisconnectReason::LoggedOut => self.finish(Ending::logged_out(), ctx),
            DisconnectReason::TimedOut => self.finish(Ending::never_paired(), ctx),
            DisconnectReason::RestartRequired => {
                self.set_state(SessionState::Pairing);
                self.connect(ctx);
            }
            DisconnectReason::ConnectionLost | DisconnectReason::ConnectionReplaced => {
                self.reconnect_if_still_wanted(reason.as_str().to_string(), ctx);
            }
        }
    }

    /// The engine cannot reach WhatsApp and retries by itself: show `error`, the reason and the
    /// next attempt. Never-paired sessions are still swept as expired after `pending_timeout`.
    pub(super) fn on_unreachable(&mut self, error: String, retry_in: Duration) {
        if self.state == SessionState::Failed {
            // The link closing after WhatsApp's refusal: no retry follows.
            return;
        }
        self.connected_at = None;
        self.reconnect_attempts = self.reconnect_attempts.saturating_add(1);
        if self.reconnect_attempts.is_power_of_two() {
            warn!(self.log, "WhatsApp unreachable; the engine retries."; "error" => &error,
                "attempt" => self.reconnect_attempts, "retry_in" => ?retry_in);
        }
        self.last_error = Some(error);
        self.next_retry_at = Some(Instant::now() + retry_in);
        self.set_state(SessionState::Error);
    }

    /// The link dropped and the engine reconnects by itself: show `connecting`.
    pub(super) fn on_reconnecting(&mut self, reason: String) {
        if self.state == SessionState::Failed {
            return;
        }
        if self.connected_at.take().is_some() {
            self.reconnects += 1;
        }
        info!(self.log, "Connection dropped; the engine reconnects."; "reason" => &reason);
        self.last_error = Some(reason);
        self.set_state(SessionState::Connecting);
    }

    /// WhatsApp refused the session for good: report `inactive` at once, keep the actor (and
    /// credentials) in `failed` with the reason, and stop retrying.
    pub(super) fn on_refused(&mut self, reason: String, ctx: &mut Context<Self>) {
        warn!(self.log, "WhatsApp refused the session; not retrying."; "reason" => &reason);
        self.connected_at = None;
        self.next_retry_at = None;
        self.discard_held_qr(ctx);
        self.last_error = Some(reason);
        self.set_state(SessionState::Failed);
        self.report_status(EstadoQr::Inactive, Urgency::Urgent, ctx);
        ctx.spawn(self.engine.shutdown().into_actor(self));
    }

    /// A connection closed without a logout: reconnect only if Laravel still wants the session
    /// (`is_session_active`, fail-safe "yes"), else finish it as `inactive`, keeping its
    /// credentials (Laravel's "no" may be a mistake: a wrong URL, a restored database).
    fn reconnect_if_still_wanted(&mut self, reason: String, ctx: &mut Context<Self>) {
        let Some(cache) = &self.cache else {
            return self.connection_dropped(reason, ctx);
        };
        let ask = cache.addr.send(IsSessionActive {
            session_id: self.session_id.clone(),
        });
        self.set_state(SessionState::Connecting);
        async move { ask.timeout(CACHE_ANSWER_TIMEOUT).await.unwrap_or(true) }
            .into_actor(self)
            .map(move |active, actor, ctx| {
                if active {
                    actor.connection_dropped(reason, ctx);
                } else {
                    actor.finish(
                        Ending::by_itself(EstadoQr::Inactive, "no longer active in Laravel"),
                        ctx,
                    );
                }
            })
            .spawn(ctx);
    }

    pub(super) fn connection_dropped(&mut self, reason: String, ctx: &mut Context<Self>) {
        if self.state == SessionState::Closed {
            return;
        }
        self.last_error = Some(reason.clone());
        self.reconnect_attempts += 1;
        if self.reconnect_attempts > self.config.reconnect_max_attempts {
            let reason = format!(
                "gave up after {} reconnect attempts ({reason})",
                self.config.reconnect_max_attempts
            );
            return self.finish(Ending::by_itself(EstadoQr::Inactive, reason), ctx);
        }
        let delay = backoff_delay(
            self.config.reconnect_base,
            self.config.reconnect_max,
            self.reconnect_attempts - 1,
        );
        info!(self.log, "Connection closed; reconnecting."; "reason" => &reason, "attempt" => self.reconnect_attempts, "delay" => ?delay);
        self.set_state(SessionState::Connecting);
        ctx.run_later(delay, |actor, ctx| {
            if actor.state == SessionState::Connecting {
                actor.reconnects += 1;
                actor.connect(ctx);
            }
        });
    }

    /// Ends the session: reports its last status (waiting for room in the batch mailbox, so it
    /// is not lost), closes or logs out the engine, then stops without a death notice.
    pub(super) fn finish(&mut self, ending: Ending, ctx: &mut Context<Self>) {
        if self.state == SessionState::Closed {
            return;
        }
        info!(self.log, "Session finished."; "reason" => &ending.reason,
            "status" => ending.report.map(EstadoQr::as_str));
        self.discard_held_qr(ctx);
        self.set_state(SessionState::Closed);
        let final_status = ending
            .report
            .and_then(|estado| self.status_event(estado, Urgency::Urgent))
            .or_else(|| self.held.status.take());
        self.held.status = None;
        if ending.notify_registry {
            self.registry.do_send(SessionFinished {
                session_id: self.session_id.clone(),
                generation: self.generation,
                reason: ending.reason.clone(),
                renew: ending.renew,
                keeps_store: !ending.forget_store,
            });
        }
        let close_engine = if ending.logout {
            let logout = self.engine.logout();
            Box::pin(async move {
                let _ = logout.await;
            }) as futures_util::future::LocalBoxFuture<'static, ()>
        } else {
            self.engine.shutdown()
        };
        let batch = self.batch.clone();
        let forgotten_store = ending.forget_store.then(|| self.store_dir.clone());
        let log = self.log.clone();
        ctx.wait(
            async move {
                // The engine closes meanwhile: the device is free for a next incarnation.
                let report = async {
                    if let Some(status) = final_status
                        && !hand_over(&batch, status).await
                    {
                        warn!(log, "The batch queue stays down: the final status is lost.");
                    }
                };
                futures_util::join!(report, close_engine);
                if let Some(dir) = forgotten_store {
                    match std::fs::remove_dir_all(&dir) {
                        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                            warn!(log, "Session store could not be removed."; "dir" => %dir.display(), "error" => %error);
                        }
                        _ => {}
                    }
                }
            }
            .into_actor(self)
            .map(|(), actor, ctx| {
                actor.death_notice.disarm();
                ctx.stop();
            }),
        );
    }

    pub(super) fn housekeeping(&mut self, ctx: &mut Context<Self>) {
        if self.state == SessionState::Closed {
            return;
        }
        if self.started_at.elapsed() >= self.config.max_lifetime {
            let renewal = Ending {
                report: None,
                renew: true,
                ..Ending::by_itself(EstadoQr::Inactive, "max lifetime reached: renewing")
            };
            self.finish(renewal, ctx);
        } else if self.state != SessionState::Active
            && self.last_event_at.elapsed() >= self.config.idle_ttl
        {
            // A live connection is not idle, however quiet the phone. An idle one ends, but its
            // credentials stay: starting the same session id again reconnects without a QR.
            self.finish(Ending::by_itself(EstadoQr::Inactive, "idle"), ctx);
        }
    }
}
