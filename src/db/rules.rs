use super::{Db, new_id, now};
use crate::domain::build_limits::RuleNetwork;
use crate::domain::build_settings::BuildSettings;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RuleRow {
    pub id: String,
    pub repository_id: String,
    pub kind: String,
    pub name: String,
    pub dockerfile: String,
    pub context: String,
    pub version: String,
    pub overwrite: bool,
    pub enabled: bool,
    pub created_at: String,
    pub updated_at: String,
    // Build settings (issue 9): see `settings()`.
    /// JSON object of build argument names to values.
    pub build_args: String,
    pub target: String,
    pub no_cache: bool,
    /// JSON array of tag templates.
    pub extra_tags: String,
    pub timeout_minutes: Option<i64>,
    // -- schedules and path filters (issue 9) --
    /// A cron expression (see `domain::schedule`), or None.
    pub schedule: Option<String>,
    /// JSON array of globs.
    pub paths: String,
    /// JSON array of globs.
    pub ignore_paths: String,
    // -- build limits (issue 11) --
    /// `default` or `none` (`domain::build_limits::RuleNetwork`).
    pub network: String,
}

impl RuleRow {
    /// `paths` as a list (a stored list that does not read is no filter).
    pub fn path_list(&self) -> Vec<String> {
        serde_json::from_str(&self.paths).unwrap_or_default()
    }

    /// `ignore_paths` as a list.
    pub fn ignore_path_list(&self) -> Vec<String> {
        serde_json::from_str(&self.ignore_paths).unwrap_or_default()
    }

    /// The rule's path filter; stored patterns were validated on the way in, one that no longer
    /// compiles makes no filter (the push builds).
    pub fn path_filter(&self) -> crate::domain::paths::PathFilter {
        crate::domain::paths::PathFilter::parse(&self.path_list(), &self.ignore_path_list())
            .unwrap_or_default()
    }

    /// The rule as the pure matcher sees it.
    pub fn spec(&self) -> crate::domain::rules::RuleSpec {
        crate::domain::rules::RuleSpec {
            id: self.id.clone(),
            // Stored kinds were validated on the way in; an unreadable one matches nothing a push can be.
            kind: self
                .kind
                .parse()
                .unwrap_or(crate::domain::rules::RefKind::Branch),
            name: self.name.clone(),
            dockerfile: self.dockerfile.clone(),
            context: self.context.clone(),
            version: self.version.clone(),
            overwrite: self.overwrite,
            enabled: self.enabled,
            settings: self.settings(),
        }
    }

    /// The rule's build settings (validated on the way in; a stored value that no longer reads is
    /// the default).
    pub fn settings(&self) -> BuildSettings {
        BuildSettings {
            build_args: serde_json::from_str(&self.build_args).unwrap_or_default(),
            target: self.target.clone(),
            no_cache: self.no_cache,
            extra_tags: serde_json::from_str(&self.extra_tags).unwrap_or_default(),
            timeout_minutes: self.timeout_minutes.and_then(|m| u32::try_from(m).ok()),
            network: RuleNetwork::parse(&self.network).unwrap_or_default(),
        }
    }
}

/// The fields a user sets; `insert` and `update` take the whole set (PATCH merges first).
#[derive(Debug, Clone)]
pub struct RuleFields {
    pub kind: String,
    pub name: String,
    pub dockerfile: String,
    pub context: String,
    pub version: String,
    pub overwrite: bool,
    pub enabled: bool,
    /// Build settings (issue 9).
    pub settings: BuildSettings,
    // -- schedules and path filters (issue 9) --
    pub schedule: Option<String>,
    pub paths: Vec<String>,
    pub ignore_paths: Vec<String>,
}

impl From<&RuleRow> for RuleFields {
    fn from(r: &RuleRow) -> Self {
        RuleFields {
            kind: r.kind.clone(),
            name: r.name.clone(),
            dockerfile: r.dockerfile.clone(),
            context: r.context.clone(),
            version: r.version.clone(),
            overwrite: r.overwrite,
            enabled: r.enabled,
            settings: r.settings(),
            schedule: r.schedule.clone(),
            paths: r.path_list(),
            ignore_paths: r.ignore_path_list(),
        }
    }
}

