//! kiln's GitLab and Gitea/Forgejo clients against local fakes of both hosts' REST APIs: every
//! call's exact request (method, path, query, token header, body), paging and search, each host
//! error mapped to a `HostError`, an unreachable host, the outbound guard, and no token in any
//! error or `Debug`.

mod support;

use std::time::Duration;

use kiln::forge::client::{CommitStatus, ForgeClient, HookSpec, HostError, StatusState};
use kiln::forge::gitea_api::GiteaClient;
use kiln::forge::gitlab_api::GitLabClient;
use kiln::forge::rest::RestOptions;
use kiln::notify::guard::AllowList;
use serde_json::json;
use support::fake_gitea::FakeGitea;
use support::fake_gitlab::FakeGitLab;
use support::fake_host::{Failure, FakeRequest};

const TOKEN: &str = "glpat-SECRETtoken0123456789";
const GITEA_TOKEN: &str = "0123456789abcdef0123456789abcdef01234567";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn loopback() -> RestOptions {
    RestOptions {
        allow: AllowList::parse("127.0.0.1").unwrap(),
        timeout: Duration::from_secs(5),
        ..RestOptions::default()
    }
}

fn gitlab(fake: &FakeGitLab) -> GitLabClient {
    GitLabClient::with_options(fake.url(), TOKEN.to_string(), &loopback()).unwrap()
}

fn gitea(fake: &FakeGitea) -> GiteaClient {
    GiteaClient::with_options(fake.url(), GITEA_TOKEN.to_string(), &loopback()).unwrap()
}

fn hook() -> HookSpec {
    HookSpec {
        url: "https://kiln.example.com/hooks/gitlab".into(),
        secret: "whsec-rotating-1".into(),
    }
}

fn status(state: StatusState) -> CommitStatus {
    CommitStatus {
        state,
        context: "kiln/main".into(),
        description: "registry.example.com/acme/app:main-0123456".into(),
        target_url: "https://kiln.example.com/builds/12".into(),
    }
}

fn only(requests: &[FakeRequest]) -> &FakeRequest {
    assert_eq!(requests.len(), 1, "{:#?}", requests);
    &requests[0]
}

/// No part of `e` (message, Debug) holds `token`.
fn no_token(e: &HostError, token: &str) {
    assert!(!e.message.contains(token), "{e:?}");
    assert!(!format!("{e:?}").contains(token), "{e:?}");
    assert!(!e.to_string().contains(token), "{e}");
}

// ---------------------------------------------------------------------------------------------
// GitLab
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn gitlab_check_reads_the_user_and_the_token_scopes() {
    let fake = FakeGitLab::start(TOKEN, "alice").await;
    let client = gitlab(&fake);
    fake.set_scopes(Some(&["api", "read_repository"]));
    let account = client.check().await.unwrap();
    assert_eq!(account.login, "alice");
    assert_eq!(account.kind, "user");
    assert_eq!(account.scopes, vec!["api", "read_repository"]);
    let requests = fake.requests();
    let lines: Vec<String> = requests.iter().map(FakeRequest::line).collect();
    assert_eq!(
        lines,
        [
            "GET /api/v4/user",
            "GET /api/v4/personal_access_tokens/self"
        ]
    );
    for r in &requests {
        assert_eq!(r.header("private-token"), Some(TOKEN));
        assert_eq!(r.header("authorization"), None);
        assert!(r.header("user-agent").unwrap().starts_with("kiln/"));
        assert!(r.query.is_empty());
    }

    // A project access token's user is a bot; a GitLab that cannot tell the scopes is no error.
    fake.set_bot(true);
    fake.set_scopes(None);
    let account = client.check().await.unwrap();
    assert_eq!(account.kind, "project_bot");
    assert!(account.scopes.is_empty());
    fake.fail_next("GET", "/personal_access_tokens/self", 1, Failure::Forbidden);
    assert!(client.check().await.unwrap().scopes.is_empty());
    // Anything else on the token call is an error.
    fake.fail_next(
        "GET",
        "/personal_access_tokens/self",
        1,
        Failure::ServerError,
    );
    let e = client.check().await.unwrap_err();
    assert_eq!(e.status, Some(500));
    assert!(e.is_transient());
}

