//! `infra login` and `infra logout`: decide how to trust the server (trust
//! on first use), exchange a key or password for a session key, keep it in
//! the OS keyring (or the fallback file), and remember the server.

use std::path::PathBuf;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};

use super::session::{account, can_prompt, confirm, read_secret, trust_of};
use super::{AuthNeeded, Usage};
use crate::api::{LoginRequest, PasswordCredentials};
use crate::client::{Client, ClientError, Trust, tls};
use crate::local::config::{Config, KeyStore, ServerEntry, canonical_server};
use crate::local::credentials;

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The server: host, host:port or https URL
    #[arg(env = "INFRA_SERVER", value_name = "SERVER")]
    pub server: Option<String>,

    /// Log in with an access key
    #[arg(
        long,
        env = "INFRA_ACCESS_KEY",
        hide_env_values = true,
        conflicts_with = "user"
    )]
    pub key: Option<String>,

    /// Log in as a local user (password prompted, or INFRA_PASSWORD)
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Trust the server's certificate with this SHA-256 fingerprint
    #[arg(long, value_name = "SHA256", conflicts_with_all = ["tls_trusted_cert", "skip_tls_verify"])]
    pub tls_trusted_fingerprint: Option<String>,

    /// Trust the server's certificate (or its CA) from this PEM file
    #[arg(long, value_name = "FILE", conflicts_with = "skip_tls_verify")]
    pub tls_trusted_cert: Option<PathBuf>,

    /// Do not verify the server's certificate (unsafe)
    #[arg(long)]
    pub skip_tls_verify: bool,
}

#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// The server to log out of (default: the current one)
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,

    /// Log out of every server
    #[arg(long, conflicts_with = "server")]
    pub all: bool,
}

/// Decides how to trust the server, asking the person if needed.
async fn decide_trust(
    args: &LoginArgs,
    server: &str,
    existing: Option<&ServerEntry>,
) -> anyhow::Result<Trust> {
    if args.skip_tls_verify {
        eprintln!(
            "warning: not verifying the TLS certificate of {server}: anyone on the network path can read your credentials"
        );
        return Ok(Trust::Insecure);
    }
    if let Some(path) = &args.tls_trusted_cert {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the certificate {}", path.display()))?;
        return Ok(Trust::Cert(pem));
    }
    if let Some(fp) = &args.tls_trusted_fingerprint {
        let fp = tls::normalize_fingerprint(fp).ok_or_else(|| {
            Usage("--tls-trusted-fingerprint must be a SHA-256 fingerprint: 64 hex digits, colons optional".into())
        })?;
        return Ok(Trust::Fingerprint(fp));
    }
    if let Some(e) = existing {
        let t = trust_of(e);
        if t != Trust::System {
            return Ok(t);
        }
    }
    let (host, port) = split_host_port(server);
    let probe = tls::probe(&host, port).await?;
    if probe.trusted_by_system {
        return Ok(Trust::System);
    }
    let why = probe.system_error.unwrap_or_default();
    if !can_prompt() {
        anyhow::bail!(
            "the certificate of {server} is not trusted by this system ({why}).\n\
             Its SHA-256 fingerprint is {fp}\n\
             Check it with your administrator, then run one of:\n  \
             infra login {server} --tls-trusted-fingerprint {fp}\n  \
             infra login {server} --tls-trusted-cert CA.pem\n  \
             infra login {server} --skip-tls-verify   (unsafe)",
            fp = probe.fingerprint
        );
    }
    eprintln!(
        "The certificate of {server} is not trusted by this system ({why}).\n\
         SHA-256 fingerprint: {}\n\
         Compare it with the one the server printed at start-up or that your administrator gave you.",
        probe.fingerprint
    );
    if confirm("Trust this certificate and remember it for this server?")? {
        Ok(Trust::Fingerprint(probe.fingerprint))
    } else {
        anyhow::bail!("the certificate of {server} was not trusted; nothing was saved")
    }
}

fn split_host_port(server: &str) -> (String, u16) {
    match server.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_string(), p.parse().unwrap_or(443)),
        _ => (server.to_string(), 443),
    }
}

pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let input = args.server.clone().ok_or_else(|| {
        Usage("which server? run `infra login SERVER` (or set INFRA_SERVER)".into())
    })?;
    let (server, url) = canonical_server(&input).map_err(|e| Usage(format!("{input:?}: {e}")))?;
    let mut config = Config::load()?;
    let existing = config.find(&server).cloned();

    let request = if let Some(key) = &args.key {
        LoginRequest {
            access_key: Some(key.trim().to_string()),
            ..Default::default()
        }
    } else if let Some(user) = &args.user {
        let password = read_secret(&format!("Password for {user}: "), Some("INFRA_PASSWORD"))?;
        LoginRequest {
            password_credentials: Some(PasswordCredentials {
                name: user.clone(),
                password: password.expose_secret().to_string(),
            }),
            ..Default::default()
        }
    } else {
        return Err(Usage(format!(
            "choose how to log in: `infra login {server} --key KEY` or `infra login {server} --user NAME`"
        ))
        .into());
    };

    let trust = decide_trust(&args, &server, existing.as_ref()).await?;
    let client = Client::new(&url, &trust, None)?;
    let resp = match client.login(&request).await {
        Ok(r) => r,
        Err(e @ ClientError::Api { status: 401, .. }) => {
            return Err(AuthNeeded(format!("login to {server} failed: {e}")).into());
        }
        Err(e) => return Err(e.into()),
    };
    let key = SecretString::from(resp.access_key.clone());

    // The key this machine held before is replaced: revoke it, quietly.
    if let Some(old) = &existing {
        let old_account = account(&old.user_name, &server);
        if let Ok(Some((old_key, KeyStore::Keyring | KeyStore::File))) =
            credentials::load_key(&old_account, old.key_store)
        {
            let _ = client.clone().with_key(old_key).logout().await;
        }
        credentials::delete_key(&old_account)?;
    }

    let stored = credentials::store_key(&account(&resp.name, &server), &key)?;
    if let Some(w) = &stored.warning {
        eprintln!("warning: {w}");
    }
    let (trusted_fingerprint, trusted_cert, skip_tls_verify) = match &trust {
        Trust::Fingerprint(fp) => (Some(fp.clone()), None, false),
        Trust::Cert(pem) => (None, Some(pem.clone()), false),
        Trust::Insecure => (None, None, true),
        Trust::System => (None, None, false),
    };
    config.upsert(ServerEntry {
        server: server.clone(),
        url,
        user_id: resp.user_id.clone(),
        user_name: resp.name.clone(),
        expires: Some(resp.expires.clone()),
        key_store: stored.store,
        trusted_fingerprint,
        trusted_cert,
        skip_tls_verify,
    });
    config.current = Some(server.clone());
    config.save()?;
    eprintln!("Logged in to {server} as {}", resp.name);
    Ok(())
}

pub async fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let mut config = Config::load()?;
    let targets: Vec<String> = if args.all {
        config.servers.iter().map(|s| s.server.clone()).collect()
    } else {
        let s = match &args.server {
            Some(s) => canonical_server(s).map_err(Usage)?.0,
            None => config
                .current
                .clone()
                .ok_or_else(|| AuthNeeded("you are not logged in to any infra server".into()))?,
        };
        if config.find(&s).is_none() {
            return Err(AuthNeeded(format!("you are not logged in to {s}")).into());
        }
        vec![s]
    };
    for server in targets {
        let Some(entry) = config.find(&server).cloned() else {
            continue;
        };
        let acct = account(&entry.user_name, &server);
        if let Ok(Some((key, KeyStore::Keyring | KeyStore::File))) =
            credentials::load_key(&acct, entry.key_store)
        {
            let client = Client::new(&entry.url, &trust_of(&entry), Some(key))?;
            match client.logout().await {
                Ok(()) | Err(ClientError::Api { status: 401, .. }) => {}
                Err(e) => eprintln!(
                    "warning: could not revoke the key on {server} ({e}); forgetting it here anyway"
                ),
            }
        }
        credentials::delete_key(&acct)?;
        config.remove(&server);
        if config.current.as_deref() == Some(server.as_str()) {
            config.current = config.servers.first().map(|s| s.server.clone());
        }
        config.save()?;
        eprintln!("Logged out of {server}");
    }
    Ok(())
}
