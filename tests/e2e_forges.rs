//! GitLab and Gitea/Forgejo pushes, signed as those forges sign them, build like GitHub's:
//! real dockerd, registry and git.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::kiln::Kiln;
use support::{GitRepo, Registry};

const ZERO: &str = "0000000000000000000000000000000000000000";

async fn setup(provider: &str, secret: &str) -> (Registry, Kiln, GitRepo) {
    support::ensure_docker();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let git = GitRepo::new();
    git.write("Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n");
    git.write("a.txt", format!("{provider} {}\n", git.clone_url()));
    git.commit("first");
    git.push("main");
    kiln.post("/namespaces", json!({"name": "acme"})).await;
    kiln.post("/namespaces/acme/repos", json!({"name": "app"}))
        .await;
    let (s, body) = kiln
        .put(
            "/namespaces/acme/repos/app/source",
            json!({"provider": provider, "clone_url": git.clone_url(), "webhook_secret": secret}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        body["webhook_url"],
        format!("{}/hooks/{provider}", kiln.url)
    );
    assert!(
        body.get("webhook_secret").is_none(),
        "a given secret is never returned"
    );
    kiln.rule("acme", "app", json!({"type": "branch", "name": "main"}))
        .await;
    kiln.rule("acme", "app", json!({"type": "tag", "name": "v*"}))
        .await;
    (registry, kiln, git)
}

async fn post(
    kiln: &Kiln,
    provider: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (StatusCode, Value) {
    let mut req = kiln
        .http
        .post(format!("{}/hooks/{provider}", kiln.url))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn gitea_push(clone_url: &str, git_ref: &str, after: &str) -> Value {
    json!({
        "ref": git_ref, "before": ZERO, "after": after, "compare_url": "",
        "commits": [{"id": after, "message": "change\n", "url": ""}],
        "head_commit": {"id": after, "message": "change\n"},
        "repository": {"id": 7, "name": "app", "full_name": "acme/app", "clone_url": clone_url,
                       "ssh_url": "git@gitea.local:acme/app.git", "html_url": "http://gitea.local/acme/app"},
        "pusher": {"login": "dev"}, "sender": {"login": "dev"},
    })
}

fn gitlab_push(clone_url: &str, kind: &str, git_ref: &str, after: &str) -> Value {
    json!({
        "object_kind": kind, "event_name": kind, "ref": git_ref, "before": ZERO, "after": after,
        "checkout_sha": after, "user_username": "dev", "project_id": 15,
        "project": {"id": 15, "name": "app", "git_http_url": clone_url, "git_ssh_url": "git@gitlab.local:acme/app.git",
                    "web_url": "http://gitlab.local/acme/app", "path_with_namespace": "acme/app"},
        "commits": [{"id": after, "message": "change\n"}], "total_commits_count": 1,
        "repository": {"name": "app", "git_http_url": clone_url, "homepage": "http://gitlab.local/acme/app"},
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn gitea_and_forgejo_signed_pushes_build() {
    let secret = "gitea-shared-secret-0123456789";
    let (registry, kiln, git) = setup("gitea", secret).await;
    let payload = gitea_push(&git.clone_url(), "refs/heads/main", &git.head());
    let sig = kiln::forge::gitea::sign(secret.as_bytes(), payload.to_string().as_bytes());

    let (s, body) = post(
        &kiln,
        "gitea",
        &[
            ("x-gitea-event", "push"),
            ("x-gitea-delivery", "g-1"),
            ("x-gitea-signature", "00"),
        ],
        &payload,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    let (s, body) = post(
        &kiln,
        "gitea",
        &[("x-gitea-event", "push"), ("x-gitea-delivery", "g-1")],
        &payload,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");

    let (s, body) = post(
        &kiln,
        "gitea",
        &[
            ("x-gitea-event", "push"),
            ("x-gitea-delivery", "g-1"),
            ("x-gitea-signature", &sig),
        ],
        &payload,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    let build = kiln.wait_build(body["builds"][0].as_str().unwrap()).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    assert_eq!(registry.tags("acme/app").await, vec!["main".to_string()]);

    // Forgejo's header names, same scheme; a redelivery is recognised.
    let (s, body) = post(
        &kiln,
        "gitea",
        &[
            ("x-forgejo-event", "push"),
            ("x-forgejo-delivery", "g-1"),
            ("x-forgejo-signature", &sig),
        ],
        &payload,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["duplicate"], true);

    // A GitHub-signed body is not a Gitea one.
    let gh = kiln::forge::github::sign(secret.as_bytes(), payload.to_string().as_bytes());
    let (s, _) = post(
        &kiln,
        "gitea",
        &[
            ("x-gitea-event", "push"),
            ("x-gitea-delivery", "g-2"),
            ("x-gitea-signature", &gh),
        ],
        &payload,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn gitlab_push_and_tag_push_hooks_build() {
    let secret = "gitlab-token-0123456789abcdef";
    let (registry, kiln, git) = setup("gitlab", secret).await;
    let payload = gitlab_push(&git.clone_url(), "push", "refs/heads/main", &git.head());

    let (s, _) = post(
        &kiln,
        "gitlab",
        &[("x-gitlab-event", "Push Hook"), ("x-gitlab-token", "wrong")],
        &payload,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // No delivery id header (older GitLab): the same body again is recognised as a redelivery.
    let headers = [("x-gitlab-event", "Push Hook"), ("x-gitlab-token", secret)];
    let (s, body) = post(&kiln, "gitlab", &headers, &payload).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    let build = kiln.wait_build(body["builds"][0].as_str().unwrap()).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    let (s, body) = post(&kiln, "gitlab", &headers, &payload).await;
    assert_eq!(
        (s, body["duplicate"].clone()),
        (StatusCode::OK, json!(true)),
        "{body}"
    );

    let sha = git.tag("v2.0.0");
    git.push_tag("v2.0.0");
    let tag_push = gitlab_push(&git.clone_url(), "tag_push", "refs/tags/v2.0.0", &sha);
    let (s, body) = post(
        &kiln,
        "gitlab",
        &[
            ("x-gitlab-event", "Tag Push Hook"),
            ("x-gitlab-token", secret),
            ("x-gitlab-event-uuid", "u-2"),
        ],
        &tag_push,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    let build = kiln.wait_build(body["builds"][0].as_str().unwrap()).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    assert_eq!(
        registry.tags("acme/app").await,
        vec!["main".to_string(), "v2.0.0".to_string()]
    );

    // Other GitLab events are accepted and build nothing; malformed pushes are 400.
    let (s, body) = post(
        &kiln,
        "gitlab",
        &[
            ("x-gitlab-event", "Merge Request Hook"),
            ("x-gitlab-token", secret),
        ],
        &json!({"object_kind": "merge_request", "project": {"git_http_url": git.clone_url()}}),
    )
    .await;
    assert_eq!(
        (s, body["builds"].clone()),
        (StatusCode::ACCEPTED, json!([]))
    );
    let mut bad = payload.clone();
    bad["after"] = json!("nope");
    let (s, _) = post(
        &kiln,
        "gitlab",
        &[
            ("x-gitlab-event", "Push Hook"),
            ("x-gitlab-token", secret),
            ("x-gitlab-event-uuid", "u-3"),
        ],
        &bad,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}
