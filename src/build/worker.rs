//! One build from start to end: fetch the commit, resolve the tag, tar the context, build, push, record.

use std::path::PathBuf;

use bollard::auth::DockerCredentials;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use super::log::BuildLog;
use super::{context, docker, git};
use crate::app::App;
use crate::db::{self, builds::BuildRow, builds::BuildStatus};
use crate::domain::rules::{GitRef, PushEvent, RuleSpec, plan_rule};
use crate::forge::display_url;
use crate::notify::outbox;

enum Failure {
    Failed(String),
    Cancelled,
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Failed(s)
    }
}

/// What the fetch step found: the exact commit, and the tag it will carry.
struct Target {
    git_ref: String,
    commit: String,
    tag: String,
    context: context::BuildContext,
}

pub async fn run(app: &App, build: BuildRow, cancel: CancellationToken) {
    let mut log = BuildLog::open(app, &build.id).await;
    if let Err(e) = announce(app, &build.id, "build.started").await {
        tracing::error!(build_id = %build.id, error = %e, "cannot queue build.started");
    }
    let timeout = app.config.build_timeout;
    let outcome = tokio::select! {
        r = execute(app, &build, &mut log) => r,
        _ = cancel.cancelled() => Err(Failure::Cancelled),
        _ = tokio::time::sleep(timeout) => Err(Failure::Failed(format!("timed out after {} s", timeout.as_secs()))),
    };
    let recorded = match outcome {
        Ok(digest) => {
            log.line(&format!(
                "Pushed {} ({digest})",
                image_ref(app, &build, None)
            ))
            .await;
            record_success(app, &build.id, &digest).await
        }
        Err(Failure::Cancelled) => {
            log.line("Cancelled.").await;
            tracing::info!(build_id = %build.id, "build cancelled");
            Ok(())
        }
        Err(Failure::Failed(reason)) => {
            log.line(&format!("Build failed: {reason}")).await;
            tracing::info!(build_id = %build.id, %reason, "build failed");
            end_build(app, &build.id, BuildStatus::Failed, Some(&reason), None)
                .await
                .map(|_| ())
        }
    };
    if let Err(e) = recorded {
        tracing::error!(build_id = %build.id, error = %e, "cannot record the end of a build");
    }
}

async fn record_success(app: &App, build_id: &str, digest: &str) -> Result<(), sqlx::Error> {
    let Some(b) = db::builds::get(&app.db, build_id).await? else {
        return Ok(());
    };
    crate::versions::record(
        app,
        &db::versions::NewVersion {
            repository_id: &b.repository_id,
            tag: b.tag.as_deref().unwrap_or_default(),
            digest,
            source: "build",
            build_id: Some(build_id),
            commit_sha: b.commit_sha.as_deref(),
        },
    )
    .await?;
    if end_build(app, build_id, BuildStatus::Succeeded, None, Some(digest)).await? {
        tracing::info!(build_id, digest, "build succeeded");
    }
    // else: cancelled at the last moment; the image is pushed and recorded, the build says cancelled.
    Ok(())
}

/// Queues a build event for the repository's subscribers.
async fn announce(app: &App, build_id: &str, event: &'static str) -> Result<(), sqlx::Error> {
    let mut tx = crate::db::write_tx(&app.db).await?;
    let queued = match db::builds::get(&mut *tx, build_id).await? {
        Some(b) => outbox::enqueue(
            &mut tx,
            &app.config.public_url,
            &b.repository_id,
            &outbox::build_event(event, &b),
        )
        .await?
        .len(),
        None => 0,
    };
    tx.commit().await?;
    if queued > 0 {
        app.notifier.wake();
    }
    Ok(())
}

/// Ends a running build and queues `build.succeeded` / `build.failed`, in one transaction. False when
/// the build was no longer running (cancelled meanwhile).
async fn end_build(
    app: &App,
    build_id: &str,
    status: BuildStatus,
    error: Option<&str>,
    digest: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let mut tx = crate::db::write_tx(&app.db).await?;
    if !db::builds::finish(&mut *tx, build_id, status, error, digest).await? {
        return Ok(false);
    }
    let event = if status == BuildStatus::Succeeded {
        "build.succeeded"
    } else {
        "build.failed"
    };
    let mut queued = 0;
    if let Some(b) = db::builds::get(&mut *tx, build_id).await? {
        queued = outbox::enqueue(
            &mut tx,
            &app.config.public_url,
            &b.repository_id,
            &outbox::build_event(event, &b),
        )
        .await?
        .len();
    }
    tx.commit().await?;
    if queued > 0 {
        app.notifier.wake();
    }
    Ok(true)
}

fn image_ref(app: &App, build: &BuildRow, tag: Option<&str>) -> String {
    let image = app.image_name(&build.namespace, &build.repository);
    match tag.or(build.tag.as_deref()) {
        Some(t) => format!("{image}:{t}"),
        None => image,
    }
}

