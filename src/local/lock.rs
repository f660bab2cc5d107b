//! Cross-process exclusive file locks, held as RAII guards. The kubeconfig
//! writer and the exec plugin's token cache both do read → change → write on
//! files that other infra processes (parallel `kubectl` calls, a second
//! `infra login`) touch at the same moment; holding one of these across the
//! whole sequence is what keeps their updates from overwriting each other.
//!
//! The lock is the operating system's advisory lock on a small lock file
//! (`flock` on Unix, `LockFileEx` on Windows, through `std::fs::File::lock`),
//! so a process that dies holding it releases it: a lock is never stale,
//! only its file can be left over. Releasing the lock leaves the file in
//! place; a holder that wants it gone (the token cache at logout) calls
//! [`FileLock::remove`], which deletes it while still holding the lock. A
//! waiter may then get the lock of a file that is no longer at the path, so
//! on Unix every acquisition checks, once locked, that the path still names
//! the locked file (same device and inode) and starts over on the new file
//! if not. Elsewhere lock files are never removed.
//! Uncontended, taking the lock costs an open, the lock call and two stats.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::fsutil::create_private_dir;

/// The longest pause between two attempts while waiting.
const MAX_PAUSE: Duration = Duration::from_millis(20);

/// An exclusive lock on a file, released when dropped.
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Locks `path`, creating it (mode 0600) and its parent directory (0700)
    /// if missing. Waits, in short sleeps, at most `timeout` for another
    /// holder to let go, then fails with an error naming the lock file.
    pub fn acquire(path: &Path, timeout: Duration) -> anyhow::Result<FileLock> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)
                .with_context(|| format!("cannot create the directory {}", dir.display()))?;
        }
        let start = Instant::now();
        let timed_out = || {
            anyhow::anyhow!(
                "another infra process holds the lock file {} (waited {}); \
                 wait for it to finish, or stop it, and try again",
                path.display(),
                humantime::format_duration(timeout)
            )
        };
        let mut pause = Duration::from_millis(1);
        'open: loop {
            let file = open_lock_file(path)
                .with_context(|| format!("cannot open the lock file {}", path.display()))?;
            loop {
                match file.try_lock() {
                    Ok(()) => {
                        if still_at(&file, path) {
                            return Ok(FileLock {
                                file,
                                path: path.to_path_buf(),
                            });
                        }
                        // The holder before removed the file (see `remove`):
                        // this lock guards nothing; lock the path's new file.
                        if start.elapsed() >= timeout {
                            return Err(timed_out());
                        }
                        continue 'open;
                    }
                    Err(TryLockError::WouldBlock) => {}
                    Err(TryLockError::Error(e)) => {
                        return Err(anyhow::Error::new(e)
                            .context(format!("cannot lock the lock file {}", path.display())));
                    }
                }
                let waited = start.elapsed();
                if waited >= timeout {
                    return Err(timed_out());
                }
                std::thread::sleep(pause.min(timeout - waited));
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes the lock file, then releases the lock. Whoever waits for it
    /// notices and locks a new file (see the module's comment). Outside Unix
    /// the file stays, as a waiter could not notice there.
    pub fn remove(self) -> std::io::Result<()> {
        #[cfg(unix)]
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// Whether `path` still names the open `file` (Unix: same device and inode).
#[cfg(unix)]
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Lock files are never removed outside Unix, so the path names the file.
#[cfg(not(unix))]
fn still_at(_file: &File, _path: &Path) -> bool {
    true
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first makes the
        // release not depend on every handle to the file being closed.
        let _ = self.file.unlock();
    }
}

fn open_lock_file(path: &Path) -> std::io::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    // Write access: Windows needs it for an exclusive lock. No truncation:
    // the file's content is never used.
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn creates_private_file_and_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("new-dir");
        let path = dir.join("x.lock");
        let lock = FileLock::acquire(&path, Duration::from_secs(1)).unwrap();
        assert_eq!(lock.path(), path);
        assert!(path.is_file());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(&dir), 0o700);
        }
        drop(lock);
        // Released: taken again at once, and the file stays.
        let started = Instant::now();
        let _again = FileLock::acquire(&path, Duration::ZERO).unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(path.is_file());
    }

    #[test]
    fn second_acquire_waits_until_first_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.lock");
        let first = FileLock::acquire(&path, Duration::from_secs(1)).unwrap();
        let released = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (path, released) = (path.clone(), released.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let lock = FileLock::acquire(&path, Duration::from_secs(20)).unwrap();
                // Only possible once the first guard is gone.
                assert!(released.load(Ordering::SeqCst), "got the lock while held");
                drop(lock);
                started.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(!waiter.is_finished(), "the second acquire did not wait");
        released.store(true, Ordering::SeqCst);
        drop(first);
        let waited = waiter.join().unwrap();
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert!(waited < Duration::from_secs(10), "{waited:?}");
    }

    #[cfg(unix)]
    #[test]
    fn a_removed_lock_file_is_not_what_a_waiter_ends_up_holding() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.lock");
        let first = FileLock::acquire(&path, Duration::from_secs(1)).unwrap();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                // It opens the old file and waits on it.
                let lock = FileLock::acquire(&path, Duration::from_secs(20)).unwrap();
                let held = lock.file.metadata().unwrap().ino();
                let at_path = std::fs::metadata(&path).unwrap().ino();
                (held, at_path)
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        first.remove().unwrap();
        let (held, at_path) = waiter.join().unwrap();
        assert_eq!(held, at_path, "the waiter holds the file at the path");
        assert!(path.is_file(), "the waiter made a new lock file");
        // Removing a lock nobody waits for leaves nothing behind.
        let lock = FileLock::acquire(&path, Duration::from_secs(1)).unwrap();
        lock.remove().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn timeout_names_the_lock_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("cache.lock");
        let _held = FileLock::acquire(&path, Duration::from_secs(1)).unwrap();
        let p = path.clone();
        let started = Instant::now();
        let err = std::thread::spawn(move || FileLock::acquire(&p, Duration::from_millis(150)))
            .join()
            .unwrap()
            .unwrap_err();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        let msg = format!("{err:#}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("another infra process holds"), "{msg}");
        assert!(msg.contains("150ms"), "{msg}");
    }
}
