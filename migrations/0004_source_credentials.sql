-- Issue 8: credentials of a source's clone URL are a write-only secret kept apart from the URL, the
-- way the webhook secret is. `clone_url` never holds user info again; `credentials` holds it
-- (`user:password` or a lone token, percent-encoded as it was written), NULL when there is none.
-- Rows that hold credentials in clone_url are split by kiln at start (db::sources::
-- move_embedded_credentials): SQL can't find the user info of a URL reliably.
ALTER TABLE sources ADD COLUMN credentials TEXT;
