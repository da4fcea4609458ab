//! The rule `version` language: how the tag of a build is written.
//!
//! Literal text plus placeholders in braces:
//!
//! | placeholder | renders as |
//! | --- | --- |
//! | `{sourceref}`, `{branch}`, `{tag}` | the pushed branch or tag name (Docker Hub's names) |
//! | `{sha}` | the full commit id |
//! | `{sha7}` | the first 7 characters of the commit id |
//! | `{date}` | the push date, UTC, `YYYYMMDD` |
//! | `{1}`…`{9}`, `{\1}`…`{\9}` | capture groups of a `/regex/` rule name (Docker Hub writes `{\1}`) |
//!
//! `{branch}` and `{tag}` are synonyms of `{sourceref}`: `{branch}` in a tag
//! rule (or `{tag}` in a branch rule) renders as the pushed ref name all the
//! same, so a template can be copied between rules. An empty template means
//! `{sourceref}`.
//!
//! Literal text may only hold characters allowed in a Docker tag
//! (`A-Z a-z 0-9 _ . -`), must not start the template with `.` or `-`, and
//! is at most 128 characters in total. The rendered result goes through
//! [`sanitize_tag`], so a branch `feature/login` renders as `feature-login`.
//! A template made only of captures that may be empty is accepted: the
//! rendered result may then be empty, which the plan reports as
//! "empty version".

use std::fmt;

use super::pattern::RefPattern;
use super::tag::{MAX_TAG_LEN, SHORT_SHA_LEN, sanitize_tag};
use super::{FieldError, describe_char, escape};

/// The longest template source, in bytes (placeholders included).
pub const MAX_TEMPLATE_LEN: usize = 1024;

const FIELD: &str = "version";

const KNOWN: &str = "{sourceref}, {branch}, {tag}, {sha}, {sha7}, {date}, {1}…{9}";

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Text copied as is (only Docker tag characters).
    Literal(String),
    /// `{sourceref}`, `{branch}` or `{tag}`: the pushed ref name.
    RefName,
    /// `{sha}`: the full commit id.
    Sha,
    /// `{sha7}`: the first 7 characters of the commit id.
    Sha7,
    /// `{date}`: the date as `YYYYMMDD`.
    Date,
    /// `{n}` / `{\n}`, 1 ≤ n ≤ 9: a regex capture group.
    Capture(usize),
}

/// A parsed rule `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionTemplate {
    source: String,
    segments: Vec<Segment>,
}

/// What a template is rendered with.
#[derive(Debug, Clone, Copy)]
pub struct TemplateVars<'a> {
    /// The branch or tag name (without `refs/heads/` / `refs/tags/`).
    pub ref_name: &'a str,
    /// The full commit id.
    pub sha: &'a str,
    /// The date `{date}` shows (UTC).
    pub date: chrono::NaiveDate,
    /// From [`RefPattern::matches`]: `[0]` the whole name, `[1..]` the groups.
    pub captures: &'a [String],
}

fn is_literal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

fn placeholder(name: &str, pattern: &RefPattern) -> Result<Segment, FieldError> {
    let simple = match name {
        "sourceref" | "branch" | "tag" => Some(Segment::RefName),
        "sha" => Some(Segment::Sha),
        "sha7" => Some(Segment::Sha7),
        "date" => Some(Segment::Date),
        _ => None,
    };
    if let Some(seg) = simple {
        return Ok(seg);
    }
    let digits = name.strip_prefix('\\').unwrap_or(name);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let n = match digits.parse::<usize>() {
            Ok(n) if (1..=9).contains(&n) && digits.len() == 1 => n,
            _ => {
                return Err(FieldError::new(
                    FIELD,
                    "unknown_placeholder",
                    format!(
                        "unknown placeholder {{{}}}: capture groups are written {{1}} to {{9}} \
                         (use {{sourceref}} for the whole name)",
                        escape(name)
                    ),
                ));
            }
        };
        let have = pattern.capture_count();
        if n > have {
            let message = match pattern {
                RefPattern::Regex(_) => format!(
                    "{{{name}}} refers to capture group {n}, but the rule name has only {have} capture groups"
                ),
                _ => format!(
                    "{{{name}}} refers to capture group {n}, but the rule name has only 0 capture groups \
                     (only a /regex/ rule name has them)"
                ),
            };
            return Err(FieldError::new(FIELD, "unknown_capture", message));
        }
        return Ok(Segment::Capture(n));
    }
    let shown = if name.is_empty() {
        "{}".to_string()
    } else {
        format!("{{{}}}", escape(name))
    };
    Err(FieldError::new(
        FIELD,
        "unknown_placeholder",
        format!("unknown placeholder {shown} (known: {KNOWN})"),
    ))
}

