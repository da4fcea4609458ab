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
