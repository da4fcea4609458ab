//! The web console in a real browser (headless chromium through chromedriver) against a real kiln,
//! registry, dockerd, git repository and webhook receiver: what a person does, step by step, in
//! English and then in Chinese, with a screenshot of every main page at desktop and phone width
//! under `target/screenshots/`.
//!
//! One test, in order: sign in (a wrong token first), create a repository (a bad name first), link
//! the local git repository as its source, add a branch rule, press "build now" and watch the log
//! grow and the status turn to succeeded without a reload, see the version, add a webhook pointing
//! at a real receiver, send a test and read its access record, then switch to Chinese.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::browser::{Browser, WAIT};
use support::kiln::{ADMIN_TOKEN, Kiln};
use support::{GitRepo, RecordingServer, Registry};

const NS: &str = "acme";
const REPO: &str = "app";
const REPO_PATH: &str = "/repos/acme/app";
/// How many lines the build prints, one a second: long enough to watch it arrive.
const TICKS: u32 = 8;
const BUILD_TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_uses_the_console_in_a_browser() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let receiver = RecordingServer::start().await;
    let git = GitRepo::named("app");
    git.write(
        "Dockerfile",
        format!(
            "{}\
             RUN for i in $(seq 1 {TICKS}); do echo \"tick $i of {TICKS}\"; sleep 1; done\n\
             RUN echo built > /built.txt\n",
            support::fresh_from(base)
        ),
    );
    git.commit("A Dockerfile that takes its time");
    git.push("main");
    // Webhooks to 127.0.0.1 (the receiver) are refused unless allowed, as in e2e_notify.
    let kiln = Kiln::start(&registry, &[("KILN_WEBHOOK_ALLOW", "127.0.0.1")]).await;
    let (s, body) = kiln.post("/namespaces", json!({"name": NS})).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");

    let b = Browser::start(&kiln.url, "en-US").await;
    sign_in(&b).await;
    create_repository(&b).await;
    link_source(&b, &git.clone_url()).await;
    add_rule(&b).await;
    let build_id = build_now_and_watch(&b, &kiln).await;
    see_the_version(&b, &kiln, &build_id).await;
    let delivery = webhook_test_and_record(&b, &receiver).await;
    chinese(&b, &build_id, &delivery).await;
    chinese_form_error(&b).await;
    administration(&b).await;
    b.close().await;
}

/// A wrong token first: still on the sign-in page, which says it failed (and not why); then the
/// admin token lands on the repositories page.
async fn sign_in(b: &Browser) {
    b.goto("/").await;
    let path = b.wait_for_path("/login").await;
    assert!(path.starts_with("/login"), "{path}");
    assert_eq!(b.js("return document.documentElement.lang;").await, "en");
    b.screenshots("sign-in").await;

    b.submit_sign_in("kiln_not_a_real_token_at_all").await;
    assert_eq!(b.text("#login-failed").await, "Sign-in failed.");
    assert!(b.path().await.starts_with("/login"), "{}", b.path().await);
    // The token field is there to try again, marked invalid.
    assert_eq!(
        b.attr("#token", "aria-invalid").await.as_deref(),
        Some("true")
    );
    b.screenshots("sign-in-failed").await;

    b.sign_in(ADMIN_TOKEN).await;
    b.wait_for_path("/").await;
    b.wait_for_text("main h1", "Repositories").await;
    b.screenshots("repositories-empty").await;
}

/// "New repository" from the repositories page: a name with capitals is refused next to the field
/// with what was typed kept; the right name lands on the new repository's overview.
async fn create_repository(b: &Browser) {
    b.click(".page-head a[href^='/new']").await;
    b.wait_for_path("/new").await;
    b.fill("#name", "Bad_Name").await;
    b.fill("#summary", "The app, built on every push").await;
    b.fill(
        "#detail",
        "## The app\n\nBuilt by **kiln** from `main`:\n\n- one\n- two\n",
    )
    .await;
    b.click("form[action='/new'] button[type=submit]").await;

    let error = b.text("#err-name").await;
    assert!(!error.is_empty(), "an empty error next to the name");
    assert_eq!(
        b.path().await,
        "/new",
        "the form is shown again where it was"
    );
    assert_eq!(b.value("#name").await, "Bad_Name", "the name typed is kept");
    assert_eq!(b.value("#summary").await, "The app, built on every push");
    assert_eq!(
        b.attr("#name", "aria-invalid").await.as_deref(),
        Some("true")
    );
    let described = b
        .attr("#name", "aria-describedby")
        .await
        .unwrap_or_default();
    assert!(described.contains("err-name"), "{described}");
    b.screenshots("new-repository-error").await;

    b.fill("#name", REPO).await;
    b.click("form[action='/new'] button[type=submit]").await;
    b.wait_for_path(REPO_PATH).await;
    b.wait_for(".flash").await;
    b.wait_for_text(".page-head h1", REPO).await;
    assert_eq!(
        b.text("#summary").await,
        "The app, built on every push",
        "the overview shows the summary"
    );
}

