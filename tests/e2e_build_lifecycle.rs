//! A build's life beyond the happy path: cancel stops the Docker build (its step killed under either
//! builder, a classic step's container removed; nothing pushed, nothing announced), kiln killed mid-build runs it again exactly once (attempt 2),
//! SIGTERM lets running builds finish within the grace period or queues them again, and the queue keeps
//! the per-repository limit and is fair between repositories.
//! Real dockerd, real Distribution registry, real git repos, the real kiln (in process, or its binary
//! when it must be killed), a real HTTP receiver for the notifications.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::kiln::Kiln;
use support::kiln_process::KilnProcess;
use support::{GitRepo, RecordingServer, Registry, github_push_payload, new_delivery_id};

const ZERO: &str = "0000000000000000000000000000000000000000";
const WAIT: Duration = Duration::from_secs(180);

/// Sends the GitHub push of `sha` to `git_ref` and returns the one build it queued.
async fn hook(kiln: &Kiln, secret: &str, git: &GitRepo, git_ref: &str, sha: &str) -> String {
    let payload = github_push_payload(&git.clone_url(), git_ref, ZERO, sha, false);
    let (status, body) = kiln
        .github_hook("push", &new_delivery_id(), secret, &payload)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let ids = body["builds"].as_array().expect("builds");
    assert_eq!(ids.len(), 1, "{body}");
    ids[0].as_str().unwrap().to_string()
}

/// Every container the daemon has (running or stopped) whose command or id mentions `needle`.
fn containers_with(needle: &str) -> Vec<String> {
    support::docker(&[
        "ps",
        "-a",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Status}} {{.Command}}",
    ])
    .lines()
    .filter(|l| l.contains(needle))
    .map(str::to_string)
    .collect()
}

/// The processes on this machine whose command line mentions `needle`: a build step's shell
/// (`/bin/sh -c "echo {marker} && sleep …"`), whichever builder runs it (a classic builder's step
/// runs in a container, a BuildKit step under the daemon's own runc).
fn processes_with(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()) && *pid != me)
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(needle)
                .then(|| format!("{pid}: {}", cmdline.trim()))
        })
        .collect()
}

/// A Dockerfile whose build runs until stopped, its step marked with `marker`.
fn endless_dockerfile(base: &str, marker: &str) -> String {
    format!(
        "FROM {base}\nCOPY x /x\nRUN {}\n",
        step_until_stopped(marker, 300)
    )
}

/// A `RUN` command marked `marker` that takes `seconds`. The shell stays (the sleep is not its last
/// command, so it is not replaced by it), and its command line names the marker.
fn step_until_stopped(marker: &str, seconds: u32) -> String {
    format!("echo {marker} && sleep {seconds} && echo {marker} slept")
}

/// Waits until the step marked `marker` runs.
async fn wait_for_step(what: &str, marker: &str) {
    support::wait_until(what, WAIT, || async { !processes_with(marker).is_empty() }).await;
}

