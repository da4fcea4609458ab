//! kiln itself for the end-to-end tests: the real server (router, workers, SQLite in a temp dir) on a
//! free loopback port, and a small JSON client for its API.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Registry, wait_until};

pub const ADMIN_TOKEN: &str = "kiln_test_admin_token_0123456789abcdef";

pub struct Kiln {
    pub server: kiln::Server,
    /// The API client: `kiln.get(…)`, `kiln.url` reach it through `Deref`.
    pub api: KilnApi,
    pub data_dir: tempfile::TempDir,
}

impl std::ops::Deref for Kiln {
    type Target = KilnApi;
    fn deref(&self) -> &KilnApi {
        &self.api
    }
}

/// What `KILN_GIT_ALLOW` opens in the test kilns: the loopback address [`super::GitHttpServer`]
/// serves on.
pub const TEST_GIT_ALLOW: &str = "127.0.0.1,::1";

/// A client for a running kiln's API (in this process, or [`super::kiln_process::KilnProcess`]).
pub struct KilnApi {
    pub url: String,
    pub http: reqwest::Client,
}

impl Kiln {
    /// Starts kiln pushing to `registry`, with `extra` KILN_* variables on top of the test defaults
    /// (`KILN_LOCAL_SOURCES` allows [`super::git_repos_root`], `KILN_GIT_ALLOW` the loopback
    /// address; an empty value in `extra` unsets either).
    pub async fn start(registry: &Registry, extra: &[(&str, &str)]) -> Kiln {
        let data_dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(registry, extra, data_dir).await
    }

    /// Same, over an existing data dir (a restart).
    pub async fn start_in(
        registry: &Registry,
        extra: &[(&str, &str)],
        data_dir: tempfile::TempDir,
    ) -> Kiln {
        let mut vars: HashMap<String, String> = HashMap::new();
        vars.insert("KILN_LISTEN".into(), "127.0.0.1:0".into());
        vars.insert(
            "KILN_DATA_DIR".into(),
            data_dir.path().display().to_string(),
        );
        vars.insert("KILN_REGISTRY".into(), registry.addr.clone());
        vars.insert("KILN_ADMIN_TOKEN".into(), ADMIN_TOKEN.into());
        // The test repositories ([`GitRepo`]) are local: allow their directory, and only it.
        vars.insert(
            "KILN_LOCAL_SOURCES".into(),
            super::git_repos_root().display().to_string(),
        );
        // The private repositories of [`super::GitHttpServer`] are served on the loopback address,
        // which the outbound guard refuses unless KILN_GIT_ALLOW opens it.
        vars.insert("KILN_GIT_ALLOW".into(), TEST_GIT_ALLOW.into());
        // Per-address rate limits off: every test talks from 127.0.0.1, and many try wrong tokens and
        // signatures on purpose. tests/rate_limits.rs turns them on through `extra`.
        vars.insert("KILN_RATE_LIMIT_PER_MINUTE".into(), "0".into());
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        let config = kiln::Config::load(None, &vars).expect("test config");
        let server = kiln::Server::start(config).await.expect("kiln starts");
        let url = format!("http://{}", server.addr);
        Kiln {
            server,
            api: KilnApi::new(url),
            data_dir,
        }
    }
}

/// The token the registries of [`Kiln::start_notified`] send with their notifications.
pub const REGISTRY_EVENTS_TOKEN: &str = "registry-events-token-for-tests";

impl Kiln {
    /// A registry that notifies kiln of every push (kiln's port is chosen first, so the registry
    /// can be told where kiln listens), and kiln, with `extra` KILN_* variables on top.
    pub async fn start_notified(extra: &[(&str, &str)]) -> (Registry, Kiln) {
        super::ensure_docker();
        let port = super::free_port();
        let registry = Registry::start_with_notifications(
            &format!("http://127.0.0.1:{port}/registry/events"),
            REGISTRY_EVENTS_TOKEN,
        );
        let listen = format!("127.0.0.1:{port}");
        let mut vars = vec![
            ("KILN_LISTEN", listen.as_str()),
            ("KILN_REGISTRY_EVENTS_TOKEN", REGISTRY_EVENTS_TOKEN),
            ("KILN_WEBHOOK_ALLOW", "127.0.0.1"),
        ];
        vars.extend_from_slice(extra);
        let kiln = Kiln::start(&registry, &vars).await;
        (registry, kiln)
    }
}

impl Kiln {
    /// A registry that takes kiln as its token server (issue 11), and kiln: kiln's port and data
    /// dir are chosen first, and its signing key made there, so the registry is told the realm
    /// (`http://127.0.0.1:{port}/registry/token`) and the certificate before kiln starts.
    pub async fn start_with_registry_token_auth(extra: &[(&str, &str)]) -> (Registry, Kiln) {
        super::ensure_docker();
        let port = super::free_port();
        let data_dir = tempfile::tempdir().expect("temp dir");
        let key = kiln::registry::token_key::load_or_create(data_dir.path())
            .expect("make the registry token key");
        let registry = Registry::start_with_token_auth(
            &format!("http://127.0.0.1:{port}/registry/token"),
            &key.cert_path,
        );
        let listen = format!("127.0.0.1:{port}");
        let mut vars = vec![("KILN_LISTEN", listen.as_str())];
        vars.extend_from_slice(extra);
        let kiln = Kiln::start_in(&registry, &vars, data_dir).await;
        (registry, kiln)
    }
}

