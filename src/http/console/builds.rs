//! The builds of the console: the repository's Builds tab, a build's page with its log (streamed
//! live by `static/build.js` through the log and status routes below), and cancel. Every route
//! goes through the API's functions in `http::api::builds` (the same checks, the same answers).

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tera::Context;

use super::error::{self, ConsoleError};
use super::render;
use super::session::{CsrfForm, Viewer};
use crate::app::App;
use crate::db::{self, builds::BuildStatus};
use crate::http::api::builds::{self as api, BuildView, LogQuery};
use crate::http::auth::Role;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/repos/{ns}/{repo}/builds", get(builds_tab))
        .route("/builds/{id}", get(build_page))
        .route("/builds/{id}/log", get(build_log))
        .route("/builds/{id}/status", get(build_status))
        .route("/builds/{id}/cancel", post(cancel))
}

/// Builds on one page of the tab.
const PAGE: i64 = 30;
/// Log lines the build page shows without JavaScript (the last ones; the rest is one link away).
const LOG_TAIL: i64 = 400;

/// A build as the console shows it: the API's view, and what the pages derive from it.
#[derive(Serialize)]
struct Shown {
    #[serde(flatten)]
    build: BuildView,
    /// Finished less started, once both are known.
    duration_ms: Option<i64>,
    /// `main` for `refs/heads/main`, `v1.2` for `refs/tags/v1.2`.
    ref_name: Option<String>,
    short_commit: Option<String>,
    /// The stages reached, in order: `{stage, ms}` (`stage` names a `builds.stages.*` message).
    stage_list: Vec<serde_json::Value>,
    /// Queued or building: the log may still grow, and the build may be cancelled.
    live: bool,
}

impl Shown {
    fn new(build: BuildView) -> Shown {
        let duration_ms = match (&build.started_at, &build.finished_at) {
            (Some(s), Some(f)) => match (
                chrono::DateTime::parse_from_rfc3339(s),
                chrono::DateTime::parse_from_rfc3339(f),
            ) {
                (Ok(s), Ok(f)) => Some((f - s).num_milliseconds().max(0)),
                _ => None,
            },
            _ => None,
        };
        let ref_name = build.git_ref.as_deref().map(|r| {
            r.strip_prefix("refs/heads/")
                .or_else(|| r.strip_prefix("refs/tags/"))
                .unwrap_or(r)
                .to_string()
        });
        let short_commit = build.commit.as_deref().map(|c| c.chars().take(7).collect());
        let s = &build.stages;
        let stage_list = [
            ("queued", s.queued_ms),
            ("fetch", s.fetch_ms),
            ("context", s.context_ms),
            ("build", s.build_ms),
            ("push", s.push_ms),
        ]
        .into_iter()
        .filter_map(|(stage, ms)| ms.map(|ms| serde_json::json!({"stage": stage, "ms": ms})))
        .collect();
        let live = !BuildStatus::is_finished(&build.status);
        Shown {
            duration_ms,
            ref_name,
            short_commit,
            stage_list,
            live,
            build,
        }
    }
}

#[derive(Deserialize, Default)]
struct TabQuery {
    /// Builds older than this id (the list is newest first).
    after: Option<String>,
}

/// `GET /repos/{ns}/{repo}/builds[?after=ID]`: the repository's builds, newest first, paged.
async fn builds_tab(
    State(app): State<App>,
    viewer: Viewer,
    Path((ns, repo)): Path<(String, String)>,
    Query(q): Query<TabQuery>,
) -> Result<Response, ConsoleError> {
    let (row, mut ctx) = super::repo_tab(&app, &viewer, &ns, &repo, Role::Read, "builds").await?;
    let page = db::Page {
        limit: PAGE,
        cursor: q.after.filter(|a| !a.is_empty()),
    };
    let views = api::list_views(&app, &row, &page).await?;
    let next = (views.len() as i64 == PAGE)
        .then(|| views.last().map(|b| b.id.clone()))
        .flatten();
    let builds: Vec<Shown> = views.into_iter().map(Shown::new).collect();
    ctx.insert("builds", &builds);
    ctx.insert("next", &next);
    ctx.insert("paged", &page.cursor.is_some());
    Ok(render::page(&viewer, "repo/builds.html", ctx))
}

/// `GET /builds/{id}`: the build's facts, its failure on top, and its log.
async fn build_page(
    State(app): State<App>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    show_build(&app, &viewer, &id, None, StatusCode::OK).await
}

