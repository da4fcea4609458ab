//! Path filters: a rule's `paths` / `ignore_paths` globs decide whether a push builds, from the files
//! it changed (semantics of GitHub Actions' `paths` / `paths-ignore`).
//!
//! - Patterns are globs over the path from the repository root (`src/main.rs`): `*` and `?` stay within
//!   one directory, `**` spans any number of directories (`src/**`, `**/*.md`), `[abc]` and `{a,b}`
//!   work as usual. A pattern starting with `!` takes files back out: patterns are read in order and
//!   the last one a file matches decides (`["src/**", "!src/**/*.md"]`).
//! - `paths` (when not empty): the push builds when **at least one** changed file matches it.
//! - `ignore_paths` (when not empty): the push does not build when **every** changed file matches it.
//! - Both: a push builds when some changed file matches `paths` and is not ignored.
//! - A rename counts as two changed paths (the old and the new name), a deletion as its path.
//! - A push that changed no file at all (an empty commit) builds nothing when a filter is set: no file
//!   matches `paths`, and there is nothing `ignore_paths` leaves.

use globset::{Glob, GlobBuilder, GlobMatcher};

use super::{FieldError, quote};

/// At most this many patterns per list.
pub const MAX_PATTERNS: usize = 100;
/// The longest pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;

/// One compiled list of patterns (`paths` or `ignore_paths`).
#[derive(Debug, Clone, Default)]
pub struct PathPatterns {
    /// (pattern as written, matcher, negated)
    patterns: Vec<(String, GlobMatcher, bool)>,
}

impl PathPatterns {
    /// Parses a list, naming `field` in errors (codes `too_many`, `too_long`, `required`,
    /// `invalid_character`, `invalid_glob`).
    pub fn parse(field: &'static str, list: &[String]) -> Result<PathPatterns, FieldError> {
        if list.len() > MAX_PATTERNS {
            return Err(FieldError::new(
                field,
                "too_many",
                format!("at most {MAX_PATTERNS} patterns (got {})", list.len()),
            ));
        }
        let mut patterns = Vec::with_capacity(list.len());
        for p in list {
            super::check_length_and_controls(field, p, MAX_PATTERN_LEN, "a pattern ")?;
            let (negated, glob) = match p.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, p.as_str()),
            };
            // Paths are relative to the repository root: `./src/**` and `/src/**` mean `src/**`.
            let glob = glob.trim_start_matches("./").trim_start_matches('/');
            if glob.is_empty() {
                return Err(FieldError::new(
                    field,
                    "required",
                    format!("a pattern must not be empty (got {})", quote(p)),
                ));
            }
            let matcher = compile(glob).map_err(|e| {
                FieldError::new(
                    field,
                    "invalid_glob",
                    format!("{} is not a valid glob: {}", quote(p), e.kind()),
                )
            })?;
            patterns.push((p.clone(), matcher, negated));
        }
        Ok(PathPatterns { patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The last pattern matching `path` decides: a plain one includes it, a `!` one leaves it out.
    pub fn matches(&self, path: &str) -> bool {
        self.patterns
            .iter()
            .rev()
            .find(|(_, m, _)| m.is_match(path))
            .is_some_and(|(_, _, negated)| !negated)
    }

    fn written(&self) -> Vec<&str> {
        self.patterns.iter().map(|(p, _, _)| p.as_str()).collect()
    }
}

fn compile(glob: &str) -> Result<GlobMatcher, globset::Error> {
    let glob: Glob = GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()?;
    Ok(glob.compile_matcher())
}

/// A rule's two lists.
#[derive(Debug, Clone, Default)]
pub struct PathFilter {
    pub paths: PathPatterns,
    pub ignore_paths: PathPatterns,
}

/// Why a push did not build under a path filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSkip {
    /// No changed file matches `paths` (and is not ignored).
    NoMatch { paths: Vec<String> },
    /// Every changed file matches `ignore_paths`.
    AllIgnored { ignore_paths: Vec<String> },
}

