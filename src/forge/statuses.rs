//! The commit status task (issue 12): sets the statuses queued in `commit_statuses` on the git
//! host, in order per (provider, repository, sha, context), retrying transient failures with
//! backoff (like `crate::notify::deliver`). A 4xx fails the status at once, recorded. Nothing
//! here ever delays or fails a build: the build only wrote a row.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::client::{CommitStatus, HostError, StatusState};
use super::hosts;
use crate::app::App;
use crate::db::{self, commit_statuses::Attempt, commit_statuses::CommitStatusRow};

/// Attempts before a status that keeps failing transiently is given up.
pub const MAX_ATTEMPTS: i64 = 8;
/// The delay after the first failed attempt; tripled after each one (see `notify::deliver::backoff`).
const BASE_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// How long one call to the host may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the task looks for due statuses when it has nothing to do.
const IDLE_POLL: Duration = Duration::from_millis(500);

pub fn start(app: &App, stop: CancellationToken) {
    let app = app.clone();
    tokio::spawn(async move {
        loop {
            let due = match db::commit_statuses::due(&app.db, 32).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read due commit statuses");
                    Vec::new()
                }
            };
            let idle = due.is_empty();
            for row in due {
                tokio::select! {
                    _ = deliver(&app, row) => {}
                    _ = stop.cancelled() => return,
                }
            }
            if idle {
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    });
}

/// `{KILN_PUBLIC_URL}/builds/{id}`: the console's page of the build.
pub fn target_url(public_url: &str, build_id: &str) -> String {
    format!("{public_url}/builds/{build_id}")
}

async fn deliver(app: &App, row: CommitStatusRow) {
    let target_url = target_url(&app.config.public_url, &row.build_id);
    let outcome = set(app, &row, &target_url).await;
    let attempts = row.attempts + 1;
    let now = chrono::Utc::now();
    let (status, response_status, error, next) = match &outcome {
        Ok(()) => ("succeeded", None, None, now),
        Err((e, transient)) if *transient && attempts < MAX_ATTEMPTS => {
            let wait = e
                .retry_after
                .unwrap_or_else(|| crate::notify::deliver::backoff(BASE_BACKOFF, attempts as u32))
                .min(MAX_BACKOFF);
            (
                "pending",
                e.status,
                Some(e.message.as_str()),
                now + chrono::Duration::from_std(wait).unwrap_or_default(),
            )
        }
        Err((e, _)) => ("failed", e.status, Some(e.message.as_str()), now),
    };
    if let Err((e, _)) = &outcome {
        tracing::warn!(
            build_id = %row.build_id,
            provider = %row.provider,
            host_repository = %row.repository,
            state = %row.state,
            status = ?e.status,
            rate_limited = e.rate_limited,
            error = %e.message,
            attempts,
            "cannot set the commit status"
        );
    }
    let recorded = db::commit_statuses::record_attempt(
        &app.db,
        &row.id,
        &Attempt {
            status,
            target_url: &target_url,
            response_status,
            error,
            next_attempt_at: &db::format_time(next),
        },
    )
    .await;
    if let Err(e) = recorded {
        tracing::error!(error = %e, status_id = %row.id, "cannot record a commit status attempt");
    }
}

/// A failed attempt: what went wrong, and whether trying again may help.
type Failure = (HostError, bool);

fn transient(e: HostError) -> Failure {
    let t = e.is_transient();
    (e, t)
}

/// A failure no retry fixes.
fn permanent(message: impl Into<String>) -> Failure {
    (HostError::unreachable(message), false)
}

async fn set(app: &App, row: &CommitStatusRow, target_url: &str) -> Result<(), Failure> {
    let state: StatusState = serde_json::from_value(serde_json::Value::String(row.state.clone()))
        .map_err(|_| permanent(format!("unknown state {}", row.state)))?;
    let integration =
        db::integrations::get(&app.db, &app.secrets, &row.namespace_id, &row.provider)
            .await
            .map_err(|e| {
                transient(HostError::unreachable(format!(
                    "cannot read the integration: {e}"
                )))
            })?
            .ok_or_else(|| permanent("the namespace's integration was removed"))?;
    let client = hosts::client(&app.config, &integration)
        .await
        .map_err(transient)?;
    let status = CommitStatus {
        state,
        context: row.context.clone(),
        description: row.description.clone(),
        target_url: target_url.to_string(),
    };
    let result = match tokio::time::timeout(
        CALL_TIMEOUT,
        client.set_status(&row.repository, &row.sha, &status),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(HostError::unreachable("the host did not answer in time")),
    };
    if let Err(e) = &result
        && matches!(e.status, Some(401 | 403))
        && !e.rate_limited
    {
        let _ = db::integrations::record_check(&app.db, &integration.id, Some(&e.message)).await;
    }
    result.map_err(transient)
}
