//! Inbound git hooks: cap the body, route it to candidate sources by repository URL (a plain git
//! server's notification: to the one source its URL names), verify the signature against each
//! candidate's secret, parse, then hand the delivery to the ingest writer (`crate::ingest`) and answer
//! once the transaction that stores it (event and builds) is committed.

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::{ApiError, ApiResult};
use crate::app::App;
use crate::db::sources::SourceRow;
use crate::forge::{MalformedPayload, Outcome, Read, git, gitea, github, gitlab};
use crate::ingest::{Delivery, SubmitError};
use crate::rate_limit::{self, Peer, Surface};

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
    /// (event, body) → the URLs to route by and, for a push, what it means (one pass).
    read: fn(&str, &[u8]) -> Read,
    /// (event, body) → what a verified delivery [`Forge::read`] left unread means.
    parse: fn(&str, &[u8]) -> Result<Outcome, MalformedPayload>,
    /// Older GitLabs send no delivery id: such deliveries are told apart by the body's digest.
    delivery_optional: bool,
    /// Events that only say the hook exists; answered without verification when they name no
    /// repository (an organization hook's ping).
    ping_events: &'static [&'static str],
}

const GITHUB: Forge = Forge {
    provider: "github",
    signature_headers: &[github::SIGNATURE_HEADER],
    event_headers: &[github::EVENT_HEADER],
    delivery_headers: &[github::DELIVERY_HEADER],
    verify: github::verify_signature,
    read: github::read,
    parse: github::parse,
    delivery_optional: false,
    ping_events: &["ping"],
};

const GITEA: Forge = Forge {
    provider: "gitea",
    signature_headers: gitea::SIGNATURE_HEADERS,
    event_headers: gitea::EVENT_HEADERS,
    delivery_headers: gitea::DELIVERY_HEADERS,
    verify: gitea::verify_signature,
    // Gitea's payloads have GitHub's shape.
    read: github::read,
    parse: github::parse,
    delivery_optional: false,
    ping_events: &["ping"],
};

const GITLAB: Forge = Forge {
    provider: "gitlab",
    signature_headers: gitlab::TOKEN_HEADERS,
    event_headers: gitlab::EVENT_HEADERS,
    delivery_headers: gitlab::DELIVERY_HEADERS,
    verify: gitlab::verify_token,
    read: gitlab::read,
    parse: gitlab::parse,
    delivery_optional: true,
    ping_events: &[],
};

pub async fn receive_github(
    State(app): State<App>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive_from(&app, peer, &GITHUB, &headers, body).await
}

pub async fn receive_gitea(
    State(app): State<App>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive_from(&app, peer, &GITEA, &headers, body).await
}

pub async fn receive_gitlab(
    State(app): State<App>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive_from(&app, peer, &GITLAB, &headers, body).await
}

/// A delivery from `peer`: an unverified one (401) counts against the address's budget and is
/// answered 429 once it is spent; a verified one is never limited (`crate::rate_limit`).
async fn receive_from(
    app: &App,
    peer: Option<std::net::IpAddr>,
    forge: &Forge,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    receive(app, forge, headers, body)
        .await
        .map_err(|e| rate_limit::refuse(&app.rate_limits, Surface::Hooks, peer, e))
        .unwrap_or_else(IntoResponse::into_response)
}

/// Bodies up to this size are checked on the handler's thread (an HMAC of 64 KiB takes ~40 µs);
/// larger ones on the blocking pool, so a 25 MB body never holds up the async runtime.
const INLINE_WORK_LIMIT: usize = 64 * 1024;

/// Runs CPU work over a body: inline when small, on the blocking pool when large.
async fn cpu<T: Send + 'static>(
    body: &Bytes,
    work: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> ApiResult<T> {
    if body.len() <= INLINE_WORK_LIMIT {
        return Ok(work(body));
    }
    let body = body.clone();
    tokio::task::spawn_blocking(move || work(&body))
        .await
        .map_err(|e| ApiError::internal(format!("hook verification task failed: {e}")))
}

