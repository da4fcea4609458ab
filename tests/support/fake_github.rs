//! A local stand-in for GitHub's REST API (api.github.com cannot be reached from here): an axum
//! server on a free loopback port, on its own thread and runtime (usable from sync and async
//! tests), answering with the shapes of GitHub's published REST docs and recording every request.
//!
//! - Personal tokens ([`FakeGitHub::add_token`]) and the `X-OAuth-Scopes` header they come with;
//!   an App ([`FakeGitHub::set_app`]) whose JWTs are checked (RS256 signature with the public key,
//!   `iss` = App id, `exp` at most 10 minutes ahead) and whose installation tokens carry an
//!   `expires_at` ([`FakeGitHub::set_token_lifetime`]) and stop working after it.
//! - Repositories ([`FakeGitHub::add_repo`]) listed by `GET /user/repos` and
//!   `GET /installation/repositories`, paged with real `Link` headers; `GET /repos/{o}/{r}`.
//! - Hooks (`POST/PATCH/DELETE /repos/{o}/{r}/hooks…`) and commit statuses kept in memory:
//!   [`FakeGitHub::hooks`], [`FakeGitHub::statuses`].
//! - [`FakeGitHub::fail_next`] makes the next N calls of a route answer a given status, headers
//!   and body; [`Failure`] has GitHub's own 401, 403 rate limit, 404, 422 and 500.
//! - Clone URLs point at [`FakeGitHub::set_git_base`] (default `{url}/git`): give it a
//!   `GitHttpServer` URL (with basic auth `x-access-token` / the token) to serve a private fetch.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

const DOCS: &str = "https://docs.github.com/rest";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The query string, without `?` (empty when none).
    pub query: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Failure {
    pub fn bad_credentials() -> Failure {
        Failure {
            status: 401,
            headers: vec![],
            body: json!({"message": "Bad credentials", "documentation_url": DOCS, "status": "401"}),
        }
    }

    /// The primary rate limit spent, resetting `reset_in` from now.
    pub fn rate_limited(reset_in: Duration) -> Failure {
        let reset = chrono::Utc::now().timestamp() + reset_in.as_secs() as i64;
        Failure {
            status: 403,
            headers: vec![
                ("x-ratelimit-limit".into(), "5000".into()),
                ("x-ratelimit-remaining".into(), "0".into()),
                ("x-ratelimit-used".into(), "5000".into()),
                ("x-ratelimit-reset".into(), reset.to_string()),
            ],
            body: json!({
                "message": "API rate limit exceeded for user ID 1.",
                "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"
            }),
        }
    }

    /// A secondary rate limit, with `Retry-After`.
    pub fn secondary_rate_limit(retry_after: u64) -> Failure {
        Failure {
            status: 403,
            headers: vec![("retry-after".into(), retry_after.to_string())],
            body: json!({
                "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                "documentation_url": DOCS
            }),
        }
    }

    pub fn not_found() -> Failure {
        Failure {
            status: 404,
            headers: vec![],
            body: json!({"message": "Not Found", "documentation_url": DOCS, "status": "404"}),
        }
    }

    pub fn validation_failed(errors: Value) -> Failure {
        Failure {
            status: 422,
            headers: vec![],
            body: json!({"message": "Validation Failed", "errors": errors, "documentation_url": DOCS, "status": "422"}),
        }
    }

    pub fn server_error() -> Failure {
        Failure {
            status: 500,
            headers: vec![],
            body: json!({"message": "Server Error"}),
        }
    }
}

struct Script {
    method: Method,
    path: String,
    times: usize,
    failure: Failure,
}

#[derive(Clone)]
struct App {
    app_id: u64,
    installation_id: u64,
    public_key_pem: String,
    account: String,
    permissions: Value,
}

#[derive(Default)]
struct State {
    url: String,
    git_base: Option<String>,
    requests: Vec<Recorded>,
    /// token → login.
    tokens: HashMap<String, String>,
    scopes: Option<String>,
    app: Option<App>,
    /// installation token → expires at (unix seconds).
    installation_tokens: HashMap<String, i64>,
    token_lifetime: i64,
    minted: u64,
    /// full name → private.
    repos: Vec<(String, bool)>,
    hooks: HashMap<String, Vec<Value>>,
    next_hook_id: u64,
    statuses: Vec<(String, String, Value)>,
    scripts: Vec<Script>,
}

