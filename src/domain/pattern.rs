//! The rule `name` language: which branch or tag names a rule applies to.
//!
//! - `/…/` (starts and ends with `/`): a regular expression (the `regex`
//!   crate's syntax, linear-time). Anchoring is up to the user: `/^v(\d+)$/`
//!   matches `v12` only, `/v(\d+)/` also matches `dev12x`. Its capture groups
//!   feed `{1}`…`{9}` in the version template.
//! - containing `*` or `?`: a wildcard over the whole name, `*` any run of
//!   characters (including `/`), `?` exactly one character.
//! - anything else: the exact branch or tag name.
//!
//! Matching is case-sensitive, like git ref names. Beyond empty, over-long,
//! control characters and invalid regular expressions nothing is refused:
//! a name that git would never produce simply never matches.

use std::fmt;

use regex::{Regex, RegexBuilder};
use wildmatch::WildMatch;

use super::{FieldError, describe_char};

/// The longest rule name, in bytes.
pub const MAX_PATTERN_LEN: usize = 255;

/// Compiled-size limit for rule regexes: hostile patterns are refused at
/// creation instead of being slow or huge.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

const FIELD: &str = "name";

/// A wildcard rule name (`v*`, `release-*`, `v?.*`).
#[derive(Debug, Clone)]
pub struct WildcardPattern {
    source: String,
    matcher: WildMatch,
}

impl WildcardPattern {
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// A regular-expression rule name, kept with its source (`/…/` included).
#[derive(Debug, Clone)]
pub struct RegexPattern {
    source: String,
    regex: Regex,
}

impl RegexPattern {
    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn regex(&self) -> &Regex {
        &self.regex
    }
}

/// A parsed rule name.
#[derive(Debug, Clone)]
pub enum RefPattern {
    Exact(String),
    Wildcard(WildcardPattern),
    Regex(RegexPattern),
}

impl RefPattern {
    /// Parses a rule name (field `name`).
    pub fn parse(src: &str) -> Result<RefPattern, FieldError> {
        if src.is_empty() {
            return Err(FieldError::new(
                FIELD,
                "required",
                "must not be empty (a branch or tag name, a wildcard like 'v*', or a /regex/)",
            ));
        }
        if src.len() > MAX_PATTERN_LEN {
            return Err(FieldError::new(
                FIELD,
                "too_long",
                format!(
                    "must be at most {MAX_PATTERN_LEN} bytes (got {})",
                    src.len()
                ),
            ));
        }
        if let Some(c) = src.chars().find(|c| c.is_control()) {
            return Err(FieldError::new(
                FIELD,
                "invalid_character",
                format!(
                    "must not contain the control character {}",
                    describe_char(c)
                ),
            ));
        }
        if src.len() >= 2 && src.starts_with('/') && src.ends_with('/') {
            let body = &src[1..src.len() - 1];
            if body.is_empty() {
                return Err(FieldError::new(
                    FIELD,
                    "invalid_regex",
                    "the regular expression between the slashes is empty \
                     (use '*' to match every name)",
                ));
            }
            let regex = RegexBuilder::new(body)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    let message = match e {
                        regex::Error::CompiledTooBig(limit) => format!(
                            "the regular expression is too large (its compiled form exceeds {limit} bytes)"
                        ),
                        other => format!("invalid regular expression: {other}"),
                    };
                    FieldError::new(FIELD, "invalid_regex", message)
                })?;
            return Ok(RefPattern::Regex(RegexPattern {
                source: src.to_string(),
                regex,
            }));
        }
        if src.contains(['*', '?']) {
            return Ok(RefPattern::Wildcard(WildcardPattern {
                source: src.to_string(),
                matcher: WildMatch::new(src),
            }));
        }
        Ok(RefPattern::Exact(src.to_string()))
    }

    /// `None` when `name` does not match; otherwise the captures, where
    /// `captures[0]` is the whole name and `captures[1..]` are the regex
    /// groups (an unmatched optional group is `""`). Exact and wildcard
    /// patterns give `vec![name]`.
    pub fn matches(&self, name: &str) -> Option<Vec<String>> {
        match self {
            RefPattern::Exact(exact) => (exact == name).then(|| vec![name.to_string()]),
            RefPattern::Wildcard(w) => w.matcher.matches(name).then(|| vec![name.to_string()]),
            RefPattern::Regex(r) => {
                let caps = r.regex.captures(name)?;
                let mut out = Vec::with_capacity(caps.len());
                out.push(name.to_string());
                out.extend(
                    caps.iter()
                        .skip(1)
                        .map(|m| m.map_or_else(String::new, |m| m.as_str().to_string())),
                );
                Some(out)
            }
        }
    }

    /// The number of regex capture groups (0 for exact and wildcard names).
    pub fn capture_count(&self) -> usize {
        match self {
            RefPattern::Regex(r) => r.regex.captures_len().saturating_sub(1),
            RefPattern::Exact(_) | RefPattern::Wildcard(_) => 0,
        }
    }

    /// The rule name as written.
    pub fn as_str(&self) -> &str {
        match self {
            RefPattern::Exact(s) => s,
            RefPattern::Wildcard(w) => w.as_str(),
            RefPattern::Regex(r) => r.as_str(),
        }
    }
}

