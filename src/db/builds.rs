use sqlx::AssertSqlSafe;

use super::{Db, Page, new_id, now};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildStatus {
    Queued,
    Building,
    Succeeded,
    Failed,
    Cancelled,
    /// Ended without building: its rule's path filter excludes the push (issue 9).
    Skipped,
}

impl BuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Queued => "queued",
            BuildStatus::Building => "building",
            BuildStatus::Succeeded => "succeeded",
            BuildStatus::Failed => "failed",
            BuildStatus::Cancelled => "cancelled",
            BuildStatus::Skipped => "skipped",
        }
    }

    pub fn is_finished(status: &str) -> bool {
        matches!(status, "succeeded" | "failed" | "cancelled" | "skipped")
    }
}

/// A build joined with its repository's names.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct BuildRow {
    pub id: String,
    pub repository_id: String,
    pub namespace: String,
    pub repository: String,
    pub rule_id: Option<String>,
    pub event_id: Option<String>,
    pub trigger: String,
    pub git_ref: String,
    pub commit_sha: Option<String>,
    pub tag: Option<String>,
    pub image: Option<String>,
    pub dockerfile: String,
    pub context: String,
    pub version: String,
    pub overwrite: bool,
    pub status: String,
    pub error: Option<String>,
    pub digest: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// The rule's build settings when the build was queued, as JSON (issue 9); see `settings()`.
    pub settings: String,
    /// Which run of the build this is (1 for the first; one more after each interruption).
    pub attempt: i64,
    #[sqlx(flatten)]
    pub stages: StageTimes,
    /// The push's `before` (issue 9, path filters).
    pub before_sha: Option<String>,
}

/// Milliseconds each stage of a build took (None: not reached). What each measures is in
/// migration 0008 and [`Stage`].
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct StageTimes {
    pub queued_ms: Option<i64>,
    pub fetch_ms: Option<i64>,
    pub context_ms: Option<i64>,
    pub build_ms: Option<i64>,
    pub push_ms: Option<i64>,
}

/// One stage of a build, as recorded by [`record_stage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Created → claimed by a worker.
    Queued,
    /// Fetching the commit into the mirror, resolving the tag, checking the Dockerfile and context.
    Fetch,
    /// The build request sent → the whole context tar written into the pipe to the daemon.
    Context,
    /// The context sent → the image built (the daemon's build).
    Build,
    /// Pushing the image to the registry.
    Push,
}

/// Records how long a stage of a build took.
pub async fn record_stage(db: &Db, id: &str, stage: Stage, ms: i64) -> Result<(), sqlx::Error> {
    let sql = match stage {
        Stage::Queued => "UPDATE builds SET queued_ms = ? WHERE id = ?",
        Stage::Fetch => "UPDATE builds SET fetch_ms = ? WHERE id = ?",
        Stage::Context => "UPDATE builds SET context_ms = ? WHERE id = ?",
        Stage::Build => "UPDATE builds SET build_ms = ? WHERE id = ?",
        Stage::Push => "UPDATE builds SET push_ms = ? WHERE id = ?",
    };
    sqlx::query(sql)
        .bind(ms)
        .bind(id)
        .execute(db)
        .await
        .map(|_| ())
}

impl BuildRow {
    /// The settings the build runs with (`{}`, or an unreadable value: the defaults).
    pub fn settings(&self) -> crate::domain::build_settings::BuildSettings {
        serde_json::from_str(&self.settings).unwrap_or_default()
    }
}

const SELECT: &str = "SELECT b.id, b.repository_id, n.name AS namespace, r.name AS repository, b.rule_id, b.event_id, \
     b.trigger, b.git_ref, b.commit_sha, b.tag, b.image, b.dockerfile, b.context, b.version, b.overwrite, b.status, \
     b.error, b.digest, b.created_at, b.started_at, b.finished_at, b.settings, b.attempt, \
     b.queued_ms, b.fetch_ms, b.context_ms, b.build_ms, b.push_ms, b.before_sha \
     FROM builds b JOIN repositories r ON r.id = b.repository_id JOIN namespaces n ON n.id = r.namespace_id";

