//! Ingest under load: signed GitHub pushes with unique delivery ids from many keep-alive
//! connections, the real `kiln serve` side by side with adnanh/webhook (`/usr/bin/webhook`, the
//! Debian package `webhook`) verifying the same HMAC over the same payload, in the same run.
//!
//! Run on demand: `cargo bench --bench ingest` (needs only `webhook`: no Docker, no registry).
//!
//! - kiln runs as its own process (`kiln serve`, temp data dir, free port) with a namespace, a
//!   repository and a GitHub source whose one rule (tag `v*`) never matches the pushes (to
//!   `refs/heads/main`), so every delivery is verified, parsed and stored, and nothing builds.
//! - webhook runs a hook whose trigger rule checks `payload-hmac-sha256` on `X-Hub-Signature-256`
//!   with the same secret and runs no command (`KILN_BENCH_WEBHOOK_COMMAND=/bin/true` makes it fork
//!   one per request).
//! - One payload of about 7.8 KB shaped as GitHub sends a push (octokit/webhooks' push example,
//!   with the source's `clone_url` in `repository` and a few real-looking commits); every request
//!   carries GitHub's headers, a fresh `X-GitHub-Delivery` UUID, and its own body (the UUID written
//!   into the head commit's message, signed per request, for both servers alike): kiln answers the
//!   same body under a new delivery id as a replay and stores nothing.
//! - The load generator is in this file: N keep-alive HTTP/1.1 connections, each sending requests
//!   back to back for S seconds and timing each one from send to the last body byte. It writes
//!   each request as bytes and reads only the status and the body's length (as `wrk` does): it
//!   shares the two cores with the server under test, so what it spends per request is taken from
//!   both servers alike and hides their difference; it signs with aws-lc, as kiln verifies. A
//!   request that takes longer than the per-request timeout counts as a timeout (its time goes
//!   into the latencies as what was waited), so a stall shows up instead of hanging the bench.
//! - Rounds alternate: webhook, kiln, webhook, kiln, … Each server's figures are over all its
//!   rounds; req/s counts 2xx answers only; `cpu/req` is the server process's CPU time (user +
//!   system, with its reaped children: webhook's `/bin/true`s) over the round per request.
//! - Afterwards: kiln's peak RSS (`VmHWM`), then every stored event read back through the API
//!   (`GET …/events`, all pages), compared delivery id by delivery id with the 2xx answers.
//! - The floor is printed with PASS/FAIL: kiln ≥ 1.5× webhook's req/s, kiln's p99 < 50 ms,
//!   no non-2xx answer (nor error, nor timeout). The bench reports; it does not fail on it.
//!
//! Environment:
//! - `KILN_BENCH_CONNECTIONS` (default 32), `KILN_BENCH_SECONDS` per round (10),
//!   `KILN_BENCH_ROUNDS` per server (2), `KILN_BENCH_TIMEOUT_SECS` per request (10);
//! - `KILN_BENCH_KILN=PATH` runs that kiln binary instead of this build's (to compare two builds);
//! - `KILN_BENCH_KEEP=1` keeps kiln's data dir (database, `kiln.log`) and prints where it is;
//! - any other `KILN_*` variable is passed on to `kiln serve` (e.g. `KILN_LOG`, or a tuning knob),
//!   except the ones the bench sets itself (`KILN_LISTEN`, `KILN_DATA_DIR`, `KILN_DATABASE_URL`,
//!   `KILN_ADMIN_TOKEN`, `KILN_REGISTRY`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ADMIN_TOKEN: &str = "kiln_bench_admin_token_0123456789abcdef";
const NAMESPACE: &str = "bench";
const REPOSITORY: &str = "ingest";
const CLONE_URL: &str = "https://github.com/acme/ingest.git";
const WEBHOOK: &str = "/usr/bin/webhook";
/// The payload's size to aim at (issue 8: "a 7.8 KB payload"): whole commits are added while the
/// payload stays under this plus 200 bytes (it comes to 7,960 bytes, two commits).
const PAYLOAD_BYTES: usize = 7_800;
/// The floor.
const FLOOR_RATIO: f64 = 1.5;
const FLOOR_P99: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

