//! The JSON API under `/api/v1`: one file per resource, view structs beside their handlers.

pub mod builds;
pub mod events;
pub mod namespaces;
pub mod registry;
pub mod repos;
pub mod rules;
pub mod sources;
pub mod tokens;
pub mod versions;
pub mod webhooks;

use axum::Router;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};

use super::auth::{Caller, Role};
use super::error::{ApiError, ApiResult};
use crate::app::App;
use crate::db::{self, Page, repos::RepoRow};

pub fn routes() -> Router<App> {
    Router::new()
        .route(
            "/namespaces",
            post(namespaces::create_namespace).get(namespaces::list_namespaces),
        )
        .route(
            "/namespaces/{ns}/repos",
            post(repos::create_repo).get(repos::list_repos),
        )
        .route(
            "/namespaces/{ns}/repos/{repo}",
            get(repos::get_repo)
                .patch(repos::update_repo)
                .delete(repos::delete_repo),
        )
        .route("/namespaces/{ns}/repos/{repo}/hide", post(repos::hide_repo))
        .route(
            "/namespaces/{ns}/repos/{repo}/unhide",
            post(repos::unhide_repo),
        )
        .route(
            "/namespaces/{ns}/repos/{repo}/source",
            put(sources::put_source)
                .get(sources::get_source)
                .delete(sources::delete_source),
        )
        .route(
            "/namespaces/{ns}/repos/{repo}/rules",
            post(rules::create_rule).get(rules::list_rules),
        )
        .route(
            "/namespaces/{ns}/repos/{repo}/rules/{id}",
            get(rules::get_rule)
                .patch(rules::update_rule)
                .delete(rules::delete_rule),
        )
        .route(
            "/namespaces/{ns}/repos/{repo}/rules/{id}/builds",
            post(builds::create_build),
        )
        .route(
            "/namespaces/{ns}/repos/{repo}/builds",
            get(builds::list_builds),
        )
        .route(
            "/namespaces/{ns}/repos/{repo}/versions",
            get(versions::list_versions),
        )
        .route(
            "/namespaces/{ns}/repos/{repo}/versions/{tag}",
            get(versions::get_version),
        )
        .route(
            "/namespaces/{ns}/repos/{repo}/versions/{tag}/hide",
            post(versions::hide_version),
        )
        .route(
            "/namespaces/{ns}/repos/{repo}/versions/{tag}/unhide",
            post(versions::unhide_version),
        )
        .route(
            "/namespaces/{ns}/repos/{repo}/events",
            get(events::list_events),
        )
        .route(
            "/namespaces/{ns}/repos/{repo}/rules/preview",
            get(rules::preview_rules),
        )
        .route("/registry/sync", post(registry::sync_registry))
        .route(
            "/namespaces/{ns}/repos/{repo}/webhooks",
            post(webhooks::create_webhook).get(webhooks::list_webhooks),
        )
        .route(
            "/namespaces/{ns}/repos/{repo}/webhooks/{id}",
            get(webhooks::get_webhook)
                .patch(webhooks::update_webhook)
                .delete(webhooks::delete_webhook),
        )
        .route(
            "/namespaces/{ns}/repos/{repo}/webhooks/{id}/test",
            post(webhooks::test_webhook),
        )
        .route(
            "/namespaces/{ns}/repos/{repo}/webhooks/{id}/deliveries",
            get(webhooks::list_deliveries),
        )
        .route("/deliveries/{id}", get(webhooks::get_delivery))
        .route("/deliveries/{id}/redeliver", post(webhooks::redeliver))
        .route("/builds/{id}", get(builds::get_build))
        .route("/builds/{id}/log", get(builds::get_build_log))
        .route("/builds/{id}/cancel", post(builds::cancel_build))
        .route(
            "/tokens",
            post(tokens::create_token).get(tokens::list_tokens),
        )
        .route("/tokens/{id}", axum::routing::delete(tokens::delete_token))
        .fallback(|| async { ApiError::not_found("API route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this method is not allowed here",
            )
        })
}

/// Loads `{ns}/{repo}` after checking the caller may act on the namespace with `role`.
pub async fn load_repo(
    app: &App,
    caller: &Caller,
    ns: &str,
    repo: &str,
    role: Role,
) -> ApiResult<RepoRow> {
    if !caller.sees(ns) {
        return Err(ApiError::not_found(&format!("repository {ns}/{repo}")));
    }
    caller.require(role, Some(ns))?;
    db::repos::by_name(&app.db, ns, repo)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("repository {ns}/{repo}")))
}

/// `?limit=&cursor=` of every list.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn page(&self) -> ApiResult<Page> {
        let limit = self.limit.unwrap_or(Page::DEFAULT);
        if !(1..=Page::MAX).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                "out_of_range",
                format!("limit must be 1 to {}", Page::MAX),
            ));
        }
        Ok(Page {
            limit,
            cursor: self.cursor.clone(),
        })
    }
}

/// A JSON list, newest first; when the page is full, `X-Next-Cursor` names where the next one starts.
pub fn paged<T: Serialize>(items: Vec<T>, page: &Page, last_id: Option<String>) -> Response {
    let full = items.len() as i64 == page.limit;
    let mut response = axum::Json(items).into_response();
    if full
        && let Some(id) = last_id
        && let Ok(v) = HeaderValue::from_str(&id)
    {
        response.headers_mut().insert("x-next-cursor", v);
    }
    response
}

/// Pages a list small enough to hold, sorted newest first by `key` (unique, in the same order): the
/// items after the cursor, at most `limit` of them, each turned into its view.
pub fn paginate<T, V: Serialize>(
    items: Vec<T>,
    q: &PageQuery,
    key: impl Fn(&T) -> String,
    view: impl Fn(T) -> V,
) -> ApiResult<Response> {
    let page = q.page()?;
    let kept: Vec<T> = items
        .into_iter()
        .filter(|item| {
            page.cursor
                .as_deref()
                .is_none_or(|c| key(item).as_str() < c)
        })
        .take(page.limit as usize)
        .collect();
    let last = kept.last().map(&key);
    Ok(paged(kept.into_iter().map(view).collect(), &page, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        assert_eq!(PageQuery::default().page().unwrap().limit, Page::DEFAULT);
        for bad in [0, -1, Page::MAX + 1] {
            let e = PageQuery {
                limit: Some(bad),
                cursor: None,
            }
            .page()
            .unwrap_err();
            assert_eq!(e.field.as_deref(), Some("limit"));
        }
        assert_eq!(
            PageQuery {
                limit: Some(Page::MAX),
                cursor: None
            }
            .page()
            .unwrap()
            .limit,
            Page::MAX
        );
    }
}
