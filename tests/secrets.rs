//! Secrets at rest, with the real kiln over a real SQLite file: sources' webhook secrets and git
//! credentials and webhooks' secrets are stored encrypted (`enc:v1:`) with the key of
//! `KILN_SECRET_KEY` or `{data_dir}/secret.key`; the database file holds none of them; a copy of it
//! opens only with its key (kiln refuses to start otherwise, naming the cause); an older database's
//! plaintext secrets are encrypted at start; `kiln secrets rotate` re-encrypts them with a new key;
//! no API answer or console page shows them after creation.

mod support;

use std::collections::HashMap;
use std::path::Path;

use reqwest::StatusCode;
use serde_json::json;
use support::Registry;
use support::console::Console;
use support::kiln::{ADMIN_TOKEN, Kiln};

const ZERO: &str = "0000000000000000000000000000000000000000";
const HOOK_SECRET: &str = "at-rest-hook-secret-5b1d0e8f";
const GIT_TOKEN: &str = "ghp_atRestGitToken0123456789abcd";
const SUBSCRIPTION_SECRET: &str = "whsec_c2VjcmV0cy1hdC1yZXN0LXN1YnNjcmlwdGlvbi1rZXk=";
const URL: &str = "https://github.com/acme/api.git";

/// Every stored secret value, as stored, by `table.column:row`.
async fn stored(db: &sqlx::SqlitePool) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT 'sources.webhook_secret:' || repository_id, webhook_secret FROM sources \
         UNION ALL SELECT 'sources.credentials:' || repository_id, credentials FROM sources \
         WHERE credentials IS NOT NULL \
         UNION ALL SELECT 'webhooks.secret:' || id, secret FROM webhooks",
    )
    .fetch_all(db)
    .await
    .unwrap();
    rows.sort();
    rows
}

/// The database files of a stopped kiln, as bytes.
fn database_files(data_dir: &Path) -> Vec<(String, Vec<u8>)> {
    ["kiln.db", "kiln.db-wal", "kiln.db-shm"]
        .into_iter()
        .filter_map(|name| {
            std::fs::read(data_dir.join(name))
                .ok()
                .map(|b| (name.to_string(), b))
        })
        .collect()
}

fn assert_absent(secrets: &[&str], files: &[(String, Vec<u8>)]) {
    assert!(!files.is_empty());
    for secret in secrets {
        for (name, bytes) in files {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} found in {name}"
            );
        }
    }
}

/// The test defaults of `Kiln::start`, over `data_dir`, with `extra` on top.
fn config(registry: &Registry, data_dir: &Path, extra: &[(&str, &str)]) -> kiln::Config {
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("KILN_LISTEN".into(), "127.0.0.1:0".into());
    vars.insert("KILN_DATA_DIR".into(), data_dir.display().to_string());
    vars.insert("KILN_REGISTRY".into(), registry.addr.clone());
    vars.insert("KILN_ADMIN_TOKEN".into(), ADMIN_TOKEN.into());
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    kiln::Config::load(None, &vars).unwrap()
}

/// Stops an in-process kiln cleanly (its database closed and checkpointed), keeping its data dir.
async fn stop(kiln: Kiln) -> tempfile::TempDir {
    let Kiln {
        mut server,
        data_dir,
        ..
    } = kiln;
    server.shutdown().await;
    drop(server);
    data_dir
}

/// A push of `main` signed with `secret`: the status kiln answers.
async fn push(kiln: &Kiln, delivery: &str, secret: &str) -> StatusCode {
    let payload = support::github_push_payload(
        URL,
        "refs/heads/main",
        ZERO,
        "1111111111111111111111111111111111111111",
        false,
    );
    kiln.github_hook("push", delivery, secret, &payload).await.0
}