struct Settings {
    connections: usize,
    seconds: u64,
    rounds: usize,
    timeout: Duration,
    keep: bool,
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => panic!("{name}: '{v}' is not a positive whole number"),
        },
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            connections: env_number("KILN_BENCH_CONNECTIONS", 32) as usize,
            seconds: env_number("KILN_BENCH_SECONDS", 10),
            rounds: env_number("KILN_BENCH_ROUNDS", 2) as usize,
            timeout: Duration::from_secs(env_number("KILN_BENCH_TIMEOUT_SECS", 10)),
            keep: std::env::var("KILN_BENCH_KEEP").is_ok_and(|v| !v.is_empty() && v != "0"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The payload
// ---------------------------------------------------------------------------------------------

/// A 40-hex-digit SHA derived from `seed`.
fn sha(seed: &str) -> String {
    hex::encode(Sha256::digest(seed.as_bytes()))[..40].to_string()
}

/// One commit of a push: its message and the paths it added, removed and modified.
struct Change {
    message: &'static str,
    added: &'static [&'static str],
    removed: &'static [&'static str],
    modified: &'static [&'static str],
}

/// What a week on a small service looks like in `git log --stat`.
const COMMITS: &[Change] = &[
    Change {
        message: "Bump golang.org/x/net from 0.23.0 to 0.25.0",
        added: &[],
        removed: &[],
        modified: &["go.mod", "go.sum"],
    },
    Change {
        message: "Update CHANGELOG for v1.4.2",
        added: &[],
        removed: &[],
        modified: &["CHANGELOG.md"],
    },
    Change {
        message: "Add health check endpoint and wire it into the router",
        added: &[
            "internal/health/health.go",
            "internal/health/health_test.go",
        ],
        removed: &[],
        modified: &["cmd/widget/main.go", "internal/server/router.go"],
    },
    Change {
        message: "Fix off-by-one in pagination of /v1/widgets\n\nThe last page repeated the first item of the previous one when the total was a multiple of the page size.",
        added: &[],
        removed: &[],
        modified: &[
            "internal/store/widgets.go",
            "internal/store/widgets_test.go",
        ],
    },
    Change {
        message: "Build with Go 1.22 and a distroless base image",
        added: &[],
        removed: &["Dockerfile.old"],
        modified: &["Dockerfile", ".github/workflows/ci.yml"],
    },
    Change {
        message: "Document the configuration variables in the README",
        added: &["docs/configuration.md"],
        removed: &[],
        modified: &["README.md"],
    },
    Change {
        message: "Merge pull request #214 from acme/jdoe/metrics\n\nExpose request metrics on /metrics",
        added: &["internal/metrics/metrics.go"],
        removed: &[],
        modified: &[
            "internal/server/middleware.go",
            "internal/server/router.go",
            "go.mod",
            "go.sum",
        ],
    },
];

fn commit(html_url: &str, i: usize, ts: &str) -> Value {
    let change = &COMMITS[i % COMMITS.len()];
    let id = sha(&format!("commit {i}"));
    let (name, email, username) = if i % 3 == 1 {
        ("Sam Lee", "sam.lee@acme.example", "slee")
    } else {
        ("Jane Doe", "jane@acme.example", "jdoe")
    };
    json!({
        "id": id,
        "tree_id": sha(&format!("tree {i}")),
        "distinct": true,
        "message": change.message,
        "timestamp": ts,
        "url": format!("{html_url}/commit/{id}"),
        "author": {"name": name, "email": email, "username": username},
        "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
        "added": change.added,
        "removed": change.removed,
        "modified": change.modified
    })
}

