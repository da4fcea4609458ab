//! `POST /registry/events`: the CNCF Distribution notification envelope. A manifest push with a tag
//! becomes an image version (source `push`, unless a build of that tag is running: the build records it),
//! provided the registry still holds that digest under that tag: a late notification is not recorded.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::db::{self, repos::RepoRow, versions::NewVersion, versions::Recorded};
use crate::domain::names::{validate_namespace_name, validate_repo_name};
use crate::domain::tag::is_valid_tag;
use crate::http::error::{ApiError, ApiResult};
use crate::rate_limit::{self, Peer, Surface};

pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// Media types of manifests (pushes of blobs and pulls are ignored).
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
];

/// How long the registry is told to wait when kiln cannot read a notified tag back from it.
const REGISTRY_RETRY_SECS: u64 = 30;

/// How long a notified tag may take to point at the notified manifest in the registry.
const TAG_LINK_WAIT: Duration = Duration::from_secs(3);

/// Largest envelope accepted (the registry sends small batches).
const MAX_ENVELOPE: usize = 5 * 1024 * 1024;

#[derive(Deserialize)]
struct Envelope {
    events: Vec<WireEvent>,
}

#[derive(Deserialize)]
struct WireEvent {
    id: String,
    action: String,
    target: Option<WireTarget>,
}

#[derive(Deserialize)]
struct WireTarget {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    digest: Option<String>,
    repository: Option<String>,
    tag: Option<String>,
}

/// A tagged manifest push, as the registry reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestPush {
    pub event_id: String,
    pub namespace: String,
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

/// The tagged manifest pushes of an envelope into `namespace/repository` names kiln can hold.
pub fn manifest_pushes(body: &[u8]) -> Result<Vec<ManifestPush>, String> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| format!("not a notification envelope: {e}"))?;
    Ok(envelope
        .events
        .into_iter()
        .filter(|e| e.action == "push")
        .filter_map(|e| {
            let t = e.target?;
            if !MANIFEST_TYPES.contains(&t.media_type.as_deref()?) {
                return None;
            }
            let (namespace, repository) = t
                .repository?
                .split_once('/')
                .map(|(n, r)| (n.to_string(), r.to_string()))?;
            if repository.contains('/') {
                return None;
            }
            let tag = t.tag.filter(|t| !t.is_empty())?;
            let digest = t.digest?;
            // What kiln stores must obey its rules: names it can hold, a tag Docker accepts, a
            // digest in the OCI grammar, an event id fit to deduplicate by. The registry checks
            // the same; anything else is not a push kiln can record.
            let fits = validate_namespace_name(&namespace).is_ok()
                && validate_repo_name(&repository).is_ok()
                && is_valid_tag(&tag)
                && is_digest(&digest)
                && !e.id.is_empty()
                && e.id.len() <= MAX_EVENT_ID
                && !e.id.chars().any(char::is_control);
            fits.then_some(ManifestPush {
                event_id: e.id,
                namespace,
                repository,
                tag,
                digest,
            })
        })
        .collect())
}

/// The longest registry event id kept (Distribution sends UUIDs).
const MAX_EVENT_ID: usize = 256;

/// `algorithm:encoded` as the OCI image spec writes digests: `[a-z0-9]+([+._-][a-z0-9]+)*` and
/// `[a-zA-Z0-9=_-]+`.
fn is_digest(s: &str) -> bool {
    let Some((algorithm, encoded)) = s.split_once(':') else {
        return false;
    };
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    algorithm.split(['+', '.', '_', '-']).all(component_ok)
        && !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
}

fn authorized(app: &App, headers: &HeaderMap) -> ApiResult<()> {
    let Some(token) = &app.config.registry_events_token else {
        return Err(ApiError::unauthorized(
            "registry events are refused: KILN_REGISTRY_EVENTS_TOKEN is not set on this kiln",
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Compare digests, so the time taken says nothing about the token.
    if Sha256::digest(given.as_bytes()) != Sha256::digest(token.expose_secret().as_bytes()) {
        return Err(ApiError::unauthorized(
            "wrong or missing Authorization: Bearer token",
        ));
    }
    Ok(())
}

pub async fn receive_registry_events(
    State(app): State<App>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(&app, &headers, body).await {
        Ok(r) => r,
        // A wrong events token counts against the address's budget, as a bad hook signature does
        // (429 past it); the registry's own authorized notifications are never limited.
        Err(e) => rate_limit::refuse(&app.rate_limits, Surface::Hooks, peer, e).into_response(),
    }
}

async fn handle(app: &App, headers: &HeaderMap, body: Body) -> ApiResult<Response> {
    authorized(app, headers)?;
    let body = axum::body::to_bytes(body, MAX_ENVELOPE)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is over {MAX_ENVELOPE} bytes"),
            )
        })?;
    let pushes =
        manifest_pushes(&body).map_err(|e| ApiError::bad_request("malformed_payload", e))?;
    let mut recorded = 0;
    for push in &pushes {
        if db::versions::registry_event_seen(&app.db, &push.event_id).await? {
            continue;
        }
        if apply_push(app, push).await? {
            recorded += 1;
        }
        db::versions::mark_registry_event(&app.db, &push.event_id).await?;
    }
    Ok((
        StatusCode::OK,
        axum::Json(json!({"manifest_pushes": pushes.len(), "new_versions": recorded})),
    )
        .into_response())
}