/// The CI rules tab: link the local git repository (its `file://` URL) as the source; kiln makes
/// a webhook secret and shows it once.
async fn link_source(b: &Browser, clone_url: &str) {
    b.goto(&format!("{REPO_PATH}/rules")).await;
    b.wait_for("#link-form").await;
    b.fill("#clone_url", clone_url).await;
    b.click("#link-form button[type=submit]").await;
    b.wait_for_text("#source-url", clone_url).await;
    b.wait_for("#new-secret").await;
    b.wait_for("#webhook-url").await;
}

/// Add a rule for branch `main` through the rule form; it is listed with its "build now" button.
async fn add_rule(b: &Browser) {
    b.click("#add-rule").await;
    b.wait_for_path(&format!("{REPO_PATH}/rules/new")).await;
    b.select("#type", "branch").await;
    b.fill("#name", "main").await;
    b.screenshots("rule-form").await;
    b.click("#rule-form button[type=submit]").await;
    b.wait_for_path(&format!("{REPO_PATH}/rules")).await;
    b.wait_for_text("tr[data-rule-id] .rule-name", "main").await;
    b.wait_for("tr[data-rule-id] button.build-now").await;
    b.screenshots("rules").await;
}

/// "Build now" opens the build's page; the log grows line by line and the status turns to
/// succeeded while the page stays the same page (a marker set on it survives: no reload).
async fn build_now_and_watch(b: &Browser, kiln: &Kiln) -> String {
    b.click("tr[data-rule-id] button.build-now").await;
    let path = b.wait_for_path("/builds/").await;
    let build_id = path
        .trim_start_matches("/builds/")
        .split(['?', '#'])
        .next()
        .unwrap()
        .to_string();
    b.js("window.__marker = 1; return true;").await;
    let first_status = b
        .attr("#build-status", "data-status")
        .await
        .unwrap_or_default();
    assert!(
        ["queued", "building"].contains(&first_status.as_str()),
        "the page opened on a build already {first_status}: nothing left to watch"
    );

    // The log arrives while the build runs: an early line while the last one is still to come.
    b.wait_for_text_within("#build-log", "tick 2 of", BUILD_TIMEOUT)
        .await;
    let early = b.text("#build-log").await;
    assert!(
        !early.contains(&format!("tick {TICKS} of")),
        "the whole log was there at once:\n{early}"
    );
    assert_eq!(
        b.attr("#build-status", "data-status").await.as_deref(),
        Some("building")
    );
    b.screenshots("build-running").await;
    // Where the log box is and how tall, while the log streams: the page must not move.
    let place = "const r = document.querySelector('#build-log').getBoundingClientRect(); \
                 return [Math.round(r.top + window.scrollY), Math.round(r.height)];";
    let before = b.js(place).await;

    // A line before the last: the build still runs (a second and more steps remain).
    b.wait_for_text_within(
        "#build-log",
        &format!("tick {} of", TICKS - 1),
        BUILD_TIMEOUT,
    )
    .await;
    assert_eq!(
        b.attr("#build-status", "data-status").await.as_deref(),
        Some("building")
    );
    assert_eq!(
        b.js(place).await,
        before,
        "the log box moved or grew while the log streamed (top, height)"
    );
    // The box follows the newest line.
    assert_eq!(
        b.js("const l = document.querySelector('#build-log'); \
              return l.scrollHeight - l.scrollTop - l.clientHeight < 24;")
            .await,
        Value::Bool(true),
        "the log box does not show its newest line"
    );
    b.wait_for_text_within("#build-log", &format!("tick {TICKS} of"), BUILD_TIMEOUT)
        .await;
    b.wait_for_js(
        "the build's status to turn to succeeded",
        "const s = document.querySelector('#build-status'); \
         return !!s && s.dataset.status === 'succeeded';",
        BUILD_TIMEOUT,
    )
    .await;
    assert_eq!(
        b.js("return window.__marker === 1;").await,
        Value::Bool(true),
        "the page was reloaded"
    );
    let status = b.text("#build-status").await;
    assert_eq!(status, "succeeded");
    assert!(
        !b.has("#build-error").await,
        "a succeeded build shows an error"
    );
    for cancel in b.all("#cancel-build").await {
        assert!(
            !cancel.is_displayed().await.unwrap(),
            "a finished build still offers to cancel"
        );
    }
    let log = b.text("#build-log").await;
    assert!(log.contains("tick 1 of"), "{log}");
    // The API agrees.
    let (_, build) = kiln.get(&format!("/builds/{build_id}")).await;
    assert_eq!(build["status"], "succeeded", "{build}");

    // After a reload the finished page shows the same.
    b.goto(&format!("/builds/{build_id}")).await;
    b.wait_for_text("#build-status", "succeeded").await;
    b.wait_for_text("#build-log", &format!("tick {TICKS} of"))
        .await;
    b.screenshots("build").await;
    build_id
}

