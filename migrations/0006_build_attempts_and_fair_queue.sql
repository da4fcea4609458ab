-- Restarts that lose nothing: a build interrupted by a stop or a crash is queued again and runs again;
-- `attempt` counts its runs (1 for the first), so a build that keeps crashing kiln ends failed.
ALTER TABLE builds ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;

-- The claim's fairness between repositories reads each repository's latest start and its running builds.
CREATE INDEX builds_repository_started ON builds (repository_id, started_at);
CREATE INDEX builds_repository_status ON builds (repository_id, status);
