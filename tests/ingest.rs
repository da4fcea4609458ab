//! Inbound hooks under concurrency: many signed GitHub deliveries at once, through the real router
//! over real connections, are all answered and each stored exactly once (issue 8, section 1).
//!
//! No Docker daemon is needed: the rules either do not match (nothing builds) or the one build they
//! plan is only counted, never waited for.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::kiln::{ADMIN_TOKEN, Kiln};
use support::{Registry, ZERO_SHA, github_push_payload, new_delivery_id, post_github_hook};

/// A GitHub source kiln never fetches from in these tests.
const CLONE_URL: &str = "https://github.com/acme/widget.git";
const COMMIT: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";
/// Not a speed target: long enough for any sound implementation on a loaded machine, short enough
/// that a stall fails the test instead of hanging it.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// What one delivery got back: its status and body, or the transport error.
type Answer = Result<(StatusCode, Value), String>;

/// Sends each (delivery id, body) signed with `secret` to `/hooks/github`, all at once, each on its
/// own connection; waits at most [`ANSWER_WITHIN`] for all the answers. Panics naming what was
/// answered so far when they do not all come in time.
async fn deliver_concurrently(
    kiln: &Kiln,
    secret: &str,
    deliveries: &[(String, Vec<u8>)],
) -> Vec<(String, StatusCode, Value)> {
    let url = format!("{}/hooks/github", kiln.url);
    let answers: Arc<Mutex<Vec<(String, Answer)>>> = Arc::default();
    let start = Arc::new(tokio::sync::Barrier::new(deliveries.len()));
    let mut tasks = tokio::task::JoinSet::new();
    for (delivery, body) in deliveries {
        let (url, secret, body, delivery) = (
            url.clone(),
            secret.to_string(),
            body.clone(),
            delivery.clone(),
        );
        let (answers, start) = (answers.clone(), start.clone());
        tasks.spawn(async move {
            start.wait().await;
            let resp = post_github_hook(&url, "push", &delivery, &secret, &body).await;
            let status = resp.status();
            let answer = match resp.text().await {
                Ok(text) => Ok((
                    status,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                )),
                Err(e) => Err(format!("{status}, then reading the body: {e}")),
            };
            answers.lock().unwrap().push((delivery, answer));
        });
    }
    let all = async {
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    };
    let in_time = tokio::time::timeout(ANSWER_WITHIN, all).await.is_ok();
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for (_, a) in &answers {
        let key = match a {
            Ok((s, _)) => s.as_u16().to_string(),
            Err(e) => e.clone(),
        };
        *tally.entry(key).or_default() += 1;
    }
    assert!(
        in_time,
        "only {} of {} concurrent deliveries were answered within {ANSWER_WITHIN:?} (by status: {tally:?})",
        answers.len(),
        deliveries.len()
    );
    answers
        .into_iter()
        .map(|(d, a)| {
            let (s, b) = a.unwrap_or_else(|e| panic!("delivery {d}: {e}"));
            (d, s, b)
        })
        .collect()
}

