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
    pub key: Option<SecretString>,

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

    /// Sign in with this identity provider (when the server has several)
    #[arg(long, value_name = "NAME", conflicts_with_all = ["key", "user"])]
    pub provider: Option<String>,

    /// Print the sign-in URL instead of opening a browser
    #[arg(long, conflicts_with_all = ["key", "user"])]
    pub no_browser: bool,

    /// Sign in on another device (a phone, a laptop) with a code: for machines without a browser
    #[arg(long, conflicts_with_all = ["key", "user", "no_browser", "method"])]
    pub device: bool,

    /// Local port for the provider's redirect (register http://localhost:PORT with it)
    #[arg(long, value_name = "PORT", default_value_t = crate::login::DEFAULT_PORT, env = "INFRA_LOGIN_PORT")]
    pub listen_port: u16,

    /// How long to wait for the browser sign-in
    #[arg(long, hide = true, env = "INFRA_LOGIN_TIMEOUT", default_value = "5m", value_parser = crate::api::parse_duration)]
    pub timeout: std::time::Duration,

    /// Log in another way: oidc-auth (a machine identity, with its workload's OIDC JWT)
    #[arg(long, value_enum, value_name = "METHOD", conflicts_with_all = ["user", "provider", "no_browser"])]
    pub method: Option<LoginMethod>,

    /// With --method=oidc-auth: the machine identity's id or name
    #[arg(long, value_name = "ID", requires = "method")]
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
    #[arg(long, requires = "method")]
    pub silent: bool,

    /// With --method=oidc-auth: print only the access token on stdout and keep it nowhere
    #[arg(long, requires = "method")]
    pub plain: bool,
}

