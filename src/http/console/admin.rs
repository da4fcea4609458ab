//! `GET /admin`: what only kiln-wide admins do, with the API's functions and checks: namespaces
//! (`api::namespaces::create`), API tokens (`api::tokens`: a new token is shown once, on the answer
//! to the form that made it) and re-reading the registry (`api::registry::sync`).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tera::Context;

use super::error::ConsoleError;
use super::session::{CsrfForm, NoFields, Viewer};
use super::{done, form_errors, render};
use crate::app::App;
use crate::db;
use crate::http::api::{namespaces, registry, tokens};
use crate::http::auth::Role;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/admin", get(admin_page))
        .route("/admin/namespaces", post(create_namespace))
        .route("/admin/tokens", post(create_token))
        .route("/admin/tokens/{id}/delete", post(delete_token))
        .route("/admin/registry/sync", post(sync_registry))
}

/// The forms' fields, kept when a form is shown again with its errors.
#[derive(Deserialize, Serialize, Default)]
pub struct NamespaceForm {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Serialize, Default)]
pub struct TokenForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    /// Empty: every namespace.
    #[serde(default)]
    namespace: String,
    /// `YYYY-MM-DD` (the end of that day, UTC), or empty: never.
    #[serde(default)]
    expires_on: String,
}

/// What one page shows besides the lists.
#[derive(Default)]
struct Extra {
    namespace_form: NamespaceForm,
    namespace_errors: Option<serde_json::Value>,
    token_form: TokenForm,
    token_errors: Option<serde_json::Value>,
    new_token: Option<tokens::TokenView>,
    sync: Option<crate::registry::sync::SyncReport>,
}

async fn page(
    app: &App,
    viewer: &Viewer,
    extra: Extra,
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let tokens = tokens::list(app, &viewer.caller).await?;
    let mut names: Vec<String> = db::namespaces::list(&app.db, None)
        .await?
        .into_iter()
        .map(|n| n.name)
        .collect();
    names.sort();
    let mut ctx = Context::new();
    ctx.insert("nav_active", "admin");
    ctx.insert("namespaces", &names);
    ctx.insert("tokens", &tokens);
    ctx.insert(
        "roles",
        &[
            Role::Read.as_str(),
            Role::Write.as_str(),
            Role::Admin.as_str(),
        ],
    );
    ctx.insert("namespace_form", &extra.namespace_form);
    ctx.insert(
        "namespace_errors",
        &extra
            .namespace_errors
            .unwrap_or_else(|| serde_json::json!({})),
    );
    ctx.insert("token_form", &extra.token_form);
    ctx.insert(
        "token_errors",
        &extra.token_errors.unwrap_or_else(|| serde_json::json!({})),
    );
    ctx.insert("new_token", &extra.new_token);
    ctx.insert("sync", &extra.sync);
    Ok(render::page_with_status(viewer, "admin.html", ctx, status))
}

async fn admin_page(State(app): State<App>, viewer: Viewer) -> Result<Response, ConsoleError> {
    page(&app, &viewer, Extra::default(), StatusCode::OK).await
}

/// `POST /admin/namespaces`.
async fn create_namespace(
    State(app): State<App>,
    CsrfForm(viewer, form): CsrfForm<NamespaceForm>,
) -> Result<Response, ConsoleError> {
    match namespaces::create(&app, &viewer.caller, form.name.trim()).await {
        Ok(_) => Ok(done("/admin", "admin_namespace_created")),
        Err(e) if e.field.is_some() => {
            let errors = Some(form_errors(&viewer, &e));
            let extra = Extra {
                namespace_form: form,
                namespace_errors: errors,
                ..Extra::default()
            };
            page(&app, &viewer, extra, e.status).await
        }
        Err(e) => Err(e.into()),
    }
}

/// The form's expiry day as the API's RFC 3339 time (the end of that day, UTC).
fn expires_at(day: &str) -> Option<String> {
    let day = day.trim();
    (!day.is_empty()).then(|| format!("{day}T23:59:59Z"))
}

/// `POST /admin/tokens`: a new token, shown on this answer and never again.
async fn create_token(
    State(app): State<App>,
    CsrfForm(viewer, form): CsrfForm<TokenForm>,
) -> Result<Response, ConsoleError> {
    let body = tokens::CreateToken {
        name: form.name.clone(),
        namespace: Some(form.namespace.trim().to_string()).filter(|n| !n.is_empty()),
        role: form.role.clone(),
        expires_at: expires_at(&form.expires_on),
    };
    match tokens::create(&app, &viewer.caller, body).await {
        Ok(view) => {
            let extra = Extra {
                new_token: Some(view),
                ..Extra::default()
            };
            page(&app, &viewer, extra, StatusCode::CREATED).await
        }
        Err(mut e) if e.field.is_some() => {
            if e.field.as_deref() == Some("expires_at") {
                e.field = Some("expires_on".into());
            }
            let errors = Some(form_errors(&viewer, &e));
            let extra = Extra {
                token_form: form,
                token_errors: errors,
                ..Extra::default()
            };
            page(&app, &viewer, extra, e.status).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /admin/tokens/{id}/delete`: the token stops working, and so do the sessions it opened.
async fn delete_token(
    State(app): State<App>,
    Path(id): Path<String>,
    CsrfForm(viewer, NoFields {}): CsrfForm<NoFields>,
) -> Result<Response, ConsoleError> {
    tokens::delete(&app, &viewer.caller, &id).await?;
    Ok(done("/admin", "admin_token_deleted"))
}

/// `POST /admin/registry/sync`: re-reads the registry; the page shows what changed.
async fn sync_registry(
    State(app): State<App>,
    CsrfForm(viewer, NoFields {}): CsrfForm<NoFields>,
) -> Result<Response, ConsoleError> {
    let report = registry::sync(&app, &viewer.caller).await?;
    let extra = Extra {
        sync: Some(report),
        ..Extra::default()
    };
    page(&app, &viewer, extra, StatusCode::OK).await
}

#[cfg(test)]
mod tests {
    use super::expires_at;

    #[test]
    fn an_expiry_day_ends_at_midnight_utc() {
        assert_eq!(
            expires_at("2027-01-31").as_deref(),
            Some("2027-01-31T23:59:59Z")
        );
        assert_eq!(expires_at("  "), None);
        // Anything else goes to the API as it is, which names the field.
        assert_eq!(expires_at("soon").as_deref(), Some("soonT23:59:59Z"));
    }
}
