//! What a source's clone URL is, and whether kiln can fetch from it.
//!
//! kiln fetches with libgit2 built without SSH: `https://`, `http://` and `git://` over the
//! network, and repositories on kiln's own host (`file://` URLs and absolute paths), which the
//! operator allows directory by directory (`KILN_LOCAL_SOURCES`, checked outside this pure
//! module). SSH URLs (`ssh://…`, scp-like `git@host:path`) are refused with the https form to use
//! instead.
//!
//! Credentials embedded in a remote URL (`https://user:token@host/x.git`) are taken out of it:
//! the URL kiln stores, shows and names mirrors by has none; the user info is kept apart as a
//! write-only secret of the source ([`Credentials`]).

use super::{FieldError, escape};

/// The longest clone URL taken.
pub const MAX_LEN: usize = 2048;

/// What kiln can fetch, for error messages.
pub const SUPPORTED: &str = "https://, http:// or git:// URLs, or a local repository (file:// or \
     an absolute path) under a directory the operator allows with KILN_LOCAL_SOURCES";

/// A clone URL that passed [`CloneUrl::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloneUrl {
    /// Fetched over the network.
    Remote {
        /// The URL without user info: what is stored, shown and fetched.
        url: String,
        /// The user info that was in the URL, if any.
        credentials: Option<Credentials>,
    },
    /// A repository on kiln's host.
    Local {
        /// The URL or path as given.
        url: String,
        /// The path it names (a `file://` URL percent-decoded, as git reads it).
        path: String,
    },
}

impl CloneUrl {
    /// Checks a clone URL: its shape, and that its scheme is one kiln can fetch. Every refusal
    /// names the field `clone_url`; the code is `invalid_url`, or `ssh_not_supported` for SSH URLs.
    pub fn parse(text: &str) -> Result<CloneUrl, FieldError> {
        let invalid = |message: String| FieldError::new("clone_url", "invalid_url", message);
        if text.trim().is_empty() {
            return Err(invalid("clone_url is required".into()));
        }
        if text.len() > MAX_LEN {
            return Err(invalid(format!(
                "clone_url must be at most {MAX_LEN} characters"
            )));
        }
        if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid(
                "clone_url must not contain spaces or control characters".into(),
            ));
        }
        if let Some((scheme, rest)) = text.split_once("://") {
            return match scheme.to_ascii_lowercase().as_str() {
                "https" | "http" | "git" => parse_remote(text, scheme, rest),
                "file" => parse_file_url(text, rest),
                "ssh" | "git+ssh" | "ssh+git" => {
                    Err(ssh_refused(text, https_form_of_ssh_url(rest)))
                }
                _ => Err(invalid(format!(
                    "clone_url scheme '{}' is not supported; kiln fetches {SUPPORTED}",
                    escape(scheme)
                ))),
            };
        }
        if text.starts_with('/') {
            return Ok(CloneUrl::Local {
                url: text.to_string(),
                path: text.to_string(),
            });
        }
        // git's scp-like syntax, `[user@]host:path`: SSH.
        match text.split_once(':') {
            Some((host, path)) if !host.is_empty() && !host.contains('/') && !path.is_empty() => {
                let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
                let suggestion = (!host.is_empty())
                    .then(|| format!("https://{host}/{}", path.trim_start_matches('/')));
                Err(ssh_refused(text, suggestion))
            }
            _ => Err(invalid(format!(
                "clone_url must be a URL or an absolute path; kiln fetches {SUPPORTED}"
            ))),
        }
    }

    /// The URL as kiln stores and shows it: never with credentials.
    pub fn url(&self) -> &str {
        match self {
            CloneUrl::Remote { url, .. } | CloneUrl::Local { url, .. } => url,
        }
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        match self {
            CloneUrl::Remote { credentials, .. } => credentials.as_ref(),
            CloneUrl::Local { .. } => None,
        }
    }
}

fn ssh_refused(text: &str, https_form: Option<String>) -> FieldError {
    let instead = https_form.map_or_else(
        || "https://host/path".to_string(),
        |url| format!("'{}'", escape(&url)),
    );
    FieldError::new(
        "clone_url",
        "ssh_not_supported",
        format!(
            "ssh URLs are not supported ('{}'); use {instead} instead (credentials may be \
             embedded, as in https://user:token@host/path; kiln keeps them secret)",
            escape(&shown(text))
        ),
    )
}

/// A URL for an error message: `scheme://user:password@…` loses its `user:password@` (an
/// scp-like `user@host:path` has no password and is shown as it is).
fn shown(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}{tail}")
}

