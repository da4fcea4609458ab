use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::{PageQuery, load_repo, paginate};
use crate::app::App;
use crate::db::{self, rules::RuleFields, rules::RuleRow};
use crate::domain::FieldError;
use crate::domain::build_limits::RuleNetwork;
use crate::domain::build_settings::{self, BuildSettings, SettingError};
use crate::domain::paths::PathFilter;
use crate::domain::pattern::RefPattern;
use crate::domain::rules::{
    GitRef, PlanContext, PushEvent, RefKind, normalize_repo_path, plan_builds, validate_rule,
};
use crate::domain::schedule::validate_rule_schedule;
use crate::http::auth::{Caller, Role};
use crate::http::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};

#[derive(Serialize)]
pub struct RuleView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub dockerfile: String,
    pub context: String,
    pub version: String,
    pub overwrite: bool,
    pub enabled: bool,
    pub created_at: String,
    pub updated_at: String,
    // Build settings (issue 9).
    pub build_args: std::collections::BTreeMap<String, String>,
    /// `""`: the Dockerfile's last stage.
    pub target: String,
    pub no_cache: bool,
    pub extra_tags: Vec<String>,
    /// `null`: the server's default, shown in `effective_timeout_minutes`.
    pub timeout_minutes: Option<u32>,
    pub effective_timeout_minutes: u64,
    // -- schedules and path filters (issue 9) --
    /// Cron expression (UTC), or null.
    pub schedule: Option<String>,
    pub paths: Vec<String>,
    pub ignore_paths: Vec<String>,
    // -- build limits (issue 11) --
    /// `default` (the server's `KILN_BUILD_NETWORK`) or `none`.
    pub network: RuleNetwork,
    /// What looks wrong but is kept: build arguments that look like secrets.
    pub warnings: Vec<String>,
}

