//! The build queue: rows in `builds` are the queue; workers claim them (`queued` → `building`) and an
//! in-process signal wakes them. Stopping running builds (cancel, shutdown), restarts, queue positions
//! and log-follow wake-ups live here too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::db;
use crate::domain::{queue_order, tag_owner};

/// Runs of one build before an interruption (a stop or a crash of kiln) fails it instead of queueing
/// it again: a build that crashes kiln cannot loop forever.
pub const MAX_ATTEMPTS: i64 = 3;

/// Why a running build is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A user cancelled it: it ends `cancelled`.
    Cancel,
    /// kiln is shutting down and the grace period is over: it goes back to the queue.
    Shutdown,
}

/// Asks one running build to stop; the first reason given wins.
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    token: CancellationToken,
    why: Arc<OnceLock<Stop>>,
}

impl StopSignal {
    pub fn stop(&self, why: Stop) {
        let _ = self.why.set(why);
        self.token.cancel();
    }

    /// Resolves once a stop is asked for, with its reason.
    pub async fn stopped(&self) -> Stop {
        self.token.cancelled().await;
        self.why.get().copied().unwrap_or(Stop::Cancel)
    }
}

pub struct BuildQueue {
    wake: Notify,
    running: Mutex<HashMap<String, StopSignal>>,
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

    /// Asks a build whose row says `building` to stop. Its worker may not have registered it yet (the
    /// claim and the registration are two steps): the request is then kept for it.
    pub fn stop_running(&self, build_id: &str, why: Stop) {
        self.running
            .lock()
            .expect("build registry poisoned")
            .entry(build_id.to_string())
            .or_default()
            .stop(why);
    }

    /// Forgets a stop request for a build that ended before its worker saw it.
    pub fn forget(&self, build_id: &str) {
        self.running
            .lock()
            .expect("build registry poisoned")
            .remove(build_id);
    }

    fn stop_all(&self, why: Stop) -> usize {
        let running = self.running.lock().expect("build registry poisoned");
        for signal in running.values() {
            signal.stop(why);
        }
        running.len()
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

    fn start(&self, build_id: &str) -> StopSignal {
        self.running
            .lock()
            .expect("build registry poisoned")
            .entry(build_id.to_string())
            .or_default()
            .clone()
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
            settings: &rule.settings(),
            before_sha: None,
        },
    )
    .await?;
    tx.commit().await?;
    let build = db::builds::get(&app.db, &build_id).await?;
    app.builds.wake_workers();
    Ok(build)
}

/// Running builds (all, or only `only`) go back to the queue as their next attempt; one interrupted
/// [`MAX_ATTEMPTS`] times fails instead, and its `build.failed` is queued in the same transaction (a
/// crash cannot leave a build failed and never announced).
pub async fn requeue_interrupted(
    app: &App,
    only: Option<&str>,
) -> Result<Vec<db::builds::Interrupted>, sqlx::Error> {
    let mut tx = db::write_tx(&app.db).await?;
    let interrupted = db::builds::requeue_interrupted_in(&mut tx, only, MAX_ATTEMPTS).await?;
    let mut queued = 0;
    for b in interrupted.iter().filter(|b| !b.requeued) {
        if let Some(row) = db::builds::get(&mut *tx, &b.id).await? {
            queued += crate::notify::outbox::enqueue(
                &mut tx,
                &app.config.public_url,
                &row.repository_id,
                &crate::notify::outbox::build_event("build.failed", &row),
            )
            .await?
            .len();
        }
    }
    tx.commit().await?;
    if queued > 0 {
        app.notifier.wake();
    }
    Ok(interrupted)
}

/// The build workers: stop them with [`Workers::drain`].
pub struct Workers {
    handles: Vec<JoinHandle<()>>,
    /// Cancelled: workers claim nothing more and end once their build has.
    draining: CancellationToken,
}

/// Queues again the builds a crash (or a stop without drain) left `building`, then starts
/// `KILN_BUILD_WORKERS` workers. They also stop when `stop` is cancelled (the running build is dropped:
/// the next start queues it again).
pub async fn start_workers(app: &App, stop: CancellationToken) -> anyhow::Result<Workers> {
    for b in requeue_interrupted(app, None).await? {
        let line = if b.requeued {
            tracing::warn!(build_id = %b.id, attempt = b.attempt, "build interrupted by the last stop queued again");
            format!(
                "Attempt {}: kiln restarted while this build was running; it runs again.",
                b.attempt
            )
        } else {
            tracing::warn!(build_id = %b.id, attempts = b.attempt, "build interrupted too often: failed");
            format!(
                "Failed: kiln stopped during each of this build's {} attempts.",
                b.attempt
            )
        };
        super::log::BuildLog::open(app, &b.id)
            .await
            .line(&line)
            .await;
    }
    let draining = CancellationToken::new();
    let handles = (0..app.config.build_workers)
        .map(|worker| {
            let app = app.clone();
            let stop = stop.clone();
            let draining = draining.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = work(app, worker, draining) => {}
                    _ = stop.cancelled() => {}
                }
            })
        })
        .collect();
    Ok(Workers { handles, draining })
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Builds still running when the grace period ran out, stopped and queued again.
    pub stopped: usize,
}