/// `ssh://[user@]host[:port]/path` → `https://host/path`.
fn https_form_of_ssh_url(rest: &str) -> Option<String> {
    let (authority, path) = rest.split_once('/')?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => host_port,
    };
    (!host.is_empty() && !path.is_empty()).then(|| format!("https://{host}/{path}"))
}

fn parse_remote(text: &str, scheme: &str, rest: &str) -> Result<CloneUrl, FieldError> {
    let invalid = |message: String| FieldError::new("clone_url", "invalid_url", message);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo), host),
        None => (None, authority),
    };
    if host.is_empty() || host.starts_with(':') {
        return Err(invalid(format!(
            "clone_url '{}' names no host",
            escape(&shown(text))
        )));
    }
    if tail.trim_matches('/').is_empty() {
        return Err(invalid(format!(
            "clone_url '{}' names no repository",
            escape(&format!("{scheme}://{host}{tail}"))
        )));
    }
    let url = format!("{scheme}://{host}{tail}");
    let credentials = match userinfo {
        None | Some("") => None,
        Some(_) if scheme.eq_ignore_ascii_case("git") => {
            return Err(invalid(format!(
                "git:// URLs carry no credentials ('{}'); use https:// to fetch with credentials",
                escape(&url)
            )));
        }
        Some(userinfo) => Some(Credentials(userinfo.to_string())),
    };
    Ok(CloneUrl::Remote { url, credentials })
}

/// `file:///path` or `file://localhost/path`, as libgit2 reads them (the path percent-decoded).
fn parse_file_url(text: &str, rest: &str) -> Result<CloneUrl, FieldError> {
    let path = if rest.starts_with('/') {
        rest
    } else if let Some(path) = rest
        .strip_prefix("localhost")
        .filter(|p| p.starts_with('/'))
    {
        path
    } else {
        return Err(FieldError::new(
            "clone_url",
            "invalid_url",
            format!(
                "clone_url '{}': a file:// URL names a path on kiln's host, as file:///path",
                escape(&shown(text))
            ),
        ));
    };
    if path.trim_matches('/').is_empty() {
        return Err(FieldError::new(
            "clone_url",
            "invalid_url",
            "clone_url names no repository",
        ));
    }
    Ok(CloneUrl::Local {
        url: text.to_string(),
        path: percent_decode(path),
    })
}

/// The user info taken out of a clone URL (`user:password`, or a lone token), percent-encoded as it
/// was written. A secret: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials(String);

impl Credentials {
    /// From the user info as stored (`user:password`, percent-encoded); None when empty.
    pub fn from_userinfo(userinfo: &str) -> Option<Credentials> {
        (!userinfo.is_empty()).then(|| Credentials(userinfo.to_string()))
    }

    /// From `user:password` or a lone token as people write them (not percent-encoded): both
    /// parts are percent-encoded. None when empty.
    pub fn from_plain(text: &str) -> Option<Credentials> {
        let userinfo = match text.split_once(':') {
            Some((user, password)) => {
                format!("{}:{}", percent_encode(user), percent_encode(password))
            }
            None => percent_encode(text),
        };
        (!text.is_empty()).then_some(Credentials(userinfo))
    }

    /// The user info as stored: `user:password`, percent-encoded.
    pub fn userinfo(&self) -> &str {
        &self.0
    }

    /// `url` (`scheme://host/…`) with this user info put back in: only for the request that hands
    /// a clone URL to kiln.
    pub fn embed_in(&self, url: &str) -> String {
        match url.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{}@{rest}", self.0),
            None => url.to_string(),
        }
    }

    /// The user name, decoded (the whole user info when it has no `:`: a token given alone).
    pub fn username(&self) -> String {
        percent_decode(self.0.split_once(':').map_or(&self.0, |(user, _)| user))
    }

    /// The password, decoded; empty when none was given.
    pub fn password(&self) -> String {
        self.0
            .split_once(':')
            .map_or_else(String::new, |(_, password)| percent_decode(password))
    }

    /// The strings that must never be shown: the user info as written and decoded, and the
    /// password (or the lone token) as written and decoded.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets = vec![self.0.clone(), percent_decode(&self.0)];
        let secret = self.0.split_once(':').map_or(&*self.0, |(_, p)| p);
        secrets.push(secret.to_string());
        secrets.push(percent_decode(secret));
        secrets.retain(|s| !s.is_empty());
        secrets.sort();
        secrets.dedup();
        secrets
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials([redacted])")
    }
}

/// Splits the user info off a stored `http(s)://` URL: `(url without it, user info)`, or None when
/// the URL holds none (or is not an http(s) URL). For rows written before credentials were kept
/// apart.
pub fn split_embedded_credentials(url: &str) -> Option<(String, Credentials)> {
    let (scheme, rest) = url.split_once("://")?;
    if !(scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http")) {
        return None;
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, host) = authority.rsplit_once('@')?;
    let credentials = Credentials::from_userinfo(userinfo);
    Some((format!("{scheme}://{host}{tail}"), credentials?))
}

