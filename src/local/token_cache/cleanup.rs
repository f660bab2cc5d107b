//! Deleting cache entries: a server's entries of one config home at login
//! and logout ([`remove_server`]), and those of servers no longer logged in
//! and of older infra versions ([`prune`]), each under its lock so that a
//! refresh under way cannot write its token back afterwards.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::name::{LOCK_SUFFIX, TOKEN_SUFFIX, cache_dir, encoded, lock_path, token_path};
use crate::local::lock::FileLock;

/// How long removing an entry waits for a refresh in progress.
const REMOVE_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The parts of a cache file name: `(home, server)`, both as in the name;
/// no home for names an older infra wrote.
fn split_stem(stem: &str) -> Option<(Option<&str>, &str)> {
    let mut parts = stem.split('_');
    let first = parts.next()?;
    if first.len() == 17 && first.starts_with('H') {
        Some((Some(first), parts.next()?))
    } else {
        // `SERVER_DEST[_kKEY]`: an encoded part never starts with `H`.
        parts.next()?;
        Some((None, first))
    }
}

/// Deletes the cache entries of the canonical `server` made for the config
/// home `home` (a [`home_tag`]), at login and logout; and those an older
/// infra made for it. Returns how many tokens there were.
///
/// [`home_tag`]: super::home_tag
pub fn remove_server(home: &str, server: &str) -> anyhow::Result<usize> {
    remove_server_in(&cache_dir(), home, server)
}

/// [`remove_server`] in `dir`.
pub fn remove_server_in(dir: &Path, home: &str, server: &str) -> anyhow::Result<usize> {
    let server = encoded(server);
    remove_where(dir, |h, s| s == server && h.is_none_or(|h| h == home))
}

/// Deletes the cache entries of config home `home` for every server that is
/// not in `logged_in` (canonical servers): what `infra logout` and an older
/// infra left, whose locks nobody takes again. Also every entry an older
/// infra made, as none is read any more. Returns how many tokens there were.
pub fn prune(home: &str, logged_in: &[String]) -> anyhow::Result<usize> {
    prune_in(&cache_dir(), home, logged_in)
}

/// [`prune`] in `dir`.
pub fn prune_in(dir: &Path, home: &str, logged_in: &[String]) -> anyhow::Result<usize> {
    let keep: Vec<String> = logged_in.iter().map(|s| encoded(s)).collect();
    remove_where(dir, |h, s| match h {
        Some(h) => h == home && !keep.iter().any(|k| k == s),
        None => true,
    })
}

/// Deletes the entries in `dir` whose `(home, server)` `pick` chooses: for
/// each, under its lock (so a refresh under way finishes first and cannot
/// write its token back afterwards), the token file, then the lock file.
/// When the lock cannot be had in time, the token goes anyway and the lock
/// file stays.
fn remove_where(dir: &Path, pick: impl Fn(Option<&str>, &str) -> bool) -> anyhow::Result<usize> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read the directory {}", dir.display()));
        }
    };
    let mut stems = BTreeSet::new();
    for entry in rd.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let Some(stem) = name
            .strip_suffix(TOKEN_SUFFIX)
            .or_else(|| name.strip_suffix(LOCK_SUFFIX))
        else {
            continue;
        };
        if split_stem(stem).is_some_and(|(h, s)| pick(h, s)) {
            stems.insert(stem.to_string());
        }
    }
    let mut removed = 0;
    for s in stems {
        let lock = FileLock::acquire(&lock_path(dir, &s), REMOVE_LOCK_TIMEOUT).ok();
        let path = token_path(dir, &s);
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot remove {}", path.display()));
            }
        }
        if let Some(lock) = lock {
            lock.remove()
                .with_context(|| format!("cannot remove {}", lock_path(dir, &s).display()))?;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::super::name::stem;
    use super::super::testing::{HOME, cached};
    use super::super::{Served, save};
    use super::*;

    fn files(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn remove_server_removes_only_that_server_of_that_home() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let other_home = "HFEDCBA9876543210";
        let a1 = stem(HOME, "a.example:8443", "prod", None);
        let a2 = stem(HOME, "a.example:8443", "stage", Some("k"));
        let b1 = stem(HOME, "a.example:84430", "prod", None);
        let c1 = stem(HOME, "b.example:8443", "prod", None);
        let o1 = stem(other_home, "a.example:8443", "prod", None);
        let legacy = "a.example%3A8443_prod";
        let c = cached(5, 0, "-", Served::minted(0, false));
        for s in [a1.as_str(), &a2, &b1, &c1, &o1, legacy] {
            save(&token_path(d, s), &c).unwrap();
            drop(FileLock::acquire(&lock_path(d, s), Duration::from_secs(1)).unwrap());
        }
        // An entry that was only ever locked (its first refresh failed).
        let a3 = stem(HOME, "a.example:8443", "dev", None);
        drop(FileLock::acquire(&lock_path(d, &a3), Duration::from_secs(1)).unwrap());
        assert_eq!(remove_server_in(d, HOME, "a.example:8443").unwrap(), 3);
        let mut want = Vec::new();
        for s in [&b1, &c1, &o1] {
            want.push(format!("{s}.lock"));
            want.push(format!("{s}.token"));
        }
        want.sort();
        assert_eq!(files(d), want, "token and lock files of that server go");
        assert_eq!(remove_server_in(d, HOME, "a.example:8443").unwrap(), 0);
        assert_eq!(
            remove_server_in(&d.join("missing"), HOME, "x:1").unwrap(),
            0
        );
    }

    #[test]
    fn prune_keeps_the_servers_still_logged_in() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let other_home = "HFEDCBA9876543210";
        let keep = stem(HOME, "a.example:8443", "prod", None);
        let gone = stem(HOME, "gone.example:8443", "prod", None);
        let gone_lock_only = stem(HOME, "gone.example:8443", "dev", None);
        let other = stem(other_home, "gone.example:8443", "prod", None);
        let legacy = "a.example%3A8443_prod";
        let c = cached(5, 0, "-", Served::minted(0, false));
        for s in [keep.as_str(), &gone, &other, legacy] {
            save(&token_path(d, s), &c).unwrap();
        }
        drop(FileLock::acquire(&lock_path(d, &gone_lock_only), Duration::from_secs(1)).unwrap());
        std::fs::write(d.join(".x.token.1.tmp"), "").unwrap();
        assert_eq!(
            prune_in(d, HOME, &["a.example:8443".to_string()]).unwrap(),
            2
        );
        assert_eq!(
            files(d),
            [
                ".x.token.1.tmp".to_string(),
                format!("{keep}.token"),
                format!("{other}.token")
            ]
        );
    }

    #[test]
    fn removal_waits_for_a_refresh_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let s = stem(HOME, "h:1", "prod", None);
        let lock = FileLock::acquire(&lock_path(&d, &s), Duration::from_secs(1)).unwrap();
        let remover = {
            let d = d.clone();
            std::thread::spawn(move || remove_server_in(&d, HOME, "h:1").unwrap())
        };
        std::thread::sleep(Duration::from_millis(200));
        // The refresh writes its token, then lets go: the remover deletes it after.
        save(
            &token_path(&d, &s),
            &cached(5, 0, "-", Served::minted(0, false)),
        )
        .unwrap();
        drop(lock);
        assert_eq!(remover.join().unwrap(), 1);
        assert!(!token_path(&d, &s).exists());
        assert!(!lock_path(&d, &s).exists());
    }
}
