//! What a batch request looks like on the wire, and how Laravel's answer is read (SPEC §2).

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::failed_ids::{FailedIds, read_failed_ids, read_rejected};
use crate::messages::{Lane, OutboundItem};

/// Which Laravel calls carry the batches (`laravel.contract`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Contract {
    /// One endpoint per lane (`POST /qr/batch`, `/whatsapp/status/batch`, `/whatsapp/messages/batch`).
    #[default]
    Split,
    /// Every due lane in one `POST /whatsapp/events/batch {"qrs","statuses","messages"}`.
    Combined,
}

/// The combined call's path.
pub const COMBINED_PATH: &str = "/whatsapp/events/batch";

/// The body key of a lane's items.
pub fn lane_key(lane: Lane) -> &'static str {
    match lane {
        Lane::Qr => "qrs",
        Lane::Status => "statuses",
        Lane::Message => "messages",
    }
}

/// The endpoint of a lane, under the base URL.
pub fn lane_path(lane: Lane) -> &'static str {
    match lane {
        Lane::Qr => "/qr/batch",
        Lane::Status => "/whatsapp/status/batch",
        Lane::Message => "/whatsapp/messages/batch",
    }
}

/// `{"qrs":[...]}`, `{"statuses":[...]}` or `{"messages":[...]}`.
pub fn batch_body(lane: Lane, items: &[OutboundItem]) -> Value {
    json!({ lane_key(lane): items })
}

/// `{"qrs":[...],"statuses":[...],"messages":[...]}` with the lanes `items` hold, each in order.
pub fn combined_body(items: &[OutboundItem]) -> Value {
    let mut body = Map::new();
    for lane in Lane::ALL {
        let of_lane: Vec<&OutboundItem> = items.iter().filter(|item| item.lane() == lane).collect();
        if !of_lane.is_empty() {
            body.insert(lane_key(lane).into(), json!(of_lane));
        }
    }
    Value::Object(body)
}

/// The legacy single-item endpoint of a lane (`laravel.single_item_calls`).
pub fn single_item_path(lane: Lane) -> &'static str {
    match lane {
        Lane::Qr => "/qr",
        Lane::Status => "/whatsapp/status",
        Lane::Message => "/whatsapp/messages",
    }
}

/// Path and body of one request carrying `items`: the combined call, a lane's batch (split
/// items all share one lane), or with `single_item_calls` the one item itself on the legacy
/// endpoint.
pub fn request_for(
    items: &[OutboundItem],
    contract: Contract,
    single_item_calls: bool,
) -> (&'static str, Value) {
    let lane = items.first().map_or(Lane::Status, OutboundItem::lane);
    match items {
        [item] if single_item_calls => (single_item_path(lane), json!(item)),
        _ if contract == Contract::Combined => (COMBINED_PATH, combined_body(items)),
        _ => (lane_path(lane), batch_body(lane, items)),
    }
}

/// How one request attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// Laravel stored the batch, except the items listed.
    Stored {
        /// Items Laravel could not store (sessions; message ids for messages): retried.
        failed_ids: Box<FailedIds>,
    },
    /// Worth retrying the whole batch: network error, timeout, 5xx, 408, 429, or `failed` without ids.
    Retry {
        /// What went wrong, for logs.
        reason: String,
        /// Laravel's `Retry-After`, when given.
        retry_after: Option<Duration>,
        /// Whether this counts against the circuit breaker (Laravel unreachable or failing).
        breaker_failure: bool,
    },
    /// 400, 413 or 422: Laravel refused the batch, most likely because of some of its items (a
    /// text too long, a field left empty, too many or too large items); split it until only the
    /// refused items remain.
    Refused {
        /// The status code.
        status: u16,
        /// Laravel's reason, for the dead letter (never an item's content).
        reason: String,
    },
    /// Another 4xx (404, 405, ...): no part of the batch will be accepted as it is (a wrong URL,
    /// say); dead-letter it whole, to be replayed once fixed.
    Rejected {
        /// The status code.
        status: u16,
        /// What Laravel said.
        reason: String,
    },
}

impl AttemptResult {
    /// Whether Laravel answered 413.
    pub fn is_too_large(&self) -> bool {
        matches!(self, Self::Refused { status: 413, .. })
    }
}

