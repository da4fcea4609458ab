//! From a namespace's integration to the [`ForgeClient`] that talks to its host (issue 12).

use std::sync::Arc;

use super::client::{ForgeClient, HostCredentials, HostError};
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
    allow: &AllowList,
    row: &IntegrationRow,
) -> Result<Arc<dyn ForgeClient>, HostError> {
    check_base_url(allow, &row.base_url)
        .await
        .map_err(|reason| HostError::unreachable(format!("{}: {reason}", row.base_url)))?;
    connect(&row.provider, &row.base_url, credentials(row)?)
}

/// The client for `provider` at `base_url` with `credentials` (the address already checked).
pub fn connect(
    provider: &str,
    base_url: &str,
    credentials: HostCredentials,
) -> Result<Arc<dyn ForgeClient>, HostError> {
    let _ = (base_url, &credentials);
    Err(HostError::unreachable(format!(
        "no client for {provider} in this build"
    )))
}
