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
            // A redirect could carry the bearer token to another host: never followed.
            client: awc::Client::builder()
                .disable_redirects()
                .timeout(timeout)
                .finish(),
            url_prefix: format!("{}/whatsapp/status/", base_url.trim_end_matches('/')).into(),
            token: token.into(),
        }
    }

    /// Laravel's answer: its `estado_qr`, `inactive` when it does not know the session (404),
    /// [`Answer::Unknown`] on any error.
    pub async fn ask(&self, session_id: &str) -> Answer {
        let url = format!("{}{}", self.url_prefix, escape_segment(session_id));
        let mut request = self.client.get(url);
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

/// `text` as one URL path segment: everything but RFC 3986 unreserved characters
/// percent-escaped, so an id cannot add segments, a query or a fragment.
pub fn escape_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_escaped_segment() {
        assert_eq!(escape_segment("abc-1_2.x~"), "abc-1_2.x~");
        assert_eq!(escape_segment("../admin?x=1#f"), "..%2Fadmin%3Fx%3D1%23f");
        assert_eq!(escape_segment("a b/é"), "a%20b%2F%C3%A9");
    }

    #[actix_rt::test]
    async fn redirects_are_not_followed_and_the_id_is_escaped() {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (seen, requests) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let mut buffer = [0_u8; 4096];
                let read = stream.read(&mut buffer).unwrap_or(0);
                let text = String::from_utf8_lossy(&buffer[..read]).to_string();
                let line = text.lines().next().unwrap_or_default().to_string();
                let answer = if line.contains("/elsewhere") {
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                     Content-Length: 25\r\nConnection: close\r\n\r\n{\"estado_qr\":\"connected\"}"
                        .to_string()
                } else {
                    format!(
                        "HTTP/1.1 302 Found\r\nLocation: http://{addr}/elsewhere\r\n\
                         Content-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                };
                let _ = seen.send(line);
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        let lookup = LaravelStatusLookup::new(
            &format!("http://{addr}/api"),
            "token",
            Duration::from_secs(5),
        );
        let answer = lookup.ask("a/b?c").await;
        assert!(
            matches!(answer, Answer::Unknown),
            "a 302 is no answer (the redirect was followed)"
        );
        let lines: Vec<String> = requests.try_iter().collect();
        assert_eq!(
            lines,
            vec!["GET /api/whatsapp/status/a%2Fb%3Fc HTTP/1.1".to_string()],
            "one request, escaped, no redirect followed"
        );
    }
}
