//! bollard: build an image from a tar context, push it, read the digest. The daemon's API version is
//! negotiated on first use (Docker 20.10 speaks 1.41).

use std::collections::HashMap;
use std::sync::Arc;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{BuildInfoAux, ImageId};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, BuilderVersion, CreateImageOptionsBuilder, PushImageOptionsBuilder,
    TagImageOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::sync::OnceCell;

use std::time::{Duration, Instant};

use crate::domain::builder::Builder;

use super::buildkit_progress::Progress;
use super::context::{ContextError, ContextPlan, ContextStream, ContextSummary};
use super::log::{BuildLog, LineBuffer};

#[derive(Clone, Default)]
pub struct DockerClient {
    inner: Arc<OnceCell<Docker>>,
}

impl DockerClient {
    /// Uses `DOCKER_HOST` or the local socket; nothing is contacted until first use.
    pub fn from_env() -> Self {
        DockerClient::default()
    }

    pub async fn client(&self) -> anyhow::Result<Docker> {
        let docker = self
            .inner
            .get_or_try_init(|| async {
                let docker = Docker::connect_with_defaults()?;
                docker.negotiate_version().await
            })
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the Docker daemon: {}", one_line(&e)))?;
        Ok(docker.clone())
    }

    /// The daemon's version and API version, for /healthz.
    pub async fn ping(&self) -> anyhow::Result<String> {
        let docker = self.client().await?;
        let v = docker
            .version()
            .await
            .map_err(|e| anyhow::anyhow!("Docker daemon: {}", one_line(&e)))?;
        Ok(format!(
            "Docker {} (API {})",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default()
        ))
    }
}

/// One line from a bollard error, without its wrapper text.
pub fn one_line(e: &bollard::errors::Error) -> String {
    use bollard::errors::Error as E;
    let text = match e {
        E::DockerStreamError { error } => error.clone(),
        E::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The label kiln sets on every image it builds: the image's name without its tag
/// (`io.kiln.repository=localhost:5000/acme/api`). The local cache cap prunes only images carrying it
/// under kiln's own registry, tagged or not (a build that moved a tag leaves the old image untagged),
/// so two kilns sharing a Docker daemon never prune each other's images.
pub const REPOSITORY_LABEL: &str = "io.kiln.repository";

/// `registry/ns/repo:tag` → `registry/ns/repo` (a registry's `:port` is kept).
pub fn image_repository(image_ref: &str) -> &str {
    match image_ref.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name,
        _ => image_ref,
    }
}

/// What to build besides the context: the tag, and the rule's settings as the daemon takes them
/// (issue 9). The Dockerfile is the context plan's.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// `{registry}/{namespace}/{repo}:{tag}`.
    pub image_ref: String,
    /// The rule's build arguments plus `KILN_COMMIT`, `KILN_REF`, `KILN_TAG`.
    pub build_args: HashMap<String, String>,
    /// Labels for the classic builder's `labels` option (one step each): empty when kiln's labels
    /// are in its copy of the Dockerfile (`ContextPlan::label`).
    pub labels: HashMap<String, String>,
    /// `""`: the last stage.
    pub target: String,
    pub no_cache: bool,
    /// Images whose layers may be used as cache (`--cache-from`).
    pub cache_from: Vec<String>,
    /// Credentials per registry host for the images the build pulls (`X-Registry-Config`).
    pub registry_credentials: HashMap<String, DockerCredentials>,
    /// The server's memory and CPU limits (issue 11).
    pub limits: crate::domain::build_limits::BuildLimits,
    /// The `RUN` steps' network mode; None: the daemon's default.
    pub network_mode: Option<&'static str>,
    /// The daemon's builder this build runs on (`Builder::for_build`).
    pub builder: Builder,
}

/// What a build made: the image id, and the context as sent.
pub struct Built {
    pub image_id: String,
    pub context: ContextSummary,
    /// When the context producer had written the whole tar into the pipe (the daemon has all
    /// of it soon after: the pipe holds a few chunks).
    pub context_sent: Instant,
}

/// A build the daemon did not finish: why, and when the whole context had been sent, if it had
/// (the build's stage timings say where its time went, failed or not).
#[derive(Debug)]
pub struct BuildFailure {
    pub reason: String,
    pub context_sent: Option<Instant>,
}

