use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::load_repo;
use crate::app::App;
use crate::db::{self, versions::VersionRow};
use crate::http::auth::{Caller, Role};
use crate::http::error::{ApiPath, ApiQuery, ApiResult};

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
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct VersionsQuery {
    #[serde(default)]
    include_hidden: bool,
}

pub async fn list_versions(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<VersionsQuery>,
) -> ApiResult<axum::Json<Vec<VersionView>>> {
    let row = load_repo(&app, &caller, &ns, &repo, Role::Read).await?;
    let image = app.image_name(&ns, &repo);
    let versions = db::versions::list(&app.db, &row.id, q.include_hidden).await?;
    Ok(axum::Json(
        versions
            .into_iter()
            .map(|v: VersionRow| VersionView {
                image: format!("{image}:{}", v.tag),
                tag: v.tag,
                digest: v.digest,
                source: v.source,
                build_id: v.build_id,
                commit: v.commit_sha,
                pushed_at: v.pushed_at,
                hidden: v.hidden,
            })
            .collect(),
    ))
}
