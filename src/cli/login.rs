//! `infra login`: the way in (an access key, a local user's password, or a
//! sign-in through the server's identity provider, in a browser here or
//! with a device code, `device.rs`), then the new session key kept in the OS
//! keyring (or the fallback file), the server remembered in the config file
//! and the kubeconfig written. A machine identity's login
//! (`--method=oidc-auth`) is `identities.rs`'s; how to trust the server,
//! `trust.rs`'s; what goes into the kubeconfig, `kubeconfig.rs`'s.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

use super::kubeconfig::write_kubeconfig;
use super::session::{account, can_prompt, forget_cached_tokens, read_secret, update_config};
use super::trust::decide_trust;
use super::{AuthNeeded, Usage};
use crate::api::{LoginRequest, PasswordCredentials};
use crate::client::{Client, ClientError, Trust};
use crate::local::config::{Config, KeyStore, ServerEntry, canonical_server};
use crate::local::credentials;

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The server: host, host:port or https URL
    #[arg(env = "INFRA_SERVER", value_name = "SERVER")]
    pub server: Option<String>,

    /// Log in with an access key (`-`: read it from standard input)
    #[arg(
        long,
        env = "INFRA_ACCESS_KEY",
        hide_env_values = true,
        conflicts_with = "user"
    )]
    pub key: Option<SecretString>,

    /// Log in with the access key in this file (`-`: standard input): kept out of `ps`
    #[arg(long, env = "INFRA_ACCESS_KEY_FILE", value_name = "FILE", conflicts_with_all = ["key", "user"])]
    pub access_key_file: Option<PathBuf>,

    /// Log in as a local user (password prompted, or INFRA_PASSWORD)
    #[arg(long, env = "INFRA_LOGIN_USER", value_name = "NAME")]
    pub user: Option<String>,

    /// Trust the server's certificate with this SHA-256 fingerprint (or INFRA_TLS_TRUSTED_FINGERPRINT)
    #[arg(long, value_name = "SHA256", conflicts_with_all = ["tls_trusted_cert", "skip_tls_verify"])]
    pub tls_trusted_fingerprint: Option<String>,

    /// Trust the server's certificate (or its CA) from this PEM file (or INFRA_TLS_TRUSTED_CERT)
    #[arg(long, value_name = "FILE", conflicts_with = "skip_tls_verify")]
    pub tls_trusted_cert: Option<PathBuf>,

    /// Do not verify the server's certificate (unsafe)
    #[arg(long, env = "INFRA_SKIP_TLS_VERIFY")]
    pub skip_tls_verify: bool,

    /// Sign in with this identity provider (when the server has several)
    #[arg(long, env = "INFRA_PROVIDER", value_name = "NAME", conflicts_with_all = ["key", "access_key_file", "user"])]
    pub provider: Option<String>,

    /// Print the sign-in URL instead of opening a browser
    #[arg(long, env = "INFRA_NO_BROWSER", conflicts_with_all = ["key", "access_key_file", "user"])]
    pub no_browser: bool,

    /// Sign in on another device (a phone, a laptop) with a code: for machines without a browser
    #[arg(long, env = "INFRA_LOGIN_DEVICE", conflicts_with_all = ["key", "access_key_file", "user", "no_browser", "method"])]
    pub device: bool,

    /// Ask the identity provider to authenticate you again, even if it still holds a session:
    /// for grants that ask for a recent sign-in (--max-auth-age)
    #[arg(long, env = "INFRA_LOGIN_REAUTH", conflicts_with_all = ["key", "user", "method"])]
    pub reauth: bool,

    /// Local port for the provider's redirect (register http://localhost:PORT with it)
    #[arg(long, value_name = "PORT", default_value_t = crate::login::DEFAULT_PORT, env = "INFRA_LOGIN_PORT")]
    pub listen_port: u16,

    /// How long to wait for the browser sign-in
    #[arg(long, hide = true, env = "INFRA_LOGIN_TIMEOUT", default_value = "5m", value_parser = crate::api::parse_duration)]
    pub timeout: std::time::Duration,

    /// Log in another way: oidc-auth (a machine identity, with its workload's OIDC JWT)
    #[arg(long, env = "INFRA_LOGIN_METHOD", value_enum, value_name = "METHOD", conflicts_with_all = ["user", "provider", "no_browser"])]
    pub method: Option<LoginMethod>,

    /// With --method=oidc-auth: the machine identity's id or name
    #[arg(
        long,
        env = "INFRA_MACHINE_IDENTITY_ID",
        value_name = "ID",
        requires = "method"
    )]
    pub machine_identity_id: Option<String>,

    /// With --method=oidc-auth: the workload's OIDC JWT (or INFRA_OIDC_JWT)
    #[arg(
        long,
        value_name = "JWT",
        env = "INFRA_OIDC_JWT",
        hide_env_values = true
    )]
    pub oidc_jwt: Option<SecretString>,

    /// With --method=oidc-auth: print nothing on stderr when it works
    #[arg(long, env = "INFRA_LOGIN_SILENT", requires = "method")]
    pub silent: bool,

    /// With --method=oidc-auth: print only the access token on stdout and keep it nowhere
    #[arg(long, env = "INFRA_LOGIN_PLAIN", requires = "method")]
    pub plain: bool,
}

