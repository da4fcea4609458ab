//! The per-source bare mirror: fetch a forge's branches and tags into it, then find commits,
//! branch heads and tags there. Everything here blocks: callers run it in `spawn_blocking`.

use std::cmp::Ordering;
use std::fs;
use std::path::{Path, PathBuf};

use git2::{
    AutotagOption, Cred, CredentialType, ErrorCode, FetchOptions, FetchPrune, ObjectType, Oid,
    RemoteCallbacks, Repository,
};
use sha2::{Digest, Sha256};

use crate::domain::clone_url::{CloneUrl, Credentials, host_of};
use crate::forge::display_url;
use crate::local_sources::LocalSources;
use crate::notify::guard::{self, AllowList};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot fetch {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("refused to fetch {url}: {reason}")]
    Refused { url: String, reason: String },
    #[error("commit {0} not found in the repository")]
    CommitNotFound(String),
    #[error("{sha} is a tag of a {kind}, not of a commit")]
    TagOfNoCommit { sha: String, kind: String },
    #[error("branch '{0}' not found")]
    BranchNotFound(String),
    #[error("no tag matches '{0}'")]
    NoMatchingTag(String),
    #[error(transparent)]
    Git(#[from] git2::Error),
}

/// What the mirror takes from the source: every branch and every tag, as they are there
/// (forced, so a force-push or a moved tag is followed).
const REFSPECS: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

/// Directory of the bare mirror for a clone URL under `mirrors_root`:
/// `{root}/{first 16 hex of sha256(url)}.git`. The URL is the source's stored one, which never
/// holds credentials.
pub fn mirror_path(mirrors_root: &Path, clone_url: &str) -> PathBuf {
    let digest = hex::encode(Sha256::digest(clone_url.as_bytes()));
    mirrors_root.join(format!("{}.git", &digest[..16]))
}

/// Where a mirror fetches from, checked. Only [`Remote::resolve`] makes one, so every fetch has
/// passed the same checks as the API: a scheme kiln can fetch and, for a local repository, a real
/// path under `KILN_LOCAL_SOURCES`.
pub struct Remote {
    /// What libgit2 is given: the URL without credentials, or `file://` and the resolved path.
    fetch_url: String,
    /// The URL for messages: as stored, without credentials.
    shown: String,
    /// The host credentials are for (they are offered to no other, e.g. after a redirect).
    host: Option<String>,
    credentials: Option<Credentials>,
    /// A local source's real path: the mirror borrows its objects (see [`fetch_mirror`]).
    local_path: Option<PathBuf>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("fetch_url", &self.fetch_url)
            .field("has_credentials", &self.credentials.is_some())
            .finish()
    }
}

impl Remote {
    /// Checks a source's clone URL (as stored) with its credentials (the user info kept apart;
    /// any left in the URL are taken out too) at fetch time. A local repository is resolved now,
    /// and the fetch uses the resolved path: what was checked is what is read. A remote one's
    /// host is resolved now and refused when an address is internal and `git_allow`
    /// (`KILN_GIT_ALLOW`) does not open it: DNS may have changed since the source was linked.
    /// Blocking (it looks at the disk and asks the resolver).
    pub fn resolve(
        clone_url: &str,
        credentials: Option<&str>,
        local_sources: &LocalSources,
        git_allow: &AllowList,
    ) -> Result<Remote, GitError> {
        let parsed = CloneUrl::parse(clone_url).map_err(|e| GitError::Refused {
            url: display_url(clone_url),
            reason: e.message,
        })?;
        match parsed {
            CloneUrl::Remote {
                url,
                credentials: in_url,
            } => Ok(Remote {
                host: match host_of(&url) {
                    Some(host) => {
                        guard::check_host_blocking(git_allow, &host).map_err(|reason| {
                            GitError::Refused {
                                url: url.clone(),
                                reason,
                            }
                        })?;
                        Some(host)
                    }
                    None => None,
                },
                credentials: credentials.and_then(Credentials::from_userinfo).or(in_url),
                fetch_url: url.clone(),
                shown: url,
                local_path: None,
            }),
            CloneUrl::Local { url, path } => {
                let real = local_sources
                    .resolve(&path)
                    .map_err(|e| GitError::Refused {
                        url: url.clone(),
                        reason: e.to_string(),
                    })?;
                Ok(Remote {
                    fetch_url: file_url(&real),
                    shown: url,
                    host: None,
                    credentials: None,
                    local_path: Some(real),
                })
            }
        }
    }

    /// The URL as shown: without credentials.
    pub fn url(&self) -> &str {
        &self.shown
    }
}

