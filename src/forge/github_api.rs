//! The GitHub side of [`ForgeClient`]: GitHub's REST API (github.com or GitHub Enterprise Server)
//! through octocrab's HTTP stack (base URI, TLS, timeouts), one namespace's credentials per client.
//!
//! Authentication is kiln's own so that every answer, including the one that mints an App's
//! installation token, keeps its status and headers (rate limits):
//! - a personal access token goes as `Authorization: Bearer …` on every call;
//! - a GitHub App signs a JWT (RS256, `iss` = the App id, `iat` 60 s in the past, `exp` 9 minutes
//!   ahead) for the App-level calls (`GET /app/installations/{id}`) and to mint an installation
//!   token (`POST /app/installations/{id}/access_tokens`); that token is cached and minted again
//!   when fewer than [`TOKEN_MARGIN`] remain before its `expires_at`, or when GitHub refuses it.
//!
//! Repository search walks the listing (`GET /user/repos` or `GET /installation/repositories`,
//! 100 a page, at most [`SEARCH_PAGES`] pages) and keeps the full names holding the text: GitHub's
//! `/search/repositories` matches names, not owners, does not cover an installation's listing the
//! same way, and has a far lower rate limit.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, Method, header};
use http_body_util::BodyExt;
use octocrab::Octocrab;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use super::rest::{self, cut};

use crate::forge::client::{
    Account, CommitStatus, ForgeClient, HookSpec, HostCredentials, HostError, HostRepo, RepoPage,
    StatusState,
};

/// github.com's API.
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// An installation token is minted again when fewer than this remain (a clone may take minutes).
pub const TOKEN_MARGIN: Duration = Duration::from_secs(5 * 60);
/// The most listing pages (of 100) a repository search reads.
pub const SEARCH_PAGES: u32 = 20;
/// GitHub's limit on a commit status description, in characters.
pub const DESCRIPTION_MAX: usize = 140;
/// The longest host message kept in a [`HostError`], in characters.
const MESSAGE_MAX: usize = 300;

/// A client of one GitHub (API base) with one namespace's credentials.
pub struct GitHubClient {
    crab: Octocrab,
    api_base: String,
    auth: Auth,
}

enum Auth {
    Token(SecretString),
    App {
        app_id: u64,
        installation_id: u64,
        key: jsonwebtoken::EncodingKey,
        /// The installation token and when it expires; one mint at a time.
        cached: Arc<tokio::sync::Mutex<Option<InstallationToken>>>,
    },
}

#[derive(Clone)]
struct InstallationToken {
    token: SecretString,
    expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for GitHubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("GitHubClient");
        d.field("api_base", &self.api_base);
        match &self.auth {
            Auth::Token(_) => d.field("auth", &"Token([redacted])"),
            Auth::App {
                app_id,
                installation_id,
                ..
            } => d
                .field("app_id", app_id)
                .field("installation_id", installation_id)
                .field("private_key", &"[redacted]"),
        };
        d.finish()
    }
}

/// A host's answer: status, headers, body.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: bytes::Bytes,
}

