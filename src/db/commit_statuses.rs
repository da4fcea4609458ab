//! The commit status outbox (issue 12): a row per status to set on the git host, queued in the
//! transaction that changes the build, delivered in order per (provider, repository, sha,
//! context) by `crate::forge::statuses`.

use super::{Db, new_id, now};
use crate::domain::commit_status;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CommitStatusRow {
    pub id: String,
    pub build_id: String,
    pub namespace_id: String,
    pub provider: String,
    /// `owner/name` on the host.
    pub repository: String,
    pub sha: String,
    /// A [`crate::forge::client::StatusState`] as text.
    pub state: String,
    pub context: String,
    pub description: String,
    pub target_url: Option<String>,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: String,
    pub response_status: Option<i64>,
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(sqlx::FromRow)]
struct BuildForStatus {
    status: String,
    tag: Option<String>,
    error: Option<String>,
    commit_sha: String,
    git_ref: String,
    rule_name: Option<String>,
    provider: String,
    repository: String,
    namespace_id: String,
}

/// Queues the status of build `build_id` as it is now, on the caller's connection (inside the
/// transaction that changed the build). Nothing for a build whose source is not linked through
/// its namespace's integration, or whose commit is not known yet. Returns whether a row was queued.
pub async fn queue_for_build(
    conn: &mut sqlx::SqliteConnection,
    build_id: &str,
) -> Result<bool, sqlx::Error> {
    let build: Option<BuildForStatus> = sqlx::query_as(
        "SELECT b.status, b.tag, b.error, b.commit_sha, b.git_ref, ru.name AS rule_name, \
         s.provider, s.repository, r.namespace_id \
         FROM builds b JOIN repositories r ON r.id = b.repository_id \
         JOIN sources s ON s.repository_id = b.repository_id \
         JOIN integrations i ON i.namespace_id = r.namespace_id AND i.provider = s.provider \
         LEFT JOIN rules ru ON ru.id = b.rule_id \
         WHERE b.id = ? AND s.repository IS NOT NULL AND b.commit_sha IS NOT NULL",
    )
    .bind(build_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(b) = build else {
        return Ok(false);
    };
    let Some((state, description)) =
        commit_status::for_build(&b.status, b.tag.as_deref(), b.error.as_deref())
    else {
        return Ok(false);
    };
    let at = now();
    sqlx::query(
        "INSERT INTO commit_statuses (id, build_id, namespace_id, provider, repository, sha, state, \
         context, description, status, attempts, next_attempt_at, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
    )
    .bind(new_id())
    .bind(build_id)
    .bind(&b.namespace_id)
    .bind(&b.provider)
    .bind(&b.repository)
    .bind(&b.commit_sha)
    .bind(state.as_str())
    .bind(commit_status::context(b.rule_name.as_deref(), &b.git_ref))
    .bind(&description)
    .bind(&at)
    .bind(&at)
    .bind(&at)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// [`queue_for_build`] for each of `build_ids`.
pub async fn queue_for_builds(
    conn: &mut sqlx::SqliteConnection,
    build_ids: &[String],
) -> Result<(), sqlx::Error> {
    for id in build_ids {
        queue_for_build(conn, id).await?;
    }
    Ok(())
}

/// Statuses due now, oldest first, at most `limit`: only the first pending one of each
/// (provider, repository, sha, context), so they reach the host in the order they were queued.
pub async fn due(db: &Db, limit: i64) -> Result<Vec<CommitStatusRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.* FROM commit_statuses c WHERE c.status = 'pending' AND c.next_attempt_at <= ? \
         AND NOT EXISTS (SELECT 1 FROM commit_statuses e WHERE e.status = 'pending' \
           AND e.provider = c.provider AND e.repository = c.repository AND e.sha = c.sha \
           AND e.context = c.context AND e.id < c.id) \
         ORDER BY c.id LIMIT ?",
    )
    .bind(now())
    .bind(limit)
    .fetch_all(db)
    .await
}

/// When the next pending status is due, if any is.
pub async fn next_due(db: &Db) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT MIN(next_attempt_at) FROM commit_statuses WHERE status = 'pending'")
            .fetch_optional(db)
            .await?;
    Ok(row.and_then(|(t,)| t))
}

/// What one attempt to set a status came to.
pub struct Attempt<'a> {
    /// `succeeded`, `failed` (given up) or `pending` (tried again at `next_attempt_at`).
    pub status: &'a str,
    pub target_url: &'a str,
    pub response_status: Option<u16>,
    pub error: Option<&'a str>,
    pub next_attempt_at: &'a str,
}

pub async fn record_attempt(db: &Db, id: &str, a: &Attempt<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE commit_statuses SET status = ?, target_url = ?, attempts = attempts + 1, \
         response_status = ?, error = ?, next_attempt_at = ?, updated_at = ? WHERE id = ?",
    )
    .bind(a.status)
    .bind(a.target_url)
    .bind(a.response_status.map(i64::from))
    .bind(a.error)
    .bind(a.next_attempt_at)
    .bind(now())
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// A build's statuses, in the order they were queued.
pub async fn for_build(db: &Db, build_id: &str) -> Result<Vec<CommitStatusRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM commit_statuses WHERE build_id = ? ORDER BY id")
        .bind(build_id)
        .fetch_all(db)
        .await
}
