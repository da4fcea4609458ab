use super::{Db, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionRow {
    pub repository_id: String,
    pub tag: String,
    pub digest: String,
    pub source: String,
    pub build_id: Option<String>,
    pub commit_sha: Option<String>,
    pub hidden: bool,
    pub pushed_at: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HistoryRow {
    pub digest: String,
    pub source: String,
    pub build_id: Option<String>,
    pub pushed_at: String,
    pub replaced_at: String,
}

pub struct NewVersion<'a> {
    pub repository_id: &'a str,
    pub tag: &'a str,
    pub digest: &'a str,
    /// "build" or "push".
    pub source: &'a str,
    pub build_id: Option<&'a str>,
    pub commit_sha: Option<&'a str>,
}

/// What recording a tag's digest changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// A tag seen for the first time.
    New,
    /// The tag moved to another digest; the previous one went to the history.
    Moved { previous_digest: String },
    /// The tag already had this digest (a re-push, or the registry's echo of a build's push).
    Unchanged,
}

/// Records that `tag` now holds `digest`. A new digest makes the version visible again; the old one
/// goes to the history. A build claims a digest that a plain push recorded first (the registry's
/// notification of kiln's own push can arrive before the build ends); a push never takes a build's.
pub async fn record(
    tx: &mut sqlx::SqliteConnection,
    v: &NewVersion<'_>,
) -> Result<Recorded, sqlx::Error> {
    let ts = now();
    let existing: Option<VersionRow> =
        sqlx::query_as("SELECT * FROM versions WHERE repository_id = ? AND tag = ?")
            .bind(v.repository_id)
            .bind(v.tag)
            .fetch_optional(&mut *tx)
            .await?;
    match existing {
        None => {
            sqlx::query(
                "INSERT INTO versions (repository_id, tag, digest, source, build_id, commit_sha, hidden, pushed_at) \
                 VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
            )
            .bind(v.repository_id)
            .bind(v.tag)
            .bind(v.digest)
            .bind(v.source)
            .bind(v.build_id)
            .bind(v.commit_sha)
            .bind(&ts)
            .execute(&mut *tx)
            .await?;
            Ok(Recorded::New)
        }
        Some(old) if old.digest == v.digest => {
            if v.source == "build" && old.source != "build" {
                sqlx::query(
                    "UPDATE versions SET source = 'build', build_id = ?, commit_sha = ? WHERE repository_id = ? AND tag = ?",
                )
                .bind(v.build_id)
                .bind(v.commit_sha)
                .bind(v.repository_id)
                .bind(v.tag)
                .execute(&mut *tx)
                .await?;
            }
            Ok(Recorded::Unchanged)
        }
        Some(old) => {
            sqlx::query(
                "INSERT INTO version_history (repository_id, tag, digest, source, build_id, pushed_at, replaced_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(v.repository_id)
            .bind(v.tag)
            .bind(&old.digest)
            .bind(&old.source)
            .bind(&old.build_id)
            .bind(&old.pushed_at)
            .bind(&ts)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE versions SET digest = ?, source = ?, build_id = ?, commit_sha = ?, hidden = 0, pushed_at = ? \
                 WHERE repository_id = ? AND tag = ?",
            )
            .bind(v.digest)
            .bind(v.source)
            .bind(v.build_id)
            .bind(v.commit_sha)
            .bind(&ts)
            .bind(v.repository_id)
            .bind(v.tag)
            .execute(&mut *tx)
            .await?;
            Ok(Recorded::Moved {
                previous_digest: old.digest,
            })
        }
    }
}

pub async fn list(
    db: &Db,
    repository_id: &str,
    include_hidden: bool,
) -> Result<Vec<VersionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM versions WHERE repository_id = ? AND (? OR hidden = 0) ORDER BY pushed_at DESC, tag DESC",
    )
    .bind(repository_id)
    .bind(include_hidden)
    .fetch_all(db)
    .await
}

pub async fn get(
    db: &Db,
    repository_id: &str,
    tag: &str,
) -> Result<Option<VersionRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM versions WHERE repository_id = ? AND tag = ?")
        .bind(repository_id)
        .bind(tag)
        .fetch_optional(db)
        .await
}

pub async fn history(
    db: &Db,
    repository_id: &str,
    tag: &str,
) -> Result<Vec<HistoryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT digest, source, build_id, pushed_at, replaced_at FROM version_history \
         WHERE repository_id = ? AND tag = ? ORDER BY replaced_at DESC",
    )
    .bind(repository_id)
    .bind(tag)
    .fetch_all(db)
    .await
}

pub async fn set_hidden(
    db: &Db,
    repository_id: &str,
    tag: &str,
    hidden: bool,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("UPDATE versions SET hidden = ? WHERE repository_id = ? AND tag = ?")
        .bind(hidden)
        .bind(repository_id)
        .bind(tag)
        .execute(db)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Hiding a repository hides every version it has (unhiding it later does not unhide them).
pub async fn hide_all<'e, E: sqlx::SqliteExecutor<'e>>(
    db: E,
    repository_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE versions SET hidden = 1 WHERE repository_id = ?")
        .bind(repository_id)
        .execute(db)
        .await?;
    Ok(())
}

/// A tag that is gone from the registry (found by a sync).
pub async fn remove<'e, E: sqlx::SqliteExecutor<'e>>(
    db: E,
    repository_id: &str,
    tag: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM versions WHERE repository_id = ? AND tag = ?")
        .bind(repository_id)
        .bind(tag)
        .execute(db)
        .await?;
    Ok(())
}

/// Was this registry notification event handled already? (The registry retries until it gets a 2xx,
/// and a stale redelivery must not move a tag back.)
pub async fn registry_event_seen(db: &Db, event_id: &str) -> Result<bool, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM registry_events WHERE id = ?")
        .bind(event_id)
        .fetch_optional(db)
        .await?;
    Ok(row.is_some())
}

pub async fn mark_registry_event(db: &Db, event_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO registry_events (id, received_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
    )
    .bind(event_id)
    .bind(now())
    .execute(db)
    .await?;
    Ok(())
}

/// A digest a tag held before, with its tag (every tag of a repository at once).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TagHistoryRow {
    pub tag: String,
    #[sqlx(flatten)]
    pub entry: HistoryRow,
}

/// The history of every tag of a repository, newest replacement first (what [`history`] gives per tag).
pub async fn history_of_repo(
    db: &Db,
    repository_id: &str,
) -> Result<Vec<TagHistoryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT tag, digest, source, build_id, pushed_at, replaced_at FROM version_history \
         WHERE repository_id = ? ORDER BY replaced_at DESC",
    )
    .bind(repository_id)
    .fetch_all(db)
    .await
}