impl VersionTemplate {
    /// Parses a rule `version` (field `version`) for a rule whose name is
    /// `pattern` (which says how many capture groups there are).
    pub fn parse(src: &str, pattern: &RefPattern) -> Result<VersionTemplate, FieldError> {
        if src.len() > MAX_TEMPLATE_LEN {
            return Err(FieldError::new(
                FIELD,
                "too_long",
                format!(
                    "must be at most {MAX_TEMPLATE_LEN} bytes (got {})",
                    src.len()
                ),
            ));
        }
        if src.is_empty() {
            return Ok(VersionTemplate {
                source: String::new(),
                segments: vec![Segment::RefName],
            });
        }

        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut literal_len = 0usize;
        let mut chars = src.chars().enumerate().peekable();
        while let Some((pos, c)) = chars.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (inner_pos, inner) in chars.by_ref() {
                        match inner {
                            '}' => {
                                closed = true;
                                break;
                            }
                            '{' => {
                                return Err(FieldError::new(
                                    FIELD,
                                    "syntax",
                                    format!(
                                        "'{{' at position {} inside the placeholder opened at position {} \
                                         (placeholders cannot be nested; write '{{' only to open one)",
                                        inner_pos + 1,
                                        pos + 1
                                    ),
                                ));
                            }
                            other => name.push(other),
                        }
                    }
                    if !closed {
                        return Err(FieldError::new(
                            FIELD,
                            "syntax",
                            format!("'{{' at position {} is never closed with '}}'", pos + 1),
                        ));
                    }
                    let seg = placeholder(&name, pattern)?;
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(seg);
                }
                '}' => {
                    return Err(FieldError::new(
                        FIELD,
                        "syntax",
                        format!(
                            "'}}' at position {} has no matching '{{' before it",
                            pos + 1
                        ),
                    ));
                }
                c if is_literal_char(c) => {
                    if segments.is_empty() && literal.is_empty() && (c == '.' || c == '-') {
                        return Err(FieldError::new(
                            FIELD,
                            "invalid_start",
                            format!(
                                "must not start with '{c}' (a Docker tag starts with a letter, a digit or '_')"
                            ),
                        ));
                    }
                    literal.push(c);
                    literal_len += 1;
                }
                c => {
                    return Err(FieldError::new(
                        FIELD,
                        "invalid_character",
                        format!(
                            "must not contain {} at position {}: text outside placeholders \
                             may only use A-Z, a-z, 0-9, '_', '.', '-' (the characters of a Docker tag)",
                            describe_char(c),
                            pos + 1
                        ),
                    ));
                }
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        if literal_len > MAX_TAG_LEN {
            return Err(FieldError::new(
                FIELD,
                "too_long",
                format!(
                    "its text outside placeholders is {literal_len} characters, \
                     longer than a Docker tag can be ({MAX_TAG_LEN})"
                ),
            ));
        }
        Ok(VersionTemplate {
            source: src.to_string(),
            segments,
        })
    }

    /// The template as written (`""` for the default).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The parsed pieces, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Substitutes the placeholders, then runs [`sanitize_tag`] over the
    /// whole result; `None` when nothing valid remains. A capture group the
    /// pattern did not provide renders as `""`.
    pub fn render(&self, vars: &TemplateVars) -> Option<String> {
        let mut out = String::new();
        for seg in &self.segments {
            match seg {
                Segment::Literal(s) => out.push_str(s),
                Segment::RefName => out.push_str(vars.ref_name),
                Segment::Sha => out.push_str(vars.sha),
                Segment::Sha7 => out.extend(vars.sha.chars().take(SHORT_SHA_LEN)),
                Segment::Date => {
                    use chrono::Datelike;
                    let d = vars.date;
                    out.push_str(&format!("{:04}{:02}{:02}", d.year(), d.month(), d.day()));
                }
                Segment::Capture(n) => {
                    if let Some(c) = vars.captures.get(*n) {
                        out.push_str(c);
                    }
                }
            }
        }
        sanitize_tag(&out)
    }
}

