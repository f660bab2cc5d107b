//! `infra tokens create`: kubectl's exec credential plugin, run before every
//! kubectl call. It prints an `ExecCredential` holding a short-lived cluster
//! token (a JWT the server mints for one destination) on stdout, and nothing
//! else there, ever.
//!
//! Two paths, split by cost:
//! - the warm path ([`warm`]) runs from `main` before anything else starts:
//!   the arguments are recognised by hand, the token is read from the cache
//!   (`local::token_cache`, keyed by config home, server, destination and
//!   the environment's key) and printed if it is valid for longer than the
//!   margin by this machine's clock, and this caller has not already been
//!   given it (kubectl asking again for the same token means the cluster
//!   refused it: see `token_cache::judge`). No async runtime, no keyring, no
//!   config file, no network, no clap, no logging. Any miss or oddity falls
//!   through to the normal CLI.
//! - the cold path ([`create`]) reads the config (whose user this config
//!   home is logged in as: a cached token of anyone else is a miss), takes
//!   the entry's file lock, re-reads the cache (a parallel kubectl call may
//!   have refreshed it meanwhile), mints a token with `POST /api/tokens`,
//!   saves it with its lifetime in local time ([`local_expiry`]) and prints
//!   it, so any number of parallel calls make one request to the server.
//!
//! It never opens a browser nor prompts: when the session is gone it says to
//! run `infra login SERVER` and exits with code 4.

use std::borrow::Cow;
use std::ffi::OsString;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::session::{account, trust_of};
use super::{AuthNeeded, Usage, exit};
use crate::api::{CreateTokenRequest, CreateTokenResponse};
use crate::client::{Client, ClientError, Trust};
use crate::local::config::{Config, canonical_server, config_dir};
use crate::local::lock::FileLock;
use crate::local::token_cache::{self, Cached, Served, Verdict};
use crate::local::{clock, credentials};

/// A cached token is used while it is valid for longer than this many
/// seconds, unless `INFRA_TOKEN_MARGIN` says otherwise.
pub const DEFAULT_MARGIN: i64 = 60;

/// How long the cold path waits for another refresh of the same entry.
const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

pub const API_V1: &str = "client.authentication.k8s.io/v1";
pub const API_V1BETA1: &str = "client.authentication.k8s.io/v1beta1";

#[derive(Debug, clap::Subcommand)]
pub enum TokensCmd {
    /// Print a credential for a cluster (kubectl runs this; see `infra login`)
    #[command(
        after_help = "kubectl runs this through the kubeconfig entries `infra login` writes; \
                            it prints an ExecCredential on stdout.\n\n\
                            Environment:\n  \
                            INFRA_TOKEN_MARGIN  refresh a cached token this many seconds before it \
                            expires (default 60)\n  \
                            INFRA_CACHE_DIR     where tokens are cached (default: your cache \
                            directory + infra/tokens)\n  \
                            INFRA_ACCESS_KEY    mint tokens with this access key\n\n\
                            Example:\n  infra tokens create --server infra.example.com --destination prod"
    )]
    Create(CreateArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The server: host, host:port or https URL (default: the current one)
    #[arg(long, env = "INFRA_SERVER", value_name = "SERVER")]
    pub server: Option<String>,

    /// The destination (cluster) to get a token for
    #[arg(long, value_name = "NAME")]
    pub destination: String,
}

pub async fn run(cmd: TokensCmd) -> anyhow::Result<()> {
    match cmd {
        TokensCmd::Create(args) => create(args).await,
    }
}

// ------------------------------------------------------------------ warm path

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

/// Writes the credential to stdout in one write.
fn print(out: &[u8]) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out)?;
    stdout.flush()
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

// ------------------------------------------------------------ ExecCredential

/// The `ExecCredential` version to answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecApi {
    V1,
    V1Beta1,
}

impl ExecApi {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecApi::V1 => API_V1,
            ExecApi::V1Beta1 => API_V1BETA1,
        }
    }

    /// The version `KUBERNETES_EXEC_INFO` asks for: v1 when its top-level
    /// `apiVersion` is `client.authentication.k8s.io/v1`, else (absent,
    /// unparsable, another version) v1beta1.
    pub fn from_exec_info(info: Option<&[u8]>) -> ExecApi {
        #[derive(Deserialize)]
        struct Info<'a> {
            #[serde(rename = "apiVersion", borrow, default)]
            api_version: Option<Cow<'a, str>>,
        }
        match info.and_then(|b| serde_json::from_slice::<Info<'_>>(b).ok()) {
            Some(Info {
                api_version: Some(v),
            }) if v == API_V1 => ExecApi::V1,
            _ => ExecApi::V1Beta1,
        }
    }
}

