//! Gitea's and Forgejo's REST API (v1) for one integration: a token sent as
//! `Authorization: token T`, against an instance (`https://gitea.example.com`, API at
//! `{base}/api/v1`).
//!
//! Listing: `GET /user/repos` (the user's own repositories and those of the organizations and
//! teams they are in); with a search, `GET /repos/search?q=` (the repositories the token can
//! see whose name holds the words, public ones of others included: Gitea has no search limited
//! to membership). The next page comes from `Link`, else from `X-Total-Count`.

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::client::{
    Account, CommitStatus, ForgeClient, HookSpec, HostError, HostRepo, RepoPage, StatusState,
};
use super::rest::{self, Rest, RestOptions, cut};

/// The longest description kiln sends (Gitea keeps it as text; GitHub's 140 would be too short
/// for a failure reason, GitLab's 255 is plenty).
const MAX_DESCRIPTION: usize = 255;
/// Gitea's default `MAX_RESPONSE_ITEMS`.
const MAX_PER_PAGE: u32 = 50;

pub struct GiteaClient {
    rest: Rest,
    token: secrecy::SecretString,
}

impl std::fmt::Debug for GiteaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GiteaClient")
            .field("rest", &self.rest)
            .finish()
    }
}

#[derive(Deserialize)]
struct User {
    login: String,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
    clone_url: String,
    html_url: String,
    #[serde(default)]
    private: bool,
    default_branch: Option<String>,
}

impl Repository {
    fn into_repo(self) -> HostRepo {
        HostRepo {
            full_name: self.full_name,
            clone_url: self.clone_url,
            html_url: self.html_url,
            private: self.private,
            default_branch: self.default_branch.filter(|b| !b.is_empty()),
        }
    }
}

/// `GET /repos/search`'s answer.
#[derive(Deserialize)]
struct SearchResults {
    #[serde(default)]
    data: Vec<Repository>,
}

#[derive(Deserialize)]
struct Hook {
    id: u64,
}

impl GiteaClient {
    /// A client for the Gitea or Forgejo instance at `base_url`, guarded with the default
    /// options (no internal address allowed).
    pub fn new(base_url: &str, token: String) -> Result<GiteaClient, HostError> {
        Self::with_options(base_url, token, &RestOptions::default())
    }

    pub fn with_options(
        base_url: &str,
        token: String,
        options: &RestOptions,
    ) -> Result<GiteaClient, HostError> {
        let rest = Rest::new(
            base_url,
            "api/v1",
            "authorization",
            format!("token {token}"),
            &token,
            options,
        )?;
        Ok(GiteaClient {
            rest,
            token: token.into(),
        })
    }

    /// `owner/name` split in its two parts.
    fn owner_name(full_name: &str) -> Result<(&str, &str), HostError> {
        match full_name.split_once('/') {
            Some((owner, name)) if !name.contains('/') => {
                rest::check_name_part(owner)?;
                rest::check_name_part(name)?;
                Ok((owner, name))
            }
            _ => Err(HostError {
                status: None,
                message: format!(
                    "'{}' is not a repository's full name (owner/name)",
                    rest::one_line(full_name)
                ),
                rate_limited: false,
                retry_after: None,
            }),
        }
    }

    fn hook_config(hook: &HookSpec) -> serde_json::Value {
        json!({
            "url": hook.url,
            "content_type": "json",
            "secret": hook.secret,
        })
    }
}

/// Gitea's word for a build state (it has no running nor cancelled).
pub fn gitea_state(state: StatusState) -> &'static str {
    match state {
        StatusState::Pending | StatusState::Running => "pending",
        StatusState::Success => "success",
        StatusState::Failure => "failure",
        StatusState::Error | StatusState::Cancelled => "error",
    }
}

#[async_trait::async_trait]
impl ForgeClient for GiteaClient {
    /// Gitea reports no scopes for a token through its API: they are always empty.
    async fn check(&self) -> Result<Account, HostError> {
        let user: User = self
            .rest
            .call_ok(Method::GET, &["user"], &[], None)
            .await?
            .json("a user")?;
        Ok(Account {
            login: user.login,
            kind: "user".to_string(),
            scopes: Vec::new(),
        })
    }

