//! Recording image versions, whatever made them: a kiln build, or a plain `docker push` that the
//! registry told us about (or that a sync found). The one door through which a new version enters.

use crate::app::App;
use crate::db::{self, versions::NewVersion, versions::Recorded};

/// Records `v` in one transaction and says what changed.
pub async fn record(app: &App, v: &NewVersion<'_>) -> Result<Recorded, sqlx::Error> {
    let mut tx = app.db.begin().await?;
    let recorded = db::versions::record(&mut tx, v).await?;
    tx.commit().await?;
    if recorded != Recorded::Unchanged {
        tracing::info!(
            repository_id = v.repository_id,
            tag = v.tag,
            digest = v.digest,
            source = v.source,
            "new image version"
        );
    }
    Ok(recorded)
}
