use super::secrets::{SOURCES_CREDENTIALS, SOURCES_WEBHOOK_SECRET};
use super::{Db, now};
use crate::domain::clone_url::Credentials;
use crate::secrets::Cipher;
use crate::secrets::cipher::place;

/// A source, its secrets decrypted (they are stored encrypted: see [`crate::secrets`]).
#[derive(Clone)]
pub struct SourceRow {
    pub repository_id: String,
    pub provider: String,
    pub clone_url: String,
    pub match_url: String,
    /// Needed in clear to verify HMAC signatures; never returned by the API after creation, never logged.
    pub webhook_secret: String,
    pub created_at: String,
    /// The user info taken out of the clone URL (`user:password` or a token, percent-encoded), given to
    /// git when it asks; never returned by the API, never logged, never put back into a URL.
    pub credentials: Option<String>,
    /// Linked through the namespace's integration: the repository's name on the host (`owner/name`).
    pub repository: Option<String>,
    /// The id of the push hook kiln installed on the host's repository.
    pub hook_id: Option<String>,
    /// What the host answered when kiln last failed to install, update or remove the hook.
    pub hook_error: Option<String>,
}

impl std::fmt::Debug for SourceRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceRow")
            .field("repository_id", &self.repository_id)
            .field("provider", &self.provider)
            .field("clone_url", &self.clone_url)
            .field("repository", &self.repository)
            .field("hook_id", &self.hook_id)
            .field("webhook_secret", &"[redacted]")
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// A source as stored: its secrets encrypted.
#[derive(sqlx::FromRow)]
struct StoredSource {
    repository_id: String,
    provider: String,
    clone_url: String,
    match_url: String,
    webhook_secret: String,
    created_at: String,
    credentials: Option<String>,
    repository: Option<String>,
    hook_id: Option<String>,
    hook_error: Option<String>,
}

impl StoredSource {
    /// Decrypts the secrets (registering them with the masker, credentials in every form they may
    /// be shown in). A value that does not open is a decode error naming the row and column.
    fn open(self, cipher: &Cipher) -> Result<SourceRow, sqlx::Error> {
        let open = |column: &str, stored: &str| {
            cipher
                .open(stored, &place(column, &self.repository_id))
                .map_err(|e| {
                    sqlx::Error::Decode(
                        format!("{column} of source {}: {e}", self.repository_id).into(),
                    )
                })
        };
        let webhook_secret = open(SOURCES_WEBHOOK_SECRET, &self.webhook_secret)?;
        let credentials = match &self.credentials {
            Some(c) => Some(open(SOURCES_CREDENTIALS, c)?),
            None => None,
        };
        if let Some(c) = credentials.as_deref().and_then(Credentials::from_userinfo) {
            let forms = c.secrets();
            crate::secrets::mask::register_all(forms.iter().map(String::as_str));
        }
        Ok(SourceRow {
            repository_id: self.repository_id,
            provider: self.provider,
            clone_url: self.clone_url,
            match_url: self.match_url,
            webhook_secret,
            created_at: self.created_at,
            credentials,
            repository: self.repository,
            hook_id: self.hook_id,
            hook_error: self.hook_error,
        })
    }
}

pub struct NewSource<'a> {
    pub repository_id: &'a str,
    pub provider: &'a str,
    pub clone_url: &'a str,
    pub match_url: &'a str,
    pub webhook_secret: &'a str,
    /// The clone URL's credentials, kept apart from it (`clone_url` holds none).
    pub credentials: Option<&'a str>,
    /// The repository's name on the host, for a source linked through an integration.
    pub repository: Option<&'a str>,
}

