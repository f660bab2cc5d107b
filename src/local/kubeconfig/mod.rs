//! The kubeconfig entries infra manages: per destination a cluster, a user
//! whose credential comes from `infra tokens create` (kubectl's exec
//! plugin) and a context per namespace, all named `infra:DEST[.NS]`.
//!
//! The kubeconfig is the user's file, shared with kubectl and every other
//! tool, so this module changes only what it owns and keeps the rest with
//! the same meaning. An `infra:*` entry belongs to the server named in its
//! user's exec arguments (`--server SERVER`); writing for one server replaces
//! exactly that server's entries and never touches another server's, nor any
//! entry infra did not write, whose order is kept. The file is parsed into an
//! ordered, typed YAML tree (not a kubeconfig struct), so fields infra does
//! not know survive; comments and layout do not. Scalars are read the way
//! kubectl reads them (YAML 1.1: `yes` is a boolean, `0123` octal), and
//! strings are written quoted wherever another reading could take them for
//! something else, so `"yes"`, `"0123"` and `"1.10"` stay strings.
//!
//! Every change is a locked read → change → write: a [`FileLock`] on
//! `<file>.infra.lock` keeps parallel infra processes in turn, and kubectl's
//! own lock (`<file>.lock`, created exclusively and removed afterwards, as
//! client-go does) keeps infra and `kubectl config` from overwriting each
//! other. Infra's lock has its own name because kubectl refuses to write
//! while a `<file>.lock` exists, and infra's lock file stays in place. A
//! `<file>.lock` left by a killed writer would block kubectl for good;
//! infra recognises a stale one (see `KubectlLock`), removes it and says so,
//! and never leaves its own behind: it removes it when done, and writes its
//! PID into it so that the next infra removes it at once if infra is killed
//! in between. The new file is written to a temporary file next to it and
//! renamed over it, mode 0600; a symlinked kubeconfig is written through to
//! its target.
//!
//! **How it is split.** This file is the public API: where the kubeconfig
//! is, what a write takes and reports, and writing or removing a server's
//! entries as one locked read → merge → write of the whole file. The parts:
//! - `yaml`: the typed YAML tree and its serde impls; parsing a kubeconfig
//!   the way kubectl reads it, and writing it back;
//! - `entries`: the cluster, user and contexts infra writes for each
//!   destination;
//! - `merge`: the ownership and merge rules: which server each `infra:*`
//!   entry belongs to, this server's stale entries removed, other servers'
//!   entries and entries infra did not write kept where they are;
//! - `contexts`: reading the contexts and setting `current-context` (`infra
//!   list`, `infra use`);
//! - `lock`: kubectl's `<file>.lock`, and when one left behind is stale.
//!
//! Their public items are re-exported here, so callers name
//! `kubeconfig::ITEM`.

mod contexts;
mod entries;
mod lock;
mod merge;
#[cfg(test)]
mod testing;
mod yaml;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use self::entries::{Destination, wanted_entries};
use self::lock::{KubectlLock, sibling};
use self::merge::merge;
use self::yaml::{parse, to_yaml};
use crate::local::lock::FileLock;

pub use contexts::{Contexts, InfraContext, Switched, read_contexts, set_current_context};
pub use lock::StaleLock;

/// The prefix of every entry name infra writes.
pub const PREFIX: &str = "infra:";

/// How long a write waits for other writers of the same kubeconfig.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// The kubeconfig kubectl uses: the first non-empty entry of `KUBECONFIG`,
/// else `~/.kube/config`.
pub fn kubeconfig_path() -> PathBuf {
    path_from(std::env::var_os("KUBECONFIG").as_deref(), dirs::home_dir())
}

fn path_from(kubeconfig: Option<&OsStr>, home: Option<PathBuf>) -> PathBuf {
    if let Some(first) =
        kubeconfig.and_then(|v| std::env::split_paths(v).find(|p| !p.as_os_str().is_empty()))
    {
        return first;
    }
    home.unwrap_or_default().join(".kube").join("config")
}

/// One context to write: a destination (and namespace) the user may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfraCluster {
    /// The destination's name; it names the cluster and user entries.
    pub destination: String,
    /// The namespace for the context, when the grant is for one.
    pub namespace: Option<String>,
    /// The connector's URL.
    pub url: String,
    /// The connector's CA certificate (PEM); empty to use the system roots.
    pub ca_pem: String,
}

/// What a write changed, by context name. Nothing is printed here: the
/// caller says it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Contexts that were not in the file.
    pub added: Vec<String>,
    /// Contexts that were, and whose context, cluster or user entry changed.
    pub updated: Vec<String>,
    /// This server's contexts that were removed.
    pub removed: Vec<String>,
    /// Contexts not written because an entry of the same name belongs to
    /// another server; they stay as they are.
    pub skipped: Vec<Skipped>,
    /// The kubeconfig, as given.
    pub path: PathBuf,
    /// A lock file left by a killed writer, removed to make this change.
    pub stale_lock: Option<StaleLock>,
}

