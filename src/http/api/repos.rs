use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::{PageQuery, load_repo, paginate};
use crate::app::App;
use crate::db::{self, repos::RepoRow};
use crate::domain::names::{validate_category, validate_repo_name, validate_summary};
use crate::http::auth::{Caller, Role};
use crate::http::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};

#[derive(Serialize)]
pub struct RepoView {
    pub namespace: String,
    pub name: String,
    pub summary: String,
    pub detail: String,
    pub category: String,
    pub hidden: bool,
    /// True when the repository has a git source (a CI repository).
    pub ci: bool,
    /// Where its images live: `{registry}/{namespace}/{name}`.
    pub image: String,
    pub created_at: String,
    pub updated_at: String,
}

impl RepoView {
    pub fn new(app: &App, r: RepoRow) -> Self {
        RepoView {
            image: app.image_name(&r.namespace, &r.name),
            namespace: r.namespace,
            name: r.name,
            summary: r.summary,
            detail: r.detail,
            category: r.category,
            hidden: r.hidden,
            ci: r.has_source,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Longest `detail` (Markdown) accepted.
const MAX_DETAIL: usize = 100_000;

/// At most [`MAX_DETAIL`] characters of text: lines and tabs, but no other control character.
fn validate_detail(detail: &str) -> ApiResult<()> {
    if detail.chars().count() > MAX_DETAIL {
        return Err(ApiError::invalid(
            "detail",
            "too_long",
            format!("detail must be at most {MAX_DETAIL} characters"),
        ));
    }
    if detail
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ApiError::invalid(
            "detail",
            "invalid_character",
            "detail must not contain control characters other than line breaks and tabs",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRepo {
    pub name: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub detail: String,
    pub category: Option<String>,
}

/// Namespace `ns`, after checking the caller may create repositories in it (a namespace it cannot
/// see is "not found").
pub async fn writable_namespace(
    app: &App,
    caller: &Caller,
    ns: &str,
) -> ApiResult<db::namespaces::NamespaceRow> {
    if !caller.sees(ns) {
        return Err(ApiError::not_found(&format!("namespace {ns}")));
    }
    caller.require(Role::Write, Some(ns))?;
    db::namespaces::by_name(&app.db, ns)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("namespace {ns}")))
}

/// Every field of a new repository that breaks its rule, in the order the API checks them (the API
/// answers the first; the console shows each next to its field).
pub fn create_errors(body: &CreateRepo) -> Vec<ApiError> {
    let mut errors: Vec<ApiError> = validate_repo_name(&body.name)
        .err()
        .map(Into::into)
        .into_iter()
        .collect();
    errors.extend(field_errors(
        &body.summary,
        &body.detail,
        body.category.as_deref().unwrap_or("other"),
    ));
    errors
}

/// The rules of a repository's summary, detail and category, each one broken, in the API's order.
pub fn field_errors(summary: &str, detail: &str, category: &str) -> Vec<ApiError> {
    [
        validate_summary(summary).map_err(ApiError::from),
        validate_detail(detail),
        validate_category(category).map_err(ApiError::from),
    ]
    .into_iter()
    .filter_map(Result::err)
    .collect()
}

/// Creates repository `body.name` in `ns` (the API's `POST .../repos` and the console's form).
pub async fn create(app: &App, caller: &Caller, ns: &str, body: CreateRepo) -> ApiResult<RepoView> {
    let namespace = writable_namespace(app, caller, ns).await?;
    if let Some(first) = create_errors(&body).into_iter().next() {
        return Err(first);
    }
    let category = body.category.unwrap_or_else(|| "other".into());
    let new = db::repos::NewRepo {
        namespace_id: &namespace.id,
        name: &body.name,
        summary: &body.summary,
        detail: &body.detail,
        category: &category,
    };
    let id = match db::repos::insert(&app.db, &new).await {
        Ok(id) => id,
        Err(e) if db::is_constraint(&e, "") => {
            return Err(ApiError::conflict(
                "already_exists",
                format!("repository '{ns}/{}' already exists", body.name),
            )
            .with_field("name"));
        }
        Err(e) => return Err(e.into()),
    };
    let row = db::repos::by_id(&app.db, &id)
        .await?
        .ok_or_else(|| ApiError::internal("repository vanished"))?;
    Ok(RepoView::new(app, row))
}

pub async fn create_repo(
    State(app): State<App>,
    caller: Caller,
    ApiPath(ns): ApiPath<String>,
    ApiJson(body): ApiJson<CreateRepo>,
) -> ApiResult<(StatusCode, axum::Json<RepoView>)> {
    let view = create(&app, &caller, &ns, body).await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListReposQuery {
    #[serde(default)]
    include_hidden: bool,
    limit: Option<i64>,
    cursor: Option<String>,
}

pub async fn list_repos(
    State(app): State<App>,
    caller: Caller,
    ApiPath(ns): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListReposQuery>,
) -> ApiResult<Response> {
    if !caller.sees(&ns) {
        return Err(ApiError::not_found(&format!("namespace {ns}")));
    }
    caller.require(Role::Read, Some(&ns))?;
    let namespace = db::namespaces::by_name(&app.db, &ns)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("namespace {ns}")))?;
    let rows = db::repos::list(&app.db, &namespace.id, q.include_hidden).await?;
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    };
    paginate(rows, &page, |r| r.id.clone(), |r| RepoView::new(&app, r))
}

pub async fn get_repo(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo)): ApiPath<(String, String)>,
) -> ApiResult<axum::Json<RepoView>> {
    let row = load_repo(&app, &caller, &ns, &repo, Role::Read).await?;
    Ok(axum::Json(RepoView::new(&app, row)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateRepo {
    pub name: Option<String>,
    pub summary: Option<String>,
    pub detail: Option<String>,
    pub category: Option<String>,
}

/// Changes a repository's summary, detail and category (fields left out keep their value).
pub async fn update(
    app: &App,
    caller: &Caller,
    ns: &str,
    repo: &str,
    body: UpdateRepo,
) -> ApiResult<RepoView> {
    let row = load_repo(app, caller, ns, repo, Role::Write).await?;
    if body.name.as_ref().is_some_and(|n| *n != row.name) {
        return Err(ApiError::invalid(
            "name",
            "immutable",
            "a repository's name never changes",
        ));
    }
    let summary = body.summary.unwrap_or(row.summary);
    let detail = body.detail.unwrap_or(row.detail);
    let category = body.category.unwrap_or(row.category);
    if let Some(first) = field_errors(&summary, &detail, &category)
        .into_iter()
        .next()
    {
        return Err(first);
    }
    db::repos::update_fields(&app.db, &row.id, &summary, &detail, &category).await?;
    let row = db::repos::by_id(&app.db, &row.id)
        .await?
        .ok_or_else(|| ApiError::not_found("repository"))?;
    Ok(RepoView::new(app, row))
}

pub async fn update_repo(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<UpdateRepo>,
) -> ApiResult<axum::Json<RepoView>> {
    Ok(axum::Json(update(&app, &caller, &ns, &repo, body).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeleteRepoQuery {
    confirm: Option<String>,
}

/// What deleting a repository did in the registry.
#[derive(Serialize)]
pub struct DeleteReport {
    pub deleted: String,
    /// Tags whose manifests the registry deleted.
    pub registry_deleted: Vec<String>,
    /// Tags left in the registry, each with the reason.
    pub registry_not_deleted: Vec<NotDeleted>,
}

#[derive(Serialize)]
pub struct NotDeleted {
    pub tag: String,
    pub reason: String,
}

/// Deletes the repository with its rules, webhooks and history, and its tags from the registry where
/// the registry allows it; the answer says what could not be deleted there. `confirm` must repeat
/// the repository's name.
pub async fn delete(
    app: &App,
    caller: &Caller,
    ns: &str,
    repo: &str,
    confirm: Option<&str>,
) -> ApiResult<DeleteReport> {
    let row = load_repo(app, caller, ns, repo, Role::Write).await?;
    if confirm != Some(row.name.as_str()) {
        return Err(ApiError::invalid(
            "confirm",
            "confirmation_required",
            format!(
                "deleting removes its rules, builds, history and registry tags: repeat the name as ?confirm={}",
                row.name
            ),
        ));
    }
    let name = format!("{ns}/{repo}");
    let mut report = DeleteReport {
        deleted: name.clone(),
        registry_deleted: vec![],
        registry_not_deleted: vec![],
    };
    match app.registry.tags(&name).await {
        Err(e) => report.registry_not_deleted.push(NotDeleted {
            tag: "*".into(),
            reason: format!("{e:#}"),
        }),
        // The registry has no such repository: nothing to delete there.
        Ok(None) => {}
        Ok(Some(tags)) => {
            for tag in tags {
                let result = match app.registry.manifest_digest(&name, &tag).await {
                    Ok(Some(digest)) => app.registry.delete_manifest(&name, &digest).await,
                    Ok(None) => Ok(()), // gone with an earlier tag of the same digest
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => report.registry_deleted.push(tag),
                    Err(e) => report.registry_not_deleted.push(NotDeleted {
                        tag,
                        reason: format!("{e:#}"),
                    }),
                }
            }
        }
    }
    db::repos::delete(&app.db, &row.id).await?;
    // Its source went with it (ON DELETE CASCADE).
    app.sources.invalidate();
    tracing::info!(repo = %name, not_deleted = report.registry_not_deleted.len(), "repository deleted");
    Ok(report)
}

pub async fn delete_repo(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<DeleteRepoQuery>,
) -> ApiResult<axum::Json<DeleteReport>> {
    Ok(axum::Json(
        delete(&app, &caller, &ns, &repo, q.confirm.as_deref()).await?,
    ))
}

/// Hides a repository (and every version it has) or unhides it (its versions keep their own flags).
pub async fn set_hidden(
    app: &App,
    caller: &Caller,
    ns: &str,
    repo: &str,
    hidden: bool,
) -> ApiResult<RepoView> {
    let row = load_repo(app, caller, ns, repo, Role::Write).await?;
    let mut tx = crate::db::write_tx(&app.db).await?;
    db::repos::set_hidden(&mut *tx, &row.id, hidden).await?;
    if hidden {
        // Hiding hides every version; unhiding the repository leaves their own flags alone.
        db::versions::hide_all(&mut *tx, &row.id).await?;
    }
    tx.commit().await?;
    let row = db::repos::by_id(&app.db, &row.id)
        .await?
        .ok_or_else(|| ApiError::not_found("repository"))?;
    Ok(RepoView::new(app, row))
}

pub async fn hide_repo(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo)): ApiPath<(String, String)>,
) -> ApiResult<axum::Json<RepoView>> {
    Ok(axum::Json(
        set_hidden(&app, &caller, &ns, &repo, true).await?,
    ))
}

pub async fn unhide_repo(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo)): ApiPath<(String, String)>,
) -> ApiResult<axum::Json<RepoView>> {
    Ok(axum::Json(
        set_hidden(&app, &caller, &ns, &repo, false).await?,
    ))
}
