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

    fn push_of(body: &[u8]) -> crate::forge::Push {
        match github::parse("push", body).unwrap() {
            Outcome::Push(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn captured_pushes_name_the_commit_to_build() {
        let head = "f1c5a9e3b7d1f5a9c3e7b1d5f9a3c7e1b5d9f3a7";
        let branch = push_of(include_bytes!("../../tests/data/gitea/push.json"));
        assert_eq!(branch.git_ref, "refs/heads/main");
        assert_eq!(
            (branch.after.as_str(), branch.commit.as_str()),
            (head, head)
        );
        assert_eq!(
            branch.message.as_deref(),
            Some("Add a HEALTHCHECK to the image\n")
        );
        assert!(
            github::repository_urls(include_bytes!("../../tests/data/gitea/push.json"))
                .contains(&"https://gitea.example.com/acme/widget".to_string())
        );

        let light = push_of(include_bytes!("../../tests/data/gitea/push_tag.json"));
        assert_eq!(light.git_ref, "refs/tags/v1.4.0");
        assert_eq!((light.after.as_str(), light.commit.as_str()), (head, head));

        // Gitea's `after` for an annotated tag is the tag object; its head_commit is the commit
        // (`GetCommit` peels the tag).
        let annotated = push_of(include_bytes!(
            "../../tests/data/gitea/push_tag_annotated.json"
        ));
        assert_eq!(annotated.git_ref, "refs/tags/v1.5.0");
        assert!(!annotated.deleted);
        assert_eq!(annotated.after, "7d3b9f5a1e7c3b9d5f1a7e3c9b5d1f7a3e9c5b26");
        assert_eq!(annotated.commit, head);

        // Gitea sends no `deleted` flag: all zeros in `after` is the deletion.
        let deleted = push_of(include_bytes!(
            "../../tests/data/gitea/push_tag_delete.json"
        ));
        assert_eq!(deleted.git_ref, "refs/tags/v1.3.0");
        assert!(deleted.deleted);
        assert_eq!(deleted.commit, "0".repeat(40));
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
