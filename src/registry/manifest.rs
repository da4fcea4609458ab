//! An image's compressed size, read from its manifest: the sizes of its config and layers, as
//! pushed (what a pull downloads). For a multi-platform image (an OCI index or a Docker manifest
//! list) the size is the first platform's, skipping attestation manifests (platform
//! `unknown/unknown`): one platform is what a pull downloads.

use anyhow::{Context, bail};
use serde::Deserialize;

use super::client::RegistryClient;

/// What a manifest says about size.
#[derive(Debug, PartialEq, Eq)]
pub enum Sizing {
    /// An image manifest: its config and layers add up to this many bytes.
    Image(u64),
    /// An index or manifest list: the size is that of this platform manifest (None: it lists none).
    Index(Option<String>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    media_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    manifests: Option<Vec<Descriptor>>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(default)]
    size: u64,
    #[serde(default)]
    digest: String,
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

/// Reads a manifest (`media_type` from the registry's `Content-Type`; the body's own `mediaType`
/// when that is missing).
pub fn sizing(media_type: &str, body: &[u8]) -> anyhow::Result<Sizing> {
    let m: Manifest = serde_json::from_slice(body).context("the manifest is not JSON")?;
    let kind = if media_type.is_empty() || media_type == "application/json" {
        m.media_type.clone().unwrap_or_default()
    } else {
        media_type.to_string()
    };
    let is_index = kind.contains("manifest.list") || kind.contains("image.index");
    if is_index || (m.manifests.is_some() && m.config.is_none()) {
        let first = m
            .manifests
            .unwrap_or_default()
            .into_iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_none_or(|p| p.os != "unknown" && p.architecture != "unknown")
            })
            .map(|d| d.digest);
        return Ok(Sizing::Index(first));
    }
    let Some(config) = m.config else {
        bail!("the manifest has neither a config nor a list of manifests ({kind})");
    };
    Ok(Sizing::Image(
        config.size + m.layers.iter().map(|l| l.size).sum::<u64>(),
    ))
}

/// The compressed size of `repo@digest` (see the module's note for multi-platform images); None
/// when the registry has no such manifest.
pub async fn compressed_size(
    registry: &RegistryClient,
    repo: &str,
    digest: &str,
) -> anyhow::Result<Option<u64>> {
    let mut reference = digest.to_string();
    // An index names a platform manifest, which is an image: two steps at most.
    for _ in 0..2 {
        let Some((media_type, body)) = registry.manifest(repo, &reference).await? else {
            return Ok(None);
        };
        match sizing(&media_type, &body)? {
            Sizing::Image(size) => return Ok(Some(size)),
            Sizing::Index(None) => return Ok(None),
            Sizing::Index(Some(first)) => reference = first,
        }
    }
    bail!("the manifest {repo}@{digest} nests indexes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_its_config_and_layers() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"x","size":1470,"digest":"sha256:c"},
            "layers":[{"mediaType":"y","size":100,"digest":"sha256:a"},{"mediaType":"y","size":2000,"digest":"sha256:b"}]}"#;
        assert_eq!(
            sizing("application/vnd.docker.distribution.manifest.v2+json", body).unwrap(),
            Sizing::Image(3570)
        );
        // The body's own media type when the registry sends none.
        assert_eq!(sizing("", body).unwrap(), Sizing::Image(3570));
    }

    #[test]
    fn an_index_names_its_first_real_platform() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"mediaType":"m","size":5,"digest":"sha256:att","platform":{"os":"unknown","architecture":"unknown"}},
            {"mediaType":"m","size":5,"digest":"sha256:amd","platform":{"os":"linux","architecture":"amd64"}},
            {"mediaType":"m","size":5,"digest":"sha256:arm","platform":{"os":"linux","architecture":"arm64"}}]}"#;
        assert_eq!(
            sizing("application/vnd.oci.image.index.v1+json", body).unwrap(),
            Sizing::Index(Some("sha256:amd".into()))
        );
        let empty = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        assert_eq!(
            sizing(
                "application/vnd.docker.distribution.manifest.list.v2+json",
                empty
            )
            .unwrap(),
            Sizing::Index(None)
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(sizing("application/json", b"not json").is_err());
        assert!(sizing("application/vnd.oci.image.manifest.v1+json", b"{}").is_err());
    }
}