/// How many times a build runs when the classic builder loses a cached image (see [`build_image`]).
const LOST_IMAGE_ATTEMPTS: u32 = 3;

/// Builds the context with BuildKit or the classic builder (`options.builder`), its tar streamed
/// from `context` while the daemon reads it, every output line streamed into the build log.
/// Returns the image id; any error in the stream is the build's failure reason.
pub async fn build_image(
    docker: &Docker,
    context: &ContextPlan,
    options: &BuildOptions,
    log: &mut BuildLog,
) -> Result<Built, BuildFailure> {
    let mut context_sent = None;
    let mut attempt = 1;
    let result = loop {
        match build_once(docker, context, options, log, &mut context_sent).await {
            // The classic builder can lose an image while it looks through its cache, when that
            // image is removed meanwhile (another build's clean-up, `docker image prune`;
            // moby/moby#18976); for a `FROM scratch` step it looks through every image without a
            // parent, which every BuildKit-built image is. Nothing in the build was wrong: it
            // runs again, and that image is gone by then.
            Err(e) if e.starts_with("unable to find image") && attempt < LOST_IMAGE_ATTEMPTS => {
                attempt += 1;
                log.line(&format!(
                    "The Docker daemon lost a cached image during the build ({e}); building again."
                ))
                .await;
            }
            other => break other,
        }
    };
    result.map_err(|reason| BuildFailure {
        reason,
        context_sent,
    })
}

