//! One build from start to end: fetch the commit, resolve the tag, tar the context, build, push, record.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::auth::DockerCredentials;

use super::log::BuildLog;
use super::path_filter::{self, PathDecision};
use super::queue::{MAX_ATTEMPTS, Stop, StopSignal};
use super::{context, docker, git, layer_cache, settings};
use crate::app::App;
use crate::db::{self, builds::BuildRow, builds::BuildStatus, builds::Stage};
use crate::domain::build_settings::{self, BuildFacts};
use crate::domain::builder::Builder;
use crate::domain::rules::{GitRef, PushEvent, RuleSpec, plan_rule};
use crate::forge::display_url;
use crate::notify::outbox;

enum Failure {
    Failed(String),
    /// Stopped from outside (cancel, shutdown) before it pushed.
    Stopped(Stop),
    /// Built, but a build queued after it owns the tag now: pushing would move the tag back to an older
    /// commit, so nothing was pushed.
    Superseded {
        by: String,
        tag: String,
    },
    /// Not built: the rule's path filter matched none of the files the push changed.
    Skipped(String),
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
    /// The build named this annotated tag object, peeled to `commit`.
    peeled_from: Option<String>,
    tag: String,
    context: context::ContextPlan,
    /// The files changed between the build's `before` and `commit`, when its path filter asked
    /// for them (see [`path_filter::decide`]).
    changed: Option<Result<Option<Vec<String>>, String>>,
}

