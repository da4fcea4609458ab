//! `kiln apply FILE…`: rules as code. The pure parts are [`schema`] (files → desired state, every
//! error with its place), [`plan`] (desired × server state → ordered changes) and [`render`]
//! (the diff); this file reads the files, fetches the server's state and runs the changes.

pub mod plan;
pub mod render;
pub mod schema;

use std::collections::HashMap;

use reqwest::Method;
use serde_json::{Value, json};

use super::ApplyArgs;
use super::client::{CliError, CliResult, Client};
use super::output::{self, note, out, outln};
use plan::{
    Change, Options, Plan, ServerNamespace, ServerRepo, ServerRule, ServerSource, ServerState,
    ServerWebhook,
};
use schema::{Desired, RulesFile};

use crate::domain::clone_url::Credentials;

/// The webhook secrets the API accepts: 16 to 256 characters, no control characters.
const SECRET_CHARS: std::ops::RangeInclusive<usize> = 16..=256;

pub async fn run(client: &Client, args: &ApplyArgs) -> CliResult<()> {
    let mut files = Vec::new();
    let mut unreadable = Vec::new();
    for path in &args.files {
        match std::fs::read_to_string(path) {
            Ok(text) => files.push(RulesFile {
                path: path.display().to_string(),
                text,
            }),
            Err(e) => unreadable.push(format!("{}: cannot read: {e}", path.display())),
        }
    }
    let desired = match (unreadable.is_empty(), schema::load(&files)) {
        (true, Ok(d)) => d,
        (_, result) => {
            let mut errors = unreadable;
            errors.extend(
                result
                    .err()
                    .unwrap_or_default()
                    .iter()
                    .map(ToString::to_string),
            );
            for e in &errors {
                note(e);
            }
            note(&format!(
                "kiln: {} in the rules files: nothing was applied",
                plural(errors.len(), "error", "errors")
            ));
            return Err(CliError::Reported);
        }
    };

    // Build arguments that look like secrets are applied, with a warning (as the server gives).
    for ns in &desired.namespaces {
        for repo in &ns.repos {
            for rule in &repo.rules {
                for w in crate::domain::build_settings::secret_warnings(&rule.settings.build_args) {
                    note(&format!(
                        "warning: {}: {}/{} rule {}: {w}",
                        rule.at, ns.name, repo.name, rule.name
                    ));
                }
            }
        }
    }

    let state = fetch_state(client, &desired).await?;
    let options = Options {
        prune: args.prune,
        rotate_secrets: args.rotate_secrets,
    };
    let plan = plan::plan(&desired, &state, options);
    let (secrets, secret_errors) = resolve_secrets(&plan, &desired, &|var| std::env::var(var).ok());
    if !secret_errors.is_empty() {
        for e in &secret_errors {
            if args.dry_run {
                note(&format!("warning: {e}"));
            } else {
                note(e);
            }
        }
        if !args.dry_run {
            note(&format!(
                "kiln: {}: nothing was applied",
                plural(
                    secret_errors.len(),
                    "webhook secret is missing",
                    "webhook secrets are missing"
                )
            ));
            return Err(CliError::Reported);
        }
    }

    if args.conn.json {
        return run_json(client, &plan, &secrets, args.dry_run).await;
    }
    out(&render::render_plan(&plan))?;
    if args.dry_run || plan.is_empty() {
        return outln(&render::dry_run_summary(&plan));
    }
    if !plan.notes.is_empty() || !plan.changes.is_empty() {
        outln("")?;
    }
    let mut done = 0;
    for change in &plan.changes {
        match execute(client, change, &secrets).await {
            Ok(answer) => {
                done += 1;
                if let Some(text) = answer_note(change, &answer) {
                    out(&text)?;
                }
            }
            Err(e) => {
                note(&format!("kiln: {}: {e}", render::headline(change)));
                outln(&render::applied_summary(&plan, done))?;
                return Err(CliError::Reported);
            }
        }
    }
    outln(&render::applied_summary(&plan, done))
}

