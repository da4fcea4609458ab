//! From a signed GitHub push to a pushed image: real dockerd, real Distribution registry, real git repos,
//! the real kiln server.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::kiln::Kiln;
use support::{GitRepo, Registry, github_push_payload};

const ZERO: &str = "0000000000000000000000000000000000000000";

/// A registry, kiln, and a git repo whose `main` holds a FROM-scratch Dockerfile.
async fn setup(ns: &str, repo: &str) -> (Registry, Kiln, GitRepo, String) {
    support::ensure_docker();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let git = GitRepo::new();
    git.write("Dockerfile", "FROM scratch\nCOPY hello.txt /hello.txt\n");
    // Unique per run, so Docker's build cache never hides a step's output.
    git.write(
        "hello.txt",
        format!("hello from {ns}/{repo} in {}\n", git.clone_url()),
    );
    git.commit("first");
    git.push("main");
    let secret = kiln.ci_repo(ns, repo, &git.clone_url()).await;
    (registry, kiln, git, secret)
}

fn push(git: &GitRepo, git_ref: &str, sha: &str) -> Value {
    github_push_payload(&git.clone_url(), git_ref, ZERO, sha, false)
}

async fn one_build(kiln: &Kiln, resp: (StatusCode, Value)) -> Value {
    let (status, body) = resp;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let ids = body["builds"].as_array().unwrap();
    assert_eq!(ids.len(), 1, "{body}");
    kiln.wait_build(ids[0].as_str().unwrap()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn branch_push_builds_and_pushes_the_image() {
    let (registry, kiln, git, secret) = setup("acme", "api").await;
    kiln.rule(
        "acme",
        "api",
        json!({"type": "branch", "name": "main", "dockerfile": "Dockerfile", "overwrite": true}),
    )
    .await;
    let sha = git.head();
    let build = one_build(
        &kiln,
        kiln.github_hook("push", "d-1", &secret, &push(&git, "refs/heads/main", &sha))
            .await,
    )
    .await;
    assert_eq!(
        build["status"],
        "succeeded",
        "{build}\n{}",
        kiln.log(build["id"].as_str().unwrap()).await
    );
    assert_eq!(build["tag"], "main");
    assert_eq!(build["commit"], sha);
    assert_eq!(build["trigger"], "push");
    assert_eq!(build["ref"], "refs/heads/main");
    assert_eq!(build["image"], format!("{}/acme/api:main", registry.addr));

    assert_eq!(registry.tags("acme/api").await, vec!["main".to_string()]);
    let digest = registry
        .manifest_digest("acme/api", "main")
        .await
        .expect("manifest in the registry");
    assert_eq!(build["digest"], digest);

    let log = kiln.log(build["id"].as_str().unwrap()).await;
    // Built with BuildKit (the default): its steps as `--progress=plain` shows them; kiln's labels
    // cost no step there.
    assert!(log.contains("Builder: BuildKit"), "{log}");
    assert!(log.contains("[1/1] COPY hello.txt /hello.txt"), "{log}");
    assert!(!log.contains("LABEL"), "{log}");
    assert!(
        log.contains(&format!(
            "Pushed {}/acme/api:main ({digest})",
            registry.addr
        )),
        "{log}"
    );

    let (_, versions) = kiln.get("/namespaces/acme/repos/api/versions").await;
    assert_eq!(versions[0]["tag"], "main");
    assert_eq!(versions[0]["digest"], digest);
    assert_eq!(versions[0]["source"], "build");
    assert_eq!(versions[0]["build_id"], build["id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn overwrite_off_tags_version_dash_sha7_and_feature_branches_are_sanitized() {
    let (registry, kiln, git, secret) = setup("acme", "web").await;
    kiln.rule(
        "acme",
        "web",
        json!({"type": "branch", "name": "feature/*", "overwrite": false}),
    )
    .await;
    git.checkout("feature/login");
    git.write("hello.txt", "login\n");
    let sha = git.commit("login page");
    git.push("feature/login");
    let build = one_build(
        &kiln,
        kiln.github_hook(
            "push",
            "d-2",
            &secret,
            &push(&git, "refs/heads/feature/login", &sha),
        )
        .await,
    )
    .await;
    assert_eq!(build["status"], "succeeded", "{build}");
    let expected = format!("feature-login-{}", &sha[..7]);
    assert_eq!(build["tag"], expected);
    assert_eq!(registry.tags("acme/web").await, vec![expected.clone()]);
    assert_eq!(
        registry
            .manifest_digest("acme/web", &expected)
            .await
            .as_ref(),
        build["digest"].as_str().map(String::from).as_ref()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_push_matching_v_star_builds_and_other_refs_do_not() {
    let (registry, kiln, git, secret) = setup("acme", "lib").await;
    kiln.rule("acme", "lib", json!({"type": "tag", "name": "v*"}))
        .await;
    let sha = git.tag("v1.2.3");
    git.push_tag("v1.2.3");
    let build = one_build(
        &kiln,
        kiln.github_hook(
            "push",
            "d-3",
            &secret,
            &push(&git, "refs/tags/v1.2.3", &sha),
        )
        .await,
    )
    .await;
    assert_eq!(build["status"], "succeeded", "{build}");
    assert_eq!(build["tag"], "v1.2.3");
    assert_eq!(registry.tags("acme/lib").await, vec!["v1.2.3".to_string()]);

    // A branch push and a non-matching tag: accepted, nothing built.
    for (delivery, git_ref) in [("d-4", "refs/heads/main"), ("d-5", "refs/tags/release-1")] {
        let (s, body) = kiln
            .github_hook("push", delivery, &secret, &push(&git, git_ref, &sha))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["builds"], json!([]), "{git_ref}");
    }
    assert_eq!(kiln.builds("acme", "lib").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn dockerfile_in_a_sub_folder_with_a_run_step() {
    let (registry, kiln, git, secret) = setup("acme", "tool").await;
    let base = support::ensure_base_image();
    git.write(
        "docker/Dockerfile.prod",
        format!(
            // kiln's copy of the Dockerfile (with its labels) never reaches the image either.
            "{}COPY . /srv/\nRUN test ! -e /srv/secret.env && test ! -e /srv/logs && test ! -e /srv/.kiln.Dockerfile && cat /srv/hello.txt\n",
            support::fresh_from(base)
        ),
    );
    git.write(".dockerignore", "secret.env\nlogs/\n");
    git.write("secret.env", "TOKEN=do-not-ship\n");
    git.write("logs/today.log", "noise\n");
    let sha = git.commit("prod dockerfile");
    git.push("main");
    kiln.rule("acme", "tool", json!({"type": "branch", "name": "main", "dockerfile": "docker/Dockerfile.prod", "version": "prod"}))
        .await;
    let build = one_build(
        &kiln,
        kiln.github_hook("push", "d-6", &secret, &push(&git, "refs/heads/main", &sha))
            .await,
    )
    .await;
    let log = kiln.log(build["id"].as_str().unwrap()).await;
    assert_eq!(build["status"], "succeeded", "{build}\n{log}");
    assert_eq!(build["tag"], "prod");
    assert!(
        log.contains("hello from acme/tool"),
        "the RUN step's output is in the log:\n{log}"
    );
    assert_eq!(registry.tags("acme/tool").await, vec!["prod".to_string()]);
}

/// A Dockerfile outside the context directory: kiln sends it in the context under its own name,
/// which only the classic builder drops before `COPY`, so such a build runs on it.
#[tokio::test(flavor = "multi_thread")]
async fn a_dockerfile_outside_the_context_builds_on_the_classic_builder_and_stays_out_of_the_image()
{
    let (registry, kiln, git, secret) = setup("acme", "outside").await;
    let base = support::ensure_base_image();
    git.write(
        "docker/Dockerfile",
        format!(
            "{}COPY . /srv/\nRUN ls -a /srv && test ! -e /srv/.kiln.Dockerfile && cat /srv/app.txt\n",
            support::fresh_from(base)
        ),
    );
    git.write("app/app.txt", "the app's own file\n");
    let sha = git.commit("a context beside the Dockerfile");
    git.push("main");
    kiln.rule(
        "acme",
        "outside",
        json!({"type": "branch", "name": "main", "dockerfile": "docker/Dockerfile", "context": "app"}),
    )
    .await;
    let build = one_build(
        &kiln,
        kiln.github_hook(
            "push",
            "d-out",
            &secret,
            &push(&git, "refs/heads/main", &sha),
        )
        .await,
    )
    .await;
    let log = kiln.log(build["id"].as_str().unwrap()).await;
    assert_eq!(build["status"], "succeeded", "{build}\n{log}");
    assert!(
        log.contains("Builder: classic (the Dockerfile lies outside the build context)"),
        "{log}"
    );
    assert!(log.contains("the app's own file"), "{log}");
    assert_eq!(
        registry.tags("acme/outside").await,
        vec!["main".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_run_step_fails_the_build_and_pushes_nothing() {
    let (registry, kiln, git, secret) = setup("acme", "broken").await;
    let base = support::ensure_base_image();
    git.write(
        "Dockerfile",
        format!("FROM {base}\nRUN echo about to fail && false\n"),
    );
    let sha = git.commit("broken");
    git.push("main");
    kiln.rule("acme", "broken", json!({"type": "branch", "name": "main"}))
        .await;
    let build = one_build(
        &kiln,
        kiln.github_hook("push", "d-7", &secret, &push(&git, "refs/heads/main", &sha))
            .await,
    )
    .await;
    assert_eq!(build["status"], "failed", "{build}");
    let error = build["error"].as_str().unwrap();
    assert!(
        error.contains("/bin/sh -c echo about to fail && false") && error.ends_with("exit code: 1"),
        "{error}"
    );
    assert!(!error.contains('\n'));
    let log = kiln.log(build["id"].as_str().unwrap()).await;
    assert!(log.contains("about to fail"), "{log}");
    assert!(log.contains("Build failed: "), "{log}");
    assert!(build["digest"].is_null());
    assert!(registry.tags("acme/broken").await.is_empty());
    // The stages it reached show their time; the push it never reached, none.
    let stages = &build["stages"];
    for stage in ["queued_ms", "fetch_ms", "context_ms", "build_ms"] {
        assert!(stages[stage].is_u64(), "{stage}: {build}");
    }
    assert!(stages["push_ms"].is_null(), "{build}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_dockerfile_and_unknown_commit_fail_with_a_reason() {
    let (registry, kiln, git, secret) = setup("acme", "odd").await;
    kiln.rule(
        "acme",
        "odd",
        json!({"type": "branch", "name": "main", "dockerfile": "nope/Dockerfile"}),
    )
    .await;
    let sha = git.head();
    let build = one_build(
        &kiln,
        kiln.github_hook("push", "d-8", &secret, &push(&git, "refs/heads/main", &sha))
            .await,
    )
    .await;
    assert_eq!(build["status"], "failed");
    assert_eq!(build["error"], "Dockerfile not found at nope/Dockerfile");

    let ghost = "1234567890abcdef1234567890abcdef12345678";
    let build = one_build(
        &kiln,
        kiln.github_hook(
            "push",
            "d-9",
            &secret,
            &push(&git, "refs/heads/main", ghost),
        )
        .await,
    )
    .await;
    assert_eq!(build["status"], "failed");
    assert!(
        build["error"]
            .as_str()
            .unwrap()
            .contains(&format!("commit {ghost} not found")),
        "{build}"
    );
    assert!(registry.tags("acme/odd").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_signature_is_401_and_creates_nothing() {
    let (_registry, kiln, git, secret) = setup("acme", "guarded").await;
    kiln.rule("acme", "guarded", json!({"type": "branch", "name": "main"}))
        .await;
    let payload = push(&git, "refs/heads/main", &git.head());
    let body = serde_json::to_vec(&payload).unwrap();
    for signature in [
        support::github_signature("wrong secret", &body),
        "sha256=00".to_string(),
        String::new(),
    ] {
        let (s, resp) = kiln
            .github_hook_raw("push", "d-10", &signature, body.clone())
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{resp}");
        assert!(resp["error"]["code"].is_string(), "{resp}");
    }
    // Signed for the right repo but the body was altered after signing.
    let mut tampered = body.clone();
    let sig = support::github_signature(&secret, &body);
    tampered.extend_from_slice(b" ");
    let (s, _) = kiln.github_hook_raw("push", "d-11", &sig, tampered).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(kiln.builds("acme", "guarded").await.is_empty());
    // The same delivery id, now signed properly, is new: nothing was stored for the refused ones.
    let (s, resp) = kiln.github_hook("push", "d-10", &secret, &payload).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{resp}");
    assert_eq!(resp["builds"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_delivery_builds_once() {
    let (_registry, kiln, git, secret) = setup("acme", "dup").await;
    kiln.rule("acme", "dup", json!({"type": "branch", "name": "main"}))
        .await;
    let payload = push(&git, "refs/heads/main", &git.head());
    let first = kiln
        .github_hook("push", "same-delivery", &secret, &payload)
        .await;
    assert_eq!(first.0, StatusCode::ACCEPTED);
    let (s, again) = kiln
        .github_hook("push", "same-delivery", &secret, &payload)
        .await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["builds"], json!([]));
    assert_eq!(again["duplicate"], true);
    let builds = kiln.builds("acme", "dup").await;
    assert_eq!(builds.len(), 1);
    let build = kiln.wait_build(builds[0]["id"].as_str().unwrap()).await;
    assert_eq!(build["status"], "succeeded", "{build}");
}

#[tokio::test(flavor = "multi_thread")]
async fn build_now_builds_the_branch_head() {
    let (registry, kiln, git, _secret) = setup("acme", "manual").await;
    let rule = kiln
        .rule(
            "acme",
            "manual",
            json!({"type": "branch", "name": "main", "overwrite": false}),
        )
        .await;
    git.write("hello.txt", "second\n");
    let head = git.commit("second");
    git.push("main");
    let (s, build) = kiln
        .post(
            &format!("/namespaces/acme/repos/manual/rules/{rule}/builds"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{build}");
    assert_eq!(build["status"], "queued");
    assert_eq!(build["trigger"], "manual");
    let build = kiln.wait_build(build["id"].as_str().unwrap()).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    assert_eq!(build["commit"], head);
    let tag = format!("main-{}", &head[..7]);
    assert_eq!(build["tag"], tag);
    assert_eq!(registry.tags("acme/manual").await, vec![tag]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_build_log_ends_with_the_pushed_reference_tag_included() {
    let (registry, kiln, git, secret) = setup("acme", "logged").await;
    let rule = kiln
        .rule(
            "acme",
            "logged",
            json!({"type": "branch", "name": "main", "overwrite": true}),
        )
        .await;
    let last_line = |log: String| log.lines().last().unwrap_or_default().to_string();

    // A push: the build carries its tag from the start.
    let pushed = one_build(
        &kiln,
        kiln.github_hook(
            "push",
            "d-logged",
            &secret,
            &push(&git, "refs/heads/main", &git.head()),
        )
        .await,
    )
    .await;
    assert_eq!(pushed["status"], "succeeded", "{pushed}");
    let digest = registry
        .manifest_digest("acme/logged", "main")
        .await
        .expect("pushed");
    assert_eq!(pushed["digest"], digest.as_str());
    assert_eq!(
        last_line(kiln.log(pushed["id"].as_str().unwrap()).await),
        format!("Pushed {}/acme/logged:main ({digest})", registry.addr)
    );

    // "Build now": the tag is only known once the worker has resolved the branch head.
    git.write("hello.txt", "built now\n");
    git.commit("second");
    git.push("main");
    let (s, queued) = kiln
        .post(
            &format!("/namespaces/acme/repos/logged/rules/{rule}/builds"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{queued}");
    assert_eq!(queued["tag"], Value::Null, "{queued}");
    let built = kiln.wait_build(queued["id"].as_str().unwrap()).await;
    assert_eq!(built["status"], "succeeded", "{built}");
    let digest = registry
        .manifest_digest("acme/logged", "main")
        .await
        .expect("pushed");
    assert_eq!(built["digest"], digest.as_str());
    assert_eq!(
        last_line(kiln.log(built["id"].as_str().unwrap()).await),
        format!("Pushed {}/acme/logged:main ({digest})", registry.addr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_deleted_ref_unknown_event_malformed_and_oversized_bodies() {
    let (_registry, kiln, git, secret) = setup("acme", "edges").await;
    kiln.rule("acme", "edges", json!({"type": "branch", "name": "main"}))
        .await;

    let (s, body) = kiln
        .github_hook(
            "ping",
            "p-1",
            &secret,
            &support::github_ping_payload(&git.clone_url()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");

    let deleted = github_push_payload(&git.clone_url(), "refs/heads/main", &git.head(), ZERO, true);
    let (s, body) = kiln.github_hook("push", "p-2", &secret, &deleted).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["builds"], json!([]));

    let mut issue = support::github_ping_payload(&git.clone_url());
    issue["action"] = json!("opened");
    let (s, body) = kiln.github_hook("issues", "p-3", &secret, &issue).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["builds"], json!([]));

    // Signed with the source's secret, but naming no repository (not even JSON): nothing to route it
    // by, so it is refused without trying any source's secret.
    let garbage = b"{\"repository\": ".to_vec();
    let sig = support::github_signature(&secret, &garbage);
    let (s, body) = kiln.github_hook_raw("push", "p-4", &sig, garbage).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("names no repository"),
        "{body}"
    );
    let mut no_repo = deleted.clone();
    no_repo.as_object_mut().unwrap().remove("repository");
    let (s, body) = kiln.github_hook("push", "p-5", &secret, &no_repo).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");

    // An organization hook's ping names no repository: answered, not verified, nothing stored.
    let mut org_ping = support::github_ping_payload(&git.clone_url());
    org_ping.as_object_mut().unwrap().remove("repository");
    org_ping["organization"] = json!({"login": "acme", "id": 1});
    let (s, body) = kiln
        .github_hook_raw(
            "ping",
            "p-6",
            "sha256=0000",
            serde_json::to_vec(&org_ping).unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["verified"], false, "{body}");
    let (_, events) = kiln.get("/namespaces/acme/repos/edges/events").await;
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["delivery_id"] != "p-6"),
        "{events}"
    );

    // Over 25 MiB, announced by Content-Length or streamed chunked: 413 either way.
    let huge = vec![b' '; 25 * 1024 * 1024 + 1];
    let sig = support::github_signature(&secret, &huge);
    for chunked in [false, true] {
        let status = raw_hook_status(&kiln.url, &sig, &huge, chunked).await;
        assert_eq!(status, 413, "chunked: {chunked}");
    }

    assert!(kiln.builds("acme", "edges").await.is_empty());
}

/// Posts a hook over a raw TCP connection, carrying on when the server stops reading the body (as it
/// does once it has seen too much), and returns the status code it answered.
async fn raw_hook_status(base: &str, signature: &str, body: &[u8], chunked: bool) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let length = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {}", body.len())
    };
    let head = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\n\
         X-GitHub-Delivery: big\r\nX-Hub-Signature-256: {signature}\r\n{length}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let body = body.to_vec();
    let writer = tokio::spawn(async move {
        for chunk in body.chunks(1 << 20) {
            let ok = if chunked {
                write
                    .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await
                    .is_ok()
                    && write.write_all(chunk).await.is_ok()
                    && write.write_all(b"\r\n").await.is_ok()
            } else {
                write.write_all(chunk).await.is_ok()
            };
            if !ok {
                return;
            }
        }
        if chunked {
            let _ = write.write_all(b"0\r\n\r\n").await;
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        read.read_to_end(&mut answer),
    )
    .await;
    writer.abort();
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn pushes_with_the_configured_credentials_and_fails_clearly_without_them() {
    support::ensure_docker();
    let registry = Registry::start_with_htpasswd("kiln", "s3cret-registry-pw");
    let git = GitRepo::new();
    git.write("Dockerfile", "FROM scratch\nCOPY hello.txt /hello.txt\n");
    git.write("hello.txt", format!("auth test {}\n", git.clone_url()));
    let sha = git.commit("first");
    git.push("main");

    // Without credentials: the push is refused, the build fails saying so.
    let anonymous = Kiln::start(&registry, &[]).await;
    let secret = anonymous.ci_repo("acme", "private", &git.clone_url()).await;
    anonymous
        .rule("acme", "private", json!({"type": "branch", "name": "main"}))
        .await;
    let build = one_build(
        &anonymous,
        anonymous
            .github_hook("push", "a-1", &secret, &push(&git, "refs/heads/main", &sha))
            .await,
    )
    .await;
    assert_eq!(build["status"], "failed", "{build}");
    let error = build["error"].as_str().unwrap();
    assert!(error.starts_with("push refused: "), "{error}");
    assert!(registry.tags("acme/private").await.is_empty());

    // With them: pushed, and the password shows up in no build log or API answer.
    let kiln = Kiln::start(
        &registry,
        &[
            ("KILN_REGISTRY_USERNAME", "kiln"),
            ("KILN_REGISTRY_PASSWORD", "s3cret-registry-pw"),
        ],
    )
    .await;
    let secret = kiln.ci_repo("acme", "private", &git.clone_url()).await;
    kiln.rule("acme", "private", json!({"type": "branch", "name": "main"}))
        .await;
    let build = one_build(
        &kiln,
        kiln.github_hook("push", "a-2", &secret, &push(&git, "refs/heads/main", &sha))
            .await,
    )
    .await;
    assert_eq!(build["status"], "succeeded", "{build}");
    assert_eq!(
        registry.tags("acme/private").await,
        vec!["main".to_string()]
    );
    let log = kiln.log(build["id"].as_str().unwrap()).await;
    assert!(
        !log.contains("s3cret-registry-pw") && !build.to_string().contains("s3cret-registry-pw")
    );

    let health: Value = reqwest::get(format!("{}/healthz", kiln.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["docker"]["status"], "ok");
    assert!(
        health["docker"]["detail"]
            .as_str()
            .unwrap()
            .contains("API 1.4"),
        "{health}"
    );
    assert_eq!(health["registry"]["status"], "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_streams_live_and_a_running_build_can_be_cancelled() {
    let (registry, kiln, git, secret) = setup("acme", "slow").await;
    let base = support::ensure_base_image();
    git.write(
        "Dockerfile",
        format!(
            "{}COPY hello.txt /hello.txt\nRUN echo first-$((40+2)) && sleep 2 && echo second-$((40+3))\n",
            support::fresh_from(base)
        ),
    );
    let sha = git.commit("slow build");
    git.push("main");
    kiln.rule("acme", "slow", json!({"type": "branch", "name": "main"}))
        .await;

    // Follow the log while the build runs: the answer grows, and ends when the build ends.
    let (_, body) = kiln
        .github_hook("push", "s-1", &secret, &push(&git, "refs/heads/main", &sha))
        .await;
    let id = body["builds"][0].as_str().unwrap().to_string();
    let mut resp = kiln
        .http
        .get(format!("{}/api/v1/builds/{id}/log?follow=true", kiln.url))
        .bearer_auth(support::kiln::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    let mut streamed = String::new();
    let mut saw_first_before_end = false;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        streamed.push_str(&String::from_utf8_lossy(&chunk));
        // The shell computes the markers, so they differ from the step's own echoed command line.
        if streamed.contains("first-42") && !streamed.contains("second-43") {
            let (_, b) = kiln.get(&format!("/builds/{id}")).await;
            saw_first_before_end |= b["status"] == "building";
        }
    }
    assert!(
        saw_first_before_end,
        "the log arrived only at the end:\n{streamed}"
    );
    assert!(streamed.contains("second-43"), "{streamed}");
    assert!(
        streamed.trim_end().ends_with(')'),
        "ends with the Pushed line:\n{streamed}"
    );
    assert_eq!(streamed, kiln.log(&id).await);
    let first_digest = kiln.wait_build(&id).await["digest"]
        .as_str()
        .unwrap()
        .to_string();

    // Cancel a running build: it ends cancelled and pushes nothing.
    git.write(
        "Dockerfile",
        format!("FROM {base}\nRUN echo waiting && sleep 30\n"),
    );
    let sha = git.commit("slower");
    git.push("main");
    let (_, body) = kiln
        .github_hook("push", "s-2", &secret, &push(&git, "refs/heads/main", &sha))
        .await;
    let id = body["builds"][0].as_str().unwrap().to_string();
    support::wait_until(
        "the build to print",
        std::time::Duration::from_secs(60),
        || async { kiln.log(&id).await.contains("waiting") },
    )
    .await;
    let (s, b) = kiln.post(&format!("/builds/{id}/cancel"), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let b = kiln.wait_build(&id).await;
    assert_eq!(b["status"], "cancelled", "{b}");
    let (s, again) = kiln.post(&format!("/builds/{id}/cancel"), json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{again}");
    assert_eq!(registry.tags("acme/slow").await, vec!["main".to_string()]);
    assert_eq!(
        registry.manifest_digest("acme/slow", "main").await.unwrap(),
        first_digest,
        "the cancelled build pushed nothing"
    );
}
