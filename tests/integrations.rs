//! A namespace's integrations with git hosts (issue 12), through the API: what a PUT must hold
//! (every bad input a 422 naming its field, checked before the host is asked), who may set, read
//! and remove them (tenants), and linking a source by the host's repository name.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::Registry;
use support::kiln::Kiln;

async fn start() -> (Registry, Kiln) {
    support::ensure_docker();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    (registry, kiln)
}

fn field(body: &Value) -> &str {
    body["error"]["field"].as_str().unwrap_or("")
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// Every bad body is a 422 naming its field, before anything reaches a host; nothing is stored.
#[tokio::test(flavor = "multi_thread")]
async fn bad_integration_bodies_are_refused_naming_the_field() {
    let (_registry, kiln) = start().await;
    kiln.repo("acme", "api").await;
    let key_like = "-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n";
    let cases: &[(&str, Value, &str, &str)] = &[
        ("github", json!({}), "token", "required"),
        ("github", json!({"kind": "token"}), "token", "required"),
        (
            "github",
            json!({"kind": "oauth", "token": "t"}),
            "kind",
            "invalid_value",
        ),
        (
            "github",
            json!({"kind": "token", "token": ""}),
            "token",
            "invalid_length",
        ),
        (
            "github",
            json!({"kind": "token", "token": "a b"}),
            "token",
            "invalid_character",
        ),
        (
            "github",
            json!({"kind": "token", "token": "a\u{0}b"}),
            "token",
            "invalid_character",
        ),
        (
            "github",
            json!({"kind": "token", "token": "x".repeat(1025)}),
            "token",
            "invalid_length",
        ),
        (
            "github",
            json!({"kind": "token", "token": "t", "url": "https://example.com"}),
            "url",
            "not_allowed",
        ),
        (
            "github",
            json!({"kind": "token", "token": "t", "app_id": 1}),
            "app_id",
            "not_allowed",
        ),
        (
            "github",
            json!({"kind": "app", "installation_id": 2, "private_key": key_like}),
            "app_id",
            "required",
        ),
        (
            "github",
            json!({"kind": "app", "app_id": 0, "installation_id": 2, "private_key": key_like}),
            "app_id",
            "out_of_range",
        ),
        (
            "github",
            json!({"kind": "app", "app_id": 1, "private_key": key_like}),
            "installation_id",
            "required",
        ),
        (
            "github",
            json!({"kind": "app", "app_id": 1, "installation_id": 2}),
            "private_key",
            "required",
        ),
        (
            "github",
            json!({"kind": "app", "app_id": 1, "installation_id": 2, "private_key": key_like}),
            "private_key",
            "invalid_key",
        ),
        (
            "github",
            json!({"kind": "app", "app_id": 1, "installation_id": 2, "private_key": "k", "token": "t"}),
            "token",
            "not_allowed",
        ),
        (
            "github",
            json!({"token": "t", "zz": 1}),
            "zz",
            "unknown_field",
        ),
        ("gitlab", json!({"token": "t"}), "url", "required"),
        (
            "gitlab",
            json!({"url": "https://gitlab.example.com"}),
            "token",
            "required",
        ),
        (
            "gitlab",
            json!({"kind": "app", "url": "https://g.example", "token": "t"}),
            "kind",
            "invalid_value",
        ),
        (
            "gitlab",
            json!({"url": "ftp://gitlab.example.com", "token": "t"}),
            "url",
            "invalid_url",
        ),
        (
            "gitlab",
            json!({"url": "gitlab.example.com", "token": "t"}),
            "url",
            "invalid_url",
        ),
        (
            "gitlab",
            json!({"url": "https://u:p@gitlab.example.com", "token": "t"}),
            "url",
            "invalid_url",
        ),
        (
            "gitlab",
            json!({"url": "https://gitlab.example.com/?x=1", "token": "t"}),
            "url",
            "invalid_url",
        ),
        (
            "gitlab",
            json!({"url": "https://gitlab example.com", "token": "t"}),
            "url",
            "invalid_url",
        ),
        // Internal addresses the outbound guard refuses (KILN_GIT_ALLOW opens only loopback here).
        (
            "gitlab",
            json!({"url": "http://10.1.2.3", "token": "t"}),
            "url",
            "address_not_allowed",
        ),
        (
            "gitea",
            json!({"url": "http://169.254.169.254", "token": "t"}),
            "url",
            "address_not_allowed",
        ),
        (
            "gitea",
            json!({"url": "http://[fd00::1]:3000", "token": "t"}),
            "url",
            "address_not_allowed",
        ),
        (
            "gitea",
            json!({"url": "https://gitea.example.com", "token": "t", "app_id": 3}),
            "app_id",
            "not_allowed",
        ),
    ];
    for (provider, body, want_field, want_code) in cases {
        let (s, answer) = kiln
            .put(
                &format!("/namespaces/acme/integrations/{provider}"),
                body.clone(),
            )
            .await;
        assert_eq!(
            s,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{provider} {body}: {answer}"
        );
        assert_eq!(field(&answer), *want_field, "{provider} {body}: {answer}");
        if *want_code != "unknown_field" {
            assert_eq!(code(&answer), *want_code, "{provider} {body}: {answer}");
        }
        // The refused token is not repeated to the caller.
        if let Some(t) = body.get("token").and_then(Value::as_str)
            && t.len() > 3
        {
            assert!(!answer.to_string().contains(t), "{answer}");
        }
    }
    for provider in ["github", "gitlab", "gitea"] {
        let (s, body) = kiln
            .get(&format!("/namespaces/acme/integrations/{provider}"))
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    }
    // A host kiln has no integration with.
    let (s, body) = kiln
        .put(
            "/namespaces/acme/integrations/bitbucket",
            json!({"token": "t"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (s, body) = kiln.get("/namespaces/acme/integrations/bitbucket").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (s, body) = kiln.delete("/namespaces/acme/integrations/github").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (s, body) = kiln.get("/namespaces/nope/integrations/github").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
}

/// Only the namespace's admins set and remove its integrations; other namespaces' tokens see
/// nothing of them.
#[tokio::test(flavor = "multi_thread")]
async fn tenants_cannot_set_read_or_list_another_namespaces_integration() {
    let (_registry, kiln) = start().await;
    kiln.repo("acme", "api").await;
    kiln.repo("other", "web").await;
    let acme_write = kiln.token("acme-writer", "write", Some("acme")).await;
    let acme_read = kiln.token("acme-reader", "read", Some("acme")).await;
    let other_admin = kiln.token("other-admin", "admin", Some("other")).await;
    let body = json!({"url": "https://gitlab.example.com", "token": "glpat-x"});
    for (token, method, path, want) in [
        (
            &acme_write,
            Method::PUT,
            "/namespaces/acme/integrations/gitlab",
            StatusCode::FORBIDDEN,
        ),
        (
            &acme_read,
            Method::PUT,
            "/namespaces/acme/integrations/gitlab",
            StatusCode::FORBIDDEN,
        ),
        (
            &acme_write,
            Method::DELETE,
            "/namespaces/acme/integrations/gitlab",
            StatusCode::FORBIDDEN,
        ),
        (
            &other_admin,
            Method::PUT,
            "/namespaces/acme/integrations/gitlab",
            StatusCode::NOT_FOUND,
        ),
        (
            &other_admin,
            Method::GET,
            "/namespaces/acme/integrations/gitlab",
            StatusCode::NOT_FOUND,
        ),
        (
            &other_admin,
            Method::DELETE,
            "/namespaces/acme/integrations/gitlab",
            StatusCode::NOT_FOUND,
        ),
        (
            &other_admin,
            Method::GET,
            "/namespaces/acme/integrations/gitlab/repositories",
            StatusCode::NOT_FOUND,
        ),
        // Its own namespace has none.
        (
            &acme_read,
            Method::GET,
            "/namespaces/acme/integrations/gitlab",
            StatusCode::NOT_FOUND,
        ),
        (
            &acme_read,
            Method::GET,
            "/namespaces/acme/integrations/gitlab/repositories",
            StatusCode::NOT_FOUND,
        ),
    ] {
        let b = (method == Method::PUT).then(|| body.clone());
        let (s, answer) = kiln.call_as(token, method.clone(), path, b).await;
        assert_eq!(s, want, "{method} {path}: {answer}");
        assert!(answer["error"]["code"].is_string(), "{answer}");
    }
}

/// The repository listing's query is checked before the host is asked.
#[tokio::test(flavor = "multi_thread")]
async fn repository_listing_queries_are_checked() {
    let (_registry, kiln) = start().await;
    kiln.repo("acme", "api").await;
    for (query, want_field) in [
        ("page=0", "page"),
        ("page=10001", "page"),
        ("per_page=0", "per_page"),
        ("per_page=101", "per_page"),
        ("page=x", "page"),
        ("search=a%00b", "search"),
        ("zz=1", "zz"),
    ] {
        let (s, body) = kiln
            .get(&format!(
                "/namespaces/acme/integrations/github/repositories?{query}"
            ))
            .await;
        assert!(s.is_client_error(), "{query}: {s} {body}");
        assert_eq!(field(&body), want_field, "{query}: {body}");
    }
}

/// A source linked by the host's repository name needs the namespace's integration; bad names
/// are refused naming `repository`, and a source needs a clone URL or a repository.
#[tokio::test(flavor = "multi_thread")]
async fn linking_by_repository_needs_an_integration_and_a_good_name() {
    let (_registry, kiln) = start().await;
    kiln.repo("acme", "api").await;
    let path = "/namespaces/acme/repos/api/source";
    for (body, want_field, want_code) in [
        (
            json!({"provider": "github", "repository": "acme/api"}),
            "repository",
            "no_integration",
        ),
        (
            json!({"provider": "gitea", "repository": "acme/api"}),
            "repository",
            "no_integration",
        ),
        (
            json!({"provider": "github", "repository": "acme"}),
            "repository",
            "invalid_value",
        ),
        (
            json!({"provider": "github", "repository": "acme/../x"}),
            "repository",
            "invalid_value",
        ),
        (
            json!({"provider": "github", "repository": "a b/c"}),
            "repository",
            "invalid_value",
        ),
        (
            json!({"provider": "github", "repository": 5}),
            "repository",
            "",
        ),
        (json!({"provider": "github"}), "clone_url", "required"),
    ] {
        let (s, answer) = kiln.put(path, body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(field(&answer), want_field, "{body}: {answer}");
        if !want_code.is_empty() {
            assert_eq!(code(&answer), want_code, "{body}: {answer}");
        }
    }
    let (s, body) = kiln.get(path).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing was linked: {body}");
    // A manual link works as before, and says nothing of hooks.
    let git = support::GitRepo::new();
    let (s, body) = kiln
        .put(
            path,
            json!({"provider": "github", "clone_url": git.clone_url()}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.get("repository").is_none(), "{body}");
    assert!(body.get("hook_installed").is_none(), "{body}");
    assert!(body.get("warnings").is_none(), "{body}");
}