/// The settings columns as stored: (build_args JSON, target, no_cache, extra_tags JSON, timeout_minutes).
fn settings_columns(s: &BuildSettings) -> (String, &str, bool, String, Option<i64>) {
    (
        serde_json::to_string(&s.build_args).unwrap_or_else(|_| "{}".into()),
        &s.target,
        s.no_cache,
        serde_json::to_string(&s.extra_tags).unwrap_or_else(|_| "[]".into()),
        s.timeout_minutes.map(i64::from),
    )
}

fn json_list(l: &[String]) -> String {
    serde_json::to_string(l).unwrap_or_else(|_| "[]".into())
}

pub async fn insert(db: &Db, repository_id: &str, f: &RuleFields) -> Result<RuleRow, sqlx::Error> {
    let ts = now();
    let (build_args, target, no_cache, extra_tags, timeout_minutes) = settings_columns(&f.settings);
    sqlx::query_as(
        "INSERT INTO rules (id, repository_id, kind, name, dockerfile, context, version, overwrite, enabled, created_at, updated_at, \
         build_args, target, no_cache, extra_tags, timeout_minutes, schedule, paths, ignore_paths, network) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
    )
    .bind(new_id())
    .bind(repository_id)
    .bind(&f.kind)
    .bind(&f.name)
    .bind(&f.dockerfile)
    .bind(&f.context)
    .bind(&f.version)
    .bind(f.overwrite)
    .bind(f.enabled)
    .bind(&ts)
    .bind(&ts)
    .bind(build_args)
    .bind(target)
    .bind(no_cache)
    .bind(extra_tags)
    .bind(timeout_minutes)
    .bind(&f.schedule)
    .bind(json_list(&f.paths))
    .bind(json_list(&f.ignore_paths))
    .bind(f.settings.network.as_str())
    .fetch_all(db)
    .await
    .and_then(super::one_returned)
}

pub async fn update(db: &Db, id: &str, f: &RuleFields) -> Result<RuleRow, sqlx::Error> {
    let (build_args, target, no_cache, extra_tags, timeout_minutes) = settings_columns(&f.settings);
    sqlx::query_as(
        "UPDATE rules SET kind = ?, name = ?, dockerfile = ?, context = ?, version = ?, overwrite = ?, enabled = ?, \
         build_args = ?, target = ?, no_cache = ?, extra_tags = ?, timeout_minutes = ?, \
         updated_at = ?, schedule = ?, paths = ?, ignore_paths = ?, network = ? WHERE id = ? RETURNING *",
    )
    .bind(&f.kind)
    .bind(&f.name)
    .bind(&f.dockerfile)
    .bind(&f.context)
    .bind(&f.version)
    .bind(f.overwrite)
    .bind(f.enabled)
    .bind(build_args)
    .bind(target)
    .bind(no_cache)
    .bind(extra_tags)
    .bind(timeout_minutes)
    .bind(now())
    .bind(&f.schedule)
    .bind(json_list(&f.paths))
    .bind(json_list(&f.ignore_paths))
    .bind(f.settings.network.as_str())
    .bind(id)
    .fetch_all(db)
    .await
    .and_then(super::one_returned)
}

pub async fn list<'e, E: sqlx::SqliteExecutor<'e>>(
    db: E,
    repository_id: &str,
) -> Result<Vec<RuleRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM rules WHERE repository_id = ? ORDER BY created_at, id")
        .bind(repository_id)
        .fetch_all(db)
        .await
}

pub async fn get(db: &Db, repository_id: &str, id: &str) -> Result<Option<RuleRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM rules WHERE repository_id = ? AND id = ?")
        .bind(repository_id)
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn delete(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM rules WHERE id = ?")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Removing a repository's source disables its rules; their builds stay.
pub async fn disable_all<'e, E: sqlx::SqliteExecutor<'e>>(
    db: E,
    repository_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE rules SET enabled = 0, updated_at = ? WHERE repository_id = ?")
        .bind(now())
        .bind(repository_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Enabled rules with a schedule, in repositories that are visible and have a source (schedules of
/// hidden repositories do not fire, like their pushes).
pub async fn scheduled(db: &Db) -> Result<Vec<RuleRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT ru.* FROM rules ru JOIN repositories r ON r.id = ru.repository_id \
         JOIN sources s ON s.repository_id = r.id \
         WHERE ru.schedule IS NOT NULL AND ru.enabled = 1 AND r.hidden = 0 ORDER BY ru.id",
    )
    .fetch_all(db)
    .await
}