impl fmt::Display for VersionTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    const SHA: &str = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b";

    fn pat(src: &str) -> RefPattern {
        RefPattern::parse(src).unwrap()
    }

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 3, 7).unwrap()
    }

    /// Parses `template` for `rule_name`, matches `ref_name` and renders.
    fn render(rule_name: &str, template: &str, ref_name: &str) -> Option<String> {
        let p = pat(rule_name);
        let t =
            VersionTemplate::parse(template, &p).unwrap_or_else(|e| panic!("{template:?}: {e}"));
        let caps = p.matches(ref_name).expect("ref must match the rule name");
        t.render(&TemplateVars {
            ref_name,
            sha: SHA,
            date: date(),
            captures: &caps,
        })
    }

    fn parse_err(rule_name: &str, template: &str) -> FieldError {
        match VersionTemplate::parse(template, &pat(rule_name)) {
            Ok(t) => panic!("{template:?} parsed as {t:?}"),
            Err(e) => {
                assert_eq!(e.field, "version");
                e
            }
        }
    }

    #[test]
    fn parse_segments() {
        use Segment::*;
        let semver = "/^v(\\d+)\\.(\\d+)\\.(\\d+)$/";
        let a128 = "a".repeat(128);
        let cases: Vec<(&str, &str, Vec<Segment>)> = vec![
            ("main", "", vec![RefName]),
            ("main", "{sourceref}", vec![RefName]),
            ("main", "{branch}", vec![RefName]),
            ("main", "{tag}", vec![RefName]),
            ("main", "latest", vec![Literal("latest".into())]),
            ("main", "{sha}", vec![Sha]),
            ("main", "{sha7}", vec![Sha7]),
            ("main", "{date}", vec![Date]),
            (
                "main",
                "nightly-{date}-{sha7}",
                vec![Literal("nightly-".into()), Date, Literal("-".into()), Sha7],
            ),
            (
                semver,
                "{1}.{2}",
                vec![Capture(1), Literal(".".into()), Capture(2)],
            ),
            (
                semver,
                "{\\1}.{\\2}.{\\3}",
                vec![
                    Capture(1),
                    Literal(".".into()),
                    Capture(2),
                    Literal(".".into()),
                    Capture(3),
                ],
            ),
            (semver, "{3}{3}", vec![Capture(3), Capture(3)]),
            ("main", "_x", vec![Literal("_x".into())]),
            ("main", "{sha7}.", vec![Sha7, Literal(".".into())]),
            (
                "main",
                "{branch}-{tag}",
                vec![RefName, Literal("-".into()), RefName],
            ),
            ("main", &a128, vec![Literal("a".repeat(128))]),
        ];
        for (rule, src, want) in cases {
            let t = VersionTemplate::parse(src, &pat(rule)).unwrap();
            assert_eq!(t.segments(), want.as_slice(), "{src:?}");
            assert_eq!(t.source(), src);
            assert_eq!(t.to_string(), src);
        }
    }

    #[test]
    fn parse_errors() {
        let semver = "/^v(\\d+)\\.(\\d+)\\.(\\d+)$/";
        let one = "/^v(\\d+)$/";
        let huge_literal = "a".repeat(129);
        let huge_template = "{sha}".repeat(300);
        let cases: Vec<(&str, &str, &str)> = vec![
            ("main", "{", "syntax"),
            ("main", "}", "syntax"),
            ("main", "{{", "syntax"),
            ("main", "{{sha}}", "syntax"),
            ("main", "{sha{7}}", "syntax"),
            ("main", "v{sha", "syntax"),
            ("main", "v}sha", "syntax"),
            ("main", "{sha}}", "syntax"),
            ("main", "{}", "unknown_placeholder"),
            ("main", "{SHA}", "unknown_placeholder"),
            ("main", "{ sha }", "unknown_placeholder"),
            ("main", "{commit}", "unknown_placeholder"),
            ("main", "{sha8}", "unknown_placeholder"),
            ("main", "{0}", "unknown_placeholder"),
            ("main", "{\\0}", "unknown_placeholder"),
            ("main", "{10}", "unknown_placeholder"),
            ("main", "{01}", "unknown_placeholder"),
            ("main", "{99999999999999999999999}", "unknown_placeholder"),
            ("main", "{\\}", "unknown_placeholder"),
            ("main", "{\\\\1}", "unknown_placeholder"),
            ("main", "{-1}", "unknown_placeholder"),
            ("main", "{😀}", "unknown_placeholder"),
            ("main", "{\0}", "unknown_placeholder"),
            (semver, "{10}", "unknown_placeholder"),
            ("main", "{1}", "unknown_capture"),
            ("v*", "{\\1}", "unknown_capture"),
            (one, "{2}", "unknown_capture"),
            (semver, "{4}", "unknown_capture"),
            (semver, "{\\9}", "unknown_capture"),
            ("main", "a/b", "invalid_character"),
            ("main", "v 1", "invalid_character"),
            ("main", " ", "invalid_character"),
            ("main", "v:1", "invalid_character"),
            ("main", "v+1", "invalid_character"),
            ("main", "v\0", "invalid_character"),
            ("main", "v\n", "invalid_character"),
            ("main", "vé", "invalid_character"),
            ("main", "v\u{301}", "invalid_character"),
            ("main", "😀", "invalid_character"),
            ("main", "\u{5d0}", "invalid_character"),
            ("main", "ｖ1", "invalid_character"),
            ("main", "../x", "invalid_start"),
            ("main", ".x", "invalid_start"),
            ("main", "-x", "invalid_start"),
            ("main", "-{sha}", "invalid_start"),
            ("main", "...", "invalid_start"),
            ("main", &huge_literal, "too_long"),
            ("main", &huge_template, "too_long"),
        ];
        for (rule, src, want) in cases {
            assert_eq!(parse_err(rule, src).code, want, "{src:?}");
        }
    }

    #[test]
    fn parse_error_messages() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "main",
                "v{sha",
                "'{' at position 2 is never closed with '}'",
            ),
            (
                "main",
                "v}",
                "'}' at position 2 has no matching '{' before it",
            ),
            (
                "main",
                "{{",
                "'{' at position 2 inside the placeholder opened at position 1 \
                 (placeholders cannot be nested; write '{' only to open one)",
            ),
            (
                "main",
                "{commit}",
                "unknown placeholder {commit} (known: {sourceref}, {branch}, {tag}, {sha}, {sha7}, {date}, {1}…{9})",
            ),
            (
                "main",
                "{}",
                "unknown placeholder {} (known: {sourceref}, {branch}, {tag}, {sha}, {sha7}, {date}, {1}…{9})",
            ),
            (
                "main",
                "{10}",
                "unknown placeholder {10}: capture groups are written {1} to {9} (use {sourceref} for the whole name)",
            ),
            (
                "/^v(\\d+)$/",
                "{1}.{2}",
                "{2} refers to capture group 2, but the rule name has only 1 capture groups",
            ),
            (
                "v*",
                "{\\1}",
                "{\\1} refers to capture group 1, but the rule name has only 0 capture groups \
                 (only a /regex/ rule name has them)",
            ),
            (
                "main",
                "v/1",
                "must not contain '/' at position 2: text outside placeholders may only use \
                 A-Z, a-z, 0-9, '_', '.', '-' (the characters of a Docker tag)",
            ),
            (
                "main",
                "-x",
                "must not start with '-' (a Docker tag starts with a letter, a digit or '_')",
            ),
        ];
        for (rule, src, want) in cases {
            assert_eq!(parse_err(rule, src).message, *want, "{src:?}");
        }
        let e = parse_err(
            "main",
            &format!("{}{{sha}}{}", "a".repeat(100), "b".repeat(29)),
        );
        assert_eq!(
            e.message,
            "its text outside placeholders is 129 characters, longer than a Docker tag can be (128)"
        );
        let e = parse_err("main", &format!("{{{}}}", "x".repeat(500)));
        assert!(e.message.len() < 200, "{}", e.message);
        let e = parse_err("main", "{a\u{0}b}");
        assert!(e.message.contains("{a\\0b}"), "{}", e.message);
    }

    #[test]
    fn render_table() {
        let semver = "/^v(\\d+)\\.(\\d+)\\.(\\d+)$/";
        let cases: &[(&str, &str, &str, Option<&str>)] = &[
            ("main", "", "main", Some("main")),
            ("main", "{sourceref}", "main", Some("main")),
            ("main", "latest", "main", Some("latest")),
            ("feature/*", "", "feature/login", Some("feature-login")),
            (
                "feature/*",
                "{branch}",
                "feature/login",
                Some("feature-login"),
            ),
            (
                "release/*",
                "{sourceref}",
                "release/1.2",
                Some("release-1.2"),
            ),
            ("main", "{sha}", "main", Some(SHA)),
            ("main", "{sha7}", "main", Some("1a2b3c4")),
            ("main", "{date}", "main", Some("20240307")),
            ("main", "nightly-{date}", "main", Some("nightly-20240307")),
            (
                "main",
                "{branch}-{date}-{sha7}",
                "main",
                Some("main-20240307-1a2b3c4"),
            ),
            (semver, "{1}.{2}", "v1.22.333", Some("1.22")),
            (semver, "{\\1}", "v1.22.333", Some("1")),
            (semver, "{\\1}.{\\2}.{\\3}", "v1.22.333", Some("1.22.333")),
            (semver, "", "v1.22.333", Some("v1.22.333")),
            (semver, "{tag}", "v1.22.333", Some("v1.22.333")),
            (semver, "{3}-{2}-{1}", "v1.2.3", Some("3-2-1")),
            ("v*", "{tag}", "v2", Some("v2")),
            ("v*.*", "{branch}", "v2.0", Some("v2.0")),
            // empty optional captures
            ("/^v(\\d+)(?:-(rc\\d+))?$/", "{1}-{2}", "v3", Some("3")),
            (
                "/^v(\\d+)(?:-(rc\\d+))?$/",
                "{1}-{2}",
                "v3-rc1",
                Some("3-rc1"),
            ),
            ("/^v(\\d+)(?:-(rc\\d+))?$/", "{2}", "v3", None),
            ("/^(x?)$/", "{1}", "", None),
            ("/^(x?)$/", "{1}", "x", Some("x")),
            // captures that need sanitizing
            ("/^release\\/(.*)$/", "{1}", "release/a/b", Some("a-b")),
            ("/^(.*)$/", "{1}", "...", None),
            ("/^(.*)$/", "x{1}", "/Ärger/", Some("x-rger")),
            ("/^(.*)$/", "{1}", "😀", None),
            ("/^(.*)$/", "a{1}", "😀", Some("a")),
            (
                "/^(.*)$/",
                "{1}",
                "\u{5e9}\u{5dc}\u{5d5}\u{5dd}-2",
                Some("2"),
            ),
            // ref names with hostile characters
            ("*", "", "a\0b", Some("a-b")),
            ("*", "", "../x", Some("x")),
            ("*", "", "-x", Some("x")),
        ];
        for (rule, template, ref_name, want) in cases {
            assert_eq!(
                render(rule, template, ref_name).as_deref(),
                *want,
                "{rule:?} {template:?} {ref_name:?}"
            );
        }
    }

    #[test]
    fn render_long_results_are_cut_to_a_tag() {
        let name = "x".repeat(10_000);
        let got = render("*", "", &name).unwrap();
        assert_eq!(got, "x".repeat(128));
        let got = render("*", "{sha}{sha}{sha}{sha}", "main").unwrap();
        assert_eq!(got.len(), 128);
        assert!(got.starts_with(SHA));
    }

    #[test]
    fn render_dates() {
        let t = VersionTemplate::parse("{date}", &pat("main")).unwrap();
        let cases: &[((i32, u32, u32), &str)] = &[
            ((2024, 3, 7), "20240307"),
            ((1999, 12, 31), "19991231"),
            ((2000, 1, 1), "20000101"),
            ((10_000, 1, 1), "100000101"),
            ((5, 6, 7), "00050607"),
        ];
        for ((y, m, d), want) in cases {
            let caps = vec!["main".to_string()];
            let got = t.render(&TemplateVars {
                ref_name: "main",
                sha: SHA,
                date: NaiveDate::from_ymd_opt(*y, *m, *d).unwrap(),
                captures: &caps,
            });
            assert_eq!(got.as_deref(), Some(*want));
        }
    }

    #[test]
    fn render_with_missing_captures_or_short_sha_does_not_panic() {
        let p = pat("/^(a)(b)(c)$/");
        let t = VersionTemplate::parse("{1}{2}{3}-{sha7}", &p).unwrap();
        for caps in [vec![], vec!["abc".to_string()]] {
            let got = t.render(&TemplateVars {
                ref_name: "abc",
                sha: "",
                date: date(),
                captures: &caps,
            });
            assert_eq!(got, None);
        }
        let caps = vec!["abc".into(), "a".into(), "b".into(), "c".into()];
        let got = t.render(&TemplateVars {
            ref_name: "abc",
            sha: "é1",
            date: date(),
            captures: &caps,
        });
        assert_eq!(got.as_deref(), Some("abc-1"));
    }
}