/// Records one pushed tag; true when it was a new version.
async fn apply_push(app: &App, push: &ManifestPush) -> ApiResult<bool> {
    let Some(repo) = ensure_repo(app, &push.namespace, &push.repository).await? else {
        tracing::info!(repo = %format!("{}/{}", push.namespace, push.repository), "registry push outside kiln's namespaces");
        return Ok(false);
    };
    if db::builds::running_with_tag(&app.db, &repo.id, &push.tag).await? {
        return Ok(false); // kiln's own push: the build records the version when it ends
    }
    // A notification can arrive long after its push: the registry retries the ones kiln missed
    // while it was down, by which time the tag may have moved on (a later build, a later push).
    // Only what the registry holds now is recorded, so a late notice never moves a tag back.
    let name = format!("{}/{}", push.namespace, push.repository);
    if !registry_holds(app, &name, push).await? {
        return Ok(false);
    }
    let recorded = crate::versions::record(
        app,
        &NewVersion {
            repository_id: &repo.id,
            tag: &push.tag,
            digest: &push.digest,
            source: "push",
            build_id: None,
            commit_sha: None,
        },
    )
    .await?;
    let new = recorded != Recorded::Unchanged;
    if new && repo.hidden {
        db::repos::set_hidden(&app.db, &repo.id, false).await?;
        tracing::info!(repo = %format!("{}/{}", push.namespace, push.repository), "docker push unhid the repository");
    }
    Ok(new)
}