async fn execute(app: &App, build: &BuildRow, log: &mut BuildLog) -> Result<String, Failure> {
    let db_err = |e: sqlx::Error| Failure::Failed(format!("database error: {e}"));
    let source = db::sources::for_repo(&app.db, &build.repository_id)
        .await
        .map_err(db_err)?
        .ok_or_else(|| "the repository has no git source".to_string())?;
    // Builds planned from a push carry their tag; "build now" resolves commit and tag here, from the rule.
    let rule = match (&build.tag, &build.rule_id) {
        (Some(_), _) => None,
        (None, Some(rule_id)) => {
            let row = db::rules::get(&app.db, &build.repository_id, rule_id)
                .await
                .map_err(db_err)?
                .ok_or_else(|| format!("rule {rule_id} was deleted before the build started"))?;
            Some(row.spec())
        }
        (None, None) => {
            return Err(Failure::Failed(
                "the build has neither a tag nor a rule".into(),
            ));
        }
    };

    log.line(&format!("Fetching {}", display_url(&source.clone_url)))
        .await;
    let mirror = git::mirror_path(&app.config.mirrors_dir(), &source.clone_url);
    let lock = app.builds.mirror_lock(&mirror);
    let guard = lock.lock().await;
    let target = {
        let build = build.clone();
        let mirror: PathBuf = mirror.clone();
        let local_sources = app.config.local_sources.clone();
        tokio::task::spawn_blocking(move || {
            // Checked again now (KILN_LOCAL_SOURCES, the scheme): nothing is fetched from a source
            // the API would refuse today.
            let remote = git::Remote::resolve(
                &source.clone_url,
                source.credentials.as_deref(),
                &local_sources,
            )
            .map_err(|e| e.to_string())?;
            resolve_target(&mirror, &remote, &build, rule.as_ref())
        })
        .await
        .map_err(|e| format!("the fetch task failed: {e}"))??
    };
    drop(guard);

    let image = app.image_name(&build.namespace, &build.repository);
    let full_ref = format!("{image}:{}", target.tag);
    db::builds::set_target(
        &app.db,
        &build.id,
        &target.git_ref,
        &target.commit,
        &target.tag,
        &full_ref,
    )
    .await
    .map_err(db_err)?;
    log.line(&format!(
        "Building {full_ref} from {} at {} with {}",
        target.git_ref,
        &target.commit[..7.min(target.commit.len())],
        target.context.dockerfile
    ))
    .await;
    log.line(&format!(
        "Build context: {} files, {} bytes",
        target.context.files, target.context.bytes
    ))
    .await;

    let docker = app.docker.client().await.map_err(|e| format!("{e:#}"))?;
    docker::build_image(
        &docker,
        target.context.tar,
        &target.context.dockerfile,
        &full_ref,
        log,
    )
    .await?;
    log.line(&format!("Pushing {full_ref}")).await;
    let credentials = DockerCredentials {
        username: app.config.registry_username.clone(),
        password: app
            .config
            .registry_password
            .as_ref()
            .map(|p| p.expose_secret().to_string()),
        serveraddress: Some(app.config.registry.clone()),
        ..Default::default()
    };
    let digest = docker::push_image(&docker, &image, &target.tag, credentials, log)
        .await
        .map_err(|e| format!("push refused: {e}"))?;
    Ok(digest)
}

/// Blocking: fetch the mirror, find the exact commit, decide the tag, tar the context.
fn resolve_target(
    mirror: &std::path::Path,
    remote: &git::Remote,
    build: &BuildRow,
    rule: Option<&RuleSpec>,
) -> Result<Target, String> {
    let repo = git::fetch_mirror(mirror, remote).map_err(|e| e.to_string())?;
    let (git_ref, oid): (String, git2::Oid) = match (&build.commit_sha, build.git_ref.as_str()) {
        (Some(sha), r) => (
            r.to_string(),
            git::find_commit(&repo, sha).map_err(|e| e.to_string())?,
        ),
        (None, r) if r.starts_with("refs/heads/") => {
            let branch = &r["refs/heads/".len()..];
            (
                r.to_string(),
                git::branch_head(&repo, branch).map_err(|e| e.to_string())?,
            )
        }
        (None, r) if r.starts_with("refs/tags/") => {
            let oid = repo
                .revparse_single(r)
                .and_then(|o| o.peel_to_commit())
                .map_err(|_| format!("tag '{}' not found", &r["refs/tags/".len()..]))?
                .id();
            (r.to_string(), oid)
        }
        (None, _) => {
            let rule = rule.ok_or("the build names no ref")?;
            let pattern =
                crate::domain::pattern::RefPattern::parse(&rule.name).map_err(|e| e.to_string())?;
            let (name, oid) =
                git::newest_tag(&repo, |t| pattern.matches(t).is_some()).map_err(|e| match e {
                    git::GitError::NoMatchingTag(_) => format!("no tag matches '{}'", rule.name),
                    other => other.to_string(),
                })?;
            (format!("refs/tags/{name}"), oid)
        }
    };
    let commit = oid.to_string();
    let tag = match (&build.tag, rule) {
        (Some(tag), _) => tag.clone(),
        (None, Some(rule)) => {
            let git_ref_parsed = GitRef::parse(&git_ref)
                .ok_or_else(|| format!("'{git_ref}' is not a branch or tag"))?;
            let event = PushEvent {
                git_ref: git_ref_parsed,
                commit: commit.clone(),
                message: None,
                date: chrono::Utc::now().date_naive(),
            };
            plan_rule(rule, &event)
                .map_err(|reason| {
                    format!("the rule does not build {git_ref}: {}", reason.message())
                })?
                .tag
        }
        (None, None) => return Err("the build has neither a tag nor a rule".into()),
    };
    let ctx = context::build_context(&repo, oid, &build.context, &build.dockerfile)
        .map_err(|e| e.to_string())?;
    Ok(Target {
        git_ref,
        commit,
        tag,
        context: ctx,
    })
}