/// The new version on the Versions tab (with the build's tag and digest), the build on the Builds
/// tab, the overview and the repositories list.
async fn see_the_version(b: &Browser, kiln: &Kiln, build_id: &str) {
    let (_, build) = kiln.get(&format!("/builds/{build_id}")).await;
    let tag = build["tag"].as_str().expect("the build's tag").to_string();
    let digest = build["digest"]
        .as_str()
        .expect("the build's digest")
        .to_string();

    b.goto(&format!("{REPO_PATH}/versions")).await;
    let row = format!("#versions tr[data-tag='{tag}']");
    b.wait_for(&row).await;
    let shown = b
        .attr(&format!("{row} code.digest"), "title")
        .await
        .unwrap_or_default();
    assert_eq!(shown, digest, "the version's digest");
    assert!(
        b.has(&format!("{row} a[href='/builds/{build_id}']")).await,
        "the version links to its build"
    );
    b.screenshots("versions").await;

    b.goto(&format!("{REPO_PATH}/builds")).await;
    let row = format!("#builds tr[data-build='{build_id}']");
    b.wait_for_text(&format!("{row} [data-status]"), "succeeded")
        .await;
    b.wait_for_text(&format!("{row} code.tag"), &tag).await;
    b.screenshots("builds").await;

    b.goto(REPO_PATH).await;
    b.wait_for_text("#pull-cmd", &format!("{NS}/{REPO}")).await;
    b.screenshots("overview").await;

    b.goto("/").await;
    b.wait_for_text("#repos", REPO).await;
    b.screenshots("repositories").await;
}

/// A webhook to the real receiver from the Webhooks tab, "send test", the record on the
/// subscription's page, and the access record with the request and the response. Returns the
/// record's id.
async fn webhook_test_and_record(b: &Browser, receiver: &RecordingServer) -> String {
    b.goto(&format!("{REPO_PATH}/webhooks")).await;
    b.wait_for("#add-webhook").await;
    let url = format!("{}/kiln-hook", receiver.url);
    b.fill("#wh-name", "receiver").await;
    b.fill("#wh-url", &url).await;
    b.click("#add-webhook button[type=submit]").await;
    // The subscription's page, with the signing secret kiln made, shown this once.
    b.wait_for_text(".wh-title", "receiver").await;
    b.wait_for(".flash").await;
    assert!(b.text("#new-secret").await.starts_with("whsec_"));
    b.screenshots("webhook-created").await;
    let hook_page = b
        .js("return document.querySelector('button.send-test').form.getAttribute('action');")
        .await
        .as_str()
        .expect("the send-test form's action")
        .trim_end_matches("/test")
        .to_string();
    assert!(
        hook_page.starts_with(&format!("{REPO_PATH}/webhooks/")),
        "{hook_page}"
    );

    b.goto(&format!("{REPO_PATH}/webhooks")).await;
    b.wait_for_text("tr[data-webhook-id] .wh-name", "receiver")
        .await;
    b.wait_for_text("tr[data-webhook-id] .wh-url", &url).await;
    b.screenshots("webhooks").await;

    b.click("tr[data-webhook-id] button.send-test").await;
    b.wait_for_path(&hook_page).await;
    let request = receiver
        .wait_for("the test delivery", WAIT, |r| r.path == "/kiln-hook")
        .await;
    let sent = request.json();
    b.wait_for_js(
        "the test's record to say it succeeded",
        "const s = document.querySelector('#records tr[data-delivery-id] .delivery-status'); \
         return !!s && s.dataset.status === 'succeeded';",
        WAIT,
    )
    .await;
    b.screenshots("webhook").await;

    b.click("#records tr[data-delivery-id] a.record-link").await;
    let path = b.wait_for_path("/deliveries/").await;
    let delivery = path
        .trim_start_matches("/deliveries/")
        .split(['?', '#'])
        .next()
        .unwrap()
        .to_string();
    let line = b.text(".attempt .request-line").await;
    assert!(line.contains("POST") && line.contains(&url), "{line}");
    let body = b.text(".attempt .request pre.body").await;
    let event = sent["event"]
        .as_str()
        .or(sent["type"].as_str())
        .unwrap_or("test");
    assert!(
        body.contains(event),
        "the request body shown:\n{body}\nsent: {sent}"
    );
    assert!(
        b.text(".attempt .request table.headers")
            .await
            .to_lowercase()
            .contains("content-type"),
        "the request headers are shown"
    );
    assert_eq!(b.text(".attempt .response-status").await, "200");
    assert!(
        b.has(".attempt .response table.headers").await,
        "the response headers are shown"
    );
    b.screenshots("delivery").await;
    delivery
}