/// A context left out of a write (see [`Summary::skipped`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The context name infra would have written.
    pub context: String,
    /// The server whose entry already has that name.
    pub owner: String,
}

/// The context name for a destination and namespace: `infra:DEST` or
/// `infra:DEST.NS`.
pub fn context_name(destination: &str, namespace: Option<&str>) -> String {
    match namespace.filter(|ns| !ns.is_empty()) {
        Some(ns) => format!("{PREFIX}{destination}.{ns}"),
        None => format!("{PREFIX}{destination}"),
    }
}

/// Makes this server's entries in the kubeconfig at `path` exactly
/// `clusters`, with `exe` (made absolute) as the exec plugin: adds and
/// updates them, removes this server's entries that are no longer wanted,
/// and unsets `current-context` only when it named a removed context.
/// Another server's entries and entries infra did not write are kept. A
/// missing file is created; a file that is not a kubeconfig is an error and
/// left as it is. When nothing changes, the file is not rewritten.
pub fn write_infra_entries(
    path: &Path,
    server: &str,
    exe: &Path,
    clusters: &[InfraCluster],
) -> anyhow::Result<Summary> {
    let exe = std::path::absolute(exe)
        .with_context(|| format!("cannot make the path {} absolute", exe.display()))?;
    let exe = exe.to_str().with_context(|| {
        format!(
            "the path of the infra executable is not UTF-8, so it cannot go into a kubeconfig: {}",
            exe.display()
        )
    })?;
    let wanted = wanted_entries(server, exe, clusters)?;
    update_file(path, server, &wanted, true)
}

/// Removes this server's entries from the kubeconfig at `path` (at logout),
/// unsetting `current-context` if it named one of them. A missing file is
/// left missing.
pub fn remove_infra_entries(path: &Path, server: &str) -> anyhow::Result<Summary> {
    update_file(path, server, &[], false)
}

fn update_file(
    path: &Path,
    server: &str,
    wanted: &[Destination],
    create: bool,
) -> anyhow::Result<Summary> {
    let target = resolve_symlinks(path)?;
    let mut summary = Summary {
        path: path.to_path_buf(),
        ..Summary::default()
    };
    if !create && !target.exists() {
        return Ok(summary);
    }
    let _lock = FileLock::acquire(&sibling(&target, ".infra.lock"), LOCK_TIMEOUT)?;
    let (_kubectl_lock, stale_lock) = KubectlLock::acquire(&target, LOCK_TIMEOUT)?;
    summary.stale_lock = stale_lock;

    let text = match std::fs::read(&target) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| {
            anyhow::anyhow!(
                "the kubeconfig {} is not UTF-8 text; fix it or set KUBECONFIG to another file \
                 (it was not changed)",
                target.display()
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("cannot read the kubeconfig {}", target.display())));
        }
    };
    let mut doc = parse(&text).map_err(|e| {
        anyhow::anyhow!(
            "the kubeconfig {} {e}; fix it or set KUBECONFIG to another file (it was not changed)",
            target.display()
        )
    })?;
    let before = doc.clone();
    let changes = merge(&mut doc, server, wanted);
    if doc != before {
        let yaml = to_yaml(&doc)
            .with_context(|| format!("cannot write the kubeconfig {}", target.display()))?;
        crate::fsutil::write_private(&target, yaml.as_bytes())
            .with_context(|| format!("cannot write the kubeconfig {}", target.display()))?;
    }
    summary.added = changes.added;
    summary.updated = changes.updated;
    summary.removed = changes.removed;
    summary.skipped = changes.skipped;
    Ok(summary)
}

/// `path` with every symlink in its last component followed (also dangling
/// ones, so the file is created where the link points).
fn resolve_symlinks(path: &Path) -> anyhow::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&p)
                    .with_context(|| format!("cannot read the symlink {}", p.display()))?;
                p = match p.parent() {
                    Some(dir) => dir.join(to),
                    None => to,
                };
            }
            _ => return Ok(p),
        }
    }
    bail!("too many levels of symlinks at {}", path.display())
}

#[cfg(test)]
mod tests {
    use super::testing::{A, B, EXE, FOREIGN, cl, entry, mode, names, read_doc, strings};
    use super::*;

    #[test]
    fn kubeconfig_path_follows_kubectl() {
        let home = Some(PathBuf::from("/home/me"));
        let default = PathBuf::from("/home/me/.kube/config");
        assert_eq!(path_from(None, home.clone()), default);
        assert_eq!(path_from(Some(OsStr::new("")), home.clone()), default);
        let joined = std::env::join_paths(["", "/a/one", "/b/two"]).unwrap();
        assert_eq!(
            path_from(Some(&joined), home.clone()),
            PathBuf::from("/a/one")
        );
        assert_eq!(
            path_from(Some(OsStr::new("/only")), home),
            PathBuf::from("/only")
        );
    }

