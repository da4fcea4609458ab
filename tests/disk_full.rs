//! A full disk (issue 11, faults): kiln's data directory on a small tmpfs, filled by a file of the
//! test's. Requests that must store (hook deliveries, API creates) are refused with 503
//! `storage_full` and `Retry-After` in the JSON error shape, never a 500 or a panic; nothing is
//! half-written (`PRAGMA integrity_check` says ok, a refused create does not exist); a build that
//! cannot store its log or fetch its commit fails with the reason; and once the filler is deleted the same requests
//! succeed, without restarting kiln.
//!
//! Mounting needs root: `.ci/run` runs as root. The test fails (it does not skip) when the mount
//! fails.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::kiln::Kiln;
use support::{GitHttpServer, GitRepo, Registry, github_push_payload, new_delivery_id, wait_until};

const ZERO: &str = "0000000000000000000000000000000000000000";

/// A tmpfs of `size` mounted on a temp dir; unmounted (lazily, so even with files still open) when
/// dropped, also when the test fails.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a {size} tmpfs on {} ({}): this test needs root, as .ci/run has: {}",
            dir.path().display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A file that takes the disk's free space: `fill` writes until the disk says it is full.
struct Filler {
    path: PathBuf,
    file: std::fs::File,
    len: u64,
}

impl Filler {
    fn new(dir: &Path) -> Filler {
        let path = dir.join("filler");
        let file = std::fs::File::create(&path).expect("create the filler");
        Filler { path, file, len: 0 }
    }

    /// Writes until `ENOSPC`, then frees `leave` bytes at its end (0: the disk stays full).
    fn fill(&mut self, leave: u64) {
        let chunk = vec![0x5a_u8; 16 * 1024];
        loop {
            match self.file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => self.len += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("writing the filler: {e}"),
            }
        }
        // A last partial block may still fit.
        let mut byte = [0u8; 1];
        while self.file.write(&byte).is_ok_and(|n| n == 1) {
            self.len += 1;
            byte[0] = 1;
        }
        self.len = self.len.saturating_sub(leave);
        self.file.set_len(self.len).expect("truncate the filler");
    }

    fn remove(self) {
        drop(self.file);
        std::fs::remove_file(&self.path).expect("remove the filler");
    }
}

fn integrity_check(db: &Path) -> String {
    sqlite(db, "PRAGMA integrity_check;")
}

