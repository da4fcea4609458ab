//! A namespace's integrations with git hosts (issue 12): `PUT|GET|DELETE
//! /namespaces/{ns}/integrations/{github|gitlab|gitea}` and the repositories the credentials see.
//! The secret (token or private key) is write-only: no answer ever holds it.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::db::{self, integrations::IntegrationRow, namespaces::NamespaceRow};
use crate::forge::client::{ForgeClient, HostCredentials, HostError, HostRepo};
use crate::forge::hosts::{self, INTEGRATION_PROVIDERS};
use crate::http::auth::{Caller, Role};
use crate::http::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};

#[derive(Debug, Serialize)]
pub struct IntegrationView {
    pub provider: String,
    /// `token` or `app`.
    pub kind: String,
    /// The host's API base URL.
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<i64>,
    /// Who the credentials are, as the host said at the last check.
    pub account: Option<String>,
    pub account_kind: Option<String>,
    pub scopes: Vec<String>,
    pub last_checked_at: Option<String>,
    /// What the host answered the last time a call failed (None: the last one worked).
    pub last_error: Option<String>,
    pub created_at: String,
}

impl From<IntegrationRow> for IntegrationView {
    fn from(r: IntegrationRow) -> Self {
        IntegrationView {
            provider: r.provider,
            kind: r.kind,
            url: r.base_url,
            app_id: r.app_id,
            installation_id: r.installation_id,
            account: r.account,
            account_kind: r.account_kind,
            scopes: r.scopes,
            last_checked_at: r.last_checked_at,
            last_error: r.last_error,
            created_at: r.created_at,
        }
    }
}

/// The body of `PUT …/integrations/{provider}`: GitHub `{kind: "token", token}` or `{kind: "app",
/// app_id, private_key, installation_id}`; GitLab and Gitea `{url, token}`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutIntegration {
    pub kind: Option<String>,
    pub token: Option<String>,
    pub url: Option<String>,
    pub app_id: Option<u64>,
    pub private_key: Option<String>,
    pub installation_id: Option<u64>,
}

impl std::fmt::Debug for PutIntegration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutIntegration")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("app_id", &self.app_id)
            .field("installation_id", &self.installation_id)
            .finish_non_exhaustive()
    }
}

/// What a PUT asks for, checked.
struct Wanted {
    kind: &'static str,
    base_url: String,
    credentials: HostCredentials,
    /// The field a refusal of the credentials by the host is about.
    secret_field: &'static str,
}

const MAX_TOKEN: usize = 1024;
const MAX_PRIVATE_KEY: usize = 16 * 1024;
const MAX_URL: usize = 2048;

fn check_provider(provider: &str) -> ApiResult<()> {
    if INTEGRATION_PROVIDERS.contains(&provider) {
        Ok(())
    } else {
        Err(ApiError::not_found(&format!(
            "integration provider '{}' (one of: {})",
            crate::domain::escape(provider),
            INTEGRATION_PROVIDERS.join(", ")
        )))
    }
}

fn check_token(token: Option<String>) -> ApiResult<String> {
    let token = token.ok_or_else(|| ApiError::invalid("token", "required", "token is required"))?;
    if token.is_empty() || token.len() > MAX_TOKEN {
        return Err(ApiError::invalid(
            "token",
            "invalid_length",
            format!("token must be 1 to {MAX_TOKEN} bytes"),
        ));
    }
    if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ApiError::invalid(
            "token",
            "invalid_character",
            "token must not contain spaces or control characters",
        ));
    }
    Ok(token)
}

fn absent<T>(value: &Option<T>, field: &str, why: &str) -> ApiResult<()> {
    match value {
        Some(_) => Err(ApiError::invalid(
            field,
            "not_allowed",
            format!("{field} is not taken {why}"),
        )),
        None => Ok(()),
    }
}

