//! The harness shared by kiln's end-to-end tests (`mod support;` at the top of each `tests/*.rs`).
//!
//! It brings up the real things kiln talks to, on this machine, and fails loudly when one is
//! missing: a test that needs Docker panics without it, it never skips.
//!
//! - [`ensure_docker`] makes sure a Docker daemon answers (starting `dockerd` if needed) and
//!   [`ensure_base_image`] makes the local base image `kiln-test/busybox:latest` (no image can be
//!   pulled here: test Dockerfiles use `FROM scratch` or `FROM kiln-test/busybox`).
//! - [`Registry`] runs a CNCF Distribution registry (`docker-registry serve`) on a free loopback
//!   port, optionally sending its notifications somewhere; it is stopped when dropped.
//! - [`GitRepo`] is a bare repository (what kiln clones from, as a `file://` URL) plus a work tree
//!   to commit and push from, driven by the real `git` CLI; all of them live under
//!   [`git_repos_root`], the directory `Kiln::start` allows as `KILN_LOCAL_SOURCES`.
//! - [`github_signature`], [`github_push_payload`], [`github_ping_payload`] and
//!   [`post_github_hook`] send what GitHub sends.
//! - [`RecordingServer`] is a real HTTP server that records what it receives (a webhook receiver,
//!   the registry's notification target, any outside service).
//! - [`GitHttpServer`] serves bare repositories over git's smart HTTP protocol (`git
//!   http-backend`), optionally behind HTTP Basic authentication: a private repository.
//! - [`free_port`], [`wait_until`] and [`wait_until_blocking`]: wait on a condition with a
//!   timeout, never a fixed sleep.
//! - [`browser::Browser`] drives a headless chromium through Debian's chromedriver (the console's
//!   browser tests): waits that poll, sign-in through the form, full-page screenshots.
//!
//! Blocking and async: the set-up functions (`ensure_*`, `Registry::start*`, `GitRepo`, [`docker`])
//! block the calling thread for up to a few seconds. Call them before kiln starts, or run the test
//! on a multi-threaded runtime (`#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`) so a
//! kiln served from the same runtime keeps going meanwhile. [`docker_build_and_push`], the
//! registry queries and the webhook sender are async.
//!
//! Nothing in this file knows kiln's own types: kiln-specific helpers live in `kiln.rs` beside it.
#![allow(dead_code)]

pub mod browser;
pub mod console;
pub mod fake_gitea;
pub mod fake_github;
pub mod fake_gitlab;
pub mod fake_host;
pub mod kiln;
pub mod kiln_process;

use std::collections::HashSet;
use std::fs;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The Docker CLI that matches the daemon (Debian's `docker.io`, API 1.41).
pub const DOCKER: &str = "/usr/bin/docker";
/// The local base image test Dockerfiles build `FROM` (busybox and its applets).
pub const BASE_IMAGE: &str = "kiln-test/busybox:latest";

const DOCKERD_LOG: &str = "/tmp/kiln-test-dockerd.log";
const DOCKERD_LOCK: &str = "/tmp/kiln-test-dockerd.lock";
const BASE_IMAGE_LOCK: &str = "/tmp/kiln-test-base-image.lock";
const DOCKER_START_TIMEOUT: Duration = Duration::from_secs(60);
const REGISTRY_START_TIMEOUT: Duration = Duration::from_secs(30);
const DOCKER_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
const GIT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Docker
// ---------------------------------------------------------------------------------------------

static DOCKER_READY: OnceLock<()> = OnceLock::new();
static BASE_IMAGE_READY: OnceLock<()> = OnceLock::new();

/// Makes sure a Docker daemon answers `docker info`, starting `dockerd` in the background (its
/// log in `/tmp/kiln-test-dockerd.log`) when none does, and waits up to 60 s for it.
///
/// Once per process; across test processes a lock file (`/tmp/kiln-test-dockerd.lock`) lets one
/// of them start the daemon while the others wait. Panics with the reason when Docker can't be
/// had: the end-to-end tests fail, they never skip.
pub fn ensure_docker() {
    DOCKER_READY.get_or_init(|| {
        if docker_answers() {
            return;
        }
        if std::env::var_os("DOCKER_HOST").is_some() {
            panic!(
                "Docker is required for the end-to-end tests: the daemon at DOCKER_HOST={} does \
                 not answer `{DOCKER} info`",
                std::env::var("DOCKER_HOST").unwrap_or_default()
            );
        }
        let deadline = Instant::now() + DOCKER_START_TIMEOUT;
        let lock = CrossProcessLock::acquire(DOCKERD_LOCK, DOCKER_START_TIMEOUT);
        let mut started: Option<Child> = None;
        if !docker_answers() {
            started = Some(spawn_dockerd());
        }
        let ready = wait_until_blocking_quiet(deadline, Duration::from_millis(250), docker_answers);
        drop(lock);
        if !ready {
            let exited = started
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten())
                .map(|status| format!(" (the dockerd started here exited: {status})"))
                .unwrap_or_default();
            panic!(
                "Docker is required for the end-to-end tests: `{DOCKER} info` still fails {} s \
                 after starting dockerd{exited}. Is docker.io installed and are we root? Last \
                 lines of {DOCKERD_LOG}:\n{}",
                DOCKER_START_TIMEOUT.as_secs(),
                tail(&fs::read_to_string(DOCKERD_LOG).unwrap_or_default(), 20)
            );
        }
        // A dockerd started here stays up after the tests, for the next run; it runs in its own
        // process group so a Ctrl-C on `cargo test` does not take it down half-way.
        drop(started);
    });
}

fn docker_answers() -> bool {
    matches!(
        run_with_timeout(
            Command::new(DOCKER).args(["info", "--format", "{{.ServerVersion}}"]),
            Duration::from_secs(20),
        ),
        Ok(Some(out)) if out.status.success()
    )
}

fn spawn_dockerd() -> Child {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(DOCKERD_LOG)
        .unwrap_or_else(|e| {
            panic!("Docker is required for the end-to-end tests: cannot open {DOCKERD_LOG}: {e}")
        });
    let log2 = log.try_clone().expect("clone the dockerd log handle");
    Command::new("dockerd")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "Docker is required for the end-to-end tests: `{DOCKER} info` fails and `dockerd` \
                 cannot be started ({e}); install it with `apt-get install -y docker.io`"
            )
        })
}