impl RuleView {
    /// The view, with the server's default timeout (`KILN_BUILD_TIMEOUT_MINUTES`) filled in.
    pub fn new(r: RuleRow, default_timeout: std::time::Duration) -> Self {
        let settings = r.settings();
        let effective = build_settings::effective_timeout(&settings, default_timeout);
        let (paths, ignore_paths) = (r.path_list(), r.ignore_path_list());
        RuleView {
            warnings: build_settings::secret_warnings(&settings.build_args),
            schedule: r.schedule.clone(),
            paths,
            ignore_paths,
            build_args: settings.build_args,
            target: settings.target,
            no_cache: settings.no_cache,
            extra_tags: settings.extra_tags,
            timeout_minutes: settings.timeout_minutes,
            network: settings.network,
            effective_timeout_minutes: build_settings::whole_minutes(effective),
            id: r.id,
            kind: r.kind,
            name: r.name,
            dockerfile: r.dockerfile,
            context: if r.context.is_empty() {
                ".".into()
            } else {
                r.context
            },
            version: r.version,
            overwrite: r.overwrite,
            enabled: r.enabled,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRule {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub dockerfile: Option<String>,
    pub context: Option<String>,
    pub version: Option<String>,
    pub overwrite: Option<bool>,
    pub enabled: Option<bool>,
    // Build settings (issue 9); see `SettingsInput`.
    #[serde(default, deserialize_with = "present")]
    pub build_args: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    pub target: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub no_cache: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    pub extra_tags: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    pub timeout_minutes: Option<Option<i64>>,
    // -- schedules and path filters (issue 9) --
    pub schedule: Option<String>,
    pub paths: Option<Vec<String>>,
    pub ignore_paths: Option<Vec<String>>,
    // -- build limits (issue 11) --
    #[serde(default, deserialize_with = "present")]
    pub network: Option<Option<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateRule {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: Option<String>,
    pub dockerfile: Option<String>,
    pub context: Option<String>,
    pub version: Option<String>,
    pub overwrite: Option<bool>,
    pub enabled: Option<bool>,
    // Build settings (issue 9); see `SettingsInput`.
    #[serde(default, deserialize_with = "present")]
    pub build_args: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    pub target: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub no_cache: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    pub extra_tags: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    pub timeout_minutes: Option<Option<i64>>,
    // -- schedules and path filters (issue 9) --
    /// `null` removes the schedule; absent keeps it.
    #[serde(default, deserialize_with = "present")]
    pub schedule: Option<Option<String>>,
    pub paths: Option<Vec<String>>,
    pub ignore_paths: Option<Vec<String>>,
    // -- build limits (issue 11) --
    #[serde(default, deserialize_with = "present")]
    pub network: Option<Option<String>>,
}

/// The build settings of a create or update body (issue 9). Absent: the default (create) or unchanged
/// (update); `null`: the default.
struct SettingsInput {
    build_args: Option<serde_json::Value>,
    target: Option<Option<String>>,
    no_cache: Option<Option<bool>>,
    extra_tags: Option<Option<Vec<String>>>,
    timeout_minutes: Option<Option<i64>>,
    network: Option<Option<String>>,
}

macro_rules! settings_input {
    ($body:expr) => {
        SettingsInput {
            build_args: $body.build_args,
            target: $body.target,
            no_cache: $body.no_cache,
            extra_tags: $body.extra_tags,
            timeout_minutes: $body.timeout_minutes,
            network: $body.network,
        }
    };
}

/// A field that is in the body, `null` included (`Some(None)` for `null`; absent stays `None`).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

impl SettingsInput {
    /// `base` with the fields the body gives (each checked as it is read).
    fn apply(self, mut base: BuildSettings) -> Result<BuildSettings, SettingError> {
        if let Some(v) = self.build_args {
            base.build_args = build_settings::build_args_from_json(&v)?;
        }
        if let Some(t) = self.target {
            base.target = t.unwrap_or_default();
        }
        if let Some(n) = self.no_cache {
            base.no_cache = n.unwrap_or_default();
        }
        if let Some(t) = self.extra_tags {
            base.extra_tags = t.unwrap_or_default();
        }
        if let Some(m) = self.timeout_minutes {
            base.timeout_minutes = m
                .map(build_settings::validate_timeout_minutes)
                .transpose()?;
        }
        if let Some(n) = self.network {
            base.network = match n {
                None => RuleNetwork::Default,
                Some(n) => RuleNetwork::parse(&n).map_err(|message| SettingError {
                    field: "network".into(),
                    code: "invalid_value",
                    message,
                })?,
            };
        }
        Ok(base)
    }
}

fn setting_error(e: SettingError) -> ApiError {
    ApiError::invalid(&e.field, e.code, e.message)
}

/// Validates and normalizes a full set of rule fields.
fn checked(mut f: RuleFields) -> ApiResult<RuleFields> {
    let kind: RefKind = f.kind.parse().map_err(|e: FieldError| ApiError::from(e))?;
    f.dockerfile = normalize_repo_path(&f.dockerfile)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "dockerfile",
                "invalid_path",
                "dockerfile must be a file path inside the repository, like docker/Dockerfile",
            )
        })?;
    f.context = normalize_repo_path(&f.context).ok_or_else(|| {
        ApiError::invalid(
            "context",
            "invalid_path",
            "context must be a directory inside the repository (\".\" for its root)",
        )
    })?;
    validate_rule(kind, &f.name, &f.version, &f.dockerfile, &f.context)?;
    let pattern = RefPattern::parse(&f.name)?;
    build_settings::validate_settings(&f.settings, &pattern).map_err(setting_error)?;
    f.kind = kind.as_str().to_string();
    // -- schedules and path filters (issue 9) --
    // "" is no schedule, like null; a schedule is stored as written (trimmed).
    f.schedule = f
        .schedule
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if let Some(schedule) = &f.schedule {
        validate_rule_schedule(kind, &f.name, schedule)?;
    }
    PathFilter::parse(&f.paths, &f.ignore_paths)?;
    Ok(f)
}

pub async fn create_rule(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<CreateRule>,
) -> ApiResult<(StatusCode, axum::Json<RuleView>)> {
    let view = create(&app, &caller, &ns, &repo, body).await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// Adds a rule to `ns/repo` (write role; the repository must have a git source): the API's
/// `POST .../rules` and the console's "add rule" form.
pub async fn create(
    app: &App,
    caller: &Caller,
    ns: &str,
    repo: &str,
    body: CreateRule,
) -> ApiResult<RuleView> {
    let row = load_repo(app, caller, ns, repo, Role::Write).await?;
    if !row.has_source {
        return Err(ApiError::conflict(
            "no_source",
            format!(
                "{ns}/{repo} has no git source: link one with PUT .../source before adding build rules"
            ),
        ));
    }
    let fields = checked(RuleFields {
        kind: body.kind,
        name: body.name,
        dockerfile: body.dockerfile.unwrap_or_else(|| "Dockerfile".into()),
        context: body.context.unwrap_or_default(),
        version: body.version.unwrap_or_default(),
        overwrite: body.overwrite.unwrap_or(true),
        enabled: body.enabled.unwrap_or(true),
        settings: settings_input!(body)
            .apply(BuildSettings::default())
            .map_err(setting_error)?,
        schedule: body.schedule,
        paths: body.paths.unwrap_or_default(),
        ignore_paths: body.ignore_paths.unwrap_or_default(),
    })?;
    let rule = db::rules::insert(&app.db, &row.id, &fields).await?;
    Ok(RuleView::new(rule, app.config.build_timeout))
}

/// Newest first, like every list (rules are matched oldest first: the first of two rules that would
/// give the same tag builds it).
pub async fn list_rules(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    let row = load_repo(&app, &caller, &ns, &repo, Role::Read).await?;
    let mut rules = db::rules::list(&app.db, &row.id).await?;
    rules.reverse();
    let default_timeout = app.config.build_timeout;
    paginate(
        rules,
        &q,
        |r| r.id.clone(),
        |r| RuleView::new(r, default_timeout),
    )
}

pub async fn load_rule(
    app: &App,
    caller: &Caller,
    ns: &str,
    repo: &str,
    id: &str,
    role: Role,
) -> ApiResult<(db::repos::RepoRow, RuleRow)> {
    let row = load_repo(app, caller, ns, repo, role).await?;
    let rule = db::rules::get(&app.db, &row.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("rule {id} of {ns}/{repo}")))?;
    Ok((row, rule))
}

pub async fn get_rule(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo, id)): ApiPath<(String, String, String)>,
) -> ApiResult<axum::Json<RuleView>> {
    let (_, rule) = load_rule(&app, &caller, &ns, &repo, &id, Role::Read).await?;
    Ok(axum::Json(RuleView::new(rule, app.config.build_timeout)))
}

