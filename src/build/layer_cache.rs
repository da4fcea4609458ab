//! The layer cache when the local Docker store lost it (`cache_from`).

use bollard::auth::DockerCredentials;

use super::docker;
use super::log::BuildLog;
use crate::app::App;
use crate::db::{self, builds::BuildRow};

/// The layer cache when the local store lost it: the previous succeeded build of the same rule
/// pushed an image that is no longer here, so it is pulled from the registry and given to the
/// builder as `cache_from`. Nothing here fails the build: a problem is a log line.
pub async fn pull_previous_image(
    app: &App,
    docker: &bollard::Docker,
    build: &BuildRow,
    credentials: DockerCredentials,
    log: &mut BuildLog,
) -> Vec<String> {
    let Some(rule_id) = &build.rule_id else {
        return Vec::new();
    };
    let (image_ref, digest) = match db::builds::previous_success(&app.db, rule_id, &build.id).await
    {
        Ok(Some(previous)) => previous,
        Ok(None) => return Vec::new(),
        Err(e) => {
            log.line(&format!(
                "Layer cache: cannot look up the previous build ({e}); building without it"
            ))
            .await;
            return Vec::new();
        }
    };
    // `{registry}/{ns}/{repo}:{tag}` → `{registry}/{ns}/{repo}@{digest}`: exactly that image.
    let name = image_ref
        .rsplit_once(':')
        .map_or(image_ref.as_str(), |(n, _)| n);
    let by_digest = format!("{name}@{digest}");
    match docker::has_image(docker, &by_digest).await {
        Ok(true) => return Vec::new(), // still here: the builder finds its layers itself
        Ok(false) => {}
        Err(e) => {
            log.line(&format!(
                "Layer cache: cannot inspect {by_digest} ({e}); building without it"
            ))
            .await;
            return Vec::new();
        }
    }
    log.line(&format!(
        "Layer cache: the previous image {by_digest} is not in the local store; pulling it"
    ))
    .await;
    match docker::pull_image(docker, &by_digest, credentials).await {
        Ok(()) => {
            log.line(&format!("Layer cache: pulled {by_digest}")).await;
            vec![by_digest]
        }
        Err(e) => {
            log.line(&format!(
                "Layer cache: cannot pull {by_digest} ({e}); building without it"
            ))
            .await;
            Vec::new()
        }
    }
}
