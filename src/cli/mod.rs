//! The command-line client: the same `kiln` binary talks to a running kiln over its JSON API
//! (`KILN_URL`, `KILN_TOKEN`), and `kiln apply` makes kiln match rules files (see `rules/`).
//!
//! Every command prints a table (or a sentence) for people and, with `--json`, the API's JSON
//! for scripts. Exit code 0 only on success; an API error prints `kiln: MESSAGE (FIELD)` on
//! stderr and exits 1.

pub mod apply;
pub mod client;
mod commands;
pub mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use client::{CliError, Client};

/// Where the server is and how to talk to it; on every client command.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// Base URL of the kiln server.
    #[arg(long, env = "KILN_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API token (prefer the environment variable: a command line is visible to other users).
    #[arg(long, env = "KILN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON (the API's own) instead of a table, for scripts.
    #[arg(long)]
    pub json: bool,
}

impl Connection {
    fn client(&self) -> Result<Client, CliError> {
        Client::new(&self.url, self.token.clone())
    }
}

/// `NS/REPO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    pub namespace: String,
    pub repo: String,
}

impl std::fmt::Display for RepoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.repo)
    }
}

fn parse_repo_ref(s: &str) -> Result<RepoRef, String> {
    match s.split_once('/') {
        Some((ns, repo)) if !ns.is_empty() && !repo.is_empty() && !repo.contains('/') => {
            Ok(RepoRef {
                namespace: ns.to_string(),
                repo: repo.to_string(),
            })
        }
        _ => Err("expected NAMESPACE/REPOSITORY, like acme/api".to_string()),
    }
}

/// The client commands, flattened into the binary's top-level commands beside `serve`.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// List or create namespaces.
    #[command(subcommand)]
    Namespaces(NamespacesCommand),
    /// List, create, hide and unhide image repositories.
    #[command(subcommand)]
    Repos(ReposCommand),
    /// A repository's build rules.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Start a build.
    #[command(subcommand)]
    Build(BuildCommand),
    /// A repository's builds; one build; cancel a build.
    #[command(subcommand)]
    Builds(BuildsCommand),
    /// Print a build's log (--follow: stream it until the build ends; --json: one JSON string per
    /// line).
    Logs(LogsArgs),
    /// The image versions (tags) of a repository.
    Versions(VersionsArgs),
    /// Outbound webhooks (notifications of new images).
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// A namespace's link to a git host (GitHub, GitLab, Gitea): its account, and the repositories
    /// it can see (to pick one for `kiln repos link`).
    #[command(subcommand)]
    Integrations(IntegrationsCommand),
    /// The registry kiln pushes to.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Make kiln match rules files (namespaces, repositories, sources, rules): see rules/README.md.
    ///
    /// Prints the plan as a diff (+ create, ~ update field: old → new, - delete), applies it and
    /// prints a summary line. Every file is validated first: with any error nothing is applied.
    /// Applying the same files twice changes nothing.
    Apply(ApplyArgs),
}

