//! Push to tag in the registry, kiln side by side with the script a user would otherwise run
//! (`git clone --depth 1 && docker build && docker push`), on the same dockerd and registry:
//!
//! 1. a ~2.2 MB repository (200 files, `COPY` + `RUN`) cold, then warm (one file changed per
//!    round, medians over the rounds), and a ~300 MB repository (ten 30 MB files no compressor
//!    can shrink) cold. Each path builds its own repository (different bytes), so neither feeds
//!    the other's build cache;
//! 2. kiln's peak resident memory (`VmHWM` of the kiln process, the real binary) by the end of
//!    the 300 MB build;
//! 3. kiln's own overhead over 50 builds: the webhook sent → the Docker build request sent. The
//!    build request goes out as soon as the fetch stage ends, so this is the time from just before
//!    the hook request to the build's `started_at` (same machine, same clock) plus its `fetch_ms`
//!    stage timing.
//!
//! Run on demand: `cargo bench --bench pipeline` (needs Docker, docker-registry and git, as the
//! tests).

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::kiln_process::KilnProcess;
use support::{GitRepo, Registry, github_push_payload};

const WARM_ROUNDS: usize = 7;
const OVERHEAD_BUILDS: usize = 50;
const ZERO: &str = "0000000000000000000000000000000000000000";

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The hand-written pipeline a user would otherwise script.
fn by_hand(clone_url: &str, image: &str) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    run(Command::new("git")
        .args(["clone", "--quiet", "--depth", "1", clone_url])
        .arg(dir.path().join("src")));
    run(Command::new("/usr/bin/docker")
        .args(["build", "-q", "-t", image])
        .arg(dir.path().join("src")));
    run(Command::new("/usr/bin/docker").args(["push", image]));
    start.elapsed()
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// A ~2.2 MB repository: 200 files of 11 KB no compressor can shrink, a Dockerfile with COPY
/// and RUN. `seed` makes each path's bytes its own.
fn small_repo(base: &str, seed: u64) -> GitRepo {
    let git = GitRepo::new();
    for i in 0..200 {
        git.write(
            &format!("data/blob-{i:03}.bin"),
            support::incompressible(11 * 1024, seed * 1000 + i),
        );
    }
    git.write(
        "Dockerfile",
        format!("FROM {base}\nCOPY . /app\nRUN ls /app/data | wc -l > /app/count\n"),
    );
    git.write("version.txt", "0\n");
    // Unique to this run: a build of an earlier run can't be this one's cache.
    git.write("run-id", support::new_delivery_id());
    // Both paths send the same context: the clone has a .git directory, kiln's tree does not.
    git.write(".dockerignore", ".git\n");
    git.commit("small bench repo");
    git.push("main");
    git
}

/// A ~300 MB repository: ten 30 MB files no compressor can shrink.
fn big_repo(base: &str, seed: u64) -> GitRepo {
    let git = GitRepo::new();
    // Quick to commit and push in the set-up (not timed): stored as they are.
    git.git(&["config", "core.bigFileThreshold", "1m"]);
    git.git(&["config", "core.compression", "0"]);
    for i in 0..10 {
        git.write(
            &format!("data/blob-{i:02}.bin"),
            support::incompressible(30 * 1024 * 1024, seed * 1000 + i),
        );
    }
    git.write("Dockerfile", format!("FROM {base}\nCOPY . /app\n"));
    git.write("run-id", support::new_delivery_id());
    git.write(".dockerignore", ".git\n");
    git.commit("big bench repo");
    git.push("main");
    git
}

struct KilnBuild {
    took: Duration,
    build: Value,
}

