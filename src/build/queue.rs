//! The build queue: rows in `builds` are the queue; workers claim them (`queued` → `building`) and an
//! in-process signal wakes them. Cancellation of running builds and log-follow wake-ups live here too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::db;

pub struct BuildQueue {
    wake: Notify,
    running: Mutex<HashMap<String, CancellationToken>>,
    log_version: watch::Sender<u64>,
    mirror_locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl Default for BuildQueue {
    fn default() -> Self {
        BuildQueue {
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
            log_version: watch::channel(0).0,
            mirror_locks: Mutex::default(),
        }
    }
}

impl BuildQueue {
    /// New rows were queued: wake a worker.
    pub fn wake_workers(&self) {
        self.wake.notify_waiters();
        self.wake.notify_one();
    }

    /// Stops a running build (its worker ends it `cancelled`). False when it does not run here.
    pub fn cancel_running(&self, build_id: &str) -> bool {
        match self
            .running
            .lock()
            .expect("build registry poisoned")
            .get(build_id)
        {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    pub fn log_appended(&self, _build_id: &str) {
        self.log_version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Something was logged or a build ended: log followers wait on this.
    pub fn log_updates(&self) -> watch::Receiver<u64> {
        self.log_version.subscribe()
    }

    /// One fetch at a time per mirror.
    pub fn mirror_lock(&self, mirror: &Path) -> Arc<tokio::sync::Mutex<()>> {
        self.mirror_locks
            .lock()
            .expect("mirror locks poisoned")
            .entry(mirror.to_path_buf())
            .or_default()
            .clone()
    }

    fn start(&self, build_id: &str) -> CancellationToken {
        let token = CancellationToken::new();
        self.running
            .lock()
            .expect("build registry poisoned")
            .insert(build_id.to_string(), token.clone());
        token
    }

    fn end(&self, build_id: &str) {
        self.running
            .lock()
            .expect("build registry poisoned")
            .remove(build_id);
        self.log_appended(build_id);
    }
}

/// A build of one rule asked for outside a push: "build now" (trigger `manual`) or the rule's
/// schedule (trigger `schedule`). The worker resolves a ref without a commit to its head.
pub struct RuleBuildRequest<'a> {
    pub trigger: &'a str,
    pub git_ref: &'a str,
    pub commit: Option<&'a str>,
    /// Queue nothing while a build of this rule with the same trigger is queued or running.
    pub one_at_a_time: bool,
}

/// Queues a build of `rule` as a row and wakes a worker; returns the row as queued (read before the
/// wake-up, so it says `queued`). `None`: not queued, because `one_at_a_time` found one still queued or
/// running (checked in the transaction that inserts).
pub async fn queue_rule_build(
    app: &App,
    repository_id: &str,
    rule: &db::rules::RuleRow,
    req: &RuleBuildRequest<'_>,
) -> Result<Option<db::builds::BuildRow>, sqlx::Error> {
    let mut tx = db::write_tx(&app.db).await?;
    if req.one_at_a_time && db::builds::active_for_rule(&mut tx, &rule.id, req.trigger).await? {
        return Ok(None);
    }
    let build_id = db::builds::insert(
        &mut tx,
        &db::builds::NewBuild {
            repository_id,
            rule_id: Some(&rule.id),
            event_id: None,
            trigger: req.trigger,
            git_ref: req.git_ref,
            commit_sha: req.commit,
            tag: None,
            image: None,
            dockerfile: &rule.dockerfile,
            context: &rule.context,
            version: &rule.version,
            overwrite: rule.overwrite,
            before_sha: None,
        },
    )
    .await?;
    tx.commit().await?;
    let build = db::builds::get(&app.db, &build_id).await?;
    app.builds.wake_workers();
    Ok(build)
}

/// Marks builds a crash left `building` as failed, then starts `n` workers.
/// Workers stop when `stop` is cancelled (between builds, or by ending the running one).
pub async fn start_workers(app: &App, stop: CancellationToken) -> anyhow::Result<()> {
    let interrupted = db::builds::fail_interrupted(&app.db).await?;
    if interrupted > 0 {
        tracing::warn!(
            count = interrupted,
            "builds interrupted by the last stop were marked failed"
        );
    }
    for worker in 0..app.config.build_workers {
        let app = app.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = work(app, worker) => {}
                _ = stop.cancelled() => {}
            }
        });
    }
    Ok(())
}

async fn work(app: App, worker: usize) {
    loop {
        // Register interest before looking, so a wake-up between the look and the wait is not lost.
        let notified = app.builds.wake.notified();
        match db::builds::claim_next(&app.db).await {
            Ok(Some(build)) => {
                let cancel = app.builds.start(&build.id);
                let id = build.id.clone();
                tracing::info!(build_id = %id, worker, "build claimed");
                super::worker::run(&app, build, cancel).await;
                app.builds.end(&id);
                // Builds of the same tag may have been waiting for this one.
                app.builds.wake_workers();
            }
            Ok(None) => {
                let _ = tokio::time::timeout(Duration::from_secs(5), notified).await;
            }
            Err(e) => {
                tracing::error!(error = %e, worker, "cannot claim a build");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
