-- How long each stage of a build took, in milliseconds; NULL for a stage the build did not reach.
-- queued_ms: created → claimed by a worker; fetch_ms: fetching the commit into the mirror and
-- checking the Dockerfile and context; context_ms: build request sent → the whole context tar
-- written to the daemon; build_ms: the tar sent → the image built; push_ms: the push.
ALTER TABLE builds ADD COLUMN queued_ms INTEGER;
ALTER TABLE builds ADD COLUMN fetch_ms INTEGER;
ALTER TABLE builds ADD COLUMN context_ms INTEGER;
ALTER TABLE builds ADD COLUMN build_ms INTEGER;
ALTER TABLE builds ADD COLUMN push_ms INTEGER;
