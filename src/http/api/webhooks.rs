//! Subscriptions to new-image (and build) notifications, and their delivery records.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::{PageQuery, load_repo, paged, paginate};
use crate::app::App;
use crate::db::{
    self, Page, deliveries::AttemptRow, deliveries::DeliveryRow, repos::RepoRow,
    webhooks::WebhookFields, webhooks::WebhookRow,
};
use crate::domain::pattern::RefPattern;
use crate::http::auth::{Caller, Role};
use crate::http::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::notify::{outbox, payload, signing};

#[derive(Serialize)]
pub struct WebhookView {
    pub id: String,
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    pub tag_filter: Option<String>,
    pub payload_format: String,
    pub active: bool,
    pub created_at: String,
    pub updated_at: String,
    /// Only in the answer that created it, and only when kiln generated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl From<WebhookRow> for WebhookView {
    fn from(w: WebhookRow) -> Self {
        WebhookView {
            events: w.event_list(),
            id: w.id,
            name: w.name,
            url: w.url,
            tag_filter: w.tag_filter,
            payload_format: w.payload_format,
            active: w.active,
            created_at: w.created_at,
            updated_at: w.updated_at,
            secret: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    pub name: String,
    pub url: String,
    pub secret: Option<String>,
    pub events: Option<Vec<String>>,
    pub tag_filter: Option<String>,
    pub payload_format: Option<String>,
    pub active: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    pub name: Option<String>,
    pub url: Option<String>,
    pub secret: Option<String>,
    pub events: Option<Vec<String>>,
    /// `""` clears the filter.
    pub tag_filter: Option<String>,
    pub payload_format: Option<String>,
    pub active: Option<bool>,
}

fn checked(mut f: WebhookFields) -> ApiResult<WebhookFields> {
    f.name = f.name.trim().to_string();
    if f.name.is_empty() || f.name.chars().count() > 100 {
        return Err(ApiError::invalid(
            "name",
            "invalid_length",
            "name must be 1 to 100 characters",
        ));
    }
    let url = reqwest::Url::parse(&f.url)
        .map_err(|e| ApiError::invalid("url", "invalid_url", format!("url is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ApiError::invalid(
            "url",
            "invalid_url",
            "url must be an http:// or https:// URL with a host",
        ));
    }
    if f.url.len() > 2048 {
        return Err(ApiError::invalid(
            "url",
            "invalid_url",
            "url must be at most 2048 characters",
        ));
    }
    if f.events.is_empty() {
        return Err(ApiError::invalid(
            "events",
            "required",
            "events must name at least one event",
        ));
    }
    for e in &f.events {
        if !payload::EVENTS.contains(&e.as_str()) {
            return Err(ApiError::invalid(
                "events",
                "invalid_value",
                format!("unknown event '{e}': use {}", payload::EVENTS.join(", ")),
            ));
        }
    }
    f.events.sort();
    f.events.dedup();
    if let Some(filter) = &f.tag_filter {
        RefPattern::parse(filter)
            .map_err(|e| ApiError::invalid("tag_filter", e.code, e.message))?;
    }
    if !payload::FORMATS.contains(&f.payload_format.as_str()) {
        return Err(ApiError::invalid(
            "payload_format",
            "invalid_value",
            format!(
                "payload_format must be one of: {}",
                payload::FORMATS.join(", ")
            ),
        ));
    }
    Ok(f)
}

fn conflict_on_name(e: sqlx::Error, name: &str) -> ApiError {
    if db::is_constraint(&e, "") {
        ApiError::conflict(
            "already_exists",
            format!("a webhook named '{name}' exists already"),
        )
        .with_field("name")
    } else {
        e.into()
    }
}

pub async fn create_webhook(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> ApiResult<(StatusCode, axum::Json<WebhookView>)> {
    let view = create(&app, &caller, &ns, &repo, body).await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// Subscribes `{ns}/{repo}` (write role): the fields checked, a secret generated when none is
/// given (then shown in the answer, and only there).
pub async fn create(
    app: &App,
    caller: &Caller,
    ns: &str,
    repo: &str,
    body: CreateWebhook,
) -> ApiResult<WebhookView> {
    let row = load_repo(app, caller, ns, repo, Role::Write).await?;
    let fields = checked(WebhookFields {
        name: body.name,
        url: body.url,
        events: body.events.unwrap_or_else(|| vec!["image.pushed".into()]),
        tag_filter: body.tag_filter.filter(|f| !f.is_empty()),
        payload_format: body.payload_format.unwrap_or_else(|| "kiln".into()),
        active: body.active.unwrap_or(true),
    })?;
    let (secret, generated) = match body.secret {
        Some(s) => {
            signing::secret_key(&s)?;
            (s, false)
        }
        None => (signing::generate_secret(), true),
    };
    let hook = db::webhooks::insert(&app.db, &app.secrets, &row.id, &fields, &secret)
        .await
        .map_err(|e| conflict_on_name(e, &fields.name))?;
    let mut view = WebhookView::from(hook);
    view.secret = generated.then_some(secret);
    Ok(view)
}

pub async fn list_webhooks(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    let row = load_repo(&app, &caller, &ns, &repo, Role::Read).await?;
    let mut hooks = db::webhooks::list(&app.db, &row.id).await?;
    hooks.reverse();
    paginate(hooks, &q, |h| h.id.clone(), WebhookView::from)
}

/// A subscription of `{ns}/{repo}`, if the caller has `role` there.
pub async fn load_webhook(
    app: &App,
    caller: &Caller,
    ns: &str,
    repo: &str,
    id: &str,
    role: Role,
) -> ApiResult<WebhookRow> {
    let row = load_repo(app, caller, ns, repo, role).await?;
    db::webhooks::get(&app.db, id)
        .await?
        .filter(|w| w.repository_id == row.id)
        .ok_or_else(|| ApiError::not_found(&format!("webhook {id} of {ns}/{repo}")))
}

pub async fn get_webhook(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo, id)): ApiPath<(String, String, String)>,
) -> ApiResult<axum::Json<WebhookView>> {
    Ok(axum::Json(
        load_webhook(&app, &caller, &ns, &repo, &id, Role::Read)
            .await?
            .into(),
    ))
}

pub async fn update_webhook(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo, id)): ApiPath<(String, String, String)>,
    ApiJson(body): ApiJson<UpdateWebhook>,
) -> ApiResult<axum::Json<WebhookView>> {
    Ok(axum::Json(
        update(&app, &caller, &ns, &repo, &id, body).await?,
    ))
}