impl Workers {
    /// Stops claiming builds, lets the running ones finish within `grace`, then stops those still
    /// running (each goes back to the queue, see `worker::run`) and waits for their workers to end.
    pub async fn drain(self, app: &App, grace: Duration) -> Drained {
        self.draining.cancel();
        let mut all = futures_util::future::join_all(self.handles);
        if tokio::time::timeout(grace, &mut all).await.is_ok() {
            return Drained { stopped: 0 };
        }
        let stopped = app.builds.stop_all(Stop::Shutdown);
        tracing::warn!(
            builds = stopped,
            grace_secs = grace.as_secs(),
            "grace period over: stopping running builds, they run again at the next start"
        );
        // Stopping takes a moment (the daemon kills the build's container; a push is checked).
        if tokio::time::timeout(Duration::from_secs(30), all)
            .await
            .is_err()
        {
            tracing::error!(
                "build workers did not stop within 30 s of the end of the grace period"
            );
        }
        Drained { stopped }
    }
}

async fn work(app: App, worker: usize, draining: CancellationToken) {
    loop {
        if draining.is_cancelled() {
            return;
        }
        // Register interest before looking, so a wake-up between the look and the wait is not lost.
        let notified = app.builds.wake.notified();
        match db::builds::claim_next(&app.db, app.config.repo_build_limit).await {
            Ok(Some(build)) => {
                let stop = app.builds.start(&build.id);
                let id = build.id.clone();
                tracing::info!(build_id = %id, worker, attempt = build.attempt, "build claimed");
                super::worker::run(&app, build, stop).await;
                app.builds.end(&id);
                // Builds of the same tag or repository may have been waiting for this one.
                app.builds.wake_workers();
            }
            Ok(None) => {
                tokio::select! {
                    _ = tokio::time::timeout(Duration::from_secs(5), notified) => {}
                    _ = draining.cancelled() => return,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, worker, "cannot claim a build");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Each queued build's place in line (1 = the next to start), by `domain::queue_order`.
pub async fn queue_positions(app: &App) -> Result<HashMap<String, usize>, sqlx::Error> {
    let rows = db::builds::queue_snapshot(&app.db).await?;
    let builds: Vec<queue_order::Build<'_>> = rows
        .iter()
        .map(|r| queue_order::Build {
            repo: &r.repository_id,
            started_at: r.started_at.as_deref(),
            owner: tag_owner::Build {
                id: &r.id,
                rule_id: r.rule_id.as_deref(),
                tag: r.tag.as_deref(),
                stage: match r.status.as_str() {
                    "queued" => tag_owner::Stage::Queued,
                    "building" => tag_owner::Stage::Building,
                    _ => tag_owner::Stage::Ended,
                },
            },
        })
        .collect();
    Ok(
        queue_order::queue_positions(&builds, app.config.repo_build_limit)
            .into_iter()
            .map(|(id, n)| (id.to_string(), n))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_asked_before_the_worker_registers_its_build_is_kept_and_the_first_reason_wins()
    {
        let q = BuildQueue::default();
        // The cancel comes between the claim and the worker's registration.
        q.stop_running("b1", Stop::Cancel);
        assert_eq!(q.start("b1").stopped().await, Stop::Cancel);
        // Once the build ended, its next run starts with no stop pending.
        q.end("b1");
        assert!(!q.start("b1").token.is_cancelled());
        q.end("b1");

        q.stop_running("b2", Stop::Shutdown);
        q.stop_running("b2", Stop::Cancel);
        assert_eq!(q.start("b2").stopped().await, Stop::Shutdown);

        let running = q.start("b3");
        assert_eq!(q.stop_all(Stop::Shutdown), 2);
        assert_eq!(running.stopped().await, Stop::Shutdown);
        q.forget("b2");
        q.forget("b3");
        assert_eq!(q.stop_all(Stop::Cancel), 0);
    }
}
