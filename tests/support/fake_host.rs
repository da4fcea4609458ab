//! What the fakes of GitLab ([`super::fake_gitlab`]) and Gitea ([`super::fake_gitea`]) share: the
//! recorded request, the failure knobs, serving on a loopback port, `Link` paging and a percent
//! decoder for path segments.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// One request a fake host received.
#[derive(Clone, Debug)]
pub struct FakeRequest {
    pub method: String,
    /// The path as sent (percent-encoding kept: `/api/v4/projects/acme%2Fapp`).
    pub path: String,
    /// The query's pairs, decoded, in order.
    pub query: Vec<(String, String)>,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl FakeRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: body is not JSON ({e}): {}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// `METHOD /path` (the path as sent).
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// An answer a fake gives instead of doing the call, in the host's own shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// 401: bad or revoked token.
    Unauthorized,
    /// 403: the token lacks a scope or the user a permission.
    Forbidden,
    /// 404: not there, or not visible to the token.
    NotFound,
    /// 422 (GitLab: 422 on hooks, 400 elsewhere): the host refuses the body.
    Invalid,
    /// 429 with `Retry-After` (and the host's rate-limit headers).
    RateLimited { retry_after: u64 },
    /// 500.
    ServerError,
}

struct Knob {
    method: String,
    path_contains: String,
    left: usize,
    failure: Failure,
}

/// The failures waiting for the next calls of some routes.
#[derive(Default)]
pub struct Knobs(Vec<Knob>);

impl Knobs {
    pub fn add(&mut self, method: &str, path_contains: &str, times: usize, failure: Failure) {
        self.0.push(Knob {
            method: method.to_ascii_uppercase(),
            path_contains: path_contains.to_string(),
            left: times,
            failure,
        });
    }

    /// The failure this call answers, if a knob holds one for it (used up one at a time).
    pub fn take(&mut self, method: &str, path: &str) -> Option<Failure> {
        let knob = self
            .0
            .iter_mut()
            .find(|k| k.left > 0 && k.method == method && path.contains(&k.path_contains))?;
        knob.left -= 1;
        Some(knob.failure.clone())
    }
}

/// Serves `router` on a free loopback port; answers `http://127.0.0.1:PORT` and the task.
pub async fn serve(router: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a fake host");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (url, task)
}

/// Reads a request whole and records it.
pub async fn read(
    request: axum::extract::Request,
    recorded: &Arc<Mutex<Vec<FakeRequest>>>,
) -> FakeRequest {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let query = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let r = FakeRequest {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query,
        headers,
        body,
    };
    recorded.lock().unwrap().push(r.clone());
    r
}

/// A path segment percent-decoded (`acme%2Fapp` → `acme/app`).
pub fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A JSON answer.
pub fn json(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

/// An answer with extra headers.
pub fn with_headers(mut response: Response, headers: &[(&str, String)]) -> Response {
    let map: &mut HeaderMap = response.headers_mut();
    for (name, value) in headers {
        map.append(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    response
}

/// A plain-text answer.
pub fn text(status: u16, body: &str) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// One page of `items` (page from 1) and the paging headers a host sends: `Link` with `next`,
/// `prev`, `first`, `last` pointing at `url_base` + the request's query with `page` replaced.
pub fn page_of<T: Clone>(
    items: &[T],
    page: usize,
    per_page: usize,
    self_url: &str,
    query: &[(String, String)],
) -> (Vec<T>, Vec<String>, usize) {
    let page = page.max(1);
    let per_page = per_page.max(1);
    let total_pages = items.len().div_ceil(per_page).max(1);
    let start = (page - 1).saturating_mul(per_page).min(items.len());
    let end = (start + per_page).min(items.len());
    let link_to = |p: usize| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in query.iter().filter(|(k, _)| k != "page") {
            q.append_pair(k, v);
        }
        q.append_pair("page", &p.to_string());
        format!("<{self_url}?{}>", q.finish())
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", link_to(page - 1)));
    }
    if page < total_pages {
        links.push(format!("{}; rel=\"next\"", link_to(page + 1)));
    }
    links.push(format!("{}; rel=\"first\"", link_to(1)));
    links.push(format!("{}; rel=\"last\"", link_to(total_pages)));
    (items[start..end].to_vec(), links, total_pages)
}
