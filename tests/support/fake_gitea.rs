//! A Gitea (or Forgejo) instance's REST API (v1) as its swagger describes it, on a loopback port:
//! the calls kiln makes (user, the user's repositories and repository search with `Link` and
//! `X-Total-Count` paging, repository hooks, commit statuses) with Gitea's status codes and error
//! bodies (`{"message", "url"}`). It checks `Authorization: token T`, stores hooks and statuses,
//! and records every request. [`FakeGitea::fail_next`] makes the next calls of a route fail.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};

use super::fake_host::{self, Failure, FakeRequest, Knobs, json as answer};

pub struct FakeGitea {
    url: String,
    state: Arc<Mutex<GiteaState>>,
    recorded: Arc<Mutex<Vec<FakeRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitea {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone, Debug)]
pub struct GiteaRepo {
    pub id: u64,
    pub full_name: String,
    pub private: bool,
}

/// A hook the fake holds: its repository and the body it was created with, then patched with.
#[derive(Clone, Debug)]
pub struct GiteaHook {
    pub id: u64,
    pub full_name: String,
    pub body: Value,
}

#[derive(Clone, Debug)]
pub struct GiteaStatus {
    pub full_name: String,
    pub sha: String,
    pub body: Value,
}

struct GiteaState {
    url: String,
    token: String,
    login: String,
    repos: Vec<GiteaRepo>,
    hooks: Vec<GiteaHook>,
    statuses: Vec<GiteaStatus>,
    next_id: u64,
    knobs: Knobs,
}

type Shared = (Arc<Mutex<GiteaState>>, Arc<Mutex<Vec<FakeRequest>>>);

