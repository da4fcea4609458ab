//! Pruning what is kept only for a while: received hook events (`event_retention`) and finished
//! notification deliveries with their access records (`delivery_retention`).

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
