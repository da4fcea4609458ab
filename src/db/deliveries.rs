use super::{Db, Page, new_id, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: String,
    pub webhook_id: String,
    pub message_id: String,
    pub event: String,
    pub content_type: String,
    pub body: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: String,
    pub claimed_until: Option<String>,
    pub response_status: Option<i64>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    pub redelivery_of: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub delivery_id: String,
    pub attempt: i64,
    pub started_at: String,
    pub request_method: String,
    pub request_url: String,
    pub request_headers: String,
    pub request_body: String,
    pub request_body_truncated: bool,
    pub response_status: Option<i64>,
    pub response_headers: Option<String>,
    pub response_body: Option<String>,
    pub response_body_truncated: bool,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// Queues a message for one subscription (inside the caller's transaction). Returns the delivery id.
pub async fn enqueue(
    tx: &mut sqlx::SqliteConnection,
    webhook_id: &str,
    message_id: &str,
    event: &str,
    content_type: &str,
    body: &str,
    redelivery_of: Option<&str>,
) -> Result<String, sqlx::Error> {
    let id = new_id();
    let ts = now();
    sqlx::query(
        "INSERT INTO deliveries (id, webhook_id, message_id, event, content_type, body, status, attempts, \
         next_attempt_at, redelivery_of, created_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
    )
    .bind(&id)
    .bind(webhook_id)
    .bind(message_id)
    .bind(event)
    .bind(content_type)
    .bind(body)
    .bind(&ts)
    .bind(redelivery_of)
    .bind(&ts)
    .execute(&mut *tx)
    .await?;
    Ok(id)
}

/// Claims up to `limit` due deliveries for this process until `lease_until`.
pub async fn claim_due(
    db: &Db,
    limit: i64,
    lease_until: &str,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let ts = now();
    sqlx::query_as(
        "UPDATE deliveries SET claimed_until = ? WHERE id IN (SELECT id FROM deliveries WHERE status = 'pending' \
         AND next_attempt_at <= ? AND (claimed_until IS NULL OR claimed_until < ?) ORDER BY next_attempt_at, id LIMIT ?) \
         RETURNING *",
    )
    .bind(lease_until)
    .bind(&ts)
    .bind(&ts)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// At start: leases of a previous process are void (kiln is one process).
pub async fn release_claims(db: &Db) -> Result<u64, sqlx::Error> {
    let r = sqlx::query("UPDATE deliveries SET claimed_until = NULL WHERE status = 'pending' AND claimed_until IS NOT NULL")
        .execute(db)
        .await?;
    Ok(r.rows_affected())
}

/// The earliest time a pending, unclaimed delivery is due (to sleep until then).
pub async fn next_due(db: &Db) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'pending' AND claimed_until IS NULL")
            .fetch_optional(db)
            .await?;
    Ok(row.and_then(|(t,)| t))
}

pub struct AttemptRecord<'a> {
    pub attempt: i64,
    pub started_at: &'a str,
    pub request_url: &'a str,
    pub request_headers: &'a str,
    pub request_body: &'a str,
    pub request_body_truncated: bool,
    pub response_status: Option<i64>,
    pub response_headers: Option<&'a str>,
    pub response_body: Option<&'a str>,
    pub response_body_truncated: bool,
    pub error: Option<&'a str>,
    pub duration_ms: i64,
}

/// Records one attempt and the delivery's new state in one transaction. `next` = None ends it:
/// succeeded when the attempt succeeded, failed otherwise.
pub async fn record_attempt(
    db: &Db,
    delivery_id: &str,
    a: &AttemptRecord<'_>,
    succeeded: bool,
    next_attempt_at: Option<&str>,
) -> Result<(), sqlx::Error> {
    let mut tx = super::write_tx(db).await?;
    sqlx::query(
        "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, request_method, request_url, request_headers, \
         request_body, request_body_truncated, response_status, response_headers, response_body, \
         response_body_truncated, error, duration_ms) VALUES (?, ?, ?, 'POST', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(delivery_id)
    .bind(a.attempt)
    .bind(a.started_at)
    .bind(a.request_url)
    .bind(a.request_headers)
    .bind(a.request_body)
    .bind(a.request_body_truncated)
    .bind(a.response_status)
    .bind(a.response_headers)
    .bind(a.response_body)
    .bind(a.response_body_truncated)
    .bind(a.error)
    .bind(a.duration_ms)
    .execute(&mut *tx)
    .await?;
    let (status, finished) = match (succeeded, next_attempt_at) {
        (true, _) => ("succeeded", Some(now())),
        (false, Some(_)) => ("pending", None),
        (false, None) => ("failed", Some(now())),
    };
    sqlx::query(
        "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = COALESCE(?, next_attempt_at), \
         claimed_until = NULL, response_status = ?, duration_ms = ?, error = ?, finished_at = ? WHERE id = ?",
    )
    .bind(status)
    .bind(a.attempt)
    .bind(next_attempt_at)
    .bind(a.response_status)
    .bind(a.duration_ms)
    .bind(a.error)
    .bind(finished)
    .bind(delivery_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

pub async fn get(db: &Db, id: &str) -> Result<Option<DeliveryRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM deliveries WHERE id = ?")
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn list_for_webhook(
    db: &Db,
    webhook_id: &str,
    page: &Page,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM deliveries WHERE webhook_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
    )
    .bind(webhook_id)
    .bind(page.before())
    .bind(page.limit)
    .fetch_all(db)
    .await
}

pub async fn attempts(db: &Db, delivery_id: &str) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM delivery_attempts WHERE delivery_id = ? ORDER BY attempt")
        .bind(delivery_id)
        .fetch_all(db)
        .await
}

/// Retention: finished deliveries (and their attempts) created before `before` go.
pub async fn prune(db: &Db, before: &str) -> Result<u64, sqlx::Error> {
    let r = sqlx::query("DELETE FROM deliveries WHERE created_at < ? AND status != 'pending'")
        .bind(before)
        .execute(db)
        .await?;
    Ok(r.rows_affected())
}
