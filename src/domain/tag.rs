//! Docker image tags: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.

/// The longest tag Docker accepts.
pub const MAX_TAG_LEN: usize = 128;

/// How many characters of the commit id go into a non-overwriting tag.
pub const SHORT_SHA_LEN: usize = 7;

fn is_tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

fn is_tag_start(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `s` is a valid Docker tag.
pub fn is_valid_tag(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) if is_tag_start(first) => {}
        _ => return false,
    }
    s.len() <= MAX_TAG_LEN && chars.all(is_tag_char)
}

fn trim_trailing_separators(s: &mut String) {
    while s.ends_with(['-', '.']) {
        s.pop();
    }
}

/// Turns any string into a valid tag, or `None` when nothing usable remains.
///
/// Every character outside `[A-Za-z0-9_.-]` becomes `-`; a run of such
/// characters becomes a single `-`, which also merges with `-`s already next
/// to it (`a/-b` → `a-b`), while `-`s that were in the input on their own are
/// kept (`v1--rc` stays). Leading `.`/`-` and trailing `-`/`.` are stripped,
/// and the result is cut to [`MAX_TAG_LEN`] (and stripped again).
///
/// `feature/login` → `feature-login`, `Feature/ÄÖ` → `Feature`, `...` → `None`.
pub fn sanitize_tag(s: &str) -> Option<String> {
    // Map every character to (output char, was it replaced).
    let mapped: Vec<(char, bool)> = s
        .chars()
        .map(|c| {
            if is_tag_char(c) {
                (c, false)
            } else {
                ('-', true)
            }
        })
        .collect();

    // Collapse each run of '-' that holds at least one replacement.
    let mut out = String::with_capacity(mapped.len().min(4 * MAX_TAG_LEN));
    let mut i = 0;
    while i < mapped.len() {
        let (c, _) = mapped[i];
        if c != '-' {
            out.push(c);
            i += 1;
            continue;
        }
        let start = i;
        let mut any_replaced = false;
        while i < mapped.len() && mapped[i].0 == '-' {
            any_replaced |= mapped[i].1;
            i += 1;
        }
        if any_replaced {
            out.push('-');
        } else {
            out.extend(std::iter::repeat_n('-', i - start));
        }
    }

    // Everything is ASCII now, so byte offsets are character offsets.
    let start = out.find(|c| c != '.' && c != '-')?;
    let mut out = out.split_off(start);
    trim_trailing_separators(&mut out);
    out.truncate(MAX_TAG_LEN);
    trim_trailing_separators(&mut out);
    debug_assert!(out.is_empty() || is_valid_tag(&out));
    if out.is_empty() { None } else { Some(out) }
}

