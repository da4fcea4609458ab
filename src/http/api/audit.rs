//! `GET /audit`: who changed what, when, from where (kiln-wide admins; the access layer checks).

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::{PageQuery, paged};
use crate::app::App;
use crate::db::{self, audit::AuditRow};
use crate::http::auth::{Caller, Role};
use crate::http::error::{ApiQuery, ApiResult};

#[derive(Debug, Serialize)]
pub struct AuditView {
    pub id: String,
    pub at: String,
    /// The token's id (null for `KILN_ADMIN_TOKEN`) and name.
    pub token_id: Option<String>,
    pub token_name: String,
    /// `api` or `console`.
    pub via: String,
    pub method: String,
    /// The route's pattern (`/api/v1/namespaces/{ns}/repos`) and the concrete path (no query).
    pub route: String,
    pub path: String,
    pub namespace: Option<String>,
    pub repository: Option<String>,
    pub status: i64,
    /// The peer's IP address.
    pub address: Option<String>,
}

impl From<AuditRow> for AuditView {
    fn from(r: AuditRow) -> Self {
        AuditView {
            id: r.id,
            at: r.at,
            token_id: r.token_id,
            token_name: r.token_name,
            via: r.via,
            method: r.method,
            route: r.route,
            path: r.path,
            namespace: r.namespace,
            repository: r.repository,
            status: r.status,
            address: r.address,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    /// Only the changes made in this namespace.
    pub namespace: Option<String>,
}

/// Newest first, paged by `?limit=&cursor=`, `?namespace=` keeps one namespace's changes.
pub async fn list_audit(
    State(app): State<App>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Response> {
    caller.require(Role::Admin, None)?;
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page()?;
    let namespace = q.namespace.as_deref().filter(|n| !n.is_empty());
    let rows = db::audit::list(&app.db, namespace, &page).await?;
    let last = rows.last().map(|r| r.id.clone());
    Ok(paged(
        rows.into_iter().map(AuditView::from).collect(),
        &page,
        last,
    ))
}
