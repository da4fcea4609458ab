//! The CI rules tab (`/repos/{ns}/{repo}/rules`): the git source with the webhook to set up on its
//! host, the rules with "build now", the add/edit rule form, the preview of a ref and the recent
//! events with each rule's decision. Every change goes through the API's own functions
//! (`api::sources::put/delete`, `api::rules::create/update/delete`, `api::builds::build_now`).

mod decisions;
mod form;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use self::form::RuleForm;
use super::error::{ConsoleError, api_text};
use super::render;
use super::session::{CsrfForm, NoFields, Viewer};
use crate::app::App;
use crate::db;
use crate::http::api::rules::{PreviewQuery, RuleView, load_rule};
use crate::http::api::sources::{PROVIDERS, PutSource, SourceView};
use crate::http::api::{PageQuery, builds, events, load_repo, rules, sources};
use crate::http::auth::Role;
use crate::http::error::ApiError;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/repos/{ns}/{repo}/rules", get(tab))
        .route("/repos/{ns}/{repo}/source", get(to_tab).post(link_source))
        .route("/repos/{ns}/{repo}/source/secret", post(regenerate_secret))
        .route("/repos/{ns}/{repo}/source/unlink", post(unlink_source))
        .route(
            "/repos/{ns}/{repo}/rules/new",
            get(new_rule).post(create_rule),
        )
        .route(
            "/repos/{ns}/{repo}/rules/{id}/edit",
            get(edit_rule).post(update_rule),
        )
        .route("/repos/{ns}/{repo}/rules/{id}/enable", post(enable_rule))
        .route("/repos/{ns}/{repo}/rules/{id}/disable", post(disable_rule))
        .route("/repos/{ns}/{repo}/rules/{id}/delete", post(delete_rule))
        .route("/repos/{ns}/{repo}/rules/{id}/build", post(build_rule))
}

/// Events shown on the tab at a time.
const EVENTS_PER_PAGE: i64 = 10;

fn tab_path(ns: &str, repo: &str) -> String {
    format!("/repos/{ns}/{repo}/rules")
}

#[derive(Deserialize, Default)]
pub struct TabQuery {
    /// The preview's ref: a branch name, `refs/heads/NAME` or `refs/tags/NAME`.
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    commit: Option<String>,
    /// Older events: those before this event id.
    events_before: Option<String>,
    /// The repository picker (issue 12): which integration, what to search, which page.
    pick_provider: Option<String>,
    pick_search: Option<String>,
    pick_page: Option<u32>,
}

/// The "link a git source" form.
#[derive(Deserialize, Serialize, Default, Clone)]
pub struct LinkForm {
    #[serde(default)]
    provider: String,
    #[serde(default)]
    clone_url: String,
    #[serde(default)]
    webhook_secret: String,
    /// Picked from the integration's repositories (issue 12): `owner/name` on the host.
    #[serde(default)]
    repository: String,
}

const LINK_FIELDS: &[&str] = &["provider", "clone_url", "webhook_secret", "repository"];

/// What a form answered on the tab itself (instead of redirecting).
#[derive(Default)]
struct Answer {
    link_form: Option<LinkForm>,
    link_errors: Value,
    /// A webhook secret kiln just generated: shown on this answer only.
    new_secret: Option<String>,
    /// "Build now" refused: `{rule_id, ref, message}`.
    build_error: Option<Value>,
    status: Option<StatusCode>,
}

/// `GET /repos/{ns}/{repo}/rules`.
async fn tab(
    State(app): State<App>,
    viewer: Viewer,
    Path((ns, repo)): Path<(String, String)>,
    Query(q): Query<TabQuery>,
) -> Result<Response, ConsoleError> {
    render_tab(&app, &viewer, &ns, &repo, &q, Answer::default()).await
}

