//! What kiln keeps on this machine besides its database: the images it built (found by
//! [`super::docker::REPOSITORY_LABEL`]) and the bare git mirrors under `mirrors_dir()`. The retention task
//! measures them and removes what the cache cap says (`domain::cache_cap`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use bollard::Docker;
use bollard::query_parameters::{ListImagesOptions, RemoveImageOptionsBuilder};

use super::docker::{REPOSITORY_LABEL, one_line};

/// A local image kiln built.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub id: String,
    /// `registry/namespace/repo:tag` names it carries (none when a newer build took its tag).
    pub tags: Vec<String>,
    pub bytes: u64,
    /// Unix seconds.
    pub created: i64,
}

/// The images kiln built for `registry` (its label names an image under `registry/`), tagged or not.
pub async fn built_images(docker: &Docker, registry: &str) -> Result<Vec<BuiltImage>, String> {
    let filters = HashMap::from([("label".to_string(), vec![REPOSITORY_LABEL.to_string()])]);
    let prefix = format!("{registry}/");
    let images = docker
        .list_images(Some(ListImagesOptions {
            all: false,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| one_line(&e))?;
    Ok(images
        .into_iter()
        .filter(|i| {
            i.labels
                .get(REPOSITORY_LABEL)
                .is_some_and(|name| name.starts_with(&prefix))
        })
        .map(|i| BuiltImage {
            id: i.id,
            tags: i
                .repo_tags
                .into_iter()
                .filter(|t| t != "<none>:<none>")
                .collect(),
            bytes: u64::try_from(i.size).unwrap_or(0),
            created: i.created,
        })
        .collect())
}

/// Removes an image: each of its names (the last one removes the image), or the image itself when it
/// has none. Not forced: an image a container uses stays, and the error says so.
pub async fn remove_image(docker: &Docker, image: &BuiltImage) -> Result<(), String> {
    let options = RemoveImageOptionsBuilder::default().force(false).build();
    let names: Vec<&str> = if image.tags.is_empty() {
        vec![image.id.as_str()]
    } else {
        image.tags.iter().map(String::as_str).collect()
    };
    for name in names {
        docker
            .remove_image(name, Some(options.clone()), None)
            .await
            .map_err(|e| one_line(&e))?;
    }
    Ok(())
}

/// A bare mirror directory.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub path: PathBuf,
    pub bytes: u64,
    /// When it was last fetched into (Unix seconds).
    pub last_used: i64,
}

/// The mirror directories under `dir` (none when it does not exist).
pub fn mirrors(dir: &Path) -> std::io::Result<Vec<Mirror>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if !entry.file_type()?.is_dir() || path.extension().is_none_or(|e| e != "git") {
            continue;
        }
        // A fetch rewrites FETCH_HEAD; a mirror never fetched into has only its directory's time.
        let stamp = std::fs::metadata(path.join("FETCH_HEAD")).or_else(|_| entry.metadata())?;
        let last_used = stamp
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        out.push(Mirror {
            bytes: dir_size(&path),
            path,
            last_used,
        });
    }
    Ok(out)
}

/// The bytes of the files under `path` (symbolic links not followed; unreadable parts count 0).
fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => total += entry.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_are_the_git_directories_with_their_sizes() {
        let dir = tempfile::tempdir().unwrap();
        assert!(mirrors(&dir.path().join("missing")).unwrap().is_empty());
        let a = dir.path().join("0123456789abcdef.git");
        std::fs::create_dir_all(a.join("objects/pack")).unwrap();
        std::fs::write(a.join("objects/pack/p.pack"), vec![0u8; 1000]).unwrap();
        std::fs::write(a.join("FETCH_HEAD"), b"x").unwrap();
        std::fs::create_dir_all(dir.path().join("not-a-mirror")).unwrap();
        std::fs::write(dir.path().join("stray.git"), b"a file").unwrap();
        let found = mirrors(dir.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, a);
        assert_eq!(found[0].bytes, 1001);
        assert!(found[0].last_used > 1_700_000_000);
    }
}