/// Runs the Docker CLI (`/usr/bin/docker`) with `args`, after [`ensure_docker`], and returns its
/// standard output, trimmed. Panics with the command's standard error when it fails. Blocking.
pub fn docker(args: &[&str]) -> String {
    ensure_docker();
    let out = run_with_timeout(Command::new(DOCKER).args(args), DOCKER_COMMAND_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot run `{DOCKER} {}`: {e}", args.join(" ")))
        .unwrap_or_else(|| {
            panic!(
                "`{DOCKER} {}` did not finish within {} s",
                args.join(" "),
                DOCKER_COMMAND_TIMEOUT.as_secs()
            )
        });
    if !out.status.success() {
        panic!(
            "`{DOCKER} {}` failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether the local Docker daemon has an image by that name (`docker image inspect`).
pub fn docker_image_exists(image: &str) -> bool {
    ensure_docker();
    matches!(
        run_with_timeout(
            Command::new(DOCKER).args(["image", "inspect", "--format", "{{.Id}}", image]),
            Duration::from_secs(30),
        ),
        Ok(Some(out)) if out.status.success()
    )
}

/// Makes (once) the local image `kiln-test/busybox:latest` and returns its name: a `docker import`
/// of a root file system holding a static `/bin/busybox` (from Debian's `busybox-static`) with its
/// applets (`sh`, `echo`, `cat`, `ls`, `true`, `false`, `env`, …) as symlinks, `/tmp`, and
/// `CMD ["/bin/sh"]`. Kept in the daemon between runs; made again only when missing.
pub fn ensure_base_image() -> &'static str {
    BASE_IMAGE_READY.get_or_init(|| {
        ensure_docker();
        if docker_image_exists(BASE_IMAGE) {
            return;
        }
        let lock = CrossProcessLock::acquire(BASE_IMAGE_LOCK, Duration::from_secs(60));
        if !docker_image_exists(BASE_IMAGE) {
            import_base_image();
        }
        drop(lock);
        assert!(
            docker_image_exists(BASE_IMAGE),
            "{BASE_IMAGE} is still missing after `docker import`"
        );
    });
    BASE_IMAGE
}

const BUSYBOX_APPLETS: &[&str] = &[
    "sh",
    "ash",
    "echo",
    "cat",
    "ls",
    "true",
    "false",
    "env",
    "test",
    "[",
    "printf",
    "sleep",
    "mkdir",
    "rm",
    "rmdir",
    "cp",
    "mv",
    "ln",
    "touch",
    "chmod",
    "pwd",
    "id",
    "whoami",
    "uname",
    "date",
    "head",
    "tail",
    "wc",
    "grep",
    "sed",
    "tr",
    "cut",
    "sort",
    "uniq",
    "find",
    "xargs",
    "expr",
    "which",
    "basename",
    "dirname",
    "tee",
    "stat",
    "du",
    "df",
    "ps",
    "kill",
    "hostname",
    "sha256sum",
    "md5sum",
    "tar",
    "gzip",
    "gunzip",
    "vi",
    "wget",
    "seq",
    "yes",
];

fn import_base_image() {
    let busybox = Path::new("/bin/busybox");
    let bytes = fs::read(busybox).unwrap_or_else(|e| {
        panic!(
            "the end-to-end tests need a static /bin/busybox for their base image ({e}): \
             `apt-get install -y busybox-static`"
        )
    });
    assert!(
        is_static_elf(&bytes),
        "/bin/busybox is dynamically linked: the end-to-end tests' base image needs the static \
         one, `apt-get install -y busybox-static`"
    );
    let root = tempfile::Builder::new()
        .prefix("kiln-test-rootfs-")
        .tempdir()
        .expect("create a temp dir for the base image");
    let rootfs = root.path();
    for dir in ["bin", "usr/bin", "etc", "root", "tmp", "var/tmp"] {
        fs::create_dir_all(rootfs.join(dir)).expect("create the base image's directories");
    }
    for dir in ["tmp", "var/tmp"] {
        fs::set_permissions(rootfs.join(dir), fs::Permissions::from_mode(0o1777))
            .expect("chmod the base image's tmp");
    }
    fs::write(rootfs.join("bin/busybox"), &bytes).expect("copy busybox into the base image");
    fs::set_permissions(
        rootfs.join("bin/busybox"),
        fs::Permissions::from_mode(0o755),
    )
    .expect("chmod busybox");
    for applet in BUSYBOX_APPLETS {
        symlink("busybox", rootfs.join("bin").join(applet)).expect("link a busybox applet");
    }
    symlink("/bin/busybox", rootfs.join("usr/bin/env")).expect("link /usr/bin/env");
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .expect("write /etc/passwd");
    fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("write /etc/group");

    ensure_docker();
    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run tar to pack the base image's root file system");
    let tar_out = tar.stdout.take().expect("tar's stdout");
    let import = Command::new(DOCKER)
        .args([
            "import",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            r#"CMD ["/bin/sh"]"#,
            "--message",
            "kiln end-to-end test base image: static busybox",
            "-",
            BASE_IMAGE,
        ])
        .stdin(Stdio::from(tar_out))
        .output()
        .expect("run docker import");
    let tar_status = tar.wait().expect("wait for tar");
    assert!(
        tar_status.success(),
        "tar of the base image's root file system failed"
    );
    assert!(
        import.status.success(),
        "`docker import` of {BASE_IMAGE} failed: {}",
        String::from_utf8_lossy(&import.stderr)
    );
}

/// Whether an ELF file has no program interpreter (`PT_INTERP`), i.e. is statically linked.
fn is_static_elf(bytes: &[u8]) -> bool {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return false; // not a little-endian ELF64: say no and let the caller explain
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        at + 4 > bytes.len() || u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) != 3
    })
}

/// Builds `dockerfile` (plus `files`, paths relative to the context) with the Docker CLI, tags it
/// `image`, pushes it and returns the pushed manifest digest (`sha256:…`): what a person does by
/// hand with `docker build && docker push`. Makes the base image first when the Dockerfile uses
/// it.
pub async fn docker_build_and_push(
    image: &str,
    dockerfile: &str,
    files: &[(&str, &str)],
) -> String {
    let needs_base = dockerfile.contains("kiln-test/busybox");
    tokio::task::spawn_blocking(move || {
        ensure_docker();
        if needs_base {
            ensure_base_image();
        }
    })
    .await
    .expect("docker set-up panicked");
    let context = tempfile::Builder::new()
        .prefix("kiln-test-context-")
        .tempdir()
        .expect("create a build context dir");
    fs::write(context.path().join("Dockerfile"), dockerfile).expect("write the Dockerfile");
    for (path, contents) in files {
        let path = context.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).expect("create a context dir");
        fs::write(path, contents).expect("write a context file");
    }
    let context_path = context
        .path()
        .to_str()
        .expect("utf-8 temp path")
        .to_string();
    let build = ["build", "--quiet", "--tag", image, &context_path];
    // Tests run at once, and a test's `Registry` removes the images tagged for it when dropped: a
    // build that has just taken one of those as its cache then fails "unable to find image
    // sha256:…". A race between tests, not something under test here: the hand-made image is built
    // again (the cache entry is gone by then).
    let mut attempt = 1;
    while let Err(failure) = docker_async_result(&build).await {
        if attempt == 3 || !failure.contains("unable to find image") {
            panic!("{failure}");
        }
        attempt += 1;
    }
    let pushed = docker_async(&["push", image]).await;
    parse_push_digest(&pushed)
        .unwrap_or_else(|| panic!("no digest in the output of `docker push {image}`:\n{pushed}"))
}

/// The digest out of `docker push` output (`TAG: digest: sha256:… size: N`).
pub fn parse_push_digest(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let rest = &line[line.find("digest: ")? + "digest: ".len()..];
        let digest = rest.split_whitespace().next()?;
        digest.starts_with("sha256:").then(|| digest.to_string())
    })
}

/// [`docker`] without blocking the runtime (tokio's process support); panics on failure.
pub async fn docker_async(args: &[&str]) -> String {
    docker_async_result(args)
        .await
        .unwrap_or_else(|failure| panic!("{failure}"))
}

