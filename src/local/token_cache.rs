//! The exec plugin's token cache: the short-lived cluster token (a JWT the
//! server minted for one destination) kept between two `kubectl` calls, so
//! that most calls are answered from one small file without the keyring, the
//! config file or the network.
//!
//! **Where, and for whom.** One file per cache key in [`cache_dir`]
//! (`$INFRA_CACHE_DIR`, else `~/.cache/infra/tokens` on Linux), mode 0600 in
//! a 0700 directory, written atomically. The key is (config home, user,
//! server, destination):
//! - the config home (`INFRA_HOME` or the default config directory) is in
//!   the name, as [`home_tag`], a digest of its absolute path, so two
//!   `INFRA_HOME`s on one OS account, logged in as two people, never read
//!   each other's tokens even when they share the cache directory;
//! - the user: a config home is logged in to a server as one user at a time,
//!   and the warm path must not parse the config to learn which, so the
//!   user is kept *in* the entry ([`user_tag`]) rather than in its name.
//!   The cold path, which reads the config anyway, takes an entry for
//!   another user as a miss, and checks again, before it saves a token,
//!   that the config still names the user it was minted for; `infra login` (as
//!   anyone) and `infra logout` delete the server's entries of their config
//!   home, under each entry's lock, *after* the config changed. So once a
//!   login as someone else has finished, no entry of the previous user is
//!   left for the warm path to serve; a refresh that was under way either
//!   finished before (and its file is deleted) or notices and does not save;
//! - with `INFRA_ACCESS_KEY`, a short digest of that key is in the name too,
//!   so two identities on one machine never share a token.
//!
//! The name is `HOME_SERVER_DEST[_kKEY]`: the home tag (`H` + 16 hex
//! digits), then the canonical server and the destination, each
//! percent-encoded down to `[a-z0-9.-]` (a valid, case-safe file name
//! everywhere, and `_` never occurs inside a part). Beside it, `NAME.lock` is
//! the [`FileLock`] the cold path holds across re-read → mint → save. Names
//! of an older infra (`SERVER_DEST[_kKEY]`, without a home) are never read;
//! [`prune`] deletes them.
//!
//! **The content** is two lines:
//!
//! ```text
//! v2 SERVED EXPIRES MINTED USER
//! TOKEN
//! ```
//!
//! - `EXPIRES` and `MINTED`, Unix seconds *by this machine's clock*: when
//!   the token stops being valid, and when it was asked for. The server
//!   stamps tokens with its own clock; the cold path turns the lifetime it
//!   granted (`exp - iat`) into local time at mint (see `cli::tokens`), so a
//!   laptop whose clock is minutes off neither serves tokens the cluster
//!   already rejects (slow clock) nor refreshes on every call (fast clock).
//!   An entry whose `MINTED` is later than now (the clock was set back since)
//!   is a miss: how long the token has lived is then unknown.
//! - `USER`: [`user_tag`] of the user the token was minted for, or `-` for
//!   `INFRA_ACCESS_KEY` (whose digest is in the name).
//! - `SERVED`: who last received this token, and how (see [`Served`]), in
//!   a fixed width at a fixed offset ([`SERVED_OFFSET`]), so the warm path
//!   updates it with one positioned write and no rename. It is how kubectl's
//!   retry after a 401 is recognised (see [`judge`]).
//!
//! Anything else in the file (or a token with characters a bearer token
//! cannot have, or a missing final newline) makes it a miss, to be
//! overwritten by the next refresh.
//!
//! This module is on kubectl's hot path: reading an entry costs one `open`
//! and one `read` (a fixed buffer, no `stat`) and a few comparisons; unless
//! the token was minted for the caller's parent or in place of a refused
//! one, also a `readlink` of the parent's executable and, unless the call is
//! a retry, one positioned write of 19 bytes.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::lock::FileLock;

/// File name suffix of a cached token.
pub const TOKEN_SUFFIX: &str = ".token";
/// File name suffix of the lock beside it.
pub const LOCK_SUFFIX: &str = ".lock";
/// Where [`Served`] sits in a cache file: right after `v2 `.
pub const SERVED_OFFSET: u64 = 3;
/// Its width: a letter, ten digits and eight hex digits.
pub const SERVED_LEN: usize = 19;

