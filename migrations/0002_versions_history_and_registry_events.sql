-- Issue 4: version history for overwritten tags, registry notification dedupe, redelivery counts.

-- Each time a tag moves to a new digest, the digest it had is kept here.
CREATE TABLE version_history (
    repository_id  TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    tag            TEXT NOT NULL,
    digest         TEXT NOT NULL,
    source         TEXT NOT NULL,
    build_id       TEXT,
    pushed_at      TEXT NOT NULL,
    replaced_at    TEXT NOT NULL
);
CREATE INDEX version_history_tag ON version_history (repository_id, tag, replaced_at);

-- Registry notification events already handled (the registry retries until it gets a 2xx).
CREATE TABLE registry_events (
    id           TEXT PRIMARY KEY NOT NULL,
    received_at  TEXT NOT NULL
);

-- How many times a stored hook delivery was delivered again (and ignored).
ALTER TABLE events ADD COLUMN duplicates INTEGER NOT NULL DEFAULT 0;
