//! What the reqwest clients of GitLab (`gitlab_api.rs`) and Gitea/Forgejo (`gitea_api.rs`) share:
//! the HTTP client (outbound guard, proxy, timeouts, no redirects, User-Agent `kiln`), the URL of a
//! call built segment by segment, and the reading of an answer: the next page from `Link`
//! (or `X-Next-Page`, `X-Total-Count`), the rate limit from `RateLimit-*` / `Retry-After`, and the
//! host's one-line message from its error body.
//!
//! The token travels in one header marked sensitive; it never goes into a URL, a message or a
//! `Debug` output.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::client::HostError;
use crate::notify::guard::{self, AllowList, GuardedResolver};

/// The longest message kept from a host's error body, in characters.
const MAX_MESSAGE: usize = 300;

/// How a REST client reaches its host.
#[derive(Debug, Clone)]
pub struct RestOptions {
    /// Internal addresses the host may have (`KILN_GIT_ALLOW`); every other internal address is
    /// refused, as for clone URLs.
    pub allow: AllowList,
    /// The outbound proxy (`KILN_OUTBOUND_PROXY`), if any.
    pub proxy: Option<SecretString>,
    /// The whole call's limit (connecting included).
    pub timeout: Duration,
}

impl Default for RestOptions {
    fn default() -> Self {
        RestOptions {
            allow: AllowList::default().for_setting("KILN_GIT_ALLOW"),
            proxy: None,
            timeout: Duration::from_secs(20),
        }
    }
}

impl RestOptions {
    /// The operator's settings: `KILN_GIT_ALLOW` (a tenant's host URL passes the same guard as
    /// a clone URL) and `KILN_OUTBOUND_PROXY`.
    pub fn from_config(config: &crate::config::Config) -> RestOptions {
        RestOptions {
            allow: config.git_allow.clone(),
            proxy: config.outbound_proxy.clone(),
            ..RestOptions::default()
        }
    }
}

/// Checks a host's base URL as a tenant gives it (`https://gitlab.example.com`, or with a path
/// for an instance under one): http or https, a host, no credentials, no query nor fragment.
/// Answers it without a trailing `/`.
pub fn parse_base_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "must be an http:// or https:// URL, not {}://",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("names no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold credentials (give the token on its own)".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or a fragment".into());
    }
    let mut url = url;
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&path);
    Ok(url)
}

/// One host's API: its root URL, the client, and the token's header.
pub(crate) struct Rest {
    http: reqwest::Client,
    /// The API root (`https://host/api/v4`), without a trailing `/`.
    api: Url,
    auth_name: HeaderName,
    auth_value: HeaderValue,
    /// The token, to scrub it from any message a host might echo it in.
    token: SecretString,
    allow: Arc<AllowList>,
    /// Through a proxy the resolver only sees the proxy's name: the API host is checked before
    /// each call instead.
    check_each_call: bool,
    timeout: Duration,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest")
            .field("api", &self.api.as_str())
            .field("auth", &format_args!("{}: [redacted]", self.auth_name))
            .finish()
    }
}

