use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::rules::load_rule;
use super::{PageQuery, load_repo, paged};
use crate::app::App;
use crate::db::{self, builds::BuildRow, builds::BuildStatus};
use crate::domain::pattern::RefPattern;
use crate::domain::rules::{GitRef, RefKind};
use crate::http::auth::{Caller, Role};
use crate::http::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};

#[derive(Serialize)]
pub struct BuildView {
    pub id: String,
    pub namespace: String,
    pub repository: String,
    pub rule_id: Option<String>,
    pub trigger: String,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub commit: Option<String>,
    pub tag: Option<String>,
    pub image: Option<String>,
    pub status: String,
    pub error: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub digest: Option<String>,
    /// The rule's build settings when the build was queued (issue 9).
    pub settings: crate::domain::build_settings::BuildSettings,
    /// Which run of the build this is: 1, then one more each time a stop or crash of kiln interrupted it.
    pub attempt: i64,
    /// For a queued build, its place in line (1 = the next to start); null otherwise.
    pub queue_position: Option<usize>,
    /// Milliseconds per stage, null for a stage not reached.
    pub stages: StagesView,
    /// The commit statuses kiln set (or is setting) on the git host for this build, in order
    /// (issue 12; only for a source linked through an integration). Only on a single build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_statuses: Option<Vec<CommitStatusView>>,
}

