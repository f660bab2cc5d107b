//! The exec plugin's token cache: the short-lived cluster token (a JWT the
//! server minted for one destination) kept between two `kubectl` calls, so
//! that most calls are answered from one small file without the keyring, the
//! config file or the network.
//!
//! One file per (server, destination) in [`cache_dir`]
//! (`$INFRA_CACHE_DIR`, else `~/.cache/infra/tokens` on Linux), mode 0600 in
//! a 0700 directory, written atomically. Its name is the canonical server and
//! the destination, each percent-encoded down to `[a-z0-9.-]` (so it is a
//! valid, case-safe file name everywhere, and the server's files share a
//! prefix that [`remove_server`] can find), joined by `_`, plus, when the key
//! comes from `INFRA_ACCESS_KEY`, a short digest of that key, so two
//! identities on one machine never share a token. Beside it, `NAME.lock` is
//! the [`FileLock`] the cold path holds across re-read → mint → save.
//!
//! The content is two lines, `v1 EXPIRY` (Unix seconds) and the token: the
//! expiry sits next to the token so the hot path never parses a JWT. Anything
//! else in the file (or a token with characters a bearer token cannot have)
//! makes it a miss, to be overwritten by the next refresh.
//!
//! This module is on kubectl's hot path: reading a cache entry costs one
//! `open` + `read`, a few comparisons and no allocation beyond the file's
//! bytes.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::lock::FileLock;

/// File name suffix of a cached token.
pub const TOKEN_SUFFIX: &str = ".token";
/// File name suffix of the lock beside it.
pub const LOCK_SUFFIX: &str = ".lock";

/// A cache file larger than this is not one of ours.
const MAX_FILE: u64 = 64 * 1024;
/// An encoded name part longer than this is replaced by a digest, so file
/// names stay well under every file system's limit (255 bytes).
const MAX_PART: usize = 100;
/// How long [`remove_server`] waits for a refresh in progress.
const REMOVE_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where cached tokens live: `$INFRA_CACHE_DIR` when set (and not empty),
/// else the platform's cache directory + `infra/tokens`
/// (`~/.cache/infra/tokens` on Linux, `~/Library/Caches/infra/tokens` on
/// macOS, `%LOCALAPPDATA%\infra\tokens` on Windows).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("INFRA_CACHE_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    match dirs::cache_dir() {
        Some(d) => d.join("infra").join("tokens"),
        // No home directory at all: beside the config file.
        None => super::config::config_dir().join("tokens"),
    }
}

/// The file name, without suffix, of the cache entry for the canonical
/// `server` (`host:port`) and `destination`; `access_key` is the key from
/// `INFRA_ACCESS_KEY` when that is what mints the tokens.
pub fn stem(server: &str, destination: &str, access_key: Option<&str>) -> String {
    let mut s = String::with_capacity(server.len() + destination.len() + 24);
    push_part(&mut s, server);
    s.push('_');
    push_part(&mut s, destination);
    if let Some(key) = access_key {
        s.push_str("_k");
        push_hex(&mut s, &Sha256::digest(key.as_bytes())[..8]);
    }
    s
}

/// The cache file of an entry in `dir`.
pub fn token_path(dir: &Path, stem: &str) -> PathBuf {
    let mut name = String::with_capacity(stem.len() + TOKEN_SUFFIX.len());
    name.push_str(stem);
    name.push_str(TOKEN_SUFFIX);
    dir.join(name)
}

/// The lock file of an entry in `dir`.
pub fn lock_path(dir: &Path, stem: &str) -> PathBuf {
    let mut name = String::with_capacity(stem.len() + LOCK_SUFFIX.len());
    name.push_str(stem);
    name.push_str(LOCK_SUFFIX);
    dir.join(name)
}

/// Appends `part` percent-encoded: `[a-z0-9.-]` stay, every other byte
/// (`_` and upper case letters included) becomes `%XX`. A long result is
/// replaced by `h` + a digest.
fn push_part(out: &mut String, part: &str) {
    let start = out.len();
    for &b in part.as_bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' {
            out.push(b as char);
        } else {
            out.push('%');
            push_hex(out, &[b]);
        }
    }
    if out.len() - start > MAX_PART {
        out.truncate(start);
        out.push('h');
        push_hex(out, &Sha256::digest(part.as_bytes())[..16]);
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
}

/// A cache entry, borrowed from the file's bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Unix seconds.
    pub expires: i64,
    pub token: &'a str,
}

impl fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("expires", &self.expires)
            .field("token", &"[redacted]")
            .finish()
    }
}

impl Entry<'_> {
    /// Still valid for more than `margin` seconds at `now`.
    pub fn fresh(&self, now: i64, margin: i64) -> bool {
        self.expires.saturating_sub(now) > margin
    }

    /// Not expired at `now`.
    pub fn valid(&self, now: i64) -> bool {
        self.expires > now
    }
}