/// The repository `acme/api` with a source (webhook secret and credentials given) and a webhook.
async fn link(kiln: &Kiln) -> String {
    kiln.post("/namespaces", json!({"name": "acme"})).await;
    kiln.post("/namespaces/acme/repos", json!({"name": "api"}))
        .await;
    let (s, source) = kiln
        .put(
            "/namespaces/acme/repos/api/source",
            json!({"provider": "github", "webhook_secret": HOOK_SECRET,
                   "clone_url": format!("https://kiln-bot:{GIT_TOKEN}@github.com/acme/api.git")}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{source}");
    let (s, hook) = kiln
        .post(
            "/namespaces/acme/repos/api/webhooks",
            json!({"name": "ci", "url": "https://receiver.example/hook", "secret": SUBSCRIPTION_SECRET}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");
    hook["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_stored_encrypted_and_a_copied_database_opens_only_with_its_key() {
    use std::os::unix::fs::PermissionsExt;
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let key_file = kiln.data_dir.path().join("secret.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the key file is its owner's only");
    let key = std::fs::read_to_string(&key_file).unwrap();
    let hook_id = link(&kiln).await;

    let rows = stored(&kiln.server.app.db).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (place, value) in &rows {
        assert!(value.starts_with("enc:v1:"), "{place}: {value}");
    }
    // Encrypted, yet used: a push signed with the secret is verified.
    assert_eq!(
        push(&kiln, "at-rest-1", HOOK_SECRET).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        push(&kiln, "at-rest-2", "another-secret-entirely").await,
        StatusCode::UNAUTHORIZED
    );

    // Never shown after creation: API answers and console pages.
    let secrets = [HOOK_SECRET, GIT_TOKEN, SUBSCRIPTION_SECRET];
    let mut shown = Vec::new();
    for path in [
        "/namespaces/acme/repos/api/source".to_string(),
        "/namespaces/acme/repos/api".into(),
        "/namespaces/acme/repos".into(),
        "/namespaces/acme/repos/api/webhooks".into(),
        format!("/namespaces/acme/repos/api/webhooks/{hook_id}"),
        "/namespaces/acme/repos/api/events".into(),
    ] {
        let (s, body) = kiln.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
        shown.push((path, body.to_string()));
    }
    let console = Console::sign_in(&kiln.url, ADMIN_TOKEN).await;
    for path in [
        "/repos/acme/api/rules".to_string(),
        "/repos/acme/api/webhooks".into(),
        format!("/repos/acme/api/webhooks/{hook_id}"),
        format!("/repos/acme/api/webhooks/{hook_id}/edit"),
        "/repos/acme/api".into(),
    ] {
        let page = console.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.html);
        shown.push((path, page.html));
    }
    for secret in secrets {
        for (path, text) in &shown {
            assert!(!text.contains(secret), "{secret} shown by {path}: {text}");
        }
    }

    // The files left behind hold no secret.
    let data_dir = stop(kiln).await;
    assert_absent(&secrets, &database_files(data_dir.path()));

    // The database copied without its key: kiln refuses to start, naming the row and the key, and
    // leaves no key file behind (so the right one can be put there).
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(data_dir.path().join("kiln.db"), copy.path().join("kiln.db")).unwrap();
    let err = kiln::Server::start(config(&registry, copy.path(), &[]))
        .await
        .err()
        .expect("kiln refuses to start without the key");
    let err = format!("{err:#}");
    assert!(
        err.contains("cannot be decrypted with this key")
            && err.contains("secret.key (created now) is not the key"),
        "{err}"
    );
    assert!(!copy.path().join("secret.key").exists());
    // Another key: the same.
    let other = kiln::secrets::SecretKey::generate().encode();
    let err = kiln::Server::start(config(
        &registry,
        copy.path(),
        &[("KILN_SECRET_KEY", &other)],
    ))
    .await
    .err()
    .expect("kiln refuses to start with another key");
    assert!(
        format!("{err:#}").contains("KILN_SECRET_KEY is not the key"),
        "{err:#}"
    );
    // A bad key: a clear start-up error.
    let err = kiln::Config::load(
        None,
        &HashMap::from([("KILN_SECRET_KEY".to_string(), "c2hvcnQ=".to_string())]),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "KILN_SECRET_KEY: must be 32 bytes (base64 or 64 hex digits), got 5 bytes"
    );

    // With its key (given as KILN_SECRET_KEY), the copy works: hooks verify, credentials are there.
    let copied = Kiln::start_in(&registry, &[("KILN_SECRET_KEY", key.trim())], copy).await;
    assert_eq!(
        push(&copied, "at-rest-3", HOOK_SECRET).await,
        StatusCode::ACCEPTED
    );
    let app = &copied.server.app;
    let sources = kiln::db::sources::all(&app.db, &app.secrets).await.unwrap();
    assert_eq!(
        sources[0].credentials.as_deref(),
        Some(format!("kiln-bot:{GIT_TOKEN}").as_str())
    );
    assert_eq!(
        kiln::db::webhooks::signing_secret(&app.db, &app.secrets, &hook_id)
            .await
            .unwrap()
            .as_deref(),
        Some(SUBSCRIPTION_SECRET)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_secrets_of_an_older_database_are_encrypted_at_start() {
    use sqlx::sqlite::SqliteConnectOptions;
    use std::str::FromStr;
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
    kiln::db::MIGRATOR.run(&pool).await.unwrap();
    let ts = "2026-01-01T00:00:00.000000Z";
    for (sql, binds) in [
        (
            "INSERT INTO namespaces (id, name, created_at) VALUES ('n1', 'acme', ?)",
            vec![ts],
        ),
        (
            "INSERT INTO repositories (id, namespace_id, name, created_at, updated_at) \
             VALUES ('r1', 'n1', 'api', ?, ?)",
            vec![ts, ts],
        ),
        (
            "INSERT INTO sources (repository_id, provider, clone_url, match_url, webhook_secret, \
             credentials, created_at) VALUES ('r1', 'github', ?, 'https://github.com/acme/api', ?, ?, ?)",
            vec![URL, HOOK_SECRET, &format!("kiln-bot:{GIT_TOKEN}"), ts],
        ),
        (
            "INSERT INTO webhooks (id, repository_id, name, url, secret, created_at, updated_at) \
             VALUES ('w1', 'r1', 'ci', 'https://receiver.example/hook', ?, ?, ?)",
            vec![SUBSCRIPTION_SECRET, ts, ts],
        ),
    ] {
        let mut q = sqlx::query(sql);
        for b in binds {
            q = q.bind(b.to_string());
        }
        q.execute(&pool).await.unwrap();
    }
    pool.close().await;
    let secrets = [HOOK_SECRET, GIT_TOKEN, SUBSCRIPTION_SECRET];

    let kiln = Kiln::start_in(&registry, &[], data_dir).await;
    let first = stored(&kiln.server.app.db).await;
    assert_eq!(first.len(), 3);
    for (place, value) in &first {
        assert!(value.starts_with("enc:v1:"), "{place}: {value}");
    }
    assert_eq!(
        push(&kiln, "older-1", HOOK_SECRET).await,
        StatusCode::ACCEPTED
    );
    let (_, source) = kiln.get("/namespaces/acme/repos/api/source").await;
    assert_eq!(source["has_credentials"], true, "{source}");
    let data_dir = stop(kiln).await;
    // The plaintext values they replaced are overwritten, in the database and its log.
    assert_absent(&secrets, &database_files(data_dir.path()));

    // Idempotent: a second start changes nothing.
    let kiln = Kiln::start_in(&registry, &[], data_dir).await;
    assert_eq!(stored(&kiln.server.app.db).await, first);
    assert_eq!(
        push(&kiln, "older-2", HOOK_SECRET).await,
        StatusCode::ACCEPTED
    );
}

/// `kiln secrets rotate`, the real binary: refused while kiln runs; with kiln stopped, every
/// secret is re-encrypted with a new key that replaces the key file, and kiln starts with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_key_reencrypts_every_secret() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    link(&kiln).await;
    let data_dir_path = kiln.data_dir.path().to_path_buf();
    let rotate = |extra: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
        for (k, _) in std::env::vars() {
            if k.starts_with("KILN_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(["secrets", "rotate"])
            .env("KILN_DATA_DIR", &data_dir_path)
            .envs(extra.iter().copied())
            .output()
            .unwrap()
    };
    let running = rotate(&[]);
    assert!(!running.status.success());
    assert!(
        String::from_utf8_lossy(&running.stderr).contains("is in use by another kiln"),
        "{running:?}"
    );

    let before = stored(&kiln.server.app.db).await;
    let data_dir = stop(kiln).await;
    let old_key = std::fs::read_to_string(data_dir.path().join("secret.key")).unwrap();
    let rotated = rotate(&[]);
    assert!(rotated.status.success(), "{rotated:?}");
    assert_eq!(
        String::from_utf8_lossy(&rotated.stdout),
        format!(
            "kiln: 3 secrets re-encrypted; the new key is in {}\n",
            data_dir.path().join("secret.key").display()
        )
    );
    let new_key = std::fs::read_to_string(data_dir.path().join("secret.key")).unwrap();
    assert_ne!(new_key, old_key);

    // The old key opens nothing any more.
    let err = kiln::Server::start(config(
        &registry,
        data_dir.path(),
        &[("KILN_SECRET_KEY", old_key.trim())],
    ))
    .await
    .err()
    .expect("the old key is refused");
    assert!(format!("{err:#}").contains("is not the key"), "{err:#}");

    let kiln = Kiln::start_in(&registry, &[], data_dir).await;
    let after = stored(&kiln.server.app.db).await;
    for ((place, old), (again, new)) in before.iter().zip(&after) {
        assert_eq!(place, again);
        assert_ne!(old, new, "{place} re-encrypted");
    }
    assert_eq!(
        push(&kiln, "rotated-1", HOOK_SECRET).await,
        StatusCode::ACCEPTED
    );
    let data_dir = stop(kiln).await;

    // With the key in KILN_SECRET_KEY: the database is re-encrypted with KILN_NEW_SECRET_KEY, and
    // kiln starts with it (and only with it) once the variable says so.
    let current = new_key.trim().to_string();
    let next = kiln::secrets::SecretKey::generate().encode();
    let rotated = rotate(&[
        ("KILN_SECRET_KEY", current.as_str()),
        ("KILN_NEW_SECRET_KEY", next.as_str()),
    ]);
    assert!(rotated.status.success(), "{rotated:?}");
    assert!(
        String::from_utf8_lossy(&rotated.stdout).contains("set KILN_SECRET_KEY"),
        "{rotated:?}"
    );
    assert!(!String::from_utf8_lossy(&rotated.stdout).contains(&next));
    assert!(
        kiln::Server::start(config(&registry, data_dir.path(), &[]))
            .await
            .is_err(),
        "the key file's key no longer opens them"
    );
    let kiln = Kiln::start_in(&registry, &[("KILN_SECRET_KEY", next.as_str())], data_dir).await;
    assert_eq!(
        push(&kiln, "rotated-2", HOOK_SECRET).await,
        StatusCode::ACCEPTED
    );
    let data_dir = stop(kiln).await;

    // A rotation stopped between the database's commit and the key file's replacement: the start
    // says where the new key is; moved over the key file, kiln starts.
    let key_file = data_dir.path().join("secret.key");
    let pending = data_dir.path().join("secret.key.new");
    std::fs::write(&pending, format!("{next}\n")).unwrap();
    let err = kiln::Server::start(config(&registry, data_dir.path(), &[]))
        .await
        .err()
        .expect("the key file's key is refused");
    assert!(
        format!("{err:#}").starts_with(&format!(
            "{} exists: a `kiln secrets rotate` may have stopped",
            pending.display()
        )),
        "{err:#}"
    );
    std::fs::rename(&pending, &key_file).unwrap();
    let kiln = Kiln::start_in(&registry, &[], data_dir).await;
    assert_eq!(
        push(&kiln, "rotated-3", HOOK_SECRET).await,
        StatusCode::ACCEPTED
    );
    let data_dir = stop(kiln).await;
    assert_absent(
        &[HOOK_SECRET, GIT_TOKEN, SUBSCRIPTION_SECRET],
        &database_files(data_dir.path()),
    );
}

/// A receiver that answers every request 500 with `body` (a misconfigured receiver quoting the
/// secret it was given, as some error pages do). Returns its URL.
async fn quoting_receiver(body: String) -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                if support::read_request(&mut stream)
                    .await
                    .ok()
                    .flatten()
                    .is_none()
                {
                    return;
                }
                let head = format!(
                    "HTTP/1.1 500 Oops\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    url
}

/// A delivery's access record keeps the receiver's answer, and kiln's error, with every secret kiln
/// knows masked: a receiver that quotes the subscription's secret (and the source's) back is stored
/// as `***`, in the API's delivery record and in the console's delivery page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answer_quoting_a_secret_is_stored_masked() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[("KILN_WEBHOOK_ALLOW", "127.0.0.1")]).await;
    link(&kiln).await;
    let url = quoting_receiver(format!(
        "signature mismatch: I expected a signature with {SUBSCRIPTION_SECRET}; \
         my other key is {HOOK_SECRET}"
    ))
    .await;
    let (s, hook) = kiln
        .post(
            "/namespaces/acme/repos/api/webhooks",
            json!({"name": "quoting", "url": url, "secret": SUBSCRIPTION_SECRET}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");
    let id = hook["id"].as_str().unwrap();
    let (s, d) = kiln
        .post(
            &format!("/namespaces/acme/repos/api/webhooks/{id}/test"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["response"]["status"], 500, "{d}");
    let delivery = d["id"].as_str().unwrap();
    let (s, record) = kiln.get(&format!("/deliveries/{delivery}")).await;
    assert_eq!(s, StatusCode::OK, "{record}");
    let answer = record["response"]["body"].as_str().unwrap();
    assert_eq!(
        answer, "signature mismatch: I expected a signature with ***; my other key is ***",
        "{record}"
    );
    assert!(
        record["error"].as_str().is_some_and(|e| e.contains("500")),
        "{record}"
    );
    let console = Console::sign_in(&kiln.url, ADMIN_TOKEN).await;
    let page = console.get(&format!("/deliveries/{delivery}")).await;
    assert!(
        page.html.contains("my other key is ***"),
        "the delivery page shows the masked answer"
    );
    for secret in [SUBSCRIPTION_SECRET, HOOK_SECRET] {
        assert!(!record.to_string().contains(secret), "{record}");
        assert!(!page.html.contains(secret), "{secret} on the delivery page");
    }
}
