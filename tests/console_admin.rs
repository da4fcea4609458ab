//! The console's administration page against the real kiln and registry: namespaces, API tokens
//! (shown once; deleting one ends its sessions), re-reading the registry, and that only kiln-wide
//! admins reach any of it.

mod support;

use reqwest::StatusCode;
use serde_json::json;
use support::Registry;
use support::console::Console;
use support::kiln::{ADMIN_TOKEN, Kiln};

#[tokio::test]
async fn namespaces_tokens_and_registry_sync_from_the_console() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let admin = Console::sign_in(&kiln.url, ADMIN_TOKEN).await;

    let page = admin.get("/admin").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert_eq!(
        page.attrs("nav.mainnav a[aria-current=page]", "href"),
        vec!["/admin"]
    );
    assert!(page.has(".empty"), "no token yet");

    // A namespace name that breaks the rule: the error next to the field, the input kept.
    let page = admin
        .post("/admin", "/admin/namespaces", &[("name", "Acme")])
        .await;
    assert_eq!(
        page.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        page.html
    );
    assert!(page.has("#err-name"), "{}", page.html);
    assert_eq!(page.attrs("#ns-name", "value"), vec!["Acme"]);
    assert_eq!(page.attrs("#ns-name", "aria-invalid"), vec!["true"]);
    let page = admin
        .post("/admin", "/admin/namespaces", &[("name", "acme")])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(
        page.url.ends_with("/admin?flash=admin_namespace_created"),
        "{}",
        page.url
    );
    assert_eq!(page.texts("#namespaces a"), vec!["acme"]);
    let (_, namespaces) = kiln.get("/namespaces").await;
    assert_eq!(namespaces[0]["name"], "acme");
    // Taken: 409, said at the field.
    let page = admin
        .post("/admin", "/admin/namespaces", &[("name", "acme")])
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(page.text("#err-name").contains("already exists"));

    // A token: shown once, on the answer.
    let page = admin
        .post(
            "/admin",
            "/admin/tokens",
            &[
                ("name", "ci-writer"),
                ("role", "write"),
                ("namespace", "acme"),
                ("expires_on", ""),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::CREATED, "{}", page.html);
    let token = page.text("#new-token-value");
    assert!(token.starts_with("kiln_"), "{token}");
    let page = admin.get("/admin").await;
    assert!(!page.html.contains(&token), "never shown again");
    assert_eq!(page.texts("#tokens tbody td.strong"), vec!["ci-writer"]);
    // It works, within its namespace.
    let (s, _) = kiln
        .call_as(
            &token,
            reqwest::Method::POST,
            "/namespaces/acme/repos",
            Some(json!({"name": "api"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let writer = Console::sign_in(&kiln.url, &token).await;
    assert_eq!(
        writer.get("/").await.texts("#repos tbody a.strong"),
        vec!["api"]
    );

    // Bad token fields: each said at its field, the input kept.
    for (fields, field) in [
        (
            vec![
                ("name", ""),
                ("role", "read"),
                ("namespace", ""),
                ("expires_on", ""),
            ],
            "name",
        ),
        (
            vec![
                ("name", "x"),
                ("role", "root"),
                ("namespace", ""),
                ("expires_on", ""),
            ],
            "role",
        ),
        (
            vec![
                ("name", "x"),
                ("role", "read"),
                ("namespace", "nope"),
                ("expires_on", ""),
            ],
            "namespace",
        ),
        (
            vec![
                ("name", "x"),
                ("role", "read"),
                ("namespace", ""),
                ("expires_on", "2001-01-01"),
            ],
            "expires_on",
        ),
        (
            vec![
                ("name", "x"),
                ("role", "read"),
                ("namespace", ""),
                ("expires_on", "soon"),
            ],
            "expires_on",
        ),
    ] {
        let page = admin.post("/admin", "/admin/tokens", &fields).await;
        assert_eq!(
            page.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}: {}",
            page.html
        );
        assert!(page.has(&format!("#err-{field}")), "{field}: {}", page.html);
        assert!(!page.has("#new-token-value"));
    }
    let page = admin
        .post(
            "/admin",
            "/admin/tokens",
            &[
                ("name", "later"),
                ("role", "read"),
                ("namespace", ""),
                ("expires_on", "2099-12-31"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::CREATED, "{}", page.html);
    let (_, tokens) = kiln.get("/tokens").await;
    let later = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "later")
        .unwrap();
    assert_eq!(later["expires_at"], "2099-12-31T23:59:59.000000Z");

    // Only kiln-wide admins: a namespace's admin and a writer get 403 on the page and every form,
    // and nothing changes.
    let ns_admin = kiln.token("ns-admin", "admin", Some("acme")).await;
    let ns_admin = Console::sign_in(&kiln.url, &ns_admin).await;
    let id = later["id"].as_str().unwrap().to_string();
    for console in [&ns_admin, &writer] {
        assert!(
            !console.get("/").await.has("nav.mainnav a[href='/admin']"),
            "no link"
        );
        assert_eq!(console.get("/admin").await.status, StatusCode::FORBIDDEN);
        let csrf = console.get("/").await.csrf();
        for (path, fields) in [
            ("/admin/namespaces".to_string(), vec![("name", "other")]),
            (
                "/admin/tokens".to_string(),
                vec![("name", "sneaky"), ("role", "admin"), ("namespace", "")],
            ),
            (format!("/admin/tokens/{id}/delete"), vec![]),
            ("/admin/registry/sync".to_string(), vec![]),
        ] {
            let mut fields = fields.clone();
            fields.push(("_csrf", &csrf));
            let page = console.send_form(&path, &fields).await;
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        }
    }
    let (_, tokens) = kiln.get("/tokens").await;
    assert_eq!(
        tokens.as_array().unwrap().len(),
        3,
        "nothing added or deleted: {tokens}"
    );
    let (_, namespaces) = kiln.get("/namespaces").await;
    assert_eq!(namespaces.as_array().unwrap().len(), 1);

    // CSRF: refused without the page's token.
    let page = admin
        .send_form("/admin/namespaces", &[("name", "csrf")])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);

    // Deleting a token ends the sessions it opened.
    let writer_id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci-writer")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let page = admin
        .post("/admin", &format!("/admin/tokens/{writer_id}/delete"), &[])
        .await;
    assert!(
        page.url.ends_with("flash=admin_token_deleted"),
        "{}",
        page.url
    );
    assert!(
        !page
            .texts("#tokens tbody td.strong")
            .contains(&"ci-writer".to_string())
    );
    assert!(
        writer.get("/").await.url.contains("/login"),
        "signed out with its token"
    );
    let page = admin
        .post("/admin", &format!("/admin/tokens/{writer_id}/delete"), &[])
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);

    // Re-reading the registry: a plain `docker push` kiln was not told about becomes a version.
    let image = registry.image("acme/api", "pushed");
    support::docker_build_and_push(&image, "FROM scratch\nLABEL kiln.test=admin-sync\n", &[]).await;
    let page = admin.post("/admin", "/admin/registry/sync", &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let report = page.texts("#sync-report dd");
    assert_eq!(report, vec!["1", "1", "0", "0"], "{}", page.html);
    let (_, versions) = kiln.get("/namespaces/acme/repos/api/versions").await;
    assert_eq!(versions[0]["tag"], "pushed");

    // In Chinese.
    let page = admin.get("/admin?lang=zh-CN").await;
    assert_eq!(page.text("h1"), "系统管理");
    assert_eq!(page.text("#registry-sync"), "重新读取镜像仓库服务");
}
