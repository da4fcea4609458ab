//! `GET /`: the repositories of a namespace the viewer can see, searchable and paged.

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use tera::Context;

use super::error::ConsoleError;
use super::render;
use super::session::Viewer;
use crate::app::App;
use crate::db;
use crate::http::api::repos::RepoView;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/", get(home))
        .merge(super::new_repo::routes())
}

/// A row of the list: the repository, its newest build and its newest visible version.
#[derive(serde::Serialize)]
struct HomeRow {
    #[serde(flatten)]
    repo: RepoView,
    build: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

/// Repositories on one page.
const PAGE: usize = 25;

#[derive(Deserialize, Default)]
pub struct HomeQuery {
    ns: Option<String>,
    #[serde(default)]
    q: String,
    #[serde(default)]
    hidden: Option<String>,
    /// Repositories older than this id (the list is newest first).
    after: Option<String>,
}

async fn home(
    State(app): State<App>,
    viewer: Viewer,
    Query(q): Query<HomeQuery>,
) -> Result<Response, ConsoleError> {
    let namespaces = db::namespaces::list(&app.db, viewer.caller.namespace.as_deref()).await?;
    let mut names: Vec<String> = namespaces.iter().map(|n| n.name.clone()).collect();
    names.sort();
    let current = match q.ns.as_deref() {
        Some(ns) => Some(
            namespaces
                .iter()
                .find(|n| n.name == ns && viewer.caller.sees(ns))
                .ok_or_else(ConsoleError::not_found)?,
        ),
        None => namespaces.iter().min_by(|a, b| a.name.cmp(&b.name)),
    };
    let show_hidden = q
        .hidden
        .as_deref()
        .is_some_and(|v| v == "1" || v == "on" || v == "true");
    let mut ctx = Context::new();
    ctx.insert("namespaces", &names);
    ctx.insert("q", &q.q);
    ctx.insert("show_hidden", &show_hidden);
    if let Some(ns) = current {
        let needle = q.q.trim().to_lowercase();
        let rows: Vec<_> = db::repos::list(&app.db, &ns.id, show_hidden)
            .await?
            .into_iter()
            .filter(|r| needle.is_empty() || r.name.contains(&needle))
            .filter(|r| q.after.as_deref().is_none_or(|a| r.id.as_str() < a))
            .take(PAGE + 1)
            .collect();
        let more = rows.len() > PAGE;
        let rows: Vec<_> = rows.into_iter().take(PAGE).collect();
        let next = more.then(|| rows.last().map(|r| r.id.clone())).flatten();
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let mut activity: std::collections::HashMap<String, db::repos::ActivityRow> =
            db::repos::activity(&app.db, &ids)
                .await?
                .into_iter()
                .map(|a| (a.repository_id.clone(), a))
                .collect();
        let repos: Vec<HomeRow> = rows
            .into_iter()
            .map(|r| {
                let a = activity.remove(&r.id);
                let build = a.as_ref().and_then(|a| {
                    Some(serde_json::json!({
                        "id": a.build_id.as_ref()?,
                        "status": a.build_status,
                        "created_at": a.build_created_at,
                    }))
                });
                let version = a.as_ref().and_then(|a| {
                    Some(serde_json::json!({
                        "tag": a.version_tag.as_ref()?,
                        "pushed_at": a.version_pushed_at,
                    }))
                });
                HomeRow {
                    repo: RepoView::new(&app, r),
                    build,
                    version,
                }
            })
            .collect();
        ctx.insert("ns", &ns.name);
        ctx.insert("can_write", &viewer.can_write(&ns.name));
        ctx.insert("repos", &repos);
        ctx.insert("next", &next);
    }
    Ok(render::page(&viewer, "home.html", ctx))
}