/// An integration's base URL (GitLab, Gitea): http(s), a host, no credentials, query or fragment.
fn check_url(url: Option<String>) -> ApiResult<String> {
    let url = url.ok_or_else(|| {
        ApiError::invalid("url", "required", "url (the host's base URL) is required")
    })?;
    let invalid = |m: &str| ApiError::invalid("url", "invalid_url", m.to_string());
    if url.len() > MAX_URL {
        return Err(invalid("url is too long"));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid("url must not contain spaces or control characters"));
    }
    let parsed =
        reqwest::Url::parse(&url).map_err(|e| invalid(&format!("url is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid(
            "url must be an http:// or https:// URL with a host",
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            "url must not hold credentials: give the token in `token`",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("url must not have a query or a fragment"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// A PEM RSA private key (PKCS#1 `RSA PRIVATE KEY`, as GitHub gives it, or PKCS#8) that opens.
fn is_rsa_private_key(pem_text: &str) -> bool {
    use aws_lc_rs::signature::RsaKeyPair;
    match pem::parse(pem_text) {
        Ok(p) if p.tag() == "RSA PRIVATE KEY" => RsaKeyPair::from_der(p.contents()).is_ok(),
        Ok(p) if p.tag() == "PRIVATE KEY" => RsaKeyPair::from_pkcs8(p.contents()).is_ok(),
        _ => false,
    }
}

fn wanted(app: &App, provider: &str, body: PutIntegration) -> ApiResult<Wanted> {
    let kind = body.kind.as_deref().unwrap_or("token");
    match (provider, kind) {
        ("github", "token") => {
            absent(
                &body.url,
                "url",
                "for github (KILN_GITHUB_API_URL sets the API)",
            )?;
            absent(&body.app_id, "app_id", "with kind token")?;
            absent(&body.private_key, "private_key", "with kind token")?;
            absent(&body.installation_id, "installation_id", "with kind token")?;
            Ok(Wanted {
                kind: "token",
                base_url: app.config.github_api_url.clone(),
                credentials: HostCredentials::Token {
                    token: check_token(body.token)?,
                },
                secret_field: "token",
            })
        }
        ("github", "app") => {
            absent(
                &body.url,
                "url",
                "for github (KILN_GITHUB_API_URL sets the API)",
            )?;
            absent(
                &body.token,
                "token",
                "with kind app (kiln mints installation tokens)",
            )?;
            let id = |v: Option<u64>, field: &str| match v {
                Some(n) if (1..=i64::MAX as u64).contains(&n) => Ok(n),
                Some(_) => Err(ApiError::invalid(
                    field,
                    "out_of_range",
                    format!("{field} must be a positive number"),
                )),
                None => Err(ApiError::invalid(
                    field,
                    "required",
                    format!("{field} is required with kind app"),
                )),
            };
            let app_id = id(body.app_id, "app_id")?;
            let installation_id = id(body.installation_id, "installation_id")?;
            let key = body.private_key.ok_or_else(|| {
                ApiError::invalid(
                    "private_key",
                    "required",
                    "private_key is required with kind app",
                )
            })?;
            if key.len() > MAX_PRIVATE_KEY || !is_rsa_private_key(&key) {
                return Err(ApiError::invalid(
                    "private_key",
                    "invalid_key",
                    "private_key must be the GitHub App's RSA private key (PEM)",
                ));
            }
            Ok(Wanted {
                kind: "app",
                base_url: app.config.github_api_url.clone(),
                credentials: HostCredentials::App {
                    app_id,
                    private_key: key,
                    installation_id,
                },
                secret_field: "private_key",
            })
        }
        ("github", _) => Err(ApiError::invalid(
            "kind",
            "invalid_value",
            "kind must be token or app",
        )),
        (_, "token") => {
            absent(&body.app_id, "app_id", &format!("for {provider}"))?;
            absent(&body.private_key, "private_key", &format!("for {provider}"))?;
            absent(
                &body.installation_id,
                "installation_id",
                &format!("for {provider}"),
            )?;
            let base_url = check_url(body.url)?;
            Ok(Wanted {
                kind: "token",
                base_url,
                credentials: HostCredentials::Token {
                    token: check_token(body.token)?,
                },
                secret_field: "token",
            })
        }
        _ => Err(ApiError::invalid(
            "kind",
            "invalid_value",
            format!("kind must be token for {provider}"),
        )),
    }
}

/// The API error for a host's failure: its 401/403 refuse the credentials (422 naming `field`),
/// anything else is a bad gateway (502) with the host's message.
pub fn host_error(provider: &str, e: &HostError, field: Option<&str>) -> ApiError {
    match (e.status, field) {
        (Some(401 | 403), Some(field)) if !e.rate_limited => ApiError::invalid(
            field,
            "refused_by_host",
            format!("{provider} refused the credentials: {}", e.message),
        ),
        _ => {
            let (code, what) = if e.rate_limited {
                ("host_rate_limited", "rate limit reached")
            } else if e.status.is_none() {
                ("host_unreachable", "cannot be reached")
            } else {
                ("host_error", "answered an error")
            };
            let status = e.status.map(|s| format!(" ({s})")).unwrap_or_default();
            let err = ApiError::new(
                StatusCode::BAD_GATEWAY,
                code,
                format!("{provider} {what}{status}: {}", e.message),
            );
            match e.retry_after {
                Some(d) => err.retry_after(d.as_secs().max(1)),
                None => err,
            }
        }
    }
}

/// The namespace, after checking the caller may act on it with `role`.
pub async fn load_namespace(
    app: &App,
    caller: &Caller,
    ns: &str,
    role: Role,
) -> ApiResult<NamespaceRow> {
    if !caller.sees(ns) {
        return Err(ApiError::not_found(&format!("namespace {ns}")));
    }
    caller.require(role, Some(ns))?;
    db::namespaces::by_name(&app.db, ns)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("namespace {ns}")))
}

/// The namespace's integration with `provider`: 404 when it has none.
pub async fn load_integration(
    app: &App,
    namespace: &NamespaceRow,
    provider: &str,
) -> ApiResult<IntegrationRow> {
    db::integrations::get(&app.db, &app.secrets, &namespace.id, provider)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(&format!(
                "{provider} integration of namespace {}",
                namespace.name
            ))
        })
}

