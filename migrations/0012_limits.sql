-- Issue 11: replay dedupe and build limits.
-- The SHA-256 of a delivery's body (hex): a replayed delivery (the same signed body under a new
-- delivery id) is stored once per repository and provider, like a redelivery. Rows stored before this
-- migration keep NULL (SQLite cannot hash in SQL; NULLs never collide in a unique index).
ALTER TABLE events ADD COLUMN body_sha256 TEXT;
CREATE UNIQUE INDEX events_body_unique ON events (provider, repository_id, body_sha256);

-- The network mode of a rule's RUN steps: 'default' (the server's KILN_BUILD_NETWORK), 'none' or
-- 'host' (only when KILN_BUILD_ALLOW_HOST_NETWORK is set).
ALTER TABLE rules ADD COLUMN network TEXT NOT NULL DEFAULT 'default';
