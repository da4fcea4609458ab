//! The outbound guard end to end (issue 11, hostile input and outbound guards): a webhook to an
//! IPv6 form of a loopback address is refused saying why; proxy settings in the environment are
//! never used, a configured `KILN_OUTBOUND_PROXY` is; a git source on the loopback address is
//! refused unless `KILN_GIT_ALLOW` opens it, when it is linked and again when it is fetched.
//! Real kiln (in process and the binary), real registry, real git server over HTTP, real
//! receivers.

mod support;

use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::kiln::Kiln;
use support::kiln_process::KilnProcess;
use support::{GitHttpServer, GitRepo, RecordingServer, Registry};

/// A repository whose `main` builds an image from scratch, and the directory of its bare
/// repository (what [`GitHttpServer`] serves).
fn repository(name: &str) -> (GitRepo, PathBuf) {
    let git = GitRepo::named(name);
    git.write("Dockerfile", "FROM scratch\nCOPY hello.txt /hello.txt\n");
    git.write("hello.txt", format!("hello {}\n", git.clone_url()));
    git.commit("first");
    git.push("main");
    let dir = git.bare.parent().unwrap().to_path_buf();
    (git, dir)
}

/// A new webhook of `acme/api` posting to `url` (each with a name of its own).
async fn webhook(kiln: &support::kiln::KilnApi, url: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (s, hook) = kiln
        .post(
            "/namespaces/acme/repos/api/webhooks",
            json!({"name": format!("hook-{n}"), "url": url}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");
    hook["id"].as_str().unwrap().to_string()
}

async fn test_delivery(kiln: &support::kiln::KilnApi, hook: &str) -> Value {
    let (s, d) = kiln
        .post(
            &format!("/namespaces/acme/repos/api/webhooks/{hook}/test"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    d
}

async fn build_now(kiln: &support::kiln::KilnApi, rule: &str) -> Value {
    let (s, b) = kiln
        .post(
            &format!("/namespaces/acme/repos/app/rules/{rule}/builds"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    kiln.wait_build(b["id"].as_str().unwrap()).await
}

/// `64:ff9b::7f00:1` is the NAT64 form of 127.0.0.1: refused even with 127.0.0.1 allow-listed (it
/// is another address), the delivery record saying what it carries, and nothing is sent.
#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_to_a_nat64_form_of_loopback_is_refused_saying_why() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[("KILN_WEBHOOK_ALLOW", "127.0.0.1")]).await;
    kiln.repo("acme", "api").await;
    let receiver = RecordingServer::start().await;
    let port = receiver.addr.rsplit_once(':').unwrap().1;
    for (url, carried) in [
        (format!("http://[64:ff9b::7f00:1]:{port}/hook"), "NAT64"),
        (format!("http://[::ffff:7f00:1]:{port}/hook"), "IPv4-mapped"),
        (
            format!("http://[::127.0.0.1]:{port}/hook"),
            "IPv4-compatible",
        ),
        (format!("http://[2002:7f00:1::1]:{port}/hook"), "6to4"),
    ] {
        let hook = webhook(&kiln, &url).await;
        let d = test_delivery(&kiln, &hook).await;
        assert_eq!(d["status"], "failed", "{url}: {d}");
        let error = d["error"].as_str().unwrap_or_default();
        for word in [
            "refused",
            carried,
            "carrying 127.0.0.1, a loopback address",
            "KILN_WEBHOOK_ALLOW",
        ] {
            assert!(error.contains(word), "{url}: '{word}' not in: {error}");
        }
        // The stored record says the same.
        let (s, record) = kiln
            .get(&format!("/deliveries/{}", d["id"].as_str().unwrap()))
            .await;
        assert_eq!(s, StatusCode::OK, "{record}");
        assert_eq!(record["error"], d["error"], "{record}");
        assert_eq!(record["response"], Value::Null, "{record}");
    }
    // The allow-listed 127.0.0.1 itself is delivered to: only the IPv6 forms were refused.
    let hook = webhook(&kiln, &format!("{}/direct", receiver.url)).await;
    let d = test_delivery(&kiln, &hook).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    let paths: Vec<String> = receiver.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/direct"], "only the allowed address was sent to");
}

/// The real binary, started with every proxy variable pointing at a recording server: webhook
/// deliveries, the registry client (`/healthz`) and git fetches all go direct, and the "proxy"
/// sees nothing.
#[tokio::test(flavor = "multi_thread")]
async fn proxy_settings_in_the_environment_are_ignored() {
    support::ensure_docker();
    let registry = Registry::start();
    let proxy = RecordingServer::start().await;
    let receiver = RecordingServer::start().await;
    let (_git, dir) = repository("app");
    let git_server = GitHttpServer::start(&dir, None).await;
    let kiln = KilnProcess::start(
        &registry,
        &[
            ("HTTP_PROXY", proxy.url.as_str()),
            ("HTTPS_PROXY", proxy.url.as_str()),
            ("ALL_PROXY", proxy.url.as_str()),
            ("http_proxy", proxy.url.as_str()),
            ("https_proxy", proxy.url.as_str()),
            ("all_proxy", proxy.url.as_str()),
            // Nothing excepted from the proxy (not even loopback): only kiln's own choice keeps
            // its requests direct.
            ("NO_PROXY", ""),
            ("no_proxy", ""),
            ("KILN_WEBHOOK_ALLOW", "127.0.0.1"),
        ],
    )
    .await;
    kiln.repo("acme", "api").await;
    let hook = webhook(&kiln, &format!("{}/hook", receiver.url)).await;
    let d = test_delivery(&kiln, &hook).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(receiver.requests().len(), 1, "delivered directly");

    let resp = kiln
        .http
        .get(format!("{}/healthz", kiln.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let health: Value = resp.json().await.unwrap();
    assert_eq!(health["registry"]["status"], "ok", "{health}");

    kiln.ci_repo("acme", "app", &format!("{}/{}", git_server.url, "app.git"))
        .await;
    let rule = kiln
        .rule("acme", "app", json!({"type": "branch", "name": "main"}))
        .await;
    let build = build_now(&kiln, &rule).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    assert!(
        !git_server.requests().is_empty(),
        "the fetch went to the git server"
    );
    assert!(
        proxy.requests().is_empty(),
        "the environment's proxy was used: {:?}",
        proxy
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    );
}

/// `KILN_OUTBOUND_PROXY` is used for deliveries when set (the proxy's loopback name is the
/// operator's choice, so it passes the guard), and a webhook host the guard refuses is still
/// refused before anything goes to the proxy.
#[tokio::test(flavor = "multi_thread")]
async fn a_configured_outbound_proxy_carries_deliveries() {
    let registry = Registry::start();
    let proxy = RecordingServer::start().await;
    let kiln = Kiln::start(&registry, &[("KILN_OUTBOUND_PROXY", proxy.url.as_str())]).await;
    kiln.repo("acme", "api").await;
    // A public address (documentation ranges are refused, so a real public one): nothing listens
    // there from this machine, but the proxy answers for it.
    let hook = webhook(&kiln, "http://93.184.215.14/hook").await;
    let d = test_delivery(&kiln, &hook).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    let got = proxy.requests();
    assert_eq!(got.len(), 1, "sent through the proxy");
    assert!(
        got[0].path.contains("93.184.215.14") || got[0].header("host") == Some("93.184.215.14"),
        "the proxy was asked for the webhook's URL: {} {:?}",
        got[0].path,
        got[0].header("host")
    );
    // A name resolving to loopback is refused before the proxy sees it.
    let hook = webhook(&kiln, "http://localhost:9/hook").await;
    let d = test_delivery(&kiln, &hook).await;
    assert_eq!(d["status"], "failed", "{d}");
    let error = d["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("refused: localhost resolves to 127.0.0.1"),
        "{error}"
    );
    assert_eq!(proxy.requests().len(), 1, "nothing more went to the proxy");
}

fn assert_address_refused(what: &str, got: &(StatusCode, Value), fragment: &str) {
    let (s, body) = got;
    assert_eq!(*s, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
    assert_eq!(body["error"]["field"], "clone_url", "{what}: {body}");
    assert_eq!(
        body["error"]["code"], "address_not_allowed",
        "{what}: {body}"
    );
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(fragment), "{what}: {message}");
    assert!(message.contains("KILN_GIT_ALLOW"), "{what}: {message}");
}

/// Without `KILN_GIT_ALLOW` a git server on the loopback address (by address, by name, by an IPv6
/// form) cannot be linked; one linked while it was allowed fails at fetch time once kiln runs
/// without it, and nothing is fetched from it.
#[tokio::test(flavor = "multi_thread")]
async fn a_loopback_git_url_is_refused_without_kiln_git_allow() {
    support::ensure_docker();
    let registry = Registry::start();
    let (_git, dir) = repository("app");
    let git_server = GitHttpServer::start(&dir, None).await;
    let port = git_server.addr.rsplit_once(':').unwrap().1.to_string();
    let url = format!("{}/app.git", git_server.url);

    // Linked while the harness's default allows the loopback address.
    let kiln = Kiln::start(&registry, &[]).await;
    kiln.ci_repo("acme", "app", &url).await;
    let rule = kiln
        .rule("acme", "app", json!({"type": "branch", "name": "main"}))
        .await;
    let Kiln {
        server, data_dir, ..
    } = kiln;
    drop(server);

    let kiln = Kiln::start_in(&registry, &[("KILN_GIT_ALLOW", "")], data_dir).await;
    for (clone_url, fragment) in [
        (url.clone(), "127.0.0.1 is a loopback address"),
        (
            format!("http://localhost:{port}/app.git"),
            "localhost resolves to 127.0.0.1, a loopback address",
        ),
        (
            format!("http://[64:ff9b::7f00:1]:{port}/app.git"),
            "a NAT64 address carrying 127.0.0.1",
        ),
        (
            "https://169.254.169.254/latest/meta-data.git".to_string(),
            "cloud metadata",
        ),
        ("git://10.1.2.3/x.git".to_string(), "private"),
    ] {
        kiln.post("/namespaces", json!({"name": "other"})).await;
        kiln.post("/namespaces/other/repos", json!({"name": "new"}))
            .await;
        let got = kiln
            .put(
                "/namespaces/other/repos/new/source",
                json!({"provider": "github", "clone_url": clone_url}),
            )
            .await;
        assert_address_refused(&clone_url, &got, fragment);
        let (s, body) = kiln.get("/namespaces/other/repos/new/source").await;
        assert_eq!(s, StatusCode::NOT_FOUND, "nothing was linked: {body}");
    }

    // The source linked before: refused at fetch time, with the reason.
    let asked = git_server.requests().len();
    let build = build_now(&kiln, &rule).await;
    assert_eq!(build["status"], "failed", "{build}");
    let error = build["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("refused") && error.contains("KILN_GIT_ALLOW"),
        "{error}"
    );
    assert_eq!(
        git_server.requests().len(),
        asked,
        "nothing was fetched from the refused server"
    );
}
