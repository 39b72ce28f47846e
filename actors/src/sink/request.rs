//! What a batch request looks like on the wire, and how Laravel's answer is read (SPEC §2).

use std::{collections::HashSet, time::Duration};

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::messages::{Lane, OutboundItem};

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
    match lane {
        Lane::Qr => json!({ "qrs": items }),
        Lane::Status => json!({ "statuses": items }),
        Lane::Message => json!({ "messages": items }),
    }
}

/// The legacy single-item endpoint of a lane (`laravel.single_item_calls`).
pub fn single_item_path(lane: Lane) -> &'static str {
    match lane {
        Lane::Qr => "/qr",
        Lane::Status => "/whatsapp/status",
        Lane::Message => "/whatsapp/messages",
    }
}

/// Path and body of one request carrying `items`: a batch, or with `single_item_calls` the one
/// item itself on the legacy endpoint.
pub fn request_for(
    lane: Lane,
    items: &[OutboundItem],
    single_item_calls: bool,
) -> (&'static str, Value) {
    match items {
        [item] if single_item_calls => (single_item_path(lane), json!(item)),
        _ => (lane_path(lane), batch_body(lane, items)),
    }
}

/// How one request attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// Laravel stored the batch, except the items listed.
    Stored {
        /// Items Laravel could not store (sessions; message ids for messages): retried.
        failed_ids: HashSet<String>,
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
    /// 413: the batch is too large for Laravel; split it.
    TooLarge,
    /// A 4xx other than 401/403/408/413/429: the batch will never be accepted; dead-letter it.
    Rejected {
        /// The status code.
        status: u16,
    },
}

/// Laravel's answer body: `{"success":true,"updated":N,"failed":M,"failed_ids":[...]}`.
#[derive(Debug, Default, Deserialize)]
struct BatchAnswer {
    #[serde(default)]
    success: Option<bool>,
    #[serde(default)]
    failed: Option<u64>,
    #[serde(default)]
    failed_ids: Option<Vec<Value>>,
}

/// Reads an HTTP answer. `body` is only parsed for 2xx answers.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> AttemptResult {
    match status {
        200..=299 => classify_stored(body),
        413 => AttemptResult::TooLarge,
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
        _ => AttemptResult::Rejected { status },
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
    if let Some(ids) = answer.failed_ids {
        let failed_ids = ids
            .into_iter()
            .map(|id| match id {
                Value::String(id) => id,
                other => other.to_string(),
            })
            .collect();
        return AttemptResult::Stored { failed_ids };
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
        failed_ids: HashSet::new(),
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

/// Parses a `Retry-After` header given in seconds.
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_laravel_answers_per_spec() {
        assert_eq!(
            classify(200, None, br#"{"success":true,"updated":2,"failed":0}"#),
            AttemptResult::Stored {
                failed_ids: HashSet::new()
            }
        );
        assert_eq!(
            classify(
                200,
                None,
                br#"{"success":true,"updated":1,"failed":1,"failed_ids":["b"]}"#
            ),
            AttemptResult::Stored {
                failed_ids: HashSet::from(["b".to_string()])
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
                failed_ids: HashSet::new()
            }
        );
        assert_eq!(
            classify(422, None, b""),
            AttemptResult::Rejected { status: 422 }
        );
        assert_eq!(classify(413, None, b""), AttemptResult::TooLarge);
        assert_eq!(parse_retry_after(Some(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(Some("soon")), None);
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
    fn bodies_use_the_lane_key() {
        assert_eq!(batch_body(Lane::Qr, &[]), json!({"qrs": []}));
        assert_eq!(batch_body(Lane::Status, &[]), json!({"statuses": []}));
        assert_eq!(batch_body(Lane::Message, &[]), json!({"messages": []}));
        assert_eq!(lane_path(Lane::Message), "/whatsapp/messages/batch");
    }
}