/// One build request; `context_sent` is set once the whole context is in the pipe.
async fn build_once(
    docker: &Docker,
    context: &ContextPlan,
    o: &BuildOptions,
    log: &mut BuildLog,
    context_sent: &mut Option<Instant>,
) -> Result<Built, String> {
    let mut options = BuildImageOptionsBuilder::default()
        .dockerfile(&context.dockerfile)
        .t(&o.image_ref)
        .labels(&o.labels)
        .nocache(o.no_cache);
    if !o.target.is_empty() {
        options = options.target(&o.target);
    }
    if !o.cache_from.is_empty() {
        options = options.cachefrom(&o.cache_from);
    }
    if let Some(mode) = o.network_mode {
        options = options.networkmode(mode);
    }
    // What the session offers BuildKit when it asks for a registry's credentials: user and
    // password only (a kiln-signed token cannot be offered there; the images it would pull are
    // pulled into the local store before the build, see `pull_missing_base_images`).
    let mut credentials = o.registry_credentials.clone();
    let mut build_args = o.build_args.clone();
    match o.builder {
        Builder::BuildKit => {
            // The image's config carries its cache keys: a later build given it as
            // `cache_from` (pulled into an empty store) reuses its steps.
            build_args.insert("BUILDKIT_INLINE_CACHE".into(), "1".into());
            credentials.retain(|_, c| c.username.is_some() && c.password.is_some());
            let session = format!("kiln-{}", uuid::Uuid::new_v4().simple());
            options = options
                .version(BuilderVersion::BuilderBuildKit)
                .session(&session);
        }
        Builder::Classic => {
            options = options
                .rm(true)
                .forcerm(true)
                .version(BuilderVersion::BuilderV1);
            // Limits (issue 11): swap counts in the memory limit, so the build cannot swap past it.
            if let Some(memory) = o.limits.memory_option() {
                options = options.memory(memory).memswap(memory);
            }
            if let Some(shares) = o.limits.cpu_shares {
                options = options.cpushares(i32::try_from(shares).unwrap_or(i32::MAX));
            }
        }
    }
    let options = options.buildargs(&build_args).build();
    let started = Instant::now();
    let ContextStream {
        chunks,
        mut finished,
    } = context.stream();
    let body = bollard::body_try_stream(tokio_stream::wrappers::ReceiverStream::new(chunks));
    let credentials = (!credentials.is_empty()).then_some(credentials);
    let mut stream = docker.build_image(options, credentials, Some(body));
    let mut progress = Progress::default();
    let mut sent: Option<(ContextSummary, Instant)> = None;
    // The producer stopped without the whole tar: the build fails with its reason, unless it
    // only saw the daemon stop reading (then the daemon's own error says why).
    let mut producer_failed: Option<ContextError> = None;
    let mut image_id = None;
    let mut lines = LineBuffer::default();
    // With a memory limit, the daemon's `oom` events tell an out-of-memory kill from another one.
    let oom = o.limits.memory.is_some().then(|| OomWatch::start(docker));
    let mut step_containers: Vec<String> = Vec::new();
    let daemon_error = loop {
        let item = tokio::select! {
            biased;
            result = &mut finished, if sent.is_none() && producer_failed.is_none() => {
                match result {
                    Ok(Ok(summary)) => {
                        log_context_sent(log, &summary, started.elapsed()).await;
                        let now = Instant::now();
                        *context_sent = Some(now);
                        sent = Some((summary, now));
                    }
                    Ok(Err(e)) if e.is_reader_gone() => producer_failed = Some(e),
                    Ok(Err(e)) => return Err(context_failure(&e)),
                    Err(_) => return Err("the build context producer stopped".into()),
                }
                continue;
            }
            item = stream.next() => item,
        };
        let Some(item) = item else { break None };
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    let complete = lines.push(&text);
                    step_containers.extend(
                        complete
                            .iter()
                            .filter_map(|l| step_container(l))
                            .map(str::to_string),
                    );
                    log.lines(complete.iter().map(String::as_str)).await;
                }
                if let Some(detail) = info.error_detail {
                    break Some(detail.message.unwrap_or_else(|| "build failed".into()));
                }
                match info.aux {
                    Some(BuildInfoAux::Default(ImageId { id: Some(id) })) => image_id = Some(id),
                    Some(BuildInfoAux::BuildKit(status)) => {
                        log.lines(progress.lines(&status).iter().map(String::as_str))
                            .await;
                    }
                    _ => {}
                }
            }
            Err(e) => break Some(one_line(&e)),
        }
    };
    log.lines(progress.finish().iter().map(String::as_str))
        .await;
    log.flush_partial(lines.take()).await;
    // The request is over: a producer still writing sees it now and stops.
    drop(stream);
    if sent.is_none() && producer_failed.is_none() {
        match finished.await {
            Ok(Ok(summary)) => {
                log_context_sent(log, &summary, started.elapsed()).await;
                let now = Instant::now();
                *context_sent = Some(now);
                sent = Some((summary, now));
            }
            // A broken context ends the request early: the producer's reason is the real one.
            Ok(Err(e)) if !e.is_reader_gone() => return Err(context_failure(&e)),
            Ok(Err(e)) => producer_failed = Some(e),
            Err(_) => return Err("the build context producer stopped".into()),
        }
    }
    if let Some(error) = daemon_error {
        if let Some(oom) = oom
            && crate::domain::build_limits::step_killed(&error)
            && oom.killed_any(&step_containers).await
            && let Some(reason) = o.limits.out_of_memory(&error)
        {
            return Err(reason);
        }
        return Err(error);
    }
    let Some((context, context_sent)) = sent else {
        let reason = producer_failed.map_or_else(|| "unknown".to_string(), |e| e.to_string());
        return Err(format!(
            "the Docker daemon ended the build before reading the whole context ({reason})"
        ));
    };
    let image_id =
        image_id.ok_or_else(|| "the Docker daemon ended the build without an image".to_string())?;
    Ok(Built {
        image_id,
        context,
        context_sent,
    })
}

