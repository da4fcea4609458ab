use axum::extract::State;

use crate::app::App;
use crate::http::auth::{Caller, Role};
use crate::http::error::{ApiError, ApiResult};
use crate::registry::sync::{SyncReport, sync_all};

/// Re-reads the registry's catalog and tags into versions (what `kiln registry sync` calls).
pub async fn sync_registry(
    State(app): State<App>,
    caller: Caller,
) -> ApiResult<axum::Json<SyncReport>> {
    Ok(axum::Json(sync(&app, &caller).await?))
}

/// Re-reads the registry into versions (kiln-wide admins only); 502 when the registry cannot be read.
pub async fn sync(app: &App, caller: &Caller) -> ApiResult<SyncReport> {
    caller.require(Role::Admin, None)?;
    sync_all(app).await.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "registry_unreachable",
            format!("{e:#}"),
        )
    })
}
