//! Pruning what is kept only for a while: received hook events (after `event_retention`).

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
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
}

pub async fn prune_once(app: &App) -> Result<u64, sqlx::Error> {
    let retention = chrono::Duration::from_std(app.config.event_retention)
        .unwrap_or(chrono::Duration::days(30));
    let before = db::format_time(chrono::Utc::now() - retention);
    let events = db::events::prune(&app.db, &before).await?;
    if events > 0 {
        tracing::info!(events, "pruned old hook events");
    }
    Ok(events)
}