/// Runs a claimed build to its end. A stop (cancel, shutdown) or the timeout drops the build where it
/// is: the Docker daemon, seeing the request closed, kills the step's container (then kiln removes the
/// build's containers for certain) or aborts the push. A stop that came too late to keep the push from
/// landing in the registry leaves a succeeded build: a build never says cancelled with its tag moved.
pub async fn run(app: &App, build: BuildRow, stop: StopSignal) {
    let mut log = BuildLog::open(app, &build.id).await;
    if let Some(queued) = queued_for(&build) {
        stage_done(
            app,
            &build.id,
            &mut log,
            Stage::Queued,
            queued,
            "Waited in the queue for",
        )
        .await;
    }
    // The rule's timeout_minutes when the build was queued, else the server's default.
    let timeout = build_settings::effective_timeout(&build.settings(), app.config.build_timeout);
    let push = PushWatch::default();
    let (mut outcome, dropped) = tokio::select! {
        r = execute(app, &build, &mut log, &push) => (r, false),
        why = stop.stopped() => (Err(Failure::Stopped(why)), true),
        _ = tokio::time::sleep(timeout) => (Err(Failure::Failed(build_settings::timeout_message(timeout))), true),
    };
    if dropped && let Some(pushed) = after_drop(app, &build, &push, &mut log).await {
        log.line("The push had reached the registry before the build could be stopped: the build succeeded.")
            .await;
        outcome = Ok(pushed);
    }
    let recorded = match outcome {
        Ok(Pushed {
            reference,
            digest,
            extra_tags,
        }) => {
            log.line(&format!("Pushed {reference} ({digest})")).await;
            record_success(app, &build.id, &digest, &extra_tags).await
        }
        Err(Failure::Stopped(Stop::Cancel)) => {
            log.line("Cancelled.").await;
            tracing::info!(build_id = %build.id, "build cancelled");
            end_build(
                app,
                &build.id,
                BuildStatus::Cancelled,
                Some("cancelled by user"),
                None,
            )
            .await
            .map(|_| ())
        }
        Err(Failure::Stopped(Stop::Shutdown)) => requeue(app, &build, &mut log).await,
        Err(Failure::Superseded { by, tag }) => {
            log.line(&format!(
                "Not pushed: build {by} was queued after this one for :{tag} and owns the tag now."
            ))
            .await;
            tracing::info!(build_id = %build.id, newer = %by, "build superseded before its push");
            end_build(
                app,
                &build.id,
                BuildStatus::Cancelled,
                Some(&format!("superseded by {by}")),
                None,
            )
            .await
            .map(|_| ())
        }
        Err(Failure::Skipped(reason)) => {
            log.line(&format!("Not built: {reason}")).await;
            tracing::info!(build_id = %build.id, %reason, "build skipped by its path filter");
            end_build(app, &build.id, BuildStatus::Skipped, Some(&reason), None)
                .await
                .map(|_| ())
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

/// kiln is stopping and the grace period is over: the build goes back to the queue as its next attempt
/// (or fails, after [`MAX_ATTEMPTS`]).
async fn requeue(app: &App, build: &BuildRow, log: &mut BuildLog) -> Result<(), sqlx::Error> {
    let line = if build.attempt >= MAX_ATTEMPTS {
        format!(
            "Failed: kiln stopped during each of this build's {} attempts.",
            build.attempt
        )
    } else {
        format!(
            "Attempt {}: kiln was stopped while this build was running (its grace period ran out); it runs again.",
            build.attempt + 1
        )
    };
    log.line(&line).await;
    for b in super::queue::requeue_interrupted(app, Some(&build.id)).await? {
        tracing::info!(build_id = %b.id, attempt = b.attempt, requeued = b.requeued, "build stopped by the shutdown");
    }
    Ok(())
}

/// Where a build's push stands, for a stop that comes while it runs.
#[derive(Default)]
struct PushWatch(std::sync::Mutex<Option<PushStart>>);

struct PushStart {
    /// `{namespace}/{repo}` in the registry.
    repository: String,
    tag: String,
    image: String,
    /// What the tag named before the push (None: no such tag); Err: the registry could not say.
    before: Result<Option<String>, ()>,
}

/// After the build was dropped (stopped, timed out): removes its step containers and, when it was
/// pushing, tells whether the push landed anyway (the tag moved).
async fn after_drop(
    app: &App,
    build: &BuildRow,
    push: &PushWatch,
    log: &mut BuildLog,
) -> Option<Pushed> {
    remove_step_containers(app, build, log).await;
    let start = push.0.lock().expect("push watch poisoned").take()?;
    let Ok(before) = start.before else {
        tracing::warn!(build_id = %build.id, "stopped during the push; the registry could not say where the tag was before");
        return None;
    };
    // The daemon may still be finishing a manifest upload the stop cut: watch the tag for a moment.
    for _ in 0..6 {
        if let Ok(Some(now)) = app
            .registry
            .manifest_digest(&start.repository, &start.tag)
            .await
            && Some(&now) != before.as_ref()
        {
            return Some(Pushed {
                reference: format!("{}:{}", start.image, start.tag),
                digest: now,
                // Stopped before the extra tags were pushed: only the tag that landed is recorded.
                extra_tags: Vec::new(),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    None
}

/// Force-removes the containers the build's steps ran in (named in its log by the daemon).
async fn remove_step_containers(app: &App, build: &BuildRow, log: &mut BuildLog) {
    let lines = match db::builds::log_lines(&app.db, &build.id, -1).await {
        Ok(lines) => lines,
        Err(e) => {
            tracing::warn!(build_id = %build.id, error = %e, "cannot read the log for the build's containers");
            return;
        }
    };
    let ids: Vec<&str> = lines
        .iter()
        .filter_map(|(_, l)| docker::step_container(l))
        .collect();
    if ids.is_empty() {
        return;
    }
    let Ok(docker) = app.docker.client().await else {
        return;
    };
    let removed = docker::remove_containers(&docker, &ids).await;
    if !removed.is_empty() {
        log.line(&format!(
            "Removed the build's container {}",
            removed.join(", ")
        ))
        .await;
    }
}

async fn record_success(
    app: &App,
    build_id: &str,
    digest: &str,
    extra_tags: &[String],
) -> Result<(), sqlx::Error> {
    let Some(b) = db::builds::get(&app.db, build_id).await? else {
        return Ok(());
    };
    // The tag, then each extra tag (same digest), while the build still runs: the registry's
    // notifications of these pushes are the build's own.
    for tag in std::iter::once(b.tag.as_deref().unwrap_or_default())
        .chain(extra_tags.iter().map(String::as_str))
    {
        crate::versions::record(
            app,
            &db::versions::NewVersion {
                repository_id: &b.repository_id,
                tag,
                digest,
                source: "build",
                build_id: Some(build_id),
                commit_sha: b.commit_sha.as_deref(),
            },
        )
        .await?;
    }
    // Only this worker ends a running build (a cancel asks it to), so this finds it `building`.
    if end_build(app, build_id, BuildStatus::Succeeded, None, Some(digest)).await? {
        tracing::info!(build_id, digest, "build succeeded");
    }
    Ok(())
}

/// `build.started` for the repository's subscribers (a failure to queue it is logged: the build goes on).
async fn announce_started(app: &App, build: &BuildRow) {
    if let Err(e) = announce(app, &build.id, "build.started").await {
        tracing::error!(build_id = %build.id, error = %e, "cannot queue build.started");
    }
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
/// the build was no longer running.
async fn end_build(
    app: &App,
    build_id: &str,
    status: BuildStatus,
    error: Option<&str>,
    digest: Option<&str>,
) -> Result<bool, sqlx::Error> {
    // A failure's reason can quote what a build printed or a server answered: masked like the log.
    let error = error.map(crate::secrets::mask::mask);
    // A full disk refuses the record: the build stays `building` (a restart queues it again) while
    // this tries again, until space returns or the patience runs out.
    let started = Instant::now();
    loop {
        match try_end_build(app, build_id, status, error.as_deref(), digest).await {
            Err(e)
                if db::is_storage_full(&e) && started.elapsed() < END_RECORD_PATIENCE_WHEN_FULL =>
            {
                tracing::warn!(build_id, error = %e, "the disk is full: cannot record the end of the build yet; trying again");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            other => return other,
        }
    }
}

/// How long [`end_build`] tries again to record a build's end while the disk is full.
const END_RECORD_PATIENCE_WHEN_FULL: Duration = Duration::from_secs(600);

/// Why a build fails when the disk holding kiln's data is full.
const STORAGE_FULL_REASON: &str =
    "the disk holding kiln's data is full: the build log cannot be stored";

async fn try_end_build(
    app: &App,
    build_id: &str,
    status: BuildStatus,
    error: Option<&str>,
    digest: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let mut tx = crate::db::write_tx(&app.db).await?;
    if !db::builds::finish(&mut tx, build_id, status, error, digest).await? {
        return Ok(false);
    }
    let event = match status {
        BuildStatus::Succeeded => Some("build.succeeded"),
        BuildStatus::Failed => Some("build.failed"),
        // Cancelled (superseded) builds announce nothing, like builds a user cancels.
        _ => None,
    };
    let mut queued = 0;
    if let Some(event) = event
        && let Some(b) = db::builds::get(&mut *tx, build_id).await?
    {
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

/// How long the build waited between being queued and claimed (its `created_at` and `started_at`).
fn queued_for(build: &BuildRow) -> Option<Duration> {
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    let created = parse(&build.created_at)?;
    let started = parse(build.started_at.as_deref()?)?;
    (started - created).to_std().ok()
}

/// Records a stage's time and says it in the log (`Fetched in 1.2 s`).
async fn stage_done(
    app: &App,
    build_id: &str,
    log: &mut BuildLog,
    stage: Stage,
    took: Duration,
    what: &str,
) {
    record_stage(app, build_id, stage, took).await;
    log.line(&format!("{what} {:.1} s", took.as_secs_f64()))
        .await;
}

/// Records a stage's time (its log line is written where the stage ends).
async fn record_stage(app: &App, build_id: &str, stage: Stage, took: Duration) {
    let ms = i64::try_from(took.as_millis()).unwrap_or(i64::MAX);
    if let Err(e) = db::builds::record_stage(&app.db, build_id, stage, ms).await {
        tracing::warn!(build_id, error = %e, "cannot record a stage's time");
    }
}

/// What a successful build pushed: `{registry}/{namespace}/{repo}:{tag}` and its manifest digest,
/// and the extra tags pushed with the same digest.
struct Pushed {
    reference: String,
    digest: String,
    extra_tags: Vec<String>,
}

/// What keeps a build from running now: the Docker daemon or the registry not answering (None: both
/// answer). Each is asked once, with a short timeout.
pub(crate) async fn services_down(app: &App) -> Option<String> {
    const ASK: Duration = Duration::from_secs(5);
    let docker = tokio::time::timeout(ASK, app.docker.ping());
    let registry = tokio::time::timeout(ASK, app.registry.ping());
    let (docker, registry) = tokio::join!(docker, registry);
    let docker = match docker {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("the Docker daemon is down ({e:#})")),
        Err(_) => Some(format!(
            "the Docker daemon is down (no answer within {} s)",
            ASK.as_secs()
        )),
    };
    let registry = match registry {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("the registry is down ({e:#})")),
        Err(_) => Some(format!(
            "the registry is down (no answer within {} s)",
            ASK.as_secs()
        )),
    };
    match (docker, registry) {
        (None, None) => None,
        (Some(d), None) => Some(d),
        (None, Some(r)) => Some(r),
        (Some(d), Some(r)) => Some(format!("{d} and {r}")),
    }
}

/// Waits for the Docker daemon and the registry to answer, up to `KILN_BUILD_WAIT_WHEN_DOWN_SECS`
/// (zero: not at all); the build fails with the reason when they do not come back in time. The wait
/// is in the log, and a cancel or the build's timeout ends it like any other step.
async fn wait_for_services(app: &App, build_id: &str, log: &mut BuildLog) -> Result<(), Failure> {
    let patience = app.config.build_wait_when_down;
    let started = Instant::now();
    let mut said: Option<String> = None;
    loop {
        let Some(down) = services_down(app).await else {
            if said.is_some() {
                log.line(&format!(
                    "They answer again after {:.1} s: the build goes on.",
                    started.elapsed().as_secs_f64()
                ))
                .await;
                tracing::info!(build_id, "the services a build waited for answer again");
            }
            return Ok(());
        };
        let waited = started.elapsed();
        if waited >= patience {
            return Err(Failure::Failed(if patience.is_zero() {
                down
            } else {
                format!(
                    "{down}; waited {} s for it (KILN_BUILD_WAIT_WHEN_DOWN_SECS)",
                    waited.as_secs()
                )
            }));
        }
        if said.as_deref() != Some(down.as_str()) {
            log.line(&format!(
                "Waiting: {down}. The build goes on when it answers (waiting up to {} s).",
                patience.as_secs()
            ))
            .await;
            tracing::warn!(build_id, reason = %down, "build waiting for a service that is down");
            said = Some(down);
        }
        tokio::time::sleep(Duration::from_secs(1).min(patience - waited)).await;
    }
}

async fn execute(
    app: &App,
    build: &BuildRow,
    log: &mut BuildLog,
    push: &PushWatch,
) -> Result<Pushed, Failure> {
    let db_err = |e: sqlx::Error| Failure::Failed(format!("database error: {e}"));
    // Builds planned from a push carry their tag; "build now" resolves commit and tag here, from the
    // rule. A pushed build naming an annotated tag's object has its tag worked out again, from the
    // commit, so the rule is read for it too.
    let rule_row = match &build.rule_id {
        Some(rule_id) => db::rules::get(&app.db, &build.repository_id, rule_id)
            .await
            .map_err(db_err)?,
        None => None,
    };
    // Path filters (issue 9): decided on the build's own fetch, before anything is announced; a
    // skipped build announces nothing.
    let filter = rule_row
        .as_ref()
        .map(|r| r.path_filter())
        .unwrap_or_default();
    let diff_from = path_filter::diff_from(build, &filter);
    if diff_from.is_none() {
        announce_started(app, build).await;
    }
    wait_for_services(app, &build.id, log).await?;
    let source = db::sources::for_repo(&app.db, &app.secrets, &build.repository_id)
        .await
        .map_err(db_err)?
        .ok_or_else(|| "the repository has no git source".to_string())?;
    let rule = rule_row.map(|row| row.spec());
    match (&build.tag, &build.rule_id, &rule) {
        (None, Some(rule_id), None) => {
            return Err(Failure::Failed(format!(
                "rule {rule_id} was deleted before the build started"
            )));
        }
        (None, None, _) => {
            return Err(Failure::Failed(
                "the build has neither a tag nor a rule".into(),
            ));
        }
        _ => {}
    }

    // The clone URL without credentials: the image's `org.opencontainers.image.source` label.
    let source_url = display_url(&source.clone_url);
    let rule_name = rule.as_ref().map(|r| r.name.clone());
    log.line(&format!("Fetching {source_url}")).await;
    let fetch_started = Instant::now();
    let mirror = git::mirror_path(&app.config.mirrors_dir(), &source.clone_url);
    // Owned, and moved into the blocking fetch: a build stopped meanwhile keeps the mirror locked until
    // its fetch has really ended.
    let guard = app.builds.mirror_lock(&mirror).lock_owned().await;
    // A source linked through its namespace's integration fetches with the integration's
    // credentials (issue 12), given to git like the source's own: never in a URL.
    let integration_credentials = match &source.credentials {
        Some(_) => None,
        None => integration_credentials(app, build, &source, log).await,
    };
    let fetched = {
        let build = build.clone();
        let mirror: PathBuf = mirror.clone();
        let local_sources = app.config.local_sources.clone();
        let git_allow = app.config.git_allow.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            // Checked again now (KILN_LOCAL_SOURCES, the scheme): nothing is fetched from a source
            // the API would refuse today.
            let remote = git::Remote::resolve(
                &source.clone_url,
                source
                    .credentials
                    .as_deref()
                    .or(integration_credentials.as_deref()),
                &local_sources,
                &git_allow,
            )
            .map_err(|e| e.to_string())?;
            resolve_target(
                &mirror,
                &remote,
                &build,
                rule.as_ref(),
                diff_from.as_deref(),
            )
        })
        .await
        .map_err(|e| format!("the fetch task failed: {e}"))
        .and_then(|fetched| fetched)
    };
    // A stage that failed took its time too: recorded, its reason ends the log.
    if fetched.is_err() {
        record_stage(app, &build.id, Stage::Fetch, fetch_started.elapsed()).await;
    }
    let mut target = fetched?;
    stage_done(
        app,
        &build.id,
        log,
        Stage::Fetch,
        fetch_started.elapsed(),
        "Fetched in",
    )
    .await;
    if let Some(changed) = target.changed.take() {
        match path_filter::decide(build, &filter, changed) {
            PathDecision::Skip(reason) => return Err(Failure::Skipped(reason)),
            PathDecision::Build(line) => log.line(&line).await,
        }
        announce_started(app, build).await;
    }
    if let Some(tag_object) = &target.peeled_from {
        log.line(&format!(
            "{} is an annotated tag object: building the commit it tags, {}",
            &tag_object[..7.min(tag_object.len())],
            &target.commit[..7]
        ))
        .await;
    }

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
    // Build settings (issue 9): the copy taken when the build was queued.
    let settings = build.settings();
    let facts = BuildFacts {
        commit: &target.commit,
        git_ref: &target.git_ref,
        tag: &target.tag,
        source: &source_url,
        created: chrono::Utc::now(),
    };
    let extra_tags = settings::extra_tags(
        &settings,
        rule_name.as_deref(),
        &target.git_ref,
        &target.commit,
        &target.tag,
        queued_date(build),
        log,
    )
    .await;
    db::builds::set_extra_tags(&app.db, &build.id, &extra_tags)
        .await
        .map_err(db_err)?;
    log.line(&settings::summary(&settings, &extra_tags)).await;
    for warning in build_settings::secret_warnings(&settings.build_args) {
        log.line(&format!("Warning: {warning}")).await;
    }

    let docker = app.docker.client().await.map_err(|e| format!("{e:#}"))?;
    let cache_from = if settings.no_cache {
        Vec::new()
    } else {
        layer_cache::pull_previous_image(app, &docker, build, registry_credentials(app, build), log)
            .await
    };
    let mut context = target.context;
    let (builder, builder_line) = app.config.builder.for_build(
        &app.config.build_limits,
        context.needs_daemon_dockerignore(),
    );
    log.line(&builder_line).await;
    // The OCI labels and the one the local cache cap finds kiln's images by. BuildKit takes them
    // as the `labels` option, at no cost; the classic builder would turn that option into one step
    // per label, so for it they are one LABEL step in kiln's copy of the Dockerfile
    // (domain::dockerfile_labels), or the option when the end of the stage is not certain.
    let mut labels: std::collections::BTreeMap<String, String> =
        build_settings::oci_labels(&facts).into_iter().collect();
    labels.insert(
        docker::REPOSITORY_LABEL.to_string(),
        docker::image_repository(&full_ref).to_string(),
    );
    let pairs: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let in_dockerfile = builder == Builder::Classic && context.label(&settings.target, &pairs);
    let base_images = context.base_images();
    let base_credentials = docker::build_credentials(
        &app.config,
        &app.registry_tokens,
        &build.namespace,
        &base_images,
    );
    if builder == Builder::BuildKit {
        docker::pull_missing_base_images(
            &docker,
            &app.config.registry,
            &base_images,
            &base_credentials,
            log,
        )
        .await
        .map_err(Failure::Failed)?;
    }
    let options = docker::BuildOptions {
        image_ref: full_ref.clone(),
        build_args: build_settings::build_args_for(&settings, &facts),
        labels: if in_dockerfile {
            Default::default()
        } else {
            labels.into_iter().collect()
        },
        target: settings.target.clone(),
        no_cache: settings.no_cache,
        cache_from,
        registry_credentials: base_credentials,
        limits: app.config.build_limits,
        network_mode: app.config.build_limits.network_mode(settings.network),
        builder,
    };
    if let Some(line) = app.config.build_limits.summary(settings.network) {
        log.line(&line).await;
    }
    let build_started = Instant::now();
    let built = match docker::build_image(&docker, &context, &options, log).await {
        Ok(built) => built,
        Err(failure) => {
            // The stages it reached took their time too (a build that failed in a step shows
            // how long its context and its steps took).
            match failure.context_sent {
                Some(sent) => {
                    let context_took = sent.saturating_duration_since(build_started);
                    record_stage(app, &build.id, Stage::Context, context_took).await;
                    record_stage(app, &build.id, Stage::Build, sent.elapsed()).await;
                }
                None => {
                    record_stage(app, &build.id, Stage::Context, build_started.elapsed()).await;
                }
            }
            return Err(Failure::Failed(failure.reason));
        }
    };
    let context_took = built.context_sent.saturating_duration_since(build_started);
    // docker::build_image said it in the log when the tar was sent.
    record_stage(app, &build.id, Stage::Context, context_took).await;
    stage_done(
        app,
        &build.id,
        log,
        Stage::Build,
        built.context_sent.elapsed(),
        "Built in",
    )
    .await;
    // Only the newest build of a tag may move it (domain::tag_owner): checked as late as possible.
    if let Some(by) =
        db::builds::newer_owner_of_tag(&app.db, &build.id, &build.repository_id, &target.tag)
            .await
            .map_err(db_err)?
    {
        return Err(Failure::Superseded {
            by,
            tag: target.tag,
        });
    }
    if log.storage_full() {
        return Err(Failure::Failed(STORAGE_FULL_REASON.into()));
    }
    let push_started = Instant::now();
    log.line(&format!("Pushing {full_ref}")).await;
    let repository = format!("{}/{}", build.namespace, build.repository);
    let before = app
        .registry
        .manifest_digest(&repository, &target.tag)
        .await
        .map_err(|e| tracing::warn!(build_id = %build.id, error = %format!("{e:#}"), "cannot read the tag before the push"));
    *push.0.lock().expect("push watch poisoned") = Some(PushStart {
        repository,
        tag: target.tag.clone(),
        image: image.clone(),
        before,
    });
    let mut pushed = docker::push_image(
        &docker,
        &image,
        &target.tag,
        registry_credentials(app, build),
        log,
    )
    .await;
    if let Err(e) = &pushed
        && let Some(down) = services_down(app).await
    {
        log.line(&format!("The push failed ({e}) while {down}."))
            .await;
        wait_for_services(app, &build.id, log).await?;
        log.line(&format!("Pushing {full_ref} again")).await;
        // The same push again (a closure cannot hold `log` across the wait above).
        pushed = docker::push_image(
            &docker,
            &image,
            &target.tag,
            registry_credentials(app, build),
            log,
        )
        .await;
    }
    if pushed.is_err() {
        record_stage(app, &build.id, Stage::Push, push_started.elapsed()).await;
    }
    let digest = pushed.map_err(|e| format!("push refused: {e}"))?;
    // The extra tags move only when no newer build of the same rule and ref will move them.
    let newer = match &build.rule_id {
        Some(rule_id) if !extra_tags.is_empty() => {
            db::builds::newer_build_of_rule_ref(&app.db, &build.id, rule_id, &target.git_ref)
                .await
                .map_err(db_err)?
        }
        _ => None,
    };
    let extra_tags = match newer {
        Some(by) => {
            log.line(&format!(
                "Not moving the extra tags ({}): build {by} of the same rule and ref was queued \
                 after this one and owns them now.",
                extra_tags.join(", ")
            ))
            .await;
            db::builds::set_extra_tags(&app.db, &build.id, &[])
                .await
                .map_err(db_err)?;
            Vec::new()
        }
        None => extra_tags,
    };
    for tag in &extra_tags {
        let extra_ref = format!("{image}:{tag}");
        log.line(&format!("Pushing {extra_ref} (extra tag)")).await;
        docker::tag_image(&docker, &full_ref, &image, tag)
            .await
            .map_err(|e| format!("cannot tag {extra_ref}: {e}"))?;
        let extra_digest =
            docker::push_image(&docker, &image, tag, registry_credentials(app, build), log)
                .await
                .map_err(|e| format!("push of {extra_ref} refused: {e}"))?;
        if extra_digest != digest {
            return Err(Failure::Failed(format!(
                "{extra_ref} was pushed as {extra_digest}, not as {digest} like {full_ref}"
            )));
        }
        log.line(&format!("Pushed {extra_ref} ({extra_digest})"))
            .await;
    }
    stage_done(
        app,
        &build.id,
        log,
        Stage::Push,
        push_started.elapsed(),
        "Pushed in",
    )
    .await;
    Ok(Pushed {
        reference: full_ref,
        digest,
        extra_tags,
    })
}

/// The user info (`user:token`, percent-encoded) git gives the host for a source linked through
/// its namespace's integration, registered with the masker; None for any other source, or when
/// the host does not give them (said in the log: a public repository still fetches). Only for a
/// clone URL on the integration's own host (`api.` + host for GitHub's API), never a mirror
/// elsewhere.
async fn integration_credentials(
    app: &App,
    build: &BuildRow,
    source: &db::sources::SourceRow,
    log: &mut BuildLog,
) -> Option<String> {
    source.repository.as_ref()?;
    let namespace = db::namespaces::by_name(&app.db, &build.namespace)
        .await
        .ok()??;
    let integration = db::integrations::get(&app.db, &app.secrets, &namespace.id, &source.provider)
        .await
        .ok()??;
    let clone_host = crate::domain::clone_url::host_of(&source.clone_url)?.to_ascii_lowercase();
    let api_host = reqwest::Url::parse(&integration.base_url)
        .ok()?
        .host_str()?
        .to_ascii_lowercase();
    if clone_host != api_host && api_host != format!("api.{clone_host}") {
        return None;
    }
    let fetched = match crate::forge::hosts::client(&app.config, &integration).await {
        Ok(client) => client.git_credentials().await,
        Err(e) => Err(e),
    };
    match fetched {
        Ok((user, password)) => {
            let credentials =
                crate::domain::clone_url::Credentials::from_plain(&format!("{user}:{password}"))?;
            let forms = credentials.secrets();
            crate::secrets::mask::register_all(forms.iter().map(String::as_str));
            Some(credentials.userinfo().to_string())
        }
        Err(e) => {
            log.line(&format!(
                "Cannot get {}'s credentials for the fetch ({}); fetching without them",
                source.provider, e.message
            ))
            .await;
            None
        }
    }
}

/// The registry credentials pushes (and layer cache pulls) of `build`'s repository use.
pub(super) fn registry_credentials(app: &App, build: &BuildRow) -> DockerCredentials {
    docker::registry_credentials(
        &app.config,
        &app.registry_tokens,
        &format!("{}/{}", build.namespace, build.repository),
    )
}

/// The day `{date}` stands for in a build's tags: the day it was queued (UTC), as a push's plan
/// has it, whenever the build runs (the main tag and the extra tags agree across midnight).
fn queued_date(build: &BuildRow) -> chrono::NaiveDate {
    chrono::DateTime::parse_from_rfc3339(&build.created_at)
        .map(|t| t.with_timezone(&chrono::Utc).date_naive())
        .unwrap_or_else(|_| chrono::Utc::now().date_naive())
}

/// Blocking: fetch the mirror, find the exact commit, decide the tag, tar the context; with
/// `diff_from`, list the files changed from it to the commit (for the path filter).
fn resolve_target(
    mirror: &std::path::Path,
    remote: &git::Remote,
    build: &BuildRow,
    rule: Option<&RuleSpec>,
    diff_from: Option<&str>,
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
    // The build named something else than the commit it builds: an annotated tag's object (what
    // forges report as `after` for one; a prefix of the commit's own id is the commit).
    let peeled_from = build
        .commit_sha
        .as_ref()
        .filter(|sha| !commit.starts_with(&sha.to_ascii_lowercase()))
        .cloned();
    let tag = match (&build.tag, rule) {
        // The tag planned from the push: its `{sha7}`/`{sha}` are the commit's.
        (Some(tag), _) if peeled_from.is_none() => tag.clone(),
        // Planned from the tag object's id: worked out again below, from the commit.
        (Some(_), None) if build.rule_id.is_some() => {
            return Err(format!(
                "the rule was deleted before the build started: the tag for commit {} cannot be worked out",
                &commit[..7]
            ));
        }
        (Some(tag), None) => tag.clone(),
        (_, Some(rule)) => {
            let git_ref_parsed = GitRef::parse(&git_ref)
                .ok_or_else(|| format!("'{git_ref}' is not a branch or tag"))?;
            let event = PushEvent {
                git_ref: git_ref_parsed,
                commit: commit.clone(),
                message: None,
                date: queued_date(build),
            };
            plan_rule(rule, &event)
                .map_err(|reason| {
                    format!("the rule does not build {git_ref}: {}", reason.message())
                })?
                .tag
        }
        (None, None) => return Err("the build has neither a tag nor a rule".into()),
    };
    let changed = diff_from
        .map(|before| git::changed_paths(&repo, before, &commit).map_err(|e| e.to_string()));
    let ctx = context::plan_context(mirror, &repo, oid, &build.context, &build.dockerfile)
        .map_err(|e| e.to_string())?;
    Ok(Target {
        git_ref,
        commit,
        peeled_from,
        tag,
        context: ctx,
        changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rules::RefKind;
    use git2::{Oid, Repository, Signature, Time};

    /// A bare repository with one commit (a Dockerfile) tagged `v1.0.0` by an annotated tag.
    struct Source {
        dir: tempfile::TempDir,
        commit: Oid,
        tag_object: Oid,
    }

    impl Source {
        fn new() -> Source {
            let dir = tempfile::tempdir().unwrap();
            let repo = Repository::init_bare(dir.path().join("source.git")).unwrap();
            let who = Signature::new(
                "Kiln Test",
                "test@kiln.invalid",
                &Time::new(1_700_000_000, 0),
            )
            .unwrap();
            let blob = repo.blob(b"FROM scratch\n").unwrap();
            let mut tree = repo.treebuilder(None).unwrap();
            tree.insert("Dockerfile", blob, 0o100644).unwrap();
            let tree = repo.find_tree(tree.write().unwrap()).unwrap();
            let commit = repo
                .commit(Some("refs/heads/main"), &who, &who, "first", &tree, &[])
                .unwrap();
            let target = repo.find_object(commit, None).unwrap();
            let tag_object = repo
                .tag("v1.0.0", &target, &who, "release 1.0.0", false)
                .unwrap();
            let tree_object = repo.find_object(tree.id(), None).unwrap();
            repo.tag("tree-tag", &tree_object, &who, "a tree", false)
                .unwrap();
            Source {
                dir,
                commit,
                tag_object,
            }
        }

        /// The source as the worker fetches it: its own directory allowed as a local source.
        fn remote(&self) -> git::Remote {
            let url = format!("file://{}", self.dir.path().join("source.git").display());
            let allowed =
                crate::local_sources::LocalSources::new(vec![self.dir.path().to_path_buf()], None);
            git::Remote::resolve(&url, None, &allowed, &Default::default()).unwrap()
        }

        fn resolve(&self, build: &BuildRow, rule: Option<&RuleSpec>) -> Result<Target, String> {
            let mirror = self.dir.path().join("mirror.git");
            resolve_target(&mirror, &self.remote(), build, rule, None)
        }
    }

    fn tag_rule(version: &str, overwrite: bool) -> RuleSpec {
        RuleSpec {
            id: "rule1".into(),
            kind: RefKind::Tag,
            name: "v*".into(),
            dockerfile: "Dockerfile".into(),
            context: String::new(),
            version: version.into(),
            overwrite,
            enabled: true,
            settings: Default::default(),
        }
    }

    /// A build row as a push plans it: ref, commit and tag given.
    fn pushed(commit_sha: &str, tag: &str) -> BuildRow {
        BuildRow {
            id: "b1".into(),
            repository_id: "r1".into(),
            namespace: "acme".into(),
            repository: "app".into(),
            rule_id: Some("rule1".into()),
            event_id: Some("e1".into()),
            trigger: "push".into(),
            git_ref: "refs/tags/v1.0.0".into(),
            commit_sha: Some(commit_sha.into()),
            tag: Some(tag.into()),
            image: None,
            dockerfile: "Dockerfile".into(),
            context: String::new(),
            version: "v1.0.0".into(),
            overwrite: true,
            status: "building".into(),
            error: None,
            digest: None,
            created_at: String::new(),
            started_at: None,
            finished_at: None,
            settings: "{}".into(),
            attempt: 1,
            stages: Default::default(),
            before_sha: None,
        }
    }

    fn sha7(oid: Oid) -> String {
        oid.to_string()[..7].to_string()
    }

    #[test]
    fn a_build_naming_a_tag_object_builds_its_commit_and_tags_it_with_the_commits_sha() {
        let source = Source::new();
        let tag_object = source.tag_object.to_string();
        // Planned (by an older kiln, or from a payload without the commit) from the tag object.
        let build = pushed(&tag_object, &format!("v1.0.0-{}", sha7(source.tag_object)));
        let target = source.resolve(&build, Some(&tag_rule("", false))).unwrap();
        assert_eq!(target.commit, source.commit.to_string());
        assert_eq!(target.peeled_from.as_deref(), Some(tag_object.as_str()));
        assert_eq!(target.tag, format!("v1.0.0-{}", sha7(source.commit)));
        assert_eq!(target.git_ref, "refs/tags/v1.0.0");

        // `{sha}`/`{sha7}` in the version are the commit's, overwrite or not.
        let target = source
            .resolve(&build, Some(&tag_rule("{tag}-{sha7}", true)))
            .unwrap();
        assert_eq!(target.tag, format!("v1.0.0-{}", sha7(source.commit)));
        let target = source
            .resolve(&build, Some(&tag_rule("{sha}", true)))
            .unwrap();
        assert_eq!(target.tag, source.commit.to_string());
    }

    #[test]
    fn date_in_a_tag_is_the_day_the_build_was_queued() {
        let source = Source::new();
        let tag_object = source.tag_object.to_string();
        let mut build = pushed(&tag_object, "planned");
        build.created_at = "2026-12-31T23:59:59.999999Z".into();
        assert_eq!(
            queued_date(&build),
            chrono::NaiveDate::from_ymd_opt(2026, 12, 31).unwrap()
        );
        // Worked out again at build time (a tag object was named): the queued day, not today.
        let target = source
            .resolve(&build, Some(&tag_rule("{tag}-{date}", true)))
            .unwrap();
        assert_eq!(target.tag, "v1.0.0-20261231");
        // A row without a readable time: today.
        build.created_at = "not a time".into();
        assert_eq!(queued_date(&build), chrono::Utc::now().date_naive());
    }

    #[test]
    fn a_build_naming_the_commit_keeps_its_planned_tag() {
        let source = Source::new();
        let commit = source.commit.to_string();
        for named in [
            commit.clone(),
            commit[..7].to_string(),
            commit.to_uppercase(),
        ] {
            let build = pushed(&named, "as-planned");
            let target = source.resolve(&build, Some(&tag_rule("", false))).unwrap();
            assert_eq!(target.commit, commit);
            assert_eq!(target.peeled_from, None, "{named}");
            assert_eq!(target.tag, "as-planned");
        }
        // Without a rule row (deleted since), a commit's planned tag still stands.
        let target = source
            .resolve(&pushed(&commit, "as-planned"), None)
            .unwrap();
        assert_eq!(target.tag, "as-planned");
    }

    #[test]
    fn a_tag_object_whose_rule_is_gone_or_tags_no_commit_fails_with_a_reason() {
        let source = Source::new();
        let build = pushed(&source.tag_object.to_string(), "v1.0.0-0000000");
        let error = source.resolve(&build, None).err().unwrap();
        assert!(error.contains("rule was deleted"), "{error}");
        assert!(error.contains(&sha7(source.commit)), "{error}");

        let mirror = source.dir.path().join("mirror.git");
        let tree_tag = git::fetch_mirror(&mirror, &source.remote())
            .unwrap()
            .refname_to_id("refs/tags/tree-tag")
            .unwrap()
            .to_string();
        let error = source
            .resolve(&pushed(&tree_tag, "x"), Some(&tag_rule("", false)))
            .err()
            .unwrap();
        assert_eq!(
            error,
            format!("{tree_tag} is a tag of a tree, not of a commit")
        );
    }
}