async fn receive(app: &App, forge: &Forge, headers: &HeaderMap, body: Body) -> ApiResult<Response> {
    let body = read_capped(headers, body, app.config.hook_body_limit).await?;
    let event = header(headers, forge.event_headers);
    // Routing reads only the repository URLs: nothing else of an unverified payload is trusted. A
    // push is read whole in the same pass, and what it means is used once it is verified.
    let read = forge.read;
    let kind = event.unwrap_or_default().to_string();
    let Read { urls, outcome } = cpu(&body, move |body| read(&kind, body)).await?;
    if urls.is_empty() {
        // Nothing to check a signature against. An organization hook's ping names no repository: it
        // only says the hook exists, so it is answered (and nothing is stored); anything else is refused
        // without trying every source's secret.
        if event.is_some_and(|e| forge.ping_events.contains(&e)) {
            tracing::info!(
                provider = forge.provider,
                "ping without a repository answered (not verified, not stored)"
            );
            return Ok((
                StatusCode::OK,
                axum::Json(json!({"ok": true, "verified": false})),
            )
                .into_response());
        }
        return Err(ApiError::unauthorized(
            "the payload names no repository, so no linked source can verify it",
        ));
    }
    let signature = header(headers, forge.signature_headers).ok_or_else(|| {
        ApiError::unauthorized(format!("missing {}", forge.signature_headers.join(" or ")))
    })?;
    let candidates = app
        .sources
        .candidates(&app.db, &app.secrets, forge.provider, &urls)
        .await?;
    if candidates.is_empty() {
        tracing::info!(provider = forge.provider, urls = ?urls, "hook refused: no source linked to its repository");
        return Err(refused());
    }
    let verify = forge.verify;
    let signature = signature.to_string();
    let verified: Vec<SourceRow> = cpu(&body, move |body| {
        candidates
            .into_iter()
            .filter(|s| verify(s.webhook_secret.as_bytes(), body, &signature))
            .collect()
    })
    .await?;
    if verified.is_empty() {
        tracing::info!(provider = forge.provider, urls = ?urls, "hook refused: no source with a matching signature");
        return Err(refused());
    }
    // Only now is the payload trusted enough to read.
    let event = event.ok_or_else(|| {
        ApiError::bad_request(
            "missing_header",
            format!("missing {}", forge.event_headers[0]),
        )
    })?;
    // Replays (the same signed body under a new delivery id) are told apart by the body's digest.
    let body_sha256 = cpu(&body, crate::forge::body_sha256_hex).await?;
    let delivery = delivery_id(
        header(headers, forge.delivery_headers),
        forge.delivery_optional,
        forge.delivery_headers[0],
        &body_sha256,
    )?;
    let outcome = match outcome {
        Some(outcome) => outcome,
        None => {
            let parse = forge.parse;
            let kind = event.to_string();
            cpu(&body, move |body| parse(&kind, body))
                .await?
                .map_err(|e| ApiError::bad_request("malformed_payload", e.0))?
        }
    };
    store(
        app,
        Verified {
            provider: forge.provider,
            delivery,
            event: event.to_string(),
            outcome,
            body,
            body_sha256,
            sources: verified,
        },
        StatusCode::OK,
    )
    .await
}

/// The delivery id a sender gave, or, where it may give none, one derived from the body's digest.
fn delivery_id(
    given: Option<&str>,
    optional: bool,
    header_name: &str,
    body_sha256: &str,
) -> ApiResult<String> {
    let delivery = match given {
        Some(d) => d.to_string(),
        None if optional => format!("sha256:{body_sha256}"),
        None => {
            return Err(ApiError::bad_request(
                "missing_header",
                format!("missing {header_name}"),
            ));
        }
    };
    if delivery.len() > 200 || delivery.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "bad_header",
            format!("the delivery id ({header_name}) is too long or holds control characters"),
        ));
    }
    Ok(delivery)
}

/// A delivery whose signature matched `sources`, parsed.
struct Verified {
    provider: &'static str,
    delivery: String,
    event: String,
    outcome: Outcome,
    body: Bytes,
    body_sha256: String,
    sources: Vec<SourceRow>,
}

