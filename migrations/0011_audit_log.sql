-- The audit log (issue 11): one row per change accepted through the API or the console. Who (the
-- token's id and name; the env admin token has no id), what (method, route pattern, concrete path,
-- target namespace and repository, resulting status), when, and from which peer address. Never a
-- request body. Kept for KILN_AUDIT_RETENTION_DAYS.
CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    at          TEXT NOT NULL,
    token_id    TEXT,
    token_name  TEXT NOT NULL,
    via         TEXT NOT NULL,
    method      TEXT NOT NULL,
    route       TEXT NOT NULL,
    path        TEXT NOT NULL,
    namespace   TEXT,
    repository  TEXT,
    status      INTEGER NOT NULL,
    address     TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_namespace ON audit_log (namespace, id);
