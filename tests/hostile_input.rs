//! Hostile request bodies at every endpoint that takes one (issue 11): deep JSON, strings just over
//! and just under the body limit, invalid UTF-8, wrong types, unknown fields, an empty body, the
//! wrong content type. The API and the hooks answer a 4xx with the JSON error shape, the console
//! its HTML error page; never a 5xx, and nothing is half-written (every list reads the same
//! before and after).
//!
//! The API endpoints come from the API's route table (`kiln::http::api::route_table`): every
//! POST/PUT/PATCH route is either in `API_BODIES` (with the field a string goes into) or in
//! `NO_BODY` (an action that reads no body), and a route in neither fails the test, so a new route
//! cannot go untried. The console's forms are listed by hand (`CONSOLE_FORMS`). Unknown fields are
//! refused (422 naming the field) by every API body, as the API has always done
//! (`deny_unknown_fields`).

mod support;

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use support::kiln::{ADMIN_TOKEN, Kiln};
use support::{GitRepo, Registry, github_signature};

/// The API's body limit (axum's default).
const API_LIMIT: usize = 2 * 1024 * 1024;
/// `/registry/events`' limit.
const EVENTS_LIMIT: usize = 5 * 1024 * 1024;
/// The console's form limit.
const FORM_LIMIT: usize = 256 * 1024;
const EVENTS_TOKEN: &str = "hostile-events-token";

/// An API endpoint that takes a JSON body: method, path, the field a string goes into, and
/// whether an empty body (`{}`) is a valid request there (every field optional).
struct ApiBody {
    method: &'static str,
    path: &'static str,
    field: &'static str,
    empty_is_valid: bool,
}

const API_BODIES: &[ApiBody] = &[
    ApiBody {
        method: "POST",
        path: "/namespaces",
        field: "name",
        empty_is_valid: false,
    },
    ApiBody {
        method: "POST",
        path: "/namespaces/{ns}/repos",
        field: "name",
        empty_is_valid: false,
    },
    ApiBody {
        method: "PATCH",
        path: "/namespaces/{ns}/repos/{repo}",
        field: "summary",
        empty_is_valid: true,
    },
    ApiBody {
        method: "PUT",
        path: "/namespaces/{ns}/repos/{repo}/source",
        field: "clone_url",
        empty_is_valid: false,
    },
    ApiBody {
        method: "POST",
        path: "/namespaces/{ns}/repos/{repo}/rules",
        field: "name",
        empty_is_valid: false,
    },
    ApiBody {
        method: "PATCH",
        path: "/namespaces/{ns}/repos/{repo}/rules/{id}",
        field: "dockerfile",
        empty_is_valid: true,
    },
    ApiBody {
        method: "POST",
        path: "/namespaces/{ns}/repos/{repo}/rules/{id}/builds",
        field: "ref",
        empty_is_valid: true,
    },
    ApiBody {
        method: "POST",
        path: "/namespaces/{ns}/repos/{repo}/webhooks",
        field: "url",
        empty_is_valid: false,
    },
    ApiBody {
        method: "PATCH",
        path: "/namespaces/{ns}/repos/{repo}/webhooks/{id}",
        field: "url",
        empty_is_valid: true,
    },
    ApiBody {
        method: "POST",
        path: "/tokens",
        field: "name",
        empty_is_valid: false,
    },
    ApiBody {
        method: "PUT",
        path: "/namespaces/{ns}/integrations/{provider}",
        field: "token",
        empty_is_valid: false,
    },
];

/// The API's POST routes that are actions reading no body: hostile bodies would only run them.
const NO_BODY: &[&str] = &[
    "/namespaces/{ns}/repos/{repo}/hide",
    "/namespaces/{ns}/repos/{repo}/unhide",
    "/namespaces/{ns}/repos/{repo}/versions/{tag}/hide",
    "/namespaces/{ns}/repos/{repo}/versions/{tag}/unhide",
    "/registry/sync",
    "/namespaces/{ns}/repos/{repo}/webhooks/{id}/test",
    "/deliveries/{id}/redeliver",
    "/builds/{id}/cancel",
];

