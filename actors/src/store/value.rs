//! What the journal stores for a field or a key: text, or JSON made only when its write is built.
//!
//! A QR item waits in the journal twice (its outbox record and its cache entry) while the batch
//! lane and the session hold the same rendered image. Serialised at once, each copy costs the
//! image again (about 1.6 KB, more with the string's spare capacity): at 100k sessions that was
//! the largest item of the heap. Kept as the value itself, a waiting change shares the image;
//! and a change replaced before its write (a QR by the next one) is never serialised at all.

use std::{borrow::Cow, fmt, sync::Arc};

use serde::Serialize;

/// A value the journal writes as JSON when its write is built.
pub trait LazyJson: fmt::Debug + Send + Sync {
    /// Appends the JSON text to `out`; false (and `out` as it was) if the value cannot be
    /// serialised, and then nothing is written.
    fn append_json(&self, out: &mut Vec<u8>) -> bool;
}

impl<T: Serialize + fmt::Debug + Send + Sync> LazyJson for T {
    fn append_json(&self, out: &mut Vec<u8>) -> bool {
        let before = out.len();
        let written = serde_json::to_writer(&mut *out, self).is_ok();
        if !written {
            out.truncate(before);
        }
        written
    }
}

/// A value waiting to be written.
#[derive(Clone, Debug)]
pub enum StoredValue {
    /// Text, stored as it is (boxed: no spare capacity while it waits).
    Text(Box<str>),
    /// A value serialised when its write is built.
    Json(Arc<dyn LazyJson>),
}

impl StoredValue {
    /// A value to store as its JSON, serialised only if and when it is written.
    pub fn json<T: LazyJson + 'static>(value: T) -> Self {
        Self::Json(Arc::new(value))
    }

    /// The text Redis gets; `None` for a value that cannot be serialised.
    pub fn render(&self) -> Option<Cow<'_, str>> {
        match self {
            Self::Text(text) => Some(Cow::Borrowed(text)),
            Self::Json(value) => {
                let mut json = Vec::new();
                value.append_json(&mut json).then_some(())?;
                String::from_utf8(json).ok().map(Cow::Owned)
            }
        }
    }

    /// `prefix` followed by the text Redis gets, in one buffer (a stored `seq|payload` without
    /// copying the payload twice); `None` for a value that cannot be serialised.
    pub fn render_after(&self, prefix: &str) -> Option<Vec<u8>> {
        let mut bytes = Vec::with_capacity(prefix.len() + self.size_hint());
        bytes.extend_from_slice(prefix.as_bytes());
        match self {
            Self::Text(text) => bytes.extend_from_slice(text.as_bytes()),
            Self::Json(value) => value.append_json(&mut bytes).then_some(())?,
        }
        Some(bytes)
    }

    /// About how long the text is: exact for text; for JSON a guess that fits a QR item.
    fn size_hint(&self) -> usize {
        match self {
            Self::Text(text) => text.len(),
            Self::Json(_) => 2048,
        }
    }
}

impl From<String> for StoredValue {
    fn from(text: String) -> Self {
        Self::Text(text.into_boxed_str())
    }
}

impl From<&str> for StoredValue {
    fn from(text: &str) -> Self {
        Self::Text(text.into())
    }
}

/// Two values are equal when Redis would get the same text.
impl PartialEq for StoredValue {
    fn eq(&self, other: &Self) -> bool {
        self.render() == other.render()
    }
}

impl Eq for StoredValue {}

impl fmt::Display for StoredValue {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.render().as_deref().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize)]
    struct Image {
        qr: Arc<str>,
    }

    #[test]
    fn a_lazy_value_renders_as_the_json_an_eager_one_would_hold() {
        let shared: Arc<str> = "data:image/png;base64,AAAA".into();
        let lazy = StoredValue::json(Image { qr: shared.clone() });
        let eager = StoredValue::from(r#"{"qr":"data:image/png;base64,AAAA"}"#);
        assert_eq!(lazy, eager);
        assert_eq!(lazy.to_string(), eager.to_string());
        assert_eq!(
            Arc::strong_count(&shared),
            2,
            "the waiting value shares the image"
        );
        for value in [&lazy, &eager] {
            let stored = value.render_after("7|").expect("serialisable");
            assert_eq!(stored, br#"7|{"qr":"data:image/png;base64,AAAA"}"#);
        }
    }
}