/// Laravel's answer body: `{"success":true,"updated":N,"failed":M,"failed_ids":[...]}`.
#[derive(Debug, Default, Deserialize)]
struct BatchAnswer {
    #[serde(default)]
    success: Option<bool>,
    #[serde(default)]
    failed: Option<u64>,
    #[serde(default)]
    failed_ids: Option<Value>,
    #[serde(default)]
    rejected: Option<Value>,
}

/// Longest reason kept from Laravel's answer, in characters.
pub(super) const MAX_REASON_CHARS: usize = 200;

/// Laravel's answer to a refused batch, shortened for a dead letter: the first validation
/// error (`{"errors":{"field":["..."]}}`), else its `message`, after `HTTP {status}`.
fn refusal_reason(status: u16, body: &[u8]) -> String {
    let said = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|answer| {
            let first_error = answer
                .get("errors")
                .and_then(Value::as_object)
                .and_then(|errors| errors.values().next())
                .and_then(|messages| match messages {
                    Value::Array(messages) => messages.first().and_then(Value::as_str),
                    other => other.as_str(),
                })
                .map(str::to_string);
            first_error.or_else(|| answer.get("message")?.as_str().map(str::to_string))
        });
    match said {
        Some(said) => format!(
            "HTTP {status}: {}",
            said.chars().take(MAX_REASON_CHARS).collect::<String>()
        ),
        None => format!("HTTP {status}"),
    }
}

/// Reads an HTTP answer. `body` is only parsed for 2xx answers.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> AttemptResult {
    match status {
        200..=299 => classify_stored(body),
        400 | 413 | 422 => AttemptResult::Refused {
            status,
            reason: refusal_reason(status, body),
        },
        408 | 429 | 500..=599 => AttemptResult::Retry {
            reason: format!("HTTP {status}"),
            retry_after,
            breaker_failure: true,
        },
        // Wrong token or secret: a configuration to fix, not data to drop. Kept and retried
        // (the breaker opens meanwhile) until the configuration is right.
        401 | 403 => AttemptResult::Retry {
            reason: format!("HTTP {status}: check laravel.token and laravel.signing_secret"),
            retry_after,
            breaker_failure: true,
        },
        _ => AttemptResult::Rejected {
            status,
            reason: refusal_reason(status, body),
        },
    }
}

fn classify_stored(body: &[u8]) -> AttemptResult {
    // An empty 2xx (e.g. 204) stores everything; a body that is not the SPEC's answer (an HTML
    // login page behind a misrouted URL, say) is no acknowledgement: retry.
    let answer: BatchAnswer = if body.trim_ascii().is_empty() {
        BatchAnswer::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(answer) => answer,
            Err(error) => {
                return AttemptResult::Retry {
                    reason: format!("unreadable answer from Laravel: {error}"),
                    retry_after: None,
                    breaker_failure: true,
                };
            }
        }
    };
    let mut failed_ids = FailedIds::default();
    let listed = answer.failed_ids.filter(|ids| !ids.is_null());
    let rejected = answer.rejected.filter(|rejected| !rejected.is_null());
    if listed.is_some() || rejected.is_some() {
        if let Some(ids) = listed {
            read_failed_ids(ids, &mut failed_ids);
        }
        if let Some(rejected) = rejected {
            read_rejected(rejected, &mut failed_ids);
        }
        // More failures than ids named: some failed item is unknown, so none can be taken as
        // stored; the whole batch goes again, as for `failed` without ids.
        let failed = answer.failed.unwrap_or(0);
        if failed > failed_ids.named() as u64 {
            return AttemptResult::Retry {
                reason: format!(
                    "Laravel reported {failed} failed items but named {}",
                    failed_ids.named()
                ),
                retry_after: None,
                breaker_failure: false,
            };
        }
        return AttemptResult::Stored {
            failed_ids: Box::new(failed_ids),
        };
    }
    let failed = answer.failed.unwrap_or(0);
    if failed > 0 || answer.success == Some(false) {
        return AttemptResult::Retry {
            reason: format!("Laravel reported {failed} failed items without failed_ids"),
            retry_after: None,
            breaker_failure: false,
        };
    }
    AttemptResult::Stored {
        failed_ids: Box::default(),
    }
}

