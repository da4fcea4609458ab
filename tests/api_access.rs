//! Deny by default, walked: every route of the API's route table (`kiln::http::api::route_table`,
//! the table the router is built from, not a hand-kept list) called with no token, a wrong token, an
//! expired token, a token of another namespace, a namespace admin on kiln-wide routes, and read
//! tokens on every write: 401 / 403 / 404 with the JSON error shape, and the whole database exactly
//! as it was. Path parameters are real objects (a CI repository with a rule, a succeeded build, its
//! version, a webhook, a delivery, a token). Real kiln, registry, dockerd and git.

mod support;

use std::time::Duration;

use kiln::http::access::{Access, Lookup};
use kiln::http::api::{ApiRoute, route_table};
use kiln::http::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::kiln::{ADMIN_TOKEN, Kiln, KilnApi};
use support::{GitRepo, RecordingServer, Registry, wait_until};

const NS: &str = "red";
const REPO: &str = "app";

/// The rule of each route fits its path: a `{ns}` route is scoped by that namespace, a
/// `/builds/{id}` or `/deliveries/{id}` route by its object's, every other route is kiln-wide or
/// open to any token; nothing is public; no (method, path) is declared twice.
#[test]
fn every_route_has_a_rule_that_fits_its_path() {
    let table = route_table();
    assert!(table.len() >= 40, "{} routes", table.len());
    let mut seen = std::collections::HashSet::new();
    for r in &table {
        assert!(
            seen.insert((r.method.clone(), r.path)),
            "{} {} twice",
            r.method,
            r.path
        );
        let write = r.method != Method::GET;
        match r.access {
            Access::Namespace { role } => {
                assert!(r.path.starts_with("/namespaces/{ns}/"), "{}", r.path);
                assert_eq!(write, role >= Role::Write, "{} {}", r.method, r.path);
            }
            Access::Resource { role, lookup } => {
                let prefix = match lookup {
                    Lookup::Build => "/builds/{id}",
                    Lookup::Delivery => "/deliveries/{id}",
                };
                assert!(r.path.starts_with(prefix), "{}", r.path);
                assert_eq!(write, role >= Role::Write, "{} {}", r.method, r.path);
            }
            Access::KilnWide { role } => {
                assert!(!r.path.contains("{ns}"), "{}", r.path);
                assert_eq!(role, Role::Admin, "{} {}", r.method, r.path);
            }
            Access::AnyToken => {
                assert_eq!(r.method, Method::GET, "{}", r.path);
                assert!(!r.path.contains('{'), "{}", r.path);
            }
            Access::Public => panic!("{} {} is public", r.method, r.path),
        }
    }
}

/// Real ids for the path parameters.
struct Objects {
    rule: String,
    build: String,
    tag: String,
    webhook: String,
    delivery: String,
    token: String,
    commit: String,
}

impl Objects {
    /// `route`'s path with its parameters filled (and the query the route needs).
    fn path(&self, route: &ApiRoute) -> String {
        let mut out = Vec::new();
        let mut previous = "";
        for segment in route.path.split('/') {
            let value = match segment {
                "{ns}" => NS.to_string(),
                "{repo}" => REPO.to_string(),
                "{tag}" => self.tag.clone(),
                "{provider}" => "gitlab".to_string(),
                "{id}" => match previous {
                    "rules" => self.rule.clone(),
                    "builds" => self.build.clone(),
                    "webhooks" => self.webhook.clone(),
                    "deliveries" => self.delivery.clone(),
                    "tokens" => self.token.clone(),
                    other => panic!("{}: no object for an id under '{other}'", route.path),
                },
                s if s.starts_with('{') => panic!("{}: cannot fill {s}", route.path),
                s => s.to_string(),
            };
            out.push(value);
            previous = segment;
        }
        let mut path = out.join("/");
        if route.path.ends_with("/rules/preview") {
            path.push_str(&format!("?ref=refs/heads/main&commit={}", self.commit));
        }
        path
    }
}

