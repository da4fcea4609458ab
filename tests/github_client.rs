//! The GitHub client (`kiln::forge::github_api`) against the local fake GitHub: what it sends
//! (paths, queries, exact bodies, credentials) and what it makes of each answer.

mod support;

use std::time::Duration;

use kiln::forge::client::{CommitStatus, ForgeClient, HookSpec, HostCredentials, StatusState};
use kiln::forge::github_api::GitHubClient;
use serde_json::json;
use support::fake_github::{Failure, FakeGitHub, app_key_pair};

const TOKEN: &str = "ghp_0123456789abcdefghijABCDEFGHIJ012345";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn token_client(fake: &FakeGitHub) -> GitHubClient {
    fake.add_token(TOKEN, "octocat");
    GitHubClient::new(
        &fake.url(),
        HostCredentials::Token {
            token: TOKEN.into(),
        },
    )
    .unwrap()
}

fn app_client(fake: &FakeGitHub) -> GitHubClient {
    let (private, public) = app_key_pair();
    fake.set_app(
        4242,
        77,
        &public,
        "acme",
        json!({"contents": "read", "metadata": "read", "statuses": "write"}),
    );
    GitHubClient::new(
        &fake.url(),
        HostCredentials::App {
            app_id: 4242,
            private_key: private,
            installation_id: 77,
        },
    )
    .unwrap()
}

fn hook() -> HookSpec {
    HookSpec {
        url: "https://kiln.example/hooks/github".into(),
        secret: "whsec-very-secret-value".into(),
    }
}