/// A build to queue. `commit_sha`/`tag` are None when the worker must resolve them ("build now" of a
/// branch head or of the newest matching tag).
pub struct NewBuild<'a> {
    pub repository_id: &'a str,
    pub rule_id: Option<&'a str>,
    pub event_id: Option<&'a str>,
    pub trigger: &'a str,
    pub git_ref: &'a str,
    pub commit_sha: Option<&'a str>,
    pub tag: Option<&'a str>,
    pub image: Option<&'a str>,
    pub dockerfile: &'a str,
    pub context: &'a str,
    pub version: &'a str,
    pub overwrite: bool,
    /// The rule's build settings, copied (issue 9).
    pub settings: &'a crate::domain::build_settings::BuildSettings,
    /// The push's `before`, for path filters (None: not a push).
    pub before_sha: Option<&'a str>,
}

pub async fn insert(
    tx: &mut sqlx::SqliteConnection,
    b: &NewBuild<'_>,
) -> Result<String, sqlx::Error> {
    let id = new_id();
    sqlx::query(
        "INSERT INTO builds (id, repository_id, rule_id, event_id, trigger, git_ref, commit_sha, tag, image, dockerfile, \
         context, version, overwrite, status, created_at, settings, before_sha) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
    )
    .bind(&id)
    .bind(b.repository_id)
    .bind(b.rule_id)
    .bind(b.event_id)
    .bind(b.trigger)
    .bind(b.git_ref)
    .bind(b.commit_sha)
    .bind(b.tag)
    .bind(b.image)
    .bind(b.dockerfile)
    .bind(b.context)
    .bind(b.version)
    .bind(b.overwrite)
    .bind(now())
    .bind(serde_json::to_string(b.settings).unwrap_or_else(|_| "{}".into()))
    .bind(b.before_sha)
    .execute(&mut *tx)
    .await?;
    super::commit_statuses::queue_for_build(&mut *tx, &id).await?;
    Ok(id)
}

pub async fn get<'e, E: sqlx::SqliteExecutor<'e>>(
    db: E,
    id: &str,
) -> Result<Option<BuildRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!("{SELECT} WHERE b.id = ?")))
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn list_for_repo(
    db: &Db,
    repository_id: &str,
    page: &Page,
) -> Result<Vec<BuildRow>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "{SELECT} WHERE b.repository_id = ? AND b.id < ? ORDER BY b.id DESC LIMIT ?"
    )))
    .bind(repository_id)
    .bind(page.before())
    .bind(page.limit)
    .fetch_all(db)
    .await
}

/// Claims the queued build a free worker starts next: `queued` → `building`, atomically. The claim is
/// the only way a row becomes `building`.
///
/// `domain::queue_order::next_to_start` is this statement in plain code (a test checks they agree):
/// - a tag has one owner at a time (`domain::tag_owner`): a queued build is skipped while another build
///   of the same image tag runs, or waits in the queue ahead of it, so builds of one tag run one after
///   the other in queue (push) order. A build whose tag is not known yet ("build now", resolved by the
///   worker) counts as every tag of its rule;
/// - a repository runs at most `repo_limit` builds at once;
/// - fair between repositories: the repository whose latest build started longest ago (never: first)
///   goes first, then its oldest build that may start.
pub async fn claim_next(db: &Db, repo_limit: usize) -> Result<Option<BuildRow>, sqlx::Error> {
    let mut tx = super::write_tx(db).await?;
    let claimed: Option<(String,)> = sqlx::query_as(
        "UPDATE builds SET status = 'building', started_at = ? \
         WHERE id = (SELECT b.id FROM builds b WHERE b.status = 'queued' \
           AND (SELECT COUNT(*) FROM builds r WHERE r.repository_id = b.repository_id AND r.status = 'building') < ? \
           AND NOT EXISTS ( \
             SELECT 1 FROM builds o WHERE o.repository_id = b.repository_id AND o.id <> b.id \
               AND (o.status = 'building' OR (o.status = 'queued' AND o.id < b.id)) \
               AND (o.tag = b.tag OR ((o.tag IS NULL OR b.tag IS NULL) AND o.rule_id = b.rule_id))) \
           ORDER BY (SELECT COALESCE(MAX(s.started_at), '') FROM builds s WHERE s.repository_id = b.repository_id), b.id \
           LIMIT 1) \
         AND status = 'queued' RETURNING id",
    )
    .bind(now())
    .bind(i64::try_from(repo_limit).unwrap_or(i64::MAX))
    // Read to the statement's end, so a commit the disk refuses is an error here (see
    // `super::one_returned`).
    .fetch_all(&mut *tx)
    .await?
    .pop();
    // The commit status (issue 12) is queued with the claim.
    if let Some((id,)) = &claimed {
        super::commit_statuses::queue_for_build(&mut tx, id).await?;
    }
    tx.commit().await?;
    match claimed {
        Some((id,)) => get(db, &id).await,
        None => Ok(None),
    }
}

