//! GitLab webhooks: push and tag push events, verified by `X-Gitlab-Token` (the secret itself).

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{MalformedPayload, Outcome, Push, Read, is_sha, url_set};

pub const TOKEN_HEADERS: &[&str] = &["x-gitlab-token"];
pub const EVENT_HEADERS: &[&str] = &["x-gitlab-event"];
pub const DELIVERY_HEADERS: &[&str] = &["x-gitlab-event-uuid", "x-gitlab-webhook-uuid"];

/// Compares the token with the secret through their digests, so timing says nothing about it.
pub fn verify_token(secret: &[u8], _body: &[u8], token: &str) -> bool {
    Sha256::digest(token.trim().as_bytes()) == Sha256::digest(secret)
}

#[derive(Deserialize)]
struct WireUrls {
    git_http_url: Option<String>,
    git_ssh_url: Option<String>,
    http_url: Option<String>,
    ssh_url: Option<String>,
    web_url: Option<String>,
    homepage: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct RoutingPayload {
    project: Option<WireUrls>,
    repository: Option<WireUrls>,
}

/// The normalized repository URLs a payload names (`project` and `repository` blocks).
pub fn repository_urls(body: &[u8]) -> Vec<String> {
    serde_json::from_slice::<RoutingPayload>(body)
        .map(|p| urls_of(p.project, p.repository))
        .unwrap_or_default()
}

fn urls_of(project: Option<WireUrls>, repository: Option<WireUrls>) -> Vec<String> {
    url_set(
        [project, repository]
            .into_iter()
            .flatten()
            .flat_map(|u| {
                [
                    u.git_http_url,
                    u.git_ssh_url,
                    u.http_url,
                    u.ssh_url,
                    u.web_url,
                    u.homepage,
                    u.url,
                ]
            })
            .flatten(),
    )
}

/// A payload in one pass when it is a push or a tag push (its URLs and its meaning); anything
/// else is only routed here and parsed by [`parse`] once verified.
pub fn read(event: &str, body: &[u8]) -> Read {
    if matches!(event, "Push Hook" | "Tag Push Hook")
        && let Ok(mut p) = serde_json::from_slice::<WirePush>(body)
        && let Ok(outcome) = push(event, &mut p)
    {
        return Read {
            urls: urls_of(p.project.take(), p.repository.take()),
            outcome: Some(outcome),
        };
    }
    Read {
        urls: repository_urls(body),
        outcome: None,
    }
}

#[derive(Deserialize)]
struct WirePush {
    object_kind: String,
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    /// The commit `after` peels to (for an annotated tag, the tagged commit); null on deletion.
    checkout_sha: Option<String>,
    #[serde(default)]
    commits: Vec<WireCommit>,
    /// Read with the push by [`read`]; not part of what the push means.
    project: Option<WireUrls>,
    repository: Option<WireUrls>,
}

#[derive(Deserialize)]
struct WireCommit {
    id: String,
    message: Option<String>,
}

/// What a verified delivery means. `event` is `X-Gitlab-Event` (`Push Hook`, `Tag Push Hook`, …).
pub fn parse(event: &str, body: &[u8]) -> Result<Outcome, MalformedPayload> {
    match event {
        "Push Hook" | "Tag Push Hook" => push(event, &mut super::from_json("push payload", body)?),
        other => super::ignored(
            body,
            format!("GitLab event '{other}' does not trigger builds"),
        ),
    }
}

/// What a push or tag push means (its wire struct is left without the parts taken).
fn push(event: &str, p: &mut WirePush) -> Result<Outcome, MalformedPayload> {
    if !matches!(p.object_kind.as_str(), "push" | "tag_push") {
        return Err(MalformedPayload(format!(
            "object_kind '{}' in a {event}",
            p.object_kind
        )));
    }
    super::check_ref(&p.git_ref)?;
    if !is_sha(&p.after) || !is_sha(&p.before) {
        return Err(MalformedPayload(
            "push payload: before/after are not commit ids".into(),
        ));
    }
    let deleted = p.after.bytes().all(|b| b == b'0');
    // GitLab's `after` is the ref's new value (an annotated tag's tag object);
    // `checkout_sha` is the commit it peels to. Without one, the build worker peels `after`.
    let commit = match p.checkout_sha.as_deref() {
        _ if deleted => p.after.clone(),
        Some(sha) if is_sha(sha) => sha.to_string(),
        Some(sha) => {
            return Err(MalformedPayload(format!(
                "push payload: checkout_sha '{}' is not a commit id",
                sha.chars().take(64).collect::<String>()
            )));
        }
        None => p.after.clone(),
    };
    let message = p
        .commits
        .iter()
        .find(|c| c.id == commit)
        .or(p.commits.last())
        .and_then(|c| c.message.clone());
    Ok(Outcome::Push(Push {
        git_ref: std::mem::take(&mut p.git_ref),
        before: std::mem::take(&mut p.before),
        after: std::mem::take(&mut p.after),
        commit,
        deleted,
        message,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(kind: &str, git_ref: &str, after: &str) -> Vec<u8> {
        serde_json::json!({
            "object_kind": kind, "event_name": kind, "ref": git_ref, "before": "0".repeat(40), "after": after,
            "checkout_sha": after, "total_commits_count": 1,
            "project": {"git_http_url": "https://gitlab.example.com/Acme/API.git", "git_ssh_url": "git@gitlab.example.com:Acme/API.git",
                        "web_url": "https://gitlab.example.com/Acme/API"},
            "repository": {"git_http_url": "https://gitlab.example.com/Acme/API.git", "homepage": "https://gitlab.example.com/Acme/API"},
            "commits": [{"id": "b".repeat(40), "message": "older"}, {"id": after, "message": "Release [ci skip]"}],
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn one_pass_reads_a_push_as_the_two_passes_do() {
        let fixtures: [(&str, &[u8]); 4] = [
            (
                "Push Hook",
                include_bytes!("../../tests/data/gitlab/push.json"),
            ),
            (
                "Tag Push Hook",
                include_bytes!("../../tests/data/gitlab/tag_push.json"),
            ),
            (
                "Tag Push Hook",
                include_bytes!("../../tests/data/gitlab/tag_push_annotated.json"),
            ),
            (
                "Tag Push Hook",
                include_bytes!("../../tests/data/gitlab/tag_push_delete.json"),
            ),
        ];
        for (event, body) in fixtures {
            let read = read(event, body);
            assert!(!read.urls.is_empty());
            assert_eq!(read.urls, repository_urls(body));
            assert_eq!(read.outcome, Some(parse(event, body).unwrap()));
        }
        // Another event, or a malformed push: only routed.
        let push = payload("push", "refs/heads/main", &"a".repeat(40));
        for event in ["Merge Request Hook", ""] {
            let r = read(event, &push);
            assert_eq!(r.outcome, None, "{event}");
            assert_eq!(r.urls, repository_urls(&push));
        }
        let bad = payload("note", "refs/heads/main", &"a".repeat(40));
        let r = read("Push Hook", &bad);
        assert_eq!(r.outcome, None);
        assert_eq!(r.urls, repository_urls(&bad));
        assert_eq!(
            parse("Push Hook", &bad).unwrap_err().0,
            "object_kind 'note' in a Push Hook"
        );
    }

    #[test]
    fn tokens() {
        assert!(verify_token(b"s3cret-token", b"", "s3cret-token"));
        assert!(verify_token(b"s3cret-token", b"", " s3cret-token\n"));
        assert!(!verify_token(b"s3cret-token", b"", "s3cret-tokem"));
        assert!(!verify_token(b"s3cret-token", b"", ""));
    }

    #[test]
    fn push_and_tag_push() {
        let a = "a".repeat(40);
        match parse("Push Hook", &payload("push", "refs/heads/main", &a)).unwrap() {
            Outcome::Push(p) => {
                assert_eq!((p.git_ref.as_str(), p.deleted), ("refs/heads/main", false));
                assert_eq!(p.message.as_deref(), Some("Release [ci skip]"));
            }
            other => panic!("{other:?}"),
        }
        match parse("Tag Push Hook", &payload("tag_push", "refs/tags/v1", &a)).unwrap() {
            Outcome::Push(p) => assert_eq!(p.git_ref, "refs/tags/v1"),
            other => panic!("{other:?}"),
        }
        match parse(
            "Push Hook",
            &payload("push", "refs/heads/gone", &"0".repeat(40)),
        )
        .unwrap()
        {
            Outcome::Push(p) => assert!(p.deleted),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse("Merge Request Hook", b"{}").unwrap(),
            Outcome::Ignore(_)
        ));
        for (event, body) in [
            ("Push Hook", b"nope".to_vec()),
            ("Push Hook", payload("merge_request", "refs/heads/main", &a)),
            ("Push Hook", payload("push", "main", &a)),
            ("Push Hook", payload("push", "refs/heads/main", "xyz")),
            ("Issue Hook", b"{".to_vec()),
        ] {
            assert!(parse(event, &body).is_err(), "{event}");
        }
    }

    fn push_of(event: &str, body: &[u8]) -> Push {
        match parse(event, body).unwrap() {
            Outcome::Push(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn captured_pushes_name_the_commit_to_build() {
        let head = "d4b8e2c6f0a3b7e1c5d9f2a6e0b4c8d3f7a1e5b9";
        let branch = push_of(
            "Push Hook",
            include_bytes!("../../tests/data/gitlab/push.json"),
        );
        assert_eq!(branch.git_ref, "refs/heads/main");
        assert_eq!(
            (branch.after.as_str(), branch.commit.as_str()),
            (head, head)
        );
        assert_eq!(
            branch.message.as_deref(),
            Some("Add a HEALTHCHECK to the image\n\nThe orchestrator restarts a stuck widget.\n")
        );
        assert!(
            repository_urls(include_bytes!("../../tests/data/gitlab/push.json"))
                .contains(&"https://gitlab.example.com/acme/widget".to_string())
        );

        let light = push_of(
            "Tag Push Hook",
            include_bytes!("../../tests/data/gitlab/tag_push.json"),
        );
        assert_eq!(light.git_ref, "refs/tags/v1.4.0");
        assert_eq!((light.after.as_str(), light.commit.as_str()), (head, head));

        // An annotated tag: `after` is the tag object, `checkout_sha` the commit it tags.
        let annotated = push_of(
            "Tag Push Hook",
            include_bytes!("../../tests/data/gitlab/tag_push_annotated.json"),
        );
        assert_eq!(annotated.git_ref, "refs/tags/v1.5.0");
        assert!(!annotated.deleted);
        assert_eq!(annotated.after, "2c7f1b9e4d6a3c8f0e5b2d7a9c4f1e6b3d8a0c57");
        assert_eq!(annotated.commit, head);
        assert_eq!(
            annotated.message.as_deref().map(|m| m.lines().next()),
            Some(Some("Add a HEALTHCHECK to the image"))
        );

        // A deleted tag: checkout_sha is null; it stays a deletion.
        let deleted = push_of(
            "Tag Push Hook",
            include_bytes!("../../tests/data/gitlab/tag_push_delete.json"),
        );
        assert_eq!(deleted.git_ref, "refs/tags/v1.3.0");
        assert!(deleted.deleted);
        assert_eq!(deleted.commit, "0".repeat(40));
        assert_eq!(deleted.message, None);
    }

    #[test]
    fn checkout_sha_is_the_commit_to_build() {
        let tag_object = "7".repeat(40);
        let commit = "c".repeat(40);
        let mut body: serde_json::Value =
            serde_json::from_slice(&payload("tag_push", "refs/tags/v1", &tag_object)).unwrap();
        body["checkout_sha"] = serde_json::json!(commit);
        let p = push_of("Tag Push Hook", body.to_string().as_bytes());
        assert_eq!(
            (p.after.as_str(), p.commit.as_str()),
            (tag_object.as_str(), commit.as_str())
        );

        // Without a checkout_sha (a tag GitLab could not peel), `after` is built and the worker
        // peels it or says why it cannot.
        body["checkout_sha"] = serde_json::Value::Null;
        assert_eq!(
            push_of("Tag Push Hook", body.to_string().as_bytes()).commit,
            tag_object
        );
        body.as_object_mut().unwrap().remove("checkout_sha");
        assert_eq!(
            push_of("Tag Push Hook", body.to_string().as_bytes()).commit,
            tag_object
        );

        // A deletion ignores checkout_sha.
        let mut gone: serde_json::Value =
            serde_json::from_slice(&payload("tag_push", "refs/tags/v1", &"0".repeat(40))).unwrap();
        gone["checkout_sha"] = serde_json::json!(commit);
        let p = push_of("Tag Push Hook", gone.to_string().as_bytes());
        assert!(p.deleted);
        assert_eq!(p.commit, "0".repeat(40));

        for bad in [
            serde_json::json!("nothex"),
            serde_json::json!("c".repeat(41)),
            serde_json::json!(""),
            serde_json::json!(["c"]),
        ] {
            body["checkout_sha"] = bad.clone();
            let err = parse("Tag Push Hook", body.to_string().as_bytes()).unwrap_err();
            assert!(err.0.contains("checkout_sha"), "{bad}: {err}");
        }
    }

    #[test]
    fn routing_urls() {
        let urls = repository_urls(&payload("push", "refs/heads/main", &"a".repeat(40)));
        assert!(
            urls.contains(&"https://gitlab.example.com/Acme/API".to_string()),
            "{urls:?}"
        );
        assert!(
            urls.contains(&"git@gitlab.example.com:Acme/API".to_string()),
            "{urls:?}"
        );
        assert!(repository_urls(b"[]").is_empty());
    }
}
