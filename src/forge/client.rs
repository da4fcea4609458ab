//! Outbound calls to a git host (issue 12): one [`ForgeClient`] per host kind, GitHub through
//! octocrab (`github_api.rs`), GitLab (`gitlab_api.rs`) and Gitea/Forgejo (`gitea_api.rs`) through
//! reqwest. The inbound side (parsing hooks) stays in `github.rs`, `gitlab.rs`, `gitea.rs`.
//!
//! Every call answers a [`HostError`] that says what the host said (status, message, rate limit),
//! so the caller can record it and show it; no call ever panics on a host's answer.

use std::time::Duration;

/// What a namespace's integration with a host holds. The secrets are plain here (decrypted from
/// the database); `Debug` never shows them.
#[derive(Clone)]
pub enum HostCredentials {
    /// A personal access token (GitHub classic or fine-grained, GitLab personal or project
    /// access token, Gitea token).
    Token { token: String },
    /// A GitHub App: kiln signs a JWT with the private key (PEM) and mints installation tokens.
    App {
        app_id: u64,
        private_key: String,
        installation_id: u64,
    },
}

impl std::fmt::Debug for HostCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostCredentials::Token { .. } => f.write_str("Token([redacted])"),
            HostCredentials::App {
                app_id,
                installation_id,
                ..
            } => f
                .debug_struct("App")
                .field("app_id", app_id)
                .field("installation_id", installation_id)
                .field("private_key", &"[redacted]")
                .finish(),
        }
    }
}

/// Who the credentials are, as the host says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    /// The user's or the installation's account login (`octocat`, `acme`).
    pub login: String,
    /// `user`, `app_installation`, `project_bot`, … as the host reports it.
    pub kind: String,
    /// Scopes or permissions the host reports for the credentials (GitHub's `X-OAuth-Scopes`, an
    /// App installation's permissions as `name:level`, GitLab's token scopes); empty when the
    /// host does not say (fine-grained tokens).
    pub scopes: Vec<String>,
}

/// A repository the credentials can see.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostRepo {
    /// `owner/name` (GitLab: the project's `path_with_namespace`).
    pub full_name: String,
    /// The https clone URL (without credentials).
    pub clone_url: String,
    pub html_url: String,
    pub private: bool,
    pub default_branch: Option<String>,
}

/// One page of a repository listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RepoPage {
    pub repositories: Vec<HostRepo>,
    /// The next page's number when the host says there is one (its `Link: rel="next"`).
    pub next_page: Option<u32>,
}

/// The push webhook kiln installs on a repository.
#[derive(Clone)]
pub struct HookSpec {
    /// `{KILN_PUBLIC_URL}/hooks/{provider}`.
    pub url: String,
    /// The source's webhook secret.
    pub secret: String,
}

impl std::fmt::Debug for HookSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookSpec")
            .field("url", &self.url)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// A build's state as a commit status; each host maps it to its own words (GitHub has no
/// `running` nor `cancelled`: `pending` and `error`; GitLab has all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusState {
    Pending,
    Running,
    Success,
    Failure,
    Error,
    Cancelled,
}

impl StatusState {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusState::Pending => "pending",
            StatusState::Running => "running",
            StatusState::Success => "success",
            StatusState::Failure => "failure",
            StatusState::Error => "error",
            StatusState::Cancelled => "cancelled",
        }
    }
}

/// A commit status to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStatus {
    pub state: StatusState,
    /// `kiln/{rule name or ref}`.
    pub context: String,
    /// The image tag, or the one-line failure reason (each client cuts it to the host's limit).
    pub description: String,
    /// The build's page.
    pub target_url: String,
}

/// What went wrong talking to a host: its status code, its message, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HostError {
    /// The HTTP status the host answered; `None` when it could not be reached.
    pub status: Option<u16>,
    /// One line: what the host said (its error body's message), or why it could not be reached.
    /// Never holds a credential.
    pub message: String,
    /// The host's rate limit is spent (`X-RateLimit-Remaining: 0`, 429, or a secondary limit).
    pub rate_limited: bool,
    /// When to try again, from `Retry-After` or `X-RateLimit-Reset`.
    pub retry_after: Option<Duration>,
}

impl HostError {
    pub fn unreachable(message: impl Into<String>) -> HostError {
        HostError {
            status: None,
            message: message.into(),
            rate_limited: false,
            retry_after: None,
        }
    }

    /// Worth trying again later: unreachable, 5xx, 429 or rate-limited. A 401/403/404/422
    /// (bad credentials, no access, bad request) is not, until someone changes something.
    pub fn is_transient(&self) -> bool {
        self.rate_limited || matches!(self.status, None | Some(429) | Some(500..=599))
    }
}

/// The outbound calls kiln makes to a git host for one namespace's integration.
#[async_trait::async_trait]
pub trait ForgeClient: Send + Sync {
    /// Checks the credentials: who they are and what they may do.
    async fn check(&self) -> Result<Account, HostError>;

    /// Repositories the credentials can see, `page` from 1, `search` a case-insensitive
    /// substring of the full name when given.
    async fn repositories(
        &self,
        page: u32,
        per_page: u32,
        search: Option<&str>,
    ) -> Result<RepoPage, HostError>;

    /// One repository by its full name (`owner/name`).
    async fn repository(&self, full_name: &str) -> Result<HostRepo, HostError>;

    /// Installs the push webhook on the repository; answers the host's hook id.
    async fn install_hook(&self, full_name: &str, hook: &HookSpec) -> Result<String, HostError>;

    /// Updates a hook kiln installed (its URL and secret).
    async fn update_hook(
        &self,
        full_name: &str,
        hook_id: &str,
        hook: &HookSpec,
    ) -> Result<(), HostError>;

    /// Removes a hook kiln installed; a hook already gone (404) is not an error.
    async fn remove_hook(&self, full_name: &str, hook_id: &str) -> Result<(), HostError>;

    /// Sets a commit status on `sha`.
    async fn set_status(
        &self,
        full_name: &str,
        sha: &str,
        status: &CommitStatus,
    ) -> Result<(), HostError>;

    /// The user name and password git gives the host over https for a private fetch (a token as
    /// the password; for a GitHub App, a fresh installation token). Never put in a URL.
    async fn git_credentials(&self) -> Result<(String, String), HostError>;
}