/// [`docker_async`], with a failure as the command's description and output instead of a panic.
pub async fn docker_async_result(args: &[&str]) -> Result<String, String> {
    let run = tokio::process::Command::new(DOCKER)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(DOCKER_COMMAND_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "`{DOCKER} {}` did not finish within {} s",
                args.join(" "),
                DOCKER_COMMAND_TIMEOUT.as_secs()
            )
        })
        .unwrap_or_else(|e| panic!("cannot run `{DOCKER} {}`: {e}", args.join(" ")));
    if !out.status.success() {
        return Err(format!(
            "`{DOCKER} {}` failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

// ---------------------------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------------------------

/// A CNCF Distribution registry (`docker-registry serve CONFIG`) on a free loopback port, with
/// its storage in a temp dir and deletes enabled; killed and reaped when dropped, together with
/// the local Docker images tagged for it.
///
/// dockerd treats 127.0.0.0/8 as insecure, so `docker push {addr}/ns/repo:tag` works over HTTP.
pub struct Registry {
    /// `127.0.0.1:PORT`: the host part of image names pushed here.
    pub addr: String,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
    /// Basic credentials the registry demands (htpasswd), used by this harness's own queries.
    basic: Option<(String, String)>,
}

impl Registry {
    /// Starts a registry and waits (up to 30 s) until `GET /v2/` answers 200. Blocking: about
    /// 0.2 s here.
    pub fn start() -> Registry {
        Self::spawn(None, None)
    }

    /// Like [`Registry::start`], and the registry sends its notifications (the
    /// `application/vnd.docker.distribution.events.v1+json` envelope, pushes and pulls of
    /// manifests and blobs) to `url` with `Authorization: Bearer {token}`, as configured in
    /// `notifications.endpoints`. It retries in the background (every 250 ms after 3 failures in
    /// a row) while that URL does not answer 2xx, so events sent before kiln listens still arrive.
    pub fn start_with_notifications(url: &str, token: &str) -> Registry {
        Self::spawn(Some((url, token)), None)
    }

    /// A registry that demands HTTP basic auth (`auth: htpasswd`) from `user`/`password` for
    /// everything, pushes included.
    pub fn start_with_htpasswd(user: &str, password: &str) -> Registry {
        Self::spawn(None, Some((user, password)))
    }

    /// A registry that trusts kiln as its token server (`auth: token`): clients get a token from
    /// `realm` (kiln's `/registry/token`), signed by the key whose certificate is `cert_path`
    /// (kiln's `registry-token.pem`), for the service and issuer `kiln`. Nothing works without one,
    /// this harness's own queries included.
    pub fn start_with_token_auth(realm: &str, cert_path: &Path) -> Registry {
        Self::spawn_with(None, None, Some((realm, cert_path)))
    }

    fn spawn(notifications: Option<(&str, &str)>, htpasswd: Option<(&str, &str)>) -> Registry {
        Self::spawn_with(notifications, htpasswd, None)
    }

    fn spawn_with(
        notifications: Option<(&str, &str)>,
        htpasswd: Option<(&str, &str)>,
        token_auth: Option<(&str, &Path)>,
    ) -> Registry {
        let binary = "docker-registry";
        let dir = tempfile::Builder::new()
            .prefix("kiln-test-registry-")
            .tempdir()
            .expect("create a temp dir for the registry");
        let mut last_log = String::new();
        // free_port() can lose a race with another process for the port: try a few.
        for _ in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let mut config = registry_config(&dir.path().join("storage"), &addr, notifications);
            if let Some((user, password)) = htpasswd {
                let file = dir.path().join("htpasswd");
                let hash = bcrypt::hash(password, 5).expect("bcrypt");
                fs::write(&file, format!("{user}:{hash}\n")).expect("write htpasswd");
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                    serde_json::to_string(file.to_str().expect("utf-8 path")).expect("quote")
                ));
            }
            if let Some((realm, cert_path)) = token_auth {
                let q = |s: &str| serde_json::to_string(s).expect("quote");
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: {}\n    service: kiln\n    issuer: kiln\n    rootcertbundle: {}\n",
                    q(realm),
                    q(cert_path.to_str().expect("utf-8 path"))
                ));
            }
            let ready_status = if htpasswd.is_some() || token_auth.is_some() {
                401
            } else {
                200
            };
            let config_path = dir.path().join("config.yml");
            fs::write(&config_path, config).expect("write the registry config");
            let log_path = dir.path().join("registry.log");
            let log = fs::File::create(&log_path).expect("create the registry log");
            let log2 = log.try_clone().expect("clone the registry log handle");
            let mut child = Command::new(binary)
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "the end-to-end tests need CNCF Distribution's `{binary}` ({e}): \
                         `apt-get install -y docker-registry`"
                    )
                });
            let deadline = Instant::now() + REGISTRY_START_TIMEOUT;
            let mut exited = None;
            let ready = wait_until_blocking_quiet(deadline, Duration::from_millis(50), || {
                if let Ok(Some(status)) = child.try_wait() {
                    exited = Some(status);
                    return true;
                }
                http_get_status(&addr, "/v2/", Duration::from_secs(2)) == Some(ready_status)
            });
            last_log = fs::read_to_string(&log_path).unwrap_or_default();
            match (ready, exited) {
                (true, None) => {
                    return Registry {
                        url: format!("http://{addr}"),
                        addr,
                        child,
                        dir,
                        basic: htpasswd.map(|(u, p)| (u.to_string(), p.to_string())),
                    };
                }
                (_, Some(_)) if last_log.contains("address already in use") => continue,
                (_, Some(status)) => panic!(
                    "the registry exited at start ({status}); its log:\n{}",
                    tail(&last_log, 30)
                ),
                (false, None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the registry on {addr} did not answer GET /v2/ within {} s; its log:\n{}",
                        REGISTRY_START_TIMEOUT.as_secs(),
                        tail(&last_log, 30)
                    );
                }
            }
        }
        panic!(
            "could not find a free port for the registry; last log:\n{}",
            tail(&last_log, 30)
        );
    }

    /// `{addr}/{repo}:{tag}`, the name to tag and push an image as.
    pub fn image(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.addr)
    }

    /// The registry's log so far (requests, notification attempts), for assertion messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The config file the registry was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    /// The tags of `repo` (`GET /v2/{repo}/tags/list`), sorted; empty when the registry does not
    /// know the repository (or it has no tag left).
    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.basic {
            Some((user, password)) => req.basic_auth(user, Some(password)),
            None => req,
        }
    }

    pub async fn tags(&self, repo: &str) -> Vec<String> {
        let url = format!("{}/v2/{repo}/tags/list", self.url);
        let response = self
            .authed(http_client().get(&url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Vec::new();
        }
        let body = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "GET {url}: {status}: {body}");
        let list: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"));
        let mut tags: Vec<String> = list["tags"]
            .as_array()
            .map(|tags| {
                tags.iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        tags.sort();
        tags
    }

    /// The repositories the registry holds (`GET /v2/_catalog`), sorted.
    pub async fn repositories(&self) -> Vec<String> {
        let url = format!("{}/v2/_catalog?n=1000", self.url);
        let list: Value = http_client()
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let mut repos: Vec<String> = list["repositories"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|r| r.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        repos.sort();
        repos
    }

    /// The digest of `repo:tag` (`HEAD /v2/{repo}/manifests/{tag}`, its `Docker-Content-Digest`),
    /// or `None` when there is no such manifest. Docker and OCI manifests (and indexes) are
    /// accepted. Note that the registry counts this as a manifest `pull` in its notifications.
    pub async fn manifest_digest(&self, repo: &str, tag: &str) -> Option<String> {
        let url = format!("{}/v2/{repo}/manifests/{tag}", self.url);
        let response = self
            .authed(http_client().head(&url))
            .header(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json, \
                 application/vnd.oci.image.manifest.v1+json, \
                 application/vnd.docker.distribution.manifest.list.v2+json, \
                 application/vnd.oci.image.index.v1+json",
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("HEAD {url}: {e}"));
        match response.status() {
            reqwest::StatusCode::NOT_FOUND => None,
            status if status.is_success() => Some(
                response
                    .headers()
                    .get("Docker-Content-Digest")
                    .unwrap_or_else(|| panic!("HEAD {url}: no Docker-Content-Digest header"))
                    .to_str()
                    .expect("an ASCII digest")
                    .to_string(),
            ),
            status => panic!("HEAD {url}: {status}"),
        }
    }

    /// The image manifest of `repo:reference` (a tag or a digest), Docker v2 or OCI.
    pub async fn manifest(&self, repo: &str, reference: &str) -> Value {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.url);
        self.authed(http_client().get(&url))
            .header(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json, \
                 application/vnd.oci.image.manifest.v1+json",
            )
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// Pushes a layerless image (an image config naming `seed`, and a Docker v2 manifest of it) as
    /// `repo:tag` over the registry's HTTP API, as `docker push` would without a daemon, and returns
    /// its digest ([`seeded_manifest`]'s). The registry notifies its endpoints of the push.
    pub async fn put_manifest(&self, repo: &str, tag: &str, seed: &str) -> String {
        let (config, manifest, digest) = seeded_manifest(seed);
        let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
        let start = format!("{}/v2/{repo}/blobs/uploads/", self.url);
        let response = self
            .authed(http_client().post(&start))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("POST {start}: {e}"));
        let location = response
            .headers()
            .get("Location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or_else(|| panic!("POST {start}: no Location"))
            .to_string();
        let location = if location.starts_with('/') {
            format!("{}{location}", self.url)
        } else {
            location
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let upload = format!("{location}{separator}digest={config_digest}");
        self.authed(http_client().put(&upload))
            .header("Content-Type", "application/octet-stream")
            .body(config)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("PUT {upload}: {e}"));
        let url = format!("{}/v2/{repo}/manifests/{tag}", self.url);
        let response = self
            .authed(http_client().put(&url))
            .header(
                "Content-Type",
                "application/vnd.docker.distribution.manifest.v2+json",
            )
            .body(manifest)
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
        let status = response.status();
        let said = response
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|d| d.to_str().ok())
            .map(str::to_string);
        assert!(
            status.is_success(),
            "PUT {url}: {status}: {}",
            response.text().await.unwrap_or_default()
        );
        assert_eq!(said.as_deref(), Some(digest.as_str()), "PUT {url}");
        digest
    }

    /// The bytes of blob `digest` of `repo` (a layer, an image config).
    pub async fn blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.url);
        self.authed(http_client().get(&url))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .to_vec()
    }

    /// Deletes the manifest `repo@digest` (`DELETE /v2/{repo}/manifests/{digest}`), which removes
    /// every tag pointing at it.
    pub async fn delete_manifest(&self, repo: &str, digest: &str) {
        let url = format!("{}/v2/{repo}/manifests/{digest}", self.url);
        http_client()
            .delete(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("DELETE {url}: {e}"));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Untag what the test built for this registry, so the daemon does not fill up with
        // `127.0.0.1:PORT/…` names run after run. Only if this process used Docker at all.
        if DOCKER_READY.get().is_some() {
            remove_local_images_of(&self.addr);
        }
    }
}

