//! The console's CI rules tab (`/repos/{ns}/{repo}/rules`) against a real kiln: linking a git source
//! (a real local git repository) and the webhook settings per host, the secret shown once, unlinking,
//! the add/edit rule form with the API's errors re-shown, enable/disable/delete, the preview, the
//! recent events after a signed push, "build now" building for real (dockerd + registry),
//! permissions (read token, other namespace), CSRF, and the Chinese page.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::console::{Console, Page};
use support::kiln::{ADMIN_TOKEN, Kiln};
use support::{GitRepo, Registry};

const TAB: &str = "/repos/acme/api/rules";

/// Namespace `acme` and repository `acme/api`, without a source.
async fn plain_repo(kiln: &Kiln) {
    let (s, body) = kiln.post("/namespaces", json!({"name": "acme"})).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (s, body) = kiln
        .post("/namespaces/acme/repos", json!({"name": "api"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
}

async fn rules_api(kiln: &Kiln) -> Vec<Value> {
    let (s, body) = kiln.get("/namespaces/acme/repos/api/rules").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body.as_array().unwrap().clone()
}

fn rule_named<'a>(rules: &'a [Value], name: &str) -> &'a Value {
    rules
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no rule {name} in {rules:?}"))
}

/// A delivery signed with `secret` of a push of `sha` to `git_ref`: the hook's status.
async fn signed_push(
    kiln: &Kiln,
    secret: &str,
    clone_url: &str,
    git_ref: &str,
    sha: &str,
) -> StatusCode {
    let payload = support::github_push_payload(clone_url, git_ref, &"0".repeat(40), sha, false);
    kiln.github_hook("push", &support::new_delivery_id(), secret, &payload)
        .await
        .0
}

fn assert_ok(page: &Page) {
    assert_eq!(page.status, StatusCode::OK, "{}:\n{}", page.url, page.html);
}

#[tokio::test(flavor = "multi_thread")]
async fn link_source_webhook_settings_secret_once_and_unlink() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    plain_repo(&kiln).await;
    let git = GitRepo::named("api");
    git.write("README", "hello");
    let head = git.commit("first");
    git.push("main");
    let console = Console::sign_in(&kiln.url, ADMIN_TOKEN).await;

    // Not linked: the form, and no webhook.
    let page = console.get(TAB).await;
    assert_ok(&page);
    assert!(
        page.has("#no-source") && page.has("form#link-form"),
        "{}",
        page.html
    );
    assert!(!page.has("#webhook-url"));
    assert_eq!(
        page.attrs("form#link-form", "action"),
        vec!["/repos/acme/api/source"]
    );
    assert_eq!(
        page.attrs("nav.tabs a[aria-current=page]", "href"),
        vec![TAB]
    );

    // No rules without a source: the API's 409, on the form.
    let new = "/repos/acme/api/rules/new";
    let page = console
        .post(
            new,
            new,
            &[
                ("type", "branch"),
                ("name", "main"),
                ("dockerfile", "Dockerfile"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT, "{}", page.html);
    assert!(
        page.text("#err-_").contains("no git source"),
        "{}",
        page.html
    );
    assert_eq!(page.attrs("#name", "value"), vec!["main"]);

    // A URL kiln cannot fetch, then a local path outside KILN_LOCAL_SOURCES: the error at the field,
    // the input kept, 422, nothing linked.
    for bad in ["relative/path", "ssh://git@github.com/acme/api.git", "/etc"] {
        let page = console
            .post(
                TAB,
                "/repos/acme/api/source",
                &[
                    ("provider", "gitlab"),
                    ("clone_url", bad),
                    ("webhook_secret", ""),
                ],
            )
            .await;
        assert_eq!(
            page.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            page.html
        );
        assert!(!page.text("#err-clone_url").is_empty(), "{bad}");
        assert_eq!(page.attrs("#clone_url", "value"), vec![bad]);
        assert_eq!(page.attrs("#clone_url", "aria-invalid"), vec!["true"]);
        assert_eq!(
            page.attrs("#provider option[selected]", "value"),
            vec!["gitlab"]
        );
    }
    let page = console
        .post(
            TAB,
            "/repos/acme/api/source",
            &[
                ("provider", "github"),
                ("clone_url", "/etc"),
                ("webhook_secret", ""),
            ],
        )
        .await;
    assert!(
        page.text("#err-clone_url").contains("KILN_LOCAL_SOURCES")
            || page.text("#err-clone_url").contains("not"),
        "{}",
        page.html
    );
    assert_eq!(
        kiln.get("/namespaces/acme/repos/api/source").await.0,
        StatusCode::NOT_FOUND
    );
    // A secret too short: at its field; the typed secret is not echoed back.
    let page = console
        .post(
            TAB,
            "/repos/acme/api/source",
            &[
                ("provider", "github"),
                ("clone_url", &git.clone_url()),
                ("webhook_secret", "short"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.has("#err-webhook_secret"));
    assert_eq!(page.attrs("#webhook_secret", "value"), Vec::<String>::new());

    // The local repository (allowed): the answer shows the generated secret, once.
    let page = console
        .post(
            TAB,
            "/repos/acme/api/source",
            &[
                ("provider", "github"),
                ("clone_url", &git.clone_url()),
                ("webhook_secret", ""),
            ],
        )
        .await;
    assert_ok(&page);
    let secret = page.text("#new-secret");
    assert_eq!(secret.len(), 64, "{secret}");
    assert!(page.has(".secret-once"));
    // It is the secret kiln verifies hooks with.
    assert_eq!(
        signed_push(&kiln, &secret, &git.clone_url(), "refs/heads/main", &head).await,
        StatusCode::ACCEPTED
    );

    // Shown again: the source, the webhook URL and GitHub's settings, never the secret.
    let page = console.get(TAB).await;
    assert_ok(&page);
    assert!(!page.html.contains(&secret), "the secret is shown again");
    assert!(!page.has("#new-secret"));
    let (_, source) = kiln.get("/namespaces/acme/repos/api/source").await;
    assert_eq!(
        page.text("#webhook-url"),
        source["webhook_url"].as_str().unwrap()
    );
    assert_eq!(
        page.text("#webhook-url"),
        format!("{}/hooks/github", kiln.server.app.config.public_url)
    );
    assert_eq!(page.text("#source-url"), git.clone_url());
    assert_eq!(page.text("#source-provider"), "GitHub");
    let settings = page.text("#webhook-settings");
    for want in [
        "Payload URL",
        "application/json",
        "Just the push event",
        "X-Hub-Signature-256",
    ] {
        assert!(settings.contains(want), "{want} not in {settings}");
    }
    assert!(page.has("#plain-git"), "a file:// source is plain git");
    assert!(page.has("button[data-copy='#webhook-url']"));
    let actions = page.attrs("form", "action");
    for want in [
        "/repos/acme/api/source/secret",
        "/repos/acme/api/source/unlink",
    ] {
        assert!(
            actions.iter().any(|a| a == want),
            "{want} not in {actions:?}"
        );
    }

    // GitLab and Gitea/Forgejo: their own settings.
    for (provider, wants) in [
        (
            "gitlab",
            vec![
                "Secret token",
                "Push events",
                "Tag push events",
                "X-Gitlab-Token",
            ],
        ),
        (
            "gitea",
            vec![
                "Target URL",
                "POST",
                "application/json",
                "Push events",
                "X-Gitea-Signature",
                "X-Forgejo-Signature",
            ],
        ),
    ] {
        let (s, b) = kiln
            .put(
                "/namespaces/acme/repos/api/source",
                json!({"provider": provider, "clone_url": git.clone_url()}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let page = console.get(TAB).await;
        let settings = page.text("#webhook-settings");
        for want in wants {
            assert!(
                settings.contains(want),
                "{provider}: {want} not in {settings}"
            );
        }
        assert!(
            page.text("#webhook-url")
                .ends_with(&format!("/hooks/{provider}"))
        );
    }
    kiln.put(
        "/namespaces/acme/repos/api/source",
        json!({"provider": "github", "clone_url": git.clone_url()}),
    )
    .await;

    // Regenerate: a new secret on the answer only; the old one stops working, the new one works.
    let page = console
        .post(TAB, "/repos/acme/api/source/secret", &[])
        .await;
    assert_ok(&page);
    let fresh = page.text("#new-secret");
    assert_eq!(fresh.len(), 64);
    assert_ne!(fresh, secret);
    assert!(!page.url.contains(&fresh));
    assert_eq!(
        signed_push(&kiln, &secret, &git.clone_url(), "refs/heads/main", &head).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        signed_push(&kiln, &fresh, &git.clone_url(), "refs/heads/main", &head).await,
        StatusCode::ACCEPTED
    );
    let page = console.get(TAB).await;
    assert!(!page.html.contains(&fresh) && !page.has("#new-secret"));
    // Reloading the answer's address (a GET) is the tab: no secret either.
    let page = console.get("/repos/acme/api/source").await;
    assert_ok(&page);
    assert!(page.url.ends_with(TAB), "{}", page.url);
    assert!(!page.html.contains(&fresh) && !page.has("#new-secret"));

    // Unlink (the confirmation says what happens to the rules): rules are kept, disabled; the form
    // comes back.
    let confirm = console
        .get(TAB)
        .await
        .attrs("form[action$='/source/unlink']", "data-confirm");
    assert!(confirm[0].contains("rule is disabled"), "{confirm:?}");
    let rule = kiln
        .rule("acme", "api", json!({"type": "branch", "name": "main"}))
        .await;
    let page = console
        .post(TAB, "/repos/acme/api/source/unlink", &[])
        .await;
    assert_ok(&page);
    assert!(
        page.url.ends_with("flash=rules_source_unlinked"),
        "{}",
        page.url
    );
    assert!(page.text(".flash").contains("disabled"));
    assert!(page.has("form#link-form"));
    assert_eq!(
        kiln.get("/namespaces/acme/repos/api/source").await.0,
        StatusCode::NOT_FOUND
    );
    let (_, r) = kiln
        .get(&format!("/namespaces/acme/repos/api/rules/{rule}"))
        .await;
    assert_eq!(r["enabled"], false);
    assert!(page.has(&format!("tr[data-rule-id='{rule}'].rule-off")));
    // Link again with a secret of one's own: no secret shown, a plain redirect.
    let own = "my-own-webhook-secret-0123";
    let page = console
        .post(
            TAB,
            "/repos/acme/api/source",
            &[
                ("provider", "gitea"),
                ("clone_url", &git.clone_url()),
                ("webhook_secret", own),
            ],
        )
        .await;
    assert_ok(&page);
    assert!(
        page.url.ends_with("flash=rules_source_linked"),
        "{}",
        page.url
    );
    assert!(!page.has("#new-secret") && !page.html.contains(own));
    assert_eq!(page.text("#source-provider"), "Gitea / Forgejo");
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_form_toggle_delete_preview_and_events() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let git = GitRepo::named("api");
    git.write("README", "hello");
    let head = git.commit("first");
    git.push("main");
    let secret = kiln.ci_repo("acme", "api", &git.clone_url()).await;
    let console = Console::sign_in(&kiln.url, ADMIN_TOKEN).await;
    let new = "/repos/acme/api/rules/new";

    // The tab offers "add rule"; the form has every API field.
    let page = console.get(TAB).await;
    assert_ok(&page);
    assert!(page.has("#add-rule"));
    let page = console.get(new).await;
    assert_ok(&page);
    for field in [
        "type",
        "name",
        "dockerfile",
        "context",
        "version",
        "overwrite",
        "enabled",
        "build_args",
        "target",
        "no_cache",
        "extra_tags",
        "timeout_minutes",
        "schedule",
        "paths",
        "ignore_paths",
    ] {
        assert!(
            page.has(&format!("#rule-form [name={field}]")),
            "no field {field}"
        );
    }
    assert_eq!(page.attrs("#dockerfile", "value"), vec!["Dockerfile"]);
    assert!(page.text("#help-version").contains("{sha7}"));
    assert!(page.text("#help-overwrite").contains("{version}-"));

    // The API's errors at their fields, the input kept, 422; nothing created.
    let good: Vec<(&str, &str)> = vec![
        ("type", "branch"),
        ("name", "main"),
        ("dockerfile", "Dockerfile"),
        ("context", "."),
        ("version", "{branch}"),
        ("overwrite", "on"),
        ("enabled", "on"),
        ("build_args", "GREETING=hello there\nPORT=8080"),
        ("target", ""),
        ("extra_tags", "latest\n{branch}-{sha7}"),
        ("timeout_minutes", "5"),
        ("schedule", ""),
        ("paths", "src/**\n"),
        ("ignore_paths", "docs/**"),
    ];
    let with = |k: &'static str, v: &'static str| -> Vec<(&'static str, &'static str)> {
        good.iter()
            .map(|&(f, x)| if f == k { (f, v) } else { (f, x) })
            .collect()
    };
    for (field, value, error) in [
        ("name", "/v(/", "name"),
        ("schedule", "every day at noon", "schedule"),
        ("build_args", "GREETING", "build_args"),
        ("build_args", "1BAD=x", "build_args"),
        ("timeout_minutes", "soon", "timeout_minutes"),
        ("version", "{nope}", "version"),
        ("paths", "src/[", "paths"),
    ] {
        let page = console.post(new, new, &with(field, value)).await;
        assert_eq!(
            page.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}={value}: {}",
            page.html
        );
        assert!(
            !page.text(&format!("#err-{error}")).is_empty(),
            "{field}={value}"
        );
        let kept = if page.has(&format!("textarea#{field}")) {
            page.text(&format!("textarea#{field}"))
        } else {
            page.attrs(&format!("#{field}"), "value").join("")
        };
        assert_eq!(kept, value.trim(), "{field} kept");
        assert_eq!(
            page.attrs(&format!("#{error}"), "aria-invalid"),
            vec!["true"]
        );
        assert_eq!(
            page.attrs("#name", "value").join(""),
            if field == "name" { value } else { "main" }
        );
    }
    assert!(rules_api(&kiln).await.is_empty());

    // Created: every field as the API stores it.
    let page = console.post(new, new, &good).await;
    assert_ok(&page);
    assert!(
        page.url.ends_with("/rules?flash=rules_created"),
        "{}",
        page.url
    );
    let rules = rules_api(&kiln).await;
    let main = rule_named(&rules, "main");
    assert_eq!(main["version"], "{branch}");
    assert_eq!(main["overwrite"], true);
    assert_eq!(
        main["build_args"],
        json!({"GREETING": "hello there", "PORT": "8080"})
    );
    assert_eq!(main["extra_tags"], json!(["latest", "{branch}-{sha7}"]));
    assert_eq!(main["timeout_minutes"], 5);
    assert_eq!(main["paths"], json!(["src/**"]));
    assert_eq!(main["ignore_paths"], json!(["docs/**"]));
    assert_eq!(main["schedule"], Value::Null);
    let main_id = main["id"].as_str().unwrap().to_string();
    let row = format!("tr[data-rule-id='{main_id}']");
    let text = page.text(&row);
    for want in [
        "main", "{branch}", "GREETING", "PORT", "latest", "5 min", "src/**", "docs/**",
    ] {
        assert!(text.contains(want), "{want} not in {text}");
    }
    assert!(page.has(&format!("{row} button.build-now")));
    // Ordinary build arguments: no secret warning.
    assert!(!page.has(&format!("{row} .secret-warning")));
    assert_eq!(main["warnings"], json!([]));

    // A tag rule without overwrite, no cache, on a schedule-less wildcard.
    let page = console
        .post(
            new,
            new,
            &[
                ("type", "tag"),
                ("name", "v*"),
                ("dockerfile", "Dockerfile"),
                ("context", ""),
                ("version", ""),
                ("enabled", "on"),
                ("build_args", "REGISTRY_PASSWORD=hunter2"),
            ],
        )
        .await;
    assert_ok(&page);
    let rules = rules_api(&kiln).await;
    let tag = rule_named(&rules, "v*");
    assert_eq!(tag["overwrite"], false);
    assert_eq!(tag["type"], "tag");
    let tag_id = tag["id"].as_str().unwrap().to_string();
    assert!(
        page.text(&format!("tr[data-rule-id='{tag_id}']"))
            .contains("-{sha7}")
    );
    // A build argument that looks like a secret: kept, and warned about in the API and the page.
    assert_eq!(tag["warnings"].as_array().map(Vec::len), Some(1), "{tag}");
    let warning = page.text(&format!("tr[data-rule-id='{tag_id}'] .secret-warning"));
    assert!(
        warning.starts_with("REGISTRY_PASSWORD looks like a secret"),
        "{warning}"
    );

    // Edit: the form shows the rule; saving changes it; an error is re-shown.
    let edit = format!("/repos/acme/api/rules/{main_id}/edit");
    let page = console.get(&edit).await;
    assert_ok(&page);
    assert_eq!(page.attrs("#name", "value"), vec!["main"]);
    assert_eq!(
        page.text("textarea#build_args"),
        "GREETING=hello there PORT=8080"
    );
    assert_eq!(page.attrs("#overwrite[checked]", "name"), vec!["overwrite"]);
    assert!(!page.has("#no_cache[checked]"));
    let mut changed = with("version", "{branch}-{date}");
    changed.push(("no_cache", "on"));
    changed.retain(|(f, _)| *f != "timeout_minutes");
    let page = console.post(&edit, &edit, &changed).await;
    assert_ok(&page);
    assert!(page.url.ends_with("flash=rules_updated"), "{}", page.url);
    let (_, r) = kiln
        .get(&format!("/namespaces/acme/repos/api/rules/{main_id}"))
        .await;
    assert_eq!(r["version"], "{branch}-{date}");
    assert_eq!(r["no_cache"], true);
    assert_eq!(
        r["timeout_minutes"],
        Value::Null,
        "an empty timeout is the default"
    );
    let page = console
        .post(&edit, &edit, &with("schedule", "61 * * * *"))
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.has("#err-schedule"));
    assert_eq!(page.attrs("#schedule", "value"), vec!["61 * * * *"]);
    let (_, r) = kiln
        .get(&format!("/namespaces/acme/repos/api/rules/{main_id}"))
        .await;
    assert_eq!(r["schedule"], Value::Null);

    // The page's forms go where the tests post.
    let page = console.get(TAB).await;
    let forms = page.attrs(&format!("{row} form"), "action");
    for path in ["build", "disable", "delete"] {
        let want = format!("/repos/acme/api/rules/{main_id}/{path}");
        assert!(forms.contains(&want), "{want} not in {forms:?}");
    }
    assert_eq!(
        page.attrs(&format!("{row} a[href$='/edit']"), "href"),
        vec![edit.clone()]
    );
    assert_eq!(page.attrs("#add-rule", "href"), vec![new.to_string()]);
    assert_eq!(
        page.attrs("form.preview-form", "action"),
        vec![format!("{TAB}#preview")]
    );
    assert_eq!(
        console.get(&edit).await.attrs("#rule-form", "action"),
        vec![edit.clone()]
    );
    assert_eq!(
        console.get(new).await.attrs("#rule-form", "action"),
        vec![new.to_string()]
    );

    // Disable, enable.
    let page = console
        .post(
            TAB,
            &format!("/repos/acme/api/rules/{main_id}/disable"),
            &[],
        )
        .await;
    assert_ok(&page);
    assert!(page.url.ends_with("flash=rules_disabled"));
    assert_eq!(
        kiln.get(&format!("/namespaces/acme/repos/api/rules/{main_id}"))
            .await
            .1["enabled"],
        false
    );
    assert!(page.has(&format!(
        "tr[data-rule-id='{main_id}'] button.build-now[disabled]"
    )));
    let page = console
        .post(TAB, &format!("/repos/acme/api/rules/{main_id}/enable"), &[])
        .await;
    assert!(page.url.ends_with("flash=rules_enabled"));
    assert_eq!(
        kiln.get(&format!("/namespaces/acme/repos/api/rules/{main_id}"))
            .await
            .1["enabled"],
        true
    );

    // Preview: a branch name; the tag rule says why not.
    let sha7 = &head[..7];
    let page = console.get(&format!("{TAB}?ref=main&commit={head}")).await;
    assert_ok(&page);
    assert!(page.text("#preview-of").contains("refs/heads/main"));
    let yes = page.text(&format!("#preview-result li[data-rule-id='{main_id}']"));
    let date = chrono::Utc::now().format("%Y%m%d").to_string();
    assert!(yes.contains(&format!("/acme/api:main-{date}")), "{yes}");
    let no = page.text(&format!("#preview-result li[data-rule-id='{tag_id}']"));
    assert!(no.contains("no build") && no.contains("tags"), "{no}");
    // A tag: the tag rule builds `{tag}-{sha7}`; the branch rule does not.
    let page = console
        .get(&format!("{TAB}?ref=refs/tags/v1.2&commit={head}"))
        .await;
    let yes = page.text(&format!("#preview-result li[data-rule-id='{tag_id}']"));
    assert!(yes.contains(&format!(":v1.2-{sha7}")), "{yes}");
    assert!(
        page.text(&format!("#preview-result li[data-rule-id='{main_id}']"))
            .contains("no build")
    );
    // A branch no rule names: a name mismatch.
    let page = console
        .get(&format!("{TAB}?ref=refs/heads/dev&commit={head}"))
        .await;
    let no = page.text(&format!("#preview-result li[data-rule-id='{main_id}']"));
    assert!(no.contains("'dev' does not match 'main'"), "{no}");
    // Bad input: at the field, 422.
    let page = console.get(&format!("{TAB}?ref=main&commit=xyz")).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.has("#err-commit"));
    assert_eq!(page.attrs("#preview-commit", "value"), vec!["xyz"]);
    // In Chinese, the reasons too.
    let page = console
        .get(&format!(
            "{TAB}?ref=refs/heads/dev&commit={head}&lang=zh-CN"
        ))
        .await;
    let no = page.text(&format!("#preview-result li[data-rule-id='{main_id}']"));
    assert!(no.contains("不匹配") && no.contains("dev"), "{no}");

    // Events: a signed push appears with each rule's decision and its build.
    let page = console.get(&format!("{TAB}?lang=en")).await;
    assert!(!page.has("#events-table"));
    let builds = kiln
        .push_hook(&secret, &git.clone_url(), "refs/heads/main", &head)
        .await;
    assert_eq!(builds.len(), 1);
    let page = console.get(TAB).await;
    let ev = page.text("#events-table tbody tr");
    assert!(ev.contains("refs/heads/main") && ev.contains(sha7), "{ev}");
    assert!(ev.contains(&format!("main-{date}")), "{ev}");
    assert!(
        ev.contains("rule builds tags, the push was to a branch"),
        "{ev}"
    );
    assert_eq!(
        page.attrs("#events-table a[href^='/builds/']", "href"),
        vec![format!("/builds/{}", builds[0])]
    );

    // Ten newer pushes (no rule builds dev): the tab shows the newest ten and links to older ones,
    // where the first push is.
    for _ in 0..10 {
        let none = kiln
            .push_hook(&secret, &git.clone_url(), "refs/heads/dev", &head)
            .await;
        assert!(none.is_empty());
    }
    let page = console.get(TAB).await;
    assert_eq!(page.texts("#events-table tbody tr").len(), 10);
    assert!(
        page.texts("#events-table tbody tr")
            .iter()
            .all(|e| e.contains("refs/heads/dev"))
    );
    let more = page.attrs("#events-more", "href");
    assert_eq!(more.len(), 1, "{}", page.html);
    let page = console.get(more[0].split('#').next().unwrap()).await;
    assert_ok(&page);
    let older = page.texts("#events-table tbody tr");
    assert_eq!(older.len(), 1);
    assert!(older[0].contains("refs/heads/main"), "{older:?}");
    assert!(!page.has("#events-more"));

    // Delete.
    let page = console
        .post(TAB, &format!("/repos/acme/api/rules/{tag_id}/delete"), &[])
        .await;
    assert_ok(&page);
    assert!(page.url.ends_with("flash=rules_deleted"));
    assert!(!page.has(&format!("tr[data-rule-id='{tag_id}']")));
    assert_eq!(rules_api(&kiln).await.len(), 1);
    // Gone: the error page, 404.
    let page = console
        .post(TAB, &format!("/repos/acme/api/rules/{tag_id}/delete"), &[])
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    // A ref the rule does not build: the message on the tab, at the rule.
    let page = console
        .post(
            TAB,
            &format!("/repos/acme/api/rules/{main_id}/build"),
            &[("ref", "refs/tags/v1")],
        )
        .await;
    assert_eq!(
        page.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        page.html
    );
    assert!(
        page.text("#build-error")
            .contains("this rule builds branches")
    );
    assert_eq!(
        page.attrs(&format!("#ref-{main_id}"), "value"),
        vec!["refs/tags/v1"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn read_token_other_namespace_csrf_and_chinese() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let git = GitRepo::named("api");
    kiln.ci_repo("acme", "api", &git.clone_url()).await;
    let rule = kiln
        .rule("acme", "api", json!({"type": "branch", "name": "main"}))
        .await;
    let (s, _) = kiln.post("/namespaces", json!({"name": "other"})).await;
    assert_eq!(s, StatusCode::CREATED);
    let before = rules_api(&kiln).await;
    let (_, source_before) = kiln.get("/namespaces/acme/repos/api/source").await;

    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            "/repos/acme/api/source".into(),
            vec![
                ("provider", "github"),
                ("clone_url", "https://example.com/x.git"),
            ],
        ),
        ("/repos/acme/api/source/secret".into(), vec![]),
        ("/repos/acme/api/source/unlink".into(), vec![]),
        (
            "/repos/acme/api/rules/new".into(),
            vec![
                ("type", "branch"),
                ("name", "dev"),
                ("dockerfile", "Dockerfile"),
            ],
        ),
        (
            format!("/repos/acme/api/rules/{rule}/edit"),
            vec![
                ("type", "branch"),
                ("name", "dev"),
                ("dockerfile", "Dockerfile"),
            ],
        ),
        (format!("/repos/acme/api/rules/{rule}/disable"), vec![]),
        (format!("/repos/acme/api/rules/{rule}/enable"), vec![]),
        (format!("/repos/acme/api/rules/{rule}/delete"), vec![]),
        (
            format!("/repos/acme/api/rules/{rule}/build"),
            vec![("ref", "main")],
        ),
    ];

    // A read token: the tab, without a single change button; every POST 403.
    let read = Console::sign_in(
        &kiln.url,
        &kiln.token("read-acme", "read", Some("acme")).await,
    )
    .await;
    let page = read.get(TAB).await;
    assert_ok(&page);
    assert!(page.has(&format!("tr[data-rule-id='{rule}']")));
    assert!(page.has("#webhook-url"));
    for css in [
        "#add-rule",
        "button.build-now",
        "#regenerate-secret",
        "#unlink-source",
        "form#link-form",
        "form[action*='/rules/']",
    ] {
        assert!(!page.has(css), "a read token sees {css}");
    }
    assert_eq!(
        read.get("/repos/acme/api/rules/new").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        read.get(&format!("/repos/acme/api/rules/{rule}/edit"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    for (path, fields) in &posts {
        let page = read.post(TAB, path, fields).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "read token POST {path}");
    }

    // A token of another namespace: 404 for the page, the forms and every POST.
    let other = Console::sign_in(
        &kiln.url,
        &kiln.token("write-other", "write", Some("other")).await,
    )
    .await;
    assert_eq!(other.get(TAB).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        other.get("/repos/acme/api/rules/new").await.status,
        StatusCode::NOT_FOUND
    );
    for (path, fields) in &posts {
        let page = other.post("/", path, fields).await;
        assert_eq!(
            page.status,
            StatusCode::NOT_FOUND,
            "other namespace POST {path}"
        );
    }

    // The admin without the CSRF token (or with a wrong one): 403 on every form.
    let admin = Console::sign_in(&kiln.url, ADMIN_TOKEN).await;
    for (path, fields) in &posts {
        let page = admin.send_form(path, fields).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "no CSRF: POST {path}");
        let mut forged = fields.clone();
        forged.push(("_csrf", "forged"));
        assert_eq!(
            admin.send_form(path, &forged).await.status,
            StatusCode::FORBIDDEN
        );
    }
    // Nothing changed.
    assert_eq!(rules_api(&kiln).await, before);
    assert_eq!(
        kiln.get("/namespaces/acme/repos/api/source").await.1,
        source_before
    );
    assert!(kiln.builds("acme", "api").await.is_empty());

    // Chinese: the tab and the form, translated.
    let page = admin.get(&format!("{TAB}?lang=zh-CN")).await;
    assert_ok(&page);
    for want in [
        "构建规则",
        "立即构建",
        "最近事件",
        "预览一次推送",
        "仅推送事件",
    ] {
        assert!(page.html.contains(want), "{want} not on the Chinese page");
    }
    assert_eq!(
        page.text(&format!("tr[data-rule-id='{rule}'] button.build-now")),
        "立即构建"
    );
    let page = admin.get("/repos/acme/api/rules/new").await;
    assert!(
        page.html.contains("添加规则") && page.html.contains("占位符"),
        "the language is remembered"
    );
    let page = admin
        .post(
            "/repos/acme/api/rules/new",
            "/repos/acme/api/rules/new",
            &[
                ("type", "branch"),
                ("name", "main"),
                ("dockerfile", "Dockerfile"),
                ("schedule", "nope"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.text("#err-schedule")
            .chars()
            .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
        "{}",
        page.text("#err-schedule")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn build_now_opens_the_build_and_it_succeeds() {
    support::ensure_docker();
    let base = support::ensure_base_image();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let git = GitRepo::named("api");
    git.write(
        "Dockerfile",
        format!(
            "{}RUN echo built by the console > /built\n",
            support::fresh_from(base)
        ),
    );
    git.commit("a Dockerfile");
    git.push("main");
    kiln.ci_repo("acme", "api", &git.clone_url()).await;
    let rule = kiln
        .rule("acme", "api", json!({"type": "branch", "name": "main"}))
        .await;
    let console = Console::sign_in(&kiln.url, ADMIN_TOKEN).await;

    let page = console.get(TAB).await;
    let button = format!("tr[data-rule-id='{rule}'] button.build-now");
    assert!(page.has(&button));
    // The form the button submits, as a browser would.
    let action = page.attrs(
        &format!("tr[data-rule-id='{rule}'] form.build-form"),
        "action",
    );
    assert_eq!(action, vec![format!("/repos/acme/api/rules/{rule}/build")]);
    let page = console.post(TAB, &action[0], &[("ref", "")]).await;
    let path = page
        .url
        .split_once(&kiln.url)
        .map(|(_, p)| p.to_string())
        .unwrap_or_default();
    let id = path
        .strip_prefix("/builds/")
        .and_then(|p| p.split('?').next())
        .unwrap_or_else(|| panic!("not a build page: {}", page.url))
        .to_string();
    assert!(
        page.url.ends_with("flash=rules_build_queued"),
        "{}",
        page.url
    );
    // The build's page answers, with the build and the flash.
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(page.html.contains(&id));
    assert!(page.text(".flash").contains("queued"), "{}", page.html);
    let build = kiln.wait_build(&id).await;
    assert_eq!(
        build["status"],
        "succeeded",
        "{build}\n{}",
        kiln.log(&id).await
    );
    assert_eq!(build["trigger"], "manual");
    assert_eq!(build["ref"], "refs/heads/main");
    assert!(
        registry
            .tags("acme/api")
            .await
            .contains(&"main".to_string())
    );
}
