//! One function per client command: call the API, print a table or the JSON.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::client::{CliError, CliResult, Client};
use super::output::{self, cell, note, out, outln, short_sha, table, yes_no};
use super::{
    BuildCommand, BuildsCommand, ClientCommand, IntegrationsCommand, LogsArgs, NamespacesCommand,
    RegistryCommand, RepoRef, ReposCommand, RulesCommand, VersionsArgs, WebhooksCommand,
};

/// How long `kiln registry sync` waits for its report.
const SYNC_TIMEOUT: Duration = Duration::from_secs(600);

pub async fn dispatch(command: ClientCommand) -> CliResult<()> {
    match command {
        ClientCommand::Namespaces(c) => namespaces(c).await,
        ClientCommand::Repos(c) => repos(c).await,
        ClientCommand::Rules(RulesCommand::List { repo, conn }) => {
            list_rules(&conn.client()?, &repo, conn.json).await
        }
        ClientCommand::Build(BuildCommand::Now {
            repo,
            rule_id,
            git_ref,
            commit,
            wait,
            conn,
        }) => {
            let client = conn.client()?;
            build_now(
                &client,
                &repo,
                &rule_id,
                git_ref.as_deref(),
                commit.as_deref(),
                wait,
                conn.json,
            )
            .await
        }
        ClientCommand::Builds(c) => builds(c).await,
        ClientCommand::Logs(LogsArgs {
            build_id,
            follow,
            conn,
        }) => {
            let sink = if conn.json {
                LogSink::JsonLines
            } else {
                LogSink::Stdout
            };
            print_log(&conn.client()?, &build_id, follow, sink).await
        }
        ClientCommand::Versions(VersionsArgs { repo, all, conn }) => {
            versions(&conn.client()?, &repo, all, conn.json).await
        }
        ClientCommand::Webhooks(WebhooksCommand::Deliveries {
            repo,
            webhook_id,
            limit,
            conn,
        }) => deliveries(&conn.client()?, &repo, &webhook_id, limit, conn.json).await,
        ClientCommand::Registry(RegistryCommand::Sync { conn }) => {
            registry_sync(&conn.client()?, conn.json).await
        }
        ClientCommand::Integrations(c) => integrations(c).await,
        ClientCommand::Apply(args) => {
            let client = args.conn.client()?;
            super::apply::run(&client, &args).await
        }
    }
}

fn array(v: &Value) -> &[Value] {
    v.as_array().map_or(&[][..], Vec::as_slice)
}

