//! `.dockerignore` rules with Docker's semantics.
//!
//! The file is read as the docker CLI reads it (moby/patternmatcher `ignorefile.ReadAll`), and
//! each path is judged as `PatternMatcher::MatchesOrParentMatches` judges it:
//!
//! - one pattern per line; a line that *starts* with `#` is a comment (the check comes before
//!   trimming, as in Docker, so `  # x` is a pattern); blank lines are ignored; surrounding
//!   whitespace is trimmed; a UTF-8 byte order mark on the first line is dropped;
//! - a leading `!` makes the pattern an exception; each pattern is cleaned like Go's
//!   `filepath.Clean` (`a//b/./c` → `a/b/c`, `./x` → `x`) and a leading `/` is dropped;
//! - `*` matches a run of non-`/` characters, `?` one non-`/` character, `[...]` a character
//!   class (`[^...]` negated, `a-z` ranges, `\` escapes), `\x` the character `x`, and `**` any
//!   number of directories (`**/x`, `x/**`, `a/**/b`);
//! - a path is excluded when the last pattern that matches it, or matches one of its parent
//!   directories, is not an exception: so `docs` excludes `docs/a/b`, and `docs` followed by
//!   `!docs/README.md` keeps that one file.
//!
//! Docker refuses to build with a malformed pattern (`[`, `a\`, `!`); here such a line is left
//! out and reported by [`DockerIgnore::invalid_patterns`], so the caller can say so in the
//! build log.

use regex::Regex;

/// The rules of one `.dockerignore` file.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
    has_exceptions: bool,
    invalid: Vec<String>,
}

#[derive(Debug, Clone)]
struct Pattern {
    exception: bool,
    matcher: Matcher,
}

/// How one pattern matches, chosen as moby/patternmatcher chooses it: patterns without
/// wildcards compare as strings, `**` at the start or end of an otherwise plain pattern as a
/// suffix or prefix, everything else through a regular expression.
#[derive(Debug, Clone)]
enum Matcher {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(Regex),
}

impl DockerIgnore {
    /// Reads the contents of a `.dockerignore` file. Never fails: malformed lines are skipped
    /// and listed in [`DockerIgnore::invalid_patterns`].
    pub fn parse(contents: &str) -> DockerIgnore {
        let mut ignore = DockerIgnore::default();
        for (index, line) in contents.lines().enumerate() {
            let line = if index == 0 {
                line.strip_prefix('\u{feff}').unwrap_or(line)
            } else {
                line
            };
            let Some(pattern) = read_line(line) else {
                continue;
            };
            match Pattern::new(&pattern) {
                Some(compiled) => {
                    ignore.has_exceptions |= compiled.exception;
                    ignore.patterns.push(compiled);
                }
                None => ignore.invalid.push(line.trim().to_string()),
            }
        }
        ignore
    }

    /// Whether `rel_path` (slash-separated, relative to the build context) is left out of the
    /// context. The context root itself (`""`, `"."`) is never excluded.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let file = clean(rel_path.trim_start_matches('/'));
        if file == "." || self.patterns.is_empty() {
            return false;
        }
        // The parent directories of `file`, shortest first: "a", "a/b" for "a/b/c".
        let parents: Vec<&str> = file.match_indices('/').map(|(at, _)| &file[..at]).collect();

        let mut excluded = false;
        for pattern in &self.patterns {
            // An exclusion can't change a path already excluded, nor an exception one that
            // is not (the same short cut as Docker's).
            if pattern.exception != excluded {
                continue;
            }
            let matched = pattern.matches(&file) || parents.iter().any(|dir| pattern.matches(dir));
            if matched {
                excluded = !pattern.exception;
            }
        }
        excluded
    }

    /// Whether any pattern is an exception (`!…`). Without one, an excluded directory can be
    /// skipped whole; with one, something below it may be kept.
    pub fn has_exceptions(&self) -> bool {
        self.has_exceptions
    }

    /// Whether there is no (valid) pattern at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Lines that Docker would reject as malformed patterns; they were left out.
    pub fn invalid_patterns(&self) -> &[String] {
        &self.invalid
    }
}

