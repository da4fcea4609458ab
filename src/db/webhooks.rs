use super::secrets::WEBHOOKS_SECRET;
use super::{Db, new_id, now};
use crate::secrets::Cipher;
use crate::secrets::cipher::place;

#[derive(Clone, sqlx::FromRow)]
pub struct WebhookRow {
    pub id: String,
    pub repository_id: String,
    pub name: String,
    pub url: String,
    // The secret is not in the row: it is stored encrypted and read, decrypted, only to sign
    // (`signing_secret`); never returned by the API after creation, never logged.
    /// JSON array of event names.
    pub events: String,
    pub tag_filter: Option<String>,
    pub payload_format: String,
    pub active: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl std::fmt::Debug for WebhookRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRow")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("url", &self.url)
            .finish()
    }
}

impl WebhookRow {
    pub fn event_list(&self) -> Vec<String> {
        serde_json::from_str(&self.events).unwrap_or_default()
    }
}

pub const NAME_UNIQUE: &str = "webhooks.repository_id, webhooks.name";

pub struct WebhookFields {
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    pub tag_filter: Option<String>,
    pub payload_format: String,
    pub active: bool,
}

/// A new subscription; its secret is stored encrypted with `cipher`.
pub async fn insert(
    db: &Db,
    cipher: &Cipher,
    repository_id: &str,
    f: &WebhookFields,
    secret: &str,
) -> Result<WebhookRow, sqlx::Error> {
    let ts = now();
    let id = new_id();
    let secret = cipher.seal(secret, &place(WEBHOOKS_SECRET, &id));
    sqlx::query_as(
        "INSERT INTO webhooks (id, repository_id, name, url, secret, events, tag_filter, payload_format, active, \
         created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
    )
    .bind(&id)
    .bind(repository_id)
    .bind(&f.name)
    .bind(&f.url)
    .bind(&secret)
    .bind(serde_json::to_string(&f.events).unwrap_or_else(|_| "[]".into()))
    .bind(&f.tag_filter)
    .bind(&f.payload_format)
    .bind(f.active)
    .bind(&ts)
    .bind(&ts)
    .fetch_all(db)
    .await
    .and_then(super::one_returned)
}

/// Updates the fields, and the secret (encrypted with `cipher`) when `secret` is Some.
pub async fn update(
    db: &Db,
    cipher: &Cipher,
    id: &str,
    f: &WebhookFields,
    secret: Option<&str>,
) -> Result<WebhookRow, sqlx::Error> {
    let secret = secret.map(|s| cipher.seal(s, &place(WEBHOOKS_SECRET, id)));
    sqlx::query_as(
        "UPDATE webhooks SET name = ?, url = ?, events = ?, tag_filter = ?, payload_format = ?, active = ?, \
         secret = COALESCE(?, secret), updated_at = ? WHERE id = ? RETURNING *",
    )
    .bind(&f.name)
    .bind(&f.url)
    .bind(serde_json::to_string(&f.events).unwrap_or_else(|_| "[]".into()))
    .bind(&f.tag_filter)
    .bind(&f.payload_format)
    .bind(f.active)
    .bind(&secret)
    .bind(now())
    .bind(id)
    .fetch_all(db)
    .await
    .and_then(super::one_returned)
}

pub async fn list<'e, E: sqlx::SqliteExecutor<'e>>(
    db: E,
    repository_id: &str,
) -> Result<Vec<WebhookRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM webhooks WHERE repository_id = ? ORDER BY created_at, id")
        .bind(repository_id)
        .fetch_all(db)
        .await
}

pub async fn get(db: &Db, id: &str) -> Result<Option<WebhookRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM webhooks WHERE id = ?")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// The subscription's secret, decrypted: what its deliveries are signed with. None when there is no
/// such subscription; a decode error naming the row when the stored value does not open.
pub async fn signing_secret(
    db: &Db,
    cipher: &Cipher,
    id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let stored: Option<(String,)> = sqlx::query_as("SELECT secret FROM webhooks WHERE id = ?")
        .bind(id)
        .fetch_optional(db)
        .await?;
    stored
        .map(|(s,)| {
            cipher.open(&s, &place(WEBHOOKS_SECRET, id)).map_err(|e| {
                sqlx::Error::Decode(format!("{WEBHOOKS_SECRET} of webhook {id}: {e}").into())
            })
        })
        .transpose()
}

pub async fn delete(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM webhooks WHERE id = ?")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}
