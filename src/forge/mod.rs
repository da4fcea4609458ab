//! The one forge-neutral push event. Each forge's wire format stays private to its file.

pub mod client;
pub mod git;
pub mod gitea;
pub mod gitea_api;
pub mod github;
pub mod github_api;
pub mod gitlab;
pub mod gitlab_api;
pub mod hosts;
pub mod rest;
pub mod statuses;

/// What an inbound hook delivery means, once its signature is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Push(Push),
    Ping,
    /// A delivery we understand but do nothing with, and why.
    Ignore(String),
}

/// A push to one ref, as every forge describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Full ref name: `refs/heads/main`, `refs/tags/v1.0`.
    pub git_ref: String,
    pub before: String,
    /// The object the ref now points at, as the forge reports it (all zeros when deleted). For an
    /// annotated tag this is the tag object, not a commit: build [`Push::commit`] instead.
    pub after: String,
    /// The commit to build: `after` peeled to its commit as the forge reports it (GitHub's and
    /// Gitea's `head_commit.id`, GitLab's `checkout_sha`), else `after` (the build worker peels a
    /// tag object it is given). Equal to `after` (all zeros) when deleted.
    pub commit: String,
    pub deleted: bool,
    /// The head commit's message (for skip markers).
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedPayload(pub String);

/// A payload read once, before its signature is checked: the repository URLs it names (to route
/// it to the sources whose secrets may verify it) and, for a well-formed push, what it means,
/// which is trusted only once the signature is verified. A push is the delivery that comes by the
/// thousand, so its bytes are scanned once, not once to route and again to read.
#[derive(Debug)]
pub struct Read {
    /// Normalized, sorted, without duplicates; empty when the payload names none.
    pub urls: Vec<String>,
    /// `Some` for a push read whole; `None` for anything else (another event, or a push that did
    /// not read: its error is worded by the forge's `parse` once it is verified). An unverified
    /// payload of another kind is never parsed beyond its repository block.
    pub outcome: Option<Outcome>,
}

/// Sorts and dedups normalized URLs, dropping empty ones.
pub(crate) fn url_set(urls: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut urls: Vec<String> = urls
        .into_iter()
        .map(|u| normalize_url(&u))
        .filter(|u| !u.is_empty())
        .collect();
    urls.sort();
    urls.dedup();
    urls
}

/// Reads a payload into a wire struct; a type error names the field it is in
/// (`push payload: head_commit.id: invalid type: …`).
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    what: &str,
    body: &[u8],
) -> Result<T, MalformedPayload> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." | "" | "?" => MalformedPayload(format!("{what}: {}", e.inner())),
            _ => MalformedPayload(format!("{what}: {path}: {}", e.inner())),
        }
    })?;
    de.end()
        .map_err(|e| MalformedPayload(format!("{what}: {e}")))?;
    Ok(value)
}

/// Checks a hex HMAC-SHA256 of `body` under `secret`, in constant time (GitHub's and Gitea's scheme).
///
/// aws-lc's HMAC: the hook path's costliest step is this hash over the whole body, and its assembly
/// SHA-256 is about 3× the portable one on CPUs without SHA extensions.
pub fn verify_hex_hmac(secret: &[u8], body: &[u8], hex_sig: &str) -> bool {
    use aws_lc_rs::hmac;
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, secret), body, &sig).is_ok()
}

/// The hex SHA-256 of a delivery's body (how a replay under a new delivery id is told apart). aws-lc's,
/// as the HMAC: on CPUs without SHA extensions its assembly is about 3× the portable code.
pub fn body_sha256_hex(body: &[u8]) -> String {
    use aws_lc_rs::digest;
    hex::encode(digest::digest(&digest::SHA256, body).as_ref())
}

/// The hex HMAC-SHA256 of `body` under `secret`.
pub fn hex_hmac(secret: &[u8], body: &[u8]) -> String {
    use aws_lc_rs::hmac;
    hex::encode(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), body).as_ref())
}

/// A delivery of an event kiln does nothing with: accepted if it is JSON at all.
pub fn ignored(body: &[u8], why: String) -> Result<Outcome, MalformedPayload> {
    serde_json::from_slice::<serde_json::Value>(body)
        .map_err(|e| MalformedPayload(format!("payload is not JSON: {e}")))?;
    Ok(Outcome::Ignore(why))
}

/// The longest ref name taken from a payload, in bytes (git itself caps a ref's every component at
/// the file system's 255 bytes; forges cap whole names lower than this).
pub const MAX_REF_LEN: usize = 1024;

/// A pushed ref as a payload names it: a full ref (`refs/…`) of at most [`MAX_REF_LEN`] bytes,
/// without the control characters git refuses in ref names. The error quotes at most 64
/// characters of it.
pub fn check_ref(git_ref: &str) -> Result<(), MalformedPayload> {
    let shown = || escape_start(git_ref);
    if !git_ref.starts_with("refs/") {
        return Err(MalformedPayload(format!(
            "push payload: ref '{}' is not a full ref",
            shown()
        )));
    }
    if git_ref.len() > MAX_REF_LEN {
        return Err(MalformedPayload(format!(
            "push payload: ref '{}…' is over {MAX_REF_LEN} bytes",
            shown()
        )));
    }
    if git_ref.chars().any(char::is_control) {
        return Err(MalformedPayload(format!(
            "push payload: ref '{}' holds control characters",
            shown()
        )));
    }
    Ok(())
}

/// The first 64 characters of `text`, control characters escaped: fit for a message.
fn escape_start(text: &str) -> String {
    text.chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect()
}