/// The fake; stops when dropped.
pub struct FakeGitHub {
    url: String,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A fresh RSA key pair as GitHub hands an App's key out: (PKCS#1 private PEM, public PEM).
pub fn app_key_pair() -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("app.pem");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    run(&[
        "genrsa",
        "-traditional",
        "-out",
        key.to_str().unwrap(),
        "2048",
    ]);
    let public = run(&["rsa", "-in", key.to_str().unwrap(), "-pubout"]);
    (
        std::fs::read_to_string(&key).unwrap(),
        String::from_utf8(public).unwrap(),
    )
}

impl FakeGitHub {
    pub fn start() -> FakeGitHub {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            url: url.clone(),
            token_lifetime: 3600,
            next_hook_id: 1000,
            ..State::default()
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(
                    move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                        let state = shared.clone();
                        async move { handle(&state, method, uri, headers, body) }
                    },
                );
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        FakeGitHub {
            url,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The API base (`http://127.0.0.1:PORT`), what `KILN_GITHUB_API_URL` is set to.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }

    /// A personal access token of `login`.
    pub fn add_token(&self, token: &str, login: &str) {
        self.state
            .lock()
            .unwrap()
            .tokens
            .insert(token.into(), login.into());
    }

    /// The `X-OAuth-Scopes` header `GET /user` answers (`None`: no header, a fine-grained token).
    pub fn set_scopes(&self, scopes: Option<&str>) {
        self.state.lock().unwrap().scopes = scopes.map(str::to_string);
    }

    /// An App with one installation on `account`, its permissions (`{"contents":"read"}`).
    pub fn set_app(
        &self,
        app_id: u64,
        installation_id: u64,
        public_key_pem: &str,
        account: &str,
        permissions: Value,
    ) {
        self.state.lock().unwrap().app = Some(App {
            app_id,
            installation_id,
            public_key_pem: public_key_pem.into(),
            account: account.into(),
            permissions,
        });
    }

    /// How long minted installation tokens live (GitHub: one hour).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state.lock().unwrap().token_lifetime = lifetime.as_secs() as i64;
    }

    /// How many installation tokens were minted.
    pub fn minted(&self) -> u64 {
        self.state.lock().unwrap().minted
    }

    /// The installation tokens minted so far.
    pub fn installation_tokens(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .installation_tokens
            .keys()
            .cloned()
            .collect()
    }

    /// Where clone URLs point (`{git_base}/{owner}/{name}.git`).
    pub fn set_git_base(&self, base: &str) {
        self.state.lock().unwrap().git_base = Some(base.trim_end_matches('/').to_string());
    }

    pub fn add_repo(&self, full_name: &str, private: bool) {
        let mut s = self.state.lock().unwrap();
        s.repos.push((full_name.into(), private));
        s.repos.sort();
    }

    /// `count` repositories `{owner}/{prefix}-NNN` (public), for paging.
    pub fn add_many(&self, owner: &str, prefix: &str, count: usize) {
        for i in 0..count {
            self.add_repo(&format!("{owner}/{prefix}-{i:03}"), false);
        }
    }

    /// The next `times` calls of `method path` (path without query) answer `failure`.
    pub fn fail_next(&self, method: &str, path: &str, times: usize, failure: Failure) {
        self.state.lock().unwrap().scripts.push(Script {
            method: method.parse().unwrap(),
            path: path.into(),
            times,
            failure,
        });
    }

    /// The hooks on `repo`, as `GET /repos/{o}/{r}/hooks` would list them (plus the secret).
    pub fn hooks(&self, repo: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .hooks
            .get(repo)
            .cloned()
            .unwrap_or_default()
    }

    /// The statuses set on `repo` at `sha`, oldest first.
    pub fn statuses(&self, repo: &str, sha: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .statuses
            .iter()
            .filter(|(r, s, _)| r == repo && s == sha)
            .map(|(_, _, v)| v.clone())
            .collect()
    }
}

fn answer(status: u16, headers: &[(String, String)], body: Value) -> Response {
    let mut response = (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json; charset=utf-8")],
        if status == 204 {
            String::new()
        } else {
            body.to_string()
        },
    )
        .into_response();
    for (k, v) in headers {
        response
            .headers_mut()
            .insert::<axum::http::HeaderName>(k.parse().unwrap(), v.parse().unwrap());
    }
    response
}

fn ok(status: u16, body: Value) -> Response {
    answer(
        status,
        &[
            ("x-ratelimit-limit".into(), "5000".into()),
            ("x-ratelimit-remaining".into(), "4999".into()),
        ],
        body,
    )
}

fn failure(f: Failure) -> Response {
    answer(f.status, &f.headers, f.body)
}

enum Caller {
    User(String),
    Installation,
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token "))
        .map(str::to_string)
}