/// Every stored event of `ns/repo`, through the API, all pages.
async fn events(kiln: &Kiln, ns: &str, repo: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!(
            "{}/api/v1/namespaces/{ns}/repos/{repo}/events?limit=200",
            kiln.url
        );
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let resp = kiln
            .http
            .get(&url)
            .bearer_auth(ADMIN_TOKEN)
            .timeout(ANSWER_WITHIN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(resp.status(), StatusCode::OK, "GET {url}");
        cursor = resp
            .headers()
            .get("x-next-cursor")
            .map(|v| v.to_str().unwrap().to_string());
        let page: Vec<Value> = resp.json().await.expect("a JSON list of events");
        all.extend(page);
        if cursor.is_none() {
            return all;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_signed_deliveries_are_all_answered_and_each_stored_once() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let secret = kiln.ci_repo("acme", "widget", CLONE_URL).await;
    // Pushes go to main: a tag rule never matches, so nothing builds.
    kiln.rule(
        "acme",
        "widget",
        json!({"type": "tag", "name": "v*", "overwrite": true}),
    )
    .await;
    // 64 pushes: each its own body (a body already stored under another delivery id is a replay).
    let sent: Vec<(String, Vec<u8>)> = (0..64)
        .map(|_| {
            let payload =
                github_push_payload(CLONE_URL, "refs/heads/main", ZERO_SHA, COMMIT, false);
            (new_delivery_id(), serde_json::to_vec(&payload).unwrap())
        })
        .collect();
    let deliveries: Vec<String> = sent.iter().map(|(d, _)| d.clone()).collect();

    let answers = deliver_concurrently(&kiln, &secret, &sent).await;

    assert_eq!(answers.len(), 64);
    for (delivery, status, body) in &answers {
        assert_eq!(*status, StatusCode::ACCEPTED, "delivery {delivery}: {body}");
        assert_eq!(body["builds"], json!([]), "delivery {delivery}: {body}");
    }
    let stored = events(&kiln, "acme", "widget").await;
    let mut by_delivery: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for e in &stored {
        by_delivery
            .entry(e["delivery_id"].as_str().expect("delivery_id"))
            .or_default()
            .push(e);
    }
    for d in &deliveries {
        let found = by_delivery.get(d.as_str()).map_or(0, Vec::len);
        assert_eq!(found, 1, "delivery {d} is stored {found} times");
        let e = by_delivery[d.as_str()][0];
        assert_eq!(e["provider"], "github", "{e}");
        assert_eq!(e["event"], "push", "{e}");
        assert_eq!(e["ref"], "refs/heads/main", "{e}");
        assert_eq!(e["commit"], COMMIT, "{e}");
        assert_eq!(e["duplicates"], 0, "{e}");
        assert_eq!(e["builds"], json!([]), "{e}");
    }
    assert_eq!(stored.len(), 64, "no event beyond the 64 deliveries");
    assert!(kiln.builds("acme", "widget").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_delivery_sent_sixteen_times_at_once_is_stored_once_and_builds_once() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let secret = kiln.ci_repo("acme", "widget", CLONE_URL).await;
    // This rule matches: a delivery stored twice would queue a second build.
    let rule = kiln
        .rule(
            "acme",
            "widget",
            json!({"type": "branch", "name": "main", "overwrite": true}),
        )
        .await;
    let payload = github_push_payload(CLONE_URL, "refs/heads/main", ZERO_SHA, COMMIT, false);
    let body = serde_json::to_vec(&payload).unwrap();
    let delivery = new_delivery_id();
    let same: Vec<(String, Vec<u8>)> = vec![(delivery.clone(), body); 16];

    let answers = deliver_concurrently(&kiln, &secret, &same).await;

    // One is accepted and queues the build; the other fifteen are answered as duplicates.
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(_, s, _)| *s == StatusCode::ACCEPTED)
        .map(|(_, _, b)| b)
        .collect();
    assert_eq!(accepted.len(), 1, "{answers:?}");
    let build_ids = accepted[0]["builds"].as_array().expect("builds");
    assert_eq!(build_ids.len(), 1, "{}", accepted[0]);
    for (_, status, body) in answers
        .iter()
        .filter(|(_, s, _)| *s != StatusCode::ACCEPTED)
    {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["duplicate"], true, "{body}");
        assert_eq!(body["builds"], json!([]), "{body}");
    }

    let stored = events(&kiln, "acme", "widget").await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["delivery_id"], delivery.as_str());
    assert_eq!(stored[0]["duplicates"], 15, "{}", stored[0]);
    assert_eq!(stored[0]["builds"], json!(build_ids), "{}", stored[0]);
    let builds = kiln.builds("acme", "widget").await;
    assert_eq!(builds.len(), 1, "{builds:?}");
    assert_eq!(builds[0]["id"], build_ids[0]);
    assert_eq!(builds[0]["rule_id"], rule.as_str());
    assert_eq!(builds[0]["commit"], COMMIT);
}