/// A cache file larger than this is not one of ours.
const MAX_FILE: usize = 64 * 1024;
/// What the warm path reads in one go; a bigger file takes a second read.
const FIRST_READ: usize = 4096;
/// An encoded name part longer than this is replaced by a digest, so file
/// names stay well under every file system's limit (255 bytes).
const MAX_PART: usize = 100;
/// How long removing an entry waits for a refresh in progress.
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
fn encoded(server: &str) -> String {
    let mut s = String::new();
    push_part(&mut s, server);
    s
}

// ---------------------------------------------------------------- entries

/// Who last received a cached token, and how: the parent process of the
/// plugin (kubectl, for kubectl's calls) that it was minted for, or that got
/// it from the cache, with the program that process was running then
/// ([`process_image`]). 0 means unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub how: How,
    /// The parent's PID (see [`parent_process`]).
    pub parent: u32,
    /// The parent's program, for a token from the cache.
    pub image: u32,
}

/// How a token came to its last receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Minted for it.
    Minted,
    /// Minted for it because the cluster refused the one before
    /// ([`Verdict::Rejected`]); never suspected again (see [`judge`]).
    Forced,
    /// Given to it from the cache.
    Cache,
}

impl Served {
    /// Minted for `parent`; `forced`: in place of a refused token.
    pub fn minted(parent: u32, forced: bool) -> Served {
        Served {
            how: if forced { How::Forced } else { How::Minted },
            parent,
            image: 0,
        }
    }

    /// Given from the cache to `parent`, running `image`.
    pub fn cache(parent: u32, image: u32) -> Served {
        Served {
            how: How::Cache,
            parent,
            image,
        }
    }

    /// The fixed-width text: `m`, `f` or `c`, the PID in ten digits, the
    /// image in eight hex digits.
    pub fn encode(self) -> [u8; SERVED_LEN] {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut out = [b'0'; SERVED_LEN];
        out[0] = match self.how {
            How::Minted => b'm',
            How::Forced => b'f',
            How::Cache => b'c',
        };
        let mut p = self.parent;
        for slot in out[1..11].iter_mut().rev() {
            *slot = b'0' + (p % 10) as u8;
            p /= 10;
        }
        let mut im = self.image;
        for slot in out[11..].iter_mut().rev() {
            *slot = HEX[(im & 15) as usize];
            im >>= 4;
        }
        out
    }

    fn decode(b: &[u8]) -> Option<Served> {
        if b.len() != SERVED_LEN || !b[1..11].iter().all(u8::is_ascii_digit) {
            return None;
        }
        let parent = b[1..11].iter().try_fold(0u32, |n, &d| {
            n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
        })?;
        let image = b[11..].iter().try_fold(0u32, |n, &d| {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'A'..=b'F' => d - b'A' + 10,
                _ => return None,
            };
            Some((n << 4) | u32::from(v))
        })?;
        let how = match b[0] {
            b'm' => How::Minted,
            b'f' => How::Forced,
            b'c' => How::Cache,
            _ => return None,
        };
        Some(Served { how, parent, image })
    }
}

/// This process's parent, as [`Served`] records it: 0 when unknown or when
/// it is PID 1 (orphans all share it, so it tells nothing).
pub fn parent_process() -> u32 {
    #[cfg(unix)]
    {
        let p = std::os::unix::process::parent_id();
        if p > 1 { p } else { 0 }
    }
    #[cfg(not(unix))]
    {
        0
    }
}

/// Which program process `pid` runs: a digest of its executable's path
/// (Linux: the `/proc/PID/exe` link, one `readlink`); 0 when that cannot be
/// told (another OS, another user's process). It changes when the process
/// `exec`s another program while keeping its PID, as the kubectl of the
/// Google Cloud SDK does: a dispatcher that runs the plugin, asks the server
/// its version, then `exec`s the matching kubectl, which runs the plugin
/// again: a first call of that kubectl, not a retry.
pub fn process_image(pid: u32) -> u32 {
    #[cfg(target_os = "linux")]
    {
        if pid == 0 {
            return 0;
        }
        match std::fs::read_link(format!("/proc/{pid}/exe")) {
            // FNV-1a; never 0, which means unknown.
            Ok(p) => {
                p.as_os_str()
                    .as_encoded_bytes()
                    .iter()
                    .fold(0x811c_9dc5u32, |h, &b| {
                        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
                    })
                    | 1
            }
            Err(_) => 0,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        0
    }
}

/// What to do with a cache entry (see [`judge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it out; `mark`: record this as its receiver first.
    Serve { mark: Option<Served> },
    /// Expired, inside the margin, or of unknown age: refresh.
    Stale,
    /// The caller already got this very token from the cache and asks
    /// again: the cluster refused it. Refresh, and do not hand it out again.
    Rejected,
}