/// A build as the queue sees it (see `domain::queue_order`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueueRow {
    pub id: String,
    pub repository_id: String,
    pub rule_id: Option<String>,
    pub tag: Option<String>,
    pub status: String,
    pub started_at: Option<String>,
}

/// What the queue order needs: every queued and running build, and for each repository its latest
/// start among the other builds (as a row with an empty id and status `ended`).
pub async fn queue_snapshot(db: &Db) -> Result<Vec<QueueRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, repository_id, rule_id, tag, status, started_at FROM builds \
         WHERE status IN ('queued', 'building') \
         UNION ALL \
         SELECT '' AS id, repository_id, NULL AS rule_id, NULL AS tag, 'ended' AS status, MAX(started_at) AS started_at \
         FROM builds WHERE status NOT IN ('queued', 'building') AND started_at IS NOT NULL \
         AND repository_id IN (SELECT q.repository_id FROM builds q WHERE q.status = 'queued') \
         GROUP BY repository_id",
    )
    .fetch_all(db)
    .await
}

/// The newest build queued after `build_id` for the same image tag that has started or may still
/// start (queued, building or succeeded): when there is one, `build_id` no longer owns the tag.
pub async fn newer_owner_of_tag(
    db: &Db,
    build_id: &str,
    repository_id: &str,
    tag: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM builds WHERE repository_id = ? AND tag = ? AND id > ? \
         AND status IN ('queued', 'building', 'succeeded') ORDER BY id DESC LIMIT 1",
    )
    .bind(repository_id)
    .bind(tag)
    .bind(build_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(id,)| id))
}

/// The worker found the commit and the tag it builds. A commit it did not know before gets the
/// build's commit status (issue 12) in the same transaction.
pub async fn set_target(
    db: &Db,
    id: &str,
    git_ref: &str,
    commit: &str,
    tag: &str,
    image: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = super::write_tx(db).await?;
    let before: Option<(Option<String>,)> =
        sqlx::query_as("SELECT commit_sha FROM builds WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    sqlx::query("UPDATE builds SET git_ref = ?, commit_sha = ?, tag = ?, image = ? WHERE id = ?")
        .bind(git_ref)
        .bind(commit)
        .bind(tag)
        .bind(image)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if let Some((known,)) = before
        && known.as_deref() != Some(commit)
    {
        super::commit_statuses::queue_for_build(&mut tx, id).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Ends a running build. Returns false when it was no longer `building` (cancelled meanwhile).
pub async fn finish(
    conn: &mut sqlx::SqliteConnection,
    id: &str,
    status: BuildStatus,
    error: Option<&str>,
    digest: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE builds SET status = ?, error = ?, digest = ?, finished_at = ? WHERE id = ? AND status = 'building'",
    )
    .bind(status.as_str())
    .bind(error)
    .bind(digest)
    .bind(now())
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if r.rows_affected() != 1 {
        return Ok(false);
    }
    super::commit_statuses::queue_for_build(conn, id).await?;
    Ok(true)
}

/// A newer push of `git_ref` planned build `newer` from `rule_id`: the same rule's builds of that ref
/// still waiting in the queue would only build an older commit, so they end `cancelled`, naming it.
pub async fn supersede_queued(
    conn: &mut sqlx::SqliteConnection,
    repository_id: &str,
    rule_id: &str,
    git_ref: &str,
    newer: &str,
) -> Result<u64, sqlx::Error> {
    let cancelled: Vec<(String,)> = sqlx::query_as(
        "UPDATE builds SET status = 'cancelled', error = ?, finished_at = ? \
         WHERE repository_id = ? AND rule_id = ? AND git_ref = ? AND status = 'queued' AND id < ? \
         RETURNING id",
    )
    .bind(format!("superseded by {newer}"))
    .bind(now())
    .bind(repository_id)
    .bind(rule_id)
    .bind(git_ref)
    .bind(newer)
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<String> = cancelled.into_iter().map(|(id,)| id).collect();
    super::commit_statuses::queue_for_builds(conn, &ids).await?;
    Ok(ids.len() as u64)
}

/// The `before` a newer push of `git_ref` must diff from when it supersedes the same rule's queued
/// builds: the oldest queued one's (`Some(None)` when that build has none, so the newer one builds
/// whatever changed); `None` when nothing is queued. A push that only touched ignored files must not
/// swallow an earlier queued push that touched matching ones.
pub async fn queued_before(
    conn: &mut sqlx::SqliteConnection,
    repository_id: &str,
    rule_id: &str,
    git_ref: &str,
) -> Result<Option<Option<String>>, sqlx::Error> {
    let row: Option<(Option<String>,)> = sqlx::query_as(
        "SELECT before_sha FROM builds WHERE repository_id = ? AND rule_id = ? AND git_ref = ? \
         AND status = 'queued' ORDER BY id LIMIT 1",
    )
    .bind(repository_id)
    .bind(rule_id)
    .bind(git_ref)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(b,)| b))
}