/// The tag an image gets: `version` itself when the rule overwrites, or
/// otherwise `{version}-{sha7}` (the first 7 characters of the commit id),
/// with `version` cut so the whole stays within [`MAX_TAG_LEN`] and no `-`/`.`
/// is left in front of the dash.
///
/// `version` is meant to be a valid tag already (a rendered template). The
/// function still always returns a valid tag: an invalid `version` is
/// sanitized first, characters of `commit_sha` that may not be in a tag are
/// dropped, and when nothing at all is left the tag is `build`.
pub fn image_tag(version: &str, commit_sha: &str, overwrite: bool) -> String {
    let mut version = if is_valid_tag(version) {
        version.to_string()
    } else {
        sanitize_tag(version).unwrap_or_default()
    };
    let short: String = commit_sha
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(SHORT_SHA_LEN)
        .collect();
    if overwrite || short.is_empty() {
        if version.is_empty() {
            return if short.is_empty() {
                "build".to_string()
            } else {
                short
            };
        }
        return version;
    }
    if version.is_empty() {
        return short;
    }
    version.truncate(MAX_TAG_LEN - 1 - short.len());
    trim_trailing_separators(&mut version);
    if version.is_empty() {
        // cannot happen for a valid tag (it starts with [A-Za-z0-9_])
        return short;
    }
    format!("{version}-{short}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b";

    #[test]
    fn is_valid_tag_table() {
        let max = "a".repeat(128);
        let over = "a".repeat(129);
        let cases: &[(&str, bool)] = &[
            ("latest", true),
            ("v1.2.3", true),
            ("main-1a2b3c4", true),
            ("_private", true),
            ("0", true),
            ("A", true),
            ("a-", true),
            ("a.", true),
            ("a__b--c..d", true),
            (&max, true),
            ("", false),
            (&over, false),
            ("-a", false),
            (".a", false),
            ("a/b", false),
            ("a b", false),
            ("a:b", false),
            ("a+b", false),
            ("ä", false),
            ("a\0", false),
            ("a\n", false),
            ("ａ", false),
            ("v1😀", false),
        ];
        for (s, want) in cases {
            assert_eq!(is_valid_tag(s), *want, "{s:?}");
        }
    }

    #[test]
    fn sanitize_tag_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("main", Some("main")),
            ("feature/login", Some("feature-login")),
            ("release/1.2", Some("release-1.2")),
            ("Feature/ÄÖ", Some("Feature")),
            ("--x", Some("x")),
            ("...", None),
            ("", None),
            ("-", None),
            ("/", None),
            ("///", None),
            ("._-", Some("_")),
            ("_", Some("_")),
            ("a//b", Some("a-b")),
            ("a/-b", Some("a-b")),
            ("a-/b", Some("a-b")),
            ("a-/-b", Some("a-b")),
            ("v1--rc", Some("v1--rc")),
            ("a b c", Some("a-b-c")),
            ("a\0b", Some("a-b")),
            ("a\n\tb", Some("a-b")),
            ("café", Some("caf")),
            ("cafe\u{301}x", Some("cafe-x")),
            ("😀", None),
            ("v1😀2", Some("v1-2")),
            ("\u{5e2}\u{5d1}\u{5e8}\u{5d9}\u{5ea}-1", Some("1")),
            ("ｍａｉｎ", None),
            ("../x", Some("x")),
            ("./.hidden", Some("hidden")),
            ("x/..", Some("x")),
            ("a.", Some("a")),
            ("a-", Some("a")),
            ("a.-.-", Some("a")),
            ("refs/heads/main", Some("refs-heads-main")),
            ("v1.0:beta", Some("v1.0-beta")),
            ("UPPER/Case", Some("UPPER-Case")),
        ];
        for (s, want) in cases {
            assert_eq!(sanitize_tag(s).as_deref(), *want, "{s:?}");
        }
    }

    #[test]
    fn sanitize_tag_truncates_to_128() {
        let huge = "a".repeat(10_000);
        assert_eq!(sanitize_tag(&huge), Some("a".repeat(128)));

        // a separator landing on the cut is stripped again
        let s = format!("{}-b", "a".repeat(127));
        assert_eq!(sanitize_tag(&s), Some("a".repeat(127)));
        let s = format!("{}.-b", "a".repeat(126));
        assert_eq!(sanitize_tag(&s), Some("a".repeat(126)));

        // leading junk does not count toward the limit
        let s = format!("{}{}", "/".repeat(5_000), "b".repeat(200));
        assert_eq!(sanitize_tag(&s), Some("b".repeat(128)));

        let s = "é".repeat(10_000);
        assert_eq!(sanitize_tag(&s), None);
        let s = "a/".repeat(10_000);
        let t = sanitize_tag(&s).unwrap();
        assert_eq!(t.len(), 127);
        assert!(t.starts_with("a-a-") && t.ends_with('a'));
    }

    #[test]
    fn image_tag_table() {
        let cases: &[(&str, &str, bool, &str)] = &[
            ("main", SHA, false, "main-1a2b3c4"),
            ("main", SHA, true, "main"),
            ("1.2", SHA, false, "1.2-1a2b3c4"),
            ("1.2", SHA, true, "1.2"),
            ("latest", SHA, true, "latest"),
            ("main", "abc", false, "main-abc"),
            ("main", "", false, "main"),
            ("main", "", true, "main"),
            // defensive paths: not valid inputs, still a valid tag out
            ("feature/login", SHA, false, "feature-login-1a2b3c4"),
            ("", SHA, false, "1a2b3c4"),
            ("", SHA, true, "1a2b3c4"),
            ("...", "", false, "build"),
            ("main", "1a/2b\u{0}3c4d5", false, "main-1a2b3c4"),
        ];
        for (version, sha, overwrite, want) in cases {
            let got = image_tag(version, sha, *overwrite);
            assert_eq!(got, *want, "{version:?} {sha:?} {overwrite}");
            assert!(is_valid_tag(&got));
        }
    }

    #[test]
    fn image_tag_respects_128_with_the_sha_suffix() {
        // 120 + '-' + 7 = 128 exactly: no cut
        let v120 = "v".repeat(120);
        let t = image_tag(&v120, SHA, false);
        assert_eq!(t, format!("{v120}-1a2b3c4"));
        assert_eq!(t.len(), 128);

        // longer versions are cut to 120
        let v128 = "v".repeat(128);
        let t = image_tag(&v128, SHA, false);
        assert_eq!(t, format!("{}-1a2b3c4", "v".repeat(120)));
        assert_eq!(t.len(), MAX_TAG_LEN);

        // overwrite keeps the full 128
        assert_eq!(image_tag(&v128, SHA, true), v128);

        // no separator left before the dash after cutting
        let v = format!("{}.-x", "a".repeat(118));
        let t = image_tag(&v, SHA, false);
        assert_eq!(t, format!("{}-1a2b3c4", "a".repeat(118)));
        let v = format!("{}_-{}", "a".repeat(118), "b".repeat(8));
        let t = image_tag(&v, SHA, false);
        assert_eq!(t, format!("{}_-1a2b3c4", "a".repeat(118)));
    }

    /// xorshift64*: a small deterministic generator for property-style loops.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn string(&mut self, alphabet: &[char], max_len: usize) -> String {
            let len = self.below(max_len + 1);
            (0..len)
                .map(|_| alphabet[self.below(alphabet.len())])
                .collect()
        }
    }

    const ALPHABET: &[char] = &[
        'a', 'b', 'Z', '0', '9', '_', '.', '-', '-', '.', '/', ' ', ':', '\0', '\n', '\u{7f}', 'Ä',
        'é', '\u{301}', '😀', '\u{5d0}', '\u{200f}', 'Ａ', '\u{feff}', '{', '}', '*',
    ];

    #[test]
    fn property_sanitize_output_is_always_valid() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..20_000 {
            let max_len = if round % 100 == 0 { 400 } else { 24 };
            let s = rng.string(ALPHABET, max_len);
            match sanitize_tag(&s) {
                Some(t) => {
                    assert!(is_valid_tag(&t), "{s:?} -> {t:?}");
                    assert!(!t.ends_with(['-', '.']), "{s:?} -> {t:?}");
                    // sanitizing is idempotent
                    assert_eq!(sanitize_tag(&t).as_deref(), Some(t.as_str()), "{s:?}");
                }
                None => assert!(
                    !s.chars().any(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{s:?} had usable characters"
                ),
            }
        }
    }

    #[test]
    fn property_image_tag_is_always_valid_and_short() {
        let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
        let hex: Vec<char> = "0123456789abcdef".chars().collect();
        for round in 0..20_000 {
            let max_len = if round % 50 == 0 { 300 } else { 40 };
            let raw = rng.string(ALPHABET, max_len);
            let sha = if round % 10 == 0 {
                rng.string(ALPHABET, 12)
            } else {
                rng.string(&hex, 40)
            };
            let overwrite = rng.below(2) == 0;
            // as the plan uses it: a version that went through sanitize_tag
            if let Some(version) = sanitize_tag(&raw) {
                let t = image_tag(&version, &sha, overwrite);
                assert!(is_valid_tag(&t), "{version:?} {sha:?} -> {t:?}");
                assert!(t.len() <= MAX_TAG_LEN);
                assert_eq!(t.chars().next(), version.chars().next());
                if overwrite {
                    assert_eq!(t, version);
                }
            }
            // and raw garbage
            let t = image_tag(&raw, &sha, overwrite);
            assert!(is_valid_tag(&t), "{raw:?} {sha:?} -> {t:?}");
            assert!(t.len() <= MAX_TAG_LEN);
        }
    }
}
