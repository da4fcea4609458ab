//! Rule schedules: a task that queues a build of a rule's branch head each time its cron expression
//! fires (trigger `schedule`), the way "build now" does (`build::queue::queue_rule_build`).
//!
//! - Only enabled rules of visible repositories with a source fire (`db::rules::scheduled`); which
//!   rules may carry a schedule is `domain::schedule::validate_rule_schedule`'s (a branch rule with an
//!   exact name).
//! - A schedule never queues a second build while one of its builds is queued or running: that tick
//!   is dropped, not postponed.
//! - Ticks missed while kiln was stopped fire **once** when it starts: a rule fires at start when its
//!   schedule had a tick since the rule's last schedule build was queued (or, without one, since the
//!   rule was last changed). A daily base-image refresh thus survives a restart at 03:00, and a week
//!   of downtime does not queue seven builds.
//! - Rule changes are read every few seconds; changing a schedule starts it afresh from then.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::build::queue::{RuleBuildRequest, queue_rule_build};
use crate::db::{self, rules::RuleRow};
use crate::domain::schedule::CronSchedule;

/// The trigger of builds a schedule queues.
pub const TRIGGER: &str = "schedule";

/// How often rules are read again (new, changed and removed schedules), at most.
const RELOAD: Duration = Duration::from_secs(5);

/// Starts the scheduler; it stops when `stop` is cancelled.
pub fn spawn_scheduler(app: &App, stop: CancellationToken) {
    let app = app.clone();
    tokio::spawn(async move {
        let mut scheduler = Scheduler::default();
        loop {
            let wait = match scheduler.tick(&app, Utc::now()).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler: cannot read or queue scheduled builds");
                    RELOAD
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
}

/// The next tick of every schedule seen, by (rule id, expression): a changed expression is a new key.
#[derive(Default)]
struct Scheduler {
    next: HashMap<(String, String), DateTime<Utc>>,
}

impl Scheduler {
    /// Fires what is due at `now`; returns how long to sleep.
    async fn tick(&mut self, app: &App, now: DateTime<Utc>) -> Result<Duration, sqlx::Error> {
        let rules = db::rules::scheduled(&app.db).await?;
        let mut seen = HashSet::new();
        let mut wake = now + chrono::Duration::from_std(RELOAD).unwrap_or_default();
        for rule in rules {
            let Some(expr) = rule.schedule.clone() else {
                continue;
            };
            // Validated when stored; one that no longer parses (a newer kiln's syntax) never fires.
            let Ok(schedule) = CronSchedule::parse(&expr) else {
                continue;
            };
            let key = (rule.id.clone(), expr);
            let due = match self.next.get(&key) {
                Some(at) => *at <= now,
                None => schedule.fired_between(missed_since(app, &rule).await?, now),
            };
            if due {
                fire(app, &rule).await?;
            }
            let next = match self.next.get(&key) {
                Some(at) if !due => *at,
                _ => match schedule.next_after(now) {
                    Some(at) => at,
                    None => continue,
                },
            };
            wake = wake.min(next);
            self.next.insert(key.clone(), next);
            seen.insert(key);
        }
        self.next.retain(|k, _| seen.contains(k));
        Ok((wake - now).to_std().unwrap_or(Duration::ZERO))
    }
}

/// Where a rule's schedule stands when the scheduler first sees it: when its last schedule build was
/// queued, or when the rule was last changed, whichever is later.
async fn missed_since(app: &App, rule: &RuleRow) -> Result<DateTime<Utc>, sqlx::Error> {
    let parse = |t: &str| {
        DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&Utc))
            .ok()
    };
    let last_build = db::builds::last_created_for_rule(&app.db, &rule.id, TRIGGER)
        .await?
        .and_then(|t| parse(&t));
    let changed = parse(&rule.updated_at);
    Ok(last_build.max(changed).unwrap_or_else(Utc::now))
}

/// Queues a build of the rule's branch head, unless one of its schedule builds is queued or running.
async fn fire(app: &App, rule: &RuleRow) -> Result<(), sqlx::Error> {
    let git_ref = format!("refs/heads/{}", rule.name);
    let queued = queue_rule_build(
        app,
        &rule.repository_id,
        rule,
        &RuleBuildRequest {
            trigger: TRIGGER,
            git_ref: &git_ref,
            commit: None,
            one_at_a_time: true,
        },
    )
    .await?;
    match queued {
        Some(build) => {
            tracing::info!(build_id = %build.id, rule_id = %rule.id, %git_ref, "schedule fired: build queued")
        }
        None => tracing::info!(
            rule_id = %rule.id,
            "schedule fired while its previous build is still queued or running: nothing queued"
        ),
    }
    Ok(())
}
