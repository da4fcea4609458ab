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
#[derive(Debug, Clone, sqlx::FromRow)]
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
    /// The push's `before` (issue 9, path filters).
    pub before_sha: Option<String>,
}

const SELECT: &str = "SELECT b.id, b.repository_id, n.name AS namespace, r.name AS repository, b.rule_id, b.event_id, \
     b.trigger, b.git_ref, b.commit_sha, b.tag, b.image, b.dockerfile, b.context, b.version, b.overwrite, b.status, \
     b.error, b.digest, b.created_at, b.started_at, b.finished_at, b.before_sha \
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
         context, version, overwrite, status, created_at, before_sha) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
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
    .bind(b.before_sha)
    .execute(&mut *tx)
    .await?;
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

/// Claims the oldest queued build a worker may start: `queued` → `building`, atomically.
///
/// A tag has one owner at a time: a queued build is skipped while another build of the same image tag
/// runs, or waits in the queue ahead of it, so builds of one tag run one after the other in queue
/// (push) order. A build whose tag is not known yet ("build now", resolved by the worker) counts as
/// every tag of its rule. See `domain::tag_owner` for the rule in plain code.
pub async fn claim_next(db: &Db) -> Result<Option<BuildRow>, sqlx::Error> {
    let claimed: Option<(String,)> = sqlx::query_as(
        "UPDATE builds SET status = 'building', started_at = ? \
         WHERE id = (SELECT b.id FROM builds b WHERE b.status = 'queued' AND NOT EXISTS ( \
             SELECT 1 FROM builds o WHERE o.repository_id = b.repository_id AND o.id <> b.id \
               AND (o.status = 'building' OR (o.status = 'queued' AND o.id < b.id)) \
               AND (o.tag = b.tag OR ((o.tag IS NULL OR b.tag IS NULL) AND o.rule_id = b.rule_id))) \
           ORDER BY b.id LIMIT 1) \
         AND status = 'queued' RETURNING id",
    )
    .bind(now())
    .fetch_optional(db)
    .await?;
    match claimed {
        Some((id,)) => get(db, &id).await,
        None => Ok(None),
    }
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

/// The worker found the commit and the tag it builds.
pub async fn set_target(
    db: &Db,
    id: &str,
    git_ref: &str,
    commit: &str,
    tag: &str,
    image: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE builds SET git_ref = ?, commit_sha = ?, tag = ?, image = ? WHERE id = ?")
        .bind(git_ref)
        .bind(commit)
        .bind(tag)
        .bind(image)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Ends a running build. Returns false when it was no longer `building` (cancelled meanwhile).
pub async fn finish<'e, E: sqlx::SqliteExecutor<'e>>(
    db: E,
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
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
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
    let r = sqlx::query(
        "UPDATE builds SET status = 'cancelled', error = ?, finished_at = ? \
         WHERE repository_id = ? AND rule_id = ? AND git_ref = ? AND status = 'queued' AND id < ?",
    )
    .bind(format!("superseded by {newer}"))
    .bind(now())
    .bind(repository_id)
    .bind(rule_id)
    .bind(git_ref)
    .bind(newer)
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected())
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

/// Cancels a queued or running build; returns the status it had (None: no such build).
pub async fn cancel(db: &Db, id: &str) -> Result<Option<String>, sqlx::Error> {
    let mut tx = super::write_tx(db).await?;
    let before: Option<(String,)> = sqlx::query_as("SELECT status FROM builds WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some((status,)) = &before
        && (status == "queued" || status == "building")
    {
        sqlx::query("UPDATE builds SET status = 'cancelled', error = 'cancelled by user', finished_at = ? WHERE id = ?")
            .bind(now())
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(before.map(|(s,)| s))
}

/// At start: builds a crash left `building` cannot resume; they end `failed` ("interrupted").
pub async fn fail_interrupted(db: &Db) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE builds SET status = 'failed', error = 'interrupted: kiln stopped during the build', finished_at = ? \
         WHERE status = 'building'",
    )
    .bind(now())
    .execute(db)
    .await?;
    Ok(r.rows_affected())
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

/// Is a build of this repository and tag running now? (It will record the version itself.)
pub async fn running_with_tag(
    db: &Db,
    repository_id: &str,
    tag: &str,
) -> Result<bool, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM builds WHERE repository_id = ? AND tag = ? AND status = 'building' LIMIT 1",
    )
    .bind(repository_id)
    .bind(tag)
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
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
    use crate::domain::tag_owner::{self, Stage};
    use rand::{Rng, SeedableRng};

    struct Spec {
        id: String,
        repo: usize,
        rule: Option<&'static str>,
        tag: Option<&'static str>,
        status: &'static str,
    }

    fn stage(status: &str) -> Stage {
        match status {
            "queued" => Stage::Queued,
            "building" => Stage::Building,
            "succeeded" => Stage::Succeeded,
            _ => Stage::Ended,
        }
    }

    /// The claim statement is the domain's tag rule: over random queues, the build SQLite claims is the
    /// one `tag_owner::next_to_start` picks (the oldest over the repositories), and a finished build's
    /// newer owner is the domain's too.
    #[tokio::test]
    async fn claim_follows_the_domain_tag_rule() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::connect(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        let ns = super::super::namespaces::insert(&db, "ns").await.unwrap();
        let mut repos = Vec::new();
        for name in ["a", "b"] {
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
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        for round in 0..300 {
            sqlx::query("DELETE FROM builds")
                .execute(&db)
                .await
                .unwrap();
            let n = rng.random_range(0..9);
            let specs: Vec<Spec> = (0..n)
                .map(|i| Spec {
                    id: format!("{i:03}"),
                    repo: rng.random_range(0..2),
                    rule: [Some("r"), Some("s"), None][rng.random_range(0..3)],
                    tag: [Some("main"), Some("dev"), None][rng.random_range(0..3)],
                    status: [
                        "queued",
                        "queued",
                        "building",
                        "succeeded",
                        "failed",
                        "cancelled",
                    ][rng.random_range(0..6)],
                })
                .collect();
            for s in &specs {
                sqlx::query(
                    "INSERT INTO builds (id, repository_id, rule_id, trigger, git_ref, tag, dockerfile, status, created_at) \
                     VALUES (?, ?, ?, 'push', 'refs/heads/main', ?, 'Dockerfile', ?, ?)",
                )
                .bind(&s.id)
                .bind(&repos[s.repo])
                .bind(s.rule)
                .bind(s.tag)
                .bind(s.status)
                .bind(now())
                .execute(&db)
                .await
                .unwrap();
            }
            let per_repo = |repo: usize| -> Vec<tag_owner::Build<'_>> {
                specs
                    .iter()
                    .filter(|s| s.repo == repo)
                    .map(|s| tag_owner::Build {
                        id: &s.id,
                        rule_id: s.rule,
                        tag: s.tag,
                        stage: stage(s.status),
                    })
                    .collect()
            };
            for s in specs.iter().filter(|s| s.tag.is_some()) {
                let builds = per_repo(s.repo);
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
            let want = [0, 1]
                .into_iter()
                .filter_map(|r| tag_owner::next_to_start(&per_repo(r)))
                .min();
            let got = claim_next(&db).await.unwrap().map(|b| b.id);
            assert_eq!(got.as_deref(), want, "round {round}");
        }
    }
}
