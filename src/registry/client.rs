//! The registry's HTTP API (Distribution v2): reachability, catalog and tags (every page), manifest
//! digests, deletion.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};

use super::token::{Requester, TokenIssuer, grant, parse_scopes};

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
    /// Without basic credentials: kiln answers a registry's Bearer challenge with a token it
    /// signs for itself (the registry trusts kiln as its token server).
    self_tokens: Option<Arc<SelfTokens>>,
    /// Held by a sync of versions with this registry ([`RegistryClient::sync_turn`]).
    syncing: Arc<tokio::sync::Mutex<()>>,
}

/// Tokens kiln issued to itself, per scope, reused until shortly before they expire.
struct SelfTokens {
    issuer: Arc<TokenIssuer>,
    cache: Mutex<HashMap<String, (String, Instant)>>,
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
            self_tokens: None,
            syncing: Arc::default(),
        })
    }

    /// Waits for the turn to sync versions with this registry: one sync at a time, so one that
    /// started earlier (the one at start) cannot write what it read after a later one has run.
    pub async fn sync_turn(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.syncing.clone().lock_owned().await
    }

    /// Answers the registry's Bearer challenges with tokens `issuer` signs (unless basic
    /// credentials are configured: those are sent instead, as before).
    pub fn with_token_issuer(mut self, issuer: Arc<TokenIssuer>) -> Self {
        if self.username.is_none() {
            self.self_tokens = Some(Arc::new(SelfTokens {
                issuer,
                cache: Mutex::new(HashMap::new()),
            }));
        }
        self
    }

    /// Sends `req`; with self-issued tokens, a cached token for the scope the request needs goes
    /// along, and a 401 with a Bearer challenge is answered once with a token for the challenged
    /// scope (the Docker token authentication flow, without asking kiln's own HTTP endpoint).
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let Some(tokens) = &self.self_tokens else {
            return Ok(req.send().await?);
        };
        let retry = req.try_clone();
        let (client, request) = req.build_split();
        let mut request = request?;
        if let Some(scope) = scope_for(request.method(), request.url().path())
            && let Some(token) = tokens.cached(&scope)
        {
            request
                .headers_mut()
                .insert(reqwest::header::AUTHORIZATION, bearer(&token)?);
        }
        let resp = client.execute(request).await?;
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let Some(challenge) = resp
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(bearer_challenge)
        else {
            return Ok(resp);
        };
        let Some(retry) = retry else {
            return Ok(resp);
        };
        if let Some(service) = challenge.get("service")
            && *service != tokens.issuer.service
        {
            bail!(
                "the registry asks for tokens of service '{service}', kiln issues them for '{}' \
                 (KILN_REGISTRY_TOKEN_SERVICE)",
                tokens.issuer.service
            );
        }
        let scope = challenge.get("scope").cloned().unwrap_or_default();
        let token = tokens.issue(&scope)?;
        Ok(retry
            .header(reqwest::header::AUTHORIZATION, bearer(&token)?)
            .send()
            .await?)
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
        let req = self
            .get(&format!("/v2/{repo}/manifests/{reference}"))
            .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT);
        let resp = self
            .send(req)
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
                .send(self.authorized(self.http.get(url.clone())))
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
            .send(self.request(
                reqwest::Method::DELETE,
                &format!("/v2/{repo}/manifests/{digest}"),
            ))
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        match resp.status().as_u16() {
            200..=299 | 404 => Ok(()),
            405 => bail!("the registry does not allow deletion (storage.delete.enabled is off)"),
            s => bail!("the registry answered HTTP {s}"),
        }
    }
}

impl SelfTokens {
    /// A cached token for `scope` that is still good for a while.
    fn cached(&self, scope: &str) -> Option<String> {
        let cache = self.cache.lock().expect("token cache poisoned");
        cache
            .get(scope)
            .filter(|(_, good_until)| Instant::now() < *good_until)
            .map(|(token, _)| token.clone())
    }

