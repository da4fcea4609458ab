//! The build queue under load: 100 pushes to 20 repositories through kiln with 2 build workers (and the
//! default per-repository limit of 1), against the same 100 builds done one after the other by the
//! script a user could write (`git clone --depth 1 && docker build && docker push`).
//!
//! Run on demand: `cargo bench --bench queue` (needs Docker, docker-registry and git, as the tests).
//! Each repository gets 5 branches; every push is its own commit (a unique file), so every build is a
//! real build. kiln builds commits on branches `k0`..`k4`, the script on `s0`..`s4` (other commits),
//! so neither feeds the other's layer cache. Checks: every kiln build succeeded, on its first attempt,
//! with one push; one succeeded build per tag; every tag in the registry; no two builds of one
//! repository overlapped and never more than 2 at once.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::kiln::Kiln;
use support::{GitRepo, Registry, github_push_payload};

const REPOS: usize = 20;
const PUSHES_PER_REPO: usize = 5;
const WORKERS: &str = "2";
const ZERO: &str = "0000000000000000000000000000000000000000";

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The script, for one build.
fn by_hand(clone_url: &str, branch: &str, image: &str) {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("git")
        .args([
            "clone", "--quiet", "--depth", "1", "--branch", branch, clone_url,
        ])
        .arg(dir.path().join("src")));
    run(Command::new("/usr/bin/docker")
        .args(["build", "-q", "-t", image])
        .arg(dir.path().join("src")));
    run(Command::new("/usr/bin/docker").args(["push", "-q", image]));
}

