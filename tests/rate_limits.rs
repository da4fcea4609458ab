//! Per-address rate limits (issue 11) on the surfaces anyone can reach: hook deliveries with a bad
//! signature, console sign-ins with a bad token, API calls with a bad token. The real server on a
//! loopback port (every request comes from 127.0.0.1): failures beyond the budget are answered 429
//! with `Retry-After`; a verified delivery or a valid token from the same address still passes; the
//! budget comes back; many requests at once never get a 5xx.
//!
//! No Docker daemon is needed: no rule matches the pushes, so nothing builds.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::console::Console;
use support::kiln::{ADMIN_TOKEN, Kiln};
use support::{
    Registry, ZERO_SHA, github_push_payload, new_delivery_id, post_github_hook, wait_until,
};

const CLONE_URL: &str = "https://github.com/acme/widget.git";
const COMMIT: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";
/// Three failures, then one more a minute: a throttled address stays throttled for the test.
const TIGHT: &[(&str, &str)] = &[
    ("KILN_RATE_LIMIT_PER_MINUTE", "1"),
    ("KILN_RATE_LIMIT_BURST", "3"),
];

fn push_body() -> Vec<u8> {
    serde_json::to_vec(&github_push_payload(
        CLONE_URL,
        "refs/heads/main",
        ZERO_SHA,
        COMMIT,
        false,
    ))
    .unwrap()
}

