//! New-image notifications under load: 1,000 new versions, each announced to 5 subscribers on one
//! local receiver that fails the first attempt of half the messages.
//!
//! Run on demand: `cargo bench --bench notifications` (needs `docker-registry`, as the tests; no
//! Docker daemon). Versions come in the way `docker push` brings them: the registry's notification
//! envelopes (10 manifest pushes each) POSTed to `/registry/events` with the bearer token, sent
//! again on a 5xx as the registry does. The receiver checks every signature, answers 500 to the
//! first attempt of a (webhook-id, path) pair when a hash of the pair says so (half of them), 200
//! otherwise, and counts the pairs it answered 2xx more than once: duplicates, which must be 0.
//!
//! Reports deliveries, successes, duplicates, attempts, the wall time until all 5,000 succeeded,
//! deliveries per second, the time to enqueue the 1,000 versions, and what kiln logged as a
//! warning or an error meanwhile.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::Registry;
use support::kiln::Kiln;
use tracing_subscriber::layer::SubscriberExt;

const VERSIONS: usize = 1_000;
const SUBSCRIBERS: usize = 5;
const PER_ENVELOPE: usize = 10;
const EVENTS_TOKEN: &str = "registry-events-token-for-the-benchmark";
const CAPTURED_ENVELOPE: &str = include_str!("../tests/data/registry/manifest-push.json");
const ENVELOPE_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";
const DEADLINE: Duration = Duration::from_secs(600);

// ---------------------------------------------------------------------------------------------
// The receiver
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Pair {
    requests: u32,
    ok: u32,
}

#[derive(Default)]
struct Tally {
    pairs: HashMap<(String, String), Pair>,
    requests: u64,
    answered_500: u64,
    answered_2xx: u64,
    bad_signatures: u64,
    /// When the last distinct pair was first answered 2xx.
    last_first_success: Option<Instant>,
    distinct_ok: usize,
}

#[derive(Default)]
struct Receiver {
    /// The HMAC key of each path's subscription.
    keys: OnceLock<HashMap<String, Vec<u8>>>,
    tally: Mutex<Tally>,
}

/// Half the (webhook-id, path) pairs fail their first attempt.
fn fails_first(id: &str, path: &str) -> bool {
    Sha256::digest(format!("{id} {path}").as_bytes())[0] & 1 == 0
}

fn signed(key: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(format!("{}.{}.", h("webhook-id"), h("webhook-timestamp")).as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    h("webhook-signature").split(' ').any(|s| s == expected)
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let good = r
        .keys
        .get()
        .and_then(|k| k.get(&path))
        .is_some_and(|key| signed(key, &headers, &body));
    let mut t = r.tally.lock().unwrap();
    t.requests += 1;
    if !good {
        t.bad_signatures += 1;
    }
    let fail = fails_first(&id, &path);
    let pair = t.pairs.entry((id, path)).or_default();
    pair.requests += 1;
    if fail && pair.requests == 1 {
        t.answered_500 += 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    pair.ok += 1;
    let first_ok = pair.ok == 1;
    t.answered_2xx += 1;
    if first_ok {
        t.distinct_ok += 1;
        t.last_first_success = Some(Instant::now());
    }
    StatusCode::OK
}

// ---------------------------------------------------------------------------------------------
// kiln's warnings and errors, counted
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Fields {
    message: String,
    error: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "error" => self.error = format!("{value:?}"),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "error" => self.error = value.to_string(),
            _ => {}
        }
    }
}

