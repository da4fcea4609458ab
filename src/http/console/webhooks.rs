//! The Webhooks tab: subscriptions to kiln's notifications (add, edit, enable/disable, delete,
//! "send test"), each one's access records, and a record's page (`/deliveries/{id}`) with the
//! request and the answer, and "redeliver". Every check and change is the API's
//! (`http::api::webhooks`).

mod body_view;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tera::Context;

use self::body_view::{BodyView, SHOWN_LIMIT, body_view};
use super::error::ConsoleError;
use super::session::{CsrfForm, Viewer};
use super::{done, form_errors, render, repo_tab};
use crate::app::App;
use crate::db::{self, Page};
use crate::http::api::repos::RepoView;
use crate::http::api::webhooks::{
    self as api, AttemptView, CreateWebhook, DeliverySummary, UpdateWebhook, WebhookView,
};
use crate::http::auth::Role;
use crate::http::error::ApiError;
use crate::notify::payload;

pub fn routes() -> Router<App> {
    Router::new()
        .route(
            "/repos/{ns}/{repo}/webhooks",
            get(list_webhooks).post(create_webhook),
        )
        .route("/repos/{ns}/{repo}/webhooks/{id}", get(show_webhook))
        .route(
            "/repos/{ns}/{repo}/webhooks/{id}/edit",
            get(edit_webhook_page).post(edit_webhook),
        )
        .route(
            "/repos/{ns}/{repo}/webhooks/{id}/delete",
            post(delete_webhook),
        )
        .route(
            "/repos/{ns}/{repo}/webhooks/{id}/enable",
            post(enable_webhook),
        )
        .route(
            "/repos/{ns}/{repo}/webhooks/{id}/disable",
            post(disable_webhook),
        )
        .route("/repos/{ns}/{repo}/webhooks/{id}/test", post(test_webhook))
        .route("/deliveries/{id}", get(show_delivery))
        .route("/deliveries/{id}/body/{part}", get(delivery_body))
        .route("/deliveries/{id}/redeliver", post(redeliver))
}

/// Access records on one page of a subscription.
const RECORDS_PAGE: i64 = 25;

fn tab_path(ns: &str, repo: &str) -> String {
    format!("/repos/{ns}/{repo}/webhooks")
}

fn hook_path(ns: &str, repo: &str, id: &str) -> String {
    format!("/repos/{ns}/{repo}/webhooks/{id}")
}

/// A subscription form as typed: what the page shows again when it has an error.
#[derive(Debug, Default, Serialize)]
struct HookForm {
    name: String,
    url: String,
    secret: String,
    events: Vec<String>,
    tag_filter: String,
    payload_format: String,
    active: bool,
    /// `page`: a change made from the subscription's page goes back there (else to the tab).
    from: String,
}

impl HookForm {
    /// From the submitted fields (checkboxes `events` repeat; an unchecked box is absent).
    fn parse(fields: Vec<(String, String)>) -> HookForm {
        let mut f = HookForm::default();
        for (k, v) in fields {
            match k.as_str() {
                "name" => f.name = v,
                "url" => f.url = v.trim().to_string(),
                "secret" => f.secret = v.trim().to_string(),
                "events" => f.events.push(v),
                "tag_filter" => f.tag_filter = v.trim().to_string(),
                "payload_format" => f.payload_format = v,
                "active" => f.active = !v.is_empty(),
                "from" => f.from = v,
                _ => {}
            }
        }
        f
    }

    fn of(hook: &WebhookView) -> HookForm {
        HookForm {
            name: hook.name.clone(),
            url: hook.url.clone(),
            secret: String::new(),
            events: hook.events.clone(),
            tag_filter: hook.tag_filter.clone().unwrap_or_default(),
            payload_format: hook.payload_format.clone(),
            active: hook.active,
            from: String::new(),
        }
    }

    /// What a new subscription form starts with.
    fn blank() -> HookForm {
        HookForm {
            events: vec!["image.pushed".into()],
            payload_format: "kiln".into(),
            active: true,
            ..HookForm::default()
        }
    }

    fn secret(&self) -> Option<String> {
        (!self.secret.is_empty()).then(|| self.secret.clone())
    }

    /// The form without its secret (a secret typed is never written back into a page).
    fn shown(mut self) -> HookForm {
        self.secret.clear();
        self
    }
}