/// `--json`: the plan, and what happened, as one document.
async fn run_json(
    client: &Client,
    plan: &Plan,
    secrets: &HashMap<String, String>,
    dry_run: bool,
) -> CliResult<()> {
    let mut report = json!({
        "dry_run": dry_run,
        "changes": plan.changes,
        "notes": plan.notes,
        "applied": 0,
        "sources": [],
        "webhooks": [],
    });
    if dry_run {
        return output::json(&report);
    }
    let mut failure = None;
    for change in &plan.changes {
        match execute(client, change, secrets).await {
            Ok(answer) => {
                report["applied"] = json!(report["applied"].as_u64().unwrap_or(0) + 1);
                let (list, namespace, repository) = match change {
                    Change::PutSource {
                        namespace,
                        repository,
                        ..
                    } => ("sources", namespace, repository),
                    Change::CreateWebhook {
                        namespace,
                        repository,
                        ..
                    } => ("webhooks", namespace, repository),
                    _ => continue,
                };
                let mut answer = answer;
                answer["repository"] = json!(format!("{namespace}/{repository}"));
                if let Some(list) = report[list].as_array_mut() {
                    list.push(answer);
                }
            }
            Err(e) => {
                report["error"] =
                    json!({"change": render::headline(change), "message": e.to_string()});
                failure = Some(e);
                break;
            }
        }
    }
    output::json(&report)?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// The server's state for the plan: every namespace and its repositories; sources and rules of
/// the repositories in the namespaces the files declare.
pub async fn fetch_state(client: &Client, desired: &Desired) -> CliResult<ServerState> {
    let namespaces = client.get_all(&["namespaces"], &[]).await?;
    let mut state = ServerState::default();
    for ns in namespaces.as_array().map_or(&[][..], Vec::as_slice) {
        let Some(name) = ns["name"].as_str() else {
            continue;
        };
        let declared = desired.namespaces.iter().any(|n| n.name == name);
        let repos = client
            .get_all(
                &["namespaces", name, "repos"],
                &[("include_hidden", "true")],
            )
            .await?;
        let mut server_ns = ServerNamespace {
            name: name.to_string(),
            repos: Vec::new(),
        };
        for repo in repos.as_array().map_or(&[][..], Vec::as_slice) {
            let mut r: ServerRepo = serde_json::from_value(json!({
                "name": repo["name"],
                "summary": repo["summary"],
                "detail": repo["detail"],
                "category": repo["category"],
                "hidden": repo["hidden"],
            }))
            .map_err(|e| CliError::msg(format!("unexpected repository from kiln: {e}")))?;
            if declared {
                let base = ["namespaces", name, "repos", &r.name];
                if repo["ci"].as_bool() != Some(false) {
                    r.source = client
                        .get_optional(&[&base[..], &["source"]].concat())
                        .await?
                        .map(|s| {
                            serde_json::from_value::<ServerSource>(s).map_err(|e| {
                                CliError::msg(format!("unexpected source from kiln: {e}"))
                            })
                        })
                        .transpose()?;
                }
                let rules = client
                    .get_all(&[&base[..], &["rules"]].concat(), &[])
                    .await?;
                r.rules = serde_json::from_value::<Vec<ServerRule>>(rules)
                    .map_err(|e| CliError::msg(format!("unexpected rules from kiln: {e}")))?;
                // The API lists newest first; kiln matches rules oldest first, and so does the
                // plan when the server holds two rules with the same identity.
                r.rules.reverse();
                let repo_declared = desired
                    .namespaces
                    .iter()
                    .filter(|n| n.name == name)
                    .any(|n| n.repos.iter().any(|d| d.name == r.name));
                if repo_declared {
                    let hooks = client
                        .get_all(&[&base[..], &["webhooks"]].concat(), &[])
                        .await?;
                    r.webhooks =
                        serde_json::from_value::<Vec<ServerWebhook>>(hooks).map_err(|e| {
                            CliError::msg(format!("unexpected webhooks from kiln: {e}"))
                        })?;
                }
            }
            server_ns.repos.push(r);
        }
        state.namespaces.push(server_ns);
    }
    Ok(state)
}

/// What a variable named in a rules file holds.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum SecretKind {
    /// A source's webhook secret: 16 to 256 characters.
    SourceSecret,
    /// A webhook's secret: `whsec_<base64>`.
    WebhookSecret,
    /// A source's clone URL credentials: `user:token` or a token.
    Credentials,
}

