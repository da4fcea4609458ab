//! The JSON API under `/api/v1`: one file per resource, view structs beside their handlers.

pub mod audit;
pub mod builds;
pub mod events;
pub mod integrations;
pub mod namespaces;
pub mod registry;
pub mod repos;
pub mod rules;
pub mod source_hooks;
pub mod sources;
pub mod tokens;
pub mod versions;
pub mod webhooks;

use std::collections::BTreeMap;

use axum::Router;
use axum::handler::Handler;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use serde::{Deserialize, Serialize};

use super::access::{self, Access, Guard, Lookup};
use super::auth::{Caller, Role};
use super::error::{ApiError, ApiResult};
use crate::app::App;
use crate::db::{self, Page, repos::RepoRow};

/// One route of the API: method, path (under `/api/v1`) and who may call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRoute {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

/// A route of the table with its handler.
struct Entry {
    route: ApiRoute,
    handler: MethodRouter<App>,
}

fn entry<H: Handler<T, App>, T: 'static>(
    method: Method,
    path: &'static str,
    access: Access,
    handler: H,
) -> Entry {
    let filter = MethodFilter::try_from(method.clone()).expect("a method axum routes");
    Entry {
        route: ApiRoute {
            method,
            path,
            access,
        },
        handler: axum::routing::on(filter, handler),
    }
}