/// Hooks are routed through an in-memory index of the sources: every change to a source is seen by
/// the very next delivery (a new link, a rotated secret, an unlinked source, a deleted repository).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_changes_are_seen_by_the_next_delivery() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    // Each send is a new push (a new body: the same body again would be a replay).
    let send = |secret: String| {
        let kiln = &kiln;
        let payload = github_push_payload(CLONE_URL, "refs/heads/main", ZERO_SHA, COMMIT, false);
        async move {
            kiln.github_hook("push", &new_delivery_id(), &secret, &payload)
                .await
                .0
        }
    };
    // Nothing linked yet: refused (and the index is loaded, empty).
    assert_eq!(send("whatever".into()).await, StatusCode::UNAUTHORIZED);
    let first = kiln.ci_repo("acme", "widget", CLONE_URL).await;
    assert_eq!(send(first.clone()).await, StatusCode::ACCEPTED);

    // A second repository linked to the same git repository: both get the delivery.
    let second = kiln.ci_repo("other", "widget", CLONE_URL).await;
    assert_eq!(send(second.clone()).await, StatusCode::ACCEPTED);
    assert_eq!(events(&kiln, "other", "widget").await.len(), 1);

    // A rotated secret: the old one is refused at once, the new one accepted.
    let (s, body) = kiln
        .put(
            "/namespaces/acme/repos/widget/source",
            json!({"provider": "github", "clone_url": CLONE_URL, "regenerate_secret": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let rotated = body["webhook_secret"].as_str().unwrap().to_string();
    assert_ne!(rotated, first);
    assert_eq!(send(first.clone()).await, StatusCode::UNAUTHORIZED);
    assert_eq!(send(rotated.clone()).await, StatusCode::ACCEPTED);

    // Unlinked: refused.
    let (s, body) = kiln.delete("/namespaces/acme/repos/widget/source").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(send(rotated).await, StatusCode::UNAUTHORIZED);

    // The other repository deleted (its source with it): refused.
    assert_eq!(send(second.clone()).await, StatusCode::ACCEPTED);
    let (s, body) = kiln
        .delete("/namespaces/other/repos/widget?confirm=widget")
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(send(second).await, StatusCode::UNAUTHORIZED);
}

/// Large bodies (verified on the blocking pool): a signed 5 MB push is stored; the same body with a
/// wrong signature, or one that names no repository, is refused; several at once with small ones
/// keep the small ones answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_are_verified_and_stored_or_refused() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let secret = kiln.ci_repo("acme", "widget", CLONE_URL).await;
    let mut payload = github_push_payload(CLONE_URL, "refs/heads/main", ZERO_SHA, COMMIT, false);
    payload["head_commit"]["message"] = json!("x".repeat(5 << 20));
    let body = serde_json::to_vec(&payload).unwrap();
    assert!(body.len() > 5 << 20);

    let url = format!("{}/hooks/github", kiln.url);
    let big = post_github_hook(&url, "push", "big-1", &secret, &body);
    let small_payload = github_push_payload(CLONE_URL, "refs/heads/main", ZERO_SHA, COMMIT, false);
    let small_body = serde_json::to_vec(&small_payload).unwrap();
    let small = post_github_hook(&url, "push", "small-1", &secret, &small_body);
    let (big, small) = tokio::join!(big, small);
    assert_eq!(big.status(), StatusCode::ACCEPTED);
    assert_eq!(small.status(), StatusCode::ACCEPTED);

    let wrong = post_github_hook(&url, "push", "big-2", "not the secret", &body).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let mut nameless = payload.clone();
    nameless.as_object_mut().unwrap().remove("repository");
    let nameless = serde_json::to_vec(&nameless).unwrap();
    let refused = post_github_hook(&url, "push", "big-3", &secret, &nameless).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    let stored = events(&kiln, "acme", "widget").await;
    let ids: Vec<&str> = stored
        .iter()
        .map(|e| e["delivery_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"big-1") && ids.contains(&"small-1"));
    // Stored compressed, read back as received, byte for byte.
    for e in &stored {
        let kept = kiln::db::events::payload(&kiln.server.app.db, e["id"].as_str().unwrap())
            .await
            .unwrap()
            .expect("the event's payload");
        let sent = if e["delivery_id"] == "big-1" {
            &body
        } else {
            &small_body
        };
        assert!(kept == *sent, "payload of {} differs", e["delivery_id"]);
    }
    let (encodings,): (String,) =
        sqlx::query_as("SELECT group_concat(DISTINCT payload_encoding) FROM events")
            .fetch_one(&kiln.server.app.db)
            .await
            .unwrap();
    assert_eq!(encodings, "lz4");
}

/// A tiny ingest queue under 64 simultaneous deliveries: each is either stored and answered 202, or
/// refused 503 with `Retry-After` and stored nowhere; nothing answered 202 is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_ingest_queue_answers_503_with_retry_after_and_loses_nothing() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[("KILN_HOOK_QUEUE", "1")]).await;
    let secret = kiln.ci_repo("acme", "widget", CLONE_URL).await;
    let url = format!("{}/hooks/github", kiln.url);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        // Each its own push (the same body again would be a replay).
        let payload = github_push_payload(CLONE_URL, "refs/heads/main", ZERO_SHA, COMMIT, false);
        let body = serde_json::to_vec(&payload).unwrap();
        let (url, secret) = (url.clone(), secret.clone());
        tasks.spawn(async move {
            let delivery = format!("q-{i}");
            let resp = post_github_hook(&url, "push", &delivery, &secret, &body).await;
            let retry_after = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (delivery, resp.status(), retry_after)
        });
    }
    let mut accepted = Vec::new();
    let mut busy = 0;
    while let Some(answer) = tasks.join_next().await {
        let (delivery, status, retry_after) = answer.unwrap();
        match status {
            StatusCode::ACCEPTED => accepted.push(delivery),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(retry_after.as_deref(), Some("1"), "{delivery}");
                busy += 1;
            }
            other => panic!("{delivery}: {other}"),
        }
    }
    let mut stored: Vec<String> = events(&kiln, "acme", "widget")
        .await
        .iter()
        .map(|e| e["delivery_id"].as_str().unwrap().to_string())
        .collect();
    stored.sort();
    accepted.sort();
    assert_eq!(stored, accepted, "{busy} answered 503");
    assert_eq!(accepted.len() + busy, 64);
    println!("{} stored, {busy} refused for now", accepted.len());
}

