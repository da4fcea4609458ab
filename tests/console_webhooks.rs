//! The console's Webhooks tab against the real kiln and real receivers: add (a refused URL shown
//! again with the input kept, a generated secret shown once), list, edit (secret rotation), disable
//! and enable, "send test" and its access record (request and answer, pretty JSON, long bodies cut
//! with a note), redeliver, delete; a read token sees but cannot change, a namespace token sees
//! nothing of another namespace, forms without the CSRF token are refused, and the pages speak
//! Chinese.

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use support::console::{Console, Page};
use support::kiln::{ADMIN_TOKEN, Kiln};
use support::{RecordedRequest, RecordingServer, Registry, wait_until};

/// The receivers are on 127.0.0.1: allowed, as an operator would for an internal service.
async fn start_kiln() -> (Registry, Kiln) {
    // kiln's warnings and errors in the test's output (shown when it fails).
    let filter = std::env::var("KILN_TEST_LOG").unwrap_or_else(|_| "kiln=warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
    let registry = Registry::start();
    let kiln = Kiln::start(
        &registry,
        &[
            ("KILN_WEBHOOK_ALLOW", "127.0.0.1"),
            ("KILN_DELIVERY_BACKOFF_MS", "100"),
            ("KILN_DELIVERY_TIMEOUT_SECS", "2"),
        ],
    )
    .await;
    (registry, kiln)
}

async fn hooks(kiln: &Kiln, ns: &str, repo: &str) -> Vec<Value> {
    let (s, list) = kiln
        .get(&format!("/namespaces/{ns}/repos/{repo}/webhooks"))
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    list.as_array().expect("a list").clone()
}

async fn hook_named(kiln: &Kiln, ns: &str, repo: &str, name: &str) -> Value {
    hooks(kiln, ns, repo)
        .await
        .into_iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("no webhook named {name}"))
}