/// A host's answer, read whole.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Rest {
    /// `base_url` is the instance (checked by [`parse_base_url`]), `api_path` the API's root
    /// under it (`api/v4`), `auth` the header and value carrying `token`.
    pub fn new(
        base_url: &str,
        api_path: &str,
        auth_name: &'static str,
        auth_value: String,
        token: &str,
        options: &RestOptions,
    ) -> Result<Rest, HostError> {
        let base = parse_base_url(base_url)
            .map_err(|e| HostError::unreachable(format!("base URL {e}")))?;
        if token.trim().is_empty() {
            return Err(HostError::unreachable("the token is empty"));
        }
        let mut api = base;
        api.path_segments_mut()
            .map_err(|_| HostError::unreachable("base URL cannot have a path"))?
            .pop_if_empty()
            .extend(api_path.split('/'));
        let host = api.host_str().unwrap_or_default().to_string();
        // An IP literal never reaches the resolver: it is judged here, once.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
            guard::check(&options.allow, &host, ip).map_err(HostError::unreachable)?;
        }
        let proxy_host = guard::proxy_host(options.proxy.as_ref());
        let resolver_allow = match &proxy_host {
            Some(p) => options.allow.clone().with_host(p),
            None => options.allow.clone(),
        };
        let builder = reqwest::Client::builder().dns_resolver(Arc::new(GuardedResolver {
            allow: Arc::new(resolver_allow),
        }));
        let http = guard::with_proxy(builder, options.proxy.as_ref())
            .map_err(|e| HostError::unreachable(format!("outbound proxy: {e}")))?
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HostError::unreachable(format!("HTTP client: {e}")))?;
        let mut auth_value = HeaderValue::from_str(&auth_value)
            .map_err(|_| HostError::unreachable("the token holds characters a header cannot"))?;
        auth_value.set_sensitive(true);
        Ok(Rest {
            http,
            api,
            auth_name: HeaderName::from_static(auth_name),
            auth_value,
            token: SecretString::from(token.to_string()),
            allow: Arc::new(options.allow.clone()),
            check_each_call: proxy_host.is_some(),
            timeout: options.timeout,
        })
    }

    /// The URL of `segments` under the API root, each segment percent-encoded as one (so
    /// `group/project` becomes `group%2Fproject`), with `query`.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.api.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// Sends one call and reads its answer, whatever its status.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Answer, HostError> {
        let url = self.url(segments, query);
        if self.check_each_call {
            let host = url.host_str().unwrap_or_default();
            guard::check_host(&self.allow, host)
                .await
                .map_err(HostError::unreachable)?;
        }
        let mut request = self
            .http
            .request(method, url)
            .header(self.auth_name.clone(), self.auth_value.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| HostError::unreachable(self.scrub(&describe(&e, self.timeout))))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| HostError::unreachable(self.scrub(&describe(&e, self.timeout))))?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// [`Rest::call`], a non-2xx answer made a [`HostError`].
    pub async fn call_ok(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Answer, HostError> {
        let answer = self.call(method, segments, query, body).await?;
        if answer.is_success() {
            Ok(answer)
        } else {
            Err(self.error(&answer))
        }
    }

    /// What a failed answer says, as a [`HostError`] (the token scrubbed from it).
    pub fn error(&self, answer: &Answer) -> HostError {
        let mut e = host_error(answer.status, &answer.headers, &answer.body);
        e.message = self.scrub(&e.message);
        e
    }

    fn scrub(&self, text: &str) -> String {
        let token = self.token.expose_secret();
        if token.is_empty() {
            text.to_string()
        } else {
            text.replace(token, "[redacted]")
        }
    }
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as `T`; a body that is not answers a [`HostError`] naming what was expected.
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, HostError> {
        serde_json::from_slice(&self.body).map_err(|e| HostError {
            status: Some(self.status),
            message: format!("the host's answer is not {what}: {e}"),
            rate_limited: false,
            retry_after: None,
        })
    }

    /// The first value of a header, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A failed answer as a [`HostError`]: its status, the message of its body in one line, and the
/// rate limit (429, or `RateLimit-Remaining: 0` / `X-RateLimit-Remaining: 0` on a 403) with when
/// to try again (`Retry-After` in seconds, else the `RateLimit-Reset` time).
pub fn host_error(status: u16, headers: &HeaderMap, body: &[u8]) -> HostError {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let spent = ["ratelimit-remaining", "x-ratelimit-remaining"]
        .iter()
        .any(|h| text(h).is_some_and(|v| v.trim() == "0"));
    let rate_limited = status == 429 || (spent && matches!(status, 403 | 429));
    let retry_after = retry_after(headers, rate_limited);
    let mut message = error_message(body);
    if message.is_empty() {
        message = reqwest::StatusCode::from_u16(status)
            .map(|s| s.to_string())
            .unwrap_or_else(|_| format!("HTTP {status}"));
    }
    HostError {
        status: Some(status),
        message,
        rate_limited,
        retry_after,
    }
}

/// When to try again: `Retry-After` (seconds), else, when rate limited, the time until the limit's
/// reset (`RateLimit-Reset` / `X-RateLimit-Reset`, Unix seconds).
pub fn retry_after(headers: &HeaderMap, rate_limited: bool) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    text("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .or_else(|| {
            if !rate_limited {
                return None;
            }
            let reset = ["ratelimit-reset", "x-ratelimit-reset"]
                .iter()
                .find_map(|h| text(h).and_then(|v| v.trim().parse::<u64>().ok()))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_secs();
            Some(Duration::from_secs(reset.saturating_sub(now)))
        })
}

/// The message of a host's error body on one line: GitLab's `message` (a string, or an object
/// of field → messages for a validation error) or `error` + `error_description`, Gitea's
/// `message`; else the body's text. Empty when there is nothing to say.
pub fn error_message(body: &[u8]) -> String {
    let said = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => {
            let message = map.get("message").map(flatten).unwrap_or_default();
            let error = map.get("error").map(flatten).unwrap_or_default();
            let description = map
                .get("error_description")
                .map(flatten)
                .unwrap_or_default();
            let mut parts: Vec<String> = Vec::new();
            for p in [message, error, description] {
                if !p.is_empty() && !parts.contains(&p) {
                    parts.push(p);
                }
            }
            if parts.is_empty() && map.is_empty() {
                String::new()
            } else if parts.is_empty() {
                Value::Object(map).to_string()
            } else {
                parts.join(": ")
            }
        }
        Ok(other) => flatten(&other),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    one_line(&said)
}