/// The secrets the plan sets (webhook secrets, clone URL credentials), by variable name, read with
/// `env`; and, for every variable that is needed but unset or unusable, an error naming its file,
/// line and key. A source's secret is 16 to 256 characters; a webhook's has the Standard Webhooks
/// form `whsec_<base64>`; credentials are `user:token` or a token alone.
pub fn resolve_secrets(
    plan: &Plan,
    desired: &Desired,
    env: &dyn Fn(&str) -> Option<String>,
) -> (HashMap<String, String>, Vec<String>) {
    let mut secrets = HashMap::new();
    let mut errors = Vec::new();
    let mut checked = std::collections::HashSet::new();
    let repo = |namespace: &str, repository: &str| {
        desired
            .namespaces
            .iter()
            .find(|n| n.name == namespace)
            .and_then(|n| n.repos.iter().find(|r| r.name == repository))
    };
    let webhook_secret = |var: &String, namespace: &str, repository: &str, name: &str| {
        vec![(
            var.clone(),
            repo(namespace, repository)
                .and_then(|r| r.webhooks.iter().find(|h| h.name == name))
                .map(|h| h.at.to_string()),
            format!("webhook \"{name}\" of {namespace}/{repository}"),
            "secret_env",
            SecretKind::WebhookSecret,
        )]
    };
    for change in &plan.changes {
        let needed = match change {
            Change::PutSource {
                namespace,
                repository,
                webhook_secret_env,
                credentials_env,
                ..
            } => {
                let at = repo(namespace, repository)
                    .and_then(|r| r.source.as_ref())
                    .map(|s| s.at.to_string());
                let what = format!("source of {namespace}/{repository}");
                let mut needed = Vec::new();
                if let Some(var) = webhook_secret_env {
                    needed.push((
                        var.clone(),
                        at.clone(),
                        what.clone(),
                        "webhook_secret_env",
                        SecretKind::SourceSecret,
                    ));
                }
                if let Some(var) = credentials_env {
                    needed.push((
                        var.clone(),
                        at,
                        what,
                        "credentials_env",
                        SecretKind::Credentials,
                    ));
                }
                needed
            }
            Change::CreateWebhook {
                namespace,
                repository,
                webhook: hook,
                secret_env: Some(var),
            } => webhook_secret(var, namespace, repository, &hook.name),
            Change::UpdateWebhook {
                namespace,
                repository,
                name,
                rotate_secret_from: Some(var),
                ..
            } => webhook_secret(var, namespace, repository, name),
            _ => continue,
        };
        for (var, at, what, key, kind) in needed {
            let at = at.unwrap_or_default();
            if !checked.insert((var.clone(), at.clone(), kind)) {
                continue;
            }
            let problem = match env(&var) {
                None => Some("is not set".to_string()),
                Some(s) if kind == SecretKind::WebhookSecret => {
                    match crate::notify::signing::secret_key(&s) {
                        Ok(_) => {
                            secrets.insert(var.clone(), s);
                            None
                        }
                        Err(e) => Some(format!(
                            "does not hold a webhook secret of the form whsec_<standard base64 of \
                             24 to 64 bytes> ({})",
                            e.message
                        )),
                    }
                }
                Some(s) if kind == SecretKind::Credentials => {
                    if s.is_empty()
                        || s.len() > 1024
                        || s.chars().any(|c| c.is_control() || c.is_whitespace())
                    {
                        Some(
                            "must hold user:token or a token alone: 1 to 1024 characters, no \
                             spaces or control characters"
                                .to_string(),
                        )
                    } else {
                        secrets.insert(var.clone(), s);
                        None
                    }
                }
                Some(s) if !SECRET_CHARS.contains(&s.chars().count()) => Some(format!(
                    "must hold {} to {} characters (it holds {})",
                    SECRET_CHARS.start(),
                    SECRET_CHARS.end(),
                    s.chars().count()
                )),
                Some(s) if s.chars().any(char::is_control) => {
                    Some("must not hold control characters".to_string())
                }
                Some(s) => {
                    secrets.insert(var.clone(), s);
                    None
                }
            };
            if let Some(problem) = problem {
                errors.push(format!(
                    "{at}: {what}: {key}: the environment variable {var} {problem} (it holds the \
                     {} this apply sets)",
                    match kind {
                        SecretKind::SourceSecret => "webhook secret",
                        SecretKind::WebhookSecret => "webhook's secret",
                        SecretKind::Credentials => "clone URL's credentials",
                    }
                ));
            }
        }
    }
    (secrets, errors)
}

