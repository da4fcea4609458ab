//! Secrets are masked wherever they could surface, with the real `kiln` binary (`KILN_LOG=trace`),
//! dockerd, registry, a git server asking for credentials and a notification receiver:
//!
//! - a Dockerfile echoing a build arg that holds the source's git password shows `***` in the
//!   build log;
//! - a build whose error message quotes a secret (a `FROM` naming it) stores `***` in its error;
//! - the trace output of the whole run (hook delivery, fetch with credentials, build, signed
//!   notification) holds none of the secrets;
//! - the database files left behind hold none of the secrets kiln keeps: they are encrypted.

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::json;
use sha2::Sha256;
use support::kiln_process::KilnProcess;
use support::{GitHttpServer, GitRepo, RecordingServer, Registry};

/// The git server's password for `kiln-bot`: kept by kiln as the source's credentials.
const GIT_PASSWORD: &str = "ghp_maskTestGitPassword0123456789";
/// The source's webhook secret.
const HOOK_SECRET: &str = "mask-test-hook-secret-7f3a9c2e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_masked_in_logs_errors_and_trace_output_and_encrypted_on_disk() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let receiver = RecordingServer::start().await;
    let subscription_secret = format!("whsec_{}", STANDARD.encode(rand::random::<[u8; 32]>()));

    let git = GitRepo::named("masked");
    git.write(
        "Dockerfile",
        format!(
            "FROM {base}\nARG TOKEN\n\
             RUN echo \"token=$TOKEN\" && echo \"run {}\"\n",
            git.clone_url()
        ),
    );
    let sha = git.commit("echo the secrets");
    git.push("main");
    // A build whose error quotes the secret: its base image is named after it (and does not exist).
    git.branch("broken");
    git.checkout("broken");
    git.write(
        "Dockerfile",
        format!("ARG TOKEN\nFROM {}/acme/missing:$TOKEN\n", registry.addr),
    );
    let broken_sha = git.commit("a base image named after the secret");
    git.push("broken");

    let server =
        GitHttpServer::start(git.bare.parent().unwrap(), Some(("kiln-bot", GIT_PASSWORD))).await;
    let plain_url = format!("{}/masked.git", server.url);
    let with_credentials = format!("http://kiln-bot:{GIT_PASSWORD}@{}/masked.git", server.addr);

    let mut kiln = KilnProcess::start(
        &registry,
        &[
            ("KILN_LOG", "trace"),
            ("KILN_WEBHOOK_ALLOW", "127.0.0.1"),
            ("KILN_GIT_ALLOW", "127.0.0.1"),
        ],
    )
    .await;
    kiln.post("/namespaces", json!({"name": "acme"})).await;
    kiln.post("/namespaces/acme/repos", json!({"name": "masked"}))
        .await;
    let (s, linked) = kiln
        .put(
            "/namespaces/acme/repos/masked/source",
            json!({"provider": "github", "clone_url": with_credentials, "webhook_secret": HOOK_SECRET}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{linked}");
    let build_args = json!({"TOKEN": GIT_PASSWORD});
    for branch in ["main", "broken"] {
        let (s, rule) = kiln
            .post(
                "/namespaces/acme/repos/masked/rules",
                json!({"type": "branch", "name": branch, "build_args": build_args}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{rule}");
    }
    let (s, hook) = kiln
        .post(
            "/namespaces/acme/repos/masked/webhooks",
            json!({"name": "receiver", "url": receiver.url, "secret": subscription_secret,
                   "events": ["build.succeeded"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");

    // A signed push (the hook verified against the encrypted secret), a fetch with the
    // credentials, a build echoing both secrets.
    let builds = kiln
        .push_hook(HOOK_SECRET, &plain_url, "refs/heads/main", &sha)
        .await;
    assert_eq!(builds.len(), 1);
    let build = kiln.wait_build(&builds[0]).await;
    let log = kiln.log(&builds[0]).await;
    assert_eq!(build["status"], "succeeded", "{build}\n{log}");
    assert!(
        log.lines().any(|l| support::step_output(l) == "token=***"),
        "{log}"
    );

    // The failing build: its error names the base image, the secret masked in it.
    let broken = kiln
        .push_hook(HOOK_SECRET, &plain_url, "refs/heads/broken", &broken_sha)
        .await;
    let failed = kiln.wait_build(&broken[0]).await;
    let failed_log = kiln.log(&broken[0]).await;
    assert_eq!(failed["status"], "failed", "{failed}\n{failed_log}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("acme/missing:***"), "{error}");

    // The notification of the succeeded build is signed with the subscription's secret, which
    // kiln decrypted to sign it.
    let delivered = receiver
        .wait_for(
            "the build.succeeded delivery",
            Duration::from_secs(60),
            |r| r.body_text().contains("build.succeeded"),
        )
        .await;
    let key = STANDARD
        .decode(subscription_secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let id = delivered.header("webhook-id").unwrap();
    let ts = delivered.header("webhook-timestamp").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&delivered.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(
        delivered.header("webhook-signature"),
        Some(expected.as_str())
    );

    let (_, deliveries) = kiln
        .get(&format!(
            "/namespaces/acme/repos/masked/webhooks/{}/deliveries",
            hook["id"].as_str().unwrap()
        ))
        .await;
    // (The builds' `settings.build_args` show what the rules say: this test put the secrets there
    // itself. Their errors are what kiln wrote.)
    let answers = [
        linked.to_string(),
        hook.to_string(),
        error.to_string(),
        deliveries.to_string(),
        kiln.get("/namespaces/acme/repos/masked/source")
            .await
            .1
            .to_string(),
        kiln.get("/namespaces/acme/repos/masked/webhooks")
            .await
            .1
            .to_string(),
    ];
    let secrets = [
        GIT_PASSWORD,
        HOOK_SECRET,
        subscription_secret.as_str(),
        subscription_secret.strip_prefix("whsec_").unwrap(),
    ];
    for secret in secrets {
        for text in [&log, &failed_log] {
            assert!(!text.contains(secret), "{secret} in a build log:\n{text}");
        }
        for answer in &answers {
            assert!(
                !answer.contains(secret),
                "{secret} in an API answer: {answer}"
            );
        }
    }

    // Stopped: the trace output of the whole run and the database files hold none of them.
    kiln.signal("TERM");
    assert!(kiln.wait_exit(Duration::from_secs(90)).await.success());
    let output = kiln.output();
    assert!(
        output.contains("TRACE") && output.contains("DEBUG"),
        "kiln logged at trace level"
    );
    assert!(
        output.contains("***"),
        "kiln's trace output masked at least one secret"
    );
    let mut files = vec![("kiln's output", output.into_bytes())];
    for name in ["kiln.db", "kiln.db-wal", "kiln.db-shm"] {
        if let Ok(bytes) = std::fs::read(kiln.data_dir.join(name)) {
            files.push((name, bytes));
        }
    }
    // The git password is also in the rules' build args, as this test wrote them: plain
    // configuration, not a secret kiln keeps (tests/secrets.rs greps a database without it).
    for secret in &secrets[1..] {
        for (what, bytes) in &files {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} in {what}"
            );
        }
    }
}