/// The host of a `scheme://[userinfo@]host[:port]/…` URL, lower-cased, without the port.
pub fn host_of(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        &host_port[..bracketed.find(']').map_or(host_port.len(), |i| i + 2)]
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// The scheme and host (with port) of a URL, lower-cased: whom credentials are for.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        host_port.to_ascii_lowercase()
    ))
}

/// Every byte but the URL's unreserved characters as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `%XX` escapes decoded (invalid ones kept as they are), as git decodes URLs.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(url: &str, credentials: Option<&str>) -> CloneUrl {
        CloneUrl::Remote {
            url: url.to_string(),
            credentials: credentials.map(|c| Credentials(c.to_string())),
        }
    }

    fn local(url: &str, path: &str) -> CloneUrl {
        CloneUrl::Local {
            url: url.to_string(),
            path: path.to_string(),
        }
    }

    #[test]
    fn supported_urls() {
        let cases = [
            (
                "https://github.com/acme/api.git",
                remote("https://github.com/acme/api.git", None),
            ),
            ("http://git.local/a/b", remote("http://git.local/a/b", None)),
            (
                "HTTPS://GitHub.com/Acme/API",
                remote("HTTPS://GitHub.com/Acme/API", None),
            ),
            ("git://example.com/x", remote("git://example.com/x", None)),
            (
                "https://git.local:8443/a/b.git?x=1",
                remote("https://git.local:8443/a/b.git?x=1", None),
            ),
            (
                "https://kiln-bot:s3cr3t@github.com/acme/api.git",
                remote("https://github.com/acme/api.git", Some("kiln-bot:s3cr3t")),
            ),
            (
                "https://ghp_token123@github.com/acme/api.git",
                remote("https://github.com/acme/api.git", Some("ghp_token123")),
            ),
            (
                "http://u:p@ss@git.local:3000/a/b",
                remote("http://git.local:3000/a/b", Some("u:p@ss")),
            ),
            (
                "https://@github.com/acme/api.git",
                remote("https://github.com/acme/api.git", None),
            ),
            (
                "https://github.com/acme/x@y.git",
                remote("https://github.com/acme/x@y.git", None),
            ),
            (
                "/srv/git/api.git",
                local("/srv/git/api.git", "/srv/git/api.git"),
            ),
            (
                "file:///srv/git/api.git",
                local("file:///srv/git/api.git", "/srv/git/api.git"),
            ),
            (
                "file://localhost/srv/git/a%20b.git",
                local("file://localhost/srv/git/a%20b.git", "/srv/git/a b.git"),
            ),
            (
                "file:///srv/git/%2e%2e/x",
                local("file:///srv/git/%2e%2e/x", "/srv/git/../x"),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(CloneUrl::parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn the_stored_url_never_holds_credentials() {
        let parsed = CloneUrl::parse("https://u%40x:p%2Fw@host/a.git").unwrap();
        assert_eq!(parsed.url(), "https://host/a.git");
        let credentials = parsed.credentials().unwrap();
        assert_eq!(credentials.username(), "u@x");
        assert_eq!(credentials.password(), "p/w");
        assert_eq!(credentials.userinfo(), "u%40x:p%2Fw");
        assert_eq!(
            credentials.embed_in(parsed.url()),
            "https://u%40x:p%2Fw@host/a.git"
        );
        assert_eq!(
            CloneUrl::parse(&credentials.embed_in(parsed.url())),
            Ok(parsed.clone())
        );
        assert!(!format!("{parsed:?}").contains("p%2Fw"));
        let token = Credentials::from_userinfo("ghp_abc").unwrap();
        assert_eq!(
            (token.username(), token.password()),
            ("ghp_abc".into(), String::new())
        );
        assert_eq!(Credentials::from_userinfo(""), None);
        let plain = Credentials::from_plain("bot@acme:p@ss/w:rd").unwrap();
        assert_eq!(plain.userinfo(), "bot%40acme:p%40ss%2Fw%3Ard");
        assert_eq!(
            (plain.username(), plain.password()),
            ("bot@acme".into(), "p@ss/w:rd".into())
        );
        assert_eq!(
            Credentials::from_plain("ghp_x-1").unwrap().userinfo(),
            "ghp_x-1"
        );
        assert_eq!(Credentials::from_plain(""), None);
        assert_eq!(
            Credentials::from_userinfo("u:p%2Fw").unwrap().secrets(),
            ["p%2Fw", "p/w", "u:p%2Fw", "u:p/w"]
        );
    }

    #[test]
    fn ssh_urls_are_refused_with_the_https_form() {
        for (text, suggestion) in [
            (
                "git@github.com:acme/api.git",
                "https://github.com/acme/api.git",
            ),
            ("github.com:acme/api.git", "https://github.com/acme/api.git"),
            (
                "ssh://git@github.com/acme/api.git",
                "https://github.com/acme/api.git",
            ),
            ("ssh://git@git.local:2222/a/b", "https://git.local/a/b"),
            ("SSH://host/x", "https://host/x"),
            ("git+ssh://git@host/x.git", "https://host/x.git"),
            ("ssh+git://host/x.git", "https://host/x.git"),
        ] {
            let e = CloneUrl::parse(text).unwrap_err();
            assert_eq!(
                (e.field, e.code),
                ("clone_url", "ssh_not_supported"),
                "{text}"
            );
            assert!(e.message.contains("ssh URLs are not supported"), "{e}");
            assert!(e.message.contains(suggestion), "{text}: {e}");
            assert!(e.message.contains("user:token@"), "{e}");
        }
    }

    #[test]
    fn bad_urls_are_refused() {
        for (text, fragment) in [
            ("", "required"),
            ("   ", "required"),
            ("ftp://x/y", "scheme 'ftp' is not supported"),
            ("ext::sh -c evil", "spaces"),
            ("https://", "names no host"),
            ("https:///", "names no host"),
            ("https://host", "names no repository"),
            ("https://user:pw@host/", "names no repository"),
            ("https://:8080/x", "names no host"),
            ("relative/path", "must be a URL or an absolute path"),
            ("./repo", "must be a URL or an absolute path"),
            ("https://github.com/a b", "spaces"),
            ("https://github.com/a\nb", "spaces"),
            (":nohost", "must be a URL"),
            ("host:", "must be a URL"),
            ("git://user:pw@host/x", "git:// URLs carry no credentials"),
            ("file://otherhost/srv/x", "file:///path"),
            ("file://", "file:///path"),
            ("file:///", "names no repository"),
        ] {
            let e = CloneUrl::parse(text).unwrap_err();
            assert_eq!((e.field, e.code), ("clone_url", "invalid_url"), "{text}");
            assert!(e.message.contains(fragment), "{text:?}: {e}");
        }
        let long = format!("https://x/{}", "a".repeat(3000));
        assert!(CloneUrl::parse(&long).unwrap_err().message.contains("2048"));
        // No refusal shows the credentials.
        for text in [
            "git://user:pw-s3cr3t@host/x",
            "https://user:pw-s3cr3t@host",
            "https://user:pw-s3cr3t@",
            "https://user:pw-s3cr3t@:8080/x",
            "ssh://user:pw-s3cr3t@host/x",
            "git+ssh://pw-s3cr3t@host",
            "file://user:pw-s3cr3t@host/x",
            "ftp://user:pw-s3cr3t@host/x",
        ] {
            let e = CloneUrl::parse(text).unwrap_err();
            assert!(!e.message.contains("s3cr3t"), "{text}: {e}");
        }
    }

    #[test]
    fn total_over_odd_input() {
        for text in [
            "://",
            "a://",
            "%",
            "https://@",
            "file://%zz/",
            "🦀://x/y",
            "[::1]:x",
        ] {
            let _ = CloneUrl::parse(text);
        }
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("a%2Fb%c3%a9"), "a/bé");
    }

    #[test]
    fn splitting_stored_urls() {
        assert_eq!(
            split_embedded_credentials("https://u:p@github.com/a/b.git")
                .map(|(url, c)| (url, c.userinfo().to_string())),
            Some(("https://github.com/a/b.git".into(), "u:p".into()))
        );
        for plain in [
            "https://github.com/a/b.git",
            "https://github.com/a/x@y.git",
            "https://@github.com/a/b.git",
            "ssh://git@github.com/a/b.git",
            "git@github.com:a/b.git",
            "/srv/git/x.git",
        ] {
            assert!(split_embedded_credentials(plain).is_none(), "{plain}");
        }
    }

    #[test]
    fn hosts_and_origins() {
        assert_eq!(
            host_of("https://u:p@GitHub.com:443/a").as_deref(),
            Some("github.com")
        );
        assert_eq!(host_of("http://[::1]:8080/a").as_deref(), Some("[::1]"));
        assert_eq!(host_of("https://host").as_deref(), Some("host"));
        assert_eq!(host_of("/srv/x"), None);
        assert_eq!(
            origin_of("HTTPS://u@Git.Local:8443/a").as_deref(),
            Some("https://git.local:8443")
        );
        assert_ne!(origin_of("http://host/a"), origin_of("https://host/a"));
    }
}
