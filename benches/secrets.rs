//! What encrypting secrets costs on the paths that use them. Run on demand:
//! `cargo bench --bench secrets` (no Docker needed).
//!
//! - one value sealed and opened (ChaCha20-Poly1305);
//! - the hook path's source index loaded with 1,000 sources (every secret decrypted once per load),
//!   then a delivery's candidates looked up and verified against them (no decryption at all);
//! - masking a build log line with 1,000 sources' secrets known (3 forms or more each).

use std::time::{Duration, Instant};

use kiln::secrets::{Cipher, SecretKey, cipher::place, mask};

const SOURCES: usize = 1_000;

fn per_op(total: Duration, n: usize) -> String {
    let ns = total.as_nanos() as f64 / n as f64;
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

#[tokio::main]
async fn main() {
    let cipher = Cipher::new(&SecretKey::generate());
    let at = place("sources.webhook_secret", "r1");
    let n = 100_000;
    let started = Instant::now();
    let mut sealed = String::new();
    for _ in 0..n {
        sealed = cipher.seal("a-webhook-secret-of-32-characters", &at);
    }
    println!(
        "seal one secret:            {}",
        per_op(started.elapsed(), n)
    );
    let started = Instant::now();
    for _ in 0..n {
        cipher.open(&sealed, &at).unwrap();
    }
    println!(
        "open one secret:            {}",
        per_op(started.elapsed(), n)
    );

    // 1,000 sources in a real database.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("kiln.db").display());
    let db = kiln::db::connect(&url).await.unwrap();
    sqlx::query("INSERT INTO namespaces (id, name, created_at) VALUES ('n1', 'acme', '2026-01-01T00:00:00.000000Z')")
        .execute(&db)
        .await
        .unwrap();
    for i in 0..SOURCES {
        let id = format!("r{i}");
        sqlx::query(
            "INSERT INTO repositories (id, namespace_id, name, created_at, updated_at) \
             VALUES (?, 'n1', ?, '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
        )
        .bind(&id)
        .bind(format!("repo-{i}"))
        .execute(&db)
        .await
        .unwrap();
        let clone_url = format!("https://github.com/acme/repo-{i}.git");
        let secret = format!("bench-webhook-secret-{i:06}");
        let credentials = format!("kiln-bot:ghp_benchToken{i:06}");
        kiln::db::sources::upsert(
            &db,
            &cipher,
            &kiln::db::sources::NewSource {
                repository_id: &id,
                provider: "github",
                clone_url: &clone_url,
                match_url: &kiln::forge::normalize_url(&clone_url),
                webhook_secret: &secret,
                credentials: Some(&credentials),
                repository: None,
            },
        )
        .await
        .unwrap();
    }
    let loads = 20;
    let started = Instant::now();
    for _ in 0..loads {
        let index = kiln::source_index::SourceIndex::default();
        index
            .candidates(
                &db,
                &cipher,
                "github",
                &["https://github.com/acme/repo-1".into()],
            )
            .await
            .unwrap();
    }
    println!(
        "source index load, {SOURCES} sources (2,000 secrets decrypted): {}",
        per_op(started.elapsed(), loads)
    );
    let index = kiln::source_index::SourceIndex::default();
    let urls = ["https://github.com/acme/repo-500".to_string()];
    index
        .candidates(&db, &cipher, "github", &urls)
        .await
        .unwrap();
    let body = vec![b'x'; 8 * 1024];
    let signature = kiln::forge::github::sign(b"bench-webhook-secret-000500", &body);
    let deliveries = 10_000;
    let started = Instant::now();
    for _ in 0..deliveries {
        let found = index
            .candidates(&db, &cipher, "github", &urls)
            .await
            .unwrap();
        assert!(found.iter().any(|s| kiln::forge::github::verify_signature(
            s.webhook_secret.as_bytes(),
            &body,
            &signature
        )));
    }
    println!(
        "one 8 KB delivery routed and verified (index loaded): {}",
        per_op(started.elapsed(), deliveries)
    );

    let line = "Step 3/4 : RUN make -j4 && ./configure --prefix=/usr/local && echo done 0123456789";
    let lines = 100_000;
    let started = Instant::now();
    for _ in 0..lines {
        std::hint::black_box(mask::mask(line));
    }
    println!(
        "mask a log line, {SOURCES} sources' secrets known, none in it: {}",
        per_op(started.elapsed(), lines)
    );
    let with = format!("{line} bench-webhook-secret-000500");
    let started = Instant::now();
    for _ in 0..lines {
        std::hint::black_box(mask::mask(&with));
    }
    println!(
        "mask a log line holding one of them:                  {}",
        per_op(started.elapsed(), lines)
    );
    let started = Instant::now();
    mask::register("one-more-secret-registered");
    println!(
        "register one more secret (the pattern rebuilt): {}",
        per_op(started.elapsed(), 1)
    );
}