/// Every route of the API's table that takes a body has its entry in `API_BODIES`, and every
/// entry there or in `NO_BODY` is a route of the table.
#[test]
fn every_api_route_that_takes_a_body_is_tried() {
    use kiln::http::api::route_table;
    let table = route_table();
    let writes: Vec<(String, &str)> = table
        .iter()
        .filter(|r| matches!(r.method.as_str(), "POST" | "PUT" | "PATCH"))
        .map(|r| (r.method.to_string(), r.path))
        .collect();
    for (method, path) in &writes {
        let listed = API_BODIES
            .iter()
            .any(|b| b.method == method && b.path == *path)
            || (method == "POST" && NO_BODY.contains(path));
        assert!(
            listed,
            "{method} {path} takes a body but is not tried: add it to API_BODIES or NO_BODY"
        );
    }
    for b in API_BODIES {
        assert!(
            writes.iter().any(|(m, p)| m == b.method && *p == b.path),
            "{} {} is not a route",
            b.method,
            b.path
        );
    }
    for p in NO_BODY {
        assert!(
            writes.iter().any(|(m, q)| m == "POST" && q == p),
            "POST {p} is not a route"
        );
    }
}

/// A hostile body: what it is, its content type, its bytes.
struct Hostile {
    what: String,
    content_type: &'static str,
    body: Vec<u8>,
}

fn hostile(what: &str, content_type: &'static str, body: impl Into<Vec<u8>>) -> Hostile {
    Hostile {
        what: what.to_string(),
        content_type,
        body: body.into(),
    }
}

const JSON: &str = "application/json";

/// `depth` nested arrays.
fn deep_arrays(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Every hostile JSON body for a field `field` under a body limit of `limit` bytes.
fn hostile_json(field: &str, limit: usize, empty_is_valid: bool) -> Vec<Hostile> {
    let string_of = |n: usize| format!("{{\"{field}\": \"{}\"}}", "a".repeat(n));
    let overhead = field.len() + 8;
    let mut all = vec![
        hostile("10,000 nested arrays", JSON, deep_arrays(10_000)),
        hostile(
            "10,000 nested objects",
            JSON,
            format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000)),
        ),
        hostile(
            "10,000 nested arrays in the field",
            JSON,
            format!("{{\"{field}\": {}}}", deep_arrays(10_000)),
        ),
        hostile("a string just over the limit", JSON, string_of(limit + 1)),
        hostile(
            "a string just under the limit",
            JSON,
            string_of(limit - overhead - 16),
        ),
        hostile(
            "invalid UTF-8 in a string",
            JSON,
            [format!("{{\"{field}\": \"a").as_bytes(), b"\xff\xfe\"}"].concat(),
        ),
        hostile("invalid UTF-8 bytes", JSON, b"\xff\xfe\xfd{}".to_vec()),
        hostile(
            "a lone surrogate",
            JSON,
            format!("{{\"{field}\": \"\\ud800\"}}"),
        ),
        hostile(
            "NUL in a string",
            JSON,
            format!("{{\"{field}\": \"a\\u0000b\"}}"),
        ),
        hostile("a number for a string", JSON, format!("{{\"{field}\": 5}}")),
        hostile("a huge number", JSON, format!("{{\"{field}\": 1e999}}")),
        hostile(
            "an array for a string",
            JSON,
            format!("{{\"{field}\": [\"x\"]}}"),
        ),
        hostile(
            "an object for a string",
            JSON,
            format!("{{\"{field}\": {{}}}}"),
        ),
        hostile(
            "a bool for a string",
            JSON,
            format!("{{\"{field}\": true}}"),
        ),
        hostile("an unknown field", JSON, r#"{"zz_unknown": 1}"#),
        hostile(
            "an unknown field beside a wrong one",
            JSON,
            format!("{{\"{field}\": 7, \"zz_unknown\": 1}}"),
        ),
        hostile("an array body", JSON, "[]"),
        hostile("a string body", JSON, "\"x\""),
        hostile("a null body", JSON, "null"),
        hostile("truncated JSON", JSON, format!("{{\"{field}\": \"x")),
        hostile(
            "trailing data",
            JSON,
            format!("{{\"{field}\": \"x\"}} {{}}"),
        ),
        hostile(
            "plain text",
            "text/plain",
            format!("{{\"{field}\": \"x\"}}"),
        ),
        hostile(
            "a form",
            "application/x-www-form-urlencoded",
            format!("{field}=x"),
        ),
        hostile(
            "binary",
            "application/octet-stream",
            vec![0u8, 159, 146, 150],
        ),
    ];
    if !empty_is_valid {
        all.push(hostile("an empty body", JSON, ""));
        all.push(hostile("an empty object", JSON, "{}"));
    }
    all
}

