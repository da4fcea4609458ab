//! Issue 9: rule schedules, path filters and retention, end to end: real dockerd, a real Distribution
//! registry, real git repositories, the real kiln server.

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::kiln::Kiln;
use support::{GitRepo, Registry, github_push_payload, new_delivery_id, wait_until};

const ZERO: &str = "0000000000000000000000000000000000000000";

fn time(b: &Value, field: &str) -> DateTime<Utc> {
    let text = b[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {b}"));
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{field} {text}: {e}"))
        .with_timezone(&Utc)
}

/// Sends the GitHub push of `before..after` to `main` and returns the ids of the builds it queued.
async fn push(kiln: &Kiln, git: &GitRepo, secret: &str, before: &str, after: &str) -> Vec<String> {
    let payload = github_push_payload(&git.clone_url(), "refs/heads/main", before, after, false);
    let (status, body) = kiln
        .github_hook("push", &new_delivery_id(), secret, &payload)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["builds"]
        .as_array()
        .expect("builds")
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect()
}

/// The builds of `ns/repo` with trigger `schedule`, oldest first.
async fn schedule_builds(kiln: &Kiln, ns: &str, repo: &str) -> Vec<Value> {
    let mut builds: Vec<Value> = kiln
        .builds(ns, repo)
        .await
        .into_iter()
        .filter(|b| b["trigger"] == "schedule")
        .collect();
    builds.reverse();
    builds
}

/// A schedule every 2 seconds rebuilds the head of `main`: builds with trigger `schedule`, of the
/// commit `main` points at when they start, and never a second one while one is queued or running
/// (ticks that come meanwhile are dropped: each build is queued after the previous one ended).
#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_rebuilds_the_branch_head_one_build_at_a_time() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let git = GitRepo::new();
    // The first build of each commit takes a few seconds (the RUN step after a file unique to the
    // commit is never cached), so ticks arrive while it runs.
    let commit = |label: &str| {
        git.write(
            "Dockerfile",
            format!("FROM {base}\nCOPY x /x\nRUN sleep 3\n"),
        );
        git.write("x", format!("{label} {}\n", new_delivery_id()));
        let sha = git.commit(label);
        git.push("main");
        sha
    };
    let first = commit("first");
    kiln.ci_repo("acme", "cron", &git.clone_url()).await;
    let rule = kiln
        .rule(
            "acme",
            "cron",
            json!({"type": "branch", "name": "main", "version": "nightly", "schedule": "*/2 * * * * *"}),
        )
        .await;

    // Watch the builds while the schedule runs: never two of its builds queued or running together.
    let most_active = std::cell::Cell::new(0);
    let second: std::cell::RefCell<Option<String>> = std::cell::RefCell::new(None);
    let (kiln_ref, most_active_ref, second_ref, commit_ref) =
        (&kiln, &most_active, &second, &commit);
    wait_until(
        "four schedule builds have ended, the last two of a second head",
        Duration::from_secs(240),
        move || async move {
            let builds = schedule_builds(kiln_ref, "acme", "cron").await;
            let active = builds
                .iter()
                .filter(|b| matches!(b["status"].as_str(), Some("queued" | "building")))
                .count();
            most_active_ref.set(most_active_ref.get().max(active));
            let done: Vec<&Value> = builds
                .iter()
                .filter(|b| b["status"] == "succeeded")
                .collect();
            // After two builds of the first head, move `main` (no hook: the schedule finds it).
            if done.len() >= 2 && second_ref.borrow().is_none() {
                *second_ref.borrow_mut() = Some(commit_ref("second"));
            }
            let second = second_ref.borrow().clone();
            let of_second = done
                .iter()
                .filter(|b| second.as_deref().is_some_and(|s| b["commit"] == s))
                .count();
            of_second >= 2
        },
    )
    .await;
    assert_eq!(
        most_active.get(),
        1,
        "never two schedule builds queued or running at once"
    );

    let builds = schedule_builds(&kiln, "acme", "cron").await;
    let second = second.into_inner().unwrap();
    for b in &builds {
        assert_eq!(b["trigger"], "schedule", "{b}");
        assert_eq!(b["rule_id"], rule.as_str(), "{b}");
        assert_eq!(b["ref"], "refs/heads/main", "{b}");
        assert_eq!(b["tag"], "nightly", "{b}");
    }
    let finished: Vec<&Value> = builds
        .iter()
        .filter(|b| b["finished_at"].is_string())
        .collect();
    for b in &finished {
        assert_eq!(b["status"], "succeeded", "{b}");
        let commit = b["commit"].as_str().unwrap();
        assert!(commit == first || commit == second, "{b}");
    }
    // Each build was queued only after the one before it ended.
    for pair in builds.windows(2) {
        assert!(
            time(&pair[1], "created_at") >= time(&pair[0], "finished_at"),
            "a schedule build was queued while the previous one was still queued or running:\n{}\n{}",
            pair[0],
            pair[1]
        );
    }
    // The uncached builds took longer than the schedule's period: ticks were dropped, not queued.
    assert!(
        finished.iter().any(|b| {
            (time(b, "finished_at") - time(b, "created_at")).num_milliseconds() > 2_000
        }),
        "no build outlasted a tick: {builds:#?}"
    );
    // Once the second head is seen, every later build builds it.
    let switch = builds.iter().position(|b| b["commit"] == second).unwrap();
    assert!(
        builds[switch..]
            .iter()
            .filter(|b| b["commit"].is_string())
            .all(|b| b["commit"] == second)
    );
    let digest = registry.manifest_digest("acme/cron", "nightly").await;
    assert!(digest.is_some(), "the schedule's image is in the registry");

    // Removing the schedule stops it: once the build in flight (if any) ends, no new one is queued
    // however many ticks pass (the rule is read again within 5 s; wait for 3 reloads).
    let (s, body) = kiln
        .patch(
            &format!("/namespaces/acme/repos/cron/rules/{rule}"),
            json!({"schedule": null}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let removed_at = Utc::now();
    wait_until(
        "the schedule's builds have all ended",
        Duration::from_secs(120),
        || async {
            schedule_builds(&kiln, "acme", "cron")
                .await
                .iter()
                .all(|b| b["finished_at"].is_string())
        },
    )
    .await;
    let count = schedule_builds(&kiln, "acme", "cron").await.len();
    wait_until(
        "three ticks and a rule reload have passed since the schedule was removed",
        Duration::from_secs(30),
        || async { Utc::now() - removed_at > chrono::Duration::seconds(8) },
    )
    .await;
    let after = schedule_builds(&kiln, "acme", "cron").await;
    assert!(
        after.len() <= count + 1
            && after
                .iter()
                .all(|b| time(b, "created_at") < removed_at + chrono::Duration::seconds(6)),
        "builds queued after the schedule was removed: {after:#?}"
    );
}

/// A tick missed while kiln was stopped fires once when it starts: a yearly schedule whose rule was
/// last changed years ago queues exactly one build at start, not one per missed year.
#[tokio::test(flavor = "multi_thread")]
async fn a_missed_tick_fires_once_at_start() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let git = GitRepo::new();
    git.write("Dockerfile", format!("FROM {base}\nCOPY x /x\n"));
    git.write("x", new_delivery_id());
    let head = git.commit("first");
    git.push("main");
    kiln.ci_repo("acme", "yearly", &git.clone_url()).await;
    let rule = kiln
        .rule(
            "acme",
            "yearly",
            json!({"type": "branch", "name": "main", "schedule": "0 0 1 1 *"}),
        )
        .await;
    // As if the rule had been set up in 2020 and kiln had been down over every New Year since.
    sqlx::query("UPDATE rules SET updated_at = '2020-06-01T00:00:00.000000Z' WHERE id = ?")
        .bind(&rule)
        .execute(&kiln.server.app.db)
        .await
        .unwrap();
    assert!(schedule_builds(&kiln, "acme", "yearly").await.is_empty());
    let Kiln {
        server, data_dir, ..
    } = kiln;
    drop(server);
    let kiln = Kiln::start_in(&registry, &[], data_dir).await;
    wait_until(
        "the missed tick's build ends",
        Duration::from_secs(120),
        || async {
            let builds = schedule_builds(&kiln, "acme", "yearly").await;
            builds.len() == 1 && builds[0]["status"] == "succeeded"
        },
    )
    .await;
    let builds = schedule_builds(&kiln, "acme", "yearly").await;
    assert_eq!(
        builds.len(),
        1,
        "one build for all the missed ticks: {builds:#?}"
    );
    assert_eq!(builds[0]["commit"], head.as_str());
    assert_eq!(builds[0]["rule_id"], rule.as_str());
}

/// `paths` / `ignore_paths`: the changed files come from the mirror (`before..after`), a push whose
/// files the filter excludes ends `skipped` with the reason (in the build and the events view), one that
/// changes a matching file builds, and a new branch or an unknown `before` always builds.
#[tokio::test(flavor = "multi_thread")]
async fn path_filters_decide_from_the_files_a_push_changed() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let git = GitRepo::new();
    git.write("Dockerfile", format!("FROM {base}\nCOPY src /src\n"));
    git.write(
        "src/main.c",
        format!("int main() {{ return 0; }} // {}\n", new_delivery_id()),
    );
    git.write("src/old.c", "old\n");
    git.write("docs/guide.md", "guide\n");
    git.write("README.md", "readme\n");
    let c1 = git.commit("first");
    git.push("main");
    let secret = kiln.ci_repo("acme", "paths", &git.clone_url()).await;
    let src_rule = kiln
        .rule(
            "acme",
            "paths",
            json!({"type": "branch", "name": "main", "version": "src", "paths": ["src/**", "!src/**/*.txt"]}),
        )
        .await;
    let code_rule = kiln
        .rule(
            "acme",
            "paths",
            json!({"type": "branch", "name": "main", "version": "code", "ignore_paths": ["docs/**", "*.md"]}),
        )
        .await;
    let by_rule = |builds: &[Value], rule: &str| -> Value {
        builds
            .iter()
            .find(|b| b["rule_id"] == rule)
            .unwrap_or_else(|| panic!("no build of rule {rule} in {builds:?}"))
            .clone()
    };
    let run = |ids: Vec<String>| {
        let kiln = &kiln;
        async move {
            assert_eq!(ids.len(), 2, "one build per rule: {ids:?}");
            let mut out = Vec::new();
            for id in ids {
                out.push(kiln.wait_build(&id).await);
            }
            out
        }
    };

    // A new branch (before = zeros): nothing to compare, both build.
    let builds = run(push(&kiln, &git, &secret, ZERO, &c1).await).await;
    for b in &builds {
        assert_eq!(b["status"], "succeeded", "{b}");
    }

    // Only docs and a Markdown file: both rules skip, each with its reason; nothing is built.
    git.write("docs/guide.md", "guide, v2\n");
    git.write("README.md", "readme, v2\n");
    let c2 = git.commit("docs only");
    git.push("main");
    let builds = run(push(&kiln, &git, &secret, &c1, &c2).await).await;
    let src = by_rule(&builds, &src_rule);
    assert_eq!(src["status"], "skipped", "{src}");
    assert!(
        src["error"]
            .as_str()
            .unwrap()
            .starts_with("no changed file matches paths [\"src/**\",\"!src/**/*.txt\"] (2 changed file(s) between"),
        "{src}"
    );
    assert_eq!(src["digest"], Value::Null);
    let code = by_rule(&builds, &code_rule);
    assert_eq!(code["status"], "skipped", "{code}");
    assert!(
        code["error"]
            .as_str()
            .unwrap()
            .starts_with("every changed file matches ignore_paths [\"docs/**\",\"*.md\"]"),
        "{code}"
    );
    let log = kiln.log(src["id"].as_str().unwrap()).await;
    assert!(
        log.contains("Not built: no changed file matches paths"),
        "{log}"
    );
    assert!(!log.contains("Building "), "{log}");
    // The events view says why: the event's builds with their state and reason.
    let (s, events) = kiln.get("/namespaces/acme/repos/paths/events").await;
    assert_eq!(s, StatusCode::OK, "{events}");
    let event = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["commit"] == c2.as_str())
        .expect("the docs-only push's event");
    let states = event["build_states"].as_array().unwrap();
    assert_eq!(states.len(), 2, "{event}");
    for state in states {
        assert_eq!(state["status"], "skipped", "{event}");
        assert!(
            state["error"].as_str().unwrap().contains("matches"),
            "{event}"
        );
    }
    // …and each rule's decision says it did not build, and why.
    for decision in event["rules"].as_array().unwrap() {
        assert_eq!(decision["matched"], true, "{event}");
        assert_eq!(decision["skipped"]["reason"], "path_filter", "{event}");
        let message = decision["skipped"]["message"].as_str().unwrap();
        let rule = decision["rule_id"].as_str().unwrap();
        let build = by_rule(&builds, rule);
        assert_eq!(message, build["error"].as_str().unwrap(), "{event}");
        assert_eq!(decision["skipped"]["build_id"], build["id"], "{event}");
    }
    // A push whose rules built shows no reason.
    let built = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["commit"] == c1.as_str())
        .unwrap();
    assert!(
        built["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["skipped"].is_null()),
        "{built}"
    );

    // A file ignored by `!src/**/*.txt` alone: still no src build; the code rule builds (not docs).
    git.write("src/notes.txt", "notes\n");
    let c3 = git.commit("notes");
    git.push("main");
    let builds = run(push(&kiln, &git, &secret, &c2, &c3).await).await;
    assert_eq!(by_rule(&builds, &src_rule)["status"], "skipped");
    assert_eq!(by_rule(&builds, &code_rule)["status"], "succeeded");

    // A source change: both build, the image has it.
    git.write(
        "src/main.c",
        format!("int main() {{ return 1; }} // {}\n", new_delivery_id()),
    );
    let c4 = git.commit("code");
    git.push("main");
    let builds = run(push(&kiln, &git, &secret, &c3, &c4).await).await;
    for b in &builds {
        assert_eq!(b["status"], "succeeded", "{b}");
        assert_eq!(b["commit"], c4.as_str(), "{b}");
    }
    let log = kiln
        .log(by_rule(&builds, &src_rule)["id"].as_str().unwrap())
        .await;
    assert!(
        log.contains("Path filter: 1 changed file(s), at least one matches"),
        "{log}"
    );

    // A rename out of src/ changes a path under src/ (its old name): it builds.
    git.git(&["mv", "src/old.c", "attic-old.c"]);
    let c5 = git.commit("move old.c out of src");
    git.push("main");
    let builds = run(push(&kiln, &git, &secret, &c4, &c5).await).await;
    assert_eq!(by_rule(&builds, &src_rule)["status"], "succeeded");

    // The payload's file lists are not trusted: the push says it modified the Dockerfile, the mirror
    // says docs only (checked above with the same payload). And a `before` the mirror does not have (a
    // force push over history kiln never saw) has nothing to compare: docs-only still builds.
    git.write("docs/guide.md", "guide, v3\n");
    let c6 = git.commit("docs again");
    git.push("main");
    let unknown = "1234567890abcdef1234567890abcdef12345678";
    let builds = run(push(&kiln, &git, &secret, unknown, &c6).await).await;
    for b in &builds {
        assert_eq!(b["status"], "succeeded", "{b}");
    }
    let log = kiln
        .log(by_rule(&builds, &src_rule)["id"].as_str().unwrap())
        .await;
    assert!(log.contains("not in the mirror"), "{log}");

    // "Build now" is never filtered.
    let (s, b) = kiln
        .post(
            &format!("/namespaces/acme/repos/paths/rules/{src_rule}/builds"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let b = kiln.wait_build(b["id"].as_str().unwrap()).await;
    assert_eq!(b["status"], "succeeded", "{b}");
    assert_eq!(b["trigger"], "manual");
}

/// A docs-only push that supersedes a queued push of source changes diffs from the older push's
/// `before`: the source change is built, not lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_superseding_push_keeps_the_changes_of_the_push_it_replaces() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    // One worker, held by a slow build of another repository, so the two pushes wait in the queue.
    let kiln = Kiln::start(&registry, &[("KILN_BUILD_WORKERS", "1")]).await;
    let slow = GitRepo::new();
    slow.write(
        "Dockerfile",
        format!("FROM {base}\nCOPY x /x\nRUN sleep 4\n"),
    );
    slow.write("x", new_delivery_id());
    let slow_sha = slow.commit("slow");
    slow.push("main");
    let slow_secret = kiln.ci_repo("acme", "slow", &slow.clone_url()).await;
    kiln.rule("acme", "slow", json!({"type": "branch", "name": "main"}))
        .await;

    let git = GitRepo::new();
    git.write("Dockerfile", format!("FROM {base}\nCOPY src /src\n"));
    git.write("src/a", new_delivery_id());
    let c1 = git.commit("first");
    git.write("src/a", new_delivery_id());
    let c2 = git.commit("source change");
    git.write("docs/x", "docs\n");
    let c3 = git.commit("docs change");
    git.push("main");
    let secret = kiln.ci_repo("acme", "app", &git.clone_url()).await;
    kiln.rule(
        "acme",
        "app",
        json!({"type": "branch", "name": "main", "paths": ["src/**"]}),
    )
    .await;

    let blocker = push(&kiln, &slow, &slow_secret, ZERO, &slow_sha).await;
    wait_until("the slow build runs", Duration::from_secs(60), || async {
        kiln.get(&format!("/builds/{}", blocker[0])).await.1["status"] == "building"
    })
    .await;
    let older = push(&kiln, &git, &secret, &c1, &c2).await;
    let newer = push(&kiln, &git, &secret, &c2, &c3).await;
    let older = kiln.wait_build(&older[0]).await;
    assert_eq!(older["status"], "cancelled", "{older}");
    assert!(
        older["error"]
            .as_str()
            .unwrap()
            .starts_with("superseded by"),
        "{older}"
    );
    let newer = kiln.wait_build(&newer[0]).await;
    assert_eq!(
        newer["status"], "succeeded",
        "the docs-only push builds c1..c3: {newer}"
    );
    assert_eq!(newer["commit"], c3.as_str());
    kiln.wait_build(&blocker[0]).await;
}

fn image_size(image: &str) -> u64 {
    support::docker(&["image", "inspect", "--format", "{{.Size}}", image])
        .trim()
        .parse()
        .unwrap()
}

/// Retention: with 1 build kept per repository and no age protection, a restart (pruning runs at
/// start) removes the older builds and their logs, never a version (whose build link still reads);
/// the cache cap removes the oldest kiln-built images and the mirror of a deleted source, and keeps
/// the newest image and the mirrors of existing sources.
#[tokio::test(flavor = "multi_thread")]
async fn retention_prunes_old_builds_and_caps_the_local_cache() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let keep = GitRepo::new();
    let gone = GitRepo::new();
    let build = |git: &GitRepo, label: &str| {
        git.write("Dockerfile", format!("FROM {base}\nCOPY x /x\n"));
        git.write("x", format!("{label} {}\n", new_delivery_id()));
        let sha = git.commit(label);
        git.push("main");
        sha
    };
    let keep_secret = kiln.ci_repo("acme", "keep", &keep.clone_url()).await;
    kiln.rule(
        "acme",
        "keep",
        json!({"type": "branch", "name": "main", "overwrite": false}),
    )
    .await;
    let gone_secret = kiln.ci_repo("acme", "gone", &gone.clone_url()).await;
    kiln.rule("acme", "gone", json!({"type": "branch", "name": "main"}))
        .await;

    // Built one after the other, each in a later second than the last (image times are seconds).
    let mut done: Vec<Value> = Vec::new();
    for (git, secret, label) in [
        (&keep, &keep_secret, "keep-1"),
        (&gone, &gone_secret, "gone-1"),
        (&keep, &keep_secret, "keep-2"),
    ] {
        if let Some(last) = done.last() {
            let last = time(last, "finished_at");
            wait_until("the next second", Duration::from_secs(5), || async {
                Utc::now().timestamp() > last.timestamp()
            })
            .await;
        }
        let sha = build(git, label);
        let ids = push(&kiln, git, secret, ZERO, &sha).await;
        let b = kiln.wait_build(&ids[0]).await;
        assert_eq!(b["status"], "succeeded", "{b}");
        done.push(b);
    }
    let (keep1, gone1, keep2) = (&done[0], &done[1], &done[2]);
    let image = |b: &Value| b["image"].as_str().unwrap().to_string();
    for b in &done {
        assert!(support::docker_image_exists(&image(b)), "{b}");
    }
    let app = &kiln.server.app;
    let mirrors = app.config.mirrors_dir();
    let mirror_of = |git: &GitRepo| kiln::build::git::mirror_path(&mirrors, &git.clone_url());
    assert!(mirror_of(&keep).is_dir() && mirror_of(&gone).is_dir());
    // `gone` loses its source: its mirror is now a deleted source's.
    let (s, body) = kiln.delete("/namespaces/acme/repos/gone/source").await;
    assert!(s.is_success(), "{body}");
    assert!(
        !kiln::db::builds::log_lines(&app.db, keep1["id"].as_str().unwrap(), -1)
            .await
            .unwrap()
            .is_empty()
    );

    // Restart with the small limits: the cap holds the newest image only.
    let cap = image_size(&image(keep2));
    let Kiln {
        server, data_dir, ..
    } = kiln;
    drop(server);
    let kiln = Kiln::start_in(
        &registry,
        &[
            ("KILN_BUILD_RETENTION_COUNT", "1"),
            ("KILN_BUILD_RETENTION_DAYS", "0"),
            ("KILN_IMAGE_CACHE_MAX_BYTES", &cap.to_string()),
        ],
        data_dir,
    )
    .await;
    let keep1_id = keep1["id"].as_str().unwrap().to_string();
    wait_until(
        "the older build of acme/keep is pruned",
        Duration::from_secs(60),
        || async { kiln.get(&format!("/builds/{keep1_id}")).await.0 == StatusCode::NOT_FOUND },
    )
    .await;
    let app = &kiln.server.app;
    assert!(
        kiln::db::builds::log_lines(&app.db, &keep1_id, -1)
            .await
            .unwrap()
            .is_empty(),
        "its log went with it"
    );
    // The newest build of each repository stays.
    for b in [gone1, keep2] {
        let (s, got) = kiln
            .get(&format!("/builds/{}", b["id"].as_str().unwrap()))
            .await;
        assert_eq!(s, StatusCode::OK, "{got}");
    }
    // Versions stay, the one built by the pruned build included, and still name it.
    let (s, versions) = kiln.get("/namespaces/acme/repos/keep/versions").await;
    assert_eq!(s, StatusCode::OK, "{versions}");
    let tags: Vec<&str> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["tag"].as_str().unwrap())
        .collect();
    let keep1_tag = keep1["tag"].as_str().unwrap();
    assert!(
        tags.contains(&keep1_tag) && tags.contains(&keep2["tag"].as_str().unwrap()),
        "{versions}"
    );
    let (s, v) = kiln
        .get(&format!("/namespaces/acme/repos/keep/versions/{keep1_tag}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["build_id"], keep1_id.as_str(), "{v}");
    assert!(
        registry
            .manifest_digest("acme/keep", keep1_tag)
            .await
            .is_some()
    );

    // The cache cap: the two older images and the deleted source's mirror are gone, oldest first; the
    // newest image and the mirror of the existing source stay.
    wait_until(
        "the cache cap has removed the older images",
        Duration::from_secs(60),
        || async {
            !support::docker_image_exists(&image(keep1))
                && !support::docker_image_exists(&image(gone1))
        },
    )
    .await;
    wait_until(
        "the deleted source's mirror is removed",
        Duration::from_secs(30),
        || async { !mirror_of(&gone).exists() },
    )
    .await;
    assert!(
        support::docker_image_exists(&image(keep2)),
        "the newest image stays"
    );
    assert!(
        mirror_of(&keep).is_dir(),
        "the mirror of an existing source stays"
    );
    // Another pass finds nothing more to do.
    let again = kiln::retention::prune_local_cache(app).await.unwrap();
    assert!(
        again.images.is_empty() && again.mirrors.is_empty(),
        "{again:?}"
    );
    assert_eq!(kiln::retention::prune_builds(app).await.unwrap(), 0);
}

/// A push build under a path filter fetches its source once: the filter decides on the build's own
/// fetch (counted at a git smart-HTTP server), for a build that runs and for one that is skipped.
#[tokio::test(flavor = "multi_thread")]
async fn a_filtered_push_fetches_its_source_once() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let git = GitRepo::new();
    git.write("Dockerfile", format!("FROM {base}\nCOPY src /src\n"));
    git.write("src/main.c", format!("// {}\n", new_delivery_id()));
    git.write("docs/guide.md", "guide\n");
    let c1 = git.commit("first");
    git.push("main");
    let server = support::GitHttpServer::start(git.bare.parent().unwrap(), None).await;
    let name = git.bare.file_name().unwrap().to_string_lossy().into_owned();
    let url = format!("{}/{name}", server.url);
    let secret = kiln.ci_repo("acme", "once", &url).await;
    kiln.rule(
        "acme",
        "once",
        json!({"type": "branch", "name": "main", "version": "src", "paths": ["src/**"]}),
    )
    .await;
    let fetches = || {
        server
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("/info/refs?service=git-upload-pack"))
            .count()
    };
    let push = |before: String, after: String| {
        let (kiln, secret, url) = (&kiln, &secret, &url);
        async move {
            let payload = github_push_payload(url, "refs/heads/main", &before, &after, false);
            let (status, body) = kiln
                .github_hook("push", &new_delivery_id(), secret, &payload)
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            let ids = body["builds"].as_array().expect("builds").clone();
            assert_eq!(ids.len(), 1, "{body}");
            kiln.wait_build(ids[0].as_str().unwrap()).await
        }
    };

    // A changed source file: built, on one fetch.
    git.write("src/main.c", format!("// {}\n", new_delivery_id()));
    let c2 = git.commit("src");
    git.push("main");
    let before = fetches();
    let built = push(c1.clone(), c2.clone()).await;
    assert_eq!(built["status"], "succeeded", "{built}");
    assert_eq!(
        fetches() - before,
        1,
        "one fetch for the filter and the build"
    );
    let log = kiln.log(built["id"].as_str().unwrap()).await;
    assert!(
        log.contains("Path filter: 1 changed file(s), at least one matches"),
        "{log}"
    );
    assert_eq!(log.matches("Fetching ").count(), 1, "{log}");

    // Only docs: skipped, on one fetch too.
    git.write("docs/guide.md", "guide, v2\n");
    let c3 = git.commit("docs");
    git.push("main");
    let before = fetches();
    let skipped = push(c2, c3).await;
    assert_eq!(skipped["status"], "skipped", "{skipped}");
    assert_eq!(fetches() - before, 1, "one fetch to decide");
    assert_eq!(skipped["digest"], Value::Null);
}
