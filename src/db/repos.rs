use sqlx::AssertSqlSafe;

use super::{Db, new_id, now};

/// A repository with its namespace's name and whether it has a git source.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RepoRow {
    pub id: String,
    pub namespace_id: String,
    pub namespace: String,
    pub name: String,
    pub summary: String,
    pub detail: String,
    pub category: String,
    pub hidden: bool,
    pub has_source: bool,
    pub created_at: String,
    pub updated_at: String,
}

pub const NAME_UNIQUE: &str = "repositories.namespace_id, repositories.name";

const SELECT: &str = "SELECT r.id, r.namespace_id, n.name AS namespace, r.name, r.summary, r.detail, r.category, \
     r.hidden, EXISTS (SELECT 1 FROM sources s WHERE s.repository_id = r.id) AS has_source, r.created_at, r.updated_at \
     FROM repositories r JOIN namespaces n ON n.id = r.namespace_id";

pub struct NewRepo<'a> {
    pub namespace_id: &'a str,
    pub name: &'a str,
    pub summary: &'a str,
    pub detail: &'a str,
    pub category: &'a str,
}

pub async fn insert(db: &Db, new: &NewRepo<'_>) -> Result<String, sqlx::Error> {
    let id = new_id();
    let ts = now();
    sqlx::query(
        "INSERT INTO repositories (id, namespace_id, name, summary, detail, category, hidden, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
    )
    .bind(&id)
    .bind(new.namespace_id)
    .bind(new.name)
    .bind(new.summary)
    .bind(new.detail)
    .bind(new.category)
    .bind(&ts)
    .bind(&ts)
    .execute(db)
    .await?;
    Ok(id)
}

pub async fn by_id<'e, E: sqlx::SqliteExecutor<'e>>(
    db: E,
    id: &str,
) -> Result<Option<RepoRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!("{SELECT} WHERE r.id = ?")))
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn by_name(db: &Db, namespace: &str, name: &str) -> Result<Option<RepoRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "{SELECT} WHERE n.name = ? AND r.name = ?"
    )))
    .bind(namespace)
    .bind(name)
    .fetch_optional(db)
    .await
}

/// The names (`namespace`, `name`) of the repositories that have a source, by repository id: the
/// hook path finds a plain git server's source by the name its URL gives (`crate::source_index`).
pub async fn names_with_source(db: &Db) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.id, n.name, r.name FROM repositories r JOIN namespaces n ON n.id = r.namespace_id \
         JOIN sources s ON s.repository_id = r.id",
    )
    .fetch_all(db)
    .await
}

pub async fn list(
    db: &Db,
    namespace_id: &str,
    include_hidden: bool,
) -> Result<Vec<RepoRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "{SELECT} WHERE r.namespace_id = ? AND (? OR r.hidden = 0) ORDER BY r.id DESC"
    )))
    .bind(namespace_id)
    .bind(include_hidden)
    .fetch_all(db)
    .await
}

