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
        self.request(reqwest::Method::GET, path)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
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

    /// Every repository name in the registry (`/v2/_catalog`, followed page by page).
    pub async fn catalog(&self) -> anyhow::Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let mut all = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let mut path = "/v2/_catalog?n=500".to_string();
            if let Some(l) = &last {
                path.push_str(&format!("&last={l}"));
            }
            let resp = self
                .get(&path)
                .send()
                .await
                .with_context(|| format!("cannot reach {}", self.base))?;
            if !resp.status().is_success() {
                bail!("registry answered HTTP {} for its catalog", resp.status());
            }
            let more = resp.headers().contains_key(reqwest::header::LINK);
            let page: Catalog = resp
                .json()
                .await
                .context("the registry's catalog is not JSON")?;
            let names = page.repositories.unwrap_or_default();
            let done = names.is_empty() || !more;
            last = names.last().cloned();
            all.extend(names);
            if done {
                return Ok(all);
            }
        }
    }

    /// The tags of a registry repository (empty when it has none or does not exist).
    pub async fn tags(&self, repo: &str) -> anyhow::Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let resp = self
            .get(&format!("/v2/{repo}/tags/list"))
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(vec![]);
        }
        if !resp.status().is_success() {
            bail!(
                "registry answered HTTP {} for the tags of {repo}",
                resp.status()
            );
        }
        let tags: Tags = resp
            .json()
            .await
            .context("the registry's tag list is not JSON")?;
        Ok(tags.tags.unwrap_or_default())
    }

    /// Deletes a manifest by digest (every tag pointing at it goes). Err names why the registry refused.
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> anyhow::Result<()> {
        let resp = self
            .request(
                reqwest::Method::DELETE,
                &format!("/v2/{repo}/manifests/{digest}"),
            )
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        match resp.status().as_u16() {
            200..=299 | 404 => Ok(()),
            405 => bail!("the registry does not allow deletion (storage.delete.enabled is off)"),
            s => bail!("the registry answered HTTP {s}"),
        }
    }
}
