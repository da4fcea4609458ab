//! The audit log: who changed what, when, from where (one row per accepted change).

use super::{Db, Page, new_id, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: String,
    pub at: String,
    pub token_id: Option<String>,
    pub token_name: String,
    pub via: String,
    pub method: String,
    pub route: String,
    pub path: String,
    pub namespace: Option<String>,
    pub repository: Option<String>,
    pub status: i64,
    pub address: Option<String>,
}

/// A change to record; `at` and `id` are given on insert.
#[derive(Debug, Clone)]
pub struct NewAuditRecord<'a> {
    pub token_id: Option<&'a str>,
    pub token_name: &'a str,
    /// `api` or `console`.
    pub via: &'a str,
    pub method: &'a str,
    pub route: &'a str,
    pub path: &'a str,
    pub namespace: Option<&'a str>,
    pub repository: Option<&'a str>,
    pub status: u16,
    pub address: Option<&'a str>,
}

pub async fn insert(db: &Db, r: &NewAuditRecord<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (id, at, token_id, token_name, via, method, route, path, namespace, repository, status, address) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(new_id())
    .bind(now())
    .bind(r.token_id)
    .bind(r.token_name)
    .bind(r.via)
    .bind(r.method)
    .bind(r.route)
    .bind(r.path)
    .bind(r.namespace)
    .bind(r.repository)
    .bind(i64::from(r.status))
    .bind(r.address)
    .execute(db)
    .await?;
    Ok(())
}

/// Newest first, after the page's cursor; only namespace `namespace` when given.
pub async fn list(
    db: &Db,
    namespace: Option<&str>,
    page: &Page,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM audit_log WHERE (? IS NULL OR namespace = ?) AND id < ? \
         ORDER BY id DESC LIMIT ?",
    )
    .bind(namespace)
    .bind(namespace)
    .bind(page.before())
    .bind(page.limit)
    .fetch_all(db)
    .await
}

/// Deletes the records made before `cutoff` (an RFC 3339 time); returns how many.
pub async fn prune(db: &Db, cutoff: &str) -> Result<u64, sqlx::Error> {
    let r = sqlx::query("DELETE FROM audit_log WHERE at < ?")
        .bind(cutoff)
        .execute(db)
        .await?;
    Ok(r.rows_affected())
}