/// Reads a cache file; `None` when it is missing, unreadable or too large
/// to be one.
pub fn read(path: &Path) -> Option<Vec<u8>> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    if len > MAX_FILE {
        return None;
    }
    let mut buf = Vec::with_capacity(len as usize + 1);
    f.read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// Parses a cache file's bytes; `None` for anything that is not exactly
/// what [`save`] writes.
pub fn parse(buf: &[u8]) -> Option<Entry<'_>> {
    let rest = buf.strip_prefix(b"v1 ")?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let (digits, rest) = (&rest[..nl], &rest[nl + 1..]);
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let expires = digits
        .iter()
        .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
    let token = rest.strip_suffix(b"\n").unwrap_or(rest);
    if !is_token(token) {
        return None;
    }
    // is_token admits ASCII only, so this cannot fail.
    let token = std::str::from_utf8(token).ok()?;
    Some(Entry { expires, token })
}

/// Whether `t` can be a bearer token (RFC 6750 `b64token`: a JWT is one),
/// which also means it needs no escaping in JSON.
pub fn is_token(t: &[u8]) -> bool {
    let body = match t.iter().position(|&b| b == b'=') {
        Some(i) => {
            if !t[i..].iter().all(|&b| b == b'=') {
                return false;
            }
            &t[..i]
        }
        None => t,
    };
    !body.is_empty()
        && t.len() <= 32 * 1024
        && body.iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// An entry read for the cold path, owning its token.
#[derive(Debug)]
pub struct Cached {
    /// Unix seconds.
    pub expires: i64,
    pub token: SecretString,
}

impl Cached {
    /// See [`Entry::fresh`].
    pub fn fresh(&self, now: i64, margin: i64) -> bool {
        self.expires.saturating_sub(now) > margin
    }

    /// See [`Entry::valid`].
    pub fn valid(&self, now: i64) -> bool {
        self.expires > now
    }

    /// The same token as `other`.
    pub fn same_token(&self, other: &Cached) -> bool {
        self.token.expose_secret() == other.token.expose_secret()
    }
}

/// The entry at `path`, if there is a well-formed one.
pub fn load(path: &Path) -> Option<Cached> {
    let buf = read(path)?;
    parse(&buf).map(|e| Cached {
        expires: e.expires,
        token: SecretString::from(e.token),
    })
}

/// Writes an entry atomically (mode 0600, directory 0700).
pub fn save(path: &Path, token: &str, expires: i64) -> anyhow::Result<()> {
    anyhow::ensure!(
        is_token(token.as_bytes()),
        "not caching a token with characters a bearer token cannot have"
    );
    let mut text = String::with_capacity(token.len() + 24);
    text.push_str("v1 ");
    text.push_str(&expires.max(0).to_string());
    text.push('\n');
    text.push_str(token);
    text.push('\n');
    crate::fsutil::write_private(path, text.as_bytes())
        .with_context(|| format!("cannot write the token cache file {}", path.display()))
}

/// Deletes every cached token of the canonical `server` from [`cache_dir`]
/// (at logout); returns how many there were.
pub fn remove_server(server: &str) -> anyhow::Result<usize> {
    remove_server_in(&cache_dir(), server)
}

/// [`remove_server`] in `dir`. Each entry is removed under its lock, so a
/// refresh that is under way finishes first and cannot write its token
/// back afterwards. Lock files stay (see `local::lock`).
pub fn remove_server_in(dir: &Path, server: &str) -> anyhow::Result<usize> {
    let mut prefix = String::new();
    push_part(&mut prefix, server);
    prefix.push('_');
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
        if !name.starts_with(&prefix) {
            continue;
        }
        if let Some(s) = name
            .strip_suffix(TOKEN_SUFFIX)
            .or_else(|| name.strip_suffix(LOCK_SUFFIX))
        {
            stems.insert(s.to_string());
        }
    }
    let mut removed = 0;
    for s in stems {
        // Without the lock (someone holds it far too long), remove anyway.
        let _lock = FileLock::acquire(&lock_path(dir, &s), REMOVE_LOCK_TIMEOUT).ok();
        let path = token_path(dir, &s);
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot remove {}", path.display()));
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_";

    #[test]
    fn names_are_file_safe_and_distinct() {
        assert_eq!(
            stem("example.com:8443", "prod", None),
            "example.com%3A8443_prod"
        );
        assert_eq!(
            stem("[::1]:8443", "a_b", None),
            "%5B%3A%3A1%5D%3A8443_a%5Fb"
        );
        // Case matters to the server; it must matter on case-insensitive disks too.
        assert_ne!(stem("x:1", "Prod", None), stem("x:1", "prod", None));
        assert_eq!(stem("x:1", "Prod", None), "x%3A1_%50rod");
        // `_` never appears inside a part, so the split is unambiguous.
        assert_ne!(stem("a_b:1", "c", None), stem("a:1", "b_c", None));
        for weird in [
            "../../etc/passwd",
            "a/b",
            "a\\b",
            "..",
            ".",
            "con",
            "x\0y",
            "é",
        ] {
            let s = stem("h:1", weird, None);
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"%._-".contains(&b)),
                "{s}"
            );
            assert!(!s.contains('/') && !s.contains("\\"), "{s}");
        }
        let long = "d".repeat(500);
        let s = stem("h:1", &long, None);
        assert!(s.len() < 200, "{s}");
        assert_ne!(s, stem("h:1", &"d".repeat(501), None));
    }

    #[test]
    fn an_environment_key_gets_its_own_entry() {
        let plain = stem("h:1", "prod", None);
        let a = stem("h:1", "prod", Some("KeyA.secret"));
        let b = stem("h:1", "prod", Some("KeyB.secret"));
        assert!(a.starts_with(&format!("{plain}_k")), "{a}");
        assert_ne!(a, b);
        assert!(!a.contains("secret"));
    }

    #[test]
    fn parse_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = token_path(&dir.path().join("tokens"), &stem("h:1", "prod", None));
        assert!(load(&path).is_none());
        save(&path, JWT, 1_800_000_000).unwrap();
        let c = load(&path).unwrap();
        assert_eq!((c.expires, c.token.expose_secret()), (1_800_000_000, JWT));
        assert!(c.same_token(&load(&path).unwrap()));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("v1 1800000000\n{JWT}\n")
        );
        let buf = read(&path).unwrap();
        let e = parse(&buf).unwrap();
        assert_eq!(e.expires, 1_800_000_000);
        assert_eq!(e.token, JWT);
        assert!(!format!("{e:?}").contains(JWT));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
        }
    }

    #[test]
    fn corrupt_files_are_misses() {
        for bad in [
            &b""[..],
            b"v1 \nabc\n",
            b"v1 12x\nabc\n",
            b"v2 12\nabc\n",
            b"v1 12\n\n",
            b"v1 12\nabc def\n",
            b"v1 12\nab\"c\n",
            b"v1 12\nabc\nmore\n",
            b"v1 12",
            b"v1 99999999999999999999\nabc\n",
            b"{\"token\":\"x\"}",
            b"v1 12\na=b\n",
            b"v1 12\n\xff\xfe\n",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(b"v1 12\nabc").unwrap().token, "abc");
        assert_eq!(parse(b"v1 12\nab==\n").unwrap().token, "ab==");
    }

    #[test]
    fn big_files_are_misses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.token");
        std::fs::write(&path, vec![b'a'; MAX_FILE as usize + 1]).unwrap();
        assert_eq!(read(&path), None);
    }

    #[test]
    fn freshness() {
        let e = Entry {
            expires: 1000,
            token: "t",
        };
        assert!(e.fresh(900, 60));
        assert!(!e.fresh(940, 60));
        assert!(!e.fresh(941, 60));
        assert!(e.valid(999));
        assert!(!e.valid(1000));
        assert!(!e.fresh(0, i64::MAX));
        assert!(e.fresh(i64::MIN, 60));
    }

    #[test]
    fn save_refuses_odd_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.token");
        assert!(save(&path, "a\nb", 1).is_err());
        assert!(save(&path, "", 1).is_err());
        assert!(!path.exists());
    }

    #[test]
    fn remove_server_removes_only_that_server() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let a1 = stem("a.example:8443", "prod", None);
        let a2 = stem("a.example:8443", "stage", Some("k"));
        let b1 = stem("a.example:84430", "prod", None);
        let c1 = stem("b.example:8443", "prod", None);
        for s in [&a1, &a2, &b1, &c1] {
            save(&token_path(d, s), JWT, 5).unwrap();
        }
        // An entry that was only ever locked (its first refresh failed).
        let a3 = stem("a.example:8443", "dev", None);
        drop(FileLock::acquire(&lock_path(d, &a3), Duration::from_secs(1)).unwrap());
        assert_eq!(remove_server_in(d, "a.example:8443").unwrap(), 2);
        assert!(lock_path(d, &a3).exists(), "lock files stay");
        assert!(!token_path(d, &a1).exists());
        assert!(!token_path(d, &a2).exists());
        assert!(token_path(d, &b1).exists());
        assert!(token_path(d, &c1).exists());
        assert_eq!(remove_server_in(d, "a.example:8443").unwrap(), 0);
        assert_eq!(remove_server_in(&d.join("missing"), "x:1").unwrap(), 0);
    }

    #[test]
    fn remove_server_waits_for_a_refresh_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let s = stem("h:1", "prod", None);
        let lock = FileLock::acquire(&lock_path(&d, &s), Duration::from_secs(1)).unwrap();
        let remover = {
            let d = d.clone();
            std::thread::spawn(move || remove_server_in(&d, "h:1").unwrap())
        };
        std::thread::sleep(Duration::from_millis(200));
        // The refresh writes its token, then lets go: the remover deletes it after.
        save(&token_path(&d, &s), JWT, 5).unwrap();
        drop(lock);
        assert_eq!(remover.join().unwrap(), 1);
        assert!(!token_path(&d, &s).exists());
    }
}
