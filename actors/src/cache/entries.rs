//! What each cache key holds (SPEC §4), as typed values: an entry waits in the write journal as
//! itself and becomes JSON only when its write is built (a `json!` map would hold a B-tree per
//! entry, about 600 bytes each, for every session until the write leaves).
//!
//! Fields are declared in alphabetical order so the JSON is byte-for-byte what the earlier
//! `json!` maps produced.

use std::borrow::Cow;

use serde::Serialize;

use crate::{qr_image::QrDataUrl, session::SessionState};

/// `wasup:qr:{id}`: a session's last forwarded QR. It holds the session's rendering, not a copy.
#[derive(Debug, Serialize)]
pub(super) struct CachedQr {
    /// Digest of the raw QR text, for dedupe across runs and nodes.
    pub(super) digest: String,
    /// The PNG data URL.
    pub(super) qr: QrDataUrl,
    /// When it was forwarded, in ms since the epoch.
    pub(super) timestamp: u64,
}

/// `session:{id}:status`: the last status, as a session reported it or Laravel answered it.
#[derive(Debug, Serialize)]
pub(super) struct CachedStatus {
    /// The status name (`pending`, `active`, ...); Laravel's answer may be any string.
    pub(super) estado_qr: Cow<'static, str>,
    /// When it was stored, in ms since the epoch.
    pub(super) timestamp: u64,
}

/// `wasup:connection:{id}`: the session's lifecycle state.
#[derive(Debug, Serialize)]
pub(super) struct CachedConnection {
    /// The state.
    pub(super) state: SessionState,
    /// When it changed, in ms since the epoch.
    pub(super) timestamp: u64,
}

/// `wasup:info:{id}`: facts about the session.
#[derive(Debug, Serialize)]
pub(super) struct CachedInfo {
    /// Engine kind.
    pub(super) engine: &'static str,
    /// The paired phone.
    pub(super) phone: Option<String>,
    /// When they were stored, in ms since the epoch.
    pub(super) timestamp: u64,
    /// The session's Laravel owner.
    pub(super) user_id: Option<u64>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn entries_serialise_as_the_maps_laravel_and_other_nodes_read() {
        let status = CachedStatus {
            estado_qr: Cow::Borrowed("pending"),
            timestamp: 7,
        };
        assert_eq!(
            serde_json::to_string(&status).expect("serialises"),
            json!({"estado_qr": "pending", "timestamp": 7}).to_string()
        );
        let info = CachedInfo {
            engine: "simulated",
            phone: None,
            timestamp: 7,
            user_id: Some(3),
        };
        assert_eq!(
            serde_json::to_string(&info).expect("serialises"),
            json!({"user_id": 3, "engine": "simulated", "phone": null, "timestamp": 7}).to_string()
        );
        let qr = CachedQr {
            digest: "ab".into(),
            qr: QrDataUrl::from_png(vec![1, 2, 3]),
            timestamp: 7,
        };
        assert_eq!(
            serde_json::to_string(&qr).expect("serialises"),
            json!({"qr": "data:image/png;base64,AQID", "digest": "ab", "timestamp": 7}).to_string()
        );
    }
}
