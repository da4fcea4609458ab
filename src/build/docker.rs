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

use std::time::{Duration, Instant};

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

/// What a build made: the image id, and the context as sent.
pub struct Built {
    pub image_id: String,
    pub context: ContextSummary,
    /// When the context producer had written the whole tar into the pipe (the daemon has all
    /// of it soon after: the pipe holds a few chunks).
    pub context_sent: Instant,
}

/// Builds the context with the classic builder, its tar streamed from `context` while the daemon
/// reads it, every output line streamed into the build log. Returns the image id; any error in
/// the stream is the build's failure reason.
pub async fn build_image(
    docker: &Docker,
    context: &ContextPlan,
    image_ref: &str,
    log: &mut BuildLog,
) -> Result<Built, String> {
    let result = build_once(docker, context, image_ref, log).await;
    match result {
        // The classic builder can lose an image it has just taken from its cache when that image
        // is removed meanwhile (another build's clean-up, `docker image prune`; moby/moby#18976).
        // Nothing in the build was wrong: it runs once more, and the cache entry is gone by then.
        Err(e) if e.starts_with("unable to find image") => {
            log.line(&format!(
                "The Docker daemon lost a cached image during the build ({e}); building again."
            ))
            .await;
            build_once(docker, context, image_ref, log).await
        }
        other => other,
    }
}

async fn build_once(
    docker: &Docker,
    context: &ContextPlan,
    image_ref: &str,
    log: &mut BuildLog,
) -> Result<Built, String> {
    let options = BuildImageOptionsBuilder::default()
        .dockerfile(&context.dockerfile)
        .t(image_ref)
        .rm(true)
        .forcerm(true)
        .version(BuilderVersion::BuilderV1)
        .build();
    let started = Instant::now();
    let ContextStream {
        chunks,
        mut finished,
    } = context.stream();
    let body = bollard::body_try_stream(tokio_stream::wrappers::ReceiverStream::new(chunks));
    let mut stream = docker.build_image(options, None, Some(body));
    let mut sent: Option<(ContextSummary, Instant)> = None;
    // The producer stopped without the whole tar: the build fails with its reason, unless it
    // only saw the daemon stop reading (then the daemon's own error says why).
    let mut producer_failed: Option<ContextError> = None;
    let mut image_id = None;
    let mut lines = LineBuffer::default();
    let daemon_error = loop {
        let item = tokio::select! {
            biased;
            result = &mut finished, if sent.is_none() && producer_failed.is_none() => {
                match result {
                    Ok(Ok(summary)) => {
                        log_context_sent(log, &summary, started.elapsed()).await;
                        sent = Some((summary, Instant::now()));
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
                    log.lines(complete.iter().map(String::as_str)).await;
                }
                if let Some(detail) = info.error_detail {
                    break Some(detail.message.unwrap_or_else(|| "build failed".into()));
                }
                if let Some(id) = info.aux.and_then(|a| a.id) {
                    image_id = Some(id);
                }
            }
            Err(e) => break Some(one_line(&e)),
        }
    };
    log.flush_partial(lines.take()).await;
    // The request is over: a producer still writing sees it now and stops.
    drop(stream);
    if sent.is_none() && producer_failed.is_none() {
        match finished.await {
            Ok(Ok(summary)) => {
                log_context_sent(log, &summary, started.elapsed()).await;
                sent = Some((summary, Instant::now()));
            }
            // A broken context ends the request early: the producer's reason is the real one.
            Ok(Err(e)) if !e.is_reader_gone() => return Err(context_failure(&e)),
            Ok(Err(e)) => producer_failed = Some(e),
            Err(_) => return Err("the build context producer stopped".into()),
        }
    }
    if let Some(error) = daemon_error {
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
