//! The registry's HTTP API (Distribution v2): reachability and manifest digests.

use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};

pub const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json";

#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    username: Option<String>,
    password: Option<SecretString>,
}

impl RegistryClient {
    pub fn new(
        base: &str,
        username: Option<String>,
        password: Option<SecretString>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the registry HTTP client")?;
        Ok(RegistryClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            username,
            password,
        })
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.get(format!("{}{path}", self.base));
        match &self.username {
            Some(user) => req.basic_auth(
                user,
                self.password
                    .as_ref()
                    .map(|p| p.expose_secret().to_string()),
            ),
            None => req,
        }
    }

    /// Does the registry answer its API root? 200, or 401 (it wants auth) both mean it is up.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let resp = self
            .get("/v2/")
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        match resp.status().as_u16() {
            200 | 401 => Ok(()),
            s => bail!("{} answered /v2/ with HTTP {s}", self.base),
        }
    }

    /// The digest the registry holds for `repo:tag`, or None when there is no such tag.
    pub async fn manifest_digest(&self, repo: &str, tag: &str) -> anyhow::Result<Option<String>> {
        let resp = self
            .get(&format!("/v2/{repo}/manifests/{tag}"))
            .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            bail!("registry answered HTTP {} for {repo}:{tag}", resp.status());
        }
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }
}
