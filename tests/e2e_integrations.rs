//! Git host integrations end to end (issue 12), with GitLab's REST API played by a local server
//! answering as GitLab documents it (`support::fake_gitlab`): credentials set, shown without the
//! secret and stored encrypted; repositories listed with paging and search; a source linked by
//! the host's repository name, its push hook installed once with the right URL and secret,
//! updated when the secret is regenerated and removed with the source; commit statuses of real
//! builds (real dockerd, registry and git) set in order; the host's errors recorded and shown
//! while the link and the builds keep working; a private repository fetched with the
//! integration's credentials, which no answer holds. GitHub (a token, and an App whose
//! installation tokens kiln mints) and Gitea are played the same way (`support::fake_github`,
//! `support::fake_gitea`) through the same steps: link by name, hook, private fetch, statuses.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::fake_gitlab::FakeGitLab;
use support::fake_host::Failure;
use support::kiln::Kiln;
use support::{GitHttpServer, GitRepo, Registry};

const TOKEN: &str = "glpat-kilnTestToken0123456789";
const ZERO: &str = "0000000000000000000000000000000000000000";

async fn start() -> (Registry, Kiln, FakeGitLab) {
    support::ensure_docker();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let gitlab = FakeGitLab::start(TOKEN, "kiln-bot").await;
    kiln.repo("acme", "app").await;
    (registry, kiln, gitlab)
}

