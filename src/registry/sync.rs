//! Re-sync versions from the registry's catalog and tags API, so nothing pushed while kiln was down is
//! missed: at start, and on `POST /api/v1/registry/sync` (`kiln registry sync`).

use serde::Serialize;

use super::events::ensure_repo;
use crate::app::App;
use crate::db::{self, versions::NewVersion, versions::Recorded};

#[derive(Debug, Default, Serialize)]
pub struct SyncReport {
    /// Registry repositories that belong to kiln namespaces.
    pub repositories: usize,
    pub versions_added: usize,
    pub versions_updated: usize,
    pub versions_removed: usize,
    /// Registry repositories left alone: not `namespace/name` of an existing kiln namespace.
    pub skipped: Vec<String>,
    /// `{repository}: {why} (no version removed)` for each repository that could not be read in full.
    pub errors: Vec<String>,
}

pub async fn sync_all(app: &App) -> anyhow::Result<SyncReport> {
    let _turn = app.registry.sync_turn().await;
    let mut report = SyncReport::default();
    for name in app.registry.catalog().await? {
        let Some((ns, repo_name)) = name.split_once('/').filter(|(_, r)| !r.contains('/')) else {
            report.skipped.push(name);
            continue;
        };
        let Some(repo) = ensure_repo(app, ns, repo_name).await? else {
            report.skipped.push(name);
            continue;
        };
        report.repositories += 1;
        if let Err(e) = sync_repo(app, &name, &repo.id, &mut report).await {
            report
                .errors
                .push(format!("{name}: {e:#} (no version removed)"));
        }
    }
    Ok(report)
}

async fn sync_repo(
    app: &App,
    name: &str,
    repository_id: &str,
    report: &mut SyncReport,
) -> anyhow::Result<()> {
    // Only a complete tag list may remove versions: a failure (a 404 included) leaves them all.
    let Some(tags) = app.registry.tags(name).await? else {
        anyhow::bail!(
            "the registry answers 404 NAME_UNKNOWN for its tags though its catalog lists it"
        );
    };
    for tag in &tags {
        if db::builds::running_with_tag(&app.db, repository_id, tag).await? {
            continue;
        }
        let Some(digest) = app.registry.manifest_digest(name, tag).await? else {
            continue;
        };
        let recorded = crate::versions::record(
            app,
            &NewVersion {
                repository_id,
                tag,
                digest: &digest,
                source: "push",
                build_id: None,
                commit_sha: None,
            },
        )
        .await?;
        match recorded {
            Recorded::New => report.versions_added += 1,
            Recorded::Moved { .. } => report.versions_updated += 1,
            Recorded::Unchanged => {}
        }
    }
    for known in db::versions::list(&app.db, repository_id, true).await? {
        if !tags.contains(&known.tag) {
            db::versions::remove(&app.db, repository_id, &known.tag).await?;
            report.versions_removed += 1;
        }
    }
    Ok(())
}

/// At start: one sync in the background; a registry that is down only costs a log line.
pub fn spawn_initial_sync(app: &App) {
    let app = app.clone();
    tokio::spawn(async move {
        match sync_all(&app).await {
            Ok(r) => tracing::info!(
                repositories = r.repositories,
                added = r.versions_added,
                updated = r.versions_updated,
                removed = r.versions_removed,
                errors = r.errors.len(),
                "registry sync done"
            ),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "registry sync at start failed"),
        }
    });
}