impl Answer {
    fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, HostError> {
        serde_json::from_slice(&self.body).map_err(|e| HostError {
            status: Some(self.status),
            message: format!("GitHub answered {what} with an unexpected body: {e}"),
            rate_limited: false,
            retry_after: None,
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Deserialize)]
struct WireRepo {
    full_name: String,
    clone_url: String,
    html_url: String,
    #[serde(default)]
    private: bool,
    #[serde(default)]
    default_branch: Option<String>,
}

impl From<WireRepo> for HostRepo {
    fn from(r: WireRepo) -> HostRepo {
        HostRepo {
            full_name: r.full_name,
            clone_url: r.clone_url,
            html_url: r.html_url,
            private: r.private,
            default_branch: r.default_branch,
        }
    }
}

#[derive(Deserialize)]
struct WireAccount {
    login: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct WireInstallation {
    account: WireAccount,
    #[serde(default)]
    permissions: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
struct WireInstallationRepos {
    repositories: Vec<WireRepo>,
}

#[derive(Deserialize)]
struct WireAccessToken {
    token: String,
    expires_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct WireHook {
    id: u64,
}

#[derive(serde::Serialize)]
struct AppClaims {
    iat: i64,
    exp: i64,
    iss: String,
}

impl GitHubClient {
    /// A client of the API at `api_base` (`https://api.github.com`, GHES `https://host/api/v3`).
    /// Fails when the base is not an http(s) URL or an App's private key is not an RSA PEM key.
    pub fn new(api_base: &str, credentials: HostCredentials) -> Result<GitHubClient, HostError> {
        let base = api_base.trim().trim_end_matches('/');
        let uri: http::Uri = base
            .parse()
            .map_err(|_| invalid(format!("'{base}' is not a URL")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(invalid(format!("'{base}' is not an http(s) URL")));
        }
        if uri.query().is_some() {
            return Err(invalid(format!("'{base}' holds a query")));
        }
        let crab = Octocrab::builder()
            .base_uri(uri)
            .map_err(|e| invalid(format!("'{base}' is not a usable API URL: {e}")))?
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(30)))
            .set_write_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(|e| invalid(format!("cannot make a GitHub client: {e}")))?;
        let auth = match credentials {
            HostCredentials::Token { token } => {
                let token = token.trim().to_string();
                if token.is_empty() {
                    return Err(invalid("the token is empty".to_string()));
                }
                crate::secrets::mask::register(&token);
                Auth::Token(SecretString::from(token))
            }
            HostCredentials::App {
                app_id,
                private_key,
                installation_id,
            } => {
                crate::secrets::mask::register(&private_key);
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key.trim().as_bytes())
                    .map_err(|_| {
                        invalid("the App's private key is not an RSA private key in PEM".into())
                    })?;
                Auth::App {
                    app_id,
                    installation_id,
                    key,
                    cached: Arc::new(tokio::sync::Mutex::new(None)),
                }
            }
        };
        Ok(GitHubClient {
            crab,
            api_base: base.to_string(),
            auth,
        })
    }

    /// The App JWT: RS256, `iss` = App id, issued 60 s ago (clock drift), valid 9 minutes.
    fn app_jwt(&self) -> Result<SecretString, HostError> {
        let Auth::App { app_id, key, .. } = &self.auth else {
            return Err(invalid("not a GitHub App".into()));
        };
        let now = Utc::now().timestamp();
        let claims = AppClaims {
            iat: now - 60,
            exp: now + 9 * 60,
            iss: app_id.to_string(),
        };
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        let jwt = jsonwebtoken::encode(&header, &claims, key)
            .map_err(|e| invalid(format!("cannot sign the App JWT: {e}")))?;
        Ok(SecretString::from(jwt))
    }

    /// The installation token, minted when there is none or it expires within [`TOKEN_MARGIN`].
    async fn installation_token(&self) -> Result<SecretString, HostError> {
        let Auth::App {
            installation_id,
            cached,
            ..
        } = &self.auth
        else {
            return Err(invalid("not a GitHub App".into()));
        };
        let mut cached = cached.lock().await;
        if let Some(t) = cached.as_ref() {
            let left = t.expires_at - Utc::now();
            if left.to_std().is_ok_and(|left| left > TOKEN_MARGIN) {
                return Ok(t.token.clone());
            }
        }
        let jwt = self.app_jwt()?;
        let answer = self
            .send(
                Method::POST,
                &format!("/app/installations/{installation_id}/access_tokens"),
                &jwt,
                None,
            )
            .await?;
        let wire: WireAccessToken = answer.json("the installation token request")?;
        crate::secrets::mask::register(&wire.token);
        let token = SecretString::from(wire.token);
        *cached = Some(InstallationToken {
            token: token.clone(),
            expires_at: wire.expires_at,
        });
        Ok(token)
    }

    async fn forget_installation_token(&self) {
        if let Auth::App { cached, .. } = &self.auth {
            *cached.lock().await = None;
        }
    }

    /// One call as the credentials (the token, or the App's installation); an installation token
    /// GitHub refuses (401) is minted again and the call made once more.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, HostError> {
        match &self.auth {
            Auth::Token(token) => self.send(method, path, token, body).await,
            Auth::App { .. } => {
                let token = self.installation_token().await?;
                match self.send(method.clone(), path, &token, body).await {
                    Err(e) if e.status == Some(401) => {
                        self.forget_installation_token().await;
                        let token = self.installation_token().await?;
                        self.send(method, path, &token, body).await
                    }
                    other => other,
                }
            }
        }
    }

    /// One request with `Bearer {credential}`; a non-2xx answer is a [`HostError`].
    async fn send(
        &self,
        method: Method,
        path: &str,
        credential: &SecretString,
        body: Option<&Value>,
    ) -> Result<Answer, HostError> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", credential.expose_secret()))
            .map_err(|_| invalid("the credential holds characters a header cannot".into()))?;
        auth.set_sensitive(true);
        let builder = http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .header(header::USER_AGENT, "kiln")
            .header(header::AUTHORIZATION, auth);
        let request = self
            .crab
            .build_request(builder, body)
            .map_err(|e| invalid(format!("cannot make the request: {e}")))?;
        let response = self
            .crab
            .execute(request)
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = response.status().as_u16();
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| self.unreachable(&e))?
            .to_bytes();
        let answer = Answer {
            status,
            headers: parts.headers,
            body,
        };
        if (200..300).contains(&status) {
            Ok(answer)
        } else {
            Err(host_error(&answer))
        }
    }

