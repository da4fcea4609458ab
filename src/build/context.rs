//! The Docker build context as a tar, read straight from the git tree at a commit (nothing is
//! checked out to disk).
//!
//! What goes in, as the docker CLI decides it: the tree under the context directory, minus what
//! the context's `.dockerignore` excludes, except the Dockerfile and the `.dockerignore`
//! themselves, which are always sent (the daemon reads them, then drops them before `COPY`
//! when they are listed in `.dockerignore`).
//!
//! The tar is the same bytes for the same tree: entries in git's tree order, regular files
//! 0644 (0755 when git has them executable), directories 0755, symlinks as symlinks, uid/gid 0
//! with no user names, and every mtime the commit's time (as `git archive` does). Submodules
//! (gitlinks) are left out: their commits are not in the mirror.
//!
//! The tar is never whole in memory: [`plan_context`] checks the Dockerfile and the context
//! directory (before anything is sent), then [`ContextPlan::stream`] writes the tar from a thread
//! of its own into a bounded pipe of chunks that is the build request's body.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use git2::{ObjectType, Odb, Oid, Repository, Tree};
use tar::{EntryType, Header};

use super::dockerignore::DockerIgnore;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("Dockerfile not found at {0}")]
    DockerfileNotFound(String),
    #[error("build context directory {0} not found")]
    ContextNotFound(String),
    #[error("invalid path {0}")]
    InvalidPath(String),
    #[error(transparent)]
    Git(#[from] git2::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl ContextError {
    /// The producer stopped because the reader of the tar went away (the request ended).
    pub fn is_reader_gone(&self) -> bool {
        matches!(self, ContextError::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// Bytes of tar in one chunk of the pipe to the daemon.
pub const CHUNK_SIZE: usize = 128 * 1024;
/// Chunks the pipe holds while the daemon reads: the producer waits when it is full, so at most
/// `(PIPE_DEPTH + 1) * CHUNK_SIZE` bytes of tar are in memory, whatever the context's size.
pub const PIPE_DEPTH: usize = 4;

/// What was sent, once the tar is written whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextSummary {
    /// The repository's entries sent that are not directories (files and symlinks), its
    /// Dockerfile included; not kiln's own `.kiln.Dockerfile` or a `.dockerignore` kiln made.
    pub files: usize,
    /// Bytes of the contents of those files.
    pub bytes: u64,
    /// Bytes of the tar itself.
    pub tar_bytes: u64,
}

/// A build context checked against the commit: the Dockerfile and the context directory exist.
/// Of the tree's files only the Dockerfile and the `.dockerignore` are read yet:
/// [`ContextPlan::stream`] writes the tar.
#[derive(Debug, Clone)]
pub struct ContextPlan {
    mirror: PathBuf,
    mtime: u64,
    context_tree: Oid,
    /// The rule's Dockerfile, as committed.
    dockerfile_content: Vec<u8>,
    /// The Dockerfile's path inside the context dir, when it lies there.
    inside: Option<String>,
    /// The context's `.dockerignore`, read once: it decides what the tar carries, and whether the
    /// build needs the daemon to apply it ([`ContextPlan::needs_daemon_dockerignore`]).
    ignore: DockerIgnore,
    /// The Dockerfile the daemon builds instead of the rule's, with kiln's labels (see
    /// [`ContextPlan::label`]).
    generated: Option<String>,
    /// What to pass to Docker's `dockerfile` option (path inside the tar).
    pub dockerfile: String,
}

/// The tar being written by its producer thread, as a bounded stream of chunks.
pub struct ContextStream {
    /// The tar's bytes, in chunks of at most [`CHUNK_SIZE`]; an error item ends it when the
    /// producer fails (its reason is in `finished`).
    pub chunks: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    /// The producer's result, sent once it wrote the last chunk into the pipe (or failed).
    pub finished: tokio::sync::oneshot::Receiver<Result<ContextSummary, ContextError>>,
}

/// Where the Dockerfile the daemon builds goes in the tar when it is not the context's own file:
/// one from outside the context directory, or one with kiln's labels added.
const OUTSIDE_DOCKERFILE: &str = crate::domain::dockerfile_labels::GENERATED_DOCKERFILE;
const DOCKERIGNORE: &str = ".dockerignore";

const MODE_TREE: i32 = 0o040000;
const MODE_BLOB: i32 = 0o100644;
const MODE_BLOB_GROUP_WRITABLE: i32 = 0o100664;
const MODE_EXECUTABLE: i32 = 0o100755;
const MODE_SYMLINK: i32 = 0o120000;
const MODE_GITLINK: i32 = 0o160000;

/// Checks the build context of `commit` in the bare repository at `mirror` (opened as `repo`):
/// `context_dir` and `dockerfile` are paths relative to the repository root ("" or "." = root;
/// no "..", no leading "/"). Fails with the reason when the Dockerfile or the context directory
/// is missing, before anything is sent to the daemon.
///
/// The tar [`ContextPlan::stream`] writes then holds the tree under `context_dir` (paths
/// relative to it), minus what the context's `.dockerignore` excludes, except the Dockerfile and
/// .dockerignore themselves, which are always sent (as the docker CLI does). If the Dockerfile
/// lies outside the context dir, it is added to the tar as `.kiln.Dockerfile` and that path is
/// the plan's `dockerfile`; as the docker CLI does with its own name for it, that path is then
/// added to the context's `.dockerignore` (one is made, listing itself too, if there is none),
/// so the daemon drops it before `COPY`.
pub fn plan_context(
    mirror: &Path,
    repo: &Repository,
    commit: Oid,
    context_dir: &str,
    dockerfile: &str,
) -> Result<ContextPlan, ContextError> {
    let context_dir = normalise(context_dir)?;
    let dockerfile_path = normalise(dockerfile)?;
    if dockerfile_path.is_empty() {
        return Err(ContextError::DockerfileNotFound(dockerfile.to_string()));
    }

    let commit = repo.find_commit(commit)?;
    let mtime = u64::try_from(commit.time().seconds()).unwrap_or(0);
    let root = commit.tree()?;

    // The Dockerfile: a regular file, not a directory, symlink or submodule.
    let dockerfile_content = match root.get_path(Path::new(&dockerfile_path)) {
        Ok(entry)
            if entry.kind() == Some(ObjectType::Blob)
                && matches!(
                    entry.filemode(),
                    MODE_BLOB | MODE_BLOB_GROUP_WRITABLE | MODE_EXECUTABLE
                ) =>
        {
            repo.find_blob(entry.id())?.content().to_vec()
        }
        Ok(_) => return Err(ContextError::DockerfileNotFound(dockerfile_path)),
        Err(error) if error.code() == git2::ErrorCode::NotFound => {
            return Err(ContextError::DockerfileNotFound(dockerfile_path));
        }
        Err(error) => return Err(error.into()),
    };

    let context_tree = if context_dir.is_empty() {
        root.id()
    } else {
        match root.get_path(Path::new(&context_dir)) {
            Ok(entry) if entry.kind() == Some(ObjectType::Tree) => entry.id(),
            Ok(_) => return Err(ContextError::ContextNotFound(context_dir)),
            Err(error) if error.code() == git2::ErrorCode::NotFound => {
                return Err(ContextError::ContextNotFound(context_dir));
            }
            Err(error) => return Err(error.into()),
        }
    };

    // The Dockerfile's path inside the context, when it lies there.
    let inside = if context_dir.is_empty() {
        Some(dockerfile_path.clone())
    } else {
        dockerfile_path
            .strip_prefix(&format!("{context_dir}/"))
            .map(str::to_string)
    };
    let ignore = read_dockerignore(repo, &repo.find_tree(context_tree)?)?;
    Ok(ContextPlan {
        mirror: mirror.to_path_buf(),
        mtime,
        context_tree,
        dockerfile_content,
        dockerfile: inside
            .clone()
            .unwrap_or_else(|| OUTSIDE_DOCKERFILE.to_string()),
        inside,
        ignore,
        generated: None,
    })
}

/// The context's `.dockerignore` (none, or a symlink: nothing excluded).
fn read_dockerignore(
    repo: &Repository,
    context_tree: &git2::Tree,
) -> Result<DockerIgnore, ContextError> {
    Ok(match context_tree.get_name(DOCKERIGNORE) {
        Some(entry)
            if entry.kind() == Some(ObjectType::Blob) && entry.filemode() != MODE_SYMLINK =>
        {
            let blob = repo.find_blob(entry.id())?;
            DockerIgnore::parse(&String::from_utf8_lossy(blob.content()))
        }
        _ => DockerIgnore::default(),
    })
}

impl ContextPlan {
    /// Has the daemon build a copy of the Dockerfile with `labels` as one `LABEL` at the end of the
    /// built stage (`target`, or the last), sent as `.kiln.Dockerfile` and dropped by the daemon
    /// from the context before any `COPY` (see `domain::dockerfile_labels`). False when the end of
    /// that stage is not certain: the labels are then left to the `labels` build option.
    pub fn label(&mut self, target: &str, labels: &[(&str, &str)]) -> bool {
        let dockerfile = String::from_utf8_lossy(&self.dockerfile_content);
        match crate::domain::dockerfile_labels::with_labels(&dockerfile, target, labels) {
            Some(generated) => {
                self.generated = Some(generated);
                self.dockerfile = OUTSIDE_DOCKERFILE.to_string();
                true
            }
            None => false,
        }
    }

    /// The images the rule's Dockerfile builds `FROM`, as written.
    pub fn base_images(&self) -> Vec<String> {
        crate::domain::dockerfile_labels::base_images(&String::from_utf8_lossy(
            &self.dockerfile_content,
        ))
    }

    /// Why the tar carries files only the daemon's own `.dockerignore` keeps out of `COPY` (which
    /// the daemon's BuildKit does not apply to an uploaded context), if it does: a Dockerfile from
    /// outside the context directory (sent as `.kiln.Dockerfile`), or a Dockerfile or
    /// `.dockerignore` that the context's `.dockerignore` lists.
    pub fn needs_daemon_dockerignore(&self) -> Option<&'static str> {
        match &self.inside {
            None => Some("the Dockerfile lies outside the build context"),
            Some(dockerfile)
                if self.ignore.is_excluded(DOCKERIGNORE) || self.ignore.is_excluded(dockerfile) =>
            {
                Some("the context's .dockerignore lists the Dockerfile or itself")
            }
            Some(_) => None,
        }
    }

    /// Whether the tar carries a Dockerfile of kiln's (`.kiln.Dockerfile`).
    fn sends_own_dockerfile(&self) -> bool {
        self.inside.is_none() || self.generated.is_some()
    }

    /// Starts the producer: a thread that opens the mirror, walks the tree and writes the tar
    /// into a pipe of [`PIPE_DEPTH`] chunks. It stops early, with an error, when the reader is
    /// dropped (the build failed or was cancelled).
    pub fn stream(&self) -> ContextStream {
        let (chunks_tx, chunks) = tokio::sync::mpsc::channel(PIPE_DEPTH);
        let (finished_tx, finished) = tokio::sync::oneshot::channel();
        let plan = self.clone();
        let spawned = std::thread::Builder::new()
            .name("kiln-context".into())
            .spawn(move || {
                let mut pipe = ChunkWriter::new(chunks_tx);
                let result = plan.write_tar(&mut pipe).and_then(|summary| {
                    pipe.finish()?;
                    Ok(summary)
                });
                if let Err(error) = &result {
                    // Ends the body with an error: the daemon must not build a truncated tar.
                    pipe.fail(error);
                }
                drop(pipe);
                let _ = finished_tx.send(result);
            });
        if let Err(error) = spawned {
            // No thread: the stream ends at once, and says why.
            let (_, empty) = tokio::sync::mpsc::channel(1);
            let (tx, finished) = tokio::sync::oneshot::channel();
            let _ = tx.send(Err(ContextError::Io(error)));
            return ContextStream {
                chunks: empty,
                finished,
            };
        }
        ContextStream { chunks, finished }
    }

    /// Writes the whole tar to `out` (blocking). The same commit gives the same bytes.
    pub fn write_tar<W: Write>(&self, out: W) -> Result<ContextSummary, ContextError> {
        let repo = Repository::open_bare(&self.mirror)?;
        let context_tree = repo.find_tree(self.context_tree)?;
        for pattern in self.ignore.invalid_patterns() {
            tracing::warn!(%pattern, "the .dockerignore has an invalid pattern; it is ignored");
        }
        let odb = repo.odb()?;
        let mut writer = ContextWriter {
            repo: &repo,
            odb: &odb,
            ignore: &self.ignore,
            always_sent: self.inside.clone().unwrap_or_default(),
            extra_ignore_line: self.sends_own_dockerfile().then_some(OUTSIDE_DOCKERFILE),
            builder: tar::Builder::new(CountingWriter {
                inner: out,
                written: 0,
            }),
            mtime: self.mtime,
            open_dirs: Vec::new(),
            written_dirs: HashSet::new(),
            wrote_dockerignore: false,
            files: 0,
            bytes: 0,
        };
        writer.walk(&context_tree, b"")?;

        // The counts are the repository's files: kiln's own entries below are not among them.
        let (repository_files, repository_bytes) = (writer.files, writer.bytes);
        if self.sends_own_dockerfile() {
            if !writer.wrote_dockerignore {
                let contents = crate::domain::dockerfile_labels::dockerignore_with_generated(None);
                writer.write_file(DOCKERIGNORE.as_bytes(), 0o644, &contents)?;
            }
            let dockerfile = match &self.generated {
                Some(text) => text.as_bytes(),
                None => &self.dockerfile_content,
            };
            writer.write_file(OUTSIDE_DOCKERFILE.as_bytes(), 0o644, dockerfile)?;
        }

        let counted = writer.builder.into_inner()?;
        Ok(ContextSummary {
            files: repository_files,
            bytes: repository_bytes,
            tar_bytes: counted.written,
        })
    }
}

/// Counts what goes through, for the summary.
struct CountingWriter<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The producer's end of the pipe: collects bytes into chunks of [`CHUNK_SIZE`] and sends each
/// one, waiting while the pipe is full.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    buf: bytes::BytesMut,
}