impl fmt::Display for RefPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> RefPattern {
        RefPattern::parse(src).unwrap_or_else(|e| panic!("{src:?}: {e}"))
    }

    fn err(src: &str) -> FieldError {
        match RefPattern::parse(src) {
            Ok(p) => panic!("{src:?} parsed as {p:?}"),
            Err(e) => {
                assert_eq!(e.field, "name");
                e
            }
        }
    }

    #[test]
    fn parse_kinds() {
        let cases: &[(&str, &str)] = &[
            ("main", "exact"),
            ("feature/login", "exact"),
            ("release-1.2", "exact"),
            ("/", "exact"),
            ("a/", "exact"),
            ("/a", "exact"),
            ("../x", "exact"),
            ("a b", "exact"),
            ("a[b]", "exact"),
            ("a~^:\\", "exact"),
            ("Ünïcödé", "exact"),
            ("e\u{301}", "exact"),
            ("\u{5d0}\u{5d1}", "exact"),
            ("😀", "exact"),
            ("ｍａｉｎ", "exact"),
            ("v*", "wildcard"),
            ("v*.*", "wildcard"),
            ("release-*", "wildcard"),
            ("v?", "wildcard"),
            ("*", "wildcard"),
            ("**", "wildcard"),
            ("/v*", "wildcard"),
            ("/a/", "regex"),
            ("/^v(\\d+)$/", "regex"),
            ("/.*/", "regex"),
            ("/v*/", "regex"),
            ("/^release\\/(.*)$/", "regex"),
            ("///", "regex"),
        ];
        for (src, want) in cases {
            let got = match p(src) {
                RefPattern::Exact(s) => {
                    assert_eq!(s, *src);
                    "exact"
                }
                RefPattern::Wildcard(_) => "wildcard",
                RefPattern::Regex(_) => "regex",
            };
            assert_eq!(got, *want, "{src:?}");
            assert_eq!(p(src).as_str(), *src);
            assert_eq!(p(src).to_string(), *src);
        }
    }

    #[test]
    fn parse_errors() {
        let long = "a".repeat(256);
        let huge = "a".repeat(10_000);
        let long_unicode = "é".repeat(128); // 256 bytes
        let cases: &[(&str, &str)] = &[
            ("", "required"),
            (&long, "too_long"),
            (&huge, "too_long"),
            (&long_unicode, "too_long"),
            ("ma\0in", "invalid_character"),
            ("main\n", "invalid_character"),
            ("\tmain", "invalid_character"),
            ("a\u{7f}", "invalid_character"),
            ("a\u{85}", "invalid_character"),
            ("v*\r", "invalid_character"),
            ("//", "invalid_regex"),
            ("/(/", "invalid_regex"),
            ("/[a-/", "invalid_regex"),
            ("/a{2,1}/", "invalid_regex"),
            ("/(?P<x>a)(?P<x>b)/", "invalid_regex"),
            ("/\\/", "invalid_regex"),
            ("/(?=a)/", "invalid_regex"),
            ("/(a)\\1/", "invalid_regex"),
            // too large once compiled
            ("/\\w{1000}\\w{1000}\\w{1000}/", "invalid_regex"),
            ("/(((a{100}){100}){100})/", "invalid_regex"),
        ];
        for (src, want) in cases {
            assert_eq!(err(src).code, *want, "{src:?}");
        }
        assert!(p(&"a".repeat(255)).as_str().len() == 255);
    }

    #[test]
    fn parse_error_messages() {
        assert_eq!(
            err("").message,
            "must not be empty (a branch or tag name, a wildcard like 'v*', or a /regex/)"
        );
        assert_eq!(
            err(&"a".repeat(300)).message,
            "must be at most 255 bytes (got 300)"
        );
        assert_eq!(
            err("a\0").message,
            "must not contain the control character '\\0' (U+0000)"
        );
        let e = err("/(/");
        assert!(
            e.message.starts_with("invalid regular expression: "),
            "{}",
            e.message
        );
        assert!(e.message.contains("unclosed group"), "{}", e.message);
        let e = err("/\\w{1000}\\w{1000}\\w{1000}/");
        assert!(e.message.contains("too large"), "{}", e.message);
    }

    #[test]
    fn exact_matches() {
        let pat = p("main");
        assert_eq!(pat.matches("main"), Some(vec!["main".to_string()]));
        for other in ["Main", "main2", "mai", "", " main", "refs/heads/main"] {
            assert_eq!(pat.matches(other), None, "{other:?}");
        }
        let pat = p("feature/login");
        assert_eq!(
            pat.matches("feature/login"),
            Some(vec!["feature/login".to_string()])
        );
        assert_eq!(pat.capture_count(), 0);
    }

    #[test]
    fn wildcard_matches() {
        let cases: &[(&str, &str, bool)] = &[
            ("v*", "v1", true),
            ("v*", "v", true),
            ("v*", "v1.2.3", true),
            ("v*", "version/2", true),
            ("v*", "V1", false),
            ("v*", "av1", false),
            ("v*.*", "v1.2", true),
            ("v*.*", "v1.2.3", true),
            ("v*.*", "v.", true),
            ("v*.*", "v1", false),
            ("v*.*", "1.2", false),
            ("release-*", "release-1.0", true),
            ("release-*", "release-", true),
            ("release-*", "release", false),
            ("release-*", "pre-release-1", false),
            ("release-*", "release-a/b/c", true),
            ("*", "", true),
            ("*", "anything/at/all", true),
            ("v?", "v1", true),
            ("v?", "v12", false),
            ("v?", "v", false),
            ("v?", "vé", true),
            ("v?", "v😀", true),
            ("feature/*", "feature/login", true),
            ("feature/*", "feature", false),
            ("*-rc?", "1.0-rc1", true),
            ("*-rc?", "1.0-rc10", false),
            ("a*a*a*a*a*a*a*b", &"a".repeat(10_000), false),
        ];
        for (pat, name, want) in cases {
            let got = p(pat).matches(name);
            assert_eq!(got.is_some(), *want, "{pat:?} ~ {name:?}");
            if let Some(caps) = got {
                assert_eq!(caps, vec![name.to_string()]);
            }
            assert_eq!(p(pat).capture_count(), 0);
        }
    }

    #[test]
    fn regex_matches_and_captures() {
        let semver = p("/^v(\\d+)\\.(\\d+)\\.(\\d+)$/");
        assert_eq!(semver.capture_count(), 3);
        assert_eq!(
            semver.matches("v1.22.333"),
            Some(vec![
                "v1.22.333".to_string(),
                "1".to_string(),
                "22".to_string(),
                "333".to_string()
            ])
        );
        for no in ["v1.2", "1.2.3", "v1.2.3-rc1", "xv1.2.3", "v1.2.3\n", ""] {
            assert_eq!(semver.matches(no), None, "{no:?}");
        }

        // anchoring is up to the user; captures[0] is still the whole name
        let loose = p("/v(\\d+)/");
        assert_eq!(
            loose.matches("dev12x"),
            Some(vec!["dev12x".to_string(), "12".to_string()])
        );

        // unmatched optional groups are ""
        let opt = p("/^v(\\d+)(?:-(rc\\d+))?$/");
        assert_eq!(opt.capture_count(), 2);
        assert_eq!(
            opt.matches("v3"),
            Some(vec!["v3".to_string(), "3".to_string(), String::new()])
        );
        assert_eq!(
            opt.matches("v3-rc1"),
            Some(vec!["v3-rc1".into(), "3".into(), "rc1".into()])
        );

        // an empty match counts as a match
        let empty = p("/^(x?)$/");
        assert_eq!(empty.matches(""), Some(vec![String::new(), String::new()]));

        // named groups count as groups
        let named = p("/^(?P<major>\\d+)\\.(?<minor>\\d+)$/");
        assert_eq!(named.capture_count(), 2);
        assert_eq!(
            named.matches("4.5"),
            Some(vec!["4.5".into(), "4".into(), "5".into()])
        );

        // slashes inside
        let rel = p("/^release\\/(.*)$/");
        assert_eq!(
            rel.matches("release/1.2"),
            Some(vec!["release/1.2".into(), "1.2".into()])
        );

        // Unicode
        let uni = p("/^(\\p{L}+)-(\\d)$/");
        assert_eq!(
            uni.matches("überprüfung-1"),
            Some(vec![
                "überprüfung-1".into(),
                "überprüfung".into(),
                "1".into()
            ])
        );

        // case-insensitive flag works
        let ci = p("/(?i)^MAIN$/");
        assert!(ci.matches("main").is_some());
    }

    #[test]
    fn catastrophic_looking_regexes_are_fast() {
        // the regex crate is linear-time; these finish instantly on long input
        let input = format!("{}!", "a".repeat(10_000));
        for src in [
            "/^(a+)+$/",
            "/^(a|a)*$/",
            "/^(a|aa)+$/",
            "/^(.*a){20}$/",
            "/(x+x+)+y/",
        ] {
            let pat = p(src);
            assert_eq!(pat.matches(&input), None, "{src}");
        }
        let pat = p("/^(a+)+$/");
        let all_a = "a".repeat(10_000);
        assert_eq!(
            pat.matches(&all_a),
            Some(vec![all_a.clone(), all_a.clone()])
        );
    }

    #[test]
    fn hostile_names_never_panic() {
        let inputs = [
            String::new(),
            "a".repeat(10_000),
            "\u{301}".repeat(50),
            "😀".repeat(50),
            "\u{202e}evil".into(),
            "../../etc/passwd".into(),
            "\0".into(),
        ];
        for src in ["main", "v*", "?", "/^(.*)$/", "/(a)?(b)?/"] {
            let pat = p(src);
            for name in &inputs {
                if let Some(caps) = pat.matches(name) {
                    assert_eq!(caps[0], *name);
                    assert_eq!(caps.len(), pat.capture_count() + 1);
                }
            }
        }
    }
}
