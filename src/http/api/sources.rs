use axum::extract::State;
use axum::http::StatusCode;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::{load_repo, source_hooks};
use crate::app::App;
use crate::db;
use crate::domain::clone_url::{CloneUrl, host_of, origin_of};
use crate::forge::{display_url, normalize_url};
use crate::http::auth::{Caller, Role};
use crate::http::error::{ApiError, ApiJson, ApiPath, ApiResult};
use crate::notify::guard;

/// Providers whose hooks kiln receives (`git`: a plain git server, see `examples/post-receive`).
pub const PROVIDERS: &[&str] = &["github", "gitlab", "gitea", "git"];

#[derive(Serialize)]
pub struct SourceView {
    pub provider: String,
    /// Never with credentials: they are kept apart, write-only.
    pub clone_url: String,
    /// True when the source has credentials for its clone URL (they are never shown).
    pub has_credentials: bool,
    /// Where to point the forge's webhook (a plain git server's: the one URL that names this source).
    pub webhook_url: String,
    /// Only when kiln generated it, only in the answer to the PUT that did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// Linked through the namespace's integration (issue 12): the repository on the host, whether
    /// kiln's push hook is installed there, and the host's error when setting it up failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook_installed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook_error: Option<String>,
    /// Things to know about the link (e.g. a `KILN_PUBLIC_URL` the host cannot reach).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl SourceView {
    /// The view of the source of `ns/repo`.
    pub fn new(
        app: &App,
        (ns, repo): (&str, &str),
        source: db::sources::SourceRow,
        webhook_secret: Option<String>,
    ) -> Self {
        let webhook_url = match source.provider.as_str() {
            "git" => crate::forge::git::webhook_url(&app.config.public_url, ns, repo),
            provider => format!("{}/hooks/{provider}", app.config.public_url),
        };
        SourceView {
            webhook_url,
            has_credentials: source.credentials.is_some(),
            hook_installed: source.repository.as_ref().map(|_| source.hook_id.is_some()),
            repository: source.repository,
            hook_error: source.hook_error,
            provider: source.provider,
            clone_url: source.clone_url,
            webhook_secret,
            warnings: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutSource {
    pub provider: String,
    /// Credentials may be embedded (`https://user:token@host/…`): they are taken out and kept apart.
    /// Optional with `repository` (then the host's clone URL).
    pub clone_url: Option<String>,
    /// `owner/name` on the host, for a source linked through the namespace's integration with
    /// `provider` (issue 12): kiln installs the push hook there. Absent: a source linked so keeps
    /// its repository while its clone URL stays the same.
    #[serde(default)]
    pub repository: Option<String>,
    pub webhook_secret: Option<String>,
    /// Without `webhook_secret`: true makes kiln generate a new secret even for a linked source.
    #[serde(default)]
    pub regenerate_secret: bool,
    /// With a clone URL without credentials: true drops the credentials the source has (by
    /// default they are kept while the URL stays on the same scheme, host and port).
    #[serde(default)]
    pub remove_credentials: bool,
}

/// A clone URL kiln can fetch (see [`CloneUrl::parse`]): https://, http://, git://, or a local
/// repository (`file://`, an absolute path); not SSH. Whether a local path is allowed is checked
/// apart ([`check_local_source`]): it depends on the server's `KILN_LOCAL_SOURCES`.
pub fn validate_clone_url(url: &str) -> ApiResult<()> {
    CloneUrl::parse(url).map(|_| ()).map_err(ApiError::from)
}

/// A local source must be an existing directory under one of `KILN_LOCAL_SOURCES`: 422 otherwise.
async fn check_local_source(app: &App, path: &str) -> ApiResult<()> {
    let allowed = app.config.local_sources.clone();
    let path = path.to_string();
    tokio::task::spawn_blocking(move || allowed.resolve(&path))
        .await
        .map_err(ApiError::internal)?
        .map(|_| ())
        .map_err(|e| ApiError::invalid("clone_url", "local_source_not_allowed", e.to_string()))
}

/// A remote source's host must not resolve to an internal address (loopback, private, link-local,
/// metadata, …; see [`crate::notify::guard`]) unless `KILN_GIT_ALLOW` opens it: 422 otherwise.
/// Checked again at every fetch (DNS may change).
async fn check_remote_host(app: &App, url: &str) -> ApiResult<()> {
    let Some(host) = host_of(url) else {
        return Ok(());
    };
    guard::check_host(&app.config.git_allow, &host)
        .await
        .map_err(|reason| ApiError::invalid("clone_url", "address_not_allowed", reason))
}

fn validate_secret(secret: &str) -> ApiResult<()> {
    let n = secret.chars().count();
    if !(16..=256).contains(&n) {
        return Err(ApiError::invalid(
            "webhook_secret",
            "invalid_length",
            "webhook_secret must be 16 to 256 characters",
        ));
    }
    if secret.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "webhook_secret",
            "invalid_character",
            "webhook_secret must not contain control characters",
        ));
    }
    Ok(())
}

fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub async fn put_source(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<PutSource>,
) -> ApiResult<axum::Json<SourceView>> {
    Ok(axum::Json(put(&app, &caller, &ns, &repo, body).await?))
}

/// Links (or changes) the git source of `ns/repo` (write role): the API's `PUT .../source` and the
/// console's "link a git source" and "regenerate secret" forms. A secret kiln generated is in the
/// answer, once.
pub async fn put(
    app: &App,
    caller: &Caller,
    ns: &str,
    repo: &str,
    body: PutSource,
) -> ApiResult<SourceView> {
    let row = load_repo(app, caller, ns, repo, Role::Write).await?;
    if !PROVIDERS.contains(&body.provider.as_str()) {
        return Err(ApiError::invalid(
            "provider",
            "invalid_value",
            format!("provider must be one of: {}", PROVIDERS.join(", ")),
        ));
    }
    let existing = db::sources::for_repo(&app.db, &app.secrets, &row.id).await?;
    let repository = match (&body.repository, &existing) {
        (Some(r), _) => Some(r.trim().to_string()),
        (None, Some(old))
            if old.provider == body.provider
                && body.clone_url.as_ref().is_none_or(|u| *u == old.clone_url) =>
        {
            old.repository.clone()
        }
        (None, _) => None,
    };
    let host_repo = match &repository {
        Some(r) => Some(source_hooks::find_repository(app, &row, &body.provider, r).await?),
        None => None,
    };
    let given_url = match (body.clone_url, &host_repo) {
        (Some(u), _) => u,
        (None, Some(h)) => h.clone_url.clone(),
        (None, None) => {
            return Err(ApiError::invalid(
                "clone_url",
                "required",
                "clone_url is required (or repository, with the namespace's integration)",
            ));
        }
    };
    let clone_url = CloneUrl::parse(&given_url)?;
    match &clone_url {
        CloneUrl::Local { path, .. } => check_local_source(app, path).await?,
        CloneUrl::Remote { url, .. } => check_remote_host(app, url).await?,
    }
    if body.remove_credentials && clone_url.credentials().is_some() {
        return Err(ApiError::invalid(
            "remove_credentials",
            "invalid_value",
            "remove_credentials with credentials in clone_url: send one or the other",
        ));
    }
    // No secret sent: a linked source keeps its own (a PUT that only moves the clone URL must not
    // break the forge's webhook); a new one gets a generated secret, shown once.
    // No credentials in the URL: a linked source keeps its own while the URL stays on the same
    // scheme, host and port (they are never sent anywhere else).
    let credentials = match (clone_url.credentials(), &existing) {
        (Some(given), _) => Some(given.userinfo().to_string()),
        (None, _) if body.remove_credentials => None,
        (None, Some(old))
            if origin_of(&old.clone_url).is_some()
                && origin_of(&old.clone_url) == origin_of(clone_url.url()) =>
        {
            old.credentials.clone()
        }
        (None, _) => None,
    };
    let (secret, generated) = match (body.webhook_secret, existing.clone()) {
        (Some(s), _) => {
            validate_secret(&s)?;
            (s, false)
        }
        (None, Some(old)) if !body.regenerate_secret => (old.webhook_secret, false),
        (None, _) => (generate_secret(), true),
    };
    let source = db::sources::upsert(
        &app.db,
        &app.secrets,
        &db::sources::NewSource {
            repository_id: &row.id,
            provider: &body.provider,
            clone_url: clone_url.url(),
            match_url: &normalize_url(clone_url.url()),
            webhook_secret: &secret,
            credentials: credentials.as_deref(),
            repository: repository.as_deref(),
        },
    )
    .await?;
    app.sources.invalidate();
    let source = source_hooks::sync_hook(app, &row, existing.as_ref(), source).await?;
    tracing::info!(
        repo = %format!("{ns}/{repo}"),
        clone_url = %display_url(&source.clone_url),
        has_credentials = source.credentials.is_some(),
        "source linked"
    );
    let linked = source.repository.is_some();
    let mut view = SourceView::new(app, (ns, repo), source, generated.then_some(secret));
    if linked && let Some(w) = source_hooks::public_url_warning(app, &body.provider).await {
        view.warnings.push(w);
    }
    Ok(view)
}