/// The choices the subscription forms offer, with their labels.
fn choices(ctx: &mut Context) {
    ctx.insert("all_events", payload::EVENTS);
    ctx.insert("all_formats", payload::FORMATS);
}

/// An API error a form shows next to its field (a refused value or a taken name); anything else
/// (permission, not found) is the error page.
fn is_form_error(e: &ApiError) -> bool {
    e.field.is_some()
        && (e.status == StatusCode::UNPROCESSABLE_ENTITY || e.status == StatusCode::CONFLICT)
}

/// The last delivery of each subscription, for the tab's "last delivery" column.
async fn last_deliveries(app: &App, hooks: Vec<WebhookView>) -> Result<Vec<Row>, ConsoleError> {
    let mut rows = Vec::with_capacity(hooks.len());
    let one = Page {
        limit: 1,
        cursor: None,
    };
    for h in hooks {
        let last = db::deliveries::list_for_webhook(&app.db, &h.id, &one)
            .await?
            .into_iter()
            .next()
            .map(DeliverySummary::from);
        rows.push(Row { hook: h, last });
    }
    Ok(rows)
}

#[derive(Serialize)]
struct Row {
    hook: WebhookView,
    last: Option<DeliverySummary>,
}

/// A form shown again after the API refused it: what was typed, the errors by field, the status.
struct Refused {
    form: HookForm,
    errors: serde_json::Value,
    status: StatusCode,
}

impl Refused {
    fn new(viewer: &Viewer, form: HookForm, e: &ApiError) -> Refused {
        Refused {
            form,
            errors: form_errors(viewer, e),
            status: e.status,
        }
    }
}

/// The tab: the subscriptions, and the add form (blank, or as refused).
async fn tab_page(
    app: &App,
    viewer: &Viewer,
    ns: &str,
    repo: &str,
    refused: Option<Refused>,
) -> Result<Response, ConsoleError> {
    let Refused {
        form,
        errors,
        status,
    } = refused.unwrap_or_else(|| Refused {
        form: HookForm::blank(),
        errors: json!({}),
        status: StatusCode::OK,
    });
    let (row, mut ctx) = repo_tab(app, viewer, ns, repo, Role::Read, "webhooks").await?;
    let mut hooks: Vec<WebhookView> = db::webhooks::list(&app.db, &row.id)
        .await?
        .into_iter()
        .map(WebhookView::from)
        .collect();
    hooks.reverse();
    ctx.insert("rows", &last_deliveries(app, hooks).await?);
    ctx.insert("form", &form.shown());
    ctx.insert("errors", &errors);
    choices(&mut ctx);
    Ok(render::page_with_status(
        viewer,
        "repo/webhooks.html",
        ctx,
        status,
    ))
}