/// A push of several commits to `refs/heads/main` of the source's repository, as GitHub sends it,
/// serialized as GitHub does (compact), of about [`PAYLOAD_BYTES`].
fn push_payload() -> Vec<u8> {
    let before = sha("commit before");
    let mut payload = support::github_push_payload(
        CLONE_URL,
        "refs/heads/main",
        &before,
        &sha("commit 0"),
        false,
    );
    let html_url = payload["repository"]["html_url"]
        .as_str()
        .unwrap()
        .to_string();
    let ts = payload["head_commit"]["timestamp"]
        .as_str()
        .unwrap()
        .to_string();
    let mut commits: Vec<Value> = Vec::new();
    loop {
        let next = commit(&html_url, commits.len(), &ts);
        let mut candidate = payload.clone();
        let mut with_next = commits.clone();
        with_next.push(next);
        let head = with_next.last().unwrap().clone();
        let after = head["id"].as_str().unwrap().to_string();
        candidate["after"] = json!(after);
        candidate["compare"] = json!(format!(
            "{html_url}/compare/{}...{}",
            &before[..12],
            &after[..12]
        ));
        candidate["commits"] = json!(with_next);
        candidate["head_commit"] = head;
        let size = serde_json::to_vec(&candidate).unwrap().len();
        if size > PAYLOAD_BYTES + 200 && !commits.is_empty() {
            break;
        }
        payload = candidate;
        commits = with_next;
    }
    // Each request writes its delivery id over this placeholder (same length, so the size stays):
    // every body is its own push, as GitHub's are (kiln takes the same body under a new delivery id
    // as a replay and stores nothing).
    let message = payload["head_commit"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    payload["head_commit"]["message"] = json!(format!("{message} ({UNIQUE_PLACEHOLDER})"));
    serde_json::to_vec(&payload).unwrap()
}

/// Where a request's delivery id goes in its body (a UUID's length).
const UNIQUE_PLACEHOLDER: &str = "00000000-0000-0000-0000-000000000000";

fn placeholder_at(template: &[u8]) -> usize {
    template
        .windows(UNIQUE_PLACEHOLDER.len())
        .position(|w| w == UNIQUE_PLACEHOLDER.as_bytes())
        .expect("the payload holds the placeholder")
}

/// The headers GitHub sends with a push, but the delivery id.
fn github_headers(signature: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json"),
        ("user-agent", "GitHub-Hookshot/0f5c7a4"),
        ("x-github-event", "push"),
        ("x-github-hook-id", "498112375"),
        ("x-github-hook-installation-target-type", "repository"),
        ("x-github-hook-installation-target-id", "712345678"),
        ("x-hub-signature-256", signature),
    ] {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    h
}

// ---------------------------------------------------------------------------------------------
// The servers
// ---------------------------------------------------------------------------------------------

struct Server {
    name: &'static str,
    child: Child,
    /// Where deliveries go.
    hook_url: String,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT (both stop cleanly on it), then SIGKILL after 10 s.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "{} did not stop on SIGINT within 10 s: killing it",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn wait_answering(what: &str, url: &str) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    support::wait_until(
        &format!("{what} answers at {url}"),
        Duration::from_secs(60),
        || async { http.get(url).send().await.is_ok() },
    )
    .await;
}

/// The kiln binary under test: this build's, or `KILN_BENCH_KILN` (another build, to compare two
/// versions on the same machine in the same conditions).
fn kiln_binary() -> PathBuf {
    std::env::var_os("KILN_BENCH_KILN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kiln")))
}

