//! The API client of the command line: `KILN_URL` + `KILN_TOKEN`, JSON in and out, and every
//! failure as one [`CliError`] that prints as one line.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

/// Whatever stops a command; `main` prints it as `kiln: {self}` and exits 1.
#[derive(Debug)]
pub enum CliError {
    /// The API answered with an error body `{"error": {"code", "message", "field"}}`.
    Api {
        status: StatusCode,
        code: String,
        message: String,
        field: Option<String>,
    },
    /// No answer at all from the server.
    Unreachable { url: String, reason: String },
    /// Anything else, said in one line (a failed build, a bad argument, an unreadable file).
    Message(String),
    /// Already explained on stderr (e.g. every error of a rules file): exit 1, print nothing more.
    Reported,
    /// Whoever reads our output went away (`kiln logs ID | head`): stop quietly.
    StdoutClosed,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Api { message, field, .. } => match field {
                Some(field) => write!(f, "{message} ({field})"),
                None => write!(f, "{message}"),
            },
            CliError::Unreachable { url, reason } => {
                write!(
                    f,
                    "cannot reach kiln at {url}: {reason} (is KILN_URL right?)"
                )
            }
            CliError::Message(m) => f.write_str(m),
            CliError::Reported | CliError::StdoutClosed => Ok(()),
        }
    }
}

impl CliError {
    pub fn msg(m: impl Into<String>) -> Self {
        CliError::Message(m.into())
    }

    pub fn status(&self) -> Option<StatusCode> {
        match self {
            CliError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type CliResult<T> = Result<T, CliError>;

/// How long a plain request may take; streams (logs) have no limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Items per page when reading a whole list (the API's maximum).
const PAGE_SIZE: u32 = 200;

pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Client {
    /// A client for the kiln at `url` (`http://host:port`, maybe with a path prefix).
    pub fn new(url: &str, token: Option<String>) -> CliResult<Client> {
        let base = Url::parse(url.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                CliError::msg(format!(
                    "KILN_URL must be an http:// or https:// URL, like http://127.0.0.1:8080 (got \"{url}\")"
                ))
            })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("kiln-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::msg(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            token: token.filter(|t| !t.trim().is_empty()),
        })
    }

    /// `{base}/api/v1/{segments…}?{query}`, each segment percent-encoded.
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("an http(s) URL has a path");
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url.set_query(None);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends a request and returns the response when it is a success; an error body becomes
    /// [`CliError::Api`]. `timeout: None` for streams.
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> CliResult<reqwest::Response> {
        let token = self.token.as_deref().ok_or_else(|| {
            CliError::msg("no API token: set KILN_TOKEN (or pass --token) to a kiln API token")
        })?;
        let mut req = self.http.request(method, url.clone()).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(body);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Err(api_error(status, &text))
    }

    /// A request whose answer is JSON (`null` for an empty answer, like a 204).
    pub async fn json(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> CliResult<Value> {
        self.json_timeout(method, segments, query, body, REQUEST_TIMEOUT)
            .await
    }

    pub async fn json_timeout(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
        timeout: Duration,
    ) -> CliResult<Value> {
        let url = self.url(segments, query);
        let resp = self.send(method, url, body, Some(timeout)).await?;
        let text = resp.text().await.map_err(|e| self.transport_error(&e))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| {
            CliError::msg(format!(
                "kiln answered something that is not JSON ({e}): {}",
                first_chars(&text, 200)
            ))
        })
    }

    pub async fn get(&self, segments: &[&str], query: &[(&str, &str)]) -> CliResult<Value> {
        self.json(Method::GET, segments, query, None).await
    }

    /// Every item of a paged list (`?limit=&cursor=`, the next cursor in `X-Next-Cursor`), in the
    /// server's order.
    pub async fn get_all(&self, segments: &[&str], query: &[(&str, &str)]) -> CliResult<Value> {
        let page_size = PAGE_SIZE.to_string();
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = query.to_vec();
            q.push(("limit", &page_size));
            if let Some(c) = &cursor {
                q.push(("cursor", c));
            }
            let url = self.url(segments, &q);
            let resp = self
                .send(Method::GET, url, None, Some(REQUEST_TIMEOUT))
                .await?;
            let next = resp
                .headers()
                .get("x-next-cursor")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let text = resp.text().await.map_err(|e| self.transport_error(&e))?;
            let page: Vec<Value> = serde_json::from_str(&text).map_err(|e| {
                CliError::msg(format!(
                    "kiln answered something that is not a JSON list ({e}): {}",
                    first_chars(&text, 200)
                ))
            })?;
            let empty = page.is_empty();
            items.extend(page);
            match next {
                Some(next) if !empty && cursor.as_deref() != Some(next.as_str()) => {
                    cursor = Some(next)
                }
                _ => break,
            }
        }
        Ok(Value::Array(items))
    }