/// The state every hostile request must leave as it was: what the API lists.
async fn snapshot(kiln: &Kiln, rule: &str, webhook: &str) -> Value {
    let mut all = serde_json::Map::new();
    for path in [
        "/namespaces".to_string(),
        "/namespaces/acme/repos?include_hidden=true".to_string(),
        "/namespaces/acme/repos/api".to_string(),
        "/namespaces/acme/repos/api/source".to_string(),
        "/namespaces/acme/repos/api/rules".to_string(),
        format!("/namespaces/acme/repos/api/rules/{rule}"),
        "/namespaces/acme/repos/api/builds".to_string(),
        "/namespaces/acme/repos/api/webhooks".to_string(),
        format!("/namespaces/acme/repos/api/webhooks/{webhook}"),
        "/namespaces/acme/repos/api/versions?include_hidden=true".to_string(),
        "/namespaces/acme/repos/api/events".to_string(),
        "/tokens".to_string(),
    ] {
        let (s, body) = kiln.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
        all.insert(path, body);
    }
    Value::Object(all)
}

/// The answer to one hostile request: a 4xx. A JSON error names its code, message and field.
fn check_api_error(what: &str, status: StatusCode, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    assert!(status.is_client_error(), "{what}: {status} {text:.300}");
    let error: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{what}: {status}: not JSON ({e}): {text:.300}"));
    let e = &error["error"];
    assert!(
        e["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{what}: {error}"
    );
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {error}"
    );
    assert!(
        e.get("field").is_some_and(|f| f.is_null() || f.is_string()),
        "{what}: {error}"
    );
}

/// Sends `body` and returns the status and the body of the answer. A body over the limit goes
/// over a plain socket (see [`send_raw`]).
async fn send(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    h: &Hostile,
) -> (StatusCode, Vec<u8>) {
    if h.what.contains("just over") {
        let (status, _, body) = send_raw(method, url, headers, h).await;
        return (status, body);
    }
    let mut req = http
        .request(method.parse().unwrap(), url)
        .header(CONTENT_TYPE, h.content_type)
        .body(h.body.clone());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url} ({}): {e}", h.what));
    let status = resp.status();
    (status, resp.bytes().await.unwrap().to_vec())
}

/// Sends a request whose body is over a limit the way a client does, while reading the answer: a
/// server may answer 413 from the head and close the connection without reading the body, which
/// makes an HTTP client report the failed write instead of the answer. Returns the status, the
/// content type and the body of the answer.
async fn send_raw(
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    h: &Hostile,
) -> (StatusCode, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let parsed = reqwest::Url::parse(url).unwrap();
    let addr = format!("{}:{}", parsed.host_str().unwrap(), parsed.port().unwrap());
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {}\r\ncontent-length: {}\r\n",
        parsed.path(),
        h.content_type,
        h.body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let body = h.body.clone();
    let write = tokio::spawn(async move {
        // The server may stop reading at any point: a failed write is expected.
        if writer.write_all(head.as_bytes()).await.is_ok() {
            let _ = writer.write_all(&body).await;
        }
        writer
    });
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let answer = loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(60), reader.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{url} ({}): no answer", h.what))
            .unwrap_or_else(|e| panic!("{url} ({}): {e} after {got:?}", h.what));
        assert!(n > 0, "{url} ({}): closed without an answer", h.what);
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if got.len() >= end + 4 + length {
            let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
            let content_type = head
                .lines()
                .find_map(|l| l.strip_prefix("content-type:"))
                .unwrap_or_default()
                .trim()
                .to_string();
            break (
                StatusCode::from_u16(status).unwrap(),
                content_type,
                got[end + 4..end + 4 + length].to_vec(),
            );
        }
    };
    write.abort();
    answer
}

