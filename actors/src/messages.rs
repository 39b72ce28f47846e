//! Events that cross actors: what a session tells the batching pipeline, and the items Laravel receives.

use std::time::{SystemTime, UNIX_EPOCH};

use actix::Message;
use serde::{Deserialize, Serialize};

use crate::qr_image::QrDataUrl;

/// Identifier of one WhatsApp session (one customer phone).
pub type SessionId = String;

/// Longest session id a client may choose.
pub const MAX_SESSION_ID_LEN: usize = 64;

/// Largest `user_id` accepted: Laravel (PHP) ids are signed 64-bit integers.
pub const MAX_USER_ID: u64 = i64::MAX as u64;

/// Whether a session id is safe as a Redis key part and a directory name: 1 to
/// [`MAX_SESSION_ID_LEN`] ASCII letters, digits, `-` or `_` (so never `..` or `/`).
pub fn is_valid_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_SESSION_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The delivery lanes, each with its own Laravel endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    /// QR codes, `POST /qr/batch`.
    Qr,
    /// Session statuses, `POST /whatsapp/status/batch`.
    Status,
    /// Incoming WhatsApp messages, `POST /whatsapp/messages/batch` (never coalesced).
    Message,
}

impl Lane {
    /// Every lane, in a fixed order (used for indexing and reporting).
    pub const ALL: [Lane; 3] = [Lane::Qr, Lane::Status, Lane::Message];

    /// Index into per-lane arrays.
    pub fn index(self) -> usize {
        match self {
            Lane::Qr => 0,
            Lane::Status => 1,
            Lane::Message => 2,
        }
    }

    /// Name used in logs, metrics and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Lane::Qr => "qr",
            Lane::Status => "status",
            Lane::Message => "message",
        }
    }
}

/// `estado_qr` as Laravel knows it (SPEC §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EstadoQr {
    /// A QR is shown, waiting for a scan.
    Pending,
    /// Connected.
    Active,
    /// Closed, logged out or deleted.
    Inactive,
    /// The QR codes timed out without a scan.
    Expired,
}

impl EstadoQr {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EstadoQr::Pending => "pending",
            EstadoQr::Active => "active",
            EstadoQr::Inactive => "inactive",
            EstadoQr::Expired => "expired",
        }
    }
}

/// How fast a status must reach Laravel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    /// Sent at the normal status cadence.
    Normal,
    /// Connection opened, closed or logged out: sent within `priority_delay`.
    Urgent,
}

/// What an outbound item carries, besides its session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Payload {
    /// A QR code as a `data:image/png;base64,...` URL.
    Qr {
        /// The PNG data URL, shared with the session (which answers `GET /sessions/{id}/qr`
        /// with the same rendering) and the cache: rendered once per QR.
        qr: QrDataUrl,
        /// When WhatsApp stops accepting this QR, in ms since the epoch; a QR that would reach
        /// Laravel later is not sent. Items stored by older versions lack it (0: already stale).
        #[serde(default)]
        expires_at: u64,
    },
    /// A status change.
    Status {
        /// The new status.
        estado_qr: EstadoQr,
    },
    /// A message the session received.
    Message(IncomingMessage),
    /// What became of a message Laravel asked wasup to send (messages lane too).
    Outgoing(OutgoingOutcome),
}

/// Marks an outgoing outcome on the wire (`"direction":"outgoing"`); incoming messages have none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// A message wasup sent for Laravel.
    Outgoing,
}

/// How an outgoing message ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutgoingState {
    /// WhatsApp took it.
    Sent,
    /// Given up after its retries (or its session is gone).
    Failed,
}

/// The outcome of an outgoing message, as Laravel gets it in the messages lane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingOutcome {
    /// Always `outgoing`.
    pub direction: Direction,
    /// wasup's id of the message (what `POST /sessions/{id}/messages` answered).
    pub message_id: String,
    /// `sent` or `failed`.
    pub state: OutgoingState,
    /// Its WhatsApp message id.
    pub whatsapp_id: Option<String>,
    /// The recipient's JID.
    pub to: String,
    /// Why it failed, when it did (at most 500 characters).
    pub error: Option<String>,
}

/// A WhatsApp message a session received, as Laravel gets it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingMessage {
    /// WhatsApp's message id (unique only per chat and sender).
    pub message_id: String,
    /// The sender's JID (`<number>@s.whatsapp.net`, or a group participant).
    pub from: String,
    /// The chat it arrived in: our own JID for direct messages, the group's JID otherwise.
    pub to: String,
    /// `text`, `image`, `video`, `audio`, `document`, `sticker`, `location`, `contact`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The text, or a media caption; `null` when the message has none.
    pub text: Option<String>,
}

/// One item of a Laravel batch: `{"session_id":..., "qr"|"estado_qr":..., "user_id":..., "timestamp":...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundItem {
    /// The session the item is about.
    pub session_id: SessionId,
    /// The QR or the status.
    #[serde(flatten)]
    pub payload: Payload,
    /// The Laravel user owning the session, when known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user_id: Option<u64>,
    /// When the event happened, in milliseconds since the Unix epoch.
    pub timestamp: u64,
}

impl OutboundItem {
    /// The lane this item travels in.
    pub fn lane(&self) -> Lane {
        match self.payload {
            Payload::Qr { .. } => Lane::Qr,
            Payload::Status { .. } => Lane::Status,
            Payload::Message(_) | Payload::Outgoing(_) => Lane::Message,
        }
    }

