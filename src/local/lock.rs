//! Cross-process exclusive file locks, held as RAII guards. The kubeconfig
//! writer and the exec plugin's token cache both do read → change → write on
//! files that other infra processes (parallel `kubectl` calls, a second
//! `infra login`) touch at the same moment; holding one of these across the
//! whole sequence is what keeps their updates from overwriting each other.
//!
//! The lock is the operating system's advisory lock on a small lock file
//! (`flock` on Unix, `LockFileEx` on Windows, through `std::fs::File::lock`),
//! so a process that dies holding it releases it: there is never a stale lock
//! to clean up. The lock file itself stays in place: removing it on release
//! would let a waiter lock a file that is no longer the one others open.
//! Uncontended, taking the lock costs an open and a system call.

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
        let file = open_lock_file(path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => {
                    return Ok(FileLock {
                        file,
                        path: path.to_path_buf(),
                    });
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("cannot lock the lock file {}", path.display())));
                }
            }
            let waited = start.elapsed();
            if waited >= timeout {
                anyhow::bail!(
                    "another infra process holds the lock file {} (waited {}); \
                     wait for it to finish, or stop it, and try again",
                    path.display(),
                    humantime::format_duration(timeout)
                );
            }
            std::thread::sleep(pause.min(timeout - waited));
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
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
