//! The cache key, spelled as file names: where the files live
//! ([`cache_dir`]), the tags of a config home ([`home_tag`]) and of a user
//! ([`user_tag`]), and the names of an entry's token and lock files
//! ([`stem`], [`token_path`], [`lock_path`]), percent-encoded so that any
//! server and destination make a valid, case-safe file name.

use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// File name suffix of a cached token.
pub const TOKEN_SUFFIX: &str = ".token";
/// File name suffix of the lock beside it.
pub const LOCK_SUFFIX: &str = ".lock";
/// An encoded name part longer than this is replaced by a digest, so file
/// names stay well under every file system's limit (255 bytes).
const MAX_PART: usize = 100;

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
        None => crate::local::config::config_dir().join("tokens"),
    }
}

/// The tag of a config home in cache file names: `H` and 16 hex digits of a
/// SHA-256 of its absolute path, taken component by component, so `a//b/`
/// and `a/./b` are the same home. Symlinks are not resolved (that would
/// cost a system call per component on every kubectl call): two spellings
/// of one home through a symlink are two caches, each with its own tokens.
/// A relative `INFRA_HOME` is made absolute from the working directory, so
/// the same relative path in two directories never shares a cache.
pub fn home_tag(config_home: &Path) -> String {
    let abs = std::path::absolute(config_home).unwrap_or_else(|_| config_home.to_path_buf());
    let mut h = Sha256::new();
    h.update(b"infra config home\0");
    for c in abs.components() {
        if matches!(c, Component::CurDir) {
            continue;
        }
        h.update(c.as_os_str().as_encoded_bytes());
        h.update([0]);
    }
    let mut s = String::with_capacity(17);
    s.push('H');
    push_hex(&mut s, &h.finalize()[..8]);
    s
}

/// The tag of the user a token is minted for (their id on the server), as
/// kept inside a cache entry.
pub fn user_tag(user_id: &str) -> String {
    let mut s = String::with_capacity(16);
    push_hex(
        &mut s,
        &Sha256::digest(format!("infra user\0{user_id}").as_bytes())[..8],
    );
    s
}

/// The [`user_tag`] of entries minted with `INFRA_ACCESS_KEY`.
pub const ENV_KEY_USER: &str = "-";

/// The file name, without suffix, of the cache entry of config home `home`
/// (a [`home_tag`]) for the canonical `server` (`host:port`) and
/// `destination`; `access_key` is the key from `INFRA_ACCESS_KEY` when that
/// is what mints the tokens.
pub fn stem(home: &str, server: &str, destination: &str, access_key: Option<&str>) -> String {
    let mut s = String::with_capacity(home.len() + server.len() + destination.len() + 26);
    s.push_str(home);
    s.push('_');
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

/// `server` as it appears in file names.
pub(super) fn encoded(server: &str) -> String {
    let mut s = String::new();
    push_part(&mut s, server);
    s
}

/// The [`home_tag`] of this process's config home (`INFRA_HOME` or the
/// default).
pub fn this_home() -> String {
    home_tag(&crate::local::config::config_dir())
}

#[cfg(test)]
mod tests {
    use super::super::format::is_user;
    use super::super::testing::HOME;
    use super::*;

    #[test]
    fn names_are_file_safe_and_distinct() {
        assert_eq!(
            stem(HOME, "example.com:8443", "prod", None),
            "H0123456789ABCDEF_example.com%3A8443_prod"
        );
        assert_eq!(
            stem(HOME, "[::1]:8443", "a_b", None),
            "H0123456789ABCDEF_%5B%3A%3A1%5D%3A8443_a%5Fb"
        );
        // Case matters to the server; it must matter on case-insensitive disks too.
        assert_ne!(
            stem(HOME, "x:1", "Prod", None),
            stem(HOME, "x:1", "prod", None)
        );
        assert!(stem(HOME, "x:1", "Prod", None).ends_with("_x%3A1_%50rod"));
        // `_` never appears inside a part, so the split is unambiguous.
        assert_ne!(
            stem(HOME, "a_b:1", "c", None),
            stem(HOME, "a:1", "b_c", None)
        );
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
            let s = stem(HOME, "h:1", weird, None);
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"%._-".contains(&b)),
                "{s}"
            );
            assert!(!s.contains('/') && !s.contains("\\"), "{s}");
        }
        let long = "d".repeat(500);
        let s = stem(HOME, "h:1", &long, None);
        assert!(s.len() < 200, "{s}");
        assert_ne!(s, stem(HOME, "h:1", &"d".repeat(501), None));
    }

    #[test]
    fn each_config_home_has_its_own_names() {
        let a = home_tag(Path::new("/home/u/.config/infra"));
        let b = home_tag(Path::new("/home/u/work-infra"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 17);
        assert!(a.starts_with('H'), "{a}");
        assert_ne!(stem(&a, "h:1", "prod", None), stem(&b, "h:1", "prod", None));
        // Spellings of one path are one home.
        for same in [
            "/home/u/.config/infra/",
            "/home/u//.config/infra",
            "/home/u/./.config/infra",
        ] {
            assert_eq!(home_tag(Path::new(same)), a, "{same}");
        }
        // A relative home is one in the working directory.
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            home_tag(Path::new("rel/home")),
            home_tag(&cwd.join("rel/home"))
        );
        assert_ne!(user_tag("u1"), user_tag("u2"));
        assert!(is_user(user_tag("u1").as_bytes()));
    }

    #[test]
    fn an_environment_key_gets_its_own_entry() {
        let plain = stem(HOME, "h:1", "prod", None);
        let a = stem(HOME, "h:1", "prod", Some("KeyA.secret"));
        let b = stem(HOME, "h:1", "prod", Some("KeyB.secret"));
        assert!(a.starts_with(&format!("{plain}_k")), "{a}");
        assert_ne!(a, b);
        assert!(!a.contains("secret"));
    }
}
