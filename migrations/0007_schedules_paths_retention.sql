-- Issue 9 (schedules, path filters): a rule's cron schedule and path filters; the `before` of the
-- push a build was planned from, so the worker can compute the files it changed.

-- A cron expression (UTC) that rebuilds the head of the rule's branch; NULL: no schedule.
ALTER TABLE rules ADD COLUMN schedule TEXT;
-- JSON arrays of globs: a push builds when a changed file matches `paths` and not every changed file
-- matches `ignore_paths`. '[]': no filter.
ALTER TABLE rules ADD COLUMN paths TEXT NOT NULL DEFAULT '[]';
ALTER TABLE rules ADD COLUMN ignore_paths TEXT NOT NULL DEFAULT '[]';

-- The commit the pushed ref pointed at before the push (NULL: not a push, or nothing to compare).
ALTER TABLE builds ADD COLUMN before_sha TEXT;
-- One schedule build of a rule at a time: the scheduler looks for its rule's queued or running ones.
CREATE INDEX builds_rule_status ON builds (rule_id, status);
