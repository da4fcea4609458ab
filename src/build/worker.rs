//! One build from start to end: fetch the commit, resolve the tag, tar the context, build, push, record.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::auth::DockerCredentials;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use super::log::BuildLog;
use super::{context, docker, git};
use crate::app::App;
use crate::db::{self, builds::BuildRow, builds::BuildStatus, builds::Stage};
use crate::domain::rules::{GitRef, PushEvent, RuleSpec, plan_rule};
use crate::forge::display_url;
use crate::notify::outbox;

enum Failure {
    Failed(String),
    Cancelled,
    /// Built, but a build queued after it owns the tag now: pushing would move the tag back to an older
    /// commit, so nothing was pushed.
    Superseded {
        by: String,
        tag: String,
    },
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
}

pub async fn run(app: &App, build: BuildRow, cancel: CancellationToken) {
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
        Ok(Pushed { reference, digest }) => {
            log.line(&format!("Pushed {reference} ({digest})")).await;
            record_success(app, &build.id, &digest).await
        }
        Err(Failure::Cancelled) => {
            log.line("Cancelled.").await;
            tracing::info!(build_id = %build.id, "build cancelled");
            Ok(())
        }
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

/// What a successful build pushed: `{registry}/{namespace}/{repo}:{tag}` and its manifest digest.
struct Pushed {
    reference: String,
    digest: String,
}

async fn execute(app: &App, build: &BuildRow, log: &mut BuildLog) -> Result<Pushed, Failure> {
    let db_err = |e: sqlx::Error| Failure::Failed(format!("database error: {e}"));
    let source = db::sources::for_repo(&app.db, &build.repository_id)
        .await
        .map_err(db_err)?
        .ok_or_else(|| "the repository has no git source".to_string())?;
    // Builds planned from a push carry their tag; "build now" resolves commit and tag here, from the
    // rule. A pushed build naming an annotated tag's object has its tag worked out again, from the
    // commit, so the rule is read for it too.
    let rule = match &build.rule_id {
        Some(rule_id) => db::rules::get(&app.db, &build.repository_id, rule_id)
            .await
            .map_err(db_err)?
            .map(|row| row.spec()),
        None => None,
    };
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

    log.line(&format!("Fetching {}", display_url(&source.clone_url)))
        .await;
    let fetch_started = Instant::now();
    let mirror = git::mirror_path(&app.config.mirrors_dir(), &source.clone_url);
    let lock = app.builds.mirror_lock(&mirror);
    let guard = lock.lock().await;
    let fetched = {
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
        .map_err(|e| format!("the fetch task failed: {e}"))
        .and_then(|fetched| fetched)
    };
    drop(guard);
    // A stage that failed took its time too: recorded, its reason ends the log.
    if fetched.is_err() {
        record_stage(app, &build.id, Stage::Fetch, fetch_started.elapsed()).await;
    }
    let target = fetched?;
    stage_done(
        app,
        &build.id,
        log,
        Stage::Fetch,
        fetch_started.elapsed(),
        "Fetched in",
    )
    .await;
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
    let docker = app.docker.client().await.map_err(|e| format!("{e:#}"))?;
    let build_started = Instant::now();
    let built = docker::build_image(&docker, &target.context, &full_ref, log).await?;
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
    let push_started = Instant::now();
    let pushed = docker::push_image(&docker, &image, &target.tag, credentials, log).await;
    if pushed.is_err() {
        record_stage(app, &build.id, Stage::Push, push_started.elapsed()).await;
    }
    let digest = pushed.map_err(|e| format!("push refused: {e}"))?;
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
    })
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
    let ctx = context::plan_context(mirror, &repo, oid, &build.context, &build.dockerfile)
        .map_err(|e| e.to_string())?;
    Ok(Target {
        git_ref,
        commit,
        peeled_from,
        tag,
        context: ctx,
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
            git::Remote::resolve(&url, None, &allowed).unwrap()
        }

        fn resolve(&self, build: &BuildRow, rule: Option<&RuleSpec>) -> Result<Target, String> {
            let mirror = self.dir.path().join("mirror.git");
            resolve_target(&mirror, &self.remote(), build, rule)
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
            stages: Default::default(),
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
