//! The real `kiln` binary: start-up on embedded defaults, the admin token rule, failing fast, and
//! what a restart does with builds a crash interrupted.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kiln_cmd(data_dir: &std::path::Path, port: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KILN_LISTEN", format!("127.0.0.1:{port}"))
        .env("KILN_DATA_DIR", data_dir)
        .env("KILN_REGISTRY", "127.0.0.1:1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Reads stdout lines until one holding a generated token shows up.
fn read_token(child: &mut Child) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200))
            && let Some(t) = line.split_whitespace().find(|w| w.starts_with("kiln_"))
        {
            return t.to_string();
        }
    }
    panic!("kiln printed no admin token within 30 s");
}

async fn wait_http(url: &str) {
    let http = reqwest::Client::new();
    support::wait_until(
        &format!("{url} to answer"),
        Duration::from_secs(30),
        || async { http.get(url).send().await.is_ok() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn first_start_generates_an_admin_token_once_and_healthz_reports_each_part() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let mut child = kiln_cmd(dir.path(), port).spawn().unwrap();
    let token = read_token(&mut child);
    let _running = Running(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{base}/healthz")).await;
    let http = reqwest::Client::new();

    let health: serde_json::Value = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["database"]["status"], "ok", "{health}");
    // Nothing listens on 127.0.0.1:1: the registry is down, so kiln is degraded but serving.
    assert_eq!(health["registry"]["status"], "error", "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(health["docker"]["status"].is_string());

    // Prometheus text, no token needed.
    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    for line in [
        "kiln_builds{status=\"queued\"} 0",
        "kiln_deliveries{status=\"pending\"} 0",
        "kiln_repositories 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from:\n{text}"
        );
    }

    let r = http
        .get(format!("{base}/api/v1/namespaces"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let r = http
        .get(format!("{base}/api/v1/namespaces"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("{base}/api/v1/namespaces"))
        .bearer_auth("kiln_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The token is stored hashed: the database file does not hold it.
    let db = std::fs::read(dir.path().join("kiln.db")).unwrap();
    let wal = std::fs::read(dir.path().join("kiln.db-wal")).unwrap_or_default();
    let needle = token.as_bytes();
    assert!(!db.windows(needle.len()).any(|w| w == needle));
    assert!(!wal.windows(needle.len()).any(|w| w == needle));
    drop(_running);

    // A second start over the same data dir prints no new token, and the first still works.
    let port2 = support::free_port();
    let mut child = kiln_cmd(dir.path(), port2).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let _running = Running(child);
    let base2 = format!("http://127.0.0.1:{port2}");
    wait_http(&format!("{base2}/healthz")).await;
    let r = http
        .get(format!("{base2}/api/v1/namespaces"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(_running);
    let printed: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    assert!(!printed.iter().any(|l| l.contains("kiln_")), "{printed:?}");
}

#[test]
fn an_unopenable_database_fails_fast_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = kiln_cmd(dir.path(), support::free_port())
        .env(
            "KILN_DATABASE_URL",
            "sqlite:///nonexistent-dir/deeper/kiln.db",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("kiln: cannot open database sqlite:///nonexistent-dir/deeper/kiln.db"),
        "{stderr}"
    );

    let out = kiln_cmd(dir.path(), support::free_port())
        .env("KILN_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("KILN_LISTEN"));
}

/// A child's output, line by line, read on a thread: wait for a line, and keep every line seen.
struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn of(stream: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Lines { rx, seen: vec![] }
    }

    /// Waits up to 30 s for a line containing `needle`.
    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(line) = self.rx.recv_timeout(Duration::from_millis(200)) {
                let found = line.contains(needle);
                self.seen.push(line);
                if found {
                    return;
                }
            }
        }
        panic!(
            "no line with '{needle}' within 30 s; seen:\n{}",
            self.seen.join("\n")
        );
    }
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = kiln_cmd(dir.path(), support::free_port()).spawn().unwrap();
    let mut log = Lines::of(child.stderr.take().unwrap());
    let _running = Running(child);
    log.wait_for("kiln is serving");
    let coloured: Vec<&String> = log.seen.iter().filter(|l| l.contains("\x1b[")).collect();
    assert!(
        coloured.is_empty(),
        "ANSI escapes in a log written to a pipe: {coloured:?}"
    );
    assert!(
        log.seen
            .iter()
            .any(|l| l.contains(" INFO ") && l.contains("kiln is serving addr=127.0.0.1:")),
        "{:?}",
        log.seen
    );
}

/// The one line a kiln refused over a locked data dir prints.
fn refusal(data_dir: &std::path::Path, holder_pid: u32) -> String {
    format!(
        "data dir {} is in use by another kiln (pid {holder_pid}): stop it first, or give this one \
         its own KILN_DATA_DIR",
        data_dir.display()
    )
}

fn in_process_config(data_dir: &std::path::Path) -> kiln::Config {
    let vars: std::collections::HashMap<String, String> = [
        ("KILN_LISTEN", "127.0.0.1:0".to_string()),
        ("KILN_DATA_DIR", data_dir.display().to_string()),
        ("KILN_REGISTRY", "127.0.0.1:1".to_string()),
        ("KILN_ADMIN_TOKEN", "kiln_test_lock_admin_token".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    kiln::Config::load(None, &vars).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_kiln_on_the_same_data_dir_refuses_to_start_and_the_first_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let mut first = kiln_cmd(dir.path(), port).spawn().unwrap();
    let first_pid = first.id();
    let token = read_token(&mut first);
    let first = Running(first);
    let base = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{base}/healthz")).await;

    // Another process, on another port, over the same data dir: refused at once, with one line.
    let port2 = support::free_port();
    let mut second = kiln_cmd(dir.path(), port2).spawn().unwrap();
    let mut second_stderr = second.stderr.take().unwrap();
    let mut status = None;
    support::wait_until("the second kiln to exit", Duration::from_secs(30), || {
        status = second.try_wait().unwrap();
        let exited = status.is_some();
        async move { exited }
    })
    .await;
    let _second = Running(second);
    assert!(!status.unwrap().success(), "{status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second_stderr, &mut stderr).unwrap();
    assert_eq!(
        stderr,
        format!("kiln: {}\n", refusal(dir.path(), first_pid)),
        "exactly one line on stderr"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port2)).is_err(),
        "the refused kiln never listened"
    );

    // The first is unharmed.
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{base}/api/v1/namespaces"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The same in-process.
    let refused = kiln::Server::start(in_process_config(dir.path()))
        .await
        .err()
        .expect("a second Server::start on a locked data dir fails");
    assert_eq!(format!("{refused:#}"), refusal(dir.path(), first_pid));

    // Once the first has stopped, the data dir is free again (no stale lock, even after a kill -9).
    drop(first);
    let server = kiln::Server::start(in_process_config(dir.path()))
        .await
        .expect("the data dir is free once its kiln has stopped");
    let r = http
        .get(format!("http://{}/api/v1/namespaces", server.addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "same data: the first kiln's admin token still works"
    );
    // While it runs, it holds the lock in turn: a real kiln is now the one refused.
    let out = kiln_cmd(dir.path(), support::free_port()).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("kiln: {}\n", refusal(dir.path(), std::process::id()))
    );
    drop(server);
    let server = kiln::Server::start(in_process_config(dir.path()))
        .await
        .expect("dropping the Server releases the data dir");
    drop(server);
}

#[test]
fn help_documents_every_option() {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "--config",
        "KILN_LISTEN",
        "KILN_DATA_DIR",
        "KILN_REGISTRY",
        "KILN_ADMIN_TOKEN",
        "KILN_REGISTRY_EVENTS_TOKEN",
        "KILN_PUBLIC_URL",
        "DOCKER_HOST",
    ] {
        assert!(help.contains(var), "{var} missing from:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_left_building_by_a_crash_runs_again_at_the_next_start_until_its_attempts_run_out()
{
    let registry = support::Registry::start();
    let kiln = support::kiln::Kiln::start(&registry, &[("KILN_BUILD_WORKERS", "1")]).await;
    kiln.post("/namespaces", json!({"name": "acme"})).await;
    kiln.post("/namespaces/acme/repos", json!({"name": "api"}))
        .await;
    // What a crash mid-build leaves behind: rows marked building, one on its first attempt, one on
    // its last.
    let (repo_id,): (String,) = sqlx::query_as("SELECT id FROM repositories")
        .fetch_one(&kiln.server.app.db)
        .await
        .unwrap();
    for (id, attempt) in [("b-crashed", 1), ("b-crashed-thrice", 3)] {
        sqlx::query(
            "INSERT INTO builds (id, repository_id, trigger, git_ref, dockerfile, status, created_at, started_at, attempt) \
             VALUES (?, ?, 'push', 'refs/heads/main', 'Dockerfile', 'building', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:01.000000Z', ?)",
        )
        .bind(id)
        .bind(&repo_id)
        .bind(attempt)
        .execute(&kiln.server.app.db)
        .await
        .unwrap();
    }
    let data_dir = {
        let support::kiln::Kiln {
            server, data_dir, ..
        } = kiln;
        server.app.db.close().await;
        drop(server);
        data_dir
    };
    let kiln = support::kiln::Kiln::start_in(&registry, &[], data_dir).await;
    // Queued again and run again as attempt 2 (it then fails for its own reason: the repository has
    // no source).
    let build = kiln.wait_build("b-crashed").await;
    assert_eq!(build["attempt"], 2, "{build}");
    assert_eq!(build["status"], "failed", "{build}");
    assert_eq!(
        build["error"], "the repository has no git source",
        "{build}"
    );
    let log = kiln.log("b-crashed").await;
    assert!(
        log.starts_with("Attempt 2: kiln restarted while this build was running"),
        "{log}"
    );
    // The third interruption fails it, saying why.
    let (_, build) = kiln.get("/builds/b-crashed-thrice").await;
    assert_eq!(build["status"], "failed", "{build}");
    assert_eq!(build["attempt"], 3, "{build}");
    assert_eq!(
        build["error"], "interrupted 3 times: kiln stopped during each attempt",
        "{build}"
    );
    assert!(build["finished_at"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn old_events_and_finished_deliveries_are_pruned_and_recent_ones_kept() {
    let registry = support::Registry::start();
    let kiln = support::kiln::Kiln::start(
        &registry,
        &[
            ("KILN_EVENT_RETENTION_DAYS", "7"),
            ("KILN_DELIVERY_RETENTION_DAYS", "30"),
        ],
    )
    .await;
    kiln.post("/namespaces", json!({"name": "acme"})).await;
    kiln.post("/namespaces/acme/repos", json!({"name": "api"}))
        .await;
    let (s, hook) = kiln
        .post(
            "/namespaces/acme/repos/api/webhooks",
            json!({"name": "n", "url": "https://example.invalid/hook"}),
        )
        .await;
    assert_eq!(s, 201, "{hook}");
    let db = &kiln.server.app.db;
    let (repo_id,): (String,) = sqlx::query_as("SELECT id FROM repositories")
        .fetch_one(db)
        .await
        .unwrap();
    let old = "2020-01-01T00:00:00.000000Z";
    let recent = kiln::db::now();
    for (id, at) in [("e-old", old), ("e-new", recent.as_str())] {
        sqlx::query(
            "INSERT INTO events (id, repository_id, provider, delivery_id, kind, outcome, plan, payload, received_at) \
             VALUES (?, ?, 'github', ?, 'push', 'x', '[]', x'', ?)",
        )
        .bind(id)
        .bind(&repo_id)
        .bind(id)
        .bind(at)
        .execute(db)
        .await
        .unwrap();
    }
    for (id, at, status) in [
        ("d-old", old, "failed"),
        ("d-old-pending", old, "pending"),
        ("d-new", recent.as_str(), "succeeded"),
    ] {
        sqlx::query(
            "INSERT INTO deliveries (id, webhook_id, message_id, event, body, status, next_attempt_at, claimed_until, created_at) \
             VALUES (?, ?, 'msg', 'image.pushed', '{}', ?, '2999-01-01T00:00:00.000000Z', '2999-01-01T00:00:00.000000Z', ?)",
        )
        .bind(id)
        .bind(hook["id"].as_str().unwrap())
        .bind(status)
        .bind(at)
        .execute(db)
        .await
        .unwrap();
    }
    let (events, deliveries) = kiln::retention::prune_once(&kiln.server.app).await.unwrap();
    assert_eq!((events, deliveries), (1, 1));
    let left: Vec<(String,)> = sqlx::query_as("SELECT id FROM events ORDER BY id")
        .fetch_all(db)
        .await
        .unwrap();
    assert_eq!(left, vec![("e-new".to_string(),)]);
    let left: Vec<(String,)> = sqlx::query_as("SELECT id FROM deliveries ORDER BY id")
        .fetch_all(db)
        .await
        .unwrap();
    assert_eq!(
        left,
        vec![("d-new".to_string(),), ("d-old-pending".to_string(),)],
        "pending deliveries are never pruned"
    );
}