struct Setup {
    _registry: Registry,
    kiln: Kiln,
    _git: GitRepo,
    rule: String,
    webhook: String,
    secret: String,
    clone_url: String,
}

async fn setup() -> Setup {
    let registry = Registry::start();
    let git = GitRepo::named("api");
    git.write("Dockerfile", "FROM scratch\n");
    git.commit("first");
    git.push("main");
    let kiln = Kiln::start(
        &registry,
        &[
            ("KILN_REGISTRY_EVENTS_TOKEN", EVENTS_TOKEN),
            ("KILN_WEBHOOK_ALLOW", "127.0.0.1"),
        ],
    )
    .await;
    let secret = kiln.ci_repo("acme", "api", &git.clone_url()).await;
    let rule = kiln
        .rule("acme", "api", json!({"type": "branch", "name": "main"}))
        .await;
    let (s, hook) = kiln
        .post(
            "/namespaces/acme/repos/api/webhooks",
            json!({"name": "hook", "url": "http://127.0.0.1:9/hook"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");
    Setup {
        clone_url: git.clone_url(),
        _registry: registry,
        kiln,
        _git: git,
        rule,
        webhook: hook["id"].as_str().unwrap().to_string(),
        secret,
    }
}

/// Every API endpoint that takes a body, every hostile body: a 4xx with the JSON error, nothing
/// written.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_api_bodies_are_refused_with_the_json_error_and_change_nothing() {
    let s = setup().await;
    let kiln = &s.kiln;
    let before = snapshot(kiln, &s.rule, &s.webhook).await;
    let auth = [("authorization", format!("Bearer {ADMIN_TOKEN}"))];
    let mut tried = 0;
    for endpoint in API_BODIES {
        let id = if endpoint.path.contains("/webhooks/") {
            &s.webhook
        } else {
            &s.rule
        };
        let path = endpoint
            .path
            .replace("{ns}", "acme")
            .replace("{repo}", "api")
            .replace("{provider}", "github")
            .replace("{id}", id);
        let url = format!("{}/api/v1{path}", kiln.url);
        for h in hostile_json(endpoint.field, API_LIMIT, endpoint.empty_is_valid) {
            let what = format!("{} {path}: {}", endpoint.method, h.what);
            let (status, body) = send(&kiln.http, endpoint.method, &url, &auth, &h).await;
            check_api_error(&what, status, &body);
            tried += 1;
        }
    }
    assert_eq!(snapshot(kiln, &s.rule, &s.webhook).await, before);
    println!("hostile API bodies tried: {tried}");
}

/// The hooks and `/registry/events`: hostile bodies, unsigned and signed with the source's secret
/// (so they get past verification to the parser), answer a 4xx with the JSON error and store
/// nothing.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_hook_and_registry_event_bodies_are_refused() {
    let s = setup().await;
    let kiln = &s.kiln;
    // A plain git server's source (`/hooks/git?source=acme/plain`), made before the snapshot.
    kiln.repo("acme", "plain").await;
    let (status, source) = kiln
        .put(
            "/namespaces/acme/repos/plain/source",
            json!({"provider": "git", "clone_url": s.clone_url, "webhook_secret": s.secret}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{source}");
    let before = snapshot(kiln, &s.rule, &s.webhook).await;
    let limit = kiln.server.app.config.hook_body_limit;
    let repository = json!({"clone_url": s.clone_url, "ssh_url": s.clone_url,
                            "git_url": s.clone_url, "html_url": s.clone_url});
    let gitlab_project = json!({"git_http_url": s.clone_url, "git_ssh_url": s.clone_url});
    let mut tried = 0;
    for (forge, event_header, event) in [
        ("github", "x-github-event", "push"),
        ("gitea", "x-gitea-event", "push"),
        ("gitlab", "x-gitlab-event", "Push Hook"),
    ] {
        let url = format!("{}/hooks/{forge}", kiln.url);
        // Bodies that name the source's repository, so they are routed to it and verified.
        let routed = |fields: Value| -> Vec<u8> {
            let mut body = fields;
            if forge == "gitlab" {
                body["project"] = gitlab_project.clone();
                body["object_kind"] = json!("push");
            } else {
                body["repository"] = repository.clone();
            }
            serde_json::to_vec(&body).unwrap()
        };
        let mut bodies = hostile_json("ref", limit, false);
        bodies.extend([
            hostile("a ref that is a number", JSON, routed(json!({"ref": 5, "before": "0".repeat(40), "after": "1".repeat(40)}))),
            hostile("a ref that is not full", JSON, routed(json!({"ref": "main", "before": "0".repeat(40), "after": "1".repeat(40)}))),
            hostile("commit ids that are not", JSON, routed(json!({"ref": "refs/heads/main", "before": "x", "after": "y"}))),
            hostile("a huge ref", JSON, routed(json!({"ref": format!("refs/heads/{}", "a".repeat(limit / 2)), "before": "0".repeat(40), "after": "1".repeat(40)}))),
            hostile("deep JSON for the ref", JSON, routed(json!({"ref": serde_json::from_str::<Value>(&deep_arrays(100)).unwrap(), "before": "0".repeat(40), "after": "1".repeat(40)}))),
            hostile("a ref with control characters", JSON, routed(json!({"ref": "refs/heads/\u{1b}[2Jmain", "before": "0".repeat(40), "after": "1".repeat(40)}))),
            hostile("deep JSON in the repository", JSON, [b"{\"repository\": ".as_slice(), deep_arrays(10_000).as_bytes(), b"}"].concat()),
        ]);
        for h in &bodies {
            for signed in [false, true] {
                let mut headers = vec![
                    (event_header, event.to_string()),
                    ("x-github-delivery", format!("hostile-{tried}")),
                    ("x-gitea-delivery", format!("hostile-{tried}")),
                    ("x-gitlab-event-uuid", format!("hostile-{tried}")),
                ];
                if signed {
                    let signature = github_signature(&s.secret, &h.body);
                    headers.push(("x-hub-signature-256", signature.clone()));
                    headers.push((
                        "x-gitea-signature",
                        signature.trim_start_matches("sha256=").to_string(),
                    ));
                    headers.push(("x-gitlab-token", s.secret.clone()));
                }
                let what = format!("/hooks/{forge} {} (signed: {signed})", h.what);
                let (status, body) = send(&kiln.http, "POST", &url, &headers, h).await;
                check_api_error(&what, status, &body);
                tried += 1;
            }
        }
    }
    // A plain git server's notification: the URL names the source, the body is `{ref, before,
    // after}`, signed `X-Kiln-Signature-256` like GitHub's.
    let url = format!("{}/hooks/git?source=acme/plain", kiln.url);
    let notification = |v: Value| serde_json::to_vec(&v).unwrap();
    let mut bodies = hostile_json("ref", limit, false);
    bodies.extend([
        hostile("a ref that is a number", JSON, notification(json!({"ref": 5, "before": "0".repeat(40), "after": "1".repeat(40)}))),
        hostile("a ref that is not full", JSON, notification(json!({"ref": "main", "before": "0".repeat(40), "after": "1".repeat(40)}))),
        hostile("commit ids that are not", JSON, notification(json!({"ref": "refs/heads/main", "before": "x", "after": "y"}))),
        hostile("SHA-256 object ids", JSON, notification(json!({"ref": "refs/heads/main", "before": "0".repeat(64), "after": "1".repeat(64)}))),
        hostile("both ids zero", JSON, notification(json!({"ref": "refs/heads/main", "before": "0".repeat(40), "after": "0".repeat(40)}))),
        hostile("a huge ref", JSON, notification(json!({"ref": format!("refs/heads/{}", "a".repeat(limit / 2)), "before": "0".repeat(40), "after": "1".repeat(40)}))),
        hostile("a ref with control characters", JSON, notification(json!({"ref": "refs/heads/\u{1b}[2Jmain", "before": "0".repeat(40), "after": "1".repeat(40)}))),
    ]);
    for h in &bodies {
        for signed in [false, true] {
            let mut headers = vec![("x-kiln-delivery", format!("hostile-{tried}"))];
            if signed {
                headers.push(("x-kiln-signature-256", github_signature(&s.secret, &h.body)));
            }
            let what = format!("/hooks/git {} (signed: {signed})", h.what);
            let (status, body) = send(&kiln.http, "POST", &url, &headers, h).await;
            check_api_error(&what, status, &body);
            tried += 1;
        }
    }
    let (_, events) = kiln.get("/namespaces/acme/repos/plain/events").await;
    assert_eq!(events, json!([]), "nothing hostile is stored");

    let url = format!("{}/registry/events", kiln.url);
    let auth = [("authorization", format!("Bearer {EVENTS_TOKEN}"))];
    let mut bodies = hostile_json("events", EVENTS_LIMIT, false);
    bodies.push(hostile(
        "events of the wrong shape",
        "application/vnd.docker.distribution.events.v1+json",
        r#"{"events": [{"action": 5}]}"#,
    ));
    for h in bodies {
        let (status, body) = send(&kiln.http, "POST", &url, &auth, &h).await;
        check_api_error(&format!("/registry/events {}", h.what), status, &body);
        tried += 1;
    }
    assert_eq!(snapshot(kiln, &s.rule, &s.webhook).await, before);
    println!("hostile hook and registry-event bodies tried: {tried}");
}

/// A form of the console: the path, and the field a long or broken value goes into.
struct ConsoleForm {
    path: &'static str,
    field: &'static str,
}

const CONSOLE_FORMS: &[ConsoleForm] = &[
    ConsoleForm {
        path: "/new",
        field: "name",
    },
    ConsoleForm {
        path: "/repos/acme/api/edit",
        field: "summary",
    },
    ConsoleForm {
        path: "/repos/acme/api/source",
        field: "clone_url",
    },
    ConsoleForm {
        path: "/repos/acme/api/rules/new",
        field: "name",
    },
    ConsoleForm {
        path: "/repos/acme/api/rules/{rule}/edit",
        field: "name",
    },
    ConsoleForm {
        path: "/repos/acme/api/rules/{rule}/build",
        field: "ref",
    },
    ConsoleForm {
        path: "/repos/acme/api/webhooks",
        field: "url",
    },
    ConsoleForm {
        path: "/repos/acme/api/webhooks/{webhook}/edit",
        field: "url",
    },
    ConsoleForm {
        path: "/admin/namespaces",
        field: "name",
    },
    ConsoleForm {
        path: "/admin/tokens",
        field: "name",
    },
];

/// A 4xx HTML page (the console's error page), never a 5xx.
fn check_console_error(what: &str, status: StatusCode, content_type: &str, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    assert!(status.is_client_error(), "{what}: {status} {text:.300}");
    assert!(
        content_type.starts_with("text/html"),
        "{what}: {status} {content_type}: {text:.300}"
    );
    assert!(text.contains("<html"), "{what}: {text:.300}");
}

/// The console's forms (and `/login`): hostile bodies with a valid session and CSRF token answer
/// the console's HTML error page with a 4xx, and nothing is written.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_console_forms_answer_the_error_page_and_change_nothing() {
    let s = setup().await;
    let kiln = &s.kiln;
    let before = snapshot(kiln, &s.rule, &s.webhook).await;
    // Signed in by hand, the session cookie sent with each request: this client follows no
    // redirect, so a form that went through (303) would show.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookies = sign_in(&http, &kiln.url).await;
    let page = http
        .get(format!("{}/new", kiln.url))
        .header("cookie", &cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csrf = csrf_of(&page.text().await.unwrap());
    let form = "application/x-www-form-urlencoded";
    let mut tried = 0;
    for f in CONSOLE_FORMS {
        let path = f
            .path
            .replace("{rule}", &s.rule)
            .replace("{webhook}", &s.webhook);
        let url = format!("{}{path}", kiln.url);
        let field = f.field;
        let with_csrf = |rest: &str| format!("_csrf={csrf}&{rest}");
        let cases = vec![
            hostile(
                "a value just over the form limit",
                form,
                with_csrf(&format!("{field}={}", "a".repeat(FORM_LIMIT))),
            ),
            hostile(
                "a value just under the form limit",
                form,
                with_csrf(&format!("{field}={}", "a".repeat(FORM_LIMIT - 200))),
            ),
            hostile(
                "invalid UTF-8, percent-encoded",
                form,
                with_csrf(&format!("{field}=%FF%FEa")),
            ),
            hostile(
                "invalid UTF-8 bytes",
                form,
                [with_csrf(&format!("{field}=")).as_bytes(), b"\xff\xfe"].concat(),
            ),
            hostile(
                "a value with control characters",
                form,
                with_csrf(&format!("{field}=a%00b%0Dc")),
            ),
            hostile(
                "JSON",
                JSON,
                format!("{{\"_csrf\": \"{csrf}\", \"{field}\": \"x\"}}"),
            ),
            hostile("an empty body", form, ""),
            hostile("deep JSON", JSON, deep_arrays(10_000)),
            hostile("binary", "application/octet-stream", vec![0u8, 255, 1, 2]),
        ];
        for h in cases {
            let what = format!("POST {path}: {}", h.what);
            if h.what.contains("just over") {
                let headers = [("cookie", cookies.clone())];
                let (status, content_type, body) = send_raw("POST", &url, &headers, &h).await;
                check_console_error(&what, status, &content_type, &body);
                tried += 1;
                continue;
            }
            let resp = http
                .post(&url)
                .header(CONTENT_TYPE, h.content_type)
                .header("cookie", &cookies)
                .body(h.body.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let status = resp.status();
            let content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = resp.bytes().await.unwrap();
            check_console_error(&what, status, &content_type, &body);
            tried += 1;
        }
    }
    // `/login`, signed out: the same bodies answer its error page.
    let login = format!("{}/login", kiln.url);
    for h in [
        hostile(
            "a token just over the form limit",
            form,
            format!("token={}", "a".repeat(FORM_LIMIT)),
        ),
        hostile(
            "a token just under the form limit",
            form,
            format!("token={}", "a".repeat(FORM_LIMIT - 10)),
        ),
        hostile("invalid UTF-8", form, "token=%FF&_csrf=x"),
        hostile("JSON", JSON, r#"{"token": "x"}"#),
        hostile("deep JSON", JSON, deep_arrays(10_000)),
        hostile("an empty body", form, ""),
    ] {
        let what = format!("POST /login: {}", h.what);
        let (status, content_type, body) = send_raw("POST", &login, &[], &h).await;
        check_console_error(&what, status, &content_type, &body);
        tried += 1;
    }
    assert_eq!(snapshot(kiln, &s.rule, &s.webhook).await, before);
    println!("hostile console forms tried: {tried}");
}

/// The first `_csrf` field of a page.
fn csrf_of(html: &str) -> String {
    scraper::Html::parse_document(html)
        .select(&scraper::Selector::parse("input[name=_csrf]").unwrap())
        .next()
        .and_then(|e| e.value().attr("value"))
        .expect("a _csrf field")
        .to_string()
}

/// Signs in through `/login` as the admin: the `Cookie` header of the session.
async fn sign_in(http: &reqwest::Client, url: &str) -> String {
    let page = http.get(format!("{url}/login")).send().await.unwrap();
    let login_cookie = set_cookies(&page);
    let csrf = csrf_of(&page.text().await.unwrap());
    let resp = http
        .post(format!("{url}/login"))
        .header("cookie", &login_cookie)
        .form(&[("token", ADMIN_TOKEN), ("_csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    set_cookies(&resp)
}

fn set_cookies(resp: &reqwest::Response) -> String {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter(|pair| !pair.ends_with('='))
        .collect::<Vec<_>>()
        .join("; ")
}