/// [`ExecApi::from_exec_info`] of this process's `KUBERNETES_EXEC_INFO`.
pub fn api_from_env() -> ExecApi {
    let info = std::env::var_os("KUBERNETES_EXEC_INFO");
    ExecApi::from_exec_info(info.as_ref().map(|v| v.as_encoded_bytes()))
}

/// The `ExecCredential` JSON (one line) for `token`, expiring at Unix time
/// `expires`. `None` when the token is not one (see
/// [`token_cache::is_token`]) or the time is out of RFC 3339's range.
pub fn exec_credential(api: ExecApi, token: &str, expires: i64) -> Option<Vec<u8>> {
    if !token_cache::is_token(token.as_bytes()) {
        return None;
    }
    let ts = rfc3339(expires)?;
    let mut out = Vec::with_capacity(token.len() + 160);
    out.extend_from_slice(b"{\"apiVersion\":\"");
    out.extend_from_slice(api.as_str().as_bytes());
    out.extend_from_slice(b"\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"");
    // A bearer token needs no JSON escaping (checked above).
    out.extend_from_slice(token.as_bytes());
    out.extend_from_slice(b"\",\"expirationTimestamp\":\"");
    out.extend_from_slice(&ts);
    out.extend_from_slice(b"\"}}\n");
    Some(out)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time from 1970 to 9999.
pub fn rfc3339(t: i64) -> Option<[u8; 20]> {
    if !(0..=253_402_300_799).contains(&t) {
        return None;
    }
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = *b"0000-00-00T00:00:00Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, secs / 3600);
    put(14, 2, secs / 60 % 60);
    put(17, 2, secs % 60);
    Some(out)
}

// ------------------------------------------------------------------ cold path

/// The whole `infra tokens create`: the cache, else a locked refresh.
pub async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let config = Config::load()?;
    let input = match &args.server {
        Some(s) => s.clone(),
        None => config.current.clone().ok_or_else(|| {
            AuthNeeded("you are not logged in to any infra server; run `infra login SERVER`".into())
        })?,
    };
    let (server, default_url) =
        canonical_server(&input).map_err(|e| Usage(format!("--server: {e}")))?;
    let destination = args.destination.as_str();
    if destination.trim().is_empty() {
        return Err(Usage("--destination must not be empty".into()).into());
    }
    let margin = margin_from_env()?;
    let env_key = credentials::access_key_from_env();
    let dir = token_cache::cache_dir();
    let stem = token_cache::stem(
        &token_cache::home_tag(&config_dir()),
        &server,
        destination,
        env_key.as_ref().map(|k| k.expose_secret()),
    );
    let path = token_cache::token_path(&dir, &stem);
    let parent = token_cache::parent_process();
    // Whose tokens this entry may hold: the user this config home is logged
    // in to the server as, or the environment's key (its digest is in the
    // name). An entry for anyone else is a miss.
    let owner_of = |config: &Config| -> Option<String> {
        if env_key.is_some() {
            Some(token_cache::ENV_KEY_USER.to_string())
        } else {
            config
                .find(&server)
                .map(|e| token_cache::user_tag(&e.user_id))
        }
    };
    let load = |owner: &Option<String>| {
        token_cache::load(&path).filter(|(c, _)| owner.as_deref() == Some(c.user.as_str()))
    };

    let owner = owner_of(&config);
    if owner.is_none() {
        // Nothing to serve nor to mint with: say so before taking a lock.
        return Err(AuthNeeded(format!(
            "you are not logged in to {server}; run `infra login {server}`"
        ))
        .into());
    }
    let seen = load(&owner);
    let mut refused = None;
    let image = || token_cache::process_image(parent);
    if let Some((c, f)) = &seen {
        match c.judge(clock::now(), margin, parent, image) {
            Verdict::Serve { mark } => return serve(c, f, mark),
            Verdict::Rejected => refused = Some(&c.token),
            Verdict::Stale => {}
        }
    }

    let _lock = FileLock::acquire(&token_cache::lock_path(&dir, &stem), LOCK_TIMEOUT)?;
    // Under the lock, from the config as it is now: a login or logout may
    // have happened while this process waited.
    let config = Config::load()?;
    let owner = owner_of(&config);
    let now = clock::now();
    let current = load(&owner);
    let current_refused =
        |c: &Cached| refused.is_some_and(|r| r.expose_secret() == c.token.expose_secret());
    if let Some((c, f)) = &current
        && !current_refused(c)
    {
        // Refreshed by another process while this one waited for the lock:
        // take it even when the margin is longer than a token lives.
        let refreshed = seen.as_ref().is_none_or(|(s, _)| !s.same_token(c));
        if refreshed && c.valid(now) {
            let mark =
                (parent != 0 && c.served.parent != parent).then(|| Served::cache(parent, image()));
            return serve(c, f, mark);
        }
        if let Verdict::Serve { mark } = c.judge(now, margin, parent, image) {
            return serve(c, f, mark);
        }
    }

    let mut minted = match mint(&config, &server, &default_url, destination, env_key.clone()).await
    {
        Ok(m) => m,
        Err(e) => {
            // The server is out of reach but the cached token still works
            // (and the cluster has not refused it): better that than
            // nothing, until it expires.
            if let Some((c, f)) = &current
                && c.valid(clock::now())
                && !current_refused(c)
                && e.downcast_ref::<ClientError>()
                    .is_some_and(|ce| matches!(ce, ClientError::Transport(_)))
            {
                eprintln!(
                    "warning: {e}; using the cached token for {destination}, valid until {}",
                    String::from_utf8_lossy(&rfc3339(c.expires).unwrap_or_default())
                );
                return serve(c, f, None);
            }
            return Err(e);
        }
    };
    // In place of a refused token: see `token_cache::judge` on why that is
    // remembered.
    let forced = current.as_ref().is_some_and(|(c, _)| current_refused(c));
    minted.served = Served::minted(parent, forced);
    minted.user = owner.clone().unwrap_or_default();
    // Cache it only if this config home still names the user it was minted
    // for: a login as someone else (or a logout) that ran meanwhile deletes
    // this server's entries, and a late save must not bring one back.
    if owner.is_some()
        && Config::load().ok().map(|c| owner_of(&c)) == Some(owner)
        && let Err(e) = token_cache::save(&path, &minted)
    {
        eprintln!("warning: {e:#}");
    }
    emit(&minted)
}

/// Prints a cached token, first recording its receiver `mark` if given (see
/// `token_cache::judge`).
fn serve(c: &Cached, f: &std::fs::File, mark: Option<Served>) -> anyhow::Result<()> {
    if let Some(served) = mark {
        token_cache::mark(f, served);
    }
    emit(c)
}

fn emit(c: &Cached) -> anyhow::Result<()> {
    let out = exec_credential(api_from_env(), c.token.expose_secret(), c.expires)
        .context("the token cannot be put in an ExecCredential")?;
    // A broken pipe is reported as nothing (see `cli::report`).
    print(&out).context("cannot write the credential to standard output")
}

/// Asks the server for a token for `destination`, with the key this config
/// home holds for it (or `INFRA_ACCESS_KEY`). The result's `expires` and
/// `minted` are in local time (see [`local_expiry`]); the caller fills in
/// `user` and `served`.
async fn mint(
    config: &Config,
    server: &str,
    default_url: &str,
    destination: &str,
    env_key: Option<SecretString>,
) -> anyhow::Result<Cached> {
    let login = || format!("run `infra login {server}`");
    let entry = config.find(server);
    let (url, trust) = match entry {
        Some(e) => (e.url.clone(), trust_of(e)),
        None => (default_url.to_string(), Trust::System),
    };
    let key = match (env_key, entry) {
        (Some(k), _) => k,
        (None, Some(e)) => {
            match credentials::load_key(&account(&e.user_name, server), e.key_store)? {
                Some((k, _)) => k,
                None => {
                    return Err(AuthNeeded(format!(
                        "there is no access key for {server} on this machine; {}",
                        login()
                    ))
                    .into());
                }
            }
        }
        (None, None) => {
            return Err(
                AuthNeeded(format!("you are not logged in to {server}; {}", login())).into(),
            );
        }
    };
    if matches!(trust, Trust::Insecure) {
        eprintln!("warning: not verifying the TLS certificate of {server} (--skip-tls-verify)");
    }
    let client = Client::new(&url, &trust, Some(key))?;
    let req = CreateTokenRequest {
        destination: destination.to_string(),
    };
    let sent = clock::now_millis();
    let resp: CreateTokenResponse = match client.post("/api/tokens", &req).await {
        Ok(r) => r,
        Err(ClientError::Api { status: 401, body }) => {
            // The server's own hint names the server as it knows itself;
            // say it with the name this machine uses.
            let msg = first_line(&body.message);
            let msg = msg.split("; run `infra login").next().unwrap_or(msg);
            return Err(AuthNeeded(format!(
                "{server} did not accept your session ({msg}); {}",
                login()
            ))
            .into());
        }
        Err(ClientError::Api { status: 403, body }) => {
            anyhow::bail!(
                "{server} gives you no token for {destination}: {}",
                first_line(&body.message)
            );
        }
        Err(ClientError::Api { status, body }) => {
            anyhow::bail!(
                "{server} did not give a token for {destination} ({status}): {}",
                first_line(&body.message)
            );
        }
        Err(e) => return Err(e.into()),
    };
    let received = clock::now_millis();
    let expires = time::OffsetDateTime::parse(
        &resp.expires,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|_| {
        anyhow::anyhow!(
            "{server} sent a token with an expiry infra cannot read ({:?})",
            resp.expires
        )
    })?
    .unix_timestamp();
    let token = resp.token.expose_secret();
    anyhow::ensure!(
        token_cache::is_token(token.as_bytes()),
        "{server} sent something that is not a token"
    );
    // The token's own `iat` and `exp`, when it has them; else the clocks are
    // taken to agree and the response's expiry is used as it is.
    let (iat, exp) = jwt_times(token).unwrap_or((sent.div_euclid(1000), expires));
    Ok(Cached {
        expires: local_expiry(sent, received, iat, exp),
        minted: sent.div_euclid(1000),
        user: String::new(),
        served: Served::minted(0, false),
        token: resp.token,
    })
}

/// When a token stops being valid, by this machine's clock. The server
/// stamped it with its own clock: issued at `iat`, valid until `exp` (Unix
/// seconds); this machine asked for it at `sent` and had the answer at
/// `received` (local Unix milliseconds).
///
/// When the clocks agree as far as can be told (the server's `iat`, which
/// it truncated to the second, falls between `sent` and `received`), the
/// token's `exp` is used as it is, so what kubectl sees is what the token
/// says. Otherwise the local clock is off: what the server granted, `exp -
/// iat`, counts from `sent`, which is no later than the moment the server
/// issued the token, so the token is never taken for valid longer than it
/// is. A clock two minutes slow thus refreshes two minutes earlier than
/// `exp` read on that clock, and a clock ahead does not see every token as
/// expired.
pub fn local_expiry(sent: i64, received: i64, iat: i64, exp: i64) -> i64 {
    let agree =
        iat.saturating_mul(1000) <= received && iat.saturating_add(1).saturating_mul(1000) > sent;
    if agree {
        exp
    } else {
        sent.div_euclid(1000)
            .saturating_add(exp.saturating_sub(iat).max(0))
    }
}

/// `(iat, exp)` of a JWT, unverified (the server just sent it over TLS).
fn jwt_times(token: &str) -> Option<(i64, i64)> {
    use base64::Engine;
    #[derive(Deserialize)]
    struct Times {
        iat: i64,
        exp: i64,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let t: Times = serde_json::from_slice(&bytes).ok()?;
    Some((t.iat, t.exp))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
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

    #[test]
    fn exec_info_versions() {
        let v1 = |s: &str| ExecApi::from_exec_info(Some(s.as_bytes()));
        assert_eq!(ExecApi::from_exec_info(None), ExecApi::V1Beta1);
        // client-go's form, with the cluster (provideClusterInfo) after it.
        assert_eq!(
            v1(
                r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"cluster":{"server":"https://x","certificate-authority-data":"TFMw","config":{"apiVersion":"client.authentication.k8s.io/v1beta1"}},"interactive":false}}"#
            ),
            ExecApi::V1
        );
        // The Python client's form (json.dumps: a blank after each colon).
        assert_eq!(
            v1(
                r#"{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "spec": {"interactive": false}}"#
            ),
            ExecApi::V1
        );
        assert_eq!(
            v1("{\n  \"apiVersion\" :\t\"client.authentication.k8s.io/v1\"\n}"),
            ExecApi::V1
        );
        assert_eq!(
            v1(r#"{"apiVersion":"client.authentication.k8s.io\/v1"}"#),
            ExecApi::V1,
            "escaped slash"
        );
        for other in [
            r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1"}"#,
            // A nested apiVersion is not the credential's.
            r#"{"kind":"ExecCredential","spec":{"cluster":{"config":{"apiVersion":"client.authentication.k8s.io/v1"}}},"apiVersion":"client.authentication.k8s.io/v1beta1"}"#,
            r#"{"apiVersion":"client.authentication.k8s.io/v1alpha1"}"#,
            r#"{"apiVersion":"client.authentication.k8s.io/v10"}"#,
            r#"{"apiVersion":"client.authentication.k8s.io/v1"#,
            r#"{"apiVersion":1}"#,
            "",
            "null",
            "not json",
        ] {
            assert_eq!(v1(other), ExecApi::V1Beta1, "{other}");
        }
    }

    #[test]
    fn exec_credential_json() {
        let token = "eyJhbGciOiJFUzI1NiJ9.eyJhdWQiOiJwcm9kIn0.sig-_";
        for api in [ExecApi::V1, ExecApi::V1Beta1] {
            let out = exec_credential(api, token, 1_795_371_386).unwrap();
            assert_eq!(out.last(), Some(&b'\n'));
            assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(
                v,
                serde_json::json!({
                    "apiVersion": api.as_str(),
                    "kind": "ExecCredential",
                    "status": {"token": token, "expirationTimestamp": "2026-11-22T18:16:26Z"},
                })
            );
        }
        assert_eq!(exec_credential(ExecApi::V1, "a\"b", 1), None);
        assert_eq!(exec_credential(ExecApi::V1, "", 1), None);
        assert_eq!(exec_credential(ExecApi::V1, "t", -1), None);
    }

    #[test]
    fn expiry_in_local_time() {
        let iat = 1_800_000_000;
        let exp = iat + 300;
        let ms = |secs: i64| secs * 1000;
        // The clocks agree: the token's own expiry.
        assert_eq!(local_expiry(ms(iat), ms(iat) + 200, iat, exp), exp);
        // ... also when the server's `iat` was truncated to the second.
        assert_eq!(local_expiry(ms(iat) + 900, ms(iat) + 1000, iat, exp), exp);
        assert_eq!(local_expiry(ms(iat) - 150, ms(iat) + 50, iat, exp), exp);
        // A clock two minutes slow: five minutes from the local mint, which
        // is two minutes before `exp` read on that clock.
        let sent = ms(iat - 120);
        assert_eq!(local_expiry(sent, sent + 200, iat, exp), iat - 120 + 300);
        // A clock ten minutes fast: the token is not expired on arrival.
        let sent = ms(iat + 600);
        assert_eq!(local_expiry(sent, sent + 200, iat, exp), iat + 600 + 300);
        // A slow answer does not hide a skew larger than it.
        assert_eq!(
            local_expiry(ms(iat - 30), ms(iat - 29), iat, exp),
            iat - 30 + 300
        );
        // A token that lives for nothing expires at once.
        assert_eq!(
            local_expiry(ms(iat - 60), ms(iat - 60), iat, iat - 5),
            iat - 60
        );
    }

    #[test]
    fn jwt_times_are_read_from_the_payload() {
        use base64::Engine;
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let jwt = |payload: &str| format!("{}.{}.c2ln", enc(r#"{"alg":"ES256"}"#), enc(payload));
        assert_eq!(
            jwt_times(&jwt(r#"{"sub":"u","iat":1800000000,"exp":1800000300}"#)),
            Some((1_800_000_000, 1_800_000_300))
        );
        assert_eq!(jwt_times(&jwt(r#"{"exp":1800000300}"#)), None);
        assert_eq!(jwt_times("not-a-jwt"), None);
        assert_eq!(jwt_times("a.!!!.c"), None);
    }

    #[test]
    fn rfc3339_matches_the_time_crate() {
        let fmt = time::format_description::well_known::Rfc3339;
        let mut t: i64 = 0;
        let mut samples = vec![
            0,
            59,
            86_399,
            86_400,
            951_782_400, // 2000-02-29
            951_868_799,
            1_795_371_386,
            4_107_542_400, // 2100-03-01
            253_402_300_799,
        ];
        while t < 253_402_300_799 {
            samples.push(t);
            t += 7_777_777 + t / 3;
        }
        for t in samples {
            let ours = rfc3339(t).unwrap();
            let theirs = time::OffsetDateTime::from_unix_timestamp(t)
                .unwrap()
                .format(&fmt)
                .unwrap();
            assert_eq!(std::str::from_utf8(&ours).unwrap(), theirs, "{t}");
        }
        assert_eq!(rfc3339(253_402_300_800), None);
        assert_eq!(rfc3339(-1), None);
    }
}
