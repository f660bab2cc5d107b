//! kubectl's own lock on the kubeconfig (`<file>.lock`, see
//! [`KubectlLock`]): taking it as client-go does, and telling a stale one
//! left by a killed writer (from the infra process and machine written in
//! it, or its age), so that it is removed and reported ([`StaleLock`])
//! rather than blocking kubectl for good.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;

/// `path` with `suffix` added to its name: the lock files beside a kubeconfig.
pub(super) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// client-go's kubeconfig lock: `<file>.lock`, created exclusively and
/// removed when done (client-go's `clientcmd` `lockFile`/`unlockFile`).
///
/// What "stale" means. client-go holds this file only for the moment of a
/// write (`ModifyConfig`: create it, write the kubeconfig, remove it); it
/// never waits for it and never cleans one up, so while one is left over
/// every `kubectl config ...` that writes fails at once with "open
/// .../config.lock: file exists", until someone deletes it by hand. A lock
/// file that stays is therefore one whose writer was killed between create
/// and remove. Infra writes `infra PID MACHINE` into its own (client-go's
/// are empty, mode 0); MACHINE is this boot of this machine and its PID
/// namespace, the scope in which a PID means something. A lock is stale, and
/// infra removes it, says so, and takes its own, when:
/// - it names an infra process of this MACHINE that no longer runs (at
///   once: the usual case of an infra killed while writing); or
/// - it names none (client-go's, another machine's, unreadable) and is older
///   than [`STALE_AFTER`], thousands of times longer than a write holds it.
///
/// A lock naming a live infra process of this MACHINE is respected for up to
/// [`MAX_HELD`] (after that its PID was surely reused by another program).
/// Infra waits for a lock that is not stale, then fails with an error that
/// says what to do. Before removing a stale lock it checks that the file is
/// still the one it judged (same inode and modification time): a writer
/// that took the lock in between keeps it. (The window between that check
/// and the removal, microseconds after the file sat there for seconds, is
/// left open: closing it would take a real lock, which client-go does not.)
pub(super) struct KubectlLock(PathBuf);

/// A lock file that names no live infra process is stale after this long.
const STALE_AFTER: Duration = Duration::from_secs(10);
/// A lock file that names a live infra process is stale after this long.
const MAX_HELD: Duration = Duration::from_secs(300);

/// A stale kubectl lock that was removed, for the caller to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleLock {
    /// The lock file.
    pub path: PathBuf,
    /// Why it was stale, e.g. "left by infra process 123, which no longer
    /// runs".
    pub why: String,
}

impl fmt::Display for StaleLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "removed the stale lock file {} ({}); kubectl had refused to change the \
             kubeconfig while it was there",
            self.path.display(),
            self.why
        )
    }
}

