//! Console sessions: rows keyed by the SHA-256 of the cookie value (see migration 0009).

use super::{Db, format_time, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id_hash: String,
    pub token_hash: String,
    pub csrf: String,
    pub created_at: String,
    pub last_seen_at: String,
    pub expires_at: String,
}

pub async fn insert(
    db: &Db,
    id_hash: &str,
    token_hash: &str,
    csrf: &str,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    let now = now();
    sqlx::query(
        "INSERT INTO console_sessions (id_hash, token_hash, csrf, created_at, last_seen_at, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(id_hash)
    .bind(token_hash)
    .bind(csrf)
    .bind(&now)
    .bind(&now)
    .bind(format_time(expires_at))
    .execute(db)
    .await?;
    Ok(())
}

/// The live session with this id hash: not past its absolute expiry, seen since `idle_since`.
pub async fn live(
    db: &Db,
    id_hash: &str,
    idle_since: &str,
) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM console_sessions WHERE id_hash = ? AND expires_at > ? AND last_seen_at > ?",
    )
    .bind(id_hash)
    .bind(now())
    .bind(idle_since)
    .fetch_optional(db)
    .await
}

pub async fn touch(db: &Db, id_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE console_sessions SET last_seen_at = ? WHERE id_hash = ?")
        .bind(now())
        .bind(id_hash)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn delete(db: &Db, id_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM console_sessions WHERE id_hash = ?")
        .bind(id_hash)
        .execute(db)
        .await?;
    Ok(())
}

/// Forgets sessions past their absolute expiry or idle since `idle_since`.
pub async fn delete_expired(db: &Db, idle_since: &str) -> Result<u64, sqlx::Error> {
    let r = sqlx::query("DELETE FROM console_sessions WHERE expires_at <= ? OR last_seen_at <= ?")
        .bind(now())
        .bind(idle_since)
        .execute(db)
        .await?;
    Ok(r.rows_affected())
}
