//! The web console's front door, against the real kiln: signing in and out, sessions (server-side,
//! HttpOnly + SameSite cookie, idle and absolute expiry, ended with their token), CSRF on every
//! form including sign-in, the language (query, cookie, Accept-Language), the repositories page's
//! namespace limits, and many people signing in at once.

mod support;

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::json;
use support::Registry;
use support::console::Console;
use support::kiln::{ADMIN_TOKEN, Kiln};

async fn namespace_with_repos(kiln: &Kiln, ns: &str, repos: &[&str]) {
    let (s, body) = kiln.post("/namespaces", json!({"name": ns})).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    for r in repos {
        let (s, body) = kiln
            .post(&format!("/namespaces/{ns}/repos"), json!({"name": r}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
}

/// A client that does not follow redirects, to see each answer as it is.
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// Signs in without a cookie jar and returns the session cookie's value.
async fn session_cookie(kiln: &Kiln, token: &str) -> String {
    let session = session_set_cookie(kiln, token).await;
    assert!(
        !session.contains("Secure"),
        "plain-http kiln sets no Secure: {session}"
    );
    session
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("kiln_session=")
        .to_string()
}

/// Signs in without a cookie jar and returns the session's whole `Set-Cookie`.
async fn session_set_cookie(kiln: &Kiln, token: &str) -> String {
    let http = raw_client();
    let r = http
        .get(format!("{}/login", kiln.url))
        .send()
        .await
        .unwrap();
    let login = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("kiln_login="))
        .expect("sign-in form sets its CSRF cookie");
    let login_value = login
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("kiln_login=")
        .to_string();
    let r = http
        .post(format!("{}/login", kiln.url))
        .header("cookie", format!("kiln_login={login_value}"))
        .form(&[("token", token), ("_csrf", &login_value), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookies = set_cookies(&r);
    let session = cookies
        .iter()
        .find(|c| c.starts_with("kiln_session="))
        .expect("a session cookie");
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Lax"), "{session}");
    assert!(session.contains("Path=/"), "{session}");
    assert!(
        !session.contains(token),
        "the API token is never in the cookie"
    );
    session.clone()
}

async fn get_with_cookie(kiln: &Kiln, path: &str, cookie: &str) -> reqwest::Response {
    raw_client()
        .get(format!("{}{path}", kiln.url))
        .header("cookie", format!("kiln_session={cookie}"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn sign_in_sign_out_and_sessions() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    namespace_with_repos(&kiln, "red", &["app"]).await;

    // Not signed in: every page sends you to the sign-in form, remembering where you were going.
    let r = raw_client()
        .get(format!("{}/?ns=red&x=1", kiln.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()["location"],
        "/login?next=%2F%3Fns%3Dred%26x%3D1"
    );
    let console = Console::new(&kiln.url);
    let page = console.get("/").await;
    assert!(page.url.ends_with("/login?next=%2F"), "{}", page.url);
    assert!(page.has("form[action='/login'] input[name=token][type=password]"));

    // A wrong token: 401, the form again, a message that says it failed and not why.
    let page = console.try_sign_in("kiln_not_a_real_token").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert_eq!(page.text("#login-failed"), "Sign-in failed.");
    assert!(!page.html.contains("unknown token"), "no reason given");
    assert!(
        console.get("/").await.url.contains("/login"),
        "still signed out"
    );

    // The right one: home, with the namespace's repositories.
    let page = console.try_sign_in(ADMIN_TOKEN).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(page.url.ends_with('/'), "{}", page.url);
    assert_eq!(page.text("#repos tbody a"), "app");

    // Sign-in itself checks its CSRF cookie: a form posted from elsewhere is refused.
    let r = raw_client()
        .post(format!("{}/login", kiln.url))
        .form(&[("token", ADMIN_TOKEN), ("_csrf", "made-up")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        set_cookies(&r)
            .iter()
            .all(|c| !c.starts_with("kiln_session="))
    );

    // Cookie attributes, and the cookie opens the session by itself.
    let cookie = session_cookie(&kiln, ADMIN_TOKEN).await;
    assert_eq!(
        get_with_cookie(&kiln, "/", &cookie).await.status(),
        StatusCode::OK
    );

    // Sign-out without the CSRF token: 403, still signed in.
    let page = console.send_form("/logout", &[]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.has("#error-message"));
    assert_eq!(console.get("/").await.status, StatusCode::OK);
    assert!(!console.get("/").await.url.contains("/login"));
    // With it: the session ends on the server (its old cookie opens nothing).
    let page = console.post("/", "/logout", &[]).await;
    assert!(page.url.contains("/login"), "{}", page.url);
    assert!(console.get("/").await.url.contains("/login"));
    assert_eq!(
        get_with_cookie(&kiln, "/", &cookie).await.status(),
        StatusCode::OK,
        "other sessions live on"
    );

    // A session ends with its token.
    let red = kiln.token("red-reader", "read", Some("red")).await;
    let cookie = session_cookie(&kiln, &red).await;
    assert_eq!(
        get_with_cookie(&kiln, "/", &cookie).await.status(),
        StatusCode::OK
    );
    let (_, tokens) = kiln.get("/tokens").await;
    let id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "red-reader")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = kiln.delete(&format!("/tokens/{id}")).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let r = get_with_cookie(&kiln, "/", &cookie).await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "deleted token, ended session"
    );

    // Idle and absolute expiry, as stored: a session idle past KILN_SESSION_IDLE_MINUTES, or past
    // its absolute end, opens nothing.
    let db_path = kiln.data_dir.path().join("kiln.db");
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", db_path.display()))
        .await
        .unwrap();
    let idle = session_cookie(&kiln, ADMIN_TOKEN).await;
    let old = session_cookie(&kiln, ADMIN_TOKEN).await;
    let hash = |v: &str| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(v.as_bytes()))
    };
    sqlx::query("UPDATE console_sessions SET last_seen_at = '2000-01-01T00:00:00.000000Z' WHERE id_hash = ?")
        .bind(hash(&idle))
        .execute(&db)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE console_sessions SET expires_at = '2000-01-01T00:00:00.000000Z' WHERE id_hash = ?",
    )
    .bind(hash(&old))
    .execute(&db)
    .await
    .unwrap();
    assert_eq!(
        get_with_cookie(&kiln, "/", &idle).await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        get_with_cookie(&kiln, "/", &old).await.status(),
        StatusCode::SEE_OTHER
    );
    // No token is stored: only hashes.
    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT id_hash, token_hash FROM console_sessions")
            .fetch_all(&db)
            .await
            .unwrap();
    assert!(!stored.is_empty());
    for (id_hash, token_hash) in stored {
        assert_ne!(id_hash, idle);
        assert_ne!(token_hash, ADMIN_TOKEN);
        assert_eq!(token_hash.len(), 64);
    }

    // A path nothing serves: the console's page, not an empty answer.
    let page = console.get("/no/such/page").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.has("#error-message"));

    // `next` never leaves the site.
    let page = console.get("/login?next=https://evil.example/").await;
    assert_eq!(page.attrs("input[name=next]", "value"), vec!["/"]);
}

#[tokio::test]
async fn language_from_query_cookie_and_header() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let console = Console::sign_in(&kiln.url, ADMIN_TOKEN).await;

    let page = console.get("/").await;
    assert_eq!(page.attrs("html", "lang"), vec!["en"]);
    assert_eq!(page.text("h1"), "Repositories");
    // The switch is on every page and keeps the page.
    let links = page.attrs(".langs a[hreflang='zh-CN']", "href");
    assert_eq!(links, vec!["/?lang=zh-CN"]);

    let page = console.get("/?lang=zh-CN").await;
    assert_eq!(page.attrs("html", "lang"), vec!["zh-CN"]);
    assert_eq!(page.text("h1"), "镜像仓库");
    assert_eq!(page.text("button[type=submit].ghost"), "退出登录");
    // Remembered without the query.
    let page = console.get("/").await;
    assert_eq!(page.text("h1"), "镜像仓库");
    // Errors too.
    let page = console.get("/?ns=nope").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert_eq!(
        page.text("#error-message"),
        "这里没有内容，或者您无权查看。"
    );
    let page = console.get("/?lang=en").await;
    assert_eq!(page.text("h1"), "Repositories");

    // A new visitor's browser language picks the sign-in page's language.
    let r = reqwest::Client::new()
        .get(format!("{}/login", kiln.url))
        .header("accept-language", "zh-CN,zh;q=0.9,en;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-language"], "zh-CN");
    let html = r.text().await.unwrap();
    assert!(html.contains("使用 kiln API 令牌登录"), "{html}");
}

