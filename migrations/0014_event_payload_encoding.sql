-- Hook payloads are stored LZ4-compressed (a 7.8 KB GitHub push fits in one page instead of three,
-- which is most of what a group commit writes); older rows keep their bytes as they came.
ALTER TABLE events ADD COLUMN payload_encoding TEXT NOT NULL DEFAULT 'identity'
    CHECK (payload_encoding IN ('identity', 'lz4'));