/// The containers the kernel's OOM killer hit since a build started (Docker's `oom` events), read
/// while the build runs.
struct OomWatch {
    seen: tokio::sync::watch::Receiver<OomEvents>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct OomEvents {
    ids: Vec<String>,
    /// The event stream ended or failed: what was not seen may have happened.
    unavailable: bool,
}

/// How long an `oom` event may trail the build's error.
const OOM_EVENT_WAIT: Duration = Duration::from_secs(3);

impl OomWatch {
    fn start(docker: &Docker) -> OomWatch {
        use bollard::query_parameters::EventsOptionsBuilder;
        let (tx, seen) = tokio::sync::watch::channel(OomEvents::default());
        let filters = HashMap::from([("type", vec!["container"]), ("event", vec!["oom"])]);
        // From a second before now: an event the daemon sent before the request was set up is
        // still replayed.
        let since = (chrono::Utc::now().timestamp() - 1).to_string();
        let options = EventsOptionsBuilder::default()
            .filters(&filters)
            .since(&since)
            .build();
        let docker = docker.clone();
        let task = tokio::spawn(async move {
            let mut events = docker.events(Some(options));
            loop {
                match events.next().await {
                    Some(Ok(event)) => {
                        if let Some(id) = event.actor.and_then(|a| a.id) {
                            tx.send_modify(|s| s.ids.push(id));
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %one_line(&e), "cannot read the Docker daemon's oom events");
                        tx.send_modify(|s| s.unavailable = true);
                        return;
                    }
                    None => {
                        tx.send_modify(|s| s.unavailable = true);
                        return;
                    }
                }
            }
        });
        OomWatch { seen, task }
    }

    /// Whether one of `containers` (ids or their 12-character prefixes) was OOM-killed; waits a
    /// little for the event. When the events cannot be read, a killed step counts as one.
    async fn killed_any(mut self, containers: &[String]) -> bool {
        let hit = |s: &OomEvents| {
            s.unavailable
                || s.ids
                    .iter()
                    .any(|id| containers.iter().any(|c| id.starts_with(c.as_str())))
        };
        let found = tokio::time::timeout(OOM_EVENT_WAIT, self.seen.wait_for(hit))
            .await
            .is_ok_and(|r| r.is_ok());
        self.task.abort();
        found
    }
}

impl Drop for OomWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn context_failure(error: &ContextError) -> String {
    format!("cannot make the build context: {error}")
}

async fn log_context_sent(log: &mut BuildLog, summary: &ContextSummary, took: Duration) {
    log.line(&format!(
        "Context sent in {:.1} s: {} files, {} bytes ({} bytes of tar)",
        took.as_secs_f64(),
        summary.files,
        summary.bytes,
        summary.tar_bytes
    ))
    .await;
}

/// The credentials the daemon pushes (and pulls) `repository` of kiln's registry with: the
/// configured basic credentials when there are (`KILN_REGISTRY_USERNAME`), otherwise a registry
/// token kiln signs for `repository:{repository}:pull,push`, which the daemon sends as a Bearer
/// token when the registry asks for one (an open registry never asks, and never sees it).
pub fn registry_credentials(
    config: &crate::config::Config,
    tokens: &crate::registry::token::TokenIssuer,
    repository: &str,
) -> DockerCredentials {
    use crate::registry::token::{Requester, grant, parse_scopes};
    use secrecy::ExposeSecret;
    let serveraddress = Some(config.registry.clone());
    if config.registry_username.is_some() {
        return DockerCredentials {
            username: config.registry_username.clone(),
            password: config
                .registry_password
                .as_ref()
                .map(|p| p.expose_secret().to_string()),
            serveraddress,
            ..Default::default()
        };
    }
    let access = grant(
        &Requester::Kiln,
        &parse_scopes(&format!("repository:{repository}:pull,push")),
        false,
    );
    match tokens.issue("kiln", &access) {
        Ok(issued) => DockerCredentials {
            registrytoken: Some(issued.token),
            serveraddress,
            ..Default::default()
        },
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), repository, "cannot sign a registry token");
            DockerCredentials {
                serveraddress,
                ..Default::default()
            }
        }
    }
}

