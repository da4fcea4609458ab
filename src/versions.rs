//! Recording image versions, whatever made them: a kiln build, or a plain `docker push` that the
//! registry told us about (or that a sync found). The one door through which a new version enters, and
//! so where `image.pushed` notifications are queued, in the same transaction.

use crate::app::App;
use crate::db::{self, versions::NewVersion, versions::Recorded};
use crate::notify::outbox;

/// Records `v` and, when it is a new version, queues its notifications; one transaction.
pub async fn record(app: &App, v: &NewVersion<'_>) -> Result<Recorded, sqlx::Error> {
    let mut tx = crate::db::write_tx(&app.db).await?;
    let recorded = db::versions::record(&mut tx, v).await?;
    let mut queued = 0;
    if recorded != Recorded::Unchanged
        && let Some(repo) = db::repos::by_id(&mut *tx, v.repository_id).await?
    {
        let build = match v.build_id {
            Some(id) => db::builds::get(&mut *tx, id).await?,
            None => None,
        };
        let previous = match &recorded {
            Recorded::Moved { previous_digest } => Some(previous_digest.as_str()),
            _ => None,
        };
        let msg = outbox::image_pushed(&outbox::ImagePushed {
            namespace: &repo.namespace,
            repository: &repo.name,
            tag: v.tag,
            digest: v.digest,
            image: &format!("{}:{}", app.image_name(&repo.namespace, &repo.name), v.tag),
            source: v.source,
            build: build.as_ref(),
            previous_digest: previous,
            pushed_at: &db::now(),
        });
        queued = outbox::enqueue(&mut tx, &app.config.public_url, v.repository_id, &msg)
            .await?
            .len();
    }
    tx.commit().await?;
    if recorded != Recorded::Unchanged {
        tracing::info!(
            repository_id = v.repository_id,
            tag = v.tag,
            digest = v.digest,
            source = v.source,
            queued,
            "new image version"
        );
    }
    if queued > 0 {
        app.notifier.wake();
    }
    Ok(recorded)
}
