use axum::extract::State;
use axum::http::StatusCode;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::load_repo;
use crate::app::App;
use crate::db;
use crate::forge::{display_url, normalize_url};
use crate::http::auth::{Caller, Role};
use crate::http::error::{ApiError, ApiJson, ApiPath, ApiResult};

/// Providers whose hooks kiln receives.
pub const PROVIDERS: &[&str] = &["github", "gitlab", "gitea"];

#[derive(Serialize)]
pub struct SourceView {
    pub provider: String,
    pub clone_url: String,
    /// Where to point the forge's webhook.
    pub webhook_url: String,
    /// Only when kiln generated it, only in the answer to the PUT that did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutSource {
    provider: String,
    clone_url: String,
    webhook_secret: Option<String>,
    /// Without `webhook_secret`: true makes kiln generate a new secret even for a linked source.
    #[serde(default)]
    regenerate_secret: bool,
}

/// A clone URL git2 can fetch: http(s)://, ssh://, git://, file://, scp-like `user@host:path`, or an
/// absolute local path.
pub fn validate_clone_url(url: &str) -> ApiResult<()> {
    let bad = |msg: &str| ApiError::invalid("clone_url", "invalid_url", msg.to_string());
    if url.trim().is_empty() {
        return Err(bad("clone_url is required"));
    }
    if url.len() > 2048 {
        return Err(bad("clone_url must be at most 2048 characters"));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad(
            "clone_url must not contain spaces or control characters",
        ));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if !["https", "http", "ssh", "git", "file"].contains(&scheme.to_ascii_lowercase().as_str())
        {
            return Err(bad(
                "clone_url scheme must be https, http, ssh, git or file",
            ));
        }
        if rest.trim_matches('/').is_empty() {
            return Err(bad("clone_url names no repository"));
        }
        return Ok(());
    }
    if url.starts_with('/') {
        return Ok(());
    }
    match url.split_once(':') {
        Some((host, path)) if !host.is_empty() && !host.contains('/') && !path.is_empty() => Ok(()),
        _ => Err(bad(
            "clone_url must be a URL (https://, ssh://, git://, file://), user@host:path, or an absolute path",
        )),
    }
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
    let row = load_repo(&app, &caller, &ns, &repo, Role::Write).await?;
    if !PROVIDERS.contains(&body.provider.as_str()) {
        return Err(ApiError::invalid(
            "provider",
            "invalid_value",
            format!("provider must be one of: {}", PROVIDERS.join(", ")),
        ));
    }
    validate_clone_url(&body.clone_url)?;
    // No secret sent: a linked source keeps its own (a PUT that only moves the clone URL must not
    // break the forge's webhook); a new one gets a generated secret, shown once.
    let existing = db::sources::for_repo(&app.db, &row.id).await?;
    let (secret, generated) = match (body.webhook_secret, existing) {
        (Some(s), _) => {
            validate_secret(&s)?;
            (s, false)
        }
        (None, Some(old)) if !body.regenerate_secret => (old.webhook_secret, false),
        (None, _) => (generate_secret(), true),
    };
    let source = db::sources::upsert(
        &app.db,
        &db::sources::NewSource {
            repository_id: &row.id,
            provider: &body.provider,
            clone_url: &body.clone_url,
            match_url: &normalize_url(&body.clone_url),
            webhook_secret: &secret,
        },
    )
    .await?;
    tracing::info!(repo = %format!("{ns}/{repo}"), clone_url = %display_url(&source.clone_url), "source linked");
    Ok(axum::Json(SourceView {
        webhook_url: format!("{}/hooks/{}", app.config.public_url, source.provider),
        provider: source.provider,
        clone_url: source.clone_url,
        webhook_secret: generated.then_some(secret),
    }))
}

pub async fn get_source(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo)): ApiPath<(String, String)>,
) -> ApiResult<axum::Json<SourceView>> {
    let row = load_repo(&app, &caller, &ns, &repo, Role::Read).await?;
    let source = db::sources::for_repo(&app.db, &row.id)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("git source of {ns}/{repo}")))?;
    Ok(axum::Json(SourceView {
        webhook_url: format!("{}/hooks/{}", app.config.public_url, source.provider),
        provider: source.provider,
        clone_url: source.clone_url,
        webhook_secret: None,
    }))
}

/// Unlinks the source: the repository becomes a plain one; its rules are kept, disabled.
pub async fn delete_source(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, repo)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let row = load_repo(&app, &caller, &ns, &repo, Role::Write).await?;
    let mut tx = crate::db::write_tx(&app.db).await?;
    if !db::sources::delete(&mut *tx, &row.id).await? {
        return Err(ApiError::not_found(&format!("git source of {ns}/{repo}")));
    }
    db::rules::disable_all(&mut *tx, &row.id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_urls() {
        for ok in [
            "https://github.com/acme/api.git",
            "http://git.local/a/b",
            "ssh://git@github.com/acme/api.git",
            "git://example.com/x",
            "file:///tmp/repo.git",
            "/srv/git/repo.git",
            "git@github.com:acme/api.git",
        ] {
            assert!(validate_clone_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "   ",
            "ftp://x/y",
            "https://",
            "relative/path",
            "https://github.com/a b",
            "https://github.com/a\nb",
            ":nohost",
            "host:",
        ] {
            let e = validate_clone_url(bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("clone_url"), "{bad}");
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