/// A JSON value as words: strings as they are, arrays joined with `, `, objects as `key value`.
fn flatten(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(flatten)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(", "),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k} {}", flatten(v)))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

/// `text` on one line (control characters and runs of spaces made one space), at most
/// [`MAX_MESSAGE`] characters.
pub fn one_line(text: &str) -> String {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect();
    cut(&words.join(" "), MAX_MESSAGE)
}

/// `text` cut to at most `max` characters (on a character boundary), `…` ending a cut one.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut kept: String = text.chars().take(max.saturating_sub(1)).collect();
    kept.push('…');
    kept
}

/// The page the `Link` header's `rel="next"` points at (its `page` query parameter).
pub fn next_page_from_link(headers: &HeaderMap) -> Option<u32> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|link| {
            let (target, params) = link.split_once(';')?;
            let is_next = params.split(';').any(|p| {
                let p = p.trim();
                p.strip_prefix("rel=").is_some_and(|rel| {
                    rel.trim_matches('"')
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
                })
            });
            if !is_next {
                return None;
            }
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            let url = Url::parse(target).ok()?;
            url.query_pairs()
                .find(|(k, _)| k == "page")
                .and_then(|(_, v)| v.parse::<u32>().ok())
        })
}

/// Every cause of a reqwest error, on one line; the guard's refusal alone when that is why.
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if let Some(refused) = guard::refusal_in(e) {
        return refused.0.clone();
    }
    one_line(&crate::notify::deliver::describe(e, timeout))
}

/// Checks one part of a repository's full name before it goes into a URL path.
pub fn check_name_part(part: &str) -> Result<(), HostError> {
    if part.is_empty() || part == "." || part == ".." || part.chars().any(char::is_control) {
        return Err(HostError {
            status: None,
            message: format!("'{}' is not a repository name", one_line(part)),
            rate_limited: false,
            retry_after: None,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            parse_base_url("https://gitlab.example.com/")
                .unwrap()
                .as_str(),
            "https://gitlab.example.com/"
        );
        assert_eq!(
            parse_base_url("https://example.com/gitlab/")
                .unwrap()
                .as_str(),
            "https://example.com/gitlab"
        );
        for (bad, says) in [
            ("gitlab.example.com", "is not a URL"),
            ("ftp://h", "http:// or https://"),
            ("https://u:p@h", "credentials"),
            ("https://h/?a=1", "query"),
            ("file:///x", "http:// or https://"),
        ] {
            let e = parse_base_url(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn link_next_pages() {
        let h = headers(&[(
            "link",
            "<https://h/api/v4/projects?page=1&per_page=2>; rel=\"prev\", \
             <https://h/api/v4/projects?page=3&per_page=2>; rel=\"next\", \
             <https://h/api/v4/projects?page=9&per_page=2>; rel=\"last\"",
        )]);
        assert_eq!(next_page_from_link(&h), Some(3));
        let last = headers(&[("link", "<https://h/x?page=1>; rel=\"first\"")]);
        assert_eq!(next_page_from_link(&last), None);
        assert_eq!(next_page_from_link(&HeaderMap::new()), None);
        let junk = headers(&[("link", "nonsense, <>; rel=next")]);
        assert_eq!(next_page_from_link(&junk), None);
    }

    #[test]
    fn error_messages_from_bodies() {
        let cases: &[(&str, &str)] = &[
            (r#"{"message":"401 Unauthorized"}"#, "401 Unauthorized"),
            (
                r#"{"message":{"url":["is blocked: Requests to localhost are not allowed"]}}"#,
                "url is blocked: Requests to localhost are not allowed",
            ),
            (
                r#"{"error":"insufficient_scope","error_description":"The request requires higher privileges."}"#,
                "insufficient_scope: The request requires higher privileges.",
            ),
            (
                r#"{"message":"token is required","url":"https://g/api/swagger"}"#,
                "token is required",
            ),
            ("Bad\ngateway\r\n", "Bad gateway"),
            ("", ""),
        ];
        for (body, want) in cases {
            assert_eq!(error_message(body.as_bytes()), *want, "{body}");
        }
        assert!(error_message("x".repeat(1000).as_bytes()).chars().count() <= MAX_MESSAGE);
    }

    #[test]
    fn rate_limits() {
        let e = host_error(429, &headers(&[("retry-after", "42")]), b"Retry later");
        assert!(e.rate_limited);
        assert_eq!(e.retry_after, Some(Duration::from_secs(42)));
        assert_eq!(e.message, "Retry later");
        let e = host_error(
            403,
            &headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "1")]),
            b"",
        );
        assert!(e.rate_limited);
        assert_eq!(e.retry_after, Some(Duration::ZERO));
        assert_eq!(e.message, "403 Forbidden");
        let e = host_error(403, &headers(&[("ratelimit-remaining", "5")]), b"{}");
        assert!(!e.rate_limited && e.retry_after.is_none());
    }
}
