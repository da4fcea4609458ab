//! Masking: every secret value kiln knows is replaced by `***` in build logs, error messages and
//! `tracing` output.
//!
//! The known values are process-wide: kiln registers a value when it loads or creates it (the
//! [`Cipher`](super::Cipher) does for every value it seals or opens; configuration secrets at start).
//! Each value is also known in the escaped forms a log line may show it in (JSON and `Debug`
//! strings). Values shorter than [`MIN_LEN`] are not masked: masking them would garble every line
//! (no secret kiln accepts is that short, except a password in git credentials, which is masked
//! within its `user:password` form).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};

/// What a secret is replaced by.
pub const MASK: &str = "***";

/// Shorter values are not masked.
pub const MIN_LEN: usize = 6;

#[derive(Default)]
struct Known {
    values: BTreeSet<String>,
    /// All values as one automaton (leftmost-longest: a longer value wins over one it contains).
    pattern: Option<Arc<AhoCorasick>>,
}

static KNOWN: LazyLock<RwLock<Known>> = LazyLock::new(RwLock::default);

/// Registers a secret value (and its escaped forms): from now on it is masked.
pub fn register(value: &str) {
    register_all([value]);
}

/// Registers several values at once (one rebuild of the pattern).
pub fn register_all<'a>(values: impl IntoIterator<Item = &'a str>) {
    let mut new: Vec<String> = Vec::new();
    {
        let known = KNOWN.read().unwrap_or_else(|e| e.into_inner());
        for value in values {
            // Known already (with its forms): the common case, a value opened again.
            if value.chars().count() < MIN_LEN || known.values.contains(value) {
                continue;
            }
            for form in forms(value) {
                if !known.values.contains(&form) && !new.contains(&form) {
                    new.push(form);
                }
            }
        }
    }
    if new.is_empty() {
        return;
    }
    let mut known = KNOWN.write().unwrap_or_else(|e| e.into_inner());
    known.values.extend(new);
    known.pattern = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(&known.values)
        .ok()
        .map(Arc::new);
}

/// The value as written, and as a JSON or `Debug` string shows it (without the quotes).
fn forms(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_string()];
    let quoted = [
        serde_json::to_string(value).unwrap_or_default(),
        format!("{value:?}"),
    ];
    for q in quoted {
        if let Some(inner) = q.strip_prefix('"').and_then(|q| q.strip_suffix('"'))
            && inner != value
            && !forms.iter().any(|f| f == inner)
        {
            forms.push(inner.to_string());
        }
    }
    // And percent-encoded, as in a URL's query (a Docker API call's build args) or user info.
    for form in forms.clone() {
        let encoded: String = form_urlencoded::byte_serialize(form.as_bytes()).collect();
        let encoded_space = encoded.replace('+', "%20");
        for e in [encoded, encoded_space] {
            if !forms.contains(&e) {
                forms.push(e);
            }
        }
    }
    forms
}

/// `text` with every known secret value replaced by `***` (borrowed when there is none in it).
pub fn mask(text: &str) -> Cow<'_, str> {
    let known = KNOWN.read().unwrap_or_else(|e| e.into_inner());
    if known.values.is_empty() {
        return Cow::Borrowed(text);
    }
    match known.pattern.clone() {
        Some(ac) => {
            drop(known);
            if ac.find(text).is_none() {
                return Cow::Borrowed(text);
            }
            let mut out = String::with_capacity(text.len());
            ac.replace_all_with(text, &mut out, |_, _, out| {
                out.push_str(MASK);
                true
            });
            Cow::Owned(out)
        }
        None => {
            let mut out = text.to_string();
            let mut all: Vec<&String> = known.values.iter().collect();
            all.sort_by_key(|v| std::cmp::Reverse(v.len()));
            for v in all {
                if out.contains(v.as_str()) {
                    out = out.replace(v.as_str(), MASK);
                }
            }
            if out == text {
                Cow::Borrowed(text)
            } else {
                Cow::Owned(out)
            }
        }
    }
}

/// A `tracing_subscriber` writer that masks known secrets: each event is formatted into a buffer,
/// masked, then written in one piece to the inner writer (standard error in kiln).
pub struct MaskingWriter<M> {
    inner: M,
}

impl<M> MaskingWriter<M> {
    pub fn new(inner: M) -> Self {
        MaskingWriter { inner }
    }
}

/// One event's output, masked and written when dropped.
pub struct MaskedEvent<W: std::io::Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: std::io::Write> std::io::Write for MaskedEvent<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: std::io::Write> Drop for MaskedEvent<W> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf);
        let masked = mask(&text);
        let _ = self.inner.write_all(masked.as_bytes());
        let _ = self.inner.flush();
    }
}

impl<'a, M> tracing_subscriber::fmt::MakeWriter<'a> for MaskingWriter<M>
where
    M: tracing_subscriber::fmt::MakeWriter<'a>,
{
    type Writer = MaskedEvent<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        MaskedEvent {
            inner: self.inner.make_writer(),
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_are_masked_in_every_form_and_short_ones_are_not() {
        register("mask-test-Secret-1");
        register("mask-test-Secret-1-longer");
        register("mask\"test\\quoted");
        register("short");
        assert_eq!(
            mask("a mask-test-Secret-1 b mask-test-Secret-1-longer c"),
            "a *** b *** c"
        );
        assert_eq!(mask(r#"{"x":"mask\"test\\quoted"}"#), r#"{"x":"***"}"#);
        assert_eq!(
            mask("?buildargs=mask%22test%5Cquoted&x"),
            "?buildargs=***&x"
        );
        assert_eq!(mask("short stays"), "short stays");
        assert!(matches!(mask("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn tracing_output_is_masked() {
        use tracing_subscriber::fmt::MakeWriter;
        #[derive(Clone, Default)]
        struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Shared {
            fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(data);
                Ok(data.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl<'a> MakeWriter<'a> for Shared {
            type Writer = Shared;
            fn make_writer(&'a self) -> Shared {
                self.clone()
            }
        }
        register("tracing-test-secret-value");
        let out = Shared::default();
        for json in [false, true] {
            let builder = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(MaskingWriter::new(out.clone()));
            let subscriber: Box<dyn tracing::Subscriber + Send + Sync> = if json {
                Box::new(builder.json().finish())
            } else {
                Box::new(builder.finish())
            };
            tracing::subscriber::with_default(subscriber, || {
                tracing::trace!(secret = "tracing-test-secret-value", "at trace");
                tracing::error!(
                    "in a message: https://bot:tracing-test-secret-value@example.com/x.git"
                );
                tracing::debug!(debugged = ?"tracing-test-secret-value", "debug");
            });
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("tracing-test-secret-value"), "{text}");
        assert_eq!(text.matches("***").count(), 6, "{text}");
    }
}