fn remove_local_images_of(addr: &str) {
    let listed = run_with_timeout(
        Command::new(DOCKER).args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]),
        Duration::from_secs(20),
    );
    let Ok(Some(out)) = listed else { return };
    let prefix = format!("{addr}/");
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|name| name.starts_with(&prefix) && !name.ends_with(":<none>"))
        .map(String::from)
        .collect();
    if !names.is_empty() {
        let _ = run_with_timeout(
            Command::new(DOCKER)
                .args(["image", "rm", "--force"])
                .args(&names),
            Duration::from_secs(60),
        );
    }
}

/// A Distribution config (the `version: 0.1` format of `docker-registry` 2.8) for a test
/// registry: filesystem storage under `storage`, deletes enabled, listening on `addr`.
fn registry_config(storage: &Path, addr: &str, notifications: Option<(&str, &str)>) -> String {
    // JSON strings are YAML double-quoted scalars: this quotes paths, URLs and tokens safely.
    let q = |s: &str| serde_json::to_string(s).expect("quote a string");
    let mut config = format!(
        "version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: {secret}
  headers:
    X-Content-Type-Options: [nosniff]
",
        storage = q(storage.to_str().expect("utf-8 temp path")),
        addr = q(addr),
        secret = q(&random_hex(16)),
    );
    if let Some((url, token)) = notifications {
        config.push_str(&format!(
            "notifications:
  endpoints:
    - name: kiln
      url: {url}
      headers:
        Authorization: [{auth}]
      timeout: 2s
      threshold: 3
      backoff: 250ms
",
            url = q(url),
            auth = q(&format!("Bearer {token}")),
        ));
    }
    config
}

/// One shared client with no idle connections kept, so it is safe across the separate tokio
/// runtimes of `#[tokio::test]`s, and no proxy for loopback addresses.
fn http_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("build the test HTTP client")
    })
}

/// The status code of a plain `GET path` on `addr`, without any runtime; `None` when nothing
/// answers.
fn http_get_status(addr: &str, path: &str, timeout: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr.parse().ok()?, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Git
// ---------------------------------------------------------------------------------------------

/// The directory every [`GitRepo`] is made in (each in its own temp dir): what the tests allow
/// kiln to fetch local repositories from (`KILN_LOCAL_SOURCES`, set by `Kiln::start`). Shared by
/// the test processes, never removed; the repositories in it are, when dropped.
pub fn git_repos_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join("kiln-test-git-repos");
        fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
        root
    })
}

/// A bare repository that kiln clones from ([`GitRepo::clone_url`]) and a work tree whose
/// `origin` it is, both in a temp dir removed on drop. Everything goes through the real `git`
/// CLI, isolated from the user's and the system's git config; the default branch is `main`.
pub struct GitRepo {
    /// The bare repository (`…/widget.git`).
    pub bare: PathBuf,
    work: PathBuf,
    _dir: tempfile::TempDir,
}

impl GitRepo {
    /// An empty repository named `widget` (its bare dir `widget.git`).
    pub fn new() -> GitRepo {
        Self::named("widget")
    }

    /// An empty repository whose bare dir is `{name}.git` (so payloads built from its clone URL
    /// name it `acme/{name}`).
    pub fn named(name: &str) -> GitRepo {
        let dir = tempfile::Builder::new()
            .prefix("kiln-test-git-")
            .tempdir_in(git_repos_root())
            .expect("create a temp dir for the git repos");
        let bare = dir.path().join(format!("{name}.git"));
        let work = dir.path().join("work");
        git_in(
            dir.path(),
            &[
                "init",
                "--quiet",
                "--bare",
                "--initial-branch=main",
                path_str(&bare),
            ],
        );
        git_in(
            dir.path(),
            &["init", "--quiet", "--initial-branch=main", path_str(&work)],
        );
        for (key, value) in [
            ("user.name", "Kiln Test"),
            ("user.email", "kiln-test@example.com"),
            ("commit.gpgsign", "false"),
            ("tag.gpgsign", "false"),
            ("core.autocrlf", "false"),
        ] {
            git_in(&work, &["config", key, value]);
        }
        git_in(&work, &["remote", "add", "origin", path_str(&bare)]);
        GitRepo {
            bare,
            work,
            _dir: dir,
        }
    }

    /// The work tree commits are made in.
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// The bare repository as a `file://` URL: the `clone_url` of a source and of a payload.
    pub fn clone_url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// Writes `contents` at `path` (relative to the work tree), creating directories.
    pub fn write(&self, path: &str, contents: impl AsRef<[u8]>) {
        let full = self.work.join(path);
        fs::create_dir_all(full.parent().expect("a file path"))
            .expect("create dirs in the work tree");
        fs::write(&full, contents).unwrap_or_else(|e| panic!("write {}: {e}", full.display()));
    }

    /// Like [`GitRepo::write`], with mode 0755 (recorded as executable by git).
    pub fn write_executable(&self, path: &str, contents: impl AsRef<[u8]>) {
        self.write(path, contents);
        fs::set_permissions(self.work.join(path), fs::Permissions::from_mode(0o755))
            .expect("chmod +x in the work tree");
    }

    /// Removes a file or a directory from the work tree (the next commit records it).
    pub fn remove(&self, path: &str) {
        let full = self.work.join(path);
        let removed = if full.is_dir() {
            fs::remove_dir_all(&full)
        } else {
            fs::remove_file(&full)
        };
        removed.unwrap_or_else(|e| panic!("remove {}: {e}", full.display()));
    }