/// The ways to log in besides key, password and browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoginMethod {
    /// A machine identity logs in with its workload's OIDC JWT
    OidcAuth,
}

pub async fn run(args: LoginArgs) -> anyhow::Result<()> {
    if args.method == Some(LoginMethod::OidcAuth) {
        return super::identities::machine_login(&args).await;
    }
    let input = args.server.clone().ok_or_else(|| {
        Usage("which server? run `infra login SERVER` (or set INFRA_SERVER)".into())
    })?;
    let (server, url) = canonical_server(&input).map_err(|e| Usage(format!("{input:?}: {e}")))?;
    let config = Config::load()?;
    let existing = config.find(&server).cloned();
    let known = config.trust_entry(&server);

    let key = match (&args.key, &args.access_key_file) {
        (Some(k), _) if k.expose_secret().trim() == "-" => Some(credentials::read_key_from(
            std::path::Path::new("-"),
            "--key -",
        )?),
        (Some(k), _) => Some(k.clone()),
        (None, Some(path)) => Some(credentials::read_key_from(path, "--access-key-file")?),
        (None, None) => None,
    };
    let request = if let Some(key) = &key {
        LoginRequest {
            access_key: Some(key.expose_secret().trim().into()),
            ..Default::default()
        }
    } else if let Some(user) = &args.user {
        let password = read_secret(&format!("Password for {user}: "), Some("INFRA_PASSWORD"))?;
        LoginRequest {
            password_credentials: Some(PasswordCredentials {
                name: user.clone(),
                password,
            }),
            ..Default::default()
        }
    } else {
        LoginRequest::default()
    };

    let trust = decide_trust(&args, &server, known.as_ref()).await?;
    let client = Client::new(&url, &trust, None)?;
    let through_provider = request.access_key.is_none() && request.password_credentials.is_none();
    let device = super::device::wanted(&args).filter(|_| through_provider);
    let resp = if let Some(why) = device {
        super::device::sign_in(&args, &server, &client, why).await?
    } else {
        let (request, browser) = if through_provider {
            let (request, page) = browser_sign_in(&args, &server, &client).await?;
            (request, Some(page))
        } else {
            (request, None)
        };
        let answer = client.login(&request).await;
        // The browser's page tells how it ended, only now that it has.
        if let Some(page) = browser {
            page.finish(match &answer {
                Ok(r) => crate::login::Outcome::SignedIn(r.name.clone()),
                Err(e) => crate::login::Outcome::Failed(e.to_string()),
            })
            .await;
        }
        match answer {
            Ok(r) => r,
            Err(e @ ClientError::Api { status: 401, .. }) => {
                return Err(AuthNeeded(format!("login to {server} failed: {e}")).into());
            }
            Err(e) => return Err(e.into()),
        }
    };
    let key = resp.access_key.clone();

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
    let entry = ServerEntry {
        server: server.clone(),
        url,
        user_id: resp.user_id.clone(),
        user_name: resp.name.clone(),
        expires: Some(resp.expires.clone()),
        key_store: stored.store,
        trusted_fingerprint,
        trusted_cert,
        skip_tls_verify,
    };
    update_config(|config| {
        config.upsert(entry);
        config.current = Some(server.clone());
    })?;
    // Cluster tokens cached for an earlier session (maybe another user) go,
    // now that the config names this one (see `local::token_cache`).
    forget_cached_tokens(&server);
    eprintln!("Logged in to {server} as {}", resp.name);
    note_short_session(&server, &resp.expires);
    let client = client.with_key(key);
    write_kubeconfig(&client, &server, &resp.user_id).await
}

/// A session that ends within a day (a provider that gives no refresh
/// token, say): tell when, so the end is no surprise.
fn note_short_session(server: &str, expires: &str) {
    let Ok(t) =
        time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
    else {
        return;
    };
    let left = t - crate::clock::now_utc();
    if left < time::Duration::days(1) {
        let mins = left.whole_minutes().max(0);
        eprintln!(
            "note: this session ends in {}h{:02}m ({expires}), e.g. because the identity \
             provider gives no refresh token to keep it; run `infra login {server}` again then",
            mins / 60,
            mins % 60
        );
    }
}