/// Is a build of this rule with this trigger queued or running? (One schedule build at a time.)
pub async fn active_for_rule(
    conn: &mut sqlx::SqliteConnection,
    rule_id: &str,
    trigger: &str,
) -> Result<bool, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM builds WHERE rule_id = ? AND trigger = ? AND status IN ('queued', 'building') LIMIT 1",
    )
    .bind(rule_id)
    .bind(trigger)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.is_some())
}

/// When a rule's last build with this trigger was queued (the scheduler's memory across restarts).
pub async fn last_created_for_rule(
    db: &Db,
    rule_id: &str,
    trigger: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT created_at FROM builds WHERE rule_id = ? AND trigger = ? ORDER BY id DESC LIMIT 1",
    )
    .bind(rule_id)
    .bind(trigger)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(t,)| t))
}

/// Cancels a queued build. Returns the status the build has (`queued` when this cancelled it; None: no
/// such build). A running build is not touched: its worker stops it and records how it ended.
pub async fn cancel_queued(db: &Db, id: &str) -> Result<Option<String>, sqlx::Error> {
    let mut tx = super::write_tx(db).await?;
    let r = sqlx::query(
        "UPDATE builds SET status = 'cancelled', error = 'cancelled by user', finished_at = ? \
         WHERE id = ? AND status = 'queued'",
    )
    .bind(now())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() == 1 {
        super::commit_statuses::queue_for_build(&mut tx, id).await?;
        tx.commit().await?;
        return Ok(Some("queued".into()));
    }
    drop(tx);
    status(db, id).await
}

/// A build that was running when kiln stopped, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Interrupted {
    pub id: String,
    /// For a build queued again: the attempt it runs as next. For a failed one: the attempts it had.
    pub attempt: i64,
    /// Queued again (true) or failed because it already had `max_attempts` (false).
    pub requeued: bool,
}

/// Running builds (all of them, or only `only`) go back to the queue as their next attempt, keeping
/// their place (their id); one that already ran `max_attempts` times ends `failed` instead, so a build
/// that crashes kiln cannot loop forever.
pub async fn requeue_interrupted(
    db: &Db,
    only: Option<&str>,
    max_attempts: i64,
) -> Result<Vec<Interrupted>, sqlx::Error> {
    let mut tx = super::write_tx(db).await?;
    let out = requeue_interrupted_in(&mut tx, only, max_attempts).await?;
    tx.commit().await?;
    Ok(out)
}