/// `file://` and the path, percent-encoded (libgit2 decodes it), so that no character in the
/// path (`:`, `%`, `?`) changes how it is read.
fn file_url(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut url = String::from("file://");
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"/._-~".contains(&byte) {
            url.push(byte as char);
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    url
}

/// Open or create (init bare) the mirror, then fetch `+refs/heads/*:refs/heads/*` and
/// `+refs/tags/*:refs/tags/*` with prune from `remote`. Works with https://, http://, git:// and
/// local repositories (a full fetch: shallow fetch is not supported by the local transport).
///
/// A mirror that can't be opened (left half-made by a crash) is removed and made again; a new
/// mirror is made in a temporary directory beside it and renamed into place, so it is never
/// seen half-made. A fetch that fails on a lock file left by a crashed fetch removes the
/// stale locks and tries once more (the caller holds the per-mirror lock, so no other fetch
/// owns them). The URL is used as an anonymous remote: it is never written to the mirror's
/// config; credentials are given to git only when the server asks for them, only for the
/// source's own host. Errors carry one line, without the credentials.
///
/// The mirror of a local source borrows the source's objects (git's alternates, as `git clone
/// --shared` does) instead of copying them: libgit2's local transport would otherwise repack and
/// recompress every object of the source into the mirror (delta search and zlib over the whole
/// repository: minutes and hundreds of MiB for a repository of large files). The fetch then only
/// updates refs. As with `--shared`, a commit the source itself has dropped (force-pushed away,
/// then garbage-collected) can no longer be built from the mirror.
pub fn fetch_mirror(mirror: &Path, remote: &Remote) -> Result<Repository, GitError> {
    let repo = open_or_init(mirror)?;
    if let Some(source) = &remote.local_path {
        borrow_objects(mirror, source).map_err(|error| fetch_error(remote, &error))?;
    }
    let fetched = match fetch_into(&repo, remote) {
        Err(error) if is_lock_error(&error) => {
            tracing::warn!(mirror = %mirror.display(), "removing stale lock files left in the mirror");
            remove_stale_locks(mirror);
            fetch_into(&repo, remote)
        }
        other => other,
    };
    fetched.map_err(|error| fetch_error(remote, &error))?;
    Ok(repo)
}

/// Lists the local source's object directory as the mirror's only alternate (rewritten when the
/// source's real path changed).
fn borrow_objects(mirror: &Path, source: &Path) -> Result<(), git2::Error> {
    let objects = Repository::open(source)?.path().join("objects");
    let objects = fs::canonicalize(&objects).unwrap_or(objects);
    let Some(line) = objects.to_str() else {
        return Err(git2::Error::from_str(
            "the source's path is not UTF-8: its objects can't be listed as an alternate",
        ));
    };
    let file = mirror.join("objects/info/alternates");
    let wanted = format!("{line}\n");
    if fs::read_to_string(&file).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    let write = || -> std::io::Result<()> {
        fs::create_dir_all(mirror.join("objects/info"))?;
        let staged = mirror.join("objects/info/alternates.kiln-new");
        fs::write(&staged, &wanted)?;
        fs::rename(&staged, &file)
    };
    write().map_err(|e| git2::Error::from_str(&format!("cannot write {}: {e}", file.display())))
}

/// A lock file is in the way. libgit2 says so with `ErrorCode::Locked` in some places, and
/// with a generic OS error whose message says it in others (updating a ref during a fetch).
fn is_lock_error(error: &git2::Error) -> bool {
    error.code() == ErrorCode::Locked || error.message().starts_with("failed to lock file")
}

fn fetch_into(repo: &Repository, remote: &Remote) -> Result<(), git2::Error> {
    let mut anonymous = repo.remote_anonymous(&remote.fetch_url)?;
    let mut callbacks = RemoteCallbacks::new();
    let mut offered = false;
    callbacks.credentials(|url, _username, allowed| {
        let refuse = |message: String| Err(git2::Error::from_str(&message));
        let Some(credentials) = &remote.credentials else {
            return refuse(
                "the server asks for credentials and the source has none (give them in its \
                 clone_url, as https://user:token@host/path; kiln keeps them secret)"
                    .into(),
            );
        };
        let asking = host_of(url);
        if asking.is_none() || asking != remote.host {
            return refuse(format!(
                "{} asks for credentials: the source's are only sent to {}",
                asking.as_deref().unwrap_or("another server"),
                remote.host.as_deref().unwrap_or("its own host")
            ));
        }
        if offered {
            return refuse("the server refused the source's credentials".into());
        }
        if !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            return refuse(
                "the server asks for a kind of authentication kiln does not support (only a \
                 user name and a password or token)"
                    .into(),
            );
        }
        offered = true;
        Cred::userpass_plaintext(&credentials.username(), &credentials.password())
    });
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(callbacks)
        .prune(FetchPrune::On)
        .download_tags(AutotagOption::None);
    anonymous.fetch(&REFSPECS, Some(&mut options), None)
}

fn open_or_init(mirror: &Path) -> Result<Repository, GitError> {
    if mirror.exists() {
        match Repository::open_bare(mirror) {
            Ok(repo) => return Ok(repo),
            Err(error) => {
                tracing::warn!(
                    mirror = %mirror.display(),
                    error = %error.message(),
                    "the mirror can't be opened; making it again"
                );
                let removed = if mirror.is_dir() {
                    fs::remove_dir_all(mirror)
                } else {
                    fs::remove_file(mirror)
                };
                removed.map_err(|e| {
                    io_error(
                        format!("cannot remove broken mirror {}", mirror.display()),
                        e,
                    )
                })?;
            }
        }
    }
    let parent = mirror.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent)
        .map_err(|e| io_error(format!("cannot create {}", parent.display()), e))?;
    let staging = tempfile::Builder::new()
        .prefix(".new-mirror-")
        .tempdir_in(parent)
        .map_err(|e| {
            io_error(
                format!("cannot create a directory in {}", parent.display()),
                e,
            )
        })?;
    Repository::init_bare(staging.path())?;
    let staged = staging.keep();
    if let Err(error) = fs::rename(&staged, mirror) {
        // Someone else made it meanwhile: use theirs.
        let _ = fs::remove_dir_all(&staged);
        if !mirror.exists() {
            return Err(io_error(
                format!("cannot create mirror {}", mirror.display()),
                error,
            ));
        }
    }
    Ok(Repository::open_bare(mirror)?)
}

fn io_error(context: String, error: std::io::Error) -> GitError {
    GitError::Git(git2::Error::from_str(&format!("{context}: {error}")))
}

/// Removes the `*.lock` files a crashed fetch can leave: under `refs/`, and `packed-refs.lock`,
/// `config.lock`, `HEAD.lock`, `shallow.lock` at the top.
fn remove_stale_locks(mirror: &Path) {
    fn walk(dir: &Path) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => walk(&path),
                Ok(_) if path.extension().is_some_and(|ext| ext == "lock") => {
                    let _ = fs::remove_file(&path);
                }
                _ => {}
            }
        }
    }
    walk(&mirror.join("refs"));
    for name in [
        "packed-refs.lock",
        "config.lock",
        "HEAD.lock",
        "shallow.lock",
    ] {
        let _ = fs::remove_file(mirror.join(name));
    }
}

/// The fetch error for a log line or an API answer: the URL without credentials, the message
/// on one line, and none of the credentials anywhere in it.
fn fetch_error(remote: &Remote, error: &git2::Error) -> GitError {
    let mut message = error.message().to_string();
    if let Some(credentials) = &remote.credentials {
        for secret in credentials.secrets() {
            message = message.replace(secret.as_str(), "***");
        }
    }
    let mut message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if message.is_empty() {
        message = format!("{:?} error", error.class());
    }
    GitError::Fetch {
        url: remote.shown.clone(),
        message,
    }
}

