//! The console's repository pages: the list (`/`), the new-repository form, the Overview tab with its
//! edit, hide, unhide and delete forms, and the Versions tab (sizes from the registry, digests,
//! history, hide/unhide of one version). Real kiln, real registry, real `docker push`, forms posted
//! like a browser with the page's CSRF token.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::console::{Console, Page};
use support::kiln::{ADMIN_TOKEN, Kiln};
use support::{Registry, docker_build_and_push, wait_until};

async fn repo_json(kiln: &Kiln, ns: &str, repo: &str) -> (StatusCode, Value) {
    kiln.get(&format!("/namespaces/{ns}/repos/{repo}")).await
}

fn assert_status(page: &Page, status: StatusCode) {
    assert_eq!(page.status, status, "{}:\n{}", page.url, page.html);
}

/// Names of the repositories on a list page.
fn listed(page: &Page) -> Vec<String> {
    page.texts("#repos tbody a.strong")
}

const DETAIL: &str = "# Api image\n\n<script>alert('x')</script>\n\n\
<img src=\"/logo.png\" onerror=\"alert(1)\">\n\n\
[evil](javascript:alert(2)) and [docs](https://example.com/docs)\n\n\
| port | use |\n|---|---|\n| 8080 | http |\n\n```sh\ndocker run --rm api\n```\n";