    /// Commits everything in the work tree (`git add -A`; an empty commit when nothing changed)
    /// on the current branch and returns the commit's SHA.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.git(&[
            "commit",
            "--quiet",
            "--allow-empty",
            "--no-verify",
            "-m",
            message,
        ]);
        self.head()
    }

    /// The SHA of the work tree's `HEAD`.
    pub fn head(&self) -> String {
        self.rev_parse("HEAD")
    }

    /// `git rev-parse --verify REV` in the work tree (e.g. `v1.0^{commit}` to peel a tag).
    pub fn rev_parse(&self, rev: &str) -> String {
        self.git(&["rev-parse", "--verify", "--quiet", rev])
    }

    /// Creates branch `name` at `HEAD` without switching to it.
    pub fn branch(&self, name: &str) {
        self.git(&["branch", name]);
    }

    /// Switches the work tree to branch `name` (creating it at `HEAD` if it does not exist).
    pub fn checkout(&self, name: &str) {
        let exists = self.git_status(&[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{name}"),
        ]);
        if exists {
            self.git(&["checkout", "--quiet", name]);
        } else {
            self.git(&["checkout", "--quiet", "-b", name]);
        }
    }

    /// `git push origin REFSPEC` (`"main"`, `"feature/login"`, `"HEAD:refs/heads/x"`).
    pub fn push(&self, refspec: &str) {
        self.git(&["push", "--quiet", "--no-verify", "origin", refspec]);
    }

    /// `git push --force origin REFSPEC`, to rewrite a branch.
    pub fn push_force(&self, refspec: &str) {
        self.git(&[
            "push",
            "--quiet",
            "--no-verify",
            "--force",
            "origin",
            refspec,
        ]);
    }

    /// Deletes a branch or tag from the bare repository (`git push origin --delete NAME`).
    pub fn push_delete(&self, name: &str) {
        self.git(&["push", "--quiet", "--no-verify", "origin", "--delete", name]);
    }

    /// A lightweight tag `name` at `HEAD`; returns the commit SHA it points to.
    pub fn tag(&self, name: &str) -> String {
        self.git(&["tag", name]);
        self.rev_parse(&format!("refs/tags/{name}^{{commit}}"))
    }

    /// An annotated tag `name` at `HEAD`; returns the SHA of the *tag object*, which is what a
    /// push of it reports as `after` (peel it with `rev_parse("NAME^{commit}")`).
    pub fn tag_annotated(&self, name: &str, message: &str) -> String {
        self.git(&["tag", "--annotate", name, "-m", message]);
        self.rev_parse(&format!("refs/tags/{name}"))
    }

    /// `git push origin refs/tags/NAME`.
    pub fn push_tag(&self, name: &str) {
        self.git(&[
            "push",
            "--quiet",
            "--no-verify",
            "origin",
            &format!("refs/tags/{name}"),
        ]);
    }

    /// What the bare repository's `refname` (`refs/heads/main`, `refs/tags/v1`) points at, if it
    /// exists.
    pub fn remote_sha(&self, refname: &str) -> Option<String> {
        let out = git_output(&self.bare, &["rev-parse", "--verify", "--quiet", refname]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs `git ARGS` in the work tree and returns its standard output, trimmed; panics when it
    /// fails.
    pub fn git(&self, args: &[&str]) -> String {
        git_in(&self.work, args)
    }

    fn git_status(&self, args: &[&str]) -> bool {
        git_output(&self.work, args).status.success()
    }
}

impl Default for GitRepo {
    fn default() -> Self {
        Self::new()
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

fn git_output(dir: &Path, args: &[&str]) -> CommandOutput {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(args)
        // Neither the user's nor the system's config, nor a surrounding hook's repository.
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES");
    run_with_timeout(&mut cmd, GIT_COMMAND_TIMEOUT)
        .unwrap_or_else(|e| {
            panic!("the end-to-end tests need `git` ({e}): `apt-get install -y git`")
        })
        .unwrap_or_else(|| panic!("`git {}` did not finish within a minute", args.join(" ")))
}

fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = git_output(dir, args);
    if !out.status.success() {
        panic!(
            "`git {}` in {} failed ({}):\n{}{}",
            args.join(" "),
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

// ---------------------------------------------------------------------------------------------
// GitHub webhooks
// ---------------------------------------------------------------------------------------------

/// The 40 zeros GitHub puts in `before` for a created ref and in `after` for a deleted one.
pub const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// `X-Hub-Signature-256` for `body`: `sha256=` and the hex HMAC-SHA256 of the raw bytes.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A GitHub `push` event as GitHub sends it, for the repository `acme/{name}` whose `clone_url`
/// is `clone_url` (`name` is the URL's last segment without `.git`; its other URLs point at
/// github.com). `git_ref` is the full ref (`refs/heads/main`, `refs/tags/v1.0.0`).
///
/// - `created` is true when `before` is [`ZERO_SHA`]; `deleted` is what is given (pass
///   [`ZERO_SHA`] as `after` then): `head_commit` is null and `commits` empty.
/// - A branch push lists one commit (`after`) in `commits`; a tag push lists none and has
///   `head_commit` only, as GitHub does. `head_commit.id` is `after`: for an annotated tag,
///   GitHub gives the tag object in `after` and the commit in `head_commit.id`, so set
///   `payload["head_commit"]["id"]` to the peeled commit for that case.
pub fn github_push_payload(
    clone_url: &str,
    git_ref: &str,
    before: &str,
    after: &str,
    deleted: bool,
) -> Value {
    let now = unix_now();
    let repo = GithubRepoNames::from_clone_url(clone_url);
    let created = !deleted && before.chars().all(|c| c == '0');
    let is_tag = git_ref.starts_with("refs/tags/");
    let short_ref = git_ref
        .strip_prefix("refs/heads/")
        .or_else(|| git_ref.strip_prefix("refs/tags/"))
        .unwrap_or(git_ref);
    let short = |sha: &str| sha.chars().take(12).collect::<String>();
    let compare = if created {
        format!("{}/compare/{short_ref}", repo.html_url)
    } else {
        format!(
            "{}/compare/{}...{}",
            repo.html_url,
            short(before),
            short(after)
        )
    };
    let head_commit = if deleted {
        Value::Null
    } else {
        json!({
            "id": after,
            "tree_id": fake_sha(&format!("tree {after}")),
            "distinct": !is_tag,
            "message": "Update Dockerfile",
            "timestamp": rfc3339(now - 30),
            "url": format!("{}/commit/{after}", repo.html_url),
            "author": {"name": "Jane Doe", "email": "jane@acme.example", "username": "jdoe"},
            "committer": {"name": "Jane Doe", "email": "jane@acme.example", "username": "jdoe"},
            "added": [],
            "removed": [],
            "modified": ["Dockerfile"]
        })
    };
    let commits = if deleted || is_tag {
        json!([])
    } else {
        json!([head_commit.clone()])
    };
    json!({
        "ref": git_ref,
        "before": before,
        "after": after,
        "repository": github_repository(&repo, now, true),
        "pusher": {"name": "jdoe", "email": "jane@acme.example"},
        "organization": github_organization(),
        "sender": github_sender(),
        "created": created,
        "deleted": deleted,
        "forced": false,
        "base_ref": null,
        "compare": compare,
        "commits": commits,
        "head_commit": head_commit
    })
}

/// The `ping` event GitHub sends when a webhook is created, for the same repository as
/// [`github_push_payload`].
pub fn github_ping_payload(clone_url: &str) -> Value {
    let now = unix_now();
    let repo = GithubRepoNames::from_clone_url(clone_url);
    let hook_api = format!("{}/hooks/{GITHUB_HOOK_ID}", repo.api_url);
    json!({
        "zen": "Design for failure.",
        "hook_id": GITHUB_HOOK_ID,
        "hook": {
            "type": "Repository",
            "id": GITHUB_HOOK_ID,
            "name": "web",
            "active": true,
            "events": ["push"],
            "config": {
                "content_type": "json",
                "insecure_ssl": "0",
                "url": "https://kiln.acme.example/hooks/github"
            },
            "updated_at": rfc3339(now),
            "created_at": rfc3339(now),
            "url": hook_api,
            "test_url": format!("{hook_api}/test"),
            "ping_url": format!("{hook_api}/pings"),
            "deliveries_url": format!("{hook_api}/deliveries"),
            "last_response": {"code": null, "status": "unused", "message": null}
        },
        "repository": github_repository(&repo, now, false),
        "organization": github_organization(),
        "sender": github_sender()
    })
}

/// A build log line as the step printed it: without the `#N ` BuildKit puts before a step's output.
pub fn step_output(line: &str) -> &str {
    match line.split_once(' ') {
        Some((step, rest))
            if step.len() > 1
                && step[1..].bytes().all(|b| b.is_ascii_digit())
                && step.starts_with('#') =>
        {
            rest
        }
        _ => line,
    }
}

/// `FROM {base}` and an `ENV` line unique to this call: no build cache can skip the steps after it
/// (the daemon's BuildKit keeps its cache across test runs, apart from the images).
pub fn fresh_from(base: &str) -> String {
    format!("FROM {base}\nENV KILN_TEST_RUN={}\n", new_delivery_id())
}

/// The registry's notification of a manifest push as captured from `docker-registry` 2.8
/// (`tests/data/registry/manifest-push.json`), made into a push of `repository:tag` at `digest`
/// with a new event id and timestamp: one event of an envelope for `POST /registry/events`.
pub fn manifest_push(repository: &str, tag: &str, digest: &str) -> Value {
    let captured: Value = serde_json::from_str(include_str!("../data/registry/manifest-push.json"))
        .expect("captured envelope");
    let mut e = captured["events"][0].clone();
    e["id"] = json!(uuid::Uuid::new_v4().to_string());
    e["timestamp"] = json!(chrono::Utc::now().to_rfc3339());
    e["target"]["repository"] = json!(repository);
    e["target"]["tag"] = json!(tag);
    e["target"]["digest"] = json!(digest);
    e["target"]["url"] = json!(format!(
        "http://127.0.0.1:5000/v2/{repository}/manifests/{digest}"
    ));
    e
}

/// The image [`Registry::put_manifest`] pushes for `seed`: its config's bytes, its manifest's bytes
/// and the manifest's digest. The same seed makes the same bytes, so a test knows a digest before
/// (or without) pushing it.
pub fn seeded_manifest(seed: &str) -> (Vec<u8>, Vec<u8>, String) {
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"kiln.test.seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": config.len(),
            "digest": format!("sha256:{}", hex::encode(Sha256::digest(&config))),
        },
        "layers": [],
    }))
    .unwrap();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&manifest)));
    (config, manifest, digest)
}

