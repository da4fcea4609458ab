use super::{Db, new_id, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub namespace: Option<String>,
    pub role: String,
    pub token_hash: String,
    pub expires_at: Option<String>,
    pub created_at: String,
}

pub struct NewToken<'a> {
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    pub role: &'a str,
    pub token_hash: &'a str,
    pub expires_at: Option<&'a str>,
}

pub async fn insert(db: &Db, t: &NewToken<'_>) -> Result<TokenRow, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO tokens (id, name, namespace, role, token_hash, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) \
         RETURNING *",
    )
    .bind(new_id())
    .bind(t.name)
    .bind(t.namespace)
    .bind(t.role)
    .bind(t.token_hash)
    .bind(t.expires_at)
    .bind(now())
    .fetch_all(db)
    .await
    .and_then(super::one_returned)
}

pub async fn by_hash(db: &Db, hash: &str) -> Result<Option<TokenRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM tokens WHERE token_hash = ?")
        .bind(hash)
        .fetch_optional(db)
        .await
}

pub async fn list(db: &Db) -> Result<Vec<TokenRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM tokens ORDER BY id DESC")
        .fetch_all(db)
        .await
}

pub async fn count(db: &Db) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tokens")
        .fetch_one(db)
        .await?;
    Ok(n)
}

pub async fn delete(db: &Db, id: &str) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("DELETE FROM tokens WHERE id = ?")
        .bind(id)
        .execute(db)
        .await?;
    Ok(r.rows_affected() > 0)
}