/// The build page, with `notice` (a refused cancel, in the viewer's language) above the facts.
async fn show_build(
    app: &App,
    viewer: &Viewer,
    id: &str,
    notice: Option<String>,
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let row = api::load_build(app, &viewer.caller, id, Role::Read).await?;
    let rule = match row.rule_id.as_deref() {
        Some(rule_id) => db::rules::get(&app.db, &row.repository_id, rule_id)
            .await?
            .map(|r| serde_json::json!({"id": r.id, "name": r.name, "kind": r.kind})),
        None => None,
    };
    let build = Shown::new(BuildView::of(app, row).await?);
    // The log after the facts: lines written meanwhile are all in it (and followed from there).
    let (count, _) = db::builds::log_size(&app.db, &build.build.id).await?;
    let omitted = (count - LOG_TAIL).max(0);
    let lines = db::builds::log_page(&app.db, &build.build.id, omitted - 1, LOG_TAIL).await?;
    let log_next = omitted + lines.len() as i64;
    let log_text: String = lines.into_iter().map(|(_, l)| l + "\n").collect();

    let mut ctx = Context::new();
    ctx.insert("can_write", &viewer.can_write(&build.build.namespace));
    ctx.insert("rule", &rule);
    ctx.insert("log_text", &log_text);
    ctx.insert("log_omitted", &omitted);
    ctx.insert("log_next", &log_next);
    ctx.insert("notice", &notice);
    ctx.insert("nav_active", &true);
    ctx.insert("build", &build);
    Ok(render::page_with_status(viewer, "build.html", ctx, status))
}

/// The query of the console's log route: the API's, without `limit` (the page reads it whole or
/// follows it).
#[derive(Deserialize)]
struct ConsoleLogQuery {
    #[serde(default)]
    follow: bool,
    after: Option<i64>,
}

/// `GET /builds/{id}/log[?follow=true&after=N]`: the log as text/plain, exactly as the API streams
/// it (`follow`: until the build ends), for the page's script and the "full log" link.
async fn build_log(
    State(app): State<App>,
    viewer: Viewer,
    Path(id): Path<String>,
    q: Result<Query<ConsoleLogQuery>, QueryRejection>,
) -> Result<Response, ConsoleError> {
    let Query(q) = q.map_err(|e| ConsoleError::bad_form(e.body_text()))?;
    let q = LogQuery {
        follow: q.follow,
        after: q.after,
        limit: None,
    };
    Ok(api::build_log(app, &viewer.caller, &id, &q).await?)
}

/// `GET /builds/{id}/status`: the API's view of the build as JSON, for the page's script.
async fn build_status(
    State(app): State<App>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let view = api::build_view(&app, &viewer.caller, &id).await?;
    let mut response = Json(view).into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// A form with no field but its CSRF token (`()` does not read a non-empty form).
#[derive(Deserialize)]
struct NoFields {}

/// `POST /builds/{id}/cancel`: the API's cancel. Done: back to the build page with a flash; a
/// build that already ended (or pushed before it could be stopped): the page again, 409, saying so.
async fn cancel(
    State(app): State<App>,
    Path(id): Path<String>,
    CsrfForm(viewer, NoFields {}): CsrfForm<NoFields>,
) -> Result<Response, ConsoleError> {
    match api::cancel(&app, &viewer.caller, &id).await {
        Ok(view) => {
            let flash = if view.status == BuildStatus::Building.as_str() {
                "builds_cancel_asked"
            } else {
                "builds_cancelled"
            };
            Ok(super::done(&format!("/builds/{}", view.id), flash))
        }
        Err(e) if e.status == StatusCode::CONFLICT => {
            let text = error::api_text(viewer.lang, e.code, &e.message);
            show_build(&app, &viewer, &id, Some(text), StatusCode::CONFLICT).await
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(started: Option<&str>, finished: Option<&str>) -> BuildView {
        let row = db::builds::BuildRow {
            started_at: started.map(str::to_string),
            finished_at: finished.map(str::to_string),
            git_ref: "refs/tags/v1.2".into(),
            commit_sha: Some("0123456789abcdef0123456789abcdef01234567".into()),
            status: "succeeded".into(),
            ..db::builds::BuildRow::default()
        };
        let mut v = BuildView::from(row);
        v.stages.fetch_ms = Some(120);
        v.stages.build_ms = Some(3400);
        v
    }

    #[test]
    fn shown_builds_derive_duration_ref_commit_and_stages() {
        let s = Shown::new(view(
            Some("2026-11-27T21:00:00.000000Z"),
            Some("2026-11-27T21:01:02.500000Z"),
        ));
        assert_eq!(s.duration_ms, Some(62_500));
        assert_eq!(s.ref_name.as_deref(), Some("v1.2"));
        assert_eq!(s.short_commit.as_deref(), Some("0123456"));
        assert_eq!(
            s.stage_list,
            vec![
                serde_json::json!({"stage": "fetch", "ms": 120}),
                serde_json::json!({"stage": "build", "ms": 3400}),
            ]
        );
        assert!(!s.live);
        let running = Shown::new(view(Some("2026-11-27T21:00:00Z"), None));
        assert_eq!(running.duration_ms, None);
    }
}
