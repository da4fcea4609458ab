use sqlx::AssertSqlSafe;

use super::{Db, Page, new_id, now};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildStatus {
    Queued,
    Building,
    Succeeded,
    Failed,
    Cancelled,
}

impl BuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Queued => "queued",
            BuildStatus::Building => "building",
            BuildStatus::Succeeded => "succeeded",
            BuildStatus::Failed => "failed",
            BuildStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(status: &str) -> bool {
        matches!(status, "succeeded" | "failed" | "cancelled")
    }
}

/// A build joined with its repository's names.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BuildRow {
    pub id: String,
    pub repository_id: String,
    pub namespace: String,
    pub repository: String,
    pub rule_id: Option<String>,
    pub event_id: Option<String>,
    pub trigger: String,
    pub git_ref: String,
    pub commit_sha: Option<String>,
    pub tag: Option<String>,
    pub image: Option<String>,
    pub dockerfile: String,
    pub context: String,
    pub version: String,
    pub overwrite: bool,
    pub status: String,
    pub error: Option<String>,
    pub digest: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

const SELECT: &str = "SELECT b.id, b.repository_id, n.name AS namespace, r.name AS repository, b.rule_id, b.event_id, \
     b.trigger, b.git_ref, b.commit_sha, b.tag, b.image, b.dockerfile, b.context, b.version, b.overwrite, b.status, \
     b.error, b.digest, b.created_at, b.started_at, b.finished_at \
     FROM builds b JOIN repositories r ON r.id = b.repository_id JOIN namespaces n ON n.id = r.namespace_id";

/// A build to queue. `commit_sha`/`tag` are None when the worker must resolve them ("build now" of a
/// branch head or of the newest matching tag).
pub struct NewBuild<'a> {
    pub repository_id: &'a str,
    pub rule_id: Option<&'a str>,
    pub event_id: Option<&'a str>,
    pub trigger: &'a str,
    pub git_ref: &'a str,
    pub commit_sha: Option<&'a str>,
    pub tag: Option<&'a str>,
    pub image: Option<&'a str>,
    pub dockerfile: &'a str,
    pub context: &'a str,
    pub version: &'a str,
    pub overwrite: bool,
}

pub async fn insert(
    tx: &mut sqlx::SqliteConnection,
    b: &NewBuild<'_>,
) -> Result<String, sqlx::Error> {
    let id = new_id();
    sqlx::query(
        "INSERT INTO builds (id, repository_id, rule_id, event_id, trigger, git_ref, commit_sha, tag, image, dockerfile, \
         context, version, overwrite, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?)",
    )
    .bind(&id)
    .bind(b.repository_id)
    .bind(b.rule_id)
    .bind(b.event_id)
    .bind(b.trigger)
    .bind(b.git_ref)
    .bind(b.commit_sha)
    .bind(b.tag)
    .bind(b.image)
    .bind(b.dockerfile)
    .bind(b.context)
    .bind(b.version)
    .bind(b.overwrite)
    .bind(now())
    .execute(&mut *tx)
    .await?;
    Ok(id)
}

pub async fn get<'e, E: sqlx::SqliteExecutor<'e>>(
    db: E,
    id: &str,
) -> Result<Option<BuildRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!("{SELECT} WHERE b.id = ?")))
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn list_for_repo(
    db: &Db,
    repository_id: &str,
    page: &Page,
) -> Result<Vec<BuildRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "{SELECT} WHERE b.repository_id = ? AND b.id < ? ORDER BY b.id DESC LIMIT ?"
    )))
    .bind(repository_id)
    .bind(page.before())
    .bind(page.limit)
    .fetch_all(db)
    .await
}

