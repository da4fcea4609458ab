//! Migrations only move forward and keep what is there: apply the first one, fill it with sample rows,
//! apply the rest, and read everything back through kiln's own queries.

use sqlx::sqlite::SqliteConnectOptions;
use std::str::FromStr;

/// A new database file with the migrations up to `version` applied: its dir, URL and a pool.
async fn migrated_to(version: i64) -> (tempfile::TempDir, String, sqlx::SqlitePool) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("kiln.db").display());
    let pool = sqlx::SqlitePool::connect_with(
        SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true),
    )
    .await
    .unwrap();
    kiln::db::MIGRATOR.run_to(version, &pool).await.unwrap();
    (dir, url, pool)
}

#[tokio::test]
async fn every_migration_applies_over_a_database_holding_rows() {
    let (_dir, url, pool) = migrated_to(1).await;

    for sql in [
        "INSERT INTO namespaces (id, name, created_at) VALUES ('n1', 'acme', '2026-01-01T00:00:00.000000Z')",
        "INSERT INTO repositories (id, namespace_id, name, summary, created_at, updated_at) \
         VALUES ('r1', 'n1', 'api', 'The API', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
        "INSERT INTO sources (repository_id, provider, clone_url, match_url, webhook_secret, created_at) \
         VALUES ('r1', 'github', 'https://github.com/acme/api.git', 'https://github.com/acme/api', 's3cret-s3cret-s3cret', '2026-01-01T00:00:00.000000Z')",
        "INSERT INTO rules (id, repository_id, kind, name, dockerfile, overwrite, created_at, updated_at) \
         VALUES ('ru1', 'r1', 'branch', 'main', 'Dockerfile', 1, '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
        "INSERT INTO events (id, repository_id, provider, delivery_id, kind, git_ref, commit_sha, outcome, plan, payload, received_at) \
         VALUES ('e1', 'r1', 'github', 'd1', 'push', 'refs/heads/main', 'abc', '1 build', '[]', x'7b7d', '2026-01-01T00:00:00.000000Z')",
        "INSERT INTO builds (id, repository_id, rule_id, event_id, trigger, git_ref, commit_sha, tag, image, dockerfile, status, digest, created_at) \
         VALUES ('b1', 'r1', 'ru1', 'e1', 'push', 'refs/heads/main', 'abc', 'main', 'localhost:5000/acme/api:main', 'Dockerfile', 'succeeded', 'sha256:00', '2026-01-01T00:00:00.000000Z')",
        "INSERT INTO build_log_lines (build_id, seq, line) VALUES ('b1', 0, 'Step 1/1 : FROM scratch')",
        "INSERT INTO versions (repository_id, tag, digest, source, build_id, pushed_at) \
         VALUES ('r1', 'main', 'sha256:00', 'build', 'b1', '2026-01-01T00:00:00.000000Z')",
        "INSERT INTO tokens (id, name, role, token_hash, created_at) VALUES ('t1', 'ci', 'write', 'hash', '2026-01-01T00:00:00.000000Z')",
    ] {
        sqlx::query(sql)
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    kiln::db::MIGRATOR.run(&pool).await.unwrap();
    let applied: Vec<(i64,)> =
        sqlx::query_as("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(applied.len(), kiln::db::MIGRATOR.iter().count());
    pool.close().await;

    // kiln opens it as it would at start (migrations already applied: nothing to do) and reads it all.
    let db = kiln::db::connect(&url).await.unwrap();
    let repo = kiln::db::repos::by_name(&db, "acme", "api")
        .await
        .unwrap()
        .expect("repository kept");
    assert_eq!(
        (repo.summary.as_str(), repo.has_source, repo.hidden),
        ("The API", true, false)
    );
    let build = kiln::db::builds::get(&db, "b1")
        .await
        .unwrap()
        .expect("build kept");
    assert_eq!(
        (build.status.as_str(), build.tag.as_deref(), build.attempt),
        ("succeeded", Some("main"), 1),
        "a build from before attempts were counted ran once"
    );
    assert_eq!(
        kiln::db::builds::log_lines(&db, "b1", -1)
            .await
            .unwrap()
            .len(),
        1
    );
    let events = kiln::db::events::list(
        &db,
        &repo.id,
        &kiln::db::Page {
            limit: 10,
            cursor: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (events.len(), events[0].duplicates),
        (1, 0),
        "new columns take their default"
    );
    let versions = kiln::db::versions::list(&db, &repo.id, true).await.unwrap();
    assert_eq!(versions[0].digest, "sha256:00");
    assert!(
        kiln::db::versions::history(&db, &repo.id, "main")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        kiln::db::webhooks::list(&db, &repo.id)
            .await
            .unwrap()
            .is_empty()
    );
    let rule = &kiln::db::rules::list(&db, &repo.id).await.unwrap()[0];
    assert_eq!(rule.name, "main");
    // 0005: rules and builds stored before build settings have the defaults.
    assert_eq!(
        rule.settings(),
        kiln::domain::build_settings::BuildSettings::default()
    );
    assert_eq!(
        build.settings(),
        kiln::domain::build_settings::BuildSettings::default()
    );
    assert!(
        kiln::db::builds::extra_tags(&db, "b1")
            .await
            .unwrap()
            .is_empty()
    );
    // 0007: no schedule, no path filters; a build from before has no `before`.
    assert_eq!(rule.schedule, None);
    assert!(rule.path_filter().is_empty());
    assert_eq!(build.before_sha, None);
    assert_eq!(kiln::db::tokens::list(&db).await.unwrap().len(), 1);
}

/// Sources stored before credentials were kept apart hold them in `clone_url`: kiln moves them to
/// their own column at start (`App::open`), once, and leaves every other URL as it is.
#[tokio::test]
async fn credentials_stored_in_clone_urls_are_moved_apart_at_start() {
    let (_dir, url, pool) = migrated_to(3).await;
    sqlx::query("INSERT INTO namespaces (id, name, created_at) VALUES ('n1', 'acme', '2026-01-01T00:00:00.000000Z')")
        .execute(&pool)
        .await
        .unwrap();
    let sources = [
        ("r1", "https://kiln-bot:s3cr3t@github.com/acme/a.git"),
        ("r2", "http://ghp_token%2F1@git.local:3000/acme/b"),
        ("r3", "https://github.com/acme/x@y.git"),
        ("r4", "git@github.com:acme/d.git"),
        ("r5", "/srv/git/e.git"),
        ("r6", "ssh://git@github.com/acme/f.git"),
    ];
    for (id, clone_url) in sources {
        sqlx::query(
            "INSERT INTO repositories (id, namespace_id, name, created_at, updated_at) \
             VALUES (?, 'n1', ?, '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
        )
        .bind(id)
        .bind(format!("repo-{id}"))
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO sources (repository_id, provider, clone_url, match_url, webhook_secret, created_at) \
             VALUES (?, 'github', ?, ?, 's3cret-s3cret-s3cret', '2026-01-01T00:00:00.000000Z')",
        )
        .bind(id)
        .bind(clone_url)
        .bind(kiln::forge::normalize_url(clone_url))
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let want = [
        (
            "r1",
            "https://github.com/acme/a.git",
            Some("kiln-bot:s3cr3t"),
        ),
        ("r2", "http://git.local:3000/acme/b", Some("ghp_token%2F1")),
        ("r3", "https://github.com/acme/x@y.git", None),
        ("r4", "git@github.com:acme/d.git", None),
        ("r5", "/srv/git/e.git", None),
        ("r6", "ssh://git@github.com/acme/f.git", None),
    ];
    let cipher = kiln::secrets::Cipher::new(&kiln::secrets::SecretKey::generate());
    // Twice: the second start finds nothing to do and changes nothing.
    for moved in [2, 0] {
        let db = kiln::db::connect(&url).await.unwrap();
        let urls = kiln::db::sources::move_embedded_credentials(&db)
            .await
            .unwrap();
        assert_eq!(urls.len(), moved, "{urls:?}");
        // As kiln does next at start: the plaintext secrets are encrypted.
        let key = kiln::secrets::key::KeySource::Configured;
        let done = kiln::secrets::upgrade::seal_plaintext(&db, &cipher, &key)
            .await
            .unwrap();
        assert_eq!(done.encrypted, if moved > 0 { 8 } else { 0 }, "{done:?}");
        for (id, clone_url, credentials) in want {
            let source = kiln::db::sources::for_repo(&db, &cipher, id)
                .await
                .unwrap()
                .expect("source kept");
            assert_eq!(source.clone_url, clone_url, "{id}");
            assert_eq!(source.credentials.as_deref(), credentials, "{id}");
            assert_eq!(source.webhook_secret, "s3cret-s3cret-s3cret");
            assert!(!format!("{source:?}").contains("s3cr3t"), "{source:?}");
        }
        // Hooks still find them by their normalized URL.
        let found = kiln::source_index::SourceIndex::default()
            .candidates(
                &db,
                &cipher,
                "github",
                &["https://github.com/acme/a".to_string()],
            )
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].repository_id, "r1");
        db.close().await;
    }
}
