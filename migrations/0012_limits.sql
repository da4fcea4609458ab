-- Issue 11: replay dedupe and build limits.
-- The SHA-256 of a delivery's body (hex): a replayed delivery (the same signed body under a new
-- delivery id) is stored once per repository and provider, like a redelivery. Rows stored before this
-- migration keep NULL (SQLite cannot hash in SQL; NULLs never collide in a unique index).
ALTER TABLE events ADD COLUMN body_sha256 TEXT;
CREATE UNIQUE INDEX events_body_unique ON events (provider, repository_id, body_sha256);

-- The network of a rule's RUN steps: 'default' (the server's KILN_BUILD_NETWORK) or 'none'. A rule
-- can only make it stricter: host networking is the server's choice (KILN_BUILD_NETWORK=host).
ALTER TABLE rules ADD COLUMN network TEXT NOT NULL DEFAULT 'default';