/// Signs in through the server's identity provider in a browser; returns
/// the login request that carries the code, and the browser's page waiting
/// to say how it ended.
async fn browser_sign_in(
    args: &LoginArgs,
    server: &str,
    client: &Client,
) -> anyhow::Result<(LoginRequest, crate::login::Pending)> {
    let provider = pick_provider(args, server, client).await?;
    let listeners = crate::login::bind(args.listen_port).await?;
    let mut attempt = crate::login::Attempt::new(listeners.port);
    attempt.reauth = args.reauth;
    let auth_url =
        attempt.authorization_url(&provider.auth_url, &provider.client_id, &provider.scopes)?;
    let opened = !args.no_browser && crate::login::open_browser(&auth_url);
    if opened {
        eprintln!(
            "Opening your browser to sign in with {}. If it does not open, visit:\n\n  {auth_url}\n",
            provider.name
        );
    } else {
        eprintln!(
            "To sign in with {}, open this URL in a browser on this machine:\n\n  {auth_url}\n",
            provider.name
        );
    }
    let spinner = spinner("Waiting for the browser sign-in (Ctrl-C to cancel)");
    let outcome = tokio::select! {
        cb = crate::login::wait_for_callback(listeners, attempt.state.clone()) => Ok(cb),
        _ = tokio::time::sleep(args.timeout) => Err(anyhow::anyhow!(
            "timed out after {} waiting for the browser sign-in; run `infra login {server}` again",
            humantime::format_duration(args.timeout)
        )),
        _ = tokio::signal::ctrl_c() => Err(anyhow::Error::new(super::Cancelled)),
    };
    if let Some(sp) = spinner {
        sp.finish_and_clear();
    }
    let pending = outcome?;
    match &pending.callback {
        crate::login::Callback::Code(code) => Ok((
            LoginRequest {
                oidc: Some(crate::api::OidcLogin {
                    provider_id: provider.id,
                    code: code.clone().into(),
                    redirect_url: attempt.redirect_url,
                    code_verifier: attempt.code_verifier.into(),
                    nonce: attempt.nonce,
                    reauth: attempt.reauth,
                }),
                ..Default::default()
            },
            pending,
        )),
        crate::login::Callback::Denied(why) => {
            Err(AuthNeeded(format!("{} did not sign you in: {why}", provider.name)).into())
        }
    }
}

/// The provider to sign in with: `--provider NAME`, the only one, or the
/// person's choice on a terminal.
pub(super) async fn pick_provider(
    args: &LoginArgs,
    server: &str,
    client: &Client,
) -> anyhow::Result<crate::api::Provider> {
    let providers: Vec<crate::api::Provider> = client.list_all("/api/providers").await?;
    let provider = match (&args.provider, providers.len()) {
        (Some(name), _) => providers
            .iter()
            .find(|p| &p.name == name)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
                Usage(format!(
                    "{server} has no identity provider named {name:?}; it has: {}",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ))
            })?,
        (None, 0) => {
            return Err(Usage(format!(
                "{server} has no identity provider to sign in with; log in with \
                 `infra login {server} --key KEY` or `--user NAME`, or ask an admin to add one \
                 (`infra providers add`)"
            ))
            .into());
        }
        (None, 1) => providers[0].clone(),
        (None, _) => choose_provider(server, &providers)?,
    };
    Ok(provider)
}

fn choose_provider(
    server: &str,
    providers: &[crate::api::Provider],
) -> anyhow::Result<crate::api::Provider> {
    let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
    if !can_prompt() {
        return Err(Usage(format!(
            "{server} has several identity providers ({}); choose one with --provider NAME",
            names.join(", ")
        ))
        .into());
    }
    eprintln!("Sign in with which identity provider?");
    for (i, p) in providers.iter().enumerate() {
        eprintln!("  {}) {} ({})", i + 1, p.name, p.url);
    }
    loop {
        use std::io::Write;
        eprint!("Number [1-{}]: ", providers.len());
        std::io::stderr().flush()?;
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line)? == 0 {
            return Err(anyhow::Error::new(super::Cancelled));
        }
        match line.trim().parse::<usize>() {
            Ok(n) if (1..=providers.len()).contains(&n) => return Ok(providers[n - 1].clone()),
            _ => eprintln!("Type a number from the list."),
        }
    }
}

pub(super) fn spinner(msg: &'static str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let sp =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    // A length-less bar still draws as an empty bar and "0/0" by default.
    sp.set_style(indicatif::ProgressStyle::default_spinner());
    sp.set_message(msg);
    sp.enable_steady_tick(std::time::Duration::from_millis(100));
    Some(sp)
}
