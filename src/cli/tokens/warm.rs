//! The warm path of `infra tokens create`, run from `main` (and from
//! `infra-credential`) before anything else starts: the arguments
//! recognised by hand, the token read from the cache and printed when it is
//! still good. It is benchmarked against `cat`, so it stays a file read and
//! a print: no async runtime, no keyring, no config file, no network, no
//! clap, no logging. Also the margin (`INFRA_TOKEN_MARGIN`), which the cold
//! path reads too.

use std::ffi::OsString;

use secrecy::{ExposeSecret, SecretString};

use super::credential::{api_from_env, exec_credential, print};
use crate::cli::{Usage, exit};
use crate::local::clock;
use crate::local::config::{canonical_server, config_dir};
use crate::local::token_cache::{self, Verdict};

/// A cached token is used while it is valid for longer than this many
/// seconds, unless `INFRA_TOKEN_MARGIN` says otherwise.
pub const DEFAULT_MARGIN: i64 = 60;

/// What the warm path needs from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastArgs<'a> {
    pub server: &'a str,
    pub destination: &'a str,
}

/// Recognises exactly `PROG tokens create --server X --destination Y`
/// (flags in any order, `--flag value` or `--flag=value`). Anything else
/// (another command, an unknown or repeated flag, a missing or empty value,
/// a value that looks like a flag, non-UTF-8) is `None`: clap decides.
pub fn fast_args(args: &[OsString]) -> Option<FastArgs<'_>> {
    let mut it = args.iter().skip(1).map(|a| a.to_str());
    if it.next()?? != "tokens" || it.next()?? != "create" {
        return None;
    }
    let (mut server, mut destination) = (None, None);
    while let Some(arg) = it.next() {
        let arg = arg?;
        let (name, value) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, v),
            _ => (arg, it.next()??),
        };
        if value.is_empty() || value.starts_with('-') {
            return None;
        }
        let slot = match name {
            "--server" => &mut server,
            "--destination" => &mut destination,
            _ => return None,
        };
        if slot.replace(value).is_some() {
            return None;
        }
    }
    Some(FastArgs {
        server: server?,
        destination: destination?,
    })
}

/// The warm path, for `main`: `Some(exit code)` when it answered (from the
/// cache), `None` to run the normal CLI.
///
/// Its cost, in system calls: `open` and `read` of the cache file, the
/// parent's PID (`getppid`); unless the token was minted for that parent, a
/// `readlink` of the parent's executable and a positioned write of 19 bytes
/// that records the caller (see `token_cache::judge`); `close`, and the
/// `write` of the answer. The cache key needs no system call: the
/// config home comes from the environment (`getcwd` only for a relative
/// `INFRA_HOME`), hashed with a few dozen bytes of SHA-256.
pub fn warm(args: &[OsString]) -> Option<i32> {
    let a = fast_args(args)?;
    let margin = margin_from_env().ok()?;
    let (server, _) = canonical_server(a.server).ok()?;
    let key = match std::env::var_os("INFRA_ACCESS_KEY") {
        None => None,
        Some(k) => Some(SecretString::from(k.into_string().ok()?)),
    };
    let key = key
        .as_ref()
        .map(|k| k.expose_secret().trim())
        .filter(|k| !k.is_empty());
    let home = token_cache::home_tag(&config_dir());
    let stem = token_cache::stem(&home, &server, a.destination, key);
    let mut file = token_cache::open(&token_cache::token_path(&token_cache::cache_dir(), &stem))?;
    let buf = token_cache::read(&mut file)?;
    let entry = token_cache::parse(&buf)?;
    let parent = token_cache::parent_process();
    match entry.judge(clock::now(), margin, parent, || {
        token_cache::process_image(parent)
    }) {
        Verdict::Serve { mark } => {
            if let Some(served) = mark {
                token_cache::mark(&file, served);
            }
        }
        Verdict::Stale | Verdict::Rejected => return None,
    }
    drop(file);
    let out = exec_credential(api_from_env(), entry.token, entry.expires)?;
    Some(match print(&out) {
        Ok(()) => exit::OK,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("error: cannot write the credential to standard output: {e}");
            exit::ERROR
        }
    })
}