/// Whether the registry holds the notified digest under the notified tag now. The registry sends a
/// push's notification once the manifest is stored but may link the tag to it a moment later, so a
/// tag that does not (yet) point at it is read again for up to [`TAG_LINK_WAIT`] before the
/// notification is taken for a stale one. A registry kiln cannot read is a 503: it sends again.
async fn registry_holds(app: &App, name: &str, push: &ManifestPush) -> ApiResult<bool> {
    let deadline = tokio::time::Instant::now() + TAG_LINK_WAIT;
    let mut pause = Duration::from_millis(25);
    loop {
        let now = app
            .registry
            .manifest_digest(name, &push.tag)
            .await
            .map_err(|e| {
                tracing::warn!(repo = %name, tag = %push.tag, error = %format!("{e:#}"), "cannot check a registry notification against the registry");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "registry_unavailable",
                    "cannot read the tag back from the registry; retry later",
                )
                .retry_after(REGISTRY_RETRY_SECS)
            })?;
        if now.as_deref() == Some(push.digest.as_str()) {
            return Ok(true);
        }
        if tokio::time::Instant::now() + pause > deadline {
            tracing::info!(
                repo = %name,
                tag = %push.tag,
                notified = %push.digest,
                registry = now.as_deref().unwrap_or("no such tag"),
                "registry notification is stale: the tag has moved on since; not recorded"
            );
            return Ok(false);
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
}

/// The kiln repository for a registry name: created as a plain repository on first push when its
/// namespace exists in kiln (as registries do); None for names outside kiln's namespaces or rules.
pub async fn ensure_repo(
    app: &App,
    namespace: &str,
    name: &str,
) -> Result<Option<RepoRow>, sqlx::Error> {
    if let Some(repo) = db::repos::by_name(&app.db, namespace, name).await? {
        return Ok(Some(repo));
    }
    let Some(ns) = db::namespaces::by_name(&app.db, namespace).await? else {
        return Ok(None);
    };
    if validate_repo_name(name).is_err() {
        return Ok(None);
    }
    let new = db::repos::NewRepo {
        namespace_id: &ns.id,
        name,
        summary: "",
        detail: "",
        category: "other",
    };
    match db::repos::insert(&app.db, &new).await {
        Ok(_) => {}
        Err(e) if db::is_constraint(&e, "") => {} // created meanwhile by another event
        Err(e) => return Err(e),
    }
    db::repos::by_name(&app.db, namespace, name).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_captured_envelope_gives_one_tagged_manifest_push() {
        let body = include_bytes!("../../tests/data/registry/manifest-push.json");
        let pushes = manifest_pushes(body).unwrap();
        assert_eq!(
            pushes,
            vec![ManifestPush {
                event_id: "58930423-7ca6-4cea-b6be-9848e0e1b2be".into(),
                namespace: "acme".into(),
                repository: "api".into(),
                tag: "v1.2.3".into(),
                digest: "sha256:637e57259834f2318aa09fe30f13806947935a05483d21268ec91e57e06d232d"
                    .into(),
            }]
        );
    }

    fn event(
        action: &str,
        media_type: &str,
        repository: &str,
        tag: Option<&str>,
    ) -> serde_json::Value {
        json!({"id": "e1", "action": action, "timestamp": "2026-11-23T11:42:09Z",
               "target": {"mediaType": media_type, "digest": "sha256:abc", "repository": repository, "tag": tag}})
    }

    #[test]
    fn only_tagged_manifest_pushes_count() {
        let manifest = "application/vnd.docker.distribution.manifest.v2+json";
        let cases = [
            (event("push", manifest, "acme/api", Some("v1")), 1),
            (
                event(
                    "push",
                    "application/vnd.oci.image.manifest.v1+json",
                    "acme/api",
                    Some("v1"),
                ),
                1,
            ),
            (
                event(
                    "push",
                    "application/vnd.oci.image.index.v1+json",
                    "acme/api",
                    Some("v1"),
                ),
                1,
            ),
            (event("pull", manifest, "acme/api", Some("v1")), 0),
            (event("delete", manifest, "acme/api", Some("v1")), 0),
            (
                event("push", "application/octet-stream", "acme/api", None),
                0,
            ),
            (
                event(
                    "push",
                    "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "acme/api",
                    None,
                ),
                0,
            ),
            (event("push", manifest, "acme/api", None), 0),
            (event("push", manifest, "acme/api", Some("")), 0),
            (event("push", manifest, "library", Some("v1")), 0),
            (event("push", manifest, "a/b/c", Some("v1")), 0),
            (json!({"id": "e2", "action": "push"}), 0),
        ];
        for (e, n) in cases {
            let body = serde_json::to_vec(&json!({"events": [e.clone()]})).unwrap();
            assert_eq!(manifest_pushes(&body).unwrap().len(), n, "{e}");
        }
    }

    #[test]
    fn pushes_kiln_cannot_record_are_left_out() {
        let manifest = "application/vnd.docker.distribution.manifest.v2+json";
        let with = |id: &str, repository: &str, tag: &str, digest: &str| {
            json!({"id": id, "action": "push",
                   "target": {"mediaType": manifest, "digest": digest, "repository": repository,
                              "tag": tag}})
        };
        let digest = format!("sha256:{}", "a".repeat(64));
        let cases = [
            (with("e1", "acme/api", "v1", &digest), 1),
            (
                with(
                    "e1",
                    "acme/api",
                    "v1",
                    "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564",
                ),
                1,
            ),
            (with("e1", "Acme/api", "v1", &digest), 0),
            (with("e1", "acme/-api", "v1", &digest), 0),
            (with("e1", "acme/api", ".v1", &digest), 0),
            (with("e1", "acme/api", "v1<script>", &digest), 0),
            (with("e1", "acme/api", &"v".repeat(129), &digest), 0),
            (with("e1", "acme/api", "v1", "abc"), 0),
            (with("e1", "acme/api", "v1", "sha256:"), 0),
            (with("e1", "acme/api", "v1", "SHA256:abc"), 0),
            (with("e1", "acme/api", "v1", "sha256:a b"), 0),
            (with("", "acme/api", "v1", &digest), 0),
            (with("e\n1", "acme/api", "v1", &digest), 0),
            (with(&"e".repeat(257), "acme/api", "v1", &digest), 0),
        ];
        for (e, n) in cases {
            let body = serde_json::to_vec(&json!({"events": [e.clone()]})).unwrap();
            assert_eq!(manifest_pushes(&body).unwrap().len(), n, "{e}");
        }
    }

    #[test]
    fn malformed_envelopes_are_refused() {
        for bad in [
            &b"nope"[..],
            b"{}",
            b"{\"events\": 5}",
            b"[]",
            b"{\"events\": [{\"action\": \"push\"}]}",
        ] {
            assert!(
                manifest_pushes(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(manifest_pushes(b"{\"events\": []}").unwrap(), vec![]);
    }
}