/// The commit at an exact 40-hex sha (or an unambiguous prefix ≥ 7). A sha naming an annotated
/// tag (what a forge reports as `after` for one) is peeled to the commit it tags, through tags of
/// tags. CommitNotFound for a tree, a blob, an unknown or malformed sha; TagOfNoCommit for a tag
/// of a tree or a blob.
pub fn find_commit(repo: &Repository, sha: &str) -> Result<Oid, GitError> {
    let not_found = || GitError::CommitNotFound(sha.to_string());
    if !(7..=40).contains(&sha.len()) || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    let found = if sha.len() == 40 {
        Oid::from_str(sha).and_then(|oid| repo.find_object(oid, None))
    } else {
        repo.find_object_by_prefix(sha, None)
    };
    match found {
        Ok(object) => match object.kind() {
            Some(ObjectType::Commit) => Ok(object.id()),
            Some(ObjectType::Tag) => {
                // peel(Any) follows tags to the first object that is not one.
                let target = object.peel(ObjectType::Any)?;
                match target.kind() {
                    Some(ObjectType::Commit) => Ok(target.id()),
                    kind => Err(GitError::TagOfNoCommit {
                        sha: sha.to_string(),
                        kind: kind.map_or("unknown object", |k| k.str()).to_string(),
                    }),
                }
            }
            _ => Err(not_found()),
        },
        Err(error)
            if matches!(
                error.code(),
                ErrorCode::NotFound | ErrorCode::Ambiguous | ErrorCode::InvalidSpec
            ) =>
        {
            Err(not_found())
        }
        Err(error) => Err(error.into()),
    }
}

/// The paths a push changed between the commits `before` and `after` (a tree diff, never the forge's
/// word): an added, modified or deleted file is its path; a rename is both its old and its new path
/// (no rename detection: a rename is a deletion and an addition). `None` when `before` is not a
/// commit in the mirror (a new branch's zeros, a force push that dropped it): nothing to compare.
pub fn changed_paths(
    repo: &Repository,
    before: &str,
    after: &str,
) -> Result<Option<Vec<String>>, GitError> {
    let before = match find_commit(repo, before) {
        Ok(oid) => oid,
        Err(GitError::CommitNotFound(_) | GitError::TagOfNoCommit { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let after = find_commit(repo, after)?;
    let old = repo.find_commit(before)?.tree()?;
    let new = repo.find_commit(after)?.tree()?;
    let diff = repo.diff_tree_to_tree(Some(&old), Some(&new), None)?;
    let mut paths = Vec::new();
    for delta in diff.deltas() {
        for file in [delta.old_file(), delta.new_file()] {
            if let Some(p) = file.path() {
                let p = p.to_string_lossy().into_owned();
                if !paths.contains(&p) {
                    paths.push(p);
                }
            }
        }
    }
    Ok(Some(paths))
}

/// Head commit of a branch in the mirror (`branch` is the short name: `main`, `release/1.x`).
pub fn branch_head(repo: &Repository, branch: &str) -> Result<Oid, GitError> {
    let not_found = || GitError::BranchNotFound(branch.to_string());
    let name = format!("refs/heads/{branch}");
    if branch.is_empty() || !git2::Reference::is_valid_name(&name) {
        return Err(not_found());
    }
    let reference = match repo.find_reference(&name) {
        Ok(reference) => reference,
        Err(error) if error.code() == ErrorCode::NotFound => return Err(not_found()),
        Err(error) => return Err(error.into()),
    };
    Ok(reference.peel_to_commit()?.id())
}

/// Newest tag whose name satisfies `matches` (a closure: kiln passes its rule pattern).
/// Newest = latest commit time of the peeled commit (annotated and lightweight tags both);
/// ties are broken by name, the greater in natural order winning (`v1.10` over `v1.9`).
/// Tags that don't point at a commit (at a tree or a blob) are passed over. Returns
/// (tag name, commit oid).
///
/// This function doesn't know the pattern behind `matches`: when nothing matches,
/// `NoMatchingTag` carries an empty string, for the caller to replace with the pattern
/// (`Err(GitError::NoMatchingTag(_)) => GitError::NoMatchingTag(rule.pattern.clone())`).
pub fn newest_tag(
    repo: &Repository,
    matches: impl Fn(&str) -> bool,
) -> Result<(String, Oid), GitError> {
    let mut newest: Option<(i64, String, Oid)> = None;
    for reference in repo.references_glob("refs/tags/*")? {
        let reference = reference?;
        let Some(name) = reference
            .name()
            .ok()
            .and_then(|full| full.strip_prefix("refs/tags/"))
        else {
            continue;
        };
        if !matches(name) {
            continue;
        }
        let Ok(commit) = reference.peel_to_commit() else {
            continue;
        };
        let time = commit.time().seconds();
        let is_newer = newest.as_ref().is_none_or(|(best_time, best_name, _)| {
            time.cmp(best_time)
                .then_with(|| natural_cmp(name, best_name))
                .is_gt()
        });
        if is_newer {
            newest = Some((time, name.to_string(), commit.id()));
        }
    }
    newest
        .map(|(_, name, oid)| (name, oid))
        .ok_or_else(|| GitError::NoMatchingTag(String::new()))
}

/// Compares names with runs of digits taken as numbers: `v1.9` < `v1.10` < `v2`. Equal by
/// that measure (`v01`, `v1`), plain string order decides, so the order is total.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn runs(text: &str) -> Vec<&str> {
        let mut runs = Vec::new();
        let mut start = 0;
        let bytes = text.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[i - 1].is_ascii_digit() {
                runs.push(&text[start..i]);
                start = i;
            }
        }
        runs
    }
    let (runs_a, runs_b) = (runs(a), runs(b));
    for (x, y) in runs_a.iter().zip(&runs_b) {
        let both_numbers = x.as_bytes()[0].is_ascii_digit() && y.as_bytes()[0].is_ascii_digit();
        let order = if both_numbers {
            let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        } else {
            x.cmp(y)
        };
        if order.is_ne() {
            return order;
        }
    }
    runs_a.len().cmp(&runs_b.len()).then_with(|| a.cmp(b))
}

/// Summary line and full message of a commit, for logs and skip markers: the whole message
/// (its first line is the summary), trailing newlines removed.
pub fn commit_message(repo: &Repository, oid: Oid) -> Result<String, GitError> {
    let commit = match repo.find_object(oid, Some(ObjectType::Commit)) {
        Ok(object) => object.peel_to_commit()?,
        Err(error) if error.code() == ErrorCode::NotFound => {
            return Err(GitError::CommitNotFound(oid.to_string()));
        }
        Err(error) => return Err(error.into()),
    };
    Ok(String::from_utf8_lossy(commit.message_bytes())
        .trim_end()
        .to_string())
}

/// Bounds every network fetch: 30 s to connect, 5 min without data. libgit2's settings are global,
/// so this runs once at start, before any fetch.
pub fn set_network_timeouts() -> Result<(), git2::Error> {
    // SAFETY: called once at start-up, before any thread uses libgit2.
    unsafe {
        git2::opts::set_server_connect_timeout_in_milliseconds(30_000)?;
        git2::opts::set_server_timeout_in_milliseconds(300_000)?;
    }
    Ok(())
}

