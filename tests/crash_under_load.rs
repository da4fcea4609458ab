//! Crash under load (issue 11, faults): signed GitHub pushes (each a real new commit in a real bare
//! repository) and registry events (real `docker push`es, which the real registry notifies kiln of)
//! come from several clients at once while the real kiln binary is killed with SIGKILL at random
//! moments and started again over the same data dir and port. A client whose request fails because
//! kiln died retries it with the same delivery id, as GitHub's redelivery does; the registry retries
//! its notifications by itself.
//!
//! After a final settle: every push answered 2xx is stored (the events API) and made exactly one
//! build, which ended (succeeded, or failed with a reason); every new version was announced exactly
//! once per receiver, counting distinct Standard Webhooks `webhook-id`s (kiln sends a delivery cut
//! by a crash again with the same id, so receivers dedupe it; those raw re-sends are counted and
//! printed); and `PRAGMA integrity_check` says ok after every kill and at the end.
//!
//! The kill offsets come from a seeded RNG; the seed is printed and can be set with
//! `KILN_CRASH_SEED=N` to replay a run's schedule.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::kiln::{KilnApi, REGISTRY_EVENTS_TOKEN};
use support::kiln_process::KilnProcess;
use support::{
    GitRepo, RecordingServer, Registry, github_push_payload, github_signature, new_delivery_id,
    wait_until,
};

const REPOS: usize = 3;
const PUSHES_PER_REPO: usize = 8;
const DOCKER_PUSHES: usize = 5;
const KILLS: usize = 6;
const SETTLE: Duration = Duration::from_secs(300);
const EVENTS: [&str; 4] = [
    "image.pushed",
    "build.started",
    "build.succeeded",
    "build.failed",
];

/// One signed push a client had answered 2xx, and how many times it had to send it.
#[derive(Debug, Clone)]
struct AnsweredPush {
    repo: String,
    delivery: String,
    commit: String,
    sends: usize,
}

