//! Inbound git hooks: cap the body, route it to candidate sources by repository URL, verify the signature
//! against each candidate's secret, parse, then store the event and queue its builds in one transaction
//! before answering.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::{ApiError, ApiResult};
use crate::app::App;
use crate::db::{self, sources::SourceRow};
use crate::domain::rules::{GitRef, PlanContext, PushEvent, RuleOutcome, plan_builds};
use crate::forge::{MalformedPayload, Outcome, gitea, github, gitlab};
use sha2::{Digest, Sha256};

/// Reads at most `limit` bytes of body: 413 beyond.
async fn read_capped(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Bytes> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is over {limit} bytes"),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())
}

/// The first of `names` that is present and not empty.
fn header<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|name| {
        headers
            .get(*name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    })
}

/// How one forge signs and describes its deliveries.
struct Forge {
    provider: &'static str,
    signature_headers: &'static [&'static str],
    event_headers: &'static [&'static str],
    delivery_headers: &'static [&'static str],
    /// (secret, body, signature header) → valid?
    verify: fn(&[u8], &[u8], &str) -> bool,
    urls: fn(&[u8]) -> Vec<String>,
    parse: fn(&str, &[u8]) -> Result<Outcome, MalformedPayload>,
    /// Older GitLabs send no delivery id: such deliveries are told apart by the body's digest.
    delivery_optional: bool,
}

const GITHUB: Forge = Forge {
    provider: "github",
    signature_headers: &[github::SIGNATURE_HEADER],
    event_headers: &[github::EVENT_HEADER],
    delivery_headers: &[github::DELIVERY_HEADER],
    verify: github::verify_signature,
    urls: github::repository_urls,
    parse: github::parse,
    delivery_optional: false,
};

const GITEA: Forge = Forge {
    provider: "gitea",
    signature_headers: gitea::SIGNATURE_HEADERS,
    event_headers: gitea::EVENT_HEADERS,
    delivery_headers: gitea::DELIVERY_HEADERS,
    verify: gitea::verify_signature,
    // Gitea's payloads have GitHub's shape.
    urls: github::repository_urls,
    parse: github::parse,
    delivery_optional: false,
};

const GITLAB: Forge = Forge {
    provider: "gitlab",
    signature_headers: gitlab::TOKEN_HEADERS,
    event_headers: gitlab::EVENT_HEADERS,
    delivery_headers: gitlab::DELIVERY_HEADERS,
    verify: gitlab::verify_token,
    urls: gitlab::repository_urls,
    parse: gitlab::parse,
    delivery_optional: true,
};

