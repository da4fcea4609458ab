//! GitHub webhooks: `X-Hub-Signature-256` verification and the push/ping payloads.

use serde::Deserialize;

use super::{MalformedPayload, Outcome, Push, Read, is_sha, url_set};

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
    serde_json::from_slice::<RoutingPayload>(body)
        .ok()
        .and_then(|p| p.repository)
        .map(WireRepository::urls)
        .unwrap_or_default()
}

impl WireRepository {
    fn urls(self) -> Vec<String> {
        url_set(
            [
                self.clone_url,
                self.ssh_url,
                self.git_url,
                self.html_url,
                self.svn_url,
            ]
            .into_iter()
            .flatten(),
        )
    }
}

/// A payload in one pass when it is a push (its URLs and its meaning); anything else is only
/// routed here and parsed by [`parse`] once verified.
pub fn read(event: &str, body: &[u8]) -> Read {
    if event == "push"
        && let Ok(mut p) = serde_json::from_slice::<WirePush>(body)
        && let Ok(outcome) = push(&mut p)
    {
        return Read {
            urls: p
                .repository
                .take()
                .map(WireRepository::urls)
                .unwrap_or_default(),
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
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    head_commit: Option<WireCommit>,
    /// Read with the push by [`read`]; not part of what the push means.
    repository: Option<WireRepository>,
}

#[derive(Deserialize)]
struct WireCommit {
    id: Option<String>,
    message: Option<String>,
}

/// The commit a push builds. For a tag, `after` is whatever the tag ref points at: the tag
/// object of an annotated tag. GitHub (and Gitea) peel it for `head_commit`, so its `id` is the
/// commit; without a `head_commit` (older Gitea), `after` is kept and the build worker peels it.
/// A branch's `after` is its head commit.
fn commit_to_build(p: &WirePush, deleted: bool) -> Result<String, MalformedPayload> {
    if deleted || !p.git_ref.starts_with("refs/tags/") {
        return Ok(p.after.clone());
    }
    match p.head_commit.as_ref().and_then(|c| c.id.as_deref()) {
        Some(id) if is_sha(id) => Ok(id.to_string()),
        Some(id) => Err(MalformedPayload(format!(
            "push payload: head_commit.id '{}' is not a commit id",
            id.chars().take(64).collect::<String>()
        ))),
        None => Ok(p.after.clone()),
    }
}

/// What a verified delivery means.
pub fn parse(event: &str, body: &[u8]) -> Result<Outcome, MalformedPayload> {
    match event {
        "ping" => {
            serde_json::from_slice::<serde_json::Value>(body)
                .map_err(|e| MalformedPayload(format!("ping payload is not JSON: {e}")))?;
            Ok(Outcome::Ping)
        }
        "push" => push(&mut super::from_json("push payload", body)?),
        other => super::ignored(body, format!("event '{other}' does not trigger builds")),
    }
}

/// What a push means (its wire struct is left without the parts taken).
fn push(p: &mut WirePush) -> Result<Outcome, MalformedPayload> {
    super::check_ref(&p.git_ref)?;
    if !is_sha(&p.after) || !is_sha(&p.before) {
        return Err(MalformedPayload(
            "push payload: before/after are not commit ids".into(),
        ));
    }
    let deleted = p.deleted || p.after.bytes().all(|b| b == b'0');
    let commit = commit_to_build(p, deleted)?;
    Ok(Outcome::Push(Push {
        git_ref: std::mem::take(&mut p.git_ref),
        before: std::mem::take(&mut p.before),
        after: std::mem::take(&mut p.after),
        commit,
        deleted,
        message: p.head_commit.take().and_then(|c| c.message),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"It's a Secret to Everybody";

    #[test]
    fn one_pass_reads_a_push_as_the_two_passes_do() {
        let fixtures: [&[u8]; 9] = [
            include_bytes!("../../tests/data/github/push.json"),
            include_bytes!("../../tests/data/github/push_delete.json"),
            include_bytes!("../../tests/data/github/push_tag.json"),
            include_bytes!("../../tests/data/github/push_tag_annotated.json"),
            include_bytes!("../../tests/data/github/push_tag_delete.json"),
            include_bytes!("../../tests/data/gitea/push.json"),
            include_bytes!("../../tests/data/gitea/push_tag.json"),
            include_bytes!("../../tests/data/gitea/push_tag_annotated.json"),
            include_bytes!("../../tests/data/gitea/push_tag_delete.json"),
        ];
        for body in fixtures {
            let read = read("push", body);
            assert!(!read.urls.is_empty());
            assert_eq!(read.urls, repository_urls(body));
            assert_eq!(read.outcome, Some(parse("push", body).unwrap()));
        }
        // Anything but a well-formed push is only routed: its meaning is read once verified.
        let ping = include_bytes!("../../tests/data/github/ping.json");
        let read_ping = read("ping", ping);
        assert_eq!(read_ping.urls, repository_urls(ping));
        assert_eq!(read_ping.outcome, None);
        let push = include_bytes!("../../tests/data/github/push.json");
        assert_eq!(read("issues", push).outcome, None);
        assert_eq!(read("issues", push).urls, repository_urls(push));
        let mut bad: serde_json::Value = serde_json::from_slice(push).unwrap();
        bad["after"] = serde_json::json!("not-a-sha");
        let bad = serde_json::to_vec(&bad).unwrap();
        let read_bad = read("push", &bad);
        assert_eq!(read_bad.outcome, None);
        assert_eq!(read_bad.urls, repository_urls(push));
        assert_eq!(
            parse("push", &bad).unwrap_err().0,
            "push payload: before/after are not commit ids"
        );
        assert_eq!(read("push", b"{not json").urls, Vec::<String>::new());
        assert_eq!(read("push", b"{not json").outcome, None);
        // A push without a repository block reads, and names no URL to route by.
        let mut bare: serde_json::Value = serde_json::from_slice(push).unwrap();
        bare.as_object_mut().unwrap().remove("repository");
        let bare = read("push", &serde_json::to_vec(&bare).unwrap());
        assert!(bare.urls.is_empty());
        assert!(bare.outcome.is_some());
    }

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
                commit: sha.clone(),
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

    fn push_of(body: &[u8]) -> Push {
        match parse("push", body).unwrap() {
            Outcome::Push(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn captured_tag_pushes_name_the_commit_to_build() {
        let branch = push_of(include_bytes!("../../tests/data/github/push.json"));
        assert_eq!(branch.git_ref, "refs/heads/main");
        assert_eq!(branch.commit, branch.after);

        // A lightweight tag points at the commit itself.
        let light = push_of(include_bytes!("../../tests/data/github/push_tag.json"));
        assert_eq!(light.git_ref, "refs/tags/v1.4.0");
        assert_eq!(light.after, "a3f1c9e07b5d4e2f8c6a1b0d9e7f5c3a2b4d6e8f");
        assert_eq!(light.commit, light.after);

        // An annotated tag: `after` is the tag object, `head_commit.id` the tagged commit.
        let annotated = push_of(include_bytes!(
            "../../tests/data/github/push_tag_annotated.json"
        ));
        assert_eq!(annotated.git_ref, "refs/tags/v1.5.0");
        assert!(!annotated.deleted);
        assert_eq!(annotated.after, "4e9d2b7c1a6f3e8d0b5c2a9f7e4d1c8b6a3f0e52");
        assert_eq!(annotated.commit, "a3f1c9e07b5d4e2f8c6a1b0d9e7f5c3a2b4d6e8f");
        assert!(
            annotated
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with("Merge pull request #42"))
        );

        // Deleting a tag stays a deletion, whatever it pointed at.
        let deleted = push_of(include_bytes!(
            "../../tests/data/github/push_tag_delete.json"
        ));
        assert_eq!(deleted.git_ref, "refs/tags/v1.3.0");
        assert!(deleted.deleted);
        assert_eq!(deleted.after, "0".repeat(40));
        assert_eq!(deleted.commit, deleted.after);
        assert_eq!(deleted.message, None);
    }

    #[test]
    fn the_commit_of_a_tag_push_comes_from_head_commit() {
        let tag_object = "7".repeat(40);
        let commit = "c".repeat(40);
        let mut body: serde_json::Value =
            serde_json::from_slice(&push_body("refs/tags/v2", &tag_object, false)).unwrap();
        body["head_commit"]["id"] = serde_json::json!(commit);
        let p = push_of(body.to_string().as_bytes());
        assert_eq!(
            (p.after.as_str(), p.commit.as_str()),
            (tag_object.as_str(), commit.as_str())
        );

        // No head_commit (older Gitea): `after` is built, and the worker peels it.
        body["head_commit"] = serde_json::Value::Null;
        let p = push_of(body.to_string().as_bytes());
        assert_eq!(p.commit, tag_object);
        body["head_commit"] = serde_json::json!({"message": "no id"});
        assert_eq!(push_of(body.to_string().as_bytes()).commit, tag_object);

        // A branch's head is `after`, whatever head_commit says.
        let mut branch: serde_json::Value =
            serde_json::from_slice(&push_body("refs/heads/main", &tag_object, false)).unwrap();
        branch["head_commit"]["id"] = serde_json::json!(commit);
        assert_eq!(push_of(branch.to_string().as_bytes()).commit, tag_object);

        // A head_commit.id that is no commit id is refused, naming the field.
        for bad in [
            serde_json::json!("nothex"),
            serde_json::json!("c".repeat(39)),
            serde_json::json!(""),
            serde_json::json!(5),
        ] {
            body["head_commit"] = serde_json::json!({"id": bad, "message": "x"});
            let err = parse("push", body.to_string().as_bytes()).unwrap_err();
            assert!(err.0.contains("head_commit"), "{bad}: {err}");
        }
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
