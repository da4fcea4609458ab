//! A source linked through its namespace's integration (issue 12): the host's repository it
//! names, and the push hook kiln installs there, updates when the secret changes and removes
//! when the source goes (or moves elsewhere). A host's failure is recorded on the source
//! (`hook_error`) and shown; it never loses the link.

use std::sync::Arc;

use crate::app::App;
use crate::db::{self, repos::RepoRow, sources::SourceRow};
use crate::forge::client::{ForgeClient, HookSpec, HostError, HostRepo};
use crate::forge::hosts::{self, INTEGRATION_PROVIDERS};
use crate::http::error::{ApiError, ApiResult};

use super::integrations::host_error;

const MAX_REPOSITORY: usize = 255;

/// `owner/name` (GitLab: `group/subgroup/name`): segments of letters, digits, `-`, `_`, `.`,
/// none empty, none `.` or `..`.
pub fn validate_repository(name: &str) -> ApiResult<()> {
    let invalid = |m: &str| ApiError::invalid("repository", "invalid_value", m.to_string());
    if name.len() > MAX_REPOSITORY {
        return Err(invalid("repository is too long"));
    }
    let segments: Vec<&str> = name.split('/').collect();
    if segments.len() < 2 {
        return Err(invalid("repository must be owner/name on the host"));
    }
    for s in segments {
        if s.is_empty()
            || s == "."
            || s == ".."
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(
                "repository must be owner/name on the host (letters, digits, '-', '_', '.')",
            ));
        }
    }
    Ok(())
}

/// The client for the namespace's integration with `provider`, if it has one.
async fn integration_client(
    app: &App,
    namespace_id: &str,
    provider: &str,
) -> Result<Option<Arc<dyn ForgeClient>>, ApiError> {
    if !INTEGRATION_PROVIDERS.contains(&provider) {
        return Ok(None);
    }
    let Some(row) = db::integrations::get(&app.db, &app.secrets, namespace_id, provider).await?
    else {
        return Ok(None);
    };
    Ok(Some(hosts::client(&app.config, &row).await.map_err(
        |e| host_error(provider, &e, Some("repository")),
    )?))
}

/// The host's repository `full_name`, seen through the namespace's integration with `provider`:
/// 422 when the namespace has no integration or the host does not know it.
pub async fn find_repository(
    app: &App,
    repo: &RepoRow,
    provider: &str,
    full_name: &str,
) -> ApiResult<HostRepo> {
    validate_repository(full_name)?;
    if !INTEGRATION_PROVIDERS.contains(&provider) {
        return Err(ApiError::invalid(
            "repository",
            "not_allowed",
            format!(
                "repository needs a provider with an integration ({})",
                INTEGRATION_PROVIDERS.join(", ")
            ),
        ));
    }
    let client = integration_client(app, &repo.namespace_id, provider)
        .await?
        .ok_or_else(|| {
            ApiError::invalid(
                "repository",
                "no_integration",
                format!(
                    "namespace {} has no {provider} integration: set one with PUT \
                     /api/v1/namespaces/{}/integrations/{provider}, or give clone_url",
                    repo.namespace, repo.namespace
                ),
            )
        })?;
    client
        .repository(full_name)
        .await
        .map_err(|e| match e.status {
            Some(404) => ApiError::invalid(
                "repository",
                "not_found_on_host",
                format!("{provider} has no repository {full_name} the credentials can see"),
            ),
            _ => host_error(provider, &e, Some("repository")),
        })
}

/// `{KILN_PUBLIC_URL}/hooks/{provider}` with the source's secret.
fn hook_spec(app: &App, source: &SourceRow) -> HookSpec {
    HookSpec {
        url: format!("{}/hooks/{}", app.config.public_url, source.provider),
        secret: source.webhook_secret.clone(),
    }
}

fn describe(e: &HostError) -> String {
    match e.status {
        Some(s) => format!("the host answered {s}: {}", e.message),
        None => e.message.clone(),
    }
}

