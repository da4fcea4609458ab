//! bollard: build an image from a tar context, push it, read the digest. The daemon's API version is
//! negotiated on first use (Docker 20.10 speaks 1.41).

use std::sync::Arc;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, BuilderVersion, PushImageOptionsBuilder,
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

/// Builds the context with the classic builder, streaming every output line into the build log.
/// Returns the image id; any error in the stream is the build's failure reason.
pub async fn build_image(
    docker: &Docker,
    context_tar: Vec<u8>,
    dockerfile: &str,
    image_ref: &str,
    log: &mut BuildLog,
) -> Result<String, String> {
    let context = bytes::Bytes::from(context_tar);
    let result = build_once(docker, context.clone(), dockerfile, image_ref, log).await;
    match result {
        // The classic builder can lose an image it has just taken from its cache when that image
        // is removed meanwhile (another build's clean-up, `docker image prune`; moby/moby#18976).
        // Nothing in the build was wrong: it runs once more, and the cache entry is gone by then.
        Err(e) if e.starts_with("unable to find image") => {
            log.line(&format!(
                "The Docker daemon lost a cached image during the build ({e}); building again."
            ))
            .await;
            build_once(docker, context, dockerfile, image_ref, log).await
        }
        other => other,
    }
}

async fn build_once(
    docker: &Docker,
    context: bytes::Bytes,
    dockerfile: &str,
    image_ref: &str,
    log: &mut BuildLog,
) -> Result<String, String> {
    let options = BuildImageOptionsBuilder::default()
        .dockerfile(dockerfile)
        .t(image_ref)
        // Issue 9: the local cache cap finds the images kiln built by this label.
        .labels(&std::collections::HashMap::from([(
            REPOSITORY_LABEL,
            image_repository(image_ref),
        )]))
        .rm(true)
        .forcerm(true)
        .version(BuilderVersion::BuilderV1)
        .build();
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
