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

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::local::lock::FileLock;

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

fn sibling(path: &Path, suffix: &str) -> PathBuf {
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
struct KubectlLock(PathBuf);

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
    fn acquire(
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

// ---------------------------------------------------------------------------
// The YAML tree

/// A YAML value with its type and the order of mapping keys kept; mapping
/// keys may be any value, as in YAML.
#[derive(Debug, Clone)]
enum Yaml {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Yaml>),
    Map(Vec<(Yaml, Yaml)>),
}

impl PartialEq for Yaml {
    fn eq(&self, other: &Yaml) -> bool {
        match (self, other) {
            (Yaml::Null, Yaml::Null) => true,
            (Yaml::Bool(a), Yaml::Bool(b)) => a == b,
            (Yaml::Int(a), Yaml::Int(b)) => a == b,
            // By bits: a NaN is the same value as itself here.
            (Yaml::Float(a), Yaml::Float(b)) => a.to_bits() == b.to_bits(),
            (Yaml::Str(a), Yaml::Str(b)) => a == b,
            (Yaml::Seq(a), Yaml::Seq(b)) => a == b,
            (Yaml::Map(a), Yaml::Map(b)) => a == b,
            _ => false,
        }
    }
}

impl Yaml {
    fn str(s: &str) -> Yaml {
        Yaml::Str(s.to_string())
    }

    fn map<const N: usize>(pairs: [(&str, Yaml); N]) -> Yaml {
        Yaml::Map(pairs.into_iter().map(|(k, v)| (Yaml::str(k), v)).collect())
    }

    fn get(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| matches!(k, Yaml::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Yaml::Str(s) => Some(s),
            _ => None,
        }
    }

    /// `self[a][b]...` as a string.
    fn str_at(&self, keys: &[&str]) -> Option<&str> {
        keys.iter()
            .try_fold(self, |v, k| v.get(k))
            .and_then(Yaml::as_str)
    }
}

impl Serialize for Yaml {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Yaml::Null => s.serialize_unit(),
            Yaml::Bool(b) => s.serialize_bool(*b),
            Yaml::Int(i) => {
                if let Ok(v) = i64::try_from(*i) {
                    s.serialize_i64(v)
                } else if let Ok(v) = u64::try_from(*i) {
                    s.serialize_u64(v)
                } else {
                    s.serialize_i128(*i)
                }
            }
            Yaml::Float(f) => s.serialize_f64(*f),
            Yaml::Str(v) => s.serialize_str(v),
            Yaml::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Yaml::Map(pairs) => {
                let mut map = s.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Yaml {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Yaml, D::Error> {
        d.deserialize_any(YamlVisitor)
    }
}

struct YamlVisitor;

impl<'de> Visitor<'de> for YamlVisitor {
    type Value = Yaml;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }
    fn visit_none<E>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Yaml, D::Error> {
        Yaml::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Yaml, E> {
        Ok(Yaml::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Yaml, E> {
        Ok(Yaml::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Yaml, E> {
        Ok(Yaml::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Yaml, E> {
        Ok(Yaml::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Yaml, E> {
        i128::try_from(v)
            .map(Yaml::Int)
            .map_err(|_| E::custom("an integer is too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Yaml, E> {
        Ok(Yaml::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Yaml, E> {
        Ok(Yaml::str(v))
    }
    fn visit_string<E>(self, v: String) -> Result<Yaml, E> {
        Ok(Yaml::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Yaml, E> {
        String::from_utf8(v.to_vec())
            .map(Yaml::Str)
            .map_err(|_| E::custom("a !!binary value is not UTF-8 text"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Yaml, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = a.next_element()? {
            items.push(item);
        }
        Ok(Yaml::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Yaml, A::Error> {
        let mut pairs = Vec::new();
        while let Some(pair) = a.next_entry()? {
            pairs.push(pair);
        }
        Ok(Yaml::Map(pairs))
    }
}

/// The lists infra writes into.
const LISTS: [&str; 3] = ["clusters", "users", "contexts"];

/// Parses a kubeconfig; empty text (or only comments) is an empty
/// kubeconfig. The error completes "the kubeconfig FILE ...".
fn parse(text: &str) -> Result<Yaml, String> {
    // As kubectl reads YAML (YAML 1.1 through go-yaml): `yes`/`on` are
    // booleans, `0123` is octal. Non-finite floats are kept, not refused.
    // No snippets of the file in errors: it may hold credentials.
    let options = serde_saphyr::options! {
        legacy_octal_numbers: true,
        non_finite_float_policy: serde_saphyr::options::NonFiniteFloatPolicy::PassThrough,
        with_snippet: false,
    };
    let doc: Yaml = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| format!("is not valid YAML ({e})"))?;
    let doc = match doc {
        Yaml::Null => Yaml::map([
            ("apiVersion", Yaml::str("v1")),
            ("kind", Yaml::str("Config")),
            ("clusters", Yaml::Seq(vec![])),
            ("contexts", Yaml::Seq(vec![])),
            ("users", Yaml::Seq(vec![])),
            ("preferences", Yaml::Map(vec![])),
        ]),
        Yaml::Map(_) => doc,
        _ => return Err("is not a kubeconfig (it is not a YAML mapping)".into()),
    };
    if let Some(kind) = doc.get("kind")
        && !matches!(kind, Yaml::Null)
        && kind.as_str() != Some("Config")
    {
        return Err("is not a kubeconfig (its kind is not Config)".into());
    }
    for list in LISTS {
        if !matches!(doc.get(list), None | Some(Yaml::Null | Yaml::Seq(_))) {
            return Err(format!("is not a kubeconfig (its {list} are not a list)"));
        }
    }
    Ok(doc)
}

fn to_yaml(doc: &Yaml) -> anyhow::Result<String> {
    // No block scalars: every string on one line, escaped where needed.
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    Ok(serde_saphyr::to_string_with_options(doc, options)?)
}

// ---------------------------------------------------------------------------
// The merge

/// The entries for one destination: its cluster and user (both named
/// `infra:DEST`) and its contexts.
#[derive(Debug, Clone)]
struct Destination {
    name: String,
    cluster: Yaml,
    user: Yaml,
    contexts: Vec<(String, Yaml)>,
}

fn wanted_entries(
    server: &str,
    exe: &str,
    clusters: &[InfraCluster],
) -> anyhow::Result<Vec<Destination>> {
    if server.is_empty() {
        bail!("cannot write kubeconfig entries for an empty server name");
    }
    let mut out: Vec<Destination> = Vec::new();
    for c in clusters {
        if c.destination.is_empty() {
            bail!("cannot write kubeconfig entries for a destination with an empty name");
        }
        let name = format!("{PREFIX}{}", c.destination);
        let i = match out.iter().position(|d| d.name == name) {
            Some(i) => i,
            None => {
                // The first item of a destination gives its URL and CA.
                let mut cluster = vec![(Yaml::str("server"), Yaml::str(&c.url))];
                if !c.ca_pem.is_empty() {
                    cluster.push((
                        Yaml::str("certificate-authority-data"),
                        Yaml::Str(base64::engine::general_purpose::STANDARD.encode(&c.ca_pem)),
                    ));
                }
                let args = [
                    "tokens",
                    "create",
                    "--server",
                    server,
                    "--destination",
                    &c.destination,
                ];
                let exec = Yaml::map([
                    ("apiVersion", Yaml::str("client.authentication.k8s.io/v1")),
                    ("command", Yaml::str(exe)),
                    (
                        "args",
                        Yaml::Seq(args.iter().map(|a| Yaml::str(a)).collect()),
                    ),
                    ("interactiveMode", Yaml::str("Never")),
                    ("provideClusterInfo", Yaml::Bool(true)),
                ]);
                out.push(Destination {
                    name: name.clone(),
                    cluster: Yaml::map([
                        ("name", Yaml::str(&name)),
                        ("cluster", Yaml::Map(cluster)),
                    ]),
                    user: Yaml::map([
                        ("name", Yaml::str(&name)),
                        ("user", Yaml::map([("exec", exec)])),
                    ]),
                    contexts: vec![],
                });
                out.len() - 1
            }
        };
        let ns = c.namespace.as_deref().filter(|ns| !ns.is_empty());
        let ctx_name = context_name(&c.destination, ns);
        let d = &mut out[i];
        if d.contexts.iter().any(|(n, _)| *n == ctx_name) {
            continue;
        }
        let mut ctx = vec![
            (Yaml::str("cluster"), Yaml::str(&name)),
            (Yaml::str("user"), Yaml::str(&name)),
        ];
        if let Some(ns) = ns {
            ctx.push((Yaml::str("namespace"), Yaml::str(ns)));
        }
        d.contexts.push((
            ctx_name.clone(),
            Yaml::map([("name", Yaml::str(&ctx_name)), ("context", Yaml::Map(ctx))]),
        ));
    }
    Ok(out)
}

/// What [`merge`] did, by context name.
#[derive(Debug, Default, PartialEq)]
struct Changes {
    added: Vec<String>,
    updated: Vec<String>,
    removed: Vec<String>,
    skipped: Vec<Skipped>,
}

/// The name of an entry infra writes (`infra:...`), else None.
fn infra_name(entry: &Yaml) -> Option<&str> {
    entry.str_at(&["name"]).filter(|n| n.starts_with(PREFIX))
}

/// The server in exec arguments: `--server S` or `--server=S`.
fn server_in_args(user: &Yaml) -> Option<&str> {
    let Some(Yaml::Seq(args)) = user.get("user").and_then(|u| u.get("exec")?.get("args")) else {
        return None;
    };
    let args: Vec<&str> = args.iter().filter_map(Yaml::as_str).collect();
    args.iter().enumerate().find_map(|(i, a)| {
        if *a == "--server" {
            args.get(i + 1).copied()
        } else {
            a.strip_prefix("--server=")
        }
    })
}

/// Which server each `infra:*` entry of the document belongs to.
struct Owners<'a> {
    /// By user name, from the exec arguments.
    users: HashMap<&'a str, &'a str>,
    /// By cluster name: through a same-named user, else through a context
    /// that references both it and an owned user.
    clusters: HashMap<&'a str, &'a str>,
}

impl<'a> Owners<'a> {
    fn of(doc: &'a Yaml) -> Owners<'a> {
        let mut users = HashMap::new();
        for u in list(doc, "users") {
            if let (Some(name), Some(server)) = (infra_name(u), server_in_args(u)) {
                users.entry(name).or_insert(server);
            }
        }
        let mut clusters = HashMap::new();
        for c in list(doc, "clusters") {
            if let Some(name) = infra_name(c)
                && let Some(server) = users.get(name)
            {
                clusters.entry(name).or_insert(*server);
            }
        }
        for ctx in list(doc, "contexts") {
            if infra_name(ctx).is_some()
                && let Some(cluster) = ctx.str_at(&["context", "cluster"])
                && let Some(user) = ctx.str_at(&["context", "user"])
                && let Some(server) = users.get(user)
            {
                clusters.entry(cluster).or_insert(*server);
            }
        }
        Owners { users, clusters }
    }

    fn user(&self, entry: &Yaml) -> Option<&'a str> {
        self.users.get(infra_name(entry)?).copied()
    }

    fn cluster(&self, entry: &Yaml) -> Option<&'a str> {
        self.clusters.get(infra_name(entry)?).copied()
    }

    /// Through the user it references, its cluster, or the user named like
    /// its destination (`infra:DEST` for `infra:DEST.NS`; destination names
    /// have no dots).
    fn context(&self, entry: &Yaml) -> Option<&'a str> {
        let name = infra_name(entry)?;
        let dest = name.split_once('.').map_or(name, |(d, _)| d);
        entry
            .str_at(&["context", "user"])
            .and_then(|u| self.users.get(u))
            .or_else(|| {
                entry
                    .str_at(&["context", "cluster"])
                    .and_then(|c| self.clusters.get(c))
            })
            .or_else(|| self.users.get(dest))
            .copied()
    }
}

fn list<'a>(doc: &'a Yaml, key: &str) -> &'a [Yaml] {
    match doc.get(key) {
        Some(Yaml::Seq(items)) => items,
        _ => &[],
    }
}

/// What [`reconcile`] did to one list, by entry name.
#[derive(Default)]
struct ListChanges {
    added: HashSet<String>,
    changed: HashSet<String>,
    removed: Vec<String>,
}

/// Makes one list hold `wanted` in place of the entries owned by `server`
/// (and unowned `infra:*` entries with a wanted name); `owners[i]` is the
/// owner of `items[i]`. Everything else stays where it is; new entries go
/// to the end.
fn reconcile(
    items: Vec<Yaml>,
    owners: &[Option<String>],
    server: &str,
    wanted: &[(String, Yaml)],
) -> (Vec<Yaml>, ListChanges) {
    let mut changes = ListChanges::default();
    let mut placed: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(items.len() + wanted.len());
    for (item, owner) in items.into_iter().zip(owners) {
        let Some(name) = infra_name(&item).map(str::to_string) else {
            out.push(item);
            continue;
        };
        let want = wanted.iter().find(|(n, _)| *n == name);
        let ours = owner.as_deref() == Some(server);
        match want {
            Some((n, entry)) if ours || owner.is_none() => {
                if placed.insert(n) {
                    if item != *entry {
                        changes.changed.insert(name);
                    }
                    out.push(entry.clone());
                } else {
                    // A duplicate: the first one stands for it.
                    changes.changed.insert(name);
                }
            }
            None if ours => changes.removed.push(name),
            _ => out.push(item),
        }
    }
    for (name, entry) in wanted {
        if !placed.contains(name.as_str()) {
            changes.added.insert(name.clone());
            out.push(entry.clone());
        }
    }
    (out, changes)
}

/// Makes `server`'s `infra:*` entries in `doc` (a mapping, checked by
/// [`parse`]) exactly `wanted`, leaving every other entry alone. A wanted
/// destination whose names are taken by another server's entries is
/// skipped whole.
fn merge(doc: &mut Yaml, server: &str, wanted: &[Destination]) -> Changes {
    let mut result = Changes::default();

    // Owners, from the document as it was.
    let (owner_lists, conflicts) = {
        let owners = Owners::of(doc);
        let owner_of = |key: &str, item: &Yaml| match key {
            "users" => owners.user(item),
            "clusters" => owners.cluster(item),
            _ => owners.context(item),
        };
        let owner_lists: Vec<Vec<Option<String>>> = LISTS
            .iter()
            .map(|key| {
                list(doc, key)
                    .iter()
                    .map(|item| owner_of(key, item).map(str::to_string))
                    .collect()
            })
            .collect();
        // Names taken by other servers, by list.
        let mut taken: HashMap<(&str, &str), &str> = HashMap::new();
        for key in LISTS {
            for item in list(doc, key) {
                if let (Some(name), Some(owner)) = (infra_name(item), owner_of(key, item))
                    && owner != server
                {
                    taken.entry((key, name)).or_insert(owner);
                }
            }
        }
        let conflicts: HashMap<String, String> = wanted
            .iter()
            .filter_map(|d| {
                let names = [("clusters", &d.name), ("users", &d.name)]
                    .into_iter()
                    .chain(d.contexts.iter().map(|(n, _)| ("contexts", n)));
                names
                    .into_iter()
                    .find_map(|(key, name)| taken.get(&(key, name.as_str())))
                    .map(|owner| (d.name.clone(), owner.to_string()))
            })
            .collect();
        (owner_lists, conflicts)
    };

    let mut wanted_lists: [Vec<(String, Yaml)>; 3] = Default::default();
    for d in wanted {
        if let Some(owner) = conflicts.get(&d.name) {
            result
                .skipped
                .extend(d.contexts.iter().map(|(name, _)| Skipped {
                    context: name.clone(),
                    owner: owner.clone(),
                }));
            continue;
        }
        wanted_lists[0].push((d.name.clone(), d.cluster.clone()));
        wanted_lists[1].push((d.name.clone(), d.user.clone()));
        wanted_lists[2].extend(d.contexts.iter().cloned());
    }

    let Yaml::Map(pairs) = doc else {
        unreachable!("parse checks that a kubeconfig is a mapping")
    };
    let mut list_changes: Vec<ListChanges> = Vec::new();
    for ((key, owners), wanted) in LISTS.iter().zip(&owner_lists).zip(&wanted_lists) {
        let slot = pairs.iter().position(|(k, _)| k.as_str() == Some(key));
        let (items, null) = match slot.map(|i| std::mem::replace(&mut pairs[i].1, Yaml::Null)) {
            Some(Yaml::Seq(items)) => (items, false),
            Some(_) => (vec![], true),
            None => (vec![], false),
        };
        let (items, changes) = reconcile(items, owners, server, wanted);
        match slot {
            // A null or absent list stays so when there is nothing in it.
            Some(_) | None if items.is_empty() && (null || slot.is_none()) => {}
            Some(i) => pairs[i].1 = Yaml::Seq(items),
            None => pairs.push((Yaml::str(key), Yaml::Seq(items))),
        }
        list_changes.push(changes);
    }
    let [clusters, users, contexts]: [ListChanges; 3] =
        list_changes.try_into().unwrap_or_else(|_| unreachable!());

    for (name, _) in &wanted_lists[2] {
        if contexts.added.contains(name) {
            result.added.push(name.clone());
            continue;
        }
        let dest = name.split_once('.').map_or(name.as_str(), |(d, _)| d);
        let touched = |c: &ListChanges| c.added.contains(dest) || c.changed.contains(dest);
        if contexts.changed.contains(name) || touched(&clusters) || touched(&users) {
            result.updated.push(name.clone());
        }
    }
    result.removed = contexts.removed;

    // A current-context that no longer exists is unset; any other is kept.
    if let Some(i) = pairs
        .iter()
        .position(|(k, _)| k.as_str() == Some("current-context"))
        && let Some(current) = pairs[i].1.as_str()
        && result.removed.iter().any(|r| r == current)
    {
        pairs.remove(i);
    }
    result
}

// ---------------------------------------------------------------------------
// Reading the contexts and switching between them (`infra list`, `infra use`)

/// An `infra:*` context in a kubeconfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfraContext {
    /// `infra:DEST` or `infra:DEST.NS`.
    pub name: String,
    /// The server whose entries these are (from the exec arguments of the
    /// user it references), when that can be told.
    pub server: Option<String>,
}

/// What `infra list` and `infra use` need to know of a kubeconfig.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contexts {
    /// `current-context`, when it is set.
    pub current: Option<String>,
    /// The `infra:*` contexts, in file order.
    pub infra: Vec<InfraContext>,
}

impl Contexts {
    /// The `infra:*` context of that name.
    pub fn find(&self, name: &str) -> Option<&InfraContext> {
        self.infra.iter().find(|c| c.name == name)
    }
}

/// Reads the current context and the `infra:*` contexts of the kubeconfig at
/// `path`. A missing file has none. No lock: writers replace the file
/// whole (rename), so a reader sees the old or the new one.
pub fn read_contexts(path: &Path) -> anyhow::Result<Contexts> {
    let target = resolve_symlinks(path)?;
    let Some(doc) = load(&target, "it was not read")? else {
        return Ok(Contexts::default());
    };
    let owners = Owners::of(&doc);
    let infra = list(&doc, "contexts")
        .iter()
        .filter_map(|ctx| {
            Some(InfraContext {
                name: infra_name(ctx)?.to_string(),
                server: owners.context(ctx).map(str::to_string),
            })
        })
        .collect();
    let current = doc
        .str_at(&["current-context"])
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    Ok(Contexts { current, infra })
}

/// What [`set_current_context`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switched {
    /// Whether the file changed: it is not rewritten when the context was
    /// current already.
    pub changed: bool,
    /// A lock file left by a killed writer, removed to make this change.
    pub stale_lock: Option<StaleLock>,
}

/// Sets `current-context` of the kubeconfig at `path` to `context`, which
/// must be one of its contexts; everything else stays. Takes the same locks
/// as every other change (infra's, then kubectl's).
pub fn set_current_context(path: &Path, context: &str) -> anyhow::Result<Switched> {
    let target = resolve_symlinks(path)?;
    let missing = || {
        anyhow::anyhow!(
            "the kubeconfig {} has no context {context}",
            target.display()
        )
    };
    if !target.exists() {
        return Err(missing());
    }
    let _lock = FileLock::acquire(&sibling(&target, ".infra.lock"), LOCK_TIMEOUT)?;
    let (_kubectl_lock, stale_lock) = KubectlLock::acquire(&target, LOCK_TIMEOUT)?;
    let Some(mut doc) = load(&target, "it was not changed")? else {
        return Err(missing());
    };
    if !list(&doc, "contexts")
        .iter()
        .any(|c| c.str_at(&["name"]) == Some(context))
    {
        return Err(missing());
    }
    if doc.str_at(&["current-context"]) == Some(context) {
        return Ok(Switched {
            changed: false,
            stale_lock,
        });
    }
    let Yaml::Map(pairs) = &mut doc else {
        unreachable!("parse checks that a kubeconfig is a mapping")
    };
    match pairs
        .iter_mut()
        .find(|(k, _)| k.as_str() == Some("current-context"))
    {
        Some((_, v)) => *v = Yaml::str(context),
        None => pairs.push((Yaml::str("current-context"), Yaml::str(context))),
    }
    let yaml = to_yaml(&doc)
        .with_context(|| format!("cannot write the kubeconfig {}", target.display()))?;
    crate::fsutil::write_private(&target, yaml.as_bytes())
        .with_context(|| format!("cannot write the kubeconfig {}", target.display()))?;
    Ok(Switched {
        changed: true,
        stale_lock,
    })
}

/// Reads and parses the kubeconfig at `target` (symlinks resolved); `None`
/// when it does not exist. `outcome` ends the error messages ("it was not
/// changed").
fn load(target: &Path, outcome: &str) -> anyhow::Result<Option<Yaml>> {
    let text = match std::fs::read(target) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| {
            anyhow::anyhow!(
                "the kubeconfig {} is not UTF-8 text; fix it or set KUBECONFIG to another file \
                 ({outcome})",
                target.display()
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("cannot read the kubeconfig {}", target.display())));
        }
    };
    parse(&text).map(Some).map_err(|e| {
        anyhow::anyhow!(
            "the kubeconfig {} {e}; fix it or set KUBECONFIG to another file ({outcome})",
            target.display()
        )
    })
}

#[cfg(test)]
mod context_tests {
    use super::*;

    const A: &str = "a.example:8443";
    const B: &str = "b.example:8443";
    const EXE: &str = "/usr/local/bin/infra";
    const OTHER: &str = "# by hand\napiVersion: v1\nkind: Config\nclusters:\n- name: kind\n  cluster: {server: \"https://127.0.0.1:6443\"}\ncontexts:\n- name: kind\n  context: {cluster: kind, user: kind, namespace: \"0123\"}\nusers:\n- name: kind\n  user: {token: \"yes\"}\ncurrent-context: kind\n";

    fn cl(dest: &str, ns: Option<&str>) -> InfraCluster {
        InfraCluster {
            destination: dest.into(),
            namespace: ns.map(Into::into),
            url: format!("https://{dest}.example:8443"),
            ca_pem: String::new(),
        }
    }

    #[test]
    fn contexts_are_read_with_their_server() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config");
        assert_eq!(read_contexts(&path).unwrap(), Contexts::default());
        std::fs::write(&path, OTHER).unwrap();
        write_infra_entries(
            &path,
            A,
            Path::new(EXE),
            &[cl("prod", None), cl("prod", Some("web"))],
        )
        .unwrap();
        write_infra_entries(&path, B, Path::new(EXE), &[cl("dev", None)]).unwrap();
        let c = read_contexts(&path).unwrap();
        assert_eq!(c.current.as_deref(), Some("kind"));
        let got: Vec<(&str, Option<&str>)> = c
            .infra
            .iter()
            .map(|i| (i.name.as_str(), i.server.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("infra:prod", Some(A)),
                ("infra:prod.web", Some(A)),
                ("infra:dev", Some(B)),
            ]
        );
        assert_eq!(c.find("infra:dev").unwrap().server.as_deref(), Some(B));
        assert!(c.find("kind").is_none(), "only infra's contexts");
    }

    #[test]
    fn switching_sets_only_current_context() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config");
        std::fs::write(&path, OTHER).unwrap();
        write_infra_entries(&path, A, Path::new(EXE), &[cl("prod", Some("web"))]).unwrap();
        let before = parse(&std::fs::read_to_string(&path).unwrap()).unwrap();

        assert!(
            set_current_context(&path, "infra:prod.web")
                .unwrap()
                .changed
        );
        let after = parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(after.str_at(&["current-context"]), Some("infra:prod.web"));
        let strip = |d: &Yaml| {
            let Yaml::Map(pairs) = d else { panic!() };
            Yaml::Map(
                pairs
                    .iter()
                    .filter(|(k, _)| k.as_str() != Some("current-context"))
                    .cloned()
                    .collect(),
            )
        };
        assert_eq!(strip(&after), strip(&before), "nothing else changed");
        // Quoted strings stay strings (the trees above would differ too).
        assert_eq!(
            list(&after, "contexts")[0].str_at(&["context", "namespace"]),
            Some("0123")
        );

        // Already current: the file is not rewritten.
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !set_current_context(&path, "infra:prod.web")
                .unwrap()
                .changed
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes);

        // Back to a context infra did not write.
        assert!(set_current_context(&path, "kind").unwrap().changed);
        assert_eq!(
            read_contexts(&path).unwrap().current.as_deref(),
            Some("kind")
        );
        assert!(!sibling(&path, ".lock").exists(), "kubectl's lock left");
    }

    #[test]
    fn switching_to_a_missing_context_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(".kube").join("config");
        let e = set_current_context(&path, "infra:prod").unwrap_err();
        assert!(
            format!("{e:#}").contains("has no context infra:prod"),
            "{e:#}"
        );
        assert!(!tmp.path().join(".kube").exists(), "nothing is created");
        let path = tmp.path().join("config");
        std::fs::write(&path, OTHER).unwrap();
        let e = set_current_context(&path, "infra:prod").unwrap_err();
        assert!(
            format!("{e:#}").contains("has no context infra:prod"),
            "{e:#}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), OTHER);
        std::fs::write(&path, "kind: Deployment\n").unwrap();
        let e = set_current_context(&path, "kind").unwrap_err();
        assert!(format!("{e:#}").contains("was not changed"), "{e:#}");
        let e = read_contexts(&path).unwrap_err();
        assert!(format!("{e:#}").contains("is not a kubeconfig"), "{e:#}");
    }

    #[test]
    fn current_context_is_added_when_absent() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config");
        write_infra_entries(&path, A, Path::new(EXE), &[cl("prod", None)]).unwrap();
        assert_eq!(read_contexts(&path).unwrap().current, None);
        assert!(set_current_context(&path, "infra:prod").unwrap().changed);
        assert_eq!(
            read_contexts(&path).unwrap().current.as_deref(),
            Some("infra:prod")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a.example:8443";
    const B: &str = "b.example:8443";
    const EXE: &str = "/usr/local/bin/infra";
    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";

    /// A kubeconfig infra did not write, with values a careless rewrite
    /// would change: strings that look like booleans, numbers or nulls,
    /// unquoted YAML 1.1 booleans and octals, multi-line and long strings.
    const FOREIGN: &str = r#"# my clusters
apiVersion: v1
kind: Config
preferences:
  colors: yes
clusters:
- name: kind-kind
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: LS0tLS1CRUdJTg==
    tls-server-name: "0123"
    extensions:
    - name: tricky
      extension:
        quoted-yes: "yes"
        quoted-no: 'no'
        quoted-on: "on"
        quoted-octal: "0123"
        quoted-version: "1.10"
        quoted-null: "null"
        quoted-tilde: "~"
        quoted-empty: ""
        quoted-date: "2001-12-14"
        quoted-exp: "1e3"
        plain-yes: yes
        plain-octal: 0123
        plain-version: 1.10
        plain-null:
        plain-int: 42
        big: 18446744073709551615
        multi: "line one\nline two\n"
        long: "a long sentence with spaces that goes on and on and on, well past eighty characters, to tempt a folding writer"
        special: "key: value # not a comment"
        list: [a, "1", 1, true, "true"]
        1: int key
- name: infra:orphan
  cluster:
    server: https://orphan.example
contexts:
- name: kind-kind
  context:
    cluster: kind-kind
    user: kind-kind
    namespace: "true"
users:
- name: kind-kind
  user:
    client-certificate-data: Y2VydA==
    client-key-data: a2V5
current-context: kind-kind
"#;

    fn doc(text: &str) -> Yaml {
        parse(text).unwrap()
    }

    fn cl(dest: &str, ns: Option<&str>) -> InfraCluster {
        InfraCluster {
            destination: dest.into(),
            namespace: ns.map(Into::into),
            url: format!("https://{dest}.connector.example:8443"),
            ca_pem: CA.into(),
        }
    }

    fn want(server: &str, clusters: &[InfraCluster]) -> Vec<Destination> {
        wanted_entries(server, EXE, clusters).unwrap()
    }

    fn names(doc: &Yaml, key: &str) -> Vec<String> {
        list(doc, key)
            .iter()
            .map(|e| e.str_at(&["name"]).unwrap_or("?").to_string())
            .collect()
    }

    fn entry<'a>(doc: &'a Yaml, key: &str, name: &str) -> &'a Yaml {
        list(doc, key)
            .iter()
            .find(|e| e.str_at(&["name"]) == Some(name))
            .unwrap_or_else(|| panic!("no {key} entry {name}"))
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Everything but the `infra:*` entries.
    fn without_infra(doc: &Yaml) -> Yaml {
        let Yaml::Map(pairs) = doc else { panic!() };
        Yaml::Map(
            pairs
                .iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    (Some(key), Yaml::Seq(items)) if LISTS.contains(&key) => (
                        k.clone(),
                        Yaml::Seq(
                            items
                                .iter()
                                .filter(|e| infra_name(e).is_none())
                                .cloned()
                                .collect(),
                        ),
                    ),
                    _ => (k.clone(), v.clone()),
                })
                .collect(),
        )
    }

    /// Serialized and parsed again, as the next run reads it.
    fn round_trip(doc: &Yaml) -> Yaml {
        parse(&to_yaml(doc).unwrap()).unwrap()
    }

    #[test]
    fn fresh_file_gets_exactly_the_entries() {
        let mut d = doc("");
        let changes = merge(
            &mut d,
            A,
            &want(
                A,
                &[cl("prod", None), cl("prod", Some("dev")), cl("stage", None)],
            ),
        );
        assert_eq!(
            changes,
            Changes {
                added: strings(&["infra:prod", "infra:prod.dev", "infra:stage"]),
                ..Changes::default()
            }
        );
        let ca = base64::engine::general_purpose::STANDARD.encode(CA);
        let expected = format!(
            r#"
apiVersion: v1
kind: Config
clusters:
- name: infra:prod
  cluster: {{server: "https://prod.connector.example:8443", certificate-authority-data: "{ca}"}}
- name: infra:stage
  cluster: {{server: "https://stage.connector.example:8443", certificate-authority-data: "{ca}"}}
contexts:
- {{name: infra:prod, context: {{cluster: infra:prod, user: infra:prod}}}}
- {{name: infra:prod.dev, context: {{cluster: infra:prod, user: infra:prod, namespace: dev}}}}
- {{name: infra:stage, context: {{cluster: infra:stage, user: infra:stage}}}}
users:
- name: infra:prod
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: /usr/local/bin/infra
      args: [tokens, create, --server, "a.example:8443", --destination, prod]
      interactiveMode: Never
      provideClusterInfo: true
- name: infra:stage
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: /usr/local/bin/infra
      args: [tokens, create, --server, "a.example:8443", --destination, stage]
      interactiveMode: Never
      provideClusterInfo: true
preferences: {{}}
"#
        );
        assert_eq!(d, doc(&expected));
        assert_eq!(round_trip(&d), d);
        assert!(d.get("current-context").is_none(), "never chosen here");
    }

    #[test]
    fn foreign_entries_keep_their_meaning() {
        let original = doc(FOREIGN);
        let mut d = original.clone();
        merge(&mut d, A, &want(A, &[cl("prod", None)]));
        let written = to_yaml(&d).unwrap();
        let reread = doc(&written);
        assert_eq!(
            without_infra(&reread),
            without_infra(&original),
            "{written}"
        );
        // Order of the foreign entries kept; infra's appended.
        assert_eq!(
            names(&reread, "clusters"),
            strings(&["kind-kind", "infra:orphan", "infra:prod"])
        );
        // Spot checks of the types, as another reader sees them.
        let ext = entry(&reread, "clusters", "kind-kind")
            .get("cluster")
            .and_then(|c| c.get("extensions"))
            .and_then(|e| match e {
                Yaml::Seq(items) => items[0].get("extension"),
                _ => None,
            })
            .unwrap()
            .clone();
        for (key, want) in [
            ("quoted-yes", Yaml::str("yes")),
            ("quoted-no", Yaml::str("no")),
            ("quoted-on", Yaml::str("on")),
            ("quoted-octal", Yaml::str("0123")),
            ("quoted-version", Yaml::str("1.10")),
            ("quoted-null", Yaml::str("null")),
            ("quoted-tilde", Yaml::str("~")),
            ("quoted-empty", Yaml::str("")),
            ("quoted-date", Yaml::str("2001-12-14")),
            ("quoted-exp", Yaml::str("1e3")),
            ("plain-yes", Yaml::Bool(true)),
            ("plain-octal", Yaml::Int(0o123)),
            ("plain-version", Yaml::Float(1.1)),
            ("plain-null", Yaml::Null),
            ("plain-int", Yaml::Int(42)),
            ("big", Yaml::Int(u64::MAX.into())),
            ("multi", Yaml::str("line one\nline two\n")),
        ] {
            assert_eq!(ext.get(key), Some(&want), "{key} in\n{written}");
        }
        let Yaml::Map(pairs) = &ext else { panic!() };
        assert!(pairs.contains(&(Yaml::Int(1), Yaml::str("int key"))));
        assert_eq!(
            reread.str_at(&["current-context"]),
            Some("kind-kind"),
            "{written}"
        );
    }

    #[test]
    fn unwanted_unowned_infra_entries_are_left_alone() {
        let mut d = doc(FOREIGN);
        merge(&mut d, A, &want(A, &[cl("prod", None)]));
        assert_eq!(
            names(&d, "clusters"),
            strings(&["kind-kind", "infra:orphan", "infra:prod"])
        );
    }

    #[test]
    fn unowned_infra_entries_with_a_wanted_name_are_taken_over() {
        let mut d = doc(FOREIGN);
        let changes = merge(&mut d, A, &want(A, &[cl("orphan", None)]));
        assert_eq!(changes.added, strings(&["infra:orphan"]));
        assert_eq!(
            names(&d, "clusters"),
            strings(&["kind-kind", "infra:orphan"])
        );
        assert_eq!(
            entry(&d, "clusters", "infra:orphan").str_at(&["cluster", "server"]),
            Some("https://orphan.connector.example:8443")
        );
    }

    #[test]
    fn rerunning_is_idempotent() {
        let mut d = doc(FOREIGN);
        let wanted = want(
            A,
            &[cl("prod", None), cl("prod", Some("ns1")), cl("x", None)],
        );
        merge(&mut d, A, &wanted);
        let d = round_trip(&d);
        let mut again = d.clone();
        let changes = merge(&mut again, A, &wanted);
        assert_eq!(changes, Changes::default());
        assert_eq!(again, d);
    }

    #[test]
    fn stale_entries_of_this_server_go_and_other_servers_stay() {
        let mut d = doc(FOREIGN);
        merge(
            &mut d,
            A,
            &want(
                A,
                &[
                    cl("prod", None),
                    cl("stage", None),
                    cl("stage", Some("web")),
                ],
            ),
        );
        merge(
            &mut d,
            B,
            &want(B, &[cl("dev", None), cl("dev", Some("web"))]),
        );
        let b_entries: Vec<Yaml> = LISTS
            .iter()
            .flat_map(|k| {
                list(&d, k)
                    .iter()
                    .filter(|e| infra_name(e).is_some_and(|n| n.starts_with("infra:dev")))
            })
            .cloned()
            .collect();
        assert_eq!(b_entries.len(), 4);

        // A's prod moves to another URL and A loses stage.
        let mut moved = cl("prod", None);
        moved.url = "https://elsewhere.example".into();
        let changes = merge(&mut d, A, &want(A, &[moved]));
        assert_eq!(changes.added, Vec::<String>::new());
        assert_eq!(changes.updated, strings(&["infra:prod"]));
        assert_eq!(
            changes.removed,
            strings(&["infra:stage", "infra:stage.web"])
        );
        assert_eq!(
            names(&d, "contexts"),
            strings(&["kind-kind", "infra:prod", "infra:dev", "infra:dev.web"])
        );
        assert_eq!(
            names(&d, "clusters"),
            strings(&["kind-kind", "infra:orphan", "infra:prod", "infra:dev"])
        );
        assert_eq!(
            names(&d, "users"),
            strings(&["kind-kind", "infra:prod", "infra:dev"])
        );
        for e in &b_entries {
            let key = LISTS
                .iter()
                .find(|k| list(&d, k).contains(e))
                .unwrap_or_else(|| panic!("B's entry changed: {e:?}"));
            assert!(!key.is_empty());
        }
        assert_eq!(without_infra(&d), without_infra(&doc(FOREIGN)));

        // Logout from A: only B's entries are left.
        let changes = merge(&mut d, A, &[]);
        assert_eq!(changes.removed, strings(&["infra:prod"]));
        assert_eq!(
            names(&d, "contexts"),
            strings(&["kind-kind", "infra:dev", "infra:dev.web"])
        );
    }

    #[test]
    fn entries_are_owned_through_the_user_they_reference() {
        // Hand-renamed context and cluster, still pointing at A's user.
        let mut d = doc(&format!(
            r#"
clusters:
- {{name: "infra:renamed-cluster", cluster: {{server: "https://x"}}}}
contexts:
- {{name: "infra:renamed", context: {{cluster: "infra:renamed-cluster", user: "infra:prod"}}}}
users:
- {{name: "infra:prod", user: {{exec: {{command: {EXE}, args: [tokens, create, "--server={A}", --destination, prod]}}}}}}
"#
        ));
        let changes = merge(&mut d, A, &[]);
        assert_eq!(changes.removed, strings(&["infra:renamed"]));
        for key in LISTS {
            assert!(list(&d, key).is_empty(), "{key}: {d:?}");
        }
    }

    #[test]
    fn current_context_is_unset_only_when_its_context_is_removed() {
        let mut base = doc(FOREIGN);
        merge(
            &mut base,
            A,
            &want(A, &[cl("prod", None), cl("stage", None)]),
        );
        merge(&mut base, B, &want(B, &[cl("dev", None)]));
        let with_current = |ctx: &str| {
            let mut d = base.clone();
            let Yaml::Map(pairs) = &mut d else { panic!() };
            for (k, v) in pairs.iter_mut() {
                if k.as_str() == Some("current-context") {
                    *v = Yaml::str(ctx);
                }
            }
            d
        };
        let mut moved = cl("prod", None);
        moved.url = "https://elsewhere.example".into();
        let wanted = want(A, &[moved]);

        let mut d = with_current("infra:stage");
        merge(&mut d, A, &wanted);
        assert_eq!(d.get("current-context"), None, "removed context");
        for kept in ["infra:prod", "infra:dev", "kind-kind", "no-such-context"] {
            let mut d = with_current(kept);
            merge(&mut d, A, &wanted);
            assert_eq!(d.str_at(&["current-context"]), Some(kept));
        }
    }

    #[test]
    fn namespaces_make_separate_contexts() {
        let mut d = doc("");
        merge(
            &mut d,
            A,
            &want(
                A,
                &[
                    cl("prod", Some("web")),
                    cl("prod", Some("db")),
                    cl("prod", Some("web")),
                ],
            ),
        );
        assert_eq!(names(&d, "clusters"), strings(&["infra:prod"]));
        assert_eq!(names(&d, "users"), strings(&["infra:prod"]));
        assert_eq!(
            names(&d, "contexts"),
            strings(&["infra:prod.web", "infra:prod.db"])
        );
        let ctx = entry(&d, "contexts", "infra:prod.db");
        assert_eq!(ctx.str_at(&["context", "namespace"]), Some("db"));
        assert_eq!(ctx.str_at(&["context", "cluster"]), Some("infra:prod"));
        assert_eq!(ctx.str_at(&["context", "user"]), Some("infra:prod"));
        assert_eq!(context_name("prod", Some("db")), "infra:prod.db");
        assert_eq!(context_name("prod", None), "infra:prod");
        assert_eq!(context_name("prod", Some("")), "infra:prod");
    }

    #[test]
    fn names_of_another_server_are_skipped() {
        let mut d = doc("");
        merge(&mut d, B, &want(B, &[cl("prod", None)]));
        let before_b = d.clone();
        let changes = merge(
            &mut d,
            A,
            &want(
                A,
                &[cl("prod", None), cl("prod", Some("x")), cl("stage", None)],
            ),
        );
        assert_eq!(changes.added, strings(&["infra:stage"]));
        assert_eq!(
            changes.skipped,
            ["infra:prod", "infra:prod.x"]
                .map(|c| Skipped {
                    context: c.into(),
                    owner: B.into()
                })
                .to_vec()
        );
        assert_eq!(
            entry(&d, "users", "infra:prod"),
            entry(&before_b, "users", "infra:prod")
        );
        assert_eq!(
            names(&d, "contexts"),
            strings(&["infra:prod", "infra:stage"])
        );
    }

    #[test]
    fn empty_ca_has_no_ca_data() {
        let mut c = cl("prod", None);
        c.ca_pem = String::new();
        let mut d = doc("");
        merge(&mut d, A, &want(A, &[c]));
        let cluster = entry(&d, "clusters", "infra:prod").get("cluster").unwrap();
        assert!(cluster.get("certificate-authority-data").is_none());
        let mut d = doc("");
        merge(&mut d, A, &want(A, &[cl("prod", None)]));
        let data = entry(&d, "clusters", "infra:prod")
            .str_at(&["cluster", "certificate-authority-data"])
            .unwrap();
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        assert_eq!(pem, CA.as_bytes());
    }

    #[test]
    fn not_a_kubeconfig_is_refused() {
        for (text, want) in [
            ("clusters: [\n", "is not valid YAML"),
            ("- a\n- b\n", "not a YAML mapping"),
            ("kind: Deployment\n", "kind is not Config"),
            ("users: {a: b}\n", "users are not a list"),
            ("a: 1\na: 2\n", "is not valid YAML"),
            ("a: 1\n---\nb: 2\n", "is not valid YAML"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        for ok in [
            "",
            "\n",
            "# nothing yet\n",
            "clusters:\nusers: null\n",
            "{}",
        ] {
            parse(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }

    #[test]
    fn null_lists_stay_null_when_nothing_is_added() {
        let mut d = doc("clusters:\ncontexts: ~\n");
        let before = d.clone();
        assert_eq!(merge(&mut d, A, &[]), Changes::default());
        assert_eq!(d, before);
        merge(&mut d, A, &want(A, &[cl("prod", None)]));
        assert_eq!(names(&d, "clusters"), strings(&["infra:prod"]));
        assert_eq!(names(&d, "users"), strings(&["infra:prod"]));
    }

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

    fn mode(p: &Path) -> u32 {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777
        }
        #[cfg(not(unix))]
        {
            let _ = p;
            0o600
        }
    }

    fn read_doc(p: &Path) -> Yaml {
        doc(&std::fs::read_to_string(p).unwrap())
    }

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
