//! Registry access through kiln (issue 11): a real registry (CNCF Distribution 2.8) that takes kiln
//! as its token server, the real `docker` CLI and daemon, and kiln. Who may log in, push and pull
//! follows kiln's API tokens; kiln's own builds, reads, syncs and deletions use tokens it issues to
//! itself. Each test logs in with a throwaway `--config` directory, so no login leaks.

mod support;

use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::kiln::{ADMIN_TOKEN, Kiln};
use support::{GitRepo, Registry};

/// How long one `docker` command may take.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

/// The Docker CLI with its own configuration directory (logins stay in it).
struct DockerCli {
    config: tempfile::TempDir,
}

/// What a `docker` command did.
struct Outcome {
    ok: bool,
    output: String,
}

impl DockerCli {
    fn new() -> DockerCli {
        DockerCli {
            config: tempfile::Builder::new()
                .prefix("kiln-test-docker-config-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Outcome {
        use tokio::io::AsyncWriteExt;
        let mut cmd = tokio::process::Command::new(support::DOCKER);
        cmd.arg("--config")
            .arg(self.config.path())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("run docker");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).await.expect("write stdin");
        }
        drop(input);
        let out = tokio::time::timeout(DOCKER_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("`docker {}` did not finish", args.join(" ")))
            .expect("docker output");
        Outcome {
            ok: out.status.success(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    async fn login(&self, registry: &Registry, token: &str) -> Outcome {
        self.run(
            &[
                "login",
                &registry.addr,
                "--username",
                "someone",
                "--password-stdin",
            ],
            Some(token),
        )
        .await
    }

    async fn push(&self, image: &str) -> Outcome {
        self.run(&["push", image], None).await
    }

    /// Pulls `image` after removing the local copy, so the registry is asked for everything.
    async fn pull(&self, image: &str) -> Outcome {
        let _ = self.run(&["image", "rm", "--force", image], None).await;
        self.run(&["pull", image], None).await
    }
}

/// A small local image tagged `image` (`FROM scratch`, one label): nothing is pulled to make it.
async fn local_image(image: &str, label: &str) {
    let cli = DockerCli::new();
    let context = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM scratch\nLABEL kiln.test={label}\n"),
    )
    .expect("write the Dockerfile");
    let context = context.path().to_str().expect("utf-8 path");
    // The classic builder looks for a cached `FROM scratch` step among every image without a
    // parent, and fails "unable to find image sha256:…" when another test removes one of them
    // meanwhile (moby/moby#18976; as `support::docker_build_and_push` does): built again then.
    for attempt in 1..=3 {
        let built = cli
            .run(&["build", "--quiet", "--tag", image, context], None)
            .await;
        if built.ok {
            return;
        }
        assert!(
            attempt < 3 && built.output.contains("unable to find image"),
            "docker build {image}: {}",
            built.output
        );
    }
}

/// `GET /registry/token` on kiln with `query` and, when given, Basic credentials with `password`.
async fn token_answer(kiln: &Kiln, query: &str, password: Option<&str>) -> (StatusCode, Value) {
    let mut req = kiln
        .http
        .get(format!("{}/registry/token?{query}", kiln.url));
    if let Some(password) = password {
        req = req.basic_auth("someone", Some(password));
    }
    let resp = req.send().await.expect("token request");
    let status = resp.status();
    let www = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let mut body: Value = resp.json().await.expect("JSON answer");
    if status == StatusCode::UNAUTHORIZED {
        assert!(
            www.as_deref().is_some_and(|w| w.starts_with("Basic ")),
            "a 401 says how to authenticate: {www:?}"
        );
    }
    if let Some(token) = body["token"].as_str() {
        body["claims"] = claims(token);
    }
    (status, body)
}

/// The claims of a JWT (not verified: the registry does that).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url claims");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// The catalog as the registry answers the bearer of `jwt`.
async fn catalog_with(registry: &Registry, jwt: &str) -> (StatusCode, String) {
    let resp = reqwest::Client::new()
        .get(format!("{}/v2/_catalog", registry.url))
        .bearer_auth(jwt)
        .send()
        .await
        .expect("catalog request");
    (resp.status(), resp.text().await.unwrap_or_default())
}

async fn namespaces(kiln: &Kiln, names: &[&str]) {
    for name in names {
        let (s, body) = kiln.post("/namespaces", json!({"name": name})).await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_logins_pushes_and_pulls_follow_kiln_tokens() {
    let (registry, kiln) = Kiln::start_with_registry_token_auth(&[]).await;
    namespaces(&kiln, &["red", "blue"]).await;
    let red_write = kiln.token("red-ci", "write", Some("red")).await;
    let red_read = kiln.token("red-reader", "read", Some("red")).await;
    let red_app = registry.image("red/app", "v1");
    let blue_app = registry.image("blue/app", "v1");
    local_image(&red_app, "red").await;
    local_image(&blue_app, "blue").await;

    // Nobody gets in with a token kiln does not know.
    let stranger = DockerCli::new();
    let login = stranger.login(&registry, "kiln_not_a_token").await;
    assert!(!login.ok, "a wrong token logs in: {}", login.output);
    assert!(
        login.output.to_lowercase().contains("unauthorized"),
        "{}",
        login.output
    );

    // An admin puts blue/app in place (a kiln-wide token pushes anywhere).
    let admin = DockerCli::new();
    let login = admin.login(&registry, ADMIN_TOKEN).await;
    assert!(login.ok, "admin login: {}", login.output);
    let pushed = admin.push(&blue_app).await;
    assert!(pushed.ok, "admin pushes blue/app: {}", pushed.output);

    // A write token of `red`: logs in, pushes red/app; blue/app is neither pushed nor pulled.
    let red = DockerCli::new();
    let login = red.login(&registry, &red_write).await;
    assert!(login.ok, "red write login: {}", login.output);
    let pushed = red.push(&red_app).await;
    assert!(pushed.ok, "red pushes red/app: {}", pushed.output);
    let refused = red.push(&blue_app).await;
    assert!(!refused.ok, "red pushed blue/app: {}", refused.output);
    assert!(
        refused.output.contains("denied") || refused.output.contains("unauthorized"),
        "{}",
        refused.output
    );
    let refused = red.pull(&blue_app).await;
    assert!(!refused.ok, "red pulled blue/app: {}", refused.output);
    assert!(
        refused.output.contains("denied") || refused.output.contains("unauthorized"),
        "{}",
        refused.output
    );
    let pulled = red.pull(&red_app).await;
    assert!(pulled.ok, "red pulls red/app: {}", pulled.output);

    // A read token of `red`: pulls red/app, pushes nothing.
    let reader = DockerCli::new();
    let login = reader.login(&registry, &red_read).await;
    assert!(login.ok, "red read login: {}", login.output);
    let pulled = reader.pull(&red_app).await;
    assert!(pulled.ok, "a read token pulls red/app: {}", pulled.output);
    let red_v2 = registry.image("red/app", "v2");
    let tagged = reader.run(&["tag", &red_app, &red_v2], None).await;
    assert!(tagged.ok, "{}", tagged.output);
    let refused = reader.push(&red_v2).await;
    assert!(!refused.ok, "a read token pushed: {}", refused.output);

    // Without logging in: no pull (KILN_REGISTRY_ANONYMOUS_PULL is off by default).
    let refused = stranger.pull(&red_app).await;
    assert!(!refused.ok, "an anonymous pull worked: {}", refused.output);
    assert!(
        refused.output.contains("denied") || refused.output.contains("unauthorized"),
        "{}",
        refused.output
    );

    // The catalog: kiln-wide admins only.
    let (s, admin_catalog) = token_answer(
        &kiln,
        "service=kiln&scope=registry:catalog:*",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{admin_catalog}");
    let (s, listed) = catalog_with(&registry, admin_catalog["token"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{listed}");
    assert!(
        listed.contains("red/app") && listed.contains("blue/app"),
        "{listed}"
    );
    let red_admin = kiln.token("red-admin", "admin", Some("red")).await;
    for token in [&red_write, &red_admin] {
        let (s, answer) =
            token_answer(&kiln, "service=kiln&scope=registry:catalog:*", Some(token)).await;
        assert_eq!(s, StatusCode::OK, "{answer}");
        assert_eq!(answer["claims"]["access"], json!([]), "{answer}");
        let (s, listed) = catalog_with(&registry, answer["token"].as_str().unwrap()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{listed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_answers_as_the_spec_says() {
    let (_registry, kiln) = Kiln::start_with_registry_token_auth(&[]).await;
    namespaces(&kiln, &["red"]).await;
    let red_write = kiln.token("red-ci", "write", Some("red")).await;

    // Two scopes, one granted in part and one refused: the refused one is left out.
    let (s, body) = token_answer(
        &kiln,
        "service=kiln&scope=repository:red/app:pull,push&scope=repository:blue/app:pull&account=ci",
        Some(&red_write),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["token"], body["access_token"]);
    assert_eq!(body["expires_in"], 300);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'), "{body}");
    let c = &body["claims"];
    assert_eq!(
        c["access"],
        json!([{"type": "repository", "name": "red/app", "actions": ["pull", "push"]}])
    );
    assert_eq!(
        (&c["iss"], &c["aud"], &c["sub"]),
        (&json!("kiln"), &json!("kiln"), &json!("ci"))
    );

    // `docker login` asks for no scope: a token with no access.
    let (s, body) = token_answer(&kiln, "service=kiln&account=x", Some(&red_write)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["claims"]["access"], json!([]));

    // Unknown, malformed and expired credentials: 401 with the JSON error.
    // An expired token (the API refuses to make one: it is written as time left it).
    let expired = "kiln_expired_token_for_the_registry_test";
    kiln::db::tokens::insert(
        &kiln.server.app.db,
        &kiln::db::tokens::NewToken {
            name: "expired",
            namespace: Some("red"),
            role: "write",
            token_hash: &kiln::http::auth::hash_token(expired),
            expires_at: Some("2000-01-01T00:00:00.000000Z"),
        },
    )
    .await
    .expect("insert an expired token");
    let bad = ["kiln_unknown", expired];
    for password in &bad {
        let (s, body) = token_answer(
            &kiln,
            "service=kiln&scope=repository:red/app:pull",
            Some(password),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    }
    let resp = kiln
        .http
        .get(format!("{}/registry/token?service=kiln", kiln.url))
        .header("Authorization", "Bearer kiln_something")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Another service: 400 naming the field.
    let (s, body) = token_answer(&kiln, "service=elsewhere", Some(&red_write)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "service", "{body}");

    // Garbage scopes are left out, never a failure.
    let (s, body) = token_answer(
        &kiln,
        "scope=%00%FF&scope=repository:&scope=:::&scope=repository:RED/x:pull&scope=registry:catalog:*",
        Some(&red_write),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["claims"]["access"], json!([]));

    // No credentials: no access by default.
    let (s, body) = token_answer(&kiln, "service=kiln&scope=repository:red/app:pull", None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["claims"]["access"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_pulls_when_enabled_and_never_pushes() {
    let (registry, kiln) =
        Kiln::start_with_registry_token_auth(&[("KILN_REGISTRY_ANONYMOUS_PULL", "true")]).await;
    namespaces(&kiln, &["red"]).await;
    let image = registry.image("red/open", "v1");
    local_image(&image, "open").await;
    let admin = DockerCli::new();
    assert!(admin.login(&registry, ADMIN_TOKEN).await.ok);
    let pushed = admin.push(&image).await;
    assert!(pushed.ok, "{}", pushed.output);

    let anonymous = DockerCli::new();
    let pulled = anonymous.pull(&image).await;
    assert!(pulled.ok, "an anonymous pull: {}", pulled.output);
    let other = registry.image("red/open", "v2");
    assert!(anonymous.run(&["tag", &image, &other], None).await.ok);
    let refused = anonymous.push(&other).await;
    assert!(!refused.ok, "an anonymous push worked: {}", refused.output);
    let (s, body) = token_answer(
        &kiln,
        "service=kiln&scope=repository:red/open:pull,push,delete&scope=registry:catalog:*",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        body["claims"]["access"],
        json!([{"type": "repository", "name": "red/open", "actions": ["pull"]}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kilns_builds_syncs_and_deletions_use_tokens_it_issues_itself() {
    let (registry, kiln) = Kiln::start_with_registry_token_auth(&[]).await;
    let base = support::ensure_base_image();
    let git = GitRepo::new();
    git.write(
        "Dockerfile",
        format!("FROM {base}\nRUN echo built > /built\n"),
    );
    git.commit("first");
    git.push("main");
    kiln.ci_repo("acme", "app", &git.clone_url()).await;
    let rule = kiln
        .rule(
            "acme",
            "app",
            json!({"type": "branch", "name": "main", "overwrite": true}),
        )
        .await;

    // A build pushes through the daemon with a token kiln signed for acme/app.
    let (s, build) = kiln
        .post(
            &format!("/namespaces/acme/repos/app/rules/{rule}/builds"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{build}");
    let id = build["id"].as_str().unwrap().to_string();
    let build = kiln.wait_build(&id).await;
    let log = kiln.log(&id).await;
    assert_eq!(build["status"], "succeeded", "{build}\n{log}");
    let (s, versions) = kiln.get("/namespaces/acme/repos/app/versions").await;
    assert_eq!(s, StatusCode::OK, "{versions}");
    assert_eq!(versions[0]["tag"], "main", "{versions}");

    // The local store loses the image: the next build pulls it back as its layer cache, through
    // the daemon with a token kiln signed.
    let built = build["image"].as_str().unwrap().to_string();
    support::docker_async(&["rmi", &built]).await;
    let (s, again) = kiln
        .post(
            &format!("/namespaces/acme/repos/app/rules/{rule}/builds"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{again}");
    let again_id = again["id"].as_str().unwrap().to_string();
    let again = kiln.wait_build(&again_id).await;
    let log = kiln.log(&again_id).await;
    assert_eq!(again["status"], "succeeded", "{again}\n{log}");
    assert!(log.contains("Layer cache: pulled"), "{log}");

    // A plain `docker push` kiln was not told about (no notifications here): the sync reads the
    // catalog, tags and digests with its own tokens and records it.
    let by_hand = registry.image("acme/app", "by-hand");
    local_image(&by_hand, "by-hand").await;
    let admin = DockerCli::new();
    assert!(admin.login(&registry, ADMIN_TOKEN).await.ok);
    let pushed = admin.push(&by_hand).await;
    assert!(pushed.ok, "{}", pushed.output);
    let (s, report) = kiln.post("/registry/sync", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["errors"], json!([]), "{report}");
    assert_eq!(report["versions_added"], 1, "{report}");
    let (_, versions) = kiln.get("/namespaces/acme/repos/app/versions").await;
    let tags: Vec<&str> = versions
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["tag"].as_str())
        .collect();
    assert!(
        tags.contains(&"by-hand") && tags.contains(&"main"),
        "{versions}"
    );

    // Deleting the repository deletes its registry tags, with a token for `delete`.
    let (s, deleted) = kiln.delete("/namespaces/acme/repos/app?confirm=app").await;
    assert_eq!(s, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["registry_not_deleted"], json!([]), "{deleted}");
    let mut gone: Vec<&str> = deleted["registry_deleted"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    gone.sort();
    assert_eq!(gone, ["by-hand", "main"], "{deleted}");
    let pulled = admin.pull(&by_hand).await;
    assert!(!pulled.ok, "deleted, yet pulled: {}", pulled.output);
}

/// `kiln registry-auth init` (the real binary) makes the key once, private, and prints the
/// certificate's path; the registry settings of `examples/kiln.toml` are read as documented.
#[test]
fn registry_auth_init_makes_the_key_once_and_prints_the_certificate() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().expect("temp dir");
    let init = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["registry-auth", "init"])
            .env("KILN_DATA_DIR", data.path())
            .env_remove("KILN_CONFIG")
            .output()
            .expect("run kiln registry-auth init");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_string()
    };
    let printed = init();
    let cert = data.path().join("registry-token.pem");
    assert_eq!(printed, cert.display().to_string());
    let pem = std::fs::read_to_string(&cert).expect("the certificate");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let key_path = data.path().join("registry-token.key");
    let key = std::fs::read(&key_path).expect("the key");
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(init(), printed);
    assert_eq!(std::fs::read(&key_path).unwrap(), key, "the key is kept");
    assert_eq!(std::fs::read_to_string(&cert).unwrap(), pem);

    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kiln.toml");
    let vars: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let config = kiln::Config::load(Some(&example), &vars).expect("examples/kiln.toml");
    assert_eq!(config.registry_token_issuer, "kiln");
    assert_eq!(config.registry_token_service, "kiln");
    assert_eq!(config.registry_token_lifetime, Duration::from_secs(300));
    assert!(!config.registry_anonymous_pull);
}

/// A build whose Dockerfile starts `FROM` an image in kiln's registry pulls it with a token kiln
/// signs for the build's namespace: its own namespace's images, never another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_pull_base_images_of_their_own_namespace_only() {
    let (registry, kiln) = Kiln::start_with_registry_token_auth(&[]).await;
    let busybox = support::ensure_base_image();
    namespaces(&kiln, &["red", "blue"]).await;
    let base = registry.image("red/base", "1");
    let admin = DockerCli::new();
    assert!(admin.run(&["tag", busybox, &base], None).await.ok);
    assert!(admin.login(&registry, ADMIN_TOKEN).await.ok);
    let pushed = admin.push(&base).await;
    assert!(pushed.ok, "{}", pushed.output);
    // Only the registry has it under that name now: the build must pull it.
    let removed = admin.run(&["image", "rm", &base], None).await;
    assert!(removed.ok, "{}", removed.output);

    let git = GitRepo::new();
    git.write(
        "Dockerfile",
        format!("FROM {base}\nRUN echo on a base from the kiln registry\n"),
    );
    git.commit("from kiln's registry");
    git.push("main");
    // blue first: once red's build pulled the image, the daemon's store holds it for every build
    // (the daemon's images are shared; registry tokens guard the registry, not that store).
    let mut outcomes = Vec::new();
    for ns in ["blue", "red"] {
        kiln.ci_repo(ns, "app", &git.clone_url()).await;
        let rule = kiln
            .rule(ns, "app", json!({"type": "branch", "name": "main"}))
            .await;
        let (s, build) = kiln
            .post(
                &format!("/namespaces/{ns}/repos/app/rules/{rule}/builds"),
                json!({}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{build}");
        let id = build["id"].as_str().unwrap().to_string();
        let build = kiln.wait_build(&id).await;
        outcomes.push((build, kiln.log(&id).await));
    }
    let (red, red_log) = &outcomes[1];
    assert_eq!(red["status"], "succeeded", "{red}\n{red_log}");
    let (blue, blue_log) = &outcomes[0];
    assert_eq!(blue["status"], "failed", "{blue}\n{blue_log}");
    let reason = blue.to_string() + blue_log;
    assert!(
        reason.contains("denied") || reason.contains("unauthorized"),
        "{blue}\n{blue_log}"
    );
}