    /// A token kiln grants itself for `scope` (space-separated scopes; none: a token with no
    /// access, as for the API root), cached until a fifth of its lifetime is left.
    fn issue(&self, scope: &str) -> anyhow::Result<String> {
        if let Some(token) = self.cached(scope) {
            return Ok(token);
        }
        let access = grant(&Requester::Kiln, &parse_scopes(scope), false);
        let issued = self.issuer.issue("kiln", &access)?;
        let good_until = Instant::now() + issued.expires_in.mul_f32(0.8);
        let mut cache = self.cache.lock().expect("token cache poisoned");
        cache.retain(|_, (_, until)| Instant::now() < *until);
        cache.insert(scope.to_string(), (issued.token.clone(), good_until));
        Ok(issued.token)
    }
}

fn bearer(token: &str) -> anyhow::Result<reqwest::header::HeaderValue> {
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        .context("a registry token is not a header value")?;
    value.set_sensitive(true);
    Ok(value)
}

/// The scope the registry asks for a request (as Distribution words its challenges), so a cached
/// token can go along with the first attempt: `registry:catalog:*` for the catalog,
/// `repository:NAME:pull` to read, `repository:NAME:delete` to delete.
fn scope_for(method: &reqwest::Method, path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v2/")?;
    if rest == "_catalog" {
        return Some("registry:catalog:*".into());
    }
    let name = ["/manifests/", "/tags/", "/blobs/"]
        .iter()
        .filter_map(|marker| rest.rfind(marker).map(|i| &rest[..i]))
        .max_by_key(|name| name.len())?;
    let action = match *method {
        reqwest::Method::GET | reqwest::Method::HEAD => "pull",
        reqwest::Method::DELETE => "delete",
        _ => "push",
    };
    Some(format!("repository:{name}:{action}"))
}

/// The parameters of a `Bearer` challenge (`Bearer realm="…",service="…",scope="…"`), whose
/// quoted values may hold commas; None for another scheme.
fn bearer_challenge(header: &str) -> Option<HashMap<String, String>> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            return Some(params);
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        params.insert(key, value.trim().to_string());
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
    fn bearer_challenges_are_read() {
        let c = bearer_challenge(
            r#"Bearer realm="http://127.0.0.1:8080/registry/token",service="kiln",scope="repository:red/app:pull,push",error="insufficient_scope""#,
        )
        .unwrap();
        assert_eq!(c["realm"], "http://127.0.0.1:8080/registry/token");
        assert_eq!(c["service"], "kiln");
        assert_eq!(c["scope"], "repository:red/app:pull,push");
        assert_eq!(c["error"], "insufficient_scope");
        let c = bearer_challenge(r#"bearer realm=x, scope="a\"b""#).unwrap();
        assert_eq!((c["realm"].as_str(), c["scope"].as_str()), ("x", "a\"b"));
        assert!(bearer_challenge(r#"Basic realm="registry""#).is_none());
        assert!(bearer_challenge("Bearer").is_none());
        assert_eq!(bearer_challenge("Bearer ,,=").unwrap().len(), 0);
        assert_eq!(
            bearer_challenge(r#"Bearer realm="unterminated"#).unwrap()["realm"],
            "unterminated"
        );
    }

    #[test]
    fn the_scope_of_a_request_is_predicted() {
        use reqwest::Method;
        let cases = [
            (Method::GET, "/v2/_catalog", Some("registry:catalog:*")),
            (
                Method::GET,
                "/v2/red/app/manifests/v1",
                Some("repository:red/app:pull"),
            ),
            (
                Method::GET,
                "/v2/red/a/b/tags/list",
                Some("repository:red/a/b:pull"),
            ),
            (
                Method::DELETE,
                "/v2/red/app/manifests/sha256:ab",
                Some("repository:red/app:delete"),
            ),
            (
                Method::GET,
                "/v2/red/manifests/tags/list",
                Some("repository:red/manifests:pull"),
            ),
            (Method::GET, "/v2/", None),
            (Method::GET, "/other", None),
        ];
        for (method, path, want) in cases {
            assert_eq!(scope_for(&method, path).as_deref(), want, "{method} {path}");
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