/// Bounds what reading the object database keeps in memory, and skips re-hashing every object
/// read: the mirror's objects were checked when fetched (libgit2's indexer hashes each one) or
/// are a local source's own. libgit2 maps pack files in windows of 1 GiB up to 8 GiB by
/// default, all of it counted in the process's resident memory once read; here 8 MiB windows,
/// 32 MiB mapped at most (a larger object is still read: windows in use stay mapped). Global
/// settings: runs once at start, before any git work.
pub fn bound_object_reads() -> Result<(), git2::Error> {
    git2::opts::strict_hash_verification(false);
    // SAFETY: called once at start-up, before any thread uses libgit2.
    unsafe {
        git2::opts::set_mwindow_size(8 * 1024 * 1024)?;
        git2::opts::set_mwindow_mapped_limit(32 * 1024 * 1024)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::build::TreeUpdateBuilder;
    use git2::{FileMode, Signature, Time};
    use std::process::Command;

    /// A bare "forge" repository whose commits are made with git2 at chosen times.
    struct Forge {
        dir: tempfile::TempDir,
        repo: Repository,
    }

    impl Forge {
        fn new() -> Forge {
            let dir = tempfile::tempdir().unwrap();
            let repo = Repository::init_bare(dir.path().join("forge.git")).unwrap();
            Forge { dir, repo }
        }

        fn path(&self) -> PathBuf {
            self.dir.path().join("forge.git")
        }

        fn file_url(&self) -> String {
            format!("file://{}", self.path().display())
        }

        /// The forge as a source: its file:// URL, its directory allowed.
        fn remote(&self) -> Remote {
            remote(&self.file_url(), self.dir.path())
        }

        /// The same, named by its plain path.
        fn remote_at_path(&self) -> Remote {
            remote(&self.path().display().to_string(), self.dir.path())
        }

        /// Commits `files` on top of `branch` (created if missing) at `time`, returns the oid.
        fn commit(&self, branch: &str, files: &[(&str, &str)], message: &str, time: i64) -> Oid {
            let refname = format!("refs/heads/{branch}");
            let parent = self
                .repo
                .find_reference(&refname)
                .ok()
                .map(|r| r.peel_to_commit().unwrap());
            let base = match &parent {
                Some(commit) => commit.tree().unwrap(),
                None => {
                    let empty = self.repo.treebuilder(None).unwrap().write().unwrap();
                    self.repo.find_tree(empty).unwrap()
                }
            };
            let mut update = TreeUpdateBuilder::new();
            for (path, content) in files {
                let blob = self.repo.blob(content.as_bytes()).unwrap();
                update.upsert(*path, blob, FileMode::Blob);
            }
            let tree = update.create_updated(&self.repo, &base).unwrap();
            let tree = self.repo.find_tree(tree).unwrap();
            let signature =
                Signature::new("Kiln Test", "test@kiln.invalid", &Time::new(time, 0)).unwrap();
            let parents: Vec<_> = parent.iter().collect();
            self.repo
                .commit(
                    Some(&refname),
                    &signature,
                    &signature,
                    message,
                    &tree,
                    &parents,
                )
                .unwrap()
        }

        fn lightweight_tag(&self, name: &str, oid: Oid) {
            let object = self.repo.find_object(oid, None).unwrap();
            self.repo.tag_lightweight(name, &object, false).unwrap();
        }

        fn annotated_tag(&self, name: &str, oid: Oid) {
            let object = self.repo.find_object(oid, None).unwrap();
            let tagger = Signature::new(
                "Kiln Test",
                "test@kiln.invalid",
                &Time::new(9_999_999_999, 0),
            )
            .unwrap();
            self.repo
                .tag(name, &object, &tagger, &format!("release {name}"), false)
                .unwrap();
        }
    }

    fn mirrors() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    /// `url` checked as kiln checks a source, with local repositories allowed under `allowed`.
    fn remote(url: &str, allowed: &Path) -> Remote {
        let local = LocalSources::new(vec![allowed.to_path_buf()], None);
        Remote::resolve(url, None, &local, &AllowList::default()).unwrap()
    }

    #[test]
    fn mirror_path_is_a_hash_of_the_url() {
        let root = Path::new("/var/lib/kiln/mirrors");
        let path = mirror_path(root, "https://example.com/org/app.git");
        let expected = &hex::encode(Sha256::digest(b"https://example.com/org/app.git"))[..16];
        assert_eq!(path, root.join(format!("{expected}.git")));
        assert_eq!(path.file_name().unwrap().len(), 16 + 4);
        assert_ne!(path, mirror_path(root, "https://example.com/org/other.git"));
        assert_eq!(path, mirror_path(root, "https://example.com/org/app.git"));
    }

    /// Files under the mirror's `objects/` but its `info/` (the alternates file): what it copied.
    fn copied_objects(mirror: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut dirs = vec![mirror.join("objects")];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    if !path.ends_with("info") {
                        dirs.push(path);
                    }
                } else {
                    found.push(path);
                }
            }
        }
        found
    }

    #[test]
    fn a_local_source_lends_its_objects_to_the_mirror() {
        let forge = Forge::new();
        let first = forge.commit(
            "main",
            &[("big.bin", &"x".repeat(100_000))],
            "first",
            1_700_000_000,
        );
        let root = mirrors();
        let mirror = mirror_path(root.path(), &forge.file_url());
        let repo = fetch_mirror(&mirror, &forge.remote()).unwrap();
        assert_eq!(branch_head(&repo, "main").unwrap(), first);
        let alternates = fs::read_to_string(mirror.join("objects/info/alternates")).unwrap();
        let source_objects = fs::canonicalize(forge.path().join("objects")).unwrap();
        assert_eq!(alternates, format!("{}\n", source_objects.display()));
        assert_eq!(copied_objects(&mirror), Vec::<PathBuf>::new());
        assert!(
            repo.find_blob(
                repo.find_commit(first)
                    .unwrap()
                    .tree()
                    .unwrap()
                    .get_name("big.bin")
                    .unwrap()
                    .id()
            )
            .is_ok()
        );

        // The next fetch only moves refs, and the mirror still copies nothing.
        let second = forge.commit("main", &[("a.txt", "a")], "second", 1_700_000_100);
        drop(repo);
        let repo = fetch_mirror(&mirror, &forge.remote()).unwrap();
        assert_eq!(branch_head(&repo, "main").unwrap(), second);
        assert_eq!(copied_objects(&mirror), Vec::<PathBuf>::new());

        // A mirror without the alternates file (made by an older kiln, holding copies) gets it.
        fs::remove_file(mirror.join("objects/info/alternates")).unwrap();
        let repo = fetch_mirror(&mirror, &forge.remote()).unwrap();
        assert_eq!(branch_head(&repo, "main").unwrap(), second);
        assert!(mirror.join("objects/info/alternates").exists());
    }

    #[test]
    fn fetches_from_a_local_path_then_incrementally() {
        let forge = Forge::new();
        let first = forge.commit("main", &[("README.md", "hello\n")], "first", 1_700_000_000);
        let root = mirrors();
        let mirror = mirror_path(root.path(), &forge.path().display().to_string());

        let repo = fetch_mirror(&mirror, &forge.remote_at_path()).unwrap();
        assert!(repo.is_bare());
        assert_eq!(repo.path(), mirror.join("").as_path());
        assert_eq!(branch_head(&repo, "main").unwrap(), first);
        // The URL is not stored in the mirror: the remote was anonymous.
        assert!(repo.remotes().unwrap().is_empty());

        let second = forge.commit(
            "main",
            &[("src/main.rs", "fn main() {}\n")],
            "second",
            1_700_000_100,
        );
        let feature = forge.commit("feature/x", &[("x", "x")], "feature", 1_700_000_200);
        drop(repo);
        let repo = fetch_mirror(&mirror, &forge.remote_at_path()).unwrap();
        assert_eq!(branch_head(&repo, "main").unwrap(), second);
        assert_eq!(branch_head(&repo, "feature/x").unwrap(), feature);
        assert_eq!(find_commit(&repo, &first.to_string()).unwrap(), first);
        assert_eq!(commit_message(&repo, second).unwrap(), "second");
    }

    #[test]
    fn fetches_from_a_file_url_and_follows_force_pushes() {
        let forge = Forge::new();
        let first = forge.commit("main", &[("a", "1")], "first", 1_700_000_000);
        let root = mirrors();
        let mirror = mirror_path(root.path(), &forge.file_url());
        let repo = fetch_mirror(&mirror, &forge.remote()).unwrap();
        assert_eq!(branch_head(&repo, "main").unwrap(), first);

        // Rewrite main to an unrelated commit (a force push).
        forge
            .repo
            .find_reference("refs/heads/main")
            .unwrap()
            .delete()
            .unwrap();
        let rewritten = forge.commit("main", &[("b", "2")], "rewritten", 1_700_000_500);
        let repo = fetch_mirror(&mirror, &forge.remote()).unwrap();
        assert_eq!(branch_head(&repo, "main").unwrap(), rewritten);
    }

    #[test]
    fn deleted_branches_and_tags_are_pruned() {
        let forge = Forge::new();
        let main = forge.commit("main", &[("a", "1")], "main", 1_700_000_000);
        forge.commit("doomed", &[("b", "2")], "doomed", 1_700_000_100);
        forge.lightweight_tag("v0.1", main);
        let root = mirrors();
        let mirror = mirror_path(root.path(), &forge.file_url());
        let repo = fetch_mirror(&mirror, &forge.remote()).unwrap();
        assert!(branch_head(&repo, "doomed").is_ok());
        assert_eq!(newest_tag(&repo, |_| true).unwrap().0, "v0.1");

        forge
            .repo
            .find_reference("refs/heads/doomed")
            .unwrap()
            .delete()
            .unwrap();
        forge.repo.tag_delete("v0.1").unwrap();
        let repo = fetch_mirror(&mirror, &forge.remote()).unwrap();
        assert!(matches!(
            branch_head(&repo, "doomed"),
            Err(GitError::BranchNotFound(name)) if name == "doomed"
        ));
        assert!(matches!(
            newest_tag(&repo, |_| true),
            Err(GitError::NoMatchingTag(_))
        ));
        assert_eq!(branch_head(&repo, "main").unwrap(), main);
    }

    #[test]
    fn fetches_from_a_repository_made_by_the_git_cli() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let git = |args: &[&str]| {
            let output = Command::new("git")
                .args([
                    "-c",
                    "user.name=Kiln Test",
                    "-c",
                    "user.email=test@kiln.invalid",
                ])
                .args([
                    "-c",
                    "init.defaultBranch=main",
                    "-c",
                    "commit.gpgsign=false",
                ])
                .args(["-c", "tag.gpgsign=false"])
                .args(args)
                .current_dir(&work)
                .env("GIT_COMMITTER_DATE", "1700000000 +0000")
                .env("GIT_AUTHOR_DATE", "1700000000 +0000")
                .output()
                .unwrap();
            assert!(output.status.success(), "git {args:?}: {output:?}");
            String::from_utf8(output.stdout).unwrap().trim().to_string()
        };
        fs::create_dir_all(&work).unwrap();
        git(&["init", "-q"]);
        fs::write(work.join("Dockerfile"), "FROM scratch\n").unwrap();
        git(&["add", "."]);
        git(&["commit", "-q", "-m", "Add a Dockerfile\n\nWith a body."]);
        git(&["tag", "-a", "v1.0.0", "-m", "first release"]);
        let head = git(&["rev-parse", "HEAD"]);

        let root = mirrors();
        let url = format!("file://{}", work.display());
        let repo =
            fetch_mirror(&mirror_path(root.path(), &url), &remote(&url, dir.path())).unwrap();
        let head = Oid::from_str(&head).unwrap();
        assert_eq!(branch_head(&repo, "main").unwrap(), head);
        assert_eq!(
            newest_tag(&repo, |name| name.starts_with('v')).unwrap(),
            ("v1.0.0".to_string(), head)
        );
        assert_eq!(
            commit_message(&repo, head).unwrap(),
            "Add a Dockerfile\n\nWith a body."
        );
    }

    #[test]
    fn find_commit_by_full_and_short_sha() {
        let forge = Forge::new();
        let oid = forge.commit("main", &[("a", "1")], "first", 1_700_000_000);
        let repo = &forge.repo;
        let sha = oid.to_string();
        assert_eq!(find_commit(repo, &sha).unwrap(), oid);
        assert_eq!(find_commit(repo, &sha[..7]).unwrap(), oid);
        assert_eq!(find_commit(repo, &sha[..12]).unwrap(), oid);
        assert_eq!(find_commit(repo, &sha.to_uppercase()).unwrap(), oid);

        let unknown = "0123456789abcdef0123456789abcdef01234567";
        for input in [
            unknown,
            "0123456",
            &sha[..6], // too short
            "",
            "not-a-sha",
            "main",
            "HEAD",
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
            &format!("{sha}0"), // 41 characters
        ] {
            match find_commit(repo, input) {
                Err(GitError::CommitNotFound(shown)) => assert_eq!(shown, input),
                other => panic!("find_commit({input:?}) gave {other:?}"),
            }
        }
        let error = find_commit(repo, unknown).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("commit {unknown} not found in the repository")
        );
    }

    #[test]
    fn find_commit_refuses_trees_and_blobs() {
        let forge = Forge::new();
        let oid = forge.commit("main", &[("a", "content of a")], "first", 1_700_000_000);
        let repo = &forge.repo;
        let tree = repo.find_commit(oid).unwrap().tree_id();
        let blob = repo.blob(b"content of a").unwrap();
        for object in [tree, blob] {
            let sha = object.to_string();
            assert!(matches!(
                find_commit(repo, &sha),
                Err(GitError::CommitNotFound(_))
            ));
            assert!(matches!(
                find_commit(repo, &sha[..10]),
                Err(GitError::CommitNotFound(_))
            ));
        }
        assert!(matches!(
            commit_message(repo, blob),
            Err(GitError::CommitNotFound(_))
        ));
    }

    #[test]
    fn find_commit_peels_annotated_tags_to_their_commit() {
        let forge = Forge::new();
        let first = forge.commit("main", &[("a", "1")], "first", 1_700_000_000);
        let second = forge.commit("main", &[("a", "2")], "second", 1_700_000_100);
        forge.annotated_tag("v1", first);
        forge.lightweight_tag("light", second);
        let repo = &forge.repo;
        let tag_object = repo.refname_to_id("refs/tags/v1").unwrap();
        assert_ne!(
            tag_object, first,
            "an annotated tag is an object of its own"
        );
        let sha = tag_object.to_string();
        for input in [sha.clone(), sha[..7].to_string(), sha.to_uppercase()] {
            assert_eq!(find_commit(repo, &input).unwrap(), first, "{input}");
        }
        // A lightweight tag's value is the commit itself.
        let light = repo.refname_to_id("refs/tags/light").unwrap();
        assert_eq!(find_commit(repo, &light.to_string()).unwrap(), second);

        // A tag of a tag is peeled all the way down.
        let outer = {
            let inner = repo.find_object(tag_object, None).unwrap();
            let tagger =
                Signature::new("Kiln Test", "test@kiln.invalid", &Time::new(1, 0)).unwrap();
            repo.tag("v1-signed-off", &inner, &tagger, "a tag of v1", false)
                .unwrap()
        };
        assert_eq!(find_commit(repo, &outer.to_string()).unwrap(), first);
    }

    #[test]
    fn find_commit_refuses_tags_of_trees_and_blobs() {
        let forge = Forge::new();
        let oid = forge.commit("main", &[("a", "content of a")], "first", 1_700_000_000);
        let repo = &forge.repo;
        let tree = repo.find_commit(oid).unwrap().tree_id();
        let blob = repo.blob(b"content of a").unwrap();
        forge.annotated_tag("tree-tag", tree);
        forge.annotated_tag("blob-tag", blob);
        for (name, kind) in [("tree-tag", "tree"), ("blob-tag", "blob")] {
            let sha = repo
                .refname_to_id(&format!("refs/tags/{name}"))
                .unwrap()
                .to_string();
            let error = find_commit(repo, &sha).unwrap_err();
            assert!(
                matches!(&error, GitError::TagOfNoCommit { kind: k, .. } if k == kind),
                "{name}: {error:?}"
            );
            assert_eq!(
                error.to_string(),
                format!("{sha} is a tag of a {kind}, not of a commit")
            );
        }
    }

    #[test]
    fn a_mirror_peels_the_tag_object_a_forge_reports() {
        let forge = Forge::new();
        let oid = forge.commit(
            "main",
            &[("Dockerfile", "FROM scratch\n")],
            "first",
            1_700_000_000,
        );
        forge.annotated_tag("v1.0.0", oid);
        let tag_object = forge.repo.refname_to_id("refs/tags/v1.0.0").unwrap();
        let mirrors = mirrors();
        let mirror = mirror_path(mirrors.path(), &forge.file_url());
        let repo = fetch_mirror(&mirror, &forge.remote()).unwrap();
        assert_eq!(find_commit(&repo, &tag_object.to_string()).unwrap(), oid);
    }

    #[test]
    fn branch_head_finds_branches_by_short_name() {
        let forge = Forge::new();
        let main = forge.commit("main", &[("a", "1")], "main", 1_700_000_000);
        let release = forge.commit("release/1.x", &[("b", "2")], "release", 1_700_000_100);
        let repo = &forge.repo;
        assert_eq!(branch_head(repo, "main").unwrap(), main);
        assert_eq!(branch_head(repo, "release/1.x").unwrap(), release);
        for missing in ["develop", "", "bad..name", "release"] {
            assert!(
                matches!(branch_head(repo, missing), Err(GitError::BranchNotFound(ref b)) if b == missing),
                "{missing:?}"
            );
        }
        assert_eq!(
            branch_head(repo, "develop").unwrap_err().to_string(),
            "branch 'develop' not found"
        );
    }

    #[test]
    fn newest_tag_orders_by_commit_time_then_name() {
        let forge = Forge::new();
        let old = forge.commit("main", &[("a", "1")], "old", 1_600_000_000);
        let middle = forge.commit("main", &[("a", "2")], "middle", 1_650_000_000);
        let new = forge.commit("main", &[("a", "3")], "new", 1_700_000_000);
        // The annotated tag is made "later" (tagger time) but points at the oldest commit:
        // the commit time decides.
        forge.annotated_tag("v1.0.0", old);
        forge.lightweight_tag("v1.1.0", middle);
        forge.lightweight_tag("v1.9.0", new);
        forge.annotated_tag("v1.10.0", new);
        forge.lightweight_tag("nightly", new);
        forge.annotated_tag("v0.9.0", middle);
        let repo = &forge.repo;

        let version = |name: &str| name.starts_with('v');
        assert_eq!(
            newest_tag(repo, version).unwrap(),
            ("v1.10.0".to_string(), new)
        );
        assert_eq!(
            newest_tag(repo, |name| name.starts_with("v1.0")).unwrap(),
            ("v1.0.0".to_string(), old)
        );
        assert_eq!(
            newest_tag(repo, |name| name == "v1.1.0" || name == "v0.9.0").unwrap(),
            ("v1.1.0".to_string(), middle)
        );
        assert_eq!(
            newest_tag(repo, |_| true).unwrap(),
            ("v1.10.0".to_string(), new)
        );
        assert_eq!(
            newest_tag(repo, |name| !name.starts_with('v')).unwrap(),
            ("nightly".to_string(), new)
        );
        let error = newest_tag(repo, |name| name.starts_with("v2")).unwrap_err();
        assert!(matches!(error, GitError::NoMatchingTag(_)));
    }

    #[test]
    fn newest_tag_passes_over_tags_of_trees_and_blobs() {
        let forge = Forge::new();
        let commit = forge.commit("main", &[("a", "1")], "c", 1_700_000_000);
        let blob = forge.repo.blob(b"not a commit").unwrap();
        forge.lightweight_tag("v9-blob", blob);
        forge.lightweight_tag("v1", commit);
        assert_eq!(
            newest_tag(&forge.repo, |_| true).unwrap(),
            ("v1".to_string(), commit)
        );
    }

    #[test]
    fn natural_order_of_names() {
        let mut names = vec!["v1.10", "v1.9", "v2", "v1.9.1", "v10", "v01", "a", "v1"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            ["a", "v01", "v1", "v1.9", "v1.9.1", "v1.10", "v2", "v10"]
        );
    }

    #[test]
    fn commit_message_is_the_whole_message() {
        let forge = Forge::new();
        let oid = forge.commit(
            "main",
            &[("a", "1")],
            "Fix the build [skip kiln]\n\nLonger explanation.\n\n",
            1_700_000_000,
        );
        let message = commit_message(&forge.repo, oid).unwrap();
        assert_eq!(message, "Fix the build [skip kiln]\n\nLonger explanation.");
        assert_eq!(message.lines().next(), Some("Fix the build [skip kiln]"));
        let missing = Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap();
        assert!(matches!(
            commit_message(&forge.repo, missing),
            Err(GitError::CommitNotFound(sha)) if sha == missing.to_string()
        ));
    }

    #[test]
    fn a_refused_source_fetches_nothing() {
        let forge = Forge::new();
        forge.commit("main", &[("a", "1")], "c", 1_700_000_000);
        let elsewhere = tempfile::tempdir().unwrap();
        let root = mirrors();
        let gone = forge.dir.path().join("no-such-repo.git");
        let forge_path = forge.path().display().to_string();
        let link = elsewhere.path().join("link.git");
        std::os::unix::fs::symlink(forge.path(), &link).unwrap();
        let only_elsewhere = LocalSources::new(vec![elsewhere.path().to_path_buf()], None);
        let cases = [
            (forge.file_url(), &only_elsewhere, "not a repository under"),
            (
                forge_path.clone(),
                &only_elsewhere,
                "not a repository under",
            ),
            (
                link.display().to_string(),
                &only_elsewhere,
                "not a repository under",
            ),
            (
                format!("{}/../{}", elsewhere.path().display(), forge_path),
                &only_elsewhere,
                "not a repository under",
            ),
            (
                gone.display().to_string(),
                &only_elsewhere,
                "not a repository under",
            ),
            (
                forge.file_url(),
                &LocalSources::default(),
                "KILN_LOCAL_SOURCES",
            ),
            (
                "git@github.com:org/app.git".to_string(),
                &only_elsewhere,
                "ssh URLs are not supported",
            ),
            (
                "ssh://git@host/org/app.git".to_string(),
                &only_elsewhere,
                "ssh URLs",
            ),
        ];
        for (url, allowed, reason) in cases {
            let error = Remote::resolve(&url, None, allowed, &AllowList::default()).unwrap_err();
            let GitError::Refused { url: shown, .. } = &error else {
                panic!("{url}: expected a refusal, got {error:?}");
            };
            assert_eq!(shown, &display_url(&url));
            let text = error.to_string();
            assert!(
                text.starts_with(&format!("refused to fetch {shown}: ")),
                "{text}"
            );
            assert!(text.contains(reason), "{text}");
            assert!(!text.contains('\n'), "{text}");
        }
        // Nothing was made: the refusal comes before the mirror.
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
        // Allowed, the same link is read at its real place.
        let allowed = LocalSources::new(vec![forge.dir.path().to_path_buf()], None);
        let remote = Remote::resolve(
            &link.display().to_string(),
            None,
            &allowed,
            &AllowList::default(),
        )
        .unwrap();
        assert_eq!(remote.url(), link.display().to_string());
        assert_eq!(
            remote.fetch_url,
            file_url(&fs::canonicalize(forge.path()).unwrap())
        );
        let remote = Remote::resolve(&forge_path, None, &allowed, &AllowList::default()).unwrap();
        assert_eq!(remote.url(), forge_path);
        let mirror = mirror_path(root.path(), &forge_path);
        assert!(branch_head(&fetch_mirror(&mirror, &remote).unwrap(), "main").is_ok());
    }

    #[test]
    fn a_local_repository_is_fetched_from_its_real_path() {
        // Characters that mean something in a URL or to libgit2's transport lookup.
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("a:b%41?#c.git");
        let forge = Forge::new();
        let head = forge.commit("main", &[("a", "1")], "c", 1_700_000_000);
        fs::rename(forge.path(), &odd).unwrap();
        let allowed = LocalSources::new(vec![dir.path().to_path_buf()], None);
        let root = mirrors();
        let remote = Remote::resolve(
            &odd.display().to_string(),
            None,
            &allowed,
            &AllowList::default(),
        )
        .unwrap();
        let repo = fetch_mirror(&mirror_path(root.path(), "x"), &remote).unwrap();
        assert_eq!(branch_head(&repo, "main").unwrap(), head);
        assert_eq!(file_url(Path::new("/a:b/%/é")), "file:///a%3Ab/%25/%C3%A9");
    }

    #[test]
    fn credentials_never_show_in_fetch_errors() {
        let root = mirrors();
        let none = LocalSources::default();
        let loopback = AllowList::parse("127.0.0.1").unwrap();
        // Port 1 on the loopback address: nothing listens, the connection is refused.
        for (url, stored) in [
            ("https://kiln-bot:s3cr3t-pa55@127.0.0.1:1/org/app.git", None),
            ("https://ghp_tokenvalue123@127.0.0.1:1/org/app.git", None),
            ("http://user:p%40ss%2Fword@127.0.0.1:1/org/app.git", None),
            (
                "https://127.0.0.1:1/org/app.git",
                Some("kiln-bot:s3cr3t-pa55"),
            ),
        ] {
            let remote = Remote::resolve(url, stored, &none, &loopback).unwrap();
            assert!(!format!("{remote:?}").contains("s3cr3t"), "{remote:?}");
            let error = fetch_mirror(&mirror_path(root.path(), remote.url()), &remote)
                .err()
                .expect("the fetch fails");
            let text = format!("{error} {error:?}");
            for secret in [
                "s3cr3t-pa55",
                "ghp_tokenvalue123",
                "p%40ss%2Fword",
                "p@ss/word",
                "kiln-bot:",
            ] {
                assert!(!text.contains(secret), "{secret} shown in {text}");
            }
            let GitError::Fetch { url: shown, .. } = &error else {
                panic!("expected a fetch error, got {error:?}");
            };
            assert!(shown.contains("127.0.0.1:1/org/app.git"), "{shown}");
            assert!(!shown.contains('@'), "{shown}");
            assert!(error.to_string().contains("127.0.0.1"), "{error}");
        }
    }

    #[test]
    fn internal_hosts_are_refused_at_fetch_time_unless_allowed() {
        let root = mirrors();
        let none = LocalSources::default();
        let git_allow = AllowList::default().for_setting("KILN_GIT_ALLOW");
        for (url, fragment) in [
            (
                "http://127.0.0.1:1/org/app.git",
                "127.0.0.1 is a loopback address",
            ),
            (
                "https://user:s3cr3t@[64:ff9b::7f00:1]:1/org/app.git",
                "a NAT64 address carrying 127.0.0.1",
            ),
            ("git://[::1]/x.git", "[::1] is a loopback address"),
            ("http://localhost:1/org/app.git", "localhost resolves to"),
            (
                "https://169.254.169.254/latest/x",
                "a cloud metadata address",
            ),
        ] {
            let error = Remote::resolve(url, None, &none, &git_allow).unwrap_err();
            let GitError::Refused { url: shown, reason } = &error else {
                panic!("expected a refusal, got {error:?}");
            };
            assert!(reason.contains(fragment), "{url}: {reason}");
            assert!(reason.contains("KILN_GIT_ALLOW"), "{url}: {reason}");
            assert!(!format!("{shown} {reason}").contains("s3cr3t"), "{error}");
        }
        // Opened by KILN_GIT_ALLOW, by address or by name: the fetch runs (and fails: nothing
        // listens on port 1).
        for allow in ["127.0.0.0/8", "localhost"] {
            let allow = AllowList::parse(allow)
                .unwrap()
                .for_setting("KILN_GIT_ALLOW");
            let remote = Remote::resolve("http://localhost:1/org/app.git", None, &none, &allow);
            let remote = remote.unwrap();
            let error = fetch_mirror(&mirror_path(root.path(), remote.url()), &remote).err();
            assert!(matches!(error, Some(GitError::Fetch { .. })), "{error:?}");
        }
    }

    #[test]
    fn a_broken_mirror_is_made_again() {
        let forge = Forge::new();
        let head = forge.commit("main", &[("a", "1")], "c", 1_700_000_000);
        let root = mirrors();
        let mirror = mirror_path(root.path(), &forge.file_url());
        // A crash left an empty directory, then one with only a stray file.
        fs::create_dir_all(&mirror).unwrap();
        let repo = fetch_mirror(&mirror, &forge.remote()).unwrap();
        assert_eq!(branch_head(&repo, "main").unwrap(), head);
        drop(repo);
        fs::remove_dir_all(&mirror).unwrap();
        fs::create_dir_all(&mirror).unwrap();
        fs::write(mirror.join("HEAD"), "garbage").unwrap();
        let repo = fetch_mirror(&mirror, &forge.remote()).unwrap();
        assert_eq!(branch_head(&repo, "main").unwrap(), head);
        // No staging directory is left beside the mirror.
        let leftovers: Vec<_> = fs::read_dir(root.path()).unwrap().flatten().collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[test]
    fn a_stale_lock_file_does_not_block_fetching() {
        let forge = Forge::new();
        forge.commit("main", &[("a", "1")], "c", 1_700_000_000);
        let root = mirrors();
        let mirror = mirror_path(root.path(), &forge.file_url());
        fetch_mirror(&mirror, &forge.remote()).unwrap();
        let head = forge.commit("main", &[("a", "2")], "c2", 1_700_000_100);
        // A crashed fetch left the lock of the ref it was updating.
        fs::write(mirror.join("refs/heads/main.lock"), "").unwrap();
        let repo = fetch_mirror(&mirror, &forge.remote()).unwrap();
        assert_eq!(branch_head(&repo, "main").unwrap(), head);
        assert!(!mirror.join("refs/heads/main.lock").exists());
    }

    #[test]
    fn changed_paths_are_the_tree_diff_with_both_names_of_a_rename() {
        let forge = Forge::new();
        let a = forge.commit(
            "main",
            &[("src/a.rs", "a"), ("src/old.rs", "old"), ("docs/x.md", "x")],
            "one",
            1_700_000_000,
        );
        let b = forge.commit("main", &[("docs/x.md", "x2")], "two", 1_700_000_100);
        // c: src/old.rs renamed to attic/old.rs, docs/x.md deleted (a tree built by hand).
        let base = forge.repo.find_commit(b).unwrap().tree().unwrap();
        let mut update = TreeUpdateBuilder::new();
        update.remove("src/old.rs").remove("docs/x.md");
        let blob = forge.repo.blob(b"old").unwrap();
        update.upsert("attic/old.rs", blob, FileMode::Blob);
        let tree = forge
            .repo
            .find_tree(update.create_updated(&forge.repo, &base).unwrap())
            .unwrap();
        let who = Signature::new(
            "Kiln Test",
            "test@kiln.invalid",
            &Time::new(1_700_000_200, 0),
        )
        .unwrap();
        let parent = forge.repo.find_commit(b).unwrap();
        let c = forge
            .repo
            .commit(None, &who, &who, "three", &tree, &[&parent])
            .unwrap();
        let sorted = |v: Option<Vec<String>>| {
            v.map(|mut v| {
                v.sort();
                v
            })
        };
        let (a, b, c) = (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            sorted(changed_paths(&forge.repo, &a, &b).unwrap()),
            Some(vec!["docs/x.md".to_string()])
        );
        assert_eq!(
            sorted(changed_paths(&forge.repo, &b, &c).unwrap()),
            Some(vec![
                "attic/old.rs".to_string(),
                "docs/x.md".to_string(),
                "src/old.rs".to_string()
            ])
        );
        assert_eq!(changed_paths(&forge.repo, &b, &b).unwrap(), Some(vec![]));
        // Nothing to compare: a new branch (zeros), a commit the mirror does not have.
        assert_eq!(
            changed_paths(&forge.repo, &"0".repeat(40), &c).unwrap(),
            None
        );
        assert_eq!(
            changed_paths(&forge.repo, &"1".repeat(40), &c).unwrap(),
            None
        );
    }
}
