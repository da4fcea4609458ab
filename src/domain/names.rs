//! Names of namespaces and repositories, and the other repository fields
//! that have rules (summary, category).
//!
//! A name is 2–64 characters of lowercase ASCII letters, digits and the
//! separators `-` `_` `.`, with no separator first or last and no two
//! separators in a row. Checks run in this order, and the first failure is
//! reported: `too_long`, `invalid_character`, `too_short`,
//! `separator_position`, `double_separator`. So `"A"` is reported as an
//! invalid character rather than as too short: the character is the thing to
//! fix first.

use super::{FieldError, describe_char};

pub const MIN_NAME_LEN: usize = 2;
pub const MAX_NAME_LEN: usize = 64;
pub const MAX_SUMMARY_CHARS: usize = 100;

/// The repository categories, in the order the console lists them.
pub const CATEGORIES: &[&str] = &[
    "database",
    "server",
    "language",
    "web-framework",
    "os",
    "other",
];

const ALLOWED: &str = "allowed: a-z, 0-9, '-', '_', '.'";

fn is_separator(c: char) -> bool {
    matches!(c, '-' | '_' | '.')
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || is_separator(c)
}

fn validate_name(name: &str) -> Result<(), FieldError> {
    const FIELD: &str = "name";
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        return Err(FieldError::new(
            FIELD,
            "too_long",
            format!("must be at most {MAX_NAME_LEN} characters (got {len})"),
        ));
    }
    if let Some(c) = name.chars().find(|c| !is_name_char(*c)) {
        let what = if c.is_ascii_uppercase() {
            format!("uppercase {}", describe_char(c))
        } else {
            describe_char(c)
        };
        return Err(FieldError::new(
            FIELD,
            "invalid_character",
            format!("must not contain {what} ({ALLOWED})"),
        ));
    }
    if len == 0 {
        return Err(FieldError::new(
            FIELD,
            "too_short",
            format!("must not be empty ({MIN_NAME_LEN} to {MAX_NAME_LEN} characters)"),
        ));
    }
    if len < MIN_NAME_LEN {
        return Err(FieldError::new(
            FIELD,
            "too_short",
            format!("must be at least {MIN_NAME_LEN} characters (got {len})"),
        ));
    }
    // Only ASCII from here on, so bytes are characters.
    let bytes = name.as_bytes();
    let first = char::from(bytes[0]);
    if is_separator(first) {
        return Err(FieldError::new(
            FIELD,
            "separator_position",
            format!("must not start with '{first}' (start with a letter or a digit)"),
        ));
    }
    let last = char::from(bytes[bytes.len() - 1]);
    if is_separator(last) {
        return Err(FieldError::new(
            FIELD,
            "separator_position",
            format!("must not end with '{last}' (end with a letter or a digit)"),
        ));
    }
    if let Some(i) = bytes
        .windows(2)
        .position(|w| is_separator(char::from(w[0])) && is_separator(char::from(w[1])))
    {
        let pair = &name[i..i + 2];
        return Err(FieldError::new(
            FIELD,
            "double_separator",
            format!(
                "must not contain two separators in a row ('{pair}' at position {})",
                i + 1
            ),
        ));
    }
    Ok(())
}

/// Validates a repository name (field `name`).
pub fn validate_repo_name(name: &str) -> Result<(), FieldError> {
    validate_name(name)
}

/// Validates a namespace name (field `name`): the same rule as repositories.
pub fn validate_namespace_name(name: &str) -> Result<(), FieldError> {
    validate_name(name)
}

/// Validates a repository summary (field `summary`): at most 100 characters,
/// counted as Unicode scalar values, on one line without control characters
/// (a summary is shown in terminals, where they would be escape sequences).
pub fn validate_summary(s: &str) -> Result<(), FieldError> {
    let len = s.chars().count();
    if len > MAX_SUMMARY_CHARS {
        return Err(FieldError::new(
            "summary",
            "too_long",
            format!("must be at most {MAX_SUMMARY_CHARS} characters (got {len})"),
        ));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(FieldError::new(
            "summary",
            "invalid_character",
            format!(
                "must not contain the control character {} (one line of text)",
                describe_char(c)
            ),
        ));
    }
    Ok(())
}

