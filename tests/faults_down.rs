//! The registry or the Docker daemon down (issue 11, faults): kiln stays up, `/healthz` says
//! `degraded` naming what is down, a build waits for it (`KILN_BUILD_WAIT_WHEN_DOWN_SECS`) and goes
//! on by itself when it answers again, or fails with the reason when it does not come back in time.
//!
//! The registry really goes down: its process is killed, then started again on the same port and
//! storage. The Docker daemon is shared with every other test, so it is not stopped: the real kiln
//! binary is pointed (`DOCKER_HOST`) at a unix socket nobody serves, and later the test serves that
//! socket with a proxy of its own that forwards each connection to the real daemon's socket.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::kiln::{Kiln, KilnApi};
use support::kiln_process::KilnProcess;
use support::{GitRepo, Registry, wait_until};

const WAIT: Duration = Duration::from_secs(180);
/// The real daemon's socket, which the test's proxy forwards to.
const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// A repository whose `main` builds a tiny image FROM scratch, linked to `ns/app` with a rule for
/// `main`; returns the git repo and the webhook secret.
async fn app_repo(kiln: &KilnApi, ns: &str) -> (GitRepo, String) {
    let git = GitRepo::new();
    git.write("Dockerfile", "FROM scratch\nCOPY hello.txt /hello.txt\n");
    git.write("hello.txt", format!("hello from {ns}\n"));
    git.commit("first");
    git.push("main");
    let secret = kiln.ci_repo(ns, "app", &git.clone_url()).await;
    kiln.rule(ns, "app", json!({"type": "branch", "name": "main"}))
        .await;
    (git, secret)
}

async fn push_build(kiln: &KilnApi, git: &GitRepo, secret: &str) -> String {
    let ids = kiln
        .push_hook(secret, &git.clone_url(), "refs/heads/main", &git.head())
        .await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids.into_iter().next().unwrap()
}

async fn healthz(kiln: &KilnApi) -> Value {
    let resp = kiln
        .http
        .get(format!("{}/healthz", kiln.url))
        .send()
        .await
        .expect("healthz");
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "healthz answers while degraded"
    );
    resp.json().await.expect("healthz JSON")
}

/// Waits until healthz's status is `status`, and returns the answer.
async fn wait_health(kiln: &KilnApi, status: &str) -> Value {
    let last = std::sync::Mutex::new(Value::Null);
    wait_until(&format!("healthz to say {status}"), WAIT, || async {
        let now = healthz(kiln).await;
        let done = now["status"] == status;
        *last.lock().unwrap() = now;
        done
    })
    .await;
    last.into_inner().unwrap()
}