/// [`requeue_interrupted`] inside the caller's transaction (which queues the failed builds'
/// `build.failed` in it too).
pub async fn requeue_interrupted_in(
    tx: &mut sqlx::SqliteConnection,
    only: Option<&str>,
    max_attempts: i64,
) -> Result<Vec<Interrupted>, sqlx::Error> {
    let mut out: Vec<Interrupted> = sqlx::query_as(
        "UPDATE builds SET status = 'failed', finished_at = ?, \
         error = 'interrupted ' || attempt || ' times: kiln stopped during each attempt' \
         WHERE status = 'building' AND attempt >= ? AND (? IS NULL OR id = ?) \
         RETURNING id, attempt, FALSE AS requeued",
    )
    .bind(now())
    .bind(max_attempts)
    .bind(only)
    .bind(only)
    .fetch_all(&mut *tx)
    .await?;
    let requeued: Vec<Interrupted> = sqlx::query_as(
        "UPDATE builds SET status = 'queued', attempt = attempt + 1, started_at = NULL \
         WHERE status = 'building' AND (? IS NULL OR id = ?) \
         RETURNING id, attempt, TRUE AS requeued",
    )
    .bind(only)
    .bind(only)
    .fetch_all(&mut *tx)
    .await?;
    out.extend(requeued);
    out.sort_by(|a, b| a.id.cmp(&b.id));
    let ids: Vec<String> = out.iter().map(|b| b.id.clone()).collect();
    super::commit_statuses::queue_for_builds(tx, &ids).await?;
    Ok(out)
}

pub async fn status(db: &Db, id: &str) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as("SELECT status FROM builds WHERE id = ?")
        .bind(id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|(s,)| s))
}

pub async fn append_log(
    db: &Db,
    id: &str,
    first_seq: i64,
    lines: &[String],
) -> Result<(), sqlx::Error> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut tx = super::write_tx(db).await?;
    for (i, line) in lines.iter().enumerate() {
        sqlx::query("INSERT INTO build_log_lines (build_id, seq, line) VALUES (?, ?, ?)")
            .bind(id)
            .bind(first_seq + i as i64)
            .bind(line)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// The next line's seq, and the log's size in bytes (each line's UTF-8 and its newline), as the
/// log's cap (`KILN_BUILD_LOG_LIMIT`) counts them: a resumed log (attempt 2) goes on from there.
pub async fn log_size(db: &Db, id: &str) -> Result<(i64, u64), sqlx::Error> {
    let (next, size): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(MAX(seq) + 1, 0), COALESCE(SUM(LENGTH(CAST(line AS BLOB)) + 1), 0) \
         FROM build_log_lines WHERE build_id = ?",
    )
    .bind(id)
    .fetch_one(db)
    .await?;
    Ok((next, u64::try_from(size).unwrap_or(0)))
}

/// At most `limit` log lines with seq > `after`, in order.
pub async fn log_page(
    db: &Db,
    id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, line FROM build_log_lines WHERE build_id = ? AND seq > ? ORDER BY seq LIMIT ?",
    )
    .bind(id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Log lines with seq > `after`, in order.
pub async fn log_lines(db: &Db, id: &str, after: i64) -> Result<Vec<(i64, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, line FROM build_log_lines WHERE build_id = ? AND seq > ? ORDER BY seq",
    )
    .bind(id)
    .bind(after)
    .fetch_all(db)
    .await
}

/// Is a build of this repository and tag running now? (It will record the version itself.) Its extra
/// tags count.
pub async fn running_with_tag(
    db: &Db,
    repository_id: &str,
    tag: &str,
) -> Result<bool, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM builds b WHERE b.repository_id = ? AND b.status = 'building' \
         AND (b.tag = ? OR EXISTS (SELECT 1 FROM build_extra_tags t WHERE t.build_id = b.id AND t.tag = ?)) \
         LIMIT 1",
    )
    .bind(repository_id)
    .bind(tag)
    .bind(tag)
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
}

// Build settings (issue 9).

