-- Issue 5: new-image notifications. Subscriptions, a durable outbox of deliveries, and an access
-- record of every attempt.

CREATE TABLE webhooks (
    id              TEXT PRIMARY KEY NOT NULL,
    repository_id   TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    url             TEXT NOT NULL,
    -- Standard Webhooks secret (whsec_…): needed in clear to sign; never returned after creation.
    secret          TEXT NOT NULL,
    -- JSON array of event names: image.pushed, build.started, build.succeeded, build.failed
    events          TEXT NOT NULL DEFAULT '["image.pushed"]',
    tag_filter      TEXT,
    payload_format  TEXT NOT NULL DEFAULT 'kiln',
    active          INTEGER NOT NULL DEFAULT 1,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    CONSTRAINT webhooks_name_unique UNIQUE (repository_id, name)
);

-- One row per message per subscription, written in the transaction that records what it announces.
CREATE TABLE deliveries (
    id               TEXT PRIMARY KEY NOT NULL,
    webhook_id       TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    -- Standard Webhooks `webhook-id`: the same for a redelivery of the same message.
    message_id       TEXT NOT NULL,
    event            TEXT NOT NULL,
    content_type     TEXT NOT NULL DEFAULT 'application/json',
    body             TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    claimed_until    TEXT,
    response_status  INTEGER,
    duration_ms      INTEGER,
    error            TEXT,
    redelivery_of    TEXT,
    created_at       TEXT NOT NULL,
    finished_at      TEXT
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_webhook ON deliveries (webhook_id, id);

CREATE TABLE delivery_attempts (
    delivery_id               TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt                   INTEGER NOT NULL,
    started_at                TEXT NOT NULL,
    request_method            TEXT NOT NULL,
    request_url               TEXT NOT NULL,
    request_headers           TEXT NOT NULL,
    request_body              TEXT NOT NULL,
    request_body_truncated    INTEGER NOT NULL DEFAULT 0,
    response_status           INTEGER,
    response_headers          TEXT,
    response_body             TEXT,
    response_body_truncated   INTEGER NOT NULL DEFAULT 0,
    error                     TEXT,
    duration_ms               INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