/// `kiln serve` on a free port over `data_dir`, its stdout and stderr in `data_dir/kiln.log`.
async fn start_kiln(data_dir: &Path) -> (Server, String, Vec<String>) {
    let port = support::free_port();
    let log = std::fs::File::create(data_dir.join("kiln.log")).unwrap();
    let mut cmd = Command::new(kiln_binary());
    cmd.arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    let ours = [
        "KILN_LISTEN",
        "KILN_DATA_DIR",
        "KILN_DATABASE_URL",
        "KILN_ADMIN_TOKEN",
        "KILN_REGISTRY",
    ];
    let mut passed = Vec::new();
    for (k, v) in std::env::vars() {
        if k.starts_with("KILN_") && !k.starts_with("KILN_BENCH_") && !ours.contains(&k.as_str()) {
            passed.push(format!("{k}={v}"));
            cmd.env(k, v);
        }
    }
    cmd.env("KILN_LISTEN", format!("127.0.0.1:{port}"))
        .env("KILN_DATA_DIR", data_dir)
        .env("KILN_ADMIN_TOKEN", ADMIN_TOKEN)
        // Nothing listens there: no registry is needed to take hooks in.
        .env("KILN_REGISTRY", "127.0.0.1:1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let child = cmd.spawn().expect("start kiln serve");
    let base = format!("http://127.0.0.1:{port}");
    let server = Server {
        name: "kiln",
        child,
        hook_url: format!("{base}/hooks/github"),
    };
    wait_answering("kiln", &format!("{base}/healthz")).await;
    (server, base, passed)
}

/// The command adnanh/webhook runs for each verified delivery (`KILN_BENCH_WEBHOOK_COMMAND`). By
/// default a path that does not exist: webhook 2.8 answers first and then finds nothing to run, so
/// it only verifies the HMAC, as kiln does before storing (no process started per request: that is
/// the stronger baseline, the one `../shared/stack.md` measured). `/bin/true` makes it fork per
/// request, as a real deployment would.
fn webhook_command() -> String {
    std::env::var("KILN_BENCH_WEBHOOK_COMMAND")
        .unwrap_or_else(|_| "/nonexistent/kiln-bench-no-command".to_string())
}

/// adnanh/webhook on a free port with one hook that checks the same HMAC ([`webhook_command`]).
async fn start_webhook(dir: &Path, secret: &str) -> Server {
    let hooks = dir.join("hooks.json");
    let config = json!([{
        "id": "github",
        "execute-command": webhook_command(),
        "command-working-directory": "/",
        "response-message": "ok",
        "trigger-rule-mismatch-http-response-code": 401,
        "trigger-rule": {"match": {
            "type": "payload-hmac-sha256",
            "secret": secret,
            "parameter": {"source": "header", "name": "X-Hub-Signature-256"}
        }}
    }]);
    std::fs::write(&hooks, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let port = support::free_port();
    let child = Command::new(WEBHOOK)
        .arg("-hooks")
        .arg(&hooks)
        .args(["-ip", "127.0.0.1", "-port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("start {WEBHOOK} (Debian package `webhook`, adnanh/webhook): {e}")
        });
    let base = format!("http://127.0.0.1:{port}");
    let server = Server {
        name: "webhook",
        child,
        hook_url: format!("{base}/hooks/github"),
    };
    wait_answering("webhook", &base).await;
    server
}

/// Creates the namespace, the repository, its GitHub source and a rule that never matches a
/// push to `main`; returns the source's generated secret.
async fn set_up_kiln(base: &str) -> String {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let call = |method: reqwest::Method, path: &str, body: Value| {
        http.request(method, format!("{base}/api/v1{path}"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    let expect = |what: &str, resp: reqwest::Response, status: u16| {
        assert_eq!(resp.status().as_u16(), status, "{what}");
        resp
    };
    let r = call(
        reqwest::Method::POST,
        "/namespaces",
        json!({"name": NAMESPACE}),
    )
    .await
    .unwrap();
    expect("create the namespace", r, 201);
    let r = call(
        reqwest::Method::POST,
        &format!("/namespaces/{NAMESPACE}/repos"),
        json!({"name": REPOSITORY}),
    )
    .await
    .unwrap();
    expect("create the repository", r, 201);
    let r = call(
        reqwest::Method::PUT,
        &format!("/namespaces/{NAMESPACE}/repos/{REPOSITORY}/source"),
        json!({"provider": "github", "clone_url": CLONE_URL}),
    )
    .await
    .unwrap();
    let source: Value = expect("link the source", r, 200).json().await.unwrap();
    let r = call(
        reqwest::Method::POST,
        &format!("/namespaces/{NAMESPACE}/repos/{REPOSITORY}/rules"),
        json!({"type": "tag", "name": "v*", "overwrite": true}),
    )
    .await
    .unwrap();
    expect("create the rule", r, 201);
    source["webhook_secret"]
        .as_str()
        .expect("a generated webhook secret")
        .to_string()
}

/// One correctly signed delivery must be taken (2xx), one with a wrong signature refused: both
/// servers really verify. Returns the delivery id of the taken one.
async fn check_verifies(server: &Server, headers: &HeaderMap, body: &Bytes) -> String {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let delivery = uuid::Uuid::new_v4().to_string();
    let mut good = headers.clone();
    good.insert(
        "x-github-delivery",
        HeaderValue::from_str(&delivery).unwrap(),
    );
    let r = http
        .post(&server.hook_url)
        .headers(good.clone())
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert!(
        status.is_success(),
        "{} refused a correctly signed delivery: {status} {}",
        server.name,
        r.text().await.unwrap_or_default()
    );
    let mut bad = good;
    bad.insert(
        "x-github-delivery",
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).unwrap(),
    );
    bad.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&format!("sha256={}", "0".repeat(64))).unwrap(),
    );
    let r = http
        .post(&server.hook_url)
        .headers(bad)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert!(
        !r.status().is_success(),
        "{} took a delivery with a wrong signature: {}",
        server.name,
        r.status()
    );
    delivery
}

// ---------------------------------------------------------------------------------------------
// Measuring the process
// ---------------------------------------------------------------------------------------------

/// CPU time of the process and of its reaped children (webhook's `/bin/true`s), from
/// `/proc/PID/stat`.
fn cpu_time(pid: u32, ticks_per_second: u64) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14..=17 of proc(5): utime, stime, cutime, cstime; `after_name` starts at field 3.
    let ticks: u64 = fields
        .get(11..15)?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    Some(Duration::from_millis(ticks * 1000 / ticks_per_second))
}

fn ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// A `Vm*` line of `/proc/PID/status`, in KiB.
fn vm_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    /// Every request's time, answered or not (a timed-out one counts what was waited).
    latencies_us: Vec<u64>,
    ok: u64,
    non_2xx: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    ok_deliveries: Vec<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.ok += other.ok;
        for (k, v) in other.non_2xx {
            *self.non_2xx.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.ok_deliveries.extend(other.ok_deliveries);
    }

    fn requests(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    fn failures(&self) -> u64 {
        self.non_2xx.values().sum::<u64>() + self.errors.values().sum::<u64>()
    }
}

/// A request's failure, as the tally counts it.
fn error_kind(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::TimedOut => "timeout".into(),
        std::io::ErrorKind::ConnectionRefused => "connect".into(),
        _ => e.to_string().chars().take(60).collect(),
    }
}