/// The client of an integration; a failure is recorded on it and answered as [`host_error`].
pub async fn client_for(
    app: &App,
    integration: &IntegrationRow,
) -> ApiResult<std::sync::Arc<dyn ForgeClient>> {
    match hosts::client(&app.config, integration).await {
        Ok(c) => Ok(c),
        Err(e) => {
            db::integrations::record_check(&app.db, &integration.id, Some(&e.message)).await?;
            Err(host_error(&integration.provider, &e, None))
        }
    }
}

pub async fn put_integration(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, provider)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<PutIntegration>,
) -> ApiResult<axum::Json<IntegrationView>> {
    Ok(axum::Json(put(&app, &caller, &ns, &provider, body).await?))
}

/// Sets the namespace's credentials for `provider` (admin role), after the host accepted them.
pub async fn put(
    app: &App,
    caller: &Caller,
    ns: &str,
    provider: &str,
    body: PutIntegration,
) -> ApiResult<IntegrationView> {
    let namespace = load_namespace(app, caller, ns, Role::Admin).await?;
    check_provider(provider)?;
    let w = wanted(app, provider, body)?;
    let secret = match &w.credentials {
        HostCredentials::Token { token } => token.clone(),
        HostCredentials::App { private_key, .. } => private_key.clone(),
    };
    crate::secrets::mask::register_all([secret.as_str()]);
    if let Err(reason) = hosts::check_base_url(&app.config.git_allow, &w.base_url).await {
        return Err(if provider == "github" {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "address_not_allowed",
                format!("KILN_GITHUB_API_URL: {reason}"),
            )
        } else {
            ApiError::invalid("url", "address_not_allowed", reason)
        });
    }
    let (app_id, installation_id) = match &w.credentials {
        HostCredentials::App {
            app_id,
            installation_id,
            ..
        } => (Some(*app_id as i64), Some(*installation_id as i64)),
        HostCredentials::Token { .. } => (None, None),
    };
    let client = hosts::connect(&app.config, provider, &w.base_url, w.credentials)
        .map_err(|e| host_error(provider, &e, None))?;
    let account = client
        .check()
        .await
        .map_err(|e| host_error(provider, &e, Some(w.secret_field)))?;
    let row = db::integrations::upsert(
        &app.db,
        &app.secrets,
        &db::integrations::NewIntegration {
            namespace_id: &namespace.id,
            provider,
            kind: w.kind,
            base_url: &w.base_url,
            secret: &secret,
            app_id,
            installation_id,
            account: &account.login,
            account_kind: &account.kind,
            scopes: &account.scopes,
        },
    )
    .await?;
    tracing::info!(namespace = %ns, provider, kind = w.kind, account = %account.login, "integration set");
    Ok(row.into())
}

