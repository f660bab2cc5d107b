//! The content of a cache file (format v2, described in `token_cache`): who was
//! last served the token ([`Served`], at a fixed offset so that the warm
//! path updates it in place), when the token expires and was minted, for
//! whom, and the token. Reading is one `open` and one `read` ([`open`],
//! [`read`]) and a parse that borrows from the bytes ([`parse`]); anything
//! that is not exactly what [`save`] writes is a miss.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};

use super::name::ENV_KEY_USER;

/// Where [`Served`] sits in a cache file: right after `v2 `.
pub const SERVED_OFFSET: u64 = 3;
/// Its width: a letter, ten digits and eight hex digits.
pub const SERVED_LEN: usize = 19;

/// A cache file larger than this is not one of ours.
const MAX_FILE: usize = 64 * 1024;
/// What the warm path reads in one go; a bigger file takes a second read.
const FIRST_READ: usize = 4096;

/// Who last received a cached token, and how: the parent process of the
/// plugin (kubectl, for kubectl's calls) that it was minted for, or that got
/// it from the cache, with the program that process was running then
/// ([`process_image`]). 0 means unknown.
///
/// [`process_image`]: super::process_image
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub how: How,
    /// The parent's PID (see [`parent_process`](super::parent_process)).
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
    ///
    /// [`Verdict::Rejected`]: super::Verdict::Rejected
    /// [`judge`]: super::judge
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

/// A cache entry, borrowed from the file's bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Local Unix seconds.
    pub expires: i64,
    /// Local Unix seconds.
    pub minted: i64,
    /// [`user_tag`](super::user_tag) or [`ENV_KEY_USER`].
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

pub(super) fn is_user(u: &[u8]) -> bool {
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
    /// [`user_tag`](super::user_tag) or [`ENV_KEY_USER`].
    pub user: String,
    pub served: Served,
    pub token: SecretString,
}

impl Cached {
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

#[cfg(test)]
mod tests {
    use super::super::name::{stem, token_path, user_tag};
    use super::super::testing::{HOME, JWT, cached};
    use super::*;

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
}