/// The load generator's side of one keep-alive HTTP/1.1 connection: a request written as bytes,
/// the answer's status read and its body skipped. It is lean on purpose (as `wrk` is): the load
/// generator shares the machine's two cores with the server under test, and every microsecond it
/// spends per request is taken from both servers alike, which squeezes their ratio towards 1. Both
/// servers get exactly the same generator.
struct RawConnection {
    addr: String,
    stream: Option<tokio::io::BufReader<tokio::net::TcpStream>>,
    line: Vec<u8>,
}

impl RawConnection {
    fn new(addr: String) -> RawConnection {
        RawConnection {
            addr,
            stream: None,
            line: Vec::with_capacity(256),
        }
    }

    /// Sends `request` (head and body) and answers the status, reading the whole answer.
    async fn send(&mut self, request: &[u8]) -> std::io::Result<u16> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        if self.stream.is_none() {
            let tcp = tokio::net::TcpStream::connect(&self.addr).await?;
            tcp.set_nodelay(true)?;
            self.stream = Some(tokio::io::BufReader::with_capacity(16 * 1024, tcp));
        }
        let result = async {
            let stream = self.stream.as_mut().expect("connected above");
            stream.get_mut().write_all(request).await?;
            let bad =
                |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
            // Status line, then headers up to the blank line.
            self.line.clear();
            if stream.read_until(b'\n', &mut self.line).await? == 0 {
                return Err(bad("connection closed"));
            }
            let status = self
                .line
                .get(9..12)
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or_else(|| bad("no status line"))?;
            let (mut length, mut chunked, mut close) = (0usize, false, false);
            loop {
                self.line.clear();
                if stream.read_until(b'\n', &mut self.line).await? == 0 {
                    return Err(bad("connection closed in the headers"));
                }
                let line = std::str::from_utf8(&self.line)
                    .map_err(|_| bad("header not UTF-8"))?
                    .trim_end();
                if line.is_empty() {
                    break;
                }
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().map_err(|_| bad("bad content-length"))?;
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.eq_ignore_ascii_case("chunked");
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                }
            }
            if chunked {
                loop {
                    self.line.clear();
                    stream.read_until(b'\n', &mut self.line).await?;
                    let size = std::str::from_utf8(&self.line)
                        .ok()
                        .and_then(|l| usize::from_str_radix(l.trim().split(';').next()?, 16).ok())
                        .ok_or_else(|| bad("bad chunk size"))?;
                    // The chunk and its CRLF (the last chunk: just the CRLF, no trailers expected).
                    let mut skip = vec![0u8; size + 2];
                    stream.read_exact(&mut skip).await?;
                    if size == 0 {
                        break;
                    }
                }
            } else {
                let mut left = length;
                while left > 0 {
                    let buf = stream.fill_buf().await?;
                    if buf.is_empty() {
                        return Err(bad("connection closed in the body"));
                    }
                    let n = buf.len().min(left);
                    stream.consume(n);
                    left -= n;
                }
            }
            Ok((status, close))
        }
        .await;
        match result {
            Ok((status, close)) => {
                if close {
                    self.stream = None;
                }
                Ok(status)
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }
}

/// `http://HOST:PORT/PATH` → (`HOST:PORT`, `/PATH`).
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
    (addr.to_string(), format!("/{path}"))
}

/// The HMAC-SHA256 GitHub puts in `X-Hub-Signature-256` (aws-lc's, as kiln's: the generator
/// should not be slower at signing than the servers are at checking).
fn signature_of(secret: &[u8], body: &[u8]) -> String {
    use aws_lc_rs::hmac;
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), body);
    format!("sha256={}", hex::encode(tag.as_ref()))
}

