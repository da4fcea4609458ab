//! Build settings per rule, end to end: build arguments (the rule's and kiln's `KILN_*`) reaching the
//! Dockerfile, `target` picking a stage, extra tags pushed with the same digest, OCI labels read back
//! from the registry's image config, the per-rule timeout, and the layer cache pulled back from the
//! registry when the local store lost it. Real dockerd, real registry, real git repos, real kiln.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::kiln::Kiln;
use support::{GitRepo, RecordingServer, Registry};

/// A CI repository `acme/{repo}` with one rule; returns the rule id.
async fn ci_rule(kiln: &Kiln, git: &GitRepo, repo: &str, rule: Value) -> String {
    kiln.ci_repo("acme", repo, &git.clone_url()).await;
    kiln.rule("acme", repo, rule).await
}

/// "Build now" of the rule (the head of its branch); waits for the build to end and returns it.
async fn build_now(kiln: &Kiln, repo: &str, rule: &str) -> Value {
    let (s, build) = kiln
        .post(
            &format!("/namespaces/acme/repos/{repo}/rules/{rule}/builds"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{build}");
    kiln.wait_build(build["id"].as_str().unwrap()).await
}

/// The image config (`GET manifest` → its `config` blob) of `repo:reference` in the registry.
async fn image_config(registry: &Registry, repo: &str, reference: &str) -> Value {
    let manifest = registry.manifest(repo, reference).await;
    let config = manifest["config"]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no config in {manifest}"));
    serde_json::from_slice(&registry.blob(repo, config).await).expect("config JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn build_args_target_extra_tags_and_oci_labels_reach_the_image() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    // The registry tells kiln about every push: the extra tags' pushes are the build's own, not
    // plain `docker push`es.
    let (registry, kiln) = Kiln::start_notified(&[]).await;
    let receiver = RecordingServer::start().await;
    let git = GitRepo::new();
    // Two stages: the rule builds `build`, not the last one. Each stage writes what it sees.
    git.write(
        "Dockerfile",
        format!(
            "FROM {base} AS build\n\
             ARG GREETING\n\
             ARG KILN_COMMIT\n\
             ARG KILN_REF\n\
             ARG KILN_TAG\n\
             RUN echo \"$GREETING\" > /greeting && echo \"$KILN_COMMIT\" > /commit \
                 && echo \"$KILN_REF\" > /ref && echo \"$KILN_TAG\" > /tag\n\
             FROM {base} AS last\n\
             RUN echo last stage > /greeting\n"
        ),
    );
    let head = git.commit("two stages");
    git.push("main");
    let rule = ci_rule(
        &kiln,
        &git,
        "settings",
        json!({
            "type": "branch", "name": "main", "overwrite": false,
            "build_args": {"GREETING": "hello from kiln", "DEPLOY_TOKEN": "not-really-one"},
            "target": "build",
            "extra_tags": ["latest", "{branch}-latest", "latest", "{branch}-{sha7}"],
        }),
    )
    .await;
    // A build argument that looks like a secret is kept, with a warning in the rule (and the log).
    let secret_warning = "build_args.DEPLOY_TOKEN looks like a secret: build arguments are shown \
                          with the rule and kept in the image's history (docker history); pass \
                          secrets another way";
    let (s, shown) = kiln
        .get(&format!("/namespaces/acme/repos/settings/rules/{rule}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{shown}");
    assert_eq!(shown["warnings"], json!([secret_warning]), "{shown}");
    let (s, body) = kiln
        .post(
            "/namespaces/acme/repos/settings/webhooks",
            json!({"name": "pushes", "url": receiver.url, "events": ["image.pushed"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");

    let build = build_now(&kiln, "settings", &rule).await;
    let id = build["id"].as_str().unwrap();
    let log = kiln.log(id).await;
    assert_eq!(build["status"], "succeeded", "{build}\n{log}");
    let tag = format!("main-{}", &head[..7]);
    assert_eq!(build["tag"], tag.as_str());
    // The build shows the settings it ran with.
    assert!(log.contains(&format!("Warning: {secret_warning}")), "{log}");
    assert_eq!(
        build["settings"],
        json!({
            "build_args": {"DEPLOY_TOKEN": "not-really-one", "GREETING": "hello from kiln"},
            "target": "build",
            "no_cache": false,
            "extra_tags": ["latest", "{branch}-latest", "latest", "{branch}-{sha7}"],
            "timeout_minutes": null,
        })
    );

    // Build arguments reached the `build` stage: read back from the image.
    let image = build["image"].as_str().unwrap();
    let files = support::docker_async(&[
        "run",
        "--rm",
        image,
        "cat",
        "/greeting",
        "/commit",
        "/ref",
        "/tag",
    ])
    .await;
    assert_eq!(
        files.lines().collect::<Vec<_>>(),
        vec![
            "hello from kiln",
            head.as_str(),
            "refs/heads/main",
            tag.as_str()
        ],
        "{log}"
    );

    // Extra tags: pushed with the same digest; repeats and the main tag itself once.
    let digest = build["digest"].as_str().unwrap();
    let mut want = vec!["latest".to_string(), "main-latest".into(), tag.clone()];
    want.sort();
    assert_eq!(registry.tags("acme/settings").await, want);
    for t in &want {
        assert_eq!(
            registry
                .manifest_digest("acme/settings", t)
                .await
                .as_deref(),
            Some(digest),
            "{t}"
        );
    }
    for t in ["latest", "main-latest"] {
        assert!(
            log.contains(&format!(
                "Pushed {}/acme/settings:{t} ({digest})",
                registry.addr
            )),
            "no push of :{t} in the log:\n{log}"
        );
    }
    assert!(
        !log.contains(&format!("acme/settings:{tag} (extra tag)")),
        "{log}"
    );
    // Each is an image version of this build.
    let (s, versions) = kiln.get("/namespaces/acme/repos/settings/versions").await;
    assert_eq!(s, StatusCode::OK, "{versions}");
    let mut got: Vec<(String, String, String)> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["tag"].as_str().unwrap().to_string(),
                v["digest"].as_str().unwrap().to_string(),
                v["build_id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    got.sort();
    let want_versions: Vec<(String, String, String)> = want
        .iter()
        .map(|t| (t.clone(), digest.to_string(), id.to_string()))
        .collect();
    assert_eq!(got, want_versions);
    // One `image.pushed` per tag, each from the build.
    for t in &want {
        receiver
            .wait_for(
                &format!("image.pushed of :{t}"),
                Duration::from_secs(30),
                |r| r.json()["tag"] == t.as_str(),
            )
            .await;
    }
    let pushed: Vec<Value> = receiver
        .requests()
        .iter()
        .map(|r| r.json())
        .filter(|m| m["event"] == "image.pushed")
        .collect();
    assert_eq!(pushed.len(), 3, "{pushed:#?}");
    for m in &pushed {
        assert_eq!(m["source"], "build", "{m}");
        assert_eq!(m["build"]["id"], id, "{m}");
        assert_eq!(m["digest"], digest, "{m}");
    }

    // OCI labels, read from the image config in the registry.
    let config = image_config(&registry, "acme/settings", &tag).await;
    let labels = &config["config"]["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.revision"],
        head.as_str(),
        "{labels}"
    );
    assert_eq!(
        labels["org.opencontainers.image.source"],
        git.clone_url().as_str(),
        "{labels}"
    );
    assert_eq!(
        labels["org.opencontainers.image.version"],
        tag.as_str(),
        "{labels}"
    );
    let created = labels["org.opencontainers.image.created"]
        .as_str()
        .unwrap_or_else(|| panic!("no created label: {labels}"));
    let created = chrono::DateTime::parse_from_rfc3339(created)
        .unwrap_or_else(|e| panic!("created {created:?} is not RFC 3339: {e}"));
    assert_eq!(created.offset().local_minus_utc(), 0, "UTC");
    let age = chrono::Utc::now().signed_duration_since(created);
    assert!(
        age >= chrono::Duration::zero() - chrono::Duration::seconds(5)
            && age < chrono::Duration::minutes(10),
        "created {created} is not this build's time"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_past_its_rules_timeout_fails_and_pushes_nothing() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let git = GitRepo::new();
    git.write(
        "Dockerfile",
        format!(
            "FROM {base}\nRUN echo {} && sleep 600\n",
            support::new_delivery_id()
        ),
    );
    git.commit("slow");
    git.push("main");
    let rule = ci_rule(
        &kiln,
        &git,
        "slow",
        json!({"type": "branch", "name": "main", "timeout_minutes": 1}),
    )
    .await;
    let build = build_now(&kiln, "slow", &rule).await;
    let id = build["id"].as_str().unwrap();
    let log = kiln.log(id).await;
    assert_eq!(build["status"], "failed", "{build}\n{log}");
    assert_eq!(build["error"], "timed out after 1 min", "{build}");
    assert_eq!(build["settings"]["timeout_minutes"], 1);
    assert!(log.contains("Build failed: timed out after 1 min"), "{log}");
    let started =
        chrono::DateTime::parse_from_rfc3339(build["started_at"].as_str().unwrap()).unwrap();
    let finished =
        chrono::DateTime::parse_from_rfc3339(build["finished_at"].as_str().unwrap()).unwrap();
    let ran = finished.signed_duration_since(started);
    assert!(
        ran >= chrono::Duration::seconds(60) && ran < chrono::Duration::seconds(120),
        "ran {ran}"
    );
    assert!(registry.tags("acme/slow").await.is_empty());
}

/// With the classic builder, whose cache is the local image store: removing the image removes the
/// cache, so only the pulled image can give the steps back. (The daemon's BuildKit keeps its build
/// cache apart from the images; kiln's BuildKit builds carry their cache keys in the image, see
/// `buildkit_images_carry_their_cache_keys`.)
#[tokio::test(flavor = "multi_thread")]
async fn the_previous_image_is_pulled_as_layer_cache_when_the_local_store_lost_it() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[("KILN_BUILDER", "classic")]).await;
    let git = GitRepo::new();
    // A step unique to this run, so no other image on the daemon shares its layers.
    let unique = support::new_delivery_id();
    git.write(
        "Dockerfile",
        format!("FROM {base}\nRUN echo {unique} > /expensive\nCOPY a /a\nCOPY b /b\n"),
    );
    git.write("a", "unchanged\n");
    git.write("b", "first\n");
    git.commit("first");
    git.push("main");
    let rule = ci_rule(
        &kiln,
        &git,
        "cache",
        json!({"type": "branch", "name": "main"}),
    )
    .await;
    let first = build_now(&kiln, "cache", &rule).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let image = first["image"].as_str().unwrap().to_string();
    let digest = first["digest"].as_str().unwrap().to_string();

    // The image the RUN step made (the classic builder's cache for it), from the first log.
    let first_log = kiln.log(first["id"].as_str().unwrap()).await;
    let run_step = first_log
        .split("\nStep ")
        .find(|step| step.starts_with("2/"))
        .and_then(|step| {
            step.lines()
                .filter_map(|l| l.strip_prefix(" ---> "))
                .next_back()
        })
        .unwrap_or_else(|| panic!("no image id for the RUN step in:\n{first_log}"))
        .to_string();
    assert!(support::docker_image_exists(&run_step), "{run_step}");

    // The local store loses the image and, with it, its build cache (its untagged parents).
    support::docker_async(&["rmi", &image]).await;
    assert!(!support::docker_image_exists(&image));
    assert!(!support::docker_image_exists(&run_step), "{run_step}");
    let by_digest = format!("{}@{digest}", image.rsplit_once(':').unwrap().0);
    assert!(!support::docker_image_exists(&by_digest));

    // One file changed.
    git.write("b", "second\n");
    git.commit("second");
    git.push("main");
    let second = build_now(&kiln, "cache", &rule).await;
    let log = kiln.log(second["id"].as_str().unwrap()).await;
    assert_eq!(second["status"], "succeeded", "{second}\n{log}");
    assert!(
        log.contains(&format!(
            "Layer cache: the previous image {by_digest} is not in the local store; pulling it"
        )) && log.contains(&format!("Layer cache: pulled {by_digest}")),
        "{log}"
    );
    // The RUN step and the unchanged COPY came from the pulled image; the changed file did not.
    // (The steps after the Dockerfile's four are kiln's OCI labels.)
    let steps: Vec<&str> = log.split("\nStep ").skip(1).take(4).collect();
    assert_eq!(steps.len(), 4, "{log}");
    for (i, step) in steps.iter().enumerate() {
        let cached = step.contains("Using cache");
        assert_eq!(cached, i == 1 || i == 2, "step {}: {step}\n{log}", i + 1);
    }
    assert_ne!(second["digest"], first["digest"]);
    // What the test pulled into the daemon goes with it.
    let _ = support::docker_async_result(&["rmi", &by_digest]).await;
}

/// A registry, a kiln, and repository `acme/{repo}` whose Dockerfile has one `RUN` step unique to
/// this run, with a `main` rule; its id.
async fn one_run_step_repo(repo: &str) -> (Registry, Kiln, GitRepo, String) {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let git = GitRepo::new();
    git.write(
        "Dockerfile",
        format!(
            "FROM {base}\nRUN echo {} > /x\n",
            support::new_delivery_id()
        ),
    );
    git.commit("first");
    git.push("main");
    let rule = ci_rule(&kiln, &git, repo, json!({"type": "branch", "name": "main"})).await;
    (registry, kiln, git, rule)
}

/// A BuildKit build's image carries its cache keys in its config (BuildKit's inline cache), so the
/// image pulled back as `cache_from` gives its steps back to a daemon that lost them.
#[tokio::test(flavor = "multi_thread")]
async fn buildkit_images_carry_their_cache_keys() {
    let (registry, kiln, git, rule) = one_run_step_repo("inline").await;
    let built = build_now(&kiln, "inline", &rule).await;
    let log = kiln.log(built["id"].as_str().unwrap()).await;
    assert_eq!(built["status"], "succeeded", "{built}\n{log}");
    assert!(log.contains("Builder: BuildKit"), "{log}");
    let manifest = registry.manifest("acme/inline", "main").await;
    let config = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    let config: Value = serde_json::from_slice(&registry.blob("acme/inline", config).await)
        .expect("the image config");
    assert!(
        config.get("moby.buildkit.cache.v0").is_some(),
        "no inline cache in {config}"
    );
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.revision"],
        git.head().as_str(),
        "{config}"
    );
}

/// Whether BuildKit took the log's `RUN` step from its cache (`#5 [2/2] RUN …` then `#5 CACHED`).
fn run_step_cached(log: &str) -> bool {
    let step = log
        .lines()
        .find(|l| l.contains("] RUN "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no RUN step in\n{log}"));
    log.lines().any(|l| l == format!("{step} CACHED"))
}

#[tokio::test(flavor = "multi_thread")]
async fn no_cache_builds_every_step_again() {
    let (_registry, kiln, _git, rule) = one_run_step_repo("nocache").await;
    let first = build_now(&kiln, "nocache", &rule).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let cached = build_now(&kiln, "nocache", &rule).await;
    let log = kiln.log(cached["id"].as_str().unwrap()).await;
    assert!(run_step_cached(&log), "{log}");

    let (s, body) = kiln
        .patch(
            &format!("/namespaces/acme/repos/nocache/rules/{rule}"),
            json!({"no_cache": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let fresh = build_now(&kiln, "nocache", &rule).await;
    let log = kiln.log(fresh["id"].as_str().unwrap()).await;
    assert_eq!(fresh["status"], "succeeded", "{fresh}\n{log}");
    assert_eq!(fresh["settings"]["no_cache"], true);
    assert!(!run_step_cached(&log), "{log}");
    assert!(log.contains("no cache"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_build_does_not_move_the_extra_tags_of_a_newer_one() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    // Two workers: both builds run at once (their tags differ); the older one is slow, so the newer
    // one pushes :latest first.
    let kiln = Kiln::start(&registry, &[("KILN_BUILD_WORKERS", "2")]).await;
    let git = GitRepo::new();
    git.write(
        "Dockerfile",
        format!("FROM {base}\nCOPY x /x\nRUN sleep 5\n"),
    );
    git.write("x", format!("old {}\n", support::new_delivery_id()));
    let old = git.commit("old");
    git.write("Dockerfile", format!("FROM {base}\nCOPY x /x\n"));
    git.write("x", format!("new {}\n", support::new_delivery_id()));
    let new = git.commit("new");
    git.push("main");
    let rule = ci_rule(
        &kiln,
        &git,
        "owner",
        json!({"type": "branch", "name": "main", "overwrite": false, "extra_tags": ["latest"]}),
    )
    .await;
    let mut ids = Vec::new();
    for commit in [&old, &new] {
        let (s, build) = kiln
            .post(
                &format!("/namespaces/acme/repos/owner/rules/{rule}/builds"),
                json!({"ref": "refs/heads/main", "commit": commit}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{build}");
        ids.push(build["id"].as_str().unwrap().to_string());
    }
    let older = kiln.wait_build(&ids[0]).await;
    let newer = kiln.wait_build(&ids[1]).await;
    let older_log = kiln.log(&ids[0]).await;
    assert_eq!(older["status"], "succeeded", "{older}\n{older_log}");
    assert_eq!(newer["status"], "succeeded", "{newer}");
    assert!(
        older_log.contains(&format!(
            "Not moving the extra tags (latest): build {} of the same rule and ref was queued after this one",
            ids[1]
        )),
        "{older_log}"
    );
    // :latest is the newer build's image, whichever order the pushes took.
    assert_eq!(
        registry
            .manifest_digest("acme/owner", "latest")
            .await
            .as_deref(),
        newer["digest"].as_str()
    );
    let (_, versions) = kiln.get("/namespaces/acme/repos/owner/versions").await;
    let latest = versions
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["tag"] == "latest")
        .unwrap_or_else(|| panic!("{versions}"));
    assert_eq!(latest["build_id"], ids[1].as_str());
    let mut tags = registry.tags("acme/owner").await;
    tags.sort();
    let mut want = vec![
        "latest".to_string(),
        format!("main-{}", &old[..7]),
        format!("main-{}", &new[..7]),
    ];
    want.sort();
    assert_eq!(tags, want);
}