async fn deliveries(kiln: &Kiln, ns: &str, repo: &str, hook: &str) -> Vec<Value> {
    let (s, list) = kiln
        .get(&format!(
            "/namespaces/{ns}/repos/{repo}/webhooks/{hook}/deliveries"
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    list.as_array().expect("a list").clone()
}

/// The untouched text of the first element matching `css` (whitespace kept: for `<pre>`).
fn raw_text(page: &Page, css: &str) -> String {
    let sel = scraper::Selector::parse(css).expect("selector");
    scraper::Html::parse_document(&page.html)
        .select(&sel)
        .next()
        .unwrap_or_else(|| panic!("no {css} on {}:\n{}", page.url, page.html))
        .text()
        .collect()
}

/// The (name, value) rows of the headers table under `section`.
fn header_rows(page: &Page, section: &str) -> Vec<(String, String)> {
    let names = page.texts(&format!(
        "details.attempt[open] {section} table.headers .header-name"
    ));
    let values = page.texts(&format!(
        "details.attempt[open] {section} table.headers .header-value"
    ));
    names.into_iter().zip(values).collect()
}

fn header<'a>(rows: &'a [(String, String)], name: &str) -> Option<&'a str> {
    rows.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Does `hit` carry a valid Standard Webhooks signature made with `secret`?
fn signed_with(secret: &str, hit: &RecordedRequest) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ secret"))
        .expect("base64");
    let id = hit.header("webhook-id").expect("webhook-id");
    let ts = hit.header("webhook-timestamp").expect("webhook-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&hit.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    hit.header("webhook-signature")
        .is_some_and(|s| s.split(' ').any(|s| s == expected))
}

fn new_secret() -> String {
    format!("whsec_{}", STANDARD.encode(rand::random::<[u8; 32]>()))
}

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_added_tested_edited_and_deleted_from_the_console() {
    let (_registry, kiln) = start_kiln().await;
    kiln.repo("acme", "shop").await;
    let receiver = RecordingServer::start().await;
    let console = Console::sign_in(&kiln.url, ADMIN_TOKEN).await;
    let tab = "/repos/acme/shop/webhooks";

    // An empty tab with the add form.
    let page = console.get(tab).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(page.has("p.empty"), "{}", page.html);
    assert!(page.has("#add-webhook form"));
    assert_eq!(
        page.attrs(".tabs a[aria-current=page]", "href"),
        vec![tab.to_string()]
    );

    // A URL the API refuses: the form again, 422, the error beside the field, the input kept.
    let bad = console
        .post(
            tab,
            tab,
            &[
                ("name", "deploy bot"),
                ("url", "ftp://files.example/drop"),
                ("events", "image.pushed"),
                ("events", "build.failed"),
                ("tag_filter", "v*"),
                ("payload_format", "cloudevents"),
                ("active", "1"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.html);
    assert!(
        bad.text("#err-url").contains("http:// or https://"),
        "{}",
        bad.text("#err-url")
    );
    assert_eq!(bad.attrs("#wh-url", "aria-invalid"), vec!["true"]);
    assert!(
        bad.attrs("#wh-url", "aria-describedby")[0].contains("err-url"),
        "{:?}",
        bad.attrs("#wh-url", "aria-describedby")
    );
    assert_eq!(
        bad.attrs("#wh-url", "value"),
        vec!["ftp://files.example/drop"]
    );
    assert_eq!(bad.attrs("#wh-name", "value"), vec!["deploy bot"]);
    assert_eq!(bad.attrs("#wh-filter", "value"), vec!["v*"]);
    assert_eq!(
        bad.attrs("input[name=events][checked]", "value"),
        vec!["image.pushed", "build.failed"]
    );
    assert_eq!(
        bad.attrs("#wh-format option[selected]", "value"),
        vec!["cloudevents"]
    );
    assert!(!bad.has("#err-name"));
    // Not a URL at all, and no event chosen: each error by its own field.
    let bad = console
        .post(
            tab,
            tab,
            &[("name", "x"), ("url", "not a url"), ("active", "1")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.text("#err-url").contains("not a URL"), "{}", bad.html);
    let bad = console
        .post(
            tab,
            tab,
            &[
                ("name", "x"),
                ("url", &receiver.url),
                ("payload_format", "kiln"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.text("#err-events").contains("at least one event"));
    assert!(hooks(&kiln, "acme", "shop").await.is_empty());

    // Added without a secret: kiln generates one and shows it on this answer only.
    let created = console
        .post(
            tab,
            tab,
            &[
                ("name", "deploy bot"),
                ("url", &format!("{}/hook", receiver.url)),
                ("events", "image.pushed"),
                ("payload_format", "kiln"),
                ("secret", ""),
                ("active", "1"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.html);
    let secret = created.text("#new-secret");
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(created.text(".flash"), "Webhook added.");
    let hook = hook_named(&kiln, "acme", "shop", "deploy bot").await;
    let id = hook["id"].as_str().unwrap().to_string();
    let page_path = format!("{tab}/{id}");
    let again = console.get(&page_path).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(!again.has("#new-secret"));
    assert!(
        !again.html.contains(&secret),
        "the secret is shown once only"
    );
    assert!(again.has("#records") || again.has("p.empty"));

    // The same name again: refused beside the name field (409), input kept.
    let taken = console
        .post(
            tab,
            tab,
            &[
                ("name", "deploy bot"),
                ("url", &receiver.url),
                ("events", "image.pushed"),
                ("payload_format", "kiln"),
                ("active", "1"),
            ],
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.html);
    assert!(taken.has("#err-name"));
    assert_eq!(taken.attrs("#wh-url", "value"), vec![receiver.url.clone()]);

    // Listed with its URL, state and no delivery yet, with its buttons.
    let list = console.get(tab).await;
    let row = format!("tr[data-webhook-id='{id}']");
    assert_eq!(list.text(&format!("{row} .wh-name")), "deploy bot");
    assert_eq!(
        list.text(&format!("{row} .wh-url")),
        format!("{}/hook", receiver.url)
    );
    assert_eq!(list.text(&format!("{row} .wh-state")), "enabled");
    assert_eq!(list.text(&format!("{row} .wh-last")), "never called");
    assert!(list.has(&format!("{row} button.send-test")));

    // Send test: back on the subscription's page with the new record on top.
    let tested = console
        .post(&page_path, &format!("{page_path}/test"), &[])
        .await;
    assert_eq!(tested.status, StatusCode::OK, "{}", tested.html);
    assert!(tested.url.contains(&page_path), "{}", tested.url);
    assert_eq!(
        tested.text(".flash"),
        "Test sent: the receiver accepted it."
    );
    let records = tested.attrs("#records tr[data-delivery-id]", "data-delivery-id");
    assert_eq!(records.len(), 1, "{}", tested.html);
    let first = records[0].clone();
    let rec = format!("#records tr[data-delivery-id='{first}']");
    assert_eq!(tested.text(&format!("{rec} .delivery-status")), "succeeded");
    assert_eq!(tested.text(&format!("{rec} .http-status")), "200");
    assert_eq!(tested.text(&format!("{rec} .event")), "test");
    assert_eq!(tested.text(&format!("{rec} .attempts")), "1");
    assert_eq!(
        tested.attrs(&format!("{rec} a.record-link"), "href"),
        vec![format!("/deliveries/{first}")]
    );
    let hit = receiver
        .wait_for("the test delivery", WAIT, |r| r.path == "/hook")
        .await;
    assert!(signed_with(&secret, &hit), "signed with the shown secret");
    // The tab shows the last delivery's result.
    let list = console.get(tab).await;
    assert!(
        list.text(&format!("{row} .wh-last"))
            .starts_with("succeeded 200"),
        "{}",
        list.text(&format!("{row} .wh-last"))
    );

    // The record: what kiln sent (headers, pretty JSON body) and what the receiver answered.
    let record = console.get(&format!("/deliveries/{first}")).await;
    assert_eq!(record.status, StatusCode::OK, "{}", record.html);
    assert_eq!(
        record.text("details.attempt[open] .request-line"),
        format!("POST {}/hook", receiver.url)
    );
    let sent = header_rows(&record, ".request");
    assert_eq!(header(&sent, "content-type"), Some("application/json"));
    assert_eq!(
        header(&sent, "webhook-id"),
        hit.header("webhook-id"),
        "{sent:?}"
    );
    assert_eq!(
        header(&sent, "webhook-signature"),
        hit.header("webhook-signature")
    );
    let pretty = serde_json::to_string_pretty(&hit.json()).unwrap();
    assert_eq!(
        raw_text(&record, "details.attempt[open] .request pre.body"),
        pretty
    );
    assert!(record.has("details.attempt[open] .request pre.body.json"));
    assert_eq!(record.text(".response-status"), "200");
    let answered = header_rows(&record, ".response");
    assert_eq!(header(&answered, "content-type"), Some("application/json"));
    assert_eq!(header(&answered, "content-length"), Some("2"));
    assert_eq!(
        raw_text(&record, "details.attempt[open] .response pre.body"),
        "{}"
    );
    assert!(!record.has(".body-cut"));
    assert_eq!(record.attrs(".hook-link", "href"), vec![page_path.clone()]);

    // Redeliver: a new record of the same message, then listed with the first.
    let again = console
        .post(
            &format!("/deliveries/{first}"),
            &format!("/deliveries/{first}/redeliver"),
            &[],
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.html);
    assert_eq!(again.text(".flash"), "Sent again as a new delivery.");
    let second = again
        .url
        .split("/deliveries/")
        .nth(1)
        .and_then(|s| s.split('?').next())
        .expect("redirected to the new record")
        .to_string();
    assert_ne!(second, first);
    assert_eq!(
        again.attrs(".redelivery-of", "href"),
        vec![format!("/deliveries/{first}")]
    );
    wait_until("the redelivery to finish", WAIT, || async {
        deliveries(&kiln, "acme", "shop", &id)
            .await
            .iter()
            .any(|d| d["id"] == second.as_str() && d["status"] == "succeeded")
    })
    .await;
    let hits: Vec<_> = receiver
        .requests()
        .into_iter()
        .filter(|r| r.path == "/hook")
        .collect();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].header("webhook-id"), hits[1].header("webhook-id"));
    let listed = console.get(&page_path).await;
    assert_eq!(
        listed.attrs("#records tr[data-delivery-id]", "data-delivery-id"),
        vec![second.clone(), first.clone()]
    );
    assert!(listed.has(&format!(
        "#records tr[data-delivery-id='{second}'] .badge.redelivery"
    )));

    // Edit: the form holds the current values; a bad secret is refused beside its field.
    let edit_path = format!("{page_path}/edit");
    let form = console.get(&edit_path).await;
    assert_eq!(form.status, StatusCode::OK);
    assert_eq!(form.attrs("#wh-name", "value"), vec!["deploy bot"]);
    assert_eq!(form.attrs("#wh-secret", "value"), Vec::<String>::new());
    let refused = console
        .post(
            &edit_path,
            &edit_path,
            &[
                ("name", "release bot"),
                ("url", &format!("{}/release", receiver.url)),
                ("events", "image.pushed"),
                ("payload_format", "kiln"),
                ("secret", "not-a-secret"),
                ("active", "1"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.text("#err-secret").contains("whsec_"));
    assert_eq!(refused.attrs("#wh-name", "value"), vec!["release bot"]);
    assert_eq!(refused.attrs("#wh-secret", "value"), Vec::<String>::new());
    assert_eq!(
        hook_named(&kiln, "acme", "shop", "deploy bot").await["id"],
        id.as_str()
    );
    // Saved with a new secret (rotation), two events, a tag filter.
    let rotated = new_secret();
    let saved = console
        .post(
            &edit_path,
            &edit_path,
            &[
                ("name", "release bot"),
                ("url", &format!("{}/release", receiver.url)),
                ("events", "image.pushed"),
                ("events", "build.succeeded"),
                ("tag_filter", "v*"),
                ("payload_format", "kiln"),
                ("secret", &rotated),
                ("active", "1"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.html);
    assert_eq!(saved.text(".flash"), "Webhook saved.");
    assert_eq!(saved.text(".wh-title"), "release bot");
    assert!(!saved.html.contains(&rotated));
    let (_, api) = kiln
        .get(&format!("/namespaces/acme/repos/shop/webhooks/{id}"))
        .await;
    assert_eq!(api["name"], "release bot");
    assert_eq!(api["events"], json!(["build.succeeded", "image.pushed"]));
    assert_eq!(api["tag_filter"], "v*");
    console
        .post(&page_path, &format!("{page_path}/test"), &[])
        .await;
    let hit = receiver
        .wait_for("the test after rotation", WAIT, |r| r.path == "/release")
        .await;
    assert!(signed_with(&rotated, &hit), "signed with the new secret");
    assert!(!signed_with(&secret, &hit));

    // Disable and enable, from the tab and from the subscription's page.
    let off = console
        .post(tab, &format!("{page_path}/disable"), &[])
        .await;
    assert_eq!(off.status, StatusCode::OK);
    assert!(
        off.url.ends_with(&format!("{tab}?flash=webhooks_disabled")),
        "{}",
        off.url
    );
    assert_eq!(off.text(&format!("{row} .wh-state")), "disabled");
    assert!(off.has(&format!("{row} button.enable")));
    assert_eq!(
        hook_named(&kiln, "acme", "shop", "release bot").await["active"],
        false
    );
    let on = console
        .post(
            &page_path,
            &format!("{page_path}/enable"),
            &[("from", "page")],
        )
        .await;
    assert!(on.url.contains(&page_path), "{}", on.url);
    assert_eq!(on.text(".flash"), "Webhook enabled.");
    assert_eq!(on.text(".wh-state"), "enabled");
    assert_eq!(
        hook_named(&kiln, "acme", "shop", "release bot").await["active"],
        true
    );

    // A failing receiver: the test says so and the record shows the failure.
    let failing = RecordingServer::start_with_statuses(&[500, 500, 500, 500, 500, 500]).await;
    let made = console
        .post(
            tab,
            tab,
            &[
                ("name", "flaky"),
                ("url", &failing.url),
                ("events", "image.pushed"),
                ("payload_format", "kiln"),
                ("secret", &new_secret()),
                ("active", "1"),
            ],
        )
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.html);
    assert_eq!(made.text(".flash"), "Webhook added.");
    assert!(!made.has("#new-secret"), "a secret given is not shown");
    let flaky = made
        .url
        .trim_start_matches(&console.url)
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let failed = console.post(&flaky, &format!("{flaky}/test"), &[]).await;
    assert_eq!(
        failed.text(".flash"),
        "Test sent, but the delivery failed: see its access record."
    );
    assert_eq!(failed.text("#records .http-status"), "500");
    let outcome = failed.text("#records .delivery-status");
    assert!(
        outcome == "retrying" || outcome == "failed",
        "a delivery answered 500 is retried or failed: {outcome}"
    );

    // An internal address the operator did not allow: accepted as a URL, refused when sent, and
    // the record says why and how to allow it.
    let internal = console
        .post(
            tab,
            tab,
            &[
                ("name", "internal"),
                ("url", "http://127.0.0.2:9/hook"),
                ("events", "image.pushed"),
                ("payload_format", "kiln"),
                ("secret", &new_secret()),
                ("active", "1"),
            ],
        )
        .await;
    assert_eq!(internal.status, StatusCode::OK, "{}", internal.html);
    let internal = internal
        .url
        .trim_start_matches(&console.url)
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let refused = console
        .post(&internal, &format!("{internal}/test"), &[])
        .await;
    assert_eq!(
        refused.text(".flash"),
        "Test sent, but the delivery failed: see its access record."
    );
    assert_eq!(refused.text("#records .delivery-status"), "failed");
    let link = refused.attrs("#records a.record-link", "href")[0].clone();
    let record = console.get(&link).await;
    let why = record.text(".delivery-error");
    assert!(
        why.contains("127.0.0.2") && why.contains("KILN_WEBHOOK_ALLOW"),
        "{why}"
    );
    assert!(record.has("details.attempt[open] .no-response"));

    // Delete (the confirm is on the form), back to the tab without it.
    let form = console.get(&page_path).await;
    assert!(!form.attrs("form[action$='/delete']", "data-confirm")[0].is_empty());
    let gone = console
        .post(&page_path, &format!("{page_path}/delete"), &[])
        .await;
    assert_eq!(gone.status, StatusCode::OK);
    assert_eq!(gone.text(".flash"), "Webhook deleted.");
    assert!(!gone.has(&row));
    let (s, _) = kiln
        .get(&format!("/namespaces/acme/repos/shop/webhooks/{id}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(console.get(&page_path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        console.get(&format!("/deliveries/{first}")).await.status,
        StatusCode::NOT_FOUND
    );
}

/// A receiver that answers with a JSON body and its own header (`/json`), or a long text body
/// (`/long`): a real HTTP server.
async fn answering_receiver() -> (String, tokio::task::JoinHandle<()>) {
    use axum::routing::post;
    let app = axum::Router::new()
        .route(
            "/json",
            post(|| async {
                (
                    [
                        ("content-type", "application/json"),
                        ("x-receiver", "answers-with-json"),
                    ],
                    r#"{"accepted":true,"queue":{"position":3,"tags":["v1","latest"]}}"#,
                )
            }),
        )
        .route(
            "/long",
            post(|| async { ([("content-type", "text/plain")], "0123456789".repeat(4000)) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_shows_the_answer_pretty_and_cuts_long_bodies_with_a_note() {
    let (_registry, kiln) = start_kiln().await;
    kiln.repo("acme", "shop").await;
    let (url, _task) = answering_receiver().await;
    let console = Console::sign_in(&kiln.url, ADMIN_TOKEN).await;
    let tab = "/repos/acme/shop/webhooks";
    for (name, path) in [("json", "/json"), ("long", "/long")] {
        let p = console
            .post(
                tab,
                tab,
                &[
                    ("name", name),
                    ("url", &format!("{url}{path}")),
                    ("events", "image.pushed"),
                    ("payload_format", "kiln"),
                    ("secret", &new_secret()),
                    ("active", "1"),
                ],
            )
            .await;
        assert_eq!(p.status, StatusCode::OK, "{}", p.html);
    }

    // JSON answer: pretty-printed, its headers listed.
    let json_hook = hook_named(&kiln, "acme", "shop", "json").await;
    let page_path = format!("{tab}/{}", json_hook["id"].as_str().unwrap());
    let tested = console
        .post(&page_path, &format!("{page_path}/test"), &[])
        .await;
    let link = tested.attrs("#records a.record-link", "href")[0].clone();
    let record = console.get(&link).await;
    assert_eq!(record.status, StatusCode::OK);
    assert_eq!(
        raw_text(&record, "details.attempt[open] .response pre.body"),
        "{\n  \"accepted\": true,\n  \"queue\": {\n    \"position\": 3,\n    \"tags\": [\n      \"v1\",\n      \"latest\"\n    ]\n  }\n}"
    );
    let answered = header_rows(&record, ".response");
    assert_eq!(header(&answered, "x-receiver"), Some("answers-with-json"));

    // Access records come 25 to a page, newest first.
    let hook_id = json_hook["id"].as_str().unwrap();
    for _ in 0..26 {
        let (s, d) = kiln
            .post(
                &format!("/namespaces/acme/repos/shop/webhooks/{hook_id}/test"),
                json!({}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{d}");
    }
    let all: Vec<String> = deliveries(&kiln, "acme", "shop", hook_id)
        .await
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(all.len(), 27);
    let first_page = console.get(&page_path).await;
    let ids = first_page.attrs("#records tr[data-delivery-id]", "data-delivery-id");
    assert_eq!(ids, all[..25].to_vec());
    let next = first_page.attrs("a.next-page", "href")[0].clone();
    let second_page = console.get(&next).await;
    assert_eq!(second_page.status, StatusCode::OK);
    assert_eq!(
        second_page.attrs("#records tr[data-delivery-id]", "data-delivery-id"),
        all[25..].to_vec()
    );
    assert!(!second_page.has("a.next-page"));

    // A long answer: cut for display, the note says how much, the whole body one link away.
    let long_hook = hook_named(&kiln, "acme", "shop", "long").await;
    let page_path = format!("{tab}/{}", long_hook["id"].as_str().unwrap());
    let tested = console
        .post(&page_path, &format!("{page_path}/test"), &[])
        .await;
    assert_eq!(tested.text("#records .http-status"), "200");
    let link = tested.attrs("#records a.record-link", "href")[0].clone();
    let record = console.get(&link).await;
    let shown = raw_text(&record, "details.attempt[open] .response pre.body");
    assert_eq!(shown.len(), 16 * 1024);
    assert!("0123456789".repeat(4000).starts_with(&shown));
    assert_eq!(
        record.attrs(".response .body-cut", "data-hidden-bytes"),
        vec![(40_000 - 16 * 1024).to_string()]
    );
    let note = record.text(".response .body-cut");
    assert!(
        note.contains("16.4 kB of 40.0 kB shown, 23.6 kB not shown"),
        "{note}"
    );
    // The request (a small JSON body) is whole.
    assert!(!record.has(".request .body-cut"));
    let full = record.attrs(".response .body-cut a", "href")[0].clone();
    let r = console
        .http
        .get(format!("{}{full}", console.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "text/plain; charset=utf-8"
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.text().await.unwrap(), "0123456789".repeat(4000));

    // In Chinese: the same record, translated, the note too.
    let zh = console.get(&format!("{link}?lang=zh-CN")).await;
    assert_eq!(zh.status, StatusCode::OK);
    assert_eq!(zh.attrs("html", "lang"), vec!["zh-CN"]);
    assert_eq!(zh.text(".page-head h2"), "访问记录");
    assert_eq!(zh.text("button.redeliver"), "重新投递");
    assert!(
        zh.text(".response .body-cut").contains("未显示 23.6 kB"),
        "{}",
        zh.text(".response .body-cut")
    );
}

/// The one subscription `id` is as created, with its one delivery.
async fn assert_unchanged(kiln: &Kiln, id: &str, delivery: &str) {
    let list = hooks(kiln, "acme", "shop").await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["name"], "ci");
    assert_eq!(list[0]["active"], true);
    let ds = deliveries(kiln, "acme", "shop", id).await;
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_eq!(ds[0]["id"], delivery);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_tokens_see_other_namespaces_do_not_and_forms_need_their_token() {
    let (_registry, kiln) = start_kiln().await;
    kiln.repo("acme", "shop").await;
    kiln.repo("other", "thing").await;
    let receiver = RecordingServer::start().await;
    let (s, hook) = kiln
        .post(
            "/namespaces/acme/repos/shop/webhooks",
            json!({"name": "ci", "url": receiver.url}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");
    let id = hook["id"].as_str().unwrap().to_string();
    let (s, d) = kiln
        .post(
            &format!("/namespaces/acme/repos/shop/webhooks/{id}/test"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let delivery = d["id"].as_str().unwrap().to_string();
    let tab = "/repos/acme/shop/webhooks";
    let page_path = format!("{tab}/{id}");
    let record = format!("/deliveries/{delivery}");
    let posts = [
        tab.to_string(),
        format!("{page_path}/edit"),
        format!("{page_path}/delete"),
        format!("{page_path}/enable"),
        format!("{page_path}/disable"),
        format!("{page_path}/test"),
        format!("{record}/redeliver"),
    ];
    let fields = [
        ("name", "sneaky"),
        ("url", "https://example.com/x"),
        ("events", "image.pushed"),
        ("payload_format", "kiln"),
        ("active", "1"),
    ];
    // A read token: every page, no change buttons, every change refused.
    let read = kiln.token("viewer", "read", None).await;
    let reader = Console::sign_in(&kiln.url, &read).await;
    let list = reader.get(tab).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.has(&format!("tr[data-webhook-id='{id}']")));
    assert!(!list.has("button.send-test"));
    assert!(!list.has("#add-webhook"));
    assert!(!list.has("a.edit"));
    let page = reader.get(&page_path).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.attrs("#records tr[data-delivery-id]", "data-delivery-id"),
        vec![delivery.clone()]
    );
    assert!(!page.has("button.send-test"));
    assert!(!page.has("form[action$='/delete']"));
    assert!(!page.has("button.disable"));
    let rec = reader.get(&record).await;
    assert_eq!(rec.status, StatusCode::OK);
    assert!(rec.has("details.attempt .request pre.body"));
    assert!(!rec.has("button.redeliver"));
    assert_eq!(
        reader.get(&format!("{page_path}/edit")).await.status,
        StatusCode::FORBIDDEN
    );
    for path in &posts {
        let p = reader.post(tab, path, &fields).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "POST {path}: {}", p.html);
    }
    assert_unchanged(&kiln, &id, &delivery).await;

    // A token of another namespace: nothing of acme exists for it.
    let other = kiln.token("other-writer", "write", Some("other")).await;
    let outsider = Console::sign_in(&kiln.url, &other).await;
    for path in [
        tab.to_string(),
        page_path.clone(),
        format!("{page_path}/edit"),
        record.clone(),
        format!("{record}/body/request"),
    ] {
        let p = outsider.get(&path).await;
        assert_eq!(p.status, StatusCode::NOT_FOUND, "GET {path}: {}", p.html);
    }
    for path in &posts {
        let p = outsider.post("/", path, &fields).await;
        assert_eq!(p.status, StatusCode::NOT_FOUND, "POST {path}: {}", p.html);
    }
    assert_unchanged(&kiln, &id, &delivery).await;

    // The admin without the form's CSRF token: refused, nothing done.
    let admin = Console::sign_in(&kiln.url, ADMIN_TOKEN).await;
    for path in &posts {
        let p = admin.send_form(path, &fields).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "POST {path}: {}", p.html);
        let p = admin
            .send_form(path, &[("_csrf", "forged"), ("name", "x")])
            .await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "POST {path}: {}", p.html);
    }
    assert_unchanged(&kiln, &id, &delivery).await;
    assert_eq!(receiver.requests().len(), 1, "only the API's test was sent");

    // Chinese: the tab, the subscription's page, and a refused URL in Chinese.
    let zh = admin.get(&format!("{tab}?lang=zh-CN")).await;
    assert_eq!(zh.status, StatusCode::OK);
    assert_eq!(zh.attrs("html", "lang"), vec!["zh-CN"]);
    assert_eq!(zh.text("#wh-list-title"), "Webhook 订阅");
    assert_eq!(zh.text("button.send-test"), "发送测试");
    assert_eq!(zh.text("#wh-add-title"), "添加 Webhook");
    let zh_page = admin.get(&page_path).await;
    assert_eq!(zh_page.text("#wh-records-title"), "访问记录");
    assert_eq!(zh_page.text("#records .delivery-status"), "成功");
    let bad = admin
        .post(
            tab,
            tab,
            &[
                ("name", "坏"),
                ("url", "not a url"),
                ("events", "image.pushed"),
                ("payload_format", "kiln"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.text("#err-url"), "这不是有效的 URL。");
    assert_eq!(bad.attrs("#wh-name", "value"), vec!["坏"]);
}
