//! From a namespace's integration to the [`ForgeClient`] that talks to its host (issue 12).

use std::sync::Arc;

use super::client::{ForgeClient, HostCredentials, HostError};
use super::gitea_api::GiteaClient;
use super::github_api::GitHubClient;
use super::gitlab_api::GitLabClient;
use super::rest::RestOptions;
use crate::config::Config;
use crate::db::integrations::IntegrationRow;
use crate::notify::guard::{self, AllowList};

/// The hosts kiln integrates with.
pub const INTEGRATION_PROVIDERS: &[&str] = &["github", "gitlab", "gitea"];

/// The integration's credentials as the clients take them.
pub fn credentials(row: &IntegrationRow) -> Result<HostCredentials, HostError> {
    match row.kind.as_str() {
        "app" => match (row.app_id, row.installation_id) {
            (Some(app_id), Some(installation_id)) if app_id > 0 && installation_id > 0 => {
                Ok(HostCredentials::App {
                    app_id: app_id as u64,
                    private_key: row.secret.clone(),
                    installation_id: installation_id as u64,
                })
            }
            _ => Err(HostError::unreachable(
                "the integration's app_id or installation_id is missing",
            )),
        },
        _ => Ok(HostCredentials::Token {
            token: row.secret.clone(),
        }),
    }
}

/// Checks that the host of `base_url` is one kiln may reach (`KILN_GIT_ALLOW` opens internal
/// addresses, like for clone URLs): the reason when not.
pub async fn check_base_url(allow: &AllowList, base_url: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(base_url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    let host = url.host_str().ok_or("the URL has no host")?;
    guard::check_host(allow, host).await
}

/// The client for the integration's host, after checking its address is one kiln may reach.
pub async fn client(
    config: &Config,
    row: &IntegrationRow,
) -> Result<Arc<dyn ForgeClient>, HostError> {
    check_base_url(&config.git_allow, &row.base_url)
        .await
        .map_err(|reason| HostError::unreachable(format!("{}: {reason}", row.base_url)))?;
    connect(config, &row.provider, &row.base_url, credentials(row)?)
}

/// The client for `provider` at `base_url` with `credentials`: GitHub through octocrab, GitLab
/// and Gitea through reqwest, guarded like clone URLs (`KILN_GIT_ALLOW`, `KILN_OUTBOUND_PROXY`).
pub fn connect(
    config: &Config,
    provider: &str,
    base_url: &str,
    credentials: HostCredentials,
) -> Result<Arc<dyn ForgeClient>, HostError> {
    let options = RestOptions::from_config(config);
    let token = |c: HostCredentials| match c {
        HostCredentials::Token { token } => Ok(token),
        HostCredentials::App { .. } => Err(HostError::unreachable(format!(
            "{provider} takes a token, not a GitHub App"
        ))),
    };
    Ok(match provider {
        "github" => Arc::new(GitHubClient::new(base_url, credentials)?),
        "gitlab" => Arc::new(GitLabClient::with_options(
            base_url,
            token(credentials)?,
            &options,
        )?),
        "gitea" => Arc::new(GiteaClient::with_options(
            base_url,
            token(credentials)?,
            &options,
        )?),
        other => {
            return Err(HostError::unreachable(format!(
                "kiln has no integration with {other}"
            )));
        }
    })
}
