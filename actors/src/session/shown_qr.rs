//! The QR a session shows now: its text, when it expires, and its one rendering (made when the
//! QR is first forwarded or asked for, then shared by the batch item, the cache and the API).

use std::time::{Duration, Instant};

use crate::{
    messages::unix_millis,
    qr_image::{QrDataUrl, QrImageError},
};

/// The QR shown now.
#[derive(Debug)]
pub(super) struct ShownQr {
    /// The raw QR text (what a phone scans).
    pub(super) raw: String,
    /// When WhatsApp stops accepting it.
    pub(super) expires_at: Instant,
    /// The same instant in ms since the epoch, as Laravel gets it in `expires_at`.
    pub(super) expires_at_ms: u64,
    /// The rendering, once made: no QR is rendered twice.
    image: Option<QrDataUrl>,
}

impl ShownQr {
    /// A QR that arrived now and lives `valid_for`.
    pub(super) fn new(raw: String, expires_at: Instant, valid_for: Duration) -> Self {
        let valid_for_ms = u64::try_from(valid_for.as_millis()).unwrap_or(u64::MAX);
        Self {
            raw,
            expires_at,
            expires_at_ms: unix_millis().saturating_add(valid_for_ms),
            image: None,
        }
    }

    /// The rendering, made on first use (counted in `renders`).
    pub(super) fn rendered(&mut self, renders: &mut u64) -> Result<QrDataUrl, QrImageError> {
        if let Some(image) = &self.image {
            return Ok(image.clone());
        }
        *renders += 1;
        let image = QrDataUrl::render(&self.raw)?;
        self.image = Some(image.clone());
        Ok(image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_once_and_shares_the_rendering() {
        let now = Instant::now();
        let mut shown = ShownQr::new("2@abc,def".into(), now, Duration::from_secs(20));
        let mut renders = 0;
        let first = shown.rendered(&mut renders).expect("renders");
        let second = shown.rendered(&mut renders).expect("renders");
        assert!(
            std::ptr::eq(first.png(), second.png()),
            "one rendering, shared"
        );
        assert_eq!(renders, 1);
        assert!(first.to_string().starts_with("data:image/png;base64,"));
        assert!(shown.expires_at_ms >= unix_millis() + 19_000);
    }
}