    /// When a QR item stops being worth sending (ms since the epoch); `None` for other items.
    pub fn expires_at(&self) -> Option<u64> {
        match self.payload {
            Payload::Qr { expires_at, .. } => Some(expires_at),
            Payload::Status { .. } | Payload::Message(_) | Payload::Outgoing(_) => None,
        }
    }

    /// What identifies the item in Laravel's `failed_ids`: the session for QR codes and
    /// statuses, the message id for messages.
    pub fn ack_id(&self) -> &str {
        match &self.payload {
            Payload::Message(message) => &message.message_id,
            Payload::Outgoing(outcome) => &outcome.message_id,
            Payload::Qr { .. } | Payload::Status { .. } => &self.session_id,
        }
    }

    /// The key items are coalesced under within their lane: one QR and one status per session
    /// (the latest wins), every message on its own: `session/chat/sender/id`, since WhatsApp's
    /// message ids are unique only per chat and sender (a repeat of all four is a redelivery).
    pub fn coalescing_key(&self) -> String {
        match &self.payload {
            Payload::Message(message) => format!(
                "{}/{}/{}/{}",
                self.session_id, message.to, message.from, message.message_id
            ),
            // The latest outcome of an outgoing message replaces an earlier one.
            Payload::Outgoing(outcome) => {
                format!("{}/outgoing/{}", self.session_id, outcome.message_id)
            }
            Payload::Qr { .. } | Payload::Status { .. } => self.session_id.clone(),
        }
    }
}

/// A messages-lane item to forward: a message a session received (each one delivered, none
/// coalesced), or the outcome of an outgoing message.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct MessageReceived {
    /// The item to deliver.
    pub item: OutboundItem,
}

/// A session produced a new QR code to forward (already deduplicated and storm-guarded).
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct QrCode {
    /// The item to deliver.
    pub item: OutboundItem,
}

/// A session's status changed.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct StatusChanged {
    /// The item to deliver.
    pub item: OutboundItem,
    /// How fast it must reach Laravel.
    pub urgency: Urgency,
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_cannot_escape_the_store_directory() {
        assert!(is_valid_session_id("abc-123_X"));
        for bad in ["", "../etc", "a/b", "a b", "..", &"x".repeat(65)] {
            assert!(!is_valid_session_id(bad), "{bad}");
        }
    }

    #[test]
    fn items_serialise_to_the_laravel_shape() {
        let qr = OutboundItem {
            session_id: "abc".into(),
            payload: Payload::Qr {
                qr: QrDataUrl::parse("data:image/png;base64,AAAA").expect("a data URL"),
                expires_at: 20_000,
            },
            user_id: Some(7),
            timestamp: 1,
        };
        let status = OutboundItem {
            session_id: "abc".into(),
            payload: Payload::Status {
                estado_qr: EstadoQr::Active,
            },
            user_id: None,
            timestamp: 2,
        };
        assert_eq!(
            serde_json::to_value(&qr).ok(),
            Some(
                serde_json::json!({"session_id":"abc","qr":"data:image/png;base64,AAAA","expires_at":20_000,"user_id":7,"timestamp":1})
            )
        );
        assert_eq!(
            serde_json::to_value(&status).ok(),
            Some(serde_json::json!({"session_id":"abc","estado_qr":"active","timestamp":2}))
        );
        assert_eq!(qr.lane(), Lane::Qr);
        assert_eq!(qr.expires_at(), Some(20_000));
        assert_eq!(status.expires_at(), None);
        let json = serde_json::to_string(&qr).unwrap_or_default();
        assert_eq!(serde_json::from_str::<OutboundItem>(&json).ok(), Some(qr));
        assert_eq!(status.lane(), Lane::Status);
    }

    #[test]
    fn messages_serialise_flat_and_are_never_coalesced() {
        let message = |id: &str| OutboundItem {
            session_id: "abc".into(),
            payload: Payload::Message(IncomingMessage {
                message_id: id.into(),
                from: "34600000001@s.whatsapp.net".into(),
                to: "34600000002@s.whatsapp.net".into(),
                kind: "text".into(),
                text: Some("hola".into()),
            }),
            user_id: None,
            timestamp: 3,
        };
        let first = message("M1");
        assert_eq!(
            serde_json::to_value(&first).ok(),
            Some(serde_json::json!({"session_id":"abc","message_id":"M1",
                "from":"34600000001@s.whatsapp.net","to":"34600000002@s.whatsapp.net",
                "type":"text","text":"hola","timestamp":3}))
        );
        let json = serde_json::to_string(&first).unwrap_or_default();
        assert_eq!(
            serde_json::from_str::<OutboundItem>(&json).ok(),
            Some(first.clone())
        );
        assert_eq!(first.lane(), Lane::Message);
        assert_eq!(first.ack_id(), "M1");
        assert_ne!(first.coalescing_key(), message("M2").coalescing_key());
        let in_a_group = |sender: &str| {
            let mut item = message("M1");
            if let Payload::Message(message) = &mut item.payload {
                message.to = "12036300000@g.us".into();
                message.from = sender.into();
            }
            item
        };
        assert_ne!(
            first.coalescing_key(),
            in_a_group("34600000001@s.whatsapp.net").coalescing_key(),
            "the same id in another chat is another message"
        );
        assert_ne!(
            in_a_group("34600000001@s.whatsapp.net").coalescing_key(),
            in_a_group("34600000009@s.whatsapp.net").coalescing_key(),
            "the same id from another sender is another message"
        );
        assert_eq!(first.coalescing_key(), message("M1").coalescing_key());
    }
}