#[derive(Subcommand, Debug)]
pub enum NamespacesCommand {
    /// List the namespaces the token can see.
    List {
        #[command(flatten)]
        conn: Connection,
    },
    /// Create a namespace (needs an admin token).
    Create {
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReposCommand {
    /// List the repositories of a namespace.
    List {
        namespace: String,
        /// Include hidden repositories.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: Connection,
    },
    /// Create a repository in an existing namespace.
    Create {
        #[arg(value_name = "NS/REPO", value_parser = parse_repo_ref)]
        repo: RepoRef,
        /// One line, at most 100 characters.
        #[arg(long)]
        summary: Option<String>,
        /// database, server, language, web-framework, os or other (the default).
        #[arg(long)]
        category: Option<String>,
        /// Longer description (Markdown).
        #[arg(long)]
        detail: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Hide a repository (left out of lists, no builds).
    Hide {
        #[arg(value_name = "NS/REPO", value_parser = parse_repo_ref)]
        repo: RepoRef,
        #[command(flatten)]
        conn: Connection,
    },
    /// Make a hidden repository visible again.
    Unhide {
        #[arg(value_name = "NS/REPO", value_parser = parse_repo_ref)]
        repo: RepoRef,
        #[command(flatten)]
        conn: Connection,
    },
    /// Link a repository to its git source: a repository on the host of the namespace's
    /// integration (`--repository owner/name`: kiln installs the push webhook), or any clone URL.
    Link {
        #[arg(value_name = "NS/REPO", value_parser = parse_repo_ref)]
        repo: RepoRef,
        #[arg(long, value_parser = ["github", "gitlab", "gitea", "git"])]
        provider: String,
        /// The repository on the host (`owner/name`), as `kiln integrations repos` lists it.
        #[arg(long, required_unless_present = "clone_url")]
        repository: Option<String>,
        /// The clone URL (without an integration, or a mirror of the host's repository).
        #[arg(long)]
        clone_url: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
}

#[derive(Subcommand, Debug)]
pub enum IntegrationsCommand {
    /// The namespace's integration with a host: kind, account, scopes, last check (never the secret).
    Show {
        namespace: String,
        #[arg(value_parser = ["github", "gitlab", "gitea"])]
        provider: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// The repositories the integration's credentials can see, a page at a time.
    Repos {
        namespace: String,
        #[arg(value_parser = ["github", "gitlab", "gitea"])]
        provider: String,
        /// Only the repositories whose full name holds this text.
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: u32,
        #[arg(long, default_value_t = 30)]
        per_page: u32,
        #[command(flatten)]
        conn: Connection,
    },
}

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// List a repository's build rules (with the ids `kiln build now` takes).
    List {
        #[arg(value_name = "NS/REPO", value_parser = parse_repo_ref)]
        repo: RepoRef,
        #[command(flatten)]
        conn: Connection,
    },
}

#[derive(Subcommand, Debug)]
pub enum BuildCommand {
    /// Build a rule now, without a push: the head of its branch, or the newest tag it matches.
    Now {
        #[arg(value_name = "NS/REPO", value_parser = parse_repo_ref)]
        repo: RepoRef,
        /// The rule's id (`kiln rules list NS/REPO`).
        rule_id: String,
        /// Which branch or tag to build (needed when the rule's name is a pattern).
        #[arg(long = "ref")]
        git_ref: Option<String>,
        /// Build this commit (7 to 40 hex characters) of that ref.
        #[arg(long)]
        commit: Option<String>,
        /// Follow the log until the build ends; exit non-zero unless it succeeded.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        conn: Connection,
    },
}

#[derive(Subcommand, Debug)]
pub enum BuildsCommand {
    /// A repository's builds, newest first.
    List {
        #[arg(value_name = "NS/REPO", value_parser = parse_repo_ref)]
        repo: RepoRef,
        /// How many (1 to 200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        conn: Connection,
    },
    /// One build.
    Show {
        build_id: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Cancel a queued or running build.
    Cancel {
        build_id: String,
        #[command(flatten)]
        conn: Connection,
    },
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The build's id (`kiln builds list NS/REPO`).
    pub build_id: String,
    /// Keep streaming until the build ends.
    #[arg(long, short)]
    pub follow: bool,
    #[command(flatten)]
    pub conn: Connection,
}

#[derive(Args, Debug)]
pub struct VersionsArgs {
    #[arg(value_name = "NS/REPO", value_parser = parse_repo_ref)]
    pub repo: RepoRef,
    /// Include hidden versions.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub conn: Connection,
}

#[derive(Subcommand, Debug)]
pub enum WebhooksCommand {
    /// The deliveries of a webhook, newest first.
    Deliveries {
        /// The repository the webhook belongs to.
        #[arg(value_name = "NS/REPO", value_parser = parse_repo_ref)]
        repo: RepoRef,
        webhook_id: String,
        /// How many, newest first (1 to 200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        conn: Connection,
    },
}

#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// Bring kiln's image versions in line with what the registry holds, and print the report.
    Sync {
        #[command(flatten)]
        conn: Connection,
    },
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// Rules files (TOML); several merge, conflicting definitions are an error.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete repositories, sources, rules and webhooks that are not in the files
    /// (namespaces are never deleted).
    #[arg(long)]
    pub prune: bool,
    /// Set every declared source's webhook secret again: from its webhook_secret_env variable,
    /// or a new one kiln generates and apply prints once; and every declared webhook's secret
    /// that has a secret_env variable (others keep theirs, with a warning).
    #[arg(long)]
    pub rotate_secrets: bool,
    #[command(flatten)]
    pub conn: Connection,
}

/// Runs a client command; prints what went wrong as `kiln: …` on stderr.
pub async fn run(command: ClientCommand) -> ExitCode {
    match commands::dispatch(command).await {
        Ok(()) | Err(CliError::StdoutClosed) => ExitCode::SUCCESS,
        Err(CliError::Reported) => ExitCode::FAILURE,
        Err(e) => {
            output::note(&format!("kiln: {e}"));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_refs() {
        assert_eq!(
            parse_repo_ref("acme/api").unwrap(),
            RepoRef {
                namespace: "acme".into(),
                repo: "api".into()
            }
        );
        for bad in ["acme", "acme/", "/api", "a/b/c", ""] {
            assert!(parse_repo_ref(bad).is_err(), "{bad}");
        }
    }
}