/// Runs one change through the API; returns the answer of a source PUT, a webhook POST or a
/// repository DELETE (else `null`).
async fn execute(
    client: &Client,
    change: &Change,
    secrets: &HashMap<String, String>,
) -> CliResult<Value> {
    match change {
        Change::CreateNamespace { namespace } => {
            client
                .post(&["namespaces"], &json!({ "name": namespace }))
                .await?;
        }
        Change::CreateRepo {
            namespace,
            name,
            summary,
            detail,
            category,
            hidden,
        } => {
            client
                .post(
                    &["namespaces", namespace, "repos"],
                    &json!({"name": name, "summary": summary, "detail": detail, "category": category}),
                )
                .await?;
            if *hidden {
                client
                    .post(
                        &["namespaces", namespace, "repos", name, "hide"],
                        &json!({}),
                    )
                    .await?;
            }
        }
        Change::UpdateRepo {
            namespace,
            name,
            changes,
        } => {
            let mut patch = serde_json::Map::new();
            let mut hidden = None;
            for c in changes {
                match (c.field, &c.new) {
                    ("hidden", plan::Value::Bool(h)) => hidden = Some(*h),
                    (field, value) => {
                        patch.insert(field.to_string(), json!(value));
                    }
                }
            }
            let path = ["namespaces", namespace, "repos", name];
            if !patch.is_empty() {
                client
                    .json(Method::PATCH, &path, &[], Some(&Value::Object(patch)))
                    .await?;
            }
            if let Some(h) = hidden {
                let action = if h { "hide" } else { "unhide" };
                client
                    .post(&[&path[..], &[action]].concat(), &json!({}))
                    .await?;
            }
        }
        Change::PutSource {
            namespace,
            repository,
            provider,
            clone_url,
            credentials_env,
            webhook_secret_env,
            action,
        } => {
            // Credentials travel in the clone URL, to kiln only; nothing prints this body.
            let clone_url = match credentials_env {
                Some(var) => Credentials::from_plain(secret_from(secrets, var)?)
                    .map_or_else(|| clone_url.clone(), |c| c.embed_in(clone_url)),
                None => clone_url.clone(),
            };
            let mut body = json!({"provider": provider, "clone_url": clone_url});
            if let Some(var) = webhook_secret_env {
                body["webhook_secret"] = json!(secret_from(secrets, var)?);
            } else if matches!(action, plan::SourceAction::RotateSecret) {
                // Without a variable, kiln keeps a linked source's secret unless asked for a new one.
                body["regenerate_secret"] = json!(true);
            }
            return client
                .json(
                    Method::PUT,
                    &["namespaces", namespace, "repos", repository, "source"],
                    &[],
                    Some(&body),
                )
                .await;
        }
        Change::CreateRule {
            namespace,
            repository,
            rule,
        } => {
            client
                .post(
                    &["namespaces", namespace, "repos", repository, "rules"],
                    &json!(rule),
                )
                .await?;
        }
        Change::UpdateRule {
            namespace,
            repository,
            id,
            changes,
            ..
        } => {
            let patch = changes
                .iter()
                .map(|c| (c.field.to_string(), json!(c.new)))
                .collect();
            patch_item(client, namespace, repository, "rules", id, patch).await?;
        }
        Change::DeleteRule {
            namespace,
            repository,
            id,
            ..
        } => delete_item(client, namespace, repository, "rules", id).await?,
        Change::CreateWebhook {
            namespace,
            repository,
            webhook,
            secret_env,
        } => {
            let mut body = json!({
                "name": webhook.name,
                "url": webhook.url,
                "events": webhook.events,
                "payload_format": webhook.payload_format,
                "active": webhook.active,
            });
            if let Some(filter) = &webhook.tag_filter {
                body["tag_filter"] = json!(filter);
            }
            if let Some(var) = secret_env {
                body["secret"] = json!(secret_from(secrets, var)?);
            }
            return client
                .post(
                    &["namespaces", namespace, "repos", repository, "webhooks"],
                    &body,
                )
                .await;
        }
        Change::UpdateWebhook {
            namespace,
            repository,
            id,
            changes,
            rotate_secret_from,
            ..
        } => {
            let mut patch: serde_json::Map<String, Value> = changes
                .iter()
                .map(|c| (c.field.to_string(), json!(c.new)))
                .collect();
            if let Some(var) = rotate_secret_from {
                patch.insert("secret".into(), json!(secret_from(secrets, var)?));
            }
            patch_item(client, namespace, repository, "webhooks", id, patch).await?;
        }
        Change::DeleteWebhook {
            namespace,
            repository,
            id,
            ..
        } => delete_item(client, namespace, repository, "webhooks", id).await?,
        Change::DeleteSource {
            namespace,
            repository,
            ..
        } => {
            client
                .json(
                    Method::DELETE,
                    &["namespaces", namespace, "repos", repository, "source"],
                    &[],
                    None,
                )
                .await?;
        }
        Change::DeleteRepo { namespace, name } => {
            return client
                .json(
                    Method::DELETE,
                    &["namespaces", namespace, "repos", name],
                    &[("confirm", name)],
                    None,
                )
                .await;
        }
    }
    Ok(Value::Null)
}

