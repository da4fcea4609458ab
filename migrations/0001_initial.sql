-- kiln: the spine. Ids are TEXT (UUID v7: sortable by creation), times are RFC 3339 UTC TEXT,
-- enums are TEXT, booleans INTEGER 0/1.

CREATE TABLE namespaces (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    CONSTRAINT namespaces_name_unique UNIQUE (name)
);

CREATE TABLE repositories (
    id            TEXT PRIMARY KEY NOT NULL,
    namespace_id  TEXT NOT NULL REFERENCES namespaces (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    summary       TEXT NOT NULL DEFAULT '',
    detail        TEXT NOT NULL DEFAULT '',
    category      TEXT NOT NULL DEFAULT 'other',
    hidden        INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    CONSTRAINT repositories_name_unique UNIQUE (namespace_id, name)
);

-- The git source of a CI repository: at most one per repository.
CREATE TABLE sources (
    repository_id   TEXT PRIMARY KEY NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    provider        TEXT NOT NULL,
    clone_url       TEXT NOT NULL,
    -- normalized clone URL (scheme and host lower-cased, no trailing '/' or '.git'), for routing hooks
    match_url       TEXT NOT NULL,
    webhook_secret  TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX sources_match_url ON sources (provider, match_url);

CREATE TABLE rules (
    id             TEXT PRIMARY KEY NOT NULL,
    repository_id  TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    kind           TEXT NOT NULL,
    name           TEXT NOT NULL,
    dockerfile     TEXT NOT NULL,
    context        TEXT NOT NULL DEFAULT '',
    version        TEXT NOT NULL DEFAULT '',
    overwrite      INTEGER NOT NULL,
    enabled        INTEGER NOT NULL DEFAULT 1,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX rules_repository ON rules (repository_id, created_at);

-- Every verified inbound hook delivery, stored before it is answered. One row per (delivery, repository)
-- it was routed to; the plan column keeps, for every rule, whether it matched and why not.
CREATE TABLE events (
    id             TEXT PRIMARY KEY NOT NULL,
    repository_id  TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    provider       TEXT NOT NULL,
    delivery_id    TEXT NOT NULL,
    kind           TEXT NOT NULL,
    git_ref        TEXT,
    commit_sha     TEXT,
    outcome        TEXT NOT NULL,
    plan           TEXT NOT NULL DEFAULT '[]',
    payload        BLOB NOT NULL,
    received_at    TEXT NOT NULL,
    CONSTRAINT events_delivery_unique UNIQUE (provider, delivery_id, repository_id)
);
CREATE INDEX events_repository ON events (repository_id, received_at);

CREATE TABLE builds (
    id             TEXT PRIMARY KEY NOT NULL,
    repository_id  TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    rule_id        TEXT,
    event_id       TEXT,
    trigger        TEXT NOT NULL,
    git_ref        TEXT NOT NULL,
    commit_sha     TEXT,
    tag            TEXT,
    image          TEXT,
    dockerfile     TEXT NOT NULL,
    context        TEXT NOT NULL DEFAULT '',
    -- for "build now" of a tag rule without a ref: the rule's pattern and version template, resolved by the worker
    version        TEXT NOT NULL DEFAULT '',
    overwrite      INTEGER NOT NULL DEFAULT 1,
    status         TEXT NOT NULL,
    error          TEXT,
    digest         TEXT,
    created_at     TEXT NOT NULL,
    started_at     TEXT,
    finished_at    TEXT
);
CREATE INDEX builds_repository ON builds (repository_id, created_at);
CREATE INDEX builds_status ON builds (status, created_at);

CREATE TABLE build_log_lines (
    build_id  TEXT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    seq       INTEGER NOT NULL,
    line      TEXT NOT NULL,
    PRIMARY KEY (build_id, seq)
) WITHOUT ROWID;

CREATE TABLE versions (
    repository_id  TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    tag            TEXT NOT NULL,
    digest         TEXT NOT NULL,
    source         TEXT NOT NULL,
    build_id       TEXT,
    commit_sha     TEXT,
    hidden         INTEGER NOT NULL DEFAULT 0,
    pushed_at      TEXT NOT NULL,
    PRIMARY KEY (repository_id, tag)
);

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    namespace   TEXT,
    role        TEXT NOT NULL,
    token_hash  TEXT NOT NULL,
    expires_at  TEXT,
    created_at  TEXT NOT NULL,
    CONSTRAINT tokens_hash_unique UNIQUE (token_hash)
);
