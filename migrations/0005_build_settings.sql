-- Issue 9: build settings per rule, copied onto each build when it is queued.
-- build_args: JSON object of name → value; extra_tags: JSON array of tag templates;
-- timeout_minutes NULL: the server's default (KILN_BUILD_TIMEOUT_MINUTES).
ALTER TABLE rules ADD COLUMN build_args TEXT NOT NULL DEFAULT '{}';
ALTER TABLE rules ADD COLUMN target TEXT NOT NULL DEFAULT '';
ALTER TABLE rules ADD COLUMN no_cache INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rules ADD COLUMN extra_tags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE rules ADD COLUMN timeout_minutes INTEGER;

-- The settings a build runs with (domain::build_settings::BuildSettings as JSON; '{}' is the defaults).
ALTER TABLE builds ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';

-- The extra tags a build pushes besides its tag, rendered when it runs: while the build runs, the
-- registry's notifications of these tags are its own pushes (the build records the versions).
CREATE TABLE build_extra_tags (
    build_id  TEXT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    tag       TEXT NOT NULL,
    PRIMARY KEY (build_id, tag)
);
CREATE INDEX build_extra_tags_tag ON build_extra_tags (tag);
