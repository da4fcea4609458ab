//! From a namespace's integration to the [`ForgeClient`] that talks to its host (issue 12).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

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
    CLIENTS.get_or_connect(&row.id, &fingerprint(row), || {
        connect(config, &row.provider, &row.base_url, credentials(row)?)
    })
}

/// The clients made so far, one per integration: a GitHub App's installation token is minted once
/// and reused until it nears its expiry (not once per status), and each client keeps its
/// connections. An integration whose host or credentials changed gets a new client.
static CLIENTS: LazyLock<ClientCache> = LazyLock::new(ClientCache::default);

/// Drops the client of a deleted integration.
pub fn forget(integration_id: &str) {
    CLIENTS.forget(integration_id);
}

/// What the client of an integration was made from: its host and credentials, hashed (the cache
/// keeps no secret in clear beside the client itself).
fn fingerprint(row: &IntegrationRow) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [
        row.provider.as_str(),
        row.kind.as_str(),
        row.base_url.as_str(),
        &row.app_id.unwrap_or_default().to_string(),
        &row.installation_id.unwrap_or_default().to_string(),
        row.secret.as_str(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// A client and the fingerprint of the integration it was made from.
type Made = (String, Arc<dyn ForgeClient>);

/// Clients by integration id.
#[derive(Default)]
pub struct ClientCache(Mutex<HashMap<String, Made>>);

impl ClientCache {
    /// The client kept for `id` if it was made from `fingerprint`, else a new one from `connect`
    /// (kept in its place).
    pub fn get_or_connect(
        &self,
        id: &str,
        fingerprint: &str,
        connect: impl FnOnce() -> Result<Arc<dyn ForgeClient>, HostError>,
    ) -> Result<Arc<dyn ForgeClient>, HostError> {
        if let Some((made_from, client)) = self.0.lock().expect("client cache").get(id)
            && made_from == fingerprint
        {
            return Ok(client.clone());
        }
        let client = connect()?;
        self.0
            .lock()
            .expect("client cache")
            .insert(id.to_string(), (fingerprint.to_string(), client.clone()));
        Ok(client)
    }

    /// Drops the client kept for `id`, if any.
    pub fn forget(&self, id: &str) {
        self.0.lock().expect("client cache").remove(id);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn gitea(token: &str) -> Result<Arc<dyn ForgeClient>, HostError> {
        Ok(Arc::new(GiteaClient::new(
            "https://gitea.example",
            token.to_string(),
        )?))
    }

    #[test]
    fn a_client_is_reused_until_its_integration_changes() {
        let cache = ClientCache::default();
        let first = cache.get_or_connect("i1", "f1", || gitea("t1")).unwrap();
        let again = cache
            .get_or_connect("i1", "f1", || {
                panic!("a second client for the same integration")
            })
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let changed = cache.get_or_connect("i1", "f2", || gitea("t2")).unwrap();
        assert!(!Arc::ptr_eq(&first, &changed));
        let other = cache.get_or_connect("i2", "f2", || gitea("t2")).unwrap();
        assert!(!Arc::ptr_eq(&changed, &other));
        // A failed connect keeps nothing.
        let failed = cache.get_or_connect("i3", "f3", || Err(HostError::unreachable("refused")));
        assert!(failed.is_err());
        assert!(cache.0.lock().unwrap().get("i3").is_none());
        // A deleted integration's client is dropped; the others stay.
        cache.forget("i1");
        assert!(cache.0.lock().unwrap().get("i1").is_none());
        let kept = cache
            .get_or_connect("i2", "f2", || panic!("i2 was kept"))
            .unwrap();
        assert!(Arc::ptr_eq(&other, &kept));
        cache.forget("never-made");
    }

    #[test]
    fn the_fingerprint_changes_with_the_host_or_the_credentials() {
        let row = IntegrationRow {
            id: "i".into(),
            namespace_id: "n".into(),
            provider: "github".into(),
            kind: "token".into(),
            base_url: "https://api.github.com".into(),
            secret: "ghp_one".into(),
            app_id: None,
            installation_id: None,
            account: None,
            account_kind: None,
            scopes: vec![],
            last_checked_at: None,
            last_error: None,
            created_at: String::new(),
            updated_at: String::new(),
        };
        let base = fingerprint(&row);
        assert_eq!(base, fingerprint(&row));
        for changed in [
            IntegrationRow {
                secret: "ghp_two".into(),
                ..row.clone()
            },
            IntegrationRow {
                base_url: "https://ghe.example/api/v3".into(),
                ..row.clone()
            },
            IntegrationRow {
                kind: "app".into(),
                app_id: Some(1),
                installation_id: Some(2),
                ..row.clone()
            },
        ] {
            assert_ne!(base, fingerprint(&changed));
        }
        assert!(!base.contains("ghp_one"));
    }
}
