use super::{Db, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionRow {
    pub repository_id: String,
    pub tag: String,
    pub digest: String,
    pub source: String,
    pub build_id: Option<String>,
    pub commit_sha: Option<String>,
    pub hidden: bool,
    pub pushed_at: String,
}

pub struct NewVersion<'a> {
    pub repository_id: &'a str,
    pub tag: &'a str,
    pub digest: &'a str,
    pub source: &'a str,
    pub build_id: Option<&'a str>,
    pub commit_sha: Option<&'a str>,
}

/// Records a tag's (new) digest; an overwritten tag keeps its row.
pub async fn upsert(db: &Db, v: &NewVersion<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO versions (repository_id, tag, digest, source, build_id, commit_sha, hidden, pushed_at) \
         VALUES (?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT (repository_id, tag) DO UPDATE SET digest = excluded.digest, \
         source = excluded.source, build_id = excluded.build_id, commit_sha = excluded.commit_sha, pushed_at = excluded.pushed_at",
    )
    .bind(v.repository_id)
    .bind(v.tag)
    .bind(v.digest)
    .bind(v.source)
    .bind(v.build_id)
    .bind(v.commit_sha)
    .bind(now())
    .execute(db)
    .await?;
    Ok(())
}

pub async fn list(
    db: &Db,
    repository_id: &str,
    include_hidden: bool,
) -> Result<Vec<VersionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM versions WHERE repository_id = ? AND (? OR hidden = 0) ORDER BY pushed_at DESC, tag",
    )
    .bind(repository_id)
    .bind(include_hidden)
    .fetch_all(db)
    .await
}