#[tokio::test]
async fn the_repositories_page_shows_only_what_the_token_may_see() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    namespace_with_repos(&kiln, "red", &["red-app", "red-db"]).await;
    namespace_with_repos(&kiln, "blue", &["blue-app"]).await;
    let (s, _) = kiln
        .post("/namespaces/red/repos/red-db/hide", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);

    let red = kiln.token("red-reader", "read", Some("red")).await;
    let console = Console::sign_in(&kiln.url, &red).await;
    let page = console.get("/").await;
    assert_eq!(page.texts("#repos tbody a.strong"), vec!["red-app"]);
    assert!(!page.has("#ns-pick"), "one namespace: no switch");
    let page = console.get("/?hidden=1").await;
    assert_eq!(
        page.texts("#repos tbody a.strong"),
        vec!["red-db", "red-app"]
    );
    assert!(page.has("#repos .badge.hidden"));
    let page = console.get("/?ns=blue").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(!page.html.contains("blue-app"));

    // An admin sees both namespaces and can search.
    let admin = Console::sign_in(&kiln.url, ADMIN_TOKEN).await;
    let page = admin.get("/?ns=blue").await;
    assert_eq!(page.texts("#ns-pick option"), vec!["blue", "red"]);
    assert_eq!(page.texts("#repos tbody a.strong"), vec!["blue-app"]);
    let page = admin.get("/?ns=red&q=APP").await;
    assert_eq!(page.texts("#repos tbody a.strong"), vec!["red-app"]);
    let page = admin.get("/?ns=red&q=zzz").await;
    assert!(!page.has("#repos"));
    assert!(page.has(".empty"));
}