/// Changes the fields given (write role); the others keep their values.
pub async fn update(
    app: &App,
    caller: &Caller,
    ns: &str,
    repo: &str,
    id: &str,
    body: UpdateWebhook,
) -> ApiResult<WebhookView> {
    let hook = load_webhook(app, caller, ns, repo, id, Role::Write).await?;
    let events = hook.event_list();
    let fields = checked(WebhookFields {
        name: body.name.unwrap_or(hook.name),
        url: body.url.unwrap_or(hook.url),
        events: body.events.unwrap_or(events),
        tag_filter: match body.tag_filter {
            Some(f) if f.is_empty() => None,
            Some(f) => Some(f),
            None => hook.tag_filter,
        },
        payload_format: body.payload_format.unwrap_or(hook.payload_format),
        active: body.active.unwrap_or(hook.active),
    })?;
    if let Some(s) = &body.secret {
        signing::secret_key(s)?;
    }
    let hook = db::webhooks::update(
        &app.db,
        &app.secrets,
        &hook.id,
        &fields,
        body.secret.as_deref(),
    )
    .await
    .map_err(|e| conflict_on_name(e, &fields.name))?;
    Ok(hook.into())
}

pub async fn delete_webhook(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo, id)): ApiPath<(String, String, String)>,
) -> ApiResult<StatusCode> {
    delete(&app, &caller, &ns, &repo, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a subscription (write role) with its delivery records.
pub async fn delete(app: &App, caller: &Caller, ns: &str, repo: &str, id: &str) -> ApiResult<()> {
    let hook = load_webhook(app, caller, ns, repo, id, Role::Write).await?;
    db::webhooks::delete(&app.db, &hook.id).await?;
    Ok(())
}

/// Sends a `test` event to this subscription and answers with its delivery once the first attempt is
/// recorded (or, if it takes longer than the delivery timeout, as it stands: 202).
pub async fn test_webhook(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo, id)): ApiPath<(String, String, String)>,
) -> ApiResult<(StatusCode, axum::Json<DeliveryDetail>)> {
    let (attempted, detail) = send_test(&app, &caller, &ns, &repo, &id).await?;
    let status = if attempted {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, axum::Json(detail)))
}

