use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::{PageQuery, load_repo, paginate};
use crate::app::App;
use crate::db::{self, versions::HistoryRow, versions::VersionRow};
use crate::http::auth::{Caller, Role};
use crate::http::error::{ApiError, ApiPath, ApiQuery, ApiResult};

#[derive(Serialize)]
pub struct VersionView {
    pub tag: String,
    pub digest: String,
    pub source: String,
    pub build_id: Option<String>,
    pub commit: Option<String>,
    pub image: String,
    pub pushed_at: String,
    pub hidden: bool,
    /// Earlier digests of this tag, newest first (only on GET .../versions/{tag}).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryView>>,
}

#[derive(Serialize)]
pub struct HistoryView {
    pub digest: String,
    pub source: String,
    pub build_id: Option<String>,
    pub pushed_at: String,
    pub replaced_at: String,
}

impl From<HistoryRow> for HistoryView {
    fn from(h: HistoryRow) -> Self {
        HistoryView {
            digest: h.digest,
            source: h.source,
            build_id: h.build_id,
            pushed_at: h.pushed_at,
            replaced_at: h.replaced_at,
        }
    }
}

fn view(image: &str, v: VersionRow) -> VersionView {
    VersionView {
        image: format!("{image}:{}", v.tag),
        tag: v.tag,
        digest: v.digest,
        source: v.source,
        build_id: v.build_id,
        commit: v.commit_sha,
        pushed_at: v.pushed_at,
        hidden: v.hidden,
        history: None,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct VersionsQuery {
    #[serde(default)]
    include_hidden: bool,
    limit: Option<i64>,
    cursor: Option<String>,
}

pub async fn list_versions(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<VersionsQuery>,
) -> ApiResult<Response> {
    let row = load_repo(&app, &caller, &ns, &repo, Role::Read).await?;
    let image = app.image_name(&ns, &repo);
    let versions = db::versions::list(&app.db, &row.id, q.include_hidden).await?;
    // Newest first; the cursor is `pushed_at tag`, unique and in the same order.
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    };
    paginate(
        versions,
        &page,
        |v| format!("{} {}", v.pushed_at, v.tag),
        |v| view(&image, v),
    )
}

/// Every version of a repository (hidden ones too when asked), newest first, each with the digests
/// its tag held before (what `GET .../versions/{tag}` gives for one tag).
pub async fn list_with_history(
    app: &App,
    caller: &Caller,
    ns: &str,
    repo: &str,
    include_hidden: bool,
) -> ApiResult<Vec<VersionView>> {
    let row = load_repo(app, caller, ns, repo, Role::Read).await?;
    let image = app.image_name(ns, repo);
    let versions = db::versions::list(&app.db, &row.id, include_hidden).await?;
    let mut history: std::collections::HashMap<String, Vec<HistoryView>> = Default::default();
    for h in db::versions::history_of_repo(&app.db, &row.id).await? {
        history.entry(h.tag).or_default().push(h.entry.into());
    }
    Ok(versions
        .into_iter()
        .map(|v| {
            let earlier = history.remove(&v.tag).unwrap_or_default();
            let mut v = view(&image, v);
            v.history = Some(earlier);
            v
        })
        .collect())
}

/// One version with the digests its tag held before.
pub async fn get_version(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo, tag)): ApiPath<(String, String, String)>,
) -> ApiResult<axum::Json<VersionView>> {
    let row = load_repo(&app, &caller, &ns, &repo, Role::Read).await?;
    let version = db::versions::get(&app.db, &row.id, &tag)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("version {ns}/{repo}:{tag}")))?;
    let history = db::versions::history(&app.db, &row.id, &tag).await?;
    let mut v = view(&app.image_name(&ns, &repo), version);
    v.history = Some(history.into_iter().map(Into::into).collect());
    Ok(axum::Json(v))
}

/// Hides or unhides one version.
pub async fn set_hidden(
    app: &App,
    caller: &Caller,
    ns: &str,
    repo: &str,
    tag: &str,
    hidden: bool,
) -> ApiResult<VersionView> {
    let row = load_repo(app, caller, ns, repo, Role::Write).await?;
    if !db::versions::set_hidden(&app.db, &row.id, tag, hidden).await? {
        return Err(ApiError::not_found(&format!("version {ns}/{repo}:{tag}")));
    }
    let version = db::versions::get(&app.db, &row.id, tag)
        .await?
        .ok_or_else(|| ApiError::not_found("version"))?;
    Ok(view(&app.image_name(ns, repo), version))
}

pub async fn hide_version(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo, tag)): ApiPath<(String, String, String)>,
) -> ApiResult<axum::Json<VersionView>> {
    Ok(axum::Json(
        set_hidden(&app, &caller, &ns, &repo, &tag, true).await?,
    ))
}

pub async fn unhide_version(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo, tag)): ApiPath<(String, String, String)>,
) -> ApiResult<axum::Json<VersionView>> {
    Ok(axum::Json(
        set_hidden(&app, &caller, &ns, &repo, &tag, false).await?,
    ))
}