/// `GET /repos/{ns}/{repo}/webhooks`: the subscriptions, and the form to add one.
async fn list_webhooks(
    State(app): State<App>,
    viewer: Viewer,
    Path((ns, repo)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    tab_page(&app, &viewer, &ns, &repo, None).await
}

/// `POST /repos/{ns}/{repo}/webhooks`: subscribes. A secret kiln generates is shown on the answer
/// page, once; a refused field shows the form again with its error (422, or 409 for a taken name).
async fn create_webhook(
    State(app): State<App>,
    Path((ns, repo)): Path<(String, String)>,
    CsrfForm(viewer, fields): CsrfForm<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let form = HookForm::parse(fields);
    let body = CreateWebhook {
        name: form.name.clone(),
        url: form.url.clone(),
        secret: form.secret(),
        events: Some(form.events.clone()),
        tag_filter: Some(form.tag_filter.clone()),
        payload_format: Some(form.payload_format.clone()),
        active: Some(form.active),
    };
    match api::create(&app, &viewer.caller, &ns, &repo, body).await {
        Ok(hook) if hook.secret.is_some() => {
            let mut ctx = webhook_context(&app, &viewer, &ns, &repo, &hook.id, None).await?;
            ctx.insert("new_secret", &hook.secret);
            ctx.insert("flash", &viewer.lang.text("flash.webhooks_created"));
            Ok(render::page_with_status(
                &viewer,
                "repo/webhook.html",
                ctx,
                StatusCode::CREATED,
            ))
        }
        Ok(hook) => Ok(done(&hook_path(&ns, &repo, &hook.id), "webhooks_created")),
        Err(e) if is_form_error(&e) => {
            let refused = Refused::new(&viewer, form, &e);
            tab_page(&app, &viewer, &ns, &repo, Some(refused)).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize, Default)]
struct RecordsQuery {
    /// Records older than this delivery id.
    cursor: Option<String>,
}

/// A subscription's page context: the tab, the subscription, a page of its access records.
async fn webhook_context(
    app: &App,
    viewer: &Viewer,
    ns: &str,
    repo: &str,
    id: &str,
    cursor: Option<String>,
) -> Result<Context, ConsoleError> {
    let (_, mut ctx) = repo_tab(app, viewer, ns, repo, Role::Read, "webhooks").await?;
    let page = Page {
        limit: RECORDS_PAGE,
        cursor,
    };
    let (hook, records) = api::deliveries(app, &viewer.caller, ns, repo, id, &page).await?;
    let next = (records.len() as i64 == page.limit)
        .then(|| records.last().map(|d| d.id.clone()))
        .flatten();
    ctx.insert("hook", &WebhookView::from(hook));
    ctx.insert("records", &records);
    ctx.insert("next", &next);
    ctx.insert("paged", &page.cursor.is_some());
    Ok(ctx)
}

/// `GET /repos/{ns}/{repo}/webhooks/{id}`: a subscription's settings and access records.
async fn show_webhook(
    State(app): State<App>,
    viewer: Viewer,
    Path((ns, repo, id)): Path<(String, String, String)>,
    Query(q): Query<RecordsQuery>,
) -> Result<Response, ConsoleError> {
    let ctx = webhook_context(&app, &viewer, &ns, &repo, &id, q.cursor).await?;
    Ok(render::page(&viewer, "repo/webhook.html", ctx))
}

/// The edit form: the subscription's values, or the form as refused.
async fn edit_page(
    app: &App,
    viewer: &Viewer,
    (ns, repo, id): (&str, &str, &str),
    refused: Option<Refused>,
) -> Result<Response, ConsoleError> {
    let (_, mut ctx) = repo_tab(app, viewer, ns, repo, Role::Read, "webhooks").await?;
    let hook =
        WebhookView::from(api::load_webhook(app, &viewer.caller, ns, repo, id, Role::Write).await?);
    let (form, errors, status) = match refused {
        Some(r) => (r.form, r.errors, r.status),
        None => (HookForm::of(&hook), json!({}), StatusCode::OK),
    };
    ctx.insert("hook", &hook);
    ctx.insert("form", &form.shown());
    ctx.insert("errors", &errors);
    choices(&mut ctx);
    Ok(render::page_with_status(
        viewer,
        "repo/webhook_edit.html",
        ctx,
        status,
    ))
}

/// `GET /repos/{ns}/{repo}/webhooks/{id}/edit` (write role).
async fn edit_webhook_page(
    State(app): State<App>,
    viewer: Viewer,
    Path((ns, repo, id)): Path<(String, String, String)>,
) -> Result<Response, ConsoleError> {
    edit_page(&app, &viewer, (&ns, &repo, &id), None).await
}

/// `POST /repos/{ns}/{repo}/webhooks/{id}/edit`: every field of the form; an empty secret keeps
/// the current one, an empty tag filter clears it.
async fn edit_webhook(
    State(app): State<App>,
    Path((ns, repo, id)): Path<(String, String, String)>,
    CsrfForm(viewer, fields): CsrfForm<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let form = HookForm::parse(fields);
    let body = UpdateWebhook {
        name: Some(form.name.clone()),
        url: Some(form.url.clone()),
        secret: form.secret(),
        events: Some(form.events.clone()),
        tag_filter: Some(form.tag_filter.clone()),
        payload_format: Some(form.payload_format.clone()),
        active: Some(form.active),
    };
    match api::update(&app, &viewer.caller, &ns, &repo, &id, body).await {
        Ok(hook) => Ok(done(&hook_path(&ns, &repo, &hook.id), "webhooks_saved")),
        Err(e) if is_form_error(&e) => {
            let refused = Refused::new(&viewer, form, &e);
            edit_page(&app, &viewer, (&ns, &repo, &id), Some(refused)).await
        }
        Err(e) => Err(e.into()),
    }
}

/// Where a change made with a button goes back to: the subscription's page or the tab.
fn back(form: &HookForm, ns: &str, repo: &str, id: &str) -> String {
    if form.from == "page" {
        hook_path(ns, repo, id)
    } else {
        tab_path(ns, repo)
    }
}

async fn set_active(
    app: &App,
    ns: &str,
    repo: &str,
    id: &str,
    viewer: &Viewer,
    form: &HookForm,
    active: bool,
) -> Result<Response, ConsoleError> {
    let body = UpdateWebhook {
        name: None,
        url: None,
        secret: None,
        events: None,
        tag_filter: None,
        payload_format: None,
        active: Some(active),
    };
    api::update(app, &viewer.caller, ns, repo, id, body).await?;
    let flash = if active {
        "webhooks_enabled"
    } else {
        "webhooks_disabled"
    };
    Ok(done(&back(form, ns, repo, id), flash))
}

/// `POST /repos/{ns}/{repo}/webhooks/{id}/enable`.
async fn enable_webhook(
    State(app): State<App>,
    Path((ns, repo, id)): Path<(String, String, String)>,
    CsrfForm(viewer, fields): CsrfForm<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let form = HookForm::parse(fields);
    set_active(&app, &ns, &repo, &id, &viewer, &form, true).await
}

/// `POST /repos/{ns}/{repo}/webhooks/{id}/disable`.
async fn disable_webhook(
    State(app): State<App>,
    Path((ns, repo, id)): Path<(String, String, String)>,
    CsrfForm(viewer, fields): CsrfForm<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let form = HookForm::parse(fields);
    set_active(&app, &ns, &repo, &id, &viewer, &form, false).await
}

/// `POST /repos/{ns}/{repo}/webhooks/{id}/delete`: the subscription and its records go.
async fn delete_webhook(
    State(app): State<App>,
    Path((ns, repo, id)): Path<(String, String, String)>,
    CsrfForm(viewer, _): CsrfForm<IgnoredAny>,
) -> Result<Response, ConsoleError> {
    api::delete(&app, &viewer.caller, &ns, &repo, &id).await?;
    Ok(done(&tab_path(&ns, &repo), "webhooks_deleted"))
}

/// `POST /repos/{ns}/{repo}/webhooks/{id}/test`: sends a `test` event and waits for its first
/// attempt like the API; back to the subscription's page, where the new record is on top.
async fn test_webhook(
    State(app): State<App>,
    Path((ns, repo, id)): Path<(String, String, String)>,
    CsrfForm(viewer, _): CsrfForm<IgnoredAny>,
) -> Result<Response, ConsoleError> {
    let (attempted, delivery) = api::send_test(&app, &viewer.caller, &ns, &repo, &id).await?;
    let flash = match (attempted, delivery.summary.status.as_str()) {
        (false, _) => "webhooks_test_queued",
        (true, "succeeded") => "webhooks_test_succeeded",
        (true, _) => "webhooks_test_failed",
    };
    Ok(done(&hook_path(&ns, &repo, &id), flash))
}

/// One attempt as the record page shows it: bodies ready for display, headers as pairs.
#[derive(Serialize)]
struct AttemptPage {
    attempt: i64,
    started_at: String,
    duration_ms: i64,
    method: String,
    url: String,
    request_headers: Vec<(String, String)>,
    request_body: BodyView,
    response: Option<ResponsePage>,
    error: Option<String>,
}

#[derive(Serialize)]
struct ResponsePage {
    status: i64,
    headers: Vec<(String, String)>,
    body: BodyView,
}

/// A recorded header object (`{"name": "value"}`) as pairs, by name (as the API lists them).
fn header_pairs(headers: &serde_json::Value) -> Vec<(String, String)> {
    headers
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

impl From<&AttemptView> for AttemptPage {
    fn from(a: &AttemptView) -> Self {
        AttemptPage {
            attempt: a.attempt,
            started_at: a.started_at.clone(),
            duration_ms: a.duration_ms,
            method: a.request.method.clone(),
            url: a.request.url.clone(),
            request_headers: header_pairs(&a.request.headers),
            request_body: body_view(&a.request.body, a.request.body_truncated, SHOWN_LIMIT),
            response: a.response.as_ref().map(|r| ResponsePage {
                status: r.status,
                headers: header_pairs(&r.headers),
                body: body_view(&r.body, r.body_truncated, SHOWN_LIMIT),
            }),
            error: a.error.clone(),
        }
    }
}

/// `GET /deliveries/{id}`: an access record: what kiln sent and what came back, for every attempt
/// (the last one first).
async fn show_delivery(
    State(app): State<App>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let (d, hook, repo) = api::load_delivery(&app, &viewer.caller, &id, Role::Read).await?;
    let detail = api::detail(&app, d).await?;
    let mut attempts: Vec<AttemptPage> = detail.attempt_log.iter().map(Into::into).collect();
    attempts.reverse();
    let mut ctx = Context::new();
    ctx.insert("can_write", &viewer.can_write(&repo.namespace));
    ctx.insert("repo", &RepoView::new(&app, repo));
    ctx.insert("tab", "webhooks");
    ctx.insert("hook", &WebhookView::from(hook));
    ctx.insert("delivery", &detail.summary);
    ctx.insert("attempts", &attempts);
    ctx.insert("shown_limit", &SHOWN_LIMIT);
    Ok(render::page(&viewer, "delivery.html", ctx))
}

#[derive(Deserialize)]
struct BodyQuery {
    attempt: Option<i64>,
}

/// `GET /deliveries/{id}/body/{request|response}?attempt=N`: a recorded body in full, as plain
/// text (never run as a page: it comes from the receiver).
async fn delivery_body(
    State(app): State<App>,
    viewer: Viewer,
    Path((id, part)): Path<(String, String)>,
    Query(q): Query<BodyQuery>,
) -> Result<Response, ConsoleError> {
    let (d, _, _) = api::load_delivery(&app, &viewer.caller, &id, Role::Read).await?;
    let detail = api::detail(&app, d).await?;
    let attempt = match q.attempt {
        Some(n) => detail.attempt_log.iter().find(|a| a.attempt == n),
        None => detail.attempt_log.last(),
    }
    .ok_or_else(ConsoleError::not_found)?;
    let body = match part.as_str() {
        "request" => attempt.request.body.clone(),
        "response" => attempt
            .response
            .as_ref()
            .map(|r| r.body.clone())
            .ok_or_else(ConsoleError::not_found)?,
        _ => return Err(ConsoleError::not_found()),
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; sandbox",
            ),
        ],
        body,
    )
        .into_response())
}