/// `sha256=<hex>`: HMAC-SHA256 with `secret` over `"{timestamp}.{body}"` (also used for values
/// other than requests, e.g. the QR page's cookie).
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    hmac_hex(secret, &[timestamp.to_string().as_bytes(), b".", body])
}

/// The `X-Wasup-Signature` of a request: HMAC-SHA256 over `"{timestamp}.{idempotency_key}.{body}"`,
/// so a captured request cannot be replayed under a fresh timestamp or another key, and two
/// batches with the same body in the same second still differ. Laravel recomputes it over the
/// raw body and rejects stale timestamps.
pub fn request_signature(
    secret: &str,
    timestamp: u64,
    idempotency_key: &str,
    body: &[u8],
) -> String {
    let timestamp = timestamp.to_string();
    let parts: [&[u8]; 5] = [
        timestamp.as_bytes(),
        b".",
        idempotency_key.as_bytes(),
        b".",
        body,
    ];
    hmac_hex(secret, &parts)
}

fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for part in parts {
        mac.update(part);
    }
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Longest `Retry-After` taken from Laravel: a larger one (or a huge number) is capped, so a lane
/// never stalls for hours and `now + retry_after` cannot overflow.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Parses a `Retry-After` header given in seconds (capped at [`MAX_RETRY_AFTER`]).
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map(|seconds| Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_laravel_answers_per_spec() {
        assert_eq!(
            classify(200, None, br#"{"success":true,"updated":2,"failed":0}"#),
            AttemptResult::Stored {
                failed_ids: Box::default()
            }
        );
        assert_eq!(
            classify(
                200,
                None,
                br#"{"success":true,"updated":1,"failed":1,"failed_ids":["b"]}"#
            ),
            AttemptResult::Stored {
                failed_ids: Box::new(FailedIds::flat(["b".to_string()]))
            }
        );
        assert!(matches!(
            classify(200, None, br#"{"success":false,"updated":1,"failed":1}"#),
            AttemptResult::Retry {
                breaker_failure: false,
                ..
            }
        ));
        for status in [408, 429, 500, 503] {
            assert!(matches!(
                classify(status, None, b""),
                AttemptResult::Retry {
                    breaker_failure: true,
                    ..
                }
            ));
        }
        for status in [401, 403] {
            assert!(matches!(
                classify(status, None, b""),
                AttemptResult::Retry {
                    breaker_failure: true,
                    ..
                }
            ));
        }
        assert!(matches!(
            classify(200, None, b"<html>Login</html>"),
            AttemptResult::Retry {
                breaker_failure: true,
                ..
            }
        ));
        assert_eq!(
            classify(204, None, b""),
            AttemptResult::Stored {
                failed_ids: Box::default()
            }
        );
        assert_eq!(
            classify(422, None, b""),
            AttemptResult::Refused {
                status: 422,
                reason: "HTTP 422".into()
            }
        );
        assert!(classify(413, None, b"").is_too_large());
        assert_eq!(
            classify(
                422,
                None,
                br#"{"message":"The given data was invalid.","errors":{"messages.3.text":["The messages.3.text must not be greater than 65536 characters."]}}"#
            ),
            AttemptResult::Refused {
                status: 422,
                reason: "HTTP 422: The messages.3.text must not be greater than 65536 characters."
                    .into()
            }
        );
        assert_eq!(
            classify(404, None, br#"{"message":"Not Found"}"#),
            AttemptResult::Rejected {
                status: 404,
                reason: "HTTP 404: Not Found".into()
            }
        );
        assert_eq!(parse_retry_after(Some(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(Some("soon")), None);
        assert_eq!(
            parse_retry_after(Some("18446744073709551615")),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn rejected_items_are_told_apart_from_items_to_retry() {
        use crate::messages::Payload;
        let message = |id: &str| OutboundItem {
            session_id: "s".into(),
            payload: Payload::Message(crate::messages::IncomingMessage {
                message_id: id.into(),
                from: "a".into(),
                to: "b".into(),
                kind: "text".into(),
                text: None,
            }),
            user_id: None,
            timestamp: 1,
        };
        let split = br#"{"success":true,"updated":1,"failed":2,"failed_ids":["m1","m2"],"rejected":{"m2":"The text must not be greater than 65536 characters."}}"#;
        let AttemptResult::Stored { failed_ids } = classify(200, None, split) else {
            panic!("stored");
        };
        assert!(failed_ids.contains(&message("m1")));
        assert_eq!(failed_ids.rejection(&message("m1")), None, "retried");
        assert_eq!(
            failed_ids.rejection(&message("m2")),
            Some("The text must not be greater than 65536 characters.")
        );
        assert!(!failed_ids.contains(&message("m3")));
        let combined = br#"{"success":true,"failed_ids":{"messages":["m2"]},"rejected":{"qrs":{},"messages":{"m2":"bad"}}}"#;
        let AttemptResult::Stored { failed_ids } = classify(200, None, combined) else {
            panic!("stored");
        };
        assert_eq!(failed_ids.rejection(&message("m2")), Some("bad"));
        let unnamed = br#"{"success":true,"failed":3,"rejected":{"m2":"bad"}}"#;
        assert!(
            matches!(classify(200, None, unnamed), AttemptResult::Retry { .. }),
            "two failures unnamed: nothing can be taken as stored"
        );
        let none = br#"{"success":true,"failed":0,"failed_ids":[],"rejected":{}}"#;
        let AttemptResult::Stored { failed_ids } = classify(200, None, none) else {
            panic!("stored");
        };
        assert!(failed_ids.is_empty());
    }

    #[test]
    fn signatures_match_a_known_hmac() {
        // echo -n '1700000000.{}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            signature("secret", 1_700_000_000, b"{}"),
            "sha256=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
        assert_ne!(signature("secret", 1, b"{}"), signature("secret", 2, b"{}"));
        // echo -n '1700000000.key-1.{}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            request_signature("secret", 1_700_000_000, "key-1", b"{}"),
            "sha256=49f26fe132a40da774e29860d29febcc3526537b17e0df65a80d1bf9023da9d8"
        );
        assert_ne!(
            request_signature("secret", 1, "key-1", b"{}"),
            request_signature("secret", 1, "key-2", b"{}")
        );
    }

    #[test]
    fn the_combined_call_carries_every_lane_and_answers_failures_per_lane() {
        use crate::messages::{EstadoQr, Payload};
        let item = |session: &str, payload: Payload| OutboundItem {
            session_id: session.into(),
            payload,
            user_id: None,
            timestamp: 1,
        };
        let qr = item(
            "a",
            Payload::Qr {
                qr: crate::qr_image::QrDataUrl::from_png(vec![1]),
                expires_at: 9,
            },
        );
        let status = item(
            "a",
            Payload::Status {
                estado_qr: EstadoQr::Active,
            },
        );
        let (path, body) = request_for(&[qr.clone(), status.clone()], Contract::Combined, false);
        assert_eq!(path, COMBINED_PATH);
        assert_eq!(body["qrs"][0]["session_id"], "a");
        assert_eq!(body["statuses"][0]["estado_qr"], "active");
        assert!(body.get("messages").is_none(), "absent lanes are left out");
        let answer =
            br#"{"success":true,"updated":1,"failed":1,"failed_ids":{"qrs":[],"statuses":["a"]}}"#;
        let AttemptResult::Stored { failed_ids } = classify(200, None, answer) else {
            panic!("stored");
        };
        assert!(failed_ids.contains(&status));
        assert!(
            !failed_ids.contains(&qr),
            "the same session's QR was stored"
        );
        let (path, _) = request_for(&[qr], Contract::Split, false);
        assert_eq!(path, "/qr/batch");
    }

    #[test]
    fn bodies_use_the_lane_key() {
        assert_eq!(batch_body(Lane::Qr, &[]), json!({"qrs": []}));
        assert_eq!(batch_body(Lane::Status, &[]), json!({"statuses": []}));
        assert_eq!(batch_body(Lane::Message, &[]), json!({"messages": []}));
        assert_eq!(lane_path(Lane::Message), "/whatsapp/messages/batch");
    }
}
