//! A repository's Overview tab (`GET /repos/{ns}/{repo}`) and its forms: edit, hide, unhide,
//! delete, each through the API's shared functions (`api::repos`).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::ConsoleError;
use super::render;
use super::session::{CsrfForm, Viewer};
use super::versions::path_part;
use crate::app::App;
use crate::db;
use crate::domain::names::{CATEGORIES, MAX_SUMMARY_CHARS};
use crate::http::api::repos::{self, DeleteReport, UpdateRepo};
use crate::http::auth::Role;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/repos/{ns}/{repo}", get(overview))
        .route("/repos/{ns}/{repo}/edit", post(edit_repo))
        .route("/repos/{ns}/{repo}/hide", post(hide_repo))
        .route("/repos/{ns}/{repo}/unhide", post(unhide_repo))
        .route("/repos/{ns}/{repo}/delete", post(delete_repo))
        .merge(super::versions::routes())
}

/// The edit form's fields.
#[derive(Deserialize, Serialize, Default)]
pub struct EditForm {
    #[serde(default)]
    summary: String,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    category: String,
}

/// A form with no fields but its CSRF token.
#[derive(Deserialize)]
pub struct NoFields {}

#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    confirm: String,
}

/// What the page shows again after a refused form.
#[derive(Default)]
struct Refused {
    edit: Option<EditForm>,
    edit_errors: serde_json::Value,
    confirm: String,
    delete_errors: serde_json::Value,
}

fn repo_path(ns: &str, repo: &str) -> String {
    format!("/repos/{}/{}", path_part(ns), path_part(repo))
}

async fn overview_page(
    app: &App,
    viewer: &Viewer,
    ns: &str,
    repo: &str,
    refused: Refused,
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let (row, mut ctx) = super::repo_tab(app, viewer, ns, repo, Role::Read, "overview").await?;
    let newest = db::versions::list(&app.db, &row.id, false).await?;
    let tag = newest.first().map_or("latest", |v| v.tag.as_str());
    ctx.insert(
        "pull_cmd",
        &format!("docker pull {}:{tag}", app.image_name(ns, &row.name)),
    );
    ctx.insert("has_versions", &!newest.is_empty());
    ctx.insert("detail_html", &super::markdown::to_safe_html(&row.detail));
    let edit = refused.edit.unwrap_or(EditForm {
        summary: row.summary.clone(),
        detail: row.detail.clone(),
        category: row.category.clone(),
    });
    ctx.insert("edit", &edit);
    ctx.insert("edit_open", &refused.edit_errors.is_object());
    ctx.insert("errors", &refused.edit_errors);
    ctx.insert("confirm", &refused.confirm);
    ctx.insert("delete_errors", &refused.delete_errors);
    ctx.insert("categories", CATEGORIES);
    ctx.insert("max_summary", &MAX_SUMMARY_CHARS);
    ctx.insert("base", &repo_path(ns, repo));
    Ok(render::page_with_status(
        viewer,
        "repo/overview.html",
        ctx,
        status,
    ))
}

/// `GET /repos/{ns}/{repo}`.
async fn overview(
    State(app): State<App>,
    viewer: Viewer,
    Path((ns, repo)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    overview_page(
        &app,
        &viewer,
        &ns,
        &repo,
        Refused::default(),
        StatusCode::OK,
    )
    .await
}

/// `POST /repos/{ns}/{repo}/edit`: summary, detail, category.
async fn edit_repo(
    State(app): State<App>,
    Path((ns, repo)): Path<(String, String)>,
    CsrfForm(viewer, form): CsrfForm<EditForm>,
) -> Result<Response, ConsoleError> {
    let body = UpdateRepo {
        summary: Some(form.summary.clone()),
        detail: Some(form.detail.clone()),
        category: Some(form.category.clone()),
        ..Default::default()
    };
    match repos::update(&app, &viewer.caller, &ns, &repo, body).await {
        Ok(_) => Ok(super::done(&repo_path(&ns, &repo), "repos_updated")),
        Err(e) if e.field.is_some() => {
            let every = repos::field_errors(&form.summary, &form.detail, &form.category);
            let refused = Refused {
                edit_errors: super::all_form_errors(&viewer, std::iter::once(&e).chain(&every)),
                edit: Some(form),
                ..Default::default()
            };
            overview_page(&app, &viewer, &ns, &repo, refused, e.status).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn hide_repo(
    State(app): State<App>,
    Path((ns, repo)): Path<(String, String)>,
    CsrfForm(viewer, NoFields {}): CsrfForm<NoFields>,
) -> Result<Response, ConsoleError> {
    repos::set_hidden(&app, &viewer.caller, &ns, &repo, true).await?;
    Ok(super::done(&repo_path(&ns, &repo), "repos_hidden"))
}

async fn unhide_repo(
    State(app): State<App>,
    Path((ns, repo)): Path<(String, String)>,
    CsrfForm(viewer, NoFields {}): CsrfForm<NoFields>,
) -> Result<Response, ConsoleError> {
    repos::set_hidden(&app, &viewer.caller, &ns, &repo, false).await?;
    Ok(super::done(&repo_path(&ns, &repo), "repos_unhidden"))
}

/// `POST /repos/{ns}/{repo}/delete` with the name typed again (`confirm`). When the registry kept
/// some of its tags, a page says which and why; otherwise back to the namespace's list.
async fn delete_repo(
    State(app): State<App>,
    Path((ns, repo)): Path<(String, String)>,
    CsrfForm(viewer, form): CsrfForm<DeleteForm>,
) -> Result<Response, ConsoleError> {
    match repos::delete(&app, &viewer.caller, &ns, &repo, Some(form.confirm.trim())).await {
        Ok(report) => Ok(deleted(&viewer, &ns, report)),
        Err(e) if e.field.is_some() => {
            // The API's sentence names its `?confirm=` parameter: the form says it in its own words.
            let delete_errors = if e.code == "confirmation_required" {
                json!({ "confirm": viewer.lang.text("overview.confirm_mismatch") })
            } else {
                super::form_errors(&viewer, &e)
            };
            let refused = Refused {
                delete_errors,
                confirm: form.confirm,
                ..Default::default()
            };
            overview_page(&app, &viewer, &ns, &repo, refused, e.status).await
        }
        Err(e) => Err(e.into()),
    }
}

fn deleted(viewer: &Viewer, ns: &str, report: DeleteReport) -> Response {
    let home = format!("/?ns={}", super::versions::query_part(ns));
    if report.registry_not_deleted.is_empty() {
        let flash = if report.registry_deleted.is_empty() {
            "repos_deleted"
        } else {
            "repos_deleted_with_tags"
        };
        return super::done(&home, flash);
    }
    let mut ctx = tera::Context::new();
    ctx.insert("home", &home);
    ctx.insert("report", &report);
    ctx.insert("ns", ns);
    ctx.insert("nav_active", &json!(true));
    render::page(viewer, "repo/deleted.html", ctx)
}