async fn render_tab(
    app: &App,
    viewer: &Viewer,
    ns: &str,
    repo: &str,
    q: &TabQuery,
    answer: Answer,
) -> Result<Response, ConsoleError> {
    let (row, mut ctx) = super::repo_tab(app, viewer, ns, repo, Role::Read, "rules").await?;
    let lang = viewer.lang;
    let base = tab_path(ns, repo);
    ctx.insert("rules_base", &base);

    // The git source and how to point its host's webhook at kiln.
    let source = db::sources::for_repo(&app.db, &app.secrets, &row.id)
        .await?
        .map(|s| SourceView::new(app, (ns, repo), s, None));
    if let Some(s) = &source {
        // Only an http(s) host can send webhooks; a local path or git:// is plain git, whose
        // server notifies kiln only through a hook of provider `git` (`examples/post-receive`).
        ctx.insert(
            "plain_git",
            &(s.provider != "git"
                && !(s.clone_url.starts_with("https://") || s.clone_url.starts_with("http://"))),
        );
    }
    ctx.insert("source", &source);
    ctx.insert("providers", PROVIDERS);
    ctx.insert(
        "link_form",
        &answer.link_form.unwrap_or_else(|| LinkForm {
            provider: "github".into(),
            ..LinkForm::default()
        }),
    );
    let link_errors = if answer.link_errors.is_null() {
        json!({})
    } else {
        answer.link_errors
    };
    ctx.insert("errors", &link_errors);
    ctx.insert("preview_errors", &json!({}));
    ctx.insert("new_secret", &answer.new_secret);
    ctx.insert("build_error", &answer.build_error);
    ctx.insert("local_sources", &!app.config.local_sources.is_empty());
    if source.is_none() && viewer.can_write(ns) {
        ctx.insert(
            "picker",
            &picker(app, viewer, ns, row.namespace_id.as_str(), q).await?,
        );
    }

    // The rules, in the order they are matched (oldest first).
    let rules: Vec<RuleView> = db::rules::list(&app.db, &row.id)
        .await?
        .into_iter()
        .map(|r| RuleView::new(r, app.config.build_timeout))
        .collect();
    let labels = decisions::labels(lang, &rules);
    ctx.insert("rules", &rules);

    // The preview of a ref.
    let preview_ref = q.git_ref.as_deref().map(str::trim).unwrap_or_default();
    let preview_commit = q.commit.as_deref().map(str::trim).unwrap_or_default();
    ctx.insert("preview_ref", preview_ref);
    ctx.insert("preview_commit", preview_commit);
    let mut status = answer.status.unwrap_or(StatusCode::OK);
    if !preview_ref.is_empty() || !preview_commit.is_empty() {
        let full = if preview_ref.starts_with("refs/") {
            preview_ref.to_string()
        } else {
            format!("refs/heads/{preview_ref}")
        };
        let asked = PreviewQuery {
            git_ref: full,
            commit: preview_commit.to_string(),
        };
        match rules::preview(app, &viewer.caller, ns, repo, asked).await {
            Ok(p) => {
                ctx.insert("preview", &decisions::from_preview(lang, &p, &labels));
                ctx.insert("preview_full_ref", &p.git_ref);
                ctx.insert("preview_full_commit", &p.commit);
            }
            Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
                ctx.insert(
                    "preview_errors",
                    &form::errors_for(lang, &e, &["ref", "commit"]),
                );
                if answer.status.is_none() {
                    status = StatusCode::UNPROCESSABLE_ENTITY;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }

    // The recent events: what each push did, rule by rule.
    let page = events::list(
        app,
        &viewer.caller,
        ns,
        repo,
        &PageQuery {
            limit: Some(EVENTS_PER_PAGE),
            cursor: q.events_before.clone(),
        },
    )
    .await?;
    let more = (page.events.len() as i64 == EVENTS_PER_PAGE)
        .then_some(page.last)
        .flatten();
    let shown: Vec<Value> = page
        .events
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "provider": e.provider,
                "event": e.event,
                "ref": e.git_ref,
                "commit": e.commit,
                "received_at": e.received_at,
                "summary": e.summary,
                "duplicates": e.duplicates,
                "decisions": decisions::from_plan(lang, &e.rules, &labels),
                "builds": e.build_states,
            })
        })
        .collect();
    ctx.insert("events", &shown);
    ctx.insert("events_more", &more);
    ctx.insert("events_older", &q.events_before.is_some());
    Ok(render::page_with_status(
        viewer,
        "repo/rules.html",
        ctx,
        status,
    ))
}