async fn set_integration(kiln: &Kiln, gitlab: &FakeGitLab) -> Value {
    let (s, body) = kiln
        .put(
            "/namespaces/acme/integrations/gitlab",
            json!({"url": gitlab.url(), "token": TOKEN}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body
}

fn repository(name: &str, content: &str) -> GitRepo {
    let git = GitRepo::named(name);
    git.write("Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n");
    git.write("a.txt", format!("{content} {}\n", git.clone_url()));
    git.commit("first");
    git.push("main");
    git
}

fn gitlab_push(clone_url: &str, after: &str) -> Value {
    json!({
        "object_kind": "push", "event_name": "push", "ref": "refs/heads/main", "before": ZERO,
        "after": after, "checkout_sha": after, "user_username": "dev", "project_id": 1,
        "project": {"id": 1, "name": "app", "git_http_url": clone_url,
                    "git_ssh_url": "git@gitlab.local:acme/app.git",
                    "web_url": "http://gitlab.local/acme/app", "path_with_namespace": "acme/app"},
        "commits": [{"id": after, "message": "change\n"}], "total_commits_count": 1,
        "repository": {"name": "app", "git_http_url": clone_url, "homepage": "http://gitlab.local/acme/app"},
    })
}

/// Sends GitLab's push hook for `after`, signed with `secret`; answers the build ids.
async fn push(kiln: &Kiln, secret: &str, clone_url: &str, after: &str) -> Vec<String> {
    let resp = kiln
        .http
        .post(format!("{}/hooks/gitlab", kiln.url))
        .header("content-type", "application/json")
        .header("x-gitlab-event", "Push Hook")
        .header("x-gitlab-token", secret)
        .header("x-gitlab-event-uuid", support::new_delivery_id())
        .body(gitlab_push(clone_url, after).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let body: Value = resp.json().await.unwrap();
    body["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect()
}

/// The statuses GitLab holds for `sha`: (state, name, description, target_url).
fn statuses_of(gitlab: &FakeGitLab, sha: &str) -> Vec<(String, String, String, String)> {
    gitlab
        .statuses()
        .into_iter()
        .filter(|s| s.sha == sha)
        .map(|s| {
            let f = |k: &str| s.body[k].as_str().unwrap_or("").to_string();
            (f("state"), f("name"), f("description"), f("target_url"))
        })
        .collect()
}

/// Waits until the build's commit statuses are all delivered (none pending) and returns them.
async fn settled_statuses(kiln: &Kiln, build: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, b) = kiln.get(&format!("/builds/{build}")).await;
        let all = b["commit_statuses"].as_array().cloned().unwrap_or_default();
        if !all.is_empty()
            && b["finished_at"].is_string()
            && all.iter().all(|s| s["status"] != "pending")
        {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "commit statuses of {build} still pending: {b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_repositories_and_the_hook_through_its_life() {
    let (_registry, kiln, gitlab) = start().await;
    for name in ["acme/app", "acme/web", "acme/worker", "other/tool"] {
        gitlab.add_project(name, "private");
    }

    // A token GitLab refuses: 422 naming the token, with GitLab's message; nothing stored.
    let (s, body) = kiln
        .put(
            "/namespaces/acme/integrations/gitlab",
            json!({"url": gitlab.url(), "token": "glpat-wrong-0123456789"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "token", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("401"),
        "{body}"
    );
    let (s, _) = kiln.get("/namespaces/acme/integrations/gitlab").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // An unreachable host: 502.
    let (s, body) = kiln
        .put(
            "/namespaces/acme/integrations/gitlab",
            json!({"url": "http://127.0.0.1:9", "token": TOKEN}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "host_unreachable", "{body}");

    let set = set_integration(&kiln, &gitlab).await;
    assert_eq!(set["provider"], "gitlab");
    assert_eq!(set["kind"], "token");
    assert_eq!(set["url"], gitlab.url());
    assert_eq!(set["account"], "kiln-bot");
    assert_eq!(set["scopes"], json!(["api"]));
    assert!(set["last_checked_at"].is_string(), "{set}");
    assert!(set["last_error"].is_null(), "{set}");
    let (s, got) = kiln.get("/namespaces/acme/integrations/gitlab").await;
    assert_eq!(s, StatusCode::OK);
    for answer in [&set, &got] {
        assert!(!answer.to_string().contains(TOKEN), "{answer}");
    }
    // Stored encrypted.
    let (stored,): (String,) = sqlx::query_as("SELECT secret FROM integrations")
        .fetch_one(&kiln.server.app.db)
        .await
        .unwrap();
    assert!(stored.starts_with("enc:"), "stored as {stored:.12}…");
    assert!(!stored.contains(TOKEN));

    // The listing: pages and search, as the host pages them.
    let (s, page1) = kiln
        .get("/namespaces/acme/integrations/gitlab/repositories?per_page=2")
        .await;
    assert_eq!(s, StatusCode::OK, "{page1}");
    assert_eq!(
        page1["repositories"].as_array().unwrap().len(),
        2,
        "{page1}"
    );
    assert_eq!(page1["next_page"], 2, "{page1}");
    let (_, page2) = kiln
        .get("/namespaces/acme/integrations/gitlab/repositories?per_page=2&page=2")
        .await;
    assert_eq!(
        page2["repositories"].as_array().unwrap().len(),
        2,
        "{page2}"
    );
    assert!(page2["next_page"].is_null(), "{page2}");
    let (_, found) = kiln
        .get("/namespaces/acme/integrations/gitlab/repositories?search=work")
        .await;
    let names: Vec<&str> = found["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["full_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme/worker"], "{found}");

    // Another namespace's admin can neither see nor use it.
    kiln.repo("other", "app").await;
    let other = kiln.token("other-admin", "admin", Some("other")).await;
    for path in [
        "/namespaces/acme/integrations/gitlab",
        "/namespaces/acme/integrations/gitlab/repositories",
    ] {
        let (s, _) = kiln.call_as(&other, reqwest::Method::GET, path, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }
    let (s, body) = kiln
        .call_as(
            &other,
            reqwest::Method::PUT,
            "/namespaces/other/repos/app/source",
            Some(json!({"provider": "gitlab", "repository": "acme/app"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "no_integration", "{body}");
    assert!(gitlab.hooks().is_empty());

    // A repository the host does not know.
    let (s, body) = kiln
        .put(
            "/namespaces/acme/repos/app/source",
            json!({"provider": "gitlab", "repository": "acme/nope"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "not_found_on_host", "{body}");

    // Linked by name: the clone URL is the host's, exactly one hook, kiln's URL and the secret.
    gitlab.clear_requests();
    let (s, linked) = kiln
        .put(
            "/namespaces/acme/repos/app/source",
            json!({"provider": "gitlab", "repository": "acme/app"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{linked}");
    assert_eq!(
        linked["clone_url"],
        format!("{}/acme/app.git", gitlab.url())
    );
    assert_eq!(linked["repository"], "acme/app");
    assert_eq!(linked["hook_installed"], true, "{linked}");
    assert!(linked["hook_error"].is_null(), "{linked}");
    let warnings = linked["warnings"].as_array().expect("a warning").clone();
    assert!(
        warnings[0].as_str().unwrap().contains("KILN_PUBLIC_URL"),
        "{linked}"
    );
    let secret = linked["webhook_secret"].as_str().unwrap().to_string();
    let hooks = gitlab.hooks();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0].body["url"], format!("{}/hooks/gitlab", kiln.url));
    assert_eq!(hooks[0].body["token"], secret.as_str());
    assert_eq!(hooks[0].body["push_events"], true);
    let installs = gitlab
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/hooks"))
        .count();
    assert_eq!(installs, 1);
    // The same PUT again installs nothing more.
    let (s, _) = kiln
        .put(
            "/namespaces/acme/repos/app/source",
            json!({"provider": "gitlab", "repository": "acme/app"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(gitlab.hooks().len(), 1);

    // A regenerated secret reaches the hook.
    let (s, rotated) = kiln
        .put(
            "/namespaces/acme/repos/app/source",
            json!({"provider": "gitlab", "repository": "acme/app", "regenerate_secret": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    let new_secret = rotated["webhook_secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    let hooks = gitlab.hooks();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0].body["token"], new_secret);
    assert!(
        gitlab
            .requests()
            .iter()
            .any(|r| r.method == "PUT" && r.path.contains("/hooks/")),
        "the hook was updated"
    );
    // GET source never shows the secret.
    let (_, shown) = kiln.get("/namespaces/acme/repos/app/source").await;
    assert!(shown.get("webhook_secret").is_none(), "{shown}");
    assert_eq!(shown["hook_installed"], true, "{shown}");

    // Removing the source removes the hook.
    let (s, _) = kiln.delete("/namespaces/acme/repos/app/source").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(gitlab.hooks().is_empty(), "{:?}", gitlab.hooks());

    // No request to the host ever carried the token anywhere but its header.
    for r in gitlab.requests() {
        assert!(!r.path.contains(TOKEN) && !String::from_utf8_lossy(&r.body).contains(TOKEN));
        assert!(r.query.iter().all(|(_, v)| !v.contains(TOKEN)));
    }

    // Removing the integration.
    let (s, _) = kiln.delete("/namespaces/acme/integrations/gitlab").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = kiln.get("/namespaces/acme/integrations/gitlab").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// Real builds set their statuses on the commit in order: pending, running, then success with
/// the tag, or failed with the reason; the host's errors are recorded and the builds go on.
#[tokio::test(flavor = "multi_thread")]
async fn builds_set_commit_statuses_in_order_and_host_errors_never_stop_them() {
    let (registry, kiln, gitlab) = start().await;
    gitlab.add_project("acme/app", "private");
    set_integration(&kiln, &gitlab).await;
    let git = repository("app", "statuses");
    // The hook cannot be installed (the token's user is not a Maintainer): shown, link kept.
    gitlab.fail_next("POST", "/hooks", 1, Failure::Forbidden);
    let (s, linked) = kiln
        .put(
            "/namespaces/acme/repos/app/source",
            json!({"provider": "gitlab", "repository": "acme/app", "clone_url": git.clone_url()}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{linked}");
    assert_eq!(linked["hook_installed"], false, "{linked}");
    assert!(
        linked["hook_error"].as_str().unwrap().contains("403"),
        "{linked}"
    );
    let (_, shown) = kiln.get("/namespaces/acme/repos/app/source").await;
    assert_eq!(shown["hook_error"], linked["hook_error"], "{shown}");
    assert_eq!(shown["repository"], "acme/app");
    assert!(gitlab.hooks().is_empty());
    let secret = linked["webhook_secret"].as_str().unwrap().to_string();
    kiln.rule("acme", "app", json!({"type": "branch", "name": "main"}))
        .await;

    // A push builds; its statuses arrive in order.
    let sha = git.head();
    let ids = push(&kiln, &secret, &git.clone_url(), &sha).await;
    let build = kiln.wait_build(&ids[0]).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    assert_eq!(registry.tags("acme/app").await, vec!["main".to_string()]);
    let recorded = settled_statuses(&kiln, &ids[0]).await;
    let target = format!("{}/builds/{}", kiln.url, ids[0]);
    assert_eq!(
        statuses_of(&gitlab, &sha),
        vec![
            (
                "pending".into(),
                "kiln/main".into(),
                "queued".into(),
                target.clone()
            ),
            (
                "running".into(),
                "kiln/main".into(),
                "building".into(),
                target.clone()
            ),
            (
                "success".into(),
                "kiln/main".into(),
                "built main".into(),
                target.clone()
            ),
        ]
    );
    let shown: Vec<(&str, &str)> = recorded
        .iter()
        .map(|s| (s["state"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        shown,
        [
            ("pending", "succeeded"),
            ("running", "succeeded"),
            ("success", "succeeded")
        ]
    );

    // A broken Dockerfile: failure with the reason. GitLab rate-limits the first try of the
    // running status: retried after its Retry-After, still in order.
    git.write(
        "Dockerfile",
        "FROM scratch\nCOPY missing.txt /missing.txt\n",
    );
    let broken = git.commit("broken");
    git.push("main");
    gitlab.fail_next(
        "POST",
        "/statuses/",
        1,
        Failure::RateLimited { retry_after: 1 },
    );
    let ids = push(&kiln, &secret, &git.clone_url(), &broken).await;
    let build = kiln.wait_build(&ids[0]).await;
    assert_eq!(build["status"], "failed", "{build}");
    let recorded = settled_statuses(&kiln, &ids[0]).await;
    let got = statuses_of(&gitlab, &broken);
    let states: Vec<&str> = got.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(states, ["pending", "running", "failed"], "{got:?}");
    assert!(!got[2].2.is_empty() && !got[2].2.contains('\n'), "{got:?}");
    assert_eq!(
        (&recorded[0]["attempts"], &recorded[0]["status"]),
        (&json!(2), &json!("succeeded")),
        "the rate-limited one was retried: {recorded:?}"
    );

    // The token is revoked: statuses fail (recorded, not retried), the build still succeeds.
    git.write("Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n");
    let fixed = git.commit("fixed");
    git.push("main");
    gitlab.fail_next("POST", "/statuses/", 10, Failure::Unauthorized);
    let ids = push(&kiln, &secret, &git.clone_url(), &fixed).await;
    let build = kiln.wait_build(&ids[0]).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    let recorded = settled_statuses(&kiln, &ids[0]).await;
    assert!(
        recorded
            .iter()
            .all(|s| s["status"] == "failed" && s["attempts"] == 1 && s["response_status"] == 401),
        "{recorded:?}"
    );
    let (_, integration) = kiln.get("/namespaces/acme/integrations/gitlab").await;
    assert!(integration["last_error"].is_string(), "{integration}");

    // Re-linking retries the hook that failed: installed now.
    let (s, relinked) = kiln
        .put(
            "/namespaces/acme/repos/app/source",
            json!({"provider": "gitlab", "repository": "acme/app", "clone_url": git.clone_url()}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{relinked}");
    assert_eq!(relinked["hook_installed"], true, "{relinked}");
    assert!(relinked["hook_error"].is_null(), "{relinked}");
    assert_eq!(gitlab.hooks().len(), 1);
}

/// A private repository on the host's own address fetches with the integration's token, given
/// to git as HTTP credentials: never in the clone URL, the answers or the build log.
#[tokio::test(flavor = "multi_thread")]
async fn a_private_repository_is_fetched_with_the_integrations_credentials() {
    let (registry, kiln, gitlab) = start().await;
    gitlab.add_project("acme/private", "private");
    set_integration(&kiln, &gitlab).await;
    let git = repository("private", "private code");
    let server = GitHttpServer::start(git.bare.parent().unwrap(), Some(("oauth2", TOKEN))).await;
    let clone_url = format!("{}/private.git", server.url);
    let (s, linked) = kiln
        .put(
            "/namespaces/acme/repos/app/source",
            json!({"provider": "gitlab", "repository": "acme/private", "clone_url": clone_url}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{linked}");
    assert_eq!(linked["has_credentials"], false, "{linked}");
    let rule = kiln
        .rule("acme", "app", json!({"type": "branch", "name": "main"}))
        .await;
    let (s, queued) = kiln
        .post(
            &format!("/namespaces/acme/repos/app/rules/{rule}/builds"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{queued}");
    let id = queued["id"].as_str().unwrap();
    let build = kiln.wait_build(id).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    assert_eq!(registry.tags("acme/app").await, vec!["main".to_string()]);
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.header("authorization") == Some(&*support::basic_auth("oauth2", TOKEN))),
        "git sent the integration's credentials"
    );
    let log = kiln.log(id).await;
    let (_, source) = kiln.get("/namespaces/acme/repos/app/source").await;
    let (_, build) = kiln.get(&format!("/builds/{id}")).await;
    for shown in [log, source.to_string(), build.to_string()] {
        assert!(!shown.contains(TOKEN), "{shown}");
    }
}

/// Links `acme/app` by GitHub's name (its clone URL from GitHub's answer, on `git_server`), checks
/// the hook, adds a `main` rule and builds a push of the head of `git`: (build id, commit).
async fn link_github_and_build(
    kiln: &Kiln,
    registry: &Registry,
    github: &support::fake_github::FakeGitHub,
    git_server: &str,
    git: &GitRepo,
) -> (String, String) {
    let (s, linked) = kiln
        .put(
            "/namespaces/acme/repos/app/source",
            json!({"provider": "github", "repository": "acme/app"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{linked}");
    let clone_url = format!("{git_server}/acme/app.git");
    assert_eq!(linked["clone_url"], clone_url.as_str(), "{linked}");
    assert_eq!(linked["hook_installed"], true, "{linked}");
    let secret = linked["webhook_secret"].as_str().unwrap().to_string();
    let hooks = github.hooks("acme/app");
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(
        hooks[0]["config"]["url"],
        format!("{}/hooks/github", kiln.url)
    );
    kiln.rule("acme", "app", json!({"type": "branch", "name": "main"}))
        .await;

    let sha = git.head();
    let ids = kiln
        .push_hook(&secret, &clone_url, "refs/heads/main", &sha)
        .await;
    let build = kiln.wait_build(&ids[0]).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    assert_eq!(registry.tags("acme/app").await, vec!["main".to_string()]);
    settled_statuses(kiln, &ids[0]).await;
    (ids[0].clone(), sha)
}

/// GitHub: a repository picked by name, its clone URL from GitHub's answer (private, on the host
/// git serves from), fetched with the token as `x-access-token`; the push hook installed with the
/// secret; the statuses of a push's build set in order (GitHub's `pending` for both the queued
/// and the running build).
#[tokio::test(flavor = "multi_thread")]
async fn github_link_private_fetch_and_statuses() {
    const GH_TOKEN: &str = "ghp_kilnIntegrationToken0123456789";
    support::ensure_docker();
    let github = support::fake_github::FakeGitHub::start();
    github.add_token(GH_TOKEN, "octocat");
    github.add_repo("acme/app", true);
    let git = repository("app", "github private");
    // Served as GitHub serves it: {host}/acme/app.git, only with the token.
    let root = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(git.bare.parent().unwrap(), root.path().join("acme")).unwrap();
    let server = GitHttpServer::start(root.path(), Some(("x-access-token", GH_TOKEN))).await;
    github.set_git_base(&server.url);
    let registry = Registry::start();
    let api = github.url();
    let kiln = Kiln::start(&registry, &[("KILN_GITHUB_API_URL", api.as_str())]).await;
    kiln.repo("acme", "app").await;

    let (s, set) = kiln
        .put(
            "/namespaces/acme/integrations/github",
            json!({"kind": "token", "token": GH_TOKEN}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{set}");
    assert_eq!(
        (&set["account"], &set["url"]),
        (&json!("octocat"), &json!(api))
    );
    let (s, listed) = kiln
        .get("/namespaces/acme/integrations/github/repositories")
        .await;
    assert_eq!(s, StatusCode::OK, "{listed}");
    assert_eq!(
        listed["repositories"][0]["full_name"], "acme/app",
        "{listed}"
    );
    assert_eq!(listed["repositories"][0]["private"], true, "{listed}");

    let (id, sha) = link_github_and_build(&kiln, &registry, &github, &server.url, &git).await;
    let target = format!("{}/builds/{id}", kiln.url);
    let statuses: Vec<(String, String, String, String)> = github
        .statuses("acme/app", &sha)
        .iter()
        .map(|s| {
            let f = |k: &str| s[k].as_str().unwrap_or("").to_string();
            (f("state"), f("context"), f("description"), f("target_url"))
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            (
                "pending".into(),
                "kiln/main".into(),
                "queued".into(),
                target.clone()
            ),
            (
                "pending".into(),
                "kiln/main".into(),
                "building".into(),
                target.clone()
            ),
            (
                "success".into(),
                "kiln/main".into(),
                "built main".into(),
                target
            ),
        ]
    );
    assert!(
        server.requests().iter().any(|r| r.header("authorization")
            == Some(&*support::basic_auth("x-access-token", GH_TOKEN))),
        "git sent the token"
    );
    let log = kiln.log(&id).await;
    let (_, source) = kiln.get("/namespaces/acme/repos/app/source").await;
    let (_, integration) = kiln.get("/namespaces/acme/integrations/github").await;
    for shown in [log, source.to_string(), integration.to_string()] {
        assert!(!shown.contains(GH_TOKEN), "{shown}");
    }
}

/// The console's "link a git source" offers the integration's repositories (search, pages); one
/// click links the picked repository and installs its hook.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_picker_links_a_repository_of_the_integration() {
    let (_registry, kiln, gitlab) = start().await;
    for name in ["acme/app", "acme/web", "acme/worker"] {
        gitlab.add_project(name, "private");
    }
    // Without an integration there is no picker.
    let console = support::console::Console::sign_in(&kiln.url, support::kiln::ADMIN_TOKEN).await;
    let page = console.get("/repos/acme/app/rules").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(!page.has("#repo-picker"));
    set_integration(&kiln, &gitlab).await;

    let page = console.get("/repos/acme/app/rules").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(page.has("#repo-picker"), "{}", page.html);
    assert_eq!(
        page.attrs("#picker-list li", "data-repository"),
        ["acme/app", "acme/web", "acme/worker"]
    );
    let page = console
        .get("/repos/acme/app/rules?pick_provider=gitlab&pick_search=wor")
        .await;
    assert_eq!(
        page.attrs("#picker-list li", "data-repository"),
        ["acme/worker"]
    );
    assert!(!page.html.contains(TOKEN));

    let page = console
        .post(
            "/repos/acme/app/rules",
            "/repos/acme/app/source",
            &[("provider", "gitlab"), ("repository", "acme/web")],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let (_, source) = kiln.get("/namespaces/acme/repos/app/source").await;
    assert_eq!(source["repository"], "acme/web", "{source}");
    assert_eq!(source["hook_installed"], true, "{source}");
    assert_eq!(gitlab.hooks().len(), 1);
}

/// The console's namespace page connects and disconnects a git host through the API's checks:
/// a token the host refuses is shown as the token's error, a good one saves; never shown again.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_connects_and_disconnects_a_git_host() {
    let (_registry, kiln, gitlab) = start().await;
    let console = support::console::Console::sign_in(&kiln.url, support::kiln::ADMIN_TOKEN).await;
    let page = console.get("/namespaces/acme/integrations").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(page.has("#integration-gitlab"), "{}", page.html);
    let rules = console.get("/repos/acme/app/rules").await;
    assert!(rules.has("#picker-connect"), "{}", rules.html);

    let url = gitlab.url().to_string();
    let page = console
        .post(
            "/namespaces/acme/integrations",
            "/namespaces/acme/integrations/gitlab",
            &[("url", url.as_str()), ("token", "glpat-refused-0123456789")],
        )
        .await;
    assert_eq!(
        page.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        page.html
    );
    assert!(page.has("#integration-gitlab #err-token"), "{}", page.html);
    assert!(!page.html.contains("glpat-refused-0123456789"));

    let page = console
        .post(
            "/namespaces/acme/integrations",
            "/namespaces/acme/integrations/gitlab",
            &[("url", url.as_str()), ("token", TOKEN)],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert_eq!(page.text("#integration-gitlab .account"), "kiln-bot");
    assert!(!page.html.contains(TOKEN));
    let (s, _) = kiln.get("/namespaces/acme/integrations/gitlab").await;
    assert_eq!(s, StatusCode::OK);

    let page = console
        .post(
            "/namespaces/acme/integrations",
            "/namespaces/acme/integrations/gitlab/delete",
            &[],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let (s, _) = kiln.get("/namespaces/acme/integrations/gitlab").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// Gitea (or Forgejo) through kiln: the token checked, the repositories listed, a repository
/// linked by name with its hook installed with the secret, a signed Gitea push built from a
/// private repository fetched with the token, and the build's statuses set in Gitea's states
/// (`pending` for queued and running, then `success`).
#[tokio::test(flavor = "multi_thread")]
async fn gitea_link_private_fetch_and_statuses() {
    const GITEA_TOKEN: &str = "d4c1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9";
    support::ensure_docker();
    let gitea = support::fake_gitea::FakeGitea::start(GITEA_TOKEN, "kiln-bot").await;
    gitea.add_repo("acme/app", true);
    let git = repository("app", "gitea private");
    // The repository over git's smart HTTP, only with the token (Gitea takes it as the password).
    let root = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(git.bare.parent().unwrap(), root.path().join("acme")).unwrap();
    let server = GitHttpServer::start(root.path(), Some(("kiln", GITEA_TOKEN))).await;
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    kiln.repo("acme", "app").await;

    let (s, set) = kiln
        .put(
            "/namespaces/acme/integrations/gitea",
            json!({"url": gitea.url(), "token": GITEA_TOKEN}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{set}");
    assert_eq!(set["account"], "kiln-bot", "{set}");
    let (s, listed) = kiln
        .get("/namespaces/acme/integrations/gitea/repositories")
        .await;
    assert_eq!(s, StatusCode::OK, "{listed}");
    assert_eq!(
        listed["repositories"][0]["full_name"], "acme/app",
        "{listed}"
    );

    // Linked by the host's name, fetched from where git serves it (an explicit clone URL).
    let clone_url = format!("{}/acme/app.git", server.url);
    let (s, linked) = kiln
        .put(
            "/namespaces/acme/repos/app/source",
            json!({"provider": "gitea", "repository": "acme/app", "clone_url": clone_url}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{linked}");
    assert_eq!(linked["hook_installed"], true, "{linked}");
    let secret = linked["webhook_secret"].as_str().unwrap().to_string();
    let hooks = gitea.hooks();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0].full_name, "acme/app");
    assert_eq!(
        hooks[0].body["config"]["url"],
        format!("{}/hooks/gitea", kiln.url)
    );
    assert_eq!(hooks[0].body["config"]["secret"], secret.as_str());
    kiln.rule("acme", "app", json!({"type": "branch", "name": "main"}))
        .await;

    // A push as Gitea sends it: GitHub's shape, signed in X-Gitea-Signature.
    let sha = git.head();
    let payload =
        support::github_push_payload(&clone_url, "refs/heads/main", ZERO, &sha, false).to_string();
    let resp = kiln
        .http
        .post(format!("{}/hooks/gitea", kiln.url))
        .header("content-type", "application/json")
        .header("x-gitea-event", "push")
        .header("x-gitea-delivery", support::new_delivery_id())
        .header(
            "x-gitea-signature",
            kiln::forge::gitea::sign(secret.as_bytes(), payload.as_bytes()),
        )
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let body: Value = resp.json().await.unwrap();
    let id = body["builds"][0].as_str().unwrap().to_string();
    let build = kiln.wait_build(&id).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    assert_eq!(registry.tags("acme/app").await, vec!["main".to_string()]);
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.header("authorization") == Some(&*support::basic_auth("kiln", GITEA_TOKEN))),
        "git sent the token"
    );

    settled_statuses(&kiln, &id).await;
    let target = format!("{}/builds/{id}", kiln.url);
    let statuses: Vec<(String, String, String, String)> = gitea
        .statuses()
        .into_iter()
        .filter(|s| s.sha == sha && s.full_name == "acme/app")
        .map(|s| {
            let f = |k: &str| s.body[k].as_str().unwrap_or("").to_string();
            (f("state"), f("context"), f("description"), f("target_url"))
        })
        .collect();
    let status = |state: &str, description: &str| {
        (
            state.to_string(),
            "kiln/main".to_string(),
            description.to_string(),
            target.clone(),
        )
    };
    assert_eq!(
        statuses,
        vec![
            status("pending", "queued"),
            status("pending", "building"),
            status("success", "built main"),
        ]
    );
    let log = kiln.log(&id).await;
    let (_, source) = kiln.get("/namespaces/acme/repos/app/source").await;
    let (_, integration) = kiln.get("/namespaces/acme/integrations/gitea").await;
    for shown in [log, source.to_string(), integration.to_string()] {
        assert!(!shown.contains(GITEA_TOKEN), "{shown}");
    }

    // Unlinked: the hook goes with the source.
    let (s, _) = kiln.delete("/namespaces/acme/repos/app/source").await;
    assert!(s.is_success(), "{s}");
    assert!(gitea.hooks().is_empty(), "{:?}", gitea.hooks());
}

/// A GitHub App through kiln: kiln signs its JWT and mints installation tokens; the hook is
/// installed, a private repository is fetched with an installation token (as `x-access-token`),
/// statuses are set, and one token serves them all (the client is kept per integration).
#[tokio::test(flavor = "multi_thread")]
async fn github_app_link_private_fetch_and_statuses() {
    support::ensure_docker();
    let github = std::sync::Arc::new(support::fake_github::FakeGitHub::start());
    let (private_key, public_key) = support::fake_github::app_key_pair();
    github.set_app(
        4242,
        77,
        &public_key,
        "acme",
        json!({"contents": "read", "metadata": "read", "statuses": "write", "repository_hooks": "write"}),
    );
    github.add_repo("acme/app", true);
    let git = repository("app", "github app private");
    let root = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(git.bare.parent().unwrap(), root.path().join("acme")).unwrap();
    // Only an installation token the App was given opens the repository.
    let minted = github.clone();
    let server = GitHttpServer::start_checking(
        root.path(),
        "x-access-token",
        std::sync::Arc::new(move |password| {
            minted.installation_tokens().iter().any(|t| t == password)
        }),
    )
    .await;
    github.set_git_base(&server.url);
    let registry = Registry::start();
    let api = github.url();
    let kiln = Kiln::start(&registry, &[("KILN_GITHUB_API_URL", api.as_str())]).await;
    kiln.repo("acme", "app").await;

    let (s, set) = kiln
        .put(
            "/namespaces/acme/integrations/github",
            json!({"kind": "app", "app_id": 4242, "installation_id": 77, "private_key": private_key}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{set}");
    assert_eq!(set["kind"], "app", "{set}");
    assert_eq!(set["account"], "acme", "{set}");
    let (s, listed) = kiln
        .get("/namespaces/acme/integrations/github/repositories")
        .await;
    assert_eq!(s, StatusCode::OK, "{listed}");
    assert_eq!(
        listed["repositories"][0]["full_name"], "acme/app",
        "{listed}"
    );

    let (id, sha) = link_github_and_build(&kiln, &registry, &github, &server.url, &git).await;
    let states: Vec<String> = github
        .statuses("acme/app", &sha)
        .iter()
        .map(|s| s["state"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(states, vec!["pending", "pending", "success"]);

    // git was given an installation token; every token kiln used is one GitHub minted.
    let tokens = github.installation_tokens();
    let sent: Vec<String> = server
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_string))
        .collect();
    assert!(
        sent.iter().any(|h| tokens
            .iter()
            .any(|t| *h == support::basic_auth("x-access-token", t))),
        "git sent an installation token: {sent:?}"
    );
    for r in github.requests() {
        let credential = r
            .header("authorization")
            .and_then(|auth| auth.split_whitespace().nth(1));
        if let Some(token) = credential.filter(|c| c.starts_with("ghs_")) {
            assert!(
                tokens.iter().any(|t| t == token),
                "{} {} with {token}",
                r.method,
                r.path
            );
        }
    }
    // Kept per integration: not one token per call (the check, the hook, the fetch, three statuses).
    assert!(github.minted() <= 2, "{} tokens minted", github.minted());
    let log = kiln.log(&id).await;
    let (_, source) = kiln.get("/namespaces/acme/repos/app/source").await;
    let (_, integration) = kiln.get("/namespaces/acme/integrations/github").await;
    for shown in [log, source.to_string(), integration.to_string()] {
        assert!(!shown.contains("BEGIN RSA PRIVATE KEY"), "{shown}");
        for t in &tokens {
            assert!(!shown.contains(t.as_str()), "{shown}");
        }
    }
}