/// The credentials a build of namespace `namespace` pulls its `FROM` images of kiln's registry
/// with: the configured basic credentials, or a token kiln signs for pulling those of
/// `base_images` that are in kiln's registry and that a `read` token of `namespace` may pull (plus
/// any, when anonymous pulls are on); a build never pulls another namespace's private images.
/// Empty when none of the base images is in kiln's registry.
pub fn build_credentials(
    config: &crate::config::Config,
    tokens: &crate::registry::token::TokenIssuer,
    namespace: &str,
    base_images: &[String],
) -> HashMap<String, DockerCredentials> {
    use crate::http::auth::{Caller, Role};
    use crate::registry::token::{Requester, Scope, ScopeKind, grant};
    let scopes: Vec<Scope> = in_registry(&config.registry, base_images)
        .map(|(_, name)| {
            let name = name.split_once('@').map_or(name, |(n, _)| n);
            match name.rsplit_once(':') {
                Some((n, tag)) if !tag.contains('/') => n,
                _ => name,
            }
        })
        .map(|name| Scope {
            kind: ScopeKind::Repository,
            name: name.to_string(),
            actions: vec!["pull".to_string()],
        })
        .collect();
    if scopes.is_empty() {
        return HashMap::new();
    }
    if config.registry_username.is_some() {
        let basic = registry_credentials(config, tokens, "");
        return HashMap::from([(config.registry.clone(), basic)]);
    }
    let reader = Requester::Caller(Caller {
        role: Role::Read,
        namespace: Some(namespace.to_string()),
        token_id: None,
        token_name: format!("kiln (build in {namespace})"),
    });
    let mut access = grant(&reader, &scopes, false);
    for extra in grant(&Requester::Anonymous, &scopes, tokens.anonymous_pull) {
        if !access.contains(&extra) {
            access.push(extra);
        }
    }
    let credentials = DockerCredentials {
        registrytoken: match tokens.issue("kiln", &access) {
            Ok(issued) => Some(issued.token),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot sign a registry token");
                None
            }
        },
        serveraddress: Some(config.registry.clone()),
        ..Default::default()
    };
    HashMap::from([(config.registry.clone(), credentials)])
}

/// Pushes `image:tag`, logging the daemon's status lines (not per-layer progress); returns the digest.
pub async fn push_image(
    docker: &Docker,
    image: &str,
    tag: &str,
    credentials: DockerCredentials,
    log: &mut BuildLog,
) -> Result<String, String> {
    let options = PushImageOptionsBuilder::default().tag(tag).build();
    let mut stream = docker.push_image(image, Some(options), Some(credentials));
    let mut digest = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(detail) = info.error_detail {
                    return Err(detail.message.unwrap_or_else(|| "push failed".into()));
                }
                if let Some(status) = info.status
                    && info.progress_detail.is_none()
                {
                    if let Some(d) = digest_from_status(&status) {
                        digest = Some(d);
                    }
                    log.line(&status).await;
                }
            }
            Err(e) => return Err(one_line(&e)),
        }
    }
    digest.ok_or_else(|| "the Docker daemon did not report the pushed digest".to_string())
}

/// Gives the local image `image_ref` another tag: `{image}:{tag}`.
pub async fn tag_image(
    docker: &Docker,
    image_ref: &str,
    image: &str,
    tag: &str,
) -> Result<(), String> {
    let options = TagImageOptionsBuilder::default()
        .repo(image)
        .tag(tag)
        .build();
    docker
        .tag_image(image_ref, Some(options))
        .await
        .map_err(|e| one_line(&e))
}

/// Whether the local store has `image_ref` (a name:tag, name@digest or id).
pub async fn has_image(docker: &Docker, image_ref: &str) -> Result<bool, String> {
    match docker.inspect_image(image_ref).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(one_line(&e)),
    }
}

/// Before a BuildKit build: pulls the `FROM` images of kiln's registry (`registry`) that the local
/// store lacks, with the build's credentials (`build_credentials`). The daemon's BuildKit prefers
/// local images, as the classic builder does, but asks the session for credentials, which cannot
/// carry a kiln-signed token; pulled here, they are local. An image the build may not pull fails it
/// with the registry's answer, as the classic builder's `FROM` would.
pub async fn pull_missing_base_images(
    docker: &Docker,
    registry: &str,
    base_images: &[String],
    credentials: &HashMap<String, DockerCredentials>,
    log: &mut BuildLog,
) -> Result<(), String> {
    let Some(credentials) = credentials.get(registry) else {
        return Ok(());
    };
    for (image, _) in in_registry(registry, base_images) {
        if image.contains('$') {
            continue;
        }
        let image = pull_reference(image);
        if has_image(docker, &image).await? {
            continue;
        }
        log.line(&format!("Pulling the base image {image}")).await;
        pull_image(docker, &image, credentials.clone())
            .await
            .map_err(|e| format!("cannot pull the base image {image}: {e}"))?;
    }
    Ok(())
}