#[tokio::test(flavor = "multi_thread")]
async fn create_edit_hide_and_delete_a_repository_through_the_console() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    kiln.post("/namespaces", json!({"name": "acme"})).await;
    let console = Console::sign_in(&kiln.url, ADMIN_TOKEN).await;

    // An empty namespace, with the button to the form.
    let home = console.get("/?ns=acme").await;
    assert_status(&home, StatusCode::OK);
    assert_eq!(home.attrs("a[href^='/new']", "href"), vec!["/new?ns=acme"]);
    assert!(home.has("p.empty"));

    // The form, with the naming rule next to the name field.
    let form = console.get("/new?ns=acme").await;
    assert_status(&form, StatusCode::OK);
    assert!(
        form.text("#name-help").contains("2 to 64 characters"),
        "{}",
        form.html
    );
    assert_eq!(form.attrs("input[name=ns]", "value"), vec!["acme"]);
    assert_eq!(
        form.attrs("#category option", "value"),
        vec![
            "database",
            "server",
            "language",
            "web-framework",
            "os",
            "other"
        ]
    );

    // A bad name: 422, the error next to the field, what was typed kept.
    let bad = console
        .post(
            "/new?ns=acme",
            "/new",
            &[
                ("ns", "acme"),
                ("name", "Bad_Name"),
                ("summary", "kept summary"),
                ("detail", "kept detail"),
                ("category", "server"),
            ],
        )
        .await;
    assert_status(&bad, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!bad.has("#err-summary") && !bad.has("#err-category"));
    assert!(bad.text("#err-name").contains("uppercase"), "{}", bad.html);
    assert_eq!(bad.attrs("#name", "value"), vec!["Bad_Name"]);
    assert_eq!(bad.attrs("#name", "aria-invalid"), vec!["true"]);
    assert!(bad.attrs("#name", "aria-describedby")[0].contains("err-name"));
    assert_eq!(bad.attrs("#summary", "value"), vec!["kept summary"]);
    assert_eq!(bad.text("#detail"), "kept detail");
    assert_eq!(
        bad.attrs("#category option[selected]", "value"),
        vec!["server"]
    );
    assert_eq!(
        repo_json(&kiln, "acme", "bad_name").await.0,
        StatusCode::NOT_FOUND
    );
    // Every refused field at once, each next to its own.
    let long = "y".repeat(101);
    let two = console
        .post(
            "/new?ns=acme",
            "/new",
            &[
                ("ns", "acme"),
                ("name", "-x"),
                ("summary", &long),
                ("category", "games"),
            ],
        )
        .await;
    assert_status(&two, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        two.text("#err-name").contains("must not start with '-'"),
        "{}",
        two.html
    );
    assert!(
        two.text("#err-summary").contains("at most 100"),
        "{}",
        two.html
    );
    assert!(
        two.text("#err-category").contains("must be one of"),
        "{}",
        two.html
    );
    assert_eq!(two.attrs("#summary", "value"), vec![long.clone()]);

    // A good one: to its overview, with the flash.
    let created = console
        .post(
            "/new?ns=acme",
            "/new",
            &[
                ("ns", "acme"),
                ("name", "api"),
                ("summary", "The API server"),
                ("detail", DETAIL),
                ("category", "database"),
            ],
        )
        .await;
    assert_status(&created, StatusCode::OK);
    assert!(
        created.url.ends_with("/repos/acme/api?flash=repos_created"),
        "{}",
        created.url
    );
    assert_eq!(created.text("p.flash"), "Repository created.");
    let (s, api) = repo_json(&kiln, "acme", "api").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(api["category"], "database");
    assert_eq!(api["detail"], DETAIL);

    // The overview: summary, category, the pull line, the Markdown rendered and cleaned.
    let overview = console.get("/repos/acme/api").await;
    assert_status(&overview, StatusCode::OK);
    assert_eq!(overview.text("#summary"), "The API server");
    assert_eq!(overview.text("#category"), "Database");
    assert_eq!(
        overview.text("#pull-cmd"),
        format!("docker pull {}/acme/api:latest", registry.addr)
    );
    assert_eq!(
        overview.attrs("button[data-copy]", "data-copy"),
        vec!["#pull-cmd"]
    );
    assert_eq!(overview.text("#detail h1"), "Api image");
    assert_eq!(overview.text("#detail table td"), "8080");
    assert!(
        overview
            .text("#detail pre code")
            .contains("docker run --rm api")
    );
    let detail_html = overview.html.split("id=\"detail\"").nth(1).unwrap();
    let detail_html = detail_html.split("</section>").next().unwrap();
    assert!(!detail_html.contains("<script"), "{detail_html}");
    assert!(!detail_html.contains("onerror"), "{detail_html}");
    assert!(
        !detail_html.to_lowercase().contains("javascript:"),
        "{detail_html}"
    );
    assert_eq!(
        overview.attrs("#detail a[href='https://example.com/docs']", "rel"),
        vec!["noopener noreferrer"]
    );
    assert_eq!(
        overview.attrs(".tabs a[aria-current=page]", "href"),
        vec!["/repos/acme/api"]
    );
    assert!(
        overview
            .text("#hide-what")
            .contains("hides every one of its versions")
    );
    assert_eq!(
        overview.attrs("form[action='/repos/acme/api/hide']", "data-confirm"),
        vec![overview.text("#hide-what")]
    );

    // The same name again: shown next to the name field.
    let taken = console
        .post(
            "/new?ns=acme",
            "/new",
            &[("ns", "acme"), ("name", "api"), ("category", "other")],
        )
        .await;
    assert_status(&taken, StatusCode::CONFLICT);
    assert!(
        taken.text("#err-name").contains("already exists"),
        "{}",
        taken.html
    );
    assert_eq!(taken.attrs("#name", "value"), vec!["api"]);

    // The list shows it, with no build and no version yet.
    let home = console.get("/?ns=acme").await;
    assert_eq!(listed(&home), vec!["api"]);
    assert_eq!(home.text("#repos td.last-build"), "no builds");
    assert_eq!(home.text("#repos td.last-version"), "no versions");

    // Edit: a summary too long is refused next to its field, the input kept.
    let long = "x".repeat(101);
    let refused = console
        .post(
            "/repos/acme/api",
            "/repos/acme/api/edit",
            &[
                ("summary", &long),
                ("detail", "new detail"),
                ("category", "os"),
            ],
        )
        .await;
    assert_status(&refused, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.text("#err-summary").contains("at most 100"),
        "{}",
        refused.html
    );
    assert_eq!(refused.attrs("#summary-in", "value"), vec![long.clone()]);
    assert_eq!(refused.text("#detail-in"), "new detail");
    assert!(refused.has("#edit details[open]"));
    assert_eq!(
        repo_json(&kiln, "acme", "api").await.1["summary"],
        "The API server"
    );
    let edited = console
        .post(
            "/repos/acme/api",
            "/repos/acme/api/edit",
            &[
                ("summary", "Renewed"),
                ("detail", "**bold**"),
                ("category", "os"),
            ],
        )
        .await;
    assert_status(&edited, StatusCode::OK);
    assert_eq!(edited.text("p.flash"), "Repository saved.");
    assert_eq!(edited.text("#summary"), "Renewed");
    assert_eq!(edited.text("#detail strong"), "bold");
    assert_eq!(edited.text("#category"), "Operating system");
    let api = repo_json(&kiln, "acme", "api").await.1;
    assert_eq!(
        (api["summary"].as_str(), api["category"].as_str()),
        (Some("Renewed"), Some("os"))
    );

    // Hide: gone from the list unless hidden ones are shown; unhide brings it back.
    let hidden = console
        .post("/repos/acme/api", "/repos/acme/api/hide", &[])
        .await;
    assert_status(&hidden, StatusCode::OK);
    assert!(hidden.url.ends_with("flash=repos_hidden"), "{}", hidden.url);
    assert_eq!(repo_json(&kiln, "acme", "api").await.1["hidden"], true);
    assert!(hidden.has("form[action='/repos/acme/api/unhide']"));
    assert!(hidden.text("#unhide-what").contains("versions stay hidden"));
    assert!(listed(&console.get("/?ns=acme").await).is_empty());
    let with_hidden = console.get("/?ns=acme&hidden=1").await;
    assert_eq!(listed(&with_hidden), vec!["api"]);
    assert!(with_hidden.has("#repos .badge.hidden"));
    let shown = console
        .post("/repos/acme/api", "/repos/acme/api/unhide", &[])
        .await;
    assert!(shown.url.ends_with("flash=repos_unhidden"), "{}", shown.url);
    assert_eq!(repo_json(&kiln, "acme", "api").await.1["hidden"], false);
    assert_eq!(listed(&console.get("/?ns=acme").await), vec!["api"]);

    // CSRF: a form without the session's token changes nothing.
    let forged = console.send_form("/repos/acme/api/hide", &[]).await;
    assert_status(&forged, StatusCode::FORBIDDEN);
    let forged = console
        .send_form("/repos/acme/api/hide", &[("_csrf", "not-the-token")])
        .await;
    assert_status(&forged, StatusCode::FORBIDDEN);
    assert_eq!(repo_json(&kiln, "acme", "api").await.1["hidden"], false);
    let forged = console
        .send_form("/new", &[("ns", "acme"), ("name", "forged")])
        .await;
    assert_status(&forged, StatusCode::FORBIDDEN);
    assert_eq!(
        repo_json(&kiln, "acme", "forged").await.0,
        StatusCode::NOT_FOUND
    );
    let forged = console
        .send_form("/repos/acme/api/delete", &[("confirm", "api")])
        .await;
    assert_status(&forged, StatusCode::FORBIDDEN);
    assert_eq!(repo_json(&kiln, "acme", "api").await.0, StatusCode::OK);

    // Chinese pages take the zh-CN catalogue.
    let zh = console.get("/repos/acme/api?lang=zh-CN").await;
    assert_status(&zh, StatusCode::OK);
    assert!(zh.html.contains("<html lang=\"zh-CN\">"));
    assert_eq!(zh.text("#category"), "操作系统");
    assert!(
        zh.text("#hide-what").contains("它的所有版本都会被隐藏"),
        "{}",
        zh.html
    );
    let zh_form = console.get("/new?ns=acme&lang=zh-CN").await;
    assert!(zh_form.text("#name-help").contains("2 到 64 个字符"));
    assert_eq!(zh_form.text("h1"), "新建仓库");
    let zh_home = console.get("/?ns=acme&lang=zh-CN").await;
    assert_eq!(zh_home.text("#repos td.last-build"), "暂无构建");
    // The choice stays with the session until switched back.
    assert_eq!(console.get("/?ns=acme").await.text("h1"), "镜像仓库");
    console.get("/?ns=acme&lang=en").await;

    // Delete: a wrong name is refused next to the field; the right one deletes.
    let wrong = console
        .post(
            "/repos/acme/api",
            "/repos/acme/api/delete",
            &[("confirm", "apx")],
        )
        .await;
    assert_status(&wrong, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        wrong.text("#err-confirm").contains("does not match"),
        "{}",
        wrong.html
    );
    assert_eq!(wrong.attrs("#confirm", "value"), vec!["apx"]);
    assert_eq!(repo_json(&kiln, "acme", "api").await.0, StatusCode::OK);
    let gone = console
        .post(
            "/repos/acme/api",
            "/repos/acme/api/delete",
            &[("confirm", "api")],
        )
        .await;
    assert_status(&gone, StatusCode::OK);
    assert!(
        gone.url.ends_with("/?ns=acme&flash=repos_deleted"),
        "{}",
        gone.url
    );
    assert_eq!(
        gone.text("p.flash"),
        "Repository deleted. The registry had no tags of it."
    );
    assert_eq!(
        repo_json(&kiln, "acme", "api").await.0,
        StatusCode::NOT_FOUND
    );
    assert!(listed(&gone).is_empty());
    assert_status(&console.get("/repos/acme/api").await, StatusCode::NOT_FOUND);

    // When the registry cannot be asked, kiln still deletes and a page says what the registry kept.
    kiln.post("/namespaces/acme/repos", json!({"name": "left"}))
        .await;
    drop(registry);
    let partly = console
        .post(
            "/repos/acme/left",
            "/repos/acme/left/delete",
            &[("confirm", "left")],
        )
        .await;
    assert_status(&partly, StatusCode::OK);
    assert_eq!(partly.text("h1"), "Repository deleted");
    assert_eq!(partly.text("#registry-kept tbody td code"), "all tags");
    assert!(
        partly
            .text("#registry-kept tbody td:nth-child(2)")
            .contains("cannot"),
        "{}",
        partly.html
    );
    assert_eq!(
        partly.attrs("#delete-report a.btn", "href"),
        vec!["/?ns=acme"]
    );
    assert_eq!(
        repo_json(&kiln, "acme", "left").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_token_sees_pages_without_changes_and_another_namespace_sees_nothing() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    kiln.post("/namespaces", json!({"name": "acme"})).await;
    kiln.post("/namespaces", json!({"name": "other"})).await;
    kiln.post(
        "/namespaces/acme/repos",
        json!({"name": "api", "summary": "s"}),
    )
    .await;
    let reader = Console::sign_in(&kiln.url, &kiln.token("r", "read", Some("acme")).await).await;

    let home = reader.get("/?ns=acme").await;
    assert_status(&home, StatusCode::OK);
    assert_eq!(listed(&home), vec!["api"]);
    assert!(!home.has("a[href^='/new']"));
    let overview = reader.get("/repos/acme/api").await;
    assert_status(&overview, StatusCode::OK);
    assert_eq!(overview.text("#summary"), "s");
    for change in [
        "#edit",
        "#visibility-card",
        "#delete",
        "form[action^='/repos/acme/api/']",
    ] {
        assert!(!overview.has(change), "{change} shown to a reader");
    }
    let versions = reader.get("/repos/acme/api/versions").await;
    assert_status(&versions, StatusCode::OK);
    assert!(!versions.has("form[method=post][action*='/versions/']"));
    assert_status(&reader.get("/new?ns=acme").await, StatusCode::FORBIDDEN);

    let posts: &[(&str, &[(&str, &str)])] = &[
        (
            "/new",
            &[("ns", "acme"), ("name", "made"), ("category", "other")],
        ),
        (
            "/repos/acme/api/edit",
            &[("summary", "changed"), ("detail", ""), ("category", "os")],
        ),
        ("/repos/acme/api/hide", &[]),
        ("/repos/acme/api/unhide", &[]),
        ("/repos/acme/api/delete", &[("confirm", "api")]),
        ("/repos/acme/api/versions/1.0/hide", &[]),
        ("/repos/acme/api/versions/1.0/unhide", &[]),
    ];
    for (path, fields) in posts {
        let page = reader.post("/repos/acme/api", path, fields).await;
        assert_eq!(
            page.status,
            StatusCode::FORBIDDEN,
            "POST {path} as a reader"
        );
    }
    let api = repo_json(&kiln, "acme", "api").await.1;
    assert_eq!(
        (api["summary"].as_str(), api["hidden"].as_bool()),
        (Some("s"), Some(false))
    );
    assert_eq!(
        repo_json(&kiln, "acme", "made").await.0,
        StatusCode::NOT_FOUND
    );

    // A token of another namespace: acme does not exist for it.
    let stranger =
        Console::sign_in(&kiln.url, &kiln.token("o", "write", Some("other")).await).await;
    for path in [
        "/?ns=acme",
        "/new?ns=acme",
        "/repos/acme/api",
        "/repos/acme/api/versions",
    ] {
        assert_status(&stranger.get(path).await, StatusCode::NOT_FOUND);
    }
    let own = stranger.get("/").await;
    assert_status(&own, StatusCode::OK);
    assert!(own.has("a[href='/new?ns=other']"));
    for (path, fields) in posts {
        let page = stranger.post("/", path, fields).await;
        assert_eq!(
            page.status,
            StatusCode::NOT_FOUND,
            "POST {path} from another namespace"
        );
    }
    assert_eq!(repo_json(&kiln, "acme", "api").await.1["summary"], "s");
}