/// Sends the push hook for `git`'s head and waits for the build to succeed.
async fn kiln_build(kiln: &KilnProcess, secret: &str, git: &GitRepo, delivery: &str) -> KilnBuild {
    let sha = git.head();
    let payload = github_push_payload(&git.clone_url(), "refs/heads/main", ZERO, &sha, false);
    let start = Instant::now();
    let (status, body) = kiln.github_hook("push", delivery, secret, &payload).await;
    assert_eq!(status, 202, "{body}");
    let id = body["builds"][0].as_str().unwrap().to_string();
    loop {
        let (_, b) = kiln.get(&format!("/builds/{id}")).await;
        match b["status"].as_str() {
            Some("succeeded") => {
                return KilnBuild {
                    took: start.elapsed(),
                    build: b,
                };
            }
            Some("failed" | "cancelled") => {
                panic!("build failed: {b}\n{}", kiln.log(&id).await)
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn hand_build(git: &GitRepo, image: String) -> Duration {
    let url = git.clone_url();
    tokio::task::spawn_blocking(move || by_hand(&url, &image))
        .await
        .unwrap()
}

async fn linked(kiln: &KilnProcess, repo: &str, git: &GitRepo) -> String {
    let secret = kiln.ci_repo("bench", repo, &git.clone_url()).await;
    kiln.rule(
        "bench",
        repo,
        json!({"type": "branch", "name": "main", "overwrite": true}),
    )
    .await;
    secret
}

fn row(what: &str, kiln: Duration, hand: Duration, goal: &str) {
    println!(
        "{what:<28} {:>10} {:>10} {:>7.2}x   {goal}",
        ms(kiln),
        ms(hand),
        kiln.as_secs_f64() / hand.as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let kiln = KilnProcess::start(&registry, &[("KILN_BUILD_WORKERS", "1")]).await;

    println!("setting up: two ~2.2 MB and two ~300 MB repositories (one of each per path)");
    let small_kiln = small_repo(base, 1);
    let small_hand = small_repo(base, 2);
    let big_kiln = big_repo(base, 3);
    let big_hand = big_repo(base, 4);
    let small_secret = linked(&kiln, "small", &small_kiln).await;
    let big_secret = linked(&kiln, "big", &big_kiln).await;
    let hand_small_image = format!("{}/bench/hand-small:main", registry.addr);
    let hand_big_image = format!("{}/bench/hand-big:main", registry.addr);

    // A throwaway build first: the first build after a quiet spell pays the daemon's own warm-up
    // (its caches, the base image's files), which would go to whichever path runs first.
    let warm_up = small_repo(base, 5);
    hand_build(&warm_up, format!("{}/bench/warm-up:main", registry.addr)).await;

    // 1. Cold: the first build of each repository (cold mirror, no layer cache for its bytes).
    let small_cold_kiln = kiln_build(&kiln, &small_secret, &small_kiln, "small-cold").await;
    let small_cold_hand = hand_build(&small_hand, hand_small_image.clone()).await;
    let rss_before_big = kiln.peak_rss_kib();
    let big_cold_kiln = kiln_build(&kiln, &big_secret, &big_kiln, "big-cold").await;
    let rss_after_big = kiln.peak_rss_kib();
    let big_cold_hand = hand_build(&big_hand, hand_big_image).await;

    // Warm: one file changed per round, in each path's own repository.
    println!("\nwarm rounds (one file changed):");
    println!("{:>5} {:>10} {:>10}", "round", "kiln", "script");
    let (mut warm_kiln, mut warm_hand) = (Vec::new(), Vec::new());
    for round in 0..WARM_ROUNDS {
        for git in [&small_kiln, &small_hand] {
            git.write("version.txt", format!("{}\n", round + 1));
            git.commit(&format!("round {round}"));
            git.push("main");
        }
        let k = kiln_build(&kiln, &small_secret, &small_kiln, &format!("warm-{round}"))
            .await
            .took;
        let h = hand_build(&small_hand, hand_small_image.clone()).await;
        println!("{round:>5} {:>10} {:>10}", ms(k), ms(h));
        warm_kiln.push(k);
        warm_hand.push(h);
    }

    // 3. Overhead: the hook sent → the build request sent, over 50 builds.
    let mut overhead = Vec::new();
    for i in 0..OVERHEAD_BUILDS {
        small_kiln.write("version.txt", format!("overhead {i}\n"));
        small_kiln.commit(&format!("overhead {i}"));
        small_kiln.push("main");
        let sent = chrono::Utc::now();
        let b = kiln_build(&kiln, &small_secret, &small_kiln, &format!("overhead-{i}"))
            .await
            .build;
        let started = chrono::DateTime::parse_from_rfc3339(b["started_at"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc);
        let to_start = (started - sent).to_std().unwrap_or_default();
        let fetch = Duration::from_millis(b["stages"]["fetch_ms"].as_u64().unwrap());
        overhead.push(to_start + fetch);
    }

    println!(
        "\npipeline benchmark: kiln (the release binary, 1 worker) vs the script, same dockerd and registry"
    );
    println!(
        "{:<28} {:>10} {:>10} {:>8}   goal",
        "", "kiln", "script", "ratio"
    );
    row(
        "~2.2 MB cold",
        small_cold_kiln.took,
        small_cold_hand,
        "<= 1.05x",
    );
    row(
        &format!("~2.2 MB warm (median of {WARM_ROUNDS})"),
        median(&warm_kiln),
        median(&warm_hand),
        "<= 0.80x",
    );
    row(
        "~300 MB cold",
        big_cold_kiln.took,
        big_cold_hand,
        "<= 1.05x",
    );
    println!(
        "{:<28} {:>10}                        < 150 MiB   (before that build: {} MiB)",
        "kiln peak RSS (300 MB)",
        format!("{} MiB", rss_after_big / 1024),
        rss_before_big / 1024
    );
    println!(
        "{:<28} {:>10}                        < 100 ms",
        format!("overhead p50 ({OVERHEAD_BUILDS} builds)"),
        ms(percentile(&overhead, 50.0))
    );
    println!(
        "{:<28} {:>10}                        < 100 ms",
        format!("overhead p99 ({OVERHEAD_BUILDS} builds)"),
        ms(percentile(&overhead, 99.0))
    );
    for (what, b) in [
        ("~2.2 MB cold", &small_cold_kiln.build),
        ("~300 MB cold", &big_cold_kiln.build),
    ] {
        println!("kiln stages, {what}: {}", b["stages"]);
    }
}