/// `INFRA_TOKEN_MARGIN` in seconds, or the default.
pub fn margin_from_env() -> Result<i64, Usage> {
    match std::env::var_os("INFRA_TOKEN_MARGIN") {
        None => Ok(DEFAULT_MARGIN),
        Some(v) => parse_margin(v.to_str().unwrap_or("?")),
    }
}

fn parse_margin(v: &str) -> Result<i64, Usage> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(DEFAULT_MARGIN);
    }
    v.parse::<u32>().map(i64::from).map_err(|_| {
        Usage(format!(
            "INFRA_TOKEN_MARGIN must be a whole number of seconds (it is {v:?})"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        std::iter::once("infra")
            .chain(v.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn fast(v: &[&str]) -> Option<(String, String)> {
        let a = args(v);
        fast_args(&a).map(|f| (f.server.to_string(), f.destination.to_string()))
    }

    #[test]
    fn fast_args_forms() {
        let want = Some(("h:1".to_string(), "prod".to_string()));
        for v in [
            &[
                "tokens",
                "create",
                "--server",
                "h:1",
                "--destination",
                "prod",
            ][..],
            &[
                "tokens",
                "create",
                "--destination",
                "prod",
                "--server",
                "h:1",
            ],
            &["tokens", "create", "--server=h:1", "--destination=prod"],
            &["tokens", "create", "--destination=prod", "--server", "h:1"],
        ] {
            assert_eq!(fast(v), want, "{v:?}");
        }
        // `=` inside a separate value is part of it.
        assert_eq!(
            fast(&[
                "tokens",
                "create",
                "--server",
                "h:1",
                "--destination",
                "a=b"
            ]),
            Some(("h:1".into(), "a=b".into()))
        );
    }

    #[test]
    fn fast_args_leaves_the_rest_to_clap() {
        for v in [
            &[][..],
            &["tokens"],
            &["tokens", "create"],
            &["tokens", "create", "--server", "h:1"],
            &["tokens", "create", "--destination", "prod"],
            &["tokens", "create", "--server", "h:1", "--destination"],
            &["tokens", "create", "--server", "h:1", "--destination", ""],
            &["tokens", "create", "--server", "h:1", "--destination="],
            &["tokens", "create", "--server", "--destination", "prod"],
            &[
                "tokens",
                "create",
                "--server",
                "h:1",
                "--destination",
                "prod",
                "--help",
            ],
            &[
                "tokens",
                "create",
                "--server",
                "h:1",
                "--destination",
                "prod",
                "-h",
            ],
            &[
                "tokens",
                "create",
                "--server",
                "h:1",
                "--destination",
                "prod",
                "x",
            ],
            &[
                "tokens",
                "create",
                "--server",
                "h:1",
                "--server",
                "h:2",
                "--destination",
                "p",
            ],
            &[
                "tokens",
                "create",
                "--server",
                "h:1",
                "--destination",
                "p",
                "--destination=q",
            ],
            &["tokens", "create", "--srv", "h:1", "--destination", "p"],
            &["tokens", "list", "--server", "h:1", "--destination", "p"],
            &["login", "create", "--server", "h:1", "--destination", "p"],
            &[
                "--verbose",
                "tokens",
                "create",
                "--server",
                "h:1",
                "--destination",
                "p",
            ],
            &[
                "tokens",
                "create",
                "--",
                "--server",
                "h:1",
                "--destination",
                "p",
            ],
            &["tokens", "create", "-s=h:1", "--destination", "p"],
        ] {
            assert_eq!(fast(v), None, "{v:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn fast_args_refuses_non_utf8() {
        use std::os::unix::ffi::OsStringExt;
        let mut a = args(&["tokens", "create", "--server", "h:1", "--destination"]);
        a.push(OsString::from_vec(vec![0xff, 0xfe]));
        assert_eq!(fast_args(&a), None);
    }

    #[test]
    fn margin_values() {
        assert_eq!(parse_margin("").unwrap(), DEFAULT_MARGIN);
        assert_eq!(parse_margin(" 0 ").unwrap(), 0);
        assert_eq!(parse_margin("100000").unwrap(), 100_000);
        for bad in ["-1", "1.5", "60s", "x", "99999999999"] {
            let e = parse_margin(bad).unwrap_err().0;
            assert!(e.contains("INFRA_TOKEN_MARGIN"), "{e}");
        }
    }
}
