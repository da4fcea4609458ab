use super::{Db, now};

#[derive(Clone, sqlx::FromRow)]
pub struct SourceRow {
    pub repository_id: String,
    pub provider: String,
    pub clone_url: String,
    pub match_url: String,
    /// Needed in clear to verify HMAC signatures; never returned by the API after creation, never logged.
    pub webhook_secret: String,
    pub created_at: String,
}

impl std::fmt::Debug for SourceRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceRow")
            .field("repository_id", &self.repository_id)
            .field("provider", &self.provider)
            .field("clone_url", &self.clone_url)
            .field("webhook_secret", &"[redacted]")
            .finish()
    }
}

pub struct NewSource<'a> {
    pub repository_id: &'a str,
    pub provider: &'a str,
    pub clone_url: &'a str,
    pub match_url: &'a str,
    pub webhook_secret: &'a str,
}

/// Creates or replaces the repository's one source.
pub async fn upsert(db: &Db, s: &NewSource<'_>) -> Result<SourceRow, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO sources (repository_id, provider, clone_url, match_url, webhook_secret, created_at) \
         VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (repository_id) DO UPDATE SET provider = excluded.provider, clone_url = excluded.clone_url, \
         match_url = excluded.match_url, webhook_secret = excluded.webhook_secret RETURNING *",
    )
    .bind(s.repository_id)
    .bind(s.provider)
    .bind(s.clone_url)
    .bind(s.match_url)
    .bind(s.webhook_secret)
    .bind(now())
    .fetch_one(db)
    .await
}

pub async fn for_repo(db: &Db, repository_id: &str) -> Result<Option<SourceRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM sources WHERE repository_id = ?")
        .bind(repository_id)
        .fetch_optional(db)
        .await
}

/// Candidate sources for an inbound hook: this provider, and any of the given normalized URLs. None
/// when the payload named no URL: a delivery is never tried against every source's secret.
pub async fn candidates(
    db: &Db,
    provider: &str,
    match_urls: &[String],
) -> Result<Vec<SourceRow>, sqlx::Error> {
    if match_urls.is_empty() {
        return Ok(vec![]);
    }
    let placeholders = vec!["?"; match_urls.len()].join(", ");
    let sql = format!("SELECT * FROM sources WHERE provider = ? AND match_url IN ({placeholders})");
    let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(provider);
    for u in match_urls {
        q = q.bind(u);
    }
    q.fetch_all(db).await
}

pub async fn delete<'e, E: sqlx::SqliteExecutor<'e>>(
    db: E,
    repository_id: &str,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("DELETE FROM sources WHERE repository_id = ?")
        .bind(repository_id)
        .execute(db)
        .await?;
    Ok(r.rows_affected() > 0)
}
