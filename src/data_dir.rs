//! One kiln per data directory: an exclusive lock on `{data_dir}/kiln.lock`, held while the server runs.
//!
//! Two servers over one data directory would each take the other's work for abandoned: the second marks
//! the first one's running builds failed ("interrupted") and releases its delivery claims. The lock is an
//! advisory `flock` on an open file, so the kernel drops it when the holder exits, however it exits: no
//! stale lock survives a crash. The holder's PID is written into the file for the refusal message.
//!
//! A lock found held is tried again for up to [`LOCK_WAIT`] before the refusal: the open file
//! description carrying the lock is shared with any child process forked by this process (or by the
//! previous kiln, exiting) until that child's `exec` closes it, so a lock just released can stay held
//! for a moment by a child that is being started (a `git`, a registry in the tests) on a busy machine.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "kiln.lock";

/// How long a held lock is tried again before kiln refuses to start.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The held lock; dropping it releases the data directory.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Creates the data directory if needed and locks it, or fails with one line naming the directory
    /// and, when it is known, the PID of the kiln holding it.
    pub fn acquire(data_dir: &Path) -> anyhow::Result<DataDirLock> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        let path = data_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let locked = loop {
            match file.try_lock() {
                Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other,
            }
        };
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = read_pid(&mut file)
                    .map(|pid| format!(" (pid {pid})"))
                    .unwrap_or_default();
                bail!(
                    "data dir {} is in use by another kiln{holder}: stop it first, or give this one \
                     its own KILN_DATA_DIR",
                    data_dir.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        // Ours now: record who holds it (best effort, the lock itself is what counts).
        let pid = std::process::id();
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{pid}"))
            .and_then(|()| file.flush());
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the pid into the lock file");
        }
        Ok(DataDirLock { _file: file, path })
    }

    /// `{data_dir}/kiln.lock`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let first = DataDirLock::acquire(&data_dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(first.path()).unwrap().trim(),
            std::process::id().to_string()
        );
        let refused = DataDirLock::acquire(&data_dir).unwrap_err().to_string();
        assert_eq!(
            refused,
            format!(
                "data dir {} is in use by another kiln (pid {}): stop it first, or give this one \
                 its own KILN_DATA_DIR",
                data_dir.display(),
                std::process::id()
            )
        );
        drop(first);
        let again = DataDirLock::acquire(&data_dir).unwrap();
        drop(again);
    }

    #[test]
    fn a_lock_released_within_the_wait_is_taken() {
        // What a forked child does: it holds the lock's file description for a moment after the
        // holder has let it go.
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(first);
        });
        let started = std::time::Instant::now();
        let second = DataDirLock::acquire(dir.path()).unwrap();
        assert!(started.elapsed() >= std::time::Duration::from_millis(250));
        release.join().unwrap();
        drop(second);
    }
}