/// Whether a token that expires at `expires` and was minted at `minted`
/// (both local Unix seconds), last handed to `served`, may go to a caller
/// whose parent process is `parent` (running the program `image()`, asked
/// only when needed), at local time `now`, with `margin` seconds to spare.
///
/// The 401 retry. kubectl (client-go) keeps the credential in memory and
/// runs the plugin again only when its `expirationTimestamp` has passed,
/// or right after a request was answered 401 (client-go's exec
/// authenticator, `maybeRefreshCreds`); since v1beta1 it passes nothing that
/// tells the two apart. So when the same kubectl process (the plugin's
/// parent, still running the same program) asks again for a token it got
/// *from the cache*, and the token has not expired, the cluster refused it
/// (a clock far off, a key the connector does not know yet, ...): serving
/// it again would only get another 401, so it is [`Verdict::Rejected`] and
/// the caller mints a new one, recorded as [`How::Forced`]. Parallel kubectl
/// calls are different processes and are not mistaken for a retry; neither
/// are calls in a row from a script, each a new kubectl, nor a process that
/// `exec`ed another program since (see [`process_image`]).
///
/// What bounds the cost of a wrong guess: a token minted for that parent is
/// not suspected by it (a caller that does not keep credentials, such as a
/// test or a benchmark running the plugin again and again, would otherwise
/// mint on every call), and a token minted in place of a refused one is not
/// suspected by anyone. So there is at most one forced refresh per token
/// lifetime, whatever the callers do. This matters, as some clients ask
/// twice while their token is fine: the Google Cloud SDK's kubectl keeps an
/// HTTP cache of its version check and replays a 401 it once got there, so
/// each such kubectl asks twice, "after a 401"; the Python `kubernetes`
/// client runs the plugin twice in every process. A token minted in place
/// of a refused one that is refused too is refused for a reason a new one
/// would not fix either.
///
/// Limits: only the last receiver is remembered, so with kubectl calls
/// interleaved a refused token may be served once more before the retry is
/// recognised (on the next 401); where the program cannot be told (`image`
/// 0: not Linux), no call is taken for a retry.
pub fn judge(
    expires: i64,
    minted: i64,
    served: Served,
    now: i64,
    margin: i64,
    parent: u32,
    image: impl FnOnce() -> u32,
) -> Verdict {
    if now < minted || expires.saturating_sub(now) <= margin {
        return Verdict::Stale;
    }
    let mine = served.parent == parent;
    match served.how {
        _ if parent == 0 => return Verdict::Serve { mark: None },
        How::Forced => return Verdict::Serve { mark: None },
        How::Minted if mine => return Verdict::Serve { mark: None },
        How::Minted | How::Cache => {}
    }
    let image = image();
    if served.how == How::Cache && mine && image != 0 && served.image == image {
        return Verdict::Rejected;
    }
    Verdict::Serve {
        mark: Some(Served::cache(parent, image)),
    }
}

/// A cache entry, borrowed from the file's bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Local Unix seconds.
    pub expires: i64,
    /// Local Unix seconds.
    pub minted: i64,
    /// [`user_tag`] or [`ENV_KEY_USER`].
    pub user: &'a str,
    pub served: Served,
    pub token: &'a str,
}

impl fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("expires", &self.expires)
            .field("minted", &self.minted)
            .field("user", &self.user)
            .field("served", &self.served)
            .field("token", &"[redacted]")
            .finish()
    }
}

impl Entry<'_> {
    /// See [`judge`].
    pub fn judge(
        &self,
        now: i64,
        margin: i64,
        parent: u32,
        image: impl FnOnce() -> u32,
    ) -> Verdict {
        judge(
            self.expires,
            self.minted,
            self.served,
            now,
            margin,
            parent,
            image,
        )
    }
}

/// Opens a cache file to read it and, when possible, to update its
/// [`Served`] in place; `None` when it is missing or unreadable.
pub fn open(path: &Path) -> Option<File> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        // Readable but not writable (a read-only mount): no record, then.
        Err(_) => File::open(path).ok(),
    }
}