/// The extra tags the build pushes (rendered from its settings when it runs), replacing any earlier
/// list.
pub async fn set_extra_tags(db: &Db, build_id: &str, tags: &[String]) -> Result<(), sqlx::Error> {
    let mut tx = super::write_tx(db).await?;
    sqlx::query("DELETE FROM build_extra_tags WHERE build_id = ?")
        .bind(build_id)
        .execute(&mut *tx)
        .await?;
    for tag in tags {
        sqlx::query("INSERT INTO build_extra_tags (build_id, tag) VALUES (?, ?)")
            .bind(build_id)
            .bind(tag)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// The extra tags of a build, in name order.
pub async fn extra_tags(db: &Db, build_id: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT tag FROM build_extra_tags WHERE build_id = ? ORDER BY tag")
            .bind(build_id)
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().map(|(t,)| t).collect())
}

/// The newest build of the same rule and ref queued after `build_id` that has started or may still
/// start (queued, building or succeeded): it pushes the rule's extra tags after this build, so this
/// build must not move them (a tag has one owner at a time).
pub async fn newer_build_of_rule_ref(
    db: &Db,
    build_id: &str,
    rule_id: &str,
    git_ref: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM builds WHERE rule_id = ? AND git_ref = ? AND id > ? \
         AND status IN ('queued', 'building', 'succeeded') ORDER BY id DESC LIMIT 1",
    )
    .bind(rule_id)
    .bind(git_ref)
    .bind(build_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(id,)| id))
}

/// The image (`{registry}/{ns}/{repo}:{tag}`) and digest of the newest succeeded build of `rule_id`
/// queued before `build_id`: the layer cache of the next build.
pub async fn previous_success(
    db: &Db,
    rule_id: &str,
    build_id: &str,
) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT image, digest FROM builds WHERE rule_id = ? AND id < ? AND status = 'succeeded' \
         AND image IS NOT NULL AND digest IS NOT NULL ORDER BY id DESC LIMIT 1",
    )
    .bind(rule_id)
    .bind(build_id)
    .fetch_optional(db)
    .await
}

/// Build retention (issue 9): deletes, with their log lines, the finished builds of each repository
/// that are beyond its newest `keep` and were queued before `cutoff`. Queued and running builds are
/// never deleted (nor counted out: they are among the newest). Versions and their history keep their
/// `build_id`. Works in batches of `batch`; returns how many builds went.
pub async fn prune(db: &Db, keep: u64, cutoff: &str, batch: u32) -> Result<u64, sqlx::Error> {
    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
    let mut total = 0;
    loop {
        let mut tx = super::write_tx(db).await?;
        let ids: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM (SELECT id, status, created_at, \
               ROW_NUMBER() OVER (PARTITION BY repository_id ORDER BY id DESC) AS newest \
               FROM builds) ranked \
             WHERE newest > ? AND created_at < ? AND status NOT IN ('queued', 'building') LIMIT ?",
        )
        .bind(keep)
        .bind(cutoff)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        for (id,) in &ids {
            sqlx::query("DELETE FROM build_log_lines WHERE build_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM builds WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        total += ids.len() as u64;
        if ids.len() < batch as usize {
            return Ok(total);
        }
    }
}

/// The image references of the builds running now (their images are in use).
pub async fn running_images(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT image FROM builds WHERE status = 'building' AND image IS NOT NULL")
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().map(|(i,)| i).collect())
}

/// A build created by a hook event, as the events view lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventBuildRow {
    pub event_id: String,
    pub id: String,
    pub status: String,
    pub error: Option<String>,
    pub rule_id: Option<String>,
}