/// Every route of the API with its access rule: the router is built from this table and nothing
/// else, so a route cannot exist without a rule, and [`route_table`] lists exactly what is served.
fn table() -> Vec<Entry> {
    use Method as M;
    const READ: Role = Role::Read;
    const WRITE: Role = Role::Write;
    const ADMIN: Role = Role::Admin;
    let ns = |role| Access::Namespace { role };
    let build = |role| Access::Resource {
        role,
        lookup: Lookup::Build,
    };
    let delivery = |role| Access::Resource {
        role,
        lookup: Lookup::Delivery,
    };
    let kiln_wide = |role| Access::KilnWide { role };
    const REPO: &str = "/namespaces/{ns}/repos/{repo}";
    vec![
        entry(
            M::POST,
            "/namespaces",
            kiln_wide(ADMIN),
            namespaces::create_namespace,
        ),
        entry(
            M::GET,
            "/namespaces",
            Access::AnyToken,
            namespaces::list_namespaces,
        ),
        entry(
            M::POST,
            "/namespaces/{ns}/repos",
            ns(WRITE),
            repos::create_repo,
        ),
        entry(
            M::GET,
            "/namespaces/{ns}/repos",
            ns(READ),
            repos::list_repos,
        ),
        entry(M::GET, REPO, ns(READ), repos::get_repo),
        entry(M::PATCH, REPO, ns(WRITE), repos::update_repo),
        entry(M::DELETE, REPO, ns(WRITE), repos::delete_repo),
        entry(
            M::POST,
            "/namespaces/{ns}/repos/{repo}/hide",
            ns(WRITE),
            repos::hide_repo,
        ),
        entry(
            M::POST,
            "/namespaces/{ns}/repos/{repo}/unhide",
            ns(WRITE),
            repos::unhide_repo,
        ),
        entry(
            M::PUT,
            "/namespaces/{ns}/repos/{repo}/source",
            ns(WRITE),
            sources::put_source,
        ),
        entry(
            M::GET,
            "/namespaces/{ns}/repos/{repo}/source",
            ns(READ),
            sources::get_source,
        ),
        entry(
            M::DELETE,
            "/namespaces/{ns}/repos/{repo}/source",
            ns(WRITE),
            sources::delete_source,
        ),
        entry(
            M::POST,
            "/namespaces/{ns}/repos/{repo}/rules",
            ns(WRITE),
            rules::create_rule,
        ),
        entry(
            M::GET,
            "/namespaces/{ns}/repos/{repo}/rules",
            ns(READ),
            rules::list_rules,
        ),
        entry(
            M::GET,
            "/namespaces/{ns}/repos/{repo}/rules/{id}",
            ns(READ),
            rules::get_rule,
        ),
        entry(
            M::PATCH,
            "/namespaces/{ns}/repos/{repo}/rules/{id}",
            ns(WRITE),
            rules::update_rule,
        ),
        entry(
            M::DELETE,
            "/namespaces/{ns}/repos/{repo}/rules/{id}",
            ns(WRITE),
            rules::delete_rule,
        ),
        entry(
            M::POST,
            "/namespaces/{ns}/repos/{repo}/rules/{id}/builds",
            ns(WRITE),
            builds::create_build,
        ),
        entry(
            M::GET,
            "/namespaces/{ns}/repos/{repo}/builds",
            ns(READ),
            builds::list_builds,
        ),
        entry(
            M::GET,
            "/namespaces/{ns}/repos/{repo}/versions",
            ns(READ),
            versions::list_versions,
        ),
        entry(
            M::GET,
            "/namespaces/{ns}/repos/{repo}/versions/{tag}",
            ns(READ),
            versions::get_version,
        ),
        entry(
            M::POST,
            "/namespaces/{ns}/repos/{repo}/versions/{tag}/hide",
            ns(WRITE),
            versions::hide_version,
        ),
        entry(
            M::POST,
            "/namespaces/{ns}/repos/{repo}/versions/{tag}/unhide",
            ns(WRITE),
            versions::unhide_version,
        ),
        entry(
            M::GET,
            "/namespaces/{ns}/repos/{repo}/events",
            ns(READ),
            events::list_events,
        ),
        entry(
            M::GET,
            "/namespaces/{ns}/repos/{repo}/rules/preview",
            ns(READ),
            rules::preview_rules,
        ),
        entry(
            M::POST,
            "/registry/sync",
            kiln_wide(ADMIN),
            registry::sync_registry,
        ),
        entry(
            M::POST,
            "/namespaces/{ns}/repos/{repo}/webhooks",
            ns(WRITE),
            webhooks::create_webhook,
        ),
        entry(
            M::GET,
            "/namespaces/{ns}/repos/{repo}/webhooks",
            ns(READ),
            webhooks::list_webhooks,
        ),
        entry(
            M::GET,
            "/namespaces/{ns}/repos/{repo}/webhooks/{id}",
            ns(READ),
            webhooks::get_webhook,
        ),
        entry(
            M::PATCH,
            "/namespaces/{ns}/repos/{repo}/webhooks/{id}",
            ns(WRITE),
            webhooks::update_webhook,
        ),
        entry(
            M::DELETE,
            "/namespaces/{ns}/repos/{repo}/webhooks/{id}",
            ns(WRITE),
            webhooks::delete_webhook,
        ),
        entry(
            M::POST,
            "/namespaces/{ns}/repos/{repo}/webhooks/{id}/test",
            ns(WRITE),
            webhooks::test_webhook,
        ),
        entry(
            M::GET,
            "/namespaces/{ns}/repos/{repo}/webhooks/{id}/deliveries",
            ns(READ),
            webhooks::list_deliveries,
        ),
        entry(
            M::GET,
            "/deliveries/{id}",
            delivery(READ),
            webhooks::get_delivery,
        ),
        entry(
            M::POST,
            "/deliveries/{id}/redeliver",
            delivery(WRITE),
            webhooks::redeliver,
        ),
        entry(M::GET, "/builds/{id}", build(READ), builds::get_build),
        entry(
            M::GET,
            "/builds/{id}/log",
            build(READ),
            builds::get_build_log,
        ),
        entry(
            M::POST,
            "/builds/{id}/cancel",
            build(WRITE),
            builds::cancel_build,
        ),
        entry(M::POST, "/tokens", kiln_wide(ADMIN), tokens::create_token),
        entry(M::GET, "/tokens", kiln_wide(ADMIN), tokens::list_tokens),
        entry(
            M::DELETE,
            "/tokens/{id}",
            kiln_wide(ADMIN),
            tokens::delete_token,
        ),
        entry(M::GET, "/audit", kiln_wide(ADMIN), audit::list_audit),
        entry(
            M::PUT,
            "/namespaces/{ns}/integrations/{provider}",
            ns(ADMIN),
            integrations::put_integration,
        ),
        entry(
            M::GET,
            "/namespaces/{ns}/integrations/{provider}",
            ns(READ),
            integrations::get_integration,
        ),
        entry(
            M::DELETE,
            "/namespaces/{ns}/integrations/{provider}",
            ns(ADMIN),
            integrations::delete_integration,
        ),
        entry(
            M::GET,
            "/namespaces/{ns}/integrations/{provider}/repositories",
            ns(READ),
            integrations::list_repositories,
        ),
    ]
}

/// The API's routes (method, path under `/api/v1`, access rule), in the order they are declared.
pub fn route_table() -> Vec<ApiRoute> {
    table().into_iter().map(|e| e.route).collect()
}

/// The API under `/api/v1`: every route of the table behind the access layer with its rule.
pub fn routes(app: App) -> Router<App> {
    let mut paths: BTreeMap<&'static str, MethodRouter<App>> = BTreeMap::new();
    for Entry { route, handler } in table() {
        let guarded = handler.route_layer(axum::middleware::from_fn_with_state(
            Guard {
                app: app.clone(),
                access: route.access,
            },
            access::enforce,
        ));
        let merged = match paths.remove(route.path) {
            Some(other) => other.merge(guarded),
            None => guarded,
        };
        paths.insert(route.path, merged);
    }
    paths
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            router.route(path, methods)
        })
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