impl KilnApi {
    pub fn new(url: String) -> KilnApi {
        KilnApi {
            url,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        self.send_as(ADMIN_TOKEN, req).await
    }

    /// An API call made with `token` instead of the admin's: `path` under `/api/v1`, `body` as JSON.
    pub async fn call_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.url));
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.send_as(token, req).await
    }

    async fn send_as(&self, token: &str, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req
            .bearer_auth(token)
            .send()
            .await
            .expect("request to kiln");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    /// An API call as the admin: `path` under `/api/v1`, `body` as JSON.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(ADMIN_TOKEN, method, path, body).await
    }

    /// Namespace `ns` (made unless it exists) and repository `ns/repo` in it, as the admin.
    pub async fn repo(&self, ns: &str, repo: &str) {
        let (s, body) = self.post("/namespaces", json!({"name": ns})).await;
        assert!(
            s == StatusCode::CREATED || s == StatusCode::CONFLICT,
            "namespace: {s} {body}"
        );
        let (s, body) = self
            .post(&format!("/namespaces/{ns}/repos"), json!({"name": repo}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "repo: {body}");
    }

    /// A new API token made by the admin (`POST /tokens`), limited to `namespace` when given: the
    /// token itself.
    pub async fn token(&self, name: &str, role: &str, namespace: Option<&str>) -> String {
        let (s, body) = self
            .post(
                "/tokens",
                json!({"name": name, "role": role, "namespace": namespace}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "token {name}: {body}");
        body["token"]
            .as_str()
            .expect("token in the answer")
            .to_string()
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(format!("{}/api/v1{path}", self.url)))
            .await
    }
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(format!("{}/api/v1{path}", self.url))
                .json(&body),
        )
        .await
    }
    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            self.http
                .put(format!("{}/api/v1{path}", self.url))
                .json(&body),
        )
        .await
    }
    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            self.http
                .patch(format!("{}/api/v1{path}", self.url))
                .json(&body),
        )
        .await
    }
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.delete(format!("{}/api/v1{path}", self.url)))
            .await
    }

    pub async fn log(&self, build_id: &str) -> String {
        self.http
            .get(format!("{}/api/v1/builds/{build_id}/log", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("log request")
            .text()
            .await
            .expect("log text")
    }

    /// Creates namespace `ns` (if needed) and repository `ns/repo`, links `clone_url` as its GitHub source
    /// and returns the generated webhook secret.
    pub async fn ci_repo(&self, ns: &str, repo: &str, clone_url: &str) -> String {
        self.repo(ns, repo).await;
        let (s, body) = self
            .put(
                &format!("/namespaces/{ns}/repos/{repo}/source"),
                json!({"provider": "github", "clone_url": clone_url}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "source: {body}");
        body["webhook_secret"]
            .as_str()
            .expect("a generated secret")
            .to_string()
    }

    pub async fn rule(&self, ns: &str, repo: &str, rule: Value) -> String {
        let (s, body) = self
            .post(&format!("/namespaces/{ns}/repos/{repo}/rules"), rule)
            .await;
        assert_eq!(s, StatusCode::CREATED, "rule: {body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// Sends a GitHub webhook delivery signed with `secret`.
    pub async fn github_hook(
        &self,
        event: &str,
        delivery: &str,
        secret: &str,
        payload: &Value,
    ) -> (StatusCode, Value) {
        let body = serde_json::to_vec(payload).unwrap();
        self.github_hook_raw(
            event,
            delivery,
            &super::github_signature(secret, &body),
            body,
        )
        .await
    }

    pub async fn github_hook_raw(
        &self,
        event: &str,
        delivery: &str,
        signature: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("{}/hooks/github", self.url))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await
            .expect("hook request");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Sends a GitHub push of `sha` to `git_ref` (a new ref: `before` is zeros) signed with `secret`;
    /// returns the builds it queued.
    pub async fn push_hook(
        &self,
        secret: &str,
        clone_url: &str,
        git_ref: &str,
        sha: &str,
    ) -> Vec<String> {
        let payload = super::github_push_payload(
            clone_url,
            git_ref,
            "0000000000000000000000000000000000000000",
            sha,
            false,
        );
        let (status, body) = self
            .github_hook("push", &super::new_delivery_id(), secret, &payload)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["builds"]
            .as_array()
            .expect("builds")
            .iter()
            .map(|b| b.as_str().unwrap().to_string())
            .collect()
    }

    /// Waits until the build ends and returns it.
    pub async fn wait_build(&self, id: &str) -> Value {
        let path = format!("/builds/{id}");
        wait_until(
            &format!("build {id} to finish"),
            Duration::from_secs(180),
            || async {
                let (_, b) = self.get(&path).await;
                matches!(
                    b["status"].as_str(),
                    Some("succeeded" | "failed" | "cancelled" | "skipped")
                )
            },
        )
        .await;
        self.get(&path).await.1
    }

    pub async fn builds(&self, ns: &str, repo: &str) -> Vec<Value> {
        let (s, body) = self
            .get(&format!("/namespaces/{ns}/repos/{repo}/builds"))
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        body.as_array().unwrap().clone()
    }
}