/// Claims the oldest queued build for a worker: `queued` → `building`, atomically.
pub async fn claim_next(db: &Db) -> Result<Option<BuildRow>, sqlx::Error> {
    let claimed: Option<(String,)> = sqlx::query_as(
        "UPDATE builds SET status = 'building', started_at = ? \
         WHERE id = (SELECT id FROM builds WHERE status = 'queued' ORDER BY id LIMIT 1) AND status = 'queued' \
         RETURNING id",
    )
    .bind(now())
    .fetch_optional(db)
    .await?;
    match claimed {
        Some((id,)) => get(db, &id).await,
        None => Ok(None),
    }
}

/// The worker found the commit and the tag it builds.
pub async fn set_target(
    db: &Db,
    id: &str,
    git_ref: &str,
    commit: &str,
    tag: &str,
    image: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE builds SET git_ref = ?, commit_sha = ?, tag = ?, image = ? WHERE id = ?")
        .bind(git_ref)
        .bind(commit)
        .bind(tag)
        .bind(image)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Ends a running build. Returns false when it was no longer `building` (cancelled meanwhile).
pub async fn finish<'e, E: sqlx::SqliteExecutor<'e>>(
    db: E,
    id: &str,
    status: BuildStatus,
    error: Option<&str>,
    digest: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE builds SET status = ?, error = ?, digest = ?, finished_at = ? WHERE id = ? AND status = 'building'",
    )
    .bind(status.as_str())
    .bind(error)
    .bind(digest)
    .bind(now())
    .bind(id)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Cancels a queued or running build; returns the status it had (None: no such build).
pub async fn cancel(db: &Db, id: &str) -> Result<Option<String>, sqlx::Error> {
    let mut tx = super::write_tx(db).await?;
    let before: Option<(String,)> = sqlx::query_as("SELECT status FROM builds WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some((status,)) = &before
        && (status == "queued" || status == "building")
    {
        sqlx::query("UPDATE builds SET status = 'cancelled', error = 'cancelled by user', finished_at = ? WHERE id = ?")
            .bind(now())
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(before.map(|(s,)| s))
}

/// At start: builds a crash left `building` cannot resume; they end `failed` ("interrupted").
pub async fn fail_interrupted(db: &Db) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE builds SET status = 'failed', error = 'interrupted: kiln stopped during the build', finished_at = ? \
         WHERE status = 'building'",
    )
    .bind(now())
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

pub async fn status(db: &Db, id: &str) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as("SELECT status FROM builds WHERE id = ?")
        .bind(id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|(s,)| s))
}

pub async fn append_log(
    db: &Db,
    id: &str,
    first_seq: i64,
    lines: &[String],
) -> Result<(), sqlx::Error> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut tx = super::write_tx(db).await?;
    for (i, line) in lines.iter().enumerate() {
        sqlx::query("INSERT INTO build_log_lines (build_id, seq, line) VALUES (?, ?, ?)")
            .bind(id)
            .bind(first_seq + i as i64)
            .bind(line)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// Log lines with seq > `after`, in order.
pub async fn log_lines(db: &Db, id: &str, after: i64) -> Result<Vec<(i64, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, line FROM build_log_lines WHERE build_id = ? AND seq > ? ORDER BY seq",
    )
    .bind(id)
    .bind(after)
    .fetch_all(db)
    .await
}

/// Is a build of this repository and tag running now? (It will record the version itself.)
pub async fn running_with_tag(
    db: &Db,
    repository_id: &str,
    tag: &str,
) -> Result<bool, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM builds WHERE repository_id = ? AND tag = ? AND status = 'building' LIMIT 1",
    )
    .bind(repository_id)
    .bind(tag)
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
}

/// (event id, build id) pairs of builds created by these events.
pub async fn for_events(
    db: &Db,
    event_ids: &[String],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    if event_ids.is_empty() {
        return Ok(vec![]);
    }
    let placeholders = vec!["?"; event_ids.len()].join(", ");
    let sql =
        format!("SELECT event_id, id FROM builds WHERE event_id IN ({placeholders}) ORDER BY id");
    let mut q = sqlx::query_as(AssertSqlSafe(sql));
    for id in event_ids {
        q = q.bind(id);
    }
    q.fetch_all(db).await
}
