//! The HTTP contract of `/api/v1` (see the shared `api.md`), end to end: the real kiln server and
//! router over real HTTP, a real registry beside it, no mocks. Every bad input must come back as a
//! 4xx with `{"error": {"code", "message", "field"}}` naming the field at fault; never a 500.

mod support;

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::Registry;
use support::kiln::{ADMIN_TOKEN, Kiln};

/// A fresh registry and a fresh kiln (empty database) pushing to it.
async fn start() -> (Registry, Kiln) {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    (registry, kiln)
}

/// A request built by hand: any method, any `Authorization` header (or none), any content type and
/// body. Returns the status, the headers and the body (JSON when it parses, else a string).
async fn raw(
    kiln: &Kiln,
    method: Method,
    path: &str,
    authorization: Option<&str>,
    content_type: Option<&str>,
    body: Option<Vec<u8>>,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = kiln.http.request(method, format!("{}{path}", kiln.url));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.expect("request to kiln");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, headers, body)
}

/// `method /api/v1{path}` with `Authorization: Bearer {token}` and an optional JSON body.
async fn as_token(
    kiln: &Kiln,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (status, _, body) = raw(
        kiln,
        method,
        &format!("/api/v1{path}"),
        Some(&format!("Bearer {token}")),
        body.as_ref().map(|_| "application/json"),
        body.map(|b| serde_json::to_vec(&b).unwrap()),
    )
    .await;
    (status, body)
}

/// What is wrong with an error answer; `None` when it is `status` with a body
/// `{"error": {"code": code, "message": "…", "field": field}}` (`field: None` means `null`).
fn error_mismatch(
    got: &(StatusCode, Value),
    status: StatusCode,
    code: &str,
    field: Option<&str>,
) -> Option<String> {
    let (s, body) = got;
    let mut problems = Vec::new();
    if *s != status {
        problems.push(format!("status {s}, want {status}"));
    }
    let err = &body["error"];
    if !err.is_object() {
        problems.push("no {\"error\": {…}} object".to_string());
    } else {
        if err["code"] != code {
            problems.push(format!("code {}, want {code:?}", err["code"]));
        }
        if err["message"].as_str().is_none_or(|m| m.trim().is_empty()) {
            problems.push(format!(
                "message {}, want a non-empty string",
                err["message"]
            ));
        }
        let want_field = field.map_or(Value::Null, |f| Value::String(f.to_string()));
        match err.get("field") {
            None => problems.push("no \"field\" key".to_string()),
            Some(f) if *f != want_field => {
                problems.push(format!("field {f}, want {want_field}"));
            }
            Some(_) => {}
        }
    }
    (!problems.is_empty()).then(|| format!("{}; body: {body}", problems.join(", ")))
}

/// Asserts an error answer (see [`error_mismatch`]).
#[track_caller]
fn assert_error(
    what: &str,
    got: &(StatusCode, Value),
    status: StatusCode,
    code: &str,
    field: Option<&str>,
) {
    if let Some(problem) = error_mismatch(got, status, code, field) {
        panic!("{what}: {problem}");
    }
}

/// Asserts a 422 naming `field` with `code`.
#[track_caller]
fn assert_invalid(what: &str, got: &(StatusCode, Value), field: &str, code: &str) {
    assert_error(
        what,
        got,
        StatusCode::UNPROCESSABLE_ENTITY,
        code,
        Some(field),
    );
}

/// Asserts an error of the contract's shape (any code, any field) with this status.
#[track_caller]
fn assert_error_shape(what: &str, got: &(StatusCode, Value), status: StatusCode) {
    let (s, body) = got;
    assert_eq!(*s, status, "{what}: {body}");
    let err = &body["error"];
    assert!(
        err["code"].as_str().is_some_and(|c| !c.is_empty())
            && err["message"].as_str().is_some_and(|m| !m.is_empty())
            && err
                .get("field")
                .is_some_and(|f| f.is_null() || f.is_string()),
        "{what}: not {{\"error\": {{code, message, field}}}}: {body}"
    );
}

async fn namespace(kiln: &Kiln, name: &str) {
    let (s, body) = kiln.post("/namespaces", json!({ "name": name })).await;
    assert_eq!(s, StatusCode::CREATED, "namespace {name}: {body}");
}