impl FakeGitea {
    pub async fn start(token: &str, login: &str) -> FakeGitea {
        let state = Arc::new(Mutex::new(GiteaState {
            url: String::new(),
            token: token.to_string(),
            login: login.to_string(),
            repos: Vec::new(),
            hooks: Vec::new(),
            statuses: Vec::new(),
            next_id: 1,
            knobs: Knobs::default(),
        }));
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let router = axum::Router::new()
            .fallback(handle)
            .with_state((state.clone(), recorded.clone()));
        let (url, task) = fake_host::serve(router).await;
        state.lock().unwrap().url = url.clone();
        FakeGitea {
            url,
            state,
            recorded,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`: the instance's base URL (the API is under `/api/v1`).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn requests(&self) -> Vec<FakeRequest> {
        self.recorded.lock().unwrap().clone()
    }

    pub fn clear_requests(&self) {
        self.recorded.lock().unwrap().clear();
    }

    pub fn add_repo(&self, full_name: &str, private: bool) -> u64 {
        let mut s = self.state.lock().unwrap();
        let id = s.next_id;
        s.next_id += 1;
        s.repos.push(GiteaRepo {
            id,
            full_name: full_name.to_string(),
            private,
        });
        id
    }

    pub fn hooks(&self) -> Vec<GiteaHook> {
        self.state.lock().unwrap().hooks.clone()
    }

    pub fn statuses(&self) -> Vec<GiteaStatus> {
        self.state.lock().unwrap().statuses.clone()
    }

    /// The next `times` calls of `method` on a path holding `path_contains` answer `failure`.
    pub fn fail_next(&self, method: &str, path_contains: &str, times: usize, failure: Failure) {
        self.state
            .lock()
            .unwrap()
            .knobs
            .add(method, path_contains, times, failure);
    }
}

fn api_error(url: &str, status: u16, message: &str) -> Response {
    answer(
        status,
        json!({"message": message, "url": format!("{url}/api/swagger")}),
    )
}

fn not_found(url: &str) -> Response {
    answer(
        404,
        json!({
            "errors": ["repository does not exist"],
            "message": "The target couldn't be found.",
            "url": format!("{url}/api/swagger"),
        }),
    )
}

fn failure_answer(url: &str, failure: &Failure) -> Response {
    match failure {
        Failure::Unauthorized => api_error(url, 401, "user does not exist [uid: 0, name: ]"),
        Failure::Forbidden => api_error(
            url,
            403,
            "token does not have at least one of required scope(s): [write:repository]",
        ),
        Failure::NotFound => not_found(url),
        Failure::Invalid => api_error(url, 422, "Invalid url: must be http:// or https://"),
        Failure::RateLimited { retry_after } => fake_host::with_headers(
            fake_host::text(429, "Too Many Requests\n"),
            &[("retry-after", retry_after.to_string())],
        ),
        Failure::ServerError => api_error(url, 500, "internal error"),
    }
}

fn repo_json(url: &str, r: &GiteaRepo) -> Value {
    let (owner, name) = r.full_name.split_once('/').unwrap_or(("", &r.full_name));
    json!({
        "id": r.id,
        "owner": {"id": 3, "login": owner, "username": owner},
        "name": name,
        "full_name": r.full_name,
        "description": "",
        "empty": false,
        "private": r.private,
        "fork": false,
        "html_url": format!("{url}/{}", r.full_name),
        "ssh_url": format!("git@127.0.0.1:{}.git", r.full_name),
        "clone_url": format!("{url}/{}.git", r.full_name),
        "default_branch": "main",
        "permissions": {"admin": true, "push": true, "pull": true},
    })
}

fn hook_json(h: &GiteaHook) -> Value {
    // Gitea never answers the secret.
    json!({
        "id": h.id,
        "type": h.body["type"],
        "config": {
            "url": h.body["config"]["url"],
            "content_type": h.body["config"]["content_type"],
        },
        "events": h.body["events"],
        "active": h.body["active"],
        "created_at": "2026-01-02T03:04:05Z",
        "updated_at": "2026-01-02T03:04:05Z",
    })
}

fn paged(url: &str, r: &FakeRequest, path: &str, repos: &[GiteaRepo], wrap: bool) -> Response {
    let limit: usize = r
        .query("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .clamp(1, 50);
    let page: usize = r.query("page").and_then(|v| v.parse().ok()).unwrap_or(1);
    let (items, links, _) =
        fake_host::page_of(repos, page, limit, &format!("{url}{path}"), &r.query);
    let list: Vec<Value> = items.iter().map(|x| repo_json(url, x)).collect();
    let body = if wrap {
        json!({"ok": true, "data": list})
    } else {
        Value::Array(list)
    };
    fake_host::with_headers(
        answer(200, body),
        &[
            ("link", links.join(",")),
            ("x-total-count", repos.len().to_string()),
        ],
    )
}

async fn handle(
    State((state, recorded)): State<Shared>,
    request: axum::extract::Request,
) -> Response {
    let r = fake_host::read(request, &recorded).await;
    let mut s = state.lock().unwrap();
    let url = s.url.clone();
    if r.header("authorization") != Some(format!("token {}", s.token).as_str()) {
        return api_error(&url, 401, "token is required");
    }
    if let Some(f) = s.knobs.take(&r.method, &r.path) {
        return failure_answer(&url, &f);
    }
    let Some(rest) = r.path.strip_prefix("/api/v1/") else {
        return fake_host::text(404, "404 page not found");
    };
    let segs: Vec<String> = rest.split('/').map(fake_host::decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let repo = |s: &GiteaState, o: &str, n: &str| -> Option<GiteaRepo> {
        s.repos
            .iter()
            .find(|x| x.full_name.eq_ignore_ascii_case(&format!("{o}/{n}")))
            .cloned()
    };
    match (r.method.as_str(), segs.as_slice()) {
        ("GET", ["user"]) => answer(
            200,
            json!({
                "id": 3, "login": s.login, "full_name": "", "email": format!("{}@example.com", s.login),
                "is_admin": false, "restricted": false, "active": true,
            }),
        ),
        ("GET", ["user", "repos"]) => {
            let mut repos = s.repos.clone();
            repos.sort_by_key(|x| x.id);
            paged(&url, &r, "/api/v1/user/repos", &repos, false)
        }
        ("GET", ["repos", "search"]) => {
            let q = r.query("q").unwrap_or("").to_lowercase();
            let mut repos: Vec<GiteaRepo> = s
                .repos
                .iter()
                .filter(|x| {
                    x.full_name
                        .rsplit('/')
                        .next()
                        .unwrap_or("")
                        .to_lowercase()
                        .contains(&q)
                })
                .cloned()
                .collect();
            if r.query("sort") == Some("alpha") {
                repos.sort_by(|a, b| a.full_name.cmp(&b.full_name));
                if r.query("order") == Some("desc") {
                    repos.reverse();
                }
            }
            paged(&url, &r, "/api/v1/repos/search", &repos, true)
        }
        ("GET", ["repos", o, n]) => match repo(&s, o, n) {
            Some(x) => answer(200, repo_json(&url, &x)),
            None => not_found(&url),
        },
        ("GET", ["repos", o, n, "hooks"]) => match repo(&s, o, n) {
            Some(x) => answer(
                200,
                Value::Array(
                    s.hooks
                        .iter()
                        .filter(|h| h.full_name == x.full_name)
                        .map(hook_json)
                        .collect(),
                ),
            ),
            None => not_found(&url),
        },
        ("POST", ["repos", o, n, "hooks"]) => {
            let Some(x) = repo(&s, o, n) else {
                return not_found(&url);
            };
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let known = ["gitea", "forgejo", "gogs", "slack", "discord"];
            if !body["type"].as_str().is_some_and(|t| known.contains(&t)) {
                return api_error(&url, 422, "[Type]: Invalid hook type");
            }
            for key in ["url", "content_type"] {
                if body["config"][key].as_str().is_none_or(str::is_empty) {
                    return api_error(&url, 422, &format!("Missing config option: {key}"));
                }
            }
            let hook = GiteaHook {
                id: s.next_id,
                full_name: x.full_name,
                body,
            };
            s.next_id += 1;
            s.hooks.push(hook.clone());
            answer(201, hook_json(&hook))
        }
        ("PATCH", ["repos", o, n, "hooks", id]) => {
            let Some(x) = repo(&s, o, n) else {
                return not_found(&url);
            };
            let patch: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            match s
                .hooks
                .iter_mut()
                .find(|h| h.full_name == x.full_name && h.id.to_string() == *id)
            {
                Some(h) => {
                    if let (Some(into), Some(from)) = (h.body.as_object_mut(), patch.as_object()) {
                        for (k, v) in from {
                            into.insert(k.clone(), v.clone());
                        }
                    }
                    let h = h.clone();
                    answer(200, hook_json(&h))
                }
                None => not_found(&url),
            }
        }
        ("DELETE", ["repos", o, n, "hooks", id]) => {
            let Some(x) = repo(&s, o, n) else {
                return not_found(&url);
            };
            let before = s.hooks.len();
            s.hooks
                .retain(|h| !(h.full_name == x.full_name && h.id.to_string() == *id));
            if s.hooks.len() == before {
                not_found(&url)
            } else {
                fake_host::text(204, "")
            }
        }
        ("POST", ["repos", o, n, "statuses", sha]) => {
            let Some(x) = repo(&s, o, n) else {
                return not_found(&url);
            };
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let states = ["pending", "success", "error", "failure", "warning"];
            if !body["state"].as_str().is_some_and(|t| states.contains(&t)) {
                return api_error(&url, 422, "[State]: Invalid state");
            }
            let id = s.next_id;
            s.next_id += 1;
            s.statuses.push(GiteaStatus {
                full_name: x.full_name,
                sha: sha.to_string(),
                body: body.clone(),
            });
            answer(
                201,
                json!({
                    "id": id, "status": body["state"], "target_url": body["target_url"],
                    "description": body["description"], "context": body["context"],
                    "created_at": "2026-01-02T03:04:05Z", "updated_at": "2026-01-02T03:04:05Z",
                }),
            )
        }
        _ => fake_host::text(404, "404 page not found"),
    }
}
