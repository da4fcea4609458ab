use super::{new_id, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: String,
    pub repository_id: String,
    pub provider: String,
    pub delivery_id: String,
    pub kind: String,
    pub git_ref: Option<String>,
    pub commit_sha: Option<String>,
    pub outcome: String,
    pub plan: String,
    pub received_at: String,
    pub duplicates: i64,
}

pub struct NewEvent<'a> {
    pub repository_id: &'a str,
    pub provider: &'a str,
    pub delivery_id: &'a str,
    pub kind: &'a str,
    pub git_ref: Option<&'a str>,
    pub commit_sha: Option<&'a str>,
    pub outcome: &'a str,
    pub plan: &'a str,
    pub payload: &'a [u8],
}

/// Stores the event; `None` when this delivery was already stored for this repository (a redelivery).
pub async fn insert_new(
    tx: &mut sqlx::SqliteConnection,
    e: &NewEvent<'_>,
) -> Result<Option<String>, sqlx::Error> {
    let id = new_id();
    let inserted = sqlx::query(
        "INSERT INTO events (id, repository_id, provider, delivery_id, kind, git_ref, commit_sha, outcome, plan, payload, received_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (provider, delivery_id, repository_id) DO NOTHING",
    )
    .bind(&id)
    .bind(e.repository_id)
    .bind(e.provider)
    .bind(e.delivery_id)
    .bind(e.kind)
    .bind(e.git_ref)
    .bind(e.commit_sha)
    .bind(e.outcome)
    .bind(e.plan)
    .bind(e.payload)
    .bind(now())
    .execute(&mut *tx)
    .await?;
    Ok((inserted.rows_affected() == 1).then_some(id))
}

pub async fn list(
    db: &super::Db,
    repository_id: &str,
    page: &super::Page,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, repository_id, provider, delivery_id, kind, git_ref, commit_sha, outcome, plan, received_at, duplicates \
         FROM events WHERE repository_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
    )
    .bind(repository_id)
    .bind(page.before())
    .bind(page.limit)
    .fetch_all(db)
    .await
}

/// The same delivery came again: count it on the stored event.
pub async fn count_duplicate(
    tx: &mut sqlx::SqliteConnection,
    provider: &str,
    delivery_id: &str,
    repository_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE events SET duplicates = duplicates + 1 WHERE provider = ? AND delivery_id = ? AND repository_id = ?",
    )
    .bind(provider)
    .bind(delivery_id)
    .bind(repository_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Retention: events received before `before` go (their builds stay).
pub async fn prune(db: &super::Db, before: &str) -> Result<u64, sqlx::Error> {
    let r = sqlx::query("DELETE FROM events WHERE received_at < ?")
        .bind(before)
        .execute(db)
        .await?;
    Ok(r.rows_affected())
}
