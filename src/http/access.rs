//! Deny by default: the one layer in front of every `/api/v1` route. Each route of the API's table
//! ([`crate::http::api::route_table`]) is built with its [`Access`] rule; this layer authenticates
//! the Bearer token, checks the role and the namespace scope the rule asks for, and hands the
//! [`Caller`] to the handler through the request's extensions (handlers keep their own checks as a
//! second line). No token, a wrong or an expired one: 401. Another namespace: 404 (its objects are
//! not shown to exist). Too low a role, or a namespace token on a kiln-wide route: 403.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::audit::AuditSlot;
use super::auth::{self, Caller, Role};
use super::error::{ApiError, ApiPath, ApiResult};
use crate::app::App;
use crate::db;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token.
    Public,
    /// Any valid token (the handler shows only what the token sees).
    AnyToken,
    /// `role` over the namespace of the route's `{ns}` parameter.
    Namespace { role: Role },
    /// `role` over the namespace of the object named by the route's `{id}`, found in the database.
    Resource { role: Role, lookup: Lookup },
    /// `role` with a token that covers every namespace.
    KilnWide { role: Role },
}

impl Access {
    /// The least role the rule asks for (None: no token needed).
    pub fn role(self) -> Option<Role> {
        match self {
            Access::Public => None,
            Access::AnyToken => Some(Role::Read),
            Access::Namespace { role }
            | Access::Resource { role, .. }
            | Access::KilnWide { role } => Some(role),
        }
    }
}

/// The kind of object a [`Access::Resource`] route's `{id}` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Build,
    Delivery,
}

impl Lookup {
    /// The kind of object a route's `{id}` names when the route is under `/builds/{id}` or
    /// `/deliveries/{id}` (the API's and the console's).
    pub fn in_route(route: &str) -> Option<Lookup> {
        if route.contains("/builds/{id}") {
            Some(Lookup::Build)
        } else if route.contains("/deliveries/{id}") {
            Some(Lookup::Delivery)
        } else {
            None
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Lookup::Build => "build",
            Lookup::Delivery => "delivery",
        }
    }

    /// The namespace and repository the object belongs to; None when there is no such object.
    pub async fn owner(self, app: &App, id: &str) -> ApiResult<Option<(String, String)>> {
        Ok(match self {
            Lookup::Build => db::builds::get(&app.db, id)
                .await?
                .map(|b| (b.namespace, b.repository)),
            Lookup::Delivery => {
                let Some(d) = db::deliveries::get(&app.db, id).await? else {
                    return Ok(None);
                };
                let Some(hook) = db::webhooks::get(&app.db, &d.webhook_id).await? else {
                    return Ok(None);
                };
                db::repos::by_id(&app.db, &hook.repository_id)
                    .await?
                    .map(|r| (r.namespace, r.name))
            }
        })
    }
}

/// The state of one route's layer: kiln and the route's rule.
#[derive(Clone)]
pub struct Guard {
    pub app: App,
    pub access: Access,
}

/// What the rule lets through: the caller (None on a public route) and the namespace and
/// repository the call acts on, when the rule names them.
struct Admitted {
    caller: Option<Caller>,
    namespace: Option<String>,
    repository: Option<String>,
}

/// The middleware: checks `guard.access` before the handler runs.
pub async fn enforce(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let admitted = admit(&guard, &mut parts).await.map_err(|e| {
        // A refused token counts against the caller's address (429 once its budget is spent).
        let peer = crate::rate_limit::peer(&parts, &guard.app);
        crate::rate_limit::refuse(
            &guard.app.rate_limits,
            crate::rate_limit::Surface::Api,
            peer,
            e,
        )
    });
    match admitted {
        Ok(admitted) => {
            if let Some(slot) = parts.extensions.get::<AuditSlot>()
                && let Some(caller) = &admitted.caller
            {
                slot.fill(
                    caller.clone(),
                    admitted.namespace.clone(),
                    admitted.repository.clone(),
                );
            }
            if let Some(caller) = admitted.caller {
                parts.extensions.insert(caller);
            }
            next.run(Request::from_parts(parts, body)).await
        }
        Err(e) => e.into_response(),
    }
}

async fn admit(guard: &Guard, parts: &mut axum::http::request::Parts) -> ApiResult<Admitted> {
    let app = &guard.app;
    let caller = match guard.access {
        Access::Public => {
            return Ok(Admitted {
                caller: None,
                namespace: None,
                repository: None,
            });
        }
        _ => auth::authenticate(app, &parts.headers).await?,
    };
    let (namespace, repository) =
        match guard.access {
            Access::Public | Access::AnyToken => (None, None),
            Access::KilnWide { role } => {
                caller.require(role, None)?;
                (None, None)
            }
            Access::Namespace { role } => {
                let params = path_params(parts).await?;
                let ns = params.get("ns").cloned().ok_or_else(|| {
                    ApiError::internal("a namespace route without an {ns} parameter")
                })?;
                let repo = params.get("repo").cloned();
                if !caller.sees(&ns) {
                    return Err(ApiError::not_found(&match &repo {
                        Some(r) => format!("repository {ns}/{r}"),
                        None => format!("namespace {ns}"),
                    }));
                }
                caller.require(role, Some(&ns))?;
                (Some(ns), repo)
            }
            Access::Resource { role, lookup } => {
                let params = path_params(parts).await?;
                let id = params.get("id").cloned().ok_or_else(|| {
                    ApiError::internal("a resource route without an {id} parameter")
                })?;
                let (ns, repo) = lookup
                    .owner(app, &id)
                    .await?
                    .filter(|(ns, _)| caller.sees(ns))
                    .ok_or_else(|| ApiError::not_found(&format!("{} {id}", lookup.noun())))?;
                caller.require(role, Some(&ns))?;
                (Some(ns), Some(repo))
            }
        };
    Ok(Admitted {
        caller: Some(caller),
        namespace,
        repository,
    })
}

async fn path_params(parts: &mut axum::http::request::Parts) -> ApiResult<HashMap<String, String>> {
    let ApiPath(params) =
        ApiPath::<HashMap<String, String>>::from_request_parts(parts, &()).await?;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_found_in_their_routes() {
        assert_eq!(
            Lookup::in_route("/api/v1/builds/{id}/cancel"),
            Some(Lookup::Build)
        );
        assert_eq!(Lookup::in_route("/builds/{id}/cancel"), Some(Lookup::Build));
        assert_eq!(
            Lookup::in_route("/deliveries/{id}/redeliver"),
            Some(Lookup::Delivery)
        );
        assert_eq!(
            Lookup::in_route("/api/v1/namespaces/{ns}/repos/{repo}/rules/{id}/builds"),
            None
        );
        assert_eq!(Lookup::in_route("/api/v1/tokens/{id}"), None);
    }

    #[test]
    fn roles_of_rules() {
        assert_eq!(Access::Public.role(), None);
        assert_eq!(Access::AnyToken.role(), Some(Role::Read));
        assert_eq!(
            Access::Resource {
                role: Role::Write,
                lookup: Lookup::Build
            }
            .role(),
            Some(Role::Write)
        );
        assert_eq!(
            Access::KilnWide { role: Role::Admin }.role(),
            Some(Role::Admin)
        );
    }
}
