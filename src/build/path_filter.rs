//! Path filters at build time: ingest does not fetch, so a push's build carries its `before`, and the
//! worker, before it announces or builds anything, fetches the mirror and asks the rule's filter
//! whether the files changed between `before` and the commit match (see `domain::paths`).

use std::path::PathBuf;

use super::git;
use crate::app::App;
use crate::db::{self, builds::BuildRow};

/// What the filter decided about a build.
pub enum PathDecision {
    /// Build it: no filter, not a push, nothing to compare, or a changed file matches.
    Build(Option<String>),
    /// Do not build: the reason (`no changed file matches paths ["src/**"]`).
    Skip(String),
}

/// Decides whether `build` runs under its rule's path filter. Only builds planned from a push are
/// filtered; "build now", schedules, a new branch (`before` all zeros) and a `before` the mirror does
/// not have (a force push) always build. A failure to fetch builds too: the build then fails on its
/// own fetch with the reason. `Build` carries a line for the log when the filter was consulted.
pub async fn decide(app: &App, build: &BuildRow) -> PathDecision {
    let (Some(before), Some(commit), Some(rule_id)) =
        (&build.before_sha, &build.commit_sha, &build.rule_id)
    else {
        return PathDecision::Build(None);
    };
    if build.trigger != "push" || before.bytes().all(|b| b == b'0') {
        return PathDecision::Build(None);
    }
    let Ok(Some(rule)) = db::rules::get(&app.db, &build.repository_id, rule_id).await else {
        return PathDecision::Build(None);
    };
    let filter = rule.path_filter();
    if filter.is_empty() {
        return PathDecision::Build(None);
    }
    let Ok(Some(source)) = db::sources::for_repo(&app.db, &app.secrets, &build.repository_id).await
    else {
        return PathDecision::Build(None);
    };
    let mirror = git::mirror_path(&app.config.mirrors_dir(), &source.clone_url);
    let lock = app.builds.mirror_lock(&mirror);
    let _guard = lock.lock().await;
    let (before, commit) = (before.clone(), commit.clone());
    let local_sources = app.config.local_sources.clone();
    let git_allow = app.config.git_allow.clone();
    let mirror: PathBuf = mirror.clone();
    let changed = tokio::task::spawn_blocking(move || {
        let remote = git::Remote::resolve(
            &source.clone_url,
            source.credentials.as_deref(),
            &local_sources,
            &git_allow,
        )
        .map_err(|e| e.to_string())?;
        let repo = git::fetch_mirror(&mirror, &remote).map_err(|e| e.to_string())?;
        git::changed_paths(&repo, &before, &commit).map_err(|e| e.to_string())
    })
    .await;
    match changed {
        Ok(Ok(Some(paths))) => match filter.decide(&paths) {
            Ok(()) => PathDecision::Build(Some(format!(
                "Path filter: {} changed file(s), at least one matches",
                paths.len()
            ))),
            Err(skip) => PathDecision::Skip(format!(
                "{} ({} changed file(s) between {} and {})",
                skip.message(),
                paths.len(),
                short(&build.before_sha),
                short(&build.commit_sha)
            )),
        },
        Ok(Ok(None)) => PathDecision::Build(Some(
            "Path filter: the previous commit of the push is not in the mirror (new branch or force \
             push): building"
                .to_string(),
        )),
        Ok(Err(e)) => {
            tracing::warn!(build_id = %build.id, error = %e, "path filter: cannot compute the changed files");
            PathDecision::Build(Some(format!(
                "Path filter: cannot compute the changed files ({e}): building"
            )))
        }
        Err(e) => PathDecision::Build(Some(format!(
            "Path filter: cannot compute the changed files ({e}): building"
        ))),
    }
}

fn short(sha: &Option<String>) -> &str {
    sha.as_deref().map_or("?", |s| &s[..7.min(s.len())])
}
