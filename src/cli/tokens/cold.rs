//! The cold path of `infra tokens create`, for whatever the warm path did
//! not answer: the config read, the entry's file lock taken, the cache
//! re-read under it, and else a token minted with `POST /api/tokens`, saved
//! with its lifetime in local time and printed. It never opens a browser
//! nor prompts: when the session is gone it says to run `infra login
//! SERVER` and exits with code 4, and so it does (with `--reauth`) when a
//! grant asks for a more recent sign-in than the session's.

use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::CreateArgs;
use super::credential::{api_from_env, exec_credential, print, rfc3339};
use super::warm::margin_from_env;
use crate::api::{CreateTokenRequest, CreateTokenResponse, REAUTH_REQUIRED};
use crate::cli::session::{account, trust_for};
use crate::cli::{AuthNeeded, Usage};
use crate::client::{Client, ClientError, Trust};
use crate::local::config::{Config, canonical_server, config_dir};
use crate::local::lock::FileLock;
use crate::local::token_cache::{self, Cached, Served, Verdict};
use crate::local::{clock, credentials};

/// How long the cold path waits for another refresh of the same entry.
const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

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
    // Its program too: the same kubectl asking again for it was refused.
    minted.served = Served {
        image: token_cache::process_image(parent),
        ..Served::minted(parent, forced)
    };
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
    let url = entry.map_or_else(|| default_url.to_string(), |e| e.url.clone());
    let trust = trust_for(config.trust_entry(server).as_ref())?;
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
        Err(ClientError::Api {
            status: 401, body, ..
        }) => {
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
        Err(ClientError::Api {
            status: 403, body, ..
        }) if body.reason.as_deref() == Some(REAUTH_REQUIRED) => {
            // A grant asks for a more recent sign-in at the provider: only
            // the person can give one, so say how (never a browser from here).
            let msg = first_line(&body.message);
            let msg = msg.split(": run 'infra login").next().unwrap_or(msg);
            return Err(AuthNeeded(format!("{msg}: run 'infra login {server} --reauth'")).into());
        }
        Err(ClientError::Api {
            status: 403, body, ..
        }) => {
            anyhow::bail!(
                "{server} gives you no token for {destination}: {}",
                first_line(&body.message)
            );
        }
        Err(ClientError::Api { status, body, .. }) => {
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
}
