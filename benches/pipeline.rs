//! Time from a signed GitHub push to a pushed image, through kiln, side by side with the hand-written
//! `git clone --depth 1 && docker build && docker push` of the same ~2 MB repository.
//!
//! Run on demand: `cargo bench --bench pipeline` (needs Docker, docker-registry and git, as the tests).
//! Each round changes one file and pushes a new commit; both paths build that same commit into their
//! own repository of the same registry. Reports per-round times and medians.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::kiln::Kiln;
use support::{GitRepo, Registry, github_push_payload};

const ROUNDS: usize = 7;
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

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[("KILN_BUILD_WORKERS", "1")]).await;

    // ~2 MB: 20 files of 100 KB of incompressible bytes, a Dockerfile with COPY and RUN.
    let git = GitRepo::new();
    let mut seed = 0x9e3779b97f4a7c15u64;
    for i in 0..20 {
        let bytes: Vec<u8> = (0..100 * 1024)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect();
        git.write(&format!("data/blob-{i:02}.bin"), bytes);
    }
    git.write(
        "Dockerfile",
        format!("FROM {base}\nCOPY . /app\nRUN ls /app/data | wc -l > /app/count\n"),
    );
    git.write("version.txt", "0\n");
    // Both paths send the same context: the hand-written clone has a .git directory, kiln's tree does not.
    git.write(".dockerignore", ".git\n");
    git.commit("bench repo");
    git.push("main");
    let secret = kiln.ci_repo("bench", "kiln", &git.clone_url()).await;
    kiln.rule(
        "bench",
        "kiln",
        json!({"type": "branch", "name": "main", "overwrite": true}),
    )
    .await;

    println!(
        "pipeline benchmark: {ROUNDS} rounds, ~2 MB repo, FROM a local busybox base, COPY + RUN"
    );
    println!(
        "{:>5}  {:>14}  {:>14}",
        "round", "kiln (hook→pushed)", "by hand"
    );
    let (mut kiln_times, mut hand_times) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        git.write("version.txt", format!("{round}\n"));
        let sha = git.commit(&format!("round {round}"));
        git.push("main");

        let payload = github_push_payload(&git.clone_url(), "refs/heads/main", ZERO, &sha, false);
        let start = Instant::now();
        let (status, body) = kiln
            .github_hook("push", &format!("bench-{round}"), &secret, &payload)
            .await;
        assert_eq!(status, 202, "{body}");
        let id = body["builds"][0].as_str().unwrap().to_string();
        loop {
            let (_, b) = kiln.get(&format!("/builds/{id}")).await;
            match b["status"].as_str() {
                Some("succeeded") => break,
                Some("failed" | "cancelled") => {
                    panic!("build failed: {b}\n{}", kiln.log(&id).await)
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        let k = start.elapsed();

        let image = format!("{}/bench/hand:main", registry.addr);
        let url = git.clone_url();
        let h = tokio::task::spawn_blocking(move || by_hand(&url, &image))
            .await
            .unwrap();
        println!("{round:>5}  {:>14}  {:>14}", ms(k), ms(h));
        kiln_times.push(k);
        hand_times.push(h);
    }
    println!(
        "first round (cold mirror, cold cache): kiln {}, by hand {}",
        ms(kiln_times[0]),
        ms(hand_times[0])
    );
    println!(
        "median of rounds 2..{ROUNDS} (warm): kiln {}, by hand {}",
        ms(median(&kiln_times[1..])),
        ms(median(&hand_times[1..]))
    );
}