#[tokio::test]
async fn gitlab_lists_projects_page_by_page_and_searches() {
    let fake = FakeGitLab::start(TOKEN, "alice").await;
    for i in (0..5).rev() {
        fake.add_project(&format!("acme/svc-{i}"), "private");
    }
    fake.add_project("acme/web", "public");
    fake.add_project("tools/Builder", "internal");
    let client = gitlab(&fake);

    let first = client.repositories(1, 3, None).await.unwrap();
    let names: Vec<&str> = first
        .repositories
        .iter()
        .map(|r| r.full_name.as_str())
        .collect();
    assert_eq!(names, ["acme/svc-0", "acme/svc-1", "acme/svc-2"]);
    assert_eq!(first.next_page, Some(2));
    let r0 = &first.repositories[0];
    assert_eq!(r0.clone_url, format!("{}/acme/svc-0.git", fake.url()));
    assert_eq!(r0.html_url, format!("{}/acme/svc-0", fake.url()));
    assert!(r0.private);
    assert_eq!(r0.default_branch.as_deref(), Some("main"));
    let req = only(&fake.requests()).clone();
    assert_eq!(req.line(), "GET /api/v4/projects");
    assert_eq!(
        req.query,
        [
            ("membership", "true"),
            ("per_page", "3"),
            ("page", "1"),
            ("order_by", "path"),
            ("sort", "asc"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );

    let second = client.repositories(2, 3, None).await.unwrap();
    let names: Vec<&str> = second
        .repositories
        .iter()
        .map(|r| r.full_name.as_str())
        .collect();
    assert_eq!(names, ["acme/svc-3", "acme/svc-4", "acme/web"]);
    assert!(!second.repositories[2].private, "public");
    assert_eq!(second.next_page, Some(3));
    let last = client.repositories(3, 3, None).await.unwrap();
    assert_eq!(last.repositories.len(), 1);
    assert!(last.repositories[0].private, "internal is not public");
    assert_eq!(last.next_page, None);

    // Search: by any part of the full path, GitLab's search_namespaces.
    fake.clear_requests();
    let found = client.repositories(1, 20, Some(" tools ")).await.unwrap();
    let names: Vec<&str> = found
        .repositories
        .iter()
        .map(|r| r.full_name.as_str())
        .collect();
    assert_eq!(names, ["tools/Builder"]);
    assert_eq!(found.next_page, None);
    let req = only(&fake.requests()).clone();
    assert_eq!(req.query("search"), Some("tools"));
    assert_eq!(req.query("search_namespaces"), Some("true"));
    // An out-of-range page size is brought within GitLab's 1..=100.
    fake.clear_requests();
    client.repositories(0, 1000, Some("")).await.unwrap();
    let req = only(&fake.requests()).clone();
    assert_eq!(req.query("per_page"), Some("100"));
    assert_eq!(req.query("page"), Some("1"));
    assert_eq!(req.query("search"), None);
}

#[tokio::test]
async fn gitlab_gets_a_project_by_its_encoded_path() {
    let fake = FakeGitLab::start(TOKEN, "alice").await;
    fake.add_project("acme/platform/api", "public");
    let client = gitlab(&fake);
    let repo = client.repository("acme/platform/api").await.unwrap();
    assert_eq!(repo.full_name, "acme/platform/api");
    assert!(!repo.private);
    assert_eq!(
        only(&fake.requests()).line(),
        "GET /api/v4/projects/acme%2Fplatform%2Fapi"
    );
    let e = client.repository("acme/nope").await.unwrap_err();
    assert_eq!(e.status, Some(404));
    assert_eq!(e.message, "404 Project Not Found");
    assert!(!e.is_transient());
    // A name that is no project path is refused before any call.
    fake.clear_requests();
    for bad in ["noslash", "acme/../admin", "acme//x", ""] {
        let e = client.repository(bad).await.unwrap_err();
        assert_eq!(e.status, None, "{bad}");
    }
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn gitlab_installs_updates_and_removes_a_project_hook() {
    let fake = FakeGitLab::start(TOKEN, "alice").await;
    let project_id = fake.add_project("acme/app", "private");
    let client = gitlab(&fake);

    let id = client.install_hook("acme/app", &hook()).await.unwrap();
    let req = only(&fake.requests()).clone();
    assert_eq!(req.line(), "POST /api/v4/projects/acme%2Fapp/hooks");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(
        req.json(),
        json!({
            "url": "https://kiln.example.com/hooks/gitlab",
            "token": "whsec-rotating-1",
            "push_events": true,
            "tag_push_events": true,
            "enable_ssl_verification": true,
        })
    );
    let hooks = fake.hooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].id.to_string(), id);
    assert_eq!(hooks[0].project_id, project_id);

    fake.clear_requests();
    let rotated = HookSpec {
        url: hook().url,
        secret: "whsec-rotating-2".into(),
    };
    client.update_hook("acme/app", &id, &rotated).await.unwrap();
    let req = only(&fake.requests()).clone();
    assert_eq!(
        req.line(),
        format!("PUT /api/v4/projects/acme%2Fapp/hooks/{id}")
    );
    assert_eq!(req.json()["token"], "whsec-rotating-2");
    assert_eq!(fake.hooks()[0].body["token"], "whsec-rotating-2");

    fake.clear_requests();
    client.remove_hook("acme/app", &id).await.unwrap();
    assert_eq!(
        only(&fake.requests()).line(),
        format!("DELETE /api/v4/projects/acme%2Fapp/hooks/{id}")
    );
    assert!(fake.hooks().is_empty());
    // Already gone: fine.
    client.remove_hook("acme/app", &id).await.unwrap();
    // Updating a hook that is gone is not.
    let e = client
        .update_hook("acme/app", &id, &rotated)
        .await
        .unwrap_err();
    assert_eq!(e.status, Some(404));
    // The host refusing the hook's URL says why, in one line.
    fake.fail_next("POST", "/hooks", 1, Failure::Invalid);
    let e = client.install_hook("acme/app", &hook()).await.unwrap_err();
    assert_eq!(e.status, Some(422));
    assert_eq!(
        e.message,
        "url is blocked: Requests to the local network are not allowed"
    );
    // Any other failure of a removal is an error.
    let id = client.install_hook("acme/app", &hook()).await.unwrap();
    fake.fail_next("DELETE", "/hooks/", 1, Failure::Forbidden);
    let e = client.remove_hook("acme/app", &id).await.unwrap_err();
    assert_eq!(e.status, Some(403));
}

#[tokio::test]
async fn gitlab_sets_statuses_in_its_own_words() {
    let fake = FakeGitLab::start(TOKEN, "alice").await;
    let project_id = fake.add_project("acme/app", "private");
    let client = gitlab(&fake);
    let mut long = status(StatusState::Failure);
    long.description = "x".repeat(400);
    for (state, word) in [
        (StatusState::Pending, "pending"),
        (StatusState::Running, "running"),
        (StatusState::Success, "success"),
        (StatusState::Failure, "failed"),
        (StatusState::Error, "failed"),
        (StatusState::Cancelled, "canceled"),
    ] {
        fake.clear_requests();
        let mut s = status(state);
        s.context = format!("kiln/{word}-{}", state.as_str());
        client.set_status("acme/app", SHA, &s).await.unwrap();
        let req = only(&fake.requests()).clone();
        assert_eq!(
            req.line(),
            format!("POST /api/v4/projects/acme%2Fapp/statuses/{SHA}")
        );
        assert_eq!(
            req.json(),
            json!({
                "state": word,
                "name": s.context,
                "description": "registry.example.com/acme/app:main-0123456",
                "target_url": "https://kiln.example.com/builds/12",
            })
        );
    }
    assert_eq!(fake.statuses().len(), 6);
    assert!(
        fake.statuses()
            .iter()
            .all(|s| s.project_id == project_id && s.sha == SHA)
    );

    // The same state twice: GitLab refuses the transition, which means it is already set.
    let running = status(StatusState::Running);
    client.set_status("acme/app", SHA, &running).await.unwrap();
    client.set_status("acme/app", SHA, &running).await.unwrap();
    assert_eq!(fake.statuses().len(), 7);

    // A description past GitLab's 255 characters is cut.
    fake.clear_requests();
    client.set_status("acme/app", SHA, &long).await.unwrap();
    let sent = only(&fake.requests()).json()["description"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sent.chars().count(), 255);
    assert!(sent.ends_with('…'));

    // A 400 that is not that one is an error.
    let e = client
        .set_status("acme/app", "not-a-sha", &running)
        .await
        .unwrap_err();
    assert_eq!(e.status, Some(404));
    assert_eq!(e.message, "404 Commit Not Found");
}

#[tokio::test]
async fn gitlab_errors_are_mapped() {
    let fake = FakeGitLab::start(TOKEN, "alice").await;
    fake.add_project("acme/app", "private");
    let client = gitlab(&fake);
    let cases = [
        (Failure::Unauthorized, 401, "401 Unauthorized", false),
        (
            Failure::Forbidden,
            403,
            "insufficient_scope: The request requires higher privileges than provided by the access token.",
            false,
        ),
        (Failure::NotFound, 404, "404 Project Not Found", false),
        (
            Failure::ServerError,
            500,
            "500 Internal Server Error",
            false,
        ),
        (
            Failure::RateLimited { retry_after: 37 },
            429,
            "Retry later",
            true,
        ),
    ];
    for (failure, code, message, limited) in cases {
        fake.fail_next("POST", "/statuses/", 1, failure.clone());
        let e = client
            .set_status("acme/app", SHA, &status(StatusState::Pending))
            .await
            .unwrap_err();
        assert_eq!(e.status, Some(code), "{failure:?}");
        assert_eq!(e.message, message, "{failure:?}");
        assert_eq!(e.rate_limited, limited, "{failure:?}");
        assert_eq!(e.is_transient(), limited || code == 500, "{failure:?}");
        if limited {
            assert_eq!(e.retry_after, Some(Duration::from_secs(37)));
        } else {
            assert_eq!(e.retry_after, None);
        }
        no_token(&e, TOKEN);
    }
    // A wrong token: GitLab's 401.
    let wrong = GitLabClient::with_options(fake.url(), "glpat-wrong".into(), &loopback()).unwrap();
    let e = wrong.check().await.unwrap_err();
    assert_eq!(
        (e.status, e.message.as_str()),
        (Some(401), "401 Unauthorized")
    );
    no_token(&e, "glpat-wrong");
}

#[tokio::test]
async fn gitlab_git_credentials_and_no_token_in_debug() {
    let fake = FakeGitLab::start(TOKEN, "alice").await;
    let client = gitlab(&fake);
    assert_eq!(
        client.git_credentials().await.unwrap(),
        ("oauth2".to_string(), TOKEN.to_string())
    );
    let debug = format!("{client:?}");
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(debug.contains("private-token: [redacted]"), "{debug}");
}

// ---------------------------------------------------------------------------------------------
// Gitea / Forgejo
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn gitea_check_reads_the_user() {
    let fake = FakeGitea::start(GITEA_TOKEN, "bob").await;
    let client = gitea(&fake);
    let account = client.check().await.unwrap();
    assert_eq!(account.login, "bob");
    assert_eq!(account.kind, "user");
    assert!(account.scopes.is_empty());
    let req = only(&fake.requests()).clone();
    assert_eq!(req.line(), "GET /api/v1/user");
    assert_eq!(
        req.header("authorization"),
        Some(format!("token {GITEA_TOKEN}").as_str())
    );
    assert!(req.header("user-agent").unwrap().starts_with("kiln/"));
    assert_eq!(req.header("private-token"), None);
}

#[tokio::test]
async fn gitea_lists_repositories_page_by_page_and_searches() {
    let fake = FakeGitea::start(GITEA_TOKEN, "bob").await;
    for i in 0..5 {
        fake.add_repo(&format!("bob/lib-{i}"), i % 2 == 0);
    }
    fake.add_repo("acme/Service", false);
    let client = gitea(&fake);

    let first = client.repositories(1, 4, None).await.unwrap();
    let names: Vec<&str> = first
        .repositories
        .iter()
        .map(|r| r.full_name.as_str())
        .collect();
    assert_eq!(names, ["bob/lib-0", "bob/lib-1", "bob/lib-2", "bob/lib-3"]);
    assert_eq!(first.next_page, Some(2));
    let r0 = &first.repositories[0];
    assert!(r0.private);
    assert!(!first.repositories[1].private);
    assert_eq!(r0.clone_url, format!("{}/bob/lib-0.git", fake.url()));
    assert_eq!(r0.html_url, format!("{}/bob/lib-0", fake.url()));
    assert_eq!(r0.default_branch.as_deref(), Some("main"));
    let req = only(&fake.requests()).clone();
    assert_eq!(req.line(), "GET /api/v1/user/repos");
    assert_eq!(
        req.query,
        [("page", "1"), ("limit", "4")].map(|(k, v)| (k.to_string(), v.to_string()))
    );
    let second = client.repositories(2, 4, None).await.unwrap();
    assert_eq!(second.repositories.len(), 2);
    assert_eq!(second.next_page, None);

    fake.clear_requests();
    let found = client.repositories(1, 10, Some("service")).await.unwrap();
    let names: Vec<&str> = found
        .repositories
        .iter()
        .map(|r| r.full_name.as_str())
        .collect();
    assert_eq!(names, ["acme/Service"]);
    assert_eq!(found.next_page, None);
    let req = only(&fake.requests()).clone();
    assert_eq!(req.line(), "GET /api/v1/repos/search");
    assert_eq!(
        req.query,
        [
            ("q", "service"),
            ("page", "1"),
            ("limit", "10"),
            ("sort", "alpha"),
            ("order", "asc"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    let paged = client.repositories(1, 2, Some("lib")).await.unwrap();
    assert_eq!(paged.repositories.len(), 2);
    assert_eq!(paged.next_page, Some(2));
    // Gitea's largest page is 50.
    fake.clear_requests();
    client.repositories(1, 500, None).await.unwrap();
    assert_eq!(only(&fake.requests()).query("limit"), Some("50"));
}

#[tokio::test]
async fn gitea_gets_a_repository() {
    let fake = FakeGitea::start(GITEA_TOKEN, "bob").await;
    fake.add_repo("acme/app", true);
    let client = gitea(&fake);
    let repo = client.repository("acme/app").await.unwrap();
    assert_eq!(repo.full_name, "acme/app");
    assert!(repo.private);
    assert_eq!(only(&fake.requests()).line(), "GET /api/v1/repos/acme/app");
    let e = client.repository("acme/gone").await.unwrap_err();
    assert_eq!(e.status, Some(404));
    assert_eq!(e.message, "The target couldn't be found.");
    fake.clear_requests();
    for bad in ["acme", "a/b/c", "../x", "acme/.."] {
        assert_eq!(
            client.repository(bad).await.unwrap_err().status,
            None,
            "{bad}"
        );
    }
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn gitea_installs_updates_and_removes_a_hook() {
    let fake = FakeGitea::start(GITEA_TOKEN, "bob").await;
    fake.add_repo("acme/app", true);
    let client = gitea(&fake);
    let spec = HookSpec {
        url: "https://kiln.example.com/hooks/gitea".into(),
        secret: "whsec-1".into(),
    };
    let id = client.install_hook("acme/app", &spec).await.unwrap();
    let req = only(&fake.requests()).clone();
    assert_eq!(req.line(), "POST /api/v1/repos/acme/app/hooks");
    assert_eq!(
        req.json(),
        json!({
            "type": "gitea",
            "config": {"url": "https://kiln.example.com/hooks/gitea", "content_type": "json", "secret": "whsec-1"},
            "events": ["push"],
            "active": true,
        })
    );
    assert_eq!(fake.hooks()[0].id.to_string(), id);

    fake.clear_requests();
    let rotated = HookSpec {
        url: spec.url.clone(),
        secret: "whsec-2".into(),
    };
    client.update_hook("acme/app", &id, &rotated).await.unwrap();
    let req = only(&fake.requests()).clone();
    assert_eq!(
        req.line(),
        format!("PATCH /api/v1/repos/acme/app/hooks/{id}")
    );
    assert_eq!(
        req.json(),
        json!({
            "config": {"url": "https://kiln.example.com/hooks/gitea", "content_type": "json", "secret": "whsec-2"},
            "events": ["push"],
            "active": true,
        })
    );
    assert_eq!(fake.hooks()[0].body["config"]["secret"], "whsec-2");

    fake.clear_requests();
    client.remove_hook("acme/app", &id).await.unwrap();
    assert_eq!(
        only(&fake.requests()).line(),
        format!("DELETE /api/v1/repos/acme/app/hooks/{id}")
    );
    assert!(fake.hooks().is_empty());
    client.remove_hook("acme/app", &id).await.unwrap();
    let e = client
        .update_hook("acme/app", &id, &rotated)
        .await
        .unwrap_err();
    assert_eq!(e.status, Some(404));
    fake.fail_next("POST", "/hooks", 1, Failure::Invalid);
    let e = client.install_hook("acme/app", &spec).await.unwrap_err();
    assert_eq!(
        (e.status, e.message.as_str()),
        (Some(422), "Invalid url: must be http:// or https://")
    );
}

#[tokio::test]
async fn gitea_sets_statuses_in_its_own_words() {
    let fake = FakeGitea::start(GITEA_TOKEN, "bob").await;
    fake.add_repo("acme/app", false);
    let client = gitea(&fake);
    for (state, word) in [
        (StatusState::Pending, "pending"),
        (StatusState::Running, "pending"),
        (StatusState::Success, "success"),
        (StatusState::Failure, "failure"),
        (StatusState::Error, "error"),
        (StatusState::Cancelled, "error"),
    ] {
        fake.clear_requests();
        client
            .set_status("acme/app", SHA, &status(state))
            .await
            .unwrap();
        let req = only(&fake.requests()).clone();
        assert_eq!(
            req.line(),
            format!("POST /api/v1/repos/acme/app/statuses/{SHA}")
        );
        assert_eq!(
            req.json(),
            json!({
                "state": word,
                "context": "kiln/main",
                "description": "registry.example.com/acme/app:main-0123456",
                "target_url": "https://kiln.example.com/builds/12",
            }),
            "{state:?}"
        );
    }
    let stored: Vec<String> = fake
        .statuses()
        .iter()
        .map(|s| s.body["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        stored,
        ["pending", "pending", "success", "failure", "error", "error"]
    );
}

#[tokio::test]
async fn gitea_errors_are_mapped() {
    let fake = FakeGitea::start(GITEA_TOKEN, "bob").await;
    fake.add_repo("acme/app", false);
    let client = gitea(&fake);
    let cases = [
        (
            Failure::Unauthorized,
            401,
            "user does not exist [uid: 0, name: ]",
            false,
        ),
        (
            Failure::Forbidden,
            403,
            "token does not have at least one of required scope(s): [write:repository]",
            false,
        ),
        (
            Failure::NotFound,
            404,
            "The target couldn't be found.",
            false,
        ),
        (
            Failure::Invalid,
            422,
            "Invalid url: must be http:// or https://",
            false,
        ),
        (Failure::ServerError, 500, "internal error", false),
        (
            Failure::RateLimited { retry_after: 5 },
            429,
            "Too Many Requests",
            true,
        ),
    ];
    for (failure, code, message, limited) in cases {
        fake.fail_next("GET", "/user/repos", 1, failure.clone());
        let e = client.repositories(1, 10, None).await.unwrap_err();
        assert_eq!(e.status, Some(code), "{failure:?}");
        assert_eq!(e.message, message, "{failure:?}");
        assert_eq!(e.rate_limited, limited, "{failure:?}");
        if limited {
            assert_eq!(e.retry_after, Some(Duration::from_secs(5)));
        }
        no_token(&e, GITEA_TOKEN);
    }
    let wrong = GiteaClient::with_options(fake.url(), "nope".into(), &loopback()).unwrap();
    let e = wrong.check().await.unwrap_err();
    assert_eq!(
        (e.status, e.message.as_str()),
        (Some(401), "token is required")
    );
    assert!(!e.is_transient());
}

#[tokio::test]
async fn gitea_git_credentials_and_no_token_in_debug() {
    let fake = FakeGitea::start(GITEA_TOKEN, "bob").await;
    let client = gitea(&fake);
    let (user, password) = client.git_credentials().await.unwrap();
    assert!(!user.is_empty());
    assert_eq!(password, GITEA_TOKEN);
    let debug = format!("{client:?}");
    assert!(!debug.contains(GITEA_TOKEN), "{debug}");
    assert!(debug.contains("authorization: [redacted]"), "{debug}");
}

// ---------------------------------------------------------------------------------------------
// Both: reaching the host
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_unreachable_host_is_a_transient_error_without_the_token() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let lab = GitLabClient::with_options(&base, TOKEN.into(), &loopback()).unwrap();
    let e = lab.check().await.unwrap_err();
    assert_eq!(e.status, None);
    assert!(e.is_transient());
    assert!(!e.message.is_empty());
    no_token(&e, TOKEN);
    let tea = GiteaClient::with_options(&base, GITEA_TOKEN.into(), &loopback()).unwrap();
    let e = tea.repositories(1, 10, None).await.unwrap_err();
    assert_eq!(e.status, None);
    no_token(&e, GITEA_TOKEN);
}

#[tokio::test]
async fn internal_hosts_are_refused_unless_allowed() {
    let fake = FakeGitLab::start(TOKEN, "alice").await;
    // The default options open nothing: a loopback instance is refused before any call.
    let e = GitLabClient::new(fake.url(), TOKEN.into()).unwrap_err();
    assert!(e.message.contains("refused"), "{e:?}");
    assert!(e.message.contains("KILN_GIT_ALLOW"), "{e:?}");
    let e = GiteaClient::new(fake.url(), GITEA_TOKEN.into()).unwrap_err();
    assert!(e.message.contains("refused"), "{e:?}");
    // A name that resolves to loopback is refused at connection time.
    let named = fake.url().replace("127.0.0.1", "localhost");
    let client = GitLabClient::new(&named, TOKEN.into()).unwrap();
    let e = client.check().await.unwrap_err();
    assert!(e.message.contains("refused"), "{e:?}");
    assert_eq!(e.status, None);
    assert!(fake.requests().is_empty());
    // Opened by name, it goes through.
    let opts = RestOptions {
        allow: AllowList::parse("localhost").unwrap(),
        ..RestOptions::default()
    };
    let client = GitLabClient::with_options(&named, TOKEN.into(), &opts).unwrap();
    assert_eq!(client.check().await.unwrap().login, "alice");
}

#[tokio::test]
async fn bad_base_urls_and_tokens_are_refused() {
    for bad in [
        "gitlab.example.com",
        "ftp://gitlab.example.com",
        "https://user:pw@gitlab.example.com",
        "https://gitlab.example.com/?x=1",
    ] {
        let e = GitLabClient::new(bad, TOKEN.into()).unwrap_err();
        assert!(e.message.starts_with("base URL"), "{bad}: {e:?}");
        no_token(&e, TOKEN);
        let e = GiteaClient::new(bad, GITEA_TOKEN.into()).unwrap_err();
        assert!(e.message.starts_with("base URL"), "{bad}: {e:?}");
    }
    assert!(GitLabClient::new("https://gitlab.example.com", " ".into()).is_err());
    let e = GiteaClient::new("https://gitea.example.com", "a\nb".into()).unwrap_err();
    assert!(!e.message.contains("a\nb"));
    // An instance under a path keeps it.
    let fake = FakeGitea::start(GITEA_TOKEN, "bob").await;
    let under = format!("{}/git/", fake.url());
    let client = GiteaClient::with_options(&under, GITEA_TOKEN.into(), &loopback()).unwrap();
    let _ = client.check().await;
    assert_eq!(only(&fake.requests()).path, "/git/api/v1/user");
}