/// One connection: requests back to back until `until`, each with a fresh delivery id and body.
async fn connection(
    url: Arc<str>,
    headers: HeaderMap,
    body: Bytes,
    secret: Arc<str>,
    timeout: Duration,
    until: Instant,
) -> Tally {
    let at = placeholder_at(&body);
    let (addr, path) = split_url(&url);
    // The head without the per-request headers, as GitHub sends it.
    let mut head = format!("POST {path} HTTP/1.1\r\nhost: {addr}\r\n");
    for (name, value) in &headers {
        if name != "x-hub-signature-256" && name != "x-github-delivery" {
            head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
        }
    }
    head.push_str(&format!("content-length: {}\r\n", body.len()));
    let mut conn = RawConnection::new(addr);
    let mut request = Vec::with_capacity(head.len() + 256 + body.len());
    let mut unique = body.to_vec();
    let mut t = Tally::default();
    while Instant::now() < until {
        let delivery = uuid::Uuid::new_v4().to_string();
        unique[at..at + UNIQUE_PLACEHOLDER.len()].copy_from_slice(delivery.as_bytes());
        let signature = signature_of(secret.as_bytes(), &unique);
        request.clear();
        request.extend_from_slice(head.as_bytes());
        for line in [
            format!("x-github-delivery: {delivery}\r\n"),
            format!("x-hub-signature-256: {signature}\r\n\r\n"),
        ] {
            request.extend_from_slice(line.as_bytes());
        }
        request.extend_from_slice(&unique);
        let start = Instant::now();
        let result = match tokio::time::timeout(timeout, conn.send(&request)).await {
            Ok(r) => r,
            Err(_) => {
                conn.stream = None;
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "timed out",
                ))
            }
        };
        t.latencies_us.push(start.elapsed().as_micros() as u64);
        match result {
            Ok(s) if (200..300).contains(&s) => {
                t.ok += 1;
                t.ok_deliveries.push(delivery);
            }
            Ok(s) => *t.non_2xx.entry(s).or_default() += 1,
            Err(e) => *t.errors.entry(error_kind(&e)).or_default() += 1,
        }
    }
    t
}

struct Round {
    server: &'static str,
    elapsed: Duration,
    cpu: Option<Duration>,
    tally: Tally,
}

async fn run_round(
    server: &Server,
    settings: &Settings,
    headers: &HeaderMap,
    body: &Bytes,
    secret: &Arc<str>,
    ticks: u64,
) -> Round {
    let url: Arc<str> = server.hook_url.clone().into();
    let cpu_before = cpu_time(server.pid(), ticks);
    let start = Instant::now();
    let until = start + Duration::from_secs(settings.seconds);
    let tasks: Vec<_> = (0..settings.connections)
        .map(|_| {
            tokio::spawn(connection(
                url.clone(),
                headers.clone(),
                body.clone(),
                secret.clone(),
                settings.timeout,
                until,
            ))
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.expect("a connection task"));
    }
    let elapsed = start.elapsed();
    let cpu = match (cpu_before, cpu_time(server.pid(), ticks)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    Round {
        server: server.name,
        elapsed,
        cpu,
        tally,
    }
}

// ---------------------------------------------------------------------------------------------
// Reading kiln's books
// ---------------------------------------------------------------------------------------------

/// Every stored event's delivery id, through the API, all pages.
async fn stored_deliveries(base: &str) -> Vec<String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url =
            format!("{base}/api/v1/namespaces/{NAMESPACE}/repos/{REPOSITORY}/events?limit=200");
        if let Some(c) = &cursor {
            write!(url, "&cursor={c}").unwrap();
        }
        let resp = http
            .get(&url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
        cursor = resp
            .headers()
            .get("x-next-cursor")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let page: Vec<Value> = resp.json().await.expect("a JSON list of events");
        ids.extend(
            page.iter()
                .map(|e| e["delivery_id"].as_str().unwrap_or_default().to_string()),
        );
        if cursor.is_none() {
            return ids;
        }
    }
}

/// kiln's log lines at WARN or ERROR, colour codes removed, counted by their text after the
/// timestamp.
fn log_problems(path: &Path) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut problems = BTreeMap::new();
    for line in text.lines() {
        let plain = strip_ansi(line);
        let Some(at) = plain.find(" WARN ").or_else(|| plain.find(" ERROR ")) else {
            continue;
        };
        *problems
            .entry(without_numbers(&plain[at + 1..]))
            .or_default() += 1;
    }
    problems
}

