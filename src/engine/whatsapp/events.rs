//! How whatsapp-rust's events become wasup's [`EngineEvent`]s: a pure mapping (unit-tested on
//! the crate's own event types) and the handler that feeds it from a client's event bus.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use tokio::sync::mpsc::UnboundedSender;
use wasup_actors::{
    engine::{DisconnectReason, EngineEvent, MessagesAck, ReceivedMessage},
    messages::IncomingMessage,
};
use whatsapp_rust::{
    InboundDurabilityHook, anyhow, async_trait,
    prelude::{Client, Event, EventHandler, InboundMessage, wa},
    wacore::proto_helpers::MessageExt,
    wacore_binary::jid::JidExt,
};

/// What the mapping remembers between events of one connection.
#[derive(Debug, Default)]
pub struct MappingState {
    /// QR codes shown in the current pairing attempt.
    qr_index: AtomicU32,
    /// Our own JID (`<number>@s.whatsapp.net`), the `to` of direct messages.
    own_jid: Mutex<Option<String>>,
}

impl MappingState {
    /// A state that knows our JID, when the session paired before.
    pub fn new(own_jid: Option<String>) -> Self {
        Self {
            qr_index: AtomicU32::new(0),
            own_jid: Mutex::new(own_jid),
        }
    }

    fn own_jid(&self) -> Option<String> {
        self.own_jid.lock().ok().and_then(|jid| jid.clone())
    }

    fn learn_own_jid(&self, jid: String) {
        if let Ok(mut own) = self.own_jid.lock() {
            *own = Some(jid);
        }
    }
}

/// The wasup events one library event means (none for most: presence, receipts, sync, ...).
pub fn map_event(event: &Event, state: &MappingState) -> Vec<EngineEvent> {
    let single = match event {
        Event::PairingQrCode(qr) => EngineEvent::Qr {
            code: qr.code.clone(),
            index: state.qr_index.fetch_add(1, Ordering::Relaxed),
            valid_for: qr.timeout,
        },
        // Without `disconnected`, a pairing-code flow is still under way on the open socket.
        Event::PairingQrCodesExhausted(exhausted) if exhausted.disconnected => {
            EngineEvent::Disconnected {
                reason: DisconnectReason::TimedOut,
            }
        }
        Event::PairSuccess(paired) => {
            state.qr_index.store(0, Ordering::Relaxed);
            state.learn_own_jid(format!("{}@s.whatsapp.net", paired.id.user));
            EngineEvent::Paired {
                phone: Some(paired.id.user.to_string()),
            }
        }
        Event::PairError(failed) => EngineEvent::Refused {
            reason: format!("pairing failed: {}", failed.error),
        },
        Event::Connected(_) => EngineEvent::Connected,
        Event::Disconnected(dropped) => EngineEvent::Reconnecting {
            reason: format!("connection lost: {}", dropped.reason),
        },
        Event::LoggedOut(_) => EngineEvent::Disconnected {
            reason: DisconnectReason::LoggedOut,
        },
        Event::StreamReplaced(_) => EngineEvent::Refused {
            reason: "stream replaced: another WhatsApp Web client took over this session".into(),
        },
        Event::TemporaryBan(ban) => EngineEvent::Refused {
            reason: format!(
                "temporarily banned by WhatsApp ({:?}) for {} s{}",
                ban.code,
                ban.expire.num_seconds(),
                ban.message
                    .as_deref()
                    .map(|message| format!(": {message}"))
                    .unwrap_or_default()
            ),
        },
        Event::ClientOutdated(_) => EngineEvent::Refused {
            reason: "client outdated: WhatsApp refuses this client version (update wasup)".into(),
        },
        Event::ConnectFailure(failure) => {
            let reason = format!(
                "connect failure {:?}{}",
                failure.reason,
                failure
                    .message
                    .as_deref()
                    .map(|message| format!(": {message}"))
                    .unwrap_or_default()
            );
            if failure.reason.should_reconnect() {
                EngineEvent::Reconnecting { reason }
            } else {
                EngineEvent::Refused { reason }
            }
        }
        // Messages come through the durability hook ([`MessageHook`]), not the event bus.
        _ => return Vec::new(),
    };
    vec![single]
}

/// The messages of a delivery that Laravel gets: not our own, not status updates.
pub fn received_messages(batch: &[InboundMessage], state: &MappingState) -> Vec<ReceivedMessage> {
    batch
        .iter()
        .filter(|inbound| {
            let source = &inbound.info.source;
            !source.is_from_me && !source.chat.is_status_broadcast()
        })
        .map(|inbound| received(inbound, state))
        .collect()
}