/// `POST /deliveries/{id}/redeliver`: the same message again as a new delivery; to its record.
async fn redeliver(
    State(app): State<App>,
    Path(id): Path<String>,
    CsrfForm(viewer, _): CsrfForm<IgnoredAny>,
) -> Result<Response, ConsoleError> {
    let new = api::redeliver_one(&app, &viewer.caller, &id).await?;
    Ok(done(
        &format!("/deliveries/{}", new.id),
        "deliveries_redelivered",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_form_reads_repeated_boxes_and_absent_ones() {
        let f = HookForm::parse(pairs(&[
            ("_csrf", "t"),
            ("name", " bot "),
            ("url", " https://example.com/h "),
            ("events", "image.pushed"),
            ("events", "build.failed"),
            ("secret", "  "),
            ("tag_filter", ""),
            ("payload_format", "kiln"),
        ]));
        assert_eq!(f.events, vec!["image.pushed", "build.failed"]);
        assert_eq!(f.url, "https://example.com/h");
        assert!(!f.active, "an unchecked box is absent: disabled");
        assert_eq!(f.secret(), None, "a blank secret is none");
        let f = HookForm::parse(pairs(&[("active", "1"), ("secret", "whsec_x")]));
        assert!(f.active);
        assert!(f.events.is_empty());
        assert_eq!(f.secret().as_deref(), Some("whsec_x"));
        assert_eq!(f.shown().secret, "", "a typed secret is never shown again");
    }

    #[test]
    fn recorded_headers_become_pairs_by_name() {
        let h: serde_json::Value =
            serde_json::from_str(r#"{"x-n":3,"content-type":"application/json"}"#).unwrap();
        assert_eq!(
            header_pairs(&h),
            vec![
                ("content-type".to_string(), "application/json".to_string()),
                ("x-n".to_string(), "3".to_string()),
            ]
        );
        assert!(header_pairs(&serde_json::Value::Null).is_empty());
    }
}
