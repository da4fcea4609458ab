use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::{PageQuery, paginate};
use crate::app::App;
use crate::db::{self, namespaces::NamespaceRow};
use crate::domain::names::validate_namespace_name;
use crate::http::auth::{Caller, Role};
use crate::http::error::{ApiError, ApiJson, ApiQuery, ApiResult};

#[derive(Serialize)]
pub struct NamespaceView {
    pub name: String,
    pub created_at: String,
}

impl From<NamespaceRow> for NamespaceView {
    fn from(r: NamespaceRow) -> Self {
        NamespaceView {
            name: r.name,
            created_at: r.created_at,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNamespace {
    pub name: String,
}

pub async fn create_namespace(
    State(app): State<App>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateNamespace>,
) -> ApiResult<(StatusCode, axum::Json<NamespaceView>)> {
    let view = create(&app, &caller, &body.name).await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// Makes namespace `name` (kiln-wide admins only): the API's `POST /namespaces` and the console's.
pub async fn create(app: &App, caller: &Caller, name: &str) -> ApiResult<NamespaceView> {
    caller.require(Role::Admin, None)?;
    validate_namespace_name(name)?;
    match db::namespaces::insert(&app.db, name).await {
        Ok(row) => Ok(row.into()),
        Err(e) if db::is_constraint(&e, "") => Err(ApiError::conflict(
            "already_exists",
            format!("namespace '{name}' already exists"),
        )
        .with_field("name")),
        Err(e) => Err(e.into()),
    }
}

/// Newest first, paged by `?limit=&cursor=`.
pub async fn list_namespaces(
    State(app): State<App>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    caller.require(Role::Read, caller.namespace.as_deref())?;
    let rows = db::namespaces::list(&app.db, caller.namespace.as_deref()).await?;
    paginate(rows, &q, |r| r.id.clone(), NamespaceView::from)
}
