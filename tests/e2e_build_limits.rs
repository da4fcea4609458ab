//! Build limits (issue 11), end to end with the real dockerd: a build over its memory limit fails
//! with that reason; `network: "none"` (per rule, or for the whole server) leaves `RUN` steps with a
//! loopback interface only while the default has the daemon's network; CPU shares reach the `RUN`
//! containers' cgroup. The `RUN` steps print what they see into the build log.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::GitRepo;
use support::kiln::Kiln;

/// A CI repository `acme/{repo}` of `git` with a `main` rule (plus `extra` fields), built now;
/// returns the finished build and its log.
async fn build_main(kiln: &Kiln, git: &GitRepo, repo: &str, extra: Value) -> (Value, String) {
    kiln.ci_repo("acme", repo, &git.clone_url()).await;
    let mut rule = json!({"type": "branch", "name": "main", "no_cache": true});
    rule.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let rule = kiln.rule("acme", repo, rule).await;
    let (s, build) = kiln
        .post(
            &format!("/namespaces/acme/repos/{repo}/rules/{rule}/builds"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{build}");
    let build = kiln.wait_build(build["id"].as_str().unwrap()).await;
    let log = kiln.log(build["id"].as_str().unwrap()).await;
    (build, log)
}

/// A repository whose Dockerfile runs `run` on the test base image.
fn repo_running(run: &str) -> GitRepo {
    let base = support::ensure_base_image();
    let git = GitRepo::new();
    git.write("Dockerfile", format!("FROM {base}\nRUN {run}\n"));
    git.commit("one RUN step");
    git.push("main");
    git
}

/// `tail` keeps its "last ten lines" in memory: 100 MiB without a newline is 100 MiB of RSS.
const ALLOCATE_100M: &str = "head -c 100m /dev/zero | tail > /dev/null";

#[tokio::test(flavor = "multi_thread")]
async fn a_build_over_its_memory_limit_fails_with_that_reason() {
    support::ensure_docker();
    let registry = support::Registry::start();
    let kiln = Kiln::start(&registry, &[("KILN_BUILD_MEMORY", "32m")]).await;

    let (build, log) = build_main(&kiln, &repo_running(ALLOCATE_100M), "hungry", json!({})).await;
    assert_eq!(build["status"], "failed", "{build}\n{log}");
    let error = build["error"].as_str().unwrap();
    assert!(
        error.starts_with("ran out of memory: the build is limited to 32 MiB"),
        "{error}\n{log}"
    );
    assert!(log.contains("Build limits: memory 32 MiB"), "{log}");

    // A step killed by something else (exit code 137 as well) is not called out of memory: the
    // daemon's `oom` event decides. (The inner shell is not PID 1, which ignores SIGKILL.)
    let (build, log) = build_main(
        &kiln,
        &repo_running("sh -c 'kill -9 $$'; exit $?"),
        "killed",
        json!({}),
    )
    .await;
    assert_eq!(build["status"], "failed", "{build}\n{log}");
    let error = build["error"].as_str().unwrap();
    assert!(error.ends_with("returned a non-zero code: 137"), "{error}");
    assert!(!error.contains("memory"), "{error}");

    // Within the limit the same server builds, and the limit is the RUN container's.
    let (build, log) = build_main(
        &kiln,
        &repo_running(
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
        ),
        "modest",
        json!({}),
    )
    .await;
    assert_eq!(build["status"], "succeeded", "{build}\n{log}");
    assert!(log.lines().any(|l| l.trim() == "33554432"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_memory_limit_the_same_build_succeeds() {
    support::ensure_docker();
    let registry = support::Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let (build, log) = build_main(&kiln, &repo_running(ALLOCATE_100M), "hungry", json!({})).await;
    assert_eq!(build["status"], "succeeded", "{build}\n{log}");
    assert!(!log.contains("Build limits"), "{log}");
}

/// The network interfaces a `RUN` step sees.
const LIST_INTERFACES: &str = "cat /proc/net/dev";

fn interfaces(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| support::step_output(l).trim().split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .filter(|n| n == "lo" || n.starts_with("eth"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_with_network_none_sees_only_loopback_while_the_default_has_the_daemons_network() {
    support::ensure_docker();
    let registry = support::Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let git = repo_running(LIST_INTERFACES);

    let (open, log) = build_main(&kiln, &git, "open", json!({})).await;
    assert_eq!(open["status"], "succeeded", "{open}\n{log}");
    let seen = interfaces(&log);
    assert!(seen.contains(&"lo".to_string()), "{seen:?}\n{log}");
    assert!(seen.iter().any(|i| i.starts_with("eth")), "{seen:?}\n{log}");
    assert!(open["settings"].get("network").is_none(), "{open}");

    let (sealed, log) = build_main(&kiln, &git, "sealed", json!({"network": "none"})).await;
    assert_eq!(sealed["status"], "succeeded", "{sealed}\n{log}");
    assert_eq!(interfaces(&log), vec!["lo".to_string()], "{log}");
    assert!(log.contains("Build limits: network none"), "{log}");
    // The build keeps the settings it ran with.
    assert_eq!(sealed["settings"]["network"], "none", "{sealed}");
}

/// The host's network for every build (`KILN_BUILD_NETWORK=host`), on BuildKit too: a step sees the
/// daemon's own bridge (`docker0`), which only the host's network namespace has.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_wide_host_network_reaches_buildkit_steps() {
    support::ensure_docker();
    let registry = support::Registry::start();
    let kiln = Kiln::start(&registry, &[("KILN_BUILD_NETWORK", "host")]).await;
    let git = repo_running(LIST_INTERFACES);
    let (build, log) = build_main(&kiln, &git, "hostnet", json!({})).await;
    assert_eq!(build["status"], "succeeded", "{build}\n{log}");
    assert!(log.contains("Builder: BuildKit"), "{log}");
    assert!(
        log.lines()
            .any(|l| support::step_output(l).trim().starts_with("docker0:")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_wide_network_and_cpu_shares_reach_the_run_steps() {
    support::ensure_docker();
    let registry = support::Registry::start();
    let kiln = Kiln::start(
        &registry,
        &[
            ("KILN_BUILD_NETWORK", "none"),
            ("KILN_BUILD_CPU_SHARES", "512"),
        ],
    )
    .await;
    // cgroup v1 shows the shares; v2 shows the weight runc makes of them (512 shares: weight 20).
    let git = repo_running(&format!(
        "echo shares=$(cat /sys/fs/cgroup/cpu/cpu.shares 2>/dev/null || echo weight-$(cat /sys/fs/cgroup/cpu.weight)) && {LIST_INTERFACES}"
    ));
    let (build, log) = build_main(&kiln, &git, "limited", json!({})).await;
    assert_eq!(build["status"], "succeeded", "{build}\n{log}");
    assert!(
        log.lines()
            .any(|l| l.trim() == "shares=512" || l.trim() == "shares=weight-20"),
        "{log}"
    );
    assert_eq!(interfaces(&log), vec!["lo".to_string()], "{log}");
    assert!(
        log.contains("Build limits: CPU shares 512; network none"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rules_network_is_validated_shown_and_changed() {
    let registry = support::Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    kiln.ci_repo("acme", "api", "https://github.com/acme/api.git")
        .await;
    let rules = "/namespaces/acme/repos/api/rules";
    let (s, rule) = kiln
        .post(rules, json!({"type": "branch", "name": "main"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{rule}");
    assert_eq!(rule["network"], "default");
    let one = format!("{rules}/{}", rule["id"].as_str().unwrap());

    for (bad, says) in [
        (json!("host"), "whole server"),
        (json!("bridge"), "\"default\""),
        (json!(""), "\"default\""),
    ] {
        let (s, body) = kiln.patch(&one, json!({"network": bad})).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["error"]["field"], "network", "{body}");
        assert_eq!(body["error"]["code"], "invalid_value", "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{body}"
        );
    }
    let (s, body) = kiln.patch(&one, json!({"network": 5})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "network", "{body}");

    let (s, body) = kiln.patch(&one, json!({"network": "none"})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["network"], "none");
    let (_, body) = kiln.get(&one).await;
    assert_eq!(body["network"], "none");
    // Other changes keep it; null is the default again.
    let (_, body) = kiln.patch(&one, json!({"no_cache": true})).await;
    assert_eq!(body["network"], "none");
    let (s, body) = kiln.patch(&one, json!({"network": null})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["network"], "default");
    let (s, body) = kiln
        .post(
            rules,
            json!({"type": "tag", "name": "v*", "network": "none"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["network"], "none");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_rule_form_sets_and_shows_the_network() {
    let registry = support::Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    kiln.ci_repo("acme", "api", "https://github.com/acme/api.git")
        .await;
    let rule = kiln
        .rule("acme", "api", json!({"type": "branch", "name": "main"}))
        .await;
    let console = support::console::Console::sign_in(&kiln.url, support::kiln::ADMIN_TOKEN).await;
    let edit = format!("/repos/acme/api/rules/{rule}/edit");
    let page = console.get(&edit).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert_eq!(
        page.attrs("#network option[selected]", "value"),
        vec!["default"]
    );

    let fields = [
        ("type", "branch"),
        ("name", "main"),
        ("dockerfile", "Dockerfile"),
        ("context", "."),
        ("overwrite", "on"),
        ("enabled", "on"),
        ("network", "none"),
    ];
    let page = console.post(&edit, &edit, &fields).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let (_, r) = kiln
        .get(&format!("/namespaces/acme/repos/api/rules/{rule}"))
        .await;
    assert_eq!(r["network"], "none", "{r}");
    assert!(
        page.text(&format!("tr[data-rule-id='{rule}']"))
            .contains("No network for RUN steps"),
        "{}",
        page.html
    );
    let page = console.get(&edit).await;
    assert_eq!(
        page.attrs("#network option[selected]", "value"),
        vec!["none"]
    );

    // A value the API refuses is shown next to the field.
    let mut host = fields.to_vec();
    host.retain(|(f, _)| *f != "network");
    host.push(("network", "host"));
    let page = console.post(&edit, &edit, &host).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.text("#err-network").contains("whole server"),
        "{}",
        page.html
    );
}