pub async fn receive_github(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    receive(&app, &GITHUB, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn receive_gitea(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    receive(&app, &GITEA, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn receive_gitlab(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    receive(&app, &GITLAB, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn receive(app: &App, forge: &Forge, headers: &HeaderMap, body: Body) -> ApiResult<Response> {
    let body = read_capped(headers, body, app.config.hook_body_limit).await?;
    let signature = header(headers, forge.signature_headers).ok_or_else(|| {
        ApiError::unauthorized(format!("missing {}", forge.signature_headers.join(" or ")))
    })?;
    let urls = (forge.urls)(&body);
    let candidates = db::sources::candidates(&app.db, forge.provider, &urls).await?;
    let verified: Vec<SourceRow> = candidates
        .into_iter()
        .filter(|s| (forge.verify)(s.webhook_secret.as_bytes(), &body, signature))
        .collect();
    if verified.is_empty() {
        tracing::info!(provider = forge.provider, urls = ?urls, "hook refused: no source with a matching signature");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "the signature matches no repository linked to this payload's repository",
        ));
    }
    // Only now is the payload trusted enough to read.
    let event = header(headers, forge.event_headers).ok_or_else(|| {
        ApiError::bad_request(
            "missing_header",
            format!("missing {}", forge.event_headers[0]),
        )
    })?;
    let delivery = match header(headers, forge.delivery_headers) {
        Some(d) => d.to_string(),
        None if forge.delivery_optional => format!("sha256:{}", hex::encode(Sha256::digest(&body))),
        None => {
            return Err(ApiError::bad_request(
                "missing_header",
                format!("missing {}", forge.delivery_headers[0]),
            ));
        }
    };
    if delivery.len() > 200 {
        return Err(ApiError::bad_request(
            "bad_header",
            "the delivery id is too long",
        ));
    }
    let outcome =
        (forge.parse)(event, &body).map_err(|e| ApiError::bad_request("malformed_payload", e.0))?;
    accept(
        app,
        forge.provider,
        &delivery,
        event,
        &outcome,
        &body,
        &verified,
    )
    .await
}

/// Stores the delivery for every verified source (once per delivery id) and queues planned builds.
async fn accept(
    app: &App,
    provider: &str,
    delivery: &str,
    event: &str,
    outcome: &Outcome,
    body: &[u8],
    sources: &[SourceRow],
) -> ApiResult<Response> {
    let mut build_ids = Vec::new();
    let mut duplicates = 0;
    for source in sources {
        match store_event(app, provider, delivery, event, outcome, body, source).await? {
            Some(ids) => build_ids.extend(ids),
            None => duplicates += 1,
        }
    }
    if !build_ids.is_empty() {
        app.builds.wake_workers();
    }
    tracing::info!(
        provider,
        delivery,
        event,
        builds = build_ids.len(),
        duplicates,
        "hook accepted"
    );
    let response = if duplicates == sources.len() {
        (
            StatusCode::OK,
            axum::Json(json!({"builds": [], "duplicate": true})),
        )
    } else {
        match outcome {
            Outcome::Ping => (StatusCode::OK, axum::Json(json!({"ok": true}))),
            Outcome::Push(p) if p.deleted => (StatusCode::OK, axum::Json(json!({"builds": []}))),
            _ => (
                StatusCode::ACCEPTED,
                axum::Json(json!({"builds": build_ids})),
            ),
        }
    };
    Ok(response.into_response())
}

/// One transaction: the event row (None if this delivery was stored already) and its builds.
async fn store_event(
    app: &App,
    provider: &str,
    delivery: &str,
    event: &str,
    outcome: &Outcome,
    body: &[u8],
    source: &SourceRow,
) -> ApiResult<Option<Vec<String>>> {
    let mut tx = crate::db::write_tx(&app.db).await?;
    let repo = db::repos::by_id(&app.db, &source.repository_id)
        .await?
        .ok_or_else(|| ApiError::internal("source without repository"))?;

    let (summary, git_ref, commit, plan) = match outcome {
        Outcome::Ping => ("ping".to_string(), None, None, None),
        Outcome::Ignore(why) => (why.clone(), None, None, None),
        Outcome::Push(p) if p.deleted => (
            "ref deleted: nothing to build".into(),
            Some(&p.git_ref),
            None,
            None,
        ),
        Outcome::Push(p) => match GitRef::parse(&p.git_ref) {
            None => (
                format!("{} is neither a branch nor a tag", p.git_ref),
                Some(&p.git_ref),
                Some(&p.commit),
                None,
            ),
            Some(git_ref) => {
                let rules = db::rules::list(&mut *tx, &repo.id).await?;
                let specs: Vec<_> = rules.iter().map(|r| r.spec()).collect();
                let push = PushEvent {
                    git_ref,
                    commit: p.commit.clone(),
                    message: p.message.clone(),
                    date: chrono::Utc::now().date_naive(),
                };
                let plan = plan_builds(
                    &specs,
                    &push,
                    &PlanContext {
                        repository_hidden: repo.hidden,
                    },
                );
                let summary = format!(
                    "{} build(s) planned from {} rule(s)",
                    plan.builds.len(),
                    specs.len()
                );
                (summary, Some(&p.git_ref), Some(&p.commit), Some(plan))
            }
        },
    };
    let plan_json = plan
        .as_ref()
        .map_or_else(|| "[]".to_string(), |p| decisions_json(&p.outcomes));
    let Some(event_id) = db::events::insert_new(
        &mut tx,
        &db::events::NewEvent {
            repository_id: &repo.id,
            provider,
            delivery_id: delivery,
            kind: event,
            git_ref: git_ref.map(String::as_str),
            commit_sha: commit.map(String::as_str),
            outcome: &summary,
            plan: &plan_json,
            payload: body,
        },
    )
    .await?
    else {
        db::events::count_duplicate(&mut tx, provider, delivery, &repo.id).await?;
        tx.commit().await?;
        return Ok(None);
    };
    let mut ids = Vec::new();
    if let (Some(plan), Some(git_ref), Some(commit)) = (plan, git_ref, commit) {
        let image = app.image_name(&repo.namespace, &repo.name);
        for b in plan.builds {
            let id = db::builds::insert(
                &mut tx,
                &db::builds::NewBuild {
                    repository_id: &repo.id,
                    rule_id: Some(&b.rule_id),
                    event_id: Some(&event_id),
                    trigger: "push",
                    git_ref,
                    commit_sha: Some(commit),
                    tag: Some(&b.tag),
                    image: Some(&format!("{image}:{}", b.tag)),
                    dockerfile: &b.dockerfile,
                    context: &b.context,
                    version: &b.version,
                    overwrite: true,
                },
            )
            .await?;
            ids.push(id);
        }
    }
    tx.commit().await?;
    Ok(Some(ids))
}

/// What each rule decided, as the "why didn't it build?" view shows it: the outcome plus a sentence.
pub fn decisions_json(outcomes: &[RuleOutcome]) -> String {
    let decisions: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| {
            let skipped = o.skipped.as_ref().map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_else(|_| json!({}));
                v["message"] = json!(r.message());
                v
            });
            json!({"rule_id": o.rule_id, "matched": o.matched, "tag": o.tag, "skipped": skipped})
        })
        .collect();
    serde_json::Value::Array(decisions).to_string()
}