/// Commits a unique file on `branch` (made from main) and pushes it; returns the commit.
fn commit_on(git: &GitRepo, branch: &str, label: &str) -> String {
    git.checkout("main");
    git.checkout(branch);
    git.write(
        "version.txt",
        format!("{label} {}\n", support::new_delivery_id()),
    );
    let sha = git.commit(label);
    git.push(branch);
    sha
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[("KILN_BUILD_WORKERS", WORKERS)]).await;

    // 20 small repositories: a Dockerfile with COPY and RUN, a file each commit changes.
    let mut repos = Vec::new();
    for r in 0..REPOS {
        let git = GitRepo::new();
        git.write(
            "Dockerfile",
            format!("FROM {base}\nCOPY . /app\nRUN wc -c /app/version.txt > /app/size\n"),
        );
        git.write(".dockerignore", ".git\n");
        git.write("version.txt", "0\n");
        git.commit("bench repo");
        git.push("main");
        let name = format!("r{r:02}");
        let secret = kiln.ci_repo("bench", &name, &git.clone_url()).await;
        kiln.rule("bench", &name, json!({"type": "branch", "name": "k*"}))
            .await;
        repos.push((name, git, secret));
    }
    // The commits, made before the clock starts: kiln's on k0..k4, the script's on s0..s4.
    let mut kiln_pushes = Vec::new();
    let mut script_pushes = Vec::new();
    for p in 0..PUSHES_PER_REPO {
        for (name, git, secret) in &repos {
            let branch = format!("k{p}");
            let sha = commit_on(git, &branch, &format!("kiln {name} {p}"));
            kiln_pushes.push((name.clone(), git.clone_url(), secret.clone(), branch, sha));
            let branch = format!("s{p}");
            commit_on(git, &branch, &format!("script {name} {p}"));
            script_pushes.push((name.clone(), git.clone_url(), branch));
        }
    }
    println!(
        "queue benchmark: {} pushes to {REPOS} repositories, {WORKERS} build workers, per-repository limit 1",
        kiln_pushes.len()
    );

    // kiln: every hook as fast as it is accepted, then wait for every build to end.
    let start = Instant::now();
    let mut builds = Vec::new();
    for (i, (name, url, secret, branch, sha)) in kiln_pushes.iter().enumerate() {
        let payload = github_push_payload(url, &format!("refs/heads/{branch}"), ZERO, sha, false);
        let (status, body) = kiln
            .github_hook("push", &format!("queue-bench-{i}"), secret, &payload)
            .await;
        assert_eq!(status, 202, "{body}");
        let ids = body["builds"].as_array().expect("builds");
        assert_eq!(ids.len(), 1, "{body}");
        builds.push((
            name.clone(),
            branch.clone(),
            ids[0].as_str().unwrap().to_string(),
        ));
    }
    let hooks_sent = start.elapsed();
    let mut finished: Vec<Value> = Vec::new();
    for (_, _, id) in &builds {
        loop {
            let (_, b) = kiln.get(&format!("/builds/{id}")).await;
            if matches!(
                b["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                finished.push(b);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let kiln_total = start.elapsed();

    // Checks: all succeeded, once each.
    let mut problems = Vec::new();
    let mut per_tag: BTreeMap<(String, String), usize> = BTreeMap::new();
    for ((name, branch, id), b) in builds.iter().zip(&finished) {
        if b["status"] != "succeeded" {
            problems.push(format!(
                "{name}:{branch} {id} {}: {}",
                b["status"], b["error"]
            ));
        }
        if b["attempt"] != 1 {
            problems.push(format!("{name}:{branch} {id} ran {} times", b["attempt"]));
        }
        let log = kiln.log(id).await;
        if log.matches("Pushing ").count() != 1 {
            problems.push(format!(
                "{name}:{branch} {id} pushed {} times",
                log.matches("Pushing ").count()
            ));
        }
        *per_tag.entry((name.clone(), branch.clone())).or_default() += 1;
    }
    for (name, _, _) in &repos {
        let listed = kiln.builds("bench", name).await;
        let succeeded = listed.iter().filter(|b| b["status"] == "succeeded").count();
        if succeeded != PUSHES_PER_REPO || listed.len() != PUSHES_PER_REPO {
            problems.push(format!(
                "{name}: {} builds, {succeeded} succeeded",
                listed.len()
            ));
        }
        let tags = registry.tags(&format!("bench/{name}")).await;
        let want: Vec<String> = (0..PUSHES_PER_REPO).map(|p| format!("k{p}")).collect();
        if tags != want {
            problems.push(format!("{name}: registry tags {tags:?}"));
        }
    }
    if per_tag.values().any(|n| *n != 1) {
        problems.push(format!("builds per tag: {per_tag:?}"));
    }
    // Concurrency seen: at most 2 at once, never 2 of one repository.
    let spans: Vec<(String, String, String)> = builds
        .iter()
        .zip(&finished)
        .map(|((name, _, _), b)| {
            (
                name.clone(),
                b["started_at"].as_str().unwrap_or_default().to_string(),
                b["finished_at"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let mut peak = 0;
    for (_, s, _) in &spans {
        let running = spans.iter().filter(|(_, a, z)| a <= s && s < z).count();
        peak = peak.max(running);
    }
    for (i, x) in spans.iter().enumerate() {
        for y in &spans[i + 1..] {
            if x.0 == y.0 && x.1 < y.2 && y.1 < x.2 {
                problems.push(format!("two builds of {} overlapped", x.0));
            }
        }
    }
    let waits: Vec<f64> = finished
        .iter()
        .filter_map(|b| {
            let created = chrono::DateTime::parse_from_rfc3339(b["created_at"].as_str()?).ok()?;
            let started = chrono::DateTime::parse_from_rfc3339(b["started_at"].as_str()?).ok()?;
            Some((started - created).num_milliseconds() as f64 / 1000.0)
        })
        .collect();
    let max_wait = waits.iter().cloned().fold(0.0, f64::max);

    // The script, one build after the other.
    let start = Instant::now();
    for (name, url, branch) in &script_pushes {
        by_hand(
            url,
            branch,
            &registry.image(&format!("script/{name}"), branch),
        );
    }
    let script_total = start.elapsed();

    println!(
        "kiln:   {} for all builds (hooks accepted in {}), peak {peak} builds at once, longest queue wait {max_wait:.1} s",
        secs(kiln_total),
        secs(hooks_sent)
    );
    println!(
        "script: {} serially ({} per build)",
        secs(script_total),
        secs(script_total / script_pushes.len() as u32)
    );
    println!(
        "kiln / script: {:.2}×",
        kiln_total.as_secs_f64() / script_total.as_secs_f64()
    );
    if problems.is_empty() {
        println!(
            "checks: all {} builds succeeded on their first attempt, each pushed once, one succeeded build per tag, every tag in the registry, no two builds of one repository at once",
            builds.len()
        );
    } else {
        println!("PROBLEMS:");
        for p in &problems {
            println!("  {p}");
        }
        std::process::exit(1);
    }
}
