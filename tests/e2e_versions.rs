//! Image repositories as users manage them: versions from builds and from plain `docker push` (through
//! the registry's real notifications), history of overwritten tags, every hiding rule, registry sync,
//! deletion, the "why didn't it build?" events and the rules preview. Real dockerd, registry and git.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::kiln::Kiln;
use support::{GitRepo, Registry, docker_build_and_push, github_push_payload, wait_until};

const EVENTS_TOKEN: &str = support::kiln::REGISTRY_EVENTS_TOKEN;
const ZERO: &str = "0000000000000000000000000000000000000000";

async fn versions(kiln: &Kiln, ns: &str, repo: &str, include_hidden: bool) -> Vec<Value> {
    let (s, body) = kiln
        .get(&format!(
            "/namespaces/{ns}/repos/{repo}/versions?include_hidden={include_hidden}"
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body.as_array().unwrap().clone()
}

async fn wait_version(kiln: &Kiln, ns: &str, repo: &str, tag: &str, digest: &str) -> Value {
    let path = format!("/namespaces/{ns}/repos/{repo}/versions/{tag}");
    wait_until(
        &format!("{ns}/{repo}:{tag} = {digest} in versions"),
        Duration::from_secs(30),
        || async { kiln.get(&path).await.1["digest"] == digest },
    )
    .await;
    kiln.get(&path).await.1
}

fn scratch(content: &str) -> (String, Vec<(&'static str, String)>) {
    (
        "FROM scratch\nCOPY f.txt /f.txt\n".to_string(),
        vec![("f.txt", content.to_string())],
    )
}

async fn push_by_hand(registry: &Registry, repo: &str, tag: &str, content: &str) -> String {
    let (dockerfile, files) = scratch(content);
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    docker_build_and_push(&registry.image(repo, tag), &dockerfile, &files).await
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_push_creates_versions_and_an_overwritten_tag_keeps_its_history() {
    let (registry, kiln) = Kiln::start_notified(&[]).await;
    kiln.post("/namespaces", json!({"name": "acme"})).await;
    kiln.post("/namespaces/acme/repos", json!({"name": "plain"}))
        .await;
    let unique = format!("{:?}", std::time::SystemTime::now());

    let d1 = push_by_hand(&registry, "acme/plain", "1.0", &format!("one {unique}")).await;
    let v = wait_version(&kiln, "acme", "plain", "1.0", &d1).await;
    assert_eq!(v["source"], "push");
    assert!(v["build_id"].is_null());
    assert_eq!(v["image"], format!("{}/acme/plain:1.0", registry.addr));
    assert_eq!(v["history"], json!([]));

    let d2 = push_by_hand(&registry, "acme/plain", "1.0", &format!("two {unique}")).await;
    assert_ne!(d1, d2);
    let v = wait_version(&kiln, "acme", "plain", "1.0", &d2).await;
    assert_eq!(v["history"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["history"][0]["digest"], d1);
    assert_eq!(
        versions(&kiln, "acme", "plain", false).await.len(),
        1,
        "one row per tag"
    );

    // A namespace kiln knows, a repository it doesn't: created as a plain repository on first push.
    let d3 = push_by_hand(
        &registry,
        "acme/newcomer",
        "latest",
        &format!("three {unique}"),
    )
    .await;
    wait_version(&kiln, "acme", "newcomer", "latest", &d3).await;
    let (_, repo) = kiln.get("/namespaces/acme/repos/newcomer").await;
    assert_eq!(repo["ci"], false);

    // Without the token, or with a wrong one, the endpoint refuses.
    let http = reqwest::Client::new();
    let body = std::fs::read("tests/data/registry/manifest-push.json").unwrap();
    for auth in [None, Some("Bearer nope")] {
        let mut req = http
            .post(format!("{}/registry/events", kiln.url))
            .body(body.clone());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        assert_eq!(req.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    let r = http
        .post(format!("{}/registry/events", kiln.url))
        .bearer_auth(EVENTS_TOKEN)
        .body("not an envelope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

/// The registry retries a notification kiln missed (kiln was down, or answered 5xx), so one can come
/// after the tag has moved on: recording it would move the tag back and announce the old image again.
#[tokio::test(flavor = "multi_thread")]
async fn a_late_registry_notification_never_moves_a_tag_back() {
    let (registry, kiln) = Kiln::start_notified(&[]).await;
    kiln.post("/namespaces", json!({"name": "acme"})).await;
    kiln.post("/namespaces/acme/repos", json!({"name": "plain"}))
        .await;
    let receiver = support::RecordingServer::start().await;
    let (s, hook) = kiln
        .post(
            "/namespaces/acme/repos/plain/webhooks",
            json!({"name": "watch", "url": receiver.url, "events": ["image.pushed"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");
    let unique = format!("{:?}", std::time::SystemTime::now());
    let d1 = push_by_hand(&registry, "acme/plain", "1.0", &format!("one {unique}")).await;
    wait_version(&kiln, "acme", "plain", "1.0", &d1).await;
    let d2 = push_by_hand(&registry, "acme/plain", "1.0", &format!("two {unique}")).await;
    wait_version(&kiln, "acme", "plain", "1.0", &d2).await;

    // The first push's notification again, as the registry's retry sends it: a new event id.
    let envelope = json!({"events": [support::manifest_push("acme/plain", "1.0", &d1)]});
    let r = reqwest::Client::new()
        .post(format!("{}/registry/events", kiln.url))
        .bearer_auth(EVENTS_TOKEN)
        .json(&envelope)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["new_versions"], 0, "{answer}");

    let (_, v) = kiln.get("/namespaces/acme/repos/plain/versions/1.0").await;
    assert_eq!(
        v["digest"], d2,
        "the tag stays where the registry has it: {v}"
    );
    assert_eq!(v["history"].as_array().unwrap().len(), 1, "{v}");
    // Announced once per digest, the late notice not at all (it would be queued with the version).
    let hook_id = hook["id"].as_str().unwrap();
    let (s, list) = kiln
        .get(&format!(
            "/namespaces/acme/repos/plain/webhooks/{hook_id}/deliveries?limit=200"
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let events: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["image.pushed", "image.pushed"], "{list}");
    wait_until(
        "both announcements at the receiver",
        Duration::from_secs(30),
        || async { receiver.requests().len() >= 2 },
    )
    .await;
    let mut announced: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.json()["digest"].as_str().unwrap().to_string())
        .collect();
    announced.sort();
    let mut expected = vec![d1.clone(), d2.clone()];
    expected.sort();
    assert_eq!(announced, expected);

    // A notification of what the registry holds is still recorded (the check is not a blanket no).
    let d3 = push_by_hand(&registry, "acme/plain", "2.0", &format!("three {unique}")).await;
    wait_version(&kiln, "acme", "plain", "2.0", &d3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_records_a_build_version_and_the_registry_echo_does_not_change_it() {
    let (_registry, kiln) = Kiln::start_notified(&[]).await;
    let git = GitRepo::new();
    git.write("Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n");
    git.write("a.txt", git.clone_url());
    let sha = git.commit("a");
    git.push("main");
    let secret = kiln.ci_repo("acme", "built", &git.clone_url()).await;
    kiln.rule("acme", "built", json!({"type": "branch", "name": "main"}))
        .await;
    let payload = github_push_payload(&git.clone_url(), "refs/heads/main", ZERO, &sha, false);
    let (_, body) = kiln.github_hook("push", "v-1", &secret, &payload).await;
    let build = kiln.wait_build(body["builds"][0].as_str().unwrap()).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    // Let the registry's notification of kiln's own push arrive, then check nothing changed.
    let digest = build["digest"].as_str().unwrap();
    wait_until(
        "the registry's notification of kiln's own push",
        Duration::from_secs(30),
        || async {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM registry_events")
                .fetch_one(&kiln.server.app.db)
                .await
                .unwrap();
            n > 0
        },
    )
    .await;
    let r = kiln.post("/registry/sync", json!({})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let v = wait_version(&kiln, "acme", "built", "main", digest).await;
    assert_eq!(v["source"], "build");
    assert_eq!(v["build_id"], build["id"]);
    assert_eq!(v["commit"], sha);
}

#[tokio::test(flavor = "multi_thread")]
async fn hiding_follows_every_rule() {
    let (registry, kiln) = Kiln::start_notified(&[]).await;
    let git = GitRepo::new();
    git.write("Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n");
    git.write("a.txt", git.clone_url());
    let sha = git.commit("a");
    git.push("main");
    let secret = kiln.ci_repo("acme", "shy", &git.clone_url()).await;
    let rule = kiln
        .rule("acme", "shy", json!({"type": "branch", "name": "main"}))
        .await;
    kiln.post("/namespaces/acme/repos", json!({"name": "open"}))
        .await;
    let unique = format!("{:?}", std::time::SystemTime::now());
    let d_old = push_by_hand(&registry, "acme/shy", "old", &format!("old {unique}")).await;
    wait_version(&kiln, "acme", "shy", "old", &d_old).await;

    // Hide: out of the list unless asked for; all its versions hidden.
    let (s, r) = kiln
        .post("/namespaces/acme/repos/shy/hide", json!({}))
        .await;
    assert_eq!((s, r["hidden"].clone()), (StatusCode::OK, json!(true)));
    assert_eq!(
        names(&kiln.get("/namespaces/acme/repos").await.1),
        vec!["open"]
    );
    assert_eq!(
        names(
            &kiln
                .get("/namespaces/acme/repos?include_hidden=true")
                .await
                .1
        ),
        vec!["open", "shy"]
    );
    assert!(versions(&kiln, "acme", "shy", false).await.is_empty());
    assert_eq!(
        versions(&kiln, "acme", "shy", true).await[0]["hidden"],
        true
    );

    // Its rules are inactive: a push creates no build (and the event says why); build now is 409.
    let payload = github_push_payload(&git.clone_url(), "refs/heads/main", ZERO, &sha, false);
    let (s, body) = kiln.github_hook("push", "h-1", &secret, &payload).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(body["builds"], json!([]));
    let (_, events) = kiln.get("/namespaces/acme/repos/shy/events").await;
    assert_eq!(
        events[0]["rules"][0]["skipped"]["reason"], "repository_hidden",
        "{events}"
    );
    let (s, err) = kiln
        .post(
            &format!("/namespaces/acme/repos/shy/rules/{rule}/builds"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(err["error"]["code"], "repository_hidden");
    assert!(err["error"]["message"].as_str().unwrap().contains("unhide"));

    // docker pull keeps working while hidden.
    let pulled = support::docker_async(&["pull", &registry.image("acme/shy", "old")]).await;
    assert!(pulled.contains(&d_old), "{pulled}");

    // Unhiding the repository does not unhide its versions; a single version can be unhidden.
    kiln.post("/namespaces/acme/repos/shy/unhide", json!({}))
        .await;
    assert!(versions(&kiln, "acme", "shy", false).await.is_empty());
    let (s, v) = kiln
        .post("/namespaces/acme/repos/shy/versions/old/unhide", json!({}))
        .await;
    assert_eq!((s, v["hidden"].clone()), (StatusCode::OK, json!(false)));
    assert_eq!(versions(&kiln, "acme", "shy", false).await.len(), 1);
    let (s, _) = kiln
        .post("/namespaces/acme/repos/shy/versions/old/hide", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(versions(&kiln, "acme", "shy", false).await.is_empty());
    let (s, _) = kiln
        .post("/namespaces/acme/repos/shy/versions/nope/hide", json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A docker push to a hidden repository unhides it, and the new version is visible; the
    // repository's webhooks fire while it is hidden.
    kiln.post("/namespaces/acme/repos/shy/hide", json!({}))
        .await;
    let receiver = support::RecordingServer::start().await;
    let (s, hook) = kiln
        .post(
            "/namespaces/acme/repos/shy/webhooks",
            json!({"name": "deploy", "url": format!("{}/hook", receiver.url)}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");
    let d_new = push_by_hand(&registry, "acme/shy", "new", &format!("new {unique}")).await;
    wait_version(&kiln, "acme", "shy", "new", &d_new).await;
    let got = receiver
        .wait_for(
            "the hidden repository's webhook to fire",
            Duration::from_secs(30),
            |r| String::from_utf8_lossy(&r.body).contains(&d_new),
        )
        .await;
    let body: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body["event"], "image.pushed");
    assert_eq!(body["tag"], "new");
    assert_eq!(body["source"], "push");
    let (_, repo) = kiln.get("/namespaces/acme/repos/shy").await;
    assert_eq!(repo["hidden"], false);
    let visible: Vec<_> = versions(&kiln, "acme", "shy", false)
        .await
        .iter()
        .map(|v| v["tag"].clone())
        .collect();
    assert_eq!(
        visible,
        vec![json!("new")],
        "the old version stays hidden, the new one shows"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_sync_finds_what_was_pushed_while_kiln_was_away_and_deletion_cleans_the_registry()
{
    support::ensure_docker();
    let registry = Registry::start(); // no notifications: only a sync can learn of these pushes
    let unique = format!("{:?}", std::time::SystemTime::now());
    let d1 = push_by_hand(&registry, "acme/early", "v1", &format!("v1 {unique}")).await;
    let d2 = push_by_hand(&registry, "acme/early", "v2", &format!("v2 {unique}")).await;
    push_by_hand(&registry, "elsewhere/thing", "x", &format!("x {unique}")).await;

    let kiln = Kiln::start(&registry, &[]).await;
    kiln.post("/namespaces", json!({"name": "acme"})).await;
    // kiln also syncs once at start, in the background: this sync or that one adds the two versions.
    let (s, report) = kiln.post("/registry/sync", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["repositories"], 1, "{report}");
    assert!(
        report["versions_added"] == 2 || report["versions_added"] == 0,
        "{report}"
    );
    assert_eq!(report["skipped"], json!(["elsewhere/thing"]));
    let tags: Vec<_> = versions(&kiln, "acme", "early", false)
        .await
        .iter()
        .map(|v| (v["tag"].clone(), v["digest"].clone()))
        .collect();
    assert!(
        tags.contains(&(json!("v1"), json!(d1.clone())))
            && tags.contains(&(json!("v2"), json!(d2.clone()))),
        "{tags:?}"
    );

    // A push while kiln is down is found by the sync at the next start.
    let support::kiln::Kiln {
        server, data_dir, ..
    } = kiln;
    drop(server);
    let d3 = push_by_hand(&registry, "acme/early", "v3", &format!("v3 {unique}")).await;
    let kiln = Kiln::start_in(&registry, &[], data_dir).await;
    wait_version(&kiln, "acme", "early", "v3", &d3).await;
    registry.delete_manifest("acme/early", &d3).await;

    // Again: nothing new. A tag deleted in the registry goes from the versions.
    registry.delete_manifest("acme/early", &d2).await;
    let (_, report) = kiln.post("/registry/sync", json!({})).await;
    assert_eq!(
        (
            report["versions_added"].clone(),
            report["versions_removed"].clone()
        ),
        (json!(0), json!(2)),
        "{report}"
    );

    // Deleting the repository asks for confirmation, then removes its tags from the registry.
    let (s, _) = kiln.delete("/namespaces/acme/repos/early").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, report) = kiln
        .delete("/namespaces/acme/repos/early?confirm=early")
        .await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["registry_deleted"], json!(["v1"]));
    assert_eq!(report["registry_not_deleted"], json!([]));
    assert!(registry.tags("acme/early").await.is_empty());
    assert_eq!(
        kiln.get("/namespaces/acme/repos/early").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_sync_reads_every_page_of_a_real_registry() {
    support::ensure_docker();
    let registry = Registry::start();
    let unique = format!("{:?}", std::time::SystemTime::now());
    let digest = push_by_hand(&registry, "acme/many", "t1", &unique).await;
    let first = registry.image("acme/many", "t1");
    for tag in ["t2", "t3", "t4", "t5"] {
        let image = registry.image("acme/many", tag);
        support::docker_async(&["tag", &first, &image]).await;
        support::docker_async(&["push", &image]).await;
    }
    push_by_hand(&registry, "acme/other", "x", &format!("other {unique}")).await;
    push_by_hand(&registry, "elsewhere/thing", "x", &format!("x {unique}")).await;

    // Pages of 2: the catalog (3 repositories) takes two, followed through Distribution's Link header.
    let kiln = Kiln::start(&registry, &[("KILN_REGISTRY_PAGE_SIZE", "2")]).await;
    kiln.post("/namespaces", json!({"name": "acme"})).await;
    let (s, report) = kiln.post("/registry/sync", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["repositories"], 2, "{report}");
    assert_eq!(report["skipped"], json!(["elsewhere/thing"]), "{report}");
    assert_eq!(report["errors"], json!([]), "{report}");
    let mut tags: Vec<(Value, Value)> = versions(&kiln, "acme", "many", false)
        .await
        .iter()
        .map(|v| (v["tag"].clone(), v["digest"].clone()))
        .collect();
    tags.sort_by_key(|(t, _)| t.to_string());
    let want: Vec<(Value, Value)> = ["t1", "t2", "t3", "t4", "t5"]
        .iter()
        .map(|t| (json!(t), json!(digest)))
        .collect();
    assert_eq!(tags, want);
    assert_eq!(versions(&kiln, "acme", "other", false).await.len(), 1);
}

/// How a repository of [`FakeRegistry`] answers `GET /v2/{repo}/tags/list`.
#[derive(Clone)]
enum TagsAnswer {
    /// The tags, sorted, in pages as Distribution gives them.
    Tags(Vec<&'static str>),
    /// 404 with Distribution's `NAME_UNKNOWN` error body.
    NameUnknown,
    /// 500 with Distribution's `UNKNOWN` error body.
    ServerError,
    /// 200 with a body cut short.
    Truncated,
    /// A first page whose `Link` sends the client to another host.
    LinkElsewhere,
}

/// A registry's HTTP API answering as CNCF Distribution (v3) does: `GET /v2/_catalog` and
/// `GET /v2/{repo}/tags/list` in sorted pages of `?n=` entries (at most 3: like many registries it caps
/// the page size, and without `?n=` a page is 3 entries), each page but the last with
/// `Link: </v2/…?last=LAST&n=N>; rel="next"`; manifest `HEAD`/`GET` answering a
/// `Docker-Content-Digest` derived from `repo:tag`. What each repository answers can change mid-test.
struct FakeRegistry {
    addr: String,
    repos: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, TagsAnswer>>>,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

const FAKE_PAGE_CAP: usize = 3;

impl FakeRegistry {
    async fn start(repos: &[(&str, TagsAnswer)]) -> FakeRegistry {
        use axum::extract::State;
        use axum::http::{Method, StatusCode as S, Uri, header};
        use axum::response::{IntoResponse, Response};
        type Shared = (
            std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, TagsAnswer>>>,
            std::sync::Arc<std::sync::Mutex<Vec<String>>>,
        );

        fn page(all: &[String], query: &str, path: &str) -> (Vec<String>, Option<String>) {
            let params: std::collections::HashMap<String, String> =
                form_urlencoded::parse(query.as_bytes())
                    .into_owned()
                    .collect();
            let n = params
                .get("n")
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(FAKE_PAGE_CAP)
                .min(FAKE_PAGE_CAP);
            let after: Vec<String> = all
                .iter()
                .filter(|e| params.get("last").is_none_or(|l| e.as_str() > l.as_str()))
                .cloned()
                .collect();
            let page: Vec<String> = after.iter().take(n).cloned().collect();
            let link = (after.len() > n).then(|| {
                let query: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("last", page.last().unwrap())
                    .append_pair("n", &n.to_string())
                    .finish();
                format!("<{path}?{query}>; rel=\"next\"")
            });
            (page, link)
        }

        fn distribution_error(status: S, code: &str, message: &str) -> Response {
            (
                status,
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                json!({"errors": [{"code": code, "message": message, "detail": null}]}).to_string(),
            )
                .into_response()
        }

        fn json_page(body: Value, link: Option<String>) -> Response {
            let mut resp = (
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                body.to_string(),
            )
                .into_response();
            if let Some(link) = link {
                resp.headers_mut()
                    .insert(header::LINK, link.parse().unwrap());
            }
            resp
        }

        async fn answer(
            State((repos, requests)): State<Shared>,
            method: Method,
            uri: Uri,
        ) -> Response {
            let path = uri.path().to_string();
            let query = uri.query().unwrap_or_default().to_string();
            requests
                .lock()
                .unwrap()
                .push(format!("{method} {}", uri.path_and_query().unwrap()));
            let repos = repos.lock().unwrap().clone();
            if path == "/v2/" {
                return json_page(json!({}), None);
            }
            if path == "/v2/_catalog" {
                let names: Vec<String> = repos.keys().cloned().collect();
                let (page, link) = page(&names, &query, &path);
                return json_page(json!({"repositories": page}), link);
            }
            let Some(rest) = path.strip_prefix("/v2/") else {
                return S::NOT_FOUND.into_response();
            };
            if let Some(repo) = rest.strip_suffix("/tags/list") {
                return match repos.get(repo) {
                    None | Some(TagsAnswer::NameUnknown) => distribution_error(
                        S::NOT_FOUND,
                        "NAME_UNKNOWN",
                        "repository name not known to registry",
                    ),
                    Some(TagsAnswer::ServerError) => {
                        distribution_error(S::INTERNAL_SERVER_ERROR, "UNKNOWN", "unknown error")
                    }
                    Some(TagsAnswer::Truncated) => {
                        json_page_raw(&format!("{{\"name\":\"{repo}\",\"tags\":[\"x\",\"y"))
                    }
                    Some(TagsAnswer::LinkElsewhere) => json_page(
                        json!({"name": repo, "tags": ["x"]}),
                        Some(format!(
                            "<http://127.0.0.2:9/v2/{repo}/tags/list?last=x&n=1>; rel=\"next\""
                        )),
                    ),
                    Some(TagsAnswer::Tags(tags)) => {
                        let mut all: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
                        all.sort();
                        let (page, link) = page(&all, &query, &path);
                        json_page(json!({"name": repo, "tags": page}), link)
                    }
                };
            }
            if let Some((repo, tag)) = rest.split_once("/manifests/") {
                use sha2::Digest;
                let digest = format!(
                    "sha256:{}",
                    hex::encode(sha2::Sha256::digest(format!("{repo}:{tag}")))
                );
                return (
                    [
                        (
                            header::CONTENT_TYPE,
                            "application/vnd.docker.distribution.manifest.v2+json".to_string(),
                        ),
                        (
                            header::HeaderName::from_static("docker-content-digest"),
                            digest,
                        ),
                    ],
                    "{}",
                )
                    .into_response();
            }
            S::NOT_FOUND.into_response()
        }

        fn json_page_raw(body: &str) -> Response {
            (
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                body.to_string(),
            )
                .into_response()
        }

        let repos = std::sync::Arc::new(std::sync::Mutex::new(
            repos
                .iter()
                .map(|(name, answer)| (name.to_string(), answer.clone()))
                .collect(),
        ));
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let router = axum::Router::new()
            .fallback(answer)
            .with_state((repos.clone(), requests.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        FakeRegistry {
            addr,
            repos,
            requests,
            task,
        }
    }

    fn set(&self, repo: &str, answer: TagsAnswer) {
        self.repos.lock().unwrap().insert(repo.to_string(), answer);
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tags_of(kiln: &Kiln, repo: &str) -> Vec<String> {
    let mut tags: Vec<String> = versions(kiln, "acme", repo, true)
        .await
        .iter()
        .map(|v| v["tag"].as_str().unwrap().to_string())
        .collect();
    tags.sort();
    tags
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_sync_follows_tag_pages_and_never_takes_an_error_for_no_tags() {
    let fake = FakeRegistry::start(&[
        (
            "acme/paged",
            TagsAnswer::Tags(vec!["v1", "v2", "v3", "v4", "v5"]),
        ),
        ("acme/gone", TagsAnswer::Tags(vec!["x", "y"])),
        ("acme/broken", TagsAnswer::Tags(vec!["x", "y"])),
        ("acme/garbled", TagsAnswer::Tags(vec!["x", "y"])),
        ("acme/offsite", TagsAnswer::Tags(vec!["x", "y"])),
    ])
    .await;
    // The harness starts kiln against a registry; this test points it at the fake one instead.
    let unused = Registry::start();
    let kiln = Kiln::start(
        &unused,
        &[
            ("KILN_REGISTRY", fake.addr.as_str()),
            ("KILN_REGISTRY_PAGE_SIZE", "2"),
        ],
    )
    .await;
    kiln.post("/namespaces", json!({"name": "acme"})).await;

    // Five tags in pages of two: all five become versions.
    let (s, report) = kiln.post("/registry/sync", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["repositories"], 5, "{report}");
    assert_eq!(report["errors"], json!([]), "{report}");
    assert_eq!(
        tags_of(&kiln, "paged").await,
        ["v1", "v2", "v3", "v4", "v5"]
    );
    for repo in ["gone", "broken", "garbled", "offsite"] {
        assert_eq!(tags_of(&kiln, repo).await, ["x", "y"], "{repo}");
    }
    let asked = fake.requests();
    for page in [
        "GET /v2/acme/paged/tags/list?n=2",
        "GET /v2/acme/paged/tags/list?last=v2&n=2",
        "GET /v2/acme/paged/tags/list?last=v4&n=2",
        "GET /v2/_catalog?n=2",
        "GET /v2/_catalog?last=acme%2Fgarbled&n=2",
        "GET /v2/_catalog?last=acme%2Foffsite&n=2",
    ] {
        assert!(asked.iter().any(|r| r == page), "{page} not in {asked:#?}");
    }

    // Now the registry fails for four repositories, and v3 really is gone from the fifth.
    fake.set("acme/gone", TagsAnswer::NameUnknown);
    fake.set("acme/broken", TagsAnswer::ServerError);
    fake.set("acme/garbled", TagsAnswer::Truncated);
    fake.set("acme/offsite", TagsAnswer::LinkElsewhere);
    fake.set("acme/paged", TagsAnswer::Tags(vec!["v1", "v2", "v4", "v5"]));
    let (s, report) = kiln.post("/registry/sync", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["versions_removed"], 1, "only v3: {report}");
    assert_eq!(tags_of(&kiln, "paged").await, ["v1", "v2", "v4", "v5"]);
    for repo in ["gone", "broken", "garbled", "offsite"] {
        assert_eq!(
            tags_of(&kiln, repo).await,
            ["x", "y"],
            "{repo}: versions kept after an error"
        );
    }
    let errors: Vec<&str> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 4, "{report}");
    for (repo, why) in [
        ("acme/broken", "HTTP 500 UNKNOWN"),
        ("acme/garbled", "not the expected JSON"),
        ("acme/gone", "404 NAME_UNKNOWN"),
        ("acme/offsite", "on another host"),
    ] {
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&format!("{repo}: ")) && e.contains(why)),
            "no '{why}' error for {repo}: {errors:#?}"
        );
    }
    assert!(
        !fake.requests().iter().any(|r| r.contains("127.0.0.2")),
        "never followed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn events_say_why_each_rule_did_or_did_not_build_and_preview_shows_tags() {
    support::ensure_docker();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let git = GitRepo::new();
    git.write("Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n");
    git.write("a.txt", git.clone_url());
    git.commit("a");
    git.push("main");
    let secret = kiln.ci_repo("acme", "why", &git.clone_url()).await;
    let semver = kiln
        .rule(
            "acme",
            "why",
            json!({"type": "tag", "name": "/^v(\\d+)\\.(\\d+)\\.(\\d+)$/", "version": "{1}.{2}"}),
        )
        .await;
    let hub = kiln
        .rule(
            "acme",
            "why",
            json!({"type": "tag", "name": "v*", "version": "{sourceref}"}),
        )
        .await;
    let branch = kiln
        .rule("acme", "why", json!({"type": "branch", "name": "main"}))
        .await;
    let off = kiln
        .rule(
            "acme",
            "why",
            json!({"type": "tag", "name": "v*", "version": "x", "enabled": false}),
        )
        .await;
    let dup = kiln
        .rule(
            "acme",
            "why",
            json!({"type": "tag", "name": "v1.*", "version": "{tag}"}),
        )
        .await;

    let sha = git.tag("v1.2.3");
    git.push_tag("v1.2.3");

    // Preview first: exact tags, nothing built, nothing overwritten yet.
    let (s, preview) = kiln
        .get(&format!(
            "/namespaces/acme/repos/why/rules/preview?ref=refs/tags/v1.2.3&commit={sha}"
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{preview}");
    let tags: Vec<_> = preview["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["tag"].as_str().unwrap().to_string())
        .collect();
    assert!(
        tags.contains(&"1.2".to_string()) && tags.contains(&"v1.2.3".to_string()),
        "{preview}"
    );
    assert!(
        preview["builds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["would_overwrite"] == false)
    );
    assert!(kiln.builds("acme", "why").await.is_empty());

    let payload = github_push_payload(&git.clone_url(), "refs/tags/v1.2.3", ZERO, &sha, false);
    let (s, body) = kiln.github_hook("push", "w-1", &secret, &payload).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    let ids: Vec<String> = body["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids.len(),
        tags.len(),
        "preview and push agree: {body} vs {preview}"
    );
    for id in &ids {
        assert_eq!(kiln.wait_build(id).await["status"], "succeeded");
    }
    let (s, again) = kiln.github_hook("push", "w-1", &secret, &payload).await;
    assert_eq!(s, StatusCode::OK, "{again}");

    let (_, events) = kiln.get("/namespaces/acme/repos/why/events").await;
    let event = &events[0];
    assert_eq!(event["delivery_id"], "w-1");
    assert_eq!(event["duplicates"], 1);
    assert_eq!(event["builds"].as_array().unwrap().len(), ids.len());
    let decision = |rule: &str| {
        event["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rule_id"] == rule)
            .unwrap()
            .clone()
    };
    assert_eq!(decision(&semver)["tag"], "1.2");
    assert_eq!(decision(&hub)["tag"], "v1.2.3");
    assert_eq!(decision(&branch)["skipped"]["reason"], "wrong_type");
    assert_eq!(decision(&off)["skipped"]["reason"], "rule_disabled");
    assert_eq!(
        decision(&dup)["skipped"]["reason"],
        "same_tag_as",
        "two rules, one tag: one build"
    );
    assert!(
        decision(&branch)["skipped"]["message"]
            .as_str()
            .unwrap()
            .len()
            > 10
    );

    // Now the tags exist: the preview says a push would overwrite them.
    let (_, preview) = kiln
        .get(&format!(
            "/namespaces/acme/repos/why/rules/preview?ref=refs/tags/v1.2.3&commit={sha}"
        ))
        .await;
    assert!(
        preview["builds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["would_overwrite"] == true),
        "{preview}"
    );
    let (s, err) = kiln
        .get("/namespaces/acme/repos/why/rules/preview?ref=main&commit=abc")
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"]["field"], "ref");

    // A skip marker in the head commit message: nothing builds, and the event says so.
    let mut skip = github_push_payload(
        &git.clone_url(),
        "refs/heads/main",
        ZERO,
        &git.head(),
        false,
    );
    skip["head_commit"]["message"] = json!("docs only [skip ci]");
    let (_, body) = kiln.github_hook("push", "w-2", &secret, &skip).await;
    assert_eq!(body["builds"], json!([]));
    let (_, events) = kiln.get("/namespaces/acme/repos/why/events").await;
    let d = events[0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule_id"] == branch)
        .unwrap()
        .clone();
    assert_eq!(d["skipped"]["reason"], "skip_marker", "{d}");
    drop(registry);
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_the_source_makes_a_plain_repository_and_keeps_disabled_rules_and_history() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let git = GitRepo::new();
    git.write("Dockerfile", "FROM scratch\n");
    git.commit("a");
    git.push("main");
    kiln.ci_repo("acme", "was-ci", &git.clone_url()).await;
    let rule = kiln
        .rule("acme", "was-ci", json!({"type": "branch", "name": "main"}))
        .await;
    assert_eq!(
        kiln.get("/namespaces/acme/repos/was-ci").await.1["ci"],
        true
    );
    let (s, _) = kiln.delete("/namespaces/acme/repos/was-ci/source").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        kiln.get("/namespaces/acme/repos/was-ci").await.1["ci"],
        false
    );
    let (_, rules) = kiln.get("/namespaces/acme/repos/was-ci/rules").await;
    assert_eq!(rules[0]["id"], rule);
    assert_eq!(rules[0]["enabled"], false);
    assert_eq!(
        kiln.get("/namespaces/acme/repos/was-ci/source").await.0,
        StatusCode::NOT_FOUND
    );
    let (s, err) = kiln
        .post(
            &format!("/namespaces/acme/repos/was-ci/rules/{rule}/builds"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{err}");
}
