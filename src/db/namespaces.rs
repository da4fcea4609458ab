use super::{Db, new_id, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NamespaceRow {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

pub const NAME_UNIQUE: &str = "namespaces.name";

pub async fn insert(db: &Db, name: &str) -> Result<NamespaceRow, sqlx::Error> {
    sqlx::query_as("INSERT INTO namespaces (id, name, created_at) VALUES (?, ?, ?) RETURNING *")
        .bind(new_id())
        .bind(name)
        .bind(now())
        .fetch_all(db)
        .await
        .and_then(super::one_returned)
}

pub async fn list(db: &Db, visible: Option<&str>) -> Result<Vec<NamespaceRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM namespaces WHERE (?1 IS NULL OR name = ?1) ORDER BY id DESC")
        .bind(visible)
        .fetch_all(db)
        .await
}

pub async fn by_name(db: &Db, name: &str) -> Result<Option<NamespaceRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM namespaces WHERE name = ?")
        .bind(name)
        .fetch_optional(db)
        .await
}
