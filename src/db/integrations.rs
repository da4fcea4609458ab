//! A namespace's integration with a git host (issue 12): its credentials (the secret encrypted)
//! and what the host said about them at the last check.

use super::secrets::INTEGRATIONS_SECRET;
use super::{Db, new_id, now};
use crate::secrets::Cipher;
use crate::secrets::cipher::place;

/// An integration, its secret decrypted (the token, or a GitHub App's private key). Never
/// returned by the API, never logged.
#[derive(Clone)]
pub struct IntegrationRow {
    pub id: String,
    pub namespace_id: String,
    pub provider: String,
    /// `token` or `app`.
    pub kind: String,
    pub base_url: String,
    pub secret: String,
    pub app_id: Option<i64>,
    pub installation_id: Option<i64>,
    pub account: Option<String>,
    pub account_kind: Option<String>,
    pub scopes: Vec<String>,
    pub last_checked_at: Option<String>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl std::fmt::Debug for IntegrationRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntegrationRow")
            .field("id", &self.id)
            .field("namespace_id", &self.namespace_id)
            .field("provider", &self.provider)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("secret", &"[redacted]")
            .field("app_id", &self.app_id)
            .field("installation_id", &self.installation_id)
            .finish_non_exhaustive()
    }
}

#[derive(sqlx::FromRow)]
struct StoredIntegration {
    id: String,
    namespace_id: String,
    provider: String,
    kind: String,
    base_url: String,
    secret: String,
    app_id: Option<i64>,
    installation_id: Option<i64>,
    account: Option<String>,
    account_kind: Option<String>,
    scopes: String,
    last_checked_at: Option<String>,
    last_error: Option<String>,
    created_at: String,
    updated_at: String,
}

impl StoredIntegration {
    /// Decrypts the secret and registers it with the masker.
    fn open(self, cipher: &Cipher) -> Result<IntegrationRow, sqlx::Error> {
        let secret = cipher
            .open(&self.secret, &place(INTEGRATIONS_SECRET, &self.id))
            .map_err(|e| {
                sqlx::Error::Decode(format!("{INTEGRATIONS_SECRET} of {}: {e}", self.id).into())
            })?;
        crate::secrets::mask::register_all([secret.as_str()]);
        Ok(IntegrationRow {
            id: self.id,
            namespace_id: self.namespace_id,
            provider: self.provider,
            kind: self.kind,
            base_url: self.base_url,
            secret,
            app_id: self.app_id,
            installation_id: self.installation_id,
            account: self.account,
            account_kind: self.account_kind,
            scopes: serde_json::from_str(&self.scopes).unwrap_or_default(),
            last_checked_at: self.last_checked_at,
            last_error: self.last_error,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

pub struct NewIntegration<'a> {
    pub namespace_id: &'a str,
    pub provider: &'a str,
    pub kind: &'a str,
    pub base_url: &'a str,
    pub secret: &'a str,
    pub app_id: Option<i64>,
    pub installation_id: Option<i64>,
    pub account: &'a str,
    pub account_kind: &'a str,
    pub scopes: &'a [String],
}

/// Creates or replaces the namespace's integration with `provider` (checked just now: the check's
/// time is stored, its error cleared).
pub async fn upsert(
    db: &Db,
    cipher: &Cipher,
    i: &NewIntegration<'_>,
) -> Result<IntegrationRow, sqlx::Error> {
    let mut tx = super::write_tx(db).await?;
    let existing: Option<(String,)> =
        sqlx::query_as("SELECT id FROM integrations WHERE namespace_id = ? AND provider = ?")
            .bind(i.namespace_id)
            .bind(i.provider)
            .fetch_optional(&mut *tx)
            .await?;
    let id = existing.map(|(id,)| id).unwrap_or_else(new_id);
    let secret = cipher.seal(i.secret, &place(INTEGRATIONS_SECRET, &id));
    let at = now();
    let stored: StoredIntegration = sqlx::query_as(
        "INSERT INTO integrations (id, namespace_id, provider, kind, base_url, secret, app_id, \
         installation_id, account, account_kind, scopes, last_checked_at, last_error, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?) \
         ON CONFLICT (namespace_id, provider) DO UPDATE SET kind = excluded.kind, \
         base_url = excluded.base_url, secret = excluded.secret, app_id = excluded.app_id, \
         installation_id = excluded.installation_id, account = excluded.account, \
         account_kind = excluded.account_kind, scopes = excluded.scopes, \
         last_checked_at = excluded.last_checked_at, last_error = NULL, updated_at = excluded.updated_at \
         RETURNING *",
    )
    .bind(&id)
    .bind(i.namespace_id)
    .bind(i.provider)
    .bind(i.kind)
    .bind(i.base_url)
    .bind(&secret)
    .bind(i.app_id)
    .bind(i.installation_id)
    .bind(i.account)
    .bind(i.account_kind)
    .bind(serde_json::to_string(i.scopes).unwrap_or_else(|_| "[]".into()))
    .bind(&at)
    .bind(&at)
    .bind(&at)
    .fetch_all(&mut *tx)
    .await
    .and_then(super::one_returned)?;
    tx.commit().await?;
    stored.open(cipher)
}

pub async fn get(
    db: &Db,
    cipher: &Cipher,
    namespace_id: &str,
    provider: &str,
) -> Result<Option<IntegrationRow>, sqlx::Error> {
    let stored: Option<StoredIntegration> =
        sqlx::query_as("SELECT * FROM integrations WHERE namespace_id = ? AND provider = ?")
            .bind(namespace_id)
            .bind(provider)
            .fetch_optional(db)
            .await?;
    stored.map(|s| s.open(cipher)).transpose()
}

/// The namespace's integrations, by provider.
pub async fn for_namespace(
    db: &Db,
    cipher: &Cipher,
    namespace_id: &str,
) -> Result<Vec<IntegrationRow>, sqlx::Error> {
    let stored: Vec<StoredIntegration> =
        sqlx::query_as("SELECT * FROM integrations WHERE namespace_id = ? ORDER BY provider")
            .bind(namespace_id)
            .fetch_all(db)
            .await?;
    stored.into_iter().map(|s| s.open(cipher)).collect()
}

/// Records what the host said the last time kiln used the credentials (`error` None: it worked).
pub async fn record_check(db: &Db, id: &str, error: Option<&str>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE integrations SET last_checked_at = ?, last_error = ? WHERE id = ?")
        .bind(now())
        .bind(error)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Deletes the namespace's integration with `provider`; its id, or None when there was none.
pub async fn delete(
    db: &Db,
    namespace_id: &str,
    provider: &str,
) -> Result<Option<String>, sqlx::Error> {
    let deleted: Option<(String,)> = sqlx::query_as(
        "DELETE FROM integrations WHERE namespace_id = ? AND provider = ? RETURNING id",
    )
    .bind(namespace_id)
    .bind(provider)
    .fetch_optional(db)
    .await?;
    Ok(deleted.map(|(id,)| id))
}
