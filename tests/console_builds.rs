//! The console's builds: the repository's Builds tab, a build's page (facts, failure on top, log),
//! the log followed live while a build runs, the status route the page's script polls, and cancel,
//! with the API's permission checks. Real kiln, real registry, real dockerd, real git repos.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::console::{Console, Page};
use support::kiln::{ADMIN_TOKEN, Kiln};
use support::{GitRepo, Registry, wait_until};

const WAIT: Duration = Duration::from_secs(180);

/// A CI repository `ns/name` whose git source holds `dockerfile` on `main`, and a rule building
/// `main`; returns the git repository and the rule's id.
async fn ci_repo_with(kiln: &Kiln, ns: &str, name: &str, dockerfile: &str) -> (GitRepo, String) {
    let git = GitRepo::named(name);
    git.write("Dockerfile", dockerfile);
    git.commit("first");
    git.push("main");
    kiln.ci_repo(ns, name, &git.clone_url()).await;
    let rule = kiln
        .rule(
            ns,
            name,
            json!({"type": "branch", "name": "main", "overwrite": true}),
        )
        .await;
    (git, rule)
}

/// "Build now" of the rule, through the API; the build's id.
async fn build_now(kiln: &Kiln, ns: &str, name: &str, rule: &str) -> String {
    let (s, b) = kiln
        .post(
            &format!("/namespaces/{ns}/repos/{name}/rules/{rule}/builds"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    b["id"].as_str().unwrap().to_string()
}

async fn status_of(kiln: &Kiln, id: &str) -> String {
    let (_, b) = kiln.get(&format!("/builds/{id}")).await;
    b["status"].as_str().unwrap_or_default().to_string()
}

/// A plain GET through the console's session: status, content type, body.
async fn raw(console: &Console, path: &str) -> (StatusCode, String, String) {
    let r = console
        .http
        .get(format!("{}{path}", console.url))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let kind = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, kind, r.text().await.unwrap())
}

fn row(id: &str, css: &str) -> String {
    format!("tr[data-build=\"{id}\"] {css}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builds_tab_and_the_page_of_a_succeeded_build() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let (git, rule) = ci_repo_with(
        &kiln,
        "acme",
        "app",
        &format!(
            "{}RUN echo hello from the console build\n",
            support::fresh_from(base)
        ),
    )
    .await;
    let id = build_now(&kiln, "acme", "app", &rule).await;
    let build = kiln.wait_build(&id).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    let sha = git.head();
    let console = Console::sign_in(&kiln.url, ADMIN_TOKEN).await;

    // The tab: the build, with its status, trigger, ref, commit, tag, duration and stages.
    let tab = console.get("/repos/acme/app/builds").await;
    assert_eq!(tab.status, StatusCode::OK, "{}", tab.html);
    assert_eq!(
        tab.attrs("nav.tabs a[aria-current=page]", "href"),
        ["/repos/acme/app/builds"]
    );
    assert_eq!(tab.attrs(&row(&id, ".badge"), "data-status"), ["succeeded"]);
    assert_eq!(tab.text(&row(&id, ".badge")), "succeeded");
    assert!(tab.has(&row(&id, ".badge.status-succeeded")));
    assert_eq!(tab.text(&row(&id, ".trigger")), "manual");
    assert_eq!(tab.text(&row(&id, ".build-link")), "main");
    assert_eq!(
        tab.attrs(&row(&id, ".build-link"), "href"),
        [format!("/builds/{id}")]
    );
    assert_eq!(tab.text(&row(&id, "code.commit")), &sha[..7]);
    assert_eq!(tab.attrs(&row(&id, "code.commit"), "title"), [sha.as_str()]);
    assert_eq!(tab.text(&row(&id, "code.tag")), "main");
    assert!(
        tab.text(&row(&id, ".duration")).ends_with(" s")
            || tab.text(&row(&id, ".duration")).ends_with(" ms"),
        "{}",
        tab.text(&row(&id, ".duration"))
    );
    let stages = tab.text(&row(&id, ".stages"));
    for stage in ["queue wait", "fetch", "context", "build", "push"] {
        assert!(stages.contains(stage), "{stages}");
    }

    // The build page: facts, digest, stages, the log; no cancel (it ended), no error.
    let page = console.get(&format!("/builds/{id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert_eq!(page.attrs("#build-status", "data-status"), ["succeeded"]);
    assert_eq!(page.text("#build-status"), "succeeded");
    assert_eq!(
        page.text("#build-digest"),
        build["digest"].as_str().unwrap()
    );
    assert_eq!(page.text("#build-image"), build["image"].as_str().unwrap());
    assert_eq!(page.texts("#build-stages li").len(), 5, "{}", page.html);
    assert!(!page.has("#build-error"));
    assert!(!page.has("#cancel-build"));
    assert_eq!(page.attrs("#build-log", "data-live"), ["false"]);
    let log = kiln.log(&id).await;
    assert!(
        page.text("#build-log")
            .contains("hello from the console build"),
        "{}",
        page.html
    );
    assert_eq!(
        page.attrs("#build-log", "data-after"),
        [log.lines().count().to_string()]
    );
    assert!(page.html.contains(&sha), "the full commit is shown");
    assert!(!page.has("#log-cut"), "a short log is shown whole");

    // The log route: text/plain, the same text as the API's; `after` skips lines; following a
    // finished build answers the rest and ends.
    let (s, kind, text) = raw(&console, &format!("/builds/{id}/log")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(kind.starts_with("text/plain"), "{kind}");
    assert_eq!(text, log);
    let (_, _, text) = raw(&console, &format!("/builds/{id}/log?follow=true&after=2")).await;
    let rest: Vec<&str> = log.lines().skip(2).collect();
    assert_eq!(text.lines().collect::<Vec<_>>(), rest);
    let (s, _, _) = raw(&console, &format!("/builds/{id}/log?after=-1")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _, _) = raw(&console, &format!("/builds/{id}/log?after=x")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // The status route: the API's view as JSON.
    let (s, kind, text) = raw(&console, &format!("/builds/{id}/status")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(kind.starts_with("application/json"), "{kind}");
    let status: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status, build);

    // Cancel of a build that ended: 409, said on the page, in the viewer's language too.
    let refused = console
        .post(
            &format!("/builds/{id}"),
            &format!("/builds/{id}/cancel"),
            &[],
        )
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.html);
    assert_eq!(
        refused.text("#cancel-refused"),
        "the build already ended: succeeded"
    );
    assert_eq!(refused.attrs("#build-status", "data-status"), ["succeeded"]);
    let refused = console
        .post(
            &format!("/builds/{id}"),
            &format!("/builds/{id}/cancel?lang=zh-CN"),
            &[],
        )
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(
        refused.text("#cancel-refused"),
        "这次构建已经结束，没有可取消的内容。"
    );

    // CSRF: no token, or a wrong one, is refused and cancels nothing.
    let page = console
        .send_form(&format!("/builds/{id}/cancel"), &[])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.html);
    let page = console
        .send_form(&format!("/builds/{id}/cancel"), &[("_csrf", "forged")])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);

    // Chinese.
    let zh = console.get(&format!("/builds/{id}?lang=zh-CN")).await;
    assert_eq!(zh.status, StatusCode::OK);
    assert_eq!(zh.attrs("html", "lang"), ["zh-CN"]);
    assert_eq!(zh.text("#build-status"), "成功");
    assert_eq!(zh.text("#log-title"), "日志");
    assert!(zh.text("#build-stages").contains("拉取代码"), "{}", zh.html);
    let zh = console.get("/repos/acme/app/builds?lang=zh-CN").await;
    assert_eq!(zh.text(&row(&id, ".badge")), "成功");
    assert_eq!(zh.text(&row(&id, ".trigger")), "手动");
    assert_eq!(zh.text("#builds th"), "状态");

    // A namespace token of another namespace sees none of it: 404 everywhere.
    let (s, b) = kiln.post("/namespaces", json!({"name": "other"})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let other = Console::sign_in(&kiln.url, &kiln.token("o", "write", Some("other")).await).await;
    for path in [
        format!("/builds/{id}"),
        format!("/builds/{id}/log"),
        format!("/builds/{id}/log?follow=true"),
        format!("/builds/{id}/status"),
        "/repos/acme/app/builds".to_string(),
    ] {
        let (s, _, text) = raw(&other, &path).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {text}");
        assert!(!text.contains("hello from the console build"), "{path}");
    }
    let page = other.post("/", &format!("/builds/{id}/cancel"), &[]).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.html);

    // A read token sees the page, gets no cancel button, and 403 on cancel.
    let reader = Console::sign_in(&kiln.url, &kiln.token("r", "read", Some("acme")).await).await;
    let page = reader.get(&format!("/builds/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.has("#cancel-build"));
    let page = reader
        .post(
            &format!("/builds/{id}"),
            &format!("/builds/{id}/cancel"),
            &[],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.html);
    assert_eq!(status_of(&kiln, &id).await, "succeeded");

    // A build id nobody has: 404 on every route.
    for path in ["/builds/nope", "/builds/nope/log", "/builds/nope/status"] {
        let (s, _, _) = raw(&console, path).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_shows_why_on_top() {
    support::ensure_docker();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let git = GitRepo::named("broken");
    git.write("README.md", "no Dockerfile here\n");
    git.commit("no dockerfile");
    git.push("main");
    kiln.ci_repo("acme", "broken", &git.clone_url()).await;
    let rule = kiln
        .rule("acme", "broken", json!({"type": "branch", "name": "main"}))
        .await;
    let id = build_now(&kiln, "acme", "broken", &rule).await;
    let build = kiln.wait_build(&id).await;
    assert_eq!(build["status"], "failed", "{build}");
    let error = build["error"].as_str().unwrap();

    let console = Console::sign_in(&kiln.url, ADMIN_TOKEN).await;
    let page = console.get(&format!("/builds/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.attrs("#build-status", "data-status"), ["failed"]);
    assert_eq!(page.text("#build-error pre"), error);
    assert!(page.text("#build-error").starts_with("Why it failed:"));
    // On top: before the facts and the log.
    let at = |needle: &str| page.html.find(needle).unwrap_or_else(|| panic!("{needle}"));
    assert!(at("id=\"build-error\"") < at("build-facts"));
    assert!(at("id=\"build-error\"") < at("id=\"build-log\""));
    let zh = console.get(&format!("/builds/{id}?lang=zh-CN")).await;
    assert!(zh.text("#build-error").starts_with("失败原因："));
    assert_eq!(zh.text("#build-status"), "失败");

    let tab = console.get("/repos/acme/broken/builds").await;
    assert_eq!(tab.attrs(&row(&id, ".badge"), "data-status"), ["failed"]);
}

/// Reads `resp`'s body into `got` until `until` holds for it (true) or the body ends (false).
async fn read_until(
    resp: &mut reqwest::Response,
    got: &mut String,
    until: impl Fn(&str) -> bool,
) -> bool {
    while !until(got) {
        match tokio::time::timeout(WAIT, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => got.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) => return until(got),
            Ok(Err(e)) => panic!("log stream broke: {e}"),
            Err(_) => panic!("no log for {WAIT:?}; so far:\n{got}"),
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_streams_while_a_build_runs_and_cancel_stops_builds() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    // One worker: a second build waits in line behind a running one.
    let kiln = Kiln::start(&registry, &[("KILN_BUILD_WORKERS", "1")]).await;
    let (git, rule) = ci_repo_with(
        &kiln,
        "acme",
        "live",
        &format!(
            // `$((…))`: the output differs from the step's own line, which the log shows too.
            "{}RUN echo live-first-$((40+2)) && sleep 6 && echo live-last-$((40+2))\n",
            support::fresh_from(base)
        ),
    )
    .await;
    let console = Console::sign_in(&kiln.url, ADMIN_TOKEN).await;
    let id = build_now(&kiln, "acme", "live", &rule).await;

    // While it runs, the page says it is live, and offers cancel.
    let page = console.get(&format!("/builds/{id}")).await;
    assert_eq!(page.attrs("#build-log", "data-live"), ["true"]);
    assert!(page.has("#cancel-build"));
    assert!(page.html.contains("<script src=\"/static/build.js\""));
    let (s, kind, js) = raw(&console, "/static/build.js").await;
    assert_eq!(s, StatusCode::OK);
    assert!(kind.starts_with("text/javascript"), "{kind}");
    assert!(js.contains("follow=true"), "{js}");

    // Following: the first line arrives while the build still runs, the last one after, and the
    // stream ends when the build does.
    let mut resp = console
        .http
        .get(format!("{}/builds/{id}/log?follow=true", console.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut got = String::new();
    assert!(
        read_until(&mut resp, &mut got, |t| t.contains("live-first-42")).await,
        "{got}"
    );
    assert_eq!(status_of(&kiln, &id).await, "building", "{got}");
    assert!(!got.contains("live-last-42"), "{got}");
    let (s, _, text) = raw(&console, &format!("/builds/{id}/status")).await;
    assert_eq!(s, StatusCode::OK);
    let running: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(running["status"], "building");
    assert!(running["finished_at"].is_null());
    assert!(!read_until(&mut resp, &mut got, |_| false).await);
    assert!(got.contains("live-last-42"), "{got}");
    let build = kiln.wait_build(&id).await;
    assert_eq!(build["status"], "succeeded", "{build}\n{got}");
    assert_eq!(got, kiln.log(&id).await, "the stream is the whole log");
    let page = console.get(&format!("/builds/{id}")).await;
    assert_eq!(page.attrs("#build-log", "data-live"), ["false"]);
    assert!(!page.has("#cancel-build"));

    // Cancel: a build that runs until stopped, and one waiting in line behind it.
    git.write(
        "Dockerfile",
        format!("FROM {base}\nRUN echo cancel-step-$((6*7)) && sleep 300\n"),
    );
    git.commit("endless");
    git.push("main");
    let running = build_now(&kiln, "acme", "live", &rule).await;
    wait_until("the endless build to run its step", WAIT, || async {
        kiln.log(&running).await.contains("cancel-step-42")
    })
    .await;
    let queued = build_now(&kiln, "acme", "live", &rule).await;
    assert_eq!(status_of(&kiln, &queued).await, "queued");

    let page = console.get(&format!("/builds/{queued}")).await;
    assert_eq!(page.attrs("#build-status", "data-status"), ["queued"]);
    assert_eq!(page.text("#queue-position"), "Place in line: 1");
    assert!(page.has("#cancel-build"));
    let tab = console.get("/repos/acme/live/builds").await;
    assert_eq!(tab.text(&row(&queued, ".queue-pos")), "Place in line: 1");
    assert_eq!(
        tab.attrs(&row(&running, ".badge"), "data-status"),
        ["building"]
    );

    // A read token: no button, 403, nothing cancelled.
    let reader = Console::sign_in(&kiln.url, &kiln.token("r", "read", Some("acme")).await).await;
    let page = reader.get(&format!("/builds/{running}")).await;
    assert!(!page.has("#cancel-build"));
    let page = reader
        .post(
            &format!("/builds/{running}"),
            &format!("/builds/{running}/cancel"),
            &[],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(status_of(&kiln, &running).await, "building");

    // The queued one: cancelled at once, back on its page with the flash.
    let done = console
        .post(
            &format!("/builds/{queued}"),
            &format!("/builds/{queued}/cancel"),
            &[],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.html);
    assert!(
        done.url
            .ends_with(&format!("/builds/{queued}?flash=builds_cancelled")),
        "{}",
        done.url
    );
    assert_eq!(done.text("p.flash"), "Build cancelled.");
    assert_eq!(done.attrs("#build-status", "data-status"), ["cancelled"]);
    assert!(!done.has("#cancel-build"));
    assert_eq!(status_of(&kiln, &queued).await, "cancelled");

    // The running one: stopped (its step killed), cancelled.
    let done = console
        .post(
            &format!("/builds/{running}"),
            &format!("/builds/{running}/cancel"),
            &[],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.html);
    assert_eq!(done.attrs("#build-status", "data-status"), ["cancelled"]);
    assert_eq!(done.text("#build-error pre"), "cancelled by user");
    assert_eq!(kiln.wait_build(&running).await["status"], "cancelled");
    assert_eq!(
        registry.tags("acme/live").await,
        vec!["main".to_string()],
        "only the first build pushed"
    );
}

/// The page of a long log shows its last lines, says how many it left out, and links the whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_log_shows_its_end_and_links_the_whole() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let (_git, rule) = ci_repo_with(
        &kiln,
        "acme",
        "chatty",
        &format!(
            "{}RUN i=0; while [ $i -lt 600 ]; do echo \"chatty line $i\"; i=$((i+1)); done\n",
            support::fresh_from(base)
        ),
    )
    .await;
    let id = build_now(&kiln, "acme", "chatty", &rule).await;
    assert_eq!(kiln.wait_build(&id).await["status"], "succeeded");
    let log = kiln.log(&id).await;
    let total = log.lines().count();
    assert!(total > 600, "{total}");

    let console = Console::sign_in(&kiln.url, ADMIN_TOKEN).await;
    let page: Page = console.get(&format!("/builds/{id}")).await;
    let shown = page.text("#build-log");
    assert!(shown.contains("chatty line 599"), "the end is shown");
    assert!(
        !page.html.contains("chatty line 5\n"),
        "the start is left out"
    );
    let omitted = total - 400;
    assert_eq!(
        page.text("#log-cut"),
        format!("The first {omitted} lines are not shown here. Full log (plain text)")
    );
    assert_eq!(
        page.attrs("#log-cut a", "href"),
        [format!("/builds/{id}/log")]
    );
    assert_eq!(page.attrs("#build-log", "data-after"), [total.to_string()]);
    let zh = console.get(&format!("/builds/{id}?lang=zh-CN")).await;
    assert!(
        zh.text("#log-cut")
            .starts_with(&format!("前 {omitted} 行未在此显示。")),
        "{}",
        zh.text("#log-cut")
    );
}
