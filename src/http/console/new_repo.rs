//! `GET /new?ns=NS` and `POST /new`: creating a repository, with the API's checks
//! (`api::repos::create`).

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tera::Context;

use super::error::ConsoleError;
use super::render;
use super::session::{CsrfForm, Viewer};
use crate::app::App;
use crate::db;
use crate::domain::names::{CATEGORIES, MAX_NAME_LEN, MAX_SUMMARY_CHARS, MIN_NAME_LEN};
use crate::http::api::repos::{self, CreateRepo};

pub fn routes() -> Router<App> {
    Router::new().route("/new", get(new_repo_page).post(create_repo))
}

#[derive(Deserialize)]
pub struct NewQuery {
    ns: Option<String>,
}

/// The form's fields (kept when it is shown again with errors).
#[derive(Deserialize, Serialize, Default)]
pub struct NewRepoForm {
    #[serde(default)]
    ns: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    category: String,
}

fn form_page(
    viewer: &Viewer,
    form: &NewRepoForm,
    errors: serde_json::Value,
    status: StatusCode,
) -> Response {
    let mut ctx = Context::new();
    ctx.insert("ns", &form.ns);
    ctx.insert("form", form);
    ctx.insert("errors", &errors);
    ctx.insert("categories", CATEGORIES);
    ctx.insert("min_len", &MIN_NAME_LEN);
    ctx.insert("max_len", &MAX_NAME_LEN);
    ctx.insert("max_summary", &MAX_SUMMARY_CHARS);
    render::page_with_status(viewer, "new_repo.html", ctx, status)
}

/// `GET /new?ns=NS`: the empty form (without `ns`: the viewer's first namespace).
async fn new_repo_page(
    State(app): State<App>,
    viewer: Viewer,
    Query(q): Query<NewQuery>,
) -> Result<Response, ConsoleError> {
    let ns = match q.ns.filter(|n| !n.is_empty()) {
        Some(ns) => ns,
        None => db::namespaces::list(&app.db, viewer.caller.namespace.as_deref())
            .await?
            .into_iter()
            .map(|n| n.name)
            .min()
            .ok_or_else(ConsoleError::not_found)?,
    };
    repos::writable_namespace(&app, &viewer.caller, &ns).await?;
    let form = NewRepoForm {
        ns,
        category: "other".into(),
        ..Default::default()
    };
    Ok(form_page(
        &viewer,
        &form,
        serde_json::json!({}),
        StatusCode::OK,
    ))
}

/// `POST /new`: creates the repository and goes to its overview; a field the API refuses is shown
/// again next to the field, with what was typed.
async fn create_repo(
    State(app): State<App>,
    CsrfForm(viewer, form): CsrfForm<NewRepoForm>,
) -> Result<Response, ConsoleError> {
    let body = CreateRepo {
        name: form.name.clone(),
        summary: form.summary.clone(),
        detail: form.detail.clone(),
        category: (!form.category.is_empty()).then(|| form.category.clone()),
    };
    let every = repos::create_errors(&body);
    match repos::create(&app, &viewer.caller, &form.ns, body).await {
        Ok(view) => Ok(super::done(
            &format!(
                "/repos/{}/{}",
                super::versions::path_part(&view.namespace),
                super::versions::path_part(&view.name)
            ),
            "repos_created",
        )),
        Err(e) if e.field.is_some() => {
            // The API answers its first refusal; the form shows every field's.
            let errors = super::all_form_errors(&viewer, std::iter::once(&e).chain(&every));
            Ok(form_page(&viewer, &form, errors, e.status))
        }
        Err(e) => Err(e.into()),
    }
}