/// Creates or replaces the repository's one source, its secrets encrypted with `cipher`.
pub async fn upsert(db: &Db, cipher: &Cipher, s: &NewSource<'_>) -> Result<SourceRow, sqlx::Error> {
    let webhook_secret = cipher.seal(
        s.webhook_secret,
        &place(SOURCES_WEBHOOK_SECRET, s.repository_id),
    );
    let credentials = s
        .credentials
        .map(|c| cipher.seal(c, &place(SOURCES_CREDENTIALS, s.repository_id)));
    let stored: StoredSource = sqlx::query_as(
        "INSERT INTO sources (repository_id, provider, clone_url, match_url, webhook_secret, credentials, \
         repository, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (repository_id) DO UPDATE SET provider = excluded.provider, clone_url = excluded.clone_url, \
         match_url = excluded.match_url, webhook_secret = excluded.webhook_secret, \
         credentials = excluded.credentials, repository = excluded.repository RETURNING *",
    )
    .bind(s.repository_id)
    .bind(s.provider)
    .bind(s.clone_url)
    .bind(s.match_url)
    .bind(&webhook_secret)
    .bind(&credentials)
    .bind(s.repository)
    .bind(now())
    .fetch_all(db)
    .await
    .and_then(super::one_returned)?;
    stored.open(cipher)
}

/// Takes the credentials out of clone URLs stored with them (`https://user:token@host/…`, as every
/// source was stored before they were kept apart) into the `credentials` column, as plaintext: kiln
/// encrypts it right after ([`crate::secrets::upgrade`]), as every plaintext secret. Idempotent: kiln
/// runs it at every start; a row is changed only if its URL is still the one read. Returns the URLs
/// as they were (with their credentials) of the rows changed.
pub async fn move_embedded_credentials(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT repository_id, clone_url FROM sources WHERE clone_url LIKE '%@%'")
            .fetch_all(db)
            .await?;
    let mut moved = Vec::new();
    for (repository_id, clone_url) in rows {
        let Some((url, credentials)) =
            crate::domain::clone_url::split_embedded_credentials(&clone_url)
        else {
            continue;
        };
        let changed = sqlx::query(
            "UPDATE sources SET clone_url = ?, credentials = ? \
             WHERE repository_id = ? AND clone_url = ?",
        )
        .bind(&url)
        .bind(credentials.userinfo())
        .bind(&repository_id)
        .bind(&clone_url)
        .execute(db)
        .await?
        .rows_affected();
        if changed > 0 {
            moved.push(clone_url);
        }
    }
    Ok(moved)
}

pub async fn for_repo(
    db: &Db,
    cipher: &Cipher,
    repository_id: &str,
) -> Result<Option<SourceRow>, sqlx::Error> {
    let stored: Option<StoredSource> =
        sqlx::query_as("SELECT * FROM sources WHERE repository_id = ?")
            .bind(repository_id)
            .fetch_optional(db)
            .await?;
    stored.map(|s| s.open(cipher)).transpose()
}

/// Every source: the hook path routes by them (`crate::source_index`). Each is decrypted once
/// here, so verifying a delivery against many candidates costs no decryption.
pub async fn all(db: &Db, cipher: &Cipher) -> Result<Vec<SourceRow>, sqlx::Error> {
    let stored: Vec<StoredSource> = sqlx::query_as("SELECT * FROM sources ORDER BY repository_id")
        .fetch_all(db)
        .await?;
    // A row that does not open (written outside kiln after its start check) is left out, so that
    // it breaks no other source's hooks.
    Ok(stored
        .into_iter()
        .filter_map(|s| match s.open(cipher) {
            Ok(row) => Some(row),
            Err(e) => {
                tracing::error!(error = %e, "source left out: its secrets cannot be decrypted");
                None
            }
        })
        .collect())
}

pub async fn delete<'e, E: sqlx::SqliteExecutor<'e>>(
    db: E,
    repository_id: &str,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("DELETE FROM sources WHERE repository_id = ?")
        .bind(repository_id)
        .execute(db)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Records the hook kiln installed on the host for the source (`hook_id` None: none is there) and
/// the host's error when installing, updating or removing it failed (None: it worked).
pub async fn set_hook(
    db: &Db,
    repository_id: &str,
    hook_id: Option<&str>,
    hook_error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sources SET hook_id = ?, hook_error = ? WHERE repository_id = ?")
        .bind(hook_id)
        .bind(hook_error)
        .bind(repository_id)
        .execute(db)
        .await?;
    Ok(())
}
