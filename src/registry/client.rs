//! The registry's HTTP API (Distribution v2): reachability, catalog and tags (every page), manifest
//! digests, deletion.

use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};

pub const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json";

/// Entries asked for per page of a catalog or tag list, unless configured (`KILN_REGISTRY_PAGE_SIZE`).
pub const DEFAULT_PAGE_SIZE: usize = 100;

#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    username: Option<String>,
    password: Option<SecretString>,
    page_size: usize,
}

impl RegistryClient {
    pub fn new(
        base: &str,
        username: Option<String>,
        password: Option<SecretString>,
    ) -> anyhow::Result<Self> {
        // kiln's own registry: reached directly, never through the environment's proxy settings.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the registry HTTP client")?;
        Ok(RegistryClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            username,
            password,
            page_size: DEFAULT_PAGE_SIZE,
        })
    }

    /// Asks for `n` entries per page of catalog and tag lists (at least 1).
    pub fn with_page_size(mut self, n: usize) -> Self {
        self.page_size = n.max(1);
        self
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, path)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.authorized(self.http.request(method, format!("{}{path}", self.base)))
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
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

    /// `GET /v2/{repo}/manifests/{reference}` accepting every manifest kind kiln reads: the answer,
    /// or None when the registry has no such manifest (404); any other failure is an error.
    async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> anyhow::Result<Option<reqwest::Response>> {
        let resp = self
            .get(&format!("/v2/{repo}/manifests/{reference}"))
            .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            bail!(
                "registry answered HTTP {} for the manifest {repo}:{reference}",
                resp.status()
            );
        }
        Ok(Some(resp))
    }

    /// The digest the registry holds for `repo:tag`, or None when there is no such tag.
    pub async fn manifest_digest(&self, repo: &str, tag: &str) -> anyhow::Result<Option<String>> {
        let Some(resp) = self.get_manifest(repo, tag).await? else {
            return Ok(None);
        };
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }

    /// The manifest `repo@reference` as stored (its media type and bytes), or None when the registry
    /// has no such manifest.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> anyhow::Result<Option<(String, Vec<u8>)>> {
        let Some(resp) = self.get_manifest(repo, reference).await? else {
            return Ok(None);
        };
        let media_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = resp
            .bytes()
            .await
            .with_context(|| format!("cannot read the manifest {repo}@{reference}"))?;
        Ok(Some((media_type, body.to_vec())))
    }

    /// Every repository name in the registry: `/v2/_catalog`, every page of it.
    pub async fn catalog(&self) -> anyhow::Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let first = format!("/v2/_catalog?n={}", self.page_size);
        let Some(pages) = self
            .pages::<Catalog>(&first, "the catalog", |c| {
                c.repositories.unwrap_or_default()
            })
            .await?
        else {
            bail!(
                "the registry answered 404 for its catalog: is {} a Distribution registry?",
                self.base
            );
        };
        Ok(pages)
    }

    /// The tags of a registry repository, every page of them. `None` when the registry says it has no
    /// such repository (404 `NAME_UNKNOWN`); any other failure, a 404 without that code included, is an
    /// error, never an empty list: callers that reconcile against this list must not take a failure for
    /// "no tags".
    pub async fn tags(&self, repo: &str) -> anyhow::Result<Option<Vec<String>>> {
        #[derive(serde::Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let first = format!("/v2/{repo}/tags/list?n={}", self.page_size);
        self.pages::<Tags>(&first, &format!("the tags of {repo}"), |t| {
            t.tags.unwrap_or_default()
        })
        .await
    }

    /// Reads a paginated list from `first` on, following each answer's `Link: <…>; rel="next"` (the
    /// Distribution spec's pagination) until an answer has none. `None` when the first page is a 404
    /// `NAME_UNKNOWN`; every other non-2xx answer, an unreadable body, a link off this registry or a
    /// link seen before is an error.
    async fn pages<T: serde::de::DeserializeOwned>(
        &self,
        first: &str,
        what: &str,
        items: impl Fn(T) -> Vec<String>,
    ) -> anyhow::Result<Option<Vec<String>>> {
        let mut url = reqwest::Url::parse(&format!("{}{first}", self.base))
            .with_context(|| format!("the registry URL {} is not a URL", self.base))?;
        let origin = url.origin();
        let mut seen = std::collections::HashSet::new();
        let mut all = Vec::new();
        loop {
            if !seen.insert(url.to_string()) {
                bail!("the registry's pages of {what} loop back to {url}");
            }
            let resp = self
                .authorized(self.http.get(url.clone()))
                .send()
                .await
                .with_context(|| format!("cannot read {what} from {}", self.base))?;
            let status = resp.status();
            let next = next_link(resp.headers());
            let body = resp
                .bytes()
                .await
                .with_context(|| format!("cannot read {what} from {}", self.base))?;
            if !status.is_success() {
                let code = error_code(&body);
                if status == reqwest::StatusCode::NOT_FOUND
                    && code.as_deref() == Some("NAME_UNKNOWN")
                    && seen.len() == 1
                {
                    return Ok(None);
                }
                bail!(
                    "the registry answered HTTP {}{} for {what}",
                    status.as_u16(),
                    code.map(|c| format!(" {c}")).unwrap_or_default()
                );
            }
            let page: T = serde_json::from_slice(&body).with_context(|| {
                format!("the registry's answer for {what} is not the expected JSON")
            })?;
            all.extend(items(page));
            let Some(next) = next else {
                return Ok(Some(all));
            };
            let next = url
                .join(&next)
                .with_context(|| format!("the registry's next-page link '{next}' is not a URL"))?;
            if next.origin() != origin {
                bail!("the registry's next page of {what} is on another host: {next}");
            }
            url = next;
        }
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

/// The target of a `Link: <URL>; rel="next"` header (RFC 8288; several links may share a header or come
/// in several headers).
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|link| {
            let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
            params
                .split(';')
                .filter_map(|p| p.trim().split_once('='))
                .any(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("rel")
                        && v.trim()
                            .trim_matches('"')
                            .split_whitespace()
                            .any(|r| r.eq_ignore_ascii_case("next"))
                })
                .then(|| target.trim().to_string())
        })
}