fn caller(s: &State, headers: &HeaderMap) -> Option<Caller> {
    let token = bearer(headers)?;
    if let Some(login) = s.tokens.get(&token) {
        return Some(Caller::User(login.clone()));
    }
    let expires = *s.installation_tokens.get(&token)?;
    (expires > chrono::Utc::now().timestamp()).then_some(Caller::Installation)
}

fn jwt_ok(app: &App, headers: &HeaderMap) -> bool {
    #[derive(serde::Deserialize)]
    struct Claims {
        iss: String,
        iat: i64,
        exp: i64,
    }
    let Some(jwt) = bearer(headers) else {
        return false;
    };
    let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(app.public_key_pem.as_bytes()) else {
        return false;
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iss"]);
    validation.leeway = 0;
    let Ok(data) = jsonwebtoken::decode::<Claims>(&jwt, &key, &validation) else {
        return false;
    };
    let now = chrono::Utc::now().timestamp();
    data.claims.iss == app.app_id.to_string()
        && data.claims.exp <= now + 600
        && data.claims.iat <= now
}

fn repo_json(s: &State, full_name: &str, private: bool) -> Value {
    let git = s
        .git_base
        .clone()
        .unwrap_or_else(|| format!("{}/git", s.url));
    let (owner, name) = full_name.split_once('/').unwrap();
    json!({
        "id": full_name.bytes().map(u64::from).sum::<u64>(),
        "name": name,
        "full_name": full_name,
        "owner": {"login": owner, "type": "User"},
        "private": private,
        "html_url": format!("{}/{full_name}", s.url),
        "clone_url": format!("{git}/{full_name}.git"),
        "default_branch": "main",
        "visibility": if private { "private" } else { "public" },
    })
}

/// A page of `all` and its `Link` header, as GitHub pages (`per_page` ≤ 100, default 30).
fn paged(s: &State, path: &str, query: &str, all: Vec<Value>) -> (Vec<Value>, Option<String>) {
    let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let per_page = params
        .get("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = params
        .get("page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let last = all.len().div_ceil(per_page).max(1);
    let items = all
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let link_to = |p: usize, rel: &str| {
        let mut q: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| *k != "page")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        q.sort();
        q.push(("page".into(), p.to_string()));
        let q = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(q)
            .finish();
        format!("<{}{path}?{q}>; rel=\"{rel}\"", s.url)
    };
    let mut links = vec![];
    if page > 1 {
        links.push(link_to(page - 1, "prev"));
    }
    if page < last {
        links.push(link_to(page + 1, "next"));
        links.push(link_to(last, "last"));
    }
    if page > 1 {
        links.push(link_to(1, "first"));
    }
    (items, (!links.is_empty()).then(|| links.join(", ")))
}

fn handle(
    state: &Mutex<State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = state.lock().unwrap();
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    s.requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    if let Some(i) = s
        .scripts
        .iter()
        .position(|x| x.method == method && x.path == path && x.times > 0)
    {
        s.scripts[i].times -= 1;
        let f = s.scripts[i].failure.clone();
        if s.scripts[i].times == 0 {
            s.scripts.remove(i);
        }
        return failure(f);
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);

    // The App's own routes take its JWT.
    if segments.first() == Some(&"app") {
        let Some(app) = s.app.clone() else {
            return failure(Failure::not_found());
        };
        if !jwt_ok(&app, &headers) {
            return answer(
                401,
                &[],
                json!({"message": "A JSON web token could not be decoded", "documentation_url": DOCS}),
            );
        }
        let id = app.installation_id.to_string();
        return match (method.as_str(), segments.as_slice()) {
            ("GET", ["app", "installations", i]) if *i == id => ok(
                200,
                json!({
                    "id": app.installation_id,
                    "app_id": app.app_id,
                    "account": {"login": app.account, "type": "Organization"},
                    "target_type": "Organization",
                    "permissions": app.permissions,
                    "repository_selection": "all",
                }),
            ),
            ("POST", ["app", "installations", i, "access_tokens"]) if *i == id => {
                s.minted += 1;
                let token = format!("ghs_fake{:032}", s.minted);
                let expires = chrono::Utc::now().timestamp() + s.token_lifetime;
                s.installation_tokens.insert(token.clone(), expires);
                let expires_at = chrono::DateTime::from_timestamp(expires, 0)
                    .unwrap()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                ok(
                    201,
                    json!({
                        "token": token,
                        "expires_at": expires_at,
                        "permissions": app.permissions,
                        "repository_selection": "all",
                    }),
                )
            }
            _ => failure(Failure::not_found()),
        };
    }

    let Some(who) = caller(&s, &headers) else {
        return failure(Failure::bad_credentials());
    };
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["user"]) => match who {
            Caller::User(login) => {
                let mut h = vec![
                    ("x-ratelimit-limit".to_string(), "5000".to_string()),
                    ("x-ratelimit-remaining".to_string(), "4999".to_string()),
                ];
                if let Some(scopes) = &s.scopes {
                    h.push(("x-oauth-scopes".into(), scopes.clone()));
                }
                answer(200, &h, json!({"login": login, "id": 1, "type": "User"}))
            }
            Caller::Installation => answer(
                403,
                &[],
                json!({"message": "Resource not accessible by integration", "documentation_url": DOCS}),
            ),
        },
        ("GET", ["user", "repos"]) => {
            let all = s.repos.iter().map(|(n, p)| repo_json(&s, n, *p)).collect();
            let (items, link) = paged(&s, &path, &query, all);
            let mut h = vec![];
            if let Some(link) = link {
                h.push(("link".to_string(), link));
            }
            answer(200, &h, Value::Array(items))
        }
        ("GET", ["installation", "repositories"]) => {
            let all: Vec<Value> = s.repos.iter().map(|(n, p)| repo_json(&s, n, *p)).collect();
            let total = all.len();
            let (items, link) = paged(&s, &path, &query, all);
            let mut h = vec![];
            if let Some(link) = link {
                h.push(("link".to_string(), link));
            }
            answer(
                200,
                &h,
                json!({"total_count": total, "repositories": items}),
            )
        }
        (_, ["repos", owner, name, rest @ ..]) => {
            let full = format!("{owner}/{name}");
            let Some(private) = s.repos.iter().find(|(n, _)| *n == full).map(|(_, p)| *p) else {
                return failure(Failure::not_found());
            };
            repo_route(&mut s, method.as_str(), &full, private, rest, body)
        }
        _ => failure(Failure::not_found()),
    }
}