/// Validates a repository category (field `category`): one of [`CATEGORIES`],
/// exactly as written there (lowercase).
pub fn validate_category(s: &str) -> Result<(), FieldError> {
    if CATEGORIES.contains(&s) {
        return Ok(());
    }
    Err(FieldError::new(
        "category",
        "invalid_value",
        format!(
            "must be one of {} (got {})",
            CATEGORIES.join(", "),
            super::quote(s)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<(), FieldError>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(e) => {
                assert_eq!(e.field, "name");
                e.code
            }
        }
    }

    #[test]
    fn repo_name_table() {
        let long64 = "a".repeat(64);
        let long65 = "a".repeat(65);
        let huge = "a".repeat(10_000);
        let cases: &[(&str, &str)] = &[
            ("ab", "ok"),
            ("api", "ok"),
            ("my-repo", "ok"),
            ("my_repo", "ok"),
            ("my.repo", "ok"),
            ("a-b_c.d", "ok"),
            ("00", "ok"),
            ("web2", "ok"),
            ("postgres-16.2", "ok"),
            (&long64, "ok"),
            ("", "too_short"),
            ("a", "too_short"),
            ("0", "too_short"),
            (&long65, "too_long"),
            (&huge, "too_long"),
            ("-", "too_short"),
            ("a/b", "invalid_character"),
            ("../x", "invalid_character"),
            ("My", "invalid_character"),
            ("mY", "invalid_character"),
            ("a b", "invalid_character"),
            ("a\0b", "invalid_character"),
            ("a\nb", "invalid_character"),
            ("a\tb", "invalid_character"),
            ("caf\u{e9}", "invalid_character"),
            ("cafe\u{301}", "invalid_character"),
            ("ab😀", "invalid_character"),
            ("\u{5d0}\u{5d1}", "invalid_character"),
            ("ab\u{200f}", "invalid_character"),
            ("ａｂ", "invalid_character"),
            ("a:b", "invalid_character"),
            ("a@b", "invalid_character"),
            ("a+b", "invalid_character"),
            ("-ab", "separator_position"),
            ("_ab", "separator_position"),
            (".ab", "separator_position"),
            ("ab-", "separator_position"),
            ("ab_", "separator_position"),
            ("ab.", "separator_position"),
            ("..", "separator_position"),
            ("a--b", "double_separator"),
            ("a-_b", "double_separator"),
            ("a._b", "double_separator"),
            ("a..b", "double_separator"),
            ("a.-b", "double_separator"),
        ];
        for (name, want) in cases {
            let got = code(validate_repo_name(name));
            assert_eq!(got, *want, "{name:?}");
            assert_eq!(
                code(validate_namespace_name(name)),
                got,
                "namespace {name:?}"
            );
        }
    }

    #[test]
    fn repo_name_messages_say_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            (
                "a/b",
                "must not contain '/' (allowed: a-z, 0-9, '-', '_', '.')",
            ),
            (
                "My",
                "must not contain uppercase 'M' (allowed: a-z, 0-9, '-', '_', '.')",
            ),
            (
                "a b",
                "must not contain ' ' (space) (allowed: a-z, 0-9, '-', '_', '.')",
            ),
            (
                "a\0b",
                "must not contain '\\0' (U+0000) (allowed: a-z, 0-9, '-', '_', '.')",
            ),
            (
                "ab😀",
                "must not contain '😀' (U+1F600) (allowed: a-z, 0-9, '-', '_', '.')",
            ),
            ("", "must not be empty (2 to 64 characters)"),
            ("a", "must be at least 2 characters (got 1)"),
            (
                "-ab",
                "must not start with '-' (start with a letter or a digit)",
            ),
            (
                "ab.",
                "must not end with '.' (end with a letter or a digit)",
            ),
            (
                "ab-_c",
                "must not contain two separators in a row ('-_' at position 3)",
            ),
        ];
        for (name, want) in cases {
            let e = validate_repo_name(name).unwrap_err();
            assert_eq!(e.message, *want, "{name:?}");
        }
        let e = validate_repo_name(&"é".repeat(65)).unwrap_err();
        assert_eq!(e.code, "too_long");
        assert_eq!(e.message, "must be at most 64 characters (got 65)");
        assert_eq!(
            e.to_string(),
            "name: must be at most 64 characters (got 65)"
        );
    }

    #[test]
    fn summary_table() {
        let cases: Vec<(String, bool)> = vec![
            (String::new(), true),
            ("A small database".into(), true),
            ("x".repeat(100), true),
            ("x".repeat(101), false),
            ("é".repeat(100), true),  // 200 bytes, 100 chars
            ("😀".repeat(100), true), // 400 bytes, 100 chars
            ("😀".repeat(101), false),
            ("e\u{301}".repeat(50), true),  // 100 scalar values
            ("e\u{301}".repeat(51), false), // 102 scalar values, 51 graphemes
            ("\u{5e9}\u{5dc}\u{5d5}\u{5dd}".into(), true),
            ("x".repeat(10_000), false),
        ];
        for (s, ok) in cases {
            let r = validate_summary(&s);
            assert_eq!(r.is_ok(), ok, "len {}", s.chars().count());
            if let Err(e) = r {
                assert_eq!(e.field, "summary");
                assert_eq!(e.code, "too_long");
                assert_eq!(
                    e.message,
                    format!("must be at most 100 characters (got {})", s.chars().count())
                );
            }
        }
    }

    #[test]
    fn summaries_have_no_control_characters() {
        for bad in [
            "a\u{0}b",
            "line\nbreak",
            "tab\there",
            "\u{1b}[31mred",
            "x\u{7f}",
            "\u{85}",
        ] {
            let e = validate_summary(bad).unwrap_err();
            assert_eq!(
                (e.field, e.code),
                ("summary", "invalid_character"),
                "{bad:?}"
            );
        }
        assert!(validate_summary("plain, with \u{202e} and é").is_ok());
    }

    #[test]
    fn category_table() {
        for c in CATEGORIES {
            assert_eq!(validate_category(c), Ok(()));
        }
        assert_eq!(CATEGORIES.len(), 6);
        for bad in [
            "",
            "Database",
            "DATABASE",
            " database",
            "web_framework",
            "webframework",
            "misc",
            "other\0",
        ] {
            let e = validate_category(bad).unwrap_err();
            assert_eq!(e.field, "category");
            assert_eq!(e.code, "invalid_value");
            assert!(
                e.message.starts_with(
                    "must be one of database, server, language, web-framework, os, other (got '"
                ),
                "{}",
                e.message
            );
        }
        let e = validate_category(&"x".repeat(10_000)).unwrap_err();
        assert!(e.message.len() < 200, "message stays short");
    }
}