/// The text with each number (durations, ids, ports) as `#`, so lines that differ only there
/// count as one; at most 200 characters.
fn without_numbers(s: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for c in s.chars() {
        let digit = c.is_ascii_digit() || (in_number && c == '.');
        if digit && !in_number {
            out.push('#');
        } else if !digit {
            out.push(c);
        }
        in_number = digit;
    }
    out.chars().take(200).collect()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------------------------

fn percentile(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Duration::from_micros(sorted[rank - 1])
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn rate(per_second: f64) -> String {
    if per_second < 10.0 {
        format!("{per_second:.1}")
    } else {
        format!("{per_second:.0}")
    }
}

fn counts<K: std::fmt::Display>(m: &BTreeMap<K, u64>) -> String {
    if m.is_empty() {
        return "0".into();
    }
    m.iter()
        .map(|(k, v)| format!("{v}× {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Summary {
    rate: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn row(label: &str, server: &str, elapsed: Duration, t: &Tally, cpu: Option<Duration>) -> Summary {
    let mut sorted = t.latencies_us.clone();
    sorted.sort_unstable();
    let s = Summary {
        rate: t.ok as f64 / elapsed.as_secs_f64(),
        p50: percentile(&sorted, 0.50),
        p99: percentile(&sorted, 0.99),
        max: sorted
            .last()
            .map_or(Duration::ZERO, |&u| Duration::from_micros(u)),
    };
    let cpu_per_request = match cpu {
        Some(c) if t.requests() > 0 => {
            format!("{:.3} ms", c.as_secs_f64() * 1000.0 / t.requests() as f64)
        }
        _ => "-".into(),
    };
    println!(
        "{label:<6} {server:<8} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9} {:>10}  {:<14} {}",
        t.requests(),
        t.ok,
        rate(s.rate),
        ms(s.p50),
        ms(s.p99),
        ms(s.max),
        cpu_per_request,
        counts(&t.non_2xx),
        counts(&t.errors),
    );
    s
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let settings = Settings::from_env();
    assert!(
        Path::new(WEBHOOK).exists(),
        "{WEBHOOK} is missing: install the Debian package `webhook` (adnanh/webhook)"
    );
    let ticks = ticks_per_second();
    let data_dir = tempfile::Builder::new()
        .prefix("kiln-bench-ingest-")
        .tempdir()
        .unwrap();
    let (mut kiln, kiln_base, passed) = start_kiln(data_dir.path()).await;
    let secret = set_up_kiln(&kiln_base).await;
    let webhook_dir = tempfile::tempdir().unwrap();
    let mut webhook = start_webhook(webhook_dir.path(), &secret).await;

    let body = Bytes::from(push_payload());
    let headers = github_headers(&support::github_signature(&secret, &body));
    check_verifies(&webhook, &headers, &body).await;
    let kiln_first = check_verifies(&kiln, &headers, &body).await;

    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!(
        "ingest benchmark: signed GitHub push of {} bytes, a unique X-GitHub-Delivery and body (signed per request) per request, \
         {} keep-alive connections × {} s per round, {} round(s) per server, {} s timeout per request",
        body.len(),
        settings.connections,
        settings.seconds,
        settings.rounds,
        settings.timeout.as_secs()
    );
    println!(
        "kiln: `{} serve` (pid {}), one GitHub source, rule tag v* (the pushes to main build nothing){}",
        kiln_binary().display(),
        kiln.pid(),
        if passed.is_empty() {
            String::new()
        } else {
            format!(", with {}", passed.join(" "))
        }
    );
    println!(
        "webhook: {WEBHOOK} (pid {}), payload-hmac-sha256 on X-Hub-Signature-256, command {}",
        webhook.pid(),
        webhook_command()
    );
    println!(
        "machine: {cpus} CPU(s), load average {} at the start (load generator, kiln and webhook share them)",
        load.join(" ")
    );
    println!();
    println!(
        "{:<6} {:<8} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9} {:>10}  {:<14} errors/timeouts",
        "round", "server", "requests", "2xx", "2xx/s", "p50", "p99", "max", "cpu/req", "non-2xx"
    );

    let shared_secret: Arc<str> = secret.clone().into();
    let mut rounds = Vec::new();
    for i in 0..settings.rounds {
        for server in [&webhook, &kiln] {
            let r = run_round(server, &settings, &headers, &body, &shared_secret, ticks).await;
            row(&format!("{}", i + 1), r.server, r.elapsed, &r.tally, r.cpu);
            rounds.push(r);
        }
    }
    let kiln_hwm = vm_kib(kiln.pid(), "VmHWM");
    let kiln_rss = vm_kib(kiln.pid(), "VmRSS");

    println!();
    let mut totals: HashMap<&str, (Duration, Option<Duration>, Tally)> = HashMap::new();
    for r in rounds {
        let e = totals.entry(r.server).or_insert((
            Duration::ZERO,
            Some(Duration::ZERO),
            Tally::default(),
        ));
        e.0 += r.elapsed;
        e.1 = match (e.1, r.cpu) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        e.2.merge(r.tally);
    }
    let w = &totals["webhook"];
    let k = &totals["kiln"];
    let ws = row("all", "webhook", w.0, &w.2, w.1);
    let ks = row("all", "kiln", k.0, &k.2, k.1);
    let ratio = if ws.rate > 0.0 {
        ks.rate / ws.rate
    } else {
        f64::NAN
    };
    println!();
    println!("kiln/webhook 2xx/s:  {ratio:.2}×");
    let kib =
        |v: Option<u64>| v.map_or("?".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    println!(
        "kiln peak RSS:       {} (VmHWM; VmRSS now {})",
        kib(kiln_hwm),
        kib(kiln_rss)
    );

    // Every 2xx must be stored, once.
    let mut answered: HashSet<String> = k.2.ok_deliveries.iter().cloned().collect();
    answered.insert(kiln_first);
    let stored = stored_deliveries(&kiln_base).await;
    let mut times: HashMap<&str, u64> = HashMap::new();
    for id in &stored {
        *times.entry(id.as_str()).or_default() += 1;
    }
    let stored_twice = times.values().filter(|&&n| n > 1).count();
    let missing = answered
        .iter()
        .filter(|id| !times.contains_key(id.as_str()))
        .count();
    let unanswered = times.keys().filter(|id| !answered.contains(**id)).count();
    let stored_ok = missing == 0 && stored_twice == 0 && stored.len() == answered.len();
    println!(
        "kiln 2xx answers:    {} (the {} of the load and the one of the signature check)",
        answered.len(),
        k.2.ok
    );
    println!(
        "kiln stored events:  {} (through GET …/events); 2xx not stored: {missing}, stored more than \
         once: {stored_twice}, stored without a 2xx (a request that timed out or failed): {unanswered}",
        stored.len()
    );
    println!(
        "every 2xx stored once: {}",
        if stored_ok {
            "yes, the counts match"
        } else {
            "NO"
        }
    );

    kiln.stop();
    webhook.stop();
    let problems = log_problems(&data_dir.path().join("kiln.log"));
    if problems.is_empty() {
        println!("kiln logged no warning or error");
    } else {
        println!("kiln logged (WARN/ERROR lines, by text):");
        let mut by_count: Vec<_> = problems.into_iter().collect();
        by_count.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        for (what, n) in by_count.iter().take(10) {
            println!("  {n:>6}× {what}");
        }
    }

    println!();
    println!("floor (issue 8):");
    let ratio_ok = ratio >= FLOOR_RATIO;
    let p99_ok = ks.p99 < FLOOR_P99 && k.2.requests() > 0;
    let failures = k.2.failures();
    let clean = failures == 0;
    println!(
        "  kiln 2xx/s ≥ {FLOOR_RATIO}× webhook's:      {} ({} vs {}: {ratio:.2}×; aim 2×)",
        verdict(ratio_ok),
        rate(ks.rate),
        rate(ws.rate)
    );
    println!(
        "  kiln p99 < {}:              {} ({})",
        ms(FLOOR_P99),
        verdict(p99_ok),
        ms(ks.p99)
    );
    println!(
        "  kiln: zero non-2xx, errors, timeouts: {} ({failures}: non-2xx {}, errors/timeouts {})",
        verdict(clean),
        counts(&k.2.non_2xx),
        counts(&k.2.errors)
    );
    println!(
        "  every 2xx stored exactly once:        {}",
        verdict(stored_ok)
    );
    println!(
        "  overall:                              {}",
        verdict(ratio_ok && p99_ok && clean && stored_ok)
    );
    if settings.keep {
        let kept: PathBuf = data_dir.keep();
        println!("kiln's data dir kept: {}", kept.display());
    }
}