/// One line of the file as the docker CLI reads it: `None` for comments and blank lines,
/// otherwise the cleaned pattern, still with its `!`.
fn read_line(line: &str) -> Option<String> {
    if line.starts_with('#') {
        return None;
    }
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let (exception, mut pattern) = match line.strip_prefix('!') {
        Some(rest) => (true, rest.trim().to_string()),
        None => (false, line.to_string()),
    };
    if !pattern.is_empty() {
        pattern = clean(&pattern);
        if pattern.len() > 1 && pattern.starts_with('/') {
            pattern.remove(0);
        }
    }
    Some(if exception {
        format!("!{pattern}")
    } else {
        pattern
    })
}

impl Pattern {
    /// Compiles one pattern (as `PatternMatcher.New` does); `None` if it is malformed.
    fn new(pattern: &str) -> Option<Pattern> {
        let pattern = clean(pattern.trim());
        let (exception, pattern) = match pattern.strip_prefix('!') {
            Some("") => return None,
            Some(rest) => (true, rest.to_string()),
            None => (false, pattern),
        };
        Some(Pattern {
            exception,
            matcher: compile(&pattern)?,
        })
    }

    fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            Matcher::Exact(exact) => path == exact,
            Matcher::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Matcher::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    // "**/foo" matches "foo" itself
                    || suffix.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Matcher::Regex(regex) => regex.is_match(path),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

/// Turns a cleaned pattern into a matcher, following moby/patternmatcher's `compile`: the same
/// choice of exact/prefix/suffix/regex and the same regular expression for `*`, `?` and `**`.
/// Literal characters are escaped for the regex engine, and a character class is parsed with
/// Go's `filepath.Match` grammar (its syntax errors make the pattern invalid, as in Docker).
fn compile(pattern: &str) -> Option<Matcher> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut regex = String::from("^");
    let mut kind = Kind::Exact;
    let mut pos = 0;
    let mut step = 0;
    while pos < chars.len() {
        let ch = chars[pos];
        pos += 1;
        match ch {
            '*' if chars.get(pos) == Some(&'*') => {
                pos += 1;
                // "**/" is treated as "**"
                if chars.get(pos) == Some(&'/') {
                    pos += 1;
                }
                if pos == chars.len() {
                    // a trailing "**" matches everything below, as in .gitignore
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        regex.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    // any number of directories, even none
                    regex.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if step == 0 {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                regex.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                regex.push_str("[^/]");
                kind = Kind::Regex;
            }
            '\\' => {
                // escapes the next character; a trailing backslash is malformed
                let next = *chars.get(pos)?;
                pos += 1;
                push_literal(&mut regex, next);
                kind = Kind::Regex;
            }
            '[' => {
                pos = push_class(&mut regex, &chars, pos)?;
                kind = Kind::Regex;
            }
            _ => push_literal(&mut regex, ch),
        }
        step += 1;
    }
    Some(match kind {
        Kind::Exact => Matcher::Exact(pattern.to_string()),
        Kind::Prefix => Matcher::Prefix(pattern[..pattern.len() - 2].to_string()),
        Kind::Suffix => Matcher::Suffix(pattern[2..].to_string()),
        Kind::Regex => {
            regex.push('$');
            Matcher::Regex(Regex::new(&regex).ok()?)
        }
    })
}

fn push_literal(regex: &mut String, ch: char) {
    let mut buf = [0u8; 4];
    regex.push_str(&regex::escape(ch.encode_utf8(&mut buf)));
}

/// Parses a character class whose `[` was just read (`chars[pos]` is the character after it)
/// with `filepath.Match`'s grammar, appends it to `regex` and returns the position after its
/// `]`. `None` when malformed: unclosed, empty, an unescaped `-` or `]` where a character is
/// due, a reversed range.
fn push_class(regex: &mut String, chars: &[char], mut pos: usize) -> Option<usize> {
    let mut class = String::from("[");
    if chars.get(pos) == Some(&'^') {
        class.push('^');
        pos += 1;
    }
    let mut ranges = 0;
    loop {
        match chars.get(pos) {
            None => return None,
            Some(']') if ranges > 0 => {
                pos += 1;
                break;
            }
            Some(_) => {}
        }
        let (low, next) = class_char(chars, pos)?;
        pos = next;
        let mut high = low;
        if chars.get(pos) == Some(&'-') {
            let (hi, next) = class_char(chars, pos + 1)?;
            high = hi;
            pos = next;
        }
        if low > high {
            return None;
        }
        class.push_str(&format!("\\x{{{:x}}}", low as u32));
        if high != low {
            class.push_str(&format!("-\\x{{{:x}}}", high as u32));
        }
        ranges += 1;
    }
    class.push(']');
    regex.push_str(&class);
    Some(pos)
}

/// One character of a class (Go's `getEsc`): `\x` is `x`; `-` and `]` must be escaped; a
/// class can't end right after it.
fn class_char(chars: &[char], mut pos: usize) -> Option<(char, usize)> {
    let mut ch = *chars.get(pos)?;
    if ch == '-' || ch == ']' {
        return None;
    }
    if ch == '\\' {
        pos += 1;
        ch = *chars.get(pos)?;
    }
    pos += 1;
    if pos >= chars.len() {
        return None;
    }
    Some((ch, pos))
}

/// Go's `path.Clean`: the shortest path equivalent to `path` by lexical processing. Repeated
/// slashes become one, `.` elements go, `x/..` goes, `..` at the root goes; "" becomes ".".
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(contents: &str, cases: &[(&str, bool)]) {
        let ignore = DockerIgnore::parse(contents);
        for &(path, excluded) in cases {
            assert_eq!(
                ignore.is_excluded(path),
                excluded,
                "patterns {contents:?}, path {path:?}: expected excluded={excluded}"
            );
        }
    }

    #[test]
    fn docker_documentation_examples() {
        // The examples of "Dockerfile reference → .dockerignore file".
        let table: &[(&str, &str, bool)] = &[
            // "# comment" is ignored
            ("# comment", "# comment", false),
            ("# comment", "comment", false),
            // */temp*: one level below the root
            ("*/temp*", "somedir/temporary.txt", true),
            ("*/temp*", "somedir/temp", true),
            ("*/temp*", "somedir/temp/inside.txt", true),
            ("*/temp*", "temp", false),
            ("*/temp*", "temporary.txt", false),
            ("*/temp*", "a/b/temporary.txt", false),
            ("*/temp*", "somedir/other.txt", false),
            // */*/temp*: two levels below the root
            ("*/*/temp*", "somedir/subdir/temporary.txt", true),
            ("*/*/temp*", "somedir/temporary.txt", false),
            ("*/*/temp*", "a/b/c/temporary.txt", false),
            // temp?: one character after "temp", in the root
            ("temp?", "tempa", true),
            ("temp?", "tempb", true),
            ("temp?", "temp", false),
            ("temp?", "tempab", false),
            ("temp?", "dir/tempa", false),
            ("temp?", "tempa/inside", true),
            // **/*.go: everywhere, the root included
            ("**/*.go", "main.go", true),
            ("**/*.go", "cmd/kiln/main.go", true),
            ("**/*.go", "main.rs", false),
            ("**/*.go", "go", false),
        ];
        for &(pattern, path, excluded) in table {
            check(pattern, &[(path, excluded)]);
        }
    }

    #[test]
    fn exceptions_from_the_documentation() {
        // All markdown files but README.md.
        check(
            "*.md\n!README.md",
            &[
                ("CHANGELOG.md", true),
                ("README.md", false),
                ("docs/guide.md", false), // *.md only matches in the root
                ("main.rs", false),
            ],
        );
        // README-secret.md is excluded again by the later line.
        check(
            "*.md\n!README*.md\nREADME-secret.md",
            &[
                ("CHANGELOG.md", true),
                ("README.md", false),
                ("README-public.md", false),
                ("README-secret.md", true),
            ],
        );
        // The same lines in another order: the exception comes last and wins.
        check(
            "*.md\nREADME-secret.md\n!README*.md",
            &[("README-secret.md", false), ("CHANGELOG.md", true)],
        );
    }

    #[test]
    fn directory_patterns_exclude_everything_below() {
        check(
            "node_modules\n",
            &[
                ("node_modules", true),
                ("node_modules/left-pad/index.js", true),
                ("node_modules_not/x", false),
                ("src/node_modules/x", false),
            ],
        );
        check(
            "docs/",
            &[("docs", true), ("docs/a/b.md", true), ("doc", false)],
        );
        check(
            "build/**",
            &[
                ("build", false), // "dir/**" is a prefix "dir/": the directory entry itself stays
                ("build/out", true),
                ("build/deep/er/file", true),
            ],
        );
        check(
            "**/target",
            &[
                ("target", true),
                ("target/debug/kiln", true),
                ("crates/a/target/x", true),
                ("crates/a/notarget", false),
            ],
        );
        check(
            "a/**/b",
            &[
                ("a/b", true),
                ("a/x/b", true),
                ("a/x/y/b/c", true),
                ("a/x/c", false),
            ],
        );
    }

    #[test]
    fn exceptions_reinclude_files_under_excluded_directories() {
        check(
            "docs\n!docs/README.md",
            &[
                ("docs/README.md", false),
                ("docs/other.md", true),
                ("docs/sub/README.md", true),
            ],
        );
        check(
            "docs/*\n!docs/README.md",
            &[("docs/README.md", false), ("docs/x", true)],
        );
        // An exception for a directory keeps everything below it.
        check(
            "vendor\n!vendor/keep",
            &[
                ("vendor/keep", false),
                ("vendor/keep/a/b.c", false),
                ("vendor/drop/a", true),
            ],
        );
        // Exclude everything, then keep some.
        check(
            "**\n!src\n!Cargo.toml",
            &[
                ("README.md", true),
                ("target/debug/x", true),
                ("src/main.rs", false),
                ("Cargo.toml", false),
            ],
        );
        check(
            "*\n!**/*.rs",
            &[
                ("src/main.rs", false),
                ("main.rs", false),
                ("src/data.bin", true),
            ],
        );
    }

    #[test]
    fn the_last_matching_pattern_wins() {
        check("!a.txt\n*.txt", &[("a.txt", true)]);
        check("*.txt\n!a.txt", &[("a.txt", false), ("b.txt", true)]);
        check("*.txt\n!a.txt\na.txt", &[("a.txt", true)]);
    }

    #[test]
    fn leading_slash_dot_and_cleaning() {
        check(
            "/secret\n./local.env\na//b/./c\n/dir/../top.txt",
            &[
                ("secret", true),
                ("secret/key", true),
                ("local.env", true),
                ("a/b/c", true),
                ("a/b/c/d", true),
                ("top.txt", true),
                ("dir/top.txt", false),
                ("sub/secret", false),
            ],
        );
        check("! /inverted/path\ninverted", &[("inverted/path", true)]);
        check("inverted\n! /inverted/path", &[("inverted/path", false)]);
        // Paths given to is_excluded are cleaned too.
        check("a/b", &[("./a/b", true), ("a//b/", true), ("/a/b", true)]);
    }

    #[test]
    fn comments_blanks_whitespace_and_line_endings() {
        check(
            "\u{feff}first\n\n   \n# comment\n  spaced  \r\nwindows\r\n\ttabbed\t",
            &[
                ("first", true),
                ("spaced", true),
                ("windows", true),
                ("tabbed", true),
                ("comment", false),
                ("# comment", false),
            ],
        );
        // The comment check comes before trimming (as in Docker): this is a pattern.
        check("  #hash", &[("#hash", true)]);
    }

    #[test]
    fn wildcards_classes_and_escapes() {
        let table: &[(&str, &str, bool)] = &[
            ("*", "anything", true),
            ("*", "dir/file", true), // via its parent "dir"
            ("*.log", "app.log", true),
            ("*.log", "logs/app.log", false),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("a[b-d]e", "ace", true),
            ("a[b-d]e", "aae", false),
            ("a[^b-d]e", "aze", true),
            ("a[^b-d]e", "ace", false),
            ("ab[c]", "abc", true),
            ("[\\]a]", "]", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            (".*", ".env", true),
            (".*", "env", false),
            ("abc.def", "abcxdef", false),
            ("abc.def", "abc.def", true),
            ("a(b)c/def", "a(b)c/def", true),
            ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
            ("a^b", "a^b", true),
            (
                "dist/*.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                true,
            ),
            ("a?b", "a☺b", true),
            ("[a-ζ]*", "α", true),
            ("*x", "xxx", true),
            // "**" flavours (moby/patternmatcher's table)
            ("**", "file", true),
            ("**", "dir/file", true),
            ("**/", "dir/file", true),
            ("**/**", "dir/file", true),
            ("dir/**", "dir/dir2/file", true),
            ("**/dir2/*", "dir/dir2/file", true),
            ("**/dir2/**", "dir/dir2/dir3/file", true),
            ("**file", "dir/dir/file", true),
            ("**/file*.txt", "dir/dir/file.txt", true),
            ("**/**/*.txt2", "dir/dir/file.txt", false),
            ("a**/*.txt", "a/dir/dir/file.txt", true),
            ("a/*.txt", "a/dir/file.txt", false),
            ("a/*.txt**", "a/file.txt", true),
            ("abc/**", "abc", false),
            ("abc/**", "abc/def/ghi", true),
            ("**/.foo", ".foo", true),
            ("**/.foo", "bar.foo", false),
            ("**/foo/bar", "dir/dir2/foo/bar", true),
        ];
        for &(pattern, path, excluded) in table {
            check(pattern, &[(path, excluded)]);
        }
    }

    #[test]
    fn malformed_patterns_are_reported_and_skipped() {
        let ignore = DockerIgnore::parse("[\n!\na\\\n[]a]\n[-]\n[a-b-c]\n[z-a]\nkept\n");
        assert_eq!(
            ignore.invalid_patterns(),
            ["[", "!", "a\\", "[]a]", "[-]", "[a-b-c]", "[z-a]"]
        );
        assert!(ignore.is_excluded("kept"));
        assert!(!ignore.is_excluded("a"));
        assert!(!ignore.has_exceptions());
    }

    #[test]
    fn empty_rules_and_the_context_root() {
        let empty = DockerIgnore::parse("");
        assert!(empty.is_empty());
        assert!(!empty.is_excluded("anything"));
        let all = DockerIgnore::parse("**\n*");
        assert!(!all.is_excluded("."));
        assert!(!all.is_excluded(""));
        assert!(all.is_excluded("x"));
        assert!(DockerIgnore::parse("a\n!b").has_exceptions());
    }

    #[test]
    fn clean_is_go_path_clean() {
        let table = [
            ("", "."),
            (".", "."),
            ("./", "."),
            ("a//b/./c", "a/b/c"),
            ("a/b/../c", "a/c"),
            ("../a", "../a"),
            ("a/../../b", "../b"),
            ("/../a", "/a"),
            ("/", "/"),
            ("abc/", "abc"),
            ("!./x", "!./x"),
        ];
        for (input, cleaned) in table {
            assert_eq!(clean(input), cleaned, "clean({input:?})");
        }
    }
}
