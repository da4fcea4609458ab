//! Recording changes in the audit log. One middleware around every route: for a request that may
//! change something (not GET/HEAD/OPTIONS) it leaves an empty [`AuditSlot`] in the request's
//! extensions; whoever authenticates the caller fills it (the API's access layer, the console's
//! `CsrfForm`); when the answer says the change was accepted (API: 2xx; console: 2xx or the
//! redirect after a form), one row is written: who (token id and name), what (method, route
//! pattern, concrete path without the query, namespace and repository), the status and the peer
//! address. Bodies are never recorded.
//!
//! The address is the TCP peer's (`ConnectInfo`), or the client's named by `X-Forwarded-For` when
//! the peer is one of `KILN_TRUSTED_PROXIES` (see [`super::client_addr`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::access::Lookup;
use super::auth::Caller;
use super::client_addr;
use crate::app::App;
use crate::db;

/// Who made the change this request asks for, once known.
#[derive(Clone, Default)]
pub struct AuditSlot(Arc<Mutex<Option<Actor>>>);

#[derive(Clone)]
struct Actor {
    caller: Caller,
    namespace: Option<String>,
    repository: Option<String>,
}

impl AuditSlot {
    /// Names the caller (and the namespace and repository acted on, when known).
    pub fn fill(&self, caller: Caller, namespace: Option<String>, repository: Option<String>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(Actor {
                caller,
                namespace,
                repository,
            });
        }
    }

    fn take(&self) -> Option<Actor> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}

/// The middleware (see the module's doc).
pub async fn record_changes(State(app): State<App>, request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let Some(route) = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
    else {
        // No route: nothing can change.
        return next.run(Request::from_parts(parts, body)).await;
    };
    let method = parts.method.to_string();
    let path = parts.uri.path().to_string();
    let address = client_addr::of_request(&parts, &app).map(|ip| ip.to_string());
    let params = Path::<HashMap<String, String>>::from_request_parts(&mut parts, &())
        .await
        .map(|p| p.0)
        .unwrap_or_default();
    let slot = AuditSlot::default();
    parts.extensions.insert(slot.clone());

    let response = next.run(Request::from_parts(parts, body)).await;

    let api = route.starts_with("/api/");
    let status = response.status();
    let accepted = status.is_success() || (!api && status.is_redirection());
    if !accepted {
        return response;
    }
    let Some(mut actor) = slot.take() else {
        return response;
    };
    if actor.namespace.is_none() {
        actor.namespace = params.get("ns").cloned();
        actor.repository = params.get("repo").cloned();
    }
    if actor.namespace.is_none()
        && let (Some(lookup), Some(id)) = (Lookup::in_route(&route), params.get("id"))
    {
        match lookup.owner(&app, id).await {
            Ok(Some((ns, repo))) => {
                actor.namespace = Some(ns);
                actor.repository = Some(repo);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e.message, "audit: cannot name the namespace"),
        }
    }
    let record = db::audit::NewAuditRecord {
        token_id: actor.caller.token_id.as_deref(),
        token_name: &actor.caller.token_name,
        via: if api { "api" } else { "console" },
        method: &method,
        route: &route,
        path: &path,
        namespace: actor.namespace.as_deref(),
        repository: actor.repository.as_deref(),
        status: status.as_u16(),
        address: address.as_deref(),
    };
    if let Err(e) = db::audit::insert(&app.db, &record).await {
        tracing::error!(error = %e, method, route, "cannot write the audit record of a change");
    }
    response
}