impl PathSkip {
    /// A sentence for people: the build's error and the events view show it.
    pub fn message(&self) -> String {
        let list = |l: &[String]| serde_json::to_string(l).unwrap_or_default();
        match self {
            PathSkip::NoMatch { paths } => {
                format!("no changed file matches paths {}", list(paths))
            }
            PathSkip::AllIgnored { ignore_paths } => {
                format!(
                    "every changed file matches ignore_paths {}",
                    list(ignore_paths)
                )
            }
        }
    }
}

impl PathFilter {
    pub fn parse(paths: &[String], ignore_paths: &[String]) -> Result<PathFilter, FieldError> {
        Ok(PathFilter {
            paths: PathPatterns::parse("paths", paths)?,
            ignore_paths: PathPatterns::parse("ignore_paths", ignore_paths)?,
        })
    }

    /// No filter: every push builds.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.ignore_paths.is_empty()
    }

    /// Whether a push that changed `changed` builds (`Ok`) or why not.
    pub fn decide<S: AsRef<str>>(&self, changed: &[S]) -> Result<(), PathSkip> {
        if self.is_empty() {
            return Ok(());
        }
        let kept = |p: &&S| !self.ignore_paths.matches(p.as_ref());
        let builds = if self.paths.is_empty() {
            changed.iter().any(|p| kept(&p))
        } else {
            changed
                .iter()
                .filter(kept)
                .any(|p| self.paths.matches(p.as_ref()))
        };
        if builds {
            return Ok(());
        }
        let written = |p: &PathPatterns| p.written().into_iter().map(String::from).collect();
        if !self.paths.is_empty() {
            Err(PathSkip::NoMatch {
                paths: written(&self.paths),
            })
        } else {
            Err(PathSkip::AllIgnored {
                ignore_paths: written(&self.ignore_paths),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pattern_matching_table() {
        // (pattern, path, matches)
        let cases: &[(&str, &str, bool)] = &[
            ("src/**", "src/main.rs", true),
            ("src/**", "src/a/b/c.rs", true),
            ("src/**", "src", false),
            ("src/**", "docs/src/x", false),
            ("src/*", "src/main.rs", true),
            ("src/*", "src/a/b.rs", false),
            ("*.md", "README.md", true),
            ("*.md", "docs/guide.md", false),
            ("**/*.md", "docs/guide.md", true),
            ("**/*.md", "README.md", true),
            ("docs/**/*.md", "docs/a/b/c.md", true),
            ("docs/**/*.md", "docs/c.md", true),
            ("Dockerfile", "Dockerfile", true),
            ("Dockerfile", "app/Dockerfile", false),
            ("**/Dockerfile", "app/Dockerfile", true),
            ("./src/**", "src/x", true),
            ("/src/**", "src/x", true),
            ("src/?.rs", "src/a.rs", true),
            ("src/?.rs", "src/ab.rs", false),
            ("{src,lib}/**", "lib/x.rs", true),
            ("[ab].txt", "b.txt", true),
            ("[ab].txt", "c.txt", false),
            ("src/\\*.rs", "src/*.rs", true),
            ("src/\\*.rs", "src/a.rs", false),
            ("ü/**", "ü/x", true),
        ];
        for (pattern, path, want) in cases {
            let p = PathPatterns::parse("paths", &list(&[pattern])).unwrap();
            assert_eq!(p.matches(path), *want, "{pattern:?} vs {path:?}");
        }
    }

    #[test]
    fn negation_last_match_decides() {
        let p = PathPatterns::parse("paths", &list(&["src/**", "!src/**/*.md", "src/keep.md"]))
            .unwrap();
        assert!(p.matches("src/a.rs"));
        assert!(!p.matches("src/docs/x.md"));
        assert!(p.matches("src/keep.md"));
        assert!(!p.matches("other/a.rs"));
        // A lone negation includes nothing.
        let p = PathPatterns::parse("paths", &list(&["!docs/**"])).unwrap();
        assert!(!p.matches("src/a.rs"));
        assert!(!p.matches("docs/a"));
    }

    #[test]
    fn decide_table() {
        // (paths, ignore_paths, changed files, decision: Ok or the message)
        type Case<'a> = (
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            Result<(), &'a str>,
        );
        let cases: &[Case] = &[
            // No filter: always builds, even with no changed file.
            (&[], &[], &[], Ok(())),
            (&[], &[], &["docs/a.md"], Ok(())),
            // paths: at least one changed file matches.
            (&["src/**"], &[], &["src/a.rs"], Ok(())),
            (&["src/**"], &[], &["docs/a.md", "src/a.rs"], Ok(())),
            (
                &["src/**"],
                &[],
                &["docs/a.md"],
                Err("no changed file matches paths [\"src/**\"]"),
            ),
            (
                &["src/**"],
                &[],
                &[],
                Err("no changed file matches paths [\"src/**\"]"),
            ),
            // ignore_paths: builds unless every changed file is ignored.
            (
                &[],
                &["docs/**", "*.md"],
                &["docs/a", "README.md"],
                Err("every changed file matches ignore_paths [\"docs/**\",\"*.md\"]"),
            ),
            (&[], &["docs/**"], &["docs/a", "src/b"], Ok(())),
            (
                &[],
                &["docs/**"],
                &[],
                Err("every changed file matches ignore_paths [\"docs/**\"]"),
            ),
            // Negation inside ignore_paths: docs/api/** still builds.
            (&[], &["docs/**", "!docs/api/**"], &["docs/api/x"], Ok(())),
            (
                &[],
                &["docs/**", "!docs/api/**"],
                &["docs/guide"],
                Err("every changed file matches ignore_paths [\"docs/**\",\"!docs/api/**\"]"),
            ),
            // Both: a file must match paths and not be ignored.
            (
                &["src/**"],
                &["src/**/*.md"],
                &["src/notes.md"],
                Err("no changed file matches paths [\"src/**\"]"),
            ),
            (
                &["src/**"],
                &["src/**/*.md"],
                &["src/notes.md", "src/a.rs"],
                Ok(()),
            ),
            // Negation in paths.
            (
                &["src/**", "!src/test/**"],
                &[],
                &["src/test/a.rs"],
                Err("no changed file matches paths [\"src/**\",\"!src/test/**\"]"),
            ),
            (
                &["src/**", "!src/test/**"],
                &[],
                &["src/test/a.rs", "src/lib.rs"],
                Ok(()),
            ),
            // A rename out of src/ changes a path under src/ (the old name): it builds.
            (&["src/**"], &[], &["src/old.rs", "attic/old.rs"], Ok(())),
            // A deletion under src/ is a change under src/.
            (&["src/**"], &[], &["src/gone.rs"], Ok(())),
        ];
        for (paths, ignore, changed, want) in cases {
            let f = PathFilter::parse(&list(paths), &list(ignore)).unwrap();
            let got = f.decide(changed).map_err(|s| s.message());
            assert_eq!(
                got,
                want.map_err(str::to_string),
                "paths {paths:?} ignore {ignore:?} changed {changed:?}"
            );
        }
    }

    #[test]
    fn bad_patterns_name_the_field() {
        let cases: &[(&str, &[&str], &str)] = &[
            ("paths", &["src/[a"], "invalid_glob"),
            ("paths", &["{a,b"], "invalid_glob"),
            ("paths", &[""], "required"),
            ("paths", &["!"], "required"),
            ("ignore_paths", &["a\nb"], "invalid_character"),
            ("ignore_paths", &["./"], "required"),
        ];
        for (field, l, code) in cases {
            let (paths, ignore) = if *field == "paths" {
                (list(l), vec![])
            } else {
                (vec![], list(l))
            };
            let e = PathFilter::parse(&paths, &ignore).unwrap_err();
            assert_eq!((e.field, e.code), (*field, *code), "{l:?}");
        }
        let many: Vec<String> = (0..101).map(|i| format!("d{i}/**")).collect();
        assert_eq!(PathFilter::parse(&many, &[]).unwrap_err().code, "too_many");
        let long = vec!["a".repeat(1025)];
        assert_eq!(PathFilter::parse(&[], &long).unwrap_err().code, "too_long");
        let e = PathFilter::parse(&list(&["src/[a"]), &[]).unwrap_err();
        assert!(
            e.message.starts_with("'src/[a' is not a valid glob: "),
            "{}",
            e.message
        );
    }
}