pub async fn get_integration(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, provider)): ApiPath<(String, String)>,
) -> ApiResult<axum::Json<IntegrationView>> {
    let namespace = load_namespace(&app, &caller, &ns, Role::Read).await?;
    check_provider(&provider)?;
    Ok(axum::Json(
        load_integration(&app, &namespace, &provider).await?.into(),
    ))
}

pub async fn delete_integration(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, provider)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    delete(&app, &caller, &ns, &provider).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes the namespace's credentials for `provider` (admin role). Sources linked through it
/// keep working as manually linked ones (their hooks stay on the host); no more statuses are set.
pub async fn delete(app: &App, caller: &Caller, ns: &str, provider: &str) -> ApiResult<()> {
    let namespace = load_namespace(app, caller, ns, Role::Admin).await?;
    check_provider(provider)?;
    let Some(id) = db::integrations::delete(&app.db, &namespace.id, provider).await? else {
        return Err(ApiError::not_found(&format!(
            "{provider} integration of namespace {ns}"
        )));
    };
    // Its client (and a GitHub App's installation token) goes with it.
    crate::forge::hosts::forget(&id);
    tracing::info!(namespace = %ns, provider, "integration removed");
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoriesQuery {
    pub page: Option<u32>,
    pub per_page: Option<u32>,
    pub search: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RepositoriesView {
    pub repositories: Vec<HostRepo>,
    pub next_page: Option<u32>,
}

pub async fn list_repositories(
    State(app): State<App>,
    caller: Caller,
    ApiPath((ns, provider)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<RepositoriesQuery>,
) -> ApiResult<axum::Json<RepositoriesView>> {
    Ok(axum::Json(
        repositories(&app, &caller, &ns, &provider, q).await?,
    ))
}

/// One page of the repositories the namespace's credentials for `provider` see (read role).
pub async fn repositories(
    app: &App,
    caller: &Caller,
    ns: &str,
    provider: &str,
    q: RepositoriesQuery,
) -> ApiResult<RepositoriesView> {
    let namespace = load_namespace(app, caller, ns, Role::Read).await?;
    check_provider(provider)?;
    let page = q.page.unwrap_or(1);
    if !(1..=10_000).contains(&page) {
        return Err(ApiError::invalid(
            "page",
            "out_of_range",
            "page must be 1 to 10000",
        ));
    }
    let per_page = q.per_page.unwrap_or(30);
    if !(1..=100).contains(&per_page) {
        return Err(ApiError::invalid(
            "per_page",
            "out_of_range",
            "per_page must be 1 to 100",
        ));
    }
    let search = q.search.as_deref().map(str::trim).filter(|s| !s.is_empty());
    if let Some(s) = search {
        crate::domain::check_length_and_controls("search", s, 200, "search ")?;
    }
    let integration = load_integration(app, &namespace, provider).await?;
    let client = client_for(app, &integration).await?;
    match client.repositories(page, per_page, search).await {
        Ok(p) => Ok(RepositoriesView {
            repositories: p.repositories,
            next_page: p.next_page,
        }),
        Err(e) => {
            db::integrations::record_check(&app.db, &integration.id, Some(&e.message)).await?;
            Err(host_error(provider, &e, None))
        }
    }
}