/// Waits until the build's log has a line containing `needle`; the build is still running then.
async fn wait_log(kiln: &KilnApi, build: &str, needle: &str) -> String {
    wait_until(
        &format!("build {build}'s log to say '{needle}'"),
        WAIT,
        || async { kiln.log(build).await.contains(needle) },
    )
    .await;
    kiln.log(build).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_waits_for_the_registry_and_goes_on_when_it_is_back() {
    support::ensure_docker();
    let mut registry = Registry::start();
    let kiln = Kiln::start(&registry, &[("KILN_BUILD_WAIT_WHEN_DOWN_SECS", "300")]).await;
    let (git, secret) = app_repo(&kiln, "acme").await;
    assert_eq!(healthz(&kiln).await["status"], "ok");

    registry.stop();
    let health = wait_health(&kiln, "degraded").await;
    assert_eq!(health["registry"]["status"], "error", "{health}");
    assert_eq!(health["docker"]["status"], "ok", "{health}");
    assert_eq!(health["database"]["status"], "ok", "{health}");
    let reasons = health["reasons"].as_array().expect("reasons").clone();
    assert_eq!(reasons.len(), 1, "{health}");
    let reason = reasons[0].as_str().unwrap();
    assert!(reason.starts_with("registry: "), "{health}");
    assert!(reason.contains(&registry.url), "{health}");

    // The hook is stored and answered as ever; the build waits, saying why.
    let build = push_build(&kiln, &git, &secret).await;
    let log = wait_log(&kiln, &build, "Waiting: the registry is down").await;
    assert!(log.contains("waiting up to 300 s"), "{log}");
    let (_, b) = kiln.get(&format!("/builds/{build}")).await;
    assert_eq!(b["status"], "building", "{b}");
    // kiln itself answers meanwhile.
    let (s, _) = kiln.get("/namespaces/acme/repos/app").await;
    assert_eq!(s, StatusCode::OK);

    // Back on the same port and storage: the build goes on by itself.
    registry.restart();
    let b = kiln.wait_build(&build).await;
    assert_eq!(b["status"], "succeeded", "{b}\n{}", kiln.log(&build).await);
    let log = kiln.log(&build).await;
    assert!(log.contains("They answer again after"), "{log}");
    let tag = b["tag"].as_str().expect("tag");
    assert!(
        registry.manifest_digest("acme/app", tag).await.is_some(),
        "the image is in the registry"
    );
    assert_eq!(wait_health(&kiln, "ok").await["reasons"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_fails_with_the_reason_when_the_registry_stays_down_past_the_wait() {
    support::ensure_docker();
    let mut registry = Registry::start();
    let kiln = Kiln::start(&registry, &[("KILN_BUILD_WAIT_WHEN_DOWN_SECS", "2")]).await;
    let (git, secret) = app_repo(&kiln, "acme").await;
    registry.stop();
    let build = push_build(&kiln, &git, &secret).await;
    let b = kiln.wait_build(&build).await;
    assert_eq!(b["status"], "failed", "{b}");
    let error = b["error"].as_str().expect("a reason");
    assert!(error.starts_with("the registry is down ("), "{error}");
    assert!(error.contains(&registry.url), "{error}");
    assert!(
        error.contains("KILN_BUILD_WAIT_WHEN_DOWN_SECS"),
        "the reason names the setting: {error}"
    );
    assert!(kiln.log(&build).await.contains(error));

    // kiln is up and, once the registry is back, the next build of the same rule succeeds.
    registry.restart();
    git.write("hello.txt", "again\n");
    git.commit("again");
    git.push("main");
    let next = push_build(&kiln, &git, &secret).await;
    let b = kiln.wait_build(&next).await;
    assert_eq!(b["status"], "succeeded", "{b}\n{}", kiln.log(&next).await);
}

/// A unix socket at `path` that forwards each connection to the real Docker daemon's socket, byte
/// for byte: the daemon "coming back" for a kiln pointed at `path`. Stops when dropped.
struct DaemonProxy {
    task: tokio::task::JoinHandle<()>,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl DaemonProxy {
    fn serve(path: &Path) -> DaemonProxy {
        let listener = tokio::net::UnixListener::bind(path).expect("bind the proxy socket");
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut daemon) = tokio::net::UnixStream::connect(DOCKER_SOCKET).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut daemon).await;
                    }
                });
            }
        });
        DaemonProxy { task, connections }
    }
}

impl Drop for DaemonProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_waits_for_the_docker_daemon_and_goes_on_when_it_answers() {
    support::ensure_docker();
    let registry = Registry::start();
    let sockets = tempfile::tempdir().expect("temp dir");
    let socket: PathBuf = sockets.path().join("docker.sock");
    let docker_host = format!("unix://{}", socket.display());
    let kiln = KilnProcess::start(
        &registry,
        &[
            ("DOCKER_HOST", docker_host.as_str()),
            ("KILN_BUILD_WAIT_WHEN_DOWN_SECS", "300"),
        ],
    )
    .await;
    let (git, secret) = app_repo(&kiln, "acme").await;

    let health = wait_health(&kiln, "degraded").await;
    assert_eq!(health["docker"]["status"], "error", "{health}");
    assert_eq!(health["registry"]["status"], "ok", "{health}");
    let reasons = health["reasons"].as_array().expect("reasons");
    assert_eq!(reasons.len(), 1, "{health}");
    assert!(
        reasons[0].as_str().unwrap().starts_with("docker: "),
        "{health}"
    );

    let build = push_build(&kiln, &git, &secret).await;
    let log = wait_log(&kiln, &build, "Waiting: the Docker daemon is down").await;
    assert!(log.contains("waiting up to 300 s"), "{log}");
    let (_, b) = kiln.get(&format!("/builds/{build}")).await;
    assert_eq!(b["status"], "building", "{b}");

    // The daemon "returns": its socket answers (through the proxy).
    let proxy = DaemonProxy::serve(&socket);
    let b = kiln.wait_build(&build).await;
    assert_eq!(b["status"], "succeeded", "{b}\n{}", kiln.log(&build).await);
    assert!(kiln.log(&build).await.contains("They answer again after"));
    assert!(
        proxy.connections.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "kiln reached the daemon through the proxy"
    );
    let tag = b["tag"].as_str().expect("tag");
    assert!(registry.manifest_digest("acme/app", tag).await.is_some());
    assert_eq!(wait_health(&kiln, "ok").await["reasons"], json!([]));
}
