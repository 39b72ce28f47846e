//! The Laravel tier of `is_session_active`: `GET /whatsapp/status/{id}`.

use std::{rc::Rc, time::Duration};

use serde_json::Value;

/// Where an answer came from.
pub enum Answer {
    /// Redis's cached status said so.
    Redis(bool),
    /// Laravel answered with this `estado_qr` (`inactive` for an unknown session).
    Laravel(String),
    /// Nobody could answer: the caller assumes active.
    Unknown,
}

/// Whether a status counts as an account that should stay connected.
pub fn counts_as_active(estado_qr: &str) -> bool {
    !matches!(estado_qr, "inactive" | "expired")
}

/// Asks Laravel for a session's status.
#[derive(Clone)]
pub struct LaravelStatusLookup {
    /// Keep-alive client (thread-local, like the actor using it).
    client: awc::Client,
    /// `{base_url}/whatsapp/status/`.
    url_prefix: Rc<str>,
    /// Bearer token, if any.
    token: Rc<str>,
}

impl LaravelStatusLookup {
    /// A lookup against `base_url` with `token`, each call bounded by `timeout`.
    pub fn new(base_url: &str, token: &str, timeout: Duration) -> Self {
        Self {
            client: awc::Client::builder().timeout(timeout).finish(),
            url_prefix: format!("{}/whatsapp/status/", base_url.trim_end_matches('/')).into(),
            token: token.into(),
        }
    }

    /// Laravel's answer: its `estado_qr`, `inactive` when it does not know the session (404),
    /// [`Answer::Unknown`] on any error.
    pub async fn ask(&self, session_id: &str) -> Answer {
        let mut request = self.client.get(format!("{}{session_id}", self.url_prefix));
        if !self.token.is_empty() {
            request = request.bearer_auth(&*self.token);
        }
        let Ok(mut response) = request.send().await else {
            return Answer::Unknown;
        };
        match response.status().as_u16() {
            404 => Answer::Laravel("inactive".into()),
            200..=299 => match response.json::<Value>().await {
                Ok(body) => body["estado_qr"]
                    .as_str()
                    .or_else(|| body["status"].as_str())
                    .map_or(Answer::Unknown, |estado| {
                        Answer::Laravel(estado.to_string())
                    }),
                Err(_) => Answer::Unknown,
            },
            _ => Answer::Unknown,
        }
    }
}