pub async fn get_source(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo)): ApiPath<(String, String)>,
) -> ApiResult<axum::Json<SourceView>> {
    let row = load_repo(&app, &caller, &ns, &repo, Role::Read).await?;
    let source = db::sources::for_repo(&app.db, &app.secrets, &row.id)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("git source of {ns}/{repo}")))?;
    Ok(axum::Json(SourceView::new(
        &app,
        (&ns, &repo),
        source,
        None,
    )))
}

/// Unlinks the source: the repository becomes a plain one; its rules are kept, disabled.
pub async fn delete_source(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    delete(&app, &caller, &ns, &repo).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Unlinks the git source of `ns/repo` (write role); its rules are kept, disabled.
pub async fn delete(app: &App, caller: &Caller, ns: &str, repo: &str) -> ApiResult<()> {
    let row = load_repo(app, caller, ns, repo, Role::Write).await?;
    let source = db::sources::for_repo(&app.db, &app.secrets, &row.id).await?;
    let mut tx = crate::db::write_tx(&app.db).await?;
    if !db::sources::delete(&mut *tx, &row.id).await? {
        return Err(ApiError::not_found(&format!("git source of {ns}/{repo}")));
    }
    db::rules::disable_all(&mut *tx, &row.id).await?;
    tx.commit().await?;
    app.sources.invalidate();
    if let Some(source) = source {
        source_hooks::remove_hook(app, &row, &source).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_urls() {
        for ok in [
            "https://github.com/acme/api.git",
            "https://user:token@github.com/acme/api.git",
            "http://git.local/a/b",
            "git://example.com/x",
            "file:///tmp/repo.git",
            "/srv/git/repo.git",
        ] {
            assert!(validate_clone_url(ok).is_ok(), "{ok}");
        }
        for (bad, code) in [
            ("", "invalid_url"),
            ("   ", "invalid_url"),
            ("ftp://x/y", "invalid_url"),
            ("https://", "invalid_url"),
            ("relative/path", "invalid_url"),
            ("https://github.com/a b", "invalid_url"),
            ("https://github.com/a\nb", "invalid_url"),
            (":nohost", "invalid_url"),
            ("host:", "invalid_url"),
            ("ssh://git@github.com/acme/api.git", "ssh_not_supported"),
            ("git@github.com:acme/api.git", "ssh_not_supported"),
        ] {
            let e = validate_clone_url(bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("clone_url"), "{bad}");
            assert_eq!(e.code, code, "{bad}");
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        }
        assert!(validate_clone_url(&format!("https://x/{}", "a".repeat(3000))).is_err());
    }

    #[test]
    fn secrets() {
        assert!(validate_secret(&"s".repeat(16)).is_ok());
        assert!(validate_secret("short").is_err());
        assert!(validate_secret(&"s".repeat(257)).is_err());
        assert!(validate_secret(&format!("{}\n", "s".repeat(20))).is_err());
        let g = generate_secret();
        assert_eq!(g.len(), 64);
        assert_ne!(g, generate_secret());
    }
}
