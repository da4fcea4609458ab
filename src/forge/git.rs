//! Plain git servers: the push notification `examples/post-receive` sends to `POST /hooks/git`.
//!
//! The body is `{"ref": "refs/heads/main", "before": "<40 hex>", "after": "<40 hex>"}` (other fields
//! are ignored: the hook script adds a delivery id so that every notification's body is unique),
//! signed `X-Kiln-Signature-256: sha256=<hex>`, the HMAC-SHA256 of the raw body with the source's
//! secret. The body names no repository: the URL does (`/hooks/git?source=NS/REPO`, see
//! [`webhook_url`]), so a delivery is checked against one source's secret only.

use serde::Deserialize;

use super::{MalformedPayload, Outcome, Push, check_ref, is_sha};

pub const SIGNATURE_HEADER: &str = "x-kiln-signature-256";
/// Optional: without it, a delivery is named by its body's SHA-256.
pub const DELIVERY_HEADER: &str = "x-kiln-delivery";
/// The query parameter naming the source: `NS/REPO`.
pub const SOURCE_PARAM: &str = "source";
/// The event every notification is stored as.
pub const EVENT: &str = "push";
/// A notification is three short fields: a body over this is not one.
pub const MAX_BODY: usize = 16 * 1024;

/// Where a git server's hook sends the notifications of the source of `namespace/repo`.
pub fn webhook_url(public_url: &str, namespace: &str, repo: &str) -> String {
    format!(
        "{}/hooks/git?{SOURCE_PARAM}={namespace}/{repo}",
        public_url.trim_end_matches('/')
    )
}

/// The signature is GitHub's scheme (`sha256=<hex>` of HMAC-SHA256(secret, body), checked in
/// constant time): what `examples/post-receive` sends.
pub use super::github::{sign, verify_signature};

#[derive(Deserialize)]
struct WireNotification {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
}

/// An object id of a notification: 40 hex digits (all zeros: no object).
fn object_id(field: &str, value: &str) -> Result<String, MalformedPayload> {
    if is_sha(value) {
        return Ok(value.to_ascii_lowercase());
    }
    let shown: String = value
        .chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect();
    Err(MalformedPayload(format!(
        "push notification: {field}: '{shown}' is not a 40-hex object id"
    )))
}

fn is_zero(sha: &str) -> bool {
    sha.bytes().all(|b| b == b'0')
}