/// The ingest writer keeps repositories and their rules from one batch to the next while no other
/// connection writes the database: a rule created, changed or deleted, and a repository hidden or
/// unhidden through the API, are all seen by the very next delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_and_repository_changes_are_seen_by_the_next_delivery() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let secret = kiln.ci_repo("acme", "widget", CLONE_URL).await;
    let mut pushes = 0;
    // Each push is a new commit (a new body: the same body again would be a replay). Returns the
    // builds it queued.
    let mut push = async || {
        pushes += 1;
        let commit = format!("{pushes:040x}");
        let payload = github_push_payload(CLONE_URL, "refs/heads/main", ZERO_SHA, &commit, false);
        let (s, body) = kiln
            .github_hook("push", &new_delivery_id(), &secret, &payload)
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{body}");
        body["builds"].as_array().expect("builds").len()
    };
    assert_eq!(push().await, 0, "no rule yet");
    assert_eq!(push().await, 0, "no rule yet, read from the writer's cache");

    let rule = kiln
        .rule(
            "acme",
            "widget",
            json!({"type": "branch", "name": "main", "overwrite": true}),
        )
        .await;
    assert_eq!(push().await, 1, "the new rule");
    let rule_path = format!("/namespaces/acme/repos/widget/rules/{rule}");
    let (s, body) = kiln.patch(&rule_path, json!({"name": "release"})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(push().await, 0, "the rule now names another branch");
    let (s, body) = kiln.patch(&rule_path, json!({"name": "main"})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(push().await, 1, "the rule names main again");

    let (s, body) = kiln
        .post("/namespaces/acme/repos/widget/hide", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(push().await, 0, "a hidden repository builds nothing");
    let (s, body) = kiln
        .post("/namespaces/acme/repos/widget/unhide", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(push().await, 1, "unhidden");

    let (s, body) = kiln.delete(&rule_path).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(push().await, 0, "the rule is gone");
    assert_eq!(events(&kiln, "acme", "widget").await.len(), pushes);
}