impl KubectlLock {
    /// Creates the lock, waiting at most `timeout` for a live one and
    /// removing a stale one (returned, to be reported).
    pub(super) fn acquire(
        kubeconfig: &Path,
        timeout: Duration,
    ) -> anyhow::Result<(KubectlLock, Option<StaleLock>)> {
        let path = sibling(kubeconfig, ".lock");
        let start = Instant::now();
        let mut removed = None;
        let mut holder = None;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    // Best effort: an empty lock is a valid lock too.
                    let _ = f.write_all(own_lock_text().as_bytes());
                    return Ok((KubectlLock(path), removed));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("cannot create the lock file {}", path.display())));
                }
            }
            match inspect(&path) {
                Some(Holder {
                    id,
                    stale: Some(why),
                    ..
                }) => {
                    // Only the file that was judged, not one a writer has
                    // created since.
                    if lock_id(&path) == Some(id) {
                        match std::fs::remove_file(&path) {
                            Ok(()) => {
                                removed = Some(StaleLock {
                                    path: path.clone(),
                                    why,
                                })
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => {
                                return Err(anyhow::Error::new(e).context(format!(
                                    "cannot remove the stale lock file {} ({why})",
                                    path.display()
                                )));
                            }
                        }
                    }
                    continue;
                }
                Some(h) => holder = h.pid,
                None => {}
            }
            if start.elapsed() >= timeout {
                let who = match holder {
                    Some(pid) => format!("infra process {pid} is changing the kubeconfig"),
                    None => "kubectl (or another client-go program) is changing the kubeconfig"
                        .to_string(),
                };
                bail!(
                    "the lock file {} exists, so {who} (waited {}); if nothing is, \
                     remove it and try again",
                    path.display(),
                    humantime::format_duration(timeout)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for KubectlLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What is known of an existing kubectl lock file.
struct Holder {
    /// Which file it is (see [`lock_id`]).
    id: (u64, u64, Option<std::time::SystemTime>),
    /// The infra process named in it, if it names one of this machine.
    pid: Option<u32>,
    /// Why it is stale, if it is.
    stale: Option<String>,
}

/// The identity of the file at `path`: device, inode, modification time.
fn lock_id(path: &Path) -> Option<(u64, u64, Option<std::time::SystemTime>)> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let (dev, ino) = {
        use std::os::unix::fs::MetadataExt;
        (m.dev(), m.ino())
    };
    #[cfg(not(unix))]
    let (dev, ino) = (0, 0);
    Some((dev, ino, m.modified().ok()))
}

/// Looks at the lock file at `path`; `None` when it is gone.
fn inspect(path: &Path) -> Option<Holder> {
    let id = lock_id(path)?;
    let age =
        id.2.and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
    // client-go's are empty and unreadable (mode 0): no content, then.
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let named = parse_lock_text(&text)
        .filter(|(_, machine)| Some(machine.as_str()) == this_machine().as_deref())
        .map(|(pid, _)| pid);
    let alive = named.and_then(process_alive);
    let (pid, stale) = judge_lock(age, named, alive);
    Some(Holder { id, pid, stale })
}

/// Whether a kubectl lock file of age `age` is stale, and why, given the
/// infra process of this machine it names (if any) and whether that runs
/// (if known). Returns the PID worth naming in an error, and the reason.
fn judge_lock(
    age: Duration,
    named: Option<u32>,
    alive: Option<bool>,
) -> (Option<u32>, Option<String>) {
    let old = |limit: Duration| {
        (age > limit).then(|| {
            format!(
                "it was {} old, far longer than a write takes",
                humantime::format_duration(Duration::from_secs(age.as_secs()))
            )
        })
    };
    match (named, alive) {
        (Some(pid), Some(false)) => (
            None,
            Some(format!("left by infra process {pid}, which no longer runs")),
        ),
        (Some(pid), Some(true)) => (Some(pid), old(MAX_HELD)),
        _ => (None, old(STALE_AFTER)),
    }
}

/// What infra writes into its kubectl lock: `infra PID MACHINE`.
fn own_lock_text() -> String {
    format!(
        "infra {} {}\n",
        std::process::id(),
        this_machine().unwrap_or_else(|| "-".into())
    )
}

/// `(pid, machine)` from a lock file's text written by [`own_lock_text`].
fn parse_lock_text(text: &str) -> Option<(u32, String)> {
    let mut words = text.split_whitespace();
    if words.next()? != "infra" {
        return None;
    }
    let pid = words.next()?.parse().ok()?;
    let machine = words.next()?.to_string();
    words.next().is_none().then_some((pid, machine))
}

/// This boot of this machine and this process's PID namespace (Linux:
/// the kernel's boot id and the namespace's inode), the scope in which a
/// PID names one process; `None` where that cannot be told.
fn this_machine() -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
        let ns = ns
            .to_str()?
            .trim_start_matches("pid:[")
            .trim_end_matches(']');
        let id = format!("{}/{ns}", boot.trim());
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'/')
            .then_some(id)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Whether process `pid` of this machine runs (a zombie does not); `None`
/// when that cannot be told.
fn process_alive(pid: u32) -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the command name, which is in parentheses.
            Ok(stat) => Some(!matches!(
                stat.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().chars().next()),
                Some(Some('Z' | 'X'))
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
            Err(_) => None,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{A, EXE, cl, names, read_doc, strings};
    use super::super::write_infra_entries;
    use super::*;

    #[test]
    fn when_a_kubectl_lock_is_stale() {
        let s = Duration::from_secs;
        // No infra process named: by age.
        assert_eq!(judge_lock(s(1), None, None), (None, None));
        assert_eq!(judge_lock(s(10), None, None), (None, None));
        let why = judge_lock(s(3725), None, None).1.unwrap();
        assert!(why.contains("1h 2m 5s old"), "{why}");
        // Named, not running: at once.
        let why = judge_lock(s(0), Some(7), Some(false)).1.unwrap();
        assert!(
            why.contains("infra process 7, which no longer runs"),
            "{why}"
        );
        // Named and running: respected, for a while.
        assert_eq!(judge_lock(s(200), Some(7), Some(true)), (Some(7), None));
        assert!(judge_lock(s(301), Some(7), Some(true)).1.is_some());
        // Named, but whether it runs cannot be told: by age.
        assert_eq!(judge_lock(s(1), Some(7), None), (None, None));
        assert!(judge_lock(s(11), Some(7), None).1.is_some());

        let own = own_lock_text();
        let (pid, machine) = parse_lock_text(&own).unwrap();
        assert_eq!(pid, std::process::id());
        assert_eq!(Some(machine), this_machine().or(Some("-".into())));
        for other in ["", "infra", "infra x m", "infra 1 m extra", "kubectl 1 m"] {
            assert_eq!(parse_lock_text(other), None, "{other:?}");
        }
    }

    #[test]
    fn an_old_lock_is_removed_and_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config");
        let kubectl_lock = sibling(&path, ".lock");
        // As client-go leaves it: empty, created a minute ago.
        let f = std::fs::File::create(&kubectl_lock).unwrap();
        f.set_modified(std::time::SystemTime::now() - Duration::from_secs(60))
            .unwrap();
        drop(f);
        let started = Instant::now();
        let s = write_infra_entries(&path, A, Path::new(EXE), &[cl("prod", None)]).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        let stale = s.stale_lock.unwrap();
        assert_eq!(stale.path, kubectl_lock);
        assert!(stale.why.contains("1m old"), "{}", stale.why);
        assert!(
            stale.to_string().contains("removed the stale lock file"),
            "{stale}"
        );
        assert!(!kubectl_lock.exists(), "infra removed its own too");
        assert_eq!(names(&read_doc(&path), "users"), strings(&["infra:prod"]));
        // Without a stale lock, nothing is reported.
        let s = write_infra_entries(&path, A, Path::new(EXE), &[cl("dev", None)]).unwrap();
        assert_eq!(s.stale_lock, None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_lock_of_a_killed_infra_goes_at_once_and_a_live_ones_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config");
        let kubectl_lock = sibling(&path, ".lock");
        let machine = this_machine().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let dead = child.id();
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::write(&kubectl_lock, format!("infra {dead} {machine}\n")).unwrap();
        let (lock, stale) = KubectlLock::acquire(&path, Duration::from_millis(100)).unwrap();
        let stale = stale.unwrap();
        assert!(
            stale.why.contains(&format!("process {dead}")),
            "{}",
            stale.why
        );
        assert_eq!(
            std::fs::read_to_string(&kubectl_lock).unwrap(),
            own_lock_text(),
            "now it is ours"
        );
        drop(lock);
        assert!(!kubectl_lock.exists());

        // This process runs: its lock is waited for, then named.
        std::fs::write(&kubectl_lock, own_lock_text()).unwrap();
        let e = KubectlLock::acquire(&path, Duration::from_millis(150))
            .err()
            .unwrap();
        let msg = format!("{e:#}");
        assert!(
            msg.contains(&format!("infra process {} is changing", std::process::id())),
            "{msg}"
        );
        assert!(kubectl_lock.exists());
        // One of another machine (or boot) is judged by its age: fresh, kept.
        std::fs::write(&kubectl_lock, format!("infra {dead} other-machine\n")).unwrap();
        assert!(KubectlLock::acquire(&path, Duration::from_millis(100)).is_err());
        assert!(kubectl_lock.exists());
    }

    #[test]
    fn waits_for_kubectls_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config");
        let kubectl_lock = sibling(&path, ".lock");
        std::fs::write(&kubectl_lock, "").unwrap();
        let e = KubectlLock::acquire(&path, Duration::from_millis(100))
            .err()
            .unwrap();
        assert!(kubectl_lock.exists(), "a fresh lock is respected");
        let msg = format!("{e:#}");
        assert!(msg.contains(&kubectl_lock.display().to_string()), "{msg}");
        assert!(msg.contains("remove it"), "{msg}");

        let remover = {
            let l = kubectl_lock.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                std::fs::remove_file(l).unwrap();
            })
        };
        let started = Instant::now();
        write_infra_entries(&path, A, Path::new(EXE), &[cl("prod", None)]).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250));
        remover.join().unwrap();
        assert!(!kubectl_lock.exists());
        assert_eq!(names(&read_doc(&path), "users"), strings(&["infra:prod"]));
    }
}