pub async fn update_fields(
    db: &Db,
    id: &str,
    summary: &str,
    detail: &str,
    category: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE repositories SET summary = ?, detail = ?, category = ?, updated_at = ? WHERE id = ?")
        .bind(summary)
        .bind(detail)
        .bind(category)
        .bind(now())
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn set_hidden<'e, E: sqlx::SqliteExecutor<'e>>(
    db: E,
    id: &str,
    hidden: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE repositories SET hidden = ?, updated_at = ? WHERE id = ?")
        .bind(hidden)
        .bind(now())
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn delete(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM repositories WHERE id = ?")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// What the repositories list shows besides a repository's own fields: its newest build and its
/// newest visible version.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActivityRow {
    pub repository_id: String,
    pub build_id: Option<String>,
    pub build_status: Option<String>,
    pub build_created_at: Option<String>,
    pub version_tag: Option<String>,
    pub version_pushed_at: Option<String>,
}

/// The newest build and newest visible version of each of these repositories, in one query.
pub async fn activity(db: &Db, repository_ids: &[String]) -> Result<Vec<ActivityRow>, sqlx::Error> {
    if repository_ids.is_empty() {
        return Ok(vec![]);
    }
    let placeholders = vec!["?"; repository_ids.len()].join(", ");
    let sql = format!(
        "SELECT r.id AS repository_id, b.id AS build_id, b.status AS build_status, b.created_at AS build_created_at, \
         v.tag AS version_tag, v.pushed_at AS version_pushed_at \
         FROM repositories r \
         LEFT JOIN builds b ON b.id = (SELECT b2.id FROM builds b2 WHERE b2.repository_id = r.id \
             ORDER BY b2.created_at DESC, b2.id DESC LIMIT 1) \
         LEFT JOIN versions v ON v.repository_id = r.id AND v.tag = (SELECT v2.tag FROM versions v2 \
             WHERE v2.repository_id = r.id AND v2.hidden = 0 ORDER BY v2.pushed_at DESC, v2.tag DESC LIMIT 1) \
         WHERE r.id IN ({placeholders})"
    );
    let mut q = sqlx::query_as(AssertSqlSafe(sql));
    for id in repository_ids {
        q = q.bind(id);
    }
    q.fetch_all(db).await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn build(db: &Db, repo: &str, id: &str, status: &str, created_at: &str) {
        sqlx::query(
            "INSERT INTO builds (id, repository_id, trigger, git_ref, dockerfile, status, created_at) \
             VALUES (?, ?, 'manual', 'refs/heads/main', 'Dockerfile', ?, ?)",
        )
        .bind(id)
        .bind(repo)
        .bind(status)
        .bind(created_at)
        .execute(db)
        .await
        .unwrap();
    }

    async fn version(db: &Db, repo: &str, tag: &str, hidden: bool, pushed_at: &str) {
        sqlx::query(
            "INSERT INTO versions (repository_id, tag, digest, source, hidden, pushed_at) \
             VALUES (?, ?, 'sha256:00', 'push', ?, ?)",
        )
        .bind(repo)
        .bind(tag)
        .bind(hidden)
        .bind(pushed_at)
        .execute(db)
        .await
        .unwrap();
    }

    /// The list's newest build and newest visible version of each repository, in one query.
    #[tokio::test]
    async fn activity_is_the_newest_build_and_the_newest_visible_version() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::connect(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        let ns = super::super::namespaces::insert(&db, "ns").await.unwrap();
        let mut ids = Vec::new();
        for name in ["busy", "quiet", "other"] {
            let new = NewRepo {
                namespace_id: &ns.id,
                name,
                summary: "",
                detail: "",
                category: "other",
            };
            ids.push(insert(&db, &new).await.unwrap());
        }
        let (busy, quiet, other) = (&ids[0], &ids[1], &ids[2]);
        build(&db, busy, "b1", "succeeded", "2026-01-01T00:00:00Z").await;
        build(&db, busy, "b2", "failed", "2026-01-02T00:00:00Z").await;
        build(&db, other, "b3", "queued", "2026-01-03T00:00:00Z").await;
        version(&db, busy, "1.0", false, "2026-01-01T00:00:00Z").await;
        version(&db, busy, "2.0", false, "2026-01-02T00:00:00Z").await;
        version(&db, busy, "3.0", true, "2026-01-03T00:00:00Z").await;
        version(&db, other, "9.9", false, "2026-01-03T00:00:00Z").await;

        let mut rows = activity(&db, &[busy.clone(), quiet.clone()]).await.unwrap();
        rows.sort_by_key(|r| r.repository_id != *busy);
        assert_eq!(rows.len(), 2, "{rows:?}");
        let (b, q) = (&rows[0], &rows[1]);
        assert_eq!(
            (b.build_id.as_deref(), b.build_status.as_deref()),
            (Some("b2"), Some("failed"))
        );
        assert_eq!(b.build_created_at.as_deref(), Some("2026-01-02T00:00:00Z"));
        assert_eq!(
            (b.version_tag.as_deref(), b.version_pushed_at.as_deref()),
            (Some("2.0"), Some("2026-01-02T00:00:00Z"))
        );
        assert_eq!(&q.repository_id, quiet);
        assert!(q.build_id.is_none() && q.build_status.is_none() && q.version_tag.is_none());
        assert!(activity(&db, &[]).await.unwrap().is_empty());
    }
}