fn repo_path<'a>(repo: &'a RepoRef, rest: &[&'a str]) -> Vec<&'a str> {
    let mut p = vec![
        "namespaces",
        repo.namespace.as_str(),
        "repos",
        repo.repo.as_str(),
    ];
    p.extend_from_slice(rest);
    p
}

async fn namespaces(c: NamespacesCommand) -> CliResult<()> {
    match c {
        NamespacesCommand::List { conn } => {
            let v = conn.client()?.get_all(&["namespaces"], &[]).await?;
            if conn.json {
                return output::json(&v);
            }
            if array(&v).is_empty() {
                return outln("no namespaces");
            }
            let rows: Vec<Vec<String>> = array(&v)
                .iter()
                .map(|n| vec![cell(n, "name"), cell(n, "created_at")])
                .collect();
            out(&table(&["NAME", "CREATED"], &rows))
        }
        NamespacesCommand::Create { name, conn } => {
            let v = conn
                .client()?
                .post(&["namespaces"], &json!({ "name": name }))
                .await?;
            if conn.json {
                return output::json(&v);
            }
            outln(&format!("created namespace {}", cell(&v, "name")))
        }
    }
}

async fn repos(c: ReposCommand) -> CliResult<()> {
    match c {
        ReposCommand::List {
            namespace,
            all,
            conn,
        } => {
            let query: &[(&str, &str)] = if all {
                &[("include_hidden", "true")]
            } else {
                &[]
            };
            let v = conn
                .client()?
                .get_all(&["namespaces", &namespace, "repos"], query)
                .await?;
            if conn.json {
                return output::json(&v);
            }
            if array(&v).is_empty() {
                let hint = if all {
                    ""
                } else {
                    " (hidden ones are listed with --all)"
                };
                return outln(&format!("no repositories in {namespace}{hint}"));
            }
            let mut headers = vec!["NAME", "CATEGORY", "CI"];
            if all {
                headers.push("HIDDEN");
            }
            headers.extend(["CREATED", "SUMMARY"]);
            let rows: Vec<Vec<String>> = array(&v)
                .iter()
                .map(|r| {
                    let mut row = vec![cell(r, "name"), cell(r, "category"), yes_no(r, "ci")];
                    if all {
                        row.push(yes_no(r, "hidden"));
                    }
                    row.extend([cell(r, "created_at"), cell(r, "summary")]);
                    row
                })
                .collect();
            out(&table(&headers, &rows))
        }
        ReposCommand::Create {
            repo,
            summary,
            category,
            detail,
            conn,
        } => {
            let mut body = json!({ "name": repo.repo });
            for (key, value) in [
                ("summary", summary),
                ("category", category),
                ("detail", detail),
            ] {
                if let Some(value) = value {
                    body[key] = json!(value);
                }
            }
            let v = conn
                .client()?
                .post(&["namespaces", &repo.namespace, "repos"], &body)
                .await?;
            if conn.json {
                return output::json(&v);
            }
            outln(&format!(
                "created repository {repo} (images: {})",
                cell(&v, "image")
            ))
        }
        ReposCommand::Hide { repo, conn } => set_hidden(&repo, true, &conn).await,
        ReposCommand::Unhide { repo, conn } => set_hidden(&repo, false, &conn).await,
        ReposCommand::Link {
            repo,
            provider,
            repository,
            clone_url,
            conn,
        } => link(&repo, &provider, repository, clone_url, &conn).await,
    }
}

/// `PUT …/source`: links the repository and says what the user still has to do, if anything. The
/// webhook secret is printed only when kiln generated it and could not install the hook itself
/// (the user pastes it into the host); it is never shown again.
async fn link(
    repo: &RepoRef,
    provider: &str,
    repository: Option<String>,
    clone_url: Option<String>,
    conn: &super::Connection,
) -> CliResult<()> {
    let mut body = json!({ "provider": provider });
    if let Some(r) = repository {
        body["repository"] = json!(r);
    }
    if let Some(u) = clone_url {
        body["clone_url"] = json!(u);
    }
    let v = conn
        .client()?
        .json(Method::PUT, &repo_path(repo, &["source"]), &[], Some(&body))
        .await?;
    if conn.json {
        return output::json(&v);
    }
    let from = match v["repository"].as_str() {
        Some(r) => format!("{provider} repository {r} ({})", cell(&v, "clone_url")),
        None => cell(&v, "clone_url"),
    };
    outln(&format!("linked {repo} to {from}"))?;
    let installed = v["hook_installed"].as_bool() == Some(true);
    if installed {
        outln("push webhook: installed on the host by kiln")?;
    } else {
        if let Some(e) = v["hook_error"].as_str() {
            outln(&format!("push webhook: not installed: {e}"))?;
        }
        outln(&format!("push webhook URL: {}", cell(&v, "webhook_url")))?;
        if let Some(secret) = v["webhook_secret"].as_str() {
            outln(&format!("webhook secret (shown only now): {secret}"))?;
        }
    }
    for w in v["warnings"].as_array().into_iter().flatten() {
        note(&format!("warning: {}", w.as_str().unwrap_or_default()));
    }
    Ok(())
}

async fn integrations(c: IntegrationsCommand) -> CliResult<()> {
    match c {
        IntegrationsCommand::Show {
            namespace,
            provider,
            conn,
        } => {
            let v = conn
                .client()?
                .get(&["namespaces", &namespace, "integrations", &provider], &[])
                .await?;
            if conn.json {
                return output::json(&v);
            }
            let scopes: Vec<&str> = v["scopes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let rows = vec![vec![
                cell(&v, "provider"),
                cell(&v, "kind"),
                cell(&v, "url"),
                cell(&v, "account"),
                scopes.join(","),
                cell(&v, "last_checked_at"),
                cell(&v, "last_error"),
            ]];
            out(&table(
                &[
                    "PROVIDER",
                    "KIND",
                    "URL",
                    "ACCOUNT",
                    "SCOPES",
                    "CHECKED",
                    "LAST ERROR",
                ],
                &rows,
            ))
        }
        IntegrationsCommand::Repos {
            namespace,
            provider,
            search,
            page,
            per_page,
            conn,
        } => {
            let (page, per_page) = (page.to_string(), per_page.to_string());
            let mut query = vec![("page", page.as_str()), ("per_page", per_page.as_str())];
            if let Some(s) = search.as_deref() {
                query.push(("search", s));
            }
            let v = conn
                .client()?
                .get(
                    &[
                        "namespaces",
                        &namespace,
                        "integrations",
                        &provider,
                        "repositories",
                    ],
                    &query,
                )
                .await?;
            if conn.json {
                return output::json(&v);
            }
            let repos = array(&v["repositories"]);
            if repos.is_empty() {
                return outln("no repositories");
            }
            let rows: Vec<Vec<String>> = repos
                .iter()
                .map(|r| {
                    vec![
                        cell(r, "full_name"),
                        yes_no(r, "private"),
                        cell(r, "default_branch"),
                        cell(r, "clone_url"),
                    ]
                })
                .collect();
            out(&table(
                &["REPOSITORY", "PRIVATE", "BRANCH", "CLONE URL"],
                &rows,
            ))?;
            if let Some(next) = v["next_page"].as_u64() {
                note(&format!("more: --page {next}"));
            }
            Ok(())
        }
    }
}

