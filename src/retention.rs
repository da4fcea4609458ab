//! Pruning what is kept only for a while: received hook events (`event_retention`) and finished
//! notification deliveries with their access records (`delivery_retention`); builds and their logs
//! (`build_retention_count` / `build_retention`), and the local cache under its cap
//! (`image_cache_max_bytes`: images kiln built, mirrors of deleted sources); audit records
//! (`audit_retention`).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::db;

/// Prunes once now, then every hour, until `stop`.
pub fn spawn_pruning(app: &App, stop: CancellationToken) {
    let app = app.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = prune_once(&app).await {
                tracing::warn!(error = %e, "pruning failed");
            }
            // -- builds and the local cache (issue 9) --
            if let Err(e) = prune_builds(&app).await {
                tracing::warn!(error = %e, "pruning builds failed");
            }
            if let Err(e) = prune_local_cache(&app).await {
                tracing::warn!(error = %e, "pruning the local cache failed");
            }
            // -- the audit log (issue 11) --
            if let Err(e) = prune_audit(&app).await {
                tracing::warn!(error = %e, "pruning the audit log failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
}

fn cutoff(keep: std::time::Duration) -> String {
    let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::days(30));
    db::format_time(chrono::Utc::now() - keep)
}

/// Returns (events, deliveries) pruned.
pub async fn prune_once(app: &App) -> Result<(u64, u64), sqlx::Error> {
    let events = db::events::prune(&app.db, &cutoff(app.config.event_retention)).await?;
    let deliveries = db::deliveries::prune(&app.db, &cutoff(app.config.delivery_retention)).await?;
    if events + deliveries > 0 {
        tracing::info!(
            events,
            deliveries,
            "pruned old hook events and delivery records"
        );
    }
    Ok((events, deliveries))
}

/// Builds deleted per transaction.
const BUILD_PRUNE_BATCH: u32 = 500;

/// Build retention: per repository, a finished build goes when it is beyond the newest
/// `build_retention_count` **and** older than `build_retention` (both: the newest N are kept however
/// old, and builds younger than the age are kept however many). Its log goes with it; versions and
/// their history stay (their `build_id` then names a build that is gone). Returns the builds pruned.
pub async fn prune_builds(app: &App) -> Result<u64, sqlx::Error> {
    let cutoff = db::format_time(
        chrono::Utc::now()
            - chrono::Duration::from_std(app.config.build_retention)
                .unwrap_or(chrono::Duration::days(90)),
    );
    let pruned = db::builds::prune(
        &app.db,
        app.config.build_retention_count,
        &cutoff,
        BUILD_PRUNE_BATCH,
    )
    .await?;
    if pruned > 0 {
        tracing::info!(builds = pruned, "pruned old builds and their logs");
    }
    Ok(pruned)
}

/// What one pass over the local cache removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CachePruned {
    /// Ids of the images removed.
    pub images: Vec<String>,
    /// Mirror directories removed.
    pub mirrors: Vec<std::path::PathBuf>,
    /// Bytes counted before, and removed.
    pub bytes_before: u64,
    pub bytes_removed: u64,
}

/// The local cache cap: the images kiln built for its registry (by their label) and the mirrors of deleted sources
/// count; while they exceed `image_cache_max_bytes`, the oldest goes first (an image by its creation,
/// a mirror by its last fetch). Never an image a running build is making (its name), never the mirror
/// of an existing source. An image's size is Docker's, shared base layers included, so the total is
/// an upper bound. Without a Docker daemon only mirrors are considered.
pub async fn prune_local_cache(app: &App) -> anyhow::Result<CachePruned> {
    use crate::build::local_cache;
    use crate::domain::cache_cap::{CacheItem, select_to_prune};

    let cap = app.config.image_cache_max_bytes;
    if cap == 0 {
        return Ok(CachePruned::default());
    }
    let docker = match app.docker.client().await {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, "cache cap: no Docker daemon, only mirrors are considered");
            None
        }
    };
    let images = match &docker {
        Some(d) => local_cache::built_images(d, &app.config.registry)
            .await
            .map_err(|e| anyhow::anyhow!("cannot list images: {e}"))?,
        None => vec![],
    };
    let running: std::collections::HashSet<String> = db::builds::running_images(&app.db)
        .await?
        .into_iter()
        .collect();
    let live: std::collections::HashSet<std::path::PathBuf> =
        db::sources::all(&app.db, &app.secrets)
            .await?
            .iter()
            .map(|s| crate::build::git::mirror_path(&app.config.mirrors_dir(), &s.clone_url))
            .collect();
    let mirrors_dir = app.config.mirrors_dir();
    let orphans: Vec<local_cache::Mirror> =
        tokio::task::spawn_blocking(move || local_cache::mirrors(&mirrors_dir))
            .await??
            .into_iter()
            .filter(|m| !live.contains(&m.path))
            .collect();

    let mut items: Vec<CacheItem> = images
        .iter()
        .map(|i| CacheItem {
            bytes: i.bytes,
            last_used: i.created,
            in_use: i.tags.iter().any(|t| running.contains(t)),
        })
        .collect();
    items.extend(orphans.iter().map(|m| CacheItem {
        bytes: m.bytes,
        last_used: m.last_used,
        in_use: false,
    }));
    let mut done = CachePruned {
        bytes_before: items.iter().map(|i| i.bytes).sum(),
        ..CachePruned::default()
    };
    for index in select_to_prune(&items, cap) {
        if let Some(image) = images.get(index) {
            let Some(docker) = &docker else { continue };
            match local_cache::remove_image(docker, image).await {
                Ok(()) => {
                    tracing::info!(image = %image.id, tags = ?image.tags, bytes = image.bytes, "cache cap: removed an image kiln built");
                    done.images.push(image.id.clone());
                    done.bytes_removed += image.bytes;
                }
                Err(e) => {
                    tracing::warn!(image = %image.id, error = %e, "cache cap: cannot remove an image")
                }
            }
        } else if let Some(mirror) = orphans.get(index - images.len()) {
            // A fetch into it (a build whose source was removed meanwhile) finishes first.
            let lock = app.builds.mirror_lock(&mirror.path);
            let _guard = lock.lock().await;
            match tokio::fs::remove_dir_all(&mirror.path).await {
                Ok(()) => {
                    tracing::info!(mirror = %mirror.path.display(), bytes = mirror.bytes, "cache cap: removed the mirror of a deleted source");
                    done.mirrors.push(mirror.path.clone());
                    done.bytes_removed += mirror.bytes;
                }
                Err(e) => {
                    tracing::warn!(mirror = %mirror.path.display(), error = %e, "cache cap: cannot remove a mirror")
                }
            }
        }
    }
    Ok(done)
}

/// Deletes the audit records older than `audit_retention`; returns how many.
pub async fn prune_audit(app: &App) -> Result<u64, sqlx::Error> {
    let pruned = db::audit::prune(&app.db, &cutoff(app.config.audit_retention)).await?;
    if pruned > 0 {
        tracing::info!(records = pruned, "pruned old audit records");
    }
    Ok(pruned)
}