async fn repo(kiln: &Kiln, ns: &str, name: &str) -> Value {
    let (s, body) = kiln
        .post(&format!("/namespaces/{ns}/repos"), json!({ "name": name }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "repo {ns}/{name}: {body}");
    body
}

/// Links a GitHub source whose clone URL points nowhere (`.invalid` never resolves; no test here
/// waits for a build to run).
async fn link_source(kiln: &Kiln, ns: &str, name: &str) {
    let (s, body) = kiln
        .put(
            &format!("/namespaces/{ns}/repos/{name}/source"),
            json!({"provider": "github", "clone_url": format!("https://git.invalid/{ns}/{name}.git")}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "source of {ns}/{name}: {body}");
}

/// A token made by the admin; returns (id, token).
async fn token(kiln: &Kiln, body: Value) -> (String, String) {
    let (s, t) = kiln.post("/tokens", body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "token {body}: {t}");
    (
        t["id"].as_str().expect("token id").to_string(),
        t["token"].as_str().expect("token shown once").to_string(),
    )
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect()
}

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

// ---------------------------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn namespaces_are_created_listed_and_validated() {
    let (_registry, kiln) = start().await;

    let (s, body) = kiln.post("/namespaces", json!({"name": "acme"})).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["name"], "acme");
    assert!(
        body["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{body}"
    );

    assert_error(
        "duplicate namespace",
        &kiln.post("/namespaces", json!({"name": "acme"})).await,
        StatusCode::CONFLICT,
        "already_exists",
        Some("name"),
    );

    let long64 = "n".repeat(64);
    for good in ["ab", "00", "my-team.2_x", long64.as_str()] {
        let (s, body) = kiln.post("/namespaces", json!({ "name": good })).await;
        assert_eq!(s, StatusCode::CREATED, "namespace {good:?}: {body}");
        assert_eq!(body["name"], good);
    }

    let long65 = "n".repeat(65);
    let bad: &[(&str, &str)] = &[
        ("ACME", "invalid_character"),
        ("Acme", "invalid_character"),
        ("acMe", "invalid_character"),
        ("", "too_short"),
        ("a", "too_short"),
        (&long65, "too_long"),
        ("-acme", "separator_position"),
        ("acme-", "separator_position"),
        ("_acme", "separator_position"),
        ("acme.", "separator_position"),
        ("..", "separator_position"),
        ("ac--me", "double_separator"),
        ("ac._me", "double_separator"),
        ("ac-.me", "double_separator"),
        ("a/b", "invalid_character"),
        ("../x", "invalid_character"),
        ("a b", "invalid_character"),
        ("café", "invalid_character"),
        ("日本", "invalid_character"),
        ("ab😀", "invalid_character"),
        ("ａｂ", "invalid_character"),
        ("a\u{0}b", "invalid_character"),
        ("a\nb", "invalid_character"),
    ];
    for (name, code) in bad {
        let got = kiln.post("/namespaces", json!({ "name": name })).await;
        assert_invalid(&format!("namespace {name:?}"), &got, "name", code);
    }

    let (s, list) = kiln.get("/namespaces").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let mut got = names(&list);
    got.sort_unstable();
    let mut want = vec!["00", "ab", "acme", "my-team.2_x", long64.as_str()];
    want.sort_unstable();
    assert_eq!(got, want, "only the namespaces created, each once");
    for ns in list.as_array().unwrap() {
        assert!(ns["created_at"].is_string(), "{ns}");
    }
}

// ---------------------------------------------------------------------------------------------
// Repositories
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn repositories_have_defaults_and_the_name_rule() {
    let (registry, kiln) = start().await;
    namespace(&kiln, "acme").await;

    let body = repo(&kiln, "acme", "api").await;
    assert_eq!(body["namespace"], "acme");
    assert_eq!(body["name"], "api");
    assert_eq!(body["summary"], "");
    assert_eq!(body["detail"], "");
    assert_eq!(body["category"], "other");
    assert_eq!(body["hidden"], false);
    assert_eq!(body["ci"], false);
    assert_eq!(body["image"], format!("{}/acme/api", registry.addr));
    assert!(
        body["created_at"].is_string() && body["updated_at"].is_string(),
        "{body}"
    );

    let (s, got) = kiln.get("/namespaces/acme/repos/api").await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got, body, "GET returns what POST did");

    // The full name rule: Ok(()) or the expected code, always on field "name".
    let long64 = "r".repeat(64);
    let long65 = "r".repeat(65);
    let huge = "r".repeat(10_000);
    let table: &[(&str, Result<(), &str>)] = &[
        ("ab", Ok(())),
        ("00", Ok(())),
        ("x9", Ok(())),
        ("web2", Ok(())),
        ("my-repo", Ok(())),
        ("my_repo", Ok(())),
        ("my.repo", Ok(())),
        ("a-b_c.d", Ok(())),
        ("postgres-16.2", Ok(())),
        (&long64, Ok(())),
        ("", Err("too_short")),
        ("a", Err("too_short")),
        ("-", Err("too_short")),
        (&long65, Err("too_long")),
        (&huge, Err("too_long")),
        ("a/b", Err("invalid_character")),
        ("../x", Err("invalid_character")),
        ("My", Err("invalid_character")),
        ("API", Err("invalid_character")),
        ("a b", Err("invalid_character")),
        ("a:b", Err("invalid_character")),
        ("a@b", Err("invalid_character")),
        ("a+b", Err("invalid_character")),
        ("café", Err("invalid_character")),
        ("cafe\u{301}", Err("invalid_character")),
        ("ab😀", Err("invalid_character")),
        ("ab\u{200f}", Err("invalid_character")),
        ("a\u{0}b", Err("invalid_character")),
        ("a\tb", Err("invalid_character")),
        ("-ab", Err("separator_position")),
        ("_ab", Err("separator_position")),
        (".ab", Err("separator_position")),
        ("ab-", Err("separator_position")),
        ("ab_", Err("separator_position")),
        ("ab.", Err("separator_position")),
        ("a--b", Err("double_separator")),
        ("a-_b", Err("double_separator")),
        ("a._b", Err("double_separator")),
        ("a..b", Err("double_separator")),
    ];
    for (name, want) in table {
        let got = kiln
            .post("/namespaces/acme/repos", json!({ "name": name }))
            .await;
        match want {
            Ok(()) => {
                assert_eq!(got.0, StatusCode::CREATED, "repo {name:?}: {}", got.1);
                assert_eq!(got.1["name"], *name);
                let (s, b) = kiln.get(&format!("/namespaces/acme/repos/{name}")).await;
                assert_eq!(s, StatusCode::OK, "GET repo {name:?}: {b}");
            }
            Err(code) => {
                let shown: String = name.chars().take(70).collect();
                assert_invalid(&format!("repo {shown:?}"), &got, "name", code);
            }
        }
    }

    assert_error(
        "duplicate repository",
        &kiln
            .post("/namespaces/acme/repos", json!({"name": "api"}))
            .await,
        StatusCode::CONFLICT,
        "already_exists",
        Some("name"),
    );
    // The same name in another namespace is another repository.
    namespace(&kiln, "other").await;
    repo(&kiln, "other", "api").await;

    for (what, got) in [
        (
            "POST repo in an unknown namespace",
            kiln.post("/namespaces/nope/repos", json!({"name": "api"}))
                .await,
        ),
        (
            "GET repos of an unknown namespace",
            kiln.get("/namespaces/nope/repos").await,
        ),
        (
            "GET an unknown repo",
            kiln.get("/namespaces/acme/repos/nope").await,
        ),
        (
            "GET a repo of an unknown namespace",
            kiln.get("/namespaces/nope/repos/api").await,
        ),
    ] {
        assert_error(what, &got, StatusCode::NOT_FOUND, "not_found", None);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn repository_summary_and_category() {
    let (_registry, kiln) = start().await;
    namespace(&kiln, "acme").await;

    // 100 characters, whatever their size in bytes, is the limit.
    let accepted = [
        ("s100", "x".repeat(100)),
        ("e100", "é".repeat(100)),
        ("emoji100", "😀".repeat(100)),
        ("cjk100", "漢".repeat(100)),
    ];
    for (name, summary) in &accepted {
        let (s, body) = kiln
            .post(
                "/namespaces/acme/repos",
                json!({ "name": name, "summary": summary }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "summary of {name}: {body}");
        assert_eq!(body["summary"], *summary, "summary kept as sent");
    }
    for (name, summary) in [
        ("x101", "x".repeat(101)),
        ("e101", "é".repeat(101)),
        ("emoji101", "😀".repeat(101)),
        ("huge", "x".repeat(10_000)),
    ] {
        let got = kiln
            .post(
                "/namespaces/acme/repos",
                json!({ "name": name, "summary": summary }),
            )
            .await;
        assert_invalid(&format!("summary of {name}"), &got, "summary", "too_long");
        let (s, _) = kiln.get(&format!("/namespaces/acme/repos/{name}")).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{name} was not created");
    }

    for category in [
        "database",
        "server",
        "language",
        "web-framework",
        "os",
        "other",
    ] {
        let name = format!("c-{category}");
        let (s, body) = kiln
            .post(
                "/namespaces/acme/repos",
                json!({ "name": name, "category": category }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "category {category}: {body}");
        assert_eq!(body["category"], category);
    }
    for bad in [
        "",
        "Database",
        "DATABASE",
        " database",
        "web_framework",
        "misc",
        "other\u{0}",
    ] {
        let got = kiln
            .post(
                "/namespaces/acme/repos",
                json!({ "name": "cat-bad", "category": bad }),
            )
            .await;
        assert_invalid(
            &format!("category {bad:?}"),
            &got,
            "category",
            "invalid_value",
        );
    }
    // detail is Markdown, up to 100 000 characters.
    let got = kiln
        .post(
            "/namespaces/acme/repos",
            json!({"name": "long-detail", "detail": "d".repeat(100_001)}),
        )
        .await;
    assert_invalid("detail of 100 001 characters", &got, "detail", "too_long");
    let (s, body) = kiln
        .post(
            "/namespaces/acme/repos",
            json!({"name": "long-detail", "detail": "d".repeat(100_000)}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "detail of 100 000 characters: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn repository_patch_delete_hide_and_unhide() {
    let (_registry, kiln) = start().await;
    namespace(&kiln, "acme").await;
    let created = repo(&kiln, "acme", "api").await;
    repo(&kiln, "acme", "web").await;
    let path = "/namespaces/acme/repos/api";

    let (s, body) = kiln
        .patch(
            path,
            json!({"summary": "The API ünïcödé", "detail": "# API\n\nMarkdown.", "category": "server"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["summary"], "The API ünïcödé");
    assert_eq!(body["detail"], "# API\n\nMarkdown.");
    assert_eq!(body["category"], "server");
    assert_eq!(body["name"], "api");
    assert_eq!(body["created_at"], created["created_at"]);
    // Only what is sent changes.
    let (s, body) = kiln.patch(path, json!({"category": "database"})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["category"], "database");
    assert_eq!(body["summary"], "The API ünïcödé");
    assert_eq!(body["detail"], "# API\n\nMarkdown.");

    #[rustfmt::skip]
    let bad_patches: &[(Value, &str, &str)] = &[
        (json!({"name": "renamed"}), "name", "immutable"),
        (json!({"summary": "é".repeat(101)}), "summary", "too_long"),
        (json!({"category": "misc"}), "category", "invalid_value"),
        (json!({"summary": 5}), "summary", "invalid_field"),
        (json!({"hidden": true}), "hidden", "invalid_field"),
    ];
    for (patch, field, code) in bad_patches {
        let got = kiln.patch(path, patch.clone()).await;
        assert_invalid(&format!("PATCH {patch}"), &got, field, code);
    }
    let (_, body) = kiln.get(path).await;
    assert_eq!(body["name"], "api", "{body}");
    assert_eq!(
        body["category"], "database",
        "refused PATCHes change nothing"
    );
    assert_eq!(body["summary"], "The API ünïcödé");
    let (s, _) = kiln.get("/namespaces/acme/repos/renamed").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(
        "PATCH an unknown repo",
        &kiln
            .patch("/namespaces/acme/repos/nope", json!({"summary": "x"}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );

    // Hide and unhide.
    let (s, body) = kiln.post(&format!("{path}/hide"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["hidden"], true);
    let (_, list) = kiln.get("/namespaces/acme/repos").await;
    assert_eq!(names(&list), vec!["web"], "hidden repos are left out");
    let (_, list) = kiln
        .get("/namespaces/acme/repos?include_hidden=false")
        .await;
    assert_eq!(names(&list), vec!["web"]);
    let (s, list) = kiln.get("/namespaces/acme/repos?include_hidden=true").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let mut all = names(&list);
    all.sort_unstable();
    assert_eq!(all, vec!["api", "web"], "include_hidden=true lists them");
    let hidden = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "api")
        .unwrap();
    assert_eq!(hidden["hidden"], true);
    let (s, body) = kiln.get(path).await;
    assert_eq!(
        (s, &body["hidden"]),
        (StatusCode::OK, &json!(true)),
        "{body}"
    );
    let (s, body) = kiln.post(&format!("{path}/unhide"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["hidden"], false);
    let (_, list) = kiln.get("/namespaces/acme/repos").await;
    let mut all = names(&list);
    all.sort_unstable();
    assert_eq!(all, vec!["api", "web"]);
    assert_error(
        "hide an unknown repo",
        &kiln
            .post("/namespaces/acme/repos/nope/hide", json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );

    // Deleting asks for the name again.
    for query in ["", "?confirm=", "?confirm=web", "?confirm=API"] {
        let got = kiln.delete(&format!("{path}{query}")).await;
        assert_invalid(
            &format!("DELETE {path}{query}"),
            &got,
            "confirm",
            "confirmation_required",
        );
        let (s, _) = kiln.get(path).await;
        assert_eq!(s, StatusCode::OK, "still there after DELETE{query}");
    }
    // The status is checked at the end, so that what the deletion did is checked either way.
    let deleted = kiln.delete(&format!("{path}?confirm=api")).await;
    assert!(
        deleted.0.is_success(),
        "DELETE ?confirm=api: {} {}",
        deleted.0,
        deleted.1
    );
    assert_error(
        "GET after DELETE",
        &kiln.get(path).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_error(
        "DELETE twice",
        &kiln.delete(&format!("{path}?confirm=api")).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    let (_, list) = kiln.get("/namespaces/acme/repos?include_hidden=true").await;
    assert_eq!(names(&list), vec!["web"]);
    // The name is free again.
    repo(&kiln, "acme", "api").await;
    // A confirmed DELETE answers 200 with what it did in the registry (nothing was pushed here).
    assert_eq!(
        deleted.0,
        StatusCode::OK,
        "DELETE {path}?confirm=api: {}",
        deleted.1
    );
    assert_eq!(deleted.1["deleted"], "acme/api");
    assert_eq!(deleted.1["registry_deleted"], json!([]));
    assert_eq!(deleted.1["registry_not_deleted"], json!([]));
}

// ---------------------------------------------------------------------------------------------
// Bodies, content types, routes, methods
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn malformed_bodies_routes_and_methods() {
    let (_registry, kiln) = start().await;
    namespace(&kiln, "acme").await;
    repo(&kiln, "acme", "api").await;
    link_source(&kiln, "acme", "api").await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let send = |method: Method, path: &str, ct: Option<&str>, body: &[u8]| {
        let path = format!("/api/v1{path}");
        let body = body.to_vec();
        let bearer = bearer.clone();
        let ct = ct.map(str::to_string);
        let kiln = &kiln;
        async move {
            let (s, _, b) = raw(
                kiln,
                method,
                &path,
                Some(&bearer),
                ct.as_deref(),
                Some(body),
            )
            .await;
            (s, b)
        }
    };
    let json_ct = Some("application/json");

    // Not JSON at all: 400 malformed_json (more in `bodies_must_be_one_json_object`).
    for body in [
        &b"not json"[..],
        b"{",
        b"{\"name\": \"ab\"",
        b"{\"name\": 'ab'}",
        b"{\"name\": \"ab\",}",
    ] {
        let got = send(Method::POST, "/namespaces", json_ct, body).await;
        assert_error(
            &format!("POST /namespaces {:?}", String::from_utf8_lossy(body)),
            &got,
            StatusCode::BAD_REQUEST,
            "malformed_json",
            None,
        );
    }

    // JSON, but a field of the wrong type, missing or unknown: 422 naming it.
    let rules = "/namespaces/acme/repos/api/rules";
    #[rustfmt::skip]
    let cases: &[(Method, &str, Value, &str)] = &[
        (Method::POST, "/namespaces", json!({"name": 5}), "name"),
        (Method::POST, "/namespaces", json!({"name": null}), "name"),
        (Method::POST, "/namespaces", json!({"name": ["ab"]}), "name"),
        (Method::POST, "/namespaces", json!({}), "name"),
        (Method::POST, "/namespaces", json!({"name": "ab", "nmae": "x"}), "nmae"),
        (Method::POST, "/namespaces/acme/repos", json!({"name": "ok", "summary": 5}), "summary"),
        (Method::POST, "/namespaces/acme/repos", json!({"name": "ok", "category": true}), "category"),
        (Method::POST, "/namespaces/acme/repos", json!({"name": "ok", "hidden": true}), "hidden"),
        (Method::POST, "/namespaces/acme/repos", json!({"summary": "x"}), "name"),
        (Method::POST, rules, json!({"type": "branch", "name": "main", "overwrite": "yes"}), "overwrite"),
        (Method::POST, rules, json!({"type": 5, "name": "main"}), "type"),
        (Method::POST, rules, json!({"name": "main"}), "type"),
        (Method::POST, rules, json!({"type": "branch"}), "name"),
        (Method::POST, rules, json!({"type": "branch", "name": "main", "tag": "latest"}), "tag"),
        (Method::PUT, "/namespaces/acme/repos/api/source", json!({"provider": "github", "clone_url": "/x", "secret": "0123456789abcdef"}), "secret"),
        (Method::PUT, "/namespaces/acme/repos/api/source", json!({"provider": "github", "clone_url": 42}), "clone_url"),
        (Method::POST, "/tokens", json!({"name": "ci", "role": "read", "scopes": []}), "scopes"),
        (Method::POST, "/tokens", json!({"name": "ci", "role": 1}), "role"),
    ];
    for (method, path, body, field) in cases {
        let got = send(
            method.clone(),
            path,
            json_ct,
            &serde_json::to_vec(body).unwrap(),
        )
        .await;
        assert_invalid(
            &format!("{method} {path} {body}"),
            &got,
            field,
            "invalid_field",
        );
    }
    // No body at all reads as {}.
    let got = send(Method::POST, "/namespaces", None, b"").await;
    assert_invalid(
        "POST /namespaces without a body",
        &got,
        "name",
        "invalid_field",
    );
    // A charset parameter is fine.
    let got = send(
        Method::POST,
        "/namespaces",
        Some("application/json; charset=utf-8"),
        b"{\"name\": \"charset\"}",
    )
    .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);

    // Not sent as JSON: 415.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "text/json",
        "multipart/form-data",
    ] {
        let got = send(Method::POST, "/namespaces", Some(ct), b"{\"name\": \"ab\"}").await;
        assert_error(
            &format!("POST /namespaces as {ct}"),
            &got,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            None,
        );
    }
    let (s, _) = kiln.get("/namespaces/ab/repos").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "no refused body created anything");

    // A body over the size cap: a JSON 4xx, not a 500 or a reset.
    let huge = serde_json::to_vec(&json!({"name": "x".repeat(3 << 20)})).unwrap();
    let got = send(Method::POST, "/namespaces", json_ct, &huge).await;
    assert_error_shape(
        "POST /namespaces of 3 MiB",
        &got,
        StatusCode::PAYLOAD_TOO_LARGE,
    );

    // Unknown routes under /api/v1: 404 JSON.
    for (method, path) in [
        (Method::GET, "/api/v1/nope"),
        (Method::GET, "/api/v1/namespaces/acme"),
        (Method::GET, "/api/v1/namespaces/acme/repos/api/nope"),
        (Method::POST, "/api/v1/namespaces/acme/repos/api/rules/x/y"),
        (Method::GET, "/api/v1/builds"),
    ] {
        let (s, _, b) = raw(&kiln, method.clone(), path, Some(&bearer), None, None).await;
        assert_error(
            &format!("{method} {path}"),
            &(s, b),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        );
    }
    // Path segments that are not UTF-8: a JSON 4xx.
    for path in [
        "/api/v1/namespaces/%FF/repos",
        "/api/v1/namespaces/acme/repos/%C3%28",
    ] {
        let (s, _, b) = raw(&kiln, Method::GET, path, Some(&bearer), None, None).await;
        assert!(s.is_client_error(), "GET {path}: {s} {b}");
        assert_error_shape(&format!("GET {path}"), &(s, b), s);
    }
    // A known route, a wrong method: 405 JSON.
    for (method, path) in [
        (Method::DELETE, "/api/v1/namespaces"),
        (Method::PUT, "/api/v1/namespaces/acme/repos"),
        (Method::POST, "/api/v1/namespaces/acme/repos/api"),
        (Method::GET, "/api/v1/namespaces/acme/repos/api/hide"),
        (Method::POST, "/api/v1/namespaces/acme/repos/api/source"),
        (Method::PUT, "/api/v1/tokens"),
        (Method::GET, "/api/v1/tokens/some-id"),
        (Method::DELETE, "/api/v1/builds/some-id"),
    ] {
        let (s, _, b) = raw(&kiln, method.clone(), path, Some(&bearer), None, None).await;
        assert_error(
            &format!("{method} {path}"),
            &(s, b),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            None,
        );
    }
}

/// A body must be exactly one JSON object: anything that is not JSON is 400 `malformed_json`
/// whatever its first bytes look like, JSON that is not an object is 422, and nothing is ever
/// created from a part of a body. All the mismatches are collected, then reported at once.
#[tokio::test(flavor = "multi_thread")]
async fn bodies_must_be_one_json_object() {
    let (_registry, kiln) = start().await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    #[rustfmt::skip]
    let cases: &[(&str, &[u8], StatusCode, Option<&str>)] = &[
        ("n1", b"{\"name\": \"n1\"", StatusCode::BAD_REQUEST, Some("malformed_json")),
        ("n2", b"{\"name\": \"n2\"} trailing", StatusCode::BAD_REQUEST, Some("malformed_json")),
        ("n3", b"{\"name\": \"n3\"}{\"name\": \"zz\"}", StatusCode::BAD_REQUEST, Some("malformed_json")),
        ("n4", b"{\"name\": \"n4\"}]", StatusCode::BAD_REQUEST, Some("malformed_json")),
        ("n5", b"\"name\"=\"n5\"", StatusCode::BAD_REQUEST, Some("malformed_json")),
        ("n6", b"{\"name\": 6", StatusCode::BAD_REQUEST, Some("malformed_json")),
        ("n7", b"{\"nmae\": \"n7\"", StatusCode::BAD_REQUEST, Some("malformed_json")),
        ("n8", b"{\"name\": \"n8\xff\"}", StatusCode::BAD_REQUEST, Some("malformed_json")),
        ("n9", b"name=n9", StatusCode::BAD_REQUEST, Some("malformed_json")),
        // JSON, not an object: 422 (no field to name).
        ("j1", b"[\"j1\"]", StatusCode::UNPROCESSABLE_ENTITY, None),
        ("j2", b"[\"j2\", 1]", StatusCode::UNPROCESSABLE_ENTITY, None),
        ("j3", b"\"j3\"", StatusCode::UNPROCESSABLE_ENTITY, None),
        ("j4", b"[]", StatusCode::UNPROCESSABLE_ENTITY, None),
        ("j5", b"null", StatusCode::UNPROCESSABLE_ENTITY, None),
        ("j6", b"42", StatusCode::UNPROCESSABLE_ENTITY, None),
    ];
    let mut problems = Vec::new();
    for (name, body, status, code) in cases {
        let shown = String::from_utf8_lossy(body);
        let (s, _, b) = raw(
            &kiln,
            Method::POST,
            "/api/v1/namespaces",
            Some(&bearer),
            Some("application/json"),
            Some(body.to_vec()),
        )
        .await;
        // "not JSON → 400 malformed_json" and a body of the wrong type is refused. The
        // server reads only the first JSON value and never checks what follows, so trailing garbage
        // is accepted (201); a wrong type or unknown field met before the syntax error gives 422;
        // and a JSON array is read as the struct's fields in order, so ["j1"] creates "j1".
        let problem = match code {
            Some(code) => error_mismatch(&(s, b), *status, code, None),
            None if s == *status && b["error"]["code"].is_string() => None,
            None => Some(format!("{s} {b}, want {status} and an error")),
        };
        if let Some(p) = problem {
            problems.push(format!("POST /api/v1/namespaces {shown:?}: {p}"));
        }
        let (s, b) = kiln.get(&format!("/namespaces/{name}/repos")).await;
        if s != StatusCode::NOT_FOUND {
            problems.push(format!(
                "POST /api/v1/namespaces {shown:?} created namespace {name}: GET its repos is {s} {b}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} contract mismatches:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Auth and tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_a_valid_bearer_token_are_refused() {
    let (_registry, kiln) = start().await;
    namespace(&kiln, "acme").await;
    repo(&kiln, "acme", "api").await;

    let routes: &[(Method, &str)] = &[
        (Method::GET, "/api/v1/namespaces"),
        (Method::POST, "/api/v1/namespaces"),
        (Method::GET, "/api/v1/namespaces/acme/repos"),
        (Method::POST, "/api/v1/namespaces/acme/repos"),
        (Method::GET, "/api/v1/namespaces/acme/repos/api"),
        (Method::PATCH, "/api/v1/namespaces/acme/repos/api"),
        (
            Method::DELETE,
            "/api/v1/namespaces/acme/repos/api?confirm=api",
        ),
        (Method::POST, "/api/v1/namespaces/acme/repos/api/hide"),
        (Method::POST, "/api/v1/namespaces/acme/repos/api/unhide"),
        (Method::PUT, "/api/v1/namespaces/acme/repos/api/source"),
        (Method::GET, "/api/v1/namespaces/acme/repos/api/source"),
        (Method::DELETE, "/api/v1/namespaces/acme/repos/api/source"),
        (Method::GET, "/api/v1/namespaces/acme/repos/api/rules"),
        (Method::POST, "/api/v1/namespaces/acme/repos/api/rules"),
        (Method::GET, "/api/v1/namespaces/acme/repos/api/rules/r"),
        (
            Method::POST,
            "/api/v1/namespaces/acme/repos/api/rules/r/builds",
        ),
        (Method::GET, "/api/v1/namespaces/acme/repos/api/builds"),
        (Method::GET, "/api/v1/namespaces/acme/repos/api/versions"),
        (Method::GET, "/api/v1/builds/b"),
        (Method::GET, "/api/v1/builds/b/log"),
        (Method::POST, "/api/v1/builds/b/cancel"),
        (Method::GET, "/api/v1/tokens"),
        (Method::POST, "/api/v1/tokens"),
        (Method::DELETE, "/api/v1/tokens/t"),
    ];
    let wrong_auth: &[Option<&str>] = &[
        None,
        Some("Bearer kiln_not_a_real_token"),
        Some("Bearer "),
        Some("Bearer"),
        Some(""),
        Some(ADMIN_TOKEN),
        Some("Token kiln_test_admin_token_0123456789abcdef"),
        // admin:kiln_test_admin_token_0123456789abcdef
        Some("Basic YWRtaW46a2lsbl90ZXN0X2FkbWluX3Rva2VuXzAxMjM0NTY3ODlhYmNkZWY="),
        Some("Bearer kiln_test_admin_token_0123456789abcdeF"),
        Some("Bearer kiln_test_admin_token_0123456789abcde"),
    ];
    for (method, path) in routes {
        for auth in wrong_auth {
            let (s, _, b) = raw(
                &kiln,
                method.clone(),
                path,
                *auth,
                Some("application/json"),
                Some(br#"{"name": "zz"}"#.to_vec()),
            )
            .await;
            assert_error(
                &format!("{method} {path} with Authorization {auth:?}"),
                &(s, b),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                None,
            );
        }
    }
    // Nothing happened.
    let (_, list) = kiln.get("/namespaces").await;
    assert_eq!(names(&list), vec!["acme"]);
    let (s, body) = kiln.get("/namespaces/acme/repos/api").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["hidden"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_shown_once_and_roles_are_enforced() {
    let (_registry, kiln) = start().await;
    namespace(&kiln, "acme").await;
    repo(&kiln, "acme", "api").await;

    let (s, read) = kiln
        .post("/tokens", json!({"name": "reader", "role": "read"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{read}");
    let read_token = read["token"]
        .as_str()
        .expect("token shown at creation")
        .to_string();
    assert!(
        read_token.starts_with("kiln_") && read_token.len() > 32,
        "{read_token}"
    );
    assert_eq!(read["name"], "reader");
    assert_eq!(read["role"], "read");
    assert_eq!(read["namespace"], Value::Null);
    assert_eq!(read["expires_at"], Value::Null);
    assert!(read["id"].is_string(), "{read}");
    let (_, write_token) = token(&kiln, json!({"name": "writer", "role": "write"})).await;
    let (_, admin_token) = token(&kiln, json!({"name": "admin2", "role": "admin"})).await;
    assert_ne!(write_token, read_token);

    let (s, list) = kiln.get("/tokens").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    for t in list.as_array().unwrap() {
        assert!(t.get("token").is_none(), "GET /tokens shows no token: {t}");
        assert!(t["id"].is_string() && t["role"].is_string(), "{t}");
    }
    let text = list.to_string();
    for secret in [&read_token, &write_token, &admin_token] {
        assert!(!text.contains(secret.as_str()), "GET /tokens leaks a token");
    }

    // read: can look, cannot change.
    let (s, body) = as_token(&kiln, &read_token, Method::GET, "/namespaces", None).await;
    assert_eq!((s, names(&body)), (StatusCode::OK, vec!["acme"]));
    let (s, body) = as_token(
        &kiln,
        &read_token,
        Method::GET,
        "/namespaces/acme/repos/api",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    #[rustfmt::skip]
    let forbidden: &[(Method, &str, Option<Value>)] = &[
        (Method::POST, "/namespaces", Some(json!({"name": "new"}))),
        (Method::POST, "/namespaces/acme/repos", Some(json!({"name": "new"}))),
        (Method::PATCH, "/namespaces/acme/repos/api", Some(json!({"summary": "x"}))),
        (Method::POST, "/namespaces/acme/repos/api/hide", None),
        (Method::DELETE, "/namespaces/acme/repos/api?confirm=api", None),
        (Method::PUT, "/namespaces/acme/repos/api/source", Some(json!({"provider": "github", "clone_url": "/x.git"}))),
        (Method::GET, "/tokens", None),
        (Method::POST, "/tokens", Some(json!({"name": "x", "role": "admin"}))),
    ];
    for (method, path, body) in forbidden {
        let got = as_token(&kiln, &read_token, method.clone(), path, body.clone()).await;
        assert_error(
            &format!("read token: {method} {path}"),
            &got,
            StatusCode::FORBIDDEN,
            "forbidden",
            None,
        );
    }
    // write: changes repositories, not namespaces or tokens.
    let (s, body) = as_token(
        &kiln,
        &write_token,
        Method::POST,
        "/namespaces/acme/repos",
        Some(json!({"name": "by-writer"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    for (method, path, body) in [
        (Method::POST, "/namespaces", Some(json!({"name": "new"}))),
        (Method::GET, "/tokens", None),
        (
            Method::POST,
            "/tokens",
            Some(json!({"name": "x", "role": "read"})),
        ),
    ] {
        let got = as_token(&kiln, &write_token, method.clone(), path, body).await;
        assert_error(
            &format!("write token: {method} {path}"),
            &got,
            StatusCode::FORBIDDEN,
            "forbidden",
            None,
        );
    }
    // admin tokens made through the API are admins.
    let (s, body) = as_token(
        &kiln,
        &admin_token,
        Method::POST,
        "/namespaces",
        Some(json!({"name": "by-admin"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");

    // Bad token requests.
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    #[rustfmt::skip]
    let bad: &[(Value, &str, &str)] = &[
        (json!({"name": "x", "role": "root"}), "role", "invalid_value"),
        (json!({"name": "x", "role": "Read"}), "role", "invalid_value"),
        (json!({"name": "", "role": "read"}), "name", "invalid_length"),
        (json!({"name": "   ", "role": "read"}), "name", "invalid_length"),
        (json!({"name": "x".repeat(101), "role": "read"}), "name", "invalid_length"),
        (json!({"name": "x", "role": "read", "namespace": "nope"}), "namespace", "not_found"),
        (json!({"name": "x", "role": "read", "expires_at": "2000-01-01T00:00:00Z"}), "expires_at", "in_the_past"),
        (json!({"name": "x", "role": "read", "expires_at": past}), "expires_at", "in_the_past"),
        (json!({"name": "x", "role": "read", "expires_at": "tomorrow"}), "expires_at", "invalid_time"),
        (json!({"name": "x", "role": "read", "expires_at": "2099-01-01"}), "expires_at", "invalid_time"),
        (json!({"role": "read"}), "name", "invalid_field"),
        (json!({"name": "x"}), "role", "invalid_field"),
    ];
    for (body, field, code) in bad {
        let got = kiln.post("/tokens", body.clone()).await;
        assert_invalid(&format!("POST /tokens {body}"), &got, field, code);
    }
    let (_, list) = kiln.get("/tokens").await;
    assert_eq!(
        list.as_array().unwrap().len(),
        3,
        "refused tokens were not stored: {list}"
    );

    // Deleting a token ends it at once.
    let read_id = read["id"].as_str().unwrap().to_string();
    let (s, body) = kiln.delete(&format!("/tokens/{read_id}")).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    let got = as_token(&kiln, &read_token, Method::GET, "/namespaces", None).await;
    assert_error(
        "deleted token",
        &got,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        None,
    );
    assert_error(
        "DELETE the token twice",
        &kiln.delete(&format!("/tokens/{read_id}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    let (_, list) = kiln.get("/tokens").await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    // The others still work.
    let (s, _) = as_token(&kiln, &write_token, Method::GET, "/namespaces", None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_tokens_and_expiry() {
    let (_registry, kiln) = start().await;
    namespace(&kiln, "alpha").await;
    namespace(&kiln, "beta").await;
    repo(&kiln, "alpha", "api").await;
    repo(&kiln, "beta", "api").await;
    link_source(&kiln, "beta", "api").await;
    let beta_rule = kiln
        .rule("beta", "api", json!({"type": "branch", "name": "main"}))
        .await;
    let (s, beta_build) = kiln
        .post(
            &format!("/namespaces/beta/repos/api/rules/{beta_rule}/builds"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{beta_build}");
    let beta_build = beta_build["id"].as_str().unwrap().to_string();

    let (s, t) = kiln
        .post(
            "/tokens",
            json!({"name": "alpha-ci", "role": "write", "namespace": "alpha"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    assert_eq!(t["namespace"], "alpha");
    let alpha = t["token"].as_str().unwrap().to_string();

    // Its own namespace: as a write token.
    let (s, list) = as_token(&kiln, &alpha, Method::GET, "/namespaces", None).await;
    assert_eq!(
        (s, names(&list)),
        (StatusCode::OK, vec!["alpha"]),
        "sees only alpha"
    );
    let (s, body) = as_token(
        &kiln,
        &alpha,
        Method::POST,
        "/namespaces/alpha/repos",
        Some(json!({"name": "web"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (s, body) = as_token(
        &kiln,
        &alpha,
        Method::GET,
        "/namespaces/alpha/repos/api",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");

    // The other namespace does not exist for it: 404, as for a name that is not there.
    #[rustfmt::skip]
    let hidden_from_it: &[(Method, String, Option<Value>)] = &[
        (Method::GET, "/namespaces/beta/repos".into(), None),
        (Method::POST, "/namespaces/beta/repos".into(), Some(json!({"name": "x"}))),
        (Method::GET, "/namespaces/beta/repos/api".into(), None),
        (Method::PATCH, "/namespaces/beta/repos/api".into(), Some(json!({"summary": "x"}))),
        (Method::DELETE, "/namespaces/beta/repos/api?confirm=api".into(), None),
        (Method::POST, "/namespaces/beta/repos/api/hide".into(), None),
        (Method::GET, "/namespaces/beta/repos/api/source".into(), None),
        (Method::GET, "/namespaces/beta/repos/api/rules".into(), None),
        (Method::GET, format!("/namespaces/beta/repos/api/rules/{beta_rule}"), None),
        (Method::POST, format!("/namespaces/beta/repos/api/rules/{beta_rule}/builds"), Some(json!({}))),
        (Method::GET, "/namespaces/beta/repos/api/builds".into(), None),
        (Method::GET, "/namespaces/beta/repos/api/versions".into(), None),
        (Method::GET, format!("/builds/{beta_build}"), None),
        (Method::GET, format!("/builds/{beta_build}/log"), None),
        (Method::POST, format!("/builds/{beta_build}/cancel"), None),
    ];
    for (method, path, body) in hidden_from_it {
        let got = as_token(&kiln, &alpha, method.clone(), path, body.clone()).await;
        assert_error(
            &format!("alpha token: {method} {path}"),
            &got,
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        );
    }
    // kiln-wide things need a kiln-wide token.
    for (method, path, body) in [
        (Method::POST, "/namespaces", Some(json!({"name": "gamma"}))),
        (Method::GET, "/tokens", None),
    ] {
        let got = as_token(&kiln, &alpha, method.clone(), path, body).await;
        assert_error(
            &format!("alpha token: {method} {path}"),
            &got,
            StatusCode::FORBIDDEN,
            "forbidden",
            None,
        );
    }
    let (_, beta) = kiln.get("/namespaces/beta/repos/api").await;
    assert_eq!(beta["hidden"], false, "nothing changed in beta: {beta}");

    // An expiry in the future works until it passes.
    let soon = chrono::Utc::now() + chrono::Duration::seconds(3);
    let (s, t) = kiln
        .post(
            "/tokens",
            json!({"name": "short", "role": "read", "expires_at": soon.to_rfc3339()}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    assert!(
        t["expires_at"].as_str().is_some_and(|e| e.ends_with('Z')),
        "RFC 3339 UTC: {t}"
    );
    let short = t["token"].as_str().unwrap().to_string();
    let (s, body) = as_token(&kiln, &short, Method::GET, "/namespaces", None).await;
    assert_eq!(s, StatusCode::OK, "before it expires: {body}");
    let wait =
        (soon - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(500);
    tokio::time::sleep(wait).await;
    let got = as_token(&kiln, &short, Method::GET, "/namespaces", None).await;
    assert_error(
        "expired token",
        &got,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        None,
    );
}

// ---------------------------------------------------------------------------------------------
// Sources
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn sources_validate_and_keep_their_secret() {
    let (_registry, kiln) = start().await;
    namespace(&kiln, "acme").await;
    repo(&kiln, "acme", "api").await;
    let path = "/namespaces/acme/repos/api/source";
    assert_error(
        "GET a source never linked",
        &kiln.get(path).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    let url = "https://github.com/acme/api.git";

    for provider in ["bitbucket", "GitHub", "GITLAB", " gitea", ""] {
        let got = kiln
            .put(path, json!({"provider": provider, "clone_url": url}))
            .await;
        assert_invalid(
            &format!("provider {provider:?}"),
            &got,
            "provider",
            "invalid_value",
        );
    }
    for bad in [
        "",
        "   ",
        "ftp://example.com/x.git",
        "https://",
        "https:///",
        "relative/path.git",
        "https://github.com/acme/my api.git",
        "https://github.com/acme/api\n.git",
        ":nohost",
        "host:",
    ] {
        let got = kiln
            .put(path, json!({"provider": "github", "clone_url": bad}))
            .await;
        assert_invalid(
            &format!("clone_url {bad:?}"),
            &got,
            "clone_url",
            "invalid_url",
        );
    }
    let got = kiln
        .put(
            path,
            json!({"provider": "github", "clone_url": format!("https://github.com/{}", "a".repeat(3000))}),
        )
        .await;
    assert_invalid(
        "clone_url of 3000 characters",
        &got,
        "clone_url",
        "invalid_url",
    );
    for (secret, code) in [
        ("short", "invalid_length"),
        ("", "invalid_length"),
        ("123456789012345", "invalid_length"),
        (&*"s".repeat(257), "invalid_length"),
        ("0123456789abcdef\n", "invalid_character"),
    ] {
        let got = kiln
            .put(
                path,
                json!({"provider": "github", "clone_url": url, "webhook_secret": secret}),
            )
            .await;
        assert_invalid(
            &format!("webhook_secret {secret:?}"),
            &got,
            "webhook_secret",
            code,
        );
    }
    assert_error(
        "nothing was linked",
        &kiln.get(path).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );

    // A generated secret: returned by this PUT only.
    let (s, body) = kiln
        .put(path, json!({"provider": "github", "clone_url": url}))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["provider"], "github");
    assert_eq!(body["clone_url"], url);
    assert!(
        body["webhook_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/hooks/github")),
        "{body}"
    );
    let secret = body["webhook_secret"]
        .as_str()
        .expect("generated secret")
        .to_string();
    assert_eq!(secret.len(), 64, "{secret}");
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()), "{secret}");
    let (s, got) = kiln.get(path).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert!(
        got.get("webhook_secret").is_none(),
        "GET shows no secret: {got}"
    );
    assert!(!got.to_string().contains(&secret), "{got}");
    assert_eq!(got["clone_url"], url);
    assert_eq!(got["webhook_url"], body["webhook_url"]);
    let (_, r) = kiln.get("/namespaces/acme/repos/api").await;
    assert_eq!(r["ci"], true, "a source makes a CI repository: {r}");
    assert!(!r.to_string().contains(&secret), "{r}");

    // A PUT without a secret on a linked source keeps its secret (and shows none); unlinking and
    // linking again generates a new one.
    let (s, again) = kiln
        .put(path, json!({"provider": "github", "clone_url": url}))
        .await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert!(again.get("webhook_secret").is_none(), "{again}");
    let app = &kiln.server.app;
    let kept = kiln::db::sources::all(&app.db, &app.secrets).await.unwrap();
    assert_eq!(kept[0].webhook_secret, secret);
    assert_eq!(kiln.delete(path).await.0, StatusCode::NO_CONTENT);
    let (s, again) = kiln
        .put(path, json!({"provider": "github", "clone_url": url}))
        .await;
    assert_eq!(s, StatusCode::OK, "{again}");
    let second = again["webhook_secret"].as_str().expect("generated secret");
    assert_ne!(second, secret);

    // A secret given by the caller: never returned.
    let given = "my-own-webhook-secret-1234";
    for clone_url in [
        "https://gitlab.com/acme/api.git",
        "git://git.example.com/acme/api.git",
        "http://git.local:3000/acme/api",
    ] {
        let (s, body) = kiln
            .put(
                path,
                json!({"provider": "github", "clone_url": clone_url, "webhook_secret": given}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{clone_url}: {body}");
        assert!(
            body.get("webhook_secret").is_none(),
            "a given secret is not echoed: {body}"
        );
        assert!(!body.to_string().contains(given), "{body}");
        assert_eq!(body["clone_url"], clone_url);
        let (_, got) = kiln.get(path).await;
        assert!(!got.to_string().contains(given), "{got}");
        assert_eq!(got["clone_url"], clone_url, "one source per repo, replaced");
    }

    // Unlinking.
    let (s, body) = kiln.delete(path).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    assert_error(
        "GET after DELETE",
        &kiln.get(path).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_error(
        "DELETE twice",
        &kiln.delete(path).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    let (_, r) = kiln.get("/namespaces/acme/repos/api").await;
    assert_eq!(r["ci"], false, "{r}");
    assert_error(
        "PUT on an unknown repo",
        &kiln
            .put(
                "/namespaces/acme/repos/nope/source",
                json!({"provider": "github", "clone_url": url}),
            )
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
}

/// What kiln can't fetch is refused when the source is set (SSH URLs; local repositories outside
/// `KILN_LOCAL_SOURCES`, which the harness sets to where the test repositories live), and
/// credentials embedded in a clone URL are a write-only secret: never in an answer, kept by a PUT
/// of the same URL without them, dropped when the URL moves to another host.
#[tokio::test(flavor = "multi_thread")]
async fn sources_refuse_what_kiln_cannot_fetch_and_keep_credentials_secret() {
    let (_registry, kiln) = start().await;
    namespace(&kiln, "acme").await;
    repo(&kiln, "acme", "api").await;
    let path = "/namespaces/acme/repos/api/source";
    let put = |clone_url: String, extra: Value| {
        let mut body = json!({"provider": "github", "clone_url": clone_url});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        kiln.put(path, body)
    };

    for (url, https) in [
        (
            "git@github.com:acme/api.git",
            "https://github.com/acme/api.git",
        ),
        (
            "ssh://git@github.com/acme/api.git",
            "https://github.com/acme/api.git",
        ),
        (
            "ssh://git@git.local:2222/acme/api",
            "https://git.local/acme/api",
        ),
    ] {
        let got = put(url.into(), json!({})).await;
        assert_invalid(url, &got, "clone_url", "ssh_not_supported");
        let message = got.1["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("ssh URLs are not supported") && message.contains(https),
            "{message}"
        );
    }
    let repo_dir = support::git_repos_root().join("kiln-test-not-a-repo-here");
    for url in [
        "/srv/git/api.git".to_string(),
        "file:///srv/git/api.git".to_string(),
        format!("file://{}/../..", support::git_repos_root().display()),
        repo_dir.display().to_string(),
    ] {
        let got = put(url.clone(), json!({})).await;
        assert_invalid(&url, &got, "clone_url", "local_source_not_allowed");
    }
    assert_error(
        "nothing was linked",
        &kiln.get(path).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    // A local repository where the operator allows them is fine.
    let git = support::GitRepo::new();
    let (s, body) = put(git.clone_url(), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["clone_url"], git.clone_url());
    assert_eq!(body["has_credentials"], false, "{body}");

    // Credentials: taken out of the URL, never shown again, to anyone.
    let token = "ghp_apiTestToken0123456789";
    let with = format!("https://kiln-bot:{token}@github.com/acme/api.git");
    let (s, body) = put(with.clone(), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["clone_url"], "https://github.com/acme/api.git");
    assert_eq!(body["has_credentials"], true);
    assert!(!body.to_string().contains(token), "{body}");
    let stored = || async {
        let app = &kiln.server.app;
        let sources = kiln::db::sources::all(&app.db, &app.secrets).await.unwrap();
        sources[0].credentials.clone()
    };
    assert_eq!(
        stored().await.as_deref(),
        Some(&*format!("kiln-bot:{token}"))
    );
    let (_, reader) = self::token(
        &kiln,
        json!({"name": "reader", "namespace": "acme", "role": "read"}),
    )
    .await;
    for who in [ADMIN_TOKEN, &reader] {
        for p in [path, "/namespaces/acme/repos/api", "/namespaces/acme/repos"] {
            let (s, got) = as_token(&kiln, who, Method::GET, p, None).await;
            assert_eq!(s, StatusCode::OK, "{p}: {got}");
            assert!(!got.to_string().contains(token), "{p}: {got}");
        }
        let (_, got) = as_token(&kiln, who, Method::GET, path, None).await;
        assert_eq!(got["clone_url"], "https://github.com/acme/api.git");
        assert_eq!(got["has_credentials"], true);
    }

    // Kept: the same URL, another path on the same host, another provider.
    for (url, provider) in [
        ("https://github.com/acme/api.git", "github"),
        ("https://GitHub.com/acme/api-renamed.git", "github"),
        ("https://github.com/acme/api-renamed.git", "gitea"),
    ] {
        let (s, body) = kiln
            .put(path, json!({"provider": provider, "clone_url": url}))
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body["has_credentials"], true, "{url}: {body}");
        assert_eq!(
            stored().await.as_deref(),
            Some(&*format!("kiln-bot:{token}"))
        );
    }
    // Dropped: another host, or another scheme (never sent anywhere else).
    for url in [
        "http://github.com/acme/api.git",
        "https://gitlab.com/acme/api.git",
    ] {
        put(with.clone(), json!({})).await;
        let (s, body) = put(url.into(), json!({})).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body["has_credentials"], false, "{url}: {body}");
        assert_eq!(stored().await, None);
    }
    // Removed on request; asking both to remove and to set is refused.
    put(with.clone(), json!({})).await;
    let got = put(with.clone(), json!({"remove_credentials": true})).await;
    assert_invalid(
        "remove and set",
        &got,
        "remove_credentials",
        "invalid_value",
    );
    assert!(!got.1.to_string().contains(token), "{}", got.1);
    let (s, body) = put(
        "https://github.com/acme/api.git".into(),
        json!({"remove_credentials": true}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["has_credentials"], false);
    assert_eq!(stored().await, None);
    // A token alone, percent-encoded characters: kept as written.
    put("https://to%40ken@github.com/acme/api.git".into(), json!({})).await;
    assert_eq!(stored().await.as_deref(), Some("to%40ken"));
    // git:// carries no credentials.
    let got = put("git://user:pw@git.local/acme/api.git".into(), json!({})).await;
    assert_invalid("git:// with credentials", &got, "clone_url", "invalid_url");
    assert!(!got.1.to_string().contains("pw@"), "{}", got.1);
}

// ---------------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn rules_need_a_source_and_are_validated() {
    let (_registry, kiln) = start().await;
    namespace(&kiln, "acme").await;
    repo(&kiln, "acme", "api").await;
    let rules = "/namespaces/acme/repos/api/rules";

    assert_error(
        "rule without a source",
        &kiln
            .post(rules, json!({"type": "branch", "name": "main"}))
            .await,
        StatusCode::CONFLICT,
        "no_source",
        None,
    );
    link_source(&kiln, "acme", "api").await;

    let (s, rule) = kiln
        .post(rules, json!({"type": "branch", "name": "main"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{rule}");
    let id = rule["id"].as_str().expect("rule id").to_string();
    assert_eq!(rule["type"], "branch");
    assert_eq!(rule["name"], "main");
    assert_eq!(rule["dockerfile"], "Dockerfile");
    assert_eq!(rule["context"], ".");
    assert_eq!(rule["version"], "");
    assert_eq!(rule["overwrite"], true);
    assert_eq!(rule["enabled"], true);

    // Good rules, and what is stored.
    #[rustfmt::skip]
    let good: &[(Value, &str, &str)] = &[
        (json!({"type": "tag", "name": "/^v(\\d+)$/", "version": "{1}"}), "version", "{1}"),
        (json!({"type": "tag", "name": "/^v(\\d+)\\.(\\d+)$/", "version": "{1}.{\\2}-x"}), "version", "{1}.{\\2}-x"),
        (json!({"type": "tag", "name": "v*", "version": "{sourceref}-{sha7}-{date}"}), "version", "{sourceref}-{sha7}-{date}"),
        (json!({"type": "branch", "name": "release-*", "version": "rc_{branch}", "overwrite": false}), "version", "rc_{branch}"),
        (json!({"type": "branch", "name": "main", "dockerfile": "./docker//Dockerfile.prod"}), "dockerfile", "docker/Dockerfile.prod"),
        (json!({"type": "branch", "name": "main", "context": "./app/"}), "context", "app"),
        (json!({"type": "branch", "name": "main", "enabled": false}), "enabled", "false"),
    ];
    for (body, key, want) in good {
        let (s, rule) = kiln.post(rules, body.clone()).await;
        assert_eq!(s, StatusCode::CREATED, "{body}: {rule}");
        let got = match &rule[*key] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(got, *want, "{body}: {rule}");
    }

    let long_name = "m".repeat(256);
    #[rustfmt::skip]
    let bad: &[(Value, &str, &str)] = &[
        (json!({"type": "branches", "name": "main"}), "type", "invalid_value"),
        (json!({"type": "Branch", "name": "main"}), "type", "invalid_value"),
        (json!({"type": "", "name": "main"}), "type", "invalid_value"),
        (json!({"type": "commit", "name": "main"}), "type", "invalid_value"),
        (json!({"type": "branch", "name": ""}), "name", "required"),
        (json!({"type": "branch", "name": long_name}), "name", "too_long"),
        (json!({"type": "branch", "name": "ma\nin"}), "name", "invalid_character"),
        (json!({"type": "tag", "name": "/v(/"}), "name", "invalid_regex"),
        (json!({"type": "tag", "name": "//"}), "name", "invalid_regex"),
        (json!({"type": "tag", "name": "/(x{1000}){1000}/"}), "name", "invalid_regex"),
        (json!({"type": "branch", "name": "main", "version": "my version"}), "version", "invalid_character"),
        (json!({"type": "branch", "name": "main", "version": "v1/x"}), "version", "invalid_character"),
        (json!({"type": "branch", "name": "main", "version": "v1:x"}), "version", "invalid_character"),
        (json!({"type": "branch", "name": "main", "version": "é"}), "version", "invalid_character"),
        (json!({"type": "branch", "name": "main", "version": ".hidden"}), "version", "invalid_start"),
        (json!({"type": "branch", "name": "main", "version": "-x"}), "version", "invalid_start"),
        (json!({"type": "branch", "name": "main", "version": "{foo}"}), "version", "unknown_placeholder"),
        (json!({"type": "branch", "name": "main", "version": "{}"}), "version", "unknown_placeholder"),
        (json!({"type": "branch", "name": "main", "version": "{SHA}"}), "version", "unknown_placeholder"),
        (json!({"type": "branch", "name": "main", "version": "{sha"}), "version", "syntax"),
        (json!({"type": "branch", "name": "main", "version": "x}"}), "version", "syntax"),
        (json!({"type": "branch", "name": "main", "version": "{{sha}}"}), "version", "syntax"),
        (json!({"type": "branch", "name": "main", "version": "{1}"}), "version", "unknown_capture"),
        (json!({"type": "tag", "name": "v*", "version": "{1}"}), "version", "unknown_capture"),
        (json!({"type": "tag", "name": "/^v(\\d+)$/", "version": "{2}"}), "version", "unknown_capture"),
        (json!({"type": "tag", "name": "/^v(\\d+)$/", "version": "{\\2}"}), "version", "unknown_capture"),
        (json!({"type": "tag", "name": "/^v(\\d+)$/", "version": "{10}"}), "version", "unknown_placeholder"),
        (json!({"type": "branch", "name": "main", "version": "x".repeat(129)}), "version", "too_long"),
        (json!({"type": "branch", "name": "main", "dockerfile": "../Dockerfile"}), "dockerfile", "invalid_path"),
        (json!({"type": "branch", "name": "main", "dockerfile": "docker/../../Dockerfile"}), "dockerfile", "invalid_path"),
        (json!({"type": "branch", "name": "main", "dockerfile": "/abs"}), "dockerfile", "invalid_path"),
        (json!({"type": "branch", "name": "main", "dockerfile": "/etc/passwd"}), "dockerfile", "invalid_path"),
        (json!({"type": "branch", "name": "main", "dockerfile": ""}), "dockerfile", "invalid_path"),
        (json!({"type": "branch", "name": "main", "dockerfile": "."}), "dockerfile", "invalid_path"),
        (json!({"type": "branch", "name": "main", "dockerfile": "Docker\u{0}file"}), "dockerfile", "invalid_path"),
        (json!({"type": "branch", "name": "main", "context": "../up"}), "context", "invalid_path"),
        (json!({"type": "branch", "name": "main", "context": "/srv"}), "context", "invalid_path"),
    ];
    for (body, field, code) in bad {
        let got = kiln.post(rules, body.clone()).await;
        let shown: String = body.to_string().chars().take(120).collect();
        assert_invalid(&format!("POST rule {shown}"), &got, field, code);
    }
    let (s, list) = kiln.get(rules).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(
        list.as_array().unwrap().len(),
        1 + good.len(),
        "refused rules were not stored"
    );

    // GET, PATCH, DELETE one rule.
    let one = format!("{rules}/{id}");
    let (s, got) = kiln.get(&one).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got["id"], id.as_str());
    let (s, patched) = kiln
        .patch(
            &one,
            json!({"version": "{sha7}", "enabled": false, "overwrite": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{patched}");
    assert_eq!(patched["id"], id.as_str());
    assert_eq!(patched["version"], "{sha7}");
    assert_eq!(patched["enabled"], false);
    assert_eq!(patched["overwrite"], false);
    assert_eq!(patched["name"], "main", "untouched fields stay");
    assert_eq!(patched["dockerfile"], "Dockerfile");
    assert_eq!(patched["type"], "branch");
    for (patch, field, code) in [
        (
            json!({"version": "bad version"}),
            "version",
            "invalid_character",
        ),
        (json!({"type": "nope"}), "type", "invalid_value"),
        (json!({"name": ""}), "name", "required"),
        (json!({"dockerfile": "../x"}), "dockerfile", "invalid_path"),
        (
            json!({"name": "main", "version": "{1}"}),
            "version",
            "unknown_capture",
        ),
        (json!({"enabled": "no"}), "enabled", "invalid_field"),
        (json!({"id": "other"}), "id", "invalid_field"),
    ] {
        let got = kiln.patch(&one, patch.clone()).await;
        assert_invalid(&format!("PATCH rule {patch}"), &got, field, code);
    }
    let (_, got) = kiln.get(&one).await;
    assert_eq!(
        got["version"], "{sha7}",
        "refused PATCHes change nothing: {got}"
    );
    assert_eq!(got["name"], "main");
    let (s, patched) = kiln
        .patch(&one, json!({"name": "/^release-(.+)$/", "version": "{1}"}))
        .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "a new name and a version using its capture: {patched}"
    );
    assert_eq!(patched["version"], "{1}");

    let (s, body) = kiln.delete(&one).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    for (what, got) in [
        ("GET after DELETE", kiln.get(&one).await),
        ("DELETE twice", kiln.delete(&one).await),
        (
            "PATCH after DELETE",
            kiln.patch(&one, json!({"enabled": true})).await,
        ),
        (
            "GET an unknown rule",
            kiln.get(&format!("{rules}/no-such-rule")).await,
        ),
        (
            "a rule of an unknown repo",
            kiln.get(&format!("/namespaces/acme/repos/nope/rules/{id}"))
                .await,
        ),
    ] {
        assert_error(what, &got, StatusCode::NOT_FOUND, "not_found", None);
    }
    let (_, list) = kiln.get(rules).await;
    assert_eq!(list.as_array().unwrap().len(), good.len());
}

// ---------------------------------------------------------------------------------------------
// Build now
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn build_now_checks_the_repo_the_rule_and_the_request() {
    let (_registry, kiln) = start().await;
    namespace(&kiln, "acme").await;
    repo(&kiln, "acme", "api").await;
    link_source(&kiln, "acme", "api").await;
    let main = kiln
        .rule("acme", "api", json!({"type": "branch", "name": "main"}))
        .await;
    let off = kiln
        .rule(
            "acme",
            "api",
            json!({"type": "branch", "name": "dev", "enabled": false}),
        )
        .await;
    let releases = kiln
        .rule(
            "acme",
            "api",
            json!({"type": "branch", "name": "release-*"}),
        )
        .await;
    let tags = kiln
        .rule("acme", "api", json!({"type": "tag", "name": "v*"}))
        .await;
    let build = |rule: &str| format!("/namespaces/acme/repos/api/rules/{rule}/builds");

    let (s, list) = kiln.get("/namespaces/acme/repos/api/builds").await;
    assert_eq!((s, list), (StatusCode::OK, json!([])), "no builds yet");

    // A hidden repository does not build.
    let (s, _) = kiln
        .post("/namespaces/acme/repos/api/hide", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let got = kiln.post(&build(&main), json!({})).await;
    assert_error(
        "build a hidden repo",
        &got,
        StatusCode::CONFLICT,
        "repository_hidden",
        None,
    );
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("unhide"),
        "the message says to unhide: {message}"
    );
    let (s, _) = kiln
        .post("/namespaces/acme/repos/api/unhide", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);

    assert_error(
        "build a disabled rule",
        &kiln.post(&build(&off), json!({})).await,
        StatusCode::CONFLICT,
        "rule_disabled",
        None,
    );

    #[rustfmt::skip]
    let bad: &[(&str, Value, &str, &str)] = &[
        (&main, json!({"ref": "dev"}), "ref", "no_match"),
        (&main, json!({"ref": "refs/heads/dev"}), "ref", "no_match"),
        (&main, json!({"ref": "Main"}), "ref", "no_match"),
        (&main, json!({"ref": "refs/tags/main"}), "ref", "wrong_type"),
        (&main, json!({"ref": "refs/pull/1/head"}), "ref", "invalid_ref"),
        (&main, json!({"ref": "refs/heads/"}), "ref", "invalid_ref"),
        (&releases, json!({}), "ref", "required"),
        (&releases, json!({"ref": "main"}), "ref", "no_match"),
        (&tags, json!({"ref": "refs/heads/v1"}), "ref", "wrong_type"),
        (&tags, json!({"ref": "x1"}), "ref", "no_match"),
        (&tags, json!({"commit": SHA}), "ref", "required"),
        (&main, json!({"commit": "xyz"}), "commit", "invalid_commit"),
        (&main, json!({"commit": "abc12"}), "commit", "invalid_commit"),
        (&main, json!({"commit": "0123456789abcdefg"}), "commit", "invalid_commit"),
        (&main, json!({"commit": format!("{SHA}0")}), "commit", "invalid_commit"),
        (&main, json!({"commit": "HEAD~1"}), "commit", "invalid_commit"),
        (&main, json!({"commit": 1234567}), "commit", "invalid_field"),
        (&main, json!({"ref": ["main"]}), "ref", "invalid_field"),
        (&main, json!({"branch": "main"}), "branch", "invalid_field"),
    ];
    for (rule, body, field, code) in bad {
        let got = kiln.post(&build(rule), body.clone()).await;
        assert_invalid(
            &format!("build now {body} on rule {rule}"),
            &got,
            field,
            code,
        );
    }
    let (s, list) = kiln.get("/namespaces/acme/repos/api/builds").await;
    assert_eq!(
        (s, list),
        (StatusCode::OK, json!([])),
        "refused builds were not queued"
    );

    // Accepted: 202 and a build of the rule's branch.
    let (s, b) = kiln.post(&build(&main), json!({"commit": SHA})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["trigger"], "manual");
    assert_eq!(b["ref"], "refs/heads/main");
    assert_eq!(b["commit"], SHA);
    assert_eq!(b["rule_id"], main.as_str());
    assert_eq!(b["namespace"], "acme");
    assert_eq!(b["repository"], "api");
    assert!(
        matches!(b["status"].as_str(), Some("queued" | "building" | "failed")),
        "{b}"
    );
    let id = b["id"].as_str().unwrap().to_string();
    let (s, got) = kiln.get(&format!("/builds/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got["id"], id.as_str());
    for key in [
        "tag",
        "image",
        "error",
        "created_at",
        "started_at",
        "finished_at",
        "digest",
        "queue_position",
    ] {
        assert!(got.get(key).is_some(), "build has {key}: {got}");
    }
    assert_eq!(got["attempt"], 1, "{got}");
    let (s, b) = kiln
        .post(&build(&releases), json!({"ref": "release-1.2"}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["ref"], "refs/heads/release-1.2");
    let (s, b) = kiln
        .post(&build(&tags), json!({"ref": "refs/tags/v2.0"}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["ref"], "refs/tags/v2.0");
    let (_, list) = kiln.get("/namespaces/acme/repos/api/builds").await;
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");

    // Unknown builds and rules.
    for (what, got) in [
        (
            "GET /builds/{unknown}",
            kiln.get("/builds/no-such-build").await,
        ),
        (
            "GET /builds/{uuid}",
            kiln.get("/builds/00000000-0000-7000-8000-000000000000")
                .await,
        ),
        (
            "GET /builds/{unknown}/log",
            kiln.get("/builds/no-such-build/log").await,
        ),
        (
            "POST /builds/{unknown}/cancel",
            kiln.post("/builds/no-such-build/cancel", json!({})).await,
        ),
        (
            "build an unknown rule",
            kiln.post(&build("no-such-rule"), json!({})).await,
        ),
        (
            "build in an unknown repo",
            kiln.post(
                &format!("/namespaces/acme/repos/nope/rules/{main}/builds"),
                json!({}),
            )
            .await,
        ),
    ] {
        assert_error(what, &got, StatusCode::NOT_FOUND, "not_found", None);
    }

    // Once the source is gone, its rules are kept but do not build.
    let (s, _) = kiln.delete("/namespaces/acme/repos/api/source").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_error(
        "build without a source",
        &kiln.post(&build(&main), json!({})).await,
        StatusCode::CONFLICT,
        "no_source",
        None,
    );
}

// ---------------------------------------------------------------------------------------------
// Lists
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn build_lists_page_with_limit_and_cursor() {
    let (_registry, kiln) = start().await;
    namespace(&kiln, "acme").await;
    repo(&kiln, "acme", "api").await;
    let builds = "/namespaces/acme/repos/api/builds";

    let (s, list) = kiln.get(builds).await;
    assert_eq!(
        (s, list),
        (StatusCode::OK, json!([])),
        "a repo that never built"
    );
    for limit in ["0", "-1", "201", "1000"] {
        let got = kiln.get(&format!("{builds}?limit={limit}")).await;
        assert_invalid(&format!("?limit={limit}"), &got, "limit", "out_of_range");
    }
    for limit in ["1", "200"] {
        let (s, list) = kiln.get(&format!("{builds}?limit={limit}")).await;
        assert_eq!((s, list), (StatusCode::OK, json!([])), "?limit={limit}");
    }

    link_source(&kiln, "acme", "api").await;
    let rule = kiln
        .rule("acme", "api", json!({"type": "branch", "name": "*"}))
        .await;
    let mut ids = Vec::new();
    for branch in ["one", "two", "three"] {
        let (s, b) = kiln
            .post(
                &format!("/namespaces/acme/repos/api/rules/{rule}/builds"),
                json!({ "ref": branch }),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        ids.push(b["id"].as_str().unwrap().to_string());
    }
    ids.reverse();
    let (_, list) = kiln.get(builds).await;
    let got: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids, "newest first");

    // Page by page with X-Next-Cursor.
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_string();
    for _ in 0..5 {
        let (s, headers, page) = raw(
            &kiln,
            Method::GET,
            &format!("/api/v1{builds}{query}"),
            Some(&bearer),
            None,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let items = page.as_array().unwrap();
        assert!(items.len() <= 2, "{page}");
        seen.extend(items.iter().map(|b| b["id"].as_str().unwrap().to_string()));
        match headers.get("x-next-cursor") {
            Some(c) => query = format!("?limit=2&cursor={}", c.to_str().unwrap()),
            None => break,
        }
    }
    assert_eq!(
        seen, ids,
        "the pages together hold every build once, newest first"
    );
}

/// The contract says every list is newest first and takes `?limit=` and `?cursor=`, and that a bad
/// query parameter is refused naming it. All the mismatches are collected, then reported at once.
#[tokio::test(flavor = "multi_thread")]
async fn every_list_takes_limit_and_query_errors_name_the_parameter() {
    let (_registry, kiln) = start().await;
    namespace(&kiln, "aa").await;
    namespace(&kiln, "bb").await;
    repo(&kiln, "aa", "first").await;
    repo(&kiln, "aa", "second").await;
    link_source(&kiln, "aa", "first").await;
    kiln.rule("aa", "first", json!({"type": "branch", "name": "main"}))
        .await;
    kiln.rule("aa", "first", json!({"type": "branch", "name": "dev"}))
        .await;
    token(&kiln, json!({"name": "one", "role": "read"})).await;
    token(&kiln, json!({"name": "two", "role": "read"})).await;

    let mut problems: Vec<String> = Vec::new();
    let lists = [
        "/namespaces",
        "/namespaces/aa/repos",
        "/namespaces/aa/repos/first/rules",
        "/namespaces/aa/repos/first/builds",
        "/namespaces/aa/repos/first/versions",
        "/tokens",
    ];
    for list in lists {
        // "Lists … take ?limit= and ?cursor=": a limit out of range is 422 field "limit".
        for limit in ["0", "1000"] {
            let got = kiln.get(&format!("{list}?limit={limit}")).await;
            if let Some(p) = error_mismatch(
                &got,
                StatusCode::UNPROCESSABLE_ENTITY,
                "out_of_range",
                Some("limit"),
            ) {
                problems.push(format!("GET {list}?limit={limit}: {p}"));
            }
        }
        // a limit that is not a number is 422 naming "limit".
        let got = kiln.get(&format!("{list}?limit=abc")).await;
        if got.0 != StatusCode::UNPROCESSABLE_ENTITY || got.1["error"]["field"] != "limit" {
            problems.push(format!(
                "GET {list}?limit=abc: {} {}, want 422 field \"limit\"",
                got.0, got.1
            ));
        }
        // ?limit=1 is accepted and gives at most one item.
        let (s, body) = kiln.get(&format!("{list}?limit=1")).await;
        if s != StatusCode::OK || body.as_array().is_none_or(|a| a.len() > 1) {
            problems.push(format!(
                "GET {list}?limit=1: {s} {body}, want 200 and ≤ 1 item"
            ));
        }
    }
    // "Lists are newest first": bb after aa, second after first.
    for (list, want) in [
        ("/namespaces", vec!["bb", "aa"]),
        ("/namespaces/aa/repos", vec!["second", "first"]),
        ("/tokens", vec!["two", "one"]),
    ] {
        let (_, body) = kiln.get(list).await;
        let got: Vec<&str> = body
            .as_array()
            .map(|a| a.iter().filter_map(|v| v["name"].as_str()).collect())
            .unwrap_or_default();
        if got != want {
            problems.push(format!(
                "GET {list}: order {got:?}, want newest first {want:?}"
            ));
        }
    }
    // a query parameter of the wrong type names the parameter.
    for (path, field) in [
        (
            "/namespaces/aa/repos?include_hidden=maybe",
            "include_hidden",
        ),
        (
            "/namespaces/aa/repos/first/versions?include_hidden=1",
            "include_hidden",
        ),
    ] {
        let got = kiln.get(path).await;
        if got.0 != StatusCode::UNPROCESSABLE_ENTITY || got.1["error"]["field"] != field {
            problems.push(format!(
                "GET {path}: {} {}, want 422 field {field:?}",
                got.0, got.1
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} contract mismatches:\n{}",
        problems.len(),
        problems
            .iter()
            .map(|p| p.chars().take(400).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Build settings per rule (issue 9)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn rule_build_settings_have_defaults_and_every_bad_value_names_its_field() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[("KILN_BUILD_TIMEOUT_MINUTES", "45")]).await;
    namespace(&kiln, "acme").await;
    repo(&kiln, "acme", "api").await;
    link_source(&kiln, "acme", "api").await;
    let rules = "/namespaces/acme/repos/api/rules";

    // Defaults, shown.
    let (s, rule) = kiln
        .post(rules, json!({"type": "branch", "name": "main"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{rule}");
    for (key, want) in [
        ("build_args", json!({})),
        ("target", json!("")),
        ("no_cache", json!(false)),
        ("extra_tags", json!([])),
        ("timeout_minutes", json!(null)),
        ("effective_timeout_minutes", json!(45)),
    ] {
        assert_eq!(rule[key], want, "{key}: {rule}");
    }
    let id = rule["id"].as_str().unwrap().to_string();
    let one = format!("{rules}/{id}");

    // Every setting, stored and shown by GET and the list.
    let settings = json!({
        "build_args": {"GREETING": "hello", "EMPTY": ""},
        "target": "build",
        "no_cache": true,
        "extra_tags": ["latest", "{branch}-latest"],
        "timeout_minutes": 5,
    });
    let mut body =
        json!({"type": "tag", "name": "/^v(\\d+)\\.(\\d+)$/", "extra_tags": ["{1}", "{1}.{2}"]});
    let (s, regex_rule) = kiln.post(rules, body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{regex_rule}");
    assert_eq!(regex_rule["extra_tags"], json!(["{1}", "{1}.{2}"]));
    body = json!({"type": "branch", "name": "dev"});
    for (k, v) in settings.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (s, full) = kiln.post(rules, body).await;
    assert_eq!(s, StatusCode::CREATED, "{full}");
    let full_path = format!("{rules}/{}", full["id"].as_str().unwrap());
    let (_, got) = kiln.get(&full_path).await;
    for (k, v) in settings.as_object().unwrap() {
        assert_eq!(&got[k], v, "{k}: {got}");
    }
    assert_eq!(got["effective_timeout_minutes"], 5);
    let (_, list) = kiln.get(rules).await;
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == full["id"])
        .unwrap();
    assert_eq!(listed["build_args"], settings["build_args"]);

    // Bad values: 422 naming the field, on create and on update.
    let long_value = "v".repeat(4097);
    #[rustfmt::skip]
    let bad: Vec<(Value, &str, &str)> = vec![
        (json!({"build_args": {"KILN_COMMIT": "x"}}), "build_args.KILN_COMMIT", "reserved"),
        (json!({"build_args": {"KILN_REF": "x"}}), "build_args.KILN_REF", "reserved"),
        (json!({"build_args": {"KILN_TAG": "x"}}), "build_args.KILN_TAG", "reserved"),
        (json!({"build_args": {"PORT": 8080}}), "build_args.PORT", "invalid_type"),
        (json!({"build_args": {"ON": true}}), "build_args.ON", "invalid_type"),
        (json!({"build_args": {"N": null}}), "build_args.N", "invalid_type"),
        (json!({"build_args": {"1X": "a"}}), "build_args.1X", "invalid_name"),
        (json!({"build_args": {"A-B": "a"}}), "build_args.A-B", "invalid_name"),
        (json!({"build_args": {"BIG": long_value}}), "build_args.BIG", "too_long"),
        (json!({"build_args": ["A=B"]}), "build_args", "invalid_type"),
        (json!({"build_args": "A=B"}), "build_args", "invalid_type"),
        (json!({"target": "-x"}), "target", "invalid_stage"),
        (json!({"target": "a b"}), "target", "invalid_stage"),
        (json!({"target": "s".repeat(129)}), "target", "too_long"),
        (json!({"target": 5}), "target", "invalid_field"),
        (json!({"no_cache": "yes"}), "no_cache", "invalid_field"),
        (json!({"extra_tags": "latest"}), "extra_tags", "invalid_field"),
        (json!({"extra_tags": [1]}), "extra_tags[0]", "invalid_field"),
        (json!({"extra_tags": ["ok", ""]}), "extra_tags[1]", "required"),
        (json!({"extra_tags": ["bad tag"]}), "extra_tags[0]", "invalid_character"),
        (json!({"extra_tags": ["{1}"]}), "extra_tags[0]", "unknown_capture"),
        (json!({"extra_tags": ["{nope}"]}), "extra_tags[0]", "unknown_placeholder"),
        (json!({"extra_tags": ["-x"]}), "extra_tags[0]", "invalid_start"),
        (json!({"extra_tags": (0..17).map(|i| format!("t{i}")).collect::<Vec<_>>()}), "extra_tags", "too_many"),
        (json!({"timeout_minutes": 0}), "timeout_minutes", "out_of_range"),
        (json!({"timeout_minutes": -5}), "timeout_minutes", "out_of_range"),
        (json!({"timeout_minutes": 1441}), "timeout_minutes", "out_of_range"),
        (json!({"timeout_minutes": 1.5}), "timeout_minutes", "invalid_field"),
        (json!({"timeout_minutes": "60"}), "timeout_minutes", "invalid_field"),
    ];
    for (fields, field, code) in &bad {
        let mut body = json!({"type": "branch", "name": "main"});
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        let got = kiln.post(rules, body).await;
        assert_invalid(&format!("POST rule with {fields}"), &got, field, code);
        let got = kiln.patch(&one, fields.clone()).await;
        assert_invalid(&format!("PATCH rule with {fields}"), &got, field, code);
    }
    let (_, got) = kiln.get(&one).await;
    assert_eq!(
        got["build_args"],
        json!({}),
        "refused PATCHes change nothing"
    );
    let e = &kiln
        .post(
            rules,
            json!({"type": "branch", "name": "main", "build_args": {"KILN_COMMIT": "x"}}),
        )
        .await
        .1["error"];
    assert!(
        e["message"].as_str().unwrap().contains("ARG KILN_COMMIT"),
        "{e}"
    );
    // A new name must still suit the extra tags' captures.
    let regex_path = format!("{rules}/{}", regex_rule["id"].as_str().unwrap());
    let got = kiln.patch(&regex_path, json!({"name": "v*"})).await;
    assert_invalid(
        "PATCH a name without the captures",
        &got,
        "extra_tags[0]",
        "unknown_capture",
    );

    // PATCH: what the body gives changes, the rest stays; null is the default.
    let (s, patched) = kiln
        .patch(
            &full_path,
            json!({"no_cache": false, "timeout_minutes": 90}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{patched}");
    assert_eq!(patched["no_cache"], false);
    assert_eq!(patched["timeout_minutes"], 90);
    assert_eq!(patched["effective_timeout_minutes"], 90);
    assert_eq!(patched["build_args"], settings["build_args"]);
    assert_eq!(patched["extra_tags"], settings["extra_tags"]);
    assert_eq!(patched["target"], "build");
    let (s, reset) = kiln
        .patch(
            &full_path,
            json!({"build_args": null, "target": null, "extra_tags": null, "timeout_minutes": null}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{reset}");
    for (key, want) in [
        ("build_args", json!({})),
        ("target", json!("")),
        ("extra_tags", json!([])),
        ("timeout_minutes", json!(null)),
        ("effective_timeout_minutes", json!(45)),
    ] {
        assert_eq!(reset[key], want, "{key}: {reset}");
    }

    // A build copies its rule's settings when it is queued.
    let (s, _) = kiln
        .patch(
            &one,
            json!({"build_args": {"A": "1"}, "timeout_minutes": 3}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, build) = kiln.post(&format!("{one}/builds"), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{build}");
    let (s, _) = kiln
        .patch(
            &one,
            json!({"build_args": {"A": "2"}, "timeout_minutes": 4}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, build) = kiln
        .get(&format!("/builds/{}", build["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        build["settings"],
        json!({"build_args": {"A": "1"}, "target": "", "no_cache": false, "extra_tags": [], "timeout_minutes": 3}),
        "{build}"
    );
}

/// Issue 9: `schedule`, `paths` and `ignore_paths` on rules: defaults, what is stored and shown, PATCH
/// (null removes a schedule), and 422s naming the field with the parser's reason.
#[tokio::test(flavor = "multi_thread")]
async fn rule_schedules_and_path_filters() {
    let (_registry, kiln) = start().await;
    namespace(&kiln, "acme").await;
    repo(&kiln, "acme", "api").await;
    link_source(&kiln, "acme", "api").await;
    let rules = "/namespaces/acme/repos/api/rules";

    let (s, plain) = kiln
        .post(rules, json!({"type": "branch", "name": "main"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{plain}");
    assert_eq!(plain["schedule"], Value::Null);
    assert_eq!(plain["paths"], json!([]));
    assert_eq!(plain["ignore_paths"], json!([]));

    let (s, rule) = kiln
        .post(
            rules,
            json!({"type": "branch", "name": "main", "schedule": " 0 3 * * MON ",
                   "paths": ["src/**", "!src/**/*.md"], "ignore_paths": ["docs/**"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{rule}");
    assert_eq!(rule["schedule"], "0 3 * * MON");
    assert_eq!(rule["paths"], json!(["src/**", "!src/**/*.md"]));
    assert_eq!(rule["ignore_paths"], json!(["docs/**"]));
    let path = format!("{rules}/{}", rule["id"].as_str().unwrap());
    let (s, got) = kiln.get(&path).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (&got["schedule"], &got["paths"], &got["ignore_paths"]),
        (&rule["schedule"], &rule["paths"], &rule["ignore_paths"])
    );

    // PATCH: absent keeps, a new value replaces, null (or "") removes the schedule.
    let (s, got) = kiln
        .patch(&path, json!({"schedule": "*/2 * * * * *"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got["schedule"], "*/2 * * * * *");
    assert_eq!(got["paths"], json!(["src/**", "!src/**/*.md"]));
    let (s, got) = kiln
        .patch(&path, json!({"schedule": null, "paths": []}))
        .await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got["schedule"], Value::Null);
    assert_eq!(got["paths"], json!([]));
    assert_eq!(got["ignore_paths"], json!(["docs/**"]));
    let (_, got) = kiln.patch(&path, json!({"schedule": "0 * * * *"})).await;
    assert_eq!(got["schedule"], "0 * * * *");
    let (_, got) = kiln.patch(&path, json!({"schedule": ""})).await;
    assert_eq!(got["schedule"], Value::Null);

    #[rustfmt::skip]
    let bad: &[(Value, &str, &str, &str)] = &[
        (json!({"type": "branch", "name": "main", "schedule": "61 * * * *"}), "schedule", "invalid_schedule", "not a valid cron expression"),
        (json!({"type": "branch", "name": "main", "schedule": "* * * *"}), "schedule", "invalid_schedule", "5 fields"),
        (json!({"type": "branch", "name": "main", "schedule": "@daily"}), "schedule", "invalid_schedule", "got 1"),
        (json!({"type": "branch", "name": "main", "schedule": "0 0 30 2 *"}), "schedule", "invalid_schedule", "never fires"),
        (json!({"type": "branch", "name": "release-*", "schedule": "0 3 * * *"}), "schedule", "not_allowed", "exact name"),
        (json!({"type": "tag", "name": "v1.0", "schedule": "0 3 * * *"}), "schedule", "not_allowed", "exact name"),
        (json!({"type": "branch", "name": "main", "schedule": 5}), "schedule", "invalid_type", ""),
        (json!({"type": "branch", "name": "main", "paths": ["src/[a"]}), "paths", "invalid_glob", "not a valid glob"),
        (json!({"type": "branch", "name": "main", "paths": [""]}), "paths", "required", "empty"),
        (json!({"type": "branch", "name": "main", "ignore_paths": ["{a,b"]}), "ignore_paths", "invalid_glob", "not a valid glob"),
        (json!({"type": "branch", "name": "main", "ignore_paths": "docs/**"}), "ignore_paths", "invalid_type", ""),
    ];
    for (body, field, code, words) in bad {
        let got = kiln.post(rules, body.clone()).await;
        if *code == "invalid_type" {
            // A JSON type error: the extractor's code, naming the field.
            assert_error_shape(&body.to_string(), &got, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(got.1["error"]["field"], *field, "{body}: {}", got.1);
            continue;
        }
        assert_invalid(&body.to_string(), &got, field, code);
        let message = got.1["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{body}: {message}");
    }
    // PATCH to a pattern name keeps the schedule, so it is refused; the rule is unchanged.
    kiln.patch(&path, json!({"schedule": "0 3 * * *"})).await;
    let got = kiln.patch(&path, json!({"name": "release-*"})).await;
    assert_invalid(
        "pattern name with a schedule",
        &got,
        "schedule",
        "not_allowed",
    );
    let (_, still) = kiln.get(&path).await;
    assert_eq!(still["name"], "main");
}