/// The ways to log in besides key, password and browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoginMethod {
    /// A machine identity logs in with its workload's OIDC JWT
    OidcAuth,
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
pub(super) async fn decide_trust(
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
    if args.method == Some(LoginMethod::OidcAuth) {
        return super::identities::machine_login(&args).await;
    }
    let input = args.server.clone().ok_or_else(|| {
        Usage("which server? run `infra login SERVER` (or set INFRA_SERVER)".into())
    })?;
    let (server, url) = canonical_server(&input).map_err(|e| Usage(format!("{input:?}: {e}")))?;
    let existing = Config::load()?.find(&server).cloned();

    let request = if let Some(key) = &args.key {
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

    let trust = decide_trust(&args, &server, existing.as_ref()).await?;
    let client = Client::new(&url, &trust, None)?;
    let through_provider = request.access_key.is_none() && request.password_credentials.is_none();
    let device = super::device::wanted(&args).filter(|_| through_provider);
    let resp = if let Some(why) = device {
        super::device::sign_in(&args, &server, &client, why).await?
    } else {
        let request = if through_provider {
            browser_sign_in(&args, &server, &client).await?
        } else {
            request
        };
        match client.login(&request).await {
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

/// Deletes the cluster tokens this config home has cached for `server`,
/// with their lock files; call it once the config file says who is logged
/// in there now (or that nobody is). A failure is a warning.
pub(super) fn forget_cached_tokens(server: &str) {
    let home = crate::local::token_cache::this_home();
    if let Err(e) = crate::local::token_cache::remove_server(&home, server) {
        eprintln!("warning: could not delete the cached cluster tokens of {server}: {e:#}");
    }
}

/// What kubectl runs for a credential: `infra-credential` beside this
/// executable (the warm path alone, which starts as fast as `cat`), or this
/// executable itself when it is not there (both take the same arguments).
fn credential_plugin(infra: PathBuf) -> PathBuf {
    let small = infra.with_file_name(if cfg!(windows) {
        "infra-credential.exe"
    } else {
        "infra-credential"
    });
    if small.is_file() { small } else { infra }
}

/// Changes the config file under a lock, re-reading it first, so parallel
/// logins and logouts do not lose each other's entries.
pub(super) fn update_config(f: impl FnOnce(&mut Config)) -> anyhow::Result<()> {
    let dir = crate::local::config::config_dir();
    let _lock = crate::local::lock::FileLock::acquire(
        &dir.join("config.lock"),
        std::time::Duration::from_secs(30),
    )?;
    let mut config = Config::load()?;
    f(&mut config);
    config.save()
}

/// Signs in through the server's identity provider in a browser; returns
/// the login request that carries the code.
async fn browser_sign_in(
    args: &LoginArgs,
    server: &str,
    client: &Client,
) -> anyhow::Result<LoginRequest> {
    let provider = pick_provider(args, server, client).await?;
    let listeners = crate::login::bind(args.listen_port).await?;
    let attempt = crate::login::Attempt::new(listeners.port);
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
    match outcome? {
        crate::login::Callback::Code(code) => Ok(LoginRequest {
            oidc: Some(crate::api::OidcLogin {
                provider_id: provider.id,
                code: code.into(),
                redirect_url: attempt.redirect_url,
                code_verifier: attempt.code_verifier.into(),
                nonce: attempt.nonce,
            }),
            ..Default::default()
        }),
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

/// Writes a kubeconfig context for every destination the user may reach
/// through this server, and removes this server's contexts that are gone.
pub async fn write_kubeconfig(client: &Client, server: &str, user_id: &str) -> anyhow::Result<()> {
    let grants = format!(
        "/api/grants?user={}&showInherited=true",
        crate::client::enc(user_id)
    );
    write_kubeconfig_with(client, server, &grants, false).await
}

/// [`write_kubeconfig`] for the grants at `grants_path`; `quiet` keeps
/// stderr silent except for warnings.
pub async fn write_kubeconfig_with(
    client: &Client,
    server: &str,
    grants_path: &str,
    quiet: bool,
) -> anyhow::Result<()> {
    use crate::local::kubeconfig::{self, InfraCluster};
    let grants: Vec<crate::api::Grant> = client.list_all(grants_path).await?;
    let destinations: Vec<crate::api::Destination> = client.list_all("/api/destinations").await?;
    let mut clusters: Vec<InfraCluster> = Vec::new();
    for g in &grants {
        let (dest, ns) = match g.destination.split_once('.') {
            Some((d, n)) => (d, Some(n.to_string())),
            None => (g.destination.as_str(), None),
        };
        let Some(d) = destinations
            .iter()
            .find(|d| d.name == dest && !d.url.is_empty())
        else {
            continue;
        };
        let c = InfraCluster {
            destination: dest.to_string(),
            namespace: ns,
            url: d.url.clone(),
            ca_pem: d.ca.clone(),
        };
        if !clusters.contains(&c) {
            clusters.push(c);
        }
    }
    let exe = std::env::current_exe().context("cannot find the path of the infra executable")?;
    let exe = credential_plugin(exe.canonicalize().unwrap_or(exe));
    let path = kubeconfig::kubeconfig_path();
    let owner = server.to_string();
    let summary = tokio::task::spawn_blocking(move || {
        kubeconfig::write_infra_entries(&path, &owner, &exe, &clusters)
    });
    let summary = summary.await??;
    if let Some(stale) = &summary.stale_lock {
        eprintln!("note: {stale}");
    }
    let mut contexts: Vec<&String> = summary.added.iter().chain(&summary.updated).collect();
    contexts.sort();
    let changed =
        !summary.added.is_empty() || !summary.updated.is_empty() || !summary.removed.is_empty();
    if quiet {
        // Only the warnings below.
    } else if changed {
        let names: Vec<&str> = contexts.iter().map(|s| s.as_str()).collect();
        eprintln!(
            "Updated {}: {}",
            summary.path.display(),
            if names.is_empty() {
                "no clusters".into()
            } else {
                names.join(", ")
            }
        );
        if !summary.removed.is_empty() {
            eprintln!(
                "Removed contexts no longer granted: {}",
                summary.removed.join(", ")
            );
        }
    } else if grants
        .iter()
        .all(|g| g.destination == crate::api::INFRA_DESTINATION)
    {
        eprintln!("You have no cluster grants yet; ask an admin for one (`infra grants add`).");
    }
    for s in &summary.skipped {
        eprintln!(
            "warning: not writing {} to the kubeconfig: an entry of that name belongs to {}",
            s.context, s.owner
        );
    }
    Ok(())
}

pub async fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let config = Config::load()?;
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
        let path = crate::local::kubeconfig::kubeconfig_path();
        let srv = server.clone();
        let removed = tokio::task::spawn_blocking(move || {
            crate::local::kubeconfig::remove_infra_entries(&path, &srv)
        })
        .await??;
        if let Some(stale) = &removed.stale_lock {
            eprintln!("note: {stale}");
        }
        if !removed.removed.is_empty() {
            eprintln!(
                "Removed contexts {} from {}",
                removed.removed.join(", "),
                removed.path.display()
            );
        }
        update_config(|config| {
            config.remove(&server);
            if config.current.as_deref() == Some(server.as_str()) || config.current.is_none() {
                config.current = config.servers.first().map(|s| s.server.clone());
            }
        })?;
        forget_cached_tokens(&server);
        eprintln!("Logged out of {server}");
    }
    // What is left of servers this config home is no longer logged in to
    // (an earlier logout that could not finish, an older infra's files).
    let home = crate::local::token_cache::this_home();
    let still: Vec<String> = Config::load()?
        .servers
        .iter()
        .map(|s| s.server.clone())
        .collect();
    if let Err(e) = crate::local::token_cache::prune(&home, &still) {
        eprintln!("warning: could not delete old cached cluster tokens: {e:#}");
    }
    Ok(())
}