/// The builds created by these events, oldest first.
pub async fn for_events(db: &Db, event_ids: &[String]) -> Result<Vec<EventBuildRow>, sqlx::Error> {
    if event_ids.is_empty() {
        return Ok(vec![]);
    }
    let placeholders = vec!["?"; event_ids.len()].join(", ");
    let sql = format!(
        "SELECT event_id, id, status, error, rule_id FROM builds WHERE event_id IN ({placeholders}) ORDER BY id"
    );
    let mut q = sqlx::query_as(AssertSqlSafe(sql));
    for id in event_ids {
        q = q.bind(id);
    }
    q.fetch_all(db).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::queue_order;
    use crate::domain::tag_owner::{self, Stage};
    use rand::{Rng, SeedableRng};

    struct Spec {
        id: String,
        repo: usize,
        rule: Option<&'static str>,
        tag: Option<&'static str>,
        status: &'static str,
        started_at: Option<String>,
    }

    fn stage(status: &str) -> Stage {
        match status {
            "queued" => Stage::Queued,
            "building" => Stage::Building,
            "succeeded" => Stage::Succeeded,
            _ => Stage::Ended,
        }
    }

    async fn test_db() -> (tempfile::TempDir, Db, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::connect(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        let ns = super::super::namespaces::insert(&db, "ns").await.unwrap();
        let mut repos = Vec::new();
        for name in ["a", "b", "c"] {
            repos.push(
                super::super::repos::insert(
                    &db,
                    &super::super::repos::NewRepo {
                        namespace_id: &ns.id,
                        name,
                        summary: "",
                        detail: "",
                        category: "other",
                    },
                )
                .await
                .unwrap(),
            );
        }
        (dir, db, repos)
    }

    /// The claim statement is the domain's rule: over random queues (three repositories, random tags,
    /// stages, start times and per-repository limits), the build SQLite claims is the one
    /// `queue_order::next_to_start` picks (which keeps `tag_owner`'s rule), and a finished build's newer
    /// owner is `tag_owner`'s too. The queue snapshot gives the domain the same answer.
    #[tokio::test]
    async fn claim_follows_the_domain_tag_and_queue_rules() {
        let (_dir, db, repos) = test_db().await;
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let mut claimed_some = 0;
        for round in 0..400 {
            sqlx::query("DELETE FROM builds")
                .execute(&db)
                .await
                .unwrap();
            let n = rng.random_range(0..10);
            let specs: Vec<Spec> = (0..n)
                .map(|i| {
                    let status = [
                        "queued",
                        "queued",
                        "queued",
                        "building",
                        "succeeded",
                        "failed",
                        "cancelled",
                    ][rng.random_range(0..7)];
                    // Few distinct times, so ties between repositories happen.
                    let started_at = (status != "queued" && rng.random_range(0..5) > 0)
                        .then(|| format!("2026-01-01T00:00:0{}.000000Z", rng.random_range(0..4)));
                    Spec {
                        id: format!("{i:03}"),
                        repo: rng.random_range(0..3),
                        rule: [Some("r"), Some("s"), None][rng.random_range(0..3)],
                        tag: [Some("main"), Some("dev"), Some("v1"), None][rng.random_range(0..4)],
                        status,
                        started_at,
                    }
                })
                .collect();
            for s in &specs {
                sqlx::query(
                    "INSERT INTO builds (id, repository_id, rule_id, trigger, git_ref, tag, dockerfile, status, created_at, started_at) \
                     VALUES (?, ?, ?, 'push', 'refs/heads/main', ?, 'Dockerfile', ?, ?, ?)",
                )
                .bind(&s.id)
                .bind(&repos[s.repo])
                .bind(s.rule)
                .bind(s.tag)
                .bind(s.status)
                .bind(now())
                .bind(&s.started_at)
                .execute(&db)
                .await
                .unwrap();
            }
            fn owner(s: &Spec) -> tag_owner::Build<'_> {
                tag_owner::Build {
                    id: &s.id,
                    rule_id: s.rule,
                    tag: s.tag,
                    stage: stage(s.status),
                }
            }
            for s in specs.iter().filter(|s| s.tag.is_some()) {
                let builds: Vec<tag_owner::Build<'_>> = specs
                    .iter()
                    .filter(|o| o.repo == s.repo)
                    .map(owner)
                    .collect();
                let me = builds.iter().find(|b| b.id == s.id).unwrap();
                let tag = s.tag.unwrap();
                let sql = newer_owner_of_tag(&db, &s.id, &repos[s.repo], tag)
                    .await
                    .unwrap();
                assert_eq!(
                    sql.as_deref(),
                    tag_owner::newer_owner(me, tag, &builds),
                    "round {round}, build {}",
                    s.id
                );
            }
            let all: Vec<queue_order::Build<'_>> = specs
                .iter()
                .map(|s| queue_order::Build {
                    repo: &repos[s.repo],
                    started_at: s.started_at.as_deref(),
                    owner: owner(s),
                })
                .collect();
            let limit = rng.random_range(1..4);
            let want = queue_order::next_to_start(&all, limit);

            // The snapshot the API ranks queued builds from leads to the same first place.
            let snapshot = queue_snapshot(&db).await.unwrap();
            let from_snapshot: Vec<queue_order::Build<'_>> = snapshot
                .iter()
                .map(|r| queue_order::Build {
                    repo: &r.repository_id,
                    started_at: r.started_at.as_deref(),
                    owner: tag_owner::Build {
                        id: &r.id,
                        rule_id: r.rule_id.as_deref(),
                        tag: r.tag.as_deref(),
                        stage: stage(&r.status),
                    },
                })
                .collect();
            let first = queue_order::queue_positions(&from_snapshot, limit)
                .first()
                .map(|(id, _)| *id);
            if want.is_some() {
                assert_eq!(first, want, "round {round}: snapshot's first place");
            }

            let got = claim_next(&db, limit).await.unwrap().map(|b| b.id);
            assert_eq!(got.as_deref(), want, "round {round}, limit {limit}");
            claimed_some += usize::from(got.is_some());
        }
        assert!(claimed_some > 100, "only {claimed_some} rounds claimed");
    }

    #[tokio::test]
    async fn a_logs_size_is_counted_in_bytes() {
        let (_dir, db, repos) = test_db().await;
        sqlx::query(
            "INSERT INTO builds (id, repository_id, trigger, git_ref, dockerfile, status, created_at) \
             VALUES ('b1', ?, 'push', 'refs/heads/main', 'Dockerfile', 'building', ?)",
        )
        .bind(&repos[0])
        .bind(now())
        .execute(&db)
        .await
        .unwrap();
        assert_eq!(log_size(&db, "b1").await.unwrap(), (0, 0));
        let lines = ["plain".to_string(), "构建成功 ✓".to_string(), String::new()];
        append_log(&db, "b1", 0, &lines).await.unwrap();
        let bytes: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
        assert_eq!(bytes, 6 + 17 + 1);
        assert_eq!(log_size(&db, "b1").await.unwrap(), (3, bytes));
    }

    #[tokio::test]
    async fn interrupted_builds_are_queued_again_until_their_attempts_run_out() {
        let (_dir, db, repos) = test_db().await;
        for (id, status, attempt) in [
            ("b1", "building", 1),
            ("b2", "building", 2),
            ("b3", "building", 3),
            ("b4", "succeeded", 1),
            ("b5", "queued", 1),
        ] {
            sqlx::query(
                "INSERT INTO builds (id, repository_id, trigger, git_ref, dockerfile, status, created_at, started_at, attempt) \
                 VALUES (?, ?, 'push', 'refs/heads/main', 'Dockerfile', ?, ?, ?, ?)",
            )
            .bind(id)
            .bind(&repos[0])
            .bind(status)
            .bind(now())
            .bind((status != "queued").then(now))
            .bind(attempt)
            .execute(&db)
            .await
            .unwrap();
        }
        let only = requeue_interrupted(&db, Some("b1"), 3).await.unwrap();
        assert_eq!(
            only,
            [Interrupted {
                id: "b1".into(),
                attempt: 2,
                requeued: true
            }]
        );
        let all = requeue_interrupted(&db, None, 3).await.unwrap();
        assert_eq!(
            all,
            [
                Interrupted {
                    id: "b2".into(),
                    attempt: 3,
                    requeued: true
                },
                Interrupted {
                    id: "b3".into(),
                    attempt: 3,
                    requeued: false
                },
            ]
        );
        let b1 = get(&db, "b1").await.unwrap().unwrap();
        assert_eq!((b1.status.as_str(), b1.attempt), ("queued", 2));
        assert_eq!(b1.started_at, None);
        let b3 = get(&db, "b3").await.unwrap().unwrap();
        assert_eq!(b3.status, "failed");
        assert_eq!(
            b3.error.as_deref(),
            Some("interrupted 3 times: kiln stopped during each attempt")
        );
        assert!(b3.finished_at.is_some());
        for (id, status) in [("b4", "succeeded"), ("b5", "queued")] {
            assert_eq!(get(&db, id).await.unwrap().unwrap().status, status, "{id}");
        }
        // Only a claim makes a row `building` again.
        let claimed = claim_next(&db, 1).await.unwrap().unwrap();
        assert_eq!((claimed.id.as_str(), claimed.attempt), ("b1", 2));
    }
}
