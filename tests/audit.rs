//! The audit log: every change accepted through the API or the console is one record saying who
//! (token id and name), what (method, route, path, namespace, repository, status), when and from
//! which address; refused or failed calls and reads leave none; bodies (a new token, a secret) are
//! never in it; only kiln-wide admins read it at `GET /api/v1/audit` (paged, `?namespace=`); old
//! records are pruned after `KILN_AUDIT_RETENTION_DAYS`. Real kiln over HTTP, real registry.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::console::Console;
use support::kiln::{ADMIN_TOKEN, Kiln};
use support::{RecordingServer, Registry, wait_until};

/// The whole audit log, newest first, as the admin reads it.
async fn audit(kiln: &Kiln, query: &str) -> Vec<Value> {
    let (s, b) = kiln.get(&format!("/audit{query}")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b.as_array().expect("a list").clone()
}

/// `(method, route, namespace, repository, status)` of each record, oldest first.
fn whats(records: &[Value]) -> Vec<(String, String, Value, Value, i64)> {
    records
        .iter()
        .rev()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_string(),
                r["route"].as_str().unwrap().to_string(),
                r["namespace"].clone(),
                r["repository"].clone(),
                r["status"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn what(
    method: &str,
    route: &str,
    ns: Option<&str>,
    repo: Option<&str>,
    status: i64,
) -> (String, String, Value, Value, i64) {
    (
        method.to_string(),
        route.to_string(),
        json!(ns),
        json!(repo),
        status,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_changes_are_recorded_with_who_what_and_where() {
    let registry = Registry::start();
    let receiver = RecordingServer::start().await;
    let kiln = Kiln::start(&registry, &[("KILN_WEBHOOK_ALLOW", "127.0.0.1")]).await;

    let (s, b) = kiln.post("/namespaces", json!({"name": "red"})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, created) = kiln
        .post(
            "/tokens",
            json!({"name": "red-writer", "role": "write", "namespace": "red"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let writer = created["token"].as_str().unwrap().to_string();
    let writer_id = created["id"].as_str().unwrap().to_string();
    let reader = kiln.token("red-reader", "read", Some("red")).await;

    // The writer's changes.
    let as_writer = |method: Method, path: &str, body: Option<Value>| {
        let path = path.to_string();
        let writer = writer.clone();
        let api = &kiln.api;
        async move { api.call_as(&writer, method, &path, body).await }
    };
    let (s, b) = as_writer(
        Method::POST,
        "/namespaces/red/repos",
        Some(json!({"name": "app"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    // A forged X-Forwarded-For changes nothing: no proxy is trusted by default.
    let resp = kiln
        .http
        .patch(format!("{}/api/v1/namespaces/red/repos/app", kiln.url))
        .bearer_auth(&writer)
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({"summary": "the app"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (s, hook) = as_writer(
        Method::POST,
        "/namespaces/red/repos/app/webhooks",
        Some(json!({"name": "receiver", "url": receiver.url})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");
    let secret = hook["secret"]
        .as_str()
        .expect("a generated secret")
        .to_string();
    let hook_id = hook["id"].as_str().unwrap();
    let (s, test) = as_writer(
        Method::POST,
        &format!("/namespaces/red/repos/app/webhooks/{hook_id}/test"),
        None,
    )
    .await;
    assert!(s.is_success(), "{test}");
    let test_status = s.as_u16() as i64;
    let delivery = test["id"].as_str().unwrap().to_string();
    wait_until(
        "the test delivery to end",
        Duration::from_secs(60),
        || async {
            let (_, d) = kiln.get(&format!("/deliveries/{delivery}")).await;
            d["status"] != "pending"
        },
    )
    .await;
    let (s, b) = as_writer(
        Method::POST,
        &format!("/deliveries/{delivery}/redeliver"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");

    // What leaves no record: reads, refusals, failures.
    let (s, _) = as_writer(Method::GET, "/namespaces/red/repos/app", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = kiln
        .api
        .call_as(
            &reader,
            Method::POST,
            "/namespaces/red/repos/app/hide",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = as_writer(
        Method::POST,
        "/namespaces/red/repos",
        Some(json!({"name": "Bad Name"})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = as_writer(
        Method::POST,
        "/namespaces/blue/repos",
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = kiln
        .api
        .call_as(
            "kiln_not_a_token",
            Method::POST,
            "/namespaces",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let records = audit(&kiln, "").await;
    assert_eq!(
        whats(&records),
        vec![
            what("POST", "/api/v1/namespaces", None, None, 201),
            what("POST", "/api/v1/tokens", None, None, 201),
            what("POST", "/api/v1/tokens", None, None, 201),
            what(
                "POST",
                "/api/v1/namespaces/{ns}/repos",
                Some("red"),
                None,
                201
            ),
            what(
                "PATCH",
                "/api/v1/namespaces/{ns}/repos/{repo}",
                Some("red"),
                Some("app"),
                200
            ),
            what(
                "POST",
                "/api/v1/namespaces/{ns}/repos/{repo}/webhooks",
                Some("red"),
                Some("app"),
                201
            ),
            what(
                "POST",
                "/api/v1/namespaces/{ns}/repos/{repo}/webhooks/{id}/test",
                Some("red"),
                Some("app"),
                test_status
            ),
            what(
                "POST",
                "/api/v1/deliveries/{id}/redeliver",
                Some("red"),
                Some("app"),
                202
            ),
        ]
    );
    for r in &records {
        assert_eq!(r["via"], "api", "{r}");
        assert_eq!(r["address"], "127.0.0.1", "{r}");
        assert!(r["at"].as_str().unwrap().ends_with('Z'), "{r}");
        let admin = r["route"] == "/api/v1/namespaces" || r["route"] == "/api/v1/tokens";
        if admin {
            assert_eq!(r["token_name"], "admin (KILN_ADMIN_TOKEN)", "{r}");
            assert_eq!(r["token_id"], Value::Null, "{r}");
        } else {
            assert_eq!(r["token_name"], "red-writer", "{r}");
            assert_eq!(r["token_id"], writer_id.as_str(), "{r}");
        }
    }
    let oldest = records.last().unwrap();
    assert_eq!(oldest["path"], "/api/v1/namespaces");
    assert_eq!(
        records[0]["path"],
        format!("/api/v1/deliveries/{delivery}/redeliver")
    );
    // Never a body: not the new token, not the webhook's secret.
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains(&writer), "a token in the audit log");
    assert!(!text.contains(&secret), "a secret in the audit log");

    // ?namespace= and paging.
    let red = audit(&kiln, "?namespace=red").await;
    assert_eq!(red.len(), 5);
    assert!(red.iter().all(|r| r["namespace"] == "red"));
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{}/api/v1/audit?limit=3&cursor={c}", kiln.url),
            None => format!("{}/api/v1/audit?limit=3", kiln.url),
        };
        let resp = kiln
            .http
            .get(url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        cursor = resp
            .headers()
            .get("x-next-cursor")
            .map(|v| v.to_str().unwrap().to_string());
        let page: Vec<Value> = resp.json().await.unwrap();
        assert!(page.len() <= 3);
        seen.extend(page.into_iter().map(|r| r["id"].clone()));
        if cursor.is_none() {
            break;
        }
    }
    let all: Vec<Value> = records.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(seen, all);
    let (s, b) = kiln.get("/audit?limit=0").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["error"]["field"], "limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_changes_are_recorded() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    kiln.repo("red", "app").await;
    let writer = kiln.token("red-console", "write", Some("red")).await;
    let before = audit(&kiln, "").await.len();

    let console = Console::sign_in(&kiln.url, &writer).await;
    // A form without its CSRF token changes nothing and leaves no record.
    let page = console.send_form("/repos/red/app/hide", &[]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let page = console
        .post("/repos/red/app", "/repos/red/app/hide", &[])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let (_, repo) = kiln.get("/namespaces/red/repos/app").await;
    assert_eq!(repo["hidden"], true, "{repo}");

    let records = audit(&kiln, "").await;
    assert_eq!(records.len(), before + 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r["via"], "console", "{r}");
    assert_eq!(r["method"], "POST");
    assert_eq!(r["route"], "/repos/{ns}/{repo}/hide");
    assert_eq!(r["path"], "/repos/red/app/hide");
    assert_eq!(r["namespace"], "red");
    assert_eq!(r["repository"], "app");
    assert_eq!(r["token_name"], "red-console");
    assert!(r["token_id"].is_string(), "{r}");
    assert_eq!(r["status"], 303);
    assert_eq!(r["address"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_kiln_wide_admins_read_the_audit_log() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    kiln.repo("red", "app").await;
    let mut refused = 0;
    for (name, role, ns, expected) in [
        ("red-admin", "admin", Some("red"), StatusCode::FORBIDDEN),
        ("red-read", "read", Some("red"), StatusCode::FORBIDDEN),
        ("all-read", "read", None, StatusCode::FORBIDDEN),
        ("all-write", "write", None, StatusCode::FORBIDDEN),
    ] {
        let token = kiln.token(name, role, ns).await;
        for query in ["", "?namespace=red"] {
            let (s, b) = kiln
                .api
                .call_as(&token, Method::GET, &format!("/audit{query}"), None)
                .await;
            assert_eq!(s, expected, "{name}: {b}");
            assert_eq!(b["error"]["code"], "forbidden", "{name}: {b}");
            refused += 1;
        }
    }
    let resp = kiln
        .http
        .get(format!("{}/api/v1/audit", kiln.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refused, 8);
    assert!(!audit(&kiln, "").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_old_records() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[("KILN_AUDIT_RETENTION_DAYS", "2")]).await;
    kiln.repo("red", "old").await;
    kiln.repo("red", "middle").await;
    kiln.repo("red", "new").await;
    let records = audit(&kiln, "?namespace=red").await;
    assert_eq!(records.len(), 3);
    // The oldest made 3 days ago and the next 1 day ago, as far as the log knows.
    let backdate = |id: String, days: i64| {
        let db = kiln.server.app.db.clone();
        async move {
            let at = kiln::db::format_time(chrono::Utc::now() - chrono::Duration::days(days));
            sqlx::query("UPDATE audit_log SET at = ? WHERE id = ?")
                .bind(at)
                .bind(id)
                .execute(&db)
                .await
                .unwrap();
        }
    };
    let id = |r: &Value| r["id"].as_str().unwrap().to_string();
    backdate(id(&records[2]), 3).await;
    backdate(id(&records[1]), 1).await;
    let pruned = kiln::retention::prune_audit(&kiln.server.app)
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    let kept = audit(&kiln, "?namespace=red").await;
    assert_eq!(
        kept.iter().map(id).collect::<Vec<_>>(),
        vec![id(&records[0]), id(&records[1])]
    );
    assert_eq!(
        kiln::retention::prune_audit(&kiln.server.app)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_address_is_recorded() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[("KILN_TRUSTED_PROXIES", "127.0.0.1")]).await;
    for (name, forwarded) in [("one", Some("198.51.100.1, 203.0.113.9")), ("two", None)] {
        let mut req = kiln
            .http
            .post(format!("{}/api/v1/namespaces", kiln.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": name}));
        if let Some(f) = forwarded {
            req = req.header("x-forwarded-for", f);
        }
        assert_eq!(req.send().await.unwrap().status(), StatusCode::CREATED);
    }
    let records = audit(&kiln, "").await;
    assert_eq!(records.len(), 2);
    // Newest first: the call without the header, then the one through the "proxy".
    assert_eq!(records[0]["address"], "127.0.0.1");
    assert_eq!(records[1]["address"], "203.0.113.9");
}