/// A commit status of a build and how its delivery to the host went.
#[derive(Serialize)]
pub struct CommitStatusView {
    /// `pending`, `running`, `success`, `failure`, `error`, `cancelled`.
    pub state: String,
    pub context: String,
    pub description: String,
    pub target_url: Option<String>,
    /// `pending`, `succeeded`, `failed`.
    pub status: String,
    pub attempts: i64,
    pub response_status: Option<i64>,
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<crate::db::commit_statuses::CommitStatusRow> for CommitStatusView {
    fn from(r: crate::db::commit_statuses::CommitStatusRow) -> Self {
        CommitStatusView {
            state: r.state,
            context: r.context,
            description: r.description,
            target_url: r.target_url,
            status: r.status,
            attempts: r.attempts,
            response_status: r.response_status,
            error: r.error,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl BuildView {
    /// The view of a build, with its place in line when it is queued.
    pub async fn of(app: &App, build: BuildRow) -> ApiResult<BuildView> {
        let queued = build.status == BuildStatus::Queued.as_str();
        let statuses = crate::db::commit_statuses::for_build(&app.db, &build.id).await?;
        let mut view = BuildView::from(build);
        view.commit_statuses = Some(statuses.into_iter().map(Into::into).collect());
        if queued {
            view.queue_position = crate::build::queue::queue_positions(app)
                .await?
                .get(&view.id)
                .copied();
        }
        Ok(view)
    }
}

/// How long each stage of a build took, in milliseconds (see `db::builds::Stage`).
#[derive(Serialize)]
pub struct StagesView {
    pub queued_ms: Option<i64>,
    pub fetch_ms: Option<i64>,
    pub context_ms: Option<i64>,
    pub build_ms: Option<i64>,
    pub push_ms: Option<i64>,
}

impl From<BuildRow> for BuildView {
    fn from(b: BuildRow) -> Self {
        let settings = b.settings();
        BuildView {
            id: b.id,
            namespace: b.namespace,
            repository: b.repository,
            rule_id: b.rule_id,
            trigger: b.trigger,
            git_ref: Some(b.git_ref).filter(|r| !r.is_empty()),
            commit: b.commit_sha,
            tag: b.tag,
            image: b.image,
            status: b.status,
            error: b.error,
            created_at: b.created_at,
            started_at: b.started_at,
            finished_at: b.finished_at,
            settings,
            digest: b.digest,
            attempt: b.attempt,
            queue_position: None,
            commit_statuses: None,
            stages: StagesView {
                queued_ms: b.stages.queued_ms,
                fetch_ms: b.stages.fetch_ms,
                context_ms: b.stages.context_ms,
                build_ms: b.stages.build_ms,
                push_ms: b.stages.push_ms,
            },
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BuildNow {
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub commit: Option<String>,
}

/// Which ref a "build now" builds: the one asked for (it must match the rule), or the rule's own branch
/// or tag when its name is exact; for a tag pattern, "" (the worker picks the newest matching tag).
fn ref_to_build(
    kind: RefKind,
    pattern: &RefPattern,
    rule_name: &str,
    asked: Option<&str>,
) -> ApiResult<String> {
    let Some(asked) = asked.map(str::trim).filter(|r| !r.is_empty()) else {
        return match (pattern, kind) {
            (RefPattern::Exact(name), _) => Ok(GitRef {
                kind,
                name: name.clone(),
            }
            .full()),
            (_, RefKind::Tag) => Ok(String::new()),
            (_, RefKind::Branch) => Err(ApiError::invalid(
                "ref",
                "required",
                format!("the rule's name '{rule_name}' is a pattern: say which branch to build"),
            )),
        };
    };
    let git_ref = if asked.starts_with("refs/") {
        GitRef::parse(asked).ok_or_else(|| {
            ApiError::invalid(
                "ref",
                "invalid_ref",
                format!("'{asked}' is neither refs/heads/… nor refs/tags/…"),
            )
        })?
    } else {
        GitRef {
            kind,
            name: asked.to_string(),
        }
    };
    if git_ref.kind != kind {
        return Err(ApiError::invalid(
            "ref",
            "wrong_type",
            format!(
                "this rule builds {}, not {}",
                plural(kind),
                plural(git_ref.kind)
            ),
        ));
    }
    if pattern.matches(&git_ref.name).is_none() {
        return Err(ApiError::invalid(
            "ref",
            "no_match",
            format!(
                "'{}' does not match the rule's name '{rule_name}'",
                git_ref.name
            ),
        ));
    }
    Ok(git_ref.full())
}

fn plural(kind: RefKind) -> &'static str {
    match kind {
        RefKind::Branch => "branches",
        RefKind::Tag => "tags",
    }
}

/// "Build now": queues a build of the rule, resolved to an exact commit by the worker.
pub async fn create_build(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo, id)): ApiPath<(String, String, String)>,
    ApiJson(body): ApiJson<BuildNow>,
) -> ApiResult<(StatusCode, axum::Json<BuildView>)> {
    let build = build_now(&app, &caller, &ns, &repo, &id, body).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(build)))
}

/// "Build now" of rule `id` of `ns/repo` (write role): queues a manual build of the ref asked for
/// (or the rule's own branch or tag). The API's `POST .../rules/{id}/builds` and the console's
/// button.
pub async fn build_now(
    app: &App,
    caller: &Caller,
    ns: &str,
    repo: &str,
    id: &str,
    body: BuildNow,
) -> ApiResult<BuildView> {
    let (repo_row, rule) = load_rule(app, caller, ns, repo, id, Role::Write).await?;
    if repo_row.hidden {
        return Err(ApiError::conflict(
            "repository_hidden",
            format!("{ns}/{repo} is hidden: unhide it first to build"),
        ));
    }
    if !repo_row.has_source {
        return Err(ApiError::conflict(
            "no_source",
            format!("{ns}/{repo} has no git source"),
        ));
    }
    if !rule.enabled {
        return Err(ApiError::conflict(
            "rule_disabled",
            "this rule is disabled: enable it first to build",
        ));
    }
    let commit = body
        .commit
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    if let Some(c) = commit
        && !((7..=40).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ApiError::invalid(
            "commit",
            "invalid_commit",
            "commit must be 7 to 40 hex characters",
        ));
    }
    let spec = rule.spec();
    let pattern = RefPattern::parse(&spec.name)?;
    let git_ref = ref_to_build(spec.kind, &pattern, &spec.name, body.git_ref.as_deref())?;
    if git_ref.is_empty() && commit.is_some() {
        return Err(ApiError::invalid(
            "ref",
            "required",
            "with a commit, say which tag it is",
        ));
    }
    let build = crate::build::queue::queue_rule_build(
        app,
        &repo_row.id,
        &rule,
        &crate::build::queue::RuleBuildRequest {
            trigger: "manual",
            git_ref: &git_ref,
            commit,
            one_at_a_time: false,
        },
    )
    .await?
    .ok_or_else(|| ApiError::internal("build vanished"))?;
    BuildView::of(app, build).await
}

pub async fn list_builds(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    let row = load_repo(&app, &caller, &ns, &repo, Role::Read).await?;
    let page = q.page()?;
    let views = list_views(&app, &row, &page).await?;
    let last = views.last().map(|b| b.id.clone());
    Ok(paged(views, &page, last))
}

/// One page of a repository's builds (loaded with the caller's checks), newest first, each with its
/// place in line when it is queued.
pub async fn list_views(
    app: &App,
    repo: &crate::db::repos::RepoRow,
    page: &crate::db::Page,
) -> ApiResult<Vec<BuildView>> {
    let builds = db::builds::list_for_repo(&app.db, &repo.id, page).await?;
    let positions = if builds
        .iter()
        .any(|b| b.status == BuildStatus::Queued.as_str())
    {
        crate::build::queue::queue_positions(app).await?
    } else {
        Default::default()
    };
    Ok(builds
        .into_iter()
        .map(|b| {
            let mut view = BuildView::from(b);
            view.queue_position = positions.get(&view.id).copied();
            view
        })
        .collect())
}

/// A build the caller may see (404 otherwise, also for a namespace it cannot see), and `role` over
/// its namespace (403 otherwise).
pub async fn load_build(app: &App, caller: &Caller, id: &str, role: Role) -> ApiResult<BuildRow> {
    let build = db::builds::get(&app.db, id)
        .await?
        .filter(|b| caller.sees(&b.namespace))
        .ok_or_else(|| ApiError::not_found(&format!("build {id}")))?;
    caller.require(role, Some(&build.namespace))?;
    Ok(build)
}

pub async fn get_build(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<BuildView>> {
    Ok(axum::Json(build_view(&app, &caller, &id).await?))
}

/// Build `id` as the caller may read it (404 for one of a namespace it cannot see).
pub async fn build_view(app: &App, caller: &Caller, id: &str) -> ApiResult<BuildView> {
    let build = load_build(app, caller, id, Role::Read).await?;
    BuildView::of(app, build).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    #[serde(default)]
    pub follow: bool,
    /// Skip the first `after` lines (lines are numbered from 1).
    #[serde(default)]
    pub after: Option<i64>,
    /// At most this many lines (1 to [`MAX_LOG_PAGE`]); the answer's `X-Kiln-Log-Next` header is
    /// the `after` of the next page.
    #[serde(default)]
    pub limit: Option<i64>,
}

/// Lines read from the database at a time, and the largest `limit`.
const MAX_LOG_PAGE: i64 = 1000;

/// The build log as text. The whole log is streamed a page at a time (never whole in memory);
/// `?after=N` skips the first N lines; `?limit=N` answers one page of at most N lines, with
/// `X-Kiln-Log-Next` naming the next page's `after`; with `?follow=true` the answer streams
/// until the build ends.
pub async fn get_build_log(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<Response> {
    build_log(app, &caller, &id, &q).await
}

/// The log of build `id` (read over its namespace), as [`get_build_log`] answers it: the API's
/// route and the console's both stream it from here.
pub async fn build_log(app: App, caller: &Caller, id: &str, q: &LogQuery) -> ApiResult<Response> {
    let build = load_build(&app, caller, id, Role::Read).await?;
    let text_plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    let after = match q.after {
        None => 0,
        Some(n) if n >= 0 => n,
        Some(_) => {
            return Err(ApiError::invalid(
                "after",
                "invalid_query",
                "must be a number of lines, 0 or more",
            ));
        }
    };
    // The database's cursor: seq is the line number less one.
    let after_seq = after - 1;
    if let Some(limit) = q.limit {
        if !(1..=MAX_LOG_PAGE).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                "invalid_query",
                format!("must be between 1 and {MAX_LOG_PAGE}"),
            ));
        }
        if q.follow {
            return Err(ApiError::invalid(
                "limit",
                "invalid_query",
                "cannot be combined with follow",
            ));
        }
        let lines = db::builds::log_page(&app.db, &build.id, after_seq, limit).await?;
        let next = after + lines.len() as i64;
        let text: String = lines.into_iter().map(|(_, l)| l + "\n").collect();
        return Ok((text_plain, [("x-kiln-log-next", next.to_string())], text).into_response());
    }
    if !q.follow {
        let stream =
            futures_util::stream::unfold(Some((app, build.id, after_seq)), |state| async move {
                let (app, id, after) = state?;
                match db::builds::log_page(&app.db, &id, after, MAX_LOG_PAGE).await {
                    Ok(lines) if lines.is_empty() => None,
                    Ok(lines) => {
                        let last = lines.last().map_or(after, |(seq, _)| *seq);
                        let text: String = lines.into_iter().map(|(_, l)| l + "\n").collect();
                        Some((Ok(Bytes::from(text)), Some((app, id, last))))
                    }
                    // The status is sent already: the body ends early, with an error.
                    Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
                }
            });
        return Ok((text_plain, Body::from_stream(stream)).into_response());
    }
    let state = Follow {
        updates: app.builds.log_updates(),
        app,
        id: build.id,
        after: after_seq,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            // Status first: lines written before the build ended are then all visible below.
            let finished = match db::builds::status(&st.app.db, &st.id).await {
                Ok(Some(s)) => BuildStatus::is_finished(&s),
                _ => true,
            };
            let lines = db::builds::log_page(&st.app.db, &st.id, st.after, MAX_LOG_PAGE)
                .await
                .unwrap_or_default();
            if let Some((last, _)) = lines.last() {
                st.after = *last;
                // More than a page may be waiting: the build is done only once all is read.
                st.done = finished && lines.len() < MAX_LOG_PAGE as usize;
                let text: String = lines.into_iter().map(|(_, l)| l + "\n").collect();
                return Some((Ok::<_, Infallible>(Bytes::from(text)), st));
            }
            if finished {
                return None;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), st.updates.changed()).await;
        }
    });
    Ok((text_plain, Body::from_stream(stream)).into_response())
}