pub async fn update_rule(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo, id)): ApiPath<(String, String, String)>,
    ApiJson(body): ApiJson<UpdateRule>,
) -> ApiResult<axum::Json<RuleView>> {
    Ok(axum::Json(
        update(&app, &caller, &ns, &repo, &id, body).await?,
    ))
}

/// Changes the fields `body` gives of rule `id` (write role): the API's `PATCH .../rules/{id}` and
/// the console's "edit rule" form and enable/disable buttons.
pub async fn update(
    app: &App,
    caller: &Caller,
    ns: &str,
    repo: &str,
    id: &str,
    body: UpdateRule,
) -> ApiResult<RuleView> {
    let (_, rule) = load_rule(app, caller, ns, repo, id, Role::Write).await?;
    let old = RuleFields::from(&rule);
    let fields = checked(RuleFields {
        kind: body.kind.unwrap_or(old.kind),
        name: body.name.unwrap_or(old.name),
        dockerfile: body.dockerfile.unwrap_or(old.dockerfile),
        context: body.context.unwrap_or(old.context),
        version: body.version.unwrap_or(old.version),
        overwrite: body.overwrite.unwrap_or(old.overwrite),
        enabled: body.enabled.unwrap_or(old.enabled),
        settings: settings_input!(body)
            .apply(old.settings)
            .map_err(setting_error)?,
        schedule: body.schedule.unwrap_or(old.schedule),
        paths: body.paths.unwrap_or(old.paths),
        ignore_paths: body.ignore_paths.unwrap_or(old.ignore_paths),
    })?;
    let rule = db::rules::update(&app.db, &rule.id, &fields).await?;
    Ok(RuleView::new(rule, app.config.build_timeout))
}