/// `GET /repos/{ns}/{repo}/source` (a reload or a bookmark of a form's answer): the tab, which never
/// shows a secret again.
async fn to_tab(
    State(app): State<App>,
    viewer: Viewer,
    Path((ns, repo)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    // Only a repository the viewer sees: its names are then valid in a URL.
    let row = load_repo(&app, &viewer.caller, &ns, &repo, Role::Read).await?;
    let to = tab_path(&row.namespace, &row.name);
    Ok(axum::response::Redirect::to(&to).into_response())
}

/// `POST /repos/{ns}/{repo}/source`: links a git source (the API's `PUT .../source`). A secret kiln
/// generates is shown on this answer, once; errors are shown next to their field.
async fn link_source(
    State(app): State<App>,
    Path((ns, repo)): Path<(String, String)>,
    CsrfForm(viewer, f): CsrfForm<LinkForm>,
) -> Result<Response, ConsoleError> {
    let secret = f.webhook_secret.trim();
    let repository = f.repository.trim();
    let clone_url = f.clone_url.trim();
    let body = PutSource {
        provider: f.provider.clone(),
        clone_url: (!clone_url.is_empty() || repository.is_empty()).then(|| clone_url.to_string()),
        repository: (!repository.is_empty()).then(|| repository.to_string()),
        webhook_secret: (!secret.is_empty()).then(|| secret.to_string()),
        regenerate_secret: false,
        remove_credentials: false,
    };
    match sources::put(&app, &viewer.caller, &ns, &repo, body).await {
        Ok(view) => match view.webhook_secret {
            Some(new_secret) => {
                tracing::info!(repo = %format!("{ns}/{repo}"), "console: source linked");
                let answer = Answer {
                    new_secret: Some(new_secret),
                    ..Answer::default()
                };
                render_tab(&app, &viewer, &ns, &repo, &TabQuery::default(), answer).await
            }
            None => Ok(super::done(&tab_path(&ns, &repo), "rules_source_linked")),
        },
        Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
            let answer = Answer {
                link_errors: form::errors_for(viewer.lang, &e, LINK_FIELDS),
                // The secret typed is not sent back to the page.
                link_form: Some(LinkForm {
                    webhook_secret: String::new(),
                    ..f
                }),
                status: Some(StatusCode::UNPROCESSABLE_ENTITY),
                ..Answer::default()
            };
            render_tab(&app, &viewer, &ns, &repo, &TabQuery::default(), answer).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /repos/{ns}/{repo}/source/secret`: a new generated webhook secret, shown on this answer
/// only (the host's webhook must be given it).
async fn regenerate_secret(
    State(app): State<App>,
    Path((ns, repo)): Path<(String, String)>,
    CsrfForm(viewer, NoFields {}): CsrfForm<NoFields>,
) -> Result<Response, ConsoleError> {
    let row = load_repo(&app, &viewer.caller, &ns, &repo, Role::Write).await?;
    let source = db::sources::for_repo(&app.db, &app.secrets, &row.id)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("git source of {ns}/{repo}")))?;
    let body = PutSource {
        provider: source.provider,
        clone_url: Some(source.clone_url),
        repository: source.repository,
        webhook_secret: None,
        regenerate_secret: true,
        remove_credentials: false,
    };
    let view = sources::put(&app, &viewer.caller, &ns, &repo, body).await?;
    let answer = Answer {
        new_secret: view.webhook_secret,
        ..Answer::default()
    };
    render_tab(&app, &viewer, &ns, &repo, &TabQuery::default(), answer).await
}

/// `POST /repos/{ns}/{repo}/source/unlink`: the API's `DELETE .../source` (rules kept, disabled).
async fn unlink_source(
    State(app): State<App>,
    Path((ns, repo)): Path<(String, String)>,
    CsrfForm(viewer, NoFields {}): CsrfForm<NoFields>,
) -> Result<Response, ConsoleError> {
    sources::delete(&app, &viewer.caller, &ns, &repo).await?;
    Ok(super::done(&tab_path(&ns, &repo), "rules_source_unlinked"))
}

/// The add/edit form as shown: its fields, their errors, the status.
struct Shown<'a> {
    form: &'a RuleForm,
    errors: Value,
    status: StatusCode,
}

/// The add/edit form page; `rule` None: a new rule.
async fn form_page(
    app: &App,
    viewer: &Viewer,
    ns: &str,
    repo: &str,
    rule: Option<&str>,
    shown: Shown<'_>,
) -> Result<Response, ConsoleError> {
    let Shown {
        form,
        errors,
        status,
    } = shown;
    let (_, mut ctx) = super::repo_tab(app, viewer, ns, repo, Role::Write, "rules").await?;
    ctx.insert("rules_base", &tab_path(ns, repo));
    ctx.insert("rule_id", &rule);
    ctx.insert("form", form);
    ctx.insert("errors", &errors);
    ctx.insert(
        "default_timeout",
        &crate::domain::build_settings::whole_minutes(app.config.build_timeout),
    );
    Ok(render::page_with_status(
        viewer,
        "repo/rule_form.html",
        ctx,
        status,
    ))
}

/// A refused rule form: shown again with the error at its field (422, or the API's 409); any other
/// failure (403, 404) is the error page.
async fn refused(
    app: &App,
    viewer: &Viewer,
    ns: &str,
    repo: &str,
    rule: Option<&str>,
    form: &RuleForm,
    e: ApiError,
) -> Result<Response, ConsoleError> {
    if e.status != StatusCode::UNPROCESSABLE_ENTITY && e.status != StatusCode::CONFLICT {
        return Err(e.into());
    }
    let errors = form::errors_for(viewer.lang, &e, form::FIELDS);
    let shown = Shown {
        form,
        errors,
        status: e.status,
    };
    form_page(app, viewer, ns, repo, rule, shown).await
}

/// `GET /repos/{ns}/{repo}/rules/new`.
async fn new_rule(
    State(app): State<App>,
    viewer: Viewer,
    Path((ns, repo)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    let form = RuleForm::blank();
    let shown = Shown {
        form: &form,
        errors: json!({}),
        status: StatusCode::OK,
    };
    form_page(&app, &viewer, &ns, &repo, None, shown).await
}

/// `POST /repos/{ns}/{repo}/rules/new`: the API's `POST .../rules`.
async fn create_rule(
    State(app): State<App>,
    Path((ns, repo)): Path<(String, String)>,
    CsrfForm(viewer, f): CsrfForm<RuleForm>,
) -> Result<Response, ConsoleError> {
    let result = match f.to_create() {
        Ok(body) => rules::create(&app, &viewer.caller, &ns, &repo, body).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Ok(super::done(&tab_path(&ns, &repo), "rules_created")),
        Err(e) => refused(&app, &viewer, &ns, &repo, None, &f, e).await,
    }
}

/// `GET /repos/{ns}/{repo}/rules/{id}/edit`.
async fn edit_rule(
    State(app): State<App>,
    viewer: Viewer,
    Path((ns, repo, id)): Path<(String, String, String)>,
) -> Result<Response, ConsoleError> {
    let (_, rule) = load_rule(&app, &viewer.caller, &ns, &repo, &id, Role::Write).await?;
    let form = RuleForm::of(&RuleView::new(rule, app.config.build_timeout));
    let shown = Shown {
        form: &form,
        errors: json!({}),
        status: StatusCode::OK,
    };
    form_page(&app, &viewer, &ns, &repo, Some(&id), shown).await
}

/// `POST /repos/{ns}/{repo}/rules/{id}/edit`: the API's `PATCH .../rules/{id}` with every field.
async fn update_rule(
    State(app): State<App>,
    Path((ns, repo, id)): Path<(String, String, String)>,
    CsrfForm(viewer, f): CsrfForm<RuleForm>,
) -> Result<Response, ConsoleError> {
    let result = match f.to_update() {
        Ok(body) => rules::update(&app, &viewer.caller, &ns, &repo, &id, body).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Ok(super::done(&tab_path(&ns, &repo), "rules_updated")),
        Err(e) => refused(&app, &viewer, &ns, &repo, Some(&id), &f, e).await,
    }
}

async fn set_enabled(
    app: &App,
    viewer: &Viewer,
    ns: &str,
    repo: &str,
    id: &str,
    enabled: bool,
) -> Result<Response, ConsoleError> {
    let body = rules::UpdateRule {
        enabled: Some(enabled),
        ..rules::UpdateRule::default()
    };
    rules::update(app, &viewer.caller, ns, repo, id, body).await?;
    let flash = if enabled {
        "rules_enabled"
    } else {
        "rules_disabled"
    };
    Ok(super::done(&tab_path(ns, repo), flash))
}

/// `POST /repos/{ns}/{repo}/rules/{id}/enable`.
async fn enable_rule(
    State(app): State<App>,
    Path((ns, repo, id)): Path<(String, String, String)>,
    CsrfForm(viewer, NoFields {}): CsrfForm<NoFields>,
) -> Result<Response, ConsoleError> {
    set_enabled(&app, &viewer, &ns, &repo, &id, true).await
}

/// `POST /repos/{ns}/{repo}/rules/{id}/disable`.
async fn disable_rule(
    State(app): State<App>,
    Path((ns, repo, id)): Path<(String, String, String)>,
    CsrfForm(viewer, NoFields {}): CsrfForm<NoFields>,
) -> Result<Response, ConsoleError> {
    set_enabled(&app, &viewer, &ns, &repo, &id, false).await
}

/// `POST /repos/{ns}/{repo}/rules/{id}/delete`.
async fn delete_rule(
    State(app): State<App>,
    Path((ns, repo, id)): Path<(String, String, String)>,
    CsrfForm(viewer, NoFields {}): CsrfForm<NoFields>,
) -> Result<Response, ConsoleError> {
    rules::delete(&app, &viewer.caller, &ns, &repo, &id).await?;
    Ok(super::done(&tab_path(&ns, &repo), "rules_deleted"))
}

#[derive(Deserialize)]
pub struct BuildForm {
    #[serde(rename = "ref", default)]
    git_ref: String,
}

/// `POST /repos/{ns}/{repo}/rules/{id}/build`: "build now" (the API's `POST .../rules/{id}/builds`),
/// then the build's page. A refusal (a ref the rule does not build, a disabled rule) is shown on
/// the tab at the rule, with the API's status.
async fn build_rule(
    State(app): State<App>,
    Path((ns, repo, id)): Path<(String, String, String)>,
    CsrfForm(viewer, f): CsrfForm<BuildForm>,
) -> Result<Response, ConsoleError> {
    let body = builds::BuildNow {
        git_ref: Some(f.git_ref.trim().to_string()).filter(|r| !r.is_empty()),
        commit: None,
    };
    match builds::build_now(&app, &viewer.caller, &ns, &repo, &id, body).await {
        Ok(build) => Ok(super::done(
            &format!("/builds/{}", build.id),
            "rules_build_queued",
        )),
        Err(e)
            if e.status == StatusCode::UNPROCESSABLE_ENTITY || e.status == StatusCode::CONFLICT =>
        {
            let answer = Answer {
                build_error: Some(json!({
                    "rule_id": id,
                    "ref": f.git_ref,
                    "message": api_text(viewer.lang, e.code, &e.message),
                })),
                status: Some(e.status),
                ..Answer::default()
            };
            render_tab(&app, &viewer, &ns, &repo, &TabQuery::default(), answer).await
        }
        Err(e) => Err(e.into()),
    }
}

/// The "pick a repository" list of the link form, when the namespace has integrations (issue
/// 12): one page of the chosen integration's repositories, searched; the host's error in place
/// of the list when it fails.
async fn picker(
    app: &App,
    viewer: &Viewer,
    ns: &str,
    namespace_id: &str,
    q: &TabQuery,
) -> Result<Value, ConsoleError> {
    let integrations = db::integrations::for_namespace(&app.db, &app.secrets, namespace_id).await?;
    let providers: Vec<String> = integrations.iter().map(|i| i.provider.clone()).collect();
    let Some(provider) = q
        .pick_provider
        .clone()
        .filter(|p| providers.contains(p))
        .or_else(|| providers.first().cloned())
    else {
        return Ok(Value::Null);
    };
    let search = q.pick_search.clone().unwrap_or_default();
    let page = q.pick_page.unwrap_or(1).clamp(1, 10_000);
    let asked = crate::http::api::integrations::RepositoriesQuery {
        page: Some(page),
        per_page: Some(20),
        search: Some(search.clone()).filter(|s| !s.trim().is_empty()),
    };
    let listed =
        crate::http::api::integrations::repositories(app, &viewer.caller, ns, &provider, asked)
            .await;
    let (repositories, next_page, error) = match listed {
        Ok(l) => (l.repositories, l.next_page, None),
        Err(e) => (
            Vec::new(),
            None,
            Some(api_text(viewer.lang, e.code, &e.message)),
        ),
    };
    Ok(json!({
        "providers": providers,
        "provider": provider,
        "search": search,
        "page": page,
        "prev_page": (page > 1).then(|| page - 1),
        "next_page": next_page,
        "repositories": repositories,
        "error": error,
    }))
}
