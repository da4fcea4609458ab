//! bollard: build an image from a tar context, push it, read the digest. The daemon's API version is
//! negotiated on first use (Docker 20.10 speaks 1.41).

use std::collections::HashMap;
use std::sync::Arc;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, BuilderVersion, CreateImageOptionsBuilder, PushImageOptionsBuilder,
    TagImageOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::sync::OnceCell;

use super::log::BuildLog;

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

/// What to build besides the context: the Dockerfile, the tag, and the rule's settings as the
/// daemon takes them (issue 9).
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub dockerfile: String,
    /// `{registry}/{namespace}/{repo}:{tag}`.
    pub image_ref: String,
    /// The rule's build arguments plus `KILN_COMMIT`, `KILN_REF`, `KILN_TAG`.
    pub build_args: HashMap<String, String>,
    /// The OCI labels.
    pub labels: HashMap<String, String>,
    /// `""`: the last stage.
    pub target: String,
    pub no_cache: bool,
    /// Images whose layers may be used as cache (`--cache-from`).
    pub cache_from: Vec<String>,
}

/// Builds the context with the classic builder, streaming every output line into the build log.
/// Returns the image id; any error in the stream is the build's failure reason.
pub async fn build_image(
    docker: &Docker,
    context_tar: Vec<u8>,
    options: &BuildOptions,
    log: &mut BuildLog,
) -> Result<String, String> {
    let context = bytes::Bytes::from(context_tar);
    let result = build_once(docker, context.clone(), options, log).await;
    match result {
        // The classic builder can lose an image it has just taken from its cache when that image
        // is removed meanwhile (another build's clean-up, `docker image prune`; moby/moby#18976).
        // Nothing in the build was wrong: it runs once more, and the cache entry is gone by then.
        Err(e) if e.starts_with("unable to find image") => {
            log.line(&format!(
                "The Docker daemon lost a cached image during the build ({e}); building again."
            ))
            .await;
            build_once(docker, context, options, log).await
        }
        other => other,
    }
}

async fn build_once(
    docker: &Docker,
    context: bytes::Bytes,
    o: &BuildOptions,
    log: &mut BuildLog,
) -> Result<String, String> {
    let mut options = BuildImageOptionsBuilder::default()
        .dockerfile(&o.dockerfile)
        .t(&o.image_ref)
        .rm(true)
        .forcerm(true)
        .buildargs(&o.build_args)
        .labels(&o.labels)
        .nocache(o.no_cache)
        .version(BuilderVersion::BuilderV1);
    if !o.target.is_empty() {
        options = options.target(&o.target);
    }
    if !o.cache_from.is_empty() {
        options = options.cachefrom(&o.cache_from);
    }
    let options = options.build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context)));
    let mut image_id = None;
    let mut pending = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    pending.push_str(&text);
                    if let Some(cut) = pending.rfind('\n') {
                        let complete: String = pending.drain(..=cut).collect();
                        log.lines(complete.lines()).await;
                    }
                }
                if let Some(detail) = info.error_detail {
                    let msg = detail.message.unwrap_or_else(|| "build failed".into());
                    log.flush_partial(&mut pending).await;
                    return Err(msg);
                }
                if let Some(id) = info.aux.and_then(|a| a.id) {
                    image_id = Some(id);
                }
            }
            Err(e) => {
                log.flush_partial(&mut pending).await;
                return Err(one_line(&e));
            }
        }
    }
    log.flush_partial(&mut pending).await;
    image_id.ok_or_else(|| "the Docker daemon ended the build without an image".to_string())
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