#[tokio::test]
async fn a_token_is_checked_with_get_user_and_its_scopes() {
    let fake = FakeGitHub::start();
    let client = token_client(&fake);
    fake.set_scopes(Some("repo, admin:repo_hook"));
    let account = client.check().await.unwrap();
    assert_eq!(account.login, "octocat");
    assert_eq!(account.kind, "user");
    assert_eq!(account.scopes, vec!["repo", "admin:repo_hook"]);
    let r = &fake.requests()[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/user"));
    assert_eq!(r.header("authorization"), Some(&*format!("Bearer {TOKEN}")));
    assert_eq!(r.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(r.header("x-github-api-version"), Some("2022-11-28"));

    // A fine-grained token: no scopes header.
    fake.set_scopes(None);
    assert!(client.check().await.unwrap().scopes.is_empty());
    assert_eq!(
        client.git_credentials().await.unwrap(),
        ("x-access-token".to_string(), TOKEN.to_string())
    );
}

#[tokio::test]
async fn an_app_is_checked_with_its_jwt_and_lists_through_its_installation() {
    let fake = FakeGitHub::start();
    let client = app_client(&fake);
    let account = client.check().await.unwrap();
    assert_eq!(account.login, "acme");
    assert_eq!(account.kind, "app_installation");
    assert_eq!(
        account.scopes,
        vec!["contents:read", "metadata:read", "statuses:write"]
    );
    let r = &fake.requests()[0];
    assert_eq!(r.path, "/app/installations/77");
    let jwt = r
        .header("authorization")
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap();
    assert_eq!(jwt.split('.').count(), 3, "a JWT: {jwt}");

    fake.add_repo("acme/api", true);
    let page = client.repositories(1, 30, None).await.unwrap();
    assert_eq!(page.repositories.len(), 1);
    assert!(page.repositories[0].private);
    let reqs = fake.requests();
    let mint = reqs
        .iter()
        .find(|r| r.path == "/app/installations/77/access_tokens")
        .unwrap();
    assert_eq!(mint.method, "POST");
    let list = reqs.last().unwrap();
    assert_eq!(list.path, "/installation/repositories");
    let token = &fake.installation_tokens()[0];
    assert_eq!(
        list.header("authorization"),
        Some(&*format!("Bearer {token}"))
    );
    assert_eq!(
        client.git_credentials().await.unwrap(),
        ("x-access-token".to_string(), token.clone())
    );
    assert_eq!(fake.minted(), 1, "the installation token is reused");
}

#[tokio::test]
async fn a_wrong_app_key_is_refused_by_the_jwt_check() {
    let fake = FakeGitHub::start();
    let _ = app_client(&fake);
    let (other_private, _) = app_key_pair();
    let client = GitHubClient::new(
        &fake.url(),
        HostCredentials::App {
            app_id: 4242,
            private_key: other_private,
            installation_id: 77,
        },
    )
    .unwrap();
    let e = client.check().await.unwrap_err();
    assert_eq!(e.status, Some(401));
    assert!(e.message.contains("JSON web token"), "{e:?}");
    assert!(!e.is_transient());

    let e = GitHubClient::new(
        &fake.url(),
        HostCredentials::App {
            app_id: 1,
            private_key: "not a key".into(),
            installation_id: 1,
        },
    )
    .unwrap_err();
    assert!(e.message.contains("private key"), "{e:?}");
    assert!(GitHubClient::new("ftp://x", HostCredentials::Token { token: "t".into() }).is_err());
}

#[tokio::test]
async fn installation_tokens_are_reused_then_refreshed_before_they_expire() {
    let fake = FakeGitHub::start();
    let client = app_client(&fake);
    fake.add_repo("acme/api", false);
    for _ in 0..3 {
        client.repository("acme/api").await.unwrap();
    }
    assert_eq!(fake.minted(), 1);

    // Tokens that live 4 minutes are inside the 5-minute margin: each call mints a new one.
    let fake = FakeGitHub::start();
    let client = app_client(&fake);
    fake.add_repo("acme/api", false);
    fake.set_token_lifetime(Duration::from_secs(240));
    client.repository("acme/api").await.unwrap();
    client.repository("acme/api").await.unwrap();
    assert_eq!(fake.minted(), 2);
    let (_, password) = client.git_credentials().await.unwrap();
    assert_eq!(fake.minted(), 3);
    assert!(fake.installation_tokens().contains(&password));

    // A token GitHub refuses is minted again and the call made once more.
    fake.set_token_lifetime(Duration::from_secs(3600));
    client.repository("acme/api").await.unwrap();
    let before = fake.minted();
    fake.fail_next("GET", "/repos/acme/api", 1, Failure::bad_credentials());
    client.repository("acme/api").await.unwrap();
    assert_eq!(fake.minted(), before + 1);
}

#[tokio::test]
async fn listings_page_with_the_link_header_and_search_filters_full_names() {
    let fake = FakeGitHub::start();
    let client = token_client(&fake);
    fake.add_many("octocat", "svc", 5);
    fake.add_repo("acme/private-thing", true);

    let first = client.repositories(1, 2, None).await.unwrap();
    assert_eq!(first.repositories.len(), 2);
    assert_eq!(first.repositories[0].full_name, "acme/private-thing");
    assert!(first.repositories[0].private);
    assert_eq!(
        first.repositories[0].clone_url,
        format!("{}/git/acme/private-thing.git", fake.url())
    );
    assert_eq!(
        first.repositories[0].default_branch.as_deref(),
        Some("main")
    );
    assert_eq!(first.next_page, Some(2));
    let r = fake.requests().pop().unwrap();
    assert_eq!(r.path, "/user/repos");
    assert_eq!(r.query, "per_page=2&page=1&sort=full_name");

    let last = client.repositories(3, 2, None).await.unwrap();
    assert_eq!(last.repositories.len(), 2);
    assert_eq!(last.repositories[1].full_name, "octocat/svc-004");
    assert_eq!(last.next_page, None);

    // 250 more: a search walks the pages of 100.
    fake.add_many("octocat", "bulk", 250);
    fake.clear_requests();
    let found = client.repositories(1, 10, Some("SVC-00")).await.unwrap();
    assert_eq!(found.repositories.len(), 5);
    assert_eq!(found.next_page, None);
    let pages: Vec<String> = fake.requests().iter().map(|r| r.query.clone()).collect();
    assert_eq!(
        pages,
        vec![
            "per_page=100&page=1&sort=full_name",
            "per_page=100&page=2&sort=full_name",
            "per_page=100&page=3&sort=full_name"
        ]
    );
    let bulk = client.repositories(2, 100, Some("bulk")).await.unwrap();
    assert_eq!(bulk.repositories.len(), 100);
    assert_eq!(bulk.repositories[0].full_name, "octocat/bulk-100");
    assert_eq!(bulk.next_page, Some(3));

    let one = client.repository("octocat/svc-001").await.unwrap();
    assert_eq!(one.full_name, "octocat/svc-001");
    assert_eq!(one.html_url, format!("{}/octocat/svc-001", fake.url()));
    assert_eq!(
        client.repository("octocat/nope").await.unwrap_err().status,
        Some(404)
    );
    let bad = client.repository("../../user").await.unwrap_err();
    assert!(bad.message.contains("owner/name"), "{bad:?}");
}

#[tokio::test]
async fn hooks_are_installed_updated_and_removed_with_githubs_bodies() {
    let fake = FakeGitHub::start();
    let client = token_client(&fake);
    fake.add_repo("octocat/app", false);
    let id = client.install_hook("octocat/app", &hook()).await.unwrap();
    let r = fake.requests().pop().unwrap();
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/repos/octocat/app/hooks")
    );
    assert_eq!(
        r.json(),
        json!({
            "name": "web",
            "active": true,
            "events": ["push"],
            "config": {
                "url": "https://kiln.example/hooks/github",
                "content_type": "json",
                "secret": "whsec-very-secret-value",
                "insecure_ssl": "0"
            }
        })
    );
    assert_eq!(fake.hooks("octocat/app")[0]["id"].to_string(), id);

    // The same URL again: GitHub's 422 with its errors[].message.
    let e = client
        .install_hook("octocat/app", &hook())
        .await
        .unwrap_err();
    assert_eq!(e.status, Some(422));
    assert_eq!(
        e.message,
        "Validation Failed: Hook already exists on this repository"
    );
    assert!(!e.is_transient());

    let moved = HookSpec {
        url: "https://kiln2.example/hooks/github".into(),
        secret: "whsec-rotated-secret".into(),
    };
    client
        .update_hook("octocat/app", &id, &moved)
        .await
        .unwrap();
    let r = fake.requests().pop().unwrap();
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("PATCH", format!("/repos/octocat/app/hooks/{id}").as_str())
    );
    assert_eq!(
        r.json(),
        json!({"active": true, "config": {"url": "https://kiln2.example/hooks/github", "content_type": "json", "secret": "whsec-rotated-secret", "insecure_ssl": "0"}})
    );
    assert_eq!(
        fake.hooks("octocat/app")[0]["config"]["secret"],
        "whsec-rotated-secret"
    );
    assert_eq!(
        client
            .update_hook("octocat/app", "999", &moved)
            .await
            .unwrap_err()
            .status,
        Some(404)
    );

    client.remove_hook("octocat/app", &id).await.unwrap();
    assert!(fake.hooks("octocat/app").is_empty());
    // Already gone: fine.
    client.remove_hook("octocat/app", &id).await.unwrap();
    let r = fake.requests().pop().unwrap();
    assert_eq!(r.method, "DELETE");
    assert!(client.remove_hook("octocat/app", "../x").await.is_err());
}