#[tokio::test]
async fn many_people_sign_in_at_once() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    namespace_with_repos(&kiln, "red", &["app"]).await;
    let url = kiln.url.clone();
    let tasks: Vec<_> = (0..48)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let console = Console::new(&url);
                // Every third one with a wrong token.
                let token = if i % 3 == 0 {
                    "kiln_wrong"
                } else {
                    ADMIN_TOKEN
                };
                let page = console.try_sign_in(token).await;
                let home = console.get("/").await;
                (i, page.status, home.status, home.url)
            })
        })
        .collect();
    for t in tasks {
        let (i, status, home_status, home_url) = t.await.unwrap();
        if i % 3 == 0 {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "#{i}");
            assert!(home_url.contains("/login"), "#{i}");
        } else {
            assert_eq!(status, StatusCode::OK, "#{i}");
            assert_eq!(home_status, StatusCode::OK, "#{i}");
            assert!(!home_url.contains("/login"), "#{i}");
        }
    }
}

#[tokio::test]
async fn behind_https_the_cookies_are_secure() {
    let registry = Registry::start();
    let kiln = Kiln::start(
        &registry,
        &[("KILN_PUBLIC_URL", "https://kiln.example.com")],
    )
    .await;
    let session = session_set_cookie(&kiln, ADMIN_TOKEN).await;
    assert!(session.contains("; Secure"), "{session}");
    let r = raw_client()
        .get(format!("{}/login", kiln.url))
        .send()
        .await
        .unwrap();
    let login = set_cookies(&r);
    assert!(login.iter().all(|c| c.contains("; Secure")), "{login:?}");
}
