use axum::Router;
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

use super::{api, health, hooks};
use crate::app::App;

pub fn create_router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(super::metrics::metrics))
        .route("/hooks/github", post(hooks::receive_github))
        .route("/hooks/gitlab", post(hooks::receive_gitlab))
        .route("/hooks/gitea", post(hooks::receive_gitea))
        .route(
            "/registry/events",
            post(crate::registry::events::receive_registry_events),
        )
        .nest("/api/v1", api::routes())
        .layer(TraceLayer::new_for_http())
        .with_state(app)
}