    /// A GET where 404 means "there is none".
    pub async fn get_optional(&self, segments: &[&str]) -> CliResult<Option<Value>> {
        match self.get(segments, &[]).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn post(&self, segments: &[&str], body: &Value) -> CliResult<Value> {
        self.json(Method::POST, segments, &[], Some(body)).await
    }

    /// A text stream (`GET /builds/{id}/log?follow=true`), no time limit.
    pub async fn stream(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> CliResult<reqwest::Response> {
        self.send(Method::GET, self.url(segments, query), None, None)
            .await
    }

    /// A failure to talk to the server at all, in one line.
    pub fn transport_error(&self, e: &reqwest::Error) -> CliError {
        let url = self.base.as_str().trim_end_matches('/').to_string();
        let reason = if e.is_timeout() {
            "no answer in time".to_string()
        } else {
            // The innermost cause says it best: "Connection refused (os error 111)".
            let mut cause: &dyn std::error::Error = e;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            cause.to_string()
        };
        if e.is_connect() || e.is_timeout() || e.is_request() {
            CliError::Unreachable { url, reason }
        } else {
            CliError::msg(format!("talking to kiln at {url} failed: {reason}"))
        }
    }
}

/// The JSON error body of an API answer; something else (a proxy's page) is shown cut short.
pub fn api_error(status: StatusCode, text: &str) -> CliError {
    let body: Option<Value> = serde_json::from_str(text).ok();
    let error = body.as_ref().map(|b| &b["error"]);
    match error.and_then(|e| e["message"].as_str()) {
        Some(message) => CliError::Api {
            status,
            code: error
                .and_then(|e| e["code"].as_str())
                .unwrap_or_default()
                .to_string(),
            message: message.to_string(),
            field: error.and_then(|e| e["field"].as_str()).map(str::to_string),
        },
        None => CliError::Api {
            status,
            code: String::new(),
            message: if text.trim().is_empty() {
                format!("kiln answered {status}")
            } else {
                format!("kiln answered {status}: {}", first_chars(text.trim(), 200))
            },
            field: None,
        },
    }
}

fn first_chars(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().count() > n {
        out.push('…');
    }
    out.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_built_from_encoded_segments() {
        let c = Client::new("http://127.0.0.1:8080", None).unwrap();
        assert_eq!(
            c.url(
                &["namespaces", "acme", "repos"],
                &[("include_hidden", "true")]
            )
            .as_str(),
            "http://127.0.0.1:8080/api/v1/namespaces/acme/repos?include_hidden=true"
        );
        assert_eq!(
            c.url(&["builds", "a/b c"], &[]).as_str(),
            "http://127.0.0.1:8080/api/v1/builds/a%2Fb%20c"
        );
        let prefixed = Client::new("https://ci.example.com/kiln/", None).unwrap();
        assert_eq!(
            prefixed.url(&["namespaces"], &[]).as_str(),
            "https://ci.example.com/kiln/api/v1/namespaces"
        );
        for bad in ["127.0.0.1:8080", "ftp://x", "", "not a url"] {
            assert!(Client::new(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_bodies() {
        let e = api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"error": {"code": "too_long", "message": "summary must be short", "field": "summary"}}"#,
        );
        assert_eq!(e.to_string(), "summary must be short (summary)");
        let e = api_error(
            StatusCode::NOT_FOUND,
            r#"{"error": {"code": "not_found", "message": "build x not found", "field": null}}"#,
        );
        assert_eq!(e.to_string(), "build x not found");
        assert_eq!(e.status(), Some(StatusCode::NOT_FOUND));
        let e = api_error(StatusCode::BAD_GATEWAY, "<html>\nbad gateway</html>");
        assert_eq!(
            e.to_string(),
            "kiln answered 502 Bad Gateway: <html> bad gateway</html>"
        );
        assert_eq!(
            api_error(StatusCode::UNAUTHORIZED, "").to_string(),
            "kiln answered 401 Unauthorized"
        );
    }
}
