//! A tag has one owner at a time: quick pushes to one branch, builds of one tag, superseded builds.
//! Real dockerd, real Distribution registry, real git repos, the real kiln server, a real HTTP receiver
//! for the notifications.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::kiln::Kiln;
use support::{GitRepo, RecordingServer, Registry, github_push_payload, new_delivery_id};

const ZERO: &str = "0000000000000000000000000000000000000000";

struct Setup {
    registry: Registry,
    kiln: Kiln,
    git: GitRepo,
    secret: String,
    receiver: RecordingServer,
    rule: String,
}

/// kiln with two build workers (the default), a `main` rule with overwrite on, and an `image.pushed`
/// subscriber.
async fn setup(repo: &str) -> Setup {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[("KILN_WEBHOOK_ALLOW", "127.0.0.1")]).await;
    let git = GitRepo::new();
    git.write("Dockerfile", format!("FROM {base}\nCOPY x /x\n"));
    git.write("x", "start\n");
    git.commit("first");
    git.push("main");
    let secret = kiln.ci_repo("acme", repo, &git.clone_url()).await;
    let rule = kiln
        .rule(
            "acme",
            repo,
            json!({"type": "branch", "name": "main", "overwrite": true}),
        )
        .await;
    let receiver = RecordingServer::start().await;
    let (s, body) = kiln
        .post(
            &format!("/namespaces/acme/repos/{repo}/webhooks"),
            json!({"name": "pushes", "url": receiver.url, "events": ["image.pushed"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    Setup {
        registry,
        kiln,
        git,
        secret,
        receiver,
        rule,
    }
}

/// Commits a Dockerfile (slow: a `RUN sleep`) and a file unique to this commit. The commits of a round
/// are pushed together (`push`) before any hook is sent, so the hooks follow each other closely
/// whatever the machine's load; each commit stays reachable from `main`.
fn commit(s: &Setup, label: &str, slow: bool) -> String {
    let base = support::ensure_base_image();
    // The slow step comes after the unique file, so Docker's build cache never makes A as fast as B.
    let run = if slow { "RUN sleep 5\n" } else { "" };
    s.git
        .write("Dockerfile", format!("FROM {base}\nCOPY x /x\n{run}"));
    s.git
        .write("x", format!("{label} {}\n", support::new_delivery_id()));
    s.git.commit(label)
}

/// Sends the GitHub push for `sha` and returns the one build it queued.
async fn hook(s: &Setup, sha: &str) -> String {
    let payload = github_push_payload(&s.git.clone_url(), "refs/heads/main", ZERO, sha, false);
    let (status, body) = s
        .kiln
        .github_hook("push", &new_delivery_id(), &s.secret, &payload)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let ids = body["builds"].as_array().expect("builds");
    assert_eq!(ids.len(), 1, "{body}");
    ids[0].as_str().unwrap().to_string()
}

/// `image.pushed` notifications for `:main` received so far, in order: (digest, build commit).
fn announced(s: &Setup) -> Vec<(String, String)> {
    s.receiver
        .requests()
        .iter()
        .map(|r| r.json())
        .filter(|m| m["event"] == "image.pushed" && m["tag"] == "main")
        .map(|m| {
            (
                m["digest"].as_str().unwrap_or_default().to_string(),
                m["build"]["commit"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

fn time(b: &Value, field: &str) -> String {
    b[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {b}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_quick_pushes_to_one_branch_leave_the_tag_on_the_newest_commit() {
    let s = setup("race").await;
    for round in 0..3 {
        // A's Dockerfile sleeps; B, pushed a moment later, is fast. Two workers are free. In rounds 0
        // and 2, B's hook comes once A runs; in round 1 right after A's, so A may still be queued.
        let a_sha = commit(&s, &format!("A{round}"), true);
        let b_sha = commit(&s, &format!("B{round}"), false);
        s.git.push("main");
        let a = hook(&s, &a_sha).await;
        if round != 1 {
            support::wait_until("A to start", Duration::from_secs(60), || async {
                s.kiln.get(&format!("/builds/{a}")).await.1["status"] == "building"
            })
            .await;
        }
        let b = hook(&s, &b_sha).await;

        let b_build = s.kiln.wait_build(&b).await;
        let a_build = s.kiln.wait_build(&a).await;
        let b_log = s.kiln.log(&b).await;
        assert_eq!(b_build["status"], "succeeded", "{b_build}\n{b_log}");
        assert_eq!(b_build["commit"], b_sha.as_str());
        // A never moved the tag: B was queued after it for the same tag.
        assert_eq!(a_build["status"], "cancelled", "{a_build}");
        assert_eq!(a_build["error"], format!("superseded by {b}"));
        let a_log = s.kiln.log(&a).await;
        assert!(!a_log.contains("Pushing "), "{a_log}");
        if a_build["started_at"].is_null() {
            // A was still queued when B arrived: superseded before it ran.
            assert_eq!(round, 1, "A should have run: {a_build}");
        } else {
            // A ran; B waited for it (never at the same time, in push order), and A, built, was
            // not pushed.
            assert!(
                time(&b_build, "started_at") >= time(&a_build, "finished_at"),
                "round {round}: B {b_build}\nA {a_build}"
            );
            assert!(
                a_log.contains(&format!(
                    "Not pushed: build {b} was queued after this one for :main"
                )),
                "{a_log}"
            );
        }

        // The registry, the versions and the notifications all end on B.
        let digest = b_build["digest"].as_str().expect("B's digest").to_string();
        assert_eq!(
            s.registry.manifest_digest("acme/race", "main").await,
            Some(digest.clone()),
            "round {round}"
        );
        let (_, version) = s
            .kiln
            .get("/namespaces/acme/repos/race/versions/main")
            .await;
        assert_eq!(version["digest"], digest.as_str(), "{version}");
        assert_eq!(version["build_id"], b.as_str(), "{version}");
        s.receiver
            .wait_for("image.pushed for B", Duration::from_secs(30), |r| {
                r.json()["digest"] == digest.as_str()
            })
            .await;
        let seen = announced(&s);
        assert!(
            seen.iter().all(|(_, commit)| *commit != a_sha),
            "A was announced: {seen:?}"
        );
        assert_eq!(seen.last().map(|(d, _)| d.as_str()), Some(digest.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_push_supersedes_queued_builds_and_builds_of_one_tag_never_overlap() {
    let s = setup("queue").await;
    // A builds (slow); B and C are pushed while it runs: C supersedes B at once.
    let a_sha = commit(&s, "A", true);
    let b_sha = commit(&s, "B", false);
    let c_sha = commit(&s, "C", false);
    s.git.push("main");
    let a = hook(&s, &a_sha).await;
    support::wait_until("A to start", Duration::from_secs(60), || async {
        s.kiln.get(&format!("/builds/{a}")).await.1["status"] == "building"
    })
    .await;
    let b = hook(&s, &b_sha).await;
    let c = hook(&s, &c_sha).await;

    let (_, b_build) = s.kiln.get(&format!("/builds/{b}")).await;
    assert_eq!(b_build["status"], "cancelled", "{b_build}");
    assert_eq!(b_build["error"], format!("superseded by {c}"));
    assert!(b_build["started_at"].is_null(), "B never ran: {b_build}");

    // The events view says so too.
    let (_, events) = s.kiln.get("/namespaces/acme/repos/queue/events").await;
    let b_event = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["commit"] == b_sha.as_str())
        .unwrap_or_else(|| panic!("B's event in {events}"));
    assert_eq!(b_event["builds"], json!([b]));
    assert_eq!(b_event["build_states"][0]["status"], "cancelled");
    assert_eq!(
        b_event["build_states"][0]["error"],
        format!("superseded by {c}")
    );

    let c_build = s.kiln.wait_build(&c).await;
    assert_eq!(c_build["status"], "succeeded", "{c_build}");
    let a_build = s.kiln.wait_build(&a).await;
    assert_eq!(a_build["error"], format!("superseded by {c}"), "{a_build}");
    assert_eq!(
        s.registry
            .manifest_digest("acme/queue", "main")
            .await
            .as_deref(),
        c_build["digest"].as_str()
    );

    // Two "build now"s of the rule at once: one after the other, both of the branch head (C).
    let path = format!("/namespaces/acme/repos/queue/rules/{}/builds", s.rule);
    let (first, second) =
        tokio::join!(s.kiln.post(&path, json!({})), s.kiln.post(&path, json!({})));
    assert_eq!(first.0, StatusCode::ACCEPTED, "{}", first.1);
    assert_eq!(second.0, StatusCode::ACCEPTED, "{}", second.1);
    let mut now = vec![
        s.kiln.wait_build(first.1["id"].as_str().unwrap()).await,
        s.kiln.wait_build(second.1["id"].as_str().unwrap()).await,
    ];
    now.sort_by_key(|b| time(b, "started_at"));
    for b in &now {
        assert_eq!(b["commit"], c_sha.as_str(), "{b}");
        assert_eq!(b["tag"], "main", "{b}");
    }
    assert!(
        time(&now[1], "started_at") >= time(&now[0], "finished_at"),
        "overlapping builds of :main: {now:?}"
    );
}
