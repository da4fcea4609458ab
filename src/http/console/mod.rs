//! The web console: server-rendered pages (tera templates under `templates/`, compiled in) on the
//! same `db/` and `domain/` functions and permission checks as the JSON API. One file per area;
//! each exposes `routes()`.

pub mod admin;
pub mod builds;
pub mod error;
pub mod files;
pub mod home;
pub mod i18n;
pub mod image_sizes;
pub mod integrations;
pub mod markdown;
pub mod new_repo;
pub mod render;
pub mod repo;
pub mod rules;
pub mod session;
pub mod versions;
pub mod webhooks;

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tera::Context;

use self::error::ConsoleError;
use self::session::Viewer;
use crate::app::App;
use crate::db::repos::RepoRow;
use crate::http::api::load_repo;
use crate::http::api::repos::RepoView;
use crate::http::auth::Role;

pub fn routes(app: App) -> Router<App> {
    Router::new()
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/static/{file}", get(static_file))
        .merge(home::routes())
        .merge(admin::routes())
        .merge(repo::routes())
        .merge(builds::routes())
        .merge(rules::routes())
        .merge(webhooks::routes())
        .merge(integrations::routes())
        .layer(axum::middleware::from_fn_with_state(
            app,
            error::render_errors,
        ))
}

/// Any path no route has (outside `/api/v1`, which answers JSON): the console's "not found" page.
pub async fn not_found(uri: axum::http::Uri, headers: axum::http::HeaderMap) -> Response {
    let lang = i18n::Lang::of_request(uri.query(), &headers);
    let mut ctx = Context::new();
    ctx.insert("status", &404);
    ctx.insert("message", &lang.text("errors.not_found"));
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    render::guest_page(lang, path, "error.html", ctx, StatusCode::NOT_FOUND)
}

/// `GET /static/{file}`: the stylesheet and scripts, from the binary.
async fn static_file(Path(file): Path<String>) -> Response {
    let Some(text) = files::static_file(&file) else {
        return ConsoleError::not_found().into_response();
    };
    let kind = match file.rsplit_once('.').map(|(_, ext)| ext) {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "text/plain; charset=utf-8",
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        text,
    )
        .into_response()
}

/// Loads `{ns}/{repo}` for a repository tab with the API's checks (`role` over the namespace; a
/// namespace the viewer cannot see is "not found"), and starts the tab's context: `repo` (the
/// API's view), `tab`, `can_write`.
pub async fn repo_tab(
    app: &App,
    viewer: &Viewer,
    ns: &str,
    repo: &str,
    role: Role,
    tab: &str,
) -> Result<(RepoRow, Context), ConsoleError> {
    let row = load_repo(app, &viewer.caller, ns, repo, role).await?;
    let mut ctx = Context::new();
    ctx.insert("repo", &RepoView::new(app, row.clone()));
    ctx.insert("tab", tab);
    ctx.insert("can_write", &viewer.can_write(ns));
    Ok((row, ctx))
}

/// After a form: back to `to` (a path of this site) with `?flash=key` (a `flash.*` message).
pub fn done(to: &str, flash: &str) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    axum::response::Redirect::to(&format!("{to}{sep}flash={flash}")).into_response()
}

/// An API error as `{field: sentence}` in the viewer's language, for a form shown again with its
/// errors next to the fields (`_` for an error that names no field).
pub fn form_errors(viewer: &Viewer, err: &crate::http::error::ApiError) -> serde_json::Value {
    let field = err.field.clone().unwrap_or_else(|| "_".to_string());
    serde_json::json!({ field: error::api_text(viewer.lang, err.code, &err.message) })
}

/// Several API errors as one `{field: sentence}` (the first error of a field wins).
pub fn all_form_errors<'a>(
    viewer: &Viewer,
    errors: impl IntoIterator<Item = &'a crate::http::error::ApiError>,
) -> serde_json::Value {
    let mut all = serde_json::Map::new();
    for e in errors {
        if let serde_json::Value::Object(one) = form_errors(viewer, e) {
            for (k, v) in one {
                all.entry(k).or_insert(v);
            }
        }
    }
    serde_json::Value::Object(all)
}