fn repo_route(
    s: &mut State,
    method: &str,
    full: &str,
    private: bool,
    rest: &[&str],
    body: Value,
) -> Response {
    match (method, rest) {
        ("GET", []) => ok(200, repo_json(s, full, private)),
        ("POST", ["hooks"]) => {
            let url = body.pointer("/config/url").and_then(Value::as_str);
            if url.is_none_or(str::is_empty) {
                return failure(Failure::validation_failed(
                    json!([{"resource": "Hook", "code": "custom", "message": "Config must contain a url"}]),
                ));
            }
            if s.hooks.get(full).is_some_and(|hooks| {
                hooks
                    .iter()
                    .any(|h| h.pointer("/config/url").and_then(Value::as_str) == url)
            }) {
                return failure(Failure::validation_failed(
                    json!([{"resource": "Hook", "code": "custom", "message": "Hook already exists on this repository"}]),
                ));
            }
            s.next_hook_id += 1;
            let id = s.next_hook_id;
            let mut hook = body.clone();
            hook["id"] = json!(id);
            hook["type"] = json!("Repository");
            s.hooks.entry(full.to_string()).or_default().push(hook);
            let mut shown = body;
            shown["id"] = json!(id);
            if shown.pointer("/config/secret").is_some() {
                shown["config"]["secret"] = json!("********");
            }
            ok(201, shown)
        }
        ("PATCH", ["hooks", id]) | ("DELETE", ["hooks", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let hooks = s.hooks.entry(full.to_string()).or_default();
            let Some(i) = hooks.iter().position(|h| h["id"] == json!(id)) else {
                return failure(Failure::not_found());
            };
            if method == "DELETE" {
                hooks.remove(i);
                return ok(204, Value::Null);
            }
            if let Some(config) = body.get("config").and_then(Value::as_object) {
                for (k, v) in config {
                    hooks[i]["config"][k] = v.clone();
                }
            }
            if let Some(active) = body.get("active") {
                hooks[i]["active"] = active.clone();
            }
            let mut shown = hooks[i].clone();
            shown["config"]["secret"] = json!("********");
            ok(200, shown)
        }
        ("POST", ["statuses", sha]) => {
            let state = body.get("state").and_then(Value::as_str).unwrap_or("");
            if !["error", "failure", "pending", "success"].contains(&state) {
                return failure(Failure::validation_failed(
                    json!([{"resource": "Status", "field": "state", "code": "custom", "message": "state is not included in the list"}]),
                ));
            }
            let too_long = body
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| d.chars().count() > 140);
            if too_long {
                return failure(Failure::validation_failed(
                    json!([{"resource": "Status", "field": "description", "code": "custom", "message": "description is too long (maximum is 140 characters)"}]),
                ));
            }
            s.statuses
                .push((full.to_string(), sha.to_string(), body.clone()));
            ok(201, body)
        }
        _ => failure(Failure::not_found()),
    }
}