/// A new `X-GitHub-Delivery` id (a UUID, as GitHub sends).
pub fn new_delivery_id() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// POSTs `body` to `url` with the headers GitHub sends (`X-GitHub-Event: {event}`,
/// `X-GitHub-Delivery: {delivery_id}`, `X-Hub-Signature-256` made with `secret`, its
/// `User-Agent`, `X-GitHub-Hook-*`) and returns the answer. `body` goes out byte for byte.
pub async fn post_github_hook(
    url: &str,
    event: &str,
    delivery_id: &str,
    secret: &str,
    body: &[u8],
) -> reqwest::Response {
    http_client()
        .post(url)
        .header("Content-Type", "application/json")
        .header("User-Agent", "GitHub-Hookshot/0f5c7a4")
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", delivery_id)
        .header("X-GitHub-Hook-ID", GITHUB_HOOK_ID.to_string())
        .header("X-GitHub-Hook-Installation-Target-Type", "repository")
        .header(
            "X-GitHub-Hook-Installation-Target-ID",
            GITHUB_REPO_ID.to_string(),
        )
        .header("X-Hub-Signature-256", github_signature(secret, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

const GITHUB_HOOK_ID: u64 = 498_112_375;
const GITHUB_REPO_ID: u64 = 712_345_678;
const GITHUB_ORG_ID: u64 = 91_234_567;
const GITHUB_USER_ID: u64 = 5_123_456;

struct GithubRepoNames {
    clone_url: String,
    name: String,
    full_name: String,
    html_url: String,
    api_url: String,
}

impl GithubRepoNames {
    fn from_clone_url(clone_url: &str) -> Self {
        let last = clone_url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("widget");
        let name = last.strip_suffix(".git").unwrap_or(last).to_string();
        let full_name = format!("acme/{name}");
        GithubRepoNames {
            clone_url: clone_url.to_string(),
            html_url: format!("https://github.com/{full_name}"),
            api_url: format!("https://api.github.com/repos/{full_name}"),
            name,
            full_name,
        }
    }
}

fn github_account(login: &str, id: u64, kind: &str) -> serde_json::Map<String, Value> {
    let api = format!("https://api.github.com/users/{login}");
    let mut account = serde_json::Map::new();
    account.insert("login".into(), json!(login));
    account.insert("id".into(), json!(id));
    account.insert("node_id".into(), json!(format!("MDQ6VXNlcj{id}")));
    account.insert(
        "avatar_url".into(),
        json!(format!("https://avatars.githubusercontent.com/u/{id}?v=4")),
    );
    account.insert("gravatar_id".into(), json!(""));
    account.insert("url".into(), json!(api));
    account.insert(
        "html_url".into(),
        json!(format!("https://github.com/{login}")),
    );
    for (key, suffix) in [
        ("followers_url", "/followers"),
        ("following_url", "/following{/other_user}"),
        ("gists_url", "/gists{/gist_id}"),
        ("starred_url", "/starred{/owner}{/repo}"),
        ("subscriptions_url", "/subscriptions"),
        ("organizations_url", "/orgs"),
        ("repos_url", "/repos"),
        ("events_url", "/events{/privacy}"),
        ("received_events_url", "/received_events"),
    ] {
        account.insert(key.into(), json!(format!("{api}{suffix}")));
    }
    account.insert("type".into(), json!(kind));
    account.insert("user_view_type".into(), json!("public"));
    account.insert("site_admin".into(), json!(false));
    account
}

fn github_sender() -> Value {
    Value::Object(github_account("jdoe", GITHUB_USER_ID, "User"))
}

fn github_organization() -> Value {
    let api = "https://api.github.com/orgs/acme";
    json!({
        "login": "acme",
        "id": GITHUB_ORG_ID,
        "node_id": format!("MDEyOk9yZ2FuaXphdGlvbj{GITHUB_ORG_ID}"),
        "url": api,
        "repos_url": format!("{api}/repos"),
        "events_url": format!("{api}/events"),
        "hooks_url": format!("{api}/hooks"),
        "issues_url": format!("{api}/issues"),
        "members_url": format!("{api}/members{{/member}}"),
        "public_members_url": format!("{api}/public_members{{/member}}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{GITHUB_ORG_ID}?v=4"),
        "description": "Acme Corp"
    })
}

/// The `repository` object. Push events give `created_at`/`pushed_at` as Unix seconds and the
/// owner's `name`/`email`; other events give RFC 3339 strings.
fn github_repository(repo: &GithubRepoNames, now: u64, push_event: bool) -> Value {
    let created = now - 86_400 * 200;
    let mut owner = github_account("acme", GITHUB_ORG_ID, "Organization");
    if push_event {
        owner.insert("name".into(), json!("acme"));
        owner.insert("email".into(), Value::Null);
    }
    let api = &repo.api_url;
    let mut r = serde_json::Map::new();
    r.insert("id".into(), json!(GITHUB_REPO_ID));
    r.insert("node_id".into(), json!("R_kgDOKnJ5Xg"));
    r.insert("name".into(), json!(repo.name));
    r.insert("full_name".into(), json!(repo.full_name));
    r.insert("private".into(), json!(false));
    r.insert("owner".into(), Value::Object(owner));
    r.insert("html_url".into(), json!(repo.html_url));
    r.insert("description".into(), json!("The widget service"));
    r.insert("fork".into(), json!(false));
    r.insert(
        "url".into(),
        json!(if push_event {
            repo.html_url.clone()
        } else {
            api.clone()
        }),
    );
    for (key, suffix) in [
        ("forks_url", "/forks"),
        ("keys_url", "/keys{/key_id}"),
        ("collaborators_url", "/collaborators{/collaborator}"),
        ("teams_url", "/teams"),
        ("hooks_url", "/hooks"),
        ("issue_events_url", "/issues/events{/number}"),
        ("events_url", "/events"),
        ("assignees_url", "/assignees{/user}"),
        ("branches_url", "/branches{/branch}"),
        ("tags_url", "/tags"),
        ("blobs_url", "/git/blobs{/sha}"),
        ("git_tags_url", "/git/tags{/sha}"),
        ("git_refs_url", "/git/refs{/sha}"),
        ("trees_url", "/git/trees{/sha}"),
        ("statuses_url", "/statuses/{sha}"),
        ("languages_url", "/languages"),
        ("stargazers_url", "/stargazers"),
        ("contributors_url", "/contributors"),
        ("subscribers_url", "/subscribers"),
        ("subscription_url", "/subscription"),
        ("commits_url", "/commits{/sha}"),
        ("git_commits_url", "/git/commits{/sha}"),
        ("comments_url", "/comments{/number}"),
        ("issue_comment_url", "/issues/comments{/number}"),
        ("contents_url", "/contents/{+path}"),
        ("compare_url", "/compare/{base}...{head}"),
        ("merges_url", "/merges"),
        ("archive_url", "/{archive_format}{/ref}"),
        ("downloads_url", "/downloads"),
        ("issues_url", "/issues{/number}"),
        ("pulls_url", "/pulls{/number}"),
        ("milestones_url", "/milestones{/number}"),
        (
            "notifications_url",
            "/notifications{?since,all,participating}",
        ),
        ("labels_url", "/labels{/name}"),
        ("releases_url", "/releases{/id}"),
        ("deployments_url", "/deployments"),
    ] {
        r.insert(key.into(), json!(format!("{api}{suffix}")));
    }
    if push_event {
        r.insert("created_at".into(), json!(created));
        r.insert("updated_at".into(), json!(rfc3339(now - 3_600)));
        r.insert("pushed_at".into(), json!(unique_push_time(now)));
    } else {
        r.insert("created_at".into(), json!(rfc3339(created)));
        r.insert("updated_at".into(), json!(rfc3339(now - 3_600)));
        r.insert("pushed_at".into(), json!(rfc3339(now - 60)));
    }
    let host_path = repo.html_url.trim_start_matches("https://github.com/");
    r.insert(
        "git_url".into(),
        json!(format!("git://github.com/{host_path}.git")),
    );
    r.insert(
        "ssh_url".into(),
        json!(format!("git@github.com:{host_path}.git")),
    );
    r.insert("clone_url".into(), json!(repo.clone_url));
    r.insert("svn_url".into(), json!(repo.html_url));
    r.insert("homepage".into(), Value::Null);
    r.insert("size".into(), json!(184));
    r.insert("stargazers_count".into(), json!(3));
    r.insert("watchers_count".into(), json!(3));
    r.insert("language".into(), json!("Go"));
    r.insert("has_issues".into(), json!(true));
    r.insert("has_projects".into(), json!(true));
    r.insert("has_downloads".into(), json!(true));
    r.insert("has_wiki".into(), json!(false));
    r.insert("has_pages".into(), json!(false));
    r.insert("has_discussions".into(), json!(false));
    r.insert("forks_count".into(), json!(1));
    r.insert("mirror_url".into(), Value::Null);
    r.insert("archived".into(), json!(false));
    r.insert("disabled".into(), json!(false));
    r.insert("open_issues_count".into(), json!(2));
    r.insert("license".into(), Value::Null);
    r.insert("allow_forking".into(), json!(true));
    r.insert("is_template".into(), json!(false));
    r.insert("web_commit_signoff_required".into(), json!(false));
    r.insert("topics".into(), json!([]));
    r.insert("visibility".into(), json!("public"));
    r.insert("forks".into(), json!(1));
    r.insert("open_issues".into(), json!(2));
    r.insert("watchers".into(), json!(3));
    r.insert("default_branch".into(), json!("main"));
    if push_event {
        r.insert("stargazers".into(), json!(3));
        r.insert("master_branch".into(), json!("main"));
        r.insert("organization".into(), json!("acme"));
    }
    r.insert("custom_properties".into(), json!({}));
    Value::Object(r)
}

// ---------------------------------------------------------------------------------------------
// A recording HTTP server
// ---------------------------------------------------------------------------------------------

/// One request a [`RecordingServer`] received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// The request target, with its query string.
    pub path: String,
    /// Header names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON; panics when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: body is not JSON ({e}): {}",
                self.method,
                self.path,
                self.body_text()
            )
        })
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What a test server received, oldest first.
type Recorded = std::sync::Arc<Mutex<Vec<RecordedRequest>>>;