/// Is this a full 40-hex commit id?
pub fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A clone URL in the form used to match hooks to sources: scheme and host lower-cased, no user info,
/// no trailing `/` or `.git`. Works for `https://`, `ssh://`, `git://`, `file://`, scp-like
/// `git@host:owner/repo` and plain paths.
pub fn normalize_url(url: &str) -> String {
    let url = url.trim();
    let (prefix, rest) = match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            (
                format!(
                    "{}://{}/",
                    scheme.to_ascii_lowercase(),
                    host.to_ascii_lowercase()
                ),
                path.to_string(),
            )
        }
        None => match url.split_once(':') {
            // scp-like user@host:path (not a Windows drive or a plain path)
            Some((host, path)) if !host.contains('/') && host.len() > 1 => {
                (format!("{}:", host.to_ascii_lowercase()), path.to_string())
            }
            _ => (String::new(), url.to_string()),
        },
    };
    let mut path = rest.trim_end_matches('/');
    if let Some(p) = path.strip_suffix(".git") {
        path = p.trim_end_matches('/');
    }
    format!("{prefix}{path}")
}

/// A URL fit for a log line or a message: any `user:password@` removed.
pub fn display_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest
                .split_once('/')
                .map_or((rest, None), |(a, p)| (a, Some(p)));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            match path {
                Some(p) => format!("{scheme}://{host}/{p}"),
                None => format!("{scheme}://{host}"),
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_digest_is_the_sha256_of_its_bytes() {
        use sha2::Digest;
        assert_eq!(
            body_sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            body_sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // Every length around the hash's 64-byte blocks and its padding, against the portable code.
        let body: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for n in 0..body.len() {
            assert_eq!(
                body_sha256_hex(&body[..n]),
                hex::encode(sha2::Sha256::digest(&body[..n])),
                "{n} bytes"
            );
        }
    }

    #[test]
    fn pushed_refs_are_full_short_and_printable() {
        for ok in ["refs/heads/main", "refs/tags/v1.0", "refs/heads/feature/é"] {
            assert_eq!(check_ref(ok), Ok(()), "{ok}");
        }
        let long = format!("refs/heads/{}", "a".repeat(MAX_REF_LEN));
        for (bad, says) in [
            ("main", "is not a full ref"),
            ("", "is not a full ref"),
            (long.as_str(), "is over 1024 bytes"),
            ("refs/heads/a\nb", "control characters"),
            ("refs/heads/\u{1b}[2J", "control characters"),
        ] {
            let e = check_ref(bad).unwrap_err();
            assert!(e.0.contains(says), "{bad:?}: {e}");
            assert!(e.0.len() < 200, "{e}");
        }
    }

    #[test]
    fn urls_normalize_to_one_form() {
        let cases = [
            (
                "https://github.com/Acme/API.git",
                "https://github.com/Acme/API",
            ),
            (
                "HTTPS://GitHub.COM/Acme/API/",
                "https://github.com/Acme/API",
            ),
            ("https://github.com/acme/api", "https://github.com/acme/api"),
            (
                "https://user:pw@github.com/acme/api.git",
                "https://github.com/acme/api",
            ),
            ("git://github.com/acme/api.git", "git://github.com/acme/api"),
            (
                "ssh://git@GitHub.com/acme/api.git",
                "ssh://github.com/acme/api",
            ),
            ("git@GitHub.com:acme/api.git", "git@github.com:acme/api"),
            ("file:///tmp/x/repo.git", "file:///tmp/x/repo"),
            ("file:///tmp/x/repo.git/", "file:///tmp/x/repo"),
            ("/srv/git/repo.git", "/srv/git/repo"),
            ("/srv/git/repo", "/srv/git/repo"),
            ("  https://github.com/a/b.git  ", "https://github.com/a/b"),
            ("", ""),
            ("https://", "https:///"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_url(input), want, "{input}");
        }
        assert_eq!(
            normalize_url("https://github.com/a/b"),
            normalize_url("https://github.com/a/b.git")
        );
        assert_ne!(
            normalize_url("https://github.com/a/b"),
            normalize_url("https://github.com/a/bc")
        );
    }

    #[test]
    fn display_url_drops_credentials() {
        assert_eq!(
            display_url("https://tok:secret@host/a/b.git"),
            "https://host/a/b.git"
        );
        assert_eq!(display_url("https://host/a"), "https://host/a");
        assert_eq!(display_url("https://x@host"), "https://host");
        assert_eq!(display_url("/local/path"), "/local/path");
    }

    #[test]
    fn hmac_agrees_with_the_rustcrypto_implementation() {
        use hmac::{Hmac, Mac};
        for key_len in [0, 1, 32, 63, 64, 65, 200] {
            for body_len in [0, 1, 55, 64, 7_960, 100_000] {
                let key: Vec<u8> = (0..key_len).map(|i| (i * 7 + 3) as u8).collect();
                let body: Vec<u8> = (0..body_len).map(|i| (i % 251) as u8).collect();
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
                mac.update(&body);
                let want = hex::encode(mac.finalize().into_bytes());
                assert_eq!(
                    hex_hmac(&key, &body),
                    want,
                    "key {key_len}, body {body_len}"
                );
                assert!(verify_hex_hmac(&key, &body, &want));
                assert!(verify_hex_hmac(&key, &body, &want.to_uppercase()));
                let mut wrong = want.clone().into_bytes();
                wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
                assert!(!verify_hex_hmac(
                    &key,
                    &body,
                    std::str::from_utf8(&wrong).unwrap()
                ));
                assert!(!verify_hex_hmac(&key, &body, &want[..62]));
                assert!(!verify_hex_hmac(&key, &body, ""));
            }
        }
    }

    #[test]
    fn shas() {
        assert!(is_sha(&"a".repeat(40)));
        assert!(!is_sha(&"a".repeat(39)));
        assert!(!is_sha(&"g".repeat(40)));
        assert!(!is_sha(""));
    }
}