    fn unreachable(&self, e: &(dyn std::error::Error + 'static)) -> HostError {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            let line = s.to_string();
            if !text.contains(&line) {
                text = format!("{text}: {line}");
            }
            source = s.source();
        }
        HostError::unreachable(one_line(&format!(
            "GitHub at {} cannot be reached: {}",
            self.api_base,
            crate::secrets::mask::mask(&text)
        )))
    }

    /// One page of the listing the credentials see, as the host pages it.
    async fn listing(&self, page: u32, per_page: u32) -> Result<RepoPage, HostError> {
        let (path, installation) = match self.auth {
            Auth::Token(_) => (
                format!("/user/repos?per_page={per_page}&page={page}&sort=full_name"),
                false,
            ),
            Auth::App { .. } => (
                format!("/installation/repositories?per_page={per_page}&page={page}"),
                true,
            ),
        };
        let answer = self.call(Method::GET, &path, None).await?;
        let repos: Vec<WireRepo> = if installation {
            answer
                .json::<WireInstallationRepos>("the repository listing")?
                .repositories
        } else {
            answer.json("the repository listing")?
        };
        Ok(RepoPage {
            repositories: repos.into_iter().map(HostRepo::from).collect(),
            next_page: rest::next_page_from_link(&answer.headers),
        })
    }
}

/// A request kiln cannot make (bad base URL, bad key, bad name). It carries 400, not `None`:
/// [`HostError::is_transient`] takes `None` for an unreachable host, worth trying again.
fn invalid(message: String) -> HostError {
    HostError {
        status: Some(400),
        message,
        rate_limited: false,
        retry_after: None,
    }
}

/// The first line of `text`, at most [`MESSAGE_MAX`] characters.
fn one_line(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    cut(line, MESSAGE_MAX)
}

/// What GitHub's error answer says: its `message`, the `errors[]` of a 422, the rate limit.
fn host_error(answer: &Answer) -> HostError {
    let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    let mut message = body
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&answer.body);
            match text.trim() {
                "" => format!("HTTP {}", answer.status),
                t => format!("HTTP {}: {t}", answer.status),
            }
        });
    if let Some(errors) = body.get("errors").and_then(Value::as_array) {
        let details: Vec<String> = errors.iter().filter_map(error_detail).collect();
        if !details.is_empty() {
            message = format!("{message}: {}", details.join("; "));
        }
    }
    let remaining_zero = answer.header("x-ratelimit-remaining").map(str::trim) == Some("0");
    let secondary = message
        .to_ascii_lowercase()
        .contains("secondary rate limit");
    let rate_limited = answer.status == 429
        || (answer.status == 403 && (remaining_zero || secondary || has_retry_after(answer)));
    let retry_after = rest::retry_after(&answer.headers, rate_limited);
    HostError {
        status: Some(answer.status),
        message: one_line(&crate::secrets::mask::mask(&message)),
        rate_limited,
        retry_after,
    }
}

fn has_retry_after(answer: &Answer) -> bool {
    answer.header("retry-after").is_some()
}

