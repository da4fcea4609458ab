-- Sessions of the web console (issue 10). A session is found by the SHA-256 of its cookie value;
-- it acts with the API token it was opened with, kept only as that token's SHA-256 (the same hash
-- `tokens.token_hash` holds), so a copied database opens no session and reveals no token.
CREATE TABLE console_sessions (
    id_hash      TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL,
    csrf         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