/// Binds a free loopback port and serves each connection on its own task with `serve`, which records
/// into the returned list; the accept loop runs until its task is aborted. Returns the address, the
/// list and the task.
async fn serve_on_loopback<F, Fut>(
    what: &str,
    serve: F,
) -> (String, Recorded, tokio::task::JoinHandle<()>)
where
    F: Fn(tokio::net::TcpStream, Recorded) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind {what}: {e}"));
    let addr = listener.local_addr().expect("local addr").to_string();
    let requests = Recorded::default();
    let recorded = requests.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(serve(stream, recorded.clone()));
        }
    });
    (addr, requests, task)
}

/// A copy of what a test server received so far.
fn snapshot(requests: &Recorded) -> Vec<RecordedRequest> {
    requests.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A plain HTTP/1.1 server on a free loopback port that records every request and answers each
/// with the next status of a script (then 200), an empty JSON object as body, and
/// `Connection: close`: the stand-in for a webhook receiver or any outside service. Stops when
/// dropped. Needs a tokio runtime.
pub struct RecordingServer {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    requests: Recorded,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingServer {
    /// Answers 200 to everything.
    pub async fn start() -> RecordingServer {
        Self::start_with_statuses(&[]).await
    }

    /// Answers the n-th request with `statuses[n]`, and 200 once they are used up (e.g.
    /// `&[500, 503]` to see retries).
    pub async fn start_with_statuses(statuses: &[u16]) -> RecordingServer {
        let script = std::sync::Arc::new(Mutex::new(
            statuses.iter().copied().rev().collect::<Vec<_>>(),
        ));
        let (addr, requests, task) =
            serve_on_loopback("the recording server", move |stream, recorded| {
                let script = script.clone();
                async move {
                    let _ = serve_one(stream, recorded, script).await;
                }
            })
            .await;
        RecordingServer {
            url: format!("http://{addr}"),
            addr,
            requests,
            task,
        }
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        snapshot(&self.requests)
    }

    /// Waits until a received request satisfies `matches` and returns the first such one.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&RecordedRequest) -> bool,
    ) -> RecordedRequest {
        let found = Mutex::new(None);
        wait_until(what, timeout, || {
            let hit = self.requests().into_iter().find(|r| matches(r));
            let done = hit.is_some();
            *found.lock().unwrap() = hit;
            async move { done }
        })
        .await;
        found.into_inner().unwrap().expect("found a request")
    }
}

impl Drop for RecordingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one HTTP/1.1 request (Content-Length or chunked body); None when the peer closed first.
pub async fn read_request(
    stream: &mut tokio::net::TcpStream,
) -> io::Result<Option<RecordedRequest>> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let path = request_line.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut rest = buf[head_end..].to_vec();
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            if let Some(body) = decode_chunked(&rest) {
                break body;
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            rest.extend_from_slice(&chunk[..n]);
        }
    } else {
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while rest.len() < len {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(len);
        rest
    };
    Ok(Some(RecordedRequest {
        method,
        path,
        headers,
        body,
    }))
}

