//! The web console in a real browser (headless chromium through chromedriver) against a real kiln,
//! registry, dockerd, git repository and webhook receiver: what a person does, step by step, in
//! English and then in Chinese, with a screenshot of every main page at desktop and phone width
//! under `target/screenshots/`.

mod support;

use reqwest::StatusCode;
use serde_json::json;
use support::browser::Browser;
use support::kiln::{ADMIN_TOKEN, Kiln};
use support::{RecordingServer, Registry};

const NS: &str = "acme";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_uses_the_console_in_a_browser() {
    support::ensure_docker();
    support::ensure_base_image();
    let registry = Registry::start();
    let receiver = RecordingServer::start().await;
    let kiln = Kiln::start(&registry, &[("KILN_WEBHOOK_ALLOW", "127.0.0.1")]).await;
    let (s, body) = kiln.post("/namespaces", json!({"name": NS})).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");

    let b = Browser::start(&kiln.url, "en-US").await;
    sign_in(&b).await;
    repositories_page(&b).await;
    chinese(&b).await;
    drop(receiver);
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
    let failed = b.wait_for("#login-failed").await;
    assert_eq!(failed.text().await.unwrap(), "Sign-in failed.");
    assert!(b.path().await.starts_with("/login"), "{}", b.path().await);
    // The token field is there to try again, marked invalid.
    let token = b.wait_for("#token").await;
    assert_eq!(
        token.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );
    b.screenshots("sign-in-failed").await;

    b.sign_in(ADMIN_TOKEN).await;
    b.wait_for_path("/").await;
    b.wait_for_text("main h1", "Repositories").await;
}

async fn repositories_page(b: &Browser) {
    b.goto("/").await;
    b.wait_for_text("main h1", "Repositories").await;
    b.screenshots("repositories").await;
}

/// The language switch on the top bar: the same page in Chinese, `<html lang="zh-CN">`, and it is
/// remembered on the next page.
async fn chinese(b: &Browser) {
    b.goto("/").await;
    b.click("nav.langs a[hreflang='zh-CN']").await;
    b.wait_for_js(
        "the page to be in Chinese",
        "return document.documentElement.lang === 'zh-CN';",
        support::browser::WAIT,
    )
    .await;
    b.wait_for_text("main h1", "镜像仓库").await;
    let text = b.page_text().await;
    for zh in ["退出登录", "搜索", "显示已隐藏的仓库"] {
        assert!(text.contains(zh), "no {zh:?} on the Chinese page:\n{text}");
    }
    // Remembered: the next page, without `?lang=`, is Chinese too.
    b.goto("/login").await;
    b.wait_for_js(
        "the next page to be in Chinese",
        "return document.documentElement.lang === 'zh-CN';",
        support::browser::WAIT,
    )
    .await;
    b.screenshots("zh-repositories").await;
}