/// One received message as Laravel gets it: the sender as a phone JID without device suffix
/// (the phone-number form when WhatsApp addressed it by LID).
fn received(inbound: &InboundMessage, state: &MappingState) -> ReceivedMessage {
    let info = &inbound.info;
    let source = &info.source;
    let to = if source.is_group {
        source.chat.to_non_ad_string()
    } else {
        state.own_jid().unwrap_or_default()
    };
    let sender = match &source.sender_alt {
        Some(phone) if source.sender.is_lid() => phone,
        _ => &source.sender,
    };
    let message = inbound.message.get_base_message();
    ReceivedMessage {
        message: IncomingMessage {
            message_id: info.id.to_string(),
            from: sender.to_non_ad_string(),
            to,
            kind: message_kind(message).to_string(),
            text: message
                .text_content()
                .or_else(|| message.get_caption())
                .map(str::to_string),
        },
        timestamp: u64::try_from(info.timestamp.timestamp_millis()).unwrap_or(0),
    }
}

/// The message's kind, as the `type` field says it.
pub fn message_kind(message: &wa::Message) -> &'static str {
    if message.conversation.is_some() || message.extended_text_message.is_set() {
        "text"
    } else if message.image_message.is_set() {
        "image"
    } else if message.video_message.is_set() {
        "video"
    } else if message.audio_message.is_set() {
        "audio"
    } else if message.document_message.is_set() {
        "document"
    } else if message.sticker_message.is_set() {
        "sticker"
    } else if message.location_message.is_set() {
        "location"
    } else if message.contact_message.is_set() {
        "contact"
    } else if message.reaction_message.is_set() {
        "reaction"
    } else {
        "other"
    }
}

/// Receives each delivery of messages before WhatsApp is acknowledged: hands it to the session
/// and holds the acknowledgement until the session confirms the messages are in the durable
/// outbox (or gives up after [`MESSAGE_CONFIRM_TIMEOUT`], and WhatsApp redelivers them later).
pub struct MessageHook {
    /// Shared with the event handler (our JID).
    state: Arc<MappingState>,
    /// Towards the session's event channel, in order with the other events.
    events: UnboundedSender<EngineEvent>,
}

/// How long a delivery waits for the session's confirmation.
pub const MESSAGE_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

impl MessageHook {
    /// A hook feeding `events`.
    pub fn new(state: Arc<MappingState>, events: UnboundedSender<EngineEvent>) -> Self {
        Self { state, events }
    }
}

#[async_trait]
impl InboundDurabilityHook for MessageHook {
    async fn on_messages(
        &self,
        _client: Arc<Client>,
        batch: &[InboundMessage],
    ) -> anyhow::Result<()> {
        let messages = received_messages(batch, &self.state);
        if messages.is_empty() {
            return Ok(());
        }
        let (ack, confirmed) = MessagesAck::new();
        self.events
            .send(EngineEvent::Messages { messages, ack })
            .map_err(|_| anyhow::anyhow!("the session is gone"))?;
        match tokio::time::timeout(MESSAGE_CONFIRM_TIMEOUT, confirmed).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(anyhow::anyhow!("the session did not keep the messages")),
            Err(_) => Err(anyhow::anyhow!("the messages were not confirmed in time")),
        }
    }
}

/// Subscribed to a client's event bus before it starts: maps each event and queues the result
/// for the session, in order. Pairing is remembered by a marker file beside the store.
pub struct SessionEventHandler {
    /// The mapping's memory (shared with the [`MessageHook`]).
    state: Arc<MappingState>,
    /// Towards the session's event channel (drained by a forwarding task).
    events: UnboundedSender<EngineEvent>,
    /// `store_dir/paired`: written on pairing with our JID, removed on logout.
    paired_marker: PathBuf,
    /// Raised once WhatsApp answered on the current link (shared with the transport wrapper).
    established: Arc<AtomicBool>,
}

impl SessionEventHandler {
    /// A handler for one connection.
    pub fn new(
        state: Arc<MappingState>,
        events: UnboundedSender<EngineEvent>,
        paired_marker: PathBuf,
        established: Arc<AtomicBool>,
    ) -> Self {
        Self {
            state,
            events,
            paired_marker,
            established,
        }
    }
}