async fn set_hidden(repo: &RepoRef, hidden: bool, conn: &super::Connection) -> CliResult<()> {
    let action = if hidden { "hide" } else { "unhide" };
    let v = conn
        .client()?
        .post(&repo_path(repo, &[action]), &json!({}))
        .await?;
    if conn.json {
        return output::json(&v);
    }
    let now = if v["hidden"].as_bool().unwrap_or(hidden) {
        "hidden"
    } else {
        "visible"
    };
    outln(&format!("{repo} is {now}"))
}

async fn list_rules(client: &Client, repo: &RepoRef, as_json: bool) -> CliResult<()> {
    let v = client.get_all(&repo_path(repo, &["rules"]), &[]).await?;
    if as_json {
        return output::json(&v);
    }
    if array(&v).is_empty() {
        return outln(&format!("{repo} has no build rules"));
    }
    let rows: Vec<Vec<String>> = array(&v)
        .iter()
        .map(|r| {
            vec![
                cell(r, "id"),
                cell(r, "type"),
                cell(r, "name"),
                cell(r, "dockerfile"),
                cell(r, "context"),
                cell(r, "version"),
                yes_no(r, "overwrite"),
                yes_no(r, "enabled"),
                // Issue 9 (the path filters are in --json).
                cell(r, "schedule"),
            ]
        })
        .collect();
    out(&table(
        &[
            "ID",
            "TYPE",
            "NAME",
            "DOCKERFILE",
            "CONTEXT",
            "VERSION",
            "OVERWRITE",
            "ENABLED",
            "SCHEDULE",
        ],
        &rows,
    ))
}