impl ChunkWriter {
    fn new(tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>) -> Self {
        ChunkWriter {
            tx,
            buf: bytes::BytesMut::with_capacity(CHUNK_SIZE),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK_SIZE);
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the Docker daemon stopped reading the build context",
            )
        })
    }

    /// Sends what is left.
    fn finish(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            self.send()
        }
    }

    fn fail(&mut self, error: &ContextError) {
        let _ = self
            .tx
            .blocking_send(Err(std::io::Error::other(error.to_string())));
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(CHUNK_SIZE - self.buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() == CHUNK_SIZE {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// "" for the root; the path with "." parts and repeated or trailing slashes dropped;
/// InvalidPath for an absolute path or one that climbs out with "..".
fn normalise(path: &str) -> Result<String, ContextError> {
    if path.starts_with('/') || path.contains('\0') {
        return Err(ContextError::InvalidPath(path.to_string()));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(ContextError::InvalidPath(path.to_string())),
            _ => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

struct ContextWriter<'r, W: Write> {
    repo: &'r Repository,
    odb: &'r Odb<'r>,
    ignore: &'r DockerIgnore,
    /// The Dockerfile's path in the context ("" when it lies outside): sent even if excluded.
    always_sent: String,
    /// A line to add to the context's `.dockerignore` (the outside Dockerfile's path).
    extra_ignore_line: Option<&'static str>,
    builder: tar::Builder<CountingWriter<W>>,
    mtime: u64,
    /// The directories being walked, outermost first, and whether each is in the tar yet: an
    /// excluded directory goes in only when something below it is kept.
    open_dirs: Vec<(Vec<u8>, bool)>,
    written_dirs: HashSet<Vec<u8>>,
    wrote_dockerignore: bool,
    files: usize,
    bytes: u64,
}

impl<W: Write> ContextWriter<'_, W> {
    fn walk(&mut self, tree: &Tree<'_>, prefix: &[u8]) -> Result<(), ContextError> {
        for entry in tree.iter() {
            let mut path = prefix.to_vec();
            path.extend_from_slice(entry.name_bytes());
            let rel = String::from_utf8_lossy(&path).into_owned();
            let excluded = self.ignore.is_excluded(&rel);
            match entry.filemode() {
                MODE_TREE => {
                    // Without exceptions nothing below an excluded directory can be kept but
                    // the Dockerfile.
                    let holds_dockerfile = self.always_sent.starts_with(&format!("{rel}/"));
                    if excluded && !self.ignore.has_exceptions() && !holds_dockerfile {
                        continue;
                    }
                    if !excluded {
                        self.write_open_dirs()?;
                        self.write_dir(&path)?;
                    }
                    self.open_dirs.push((path.clone(), !excluded));
                    let subtree = self.repo.find_tree(entry.id())?;
                    path.push(b'/');
                    self.walk(&subtree, &path)?;
                    self.open_dirs.pop();
                }
                MODE_BLOB | MODE_BLOB_GROUP_WRITABLE | MODE_EXECUTABLE | MODE_SYMLINK => {
                    if self.extra_ignore_line.is_some() && rel == OUTSIDE_DOCKERFILE {
                        // Replaced by kiln's Dockerfile.
                        continue;
                    }
                    let is_dockerignore = rel == DOCKERIGNORE;
                    if excluded && !is_dockerignore && rel != self.always_sent {
                        continue;
                    }
                    self.write_open_dirs()?;
                    if entry.filemode() == MODE_SYMLINK {
                        let blob = self.repo.find_blob(entry.id())?;
                        self.write_symlink(&path, blob.content())?;
                    } else if is_dockerignore && self.extra_ignore_line.is_some() {
                        let blob = self.repo.find_blob(entry.id())?;
                        let contents =
                            crate::domain::dockerfile_labels::dockerignore_with_generated(Some(
                                blob.content(),
                            ));
                        self.write_file(&path, 0o644, &contents)?;
                        self.wrote_dockerignore = true;
                    } else {
                        let mode = if entry.filemode() == MODE_EXECUTABLE {
                            0o755
                        } else {
                            0o644
                        };
                        self.write_blob(&path, mode, entry.id())?;
                        self.wrote_dockerignore |= is_dockerignore;
                    }
                }
                MODE_GITLINK => {}
                other => {
                    tracing::debug!(path = %rel, mode = other, "leaving out a tree entry of an unknown mode");
                }
            }
        }
        Ok(())
    }

    /// Writes the excluded directories being walked that are not in the tar yet: something
    /// below them is about to go in.
    fn write_open_dirs(&mut self) -> Result<(), ContextError> {
        for index in 0..self.open_dirs.len() {
            if !self.open_dirs[index].1 {
                let dir = self.open_dirs[index].0.clone();
                self.write_dir(&dir)?;
                self.open_dirs[index].1 = true;
            }
        }
        Ok(())
    }

    fn header(&self, kind: EntryType, mode: u32, size: u64) -> Header {
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(self.mtime);
        header.set_size(size);
        header
    }

    fn write_dir(&mut self, path: &[u8]) -> Result<(), ContextError> {
        let mut header = self.header(EntryType::Directory, 0o755, 0);
        let mut name = path.to_vec();
        name.push(b'/');
        self.builder
            .append_data(&mut header, tar_path(&name), std::io::empty())?;
        self.written_dirs.insert(path.to_vec());
        Ok(())
    }

    fn write_file(&mut self, path: &[u8], mode: u32, contents: &[u8]) -> Result<(), ContextError> {
        let mut header = self.header(EntryType::Regular, mode, contents.len() as u64);
        self.builder
            .append_data(&mut header, tar_path(path), contents)?;
        self.files += 1;
        self.bytes += contents.len() as u64;
        Ok(())
    }

    /// A file's contents from the object database. A loose object is read through a stream, so
    /// a large file is never whole in memory; libgit2 has no stream for packed objects, whose
    /// contents are read whole (one file at a time).
    fn write_blob(&mut self, path: &[u8], mode: u32, oid: Oid) -> Result<(), ContextError> {
        if let Ok((reader, size, ObjectType::Blob)) = self.odb.reader(oid) {
            let mut header = self.header(EntryType::Regular, mode, size as u64);
            // The tar must hold exactly `size` bytes: a short read is an error, not a short file.
            let mut contents = ExactReader {
                inner: reader,
                left: size as u64,
            };
            self.builder
                .append_data(&mut header, tar_path(path), &mut contents)?;
            self.files += 1;
            self.bytes += size as u64;
            return Ok(());
        }
        let blob = self.repo.find_blob(oid)?;
        self.write_file(path, mode, blob.content())
    }

    fn write_symlink(&mut self, path: &[u8], target: &[u8]) -> Result<(), ContextError> {
        let mut header = self.header(EntryType::Symlink, 0o777, 0);
        self.builder
            .append_link(&mut header, tar_path(path), tar_path(target))?;
        self.files += 1;
        Ok(())
    }
}

/// Reads exactly `left` bytes, failing on an early end.
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "an object in the mirror ended early",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A path from git's bytes: kept as they are on Unix (git names need not be UTF-8).
#[cfg(unix)]
fn tar_path(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

#[cfg(not(unix))]
fn tar_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::build::TreeUpdateBuilder;
    use git2::{FileMode, Signature, Time};
    use std::io::Read;

    const COMMIT_TIME: i64 = 1_700_000_000;

    enum Item<'a> {
        File(&'a str),
        Exec(&'a str),
        Link(&'a str),
        Submodule,
    }
    use Item::*;

    struct Repo {
        _dir: tempfile::TempDir,
        repo: Repository,
    }

    /// A bare repository with one commit holding `files`.
    fn repo_with(files: &[(&str, Item<'_>)]) -> (Repo, Oid) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let empty = repo.treebuilder(None).unwrap().write().unwrap();
        let mut update = TreeUpdateBuilder::new();
        for (path, item) in files {
            let (oid, mode) = match item {
                File(content) => (repo.blob(content.as_bytes()).unwrap(), FileMode::Blob),
                Exec(content) => (
                    repo.blob(content.as_bytes()).unwrap(),
                    FileMode::BlobExecutable,
                ),
                Link(target) => (repo.blob(target.as_bytes()).unwrap(), FileMode::Link),
                Submodule => (
                    Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap(),
                    FileMode::Commit,
                ),
            };
            update.upsert(*path, oid, mode);
        }
        let tree = {
            let empty = repo.find_tree(empty).unwrap();
            update.create_updated(&repo, &empty).unwrap()
        };
        let oid = {
            let tree = repo.find_tree(tree).unwrap();
            let signature =
                Signature::new("Kiln Test", "test@kiln.invalid", &Time::new(COMMIT_TIME, 0))
                    .unwrap();
            repo.commit(
                Some("refs/heads/main"),
                &signature,
                &signature,
                "c",
                &tree,
                &[],
            )
            .unwrap()
        };
        (Repo { _dir: dir, repo }, oid)
    }

    /// The tar as the daemon receives it: the chunks of the stream, collected.
    struct BuildContext {
        tar: Vec<u8>,
        dockerfile: String,
        files: usize,
        bytes: u64,
        chunks: Vec<usize>,
    }

    impl std::fmt::Debug for BuildContext {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "<a tar of {} bytes>", self.tar.len())
        }
    }

    fn build_context(
        repo: &Repository,
        commit: Oid,
        context_dir: &str,
        dockerfile: &str,
    ) -> Result<BuildContext, ContextError> {
        let plan = plan_context(repo.path(), repo, commit, context_dir, dockerfile)?;
        let mut stream = plan.stream();
        assert_eq!(stream.chunks.max_capacity(), PIPE_DEPTH);
        let (mut tar, mut chunks) = (Vec::new(), Vec::new());
        while let Some(chunk) = stream.chunks.blocking_recv() {
            let chunk = chunk?;
            assert!(!chunk.is_empty() && chunk.len() <= CHUNK_SIZE);
            chunks.push(chunk.len());
            tar.extend_from_slice(&chunk);
        }
        let summary = stream.finished.blocking_recv().unwrap()?;
        assert_eq!(summary.tar_bytes, tar.len() as u64);
        Ok(BuildContext {
            tar,
            dockerfile: plan.dockerfile,
            files: summary.files,
            bytes: summary.bytes,
            chunks,
        })
    }

    #[derive(Debug, PartialEq)]
    struct Entry {
        path: String,
        kind: char,
        mode: u32,
        contents: String,
    }

    fn entries(context: &BuildContext) -> Vec<Entry> {
        let mut archive = tar::Archive::new(context.tar.as_slice());
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header();
            assert_eq!(header.uid().unwrap(), 0);
            assert_eq!(header.gid().unwrap(), 0);
            assert_eq!(header.mtime().unwrap(), COMMIT_TIME as u64);
            let kind = match header.entry_type() {
                EntryType::Regular => 'f',
                EntryType::Directory => 'd',
                EntryType::Symlink => 'l',
                other => panic!("unexpected entry type {other:?}"),
            };
            let mode = header.mode().unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let contents = if kind == 'l' {
                entry
                    .link_name()
                    .unwrap()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            } else {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).unwrap();
                String::from_utf8_lossy(&bytes).into_owned()
            };
            out.push(Entry {
                path,
                kind,
                mode,
                contents,
            });
        }
        out
    }

    fn paths(context: &BuildContext) -> Vec<String> {
        entries(context).into_iter().map(|e| e.path).collect()
    }

    fn file(path: &str, mode: u32, contents: &str) -> Entry {
        Entry {
            path: path.to_string(),
            kind: 'f',
            mode,
            contents: contents.to_string(),
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.to_string(),
            kind: 'd',
            mode: 0o755,
            contents: String::new(),
        }
    }

    #[test]
    fn files_dirs_modes_and_symlinks() {
        let (r, commit) = repo_with(&[
            ("Dockerfile", File("FROM scratch\nCOPY . /app\n")),
            ("README.md", File("hello\n")),
            ("bin/run.sh", Exec("#!/bin/sh\necho run\n")),
            ("src/app/main.rs", File("fn main() {}\n")),
            ("latest", Link("src/app/main.rs")),
            ("vendor/lib", Submodule),
        ]);
        let context = build_context(&r.repo, commit, "", "Dockerfile").unwrap();
        assert_eq!(context.dockerfile, "Dockerfile");
        assert_eq!(
            entries(&context),
            vec![
                file("Dockerfile", 0o644, "FROM scratch\nCOPY . /app\n"),
                file("README.md", 0o644, "hello\n"),
                dir("bin/"),
                file("bin/run.sh", 0o755, "#!/bin/sh\necho run\n"),
                Entry {
                    path: "latest".into(),
                    kind: 'l',
                    mode: 0o777,
                    contents: "src/app/main.rs".into(),
                },
                dir("src/"),
                dir("src/app/"),
                file("src/app/main.rs", 0o644, "fn main() {}\n"),
                dir("vendor/"),
            ]
        );
        assert_eq!(context.files, 5);
        assert_eq!(context.bytes, (25 + 6 + 19 + 13) as u64);
        // "." is the root too.
        let again = build_context(&r.repo, commit, ".", "./Dockerfile").unwrap();
        assert_eq!(again.tar, context.tar);
    }

    #[test]
    fn long_paths_use_gnu_long_names() {
        let long_dir = "d".repeat(90);
        let long_path = format!("{long_dir}/{}/file-with-a-long-name.txt", "e".repeat(80));
        let long_target = format!("../{}", "t".repeat(150));
        let (r, commit) = repo_with(&[
            ("Dockerfile", File("FROM scratch\n")),
            (&long_path, File("deep\n")),
            ("link", Link(&long_target)),
        ]);
        let context = build_context(&r.repo, commit, "", "Dockerfile").unwrap();
        let all = entries(&context);
        let deep = all.iter().find(|e| e.path == long_path).unwrap();
        assert_eq!(deep.contents, "deep\n");
        let link = all.iter().find(|e| e.path == "link").unwrap();
        assert_eq!(link.contents, long_target);
    }

    #[test]
    fn a_sub_folder_context() {
        let (r, commit) = repo_with(&[
            ("README.md", File("root readme\n")),
            ("services/api/Dockerfile", File("FROM scratch\n")),
            ("services/api/src/lib.rs", File("// api\n")),
            ("services/web/index.html", File("<p>web</p>\n")),
        ]);
        let context =
            build_context(&r.repo, commit, "services/api", "services/api/Dockerfile").unwrap();
        assert_eq!(context.dockerfile, "Dockerfile");
        assert_eq!(paths(&context), ["Dockerfile", "src/", "src/lib.rs"]);
        // Trailing slashes and "./" are tolerated.
        let same = build_context(
            &r.repo,
            commit,
            "./services/api/",
            "services/api/Dockerfile",
        )
        .unwrap();
        assert_eq!(same.tar, context.tar);
    }

    #[test]
    fn a_dockerfile_in_a_sub_folder_of_the_context() {
        let (r, commit) = repo_with(&[
            (
                "docker/Dockerfile.prod",
                File("FROM scratch\nCOPY app /app\n"),
            ),
            ("docker/Dockerfile.dev", File("FROM scratch\n")),
            ("app", File("binary\n")),
        ]);
        let context = build_context(&r.repo, commit, "", "docker/Dockerfile.prod").unwrap();
        assert_eq!(context.dockerfile, "docker/Dockerfile.prod");
        assert_eq!(
            paths(&context),
            [
                "app",
                "docker/",
                "docker/Dockerfile.dev",
                "docker/Dockerfile.prod"
            ]
        );
    }

    #[test]
    fn labels_go_into_kilns_own_copy_of_the_dockerfile() {
        let (r, commit) = repo_with(&[
            (
                "Dockerfile",
                File("FROM scratch AS base\nCOPY . /app\nFROM base\n"),
            ),
            ("main.go", File("package main\n")),
        ]);
        let mut plan = plan_context(r.repo.path(), &r.repo, commit, "", "Dockerfile").unwrap();
        assert!(plan.label("base", &[("a", "1")]));
        assert_eq!(plan.dockerfile, ".kiln.Dockerfile");
        let mut tar = Vec::new();
        plan.write_tar(&mut tar).unwrap();
        let context = BuildContext {
            tar,
            dockerfile: plan.dockerfile.clone(),
            files: 0,
            bytes: 0,
            chunks: vec![],
        };
        assert_eq!(
            entries(&context),
            vec![
                // The repository's own Dockerfile reaches the build unchanged.
                file(
                    "Dockerfile",
                    0o644,
                    "FROM scratch AS base\nCOPY . /app\nFROM base\n"
                ),
                file("main.go", 0o644, "package main\n"),
                file(".dockerignore", 0o644, ".dockerignore\n.kiln.Dockerfile\n"),
                file(
                    ".kiln.Dockerfile",
                    0o644,
                    "FROM scratch AS base\nCOPY . /app\nLABEL \"a\"=\"1\"\nFROM base\n"
                ),
            ]
        );

        // A Dockerfile ending inside a continued line keeps the labels to the build option.
        let (r, commit) = repo_with(&[("Dockerfile", File("FROM scratch\nRUN a \\\n"))]);
        let mut plan = plan_context(r.repo.path(), &r.repo, commit, "", "Dockerfile").unwrap();
        assert!(!plan.label("", &[("a", "1")]));
        assert_eq!(plan.dockerfile, "Dockerfile");
    }

    #[test]
    fn a_context_relying_on_the_daemons_dockerignore_says_why() {
        let plan = |files: &[(&str, Item<'_>)], context_dir: &str, dockerfile: &str| {
            let (r, commit) = repo_with(files);
            plan_context(r.repo.path(), &r.repo, commit, context_dir, dockerfile)
                .unwrap()
                .needs_daemon_dockerignore()
        };
        let dockerfile = || ("Dockerfile", File("FROM scratch\n"));
        assert_eq!(plan(&[dockerfile()], "", "Dockerfile"), None);
        assert_eq!(
            plan(
                &[dockerfile(), (".dockerignore", File("*.md\n"))],
                "",
                "Dockerfile"
            ),
            None
        );
        for listed in ["Dockerfile\n", ".dockerignore\n", "*\n!src\n", "Docker*\n"] {
            assert_eq!(
                plan(
                    &[dockerfile(), (".dockerignore", File(listed))],
                    "",
                    "Dockerfile"
                ),
                Some("the context's .dockerignore lists the Dockerfile or itself"),
                "{listed:?}"
            );
        }
        // An exception keeps them in.
        assert_eq!(
            plan(
                &[
                    dockerfile(),
                    (".dockerignore", File("*\n!Dockerfile\n!.dockerignore\n"))
                ],
                "",
                "Dockerfile"
            ),
            None
        );
        // Paths inside the context directory.
        assert_eq!(
            plan(
                &[
                    ("api/build/Dockerfile", File("FROM scratch\n")),
                    ("api/.dockerignore", File("build/\n")),
                ],
                "api",
                "api/build/Dockerfile"
            ),
            Some("the context's .dockerignore lists the Dockerfile or itself")
        );
        assert_eq!(
            plan(
                &[
                    ("docker/Dockerfile", File("FROM scratch\n")),
                    ("api/main.go", File("package main\n")),
                ],
                "api",
                "docker/Dockerfile"
            ),
            Some("the Dockerfile lies outside the build context")
        );
    }

    #[test]
    fn a_dockerfile_outside_the_context() {
        let (r, commit) = repo_with(&[
            ("docker/api.Dockerfile", File("FROM scratch\nCOPY . /app\n")),
            ("api/main.go", File("package main\n")),
            ("api/.dockerignore", File("*.md")),
            ("api/NOTES.md", File("notes\n")),
        ]);
        let context = build_context(&r.repo, commit, "api", "docker/api.Dockerfile").unwrap();
        assert_eq!(context.dockerfile, ".kiln.Dockerfile");
        assert_eq!(
            entries(&context),
            vec![
                // listed in the context's .dockerignore, so the daemon drops it after reading
                file(".dockerignore", 0o644, "*.md\n.kiln.Dockerfile\n"),
                file("main.go", 0o644, "package main\n"),
                file(".kiln.Dockerfile", 0o644, "FROM scratch\nCOPY . /app\n"),
            ]
        );
        // The repository's .dockerignore and main.go; kiln's .kiln.Dockerfile is not counted.
        assert_eq!(context.files, 2);

        // Without a .dockerignore one is made, listing itself too.
        let (r, commit) = repo_with(&[
            ("Dockerfile", File("FROM scratch\n")),
            ("app/main.go", File("package main\n")),
            ("app/.kiln.Dockerfile", File("shadowed\n")),
            ("app/.kiln/notes", File("kept\n")),
        ]);
        let context = build_context(&r.repo, commit, "app", "Dockerfile").unwrap();
        assert_eq!(
            entries(&context),
            vec![
                dir(".kiln/"),
                file(".kiln/notes", 0o644, "kept\n"),
                file("main.go", 0o644, "package main\n"),
                file(".dockerignore", 0o644, ".dockerignore\n.kiln.Dockerfile\n"),
                file(".kiln.Dockerfile", 0o644, "FROM scratch\n"),
            ]
        );
    }

    #[test]
    fn missing_or_unusable_dockerfiles() {
        let (r, commit) = repo_with(&[
            ("src/main.rs", File("fn main() {}\n")),
            ("Dockerfile.link", Link("src/main.rs")),
            ("docker/Dockerfile/inner", File("x")),
            ("module", Submodule),
        ]);
        for dockerfile in [
            "Dockerfile",
            "src/Dockerfile",
            "Dockerfile.link",
            "docker/Dockerfile",
            "src",
            "module",
            "",
        ] {
            let error = build_context(&r.repo, commit, "", dockerfile).unwrap_err();
            assert!(
                matches!(error, ContextError::DockerfileNotFound(_)),
                "{dockerfile:?}: {error:?}"
            );
        }
        assert_eq!(
            build_context(&r.repo, commit, "", "docker/Dockerfile.prod")
                .unwrap_err()
                .to_string(),
            "Dockerfile not found at docker/Dockerfile.prod"
        );
    }

    #[test]
    fn missing_context_directories_and_invalid_paths() {
        let (r, commit) = repo_with(&[
            ("Dockerfile", File("FROM scratch\n")),
            ("file.txt", File("x")),
        ]);
        for context_dir in ["nope", "file.txt", "Dockerfile/x"] {
            let error = build_context(&r.repo, commit, context_dir, "Dockerfile").unwrap_err();
            assert!(
                matches!(&error, ContextError::ContextNotFound(d) if d == context_dir),
                "{context_dir:?}: {error:?}"
            );
        }
        assert_eq!(
            build_context(&r.repo, commit, "nope", "Dockerfile")
                .unwrap_err()
                .to_string(),
            "build context directory nope not found"
        );
        for (context_dir, dockerfile) in [
            ("../up", "Dockerfile"),
            ("/abs", "Dockerfile"),
            ("", "../Dockerfile"),
            ("", "/Dockerfile"),
            ("a/../..", "Dockerfile"),
        ] {
            let error = build_context(&r.repo, commit, context_dir, dockerfile).unwrap_err();
            assert!(
                matches!(error, ContextError::InvalidPath(_)),
                "{context_dir:?} {dockerfile:?}: {error:?}"
            );
        }
    }

    #[test]
    fn dockerignore_excludes_files_and_dirs_with_exceptions() {
        let (r, commit) = repo_with(&[
            ("Dockerfile", File("FROM scratch\n")),
            (
                ".dockerignore",
                File("# build output\ntarget\n*.md\n!README.md\ndocs\n!docs/api/**\n**/*.tmp\n"),
            ),
            ("README.md", File("keep\n")),
            ("CHANGELOG.md", File("drop\n")),
            ("target/debug/kiln", Exec("binary")),
            ("docs/guide/intro.txt", File("drop")),
            ("docs/api/v1/index.html", File("keep")),
            ("src/main.rs", File("keep")),
            ("src/cache.tmp", File("drop")),
            ("src/notes.md", File("kept: *.md only matches in the root")),
        ]);
        let context = build_context(&r.repo, commit, "", "Dockerfile").unwrap();
        assert_eq!(
            paths(&context),
            [
                ".dockerignore",
                "Dockerfile",
                "README.md",
                // docs is excluded, but something below it is kept: the directories come along
                "docs/",
                "docs/api/",
                "docs/api/v1/",
                "docs/api/v1/index.html",
                "src/",
                "src/main.rs",
                "src/notes.md",
            ]
        );
        // .dockerignore goes in unchanged.
        let all = entries(&context);
        assert!(all[0].contents.starts_with("# build output\ntarget\n"));
    }

    #[test]
    fn excluded_directories_without_exceptions_are_skipped_whole() {
        let (r, commit) = repo_with(&[
            ("Dockerfile", File("FROM scratch\n")),
            (".dockerignore", File("node_modules\n.git*\n")),
            ("node_modules/a/index.js", File("x")),
            ("node_modules/b/index.js", File("x")),
            (".gitignore", File("x")),
            (".github/workflows/ci.yml", File("x")),
            ("index.js", File("x")),
        ]);
        let context = build_context(&r.repo, commit, "", "Dockerfile").unwrap();
        assert_eq!(paths(&context), [".dockerignore", "Dockerfile", "index.js"]);
    }

    #[test]
    fn the_dockerfile_and_dockerignore_are_sent_even_when_excluded() {
        let (r, commit) = repo_with(&[
            ("Dockerfile", File("FROM scratch\n")),
            (".dockerignore", File("Dockerfile\n.dockerignore\n*\n")),
            ("app.py", File("print()\n")),
        ]);
        let context = build_context(&r.repo, commit, "", "Dockerfile").unwrap();
        assert_eq!(paths(&context), [".dockerignore", "Dockerfile"]);

        // A Dockerfile under an excluded directory, no exceptions in the file.
        let (r, commit) = repo_with(&[
            ("docker/Dockerfile.prod", File("FROM scratch\n")),
            ("docker/other", File("x")),
            (".dockerignore", File("docker\n")),
            ("app.py", File("print()\n")),
        ]);
        let context = build_context(&r.repo, commit, "", "docker/Dockerfile.prod").unwrap();
        assert_eq!(
            paths(&context),
            [
                ".dockerignore",
                "app.py",
                "docker/",
                "docker/Dockerfile.prod"
            ]
        );
    }

    #[test]
    fn the_dockerignore_of_the_context_dir_is_the_one_used() {
        let (r, commit) = repo_with(&[
            (".dockerignore", File("*\n")),
            ("svc/Dockerfile", File("FROM scratch\n")),
            ("svc/.dockerignore", File("secret.txt\n")),
            ("svc/secret.txt", File("x")),
            ("svc/code.txt", File("x")),
            ("svc/sub/.dockerignore", File("code.txt\n")),
            ("svc/sub/code.txt", File("x")),
        ]);
        let context = build_context(&r.repo, commit, "svc", "svc/Dockerfile").unwrap();
        assert_eq!(
            paths(&context),
            [
                ".dockerignore",
                "Dockerfile",
                "code.txt",
                "sub/",
                "sub/.dockerignore",
                "sub/code.txt"
            ]
        );
    }

    #[test]
    fn the_same_commit_gives_the_same_bytes() {
        let files = [
            ("Dockerfile", File("FROM scratch\n")),
            (".dockerignore", File("*.log\n")),
            ("a/b/c.txt", File("c")),
            ("run", Exec("#!/bin/sh\n")),
            ("x.log", File("log")),
            ("link", Link("a/b/c.txt")),
        ];
        let (r, commit) = repo_with(&files);
        let first = build_context(&r.repo, commit, "", "Dockerfile").unwrap();
        let second = build_context(&r.repo, commit, "", "Dockerfile").unwrap();
        assert_eq!(first.tar, second.tar);
        assert_eq!((first.files, first.bytes), (second.files, second.bytes));
        // Another repository with the same tree and commit time gives the same bytes too.
        let (other, other_commit) = repo_with(&files);
        let third = build_context(&other.repo, other_commit, "", "Dockerfile").unwrap();
        assert_eq!(first.tar, third.tar);
        assert_eq!(first.tar.len() % 512, 0);
        assert_eq!((first.files, first.bytes), (5, 30));
    }

    /// Incompressible bytes, so neither git nor the test can shrink them.
    fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn a_large_context_streams_in_bounded_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let big = noise(3 * 1024 * 1024 + 17, 7);
        let mut tree = repo.treebuilder(None).unwrap();
        let dockerfile = repo.blob(b"FROM scratch\nCOPY . /\n").unwrap();
        tree.insert("Dockerfile", dockerfile, 0o100644).unwrap();
        tree.insert("big.bin", repo.blob(&big).unwrap(), 0o100644)
            .unwrap();
        let tree = repo.find_tree(tree.write().unwrap()).unwrap();
        let who =
            Signature::new("Kiln Test", "test@kiln.invalid", &Time::new(COMMIT_TIME, 0)).unwrap();
        let commit = repo
            .commit(Some("refs/heads/main"), &who, &who, "big", &tree, &[])
            .unwrap();

        let context = build_context(&repo, commit, "", "Dockerfile").unwrap();
        // Every chunk is full but the last: the tar went through the pipe a chunk at a time.
        let (last, full) = context.chunks.split_last().unwrap();
        assert!(
            full.iter().all(|&n| n == CHUNK_SIZE),
            "{:?}",
            context.chunks
        );
        assert!(*last <= CHUNK_SIZE);
        assert!(context.chunks.len() > 3 * 1024 * 1024 / CHUNK_SIZE);
        let all = entries(&context);
        assert_eq!(all[1].path, "big.bin");
        let mut archive = tar::Archive::new(context.tar.as_slice());
        let mut file = archive.entries().unwrap().nth(1).unwrap().unwrap();
        let mut read = Vec::new();
        file.read_to_end(&mut read).unwrap();
        assert!(read == big, "big.bin comes out as it went in");

        // The same tree read from a pack (as a fetched mirror holds it) gives the same bytes.
        let packed_dir = tempfile::tempdir().unwrap();
        let packed = Repository::init_bare(packed_dir.path()).unwrap();
        packed
            .remote_anonymous(&format!("file://{}", dir.path().display()))
            .unwrap()
            .fetch(&["+refs/heads/*:refs/heads/*"], None, None)
            .unwrap();
        assert!(packed.odb().unwrap().reader(commit).is_err(), "packed");
        let from_pack = build_context(&packed, commit, "", "Dockerfile").unwrap();
        assert!(from_pack.tar == context.tar);
    }

    #[test]
    fn the_producer_stops_when_nobody_reads_and_says_why_it_failed() {
        // More than the pipe holds: the producer must wait for a reader, whenever it runs.
        let big = "x".repeat((PIPE_DEPTH + 2) * CHUNK_SIZE);
        let (r, commit) = repo_with(&[
            ("Dockerfile", File("FROM scratch\n")),
            ("a.txt", File("a")),
            ("big.txt", File(&big)),
        ]);
        let plan = plan_context(r.repo.path(), &r.repo, commit, "", "Dockerfile").unwrap();

        // The reader goes away (the build failed): the producer ends with a broken pipe.
        let stream = plan.stream();
        let ContextStream { chunks, finished } = stream;
        drop(chunks);
        let error = finished.blocking_recv().unwrap().unwrap_err();
        assert!(
            error
                .to_string()
                .contains("stopped reading the build context"),
            "{error}"
        );

        // The mirror is gone: the body ends with an error item, and the reason comes out.
        let gone = plan_context(r.repo.path(), &r.repo, commit, "", "Dockerfile").unwrap();
        drop(r);
        let mut stream = gone.stream();
        let mut items = Vec::new();
        while let Some(item) = stream.chunks.blocking_recv() {
            items.push(item);
        }
        assert!(matches!(items.last(), Some(Err(_))), "{items:?}");
        let error = stream.finished.blocking_recv().unwrap().unwrap_err();
        assert!(matches!(error, ContextError::Git(_)), "{error:?}");
        assert!(!error.is_reader_gone());
    }

    #[test]
    fn normalising_paths() {
        assert_eq!(normalise("").unwrap(), "");
        assert_eq!(normalise(".").unwrap(), "");
        assert_eq!(normalise("./a//b/").unwrap(), "a/b");
        assert!(matches!(
            normalise("a/../b"),
            Err(ContextError::InvalidPath(_))
        ));
        assert!(matches!(normalise("/a"), Err(ContextError::InvalidPath(_))));
    }
}
