//! Every secret column as stored (encrypted, or plaintext from an older kiln): for encrypting
//! plaintext values at start and re-encrypting them all with a new key (`crate::secrets::upgrade`).

use sqlx::SqliteConnection;

use super::Db;

/// The secret columns, as `table.column` (also the first part of each value's associated data).
pub const SOURCES_WEBHOOK_SECRET: &str = "sources.webhook_secret";
pub const SOURCES_CREDENTIALS: &str = "sources.credentials";
pub const WEBHOOKS_SECRET: &str = "webhooks.secret";
pub const INTEGRATIONS_SECRET: &str = "integrations.secret";

/// One stored secret value and where it is.
pub struct StoredSecret {
    pub column: &'static str,
    /// The row's id (`sources.repository_id`, `webhooks.id`, `integrations.id`).
    pub row_id: String,
    /// As stored: `enc:v1:…`, or plaintext.
    pub stored: String,
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSecret")
            .field("column", &self.column)
            .field("row_id", &self.row_id)
            .finish_non_exhaustive()
    }
}

/// Every stored secret value.
pub async fn all(conn: &mut SqliteConnection) -> Result<Vec<StoredSecret>, sqlx::Error> {
    let mut found = Vec::new();
    let sources: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT repository_id, webhook_secret, credentials FROM sources")
            .fetch_all(&mut *conn)
            .await?;
    for (row_id, secret, credentials) in sources {
        if let Some(credentials) = credentials {
            found.push(StoredSecret {
                column: SOURCES_CREDENTIALS,
                row_id: row_id.clone(),
                stored: credentials,
            });
        }
        found.push(StoredSecret {
            column: SOURCES_WEBHOOK_SECRET,
            row_id,
            stored: secret,
        });
    }
    let hooks: Vec<(String, String)> = sqlx::query_as("SELECT id, secret FROM webhooks")
        .fetch_all(&mut *conn)
        .await?;
    found.extend(hooks.into_iter().map(|(row_id, stored)| StoredSecret {
        column: WEBHOOKS_SECRET,
        row_id,
        stored,
    }));
    let integrations: Vec<(String, String)> = sqlx::query_as("SELECT id, secret FROM integrations")
        .fetch_all(&mut *conn)
        .await?;
    found.extend(
        integrations
            .into_iter()
            .map(|(row_id, stored)| StoredSecret {
                column: INTEGRATIONS_SECRET,
                row_id,
                stored,
            }),
    );
    Ok(found)
}

/// Replaces one stored value.
pub async fn store(
    conn: &mut SqliteConnection,
    secret: &StoredSecret,
    stored: &str,
) -> Result<(), sqlx::Error> {
    let sql = match secret.column {
        SOURCES_WEBHOOK_SECRET => "UPDATE sources SET webhook_secret = ? WHERE repository_id = ?",
        SOURCES_CREDENTIALS => "UPDATE sources SET credentials = ? WHERE repository_id = ?",
        INTEGRATIONS_SECRET => "UPDATE integrations SET secret = ? WHERE id = ?",
        _ => "UPDATE webhooks SET secret = ? WHERE id = ?",
    };
    sqlx::query(sql)
        .bind(stored)
        .bind(&secret.row_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A connection that overwrites what it deletes or replaces (`PRAGMA secure_delete`), so a
/// plaintext value replaced by its encrypted form leaves no copy in free space.
pub async fn overwriting_connection(
    db: &Db,
) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, sqlx::Error> {
    let mut conn = db.acquire().await?;
    sqlx::query("PRAGMA secure_delete = ON")
        .execute(&mut *conn)
        .await?;
    Ok(conn)
}

/// Back to the default before the connection returns to the pool; after a change, moves the
/// write-ahead log into the database and empties it (it held the replaced pages).
pub async fn finish_overwriting(
    conn: &mut SqliteConnection,
    changed: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query("PRAGMA secure_delete = OFF")
        .execute(&mut *conn)
        .await?;
    if changed {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