/// Queues a `test` event for one subscription (write role) and waits for its first attempt to be
/// recorded, at most the delivery timeout and 2 s: `(attempted, the delivery as it stands)`.
pub async fn send_test(
    app: &App,
    caller: &Caller,
    ns: &str,
    repo: &str,
    id: &str,
) -> ApiResult<(bool, DeliveryDetail)> {
    let hook = load_webhook(app, caller, ns, repo, id, Role::Write).await?;
    let mut tx = crate::db::write_tx(&app.db).await?;
    let delivery_id = outbox::enqueue_one(
        &mut tx,
        &app.config.public_url,
        &hook,
        &outbox::test_message(ns, repo),
    )
    .await?;
    tx.commit().await?;
    app.notifier.wake();
    let deadline =
        tokio::time::Instant::now() + app.config.delivery_timeout + Duration::from_secs(2);
    loop {
        let d = db::deliveries::get(&app.db, &delivery_id)
            .await?
            .ok_or_else(|| ApiError::not_found("delivery"))?;
        if d.attempts > 0 {
            return Ok((true, detail(app, d).await?));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok((false, detail(app, d).await?));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Serialize)]
pub struct DeliverySummary {
    pub id: String,
    pub webhook_id: String,
    pub message_id: String,
    pub event: String,
    pub status: String,
    pub attempts: i64,
    pub response_status: Option<i64>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    pub redelivery_of: Option<String>,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

impl From<DeliveryRow> for DeliverySummary {
    fn from(d: DeliveryRow) -> Self {
        DeliverySummary {
            next_attempt_at: (d.status == "pending").then_some(d.next_attempt_at),
            id: d.id,
            webhook_id: d.webhook_id,
            message_id: d.message_id,
            event: d.event,
            status: d.status,
            attempts: d.attempts,
            response_status: d.response_status,
            duration_ms: d.duration_ms,
            error: d.error,
            redelivery_of: d.redelivery_of,
            created_at: d.created_at,
            finished_at: d.finished_at,
        }
    }
}

#[derive(Clone, Serialize)]
pub struct RequestView {
    pub method: String,
    pub url: String,
    pub headers: serde_json::Value,
    pub body: String,
    pub body_truncated: bool,
}

#[derive(Clone, Serialize)]
pub struct ResponseView {
    pub status: i64,
    pub headers: serde_json::Value,
    pub body: String,
    pub body_truncated: bool,
}

#[derive(Serialize)]
pub struct AttemptView {
    pub attempt: i64,
    pub started_at: String,
    pub duration_ms: i64,
    pub request: RequestView,
    pub response: Option<ResponseView>,
    pub error: Option<String>,
}

impl From<AttemptRow> for AttemptView {
    fn from(a: AttemptRow) -> Self {
        let json = |t: &str| serde_json::from_str(t).unwrap_or(serde_json::Value::Null);
        AttemptView {
            attempt: a.attempt,
            started_at: a.started_at,
            duration_ms: a.duration_ms,
            request: RequestView {
                method: a.request_method,
                url: a.request_url,
                headers: json(&a.request_headers),
                body: a.request_body,
                body_truncated: a.request_body_truncated,
            },
            response: a.response_status.map(|status| ResponseView {
                status,
                headers: a.response_headers.as_deref().map(json).unwrap_or_default(),
                body: a.response_body.unwrap_or_default(),
                body_truncated: a.response_body_truncated,
            }),
            error: a.error,
        }
    }
}

/// A delivery with the access record of its last attempt (`request`, `response` or `error`) and of
/// every attempt before it.
#[derive(Serialize)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub summary: DeliverySummary,
    pub request: Option<RequestView>,
    pub response: Option<ResponseView>,
    pub attempt_log: Vec<AttemptView>,
}

/// The delivery with its attempts.
pub async fn detail(app: &App, d: DeliveryRow) -> ApiResult<DeliveryDetail> {
    let attempt_log: Vec<AttemptView> = db::deliveries::attempts(&app.db, &d.id)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    // The last attempt is shown at the top level too; `attempt_log` keeps every attempt.
    let last = attempt_log.last();
    Ok(DeliveryDetail {
        request: last.map(|a| a.request.clone()),
        response: last.and_then(|a| a.response.clone()),
        summary: d.into(),
        attempt_log,
    })
}

pub async fn list_deliveries(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo, id)): ApiPath<(String, String, String)>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    let page = q.page()?;
    let (_, views) = deliveries(&app, &caller, &ns, &repo, &id, &page).await?;
    let last = views.last().map(|d| d.id.clone());
    Ok(paged(views, &page, last))
}