/// What one answer says: status, `Retry-After`, JSON body.
struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
    body: Value,
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status();
    let retry_after = resp.headers().get("retry-after").map(|v| {
        v.to_str()
            .unwrap()
            .parse::<u64>()
            .expect("Retry-After in seconds")
    });
    let text = resp.text().await.unwrap();
    Answer {
        status,
        retry_after,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

async fn bad_hook(kiln: &Kiln) -> Answer {
    answer(
        post_github_hook(
            &format!("{}/hooks/github", kiln.url),
            "push",
            &new_delivery_id(),
            "not the secret",
            &push_body(),
        )
        .await,
    )
    .await
}

async fn bad_token_call(kiln: &Kiln) -> Answer {
    answer(
        kiln.http
            .get(format!("{}/api/v1/namespaces", kiln.url))
            .bearer_auth("kiln_0000000000000000000000000000000000000000000000000000000000000000")
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// A 429 as the API answers it: `Retry-After` in whole seconds (at most the minute one cell takes)
/// and the JSON error shape.
fn assert_throttled(a: &Answer) {
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    let secs = a.retry_after.expect("a 429 says Retry-After");
    assert!((1..=60).contains(&secs), "Retry-After: {secs}");
    assert_eq!(a.body["error"]["code"], "rate_limited", "{}", a.body);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too many failed requests"),
        "{}",
        a.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_throttled_but_a_signed_delivery_from_the_same_address_is_stored() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, TIGHT).await;
    let secret = kiln.ci_repo("acme", "widget", CLONE_URL).await;

    for i in 0..3 {
        let a = bad_hook(&kiln).await;
        assert_eq!(
            a.status,
            StatusCode::UNAUTHORIZED,
            "failure {i}: {}",
            a.body
        );
        assert_eq!(a.retry_after, None);
    }
    let a = bad_hook(&kiln).await;
    assert_throttled(&a);

    // The address is over its budget: a correctly signed delivery is still verified, accepted and
    // stored.
    let delivery = new_delivery_id();
    let signed = answer(
        post_github_hook(
            &format!("{}/hooks/github", kiln.url),
            "push",
            &delivery,
            &secret,
            &push_body(),
        )
        .await,
    )
    .await;
    assert_eq!(signed.status, StatusCode::ACCEPTED, "{}", signed.body);
    let (s, events) = kiln.get("/namespaces/acme/repos/widget/events").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(events[0]["delivery_id"], delivery.as_str(), "{events}");
    // ... and did not refill the budget.
    assert_throttled(&bad_hook(&kiln).await);

    // A payload naming no linked repository is an unverified failure too.
    let mut nameless: Value = serde_json::from_slice(&push_body()).unwrap();
    nameless.as_object_mut().unwrap().remove("repository");
    let a = answer(
        post_github_hook(
            &format!("{}/hooks/gitea", kiln.url),
            "push",
            &new_delivery_id(),
            &secret,
            &serde_json::to_vec(&nameless).unwrap(),
        )
        .await,
    )
    .await;
    assert_throttled(&a);

    // The API has a budget of its own: its first bad token is a plain 401.
    let a = bad_token_call(&kiln).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
}

/// A plain git server's notification to `/hooks/git?{query}`, signed with `secret` (none: unsigned).
async fn plain_git_hook(kiln: &Kiln, query: &str, secret: Option<&str>, delivery: &str) -> Answer {
    let body =
        serde_json::to_vec(&json!({"ref": "refs/heads/main", "before": ZERO_SHA, "after": COMMIT}))
            .unwrap();
    let mut req = kiln
        .http
        .post(format!("{}/hooks/git?{query}", kiln.url))
        .header("content-type", "application/json")
        .header("x-kiln-delivery", delivery);
    if let Some(secret) = secret {
        req = req.header(
            "x-kiln-signature-256",
            kiln::forge::git::sign(secret.as_bytes(), &body),
        );
    }
    answer(req.body(body).send().await.unwrap()).await
}

/// `/hooks/git` spends the hooks' budget: an unknown source, a wrong secret and a missing signature
/// each count, and the address is then throttled on every hook; a signed notification from it is
/// still stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_git_notifications_share_the_hooks_budget() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, TIGHT).await;
    let secret = "plain-git-secret-0123456789abcdef";
    kiln.repo("acme", "plain").await;
    let (s, body) = kiln
        .put(
            "/namespaces/acme/repos/plain/source",
            json!({"provider": "git", "clone_url": CLONE_URL, "webhook_secret": secret}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");

    for (query, signed_with) in [
        ("source=acme/nothing", Some(secret)),
        ("source=acme/plain", Some("not-the-secret-0123456789abcdef")),
        ("source=acme/plain", None),
    ] {
        let a = plain_git_hook(&kiln, query, signed_with, &new_delivery_id()).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{query}: {}", a.body);
        assert_eq!(a.retry_after, None);
    }
    assert_throttled(&plain_git_hook(&kiln, "source=acme/nothing", Some(secret), "x").await);
    assert_throttled(&bad_hook(&kiln).await);

    // A request that names no source is malformed (400), not a failed signature: it is answered
    // as such even now.
    let a = plain_git_hook(&kiln, "", Some(secret), "y").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(a.body["error"]["field"], "source", "{}", a.body);

    let delivery = new_delivery_id();
    let signed = plain_git_hook(&kiln, "source=acme/plain", Some(secret), &delivery).await;
    assert_eq!(signed.status, StatusCode::ACCEPTED, "{}", signed.body);
    let (s, events) = kiln.get("/namespaces/acme/repos/plain/events").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(events[0]["delivery_id"], delivery.as_str(), "{events}");
    assert_eq!(events[0]["provider"], "git", "{events}");
    assert_throttled(&plain_git_hook(&kiln, "source=acme/plain", None, "z").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_throttled_but_a_valid_token_from_the_same_address_works() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, TIGHT).await;
    let reader = kiln.token("reader", "read", None).await;

    for i in 0..3 {
        let a = bad_token_call(&kiln).await;
        assert_eq!(
            a.status,
            StatusCode::UNAUTHORIZED,
            "failure {i}: {}",
            a.body
        );
    }
    assert_throttled(&bad_token_call(&kiln).await);
    // No token at all counts as a failure as well.
    let a = answer(
        kiln.http
            .get(format!("{}/api/v1/namespaces", kiln.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_throttled(&a);

    // Valid tokens are never limited, from a throttled address as from any other.
    let (s, body) = kiln.get("/namespaces").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = kiln
        .call_as(&reader, reqwest::Method::GET, "/namespaces", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // A forbidden call (a valid token without the role) is not an authentication failure.
    let (s, body) = kiln
        .call_as(
            &reader,
            reqwest::Method::POST,
            "/namespaces",
            Some(json!({"name": "blue"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
}

/// `GET /registry/token` (what `docker login` calls) with Basic credentials whose password is `token`.
async fn registry_token_call(kiln: &Kiln, token: &str) -> Answer {
    answer(
        kiln.http
            .get(format!(
                "{}/registry/token?service=kiln&scope=repository:acme/app:pull",
                kiln.url
            ))
            .basic_auth("someone", Some(token))
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_registry_logins_are_throttled_but_a_valid_token_still_gets_a_registry_token() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, TIGHT).await;
    let wrong = "kiln_1111111111111111111111111111111111111111111111111111111111111111";
    for i in 0..3 {
        let a = registry_token_call(&kiln, wrong).await;
        assert_eq!(
            a.status,
            StatusCode::UNAUTHORIZED,
            "failure {i}: {}",
            a.body
        );
    }
    assert_throttled(&registry_token_call(&kiln, wrong).await);
    // The API shares the budget of bad tokens: the address is throttled there too.
    assert_throttled(&bad_token_call(&kiln).await);
    // A valid token from the throttled address still gets its registry token.
    let a = registry_token_call(&kiln, ADMIN_TOKEN).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(
        a.body["token"].as_str().is_some_and(|t| !t.is_empty()),
        "{}",
        a.body
    );
}

/// `POST /registry/events` (the registry's notifications) with the Bearer `token`.
async fn registry_events_call(kiln: &Kiln, token: &str) -> Answer {
    answer(
        kiln.http
            .post(format!("{}/registry/events", kiln.url))
            .bearer_auth(token)
            .header(
                "content-type",
                "application/vnd.docker.distribution.events.v1+json",
            )
            .body(r#"{"events": []}"#)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_registry_event_tokens_are_throttled_but_the_registry_itself_is_not() {
    let registry = Registry::start();
    let mut extra = TIGHT.to_vec();
    extra.push(("KILN_REGISTRY_EVENTS_TOKEN", "the-registry-events-token"));
    let kiln = Kiln::start(&registry, &extra).await;
    for i in 0..3 {
        let a = registry_events_call(&kiln, "a-guess").await;
        assert_eq!(
            a.status,
            StatusCode::UNAUTHORIZED,
            "failure {i}: {}",
            a.body
        );
    }
    assert_throttled(&registry_events_call(&kiln, "a-guess").await);
    // The hooks share this budget (both are deliveries from outside).
    assert_throttled(&bad_hook(&kiln).await);
    let a = registry_events_call(&kiln, "the-registry-events-token").await;
    assert!(a.status.is_success(), "{} {}", a.status, a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_throttled_with_the_error_page_and_a_valid_one_still_signs_in() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, TIGHT).await;
    let console = Console::new(&kiln.url);

    for i in 0..3 {
        let page = console.try_sign_in("kiln_wrong").await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "failure {i}");
    }
    // Sent by hand to read the headers.
    let csrf = console.get("/login").await.csrf();
    let resp = console
        .http
        .post(format!("{}/login", kiln.url))
        .form(&[("token", "kiln_wrong"), ("_csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let secs: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("Too many failed attempts from your address"),
        "{html}"
    );

    // The right token signs in all the same.
    let page = console.try_sign_in(ADMIN_TOKEN).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(!page.url.contains("/login"), "still on {}", page.url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_comes_back_after_its_window() {
    let registry = Registry::start();
    // Two failures at once, one more every half second.
    let kiln = Kiln::start(
        &registry,
        &[
            ("KILN_RATE_LIMIT_PER_MINUTE", "120"),
            ("KILN_RATE_LIMIT_BURST", "2"),
        ],
    )
    .await;
    let mut throttled = None;
    for _ in 0..50 {
        let a = bad_token_call(&kiln).await;
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(a);
            break;
        }
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    }
    let throttled = throttled.expect("a 429 within 50 bad tokens");
    assert_throttled(&throttled);
    assert_eq!(throttled.retry_after, Some(1), "half a second, rounded up");
    wait_until(
        "a bad token is answered 401 again",
        Duration::from_secs(10),
        || async { bad_token_call(&kiln).await.status == StatusCode::UNAUTHORIZED },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_at_once_are_answered_without_a_5xx_and_signed_ones_are_all_stored() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, TIGHT).await;
    let secret = kiln.ci_repo("acme", "widget", CLONE_URL).await;
    let url = kiln.url.clone();
    let http = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..96 {
        let (url, http, secret) = (url.clone(), http.clone(), secret.clone());
        tasks.spawn(async move {
            let (kind, resp) = match i % 3 {
                0 => (
                    "bad hook",
                    post_github_hook(
                        &format!("{url}/hooks/github"),
                        "push",
                        &new_delivery_id(),
                        "not the secret",
                        &push_body(),
                    )
                    .await,
                ),
                1 => (
                    "bad token",
                    http.get(format!("{url}/api/v1/namespaces"))
                        .bearer_auth("kiln_nope")
                        .send()
                        .await
                        .unwrap(),
                ),
                _ => (
                    "signed hook",
                    post_github_hook(
                        &format!("{url}/hooks/github"),
                        "push",
                        &new_delivery_id(),
                        &secret,
                        &push_body(),
                    )
                    .await,
                ),
            };
            (kind, answer(resp).await)
        });
    }
    let mut tally = std::collections::BTreeMap::<(&str, u16), usize>::new();
    while let Some(joined) = tasks.join_next().await {
        let (kind, a) = joined.unwrap();
        assert!(
            !a.status.is_server_error(),
            "{kind}: {} {}",
            a.status,
            a.body
        );
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            assert_throttled(&a);
        }
        *tally.entry((kind, a.status.as_u16())).or_default() += 1;
    }
    println!("{tally:?}");
    // Exactly the budget of each surface passes as 401, the rest is 429; every signed one is 202.
    assert_eq!(tally.get(&("bad hook", 401)), Some(&3), "{tally:?}");
    assert_eq!(tally.get(&("bad hook", 429)), Some(&29), "{tally:?}");
    assert_eq!(tally.get(&("bad token", 401)), Some(&3), "{tally:?}");
    assert_eq!(tally.get(&("bad token", 429)), Some(&29), "{tally:?}");
    assert_eq!(tally.get(&("signed hook", 202)), Some(&32), "{tally:?}");
    let (s, events) = kiln
        .get("/namespaces/acme/repos/widget/events?limit=100")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(events.as_array().unwrap().len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_per_minute_turns_limiting_off() {
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[("KILN_RATE_LIMIT_PER_MINUTE", "0")]).await;
    for _ in 0..40 {
        assert_eq!(bad_token_call(&kiln).await.status, StatusCode::UNAUTHORIZED);
    }
}
