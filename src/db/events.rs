use std::collections::HashSet;

use super::now;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: String,
    pub repository_id: String,
    pub provider: String,
    pub delivery_id: String,
    pub kind: String,
    pub git_ref: Option<String>,
    pub commit_sha: Option<String>,
    pub outcome: String,
    pub plan: String,
    pub received_at: String,
    pub duplicates: i64,
}

pub struct NewEvent<'a> {
    /// Made by the caller (`db::new_id()`), so it can tell which rows were stored.
    pub id: &'a str,
    pub repository_id: &'a str,
    pub provider: &'a str,
    pub delivery_id: &'a str,
    pub kind: &'a str,
    pub git_ref: Option<&'a str>,
    pub commit_sha: Option<&'a str>,
    pub outcome: &'a str,
    pub plan: &'a str,
    /// The payload as stored: see [`StoredPayload`].
    pub payload: &'a StoredPayload,
    /// The SHA-256 of the payload (hex): the same body under a new delivery id is a replay.
    pub body_sha256: &'a str,
}

/// A hook's body as `events.payload` keeps it: LZ4-compressed (`payload_encoding = 'lz4'`, the
/// block format with its size in front), so that a push of a few KB takes one page instead of
/// three. Made by the hook handlers (in parallel), not by the writer.
pub struct StoredPayload(Vec<u8>);

impl StoredPayload {
    pub const ENCODING: &'static str = "lz4";

    pub fn compress(body: &[u8]) -> StoredPayload {
        StoredPayload(lz4_flex::compress_prepend_size(body))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A stored event's payload, as it was received (decompressed).
pub async fn payload(db: &super::Db, event_id: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let row: Option<(Vec<u8>, String)> =
        sqlx::query_as("SELECT payload, payload_encoding FROM events WHERE id = ?")
            .bind(event_id)
            .fetch_optional(db)
            .await?;
    row.map(|(bytes, encoding)| match encoding.as_str() {
        "lz4" => lz4_flex::decompress_size_prepended(&bytes)
            .map_err(|e| sqlx::Error::Decode(format!("payload of event {event_id}: {e}").into())),
        _ => Ok(bytes),
    })
    .transpose()
}

/// Stores the events with one prepared statement, stepped per row on the caller's thread (the
/// ingest writer's, on its connection's handle: see `ingest`), and returns the ids of those stored.
/// An event whose delivery was stored already for its repository (a redelivery, or the same
/// delivery twice in `events`), or whose body was (a replay under a new delivery id), is left out:
/// the first wins.
pub fn insert_new(
    sqlite: &rusqlite::Connection,
    events: &[NewEvent<'_>],
) -> rusqlite::Result<HashSet<String>> {
    let mut stored = HashSet::with_capacity(events.len());
    let received_at = now();
    // No conflict target: both unique keys count (the delivery id, and the body's digest).
    let mut insert = sqlite.prepare(
        "INSERT INTO events (id, repository_id, provider, delivery_id, kind, git_ref, commit_sha, outcome, plan, payload, payload_encoding, body_sha256, received_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) ON CONFLICT DO NOTHING",
    )?;
    for e in events {
        let inserted = insert.execute(rusqlite::params![
            e.id,
            e.repository_id,
            e.provider,
            e.delivery_id,
            e.kind,
            e.git_ref,
            e.commit_sha,
            e.outcome,
            e.plan,
            &e.payload.0[..],
            StoredPayload::ENCODING,
            e.body_sha256,
            &received_at,
        ])?;
        if inserted == 1 {
            stored.insert(e.id.to_string());
        }
    }
    Ok(stored)
}

pub async fn list(
    db: &super::Db,
    repository_id: &str,
    page: &super::Page,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, repository_id, provider, delivery_id, kind, git_ref, commit_sha, outcome, plan, received_at, duplicates \
         FROM events WHERE repository_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
    )
    .bind(repository_id)
    .bind(page.before())
    .bind(page.limit)
    .fetch_all(db)
    .await
}

/// The same delivery (or the same body under another delivery id) came again: count it on the
/// stored event.
pub async fn count_duplicate(
    tx: &mut sqlx::SqliteConnection,
    provider: &str,
    delivery_id: &str,
    body_sha256: &str,
    repository_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE events SET duplicates = duplicates + 1 \
         WHERE provider = ? AND repository_id = ? AND (delivery_id = ? OR body_sha256 = ?)",
    )
    .bind(provider)
    .bind(repository_id)
    .bind(delivery_id)
    .bind(body_sha256)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Retention: events received before `before` go (their builds stay).
pub async fn prune(db: &super::Db, before: &str) -> Result<u64, sqlx::Error> {
    let r = sqlx::query("DELETE FROM events WHERE received_at < ?")
        .bind(before)
        .execute(db)
        .await?;
    Ok(r.rows_affected())
}
