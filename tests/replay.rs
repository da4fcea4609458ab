//! Replay dedupe (issue 11): a signed delivery sent again under a new delivery id (a replay of a
//! captured body) is answered like a redelivery (2xx, `duplicate`) and builds nothing; a new push is
//! still a new event. Through the real hook path: router, signature check, ingest writer, SQLite.
//!
//! No Docker daemon is needed: the builds a push queues are counted, never waited for.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::kiln::Kiln;
use support::{Registry, ZERO_SHA, github_push_payload, new_delivery_id, post_github_hook};

const CLONE_URL: &str = "https://github.com/acme/widget.git";
const COMMIT: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";

async fn events(kiln: &Kiln, ns: &str, repo: &str) -> Vec<Value> {
    let (s, body) = kiln
        .get(&format!("/namespaces/{ns}/repos/{repo}/events?limit=200"))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body.as_array().expect("a list of events").clone()
}

async fn send(kiln: &Kiln, secret: &str, delivery: &str, body: &[u8]) -> (StatusCode, Value) {
    let resp = post_github_hook(
        &format!("{}/hooks/github", kiln.url),
        "push",
        delivery,
        secret,
        body,
    )
    .await;
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn push_body() -> Vec<u8> {
    serde_json::to_vec(&github_push_payload(
        CLONE_URL,
        "refs/heads/main",
        ZERO_SHA,
        COMMIT,
        false,
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_body_under_a_new_delivery_id_builds_nothing() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let secret = kiln.ci_repo("acme", "widget", CLONE_URL).await;
    kiln.rule(
        "acme",
        "widget",
        json!({"type": "branch", "name": "main", "overwrite": true}),
    )
    .await;
    let body = push_body();
    let first = new_delivery_id();
    let (s, answer) = send(&kiln, &secret, &first, &body).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["builds"].as_array().unwrap().len(), 1, "{answer}");

    // The same signed body, a new delivery id: answered as a duplicate, nothing queued.
    let (s, answer) = send(&kiln, &secret, &new_delivery_id(), &body).await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({"builds": [], "duplicate": true}));
    // And again with the first id (a plain redelivery): the same.
    let (s, answer) = send(&kiln, &secret, &first, &body).await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    assert_eq!(answer["duplicate"], true, "{answer}");

    let stored = events(&kiln, "acme", "widget").await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["delivery_id"], first.as_str());
    assert_eq!(stored[0]["duplicates"], 2, "{}", stored[0]);
    assert_eq!(kiln.builds("acme", "widget").await.len(), 1);

    // A different body (a new push of the same commit) is a new event and builds.
    let other = push_body();
    assert_ne!(other, body);
    let (s, answer) = send(&kiln, &secret, &new_delivery_id(), &other).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["builds"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(events(&kiln, "acme", "widget").await.len(), 2);
    assert_eq!(kiln.builds("acme", "widget").await.len(), 2);
}

/// The digest is per repository: one delivery for two repositories linked to the same git
/// repository is stored for each, and its replay for neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_refused_for_every_repository_it_was_stored_for() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let secret_a = kiln.ci_repo("acme", "widget", CLONE_URL).await;
    let secret_b = kiln.ci_repo("other", "widget", CLONE_URL).await;
    assert_ne!(secret_a, secret_b);
    let body = push_body();
    for secret in [&secret_a, &secret_b] {
        let (s, answer) = send(&kiln, secret, &new_delivery_id(), &body).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{answer}");
    }
    for secret in [&secret_a, &secret_b] {
        let (s, answer) = send(&kiln, secret, &new_delivery_id(), &body).await;
        assert_eq!(s, StatusCode::OK, "{answer}");
        assert_eq!(answer["duplicate"], true, "{answer}");
    }
    for ns in ["acme", "other"] {
        let stored = events(&kiln, ns, "widget").await;
        assert_eq!(stored.len(), 1, "{ns}: {stored:?}");
        assert_eq!(stored[0]["duplicates"], 1, "{ns}: {}", stored[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_replays_store_one_event_and_one_build() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let secret = kiln.ci_repo("acme", "widget", CLONE_URL).await;
    kiln.rule(
        "acme",
        "widget",
        json!({"type": "branch", "name": "main", "overwrite": true}),
    )
    .await;
    let body = push_body();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (url, secret, body, barrier) = (
            format!("{}/hooks/github", kiln.url),
            secret.clone(),
            body.clone(),
            barrier.clone(),
        );
        tasks.spawn(async move {
            barrier.wait().await;
            let resp = post_github_hook(&url, "push", &new_delivery_id(), &secret, &body).await;
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap())
        });
    }
    let mut accepted = Vec::new();
    let mut duplicates = 0;
    while let Some(joined) = tasks.join_next().await {
        let (status, answer) = joined.unwrap();
        match status {
            StatusCode::ACCEPTED => accepted.push(answer),
            StatusCode::OK => {
                assert_eq!(answer, json!({"builds": [], "duplicate": true}));
                duplicates += 1;
            }
            other => panic!("{other}: {answer}"),
        }
    }
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(duplicates, 31);
    let stored = events(&kiln, "acme", "widget").await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["duplicates"], 31, "{}", stored[0]);
    let builds = kiln.builds("acme", "widget").await;
    assert_eq!(builds.len(), 1, "{builds:?}");
    assert_eq!(builds[0]["id"], accepted[0]["builds"][0]);
}