struct Follow {
    app: App,
    id: String,
    after: i64,
    done: bool,
    updates: tokio::sync::watch::Receiver<u64>,
}

/// How long a cancel waits for a running build's worker to stop it and say how it ended.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// Cancels a queued build at once. A running build is stopped by its worker (its step container killed,
/// a push aborted), and the answer waits for the outcome: `cancelled`, or 409 `already_pushed` when its
/// push had reached the registry before the stop (the build then succeeded and stays so).
pub async fn cancel_build(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, axum::Json<BuildView>)> {
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(cancel(&app, &caller, &id).await?),
    ))
}

/// Cancels build `id` (write over its namespace) as [`cancel_build`] does, for the API and the
/// console: the build as it is afterwards (`cancelled`, or still `building` when its worker has not
/// stopped it within the wait).
pub async fn cancel(app: &App, caller: &Caller, id: &str) -> ApiResult<BuildView> {
    let build = load_build(app, caller, id, Role::Write).await?;
    let mut updates = app.builds.log_updates();
    let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
    let mut asked = false;
    let ended = loop {
        match db::builds::cancel_queued(&app.db, &build.id)
            .await?
            .as_deref()
        {
            Some("queued") => {
                if asked {
                    // It went back to the queue (a shutdown) before its worker saw the request.
                    app.builds.forget(&build.id);
                }
                break "cancelled".to_string();
            }
            Some("building") => {
                if !asked {
                    app.builds
                        .stop_running(&build.id, crate::build::queue::Stop::Cancel);
                    asked = true;
                }
                if tokio::time::Instant::now() >= deadline {
                    // Still stopping: the answer says so, the worker ends it.
                    break "building".to_string();
                }
                let _ = tokio::time::timeout(Duration::from_millis(250), updates.changed()).await;
            }
            Some(other) => {
                if asked {
                    // Ended before its worker saw the request: nothing is left to stop.
                    app.builds.forget(&build.id);
                }
                match (other, asked) {
                    ("cancelled", true) => break other.to_string(),
                    ("succeeded", true) => {
                        return Err(ApiError::conflict(
                            "already_pushed",
                            format!(
                                "the build had pushed {} before it could be stopped: it succeeded",
                                build.image.as_deref().unwrap_or("its image")
                            ),
                        ));
                    }
                    _ => {
                        return Err(ApiError::conflict(
                            "already_finished",
                            format!("the build already ended: {other}"),
                        ));
                    }
                }
            }
            None => return Err(ApiError::not_found(&format!("build {id}"))),
        }
    };
    tracing::info!(build_id = %build.id, status = %ended, "build cancel asked");
    let build = db::builds::get(&app.db, &build.id)
        .await?
        .ok_or_else(|| ApiError::not_found("build"))?;
    BuildView::of(app, build).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_now_refs() {
        let exact = RefPattern::parse("main").unwrap();
        assert_eq!(
            ref_to_build(RefKind::Branch, &exact, "main", None).unwrap(),
            "refs/heads/main"
        );
        assert_eq!(
            ref_to_build(RefKind::Branch, &exact, "main", Some("main")).unwrap(),
            "refs/heads/main"
        );
        assert_eq!(
            ref_to_build(RefKind::Branch, &exact, "main", Some("refs/heads/main")).unwrap(),
            "refs/heads/main"
        );
        let e = ref_to_build(RefKind::Branch, &exact, "main", Some("dev")).unwrap_err();
        assert_eq!((e.field.as_deref(), e.code), (Some("ref"), "no_match"));
        let e = ref_to_build(RefKind::Branch, &exact, "main", Some("refs/tags/main")).unwrap_err();
        assert_eq!(e.code, "wrong_type");
        assert!(
            e.message.contains("builds branches, not tags"),
            "{}",
            e.message
        );
        let e =
            ref_to_build(RefKind::Branch, &exact, "main", Some("refs/pull/1/head")).unwrap_err();
        assert_eq!(e.code, "invalid_ref");

        let wild = RefPattern::parse("v*").unwrap();
        assert_eq!(ref_to_build(RefKind::Tag, &wild, "v*", None).unwrap(), "");
        assert_eq!(
            ref_to_build(RefKind::Tag, &wild, "v*", Some("v1.2")).unwrap(),
            "refs/tags/v1.2"
        );
        let e = ref_to_build(RefKind::Tag, &wild, "v*", Some("refs/heads/v1")).unwrap_err();
        assert!(
            e.message.contains("builds tags, not branches"),
            "{}",
            e.message
        );
        let branches = RefPattern::parse("release-*").unwrap();
        let e = ref_to_build(RefKind::Branch, &branches, "release-*", None).unwrap_err();
        assert_eq!(e.code, "required");
    }
}
