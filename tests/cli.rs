//! The `kiln` command-line client and `kiln apply`, as people and scripts run them: the real binary
//! against the real server (started by the harness), with a real registry and real git repositories.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::kiln::{ADMIN_TOKEN, Kiln};
use support::{GitRepo, Registry};

struct Server {
    kiln: Kiln,
    registry: Registry,
}

async fn start() -> Server {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    Server { kiln, registry }
}

/// What a run of the binary left behind.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "{self:#?}");
        self
    }
    fn failed(&self) -> &Self {
        assert_eq!(self.code, Some(1), "{self:#?}");
        self
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs `kiln ARGS` with KILN_URL and KILN_TOKEN for `url`, plus `env`, and nothing else from the
/// test's environment.
async fn kiln_at(url: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KILN_URL", url)
        .env("KILN_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(300), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("kiln {} did not finish in 300 s", args.join(" ")))
        .expect("run the kiln binary");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn kiln(s: &Server, args: &[&str]) -> Run {
    kiln_at(&s.kiln.url, args, &[]).await
}

async fn kiln_env(s: &Server, args: &[&str], env: &[(&str, &str)]) -> Run {
    kiln_at(&s.kiln.url, args, env).await
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("rules/examples")
        .join(name)
        .display()
        .to_string()
}

/// Everything apply manages, as the API shows it (timestamps included: an update moves them;
/// webhook secrets are never shown).
async fn api_state(kiln: &Kiln) -> Value {
    let (status, namespaces) = kiln.get("/namespaces").await;
    assert_eq!(status, StatusCode::OK, "{namespaces}");
    let mut out = serde_json::Map::new();
    for ns in namespaces.as_array().unwrap() {
        let name = ns["name"].as_str().unwrap();
        let (_, repos) = kiln
            .get(&format!("/namespaces/{name}/repos?include_hidden=true"))
            .await;
        let mut repos_out = serde_json::Map::new();
        for repo in repos.as_array().unwrap() {
            let r = repo["name"].as_str().unwrap();
            let (s, source) = kiln
                .get(&format!("/namespaces/{name}/repos/{r}/source"))
                .await;
            let source = if s == StatusCode::NOT_FOUND {
                Value::Null
            } else {
                source
            };
            let (_, rules) = kiln
                .get(&format!("/namespaces/{name}/repos/{r}/rules"))
                .await;
            let (_, webhooks) = kiln
                .get(&format!("/namespaces/{name}/repos/{r}/webhooks"))
                .await;
            repos_out.insert(
                r.to_string(),
                json!({"repo": repo, "source": source, "rules": rules, "webhooks": webhooks}),
            );
        }
        out.insert(
            name.to_string(),
            json!({"namespace": ns, "repos": repos_out}),
        );
    }
    Value::Object(out)
}

/// The column a header starts at, in characters, and that every data row has text there.
fn column_start(table: &str, header: &str) -> usize {
    let head = table.lines().next().expect("a header line");
    let byte = head
        .find(header)
        .unwrap_or_else(|| panic!("no {header} in {head:?}"));
    head[..byte].chars().count()
}

fn cell_at(line: &str, column: usize) -> String {
    line.chars()
        .skip(column)
        .take_while(|c| *c != ' ')
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repos_create_list_hide_unhide_as_tables_and_json() {
    let s = start().await;
    let r = kiln(&s, &["namespaces", "create", "acme"]).await;
    assert_eq!(r.ok().stdout, "created namespace acme\n");

    let r = kiln(
        &s,
        &[
            "repos",
            "create",
            "acme/api",
            "--summary",
            "The API server",
            "--category",
            "server",
        ],
    )
    .await;
    assert_eq!(
        r.ok().stdout,
        format!(
            "created repository acme/api (images: {}/acme/api)\n",
            s.registry.addr
        )
    );
    let r = kiln(&s, &["repos", "create", "acme/db", "--json"]).await;
    let created = r.ok().json();
    assert_eq!(created["name"], "db");
    assert_eq!(created["category"], "other");

    // The table: a header, one aligned line per repository.
    let r = kiln(&s, &["repos", "list", "acme"]).await;
    let table = &r.ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("NAME  CATEGORY  CI  CREATED"),
        "{table}"
    );
    assert!(lines[0].ends_with("SUMMARY"), "{table}");
    let category = column_start(table, "CATEGORY");
    let summary = column_start(table, "SUMMARY");
    let api = lines
        .iter()
        .find(|l| l.starts_with("api "))
        .expect("api row");
    assert_eq!(cell_at(api, category), "server");
    assert_eq!(
        api.chars().skip(summary).collect::<String>(),
        "The API server"
    );
    let db = lines.iter().find(|l| l.starts_with("db ")).expect("db row");
    assert_eq!(cell_at(db, category), "other");

    // JSON: the API's list, for scripts.
    let list = kiln(&s, &["repos", "list", "acme", "--json"])
        .await
        .ok()
        .json();
    let mut names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["api", "db"]);

    let r = kiln(&s, &["repos", "hide", "acme/db"]).await;
    assert_eq!(r.ok().stdout, "acme/db is hidden\n");
    let r = kiln(&s, &["repos", "list", "acme"]).await;
    assert!(!r.ok().stdout.contains("db "), "{}", r.stdout);
    let r = kiln(&s, &["repos", "list", "acme", "--all"]).await;
    let table = &r.ok().stdout;
    let hidden = column_start(table, "HIDDEN");
    let db = table
        .lines()
        .find(|l| l.starts_with("db "))
        .expect("db row");
    assert_eq!(cell_at(db, hidden), "yes", "{table}");
    let listed = kiln(&s, &["repos", "list", "acme", "--all", "--json"])
        .await
        .ok()
        .json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "db" && r["hidden"] == true),
        "{listed}"
    );

    let r = kiln(&s, &["repos", "unhide", "acme/db", "--json"]).await;
    assert_eq!(r.ok().json()["hidden"], false);
    let r = kiln(&s, &["repos", "list", "acme"]).await;
    assert!(
        r.ok().stdout.lines().any(|l| l.starts_with("db ")),
        "{}",
        r.stdout
    );

    let r = kiln(&s, &["namespaces", "list"]).await;
    assert!(
        r.ok().stdout.starts_with("NAME  CREATED\nacme  "),
        "{}",
        r.stdout
    );
    let r = kiln(&s, &["repos", "list", "acme", "--json"]).await;
    assert_eq!(r.ok().json().as_array().unwrap().len(), 2);

    // Empty lists say so.
    kiln(&s, &["namespaces", "create", "empty"]).await.ok();
    let r = kiln(&s, &["repos", "list", "empty"]).await;
    assert_eq!(
        r.ok().stdout,
        "no repositories in empty (hidden ones are listed with --all)\n"
    );
    let r = kiln(&s, &["rules", "list", "acme/api"]).await;
    assert_eq!(r.ok().stdout, "acme/api has no build rules\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_exit_1_with_the_message_and_field() {
    let s = start().await;
    kiln(&s, &["namespaces", "create", "acme"]).await.ok();

    let long = "x".repeat(101);
    let r = kiln(&s, &["repos", "create", "acme/api", "--summary", &long]).await;
    assert_eq!(
        r.failed().stderr,
        "kiln: must be at most 100 characters (got 101) (summary)\n"
    );
    assert_eq!(r.stdout, "");
    let r = kiln(&s, &["repos", "create", "acme/Api"]).await;
    assert!(
        r.failed()
            .stderr
            .starts_with("kiln: must not contain uppercase 'A'")
            && r.stderr.ends_with("(name)\n"),
        "{r:#?}"
    );
    let r = kiln(&s, &["repos", "create", "acme/api", "--category", "games"]).await;
    assert!(r.failed().stderr.ends_with("(category)\n"), "{r:#?}");
    let r = kiln(&s, &["repos", "list", "nope"]).await;
    assert_eq!(r.failed().stderr, "kiln: namespace nope not found\n");
    let r = kiln(&s, &["repos", "create", "acme/api"]).await;
    r.ok();
    let r = kiln(&s, &["repos", "create", "acme/api", "--json"]).await;
    assert_eq!(
        r.failed().stderr,
        "kiln: repository 'acme/api' already exists (name)\n"
    );
    assert_eq!(r.stdout, "", "no JSON on failure");

    // No token, a wrong token.
    let r = kiln_at(
        &s.kiln.url,
        &["repos", "list", "acme"],
        &[("KILN_TOKEN", "")],
    )
    .await;
    assert!(
        r.failed()
            .stderr
            .starts_with("kiln: no API token: set KILN_TOKEN"),
        "{r:#?}"
    );
    let r = kiln_env(&s, &["repos", "list", "acme", "--token", "kiln_wrong"], &[]).await;
    assert_eq!(r.failed().stderr.lines().count(), 1, "{r:#?}");

    // A malformed argument is a usage error (exit 2) from clap, before any request.
    let r = kiln(&s, &["repos", "hide", "acme"]).await;
    assert_eq!(r.code, Some(2), "{r:#?}");
    assert!(r.stderr.contains("NAMESPACE/REPOSITORY"), "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_one_line() {
    let port = support::free_port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        &["repos", "list", "acme"][..],
        &["logs", "0190-abc", "--follow"],
        &["apply", &example("push-only.toml")],
    ] {
        let r = kiln_at(&url, args, &[]).await;
        assert_eq!(r.code, Some(1), "{args:?}: {r:#?}");
        assert_eq!(r.stdout, "");
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {r:#?}");
        assert!(
            r.stderr
                .starts_with(&format!("kiln: cannot reach kiln at {url}: ")),
            "{r:#?}"
        );
    }
    let r = kiln_at("localhost:8080", &["repos", "list", "acme"], &[]).await;
    assert!(
        r.failed()
            .stderr
            .starts_with("kiln: KILN_URL must be an http:// or https:// URL"),
        "{r:#?}"
    );
}

const EXAMPLE_SECRETS: &[(&str, &str)] = &[
    ("ACME_API_WEBHOOK_SECRET", "acme-api-secret-0123456789"),
    ("NGINX_WEBHOOK_SECRET", "nginx-secret-0123456789abc"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_the_examples_dry_run_then_apply_then_again_changes_nothing() {
    let s = start().await;
    let files: Vec<String> = ["ci.toml", "regex.toml", "push-only.toml", "dockerhub.toml"]
        .iter()
        .map(|f| example(f))
        .collect();
    let mut args = vec!["apply", "--dry-run"];
    args.extend(files.iter().map(String::as_str));

    // The dry run prints the whole plan as a diff and changes nothing.
    let before = api_state(&s.kiln).await;
    let r = kiln_env(&s, &args, EXAMPLE_SECRETS).await;
    let plan = &r.ok().stdout;
    for line in [
        "+ create namespace acme\n",
        "+ create repository acme/api\n      summary: \"The API server\"\n      category: \"server\"\n",
        "+ create source acme/api: github https://github.com/acme/api.git (webhook secret from $ACME_API_WEBHOOK_SECRET)\n",
        "+ create rule acme/api: branch main (Dockerfile in .)\n      version: \"latest\", overwrite: true, enabled: true\n",
        "+ create rule acme/api: branch release-* (Dockerfile in .)\n      version: \"\", overwrite: false, enabled: true\n",
        "+ create rule acme/api: tag v* (docker/Dockerfile.prod in .)\n",
        "+ create rule acme/cli: tag /^v(\\d+)\\.(\\d+)\\.(\\d+)$/ (Dockerfile in .)\n      version: \"{1}.{2}.{3}\"",
        "+ create source acme/cli: github https://github.com/acme/cli.git (kiln generates the webhook secret)\n",
        "+ create repository acme/postgres\n",
        "+ create namespace library\n",
        "+ create rule library/nginx: tag /^v([0-9.]+)$/ (Dockerfile in .)\n      version: \"release-{\\1}\"",
        "+ create webhook acme/api: \"deploy\"\n      url: \"https://deploy.acme.example/kiln\"\n      events: [\"build.failed\", \"image.pushed\"], tag_filter: \"v*\", payload_format: \"kiln\", active: true\n      secret: kiln generates it (printed once)\n",
    ] {
        assert!(plan.contains(line), "no {line:?} in the plan:\n{plan}");
    }
    // Dependencies first: namespace, repository, source, rules.
    let at = |needle: &str| plan.find(needle).unwrap_or_else(|| panic!("{needle}"));
    assert!(at("+ create namespace acme") < at("+ create repository acme/api"));
    assert!(at("+ create repository acme/api") < at("+ create source acme/api"));
    assert!(at("+ create source acme/api") < at("+ create rule acme/api"));
    assert!(
        plan.ends_with(
            "plan: 22 to create, 0 to update, 0 to delete (dry run: nothing was changed)\n"
        ),
        "{plan}"
    );
    assert_eq!(
        api_state(&s.kiln).await,
        before,
        "a dry run changes nothing"
    );

    // Apply: the same plan, then what kiln generated, then the summary.
    args.remove(1);
    let r = kiln_env(&s, &args, EXAMPLE_SECRETS).await;
    let applied = &r.ok().stdout;
    assert!(
        applied.starts_with(plan.lines().next().unwrap()),
        "{applied}"
    );
    assert!(
        applied.contains("acme/cli: webhook secret generated by kiln (shown only now): "),
        "{applied}"
    );
    assert!(
        !applied.contains("acme/api: webhook secret generated"),
        "{applied}"
    );
    assert_eq!(
        applied
            .matches("  acme/api: secret of webhook \"deploy\" generated by kiln (shown only now; the receiver checks signatures with it): whsec_")
            .count(),
        1,
        "{applied}"
    );
    assert!(
        applied.ends_with("applied: 22 created, 0 updated, 0 deleted\n"),
        "{applied}"
    );

    let state = api_state(&s.kiln).await;
    let api = &state["acme"]["repos"]["api"];
    assert_eq!(api["repo"]["summary"], "The API server");
    assert_eq!(api["repo"]["ci"], true);
    assert_eq!(
        api["source"]["clone_url"],
        "https://github.com/acme/api.git"
    );
    let rules: Vec<(String, String, String, bool, bool)> = api["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["type"].as_str().unwrap().to_string(),
                r["name"].as_str().unwrap().to_string(),
                r["version"].as_str().unwrap().to_string(),
                r["overwrite"].as_bool().unwrap(),
                r["enabled"].as_bool().unwrap(),
            )
        })
        .collect();
    for want in [
        ("branch", "main", "latest", true, true),
        ("branch", "release-*", "", false, true),
        ("tag", "v*", "", true, true),
        ("branch", "feature/*", "dev-{sourceref}-{sha7}", true, false),
    ] {
        let want = (
            want.0.to_string(),
            want.1.to_string(),
            want.2.to_string(),
            want.3,
            want.4,
        );
        assert!(rules.contains(&want), "{want:?} not in {rules:?}");
    }
    assert_eq!(rules.len(), 4);
    assert_eq!(
        state["acme"]["repos"]["cli"]["rules"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(state["acme"]["repos"]["postgres"]["source"], Value::Null);
    assert_eq!(
        state["library"]["repos"]["nginx"]["rules"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let (_, hooks) = s.kiln.get("/namespaces/acme/repos/api/webhooks").await;
    assert_eq!(hooks.as_array().unwrap().len(), 1, "{hooks}");
    assert_eq!(hooks[0]["name"], "deploy");
    assert_eq!(hooks[0]["tag_filter"], "v*");

    // The webhook secret from the environment is the one kiln checks: a hook signed with it is
    // accepted (202), one signed with another is not (401).
    let payload = support::github_ping_payload("https://github.com/acme/api.git");
    let (status, body) = s
        .kiln
        .github_hook("ping", "d-1", EXAMPLE_SECRETS[0].1, &payload)
        .await;
    assert!(status.is_success(), "{status} {body}");
    let (status, _) = s
        .kiln
        .github_hook("ping", "d-2", "another-secret-0123456789", &payload)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Again: nothing to do, nothing touched (not even an updated_at).
    let r = kiln_env(&s, &args, EXAMPLE_SECRETS).await;
    assert_eq!(r.ok().stdout, "no changes\n");
    args.insert(1, "--prune");
    let r = kiln_env(&s, &args, EXAMPLE_SECRETS).await;
    assert_eq!(r.ok().stdout, "no changes\n");
    assert_eq!(api_state(&s.kiln).await, state);
}

/// A rules file for a shop namespace whose `web` repository builds from `clone_url`.
fn shop_file(
    dir: &Path,
    clone_url: &str,
    main_version: &str,
    with_tag_rule: bool,
    with_old: bool,
) -> PathBuf {
    let mut text = format!(
        r#"[[namespace]]
name = "shop"

[[namespace.repository]]
name = "web"
summary = "The shop"

[namespace.repository.source]
provider = "github"
clone_url = "{clone_url}"

[[namespace.repository.rule]]
type = "branch"
name = "main"
version = "{main_version}"
"#
    );
    if with_tag_rule {
        text.push_str("\n[[namespace.repository.rule]]\ntype = \"tag\"\nname = \"v*\"\n");
    }
    if with_old {
        text.push_str("\n[[namespace.repository]]\nname = \"old\"\ncategory = \"os\"\n");
    }
    let path = dir.join("shop.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn rule_ids(state: &Value, repo: &str) -> Vec<(String, String, String)> {
    state["shop"]["repos"][repo]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["name"].as_str().unwrap().to_string(),
                r["version"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_rule_updates_it_and_prune_deletes_what_the_file_dropped() {
    let s = start().await;
    let git = GitRepo::new();
    let dir = tempfile::tempdir().unwrap();
    let url = git.clone_url();
    let file = shop_file(dir.path(), &url, "", true, true);
    let file = file.to_str().unwrap();
    kiln(&s, &["apply", file]).await.ok();
    // Something else on the server, in a namespace the file does not declare.
    kiln(&s, &["namespaces", "create", "elsewhere"]).await.ok();
    kiln(&s, &["repos", "create", "elsewhere/thing"]).await.ok();
    let first = api_state(&s.kiln).await;
    let ids = rule_ids(&first, "web");
    assert_eq!(ids.len(), 2, "{first}");
    let main_id = ids.iter().find(|r| r.1 == "main").unwrap().0.clone();
    let tag_id = ids.iter().find(|r| r.1 == "v*").unwrap().0.clone();

    // Edit main's version, drop the tag rule and the old repository.
    shop_file(dir.path(), &url, "edge", false, false);
    let r = kiln(&s, &["apply", file]).await;
    let out = &r.ok().stdout;
    assert!(
        out.starts_with(&format!(
            "~ update rule shop/web: branch main (Dockerfile in .) (id {main_id})\n      version: \"\" → \"edge\"\n"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "  kept (not in the files; --prune deletes it): rule shop/web: tag v* (Dockerfile in .) (id {tag_id})\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("  kept (not in the files; --prune deletes it): repository shop/old\n"),
        "{out}"
    );
    assert!(!out.contains("elsewhere"), "{out}");
    assert!(
        out.ends_with("applied: 0 created, 1 updated, 0 deleted\n"),
        "{out}"
    );
    let second = api_state(&s.kiln).await;
    let ids = rule_ids(&second, "web");
    assert!(
        ids.contains(&(main_id.clone(), "main".into(), "edge".into())),
        "the same rule, updated: {ids:?}"
    );
    assert!(
        ids.iter().any(|r| r.0 == tag_id),
        "kept without --prune: {ids:?}"
    );
    assert!(second["shop"]["repos"]["old"].is_object());

    // --prune --dry-run shows the deletes and does none.
    let r = kiln(&s, &["apply", "--prune", "--dry-run", file]).await;
    let out = &r.ok().stdout;
    assert_eq!(
        out,
        &format!(
            "- delete rule shop/web: tag v* (Dockerfile in .) (id {tag_id})\n\
             - delete repository shop/old (with its rules, builds, history and its tags in the registry)\n\
             \n  left alone: namespace elsewhere is not in the files (kiln cannot delete namespaces; its 1 repository is kept)\n\
             plan: 0 to create, 0 to update, 2 to delete (dry run: nothing was changed)\n"
        )
    );
    assert_eq!(api_state(&s.kiln).await, second);

    let r = kiln(&s, &["apply", "--prune", file]).await;
    assert!(
        r.ok()
            .stdout
            .ends_with("applied: 0 created, 0 updated, 2 deleted\n"),
        "{}",
        r.stdout
    );
    let third = api_state(&s.kiln).await;
    assert_eq!(
        rule_ids(&third, "web"),
        vec![(main_id, "main".into(), "edge".into())]
    );
    assert!(third["shop"]["repos"]["old"].is_null(), "{third}");
    assert!(
        third["elsewhere"]["repos"]["thing"].is_object(),
        "left alone"
    );

    let r = kiln(&s, &["apply", "--prune", file]).await;
    assert!(r.ok().stdout.ends_with("no changes\n"), "{}", r.stdout);
    assert_eq!(api_state(&s.kiln).await, third);

    // JSON for scripts: the plan as data.
    shop_file(dir.path(), &url, "edge", true, false);
    let r = kiln(&s, &["apply", "--dry-run", "--json", file]).await;
    let plan = r.ok().json();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["changes"].as_array().unwrap().len(), 1, "{plan}");
    assert_eq!(plan["changes"][0]["op"], "create_rule");
    assert_eq!(plan["changes"][0]["rule"]["name"], "v*");
    assert_eq!(api_state(&s.kiln).await, third);
}

/// A rules file for a push-only `hooks/app` repository with, optionally, a `notify` webhook.
fn hooks_file(dir: &Path, events: Option<&str>) -> PathBuf {
    let mut text = String::from(
        "[[namespace]]\nname = \"hooks\"\n\n[[namespace.repository]]\nname = \"app\"\n",
    );
    if let Some(events) = events {
        text.push_str(&format!(
            "\n[[namespace.repository.webhook]]\nname = \"notify\"\nurl = \"https://notify.example.com/kiln\"\n\
             events = {events}\ntag_filter = \"release-*\"\npayload_format = \"cloudevents\"\n"
        ));
    }
    let path = dir.join("hooks.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_created_updated_and_pruned_and_a_generated_secret_is_printed_once() {
    let s = start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = hooks_file(dir.path(), Some("[\"image.pushed\"]"));
    let file = file.to_str().unwrap();
    let hooks = |state: &Value| state["hooks"]["repos"]["app"]["webhooks"].clone();

    let r = kiln(&s, &["apply", "--dry-run", file]).await;
    assert!(
        r.ok().stdout.contains(
            "+ create webhook hooks/app: \"notify\"\n      url: \"https://notify.example.com/kiln\"\n      \
             events: [\"image.pushed\"], tag_filter: \"release-*\", payload_format: \"cloudevents\", active: true\n      \
             secret: kiln generates it (printed once)\n"
        ),
        "{}",
        r.stdout
    );

    // Created with the file's fields; kiln generates the secret and apply prints it, once.
    let r = kiln(&s, &["apply", file]).await;
    let out = &r.ok().stdout;
    let marker = "  hooks/app: secret of webhook \"notify\" generated by kiln (shown only now; the receiver checks signatures with it): whsec_";
    assert_eq!(out.matches(marker).count(), 1, "{out}");
    assert!(
        out.ends_with("applied: 3 created, 0 updated, 0 deleted\n"),
        "{out}"
    );
    let first = api_state(&s.kiln).await;
    let list = hooks(&first);
    assert_eq!(list.as_array().unwrap().len(), 1, "{first}");
    let hook = &list[0];
    assert_eq!(hook["name"], "notify");
    assert_eq!(hook["url"], "https://notify.example.com/kiln");
    assert_eq!(hook["events"], json!(["image.pushed"]));
    assert_eq!(hook["tag_filter"], "release-*");
    assert_eq!(hook["payload_format"], "cloudevents");
    assert_eq!(hook["active"], true);
    assert!(hook.get("secret").is_none(), "write-only: {hook}");
    let id = hook["id"].as_str().unwrap().to_string();

    // Again: nothing to do, nothing touched, no secret printed.
    let r = kiln(&s, &["apply", file]).await;
    assert_eq!(r.ok().stdout, "no changes\n");
    assert_eq!(api_state(&s.kiln).await, first);
    // Rotating needs secret_env for a webhook: said as a warning, nothing pretended.
    let r = kiln(&s, &["apply", "--rotate-secrets", file]).await;
    assert_eq!(
        r.ok().stdout,
        format!(
            "  warning: secret not rotated: webhook hooks/app: \"notify\" (id {id}) has no secret_env, \
             and kiln generates a webhook secret only when it creates the webhook (name a variable \
             with secret_env, or delete the webhook and apply again)\nno changes\n"
        )
    );
    assert_eq!(api_state(&s.kiln).await, first);

    // Edit the events (in any order: a set): one update of the same webhook.
    hooks_file(dir.path(), Some("[\"build.failed\", \"image.pushed\"]"));
    let r = kiln(&s, &["apply", file]).await;
    assert_eq!(
        r.ok().stdout,
        format!(
            "~ update webhook hooks/app: \"notify\" (id {id})\n      \
             events: [\"image.pushed\"] → [\"build.failed\", \"image.pushed\"]\n\n\
             applied: 0 created, 1 updated, 0 deleted\n"
        )
    );
    let second = api_state(&s.kiln).await;
    assert_eq!(hooks(&second)[0]["id"], id.as_str());
    assert_eq!(
        hooks(&second)[0]["events"],
        json!(["build.failed", "image.pushed"])
    );
    hooks_file(dir.path(), Some("[\"image.pushed\", \"build.failed\"]"));
    let r = kiln(&s, &["apply", file]).await;
    assert_eq!(r.ok().stdout, "no changes\n");

    // Dropped from the file: kept without --prune, deleted with it.
    hooks_file(dir.path(), None);
    let r = kiln(&s, &["apply", file]).await;
    assert_eq!(
        r.ok().stdout,
        format!(
            "  kept (not in the files; --prune deletes it): webhook hooks/app: \"notify\" (id {id})\nno changes\n"
        )
    );
    let r = kiln(&s, &["apply", "--prune", file]).await;
    assert_eq!(
        r.ok().stdout,
        format!(
            "- delete webhook hooks/app: \"notify\" (id {id}; \"https://notify.example.com/kiln\")\n\n\
             applied: 0 created, 0 updated, 1 deleted\n"
        )
    );
    let third = api_state(&s.kiln).await;
    assert_eq!(hooks(&third), json!([]), "{third}");
    let r = kiln(&s, &["apply", "--prune", file]).await;
    assert_eq!(r.ok().stdout, "no changes\n");

    // A secret from the environment is sent at creation: kiln prints none; --json lists the
    // created webhook.
    let secret = "whsec_YWNtZS1hcGktZGVwbG95LWhvb2stc2VjcmV0LTAxMjM=";
    std::fs::write(
        dir.path().join("hooks.toml"),
        "[[namespace]]\nname = \"hooks\"\n[[namespace.repository]]\nname = \"app\"\n\
         [[namespace.repository.webhook]]\nname = \"signed\"\nurl = \"https://notify.example.com/s\"\nsecret_env = \"HOOK_SECRET\"\n",
    )
    .unwrap();
    let r = kiln(&s, &["apply", file]).await;
    assert!(
        r.failed()
            .stderr
            .contains("webhook \"signed\" of hooks/app: secret_env: the environment variable HOOK_SECRET is not set"),
        "{r:#?}"
    );
    let r = kiln_env(&s, &["apply", "--json", file], &[("HOOK_SECRET", secret)]).await;
    let report = r.ok().json();
    assert_eq!(report["applied"], 1, "{report}");
    assert_eq!(report["webhooks"][0]["name"], "signed");
    assert_eq!(report["webhooks"][0]["repository"], "hooks/app");
    assert!(report["webhooks"][0].get("secret").is_none(), "{report}");
    assert!(!r.stdout.contains(secret));
    let r = kiln_env(
        &s,
        &["apply", "--rotate-secrets", file],
        &[("HOOK_SECRET", secret)],
    )
    .await;
    let out = &r.ok().stdout;
    assert!(
        out.contains("      secret: rotated, set from $HOOK_SECRET\n"),
        "{out}"
    );
    assert!(
        out.ends_with("applied: 0 created, 1 updated, 0 deleted\n"),
        "{out}"
    );
}

/// A source's clone URL credentials come from the environment variable `credentials_env` names,
/// are sent to kiln, and are never printed by `kiln apply`, in any mode; written into the file's
/// `clone_url`, they are refused without being repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_takes_clone_url_credentials_from_the_environment_and_never_prints_them() {
    const TOKEN: &str = "ghp_applyTestToken0123456789";
    let s = start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.toml");
    let write = |clone_url: &str, credentials_env: &str| {
        std::fs::write(
            &file,
            format!(
                "[[namespace]]\nname = \"shop\"\n\n[[namespace.repository]]\nname = \"web\"\n\n\
                 [namespace.repository.source]\nprovider = \"github\"\nclone_url = \"{clone_url}\"\n\
                 {credentials_env}"
            ),
        )
        .unwrap();
    };
    let url = "https://git.invalid/shop/web.git";
    write(url, "credentials_env = \"WEB_GIT\"\n");
    let path = file.to_str().unwrap();
    let credentials = format!("kiln-bot:{TOKEN}");
    let env = [("WEB_GIT", credentials.as_str())];
    let mut printed = String::new();

    let r = kiln_env(&s, &["apply", "--dry-run", path], &env).await;
    printed.push_str(&format!("{}{}", r.ok().stdout, r.stderr));
    assert!(
        r.stdout.contains("credentials from $WEB_GIT"),
        "{}",
        r.stdout
    );
    let r = kiln_env(&s, &["apply", path], &env).await;
    printed.push_str(&format!("{}{}", r.ok().stdout, r.stderr));
    let (_, source) = s.kiln.get("/namespaces/shop/repos/web/source").await;
    assert_eq!(source["clone_url"], url, "{source}");
    assert_eq!(source["has_credentials"], true, "{source}");
    let app = &s.kiln.server.app;
    let stored = kiln::db::sources::all(&app.db, &app.secrets).await.unwrap();
    assert_eq!(stored[0].credentials.as_deref(), Some(credentials.as_str()));

    // Set: nothing to do, the variable not even needed; rotating sends them again.
    let r = kiln(&s, &["apply", path]).await;
    assert_eq!(r.ok().stdout, "no changes\n");
    for args in [
        &["apply", "--rotate-secrets", "--json", path][..],
        &["apply", "--rotate-secrets", path],
    ] {
        let r = kiln_env(&s, args, &env).await;
        printed.push_str(&format!("{}{}", r.ok().stdout, r.stderr));
    }
    let r = kiln(&s, &["apply", "--rotate-secrets", path]).await;
    r.failed();
    assert!(r.stderr.contains("WEB_GIT is not set"), "{}", r.stderr);

    // In the file itself: refused, not repeated, nothing applied.
    write(
        &format!("https://kiln-bot:{TOKEN}@git.invalid/shop/other.git"),
        "",
    );
    let before = api_state(&s.kiln).await;
    for args in [&["apply", path][..], &["apply", "--json", path]] {
        let r = kiln(&s, args).await;
        r.failed();
        assert!(
            r.stderr
                .contains("clone_url: credentials never go in a rules file"),
            "{}",
            r.stderr
        );
        printed.push_str(&format!("{}{}", r.stdout, r.stderr));
    }
    assert_eq!(api_state(&s.kiln).await, before);
    assert!(!printed.contains(TOKEN), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_lists_every_error_and_nothing_is_applied() {
    let s = start().await;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"[[namespace]]
name = "acme"

[[namespace.repository]]
name = "api"
sumary = "typo"
category = "games"

[[namespace.repository.rule]]
type = "branch"
name = "main"

[[namespace.repository]]
name = "web"
[namespace.repository.source]
provider = "github"
clone_url = "https://github.com/acme/web.git"
webhook_secret = "never-in-a-file"

[[namespace.repository.rule]]
type = "tag"
name = '/^v(\d+)$/'
version = "{2}"
dockerfile = "/etc/Dockerfile"

[[namespace.repository.webhook]]
name = "slack"
url = "ftp://hooks.example.com/x"
"#,
    )
    .unwrap();
    let bad = bad.to_str().unwrap();
    let before = api_state(&s.kiln).await;
    for args in [&["apply", bad][..], &["apply", "--dry-run", bad]] {
        let r = kiln(&s, args).await;
        r.failed();
        assert_eq!(r.stdout, "", "no plan for a bad file");
        let lines: Vec<&str> = r.stderr.lines().collect();
        let want = [
            format!(
                "{bad}:6:1: repository \"acme/api\": sumary: unknown key (did you mean \"summary\"?)"
            ),
            format!(
                "{bad}:7:12: repository \"acme/api\": category: must be one of database, server, language, web-framework, os, other (got 'games')"
            ),
            format!("{bad}:9:1: repository \"acme/api\": build rules need a git source"),
            format!(
                "{bad}:18:1: source of acme/web: webhook_secret: secrets never go in a rules file"
            ),
            format!("{bad}:23:11: rule #1 of acme/web: version: "),
            format!(
                "{bad}:24:14: rule #1 of acme/web: dockerfile: must be a path relative to the repository root"
            ),
            format!(
                "{bad}:28:7: webhook \"slack\" of acme/web: url: must be an http:// or https:// URL with a host"
            ),
            "kiln: 7 errors in the rules files: nothing was applied".to_string(),
        ];
        assert_eq!(lines.len(), want.len(), "{}", r.stderr);
        for (line, want) in lines.iter().zip(&want) {
            assert!(
                line.starts_with(want.as_str()),
                "{line:?} does not start with {want:?}"
            );
        }
    }
    assert_eq!(api_state(&s.kiln).await, before, "nothing applied");

    // Two files defining the same repository conflict.
    let a = dir.path().join("a.toml");
    let b = dir.path().join("b.toml");
    std::fs::write(
        &a,
        "[[namespace]]\nname = \"acme\"\n[[namespace.repository]]\nname = \"api\"\n",
    )
    .unwrap();
    std::fs::write(&b, "[[namespace]]\nname = \"acme\"\n\n[[namespace.repository]]\nname = \"api\"\nsummary = \"other\"\n").unwrap();
    let r = kiln(&s, &["apply", a.to_str().unwrap(), b.to_str().unwrap()]).await;
    assert_eq!(
        r.failed().stderr,
        format!(
            "{}:4:1: repository \"acme/api\" is defined twice: here and at {}:3:1\n\
             kiln: 1 error in the rules files: nothing was applied\n",
            b.display(),
            a.display()
        )
    );

    // A secret the file names but the environment lacks: nothing is applied either.
    let r = kiln(&s, &["apply", &example("ci.toml")]).await;
    assert!(
        r.failed().stderr.contains(
            "ci.toml:14:1: source of acme/api: webhook_secret_env: the environment variable ACME_API_WEBHOOK_SECRET is not set"
        ),
        "{r:#?}"
    );
    assert_eq!(api_state(&s.kiln).await, before, "nothing applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_and_lists_read_every_page() {
    let s = start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.toml");
    let write = |count: usize| {
        let mut text = String::from("[[namespace]]\nname = \"big\"\n");
        for i in 0..count {
            text.push_str(&format!(
                "\n[[namespace.repository]]\nname = \"repo-{i:03}\"\nsummary = \"number {i}\"\n"
            ));
        }
        std::fs::write(&path, text).unwrap();
    };
    let file = path.to_str().unwrap();
    write(230);
    let r = kiln(&s, &["apply", file]).await;
    assert!(
        r.ok()
            .stdout
            .ends_with("applied: 231 created, 0 updated, 0 deleted\n"),
        "{}",
        &r.stdout[r.stdout.len().saturating_sub(300)..]
    );
    // More than one page of the API (200 at most): all of it is read, nothing is created twice.
    let r = kiln(&s, &["apply", file]).await;
    assert_eq!(r.ok().stdout, "no changes\n");
    let listed = kiln(&s, &["repos", "list", "big", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 230);
    let table = kiln(&s, &["repos", "list", "big"]).await;
    assert_eq!(table.ok().stdout.lines().count(), 231);

    write(225);
    let r = kiln(&s, &["apply", "--prune", file]).await;
    let out = &r.ok().stdout;
    for i in 225..230 {
        assert!(
            out.contains(&format!("- delete repository big/repo-{i:03} ")),
            "{out}"
        );
    }
    assert!(
        out.ends_with("applied: 0 created, 0 updated, 5 deleted\n"),
        "{out}"
    );
    let listed = kiln(&s, &["repos", "list", "big", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 225);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_and_registry_sync() {
    let registry = Registry::start();
    let kiln_server = Kiln::start(&registry, &[("KILN_WEBHOOK_ALLOW", "127.0.0.1")]).await;
    let s = Server {
        kiln: kiln_server,
        registry,
    };
    let receiver = support::RecordingServer::start().await;
    kiln(&s, &["namespaces", "create", "acme"]).await.ok();
    kiln(&s, &["repos", "create", "acme/api"]).await.ok();
    let (status, hook) = s
        .kiln
        .post(
            "/namespaces/acme/repos/api/webhooks",
            json!({"name": "ci", "url": format!("{}/hook", receiver.url)}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    let hook_id = hook["id"].as_str().unwrap();

    let r = kiln(&s, &["webhooks", "deliveries", "acme/api", hook_id]).await;
    assert_eq!(
        r.ok().stdout,
        format!("webhook {hook_id} of acme/api has no deliveries yet\n")
    );
    let (status, sent) = s
        .kiln
        .post(
            &format!("/namespaces/acme/repos/api/webhooks/{hook_id}/test"),
            json!({}),
        )
        .await;
    assert!(status.is_success(), "{status} {sent}");
    let delivery_id = sent["id"].as_str().unwrap();

    let r = kiln(&s, &["webhooks", "deliveries", "acme/api", hook_id]).await;
    let table = &r.ok().stdout;
    assert!(
        table.starts_with("ID  ") || table.starts_with("ID "),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with(delivery_id))
        .unwrap_or_else(|| panic!("no row for {delivery_id}:\n{table}"));
    let status_col = column_start(table, "STATUS");
    assert_eq!(cell_at(row, status_col), "succeeded", "{table}");
    assert_eq!(
        cell_at(row, column_start(table, "RESPONSE")),
        "200",
        "{table}"
    );
    assert!(row.contains(" ms "), "{row}");
    let listed = kiln(
        &s,
        &["webhooks", "deliveries", "acme/api", hook_id, "--json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(listed[0]["id"], delivery_id);
    let r = kiln(&s, &["webhooks", "deliveries", "acme/api", "no-such-hook"]).await;
    assert!(r.failed().stderr.starts_with("kiln: "), "{r:#?}");
    assert!(r.stderr.contains("not found"), "{r:#?}");

    // The registry sync: a line when it starts (stderr), the report (stdout).
    let r = kiln(&s, &["registry", "sync"]).await;
    assert_eq!(
        r.ok().stderr,
        "syncing kiln's image versions with the registry…\n"
    );
    assert!(r.stdout.contains("repositories: 0\n"), "{}", r.stdout);
    assert!(r.stdout.contains("errors: (none)\n"), "{}", r.stdout);
    let report = kiln(&s, &["registry", "sync", "--json"]).await.ok().json();
    assert_eq!(report["repositories"], 0, "{report}");
}

/// A repository whose `main` builds FROM scratch, linked by `kiln apply` with a rule that builds
/// and one whose Dockerfile is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_now_wait_streams_the_log_and_fails_when_the_build_does() {
    support::ensure_docker();
    let s = start().await;
    let git = GitRepo::new();
    git.write("Dockerfile", "FROM scratch\nCOPY hello.txt /hello.txt\n");
    // Unique per run, so Docker's build cache never hides a step's output.
    git.write("hello.txt", format!("hello from {}\n", git.clone_url()));
    git.commit("first");
    git.push("main");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.toml");
    std::fs::write(
        &file,
        format!(
            "[[namespace]]\nname = \"acme\"\n\n[[namespace.repository]]\nname = \"app\"\n\n\
             [namespace.repository.source]\nprovider = \"github\"\nclone_url = \"{}\"\n\n\
             [[namespace.repository.rule]]\ntype = \"branch\"\nname = \"main\"\n\n\
             [[namespace.repository.rule]]\ntype = \"branch\"\nname = \"main\"\n\
             dockerfile = \"Missing.Dockerfile\"\nversion = \"broken\"\n",
            git.clone_url()
        ),
    )
    .unwrap();
    kiln(&s, &["apply", file.to_str().unwrap()]).await.ok();
    let rules = kiln(&s, &["rules", "list", "acme/app", "--json"])
        .await
        .ok()
        .json();
    let rule_id = |dockerfile: &str| {
        rules
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["dockerfile"] == dockerfile)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (good, broken) = (rule_id("Dockerfile"), rule_id("Missing.Dockerfile"));
    let table = kiln(&s, &["rules", "list", "acme/app"]).await;
    assert!(
        table.ok().stdout.lines().any(|l| l.starts_with(&good)),
        "{}",
        table.stdout
    );

    // --wait: the log streams to stdout, then the result line.
    let r = kiln(&s, &["build", "now", "acme/app", &good, "--wait"]).await;
    r.ok();
    assert!(
        r.stderr.starts_with("queued build ") && r.stderr.contains("(refs/heads/main)"),
        "{r:#?}"
    );
    // The Dockerfile's step, as BuildKit shows it.
    assert!(
        r.stdout.contains("[1/1] COPY hello.txt /hello.txt"),
        "{}",
        r.stdout
    );
    let last = r.stdout.lines().last().unwrap();
    let image = format!("{}/acme/app:main", s.registry.addr);
    assert!(
        last.starts_with("build ") && last.contains(&format!(" succeeded: {image} (sha256:")),
        "{last}"
    );
    let build_id = last.split_whitespace().nth(1).unwrap().to_string();

    let table = kiln(&s, &["builds", "list", "acme/app"]).await;
    let row = table
        .ok()
        .stdout
        .lines()
        .find(|l| l.starts_with(&build_id))
        .unwrap_or_else(|| panic!("{}", table.stdout))
        .to_string();
    assert_eq!(
        cell_at(&row, column_start(&table.stdout, "STATUS")),
        "succeeded"
    );
    assert_eq!(
        cell_at(&row, column_start(&table.stdout, "TRIGGER")),
        "manual"
    );
    assert_eq!(
        cell_at(&row, column_start(&table.stdout, "COMMIT")),
        git.head()[..7]
    );

    let log = kiln(&s, &["logs", &build_id]).await;
    assert!(
        log.ok().stdout.contains("[1/1] COPY hello.txt /hello.txt"),
        "{log:#?}"
    );
    let followed = kiln(&s, &["logs", &build_id, "--follow"]).await;
    assert_eq!(followed.ok().stdout, log.stdout);
    let lines = kiln(&s, &["logs", &build_id, "--json"]).await;
    let parsed: Vec<String> = lines
        .ok()
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(parsed.join("\n") + "\n", log.stdout);

    let versions = kiln(&s, &["versions", "acme/app"]).await;
    let row = versions
        .ok()
        .stdout
        .lines()
        .find(|l| l.starts_with("main "))
        .unwrap_or_else(|| panic!("{}", versions.stdout))
        .to_string();
    assert_eq!(
        cell_at(&row, column_start(&versions.stdout, "SOURCE")),
        "build"
    );
    assert_eq!(
        cell_at(&row, column_start(&versions.stdout, "BUILD")),
        build_id
    );

    // A build that fails: exit 1 with its reason; --json puts the final build on stdout and the
    // log on stderr.
    let r = kiln(
        &s,
        &["build", "now", "acme/app", &broken, "--wait", "--json"],
    )
    .await;
    r.failed();
    let done = r.json();
    assert_eq!(done["status"], "failed", "{done}");
    let last = r.stderr.lines().last().unwrap();
    assert_eq!(
        last,
        format!(
            "kiln: build {} failed: {}",
            done["id"].as_str().unwrap(),
            done["error"].as_str().unwrap()
        )
    );

    // Without --wait: queued, and the JSON of the queued build.
    let r = kiln(&s, &["build", "now", "acme/app", &good, "--json"]).await;
    let queued = r.ok().json();
    assert_eq!(queued["trigger"], "manual");
    s.kiln.wait_build(queued["id"].as_str().unwrap()).await;

    // The registry now holds acme/app: a sync finds it.
    let r = kiln(&s, &["registry", "sync"]).await;
    assert!(r.ok().stdout.contains("repositories: 1\n"), "{}", r.stdout);
}

// Build settings per rule (issue 9): rules files and `kiln apply`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_build_settings_round_trip_through_apply() {
    let s = start().await;
    let git = GitRepo::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.toml");
    let file = path.to_str().unwrap();
    let head = format!(
        "[[namespace]]\nname = \"shop\"\n[[namespace.repository]]\nname = \"web\"\n\
         [namespace.repository.source]\nprovider = \"github\"\nclone_url = \"{}\"\n\
         [[namespace.repository.rule]]\ntype = \"branch\"\nname = \"main\"\n",
        git.clone_url()
    );
    let settings = "build_args = { GREETING = \"hello\", PORT = \"8080\" }\ntarget = \"runtime\"\n\
                    no_cache = true\nextra_tags = [\"latest\", \"{branch}-latest\"]\ntimeout_minutes = 30\n";
    std::fs::write(&path, format!("{head}{settings}")).unwrap();

    let r = kiln(&s, &["apply", "--dry-run", file]).await;
    assert!(
        r.ok().stdout.contains(
            "      version: \"\", overwrite: true, enabled: true, build_args: {GREETING: \"hello\", \
             PORT: \"8080\"}, target: \"runtime\", no_cache: true, extra_tags: [\"latest\", \
             \"{branch}-latest\"], timeout_minutes: 30\n"
        ),
        "{}",
        r.stdout
    );
    kiln(&s, &["apply", file]).await.ok();
    let (_, rules) = s.kiln.get("/namespaces/shop/repos/web/rules").await;
    let rule = &rules[0];
    assert_eq!(
        rule["build_args"],
        json!({"GREETING": "hello", "PORT": "8080"})
    );
    assert_eq!(rule["target"], "runtime");
    assert_eq!(rule["no_cache"], true);
    assert_eq!(rule["extra_tags"], json!(["latest", "{branch}-latest"]));
    assert_eq!(rule["timeout_minutes"], 30);
    let id = rule["id"].as_str().unwrap().to_string();
    let r = kiln(&s, &["apply", file]).await;
    assert_eq!(r.ok().stdout, "no changes\n");
    assert_eq!(r.stderr, "", "no warning for ordinary build arguments");

    // A build argument that looks like a secret: applied, with a warning naming where it is.
    std::fs::write(
        &path,
        format!("{head}build_args = {{ NPM_TOKEN = \"x\" }}\n"),
    )
    .unwrap();
    let r = kiln(&s, &["apply", file]).await;
    let stderr = r.ok().stderr.clone();
    assert_eq!(
        stderr,
        format!(
            "warning: {file}:8:1: shop/web rule main: build_args.NPM_TOKEN looks like a secret: build \
             arguments are shown with the rule and kept in the image's history (docker history); \
             pass secrets another way\n"
        )
    );
    std::fs::write(&path, format!("{head}{settings}")).unwrap();
    kiln(&s, &["apply", file]).await.ok();

    // Left out of the file: back to the defaults, in place.
    std::fs::write(&path, &head).unwrap();
    let r = kiln(&s, &["apply", file]).await;
    assert_eq!(
        r.ok().stdout,
        format!(
            "~ update rule shop/web: branch main (Dockerfile in .) (id {id})\n\
             \x20     build_args: {{GREETING: \"hello\", PORT: \"8080\"}} → {{}}\n\
             \x20     target: \"runtime\" → \"\"\n\
             \x20     no_cache: true → false\n\
             \x20     extra_tags: [\"latest\", \"{{branch}}-latest\"] → []\n\
             \x20     timeout_minutes: 30 → default\n\
             \napplied: 0 created, 1 updated, 0 deleted\n"
        )
    );
    let (_, rule) = s
        .kiln
        .get(&format!("/namespaces/shop/repos/web/rules/{id}"))
        .await;
    assert_eq!(rule["build_args"], json!({}));
    assert_eq!(rule["timeout_minutes"], Value::Null);
    assert_eq!(rule["extra_tags"], json!([]));
    let r = kiln(&s, &["apply", file]).await;
    assert_eq!(r.ok().stdout, "no changes\n");

    // A bad setting: the file, line and field; nothing applied.
    std::fs::write(
        &path,
        format!("{head}build_args = {{ KILN_TAG = \"x\" }}\ntimeout_minutes = 0\n"),
    )
    .unwrap();
    let r = kiln(&s, &["apply", file]).await;
    r.failed();
    assert!(
        r.stderr.contains(&format!(
            "{file}:11:16: rule #1 of shop/web: build_args.KILN_TAG: KILN_TAG is set by kiln"
        )) && r.stderr.contains(&format!(
            "{file}:12:19: rule #1 of shop/web: timeout_minutes: must be a whole number"
        )),
        "{}",
        r.stderr
    );
}

/// Issue 9: a rule's `schedule`, `paths` and `ignore_paths` go from the file to the server (create, then
/// update in place), apply again says "no changes", and dropping them from the file removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_round_trips_schedules_and_path_filters() {
    let s = start().await;
    let git = GitRepo::new();
    let dir = tempfile::tempdir().unwrap();
    let url = git.clone_url();
    let write = |extra: &str| {
        let text = format!(
            "[[namespace]]\nname = \"shop\"\n[[namespace.repository]]\nname = \"web\"\n\
             [namespace.repository.source]\nprovider = \"github\"\nclone_url = \"{url}\"\n\
             [[namespace.repository.rule]]\ntype = \"branch\"\nname = \"main\"\n{extra}"
        );
        let path = dir.path().join("shop.toml");
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let file = write(
        "schedule = \"0 3 * * MON\"\npaths = [\"src/**\", \"!src/**/*.md\"]\nignore_paths = [\"docs/**\"]\n",
    );
    let r = kiln(&s, &["apply", &file]).await;
    let out = &r.ok().stdout;
    assert!(
        out.contains(
            "version: \"\", overwrite: true, enabled: true, schedule: \"0 3 * * MON\", \
             paths: [\"src/**\", \"!src/**/*.md\"], ignore_paths: [\"docs/**\"]\n"
        ),
        "{out}"
    );
    let (_, rules) = s.kiln.get("/namespaces/shop/repos/web/rules").await;
    let rule = &rules[0];
    assert_eq!(rule["schedule"], "0 3 * * MON", "{rules}");
    assert_eq!(rule["paths"], json!(["src/**", "!src/**/*.md"]));
    assert_eq!(rule["ignore_paths"], json!(["docs/**"]));
    let id = rule["id"].as_str().unwrap().to_string();
    assert_eq!(
        kiln(&s, &["apply", &file]).await.ok().stdout,
        "no changes\n"
    );
    let table = kiln(&s, &["rules", "list", "shop/web"]).await;
    let out = &table.ok().stdout;
    assert!(out.lines().next().unwrap().ends_with("SCHEDULE"), "{out}");
    assert!(
        out.lines().nth(1).unwrap().ends_with("0 3 * * MON"),
        "{out}"
    );

    // Changed in the file: updated in place, same id.
    let file = write("schedule = \"*/2 * * * * *\"\npaths = [\"app/**\"]\n");
    let r = kiln(&s, &["apply", &file]).await;
    let out = &r.ok().stdout;
    assert!(
        out.contains(&format!(
            "~ update rule shop/web: branch main (Dockerfile in .) (id {id})\n      \
             schedule: \"0 3 * * MON\" → \"*/2 * * * * *\"\n      \
             paths: [\"src/**\", \"!src/**/*.md\"] → [\"app/**\"]\n      \
             ignore_paths: [\"docs/**\"] → []\n"
        )),
        "{out}"
    );
    assert_eq!(
        kiln(&s, &["apply", &file]).await.ok().stdout,
        "no changes\n"
    );

    // Dropped from the file: back to the defaults.
    let file = write("");
    kiln(&s, &["apply", &file]).await.ok();
    let (_, rule) = s
        .kiln
        .get(&format!("/namespaces/shop/repos/web/rules/{id}"))
        .await;
    assert_eq!(rule["schedule"], Value::Null, "{rule}");
    assert_eq!(rule["paths"], json!([]));
    assert_eq!(rule["ignore_paths"], json!([]));
    assert_eq!(
        kiln(&s, &["apply", &file]).await.ok().stdout,
        "no changes\n"
    );

    // A bad schedule is an error with the file's line, and nothing is applied.
    let file = write("schedule = \"61 * * * *\"\n");
    let r = kiln(&s, &["apply", &file]).await;
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.contains(":11:12: rule #1 of shop/web: schedule: '61 * * * *' is not a valid cron expression: Minutes"),
        "{}",
        r.stderr
    );
}

/// The "link a repository" picker from the command line (issue 12): the integration's account, its
/// repositories a page at a time and by search (GitLab played by `support::fake_gitlab`), then a
/// repository linked by its name on the host, the push hook installed by kiln (so no secret is
/// printed), and a plain clone URL linked without an integration, whose generated secret is
/// printed once for the user to paste.
#[tokio::test]
async fn integrations_list_the_hosts_repositories_and_repos_link_installs_the_hook() {
    const TOKEN: &str = "glpat-kilnCliToken0123456789";
    let s = start().await;
    let gitlab = support::fake_gitlab::FakeGitLab::start(TOKEN, "kiln-bot").await;
    for name in ["acme/app", "acme/web", "acme/worker"] {
        gitlab.add_project(name, "private");
    }
    s.kiln.repo("acme", "app").await;
    s.kiln.repo("acme", "plain").await;
    let (status, body) = s
        .kiln
        .put(
            "/namespaces/acme/integrations/gitlab",
            json!({"url": gitlab.url(), "token": TOKEN}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");

    let shown = kiln(&s, &["integrations", "show", "acme", "gitlab"]).await;
    shown.ok();
    assert!(shown.stdout.contains("kiln-bot"), "{shown:#?}");
    assert!(!shown.stdout.contains(TOKEN) && !shown.stderr.contains(TOKEN));

    let page1 = kiln(
        &s,
        &["integrations", "repos", "acme", "gitlab", "--per-page", "2"],
    )
    .await;
    page1.ok();
    let listed: Vec<&str> = page1.stdout.lines().skip(1).collect();
    assert_eq!(listed.len(), 2, "{page1:#?}");
    assert!(page1.stdout.contains("acme/app"), "{page1:#?}");
    assert!(page1.stderr.contains("more: --page 2"), "{page1:#?}");
    let found = kiln(
        &s,
        &[
            "integrations",
            "repos",
            "acme",
            "gitlab",
            "--search",
            "work",
            "--json",
        ],
    )
    .await;
    found.ok();
    let names: Vec<String> = found.json()["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["full_name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["acme/worker"]);

    let linked = kiln(
        &s,
        &[
            "repos",
            "link",
            "acme/app",
            "--provider",
            "gitlab",
            "--repository",
            "acme/app",
        ],
    )
    .await;
    linked.ok();
    assert!(
        linked
            .stdout
            .contains("linked acme/app to gitlab repository acme/app"),
        "{linked:#?}"
    );
    assert!(
        linked.stdout.contains("installed on the host by kiln"),
        "{linked:#?}"
    );
    assert!(!linked.stdout.contains("secret"), "{linked:#?}");
    // kiln's public URL here is a loopback address the host could not reach: said on stderr.
    assert!(linked.stderr.contains("KILN_PUBLIC_URL"), "{linked:#?}");
    let hooks = gitlab.hooks();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0].body["url"], format!("{}/hooks/gitlab", s.kiln.url));

    // Without an integration's repository: the generated secret, once, to paste into the host.
    let plain = kiln(
        &s,
        &[
            "repos",
            "link",
            "acme/plain",
            "--provider",
            "github",
            "--clone-url",
            "https://github.com/acme/plain.git",
        ],
    )
    .await;
    plain.ok();
    assert!(
        plain
            .stdout
            .contains(&format!("push webhook URL: {}/hooks/github", s.kiln.url)),
        "{plain:#?}"
    );
    let secret_line = plain
        .stdout
        .lines()
        .find(|l| l.starts_with("webhook secret (shown only now): "))
        .unwrap_or_else(|| panic!("no secret line: {plain:#?}"));
    assert!(secret_line.len() > "webhook secret (shown only now): ".len() + 16);
    let (_, source) = s.kiln.get("/namespaces/acme/repos/plain/source").await;
    assert!(source.get("webhook_secret").is_none(), "{source}");

    // Neither a repository nor a clone URL: clap says so, exit 2, nothing sent.
    let neither = kiln(&s, &["repos", "link", "acme/app", "--provider", "gitlab"]).await;
    assert_eq!(neither.code, Some(2), "{neither:#?}");
}
