//! The only place SQL lives. Free functions over an executor, `*Row` structs, newtype ids, TEXT enums.

pub mod audit;
pub mod builds;
pub mod commit_statuses;
pub mod deliveries;
pub mod events;
pub mod integrations;
pub mod namespaces;
pub mod repos;
pub mod rules;
pub mod secrets;
pub mod sessions;
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

fn options(url: &str) -> anyhow::Result<SqliteConnectOptions> {
    Ok(SqliteConnectOptions::from_str(url)
        .with_context(|| format!("invalid database URL {url}"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10)))
}

/// Opens (creating if missing) the database in WAL mode and applies every migration.
///
/// Pooled connections commit with `synchronous=NORMAL`: a commit survives a crash of kiln, and a power
/// loss may take the last commits back. What an outside party was told is stored (an answered hook
/// delivery) goes through [`connect_durable`] instead.
pub async fn connect(url: &str) -> anyhow::Result<Db> {
    let options = options(url)?;
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        // A local SQLite connection does not go stale: no ping before every use (a round trip to the
        // connection's worker thread per query).
        .test_before_acquire(false)
        // A connection whose transaction SQLite ended by itself (a full disk) is not reused.
        .after_release(|conn, _| Box::pin(async move { Ok(connection_is_clean(conn).await) }))
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open database {url}"))?;
    MIGRATOR
        .run(&pool)
        .await
        .with_context(|| format!("cannot migrate database {url}"))?;
    Ok(pool)
}

/// The ingest writer's connection, outside the pool. Its commits do not wait for the disk
/// (`synchronous=NORMAL`) and it never checkpoints by itself (`wal_autocheckpoint=0`): the writer
/// makes its commits durable with one `fdatasync` of the WAL file per group, beside the writing
/// ([`crate::ingest`]), and checkpoints are run by [`checkpoint`] from the pool, off its path.
///
/// Its statement journals are kept in memory (`temp_store=MEMORY`): a batch's multi-row insert
/// copies every page it changes into one, in case the statement must be undone, and SQLite spills
/// one past 64 KiB into a temporary file; that file's writes were 7.6% of kiln's CPU under the
/// ingest bench. A journal holds at most the pages one batch changes (a few MiB at [`crate::ingest::MAX_BATCH`]).
pub async fn connect_writer(url: &str) -> anyhow::Result<sqlx::SqliteConnection> {
    use sqlx::ConnectOptions;
    options(url)?
        .pragma("wal_autocheckpoint", "0")
        .pragma("temp_store", "MEMORY")
        .connect()
        .await
        .with_context(|| format!("cannot open database {url}"))
}

/// The WAL file of the database `conn` has open (`{file}-wal`).
pub async fn wal_path(
    conn: &mut sqlx::SqliteConnection,
) -> Result<std::path::PathBuf, sqlx::Error> {
    let (file,): (String,) =
        sqlx::query_as("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(&mut *conn)
            .await?;
    if file.is_empty() {
        return Err(sqlx::Error::Protocol(
            "the database has no file (in memory)".into(),
        ));
    }
    Ok(std::path::PathBuf::from(format!("{file}-wal")))
}

/// What a checkpoint did: frames in the WAL, and frames of them now copied into the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointed {
    pub wal_frames: i64,
    pub copied: i64,
}

/// Copies what the WAL holds into the database without waiting for anyone (`PASSIVE`): on `conn`,
/// a pooled connection (the writer never checkpoints by itself) or the writer's when it is asked to.
pub async fn checkpoint<'e, E: sqlx::SqliteExecutor<'e>>(
    conn: E,
) -> Result<Checkpointed, sqlx::Error> {
    let (_busy, wal_frames, copied): (i64, i64, i64) =
        sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(conn)
            .await?;
    Ok(Checkpointed { wal_frames, copied })
}

/// Can this connection start a transaction again? On some errors (`SQLITE_FULL` among them) SQLite
/// rolls the transaction back by itself; the ROLLBACK sqlx then sends fails ("no transaction is
/// active") and sqlx goes on counting the transaction as open, so every later `BEGIN IMMEDIATE` on
/// that connection would be refused ("non-zero transaction depth") for good. Such a connection is
/// closed (the pool's `after_release`, the ingest writer) and a new one opened. Costs nothing when no
/// transaction was left behind.
pub async fn connection_is_clean(conn: &mut sqlx::SqliteConnection) -> bool {
    use sqlx::Connection;
    if !conn.is_in_transaction() {
        return true;
    }
    // A dropped transaction's rollback is queued: let it run, then look again.
    conn.ping().await.is_ok() && !conn.is_in_transaction()
}

/// The one row a write's `RETURNING` gave, read with `fetch_all`, never `fetch_one`/`fetch_optional`:
/// those stop stepping the statement after its first row and reset it, and outside a transaction
/// SQLite commits the write at that reset, whose error sqlx drops. A write refused at its commit (a
/// full disk) would then be answered as done and be gone. Stepping to the end makes the commit's
/// error the statement's.
pub fn one_returned<T>(rows: Vec<T>) -> Result<T, sqlx::Error> {
    rows.into_iter().next().ok_or(sqlx::Error::RowNotFound)
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

/// Did this fail because the disk holding the database is full? SQLite says `SQLITE_FULL` (13,
/// "database or disk is full") when a write finds no space, whatever the file (database, WAL,
/// journal); an I/O error of ours says `ENOSPC` / `StorageFull`.
pub fn is_storage_full(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            // The primary result code is the low byte of the extended one.
            db.code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| c & 0xff == SQLITE_FULL)
        }
        sqlx::Error::Io(io) => io_is_storage_full(io),
        _ => false,
    }
}

const SQLITE_FULL: i32 = 13;

/// `ENOSPC` (or a quota's `EDQUOT`) as std names it.
pub fn io_is_storage_full(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Anywhere in an error chain (anyhow, or an error wrapping another): a full disk.
pub fn chain_is_storage_full(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(db) = e.downcast_ref::<sqlx::Error>()
            && is_storage_full(db)
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io_is_storage_full(io)
        {
            return true;
        }
        next = e.source();
    }
    false
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

#[cfg(test)]
mod tests {
    /// The writer's connection never checkpoints by itself; a checkpoint from the pool copies its
    /// commits into the database, and the WAL it syncs is the database's.
    #[tokio::test]
    async fn the_writer_leaves_checkpoints_to_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let pool = super::connect(&url).await.unwrap();
        let mut writer = super::connect_writer(&url).await.unwrap();
        let (auto,): (i64,) = sqlx::query_as("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut writer)
            .await
            .unwrap();
        let (pool_auto,): (i64,) = sqlx::query_as("PRAGMA wal_autocheckpoint")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!((auto, pool_auto), (0, 1000));
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&mut writer)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let wal = super::wal_path(&mut writer).await.unwrap();
        assert_eq!(wal, dir.path().join("t.db-wal"));
        assert!(wal.exists());
        sqlx::query("CREATE TABLE t (x BLOB)")
            .execute(&mut writer)
            .await
            .unwrap();
        for _ in 0..500 {
            sqlx::query("INSERT INTO t VALUES (zeroblob(8000))")
                .execute(&mut writer)
                .await
                .unwrap();
        }
        // Past the pool's 1000 frames, the writer has not checkpointed (a checkpoint would have let
        // its next transaction start the WAL over): every frame is still there, and the pool's
        // checkpoint copies them all.
        let first = super::checkpoint(&pool).await.unwrap();
        assert!(first.wal_frames > 1000, "{first:?}");
        assert_eq!(first.copied, first.wal_frames, "{first:?}");
    }
}