    // The file around the merge.

    #[test]
    fn missing_file_and_directory_are_created_private() {
        let tmp = tempfile::tempdir().unwrap();
        let kube = tmp.path().join(".kube");
        let path = kube.join("config");
        let s = write_infra_entries(&path, A, Path::new(EXE), &[cl("prod", None)]).unwrap();
        assert_eq!(s.added, strings(&["infra:prod"]));
        assert_eq!(s.path, path);
        assert_eq!(mode(&kube), 0o700);
        assert_eq!(mode(&path), 0o600);
        let d = read_doc(&path);
        assert_eq!(d.str_at(&["kind"]), Some("Config"));
        assert_eq!(names(&d, "contexts"), strings(&["infra:prod"]));
        // No kubectl lock and no temporary file left behind.
        let mut left: Vec<String> = std::fs::read_dir(&kube)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, strings(&["config", "config.infra.lock"]));
    }

    #[test]
    fn relative_exe_is_made_absolute() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config");
        write_infra_entries(&path, A, Path::new("bin/infra"), &[cl("prod", None)]).unwrap();
        let d = read_doc(&path);
        let command = entry(&d, "users", "infra:prod")
            .str_at(&["user", "exec", "command"])
            .unwrap();
        assert!(Path::new(command).is_absolute(), "{command}");
        assert!(command.ends_with("bin/infra"), "{command}");
    }

    #[test]
    fn unchanged_file_is_not_rewritten() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config");
        std::fs::write(&path, FOREIGN).unwrap();
        let clusters = [cl("prod", None)];
        write_infra_entries(&path, A, Path::new(EXE), &clusters).unwrap();
        let first = std::fs::read(&path).unwrap();
        let s = write_infra_entries(&path, A, Path::new(EXE), &clusters).unwrap();
        assert_eq!((s.added, s.updated, s.removed), (vec![], vec![], vec![]));
        assert_eq!(std::fs::read(&path).unwrap(), first);
        // Nothing of A's and a server with nothing: the comment survives.
        let other = tmp.path().join("other");
        std::fs::write(&other, FOREIGN).unwrap();
        remove_infra_entries(&other, A).unwrap();
        write_infra_entries(&other, B, Path::new(EXE), &[]).unwrap();
        assert_eq!(std::fs::read_to_string(&other).unwrap(), FOREIGN);
    }

    #[test]
    fn invalid_file_is_left_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config");
        for text in [
            "users:\n- name: x\n  user:\n    token: supersecret\n   bad: [\n",
            "- not\n- a kubeconfig\n",
            "kind: Deployment\n",
        ] {
            std::fs::write(&path, text).unwrap();
            let e = write_infra_entries(&path, A, Path::new(EXE), &[cl("prod", None)]).unwrap_err();
            let msg = format!("{e:#}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("was not changed"), "{msg}");
            assert!(!msg.contains("supersecret"), "{msg}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
            let e = remove_infra_entries(&path, A).unwrap_err();
            assert!(format!("{e:#}").contains("not"), "{e:#}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
            assert!(!sibling(&path, ".lock").exists(), "kubectl's lock left");
        }
    }

    #[test]
    fn remove_on_missing_file_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("kube").join("config");
        let s = remove_infra_entries(&path, A).unwrap();
        assert_eq!(s.removed, Vec::<String>::new());
        assert!(!tmp.path().join("kube").exists());
    }

    #[cfg(unix)]
    #[test]
    fn symlinked_kubeconfig_is_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let real_dir = tmp.path().join("dotfiles");
        std::fs::create_dir(&real_dir).unwrap();
        let real = real_dir.join("kubeconfig");
        std::fs::write(&real, FOREIGN).unwrap();
        let kube = tmp.path().join(".kube");
        std::fs::create_dir(&kube).unwrap();
        let link = kube.join("config");
        std::os::unix::fs::symlink("../dotfiles/kubeconfig", &link).unwrap();

        let s = write_infra_entries(&link, A, Path::new(EXE), &[cl("prod", None)]).unwrap();
        assert_eq!(s.path, link);
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let d = read_doc(&real);
        assert_eq!(names(&d, "contexts"), strings(&["kind-kind", "infra:prod"]));

        // A dangling link: the file is created where it points.
        let dangling = kube.join("dangling");
        std::os::unix::fs::symlink(real_dir.join("new"), &dangling).unwrap();
        write_infra_entries(&dangling, A, Path::new(EXE), &[cl("prod", None)]).unwrap();
        assert!(
            std::fs::symlink_metadata(&dangling)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            names(&read_doc(&real_dir.join("new")), "users"),
            strings(&["infra:prod"])
        );
    }
}