/// The compressed size of an image as the registry stores it: config and layers.
async fn expected_size(registry: &Registry, repo: &str, digest: &str) -> u64 {
    let m = registry.manifest(repo, digest).await;
    let size = |d: &Value| d["size"].as_u64().unwrap();
    size(&m["config"])
        + m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(size)
            .sum::<u64>()
}

/// `1.5 kB` as the console writes sizes.
fn shown_size(n: u64) -> String {
    if n < 1000 {
        format!("{n} B")
    } else if n < 1_000_000 {
        format!("{:.1} kB", n as f64 / 1000.0)
    } else {
        format!("{:.1} MB", n as f64 / 1_000_000.0)
    }
}

async fn push(registry: &Registry, tag: &str, content: &str) -> String {
    docker_build_and_push(
        &registry.image("acme/plain", tag),
        "FROM scratch\nCOPY f.txt /f.txt\n",
        &[("f.txt", content)],
    )
    .await
}

async fn wait_version(kiln: &Kiln, tag: &str, digest: &str) {
    let path = format!("/namespaces/acme/repos/plain/versions/{tag}");
    wait_until(
        &format!("acme/plain:{tag} = {digest}"),
        Duration::from_secs(30),
        || async { kiln.get(&path).await.1["digest"] == digest },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_versions_tab_shows_sizes_digests_history_and_hides_versions() {
    let (registry, kiln) = Kiln::start_notified(&[]).await;
    kiln.post("/namespaces", json!({"name": "acme"})).await;
    kiln.post("/namespaces/acme/repos", json!({"name": "plain"}))
        .await;
    let unique = format!("{:?}", std::time::SystemTime::now());
    let d1 = push(&registry, "1.0", &format!("one {unique}")).await;
    wait_version(&kiln, "1.0", &d1).await;
    let d2 = push(
        &registry,
        "1.0",
        &format!("two {unique} {}", "x".repeat(3000)),
    )
    .await;
    wait_version(&kiln, "1.0", &d2).await;
    let rc = push(&registry, "2.0-rc.1", &format!("rc {unique}")).await;
    wait_version(&kiln, "2.0-rc.1", &rc).await;
    // A version the registry no longer has: its size is unknown, the page still shows.
    let lost = push(&registry, "0.9", &format!("lost {unique}")).await;
    wait_version(&kiln, "0.9", &lost).await;
    let lost_size = expected_size(&registry, "acme/plain", &lost).await;
    let (size1, size_rc) = (
        expected_size(&registry, "acme/plain", &d2).await,
        expected_size(&registry, "acme/plain", &rc).await,
    );
    registry.delete_manifest("acme/plain", &lost).await;
    assert!(lost_size > 0);

    let console = Console::sign_in(&kiln.url, ADMIN_TOKEN).await;
    let page = console.get("/repos/acme/plain/versions").await;
    assert_status(&page, StatusCode::OK);
    assert_eq!(
        page.attrs(".tabs a[aria-current=page]", "href"),
        vec!["/repos/acme/plain/versions"]
    );
    let tags = page.attrs("#versions tbody tr", "data-tag");
    assert_eq!(tags.len(), 3, "{tags:?}");
    assert!(tags.contains(&"1.0".to_string()) && tags.contains(&"2.0-rc.1".to_string()));
    let row = |tag: &str| format!("#versions tr[data-tag='{tag}']");
    assert_eq!(
        page.attrs(&format!("{} td code.digest", row("1.0")), "title"),
        vec![d2.clone()]
    );
    let short = page.text(&format!("{} td code.digest", row("1.0")));
    assert!(
        d2.starts_with(&format!("sha256:{short}")) && short.len() >= 12,
        "{short}"
    );
    assert_eq!(
        page.text(&format!("{} td.size", row("1.0"))),
        shown_size(size1)
    );
    assert_eq!(
        page.text(&format!("{} td.size", row("2.0-rc.1"))),
        shown_size(size_rc)
    );
    assert_eq!(page.text(&format!("{} td.size", row("0.9"))), "—");
    assert_eq!(page.text(&format!("{} td.source", row("1.0"))), "push");
    // The digest 1.0 held before.
    assert_eq!(
        page.attrs(
            &format!("{} details.history code.digest", row("1.0")),
            "title"
        ),
        vec![d1.clone()]
    );
    assert!(!page.has(&format!("{} details.history", row("2.0-rc.1"))));
    // A digest's size is remembered: once read, it shows even when the registry lost the manifest.
    registry.delete_manifest("acme/plain", &d2).await;
    let again = console.get("/repos/acme/plain/versions").await;
    assert_eq!(
        again.text(&format!("{} td.size", row("1.0"))),
        shown_size(size1)
    );

    // The newest version is in the list and in the pull line.
    let home = console.get("/?ns=acme").await;
    assert_eq!(home.text("#repos td.last-version code"), "0.9");
    let overview = console.get("/repos/acme/plain").await;
    assert_eq!(
        overview.text("#pull-cmd"),
        format!("docker pull {}/acme/plain:0.9", registry.addr)
    );

    // Hide one version (a tag with '.' and '-'): gone unless hidden ones are shown.
    assert_eq!(
        page.attrs(&format!("{} form", row("2.0-rc.1")), "action"),
        vec!["/repos/acme/plain/versions/2.0-rc.1/hide"]
    );
    let hidden = console
        .post(
            "/repos/acme/plain/versions",
            "/repos/acme/plain/versions/2.0-rc.1/hide",
            &[],
        )
        .await;
    assert_status(&hidden, StatusCode::OK);
    assert!(
        hidden
            .url
            .ends_with("/repos/acme/plain/versions?flash=versions_hidden"),
        "{}",
        hidden.url
    );
    assert!(
        !hidden
            .attrs("#versions tbody tr", "data-tag")
            .contains(&"2.0-rc.1".to_string())
    );
    let (_, v) = kiln
        .get("/namespaces/acme/repos/plain/versions/2.0-rc.1")
        .await;
    assert_eq!(v["hidden"], true);
    let all = console.get("/repos/acme/plain/versions?hidden=1").await;
    assert!(all.has(&format!("{} .badge.hidden", row("2.0-rc.1"))));
    assert_eq!(all.attrs("input[name=hidden][checked]", "value"), vec!["1"]);
    let shown = console
        .post(
            "/repos/acme/plain/versions?hidden=1",
            "/repos/acme/plain/versions/2.0-rc.1/unhide",
            &[("show_hidden", "1")],
        )
        .await;
    assert!(
        shown
            .url
            .ends_with("/versions?hidden=1&flash=versions_unhidden"),
        "{}",
        shown.url
    );
    assert!(!shown.has(&format!("{} .badge.hidden", row("2.0-rc.1"))));
    let (_, v) = kiln
        .get("/namespaces/acme/repos/plain/versions/2.0-rc.1")
        .await;
    assert_eq!(v["hidden"], false);
    // A tag that does not exist is "not found".
    let missing = console
        .post(
            "/repos/acme/plain/versions",
            "/repos/acme/plain/versions/nope/hide",
            &[],
        )
        .await;
    assert_status(&missing, StatusCode::NOT_FOUND);
    // Without the CSRF token nothing changes.
    let forged = console
        .send_form("/repos/acme/plain/versions/1.0/hide", &[])
        .await;
    assert_status(&forged, StatusCode::FORBIDDEN);
    assert_eq!(
        kiln.get("/namespaces/acme/repos/plain/versions/1.0")
            .await
            .1["hidden"],
        false
    );

    // Chinese.
    let zh = console.get("/repos/acme/plain/versions?lang=zh-CN").await;
    assert_eq!(zh.texts("#versions thead th")[1], "摘要");
    assert_eq!(zh.text(&format!("{} td.source", row("1.0"))), "推送");
    console.get("/?lang=en").await;

    // Deleting the repository deletes its tags in the registry too, and says so.
    let gone = console
        .post(
            "/repos/acme/plain",
            "/repos/acme/plain/delete",
            &[("confirm", "plain")],
        )
        .await;
    assert_status(&gone, StatusCode::OK);
    assert!(
        gone.url
            .ends_with("/?ns=acme&flash=repos_deleted_with_tags"),
        "{}",
        gone.url
    );
    assert!(registry.tags("acme/plain").await.is_empty());
}