fn sqlite(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("run sqlite3");
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A signed GitHub push with `padding` bytes of extra payload (GitHub sends up to 25 MB): random
/// hex, which LZ4 cannot shrink (kiln stores payloads compressed), so it takes its size on disk.
fn push_body(clone_url: &str, sha: &str, padding: usize) -> Vec<u8> {
    let mut payload = github_push_payload(clone_url, "refs/heads/main", ZERO, sha, false);
    let mut message = String::with_capacity(padding + 32);
    while message.len() < padding {
        message.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    message.truncate(padding);
    payload["head_commit"]["message"] = json!(message);
    serde_json::to_vec(&payload).unwrap()
}

async fn post_hook(kiln: &Kiln, delivery: &str, secret: &str, body: &[u8]) -> reqwest::Response {
    kiln.http
        .post(format!("{}/hooks/github", kiln.url))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header(
            "x-hub-signature-256",
            support::github_signature(secret, body),
        )
        .body(body.to_vec())
        .send()
        .await
        .expect("hook request")
}

/// The build a delivery answered 202 queued.
async fn queued_build(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let queued: Value = resp.json().await.unwrap();
    queued["builds"][0]
        .as_str()
        .unwrap_or_else(|| panic!("a build: {queued}"))
        .to_string()
}

/// A 503 `storage_full` in the JSON error shape, with `Retry-After`.
async fn assert_storage_full(resp: reqwest::Response, what: &str) {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Value = resp.json().await.expect("a JSON error");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
    assert_eq!(body["error"]["code"], "storage_full", "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("disk is full")),
        "{what}: {body}"
    );
    assert_eq!(retry_after.as_deref(), Some("60"), "{what}");
}

async fn events(kiln: &Kiln) -> Vec<Value> {
    let (s, body) = kiln.get("/namespaces/acme/repos/app/events").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body.as_array().expect("events").clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_what_it_cannot_store_corrupts_nothing_and_kiln_resumes_when_space_returns()
 {
    support::ensure_docker();
    let tmpfs = Tmpfs::mount("24m");
    let registry = Registry::start();
    let data_dir = tempfile::tempdir_in(tmpfs.path()).expect("data dir on the tmpfs");
    let db_path = data_dir.path().join("kiln.db");
    // KILN_GIT_ALLOW: for a kiln whose git fetches are guarded, the test's git server is on loopback.
    // The classic builder passes a step's whole output on; the daemon's BuildKit clips it past a
    // rate (200 KiB/s), so whether the loud build below reached the disk's end depended on timing
    // (it failed 1 run in 5 with the build succeeding).
    let kiln = Kiln::start_in(
        &registry,
        &[("KILN_GIT_ALLOW", "127.0.0.1"), ("KILN_BUILDER", "classic")],
        data_dir,
    )
    .await;

    // A repository whose next commit needs 2 MiB of disk to fetch: its mirror is in the data dir.
    let git = GitRepo::new();
    git.write("Dockerfile", "FROM scratch\nCOPY blob /blob\n");
    git.write("blob", "small at first\n");
    git.commit("first");
    git.push("main");
    // Fetched over HTTP (a local source would borrow its objects instead of copying them).
    let server = GitHttpServer::start(git.bare.parent().unwrap(), None).await;
    let clone_url = format!(
        "{}/{}",
        server.url,
        git.bare.file_name().unwrap().to_string_lossy()
    );
    let secret = kiln.ci_repo("acme", "app", &clone_url).await;
    kiln.rule("acme", "app", json!({"type": "branch", "name": "main"}))
        .await;

    let base = tokio::task::spawn_blocking(support::ensure_base_image)
        .await
        .unwrap();

    // -- 1. Nearly full: the hook is stored; the build prints 2 MiB, more than its log can store, and
    // fails with that reason instead of pushing.
    let mut filler = Filler::new(tmpfs.path());
    filler.fill(512 * 1024);
    // A run of its own (no layer cache can skip the step that prints).
    let run = new_delivery_id();
    git.write(
        "Dockerfile",
        format!(
            "FROM {base}\nRUN i=0; while [ $i -lt 20000 ]; do \
             echo \"line $i of build {run}, whose output is more than the disk can hold\"; i=$((i+1)); done\n"
        ),
    );
    let sha = git.commit("a loud build");
    git.push("main");
    let build = queued_build(
        post_hook(
            &kiln,
            &new_delivery_id(),
            &secret,
            &push_body(&clone_url, &sha, 0),
        )
        .await,
    )
    .await;
    // The daemon finished the build (it tagged the image); the log took the disk's last bytes, so
    // the build's end cannot be recorded until space returns: kiln tries again until then.
    let built = format!("{}/acme/app:main", registry.addr);
    wait_until(
        "the daemon to finish the loud build",
        Duration::from_secs(180),
        || {
            let built = built.clone();
            async move {
                tokio::task::spawn_blocking(move || support::docker_image_exists(&built))
                    .await
                    .unwrap()
            }
        },
    )
    .await;
    filler.fill(1 << 20);
    let b = kiln.wait_build(&build).await;
    assert_eq!(b["status"], "failed", "{b}");
    assert_eq!(
        b["error"], "the disk holding kiln's data is full: the build log cannot be stored",
        "{b}"
    );
    assert!(
        registry.tags("acme/app").await.is_empty(),
        "nothing was pushed"
    );

    // -- 1b. Nearly full again: the build cannot fetch 2 MiB of git objects and fails with the reason.
    filler.fill(512 * 1024);
    git.write("Dockerfile", "FROM scratch\nCOPY blob /blob\n");
    git.write("blob", support::incompressible(2 << 20, 11));
    let sha = git.commit("a blob of 2 MiB");
    git.push("main");
    let build = queued_build(
        post_hook(
            &kiln,
            &new_delivery_id(),
            &secret,
            &push_body(&clone_url, &sha, 0),
        )
        .await,
    )
    .await;
    let b = kiln.wait_build(&build).await;
    assert_eq!(b["status"], "failed", "{b}");
    let error = b["error"].as_str().expect("a reason");
    assert!(error.contains("No space left on device"), "{error}");

    // -- 2. Full: what must be stored is refused with storage_full, never half-written.
    filler.fill(0);
    let delivery = new_delivery_id();
    // Larger than the WAL's reusable space (about 1 MiB here): a payload that fits in frames the WAL
    // already holds is stored, full disk or not, and rightly answered 202.
    let big = push_body(&clone_url, &sha, 3 << 20);
    assert_storage_full(post_hook(&kiln, &delivery, &secret, &big).await, "hook").await;
    assert!(
        !events(&kiln)
            .await
            .iter()
            .any(|e| e["delivery_id"] == delivery.as_str()),
        "a refused delivery is not stored"
    );
    // Creates: a few may fit in the free pages SQLite still has; then one is refused.
    let mut created = Vec::new();
    let mut refused = None;
    for i in 0..2000 {
        // Whatever space kiln or SQLite freed meanwhile (a rolled-back WAL append, a failed fetch's
        // temp pack) is taken again: the disk is full when the request comes.
        filler.fill(0);
        let name = format!("team-{i:04}-{}", "n".repeat(40));
        let resp = kiln
            .http
            .post(format!("{}/api/v1/namespaces", kiln.url))
            .bearer_auth(support::kiln::ADMIN_TOKEN)
            .json(&json!({"name": name}))
            .send()
            .await
            .expect("create request");
        if resp.status() == StatusCode::CREATED {
            created.push(name);
            continue;
        }
        assert_storage_full(resp, &format!("create of namespace {name}")).await;
        refused = Some(name);
        break;
    }
    let refused = refused.expect("a create refused while the disk is full");
    println!(
        "disk full: {} namespace creates fitted in SQLite's free pages before one was refused",
        created.len()
    );
    // A change made in a transaction (hiding the repository: two statements) is refused whole.
    filler.fill(0);
    let hide = |path: &'static str| {
        kiln.http
            .post(format!(
                "{}/api/v1/namespaces/acme/repos/app/{path}",
                kiln.url
            ))
            .bearer_auth(support::kiln::ADMIN_TOKEN)
            .send()
    };
    let mut hidden_while_full = 0;
    loop {
        filler.fill(0);
        let resp = hide("hide").await.expect("hide request");
        if resp.status().is_success() {
            // It fitted in free pages: shown again, and tried once more.
            hidden_while_full += 1;
            assert!(hidden_while_full < 50, "hiding never hit the full disk");
            filler.fill(0);
            let resp = hide("unhide").await.expect("unhide request");
            if resp.status().is_success() {
                continue;
            }
            assert_storage_full(resp, "unhide").await;
            break;
        }
        assert_storage_full(resp, "hide").await;
        break;
    }
    // kiln answers reads meanwhile.
    let (s, _) = kiln.get("/namespaces/acme/repos/app").await;
    assert_eq!(s, StatusCode::OK);

    // -- 3. Space returns: the same requests succeed, without a restart.
    filler.remove();
    // The loop above may have ended with the repository hidden (a hide that fitted, then a refused
    // unhide): the refused unhide succeeds now, so the hook below builds.
    let resp = hide("unhide").await.expect("unhide request");
    assert!(
        resp.status().is_success(),
        "unhide after space returned: {}",
        resp.status()
    );
    let build = queued_build(post_hook(&kiln, &delivery, &secret, &big).await).await;
    assert!(
        events(&kiln)
            .await
            .iter()
            .any(|e| e["delivery_id"] == delivery.as_str()),
        "the delivery is stored now"
    );
    let (s, body) = kiln.post("/namespaces", json!({"name": refused})).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    // Transactions work again on every pooled connection (a connection whose transaction SQLite
    // ended on the full disk was not kept): each of the pool's connections is used a few times.
    for round in 0..24 {
        let path = if round % 2 == 0 { "hide" } else { "unhide" };
        let resp = hide(path).await.expect("hide request");
        let status = resp.status();
        assert!(
            status.is_success(),
            "{path} after space returned: {status} {}",
            resp.text().await.unwrap_or_default()
        );
    }
    let b = kiln.wait_build(&build).await;
    assert_eq!(b["status"], "succeeded", "{b}\n{}", kiln.log(&build).await);

    let mut kiln = kiln;
    kiln.server.shutdown().await;
    assert_eq!(integrity_check(&db_path), "ok");
    // Every create answered 201 is stored, and the refused one only from its retry.
    let stored = sqlite(
        &db_path,
        "SELECT name FROM namespaces WHERE name LIKE 'team-%' ORDER BY name;",
    );
    let mut expected = created.clone();
    expected.push(refused.clone());
    assert_eq!(stored.lines().collect::<Vec<_>>(), expected);
    drop(kiln);
    drop(tmpfs);
}
