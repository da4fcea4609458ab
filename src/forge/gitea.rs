//! Gitea and Forgejo webhooks: `X-Gitea-Signature` (or `X-Forgejo-Signature`), the hex HMAC-SHA256 of
//! the raw body. Their push payload has GitHub's shape, so `github::parse` reads it.

pub const SIGNATURE_HEADERS: &[&str] = &["x-gitea-signature", "x-forgejo-signature"];
pub const EVENT_HEADERS: &[&str] = &["x-gitea-event", "x-forgejo-event"];
pub const DELIVERY_HEADERS: &[&str] = &["x-gitea-delivery", "x-forgejo-delivery"];

/// Checks the hex signature against HMAC-SHA256(secret, body), in constant time.
pub fn verify_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    super::verify_hex_hmac(secret, body, header)
}

pub fn sign(secret: &[u8], body: &[u8]) -> String {
    super::hex_hmac(secret, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::{Outcome, github};

    #[test]
    fn signatures() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let sig = sign(b"secret", body);
        assert!(verify_signature(b"secret", body, &sig));
        assert!(verify_signature(b"secret", body, &format!(" {sig} ")));
        assert!(!verify_signature(b"other", body, &sig));
        assert!(!verify_signature(b"secret", b"{}", &sig));
        assert!(!verify_signature(b"secret", body, &format!("sha256={sig}")));
        assert!(!verify_signature(b"secret", body, ""));
        assert!(!verify_signature(b"secret", body, "zz"));
    }

    #[test]
    fn a_gitea_push_reads_like_githubs() {
        let after = "c".repeat(40);
        let body = serde_json::json!({
            "ref": "refs/heads/main", "before": "0".repeat(40), "after": after,
            "compare_url": "", "commits": [{"id": after, "message": "fix\n"}],
            "head_commit": {"id": after, "message": "fix\n"},
            "repository": {"clone_url": "https://gitea.example.com/acme/api.git", "ssh_url": "git@gitea.example.com:acme/api.git",
                           "html_url": "https://gitea.example.com/acme/api"},
        })
        .to_string();
        match github::parse("push", body.as_bytes()).unwrap() {
            Outcome::Push(p) => {
                assert_eq!(p.git_ref, "refs/heads/main");
                assert_eq!(p.after, after);
                assert!(!p.deleted);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            github::repository_urls(body.as_bytes())
                .contains(&"https://gitea.example.com/acme/api".to_string())
        );
    }
}