/// A page of a subscription's deliveries, newest first (read role), with the subscription.
pub async fn deliveries(
    app: &App,
    caller: &Caller,
    ns: &str,
    repo: &str,
    id: &str,
    page: &Page,
) -> ApiResult<(WebhookRow, Vec<DeliverySummary>)> {
    let hook = load_webhook(app, caller, ns, repo, id, Role::Read).await?;
    let rows = db::deliveries::list_for_webhook(&app.db, &hook.id, page).await?;
    Ok((hook, rows.into_iter().map(Into::into).collect()))
}

/// A delivery, its subscription and repository, if the caller has `role` in its namespace (a
/// namespace the caller cannot see: not found).
pub async fn load_delivery(
    app: &App,
    caller: &Caller,
    id: &str,
    role: Role,
) -> ApiResult<(DeliveryRow, WebhookRow, RepoRow)> {
    let not_found = || ApiError::not_found(&format!("delivery {id}"));
    let d = db::deliveries::get(&app.db, id)
        .await?
        .ok_or_else(not_found)?;
    let hook = db::webhooks::get(&app.db, &d.webhook_id)
        .await?
        .ok_or_else(not_found)?;
    let repo = db::repos::by_id(&app.db, &hook.repository_id)
        .await?
        .ok_or_else(not_found)?;
    if !caller.sees(&repo.namespace) {
        return Err(not_found());
    }
    caller.require(role, Some(&repo.namespace))?;
    Ok((d, hook, repo))
}

pub async fn get_delivery(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<DeliveryDetail>> {
    let (d, _, _) = load_delivery(&app, &caller, &id, Role::Read).await?;
    Ok(axum::Json(detail(&app, d).await?))
}

pub async fn redeliver(
    State(app): State<App>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, axum::Json<DeliverySummary>)> {
    let view = redeliver_one(&app, &caller, &id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(view)))
}

/// Sends the same message again (same `webhook-id`, so receivers can tell) as a new delivery
/// (write role), queued: the worker sends it.
pub async fn redeliver_one(app: &App, caller: &Caller, id: &str) -> ApiResult<DeliverySummary> {
    let (d, hook, _) = load_delivery(app, caller, id, Role::Write).await?;
    let mut tx = crate::db::write_tx(&app.db).await?;
    let new_id = db::deliveries::enqueue(
        &mut tx,
        &hook.id,
        &d.message_id,
        &d.event,
        &d.content_type,
        &d.body,
        Some(&d.id),
    )
    .await?;
    tx.commit().await?;
    let row = db::deliveries::get(&app.db, &new_id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    app.notifier.wake();
    Ok(row.into())
}
