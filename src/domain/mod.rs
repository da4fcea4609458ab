//! The pure core of kiln: names, Docker tags, rule patterns, version
//! templates and the matching of a push against a repository's rules.
//!
//! Nothing in here does I/O, and nothing in here panics on any input: every
//! function is total over arbitrary strings (empty, huge, Unicode, control
//! characters), which the tests in each module check.

pub mod build_limits;
pub mod build_settings;
pub mod builder;
pub mod cache_cap;
pub mod clone_url;
pub mod commit_status;
pub mod dockerfile_labels;
pub mod names;
pub mod paths;
pub mod pattern;
pub mod queue_order;
pub mod rules;
pub mod schedule;
pub mod tag;
pub mod tag_owner;
pub mod template;

/// A validation failure that names the field; the HTTP layer maps it to 422 {"error":{"code","message","field"}}.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The request field at fault, e.g. `"name"`.
    pub field: &'static str,
    /// A stable `snake_case` code, e.g. `"too_long"`.
    pub code: &'static str,
    /// A sentence for people saying exactly what is wrong.
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field,
            code,
            message: message.into(),
        }
    }
}

/// Shows one character in an error message so that invisible or confusable
/// characters are still recognisable: `'/'`, `' ' (space)`, `'\0' (U+0000)`,
/// `'Ä' (U+00C4)`.
/// The checks every short free-text field shares: at most `max` bytes (`too_long`) and no control
/// character (`invalid_character`). `subject` starts the message ("" or e.g. "a pattern ").
pub(crate) fn check_length_and_controls(
    field: &'static str,
    value: &str,
    max: usize,
    subject: &str,
) -> Result<(), FieldError> {
    if value.len() > max {
        return Err(FieldError::new(
            field,
            "too_long",
            format!("{subject}must be at most {max} bytes (got {})", value.len()),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(FieldError::new(
            field,
            "invalid_character",
            format!(
                "{subject}must not contain the control character {}",
                describe_char(c)
            ),
        ));
    }
    Ok(())
}

pub(crate) fn describe_char(c: char) -> String {
    if c == ' ' {
        "' ' (space)".to_string()
    } else if c == '\'' {
        "\"'\" (quote)".to_string()
    } else if c.is_ascii_graphic() {
        format!("'{c}'")
    } else {
        format!("{c:?} (U+{:04X})", u32::from(c))
    }
}

/// Escapes user input for an error message like a Rust string literal
/// (control characters and other invisibles become `\u{..}`), cut to a
/// readable length so a 10 000-character input does not end up in a
/// 10 000-character message.
pub(crate) fn escape(s: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX_CHARS {
            out.push('…');
            break;
        }
        if c == '"' {
            // escape_debug escapes double quotes, which reads oddly inside '…'
            out.push('"');
        } else {
            out.extend(c.escape_debug());
        }
    }
    out
}

/// [`escape`] in single quotes: `'main'`.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", escape(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_error_displays_field_and_message() {
        let e = FieldError::new("name", "too_short", "must be at least 2 characters");
        assert_eq!(e.to_string(), "name: must be at least 2 characters");
        assert_eq!(e.field, "name");
        assert_eq!(e.code, "too_short");
    }

    #[test]
    fn describe_char_cases() {
        let cases: &[(char, &str)] = &[
            ('/', "'/'"),
            (' ', "' ' (space)"),
            ('\'', "\"'\" (quote)"),
            ('\0', "'\\0' (U+0000)"),
            ('\n', "'\\n' (U+000A)"),
            ('Ä', "'Ä' (U+00C4)"),
            ('\u{301}', "'\\u{301}' (U+0301)"),
            ('😀', "'😀' (U+1F600)"),
            ('Ａ', "'Ａ' (U+FF21)"),
        ];
        for (c, want) in cases {
            assert_eq!(describe_char(*c), *want, "char {c:?}");
        }
    }

    #[test]
    fn quote_escapes_and_truncates() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("main"), "'main'");
        assert_eq!(quote("a\0b\n"), "'a\\0b\\n'");
        assert_eq!(quote("it's"), "'it\\'s'");
        assert_eq!(quote("say \"hi\""), "'say \"hi\"'");
        let long = "x".repeat(10_000);
        let q = quote(&long);
        assert_eq!(q.chars().count(), 64 + 3);
        assert_eq!(escape("a\u{202e}b"), "a\\u{202e}b");
        assert!(q.ends_with("…'"));
    }
}
