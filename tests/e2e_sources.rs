//! Where kiln may fetch a source from, and how it keeps a source's credentials: local repositories
//! only under `KILN_LOCAL_SOURCES` (checked when the source is set and again before every fetch),
//! no SSH URLs, and credentials embedded in a clone URL kept as a write-only secret, given to git
//! only when the source's own server asks. Real dockerd, registry, git repositories and a real git
//! server over HTTP (`git http-backend` behind Basic authentication).

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use kiln::build::git::{self, GitError, Remote};
use kiln::local_sources::LocalSources;
use kiln::notify::guard::AllowList;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::kiln::Kiln;
use support::{GitHttpServer, GitRepo, Registry, basic_auth};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Every log line kiln writes in this test process (all levels of kiln's own events), to look for
/// secrets in.
fn captured_logs() -> String {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let logs = LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink(buffer.clone());
        tracing_subscriber::fmt()
            .with_env_filter("trace,hyper=debug,h2=info,reqwest=debug,bollard=debug")
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .init();
        buffer
    });
    String::from_utf8_lossy(&logs.lock().unwrap()).into_owned()
}

/// "Build now" of `rule` as `token`; waits for the build to end and returns it.
async fn build_now(kiln: &Kiln, token: &str, ns: &str, repo: &str, rule: &str) -> Value {
    let (s, build) = kiln
        .call_as(
            token,
            Method::POST,
            &format!("/namespaces/{ns}/repos/{repo}/rules/{rule}/builds"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{build}");
    kiln.wait_build(build["id"].as_str().unwrap()).await
}

#[track_caller]
fn assert_refused(what: &str, got: &(StatusCode, Value), code: &str) {
    let (status, body) = got;
    assert_eq!(*status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
    assert_eq!(body["error"]["field"], "clone_url", "{what}: {body}");
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty() && !m.contains('\n')),
        "{what}: {body}"
    );
}

/// A repository whose `main` holds a Dockerfile copying `secret.txt`, a file that says whose it is.
fn repository(name: &str, content: &str) -> GitRepo {
    let git = GitRepo::named(name);
    git.write("Dockerfile", "FROM scratch\nCOPY secret.txt /secret.txt\n");
    // Unique per run, so Docker's build cache never hides a step.
    git.write("secret.txt", format!("{content} {}\n", git.clone_url()));
    git.commit("first");
    git.push("main");
    git
}

/// The directory a [`GitRepo`]'s bare repository is in (its own temp dir).
fn dir_of(git: &GitRepo) -> PathBuf {
    git.bare.parent().unwrap().to_path_buf()
}

/// True when the mirror at `mirror` holds object `sha`.
fn mirror_has(mirror: &Path, sha: &str) -> bool {
    std::process::Command::new("git")
        .args(["--git-dir", &mirror.display().to_string(), "cat-file", "-e"])
        .arg(format!("{sha}^{{commit}}"))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run git")
        .success()
}

// ---------------------------------------------------------------------------------------------
// Local sources
// ---------------------------------------------------------------------------------------------

/// The reproduction of issue 8 §4: a token limited to namespace `evil` with role `write` points
/// its source at another namespace's repository on kiln's host (by file:// URL, plain path, a
/// symlink, a `..` escape, kiln's own mirror of it) and presses build now. Every attempt is
/// refused with a 422 naming `clone_url`; an allowed source whose symlink is re-pointed after it
/// was set fails at fetch time; nothing of the other repository is fetched or built into
/// `evil/steal`.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_cannot_build_another_namespaces_repository() {
    support::ensure_docker();
    let registry = Registry::start();
    // The victim's repository, on kiln's host but outside every allowed directory, served to
    // kiln (with credentials) by a git server over HTTP, as acme's source.
    let victim = repository("api", "acme's private code");
    let victim_sha = victim.head();
    let acme_server =
        GitHttpServer::start(&dir_of(&victim), Some(("acme-bot", "acme-token-1234"))).await;
    // What the operator allows: one directory of shared repositories (and, by mistake, kiln's data
    // directory, which stays refused).
    let shared = repository("shared", "shared code");
    let allowed = dir_of(&shared);
    let data_dir = tempfile::tempdir().unwrap();
    let kiln = Kiln::start_in(
        &registry,
        &[(
            "KILN_LOCAL_SOURCES",
            &format!("{}:{}", allowed.display(), data_dir.path().display()),
        )],
        data_dir,
    )
    .await;

    // acme builds its repository: kiln now holds a mirror of it.
    let acme_url = format!(
        "http://acme-bot:acme-token-1234@{}/api.git",
        acme_server.addr
    );
    kiln.ci_repo("acme", "api", &acme_url).await;
    let acme_rule = kiln
        .rule("acme", "api", json!({"type": "branch", "name": "main"}))
        .await;
    let built = build_now(&kiln, support::kiln::ADMIN_TOKEN, "acme", "api", &acme_rule).await;
    assert_eq!(built["status"], "succeeded", "{built}");
    let acme_mirror = git::mirror_path(
        &kiln.data_dir.path().join("mirrors"),
        &format!("http://{}/api.git", acme_server.addr),
    );
    assert!(mirror_has(&acme_mirror, &victim_sha));

    // evil: a namespace, a write token for it alone, a repository.
    let (s, body) = kiln.post("/namespaces", json!({"name": "evil"})).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let evil = kiln.token("evil", "write", Some("evil")).await;
    let (s, body) = kiln
        .call_as(
            &evil,
            Method::POST,
            "/namespaces/evil/repos",
            Some(json!({"name": "steal"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let source = "/namespaces/evil/repos/steal/source";
    let link = allowed.join("escape.git");
    std::os::unix::fs::symlink(&victim.bare, &link).unwrap();
    let victim_dir_name = dir_of(&victim).file_name().unwrap().to_owned();
    let dotdot = format!(
        "{}/../{}/api.git",
        allowed.display(),
        victim_dir_name.to_string_lossy()
    );
    for (what, url, code) in [
        (
            "file:// URL",
            format!("file://{}", victim.bare.display()),
            "local_source_not_allowed",
        ),
        (
            "plain path",
            victim.bare.display().to_string(),
            "local_source_not_allowed",
        ),
        (
            "symlink in an allowed directory",
            link.display().to_string(),
            "local_source_not_allowed",
        ),
        (
            "'..' out of an allowed directory",
            dotdot,
            "local_source_not_allowed",
        ),
        (
            "file://localhost and percent-encoded '..'",
            format!(
                "file://localhost{}/%2e%2e/{}/api.git",
                allowed.display(),
                victim_dir_name.to_string_lossy()
            ),
            "local_source_not_allowed",
        ),
        (
            "kiln's own mirror of it",
            acme_mirror.display().to_string(),
            "local_source_not_allowed",
        ),
        (
            "a path that does not exist",
            allowed.join("nothing-here.git").display().to_string(),
            "local_source_not_allowed",
        ),
        (
            "an ssh URL",
            "ssh://git@localhost/srv/api.git".into(),
            "ssh_not_supported",
        ),
        (
            "an scp-like URL",
            "git@localhost:srv/api.git".into(),
            "ssh_not_supported",
        ),
    ] {
        let got = kiln
            .call_as(
                &evil,
                Method::PUT,
                source,
                Some(json!({"provider": "github", "clone_url": url})),
            )
            .await;
        assert_refused(what, &got, code);
        let (s, body) = kiln.call_as(&evil, Method::GET, source, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{what}: nothing linked: {body}");
    }
    // The refusal for a missing path and for a path outside reads the same: it can't be used to
    // explore the host.
    let message = |url: &str| {
        let url = url.to_string();
        let kiln = &kiln;
        let evil = &evil;
        async move {
            let (_, body) = kiln
                .call_as(
                    evil,
                    Method::PUT,
                    source,
                    Some(json!({"provider": "github", "clone_url": url.clone()})),
                )
                .await;
            body["error"]["message"]
                .as_str()
                .unwrap()
                .replace(&url, "URL")
        }
    };
    assert_eq!(
        message(&victim.bare.display().to_string()).await,
        message("/nonexistent/x.git").await
    );

    // Allowed: a repository under the allowed directory, through a symlink that leads there.
    let link_to_shared = allowed.join("current.git");
    std::os::unix::fs::symlink(&shared.bare, &link_to_shared).unwrap();
    let url = link_to_shared.display().to_string();
    let (s, body) = kiln
        .call_as(
            &evil,
            Method::PUT,
            source,
            Some(json!({"provider": "github", "clone_url": url})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, rule) = kiln
        .call_as(
            &evil,
            Method::POST,
            "/namespaces/evil/repos/steal/rules",
            Some(json!({"type": "branch", "name": "main"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{rule}");
    let rule = rule["id"].as_str().unwrap().to_string();
    let first = build_now(&kiln, &evil, "evil", "steal", &rule).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["commit"], shared.head());
    let digest = registry.manifest_digest("evil/steal", "main").await;
    assert!(digest.is_some());

    // The link is re-pointed at acme's repository after the source was set: the next build checks
    // again before fetching, fails saying why, and fetches and pushes nothing.
    std::fs::remove_file(&link_to_shared).unwrap();
    std::os::unix::fs::symlink(&victim.bare, &link_to_shared).unwrap();
    let refused = build_now(&kiln, &evil, "evil", "steal", &rule).await;
    assert_eq!(refused["status"], "failed", "{refused}");
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("refused to fetch {url}: "))
            && error.contains("KILN_LOCAL_SOURCES"),
        "{error}"
    );
    assert!(!error.contains('\n'), "{error}");
    assert_ne!(refused["commit"], victim_sha);
    let log = kiln.log(refused["id"].as_str().unwrap()).await;
    assert!(log.contains(&format!("Build failed: {error}")), "{log}");
    let mirror = git::mirror_path(&kiln.data_dir.path().join("mirrors"), &url);
    assert!(
        mirror_has(&mirror, &shared.head()),
        "the mirror of the allowed source"
    );
    assert!(
        !mirror_has(&mirror, &victim_sha),
        "nothing of acme's repository was fetched"
    );
    assert_eq!(registry.tags("evil/steal").await, vec!["main".to_string()]);
    assert_eq!(registry.manifest_digest("evil/steal", "main").await, digest);

    // acme's own URL without its credentials: kiln fetches, the server asks, evil has none.
    let (s, body) = kiln.call_as(
        &evil,
        Method::PUT,
        source,
        Some(json!({"provider": "github", "clone_url": format!("http://{}/api.git", acme_server.addr)})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["has_credentials"], false, "{body}");
    let no_credentials = build_now(&kiln, &evil, "evil", "steal", &rule).await;
    assert_eq!(no_credentials["status"], "failed", "{no_credentials}");
    let error = no_credentials["error"].as_str().unwrap();
    assert!(
        error.contains("the server asks for credentials and the source has none"),
        "{error}"
    );
    assert_eq!(registry.manifest_digest("evil/steal", "main").await, digest);
}

/// With `KILN_LOCAL_SOURCES` unset, no local source is taken, and a source set while it was
/// allowed no longer builds once kiln restarts without it.
#[tokio::test(flavor = "multi_thread")]
async fn without_kiln_local_sources_no_local_repository_is_fetched() {
    support::ensure_docker();
    let registry = Registry::start();
    let git = repository("app", "app");
    let kiln = Kiln::start(&registry, &[]).await;
    kiln.ci_repo("acme", "app", &git.clone_url()).await;
    let rule = kiln
        .rule("acme", "app", json!({"type": "branch", "name": "main"}))
        .await;
    let Kiln {
        server, data_dir, ..
    } = kiln;
    drop(server);

    let kiln = Kiln::start_in(&registry, &[("KILN_LOCAL_SOURCES", "")], data_dir).await;
    let got = kiln
        .put(
            "/namespaces/acme/repos/app/source",
            json!({"provider": "github", "clone_url": git.clone_url()}),
        )
        .await;
    assert_refused(
        "local source, none allowed",
        &got,
        "local_source_not_allowed",
    );
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("KILN_LOCAL_SOURCES"),
        "{}",
        got.1
    );
    let build = build_now(&kiln, support::kiln::ADMIN_TOKEN, "acme", "app", &rule).await;
    assert_eq!(build["status"], "failed", "{build}");
    let error = build["error"].as_str().unwrap();
    assert!(
        error.contains("local repositories are not allowed as sources on this kiln"),
        "{error}"
    );
    assert!(registry.tags("acme/app").await.is_empty());
    let mirrors = kiln.data_dir.path().join("mirrors");
    assert_eq!(
        std::fs::read_dir(&mirrors).unwrap().count(),
        0,
        "no mirror was made"
    );
}

// ---------------------------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------------------------

/// kiln fetches a private repository with the credentials of its clone URL, through a real git
/// server asking for HTTP Basic authentication; no API answer (for any role), build log, log line
/// or file of the mirror shows them; a PUT of the same URL without them keeps them; wrong or
/// missing credentials fail the build saying so, and move no tag.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_are_a_write_only_secret_used_to_fetch() {
    support::ensure_docker();
    captured_logs();
    const TOKEN: &str = "ghp_kilnTestToken0123456789abcdef";
    const WRONG: &str = "wrong-token-9876543210fedcba";
    let registry = Registry::start();
    let git = repository("private", "private code");
    let server = GitHttpServer::start(&dir_of(&git), Some(("kiln-bot", TOKEN))).await;
    let kiln = Kiln::start(&registry, &[]).await;
    let plain_url = format!("http://{}/private.git", server.addr);
    let url = format!("http://kiln-bot:{TOKEN}@{}/private.git", server.addr);

    kiln.post("/namespaces", json!({"name": "acme"})).await;
    kiln.post("/namespaces/acme/repos", json!({"name": "app"}))
        .await;
    let path = "/namespaces/acme/repos/app/source";
    let (s, linked) = kiln
        .put(path, json!({"provider": "github", "clone_url": url}))
        .await;
    assert_eq!(s, StatusCode::OK, "{linked}");
    assert_eq!(linked["clone_url"], plain_url, "{linked}");
    assert_eq!(linked["has_credentials"], true, "{linked}");
    let mut answers = vec![linked.to_string()];
    let rule = kiln
        .rule("acme", "app", json!({"type": "branch", "name": "main"}))
        .await;

    let read = kiln.token("reader", "read", Some("acme")).await;
    let write = kiln.token("writer", "write", Some("acme")).await;
    for token in [support::kiln::ADMIN_TOKEN, &read, &write] {
        for path in [
            path.to_string(),
            "/namespaces/acme/repos/app".into(),
            "/namespaces/acme/repos".into(),
            format!("/namespaces/acme/repos/app/rules/{rule}"),
        ] {
            let (s, body) = kiln.call_as(token, Method::GET, &path, None).await;
            assert_eq!(s, StatusCode::OK, "{path}: {body}");
            answers.push(body.to_string());
        }
        let (_, shown) = kiln.call_as(token, Method::GET, path, None).await;
        assert_eq!(shown["clone_url"], plain_url, "{shown}");
        assert_eq!(shown["has_credentials"], true, "{shown}");
    }

    // A real fetch with them: the server saw them, the build succeeded.
    let first = build_now(&kiln, &write, "acme", "app", &rule).await;
    assert_eq!(
        first["status"],
        "succeeded",
        "{first}\n{}",
        kiln.log(first["id"].as_str().unwrap()).await
    );
    assert_eq!(first["commit"], git.head());
    let authorized = basic_auth("kiln-bot", TOKEN);
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.header("authorization") == Some(authorized.as_str())),
        "{requests:?}"
    );
    let digest = registry.manifest_digest("acme/app", "main").await;
    assert!(digest.is_some());
    answers.push(first.to_string());
    answers.push(kiln.log(first["id"].as_str().unwrap()).await);

    // The same URL without credentials keeps them (as the webhook secret is kept).
    let (s, again) = kiln
        .put(path, json!({"provider": "github", "clone_url": plain_url}))
        .await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["has_credentials"], true, "{again}");
    git.write("more.txt", "more\n");
    let second_sha = git.commit("second");
    git.push("main");
    let second = build_now(&kiln, &write, "acme", "app", &rule).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(second["commit"], second_sha);
    let digest = registry.manifest_digest("acme/app", "main").await;

    // Wrong credentials: refused by the server, the build fails saying so, nothing moves.
    let wrong = format!("http://kiln-bot:{WRONG}@{}/private.git", server.addr);
    let (s, body) = kiln
        .put(path, json!({"provider": "github", "clone_url": wrong}))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    answers.push(body.to_string());
    git.write("more.txt", "even more\n");
    let third_sha = git.commit("third");
    git.push("main");
    let failed = build_now(&kiln, &write, "acme", "app", &rule).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert_eq!(
        error,
        format!("cannot fetch {plain_url}: the server refused the source's credentials")
    );
    assert_ne!(failed["commit"], third_sha);
    assert_eq!(registry.manifest_digest("acme/app", "main").await, digest);
    answers.push(failed.to_string());
    answers.push(kiln.log(failed["id"].as_str().unwrap()).await);

    // Removed: the server asks, there are none.
    let (s, body) = kiln
        .put(
            path,
            json!({"provider": "github", "clone_url": plain_url, "remove_credentials": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["has_credentials"], false, "{body}");
    let failed = build_now(&kiln, &write, "acme", "app", &rule).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("the server asks for credentials and the source has none"),
        "{failed}"
    );
    answers.push(failed.to_string());

    // Given again: the newest commit builds.
    let (s, _) = kiln
        .put(path, json!({"provider": "github", "clone_url": url}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let last = build_now(&kiln, &write, "acme", "app", &rule).await;
    assert_eq!(last["status"], "succeeded", "{last}");
    assert_eq!(last["commit"], third_sha);
    let (_, builds) = kiln
        .call_as(
            &read,
            Method::GET,
            "/namespaces/acme/repos/app/builds",
            None,
        )
        .await;
    answers.push(builds.to_string());

    // Nowhere to be seen: API answers, build logs, kiln's log lines, the files of the mirror.
    let mut mirror_files = String::new();
    for entry in walk(&kiln.data_dir.path().join("mirrors")) {
        if let Ok(bytes) = std::fs::read(&entry) {
            mirror_files.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    let logs = captured_logs();
    assert!(
        logs.contains("source linked"),
        "the log capture works: {logs}"
    );
    for secret in [TOKEN, WRONG] {
        for (what, text) in [
            ("an API answer", answers.join("\n")),
            ("kiln's log", logs.clone()),
            ("the mirror", mirror_files.clone()),
        ] {
            assert!(!text.contains(secret), "{secret} in {what}");
        }
    }
    // Only the source's row holds them (encrypted).
    let app = &kiln.server.app;
    let stored = kiln::db::sources::all(&app.db, &app.secrets).await.unwrap();
    assert_eq!(
        stored[0].credentials.as_deref(),
        Some(format!("kiln-bot:{TOKEN}").as_str())
    );
    let (urls,): (String,) = sqlx::query_as("SELECT group_concat(clone_url) FROM sources")
        .fetch_one(&kiln.server.app.db)
        .await
        .unwrap();
    assert!(!urls.contains(TOKEN), "{urls}");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The fetch itself, without kiln around it: credentials go only to the source's host (not to a
/// server a redirect leads to), and wrong ones are not offered twice.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_are_offered_once_and_only_to_the_sources_host() {
    const TOKEN: &str = "only-for-127-0-0-1-token";
    let git = repository("private", "private code");
    let server = GitHttpServer::start(&dir_of(&git), Some(("bot", TOKEN))).await;
    let port = server.addr.rsplit_once(':').unwrap().1.to_string();
    // A server on another host name that sends every request on to `server`.
    let redirect = GitHttpServer::redirecting_to(&format!("http://127.0.0.1:{port}")).await;
    let redirect_port = redirect.addr.rsplit_once(':').unwrap().1.to_string();
    let mirrors = tempfile::tempdir().unwrap();
    let fetch = |url: String, credentials: Option<&str>| {
        let credentials = credentials.map(str::to_string);
        let root = mirrors.path().to_path_buf();
        async move {
            tokio::task::spawn_blocking(move || {
                // The servers are on the loopback address, which only KILN_GIT_ALLOW opens.
                let loopback = AllowList::parse("127.0.0.1").unwrap();
                let remote = Remote::resolve(
                    &url,
                    credentials.as_deref(),
                    &LocalSources::default(),
                    &loopback,
                )?;
                let repo = git::fetch_mirror(&git::mirror_path(&root, remote.url()), &remote)?;
                git::branch_head(&repo, "main").map(|oid| oid.to_string())
            })
            .await
            .unwrap()
        }
    };

    let url = format!("http://{}/private.git", server.addr);
    assert_eq!(
        fetch(url.clone(), Some(&format!("bot:{TOKEN}")))
            .await
            .unwrap(),
        git.head()
    );
    let asked = server.requests().len();

    let error = fetch(url.clone(), Some("bot:wrong-password"))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("cannot fetch {url}: the server refused the source's credentials")
    );
    let offered = server.requests()[asked..]
        .iter()
        .filter(|r| r.header("authorization").is_some())
        .count();
    assert_eq!(offered, 1, "wrong credentials are offered once");

    // Through `localhost`: the redirect leads to 127.0.0.1, which asks; the credentials are for
    // localhost, so they are not sent.
    let before = server.requests().len();
    let via = format!("http://localhost:{redirect_port}/private.git");
    let error = fetch(via.clone(), Some(&format!("bot:{TOKEN}")))
        .await
        .unwrap_err();
    let GitError::Fetch { message, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(
        message,
        "127.0.0.1 asks for credentials: the source's are only sent to localhost"
    );
    assert!(
        !redirect.requests().is_empty(),
        "the fetch went through the redirect"
    );
    let after = server.requests();
    assert!(after.len() > before, "the redirect was followed");
    assert!(
        after[before..]
            .iter()
            .all(|r| r.header("authorization").is_none()),
        "no credentials went to the other host"
    );
    assert!(!format!("{error} {error:?}").contains(TOKEN));
}

/// A source stored before credentials were kept apart (its clone URL holds them): at start kiln
/// moves them out of the URL, the API shows only that there are some, and the mirror named after
/// the old URL (where git may have written it) is removed.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_stored_in_a_clone_url_are_moved_apart_at_start() {
    use sqlx::sqlite::SqliteConnectOptions;
    use std::str::FromStr;
    const TOKEN: &str = "ghp_storedBeforeTheSplit0123";
    let registry = Registry::start();
    let data_dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", data_dir.path().join("kiln.db").display());
    let pool = sqlx::SqlitePool::connect_with(
        SqliteConnectOptions::from_str(&db_url)
            .unwrap()
            .create_if_missing(true),
    )
    .await
    .unwrap();
    kiln::db::MIGRATOR.run_to(3, &pool).await.unwrap();
    let old_url = format!("https://kiln-bot:{TOKEN}@github.com/acme/api.git");
    for (sql, binds) in [
        (
            "INSERT INTO namespaces (id, name, created_at) VALUES ('n1', 'acme', '2026-01-01T00:00:00.000000Z')",
            vec![],
        ),
        (
            "INSERT INTO repositories (id, namespace_id, name, created_at, updated_at) \
             VALUES ('r1', 'n1', 'api', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
            vec![],
        ),
        (
            "INSERT INTO sources (repository_id, provider, clone_url, match_url, webhook_secret, created_at) \
             VALUES ('r1', 'github', ?, 'https://github.com/acme/api', 's3cret-s3cret-s3cret', '2026-01-01T00:00:00.000000Z')",
            vec![old_url.clone()],
        ),
    ] {
        let mut q = sqlx::query(sql);
        for b in binds {
            q = q.bind(b);
        }
        q.execute(&pool).await.unwrap();
    }
    pool.close().await;
    let mirrors = data_dir.path().join("mirrors");
    let old_mirror = git::mirror_path(&mirrors, &old_url);
    std::fs::create_dir_all(&old_mirror).unwrap();
    std::fs::write(
        old_mirror.join("FETCH_HEAD"),
        format!("0123\t\tbranch 'main' of {old_url}\n"),
    )
    .unwrap();

    let kiln = Kiln::start_in(&registry, &[], data_dir).await;
    let (s, source) = kiln.get("/namespaces/acme/repos/api/source").await;
    assert_eq!(s, StatusCode::OK, "{source}");
    assert_eq!(source["clone_url"], "https://github.com/acme/api.git");
    assert_eq!(source["has_credentials"], true);
    assert!(!source.to_string().contains(TOKEN));
    assert!(!old_mirror.exists(), "the old mirror is removed");
    for file in walk(&mirrors) {
        assert!(
            !std::fs::read_to_string(&file)
                .unwrap_or_default()
                .contains(TOKEN)
        );
    }
}
