//! New-image notifications end to end: subscriptions, signed deliveries to a real HTTP receiver on
//! 127.0.0.1 (allow-listed), retries, timeouts, the access records, filters, redelivery and test
//! events, restarts with deliveries pending, outbound safety, and secrets kept out of API answers and
//! logs. Versions come from real builds and `docker push` (real dockerd and registry) or from the
//! registry's notification envelopes posted to `/registry/events`, the path `docker push` takes.

mod support;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use support::kiln::{ADMIN_TOKEN, Kiln};
use support::{GitRepo, Registry, docker_build_and_push, github_push_payload, wait_until};
use tokio::io::AsyncWriteExt;

const EVENTS_TOKEN: &str = "registry-events-token-for-notify-tests";
const ZERO: &str = "0000000000000000000000000000000000000000";
const WAIT: Duration = Duration::from_secs(60);
const ALL_EVENTS: [&str; 4] = [
    "image.pushed",
    "build.started",
    "build.succeeded",
    "build.failed",
];
const ENVELOPE_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

// ---------------------------------------------------------------------------------------------
// A webhook receiver that can answer a status, hang, close the connection, or send a big body
// ---------------------------------------------------------------------------------------------

/// What the receiver does with one request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    /// Answers this status with a small JSON body and an `X-Receiver` header.
    Status(u16),
    /// Reads the request and never answers.
    Hang,
    /// Reads the request and closes the connection without a word.
    Close,
    /// Answers 200 with a text body of this many bytes.
    Big(usize),
}

/// One request the receiver got, and what it did with it.
#[derive(Clone, Debug)]
struct Hit {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    at: Instant,
    answer: Answer,
}

impl Hit {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: not JSON ({e}): {}",
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn webhook_id(&self) -> String {
        self.header("webhook-id")
            .unwrap_or_else(|| panic!("{}: no webhook-id header", self.path))
            .to_string()
    }

    /// One line about it, for failure messages.
    fn summary(&self) -> String {
        let body: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        let event = body["event"]
            .as_str()
            .or(body["type"].as_str())
            .unwrap_or("?");
        format!(
            "{} {event} tag={} id={} → {:?}",
            self.path,
            body["tag"],
            self.header("webhook-id").unwrap_or("-"),
            self.answer
        )
    }

    /// Whether the receiver answered it with a 2xx (a successful delivery, from its side).
    fn succeeded(&self) -> bool {
        matches!(self.answer, Answer::Status(200..=299) | Answer::Big(_))
    }
}

#[derive(Default)]
struct ReceiverState {
    hits: Mutex<Vec<Hit>>,
    scripts: Mutex<HashMap<String, VecDeque<Answer>>>,
}

