//! A GitLab instance's REST API (v4) as its documentation describes it, on a loopback port: the
//! calls kiln makes (user, token self, projects with `Link`/`X-Next-Page` paging and search,
//! project hooks, commit statuses) with GitLab's status codes, error bodies and rate-limit
//! headers. It checks `PRIVATE-TOKEN`, stores hooks and statuses, and records every request.
//! [`FakeGitLab::fail_next`] makes the next calls of a route fail as GitLab fails.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};

use super::fake_host::{self, Failure, FakeRequest, Knobs, json as answer};

pub struct FakeGitLab {
    url: String,
    state: Arc<Mutex<GitLabState>>,
    recorded: Arc<Mutex<Vec<FakeRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitLab {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A project as GitLab stores it (what the fake answers from).
#[derive(Clone, Debug)]
pub struct GitLabProject {
    pub id: u64,
    pub path_with_namespace: String,
    /// `public`, `internal` or `private`.
    pub visibility: String,
    pub default_branch: String,
}

/// A hook the fake holds: its project and the body it was created or last updated with.
#[derive(Clone, Debug)]
pub struct GitLabHook {
    pub id: u64,
    pub project_id: u64,
    pub body: Value,
}

/// A commit status the fake holds.
#[derive(Clone, Debug)]
pub struct GitLabStatus {
    pub project_id: u64,
    pub sha: String,
    /// The request's body.
    pub body: Value,
}

struct GitLabState {
    url: String,
    token: String,
    username: String,
    bot: bool,
    /// `None`: `/personal_access_tokens/self` answers 404 (an older GitLab).
    scopes: Option<Vec<String>>,
    projects: Vec<GitLabProject>,
    hooks: Vec<GitLabHook>,
    statuses: Vec<GitLabStatus>,
    next_id: u64,
    knobs: Knobs,
}

type Shared = (Arc<Mutex<GitLabState>>, Arc<Mutex<Vec<FakeRequest>>>);

impl FakeGitLab {
    /// An instance whose token is `token`, for user `username`, with token scopes `api`.
    pub async fn start(token: &str, username: &str) -> FakeGitLab {
        let state = Arc::new(Mutex::new(GitLabState {
            url: String::new(),
            token: token.to_string(),
            username: username.to_string(),
            bot: false,
            scopes: Some(vec!["api".to_string()]),
            projects: Vec::new(),
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
        FakeGitLab {
            url,
            state,
            recorded,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`: the instance's base URL (the API is under `/api/v4`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every request received, oldest first.
    pub fn requests(&self) -> Vec<FakeRequest> {
        self.recorded.lock().unwrap().clone()
    }

    pub fn clear_requests(&self) {
        self.recorded.lock().unwrap().clear();
    }

    /// Adds a project; answers its id.
    pub fn add_project(&self, path_with_namespace: &str, visibility: &str) -> u64 {
        let mut s = self.state.lock().unwrap();
        let id = s.next_id;
        s.next_id += 1;
        s.projects.push(GitLabProject {
            id,
            path_with_namespace: path_with_namespace.to_string(),
            visibility: visibility.to_string(),
            default_branch: "main".to_string(),
        });
        id
    }

    /// The token is a project access token's bot user.
    pub fn set_bot(&self, bot: bool) {
        self.state.lock().unwrap().bot = bot;
    }

    /// The scopes `/personal_access_tokens/self` reports; `None` makes it answer 404.
    pub fn set_scopes(&self, scopes: Option<&[&str]>) {
        self.state.lock().unwrap().scopes =
            scopes.map(|s| s.iter().map(|x| x.to_string()).collect());
    }

    pub fn hooks(&self) -> Vec<GitLabHook> {
        self.state.lock().unwrap().hooks.clone()
    }

    pub fn statuses(&self) -> Vec<GitLabStatus> {
        self.state.lock().unwrap().statuses.clone()
    }

    /// The next `times` calls of `method` on a path holding `path_contains` (as sent, e.g.
    /// `/hooks`, `/statuses/`, `/api/v4/user`) answer `failure`.
    pub fn fail_next(&self, method: &str, path_contains: &str, times: usize, failure: Failure) {
        self.state
            .lock()
            .unwrap()
            .knobs
            .add(method, path_contains, times, failure);
    }
}

fn project_json(url: &str, p: &GitLabProject) -> Value {
    let (namespace, path) = p
        .path_with_namespace
        .rsplit_once('/')
        .unwrap_or(("", &p.path_with_namespace));
    json!({
        "id": p.id,
        "description": null,
        "name": path,
        "name_with_namespace": p.path_with_namespace.replace('/', " / "),
        "path": path,
        "path_with_namespace": p.path_with_namespace,
        "created_at": "2026-01-02T03:04:05.000Z",
        "default_branch": p.default_branch,
        "tag_list": [],
        "topics": [],
        "ssh_url_to_repo": format!("git@127.0.0.1:{}.git", p.path_with_namespace),
        "http_url_to_repo": format!("{url}/{}.git", p.path_with_namespace),
        "web_url": format!("{url}/{}", p.path_with_namespace),
        "visibility": p.visibility,
        "namespace": {"id": 1, "name": namespace, "path": namespace, "kind": "group", "full_path": namespace},
        "archived": false,
    })
}

fn failure_answer(failure: &Failure) -> Response {
    match failure {
        Failure::Unauthorized => answer(401, json!({"message": "401 Unauthorized"})),
        Failure::Forbidden => answer(
            403,
            json!({
                "error": "insufficient_scope",
                "error_description": "The request requires higher privileges than provided by the access token.",
                "scope": "api",
            }),
        ),
        Failure::NotFound => answer(404, json!({"message": "404 Project Not Found"})),
        Failure::Invalid => answer(
            422,
            json!({"message": {"url": ["is blocked: Requests to the local network are not allowed"]}}),
        ),
        Failure::RateLimited { retry_after } => {
            let reset = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + retry_after;
            fake_host::with_headers(
                fake_host::text(429, "Retry later\n"),
                &[
                    ("retry-after", retry_after.to_string()),
                    ("ratelimit-limit", "600".into()),
                    ("ratelimit-observed", "601".into()),
                    ("ratelimit-remaining", "0".into()),
                    ("ratelimit-reset", reset.to_string()),
                ],
            )
        }
        Failure::ServerError => answer(500, json!({"message": "500 Internal Server Error"})),
    }
}

/// GitLab's status event for reaching `state` (in its "Cannot transition" message).
fn event_of(state: &str) -> &'static str {
    match state {
        "pending" => "enqueue",
        "running" => "run",
        "success" => "succeed",
        "failed" => "drop",
        "canceled" => "cancel",
        _ => "unknown",
    }
}

async fn handle(
    State((state, recorded)): State<Shared>,
    request: axum::extract::Request,
) -> Response {
    let r = fake_host::read(request, &recorded).await;
    let mut s = state.lock().unwrap();
    if r.header("private-token") != Some(s.token.as_str()) {
        return answer(401, json!({"message": "401 Unauthorized"}));
    }
    if let Some(f) = s.knobs.take(&r.method, &r.path) {
        return failure_answer(&f);
    }
    let Some(rest) = r.path.strip_prefix("/api/v4/") else {
        return answer(404, json!({"error": "404 Not Found"}));
    };
    let segs: Vec<String> = rest.split('/').map(fake_host::decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let url = s.url.clone();
    let find = |s: &GitLabState, id: &str| -> Option<GitLabProject> {
        s.projects
            .iter()
            .find(|p| p.path_with_namespace == id || p.id.to_string() == id)
            .cloned()
    };
    match (r.method.as_str(), segs.as_slice()) {
        ("GET", ["user"]) => answer(
            200,
            json!({
                "id": 42,
                "username": s.username,
                "name": s.username,
                "state": "active",
                "bot": s.bot,
                "web_url": format!("{url}/{}", s.username),
            }),
        ),
        ("GET", ["personal_access_tokens", "self"]) => match &s.scopes {
            Some(scopes) => answer(
                200,
                json!({
                    "id": 7, "name": "kiln", "revoked": false, "created_at": "2026-01-02T03:04:05.000Z",
                    "scopes": scopes, "user_id": 42, "active": true, "expires_at": null,
                }),
            ),
            None => answer(404, json!({"error": "404 Not Found"})),
        },
        ("GET", ["projects"]) => {
            let per_page: usize = r
                .query("per_page")
                .and_then(|v| v.parse().ok())
                .unwrap_or(20)
                .clamp(1, 100);
            let page: usize = r.query("page").and_then(|v| v.parse().ok()).unwrap_or(1);
            let mut projects = s.projects.clone();
            if let Some(q) = r.query("search").map(str::to_lowercase) {
                let namespaces = r.query("search_namespaces") == Some("true");
                projects.retain(|p| {
                    let name = if namespaces {
                        p.path_with_namespace.to_lowercase()
                    } else {
                        p.path_with_namespace
                            .rsplit('/')
                            .next()
                            .unwrap_or("")
                            .to_lowercase()
                    };
                    name.contains(&q)
                });
            }
            if r.query("order_by") == Some("path") {
                projects.sort_by(|a, b| a.path_with_namespace.cmp(&b.path_with_namespace));
                if r.query("sort") != Some("asc") {
                    projects.reverse();
                }
            }
            let total = projects.len();
            let (items, links, total_pages) = fake_host::page_of(
                &projects,
                page,
                per_page,
                &format!("{url}/api/v4/projects"),
                &r.query,
            );
            let body: Vec<Value> = items.iter().map(|p| project_json(&url, p)).collect();
            let next = if page < total_pages {
                (page + 1).to_string()
            } else {
                String::new()
            };
            let prev = if page > 1 {
                (page - 1).to_string()
            } else {
                String::new()
            };
            fake_host::with_headers(
                answer(200, Value::Array(body)),
                &[
                    ("link", links.join(", ")),
                    ("x-page", page.to_string()),
                    ("x-per-page", per_page.to_string()),
                    ("x-next-page", next),
                    ("x-prev-page", prev),
                    ("x-total", total.to_string()),
                    ("x-total-pages", total_pages.to_string()),
                ],
            )
        }
        ("GET", ["projects", id]) => match find(&s, id) {
            Some(p) => answer(200, project_json(&url, &p)),
            None => answer(404, json!({"message": "404 Project Not Found"})),
        },
        ("GET", ["projects", id, "hooks"]) => match find(&s, id) {
            Some(p) => {
                let hooks: Vec<Value> = s
                    .hooks
                    .iter()
                    .filter(|h| h.project_id == p.id)
                    .map(hook_json)
                    .collect();
                answer(200, Value::Array(hooks))
            }
            None => answer(404, json!({"message": "404 Project Not Found"})),
        },
        ("POST", ["projects", id, "hooks"]) => {
            let Some(p) = find(&s, id) else {
                return answer(404, json!({"message": "404 Project Not Found"}));
            };
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            if body["url"].as_str().is_none_or(str::is_empty) {
                return answer(400, json!({"error": "url is missing"}));
            }
            let hook = GitLabHook {
                id: s.next_id,
                project_id: p.id,
                body,
            };
            s.next_id += 1;
            s.hooks.push(hook.clone());
            answer(201, hook_json(&hook))
        }
        ("PUT", ["projects", id, "hooks", hook_id]) => {
            let Some(p) = find(&s, id) else {
                return answer(404, json!({"message": "404 Project Not Found"}));
            };
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            if body["url"].as_str().is_none_or(str::is_empty) {
                return answer(400, json!({"error": "url is missing"}));
            }
            match s
                .hooks
                .iter_mut()
                .find(|h| h.project_id == p.id && h.id.to_string() == *hook_id)
            {
                Some(h) => {
                    h.body = body;
                    let h = h.clone();
                    answer(200, hook_json(&h))
                }
                None => answer(404, json!({"message": "404 Not found"})),
            }
        }
        ("DELETE", ["projects", id, "hooks", hook_id]) => {
            let Some(p) = find(&s, id) else {
                return answer(404, json!({"message": "404 Project Not Found"}));
            };
            let before = s.hooks.len();
            s.hooks
                .retain(|h| !(h.project_id == p.id && h.id.to_string() == *hook_id));
            if s.hooks.len() == before {
                answer(404, json!({"message": "404 Not found"}))
            } else {
                fake_host::text(204, "")
            }
        }
        ("POST", ["projects", id, "statuses", sha]) => {
            let Some(p) = find(&s, id) else {
                return answer(404, json!({"message": "404 Project Not Found"}));
            };
            if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return answer(404, json!({"message": "404 Commit Not Found"}));
            }
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let state = body["state"].as_str().unwrap_or("").to_string();
            if !["pending", "running", "success", "failed", "canceled"].contains(&state.as_str()) {
                return answer(400, json!({"error": "state does not have a valid value"}));
            }
            let name = body["name"].as_str().unwrap_or("default").to_string();
            let last = s
                .statuses
                .iter()
                .rev()
                .find(|st| st.project_id == p.id && st.sha == *sha && st.body["name"] == name);
            if let Some(last) = last {
                let was = last.body["state"].as_str().unwrap_or("");
                if was == state {
                    return answer(
                        400,
                        json!({"message": format!(
                            "Cannot transition status via :{} from :{} (Reason(s): Status cannot transition via \"{}\" from \"{}\")",
                            event_of(&state), was, event_of(&state), was
                        )}),
                    );
                }
            }
            let id = s.next_id;
            s.next_id += 1;
            s.statuses.push(GitLabStatus {
                project_id: p.id,
                sha: sha.to_string(),
                body: body.clone(),
            });
            answer(
                201,
                json!({
                    "id": id, "sha": sha, "ref": "main", "status": state, "name": name,
                    "target_url": body["target_url"], "description": body["description"],
                    "created_at": "2026-01-02T03:04:05.000Z", "allow_failure": false,
                }),
            )
        }
        _ => answer(404, json!({"error": "404 Not Found"})),
    }
}

fn hook_json(h: &GitLabHook) -> Value {
    json!({
        "id": h.id,
        "url": h.body["url"],
        "project_id": h.project_id,
        "push_events": h.body["push_events"],
        "tag_push_events": h.body["tag_push_events"],
        "enable_ssl_verification": h.body["enable_ssl_verification"],
        "created_at": "2026-01-02T03:04:05.000Z",
    })
}
