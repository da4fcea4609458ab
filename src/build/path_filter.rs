//! Path filters at build time: ingest does not fetch, so a push's build carries its `before`, and the
//! worker, once it has fetched the mirror for the build (the one fetch the build makes), asks the
//! rule's filter whether the files changed between `before` and the commit match (see
//! `domain::paths`). Nothing is announced before the filter has decided.

use crate::db::builds::BuildRow;
use crate::domain::paths::PathFilter;

/// What the filter decided about a build.
#[derive(Debug, PartialEq, Eq)]
pub enum PathDecision {
    /// Build it: a changed file matches, or the changed files cannot be known. Carries the line
    /// the log gets.
    Build(String),
    /// Do not build: the reason (`no changed file matches paths ["src/**"]`).
    Skip(String),
}

/// The commit to diff from when `build` is filtered: only builds planned from a push whose rule
/// has a filter are; "build now", schedules and a new branch (`before` all zeros) always build.
pub fn diff_from(build: &BuildRow, filter: &PathFilter) -> Option<String> {
    let before = build.before_sha.as_ref()?;
    (build.trigger == "push"
        && build.commit_sha.is_some()
        && !filter.is_empty()
        && !before.bytes().all(|b| b == b'0'))
    .then(|| before.clone())
}

/// The filter's decision given the files changed between `before` and the commit: `Ok(None)` when
/// the mirror does not have `before` (a force push), `Err` when they could not be computed. Both
/// build.
pub fn decide(
    build: &BuildRow,
    filter: &PathFilter,
    changed: Result<Option<Vec<String>>, String>,
) -> PathDecision {
    match changed {
        Ok(Some(paths)) => match filter.decide(&paths) {
            Ok(()) => PathDecision::Build(format!(
                "Path filter: {} changed file(s), at least one matches",
                paths.len()
            )),
            Err(skip) => PathDecision::Skip(format!(
                "{} ({} changed file(s) between {} and {})",
                skip.message(),
                paths.len(),
                short(&build.before_sha),
                short(&build.commit_sha)
            )),
        },
        Ok(None) => PathDecision::Build(
            "Path filter: the previous commit of the push is not in the mirror (new branch or force \
             push): building"
                .to_string(),
        ),
        Err(e) => {
            tracing::warn!(build_id = %build.id, error = %e, "path filter: cannot compute the changed files");
            PathDecision::Build(format!(
                "Path filter: cannot compute the changed files ({e}): building"
            ))
        }
    }
}

fn short(sha: &Option<String>) -> &str {
    sha.as_deref().map_or("?", |s| &s[..7.min(s.len())])
}