/// Waits until no process of the step marked `marker` is left, for at most `within`.
async fn wait_for_step_gone(what: &str, marker: &str, within: Duration) {
    support::wait_until(what, within, || async { processes_with(marker).is_empty() }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_of_a_running_buildkit_build_kills_its_step_pushes_nothing_and_announces_nothing() {
    cancel_of_a_running_build("buildkit").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_of_a_running_classic_build_kills_its_container_pushes_nothing_and_announces_nothing()
 {
    cancel_of_a_running_build("classic").await;
}

async fn cancel_of_a_running_build(builder: &str) {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let kiln = Kiln::start(
        &registry,
        &[
            ("KILN_WEBHOOK_ALLOW", "127.0.0.1"),
            ("KILN_BUILDER", builder),
        ],
    )
    .await;
    let git = GitRepo::new();
    let marker = format!("kiln-cancel-{}", new_delivery_id());
    git.write("Dockerfile", endless_dockerfile(base, &marker));
    git.write("x", &marker);
    let sha = git.commit("endless");
    git.push("main");
    let secret = kiln.ci_repo("acme", "cancel", &git.clone_url()).await;
    kiln.rule("acme", "cancel", json!({"type": "branch", "name": "main"}))
        .await;
    let receiver = RecordingServer::start().await;
    let (s, body) = kiln
        .post(
            "/namespaces/acme/repos/cancel/webhooks",
            json!({"name": "pushes", "url": receiver.url, "events": ["image.pushed"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");

    let id = hook(&kiln, &secret, &git, "refs/heads/main", &sha).await;
    wait_for_step("the build's RUN step to run", &marker).await;
    // The classic builder runs the step in a container of the daemon's; BuildKit runs none.
    let want = usize::from(builder == "classic");
    assert_eq!(
        containers_with(&marker).len(),
        want,
        "the step's containers"
    );

    let asked = Instant::now();
    let (status, build) = kiln.post(&format!("/builds/{id}/cancel"), json!({})).await;
    let took = asked.elapsed();
    assert_eq!(status, StatusCode::ACCEPTED, "{build}");
    assert_eq!(build["status"], "cancelled", "{build}");
    assert_eq!(build["error"], "cancelled by user", "{build}");
    assert!(
        took < Duration::from_secs(5),
        "the build ended cancelled {took:?} after the cancel"
    );
    // Its step is stopped, and no container of it is left, running or stopped.
    wait_for_step_gone("the step to stop", &marker, Duration::from_secs(5)).await;
    assert_eq!(containers_with(&marker), Vec::<String>::new());
    let log = kiln.log(&id).await;
    assert!(
        log.contains(&format!(
            "Builder: {}",
            if want == 1 { "classic" } else { "BuildKit" }
        )),
        "{log}"
    );
    assert!(log.trim_end().ends_with("Cancelled."), "{log}");
    assert!(!log.contains("Pushing "), "{log}");
    assert_eq!(registry.tags("acme/cancel").await, Vec::<String>::new());
    let (s, again) = kiln.post(&format!("/builds/{id}/cancel"), json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{again}");

    // A build after it pushes and is announced; announcements go out in order, so once it is here
    // the cancelled build's would be too.
    git.write("Dockerfile", format!("FROM {base}\nCOPY x /x\n"));
    let sha2 = git.commit("quick");
    git.push("main");
    let id2 = hook(&kiln, &secret, &git, "refs/heads/main", &sha2).await;
    let b2 = kiln.wait_build(&id2).await;
    assert_eq!(b2["status"], "succeeded", "{b2}\n{}", kiln.log(&id2).await);
    receiver
        .wait_for("the second build's image.pushed", WAIT, |r| {
            r.json()["event"] == "image.pushed"
        })
        .await;
    let pushed: Vec<Value> = receiver
        .requests()
        .iter()
        .map(|r| r.json())
        .filter(|m| m["event"] == "image.pushed")
        .collect();
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    assert_eq!(pushed[0]["build"]["commit"], sha2.as_str(), "{pushed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_during_the_push_leaves_no_cancelled_build_with_a_moved_tag() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[("KILN_WEBHOOK_ALLOW", "127.0.0.1")]).await;
    let git = GitRepo::new();
    // A layer of 100 MB of random bytes: its upload takes a while.
    let marker = new_delivery_id();
    git.write(
        "Dockerfile",
        format!("FROM {base}\nRUN echo {marker} && head -c 100000000 /dev/urandom > /blob\n"),
    );
    let sha = git.commit("big layer");
    git.push("main");
    let secret = kiln.ci_repo("acme", "bigpush", &git.clone_url()).await;
    kiln.rule("acme", "bigpush", json!({"type": "branch", "name": "main"}))
        .await;
    let receiver = RecordingServer::start().await;
    let (s, body) = kiln
        .post(
            "/namespaces/acme/repos/bigpush/webhooks",
            json!({"name": "all", "url": receiver.url, "events": ["image.pushed"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");

    let id = hook(&kiln, &secret, &git, "refs/heads/main", &sha).await;
    support::wait_until("the push to start", WAIT, || async {
        kiln.log(&id).await.contains("Pushing ")
    })
    .await;
    let (status, answer) = kiln.post(&format!("/builds/{id}/cancel"), json!({})).await;
    let build = kiln.wait_build(&id).await;
    let tags = registry.tags("acme/bigpush").await;
    let log = kiln.log(&id).await;
    eprintln!("cancel during the push: {} ({status})", build["status"]);
    // Whichever came first, the outcome is one story: cancelled and nothing in the registry, or
    // (the push had landed) succeeded, the tag there, and the cancel refused.
    if build["status"] == "cancelled" {
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(tags, Vec::<String>::new(), "{build}\n{log}");
        assert!(!log.contains("Pushed "), "{log}");
    } else {
        assert_eq!(build["status"], "succeeded", "{build}\n{log}");
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        assert_eq!(answer["error"]["code"], "already_pushed", "{answer}");
        assert_eq!(tags, ["main"]);
    }
    // Announced exactly when pushed: check with a later build, announced after it.
    git.write("Dockerfile", format!("FROM {base}\nRUN echo {marker}-2\n"));
    let sha2 = git.commit("small");
    git.push("main");
    let id2 = hook(&kiln, &secret, &git, "refs/heads/main", &sha2).await;
    assert_eq!(kiln.wait_build(&id2).await["status"], "succeeded");
    receiver
        .wait_for("the second build's image.pushed", WAIT, |r| {
            r.json()["build"]["commit"] == sha2.as_str()
        })
        .await;
    let first_announced = receiver
        .requests()
        .iter()
        .filter(|r| r.json()["build"]["commit"] == sha.as_str())
        .count();
    let want = usize::from(build["status"] == "succeeded");
    assert_eq!(first_announced, want, "{build}");
}

/// A repository whose Dockerfile runs until stopped (marked `marker`), a `main` rule, for the binary.
async fn endless_repo(
    kiln: &KilnProcess,
    repo: &str,
    marker: &str,
    seconds: u32,
) -> (GitRepo, String, String) {
    let base = support::ensure_base_image();
    let git = GitRepo::new();
    git.write(
        "Dockerfile",
        format!(
            "FROM {base}\nCOPY x /x\nRUN {}\n",
            step_until_stopped(marker, seconds)
        ),
    );
    git.write("x", marker);
    let sha = git.commit("slow");
    git.push("main");
    let secret = kiln.ci_repo("acme", repo, &git.clone_url()).await;
    kiln.rule("acme", repo, json!({"type": "branch", "name": "main"}))
        .await;
    (git, secret, sha)
}

#[tokio::test(flavor = "multi_thread")]
async fn kiln_killed_mid_build_runs_the_build_again_exactly_once_at_its_next_start() {
    support::ensure_docker();
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut kiln =
        KilnProcess::start_in(&registry, &data_dir, &[("KILN_BUILD_WORKERS", "1")]).await;
    let marker = format!("kiln-crash-{}", new_delivery_id());
    let (git, secret, sha) = endless_repo(&kiln, "crash", &marker, 4).await;
    let ids = kiln
        .push_hook(&secret, &git.clone_url(), "refs/heads/main", &sha)
        .await;
    let id = ids[0].clone();
    wait_for_step("the first attempt's RUN step", &marker).await;

    kiln.signal("KILL");
    kiln.wait_exit(Duration::from_secs(30)).await;
    // The daemon saw the build's request end with the process: it stops the first attempt's step.
    wait_for_step_gone("the first attempt's step to stop", &marker, WAIT).await;

    let kiln = KilnProcess::start_in(&registry, &data_dir, &[("KILN_BUILD_WORKERS", "1")]).await;
    let build = kiln.wait_build(&id).await;
    let log = kiln.log(&id).await;
    assert_eq!(
        build["status"],
        "succeeded",
        "{build}\n{log}\n{}",
        kiln.output()
    );
    assert_eq!(build["attempt"], 2, "{build}");
    assert!(
        log.contains("Attempt 2: kiln restarted while this build was running"),
        "{log}"
    );
    // Exactly once: one build, one tag, one push.
    let (_, builds) = kiln.get("/namespaces/acme/repos/crash/builds").await;
    let builds = builds.as_array().unwrap();
    assert_eq!(builds.len(), 1, "{builds:?}");
    assert_eq!(registry.tags("acme/crash").await, ["main"]);
    assert_eq!(log.matches("Pushing ").count(), 1, "{log}");
    assert_eq!(
        registry.manifest_digest("acme/crash", "main").await,
        build["digest"].as_str().map(str::to_string)
    );
    assert_eq!(containers_with(&marker), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_running_build_finish_within_the_grace_period_and_starts_no_other() {
    support::ensure_docker();
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let env = [
        ("KILN_BUILD_WORKERS", "1"),
        ("KILN_SHUTDOWN_GRACE_SECS", "120"),
    ];
    let mut kiln = KilnProcess::start_in(&registry, &data_dir, &env).await;
    let marker = format!("kiln-term-{}", new_delivery_id());
    let (git, secret, sha) = endless_repo(&kiln, "term", &marker, 3).await;
    let running = kiln
        .push_hook(&secret, &git.clone_url(), "refs/heads/main", &sha)
        .await
        .remove(0);
    wait_for_step("the build's RUN step", &marker).await;
    // A second build waits (one worker).
    git.branch("other");
    git.push("other");
    let (s, body) = kiln
        .post(
            "/namespaces/acme/repos/term/rules",
            json!({"type": "branch", "name": "other"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let waiting = kiln
        .push_hook(&secret, &git.clone_url(), "refs/heads/other", &sha)
        .await
        .remove(0);
    let (_, w) = kiln.get(&format!("/builds/{waiting}")).await;
    assert_eq!(
        (w["status"].as_str(), w["queue_position"].as_u64()),
        (Some("queued"), Some(1)),
        "{w}"
    );

    kiln.signal("TERM");
    // It keeps answering while the build finishes.
    let (s, _) = kiln.get(&format!("/builds/{running}")).await;
    assert_eq!(s, StatusCode::OK);
    let status = kiln.wait_exit(WAIT).await;
    assert!(status.success(), "{status:?}\n{}", kiln.output());

    let kiln = KilnProcess::start_in(&registry, &data_dir, &env).await;
    let (_, b) = kiln.get(&format!("/builds/{running}")).await;
    assert_eq!(
        b["status"],
        "succeeded",
        "{b}\n{}",
        kiln.log(&running).await
    );
    assert_eq!(b["attempt"], 1, "{b}");
    assert_eq!(registry.tags("acme/term").await, ["main"]);
    // The waiting build was not started by the stopping kiln; this one runs it.
    let w = kiln.wait_build(&waiting).await;
    assert_eq!(w["status"], "succeeded", "{w}");
    assert_eq!(w["attempt"], 1, "{w}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_past_the_grace_period_queues_the_build_again_and_the_next_start_completes_it() {
    support::ensure_docker();
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let env = [
        ("KILN_BUILD_WORKERS", "1"),
        ("KILN_SHUTDOWN_GRACE_SECS", "1"),
    ];
    let mut kiln = KilnProcess::start_in(&registry, &data_dir, &env).await;
    let marker = format!("kiln-grace-{}", new_delivery_id());
    let (git, secret, sha) = endless_repo(&kiln, "grace", &marker, 6).await;
    let id = kiln
        .push_hook(&secret, &git.clone_url(), "refs/heads/main", &sha)
        .await
        .remove(0);
    wait_for_step("the build's RUN step", &marker).await;

    kiln.signal("TERM");
    let status = kiln.wait_exit(Duration::from_secs(60)).await;
    assert!(status.success(), "{status:?}\n{}", kiln.output());
    // Stopped, not left running.
    wait_for_step_gone("the step to stop", &marker, Duration::from_secs(5)).await;
    assert_eq!(containers_with(&marker), Vec::<String>::new());

    let kiln = KilnProcess::start_in(&registry, &data_dir, &env).await;
    let build = kiln.wait_build(&id).await;
    let log = kiln.log(&id).await;
    assert_eq!(build["status"], "succeeded", "{build}\n{log}");
    assert_eq!(build["attempt"], 2, "{build}");
    assert!(
        log.contains("Attempt 2: kiln was stopped while this build was running"),
        "{log}"
    );
    assert!(
        !log.contains("kiln restarted"),
        "a drain is not a crash: {log}"
    );
    assert_eq!(registry.tags("acme/grace").await, ["main"]);
}

/// `(started_at, finished_at)` of a finished build.
fn span(b: &Value) -> (String, String) {
    (
        b["started_at"].as_str().unwrap().to_string(),
        b["finished_at"].as_str().unwrap().to_string(),
    )
}

fn overlap(a: &(String, String), b: &(String, String)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// A repository with a `*` branch rule: each branch builds its own tag, so only the limit keeps two
/// of its builds apart.
async fn branches_repo(kiln: &Kiln, repo: &str) -> (GitRepo, String) {
    let git = GitRepo::new();
    git.write("x", repo);
    git.commit("first");
    git.push("main");
    let secret = kiln.ci_repo("acme", repo, &git.clone_url()).await;
    kiln.rule("acme", repo, json!({"type": "branch", "name": "*"}))
        .await;
    (git, secret)
}

/// Commits on branch `name` (from main) a Dockerfile running `run`, pushes it and sends the hook.
async fn push_branch(kiln: &Kiln, git: &GitRepo, secret: &str, name: &str, run: &str) -> String {
    let base = support::ensure_base_image();
    git.checkout("main");
    git.checkout(name);
    git.write(
        "Dockerfile",
        format!(
            "FROM {base}\nCOPY x /x\nRUN echo {} && {run}\n",
            new_delivery_id()
        ),
    );
    let sha = git.commit(name);
    git.push(name);
    hook(kiln, secret, git, &format!("refs/heads/{name}"), &sha).await
}

#[tokio::test(flavor = "multi_thread")]
async fn builds_of_one_repository_never_overlap_while_two_repositories_share_the_workers() {
    support::ensure_docker();
    let registry = Registry::start();
    let kiln = Kiln::start(
        &registry,
        &[("KILN_BUILD_WORKERS", "2"), ("KILN_REPO_BUILD_LIMIT", "1")],
    )
    .await;
    let (git_a, secret_a) = branches_repo(&kiln, "limit-a").await;
    let (git_b, secret_b) = branches_repo(&kiln, "limit-b").await;
    let mut ids = Vec::new();
    // A's builds are queued first: without the limit both workers would take two of them.
    for i in 0..4 {
        ids.push((
            "a",
            push_branch(&kiln, &git_a, &secret_a, &format!("a{i}"), "sleep 1").await,
        ));
    }
    for i in 0..4 {
        ids.push((
            "b",
            push_branch(&kiln, &git_b, &secret_b, &format!("b{i}"), "sleep 1").await,
        ));
    }
    let mut spans = Vec::new();
    for (repo, id) in &ids {
        let b = kiln.wait_build(id).await;
        assert_eq!(b["status"], "succeeded", "{b}\n{}", kiln.log(id).await);
        spans.push((*repo, span(&b)));
    }
    for (i, (repo_x, x)) in spans.iter().enumerate() {
        for (repo_y, y) in &spans[i + 1..] {
            if repo_x == repo_y {
                assert!(
                    !overlap(x, y),
                    "two builds of {repo_x} ran at once: {x:?} {y:?}"
                );
            }
        }
    }
    // The two workers did work side by side, on the two repositories.
    assert!(
        spans
            .iter()
            .any(|(r, x)| spans.iter().any(|(s, y)| r != s && overlap(x, y))),
        "{spans:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repository_queued_later_starts_before_a_busy_repositorys_queue_drains() {
    support::ensure_docker();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[("KILN_BUILD_WORKERS", "1")]).await;
    let (git_a, secret_a) = branches_repo(&kiln, "busy").await;
    let (git_b, secret_b) = branches_repo(&kiln, "late").await;
    // A's first build runs until cancelled; nine more of A wait behind it, then one of B.
    let marker = format!("kiln-fair-{}", new_delivery_id());
    let first = push_branch(
        &kiln,
        &git_a,
        &secret_a,
        "a0",
        &step_until_stopped(&marker, 300),
    )
    .await;
    wait_for_step("A's first build to run", &marker).await;
    let mut queued_a = Vec::new();
    for i in 1..10 {
        queued_a.push(push_branch(&kiln, &git_a, &secret_a, &format!("a{i}"), "true").await);
    }
    let late = push_branch(&kiln, &git_b, &secret_b, "b0", "true").await;

    // The queue says B goes next, then A's builds in their order.
    let (_, b) = kiln.get(&format!("/builds/{late}")).await;
    assert_eq!(b["queue_position"], 1, "{b}");
    for (i, id) in queued_a.iter().enumerate() {
        let (_, a) = kiln.get(&format!("/builds/{id}")).await;
        assert_eq!(a["queue_position"], i + 2, "{a}");
    }
    let listed = kiln.builds("acme", "busy").await;
    let running = listed.iter().find(|b| b["id"] == first.as_str()).unwrap();
    assert_eq!(running["queue_position"], Value::Null, "{running}");
    assert!(
        listed
            .iter()
            .filter(|b| b["status"] == "queued")
            .all(|b| b["queue_position"].is_u64()),
        "{listed:?}"
    );

    let (s, body) = kiln
        .post(&format!("/builds/{first}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    let b = kiln.wait_build(&late).await;
    assert_eq!(b["status"], "succeeded", "{b}");
    let mut a_starts = Vec::new();
    for id in &queued_a {
        let a = kiln.wait_build(id).await;
        assert_eq!(a["status"], "succeeded", "{a}");
        a_starts.push(a["started_at"].as_str().unwrap().to_string());
    }
    let b_start = b["started_at"].as_str().unwrap();
    assert!(
        a_starts.iter().all(|a| a.as_str() > b_start),
        "B started at {b_start}, A's queued builds at {a_starts:?}"
    );
    let mut sorted = a_starts.clone();
    sorted.sort();
    assert_eq!(a_starts, sorted, "A's builds started in queue order");
}
