//! `GET /namespaces/{ns}/integrations`: a namespace's integrations with git hosts (issue 12), and
//! the forms that set and remove them, through the API's own functions (`api::integrations`).
//! The secret typed in is never shown again.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tera::Context;

use super::error::ConsoleError;
use super::session::{CsrfForm, NoFields, Viewer};
use super::{form_errors, render};
use crate::app::App;
use crate::db;
use crate::forge::hosts::INTEGRATION_PROVIDERS;
use crate::http::api::integrations::{self, IntegrationView, PutIntegration};
use crate::http::auth::Role;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/namespaces/{ns}/integrations", get(page))
        .route("/namespaces/{ns}/integrations/{provider}", post(set))
        .route(
            "/namespaces/{ns}/integrations/{provider}/delete",
            post(remove),
        )
}

/// The "set an integration" form; every field optional (the API says which one is missing).
#[derive(Deserialize, Default)]
pub struct IntegrationForm {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    app_id: String,
    #[serde(default)]
    installation_id: String,
    #[serde(default)]
    private_key: String,
}

fn path(ns: &str) -> String {
    format!("/namespaces/{ns}/integrations")
}

async fn render_page(
    app: &App,
    viewer: &Viewer,
    ns: &str,
    errors: Value,
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let namespace = integrations::load_namespace(app, &viewer.caller, ns, Role::Read).await?;
    let rows = db::integrations::for_namespace(&app.db, &app.secrets, &namespace.id).await?;
    let views: Vec<IntegrationView> = rows.into_iter().map(Into::into).collect();
    let mut ctx = Context::new();
    ctx.insert("ns", ns);
    ctx.insert("integrations", &views);
    ctx.insert("providers", INTEGRATION_PROVIDERS);
    ctx.insert("github_api_url", &app.config.github_api_url);
    ctx.insert(
        "can_admin",
        &viewer.caller.require(Role::Admin, Some(ns)).is_ok(),
    );
    // Every provider's form has its errors (none: an empty object).
    let mut all = serde_json::Map::new();
    for p in INTEGRATION_PROVIDERS {
        all.insert(
            p.to_string(),
            errors.get(*p).cloned().unwrap_or_else(|| json!({})),
        );
    }
    ctx.insert("errors", &all);
    Ok(render::page_with_status(
        viewer,
        "integrations.html",
        ctx,
        status,
    ))
}

async fn page(
    State(app): State<App>,
    viewer: Viewer,
    Path(ns): Path<String>,
) -> Result<Response, ConsoleError> {
    render_page(&app, &viewer, &ns, json!({}), StatusCode::OK).await
}

/// A number field of the form: empty is absent; anything else must be a number (else it goes to
/// the API as 0, which it refuses naming the field).
fn number(text: &str) -> Option<u64> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.parse().unwrap_or(0))
}

async fn set(
    State(app): State<App>,
    Path((ns, provider)): Path<(String, String)>,
    CsrfForm(viewer, f): CsrfForm<IntegrationForm>,
) -> Result<Response, ConsoleError> {
    let text = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let body = PutIntegration {
        kind: text(&f.kind),
        token: text(&f.token),
        url: text(&f.url),
        app_id: number(&f.app_id),
        private_key: Some(f.private_key.trim().to_string()).filter(|s| !s.is_empty()),
        installation_id: number(&f.installation_id),
    };
    match integrations::put(&app, &viewer.caller, &ns, &provider, body).await {
        Ok(_) => {
            tracing::info!(namespace = %ns, provider = %provider, "console: integration set");
            Ok(super::done(&path(&ns), "integrations_set"))
        }
        Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY || e.status.is_server_error() => {
            let errors = json!({ provider.as_str(): form_errors(&viewer, &e) });
            let status = e.status;
            render_page(&app, &viewer, &ns, errors, status).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn remove(
    State(app): State<App>,
    Path((ns, provider)): Path<(String, String)>,
    CsrfForm(viewer, NoFields {}): CsrfForm<NoFields>,
) -> Result<Response, ConsoleError> {
    integrations::delete(&app, &viewer.caller, &ns, &provider).await?;
    Ok(super::done(&path(&ns), "integrations_removed"))
}
