//! GitLab webhooks: push and tag push events, verified by `X-Gitlab-Token` (the secret itself).

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{MalformedPayload, Outcome, Push, is_sha, normalize_url};

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
    let Ok(p) = serde_json::from_slice::<RoutingPayload>(body) else {
        return vec![];
    };
    let mut urls: Vec<String> = [p.project, p.repository]
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
        .flatten()
        .map(|u| normalize_url(&u))
        .filter(|u| !u.is_empty())
        .collect();
    urls.sort();
    urls.dedup();
    urls
}

#[derive(Deserialize)]
struct WirePush {
    object_kind: String,
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    #[serde(default)]
    commits: Vec<WireCommit>,
}

#[derive(Deserialize)]
struct WireCommit {
    id: String,
    message: Option<String>,
}

/// What a verified delivery means. `event` is `X-Gitlab-Event` (`Push Hook`, `Tag Push Hook`, …).
pub fn parse(event: &str, body: &[u8]) -> Result<Outcome, MalformedPayload> {
    match event {
        "Push Hook" | "Tag Push Hook" => {
            let p: WirePush = serde_json::from_slice(body)
                .map_err(|e| MalformedPayload(format!("push payload: {e}")))?;
            if !matches!(p.object_kind.as_str(), "push" | "tag_push") {
                return Err(MalformedPayload(format!(
                    "object_kind '{}' in a {event}",
                    p.object_kind
                )));
            }
            if !p.git_ref.starts_with("refs/") || !is_sha(&p.after) || !is_sha(&p.before) {
                return Err(MalformedPayload(
                    "push payload: ref/before/after are not a full ref and commit ids".into(),
                ));
            }
            let deleted = p.after.bytes().all(|b| b == b'0');
            let message = p
                .commits
                .iter()
                .find(|c| c.id == p.after)
                .or(p.commits.last())
                .and_then(|c| c.message.clone());
            Ok(Outcome::Push(Push {
                git_ref: p.git_ref,
                before: p.before,
                after: p.after,
                deleted,
                message,
            }))
        }
        other => super::ignored(
            body,
            format!("GitLab event '{other}' does not trigger builds"),
        ),
    }
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
