//! GitHub webhooks: `X-Hub-Signature-256` verification and the push/ping payloads.

use serde::Deserialize;

use super::{MalformedPayload, Outcome, Push, is_sha, normalize_url};

pub const EVENT_HEADER: &str = "x-github-event";
pub const DELIVERY_HEADER: &str = "x-github-delivery";
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Checks `sha256=<hex>` against HMAC-SHA256(secret, body), in constant time.
pub fn verify_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    header
        .trim()
        .strip_prefix("sha256=")
        .is_some_and(|sig| super::verify_hex_hmac(secret, body, sig))
}

/// `sha256=<hex>` for a body: what GitHub sends (used by tests and tools).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", super::hex_hmac(secret, body))
}

#[derive(Deserialize)]
struct RoutingPayload {
    repository: Option<WireRepository>,
}

#[derive(Deserialize)]
struct WireRepository {
    clone_url: Option<String>,
    ssh_url: Option<String>,
    git_url: Option<String>,
    html_url: Option<String>,
    svn_url: Option<String>,
}

/// The normalized repository URLs a payload names, for routing to sources before its signature is
/// checked. Nothing else of the payload is trusted at that point. Empty when it names none.
pub fn repository_urls(body: &[u8]) -> Vec<String> {
    let Ok(p) = serde_json::from_slice::<RoutingPayload>(body) else {
        return vec![];
    };
    let Some(r) = p.repository else { return vec![] };
    let mut urls: Vec<String> = [r.clone_url, r.ssh_url, r.git_url, r.html_url, r.svn_url]
        .into_iter()
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
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    head_commit: Option<WireCommit>,
}

#[derive(Deserialize)]
struct WireCommit {
    message: Option<String>,
}

/// What a verified delivery means.
pub fn parse(event: &str, body: &[u8]) -> Result<Outcome, MalformedPayload> {
    match event {
        "ping" => {
            serde_json::from_slice::<serde_json::Value>(body)
                .map_err(|e| MalformedPayload(format!("ping payload is not JSON: {e}")))?;
            Ok(Outcome::Ping)
        }
        "push" => {
            let p: WirePush = serde_json::from_slice(body)
                .map_err(|e| MalformedPayload(format!("push payload: {e}")))?;
            if !p.git_ref.starts_with("refs/") {
                return Err(MalformedPayload(format!(
                    "push payload: ref '{}' is not a full ref",
                    p.git_ref
                )));
            }
            if !is_sha(&p.after) || !is_sha(&p.before) {
                return Err(MalformedPayload(
                    "push payload: before/after are not commit ids".into(),
                ));
            }
            let deleted = p.deleted || p.after.bytes().all(|b| b == b'0');
            Ok(Outcome::Push(Push {
                git_ref: p.git_ref,
                before: p.before,
                after: p.after,
                deleted,
                message: p.head_commit.and_then(|c| c.message),
            }))
        }
        other => super::ignored(body, format!("event '{other}' does not trigger builds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"It's a Secret to Everybody";

    #[test]
    fn signature_matches_githubs_documented_example() {
        // From GitHub's "Validating webhook deliveries" docs.
        let body = b"Hello, World!";
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify_signature(SECRET, body, header));
        assert_eq!(sign(SECRET, body), header);
    }

    #[test]
    fn bad_signatures_are_refused() {
        let body = b"Hello, World!";
        let good = sign(SECRET, body);
        for bad in [
            "",
            "sha256=",
            "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha256=zz",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e16",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            &good[..good.len() - 2],
        ] {
            assert!(!verify_signature(SECRET, body, bad), "{bad}");
        }
        assert!(!verify_signature(b"other secret", body, &good));
        assert!(!verify_signature(SECRET, b"Hello, World?", &good));
    }

    fn push_body(git_ref: &str, after: &str, deleted: bool) -> Vec<u8> {
        serde_json::json!({
            "ref": git_ref, "before": "0".repeat(40), "after": after, "deleted": deleted,
            "head_commit": if deleted { serde_json::Value::Null } else { serde_json::json!({"id": after, "message": "Add x [skip ci]"}) },
            "repository": {"clone_url": "https://github.com/Acme/API.git", "ssh_url": "git@github.com:Acme/API.git",
                           "html_url": "https://github.com/Acme/API", "git_url": "git://github.com/Acme/API.git"}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn pushes_parse() {
        let sha = "1a2b3c4d".repeat(5);
        let out = parse("push", &push_body("refs/heads/main", &sha, false)).unwrap();
        assert_eq!(
            out,
            Outcome::Push(Push {
                git_ref: "refs/heads/main".into(),
                before: "0".repeat(40),
                after: sha.clone(),
                deleted: false,
                message: Some("Add x [skip ci]".into()),
            })
        );
        match parse("push", &push_body("refs/tags/v1", &"0".repeat(40), true)).unwrap() {
            Outcome::Push(p) => assert!(p.deleted),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse("ping", b"{\"zen\": \"x\"}").unwrap(), Outcome::Ping);
        assert!(matches!(
            parse("issues", b"{}").unwrap(),
            Outcome::Ignore(_)
        ));
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let sha = "a".repeat(40);
        for (event, body) in [
            ("push", b"not json".to_vec()),
            ("push", b"{}".to_vec()),
            (
                "push",
                br#"{"ref": 5, "before": "x", "after": "y"}"#.to_vec(),
            ),
            ("push", push_body("main", &sha, false)),
            ("push", push_body("refs/heads/main", "nothex", false)),
            ("ping", b"{".to_vec()),
            ("issues", b"".to_vec()),
        ] {
            assert!(
                parse(event, &body).is_err(),
                "{event} {}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn captured_payloads_parse() {
        let push = include_bytes!("../../tests/data/github/push.json");
        match parse("push", push).unwrap() {
            Outcome::Push(p) => {
                assert_eq!(p.git_ref, "refs/heads/main");
                assert!(!p.deleted);
                assert!(is_sha(&p.after));
                assert!(p.message.is_some());
            }
            other => panic!("{other:?}"),
        }
        assert!(repository_urls(push).contains(&"https://github.com/acme/widget".to_string()));
        match parse(
            "push",
            include_bytes!("../../tests/data/github/push_tag.json"),
        )
        .unwrap()
        {
            Outcome::Push(p) => assert!(p.git_ref.starts_with("refs/tags/") && !p.deleted),
            other => panic!("{other:?}"),
        }
        match parse(
            "push",
            include_bytes!("../../tests/data/github/push_delete.json"),
        )
        .unwrap()
        {
            Outcome::Push(p) => assert!(p.deleted),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse("ping", include_bytes!("../../tests/data/github/ping.json")).unwrap(),
            Outcome::Ping
        );
    }

    #[test]
    fn routing_reads_every_repository_url() {
        let urls = repository_urls(&push_body("refs/heads/main", &"a".repeat(40), false));
        assert_eq!(
            urls,
            vec![
                "git://github.com/Acme/API",
                "git@github.com:Acme/API",
                "https://github.com/Acme/API",
            ]
        );
        assert!(repository_urls(b"garbage").is_empty());
        assert!(repository_urls(b"{}").is_empty());
        assert!(repository_urls(br#"{"repository": null}"#).is_empty());
    }
}
