//! Compressed sizes of images for the versions tab, read from the registry (see
//! `registry::manifest`) a few at a time and remembered by digest: a digest's content never
//! changes, so its size never does. A size the registry cannot give is None ("—" on the page) and is
//! asked again next time.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use futures_util::StreamExt;

use crate::registry::client::RegistryClient;
use crate::registry::manifest::compressed_size;

/// Manifests read at the same time for one page.
const AT_ONCE: usize = 4;
/// How long one size may take before the page goes without it.
const WAIT: Duration = Duration::from_secs(5);
/// Sizes remembered (the cache starts over beyond this).
const REMEMBERED: usize = 50_000;

static SIZES: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(Default::default);

fn remembered(digest: &str) -> Option<u64> {
    SIZES.lock().ok()?.get(digest).copied()
}

fn remember(digest: &str, size: u64) {
    if let Ok(mut sizes) = SIZES.lock() {
        if sizes.len() >= REMEMBERED {
            sizes.clear();
        }
        sizes.insert(digest.to_string(), size);
    }
}

/// The size of each of `digests` (images of registry repository `repo`) that the registry could
/// tell, by digest.
pub async fn sizes(
    registry: &RegistryClient,
    repo: &str,
    digests: &[String],
) -> HashMap<String, u64> {
    let mut found = HashMap::new();
    let mut missing = Vec::new();
    for d in digests {
        match remembered(d) {
            Some(size) => {
                found.insert(d.clone(), size);
            }
            None if !missing.contains(d) => missing.push(d.clone()),
            None => {}
        }
    }
    let fetched: Vec<(String, Option<u64>)> = futures_util::stream::iter(missing)
        .map(|digest| async move {
            let size =
                match tokio::time::timeout(WAIT, compressed_size(registry, repo, &digest)).await {
                    Ok(Ok(size)) => size,
                    Ok(Err(e)) => {
                        tracing::debug!(repo, digest, error = %format!("{e:#}"), "no image size");
                        None
                    }
                    Err(_) => None,
                };
            (digest, size)
        })
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    for (digest, size) in fetched {
        if let Some(size) = size {
            remember(&digest, size);
            found.insert(digest, size);
        }
    }
    found
}