/// Reads an opened cache file: one `read` for a file up to 4 KiB; `None`
/// when it is unreadable or too large to be one. A short read of a larger
/// file is harmless: it lacks the final newline, so it does not parse.
pub fn read(f: &mut File) -> Option<Vec<u8>> {
    let mut first = [0u8; FIRST_READ];
    let n = f.read(&mut first).ok()?;
    let mut buf = Vec::with_capacity(n);
    buf.extend_from_slice(&first[..n]);
    if n == FIRST_READ {
        f.take((MAX_FILE + 1 - FIRST_READ) as u64)
            .read_to_end(&mut buf)
            .ok()?;
        if buf.len() > MAX_FILE {
            return None;
        }
    }
    Some(buf)
}

/// Records `served` in an opened cache file, in place. Best effort: a file
/// opened read-only, or any error, leaves the record as it was.
pub fn mark(f: &File, served: Served) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        let _ = f.write_all_at(&served.encode(), SERVED_OFFSET);
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileExt;
        let _ = f.seek_write(&served.encode(), SERVED_OFFSET);
    }
}

/// Parses a cache file's bytes; `None` for anything that is not exactly
/// what [`save`] writes.
pub fn parse(buf: &[u8]) -> Option<Entry<'_>> {
    let rest = buf.strip_prefix(b"v2 ")?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let (head, rest) = (&rest[..nl], &rest[nl + 1..]);
    let mut fields = head.split(|&b| b == b' ');
    let served = Served::decode(fields.next()?)?;
    let expires = number(fields.next()?)?;
    let minted = number(fields.next()?)?;
    let user = fields.next()?;
    if fields.next().is_some() || !is_user(user) {
        return None;
    }
    let token = rest.strip_suffix(b"\n")?;
    if !is_token(token) {
        return None;
    }
    // is_user and is_token admit ASCII only, so these cannot fail.
    Some(Entry {
        expires,
        minted,
        user: std::str::from_utf8(user).ok()?,
        served,
        token: std::str::from_utf8(token).ok()?,
    })
}

fn number(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0')),
    )
}

fn is_user(u: &[u8]) -> bool {
    u == ENV_KEY_USER.as_bytes()
        || (u.len() == 16
            && u.iter()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()))
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
    /// Local Unix seconds.
    pub expires: i64,
    /// Local Unix seconds.
    pub minted: i64,
    /// [`user_tag`] or [`ENV_KEY_USER`].
    pub user: String,
    pub served: Served,
    pub token: SecretString,
}

impl Cached {
    /// See [`judge`].
    pub fn judge(
        &self,
        now: i64,
        margin: i64,
        parent: u32,
        image: impl FnOnce() -> u32,
    ) -> Verdict {
        judge(
            self.expires,
            self.minted,
            self.served,
            now,
            margin,
            parent,
            image,
        )
    }

    /// Not expired at `now`, by what this machine can tell.
    pub fn valid(&self, now: i64) -> bool {
        self.minted <= now && now < self.expires
    }

    /// The same token as `other`.
    pub fn same_token(&self, other: &Cached) -> bool {
        self.token.expose_secret() == other.token.expose_secret()
    }
}

/// The entry at `path`, if there is a well-formed one, with the file it was
/// read from (to [`mark`] it).
pub fn load(path: &Path) -> Option<(Cached, File)> {
    let mut f = open(path)?;
    let buf = read(&mut f)?;
    let e = parse(&buf)?;
    let c = Cached {
        expires: e.expires,
        minted: e.minted,
        user: e.user.to_string(),
        served: e.served,
        token: SecretString::from(e.token),
    };
    Some((c, f))
}

/// Writes an entry atomically (mode 0600, directory 0700).
pub fn save(path: &Path, c: &Cached) -> anyhow::Result<()> {
    let token = c.token.expose_secret();
    anyhow::ensure!(
        is_token(token.as_bytes()),
        "not caching a token with characters a bearer token cannot have"
    );
    anyhow::ensure!(
        is_user(c.user.as_bytes()),
        "not caching a token for an unnamed user"
    );
    let mut text = String::with_capacity(token.len() + 80);
    text.push_str("v2 ");
    text.push_str(std::str::from_utf8(&c.served.encode()).unwrap_or_default());
    text.push(' ');
    text.push_str(&c.expires.max(0).to_string());
    text.push(' ');
    text.push_str(&c.minted.max(0).to_string());
    text.push(' ');
    text.push_str(&c.user);
    text.push('\n');
    text.push_str(token);
    text.push('\n');
    crate::fsutil::write_private(path, text.as_bytes())
        .with_context(|| format!("cannot write the token cache file {}", path.display()))
}

// ---------------------------------------------------------------- clean-up

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