#[tokio::test]
async fn statuses_use_githubs_states_and_cut_descriptions() {
    let fake = FakeGitHub::start();
    let client = token_client(&fake);
    fake.add_repo("octocat/app", false);
    let cases = [
        (StatusState::Pending, "pending"),
        (StatusState::Running, "pending"),
        (StatusState::Success, "success"),
        (StatusState::Failure, "failure"),
        (StatusState::Error, "error"),
        (StatusState::Cancelled, "error"),
    ];
    for (state, _) in cases {
        client
            .set_status(
                "octocat/app",
                SHA,
                &CommitStatus {
                    state,
                    context: "kiln/main".into(),
                    description: "registry.example/app:main".into(),
                    target_url: "https://kiln.example/builds/1".into(),
                },
            )
            .await
            .unwrap();
    }
    let set = fake.statuses("octocat/app", SHA);
    let states: Vec<&str> = set.iter().map(|s| s["state"].as_str().unwrap()).collect();
    assert_eq!(states, cases.map(|(_, w)| w).to_vec());
    assert_eq!(
        set[0],
        json!({"state": "pending", "context": "kiln/main", "description": "registry.example/app:main", "target_url": "https://kiln.example/builds/1"})
    );
    assert_eq!(
        fake.requests().pop().unwrap().path,
        format!("/repos/octocat/app/statuses/{SHA}")
    );

    let long = "é".repeat(300);
    client
        .set_status(
            "octocat/app",
            SHA,
            &CommitStatus {
                state: StatusState::Failure,
                context: "kiln/main".into(),
                description: long,
                target_url: "https://kiln.example/builds/2".into(),
            },
        )
        .await
        .unwrap();
    let d = fake.statuses("octocat/app", SHA).pop().unwrap()["description"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(d.chars().count(), 140);
    assert!(d.ends_with('…'));

    let e = client
        .set_status(
            "octocat/app",
            "not-a-sha",
            &CommitStatus {
                state: StatusState::Success,
                context: "kiln/main".into(),
                description: String::new(),
                target_url: String::new(),
            },
        )
        .await
        .unwrap_err();
    assert!(e.message.contains("commit id"), "{e:?}");
}

#[tokio::test]
async fn each_github_error_is_mapped_and_never_shows_the_token() {
    let fake = FakeGitHub::start();
    let client = token_client(&fake);
    fake.add_repo("octocat/app", false);
    let mut errors = vec![];

    fake.fail_next("GET", "/user", 1, Failure::bad_credentials());
    let e = client.check().await.unwrap_err();
    assert_eq!(
        (e.status, e.message.as_str()),
        (Some(401), "Bad credentials")
    );
    assert!(!e.rate_limited && !e.is_transient());
    errors.push(e);

    fake.fail_next(
        "GET",
        "/repos/octocat/app",
        1,
        Failure::rate_limited(Duration::from_secs(120)),
    );
    let e = client.repository("octocat/app").await.unwrap_err();
    assert_eq!(e.status, Some(403));
    assert!(e.rate_limited && e.is_transient(), "{e:?}");
    let wait = e.retry_after.unwrap().as_secs();
    assert!((110..=120).contains(&wait), "{wait}");
    assert!(e.message.contains("API rate limit exceeded"), "{e:?}");
    errors.push(e);

    fake.fail_next(
        "GET",
        "/repos/octocat/app",
        1,
        Failure::secondary_rate_limit(61),
    );
    let e = client.repository("octocat/app").await.unwrap_err();
    assert!(e.rate_limited);
    assert_eq!(e.retry_after, Some(Duration::from_secs(61)));
    errors.push(e);

    fake.fail_next("GET", "/repos/octocat/app", 1, Failure::not_found());
    let e = client.repository("octocat/app").await.unwrap_err();
    assert_eq!((e.status, e.message.as_str()), (Some(404), "Not Found"));
    assert!(!e.is_transient());
    errors.push(e);

    fake.fail_next(
        "POST",
        "/repos/octocat/app/hooks",
        1,
        Failure::validation_failed(
            json!([{"resource": "Hook", "field": "config", "code": "invalid"}]),
        ),
    );
    let e = client
        .install_hook("octocat/app", &hook())
        .await
        .unwrap_err();
    assert_eq!(e.message, "Validation Failed: Hook.config invalid");
    errors.push(e);

    fake.fail_next("GET", "/repos/octocat/app", 1, Failure::server_error());
    let e = client.repository("octocat/app").await.unwrap_err();
    assert_eq!(e.status, Some(500));
    assert!(e.is_transient());
    errors.push(e);

    // Nothing listens there.
    let port = support::free_port();
    let gone = GitHubClient::new(
        &format!("http://127.0.0.1:{port}"),
        HostCredentials::Token {
            token: TOKEN.into(),
        },
    )
    .unwrap();
    let e = gone.check().await.unwrap_err();
    assert_eq!(e.status, None);
    assert!(e.is_transient());
    assert!(e.message.contains("cannot be reached"), "{e:?}");
    errors.push(e);

    for e in &errors {
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(TOKEN), "{shown}");
        assert!(!shown.contains("whsec"), "{shown}");
    }
    let debug = format!("{client:?} {gone:?}");
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(debug.contains("[redacted]"), "{debug}");
}

#[tokio::test]
async fn an_app_client_never_shows_its_key_or_tokens() {
    let fake = FakeGitHub::start();
    let client = app_client(&fake);
    fake.add_repo("acme/api", false);
    client.repository("acme/api").await.unwrap();
    fake.fail_next("GET", "/repos/acme/api", 2, Failure::bad_credentials());
    let e = client.repository("acme/api").await.unwrap_err();
    assert_eq!(e.status, Some(401));
    let shown = format!("{e} {e:?} {client:?}");
    for token in fake.installation_tokens() {
        assert!(!shown.contains(&token), "{shown}");
    }
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    assert!(shown.contains("app_id: 4242"), "{shown}");
}