async fn build_now(
    client: &Client,
    repo: &RepoRef,
    rule_id: &str,
    git_ref: Option<&str>,
    commit: Option<&str>,
    wait: bool,
    as_json: bool,
) -> CliResult<()> {
    let mut body = json!({});
    if let Some(r) = git_ref {
        body["ref"] = json!(r);
    }
    if let Some(c) = commit {
        body["commit"] = json!(c);
    }
    let build = client
        .post(&repo_path(repo, &["rules", rule_id, "builds"]), &body)
        .await?;
    let id = build["id"]
        .as_str()
        .ok_or_else(|| CliError::msg("kiln's answer holds no build id"))?
        .to_string();
    let what = match build["ref"].as_str() {
        Some(r) => format!("build {id} of {repo} ({r})"),
        None => format!("build {id} of {repo}"),
    };
    if !wait {
        if as_json {
            return output::json(&build);
        }
        return outln(&format!("queued {what}"));
    }
    note(&format!("queued {what}; following its log"));
    // Scripts get the final build as JSON on stdout, so the log goes to stderr for them.
    let sink = if as_json {
        LogSink::Stderr
    } else {
        LogSink::Stdout
    };
    print_log(client, &id, true, sink).await?;
    let done = finished_build(client, &id).await?;
    let status = done["status"].as_str().unwrap_or("unknown").to_string();
    if as_json {
        output::json(&done)?;
    } else if status == "succeeded" {
        outln(&format!(
            "build {id} succeeded: {} ({})",
            cell(&done, "image"),
            cell(&done, "digest")
        ))?;
    }
    if status == "succeeded" {
        Ok(())
    } else {
        let why = done["error"]
            .as_str()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        Err(CliError::msg(format!("build {id} {status}{why}")))
    }
}

