//! The build log's bounds with the real dockerd and registry: a build printing more than
//! `KILN_BUILD_LOG_LIMIT` has its log cut (the cut said once) and still succeeds; a 1 MB line
//! without a newline is cut at the line cap; a long log is read a page at a time.

mod support;

use reqwest::StatusCode;
use serde_json::json;
use support::kiln::{ADMIN_TOKEN, Kiln};
use support::{GitRepo, Registry, github_push_payload};

const ZERO: &str = "0000000000000000000000000000000000000000";
const LIMIT: usize = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_printing_past_the_log_limit_is_cut_and_still_succeeds() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    // The classic builder: it passes a step's whole output on. The daemon's BuildKit clips a step
    // past its own size and rate limits ("[output clipped, log limit 200KiB/s reached]"), so how
    // much reached kiln's cap would depend on timing.
    let kiln = Kiln::start(
        &registry,
        &[
            ("KILN_BUILD_LOG_LIMIT", &LIMIT.to_string()),
            ("KILN_BUILDER", "classic"),
        ],
    )
    .await;
    let git = GitRepo::new();
    // First one 1 MB line with no newline at all, then ~200 KB of numbered lines.
    git.write(
        "Dockerfile",
        format!(
            "{}\
             RUN head -c 1048576 /dev/zero | tr '\\0' y\n\
             RUN i=0; while [ $i -lt 4000 ]; do echo \"output line $i of a chatty build ..........\"; i=$((i+1)); done\n\
             RUN echo the last step ran\n",
            support::fresh_from(base)
        ),
    );
    let sha = git.commit("chatty");
    git.push("main");
    let secret = kiln.ci_repo("acme", "chatty", &git.clone_url()).await;
    kiln.rule(
        "acme",
        "chatty",
        json!({"type": "branch", "name": "main", "overwrite": true}),
    )
    .await;
    let payload = github_push_payload(&git.clone_url(), "refs/heads/main", ZERO, &sha, false);
    let (status, body) = kiln
        .github_hook("push", "chatty-1", &secret, &payload)
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["builds"][0].as_str().unwrap().to_string();
    let build = kiln.wait_build(&id).await;
    let log = kiln.log(&id).await;
    assert_eq!(build["status"], "succeeded", "{build}\n{log}");
    assert!(
        registry
            .tags("acme/chatty")
            .await
            .contains(&"main".to_string()),
        "pushed"
    );

    // The 1 MB line: cut at 16 KiB while it arrived, and said so.
    let long: Vec<&str> = log
        .lines()
        .map(support::step_output)
        .filter(|l| l.starts_with("yyyy"))
        .collect();
    assert_eq!(long.len(), 1, "{}", &log[..2000.min(log.len())]);
    assert_eq!(
        long[0],
        format!("{} [line cut at 16384 bytes]", "y".repeat(16384))
    );

    // The log: cut once, where the limit was reached; later output dropped (the last step's
    // echo, the last numbered lines); kiln's own lines (the outcome) still there.
    let cuts: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("[log cut at "))
        .collect();
    assert_eq!(cuts.len(), 1, "{log}");
    assert!(
        cuts[0].ends_with(&format!(
            "(the limit is {LIMIT}): later output is dropped, the build goes on]"
        )),
        "{}",
        cuts[0]
    );
    let cut_at = log.find("[log cut at ").unwrap();
    assert!(cut_at <= LIMIT, "cut at {cut_at}");
    assert!(log.contains("output line 100 of a chatty build"), "{log}");
    assert!(!log.contains("output line 3999"), "{log}");
    assert!(!log.contains("the last step ran"), "{log}");
    let after_cut = &log[cut_at..];
    assert!(after_cut.contains("Built in "), "{after_cut}");
    assert!(after_cut.contains("Pushed in "), "{after_cut}");
    assert!(log.len() < LIMIT + 4096, "{} bytes", log.len());

    // Stage timings: every stage was reached.
    for stage in ["queued_ms", "fetch_ms", "context_ms", "build_ms", "push_ms"] {
        assert!(build["stages"][stage].is_u64(), "{stage}: {build}");
    }

    // Pages: `limit` lines from `after`, and where the next page starts.
    let all: Vec<&str> = log.lines().collect();
    let page = |query: &str| {
        let url = format!("{}/api/v1/builds/{id}/log?{query}", kiln.url);
        let http = kiln.http.clone();
        async move {
            let resp = http.get(url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
            let status = resp.status();
            let next = resp
                .headers()
                .get("x-kiln-log-next")
                .map(|v| v.to_str().unwrap().to_string());
            (status, next, resp.text().await.unwrap())
        }
    };
    let (status, next, text) = page("limit=10").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(next.as_deref(), Some("10"));
    assert_eq!(text.lines().collect::<Vec<_>>(), all[..10]);
    let (_, next, text) = page("after=10&limit=5").await;
    assert_eq!(next.as_deref(), Some("15"));
    assert_eq!(text.lines().collect::<Vec<_>>(), all[10..15]);
    // Without `limit`, the rest of the log from `after`, streamed.
    let (_, next, text) = page("after=15").await;
    assert_eq!(next, None);
    assert_eq!(text.lines().collect::<Vec<_>>(), all[15..]);
    let (_, next, text) = page(&format!("after={}&limit=1000", all.len())).await;
    assert_eq!(
        (next.as_deref(), text.as_str()),
        (Some(&*all.len().to_string()), "")
    );
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=5&follow=true", "limit"),
        ("after=-1", "after"),
        ("after=x", "after"),
    ] {
        let (status, _, text) = page(query).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {text}");
        let error: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["error"]["field"], field, "{query}: {text}");
    }
}

/// A build that fails while fetching (no Dockerfile at the commit) says so before anything is sent
/// to the daemon; its stages show the time it took, and null for the stages it never reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_failing_at_the_fetch_stage_records_that_stage_only() {
    support::ensure_docker();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let git = GitRepo::new();
    git.write("README.md", "no Dockerfile here\n");
    let sha = git.commit("no dockerfile");
    git.push("main");
    let secret = kiln.ci_repo("acme", "nodockerfile", &git.clone_url()).await;
    kiln.rule(
        "acme",
        "nodockerfile",
        json!({"type": "branch", "name": "main", "overwrite": true}),
    )
    .await;
    let payload = github_push_payload(&git.clone_url(), "refs/heads/main", ZERO, &sha, false);
    let (status, body) = kiln.github_hook("push", "nodf-1", &secret, &payload).await;
    assert_eq!(status, 202, "{body}");
    let id = body["builds"][0].as_str().unwrap().to_string();
    let build = kiln.wait_build(&id).await;
    assert_eq!(build["status"], "failed", "{build}");
    assert_eq!(
        build["error"], "Dockerfile not found at Dockerfile",
        "{build}"
    );
    let stages = &build["stages"];
    assert!(stages["queued_ms"].is_u64(), "{build}");
    assert!(stages["fetch_ms"].is_u64(), "{build}");
    for stage in ["context_ms", "build_ms", "push_ms"] {
        assert!(stages[stage].is_null(), "{stage}: {build}");
    }
    let log = kiln.log(&id).await;
    assert!(log.contains("Waited in the queue for "), "{log}");
    assert!(!log.contains("Context sent"), "{log}");
}