/// PATCH `…/repos/{repository}/{kind}/{id}` with the changed fields.
async fn patch_item(
    client: &Client,
    namespace: &str,
    repository: &str,
    kind: &str,
    id: &str,
    patch: serde_json::Map<String, Value>,
) -> CliResult<()> {
    let path = ["namespaces", namespace, "repos", repository, kind, id];
    client
        .json(Method::PATCH, &path, &[], Some(&Value::Object(patch)))
        .await?;
    Ok(())
}

/// DELETE `…/repos/{repository}/{kind}/{id}`.
async fn delete_item(
    client: &Client,
    namespace: &str,
    repository: &str,
    kind: &str,
    id: &str,
) -> CliResult<()> {
    let path = ["namespaces", namespace, "repos", repository, kind, id];
    client.json(Method::DELETE, &path, &[], None).await?;
    Ok(())
}

fn secret_from<'s>(secrets: &'s HashMap<String, String>, var: &str) -> CliResult<&'s str> {
    secrets
        .get(var)
        .map(String::as_str)
        .ok_or_else(|| CliError::msg(format!("the environment variable {var} is not set")))
}

/// What people need from an answer: for a source PUT, where to point the forge's webhook and the
/// secret when kiln generated it (the API shows it only in this answer); for a webhook created
/// without `secret_env`, the secret kiln generated (likewise shown only then); for a repository
/// delete, the registry tags that could not be deleted.
fn answer_note(change: &Change, answer: &Value) -> Option<String> {
    let (namespace, repository) = match change {
        Change::PutSource {
            namespace,
            repository,
            ..
        } => (namespace, repository),
        Change::DeleteRepo { namespace, name } => {
            let left: Vec<String> = answer["registry_not_deleted"]
                .as_array()?
                .iter()
                .map(|t| {
                    format!(
                        "{} ({})",
                        t["tag"].as_str().unwrap_or("?"),
                        t["reason"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            if left.is_empty() {
                return None;
            }
            return Some(format!(
                "  {namespace}/{name}: left in the registry: {}\n",
                left.join(", ")
            ));
        }
        Change::CreateWebhook {
            namespace,
            repository,
            webhook,
            ..
        } => {
            let secret = answer["secret"].as_str()?;
            return Some(format!(
                "  {namespace}/{repository}: secret of webhook {:?} generated by kiln (shown only \
                 now; the receiver checks signatures with it): {secret}\n",
                webhook.name
            ));
        }
        _ => return None,
    };
    let url = answer["webhook_url"].as_str().unwrap_or("?");
    let mut s = if answer["provider"] == "git" {
        format!(
            "  {namespace}/{repository}: set kiln.url of the git server's post-receive hook \
             (examples/post-receive) to {url}\n"
        )
    } else {
        format!("  {namespace}/{repository}: point the forge's push webhook at {url}\n")
    };
    if let Some(secret) = answer["webhook_secret"].as_str() {
        s.push_str(&format!(
            "  {namespace}/{repository}: webhook secret generated by kiln (shown only now): {secret}\n"
        ));
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(text: &str) -> Desired {
        schema::load(&[RulesFile {
            path: "t.toml".into(),
            text: text.into(),
        }])
        .unwrap()
    }

    #[test]
    fn secrets_come_from_the_environment_only_when_needed() {
        let d = desired(
            "[[namespace]]\nname = \"acme\"\n\
             [[namespace.repository]]\nname = \"api\"\n\
             [namespace.repository.source]\nprovider = \"github\"\nclone_url = \"https://x/api\"\nwebhook_secret_env = \"API_SECRET\"\n\
             [[namespace.repository]]\nname = \"web\"\n\
             [namespace.repository.source]\nprovider = \"github\"\nclone_url = \"https://x/web\"\nwebhook_secret_env = \"WEB_SECRET\"\n\
             [[namespace.repository]]\nname = \"gen\"\n\
             [namespace.repository.source]\nprovider = \"github\"\nclone_url = \"https://x/gen\"\n",
        );
        let plan = plan::plan(&d, &ServerState::default(), Options::default());
        let env = |var: &str| match var {
            "API_SECRET" => Some("a-long-enough-secret".to_string()),
            "WEB_SECRET" => Some("short".to_string()),
            _ => None,
        };
        let (secrets, errors) = resolve_secrets(&plan, &d, &env);
        assert_eq!(secrets.len(), 1);
        assert_eq!(secrets["API_SECRET"], "a-long-enough-secret");
        assert_eq!(
            errors,
            vec![
                "t.toml:11:1: source of acme/web: webhook_secret_env: the environment variable \
                 WEB_SECRET must hold 16 to 256 characters (it holds 5) (it holds the webhook \
                 secret this apply sets)"
            ]
        );

        // Nothing to PUT: nothing needed, even unset.
        let after = plan::simulate(&ServerState::default(), &plan.changes).unwrap();
        let again = plan::plan(&d, &after, Options::default());
        let (secrets, errors) = resolve_secrets(&again, &d, &|_| None);
        assert!(secrets.is_empty() && errors.is_empty());

        let unset = resolve_secrets(&plan, &d, &|_| None).1;
        assert_eq!(unset.len(), 2);
        assert!(unset[0].contains("API_SECRET is not set"), "{unset:?}");
    }

    #[test]
    fn clone_url_credentials_come_from_the_environment_and_are_never_shown() {
        let file = |extra: &str| {
            desired(&format!(
                "[[namespace]]\nname = \"acme\"\n\
                 [[namespace.repository]]\nname = \"api\"\n\
                 [namespace.repository.source]\nprovider = \"github\"\n\
                 clone_url = \"https://github.com/acme/api.git\"\n{extra}"
            ))
        };
        let d = file("credentials_env = \"API_GIT\"\n");
        let plan = plan::plan(&d, &ServerState::default(), Options::default());
        let token = "bot@acme:ghp_s3cr3t/token";
        let env = |var: &str| (var == "API_GIT").then(|| token.to_string());
        let (secrets, errors) = resolve_secrets(&plan, &d, &env);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(secrets["API_GIT"], token);
        let shown = format!(
            "{}{}",
            render::render_plan(&plan),
            serde_json::to_string(&plan.changes).unwrap()
        );
        assert!(shown.contains("credentials from $API_GIT"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        // What the PUT sends: the credentials percent-encoded into the URL, which kiln takes apart.
        let sent = Credentials::from_plain(token)
            .unwrap()
            .embed_in("https://github.com/acme/api.git");
        let parsed = crate::domain::clone_url::CloneUrl::parse(&sent).unwrap();
        assert_eq!(parsed.url(), "https://github.com/acme/api.git");
        let credentials = parsed.credentials().unwrap();
        assert_eq!(credentials.username(), "bot@acme");
        assert_eq!(credentials.password(), "ghp_s3cr3t/token");

        // Set on the server: nothing to do, unless secrets are rotated.
        let after = plan::simulate(&ServerState::default(), &plan.changes).unwrap();
        assert!(
            plan::plan(&d, &after, Options::default())
                .changes
                .is_empty()
        );
        let rotate = Options {
            rotate_secrets: true,
            ..Options::default()
        };
        assert_eq!(plan::plan(&d, &after, rotate).changes.len(), 1);
        // A file without credentials_env keeps the server's.
        let kept = file("");
        assert!(
            plan::plan(&kept, &after, Options::default())
                .changes
                .is_empty()
        );

        // Unset or unusable: named, never shown.
        let unset = resolve_secrets(&plan, &d, &|_| None).1;
        assert_eq!(
            unset,
            [
                "t.toml:5:1: source of acme/api: credentials_env: the environment variable \
              API_GIT is not set (it holds the clone URL's credentials this apply sets)"
            ]
        );
        let spaced = resolve_secrets(&plan, &d, &|_| Some("bot:my t0ken".into())).1;
        assert!(spaced[0].contains("no spaces"), "{spaced:?}");
        assert!(!spaced[0].contains("t0ken"), "{spaced:?}");
    }

    #[test]
    fn webhook_secrets_must_have_the_standard_webhooks_form() {
        let d = desired(
            "[[namespace]]\nname = \"acme\"\n\
             [[namespace.repository]]\nname = \"api\"\n\
             [[namespace.repository.webhook]]\nname = \"ci\"\nurl = \"https://ci.example.com/\"\nsecret_env = \"CI_SECRET\"\n\
             [[namespace.repository.webhook]]\nname = \"bad\"\nurl = \"https://x.example.com/\"\nsecret_env = \"BAD_SECRET\"\n\
             [[namespace.repository.webhook]]\nname = \"gen\"\nurl = \"https://y.example.com/\"\n",
        );
        let good = crate::notify::signing::generate_secret();
        let env = |var: &str| match var {
            "CI_SECRET" => Some(good.clone()),
            "BAD_SECRET" => Some("a-long-enough-plain-secret".to_string()),
            _ => None,
        };
        let plan = plan::plan(&d, &ServerState::default(), Options::default());
        let (secrets, errors) = resolve_secrets(&plan, &d, &env);
        assert_eq!(secrets.len(), 1);
        assert_eq!(secrets["CI_SECRET"], good);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "t.toml:9:1: webhook \"bad\" of acme/api: secret_env: the environment variable \
                 BAD_SECRET does not hold a webhook secret of the form whsec_"
            ),
            "{errors:?}"
        );
        assert!(!errors[0].contains("a-long-enough"), "never the value");

        // Applied: nothing to send again, unless rotating (then only from a variable).
        let after = plan::simulate(&ServerState::default(), &plan.changes).unwrap();
        let again = plan::plan(&d, &after, Options::default());
        assert!(again.is_empty());
        let rotate = plan::plan(
            &d,
            &after,
            Options {
                prune: false,
                rotate_secrets: true,
            },
        );
        assert_eq!(rotate.changes.len(), 2);
        assert_eq!(
            rotate.notes.len(),
            1,
            "gen cannot be rotated: {:?}",
            rotate.notes
        );
        let (secrets, errors) = resolve_secrets(&rotate, &d, &|_| None);
        assert!(secrets.is_empty());
        assert_eq!(errors.len(), 2);
        assert!(errors[0].contains("CI_SECRET is not set"), "{errors:?}");
    }
}