/// Hands a verified delivery to the ingest writer and answers once it is stored. A deleted ref is
/// answered `deleted_status` (it queues no build).
async fn store(app: &App, v: Verified, deleted_status: StatusCode) -> ApiResult<Response> {
    let Verified {
        provider,
        delivery,
        event,
        outcome,
        body,
        body_sha256,
        sources: verified,
    } = v;
    let sources = verified.len();
    let stored = app
        .ingest
        .submit(Delivery {
            provider,
            delivery_id: delivery.clone(),
            event: event.clone(),
            outcome: outcome.clone(),
            body,
            body_sha256,
            sources: verified,
        })
        .await
        .map_err(|e| match e {
            SubmitError::Full | SubmitError::Closed => {
                tracing::warn!(provider, delivery, error = %e, "hook refused for now");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    format!("{e}; retry later"),
                )
                .retry_after(RETRY_AFTER_SECS)
            }
            SubmitError::StorageFull => ApiError::storage_full(&e),
            SubmitError::Failed(detail) => ApiError::internal(detail),
        })?;
    tracing::info!(
        provider,
        delivery,
        event,
        builds = stored.build_ids.len(),
        duplicates = stored.duplicates,
        "hook accepted"
    );
    let response = if stored.duplicates == sources {
        (
            StatusCode::OK,
            axum::Json(json!({"builds": [], "duplicate": true})),
        )
    } else {
        match outcome {
            Outcome::Ping => (StatusCode::OK, axum::Json(json!({"ok": true}))),
            Outcome::Push(p) if p.deleted => (deleted_status, axum::Json(json!({"builds": []}))),
            _ => (
                StatusCode::ACCEPTED,
                axum::Json(json!({"builds": stored.build_ids})),
            ),
        }
    };
    Ok(response.into_response())
}

/// `POST /hooks/git?source=NS/REPO`: a plain git server's push notification (`examples/post-receive`),
/// for the source of provider `git` of that repository. The body names no repository, so the URL
/// names the source and the signature is checked against that source's secret only. An unknown
/// source and a bad signature are both 401 (and count against the sender's address, like every
/// refused hook); a malformed notification is 400; a deleted ref is 202 with no build.
pub async fn receive_git(
    State(app): State<App>,
    Peer(peer): Peer,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    receive_plain_git(&app, query.as_deref(), &headers, body)
        .await
        .map_err(|e| rate_limit::refuse(&app.rate_limits, Surface::Hooks, peer, e))
        .unwrap_or_else(IntoResponse::into_response)
}

/// The `source` parameter of the query: 400 naming it when it is missing, repeated or empty.
fn source_param(query: Option<&str>) -> ApiResult<String> {
    let mut found = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == git::SOURCE_PARAM)
        .map(|(_, v)| v.into_owned());
    let bad = |message: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            message.to_string(),
        )
        .with_field(git::SOURCE_PARAM)
    };
    match (found.next(), found.next()) {
        (Some(v), None) if !v.trim().is_empty() && v.len() <= 200 => Ok(v),
        (Some(_), Some(_)) => Err(bad("give the source once: ?source=NAMESPACE/REPO")),
        (Some(_), None) => Err(bad(
            "source must name the repository: ?source=NAMESPACE/REPO",
        )),
        (None, _) => Err(bad(
            "missing source: the URL names the repository, ?source=NAMESPACE/REPO",
        )),
    }
}

async fn receive_plain_git(
    app: &App,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let body = read_capped(headers, body, app.config.hook_body_limit).await?;
    let name = source_param(query)?;
    let signature = header(headers, &[git::SIGNATURE_HEADER])
        .ok_or_else(|| ApiError::unauthorized(format!("missing {}", git::SIGNATURE_HEADER)))?
        .to_string();
    let Some(source) = app
        .sources
        .named(&app.db, &app.secrets, "git", &name)
        .await?
    else {
        tracing::info!(
            provider = "git",
            "hook refused: no plain git source by the URL's name"
        );
        return Err(refused());
    };
    let (source, valid) = cpu(&body, move |body| {
        let valid = git::verify_signature(source.webhook_secret.as_bytes(), body, &signature);
        (source, valid)
    })
    .await?;
    if !valid {
        tracing::info!(provider = "git", repository = %name, "hook refused: the signature does not match");
        return Err(refused());
    }
    // Only now is the notification trusted enough to read.
    let body_sha256 = cpu(&body, crate::forge::body_sha256_hex).await?;
    let delivery = delivery_id(
        header(headers, &[git::DELIVERY_HEADER]),
        true,
        git::DELIVERY_HEADER,
        &body_sha256,
    )?;
    let outcome = cpu(&body, git::parse)
        .await?
        .map_err(|e| ApiError::bad_request("malformed_payload", e.0))?;
    store(
        app,
        Verified {
            provider: "git",
            delivery,
            event: git::EVENT.to_string(),
            outcome,
            body,
            body_sha256,
            sources: vec![source],
        },
        StatusCode::ACCEPTED,
    )
    .await
}

/// Seconds a hook sender is asked to wait when the ingest queue is full.
const RETRY_AFTER_SECS: u64 = 1;

fn refused() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
        "the signature matches no repository linked to this payload's repository",
    )
}