/// The build once it has ended (the log stream ends with it; a moment's grace for the status).
async fn finished_build(client: &Client, id: &str) -> CliResult<Value> {
    for _ in 0..60 {
        let b = client.get(&["builds", id], &[]).await?;
        if matches!(
            b["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled" | "skipped")
        ) {
            return Ok(b);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(CliError::msg(format!(
        "the log of build {id} ended but the build has not: see `kiln builds show {id}`"
    )))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LogSink {
    Stdout,
    Stderr,
    /// One JSON string per line, on stdout.
    JsonLines,
}

/// Copies the build log as it arrives.
async fn print_log(client: &Client, id: &str, follow: bool, sink: LogSink) -> CliResult<()> {
    let query: &[(&str, &str)] = if follow { &[("follow", "true")] } else { &[] };
    let mut resp = client.stream(&["builds", id, "log"], query).await?;
    let mut pending = String::new();
    loop {
        let chunk = resp.chunk().await.map_err(|e| client.transport_error(&e))?;
        let Some(chunk) = chunk else { break };
        let text = String::from_utf8_lossy(&chunk);
        match sink {
            LogSink::Stdout => out(&text)?,
            LogSink::Stderr => {
                use std::io::Write;
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(text.as_bytes());
                let _ = err.flush();
            }
            LogSink::JsonLines => {
                pending.push_str(&text);
                while let Some(i) = pending.find('\n') {
                    let line: String = pending.drain(..=i).collect();
                    outln(&json!(line.trim_end_matches('\n')).to_string())?;
                }
            }
        }
    }
    if sink == LogSink::JsonLines && !pending.is_empty() {
        outln(&json!(pending).to_string())?;
    }
    Ok(())
}

async fn builds(c: BuildsCommand) -> CliResult<()> {
    match c {
        BuildsCommand::List { repo, limit, conn } => {
            let limit = limit.to_string();
            let v = conn
                .client()?
                .get(&repo_path(&repo, &["builds"]), &[("limit", &limit)])
                .await?;
            if conn.json {
                return output::json(&v);
            }
            if array(&v).is_empty() {
                return outln(&format!("{repo} has no builds yet"));
            }
            let rows: Vec<Vec<String>> = array(&v)
                .iter()
                .map(|b| {
                    vec![
                        cell(b, "id"),
                        build_status(b),
                        cell(b, "trigger"),
                        cell(b, "ref"),
                        short_sha(b, "commit"),
                        cell(b, "tag"),
                        cell(b, "created_at"),
                        cell(b, "finished_at"),
                    ]
                })
                .collect();
            out(&table(
                &[
                    "ID", "STATUS", "TRIGGER", "REF", "COMMIT", "TAG", "CREATED", "FINISHED",
                ],
                &rows,
            ))
        }
        BuildsCommand::Show { build_id, conn } => {
            let v = conn.client()?.get(&["builds", &build_id], &[]).await?;
            if conn.json {
                return output::json(&v);
            }
            out(&output::report(&v))
        }
        BuildsCommand::Cancel { build_id, conn } => {
            let v = conn
                .client()?
                .post(&["builds", &build_id, "cancel"], &json!({}))
                .await?;
            if conn.json {
                return output::json(&v);
            }
            outln(&format!("build {build_id}: {}", cell(&v, "status")))
        }
    }
}

/// `queued #2` (its place in line), `building (attempt 2)`, `succeeded`.
fn build_status(b: &Value) -> String {
    let mut status = cell(b, "status");
    if let Some(n) = b["queue_position"].as_u64() {
        status.push_str(&format!(" #{n}"));
    }
    if let Some(n) = b["attempt"].as_u64().filter(|n| *n > 1) {
        status.push_str(&format!(" (attempt {n})"));
    }
    status
}

async fn versions(client: &Client, repo: &RepoRef, all: bool, as_json: bool) -> CliResult<()> {
    let query: &[(&str, &str)] = if all {
        &[("include_hidden", "true")]
    } else {
        &[]
    };
    let v = client
        .get_all(&repo_path(repo, &["versions"]), query)
        .await?;
    if as_json {
        return output::json(&v);
    }
    if array(&v).is_empty() {
        return outln(&format!("{repo} has no image versions yet"));
    }
    let mut headers = vec!["TAG", "SOURCE", "DIGEST", "BUILD", "PUSHED"];
    if all {
        headers.push("HIDDEN");
    }
    let rows: Vec<Vec<String>> = array(&v)
        .iter()
        .map(|t| {
            let mut row = vec![
                cell(t, "tag"),
                cell(t, "source"),
                cell(t, "digest"),
                cell(t, "build_id"),
                cell(t, "pushed_at"),
            ];
            if all {
                row.push(yes_no(t, "hidden"));
            }
            row
        })
        .collect();
    out(&table(&headers, &rows))
}

async fn deliveries(
    client: &Client,
    repo: &RepoRef,
    webhook_id: &str,
    limit: u32,
    as_json: bool,
) -> CliResult<()> {
    let limit = limit.to_string();
    let v = client
        .get(
            &repo_path(repo, &["webhooks", webhook_id, "deliveries"]),
            &[("limit", &limit)],
        )
        .await?;
    if as_json {
        return output::json(&v);
    }
    if array(&v).is_empty() {
        return outln(&format!(
            "webhook {webhook_id} of {repo} has no deliveries yet"
        ));
    }
    let rows: Vec<Vec<String>> = array(&v)
        .iter()
        .map(|d| {
            vec![
                cell(d, "id"),
                cell(d, "event"),
                cell(d, "status"),
                cell(d, "attempts"),
                cell(d, "response_status"),
                match d["duration_ms"].as_u64() {
                    Some(ms) => format!("{ms} ms"),
                    None => "-".into(),
                },
                cell(d, "created_at"),
            ]
        })
        .collect();
    out(&table(
        &[
            "ID", "EVENT", "STATUS", "ATTEMPTS", "RESPONSE", "DURATION", "CREATED",
        ],
        &rows,
    ))
}

async fn registry_sync(client: &Client, as_json: bool) -> CliResult<()> {
    note("syncing kiln's image versions with the registry…");
    let v = client
        .json_timeout(Method::POST, &["registry", "sync"], &[], None, SYNC_TIMEOUT)
        .await?;
    if as_json {
        return output::json(&v);
    }
    out(&output::report(&v))
}