    async fn repositories(
        &self,
        page: u32,
        per_page: u32,
        search: Option<&str>,
    ) -> Result<RepoPage, HostError> {
        let page = page.max(1);
        let limit = per_page.clamp(1, MAX_PER_PAGE);
        let mut query = vec![("page", page.to_string()), ("limit", limit.to_string())];
        let search = search.map(str::trim).filter(|s| !s.is_empty());
        let (answer, repositories) = match search {
            None => {
                let answer = self
                    .rest
                    .call_ok(Method::GET, &["user", "repos"], &query, None)
                    .await?;
                let repos: Vec<Repository> = answer.json("a list of repositories")?;
                (answer, repos)
            }
            Some(s) => {
                query.insert(0, ("q", s.to_string()));
                query.push(("sort", "alpha".to_string()));
                query.push(("order", "asc".to_string()));
                let answer = self
                    .rest
                    .call_ok(Method::GET, &["repos", "search"], &query, None)
                    .await?;
                let found: SearchResults = answer.json("search results")?;
                (answer, found.data)
            }
        };
        let next_page = rest::next_page_from_link(&answer.headers)
            .or_else(|| {
                let total = answer
                    .header("x-total-count")
                    .and_then(|v| v.trim().parse::<u64>().ok())?;
                (u64::from(page) * u64::from(limit) < total).then_some(page + 1)
            })
            .filter(|n| *n > page);
        Ok(RepoPage {
            repositories: repositories
                .into_iter()
                .map(Repository::into_repo)
                .collect(),
            next_page,
        })
    }

    async fn repository(&self, full_name: &str) -> Result<HostRepo, HostError> {
        let (owner, name) = Self::owner_name(full_name)?;
        let r: Repository = self
            .rest
            .call_ok(Method::GET, &["repos", owner, name], &[], None)
            .await?
            .json("a repository")?;
        Ok(r.into_repo())
    }

    async fn install_hook(&self, full_name: &str, hook: &HookSpec) -> Result<String, HostError> {
        let (owner, name) = Self::owner_name(full_name)?;
        let body = json!({
            "type": "gitea",
            "config": Self::hook_config(hook),
            "events": ["push"],
            "active": true,
        });
        let created: Hook = self
            .rest
            .call_ok(
                Method::POST,
                &["repos", owner, name, "hooks"],
                &[],
                Some(&body),
            )
            .await?
            .json("a hook")?;
        Ok(created.id.to_string())
    }

    async fn update_hook(
        &self,
        full_name: &str,
        hook_id: &str,
        hook: &HookSpec,
    ) -> Result<(), HostError> {
        let (owner, name) = Self::owner_name(full_name)?;
        rest::check_name_part(hook_id)?;
        let body = json!({
            "config": Self::hook_config(hook),
            "events": ["push"],
            "active": true,
        });
        self.rest
            .call_ok(
                Method::PATCH,
                &["repos", owner, name, "hooks", hook_id],
                &[],
                Some(&body),
            )
            .await?;
        Ok(())
    }

    async fn remove_hook(&self, full_name: &str, hook_id: &str) -> Result<(), HostError> {
        let (owner, name) = Self::owner_name(full_name)?;
        rest::check_name_part(hook_id)?;
        let answer = self
            .rest
            .call(
                Method::DELETE,
                &["repos", owner, name, "hooks", hook_id],
                &[],
                None,
            )
            .await?;
        if answer.is_success() || answer.status == 404 {
            Ok(())
        } else {
            Err(self.rest.error(&answer))
        }
    }

    async fn set_status(
        &self,
        full_name: &str,
        sha: &str,
        status: &CommitStatus,
    ) -> Result<(), HostError> {
        let (owner, name) = Self::owner_name(full_name)?;
        rest::check_name_part(sha)?;
        let body = json!({
            "state": gitea_state(status.state),
            "context": status.context,
            "description": cut(&status.description, MAX_DESCRIPTION),
            "target_url": status.target_url,
        });
        self.rest
            .call_ok(
                Method::POST,
                &["repos", owner, name, "statuses", sha],
                &[],
                Some(&body),
            )
            .await?;
        Ok(())
    }

    /// Gitea takes a token as the password of any user name over https.
    async fn git_credentials(&self) -> Result<(String, String), HostError> {
        use secrecy::ExposeSecret;
        Ok(("kiln".to_string(), self.token.expose_secret().to_string()))
    }
}
