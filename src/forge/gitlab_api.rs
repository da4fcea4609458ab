//! GitLab's REST API (v4) for one integration: a personal, group or project access token sent as
//! `PRIVATE-TOKEN`, against a GitLab instance (`https://gitlab.example.com`, API at
//! `{base}/api/v4`). A project is named by its URL-encoded `path_with_namespace` in every call
//! (`/projects/group%2Fsub%2Fapp/hooks`), as GitLab allows, so no id has to be looked up first.

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::client::{
    Account, CommitStatus, ForgeClient, HookSpec, HostError, HostRepo, RepoPage, StatusState,
};
use super::rest::{self, Rest, RestOptions, cut};

/// GitLab keeps a commit status's description to this many characters.
const MAX_DESCRIPTION: usize = 255;
/// GitLab's largest page.
const MAX_PER_PAGE: u32 = 100;

pub struct GitLabClient {
    rest: Rest,
    token: secrecy::SecretString,
}

impl std::fmt::Debug for GitLabClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitLabClient")
            .field("rest", &self.rest)
            .finish()
    }
}

#[derive(Deserialize)]
struct User {
    username: String,
    #[serde(default)]
    bot: bool,
}

#[derive(Deserialize)]
struct TokenSelf {
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Deserialize)]
struct Project {
    path_with_namespace: String,
    http_url_to_repo: String,
    web_url: String,
    /// `public`, `internal` or `private`.
    visibility: Option<String>,
    default_branch: Option<String>,
}

impl Project {
    fn into_repo(self) -> HostRepo {
        HostRepo {
            full_name: self.path_with_namespace,
            clone_url: self.http_url_to_repo,
            html_url: self.web_url,
            // Only a project anyone may read is public; an `internal` one needs a sign-in.
            private: self.visibility.as_deref() != Some("public"),
            default_branch: self.default_branch,
        }
    }
}

#[derive(Deserialize)]
struct Hook {
    id: u64,
}

impl GitLabClient {
    /// A client for the GitLab instance at `base_url`, guarded with the default options (no
    /// internal address allowed).
    pub fn new(base_url: &str, token: String) -> Result<GitLabClient, HostError> {
        Self::with_options(base_url, token, &RestOptions::default())
    }

    pub fn with_options(
        base_url: &str,
        token: String,
        options: &RestOptions,
    ) -> Result<GitLabClient, HostError> {
        let rest = Rest::new(
            base_url,
            "api/v4",
            "private-token",
            token.clone(),
            &token,
            options,
        )?;
        Ok(GitLabClient {
            rest,
            token: token.into(),
        })
    }

    fn project(full_name: &str) -> Result<&str, HostError> {
        for part in full_name.split('/') {
            rest::check_name_part(part)?;
        }
        if !full_name.contains('/') {
            return Err(HostError {
                status: None,
                message: format!(
                    "'{}' is not a project's full path (group/project)",
                    rest::one_line(full_name)
                ),
                rate_limited: false,
                retry_after: None,
            });
        }
        Ok(full_name)
    }

    fn hook_body(hook: &HookSpec) -> serde_json::Value {
        json!({
            "url": hook.url,
            "token": hook.secret,
            "push_events": true,
            "tag_push_events": true,
            "enable_ssl_verification": true,
        })
    }
}

/// GitLab's word for a build state.
pub fn gitlab_state(state: StatusState) -> &'static str {
    match state {
        StatusState::Pending => "pending",
        StatusState::Running => "running",
        StatusState::Success => "success",
        StatusState::Failure | StatusState::Error => "failed",
        StatusState::Cancelled => "canceled",
    }
}