/// The [`home_tag`] of this process's config home (`INFRA_HOME` or the
/// default).
pub fn this_home() -> String {
    home_tag(&super::config::config_dir())
}

/// Deletes the cache entries of the canonical `server` made for the config
/// home `home` (a [`home_tag`]), at login and logout; and those an older
/// infra made for it. Returns how many tokens there were.
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
    use super::*;

    const JWT: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_";
    const HOME: &str = "H0123456789ABCDEF";

    fn cached(expires: i64, minted: i64, user: &str, served: Served) -> Cached {
        Cached {
            expires,
            minted,
            user: user.to_string(),
            served,
            token: SecretString::from(JWT),
        }
    }

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

    #[test]
    fn served_round_trip() {
        for s in [
            Served::minted(0, false),
            Served::minted(7, true),
            Served::cache(1234, 0xDEAD_BEEF),
            Served::minted(u32::MAX, false),
            Served::cache(u32::MAX, u32::MAX),
        ] {
            let b = s.encode();
            assert_eq!(
                Served::decode(&b),
                Some(s),
                "{}",
                String::from_utf8_lossy(&b)
            );
        }
        assert_eq!(&Served::cache(42, 0xAB).encode(), b"c0000000042000000AB");
        for bad in [
            &b"x0000000042000000AB"[..],
            b"c000000004200000AB",
            b"c00000000-2000000AB",
            b"m9999999999000000AB",
            b"c0000000042000000ab",
        ] {
            assert_eq!(
                Served::decode(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_process_image_is_its_program() {
        let me = process_image(std::process::id());
        assert_ne!(me, 0);
        assert_eq!(me, process_image(std::process::id()));
        let mut sleep = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert_ne!(process_image(sleep.id()), me);
        sleep.kill().unwrap();
        sleep.wait().unwrap();
        assert_eq!(process_image(sleep.id()), 0, "gone");
        assert_eq!(process_image(0), 0);
    }

    #[test]
    fn parse_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = token_path(&dir.path().join("tokens"), &stem(HOME, "h:1", "prod", None));
        assert!(load(&path).is_none());
        let user = user_tag("u1");
        save(
            &path,
            &cached(
                1_800_000_300,
                1_800_000_000,
                &user,
                Served::minted(77, false),
            ),
        )
        .unwrap();
        let (c, _) = load(&path).unwrap();
        assert_eq!(
            (c.expires, c.minted, c.user.as_str(), c.served),
            (
                1_800_000_300,
                1_800_000_000,
                user.as_str(),
                Served::minted(77, false)
            )
        );
        assert_eq!(c.token.expose_secret(), JWT);
        assert!(c.same_token(&load(&path).unwrap().0));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("v2 m000000007700000000 1800000300 1800000000 {user}\n{JWT}\n")
        );
        let mut f = open(&path).unwrap();
        let buf = read(&mut f).unwrap();
        let e = parse(&buf).unwrap();
        assert_eq!((e.expires, e.token), (1_800_000_300, JWT));
        assert!(!format!("{e:?}").contains(JWT));
        // The record is updated in place, the rest stays.
        mark(&f, Served::cache(4_000_000_000, 7));
        let (c, _) = load(&path).unwrap();
        assert_eq!(c.served, Served::cache(4_000_000_000, 7));
        assert_eq!((c.expires, c.minted), (1_800_000_300, 1_800_000_000));
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
        let ok = "v2 c000000000100000000 12 10 -\nabc\n";
        assert_eq!(parse(ok.as_bytes()).unwrap().token, "abc");
        assert_eq!(
            parse(b"v2 m000000000100000000 12 10 0123456789ABCDEF\nab==\n")
                .unwrap()
                .token,
            "ab=="
        );
        for bad in [
            &b""[..],
            b"v1 12\nabc\n",
            b"v2 c000000000100000000 12 10 -\nabc",
            b"v2 c000000000100000000 12 10 -\nabc\nmore\n",
            b"v2 c000000000100000000 12 10\nabc\n",
            b"v2 c000000000100000000 12 10 - x\nabc\n",
            b"v2 c00000000100000000 12 10 -\nabc\n",
            b"v2 c000000000100000000 1x 10 -\nabc\n",
            b"v2 c000000000100000000  10 -\nabc\n",
            b"v2 c000000000100000000 12 10 0123456789abcdef\nabc\n",
            b"v2 c000000000100000000 12 10 -\n\n",
            b"v2 c000000000100000000 12 10 -\nabc def\n",
            b"v2 c000000000100000000 12 10 -\nab\"c\n",
            b"v2 c000000000100000000 99999999999999999999 10 -\nabc\n",
            b"v2 c000000000100000000 12 10 -\na=b\n",
            b"v2 c000000000100000000 12 10 -\n\xff\xfe\n",
            b"{\"token\":\"x\"}",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn big_files_are_misses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.token");
        let mut text = b"v2 c000000000100000000 12 10 -\n".to_vec();
        text.extend(vec![b'a'; MAX_FILE]);
        text.push(b'\n');
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read(&mut open(&path).unwrap()), None);
        // Past the first read, but not too big: read whole.
        let mut text = b"v2 c000000000100000000 12 10 -\n".to_vec();
        text.extend(vec![b'a'; 3 * FIRST_READ]);
        text.push(b'\n');
        std::fs::write(&path, &text).unwrap();
        let buf = read(&mut open(&path).unwrap()).unwrap();
        assert_eq!(buf, text);
        assert!(parse(&buf).is_some());
    }

    #[test]
    fn judging_freshness() {
        let v = |now: i64, margin: i64| {
            judge(1000, 700, Served::minted(9, false), now, margin, 9, || 1)
        };
        let serve = Verdict::Serve { mark: None };
        assert_eq!(v(900, 60), serve);
        assert_eq!(v(940, 60), Verdict::Stale);
        assert_eq!(v(941, 60), Verdict::Stale);
        assert_eq!(v(700, 60), serve);
        // The clock went back past the mint: how old the token is, is unknown.
        assert_eq!(v(699, 60), Verdict::Stale);
        assert_eq!(v(700, i64::MAX), Verdict::Stale);
        let c = cached(1000, 700, "-", Served::minted(9, false));
        assert!(c.valid(700) && c.valid(999));
        assert!(!c.valid(1000) && !c.valid(699));
    }

    #[test]
    fn judging_the_401_retry() {
        const KUBECTL: u32 = 0x1111;
        const OTHER: u32 = 0x2222;
        let j = |served: Served, parent: u32, image: u32| {
            judge(1000, 700, served, 800, 60, parent, || image)
        };
        let mark = |parent, image| Verdict::Serve {
            mark: Some(Served::cache(parent, image)),
        };
        // kubectl 42 got the token from the cache and asks again: refused.
        assert_eq!(
            j(Served::cache(42, KUBECTL), 42, KUBECTL),
            Verdict::Rejected
        );
        // Another kubectl (parallel, or the next in a script): served, noted.
        assert_eq!(
            j(Served::cache(42, KUBECTL), 43, KUBECTL),
            mark(43, KUBECTL)
        );
        assert_eq!(j(Served::minted(42, false), 43, KUBECTL), mark(43, KUBECTL));
        // Process 42 exec'ed another program since (a dispatcher): a first call.
        assert_eq!(j(Served::cache(42, OTHER), 42, KUBECTL), mark(42, KUBECTL));
        // Minted for this very caller: served, nothing to write, nothing asked.
        assert_eq!(
            judge(
                1000,
                700,
                Served::minted(42, false),
                800,
                60,
                42,
                || panic!("asked")
            ),
            Verdict::Serve { mark: None }
        );
        // Minted in place of a refused token: nobody suspects it, nothing is
        // written over that.
        for parent in [42, 43] {
            assert_eq!(
                judge(
                    1000,
                    700,
                    Served::minted(42, true),
                    800,
                    60,
                    parent,
                    || panic!("asked")
                ),
                Verdict::Serve { mark: None }
            );
        }
        // Unknown parent: no record, no suspicion.
        assert_eq!(
            j(Served::cache(42, KUBECTL), 0, KUBECTL),
            Verdict::Serve { mark: None }
        );
        // Unknown program: served again (not a retry as far as can be told).
        assert_eq!(j(Served::cache(42, 0), 42, 0), mark(42, 0));
        // Stale wins over everything.
        assert_eq!(
            judge(1000, 700, Served::cache(42, KUBECTL), 990, 60, 42, || {
                KUBECTL
            }),
            Verdict::Stale
        );
    }

    #[test]
    fn save_refuses_odd_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.token");
        let mut c = cached(1, 0, "-", Served::minted(0, false));
        for bad in ["a\nb", ""] {
            c.token = SecretString::from(bad);
            assert!(save(&path, &c).is_err());
        }
        c.token = SecretString::from(JWT);
        c.user = "someone".into();
        assert!(save(&path, &c).is_err());
        assert!(!path.exists());
    }

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
