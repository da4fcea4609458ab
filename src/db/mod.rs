//! The only place SQL lives. Free functions over an executor, `*Row` structs, newtype ids, TEXT enums.

pub mod builds;
pub mod deliveries;
pub mod events;
pub mod namespaces;
pub mod repos;
pub mod rules;
pub mod sources;
pub mod stats;
pub mod tokens;
pub mod versions;
pub mod webhooks;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub type Db = sqlx::SqlitePool;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens (creating if missing) the database in WAL mode and applies every migration.
pub async fn connect(url: &str) -> anyhow::Result<Db> {
    let options = SqliteConnectOptions::from_str(url)
        .with_context(|| format!("invalid database URL {url}"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open database {url}"))?;
    MIGRATOR
        .run(&pool)
        .await
        .with_context(|| format!("cannot migrate database {url}"))?;
    Ok(pool)
}

/// A write transaction. `BEGIN IMMEDIATE` takes the write lock at the start, so a busy database makes it
/// wait (busy_timeout) instead of failing at once when a read inside the transaction would have to be
/// upgraded to a write while another connection writes ("database is locked").
pub async fn write_tx(db: &Db) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
    db.begin_with("BEGIN IMMEDIATE").await
}

/// Now, as the RFC 3339 UTC text stored everywhere (fixed width, so text order is time order).
pub fn now() -> String {
    format_time(chrono::Utc::now())
}

pub fn format_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A fresh id: UUID v7, so ids sort by creation time (the list cursors rely on it).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Is this error the named UNIQUE/CHECK constraint (or any unique violation when `name` is empty)?
pub fn is_constraint(err: &sqlx::Error, name: &str) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.is_unique_violation()
                && (name.is_empty() || db.message().contains(name) || db.constraint() == Some(name))
        }
        _ => false,
    }
}

/// A page request: newest first, starting after `cursor` (an id).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub limit: i64,
    pub cursor: Option<String>,
}

impl Page {
    pub const MAX: i64 = 200;
    pub const DEFAULT: i64 = 50;
    /// The cursor as a comparable id; with no cursor, one that sorts after every id.
    pub fn before(&self) -> &str {
        self.cursor.as_deref().unwrap_or("~")
    }
}