/// One entry of a 422's `errors`: its `message`, else `resource.field code`, else the string.
fn error_detail(e: &Value) -> Option<String> {
    if let Some(s) = e.as_str() {
        return Some(s.to_string());
    }
    if let Some(m) = e.get("message").and_then(Value::as_str) {
        return Some(m.to_string());
    }
    let field = e.get("field").and_then(Value::as_str);
    let code = e.get("code").and_then(Value::as_str);
    let resource = e.get("resource").and_then(Value::as_str);
    match (resource, field, code) {
        (Some(r), Some(f), Some(c)) => Some(format!("{r}.{f} {c}")),
        (None, Some(f), Some(c)) => Some(format!("{f} {c}")),
        (_, _, Some(c)) => Some(c.to_string()),
        _ => None,
    }
}

/// `owner/name` as a path (`/repos/owner/name`), refusing anything GitHub would not name so.
fn repo_path(full_name: &str) -> Result<String, HostError> {
    let bad = || HostError {
        status: Some(404),
        message: format!(
            "'{}' is not a GitHub repository name (owner/name)",
            cut(full_name, 100)
        ),
        rate_limited: false,
        retry_after: None,
    };
    let (owner, name) = full_name.split_once('/').ok_or_else(bad)?;
    let ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.len() <= 100
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if !ok(owner) || !ok(name) {
        return Err(bad());
    }
    Ok(format!("/repos/{owner}/{name}"))
}

fn hook_id_part(hook_id: &str) -> Result<&str, HostError> {
    if !hook_id.is_empty() && hook_id.len() <= 20 && hook_id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(hook_id)
    } else {
        Err(HostError {
            status: Some(404),
            message: format!("'{}' is not a GitHub hook id", cut(hook_id, 40)),
            rate_limited: false,
            retry_after: None,
        })
    }
}

/// GitHub's word for a build state (it has no `running` nor `cancelled`).
pub fn github_state(state: StatusState) -> &'static str {
    match state {
        StatusState::Pending | StatusState::Running => "pending",
        StatusState::Success => "success",
        StatusState::Failure => "failure",
        StatusState::Error | StatusState::Cancelled => "error",
    }
}

fn hook_config(hook: &HookSpec) -> Value {
    json!({
        "url": hook.url,
        "content_type": "json",
        "secret": hook.secret,
        "insecure_ssl": "0",
    })
}