/// The images of `images` in the registry `registry` (`host:port`), each with its path there
/// (`registry/red/base:1` → `red/base:1`).
fn in_registry<'a>(
    registry: &str,
    images: &'a [String],
) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    let prefix = format!("{registry}/");
    images
        .iter()
        .filter_map(move |image| Some((image.as_str(), image.strip_prefix(&prefix)?)))
}

/// An image name as `docker pull` takes it: `:latest` when it names neither a tag nor a digest
/// (the daemon's pull API would otherwise pull every tag).
pub fn pull_reference(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// Pulls `image_ref` (`name@sha256:…` or `name:tag`) with the registry's credentials.
pub async fn pull_image(
    docker: &Docker,
    image_ref: &str,
    credentials: DockerCredentials,
) -> Result<(), String> {
    let options = CreateImageOptionsBuilder::default()
        .from_image(image_ref)
        .build();
    let mut stream = docker.create_image(Some(options), None, Some(credentials));
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(detail) = info.error_detail {
                    return Err(detail.message.unwrap_or_else(|| "pull failed".into()));
                }
            }
            Err(e) => return Err(one_line(&e)),
        }
    }
    Ok(())
}

/// The container a classic-builder step runs in, from its log line `" ---> Running in 0123456789ab"`.
pub fn step_container(line: &str) -> Option<&str> {
    let id = line.trim().strip_prefix("---> Running in ")?.trim();
    (id.len() >= 12 && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// Force-removes (killing first when running) the containers a stopped build ran its steps in. The
/// daemon removes them itself once it sees the build's request closed (Docker 20.10's classic builder
/// kills and removes the running step's container when the request context ends; `forcerm` removes
/// the others): this makes it certain and waits for it. Containers already gone are fine. Returns the
/// ones this call removed.
pub async fn remove_containers(docker: &Docker, ids: &[&str]) -> Vec<String> {
    use bollard::errors::Error as E;
    use bollard::query_parameters::RemoveContainerOptionsBuilder;
    let mut removed = Vec::new();
    for id in ids {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match docker.remove_container(id, Some(options)).await {
            Ok(()) => removed.push(id.to_string()),
            Err(E::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            // 409: the daemon is removing it already.
            Err(E::DockerResponseServerError {
                status_code: 409, ..
            }) => {}
            Err(e) => {
                tracing::warn!(container = id, error = %one_line(&e), "cannot remove a build container")
            }
        }
    }
    removed
}

/// `"main: digest: sha256:… size: 528"` → `sha256:…`.
pub fn digest_from_status(status: &str) -> Option<String> {
    let rest = status.split("digest: ").nth(1)?;
    let digest = rest.split_whitespace().next()?;
    let (algo, hex) = digest.split_once(':')?;
    (algo == "sha256" && hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| digest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `access` claim of the registry token in `credentials` (read without verifying).
    fn access_of(credentials: &DockerCredentials) -> serde_json::Value {
        use base64::Engine;
        let token = credentials.registrytoken.as_deref().expect("a token");
        let payload = token.split('.').nth(1).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        claims["access"].clone()
    }

    #[test]
    fn builds_pull_base_images_of_their_own_namespace() {
        use crate::registry::token::{IssuerSettings, TokenIssuer};
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let issuer = |anonymous_pull| {
            TokenIssuer::new(
                &key.serialize_der(),
                &rcgen::PublicKeyData::subject_public_key_info(&key),
                IssuerSettings {
                    issuer: "kiln".into(),
                    service: "kiln".into(),
                    lifetime: Duration::from_secs(300),
                    anonymous_pull,
                },
            )
        };
        let vars = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let config =
            crate::config::Config::load(None, &vars(&[("KILN_REGISTRY", "reg:5000")])).unwrap();
        let images: Vec<String> = [
            "reg:5000/red/base:1",
            "reg:5000/red/a/b",
            "reg:5000/blue/x@sha256:0123",
            "reg:5000/RED/bad:1",
            "other:5000/red/base:1",
            "build",
            "$BASE",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let creds = build_credentials(&config, &issuer(false), "red", &images);
        assert_eq!(creds.len(), 1);
        let red = &creds["reg:5000"];
        assert_eq!(red.serveraddress.as_deref(), Some("reg:5000"));
        assert_eq!(
            access_of(red),
            serde_json::json!([
                {"type": "repository", "name": "red/base", "actions": ["pull"]},
                {"type": "repository", "name": "red/a/b", "actions": ["pull"]},
            ])
        );
        let open = build_credentials(&config, &issuer(true), "red", &images);
        assert_eq!(
            access_of(&open["reg:5000"]).as_array().unwrap().len(),
            3,
            "with anonymous pulls, blue/x too: {}",
            access_of(&open["reg:5000"])
        );
        // No base image in kiln's registry: no credentials at all.
        assert!(build_credentials(&config, &issuer(false), "red", &images[4..]).is_empty());
        // Basic credentials configured: those.
        let basic = crate::config::Config::load(
            None,
            &vars(&[
                ("KILN_REGISTRY", "reg:5000"),
                ("KILN_REGISTRY_USERNAME", "kiln"),
                ("KILN_REGISTRY_PASSWORD", "pw"),
            ]),
        )
        .unwrap();
        let creds = build_credentials(&basic, &issuer(false), "red", &images);
        let c = &creds["reg:5000"];
        assert_eq!(
            (
                c.username.as_deref(),
                c.password.as_deref(),
                &c.registrytoken
            ),
            (Some("kiln"), Some("pw"), &None)
        );
        // Pushes: a token for pull and push of the repository, or the basic credentials.
        let push = registry_credentials(&config, &issuer(false), "red/app");
        assert_eq!(
            access_of(&push),
            serde_json::json!([{"type": "repository", "name": "red/app", "actions": ["pull", "push"]}])
        );
        assert!(
            registry_credentials(&basic, &issuer(false), "red/app")
                .registrytoken
                .is_none()
        );
    }

    #[test]
    fn step_containers_are_read_from_the_build_output() {
        assert_eq!(
            step_container(" ---> Running in 766d7a53a460"),
            Some("766d7a53a460")
        );
        assert_eq!(
            step_container("---> Running in 766d7a53a460\n"),
            Some("766d7a53a460")
        );
        for other in [
            "",
            " ---> 59d58d5efbde",
            " ---> Running in ",
            " ---> Running in xyz123456789",
            "Step 2/2 : RUN echo ---> Running in 766d7a53a460",
            "Removing intermediate container 766d7a53a460",
        ] {
            assert_eq!(step_container(other), None, "{other}");
        }
    }

    #[test]
    fn pull_references_name_one_tag() {
        assert_eq!(pull_reference("r:5000/red/base"), "r:5000/red/base:latest");
        assert_eq!(pull_reference("r:5000/red/base:1"), "r:5000/red/base:1");
        assert_eq!(
            pull_reference("r:5000/red/base@sha256:abc"),
            "r:5000/red/base@sha256:abc"
        );
        assert_eq!(pull_reference("base"), "base:latest");
    }

    #[test]
    fn image_repository_drops_only_the_tag() {
        assert_eq!(
            image_repository("localhost:5000/acme/api:main"),
            "localhost:5000/acme/api"
        );
        assert_eq!(
            image_repository("registry.example/acme/api:v1.2"),
            "registry.example/acme/api"
        );
        assert_eq!(
            image_repository("localhost:5000/acme/api"),
            "localhost:5000/acme/api"
        );
    }

    #[test]
    fn digest_is_read_from_the_push_status_line() {
        let d = "sha256:".to_string() + &"ab".repeat(32);
        assert_eq!(
            digest_from_status(&format!("main: digest: {d} size: 528")),
            Some(d.clone())
        );
        assert_eq!(
            digest_from_status(&format!("v1.2-abc1234: digest: {d} size: 1")),
            Some(d)
        );
        for bad in [
            "",
            "Pushed",
            "main: digest: ",
            "main: digest: sha256:short size: 1",
            "main: digest: md5:00 size: 1",
            "The push refers to repository [localhost:5000/a/b]",
        ] {
            assert_eq!(digest_from_status(bad), None, "{bad}");
        }
    }
}