async fn serve_one(
    mut stream: tokio::net::TcpStream,
    recorded: Recorded,
    script: std::sync::Arc<Mutex<Vec<u16>>>,
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let Some(request) = read_request(&mut stream).await? else {
        return Ok(());
    };
    let status = script
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
        .unwrap_or(200);
    recorded
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(request);
    let answer = format!(
        "HTTP/1.1 {status} Status\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
         Connection: close\r\n\r\n{{}}"
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}

/// The body of a complete chunked transfer, or `None` while more bytes are needed.
fn decode_chunked(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        if data.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------------
// A git server over HTTP
// ---------------------------------------------------------------------------------------------

/// `git http-backend`, git's own smart-HTTP server (a CGI program).
pub const GIT_HTTP_BACKEND: &str = "/usr/lib/git-core/git-http-backend";

/// Whether a password is one a [`GitHttpServer`] takes.
pub type PasswordCheck = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What a [`GitHttpServer`] does with each request.
#[derive(Clone)]
enum GitHttpMode {
    /// Serve the repositories under `root`, asking for HTTP Basic `user` and a password
    /// `check` takes when set.
    Serve {
        root: PathBuf,
        basic: Option<(String, PasswordCheck)>,
    },
    /// Answer `302 Found` to the same path and query at `base`.
    Redirect { base: String },
}

/// A real git server over HTTP on a free loopback port: each request goes to `git http-backend`
/// (the CGI program git ships) over the bare repositories of a directory, behind HTTP Basic
/// authentication when asked, the way a private repository on a forge is. Every request is
/// recorded (its `authorization` header included). Stops when dropped; needs a tokio runtime.
pub struct GitHttpServer {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    requests: Recorded,
    task: tokio::task::JoinHandle<()>,
}

impl GitHttpServer {
    /// Serves the bare repositories under `root` (`{url}/{name}.git`), to anyone, or only with
    /// `basic` = (user, password).
    pub async fn start(root: &Path, basic: Option<(&str, &str)>) -> GitHttpServer {
        assert!(
            Path::new(GIT_HTTP_BACKEND).exists(),
            "{GIT_HTTP_BACKEND} is missing: `apt-get install -y git`"
        );
        Self::start_mode(GitHttpMode::Serve {
            root: root.to_path_buf(),
            basic: basic.map(|(u, p)| {
                let p = p.to_string();
                let check: PasswordCheck = std::sync::Arc::new(move |given| given == p);
                (u.to_string(), check)
            }),
        })
        .await
    }

    /// The same, taking as `user`'s password whatever `check` takes (tokens minted on the way,
    /// such as a GitHub App's installation tokens).
    pub async fn start_checking(root: &Path, user: &str, check: PasswordCheck) -> GitHttpServer {
        Self::start_mode(GitHttpMode::Serve {
            root: root.to_path_buf(),
            basic: Some((user.to_string(), check)),
        })
        .await
    }

    /// Redirects every request to the same path on `base` (`http://host:port`).
    pub async fn redirecting_to(base: &str) -> GitHttpServer {
        Self::start_mode(GitHttpMode::Redirect {
            base: base.trim_end_matches('/').to_string(),
        })
        .await
    }

    async fn start_mode(mode: GitHttpMode) -> GitHttpServer {
        let (addr, requests, task) =
            serve_on_loopback("the git HTTP server", move |stream, recorded| {
                let mode = mode.clone();
                async move {
                    let _ = serve_git_http(stream, recorded, mode).await;
                }
            })
            .await;
        GitHttpServer {
            url: format!("http://{addr}"),
            addr,
            requests,
            task,
        }
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        snapshot(&self.requests)
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `Authorization: Basic …` for `user:password`.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// (user, password) of an HTTP Basic `Authorization` header.
fn basic_credentials(header: Option<&str>) -> Option<(String, String)> {
    use base64::Engine;
    let encoded = header?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

async fn serve_git_http(
    mut stream: tokio::net::TcpStream,
    recorded: Recorded,
    mode: GitHttpMode,
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let Some(request) = read_request(&mut stream).await? else {
        return Ok(());
    };
    recorded
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(request.clone());
    let respond = |status: &str, headers: &[(&str, String)], body: &[u8]| {
        let mut out = format!("HTTP/1.1 {status}\r\n").into_bytes();
        for (name, value) in headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(
            format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(body);
        out
    };
    let answer = match mode {
        GitHttpMode::Redirect { base } => respond(
            "302 Found",
            &[("Location", format!("{base}{}", request.path))],
            b"",
        ),
        GitHttpMode::Serve { basic, .. }
            if basic.as_ref().is_some_and(|(u, check)| {
                !basic_credentials(request.header("authorization"))
                    .is_some_and(|(user, password)| user == *u && check(&password))
            }) =>
        {
            respond(
                "401 Unauthorized",
                &[("WWW-Authenticate", "Basic realm=\"git\"".to_string())],
                b"authentication required\n",
            )
        }
        GitHttpMode::Serve { root, basic } => {
            let (path, query) = request
                .path
                .split_once('?')
                .unwrap_or((request.path.as_str(), ""));
            let mut cgi = tokio::process::Command::new(GIT_HTTP_BACKEND);
            cgi.env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", &root)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_PROJECT_ROOT", &root)
                .env("GIT_HTTP_EXPORT_ALL", "1")
                .env("REQUEST_METHOD", &request.method)
                .env("PATH_INFO", path)
                .env("QUERY_STRING", query)
                .env("CONTENT_LENGTH", request.body.len().to_string())
                .env("REMOTE_ADDR", "127.0.0.1")
                .env("SERVER_PROTOCOL", "HTTP/1.1")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            if let Some((user, _)) = &basic {
                cgi.env("REMOTE_USER", user);
            }
            for (header, var) in [
                ("content-type", "CONTENT_TYPE"),
                ("content-encoding", "HTTP_CONTENT_ENCODING"),
                ("git-protocol", "GIT_PROTOCOL"),
            ] {
                if let Some(value) = request.header(header) {
                    cgi.env(var, value);
                }
            }
            let mut child = cgi.spawn()?;
            let mut stdin = child.stdin.take().expect("stdin");
            let body = request.body.clone();
            let writer = tokio::spawn(async move {
                let _ = stdin.write_all(&body).await;
            });
            let output = child.wait_with_output().await?;
            let _ = writer.await;
            let out = output.stdout;
            let (head_end, skip) = match out.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(i) => (i, 4),
                None => (
                    out.windows(2)
                        .position(|w| w == b"\n\n")
                        .unwrap_or(out.len()),
                    2,
                ),
            };
            let head = String::from_utf8_lossy(&out[..head_end]).into_owned();
            let body = out.get(head_end + skip..).unwrap_or_default();
            let mut status = "200 OK".to_string();
            let mut headers = Vec::new();
            for line in head.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                if name.eq_ignore_ascii_case("status") {
                    status = value.trim().to_string();
                } else {
                    headers.push((name.trim(), value.trim().to_string()));
                }
            }
            respond(&status, &headers, body)
        }
    };
    stream.write_all(&answer).await?;
    stream.shutdown().await
}

// ---------------------------------------------------------------------------------------------
// Ports, waiting, small things
// ---------------------------------------------------------------------------------------------

/// A TCP port free on 127.0.0.1 right now, never the same one twice in this process. It is
/// chosen at random below the kernel's ephemeral range (`ip_local_port_range`), so outgoing
/// connections, which take their ports from that range, cannot grab it meanwhile; another process
/// still can in theory: bind it soon.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let (low, high) = if ephemeral_low > 12_000 {
        (10_000, ephemeral_low)
    } else {
        (0, 0)
    };
    for _ in 0..1000 {
        let port = if high > low {
            let r = u16::from_str_radix(&random_hex(2), 16).expect("hex");
            low + r % (high - low)
        } else {
            TcpListener::bind("127.0.0.1:0")
                .expect("bind 127.0.0.1:0")
                .local_addr()
                .expect("addr")
                .port()
        };
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free port on 127.0.0.1");
}

/// Polls `f` every 100 ms until it gives `true`; panics with `what` if that takes longer than
/// `timeout` (a single slow call of `f` is cut at the deadline too).
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    loop {
        match tokio::time::timeout_at(deadline, f()).await {
            Ok(true) => return,
            Ok(false) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            _ => panic!("timed out after {:?} waiting until {what}", start.elapsed()),
        }
    }
}

/// The blocking form of [`wait_until`], for code outside a runtime.
pub fn wait_until_blocking(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    let start = Instant::now();
    if !wait_until_blocking_quiet(start + timeout, Duration::from_millis(100), f) {
        panic!("timed out after {:?} waiting until {what}", start.elapsed());
    }
}

fn wait_until_blocking_quiet(
    deadline: Instant,
    every: Duration,
    mut f: impl FnMut() -> bool,
) -> bool {
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(every.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// A lock held by one process at a time: a file made with `create_new` holding the owner's pid,
/// removed on drop. A lock whose owner is gone (or older than 5 minutes) is taken over.
struct CrossProcessLock {
    path: &'static str,
    held: bool,
}

impl CrossProcessLock {
    /// Waits up to `timeout` for the lock; after that goes on without it (the guarded work is
    /// idempotent, the lock only keeps it from being done twice at once).
    fn acquire(path: &'static str, timeout: Duration) -> CrossProcessLock {
        let deadline = Instant::now() + timeout;
        let held = wait_until_blocking_quiet(deadline, Duration::from_millis(100), || {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(mut file) => {
                    let _ = write!(file, "{}", std::process::id());
                    true
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if lock_is_stale(path) {
                        let _ = fs::remove_file(path);
                    }
                    false
                }
                Err(_) => true, // cannot lock at all (read-only /tmp?): go on unguarded
            }
        });
        CrossProcessLock { path, held }
    }
}

impl Drop for CrossProcessLock {
    fn drop(&mut self) {
        if self.held {
            let _ = fs::remove_file(self.path);
        }
    }
}

fn lock_is_stale(path: &str) -> bool {
    let old = fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(300))
        .unwrap_or(false);
    let owner_gone = fs::read_to_string(path)
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
    old || owner_gone
}

struct CommandOutput {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `cmd` (stdin closed, output captured), killing it after `timeout`: `Ok(None)` then.
fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> io::Result<Option<CommandOutput>> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let mut status = None;
    wait_until_blocking_quiet(deadline, Duration::from_millis(10), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return Ok(None);
    };
    Ok(Some(CommandOutput {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// A push event's `pushed_at`: `now`, or one second past the last one given, so that two pushes
/// of the same commit are two bodies, as GitHub sends them (kiln takes the same body under a new
/// delivery id for a replay, issue 11).
fn unique_push_time(now: u64) -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds.
fn rfc3339(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// `n` random-enough bytes as hex (ids and secrets for tests, not cryptography).
fn random_hex(n: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::new();
    while out.len() < n * 2 {
        let mut hasher = Sha256::new();
        hasher.update(std::process::id().to_le_bytes());
        hasher.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        hasher.update(nanos.to_le_bytes());
        let seed = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            nanos,
        );
        hasher.update(seed.to_le_bytes());
        out.push_str(&hex::encode(hasher.finalize()));
    }
    out.truncate(n * 2);
    out
}

/// A stable made-up 40-hex SHA for `seed`.
fn fake_sha(seed: &str) -> String {
    hex::encode(Sha256::digest(seed.as_bytes()))[..40].to_string()
}

/// `len` bytes no compressor can shrink (xorshift), the same for the same `seed`.
pub fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

// ---------------------------------------------------------------------------------------------
// Registry down and back (issue 11, faults)
// ---------------------------------------------------------------------------------------------

impl Registry {
    /// Kills the registry process (SIGKILL) and reaps it: its port refuses connections until
    /// [`Registry::restart`].
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the registry again with the same config: the same port and storage (and
    /// notifications). Waits (up to 30 s) until `GET /v2/` answers.
    pub fn restart(&mut self) {
        let log = fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .expect("open the registry log");
        let log2 = log.try_clone().expect("clone the registry log handle");
        self.child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .expect("start the registry again");
        let ready_status = if self.basic.is_some() { 401 } else { 200 };
        let addr = self.addr.clone();
        wait_until_blocking(
            "the restarted registry to answer GET /v2/",
            REGISTRY_START_TIMEOUT,
            || http_get_status(&addr, "/v2/", Duration::from_secs(2)) == Some(ready_status),
        );
    }
}