/// Counts kiln's WARN and ERROR events by level, message and error.
#[derive(Clone, Default)]
struct Problems(Arc<Mutex<BTreeMap<String, u64>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Problems {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let level = *event.metadata().level();
        if level > tracing::Level::WARN || !event.metadata().target().starts_with("kiln") {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let error: String = f.error.chars().take(120).collect();
        *self
            .0
            .lock()
            .unwrap()
            .entry(format!("{level} {}: {error}", f.message))
            .or_default() += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

fn manifest_push(repository: &str, tag: &str) -> Value {
    let captured: Value = serde_json::from_str(CAPTURED_ENVELOPE).expect("captured envelope");
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(tag.as_bytes())));
    let mut e = captured["events"][0].clone();
    e["id"] = json!(uuid::Uuid::new_v4().to_string());
    e["timestamp"] = json!(chrono::Utc::now().to_rfc3339());
    e["target"]["repository"] = json!(repository);
    e["target"]["tag"] = json!(tag);
    e["target"]["digest"] = json!(digest);
    e
}

async fn count(kiln: &Kiln, sql: &'static str) -> i64 {
    let (n,): (Option<i64>,) = sqlx::query_as(sql)
        .fetch_one(&kiln.server.app.db)
        .await
        .expect("query kiln's database");
    n.unwrap_or(0)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let problems = Problems::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::WARN)
            .with(problems.clone()),
    )
    .expect("a tracing subscriber");

    let receiver = Arc::new(Receiver::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/{path}", axum::routing::post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let registry = Registry::start();
    let kiln = Kiln::start(
        &registry,
        &[
            ("KILN_REGISTRY_EVENTS_TOKEN", EVENTS_TOKEN),
            ("KILN_WEBHOOK_ALLOW", "127.0.0.1"),
            ("KILN_DELIVERY_BACKOFF_MS", "100"),
            ("KILN_DELIVERY_TIMEOUT_SECS", "10"),
            ("KILN_DELIVERY_ATTEMPTS", "6"),
        ],
    )
    .await;
    let (s, b) = kiln.post("/namespaces", json!({"name": "bench"})).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = kiln
        .post("/namespaces/bench/repos", json!({"name": "images"}))
        .await;
    assert_eq!(s, 201, "{b}");
    let mut keys = HashMap::new();
    for i in 0..SUBSCRIBERS {
        let path = format!("s{i}");
        let (s, hook) = kiln
            .post(
                "/namespaces/bench/repos/images/webhooks",
                json!({"name": path, "url": format!("{receiver_url}/{path}")}),
            )
            .await;
        assert_eq!(s, 201, "{hook}");
        let secret = hook["secret"].as_str().expect("generated secret");
        let key = STANDARD
            .decode(secret.trim_start_matches("whsec_"))
            .unwrap();
        keys.insert(path, key);
    }
    receiver.keys.set(keys).expect("keys set once");

    println!(
        "notifications benchmark: {VERSIONS} new versions × {SUBSCRIBERS} subscribers on one local receiver, \
         half the messages failing their first attempt; backoff 100 ms, envelopes of {PER_ENVELOPE} pushes"
    );
    let http = reqwest::Client::new();
    let start = Instant::now();
    let mut envelope_5xx = 0u64;
    let mut resend_pauses = Duration::ZERO;
    let mut envelope_5xx_bodies: BTreeMap<String, u64> = BTreeMap::new();
    for chunk in 0..VERSIONS / PER_ENVELOPE {
        let events: Vec<Value> = (0..PER_ENVELOPE)
            .map(|i| manifest_push("bench/images", &format!("v{:04}", chunk * PER_ENVELOPE + i)))
            .collect();
        let body = json!({ "events": events }).to_string();
        loop {
            let resp = http
                .post(format!("{}/registry/events", kiln.url))
                .bearer_auth(EVENTS_TOKEN)
                .header("content-type", ENVELOPE_TYPE)
                .body(body.clone())
                .send()
                .await
                .expect("POST /registry/events");
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if status.is_success() {
                break;
            }
            assert!(
                status.is_server_error(),
                "POST /registry/events → {status} {text}"
            );
            // The registry sends a refused envelope again; kiln skips the events it applied.
            envelope_5xx += 1;
            *envelope_5xx_bodies
                .entry(format!("{status} {text}"))
                .or_default() += 1;
            let pause = Instant::now();
            tokio::time::sleep(Duration::from_millis(50)).await;
            resend_pauses += pause.elapsed();
        }
    }
    let enqueued = start.elapsed();
    let versions = count(&kiln, "SELECT COUNT(*) FROM versions").await;
    let queued = count(&kiln, "SELECT COUNT(*) FROM deliveries").await;

    let target = VERSIONS * SUBSCRIBERS;
    let mut last_report = Instant::now();
    loop {
        let done = receiver.tally.lock().unwrap().distinct_ok;
        if done >= target {
            break;
        }
        if start.elapsed() > DEADLINE {
            panic!("only {done} of {target} deliveries succeeded within {DEADLINE:?}");
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  … {done} of {target} succeeded after {}",
                secs(start.elapsed())
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_succeeded = {
        let t = receiver.tally.lock().unwrap();
        t.last_first_success.expect("successes") - start
    };

    // Let kiln finish its books (no delivery pending, none claimed) before looking for duplicates:
    // an attempt kiln could not record would be sent again when its claim runs out.
    let settle = Instant::now();
    loop {
        let pending = count(
            &kiln,
            "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'",
        )
        .await;
        if pending == 0 {
            break;
        }
        if settle.elapsed() > Duration::from_secs(120) {
            eprintln!("  {pending} deliveries still pending 120 s after the receiver had them all");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kiln_attempts = count(&kiln, "SELECT SUM(attempts) FROM deliveries").await;
    let kiln_recorded = count(&kiln, "SELECT COUNT(*) FROM delivery_attempts").await;
    let kiln_succeeded = count(
        &kiln,
        "SELECT COUNT(*) FROM deliveries WHERE status = 'succeeded'",
    )
    .await;
    let kiln_failed = count(
        &kiln,
        "SELECT COUNT(*) FROM deliveries WHERE status = 'failed'",
    )
    .await;

    let t = receiver.tally.lock().unwrap();
    let duplicates: u64 = t
        .pairs
        .values()
        .map(|p| u64::from(p.ok.saturating_sub(1)))
        .sum();
    let failing_pairs = t
        .pairs
        .iter()
        .filter(|((id, path), _)| fails_first(id, path))
        .count();
    println!("versions recorded:               {versions} (deliveries queued: {queued})");
    println!(
        "time to enqueue {VERSIONS} versions:    {} ({:.0} versions/s; {} envelopes answered 5xx and sent \
         again after 50 ms, {} of pauses in all)",
        secs(enqueued),
        VERSIONS as f64 / enqueued.as_secs_f64(),
        envelope_5xx,
        secs(resend_pauses)
    );
    println!(
        "deliveries (distinct messages):  {} of {target}; {failing_pairs} set to fail their first attempt",
        t.pairs.len()
    );
    println!(
        "successful (2xx answered):       {} ({} distinct)",
        t.answered_2xx, t.distinct_ok
    );
    println!("duplicates (2xx more than once): {duplicates}");
    println!(
        "attempts (requests received):    {} ({} answered 500); kiln counts {kiln_attempts} attempts, {kiln_recorded} records",
        t.requests, t.answered_500
    );
    println!("bad signatures:                  {}", t.bad_signatures);
    println!(
        "kiln's books after settling:     {kiln_succeeded} succeeded, {kiln_failed} failed, settled {} after the last success",
        secs(settle.elapsed())
    );
    println!(
        "wall time until all {target} succeeded: {} from the first envelope ({} after the last was accepted)",
        secs(all_succeeded),
        secs(all_succeeded.saturating_sub(enqueued))
    );
    println!(
        "deliveries/s:                    {:.0} ({target} successful deliveries / wall time)",
        target as f64 / all_succeeded.as_secs_f64()
    );
    for (answer, n) in &envelope_5xx_bodies {
        println!("  /registry/events answered {n}× {answer}");
    }
    let problems = problems.0.lock().unwrap();
    if problems.is_empty() {
        println!("kiln logged no warning or error");
    } else {
        println!("kiln logged:");
        for (what, n) in problems.iter() {
            println!("  {n:>5}× {what}");
        }
    }
    assert_eq!(duplicates, 0, "duplicates must be 0");
    assert_eq!(t.bad_signatures, 0, "every signature verifies");
}