/// The language switch on the top bar: the same pages in Chinese (`<html lang="zh-CN">`), and
/// the choice is remembered from page to page.
async fn chinese(b: &Browser, build_id: &str, delivery: &str) {
    b.goto(&format!("/deliveries/{delivery}")).await;
    b.click("nav.langs a[hreflang='zh-CN']").await;
    b.wait_for_js(
        "the page to be in Chinese",
        "return document.readyState === 'complete' && document.documentElement.lang === 'zh-CN';",
        WAIT,
    )
    .await;
    assert!(
        b.path()
            .await
            .starts_with(&format!("/deliveries/{delivery}"))
    );
    expect_chinese(b, &["访问记录", "请求", "响应", "重新投递", "退出登录"]).await;
    b.screenshots("zh-delivery").await;

    // Remembered: the next pages, opened without `?lang=`, are Chinese too.
    let pages: [(String, &[&str], &str); 7] = [
        ("/".into(), &["镜像仓库", "搜索"], "zh-repositories"),
        (REPO_PATH.into(), &["概览", "说明", "概况"], "zh-overview"),
        (
            format!("{REPO_PATH}/versions"),
            &["镜像版本", "标签", "摘要"],
            "zh-versions",
        ),
        (format!("{REPO_PATH}/builds"), &["构建记录"], "zh-builds"),
        (
            format!("/builds/{build_id}"),
            &["构建", "日志", "详情"],
            "zh-build",
        ),
        (
            format!("{REPO_PATH}/rules"),
            &["Git 源", "构建规则", "立即构建"],
            "zh-rules",
        ),
        (
            format!("{REPO_PATH}/webhooks"),
            &["Webhook 订阅", "发送测试"],
            "zh-webhooks",
        ),
    ];
    for (path, words, shot) in pages {
        b.goto(&path).await;
        b.wait_for_js(
            "the page to be in Chinese",
            "return document.readyState === 'complete' && document.documentElement.lang === 'zh-CN';",
            WAIT,
        )
        .await;
        expect_chinese(b, words).await;
        b.screenshots(shot).await;
    }
}

/// The naming error of the new-repository form, in Chinese.
async fn chinese_form_error(b: &Browser) {
    b.goto(&format!("/new?ns={NS}")).await;
    b.fill("#name", "Bad_Name").await;
    b.click("form[action='/new'] button[type=submit]").await;
    let error = b.text("#err-name").await;
    assert!(
        error
            .chars()
            .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
        "the naming error is not in Chinese: {error:?}"
    );
    assert_eq!(b.value("#name").await, "Bad_Name");
    b.screenshots("zh-new-repository-error").await;
}

async fn expect_chinese(b: &Browser, words: &[&str]) {
    let text = b.page_text().await;
    for word in words {
        assert!(
            text.contains(word),
            "no {word:?} on the Chinese page {}:\n{text}",
            b.path().await
        );
    }
}

/// The administration page (kiln-wide admins): a token made there is shown once; screenshots.
async fn administration(b: &Browser) {
    b.goto("/admin?lang=en").await;
    b.wait_for_text("main h1", "Administration").await;
    b.fill("#tk-name", "deploy-bot").await;
    b.click("#new-token-form button[type=submit]").await;
    b.wait_for("#new-token-value").await;
    assert!(b.text("#new-token-value").await.starts_with("kiln_"));
    b.screenshots("admin").await;
    b.goto("/admin?lang=zh-CN").await;
    b.wait_for_text("main h1", "系统管理").await;
    assert!(
        !b.page_text().await.contains("kiln_"),
        "the token is not shown again"
    );
    b.screenshots("zh-admin").await;
}