/// What a verified notification means: always a push (a deletion when `after` is all zeros). An
/// annotated tag's `after` is the tag object: the build worker peels it to its commit.
pub fn parse(body: &[u8]) -> Result<Outcome, MalformedPayload> {
    if body.len() > MAX_BODY {
        return Err(MalformedPayload(format!(
            "push notification: the body is over {MAX_BODY} bytes"
        )));
    }
    let n: WireNotification = super::from_json("push notification", body)?;
    check_ref(&n.git_ref).map_err(|e| {
        MalformedPayload(e.0.replacen("push payload: ref", "push notification: ref:", 1))
    })?;
    let before = object_id("before", &n.before)?;
    let after = object_id("after", &n.after)?;
    if is_zero(&before) && is_zero(&after) {
        return Err(MalformedPayload(
            "push notification: before and after are both zero: the ref was neither created nor deleted".into(),
        ));
    }
    let deleted = is_zero(&after);
    Ok(Outcome::Push(Push {
        git_ref: n.git_ref,
        before,
        commit: after.clone(),
        after,
        deleted,
        message: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a secret of sixteen chars or more";
    const ZERO: &str = "0000000000000000000000000000000000000000";

    fn body(git_ref: &str, before: &str, after: &str) -> Vec<u8> {
        serde_json::json!({"ref": git_ref, "before": before, "after": after})
            .to_string()
            .into_bytes()
    }

    fn push(body: &[u8]) -> Push {
        match parse(body) {
            Ok(Outcome::Push(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pushes_creations_and_deletions_parse() {
        let a = "1a2b3c4d".repeat(5);
        let b = "ABCDEF01".repeat(5);
        assert_eq!(
            push(&body("refs/heads/main", &a, &b)),
            Push {
                git_ref: "refs/heads/main".into(),
                before: a.clone(),
                after: b.to_ascii_lowercase(),
                commit: b.to_ascii_lowercase(),
                deleted: false,
                message: None,
            }
        );
        let created = push(&body("refs/tags/v1.0", ZERO, &a));
        assert!(!created.deleted);
        assert_eq!(created.commit, a, "a tag object is peeled by the worker");
        let deleted = push(&body("refs/heads/gone", &a, ZERO));
        assert!(deleted.deleted);
        assert_eq!(deleted.commit, ZERO);
        // Extra fields (the script's delivery id) are ignored.
        let extra = format!(
            r#"{{"ref":"refs/heads/main","before":"{a}","after":"{a}","delivery":"x","pusher":{{"name":"n"}}}}"#
        );
        assert_eq!(push(extra.as_bytes()).after, a);
    }

    #[test]
    fn malformed_notifications_name_what_is_wrong() {
        let a = "a".repeat(40);
        let long_ref = format!("refs/heads/{}", "x".repeat(2000));
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not json".to_vec(), "push notification"),
            (b"".to_vec(), "push notification"),
            (b"[]".to_vec(), "push notification"),
            (b"{}".to_vec(), "missing field `ref`"),
            (
                format!(r#"{{"ref":"refs/heads/m","after":"{a}"}}"#).into_bytes(),
                "missing field `before`",
            ),
            (
                format!(r#"{{"ref":"refs/heads/m","before":"{a}"}}"#).into_bytes(),
                "missing field `after`",
            ),
            (
                format!(r#"{{"ref":7,"before":"{a}","after":"{a}"}}"#).into_bytes(),
                "ref: invalid type",
            ),
            (
                format!(r#"{{"ref":"refs/heads/m","before":"{a}","after":"{a}"}} trailing"#)
                    .into_bytes(),
                "trailing",
            ),
            (body("refs/heads/m", &a, &"g".repeat(40)), "after: 'ggg"),
            (body("refs/heads/m", &"a".repeat(39), &a), "before: 'aaa"),
            (body("refs/heads/m", &a, &"a".repeat(41)), "after:"),
            (body("refs/heads/m", &a, &"a".repeat(64)), "after:"),
            (body("refs/heads/m", &a, ""), "after: ''"),
            (body("refs/heads/m", ZERO, ZERO), "both zero"),
            (body("main", &a, &a), "ref: 'main' is not a full ref"),
            (body("refs/heads/a\nb", &a, &a), "control characters"),
            (body("refs/heads/\u{1b}[2J", &a, &a), "control characters"),
            (body(&long_ref, &a, &a), "is over 1024 bytes"),
            (
                format!(
                    r#"{{"ref":"refs/heads/m","before":"{a}","after":"{a}","pad":"{}"}}"#,
                    "p".repeat(MAX_BODY)
                )
                .into_bytes(),
                "over 16384 bytes",
            ),
        ];
        for (body, says) in cases {
            let e = parse(&body).unwrap_err();
            assert!(
                e.0.contains(says),
                "{:?}: {e}",
                String::from_utf8_lossy(&body[..body.len().min(80)])
            );
            assert!(e.0.len() < 300, "{e}");
            assert!(!e.0.contains('\n') && !e.0.contains('\u{1b}'), "{e:?}");
        }
    }

    #[test]
    fn signatures_are_checked_over_the_raw_body() {
        let body = body("refs/heads/main", ZERO, &"b".repeat(40));
        let good = sign(SECRET, &body);
        assert!(good.starts_with("sha256=") && good.len() == 7 + 64);
        assert!(verify_signature(SECRET, &body, &good));
        assert!(verify_signature(SECRET, &body, &format!("  {good} ")));
        // Agrees with an HMAC computed apart (as `openssl dgst -sha256 -hmac` does).
        {
            use hmac::{Hmac, Mac};
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
            mac.update(&body);
            assert_eq!(
                good,
                format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
            );
        }
        let mut other = body.clone();
        other.push(b' ');
        for (secret, body, header) in [
            (SECRET, &body, ""),
            (SECRET, &body, "sha256="),
            (SECRET, &body, &good[7..]),
            (SECRET, &body, &good.replace("sha256=", "sha1=")),
            (SECRET, &body, &good[..good.len() - 2]),
            (SECRET, &body, &format!("{good}00")),
            (SECRET, &body, "sha256=zz"),
            (SECRET, &other, &good),
            (b"another secret of sixteen".as_slice(), &body, &good),
        ] {
            assert!(!verify_signature(secret, body, header), "{header}");
        }
    }

    #[test]
    fn the_webhook_url_names_the_source() {
        assert_eq!(
            webhook_url("http://kiln.example:8080", "acme", "api"),
            "http://kiln.example:8080/hooks/git?source=acme/api"
        );
        assert_eq!(
            webhook_url("https://kiln.example/", "a", "b"),
            "https://kiln.example/hooks/git?source=a/b"
        );
    }
}
