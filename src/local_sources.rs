//! Which repositories on kiln's own host a source may name (`file://` URLs and absolute paths):
//! only those under a directory the operator lists in `KILN_LOCAL_SOURCES`, none by default.
//!
//! The check resolves symlinks and `..` (both sides are canonicalized, at every check, so a
//! directory or link changed since start is seen as it is now), refuses a path that does not
//! exist, and never allows anything inside kiln's own data directory (its mirrors hold other
//! sources' code). It runs when a source is set and again before every fetch; the fetch then
//! uses the resolved path, never the path as written.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct LocalSources {
    /// The allowed directories, as configured (absolute).
    dirs: Vec<PathBuf>,
    /// kiln's data directory: never a source, even under an allowed directory.
    data_dir: Option<PathBuf>,
}

/// Why a local source is refused. The message never says whether the path exists, so that it
/// can't be used to explore kiln's host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalSourceError {
    #[error(
        "local repositories are not allowed as sources on this kiln (its operator can allow \
         directories with KILN_LOCAL_SOURCES); use an https://, http:// or git:// URL"
    )]
    Disabled,
    #[error(
        "'{0}' is not a repository under a directory allowed by KILN_LOCAL_SOURCES (it does not \
         exist, or it leads elsewhere once symlinks and '..' are resolved)"
    )]
    NotAllowed(String),
}

impl LocalSources {
    /// Allows `dirs` (absolute), never anything inside `data_dir`.
    pub fn new(dirs: Vec<PathBuf>, data_dir: Option<PathBuf>) -> LocalSources {
        LocalSources { dirs, data_dir }
    }

    /// Parses `KILN_LOCAL_SOURCES`: `:`-separated directories (empty entries are skipped). Each
    /// must exist and be a directory now; relative ones are taken from the current directory.
    pub fn parse(text: &str, data_dir: &Path) -> Result<LocalSources, String> {
        let mut dirs = Vec::new();
        for entry in text.split(':').filter(|e| !e.is_empty()) {
            let path = Path::new(entry);
            let path = if path.is_absolute() {
                path.to_path_buf()
            } else {
                std::env::current_dir()
                    .map_err(|e| format!("cannot resolve '{entry}': {e}"))?
                    .join(path)
            };
            if !path.is_dir() {
                return Err(format!("'{entry}' is not a directory"));
            }
            dirs.push(path);
        }
        Ok(LocalSources {
            dirs,
            data_dir: Some(data_dir.to_path_buf()),
        })
    }

    /// True when no local source is allowed.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The real path of `path` when it is an existing directory under an allowed directory and
    /// outside kiln's data directory. Blocking (a few `stat`s).
    pub fn resolve(&self, path: &str) -> Result<PathBuf, LocalSourceError> {
        if self.dirs.is_empty() {
            return Err(LocalSourceError::Disabled);
        }
        let refused = |why: &str| {
            tracing::debug!(path, why, "local source refused");
            LocalSourceError::NotAllowed(path.to_string())
        };
        let real = match std::fs::canonicalize(path) {
            Ok(real) if real.is_dir() => real,
            Ok(_) => return Err(refused("not a directory")),
            Err(_) => return Err(refused("does not exist or cannot be resolved")),
        };
        if let Some(data) = self
            .data_dir
            .as_ref()
            .and_then(|d| std::fs::canonicalize(d).ok())
            && real.starts_with(&data)
        {
            return Err(refused("inside kiln's data directory"));
        }
        let allowed = self
            .dirs
            .iter()
            .filter_map(|dir| std::fs::canonicalize(dir).ok())
            .any(|dir| real.starts_with(dir));
        if allowed {
            Ok(real)
        } else {
            Err(refused("not under an allowed directory"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn nothing_is_allowed_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let none = LocalSources::parse("", dir.path()).unwrap();
        assert!(none.is_empty());
        assert_eq!(
            none.resolve(&dir.path().display().to_string()),
            Err(LocalSourceError::Disabled)
        );
        assert_eq!(
            LocalSources::default().resolve("/"),
            Err(LocalSourceError::Disabled)
        );
    }

    #[test]
    fn only_existing_directories_under_an_allowed_one() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let allowed = root.join("allowed");
        let other = root.join("other");
        let data = root.join("data");
        for d in [
            allowed.join("app.git"),
            other.join("secret.git"),
            data.join("mirrors/abc.git"),
            root.join("allowed-not/x.git"),
        ] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(allowed.join("file"), "x").unwrap();
        symlink(other.join("secret.git"), allowed.join("escape")).unwrap();
        symlink(allowed.join("app.git"), other.join("inward")).unwrap();
        symlink(root, allowed.join("up")).unwrap();
        let list = format!("{}::{}", allowed.display(), data.display());
        let sources = LocalSources::parse(&list, &data).unwrap();
        assert_eq!(sources.dirs().len(), 2);

        let real_app = fs::canonicalize(allowed.join("app.git")).unwrap();
        let ok = |p: PathBuf| sources.resolve(&p.display().to_string());
        assert_eq!(ok(allowed.join("app.git")), Ok(real_app.clone()));
        assert_eq!(ok(allowed.join("app.git/")), Ok(real_app.clone()));
        assert_eq!(
            ok(allowed.join("./app.git/../app.git")),
            Ok(real_app.clone())
        );
        // A link from elsewhere into an allowed directory is fine: the real path is what counts.
        assert_eq!(ok(other.join("inward")), Ok(real_app.clone()));
        assert_eq!(ok(allowed.clone()), Ok(fs::canonicalize(&allowed).unwrap()));

        for refused in [
            other.join("secret.git"),
            allowed.join("escape"),
            allowed.join("up/other/secret.git"),
            allowed.join("../other/secret.git"),
            allowed.join("missing.git"),
            allowed.join("file"),
            root.join("allowed-not/x.git"),
            data.join("mirrors/abc.git"),
            data.clone(),
            PathBuf::from("/"),
        ] {
            let text = refused.display().to_string();
            assert_eq!(
                sources.resolve(&text),
                Err(LocalSourceError::NotAllowed(text.clone())),
                "{text}"
            );
        }
        // A link re-pointed after the first check is seen as it is now.
        fs::remove_file(allowed.join("escape")).unwrap();
        symlink(allowed.join("app.git"), allowed.join("escape")).unwrap();
        assert_eq!(ok(allowed.join("escape")), Ok(real_app));
    }

    #[test]
    fn configured_directories_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let e = LocalSources::parse(&missing.display().to_string(), dir.path()).unwrap_err();
        assert!(e.contains("is not a directory"), "{e}");
        let file = dir.path().join("f");
        fs::write(&file, "").unwrap();
        assert!(LocalSources::parse(&file.display().to_string(), dir.path()).is_err());
    }
}
