use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

use super::{api, audit, console, health, hooks, metrics};
use crate::app::App;
use crate::registry::events::receive_registry_events;

pub fn create_router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/hooks/github", post(hooks::receive_github))
        .route("/hooks/gitlab", post(hooks::receive_gitlab))
        .route("/hooks/gitea", post(hooks::receive_gitea))
        .route("/hooks/git", post(hooks::receive_git))
        .route("/registry/events", post(receive_registry_events))
        .route(
            "/registry/token",
            get(super::registry_token::issue_registry_token),
        )
        .nest("/api/v1", api::routes(app.clone()))
        .merge(console::routes(app.clone()))
        .fallback(console::not_found)
        // A layer of the routes themselves (added before the outer layers), so it sees the matched route.
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            audit::record_changes,
        ))
        .layer(axum::middleware::map_response(close_after_unread_body))
        .layer(TraceLayer::new_for_http())
        .with_state(app)
}

/// A 413 is answered before the body was read: the connection cannot carry another request, so say
/// so, or a client that pools connections sends its next request into a closing one.
async fn close_after_unread_body(mut response: Response) -> Response {
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