pub async fn delete_rule(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo, id)): ApiPath<(String, String, String)>,
) -> ApiResult<StatusCode> {
    delete(&app, &caller, &ns, &repo, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes rule `id` of `ns/repo` (write role).
pub async fn delete(app: &App, caller: &Caller, ns: &str, repo: &str, id: &str) -> ApiResult<()> {
    let (_, rule) = load_rule(app, caller, ns, repo, id, Role::Write).await?;
    db::rules::delete(&app.db, &rule.id).await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewQuery {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub commit: String,
}

#[derive(Serialize)]
pub struct PreviewBuild {
    pub rule_id: String,
    pub tag: String,
    pub image: String,
    /// A version with this tag exists already: the build would replace it.
    pub would_overwrite: bool,
}

#[derive(Serialize)]
pub struct Preview {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub commit: String,
    pub builds: Vec<PreviewBuild>,
    /// Every rule's decision, as the events view shows it.
    pub rules: serde_json::Value,
}

/// Which rules a push of `ref` at `commit` would build, and the exact tags, without building.
pub async fn preview_rules(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<PreviewQuery>,
) -> ApiResult<axum::Json<Preview>> {
    Ok(axum::Json(preview(&app, &caller, &ns, &repo, q).await?))
}

/// Which rules of `ns/repo` a push of `q.git_ref` at `q.commit` would build (read role).
pub async fn preview(
    app: &App,
    caller: &Caller,
    ns: &str,
    repo: &str,
    q: PreviewQuery,
) -> ApiResult<Preview> {
    let row = load_repo(app, caller, ns, repo, Role::Read).await?;
    let git_ref = GitRef::parse(&q.git_ref).ok_or_else(|| {
        ApiError::invalid(
            "ref",
            "invalid_ref",
            "ref must be a full ref: refs/heads/NAME or refs/tags/NAME",
        )
    })?;
    let commit = q.commit.trim().to_ascii_lowercase();
    if !((7..=40).contains(&commit.len()) && commit.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Err(ApiError::invalid(
            "commit",
            "invalid_commit",
            "commit must be 7 to 40 hex characters",
        ));
    }
    let rules = db::rules::list(&app.db, &row.id).await?;
    let specs: Vec<_> = rules.iter().map(RuleRow::spec).collect();
    let event = PushEvent {
        git_ref,
        commit: commit.clone(),
        message: None,
        date: chrono::Utc::now().date_naive(),
    };
    let plan = plan_builds(
        &specs,
        &event,
        &PlanContext {
            repository_hidden: row.hidden,
        },
    );
    let image = app.image_name(ns, repo);
    let mut builds = Vec::new();
    for b in plan.builds {
        let would_overwrite = db::versions::get(&app.db, &row.id, &b.tag).await?.is_some();
        builds.push(PreviewBuild {
            image: format!("{image}:{}", b.tag),
            rule_id: b.rule_id,
            tag: b.tag,
            would_overwrite,
        });
    }
    let rules =
        serde_json::from_str(&crate::ingest::decisions_json(&plan.outcomes)).unwrap_or_default();
    Ok(Preview {
        git_ref: q.git_ref,
        commit,
        builds,
        rules,
    })
}