/// A plain HTTP/1.1 receiver on 127.0.0.1: each path follows its script (then answers 200), every
/// request is recorded with the answer it got. Stops when dropped.
struct Receiver {
    base: String,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        Self::listen(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        )
    }

    async fn start_on(port: u16) -> Receiver {
        Self::listen(
            tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .expect("bind"),
        )
    }

    fn listen(listener: tokio::net::TcpListener) -> Receiver {
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(ReceiverState::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let _ = receive(stream, state).await;
                });
            }
        });
        Receiver { base, state, task }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The next requests to `path` get these answers, in order; 200 after them.
    fn script(&self, path: &str, answers: &[Answer]) {
        self.state
            .scripts
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_default()
            .extend(answers.iter().copied());
    }

    fn hits(&self, path: &str) -> Vec<Hit> {
        self.state
            .hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` got at least `n` requests and returns them all.
    async fn wait_hits(&self, path: &str, n: usize) -> Vec<Hit> {
        poll(&format!("{n} requests to {path}"), || {
            let done = self.hits(path).len() >= n;
            let seen: Vec<String> = self
                .state
                .hits
                .lock()
                .unwrap()
                .iter()
                .map(Hit::summary)
                .collect();
            async move { (done, seen) }
        })
        .await;
        self.hits(path)
    }
}

impl Receiver {
    /// Waits until `path` got a JSON body that satisfies `matches` and returns that request.
    async fn wait_event(&self, path: &str, matches: impl Fn(&Value) -> bool) -> Hit {
        poll(&format!("a matching request to {path}"), || {
            let all = self.state.hits.lock().unwrap().clone();
            let hit = all
                .iter()
                .find(|h| {
                    h.path == path
                        && matches(&serde_json::from_slice(&h.body).unwrap_or(Value::Null))
                })
                .cloned();
            let seen: Vec<String> = all.iter().map(Hit::summary).collect();
            async move { (hit.is_some(), (hit, seen)) }
        })
        .await
        .0
        .expect("found")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    mut stream: tokio::net::TcpStream,
    state: Arc<ReceiverState>,
) -> std::io::Result<()> {
    let Some(request) = support::read_request(&mut stream).await? else {
        return Ok(());
    };
    let (path, headers, body) = (request.path, request.headers, request.body);
    let answer = state
        .scripts
        .lock()
        .unwrap()
        .get_mut(&path)
        .and_then(VecDeque::pop_front)
        .unwrap_or(Answer::Status(200));
    state.hits.lock().unwrap().push(Hit {
        path,
        headers,
        body,
        at: Instant::now(),
        answer,
    });
    let (status, content_type, body) = match answer {
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            return Ok(());
        }
        Answer::Close => return Ok(()),
        Answer::Big(n) => (200, "text/plain", "x".repeat(n)),
        Answer::Status(s) if (200..300).contains(&s) => {
            (s, "application/json", r#"{"received":true}"#.to_string())
        }
        Answer::Status(s) => (
            s,
            "application/json",
            r#"{"error":"try again later"}"#.to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status} Scripted\r\nContent-Type: {content_type}\r\nX-Receiver: kiln-notify-test\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

// ---------------------------------------------------------------------------------------------
// Standard Webhooks, checked independently of kiln's code
// ---------------------------------------------------------------------------------------------

/// A secret of the Standard Webhooks form, made here.
fn new_secret() -> String {
    format!("whsec_{}", STANDARD.encode(rand::random::<[u8; 32]>()))
}

/// Checks `webhook-signature` (`v1,BASE64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))`, key = the
/// base64-decoded part of the `whsec_` secret) and that the timestamp is within 5 minutes of now.
fn verify(secret: &str, hit: &Hit) -> Result<(), String> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("the secret has no whsec_ prefix")?;
    let key = STANDARD.decode(encoded).map_err(|e| e.to_string())?;
    let id = hit.header("webhook-id").ok_or("no webhook-id")?;
    let ts = hit
        .header("webhook-timestamp")
        .ok_or("no webhook-timestamp")?;
    let sent: i64 = ts
        .parse()
        .map_err(|_| format!("webhook-timestamp {ts} is not a number"))?;
    if (chrono::Utc::now().timestamp() - sent).abs() > 300 {
        return Err(format!("webhook-timestamp {ts} is not now"));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&hit.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let given = hit
        .header("webhook-signature")
        .ok_or("no webhook-signature")?;
    if given.split(' ').any(|s| s == expected) {
        Ok(())
    } else {
        Err(format!("webhook-signature {given}, expected {expected}"))
    }
}

fn assert_signed(secret: &str, hits: &[Hit]) {
    for h in hits {
        if let Err(e) = verify(secret, h) {
            panic!(
                "{}: signature does not verify: {e}\nbody: {}",
                h.path,
                String::from_utf8_lossy(&h.body)
            );
        }
    }
}

fn assert_rfc3339(v: &Value, what: &str) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {v}"));
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{what}: {s} is not RFC 3339: {e}"));
}

fn time(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{v} is not RFC 3339: {e}"))
}

// ---------------------------------------------------------------------------------------------
// kiln set-up and API helpers
// ---------------------------------------------------------------------------------------------

/// kiln's warnings and errors in the test's output (shown when it fails); `KILN_TEST_LOG` sets the
/// filter.
fn show_kiln_logs() {
    let filter = std::env::var("KILN_TEST_LOG").unwrap_or_else(|_| "kiln=warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

/// Fast retries, a short timeout, the receiver's 127.0.0.1 allow-listed, registry events accepted;
/// `extra` goes on top.
async fn notify_kiln(registry: &Registry, extra: &[(&str, &str)]) -> Kiln {
    show_kiln_logs();
    let mut vars = vec![
        ("KILN_REGISTRY_EVENTS_TOKEN", EVENTS_TOKEN),
        ("KILN_WEBHOOK_ALLOW", "127.0.0.1"),
        ("KILN_DELIVERY_BACKOFF_MS", "100"),
        ("KILN_DELIVERY_TIMEOUT_SECS", "2"),
    ];
    vars.extend_from_slice(extra);
    Kiln::start(registry, &vars).await
}

async fn subscribe(kiln: &Kiln, ns: &str, repo: &str, body: Value) -> Value {
    let (s, hook) = kiln
        .post(
            &format!("/namespaces/{ns}/repos/{repo}/webhooks"),
            body.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "POST webhooks {body}: {hook}");
    hook
}

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

async fn deliveries(kiln: &Kiln, ns: &str, repo: &str, hook: &str) -> Vec<Value> {
    let (s, list) = kiln
        .get(&format!(
            "/namespaces/{ns}/repos/{repo}/webhooks/{hook}/deliveries?limit=200"
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    list.as_array().expect("a list").clone()
}

async fn delivery(kiln: &Kiln, id: &str) -> Value {
    let (s, d) = kiln.get(&format!("/deliveries/{id}")).await;
    assert_eq!(s, StatusCode::OK, "GET /deliveries/{id}: {d}");
    d
}

/// Waits until the delivery is no longer pending and returns its detail.
async fn finished(kiln: &Kiln, id: &str) -> Value {
    let path = format!("/deliveries/{id}");
    poll(&format!("delivery {id} to finish"), || async {
        let d = kiln.get(&path).await.1;
        (
            matches!(d["status"].as_str(), Some("succeeded" | "failed")),
            d,
        )
    })
    .await
}

/// Waits until the subscription has `n` deliveries, none pending, and returns them (newest first).
async fn all_finished(kiln: &Kiln, ns: &str, repo: &str, hook: &str, n: usize) -> Vec<Value> {
    poll(
        &format!("{n} finished deliveries of webhook {hook}"),
        || async {
            let list = deliveries(kiln, ns, repo, hook).await;
            (
                list.len() >= n && list.iter().all(|d| d["status"] != "pending"),
                list,
            )
        },
    )
    .await
}

/// Polls `f` every 100 ms until it says done and returns its value; after [`WAIT`], panics with
/// `what` and the last value seen.
async fn poll<T, F, Fut>(what: &str, mut f: F) -> T
where
    T: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (bool, T)>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        let (done, value) = f().await;
        if done {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {WAIT:?} waiting until {what}; last seen: {value:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The digest of the image [`pushed`] pushes for `seed`.
fn digest_of(seed: &str) -> String {
    support::seeded_manifest(seed).2
}

/// Pushes the image of `seed` to the real registry as `repository:tag` and returns the registry's
/// notification of that push (kiln checks a notified tag against the registry before it records it).
async fn pushed(registry: &Registry, repository: &str, tag: &str, seed: &str) -> Value {
    let digest = registry.put_manifest(repository, tag, seed).await;
    support::manifest_push(repository, tag, &digest)
}

/// POSTs an envelope of `events` to kiln's `/registry/events` once; kiln's status and body.
async fn post_envelope(base_url: &str, events: &[Value]) -> (StatusCode, String) {
    let resp = reqwest::Client::new()
        .post(format!("{base_url}/registry/events"))
        .bearer_auth(EVENTS_TOKEN)
        .header("content-type", ENVELOPE_TYPE)
        .body(json!({ "events": events }).to_string())
        .send()
        .await
        .expect("POST /registry/events");
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

/// Sends an envelope as the registry does: again while kiln answers 5xx (kiln skips the events it
/// applied already, by id), up to 50 times. Each 5xx is printed; that kiln answers none is what
/// `registry_events_are_accepted_while_deliveries_are_recorded` checks.
async fn registry_notifies(base_url: &str, events: Vec<Value>) -> Value {
    for _ in 0..50 {
        let (status, text) = post_envelope(base_url, &events).await;
        if status.is_server_error() {
            eprintln!(
                "POST /registry/events → {status} {text}; sending it again, as the registry does"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(status, StatusCode::OK, "POST /registry/events: {text}");
        return serde_json::from_str(&text).unwrap_or(Value::Null);
    }
    panic!("POST /registry/events: 50 server errors in a row");
}

fn header_of(record: &Value, name: &str) -> Option<String> {
    record["headers"].as_object().and_then(|h| {
        h.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str().map(str::to_string))
    })
}

// ---------------------------------------------------------------------------------------------
// Subscriptions
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_validated_and_a_generated_secret_is_shown_once() {
    let registry = Registry::start();
    let kiln = notify_kiln(&registry, &[]).await;
    kiln.repo("acme", "api").await;
    let path = "/namespaces/acme/repos/api/webhooks";
    let url = "https://hooks.example.com/kiln";

    let bad = [
        (json!({"name": "x", "url": "not a url"}), "url"),
        (json!({"name": "x", "url": "ftp://example.com/hook"}), "url"),
        (json!({"name": "x", "url": "mailto:ops@example.com"}), "url"),
        (
            json!({"name": "x", "url": url, "events": ["image.deleted"]}),
            "events",
        ),
        (json!({"name": "x", "url": url, "events": []}), "events"),
        (
            json!({"name": "x", "url": url, "secret": "hunter2"}),
            "secret",
        ),
        (
            json!({"name": "x", "url": url, "secret": "whsec_"}),
            "secret",
        ),
        (
            json!({"name": "x", "url": url, "secret": "whsec_c2hvcnQ="}),
            "secret",
        ),
        (
            json!({"name": "x", "url": url, "secret": "whsec_not base64!"}),
            "secret",
        ),
        (
            json!({"name": "x", "url": url, "secret": STANDARD.encode([7u8; 32])}),
            "secret",
        ),
        (
            json!({"name": "x", "url": url, "secret": format!("whsec_{}", STANDARD.encode([7u8; 65]))}),
            "secret",
        ),
        (
            json!({"name": "x", "url": url, "payload_format": "xml"}),
            "payload_format",
        ),
        (json!({"name": "", "url": url}), "name"),
        (json!({"name": "x"}), "url"),
    ];
    for (body, field) in bad {
        let (s, err) = kiln.post(path, body.clone()).await;
        assert_eq!(
            s,
            StatusCode::UNPROCESSABLE_ENTITY,
            "POST {path} {body}: {err}"
        );
        assert_eq!(err["error"]["field"], field, "POST {path} {body}: {err}");
        assert!(
            !err["error"]["code"].as_str().unwrap_or_default().is_empty()
                && !err["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty(),
            "{err}"
        );
    }
    assert!(kiln.get(path).await.1.as_array().unwrap().is_empty());

    // Created with a generated secret: shown in this answer, in the Standard Webhooks form.
    let hook = subscribe(&kiln, "acme", "api", json!({"name": "main", "url": url})).await;
    let secret = hook["secret"]
        .as_str()
        .expect("a generated secret at creation")
        .to_string();
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 after whsec_");
    assert!((24..=64).contains(&key.len()), "{} bytes", key.len());
    assert_eq!(hook["name"], "main");
    assert_eq!(hook["url"], url);
    assert_eq!(hook["events"], json!(["image.pushed"]));
    assert_eq!(hook["tag_filter"], Value::Null);
    assert_eq!(hook["payload_format"], "kiln");
    assert_eq!(hook["active"], true);
    assert_rfc3339(&hook["created_at"], "created_at");
    let hook_id = id(&hook);
    let encoded = secret.trim_start_matches("whsec_").to_string();

    // ... and never again.
    let mut answers = vec![];
    let (s, got) = kiln.get(&format!("{path}/{hook_id}")).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert!(got.get("secret").is_none(), "GET shows a secret: {got}");
    answers.push(got);
    let (_, list) = kiln.get(path).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(
        list[0].get("secret").is_none(),
        "the list shows a secret: {list}"
    );
    answers.push(list);
    let (s, patched) = kiln
        .patch(&format!("{path}/{hook_id}"), json!({"name": "renamed"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{patched}");
    assert_eq!(patched["name"], "renamed");
    answers.push(patched);

    // A new secret by PATCH: checked the same way, never echoed.
    let (s, err) = kiln
        .patch(
            &format!("{path}/{hook_id}"),
            json!({"secret": "plain-text"}),
        )
        .await;
    assert_eq!(
        (s, err["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("secret")),
        "{err}"
    );
    let rotated = new_secret();
    let (s, patched) = kiln
        .patch(&format!("{path}/{hook_id}"), json!({"secret": rotated}))
        .await;
    assert_eq!(s, StatusCode::OK, "{patched}");
    answers.push(patched);

    // A given secret is accepted and not echoed either.
    let given = new_secret();
    let (s, other) = kiln
        .post(
            path,
            json!({"name": "given", "url": "https://hooks.example.com/other", "secret": given,
                   "events": ["build.failed", "image.pushed"], "tag_filter": "v*", "payload_format": "cloudevents"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{other}");
    assert!(
        other.get("secret").is_none(),
        "a given secret is echoed: {other}"
    );
    assert_eq!(other["tag_filter"], "v*");
    assert_eq!(other["payload_format"], "cloudevents");
    let mut events: Vec<String> = serde_json::from_value(other["events"].clone()).unwrap();
    events.sort();
    assert_eq!(events, vec!["build.failed", "image.pushed"]);
    answers.push(other);
    answers.push(kiln.get(path).await.1);
    for a in &answers {
        let text = a.to_string();
        for s in [&secret, &encoded, &rotated, &given] {
            assert!(
                !text.contains(s.as_str()),
                "an answer shows a secret: {text}"
            );
        }
    }

    // Names are unique per repository; unknown ids are 404.
    let (s, err) = kiln
        .post(path, json!({"name": "renamed", "url": url}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{err}");
    assert_eq!(
        kiln.get(&format!("{path}/no-such-webhook")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        kiln.get("/deliveries/no-such-delivery").await.0,
        StatusCode::NOT_FOUND
    );
    let (s, _) = kiln.delete(&format!("{path}/{hook_id}")).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        kiln.get(&format!("{path}/{hook_id}")).await.0,
        StatusCode::NOT_FOUND
    );
}

// ---------------------------------------------------------------------------------------------
// Builds and docker push, to two subscribers
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_and_docker_pushes_reach_two_subscribers_with_verifiable_signatures() {
    support::ensure_docker();
    let receiver = Receiver::start().await;
    let port = support::free_port();
    let registry = Registry::start_with_notifications(
        &format!("http://127.0.0.1:{port}/registry/events"),
        EVENTS_TOKEN,
    );
    let listen = format!("127.0.0.1:{port}");
    let kiln = notify_kiln(&registry, &[("KILN_LISTEN", &listen)]).await;

    let git = GitRepo::named("app");
    let unique = format!("{:?}", std::time::SystemTime::now());
    git.write("Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n");
    git.write(
        "Broken.Dockerfile",
        "FROM scratch\nCOPY missing.txt /missing.txt\n",
    );
    git.write("a.txt", &unique);
    let sha = git.commit("app");
    git.push("main");
    let gh_secret = kiln.ci_repo("acme", "app", &git.clone_url()).await;
    kiln.rule("acme", "app", json!({"type": "branch", "name": "main"}))
        .await;
    kiln.rule(
        "acme",
        "app",
        json!({"type": "branch", "name": "main", "dockerfile": "Broken.Dockerfile", "version": "broken"}),
    )
    .await;

    // A: kiln's JSON, every event, a generated secret. B: CloudEvents, image.pushed, a given secret.
    let a = subscribe(
        &kiln,
        "acme",
        "app",
        json!({"name": "everything", "url": receiver.url("/a"), "events": ALL_EVENTS}),
    )
    .await;
    let secret_a = a["secret"].as_str().expect("generated secret").to_string();
    let secret_b = new_secret();
    let b = subscribe(
        &kiln,
        "acme",
        "app",
        json!({"name": "cloud", "url": receiver.url("/b"), "secret": secret_b, "payload_format": "cloudevents"}),
    )
    .await;

    let payload = github_push_payload(&git.clone_url(), "refs/heads/main", ZERO, &sha, false);
    let (s, body) = kiln
        .github_hook("push", &support::new_delivery_id(), &gh_secret, &payload)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    let mut ok_build = Value::Null;
    let mut bad_build = Value::Null;
    for b in body["builds"].as_array().unwrap() {
        let build = kiln.wait_build(b.as_str().unwrap()).await;
        match build["status"].as_str() {
            Some("succeeded") => ok_build = build,
            Some("failed") => bad_build = build,
            _ => panic!("unexpected build end: {build}"),
        }
    }
    assert!(ok_build.is_object() && bad_build.is_object(), "{body}");
    let tag = ok_build["tag"].as_str().unwrap().to_string();
    let digest = ok_build["digest"].as_str().unwrap().to_string();

    // Both builds have ended, so everything they announce is queued: wait for it to be delivered.
    // A should get build.started twice, then image.pushed, build.succeeded and build.failed.
    let queued_a = deliveries(&kiln, "acme", "app", &id(&a)).await.len();
    all_finished(&kiln, "acme", "app", &id(&a), queued_a).await;
    let hits_a = receiver.wait_hits("/a", queued_a).await;
    let hits_b = receiver.wait_hits("/b", 1).await;
    assert_signed(&secret_a, &hits_a);
    assert_signed(&secret_b, &hits_b);
    let ids: HashSet<String> = hits_a.iter().map(Hit::webhook_id).collect();
    assert_eq!(ids.len(), hits_a.len(), "one message per event");
    let of = |event: &str| -> Vec<Value> {
        hits_a
            .iter()
            .map(Hit::json)
            .filter(|j| j["event"] == event)
            .collect()
    };
    for h in &hits_a {
        assert_eq!(h.header("content-type"), Some("application/json"));
        assert!(
            h.header("user-agent")
                .is_some_and(|ua| ua.starts_with("kiln/")),
            "{:?}",
            h.headers
        );
    }
    // (build.started is checked at the end.)
    let started = of("build.started");
    let started_ids: HashSet<String> = started
        .iter()
        .map(|j| j["build"]["id"].as_str().unwrap().to_string())
        .collect();
    for j in &started {
        assert_eq!(j["namespace"], "acme");
        assert_eq!(j["build"]["ref"], "refs/heads/main");
        assert_eq!(j["build"]["commit"], sha.as_str());
    }
    let succeeded = of("build.succeeded");
    assert_eq!(succeeded.len(), 1);
    assert_eq!(succeeded[0]["build"]["id"], ok_build["id"]);
    assert_eq!(succeeded[0]["build"]["status"], "succeeded");
    assert_eq!(succeeded[0]["build"]["digest"], digest.as_str());
    assert_eq!(succeeded[0]["namespace"], "acme");
    assert_eq!(succeeded[0]["repository"], "app");
    let failed = of("build.failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["build"]["id"], bad_build["id"]);
    assert_eq!(failed[0]["build"]["status"], "failed");
    assert_eq!(failed[0]["build"]["error"], bad_build["error"]);
    assert!(!bad_build["error"].as_str().unwrap_or_default().is_empty());

    let pushed = of("image.pushed");
    assert_eq!(pushed.len(), 1, "only the succeeded build made an image");
    let p = &pushed[0];
    assert_eq!(p["event"], "image.pushed");
    assert_eq!(p["namespace"], "acme");
    assert_eq!(p["repository"], "app");
    assert_eq!(p["tag"], tag.as_str());
    assert_eq!(p["digest"], digest.as_str());
    assert_eq!(
        p["image"],
        format!("{}/acme/app:{tag}", registry.addr),
        "{p}"
    );
    assert_eq!(p["source"], "build");
    assert_eq!(p["build"]["id"], ok_build["id"]);
    assert_eq!(p["build"]["ref"], "refs/heads/main");
    assert_eq!(p["build"]["commit"], sha.as_str());
    assert_rfc3339(&p["pushed_at"], "pushed_at");
    assert!(p.get("previous_digest").is_none(), "a new tag: {p}");

    // B: the same image, as a CloudEvent.
    let hb = &hits_b[0];
    assert_eq!(
        hb.header("content-type"),
        Some("application/cloudevents+json")
    );
    let ce = hb.json();
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["id"], hb.webhook_id());
    assert_eq!(ce["type"], "io.kiln.image.pushed");
    assert_eq!(ce["source"], format!("{}/repos/acme/app", kiln.url));
    assert_eq!(ce["subject"], tag.as_str());
    assert_eq!(ce["datacontenttype"], "application/json");
    assert_rfc3339(&ce["time"], "time");
    assert_eq!(&ce["data"], p, "the data is kiln's own body");

    // The registry's notification of kiln's own push does not announce the image again.
    wait_until(
        "the registry's notification of kiln's push",
        WAIT,
        || async {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM registry_events")
                .fetch_one(&kiln.server.app.db)
                .await
                .unwrap();
            n > 0
        },
    )
    .await;
    assert_eq!(
        deliveries(&kiln, "acme", "app", &id(&a)).await.len(),
        queued_a
    );
    assert_eq!(deliveries(&kiln, "acme", "app", &id(&b)).await.len(), 1);

    // A plain `docker push` through the registry reaches both too.
    let image = registry.image("acme/app", "by-hand");
    let files = [("f.txt", format!("one {unique}"))];
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let d1 = docker_build_and_push(&image, "FROM scratch\nCOPY f.txt /f.txt\n", &files).await;
    let p = receiver
        .wait_event("/a", |j| {
            j["tag"] == "by-hand" && j["digest"] == d1.as_str()
        })
        .await
        .json();
    let ce = receiver
        .wait_event("/b", |j| j["data"]["digest"] == d1.as_str())
        .await
        .json();
    assert_eq!(p["event"], "image.pushed", "{p}");
    assert_eq!(p["tag"], "by-hand");
    assert_eq!(p["digest"], d1.as_str());
    assert_eq!(p["source"], "push");
    assert_eq!(p["build"], Value::Null);
    assert_eq!(p["image"], image.as_str());
    assert!(p.get("previous_digest").is_none(), "a new tag: {p}");
    assert_eq!(ce["data"], p);

    // The tag moves: previous_digest says from where.
    let files = [("f.txt", format!("two {unique}"))];
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let d2 = docker_build_and_push(&image, "FROM scratch\nCOPY f.txt /f.txt\n", &files).await;
    assert_ne!(d1, d2);
    let p = receiver
        .wait_event("/a", |j| j["digest"] == d2.as_str())
        .await
        .json();
    let ce = receiver
        .wait_event("/b", |j| j["data"]["digest"] == d2.as_str())
        .await
        .json();
    assert_eq!(
        (
            p["tag"].clone(),
            p["digest"].clone(),
            p["previous_digest"].clone()
        ),
        (json!("by-hand"), json!(d2), json!(d1)),
        "{p}"
    );
    assert_eq!(ce["data"], p);
    assert_signed(&secret_a, &receiver.hits("/a"));
    assert_signed(&secret_b, &receiver.hits("/b"));
    let pushed_b = receiver.hits("/b");
    assert_eq!(pushed_b.len(), 3, "three images, three messages to B");
    // The receiver has its hits as soon as it answers; kiln records the answer just after.
    for hook in [id(&a), id(&b)] {
        let queued = deliveries(&kiln, "acme", "app", &hook).await.len();
        let list = all_finished(&kiln, "acme", "app", &hook, queued).await;
        assert!(list.iter().all(|d| d["status"] == "succeeded"), "{list:?}");
    }

    // Two builds ran, so A (subscribed to build.started) gets two build.started. Before e3a1789
    // (BEGIN IMMEDIATE), one `announce(build.started)` failed with "(code: 5) database is locked"
    // when both build workers started at once, and that event was lost.
    assert_eq!(
        started_ids,
        HashSet::from([id(&ok_build), id(&bad_build)]),
        "build.started for each build; A got: {:#?}",
        receiver
            .hits("/a")
            .iter()
            .map(Hit::summary)
            .collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// Retries, the access record, timeouts, closed connections
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_twice_gets_the_event_once_and_every_attempt_is_recorded() {
    let registry = Registry::start();
    let kiln = notify_kiln(&registry, &[("KILN_DELIVERY_ATTEMPTS", "3")]).await;
    kiln.repo("acme", "api").await;
    let receiver = Receiver::start().await;
    receiver.script("/flaky", &[Answer::Status(500), Answer::Status(503)]);
    receiver.script("/down", &[Answer::Status(500); 10]);
    receiver.script("/big", &[Answer::Big(100 * 1024)]);
    let secret = new_secret();
    let flaky = subscribe(
        &kiln,
        "acme",
        "api",
        json!({"name": "flaky", "url": receiver.url("/flaky"), "secret": secret}),
    )
    .await;
    let down = subscribe(
        &kiln,
        "acme",
        "api",
        json!({"name": "down", "url": receiver.url("/down")}),
    )
    .await;
    let big = subscribe(
        &kiln,
        "acme",
        "api",
        json!({"name": "big", "url": receiver.url("/big")}),
    )
    .await;

    let push = pushed(&registry, "acme/api", "v1", "retry").await;
    registry_notifies(&kiln.url, vec![push]).await;

    // Flaky: three attempts, one message, exactly one success.
    let list = all_finished(&kiln, "acme", "api", &id(&flaky), 1).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let summary = &list[0];
    for field in [
        "id",
        "event",
        "status",
        "attempts",
        "response_status",
        "duration_ms",
        "created_at",
    ] {
        assert!(summary.get(field).is_some(), "no {field} in {summary}");
    }
    assert_eq!(summary["event"], "image.pushed");
    assert_eq!(summary["status"], "succeeded", "{summary}");
    assert_eq!(summary["attempts"], 3);
    assert_eq!(summary["response_status"], 200);
    let hits = receiver.hits("/flaky");
    assert_eq!(hits.len(), 3, "three attempts reached the receiver");
    assert_signed(&secret, &hits);
    assert_eq!(
        hits.iter().filter(|h| h.succeeded()).count(),
        1,
        "one successful receipt"
    );
    assert!(hits[2].succeeded());
    let ids: HashSet<String> = hits.iter().map(Hit::webhook_id).collect();
    assert_eq!(ids.len(), 1, "the same webhook-id on every attempt");
    assert!(hits.iter().all(|h| h.body == hits[0].body));
    // Backoff: 100 ms then 300 ms nominal, ±20 %.
    let gap1 = hits[1].at - hits[0].at;
    let gap2 = hits[2].at - hits[1].at;
    assert!(gap1 >= Duration::from_millis(80), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(240), "{gap2:?}");

    // Its access record: the last attempt on top, every attempt in the log.
    let d = delivery(&kiln, &id(summary)).await;
    let req = &d["request"];
    assert_eq!(req["method"], "POST", "{d}");
    assert_eq!(req["url"], receiver.url("/flaky"));
    assert_eq!(req["body"].as_str().unwrap().as_bytes(), &hits[2].body[..]);
    assert_eq!(req["body_truncated"], false);
    assert_eq!(header_of(req, "webhook-id"), Some(hits[2].webhook_id()));
    assert_eq!(
        header_of(req, "webhook-signature").as_deref(),
        hits[2].header("webhook-signature")
    );
    assert_eq!(
        header_of(req, "content-type").as_deref(),
        Some("application/json")
    );
    let resp = &d["response"];
    assert_eq!(resp["status"], 200, "{d}");
    assert_eq!(resp["body"], r#"{"received":true}"#);
    assert_eq!(resp["body_truncated"], false);
    assert_eq!(
        header_of(resp, "x-receiver").as_deref(),
        Some("kiln-notify-test")
    );
    assert!(d["duration_ms"].as_i64().is_some_and(|ms| ms >= 0), "{d}");
    let log = d["attempt_log"].as_array().expect("attempt_log");
    let statuses: Vec<Value> = log
        .iter()
        .map(|a| a["response"]["status"].clone())
        .collect();
    assert_eq!(statuses, vec![json!(500), json!(503), json!(200)], "{d}");
    for (i, a) in log.iter().enumerate() {
        assert_eq!(a["attempt"], i + 1);
        assert_rfc3339(&a["started_at"], "started_at");
        assert!(a["duration_ms"].as_i64().is_some(), "{a}");
        assert_eq!(a["request"]["method"], "POST");
    }
    assert_eq!(log[0]["response"]["body"], r#"{"error":"try again later"}"#);
    assert!(
        log[0]["error"].as_str().is_some_and(|e| e.contains("500")),
        "{}",
        log[0]
    );
    assert_eq!(log[2]["error"], Value::Null);

    // Down: failed after KILN_DELIVERY_ATTEMPTS, each attempt recorded.
    let list = all_finished(&kiln, "acme", "api", &id(&down), 1).await;
    let d = delivery(&kiln, &id(&list[0])).await;
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["attempts"], 3);
    assert_eq!(d["response_status"], 500);
    assert!(
        d["error"].as_str().is_some_and(|e| e.contains("500")),
        "{d}"
    );
    assert_eq!(d["attempt_log"].as_array().unwrap().len(), 3);
    assert_eq!(receiver.hits("/down").len(), 3);

    // Big: the answer's body is kept up to 64 KiB, with the flag.
    let list = all_finished(&kiln, "acme", "api", &id(&big), 1).await;
    let d = delivery(&kiln, &id(&list[0])).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(d["response"]["body_truncated"], true, "{}", d["response"]);
    assert_eq!(
        d["response"]["body"].as_str().unwrap().len(),
        64 * 1024,
        "cut at 64 KiB"
    );
    assert_eq!(d["request"]["body_truncated"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_times_out_without_delaying_another_subscriber() {
    let registry = Registry::start();
    let kiln = notify_kiln(
        &registry,
        &[
            ("KILN_DELIVERY_TIMEOUT_SECS", "2"),
            ("KILN_DELIVERY_ATTEMPTS", "2"),
        ],
    )
    .await;
    kiln.repo("acme", "api").await;
    let receiver = Receiver::start().await;
    receiver.script("/hang", &[Answer::Hang, Answer::Hang]);
    receiver.script("/close", &[Answer::Close]);
    let hang = subscribe(
        &kiln,
        "acme",
        "api",
        json!({"name": "hang", "url": receiver.url("/hang")}),
    )
    .await;
    let ok = subscribe(
        &kiln,
        "acme",
        "api",
        json!({"name": "ok", "url": receiver.url("/ok")}),
    )
    .await;
    let close = subscribe(
        &kiln,
        "acme",
        "api",
        json!({"name": "close", "url": receiver.url("/close")}),
    )
    .await;

    registry_notifies(
        &kiln.url,
        vec![pushed(&registry, "acme/api", "v1", "hang").await],
    )
    .await;

    // The healthy subscriber is served while the hanging one is still waiting.
    let ok_hit = receiver.wait_hits("/ok", 1).await[0].clone();
    let hang_hit = receiver.wait_hits("/hang", 1).await[0].clone();
    let apart = if ok_hit.at > hang_hit.at {
        ok_hit.at - hang_hit.at
    } else {
        hang_hit.at - ok_hit.at
    };
    assert!(apart < Duration::from_millis(1500), "{apart:?} apart");
    let ok_d = all_finished(&kiln, "acme", "api", &id(&ok), 1).await[0].clone();
    assert_eq!(ok_d["status"], "succeeded", "{ok_d}");
    assert_eq!(ok_d["attempts"], 1);

    // The hanging one: cut at the timeout, retried, then failed.
    let list = all_finished(&kiln, "acme", "api", &id(&hang), 1).await;
    let d = delivery(&kiln, &id(&list[0])).await;
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["attempts"], 2);
    assert_eq!(d["response_status"], Value::Null);
    assert_eq!(d["response"], Value::Null, "{d}");
    let error = d["error"].as_str().unwrap_or_default();
    assert!(error.contains("timed out"), "{d}");
    let log = d["attempt_log"].as_array().unwrap();
    for a in log {
        let ms = a["duration_ms"].as_i64().unwrap();
        assert!(
            (1900..6000).contains(&ms),
            "a 2 s timeout took {ms} ms: {a}"
        );
        assert!(
            a["error"]
                .as_str()
                .unwrap_or_default()
                .contains("timed out"),
            "{a}"
        );
    }
    assert_eq!(receiver.hits("/hang").len(), 2);
    let first_end = time(&log[0]["started_at"])
        + chrono::Duration::milliseconds(log[0]["duration_ms"].as_i64().unwrap());
    assert!(
        time(&ok_d["finished_at"]) < first_end,
        "the healthy delivery ended at {} , after the hanging attempt ({first_end})",
        ok_d["finished_at"]
    );

    // A connection closed without an answer is an error, recorded, and retried.
    let list = all_finished(&kiln, "acme", "api", &id(&close), 1).await;
    let d = delivery(&kiln, &id(&list[0])).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(d["attempts"], 2);
    let first = &d["attempt_log"][0];
    assert_eq!(first["response"], Value::Null, "{first}");
    assert!(
        first["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{first}"
    );
    let hits = receiver.hits("/close");
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].webhook_id(), hits[1].webhook_id());
}

// ---------------------------------------------------------------------------------------------
// Test events, redelivery, filters
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_events_and_redelivery_work() {
    let registry = Registry::start();
    let kiln = notify_kiln(&registry, &[("KILN_DELIVERY_ATTEMPTS", "2")]).await;
    kiln.repo("acme", "api").await;
    let receiver = Receiver::start().await;
    let hook = subscribe(
        &kiln,
        "acme",
        "api",
        json!({"name": "main", "url": receiver.url("/main")}),
    )
    .await;
    let secret = hook["secret"].as_str().unwrap().to_string();
    let hooks = "/namespaces/acme/repos/api/webhooks";

    // A test event: sent now, answered with its delivery record.
    let (s, d) = kiln
        .post(&format!("{hooks}/{}/test", id(&hook)), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["event"], "test");
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(d["attempts"], 1);
    assert_eq!(d["response"]["status"], 200);
    assert!(
        header_of(&d["request"], "webhook-signature").is_some(),
        "{d}"
    );
    let hits = receiver.wait_hits("/main", 1).await;
    assert_signed(&secret, &hits);
    let body = hits[0].json();
    assert_eq!(body["event"], "test");
    assert_eq!(body["namespace"], "acme");
    assert_eq!(body["repository"], "api");

    // A test reaches a subscription whatever its filters, and shows a failing receiver's answer.
    receiver.script("/picky", &[Answer::Status(500)]);
    let picky = subscribe(
        &kiln,
        "acme",
        "api",
        json!({"name": "picky", "url": receiver.url("/picky"), "events": ["build.failed"], "tag_filter": "release-*"}),
    )
    .await;
    let (s, d) = kiln
        .post(&format!("{hooks}/{}/test", id(&picky)), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["response"]["status"], 500, "{d}");
    assert_eq!(d["response_status"], 500);
    assert_eq!(d["attempts"], 1);
    let d = finished(&kiln, &id(&d)).await;
    assert_eq!(d["status"], "succeeded", "retried after the 500: {d}");
    assert_eq!(receiver.hits("/picky").len(), 2);
    let (s, _) = kiln
        .post(&format!("{hooks}/no-such-hook/test"), json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Redeliver a delivered image event: the same message (same webhook-id, same body) again.
    registry_notifies(
        &kiln.url,
        vec![pushed(&registry, "acme/api", "v1", "redeliver").await],
    )
    .await;
    let list = all_finished(&kiln, "acme", "api", &id(&hook), 2).await;
    let original = list
        .iter()
        .find(|d| d["event"] == "image.pushed")
        .expect("an image.pushed delivery")
        .clone();
    assert_eq!(original["status"], "succeeded");
    let (s, again) = kiln
        .post(
            &format!("/deliveries/{}/redeliver", id(&original)),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{again}");
    assert_ne!(again["id"], original["id"]);
    assert_eq!(again["redelivery_of"], original["id"]);
    assert_eq!(again["event"], "image.pushed");
    let again = finished(&kiln, &id(&again)).await;
    assert_eq!(again["status"], "succeeded", "{again}");
    let hits = receiver.hits("/main");
    assert_eq!(hits.len(), 3, "test, image.pushed, its redelivery");
    assert_signed(&secret, &hits);
    assert_eq!(hits[1].webhook_id(), hits[2].webhook_id());
    assert_eq!(hits[1].body, hits[2].body);
    assert_eq!(hits[2].json()["tag"], "v1");
    assert_eq!(deliveries(&kiln, "acme", "api", &id(&hook)).await.len(), 3);

    // Redeliver a failed one once the receiver is back.
    receiver.script("/flaky", &[Answer::Status(502), Answer::Status(502)]);
    let flaky = subscribe(
        &kiln,
        "acme",
        "api",
        json!({"name": "flaky", "url": receiver.url("/flaky")}),
    )
    .await;
    registry_notifies(
        &kiln.url,
        vec![pushed(&registry, "acme/api", "v2", "redeliver-2").await],
    )
    .await;
    let failed = all_finished(&kiln, "acme", "api", &id(&flaky), 1).await[0].clone();
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["attempts"], 2);
    let (s, again) = kiln
        .post(&format!("/deliveries/{}/redeliver", id(&failed)), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{again}");
    let again = finished(&kiln, &id(&again)).await;
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(again["attempts"], 1);
    let hits = receiver.hits("/flaky");
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0].webhook_id(), hits[2].webhook_id());
    assert_eq!(
        kiln.post("/deliveries/no-such-delivery/redeliver", json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_choose_what_each_subscription_gets() {
    let registry = Registry::start();
    let kiln = notify_kiln(&registry, &[]).await;
    kiln.repo("acme", "api").await;
    kiln.repo("acme", "other").await;
    let receiver = Receiver::start().await;
    let sub = |name: &str, extra: Value| {
        let mut body = json!({"name": name, "url": receiver.url(&format!("/{name}"))});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let all = subscribe(&kiln, "acme", "api", sub("all", json!({}))).await;
    let glob = subscribe(
        &kiln,
        "acme",
        "api",
        sub("glob", json!({"tag_filter": "v*"})),
    )
    .await;
    let regex = subscribe(
        &kiln,
        "acme",
        "api",
        sub("regex", json!({"tag_filter": "/^v\\d+$/"})),
    )
    .await;
    let builds_only = subscribe(
        &kiln,
        "acme",
        "api",
        sub("builds-only", json!({"events": ["build.failed"]})),
    )
    .await;
    let paused = subscribe(
        &kiln,
        "acme",
        "api",
        sub("paused", json!({"active": false})),
    )
    .await;
    let elsewhere = subscribe(&kiln, "acme", "other", sub("elsewhere", json!({}))).await;

    registry_notifies(
        &kiln.url,
        vec![
            pushed(&registry, "acme/api", "v1", "f-v1").await,
            pushed(&registry, "acme/api", "main", "f-main").await,
            pushed(&registry, "acme/api", "v1.2", "f-v1.2").await,
        ],
    )
    .await;
    let (_, versions) = kiln.get("/namespaces/acme/repos/api/versions").await;
    assert_eq!(versions.as_array().map(Vec::len), Some(3), "{versions}");

    // The deliveries are queued with the versions, so they are all there once the envelope is answered.
    let tags_of = |hits: Vec<Hit>| -> Vec<String> {
        let mut t: Vec<String> = hits
            .iter()
            .map(|h| h.json()["tag"].as_str().unwrap().to_string())
            .collect();
        t.sort();
        t
    };
    let count = |hook: &Value| {
        let hook = id(hook);
        let kiln = &kiln;
        async move { deliveries(kiln, "acme", "api", &hook).await.len() }
    };
    assert_eq!(count(&all).await, 3);
    assert_eq!(count(&glob).await, 2);
    assert_eq!(count(&regex).await, 1);
    assert_eq!(count(&builds_only).await, 0);
    assert_eq!(count(&paused).await, 0);
    assert!(
        deliveries(&kiln, "acme", "other", &id(&elsewhere))
            .await
            .is_empty()
    );
    all_finished(&kiln, "acme", "api", &id(&all), 3).await;
    all_finished(&kiln, "acme", "api", &id(&glob), 2).await;
    all_finished(&kiln, "acme", "api", &id(&regex), 1).await;
    assert_eq!(tags_of(receiver.hits("/all")), vec!["main", "v1", "v1.2"]);
    assert_eq!(tags_of(receiver.hits("/glob")), vec!["v1", "v1.2"]);
    assert_eq!(tags_of(receiver.hits("/regex")), vec!["v1"]);
    for path in ["/builds-only", "/paused", "/elsewhere"] {
        assert!(receiver.hits(path).is_empty(), "{path} got something");
    }

    // An unchanged tag is not news (the same image pushed again); a moved one is, to every
    // subscriber it matches; the notice of the first push, come late, is not news either.
    let first = pushed(&registry, "acme/api", "v1", "f-v1").await;
    registry_notifies(&kiln.url, vec![first.clone()]).await;
    assert_eq!(count(&all).await, 3);
    let moved = pushed(&registry, "acme/api", "v1", "f-v1-moved").await;
    let mut late = first;
    late["id"] = json!(uuid::Uuid::new_v4().to_string());
    registry_notifies(&kiln.url, vec![moved, late]).await;
    assert_eq!(count(&all).await, 4);
    assert_eq!(count(&glob).await, 3);
    assert_eq!(count(&regex).await, 2);
    let moved = receiver
        .wait_event("/regex", |j| {
            j["digest"] == digest_of("f-v1-moved").as_str()
        })
        .await
        .json();
    assert_eq!(moved["tag"], "v1");
    assert_eq!(
        moved["previous_digest"],
        digest_of("f-v1").as_str(),
        "{moved}"
    );
    assert_eq!(moved["source"], "push");
    assert_eq!(moved["build"], Value::Null);

    // Filters change with PATCH: cleared, resumed, paused; a deleted subscription gets nothing more.
    let hooks = "/namespaces/acme/repos/api/webhooks";
    let (s, r) = kiln
        .patch(&format!("{hooks}/{}", id(&glob)), json!({"tag_filter": ""}))
        .await;
    assert_eq!(
        (s, r["tag_filter"].clone()),
        (StatusCode::OK, Value::Null),
        "{r}"
    );
    let (s, r) = kiln
        .patch(&format!("{hooks}/{}", id(&paused)), json!({"active": true}))
        .await;
    assert_eq!(
        (s, r["active"].clone()),
        (StatusCode::OK, json!(true)),
        "{r}"
    );
    let (s, r) = kiln
        .patch(&format!("{hooks}/{}", id(&regex)), json!({"active": false}))
        .await;
    assert_eq!(
        (s, r["active"].clone()),
        (StatusCode::OK, json!(false)),
        "{r}"
    );
    let (s, r) = kiln
        .patch(
            &format!("{hooks}/{}", id(&builds_only)),
            json!({"events": ["image.pushed"], "tag_filter": "dev*"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (s, r) = kiln
        .patch(
            &format!("{hooks}/{}", id(&all)),
            json!({"tag_filter": "/(/"}),
        )
        .await;
    assert_eq!(
        (s, r["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("tag_filter")),
        "{r}"
    );
    let (s, _) = kiln.delete(&format!("{hooks}/{}", id(&all))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    registry_notifies(
        &kiln.url,
        vec![pushed(&registry, "acme/api", "dev-7", "f-dev").await],
    )
    .await;
    assert_eq!(
        count(&glob).await,
        4,
        "the cleared filter lets dev-7 through"
    );
    assert_eq!(count(&paused).await, 1);
    assert_eq!(count(&regex).await, 2, "paused");
    assert_eq!(count(&builds_only).await, 1);
    for (hook, path) in [
        (&glob, "/glob"),
        (&paused, "/paused"),
        (&builds_only, "/builds-only"),
    ] {
        let n = count(hook).await;
        all_finished(&kiln, "acme", "api", &id(hook), n).await;
        assert_eq!(receiver.hits(path).last().unwrap().json()["tag"], "dev-7");
    }
    assert_eq!(receiver.hits("/all").len(), 4, "nothing after the deletion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_events_are_accepted_while_deliveries_are_recorded() {
    let registry = Registry::start();
    let kiln = notify_kiln(&registry, &[]).await;
    kiln.repo("acme", "api").await;
    let receiver = Receiver::start().await;
    let mut hooks = vec![];
    for i in 0..3 {
        let hook = subscribe(
            &kiln,
            "acme",
            "api",
            json!({"name": format!("s{i}"), "url": receiver.url(&format!("/s{i}"))}),
        )
        .await;
        hooks.push(id(&hook));
    }
    // Ten envelopes of five pushes each, one after the other, as a busy registry sends them; the
    // delivery worker records attempts meanwhile.
    let mut refused = vec![];
    for round in 0..10 {
        let mut events: Vec<Value> = Vec::new();
        for i in 0..5 {
            let tag = format!("r{round}-{i}");
            events.push(pushed(&registry, "acme/api", &tag, &tag).await);
        }
        let (status, text) = post_envelope(&kiln.url, &events).await;
        if status != StatusCode::OK {
            refused.push(format!(
                "POST /registry/events (envelope {round}, 5 manifest pushes) → {status} {text}"
            ));
            // The registry sends it again; so do we, to check nothing is lost or doubled.
            registry_notifies(&kiln.url, events).await;
        }
    }
    for hook in &hooks {
        let list = all_finished(&kiln, "acme", "api", hook, 50).await;
        assert_eq!(list.len(), 50, "one delivery per version");
        assert!(list.iter().all(|d| d["status"] == "succeeded"));
    }
    for i in 0..3 {
        let hits = receiver.hits(&format!("/s{i}"));
        let ids: HashSet<String> = hits.iter().map(Hit::webhook_id).collect();
        assert_eq!(
            (hits.len(), ids.len()),
            (50, 50),
            "each version once to /s{i}"
        );
    }
    // A valid, authenticated envelope is answered 200. Before e3a1789 (BEGIN IMMEDIATE), kiln
    // answered 500 {"error":{"code":"internal",...}} to 8 of these 10 envelopes: the version's
    // deferred transaction read before it wrote, and SQLite refused the upgrade with "(code: 5)
    // database is locked" at once while the delivery worker wrote.
    assert!(refused.is_empty(), "{refused:#?}");
}

// ---------------------------------------------------------------------------------------------
// Outbound safety
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_allow_list_internal_addresses_are_refused_and_never_sent_to() {
    let registry = Registry::start();
    // Six attempts allowed, 0.1 s apart at first: a refusal must still end after the first.
    let kiln = notify_kiln(&registry, &[("KILN_WEBHOOK_ALLOW", "")]).await;
    kiln.repo("acme", "api").await;
    let receiver = Receiver::start().await;
    let port = receiver.base.rsplit(':').next().unwrap().to_string();
    let targets = [
        ("literal", receiver.url("/literal"), "127.0.0.1", "loopback"),
        (
            "by-name",
            format!("http://localhost:{port}/by-name"),
            "localhost",
            "loopback",
        ),
        (
            "metadata",
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "169.254.169.254",
            "metadata",
        ),
        (
            "private",
            "http://10.0.0.1:9/hook".to_string(),
            "10.0.0.1",
            "private",
        ),
    ];
    let mut hooks = vec![];
    for (name, url, _, _) in &targets {
        hooks.push(subscribe(&kiln, "acme", "api", json!({"name": name, "url": url})).await);
    }
    registry_notifies(
        &kiln.url,
        vec![pushed(&registry, "acme/api", "v1", "guard").await],
    )
    .await;
    for (hook, (name, url, host, kind)) in hooks.iter().zip(&targets) {
        let list = all_finished(&kiln, "acme", "api", &id(hook), 1).await;
        let d = delivery(&kiln, &id(&list[0])).await;
        assert_eq!(d["status"], "failed", "{name}: {d}");
        assert_eq!(d["attempts"], 1, "{name}: failed at once, not retried: {d}");
        assert_eq!(d["attempt_log"].as_array().unwrap().len(), 1, "{name}: {d}");
        assert_eq!(d["response_status"], Value::Null, "{name}");
        assert_eq!(d["response"], Value::Null, "{name}: {d}");
        let error = d["error"].as_str().unwrap_or_default();
        for word in ["refused", host, kind, "KILN_WEBHOOK_ALLOW"] {
            assert!(
                error.contains(word),
                "{name}: '{word}' not in the error: {error}"
            );
        }
        assert_eq!(d["request"]["url"], url.as_str(), "{name}: {d}");
        for a in d["attempt_log"].as_array().unwrap() {
            assert!(
                a["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("KILN_WEBHOOK_ALLOW"),
                "{name}: {a}"
            );
        }
    }

    // The test button says the same at once.
    let (s, d) = kiln
        .post(
            &format!("/namespaces/acme/repos/api/webhooks/{}/test", id(&hooks[0])),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert!(
        d["error"]
            .as_str()
            .unwrap_or_default()
            .contains("KILN_WEBHOOK_ALLOW"),
        "{d}"
    );
    assert_eq!(d["response"], Value::Null);
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["next_attempt_at"], Value::Null, "{d}");
    for path in ["/literal", "/by-name"] {
        assert!(
            receiver.hits(path).is_empty(),
            "{path} was sent to: {:?}",
            receiver.hits(path)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_destination_fails_after_one_attempt_saying_why_while_others_retry() {
    let registry = Registry::start();
    // 127.0.0.2 is allowed (the failing receiver that keeps time below); 127.0.0.1 and 10/8 are not.
    let kiln = notify_kiln(&registry, &[("KILN_WEBHOOK_ALLOW", "127.0.0.2")]).await;
    kiln.repo("acme", "api").await;
    let allowed = Receiver::listen(
        tokio::net::TcpListener::bind("127.0.0.2:0")
            .await
            .expect("bind 127.0.0.2"),
    );
    allowed.script("/failing", &[Answer::Status(500); 10]);
    let port = support::free_port();
    let literal = subscribe(
        &kiln,
        "acme",
        "api",
        json!({"name": "literal", "url": "http://10.0.0.5:9/hook"}),
    )
    .await;
    let by_name = subscribe(
        &kiln,
        "acme",
        "api",
        json!({"name": "by-name", "url": format!("http://localhost:{port}/hook")}),
    )
    .await;
    let failing = subscribe(
        &kiln,
        "acme",
        "api",
        json!({"name": "failing", "url": allowed.url("/failing")}),
    )
    .await;
    registry_notifies(
        &kiln.url,
        vec![pushed(&registry, "acme/api", "v1", "refused").await],
    )
    .await;

    let first_attempt = |hook: Value| {
        let kiln = &kiln;
        async move {
            let list = poll("the first attempt", || async {
                let list = deliveries(kiln, "acme", "api", &id(&hook)).await;
                (
                    list.len() == 1 && list[0]["attempts"].as_i64() >= Some(1),
                    list,
                )
            })
            .await;
            delivery(kiln, &id(&list[0])).await
        }
    };
    let literal_delivery = first_attempt(literal).await;
    let by_name_delivery = first_attempt(by_name).await;
    for (d, reason) in [
        (
            &literal_delivery,
            "refused: 10.0.0.5 is a private address; allow it by adding 10.0.0.5 to \
             KILN_WEBHOOK_ALLOW"
                .to_string(),
        ),
        (
            &by_name_delivery,
            "a loopback address; allow it by adding localhost to KILN_WEBHOOK_ALLOW".to_string(),
        ),
    ] {
        assert_eq!(d["status"], "failed", "failed at once: {d}");
        assert_eq!(d["attempts"], 1, "{d}");
        assert_eq!(d["next_attempt_at"], Value::Null, "{d}");
        assert!(d["finished_at"].is_string(), "{d}");
        let error = d["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("refused: ") && error.ends_with(&reason),
            "{error}"
        );
        let log = d["attempt_log"].as_array().unwrap();
        assert_eq!(log.len(), 1, "{d}");
        assert_eq!(log[0]["error"], d["error"], "{d}");
    }
    assert!(
        by_name_delivery["error"]
            .as_str()
            .unwrap()
            .starts_with("refused: localhost resolves to "),
        "{by_name_delivery}"
    );

    // The allowed receiver's 500s are retried meanwhile (0.1 s, 0.3 s, 0.9 s later); the refused
    // deliveries get no second attempt in that time.
    allowed.wait_hits("/failing", 4).await;
    for d in [&literal_delivery, &by_name_delivery] {
        let now = delivery(&kiln, &id(d)).await;
        assert_eq!(now["attempts"], 1, "not retried: {now}");
        assert_eq!(now["status"], "failed", "{now}");
    }
    let retried = deliveries(&kiln, "acme", "api", &id(&failing)).await;
    assert_eq!(retried[0]["status"], "pending", "{retried:?}");
}

// ---------------------------------------------------------------------------------------------
// Restarts
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_are_sent_after_a_restart() {
    let registry = Registry::start();
    // Retries 2.4–3.6 s apart: none is in flight when kiln stops right after the first attempts.
    let slow = [("KILN_DELIVERY_BACKOFF_MS", "3000")];
    let kiln = notify_kiln(&registry, &slow).await;
    kiln.repo("acme", "api").await;
    let port = support::free_port(); // nothing listens there yet
    let secret = new_secret();
    let hook = subscribe(
        &kiln,
        "acme",
        "api",
        json!({"name": "later", "url": format!("http://127.0.0.1:{port}/later"), "secret": secret}),
    )
    .await;
    let mut pushes: Vec<Value> = Vec::new();
    for i in 0..5 {
        pushes.push(
            pushed(
                &registry,
                "acme/api",
                &format!("r{i}"),
                &format!("restart {i}"),
            )
            .await,
        );
    }
    registry_notifies(&kiln.url, pushes).await;
    let hook_id = id(&hook);
    wait_until("every delivery tried once", WAIT, || async {
        let list = deliveries(&kiln, "acme", "api", &hook_id).await;
        list.len() == 5 && list.iter().all(|d| d["attempts"] == 1)
    })
    .await;
    let Kiln {
        server, data_dir, ..
    } = kiln;
    drop(server);

    let receiver = Receiver::start_on(port).await;
    let kiln = Kiln::start_in(
        &registry,
        &[
            ("KILN_REGISTRY_EVENTS_TOKEN", EVENTS_TOKEN),
            ("KILN_WEBHOOK_ALLOW", "127.0.0.1"),
            ("KILN_DELIVERY_BACKOFF_MS", "100"),
        ],
        data_dir,
    )
    .await;
    let list = all_finished(&kiln, "acme", "api", &hook_id, 5).await;
    assert!(
        list.iter()
            .all(|d| d["status"] == "succeeded" && d["attempts"] == 2),
        "{list:?}"
    );
    let hits = receiver.hits("/later");
    assert_eq!(hits.len(), 5, "each exactly once");
    assert_signed(&secret, &hits);
    let mut tags: Vec<String> = hits
        .iter()
        .map(|h| h.json()["tag"].as_str().unwrap().to_string())
        .collect();
    tags.sort();
    assert_eq!(tags, vec!["r0", "r1", "r2", "r3", "r4"]);
    let first_error = delivery(&kiln, &id(&list[0])).await["attempt_log"][0]["error"].clone();
    assert!(
        first_error.as_str().is_some_and(|e| !e.is_empty()),
        "{first_error}"
    );
}

/// kiln's real binary (`kiln serve`) with env configuration, its stdout and stderr in one file.
struct KilnProcess {
    child: Child,
    url: String,
    log: PathBuf,
    http: reqwest::Client,
    /// Every API answer's body, to look for secrets in.
    answers: Mutex<Vec<String>>,
}

impl KilnProcess {
    async fn start(
        data_dir: &Path,
        log: &Path,
        registry: &Registry,
        extra: &[(&str, &str)],
    ) -> KilnProcess {
        let port = support::free_port();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.arg("serve");
        for (k, _) in std::env::vars() {
            if k.starts_with("KILN_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("KILN_LISTEN", format!("127.0.0.1:{port}"))
            .env("KILN_DATA_DIR", data_dir)
            .env("KILN_REGISTRY", &registry.addr)
            .env("KILN_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("KILN_REGISTRY_EVENTS_TOKEN", EVENTS_TOKEN)
            .env("KILN_WEBHOOK_ALLOW", "127.0.0.1")
            .env("KILN_DELIVERY_BACKOFF_MS", "100")
            .env("KILN_DELIVERY_TIMEOUT_SECS", "2")
            .env("KILN_LOG", "debug")
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd.spawn().expect("spawn kiln");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        wait_until("kiln's binary to answer /healthz", WAIT, || async {
            http.get(format!("{url}/healthz")).send().await.is_ok()
        })
        .await;
        KilnProcess {
            child,
            url,
            log: log.to_path_buf(),
            http,
            answers: Mutex::new(vec![]),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method.clone(), format!("{}/api/v1{path}", self.url))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request to kiln");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        self.answers
            .lock()
            .unwrap()
            .push(format!("{method} {path} → {status} {text}"));
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }

    async fn finished(&self, id: &str) -> Value {
        let path = format!("/deliveries/{id}");
        poll(&format!("delivery {id} to finish"), || async {
            let d = self.get(&path).await.1;
            (
                matches!(d["status"].as_str(), Some("succeeded" | "failed")),
                d,
            )
        })
        .await
    }

    async fn deliveries(&self, hook: &str) -> Vec<Value> {
        let (s, list) = self
            .get(&format!(
                "/namespaces/acme/repos/api/webhooks/{hook}/deliveries"
            ))
            .await;
        assert_eq!(s, StatusCode::OK, "{list}");
        list.as_array().unwrap().clone()
    }

    /// SIGINT, as Ctrl-C, and waits for the exit.
    fn interrupt(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        support::wait_until_blocking("kiln to exit after SIGINT", Duration::from_secs(20), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
    }

    /// SIGKILL: no chance to finish anything.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for KilnProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiln_killed_during_an_attempt_delivers_after_the_restart() {
    let registry = Registry::start();
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("kiln.log");
    let receiver = Receiver::start().await;
    receiver.script("/slow", &[Answer::Hang]);
    let long = [("KILN_DELIVERY_TIMEOUT_SECS", "30")];
    let mut kp = KilnProcess::start(data.path(), &log, &registry, &long).await;
    kp.post("/namespaces", json!({"name": "acme"})).await;
    kp.post("/namespaces/acme/repos", json!({"name": "api"}))
        .await;
    let (s, hook) = kp
        .post(
            "/namespaces/acme/repos/api/webhooks",
            json!({"name": "slow", "url": receiver.url("/slow")}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_string();
    registry_notifies(
        &kp.url,
        vec![pushed(&registry, "acme/api", "v1", "killed").await],
    )
    .await;
    receiver.wait_hits("/slow", 1).await;
    kp.kill(); // while the receiver holds the first attempt

    let mut kp = KilnProcess::start(data.path(), &log, &registry, &long).await;
    let list = kp.deliveries(&id(&hook)).await;
    assert_eq!(list.len(), 1);
    let d = kp.finished(&id(&list[0])).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    let hits = receiver.hits("/slow");
    assert_eq!(hits.len(), 2, "the interrupted attempt is made again");
    assert_eq!(hits[0].webhook_id(), hits[1].webhook_id(), "same message");
    assert_eq!(hits.iter().filter(|h| h.succeeded()).count(), 1);
    assert_signed(&secret, &hits);
    kp.interrupt();
}

// ---------------------------------------------------------------------------------------------
// Secrets stay secret
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_appears_in_no_api_answer_and_no_log_line() {
    let registry = Registry::start();
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("kiln.log");
    let receiver = Receiver::start().await;
    receiver.script("/one", &[Answer::Status(500)]);
    let mut kp = KilnProcess::start(
        data.path(),
        &log,
        &registry,
        &[("KILN_DELIVERY_ATTEMPTS", "3")],
    )
    .await;
    kp.post("/namespaces", json!({"name": "acme"})).await;
    kp.post("/namespaces/acme/repos", json!({"name": "api"}))
        .await;
    let hooks = "/namespaces/acme/repos/api/webhooks";

    let (s, one) = kp
        .post(hooks, json!({"name": "one", "url": receiver.url("/one")}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{one}");
    let s1 = one["secret"]
        .as_str()
        .expect("generated secret")
        .to_string();
    let creation = kp.answers.lock().unwrap().pop().unwrap();
    assert!(creation.contains(&s1));
    let s2 = new_secret();
    let (s, two) = kp
        .post(
            hooks,
            json!({"name": "two", "url": receiver.url("/two"), "secret": s2, "events": ALL_EVENTS}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{two}");
    let (one_id, two_id) = (id(&one), id(&two));

    registry_notifies(
        &kp.url,
        vec![pushed(&registry, "acme/api", "v1", "secret").await],
    )
    .await;
    let d1 = kp.deliveries(&one_id).await[0].clone();
    let d1 = kp.finished(&id(&d1)).await;
    assert_eq!(
        (d1["status"].clone(), d1["attempts"].clone()),
        (json!("succeeded"), json!(2)),
        "{d1}"
    );
    let d2 = kp.deliveries(&two_id).await[0].clone();
    let d2 = kp.finished(&id(&d2)).await;
    assert_eq!(d2["status"], "succeeded", "{d2}");
    assert_signed(&s1, &receiver.hits("/one"));
    assert_signed(&s2, &receiver.hits("/two"));

    // Test events, a redelivery, a new secret: still signed with the right one, never shown.
    let (s, t) = kp.post(&format!("{hooks}/{one_id}/test"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let (s, r) = kp
        .post(&format!("/deliveries/{}/redeliver", id(&d2)), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{r}");
    kp.finished(&id(&r)).await;
    let s3 = new_secret();
    let (s, patched) = kp
        .patch(&format!("{hooks}/{two_id}"), json!({"secret": s3}))
        .await;
    assert_eq!(s, StatusCode::OK, "{patched}");
    let (s, t) = kp.post(&format!("{hooks}/{two_id}/test"), json!({})).await;
    assert_eq!(
        (s, t["status"].clone()),
        (StatusCode::OK, json!("succeeded")),
        "{t}"
    );
    let hits_two = receiver.hits("/two");
    assert_eq!(hits_two.len(), 3);
    assert_signed(&s2, &hits_two[..2]);
    assert_signed(&s3, &hits_two[2..]);
    assert!(
        verify(&s2, &hits_two[2]).is_err(),
        "the old secret no longer signs"
    );
    assert_signed(&s1, &receiver.hits("/one"));

    // Every read of the subscriptions and deliveries.
    kp.get(hooks).await;
    for hook in [&one_id, &two_id] {
        kp.get(&format!("{hooks}/{hook}")).await;
        for d in kp.deliveries(hook).await {
            kp.get(&format!("/deliveries/{}", id(&d))).await;
        }
    }
    let needles: Vec<String> = [&s1, &s2, &s3]
        .iter()
        .flat_map(|s| [s.to_string(), s.trim_start_matches("whsec_").to_string()])
        .collect();
    let answers = kp.answers.lock().unwrap().clone();
    assert!(answers.len() > 15, "{answers:?}");
    for a in &answers {
        for n in &needles {
            assert!(!a.contains(n.as_str()), "an API answer shows a secret: {a}");
        }
    }

    kp.interrupt();
    let text = kp.log_text();
    assert!(
        text.contains("delivery attempt") && text.contains("DEBUG"),
        "the log has debug lines and the delivery attempts:\n{text}"
    );
    for (i, line) in text.lines().enumerate() {
        for n in &needles {
            assert!(
                !line.contains(n.as_str()),
                "log line {} shows a secret: {line}",
                i + 1
            );
        }
    }
}
