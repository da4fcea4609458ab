//! A ~300 MB repository (ten 30 MB files no compressor can shrink) built through the real kiln
//! binary, the real dockerd and a real registry: the build succeeds and kiln's peak memory stays
//! far below the context's size (the context streams from the mirror to the daemon, the mirror
//! never holds a second copy of a local source's objects).

mod support;

use serde_json::json;
use support::kiln_process::KilnProcess;
use support::{GitHttpServer, GitRepo, Registry, github_push_payload};

const ZERO: &str = "0000000000000000000000000000000000000000";
const FILES: usize = 10;
const FILE_SIZE: usize = 30 * 1024 * 1024;
/// The ceiling for kiln's peak resident memory during this build.
const PEAK_RSS_LIMIT_KIB: u64 = 150 * 1024;

/// A repository of [`FILES`] files of [`FILE_SIZE`] incompressible bytes and a Dockerfile that
/// copies them and prints their size, pushed to `main`; returns it and the commit. Each `seed`
/// gives other bytes, so no other build's layer cache makes this one's steps cached.
fn big_repository(base: &str, seed: u64) -> (GitRepo, String) {
    let git = GitRepo::new();
    // Quick to commit and push: git stores the large files as they are (no delta search, no
    // compression). kiln reads the objects it finds.
    git.git(&["config", "core.bigFileThreshold", "1m"]);
    git.git(&["config", "core.compression", "0"]);
    for i in 0..FILES {
        git.write(
            &format!("data/blob-{i:02}.bin"),
            support::incompressible(FILE_SIZE, seed * 100 + i as u64),
        );
    }
    git.write(
        "Dockerfile",
        format!("FROM {base}\nCOPY . /app\nRUN du -sk /app/data\n"),
    );
    // Unique to this run: a build of an earlier run can't be this one's cache.
    git.write("run-id", support::new_delivery_id());
    let sha = git.commit("300 MB");
    git.push("main");
    // The same in the bare repository, so a git server sends the files as they are (a forge sends
    // packs it has made already; packing 300 MB afresh on every fetch would be the server's time).
    let bare = git.bare.display().to_string();
    git.git(&["--git-dir", &bare, "config", "core.bigFileThreshold", "1m"]);
    git.git(&["--git-dir", &bare, "config", "core.compression", "0"]);
    (git, sha)
}

/// Builds `sha` from `clone_url` through a fresh kiln process and checks the build and kiln's peak
/// memory.
async fn build_with_bounded_memory(registry: &Registry, clone_url: &str, sha: &str, repo: &str) {
    let kiln = KilnProcess::start(registry, &[("KILN_BUILD_WORKERS", "1")]).await;
    let secret = kiln.ci_repo("big", repo, clone_url).await;
    kiln.rule(
        "big",
        repo,
        json!({"type": "branch", "name": "main", "overwrite": true}),
    )
    .await;
    let before = kiln.peak_rss_kib();
    let payload = github_push_payload(clone_url, "refs/heads/main", ZERO, sha, false);
    let (status, body) = kiln.github_hook("push", "big-1", &secret, &payload).await;
    assert_eq!(status, 202, "{body}");
    let id = body["builds"][0].as_str().unwrap().to_string();
    let build = kiln.wait_build(&id).await;
    let log = kiln.log(&id).await;
    assert_eq!(
        build["status"],
        "succeeded",
        "{build}\n{log}\n{}",
        kiln.output()
    );
    assert!(
        registry
            .tags(&format!("big/{repo}"))
            .await
            .contains(&"main".to_string()),
        "{log}"
    );
    // All of it went to the daemon: the build saw the ten files (du -sk prints KiB).
    let context_bytes = (FILES * FILE_SIZE) as u64;
    // The data, the Dockerfile and run-id.
    assert!(log.contains(&format!(": {} files, ", FILES + 2)), "{log}");
    let data_kib: u64 = log
        .lines()
        .find_map(|line| support::step_output(line).strip_suffix("\t/app/data"))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("no du line in the log\n{log}"));
    assert!(data_kib >= context_bytes / 1024, "{data_kib} KiB\n{log}");

    let peak = kiln.peak_rss_kib();
    let stages = &build["stages"];
    println!(
        "{clone_url}: kiln peak RSS {} MiB (before the build {} MiB); stages: {stages}",
        peak / 1024,
        before / 1024
    );
    for stage in ["queued_ms", "fetch_ms", "context_ms", "build_ms", "push_ms"] {
        assert!(stages[stage].is_u64(), "{stage}: {build}");
    }
    assert!(
        peak < PEAK_RSS_LIMIT_KIB,
        "kiln's peak RSS was {} MiB (limit {} MiB) building a {} MB context from {clone_url}\n{log}",
        peak / 1024,
        PEAK_RSS_LIMIT_KIB / 1024,
        context_bytes / 1_000_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_mb_local_repository_builds_with_kilns_memory_bounded() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let (git, sha) = big_repository(base, 1);
    build_with_bounded_memory(&registry, &git.clone_url(), &sha, "local").await;
}

/// Over git's smart HTTP protocol, as from a forge: the mirror receives a pack and indexes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_mb_repository_fetched_over_http_builds_with_kilns_memory_bounded() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let (git, sha) = big_repository(base, 2);
    let root = git.bare.parent().unwrap().to_path_buf();
    let server = GitHttpServer::start(&root, None).await;
    let name = git.bare.file_name().unwrap().to_string_lossy().into_owned();
    build_with_bounded_memory(&registry, &format!("{}/{name}", server.url), &sha, "http").await;
}
