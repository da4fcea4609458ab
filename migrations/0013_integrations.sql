-- Issue 12: git host integrations.
-- A namespace's credentials for one git host (github, gitlab, gitea): at most one per provider.
-- `secret` is the token (kind 'token') or the GitHub App's private key (kind 'app'), encrypted
-- like every secret (`crate::secrets`, column 'integrations.secret', row id `id`).
CREATE TABLE integrations (
    id               TEXT PRIMARY KEY NOT NULL,
    namespace_id     TEXT NOT NULL REFERENCES namespaces (id) ON DELETE CASCADE,
    provider         TEXT NOT NULL,
    kind             TEXT NOT NULL,
    base_url         TEXT NOT NULL,
    secret           TEXT NOT NULL,
    app_id           INTEGER,
    installation_id  INTEGER,
    account          TEXT,
    account_kind     TEXT,
    -- the scopes the host reported, as a JSON array of strings
    scopes           TEXT NOT NULL DEFAULT '[]',
    last_checked_at  TEXT,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    CONSTRAINT integrations_provider_unique UNIQUE (namespace_id, provider)
);

-- A source linked through its namespace's integration: the repository's name on the host
-- (`owner/name`), the push hook kiln installed there, and the host's answer when that failed.
ALTER TABLE sources ADD COLUMN repository TEXT;
ALTER TABLE sources ADD COLUMN hook_id TEXT;
ALTER TABLE sources ADD COLUMN hook_error TEXT;

-- Commit statuses to set on the host: an outbox, queued in the transaction that changes the
-- build, delivered in order per (provider, repository, sha, context) with retries.
CREATE TABLE commit_statuses (
    id               TEXT PRIMARY KEY NOT NULL,
    build_id         TEXT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    namespace_id     TEXT NOT NULL,
    provider         TEXT NOT NULL,
    repository       TEXT NOT NULL,
    sha              TEXT NOT NULL,
    state            TEXT NOT NULL,
    context          TEXT NOT NULL,
    description      TEXT NOT NULL,
    target_url       TEXT,
    -- pending (to deliver), succeeded, failed (given up, or refused by the host)
    status           TEXT NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    response_status  INTEGER,
    error            TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX commit_statuses_due ON commit_statuses (status, next_attempt_at);
CREATE INDEX commit_statuses_build ON commit_statuses (build_id);
CREATE INDEX commit_statuses_order ON commit_statuses (provider, repository, sha, context, id);