/// Sends the delivery until kiln answers 2xx: a connection error or a 5xx (kiln killed or starting)
/// is retried with the same delivery id and body, as GitHub redelivers.
async fn send_until_answered(
    http: &reqwest::Client,
    url: &str,
    delivery: &str,
    secret: &str,
    body: &[u8],
) -> usize {
    let mut sends = 0;
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        sends += 1;
        let sent = http
            .post(format!("{url}/hooks/github"))
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", github_signature(secret, body))
            .body(body.to_vec())
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => return sends,
            Ok(resp) if resp.status().is_server_error() => {}
            Ok(resp) => {
                let status = resp.status();
                panic!(
                    "delivery {delivery} answered {status}: {}",
                    resp.text().await.unwrap_or_default()
                );
            }
            Err(_) => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery {delivery} was not answered 2xx within {SETTLE:?}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

fn integrity_check(db: &Path) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg("PRAGMA integrity_check;")
        .output()
        .expect("run sqlite3");
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn list(kiln: &KilnApi, path: &str) -> Vec<Value> {
    let (s, body) = kiln.get(path).await;
    assert!(s.is_success(), "GET {path}: {s} {body}");
    body.as_array()
        .unwrap_or_else(|| panic!("GET {path}: {body}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kiln_killed_at_random_under_load_loses_nothing_and_duplicates_nothing() {
    support::ensure_docker();
    let seed: u64 = std::env::var("KILN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("crash under load: seed {seed} (KILN_CRASH_SEED={seed} replays this kill schedule)");
    let mut rng = StdRng::seed_from_u64(seed);

    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let registry = Registry::start_with_notifications(
        &format!("http://{listen}/registry/events"),
        REGISTRY_EVENTS_TOKEN,
    );
    let data = tempfile::tempdir().expect("data dir");
    let db_path = data.path().join("kiln.db");
    let env = [
        ("KILN_REGISTRY_EVENTS_TOKEN", REGISTRY_EVENTS_TOKEN),
        ("KILN_WEBHOOK_ALLOW", "127.0.0.1"),
        ("KILN_BUILD_WORKERS", "2"),
        // Retries of a delivery that failed come quickly (none should: the receivers answer 200).
        ("KILN_DELIVERY_BACKOFF_MS", "200"),
    ];
    let mut kiln = KilnProcess::start_in_on(&registry, data.path(), port, &env).await;
    let url = kiln.url.clone();

    // Three repositories built from pushes, one filled by `docker push`; a receiver for each.
    let receivers = Arc::new({
        let mut r = BTreeMap::new();
        for name in (0..REPOS)
            .map(|i| format!("app{i}"))
            .chain(["pushed".to_string()])
        {
            r.insert(name, RecordingServer::start().await);
        }
        r
    });
    let mut sources = Vec::new();
    for i in 0..REPOS {
        let name = format!("app{i}");
        let git = GitRepo::new();
        git.write("Dockerfile", "FROM scratch\nCOPY n.txt /n.txt\n");
        git.write("n.txt", "0\n");
        git.commit("first");
        git.push("main");
        let secret = kiln.ci_repo("load", &name, &git.clone_url()).await;
        kiln.rule(
            "load",
            &name,
            json!({"type": "branch", "name": "main", "version": "{sha7}"}),
        )
        .await;
        sources.push((name, git, secret));
    }
    let (s, body) = kiln
        .post("/namespaces/load/repos", json!({"name": "pushed"}))
        .await;
    assert!(s.is_success(), "{body}");
    let mut webhooks = BTreeMap::new();
    for (name, receiver) in receivers.iter() {
        let (s, hook) = kiln
            .post(
                &format!("/namespaces/load/repos/{name}/webhooks"),
                json!({"name": "load", "url": receiver.url, "events": EVENTS}),
            )
            .await;
        assert!(s.is_success(), "{hook}");
        webhooks.insert(name.clone(), hook["id"].as_str().unwrap().to_string());
    }

    // -- The load: one client per repository (commit, push to git, signed hook), one docker pusher.
    let mut clients = Vec::new();
    for (i, (name, git, secret)) in sources.into_iter().enumerate() {
        let url = url.clone();
        let mut pace = StdRng::seed_from_u64(seed ^ (i as u64 + 1));
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut answered = Vec::new();
            let mut before = git.head();
            for n in 1..=PUSHES_PER_REPO {
                git.write("n.txt", format!("{n}\n"));
                let commit = git.commit(&format!("push {n}"));
                git.push("main");
                let payload = github_push_payload(
                    &git.clone_url(),
                    "refs/heads/main",
                    &before,
                    &commit,
                    false,
                );
                let body = serde_json::to_vec(&payload).unwrap();
                let delivery = new_delivery_id();
                let sends = send_until_answered(&http, &url, &delivery, &secret, &body).await;
                answered.push(AnsweredPush {
                    repo: name.clone(),
                    delivery,
                    commit: commit.clone(),
                    sends,
                });
                before = commit;
                let pause = pace.random_range(300..1500);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            // The repository lives on until the builds are checked: they fetch from it.
            (answered, git)
        }));
    }
    let pushed_images = {
        let registry_addr = registry.addr.clone();
        tokio::spawn(async move {
            let mut pushed = Vec::new();
            for n in 1..=DOCKER_PUSHES {
                let tag = format!("v{n}");
                let image = format!("{registry_addr}/load/pushed:{tag}");
                let digest = support::docker_build_and_push(
                    &image,
                    &format!("FROM scratch\nLABEL kiln.test.crash=\"{seed}-{n}\"\n"),
                    &[],
                )
                .await;
                pushed.push((tag, digest));
            }
            pushed
        })
    };

    // -- The crashes: SIGKILL at a random moment, the database checked, kiln started again.
    let mut kills = 0;
    for _ in 0..KILLS {
        let after = rng.random_range(300..2500);
        tokio::time::sleep(Duration::from_millis(after)).await;
        kiln.signal("KILL");
        let status = kiln.wait_exit(Duration::from_secs(30)).await;
        assert!(!status.success(), "killed: {status}");
        kills += 1;
        assert_eq!(
            integrity_check(&db_path),
            "ok",
            "integrity after kill {kills}"
        );
        println!("kill {kills}: {after} ms after the start before it");
        kiln = KilnProcess::start_in_on(&registry, data.path(), port, &env).await;
    }

    let mut answered: Vec<AnsweredPush> = Vec::new();
    let mut _repos = Vec::new();
    for client in clients {
        let (pushes, git) = client.await.expect("a push client panicked");
        answered.extend(pushes);
        _repos.push(git);
    }
    let pushed_images = pushed_images.await.expect("the docker pusher panicked");

    // -- Settle: every build ended, every docker push recorded, every delivery done.
    let ended = |b: &Value| {
        matches!(
            b["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled" | "skipped")
        )
    };
    for i in 0..REPOS {
        let path = format!("/namespaces/load/repos/app{i}/builds?limit=200");
        wait_until(&format!("every build of app{i} to end"), SETTLE, || async {
            let builds = list(&kiln, &path).await;
            builds.len() >= PUSHES_PER_REPO && builds.iter().all(ended)
        })
        .await;
    }
    wait_until("every docker push to be a version", SETTLE, || async {
        let versions = list(&kiln, "/namespaces/load/repos/pushed/versions?limit=200").await;
        pushed_images.iter().all(|(tag, digest)| {
            versions
                .iter()
                .any(|v| v["tag"] == tag.as_str() && v["digest"] == digest.as_str())
        })
    })
    .await;
    for (name, hook) in &webhooks {
        let path = format!("/namespaces/load/repos/{name}/webhooks/{hook}/deliveries?limit=200");
        wait_until(
            &format!("every delivery to {name} to end"),
            SETTLE,
            || async {
                list(&kiln, &path)
                    .await
                    .iter()
                    .all(|d| d["status"] != "pending")
            },
        )
        .await;
    }

    // -- Every push answered 2xx is stored, once, and made exactly one build that ended.
    let mut events_lost = 0;
    let mut builds_total = 0;
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut builds_by_id: HashMap<String, Value> = HashMap::new();
    for i in 0..REPOS {
        let repo = format!("app{i}");
        let events = list(
            &kiln,
            &format!("/namespaces/load/repos/{repo}/events?limit=200"),
        )
        .await;
        let builds = list(
            &kiln,
            &format!("/namespaces/load/repos/{repo}/builds?limit=200"),
        )
        .await;
        for push in answered.iter().filter(|p| p.repo == repo) {
            let stored: Vec<&Value> = events
                .iter()
                .filter(|e| e["delivery_id"] == push.delivery.as_str())
                .collect();
            if stored.is_empty() {
                events_lost += 1;
            }
            assert!(stored.len() <= 1, "delivery stored twice: {stored:?}");
            let made: Vec<&Value> = builds
                .iter()
                .filter(|b| b["commit"] == push.commit.as_str())
                .collect();
            assert_eq!(
                made.len(),
                1,
                "push {} of {} made {} builds: {made:?}",
                push.commit,
                repo,
                made.len()
            );
        }
        assert_eq!(
            builds.len(),
            PUSHES_PER_REPO,
            "{repo}: one build per push, no other: {builds:?}"
        );
        for b in &builds {
            let status = b["status"].as_str().unwrap().to_string();
            assert!(
                status == "succeeded" || b["error"].as_str().is_some_and(|e| !e.is_empty()),
                "a build that did not succeed says why: {b}"
            );
            if status != "succeeded" {
                *reasons
                    .entry(format!("{status}: {}", b["error"].as_str().unwrap()))
                    .or_default() += 1;
            }
            *statuses.entry(status).or_default() += 1;
            builds_total += 1;
            builds_by_id.insert(b["id"].as_str().unwrap().to_string(), b.clone());
        }
    }
    assert_eq!(events_lost, 0, "events lost");
    println!("crash under load: builds that did not succeed, by reason: {reasons:#?}");

    // -- Notifications: per receiver, each event once (distinct webhook-ids); re-sends counted.
    let mut raw_resends = 0;
    let mut started_again = 0;
    let mut duplicates: Vec<String> = Vec::new();
    let mut deliveries_total = 0;
    for (name, receiver) in receivers.iter() {
        let requests = receiver.requests();
        let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for r in &requests {
            let id = r
                .header("webhook-id")
                .expect("a webhook-id header")
                .to_string();
            by_id.entry(id).or_default().push(r.json());
        }
        raw_resends += requests.len() - by_id.len();
        deliveries_total += by_id.len();
        for (id, bodies) in &by_id {
            assert!(
                bodies.windows(2).all(|w| w[0] == w[1]),
                "{name}: re-sends of {id} carry the same body"
            );
        }
        // One logical event: its kind and what it is about.
        let mut ids_per_event: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for (id, bodies) in &by_id {
            let body = &bodies[0];
            let event = body["event"].as_str().unwrap().to_string();
            let about = match event.as_str() {
                "image.pushed" => format!("{}@{}", body["tag"], body["digest"]),
                _ => body["build"]["id"].as_str().unwrap().to_string(),
            };
            ids_per_event
                .entry((event, about))
                .or_default()
                .insert(id.clone());
        }
        for ((event, about), ids) in &ids_per_event {
            if event == "build.started" {
                // A build that kiln's crash interrupted starts again (its next attempt): announced
                // again, each time with its own start time, so a receiver tells the runs apart.
                let starts: BTreeSet<String> = ids
                    .iter()
                    .map(|id| by_id[id][0]["build"]["started_at"].to_string())
                    .collect();
                assert_eq!(
                    starts.len(),
                    ids.len(),
                    "{name}: build.started of {about} twice for one run: {ids:?}"
                );
                started_again += ids.len() - 1;
                continue;
            }
            if ids.len() > 1 {
                // Each message whole: its source (a build, a push) and times say which path sent it.
                let messages: Vec<&Value> = ids.iter().map(|id| &by_id[id][0]).collect();
                duplicates.push(format!(
                    "{name}: {event} of {about} was delivered as {} distinct messages: {ids:?}: {messages:#?}",
                    ids.len()
                ));
            }
        }
        // Every new version was announced; every build's end was announced.
        let versions = list(
            &kiln,
            &format!("/namespaces/load/repos/{name}/versions?limit=200"),
        )
        .await;
        for v in &versions {
            let key = (
                "image.pushed".to_string(),
                format!("{}@{}", v["tag"], v["digest"]),
            );
            assert!(
                ids_per_event.contains_key(&key),
                "{name}: version {}@{} was not announced",
                v["tag"],
                v["digest"]
            );
        }
        for (id, b) in builds_by_id
            .iter()
            .filter(|(_, b)| b["repository"] == name.as_str())
        {
            let end = match b["status"].as_str().unwrap() {
                "succeeded" => "build.succeeded",
                "failed" => "build.failed",
                _ => continue,
            };
            assert!(
                ids_per_event.contains_key(&(end.to_string(), id.clone())),
                "{name}: {end} of build {id} was not announced"
            );
        }
    }

    let sends: usize = answered.iter().map(|p| p.sends).sum();
    println!(
        "crash under load: seed {seed}, kills survived {kills}, pushes answered 2xx {} (sent {sends} times: \
         {} redeliveries), docker pushes {}, events lost {events_lost}, builds {builds_total} {statuses:?}, \
         notifications {deliveries_total} distinct, duplicate deliveries {}, raw re-sends with the same \
         webhook-id {raw_resends}, build.started announced again for a re-run {started_again}",
        answered.len(),
        sends - answered.len(),
        pushed_images.len(),
        duplicates.len(),
    );
    assert!(duplicates.is_empty(), "duplicates: {duplicates:#?}");
    assert!(kills >= 5);

    kiln.signal("TERM");
    kiln.wait_exit(Duration::from_secs(90)).await;
    assert_eq!(integrity_check(&db_path), "ok", "integrity at the end");
}

/// A webhook receiver that takes in the first request and never answers it (kiln dies meanwhile:
/// for kiln, the same as a receiver that acted on it and answered just as kiln was killed), then
/// answers 200 to every later one. Records every request.
struct HoldingReceiver {
    url: String,
    requests: Arc<std::sync::Mutex<Vec<support::RecordedRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HoldingReceiver {
    async fn start() -> HoldingReceiver {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(Some(request)) = support::read_request(&mut stream).await else {
                    continue;
                };
                let first = {
                    let mut all = recorded.lock().unwrap();
                    all.push(request);
                    all.len() == 1
                };
                if first {
                    held.push(stream);
                } else {
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                        )
                        .await;
                }
            }
        });
        HoldingReceiver {
            url,
            requests,
            task,
        }
    }

    fn requests(&self) -> Vec<support::RecordedRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for HoldingReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_cut_by_a_crash_is_sent_again_with_the_same_webhook_id() {
    support::ensure_docker();
    let port = support::free_port();
    let registry = Registry::start_with_notifications(
        &format!("http://127.0.0.1:{port}/registry/events"),
        REGISTRY_EVENTS_TOKEN,
    );
    let data = tempfile::tempdir().expect("data dir");
    let env = [
        ("KILN_REGISTRY_EVENTS_TOKEN", REGISTRY_EVENTS_TOKEN),
        ("KILN_WEBHOOK_ALLOW", "127.0.0.1"),
    ];
    let mut kiln = KilnProcess::start_in_on(&registry, data.path(), port, &env).await;
    let receiver = HoldingReceiver::start().await;
    kiln.repo("crash", "app").await;
    let (s, hook) = kiln
        .post(
            "/namespaces/crash/repos/app/webhooks",
            json!({"name": "held", "url": receiver.url, "events": ["image.pushed"]}),
        )
        .await;
    assert!(s.is_success(), "{hook}");

    let digest = support::docker_build_and_push(
        &registry.image("crash/app", "v1"),
        "FROM scratch\nLABEL kiln.test.crash=held\n",
        &[],
    )
    .await;
    wait_until("the receiver to have the delivery", SETTLE, || async {
        !receiver.requests().is_empty()
    })
    .await;
    // The receiver has it; kiln has not recorded an answer: killed now.
    kiln.signal("KILL");
    kiln.wait_exit(Duration::from_secs(30)).await;
    let kiln = KilnProcess::start_in_on(&registry, data.path(), port, &env).await;
    wait_until("the delivery to be sent again", SETTLE, || async {
        receiver.requests().len() >= 2
    })
    .await;

    let requests = receiver.requests();
    let first = &requests[0];
    let again = &requests[1];
    assert_eq!(first.json()["digest"], digest.as_str());
    assert_eq!(
        first.header("webhook-id"),
        again.header("webhook-id"),
        "the same message, so the receiver can drop the second"
    );
    assert_eq!(first.body, again.body);
    // Signed again, for its new timestamp.
    assert!(again.header("webhook-signature").is_some());
    // kiln's record: one delivery, answered on its second attempt.
    let deliveries = list(
        &kiln,
        &format!(
            "/namespaces/crash/repos/app/webhooks/{}/deliveries",
            hook["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(deliveries[0]["status"], "succeeded", "{deliveries:?}");
    println!(
        "a delivery cut by a crash: sent {} times with webhook-id {}, attempts recorded {}",
        requests.len(),
        first.header("webhook-id").unwrap(),
        deliveries[0]["attempts"]
    );
}
