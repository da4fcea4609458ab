//! "Why didn't it build?": every received hook delivery, newest first, with each rule's decision and the
//! builds it created.

use axum::extract::State;
use axum::response::Response;
use serde::Serialize;

use super::{PageQuery, load_repo, paged};
use crate::app::App;
use crate::db::{self, Page, builds::BuildStatus};
use crate::http::auth::{Caller, Role};
use crate::http::error::{ApiPath, ApiQuery, ApiResult};

#[derive(Serialize)]
pub struct EventView {
    pub id: String,
    pub provider: String,
    pub delivery_id: String,
    pub event: String,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub commit: Option<String>,
    pub received_at: String,
    /// One line: what kiln made of it.
    pub summary: String,
    /// How many more times the same delivery arrived (and was ignored).
    pub duplicates: i64,
    /// For each rule: `{rule_id, matched, tag, skipped: {reason, message, …} | null}`.
    pub rules: serde_json::Value,
    pub builds: Vec<String>,
    /// The same builds with where they are now: a build superseded by a newer push says so here.
    pub build_states: Vec<EventBuildView>,
}

#[derive(Serialize)]
pub struct EventBuildView {
    pub id: String,
    pub status: String,
    pub error: Option<String>,
}

pub async fn list_events(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    let found = list(&app, &caller, &ns, &repo, &q).await?;
    Ok(paged(found.events, &found.page, found.last))
}

/// A page of events: the events, the page asked for, the id of the last one (the next page's cursor).
pub struct EventsPage {
    pub events: Vec<EventView>,
    pub page: Page,
    pub last: Option<String>,
}

/// A page of the hook events of `ns/repo` (read role), newest first.
pub async fn list(
    app: &App,
    caller: &Caller,
    ns: &str,
    repo: &str,
    q: &PageQuery,
) -> ApiResult<EventsPage> {
    let row = load_repo(app, caller, ns, repo, Role::Read).await?;
    let page = q.page()?;
    let events = db::events::list(&app.db, &row.id, &page).await?;
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let builds = db::builds::for_events(&app.db, &ids).await?;
    let last = ids.last().cloned();
    let views: Vec<EventView> = events
        .into_iter()
        .map(|e| {
            let mine: Vec<_> = builds.iter().filter(|b| b.event_id == e.id).collect();
            EventView {
                builds: mine.iter().map(|b| b.id.clone()).collect(),
                build_states: mine
                    .iter()
                    .map(|b| EventBuildView {
                        id: b.id.clone(),
                        status: b.status.clone(),
                        error: b.error.clone(),
                    })
                    .collect(),
                rules: with_path_filter_skips(
                    serde_json::from_str(&e.plan).unwrap_or_else(|_| serde_json::json!([])),
                    &mine,
                ),
                id: e.id,
                provider: e.provider,
                delivery_id: e.delivery_id,
                event: e.kind,
                git_ref: e.git_ref,
                commit: e.commit_sha,
                received_at: e.received_at,
                summary: e.outcome,
                duplicates: e.duplicates,
            }
        })
        .collect();
    Ok(EventsPage {
        events: views,
        page,
        last,
    })
}

/// A rule's build that its path filter skipped (decided by the worker, after the event was planned)
/// did not build either: its decision says so, `{"reason": "path_filter", "message": …}`, like the
/// reasons known when the push arrived.
fn with_path_filter_skips(
    mut rules: serde_json::Value,
    builds: &[&db::builds::EventBuildRow],
) -> serde_json::Value {
    let Some(decisions) = rules.as_array_mut() else {
        return rules;
    };
    for b in builds
        .iter()
        .filter(|b| b.status == BuildStatus::Skipped.as_str())
    {
        let Some(decision) = decisions
            .iter_mut()
            .find(|d| d["skipped"].is_null() && b.rule_id.as_deref() == d["rule_id"].as_str())
        else {
            continue;
        };
        decision["skipped"] = serde_json::json!({
            "reason": "path_filter",
            "message": b.error.clone().unwrap_or_default(),
            "build_id": b.id,
        });
    }
    rules
}