/// Every row of every table, as text: what "nothing changed" compares.
async fn snapshot(db: &sqlx::SqlitePool) -> Vec<String> {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(db)
    .await
    .unwrap();
    let mut rows = Vec::new();
    for (table,) in tables {
        let columns: Vec<(String,)> = sqlx::query_as("SELECT name FROM pragma_table_info(?)")
            .bind(&table)
            .fetch_all(db)
            .await
            .unwrap();
        let row = columns
            .iter()
            .map(|(c,)| format!("quote(\"{c}\")"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let sql = format!("SELECT '{table}: ' || {row} FROM \"{table}\" ORDER BY 1");
        let lines: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(db)
            .await
            .unwrap();
        rows.extend(lines.into_iter().map(|(l,)| l));
    }
    rows
}

/// One call with `token` (None: no Authorization header): the status and the JSON body.
async fn call(
    api: &KilnApi,
    token: Option<&str>,
    method: &Method,
    path: &str,
) -> (StatusCode, Value) {
    let mut req = api
        .http
        .request(method.clone(), format!("{}/api/v1{path}", api.url));
    if *method != Method::GET {
        req = req.json(&json!({}));
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request to kiln");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_who_may_not_call_it_and_changes_nothing() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let receiver = RecordingServer::start().await;
    let kiln = Kiln::start(&registry, &[("KILN_WEBHOOK_ALLOW", "127.0.0.1")]).await;

    // Real objects for every parameter.
    let git = GitRepo::named(REPO);
    git.write(
        "Dockerfile",
        format!("FROM {base}\nLABEL kiln.test=access\n"),
    );
    let commit = git.commit("first");
    git.push("main");
    kiln.ci_repo(NS, REPO, &git.clone_url()).await;
    let rule = kiln
        .rule(
            NS,
            REPO,
            json!({"type": "branch", "name": "main", "overwrite": true}),
        )
        .await;
    let (s, b) = kiln
        .post(
            &format!("/namespaces/{NS}/repos/{REPO}/rules/{rule}/builds"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let build = b["id"].as_str().unwrap().to_string();
    let done = kiln.wait_build(&build).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let (s, versions) = kiln
        .get(&format!("/namespaces/{NS}/repos/{REPO}/versions"))
        .await;
    assert_eq!(s, StatusCode::OK, "{versions}");
    let tag = versions[0]["tag"].as_str().expect("a version").to_string();
    let (s, hook) = kiln
        .post(
            &format!("/namespaces/{NS}/repos/{REPO}/webhooks"),
            json!({"name": "receiver", "url": receiver.url}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");
    let webhook = hook["id"].as_str().unwrap().to_string();
    let (s, test) = kiln
        .post(
            &format!("/namespaces/{NS}/repos/{REPO}/webhooks/{webhook}/test"),
            json!({}),
        )
        .await;
    assert!(s.is_success(), "{test}");
    let delivery = test["id"].as_str().expect("the delivery's id").to_string();
    wait_until(
        "the test delivery to end",
        Duration::from_secs(60),
        || async {
            let (_, d) = kiln.get(&format!("/deliveries/{delivery}")).await;
            d["status"] != "pending"
        },
    )
    .await;
    kiln.repo("blue", "other").await;

    let red_read = kiln.token("red-read", "read", Some(NS)).await;
    let red_admin = kiln.token("red-admin", "admin", Some(NS)).await;
    let blue_admin = kiln.token("blue-admin", "admin", Some("blue")).await;
    let all_read = kiln.token("all-read", "read", None).await;
    let wrong = format!("kiln_{}", "0".repeat(64));
    let expired = "kiln_expired_token_for_the_access_walk";
    kiln::db::tokens::insert(
        &kiln.server.app.db,
        &kiln::db::tokens::NewToken {
            name: "expired-admin",
            namespace: None,
            role: "admin",
            token_hash: &kiln::http::auth::hash_token(expired),
            expires_at: Some("2020-01-01T00:00:00.000000Z"),
        },
    )
    .await
    .unwrap();
    let (s, tokens) = kiln.get("/tokens").await;
    assert_eq!(s, StatusCode::OK);
    let token = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "red-read")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A git host integration (issue 12), its host played by the GitLab fake.
    let gitlab =
        support::fake_gitlab::FakeGitLab::start("glpat-access-0123456789", "red-bot").await;
    let (s, b) = kiln
        .put(
            &format!("/namespaces/{NS}/integrations/gitlab"),
            json!({"url": gitlab.url(), "token": "glpat-access-0123456789"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "integration: {b}");
    let objects = Objects {
        rule,
        build,
        tag,
        webhook,
        delivery,
        token,
        commit,
    };

    // The admin reads every GET route of the table: the ids name real objects.
    let table = route_table();
    for r in table.iter().filter(|r| r.method == Method::GET) {
        let path = objects.path(r);
        let (s, b) = call(&kiln.api, Some(ADMIN_TOKEN), &r.method, &path).await;
        assert_eq!(s, StatusCode::OK, "admin GET {path}: {b}");
    }

    let before = snapshot(&kiln.server.app.db).await;
    for table in [
        "builds",
        "deliveries",
        "rules",
        "tokens",
        "versions",
        "webhooks",
    ] {
        assert!(
            before.iter().any(|l| l.starts_with(&format!("{table}: "))),
            "the snapshot holds no row of {table}"
        );
    }
    let mut tried = 0;
    for r in &table {
        let path = objects.path(r);
        let write = r.method != Method::GET;
        let scoped = matches!(r.access, Access::Namespace { .. } | Access::Resource { .. });
        let kiln_wide = matches!(r.access, Access::KilnWide { .. });
        let mut cases: Vec<(&str, Option<&str>, StatusCode)> = vec![
            ("no token", None, StatusCode::UNAUTHORIZED),
            ("a wrong token", Some(&wrong), StatusCode::UNAUTHORIZED),
            ("an expired token", Some(expired), StatusCode::UNAUTHORIZED),
        ];
        if scoped {
            cases.push((
                "another namespace's admin",
                Some(&blue_admin),
                StatusCode::NOT_FOUND,
            ));
        }
        if kiln_wide {
            cases.push((
                "another namespace's admin",
                Some(&blue_admin),
                StatusCode::FORBIDDEN,
            ));
            cases.push((
                "the namespace's admin",
                Some(&red_admin),
                StatusCode::FORBIDDEN,
            ));
            cases.push((
                "a kiln-wide read token",
                Some(&all_read),
                StatusCode::FORBIDDEN,
            ));
        }
        if write {
            cases.push((
                "a read token of the namespace",
                Some(&red_read),
                StatusCode::FORBIDDEN,
            ));
            if !kiln_wide {
                cases.push((
                    "a kiln-wide read token",
                    Some(&all_read),
                    StatusCode::FORBIDDEN,
                ));
            }
        }
        for (who, token, expected) in cases {
            let (s, b) = call(&kiln.api, token, &r.method, &path).await;
            assert_eq!(s, expected, "{} {path} with {who}: {b}", r.method);
            assert!(
                b["error"]["code"].is_string(),
                "{} {path} with {who}: {b}",
                r.method
            );
            assert!(
                !b["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("API route"),
                "{} {path} is not routed: {b}",
                r.method
            );
            tried += 1;
        }
    }
    let after = snapshot(&kiln.server.app.db).await;
    assert_eq!(before.len(), after.len(), "rows were added or removed");
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a, "a row changed");
    }
    println!(
        "{} routes × callers tried: {tried} calls, all refused, nothing changed",
        table.len()
    );
}