#[async_trait::async_trait]
impl ForgeClient for GitLabClient {
    async fn check(&self) -> Result<Account, HostError> {
        let user: User = self
            .rest
            .call_ok(Method::GET, &["user"], &[], None)
            .await?
            .json("a user")?;
        // A token may not read itself (older GitLab, or a token without `read_api`/`api`):
        // the scopes are then unknown, which is no reason to refuse the token.
        let answer = self
            .rest
            .call(Method::GET, &["personal_access_tokens", "self"], &[], None)
            .await?;
        let scopes = match answer.status {
            s if (200..300).contains(&s) => answer.json::<TokenSelf>("a token")?.scopes,
            403 | 404 => Vec::new(),
            _ => return Err(self.rest.error(&answer)),
        };
        Ok(Account {
            login: user.username,
            kind: if user.bot { "project_bot" } else { "user" }.to_string(),
            scopes,
        })
    }

    async fn repositories(
        &self,
        page: u32,
        per_page: u32,
        search: Option<&str>,
    ) -> Result<RepoPage, HostError> {
        let page = page.max(1);
        let mut query = vec![
            ("membership", "true".to_string()),
            ("per_page", per_page.clamp(1, MAX_PER_PAGE).to_string()),
            ("page", page.to_string()),
            ("order_by", "path".to_string()),
            ("sort", "asc".to_string()),
        ];
        if let Some(s) = search.map(str::trim).filter(|s| !s.is_empty()) {
            query.push(("search", s.to_string()));
            // Match the group's path too, not only the project's name.
            query.push(("search_namespaces", "true".to_string()));
        }
        let answer = self
            .rest
            .call_ok(Method::GET, &["projects"], &query, None)
            .await?;
        let projects: Vec<Project> = answer.json("a list of projects")?;
        let next_page = rest::next_page_from_link(&answer.headers).or_else(|| {
            answer
                .header("x-next-page")
                .and_then(|v| v.trim().parse::<u32>().ok())
        });
        Ok(RepoPage {
            repositories: projects.into_iter().map(Project::into_repo).collect(),
            next_page: next_page.filter(|n| *n > page),
        })
    }

    async fn repository(&self, full_name: &str) -> Result<HostRepo, HostError> {
        let project = Self::project(full_name)?;
        let p: Project = self
            .rest
            .call_ok(Method::GET, &["projects", project], &[], None)
            .await?
            .json("a project")?;
        Ok(p.into_repo())
    }

    async fn install_hook(&self, full_name: &str, hook: &HookSpec) -> Result<String, HostError> {
        let project = Self::project(full_name)?;
        let created: Hook = self
            .rest
            .call_ok(
                Method::POST,
                &["projects", project, "hooks"],
                &[],
                Some(&Self::hook_body(hook)),
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
        let project = Self::project(full_name)?;
        rest::check_name_part(hook_id)?;
        self.rest
            .call_ok(
                Method::PUT,
                &["projects", project, "hooks", hook_id],
                &[],
                Some(&Self::hook_body(hook)),
            )
            .await?;
        Ok(())
    }

    async fn remove_hook(&self, full_name: &str, hook_id: &str) -> Result<(), HostError> {
        let project = Self::project(full_name)?;
        rest::check_name_part(hook_id)?;
        let answer = self
            .rest
            .call(
                Method::DELETE,
                &["projects", project, "hooks", hook_id],
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
        let project = Self::project(full_name)?;
        rest::check_name_part(sha)?;
        let body = json!({
            "state": gitlab_state(status.state),
            "name": status.context,
            "description": cut(&status.description, MAX_DESCRIPTION),
            "target_url": status.target_url,
        });
        let answer = self
            .rest
            .call(
                Method::POST,
                &["projects", project, "statuses", sha],
                &[],
                Some(&body),
            )
            .await?;
        if answer.is_success() {
            return Ok(());
        }
        let error = self.rest.error(&answer);
        // The status is already in that state (GitLab refuses running → running): done.
        if answer.status == 400 && error.message.contains("Cannot transition status") {
            return Ok(());
        }
        Err(error)
    }

    async fn git_credentials(&self) -> Result<(String, String), HostError> {
        use secrecy::ExposeSecret;
        Ok(("oauth2".to_string(), self.token.expose_secret().to_string()))
    }
}