impl EventHandler for SessionEventHandler {
    fn handle_event(&self, event: Arc<Event>) {
        for mapped in map_event(&event, &self.state) {
            // Anything mapped came from WhatsApp's side of the link: it answered.
            self.established.store(true, Ordering::Relaxed);
            match &mapped {
                EngineEvent::Paired { .. } => {
                    if let Some(jid) = self.state.own_jid() {
                        let _ = crate::engine::files::write_private(&self.paired_marker, jid);
                    }
                }
                EngineEvent::Disconnected {
                    reason: DisconnectReason::LoggedOut,
                } => {
                    let _ = std::fs::remove_file(&self.paired_marker);
                }
                _ => {}
            }
            let _ = self.events.send(mapped);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use whatsapp_rust::{
        Jid,
        wacore::types::events::{
            ClientOutdated, ConnectFailure, ConnectFailureReason, Connected, Disconnected,
            LoggedOut, PairSuccess, PairingQrCode, PairingQrCodesExhausted, StreamReplaced,
        },
    };

    use super::*;

    fn jid(text: &str) -> Jid {
        text.parse().unwrap_or_default()
    }

    #[test]
    fn qr_codes_count_up_and_pairing_resets_the_count() {
        let state = MappingState::default();
        let qr = |code: &str, seconds| {
            Event::PairingQrCode(
                PairingQrCode::builder()
                    .code(code.into())
                    .timeout(Duration::from_secs(seconds))
                    .build(),
            )
        };
        assert_eq!(
            map_event(&qr("ref-1", 60), &state),
            vec![EngineEvent::Qr {
                code: "ref-1".into(),
                index: 0,
                valid_for: Duration::from_secs(60)
            }]
        );
        assert!(matches!(
            map_event(&qr("ref-2", 20), &state).as_slice(),
            [EngineEvent::Qr { index: 1, .. }]
        ));
        let paired = Event::PairSuccess(
            PairSuccess::builder()
                .id(jid("34600000001@s.whatsapp.net"))
                .lid(jid("1234@lid"))
                .business_name(String::new())
                .platform("android".into())
                .build(),
        );
        assert_eq!(
            map_event(&paired, &state),
            vec![EngineEvent::Paired {
                phone: Some("34600000001".into())
            }]
        );
        assert_eq!(
            state.own_jid().as_deref(),
            Some("34600000001@s.whatsapp.net")
        );
        assert!(matches!(
            map_event(&qr("ref-3", 60), &state).as_slice(),
            [EngineEvent::Qr { index: 0, .. }]
        ));
    }

    #[test]
    fn connection_events_map_to_the_session_lifecycle() {
        let state = MappingState::default();
        let exhausted = Event::PairingQrCodesExhausted(
            PairingQrCodesExhausted::builder()
                .disconnected(true)
                .build(),
        );
        assert_eq!(
            map_event(&exhausted, &state),
            vec![EngineEvent::Disconnected {
                reason: DisconnectReason::TimedOut
            }]
        );
        assert_eq!(
            map_event(&Event::Connected(Connected::builder().build()), &state),
            vec![EngineEvent::Connected]
        );
        let dropped = Event::Disconnected(
            Disconnected::builder()
                .reason(whatsapp_rust::wacore::net::DisconnectReason::StreamEnded)
                .build(),
        );
        assert!(matches!(
            map_event(&dropped, &state).as_slice(),
            [EngineEvent::Reconnecting { reason }] if reason.contains("stream ended")
        ));
        let logged_out = Event::LoggedOut(
            LoggedOut::builder()
                .on_connect(true)
                .reason(ConnectFailureReason::LoggedOut)
                .build(),
        );
        assert_eq!(
            map_event(&logged_out, &state),
            vec![EngineEvent::Disconnected {
                reason: DisconnectReason::LoggedOut
            }]
        );
    }

    #[test]
    fn refusals_are_terminal_and_transient_failures_are_not() {
        let state = MappingState::default();
        let refused = |event: Event| match map_event(&event, &state).as_slice() {
            [EngineEvent::Refused { reason }] => Some(reason.clone()),
            _ => None,
        };
        assert!(
            refused(Event::StreamReplaced(StreamReplaced::builder().build()))
                .is_some_and(|reason| reason.contains("stream replaced"))
        );
        assert!(
            refused(Event::ClientOutdated(ClientOutdated::builder().build()))
                .is_some_and(|reason| reason.contains("outdated"))
        );
        let failure = |reason| {
            Event::ConnectFailure(
                ConnectFailure::builder()
                    .reason(reason)
                    .message("try later".into())
                    .build(),
            )
        };
        assert!(
            refused(failure(ConnectFailureReason::BadUserAgent))
                .is_some_and(|reason| reason.contains("BadUserAgent"))
        );
        assert!(matches!(
            map_event(&failure(ConnectFailureReason::ServiceUnavailable), &state).as_slice(),
            [EngineEvent::Reconnecting { reason }] if reason.contains("try later")
        ));
    }

    #[test]
    fn message_kinds_follow_the_content() {
        use whatsapp_rust::prelude::MessageBuilderExt;
        assert_eq!(message_kind(&wa::Message::text("hola")), "text");
        assert_eq!(message_kind(&wa::Message::default()), "other");
    }
}