/// After a PUT of the source: installs, updates or moves the hook as the link asks. `before` is
/// the source as it was. Returns the source as stored now (its hook id and error).
pub async fn sync_hook(
    app: &App,
    repo: &RepoRow,
    before: Option<&SourceRow>,
    now: SourceRow,
) -> ApiResult<SourceRow> {
    let same_repository = before.is_some_and(|b| {
        b.provider == now.provider && b.repository.is_some() && b.repository == now.repository
    });
    // A hook kiln installed for another repository (or a link that names none now) goes.
    if let Some(old) = before
        && !same_repository
    {
        remove_hook(app, repo, old).await;
    }
    let Some(full_name) = now.repository.clone() else {
        if before.is_some_and(|b| b.hook_id.is_some()) {
            db::sources::set_hook(&app.db, &repo.id, None, None).await?;
        }
        return reload(app, repo).await;
    };
    let spec = hook_spec(app, &now);
    let kept_hook = if same_repository {
        before.and_then(|b| b.hook_id.clone())
    } else {
        None
    };
    let result: Result<Option<String>, HostError> =
        match integration_client(app, &repo.namespace_id, &now.provider).await {
            Err(e) => Err(HostError::unreachable(e.message)),
            Ok(None) => Err(HostError::unreachable(format!(
                "namespace {} has no {} integration any more",
                repo.namespace, now.provider
            ))),
            Ok(Some(client)) => match kept_hook {
                Some(id) => {
                    let secret_changed =
                        before.is_some_and(|b| b.webhook_secret != now.webhook_secret);
                    let failed_before = before.is_some_and(|b| b.hook_error.is_some());
                    if secret_changed || failed_before {
                        match client.update_hook(&full_name, &id, &spec).await {
                            Ok(()) => Ok(Some(id)),
                            // Deleted on the host meanwhile: install it again.
                            Err(e) if e.status == Some(404) => {
                                client.install_hook(&full_name, &spec).await.map(Some)
                            }
                            Err(e) => Err(e),
                        }
                    } else {
                        Ok(Some(id))
                    }
                }
                None => client.install_hook(&full_name, &spec).await.map(Some),
            },
        };
    match result {
        Ok(hook_id) => {
            db::sources::set_hook(&app.db, &repo.id, hook_id.as_deref(), None).await?;
        }
        Err(e) => {
            tracing::warn!(
                repo = %format!("{}/{}", repo.namespace, repo.name),
                host_repository = %full_name,
                error = %e.message,
                status = ?e.status,
                "cannot set up the push hook on the host"
            );
            let kept = if same_repository {
                before.and_then(|b| b.hook_id.clone())
            } else {
                None
            };
            db::sources::set_hook(&app.db, &repo.id, kept.as_deref(), Some(&describe(&e))).await?;
        }
    }
    reload(app, repo).await
}

async fn reload(app: &App, repo: &RepoRow) -> ApiResult<SourceRow> {
    db::sources::for_repo(&app.db, &app.secrets, &repo.id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(&format!("git source of {}/{}", repo.namespace, repo.name))
        })
}

/// Removes the hook kiln installed for `source`, if any. A failure is logged, not answered: the
/// source is going (or moving) either way.
pub async fn remove_hook(app: &App, repo: &RepoRow, source: &SourceRow) {
    let (Some(full_name), Some(hook_id)) = (&source.repository, &source.hook_id) else {
        return;
    };
    let outcome = match integration_client(app, &repo.namespace_id, &source.provider).await {
        Ok(Some(client)) => client.remove_hook(full_name, hook_id).await,
        Ok(None) => Err(HostError::unreachable(
            "the namespace has no integration any more",
        )),
        Err(e) => Err(HostError::unreachable(e.message)),
    };
    if let Err(e) = outcome {
        tracing::warn!(
            repo = %format!("{}/{}", repo.namespace, repo.name),
            host_repository = %full_name,
            hook_id = %hook_id,
            error = %e.message,
            "cannot remove the push hook from the host; remove it there by hand"
        );
    }
}

/// A warning when `KILN_PUBLIC_URL` names a loopback or private address the host cannot reach.
pub async fn public_url_warning(app: &App, provider: &str) -> Option<String> {
    let url = reqwest::Url::parse(&app.config.public_url).ok()?;
    let host = url.host_str()?;
    crate::notify::guard::check_host(&Default::default(), host)
        .await
        .err()
        .map(|_| {
            format!(
                "KILN_PUBLIC_URL ({}) is a loopback or private address: {provider} cannot \
                 deliver push events to it",
                app.config.public_url
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for ok in ["acme/api", "group/sub/api.v2", "a-b/c_d"] {
            assert!(validate_repository(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "acme",
            "acme/",
            "/api",
            "acme//api",
            "acme/..",
            "a b/c",
            "a/b\n",
            "a/b?x",
        ] {
            let e = validate_repository(bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("repository"), "{bad}");
        }
        assert!(validate_repository(&format!("a/{}", "b".repeat(300))).is_err());
    }
}
