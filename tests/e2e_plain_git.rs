//! Plain git servers (issue 12), on real parts only: a bare repository served by `git daemon
//! --enable=receive-pack`, `examples/post-receive` installed as its hook with `kiln.url` and
//! `kiln.secret` in its config, pushes made with the real `git` client, the real kiln (a source of
//! provider `git` whose clone URL is the daemon's `git://` URL), dockerd and registry.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::kiln::Kiln;
use support::{GitRepo, Registry, ZERO_SHA, free_port, wait_until, wait_until_blocking};

const SECRET: &str = "plain-git-secret-0123456789abcdef";

/// `git daemon` serving the directory of one bare repository on a free loopback port, pushes
/// allowed; killed on drop.
struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    fn serve(base: &Path) -> GitDaemon {
        let port = free_port();
        let child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base.display()),
                &base.display().to_string(),
            ])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts");
        wait_until_blocking("git daemon listens", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        GitDaemon { child, port }
    }

    fn url(&self, repo: &Path) -> String {
        format!(
            "git://127.0.0.1:{}/{}",
            self.port,
            repo.file_name().unwrap().to_string_lossy()
        )
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare repository `app.git` with the example hook installed and configured, served by `git
/// daemon`, and a work tree whose remote `daemon` is the daemon's URL.
struct Server {
    git: GitRepo,
    daemon: GitDaemon,
}

impl Server {
    fn start(kiln_url: Option<&str>, secret: &str) -> Server {
        let git = GitRepo::named("app");
        let hook = git.bare.join("hooks/post-receive");
        std::fs::copy(example_hook(), &hook).expect("install the hook");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        if let Some(url) = kiln_url {
            bare_config(&git.bare, "kiln.url", url);
            bare_config(&git.bare, "kiln.secret", secret);
        }
        bare_config(&git.bare, "kiln.timeout", "20");
        let daemon = GitDaemon::serve(git.bare.parent().unwrap());
        git.git(&["remote", "add", "daemon", &daemon.url(&git.bare)]);
        git.write(
            "Dockerfile",
            "FROM scratch\nCOPY version.txt /version.txt\n",
        );
        Server { git, daemon }
    }

    fn clone_url(&self) -> String {
        self.daemon.url(&self.git.bare)
    }

    /// `git push daemon ARGS…` with the real client: whether it succeeded, and what it printed
    /// (the hook's lines come back as `remote: kiln: …`).
    fn push(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("git")
            .current_dir(self.git.work_dir())
            .args(["push", "--no-verify", "daemon"])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .expect("git push runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// A push that must succeed; returns what it printed.
    fn pushed(&self, args: &[&str]) -> String {
        let (ok, text) = self.push(args);
        assert!(ok, "git push {args:?} failed:\n{text}");
        text
    }
}

fn example_hook() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/post-receive")
}

fn bare_config(bare: &Path, key: &str, value: &str) {
    let out = Command::new("git")
        .args([
            "--git-dir",
            &bare.display().to_string(),
            "config",
            key,
            value,
        ])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git config");
    assert!(out.status.success(), "git config {key}");
}

/// kiln with `acme/app` linked as a source of provider `git` to the daemon's URL, a rule building
/// `main` and one building `v*` tags; returns the source's answer.
async fn link(kiln: &Kiln, clone_url: &str) -> Value {
    kiln.repo("acme", "app").await;
    let (s, source) = kiln
        .put(
            "/namespaces/acme/repos/app/source",
            json!({"provider": "git", "clone_url": clone_url, "webhook_secret": SECRET}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{source}");
    kiln.rule("acme", "app", json!({"type": "branch", "name": "main"}))
        .await;
    kiln.rule(
        "acme",
        "app",
        json!({"type": "tag", "name": "v*", "overwrite": false}),
    )
    .await;
    source
}

/// kiln on a port chosen first, so that its `webhook_url` (from `KILN_PUBLIC_URL`'s default) is
/// the URL the hook reaches it at.
async fn start_kiln(registry: &Registry) -> Kiln {
    let listen = format!("127.0.0.1:{}", free_port());
    Kiln::start(registry, &[("KILN_LISTEN", listen.as_str())]).await
}

async fn stored_events(kiln: &Kiln) -> Vec<Value> {
    let (s, events) = kiln
        .get("/namespaces/acme/repos/app/events?limit=200")
        .await;
    assert_eq!(s, StatusCode::OK, "{events}");
    events.as_array().unwrap().clone()
}

/// The image config (`GET manifest` → its `config` blob) of `repo:reference` in the registry.
async fn image_config(registry: &Registry, repo: &str, reference: &str) -> Value {
    let manifest = registry.manifest(repo, reference).await;
    let config = manifest["config"]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no config in {manifest}"));
    serde_json::from_slice(&registry.blob(repo, config).await).expect("config JSON")
}

/// Waits until `acme/app` has `n` builds, and returns them (newest first).
async fn wait_builds(kiln: &Kiln, n: usize) -> Vec<Value> {
    wait_until(
        &format!("{n} build(s) of acme/app"),
        Duration::from_secs(30),
        || async { kiln.builds("acme", "app").await.len() >= n },
    )
    .await;
    kiln.builds("acme", "app").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_a_plain_git_server_builds_the_pushed_commit() {
    support::ensure_docker();
    let registry = Registry::start();
    let kiln = start_kiln(&registry).await;
    // The daemon's URL is known before kiln's webhook URL is set in the hook: link first.
    let server = Server::start(None, SECRET);
    let source = link(&kiln, &server.clone_url()).await;
    let webhook_url = format!("{}/hooks/git?source=acme/app", kiln.url);
    assert_eq!(source["provider"], "git", "{source}");
    assert_eq!(source["webhook_url"], webhook_url, "{source}");
    assert!(source.get("webhook_secret").is_none(), "given, not shown");
    let (_, shown) = kiln.get("/namespaces/acme/repos/app/source").await;
    assert_eq!(shown["webhook_url"], webhook_url, "{shown}");
    bare_config(&server.git.bare, "kiln.url", &webhook_url);
    bare_config(&server.git.bare, "kiln.secret", SECRET);

    // A branch push: one build of the pushed commit, its image in the registry.
    let content = format!("main of {}\n", server.clone_url());
    server.git.write("version.txt", &content);
    let commit = server.git.commit("First");
    let printed = server.pushed(&["main"]);
    assert!(
        printed.contains("remote: kiln: refs/heads/main queued"),
        "{printed}"
    );
    let builds = wait_builds(&kiln, 1).await;
    assert_eq!(builds.len(), 1, "{builds:?}");
    let id = builds[0]["id"].as_str().unwrap().to_string();
    let build = kiln.wait_build(&id).await;
    assert_eq!(
        build["status"],
        "succeeded",
        "{build}\n{}",
        kiln.log(&id).await
    );
    assert_eq!(build["commit"], commit, "{build}");
    assert_eq!(build["ref"], "refs/heads/main", "{build}");
    let tag = build["tag"].as_str().expect("a tag").to_string();
    assert!(registry.tags("acme/app").await.contains(&tag));
    assert_eq!(
        registry.manifest_digest("acme/app", &tag).await.as_deref(),
        build["digest"].as_str()
    );
    let config = image_config(&registry, "acme/app", &tag).await;
    let labels = &config["config"]["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.revision"], commit,
        "{labels}"
    );
    assert_eq!(
        labels["org.opencontainers.image.source"],
        server.clone_url(),
        "{labels}"
    );
    let events = stored_events(&kiln).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["provider"], "git", "{}", events[0]);
    assert_eq!(events[0]["event"], "push", "{}", events[0]);
    assert_eq!(events[0]["commit"], commit, "{}", events[0]);
    assert_eq!(events[0]["builds"], json!([id]), "{}", events[0]);
    // The hook's delivery id is the event's.
    let delivery = events[0]["delivery_id"].as_str().unwrap();
    assert!(
        delivery.len() == 32 && delivery.bytes().all(|b| b.is_ascii_hexdigit()),
        "{delivery}"
    );

    // An annotated tag: `after` is the tag object; the worker builds the commit it tags.
    server.git.write("version.txt", "release 1.0.0\n");
    let tagged = server.git.commit("Release 1.0.0");
    let tag_object = server.git.tag_annotated("v1.0.0", "Version 1.0.0");
    assert_ne!(tag_object, tagged);
    let printed = server.pushed(&["main", "refs/tags/v1.0.0"]);
    assert!(
        printed.contains("remote: kiln: refs/heads/main queued")
            && printed.contains("remote: kiln: refs/tags/v1.0.0 queued"),
        "{printed}"
    );
    let builds = wait_builds(&kiln, 3).await;
    let tag_build = builds
        .iter()
        .find(|b| b["ref"] == "refs/tags/v1.0.0")
        .unwrap_or_else(|| panic!("no build of the tag: {builds:?}"));
    let id = tag_build["id"].as_str().unwrap().to_string();
    let build = kiln.wait_build(&id).await;
    assert_eq!(
        build["status"],
        "succeeded",
        "{build}\n{}",
        kiln.log(&id).await
    );
    assert_eq!(build["commit"], tagged, "the commit, not the tag object");
    assert_eq!(build["tag"], format!("v1.0.0-{}", &tagged[..7]));
    let config = image_config(&registry, "acme/app", &format!("v1.0.0-{}", &tagged[..7])).await;
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.revision"],
        tagged
    );
    for b in kiln.builds("acme", "app").await {
        kiln.wait_build(b["id"].as_str().unwrap()).await;
    }

    // A branch deletion: the notification is taken (202), nothing is built.
    server.git.git(&["branch", "gone"]);
    server.pushed(&["gone"]);
    let before = kiln.builds("acme", "app").await.len();
    let printed = server.pushed(&["--delete", "gone"]);
    assert!(
        printed.contains("remote: kiln: refs/heads/gone deleted: nothing to build"),
        "{printed}"
    );
    let events = stored_events(&kiln).await;
    let deleted = events
        .iter()
        .find(|e| e["ref"] == "refs/heads/gone" && e["summary"] == "ref deleted: nothing to build")
        .unwrap_or_else(|| panic!("no deletion event: {events:?}"));
    assert_eq!(deleted["builds"], json!([]), "{deleted}");
    assert_eq!(kiln.builds("acme", "app").await.len(), before);
}

/// A hook whose secret is not the source's: the push succeeds, the hook says kiln refused it,
/// nothing is stored or built. Then kiln goes away: the push still succeeds, the hook says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_or_kiln_down_never_fails_the_push() {
    support::ensure_docker();
    let registry = Registry::start();
    let kiln = start_kiln(&registry).await;
    let server = Server::start(None, SECRET);
    link(&kiln, &server.clone_url()).await;
    let webhook_url = format!("{}/hooks/git?source=acme/app", kiln.url);
    bare_config(&server.git.bare, "kiln.url", &webhook_url);
    bare_config(
        &server.git.bare,
        "kiln.secret",
        "not-the-secret-0123456789abcdef",
    );
    server.git.write("version.txt", "one\n");
    let commit = server.git.commit("One");
    let printed = server.pushed(&["main"]);
    assert!(
        printed.contains("remote: kiln: refs/heads/main refused (HTTP 401)"),
        "{printed}"
    );
    assert_eq!(server.git.remote_sha("refs/heads/main"), Some(commit));
    assert!(stored_events(&kiln).await.is_empty());
    assert!(kiln.builds("acme", "app").await.is_empty());

    // Another source's name: refused alike.
    bare_config(&server.git.bare, "kiln.secret", SECRET);
    bare_config(
        &server.git.bare,
        "kiln.url",
        &format!("{}/hooks/git?source=acme/other", kiln.url),
    );
    server.git.commit("Two");
    let printed = server.pushed(&["main"]);
    assert!(printed.contains("refused (HTTP 401)"), "{printed}");
    assert!(stored_events(&kiln).await.is_empty());

    // kiln is down: nothing listens on its address any more.
    bare_config(&server.git.bare, "kiln.url", &webhook_url);
    let mut kiln = kiln;
    kiln.server.shutdown().await;
    drop(kiln);
    let commit = server.git.commit("Three");
    let printed = server.pushed(&["main"]);
    assert!(
        printed.contains("remote: kiln: refs/heads/main not sent: cannot reach kiln"),
        "{printed}"
    );
    assert_eq!(server.git.remote_sha("refs/heads/main"), Some(commit));

    // No configuration at all: one line, the push goes through.
    for key in ["kiln.url", "kiln.secret"] {
        let out = Command::new("git")
            .args([
                "--git-dir",
                &server.git.bare.display().to_string(),
                "config",
                "--unset",
                key,
            ])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let commit = server.git.commit("Four");
    let printed = server.pushed(&["main"]);
    assert!(
        printed.contains("remote: kiln: not configured: set kiln.url and kiln.secret"),
        "{printed}"
    );
    assert_eq!(printed.matches("remote: kiln:").count(), 1, "{printed}");
    assert_eq!(server.git.remote_sha("refs/heads/main"), Some(commit));
}

/// Sends a notification as the hook does: `body` signed with `secret`, an optional delivery id.
async fn notify(
    kiln_url: &str,
    query: &str,
    secret: &str,
    delivery: Option<&str>,
    body: &[u8],
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{kiln_url}/hooks/git{query}"))
        .header("content-type", "application/json")
        .header(
            "x-kiln-signature-256",
            kiln::forge::git::sign(secret.as_bytes(), body),
        )
        .body(body.to_vec());
    if let Some(d) = delivery {
        req = req.header("x-kiln-delivery", d);
    }
    let resp = req.send().await.expect("hook request");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn notification(git_ref: &str, before: &str, after: &str) -> Vec<u8> {
    json!({"ref": git_ref, "before": before, "after": after})
        .to_string()
        .into_bytes()
}

/// 32 notifications at once, each sent twice at once (a retry racing its original): all answered
/// 2xx, each stored once; and every way of getting one wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_notifications_are_stored_once_and_bad_ones_refused() {
    let registry = Registry::start();
    let kiln = start_kiln(&registry).await;
    let repo = GitRepo::new();
    repo.write("a", "a");
    let commit = repo.commit("a");
    // No rule matches `load-*` branches: nothing is built, only stored.
    link(&kiln, &repo.clone_url()).await;
    let q = "?source=acme/app";

    let bodies: Vec<(String, Vec<u8>)> = (0..32)
        .map(|i| {
            (
                format!("delivery-{i}"),
                notification(&format!("refs/heads/load-{i}"), ZERO_SHA, &commit),
            )
        })
        .collect();
    let mut sends = tokio::task::JoinSet::new();
    for round in 0..2 {
        for (delivery, body) in &bodies {
            let (url, delivery, body) = (kiln.url.clone(), delivery.clone(), body.clone());
            sends.spawn(async move {
                let answer = notify(&url, q, SECRET, Some(&delivery), &body).await;
                (round, answer)
            });
        }
    }
    let mut duplicates = 0;
    while let Some(done) = sends.join_next().await {
        let (_, (status, body)) = done.unwrap();
        assert!(status.is_success(), "{status} {body}");
        if body["duplicate"] == true {
            duplicates += 1;
        } else {
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        }
    }
    assert_eq!(duplicates, 32, "one of each pair is the duplicate");
    let stored = stored_events(&kiln).await;
    assert_eq!(stored.len(), 32, "{stored:?}");
    for (delivery, _) in &bodies {
        let e = stored
            .iter()
            .find(|e| e["delivery_id"] == delivery.as_str())
            .unwrap_or_else(|| panic!("{delivery} not stored"));
        assert_eq!(e["duplicates"], 1, "{e}");
        assert_eq!(e["provider"], "git", "{e}");
    }
    // The same body under a new delivery id is a replay; without a delivery id the body's digest
    // names the delivery.
    let (s, body) = notify(&kiln.url, q, SECRET, Some("another-id"), &bodies[0].1).await;
    assert_eq!(
        (s, &body["duplicate"]),
        (StatusCode::OK, &json!(true)),
        "{body}"
    );
    let fresh = notification("refs/heads/load-x", ZERO_SHA, &commit);
    let (s, body) = notify(&kiln.url, q, SECRET, None, &fresh).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    let (s, body) = notify(&kiln.url, q, SECRET, None, &fresh).await;
    assert_eq!(
        (s, &body["duplicate"]),
        (StatusCode::OK, &json!(true)),
        "{body}"
    );
    // A deleted ref: taken (202), nothing to build.
    let deletion = notification("refs/heads/load-0", &commit, ZERO_SHA);
    let (s, body) = notify(&kiln.url, q, SECRET, None, &deletion).await;
    assert_eq!((s, &body), (StatusCode::ACCEPTED, &json!({"builds": []})));
    let stored = stored_events(&kiln).await;
    assert_eq!(stored.len(), 34);
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&fresh));
    assert!(
        stored
            .iter()
            .any(|e| e["delivery_id"] == format!("sha256:{digest}")),
        "{stored:?}"
    );

    // Refusals. Unknown source, wrong secret, missing signature: 401, nothing stored.
    let good = notification("refs/heads/main", ZERO_SHA, &commit);
    for (query, secret) in [
        ("?source=acme/nope", SECRET),
        ("?source=nope/app", SECRET),
        ("?source=acme/app", "wrong-secret-0123456789abcdef"),
        ("?source=ACME/APP", SECRET),
    ] {
        let (s, body) = notify(&kiln.url, query, secret, None, &good).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_signature", "{body}");
    }
    let resp = reqwest::Client::new()
        .post(format!("{}/hooks/git{q}", kiln.url))
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // No source named: 400 naming the parameter.
    for query in [
        "",
        "?",
        "?source=",
        "?other=acme/app",
        "?source=a/b&source=acme/app",
    ] {
        let (s, body) = notify(&kiln.url, query, SECRET, None, &good).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query:?}: {body}");
        assert_eq!(body["error"]["field"], "source", "{query:?}: {body}");
    }
    // Signed but malformed: 400 naming what is wrong.
    for (body, says) in [
        (b"not json".to_vec(), "push notification"),
        (b"{}".to_vec(), "missing field `ref`"),
        (notification("main", ZERO_SHA, &commit), "not a full ref"),
        (
            notification("refs/heads/a\u{7}b", ZERO_SHA, &commit),
            "control characters",
        ),
        (notification("refs/heads/m", ZERO_SHA, "abc"), "after:"),
        (
            notification("refs/heads/m", ZERO_SHA, ZERO_SHA),
            "both zero",
        ),
    ] {
        let (s, answer) = notify(&kiln.url, q, SECRET, None, &body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["code"], "malformed_payload", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    assert_eq!(
        stored_events(&kiln).await.len(),
        34,
        "nothing refused was stored"
    );

    // A git source is reachable at /hooks/git only: GitHub's payload naming its clone URL, signed
    // with its secret, finds no source.
    let payload = support::github_push_payload(
        &repo.clone_url(),
        "refs/heads/main",
        ZERO_SHA,
        &commit,
        false,
    );
    let (s, body) = kiln
        .github_hook("push", &support::new_delivery_id(), SECRET, &payload)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    // And a GitHub source is not reachable at /hooks/git.
    let (s, _) = kiln
        .put(
            "/namespaces/acme/repos/app/source",
            json!({"provider": "github", "clone_url": repo.clone_url()}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = notify(&kiln.url, q, SECRET, None, &good).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    let (_, source) = kiln.get("/namespaces/acme/repos/app/source").await;
    assert_eq!(
        source["webhook_url"],
        format!("{}/hooks/github", kiln.url),
        "{source}"
    );
    assert_eq!(stored_events(&kiln).await.len(), 34);
}

/// The console's rules tab shows a `git` source's own webhook URL and how to set up the hook, in
/// both languages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_how_to_set_up_the_hook() {
    let registry = Registry::start();
    let kiln = start_kiln(&registry).await;
    let repo = GitRepo::new();
    link(&kiln, &repo.clone_url()).await;
    let console = support::console::Console::sign_in(&kiln.url, support::kiln::ADMIN_TOKEN).await;
    let want_url = format!("{}/hooks/git?source=acme/app", kiln.url);
    let page = console.get("/repos/acme/app/rules").await;
    assert_eq!(page.text("#webhook-url"), want_url);
    assert_eq!(page.text("#source-provider"), "Plain git server");
    let settings = page.text("#webhook-settings");
    for want in [
        "examples/post-receive",
        "git config kiln.url",
        "git config kiln.secret",
        "X-Kiln-Signature-256",
    ] {
        assert!(settings.contains(want), "{want} not in {settings}");
    }
    assert!(
        !page.has("#plain-git"),
        "a git source's server does notify kiln"
    );
    let page = console.get("/repos/acme/app/rules?lang=zh-CN").await;
    assert_eq!(page.text("#webhook-url"), want_url);
    assert_eq!(page.text("#source-provider"), "纯 git 服务器");
    assert!(
        page.text("#webhook-settings")
            .contains("X-Kiln-Signature-256")
    );
}