#[async_trait::async_trait]
impl ForgeClient for GitHubClient {
    async fn check(&self) -> Result<Account, HostError> {
        match &self.auth {
            Auth::Token(_) => {
                let answer = self.call(Method::GET, "/user", None).await?;
                let user: WireAccount = answer.json("GET /user")?;
                let scopes = answer
                    .header("x-oauth-scopes")
                    .map(|s| {
                        s.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Account {
                    login: user.login,
                    kind: user.kind.unwrap_or_else(|| "User".into()).to_lowercase(),
                    scopes,
                })
            }
            Auth::App {
                installation_id, ..
            } => {
                let jwt = self.app_jwt()?;
                let answer = self
                    .send(
                        Method::GET,
                        &format!("/app/installations/{installation_id}"),
                        &jwt,
                        None,
                    )
                    .await?;
                let installation: WireInstallation = answer.json("the installation")?;
                let mut scopes: Vec<String> = installation
                    .permissions
                    .iter()
                    .map(|(name, level)| match level.as_str() {
                        Some(level) => format!("{name}:{level}"),
                        None => format!("{name}:{level}"),
                    })
                    .collect();
                scopes.sort();
                Ok(Account {
                    login: installation.account.login,
                    kind: "app_installation".into(),
                    scopes,
                })
            }
        }
    }

    async fn repositories(
        &self,
        page: u32,
        per_page: u32,
        search: Option<&str>,
    ) -> Result<RepoPage, HostError> {
        let page = page.max(1);
        let per_page = per_page.clamp(1, 100);
        let needle = search.map(str::trim).filter(|s| !s.is_empty());
        let Some(needle) = needle else {
            return self.listing(page, per_page).await;
        };
        let needle = needle.to_lowercase();
        let mut found = Vec::new();
        let mut host_page = Some(1);
        let mut read = 0;
        while let Some(p) = host_page {
            if read == SEARCH_PAGES {
                break;
            }
            let listing = self.listing(p, 100).await?;
            read += 1;
            found.extend(
                listing
                    .repositories
                    .into_iter()
                    .filter(|r| r.full_name.to_lowercase().contains(&needle)),
            );
            host_page = listing.next_page;
        }
        let start = (page as usize - 1) * per_page as usize;
        let end = start + per_page as usize;
        let next_page = (found.len() > end).then_some(page + 1);
        let repositories = found
            .into_iter()
            .skip(start)
            .take(per_page as usize)
            .collect();
        Ok(RepoPage {
            repositories,
            next_page,
        })
    }

    async fn repository(&self, full_name: &str) -> Result<HostRepo, HostError> {
        let path = repo_path(full_name)?;
        let answer = self.call(Method::GET, &path, None).await?;
        Ok(answer.json::<WireRepo>("the repository")?.into())
    }

    async fn install_hook(&self, full_name: &str, hook: &HookSpec) -> Result<String, HostError> {
        let path = format!("{}/hooks", repo_path(full_name)?);
        let body = json!({
            "name": "web",
            "active": true,
            "events": ["push"],
            "config": hook_config(hook),
        });
        let answer = self.call(Method::POST, &path, Some(&body)).await?;
        Ok(answer.json::<WireHook>("the new hook")?.id.to_string())
    }

    async fn update_hook(
        &self,
        full_name: &str,
        hook_id: &str,
        hook: &HookSpec,
    ) -> Result<(), HostError> {
        let path = format!("{}/hooks/{}", repo_path(full_name)?, hook_id_part(hook_id)?);
        let body = json!({ "active": true, "config": hook_config(hook) });
        self.call(Method::PATCH, &path, Some(&body)).await?;
        Ok(())
    }

    async fn remove_hook(&self, full_name: &str, hook_id: &str) -> Result<(), HostError> {
        let path = format!("{}/hooks/{}", repo_path(full_name)?, hook_id_part(hook_id)?);
        match self.call(Method::DELETE, &path, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.status == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn set_status(
        &self,
        full_name: &str,
        sha: &str,
        status: &CommitStatus,
    ) -> Result<(), HostError> {
        if !crate::forge::is_sha(sha) {
            return Err(HostError {
                status: Some(422),
                message: format!("'{}' is not a commit id (40 hex digits)", cut(sha, 48)),
                rate_limited: false,
                retry_after: None,
            });
        }
        let path = format!("{}/statuses/{}", repo_path(full_name)?, sha.to_lowercase());
        let body = json!({
            "state": github_state(status.state),
            "context": status.context,
            "description": cut(&status.description, DESCRIPTION_MAX),
            "target_url": status.target_url,
        });
        self.call(Method::POST, &path, Some(&body)).await?;
        Ok(())
    }

    async fn git_credentials(&self) -> Result<(String, String), HostError> {
        let token = match &self.auth {
            Auth::Token(token) => token.clone(),
            Auth::App { .. } => self.installation_token().await?,
        };
        Ok((
            "x-access-token".to_string(),
            token.expose_secret().to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_page_reads_the_link_header() {
        let next_page = |link: &str| {
            let mut h = HeaderMap::new();
            h.insert("link", link.parse().unwrap());
            rest::next_page_from_link(&h)
        };
        let link = "<https://api.github.com/user/repos?per_page=2&page=3&sort=full_name>; rel=\"next\", <https://api.github.com/user/repos?per_page=2&page=5>; rel=\"last\"";
        assert_eq!(next_page(link), Some(3));
        let last = "<https://api.github.com/user/repos?page=1>; rel=\"first\", <https://api.github.com/user/repos?page=4>; rel=\"prev\"";
        assert_eq!(next_page(last), None);
        assert_eq!(next_page(""), None);
        assert_eq!(next_page("garbage"), None);
    }

    #[test]
    fn descriptions_are_cut_on_a_character_boundary() {
        assert_eq!(cut("short", 140), "short");
        let long = "é".repeat(200);
        let c = cut(&long, 140);
        assert_eq!(c.chars().count(), 140);
        assert!(c.ends_with('…'));
        assert_eq!(cut(&"a".repeat(140), 140), "a".repeat(140));
    }

    #[test]
    fn repository_names_are_owner_slash_name() {
        assert_eq!(repo_path("acme/api.v2").unwrap(), "/repos/acme/api.v2");
        for bad in [
            "acme", "acme/", "/api", "a/b/c", "a/..", "a/b?x=1", "a/b c", "ä/b",
        ] {
            assert!(repo_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn states_map_to_githubs_words() {
        assert_eq!(github_state(StatusState::Running), "pending");
        assert_eq!(github_state(StatusState::Cancelled), "error");
        assert_eq!(github_state(StatusState::Failure), "failure");
    }
}
