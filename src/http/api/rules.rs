use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::{PageQuery, load_repo, paginate};
use crate::app::App;
use crate::db::{self, rules::RuleFields, rules::RuleRow};
use crate::domain::FieldError;
use crate::domain::paths::PathFilter;
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
    // -- schedules and path filters (issue 9) --
    /// Cron expression (UTC), or null.
    pub schedule: Option<String>,
    pub paths: Vec<String>,
    pub ignore_paths: Vec<String>,
}

impl From<RuleRow> for RuleView {
    fn from(r: RuleRow) -> Self {
        let (paths, ignore_paths) = (r.path_list(), r.ignore_path_list());
        RuleView {
            schedule: r.schedule,
            paths,
            ignore_paths,
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
    kind: String,
    name: String,
    dockerfile: Option<String>,
    context: Option<String>,
    version: Option<String>,
    overwrite: Option<bool>,
    enabled: Option<bool>,
    // -- schedules and path filters (issue 9) --
    schedule: Option<String>,
    paths: Option<Vec<String>>,
    ignore_paths: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRule {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    dockerfile: Option<String>,
    context: Option<String>,
    version: Option<String>,
    overwrite: Option<bool>,
    enabled: Option<bool>,
    // -- schedules and path filters (issue 9) --
    /// `null` removes the schedule; absent keeps it.
    #[serde(default, deserialize_with = "present")]
    schedule: Option<Option<String>>,
    paths: Option<Vec<String>>,
    ignore_paths: Option<Vec<String>>,
}

/// A field that may be `null`: `Some(None)` when null, `Some(Some(v))` when set (absent: `None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
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
    let row = load_repo(&app, &caller, &ns, &repo, Role::Write).await?;
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
        schedule: body.schedule,
        paths: body.paths.unwrap_or_default(),
        ignore_paths: body.ignore_paths.unwrap_or_default(),
    })?;
    let rule = db::rules::insert(&app.db, &row.id, &fields).await?;
    Ok((StatusCode::CREATED, axum::Json(rule.into())))
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
    paginate(rules, &q, |r| r.id.clone(), RuleView::from)
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
    Ok(axum::Json(rule.into()))
}

pub async fn update_rule(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo, id)): ApiPath<(String, String, String)>,
    ApiJson(body): ApiJson<UpdateRule>,
) -> ApiResult<axum::Json<RuleView>> {
    let (_, rule) = load_rule(&app, &caller, &ns, &repo, &id, Role::Write).await?;
    let old = RuleFields::from(&rule);
    let fields = checked(RuleFields {
        kind: body.kind.unwrap_or(old.kind),
        name: body.name.unwrap_or(old.name),
        dockerfile: body.dockerfile.unwrap_or(old.dockerfile),
        context: body.context.unwrap_or(old.context),
        version: body.version.unwrap_or(old.version),
        overwrite: body.overwrite.unwrap_or(old.overwrite),
        enabled: body.enabled.unwrap_or(old.enabled),
        schedule: body.schedule.unwrap_or(old.schedule),
        paths: body.paths.unwrap_or(old.paths),
        ignore_paths: body.ignore_paths.unwrap_or(old.ignore_paths),
    })?;
    let rule = db::rules::update(&app.db, &rule.id, &fields).await?;
    Ok(axum::Json(rule.into()))
}

pub async fn delete_rule(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo, id)): ApiPath<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let (_, rule) = load_rule(&app, &caller, &ns, &repo, &id, Role::Write).await?;
    db::rules::delete(&app.db, &rule.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewQuery {
    #[serde(rename = "ref")]
    git_ref: String,
    commit: String,
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
    let row = load_repo(&app, &caller, &ns, &repo, Role::Read).await?;
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
    let image = app.image_name(&ns, &repo);
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
    Ok(axum::Json(Preview {
        git_ref: q.git_ref,
        commit,
        builds,
        rules,
    }))
}