/// The first error code of a Distribution error body (`{"errors": [{"code": "NAME_UNKNOWN", …}]}`).
fn error_code(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Error>,
    }
    #[derive(serde::Deserialize)]
    struct Error {
        code: String,
    }
    let errors: Errors = serde_json::from_slice(body).ok()?;
    errors.errors.into_iter().next().map(|e| e.code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, LINK};

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(LINK, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_next_link_is_found_among_others() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[], None),
            (
                &[r#"</v2/acme/api/tags/list?last=b&n=2>; rel="next""#],
                Some("/v2/acme/api/tags/list?last=b&n=2"),
            ),
            (
                &[r#"</v2/_catalog?last=acme%2Fapi&n=1>; rel="next""#],
                Some("/v2/_catalog?last=acme%2Fapi&n=1"),
            ),
            (
                &[
                    r#"<https://r.example/v2/x/tags/list?n=1>; rel="prev", <https://r.example/v2/x/tags/list?last=z&n=1>; rel=next"#,
                ],
                Some("https://r.example/v2/x/tags/list?last=z&n=1"),
            ),
            (
                &[r#"</a>; rel="prev""#, r#"</b>; title="x"; rel="last next""#],
                Some("/b"),
            ),
            (&[r#"</a>; rel="prev""#], None),
            (&["garbage"], None),
        ];
        for (values, want) in cases {
            assert_eq!(next_link(&headers(values)).as_deref(), *want, "{values:?}");
        }
    }

    #[test]
    fn distribution_error_codes_are_read() {
        assert_eq!(
            error_code(
                br#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry","detail":{"name":"acme/nope"}}]}"#
            )
            .as_deref(),
            Some("NAME_UNKNOWN")
        );
        assert_eq!(error_code(b"404 page not found"), None);
        assert_eq!(error_code(br#"{"errors":[]}"#), None);
    }
}
